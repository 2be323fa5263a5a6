//! AMQP listeners: consume carbon messages from a broker queue
//! (protocols.md section 3), with acknowledgements.
//!
//! The exchange is declared as carbon declares it (topic, durable) and the
//! queue is bound with every pattern. Unlike carbon, which consumes without
//! acknowledgements, a message is acknowledged only once every point of it
//! is safe (delivered upstream, spooled, or dropped by a configured rule):
//! its points travel with a delivery receipt, and a task per message acks
//! it when the receipt is confirmed. Acks may go out of order, each for its
//! own delivery tag. The prefetch window is the backpressure: when a
//! `block` queue is full, dispatch waits, no acks go out, and the broker
//! stops delivering. A message whose points were abandoned (shutdown) is
//! not acknowledged, so the broker delivers it again, to us or to another
//! consumer, once the channel closes.
//!
//! The broker stands in for the peer: rejects are logged with its address,
//! `connections_accepted` counts sessions opened with it and
//! `connections_active` is 1 while consuming.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_core::Stream;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, Consumer};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::RejectLog;
use crate::broker;
use crate::codec::carbon_amqp::{self, NameIn};
use crate::codec::Rejects;
use crate::config::{self, AmqpListenerConfig, ListenerConfig, RetryConfig};
use crate::model::Batch;
use crate::output::Backoff;
use crate::rate::PeerLimiter;
use crate::receipt;
use crate::route::RouterHandle;
use crate::telemetry::ListenerMetrics;

/// How often a still-unreachable broker is logged again.
const OUTAGE_LOG_INTERVAL: Duration = Duration::from_secs(30);

/// Consumes from the broker until cancelled, reconnecting with backoff
/// whenever the connection is lost; then stops consuming, waits for the
/// messages in flight to be acknowledged (the relay bounds this wait by
/// its grace period) and closes the connection.
pub async fn run_amqp(
    config: ListenerConfig,
    router: RouterHandle,
    metrics: ListenerMetrics,
    token: CancellationToken,
) {
    let Some(amqp) = config.amqp.clone() else {
        warn!(listener = %config.name, "AMQP listener without broker settings; not started.");
        return;
    };
    let mut listener = AmqpListener {
        broker: config::amqp_broker(&amqp.url),
        limiter: super::peer_limiter(&config),
        name_in: if amqp.metric_name_in_body {
            NameIn::Body
        } else {
            NameIn::RoutingKey
        },
        config,
        amqp,
        router,
        metrics,
        reject_log: RejectLog::default(),
        in_flight: JoinSet::new(),
    };
    let mut backoff = Backoff::new(RetryConfig {
        initial: config::DEFAULT_RETRY_INITIAL,
        max: config::DEFAULT_RETRY_MAX,
    });
    let mut outage = Outage::default();
    loop {
        let opened = tokio::select! {
            () = token.cancelled() => break,
            opened = listener.open() => opened,
        };
        let ended = match opened {
            Ok(session) => {
                outage.connected(&listener.config.name, &listener.broker);
                backoff.reset();
                listener.consume(session, &token).await
            }
            Err(err) => Err(err),
        };
        let Err(err) = ended else {
            break;
        };
        let delay = backoff.next_delay();
        outage.failed(&listener.config.name, &listener.broker, &err, delay);
        tokio::select! {
            () = token.cancelled() => break,
            () = tokio::time::sleep(delay) => {}
        }
    }
    // Messages of a lost connection: their acks fail and the broker
    // redelivers them, but their points are in the queues already.
    while listener.in_flight.join_next().await.is_some() {}
    info!(listener = %listener.config.name, "AMQP listener stopped.");
}

