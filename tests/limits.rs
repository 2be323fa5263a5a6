//! Rate limits: per peer on a listener (drop or throttle) and per upstream.

use std::time::{Duration, Instant};

use crate::util::{free_port, numbered_lines, send_tcp, wait_until, Relay, Sink};

const WAIT: Duration = Duration::from_secs(60);

fn relay(port: u16, sink: &Sink, listener_extra: &str, upstream_extra: &str) -> Relay {
    Relay::start(&format!(
        "listeners:\n  - {{name: plain, protocol: graphite_plaintext, listen: 127.0.0.1:{port}{listener_extra}}}\n\
         upstreams:\n  - {{name: sink, protocol: graphite_plaintext, address: 127.0.0.1:{}, batch: {{max_delay: 10ms}}{upstream_extra}}}\n\
         routes:\n  - {{match: {{prefix: \"\"}}, to: [sink]}}\n",
        sink.port
    ))
}

#[test]
fn a_peer_over_its_rate_loses_exactly_the_counted_excess() {
    const N: usize = 40_000;
    let sink = Sink::start();
    let port = free_port();
    let relay = relay(
        port,
        &sink,
        ", rate_limit: {points_per_second_per_peer: 2000}",
        "",
    );
    send_tcp(port, &numbered_lines("rl.drop", N, 1_700_000_000));
    let dropped = || {
        relay.metric(
            "tsrelay_listener_points_dropped_total{listener=\"plain\",reason=\"rate_limited\"}",
        )
    };
    assert!(wait_until(WAIT, || sink.line_count() as f64 + dropped() == N as f64));
    let delivered = sink.line_count();
    assert!((2000..N / 2).contains(&delivered), "{delivered} delivered");
    assert!(dropped() > 0.0);
}

#[test]
fn throttling_slows_a_peer_down_without_loss() {
    const N: usize = 15_000;
    let sink = Sink::start();
    let port = free_port();
    let _relay = relay(
        port,
        &sink,
        ", rate_limit: {points_per_second_per_peer: 5000, when_exceeded: throttle}",
        "",
    );
    let started = Instant::now();
    send_tcp(port, &numbered_lines("rl.throttle", N, 1_700_000_000));
    assert!(wait_until(WAIT, || sink.line_count() == N));
    // One second's burst, then 5000 per second: at least 2 s for the rest.
    assert!(
        started.elapsed() >= Duration::from_millis(1800),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn an_upstream_rate_limit_paces_sending_without_loss() {
    const N: usize = 12_000;
    let sink = Sink::start();
    let port = free_port();
    let relay = relay(port, &sink, "", ", rate_limit: {points_per_second: 4000}");
    let started = Instant::now();
    send_tcp(port, &numbered_lines("rl.upstream", N, 1_700_000_000));
    assert!(
        wait_until(WAIT, || sink.line_count() == N),
        "{}",
        relay.stderr()
    );
    assert!(
        started.elapsed() >= Duration::from_millis(1800),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        relay.metric("tsrelay_upstream_points_sent_total{upstream=\"sink\"}"),
        N as f64
    );
}

#[test]
fn idle_connections_are_closed_and_their_lines_kept() {
    use std::io::{Read, Write};
    let sink = Sink::start();
    let port = free_port();
    let relay = relay(port, &sink, ", idle_timeout: 300ms", "");
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .write_all(b"idle.a 1 1700000000\nidle.partial 2")
        .expect("send");
    let started = Instant::now();
    let mut rest = Vec::new();
    // The relay closes the connection: the read ends instead of blocking.
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let _ = stream.read_to_end(&mut rest);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "not closed: {:?}",
        started.elapsed()
    );
    assert!(wait_until(WAIT, || sink.line_count() == 1));
    assert_eq!(
        relay.metric("tsrelay_listener_connections_closed_idle_total{listener=\"plain\"}"),
        1.0
    );
    assert_eq!(
        relay.metric(
            "tsrelay_listener_points_rejected_total{listener=\"plain\",reason=\"truncated\"}"
        ),
        1.0
    );
}

#[test]
fn a_slow_http_upload_is_cut_off_at_the_request_timeout() {
    use std::io::{Read, Write};
    let port = free_port();
    let sink = Sink::start();
    let relay = Relay::start(&format!(
        "listeners:\n  - {{name: http, protocol: http, listen: 127.0.0.1:{port}, request_timeout: 300ms}}\n\
         upstreams:\n  - {{name: sink, protocol: graphite_plaintext, address: 127.0.0.1:{}}}\n\
         routes:\n  - {{default: true, to: [sink]}}\n",
        sink.port
    ));
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    // Headers promise 100 bytes; only 10 ever come.
    stream
        .write_all(b"POST /api/v1/datapoints HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n[{\"name\":")
        .expect("send");
    let started = Instant::now();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(
        answer.starts_with("HTTP/1.1 408"),
        "{answer}\n{}",
        relay.stderr()
    );
    assert!(answer.contains("request not completed"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(5));
}
