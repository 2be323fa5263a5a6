//! The serde mirror of relay.yaml: field names as operators write them,
//! unknown keys rejected, no logic beyond parsing scalars.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use crate::codec::Protocol;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Admin HTTP listener.
    pub admin: Option<RawAdmin>,
    /// Inputs.
    #[serde(default)]
    pub listeners: Vec<RawListener>,
    /// Outputs.
    #[serde(default)]
    pub upstreams: Vec<RawUpstream>,
    /// Groups of upstreams usable wherever an upstream name is.
    #[serde(default)]
    pub clusters: Vec<RawCluster>,
    /// Routing rules, in order.
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    /// Shutdown behaviour.
    pub shutdown: Option<RawShutdown>,
}

/// `admin:`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// `ip:port` to serve `/metrics` and `/health` on.
    pub listen: String,
}

/// `shutdown:`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShutdown {
    /// How long queues may drain after SIGTERM/SIGINT.
    pub grace: Option<HumanDuration>,
}

/// One entry of `listeners:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    /// Unique name, used in metrics.
    pub name: String,
    /// Wire protocol.
    pub protocol: Protocol,
    /// `ip:port` to listen on (every protocol but amqp).
    pub listen: Option<String>,
    /// http: most time one request may take, body upload included.
    pub request_timeout: Option<HumanDuration>,
    /// http: answer once points are `queued` (default) or `safe` (delivered or spooled).
    pub ack: Option<RawAck>,
    /// amqp: broker URL, `amqp://user:pass@host:port/vhost`.
    pub url: Option<String>,
    /// amqp: topic exchange to bind to (default `graphite`).
    pub exchange: Option<String>,
    /// amqp: durable queue name (default `tsrelay`).
    pub queue: Option<String>,
    /// amqp: use an exclusive server-named queue instead, as carbon does.
    pub exclusive_queue: Option<bool>,
    /// amqp: binding keys (default `["#"]`).
    pub bind_patterns: Option<Vec<String>>,
    /// amqp: body lines are `metric value timestamp` (else the routing key is the name).
    pub metric_name_in_body: Option<bool>,
    /// amqp: most unacknowledged messages.
    pub prefetch: Option<u16>,
    /// Also listen on UDP (graphite_plaintext only).
    #[serde(default)]
    pub udp: bool,
    /// Longest accepted line.
    pub max_line_length: Option<usize>,
    /// Largest accepted pickle frame.
    pub max_frame_bytes: Option<ByteSize>,
    /// Most simultaneous TCP connections.
    pub max_connections: Option<usize>,
    /// kairosdb_telnet: tag given to points without tags (`k=v`, or `""` for none).
    pub default_tag: Option<String>,
    /// http: largest request body accepted.
    pub max_body_bytes: Option<ByteSize>,
    /// http: largest body after gzip decompression.
    pub max_decompressed_bytes: Option<ByteSize>,
    /// Points per second per peer address.
    pub rate_limit: Option<RawListenerRate>,
    /// TCP listeners: close a connection that sends nothing for this long.
    pub idle_timeout: Option<HumanDuration>,
}

/// `listeners[].ack`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RawAck {
    /// Answer once the points are queued.
    Queued,
    /// Answer once every copy is delivered or written to a spool.
    Safe,
}

/// `listeners[].rate_limit`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListenerRate {
    /// Points per second each peer address may send.
    pub points_per_second_per_peer: u32,
    /// `drop` (count the excess) or `throttle` (pause reading).
    pub when_exceeded: Option<crate::rate::WhenLimited>,
}

/// `upstreams[].rate_limit`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamRate {
    /// Points per second sent to the upstream.
    pub points_per_second: u32,
}

