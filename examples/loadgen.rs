//! Load generator for the end-to-end benchmark: sends N Graphite plaintext
//! lines (or, with `--format pickle`, the same points as pickle frames) to
//! a TCP address as fast as it can over one or more connections.
//!
//! The whole payload is generated before the clock starts: about 10,000
//! distinct metric names (a tenth of them Graphite-tagged), realistic
//! values and integer timestamps. Each connection then writes its share in
//! 256 KiB chunks. On success one machine-readable line goes to stdout:
//!
//! ```text
//! loadgen points=5000000 bytes=231234567 connections=4 format=plaintext start_unix_ns=... seconds=1.234
//! ```
//!
//! `start_unix_ns` is taken after every connection is open, just before
//! the first byte is written; `seconds` runs until the last byte is handed
//! to the kernel and every connection is shut down for writing.
//!
//! Usage: `loadgen --addr 127.0.0.1:2003 --points 5000000 --connections 4`

use std::collections::HashSet;
use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::process::ExitCode;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tsrelay::codec::graphite_pickle::GraphitePickleEncoder;
use tsrelay::codec::graphite_plain::GraphitePlainDecoder;
use tsrelay::codec::{Encoder, Rejects, Skipped, StreamDecoder};
use tsrelay::model::{Batch, Timestamp};

/// Bytes handed to one `write` call.
const CHUNK_BYTES: usize = 256 * 1024;
/// Distinct metric names in the payload.
const DISTINCT_NAMES: usize = 10_000;
/// Points per pickle frame in `--format pickle` (tsrelay's default batch).
const PICKLE_FRAME_POINTS: usize = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Plaintext,
    Pickle,
}

#[derive(Debug)]
struct Args {
    addr: String,
    points: usize,
    connections: usize,
    format: Format,
    seed: u64,
}

fn usage() -> &'static str {
    "usage: loadgen --addr HOST:PORT [--points N] [--connections K] \
     [--format plaintext|pickle] [--seed S]"
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        addr: String::new(),
        points: 1_000_000,
        connections: 1,
        format: Format::Plaintext,
        seed: 42,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Err(usage().to_owned());
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{}", usage()))?;
        let bad = |e: std::num::ParseIntError| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--addr" => args.addr = value.clone(),
            "--points" => args.points = value.replace('_', "").parse().map_err(bad)?,
            "--connections" => args.connections = value.parse().map_err(bad)?,
            "--seed" => args.seed = value.parse().map_err(bad)?,
            "--format" => {
                args.format = match value.as_str() {
                    "plaintext" => Format::Plaintext,
                    "pickle" => Format::Pickle,
                    other => return Err(format!("unknown format {other}\n{}", usage())),
                }
            }
            other => return Err(format!("unknown flag {other}\n{}", usage())),
        }
    }
    if args.addr.is_empty() {
        return Err(format!("--addr is required\n{}", usage()));
    }
    if args.connections == 0 {
        return Err("--connections must be at least 1".to_owned());
    }
    Ok(args)
}

/// SplitMix64: small, fast and reproducible; quality is plenty for names.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

/// One realistic metric name; a tenth of the calls produce tagged names.
fn random_name(rng: &mut Rng, tagged: bool) -> String {
    const DCS: &[&str] = &["eu", "us", "ap", "sa"];
    const ROLES: &[&str] = &["web", "db", "cache", "queue", "api", "lb"];
    const APPS: &[&str] = &["checkout", "search", "billing", "auth", "catalog", "cart"];
    if tagged {
        const SERIES: &[&str] = &[
            "app.latency",
            "app.requests",
            "app.errors",
            "http.server.duration",
            "jvm.gc.pause",
            "db.query.time",
        ];
        const STATUS: &[&str] = &["200", "201", "304", "404", "500", "503"];
        let host = format!("{}{:03}", rng.pick(ROLES), rng.below(200));
        let mut name = format!("{};dc={};host={}", rng.pick(SERIES), rng.pick(DCS), host);
        if rng.below(2) == 0 {
            name.push_str(&format!(";status={}", rng.pick(STATUS)));
        }
        return name;
    }
    let host = format!("{}{:03}", rng.pick(ROLES), rng.below(200));
    match rng.below(6) {
        0 => format!("servers.{host}.cpu.core{}.utilisation", rng.below(16)),
        1 => format!(
            "servers.{host}.memory.{}",
            rng.pick(&["free", "used", "cached", "buffers", "swap_used"])
        ),
        2 => format!(
            "servers.{host}.disk.sd{}.{}",
            rng.pick(&["a", "b", "c", "d"]),
            rng.pick(&["read_bytes", "write_bytes", "io_time", "queue_depth"])
        ),
        3 => format!(
            "servers.{host}.net.eth{}.{}",
            rng.below(2),
            rng.pick(&["rx_bytes", "tx_bytes", "rx_errors", "tx_dropped"])
        ),
        4 => format!(
            "apps.{}.{}.{}.{}",
            rng.pick(APPS),
            rng.pick(DCS),
            rng.pick(&["get_item", "list_items", "create", "update", "delete"]),
            rng.pick(&["p50", "p95", "p99", "count", "errors"])
        ),
        _ => format!(
            "stats.{}.{host}.{}.{}",
            rng.pick(DCS),
            rng.pick(&["nginx", "haproxy", "redis", "postgres"]),
            rng.pick(&["connections", "requests", "hits", "misses"])
        ),
    }
}

