//! The job queue seam between the observer reader (producer) and the action workers
//! (consumers).
//!
//! The reader turns every matching (change, action) pair into one [`Job`] and hands it to a
//! [`Queue`]; workers [`Queue::reserve`] jobs, run the action, then [`Queue::ack`] it, schedule
//! it again with [`Queue::retry`] or give up with [`Queue::dead_letter`]. The trait is kept
//! small on purpose so that the in-process backend ([`memory`]) and the Redis backend of the
//! scale-out issue can both implement it and be held to the same [`conformance`] suite.
//!
//! Related pieces that live next to the seam:
//! - [`backoff`]: how long to wait before the next attempt;
//! - [`dlq`]: the durable dead-letter store in PostgreSQL (used by the memory backend, and the
//!   store behind `fraiseql dlq`);
//! - [`dedup`]: the "already succeeded" window that makes replays harmless.

pub mod backoff;
mod build;
pub mod config;
pub mod conformance;
pub mod dedup;
pub mod dlq;
pub mod memory;
pub mod pump;
pub mod redis;

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use build::{QueueHandles, build};

/// One unit of work: run action `action_id` (or, for older jobs, the action at
/// `action_index`) of observer `observer` for change `change_pk`.
///
/// Everything an executor needs travels inside the job (the event document is embedded)
/// so that a job can live in another process (Redis) and be retried from the dead-letter
/// store long after the change-log row was purged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Unique id of this job instance (a replayed change gets a new id but the same key).
    pub id: Uuid,
    /// `<change pk>:<observer>:<action index>`: stable across replays; actions pass it on.
    pub key: String,
    pub change_pk: i64,
    pub observer: String,
    pub action_index: usize,
    /// The action's type name (`webhook`, `slack`, …), for metrics and the DLQ listing.
    pub action_type: String,
    /// Identity of the action the job was made for
    /// ([`crate::actions::ActionConfig::identity`]): the worker runs the action with this
    /// identity wherever it sits in the observer's list (a reordered config, or a worker of
    /// another config version during a rolling deploy). `None` for jobs queued before
    /// identities existed: they run by position (`action_index`), when the type matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_id: Option<String>,
    /// When this process first found the job's observer or action unknown (it waits for a
    /// worker that knows it until `observer_runtime.unknown_action_retry_ms` after this).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_since: Option<DateTime<Utc>>,
    /// The event document: `{"event": {...}, "before": ..., "after": ...}`.
    pub payload: serde_json::Value,
    /// Attempts made so far (0 for a fresh job).
    pub attempts: u32,
    /// One entry per failed attempt, oldest first.
    pub errors: Vec<AttemptError>,
    pub enqueued_at: DateTime<Utc>,
    /// Set when the job was re-enqueued from the dead-letter store, so that a success can
    /// resolve (delete) the dead letter and a new failure updates the same row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_id: Option<i64>,
    /// The job may have run before: its change is at or below the reader's dispatch
    /// high-water mark, it comes from the dead-letter store, it was reclaimed from a worker
    /// whose reservation expired (the Redis backend sets it on reserve), or it was handed back
    /// at shutdown. The worker consults the dedup store before running it (as it does for a
    /// job with `attempts > 0`). Fresh jobs skip that lookup.
    #[serde(default)]
    pub replay: bool,
}

impl Job {
    /// Builds a fresh job for one (change, observer, action) triple.
    pub fn new(
        change_pk: i64,
        observer: &str,
        action_index: usize,
        action_type: &str,
        payload: serde_json::Value,
    ) -> Self {
        Job {
            id: Uuid::new_v4(),
            key: idempotency_key(change_pk, observer, action_index),
            change_pk,
            observer: observer.to_owned(),
            action_index,
            action_type: action_type.to_owned(),
            action_id: None,
            waiting_since: None,
            payload,
            attempts: 0,
            errors: Vec::new(),
            enqueued_at: Utc::now(),
            dead_letter_id: None,
            replay: false,
        }
    }

    /// The job made for the action with identity `id`.
    pub fn for_action(mut self, id: &str) -> Self {
        self.action_id = Some(id.to_owned());
        self
    }

    /// Records why the job could not run yet without counting an attempt (its action is not
    /// known to this process): the action's own retry budget stays whole.
    pub fn record_wait(&mut self, reason: &str) {
        self.push_error(AttemptError {
            attempt: self.attempts,
            at: Utc::now(),
            error: bounded(reason),
            retryable: true,
        });
    }

