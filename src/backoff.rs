//! Retry delays, the one implementation: exponential from a minimum, capped, with optional
//! "equal jitter". A leaf: it depends on nothing else in the crate.
//!
//! Every retry loop uses it: the NATS transport's connects, re-publishes and background
//! reconnects, the NATS observer source, the Redis queue's reconnects and full-queue
//! back-pressure, the Flight registry load, and the job retry policy
//! ([`crate::queue::backoff::RetryPolicy`], whose exponential mode is this one).
//!
//! Equal jitter draws the delay uniformly from `[d/2, d]`: many instances (or jobs) that
//! failed together do not retry in lockstep, yet each keeps at least half the spacing.

use std::time::Duration;

use rand::RngExt;

/// `d` drawn uniformly from `[d/2, d]` (microsecond steps).
pub fn equal_jitter(d: Duration) -> Duration {
    let half = d / 2;
    let spread = u64::try_from((d - half).as_micros()).unwrap_or(u64::MAX);
    if spread == 0 {
        return d;
    }
    half + Duration::from_micros(rand::rng().random_range(0..=spread))
}

/// Exponential backoff: attempt `n` (from 0) waits `min * 2^n`, at most `max`, jittered
/// unless built [`Backoff::without_jitter`]. Also a counter of the attempts made, for loops
/// that call [`Backoff::next_delay`] and [`Backoff::reset`] after a success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    jitter: bool,
    attempt: u32,
}

impl Backoff {
    /// From `min` to `max` (a `max` below `min` is raised to it), with equal jitter.
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
            jitter: true,
            attempt: 0,
        }
    }

    /// The same delays, exactly (no jitter).
    pub fn without_jitter(self) -> Self {
        Self {
            jitter: false,
            ..self
        }
    }

    /// The smallest delay (attempt 0, before jitter).
    pub fn min(&self) -> Duration {
        self.min
    }

    /// The cap.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// `min * 2^attempt`, capped at `max`, before jitter.
    pub fn base_delay(&self, attempt: u32) -> Duration {
        // Saturating: any exponent past the cap gives the cap, without overflow.
        self.min
            .saturating_mul(2u32.saturating_pow(attempt))
            .min(self.max)
    }

    /// The delay before retry `attempt` (0 = the first retry), jittered when configured.
    pub fn delay(&self, attempt: u32) -> Duration {
        let d = self.base_delay(attempt);
        if self.jitter { equal_jitter(d) } else { d }
    }

    /// The delay for the next attempt; counts the attempt.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.delay(self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        d
    }

    /// Back to the first delay (after a success).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Attempts counted by [`Backoff::next_delay`] since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn doubles_from_min_to_the_cap() {
        let b = Backoff::new(ms(100), ms(1000)).without_jitter();
        let got: Vec<u128> = [0, 1, 3, 4, 99, u32::MAX]
            .map(|n| b.base_delay(n).as_millis())
            .to_vec();
        assert_eq!(got, [100, 200, 800, 1000, 1000, 1000]);
        assert_eq!(b.delay(2), ms(400));
    }

    #[test]
    fn bounds_with_jitter() {
        // The transport's defaults: 50 ms to 5 s.
        let b = Backoff::new(ms(50), ms(5000));
        for attempt in 0..40 {
            let d = b.delay(attempt);
            assert!(d <= ms(5000), "{d:?}");
            assert!(d >= ms(25), "{d:?}");
            assert!(d >= b.base_delay(attempt) / 2, "{d:?}");
        }
    }

    #[test]
    fn next_delay_counts_and_reset_starts_over() {
        let mut b = Backoff::new(ms(10), ms(50)).without_jitter();
        let seq: Vec<u128> = (0..5).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(seq, [10, 20, 40, 50, 50]);
        assert_eq!(b.attempts(), 5);
        b.reset();
        assert_eq!(b.next_delay(), ms(10));
    }

    #[test]
    fn equal_jitter_stays_between_half_and_full() {
        for _ in 0..200 {
            let d = equal_jitter(ms(100)).as_millis();
            assert!((50..=100).contains(&d), "{d}");
        }
        assert_eq!(equal_jitter(Duration::ZERO), Duration::ZERO);
    }
}
