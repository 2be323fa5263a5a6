//! Placement compatibility: `tsrelay route` must put every name exactly
//! where Debian's graphite-carbon (carbon.routers.ConsistentHashingRouter)
//! and carbon-c-relay put it.

use std::io::Write;
use std::process::{Command, Stdio};

use std::time::Duration;

use crate::util::{free_port, python_with_input, require_peer, send_tcp, wait_until, Sink};

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
            0 => out.push_str(&format!(
                "servers.host{:04}.cpu.core{}.user\n",
                i % 997,
                i % 16
            )),
            1 => out.push_str(&format!("apps.svc{}.requests.{}.p99\n", i % 31, i)),
            2 => out.push_str(&format!("m{i}\n")),
            _ => out.push_str(&format!(
                "disk{}.used;dc=dc{};host=h{};rack=r{}\n",
                i % 101,
                i % 3,
                i % 50,
                i
            )),
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
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
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
            let ring = Ring {
                nodes,
                instances,
                kind: "carbon_ch",
                replication: 1,
                diverse: true,
                shared_hosts: false,
            };
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
        let ring = Ring {
            nodes,
            instances: true,
            kind: "fnv1a_ch",
            replication: 1,
            diverse: true,
            shared_hosts: false,
        };
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
            let ring = Ring {
                nodes: 6,
                instances: true,
                kind,
                replication: 2,
                diverse,
                shared_hosts: true,
            };
            assert_same_placement(ring, &names);
        }
    }
}

/// A carbon-c-relay cluster and the equivalent tsrelay cluster.
struct CcrRing {
    nodes: usize,
    instances: bool,
    ccr_type: &'static str,
    replication: usize,
}

impl CcrRing {
    fn server(&self, i: usize) -> String {
        format!("127.0.0.{}:{}", i + 1, 2101 + i)
    }

    fn ccr_config(&self, servers: &[String]) -> String {
        let members: Vec<String> = servers
            .iter()
            .enumerate()
            .map(|(i, server)| {
                if self.instances {
                    format!("{server}=i{i}")
                } else {
                    server.clone()
                }
            })
            .collect();
        format!(
            "cluster c {} replication {} {};\nmatch * send to c;\n",
            self.ccr_type,
            self.replication,
            members.join(" ")
        )
    }

    fn tsrelay_config(&self, servers: &[String]) -> String {
        let (kind, extra) = match self.ccr_type {
            "carbon_ch" => ("carbon_ch_ccr", ""),
            "fnv1a_ch" => ("fnv1a_ch", ", fnv1a_keys: carbon_c_relay"),
            _ => ("jump", ""),
        };
        let mut yaml = String::from("upstreams:\n");
        let mut members = Vec::new();
        for (i, server) in servers.iter().enumerate() {
            yaml.push_str(&format!(
                "  - {{name: n{i}, protocol: graphite_plaintext, address: {server}}}\n"
            ));
            members.push(if self.instances {
                format!("{{upstream: n{i}, instance: i{i}}}")
            } else {
                format!("{{upstream: n{i}}}")
            });
        }
        yaml.push_str(&format!(
            "clusters:\n  - {{name: c, type: {kind}, replication: {}{extra}, members: [{}]}}\n\
             routes:\n  - {{match: {{prefix: \"\"}}, to: [c]}}\n",
            self.replication,
            members.join(", ")
        ));
        yaml
    }
}

