//! Upstream health as the router sees it: one flag per upstream, written
//! by the upstream's task (connected and sending, or failing), read by
//! failover and any_of clusters. A flag starts healthy, so a cluster
//! routes to its first choice until that member has actually failed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Every upstream's flag, indexed like the configuration's upstreams.
#[derive(Debug, Clone)]
pub struct Health {
    flags: Arc<[AtomicBool]>,
}

/// One upstream's flag, held by its task.
#[derive(Debug, Clone)]
pub struct UpstreamHealth {
    flags: Arc<[AtomicBool]>,
    index: usize,
}

impl Health {
    /// Flags for `n_upstreams` upstreams, all healthy.
    pub fn new(n_upstreams: usize) -> Self {
        Self {
            flags: (0..n_upstreams).map(|_| AtomicBool::new(true)).collect(),
        }
    }

    /// True unless the upstream's last attempt failed.
    pub fn is_healthy(&self, upstream: usize) -> bool {
        self.flags
            .get(upstream)
            .is_none_or(|flag| flag.load(Ordering::Relaxed))
    }

    /// The handle for one upstream's task.
    pub fn upstream(&self, index: usize) -> UpstreamHealth {
        UpstreamHealth {
            flags: Arc::clone(&self.flags),
            index,
        }
    }
}

impl UpstreamHealth {
    /// Records the outcome of the latest attempt.
    pub fn set(&self, healthy: bool) {
        if let Some(flag) = self.flags.get(self.index) {
            flag.store(healthy, Ordering::Relaxed);
        }
    }

    /// The current state.
    pub fn get(&self) -> bool {
        self.flags
            .get(self.index)
            .is_none_or(|flag| flag.load(Ordering::Relaxed))
    }
}
