//! Rule evaluation: which upstreams a point goes to, under which name.
//!
//! Rules run in order. A rule whose matchers all hold applies its rewrite
//! (later rules then see the rewritten point), resolves its targets
//! (clusters hash the point's current name) and, with `stop`, ends the
//! evaluation. Default rules run only when no other rule matched.

use super::cluster::Cluster;
use super::DestSet;
use regex::RegexSet;
use smallvec::SmallVec;

use crate::config::{Destination, HashKey, Matcher, Rewrite, RouteConfig, TagMatcher};
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
    /// Every path condition of every rule, run in one pass per path.
    path_patterns: RegexSet,
    /// For each pattern, the rule it is the first path condition of.
    anchor_rule: Vec<Option<usize>>,
    /// Rules with no path condition (tag conditions only).
    unanchored: Vec<usize>,
}

#[derive(Debug, Clone)]
struct Rule {
    matchers: Vec<Condition>,
    rewrite: Option<Rewrite>,
    to: Vec<Destination>,
    stop: bool,
}

/// A compiled matcher: path regexes and globs point into the shared set.
#[derive(Debug, Clone)]
enum Condition {
    Pattern(usize),
    Tag(TagMatcher),
}

/// Which shared patterns match the current path, computed on first use.
struct PatternMatches {
    computed: bool,
    matched: SmallVec<[bool; 128]>,
}

/// The point as the rules currently see it.
enum Subject<'p> {
    Original(&'p PointRef<'p>),
    Renamed(Renamed),
}

impl Rules {
    /// Compiles routes and clusters.
    pub fn new(routes: &[RouteConfig], clusters: &[crate::config::ClusterConfig]) -> Self {
        let mut patterns: Vec<String> = Vec::new();
        let mut compile = |route: &RouteConfig| Rule {
            matchers: route
                .matchers
                .iter()
                .map(|matcher| match matcher {
                    // A prefix joins the set too: one automaton pass then
                    // answers every path condition of every rule.
                    Matcher::Prefix(prefix) => {
                        patterns.push(format!("^{}", regex::escape(prefix)));
                        Condition::Pattern(patterns.len() - 1)
                    }
                    Matcher::Regex(regex) | Matcher::Glob { regex, .. } => {
                        patterns.push(regex.as_str().to_owned());
                        Condition::Pattern(patterns.len() - 1)
                    }
                    Matcher::Tag(tag) => Condition::Tag(tag.clone()),
                })
                .collect(),
            rewrite: route.rewrite.clone(),
            to: route.to.clone(),
            stop: route.stop,
        };
        let compiled: Vec<(bool, Rule)> = routes.iter().map(|r| (r.default, compile(r))).collect();
        // Every pattern already compiled alone during validation.
        let path_patterns = RegexSet::new(&patterns).unwrap_or_else(|_| RegexSet::empty());
        let (defaults, routes): (Vec<_>, Vec<_>) =
            compiled.into_iter().partition(|(default, _)| *default);
        let routes: Vec<Rule> = routes.into_iter().map(|(_, rule)| rule).collect();
        let mut anchor_rule = vec![None; patterns.len()];
        let mut unanchored = Vec::new();
        for (index, rule) in routes.iter().enumerate() {
            let first_pattern = rule.matchers.iter().find_map(|c| match c {
                Condition::Pattern(pattern) => Some(*pattern),
                Condition::Tag(_) => None,
            });
            match first_pattern {
                Some(pattern) => anchor_rule[pattern] = Some(index),
                None => unanchored.push(index),
            }
        }
        Self {
            routes,
            defaults: defaults.into_iter().map(|(_, rule)| rule).collect(),
            clusters: clusters.iter().map(Cluster::new).collect(),
            path_patterns,
            anchor_rule,
            unanchored,
        }
    }

