//! Validated configuration: what to run, never how to run it.
//!
//! [`load`] reads relay.yaml into the serde mirror in [`raw`], reporting
//! parse errors with their YAML path (`upstreams[0].queue.when_full`), then
//! [`validate`] turns it into these domain types, resolving names and
//! compiling patterns, with errors that name the path too.

pub mod raw;
mod validate;

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use regex::Regex;

use crate::codec::{Limits, Protocol};
use crate::model::Source;
use crate::queue::WhenFull;
use crate::rate::WhenLimited;
use crate::translate::Translation;

pub use validate::{glob_to_regex, validate};

/// Default `batch.max_points`, as carbon's relay (`MAX_DATAPOINTS_PER_MESSAGE`).
pub const DEFAULT_BATCH_POINTS: usize = 500;
/// Default `batch.max_delay`.
pub const DEFAULT_BATCH_DELAY: Duration = Duration::from_millis(200);
/// Default `queue.max_points`.
pub const DEFAULT_QUEUE_POINTS: usize = 1_000_000;
/// Default `queue.max_bytes`: room for the default point count at about
/// 256 bytes a point, so the point bound usually decides.
pub const DEFAULT_QUEUE_BYTES: usize = 256 << 20;
/// Default first reconnect backoff.
pub const DEFAULT_RETRY_INITIAL: Duration = Duration::from_millis(100);
/// Default reconnect backoff cap.
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(30);
/// Default connection attempt timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default drain time on shutdown.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Default `max_connections` per TCP listener.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Default idle time before a listener closes a TCP connection (carbon
/// has none; an hour frees abandoned connections without troubling
/// agents that send every minute).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// KairosDB's `max_command_size`.
pub const DEFAULT_TELNET_LINE_BYTES: usize = 1024;
/// Default largest HTTP request body.
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 << 20;
/// Default largest decompressed HTTP body.
pub const DEFAULT_MAX_DECOMPRESSED_BYTES: usize = 64 << 20;
/// Default time limit of one request to an HTTP listener: slow or stalled
/// clients cannot hold a connection and its buffers for longer.
pub const DEFAULT_LISTENER_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Default HTTP requests in flight per upstream.
pub const DEFAULT_HTTP_CONCURRENCY: usize = 4;
/// Default time limit of one HTTP request to an upstream.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The validated relay configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where `/metrics` and `/health` are served, if anywhere.
    pub admin: Option<SocketAddr>,
    /// Inputs.
    pub listeners: Vec<ListenerConfig>,
    /// Outputs; routes refer to them by index.
    pub upstreams: Vec<UpstreamConfig>,
    /// Groups of upstreams; routes refer to them by index.
    pub clusters: Vec<ClusterConfig>,
    /// Routing rules in evaluation order.
    pub routes: Vec<RouteConfig>,
    /// Drain time on shutdown.
    pub shutdown_grace: Duration,
}

/// One input.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// Unique name.
    pub name: String,
    /// Wire protocol.
    pub protocol: Protocol,
    /// TCP (and UDP) address; unused by amqp listeners.
    pub listen: SocketAddr,
    /// amqp: broker and queue settings.
    pub amqp: Option<AmqpListenerConfig>,
    /// http: answer only once points are delivered or spooled.
    pub ack_safe: bool,
    /// http: most time one request may take, body upload included.
    pub request_timeout: Duration,
    /// Whether to also listen on UDP.
    pub udp: bool,
    /// Decoder limits.
    pub limits: Limits,
    /// Most simultaneous TCP connections.
    pub max_connections: usize,
    /// kairosdb_telnet: the tag given to points without tags.
    pub default_tag: Option<(String, String)>,
    /// http: largest request body.
    pub max_body_bytes: usize,
    /// http: largest body after decompression.
    pub max_decompressed_bytes: usize,
    /// Points per second per peer address, and what to do above it.
    pub rate_limit: Option<(NonZeroU32, WhenLimited)>,
    /// Close TCP connections that send nothing for this long.
    pub idle_timeout: Duration,
}

