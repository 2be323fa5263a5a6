//! AMQP upstreams: each chunk is published to a topic exchange as
//! persistent, mandatory messages on a channel in confirm mode.
//!
//! A chunk is delivered once the broker has confirmed (acked) every
//! message of it, which for a durable queue means the message is on disk.
//! A nack, a message returned as unroutable, or a lost connection sends the
//! whole chunk again after a backoff (at least once: Graphite backends
//! overwrite duplicates). Bodies are carbon's one-point messages, plaintext
//! lines, or another output protocol's encoding of the chunk.

mod publisher;

use std::ops::Range;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::replay::{ReplayPace, ReplaySink};
use super::{
    encode, encoder_options, spool_chunk, spool_leftovers, with_translation, Chunker, Next, Spooler,
};
use crate::codec::{self, carbon_amqp, Protocol, Skipped};
use crate::config::{AmqpBody, AmqpUpstreamConfig, Target, UpstreamConfig};
use crate::health::UpstreamHealth;
use crate::model::{Batch, PointRef};
use crate::queue::QueueReceiver;
use crate::rate::UpstreamLimiter;
use crate::receipt::ReceiptPart;
use crate::telemetry::UpstreamMetrics;
use publisher::Publisher;

/// Bytes of the pickle length header, which AMQP messages do without.
const PICKLE_HEADER_BYTES: usize = 4;

/// Runs one AMQP upstream until its queue closes and is drained, or until
/// `spool_now` fires: the same life as [`super::run_upstream`].
pub async fn run_amqp_upstream(
    config: UpstreamConfig,
    mut queue: QueueReceiver,
    metrics: UpstreamMetrics,
    health: UpstreamHealth,
    spool: Option<Spooler>,
    spool_now: CancellationToken,
    retire: CancellationToken,
) {
    let Target::Amqp(amqp) = &config.target else {
        return;
    };
    let Some(mut layout) = Layout::new(&config, amqp) else {
        warn!(upstream = %config.name, format = %config.format, "No encoder for this AMQP body; upstream disabled.");
        return;
    };
    let mut publisher = Publisher::new(&config, amqp, &metrics, &health);
    let mut chunker = Chunker::new(config.batch);
    let limiter = config
        .rate_limit
        .map(|points_per_second| UpstreamLimiter::new(points_per_second, config.batch.max_points));
    let mut pace = ReplayPace::new(&config);
    let mut messages = Messages::default();
    let interrupted = 'run: loop {
        let next = loop {
            let probe_delay = if health.get() {
                Duration::from_secs(3600)
            } else {
                publisher.probe_delay()
            };
            let replay = ReplayPace::wanted(spool.as_ref(), &health, &retire);
            tokio::select! {
                biased;
                () = spool_now.cancelled(), if spool.is_some() => break Next::SpoolNow,
                () = tokio::time::sleep_until(pace.next_at()), if replay => break Next::Replay,
                chunk = chunker.next(&mut queue) => break Next::Chunk(chunk),
                () = tokio::time::sleep(probe_delay), if !health.get() => publisher.probe().await,
            }
        };
        let mut chunk = match next {
            Next::SpoolNow => break 'run true,
            Next::Replay => {
                let Some(spool) = spool.as_ref() else {
                    continue;
                };
                let mut sink = PublishReplay {
                    layout: &mut layout,
                    publisher: &mut publisher,
                    messages: &mut messages,
                };
                let replayed = pace.replay_record(
                    spool,
                    &mut sink,
                    config.batch.max_points,
                    &spool_now,
                    &metrics,
                );
                if replayed.await.is_break() {
                    break 'run true;
                }
                continue;
            }
            Next::Chunk(None) => break 'run false,
            Next::Chunk(Some(chunk)) => chunk,
        };
        let receipts = chunk.take_receipts();
        if let Some(limiter) = &limiter {
            limiter.wait(chunk.len()).await;
        }
        let written = layout.write(&config, chunk.points(), &mut messages, &metrics);
        if !messages.is_empty() {
            tokio::select! {
                biased;
                () = spool_now.cancelled(), if spool.is_some() => {
                    spool_chunk(spool.as_ref(), &chunk, receipts).await;
                    queue.release(chunk.permits);
                    break 'run true;
                }
                () = publisher.deliver(&messages, written) => {}
            }
        }
        // Delivered, or unrepresentable (counted): the inputs may let go.
        receipts.into_iter().for_each(ReceiptPart::confirm);
        metrics.points_sent.inc_by(written as u64);
        queue.release(chunk.permits);
        metrics.queue_depth.set(queue.depth() as i64);
    };
    if interrupted {
        let spooled = spool_leftovers(&mut chunker, &mut queue, spool.as_ref()).await;
        publisher.close().await;
        info!(upstream = %config.name, spooled, "Grace period over; undelivered points spooled.");
        return;
    }
    publisher.close().await;
    info!(upstream = %config.name, "Upstream drained and stopped.");
}

