//! Nothing lost: upstream restarts under load with a spilling queue, relay
//! SIGTERM and SIGKILL with a spool, a spool cut at a random byte, and a
//! stalled upstream at full input rate (memory bound, exact drop count).
//! Every test is a real relay process over real sockets.

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::util::rest_sink::RestSink;
use crate::util::{free_port, now_secs, python_with_input, require_peer, wait_until, Relay, Sink};

const WAIT: Duration = Duration::from_secs(180);

/// `n` lines with distinct (name, timestamp): 5000 names times n/5000 seconds.
fn distinct_lines(prefix: &str, start: usize, n: usize, base: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * 40);
    for i in start..start + n {
        out.extend_from_slice(
            format!("{prefix}.m{} {i} {}\n", i % 5000, base + (i / 5000) as i64).as_bytes(),
        );
    }
    out
}

fn send_all(port: u16, bytes: &[u8]) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    for piece in bytes.chunks(64 * 1024) {
        stream.write_all(piece).expect("send");
    }
}

/// An upstream block for a KairosDB REST sink with a spool in `spool_dir`.
fn rest_upstream(sink: &RestSink, queue: &str, spool_dir: &Path, fsync: &str) -> String {
    format!(
        "upstreams:\n  - {{name: rest, protocol: kairosdb_rest, url: \"{}\", default_tag: host=t, \
         batch: {{max_points: 2000, max_delay: 20ms}}, retry: {{initial: 20ms, max: 200ms}}, \
         queue: {queue}, spool: {{dir: \"{}\", fsync: {fsync}, replay_points_per_second: 2000000}}}}\n\
         routes:\n  - {{default: true, to: [rest]}}\n",
        sink.url(),
        spool_dir.display()
    )
}

#[test]
fn upstream_killed_20_times_while_spilling_loses_nothing() {
    let mut sink = RestSink::start();
    let spool = tempfile::tempdir().expect("spool dir");
    let port = free_port();
    let relay = Relay::start(&format!(
        "listeners:\n  - {{name: plain, protocol: graphite_plaintext, listen: 127.0.0.1:{port}}}\n{}",
        rest_upstream(
            &sink,
            "{max_points: 20000, when_full: spill}",
            spool.path(),
            "never"
        )
    ));
    let n = 2_000_000;
    let base = now_secs() - 3600;
    let lines = distinct_lines("restart", 0, n, base);
    let sender = std::thread::spawn(move || send_all(port, &lines));
    let mut restarts = 0;
    let started = Instant::now();
    while restarts < 20 {
        std::thread::sleep(Duration::from_millis(120));
        sink.kill();
        std::thread::sleep(Duration::from_millis(80));
        sink.restart();
        restarts += 1;
    }
    sender.join().expect("sender");
    let delivered = wait_until(WAIT, || sink.distinct() == n);
    let counts = sink.counts();
    assert!(
        delivered,
        "{} of {n} distinct points after {restarts} restarts ({:?})\n{}",
        counts.len(),
        started.elapsed(),
        relay
            .stderr()
            .lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .join("\n")
    );
    for i in (0..n).step_by(997) {
        let name = format!("restart.m{}", i % 5000);
        let ts = (base + (i / 5000) as i64) * 1000;
        assert!(counts.contains_key(&(name, ts)), "point {i} missing");
    }
    let spooled = relay.metric("tsrelay_upstream_points_spooled_total{upstream=\"rest\"}");
    let duplicates = sink.total() - n as u64;
    eprintln!(
        "restarts survived: {restarts}; points sent {n}, distinct received {}, duplicates {duplicates}, spooled {spooled}, in {:?}",
        counts.len(),
        started.elapsed()
    );
    assert!(spooled > 0.0, "the run never spilled to the spool");
    assert_eq!(
        relay.metric(
            "tsrelay_upstream_points_dropped_total{upstream=\"rest\",reason=\"queue_full\"}"
        ),
        0.0
    );
}

