//! The bounded queue in front of each upstream, measured in points and bytes.
//!
//! A sender takes one semaphore permit per point (and per byte of the
//! batch's memory) before a batch enters the queue; the upstream gives the
//! permits back only once those points are delivered (or given up), so the
//! bound covers queued and in-flight points alike. When no permit is free,
//! [`WhenFull`] decides: `block` makes the input wait (its socket stops
//! being read, so the sender feels TCP backpressure), `drop_newest` drops
//! the incoming batch, `drop_oldest` drops queued batches from the front to
//! make room, and `spill` hands the batch back so the caller writes it to
//! the upstream's disk spool.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Deserialize;
use tokio::sync::{Notify, Semaphore, SemaphorePermit, TryAcquireError};

use crate::model::Batch;
use crate::receipt::ReceiptPart;

/// Largest configurable capacity in points (permits are taken as u32).
pub const MAX_CAPACITY: usize = u32::MAX as usize;

/// What a full queue does with a new batch.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Wait for room. Slows down every input that routes to this upstream.
    #[default]
    Block,
    /// Write the batch to the upstream's disk spool.
    Spill,
    /// Drop the incoming batch and count it. Other upstreams are unaffected.
    DropNewest,
    /// Drop the oldest queued batches to make room, and count them.
    DropOldest,
}

/// The result of offering a batch to a queue.
#[must_use]
#[derive(Debug)]
pub enum Enqueued {
    /// The batch is queued; `displaced` older points were dropped for it
    /// (`drop_oldest`).
    Accepted {
        /// Points of older batches dropped to make room.
        displaced: usize,
    },
    /// The queue was full and its policy dropped the batch.
    Dropped {
        /// Points dropped.
        n_points: usize,
    },
    /// The queue is full and its policy is `spill`: the caller spools the batch.
    Full {
        /// The batch.
        batch: Arc<Batch>,
        /// Its receipt, to confirm once spooled.
        receipt: Option<ReceiptPart>,
    },
    /// The upstream is gone (shutdown).
    Closed {
        /// Points not queued.
        n_points: usize,
    },
}

/// Queue permits a batch or a chunk holds: points and bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Permits {
    /// One per point.
    pub points: u32,
    /// One per byte of batch memory.
    pub bytes: u32,
}

impl std::ops::AddAssign for Permits {
    fn add_assign(&mut self, other: Permits) {
        self.points = self.points.saturating_add(other.points);
        self.bytes = self.bytes.saturating_add(other.bytes);
    }
}

/// One queued batch and the permits it holds.
#[derive(Debug)]
pub struct QueueItem {
    /// The points (shared with other upstreams).
    pub batch: Arc<Batch>,
    /// Permits to give back once every point of the batch is delivered.
    pub permits: Permits,
    /// Confirmed once every point of the batch is safe, if the input asks.
    pub receipt: Option<ReceiptPart>,
}

#[derive(Debug)]
struct Shared {
    items: Mutex<VecDeque<QueueItem>>,
    /// Wakes the receiver when an item arrives or the last sender leaves.
    arrived: Notify,
    senders_gone: AtomicBool,
    points: Semaphore,
    bytes: Semaphore,
    max_points: usize,
    max_bytes: usize,
}

impl Shared {
    fn items(&self) -> MutexGuard<'_, VecDeque<QueueItem>> {
        // A panic while holding the lock cannot leave the deque invalid.
        self.items
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn release(&self, permits: Permits) {
        if permits.points > 0 {
            self.points.add_permits(permits.points as usize);
        }
        if permits.bytes > 0 {
            self.bytes.add_permits(permits.bytes as usize);
        }
    }

    fn depth(&self) -> usize {
        self.max_points - self.points.available_permits().min(self.max_points)
    }
}

/// Closes the queue for the receiver when the last sender is dropped.
#[derive(Debug)]
struct SenderGuard(Arc<Shared>);

impl Drop for SenderGuard {
    fn drop(&mut self) {
        self.0.senders_gone.store(true, Ordering::Release);
        self.0.arrived.notify_one();
    }
}

