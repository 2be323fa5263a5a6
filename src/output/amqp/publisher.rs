//! Publishing to the broker: one connection and confirm-mode channel per
//! upstream, re-made after any failure, and the upstream's health,
//! counters and backoff kept up to date.

use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::publisher_confirm::Confirmation;
use lapin::{BasicProperties, Channel, Connection};

use super::Messages;
use crate::broker;
use crate::config::{amqp_broker, AmqpUpstreamConfig, UpstreamConfig};
use crate::health::UpstreamHealth;
use crate::output::{Backoff, FailureLog};
use crate::telemetry::UpstreamMetrics;

/// AMQP `delivery_mode` of messages that survive a broker restart.
const PERSISTENT: u8 = 2;

/// Why publishing a chunk failed; every kind is retried.
#[derive(Debug, thiserror::Error)]
enum PublishError {
    /// No connection within the connect timeout.
    #[error("connect to {broker} timed out")]
    ConnectTimeout {
        /// `host:port` of the broker.
        broker: String,
    },
    /// Connecting, or setting up the channel, failed.
    #[error("connect to {broker}")]
    Connect {
        /// `host:port` of the broker.
        broker: String,
        /// The cause.
        #[source]
        source: lapin::Error,
    },
    /// The connection or channel failed while publishing.
    #[error("publish to {broker}")]
    Publish {
        /// `host:port` of the broker.
        broker: String,
        /// The cause.
        #[source]
        source: lapin::Error,
    },
    /// The broker refused responsibility for messages.
    #[error("the broker nacked {n_messages} messages")]
    Nacked {
        /// How many.
        n_messages: usize,
    },
    /// Messages no queue is bound for came back.
    #[error("{n_messages} messages were unroutable in exchange {exchange:?} (first routing key {routing_key:?}: {reply})")]
    Returned {
        /// How many.
        n_messages: usize,
        /// The exchange.
        exchange: String,
        /// The first returned message's routing key.
        routing_key: String,
        /// The broker's reason.
        reply: String,
    },
}

/// The connection and confirm-mode channel of an upstream.
struct Broker {
    connection: Connection,
    channel: Channel,
}

/// Publishes chunks, keeping the broker connection and the upstream's
/// health, counters and backoff up to date.
pub(super) struct Publisher<'a> {
    pub(super) config: &'a UpstreamConfig,
    amqp: &'a AmqpUpstreamConfig,
    pub(super) metrics: &'a UpstreamMetrics,
    health: &'a UpstreamHealth,
    backoff: Backoff,
    failure_log: FailureLog,
    broker: Option<Broker>,
}

impl<'a> Publisher<'a> {
    /// A publisher that connects on first use.
    pub(super) fn new(
        config: &'a UpstreamConfig,
        amqp: &'a AmqpUpstreamConfig,
        metrics: &'a UpstreamMetrics,
        health: &'a UpstreamHealth,
    ) -> Self {
        Publisher {
            config,
            amqp,
            metrics,
            health,
            backoff: Backoff::new(config.retry),
            failure_log: FailureLog::default(),
            broker: None,
        }
    }

    /// How long an idle failed upstream waits before the next probe.
    pub(super) fn probe_delay(&mut self) -> Duration {
        self.backoff.next_delay()
    }

