//! A counting KairosDB REST sink for fault tests: it answers 204 only after
//! recording every point of a request, and can be killed (connections cut
//! mid-request) and restarted on the same port, keeping what it counted.
//!
//! HTTP is used because its answer is an acknowledgement: a point the
//! relay counts as delivered has been recorded here, so any loss the tests
//! find is the relay's.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;

/// How often each `(name, timestamp ms)` was received.
pub type Counts = Arc<Mutex<HashMap<(String, i64), u32>>>;

/// A running (or stopped) sink.
pub struct RestSink {
    /// The port it listens on across restarts.
    pub port: u16,
    counts: Counts,
    running: Option<(tokio::sync::oneshot::Sender<()>, JoinHandle<()>)>,
}

impl RestSink {
    /// Starts a sink on a free port.
    pub fn start() -> RestSink {
        let mut sink = RestSink {
            port: super::free_port(),
            counts: Counts::default(),
            running: None,
        };
        sink.restart();
        sink
    }

    /// A stopped sink on a free port (the upstream is down until `restart`).
    pub fn stopped() -> RestSink {
        RestSink {
            port: super::free_port(),
            counts: Counts::default(),
            running: None,
        }
    }

    /// The URL of its `/api/v1/datapoints`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/api/v1/datapoints", self.port)
    }

    /// Kills the server: open connections and requests are cut.
    pub fn kill(&mut self) {
        if let Some((stop, thread)) = self.running.take() {
            let _ = stop.send(());
            thread.join().expect("sink thread");
        }
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.kill();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let counts = Arc::clone(&self.counts);
        let port = self.port;
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                // The old socket may linger briefly after a kill.
                let listener = loop {
                    match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
                        Ok(listener) => break listener,
                        Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
                    }
                };
                let _ = ready_tx.send(());
                let app = axum::Router::new().route(
                    "/api/v1/datapoints",
                    post(move |headers: HeaderMap, body: Bytes| {
                        let counts = Arc::clone(&counts);
                        async move { record(&counts, &headers, &body) }
                    }),
                );
                tokio::select! {
                    _ = axum::serve(listener, app) => {}
                    _ = stopped => {}
                }
            });
            // Dropping the runtime here cuts every connection.
        });
        ready_rx.recv().expect("sink bound");
        self.running = Some((stop, thread));
    }

    /// Distinct points received.
    pub fn distinct(&self) -> usize {
        self.counts.lock().expect("counts").len()
    }

    /// Points received counting repeats.
    pub fn total(&self) -> u64 {
        self.counts
            .lock()
            .expect("counts")
            .values()
            .map(|n| u64::from(*n))
            .sum()
    }

    /// True when `(name, timestamp ms)` was received.
    pub fn has(&self, name: &str, timestamp_ms: i64) -> bool {
        self.counts
            .lock()
            .expect("counts")
            .contains_key(&(name.to_owned(), timestamp_ms))
    }

    /// The counted points.
    pub fn counts(&self) -> HashMap<(String, i64), u32> {
        self.counts.lock().expect("counts").clone()
    }
}

impl Drop for RestSink {
    fn drop(&mut self) {
        self.kill();
    }
}

fn record(counts: &Counts, headers: &HeaderMap, body: &[u8]) -> StatusCode {
    let gzip = headers
        .get("content-encoding")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
    let mut plain = Vec::new();
    let text: &[u8] = if gzip {
        if flate2::read::GzDecoder::new(body)
            .read_to_end(&mut plain)
            .is_err()
        {
            return StatusCode::BAD_REQUEST;
        }
        &plain
    } else {
        body
    };
    let Ok(metrics) = serde_json::from_slice::<Vec<serde_json::Value>>(text) else {
        return StatusCode::BAD_REQUEST;
    };
    let mut counts = counts.lock().expect("counts");
    for metric in metrics {
        let name = metric["name"].as_str().unwrap_or_default().to_owned();
        for point in metric["datapoints"].as_array().into_iter().flatten() {
            let ts = point[0].as_i64().unwrap_or(-1);
            *counts.entry((name.clone(), ts)).or_insert(0) += 1;
        }
    }
    StatusCode::NO_CONTENT
}
