//! Prometheus metrics of the Redis backend itself (the `fraiseql_job_*` family of the worker
//! runtime is defined in the main crate's `metrics.rs`). Created unregistered with every
//! queue; the main crate registers them once with [`RedisQueueMetrics::register`].

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

#[derive(Clone)]
pub struct RedisQueueMetrics {
    /// Redis calls that failed transiently and were retried, by operation.
    pub redis_retries: IntCounterVec,
    /// Jobs handed out again after a reservation expired (a worker died or overran).
    pub reclaimed: IntCounter,
    /// Jobs moved to the Redis dead letters.
    pub dead_lettered: IntCounter,
}

impl Default for RedisQueueMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl RedisQueueMetrics {
    pub fn new() -> Self {
        RedisQueueMetrics {
            redis_retries: IntCounterVec::new(
                Opts::new(
                    "queue_redis_retries_total",
                    "Redis queue calls that failed transiently (Redis down, loading, OOM) and were retried.",
                )
                .namespace("fraiseql"),
                &["op"],
            )
            .expect("valid metric"),
            reclaimed: IntCounter::with_opts(
                Opts::new(
                    "job_reclaimed_total",
                    "Jobs handed to a worker again because their reservation expired.",
                )
                .namespace("fraiseql"),
            )
            .expect("valid metric"),
            dead_lettered: IntCounter::with_opts(
                Opts::new(
                    "queue_redis_dead_lettered_total",
                    "Jobs moved to the Redis dead letters.",
                )
                .namespace("fraiseql"),
            )
            .expect("valid metric"),
        }
    }

    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.redis_retries.clone()))?;
        registry.register(Box::new(self.reclaimed.clone()))?;
        registry.register(Box::new(self.dead_lettered.clone()))?;
        Ok(())
    }
}
