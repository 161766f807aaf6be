//! Executes one job and decides what becomes of it: the part shared by the in-process
//! workers ([`super::worker`], over any [`crate::queue::Queue`]) and `fraiseql worker`
//! ([`crate::queue::pump`] over Redis).
//!
//! For each job:
//! 1. a job that may have run before (marked `replay`: its change may have been dispatched
//!    before, it was reclaimed after its worker's lease expired, or handed back at shutdown;
//!    or one with earlier attempts, whose last ack may have been lost) is skipped when its
//!    idempotency key already succeeded within the dedup window; fresh jobs skip the lookup;
//! 2. the action runs; on success the key is recorded as succeeded → [`Outcome::Ack`];
//! 3. a retryable error with attempts left → [`Outcome::Retry`] after the observer's backoff
//!    (or the receiver's `Retry-After` when longer);
//! 4. a permanent error or the last attempt → [`Outcome::DeadLetter`] with every attempt's
//!    error. Permanent errors are not retried (a 400 stays a 400): `fraiseql dlq retry`
//!    re-runs them once fixed.
//!
//! The caller applies the outcome to its queue. A job runs the action it was made for, found
//! by the action's identity (jobs of older versions, without one: by position, when the
//! type matches), never merely whatever sits at its index now. A job whose observer or
//! action this process does not know — queued by another config version, e.g. during a
//! rolling deploy — is retried with backoff (without spending its attempts) for
//! `observer_runtime.unknown_action_retry_ms` after it first met an unknown action, so that
//! a worker of the new version picks it up; then it is dead-lettered with that reason.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tracing::{debug, warn};

use super::matcher::CompiledObservers;
use crate::metrics::JobMetrics;
use crate::queue::dedup::DedupStore;
use crate::queue::{Job, Outcome};

/// Opens every error recorded for a job whose action was unknown.
const UNKNOWN_ACTION: &str = "unknown action: ";

pub struct JobExecutor {
    pub observers: Arc<CompiledObservers>,
    pub dedup: Arc<dyn DedupStore>,
    pub metrics: JobMetrics,
    /// `observer_runtime.unknown_action_retry_ms`.
    pub unknown_action_retry: Duration,
}

impl JobExecutor {
    /// Runs `job` once. Never panics on a job's content: anything unexpected becomes a
    /// dead letter with the reason.
    pub async fn run(&self, mut job: Job) -> Outcome {
        let (observer, action) = match self.observers.action_for(&job) {
            Ok(found) => found,
            Err(reason) => return self.unknown_action(job, &reason),
        };
        let action_type = action.type_name();

        let seen = if job.replay || job.attempts > 0 {
            self.dedup.already_succeeded(&job.key).await
        } else {
            // Never handed to a worker before: it cannot have succeeded.
            Ok(false)
        };
        match seen {
            Ok(true) => {
                debug!(key = %job.key, "already delivered; skipped");
                self.metrics.dedup_skips.inc();
                return Outcome::Ack;
            }
            Ok(false) => {}
            // At-least-once: when in doubt, deliver.
            Err(e) => warn!(error = %e, "dedup lookup failed; executing anyway"),
        }

        let started = Instant::now();
        let result = action.execute(&job).await;
        self.metrics
            .duration
            .with_label_values(&[action_type])
            .observe(started.elapsed().as_secs_f64());

        match result {
            Ok(()) => {
                self.metrics
                    .executed
                    .with_label_values(&[action_type])
                    .inc();
                if let Err(e) = self.dedup.record_success(&job.key).await {
                    warn!(error = %e, "recording a delivered key failed (a replay may deliver it again)");
                }
                Outcome::Ack
            }
            Err(e) => {
                let retryable = e.is_retryable();
                let kind = if retryable { "retryable" } else { "permanent" };
                self.metrics
                    .failed
                    .with_label_values(&[action_type, kind])
                    .inc();
                job.record_failure(&e.to_string(), retryable);
                if retryable && observer.retry.may_retry(job.attempts) {
                    let delay = observer.retry.delay(job.attempts, e.retry_after());
                    debug!(key = %job.key, attempt = job.attempts, ?delay, error = %e, "action failed; retrying");
                    self.metrics.retried.with_label_values(&[action_type]).inc();
                    let at = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
                    Outcome::Retry { job, at }
                } else {
                    warn!(key = %job.key, attempts = job.attempts, error = %e, "action failed for good; dead-lettering");
                    self.metrics
                        .dead_lettered
                        .with_label_values(&[action_type])
                        .inc();
                    Outcome::DeadLetter { job }
                }
            }
        }
    }

    /// The job's observer or action is not in this process's configuration: look again
    /// later, until `unknown_action_retry` after the first time, then dead-letter it.
    fn unknown_action(&self, mut job: Job, reason: &str) -> Outcome {
        let label = crate::metrics::action_label(&job.action_type);
        let now = Utc::now();
        // Kept on the job itself: its error list is bounded, so the first wait may leave it.
        let first = *job.waiting_since.get_or_insert(now);
        let limit = chrono::Duration::from_std(self.unknown_action_retry).unwrap_or_default();
        if now - first >= limit {
            warn!(key = %job.key, reason, "the job's action is not configured here; dead-lettering");
            job.record_failure(
                &format!(
                    "{UNKNOWN_ACTION}{reason}; still unknown after {} ms \
                     (observer_runtime.unknown_action_retry_ms): the configuration changed since \
                     the job was queued",
                    self.unknown_action_retry.as_millis()
                ),
                false,
            );
            self.metrics.dead_lettered.with_label_values(&[label]).inc();
            return Outcome::DeadLetter { job };
        }
        job.record_wait(&format!("{UNKNOWN_ACTION}{reason}"));
        // As long again as it has waited so far (about doubling), 1 s to a minute, jittered.
        let waited = (now - first).to_std().unwrap_or_default();
        let delay = crate::backoff::equal_jitter(
            waited.clamp(Duration::from_secs(1), Duration::from_secs(60)),
        );
        let at = (now + chrono::Duration::from_std(delay).unwrap_or_default()).min(first + limit);
        debug!(key = %job.key, reason, ?delay, "the job's action is not configured here (yet); retrying");
        self.metrics.retried.with_label_values(&[label]).inc();
        Outcome::Retry { job, at }
    }
}