/// Runs `carbon-c-relay -t` and returns, per input name, its servers as
/// tsrelay upstream names, sorted, in `tsrelay route` format.
fn ccr_test_mode(config: &str, servers: &[String], names: &str) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("ccr.conf");
    std::fs::write(&path, config).expect("write config");
    let mut child = Command::new("carbon-c-relay")
        .args(["-t", "-f", path.to_str().expect("utf-8 path")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run carbon-c-relay -t");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = names.to_owned();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let output = child.wait_with_output().expect("carbon-c-relay output");
    writer.join().expect("writer").expect("write names");
    let text = String::from_utf8_lossy(&output.stdout);
    let mut out = String::new();
    let mut lines = text.lines().skip_while(|line| *line != "match").peekable();
    while let Some(line) = lines.next() {
        if line != "match" {
            continue;
        }
        let name = lines
            .next()
            .and_then(|l| l.trim().strip_prefix("* -> "))
            .expect("name line");
        lines.next();
        let mut destinations = Vec::new();
        while let Some(server) = lines.peek().and_then(|l| l.strip_prefix("        ")) {
            let index = servers
                .iter()
                .position(|s| s == server)
                .expect("a configured server");
            destinations.push(format!("n{index}"));
            lines.next();
        }
        destinations.sort();
        out.push_str(&format!("{name}\t{}\n", destinations.join(" ")));
    }
    out
}

fn assert_same_as_ccr(ring: &CcrRing, names: &str) {
    let servers: Vec<String> = (0..ring.nodes).map(|i| ring.server(i)).collect();
    let expected = ccr_test_mode(&ring.ccr_config(&servers), &servers, names);
    let actual = tsrelay_route(&ring.tsrelay_config(&servers), names);
    assert_eq!(
        expected.lines().count(),
        names.lines().count(),
        "carbon-c-relay answered every name"
    );
    let mismatches: Vec<_> = expected
        .lines()
        .zip(actual.lines())
        .filter(|(e, a)| e != a)
        .take(5)
        .collect();
    assert!(
        mismatches.is_empty(),
        "{} nodes, instances {}, {} replication {}: first mismatches (carbon-c-relay, tsrelay): {mismatches:?}",
        ring.nodes,
        ring.instances,
        ring.ccr_type,
        ring.replication
    );
}

#[test]
fn hash_clusters_place_untagged_names_like_carbon_c_relay() {
    if !require_peer("carbon-c-relay") {
        return;
    }
    let names: String = names()
        .lines()
        .filter(|n| !n.contains(';'))
        .step_by(3)
        .map(|n| format!("{n}\n"))
        .collect();
    for ccr_type in ["carbon_ch", "fnv1a_ch", "jump_fnv1a_ch"] {
        for nodes in [3, 5, 12] {
            for instances in [false, true] {
                for replication in [1, 2] {
                    let ring = CcrRing {
                        nodes,
                        instances,
                        ccr_type,
                        replication,
                    };
                    assert_same_as_ccr(&ring, &names);
                }
            }
        }
    }
}

/// The carbon-c-relay daemon hashes a tagged name's path (before `;`),
/// unlike its test mode: check tagged placement against the running daemon.
#[test]
fn hash_clusters_place_tagged_names_like_the_carbon_c_relay_daemon() {
    if !require_peer("carbon-c-relay") {
        return;
    }
    let tagged: Vec<String> = names()
        .lines()
        .filter(|n| n.contains(';'))
        .take(3000)
        .map(str::to_owned)
        .collect();
    for ccr_type in ["carbon_ch", "fnv1a_ch", "jump_fnv1a_ch"] {
        let sinks: Vec<Sink> = (0..5).map(|_| Sink::start()).collect();
        let servers: Vec<String> = sinks
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        let ring = CcrRing {
            nodes: 5,
            instances: true,
            ccr_type,
            replication: 1,
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let conf = dir.path().join("ccr.conf");
        std::fs::write(&conf, ring.ccr_config(&servers)).expect("write config");
        let port = free_port();
        let mut daemon = Command::new("carbon-c-relay")
            .args([
                "-f",
                conf.to_str().expect("utf-8 path"),
                "-p",
                &port.to_string(),
                "-s",
                "-w",
                "1",
                "-T",
                "10000",
            ])
            .stdout(std::fs::File::create(dir.path().join("ccr.log")).expect("log file"))
            .stderr(Stdio::null())
            .spawn()
            .expect("start carbon-c-relay");
        assert!(wait_until(Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        }));
        let lines: String = tagged
            .iter()
            .map(|name| format!("{name} 1 1700000000\n"))
            .collect();
        send_tcp(port, lines.as_bytes());
        let all_arrived = wait_until(Duration::from_secs(30), || {
            sinks.iter().map(Sink::line_count).sum::<usize>() >= tagged.len()
        });
        let _ = daemon.kill();
        let _ = daemon.wait();
        assert!(
            all_arrived,
            "carbon-c-relay forwarded {} of {} lines:\n{}",
            sinks.iter().map(Sink::line_count).sum::<usize>(),
            tagged.len(),
            std::fs::read_to_string(dir.path().join("ccr.log")).unwrap_or_default()
        );
        let mut placed = std::collections::HashMap::new();
        for (index, sink) in sinks.iter().enumerate() {
            for line in sink.lines() {
                let name = line.split(' ').next().expect("a name").to_owned();
                placed.insert(name, format!("n{index}"));
            }
        }
        let input: String = tagged.iter().map(|n| format!("{n}\n")).collect();
        let actual = tsrelay_route(&ring.tsrelay_config(&servers), &input);
        let mut mismatches = Vec::new();
        for line in actual.lines() {
            let (name, destination) = line.split_once('\t').expect("name and destination");
            if placed.get(name).map(String::as_str) != Some(destination) {
                mismatches.push(format!(
                    "{name}: daemon {:?}, tsrelay {destination}",
                    placed.get(name)
                ));
            }
        }
        assert!(
            mismatches.is_empty(),
            "{ccr_type}: {} mismatches, first {:?}",
            mismatches.len(),
            &mismatches[..mismatches.len().min(5)]
        );
    }
}