/// One entry of `upstreams:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    /// Unique name, used by routes and in metrics.
    pub name: String,
    /// Output protocol.
    pub protocol: Protocol,
    /// `host:port` of a TCP or UDP upstream.
    pub address: Option<String>,
    /// URL of an HTTP upstream.
    pub url: Option<String>,
    /// Send datagrams instead of a TCP stream (graphite_plaintext only).
    #[serde(default)]
    pub udp: bool,
    /// File path for `protocol: file`; `-` is stdout.
    pub path: Option<String>,
    /// Text format for `protocol: file`.
    pub format: Option<Protocol>,
    /// Chunking.
    pub batch: Option<RawBatch>,
    /// Bounded queue.
    pub queue: Option<RawQueue>,
    /// Reconnect and resend backoff.
    pub retry: Option<RawRetry>,
    /// How long one connection attempt may take.
    pub connect_timeout: Option<HumanDuration>,
    /// Graphite templates lifting path segments into tags (tagged targets).
    #[serde(default)]
    pub templates: Vec<String>,
    /// Static tags added to every point that lacks them.
    #[serde(default)]
    pub add_tags: BTreeMap<String, String>,
    /// Tag given to points that still have none (`k=v`).
    pub default_tag: Option<String>,
    /// Graphite targets: keep, drop or flatten tags.
    pub graphite_tags: Option<RawGraphiteTags>,
    /// Pattern for `graphite_tags: flatten`, e.g. `servers.{host}.{name}`.
    pub flatten_template: Option<String>,
    /// kairosdb_telnet: `put` (default) or `putm`.
    pub telnet_command: Option<RawTelnetCommand>,
    /// kairosdb_telnet: longest line written.
    pub max_line_length: Option<usize>,
    /// HTTP upstreams: compress bodies (default true).
    pub gzip: Option<bool>,
    /// HTTP upstreams: time limit of one request.
    pub request_timeout: Option<HumanDuration>,
    /// HTTP upstreams: requests in flight at once.
    pub concurrency: Option<usize>,
    /// Points per second sent to the upstream.
    pub rate_limit: Option<RawUpstreamRate>,
    /// IRONdb upstreams: the check identity of points that carry none.
    pub check: Option<RawCheck>,
    /// irondb_flatbuffer: `ciml` (legacy, default) or `cmls` (current).
    pub flatbuffer_schema: Option<RawFlatbufferSchema>,
    /// irondb_raw: `post` (default) or `put`.
    pub method: Option<RawMethod>,
    /// Graphite and KairosDB upstreams: what becomes of histograms.
    pub histograms: Option<RawHistograms>,
    /// Disk spool for points the upstream cannot take now.
    pub spool: Option<RawSpool>,
    /// amqp: topic exchange published to (default `graphite`).
    pub exchange: Option<String>,
    /// amqp: `carbon`, `plaintext_lines` or an output protocol name.
    pub body: Option<String>,
    /// amqp: routing key of multi-point bodies (default `tsrelay`).
    pub routing_key: Option<String>,
    /// amqp: declare the exchange (default true).
    pub declare: Option<bool>,
}

/// `upstreams[].spool`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSpool {
    /// Directory of the segment files (one upstream per directory).
    pub dir: String,
    /// Most bytes on disk.
    pub max_bytes: Option<ByteSize>,
    /// `every_batch` (default), `interval` or `never`.
    pub fsync: Option<RawFsync>,
    /// For `fsync: interval`: how often.
    pub fsync_interval: Option<HumanDuration>,
    /// Replay speed once the upstream is back, so a backlog does not flatten it.
    pub replay_points_per_second: Option<u32>,
    /// When the spool is full: `drop_oldest` (default, counted) or `block`.
    pub when_full: Option<RawSpoolFull>,
}

/// `upstreams[].spool.fsync`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RawFsync {
    /// Sync before a spooled batch counts as safe.
    EveryBatch,
    /// Sync every `fsync_interval`.
    Interval,
    /// Leave it to the OS.
    Never,
}

/// `upstreams[].spool.when_full`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RawSpoolFull {
    /// Delete the oldest segment (counted).
    DropOldest,
    /// Wait for room.
    Block,
}

/// `upstreams[].check`: an IRONdb check identity.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCheck {
    /// IRONdb account id.
    pub account_id: i32,
    /// Check UUID.
    pub check_uuid: String,
    /// Check name.
    pub check_name: String,
    /// Check target (host).
    pub target: Option<String>,
    /// Check module.
    pub module: Option<String>,
}

/// `upstreams[].flatbuffer_schema`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RawFlatbufferSchema {
    /// Legacy generation, identifier `CIML` (gosnowth, IRONdb docs).
    Ciml,
    /// Current reconnoiter generation, identifier `CMLS`.
    Cmls,
}

/// `upstreams[].method`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RawMethod {
    /// HTTP POST.
    Post,
    /// HTTP PUT.
    Put,
}

/// `upstreams[].histograms`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHistograms {
    /// `summary` (default) or `drop`.
    pub mode: Option<RawHistogramMode>,
    /// Summary series written, among count, sum, mean, min, max.
    pub stats: Option<Vec<String>>,
    /// Quantiles written as `.p50`, `.p99`, `.p99_9` series.
    pub quantiles: Option<Vec<f64>>,
}

/// `upstreams[].histograms.mode`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RawHistogramMode {
    /// Write summary series.
    Summary,
    /// Drop histograms (counted).
    Drop,
}

/// `upstreams[].graphite_tags`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RawGraphiteTags {
    /// `name;k=v` in carbon's order.
    Keep,
    /// Tags are dropped.
    Drop,
    /// Tag values are put into the path.
    Flatten,
}

/// `upstreams[].telnet_command`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RawTelnetCommand {
    /// `put` with 13-digit millisecond timestamps.
    Put,
    /// `putm`.
    Putm,
}

/// `batch:`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBatch {
    /// Most points per chunk.
    pub max_points: Option<usize>,
    /// Longest wait for a chunk to fill.
    pub max_delay: Option<HumanDuration>,
}

/// `queue:`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQueue {
    /// Capacity in points.
    pub max_points: Option<usize>,
    /// Capacity in bytes of batch memory.
    pub max_bytes: Option<ByteSize>,
    /// What to do when full.
    pub when_full: Option<crate::queue::WhenFull>,
}

