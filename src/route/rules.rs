//! Rule evaluation: which upstreams a point goes to, under which name.
//!
//! Rules run in order. A rule whose matchers all hold applies its rewrite
//! (later rules then see the rewritten point), resolves its targets
//! (clusters hash the point's current name) and, with `stop`, ends the
//! evaluation. Default rules run only when no other rule matched.

use super::cluster::Cluster;
use super::DestSet;
use crate::config::{Destination, HashKey, Matcher, Rewrite, RouteConfig};
use crate::health::Health;
use crate::model::{write_carbon_name, PointRef};

/// A point's name and tags after a rewrite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Renamed {
    /// The new path.
    pub name: String,
    /// The new tags, sorted by key.
    pub tags: Vec<(String, String)>,
}

/// Where one point goes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Upstreams that get the point as it came in.
    pub original: DestSet,
    /// Upstreams that get a rewritten form, per form.
    pub renamed: Vec<(Renamed, DestSet)>,
}

impl Placement {
    /// True when the point goes nowhere.
    pub fn is_empty(&self) -> bool {
        self.original.is_empty() && self.renamed.iter().all(|(_, set)| set.is_empty())
    }
}

/// Compiled routing rules and clusters.
#[derive(Debug, Clone)]
pub struct Rules {
    routes: Vec<Rule>,
    defaults: Vec<Rule>,
    clusters: Vec<Cluster>,
}

#[derive(Debug, Clone)]
struct Rule {
    matchers: Vec<Matcher>,
    rewrite: Option<Rewrite>,
    to: Vec<Destination>,
    stop: bool,
}

/// The point as the rules currently see it.
enum Subject<'p> {
    Original(&'p PointRef<'p>),
    Renamed(Renamed),
}

impl Rules {
    /// Compiles routes and clusters.
    pub fn new(routes: &[RouteConfig], clusters: &[crate::config::ClusterConfig]) -> Self {
        let compile = |route: &RouteConfig| Rule {
            matchers: route.matchers.clone(),
            rewrite: route.rewrite.clone(),
            to: route.to.clone(),
            stop: route.stop,
        };
        Self {
            routes: routes.iter().filter(|r| !r.default).map(compile).collect(),
            defaults: routes.iter().filter(|r| r.default).map(compile).collect(),
            clusters: clusters.iter().map(Cluster::new).collect(),
        }
    }

    /// Where `point` goes, given the upstreams' health.
    pub fn place(&self, point: &PointRef<'_>, health: &Health) -> Placement {
        let mut placement = Placement::default();
        let mut subject = Subject::Original(point);
        let mut matched = false;
        for rule in &self.routes {
            if self.apply(rule, &mut subject, &mut placement, health, false) {
                matched = true;
                if rule.stop {
                    break;
                }
            }
        }
        if !matched {
            for rule in &self.defaults {
                if self.apply(rule, &mut subject, &mut placement, health, true) && rule.stop {
                    break;
                }
            }
        }
        placement
    }

    /// Applies one rule if it matches; returns whether it did.
    fn apply<'p>(
        &self,
        rule: &Rule,
        subject: &mut Subject<'p>,
        placement: &mut Placement,
        health: &Health,
        unconditional: bool,
    ) -> bool {
        if !unconditional && !rule.matchers.iter().all(|m| subject.matches(m)) {
            return false;
        }
        if let Some(rewrite) = &rule.rewrite {
            *subject = Subject::Renamed(subject.rewritten(rewrite));
        }
        let mut set = DestSet::default();
        let mut keys = KeyCache::default();
        for destination in &rule.to {
            match *destination {
                Destination::Upstream(index) => set.insert(index),
                Destination::Cluster(index) => {
                    let cluster = &self.clusters[index];
                    let key = cluster
                        .hash_key()
                        .map_or(&[][..], |kind| keys.get(subject, kind));
                    cluster.select(key, health, |upstream| set.insert(upstream));
                }
            }
        }
        match subject {
            Subject::Original(_) => placement.original.union(&set),
            Subject::Renamed(renamed) => match placement.renamed.last_mut() {
                Some((last, last_set)) if last == renamed => last_set.union(&set),
                _ => placement.renamed.push((renamed.clone(), set)),
            },
        }
        true
    }
}

