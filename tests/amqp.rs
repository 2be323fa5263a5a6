//! Carbon AMQP in and out through the real binary and a RabbitMQ broker on
//! 127.0.0.1:5672 (guest/guest), with Python's pika as the independent
//! client. Every test uses exchanges and queues named after a fresh port,
//! and deletes them at the end.

use std::net::{SocketAddr, TcpStream};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread;
use std::time::{Duration, Instant};

use crate::util::{free_port, in_ci, python, send_tcp, system_python, wait_until, Relay, Sink};

const WAIT: Duration = Duration::from_secs(30);
const BROKER: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Tests share the broker; the one that restarts it has it to itself.
static BROKER_LOCK: RwLock<()> = RwLock::new(());

fn shared_broker() -> RwLockReadGuard<'static, ()> {
    BROKER_LOCK
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn exclusive_broker() -> RwLockWriteGuard<'static, ()> {
    BROKER_LOCK
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Checks that the broker answers: under CI its absence fails the test;
/// elsewhere the test is skipped with a message.
fn require_broker() -> bool {
    let address: SocketAddr = "127.0.0.1:5672".parse().expect("address");
    let up = TcpStream::connect_timeout(&address, Duration::from_secs(1)).is_ok();
    if !up {
        assert!(!in_ci(), "RabbitMQ on 127.0.0.1:5672 is required under CI");
        eprintln!("SKIP: no AMQP broker on 127.0.0.1:5672 (rabbitmq-server -detached starts one)");
    }
    up
}

/// Deletes a test's queues and exchanges when dropped (declare it before
/// the relays, so that they are gone first and cannot re-declare).
struct BrokerNames {
    exchanges: Vec<String>,
    queues: Vec<String>,
}

impl Drop for BrokerNames {
    fn drop(&mut self) {
        let mut args = vec![format!("{}", self.queues.len())];
        args.extend(self.queues.iter().cloned());
        args.extend(self.exchanges.iter().cloned());
        // Best effort, and never a panic while a failing test unwinds.
        let _ = std::process::Command::new(system_python())
            .arg("-c")
            .arg(PIKA_CLEANUP)
            .args(&args)
            .output();
    }
}

const PIKA_COMMON: &str = r#"
import json, sys, time
import pika
def channel():
    params = pika.ConnectionParameters('127.0.0.1', 5672, '/', pika.PlainCredentials('guest', 'guest'))
    return pika.BlockingConnection(params).channel()
"#;

const PIKA_CLEANUP: &str = r#"
import sys, pika
params = pika.ConnectionParameters('127.0.0.1', 5672, '/', pika.PlainCredentials('guest', 'guest'))
conn = pika.BlockingConnection(params)
n = int(sys.argv[1])
for queue in sys.argv[2:2 + n]:
    conn.channel().queue_delete(queue)
for exchange in sys.argv[2 + n:]:
    conn.channel().exchange_delete(exchange)
conn.close()
"#;

fn pika(script: &str, args: &[&str]) -> String {
    python(&format!("{PIKA_COMMON}{script}"), args)
}

/// Declares a topic exchange as carbon does and a durable queue bound with `#`.
const PIKA_DECLARE: &str = r#"
ch = channel()
ch.exchange_declare(sys.argv[1], 'topic', durable=True)
ch.queue_declare(sys.argv[2], durable=True)
ch.queue_bind(sys.argv[2], sys.argv[1], '#')
"#;

/// Reads a queue until it holds `argv[2]` body lines (then waits a moment
/// for duplicates) or 30 s pass; prints the messages as JSON.
const PIKA_READ: &str = r#"
ch = channel()
queue, want = sys.argv[1], int(sys.argv[2])
got, lines, deadline = [], 0, time.time() + 30
for method, props, body in ch.consume(queue, auto_ack=True, inactivity_timeout=1):
    if method is None:
        if lines >= want or time.time() > deadline:
            break
        continue
    got.append({'exchange': method.exchange, 'key': method.routing_key,
                'mode': props.delivery_mode, 'body': body.decode()})
    lines += body.decode().count('\n')
print(json.dumps(got))
"#;

/// The number in `prefix.N` names, for counting deliveries by name.
fn index_of(line: &str, prefix: &str) -> Option<usize> {
    line.split_whitespace()
        .next()?
        .strip_prefix(prefix)?
        .parse()
        .ok()
}

