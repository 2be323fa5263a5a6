//! Exponential backoff with jitter between failed attempts.

use std::time::Duration;

use crate::config::RetryConfig;

/// Backoff state for one upstream.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Starts at `initial`, doubles per failure, never above `max`.
    pub fn new(config: RetryConfig) -> Self {
        Self {
            initial: config.initial,
            max: config.max,
            next: config.initial,
        }
    }

    /// The delay before the next attempt: the current step with "equal
    /// jitter" (half fixed, half random), so that relays restarted together
    /// do not reconnect in lockstep.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.next;
        self.next = (self.next * 2).min(self.max);
        let half = step / 2;
        half + half.mul_f64(fastrand::f64())
    }

    /// Back to the initial delay after a success.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_with_bounded_jitter() {
        let mut backoff = Backoff::new(RetryConfig {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(1000),
        });
        let expected_steps = [100, 200, 400, 800, 1000, 1000];
        for step in expected_steps {
            let delay = backoff.next_delay().as_millis() as u64;
            assert!(
                delay >= step / 2 && delay <= step,
                "{delay} for step {step}"
            );
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(100));
    }
}
