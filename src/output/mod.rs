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

use crate::codec::{self, EncoderOptions, Skipped};
use std::sync::Arc;

use tokio::task::JoinSet;

use crate::config::{Target, UpstreamConfig};
use crate::health::UpstreamHealth;
use crate::model::Batch;
use crate::queue::QueueReceiver;
use crate::rate::UpstreamLimiter;
use crate::telemetry::UpstreamMetrics;

pub use chunk::{Chunk, Chunker};
pub use retry::Backoff;
pub use transport::{HttpOptions, SendError, Transport};

/// How often a still-failing upstream is logged again.
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(30);

/// Runs one upstream until its queue closes and is drained.
pub async fn run_upstream(
    config: UpstreamConfig,
    mut queue: QueueReceiver,
    metrics: UpstreamMetrics,
    health: UpstreamHealth,
) {
    let options = EncoderOptions {
        telnet_putm: config.telnet_putm,
        max_line_bytes: config.max_line_bytes,
    };
    let Some(mut encoder) = codec::encoder_for(config.format, &options) else {
        warn!(upstream = %config.name, format = %config.format, "No encoder for this format; upstream disabled.");
        return;
    };
    let http = HttpOptions {
        content_type: "application/json",
        gzip: config.gzip,
        request_timeout: config.request_timeout,
    };
    let mut transport = Transport::with_http(&config.target, config.connect_timeout, http);
    let mut chunker = Chunker::new(config.batch);
    let mut backoff = Backoff::new(config.retry);
    let mut failure_log = FailureLog::default();
    let mut buffer = Vec::with_capacity(64 * 1024);
    // HTTP upstreams may keep several requests in flight; TCP streams are
    // one ordered connection.
    let concurrency = match config.target {
        Target::Http(_) => config.concurrency.max(1),
        _ => 1,
    };
    let shared_config = Arc::new(config.clone());
    let limiter = config
        .rate_limit
        .map(|points_per_second| UpstreamLimiter::new(points_per_second, config.batch.max_points));
    let mut in_flight: JoinSet<(bool, usize, u32)> = JoinSet::new();
    loop {
        // A failed upstream gets no new points from failover and any_of
        // clusters, so it must find out by itself that it is back; and
        // finished requests are accounted for while waiting for points.
        let chunk = loop {
            // Only a failed upstream's backoff advances here.
            let probe_delay = if health.get() {
                Duration::from_secs(3600)
            } else {
                backoff.next_delay()
            };
            tokio::select! {
                chunk = chunker.next(&mut queue) => break chunk,
                Some(done) = in_flight.join_next(), if !in_flight.is_empty() => {
                    finish_request(done, &queue, &metrics);
                }
                _ = tokio::time::sleep(probe_delay), if !health.get() => {
                    probe(&config, &mut transport, &metrics, &health, &mut backoff, &mut failure_log).await;
                }
            }
        };
        let Some(chunk) = chunk else { break };
        if let Some(limiter) = &limiter {
            limiter.wait(chunk.len()).await;
        }
        buffer.clear();
        let mut skipped = Skipped::default();
        let written = if config.translation.is_identity() {
            encoder.encode(&mut chunk.points(), &mut buffer, &mut skipped)
        } else {
            let mut translated = Batch::with_capacity(chunk.len(), 0);
            for point in chunk.points() {
                config.translation.apply(&point, &mut translated);
            }
            let written = encoder.encode(&mut translated.iter(), &mut buffer, &mut skipped);
            written
        };
        metrics.count_skipped(&skipped);
        if !buffer.is_empty() && concurrency > 1 {
            while in_flight.len() >= concurrency {
                if let Some(done) = in_flight.join_next().await {
                    finish_request(done, &queue, &metrics);
                }
            }
            let bytes = std::mem::replace(&mut buffer, Vec::with_capacity(64 * 1024));
            let request = Request {
                config: Arc::clone(&shared_config),
                transport: transport.clone_http(),
                metrics: metrics.clone(),
                health: health.clone(),
            };
            let permits = chunk.permits;
            in_flight
                .spawn(async move { (request.deliver(&bytes, written).await, written, permits) });
            while let Some(done) = in_flight.try_join_next() {
                finish_request(done, &queue, &metrics);
            }
            continue;
        }
        if !buffer.is_empty() {
            let mut link = Link {
                config: &config,
                transport: &mut transport,
                metrics: &metrics,
                health: &health,
                backoff: &mut backoff,
                failure_log: &mut failure_log,
            };
            if !link.send_until_delivered(&buffer, written).await {
                queue.release(chunk.permits);
                continue;
            }
        }
        metrics.points_sent.inc_by(written as u64);
        queue.release(chunk.permits);
        metrics.queue_depth.set(queue.depth() as i64);
    }
    while let Some(done) = in_flight.join_next().await {
        finish_request(done, &queue, &metrics);
    }
    info!(upstream = %config.name, "Upstream drained and stopped.");
}