/// The producing side, one per upstream, shared by every input.
#[derive(Debug, Clone)]
pub struct QueueSender {
    shared: Arc<Shared>,
    _guard: Arc<SenderGuard>,
    when_full: WhenFull,
}

/// The consuming side, owned by the upstream task.
#[derive(Debug)]
pub struct QueueReceiver {
    shared: Arc<Shared>,
}

impl Drop for QueueReceiver {
    fn drop(&mut self) {
        // Blocked senders wake up and see the queue closed.
        self.shared.points.close();
        self.shared.bytes.close();
    }
}

/// Creates a queue holding at most `max_points` points and about
/// `max_bytes` bytes of batch memory.
pub fn queue(
    max_points: usize,
    max_bytes: usize,
    when_full: WhenFull,
) -> (QueueSender, QueueReceiver) {
    let max_points = max_points.clamp(1, MAX_CAPACITY);
    let max_bytes = max_bytes.clamp(1, MAX_CAPACITY);
    let shared = Arc::new(Shared {
        items: Mutex::new(VecDeque::new()),
        arrived: Notify::new(),
        senders_gone: AtomicBool::new(false),
        points: Semaphore::new(max_points),
        bytes: Semaphore::new(max_bytes),
        max_points,
        max_bytes,
    });
    (
        QueueSender {
            shared: Arc::clone(&shared),
            _guard: Arc::new(SenderGuard(Arc::clone(&shared))),
            when_full,
        },
        QueueReceiver { shared },
    )
}

/// Both permits, or why not.
fn try_acquire<'a>(
    shared: &'a Shared,
    wanted: Permits,
) -> Result<(SemaphorePermit<'a>, SemaphorePermit<'a>), TryAcquireError> {
    let points = shared.points.try_acquire_many(wanted.points)?;
    let bytes = shared.bytes.try_acquire_many(wanted.bytes)?;
    Ok((points, bytes))
}

impl QueueSender {
    /// Offers a batch; waits for room under `block`.
    pub async fn send(&self, batch: Arc<Batch>) -> Enqueued {
        self.send_tracked(batch, None).await
    }

    /// Offers a batch whose delivery `receipt` tracks. A batch dropped by
    /// the queue's policy confirms it (an operator's rule, counted); a
    /// closed queue fails it.
    pub async fn send_tracked(&self, batch: Arc<Batch>, receipt: Option<ReceiptPart>) -> Enqueued {
        let n_points = batch.len();
        if n_points == 0 {
            if let Some(receipt) = receipt {
                receipt.confirm();
            }
            return Enqueued::Accepted { displaced: 0 };
        }
        let shared = &*self.shared;
        // A batch larger than the whole queue takes all of it rather than
        // waiting forever.
        let wanted = Permits {
            points: n_points.min(shared.max_points) as u32,
            bytes: batch.size_bytes().clamp(1, shared.max_bytes) as u32,
        };
        let mut displaced = 0;
        let acquired = match self.when_full {
            WhenFull::Block => {
                let points = shared.points.acquire_many(wanted.points).await;
                let bytes = shared.bytes.acquire_many(wanted.bytes).await;
                points
                    .and_then(|points| bytes.map(|bytes| (points, bytes)))
                    .ok()
            }
            WhenFull::DropNewest | WhenFull::Spill => match try_acquire(shared, wanted) {
                Ok(acquired) => Some(acquired),
                Err(TryAcquireError::NoPermits) if self.when_full == WhenFull::Spill => {
                    return Enqueued::Full { batch, receipt };
                }
                Err(TryAcquireError::NoPermits) => {
                    if let Some(receipt) = receipt {
                        receipt.confirm();
                    }
                    return Enqueued::Dropped { n_points };
                }
                Err(TryAcquireError::Closed) => None,
            },
            WhenFull::DropOldest => loop {
                match try_acquire(shared, wanted) {
                    Ok(acquired) => break Some(acquired),
                    Err(TryAcquireError::Closed) => break None,
                    Err(TryAcquireError::NoPermits) => {
                        let oldest = shared.items().pop_front();
                        let Some(oldest) = oldest else {
                            // Everything queued is in flight: nothing older
                            // can go, so the new batch does.
                            if let Some(receipt) = receipt {
                                receipt.confirm();
                            }
                            return Enqueued::Dropped {
                                n_points: n_points + displaced,
                            };
                        };
                        displaced += oldest.batch.len();
                        shared.release(oldest.permits);
                        if let Some(receipt) = oldest.receipt {
                            receipt.confirm();
                        }
                    }
                }
            },
        };
        let Some((points, bytes)) = acquired else {
            return Enqueued::Closed { n_points };
        };
        if shared.points.is_closed() {
            return Enqueued::Closed { n_points };
        }
        points.forget();
        bytes.forget();
        shared.items().push_back(QueueItem {
            batch,
            permits: wanted,
            receipt,
        });
        shared.arrived.notify_one();
        Enqueued::Accepted { displaced }
    }

