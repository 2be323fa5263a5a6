//! Rate limits (governor's GCRA): points per second per peer address on a
//! listener, and points per second on an upstream.
//!
//! The burst is one second's worth of points, so a sender may be as
//! bursty as its average allows. Batches larger than the burst are taken
//! in pieces.

use std::net::IpAddr;
use std::num::NonZeroU32;

use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota};

/// What a listener does with points over its per-peer rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenLimited {
    /// Drop the excess and count it.
    #[default]
    Drop,
    /// Stop reading from the peer until the rate allows more.
    Throttle,
}

/// A listener's per-peer limit.
#[derive(Debug)]
pub struct PeerLimiter {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    burst: NonZeroU32,
    /// What to do with the excess.
    pub when_limited: WhenLimited,
}

impl PeerLimiter {
    /// A limit of `points_per_second` for each peer address.
    pub fn new(points_per_second: NonZeroU32, when_limited: WhenLimited) -> Self {
        Self {
            limiter: DefaultKeyedRateLimiter::keyed(Quota::per_second(points_per_second)),
            burst: points_per_second,
            when_limited,
        }
    }

    /// Takes as many of `n` points as the peer's rate allows now and
    /// returns how many; the rest are over the limit.
    pub fn admit(&self, peer: IpAddr, n: usize) -> usize {
        let mut admitted = 0;
        let mut step = n.min(self.burst.get() as usize);
        while admitted < n && step > 0 {
            let cells = NonZeroU32::new(step as u32).unwrap_or(NonZeroU32::MIN);
            match self.limiter.check_key_n(&peer, cells) {
                Ok(Ok(_)) => {
                    admitted += step;
                    step = step.min(n - admitted);
                }
                // Not that many now: try a smaller piece.
                _ => step /= 2,
            }
        }
        admitted
    }

    /// Waits until the peer's rate allows `n` more points.
    pub async fn wait(&self, peer: IpAddr, n: usize) {
        let mut left = n;
        while left > 0 {
            let step = left.min(self.burst.get() as usize);
            let cells = NonZeroU32::new(step as u32).unwrap_or(NonZeroU32::MIN);
            // A step never exceeds the burst, so capacity is always sufficient.
            let _ = self.limiter.until_key_n_ready(&peer, cells).await;
            left -= step;
        }
    }

    /// Forgets peers whose state is back to full, bounding memory.
    pub fn forget_idle_peers(&self) {
        self.limiter.retain_recent();
    }
}

/// An upstream's limit.
#[derive(Debug)]
pub struct UpstreamLimiter {
    limiter: DefaultDirectRateLimiter,
    burst: NonZeroU32,
}

impl UpstreamLimiter {
    /// A limit of `points_per_second`, with bursts of at least `min_burst`
    /// (one batch) so that a batch never has to be split.
    pub fn new(points_per_second: NonZeroU32, min_burst: usize) -> Self {
        let burst = NonZeroU32::new((min_burst as u32).max(points_per_second.get()))
            .unwrap_or(points_per_second);
        Self {
            limiter: DefaultDirectRateLimiter::direct(
                Quota::per_second(points_per_second).allow_burst(burst),
            ),
            burst,
        }
    }

    /// Waits until `n` more points may be sent.
    pub async fn wait(&self, n: usize) {
        let mut left = n;
        while left > 0 {
            let step = left.min(self.burst.get() as usize);
            let cells = NonZeroU32::new(step as u32).unwrap_or(NonZeroU32::MIN);
            let _ = self.limiter.until_n_ready(cells).await;
            left -= step;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admit_takes_what_the_rate_allows_and_no_more() {
        let limiter = PeerLimiter::new(NonZeroU32::new(1000).expect("non-zero"), WhenLimited::Drop);
        let a: IpAddr = "127.0.0.1".parse().expect("ip");
        let b: IpAddr = "127.0.0.2".parse().expect("ip");
        let first = limiter.admit(a, 5000);
        assert!((990..=1000).contains(&first), "{first}");
        assert!(limiter.admit(a, 100) <= 2, "the burst is spent");
        assert!(limiter.admit(b, 300) == 300, "peers are limited separately");
    }
}
