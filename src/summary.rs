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
        if let Some(amqp) = &listener.amqp {
            let queue = amqp.queue.as_deref().unwrap_or("(exclusive)");
            let _ = writeln!(
                out,
                "  {}: amqp from {} exchange {} queue {queue}",
                listener.name,
                redact_url(&amqp.url),
                amqp.exchange
            );
            continue;
        }
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
            Target::Amqp(amqp) => {
                format!("amqp {} exchange {}", redact_url(&amqp.url), amqp.exchange)
            }
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

/// The URL with its password replaced, for logs and summaries.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((credentials, host)) => {
            let user = credentials.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}{path}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod redact_tests {
    use super::redact_url;

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(
            redact_url("amqp://guest:guest@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(redact_url("amqp://127.0.0.1/"), "amqp://127.0.0.1/");
    }
}
