//! Assembly: turns a [`Config`] into running listeners, router, queues and
//! upstreams, and shuts them down in order.
//!
//! Shutdown: inputs stop first (they hold the only route to the queues);
//! once they are gone the router and its queue senders drop, so each
//! upstream drains what is queued and stops by itself. The whole drain is
//! bounded by the grace period; then upstreams with a spool write what is
//! left there, and points still queued after that are counted and logged
//! as abandoned.
//!
//! Reload (SIGHUP): the file is read and validated again; an invalid file
//! is logged and changes nothing. Otherwise upstreams whose settings did
//! not change keep their queue, connection, spool and task; changed and
//! removed ones drain in the background while their replacements start;
//! listeners are compared the same way; and the router is swapped whole,
//! so a batch is routed either by the old rules or by the new ones.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UdpSocket};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::codec::Protocol;
use crate::config::{Config, ListenerConfig, UpstreamConfig};
use crate::health::{Health, UpstreamHealth};
use crate::output::Spooler;
use crate::queue::{DepthProbe, QueueSender};
use crate::route::{RouteTarget, Router, RouterHandle, Rules};
use crate::telemetry::{TelemetryBuilder, UpstreamMetrics};
use crate::{admin, input, output, queue};
use prometheus_client::metrics::counter::Counter;

/// Why the relay could not start.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// A socket could not be bound.
    #[error("cannot listen on {address} for {what}")]
    Bind {
        /// Which listener.
        what: String,
        /// The address.
        address: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// An upstream's spool directory cannot be used.
    #[error("cannot open the spool of upstream {upstream}")]
    Spool {
        /// The upstream.
        upstream: String,
        /// The cause.
        #[source]
        source: crate::spool::SpoolError,
    },
}

/// How long upstreams may take to spool their leftovers after the grace period.
const SPOOL_LEFTOVERS_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// One running upstream: what the router needs to reach it, and what
/// reload and shutdown need to manage it.
struct RunningUpstream {
    config: UpstreamConfig,
    sender: QueueSender,
    metrics: UpstreamMetrics,
    health: UpstreamHealth,
    spool: Option<Spooler>,
    /// Fired when the upstream is being replaced: it stops replaying its
    /// spool (its successor does that) and only drains its queue.
    retire: CancellationToken,
}

/// One running listener.
struct RunningListener {
    config: ListenerConfig,
    token: CancellationToken,
}

/// Everything `run` starts, kept for reload and shutdown.
struct Relay {
    telemetry: TelemetryBuilder,
    upstreams: Vec<RunningUpstream>,
    listeners: Vec<RunningListener>,
    router: RouterHandle,
    inputs: TaskTracker,
    outputs: TaskTracker,
    spool_now: CancellationToken,
    /// Depth probes and drop counters of every upstream ever started, for
    /// the final count of abandoned points.
    probes: Vec<(String, DepthProbe, Counter)>,
    config: Config,
}

/// Runs the relay until `stop` completes, then drains and returns.
/// With `config_path`, SIGHUP reloads the configuration from it.
///
/// # Errors
/// [`RelayError`] when a listener cannot be bound or a spool opened;
/// nothing runs then.
pub async fn run(
    config: Config,
    config_path: Option<PathBuf>,
    stop: impl Future<Output = ()>,
) -> Result<(), RelayError> {
    let mut telemetry = TelemetryBuilder::new();
    let mut relay = Relay {
        router: RouterHandle::new(Router::new(
            Rules::new(&[], &[]),
            Vec::new(),
            Health::new(0),
            telemetry.router(),
        )),
        telemetry: TelemetryBuilder::new(),
        upstreams: Vec::new(),
        listeners: Vec::new(),
        inputs: TaskTracker::new(),
        outputs: TaskTracker::new(),
        spool_now: CancellationToken::new(),
        probes: Vec::new(),
        config: config.clone(),
    };
    relay.apply(&config, &mut telemetry, true).await?;
    relay.telemetry = telemetry;
    let telemetry = relay.telemetry.build();
    let ready = Arc::new(AtomicBool::new(false));
    let admin_token = CancellationToken::new();
    let admin_task = match config.admin {
        Some(address) => {
            let listener = TcpListener::bind(address)
                .await
                .map_err(|source| RelayError::Bind {
                    what: "admin".to_owned(),
                    address,
                    source,
                })?;
            info!(%address, "Admin listening (/metrics, /health, /ready).");
            Some(tokio::spawn(admin::serve(
                listener,
                telemetry,
                Arc::clone(&ready),
                admin_token.clone(),
            )))
        }
        None => None,
    };
    ready.store(true, Ordering::Relaxed);
    info!(
        listeners = config.listeners.len(),
        upstreams = config.upstreams.len(),
        routes = config.routes.len(),
        "tsrelay started."
    );

    let mut hangups = config_path.as_ref().and_then(|_| {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map_err(|err| warn!(error = %err, "Cannot listen for SIGHUP; reload is off."))
            .ok()
    });
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            Some(()) = async {
                match hangups.as_mut() {
                    Some(signal) => signal.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                if let Some(path) = &config_path {
                    relay.reload(path).await;
                }
            }
        }
    }

    ready.store(false, Ordering::Relaxed);
    relay.shut_down().await;
    admin_token.cancel();
    if let Some(task) = admin_task {
        let _ = task.await;
    }
    Ok(())
}

