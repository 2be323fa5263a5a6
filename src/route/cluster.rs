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

use super::hash::{
    fnv1a_64, fnv1a_64_signed, fnv1a_position, fnv1a_position_signed, jump_bucket, jump_remix,
    md5_position, Ring, REPLICAS,
};
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
    jump_order: Vec<usize>,
}

impl Cluster {
    /// Builds the cluster (and its ring) from configuration.
    pub(super) fn new(config: &ClusterConfig) -> Self {
        let members = config.members.clone();
        let ring = match config.kind {
            ClusterKind::CarbonCh => {
                Some(Ring::python(members.iter().map(|m| {
                    replica_positions(m, carbon_replica_key, md5_position)
                })))
            }
            ClusterKind::Fnv1aCh(Fnv1aKeys::Carbon) => {
                Some(Ring::python(members.iter().map(|m| {
                    replica_positions(
                        m,
                        |m, i| format!("{i}-{}", m.instance.as_deref().unwrap_or("None")),
                        fnv1a_position,
                    )
                })))
            }
            ClusterKind::CarbonChCcr => Some(Ring::ccr(
                members
                    .iter()
                    .map(|m| replica_positions(m, ccr_carbon_replica_key, md5_position)),
                |a, b| ccr_carbon_order(&members[a], &members[b]),
            )),
            ClusterKind::Fnv1aCh(Fnv1aKeys::CarbonCRelay) => Some(Ring::ccr(
                members
                    .iter()
                    .map(|m| replica_positions(m, ccr_fnv1a_replica_key, fnv1a_position_signed)),
                |a, b| ccr_fnv1a_order(&members[a], &members[b]),
            )),
            ClusterKind::Fanout
            | ClusterKind::Failover
            | ClusterKind::AnyOf
            | ClusterKind::Jump => None,
        };
        // jump_fnv1a_ch buckets are the members in carbon-c-relay's order.
        let mut jump_order: Vec<usize> = (0..members.len()).collect();
        jump_order.sort_by(|&a, &b| ccr_jump_order(&members[a], &members[b]));
        Self {
            kind: config.kind,
            members,
            ring,
            replication: config.replication,
            diverse_replicas: config.diverse_replicas,
            hash_key: config.hash_key,
            jump_order,
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
        let mut used_hosts: smallvec::SmallVec<[&str; 4]> = smallvec::SmallVec::new();
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

    /// carbon-c-relay's `ch_get_nodes`: distinct servers walking the ring
    /// (at most one turn: carbon-c-relay itself would spin forever when the
    /// ring has fewer owners than replicas).
    fn ccr_nodes<'a>(&'a self, key: &[u8]) -> impl Iterator<Item = usize> + 'a {
        let ring = self.ring.as_ref().expect("hash clusters have a ring");
        let position = match self.kind {
            ClusterKind::CarbonChCcr => md5_position(key),
            _ => fnv1a_position_signed(key),
        };
        ring.walk(position).take(self.replication)
    }

    /// carbon-c-relay's jump_fnv1a_ch: a bucket among the ordered members;
    /// each further replica re-mixes the hash and draws among the members
    /// left after swap-removing the chosen one.
    fn jump_nodes(&self, key: &[u8]) -> Vec<usize> {
        let mut hash = fnv1a_64_signed(key);
        let mut buckets = self.jump_order.clone();
        let mut remaining = buckets.len();
        let mut chosen = Vec::with_capacity(self.replication);
        loop {
            let bucket = jump_bucket(hash, remaining);
            chosen.push(buckets[bucket]);
            if chosen.len() >= self.replication || remaining <= 1 {
                return chosen;
            }
            hash = jump_remix(hash);
            remaining -= 1;
            buckets[bucket] = buckets[remaining];
        }
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

/// carbon-c-relay's carbon_ch replica key (its imitation of Python's tuple).
fn ccr_carbon_replica_key(member: &Member, replica: usize) -> String {
    match &member.instance {
        Some(instance) => format!("('{}', '{instance}'):{replica}", member.host),
        None => format!("('{}', None):{replica}", member.host),
    }
}

/// carbon-c-relay's fnv1a_ch replica key: the instance when given, else host:port.
fn ccr_fnv1a_replica_key(member: &Member, replica: usize) -> String {
    match &member.instance {
        Some(instance) => format!("{replica}-{instance}"),
        None => format!("{replica}-{}:{}", member.host, member.port),
    }
}

/// carbon-c-relay's carbon_ch tie order: address, then instance (none last).
fn ccr_carbon_order(a: &Member, b: &Member) -> Ordering {
    a.host
        .cmp(&b.host)
        .then_with(|| match (&a.instance, &b.instance) {
            (Some(x), Some(y)) => x.cmp(y),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        })
}

/// carbon-c-relay's fnv1a_ch tie order: address, then port.
fn ccr_fnv1a_order(a: &Member, b: &Member) -> Ordering {
    a.host.cmp(&b.host).then(a.port.cmp(&b.port))
}

/// carbon-c-relay's jump_fnv1a_ch member order: members with an instance
/// first (numerically when both are integers, else as strings), the rest
/// in configuration order.
fn ccr_jump_order(a: &Member, b: &Member) -> Ordering {
    match (&a.instance, &b.instance) {
        (Some(x), Some(y)) => match (c_strtol(x), c_strtol(y)) {
            (Some(x), Some(y)) => (x.wrapping_sub(y) as i32).cmp(&0),
            _ => x.cmp(y),
        },
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

/// C's `strtol(text, &end, 10)` when it consumes the whole string.
fn c_strtol(text: &str) -> Option<i64> {
    let trimmed = text.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let digits = trimmed.strip_prefix(['+', '-']).unwrap_or(trimmed);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(
        trimmed
            .parse::<i64>()
            .unwrap_or(if trimmed.starts_with('-') {
                i64::MIN
            } else {
                i64::MAX
            }),
    )
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
    fn jump_members_order_like_carbon_c_relay() {
        let member = |instance: Option<&str>, port: u16| Member {
            upstream: usize::from(port),
            host: "h".into(),
            port,
            instance: instance.map(str::to_owned),
        };
        let order = |mut members: Vec<Member>| {
            members.sort_by(ccr_jump_order);
            members.iter().map(|m| m.port).collect::<Vec<u16>>()
        };
        // Verified against carbon-c-relay 3.7.3: integers sort numerically,
        // other instances as strings, members without one last in config order.
        let numeric = ["10", "9", "1", "100", "2"];
        let members = numeric
            .iter()
            .enumerate()
            .map(|(i, n)| member(Some(n), i as u16))
            .collect();
        assert_eq!(order(members), vec![2, 4, 1, 0, 3]);
        let mixed = vec![
            member(Some("b"), 0),
            member(Some("a"), 1),
            member(None, 2),
            member(Some("d"), 3),
            member(None, 4),
            member(Some("c"), 5),
        ];
        assert_eq!(order(mixed), vec![1, 0, 5, 3, 2, 4]);
    }

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