    /// Where `point` goes, given the upstreams' health.
    pub fn place(&self, point: &PointRef<'_>, health: &Health) -> Placement {
        let mut placement = Placement::default();
        let mut subject = Subject::Original(point);
        let mut patterns = PatternMatches {
            computed: false,
            matched: SmallVec::from_elem(false, self.path_patterns.len()),
        };
        let mut matched = false;
        let mut next = 0;
        // Only rules whose first path condition matched (or that have none)
        // can match: one automaton pass picks them, so a hundred rules cost
        // little more than one. A rewrite changes the path, so the
        // candidates are picked again for the rules after it.
        'rules: while next < self.routes.len() {
            for index in self.candidates(&subject, &mut patterns, next) {
                let rule = &self.routes[index];
                if !rule
                    .matchers
                    .iter()
                    .all(|c| self.holds(c, &subject, &mut patterns))
                {
                    continue;
                }
                matched = true;
                self.apply(rule, &mut subject, &mut patterns, &mut placement, health);
                if rule.stop {
                    break 'rules;
                }
                if rule.rewrite.is_some() {
                    next = index + 1;
                    continue 'rules;
                }
            }
            break;
        }
        if !matched {
            for rule in &self.defaults {
                self.apply(rule, &mut subject, &mut patterns, &mut placement, health);
                if rule.stop {
                    break;
                }
            }
        }
        placement
    }

    /// Applies a matched rule: its rewrite, then its targets.
    #[inline(never)]
    fn apply<'p>(
        &self,
        rule: &Rule,
        subject: &mut Subject<'p>,
        patterns: &mut PatternMatches,
        placement: &mut Placement,
        health: &Health,
    ) {
        if let Some(rewrite) = &rule.rewrite {
            *subject = Subject::Renamed(subject.rewritten(rewrite));
            patterns.computed = false;
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
    }
}

impl Rules {
    /// Indices of the rules from `first` on that may match, in order.
    fn candidates(
        &self,
        subject: &Subject<'_>,
        patterns: &mut PatternMatches,
        first: usize,
    ) -> SmallVec<[usize; 16]> {
        self.compute_patterns(subject, patterns);
        let mut candidates: SmallVec<[usize; 16]> = patterns
            .matched
            .iter()
            .zip(&self.anchor_rule)
            .filter_map(|(matched, rule)| rule.filter(|&r| *matched && r >= first))
            .chain(self.unanchored.iter().copied().filter(|&r| r >= first))
            .collect();
        candidates.sort_unstable();
        candidates
    }

    fn compute_patterns(&self, subject: &Subject<'_>, patterns: &mut PatternMatches) {
        if !patterns.computed {
            patterns.matched.iter_mut().for_each(|m| *m = false);
            self.path_patterns
                .matches_read_at(&mut patterns.matched, subject.path(), 0);
            patterns.computed = true;
        }
    }

    fn holds(
        &self,
        condition: &Condition,
        subject: &Subject<'_>,
        patterns: &mut PatternMatches,
    ) -> bool {
        match condition {
            Condition::Pattern(index) => {
                self.compute_patterns(subject, patterns);
                patterns.matched[*index]
            }
            Condition::Tag(tag) => tag.matches(subject.tags()),
        }
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
        let chosen = |health: &Health| -> Vec<usize> {
            rules.place(&point, health).original.iter().collect()
        };
        assert_eq!(chosen(&health), vec![0]);
        health.upstream(0).set(false);
        assert_eq!(chosen(&health), vec![1]);
        health.upstream(1).set(false);
        assert_eq!(chosen(&health), vec![2]);
        health.upstream(0).set(true);
        assert_eq!(chosen(&health), vec![0]);
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
        let owners = |health: &Health| -> Vec<usize> {
            batch
                .iter()
                .map(|p| rules.place(&p, health).original.iter().next().expect("one"))
                .collect()
        };
        let before = owners(&health);
        assert!((0..3).all(|u| before.iter().filter(|&&b| b == u).count() > 800));
        health.upstream(1).set(false);
        let after = owners(&health);
        for (b, a) in before.iter().zip(&after) {
            if *b == 1 {
                assert_ne!(*a, 1);
            } else {
                assert_eq!(a, b, "a healthy member's share must not move");
            }
        }
    }
}