/// `prefix.N N 1700000000` for N in 0..n: every name distinct.
fn unique_lines(prefix: &str, n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * 24);
    for i in 0..n {
        out.extend_from_slice(format!("{prefix}{i} {i} 1700000000\n").as_bytes());
    }
    out
}

/// How many times the sink saw each `prefix.N` name, N in 0..n.
fn seen_counts(sink: &Sink, prefix: &str, n: usize) -> Vec<u32> {
    let mut seen = vec![0u32; n];
    for line in String::from_utf8_lossy(&sink.bytes()).lines() {
        if let Some(i) = index_of(line, prefix).filter(|i| *i < n) {
            seen[i] += 1;
        }
    }
    seen
}

/// Polls the sink (gently: it holds a lock while counting) until it has
/// `n` lines or `timeout` passes.
fn wait_for_lines(sink: &Sink, n: usize, timeout: Duration) -> bool {
    wait_for(timeout, || sink.line_count() >= n)
}

/// Like `wait_until` for costly conditions: polls every 250 ms.
fn wait_for(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        thread::sleep(Duration::from_millis(250));
    }
    condition()
}

fn listener_connected(relay: &Relay, listener: &str) -> bool {
    relay.metric(&format!(
        "tsrelay_listener_connections_active{{listener=\"{listener}\"}}"
    )) == 1.0
}

/// A relay consuming `queue` (bound to `exchange` with `#`), lines named
/// in the body, relaying plaintext to `sink`; ready once consuming.
/// `prefetch` and `upstream_options` (`, key: value`) tune it.
fn consuming_relay(
    exchange: &str,
    queue: &str,
    sink: u16,
    prefetch: u16,
    upstream_options: &str,
) -> Relay {
    let relay = Relay::start(&format!(
        "listeners:\n  - {{name: bus, protocol: amqp, url: \"{BROKER}\", exchange: {exchange}, \
         queue: {queue}, bind_patterns: [\"#\"], metric_name_in_body: true, prefetch: {prefetch}}}\n\
         upstreams:\n  - {{name: sink, protocol: graphite_plaintext, address: 127.0.0.1:{sink}, \
         batch: {{max_points: 500, max_delay: 20ms}}{upstream_options}}}\n\
         routes:\n  - {{match: {{prefix: \"\"}}, to: [sink]}}\n"
    ));
    assert!(
        wait_until(WAIT, || listener_connected(&relay, "bus")),
        "{}",
        relay.stderr()
    );
    relay
}

/// A relay publishing what it receives on `port` to `exchange` as
/// plaintext lines, 500 points a message.
fn publishing_relay(port: u16, exchange: &str) -> Relay {
    Relay::start(&format!(
        "listeners:\n  - {{name: plain, protocol: graphite_plaintext, listen: 127.0.0.1:{port}}}\n\
         upstreams:\n  - {{name: bus, protocol: amqp, url: \"{BROKER}\", exchange: {exchange}, \
         body: plaintext_lines, routing_key: metrics, batch: {{max_points: 500, max_delay: 20ms}}, \
         retry: {{initial: 50ms, max: 1s}}}}\n\
         routes:\n  - {{match: {{prefix: \"\"}}, to: [bus]}}\n"
    ))
}

const PIKA_PUBLISH_CARBON: &str = r#"
ch = channel()
ch.confirm_delivery()
exchange = sys.argv[1]
persistent = pika.BasicProperties(delivery_mode=2)
def publish(key, body):
    # mandatory: an unbound routing key raises instead of vanishing.
    ch.basic_publish(exchange, key, body, persistent, mandatory=True)
# carbon's amqp_publisher.py: routing key = name, body "%f %d".
for i in range(100):
    publish('k.m%d' % i, '%f %d' % (i, 1700000000))
publish('k.multi', '1 1700000000\n2 1700000060\n')
publish('k.nan', 'nan 1700000000')
publish('k.neg', '5 -1')
publish('body', 'b.x 1 1700000000\n\nbad line\nb.y;dc=eu 2 1700000000\n')
"#;

