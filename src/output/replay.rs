//! Replaying an upstream's spool: when it may happen, at what pace, and
//! the record-by-record loop, shared by every kind of upstream.

use std::ops::{ControlFlow, Range};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Spooler;
use crate::config::UpstreamConfig;
use crate::health::UpstreamHealth;
use crate::model::Batch;
use crate::telemetry::UpstreamMetrics;

/// Sends runs of replayed points the way the upstream sends live ones.
pub(super) trait ReplaySink {
    /// Encodes and delivers the points of `batch` in `range` (retrying as
    /// live chunks are retried); returns how many were delivered.
    async fn deliver(&mut self, batch: &Batch, range: Range<usize>) -> usize;
}

/// When the next spooled record may go, so that a recovering backend gets
/// the backlog at `replay_points_per_second`, beside live traffic.
#[derive(Debug)]
pub(super) struct ReplayPace {
    points_per_second: f64,
    next_at: Instant,
}

impl ReplayPace {
    /// The pace the upstream's spool configuration asks for.
    pub(super) fn new(config: &UpstreamConfig) -> Self {
        Self {
            points_per_second: f64::from(
                config
                    .spool
                    .as_ref()
                    .map_or(1, |spool| spool.replay_points_per_second.get()),
            ),
            next_at: Instant::now(),
        }
    }

    /// When the next record may be replayed.
    pub(super) fn next_at(&self) -> Instant {
        self.next_at
    }

    /// Spooled points wait and this upstream may replay them: it takes
    /// points, and it was not retired on reload (its successor replays).
    pub(super) fn wanted(
        spool: Option<&Spooler>,
        health: &UpstreamHealth,
        retire: &CancellationToken,
    ) -> bool {
        spool.is_some_and(Spooler::has_pending) && health.get() && !retire.is_cancelled()
    }

    /// Replays the oldest spooled record through `sink` in runs of
    /// `max_points`, commits it, and paces the next one. Breaks when
    /// `spool_now` fired first: the record stays spooled.
    pub(super) async fn replay_record<S: ReplaySink>(
        &mut self,
        spool: &Spooler,
        sink: &mut S,
        max_points: usize,
        spool_now: &CancellationToken,
        metrics: &UpstreamMetrics,
    ) -> ControlFlow<()> {
        let Some((id, batch)) = spool.next().await else {
            return ControlFlow::Continue(());
        };
        let mut sent = 0;
        for start in (0..batch.len()).step_by(max_points.max(1)) {
            let end = (start + max_points).min(batch.len());
            tokio::select! {
                biased;
                () = spool_now.cancelled() => {
                    // Not committed: the record stays spooled.
                    spool.rewind();
                    return ControlFlow::Break(());
                }
                delivered = sink.deliver(&batch, start..end) => sent += delivered,
            }
        }
        spool.commit(id).await;
        metrics.points_replayed.inc_by(sent as u64);
        metrics.points_sent.inc_by(sent as u64);
        self.next_at =
            Instant::now() + Duration::from_secs_f64(batch.len() as f64 / self.points_per_second);
        ControlFlow::Continue(())
    }
}