impl Subject<'_> {
    fn path(&self) -> &str {
        match self {
            Subject::Original(point) => point.name(),
            Subject::Renamed(renamed) => &renamed.name,
        }
    }

    fn tags(&self) -> Box<dyn Iterator<Item = (&str, &str)> + '_> {
        match self {
            Subject::Original(point) => Box::new(point.tags()),
            Subject::Renamed(renamed) => {
                Box::new(renamed.tags.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            }
        }
    }

    fn has_tags(&self) -> bool {
        match self {
            Subject::Original(point) => point.has_tags(),
            Subject::Renamed(renamed) => !renamed.tags.is_empty(),
        }
    }

    fn matches(&self, matcher: &Matcher) -> bool {
        match matcher {
            Matcher::Tag(_) => matcher.matches(self.path(), self.tags()),
            _ => matcher.matches(self.path(), std::iter::empty()),
        }
    }

    /// Applies a rewrite: the path regex (first match), then tag removal,
    /// renaming and additions. A rewrite that would empty the path keeps it.
    fn rewritten(&self, rewrite: &Rewrite) -> Renamed {
        let path = self.path();
        let name = match &rewrite.path {
            Some((regex, replacement)) => regex.replace(path, replacement.as_str()).into_owned(),
            None => path.to_owned(),
        };
        let name = if name.is_empty() {
            path.to_owned()
        } else {
            name
        };
        let mut tags: Vec<(String, String)> = Vec::new();
        for (key, value) in self.tags() {
            if rewrite.remove_tags.iter().any(|k| k == key) {
                continue;
            }
            let key = rewrite
                .rename_tags
                .iter()
                .find(|(old, _)| old == key)
                .map_or(key, |(_, new)| new.as_str());
            tags.retain(|(k, _)| k != key);
            tags.push((key.to_owned(), value.to_owned()));
        }
        for (key, value) in &rewrite.add_tags {
            tags.retain(|(k, _)| k != key);
            tags.push((key.clone(), value.clone()));
        }
        tags.sort();
        Renamed { name, tags }
    }
}

/// The name-form hash key of the current subject, built at most once per rule.
#[derive(Default)]
struct KeyCache {
    name: Option<Vec<u8>>,
}

