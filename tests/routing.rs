//! Placement compatibility: `tsrelay route` must put every name exactly
//! where Debian's graphite-carbon (carbon.routers.ConsistentHashingRouter)
//! and carbon-c-relay put it.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::util::{python_with_input, require_peer};

const N_NAMES: usize = 100_000;

/// Prints `name<TAB>n3 n7` per generated name, as carbon's relay routes it.
const CARBON_ROUTER: &str = r#"
import sys
from carbon.routers import ConsistentHashingRouter

class Settings(dict):
    __getattr__ = dict.__getitem__

n_nodes, instances, hash_type, replication, diverse, shared_hosts, n_names = sys.argv[1:]
n_nodes, replication, n_names = int(n_nodes), int(replication), int(n_names)
router = ConsistentHashingRouter(Settings(
    REPLICATION_FACTOR=replication, DIVERSE_REPLICAS=diverse == 'true', ROUTER_HASH_TYPE=hash_type))
label = {}
for i in range(n_nodes):
    host = '10.0.0.%d' % (i % 2 if shared_hosts == 'true' else i)
    instance = 'i%d' % i if instances == 'true' else None
    router.addDestination((host, 2004 + i, instance))
    label[(host, 2004 + i, instance)] = 'n%d' % i
out = sys.stdout
for name in sys.stdin.read().split('\n'):
    if name:
        dests = sorted(label[d] for d in router.getDestinations(name))
        out.write('%s\t%s\n' % (name, ' '.join(dests)))
"#;

/// Generated names: plain paths of varied shapes and tagged names in
/// carbon's normalised form (what a relay with TAG_RELAY_NORMALIZED hashes).
fn names() -> String {
    let mut out = String::with_capacity(N_NAMES * 40);
    for i in 0..N_NAMES {
        match i % 4 {
            0 => out.push_str(&format!("servers.host{:04}.cpu.core{}.user\n", i % 997, i % 16)),
            1 => out.push_str(&format!("apps.svc{}.requests.{}.p99\n", i % 31, i)),
            2 => out.push_str(&format!("m{i}\n")),
            _ => out.push_str(&format!("disk.used;dc=dc{};host=h{};rack=r{}\n", i % 3, i % 50, i)),
        }
    }
    out
}

fn tsrelay_route(config: &str, input: &str) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("relay.yaml");
    std::fs::write(&path, config).expect("write config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tsrelay"))
        .args(["route", "-c", path.to_str().expect("utf-8 path")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tsrelay route");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_owned();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let output = child.wait_with_output().expect("route output");
    writer.join().expect("writer").expect("write names");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("utf-8")
}

struct Ring {
    nodes: usize,
    instances: bool,
    kind: &'static str,
    replication: usize,
    diverse: bool,
    shared_hosts: bool,
}

impl Ring {
    fn tsrelay_config(&self) -> String {
        let mut yaml = String::from("upstreams:\n");
        let mut members = Vec::new();
        for i in 0..self.nodes {
            let host = if self.shared_hosts { i % 2 } else { i };
            yaml.push_str(&format!(
                "  - {{name: n{i}, protocol: graphite_pickle, address: 10.0.0.{host}:{}}}\n",
                2004 + i
            ));
            members.push(if self.instances {
                format!("{{upstream: n{i}, instance: i{i}}}")
            } else {
                format!("{{upstream: n{i}}}")
            });
        }
        yaml.push_str(&format!(
            "clusters:\n  - {{name: ring, type: {}, replication: {}, diverse_replicas: {}, members: [{}]}}\n\
             routes:\n  - {{match: {{prefix: \"\"}}, to: [ring]}}\n",
            self.kind,
            self.replication,
            self.diverse,
            members.join(", ")
        ));
        yaml
    }

    fn carbon_placement(&self, names: &str) -> String {
        let args = [
            self.nodes.to_string(),
            self.instances.to_string(),
            self.kind.to_owned(),
            self.replication.to_string(),
            self.diverse.to_string(),
            self.shared_hosts.to_string(),
            N_NAMES.to_string(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        python_with_input(CARBON_ROUTER, &args, names)
    }
}

fn assert_same_placement(ring: Ring, names: &str) {
    let expected = ring.carbon_placement(names);
    let actual = tsrelay_route(&ring.tsrelay_config(), names);
    let mismatches: Vec<_> = expected
        .lines()
        .zip(actual.lines())
        .filter(|(e, a)| e != a)
        .take(5)
        .collect();
    assert!(
        mismatches.is_empty(),
        "{} nodes, instances {}, {}: first mismatches (carbon, tsrelay): {mismatches:?}",
        ring.nodes,
        ring.instances,
        ring.kind
    );
    assert_eq!(expected.lines().count(), N_NAMES);
    assert_eq!(actual.lines().count(), N_NAMES);
}

#[test]
fn carbon_ch_places_every_name_like_carbon() {
    if !require_peer("carbon-relay") {
        return;
    }
    let names = names();
    for nodes in [3, 5, 12] {
        for instances in [false, true] {
            let ring = Ring { nodes, instances, kind: "carbon_ch", replication: 1, diverse: true, shared_hosts: false };
            assert_same_placement(ring, &names);
        }
    }
}

#[test]
fn fnv1a_ch_places_every_name_like_carbon() {
    if !require_peer("carbon-relay") {
        return;
    }
    let names = names();
    for nodes in [3, 5, 12] {
        let ring = Ring { nodes, instances: true, kind: "fnv1a_ch", replication: 1, diverse: true, shared_hosts: false };
        assert_same_placement(ring, &names);
    }
}

#[test]
fn replication_with_and_without_diverse_replicas_matches_carbon() {
    if !require_peer("carbon-relay") {
        return;
    }
    let names = names();
    for diverse in [true, false] {
        for kind in ["carbon_ch", "fnv1a_ch"] {
            let ring = Ring { nodes: 6, instances: true, kind, replication: 2, diverse, shared_hosts: true };
            assert_same_placement(ring, &names);
        }
    }
}