/// Why a session with the broker ended or could not start.
#[derive(Debug, thiserror::Error)]
enum ConsumeError {
    /// The broker's address did not resolve.
    #[error("resolve {broker}")]
    Resolve {
        /// `host:port`.
        broker: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// No connection within the connect timeout.
    #[error("connect to {broker} timed out")]
    Timeout {
        /// `host:port`.
        broker: String,
    },
    /// The connection, the channel or a declaration failed.
    #[error("AMQP session with {broker}")]
    Broker {
        /// `host:port`.
        broker: String,
        /// The cause.
        #[source]
        source: lapin::Error,
    },
    /// The broker cancelled the consumer (the queue was deleted).
    #[error("{broker} cancelled the consumer")]
    Cancelled {
        /// `host:port`.
        broker: String,
    },
}

/// An open connection with its consumer.
struct Session {
    connection: Connection,
    channel: Channel,
    consumer: Consumer,
    /// The broker's address: the "peer" of every message.
    peer: SocketAddr,
}

/// One amqp listener's state across sessions.
struct AmqpListener {
    config: ListenerConfig,
    amqp: AmqpListenerConfig,
    broker: String,
    name_in: NameIn,
    router: RouterHandle,
    metrics: ListenerMetrics,
    reject_log: RejectLog,
    limiter: Option<Arc<PeerLimiter>>,
    /// One task per message whose points are not yet safe.
    in_flight: JoinSet<()>,
}

impl AmqpListener {
    /// Connects, declares the exchange and queue, binds and starts consuming.
    async fn open(&self) -> Result<Session, ConsumeError> {
        let broker = || self.broker.clone();
        let peer = tokio::net::lookup_host(&self.broker)
            .await
            .and_then(|mut addresses| {
                addresses
                    .next()
                    .ok_or_else(|| std::io::Error::other("no address"))
            })
            .map_err(|source| ConsumeError::Resolve {
                broker: broker(),
                source,
            })?;
        let session = tokio::time::timeout(config::DEFAULT_CONNECT_TIMEOUT, self.subscribe(peer))
            .await
            .map_err(|_| ConsumeError::Timeout { broker: broker() })?
            .map_err(|source| ConsumeError::Broker {
                broker: broker(),
                source,
            })?;
        self.metrics.connections_accepted.inc();
        self.metrics.connections_active.set(1);
        Ok(session)
    }

