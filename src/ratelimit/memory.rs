//! The in-process store: one governor GCRA limiter per distinct rule, keyed by client.
//! Keys whose budget is full again are dropped once a minute. Past `max_keys` (after a
//! sweep), every client shares one overflow budget until the sweep brings the count down:
//! a flood of new addresses degrades limiting to one shared budget instead of growing memory
//! without bound.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::time::Duration;

use futures_util::future::BoxFuture;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::{Quota, RateLimiter};

use super::{Decision, Rule, Store, StoreError};

type Keyed = RateLimiter<
    String,
    governor::state::keyed::DefaultKeyedStateStore<String>,
    DefaultClock,
    StateInformationMiddleware,
>;

pub struct MemoryStore {
    limiters: HashMap<Rule, Keyed>,
    clock: DefaultClock,
    max_keys: usize,
    last_sweep: std::sync::Mutex<std::time::Instant>,
}

const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// How often a store that is full tries a sweep.
const SWEEP_FULL_EVERY: Duration = Duration::from_secs(1);

fn quota(rule: Rule) -> Quota {
    Quota::with_period(per_cell(rule))
        .unwrap_or_else(|| Quota::per_minute(NonZeroU32::MIN))
        .allow_burst(NonZeroU32::new(rule.burst()).unwrap_or(NonZeroU32::MIN))
}

/// The time one request adds to a budget.
fn per_cell(rule: Rule) -> Duration {
    Duration::from_nanos(60_000_000_000 / u64::from(rule.requests_per_minute.max(1)))
}

impl MemoryStore {
    pub fn new(rules: &[Rule], max_keys: usize) -> MemoryStore {
        let clock = DefaultClock::default();
        let limiters = rules
            .iter()
            .map(|r| {
                (
                    *r,
                    RateLimiter::dashmap_with_clock(quota(*r), clock.clone())
                        .with_middleware::<StateInformationMiddleware>(),
                )
            })
            .collect();
        MemoryStore {
            limiters,
            clock,
            max_keys,
            last_sweep: std::sync::Mutex::new(std::time::Instant::now()),
        }
    }

    fn sweep(&self, every: Duration) {
        let mut last = self.last_sweep.lock().unwrap_or_else(|p| p.into_inner());
        if last.elapsed() < every {
            return;
        }
        *last = std::time::Instant::now();
        for l in self.limiters.values() {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }

    fn decide(&self, key: &str, rule: Rule) -> Decision {
        self.sweep(SWEEP_EVERY);
        let Some(limiter) = self.limiters.get(&rule) else {
            // Rules come from the configuration the store was built with.
            return Decision {
                allowed: true,
                remaining: rule.burst(),
                reset: Duration::ZERO,
                retry_after: Duration::ZERO,
            };
        };
        if limiter.len() >= self.max_keys {
            self.sweep(SWEEP_FULL_EVERY);
        }
        let key = if limiter.len() >= self.max_keys {
            "overflow".to_owned()
        } else {
            key.to_owned()
        };
        match limiter.check_key(&key) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                Decision {
                    allowed: true,
                    remaining,
                    reset: per_cell(rule) * rule.burst().saturating_sub(remaining),
                    retry_after: Duration::ZERO,
                }
            }
            Err(not_until) => Decision {
                allowed: false,
                remaining: 0,
                reset: per_cell(rule) * rule.burst(),
                retry_after: not_until.wait_time_from(self.clock.now()),
            },
        }
    }
}

impl Store for MemoryStore {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn check<'a>(
        &'a self,
        key: &'a str,
        rule: Rule,
    ) -> BoxFuture<'a, Result<Decision, StoreError>> {
        let d = self.decide(key, rule);
        Box::pin(async move { Ok(d) })
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_budget_allows_the_burst_then_refuses() {
        let rule = Rule {
            requests_per_minute: 60,
            burst: Some(5),
        };
        let s = MemoryStore::new(&[rule], 10);
        let allowed = (0..8).filter(|_| s.decide("a", rule).allowed).count();
        assert_eq!(allowed, 5);
        let refused = s.decide("a", rule);
        assert!(!refused.allowed);
        assert!(refused.retry_after > Duration::from_millis(500));
        assert!(refused.retry_after <= Duration::from_secs(1));
        // Another key has its own budget.
        assert!(s.decide("b", rule).allowed);
    }

    #[test]
    fn past_max_keys_new_clients_share_one_budget() {
        let rule = Rule {
            requests_per_minute: 60,
            burst: Some(1),
        };
        let s = MemoryStore::new(&[rule], 2);
        assert!(s.decide("a", rule).allowed);
        assert!(s.decide("b", rule).allowed);
        assert!(s.decide("c", rule).allowed);
        assert!(
            !s.decide("d", rule).allowed,
            "c and d share the overflow budget"
        );
        assert!(
            !s.decide("a", rule).allowed,
            "so does a known client while the store is full"
        );
    }
}