/// One HTTP request in flight, with its own connection handle and backoff.
struct Request {
    config: Arc<UpstreamConfig>,
    transport: Option<Transport>,
    metrics: UpstreamMetrics,
    health: UpstreamHealth,
}

impl Request {
    /// Sends until delivered or refused; returns whether it was delivered.
    async fn deliver(self, bytes: &[u8], n_points: usize) -> bool {
        let Some(mut transport) = self.transport else {
            return false;
        };
        let mut backoff = Backoff::new(self.config.retry);
        let mut failure_log = FailureLog::default();
        let mut link = Link {
            config: &self.config,
            transport: &mut transport,
            metrics: &self.metrics,
            health: &self.health,
            backoff: &mut backoff,
            failure_log: &mut failure_log,
        };
        link.send_until_delivered(bytes, n_points).await
    }
}

/// Accounts for a finished request: sent points and returned permits.
fn finish_request(
    done: Result<(bool, usize, u32), tokio::task::JoinError>,
    queue: &QueueReceiver,
    metrics: &UpstreamMetrics,
) {
    match done {
        Ok((delivered, written, permits)) => {
            if delivered {
                metrics.points_sent.inc_by(written as u64);
            }
            queue.release(permits);
            metrics.queue_depth.set(queue.depth() as i64);
        }
        Err(err) => warn!(error = %err, "An upstream request task ended abnormally."),
    }
}

/// Everything a send needs about the upstream's connection.
struct Link<'a> {
    config: &'a UpstreamConfig,
    transport: &'a mut Transport,
    metrics: &'a UpstreamMetrics,
    health: &'a UpstreamHealth,
    backoff: &'a mut Backoff,
    failure_log: &'a mut FailureLog,
}

impl Link<'_> {
    /// Sends until the bytes are delivered, backing off between attempts.
    /// Returns false when the upstream refused them for good (counted).
    async fn send_until_delivered(&mut self, bytes: &[u8], n_points: usize) -> bool {
        loop {
            match self.transport.send(bytes).await {
                Ok(connected) => {
                    self.succeeded(connected);
                    return true;
                }
                Err(err) if !err.is_retryable() => {
                    // The upstream is up and said no: it stays healthy.
                    self.succeeded(false);
                    self.metrics.dropped_rejected.inc_by(n_points as u64);
                    warn!(upstream = %self.config.name, error = %err, points = n_points, "Upstream rejected a batch; dropping it.");
                    return false;
                }
                Err(err) => {
                    if matches!(
                        err,
                        SendError::Write { .. }
                            | SendError::Unavailable { .. }
                            | SendError::Request { .. }
                    ) {
                        self.metrics.points_retried.inc_by(n_points as u64);
                    }
                    let delay = self.failed(&err);
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    fn succeeded(&mut self, connected: bool) {
        if connected {
            self.metrics.connects.inc();
            self.failure_log.recovered(&self.config.name);
        }
        self.metrics
            .connected
            .set(i64::from(self.transport.is_open()));
        self.health.set(true);
        self.backoff.reset();
    }

    fn failed(&mut self, err: &SendError) -> Duration {
        self.metrics.connected.set(0);
        self.metrics.send_errors.inc();
        self.health.set(false);
        let delay = self.backoff.next_delay();
        self.failure_log.failed(&self.config.name, err, delay);
        delay
    }
}

/// Tries to (re)connect an idle failed upstream.
async fn probe(
    config: &UpstreamConfig,
    transport: &mut Transport,
    metrics: &UpstreamMetrics,
    health: &UpstreamHealth,
    backoff: &mut Backoff,
    failure_log: &mut FailureLog,
) {
    let mut link = Link {
        config,
        transport,
        metrics,
        health,
        backoff,
        failure_log,
    };
    match link.transport.probe().await {
        Ok(connected) => link.succeeded(connected),
        Err(err) => {
            link.failed(&err);
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
