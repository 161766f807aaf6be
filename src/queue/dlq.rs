//! Dead letters: the admin capability every backend offers ([`DeadLetterAdmin`], what
//! `fraiseql dlq` and the dead-letter gauge use), the shared row shape ([`DeadLetter`]), and
//! the durable store in PostgreSQL (`fraiseql.tb_observer_dead_letter`) behind the memory
//! backend. The Redis backend keeps its own ([`crate::queue::redis::RedisDeadLetters`]).
//!
//! A job lands here when its action failed permanently or ran out of attempts; the row keeps
//! the whole job (event document included) and every attempt's error. The memory queue
//! writes through [`DeadLetterSink`] before it forgets a job, so a dead letter survives a
//! crash.
//!
//! A PostgreSQL retry does not run the action from the CLI process; it marks
//! the row `retry_requested`, and the observer runtime of a running `serve` (which owns the
//! queue) claims such rows, re-enqueues the job with a fresh attempt budget, and either
//! deletes the row when the job succeeds or marks it `dead` again (with the new errors
//! appended) when it fails. Rows claimed by an instance that died are reclaimed after a lease.

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use serde::Serialize;

use super::{AttemptError, Job, QueueError};

#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error("database pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("database: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("stored job is not valid: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("dead letter {id} is not a valid job: {source}")]
    InvalidJob { id: i64, source: serde_json::Error },
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// Where a queue backend writes jobs that it gives up on.
#[async_trait]
pub trait DeadLetterSink: Send + Sync + 'static {
    async fn store(&self, job: &Job) -> Result<(), DlqError>;

    /// A job re-enqueued from dead letter `id` succeeded: the dead letter is resolved.
    async fn resolve(&self, id: i64) -> Result<(), DlqError>;
}

/// Status of a dead-letter row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadLetterStatus {
    Dead,
    RetryRequested,
    Retrying,
}

impl DeadLetterStatus {
    fn parse(s: &str) -> Self {
        match s {
            "retry_requested" => DeadLetterStatus::RetryRequested,
            "retrying" => DeadLetterStatus::Retrying,
            _ => DeadLetterStatus::Dead,
        }
    }
}

/// One dead letter, as `dlq list --json` / `dlq show` print it.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    pub id: i64,
    pub idempotency_key: String,
    pub change_pk: i64,
    pub observer: String,
    pub action_index: i32,
    pub action_type: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub status: DeadLetterStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub errors: Vec<AttemptError>,
    pub job: Job,
}

/// Filters for [`DeadLetterAdmin::list`].
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only this observer's dead letters.
    pub observer: Option<String>,
    /// Most rows returned (newest first); `None` = all.
    pub limit: Option<i64>,
}

/// What [`DeadLetterAdmin::retry`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryOutcome {
    /// Queued again (or, for a store whose retries go through the observer runtime, handed
    /// to it); the dead letter is gone once the job succeeds.
    Retried,
    /// A live job with the same idempotency key exists; the dead letter stays.
    AlreadyLive,
    NotFound,
}

/// Counts from [`DeadLetterAdmin::retry_all`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RetryAllSummary {
    pub retried: u64,
    pub already_live: u64,
}

const COLUMNS: &str = "pk, idempotency_key, change_pk, observer, action_index, action_type, \
     attempts, last_error, status, created_at, updated_at, errors, job";

/// The PostgreSQL dead-letter store. Cheap to clone (holds the pool).
#[derive(Clone)]
pub struct PgDeadLetters {
    pool: Pool,
}

impl PgDeadLetters {
    pub fn new(pool: Pool) -> Self {
        PgDeadLetters { pool }
    }

    fn row_to_dead_letter(row: &tokio_postgres::Row) -> Result<DeadLetter, DlqError> {
        let errors: serde_json::Value = row.get("errors");
        let job: serde_json::Value = row.get("job");
        Ok(DeadLetter {
            id: row.get("pk"),
            idempotency_key: row.get("idempotency_key"),
            change_pk: row.get("change_pk"),
            observer: row.get("observer"),
            action_index: row.get("action_index"),
            action_type: row.get("action_type"),
            attempts: row.get("attempts"),
            last_error: row.get("last_error"),
            status: DeadLetterStatus::parse(row.get::<_, &str>("status")),
            created_at: row.get("created_at"),
            updated_at: row.get("updated_at"),
            errors: serde_json::from_value(errors)?,
            job: serde_json::from_value(job)?,
        })
    }

