//! Delivery receipts: how an input learns that every copy of the points it
//! dispatched is safe (delivered upstream, written to a synced spool, or
//! dropped by a rule the operator configured).
//!
//! A receipt is split into parts that travel with the points: one per
//! queue a batch enters, one per chunk a queued batch is cut into. Each
//! part must be confirmed explicitly; a part dropped unconfirmed (a task
//! aborted at shutdown, a spool write that failed) marks the whole receipt
//! failed. When the last part is gone the waiter learns the outcome. This
//! way the safe answer (not delivered) is the default, and only code that
//! knows the points are safe can say otherwise.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// Creates a receipt: its first part and the waiter for its outcome.
pub fn receipt() -> (ReceiptPart, ReceiptWaiter) {
    let (tx, rx) = oneshot::channel();
    let shared = Arc::new(Shared {
        failed: AtomicBool::new(false),
        done: Mutex::new(Some(tx)),
    });
    (
        ReceiptPart {
            shared: Some(shared),
        },
        ReceiptWaiter { rx },
    )
}

struct Shared {
    failed: AtomicBool,
    done: Mutex<Option<oneshot::Sender<bool>>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        let delivered = !self.failed.load(Ordering::Acquire);
        if let Ok(mut done) = self.done.lock() {
            if let Some(tx) = done.take() {
                // The waiter may be gone (its input closed); nothing to tell.
                let _ = tx.send(delivered);
            }
        }
    }
}

/// One share of a receipt, held by whatever holds the points.
pub struct ReceiptPart {
    shared: Option<Arc<Shared>>,
}

impl std::fmt::Debug for ReceiptPart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiptPart").finish_non_exhaustive()
    }
}

impl ReceiptPart {
    /// Another part of the same receipt, for a copy or a piece of the points.
    pub fn split(&self) -> ReceiptPart {
        ReceiptPart {
            shared: self.shared.clone(),
        }
    }

    /// The points of this part are safe.
    pub fn confirm(mut self) {
        self.shared = None;
    }

    /// The points of this part were not delivered (explicit form of dropping it).
    pub fn fail(self) {}
}

impl Drop for ReceiptPart {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            shared.failed.store(true, Ordering::Release);
        }
    }
}

/// Learns whether every part of a receipt was confirmed.
#[derive(Debug)]
pub struct ReceiptWaiter {
    rx: oneshot::Receiver<bool>,
}

impl ReceiptWaiter {
    /// True once every part was confirmed; false as soon as the last part
    /// is gone and any was dropped unconfirmed.
    pub async fn wait(self) -> bool {
        self.rx.await.unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn confirmed_parts_deliver() {
        let (part, waiter) = receipt();
        let a = part.split();
        let b = part.split();
        part.confirm();
        a.confirm();
        b.confirm();
        assert!(waiter.wait().await);
    }

    #[tokio::test]
    async fn one_dropped_part_fails_the_receipt_once_all_are_gone() {
        let (part, mut waiter) = receipt();
        let a = part.split();
        part.confirm();
        let b = a.split();
        drop(a);
        // Not decided while a part is still out.
        assert!(waiter.rx.try_recv().is_err());
        b.confirm();
        assert!(!waiter.wait().await);
    }

    #[tokio::test]
    async fn failing_explicitly_is_the_same_as_dropping() {
        let (part, waiter) = receipt();
        part.fail();
        assert!(!waiter.wait().await);
    }
}
