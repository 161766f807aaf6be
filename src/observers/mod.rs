//! The observer runtime: every committed change reaches its actions, at least once.
//!
//! ```text
//! tb_entity_change_log ──LISTEN/catch-up──▶ reader ──▶ matcher ──▶ dispatch ──▶ Queue
//!        ▲ checkpoint (safe cursor) ◀── dispatch::Tracker ◀── workers ◀──────────┘
//!                                                            │  ├─ actions::* (execute)
//!                                                            │  ├─ queue::dedup (skip replays)
//!                                                            │  └─ queue::dlq (dead letters)
//! ```
//! [`ObserverRuntime`] wires the pieces: it compiles the config (all errors at start), then
//! runs the reader ([`reader`]), the workers ([`worker`]) and a housekeeping task (claims dead
//! letters whose retry was requested by `fraiseql dlq retry`, refreshes the backlog and
//! dead-letter gauges, purges the dedup window) until the shutdown token is cancelled.
//!
//! Starting it from `serve`:
//! ```ignore
//! let runtime = ObserverRuntime::builder(settings, observers, pool, pg_config)
//!     .metrics(ObserverMetrics::new(&registry)?)
//!     .known_entities(schema.entity_names())
//!     .build()?;                      // config errors surface here
//! tokio::spawn(runtime.run(shutdown.child_token()));
//! ```

pub mod condition;
pub mod config;
pub mod dispatch;
pub mod executor;
pub mod matcher;
pub mod nats_source;
pub mod reader;
pub mod worker;

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::actions::{ActionDeps, EnvLookup};
use crate::metrics::ObserverMetrics;
use crate::queue::dedup::{DedupStore, PgDedup};
use crate::queue::dlq::PgDeadLetters;
use crate::queue::pump::{self, PumpConfig};
use crate::queue::{BatchQueue, Queue, QueueHandles};

pub use config::{ConfigError, ObserverConfig, ObserverSettings};
use dispatch::{Dispatcher, Tracker};
use matcher::CompiledObservers;

