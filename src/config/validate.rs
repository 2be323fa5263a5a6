//! Raw to validated configuration: defaults, cross-references, patterns.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;

use regex::Regex;

use super::raw;
use super::raw::{
    OneOrMany, RawCluster, RawClusterKind, RawConfig, RawFnv1aKeys, RawHashKey, RawListener,
    RawRewrite, RawRoute, RawUpstream,
};
use super::{AmqpBody, AmqpListenerConfig, AmqpUpstreamConfig, Fsync, SpoolConfig};
use super::{
    BatchConfig, ClusterConfig, ClusterKind, Config, ConfigError, Destination, Fnv1aKeys, HashKey,
    ListenerConfig, Matcher, Member, QueueConfig, RetryConfig, Rewrite, RouteConfig, TagMatcher,
    Target, UpstreamConfig, DEFAULT_BATCH_DELAY, DEFAULT_BATCH_POINTS, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_QUEUE_POINTS, DEFAULT_RETRY_INITIAL, DEFAULT_RETRY_MAX,
    DEFAULT_SHUTDOWN_GRACE,
};
use crate::codec::{Limits, Protocol};
use crate::model::Source;
use crate::queue::WhenFull;
use crate::translate::{default_stats, GraphiteTags, HistogramPolicy, Stat, Template, Translation};

