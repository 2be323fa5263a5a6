//! The relay's own metrics: typed handles registered once at start-up.
//!
//! Components receive their handles (cheap `Arc` clones of atomics) and
//! never look a metric up by name on the hot path. Label values come from
//! the configuration (listener and upstream names) and from fixed reason
//! sets, never from the data, so cardinality is bounded.

use std::sync::Arc;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::codec::{Reason, Unrepresentable};

type Labels = Vec<(&'static str, String)>;

/// Builds the registry and hands out per-component handles.
pub struct TelemetryBuilder {
    registry: Registry,
    received: Family<Labels, Counter>,
    bytes: Family<Labels, Counter>,
    rejected: Family<Labels, Counter>,
    connections: Family<Labels, Counter>,
    active: Family<Labels, Gauge>,
    closed_on_error: Family<Labels, Counter>,
    closed_idle: Family<Labels, Counter>,
    listener_dropped: Family<Labels, Counter>,
    routed: Family<Labels, Counter>,
    sent: Family<Labels, Counter>,
    dropped: Family<Labels, Counter>,
    retried: Family<Labels, Counter>,
    send_errors: Family<Labels, Counter>,
    connects: Family<Labels, Counter>,
    remote_errors: Family<Labels, Counter>,
    spooled: Family<Labels, Counter>,
    replayed: Family<Labels, Counter>,
    torn: Family<Labels, Counter>,
    spool_points: Family<Labels, Gauge>,
    spool_bytes: Family<Labels, Gauge>,
    misdirected: Family<Labels, Counter>,
    connected: Family<Labels, Gauge>,
    depth: Family<Labels, Gauge>,
    unrouted: Counter,
}

/// The finished registry, rendered by the admin listener.
#[derive(Clone)]
pub struct Telemetry {
    registry: Arc<Registry>,
}

/// Handles for one listener.
#[derive(Clone, Debug)]
pub struct ListenerMetrics {
    /// Points decoded and handed to the router.
    pub points_received: Counter,
    /// Bytes read from sockets.
    pub bytes_received: Counter,
    /// Records rejected, by reason (indexed like [`Reason::ALL`]).
    pub points_rejected: Vec<Counter>,
    /// Connections accepted.
    pub connections_accepted: Counter,
    /// Connections open now.
    pub connections_active: Gauge,
    /// Connections closed because their framing was lost.
    pub connections_closed_on_error: Counter,
    /// Valid points dropped because their peer exceeded the rate limit.
    pub points_rate_limited: Counter,
    /// Connections closed after sending nothing for `idle_timeout`.
    pub connections_closed_idle: Counter,
}

/// Handles for one upstream.
#[derive(Clone, Debug)]
pub struct UpstreamMetrics {
    /// Points routed to this upstream (before queueing).
    pub points_routed: Counter,
    /// Points written to the upstream.
    pub points_sent: Counter,
    /// Points dropped because the queue was full.
    pub dropped_queue_full: Counter,
    /// Points abandoned at shutdown.
    pub dropped_shutdown: Counter,
    /// Points the upstream refused for good (HTTP 4xx).
    pub dropped_rejected: Counter,
    /// Points the output format could not carry, by reason (indexed like [`Unrepresentable::ALL`]).
    pub dropped_unrepresentable: Vec<Counter>,
    /// Points whose send failed and was retried.
    pub points_retried: Counter,
    /// Failed connection attempts and writes.
    pub send_errors: Counter,
    /// Successful connections.
    pub connects: Counter,
    /// 1 while connected.
    pub connected: Gauge,
    /// Points queued or in flight.
    pub queue_depth: Gauge,
    /// Records an IRONdb upstream answered it could not store.
    pub remote_errors: Counter,
    /// Records an IRONdb node answered it does not own.
    pub misdirected: Counter,
    /// Points written to the disk spool.
    pub points_spooled: Counter,
    /// Spooled points delivered on replay.
    pub points_replayed: Counter,
    /// Points in the spool not yet delivered.
    pub spool_points: Gauge,
    /// Bytes of the spool's segment files.
    pub spool_bytes: Gauge,
    /// Points dropped because the spool was full (`spool.when_full: drop_oldest`).
    pub dropped_spool_full: Counter,
    /// Points lost to a spool that could not be written or read.
    pub dropped_spool_error: Counter,
    /// Torn records cut off when a spool was recovered after a crash.
    pub spool_torn_records: Counter,
}

/// Handles for the router.
#[derive(Clone, Debug)]
pub struct RouterMetrics {
    /// Points that matched no route and no default route.
    pub points_unrouted: Counter,
}

impl Default for TelemetryBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl TelemetryBuilder {
    /// Registers every metric family.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tsrelay");
        let mut family = |name: &str, help: &str| {
            let family = Family::<Labels, Counter>::default();
            registry.register(name, help, family.clone());
            family
        };
        let received = family("listener_points_received", "Points decoded by a listener");
        let bytes = family("listener_bytes_received", "Bytes read by a listener");
        let rejected = family(
            "listener_points_rejected",
            "Input records rejected, by reason",
        );
        let connections = family("listener_connections_accepted", "Connections accepted");
        let closed_on_error = family(
            "listener_connections_closed_on_error",
            "Connections closed because their framing was lost",
        );
        let closed_idle = family(
            "listener_connections_closed_idle",
            "Connections closed after idle_timeout without data",
        );
        let listener_dropped = family(
            "listener_points_dropped",
            "Valid points a listener dropped, by reason",
        );
        let routed = family("upstream_points_routed", "Points routed to an upstream");
        let sent = family("upstream_points_sent", "Points written to an upstream");
        let dropped = family("upstream_points_dropped", "Points dropped, by reason");
        let retried = family(
            "upstream_points_retried",
            "Points re-sent after a failed send",
        );
        let send_errors = family("upstream_send_errors", "Failed connects and writes");
        let connects = family("upstream_connects", "Successful connections to an upstream");
        let remote_errors = family(
            "upstream_remote_errors",
            "Records an IRONdb upstream reported as errors in its answer",
        );
        let misdirected = family(
            "upstream_remote_misdirected",
            "Records an IRONdb node reported it does not own",
        );
        let spooled = family(
            "upstream_points_spooled",
            "Points written to the disk spool",
        );
        let replayed = family(
            "upstream_points_replayed",
            "Spooled points delivered on replay",
        );
        let torn = family(
            "upstream_spool_torn_records",
            "Torn records cut off when a spool was recovered",
        );
        let mut gauge = |name: &str, help: &str| {
            let family = Family::<Labels, Gauge>::default();
            registry.register(name, help, family.clone());
            family
        };
        let active = gauge("listener_connections_active", "Open connections");
        let connected = gauge("upstream_connected", "1 while the upstream is connected");
        let depth = gauge("upstream_queue_points", "Points queued or in flight");
        let spool_points = gauge(
            "upstream_spool_points",
            "Points in the spool not yet delivered",
        );
        let spool_bytes = gauge("upstream_spool_bytes", "Bytes of the spool's segment files");
        let unrouted = Counter::default();
        registry.register(
            "points_unrouted",
            "Points that matched no route",
            unrouted.clone(),
        );
        Self {
            registry,
            received,
            bytes,
            rejected,
            connections,
            active,
            closed_on_error,
            closed_idle,
            listener_dropped,
            routed,
            sent,
            dropped,
            retried,
            send_errors,
            connects,
            remote_errors,
            misdirected,
            spooled,
            replayed,
            torn,
            spool_points,
            spool_bytes,
            connected,
            depth,
            unrouted,
        }
    }

    /// Handles for the listener `name`.
    pub fn listener(&self, name: &str) -> ListenerMetrics {
        let labels = || vec![("listener", name.to_owned())];
        let with_reason = |reason: &str| {
            let mut labels = labels();
            labels.push(("reason", reason.to_owned()));
            labels
        };
        ListenerMetrics {
            points_received: self.received.get_or_create(&labels()).clone(),
            bytes_received: self.bytes.get_or_create(&labels()).clone(),
            points_rejected: Reason::ALL
                .iter()
                .map(|reason| {
                    self.rejected
                        .get_or_create(&with_reason(reason.as_str()))
                        .clone()
                })
                .collect(),
            connections_accepted: self.connections.get_or_create(&labels()).clone(),
            connections_active: self.active.get_or_create(&labels()).clone(),
            connections_closed_on_error: self.closed_on_error.get_or_create(&labels()).clone(),
            connections_closed_idle: self.closed_idle.get_or_create(&labels()).clone(),
            points_rate_limited: self
                .listener_dropped
                .get_or_create(&with_reason("rate_limited"))
                .clone(),
        }
    }

    /// Handles for the upstream `name`.
    pub fn upstream(&self, name: &str) -> UpstreamMetrics {
        let labels = || vec![("upstream", name.to_owned())];
        let dropped = |reason: &str| {
            let mut labels = labels();
            labels.push(("reason", reason.to_owned()));
            self.dropped.get_or_create(&labels).clone()
        };
        UpstreamMetrics {
            points_routed: self.routed.get_or_create(&labels()).clone(),
            points_sent: self.sent.get_or_create(&labels()).clone(),
            dropped_queue_full: dropped("queue_full"),
            dropped_shutdown: dropped("shutdown"),
            dropped_rejected: dropped("rejected"),
            dropped_unrepresentable: Unrepresentable::ALL
                .iter()
                .map(|reason| dropped(reason.as_str()))
                .collect(),
            points_retried: self.retried.get_or_create(&labels()).clone(),
            send_errors: self.send_errors.get_or_create(&labels()).clone(),
            connects: self.connects.get_or_create(&labels()).clone(),
            connected: self.connected.get_or_create(&labels()).clone(),
            queue_depth: self.depth.get_or_create(&labels()).clone(),
            remote_errors: self.remote_errors.get_or_create(&labels()).clone(),
            misdirected: self.misdirected.get_or_create(&labels()).clone(),
            points_spooled: self.spooled.get_or_create(&labels()).clone(),
            points_replayed: self.replayed.get_or_create(&labels()).clone(),
            spool_points: self.spool_points.get_or_create(&labels()).clone(),
            spool_bytes: self.spool_bytes.get_or_create(&labels()).clone(),
            dropped_spool_full: dropped("spool_full"),
            dropped_spool_error: dropped("spool_error"),
            spool_torn_records: self.torn.get_or_create(&labels()).clone(),
        }
    }

    /// Handles for the router.
    pub fn router(&self) -> RouterMetrics {
        RouterMetrics {
            points_unrouted: self.unrouted.clone(),
        }
    }

    /// Hands the registry to the admin endpoint. The builder keeps its
    /// metric families, so handles for upstreams and listeners started
    /// later (on reload) still show up in the same registry.
    pub fn build(&mut self) -> Telemetry {
        Telemetry {
            registry: Arc::new(std::mem::take(&mut self.registry)),
        }
    }
}

impl ListenerMetrics {
    /// Adds a decoder's rejects to the counters.
    pub fn count_rejects(&self, rejects: &crate::codec::Rejects) {
        for (reason, n) in rejects.counts() {
            if let Some(position) = Reason::ALL.iter().position(|r| *r == reason) {
                self.points_rejected[position].inc_by(n);
            }
        }
    }
}

impl UpstreamMetrics {
    /// Adds an encoder's skipped points to the drop counters.
    pub fn count_skipped(&self, skipped: &crate::codec::Skipped) {
        for (reason, n) in skipped.counts() {
            if let Some(position) = Unrepresentable::ALL.iter().position(|r| *r == reason) {
                self.dropped_unrepresentable[position].inc_by(n);
            }
        }
    }
}

impl Telemetry {
    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
