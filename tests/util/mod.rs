//! Test support: the real relay binary on 127.0.0.1 ports, TCP sinks that
//! record what they receive, and polling helpers.

#![allow(dead_code)]

pub mod carbon;
pub mod irondb;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// A port free on 127.0.0.1 for both TCP and UDP right now, never handed
/// out before in this test run, and below the kernel's ephemeral range.
///
/// Outside the ephemeral range no outgoing connection can take the port
/// between this call and the server's bind, and a connect to a server that
/// is still starting cannot "succeed" by connecting to itself (Linux lets a
/// socket whose ephemeral source port equals the destination port connect
/// to itself), which made readiness checks pass against nothing.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let (low, high) = (20_000u16, ephemeral_low().saturating_sub(1).max(20_001));
    let start = low + (std::process::id() as u16 % (high - low));
    let mut given = GIVEN.lock().expect("lock");
    for offset in 0..(high - low) {
        let port = low + (start - low + offset) % (high - low);
        if given.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok()
            && UdpSocket::bind(("127.0.0.1", port)).is_ok()
        {
            given.push(port);
            return port;
        }
    }
    panic!("no free port below the ephemeral range");
}

/// The first port of the kernel's ephemeral range.
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// Seconds since the epoch, now.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// Polls `condition` every 20 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// True when the test must fail rather than skip for a missing peer.
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// Checks that a peer program is installed: under CI a missing peer fails
/// the test; elsewhere the test is skipped with a message.
pub fn require_peer(program: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !found {
        assert!(
            !in_ci(),
            "peer {program} is required under CI but is not installed"
        );
        eprintln!("SKIP: {program} is not installed (run .ci/run to install the test peers)");
    }
    found
}

/// A running tsrelay process.
pub struct Relay {
    child: Option<Child>,
    pub admin: SocketAddr,
    dir: tempfile::TempDir,
    stderr_path: PathBuf,
}

impl Relay {
    /// Starts the binary with `yaml` (which gets an admin listener added)
    /// and waits until it reports ready.
    pub fn start(yaml: &str) -> Relay {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::start_in(dir, yaml)
    }

