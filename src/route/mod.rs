//! The router: decides which upstreams each point goes to (and under which
//! name), and hands the batch to their queues.
//!
//! When every point of a batch goes unchanged to the same upstreams (the
//! common case) the batch is shared between their queues without a copy;
//! otherwise each upstream gets its own sub-batch.

mod cluster;
pub mod hash;
mod rules;

use std::sync::Arc;

use crate::health::Health;
use crate::model::Batch;
use crate::queue::{Enqueued, QueueSender};
use crate::receipt::ReceiptPart;
use crate::telemetry::{RouterMetrics, UpstreamMetrics};

pub use rules::{Placement, Renamed, Rules};

/// Most upstreams one relay can route to.
pub const MAX_UPSTREAMS: usize = 256;

/// A set of upstream indices.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DestSet([u64; MAX_UPSTREAMS / 64]);

impl DestSet {
    /// Adds upstream `index`.
    pub fn insert(&mut self, index: usize) {
        self.0[index / 64] |= 1 << (index % 64);
    }

    /// Adds every upstream of `other`.
    pub fn union(&mut self, other: &DestSet) {
        for (word, other) in self.0.iter_mut().zip(other.0) {
            *word |= other;
        }
    }

    /// True when upstream `index` is in the set.
    pub fn contains(&self, index: usize) -> bool {
        self.0[index / 64] & (1 << (index % 64)) != 0
    }

    /// True when the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|word| *word == 0)
    }

    /// The indices in the set, ascending.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        (0..MAX_UPSTREAMS).filter(move |&i| self.contains(i))
    }
}

/// One upstream as the router sees it: its queue and its counters.
#[derive(Debug, Clone)]
pub struct RouteTarget {
    /// The upstream's queue.
    pub queue: QueueSender,
    /// The upstream's counters.
    pub metrics: UpstreamMetrics,
    /// The upstream's disk spool, where `spill` sends what the queue cannot take.
    pub spool: Option<crate::output::Spooler>,
}

/// The router inputs hold: the current [`Router`], swapped whole on reload.
#[derive(Debug, Clone)]
pub struct RouterHandle {
    current: Arc<std::sync::RwLock<Arc<Router>>>,
}

impl RouterHandle {
    /// A handle on `router`.
    pub fn new(router: Router) -> Self {
        Self {
            current: Arc::new(std::sync::RwLock::new(Arc::new(router))),
        }
    }

    /// The router in force now.
    pub fn current(&self) -> Arc<Router> {
        let guard = self
            .current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(&guard)
    }

    /// Puts `router` in force; batches being routed finish with the old one.
    pub fn replace(&self, router: Router) {
        let mut guard = self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *guard = Arc::new(router);
    }

    /// Routes a batch with the router in force (see [`Router::dispatch`]).
    pub async fn dispatch(&self, batch: Batch) {
        self.current().dispatch(batch).await;
    }

    /// Routes a tracked batch (see [`Router::dispatch_tracked`]).
    pub async fn dispatch_tracked(&self, batch: Batch, receipt: Option<ReceiptPart>) {
        self.current().dispatch_tracked(batch, receipt).await;
    }
}

/// Rules plus the queues they feed.
#[derive(Debug)]
pub struct Router {
    rules: Rules,
    targets: Vec<RouteTarget>,
    health: Health,
    metrics: RouterMetrics,
}

impl Router {
    /// A router over `targets`, indexed as the configuration's upstreams.
    pub fn new(
        rules: Rules,
        targets: Vec<RouteTarget>,
        health: Health,
        metrics: RouterMetrics,
    ) -> Self {
        Self {
            rules,
            targets,
            health,
            metrics,
        }
    }

    /// Routes a batch and queues it; returns once every queue accepted or
    /// dropped its share (under `block` this is where inputs wait).
    pub async fn dispatch(&self, batch: Batch) {
        self.dispatch_tracked(batch, None).await;
    }

    /// Like [`Router::dispatch`], with a receipt that is confirmed once
    /// every copy of every point is safe (see [`crate::receipt`]).
    pub async fn dispatch_tracked(&self, batch: Batch, receipt: Option<ReceiptPart>) {
        if batch.is_empty() {
            if let Some(receipt) = receipt {
                receipt.confirm();
            }
            return;
        }
        let placements: Vec<Placement> = batch
            .iter()
            .map(|p| self.rules.place(&p, &self.health))
            .collect();
        let unrouted = placements.iter().filter(|p| p.is_empty()).count();
        if unrouted > 0 {
            self.metrics.points_unrouted.inc_by(unrouted as u64);
        }
        let first = &placements[0];
        let uniform = first.renamed.is_empty() && placements.iter().all(|p| p == first);
        if uniform {
            let targets = first.original;
            let batch = Arc::new(batch);
            for index in targets.iter() {
                let part = receipt.as_ref().map(ReceiptPart::split);
                self.enqueue(index, Arc::clone(&batch), part).await;
            }
            if let Some(receipt) = receipt {
                receipt.confirm();
            }
            return;
        }
        let mut shares: Vec<Option<Batch>> = vec![None; self.targets.len()];
        for (point, placement) in batch.iter().zip(&placements) {
            for index in placement.original.iter() {
                shares[index].get_or_insert_with(Batch::new).push_ref(point);
            }
            for (renamed, set) in &placement.renamed {
                for index in set.iter() {
                    shares[index].get_or_insert_with(Batch::new).push(
                        &renamed.name,
                        renamed.tags.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                        point.timestamp(),
                        point.value().clone(),
                        point.source().cloned(),
                    );
                }
            }
        }
        for (index, share) in shares.into_iter().enumerate() {
            if let Some(share) = share {
                let part = receipt.as_ref().map(ReceiptPart::split);
                self.enqueue(index, Arc::new(share), part).await;
            }
        }
        if let Some(receipt) = receipt {
            receipt.confirm();
        }
    }

    async fn enqueue(&self, index: usize, batch: Arc<Batch>, receipt: Option<ReceiptPart>) {
        let target = &self.targets[index];
        let n_points = batch.len() as u64;
        target.metrics.points_routed.inc_by(n_points);
        match target.queue.send_tracked(batch, receipt).await {
            Enqueued::Accepted { displaced } => {
                target.metrics.dropped_queue_full.inc_by(displaced as u64);
            }
            Enqueued::Full { batch, receipt } => {
                // Configuration guarantees a spool for `spill`.
                let safe = match &target.spool {
                    Some(spool) => spool.write(batch.iter()).await,
                    None => {
                        target.metrics.dropped_queue_full.inc_by(batch.len() as u64);
                        false
                    }
                };
                if let (true, Some(receipt)) = (safe, receipt) {
                    receipt.confirm();
                }
            }
            Enqueued::Dropped { n_points } => {
                target.metrics.dropped_queue_full.inc_by(n_points as u64);
            }
            Enqueued::Closed { n_points } => {
                target.metrics.dropped_shutdown.inc_by(n_points as u64);
            }
        }
        target.metrics.queue_depth.set(target.queue.depth() as i64);
    }
}