impl Relay {
    /// Reads the file again and applies it; an invalid file changes nothing.
    async fn reload(&mut self, path: &std::path::Path) {
        info!(path = %path.display(), "SIGHUP: reloading the configuration.");
        let config = match crate::config::load(path) {
            Ok(config) => config,
            Err(err) => {
                error!(error = %err, "New configuration rejected; the running one stays.");
                return;
            }
        };
        if config.admin != self.config.admin {
            warn!("admin.listen changes take effect only at restart.");
        }
        let mut telemetry = std::mem::take(&mut self.telemetry);
        match self.apply(&config, &mut telemetry, false).await {
            Ok(()) => info!(
                listeners = config.listeners.len(),
                upstreams = config.upstreams.len(),
                routes = config.routes.len(),
                "Configuration reloaded."
            ),
            Err(err) => {
                error!(error = %err, "Reload failed part-way; the rest of the new configuration runs.")
            }
        }
        self.telemetry = telemetry;
    }

    /// Starts, keeps or retires upstreams and listeners so that `config`
    /// runs, and swaps the router. `first` makes bind and spool errors fatal.
    async fn apply(
        &mut self,
        config: &Config,
        telemetry: &mut TelemetryBuilder,
        first: bool,
    ) -> Result<(), RelayError> {
        let mut old: HashMap<String, RunningUpstream> = self
            .upstreams
            .drain(..)
            .map(|upstream| (upstream.config.name.clone(), upstream))
            .collect();
        let mut upstreams = Vec::with_capacity(config.upstreams.len());
        let mut retiring = Vec::new();
        for upstream in &config.upstreams {
            match old.remove(&upstream.name) {
                Some(running) if same_upstream(&running.config, upstream) => {
                    upstreams.push(running);
                    continue;
                }
                Some(running) => {
                    info!(upstream = %upstream.name, "Upstream changed: the old one drains, a new one starts.");
                    retiring.push(running);
                }
                None => {}
            }
            // A changed upstream keeps its spool when the directory stays.
            let inherited = retiring
                .iter()
                .find(|r| r.config.name == upstream.name)
                .and_then(|r| {
                    let same_dir = r.config.spool.as_ref().map(|s| &s.dir)
                        == upstream.spool.as_ref().map(|s| &s.dir);
                    same_dir.then(|| r.spool.clone()).flatten()
                });
            upstreams.push(self.start_upstream(upstream, telemetry, inherited)?);
        }
        retiring.extend(old.into_values().inspect(|removed| {
            info!(upstream = %removed.config.name, "Upstream removed: it drains and stops.");
        }));
        for running in &retiring {
            running.retire.cancel();
        }
        let health = Health::from_upstreams(upstreams.iter().map(|u| u.health.clone()));
        let targets = upstreams
            .iter()
            .map(|u| RouteTarget {
                queue: u.sender.clone(),
                metrics: u.metrics.clone(),
                spool: u.spool.clone(),
            })
            .collect();
        self.router.replace(Router::new(
            Rules::new(&config.routes, &config.clusters),
            targets,
            health,
            telemetry.router(),
        ));
        // The retired upstreams' last senders go now: their queues close
        // once in-flight dispatches finish, and their tasks drain and stop.
        drop(retiring);
        self.upstreams = upstreams;

        let mut old: HashMap<String, RunningListener> = self
            .listeners
            .drain(..)
            .map(|listener| (listener.config.name.clone(), listener))
            .collect();
        let mut listeners = Vec::with_capacity(config.listeners.len());
        let mut result = Ok(());
        for listener in &config.listeners {
            if let Some(running) = old.remove(&listener.name) {
                if format!("{:?}", running.config) == format!("{listener:?}") {
                    listeners.push(running);
                    continue;
                }
                info!(listener = %listener.name, "Listener changed: restarting it.");
                running.token.cancel();
            }
            match self.start_listener(listener, telemetry, !first).await {
                Ok(running) => listeners.push(running),
                Err(err) if first => return Err(err),
                Err(err) => {
                    error!(listener = %listener.name, error = %err, "Cannot start the listener.");
                    result = Err(err);
                }
            }
        }
        for (name, removed) in old {
            info!(listener = %name, "Listener removed: it stops.");
            removed.token.cancel();
        }
        self.listeners = listeners;
        self.config = config.clone();
        result
    }