/// About 10,000 distinct names, one in ten tagged.
fn name_pool(rng: &mut Rng) -> Vec<String> {
    let mut seen = HashSet::with_capacity(DISTINCT_NAMES);
    let mut names = Vec::with_capacity(DISTINCT_NAMES);
    let mut attempts = 0;
    while names.len() < DISTINCT_NAMES && attempts < DISTINCT_NAMES * 100 {
        attempts += 1;
        let tagged = names.len() % 10 == 9;
        let name = random_name(rng, tagged);
        if seen.insert(name.clone()) {
            names.push(name);
        }
    }
    names
}

/// Appends a value such as `12.5`, `0.031`, `7342` or `98.25`.
fn push_value(rng: &mut Rng, out: &mut Vec<u8>) {
    // Writing into a Vec cannot fail.
    let _ = match rng.below(4) {
        0 => write!(out, "{}.{}", rng.below(100), rng.below(10)),
        1 => write!(out, "0.{:03}", rng.below(1000)),
        2 => write!(out, "{}", rng.below(100_000)),
        _ => write!(out, "{}.{:02}", rng.below(1000), rng.below(100)),
    };
}

/// The whole plaintext payload plus the byte offset where each
/// connection's share ends (always on a line boundary).
fn plaintext_payload(args: &Args) -> (Vec<u8>, Vec<usize>) {
    let mut rng = Rng(args.seed);
    let names = name_pool(&mut rng);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(1_800_000_000);
    let mut out = Vec::with_capacity(args.points * 52);
    let mut ends = Vec::with_capacity(args.connections);
    let mut next_cut = 1;
    // Each pass over the names is one "interval": 10 s apart, ending now.
    let passes = args.points.div_ceil(names.len()) as u64;
    for i in 0..args.points {
        let pass = (i / names.len()) as u64;
        let name = &names[i % names.len()];
        out.extend_from_slice(name.as_bytes());
        out.push(b' ');
        push_value(&mut rng, &mut out);
        out.push(b' ');
        let ts = now.saturating_sub((passes - pass) * 10);
        let _ = writeln!(out, "{ts}");
        while next_cut <= args.connections && (i + 1) * args.connections >= next_cut * args.points {
            ends.push(out.len());
            next_cut += 1;
        }
    }
    while ends.len() < args.connections {
        ends.push(out.len());
    }
    (out, ends)
}

/// Re-encodes the plaintext payload as pickle frames of 500 points.
fn pickle_payload(plain: &[u8], connections: usize) -> Result<(Vec<u8>, Vec<usize>), String> {
    let mut decoder = GraphitePlainDecoder::new(16_384);
    let mut batch = Batch::new();
    let mut rejects = Rejects::default();
    let used = decoder
        .decode(plain, Timestamp::from_millis(0), &mut batch, &mut rejects)
        .map_err(|e| format!("cannot decode the generated payload: {e}"))?;
    if used != plain.len() || rejects.total() != 0 {
        return Err(format!(
            "generated payload did not decode cleanly: {} rejects",
            rejects.total()
        ));
    }
    let mut encoder = GraphitePickleEncoder;
    let mut skipped = Skipped::default();
    let mut out = Vec::with_capacity(plain.len());
    let frames = batch.len().div_ceil(PICKLE_FRAME_POINTS);
    let mut ends = Vec::with_capacity(connections);
    let mut next_cut = 1;
    for frame in 0..frames {
        let mut points = batch
            .iter()
            .skip(frame * PICKLE_FRAME_POINTS)
            .take(PICKLE_FRAME_POINTS);
        encoder.encode(&mut points, &mut out, &mut skipped);
        while next_cut <= connections && (frame + 1) * connections >= next_cut * frames {
            ends.push(out.len());
            next_cut += 1;
        }
    }
    if skipped.total() != 0 {
        return Err(format!("{} points could not be pickled", skipped.total()));
    }
    while ends.len() < connections {
        ends.push(out.len());
    }
    Ok((out, ends))
}

fn run(args: &Args) -> Result<(), String> {
    let (plain, plain_ends) = plaintext_payload(args);
    let (payload, ends) = match args.format {
        Format::Plaintext => (plain, plain_ends),
        Format::Pickle => pickle_payload(&plain, args.connections)?,
    };
    let payload: &[u8] = &payload;

    let mut streams = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        let stream = TcpStream::connect(&args.addr)
            .map_err(|e| format!("cannot connect to {}: {e}", args.addr))?;
        stream
            .set_nodelay(true)
            .map_err(|e| format!("set_nodelay: {e}"))?;
        streams.push(stream);
    }

    let start_unix_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let started = Instant::now();
    let results: Vec<Result<(), String>> = std::thread::scope(|scope| {
        let mut handles = Vec::with_capacity(streams.len());
        let mut begin = 0;
        for (stream, &end) in streams.into_iter().zip(&ends) {
            let share = &payload[begin..end];
            begin = end;
            handles.push(scope.spawn(move || send(stream, share)));
        }
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("sender thread panicked".to_owned()))
            })
            .collect()
    });
    let seconds = started.elapsed().as_secs_f64();
    for result in results {
        result?;
    }
    println!(
        "loadgen points={} bytes={} connections={} format={} start_unix_ns={} seconds={:.6}",
        args.points,
        payload.len(),
        args.connections,
        match args.format {
            Format::Plaintext => "plaintext",
            Format::Pickle => "pickle",
        },
        start_unix_ns,
        seconds
    );
    Ok(())
}

fn send(mut stream: TcpStream, share: &[u8]) -> Result<(), String> {
    for chunk in share.chunks(CHUNK_BYTES) {
        stream
            .write_all(chunk)
            .map_err(|e| format!("write failed: {e}"))?;
    }
    stream.flush().map_err(|e| format!("flush failed: {e}"))?;
    stream
        .shutdown(Shutdown::Write)
        .map_err(|e| format!("shutdown failed: {e}"))?;
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("loadgen: {message}");
            ExitCode::FAILURE
        }
    }
}
