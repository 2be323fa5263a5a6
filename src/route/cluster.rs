//! Clusters: how one route target becomes one or more upstreams.
//!
//! `fanout` takes every member; `failover` the first healthy one; `any_of`
//! one member by name hash, re-hashing an unhealthy member's share onto the
//! healthy ones; the hash rings place a name exactly where carbon-relay
//! (`carbon_ch`, `fnv1a_ch`) or carbon-c-relay (`carbon_ch_ccr`,
//! `fnv1a_ch` with its keys, `jump`) would, so a ring can be migrated
//! without moving a single series. Rings ignore health on purpose: a
//! member that is down keeps its share (queued, retried), as in carbon.

use std::cmp::Ordering;

use super::hash::{fnv1a_64, fnv1a_position, jump_bucket, md5_position, Ring, REPLICAS};
use crate::config::{ClusterConfig, ClusterKind, Fnv1aKeys, HashKey, Member};
use crate::health::Health;

/// A compiled cluster.
#[derive(Debug, Clone)]
pub(super) struct Cluster {
    kind: ClusterKind,
    members: Vec<Member>,
    ring: Option<Ring>,
    replication: usize,
    diverse_replicas: bool,
    hash_key: HashKey,
}

impl Cluster {
    /// Builds the cluster (and its ring) from configuration.
    pub(super) fn new(config: &ClusterConfig) -> Self {
        let members = config.members.clone();
        let ring = match config.kind {
            ClusterKind::CarbonCh => Some(Ring::new(
                members
                    .iter()
                    .map(|m| replica_positions(m, carbon_replica_key, md5_position)),
                true,
                |a, b| a.cmp(&b),
            )),
            ClusterKind::Fnv1aCh(Fnv1aKeys::Carbon) => Some(Ring::new(
                members.iter().map(|m| {
                    replica_positions(
                        m,
                        |m, i| format!("{i}-{}", m.instance.as_deref().unwrap_or("None")),
                        fnv1a_position,
                    )
                }),
                true,
                |a, b| a.cmp(&b),
            )),
            ClusterKind::CarbonChCcr => Some(Ring::new(
                members
                    .iter()
                    .map(|m| replica_positions(m, carbon_replica_key, md5_position)),
                false,
                |a, b| ccr_order(&members[a], &members[b]),
            )),
            ClusterKind::Fnv1aCh(Fnv1aKeys::CarbonCRelay) => Some(Ring::new(
                members
                    .iter()
                    .map(|m| replica_positions(m, ccr_fnv1a_replica_key, fnv1a_position)),
                false,
                |a, b| ccr_fnv1a_order(&members[a], &members[b]),
            )),
            ClusterKind::Fanout
            | ClusterKind::Failover
            | ClusterKind::AnyOf
            | ClusterKind::Jump => None,
        };
        Self {
            kind: config.kind,
            members,
            ring,
            replication: config.replication,
            diverse_replicas: config.diverse_replicas,
            hash_key: config.hash_key,
        }
    }

    /// What this cluster hashes, or `None` when it does not hash.
    pub(super) fn hash_key(&self) -> Option<HashKey> {
        match self.kind {
            ClusterKind::Fanout | ClusterKind::Failover => None,
            _ => Some(self.hash_key),
        }
    }

    /// Calls `choose` with each upstream index the key goes to.
    pub(super) fn select(&self, key: &[u8], health: &Health, mut choose: impl FnMut(usize)) {
        match self.kind {
            ClusterKind::Fanout => self.members.iter().for_each(|m| choose(m.upstream)),
            ClusterKind::Failover => {
                let member = self
                    .members
                    .iter()
                    .find(|m| health.is_healthy(m.upstream))
                    .unwrap_or(&self.members[0]);
                choose(member.upstream);
            }
            ClusterKind::AnyOf => choose(self.any_of(key, health)),
            ClusterKind::CarbonCh | ClusterKind::Fnv1aCh(Fnv1aKeys::Carbon) => {
                self.carbon_nodes(key)
                    .for_each(|m| choose(self.members[m].upstream));
            }
            ClusterKind::CarbonChCcr | ClusterKind::Fnv1aCh(Fnv1aKeys::CarbonCRelay) => {
                self.ccr_nodes(key)
                    .for_each(|m| choose(self.members[m].upstream));
            }
            ClusterKind::Jump => self
                .jump_nodes(key)
                .into_iter()
                .for_each(|m| choose(self.members[m].upstream)),
        }
    }

