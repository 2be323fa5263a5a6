//! Upstream health as the router sees it: one flag per upstream, written
//! by the upstream's task (connected and sending, or failing), read by
//! failover and any_of clusters. A flag starts healthy, so a cluster
//! routes to its first choice until that member has actually failed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Every upstream's flag, indexed like the configuration's upstreams.
#[derive(Debug, Clone)]
pub struct Health {
    flags: Arc<[UpstreamHealth]>,
}

/// One upstream's flag, held by its task; it outlives a reload that keeps
/// the upstream, whatever its new index.
#[derive(Debug, Clone)]
pub struct UpstreamHealth {
    flag: Arc<AtomicBool>,
}

impl Default for UpstreamHealth {
    fn default() -> Self {
        Self {
            flag: Arc::new(AtomicBool::new(true)),
        }
    }
}

impl Health {
    /// Flags for `n_upstreams` upstreams, all healthy.
    pub fn new(n_upstreams: usize) -> Self {
        Self::from_upstreams((0..n_upstreams).map(|_| UpstreamHealth::default()))
    }

    /// The flags of these upstreams, in this order.
    pub fn from_upstreams(upstreams: impl IntoIterator<Item = UpstreamHealth>) -> Self {
        Self {
            flags: upstreams.into_iter().collect(),
        }
    }

    /// True unless the upstream's last attempt failed.
    pub fn is_healthy(&self, upstream: usize) -> bool {
        self.flags.get(upstream).is_none_or(UpstreamHealth::get)
    }

    /// The handle for one upstream's task.
    pub fn upstream(&self, index: usize) -> UpstreamHealth {
        self.flags.get(index).cloned().unwrap_or_default()
    }
}

impl UpstreamHealth {
    /// Records the outcome of the latest attempt.
    pub fn set(&self, healthy: bool) {
        self.flag.store(healthy, Ordering::Relaxed);
    }

    /// The current state.
    pub fn get(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }
}