    async fn subscribe(&self, peer: SocketAddr) -> Result<Session, lapin::Error> {
        let amqp = &self.amqp;
        let (connection, channel) = broker::connect(&amqp.url).await?;
        broker::declare_carbon_exchange(&channel, &amqp.exchange).await?;
        // A named queue outlives us (messages wait while we are down); the
        // exclusive one is carbon's private, server-named queue.
        let (queue_name, queue_options) = match &amqp.queue {
            Some(name) => (
                name.as_str(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
            ),
            None => (
                "",
                QueueDeclareOptions {
                    exclusive: true,
                    ..QueueDeclareOptions::default()
                },
            ),
        };
        let queue = channel
            .queue_declare(queue_name, queue_options, FieldTable::default())
            .await?;
        for pattern in &amqp.bind_patterns {
            channel
                .queue_bind(
                    queue.name().as_str(),
                    &amqp.exchange,
                    pattern,
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        channel
            .basic_qos(amqp.prefetch, BasicQosOptions::default())
            .await?;
        let consumer = channel
            .basic_consume(
                queue.name().as_str(),
                &format!("tsrelay.{}", self.config.name),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(Session {
            connection,
            channel,
            consumer,
            peer,
        })
    }

    /// Takes messages until the connection fails (`Err`) or the token is
    /// cancelled (`Ok`, once the session is wound down).
    async fn consume(
        &mut self,
        mut session: Session,
        token: &CancellationToken,
    ) -> Result<(), ConsumeError> {
        let ended = loop {
            while self.in_flight.try_join_next().is_some() {}
            let next = tokio::select! {
                biased;
                () = token.cancelled() => break Ok(()),
                next = next_delivery(&mut session.consumer) => next,
            };
            match next {
                Some(Ok(delivery)) => self.take(delivery, session.peer).await,
                Some(Err(source)) => {
                    break Err(ConsumeError::Broker {
                        broker: self.broker.clone(),
                        source,
                    })
                }
                None => {
                    break Err(ConsumeError::Cancelled {
                        broker: self.broker.clone(),
                    })
                }
            }
        };
        self.metrics.connections_active.set(0);
        if ended.is_ok() {
            self.wind_down(session).await;
        }
        ended
    }

    /// Decodes one message, dispatches its points (waiting here while a
    /// `block` queue is full) and leaves a task to ack it once they are safe.
    async fn take(&mut self, delivery: Delivery, peer: SocketAddr) {
        let mut batch = Batch::with_capacity(delivery.data.len() / 24 + 1, delivery.data.len());
        let mut rejects = Rejects::default();
        carbon_amqp::parse_message(
            delivery.routing_key.as_str(),
            &delivery.data,
            self.name_in,
            &mut batch,
            &mut rejects,
        );
        self.metrics
            .bytes_received
            .inc_by(delivery.data.len() as u64);
        if rejects.total() > 0 {
            self.metrics.count_rejects(&rejects);
            self.reject_log.log(&self.config.name, peer, &rejects);
        }
        self.metrics.points_received.inc_by(batch.len() as u64);
        super::limit_rate(self.limiter.as_deref(), peer, &mut batch, &self.metrics).await;
        let (part, waiter) = receipt::receipt();
        self.router.dispatch_tracked(batch, Some(part)).await;
        let acker = delivery.acker;
        let tag = delivery.delivery_tag;
        self.in_flight.spawn(async move {
            if !waiter.wait().await {
                debug!(
                    tag,
                    "Points of a message were abandoned; it stays unacknowledged."
                );
                return;
            }
            match acker.ack(BasicAckOptions { multiple: false }).await {
                Ok(true) => {}
                Ok(false) => debug!(tag, "Channel gone before the ack; the broker redelivers."),
                Err(err) => debug!(tag, error = %err, "Ack failed; the broker redelivers."),
            }
        });
    }

    /// Stops deliveries, lets the messages in flight be acknowledged, and
    /// closes. Messages the broker sent but we did not take are redelivered.
    async fn wind_down(&mut self, session: Session) {
        let tag = session.consumer.tag();
        if let Err(err) = session
            .channel
            .basic_cancel(tag.as_str(), BasicCancelOptions::default())
            .await
        {
            debug!(error = %err, "Cancelling the AMQP consumer failed.");
        }
        while self.in_flight.join_next().await.is_some() {}
        let _ = session.channel.close(200, "OK").await;
        let _ = session.connection.close(200, "OK").await;
    }
}

/// The consumer's next delivery; `None` when the broker cancelled it.
async fn next_delivery(consumer: &mut Consumer) -> Option<lapin::Result<Delivery>> {
    std::future::poll_fn(|cx| Pin::new(&mut *consumer).poll_next(cx)).await
}

/// Logs the first failure of an outage, then at most every 30 s, then the
/// reconnection.
#[derive(Debug, Default)]
struct Outage {
    since: Option<Instant>,
    last_logged: Option<Instant>,
    failures: u64,
}

impl Outage {
    fn failed(&mut self, listener: &str, broker: &str, err: &ConsumeError, retry_in: Duration) {
        self.failures += 1;
        let now = Instant::now();
        self.since.get_or_insert(now);
        if self
            .last_logged
            .is_none_or(|last| now - last >= OUTAGE_LOG_INTERVAL)
        {
            self.last_logged = Some(now);
            let cause = std::error::Error::source(err)
                .map(ToString::to_string)
                .unwrap_or_default();
            warn!(listener, broker, error = %err, %cause, failures = self.failures, ?retry_in,
                "AMQP broker unavailable; will reconnect.");
        }
    }

    fn connected(&mut self, listener: &str, broker: &str) {
        match self.since.take() {
            Some(since) => {
                info!(listener, broker, failures = self.failures, down_for = ?since.elapsed(),
                "Consuming from the AMQP broker again.")
            }
            None => info!(listener, broker, "Consuming from the AMQP broker."),
        }
        self.failures = 0;
        self.last_logged = None;
    }
}