    /// Newest first.
    pub async fn list(&self, filter: &ListFilter) -> Result<Vec<DeadLetter>, DlqError> {
        let client = self.pool.get().await?;
        let sql = format!(
            "SELECT {COLUMNS} FROM fraiseql.tb_observer_dead_letter \
             WHERE ($1::text IS NULL OR observer = $1) ORDER BY pk DESC LIMIT $2"
        );
        let rows = client
            .query(&sql, &[&filter.observer, &filter.limit.unwrap_or(i64::MAX)])
            .await?;
        rows.iter().map(Self::row_to_dead_letter).collect()
    }

    pub async fn show(&self, id: i64) -> Result<Option<DeadLetter>, DlqError> {
        let client = self.pool.get().await?;
        let sql = format!("SELECT {COLUMNS} FROM fraiseql.tb_observer_dead_letter WHERE pk = $1");
        let row = client.query_opt(&sql, &[&id]).await?;
        row.as_ref().map(Self::row_to_dead_letter).transpose()
    }

    /// Number of dead letters waiting for an operator (status `dead`).
    pub async fn count_dead(&self) -> Result<i64, DlqError> {
        let client = self.pool.get().await?;
        let row = client
            .query_one(
                "SELECT count(*) FROM fraiseql.tb_observer_dead_letter WHERE status = 'dead'",
                &[],
            )
            .await?;
        Ok(row.get(0))
    }

    /// `dlq retry ID`: asks the running observer runtime to re-enqueue the job. Returns
    /// false when no such dead letter exists.
    pub async fn request_retry(&self, id: i64) -> Result<bool, DlqError> {
        let client = self.pool.get().await?;
        let n = client
            .execute(
                "UPDATE fraiseql.tb_observer_dead_letter \
                 SET status = 'retry_requested', updated_at = now() \
                 WHERE pk = $1 AND status = 'dead'",
                &[&id],
            )
            .await?;
        if n > 0 {
            client.execute("NOTIFY fraiseql_dlq", &[]).await?;
            return Ok(true);
        }
        // Already requested or being retried counts as success; a missing id does not.
        let exists = client
            .query_opt(
                "SELECT 1 FROM fraiseql.tb_observer_dead_letter WHERE pk = $1",
                &[&id],
            )
            .await?;
        Ok(exists.is_some())
    }

    /// `dlq retry --all`: returns how many dead letters were queued for retry.
    pub async fn request_retry_all(&self) -> Result<u64, DlqError> {
        let client = self.pool.get().await?;
        let n = client
            .execute(
                "UPDATE fraiseql.tb_observer_dead_letter \
                 SET status = 'retry_requested', updated_at = now() WHERE status = 'dead'",
                &[],
            )
            .await?;
        if n > 0 {
            client.execute("NOTIFY fraiseql_dlq", &[]).await?;
        }
        Ok(n)
    }

    /// `dlq purge [--older-than D]`: deletes dead letters (status `dead`) created before
    /// now − D, or all of them. Returns how many were deleted.
    pub async fn purge(&self, older_than: Option<Duration>) -> Result<u64, DlqError> {
        let client = self.pool.get().await?;
        let secs = older_than.map(|d| d.as_secs_f64()).unwrap_or(0.0);
        Ok(client
            .execute(
                "DELETE FROM fraiseql.tb_observer_dead_letter \
                 WHERE status = 'dead' AND created_at <= now() - make_interval(secs => $1)",
                &[&secs],
            )
            .await?)
    }

