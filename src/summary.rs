//! The human-readable summary printed by `tsrelay check`.

use std::fmt::Write;

use crate::config::{Config, Destination, Matcher, Target};

/// Describes what the configuration will run.
pub fn describe(config: &Config) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "configuration is valid");
    if let Some(admin) = config.admin {
        let _ = writeln!(out, "admin: http://{admin}/metrics");
    }
    let _ = writeln!(out, "listeners:");
    for listener in &config.listeners {
        let udp = if listener.udp { " (+udp)" } else { "" };
        let _ = writeln!(
            out,
            "  {}: {} on {}{udp}",
            listener.name, listener.protocol, listener.listen
        );
    }
    let _ = writeln!(out, "upstreams:");
    for upstream in &config.upstreams {
        let target = match &upstream.target {
            Target::Tcp(address) => format!("tcp {address}"),
            Target::Udp(address) => format!("udp {address}"),
            Target::File(path) => format!("file {}", path.display()),
            Target::Stdout => "stdout".to_owned(),
            Target::Http(url) => format!("http {url}"),
        };
        let _ = writeln!(
            out,
            "  {}: {} to {target}; batches of {} / {:?}; queue {} points, when full {:?}",
            upstream.name,
            upstream.format,
            upstream.batch.max_points,
            upstream.batch.max_delay,
            upstream.queue.max_points,
            upstream.queue.when_full
        );
    }
    if !config.clusters.is_empty() {
        let _ = writeln!(out, "clusters:");
    }
    for cluster in &config.clusters {
        let members: Vec<String> = cluster
            .members
            .iter()
            .map(|m| match &m.instance {
                Some(instance) => format!("{}:{}:{instance}", m.host, m.port),
                None => format!("{}:{}", m.host, m.port),
            })
            .collect();
        let _ = writeln!(
            out,
            "  {}: {:?}, replication {}, members {}",
            cluster.name,
            cluster.kind,
            cluster.replication,
            members.join(" ")
        );
    }
    let _ = writeln!(out, "routes:");
    for (i, route) in config.routes.iter().enumerate() {
        let condition = if route.default {
            "default".to_owned()
        } else {
            route
                .matchers
                .iter()
                .map(|m| match m {
                    Matcher::Prefix(prefix) => format!("prefix {prefix:?}"),
                    Matcher::Regex(regex) => format!("regex {:?}", regex.as_str()),
                    Matcher::Glob { pattern, .. } => format!("glob {pattern:?}"),
                    Matcher::Tag(tag) => format!("tag {tag:?}"),
                })
                .collect::<Vec<_>>()
                .join(" and ")
        };
        let to: Vec<_> = route
            .to
            .iter()
            .map(|destination| match *destination {
                Destination::Upstream(i) => config.upstreams[i].name.as_str(),
                Destination::Cluster(i) => config.clusters[i].name.as_str(),
            })
            .collect();
        let stop = if route.stop { ", stop" } else { "" };
        let condition = if route.rewrite.is_some() {
            format!("{condition}, rewrite")
        } else {
            condition
        };
        let _ = writeln!(out, "  {i}: {condition} -> {}{stop}", to.join(", "));
    }
    out
}
