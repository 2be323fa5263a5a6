//! Inputs: sockets that read bytes, decode them with a codec and hand
//! batches to the router. Inputs know nothing of formats beyond picking
//! the decoder, and nothing of upstreams beyond the router.

pub mod amqp;
pub mod http;
pub mod tcp;
pub mod udp;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tracing::warn;

use crate::codec::Rejects;
use crate::model::{Batch, Timestamp};
use crate::rate::{PeerLimiter, WhenLimited};
use crate::telemetry::ListenerMetrics;

/// Applies a listener's per-peer rate limit to a decoded batch: drops (and
/// counts) the excess, or waits until the peer may send it.
pub async fn limit_rate(
    limiter: Option<&PeerLimiter>,
    peer: SocketAddr,
    batch: &mut Batch,
    metrics: &ListenerMetrics,
) {
    let Some(limiter) = limiter else { return };
    match limiter.when_limited {
        WhenLimited::Throttle => limiter.wait(peer.ip(), batch.len()).await,
        WhenLimited::Drop => {
            let admitted = limiter.admit(peer.ip(), batch.len());
            if admitted < batch.len() {
                metrics
                    .points_rate_limited
                    .inc_by((batch.len() - admitted) as u64);
                batch.truncate(admitted);
            }
        }
    }
}

/// The limiter a listener's configuration asks for.
pub fn peer_limiter(config: &crate::config::ListenerConfig) -> Option<Arc<PeerLimiter>> {
    config
        .rate_limit
        .map(|(points_per_second, when)| Arc::new(PeerLimiter::new(points_per_second, when)))
}

/// Most reject log lines per listener per second; the counters see every one.
const REJECT_LOG_LINES_PER_SECOND: u64 = 10;

/// Rate-limited logging of rejected input, shared by a listener's connections.
#[derive(Debug, Default, Clone)]
pub struct RejectLog {
    inner: Arc<RejectLogState>,
}

#[derive(Debug, Default)]
struct RejectLogState {
    second: AtomicU64,
    lines: AtomicU64,
    suppressed: AtomicU64,
}

impl RejectLog {
    /// Logs the samples of `rejects` (within the rate limit) naming the peer.
    pub fn log(&self, listener: &str, peer: SocketAddr, rejects: &Rejects) {
        let now = Timestamp::now().as_millis() as u64 / 1000;
        let state = &self.inner;
        if state.second.swap(now, Ordering::Relaxed) != now {
            state.lines.store(0, Ordering::Relaxed);
            let suppressed = state.suppressed.swap(0, Ordering::Relaxed);
            if suppressed > 0 {
                warn!(listener, suppressed, "More input was rejected than logged; see tsrelay_listener_points_rejected_total.");
            }
        }
        let mut logged = 0;
        for sample in rejects.samples() {
            if state.lines.fetch_add(1, Ordering::Relaxed) >= REJECT_LOG_LINES_PER_SECOND {
                break;
            }
            logged += 1;
            warn!(
                listener,
                %peer,
                reason = %sample.reason,
                detail = %sample.detail,
                sample = %sample.record,
                "Rejected input record."
            );
        }
        let not_logged = rejects.total().saturating_sub(logged);
        if not_logged > 0 {
            state.suppressed.fetch_add(not_logged, Ordering::Relaxed);
        }
    }
}
