//! Full queues: `block` pushes back on the sender and loses nothing;
//! `drop_newest` drops and counts exactly what it dropped.

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crate::util::{free_port, numbered_lines, wait_until, Relay, Sink};

const WAIT: Duration = Duration::from_secs(60);

fn relay_with_policy(port: u16, sink: u16, policy: &str) -> Relay {
    Relay::start(&format!(
        "listeners:\n  - {{name: plain, protocol: graphite_plaintext, listen: 127.0.0.1:{port}}}\n\
         upstreams:\n  - {{name: sink, protocol: graphite_plaintext, address: 127.0.0.1:{sink}, \
         batch: {{max_points: 100, max_delay: 10ms}}, queue: {{max_points: 1000, when_full: {policy}}}}}\n\
         routes:\n  - {{match: {{prefix: \"\"}}, to: [sink]}}\n"
    ))
}

#[test]
fn block_stops_the_sender_and_loses_nothing() {
    const N: usize = 2_000_000;
    let sink = Sink::stalled();
    let port = free_port();
    let relay = relay_with_policy(port, sink.port, "block");
    let input = numbered_lines("bp.block", N, 1_700_000_000);
    let total = input.len() as u64;
    let written = Arc::new(AtomicU64::new(0));
    let sender = {
        let written = Arc::clone(&written);
        thread::spawn(move || {
            let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            for piece in input.chunks(64 * 1024) {
                stream.write_all(piece).expect("write");
                written.fetch_add(piece.len() as u64, Ordering::Relaxed);
            }
        })
    };
    // The sender must stall well short of the end while the sink does not read.
    thread::sleep(Duration::from_secs(2));
    let stalled_at = written.load(Ordering::Relaxed);
    thread::sleep(Duration::from_secs(1));
    assert_eq!(
        written.load(Ordering::Relaxed),
        stalled_at,
        "the sender was not blocked"
    );
    assert!(
        stalled_at < total / 2,
        "only {stalled_at} of {total} bytes should be in flight"
    );
    let depth = relay.metric("tsrelay_upstream_queue_points{upstream=\"sink\"}");
    assert!(depth <= 1000.0, "queue depth {depth} exceeds its bound");

    sink.resume();
    sender.join().expect("sender finished");
    assert!(
        wait_until(WAIT, || sink.line_count() >= N),
        "{}",
        relay.stderr()
    );
    thread::sleep(Duration::from_millis(200));
    assert_eq!(sink.line_count(), N);
    assert_eq!(
        relay.metric(
            "tsrelay_upstream_points_dropped_total{upstream=\"sink\",reason=\"queue_full\"}"
        ),
        0.0
    );
}

#[test]
fn drop_newest_counts_every_dropped_point() {
    const N: usize = 200_000;
    let sink = Sink::stalled();
    let port = free_port();
    let relay = relay_with_policy(port, sink.port, "drop_newest");
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .write_all(&numbered_lines("bp.drop", N, 1_700_000_000))
        .expect("the relay keeps reading");
    drop(stream);
    assert!(wait_until(WAIT, || relay.metric(
        "tsrelay_listener_points_received_total{listener=\"plain\"}"
    ) == N as f64));
    let dropped = || {
        relay.metric(
            "tsrelay_upstream_points_dropped_total{upstream=\"sink\",reason=\"queue_full\"}",
        )
    };
    let sent = || relay.metric("tsrelay_upstream_points_sent_total{upstream=\"sink\"}");
    // The received counter moves before the last batches are dispatched, so
    // both counters are read afresh until every point is accounted for.
    sink.resume();
    assert!(
        wait_until(WAIT, || sent() + dropped() == N as f64),
        "sent {} dropped {}",
        sent(),
        dropped()
    );
    assert!(
        dropped() > 0.0,
        "a stalled upstream with a 1000-point queue must drop"
    );
    assert!(wait_until(WAIT, || sink.line_count() as f64 == sent()));
    thread::sleep(Duration::from_millis(200));
    assert_eq!(sink.line_count() as f64 + dropped(), N as f64);
}