#[test]
fn carbon_messages_from_pika_are_relayed_and_bad_lines_counted() {
    if !require_broker() {
        return;
    }
    let _broker = shared_broker();
    let exchange = format!("tsrelay_in_{}", free_port());
    let queue_k = format!("{exchange}_k");
    let _names = BrokerNames {
        exchanges: vec![exchange.clone()],
        queues: vec![queue_k.clone()],
    };
    let sink = Sink::start();
    let relay = Relay::start(&format!(
        "listeners:\n  - {{name: k, protocol: amqp, url: \"{BROKER}\", exchange: {exchange}, \
         queue: {queue_k}, bind_patterns: [\"k.#\"]}}\n  - \
         {{name: b, protocol: amqp, url: \"{BROKER}\", exchange: {exchange}, \
         exclusive_queue: true, bind_patterns: [body], metric_name_in_body: true}}\n\
         upstreams:\n  - {{name: sink, protocol: graphite_plaintext, address: 127.0.0.1:{}, \
         batch: {{max_points: 500, max_delay: 20ms}}}}\n\
         routes:\n  - {{match: {{prefix: \"\"}}, to: [sink]}}\n",
        sink.port
    ));
    assert!(
        wait_until(WAIT, || listener_connected(&relay, "k")
            && listener_connected(&relay, "b")),
        "{}",
        relay.stderr()
    );
    pika(PIKA_PUBLISH_CARBON, &[&exchange]);

    let mut expected: Vec<String> = (0..100).map(|i| format!("k.m{i} {i} 1700000000")).collect();
    expected.extend(
        [
            "k.multi 1 1700000000",
            "k.multi 2 1700000060",
            // No "now" rule on AMQP (protocols.md 3.3): -1 stays -1.
            "k.neg 5 -1",
            "b.x 1 1700000000",
            "b.y;dc=eu 2 1700000000",
        ]
        .map(str::to_owned),
    );
    expected.sort();
    assert!(
        wait_until(WAIT, || sink.line_count() >= expected.len()),
        "{}",
        relay.stderr()
    );
    thread::sleep(Duration::from_millis(200));
    let mut lines = sink.lines();
    lines.sort();
    assert_eq!(lines, expected);
    let rejected = |listener: &str, reason: &str| {
        relay.metric(&format!(
            "tsrelay_listener_points_rejected_total{{listener=\"{listener}\",reason=\"{reason}\"}}"
        ))
    };
    assert_eq!(rejected("k", "nan_value"), 1.0);
    assert_eq!(rejected("b", "field_count"), 1.0);
    assert_eq!(
        relay.metric("tsrelay_listener_points_received_total{listener=\"k\"}"),
        103.0
    );
    let log = relay.stderr();
    assert!(
        log.contains("Rejected input record.") && log.contains("peer=127.0.0.1:5672"),
        "{log}"
    );
    // Every message was acknowledged: nothing is left for a redelivery.
    assert!(wait_until(WAIT, || queue_depths(&[&queue_k]) == vec![(0, 0)]));
    relay.stop();
}

/// `(ready, unacknowledged)` messages of each queue, from the broker.
fn queue_depths(queues: &[&str]) -> Vec<(u64, u64)> {
    let output = std::process::Command::new("rabbitmqctl")
        .args([
            "list_queues",
            "-q",
            "--no-table-headers",
            "name",
            "messages_ready",
        ])
        .arg("messages_unacknowledged")
        .output()
        .expect("rabbitmqctl");
    let text = String::from_utf8_lossy(&output.stdout);
    queues
        .iter()
        .map(|queue| {
            text.lines()
                .find_map(|line| {
                    let mut fields = line.split_whitespace();
                    (fields.next() == Some(queue)).then(|| {
                        let mut number = || fields.next().and_then(|f| f.parse().ok());
                        (number().unwrap_or(0), number().unwrap_or(0))
                    })
                })
                .unwrap_or((u64::MAX, u64::MAX))
        })
        .collect()
}

#[derive(serde::Deserialize, Debug)]
struct Message {
    exchange: String,
    key: String,
    mode: Option<u8>,
    body: String,
}

fn read_queue(queue: &str, lines: usize) -> Vec<Message> {
    let json = pika(PIKA_READ, &[queue, &lines.to_string()]);
    serde_json::from_str(&json).expect("reader output")
}

