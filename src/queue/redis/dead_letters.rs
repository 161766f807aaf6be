//! The Redis backend's dead letters: list, show, retry, retry-all and purge what
//! [`RedisQueue`] keeps in `P:dead` (id → job JSON with every attempt's error) and
//! `P:dead:at` (id scored by the time it died), as [`DeadLetterAdmin`].
//!
//! Unlike the PostgreSQL store, a retry needs no running `serve`: it moves the job back onto
//! `P:ready` atomically (one script: the dead letter disappears exactly when the job becomes
//! live). The re-enqueued job gets a fresh attempt budget, keeps its error history and
//! remembers its dead-letter id, so that failing again files it under the same id with the
//! new errors appended.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use redis::Script;

use super::{RedisQueue, backend_err};
use crate::queue::Job;
use crate::queue::dlq::{
    DeadLetter, DeadLetterAdmin, DeadLetterStatus, DlqError, ListFilter, RetryAllSummary,
    RetryOutcome,
};

/// A dead letter in the PostgreSQL store's row shape, so `fraiseql dlq` prints the same
/// table and JSON whichever backend holds it (a Redis dead letter is always `dead`: its
/// retry is immediate; created and updated are the time it last died).
fn decode(id: i64, dead_at_ms: i64, raw: &[u8]) -> Result<DeadLetter, DlqError> {
    let job: Job =
        serde_json::from_slice(raw).map_err(|source| DlqError::InvalidJob { id, source })?;
    let dead_at = Utc
        .timestamp_millis_opt(dead_at_ms)
        .single()
        .unwrap_or_default();
    Ok(DeadLetter {
        id,
        idempotency_key: job.key.clone(),
        change_pk: job.change_pk,
        observer: job.observer.clone(),
        action_index: i32::try_from(job.action_index).unwrap_or(i32::MAX),
        action_type: job.action_type.clone(),
        attempts: i32::try_from(job.errors.len()).unwrap_or(i32::MAX),
        last_error: job.errors.last().map(|e| e.error.clone()),
        status: DeadLetterStatus::Dead,
        created_at: dead_at,
        updated_at: dead_at,
        errors: job.errors.clone(),
        job,
    })
}

fn redis_err(op: &str) -> impl FnOnce(redis::RedisError) -> DlqError + '_ {
    move |e| DlqError::Queue(backend_err(op, e))
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

/// The dead letters of one [`RedisQueue`] (its key prefix). Cheap to clone.
#[derive(Clone)]
pub struct RedisDeadLetters {
    q: Arc<RedisQueue>,
}

impl RedisDeadLetters {
    pub fn new(queue: Arc<RedisQueue>) -> Self {
        RedisDeadLetters { q: queue }
    }

    /// How many dead letters there are.
    pub async fn count(&self) -> Result<u64, DlqError> {
        let mut conn = self.q.connection();
        redis::cmd("ZCARD")
            .arg(&self.q.keys.dead_at)
            .query_async(&mut conn)
            .await
            .map_err(redis_err("zcard"))
    }

    /// Reads one page of ids (newest first) with their records; missing records (removed
    /// between the two reads) are skipped.
    async fn page(&self, start: isize) -> Result<Vec<(i64, i64, Option<Vec<u8>>)>, DlqError> {
        let (q, mut conn) = (&self.q, self.q.connection());
        let ids: Vec<(i64, f64)> = redis::cmd("ZREVRANGE")
            .arg(&q.keys.dead_at)
            .arg(start)
            .arg(start + PAGE - 1)
            .arg("WITHSCORES")
            .query_async(&mut conn)
            .await
            .map_err(redis_err("zrevrange"))?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let raws: Vec<Option<Vec<u8>>> = redis::cmd("HMGET")
            .arg(&q.keys.dead)
            .arg(ids.iter().map(|(id, _)| *id).collect::<Vec<_>>())
            .query_async(&mut conn)
            .await
            .map_err(redis_err("hmget"))?;
        Ok(ids
            .into_iter()
            .zip(raws)
            .map(|((id, at), raw)| (id, at as i64, raw))
            .collect())
    }

    /// Dead letters, newest first, up to `filter.limit`.
    pub async fn list(&self, filter: &ListFilter) -> Result<Vec<DeadLetter>, DlqError> {
        let limit = filter.limit.map_or(usize::MAX, |l| {
            usize::try_from(l.max(0)).unwrap_or(usize::MAX)
        });
        let mut out = Vec::new();
        let mut start = 0;
        loop {
            let rows = self.page(start).await?;
            if rows.is_empty() {
                return Ok(out);
            }
            start += rows.len() as isize;
            for (id, at, raw) in rows {
                let Some(raw) = raw else { continue };
                let d = decode(id, at, &raw)?;
                if filter.observer.as_ref().is_none_or(|o| *o == d.observer) {
                    out.push(d);
                    if out.len() >= limit {
                        return Ok(out);
                    }
                }
            }
        }
    }

    /// One dead letter by id.
    pub async fn show(&self, id: i64) -> Result<Option<DeadLetter>, DlqError> {
        let mut conn = self.q.connection();
        let (raw, at): (Option<Vec<u8>>, Option<f64>) = redis::pipe()
            .cmd("HGET")
            .arg(&self.q.keys.dead)
            .arg(id)
            .cmd("ZSCORE")
            .arg(&self.q.keys.dead_at)
            .arg(id)
            .query_async(&mut conn)
            .await
            .map_err(redis_err("hget"))?;
        raw.map(|raw| decode(id, at.unwrap_or(0.0) as i64, &raw))
            .transpose()
    }