    /// Points queued or in flight.
    pub fn depth(&self) -> usize {
        self.shared.depth()
    }

    /// A handle that reads the depth without keeping the queue open.
    pub fn depth_probe(&self) -> DepthProbe {
        DepthProbe {
            shared: Arc::clone(&self.shared),
        }
    }
}

/// Reads a queue's depth; unlike a sender it does not keep the queue open.
#[derive(Debug, Clone)]
pub struct DepthProbe {
    shared: Arc<Shared>,
}

impl DepthProbe {
    /// Points queued or in flight.
    pub fn depth(&self) -> usize {
        self.shared.depth()
    }
}

impl QueueReceiver {
    /// The next batch; `None` once every sender is gone and the queue is empty.
    pub async fn recv(&mut self) -> Option<QueueItem> {
        let shared = Arc::clone(&self.shared);
        loop {
            let arrived = shared.arrived.notified();
            if let Some(item) = shared.items().pop_front() {
                return Some(item);
            }
            if shared.senders_gone.load(Ordering::Acquire) {
                // A last item may have landed between the check and now.
                return shared.items().pop_front();
            }
            arrived.await;
        }
    }

    /// The next batch if one is waiting.
    pub fn try_recv(&mut self) -> Option<QueueItem> {
        self.shared.items().pop_front()
    }

    /// Gives back permits of delivered (or abandoned) points.
    pub fn release(&self, permits: Permits) {
        self.shared.release(permits);
    }

