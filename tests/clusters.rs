//! Failover and any_of clusters with a member that dies and comes back.

use std::thread;
use std::time::{Duration, Instant};

use crate::util::{free_port, send_tcp, wait_until, Relay, Sink};

const WAIT: Duration = Duration::from_secs(30);

fn lines(prefix: &str, range: std::ops::Range<usize>) -> Vec<u8> {
    range
        .flat_map(|i| format!("{prefix}.m{i} {i} 1700000000\n").into_bytes())
        .collect()
}

fn cluster_relay(port: u16, kind: &str, sinks: &[&Sink]) -> Relay {
    let mut yaml = format!(
        "listeners:\n  - {{name: plain, protocol: graphite_plaintext, listen: 127.0.0.1:{port}}}\nupstreams:\n"
    );
    for (i, sink) in sinks.iter().enumerate() {
        yaml.push_str(&format!(
            "  - {{name: m{i}, protocol: graphite_plaintext, address: 127.0.0.1:{}, \
             batch: {{max_delay: 10ms}}, retry: {{initial: 50ms, max: 200ms}}}}\n",
            sink.port
        ));
    }
    let members: Vec<String> = (0..sinks.len())
        .map(|i| format!("{{upstream: m{i}}}"))
        .collect();
    yaml.push_str(&format!(
        "clusters:\n  - {{name: c, type: {kind}, members: [{}]}}\nroutes:\n  - {{match: {{prefix: \"\"}}, to: [c]}}\n",
        members.join(", ")
    ));
    Relay::start(&yaml)
}

/// A sink "crashes": it stops accepting and closes its connections.
fn crash(sink: Sink) -> u16 {
    let port = sink.port;
    sink.shutdown();
    thread::sleep(Duration::from_millis(200));
    port
}

#[test]
fn failover_moves_to_the_next_member_and_returns() {
    let primary = Sink::start();
    let secondary = Sink::start();
    let port = free_port();
    let relay = cluster_relay(port, "failover", &[&primary, &secondary]);

    send_tcp(port, &lines("before", 0..1000));
    assert!(wait_until(WAIT, || primary.line_count() == 1000));
    assert_eq!(secondary.line_count(), 0);
    let before = primary.lines();

    let primary_port = crash(primary);
    let started = Instant::now();
    // The first chunk after the crash finds the primary gone; it stays
    // queued there while everything after it moves to the secondary.
    let mut sent = 0;
    while secondary.line_count() == 0 {
        assert!(
            started.elapsed() < WAIT,
            "traffic never moved to the secondary"
        );
        send_tcp(port, &lines("during", sent..sent + 100));
        sent += 100;
        thread::sleep(Duration::from_millis(50));
    }
    let moved_after = started.elapsed();
    assert!(
        moved_after < Duration::from_secs(5),
        "took {moved_after:?} to fail over"
    );
    send_tcp(port, &lines("during", sent..sent + 1000));
    sent += 1000;

    let primary = Sink::start_on(primary_port, true);
    // The primary's held chunk is delivered and new traffic returns to it.
    assert!(wait_until(WAIT, || primary.line_count() > 0));
    assert!(wait_until(WAIT, || relay
        .metric("tsrelay_upstream_connected{upstream=\"m0\"}")
        == 1.0));
    thread::sleep(Duration::from_millis(300));
    let secondary_before_return = secondary.line_count();
    send_tcp(port, &lines("after", 0..1000));
    assert!(wait_until(WAIT, || primary
        .lines()
        .iter()
        .filter(|l| l.starts_with("after."))
        .count()
        == 1000));
    assert_eq!(
        secondary.line_count(),
        secondary_before_return,
        "traffic returned to the primary"
    );

    // Nothing lost, nothing duplicated.
    let mut all: Vec<String> = before;
    all.extend(primary.lines());
    all.extend(secondary.lines());
    let total = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), total, "duplicates");
    assert_eq!(total, 1000 + sent + 1000, "{}", relay.stderr());
}

#[test]
fn any_of_moves_only_the_dead_members_share_and_loses_nothing() {
    let sinks = [Sink::start(), Sink::start(), Sink::start()];
    let port = free_port();
    let relay = cluster_relay(port, "any_of", &[&sinks[0], &sinks[1], &sinks[2]]);
    send_tcp(port, &lines("a", 0..3000));
    assert!(wait_until(WAIT, || sinks
        .iter()
        .map(Sink::line_count)
        .sum::<usize>()
        == 3000));
    let owner_of = |sinks: &[&Sink]| {
        let mut owner = std::collections::HashMap::new();
        for (index, sink) in sinks.iter().enumerate() {
            for line in sink.lines() {
                owner.insert(line.split(' ').next().unwrap_or_default().to_owned(), index);
            }
        }
        owner
    };
    let first = owner_of(&[&sinks[0], &sinks[1], &sinks[2]]);
    assert!(
        (0..3).all(|i| first.values().filter(|&&o| o == i).count() > 700),
        "sticky hashing spreads names"
    );

    let [s0, s1, s2] = sinks;
    let delivered_before_crash = s1.line_count();
    let dead_port = crash(s1);
    // Probe until the dead member is noticed, then send the same names again.
    let mut probes = 0;
    while relay.metric("tsrelay_upstream_send_errors_total{upstream=\"m1\"}") == 0.0 {
        send_tcp(port, &lines("probe", probes..probes + 10));
        probes += 10;
        thread::sleep(Duration::from_millis(50));
    }
    let (c0, c2) = (s0.line_count(), s2.line_count());
    send_tcp(port, &lines("a", 0..3000));
    assert!(wait_until(WAIT, || s0.line_count() + s2.line_count() >= c0 + c2 + 3000));
    let second: std::collections::HashMap<String, usize> = {
        let fresh0: Vec<String> = s0.lines().into_iter().skip(c0).collect();
        let fresh2: Vec<String> = s2.lines().into_iter().skip(c2).collect();
        fresh0
            .iter()
            .map(|l| (l.split(' ').next().unwrap_or_default().to_owned(), 0))
            .chain(
                fresh2
                    .iter()
                    .map(|l| (l.split(' ').next().unwrap_or_default().to_owned(), 2)),
            )
            .filter(|(name, _)| name.starts_with("a."))
            .collect()
    };
    for (name, owner) in &first {
        if *owner != 1 {
            assert_eq!(
                second.get(name),
                Some(owner),
                "{name} moved although its member is healthy"
            );
        }
    }
    let s1 = Sink::start_on(dead_port, true);
    // Whatever was held for the dead member arrives once it is back.
    let total = || delivered_before_crash + s0.line_count() + s1.line_count() + s2.line_count();
    assert!(
        wait_until(WAIT, || total() == 3000 + 3000 + probes),
        "{} of {} delivered\n{}",
        total(),
        6000 + probes,
        relay.stderr()
    );
}