    /// Puts a dead letter's job back on the queue with a fresh attempt budget.
    pub async fn retry(&self, id: i64) -> Result<RetryOutcome, DlqError> {
        let (q, script) = (&self.q, Script::new(RETRY_DEAD_LUA));
        // A concurrent failure of the same job may rewrite the record between our read and
        // the script; the script notices (-2) and we read again.
        for _ in 0..5 {
            let mut conn = q.connection();
            let raw: Option<Vec<u8>> = redis::cmd("HGET")
                .arg(&q.keys.dead)
                .arg(id)
                .query_async(&mut conn)
                .await
                .map_err(redis_err("hget"))?;
            let Some(raw) = raw else {
                return Ok(RetryOutcome::NotFound);
            };
            let invalid = |source| DlqError::InvalidJob { id, source };
            let mut job: Job = serde_json::from_slice(&raw).map_err(invalid)?;
            job.attempts = 0;
            job.dead_letter_id = Some(id);
            job.replay = true;
            job.id = uuid::Uuid::new_v4();
            let json = serde_json::to_vec(&job).map_err(invalid)?;
            let mut inv = script.prepare_invoke();
            for key in [&q.keys.jobs, &q.keys.ready, &q.keys.dead, &q.keys.dead_at] {
                inv.key(key);
            }
            inv.arg(&q.keys.wake);
            inv.arg(id).arg(raw).arg(&job.key).arg(json);
            let ran = q.eval_forever::<i64>("dlq retry", &inv).await?;
            match ran.value {
                1 => return Ok(RetryOutcome::Retried),
                0 => return Ok(RetryOutcome::AlreadyLive),
                // After an ambiguous failure, "gone" means our own earlier attempt moved it.
                -1 if ran.ambiguous => return Ok(RetryOutcome::Retried),
                -1 => return Ok(RetryOutcome::NotFound),
                _ => continue,
            }
        }
        Ok(RetryOutcome::AlreadyLive)
    }

    /// Retries every dead letter of `filter.observer` (all when unset; `limit` is ignored).
    pub async fn retry_matching(&self, filter: &ListFilter) -> Result<RetryAllSummary, DlqError> {
        // Collect the ids first: retrying removes rows, which would shift the pages.
        let mut ids = Vec::new();
        let mut start = 0;
        loop {
            let rows = self.page(start).await?;
            if rows.is_empty() {
                break;
            }
            start += rows.len() as isize;
            for (id, at, raw) in rows {
                let Some(raw) = raw else { continue };
                if let Some(o) = &filter.observer
                    && decode(id, at, &raw)?.observer != *o
                {
                    continue;
                }
                ids.push(id);
            }
        }
        let mut summary = RetryAllSummary::default();
        // Oldest first, so the queue sees them in the order they died.
        for id in ids.into_iter().rev() {
            match self.retry(id).await? {
                RetryOutcome::Retried => summary.retried += 1,
                RetryOutcome::AlreadyLive => summary.already_live += 1,
                RetryOutcome::NotFound => {}
            }
        }
        Ok(summary)
    }

    /// Deletes dead letters that died more than `older_than` ago; returns how many.
    pub async fn purge_older_than(&self, older_than: Duration) -> Result<u64, DlqError> {
        let cutoff = chrono::Duration::from_std(older_than)
            .ok()
            .and_then(|d| Utc::now().checked_sub_signed(d))
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        self.purge_before(cutoff).await
    }

    /// Deletes dead letters that died before `cutoff`; returns how many.
    pub async fn purge_before(&self, cutoff: DateTime<Utc>) -> Result<u64, DlqError> {
        let script = Script::new(PURGE_LUA);
        let mut total = 0u64;
        loop {
            let mut inv = script.prepare_invoke();
            inv.key(&self.q.keys.dead)
                .key(&self.q.keys.dead_at)
                .arg(cutoff.timestamp_millis())
                .arg(1000);
            let n = self.q.eval_forever::<i64>("dlq purge", &inv).await?.value;
            total += n.max(0) as u64;
            if n < 1000 {
                return Ok(total);
            }
        }
    }
}

#[async_trait]
impl DeadLetterAdmin for RedisDeadLetters {
    fn retries_immediately(&self) -> bool {
        true
    }
    async fn list(&self, filter: &ListFilter) -> Result<Vec<DeadLetter>, DlqError> {
        RedisDeadLetters::list(self, filter).await
    }
    async fn show(&self, id: i64) -> Result<Option<DeadLetter>, DlqError> {
        RedisDeadLetters::show(self, id).await
    }
    async fn retry(&self, id: i64) -> Result<RetryOutcome, DlqError> {
        RedisDeadLetters::retry(self, id).await
    }
    async fn retry_all(&self) -> Result<RetryAllSummary, DlqError> {
        self.retry_matching(&ListFilter::default()).await
    }
    async fn purge(&self, older_than: Option<Duration>) -> Result<u64, DlqError> {
        match older_than {
            Some(age) => self.purge_older_than(age).await,
            // Everything, whatever Redis's clock says.
            None => self.purge_before(DateTime::<Utc>::MAX_UTC).await,
        }
    }
    async fn count_dead(&self) -> Result<i64, DlqError> {
        Ok(i64::try_from(self.count().await?).unwrap_or(i64::MAX))
    }
}
