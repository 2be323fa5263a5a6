//! The router: decides which upstreams each point goes to and hands the
//! batch to their queues.
//!
//! Rules are evaluated in order; every rule whose matchers all hold adds its
//! upstreams, and a rule with `stop` ends the evaluation. Points no rule
//! matched go to the default routes, or are counted as unrouted. When every
//! point of a batch goes to the same upstreams (the common case) the batch
//! is shared between their queues without a copy; otherwise each upstream
//! gets its own sub-batch.

use std::sync::Arc;

use crate::config::{Matcher, RouteConfig};
use crate::model::Batch;
use crate::queue::{Enqueued, QueueSender};
use crate::telemetry::{RouterMetrics, UpstreamMetrics};

/// Most upstreams one relay can route to.
pub const MAX_UPSTREAMS: usize = 256;

/// A set of upstream indices.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DestSet([u64; MAX_UPSTREAMS / 64]);

impl DestSet {
    fn insert(&mut self, index: usize) {
        self.0[index / 64] |= 1 << (index % 64);
    }

    fn union(&mut self, other: &DestSet) {
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

/// Compiled routing rules, without any queue: what `route` decides.
#[derive(Debug, Clone)]
pub struct Rules {
    routes: Vec<CompiledRoute>,
    default: DestSet,
}

#[derive(Debug, Clone)]
struct CompiledRoute {
    matchers: Vec<Matcher>,
    to: DestSet,
    stop: bool,
}

impl Rules {
    /// Compiles the configured routes.
    pub fn new(routes: &[RouteConfig]) -> Self {
        let mut default = DestSet::default();
        let mut compiled = Vec::new();
        for route in routes {
            let mut to = DestSet::default();
            for &index in &route.to {
                to.insert(index);
            }
            if route.default {
                default.union(&to);
            } else {
                compiled.push(CompiledRoute {
                    matchers: route.matchers.clone(),
                    to,
                    stop: route.stop,
                });
            }
        }
        Self {
            routes: compiled,
            default,
        }
    }

    /// The upstreams a point with this path goes to.
    pub fn destinations(&self, path: &str) -> DestSet {
        let mut set = DestSet::default();
        let mut matched = false;
        for route in &self.routes {
            if route.matchers.iter().all(|m| m.matches(path)) {
                matched = true;
                set.union(&route.to);
                if route.stop {
                    break;
                }
            }
        }
        if matched {
            set
        } else {
            self.default
        }
    }
}

/// One upstream as the router sees it: its queue and its counters.
#[derive(Debug, Clone)]
pub struct RouteTarget {
    /// The upstream's queue.
    pub queue: QueueSender,
    /// The upstream's counters.
    pub metrics: UpstreamMetrics,
}

/// Rules plus the queues they feed.
#[derive(Debug)]
pub struct Router {
    rules: Rules,
    targets: Vec<RouteTarget>,
    metrics: RouterMetrics,
}

impl Router {
    /// A router over `targets`, indexed as the routes' `to` lists.
    pub fn new(rules: Rules, targets: Vec<RouteTarget>, metrics: RouterMetrics) -> Self {
        Self {
            rules,
            targets,
            metrics,
        }
    }

    /// Routes a batch and queues it; returns once every queue accepted or
    /// dropped its share (under `block` this is where inputs wait).
    pub async fn dispatch(&self, batch: Batch) {
        if batch.is_empty() {
            return;
        }
        let mut sets = Vec::with_capacity(batch.len());
        let mut uniform = true;
        for point in batch.iter() {
            let set = self.rules.destinations(point.name());
            uniform &= sets.first().is_none_or(|first| *first == set);
            sets.push(set);
        }
        let unrouted = sets.iter().filter(|set| set.is_empty()).count();
        if unrouted > 0 {
            self.metrics.points_unrouted.inc_by(unrouted as u64);
        }
        if uniform {
            let batch = Arc::new(batch);
            for index in sets[0].iter() {
                self.enqueue(index, Arc::clone(&batch)).await;
            }
            return;
        }
        let mut any = DestSet::default();
        for set in &sets {
            any.union(set);
        }
        for index in any.iter() {
            let mut share = Batch::with_capacity(batch.len(), 0);
            for (point, set) in batch.iter().zip(&sets) {
                if set.contains(index) {
                    share.push_ref(point);
                }
            }
            self.enqueue(index, Arc::new(share)).await;
        }
    }

    async fn enqueue(&self, index: usize, batch: Arc<Batch>) {
        let target = &self.targets[index];
        let n_points = batch.len() as u64;
        target.metrics.points_routed.inc_by(n_points);
        match target.queue.send(batch).await {
            Enqueued::Accepted => {}
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    fn rules(yaml_routes: &str) -> Rules {
        let yaml = format!(
            "upstreams:\n  - {{name: a, protocol: file}}\n  - {{name: b, protocol: file}}\n  - {{name: c, protocol: file}}\nroutes:\n{yaml_routes}"
        );
        Rules::new(&parse(&yaml).expect("valid").routes)
    }

    fn dests(rules: &Rules, path: &str) -> Vec<usize> {
        rules.destinations(path).iter().collect()
    }

    #[test]
    fn rules_fan_out_until_stop() {
        let rules = rules(
            "  - {match: {prefix: \"servers.\"}, to: [a], stop: true}\n\
             \x20 - {match: {glob: \"app.*.cpu\"}, to: [b]}\n\
             \x20 - {match: {regex: \"cpu\"}, to: [c]}\n\
             \x20 - {match: {prefix: \"app.\", regex: \"mem$\"}, to: [a]}\n",
        );
        assert_eq!(dests(&rules, "servers.cpu"), vec![0]);
        assert_eq!(dests(&rules, "app.web.cpu"), vec![1, 2]);
        assert_eq!(dests(&rules, "app.web.cpu.user"), vec![2]);
        assert_eq!(dests(&rules, "app.web.mem"), vec![0]);
        assert_eq!(dests(&rules, "other.mem"), Vec::<usize>::new());
    }

    #[test]
    fn default_route_takes_only_unmatched_points() {
        let rules = rules(
            "  - {default: true, to: [c]}\n\
             \x20 - {match: {prefix: \"a.\"}, to: [a]}\n",
        );
        assert_eq!(dests(&rules, "a.x"), vec![0]);
        assert_eq!(dests(&rules, "b.x"), vec![2]);
    }
}
