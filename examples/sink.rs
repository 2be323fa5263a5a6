//! Counting sink for the end-to-end benchmark: listens on a TCP address,
//! accepts any number of connections and counts the Graphite points that
//! arrive, as plaintext lines (`--format plaintext`, counts `\n` with SIMD
//! scanning) or as length-prefixed pickle frames (`--format pickle`,
//! decoded with tsrelay's own `GraphitePickleDecoder`).
//!
//! It stops when it has `--expect N` points, when no byte arrived for
//! `--idle-timeout` seconds after the first one (`--start-timeout` seconds
//! before the first one), or after `--max-seconds` in all, and prints one
//! machine-readable line to stdout:
//!
//! ```text
//! sink format=plaintext points=5000000 expect=5000000 complete=true bytes=... connections=1 rejects=0 first_byte_unix_ns=... last_point_unix_ns=... seconds=1.234 cpu_ticks=12
//! ```
//!
//! `seconds` runs from the first byte received to the read that brought the
//! last counted point; `cpu_ticks` is the sink's own user + system CPU time
//! in clock ticks (`getconf CLK_TCK`). Once listening it prints `listening on ADDR` to
//! stderr (useful with port 0).
//!
//! Usage: `sink --listen 127.0.0.1:2013 --format plaintext --expect 5000000`

use std::io::{ErrorKind, Read};
use std::net::{TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tsrelay::codec::graphite_pickle::GraphitePickleDecoder;
use tsrelay::codec::{Rejects, StreamDecoder};
use tsrelay::model::{Batch, Timestamp};

/// Size of one read.
const READ_BYTES: usize = 1 << 20;
/// Largest pickle frame accepted (far above any relay's batches).
const MAX_FRAME_BYTES: usize = 64 << 20;
/// How often the main thread checks for completion and idleness.
const POLL: Duration = Duration::from_millis(1);
/// A read shorter than this means the peer writes in small pieces (carbon-c-relay
/// writes one line per `write`): the reader then naps for [`SMALL_READ_NAP`] so
/// that the next read takes many lines at once instead of costing one
/// syscall per line, CPU the relay under test would otherwise lose.
const SMALL_READ_BYTES: usize = 16 * 1024;
/// See [`SMALL_READ_BYTES`].
const SMALL_READ_NAP: Duration = Duration::from_micros(500);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Plaintext,
    Pickle,
}

impl Format {
    fn as_str(self) -> &'static str {
        match self {
            Format::Plaintext => "plaintext",
            Format::Pickle => "pickle",
        }
    }
}

#[derive(Debug)]
struct Args {
    listen: String,
    format: Format,
    expect: u64,
    idle_timeout: Duration,
    start_timeout: Duration,
    max_time: Duration,
}

