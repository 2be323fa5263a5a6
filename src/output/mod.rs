//! Upstreams: one task per upstream drains its queue in chunks, encodes
//! each chunk in the upstream's format and sends it, retrying with backoff
//! until it is delivered.
//!
//! TCP has no acknowledgement, so "delivered" means written to a live
//! connection; a chunk whose write fails is re-sent on a new connection
//! (at least once: Graphite backends overwrite duplicates). The task ends
//! when its queue is closed and empty, which is how shutdown drains.

mod amqp;
mod chunk;
mod replay;
mod retry;
mod spooler;
mod transport;

use std::ops::Range;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::codec::{self, EncoderOptions, Protocol, Skipped};
use std::sync::Arc;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{Target, UpstreamConfig};
use crate::health::UpstreamHealth;
use crate::model::{Batch, PointRef};
use crate::queue::{Permits, QueueReceiver};
use crate::rate::UpstreamLimiter;
use crate::receipt::ReceiptPart;
use crate::telemetry::UpstreamMetrics;

pub use amqp::run_amqp_upstream;
pub use chunk::{Chunk, Chunker};
use replay::{ReplayPace, ReplaySink};
pub use retry::Backoff;
pub use spooler::Spooler;
pub use transport::{HttpOptions, SendError, Sent, Transport};

/// How often a still-failing upstream is logged again.
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(30);

/// Runs one upstream until its queue closes and is drained, or until
/// `spool_now` fires (the shutdown grace is over): then what is left goes
/// to the spool, if there is one. Once `retire` fires it no longer
/// replays the spool.
pub async fn run_upstream(
    config: UpstreamConfig,
    mut queue: QueueReceiver,
    metrics: UpstreamMetrics,
    health: UpstreamHealth,
    spool: Option<Spooler>,
    spool_now: CancellationToken,
    retire: CancellationToken,
) {
    if matches!(config.target, Target::Amqp(_)) {
        amqp::run_amqp_upstream(config, queue, metrics, health, spool, spool_now, retire).await;
        return;
    }
    let options = encoder_options(&config);
    let Some(mut encoder) = codec::encoder_for(config.format, &options) else {
        warn!(upstream = %config.name, format = %config.format, "No encoder for this format; upstream disabled.");
        return;
    };
    let irondb = matches!(
        config.format,
        Protocol::IrondbRaw | Protocol::IrondbFlatbuffer
    );
    let http = HttpOptions {
        content_type: match config.format {
            Protocol::IrondbFlatbuffer => "application/x-circonus-metric-list-flatbuffer",
            Protocol::IrondbRaw => "text/plain",
            _ => "application/json",
        },
        gzip: config.gzip,
        request_timeout: config.request_timeout,
        put: config.http_put,
        datapoints_header: config.format == Protocol::IrondbFlatbuffer,
        irondb_reply: irondb,
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
    let mut pace = ReplayPace::new(&config);
    let mut in_flight: JoinSet<(bool, usize, Permits)> = JoinSet::new();
    let interrupted = 'run: loop {
        // A failed upstream gets no new points from failover and any_of
        // clusters, so it must find out by itself that it is back; and
        // finished requests are accounted for while waiting for points.
        let next = loop {
            // Only a failed upstream's backoff advances here.
            let probe_delay = if health.get() {
                Duration::from_secs(3600)
            } else {
                backoff.next_delay()
            };
            let replay = ReplayPace::wanted(spool.as_ref(), &health, &retire);
            tokio::select! {
                biased;
                () = spool_now.cancelled(), if spool.is_some() => break Next::SpoolNow,
                () = tokio::time::sleep_until(pace.next_at()), if replay => break Next::Replay,
                chunk = chunker.next(&mut queue) => break Next::Chunk(chunk),
                Some(done) = in_flight.join_next(), if !in_flight.is_empty() => {
                    finish_request(done, &queue, &metrics);
                }
                () = tokio::time::sleep(probe_delay), if !health.get() => {
                    probe(&config, &mut transport, &metrics, &health, &mut backoff, &mut failure_log).await;
                }
            }
        };
        let mut chunk = match next {
            Next::SpoolNow => break 'run true,
            Next::Replay => {
                let Some(spool) = spool.as_ref() else {
                    continue;
                };
                let mut sink = LinkReplay {
                    link: Link {
                        config: &config,
                        transport: &mut transport,
                        metrics: &metrics,
                        health: &health,
                        backoff: &mut backoff,
                        failure_log: &mut failure_log,
                    },
                    encoder: &mut *encoder,
                    buffer: &mut buffer,
                };
                let replayed = pace.replay_record(
                    spool,
                    &mut sink,
                    config.batch.max_points,
                    &spool_now,
                    &metrics,
                );
                if replayed.await.is_break() {
                    break 'run true;
                }
                continue;
            }
            Next::Chunk(None) => break 'run false,
            Next::Chunk(Some(chunk)) => chunk,
        };
        // Settled points (delivered, refused for good, or unrepresentable:
        // each counted) confirm their inputs' receipts; an abort does not.
        let receipts = chunk.take_receipts();
        if let Some(limiter) = &limiter {
            limiter.wait(chunk.len()).await;
        }
        buffer.clear();
        let written = encode(
            &config,
            &mut *encoder,
            chunk.points(),
            &mut buffer,
            &metrics,
        );
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
            let (spool, spool_now) = (spool.clone(), spool_now.clone());
            in_flight.spawn(async move {
                let permits = chunk.permits;
                let delivered = tokio::select! {
                    biased;
                    () = spool_now.cancelled(), if spool.is_some() => {
                        spool_chunk(spool.as_ref(), &chunk, receipts).await;
                        return (false, 0, permits);
                    }
                    delivered = request.deliver(&bytes, written) => delivered,
                };
                receipts.into_iter().for_each(ReceiptPart::confirm);
                (delivered, written, permits)
            });
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
            let delivered = tokio::select! {
                biased;
                () = spool_now.cancelled(), if spool.is_some() => {
                    spool_chunk(spool.as_ref(), &chunk, receipts).await;
                    queue.release(chunk.permits);
                    break 'run true;
                }
                delivered = link.send_until_delivered(&buffer, written) => delivered,
            };
            if !delivered {
                receipts.into_iter().for_each(ReceiptPart::confirm);
                queue.release(chunk.permits);
                continue;
            }
        }
        receipts.into_iter().for_each(ReceiptPart::confirm);
        metrics.points_sent.inc_by(written as u64);
        queue.release(chunk.permits);
        metrics.queue_depth.set(queue.depth() as i64);
    };
    if interrupted {
        let spooled = spool_leftovers(&mut chunker, &mut queue, spool.as_ref()).await;
        while let Some(done) = in_flight.join_next().await {
            finish_request(done, &queue, &metrics);
        }
        info!(upstream = %config.name, spooled, "Grace period over; undelivered points spooled.");
        return;
    }
    while let Some(done) = in_flight.join_next().await {
        finish_request(done, &queue, &metrics);
    }
    info!(upstream = %config.name, "Upstream drained and stopped.");
}

