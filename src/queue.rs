//! The bounded queue in front of each upstream, measured in points.
//!
//! A sender takes one semaphore permit per point before a batch enters the
//! channel; the upstream gives the permits back only once those points are
//! delivered (or given up), so the bound covers queued and in-flight points
//! alike. When no permit is free, [`WhenFull`] decides: `block` makes the
//! input wait (its socket stops being read, so the sender feels TCP
//! backpressure), `drop_newest` drops the incoming batch and reports it.

use std::sync::Arc;

use serde::Deserialize;
use tokio::sync::{mpsc, Semaphore};

use crate::model::Batch;

/// Largest configurable capacity (semaphore permits are taken as u32).
pub const MAX_CAPACITY: usize = u32::MAX as usize;

/// What a full queue does with a new batch.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Wait for room. Slows down every input that routes to this upstream.
    #[default]
    Block,
    /// Drop the incoming batch and count it. Other upstreams are unaffected.
    DropNewest,
}

/// The result of offering a batch to a queue.
#[must_use]
#[derive(Debug, PartialEq, Eq)]
pub enum Enqueued {
    /// The batch is queued.
    Accepted,
    /// The queue was full and its policy dropped the batch.
    Dropped {
        /// Points dropped.
        n_points: usize,
    },
    /// The upstream is gone (shutdown).
    Closed {
        /// Points not queued.
        n_points: usize,
    },
}

/// One queued batch and the permits it holds.
#[derive(Debug)]
pub struct QueueItem {
    /// The points (shared with other upstreams).
    pub batch: Arc<Batch>,
    /// Permits to give back once every point of the batch is delivered.
    pub permits: u32,
}

/// The producing side, one per upstream, shared by every input.
#[derive(Debug, Clone)]
pub struct QueueSender {
    tx: mpsc::Sender<QueueItem>,
    permits: Arc<Semaphore>,
    capacity: usize,
    when_full: WhenFull,
}

/// The consuming side, owned by the upstream task.
#[derive(Debug)]
pub struct QueueReceiver {
    rx: mpsc::Receiver<QueueItem>,
    permits: Arc<Semaphore>,
    capacity: usize,
}

/// Creates a queue holding at most `capacity` points.
pub fn queue(capacity: usize, when_full: WhenFull) -> (QueueSender, QueueReceiver) {
    let capacity = capacity.clamp(1, MAX_CAPACITY);
    let permits = Arc::new(Semaphore::new(capacity));
    // Every item holds at least one permit, so the channel never holds more
    // than `capacity` items; its blocks are allocated lazily.
    let (tx, rx) = mpsc::channel(capacity);
    (
        QueueSender {
            tx,
            permits: Arc::clone(&permits),
            capacity,
            when_full,
        },
        QueueReceiver {
            rx,
            permits,
            capacity,
        },
    )
}

impl QueueSender {
    /// Offers a batch; waits for room under `block`.
    pub async fn send(&self, batch: Arc<Batch>) -> Enqueued {
        let n_points = batch.len();
        if n_points == 0 {
            return Enqueued::Accepted;
        }
        // A batch larger than the whole queue takes all of it rather than
        // waiting forever.
        let permits = n_points.min(self.capacity) as u32;
        let acquired = match self.when_full {
            WhenFull::Block => self.permits.acquire_many(permits).await.ok(),
            WhenFull::DropNewest => match self.permits.try_acquire_many(permits) {
                Ok(permit) => Some(permit),
                Err(tokio::sync::TryAcquireError::NoPermits) => {
                    return Enqueued::Dropped { n_points };
                }
                Err(tokio::sync::TryAcquireError::Closed) => None,
            },
        };
        let Some(acquired) = acquired else {
            return Enqueued::Closed { n_points };
        };
        acquired.forget();
        match self.tx.try_send(QueueItem { batch, permits }) {
            Ok(()) => Enqueued::Accepted,
            Err(_) => {
                self.permits.add_permits(permits as usize);
                Enqueued::Closed { n_points }
            }
        }
    }

