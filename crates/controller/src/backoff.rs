//! Jittered exponential backoff: per game after failed reconciles, for
//! relisting after a watch broke, and for reopening a connection (the
//! Docker event stream, the etcd session).

use std::time::Duration;

/// Delays that double from `min` up to `max`, each jittered by ±20% so
/// that many games (or controllers) failing together do not retry in step.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    /// Delays that start at `min` and double up to `max`.
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            failures: 0,
        }
    }

    /// For reopening what a daemon serves (the Docker event stream, the
    /// etcd session): from 500 ms, so that a restart of dockerd or an etcd
    /// leader election (about a second) costs a try or two, doubling up to
    /// 30 s, so that the end of a long outage is noticed within half a
    /// minute without every controller knocking on the daemon in step.
    pub(crate) fn reconnect() -> Self {
        Self::new(Duration::from_millis(500), Duration::from_secs(30))
    }

    /// The delay before the next attempt; each call counts one failure.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let exponent = self.failures.min(20);
        self.failures = self.failures.saturating_add(1);
        let base = self.min.saturating_mul(1 << exponent).min(self.max);
        jitter(base)
    }

    /// Back to `min` after a success.
    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }
}

/// `delay` ±20%.
pub(crate) fn jitter(delay: Duration) -> Duration {
    delay.mul_f64(rand::random_range(0.8..1.2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_maximum_and_reset() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(10));
        let delays: Vec<f64> = (0..6).map(|_| backoff.next_delay().as_secs_f64()).collect();
        for (delay, base) in delays.iter().zip([1.0, 2.0, 4.0, 8.0, 10.0, 10.0]) {
            assert!((base * 0.8..=base * 1.2).contains(delay), "{delays:?}");
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(1200));
    }
}
