//! AMQP broker plumbing shared by the amqp listener and the amqp upstream:
//! a connection on tokio, and carbon's exchange.

use lapin::options::ExchangeDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};

/// Connects to the broker at `url` with lapin running on tokio, and opens
/// a channel.
///
/// # Errors
/// The broker's or the network's error.
pub async fn connect(url: &str) -> Result<(Connection, Channel), lapin::Error> {
    let properties = ConnectionProperties::default()
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio::current());
    let connection = Connection::connect(url, properties).await?;
    let channel = connection.create_channel().await?;
    Ok((connection, channel))
}

/// Declares `exchange` as carbon declares it (topic, durable, not
/// auto-delete), so that either side may come first.
///
/// # Errors
/// The broker's error, for instance when the exchange exists with other settings.
pub async fn declare_carbon_exchange(
    channel: &Channel,
    exchange: &str,
) -> Result<(), lapin::Error> {
    channel
        .exchange_declare(
            exchange,
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
}