#[derive(Debug, thiserror::Error)]
pub enum ObserverError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("building the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

/// Builds an [`ObserverRuntime`]; see the module docs.
pub struct ObserverRuntimeBuilder {
    settings: ObserverSettings,
    observers: Vec<ObserverConfig>,
    pool: Pool,
    pg_config: tokio_postgres::Config,
    metrics: Option<ObserverMetrics>,
    queue: Option<QueueHandles>,
    nats: Option<crate::nats::NatsConfig>,
    tls_ca_file: String,
    known_entities: Option<Vec<String>>,
    env: Option<EnvLookup>,
}

impl ObserverRuntimeBuilder {
    /// Registered metrics (default: an unregistered set).
    pub fn metrics(mut self, metrics: ObserverMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The queue backend ([`crate::queue::build`]). Default: the in-process queue of
    /// `queue_capacity` jobs that dead-letters into PostgreSQL. A backend that reserves in
    /// batches has its jobs executed (when `run_workers` is set) by the batching [`pump`],
    /// as `fraiseql worker` does, instead of one-by-one workers.
    pub fn queue(mut self, queue: QueueHandles) -> Self {
        self.queue = Some(queue);
        self
    }

    /// `[nats]`: the reader publishes every change to JetStream, and with `consume` the
    /// observers take their events from the durable consumer ([`nats_source`]).
    pub fn nats(mut self, config: crate::nats::NatsConfig) -> Self {
        self.nats = config.enabled().then_some(config);
        self
    }

    /// `database.tls_ca_file`, for the reader's own session (TLS as for the pool).
    pub fn tls_ca_file(mut self, path: &str) -> Self {
        self.tls_ca_file = path.to_string();
        self
    }

    /// Entity names from the compiled schema; an observer on any other entity is an error.
    pub fn known_entities(mut self, entities: Vec<String>) -> Self {
        self.known_entities = Some(entities);
        self
    }

    /// Where `*_env` secrets are looked up (default: the process environment).
    pub fn env(mut self, lookup: EnvLookup) -> Self {
        self.env = Some(lookup);
        self
    }

    /// Validates and compiles everything: conditions, templates, URLs, secrets.
    pub fn build(self) -> Result<ObserverRuntime, ObserverError> {
        let mut deps = ActionDeps::new(self.pool.clone())?;
        if let Some(env) = self.env {
            deps.env = env;
        }
        let observers = CompiledObservers::compile(
            &self.observers,
            &self.settings,
            self.known_entities.as_deref(),
            &deps,
        )?;
        let dead_letters = PgDeadLetters::new(self.pool.clone());
        let queue = self.queue.unwrap_or_else(|| {
            QueueHandles::memory(self.settings.queue_capacity, dead_letters.clone())
        });
        Ok(ObserverRuntime {
            pool: self.pool.clone(),
            dedup: Arc::new(PgDedup::new(
                self.pool.clone(),
                Duration::from_secs(self.settings.dedup_window_secs),
            )),
            settings: self.settings,
            observers: Arc::new(observers),
            pg_config: self.pg_config,
            metrics: self.metrics.unwrap_or_else(ObserverMetrics::unregistered),
            queue,
            nats: self.nats,
            tls_ca_file: self.tls_ca_file,
            dead_letters,
        })
    }
}

/// The compiled, ready-to-run observer runtime.
pub struct ObserverRuntime {
    settings: ObserverSettings,
    observers: Arc<CompiledObservers>,
    pg_config: tokio_postgres::Config,
    metrics: ObserverMetrics,
    queue: QueueHandles,
    nats: Option<crate::nats::NatsConfig>,
    tls_ca_file: String,
    dead_letters: PgDeadLetters,
    dedup: Arc<dyn DedupStore>,
    /// The shared pool, for reading a change a NATS reference points to.
    pool: Pool,
}

impl ObserverRuntime {
    /// `pg_config` is used for the reader's own connection (LISTEN + advisory lock; TLS as
    /// for the pool, see [`ObserverRuntimeBuilder::tls_ca_file`]); everything else goes
    /// through `pool`.
    pub fn builder(
        settings: ObserverSettings,
        observers: Vec<ObserverConfig>,
        pool: Pool,
        pg_config: tokio_postgres::Config,
    ) -> ObserverRuntimeBuilder {
        ObserverRuntimeBuilder {
            settings,
            observers,
            pool,
            pg_config,
            metrics: None,
            queue: None,
            nats: None,
            tls_ca_file: String::new(),
            known_entities: None,
            env: None,
        }
    }

    pub fn queue(&self) -> Arc<dyn Queue> {
        self.queue.queue.clone()
    }

    /// The job executor over this runtime's compiled observers and dedup store: what
    /// `fraiseql worker` runs without the reader.
    pub fn executor(&self) -> Arc<executor::JobExecutor> {
        Arc::new(executor::JobExecutor {
            observers: self.observers.clone(),
            dedup: self.dedup.clone(),
            metrics: self.metrics.jobs.clone(),
            unknown_action_retry: Duration::from_millis(self.settings.unknown_action_retry_ms),
        })
    }

    pub fn dead_letters(&self) -> PgDeadLetters {
        self.dead_letters.clone()
    }

    pub fn metrics(&self) -> &ObserverMetrics {
        &self.metrics
    }

    /// Runs until `shutdown` is cancelled, then drains: the reader stops, workers finish (or
    /// after `shutdown_grace_ms` hand back) their jobs, and the checkpoint is written.
    pub async fn run(self, shutdown: CancellationToken) {
        if self.observers.is_empty() {
            info!("no observers configured; observer runtime idle");
            return;
        }
        let tracker = Arc::new(Tracker::default());
        let mut tasks = tokio::task::JoinSet::new();

        // Workers get their own token: they must keep running while the reader drains, and
        // stop only after it.
        let workers_stop = CancellationToken::new();
        let drained = CancellationToken::new();
        if self.settings.run_workers {
            let executor = Arc::new(executor::JobExecutor {
                observers: self.observers.clone(),
                dedup: self.dedup.clone(),
                metrics: self.metrics.jobs.clone(),
                unknown_action_retry: Duration::from_millis(self.settings.unknown_action_retry_ms),
            });
            let grace = Duration::from_millis(self.settings.shutdown_grace_ms);
            match &self.queue.batch {
                Some(batch) => {
                    let config = PumpConfig {
                        concurrency: self.settings.concurrency,
                        batch: self.settings.concurrency.clamp(1, 1000),
                        grace,
                    };
                    tasks.spawn(run_pump(
                        batch.clone(),
                        executor,
                        config,
                        workers_stop.clone(),
                    ));
                }
                None => {
                    let workers = Arc::new(worker::Workers {
                        executor,
                        queue: self.queue.queue.clone(),
                        tracker: tracker.clone(),
                        concurrency: self.settings.concurrency,
                        grace,
                    });
                    tasks.spawn(workers.run(workers_stop.clone()));
                }
            }
        }
        let dispatcher = Dispatcher {
            observers: self.observers.clone(),
            queue: self.queue.queue.clone(),
            tracker: tracker.clone(),
            metrics: self.metrics.clone(),
        };
        if let Some(nats) = self.nats.as_ref().filter(|n| n.consume) {
            tasks.spawn(nats_source::run(
                nats.clone(),
                nats_source::dispatcher(&dispatcher),
                self.pool.clone(),
                shutdown.clone(),
            ));
        }
        let reader = if self.settings.run_reader {
            let reader = reader::Reader {
                settings: self.settings.clone(),
                pg_config: self.pg_config.clone(),
                dispatcher,
                nats: self.nats.clone(),
                tls_ca_file: self.tls_ca_file.clone(),
            };
            Some(tokio::spawn(reader.run(shutdown.clone(), drained.clone())))
        } else {
            None
        };
        tasks.spawn(housekeeping(
            self.queue.clone(),
            self.dead_letters.clone(),
            self.dedup.clone(),
            self.metrics.clone(),
            Duration::from_secs(self.settings.dlq_retry_lease_secs),
            shutdown.clone(),
        ));

        // Drain order: the reader stops dispatching, workers finish (or hand back) their
        // in-flight jobs, then the reader writes the final checkpoint and lets go of the lock.
        shutdown.cancelled().await;
        workers_stop.cancel();
        while tasks.join_next().await.is_some() {}
        if let Err(e) = self.dedup.flush().await {
            warn!(error = %e, "flushing dedup records failed");
        }
        drained.cancel();
        if let Some(r) = reader {
            let _ = r.await;
        }
        info!("observer runtime stopped");
    }
}

/// Dead-letter retries requested by `fraiseql dlq retry`, gauges, dedup purge.
async fn housekeeping(
    handles: QueueHandles,
    dead_letters: PgDeadLetters,
    dedup: Arc<dyn DedupStore>,
    metrics: ObserverMetrics,
    lease: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks: u64 = 0;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        ticks += 1;
        let queue = &handles.queue;
        match dead_letters.claim_retries(100, lease).await {
            Ok(jobs) => {
                for job in jobs {
                    info!(key = %job.key, "re-enqueueing a dead letter on request");
                    let action = crate::metrics::action_label(&job.action_type);
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        r = queue.enqueue(job) => match r {
                            Ok(crate::queue::Enqueued::Added) => {
                                metrics.jobs.queued.with_label_values(&[action]).inc();
                            }
                            Ok(crate::queue::Enqueued::Duplicate) => {}
                            Err(e) => warn!(error = %e, "re-enqueueing a dead letter failed (reclaimed after the lease)"),
                        },
                    }
                }
            }
            Err(e) => warn!(error = %e, "claiming dead-letter retries failed"),
        }
        // The gauge counts the backend's own dead letters. PostgreSQL's rows are claimed
        // above whatever the backend, so after a switch to Redis they drain into it.
        if let Ok(n) = handles.dead_letters.count_dead().await {
            metrics.jobs.dead_letters.set(n);
        }
        if let Ok(depth) = queue.depth().await {
            metrics
                .jobs
                .queue_depth
                .set(i64::try_from(depth).unwrap_or(i64::MAX));
        }
        // Every ~10 minutes.
        if ticks % 1200 == 1
            && let Err(e) = dedup.purge_expired().await
        {
            warn!(error = %e, "purging the dedup window failed");
        }
    }
}

/// Executes jobs from a batching backend with the [`pump`] until `shutdown`, then drains:
/// what `fraiseql worker` runs, and `serve` with `[queue] run_workers = true`.
pub async fn run_pump(
    queue: Arc<dyn BatchQueue>,
    executor: Arc<executor::JobExecutor>,
    config: PumpConfig,
    shutdown: CancellationToken,
) {
    let metrics = executor.metrics.clone();
    let handler = move |job| {
        let executor = executor.clone();
        async move { executor.run(job).await }
    };
    // The pump retries every failed backend call itself; should it ever return an error,
    // start again unless shutting down, so a worker never silently stops.
    loop {
        match pump::run_metered(
            queue.clone(),
            config.clone(),
            metrics.clone(),
            handler.clone(),
            shutdown.clone(),
        )
        .await
        {
            Ok(stats) => {
                metrics.released.inc_by(stats.released);
                info!(
                    acked = stats.acked,
                    retried = stats.retried,
                    dead_lettered = stats.dead_lettered,
                    released = stats.released,
                    "job pump stopped"
                );
                return;
            }
            Err(e) => {
                warn!(error = %e, "job pump failed; restarting in 1 s");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}
