//! The IRONdb `/raw` test server (`tests/peers/irondb_server.py`), which
//! validates TSV and both Circonus FlatBuffer generations as protocols.md
//! sections 6-8 describe and records every accepted data point.

#![allow(dead_code)]

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{require_peer, system_python, wait_until};

/// A running `irondb_server.py` on 127.0.0.1.
pub struct IrondbServer {
    child: Child,
    port: u16,
    record: PathBuf,
    dir: tempfile::TempDir,
}

impl IrondbServer {
    /// Whether the server can run here (it needs `flatc` and Python's
    /// `flatbuffers`); like [`require_peer`], fails under CI when missing.
    pub fn available() -> bool {
        if !require_peer("flatc") {
            return false;
        }
        let module = Command::new(system_python())
            .args(["-c", "import flatbuffers"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if !module {
            assert!(
                !super::in_ci(),
                "python3-flatbuffers is required under CI but is not installed"
            );
            eprintln!("SKIP: python3-flatbuffers is not installed");
        }
        module
    }

    /// Starts the server; the first `fail_first` requests to `/raw` get 503.
    pub fn start(fail_first: u32) -> IrondbServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = super::free_port();
        let record = dir.path().join("record.jsonl");
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).expect("stderr file");
        let child = Command::new(system_python())
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/peers/irondb_server.py"
            ))
            .arg(port.to_string())
            .arg(&record)
            .arg(fail_first.to_string())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start the IRONdb test server");
        let mut server = IrondbServer {
            child,
            port,
            record,
            dir,
        };
        let up = wait_until(Duration::from_secs(30), || {
            server.exited() || TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(
            up && !server.exited(),
            "the IRONdb test server did not start:\n{}",
            server.stderr()
        );
        server
    }

    fn exited(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_some()
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT/raw`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/raw", self.port)
    }

    /// Every data point accepted so far, one JSON object each:
    /// `{"format": "tsv"|"ciml"|"cmls", "name", "tags", "raw_name",
    /// "timestamp_ms", "type", "value", "cumulative", "account_id",
    /// "check_uuid", "check_name", "target", "module"}`.
    pub fn records(&self) -> Vec<serde_json::Value> {
        read_lines(&self.record)
    }

    /// Problems found so far: `{"severity": "error"|"warning", "error", ..}`
    /// (bad records, X-Snowth-Datapoints mismatches, unaligned FlatBuffers,
    /// dropped histogram bins, 400 answers).
    pub fn errors(&self) -> Vec<serde_json::Value> {
        read_lines(&self.record.with_extension("jsonl.errors"))
    }

    /// One entry per request: method, path, status, content_type,
    /// content_encoding, datapoints (the X-Snowth-Datapoints header), length,
    /// format and the JSON answer.
    pub fn requests(&self) -> Vec<serde_json::Value> {
        read_lines(&self.record.with_extension("jsonl.requests"))
    }

    /// Waits until at least `n` data points are recorded or `timeout`
    /// passes, and returns what is recorded then (callers assert the count).
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<serde_json::Value> {
        wait_until(timeout, || self.records().len() >= n);
        self.records()
    }

    /// What the server wrote to stderr.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }
}

impl Drop for IrondbServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The complete JSON lines of a file; a line still being written is left out.
fn read_lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.split_inclusive('\n')
        .filter(|line| line.ends_with('\n'))
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect()
}
