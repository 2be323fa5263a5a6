//! `tsrelay route`: where each metric would go, without sending anything.
//!
//! Reads metric names (or whole plaintext lines: the first field is used)
//! and prints one line per input: the name, a tab, then each destination
//! as `upstream` or, after a rewrite, `upstream=new.name;tags`. With a
//! second configuration it prints only the names whose placement differs.

use std::io::{self, BufRead, Write};

use crate::codec::graphite_tags::push_graphite_point;
use crate::config::Config;
use crate::health::Health;
use crate::model::{write_carbon_name, Batch, Timestamp, Value};
use crate::route::{Placement, Rules};

/// A configuration's routing, ready to explain names.
pub struct Explainer {
    rules: Rules,
    upstream_names: Vec<String>,
    health: Health,
}

impl Explainer {
    /// Compiles the routing of `config`, every upstream assumed healthy.
    pub fn new(config: &Config) -> Self {
        Self {
            rules: Rules::new(&config.routes, &config.clusters),
            upstream_names: config.upstreams.iter().map(|u| u.name.clone()).collect(),
            health: Health::new(config.upstreams.len()),
        }
    }

    /// The destinations of one Graphite name (`path` or `path;k=v`), sorted,
    /// or an empty list when no route takes it.
    pub fn destinations(&self, name: &str) -> Vec<String> {
        let mut batch = Batch::new();
        push_graphite_point(&mut batch, name, Timestamp::from_millis(0), Value::F64(0.0));
        let Some(point) = batch.get(0) else {
            return Vec::new();
        };
        self.describe(&self.rules.place(&point, &self.health))
    }

    fn describe(&self, placement: &Placement) -> Vec<String> {
        let mut out: Vec<String> = placement
            .original
            .iter()
            .map(|i| self.upstream_names[i].clone())
            .collect();
        for (renamed, set) in &placement.renamed {
            let mut name = Vec::new();
            write_carbon_name(
                &renamed.name,
                renamed.tags.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                &mut name,
            );
            let name = String::from_utf8_lossy(&name);
            out.extend(
                set.iter()
                    .map(|i| format!("{}={name}", self.upstream_names[i])),
            );
        }
        out.sort();
        out
    }
}

/// Explains every input line; with `other`, prints only differences as
/// `name<TAB>this<TAB>other`.
///
/// # Errors
/// I/O errors of the reader or writer.
pub fn run(
    config: &Config,
    other: Option<&Config>,
    input: impl BufRead,
    mut output: impl Write,
) -> io::Result<()> {
    let this = Explainer::new(config);
    let other = other.map(Explainer::new);
    for line in input.lines() {
        let line = line?;
        let Some(name) = line.split_ascii_whitespace().next() else {
            continue;
        };
        let here = this.destinations(name);
        match &other {
            None => writeln!(output, "{name}\t{}", join(&here))?,
            Some(other) => {
                let there = other.destinations(name);
                if here != there {
                    writeln!(output, "{name}\t{}\t{}", join(&here), join(&there))?;
                }
            }
        }
    }
    output.flush()
}

fn join(destinations: &[String]) -> String {
    if destinations.is_empty() {
        "(unrouted)".to_owned()
    } else {
        destinations.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    const CONFIG: &str = "upstreams:\n  - {name: c1, protocol: graphite_pickle, address: 10.0.0.1:2004}\n  - {name: c2, protocol: graphite_pickle, address: 10.0.0.2:2004}\n\
        routes:\n  - {match: {glob: \"servers.*.cpu\"}, rewrite: {regex: \"^servers\\\\.\", replace: \"hosts.\"}, to: [c1]}\n  - {match: {tag: \"dc=eu\"}, to: [c2], stop: true}\n";

    #[test]
    fn prints_destinations_and_rewrites() {
        let config = parse(CONFIG).expect("valid");
        let mut out = Vec::new();
        run(
            &config,
            None,
            &b"servers.a.cpu 1 2\nm;dc=eu\nnowhere\n\n"[..],
            &mut out,
        )
        .expect("io");
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "servers.a.cpu\tc1=hosts.a.cpu\nm;dc=eu\tc2\nnowhere\t(unrouted)\n"
        );
    }

    #[test]
    fn diff_prints_only_changed_placements() {
        let config = parse(CONFIG).expect("valid");
        let other = parse(&CONFIG.replace("to: [c2], stop", "to: [c1], stop")).expect("valid");
        let mut out = Vec::new();
        run(
            &config,
            Some(&other),
            &b"servers.a.cpu\nm;dc=eu\n"[..],
            &mut out,
        )
        .expect("io");
        assert_eq!(String::from_utf8(out).expect("utf-8"), "m;dc=eu\tc2\tc1\n");
    }
}
