//! Upstreams: one task per upstream drains its queue in chunks, encodes
//! each chunk in the upstream's format and sends it, retrying with backoff
//! until it is delivered.
//!
//! TCP has no acknowledgement, so "delivered" means written to a live
//! connection; a chunk whose write fails is re-sent on a new connection
//! (at least once: Graphite backends overwrite duplicates). The task ends
//! when its queue is closed and empty, which is how shutdown drains.

mod chunk;
mod retry;
mod transport;

use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::codec::{self, Skipped};
use crate::config::UpstreamConfig;
use crate::queue::QueueReceiver;
use crate::telemetry::UpstreamMetrics;

pub use chunk::{Chunk, Chunker};
pub use retry::Backoff;
pub use transport::{SendError, Transport};

/// How often a still-failing upstream is logged again.
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(30);

/// Runs one upstream until its queue closes and is drained.
pub async fn run_upstream(
    config: UpstreamConfig,
    mut queue: QueueReceiver,
    metrics: UpstreamMetrics,
) {
    let Some(mut encoder) = codec::encoder_for(config.format) else {
        warn!(upstream = %config.name, format = %config.format, "No encoder for this format; upstream disabled.");
        return;
    };
    let mut transport = Transport::new(&config.target, config.connect_timeout);
    let mut chunker = Chunker::new(config.batch);
    let mut backoff = Backoff::new(config.retry);
    let mut failure_log = FailureLog::default();
    let mut buffer = Vec::with_capacity(64 * 1024);
    while let Some(chunk) = chunker.next(&mut queue).await {
        buffer.clear();
        let mut skipped = Skipped::default();
        let written = encoder.encode(&mut chunk.points(), &mut buffer, &mut skipped);
        metrics.count_skipped(&skipped);
        if !buffer.is_empty() {
            send_until_delivered(
                &config,
                &mut transport,
                &buffer,
                written,
                &metrics,
                &mut backoff,
                &mut failure_log,
            )
            .await;
        }
        metrics.points_sent.inc_by(written as u64);
        queue.release(chunk.permits);
        metrics.queue_depth.set(queue.depth() as i64);
    }
    info!(upstream = %config.name, "Upstream drained and stopped.");
}

async fn send_until_delivered(
    config: &UpstreamConfig,
    transport: &mut Transport,
    bytes: &[u8],
    n_points: usize,
    metrics: &UpstreamMetrics,
    backoff: &mut Backoff,
    failure_log: &mut FailureLog,
) {
    loop {
        match transport.send(bytes).await {
            Ok(connected) => {
                if connected {
                    metrics.connects.inc();
                    failure_log.recovered(&config.name);
                }
                metrics.connected.set(i64::from(transport.is_open()));
                backoff.reset();
                return;
            }
            Err(err) => {
                metrics.connected.set(0);
                metrics.send_errors.inc();
                if matches!(err, SendError::Write { .. }) {
                    metrics.points_retried.inc_by(n_points as u64);
                }
                let delay = backoff.next_delay();
                failure_log.failed(&config.name, &err, delay);
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Logs the first failure of an outage, then at most every 30 s, then the recovery.
#[derive(Debug, Default)]
struct FailureLog {
    failing_since: Option<Instant>,
    last_logged: Option<Instant>,
    failures: u64,
}

impl FailureLog {
    fn failed(&mut self, upstream: &str, err: &SendError, retry_in: Duration) {
        self.failures += 1;
        let now = Instant::now();
        self.failing_since.get_or_insert(now);
        if self
            .last_logged
            .is_none_or(|last| now - last >= FAILURE_LOG_INTERVAL)
        {
            self.last_logged = Some(now);
            let cause = std::error::Error::source(err)
                .map(ToString::to_string)
                .unwrap_or_default();
            warn!(upstream, error = %err, %cause, failures = self.failures, ?retry_in, "Upstream send failed; will retry.");
        }
    }

    fn recovered(&mut self, upstream: &str) {
        if let Some(since) = self.failing_since.take() {
            info!(upstream, failures = self.failures, down_for = ?since.elapsed(), "Upstream connected again.");
        } else {
            info!(upstream, "Upstream connected.");
        }
        self.failures = 0;
        self.last_logged = None;
    }
}
