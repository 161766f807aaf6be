//! Workers: reserve a job, run its action, then acknowledge, retry or dead-letter it.
//!
//! `concurrency` workers share the queue. For each job a worker
//! 1. for a job marked `replay` (its change may have been dispatched before), skips it when
//!    its idempotency key already succeeded within the dedup window, counting
//!    `fraiseql_observer_dedup_skips_total`; fresh jobs skip the lookup;
//! 2. runs the action; on success records the key as succeeded and acknowledges;
//! 3. on a retryable error with attempts left, schedules a retry after the observer's
//!    backoff (or the receiver's `Retry-After` when longer);
//! 4. on a permanent error or the last attempt, dead-letters the job with every attempt's
//!    error. Permanent errors are not retried (a 400 stays a 400): they go to the dead-letter
//!    store after one attempt, and `fraiseql dlq retry` re-runs them once fixed.
//!
//! Every finished job (acked or dead-lettered) is reported to the dispatch [`Tracker`] so the
//! reader's checkpoint can move. On shutdown a worker stops reserving; the job in hand gets
//! `shutdown_grace_ms` to finish, after which it is handed back to the queue (retry now) —
//! for the memory queue that means it is replayed from the checkpoint by the next start.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::dispatch::Tracker;
use super::matcher::CompiledObservers;
use crate::metrics::ObserverMetrics;
use crate::queue::dedup::DedupStore;
use crate::queue::dlq::PgDeadLetters;
use crate::queue::{Queue, Reservation};

/// How long to wait before trying again when the dead-letter store itself is unreachable.
const DEAD_LETTER_RETRY: Duration = Duration::from_secs(5);

pub struct Workers {
    pub observers: Arc<CompiledObservers>,
    pub queue: Arc<dyn Queue>,
    pub dedup: Arc<dyn DedupStore>,
    /// Resolves dead letters whose retry succeeded (PostgreSQL store).
    pub dead_letters: Option<PgDeadLetters>,
    pub tracker: Arc<Tracker>,
    pub metrics: ObserverMetrics,
    pub concurrency: usize,
    pub grace: Duration,
}

impl Workers {
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..self.concurrency.max(1) {
            let me = self.clone();
            let shutdown = shutdown.clone();
            set.spawn(async move { me.worker_loop(i, shutdown).await });
        }
        while set.join_next().await.is_some() {}
        info!("observer workers stopped");
    }

    async fn worker_loop(&self, id: usize, shutdown: CancellationToken) {
        loop {
            // Biased: once shutdown is signalled a worker must not take another job, even
            // when one is ready (an unbiased select picks a ready branch at random).
            let reserved = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                r = self.queue.reserve(Duration::from_secs(1)) => r,
            };
            match reserved {
                Ok(Some(r)) => self.process(r, &shutdown).await,
                Ok(None) => {}
                Err(e) => {
                    warn!(worker = id, error = %e, "reserving a job failed");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    }

    async fn process(&self, mut r: Reservation, shutdown: &CancellationToken) {
        let Some((observer, action)) = self.observers.action(&r.job.observer, r.job.action_index)
        else {
            r.job.record_failure(
                "observer or action is no longer configured (config changed since the job was queued)",
                false,
            );
            self.dead_letter(r).await;
            return;
        };
        let action = action.clone();
        let policy = observer.retry.clone();
        let action_type = action.type_name();

        let seen = if r.job.replay {
            self.dedup.already_succeeded(&r.job.key).await
        } else {
            // Never dispatched before: it cannot have succeeded.
            Ok(false)
        };
        match seen {
            Ok(true) => {
                debug!(key = %r.job.key, "already delivered; skipped");
                self.metrics.dedup_skips.inc();
                self.succeeded(r, false).await;
                return;
            }
            Ok(false) => {}
            // At-least-once: when in doubt, deliver.
            Err(e) => warn!(error = %e, "dedup lookup failed; executing anyway"),
        }

        let started = Instant::now();
        let outcome = {
            let exec = action.execute(&r.job);
            tokio::pin!(exec);
            let grace = self.grace;
            tokio::select! {
                res = &mut exec => Some(res),
                _ = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => None,
            }
        };
        self.metrics
            .action_duration
            .with_label_values(&[action_type])
            .observe(started.elapsed().as_secs_f64());

        match outcome {
            None => {
                info!(key = %r.job.key, "shutdown grace period over; handing the job back");
                if let Err(e) = self.queue.retry(r, Utc::now()).await {
                    warn!(error = %e, "handing a job back failed");
                }
            }
            Some(Ok(())) => {
                self.metrics
                    .actions_executed
                    .with_label_values(&[action_type])
                    .inc();
                self.succeeded(r, true).await;
            }
            Some(Err(e)) => {
                let kind = if e.is_retryable() {
                    "retryable"
                } else {
                    "permanent"
                };
                self.metrics
                    .action_errors
                    .with_label_values(&[action_type, kind])
                    .inc();
                r.job.record_failure(&e.to_string(), e.is_retryable());
                if e.is_retryable() && policy.may_retry(r.job.attempts) {
                    let delay = policy.delay(r.job.attempts, e.retry_after());
                    debug!(key = %r.job.key, attempt = r.job.attempts, ?delay, error = %e, "action failed; retrying");
                    let at = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
                    if let Err(qe) = self.queue.retry(r, at).await {
                        warn!(error = %qe, "scheduling a retry failed");
                    }
                } else {
                    warn!(key = %r.job.key, attempts = r.job.attempts, error = %e, "action failed for good; dead-lettering");
                    self.dead_letter(r).await;
                }
            }
        }
    }

    async fn succeeded(&self, r: Reservation, record: bool) {
        if record && let Err(e) = self.dedup.record_success(&r.job.key).await {
            warn!(error = %e, "recording a delivered key failed (a replay may deliver it again)");
        }
        if let (Some(id), Some(dl)) = (r.job.dead_letter_id, &self.dead_letters)
            && let Err(e) = dl.resolve(id).await
        {
            warn!(error = %e, dead_letter = id, "resolving a retried dead letter failed");
        }
        let key = r.job.key.clone();
        if let Err(e) = self.queue.ack(r).await {
            warn!(error = %e, "acknowledging a job failed");
        }
        self.tracker.finish(&key);
    }

    async fn dead_letter(&self, r: Reservation) {
        let key = r.job.key.clone();
        match self.queue.dead_letter(r.clone()).await {
            Ok(()) => {
                self.metrics.dead_letters.inc();
                self.tracker.finish(&key);
            }
            Err(e) => {
                // The job stays in the queue (and the checkpoint behind it) until the
                // dead-letter store accepts it.
                warn!(error = %e, "dead-lettering failed; will try again");
                let at =
                    Utc::now() + chrono::Duration::from_std(DEAD_LETTER_RETRY).unwrap_or_default();
                // It comes back through the action once more: a permanent error or an
                // exhausted budget lands here again.
                if let Err(e) = self.queue.retry(r, at).await {
                    warn!(error = %e, "re-queueing an undeliverable dead letter failed");
                }
            }
        }
    }
}