/// What an amqp listener consumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmqpListenerConfig {
    /// Broker URL.
    pub url: String,
    /// Topic exchange, declared as carbon declares it (durable).
    pub exchange: String,
    /// Durable queue name; `None` for an exclusive server-named queue.
    pub queue: Option<String>,
    /// Binding keys.
    pub bind_patterns: Vec<String>,
    /// Body lines carry the metric name (`metric value timestamp`).
    pub metric_name_in_body: bool,
    /// Most unacknowledged messages (the backpressure window).
    pub prefetch: u16,
}

/// How an amqp upstream lays points out in messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AmqpBody {
    /// One message per point: routing key = name, body `value timestamp`.
    Carbon,
    /// Plaintext `metric value timestamp` lines, many per message.
    PlaintextLines,
    /// Another output protocol's encoding (pickle without its length header).
    Encoded(Protocol),
}

/// Where and how an amqp upstream publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmqpUpstreamConfig {
    /// Broker URL.
    pub url: String,
    /// Topic exchange.
    pub exchange: String,
    /// Body layout.
    pub body: AmqpBody,
    /// Routing key of multi-point bodies.
    pub routing_key: String,
    /// Declare the exchange (topic, durable) before publishing.
    pub declare: bool,
}

/// One output.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Unique name.
    pub name: String,
    /// The protocol key from the file.
    pub protocol: Protocol,
    /// The encoding written (the protocol, or `format` for files).
    pub format: Protocol,
    /// Where the bytes go.
    pub target: Target,
    /// Chunking.
    pub batch: BatchConfig,
    /// Bounded queue.
    pub queue: QueueConfig,
    /// Backoff between failed attempts.
    pub retry: RetryConfig,
    /// How long one connection attempt may take.
    pub connect_timeout: Duration,
    /// How points are reshaped for this target.
    pub translation: Translation,
    /// kairosdb_telnet: write `putm` instead of `put`.
    pub telnet_putm: bool,
    /// kairosdb_telnet: longest line written.
    pub max_line_bytes: usize,
    /// HTTP upstreams: gzip request bodies.
    pub gzip: bool,
    /// HTTP upstreams: time limit of one request.
    pub request_timeout: Duration,
    /// HTTP upstreams: requests in flight at once.
    pub concurrency: usize,
    /// Points per second sent to the upstream.
    pub rate_limit: Option<NonZeroU32>,
    /// IRONdb upstreams: the check identity of points that carry none.
    pub check: Option<Arc<Source>>,
    /// irondb_flatbuffer: write the current `CMLS` generation, not `CIML`.
    pub flatbuffer_cmls: bool,
    /// HTTP upstreams: send with PUT rather than POST.
    pub http_put: bool,
    /// Disk spool, if configured.
    pub spool: Option<SpoolConfig>,
}

/// `spool:` of an upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct SpoolConfig {
    /// Directory of the segment files.
    pub dir: PathBuf,
    /// Most bytes on disk.
    pub max_bytes: u64,
    /// When spooled bytes are synced to disk.
    pub fsync: Fsync,
    /// Replay speed in points per second.
    pub replay_points_per_second: NonZeroU32,
    /// Delete the oldest segment when full (else wait for room).
    pub drop_oldest_when_full: bool,
}

/// When spooled bytes reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// Before a spooled batch counts as safe.
    EveryBatch,
    /// At most this long after it was written.
    Interval(Duration),
    /// When the OS decides.
    Never,
}

/// Default AMQP exchange (carbon's `AMQP_EXCHANGE`).
pub const DEFAULT_AMQP_EXCHANGE: &str = "graphite";
/// Default AMQP queue of an amqp listener.
pub const DEFAULT_AMQP_QUEUE: &str = "tsrelay";
/// Default prefetch of an amqp listener.
pub const DEFAULT_AMQP_PREFETCH: u16 = 1000;
/// Default routing key of multi-point amqp bodies.
pub const DEFAULT_AMQP_ROUTING_KEY: &str = "tsrelay";

