//! `fraiseql dlq` over the Redis backend: list, show, retry, retry-all and purge the dead
//! letters that [`RedisQueue`] keeps in `P:dead` (id → job JSON with every attempt's error)
//! and `P:dead:at` (id scored by the time it died).
//!
//! Plain async functions so that the CLI calls them directly; unlike the PostgreSQL store,
//! a retry needs no running `serve`: it moves the job back onto `P:ready` atomically (one
//! script: the dead letter disappears exactly when the job becomes live). The re-enqueued job
//! gets a fresh attempt budget, keeps its error history and remembers its dead-letter id, so
//! that failing again files it under the same id with the new errors appended.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use redis::Script;
use serde::Serialize;

use super::redis::RedisQueue;
use super::{AttemptError, Job, QueueError};

#[derive(Debug, thiserror::Error)]
pub enum RedisDlqError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("dead letter {id} is not a valid job: {source}")]
    Decode { id: i64, source: serde_json::Error },
}

/// One dead letter, as `dlq list --json` / `dlq show` print it (the same fields as the
/// PostgreSQL store's, less the status column: a Redis retry is immediate).
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    pub id: i64,
    pub idempotency_key: String,
    pub change_pk: i64,
    pub observer: String,
    pub action_index: usize,
    pub action_type: String,
    /// Failed attempts recorded, over all its lives.
    pub attempts: usize,
    pub last_error: Option<String>,
    pub dead_at: DateTime<Utc>,
    pub errors: Vec<AttemptError>,
    pub job: Job,
}

impl DeadLetter {
    fn decode(id: i64, dead_at_ms: i64, raw: &[u8]) -> Result<Self, RedisDlqError> {
        let job: Job =
            serde_json::from_slice(raw).map_err(|source| RedisDlqError::Decode { id, source })?;
        Ok(DeadLetter {
            id,
            idempotency_key: job.key.clone(),
            change_pk: job.change_pk,
            observer: job.observer.clone(),
            action_index: job.action_index,
            action_type: job.action_type.clone(),
            attempts: job.errors.len(),
            last_error: job.errors.last().map(|e| e.error.clone()),
            dead_at: Utc
                .timestamp_millis_opt(dead_at_ms)
                .single()
                .unwrap_or_default(),
            errors: job.errors.clone(),
            job,
        })
    }
}

/// The PostgreSQL store's row shape, so `fraiseql dlq` prints the same table and JSON
/// whichever backend holds the dead letters (a Redis dead letter is always `dead`: its retry
/// is immediate).
impl From<DeadLetter> for super::dlq::DeadLetter {
    fn from(d: DeadLetter) -> Self {
        super::dlq::DeadLetter {
            id: d.id,
            idempotency_key: d.idempotency_key,
            change_pk: d.change_pk,
            observer: d.observer,
            action_index: i32::try_from(d.action_index).unwrap_or(i32::MAX),
            action_type: d.action_type,
            attempts: i32::try_from(d.attempts).unwrap_or(i32::MAX),
            last_error: d.last_error,
            status: super::dlq::DeadLetterStatus::Dead,
            created_at: d.dead_at,
            updated_at: d.dead_at,
            errors: d.errors,
            job: d.job,
        }
    }
}

/// Filters for [`list`] and [`retry_all`].
#[derive(Debug, Clone)]
pub struct ListFilter {
    /// Only this observer's dead letters.
    pub observer: Option<String>,
    /// Most rows returned by [`list`] (newest first).
    pub limit: usize,
}

impl Default for ListFilter {
    fn default() -> Self {
        ListFilter {
            observer: None,
            limit: 100,
        }
    }
}

/// What [`retry`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryOutcome {
    /// The job is queued again; the dead letter is gone.
    Enqueued,
    /// A live job with the same idempotency key exists; the dead letter stays.
    AlreadyLive,
    NotFound,
}

/// Counts from [`retry_all`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RetryAllSummary {
    pub enqueued: u64,
    pub already_live: u64,
}

