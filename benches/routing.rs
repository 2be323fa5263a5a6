//! Routing micro benchmark: 100 rules ahead of a 12-node carbon_ch ring,
//! in points per second per core (`cargo bench --bench routing`).

use criterion::{criterion_main, Criterion, Throughput};
use tsrelay::config::parse;
use tsrelay::health::Health;
use tsrelay::model::{Batch, Timestamp, Value};
use tsrelay::route::Rules;

const N_POINTS: usize = 10_000;

fn config() -> String {
    let mut yaml = String::from("upstreams:\n");
    for i in 0..12 {
        yaml.push_str(&format!(
            "  - {{name: n{i}, protocol: graphite_pickle, address: 10.0.0.{i}:2004}}\n"
        ));
    }
    yaml.push_str("  - {name: other, protocol: graphite_pickle, address: 10.0.1.1:2004}\n");
    let members: Vec<String> = (0..12)
        .map(|i| format!("{{upstream: n{i}, instance: i{i}}}"))
        .collect();
    yaml.push_str(&format!(
        "clusters:\n  - {{name: ring, type: carbon_ch, members: [{}]}}\nroutes:\n",
        members.join(", ")
    ));
    // 99 rules that the benchmark's names never match, in the mix operators
    // write (prefixes, globs, regexes), then the ring.
    for i in 0..33 {
        yaml.push_str(&format!(
            "  - {{match: {{prefix: \"team{i}.\"}}, to: [other], stop: true}}\n"
        ));
        yaml.push_str(&format!(
            "  - {{match: {{glob: \"apps.svc{i}.*.latency\"}}, to: [other], stop: true}}\n"
        ));
        yaml.push_str(&format!("  - {{match: {{regex: \"^jobs\\\\.batch{i}\\\\.[a-z]+\\\\.(ok|failed)$\"}}, to: [other], stop: true}}\n"));
    }
    yaml.push_str("  - {match: {prefix: \"\"}, to: [ring]}\n");
    yaml
}

fn routing(c: &mut Criterion) {
    let config = parse(&config()).expect("valid config");
    assert_eq!(config.routes.len(), 100);
    let rules = Rules::new(&config.routes, &config.clusters);
    let health = Health::new(config.upstreams.len());
    let mut batch = Batch::new();
    for i in 0..N_POINTS {
        let name = format!("servers.web{:03}.cpu.core{}.utilisation", i % 500, i % 16);
        batch.push(&name, [], Timestamp::from_millis(0), Value::F64(1.0), None);
    }
    let mut group = c.benchmark_group("routing");
    group.throughput(Throughput::Elements(N_POINTS as u64));
    group.bench_function("100_rules_then_12_node_carbon_ch", |b| {
        b.iter(|| {
            batch
                .iter()
                .filter(|point| !rules.place(point, &health).is_empty())
                .count()
        })
    });
    group.finish();
}

mod harness {
    #![allow(missing_docs)]
    use super::routing;
    criterion::criterion_group!(benches, routing);
}

criterion_main!(harness::benches);