#[test]
fn sigterm_with_the_upstream_down_spools_and_the_next_run_delivers() {
    let mut sink = RestSink::stopped();
    let spool = tempfile::tempdir().expect("spool dir");
    let port = free_port();
    let yaml = format!(
        "shutdown: {{grace: 1s}}\n\
         listeners:\n  - {{name: plain, protocol: graphite_plaintext, listen: 127.0.0.1:{port}}}\n{}",
        rest_upstream(&sink, "{max_points: 1000000}", spool.path(), "every_batch")
    );
    let relay = Relay::start(&yaml);
    let n = 100_000;
    let base = now_secs() - 600;
    send_all(port, &distinct_lines("term", 0, n, base));
    let routed = "tsrelay_upstream_points_routed_total{upstream=\"rest\"}";
    assert!(wait_until(WAIT, || relay.metric(routed) == n as f64));
    let status = relay.stop();
    assert!(status.success(), "exit status {status:?}");
    sink.restart();
    let relay = Relay::start(&yaml);
    assert!(
        wait_until(WAIT, || sink.distinct() == n),
        "{} of {n}\n{}",
        sink.distinct(),
        relay.stderr()
    );
    assert!(
        relay.stderr().contains("Spool recovered"),
        "{}",
        relay.stderr()
    );
    // The counter moves once a whole record is delivered.
    let replayed = "tsrelay_upstream_points_replayed_total{upstream=\"rest\"}";
    assert!(
        wait_until(WAIT, || relay.metric(replayed) == n as f64),
        "{}",
        relay.metric(replayed)
    );
}

#[test]
fn sigkill_loses_nothing_that_was_acknowledged() {
    if !require_peer("python3") {
        return;
    }
    let mut sink = RestSink::stopped();
    let spool = tempfile::tempdir().expect("spool dir");
    let port = free_port();
    let yaml = format!(
        "listeners:\n  - {{name: http, protocol: http, listen: 127.0.0.1:{port}, ack: safe}}\n{}",
        rest_upstream(
            &sink,
            "{max_points: 1000, when_full: spill}",
            spool.path(),
            "every_batch"
        )
    );
    let relay = Relay::start(&yaml);
    let ts = (now_secs() - 60) * 1000;
    // 40 bodies of 500 points; prints the index of every body answered 2xx.
    let script = format!(
        "import json, requests, sys\n\
         for j in range(40):\n\
         \x20   body = [{{'name': 'ack.b%d.m%d' % (j, i), 'tags': {{'host': 'a'}}, 'datapoints': [[{ts}, i]]}} for i in range(500)]\n\
         \x20   try:\n\
         \x20       r = requests.post('http://127.0.0.1:{port}/api/v1/datapoints', data=json.dumps(body), timeout=1.5)\n\
         \x20       if 200 <= r.status_code < 300: print(j, flush=True)\n\
         \x20   except requests.exceptions.RequestException:\n\
         \x20       pass\n"
    );
    let acknowledged: Vec<usize> = python_with_input(&script, &[], "")
        .lines()
        .filter_map(|line| line.trim().parse().ok())
        .collect();
    assert!(
        acknowledged.len() >= 30,
        "only {acknowledged:?} were acknowledged\n{}",
        relay.stderr()
    );
    relay.kill();
    sink.restart();
    let relay = Relay::start(&yaml);
    let expected = acknowledged.len() * 500;
    let all_there = || {
        acknowledged
            .iter()
            .all(|j| (0..500).all(|i| sink.has(&format!("ack.b{j}.m{i}"), ts)))
    };
    assert!(
        wait_until(WAIT, all_there),
        "{} points received, {expected} acknowledged\n{}",
        sink.distinct(),
        relay.stderr()
    );
    eprintln!(
        "acknowledged bodies {} of 40 ({expected} points) all delivered after SIGKILL; received {} distinct",
        acknowledged.len(),
        sink.distinct()
    );
}

/// `(points, end offset)` of every record in a segment file.
fn segment_records(path: &Path) -> Vec<(u64, usize)> {
    let bytes = std::fs::read(path).expect("segment");
    let mut records = Vec::new();
    let mut at = 12;
    while at + 12 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("len")) as usize;
        let points = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().expect("points"));
        let end = at + 12 + len;
        if end > bytes.len() {
            break;
        }
        records.push((u64::from(points), end));
        at = end;
    }
    records
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("spool dir")
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "seg"))
        .collect();
    files.sort();
    files
}