/// KEYS: jobs, ready, dead, dead_at. ARGV: channel, id, expected record, key, new job json.
/// Returns 1 (enqueued), 0 (key live), -1 (gone), -2 (record changed since it was read).
const RETRY_DEAD_LUA: &str = r#"
local cur = redis.call('HGET', KEYS[3], ARGV[2])
if not cur then return -1 end
if cur ~= ARGV[3] then return -2 end
if redis.call('HSETNX', KEYS[1], ARGV[4], ARGV[5]) == 0 then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[4])
redis.call('HDEL', KEYS[3], ARGV[2])
redis.call('ZREM', KEYS[4], ARGV[2])
redis.call('PUBLISH', ARGV[1], 'q')
return 1
"#;

/// KEYS: dead, dead_at. ARGV: cutoff ms, limit. Returns how many were deleted.
const PURGE_LUA: &str = r#"
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
if #ids == 0 then return 0 end
redis.call('HDEL', KEYS[1], unpack(ids))
redis.call('ZREM', KEYS[2], unpack(ids))
return #ids
"#;

const PAGE: isize = 500;

/// How many dead letters there are.
pub async fn count(q: &RedisQueue) -> Result<u64, RedisDlqError> {
    let mut conn = q.connection();
    Ok(redis::cmd("ZCARD")
        .arg(&q.keys.dead_at)
        .query_async(&mut conn)
        .await?)
}

/// Reads one page of ids (newest first) with their records; missing records (removed between
/// the two reads) are skipped.
async fn page(
    q: &RedisQueue,
    start: isize,
) -> Result<Vec<(i64, i64, Option<Vec<u8>>)>, RedisDlqError> {
    let mut conn = q.connection();
    let ids: Vec<(i64, f64)> = redis::cmd("ZREVRANGE")
        .arg(&q.keys.dead_at)
        .arg(start)
        .arg(start + PAGE - 1)
        .arg("WITHSCORES")
        .query_async(&mut conn)
        .await?;
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let raws: Vec<Option<Vec<u8>>> = redis::cmd("HMGET")
        .arg(&q.keys.dead)
        .arg(ids.iter().map(|(id, _)| *id).collect::<Vec<_>>())
        .query_async(&mut conn)
        .await?;
    Ok(ids
        .into_iter()
        .zip(raws)
        .map(|((id, at), raw)| (id, at as i64, raw))
        .collect())
}

/// Dead letters, newest first, up to `filter.limit`.
pub async fn list(q: &RedisQueue, filter: &ListFilter) -> Result<Vec<DeadLetter>, RedisDlqError> {
    let mut out = Vec::new();
    let mut start = 0;
    loop {
        let rows = page(q, start).await?;
        if rows.is_empty() {
            return Ok(out);
        }
        start += rows.len() as isize;
        for (id, at, raw) in rows {
            let Some(raw) = raw else { continue };
            let d = DeadLetter::decode(id, at, &raw)?;
            if filter.observer.as_ref().is_none_or(|o| *o == d.observer) {
                out.push(d);
                if out.len() >= filter.limit {
                    return Ok(out);
                }
            }
        }
    }
}

/// One dead letter by id.
pub async fn show(q: &RedisQueue, id: i64) -> Result<Option<DeadLetter>, RedisDlqError> {
    let mut conn = q.connection();
    let (raw, at): (Option<Vec<u8>>, Option<f64>) = redis::pipe()
        .cmd("HGET")
        .arg(&q.keys.dead)
        .arg(id)
        .cmd("ZSCORE")
        .arg(&q.keys.dead_at)
        .arg(id)
        .query_async(&mut conn)
        .await?;
    match raw {
        Some(raw) => Ok(Some(DeadLetter::decode(
            id,
            at.unwrap_or(0.0) as i64,
            &raw,
        )?)),
        None => Ok(None),
    }
}

