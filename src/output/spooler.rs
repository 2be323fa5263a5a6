//! An upstream's disk spool as the async side sees it: points in, points
//! out, every outcome counted. The file work runs on tokio's blocking pool.

use std::sync::Arc;
use std::time::Duration;

use tracing::{error, info, warn};

use crate::config::{Fsync, SpoolConfig};
use crate::model::{Batch, PointRef};
use crate::spool::{self, FsyncPolicy, RecordId, Spool, SpoolError, SpoolOptions, WhenSpoolFull};
use crate::telemetry::UpstreamMetrics;

/// Most points in one spool record, so a replayed record is a modest unit
/// of work and of memory.
const MAX_RECORD_POINTS: usize = 10_000;
/// How long a `block` spool waits between attempts to find room.
const FULL_RETRY: Duration = Duration::from_millis(100);

/// One upstream's spool, shared by the router (spill) and the upstream
/// task (replay, leftovers at shutdown).
#[derive(Debug, Clone)]
pub struct Spooler {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    spool: Spool,
    upstream: String,
    metrics: UpstreamMetrics,
    block_when_full: bool,
}

impl Spooler {
    /// Opens (or recovers) the spool, logging and counting what it found,
    /// and starts the fsync timer for `fsync: interval`.
    ///
    /// # Errors
    /// [`SpoolError`] when the directory cannot be used (locked, unreadable).
    pub fn open(
        upstream: &str,
        config: &SpoolConfig,
        metrics: UpstreamMetrics,
    ) -> Result<Spooler, SpoolError> {
        let mut options = SpoolOptions::new(&config.dir, config.max_bytes);
        options.fsync = match config.fsync {
            Fsync::EveryBatch => FsyncPolicy::EveryBatch,
            Fsync::Interval(interval) => FsyncPolicy::Interval(interval),
            Fsync::Never => FsyncPolicy::Never,
        };
        // A full `block` spool is waited on here, not refused for good.
        options.when_full = if config.drop_oldest_when_full {
            WhenSpoolFull::DropOldest
        } else {
            WhenSpoolFull::Block
        };
        let (spool, recovery) = Spool::open(options)?;
        if recovery.records > 0 || recovery.torn_records > 0 {
            info!(
                upstream,
                dir = %config.dir.display(),
                records = recovery.records,
                points = recovery.points,
                bytes = recovery.bytes,
                torn_records = recovery.torn_records,
                torn_bytes = recovery.torn_bytes,
                "Spool recovered; its points will be replayed."
            );
        }
        if recovery.torn_records > 0 {
            warn!(upstream, torn_records = recovery.torn_records, torn_bytes = recovery.torn_bytes,
                "The spool ended in a torn record (a crash while writing); everything before it is kept.");
            metrics.spool_torn_records.inc_by(recovery.torn_records);
        }
        let spooler = Spooler {
            inner: Arc::new(Inner {
                spool,
                upstream: upstream.to_owned(),
                metrics,
                block_when_full: !config.drop_oldest_when_full,
            }),
        };
        spooler.update_gauges();
        if let Fsync::Interval(interval) = config.fsync {
            let weak = Arc::downgrade(&spooler.inner);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(interval);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let Some(inner) = weak.upgrade() else { return };
                    let synced = tokio::task::spawn_blocking(move || inner.spool.sync()).await;
                    if let Ok(Err(err)) = synced {
                        warn!(error = %err, "Spool fsync failed.");
                    }
                }
            });
        }
        Ok(spooler)
    }

    /// True while spooled points wait to be replayed.
    pub fn has_pending(&self) -> bool {
        self.inner.spool.len_records() > 0
    }

    /// Writes points to the spool; true once they are safe there (synced
    /// per the fsync policy). A full `block` spool waits for room; a full
    /// `drop_oldest` spool drops its oldest segment (counted).
    pub async fn write<'a>(&self, points: impl Iterator<Item = PointRef<'a>>) -> bool {
        let mut points = points.peekable();
        let mut all_safe = true;
        while points.peek().is_some() {
            let mut record = Vec::new();
            let n =
                spool::record::encode_points(points.by_ref().take(MAX_RECORD_POINTS), &mut record);
            all_safe &= self.append(record, n).await;
        }
        self.update_gauges();
        all_safe
    }

    async fn append(&self, record: Vec<u8>, n_points: u32) -> bool {
        let record = Arc::new(record);
        loop {
            let inner = Arc::clone(&self.inner);
            let bytes = Arc::clone(&record);
            let result =
                tokio::task::spawn_blocking(move || inner.spool.append(&bytes, n_points)).await;
            let metrics = &self.inner.metrics;
            match result {
                Ok(Ok(appended)) => {
                    metrics.points_spooled.inc_by(u64::from(n_points));
                    if appended.dropped_points > 0 {
                        metrics.dropped_spool_full.inc_by(appended.dropped_points);
                        warn!(upstream = %self.inner.upstream, dropped_points = appended.dropped_points,
                            "Spool full: dropped its oldest segment (spool.when_full: drop_oldest).");
                    }
                    return true;
                }
                Ok(Err(SpoolError::Full)) if self.inner.block_when_full => {
                    tokio::time::sleep(FULL_RETRY).await;
                }
                Ok(Err(err)) => {
                    metrics.dropped_spool_error.inc_by(u64::from(n_points));
                    error!(upstream = %self.inner.upstream, error = %err, points = n_points,
                        "Cannot write to the spool; points dropped.");
                    return false;
                }
                Err(err) => {
                    metrics.dropped_spool_error.inc_by(u64::from(n_points));
                    error!(upstream = %self.inner.upstream, error = %err, "Spool task failed.");
                    return false;
                }
            }
        }
    }

    /// The oldest spooled record not yet handed out, decoded.
    pub async fn next(&self) -> Option<(RecordId, Batch)> {
        loop {
            let inner = Arc::clone(&self.inner);
            let read = tokio::task::spawn_blocking(move || inner.spool.next()).await;
            let metrics = &self.inner.metrics;
            match read {
                Ok(Ok(Some((id, bytes, n_points)))) => {
                    let mut batch = Batch::with_capacity(n_points as usize, bytes.len());
                    match spool::record::decode_points(&bytes, &mut batch) {
                        Ok(_) => return Some((id, batch)),
                        Err(err) => {
                            // The CRC matched, so this is a bug or a foreign
                            // file: count it, skip it, never loop on it.
                            metrics.dropped_spool_error.inc_by(u64::from(n_points));
                            error!(upstream = %self.inner.upstream, error = %err, points = n_points,
                                "Spooled record cannot be decoded; skipped.");
                            self.commit(id).await;
                        }
                    }
                }
                Ok(Ok(None)) => return None,
                Ok(Err(SpoolError::Corrupt {
                    dropped_points,
                    ref path,
                    offset,
                    ..
                })) => {
                    metrics.dropped_spool_error.inc_by(dropped_points);
                    error!(upstream = %self.inner.upstream, path = %path.display(), offset, dropped_points,
                        "Spool segment damaged on disk; the rest of it is skipped.");
                }
                Ok(Err(err)) => {
                    error!(upstream = %self.inner.upstream, error = %err, "Cannot read the spool.");
                    return None;
                }
                Err(_) => return None,
            }
        }
    }

    /// Marks a replayed record (and those before it) delivered.
    pub async fn commit(&self, id: RecordId) {
        let inner = Arc::clone(&self.inner);
        let result = tokio::task::spawn_blocking(move || inner.spool.commit(id)).await;
        if let Ok(Err(err)) = result {
            warn!(upstream = %self.inner.upstream, error = %err, "Spool commit failed; the record may be replayed again.");
        }
        self.update_gauges();
    }

    /// Hands out again what was handed out and not committed.
    pub fn rewind(&self) {
        self.inner.spool.rewind();
    }

    fn update_gauges(&self) {
        let metrics = &self.inner.metrics;
        metrics
            .spool_points
            .set(i64::try_from(self.inner.spool.len_points()).unwrap_or(i64::MAX));
        metrics
            .spool_bytes
            .set(i64::try_from(self.inner.spool.len_bytes()).unwrap_or(i64::MAX));
    }
}