/// `host:port` of an `amqp://` URL (port 5672 when none is given), for
/// logs and as the peer an amqp listener reports: never the credentials.
pub fn amqp_broker(url: &str) -> String {
    let rest = url.strip_prefix("amqp://").unwrap_or(url);
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let has_port = !host_port.ends_with(']')
        && host_port
            .rsplit_once(':')
            .is_some_and(|(_, port)| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()));
    match (host_port.is_empty(), has_port) {
        (true, _) => "localhost:5672".to_owned(),
        (false, true) => host_port.to_owned(),
        (false, false) => format!("{host_port}:5672"),
    }
}

/// Default `spool.max_bytes`.
pub const DEFAULT_SPOOL_BYTES: u64 = 1 << 30;
/// Default `spool.replay_points_per_second`.
pub const DEFAULT_REPLAY_POINTS_PER_SECOND: u32 = 50_000;
/// Default `spool.fsync_interval`.
pub const DEFAULT_FSYNC_INTERVAL: Duration = Duration::from_secs(1);

/// Where an upstream sends its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A persistent TCP connection to `host:port`.
    Tcp(String),
    /// Datagrams to `host:port`.
    Udp(String),
    /// Appends to a file.
    File(PathBuf),
    /// Writes to standard output.
    Stdout,
    /// POSTs to an HTTP URL.
    Http(String),
    /// Publishes to an AMQP broker.
    Amqp(AmqpUpstreamConfig),
}

/// `batch:` of an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchConfig {
    /// Most points per chunk (one pickle frame, one write).
    pub max_points: usize,
    /// Longest wait for a partial chunk.
    pub max_delay: Duration,
}

/// `queue:` of an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueConfig {
    /// Capacity in points.
    pub max_points: usize,
    /// Capacity in bytes of batch memory.
    pub max_bytes: usize,
    /// Overflow policy.
    pub when_full: WhenFull,
}

/// `retry:` of an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryConfig {
    /// First backoff.
    pub initial: Duration,
    /// Backoff cap.
    pub max: Duration,
}

/// One routing rule.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// Conditions that must all hold (empty for a default route).
    pub matchers: Vec<Matcher>,
    /// Whether this route only takes points no other route matched.
    pub default: bool,
    /// Applied when the route matches, before its sends.
    pub rewrite: Option<Rewrite>,
    /// Where matching points go.
    pub to: Vec<Destination>,
    /// Stop after this route matched.
    pub stop: bool,
}

/// A route's target: an upstream or a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// Index into [`Config::upstreams`].
    Upstream(usize),
    /// Index into [`Config::clusters`].
    Cluster(usize),
}

/// One condition on a point: on its path (its name without `;tags`) or its tags.
#[derive(Debug, Clone)]
pub enum Matcher {
    /// The path starts with the text.
    Prefix(String),
    /// The regex finds a match in the path.
    Regex(Regex),
    /// The path matches the Graphite glob (compiled to an anchored regex).
    Glob {
        /// The glob as written.
        pattern: String,
        /// Its compiled form.
        regex: Regex,
    },
    /// A condition on one tag.
    Tag(TagMatcher),
}

impl Matcher {
    /// True when the point's path (and tags) satisfy the condition.
    pub fn matches<'a>(&self, path: &str, tags: impl Iterator<Item = (&'a str, &'a str)>) -> bool {
        match self {
            Matcher::Prefix(prefix) => path.starts_with(prefix.as_str()),
            Matcher::Regex(regex) | Matcher::Glob { regex, .. } => regex.is_match(path),
            Matcher::Tag(tag) => tag.matches(tags),
        }
    }
}

/// A condition on a tag.
#[derive(Debug, Clone)]
pub enum TagMatcher {
    /// `key`: the tag is present.
    Exists(String),
    /// `key=value`: the tag has this value.
    Equals(String, String),
    /// `key=~regex`: the tag's value contains a match.
    Regex(String, Regex),
}

impl TagMatcher {
    /// True when the tags satisfy the condition.
    pub fn matches<'a>(&self, mut tags: impl Iterator<Item = (&'a str, &'a str)>) -> bool {
        match self {
            TagMatcher::Exists(key) => tags.any(|(k, _)| k == key),
            TagMatcher::Equals(key, value) => tags.any(|(k, v)| k == key && v == value),
            TagMatcher::Regex(key, regex) => tags.any(|(k, v)| k == key && regex.is_match(v)),
        }
    }
}