fn usage() -> &'static str {
    "usage: sink --listen HOST:PORT [--format plaintext|pickle] [--expect N] \
     [--idle-timeout SECS] [--start-timeout SECS] [--max-seconds SECS]"
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        listen: "127.0.0.1:0".to_owned(),
        format: Format::Plaintext,
        expect: u64::MAX,
        idle_timeout: Duration::from_secs(5),
        start_timeout: Duration::from_secs(60),
        max_time: Duration::from_secs(3600),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Err(usage().to_owned());
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{}", usage()))?;
        let secs = |v: &str| {
            v.parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(Duration::from_secs_f64)
                .ok_or_else(|| format!("{flag} {v}: not a number of seconds"))
        };
        match flag.as_str() {
            "--listen" => args.listen = value.clone(),
            "--expect" => {
                args.expect = value
                    .replace('_', "")
                    .parse()
                    .map_err(|e| format!("--expect {value}: {e}"))?;
            }
            "--idle-timeout" => args.idle_timeout = secs(&value)?,
            "--start-timeout" => args.start_timeout = secs(&value)?,
            "--max-seconds" => args.max_time = secs(&value)?,
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
    Ok(args)
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Counters shared by the connection threads and the main thread.
#[derive(Debug, Default)]
struct Stats {
    points: AtomicU64,
    bytes: AtomicU64,
    rejects: AtomicU64,
    connections: AtomicU64,
    /// Wall clock of the first byte received (0 until then).
    first_byte_ns: AtomicU64,
    /// Wall clock of the latest read that brought any byte.
    last_byte_ns: AtomicU64,
    /// Wall clock of the latest read that brought at least one point.
    last_point_ns: AtomicU64,
}

impl Stats {
    /// Books one read of `bytes` bytes holding `points` points.
    fn record(&self, bytes: usize, points: u64) {
        let now = now_ns();
        let _ = self
            .first_byte_ns
            .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
        self.last_byte_ns.fetch_max(now, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        if points > 0 {
            // Time first, count second: whoever sees the final count also
            // sees a time at least as late as the read that completed it.
            self.last_point_ns.fetch_max(now, Ordering::Relaxed);
            self.points.fetch_add(points, Ordering::Release);
        }
    }
}

/// Reads one connection to its end, counting newline-terminated lines.
fn count_plaintext(mut stream: TcpStream, stats: &Stats) {
    let mut buf = vec![0u8; READ_BYTES];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                let lines = memchr::memchr_iter(b'\n', &buf[..n]).count() as u64;
                stats.record(n, lines);
                if n < SMALL_READ_BYTES {
                    std::thread::sleep(SMALL_READ_NAP);
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// Reads one connection to its end, decoding pickle frames.
fn count_pickle(mut stream: TcpStream, stats: &Stats) {
    let mut decoder = GraphitePickleDecoder::new(MAX_FRAME_BYTES);
    let mut buf = vec![0u8; READ_BYTES];
    let mut filled = 0;
    let received_at = Timestamp::from_millis(0);
    let mut last_points = 0;
    loop {
        if filled == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        let n = match stream.read(&mut buf[filled..]) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        filled += n;
        // Sized like the previous read's batch to skip regrowing it.
        let mut batch = Batch::with_capacity(last_points, last_points * 48);
        let mut rejects = Rejects::default();
        match decoder.decode(&buf[..filled], received_at, &mut batch, &mut rejects) {
            Ok(used) => {
                buf.copy_within(used..filled, 0);
                filled -= used;
            }
            Err(e) => {
                eprintln!("sink: closing a connection: {e}");
                stats.record(n, batch.len() as u64);
                stats.rejects.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        stats.rejects.fetch_add(rejects.total(), Ordering::Relaxed);
        stats.record(n, batch.len() as u64);
        last_points = batch.len();
        if n < SMALL_READ_BYTES {
            std::thread::sleep(SMALL_READ_NAP);
        }
    }
}

/// This process's user + system CPU time in clock ticks (Linux
/// `/proc/self/stat`; 0 where that is unavailable).
fn own_cpu_ticks() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0;
    };
    // Fields after "pid (comm) ": state is the first, utime the 12th, stime the 13th.
    let rest = stat.rsplit_once(") ").map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    tick(11) + tick(12)
}

fn run(args: &Args) -> Result<bool, String> {
    let listener = TcpListener::bind(&args.listen)
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("local_addr: {e}"))?;
    eprintln!("listening on {local}");

    let stats = Arc::new(Stats::default());
    {
        let stats = Arc::clone(&stats);
        let format = args.format;
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                stats.connections.fetch_add(1, Ordering::Relaxed);
                let stats = Arc::clone(&stats);
                std::thread::spawn(move || match format {
                    Format::Plaintext => count_plaintext(stream, &stats),
                    Format::Pickle => count_pickle(stream, &stats),
                });
            }
        });
    }

    let started_ns = now_ns();
    let complete = loop {
        std::thread::sleep(POLL);
        if stats.points.load(Ordering::Acquire) >= args.expect {
            break true;
        }
        let last = stats.last_byte_ns.load(Ordering::Relaxed);
        let (since, limit) = if last == 0 {
            (started_ns, args.start_timeout)
        } else {
            (last, args.idle_timeout)
        };
        let now = now_ns();
        if now.saturating_sub(since) >= nanos(limit)
            || now.saturating_sub(started_ns) >= nanos(args.max_time)
        {
            break false;
        }
    };

    let points = stats.points.load(Ordering::Acquire);
    let first = stats.first_byte_ns.load(Ordering::Relaxed);
    let last_point = stats.last_point_ns.load(Ordering::Relaxed);
    let seconds = if first == 0 || last_point < first {
        0.0
    } else {
        (last_point - first) as f64 / 1e9
    };
    println!(
        "sink format={} points={} expect={} complete={} bytes={} connections={} rejects={} \
         first_byte_unix_ns={} last_point_unix_ns={} seconds={:.6} cpu_ticks={}",
        args.format.as_str(),
        points,
        if args.expect == u64::MAX {
            0
        } else {
            args.expect
        },
        complete,
        stats.bytes.load(Ordering::Relaxed),
        stats.connections.load(Ordering::Relaxed),
        stats.rejects.load(Ordering::Relaxed),
        first,
        last_point,
        seconds,
        own_cpu_ticks()
    );
    Ok(complete)
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
        // An incomplete count is a result, not an error: the line says so.
        Ok(_) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("sink: {message}");
            ExitCode::FAILURE
        }
    }
}