    /// Publishes until the broker confirmed every message, backing off
    /// between attempts.
    pub(super) async fn deliver(&mut self, messages: &Messages, n_points: usize) {
        loop {
            match self.publish(messages).await {
                Ok(connected) => {
                    self.succeeded(connected);
                    return;
                }
                Err(err) => {
                    if !matches!(
                        err,
                        PublishError::ConnectTimeout { .. } | PublishError::Connect { .. }
                    ) {
                        self.metrics.points_retried.inc_by(n_points as u64);
                    }
                    let delay = self.failed(&err);
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Connects an idle failed upstream, so it learns that it is back.
    pub(super) async fn probe(&mut self) {
        match self.connect().await {
            Ok(connected) => self.succeeded(connected),
            Err(err) => {
                self.failed(&err);
            }
        }
    }

    /// Closes the connection politely (publishes are all confirmed).
    pub(super) async fn close(&mut self) {
        if let Some(broker) = self.broker.take() {
            let _ = broker.channel.close(200, "OK").await;
            let _ = broker.connection.close(200, "OK").await;
        }
        self.metrics.connected.set(0);
    }

    /// One attempt; returns whether a new connection was made for it.
    async fn publish(&mut self, messages: &Messages) -> Result<bool, PublishError> {
        let connected = self.connect().await?;
        let Some(broker) = &self.broker else {
            return Ok(connected);
        };
        let confirmations = match publish_all(&broker.channel, &self.amqp.exchange, messages).await
        {
            Ok(confirmations) => confirmations,
            Err(source) => {
                // The channel or connection is gone: start afresh next time.
                self.broker = None;
                return Err(PublishError::Publish {
                    broker: amqp_broker(&self.amqp.url),
                    source,
                });
            }
        };
        check_confirmations(confirmations, &self.amqp.exchange)?;
        Ok(connected)
    }

    /// Opens the connection and channel unless they are open; returns
    /// whether it opened them.
    async fn connect(&mut self) -> Result<bool, PublishError> {
        if let Some(broker) = &self.broker {
            if broker.connection.status().connected() && broker.channel.status().connected() {
                return Ok(false);
            }
            self.broker = None;
        }
        let broker = amqp_broker(&self.amqp.url);
        let connecting = open(self.amqp);
        let opened = tokio::time::timeout(self.config.connect_timeout, connecting)
            .await
            .map_err(|_| PublishError::ConnectTimeout {
                broker: broker.clone(),
            })?
            .map_err(|source| PublishError::Connect { broker, source })?;
        self.broker = Some(opened);
        Ok(true)
    }

    fn succeeded(&mut self, connected: bool) {
        if connected {
            self.metrics.connects.inc();
            self.failure_log.recovered(&self.config.name);
        }
        self.metrics.connected.set(1);
        self.health.set(true);
        self.backoff.reset();
    }

    fn failed(&mut self, err: &PublishError) -> Duration {
        self.metrics.connected.set(i64::from(self.broker.is_some()));
        self.metrics.send_errors.inc();
        self.health.set(false);
        let delay = self.backoff.next_delay();
        self.failure_log.failed(&self.config.name, err, delay);
        delay
    }
}

/// Connects, enables publisher confirms and declares the exchange.
async fn open(amqp: &AmqpUpstreamConfig) -> Result<Broker, lapin::Error> {
    let (connection, channel) = broker::connect(&amqp.url).await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    if amqp.declare {
        broker::declare_carbon_exchange(&channel, &amqp.exchange).await?;
    }
    Ok(Broker {
        connection,
        channel,
    })
}

/// Publishes every message, then waits for every confirmation.
async fn publish_all(
    channel: &Channel,
    exchange: &str,
    messages: &Messages,
) -> Result<Vec<Confirmation>, lapin::Error> {
    let options = BasicPublishOptions {
        mandatory: true,
        immediate: false,
    };
    let mut pending = Vec::with_capacity(messages.len());
    for (routing_key, body) in messages.iter() {
        let properties = BasicProperties::default().with_delivery_mode(PERSISTENT);
        pending.push(
            channel
                .basic_publish(exchange, routing_key, options, body, properties)
                .await?,
        );
    }
    let mut confirmations = Vec::with_capacity(pending.len());
    for confirm in pending {
        confirmations.push(confirm.await?);
    }
    Ok(confirmations)
}

/// Ok when the broker acked every message and returned none.
fn check_confirmations(
    confirmations: Vec<Confirmation>,
    exchange: &str,
) -> Result<(), PublishError> {
    let mut nacked = 0;
    let mut returned = Vec::new();
    for confirmation in confirmations {
        match confirmation {
            Confirmation::Ack(None) => {}
            // A confirm-mode channel never answers "not requested".
            Confirmation::NotRequested => nacked += 1,
            Confirmation::Nack(message) => {
                nacked += 1;
                returned.extend(message);
            }
            Confirmation::Ack(Some(message)) => returned.push(message),
        }
    }
    if let Some(first) = returned.first() {
        return Err(PublishError::Returned {
            n_messages: returned.len(),
            exchange: exchange.to_owned(),
            routing_key: first.delivery.routing_key.to_string(),
            reply: first.reply_text.to_string(),
        });
    }
    if nacked > 0 {
        return Err(PublishError::Nacked { n_messages: nacked });
    }
    Ok(())
}
