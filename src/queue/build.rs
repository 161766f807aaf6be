//! The one place that turns `[queue]` into a backend. Everything else holds
//! [`QueueHandles`]: the [`Queue`] seam plus the capabilities the chosen backend has, so no
//! role, CLI command or runtime names a concrete backend.

use std::sync::Arc;

use deadpool_postgres::Pool;

use super::config::{QueueBackend, QueueConfig};
use super::dlq::{DeadLetterAdmin, PgDeadLetters};
use super::memory::MemoryQueue;
use super::redis::{RedisDeadLetters, RedisQueue};
use super::{BatchQueue, Probe, Queue, QueueError};

/// A queue backend as the rest of the process sees it. Cheap to clone.
#[derive(Clone)]
pub struct QueueHandles {
    /// The seam: enqueue, reserve, ack, retry, dead-letter, depth.
    pub queue: Arc<dyn Queue>,
    /// Set when the backend reserves and acknowledges in batches: workers then run the
    /// batching [`super::pump`] instead of one-by-one workers.
    pub batch: Option<Arc<dyn BatchQueue>>,
    /// Set when the backend is a separate service that readiness depends on.
    pub probe: Option<Arc<dyn Probe>>,
    /// Where this backend's dead letters are listed, retried and purged.
    pub dead_letters: Arc<dyn DeadLetterAdmin>,
}

impl std::fmt::Debug for QueueHandles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueHandles")
            .field("backend", &self.queue.backend())
            .field("batch", &self.batch.is_some())
            .field("probe", &self.probe.is_some())
            .finish_non_exhaustive()
    }
}

impl QueueHandles {
    /// The in-process queue of `capacity` jobs, dead-lettering into PostgreSQL.
    pub fn memory(capacity: usize, dead_letters: PgDeadLetters) -> Self {
        QueueHandles {
            queue: Arc::new(MemoryQueue::new(capacity, Arc::new(dead_letters.clone()))),
            batch: None,
            probe: None,
            dead_letters: Arc::new(dead_letters),
        }
    }

    /// A connected Redis queue, with its own dead letters.
    pub fn redis(queue: Arc<RedisQueue>) -> Self {
        QueueHandles {
            queue: queue.clone(),
            batch: Some(queue.clone()),
            probe: Some(queue.clone()),
            dead_letters: Arc::new(RedisDeadLetters::new(queue)),
        }
    }
}

/// Builds the backend `config` names. The memory backend holds `memory_capacity` jobs and
/// dead-letters into PostgreSQL through `pool`. Redis is connected first, waiting while it
/// is unreachable (callers bound the wait with a timeout or their shutdown signal), and
/// counts into the process's registered job metrics.
pub async fn build(
    config: &QueueConfig,
    pool: &Pool,
    memory_capacity: usize,
) -> Result<QueueHandles, QueueError> {
    match config.backend {
        QueueBackend::Memory => Ok(QueueHandles::memory(
            memory_capacity,
            PgDeadLetters::new(pool.clone()),
        )),
        QueueBackend::Redis => {
            let jobs = crate::metrics::metrics().observers.jobs.clone();
            let queue = RedisQueue::connect(config).await?.with_metrics(jobs);
            tracing::info!(
                url = %crate::redact::redact_url(&config.url),
                prefix = %config.key_prefix,
                "redis queue connected"
            );
            Ok(QueueHandles::redis(Arc::new(queue)))
        }
    }
}