#[test]
fn a_spool_cut_at_a_random_byte_replays_every_complete_record() {
    let mut sink = RestSink::stopped();
    let spool = tempfile::tempdir().expect("spool dir");
    let port = free_port();
    let yaml = format!(
        "shutdown: {{grace: 200ms}}\n\
         listeners:\n  - {{name: plain, protocol: graphite_plaintext, listen: 127.0.0.1:{port}}}\n{}",
        rest_upstream(&sink, "{max_points: 1000000}", spool.path(), "every_batch")
    );
    let relay = Relay::start(&yaml);
    let n = 60_000;
    let base = now_secs() - 600;
    // Many small writes, so the spool holds many records.
    for start in (0..n).step_by(2_000) {
        send_all(port, &distinct_lines("torn", start, 2_000, base));
    }
    let routed = "tsrelay_upstream_points_routed_total{upstream=\"rest\"}";
    assert!(wait_until(WAIT, || relay.metric(routed) == n as f64));
    assert!(relay.stop().success());

    let files = segments(spool.path());
    let last = files.last().expect("a segment");
    let records = segment_records(last);
    assert!(records.len() >= 3, "{} records", records.len());
    let before: u64 = files[..files.len() - 1]
        .iter()
        .map(|f| segment_records(f).iter().map(|r| r.0).sum::<u64>())
        .sum();
    // A pseudo-random cut strictly inside one record after the first.
    let seed = u64::from(std::process::id()) ^ now_secs() as u64;
    let victim = 1 + (seed as usize % (records.len() - 1));
    let (start, end) = (records[victim - 1].1, records[victim].1);
    let cut = start + 1 + (seed as usize / 7) % (end - start - 1);
    let kept: u64 = before + records[..victim].iter().map(|r| r.0).sum::<u64>();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(last)
        .expect("open segment");
    file.set_len(cut as u64).expect("truncate");
    drop(file);

    sink.restart();
    let relay = Relay::start(&yaml);
    assert!(
        wait_until(WAIT, || sink.distinct() as u64 == kept),
        "{} of {kept}\n{}",
        sink.distinct(),
        relay.stderr()
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        sink.distinct() as u64,
        kept,
        "more than the complete records arrived"
    );
    assert_eq!(
        relay.metric("tsrelay_upstream_spool_torn_records_total{upstream=\"rest\"}"),
        1.0
    );
    assert!(relay.stderr().contains("torn record"), "{}", relay.stderr());
    eprintln!(
        "spool cut at byte {cut} of record {victim}/{}: {kept} of {n} points replayed, torn record reported",
        records.len()
    );
}

#[test]
fn a_stalled_upstream_keeps_memory_bounded_and_counts_every_drop() {
    let seconds: u64 = std::env::var("TSRELAY_STALL_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let sink = Sink::stalled();
    let port = free_port();
    let max_bytes: u64 = 32 << 20;
    let relay = Relay::start(&format!(
        "listeners:\n  - {{name: plain, protocol: graphite_plaintext, listen: 127.0.0.1:{port}}}\n\
         upstreams:\n  - {{name: stuck, protocol: graphite_plaintext, address: 127.0.0.1:{}, \
         queue: {{max_points: 200000, max_bytes: {max_bytes}, when_full: drop_newest}}}}\n\
         routes:\n  - {{default: true, to: [stuck]}}\n",
        sink.port
    ));
    let baseline = relay.rss_bytes();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            let block = distinct_lines("stall", 0, 10_000, 1_700_000_000);
            let mut sent = 0u64;
            // 500,000 points a second: far more than the stalled upstream
            // takes, while leaving the other tests of this binary some CPU.
            let started = Instant::now();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                stream.write_all(&block).expect("send");
                sent += 10_000;
                let due = Duration::from_micros(sent * 2);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
            sent
        })
    };
    let mut peak = 0;
    while Instant::now() < deadline {
        peak = peak.max(relay.rss_bytes());
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = sender.join().expect("sender");
    let received_metric = "tsrelay_listener_points_received_total{listener=\"plain\"}";
    assert!(wait_until(WAIT, || relay.metric(received_metric) == sent as f64));
    sink.resume();
    let dropped = "tsrelay_upstream_points_dropped_total{upstream=\"stuck\",reason=\"queue_full\"}";
    let settled = wait_until(WAIT, || {
        sink.line_count() as f64 + relay.metric(dropped) == sent as f64
    });
    let received = sink.line_count() as u64;
    let drops = relay.metric(dropped) as u64;
    eprintln!(
        "stalled {seconds}s: sent {sent}, received {received}, dropped {drops}; RSS baseline {} MiB, peak {} MiB, queue bound {} MiB",
        baseline >> 20,
        peak >> 20,
        max_bytes >> 20
    );
    assert!(
        settled,
        "sent {sent} != received {received} + dropped {drops}"
    );
    assert_eq!(drops, sent - received);
    assert!(drops > 0, "the stall never filled the queue");
    // The queue's byte bound plus a fixed allowance for buffers and the allocator.
    let bound = baseline + max_bytes + (96 << 20);
    assert!(
        peak <= bound,
        "peak RSS {} MiB above the bound {} MiB",
        peak >> 20,
        bound >> 20
    );
}