/// Replayed points published like live ones.
struct PublishReplay<'a, 'p> {
    layout: &'a mut Layout,
    publisher: &'a mut Publisher<'p>,
    messages: &'a mut Messages,
}

impl ReplaySink for PublishReplay<'_, '_> {
    async fn deliver(&mut self, batch: &Batch, range: Range<usize>) -> usize {
        let (config, metrics) = (self.publisher.config, self.publisher.metrics);
        let points = range.filter_map(|i| batch.get(i));
        let written = self.layout.write(config, points, self.messages, metrics);
        if self.messages.is_empty() {
            return 0;
        }
        self.publisher.deliver(self.messages, written).await;
        written
    }
}

/// How points become messages.
enum Layout {
    /// One message per point, routed by its name.
    Carbon,
    /// The chunk as one message, in an encoder's format.
    Whole {
        encoder: Box<dyn codec::Encoder>,
        routing_key: String,
        /// Pickle frames lose their length header: a message is one frame.
        strip_header: usize,
    },
}

impl Layout {
    fn new(config: &UpstreamConfig, amqp: &AmqpUpstreamConfig) -> Option<Layout> {
        let protocol = match amqp.body {
            AmqpBody::Carbon => return Some(Layout::Carbon),
            AmqpBody::PlaintextLines => Protocol::GraphitePlaintext,
            AmqpBody::Encoded(protocol) => protocol,
        };
        Some(Layout::Whole {
            encoder: codec::encoder_for(protocol, &encoder_options(config))?,
            routing_key: amqp.routing_key.clone(),
            strip_header: if protocol == Protocol::GraphitePickle {
                PICKLE_HEADER_BYTES
            } else {
                0
            },
        })
    }

    /// Replaces `messages` with the points' messages; returns how many
    /// points they carry and counts the points left out.
    fn write<'a>(
        &mut self,
        config: &UpstreamConfig,
        points: impl Iterator<Item = PointRef<'a>> + Clone,
        messages: &mut Messages,
        metrics: &UpstreamMetrics,
    ) -> usize {
        messages.clear();
        match self {
            Layout::Carbon => {
                let mut skipped = Skipped::default();
                let written = with_translation(config, points, |points| {
                    let mut written = 0;
                    for point in points {
                        match carbon_amqp::write_point(
                            &point,
                            &mut messages.keys,
                            &mut messages.bodies,
                        ) {
                            Ok(()) => {
                                messages.end_message();
                                written += 1;
                            }
                            Err(reason) => skipped.add(reason),
                        }
                    }
                    written
                });
                metrics.count_skipped(&skipped);
                written
            }
            Layout::Whole {
                encoder,
                routing_key,
                strip_header,
            } => {
                let written = encode(
                    config,
                    &mut **encoder,
                    points,
                    &mut messages.bodies,
                    metrics,
                );
                if messages.bodies.len() > *strip_header {
                    messages.bodies.drain(..*strip_header);
                    messages.keys.extend_from_slice(routing_key.as_bytes());
                    messages.end_message();
                } else {
                    messages.bodies.clear();
                }
                written
            }
        }
    }
}

/// Messages to publish: routing keys and bodies end to end, with where
/// each message ends.
#[derive(Debug, Default)]
struct Messages {
    keys: Vec<u8>,
    bodies: Vec<u8>,
    ends: Vec<(usize, usize)>,
}

impl Messages {
    fn clear(&mut self) {
        self.keys.clear();
        self.bodies.clear();
        self.ends.clear();
    }

    fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    /// What was written since the previous message is one message.
    fn end_message(&mut self) {
        self.ends.push((self.keys.len(), self.bodies.len()));
    }

    /// Routing key and body of each message.
    fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        let starts = std::iter::once((0, 0)).chain(self.ends.iter().copied());
        starts
            .zip(&self.ends)
            .map(|((key, body), &(key_end, body_end))| {
                // Keys are written from `&str` names, so they are UTF-8.
                let key = std::str::from_utf8(&self.keys[key..key_end]).unwrap_or_default();
                (key, &self.bodies[body..body_end])
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_split_keys_and_bodies() {
        let mut messages = Messages::default();
        messages.keys.extend_from_slice(b"a.b");
        messages.bodies.extend_from_slice(b"1 2\n");
        messages.end_message();
        messages.keys.extend_from_slice(b"c");
        messages.bodies.extend_from_slice(b"3 4\n");
        messages.end_message();
        let got: Vec<_> = messages.iter().collect();
        assert_eq!(got, vec![("a.b", &b"1 2\n"[..]), ("c", &b"3 4\n"[..])]);
        assert_eq!(messages.len(), 2);
        messages.clear();
        assert!(messages.is_empty());
    }
}
