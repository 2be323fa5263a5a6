//! Gathering queued batches into chunks of at most `max_points` points.
//!
//! A chunk is a list of ranges over shared batches, so chunking copies no
//! point. It fills until `max_points`, or until `max_delay` has passed since
//! its first point, whichever comes first. Permits go back to the queue
//! only when a batch's last point has been delivered.

use std::ops::Range;
use std::sync::Arc;

use tokio::time::{timeout_at, Instant};

use crate::config::BatchConfig;
use crate::model::{Batch, PointRef};
use crate::queue::{Permits, QueueItem, QueueReceiver};
use crate::receipt::ReceiptPart;

/// Points to encode and send as one unit.
#[derive(Debug, Default)]
pub struct Chunk {
    segments: Vec<(Arc<Batch>, Range<usize>)>,
    n_points: usize,
    /// Queue permits freed once this chunk is delivered.
    pub permits: Permits,
    receipts: Vec<ReceiptPart>,
}

impl Chunk {
    /// Number of points.
    pub fn len(&self) -> usize {
        self.n_points
    }

    /// True when the chunk has no point.
    pub fn is_empty(&self) -> bool {
        self.n_points == 0
    }

    /// Takes the receipt parts of the inputs that asked to know when
    /// these points are safe; confirm them once they are.
    pub fn take_receipts(&mut self) -> Vec<ReceiptPart> {
        std::mem::take(&mut self.receipts)
    }

    /// The points in order.
    pub fn points(&self) -> impl Iterator<Item = PointRef<'_>> + Clone + '_ {
        self.segments
            .iter()
            .flat_map(|(batch, range)| range.clone().filter_map(move |index| batch.get(index)))
    }
}

/// Cuts the queue's batches into chunks.
///
/// The chunk being built lives in the chunker, so [`Chunker::next`] is
/// cancel-safe: a caller may race it against a timer (health probes)
/// without losing points already taken from the queue.
#[derive(Debug)]
pub struct Chunker {
    config: BatchConfig,
    /// A batch only partly taken by the previous chunk, and where it resumes.
    pending: Option<(QueueItem, usize)>,
    building: Chunk,
    deadline: Option<Instant>,
}

impl Chunker {
    /// A chunker with the upstream's batch settings.
    pub fn new(config: BatchConfig) -> Self {
        Self {
            config,
            pending: None,
            building: Chunk::default(),
            deadline: None,
        }
    }

    /// The next chunk, or `None` when the queue is closed and empty.
    pub async fn next(&mut self, queue: &mut QueueReceiver) -> Option<Chunk> {
        while self.building.n_points < self.config.max_points {
            let (item, offset) = match self.pending.take() {
                Some(pending) => pending,
                None => match queue.try_recv() {
                    Some(item) => (item, 0),
                    None if self.building.is_empty() => (queue.recv().await?, 0),
                    None => {
                        let deadline = *self
                            .deadline
                            .get_or_insert_with(|| Instant::now() + self.config.max_delay);
                        match timeout_at(deadline, queue.recv()).await {
                            Ok(Some(item)) => (item, 0),
                            Ok(None) | Err(_) => break,
                        }
                    }
                },
            };
            if self.deadline.is_none() {
                self.deadline = Some(Instant::now() + self.config.max_delay);
            }
            self.take(item, offset);
        }
        self.deadline = None;
        Some(std::mem::take(&mut self.building))
    }

    /// Everything taken from the queue and not yet handed out as a chunk
    /// (for spooling at shutdown).
    pub fn take_leftover(&mut self) -> Option<Chunk> {
        if let Some((item, offset)) = self.pending.take() {
            self.building.n_points += item.batch.len() - offset;
            self.building
                .segments
                .push((Arc::clone(&item.batch), offset..item.batch.len()));
            self.building.permits += item.permits;
            self.building.receipts.extend(item.receipt);
        }
        self.deadline = None;
        let leftover = std::mem::take(&mut self.building);
        (!leftover.is_empty()).then_some(leftover)
    }

    fn take(&mut self, item: QueueItem, offset: usize) {
        let room = self.config.max_points - self.building.n_points;
        let end = item.batch.len().min(offset + room);
        self.building.n_points += end - offset;
        self.building
            .segments
            .push((Arc::clone(&item.batch), offset..end));
        if end == item.batch.len() {
            self.building.permits += item.permits;
            self.building.receipts.extend(item.receipt);
        } else {
            if let Some(receipt) = &item.receipt {
                self.building.receipts.push(receipt.split());
            }
            self.pending = Some((item, end));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::model::{Timestamp, Value};
    use crate::queue::{queue, WhenFull};

    fn batch_of(n: usize, first: i64) -> Arc<Batch> {
        let mut batch = Batch::new();
        for i in 0..n {
            batch.push(
                "m",
                [],
                Timestamp::from_millis(first + i as i64),
                Value::F64(1.0),
                None,
            );
        }
        Arc::new(batch)
    }

    #[tokio::test]
    async fn chunks_split_and_join_batches_in_order() {
        let (tx, mut rx) = queue(100, 1 << 30, WhenFull::Block);
        assert!(matches!(
            tx.send(batch_of(7, 0)).await,
            crate::queue::Enqueued::Accepted { .. }
        ));
        assert!(matches!(
            tx.send(batch_of(5, 7)).await,
            crate::queue::Enqueued::Accepted { .. }
        ));
        drop(tx);
        let mut chunker = Chunker::new(BatchConfig {
            max_points: 4,
            max_delay: Duration::from_secs(60),
        });
        let mut seen = Vec::new();
        let mut permits = Vec::new();
        while let Some(chunk) = chunker.next(&mut rx).await {
            assert!(chunk.len() <= 4);
            seen.extend(chunk.points().map(|p| p.timestamp().as_millis()));
            permits.push(chunk.permits.points);
        }
        assert_eq!(seen, (0..12).collect::<Vec<_>>());
        // The first batch's permits come back with its last point (chunk 2),
        // the second batch's with chunk 3.
        assert_eq!(permits, vec![0, 7, 5]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_partial_chunk_leaves_after_max_delay() {
        let (tx, mut rx) = queue(100, 1 << 30, WhenFull::Block);
        let _ = tx.send(batch_of(2, 0)).await;
        let mut chunker = Chunker::new(BatchConfig {
            max_points: 500,
            max_delay: Duration::from_millis(200),
        });
        let started = Instant::now();
        let chunk = chunker.next(&mut rx).await.expect("chunk");
        assert_eq!(chunk.len(), 2);
        assert_eq!(started.elapsed(), Duration::from_millis(200));
        drop(tx);
    }
}