    /// Claims up to `limit` rows whose retry was requested (or whose claim is older than
    /// `lease`, i.e. the claiming instance died) and returns their jobs ready to enqueue:
    /// attempts reset, errors kept, `dead_letter_id` set.
    pub async fn claim_retries(&self, limit: i64, lease: Duration) -> Result<Vec<Job>, DlqError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "UPDATE fraiseql.tb_observer_dead_letter d \
                 SET status = 'retrying', claimed_at = now(), updated_at = now() \
                 WHERE d.pk IN ( \
                   SELECT pk FROM fraiseql.tb_observer_dead_letter \
                   WHERE status = 'retry_requested' \
                      OR (status = 'retrying' AND claimed_at < now() - make_interval(secs => $2)) \
                   ORDER BY pk LIMIT $1 FOR UPDATE SKIP LOCKED) \
                 RETURNING d.pk, d.job",
                &[&limit, &lease.as_secs_f64()],
            )
            .await?;
        let mut jobs = Vec::with_capacity(rows.len());
        for row in rows {
            let mut job: Job = serde_json::from_value(row.get("job"))?;
            job.attempts = 0;
            job.dead_letter_id = Some(row.get("pk"));
            job.replay = true;
            job.id = uuid::Uuid::new_v4();
            job.enqueued_at = Utc::now();
            jobs.push(job);
        }
        Ok(jobs)
    }

    /// The retried job succeeded: the dead letter is resolved.
    pub async fn resolve(&self, id: i64) -> Result<(), DlqError> {
        let client = self.pool.get().await?;
        client
            .execute(
                "DELETE FROM fraiseql.tb_observer_dead_letter WHERE pk = $1",
                &[&id],
            )
            .await?;
        Ok(())
    }
}

/// Capability: what `fraiseql dlq` and the dead-letter gauge need from a backend's dead
/// letters. Every backend has one ([`crate::queue::QueueHandles::dead_letters`]).
#[async_trait]
pub trait DeadLetterAdmin: Send + Sync + 'static {
    /// True when [`DeadLetterAdmin::retry`] puts the job back on the queue itself; false
    /// when it asks a running observer runtime to (which then picks it up within a second).
    fn retries_immediately(&self) -> bool;
    /// Newest first.
    async fn list(&self, filter: &ListFilter) -> Result<Vec<DeadLetter>, DlqError>;
    async fn show(&self, id: i64) -> Result<Option<DeadLetter>, DlqError>;
    /// A new round of attempts for one dead letter, with a fresh attempt budget.
    async fn retry(&self, id: i64) -> Result<RetryOutcome, DlqError>;
    /// [`DeadLetterAdmin::retry`] for every dead letter.
    async fn retry_all(&self) -> Result<RetryAllSummary, DlqError>;
    /// Deletes dead letters older than `older_than`, or all of them; returns how many.
    async fn purge(&self, older_than: Option<Duration>) -> Result<u64, DlqError>;
    /// Dead letters waiting for an operator.
    async fn count_dead(&self) -> Result<i64, DlqError>;
}

#[async_trait]
impl DeadLetterAdmin for PgDeadLetters {
    fn retries_immediately(&self) -> bool {
        false
    }
    async fn list(&self, filter: &ListFilter) -> Result<Vec<DeadLetter>, DlqError> {
        PgDeadLetters::list(self, filter).await
    }
    async fn show(&self, id: i64) -> Result<Option<DeadLetter>, DlqError> {
        PgDeadLetters::show(self, id).await
    }
    async fn retry(&self, id: i64) -> Result<RetryOutcome, DlqError> {
        Ok(if self.request_retry(id).await? {
            RetryOutcome::Retried
        } else {
            RetryOutcome::NotFound
        })
    }
    async fn retry_all(&self) -> Result<RetryAllSummary, DlqError> {
        Ok(RetryAllSummary {
            retried: self.request_retry_all().await?,
            already_live: 0,
        })
    }
    async fn purge(&self, older_than: Option<Duration>) -> Result<u64, DlqError> {
        PgDeadLetters::purge(self, older_than).await
    }
    async fn count_dead(&self) -> Result<i64, DlqError> {
        PgDeadLetters::count_dead(self).await
    }
}

