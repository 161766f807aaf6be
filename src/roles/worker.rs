//! The `worker` role: executes observer jobs from an external queue (Redis), nothing else.
//!
//! It compiles the same `[[observers]]` as `serve` (a job names its observer and its action's
//! identity; the worker looks them up, and waits for `observer_runtime.unknown_action_retry_ms`
//! when it does not know them, as during a rolling deploy), connects to PostgreSQL (the dedup window and the `cache` action
//! live there) and to Redis, and runs the batching [`crate::queue::pump`] with
//! `[worker] concurrency` slots. `/healthz`, `/readyz` (PostgreSQL and Redis) and `/metrics`
//! are served on `[worker] listen`.
//!
//! Shutdown (SIGINT/SIGTERM): the pump stops reserving, running jobs get
//! `[worker] grace_period_ms` to finish, and the rest are handed back to the queue at once —
//! another worker takes them without waiting for the visibility timeout. A worker killed
//! outright (`kill -9`) loses nothing either: its reservations expire after
//! `[queue] visibility_timeout_ms` and are reclaimed by whichever worker reserves next. While
//! it lives, the pump's heartbeat keeps its running jobs' reservations from expiring.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::http::QueueReadiness;
use crate::queue::QueueHandles;
use crate::queue::pump::PumpConfig;

/// `[worker]`: the `fraiseql worker` role.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// Address of the worker's own `/healthz`, `/readyz` and `/metrics`.
    pub listen: SocketAddr,
    /// Jobs executed at once (`--concurrency` overrides).
    pub concurrency: usize,
    /// After SIGTERM, running jobs get this long to finish; the rest are handed back.
    pub grace_period_ms: u64,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9091)),
            concurrency: 16,
            grace_period_ms: 10_000,
        }
    }
}

impl WorkerConfig {
    /// Checks what the types alone cannot.
    pub fn validate(&self) -> Result<(), crate::setting::Invalid> {
        if self.concurrency == 0 || self.concurrency > 10_000 {
            return Err(crate::setting::Invalid::new(
                "worker.concurrency",
                "expected 1 to 10000",
            ));
        }
        Ok(())
    }
}

/// Binds `[worker] listen` and runs until `shutdown`.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.worker.listen)
        .await
        .with_context(|| format!("cannot listen on {} (worker.listen)", config.worker.listen))?;
    run_on(listener, config, shutdown).await
}

/// Runs the worker with its HTTP side on an already-bound `listener`.
pub async fn run_on(
    listener: TcpListener,
    config: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    config.validate_for(&[crate::config::Role::Worker])?;
    let pool = crate::db::pool(&config.database)?;
    // Compile now: a bad observer config fails the start, not the first job.
    let runtime = crate::compose::build_observers(&config, pool.clone(), None, None)?;
    let executor = runtime.executor();
    drop(runtime);

    let pump = PumpConfig {
        concurrency: config.worker.concurrency,
        batch: config.queue.reserve_batch.min(config.worker.concurrency),
        grace: Duration::from_millis(config.worker.grace_period_ms),
    };
    let ready = Arc::new(QueueReadiness::new(config.queue.backend.name()));
    let jobs_task = {
        let (ready, shutdown) = (ready.clone(), shutdown.clone());
        let (config, pool) = (config.clone(), pool.clone());
        let executor = executor.clone();
        tokio::spawn(async move {
            let Some(queue) = crate::compose::connect_queue(&config, &pool, &shutdown).await else {
                return;
            };
            let (Some(batch), Some(probe)) = (queue.batch.clone(), queue.probe.clone()) else {
                tracing::error!("the queue backend cannot serve a worker");
                return;
            };
            let _ = ready.probe.set(probe);
            tracing::info!(
                concurrency = pump.concurrency,
                "worker started: executing jobs"
            );
            let sampler = tokio::spawn(sample_gauges(queue, shutdown.clone()));
            crate::observers::run_pump(batch, executor.clone(), pump, shutdown).await;
            sampler.abort();
            if let Err(e) = executor.dedup.flush().await {
                tracing::warn!(error = %e, "flushing dedup records failed");
            }
        })
    };

    let parts = super::serve::HttpParts {
        pool: pool.clone(),
        engine: None,
        observers: false,
        queue: Some(ready),
        auth: None,
    };
    let http = super::serve::serve_http(listener, config, parts, shutdown.clone());
    let (served, jobs) = tokio::join!(http, jobs_task);
    // The HTTP side may fail to start; the job side must still stop.
    shutdown.cancel();
    if let Err(e) = jobs {
        tracing::error!(error = %e, "the job pump ended abnormally");
    }
    // Only now: the HTTP side stops at once on shutdown, but jobs finishing during the grace
    // period still record their successes in the dedup window (and `cache` actions notify)
    // through this pool; closing it with the HTTP side lost those records, so replays of
    // those changes were delivered again.
    pool.close();
    served
}

/// Keeps `fraiseql_job_queue_depth` and `fraiseql_job_dead_letters` current (they are
/// properties of the shared queue, so every worker reports the same values).
async fn sample_gauges(queue: QueueHandles, shutdown: CancellationToken) {
    let jobs = crate::metrics::metrics().observers.jobs.clone();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Ok(depth) = queue.queue.depth().await {
            jobs.queue_depth
                .set(i64::try_from(depth).unwrap_or(i64::MAX));
        }
        if let Ok(n) = queue.dead_letters.count_dead().await {
            jobs.dead_letters.set(n);
        }
    }
}