/// `retry:`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    /// First backoff.
    pub initial: Option<HumanDuration>,
    /// Backoff cap.
    pub max: Option<HumanDuration>,
}

/// One entry of `routes:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Conditions that must all hold.
    #[serde(rename = "match")]
    pub matcher: Option<RawMatch>,
    /// Applies only to points no other route matched.
    #[serde(default)]
    pub default: bool,
    /// Rewrite applied when the route matches, before sending; later
    /// routes see the rewritten point.
    pub rewrite: Option<RawRewrite>,
    /// Upstream or cluster names.
    #[serde(default)]
    pub to: Vec<String>,
    /// Stop evaluating later routes once this one matched.
    #[serde(default)]
    pub stop: bool,
}

/// `match:`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    /// The path starts with this text.
    pub prefix: Option<String>,
    /// The path contains a match of this regex (anchor it to anchor).
    pub regex: Option<String>,
    /// The whole path matches this Graphite glob.
    pub glob: Option<String>,
    /// Tag conditions: `key`, `key=value` or `key=~regex`.
    pub tag: Option<OneOrMany<String>>,
}

/// One rewrite of a route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRewrite {
    /// Regex searched in the path.
    pub regex: Option<String>,
    /// Replacement; `\1` and `${1}` refer to capture groups.
    pub replace: Option<String>,
    /// Tags to add (or overwrite).
    #[serde(default)]
    pub add_tags: BTreeMap<String, String>,
    /// Tags to remove.
    #[serde(default)]
    pub remove_tags: Vec<String>,
    /// Tags to rename, old key to new key.
    #[serde(default)]
    pub rename_tags: BTreeMap<String, String>,
}

/// One entry of `clusters:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    /// Unique name among upstreams and clusters.
    pub name: String,
    /// How members are chosen.
    #[serde(rename = "type")]
    pub kind: RawClusterKind,
    /// Copies per point for hash clusters.
    pub replication: Option<usize>,
    /// Carbon's DIVERSE_REPLICAS: replicas on distinct hosts.
    pub diverse_replicas: Option<bool>,
    /// What is hashed: the whole tagged name or the path before `;`.
    pub hash_key: Option<RawHashKey>,
    /// For fnv1a_ch: whose ring keys to build.
    pub fnv1a_keys: Option<RawFnv1aKeys>,
    /// Upstreams in the cluster.
    pub members: Vec<RawMember>,
}

/// A cluster member.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMember {
    /// Upstream name.
    pub upstream: String,
    /// Carbon's instance name (`host:port:instance`).
    pub instance: Option<String>,
}

/// `clusters[].type`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RawClusterKind {
    /// Every member.
    Fanout,
    /// The first healthy member.
    Failover,
    /// One member, sticky by name hash, re-hashed around unhealthy members.
    AnyOf,
    /// Carbon's consistent hash ring.
    CarbonCh,
    /// carbon-c-relay's carbon_ch.
    CarbonChCcr,
    /// FNV-1a consistent hash ring.
    Fnv1aCh,
    /// Jump consistent hash over FNV-1a.
    Jump,
}

/// `clusters[].hash_key`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RawHashKey {
    /// The whole name with `;tags` in carbon's order.
    Name,
    /// The path before `;`.
    Path,
}

/// `clusters[].fnv1a_keys`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RawFnv1aKeys {
    /// Python carbon's replica keys.
    Carbon,
    /// carbon-c-relay's replica keys.
    CarbonCRelay,
}

/// A YAML value that may be one item or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    /// A single item.
    One(T),
    /// A list.
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    /// The items as a list.
    pub fn into_vec(self) -> Vec<T> {
        match self {
            OneOrMany::One(item) => vec![item],
            OneOrMany::Many(items) => items,
        }
    }
}

/// A duration written as `200ms`, `5s`, `1m30s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text)
            .map(HumanDuration)
            .map_err(|err| de::Error::custom(format!("invalid duration {text:?}: {err}")))
    }
}

/// A size written as a number of bytes or with a unit (`64KiB`, `1MiB`, `10GB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a byte count such as 1048576 or 1MiB")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                parse_byte_size(v)
                    .map(ByteSize)
                    .ok_or_else(|| E::custom(format!("invalid size {v:?}")))
            }
        }
        deserializer.deserialize_any(SizeVisitor)
    }
}

/// Parses `1234`, `64KiB`, `1MiB`, `10GiB`, `5MB`.
pub fn parse_byte_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let multiplier: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        _ => return None,
    };
    number.checked_mul(multiplier)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_byte_size("1048576"), Some(1_048_576));
        assert_eq!(parse_byte_size("64MiB"), Some(64 << 20));
        assert_eq!(parse_byte_size("10GiB"), Some(10 << 30));
        assert_eq!(parse_byte_size("5 MB"), Some(5_000_000));
        assert_eq!(parse_byte_size("5 parsecs"), None);
        assert_eq!(parse_byte_size("MiB"), None);
    }
}