#[async_trait]
impl DeadLetterSink for PgDeadLetters {
    async fn store(&self, job: &Job) -> Result<(), DlqError> {
        let client = self.pool.get().await?;
        let job_json = serde_json::to_value(job)?;
        let errors = serde_json::to_value(&job.errors)?;
        let last_error = job.errors.last().map(|e| e.error.clone());
        let attempts = i32::try_from(job.errors.len()).unwrap_or(i32::MAX);
        let action_index = i32::try_from(job.action_index).unwrap_or(i32::MAX);
        // Upsert by key: a job retried from the DLQ that fails again updates its row.
        client
            .execute(
                "INSERT INTO fraiseql.tb_observer_dead_letter \
                   (idempotency_key, job_id, change_pk, observer, action_index, action_type, \
                    job, attempts, errors, last_error) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                 ON CONFLICT (idempotency_key) DO UPDATE SET \
                   job_id = EXCLUDED.job_id, job = EXCLUDED.job, attempts = EXCLUDED.attempts, \
                   errors = EXCLUDED.errors, last_error = EXCLUDED.last_error, \
                   status = 'dead', claimed_at = NULL, updated_at = now()",
                &[
                    &job.key,
                    &job.id,
                    &job.change_pk,
                    &job.observer,
                    &action_index,
                    &job.action_type,
                    &job_json,
                    &attempts,
                    &errors,
                    &last_error,
                ],
            )
            .await?;
        Ok(())
    }

    async fn resolve(&self, id: i64) -> Result<(), DlqError> {
        PgDeadLetters::resolve(self, id).await
    }
}

/// Parses `--older-than` values: a number with a unit, `s`, `m`, `h`, `d` or `w`
/// (`90s`, `30m`, `12h`, `7d`, `2w`).
pub fn parse_age(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("expected a duration like 30m, 12h or 7d, found `{s}`"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => {
            return Err(format!(
                "unknown unit `{unit}` in `{s}`; use s, m, h, d or w"
            ));
        }
    };
    Ok(Duration::from_secs(n.saturating_mul(secs)))
}

/// The `dlq list` table (one line per dead letter, newest first).
pub fn format_table(items: &[DeadLetter]) -> String {
    let mut out = format!(
        "{:>6}  {:<20}  {:<24}  {:<8}  {:>8}  {:<15}  {}\n",
        "ID", "CREATED", "OBSERVER", "ACTION", "ATTEMPTS", "STATUS", "LAST ERROR"
    );
    for d in items {
        let status = match d.status {
            DeadLetterStatus::Dead => "dead",
            DeadLetterStatus::RetryRequested => "retry_requested",
            DeadLetterStatus::Retrying => "retrying",
        };
        let err: String = d
            .last_error
            .as_deref()
            .unwrap_or("")
            .chars()
            .take(80)
            .collect();
        out.push_str(&format!(
            "{:>6}  {:<20}  {:<24}  {:<8}  {:>8}  {:<15}  {}\n",
            d.id,
            d.created_at.format("%Y-%m-%d %H:%M:%S"),
            format!("{}[{}]", d.observer, d.action_index),
            d.action_type,
            d.attempts,
            status,
            err.replace('\n', " ")
        ));
    }
    out
}

/// An in-memory sink for tests and the queue conformance suite.
#[derive(Default)]
pub struct MemoryDeadLetters {
    jobs: Mutex<Vec<Job>>,
}

impl MemoryDeadLetters {
    pub fn jobs(&self) -> Vec<Job> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[async_trait]
impl DeadLetterSink for MemoryDeadLetters {
    async fn store(&self, job: &Job) -> Result<(), DlqError> {
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(job.clone());
        Ok(())
    }

    async fn resolve(&self, _id: i64) -> Result<(), DlqError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages() {
        assert_eq!(parse_age("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_age("7d").unwrap(), Duration::from_secs(7 * 86_400));
        assert_eq!(parse_age(" 2w ").unwrap(), Duration::from_secs(14 * 86_400));
        assert!(parse_age("7").unwrap_err().contains("unknown unit ``"));
        assert!(parse_age("d").unwrap_err().contains("expected a duration"));
        assert!(parse_age("3y").unwrap_err().contains("unknown unit `y`"));
    }
}