impl KeyCache {
    fn get<'a>(&'a mut self, subject: &'a Subject<'_>, kind: HashKey) -> &'a [u8] {
        if kind == HashKey::Path || !subject.has_tags() {
            return subject.path().as_bytes();
        }
        self.name.get_or_insert_with(|| {
            let mut key = Vec::with_capacity(subject.path().len() + 32);
            write_carbon_name(subject.path(), subject.tags(), &mut key);
            key
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use crate::model::{Batch, Timestamp, Value};

    const UPSTREAMS: &str = "upstreams:\n  - {name: a, protocol: graphite_plaintext, address: 10.0.0.1:2004}\n  - {name: b, protocol: graphite_plaintext, address: 10.0.0.2:2004}\n  - {name: c, protocol: graphite_plaintext, address: 10.0.0.3:2004}\n";

    fn rules(rest: &str) -> Rules {
        let config = parse(&format!("{UPSTREAMS}{rest}")).expect("valid config");
        Rules::new(&config.routes, &config.clusters)
    }

    fn place(rules: &Rules, name: &str, tags: &[(&str, &str)]) -> Placement {
        let mut batch = Batch::new();
        batch.push(
            name,
            tags.iter().copied(),
            Timestamp::from_millis(0),
            Value::F64(1.0),
            None,
        );
        rules.place(&batch.get(0).expect("point"), &Health::new(3))
    }

    fn original(rules: &Rules, name: &str) -> Vec<usize> {
        place(rules, name, &[]).original.iter().collect()
    }

    #[test]
    fn rules_fan_out_until_stop() {
        let rules = rules(
            "routes:\n  - {match: {prefix: \"servers.\"}, to: [a], stop: true}\n\
             \x20 - {match: {glob: \"app.*.cpu\"}, to: [b]}\n\
             \x20 - {match: {regex: \"cpu\"}, to: [c]}\n\
             \x20 - {match: {prefix: \"app.\", regex: \"mem$\"}, to: [a]}\n",
        );
        assert_eq!(original(&rules, "servers.cpu"), vec![0]);
        assert_eq!(original(&rules, "app.web.cpu"), vec![1, 2]);
        assert_eq!(original(&rules, "app.web.cpu.user"), vec![2]);
        assert_eq!(original(&rules, "app.web.mem"), vec![0]);
        assert!(place(&rules, "other.mem", &[]).is_empty());
    }

    #[test]
    fn default_route_takes_only_unmatched_points() {
        let rules = rules(
            "routes:\n  - {default: true, to: [c]}\n  - {match: {prefix: \"a.\"}, to: [a]}\n",
        );
        assert_eq!(original(&rules, "a.x"), vec![0]);
        assert_eq!(original(&rules, "b.x"), vec![2]);
    }

    #[test]
    fn tag_matchers_see_tags_and_path_matchers_do_not() {
        let rules = rules(
            "routes:\n  - {match: {tag: \"dc=eu\"}, to: [a], stop: true}\n\
             \x20 - {match: {tag: [\"host\", \"rack=~^r[0-9]+$\"]}, to: [b], stop: true}\n\
             \x20 - {match: {regex: \"dc=eu\"}, to: [c]}\n",
        );
        assert_eq!(
            place(&rules, "m", &[("dc", "eu")])
                .original
                .iter()
                .collect::<Vec<_>>(),
            vec![0]
        );
        assert_eq!(
            place(&rules, "m", &[("host", "x"), ("rack", "r12")])
                .original
                .iter()
                .collect::<Vec<_>>(),
            vec![1]
        );
        assert!(place(&rules, "m", &[("host", "x"), ("rack", "rx")]).is_empty());
        assert!(place(&rules, "m", &[("dc", "us")]).is_empty());
    }

    #[test]
    fn rewrites_carry_on_to_later_rules() {
        let rules = rules(
            "routes:\n  - {match: {prefix: \"servers.\"}, to: [a]}\n\
             \x20 - {match: {glob: \"servers.*.cpu\"}, rewrite: {regex: \"^servers\\\\.([^.]+)\\\\.\", replace: \"hosts.\\\\1.\", add_tags: {src: relay}, remove_tags: [tmp], rename_tags: {dc: region}}, to: [b]}\n\
             \x20 - {match: {prefix: \"hosts.\"}, to: [c], stop: true}\n",
        );
        let placement = place(&rules, "servers.web1.cpu", &[("dc", "eu"), ("tmp", "1")]);
        assert_eq!(placement.original.iter().collect::<Vec<_>>(), vec![0]);
        assert_eq!(placement.renamed.len(), 1);
        let (renamed, set) = &placement.renamed[0];
        assert_eq!(renamed.name, "hosts.web1.cpu");
        assert_eq!(
            renamed.tags,
            vec![
                ("region".to_owned(), "eu".to_owned()),
                ("src".to_owned(), "relay".to_owned())
            ]
        );
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![1, 2]);
    }

    #[test]
    fn failover_follows_health() {
        let rules = rules(
            "clusters:\n  - {name: f, type: failover, members: [{upstream: a}, {upstream: b}, {upstream: c}]}\n\
             routes:\n  - {match: {prefix: \"\"}, to: [f]}\n",
        );
        let mut batch = Batch::new();
        batch.push("m", [], Timestamp::from_millis(0), Value::F64(1.0), None);
        let point = batch.get(0).expect("point");
        let health = Health::new(3);
        assert_eq!(
            rules
                .place(&point, &health)
                .original
                .iter()
                .collect::<Vec<_>>(),
            vec![0]
        );
        health.upstream(0).set(false);
        assert_eq!(
            rules
                .place(&point, &health)
                .original
                .iter()
                .collect::<Vec<_>>(),
            vec![1]
        );
        health.upstream(1).set(false);
        assert_eq!(
            rules
                .place(&point, &health)
                .original
                .iter()
                .collect::<Vec<_>>(),
            vec![2]
        );
        health.upstream(0).set(true);
        assert_eq!(
            rules
                .place(&point, &health)
                .original
                .iter()
                .collect::<Vec<_>>(),
            vec![0]
        );
    }

    #[test]
    fn any_of_moves_only_the_failed_members_share() {
        let rules = rules(
            "clusters:\n  - {name: y, type: any_of, members: [{upstream: a}, {upstream: b}, {upstream: c}]}\n\
             routes:\n  - {match: {prefix: \"\"}, to: [y]}\n",
        );
        let mut batch = Batch::new();
        for i in 0..3000 {
            batch.push(
                &format!("metric.{i}"),
                [],
                Timestamp::from_millis(0),
                Value::F64(1.0),
                None,
            );
        }
        let health = Health::new(3);
        let before: Vec<usize> = batch
            .iter()
            .map(|p| {
                rules
                    .place(&p, &health)
                    .original
                    .iter()
                    .next()
                    .expect("one")
            })
            .collect();
        assert!((0..3).all(|u| before.iter().filter(|&&b| b == u).count() > 800));
        health.upstream(1).set(false);
        let after: Vec<usize> = batch
            .iter()
            .map(|p| {
                rules
                    .place(&p, &health)
                    .original
                    .iter()
                    .next()
                    .expect("one")
            })
            .collect();
        for (b, a) in before.iter().zip(&after) {
            if *b == 1 {
                assert_ne!(*a, 1);
            } else {
                assert_eq!(a, b, "a healthy member's share must not move");
            }
        }
    }
}
