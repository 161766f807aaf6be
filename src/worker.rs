//! The `worker` role: executes observer jobs from an external queue (Redis), nothing else.
//!
//! It compiles the same `[[observers]]` as `serve` (a job names its observer and action; the
//! worker looks them up), connects to PostgreSQL (the dedup window and the `cache` action
//! live there) and to Redis, and runs the batching [`crate::queue::pump`] with
//! `[worker] concurrency` slots. `/healthz`, `/readyz` (PostgreSQL and Redis) and `/metrics`
//! are served on `[worker] listen`.
//!
//! Shutdown (SIGINT/SIGTERM): the pump stops reserving, running jobs get
//! `[worker] grace_period_ms` to finish, and the rest are handed back to the queue at once —
//! another worker takes them without waiting for the visibility timeout. A worker killed
//! outright (`kill -9`) loses nothing either: its reservations expire after
//! `[queue] visibility_timeout_ms` and are reclaimed by whichever worker reserves next.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::http::QueueReadiness;
use crate::queue::QueueHandles;
use crate::queue::pump::PumpConfig;

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
    mut config: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if !config.queue.backend.is_external() {
        anyhow::bail!(
            "fraiseql worker consumes the Redis queue, but queue.backend is \"memory\" (from {}): \
             set [queue] backend = \"redis\" (with the memory queue, serve runs the workers itself)",
            config.origins.of("queue.backend")
        );
    }
    if config.observers.is_empty() {
        anyhow::bail!(
            "no [[observers]] configured: the worker runs the actions of the observers in the \
             configuration, so it needs the same [[observers]] as serve"
        );
    }
    let pool = crate::db::pool(&config.database)?;
    // Compile now: a bad observer config fails the start, not the first job.
    let runtime = crate::serve::build_observers(&config, pool.clone(), None, None)?;
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
            let Some(queue) = crate::serve::connect_queue(&config, &pool, &shutdown).await else {
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

    config.graphql.schema.clear();
    config.observers.clear();
    let http =
        crate::serve::serve_http(listener, config, pool, None, Some(ready), shutdown.clone());
    let (served, jobs) = tokio::join!(http, jobs_task);
    // The HTTP side may fail to start; the job side must still stop.
    shutdown.cancel();
    if let Err(e) = jobs {
        tracing::error!(error = %e, "the job pump ended abnormally");
    }
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