    /// Records a failed attempt (increments `attempts`).
    pub fn record_failure(&mut self, error: &str, retryable: bool) {
        self.attempts += 1;
        self.push_error(AttemptError {
            attempt: self.attempts,
            at: Utc::now(),
            error: bounded(error),
            retryable,
        });
    }

    /// Keeps the first error (usually the cause) and the latest ones: a job retried for
    /// days, or waiting out an outage, must not grow without bound in the queue and the
    /// dead-letter store.
    fn push_error(&mut self, e: AttemptError) {
        self.errors.push(e);
        if self.errors.len() > MAX_KEPT_ERRORS {
            self.errors.remove(1);
        }
    }
}

/// Errors kept per job: the first and the latest `MAX_KEPT_ERRORS - 1`.
pub const MAX_KEPT_ERRORS: usize = 20;

/// Longest error text kept per attempt, in bytes.
const MAX_ERROR_BYTES: usize = 2048;

fn bounded(error: &str) -> String {
    if error.len() <= MAX_ERROR_BYTES {
        return error.to_owned();
    }
    let mut end = MAX_ERROR_BYTES;
    while !error.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &error[..end])
}

/// What a handler decided about its job.
#[derive(Debug)]
pub enum Outcome {
    /// Done: acknowledge.
    Ack,
    /// Run again no earlier than `at`; `job` carries the recorded failure.
    Retry { job: Job, at: DateTime<Utc> },
    /// Give up; `job` carries every attempt's error.
    DeadLetter { job: Job },
}

/// Retry delays of bookkeeping calls (ack, retry, dead letter, release) that failed: the
/// batching [`pump`] and the in-process workers wait this long before calling again, instead
/// of giving up on the job's outcome or running its action again.
pub fn bookkeeping_backoff() -> crate::backoff::Backoff {
    crate::backoff::Backoff::new(Duration::from_millis(100), Duration::from_secs(5))
}

/// The idempotency key format shared by the queue, the dedup table and the actions.
pub fn idempotency_key(change_pk: i64, observer: &str, action_index: usize) -> String {
    format!("{change_pk}:{observer}:{action_index}")
}

/// One failed attempt, kept with the job and stored with the dead letter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptError {
    pub attempt: u32,
    pub at: DateTime<Utc>,
    pub error: String,
    pub retryable: bool,
}

/// A reserved job. The `receipt` identifies this reservation to the backend (the memory
/// backend uses a counter; a Redis backend would use the in-flight entry it owns).
#[derive(Debug, Clone)]
pub struct Reservation {
    pub job: Job,
    pub receipt: String,
}

/// What [`Queue::enqueue`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// The job is now queued.
    Added,
    /// A job with the same idempotency key is already queued, delayed or in flight; the new
    /// one was dropped (enqueue is idempotent by key while a job is live).
    Duplicate,
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue is closed")]
    Closed,
    #[error("unknown reservation {0} (already acknowledged, retried or dead-lettered)")]
    UnknownReservation(String),
    #[error("dead-letter store failed: {0}")]
    DeadLetter(String),
    #[error("queue backend error: {0}")]
    Backend(String),
}

/// The queue seam. Implementations must be safe to share between the reader and many
/// workers (`Arc<dyn Queue>`).
///
/// Contract (checked by [`conformance::run_all`]):
/// - `enqueue` is idempotent by `job.key` while a job with that key is live (ready, delayed
///   or reserved); it may wait (back-pressure) when the backend is full;
/// - `reserve` hands each ready job to exactly one caller and waits at most `wait` for one;
/// - a reserved job leaves the queue only through `ack`, `retry` or `dead_letter`;
/// - `retry(at)` makes the job (with its updated attempts and errors) reservable again no
///   earlier than `at`;
/// - `dead_letter` moves the job to the backend's durable dead-letter store.
#[async_trait]
pub trait Queue: Send + Sync + 'static {
    /// Short backend name for logs and metrics (`memory`, `redis`).
    fn backend(&self) -> &'static str;

    /// True when an enqueued job survives this process dying. The reader then advances its
    /// checkpoint as soon as the enqueue returns instead of waiting for the job to finish.
    fn durable(&self) -> bool;

    async fn enqueue(&self, job: Job) -> Result<Enqueued, QueueError>;

    /// Enqueues `jobs` in order, with the same per-job contract as [`Queue::enqueue`]; one
    /// result per job. Backends override it to save round trips (Redis: one script call per
    /// chunk). When it returns `Ok`, every job is queued or was a duplicate.
    async fn enqueue_many(&self, jobs: Vec<Job>) -> Result<Vec<Enqueued>, QueueError> {
        let mut out = Vec::with_capacity(jobs.len());
        for job in jobs {
            out.push(self.enqueue(job).await?);
        }
        Ok(out)
    }

    async fn reserve(&self, wait: Duration) -> Result<Option<Reservation>, QueueError>;

    async fn ack(&self, reservation: Reservation) -> Result<(), QueueError>;

    async fn retry(&self, reservation: Reservation, at: DateTime<Utc>) -> Result<(), QueueError>;

    async fn dead_letter(&self, reservation: Reservation) -> Result<(), QueueError>;

    /// Jobs currently live in the queue (ready + delayed + reserved).
    async fn depth(&self) -> Result<u64, QueueError>;
}

