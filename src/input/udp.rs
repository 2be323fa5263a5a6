//! Graphite plaintext over UDP: each datagram holds whole lines (the last
//! needs no `\n`). Datagrams that arrive together are decoded into one
//! batch, so a burst costs one dispatch.

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::RejectLog;
use crate::codec::{graphite_plain, Rejects};
use crate::config::ListenerConfig;
use crate::model::{Batch, Timestamp};
use crate::route::RouterHandle;
use crate::telemetry::ListenerMetrics;

/// Points gathered from queued datagrams before a dispatch.
const POINTS_PER_DISPATCH: usize = 4096;

/// Receives datagrams until cancelled.
pub async fn run_udp(
    config: ListenerConfig,
    socket: UdpSocket,
    router: RouterHandle,
    metrics: ListenerMetrics,
    token: CancellationToken,
) {
    let reject_log = RejectLog::default();
    let limiter = super::peer_limiter(&config);
    let mut datagram = vec![0u8; 65_536];
    let mut rejects = Rejects::default();
    loop {
        let received = tokio::select! {
            _ = token.cancelled() => break,
            received = socket.recv_from(&mut datagram) => received,
        };
        let (mut n, mut peer) = match received {
            Ok(received) => received,
            Err(err) => {
                warn!(listener = %config.name, error = %err, "UDP receive failed.");
                continue;
            }
        };
        let now = Timestamp::now();
        let mut batch = Batch::with_capacity(64, 4096);
        loop {
            metrics.bytes_received.inc_by(n as u64);
            graphite_plain::parse_datagram(
                &datagram[..n],
                config.limits.max_line_bytes,
                now,
                &mut batch,
                &mut rejects,
            );
            if rejects.total() > 0 {
                metrics.count_rejects(&rejects);
                reject_log.log(&config.name, peer, &rejects);
                rejects.clear();
            }
            if batch.len() >= POINTS_PER_DISPATCH {
                break;
            }
            match socket.try_recv_from(&mut datagram) {
                Ok((next_n, next_peer)) => (n, peer) = (next_n, next_peer),
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            metrics.points_received.inc_by(batch.len() as u64);
            super::limit_rate(limiter.as_deref(), peer, &mut batch, &metrics).await;
            router.dispatch(batch).await;
        }
    }
}
