//! Retry timing of jobs: fixed, linear or exponential backoff with a cap and optional jitter.
//! The exponential mode and the jitter are [`crate::backoff`]'s; this module adds the
//! observer-facing choice of shape, the attempt budget and `Retry-After`.
//!
//! The observer's `retry = { ... }` table is turned into a [`RetryPolicy`] at start; workers
//! ask it whether another attempt is allowed and how long to wait. A `Retry-After` given by
//! the receiver (HTTP 429/503) wins over the computed delay when it is longer.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Longest `Retry-After` we honour: a receiver asking for more than this is treated as
/// asking for this, so a job cannot be parked for days by a misconfigured server.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backoff {
    /// Every retry waits `initial_delay`.
    Fixed,
    /// Retry n waits `n * initial_delay`.
    Linear,
    /// Retry n waits `initial_delay * 2^(n-1)`.
    Exponential,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts including the first one (1 = never retry).
    pub max_attempts: u32,
    pub backoff: Backoff,
    pub initial_delay: Duration,
    pub max_delay: Duration,
    /// "Equal jitter": the delay is drawn uniformly from [d/2, d], which spreads retries of
    /// many jobs that failed together while keeping at least half the intended spacing.
    pub jitter: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            backoff: Backoff::Exponential,
            initial_delay: Duration::from_millis(1000),
            max_delay: Duration::from_millis(60_000),
            jitter: true,
        }
    }
}

impl RetryPolicy {
    /// True when a job that has made `attempts` attempts may make another one.
    pub fn may_retry(&self, attempts: u32) -> bool {
        attempts < self.max_attempts
    }

    /// The delay before retry number `retry` (1 = the first retry), without jitter.
    pub fn base_delay(&self, retry: u32) -> Duration {
        let retry = retry.max(1);
        let initial = self.initial_delay;
        let d = match self.backoff {
            Backoff::Fixed => initial,
            Backoff::Linear => initial.saturating_mul(retry),
            Backoff::Exponential => {
                crate::backoff::Backoff::new(initial, self.max_delay).base_delay(retry - 1)
            }
        };
        d.min(self.max_delay)
    }

    /// The delay before retry number `retry`, jittered when configured, and at least the
    /// receiver's `Retry-After` (capped at [`MAX_RETRY_AFTER`]).
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        let mut d = self.base_delay(retry);
        if self.jitter {
            d = crate::backoff::equal_jitter(d);
        }
        match retry_after {
            Some(ra) => d.max(ra.min(MAX_RETRY_AFTER)),
            None => d,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(backoff: Backoff) -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            backoff,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
            jitter: false,
        }
    }

    #[test]
    fn fixed_linear_exponential_with_cap() {
        let ms = |p: &RetryPolicy, n| p.base_delay(n).as_millis();
        let f = policy(Backoff::Fixed);
        assert_eq!((ms(&f, 1), ms(&f, 4)), (100, 100));
        let l = policy(Backoff::Linear);
        assert_eq!((ms(&l, 1), ms(&l, 3), ms(&l, 20)), (100, 300, 1000));
        let e = policy(Backoff::Exponential);
        assert_eq!(
            (ms(&e, 1), ms(&e, 2), ms(&e, 4), ms(&e, 5), ms(&e, 99)),
            (100, 200, 800, 1000, 1000)
        );
    }

    #[test]
    fn jitter_stays_between_half_and_full() {
        let mut p = policy(Backoff::Fixed);
        p.jitter = true;
        for _ in 0..200 {
            let d = p.delay(1, None).as_millis();
            assert!((50..=100).contains(&d), "{d}");
        }
    }

    #[test]
    fn retry_after_wins_when_longer_and_is_capped() {
        let p = policy(Backoff::Fixed);
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
        assert_eq!(
            p.delay(1, Some(Duration::from_millis(10))),
            Duration::from_millis(100)
        );
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(99_999))),
            MAX_RETRY_AFTER
        );
    }

    #[test]
    fn attempts_budget() {
        let p = policy(Backoff::Fixed);
        assert!(p.may_retry(4));
        assert!(!p.may_retry(5));
    }
}
