//! Assembly: turns a [`Config`] into running listeners, router, queues and
//! upstreams, and shuts them down in order.
//!
//! Shutdown: inputs stop first (they hold the only route to the queues);
//! once they are gone the router and its queue senders drop, so each
//! upstream drains what is queued and stops by itself. The whole drain is
//! bounded by the grace period; points still queued after it are counted
//! and logged as abandoned.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::net::{TcpListener, UdpSocket};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::codec::Protocol;
use crate::config::Config;
use crate::health::Health;
use crate::route::{RouteTarget, Router, Rules};
use crate::telemetry::TelemetryBuilder;
use crate::{admin, input, output, queue};

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

/// Runs the relay until `stop` completes, then drains and returns.
///
/// # Errors
/// [`RelayError`] when a listener cannot be bound; nothing runs then.
pub async fn run(config: Config, stop: impl Future<Output = ()>) -> Result<(), RelayError> {
    let telemetry_builder = TelemetryBuilder::new();
    let outputs = TaskTracker::new();
    let mut targets = Vec::new();
    let mut depth_probes = Vec::new();
    let health = Health::new(config.upstreams.len());
    let spool_now = CancellationToken::new();
    for (index, upstream) in config.upstreams.iter().enumerate() {
        let (sender, receiver) = queue::queue(
            upstream.queue.max_points,
            upstream.queue.max_bytes,
            upstream.queue.when_full,
        );
        let metrics = telemetry_builder.upstream(&upstream.name);
        let spool = match &upstream.spool {
            Some(spool_config) => Some(
                output::Spooler::open(&upstream.name, spool_config, metrics.clone()).map_err(
                    |source| RelayError::Spool {
                        upstream: upstream.name.clone(),
                        source,
                    },
                )?,
            ),
            None => None,
        };
        depth_probes.push((
            upstream.name.clone(),
            sender.depth_probe(),
            metrics.dropped_shutdown.clone(),
        ));
        outputs.spawn(output::run_upstream(
            upstream.clone(),
            receiver,
            metrics.clone(),
            health.upstream(index),
            spool.clone(),
            spool_now.clone(),
        ));
        targets.push(RouteTarget {
            queue: sender,
            metrics,
            spool,
        });
    }
    let router = Arc::new(Router::new(
        Rules::new(&config.routes, &config.clusters),
        targets,
        health,
        telemetry_builder.router(),
    ));

    let inputs = TaskTracker::new();
    let inputs_token = CancellationToken::new();
    for listener in &config.listeners {
        let metrics = telemetry_builder.listener(&listener.name);
        if listener.protocol == Protocol::Amqp {
            // Consumes from a broker: no socket of its own.
            inputs.spawn(input::amqp::run_amqp(
                listener.clone(),
                Arc::clone(&router),
                metrics,
                inputs_token.clone(),
            ));
            continue;
        }
        let bind_error = |source| RelayError::Bind {
            what: format!("listener {}", listener.name),
            address: listener.listen,
            source,
        };
        let tcp = TcpListener::bind(listener.listen)
            .await
            .map_err(bind_error)?;
        info!(listener = %listener.name, protocol = %listener.protocol, address = %listener.listen, "Listening on TCP.");
        if listener.udp {
            let udp = UdpSocket::bind(listener.listen).await.map_err(bind_error)?;
            info!(listener = %listener.name, address = %listener.listen, "Listening on UDP.");
            inputs.spawn(input::udp::run_udp(
                listener.clone(),
                udp,
                Arc::clone(&router),
                metrics.clone(),
                inputs_token.clone(),
            ));
        }
        if listener.protocol == Protocol::Http {
            let (name, http) = (listener.name.clone(), listener.clone());
            let (router, token) = (Arc::clone(&router), inputs_token.clone());
            inputs.spawn(async move {
                if let Err(err) = input::http::run_http(http, tcp, router, metrics, token).await {
                    error!(listener = %name, error = %err, "HTTP listener failed.");
                }
            });
            continue;
        }
        inputs.spawn(input::tcp::run_listener(
            listener.clone(),
            tcp,
            Arc::clone(&router),
            metrics,
            inputs_token.clone(),
            inputs.clone(),
        ));
    }
    drop(router);

    let telemetry = telemetry_builder.build();
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

    stop.await;
    ready.store(false, Ordering::Relaxed);
    let deadline = Instant::now() + config.shutdown_grace;
    info!(grace = ?config.shutdown_grace, "Shutdown requested; draining queues.");
    inputs_token.cancel();
    inputs.close();
    outputs.close();
    let mut drained = tokio::time::timeout_at(deadline, async {
        inputs.wait().await;
        outputs.wait().await;
    })
    .await;
    if drained.is_err() {
        // Upstreams with a spool write what is left there; give them a
        // moment (disk writes, not network waits).
        spool_now.cancel();
        drained = tokio::time::timeout(SPOOL_LEFTOVERS_TIME, outputs.wait()).await;
    }
    if drained.is_err() {
        for (name, sender, dropped) in &depth_probes {
            let abandoned = sender.depth();
            if abandoned > 0 {
                dropped.inc_by(abandoned as u64);
                warn!(upstream = %name, abandoned, "Grace period elapsed; abandoning undelivered points.");
            }
        }
    } else {
        info!("All queues drained.");
    }
    admin_token.cancel();
    if let Some(task) = admin_task {
        let _ = task.await;
    }
    Ok(())
}
