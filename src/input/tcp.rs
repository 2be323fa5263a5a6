//! TCP listeners: accept (bounded by `max_connections`), read, decode,
//! dispatch. Under `block` the dispatch waits, the connection is not read
//! meanwhile, and the sender's TCP window closes: real backpressure.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn, Instrument};

use super::RejectLog;
use crate::codec::{self, DecoderOptions, Rejects};
use crate::config::ListenerConfig;
use crate::model::{Batch, Timestamp};
use crate::route::RouterHandle;
use crate::telemetry::ListenerMetrics;

/// Bytes requested per read.
const READ_BYTES: usize = 256 * 1024;

/// Accepts connections until cancelled; each runs as its own task.
pub async fn run_listener(
    config: ListenerConfig,
    listener: TcpListener,
    router: RouterHandle,
    metrics: ListenerMetrics,
    token: CancellationToken,
    tasks: TaskTracker,
) {
    let slots = Arc::new(Semaphore::new(config.max_connections));
    let limiter = super::peer_limiter(&config);
    let reject_log = RejectLog::default();
    let config = Arc::new(config);
    loop {
        // Like carbon, stop accepting while at the connection limit.
        let slot = tokio::select! {
            _ = token.cancelled() => break,
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let (socket, peer) = tokio::select! {
            _ = token.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    warn!(listener = %config.name, error = %err, "Accept failed.");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        metrics.connections_accepted.inc();
        if let Some(limiter) = &limiter {
            limiter.forget_idle_peers();
        }
        let connection = Connection {
            limiter: limiter.clone(),
            config: Arc::clone(&config),
            router: router.clone(),
            metrics: metrics.clone(),
            reject_log: reject_log.clone(),
            peer,
        };
        let span = tracing::info_span!("conn", listener = %config.name, %peer);
        let token = token.clone();
        tasks.spawn(
            async move {
                connection.metrics.connections_active.inc();
                connection.serve(socket, token).await;
                connection.metrics.connections_active.dec();
                drop(slot);
            }
            .instrument(span),
        );
    }
}

struct Connection {
    limiter: Option<Arc<crate::rate::PeerLimiter>>,
    config: Arc<ListenerConfig>,
    router: RouterHandle,
    metrics: ListenerMetrics,
    reject_log: RejectLog,
    peer: SocketAddr,
}

impl Connection {
    async fn serve(&self, mut socket: TcpStream, token: CancellationToken) {
        let options = DecoderOptions {
            limits: self.config.limits,
            default_tag: self.config.default_tag.clone(),
        };
        let Some(mut decoder) = codec::decoder_for(self.config.protocol, &options) else {
            return;
        };
        let mut buffer = BytesMut::with_capacity(READ_BYTES);
        let mut rejects = Rejects::default();
        loop {
            if buffer.capacity() - buffer.len() < READ_BYTES / 4 {
                buffer.reserve(READ_BYTES);
            }
            let idle = self.config.idle_timeout;
            let read = tokio::select! {
                _ = token.cancelled() => break,
                read = tokio::time::timeout(idle, socket.read_buf(&mut buffer)) => match read {
                    Ok(read) => read,
                    Err(_) => {
                        debug!(?idle, "Closing an idle connection.");
                        self.metrics.connections_closed_idle.inc();
                        decoder.decode_eof(&buffer, &mut rejects);
                        self.account(&mut rejects);
                        break;
                    }
                },
            };
            let n = match read {
                Ok(n) => n,
                Err(err) => {
                    debug!(error = %err, "Read failed; closing.");
                    break;
                }
            };
            if n == 0 {
                decoder.decode_eof(&buffer, &mut rejects);
                self.account(&mut rejects);
                break;
            }
            self.metrics.bytes_received.inc_by(n as u64);
            let mut batch = Batch::with_capacity(n / 48, n);
            let decoded = decoder.decode(&buffer, Timestamp::now(), &mut batch, &mut rejects);
            self.account(&mut rejects);
            let used = match decoded {
                Ok(used) => used,
                Err(err) => {
                    warn!(error = %err, "Closing connection: stream cannot be framed.");
                    self.metrics.connections_closed_on_error.inc();
                    break;
                }
            };
            buffer.advance(used);
            if let Some(reply) = decoder.take_reply() {
                if let Err(err) = socket.write_all(&reply).await {
                    debug!(error = %err, "Reply failed; closing.");
                    break;
                }
            }
            if !batch.is_empty() {
                self.metrics.points_received.inc_by(batch.len() as u64);
                super::limit_rate(
                    self.limiter.as_deref(),
                    self.peer,
                    &mut batch,
                    &self.metrics,
                )
                .await;
                self.router.dispatch(batch).await;
            }
        }
    }

    fn account(&self, rejects: &mut Rejects) {
        if rejects.total() > 0 {
            self.metrics.count_rejects(rejects);
            self.reject_log.log(&self.config.name, self.peer, rejects);
            rejects.clear();
        }
    }
}