    fn start_upstream(
        &mut self,
        upstream: &UpstreamConfig,
        telemetry: &TelemetryBuilder,
        inherited_spool: Option<Spooler>,
    ) -> Result<RunningUpstream, RelayError> {
        let (sender, receiver) = queue::queue(
            upstream.queue.max_points,
            upstream.queue.max_bytes,
            upstream.queue.when_full,
        );
        let metrics = telemetry.upstream(&upstream.name);
        let spool = match (&upstream.spool, inherited_spool) {
            (Some(_), Some(spool)) => Some(spool),
            (Some(spool_config), None) => Some(
                Spooler::open(&upstream.name, spool_config, metrics.clone()).map_err(|source| {
                    RelayError::Spool {
                        upstream: upstream.name.clone(),
                        source,
                    }
                })?,
            ),
            (None, _) => None,
        };
        self.probes.push((
            upstream.name.clone(),
            sender.depth_probe(),
            metrics.dropped_shutdown.clone(),
        ));
        let health = Health::new(1).upstream(0);
        let retire = CancellationToken::new();
        self.outputs.spawn(output::run_upstream(
            upstream.clone(),
            receiver,
            metrics.clone(),
            health.clone(),
            spool.clone(),
            self.spool_now.clone(),
            retire.clone(),
        ));
        Ok(RunningUpstream {
            config: upstream.clone(),
            sender,
            metrics,
            health,
            spool,
            retire,
        })
    }

    async fn start_listener(
        &self,
        listener: &ListenerConfig,
        telemetry: &TelemetryBuilder,
        retry_bind: bool,
    ) -> Result<RunningListener, RelayError> {
        let metrics = telemetry.listener(&listener.name);
        // Cancelled at shutdown, or when the listener is replaced.
        let token = CancellationToken::new();
        if listener.protocol == Protocol::Amqp {
            // Consumes from a broker: no socket of its own.
            self.inputs.spawn(input::amqp::run_amqp(
                listener.clone(),
                self.router.clone(),
                metrics,
                token.clone(),
            ));
            return Ok(RunningListener {
                config: listener.clone(),
                token,
            });
        }
        let bind_error = |source| RelayError::Bind {
            what: format!("listener {}", listener.name),
            address: listener.listen,
            source,
        };
        // On reload a restarted listener's old socket closes asynchronously.
        let attempts = if retry_bind { 50 } else { 1 };
        let mut bound = Err(std::io::Error::other("not bound"));
        for _ in 0..attempts {
            bound = TcpListener::bind(listener.listen).await;
            if bound.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let tcp = bound.map_err(bind_error)?;
        info!(listener = %listener.name, protocol = %listener.protocol, address = %listener.listen, "Listening on TCP.");
        if listener.udp {
            let udp = UdpSocket::bind(listener.listen).await.map_err(bind_error)?;
            info!(listener = %listener.name, address = %listener.listen, "Listening on UDP.");
            self.inputs.spawn(input::udp::run_udp(
                listener.clone(),
                udp,
                self.router.clone(),
                metrics.clone(),
                token.clone(),
            ));
        }
        if listener.protocol == Protocol::Http {
            let (name, http) = (listener.name.clone(), listener.clone());
            let (router, http_token) = (self.router.clone(), token.clone());
            self.inputs.spawn(async move {
                if let Err(err) =
                    input::http::run_http(http, tcp, router, metrics, http_token).await
                {
                    error!(listener = %name, error = %err, "HTTP listener failed.");
                }
            });
        } else {
            self.inputs.spawn(input::tcp::run_listener(
                listener.clone(),
                tcp,
                self.router.clone(),
                metrics,
                token.clone(),
                self.inputs.clone(),
            ));
        }
        Ok(RunningListener {
            config: listener.clone(),
            token,
        })
    }

    /// Stops inputs, drains queues within the grace period, spools what is
    /// left, and counts what could not be saved.
    async fn shut_down(mut self) {
        let grace = self.config.shutdown_grace;
        let deadline = Instant::now() + grace;
        info!(?grace, "Shutdown requested; draining queues.");
        for listener in self.listeners.drain(..) {
            listener.token.cancel();
        }
        // The router (and with it every queue sender) goes once the inputs
        // holding it stop; the table's senders go now.
        self.upstreams.clear();
        self.router.replace(Router::new(
            Rules::new(&[], &[]),
            Vec::new(),
            Health::new(0),
            self.telemetry.router(),
        ));
        self.inputs.close();
        self.outputs.close();
        let (inputs, outputs) = (self.inputs.clone(), self.outputs.clone());
        let mut drained = tokio::time::timeout_at(deadline, async {
            inputs.wait().await;
            outputs.wait().await;
        })
        .await;
        if drained.is_err() {
            // Upstreams with a spool write what is left there; give them a
            // moment (disk writes, not network waits).
            self.spool_now.cancel();
            drained = tokio::time::timeout(SPOOL_LEFTOVERS_TIME, outputs.wait()).await;
        }
        if drained.is_err() {
            for (name, probe, dropped) in &self.probes {
                let abandoned = probe.depth();
                if abandoned > 0 {
                    dropped.inc_by(abandoned as u64);
                    warn!(upstream = %name, abandoned, "Grace period elapsed; abandoning undelivered points.");
                }
            }
        } else {
            info!("All queues drained.");
        }
    }
}

/// True when a running upstream can stay as it is under the new settings.
fn same_upstream(running: &UpstreamConfig, new: &UpstreamConfig) -> bool {
    // The validated config has regexes and templates without equality;
    // their Debug form names every setting.
    format!("{running:?}") == format!("{new:?}")
}