    /// Points queued or in flight.
    pub fn depth(&self) -> usize {
        self.shared.depth()
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

    const NO_BYTE_BOUND: usize = 1 << 30;

    fn accepted(enqueued: Enqueued) -> usize {
        match enqueued {
            Enqueued::Accepted { displaced } => displaced,
            other => panic!("not accepted: {other:?}"),
        }
    }

    fn dropped(enqueued: Enqueued) -> usize {
        match enqueued {
            Enqueued::Dropped { n_points } => n_points,
            other => panic!("not dropped: {other:?}"),
        }
    }

    #[tokio::test]
    async fn drop_newest_counts_what_does_not_fit() {
        let (tx, mut rx) = queue(10, NO_BYTE_BOUND, WhenFull::DropNewest);
        accepted(tx.send(batch_of(6)).await);
        assert_eq!(dropped(tx.send(batch_of(5)).await), 5);
        accepted(tx.send(batch_of(4)).await);
        assert_eq!(tx.depth(), 10);
        let item = rx.recv().await.expect("queued");
        assert_eq!(item.batch.len(), 6);
        // Receiving alone frees nothing: the points are still in flight.
        assert_eq!(dropped(tx.send(batch_of(1)).await), 1);
        rx.release(item.permits);
        assert_eq!(tx.depth(), 4);
        accepted(tx.send(batch_of(6)).await);
    }

    #[tokio::test]
    async fn drop_oldest_makes_room_from_the_front() {
        let (tx, mut rx) = queue(10, NO_BYTE_BOUND, WhenFull::DropOldest);
        accepted(tx.send(batch_of(4)).await);
        accepted(tx.send(batch_of(5)).await);
        // 9 queued; 3 more need the 4-point batch to go.
        assert_eq!(accepted(tx.send(batch_of(3)).await), 4);
        assert_eq!(tx.depth(), 8);
        assert_eq!(rx.recv().await.expect("queued").batch.len(), 5);
        assert_eq!(rx.recv().await.expect("queued").batch.len(), 3);
        accepted(tx.send(batch_of(2)).await);
        assert_eq!(accepted(tx.send(batch_of(1)).await), 2);
        assert_eq!(rx.recv().await.expect("queued").batch.len(), 1);
        accepted(tx.send(batch_of(1)).await);
        assert_eq!(rx.recv().await.expect("queued").batch.len(), 1);
        // All 10 points are in flight now: nothing queued can make room.
        assert_eq!(dropped(tx.send(batch_of(1)).await), 1);
    }

    #[tokio::test]
    async fn drop_oldest_confirms_the_dropped_batches_receipts() {
        let (tx, _rx) = queue(2, NO_BYTE_BOUND, WhenFull::DropOldest);
        let (part, waiter) = crate::receipt::receipt();
        accepted(tx.send_tracked(batch_of(2), Some(part)).await);
        assert_eq!(accepted(tx.send(batch_of(2)).await), 2);
        assert!(
            waiter.wait().await,
            "a counted policy drop settles the receipt"
        );
    }

    #[tokio::test]
    async fn spill_hands_the_batch_back_when_full() {
        let (tx, _rx) = queue(3, NO_BYTE_BOUND, WhenFull::Spill);
        accepted(tx.send(batch_of(3)).await);
        match tx.send(batch_of(2)).await {
            Enqueued::Full { batch, receipt } => {
                assert_eq!(batch.len(), 2);
                assert!(receipt.is_none());
            }
            other => panic!("expected Full, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn bytes_bound_the_queue_too() {
        let one = batch_of(100);
        let size = one.size_bytes();
        let (tx, mut rx) = queue(1_000_000, size * 2, WhenFull::DropNewest);
        accepted(tx.send(Arc::clone(&one)).await);
        accepted(tx.send(Arc::clone(&one)).await);
        assert_eq!(dropped(tx.send(Arc::clone(&one)).await), 100);
        let item = rx.recv().await.expect("queued");
        rx.release(item.permits);
        accepted(tx.send(one).await);
    }

    #[tokio::test]
    async fn block_waits_until_points_are_released() {
        let (tx, mut rx) = queue(4, NO_BYTE_BOUND, WhenFull::Block);
        accepted(tx.send(batch_of(4)).await);
        let blocked = tokio::spawn({
            let tx = tx.clone();
            async move { tx.send(batch_of(2)).await }
        });
        tokio::task::yield_now().await;
        assert!(!blocked.is_finished());
        let item = rx.recv().await.expect("queued");
        rx.release(item.permits);
        accepted(blocked.await.expect("joined"));
        // Oversized batches take the whole queue instead of deadlocking.
        let item = rx.recv().await.expect("queued");
        rx.release(item.permits);
        accepted(tx.send(batch_of(9)).await);
        assert_eq!(rx.recv().await.expect("queued").permits.points, 4);
    }

    #[tokio::test]
    async fn the_receiver_sees_the_end_after_the_last_item() {
        let (tx, mut rx) = queue(10, NO_BYTE_BOUND, WhenFull::Block);
        accepted(tx.send(batch_of(1)).await);
        let other = tx.clone();
        drop(tx);
        accepted(other.send(batch_of(2)).await);
        drop(other);
        assert_eq!(rx.recv().await.expect("first").batch.len(), 1);
        assert_eq!(rx.recv().await.expect("second").batch.len(), 2);
        assert!(rx.recv().await.is_none());
    }

    #[tokio::test]
    async fn closed_queue_reports_closed_and_wakes_blocked_senders() {
        let (tx, rx) = queue(4, NO_BYTE_BOUND, WhenFull::Block);
        accepted(tx.send(batch_of(4)).await);
        let blocked = tokio::spawn({
            let tx = tx.clone();
            async move { tx.send(batch_of(2)).await }
        });
        tokio::task::yield_now().await;
        drop(rx);
        assert!(matches!(
            blocked.await.expect("joined"),
            Enqueued::Closed { n_points: 2 }
        ));
        assert!(matches!(
            tx.send(batch_of(2)).await,
            Enqueued::Closed { n_points: 2 }
        ));
    }
}
