//! Counting sink for the end-to-end benchmark: listens on a TCP address,
//! accepts any number of connections and counts the points that arrive:
//!
//! * `--format plaintext`: Graphite plaintext lines (counts `\n` with SIMD
//!   scanning);
//! * `--format pickle`: length-prefixed Graphite pickle frames, decoded with
//!   tsrelay's own `GraphitePickleDecoder`;
//! * `--format kairosdb_rest`: a minimal HTTP/1.1 server for KairosDB's
//!   `POST /api/v1/datapoints`. Keep-alive connections, bodies framed by
//!   `Content-Length` (411 without one; no chunked encoding), gunzipped
//!   when `Content-Encoding: gzip`, points counted with tsrelay's
//!   `kairos_json::parse_body`. It answers `204 No Content` like KairosDB,
//!   or `400` with KairosDB's `{"errors": [...]}` body when the JSON has
//!   problems; each listed error is one reject (the valid points of such a
//!   body still count, as KairosDB stores them);
//! * `--format irondb`: the same server for IRONdb's `PUT|POST /raw`,
//!   reading Circonus FlatBuffer MetricLists (by their `CIML`/`CMLS`
//!   identifier) or TSV with tsrelay's codecs, answering 200 with IRONdb's
//!   `{"records":N,"updated":N,"misdirected":0,"errors":N}`.
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
//! last counted point (for `kairosdb_rest`: to the answer to the request
//! that brought it); `cpu_ticks` is the sink's own user + system CPU time
//! in clock ticks (`getconf CLK_TCK`). Once listening it prints `listening on ADDR` to
//! stderr (useful with port 0).
//!
//! Usage: `sink --listen 127.0.0.1:2013 --format plaintext --expect 5000000`

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tsrelay::codec::graphite_pickle::GraphitePickleDecoder;
use tsrelay::codec::{circonus_fb, irondb_tsv, kairos_json};
use tsrelay::codec::{Rejects, StreamDecoder};
use tsrelay::model::{Batch, Timestamp};

/// The relay's allocator: decoding allocates per point, and glibc's malloc
/// would make the sink cost more than it needs to.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
/// Largest HTTP request head (request line and headers) accepted.
const MAX_HEAD_BYTES: usize = 64 << 10;
/// Largest HTTP request body accepted, as sent and after gunzip.
const MAX_BODY_BYTES: usize = 256 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Plaintext,
    Pickle,
    KairosdbRest,
    /// IRONdb `PUT|POST /raw`: TSV or a Circonus FlatBuffer MetricList.
    Irondb,
}

impl Format {
    fn as_str(self) -> &'static str {
        match self {
            Format::Plaintext => "plaintext",
            Format::Pickle => "pickle",
            Format::KairosdbRest => "kairosdb_rest",
            Format::Irondb => "irondb",
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
    "usage: sink --listen HOST:PORT [--format plaintext|pickle|kairosdb_rest|irondb] [--expect N] \
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
                    "kairosdb_rest" => Format::KairosdbRest,
                    "irondb" => Format::Irondb,
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

/// The parts of an HTTP request head the sink acts on.
#[derive(Debug, Default)]
struct RequestHead {
    /// `POST`, `GET`, ...
    method: String,
    /// The request target, e.g. `/api/v1/datapoints`.
    target: String,
    /// `Content-Length`, if sent.
    content_length: Option<usize>,
    /// A `Content-Length` that is not a number (or two that disagree).
    bad_length: bool,
    /// `Transfer-Encoding` was sent (not supported).
    chunked: bool,
    /// `Content-Encoding: gzip`.
    gzip: bool,
    /// A `Content-Encoding` other than gzip or identity.
    unknown_encoding: Option<String>,
    /// `Expect: 100-continue`.
    expect_continue: bool,
    /// The connection ends after this request.
    close: bool,
}

/// Parses a request head (everything up to and including the blank line);
/// `None` when the request line is malformed.
fn parse_head(head: &[u8]) -> Option<RequestHead> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let (method, target, version) = (
        request_line.next()?,
        request_line.next()?,
        request_line.next()?,
    );
    if method.is_empty() || request_line.next().is_some() || !version.starts_with("HTTP/1.") {
        return None;
    }
    let mut parsed = RequestHead {
        method: method.to_owned(),
        target: target.to_owned(),
        // HTTP/1.0 closes unless it asks for keep-alive.
        close: version == "HTTP/1.0",
        ..RequestHead::default()
    };
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':')?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            match value.parse::<usize>() {
                Ok(n) if parsed.content_length.is_none_or(|m| m == n) => {
                    parsed.content_length = Some(n);
                }
                _ => parsed.bad_length = true,
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            parsed.chunked = true;
        } else if name.eq_ignore_ascii_case("content-encoding") {
            if value.eq_ignore_ascii_case("gzip") || value.eq_ignore_ascii_case("x-gzip") {
                parsed.gzip = true;
            } else if !value.eq_ignore_ascii_case("identity") {
                parsed.unknown_encoding = Some(value.to_owned());
            }
        } else if name.eq_ignore_ascii_case("expect") {
            parsed.expect_continue = value.eq_ignore_ascii_case("100-continue");
        } else if name.eq_ignore_ascii_case("connection") {
            for option in value.split(',').map(str::trim) {
                if option.eq_ignore_ascii_case("close") {
                    parsed.close = true;
                } else if option.eq_ignore_ascii_case("keep-alive") {
                    parsed.close = false;
                }
            }
        }
    }
    Some(parsed)
}