/// Checks a raw configuration and resolves it into [`Config`].
///
/// # Errors
/// [`ConfigError::Invalid`] with the YAML path of the first problem found.
pub fn validate(raw: RawConfig) -> Result<Config, ConfigError> {
    let admin = raw
        .admin
        .map(|admin| parse_socket_addr(&admin.listen, "admin.listen"))
        .transpose()?;
    let mut names = HashSet::new();
    let listeners = raw
        .listeners
        .into_iter()
        .enumerate()
        .map(|(i, listener)| {
            let path = format!("listeners[{i}]");
            unique(&mut names, &listener.name, &format!("{path}.name"))?;
            validate_listener(listener, &path)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut upstream_names = HashSet::new();
    let upstreams = raw
        .upstreams
        .into_iter()
        .enumerate()
        .map(|(i, upstream)| {
            let path = format!("upstreams[{i}]");
            unique(&mut upstream_names, &upstream.name, &format!("{path}.name"))?;
            validate_upstream(upstream, &path)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let clusters = raw
        .clusters
        .into_iter()
        .enumerate()
        .map(|(i, cluster)| {
            let path = format!("clusters[{i}]");
            if upstream_names.contains(&cluster.name) {
                return Err(invalid(
                    &format!("{path}.name"),
                    format!("{:?} is already an upstream", cluster.name),
                ));
            }
            unique(&mut upstream_names, &cluster.name, &format!("{path}.name"))?;
            validate_cluster(cluster, &upstreams, &path)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let routes = raw
        .routes
        .into_iter()
        .enumerate()
        .map(|(i, route)| validate_route(route, &upstreams, &clusters, &format!("routes[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    if upstreams.len() > crate::route::MAX_UPSTREAMS {
        return Err(invalid(
            "upstreams",
            format!(
                "at most {} upstreams are supported",
                crate::route::MAX_UPSTREAMS
            ),
        ));
    }
    let mut spool_dirs = HashSet::new();
    for (i, upstream) in upstreams.iter().enumerate() {
        if let Some(spool) = &upstream.spool {
            if !spool_dirs.insert(spool.dir.clone()) {
                return Err(invalid(
                    &format!("upstreams[{i}].spool.dir"),
                    format!(
                        "{} is already the spool of another upstream",
                        spool.dir.display()
                    ),
                ));
            }
        }
    }
    let shutdown_grace = raw
        .shutdown
        .and_then(|s| s.grace)
        .map_or(DEFAULT_SHUTDOWN_GRACE, |d| d.0);
    Ok(Config {
        admin,
        listeners,
        upstreams,
        clusters,
        routes,
        shutdown_grace,
    })
}

fn validate_listener(raw: RawListener, path: &str) -> Result<ListenerConfig, ConfigError> {
    let mut limits = Limits::default();
    if !matches!(
        raw.protocol,
        Protocol::GraphitePlaintext
            | Protocol::GraphitePickle
            | Protocol::KairosdbTelnet
            | Protocol::Http
            | Protocol::Amqp
    ) {
        return Err(invalid(
            &format!("{path}.protocol"),
            format!(
                "listener protocol {} is not available (graphite_plaintext, graphite_pickle, kairosdb_telnet, http, amqp)",
                raw.protocol
            ),
        ));
    }
    let amqp = validate_amqp_listener(&raw, path)?;
    let listen = match (&raw.listen, raw.protocol) {
        (None, Protocol::Amqp) => SocketAddr::from(([0, 0, 0, 0], 0)),
        (Some(_), Protocol::Amqp) => {
            return Err(invalid(
                &format!("{path}.listen"),
                "amqp listeners consume from a broker: give its url instead",
            ))
        }
        (Some(listen), _) => parse_socket_addr(listen, &format!("{path}.listen"))?,
        (None, _) => return Err(invalid(&format!("{path}.listen"), "is required (ip:port)")),
    };
    if raw.protocol == Protocol::KairosdbTelnet {
        limits.max_line_bytes = super::DEFAULT_TELNET_LINE_BYTES;
    }
    let only = |present: bool, key: &str, protocol: Protocol| {
        if present && raw.protocol != protocol {
            Err(invalid(
                &format!("{path}.{key}"),
                format!("only {protocol} listeners take {key}"),
            ))
        } else {
            Ok(())
        }
    };
    only(
        raw.default_tag.is_some(),
        "default_tag",
        Protocol::KairosdbTelnet,
    )?;
    only(
        raw.max_body_bytes.is_some(),
        "max_body_bytes",
        Protocol::Http,
    )?;
    only(raw.ack.is_some(), "ack", Protocol::Http)?;
    only(
        raw.request_timeout.is_some(),
        "request_timeout",
        Protocol::Http,
    )?;
    let request_timeout = raw
        .request_timeout
        .map_or(super::DEFAULT_LISTENER_REQUEST_TIMEOUT, |d| d.0);
    if request_timeout.is_zero() {
        return Err(invalid(
            &format!("{path}.request_timeout"),
            "must be greater than 0",
        ));
    }
    only(
        raw.max_decompressed_bytes.is_some(),
        "max_decompressed_bytes",
        Protocol::Http,
    )?;
    only(
        raw.max_frame_bytes.is_some(),
        "max_frame_bytes",
        Protocol::GraphitePickle,
    )?;
    let default_tag = match raw.default_tag.as_deref() {
        None => Some(("add".to_owned(), "tag".to_owned())),
        Some("") => None,
        Some(tag) => Some(parse_tag(tag, &format!("{path}.default_tag"))?),
    };
    let size = |value: Option<raw::ByteSize>, default: usize, key: &str| {
        value.map_or(Ok(default), |size| {
            usize::try_from(size.0)
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| invalid(&format!("{path}.{key}"), "must be greater than 0"))
        })
    };
    let max_body_bytes = size(
        raw.max_body_bytes,
        super::DEFAULT_MAX_BODY_BYTES,
        "max_body_bytes",
    )?;
    let max_decompressed_bytes = size(
        raw.max_decompressed_bytes,
        super::DEFAULT_MAX_DECOMPRESSED_BYTES,
        "max_decompressed_bytes",
    )?;
    if raw.udp && raw.protocol != Protocol::GraphitePlaintext {
        return Err(invalid(
            &format!("{path}.udp"),
            "only graphite_plaintext listens on UDP",
        ));
    }
    if let Some(max) = raw.max_line_length {
        if max == 0 {
            return Err(invalid(
                &format!("{path}.max_line_length"),
                "must be greater than 0",
            ));
        }
        limits.max_line_bytes = max;
    }
    if let Some(max) = raw.max_frame_bytes {
        limits.max_frame_bytes = usize::try_from(max.0)
            .ok()
            .filter(|&max| max > 0 && max <= u32::MAX as usize)
            .ok_or_else(|| {
                invalid(
                    &format!("{path}.max_frame_bytes"),
                    "must be between 1 and 4GiB",
                )
            })?;
    }
    let max_connections = raw.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
    if max_connections == 0 {
        return Err(invalid(
            &format!("{path}.max_connections"),
            "must be greater than 0",
        ));
    }
    let rate_limit = raw
        .rate_limit
        .map(|rate| {
            NonZeroU32::new(rate.points_per_second_per_peer)
                .map(|pps| (pps, rate.when_exceeded.unwrap_or_default()))
                .ok_or_else(|| {
                    invalid(
                        &format!("{path}.rate_limit.points_per_second_per_peer"),
                        "must be greater than 0",
                    )
                })
        })
        .transpose()?;
    let idle_timeout = raw
        .idle_timeout
        .map_or(super::DEFAULT_IDLE_TIMEOUT, |d| d.0);
    if idle_timeout.is_zero() {
        return Err(invalid(
            &format!("{path}.idle_timeout"),
            "must be greater than 0",
        ));
    }
    Ok(ListenerConfig {
        ack_safe: raw.ack == Some(raw::RawAck::Safe),
        request_timeout,
        amqp,
        idle_timeout,
        rate_limit,
        default_tag,
        max_body_bytes,
        max_decompressed_bytes,
        name: raw.name,
        protocol: raw.protocol,
        listen,
        udp: raw.udp,
        limits,
        max_connections,
    })
}

/// An `amqp://` URL (TLS to the broker is not built in).
fn check_amqp_url(url: Option<&String>, path: &str) -> Result<String, ConfigError> {
    let url = url.ok_or_else(|| {
        invalid(
            &format!("{path}.url"),
            "is required (amqp://user:pass@host:5672/%2f)",
        )
    })?;
    if !url.starts_with("amqp://") {
        return Err(invalid(
            &format!("{path}.url"),
            "must be an amqp:// URL (TLS to brokers is not built in yet)",
        ));
    }
    Ok(url.clone())
}

fn validate_amqp_listener(
    raw: &RawListener,
    path: &str,
) -> Result<Option<AmqpListenerConfig>, ConfigError> {
    if raw.protocol != Protocol::Amqp {
        for (present, key) in [
            (raw.url.is_some(), "url"),
            (raw.exchange.is_some(), "exchange"),
            (raw.queue.is_some(), "queue"),
            (raw.exclusive_queue.is_some(), "exclusive_queue"),
            (raw.bind_patterns.is_some(), "bind_patterns"),
            (raw.metric_name_in_body.is_some(), "metric_name_in_body"),
            (raw.prefetch.is_some(), "prefetch"),
        ] {
            if present {
                return Err(invalid(
                    &format!("{path}.{key}"),
                    "only amqp listeners take it",
                ));
            }
        }
        return Ok(None);
    }
    let url = check_amqp_url(raw.url.as_ref(), path)?;
    let exclusive = raw.exclusive_queue.unwrap_or(false);
    if exclusive && raw.queue.is_some() {
        return Err(invalid(
            &format!("{path}.queue"),
            "an exclusive queue is named by the server; drop queue or exclusive_queue",
        ));
    }
    let bind_patterns = raw
        .bind_patterns
        .clone()
        .unwrap_or_else(|| vec!["#".to_owned()]);
    if bind_patterns.is_empty() {
        return Err(invalid(
            &format!("{path}.bind_patterns"),
            "needs at least one pattern",
        ));
    }
    let prefetch = raw.prefetch.unwrap_or(super::DEFAULT_AMQP_PREFETCH);
    if prefetch == 0 {
        return Err(invalid(
            &format!("{path}.prefetch"),
            "must be greater than 0 (it bounds unacknowledged messages)",
        ));
    }
    Ok(Some(AmqpListenerConfig {
        url,
        exchange: raw
            .exchange
            .clone()
            .unwrap_or_else(|| super::DEFAULT_AMQP_EXCHANGE.to_owned()),
        queue: if exclusive {
            None
        } else {
            Some(
                raw.queue
                    .clone()
                    .unwrap_or_else(|| super::DEFAULT_AMQP_QUEUE.to_owned()),
            )
        },
        bind_patterns,
        metric_name_in_body: raw.metric_name_in_body.unwrap_or(false),
        prefetch,
    }))
}

fn validate_amqp_upstream(
    raw: &RawUpstream,
    path: &str,
) -> Result<(Target, Protocol), ConfigError> {
    let url = check_amqp_url(raw.url.as_ref(), path)?;
    let body = match raw.body.as_deref() {
        None | Some("carbon") => AmqpBody::Carbon,
        Some("plaintext_lines") => AmqpBody::PlaintextLines,
        Some(other) => {
            let protocol: Protocol = serde_yaml_ng::from_str(other).map_err(|_| {
                invalid(
                    &format!("{path}.body"),
                    format!("{other:?} is not carbon, plaintext_lines or a protocol name"),
                )
            })?;
            if !matches!(
                protocol,
                Protocol::GraphitePlaintext
                    | Protocol::GraphitePickle
                    | Protocol::KairosdbTelnet
                    | Protocol::KairosdbRest
                    | Protocol::IrondbRaw
                    | Protocol::IrondbFlatbuffer
            ) {
                return Err(invalid(
                    &format!("{path}.body"),
                    format!("{protocol} has no message encoding"),
                ));
            }
            AmqpBody::Encoded(protocol)
        }
    };
    if body == AmqpBody::Carbon && raw.routing_key.is_some() {
        return Err(invalid(
            &format!("{path}.routing_key"),
            "carbon bodies are routed by metric name",
        ));
    }
    let format = match body {
        AmqpBody::Carbon | AmqpBody::PlaintextLines => Protocol::GraphitePlaintext,
        AmqpBody::Encoded(protocol) => protocol,
    };
    Ok((
        Target::Amqp(AmqpUpstreamConfig {
            url,
            exchange: raw
                .exchange
                .clone()
                .unwrap_or_else(|| super::DEFAULT_AMQP_EXCHANGE.to_owned()),
            body,
            routing_key: raw
                .routing_key
                .clone()
                .unwrap_or_else(|| super::DEFAULT_AMQP_ROUTING_KEY.to_owned()),
            declare: raw.declare.unwrap_or(true),
        }),
        format,
    ))
}

fn validate_upstream(raw: RawUpstream, path: &str) -> Result<UpstreamConfig, ConfigError> {
    let (target, format) = validate_target(&raw, path)?;
    let batch = raw.batch.as_ref();
    let batch = BatchConfig {
        max_points: batch
            .and_then(|b| b.max_points)
            .unwrap_or(DEFAULT_BATCH_POINTS),
        max_delay: batch
            .and_then(|b| b.max_delay)
            .map_or(DEFAULT_BATCH_DELAY, |d| d.0),
    };
    if batch.max_points == 0 {
        return Err(invalid(
            &format!("{path}.batch.max_points"),
            "must be greater than 0",
        ));
    }
    let queue = raw.queue.as_ref();
    let queue = QueueConfig {
        max_points: queue
            .and_then(|q| q.max_points)
            .unwrap_or(DEFAULT_QUEUE_POINTS),
        max_bytes: queue
            .and_then(|q| q.max_bytes)
            .map_or(super::DEFAULT_QUEUE_BYTES, |b| {
                usize::try_from(b.0).unwrap_or(usize::MAX)
            }),
        when_full: queue.and_then(|q| q.when_full).unwrap_or(WhenFull::Block),
    };
    if queue.max_bytes < 4096 || queue.max_bytes > crate::queue::MAX_CAPACITY {
        return Err(invalid(
            &format!("{path}.queue.max_bytes"),
            format!(
                "must be between 4KiB and {} bytes",
                crate::queue::MAX_CAPACITY
            ),
        ));
    }
    if queue.max_points == 0 || queue.max_points > crate::queue::MAX_CAPACITY {
        return Err(invalid(
            &format!("{path}.queue.max_points"),
            format!("must be between 1 and {}", crate::queue::MAX_CAPACITY),
        ));
    }
    let retry = raw.retry.as_ref();
    let retry = RetryConfig {
        initial: retry
            .and_then(|r| r.initial)
            .map_or(DEFAULT_RETRY_INITIAL, |d| d.0),
        max: retry.and_then(|r| r.max).map_or(DEFAULT_RETRY_MAX, |d| d.0),
    };
    if retry.initial.is_zero() || retry.max < retry.initial {
        return Err(invalid(
            &format!("{path}.retry"),
            "initial must be greater than 0 and not above max",
        ));
    }
    let translation = validate_translation(&raw, path)?;
    let concurrency = raw.concurrency.unwrap_or(super::DEFAULT_HTTP_CONCURRENCY);
    if !(1..=256).contains(&concurrency) {
        return Err(invalid(
            &format!("{path}.concurrency"),
            "must be between 1 and 256",
        ));
    }
    let max_line_bytes = raw
        .max_line_length
        .unwrap_or(super::DEFAULT_TELNET_LINE_BYTES);
    if max_line_bytes == 0 {
        return Err(invalid(
            &format!("{path}.max_line_length"),
            "must be greater than 0",
        ));
    }
    let is_irondb = matches!(
        raw.protocol,
        Protocol::IrondbRaw | Protocol::IrondbFlatbuffer
    );
    if !is_irondb {
        for (present, key) in [
            (raw.check.is_some(), "check"),
            (raw.flatbuffer_schema.is_some(), "flatbuffer_schema"),
            (raw.method.is_some(), "method"),
        ] {
            if present {
                return Err(invalid(
                    &format!("{path}.{key}"),
                    "only IRONdb upstreams (irondb_raw, irondb_flatbuffer) take it",
                ));
            }
        }
    }
    if raw.flatbuffer_schema.is_some() && raw.protocol != Protocol::IrondbFlatbuffer {
        return Err(invalid(
            &format!("{path}.flatbuffer_schema"),
            "only irondb_flatbuffer upstreams take flatbuffer_schema",
        ));
    }
    let spool = raw
        .spool
        .as_ref()
        .map(|spool| validate_spool(spool, &format!("{path}.spool")))
        .transpose()?;
    if queue.when_full == WhenFull::Spill && spool.is_none() {
        return Err(invalid(
            &format!("{path}.queue.when_full"),
            "spill needs a spool: {dir: ...}",
        ));
    }
    let check = raw
        .check
        .as_ref()
        .map(|check| validate_check(check, &format!("{path}.check")))
        .transpose()?;
    Ok(UpstreamConfig {
        translation,
        check,
        flatbuffer_cmls: raw.flatbuffer_schema == Some(raw::RawFlatbufferSchema::Cmls),
        http_put: raw.method == Some(raw::RawMethod::Put),
        spool,
        telnet_putm: raw.telnet_command == Some(raw::RawTelnetCommand::Putm),
        max_line_bytes,
        // Whether an IRONdb node takes gzip bodies is not documented, so
        // IRONdb upstreams send plain bodies unless told otherwise.
        gzip: raw.gzip.unwrap_or(!is_irondb),
        request_timeout: raw
            .request_timeout
            .map_or(super::DEFAULT_REQUEST_TIMEOUT, |d| d.0),
        concurrency,
        rate_limit: raw
            .rate_limit
            .as_ref()
            .map(|rate| {
                NonZeroU32::new(rate.points_per_second).ok_or_else(|| {
                    invalid(
                        &format!("{path}.rate_limit.points_per_second"),
                        "must be greater than 0",
                    )
                })
            })
            .transpose()?,
        name: raw.name,
        protocol: raw.protocol,
        format,
        target,
        batch,
        queue,
        retry,
        connect_timeout: raw.connect_timeout.map_or(DEFAULT_CONNECT_TIMEOUT, |d| d.0),
    })
}

fn validate_spool(raw: &raw::RawSpool, path: &str) -> Result<SpoolConfig, ConfigError> {
    if raw.dir.trim().is_empty() {
        return Err(invalid(&format!("{path}.dir"), "must not be empty"));
    }
    let max_bytes = raw.max_bytes.map_or(super::DEFAULT_SPOOL_BYTES, |b| b.0);
    if max_bytes < 1 << 20 {
        return Err(invalid(
            &format!("{path}.max_bytes"),
            "must be at least 1MiB",
        ));
    }
    let fsync = match (raw.fsync, raw.fsync_interval) {
        (None | Some(raw::RawFsync::EveryBatch), None) => Fsync::EveryBatch,
        (Some(raw::RawFsync::Never), None) => Fsync::Never,
        (Some(raw::RawFsync::Interval), interval) => {
            let interval = interval.map_or(super::DEFAULT_FSYNC_INTERVAL, |d| d.0);
            if interval.is_zero() {
                return Err(invalid(
                    &format!("{path}.fsync_interval"),
                    "must be greater than 0",
                ));
            }
            Fsync::Interval(interval)
        }
        (_, Some(_)) => {
            return Err(invalid(
                &format!("{path}.fsync_interval"),
                "goes with fsync: interval",
            ))
        }
    };
    let replay = raw
        .replay_points_per_second
        .unwrap_or(super::DEFAULT_REPLAY_POINTS_PER_SECOND);
    let replay_points_per_second = NonZeroU32::new(replay).ok_or_else(|| {
        invalid(
            &format!("{path}.replay_points_per_second"),
            "must be greater than 0",
        )
    })?;
    Ok(SpoolConfig {
        dir: PathBuf::from(&raw.dir),
        max_bytes,
        fsync,
        replay_points_per_second,
        drop_oldest_when_full: raw.when_full != Some(raw::RawSpoolFull::Block),
    })
}

/// An IRONdb check identity: a UUID in canonical text form (stored in lower case).
fn validate_check(check: &raw::RawCheck, path: &str) -> Result<Arc<Source>, ConfigError> {
    let uuid = check.check_uuid.to_ascii_lowercase();
    let canonical = uuid.len() == 36
        && uuid.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        });
    if !canonical {
        return Err(invalid(
            &format!("{path}.check_uuid"),
            format!(
                "{:?} is not a UUID (8-4-4-4-12 hex digits)",
                check.check_uuid
            ),
        ));
    }
    let forbidden = |text: &str| text.contains(['`', '\t', '\n', '\r']);
    for (key, value) in [
        ("check_name", Some(check.check_name.as_str())),
        ("target", check.target.as_deref()),
        ("module", check.module.as_deref()),
    ] {
        if value.is_some_and(|v| v.is_empty() || forbidden(v)) {
            return Err(invalid(
                &format!("{path}.{key}"),
                "must be non-empty, without backquotes, tabs or line breaks",
            ));
        }
    }
    Ok(Arc::new(Source {
        account_id: Some(check.account_id),
        check_uuid: Some(uuid),
        check_name: Some(check.check_name.clone()),
        target: check.target.clone(),
        module: check.module.clone(),
    }))
}

/// `histograms:` of a Graphite or KairosDB upstream.
fn validate_histograms(raw: &RawUpstream, path: &str) -> Result<HistogramPolicy, ConfigError> {
    let carries_histograms = matches!(
        raw.protocol,
        Protocol::IrondbRaw | Protocol::IrondbFlatbuffer
    );
    let Some(config) = raw.histograms.as_ref() else {
        return Ok(if carries_histograms {
            HistogramPolicy::Keep
        } else {
            HistogramPolicy::Summary(default_stats())
        });
    };
    let path = format!("{path}.histograms");
    if carries_histograms {
        return Err(invalid(
            &path,
            "IRONdb upstreams carry histograms as they are",
        ));
    }
    if config.mode == Some(raw::RawHistogramMode::Drop) {
        if config.stats.is_some() || config.quantiles.is_some() {
            return Err(invalid(&path, "stats and quantiles go with mode: summary"));
        }
        return Ok(HistogramPolicy::Drop);
    }
    let mut stats = Vec::new();
    match &config.stats {
        None => stats.extend(
            default_stats()
                .into_iter()
                .filter(|stat| !matches!(stat, Stat::Quantile(_))),
        ),
        Some(names) => {
            for (i, name) in names.iter().enumerate() {
                let stat = Stat::parse(name).ok_or_else(|| {
                    invalid(
                        &format!("{path}.stats[{i}]"),
                        format!("{name:?} is not one of count, sum, mean, min, max"),
                    )
                })?;
                stats.push(stat);
            }
        }
    }
    match &config.quantiles {
        None => stats.extend(
            default_stats()
                .into_iter()
                .filter(|stat| matches!(stat, Stat::Quantile(_))),
        ),
        Some(quantiles) => {
            for (i, q) in quantiles.iter().enumerate() {
                if !(0.0..=1.0).contains(q) {
                    return Err(invalid(
                        &format!("{path}.quantiles[{i}]"),
                        "must be between 0 and 1",
                    ));
                }
                stats.push(Stat::Quantile(*q));
            }
        }
    }
    if stats.is_empty() {
        return Err(invalid(
            &path,
            "a summary needs at least one stat or quantile",
        ));
    }
    Ok(HistogramPolicy::Summary(stats))
}

fn validate_translation(raw: &RawUpstream, path: &str) -> Result<Translation, ConfigError> {
    let templates = raw
        .templates
        .iter()
        .enumerate()
        .map(|(i, text)| {
            Template::parse(text)
                .map_err(|err| invalid(&format!("{path}.templates[{i}]"), err.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let default_tag = raw
        .default_tag
        .as_deref()
        .map(|tag| parse_tag(tag, &format!("{path}.default_tag")))
        .transpose()?;
    let graphite_tags = match (raw.graphite_tags, &raw.flatten_template) {
        (None | Some(raw::RawGraphiteTags::Keep), None) => GraphiteTags::Keep,
        (Some(raw::RawGraphiteTags::Drop), None) => GraphiteTags::Drop,
        (Some(raw::RawGraphiteTags::Flatten), pattern) => GraphiteTags::Flatten(pattern.clone()),
        (_, Some(_)) => {
            return Err(invalid(
                &format!("{path}.flatten_template"),
                "goes with graphite_tags: flatten",
            ))
        }
    };
    let is_graphite = matches!(
        raw.protocol,
        Protocol::GraphitePlaintext | Protocol::GraphitePickle | Protocol::File
    );
    if graphite_tags != GraphiteTags::Keep && !is_graphite {
        return Err(invalid(
            &format!("{path}.graphite_tags"),
            "only Graphite upstreams take graphite_tags",
        ));
    }
    if raw
        .add_tags
        .iter()
        .any(|(k, v)| k.is_empty() || v.is_empty())
    {
        return Err(invalid(
            &format!("{path}.add_tags"),
            "tag keys and values must not be empty",
        ));
    }
    Ok(Translation {
        templates,
        add_tags: raw
            .add_tags
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        default_tag,
        graphite_tags,
        histograms: validate_histograms(raw, path)?,
    })
}

/// `key=value` with both non-empty.
fn parse_tag(text: &str, path: &str) -> Result<(String, String), ConfigError> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() && !value.is_empty() => {
            Ok((key.to_owned(), value.to_owned()))
        }
        _ => Err(invalid(path, format!("{text:?} is not key=value"))),
    }
}

fn validate_target(raw: &RawUpstream, path: &str) -> Result<(Target, Protocol), ConfigError> {
    let forbid = |present: bool, key: &str, why: &str| {
        if present {
            Err(invalid(&format!("{path}.{key}"), why))
        } else {
            Ok(())
        }
    };
    let is_http = matches!(
        raw.protocol,
        Protocol::KairosdbRest | Protocol::IrondbRaw | Protocol::IrondbFlatbuffer
    );
    let is_amqp = raw.protocol == Protocol::Amqp;
    for (present, key) in [
        (raw.exchange.is_some(), "exchange"),
        (raw.body.is_some(), "body"),
        (raw.routing_key.is_some(), "routing_key"),
        (raw.declare.is_some(), "declare"),
    ] {
        forbid(present && !is_amqp, key, "only amqp upstreams take it")?;
    }
    if is_amqp {
        forbid(
            raw.address.is_some(),
            "address",
            "amqp upstreams take a url",
        )?;
        forbid(raw.udp, "udp", "amqp upstreams take a url")?;
        forbid(raw.path.is_some(), "path", "amqp upstreams take a url")?;
        forbid(raw.format.is_some(), "format", "amqp upstreams take body")?;
        return validate_amqp_upstream(raw, path);
    }
    forbid(
        raw.url.is_some() && !is_http,
        "url",
        "only HTTP upstreams (kairosdb_rest, irondb_raw, irondb_flatbuffer) take a url",
    )?;
    forbid(
        raw.gzip.is_some() && !is_http,
        "gzip",
        "only HTTP upstreams take gzip",
    )?;
    forbid(
        raw.concurrency.is_some() && !is_http,
        "concurrency",
        "only HTTP upstreams take concurrency",
    )?;
    forbid(
        raw.request_timeout.is_some() && !is_http,
        "request_timeout",
        "only HTTP upstreams take request_timeout",
    )?;
    let is_telnet = raw.protocol == Protocol::KairosdbTelnet;
    forbid(
        raw.telnet_command.is_some() && !is_telnet,
        "telnet_command",
        "only kairosdb_telnet upstreams take telnet_command",
    )?;
    forbid(
        raw.max_line_length.is_some() && !is_telnet,
        "max_line_length",
        "only kairosdb_telnet upstreams take max_line_length",
    )?;
    match raw.protocol {
        Protocol::KairosdbRest | Protocol::IrondbRaw | Protocol::IrondbFlatbuffer => {
            forbid(
                raw.address.is_some(),
                "address",
                "HTTP upstreams take a url",
            )?;
            forbid(raw.udp, "udp", "HTTP upstreams take a url")?;
            let example = if raw.protocol == Protocol::KairosdbRest {
                "http://host:port/api/v1/datapoints"
            } else {
                "http://host:8112/raw"
            };
            let url = raw.url.clone().ok_or_else(|| {
                invalid(&format!("{path}.url"), format!("is required ({example})"))
            })?;
            if !url.starts_with("http://") {
                return Err(invalid(
                    &format!("{path}.url"),
                    "must be an http:// URL (TLS to upstreams is not built in yet)",
                ));
            }
            Ok((Target::Http(url), raw.protocol))
        }
        Protocol::KairosdbTelnet => {
            forbid(raw.udp, "udp", "kairosdb_telnet is sent over TCP")?;
            let address = raw
                .address
                .clone()
                .ok_or_else(|| invalid(&format!("{path}.address"), "is required (host:port)"))?;
            check_host_port(&address, &format!("{path}.address"))?;
            Ok((Target::Tcp(address), raw.protocol))
        }
        Protocol::GraphitePlaintext | Protocol::GraphitePickle => {
            forbid(
                raw.path.is_some(),
                "path",
                "only file upstreams take a path",
            )?;
            forbid(
                raw.format.is_some(),
                "format",
                "only file upstreams take a format",
            )?;
            forbid(
                raw.udp && raw.protocol == Protocol::GraphitePickle,
                "udp",
                "pickle is sent over TCP only",
            )?;
            let address = raw
                .address
                .clone()
                .ok_or_else(|| invalid(&format!("{path}.address"), "is required (host:port)"))?;
            check_host_port(&address, &format!("{path}.address"))?;
            let target = if raw.udp {
                Target::Udp(address)
            } else {
                Target::Tcp(address)
            };
            Ok((target, raw.protocol))
        }
        Protocol::File => {
            forbid(
                raw.address.is_some(),
                "address",
                "file upstreams take a path",
            )?;
            forbid(raw.udp, "udp", "file upstreams take a path")?;
            let format = raw.format.unwrap_or(Protocol::GraphitePlaintext);
            if !matches!(
                format,
                Protocol::GraphitePlaintext | Protocol::KairosdbTelnet | Protocol::KairosdbRest
            ) {
                return Err(invalid(
                    &format!("{path}.format"),
                    format!("{format} is not a text format (graphite_plaintext, kairosdb_telnet, kairosdb_rest)"),
                ));
            }
            let target = match raw.path.as_deref() {
                None | Some("-") => Target::Stdout,
                Some(file) => Target::File(PathBuf::from(file)),
            };
            Ok((target, format))
        }
        other => Err(invalid(
            &format!("{path}.protocol"),
            format!(
                "upstream protocol {other} is not available yet \
                 (graphite_plaintext, graphite_pickle, kairosdb_telnet, kairosdb_rest, \
                 irondb_raw, irondb_flatbuffer, file)"
            ),
        )),
    }
}

fn validate_route(
    raw: RawRoute,
    upstreams: &[UpstreamConfig],
    clusters: &[ClusterConfig],
    path: &str,
) -> Result<RouteConfig, ConfigError> {
    let mut matchers = Vec::new();
    if let Some(matcher) = raw.matcher {
        if let Some(prefix) = matcher.prefix {
            matchers.push(Matcher::Prefix(prefix));
        }
        if let Some(pattern) = matcher.regex {
            matchers.push(Matcher::Regex(compile(
                &pattern,
                &format!("{path}.match.regex"),
            )?));
        }
        if let Some(pattern) = matcher.glob {
            let regex = compile(&glob_to_regex(&pattern), &format!("{path}.match.glob"))?;
            matchers.push(Matcher::Glob { pattern, regex });
        }
        for (i, condition) in matcher
            .tag
            .map(OneOrMany::into_vec)
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            let tag_path = format!("{path}.match.tag[{i}]");
            matchers.push(Matcher::Tag(parse_tag_matcher(&condition, &tag_path)?));
        }
        if matchers.is_empty() {
            return Err(invalid(
                &format!("{path}.match"),
                "needs prefix, regex, glob or tag",
            ));
        }
    }
    if raw.default && !matchers.is_empty() {
        return Err(invalid(
            &format!("{path}.default"),
            "a default route has no match",
        ));
    }
    if !raw.default && matchers.is_empty() {
        return Err(invalid(
            &format!("{path}.match"),
            "is required (or set default: true)",
        ));
    }
    let rewrite = raw
        .rewrite
        .map(|rewrite| validate_rewrite(rewrite, &format!("{path}.rewrite")))
        .transpose()?;
    if raw.to.is_empty() && rewrite.is_none() {
        return Err(invalid(
            &format!("{path}.to"),
            "names no upstream or cluster",
        ));
    }
    let to = raw
        .to
        .iter()
        .enumerate()
        .map(|(i, name)| resolve_destination(name, upstreams, clusters, &format!("{path}.to[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RouteConfig {
        matchers,
        default: raw.default,
        rewrite,
        to,
        stop: raw.stop,
    })
}

fn resolve_destination(
    name: &str,
    upstreams: &[UpstreamConfig],
    clusters: &[ClusterConfig],
    path: &str,
) -> Result<Destination, ConfigError> {
    if let Some(index) = upstreams.iter().position(|u| u.name == name) {
        return Ok(Destination::Upstream(index));
    }
    if let Some(index) = clusters.iter().position(|c| c.name == name) {
        return Ok(Destination::Cluster(index));
    }
    Err(invalid(
        path,
        format!("unknown upstream or cluster {name:?}"),
    ))
}

/// `key`, `key=value` or `key=~regex`.
fn parse_tag_matcher(condition: &str, path: &str) -> Result<TagMatcher, ConfigError> {
    match condition.split_once('=') {
        None if !condition.is_empty() => Ok(TagMatcher::Exists(condition.to_owned())),
        Some((key, value)) if !key.is_empty() => match value.strip_prefix('~') {
            Some(pattern) => Ok(TagMatcher::Regex(key.to_owned(), compile(pattern, path)?)),
            None => Ok(TagMatcher::Equals(key.to_owned(), value.to_owned())),
        },
        _ => Err(invalid(
            path,
            format!("{condition:?} is not key, key=value or key=~regex"),
        )),
    }
}

fn validate_rewrite(raw: RawRewrite, path: &str) -> Result<Rewrite, ConfigError> {
    let path_rewrite = match (raw.regex, raw.replace) {
        (Some(pattern), Some(replace)) => Some((
            compile(&pattern, &format!("{path}.regex"))?,
            backrefs_to_regex_syntax(&replace),
        )),
        (None, None) => None,
        _ => return Err(invalid(path, "regex and replace go together")),
    };
    let rewrite = Rewrite {
        path: path_rewrite,
        remove_tags: raw.remove_tags,
        rename_tags: raw.rename_tags.into_iter().collect(),
        add_tags: raw.add_tags.into_iter().collect(),
    };
    let bad_tag = rewrite
        .add_tags
        .iter()
        .chain(&rewrite.rename_tags)
        .any(|(key, value)| key.is_empty() || value.is_empty());
    if bad_tag {
        return Err(invalid(path, "tag keys and values must not be empty"));
    }
    Ok(rewrite)
}

/// Turns carbon-c-relay style `\1` into the regex crate's `${1}`.
fn backrefs_to_regex_syntax(replace: &str) -> String {
    let mut out = String::with_capacity(replace.len());
    let mut chars = replace.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('\\', Some(d)) if d.is_ascii_digit() => {
                let mut group = String::new();
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    group.push(*d);
                    chars.next();
                }
                out.push_str(&format!("${{{group}}}"));
            }
            ('\\', Some('\\')) => {
                chars.next();
                out.push('\\');
            }
            _ => out.push(c),
        }
    }
    out
}

fn validate_cluster(
    raw: RawCluster,
    upstreams: &[UpstreamConfig],
    path: &str,
) -> Result<ClusterConfig, ConfigError> {
    if raw.members.is_empty() {
        return Err(invalid(&format!("{path}.members"), "names no upstream"));
    }
    let kind = match raw.kind {
        RawClusterKind::Fanout => ClusterKind::Fanout,
        RawClusterKind::Failover => ClusterKind::Failover,
        RawClusterKind::AnyOf => ClusterKind::AnyOf,
        RawClusterKind::CarbonCh => ClusterKind::CarbonCh,
        RawClusterKind::CarbonChCcr => ClusterKind::CarbonChCcr,
        RawClusterKind::Fnv1aCh => ClusterKind::Fnv1aCh(match raw.fnv1a_keys {
            Some(RawFnv1aKeys::CarbonCRelay) => Fnv1aKeys::CarbonCRelay,
            Some(RawFnv1aKeys::Carbon) | None => Fnv1aKeys::Carbon,
        }),
        RawClusterKind::Jump => ClusterKind::Jump,
    };
    if raw.fnv1a_keys.is_some() && raw.kind != RawClusterKind::Fnv1aCh {
        return Err(invalid(
            &format!("{path}.fnv1a_keys"),
            "only fnv1a_ch clusters take fnv1a_keys",
        ));
    }
    let is_hash = matches!(
        kind,
        ClusterKind::CarbonCh
            | ClusterKind::CarbonChCcr
            | ClusterKind::Fnv1aCh(_)
            | ClusterKind::Jump
    );
    let replication = raw.replication.unwrap_or(1);
    if replication == 0 || replication > raw.members.len() || (!is_hash && replication != 1) {
        return Err(invalid(
            &format!("{path}.replication"),
            "must be between 1 and the number of members, and 1 unless the cluster hashes",
        ));
    }
    let mut members = Vec::new();
    for (i, member) in raw.members.iter().enumerate() {
        let member_path = format!("{path}.members[{i}]");
        let upstream = upstreams
            .iter()
            .position(|u| u.name == member.upstream)
            .ok_or_else(|| {
                invalid(
                    &format!("{member_path}.upstream"),
                    format!("unknown upstream {:?}", member.upstream),
                )
            })?;
        let (host, port) = match &upstreams[upstream].target {
            Target::Tcp(address) | Target::Udp(address) => split_host_port(address),
            // An HTTP member's ring identity is its URL's host and port.
            Target::Http(url) => url
                .strip_prefix("http://")
                .map(|rest| rest.split('/').next().unwrap_or(rest))
                .and_then(|authority| {
                    split_host_port(authority).or_else(|| Some((authority.to_owned(), 80)))
                }),
            Target::File(_) | Target::Stdout | Target::Amqp(_) => None,
        }
        .ok_or_else(|| {
            invalid(
                &format!("{member_path}.upstream"),
                "cluster members must have an address",
            )
        })?;
        let candidate = Member {
            upstream,
            host,
            port,
            instance: member.instance.clone(),
        };
        // Two members with the same ring key would share (or fight over)
        // one set of ring positions.
        let same_ring_key = |m: &Member| match kind {
            ClusterKind::CarbonCh | ClusterKind::CarbonChCcr => {
                m.host == candidate.host && m.instance == candidate.instance
            }
            ClusterKind::Fnv1aCh(_) => m.instance.is_some() && m.instance == candidate.instance,
            _ => false,
        };
        if members
            .iter()
            .any(|m: &Member| m.upstream == upstream || same_ring_key(m))
        {
            return Err(invalid(
                &member_path,
                "duplicate member (same upstream, or the same ring key: host and instance)",
            ));
        }
        members.push(candidate);
    }
    if kind == ClusterKind::Fnv1aCh(Fnv1aKeys::Carbon)
        && members.iter().any(|m| m.instance.is_none())
    {
        return Err(invalid(
            &format!("{path}.members"),
            "carbon's fnv1a_ch ring is keyed by instance: give every member an instance",
        ));
    }
    let hash_key = match raw.hash_key {
        Some(RawHashKey::Name) => HashKey::Name,
        Some(RawHashKey::Path) => HashKey::Path,
        None if matches!(
            kind,
            ClusterKind::CarbonChCcr
                | ClusterKind::Jump
                | ClusterKind::Fnv1aCh(Fnv1aKeys::CarbonCRelay)
        ) =>
        {
            HashKey::Path
        }
        None => HashKey::Name,
    };
    Ok(ClusterConfig {
        name: raw.name,
        kind,
        replication,
        diverse_replicas: raw.diverse_replicas.unwrap_or(true),
        hash_key,
        members,
    })
}

fn split_host_port(address: &str) -> Option<(String, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some((host.to_owned(), port.parse().ok()?))
}

fn compile(pattern: &str, path: &str) -> Result<Regex, ConfigError> {
    Regex::new(pattern).map_err(|err| invalid(path, err.to_string()))
}

/// Translates a Graphite glob into an anchored regex: `*` and `?` stay
/// within one path segment, `{a,b}` alternates, `[..]` is a class.
pub fn glob_to_regex(glob: &str) -> String {
    let mut out = String::from("^");
    let mut in_braces = false;
    let mut chars = glob.chars();
    while let Some(c) = chars.next() {
        match c {
            '*' => out.push_str("[^.]*"),
            '?' => out.push_str("[^.]"),
            '{' if !in_braces => {
                in_braces = true;
                out.push_str("(?:");
            }
            '}' if in_braces => {
                in_braces = false;
                out.push(')');
            }
            ',' if in_braces => out.push('|'),
            '[' => {
                out.push('[');
                for class_char in chars.by_ref() {
                    if class_char == ']' {
                        break;
                    }
                    if class_char == '\\' || class_char == '[' {
                        out.push('\\');
                    }
                    out.push(class_char);
                }
                out.push(']');
            }
            other => out.push_str(&regex::escape(&other.to_string())),
        }
    }
    if in_braces {
        out.push(')');
    }
    out.push('$');
    out
}

fn unique(seen: &mut HashSet<String>, name: &str, path: &str) -> Result<(), ConfigError> {
    if name.is_empty() {
        return Err(invalid(path, "must not be empty"));
    }
    if !seen.insert(name.to_owned()) {
        return Err(invalid(path, format!("duplicate name {name:?}")));
    }
    Ok(())
}

fn parse_socket_addr(text: &str, path: &str) -> Result<SocketAddr, ConfigError> {
    text.parse()
        .map_err(|_| invalid(path, format!("{text:?} is not ip:port")))
}

fn check_host_port(text: &str, path: &str) -> Result<(), ConfigError> {
    let valid = text
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if valid {
        Ok(())
    } else {
        Err(invalid(path, format!("{text:?} is not host:port")))
    }
}

fn invalid(path: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        path: path.to_owned(),
        message: message.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use super::*;

    const CONTRACT: &str = r#"
admin: {listen: 127.0.0.1:8081}
listeners:
  - {name: plain, protocol: graphite_plaintext, listen: 0.0.0.0:2003, udp: true}
  - {name: pickle, protocol: graphite_pickle, listen: 0.0.0.0:2004}
upstreams:
  - name: carbon
    protocol: graphite_pickle
    address: 127.0.0.1:2104
    batch: {max_points: 500, max_delay: 200ms}
    queue: {max_points: 1000000, when_full: block}
routes:
  - {match: {prefix: "servers."}, to: [carbon], stop: true}
  - {match: {regex: ".*"}, to: [carbon]}
"#;

    #[test]
    fn the_issue_contract_parses() {
        let config = parse(CONTRACT).expect("valid");
        assert_eq!(config.listeners.len(), 2);
        assert!(config.listeners[0].udp);
        assert_eq!(config.upstreams[0].batch.max_delay.as_millis(), 200);
        assert_eq!(config.upstreams[0].queue.when_full, WhenFull::Block);
        assert_eq!(config.routes[0].to, vec![Destination::Upstream(0)]);
        assert!(config.routes[0].stop);
    }

    fn error_of(yaml: &str) -> String {
        parse(yaml).expect_err("must be rejected").to_string()
    }

    #[test]
    fn errors_name_the_yaml_path() {
        let typo = CONTRACT.replace("max_delay", "max_dealy");
        assert!(
            error_of(&typo).starts_with("upstreams[0].batch.max_dealy: unknown field `max_dealy`"),
            "{}",
            error_of(&typo)
        );
        let bad_policy = CONTRACT.replace("when_full: block", "when_full: explode");
        assert!(error_of(&bad_policy).starts_with("upstreams[0].queue.when_full"));
        let unknown = CONTRACT.replace("to: [carbon], stop", "to: [nope], stop");
        assert_eq!(
            error_of(&unknown),
            "routes[0].to[0]: unknown upstream or cluster \"nope\""
        );
        let bad_regex = CONTRACT.replace("\".*\"", "\"(\"");
        assert!(error_of(&bad_regex).starts_with("routes[1].match.regex"));
        let bad_duration = CONTRACT.replace("200ms", "soon");
        assert!(error_of(&bad_duration).contains("invalid duration"));
        let dup = CONTRACT.replace("name: pickle", "name: plain");
        assert_eq!(
            error_of(&dup),
            "listeners[1].name: duplicate name \"plain\""
        );
        let udp_pickle =
            CONTRACT.replace("listen: 0.0.0.0:2004}", "listen: 0.0.0.0:2004, udp: true}");
        assert!(error_of(&udp_pickle).starts_with("listeners[1].udp"));
    }

    #[test]
    fn graphite_globs() {
        let cases = [
            ("servers.*.cpu", "servers.web01.cpu", true),
            ("servers.*.cpu", "servers.a.b.cpu", false),
            ("servers.{web,db}01.?pu", "servers.db01.cpu", true),
            ("servers.{web,db}01.?pu", "servers.mx01.cpu", false),
            ("a.[0-9].b", "a.7.b", true),
            ("a.b+c", "a.b+c", true),
            ("a.b+c", "a.bbc", false),
        ];
        for (glob, path, expected) in cases {
            let regex = Regex::new(&glob_to_regex(glob)).expect("compiles");
            assert_eq!(regex.is_match(path), expected, "{glob} vs {path}");
        }
    }
}