#[test]
fn amqp_upstream_publishes_carbon_and_plaintext_bodies_with_confirms() {
    if !require_broker() {
        return;
    }
    let _broker = shared_broker();
    let port = free_port();
    let (carbon, lines) = (
        format!("tsrelay_out_{port}_c"),
        format!("tsrelay_out_{port}_l"),
    );
    let _names = BrokerNames {
        exchanges: vec![carbon.clone(), lines.clone()],
        queues: vec![carbon.clone(), lines.clone()],
    };
    let relay = Relay::start(&format!(
        "listeners:\n  - {{name: plain, protocol: graphite_plaintext, listen: 127.0.0.1:{port}}}\n\
         upstreams:\n  - {{name: carbon, protocol: amqp, url: \"{BROKER}\", exchange: {carbon}, body: carbon, \
         batch: {{max_points: 500, max_delay: 20ms}}, retry: {{initial: 50ms, max: 300ms}}}}\n  - \
         {{name: lines, protocol: amqp, url: \"{BROKER}\", exchange: {lines}, body: plaintext_lines, \
         routing_key: tsrelay.lines, batch: {{max_points: 10, max_delay: 20ms}}, retry: {{initial: 50ms, max: 300ms}}}}\n\
         routes:\n  - {{match: {{prefix: \"c.\"}}, to: [carbon]}}\n  - {{match: {{prefix: \"l.\"}}, to: [lines]}}\n"
    ));
    let mut input =
        b"c.a 1 1700000000\nc.b 2.5 1700000001\nc.tagged;z=1;a=2 3 1700000002\n".to_vec();
    input.extend_from_slice(format!("c.{} 4 1700000003\n", "x".repeat(300)).as_bytes());
    input.extend_from_slice(&unique_lines("l.", 25));
    send_tcp(port, &input);

    // No queue is bound yet: mandatory messages come back and are retried.
    let retried = |upstream: &str| {
        relay.metric(&format!(
            "tsrelay_upstream_points_retried_total{{upstream=\"{upstream}\"}}"
        ))
    };
    assert!(
        wait_until(WAIT, || retried("carbon") > 0.0 && retried("lines") > 0.0),
        "{}",
        relay.stderr()
    );
    assert!(relay.stderr().contains("unroutable"), "{}", relay.stderr());
    pika(PIKA_DECLARE, &[&carbon, &carbon]);
    pika(PIKA_DECLARE, &[&lines, &lines]);

    let carbon_messages = read_queue(&carbon, 3);
    let mut got: Vec<(&str, &str)> = carbon_messages
        .iter()
        .map(|m| (m.key.as_str(), m.body.as_str()))
        .collect();
    got.sort_unstable();
    got.dedup(); // a retried chunk may have been half-routed
    assert_eq!(
        got,
        vec![
            ("c.a", "1 1700000000\n"),
            ("c.b", "2.5 1700000001\n"),
            ("c.tagged;a=2;z=1", "3 1700000002\n"),
        ]
    );
    let line_messages = read_queue(&lines, 25);
    let mut got_lines: Vec<&str> = line_messages.iter().flat_map(|m| m.body.lines()).collect();
    got_lines.sort_unstable();
    got_lines.dedup();
    let mut expected: Vec<String> = (0..25).map(|i| format!("l.{i} {i} 1700000000")).collect();
    expected.sort();
    assert_eq!(got_lines, expected);
    for message in carbon_messages.iter().chain(&line_messages) {
        assert_eq!(message.mode, Some(2), "{message:?}");
        assert!(message.exchange == carbon || message.exchange == lines);
    }
    for message in &line_messages {
        assert_eq!(message.key, "tsrelay.lines");
        assert!(message.body.lines().count() <= 10, "{message:?}");
    }
    assert_eq!(
        relay.metric(
            "tsrelay_upstream_points_dropped_total{upstream=\"carbon\",reason=\"name_too_long\"}"
        ),
        1.0
    );
    assert!(wait_until(WAIT, || relay.metric(
        "tsrelay_upstream_points_sent_total{upstream=\"lines\"}"
    ) == 25.0));
    assert_eq!(
        relay.metric("tsrelay_upstream_points_sent_total{upstream=\"carbon\"}"),
        3.0
    );
    relay.stop();
}