    /// Points queued or in flight.
    pub fn depth(&self) -> usize {
        self.capacity - self.permits.available_permits().min(self.capacity)
    }

    /// A handle that reads the depth without keeping the queue open.
    pub fn depth_probe(&self) -> DepthProbe {
        DepthProbe {
            permits: Arc::clone(&self.permits),
            capacity: self.capacity,
        }
    }
}

/// Reads a queue's depth; unlike a sender it does not keep the queue open.
#[derive(Debug, Clone)]
pub struct DepthProbe {
    permits: Arc<Semaphore>,
    capacity: usize,
}

impl DepthProbe {
    /// Points queued or in flight.
    pub fn depth(&self) -> usize {
        self.capacity - self.permits.available_permits().min(self.capacity)
    }
}

impl QueueReceiver {
    /// The next batch; `None` once every sender is gone and the queue is empty.
    pub async fn recv(&mut self) -> Option<QueueItem> {
        self.rx.recv().await
    }

    /// The next batch if one is waiting.
    pub fn try_recv(&mut self) -> Option<QueueItem> {
        self.rx.try_recv().ok()
    }

    /// Gives back permits of delivered (or abandoned) points.
    pub fn release(&self, permits: u32) {
        if permits > 0 {
            self.permits.add_permits(permits as usize);
        }
    }

    /// Points queued or in flight.
    pub fn depth(&self) -> usize {
        self.capacity - self.permits.available_permits().min(self.capacity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Timestamp, Value};

    fn batch_of(n: usize) -> Arc<Batch> {
        let mut batch = Batch::new();
        for i in 0..n {
            batch.push(
                "m",
                [],
                Timestamp::from_millis(i as i64),
                Value::F64(1.0),
                None,
            );
        }
        Arc::new(batch)
    }

    #[tokio::test]
    async fn drop_newest_counts_what_does_not_fit() {
        let (tx, mut rx) = queue(10, WhenFull::DropNewest);
        assert_eq!(tx.send(batch_of(6)).await, Enqueued::Accepted);
        assert_eq!(
            tx.send(batch_of(5)).await,
            Enqueued::Dropped { n_points: 5 }
        );
        assert_eq!(tx.send(batch_of(4)).await, Enqueued::Accepted);
        assert_eq!(tx.depth(), 10);
        let item = rx.recv().await.expect("queued");
        assert_eq!(item.batch.len(), 6);
        // Receiving alone frees nothing: the points are still in flight.
        assert_eq!(
            tx.send(batch_of(1)).await,
            Enqueued::Dropped { n_points: 1 }
        );
        rx.release(item.permits);
        assert_eq!(tx.depth(), 4);
        assert_eq!(tx.send(batch_of(6)).await, Enqueued::Accepted);
    }

    #[tokio::test]
    async fn block_waits_until_points_are_released() {
        let (tx, mut rx) = queue(4, WhenFull::Block);
        assert_eq!(tx.send(batch_of(4)).await, Enqueued::Accepted);
        let blocked = tokio::spawn({
            let tx = tx.clone();
            async move { tx.send(batch_of(2)).await }
        });
        tokio::task::yield_now().await;
        assert!(!blocked.is_finished());
        let item = rx.recv().await.expect("queued");
        rx.release(item.permits);
        assert_eq!(blocked.await.expect("joined"), Enqueued::Accepted);
        // Oversized batches take the whole queue instead of deadlocking.
        let item = rx.recv().await.expect("queued");
        rx.release(item.permits);
        assert_eq!(tx.send(batch_of(9)).await, Enqueued::Accepted);
        assert_eq!(rx.recv().await.expect("queued").permits, 4);
    }

    #[tokio::test]
    async fn closed_queue_reports_closed() {
        let (tx, rx) = queue(4, WhenFull::Block);
        drop(rx);
        assert_eq!(tx.send(batch_of(2)).await, Enqueued::Closed { n_points: 2 });
    }
}