#[test]
fn sighup_with_a_changed_route_loses_nothing_and_routes_anew() {
    let (a, b) = (Sink::start(), Sink::start());
    let port = free_port();
    let yaml = |to: &str| {
        format!(
            "listeners:\n  - {{name: plain, protocol: graphite_plaintext, listen: 127.0.0.1:{port}}}\n\
             upstreams:\n  - {{name: a, protocol: graphite_plaintext, address: 127.0.0.1:{}, batch: {{max_delay: 10ms}}}}\n\
             \x20 - {{name: b, protocol: graphite_plaintext, address: 127.0.0.1:{}, batch: {{max_delay: 10ms}}}}\n\
             routes:\n  - {{default: true, to: [{to}]}}\n",
            a.port, b.port
        )
    };
    let relay = Relay::start(&yaml("a"));
    let n = 200_000;
    let base = now_secs() - 600;
    let lines = distinct_lines("reload", 0, n, base);
    let sender = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        // About two seconds of steady traffic across the reload.
        for piece in lines.chunks(lines.len() / 200 + 1) {
            stream.write_all(piece).expect("send");
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    std::thread::sleep(Duration::from_millis(600));
    relay.reload(&yaml("b"));
    assert!(
        wait_until(Duration::from_secs(10), || relay
            .stderr()
            .contains("Configuration reloaded.")),
        "{}",
        relay.stderr()
    );
    sender.join().expect("sender");
    assert!(
        wait_until(WAIT, || a.line_count() + b.line_count() >= n),
        "a {} + b {} of {n}\n{}",
        a.line_count(),
        b.line_count(),
        relay.stderr()
    );
    let mut seen = std::collections::HashSet::new();
    for line in a.lines().into_iter().chain(b.lines()) {
        assert!(seen.insert(line.clone()), "duplicate {line}");
    }
    assert_eq!(seen.len(), n, "every point exactly once");
    assert!(a.line_count() > 0 && b.line_count() > 0);
    let last = format!(
        "reload.m{} {} {}",
        (n - 1) % 5000,
        n - 1,
        base + ((n - 1) / 5000) as i64
    );
    assert!(
        b.lines().contains(&last),
        "the newest points follow the new route"
    );

    // An invalid file is refused and the running configuration stays.
    relay.reload("listeners: [{name: broken}]\n");
    assert!(
        wait_until(Duration::from_secs(10), || relay
            .stderr()
            .contains("New configuration rejected")),
        "{}",
        relay.stderr()
    );
    send_all(port, b"after.invalid.reload 1 1700000000\n");
    assert!(wait_until(WAIT, || b
        .lines()
        .iter()
        .any(|l| l.starts_with("after.invalid.reload"))));
    eprintln!(
        "SIGHUP under traffic: {n} points, {} before the reload to a, {} after to b, none lost or repeated",
        a.line_count(),
        b.line_count() - 1
    );
}