#[test]
fn a_million_points_cross_the_broker_between_two_relays() {
    const N: usize = 1_000_000;
    if !require_broker() {
        return;
    }
    let _broker = shared_broker();
    let port = free_port();
    let exchange = format!("tsrelay_r2r_{port}");
    let _names = BrokerNames {
        exchanges: vec![exchange.clone()],
        queues: vec![exchange.clone()],
    };
    let sink = Sink::start();
    let consumer = consuming_relay(&exchange, &exchange, sink.port, 1000, "");
    let publisher = publishing_relay(port, &exchange);
    let started = Instant::now();
    send_tcp(port, &unique_lines("r2r.", N));
    assert!(
        wait_for_lines(&sink, N, Duration::from_secs(90)),
        "{} of {N} lines\n{}\n{}",
        sink.line_count(),
        publisher.stderr(),
        consumer.stderr()
    );
    eprintln!(
        "{N} points relayed through RabbitMQ in {:?}",
        started.elapsed()
    );
    thread::sleep(Duration::from_millis(300));
    let seen = seen_counts(&sink, "r2r.", N);
    let missing = seen.iter().filter(|n| **n == 0).count();
    let duplicated = seen.iter().filter(|n| **n > 1).count();
    assert_eq!((missing, duplicated), (0, 0));
    assert_eq!(sink.line_count(), N);
    assert_eq!(
        publisher.metric("tsrelay_upstream_points_sent_total{upstream=\"bus\"}"),
        N as f64
    );
    assert_eq!(
        consumer.metric("tsrelay_listener_points_received_total{listener=\"bus\"}"),
        N as f64
    );
    publisher.stop();
    consumer.stop();
}

#[test]
fn killed_consumer_and_restarted_broker_lose_nothing() {
    const N: usize = 400_000;
    if !require_broker() {
        return;
    }
    // The broker restart would disturb every other AMQP test.
    let _broker = exclusive_broker();
    let port = free_port();
    let exchange = format!("tsrelay_fault_{port}");
    let _names = BrokerNames {
        exchanges: vec![exchange.clone()],
        queues: vec![exchange.clone()],
    };
    let sink = Sink::start();
    let consumer = consuming_relay(&exchange, &exchange, sink.port, 1000, "");
    let publisher = publishing_relay(port, &exchange);
    let sender = thread::spawn(move || send_tcp(port, &unique_lines("f.", N)));

    // SIGKILL the consumer mid-run: its unacknowledged messages go back
    // to the durable queue and the restarted consumer takes them.
    assert!(wait_for_lines(&sink, N / 5, WAIT), "{}", consumer.stderr());
    consumer.kill();
    let killed_at = sink.line_count();
    assert!(killed_at < N, "the run ended before the kill");
    let consumer = consuming_relay(&exchange, &exchange, sink.port, 1000, "");

    // Then restart the broker under both relays.
    assert!(wait_for_lines(&sink, killed_at + N / 10, WAIT));
    let restarted_at = sink.line_count();
    rabbitmqctl("stop_app");
    thread::sleep(Duration::from_millis(500));
    rabbitmqctl("start_app");
    sender.join().expect("sender");
    // Points sent after the restart prove both relays reconnected.
    send_tcp(port, &unique_lines("after.", 1000));
    let complete = wait_for(Duration::from_secs(60), || {
        seen_counts(&sink, "f.", N).iter().all(|n| *n > 0)
            && seen_counts(&sink, "after.", 1000).iter().all(|n| *n > 0)
    });
    let missing = seen_counts(&sink, "f.", N)
        .iter()
        .filter(|n| **n == 0)
        .count();
    assert!(
        complete,
        "{missing} of {N} names missing\n{}\n{}",
        publisher.stderr(),
        consumer.stderr()
    );
    assert!(publisher.metric("tsrelay_upstream_connects_total{upstream=\"bus\"}") >= 2.0);
    assert!(
        consumer.metric("tsrelay_listener_connections_accepted_total{listener=\"bus\"}") >= 2.0
    );
    assert!(
        consumer
            .stderr()
            .contains("Consuming from the AMQP broker again."),
        "{}",
        consumer.stderr()
    );
    eprintln!(
        "fault run: killed the consumer at {killed_at} lines, restarted the broker at \
         {restarted_at}; {} lines for {} names",
        sink.line_count(),
        N + 1000,
    );
    publisher.stop();
    consumer.stop();
}