/// Writes one response; `body` is JSON when not empty.
fn respond(stream: &mut TcpStream, status: &str, body: &[u8], close: bool) -> bool {
    let mut response = Vec::with_capacity(128 + body.len());
    response.extend_from_slice(b"HTTP/1.1 ");
    response.extend_from_slice(status.as_bytes());
    response.extend_from_slice(b"\r\n");
    if !body.is_empty() {
        response.extend_from_slice(b"Content-Type: application/json\r\n");
    }
    response.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    if close {
        response.extend_from_slice(b"Connection: close\r\n");
    }
    response.extend_from_slice(b"\r\n");
    response.extend_from_slice(body);
    stream.write_all(&response).is_ok()
}

/// KairosDB's error body: `{"errors":["..."]}`.
fn errors_json(errors: &[String]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "errors": errors }))
        .unwrap_or_else(|_| b"{\"errors\":[]}".to_vec())
}

/// Received bytes of one connection not yet consumed: `buf[start..filled]`.
struct ConnBuf {
    buf: Vec<u8>,
    start: usize,
    filled: usize,
}

impl ConnBuf {
    /// Reads more bytes, making room first; false at end of stream or on
    /// an error. Books every read in `stats` (bytes, no points yet).
    fn fill(&mut self, stream: &mut TcpStream, want: usize, stats: &Stats) -> bool {
        if self.start == self.filled {
            (self.start, self.filled) = (0, 0);
        }
        if self.buf.len() - self.filled < READ_BYTES.min(want.max(1)) {
            self.buf.copy_within(self.start..self.filled, 0);
            self.filled -= self.start;
            self.start = 0;
            let needed = self.filled + want.max(READ_BYTES);
            if self.buf.len() < needed {
                self.buf.resize(needed, 0);
            }
        }
        loop {
            match stream.read(&mut self.buf[self.filled..]) {
                Ok(0) => return false,
                Ok(n) => {
                    self.filled += n;
                    stats.record(n, 0);
                    return true;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
    }

    fn pending(&self) -> &[u8] {
        &self.buf[self.start..self.filled]
    }
}

/// Serves one HTTP/1.1 connection: KairosDB REST `POST`s, one after the
/// other on the same connection (keep-alive), until the peer closes it.
fn serve_http(mut stream: TcpStream, stats: &Stats, irondb: bool) {
    // Each answer is one write; do not let Nagle hold it back.
    let _ = stream.set_nodelay(true);
    let mut conn = ConnBuf {
        buf: vec![0u8; READ_BYTES],
        start: 0,
        filled: 0,
    };
    let mut plain = Vec::new();
    let mut last_points = 0;
    loop {
        // The head, up to the blank line.
        let head_len = loop {
            if let Some(at) = memchr::memmem::find(conn.pending(), b"\r\n\r\n") {
                break at + 4;
            }
            if conn.pending().len() > MAX_HEAD_BYTES {
                respond(
                    &mut stream,
                    "431 Request Header Fields Too Large",
                    b"",
                    true,
                );
                return;
            }
            if !conn.fill(&mut stream, 0, stats) {
                return;
            }
        };
        let Some(head) = parse_head(&conn.pending()[..head_len]) else {
            respond(&mut stream, "400 Bad Request", b"", true);
            return;
        };
        conn.start += head_len;
        // Whatever cannot be framed or is not a datapoints POST ends the
        // connection: its body (if any) cannot be skipped reliably.
        let refusal = if head.bad_length {
            Some("400 Bad Request")
        } else if head.method != "POST" && !(irondb && head.method == "PUT") {
            Some("405 Method Not Allowed")
        } else if head.target.split('?').next()
            != Some(if irondb { "/raw" } else { "/api/v1/datapoints" })
        {
            Some("404 Not Found")
        } else if head.chunked || head.content_length.is_none() {
            Some("411 Length Required")
        } else if head.unknown_encoding.is_some() {
            Some("415 Unsupported Media Type")
        } else if head.content_length.unwrap_or(0) > MAX_BODY_BYTES {
            Some("413 Content Too Large")
        } else {
            None
        };
        if let Some(status) = refusal {
            stats.rejects.fetch_add(1, Ordering::Relaxed);
            respond(&mut stream, status, b"", true);
            return;
        }
        let length = head.content_length.unwrap_or(0);
        if head.expect_continue
            && conn.pending().len() < length
            && stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").is_err()
        {
            return;
        }
        while conn.pending().len() < length {
            let missing = length - conn.pending().len();
            if !conn.fill(&mut stream, missing, stats) {
                return;
            }
        }
        let body = &conn.buf[conn.start..conn.start + length];
        conn.start += length;

        let body = if head.gzip {
            plain.clear();
            let mut decoder =
                flate2::bufread::MultiGzDecoder::new(body).take(MAX_BODY_BYTES as u64 + 1);
            match decoder.read_to_end(&mut plain) {
                Ok(n) if n <= MAX_BODY_BYTES => &plain[..],
                Ok(_) => {
                    stats.rejects.fetch_add(1, Ordering::Relaxed);
                    respond(&mut stream, "413 Content Too Large", b"", true);
                    return;
                }
                Err(e) => {
                    stats.rejects.fetch_add(1, Ordering::Relaxed);
                    let json = errors_json(&[format!("gzip: {e}")]);
                    if !respond(&mut stream, "400 Bad Request", &json, head.close) || head.close {
                        return;
                    }
                    continue;
                }
            }
        } else {
            body
        };
        // Sized like the previous request's batch to skip regrowing it.
        let mut batch = Batch::with_capacity(last_points, last_points * 48);
        if irondb {
            let mut rejects = Rejects::default();
            let flatbuffer = matches!(body.get(4..8), Some(b"CIML" | b"CMLS"));
            let (records, errors) = if flatbuffer {
                circonus_fb::decode(body, &mut batch, &mut rejects)
                    .map_or((0, 1), |outcome| (outcome.records, outcome.errors))
            } else {
                let outcome = irondb_tsv::parse_body(body, &mut batch, &mut rejects);
                (outcome.records, outcome.errors)
            };
            last_points = batch.len();
            stats.rejects.fetch_add(errors, Ordering::Relaxed);
            let json = format!(
                "{{\"records\":{records},\"updated\":{},\"misdirected\":0,\"errors\":{errors}}}",
                records.saturating_sub(errors)
            );
            let answered = respond(&mut stream, "200 OK", json.as_bytes(), head.close);
            stats.record(0, batch.len() as u64);
            if !answered || head.close {
                return;
            }
            continue;
        }
        let outcome = kairos_json::parse_body(body, &mut batch);
        last_points = outcome.n_points;
        let answered = if outcome.errors.is_empty() {
            respond(&mut stream, "204 No Content", b"", head.close)
        } else {
            stats
                .rejects
                .fetch_add(outcome.errors.len() as u64, Ordering::Relaxed);
            respond(
                &mut stream,
                "400 Bad Request",
                &errors_json(&outcome.errors),
                head.close,
            )
        };
        // Counted once answered: when the main thread sees the last point
        // and exits, the relay has its answer already.
        stats.record(0, outcome.n_points as u64);
        if !answered || head.close {
            return;
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
                    Format::KairosdbRest => serve_http(stream, &stats, false),
                    Format::Irondb => serve_http(stream, &stats, true),
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