/// What [`BatchQueue::ack_and_reserve`] acknowledged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AckOutcome {
    pub acked: usize,
    /// Receipts that were no longer ours (acknowledged before, or reclaimed after their
    /// visibility timeout and possibly running elsewhere).
    pub unknown: Vec<String>,
}

/// What one [`BatchQueue::ack_and_reserve`] round trip did.
#[derive(Debug, Default)]
pub struct Batch {
    pub acked: AckOutcome,
    pub reserved: Vec<Reservation>,
    /// The backend's clock when the round trip ran (ms).
    pub now_ms: i64,
    /// When nothing was reserved: the earliest delayed due time or visibility deadline
    /// (backend clock, ms), -1 when there is none.
    pub next_ms: i64,
}

/// Capability: many jobs acknowledged and reserved in one round trip, with a wake-up for
/// idle reservers. The batching [`pump`] runs over it.
#[async_trait]
pub trait BatchQueue: Queue {
    /// Most jobs one [`BatchQueue::ack_and_reserve`] call reserves.
    fn max_batch(&self) -> usize;

    /// Acknowledges `acks` (receipts), then reserves up to `max` jobs (0 = only
    /// acknowledge), without waiting for work. Retries transient failures until `deadline`
    /// (`None` = forever); `Ok(None)` when the deadline passed first.
    async fn ack_and_reserve(
        &self,
        acks: &[String],
        max: usize,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Option<Batch>, QueueError>;

    /// Completes when new work may be ready. Create it (and `enable()` it) before the
    /// [`BatchQueue::ack_and_reserve`] call whose emptiness it waits on.
    fn notified(&self) -> tokio::sync::futures::Notified<'_>;

    /// How long an idle reserver may sleep after `batch` found nothing.
    fn idle_sleep(&self, batch: &Batch) -> Duration;

    /// Hands reservations back by receipt, the stored job unchanged (a draining worker's
    /// unfinished jobs). Unknown receipts are ignored.
    async fn release_receipts(&self, receipts: &[String]) -> Result<(), QueueError>;

    /// How long a reservation stays owned without news from its holder (the visibility
    /// timeout); `None` when it never expires. The pump extends running jobs' reservations
    /// well within it.
    fn lease(&self) -> Option<Duration>;

    /// Extends the reservations `receipts` by a full [`BatchQueue::lease`] from now, in one
    /// round trip (per backend batch). Returns the receipts that were no longer ours;
    /// `Ok(None)` when the backend stayed unreachable until `deadline`.
    async fn extend_receipts(
        &self,
        receipts: &[String],
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Option<Vec<String>>, QueueError>;
}

/// Capability: the backend is a service of its own; readiness depends on reaching it.
#[async_trait]
pub trait Probe: Send + Sync + 'static {
    /// One round trip, no retries.
    async fn ping(&self) -> Result<(), QueueError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_keeps_its_first_and_latest_errors_only() {
        let mut job = Job::new(1, "o", 0, "webhook", serde_json::Value::Null);
        for i in 1..=100 {
            job.record_failure(&format!("failure {i}"), true);
        }
        job.record_wait(&"x".repeat(10_000));
        assert_eq!(job.attempts, 100);
        assert_eq!(job.errors.len(), MAX_KEPT_ERRORS);
        assert_eq!(job.errors[0].error, "failure 1", "the cause stays");
        assert_eq!(job.errors[MAX_KEPT_ERRORS - 2].error, "failure 100");
        let last = &job.errors[MAX_KEPT_ERRORS - 1].error;
        assert!(last.len() <= MAX_ERROR_BYTES + 3, "{}", last.len());
    }
}