/// Replayed points sent over the upstream's own connection.
struct LinkReplay<'a, 'l> {
    link: Link<'l>,
    encoder: &'a mut dyn codec::Encoder,
    buffer: &'a mut Vec<u8>,
}

impl ReplaySink for LinkReplay<'_, '_> {
    async fn deliver(&mut self, batch: &Batch, range: Range<usize>) -> usize {
        let points = range.filter_map(|i| batch.get(i));
        self.buffer.clear();
        let (config, metrics) = (self.link.config, self.link.metrics);
        let written = encode(config, &mut *self.encoder, points, self.buffer, metrics);
        if self.buffer.is_empty() || !self.link.send_until_delivered(self.buffer, written).await {
            return 0;
        }
        written
    }
}

/// What the upstream loop does next.
enum Next {
    /// Send a chunk of live points (`None`: the queue is closed and empty).
    Chunk(Option<Chunk>),
    /// Replay one spooled record.
    Replay,
    /// The grace period is over: spool what is left and stop.
    SpoolNow,
}

/// The encoder settings an upstream's configuration asks for.
fn encoder_options(config: &UpstreamConfig) -> EncoderOptions {
    EncoderOptions {
        telnet_putm: config.telnet_putm,
        max_line_bytes: config.max_line_bytes,
        flatbuffer_cmls: config.flatbuffer_cmls,
        default_source: config.check.clone(),
    }
}

/// Encodes points for the upstream, translating them first when needed;
/// returns how many were written and counts the rest.
fn encode<'a>(
    config: &UpstreamConfig,
    encoder: &mut dyn codec::Encoder,
    points: impl Iterator<Item = PointRef<'a>> + Clone,
    buffer: &mut Vec<u8>,
    metrics: &UpstreamMetrics,
) -> usize {
    let mut skipped = Skipped::default();
    let written = with_translation(config, points, |points| {
        encoder.encode(points, buffer, &mut skipped)
    });
    metrics.count_skipped(&skipped);
    written
}

/// Hands the points to `write` as the upstream sees them: translated
/// first when its translation changes any of them.
fn with_translation<'a, R>(
    config: &UpstreamConfig,
    points: impl Iterator<Item = PointRef<'a>> + Clone,
    write: impl FnOnce(&mut dyn Iterator<Item = PointRef<'_>>) -> R,
) -> R {
    if config.translation.passes(points.clone()) {
        write(&mut points.into_iter())
    } else {
        let mut translated = Batch::new();
        for point in points {
            config.translation.apply(&point, &mut translated);
        }
        // Bound first: the iterator must not outlive `translated`.
        let written = write(&mut translated.iter());
        written
    }
}

/// After the grace period: writes what the chunker and the queue still
/// hold to the spool (confirming receipts once safe) and returns how many
/// points that was.
async fn spool_leftovers(
    chunker: &mut Chunker,
    queue: &mut QueueReceiver,
    spool: Option<&Spooler>,
) -> usize {
    let mut spooled = 0;
    if let Some(mut leftover) = chunker.take_leftover() {
        let receipts = leftover.take_receipts();
        spooled += leftover.len();
        spool_chunk(spool, &leftover, receipts).await;
        queue.release(leftover.permits);
    }
    while let Some(item) = queue.try_recv() {
        spooled += item.batch.len();
        let safe = match spool {
            Some(spool) => spool.write(item.batch.iter()).await,
            None => false,
        };
        if let Some(receipt) = item.receipt {
            if safe {
                receipt.confirm();
            }
        }
        queue.release(item.permits);
    }
    spooled
}

/// Writes a chunk's points to the spool; confirms their receipts once safe.
async fn spool_chunk(spool: Option<&Spooler>, chunk: &Chunk, receipts: Vec<ReceiptPart>) {
    let safe = match spool {
        Some(spool) => spool.write(chunk.points()).await,
        None => false,
    };
    if safe {
        receipts.into_iter().for_each(ReceiptPart::confirm);
    }
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
    done: Result<(bool, usize, Permits), tokio::task::JoinError>,
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
            match self.transport.send_points(bytes, n_points).await {
                Ok(sent) => {
                    self.metrics.remote_errors.inc_by(sent.remote_errors);
                    self.metrics.misdirected.inc_by(sent.misdirected);
                    self.succeeded(sent.connected);
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
    fn failed(
        &mut self,
        upstream: &str,
        err: &(dyn std::error::Error + 'static),
        retry_in: Duration,
    ) {
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