#[test]
fn a_full_queue_stops_consumption_and_the_broker_keeps_the_rest() {
    // More than the kernel's socket buffers hold for a stalled sink.
    const N: usize = 1_000_000;
    if !require_broker() {
        return;
    }
    let _broker = shared_broker();
    let port = free_port();
    let exchange = format!("tsrelay_bp_{port}");
    let _names = BrokerNames {
        exchanges: vec![exchange.clone()],
        queues: vec![exchange.clone()],
    };
    let sink = Sink::stalled();
    let consumer = consuming_relay(
        &exchange,
        &exchange,
        sink.port,
        10,
        ", queue: {max_points: 5000, when_full: block}",
    );
    let publisher = publishing_relay(port, &exchange);
    send_tcp(port, &unique_lines("bp.", N));
    assert!(wait_until(WAIT, || publisher
        .metric("tsrelay_upstream_points_sent_total{upstream=\"bus\"}")
        == N as f64));
    // The stalled sink fills the queue; consumption stops at the prefetch
    // window, and the rest waits in the broker.
    thread::sleep(Duration::from_secs(1));
    let received = consumer.metric("tsrelay_listener_points_received_total{listener=\"bus\"}");
    assert!(received < N as f64 / 2.0, "{received} points taken");
    let depths = queue_depths(&[&exchange]);
    assert!(depths[0].0 > 0, "{depths:?}");
    assert!(depths[0].1 <= 10, "{depths:?}");
    sink.resume();
    assert!(wait_for_lines(&sink, N, WAIT), "{}", consumer.stderr());
    let seen = seen_counts(&sink, "bp.", N);
    assert!(seen.iter().all(|n| *n == 1));
    assert!(wait_until(WAIT, || queue_depths(&[&exchange]) == vec![(0, 0)]));
    publisher.stop();
    consumer.stop();
}

fn rabbitmqctl(command: &str) {
    let status = std::process::Command::new("rabbitmqctl")
        .arg(command)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("rabbitmqctl");
    assert!(status.success(), "rabbitmqctl {command} failed");
}

#[test]
fn points_spooled_at_shutdown_are_published_after_a_restart() {
    if !require_broker() {
        return;
    }
    let _broker = shared_broker();
    let port = free_port();
    let exchange = format!("tsrelay_spool_{port}");
    let _names = BrokerNames {
        exchanges: vec![exchange.clone()],
        queues: vec![exchange.clone()],
    };
    let spool = tempfile::tempdir().expect("spool dir");
    let yaml = format!(
        "shutdown: {{grace: 1s}}\n\
         listeners:\n  - {{name: plain, protocol: graphite_plaintext, listen: 127.0.0.1:{port}}}\n\
         upstreams:\n  - {{name: bus, protocol: amqp, url: \"{BROKER}\", exchange: {exchange}, \
         body: plaintext_lines, batch: {{max_points: 100, max_delay: 20ms}}, \
         retry: {{initial: 50ms, max: 200ms}}, spool: {{dir: \"{}\"}}}}\n\
         routes:\n  - {{match: {{prefix: \"\"}}, to: [bus]}}\n",
        spool.path().display()
    );
    let relay = Relay::start(&yaml);
    send_tcp(port, &unique_lines("s.", 1000));
    // No queue is bound: every chunk comes back until the grace period
    // ends, and then the relay spools what it holds.
    assert!(wait_until(WAIT, || relay.metric(
        "tsrelay_upstream_points_retried_total{upstream=\"bus\"}"
    ) > 0.0));
    let status = relay.stop();
    assert!(status.success(), "{status:?}");
    pika(PIKA_DECLARE, &[&exchange, &exchange]);

    let relay = Relay::start(&yaml);
    let messages = read_queue(&exchange, 1000);
    let mut lines: Vec<&str> = messages.iter().flat_map(|m| m.body.lines()).collect();
    lines.sort_unstable();
    lines.dedup();
    let mut expected: Vec<String> = (0..1000).map(|i| format!("s.{i} {i} 1700000000")).collect();
    expected.sort();
    assert_eq!(lines, expected, "{}", relay.stderr());
    assert_eq!(
        relay.metric("tsrelay_upstream_points_replayed_total{upstream=\"bus\"}"),
        1000.0
    );
    relay.stop();
}