    /// Like [`Relay::start`], keeping files in `dir`.
    pub fn start_in(dir: tempfile::TempDir, yaml: &str) -> Relay {
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let config_path = dir.path().join("relay.yaml");
        std::fs::write(&config_path, format!("admin: {{listen: {admin}}}\n{yaml}"))
            .expect("write config");
        let stderr_path = dir.path().join("stderr.log");
        let child = Command::new(env!("CARGO_BIN_EXE_tsrelay"))
            .arg("-c")
            .arg(&config_path)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr_path).expect("stderr file"))
            .spawn()
            .expect("start tsrelay");
        let mut relay = Relay {
            child: Some(child),
            admin,
            dir,
            stderr_path,
        };
        let ready = wait_until(Duration::from_secs(10), || {
            http_get(admin, "/ready").is_some_and(|(status, _)| status == 200) || relay.exited()
        });
        assert!(
            ready && !relay.exited(),
            "relay did not become ready:\n{}",
            relay.stderr()
        );
        relay
    }

    fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|child| child.try_wait().ok().flatten().is_some())
    }

    /// What the relay logged so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// The relay's directory (config, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The value of one sample of `/metrics`, e.g.
    /// `tsrelay_upstream_points_sent_total{upstream="sink"}`; 0 when absent.
    pub fn metric(&self, sample: &str) -> f64 {
        let (_, body) = http_get(self.admin, "/metrics").expect("metrics answer");
        body.lines()
            .find_map(|line| {
                let (name, value) = line.rsplit_once(' ')?;
                (name == sample).then(|| value.parse().ok()).flatten()
            })
            .unwrap_or(0.0)
    }

    /// Sends SIGKILL and reaps the process: a crash, nothing is drained.
    pub fn kill(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "relay did not exit after SIGTERM"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A minimal HTTP/1.0 GET: `(status, body)`, or `None` if nothing answered.
pub fn http_get(address: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

/// Sends bytes on a new TCP connection and closes it.
pub fn send_tcp(port: u16, bytes: &[u8]) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to relay");
    stream.write_all(bytes).expect("send");
    stream.shutdown(Shutdown::Write).expect("shutdown");
    // Wait for the relay to close its side, so the bytes were all read.
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
}

/// A TCP server that records every byte it receives; it can be stalled
/// (accepting but not reading) to create backpressure.
pub struct Sink {
    pub port: u16,
    received: Arc<Mutex<Vec<u8>>>,
    connections: Arc<AtomicU64>,
    reading: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Sink {
    /// A sink that reads everything at once.
    pub fn start() -> Sink {
        Self::start_on(free_port(), true)
    }

    /// A sink that accepts but does not read until [`Sink::resume`].
    pub fn stalled() -> Sink {
        Self::start_on(free_port(), false)
    }

    /// A sink on a given port.
    pub fn start_on(port: u16, reading: bool) -> Sink {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind sink");
        listener.set_nonblocking(true).expect("nonblocking");
        let sink = Sink {
            port,
            received: Arc::default(),
            connections: Arc::default(),
            reading: Arc::new(AtomicBool::new(reading)),
            stop: Arc::default(),
        };
        let (received, connections, reading, stop) = (
            Arc::clone(&sink.received),
            Arc::clone(&sink.connections),
            Arc::clone(&sink.reading),
            Arc::clone(&sink.stop),
        );
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        connections.fetch_add(1, Ordering::Relaxed);
                        let (received, reading, stop) = (
                            Arc::clone(&received),
                            Arc::clone(&reading),
                            Arc::clone(&stop),
                        );
                        thread::spawn(move || read_into(stream, &received, &reading, &stop));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        sink
    }

    /// Starts reading after [`Sink::stalled`].
    pub fn resume(&self) {
        self.reading.store(true, Ordering::Relaxed);
    }

    /// Everything received so far.
    pub fn bytes(&self) -> Vec<u8> {
        self.received.lock().expect("lock").clone()
    }

    /// Everything received, as text lines.
    pub fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.bytes())
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Number of `\n` received.
    pub fn line_count(&self) -> usize {
        self.received
            .lock()
            .expect("lock")
            .iter()
            .filter(|b| **b == b'\n')
            .count()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Stops accepting and closes every connection.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn read_into(
    mut stream: TcpStream,
    received: &Mutex<Vec<u8>>,
    reading: &AtomicBool,
    stop: &AtomicBool,
) {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buffer = vec![0u8; 256 * 1024];
    while !stop.load(Ordering::Relaxed) {
        if !reading.load(Ordering::Relaxed) {
            thread::sleep(Duration::from_millis(10));
            continue;
        }
        match stream.read(&mut buffer) {
            Ok(0) => return,
            Ok(n) => received
                .lock()
                .expect("lock")
                .extend_from_slice(&buffer[..n]),
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

/// Runs a Python 3 snippet with the system interpreter (where Debian's
/// carbon and whisper modules live) and returns its stdout.
pub fn python(script: &str, args: &[&str]) -> String {
    let output = Command::new(system_python())
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("run python3");
    assert!(
        output.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 output")
}

/// Like [`python`], feeding `input` on stdin.
pub fn python_with_input(script: &str, args: &[&str], input: &str) -> String {
    let mut child = Command::new(system_python())
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_owned();
    let writer = thread::spawn(move || stdin.write_all(input.as_bytes()));
    let output = child.wait_with_output().expect("python output");
    writer.join().expect("writer").expect("write stdin");
    assert!(
        output.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 output")
}

/// Debian's python3, which has carbon and whisper; any python3 otherwise.
pub fn system_python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

/// Lines `prefix.N value ts` for N in 0..n.
pub fn numbered_lines(prefix: &str, n: usize, timestamp: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * 32);
    for i in 0..n {
        out.extend_from_slice(format!("{prefix}.{} {i} {timestamp}\n", i % 1000).as_bytes());
    }
    out
}