    /// Sticky by hash; when that member is down, the same hash picks among
    /// the healthy members, so only the failed member's share moves.
    fn any_of(&self, key: &[u8], health: &Health) -> usize {
        let hash = fnv1a_64(key);
        let first = &self.members[jump_bucket(hash, self.members.len())];
        if health.is_healthy(first.upstream) {
            return first.upstream;
        }
        let healthy: Vec<&Member> = self
            .members
            .iter()
            .filter(|m| health.is_healthy(m.upstream))
            .collect();
        if healthy.is_empty() {
            return first.upstream;
        }
        healthy[jump_bucket(hash.rotate_left(32), healthy.len())].upstream
    }

    /// Python carbon's `ConsistentHashingRouter.getDestinations`.
    fn carbon_nodes<'a>(&'a self, key: &[u8]) -> impl Iterator<Item = usize> + 'a {
        let ring = self.ring.as_ref().expect("hash clusters have a ring");
        let position = match self.kind {
            ClusterKind::CarbonCh => md5_position(key),
            _ => fnv1a_position(key),
        };
        let mut used_hosts: Vec<&str> = Vec::new();
        let diverse = self.diverse_replicas;
        ring.walk(position)
            .filter(move |&m| {
                if !diverse {
                    return true;
                }
                let host = self.members[m].host.as_str();
                if used_hosts.contains(&host) {
                    return false;
                }
                used_hosts.push(host);
                true
            })
            .take(self.replication)
    }

    /// carbon-c-relay's `ch_get_nodes`: distinct servers walking the ring.
    fn ccr_nodes<'a>(&'a self, key: &[u8]) -> impl Iterator<Item = usize> + 'a {
        let ring = self.ring.as_ref().expect("hash clusters have a ring");
        let position = match self.kind {
            ClusterKind::CarbonChCcr => md5_position(key),
            _ => fnv1a_position(key),
        };
        ring.walk(position).take(self.replication)
    }

    /// carbon-c-relay's jump_fnv1a_ch: a bucket among the members; each
    /// further replica is drawn among the members not chosen yet.
    fn jump_nodes(&self, key: &[u8]) -> Vec<usize> {
        let hash = fnv1a_64(key);
        let mut remaining: Vec<usize> = (0..self.members.len()).collect();
        let mut chosen = Vec::with_capacity(self.replication);
        while chosen.len() < self.replication && !remaining.is_empty() {
            let bucket = jump_bucket(hash, remaining.len());
            chosen.push(remaining.remove(bucket));
        }
        chosen
    }
}

fn replica_positions(
    member: &Member,
    replica_key: impl Fn(&Member, usize) -> String,
    position: fn(&[u8]) -> u32,
) -> Vec<u32> {
    (0..REPLICAS)
        .map(|i| position(replica_key(member, i).as_bytes()))
        .collect()
}

/// Python's `"%s:%d" % ((server, instance), i)`: the tuple's repr.
fn carbon_replica_key(member: &Member, replica: usize) -> String {
    let instance = member
        .instance
        .as_deref()
        .map_or_else(|| "None".to_owned(), python_repr);
    format!("({}, {instance}):{replica}", python_repr(&member.host))
}

/// carbon-c-relay's fnv1a_ch replica key: the instance when given, else host:port.
fn ccr_fnv1a_replica_key(member: &Member, replica: usize) -> String {
    match &member.instance {
        Some(instance) => format!("{replica}-{instance}"),
        None => format!("{replica}-{}:{}", member.host, member.port),
    }
}

/// carbon-c-relay orders equal ring positions by server address, then port.
fn ccr_order(a: &Member, b: &Member) -> Ordering {
    a.host.cmp(&b.host).then(a.port.cmp(&b.port))
}

/// carbon-c-relay's fnv1a_ch orders equal positions by instance, else address.
fn ccr_fnv1a_order(a: &Member, b: &Member) -> Ordering {
    match (&a.instance, &b.instance) {
        (Some(x), Some(y)) => x.cmp(y),
        _ => ccr_order(a, b),
    }
}

/// Python's `repr()` of a str, for the characters host names and
/// instances use (quotes switch like Python's, backslashes escaped).
fn python_repr(text: &str) -> String {
    let quote = if text.contains('\'') && !text.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(text.len() + 2);
    out.push(quote);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_keys_are_pythons_tuple_repr() {
        let member = Member {
            upstream: 0,
            host: "10.0.0.1".into(),
            port: 2004,
            instance: Some("a".into()),
        };
        assert_eq!(carbon_replica_key(&member, 7), "('10.0.0.1', 'a'):7");
        let member = Member {
            instance: None,
            ..member
        };
        assert_eq!(carbon_replica_key(&member, 0), "('10.0.0.1', None):0");
        assert_eq!(python_repr("it's"), "\"it's\"");
    }
}