/// Puts a dead letter's job back on the queue with a fresh attempt budget.
pub async fn retry(q: &RedisQueue, id: i64) -> Result<RetryOutcome, RedisDlqError> {
    let script = Script::new(RETRY_DEAD_LUA);
    // A concurrent failure of the same job may rewrite the record between our read and the
    // script; the script notices (-2) and we read again.
    for _ in 0..5 {
        let mut conn = q.connection();
        let raw: Option<Vec<u8>> = redis::cmd("HGET")
            .arg(&q.keys.dead)
            .arg(id)
            .query_async(&mut conn)
            .await?;
        let Some(raw) = raw else {
            return Ok(RetryOutcome::NotFound);
        };
        let mut job: Job =
            serde_json::from_slice(&raw).map_err(|source| RedisDlqError::Decode { id, source })?;
        job.attempts = 0;
        job.dead_letter_id = Some(id);
        job.replay = true;
        job.id = uuid::Uuid::new_v4();
        let json =
            serde_json::to_vec(&job).map_err(|source| RedisDlqError::Decode { id, source })?;
        let mut inv = script.prepare_invoke();
        inv.key(&q.keys.jobs)
            .key(&q.keys.ready)
            .key(&q.keys.dead)
            .key(&q.keys.dead_at)
            .arg(&q.keys.wake)
            .arg(id)
            .arg(raw)
            .arg(&job.key)
            .arg(json);
        let ran = q.eval_forever::<i64>("dlq retry", &inv).await?;
        match ran.value {
            1 => return Ok(RetryOutcome::Enqueued),
            0 => return Ok(RetryOutcome::AlreadyLive),
            // After an ambiguous failure, "gone" means our own earlier attempt moved it.
            -1 if ran.ambiguous => return Ok(RetryOutcome::Enqueued),
            -1 => return Ok(RetryOutcome::NotFound),
            _ => continue,
        }
    }
    Ok(RetryOutcome::AlreadyLive)
}

/// Retries every dead letter (of `filter.observer` when set; `limit` is ignored).
pub async fn retry_all(
    q: &RedisQueue,
    filter: &ListFilter,
) -> Result<RetryAllSummary, RedisDlqError> {
    // Collect the ids first: retrying removes rows, which would shift the pages.
    let mut ids = Vec::new();
    let mut start = 0;
    loop {
        let rows = page(q, start).await?;
        if rows.is_empty() {
            break;
        }
        start += rows.len() as isize;
        for (id, at, raw) in rows {
            let Some(raw) = raw else { continue };
            if let Some(o) = &filter.observer
                && DeadLetter::decode(id, at, &raw)?.observer != *o
            {
                continue;
            }
            ids.push(id);
        }
    }
    let mut summary = RetryAllSummary::default();
    // Oldest first, so the queue sees them in the order they died.
    for id in ids.into_iter().rev() {
        match retry(q, id).await? {
            RetryOutcome::Enqueued => summary.enqueued += 1,
            RetryOutcome::AlreadyLive => summary.already_live += 1,
            RetryOutcome::NotFound => {}
        }
    }
    Ok(summary)
}

/// Deletes dead letters that died more than `older_than` ago; returns how many.
pub async fn purge_older_than(q: &RedisQueue, older_than: Duration) -> Result<u64, RedisDlqError> {
    let cutoff = chrono::Duration::from_std(older_than)
        .ok()
        .and_then(|d| Utc::now().checked_sub_signed(d))
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    purge_before(q, cutoff).await
}

/// Deletes dead letters that died before `cutoff`; returns how many.
pub async fn purge_before(q: &RedisQueue, cutoff: DateTime<Utc>) -> Result<u64, RedisDlqError> {
    let script = Script::new(PURGE_LUA);
    let mut total = 0u64;
    loop {
        let mut inv = script.prepare_invoke();
        inv.key(&q.keys.dead)
            .key(&q.keys.dead_at)
            .arg(cutoff.timestamp_millis())
            .arg(1000);
        let n = q.eval_forever::<i64>("dlq purge", &inv).await?.value;
        total += n.max(0) as u64;
        if n < 1000 {
            return Ok(total);
        }
    }
}