/// What a route changes in a point.
#[derive(Debug, Clone, Default)]
pub struct Rewrite {
    /// Regex searched in the path and its replacement (`${1}` form).
    pub path: Option<(Regex, String)>,
    /// Tags removed.
    pub remove_tags: Vec<String>,
    /// Tags renamed (old key, new key).
    pub rename_tags: Vec<(String, String)>,
    /// Tags added or overwritten.
    pub add_tags: Vec<(String, String)>,
}

/// A group of upstreams.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Unique name.
    pub name: String,
    /// How members are chosen.
    pub kind: ClusterKind,
    /// Copies per point (hash clusters).
    pub replication: usize,
    /// Replicas on distinct hosts (carbon's DIVERSE_REPLICAS).
    pub diverse_replicas: bool,
    /// What is hashed.
    pub hash_key: HashKey,
    /// The members in configuration order.
    pub members: Vec<Member>,
}

/// A cluster member: an upstream plus the ring identity carbon gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Index into [`Config::upstreams`].
    pub upstream: usize,
    /// The host as written in the upstream's address.
    pub host: String,
    /// The port as written.
    pub port: u16,
    /// Carbon's instance, if any.
    pub instance: Option<String>,
}

/// How a cluster chooses members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterKind {
    /// Every member.
    Fanout,
    /// The first healthy member.
    Failover,
    /// One member by name hash; an unhealthy member's share is re-hashed.
    AnyOf,
    /// Python carbon's ConsistentHashRing (md5, with the position collision fix).
    CarbonCh,
    /// carbon-c-relay's carbon_ch ring.
    CarbonChCcr,
    /// FNV-1a ring with carbon's or carbon-c-relay's replica keys.
    Fnv1aCh(Fnv1aKeys),
    /// carbon-c-relay's jump_fnv1a_ch.
    Jump,
}

/// Whose fnv1a_ch replica keys a ring uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fnv1aKeys {
    /// Python carbon: `"%d-%s" % (i, instance)`.
    Carbon,
    /// carbon-c-relay.
    CarbonCRelay,
}

/// What a hash cluster hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashKey {
    /// The whole name, tags in carbon's order (carbon with TAG_RELAY_NORMALIZED).
    Name,
    /// The path before `;` (the carbon-c-relay daemon).
    Path,
}

/// A configuration problem, with the YAML path it concerns.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The YAML does not fit the schema.
    #[error("{path}: {message}")]
    Parse {
        /// YAML path of the problem.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A value is not acceptable.
    #[error("{path}: {message}")]
    Invalid {
        /// YAML path of the problem.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// Reads and validates a configuration file.
///
/// # Errors
/// [`ConfigError`] naming the file, or the YAML path and the problem.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text)
}

/// Parses and validates configuration text.
///
/// # Errors
/// [`ConfigError`] naming the YAML path and the problem.
pub fn parse(text: &str) -> Result<Config, ConfigError> {
    let deserializer = serde_yaml_ng::Deserializer::from_str(text);
    let raw: raw::RawConfig = serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let path = display_path(&err.path().to_string());
        let message = err.inner().to_string();
        // The YAML library prefixes its own (shorter) path; keep one.
        let message = match message.split_once(": ") {
            Some((head, rest)) if path.starts_with(head) => rest.to_owned(),
            _ => message,
        };
        ConfigError::Parse { path, message }
    })?;
    validate(raw)
}

fn display_path(path: &str) -> String {
    if path.is_empty() || path == "." {
        "(top level)".to_owned()
    } else {
        path.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::amqp_broker;

    #[test]
    fn amqp_broker_labels_leave_credentials_out() {
        let cases = [
            ("amqp://guest:secret@127.0.0.1:5672/%2f", "127.0.0.1:5672"),
            (
                "amqp://rabbit.example/vhost?heartbeat=10",
                "rabbit.example:5672",
            ),
            ("amqp://u@[::1]:5673", "[::1]:5673"),
            ("amqp://[::1]/", "[::1]:5672"),
            ("amqp://", "localhost:5672"),
        ];
        for (url, label) in cases {
            assert_eq!(amqp_broker(url), label, "{url}");
        }
    }
}
