//! The Redis queue backend: a reliable queue with visibility timeouts, delayed retries and a
//! dead-letter store, all in Redis, each operation one Lua script (one round trip, EVALSHA).
//!
//! # Why lists + sorted sets + Lua, not streams + consumer groups
//!
//! Streams give a log with per-consumer pending lists (XREADGROUP / XACK / XAUTOCLAIM), but
//! the queue needs three things they do not have: *idempotent enqueue by key while the job is
//! live* (a stream happily appends a duplicate; we would need a side set anyway, and XADD +
//! SADD is a script again), *delayed jobs* (a stream has no "not before"; a retry would need a
//! sorted set plus a promoter anyway) and *a job whose content changes between attempts* (its
//! attempts and errors travel with it; a stream entry is immutable, so a retry would be a new
//! entry plus a trim of the old one). Finished entries also stay in a stream until XDEL /
//! XTRIM, and `XAUTOCLAIM` hands a stalled entry over without telling the new owner that the
//! old one is now fenced off. With plain structures and a script per operation every one of
//! these is a couple of O(1)/O(log n) commands executed atomically, the ownership check is a
//! single `ZREM` of the reservation's receipt, and nothing is left behind after an ack.
//!
//! # Key layout (`P` = `key_prefix`)
//!
//! | key            | type   | content                                                          |
//! |----------------|--------|------------------------------------------------------------------|
//! | `P:jobs`       | hash   | idempotency key → job JSON, for every *live* job (ready, delayed, reserved); `HLEN` is the depth, `HSETNX` is the idempotent enqueue |
//! | `P:ready`      | list   | idempotency keys of jobs that may run now, FIFO (`RPUSH` / `LPOP n`) |
//! | `P:delayed`    | zset   | idempotency key, scored by the time (ms) it may run again          |
//! | `P:inflight`   | zset   | receipt `<16 hex lease>:<key>`, scored by its visibility deadline (ms, Redis clock) |
//! | `P:reclaims`   | hash   | key → times its reservation expired (only for jobs that were reclaimed) |
//! | `P:lease`      | string | counter making every receipt unique                              |
//! | `P:dead`       | hash   | dead-letter id → job JSON (every attempt's error inside)          |
//! | `P:dead:at`    | zset   | dead-letter id, scored by the time (ms) it died: listing order and `purge --older-than` |
//! | `P:dead:seq`   | string | dead-letter id counter                                            |
//! | `P:wake`       | pub/sub channel | "something became ready": wakes idle reservers        |
//!
//! Finished jobs leave nothing: `ack` removes the receipt, the job and its reclaim count.
//!
//! # Ownership and reclaim
//!
//! `reserve` pops keys from `P:ready` and adds one receipt per job to `P:inflight` with the
//! deadline `now + visibility_timeout` (Redis's clock, so workers' clocks do not matter).
//! `ack`/`retry`/`dead_letter` first `ZREM` their receipt: 0 removed means the reservation is
//! no longer ours (acknowledged before, or expired and reclaimed) and the call fails with
//! [`QueueError::UnknownReservation`]. Every `reserve` call first moves expired receipts' keys
//! back to the *front* of `P:ready` (they are the oldest work) and promotes due delayed jobs,
//! so a dead worker's jobs are picked up by whoever reserves next; no separate reaper process
//! is needed. A job reclaimed more than `max_reclaims` times is dead-lettered instead.
//! A worker keeps its running jobs owned by moving their deadlines forward (`extend`, one
//! script call for all of them: the pump's heartbeat), so only a dead or stalled worker's
//! reservations expire. A reclaimed job is marked `replay`: its first run may have
//! succeeded before the worker died, so the executor consults the dedup window.
//!
//! # Redis down
//!
//! Every operation is retried with exponential backoff (plus jitter) while the error is a
//! transient one (connection refused or reset, timeout, `LOADING` after a restart, `OOM`,
//! `READONLY`, …): producers and workers wait instead of failing, and `enqueue` returns `Ok`
//! only after the script ran, so with `appendfsync always` an acknowledged enqueue is on disk.
//! When a retried `ack`/`retry`/`dead_letter` finds its receipt gone after an earlier attempt
//! failed ambiguously (the reply was lost, the script may have run), it reports success: either
//! the earlier attempt did it, or the job was reclaimed and runs again (at-least-once).
//! `reserve` gives up at its `wait` deadline and returns `None`.
//!
//! # Requirements
//!
//! Redis ≥ 6.2 (`LPOP key count`; scripts call `TIME`, which needs effects replication, the
//! only mode since 7.0). One Redis (or a primary with replicas): Redis Cluster is not
//! supported by this connection type. For "acknowledged means on disk", run Redis with
//! `appendonly yes` and `appendfsync always` (`everysec` may lose the last second on a
//! power cut, not on a Redis crash).
//!
//! # Waking idle reservers
//!
//! Lua scripts cannot block, so `reserve` waits locally: each queue instance holds one
//! pub/sub connection subscribed to `P:wake`; scripts publish when the ready list goes from
//! empty to non-empty, when a retry becomes the earliest delayed job, and when a reserve moved
//! reclaimed or due jobs into a list that others should drain. An idle reserver also wakes by
//! itself at the earliest delayed due time or visibility deadline the last script reported,
//! and polls every 50 ms while the subscription is down.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use redis::{ErrorKind, FromRedisValue, RedisError, RetryMethod, Script, ScriptInvocation, Value};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{debug, error, info, warn};

use super::config::QueueConfig;
use super::{AckOutcome, Batch, BatchQueue, Enqueued, Job, Probe, Queue, QueueError, Reservation};
use crate::backoff::Backoff;
use crate::metrics::JobMetrics;
use crate::redact::redact_url;

mod dead_letters;

use crate::redis_conn::SharedConnection;

pub use dead_letters::RedisDeadLetters;

/// Jobs per enqueue script call: large enough that the round trip is noise (~1 ms of Redis
/// time per call), small enough that Redis never blocks other clients for long.
pub const ENQUEUE_CHUNK: usize = 1000;
/// Most jobs one reserve or ack script call handles.
pub const MAX_BATCH: usize = 1000;
/// Expired receipts / due delayed jobs moved by one reserve call (bounded script time).
const MOVE_LIMIT: usize = 1000;
/// Reserver poll interval while the wake-up subscription is down.
const POLL_WITHOUT_SUBSCRIPTION: Duration = Duration::from_millis(50);
/// Longest an idle reserver sleeps without looking, even when subscribed: a safety net for
/// a wake-up lost with a dropped pub/sub connection.
const IDLE_RECHECK: Duration = Duration::from_secs(2);
/// Length of the lease part of a receipt (`%016x`), before the `:` and the key.
const LEASE_LEN: usize = 16;

/// ARGV: channel, max_live, key1, json1, key2, json2, …
/// Returns one 1 (added, or already stored byte for byte: a resent batch) / 0 (duplicate)
/// per job, stopping early (shorter reply) when the
/// queue holds `max_live` jobs; the caller waits and sends the rest again.
const ENQUEUE_LUA: &str = r#"
local jobs, ready = KEYS[1], KEYS[2]
local max_live = tonumber(ARGV[2])
local live = redis.call('HLEN', jobs)
local was_empty = redis.call('LLEN', ready) == 0
local out, added = {}, {}
for i = 3, #ARGV, 2 do
  if max_live > 0 and live >= max_live then break end
  if redis.call('HSETNX', jobs, ARGV[i], ARGV[i + 1]) == 1 then
    added[#added + 1] = ARGV[i]
    live = live + 1
    out[#out + 1] = 1
  elseif redis.call('HGET', jobs, ARGV[i]) == ARGV[i + 1] then
    -- The very same job (same id): our own earlier attempt whose reply was lost.
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
if #added > 0 then
  redis.call('RPUSH', ready, unpack(added))
  if was_empty then redis.call('PUBLISH', ARGV[1], 'e') end
end
return out
"#;

/// KEYS: jobs, ready, delayed, inflight, lease, reclaims.
/// ARGV: channel, max jobs, visibility ms, move limit, then receipts to acknowledge first.
/// Returns {now_ms, next_ms, ack flags, receipt1, json1, reclaims1, …}: next_ms (-1 = none)
/// is the earliest delayed due time or visibility deadline, set only when nothing was
/// reserved; ack flags has one '1' (acked) or '0' (unknown receipt) per receipt given.
/// Acknowledging and reserving in one call is what lets a busy worker spend one round trip
/// per batch of jobs (BullMQ's moveToFinished does the same for one job).
const RESERVE_LUA: &str = r#"
local jobs, ready, delayed, inflight, lease, reclaims = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n, vt, limit = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local flags = {}
for i = 5, #ARGV do
  local r = ARGV[i]
  if redis.call('ZREM', inflight, r) == 1 then
    local key = string.sub(r, 18)
    redis.call('HDEL', jobs, key)
    redis.call('HDEL', reclaims, key)
    flags[#flags + 1] = '1'
  else
    flags[#flags + 1] = '0'
  end
end
local moved = 0
local expired = redis.call('ZRANGEBYSCORE', inflight, '-inf', now, 'LIMIT', 0, limit)
if #expired > 0 then
  redis.call('ZREM', inflight, unpack(expired))
  for i = #expired, 1, -1 do
    local key = string.sub(expired[i], 18)
    if redis.call('HEXISTS', jobs, key) == 1 then
      redis.call('HINCRBY', reclaims, key, 1)
      redis.call('LPUSH', ready, key)
      moved = moved + 1
    end
  end
end
local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, limit)
if #due > 0 then
  redis.call('ZREM', delayed, unpack(due))
  redis.call('RPUSH', ready, unpack(due))
  moved = moved + #due
end
local out = {now, -1, table.concat(flags)}
local keys = false
if n > 0 then keys = redis.call('LPOP', ready, n) end
if keys then
  local first = redis.call('INCRBY', lease, #keys) - #keys
  local deadline = now + vt
  for i, key in ipairs(keys) do
    local job = redis.call('HGET', jobs, key)
    if job then
      local receipt = string.format('%016x', first + i) .. ':' .. key
      redis.call('ZADD', inflight, deadline, receipt)
      out[#out + 1] = receipt
      out[#out + 1] = job
      out[#out + 1] = tonumber(redis.call('HGET', reclaims, key) or '0')
    end
  end
end
if #out == 3 then
  local d = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
  local f = redis.call('ZRANGE', inflight, 0, 0, 'WITHSCORES')
  local nx = -1
  if d[2] then nx = tonumber(d[2]) end
  if f[2] and (nx < 0 or tonumber(f[2]) < nx) then nx = tonumber(f[2]) end
  out[2] = nx
end
if moved > 0 and redis.call('LLEN', ready) > 0 then redis.call('PUBLISH', ARGV[1], 'm') end
return out
"#;

/// KEYS: jobs, inflight, reclaims. ARGV: receipts. Returns 1 (acked) / 0 (unknown) each.
const ACK_LUA: &str = r#"
local out = {}
for i, r in ipairs(ARGV) do
  if redis.call('ZREM', KEYS[2], r) == 1 then
    local key = string.sub(r, 18)
    redis.call('HDEL', KEYS[1], key)
    redis.call('HDEL', KEYS[3], key)
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
"#;

/// KEYS: jobs, inflight, delayed, ready, reclaims.
/// ARGV: channel, receipt, job json ('' = keep the stored one), at ms, keep reclaim count (1/0).
/// Returns -1 (unknown), 1 (ready now), 2 (delayed).
/// A script that fails halfway keeps the writes made before the failure (Redis does not
/// roll back), so the reservation is given up last: a failed write leaves the job reserved
/// and the caller's retry (or the visibility timeout) finds it.
const RETRY_LUA: &str = r#"
local jobs, inflight, delayed, ready, reclaims = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
if not redis.call('ZSCORE', inflight, ARGV[2]) then return -1 end
local key = string.sub(ARGV[2], 18)
if ARGV[3] ~= '' then redis.call('HSET', jobs, key, ARGV[3]) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local at = tonumber(ARGV[4])
local out = 2
if at <= now then
  redis.call('RPUSH', ready, key)
  out = 1
else
  redis.call('ZADD', delayed, at, key)
end
redis.call('ZREM', inflight, ARGV[2])
if ARGV[5] ~= '1' then redis.call('HDEL', reclaims, key) end
if out == 1 then
  redis.call('PUBLISH', ARGV[1], 'r')
else
  local head = redis.call('ZRANGE', delayed, 0, 0)
  if head[1] == key then redis.call('PUBLISH', ARGV[1], 'd') end
end
return out
"#;

/// KEYS: jobs, inflight, reclaims, dead, dead_at, dead_seq.
/// ARGV: receipt, job json, dead-letter id to reuse ('' = new).
/// Returns the dead-letter id, or -1 (unknown receipt).
/// The dead letter is written before the job leaves the queue (Redis does not roll back a
/// script that fails halfway): a dead-letter store that cannot be written (`WRONGTYPE`, a
/// full memory) leaves the job reserved for the caller's retry, never lost.
const DEAD_LUA: &str = r#"
local jobs, inflight, reclaims, dead, dead_at, seq = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
if not redis.call('ZSCORE', inflight, ARGV[1]) then return -1 end
local key = string.sub(ARGV[1], 18)
local id = tonumber(ARGV[3])
if not id then id = redis.call('INCR', seq) end
local t = redis.call('TIME')
redis.call('HSET', dead, id, ARGV[2])
redis.call('ZADD', dead_at, tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), id)
redis.call('ZREM', inflight, ARGV[1])
redis.call('HDEL', jobs, key)
redis.call('HDEL', reclaims, key)
return id
"#;

/// KEYS: inflight. ARGV: visibility ms, then receipts. Moves each receipt still held to the
/// deadline `now + visibility`; returns one 1 (extended) / 0 (unknown: acknowledged or
/// reclaimed) per receipt. The pump's heartbeat: one call for every running job.
const EXTEND_LUA: &str = r#"
local t = redis.call('TIME')
local deadline = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
local out = {}
for i = 2, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('ZADD', KEYS[1], 'XX', deadline, ARGV[i])
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
"#;

/// The names of every key of one queue instance.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    pub jobs: String,
    pub ready: String,
    pub delayed: String,
    pub inflight: String,
    pub reclaims: String,
    pub lease: String,
    pub dead: String,
    pub dead_at: String,
    pub dead_seq: String,
    pub wake: String,
}

impl Keys {
    fn new(prefix: &str) -> Self {
        let k = |s: &str| format!("{prefix}:{s}");
        Keys {
            jobs: k("jobs"),
            ready: k("ready"),
            delayed: k("delayed"),
            inflight: k("inflight"),
            reclaims: k("reclaims"),
            lease: k("lease"),
            dead: k("dead"),
            dead_at: k("dead:at"),
            dead_seq: k("dead:seq"),
            wake: k("wake"),
        }
    }

    /// Every data key (not the channel), e.g. for a test's cleanup.
    pub fn all(&self) -> [&str; 9] {
        [
            &self.jobs,
            &self.ready,
            &self.delayed,
            &self.inflight,
            &self.reclaims,
            &self.lease,
            &self.dead,
            &self.dead_at,
            &self.dead_seq,
        ]
    }
}

struct Scripts {
    enqueue: Script,
    reserve: Script,
    ack: Script,
    retry: Script,
    dead: Script,
    extend: Script,
}

impl Scripts {
    fn new() -> Self {
        Scripts {
            enqueue: Script::new(ENQUEUE_LUA),
            reserve: Script::new(RESERVE_LUA),
            ack: Script::new(ACK_LUA),
            retry: Script::new(RETRY_LUA),
            dead: Script::new(DEAD_LUA),
            extend: Script::new(EXTEND_LUA),
        }
    }
}

/// A script's value, and whether an earlier attempt failed in a way that may have run it.
pub(crate) struct Ran<T> {
    pub value: T,
    pub ambiguous: bool,
}

/// The Redis backend. Cheap to share (`Arc<RedisQueue>`); one multiplexed connection carries
/// every operation (concurrent calls are pipelined on it) plus one pub/sub connection for
/// wake-ups. Dropping the queue stops the subscriber.
pub struct RedisQueue {
    conn: SharedConnection,
    pub(crate) keys: Keys,
    scripts: Scripts,
    visibility_ms: u64,
    max_reclaims: u32,
    max_live: u64,
    retry_min: Duration,
    retry_max: Duration,
    op_timeout: Duration,
    wake: Arc<Notify>,
    subscribed: Arc<AtomicBool>,
    metrics: JobMetrics,
    _subscriber: DropGuard,
}

impl std::fmt::Debug for RedisQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisQueue")
            .field("prefix_keys", &self.keys.jobs)
            .finish_non_exhaustive()
    }
}

/// True for failures that go away by themselves (Redis restarting, loading its AOF, a
/// dropped connection, memory full): the caller waits and tries again.
pub(crate) fn is_transient(e: &RedisError) -> bool {
    if matches!(e.code(), Some("OOM") | Some("LOADING") | Some("BUSY")) {
        return true;
    }
    if matches!(e.kind(), ErrorKind::AuthenticationFailed) {
        return false;
    }
    !matches!(e.retry_method(), RetryMethod::NoRetry)
}

fn backend_err(op: &str, e: impl std::fmt::Display) -> QueueError {
    QueueError::Backend(format!("redis {op}: {e}"))
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        _ => None,
    }
}

fn bytes(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        _ => None,
    }
}

fn key_of(receipt: &str) -> Option<&str> {
    (receipt.len() > LEASE_LEN + 1 && receipt.as_bytes()[LEASE_LEN] == b':')
        .then(|| &receipt[LEASE_LEN + 1..])
}

impl RedisQueue {
    /// Connects to `config.url`, waiting (with backoff) while Redis is unreachable: a worker
    /// started before Redis simply waits for it. Bound the wait with `tokio::time::timeout`
    /// where failing fast is wanted (`fraiseql check`). Fails at once on a bad URL or a
    /// rejected password.
    pub async fn connect(config: &QueueConfig) -> Result<RedisQueue, QueueError> {
        config
            .validate()
            .map_err(|e| QueueError::Backend(e.to_string()))?;
        let client = redis::Client::open(config.url.as_str())
            .map_err(|e| backend_err("url", format!("{}: {e}", redact_url(&config.url))))?;
        // A broken connection is replaced on the next request (resolving the host again);
        // our own loops (see `eval`) do the waiting.
        let conn = SharedConnection::new(
            client.clone(),
            Duration::from_millis(config.connect_timeout_ms),
            Duration::from_millis(config.response_timeout_ms),
        );

        let keys = Keys::new(&config.key_prefix);
        let cancel = CancellationToken::new();
        let wake = Arc::new(Notify::new());
        let subscribed = Arc::new(AtomicBool::new(false));
        let queue = RedisQueue {
            conn,
            keys,
            scripts: Scripts::new(),
            visibility_ms: config.visibility_timeout_ms,
            max_reclaims: config.max_reclaims,
            max_live: config.max_live_jobs,
            retry_min: Duration::from_millis(config.retry_min_delay_ms),
            retry_max: Duration::from_millis(config.retry_max_delay_ms),
            op_timeout: Duration::from_millis(
                config.response_timeout_ms + config.connect_timeout_ms,
            ),
            wake: wake.clone(),
            subscribed: subscribed.clone(),
            metrics: JobMetrics::unregistered(),
            _subscriber: cancel.clone().drop_guard(),
        };
        queue.ping_until_up().await?;
        tokio::spawn(subscriber(
            client,
            queue.keys.wake.clone(),
            wake,
            subscribed.clone(),
            cancel,
            queue.backoff(),
            Duration::from_millis(config.connect_timeout_ms),
        ));
        // Reservers poll until the subscription is confirmed; waiting a moment here makes the
        // first idle `reserve` wake up on the first enqueue instead of at the next poll.
        let t = Instant::now();
        while !subscribed.load(Ordering::Acquire) && t.elapsed() < Duration::from_secs(2) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(queue)
    }

    /// Retry delays of every operation: exponential from `retry_min_delay_ms` to
    /// `retry_max_delay_ms` with equal jitter, so that many workers that lost Redis together
    /// do not reconnect in lockstep.
    fn backoff(&self) -> Backoff {
        Backoff::new(self.retry_min, self.retry_max)
    }

    async fn ping_until_up(&self) -> Result<(), QueueError> {
        let mut backoff = self.backoff();
        loop {
            let mut conn = self.conn.clone();
            match redis::cmd("PING").query_async::<()>(&mut conn).await {
                Ok(()) => return Ok(()),
                Err(e) if is_transient(&e) => {
                    let delay = backoff.next_delay();
                    warn!(error = %e, retry_in = ?delay, "redis queue: Redis unreachable, waiting");
                    tokio::time::sleep(delay).await;
                }
                Err(e) => return Err(backend_err("connect", e)),
            }
        }
    }

    /// Records reclaims, backend retries and forced dead letters into `metrics` (the
    /// process's registered [`JobMetrics`]) instead of a private, unregistered set.
    pub fn with_metrics(mut self, metrics: JobMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    pub fn metrics(&self) -> &JobMetrics {
        &self.metrics
    }

    /// One PING round trip, for `/readyz` and `fraiseql check`. Does not retry.
    pub async fn ping(&self) -> Result<(), QueueError> {
        let mut conn = self.conn.clone();
        redis::cmd("PING")
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| backend_err("ping", e))
    }

    pub(crate) fn connection(&self) -> SharedConnection {
        self.conn.clone()
    }

    /// Runs a script, retrying transient failures with backoff until `deadline` (forever
    /// when `None`). `Ok(None)` means the deadline passed first.
    pub(crate) async fn eval<T: FromRedisValue>(
        &self,
        op: &'static str,
        inv: &ScriptInvocation<'_>,
        deadline: Option<Instant>,
    ) -> Result<Option<Ran<T>>, QueueError> {
        let mut backoff = self.backoff();
        let mut ambiguous = false;
        loop {
            let mut conn = self.conn.clone();
            // The client's own response timeout does not cover every stage of a reconnect;
            // this bound makes sure no call hangs on a half-dead connection.
            let result =
                match tokio::time::timeout(self.op_timeout, inv.invoke_async::<T>(&mut conn)).await
                {
                    Ok(r) => r,
                    Err(_) => Err(RedisError::from(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "no reply within the response timeout",
                    ))),
                };
            match result {
                Ok(value) => {
                    if ambiguous {
                        info!(op, "redis queue: Redis is reachable again");
                    }
                    return Ok(Some(Ran { value, ambiguous }));
                }
                Err(e) if is_transient(&e) => {
                    ambiguous = true;
                    self.metrics.backend_retries.with_label_values(&[op]).inc();
                    let delay = backoff.next_delay();
                    if deadline.is_some_and(|d| Instant::now() + delay >= d) {
                        debug!(op, error = %e, "redis queue: Redis unavailable until the deadline");
                        return Ok(None);
                    }
                    warn!(op, error = %e, retry_in = ?delay, "redis queue: Redis unavailable, retrying");
                    tokio::time::sleep(delay).await;
                }
                Err(e) => return Err(backend_err(op, e)),
            }
        }
    }

    /// Runs a script until it succeeds (transient failures are waited out).
    pub(crate) async fn eval_forever<T: FromRedisValue>(
        &self,
        op: &'static str,
        inv: &ScriptInvocation<'_>,
    ) -> Result<Ran<T>, QueueError> {
        match self.eval(op, inv, None).await? {
            Some(r) => Ok(r),
            None => unreachable!("no deadline"),
        }
    }

    /// Enqueues many jobs, one script call per [`ENQUEUE_CHUNK`] jobs, in order. Returns one
    /// [`Enqueued`] per job. Waits while the queue holds `max_live_jobs` and while Redis is
    /// unreachable; when it returns `Ok`, every `Added` job is in Redis.
    pub async fn enqueue_many(&self, jobs: &[Job]) -> Result<Vec<Enqueued>, QueueError> {
        let mut out = Vec::with_capacity(jobs.len());
        for chunk in jobs.chunks(ENQUEUE_CHUNK) {
            let encoded = chunk
                .iter()
                .map(|j| serde_json::to_vec(j).map_err(|e| backend_err("encode job", e)))
                .collect::<Result<Vec<_>, _>>()?;
            let mut start = 0;
            let mut full = self.backoff();
            while start < chunk.len() {
                let mut inv = self.scripts.enqueue.prepare_invoke();
                inv.key(&self.keys.jobs)
                    .key(&self.keys.ready)
                    .arg(&self.keys.wake)
                    .arg(self.max_live);
                for (j, bytes) in chunk[start..].iter().zip(&encoded[start..]) {
                    inv.arg(&j.key).arg(bytes.as_slice());
                }
                let ran: Ran<Vec<i64>> = self.eval_forever("enqueue", &inv).await?;
                for r in &ran.value {
                    // A resent chunk (after a lost reply) finds its own jobs stored byte
                    // for byte and reports them added.
                    out.push(if *r == 1 {
                        Enqueued::Added
                    } else {
                        Enqueued::Duplicate
                    });
                }
                start += ran.value.len();
                if start < chunk.len() {
                    // Full: back-pressure on the producer until workers make room.
                    debug!(live = self.max_live, "redis queue: full, enqueue waits");
                    tokio::time::sleep(full.next_delay()).await;
                } else {
                    full.reset();
                }
            }
        }
        Ok(out)
    }

    /// Reserves up to `max` (≤ [`MAX_BATCH`]) jobs in one round trip, waiting at most `wait`
    /// for the first one. Each reservation is owned for `visibility_timeout_ms`.
    pub async fn reserve_many(
        &self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Reservation>, QueueError> {
        let deadline = Instant::now() + wait;
        loop {
            // Register for wake-ups before looking, so that a publish between the script and
            // the sleep is not lost.
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();

            let Some(batch) = self
                .ack_and_reserve(&[], max.max(1), Some(deadline))
                .await?
            else {
                return Ok(Vec::new());
            };
            if !batch.reserved.is_empty() {
                return Ok(batch.reserved);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            let sleep_for = self.idle_sleep(&batch).min(deadline - now);
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep(sleep_for) => {}
            }
        }
    }

    /// How long an idle reserver may sleep after `batch` found nothing: until the earliest
    /// delayed job or visibility deadline Redis reported, and never long without looking.
    pub fn idle_sleep(&self, batch: &Batch) -> Duration {
        let cap = if self.subscribed.load(Ordering::Acquire) {
            IDLE_RECHECK
        } else {
            POLL_WITHOUT_SUBSCRIPTION
        };
        if batch.next_ms >= 0 {
            // Redis's clock, as a delta: the local clock's offset does not matter.
            let until = Duration::from_millis((batch.next_ms - batch.now_ms).max(0) as u64 + 1);
            cap.min(until)
        } else {
            cap
        }
    }

    /// A future that completes when a script reports new ready work. Create it (and
    /// `enable()` it) *before* the [`RedisQueue::ack_and_reserve`] call whose emptiness it
    /// waits on, so that a wake-up in between is not lost.
    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.wake.notified()
    }

    /// One round trip: acknowledges `acks` (receipts), then reclaims expired reservations,
    /// promotes due delayed jobs and reserves up to `max` jobs (0 = only acknowledge). Does
    /// not wait for work. Retries transient failures until `deadline` (`None` = forever);
    /// `Ok(None)` when the deadline passed first.
    pub async fn ack_and_reserve(
        &self,
        acks: &[String],
        max: usize,
        deadline: Option<Instant>,
    ) -> Result<Option<Batch>, QueueError> {
        let max = max.min(MAX_BATCH);
        let mut inv = self.scripts.reserve.prepare_invoke();
        inv.key(&self.keys.jobs)
            .key(&self.keys.ready)
            .key(&self.keys.delayed)
            .key(&self.keys.inflight)
            .key(&self.keys.lease)
            .key(&self.keys.reclaims)
            .arg(&self.keys.wake)
            .arg(max)
            .arg(self.visibility_ms)
            .arg(MOVE_LIMIT);
        for r in acks {
            inv.arg(r);
        }
        let Some(ran) = self.eval::<Vec<Value>>("reserve", &inv, deadline).await? else {
            return Ok(None);
        };
        let mut items = ran.value.into_iter();
        let now_ms = items.next().as_ref().and_then(int).unwrap_or(0);
        let next_ms = items.next().as_ref().and_then(int).unwrap_or(-1);
        let flags = items.next().and_then(bytes).unwrap_or_default();
        let mut acked = AckOutcome::default();
        for (r, f) in acks
            .iter()
            .zip(flags.iter().chain(std::iter::repeat(&b'0')))
        {
            if *f == b'1' || ran.ambiguous {
                acked.acked += 1;
            } else {
                acked.unknown.push(r.clone());
            }
        }
        let mut reserved = Vec::new();
        while let (Some(receipt), Some(raw), Some(reclaims)) =
            (items.next(), items.next(), items.next())
        {
            let receipt = bytes(receipt)
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| backend_err("reserve", "malformed receipt"))?;
            let raw = bytes(raw).ok_or_else(|| backend_err("reserve", "malformed job"))?;
            let reclaims = int(&reclaims).unwrap_or(0);
            match serde_json::from_slice::<Job>(&raw) {
                Ok(job) if reclaims > i64::from(self.max_reclaims) => {
                    self.give_up_on_reclaimed(Reservation { job, receipt }, reclaims)
                        .await?;
                }
                Ok(mut job) => {
                    if reclaims > 0 {
                        self.metrics.reclaimed.inc();
                        // The worker that lost it may have run it to success and died before
                        // its (batched) ack: the executor consults the dedup window.
                        job.replay = true;
                    }
                    reserved.push(Reservation { job, receipt })
                }
                Err(e) => {
                    // Not ours to run; keep the bytes for a person to look at.
                    error!(%receipt, error = %e, "redis queue: stored job is not valid, dead-lettering it");
                    if let Err(e) = self.dead_letter_raw(&receipt, &raw, None).await {
                        // The rest of the batch is still ours to run; this one comes back
                        // after its visibility timeout.
                        warn!(%receipt, error = %e, "redis queue: dead-lettering an invalid job failed");
                    }
                }
            }
        }
        Ok(Some(Batch {
            acked,
            reserved,
            now_ms,
            next_ms,
        }))
    }

    async fn give_up_on_reclaimed(
        &self,
        mut r: Reservation,
        reclaims: i64,
    ) -> Result<(), QueueError> {
        warn!(key = %r.job.key, reclaims, "redis queue: job reclaimed too often, dead-lettering it");
        r.job.record_failure(
            &format!(
                "reclaimed {reclaims} times: every worker that reserved it died or overran the \
                 visibility timeout"
            ),
            false,
        );
        self.metrics
            .dead_lettered
            .with_label_values(&[crate::metrics::action_label(&r.job.action_type)])
            .inc();
        match self.dead_letter(r).await {
            Ok(()) | Err(QueueError::UnknownReservation(_)) => Ok(()),
            Err(e) => {
                // Not a reason to fail the whole batch: the job stays reserved, expires and
                // comes back here at the next reclaim, when the store may work again.
                warn!(error = %e, "redis queue: dead-lettering a job reclaimed too often failed; trying again after its visibility timeout");
                Ok(())
            }
        }
    }

    /// Acknowledges many reservations in one round trip. Unknown receipts are reported, not
    /// an error: in a batch, one stale reservation must not fail the others.
    pub async fn ack_many(&self, reservations: &[Reservation]) -> Result<AckOutcome, QueueError> {
        let mut outcome = AckOutcome::default();
        for chunk in reservations.chunks(MAX_BATCH) {
            let mut inv = self.scripts.ack.prepare_invoke();
            inv.key(&self.keys.jobs)
                .key(&self.keys.inflight)
                .key(&self.keys.reclaims);
            for r in chunk {
                inv.arg(&r.receipt);
            }
            let ran: Ran<Vec<i64>> = self.eval_forever("ack", &inv).await?;
            for (r, ok) in chunk.iter().zip(&ran.value) {
                if *ok == 1 || ran.ambiguous {
                    outcome.acked += 1;
                } else {
                    outcome.unknown.push(r.receipt.clone());
                }
            }
        }
        Ok(outcome)
    }

    /// Keeps a long-running reservation owned for another `visibility_timeout_ms` from now.
    /// Fails with [`QueueError::UnknownReservation`] when it was already reclaimed.
    pub async fn extend(&self, reservation: &Reservation) -> Result<(), QueueError> {
        let receipts = std::slice::from_ref(&reservation.receipt);
        match self.extend_receipts(receipts, None).await? {
            Some(lost) if !lost.is_empty() => {
                Err(QueueError::UnknownReservation(reservation.receipt.clone()))
            }
            _ => Ok(()),
        }
    }

    /// Keeps the reservations `receipts` owned for another `visibility_timeout_ms` from now,
    /// one round trip per [`MAX_BATCH`] receipts. Returns the receipts that were no longer
    /// ours (acknowledged, or already reclaimed); `Ok(None)` when Redis stayed unreachable
    /// until `deadline`.
    pub async fn extend_receipts(
        &self,
        receipts: &[String],
        deadline: Option<Instant>,
    ) -> Result<Option<Vec<String>>, QueueError> {
        let mut lost = Vec::new();
        for chunk in receipts.chunks(MAX_BATCH) {
            let mut inv = self.scripts.extend.prepare_invoke();
            inv.key(&self.keys.inflight).arg(self.visibility_ms);
            for r in chunk {
                inv.arg(r);
            }
            let Some(ran) = self.eval::<Vec<i64>>("extend", &inv, deadline).await? else {
                return Ok(None);
            };
            for (r, ok) in chunk.iter().zip(&ran.value) {
                if *ok != 1 {
                    lost.push(r.clone());
                }
            }
        }
        Ok(Some(lost))
    }

    /// Hands a reservation back without counting an attempt (graceful shutdown): the job is
    /// ready again at once, with the reclaim count it had.
    pub async fn release(&self, reservation: Reservation) -> Result<(), QueueError> {
        self.retry_inner(reservation, Utc::now() - chrono::Duration::seconds(1), true)
            .await
    }

    /// Hands reservations back by receipt alone (the stored job is kept as it was): what a
    /// draining worker does with jobs it could not finish within its grace period. Unknown
    /// receipts are ignored.
    pub async fn release_receipts(&self, receipts: &[String]) -> Result<(), QueueError> {
        for receipt in receipts {
            if key_of(receipt).is_none() {
                continue;
            }
            let mut inv = self.scripts.retry.prepare_invoke();
            inv.key(&self.keys.jobs)
                .key(&self.keys.inflight)
                .key(&self.keys.delayed)
                .key(&self.keys.ready)
                .key(&self.keys.reclaims)
                .arg(&self.keys.wake)
                .arg(receipt)
                .arg("")
                .arg(0)
                .arg("1");
            self.eval_forever::<i64>("release", &inv).await?;
        }
        Ok(())
    }

    async fn retry_inner(
        &self,
        reservation: Reservation,
        at: DateTime<Utc>,
        keep_reclaims: bool,
    ) -> Result<(), QueueError> {
        if key_of(&reservation.receipt).is_none() {
            return Err(QueueError::UnknownReservation(reservation.receipt));
        }
        let json = serde_json::to_vec(&reservation.job).map_err(|e| backend_err("encode", e))?;
        let mut inv = self.scripts.retry.prepare_invoke();
        inv.key(&self.keys.jobs)
            .key(&self.keys.inflight)
            .key(&self.keys.delayed)
            .key(&self.keys.ready)
            .key(&self.keys.reclaims)
            .arg(&self.keys.wake)
            .arg(&reservation.receipt)
            .arg(json)
            .arg(at.timestamp_millis())
            .arg(if keep_reclaims { "1" } else { "0" });
        let ran: Ran<i64> = self.eval_forever("retry", &inv).await?;
        if ran.value < 0 && !ran.ambiguous {
            return Err(QueueError::UnknownReservation(reservation.receipt));
        }
        Ok(())
    }

    /// Moves a reserved job to the dead letters (`P:dead`), under `id` when given (a job
    /// retried from the dead letters dies again under its old id). Returns the id, or `None`
    /// when the receipt was unknown.
    async fn dead_letter_raw(
        &self,
        receipt: &str,
        json: &[u8],
        id: Option<i64>,
    ) -> Result<Option<Ran<i64>>, QueueError> {
        let mut inv = self.scripts.dead.prepare_invoke();
        inv.key(&self.keys.jobs)
            .key(&self.keys.inflight)
            .key(&self.keys.reclaims)
            .key(&self.keys.dead)
            .key(&self.keys.dead_at)
            .key(&self.keys.dead_seq)
            .arg(receipt)
            .arg(json)
            .arg(id.map(|i| i.to_string()).unwrap_or_default());
        let ran: Ran<i64> = self.eval_forever("dead_letter", &inv).await?;
        Ok((ran.value >= 0 || ran.ambiguous).then_some(ran))
    }

    /// Jobs waiting in `P:ready` (not delayed, not reserved), for the queue-depth gauge.
    pub async fn ready_len(&self) -> Result<u64, QueueError> {
        let mut conn = self.conn.clone();
        redis::cmd("LLEN")
            .arg(&self.keys.ready)
            .query_async(&mut conn)
            .await
            .map_err(|e| backend_err("llen", e))
    }

    /// Deletes every key of this instance (tests, `fraiseql queue reset`-style tooling).
    pub async fn delete_all_keys(&self) -> Result<(), QueueError> {
        let mut conn = self.conn.clone();
        redis::cmd("DEL")
            .arg(&self.keys.all()[..])
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| backend_err("del", e))
    }
}

/// Keeps one pub/sub subscription to the wake-up channel alive, reconnecting with backoff,
/// and turns each message into a wake-up of every idle reserver of this instance.
async fn subscriber(
    client: redis::Client,
    channel: String,
    wake: Arc<Notify>,
    subscribed: Arc<AtomicBool>,
    cancel: CancellationToken,
    mut backoff: Backoff,
    connect_timeout: Duration,
) {
    loop {
        let session = async {
            let mut ps = open_pubsub(&client, connect_timeout).await?;
            ps.subscribe(&channel).await?;
            subscribed.store(true, Ordering::Release);
            // Something may have become ready while we were not listening.
            wake.notify_waiters();
            let mut stream = ps.on_message();
            while stream.next().await.is_some() {
                wake.notify_waiters();
            }
            Ok::<_, RedisError>(())
        };
        let result = tokio::select! {
            _ = cancel.cancelled() => return,
            r = session => r,
        };
        let was_up = subscribed.swap(false, Ordering::AcqRel);
        if was_up {
            backoff.reset();
        }
        match result {
            Ok(()) => debug!("redis queue: wake-up subscription closed, reconnecting"),
            Err(e) => debug!(error = %e, "redis queue: wake-up subscription failed, retrying"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

/// A RESP2 pub/sub connection to the client's server, its TCP host resolved through
/// [`crate::net`]: redis-rs's own `get_async_pubsub` resolves through libc and takes no
/// resolver.
async fn open_pubsub(
    client: &redis::Client,
    connect_timeout: Duration,
) -> Result<redis::aio::PubSub, RedisError> {
    let info = client.get_connection_info();
    match info.addr() {
        redis::ConnectionAddr::Tcp(host, port) => {
            let stream = crate::net::connect_tcp(host, *port, connect_timeout)
                .await
                .map_err(|e| RedisError::from(std::io::Error::other(e.to_string())))?;
            // Wake-ups are small and latency matters more than packets saved.
            stream.set_nodelay(true)?;
            redis::aio::PubSub::new(info.redis_settings(), stream).await
        }
        redis::ConnectionAddr::Unix(path) => {
            let stream = tokio::net::UnixStream::connect(path).await?;
            redis::aio::PubSub::new(info.redis_settings(), stream).await
        }
        // `queue.url` accepts neither rediss:// nor anything else (QueueConfig::validate).
        _ => Err(RedisError::from((
            ErrorKind::InvalidClientConfig,
            "unsupported Redis address",
        ))),
    }
}

#[async_trait]
impl Queue for RedisQueue {
    fn backend(&self) -> &'static str {
        "redis"
    }

    fn durable(&self) -> bool {
        true
    }

    async fn enqueue_many(&self, jobs: Vec<Job>) -> Result<Vec<Enqueued>, QueueError> {
        RedisQueue::enqueue_many(self, &jobs).await
    }

    async fn enqueue(&self, job: Job) -> Result<Enqueued, QueueError> {
        let out = self.enqueue_many(std::slice::from_ref(&job)).await?;
        Ok(out[0])
    }

    async fn reserve(&self, wait: Duration) -> Result<Option<Reservation>, QueueError> {
        Ok(self.reserve_many(1, wait).await?.pop())
    }

    async fn ack(&self, reservation: Reservation) -> Result<(), QueueError> {
        if key_of(&reservation.receipt).is_none() {
            return Err(QueueError::UnknownReservation(reservation.receipt));
        }
        let out = self.ack_many(std::slice::from_ref(&reservation)).await?;
        match out.unknown.into_iter().next() {
            Some(r) => Err(QueueError::UnknownReservation(r)),
            None => Ok(()),
        }
    }

    async fn retry(&self, reservation: Reservation, at: DateTime<Utc>) -> Result<(), QueueError> {
        self.retry_inner(reservation, at, false).await
    }

    async fn dead_letter(&self, reservation: Reservation) -> Result<(), QueueError> {
        if key_of(&reservation.receipt).is_none() {
            return Err(QueueError::UnknownReservation(reservation.receipt));
        }
        let json = serde_json::to_vec(&reservation.job).map_err(|e| backend_err("encode", e))?;
        match self
            .dead_letter_raw(&reservation.receipt, &json, reservation.job.dead_letter_id)
            .await?
        {
            Some(_) => Ok(()),
            None => Err(QueueError::UnknownReservation(reservation.receipt)),
        }
    }

    async fn depth(&self) -> Result<u64, QueueError> {
        let mut conn = self.conn.clone();
        redis::cmd("HLEN")
            .arg(&self.keys.jobs)
            .query_async(&mut conn)
            .await
            .map_err(|e| backend_err("hlen", e))
    }
}

#[async_trait]
impl BatchQueue for RedisQueue {
    fn max_batch(&self) -> usize {
        MAX_BATCH
    }

    async fn ack_and_reserve(
        &self,
        acks: &[String],
        max: usize,
        deadline: Option<Instant>,
    ) -> Result<Option<Batch>, QueueError> {
        RedisQueue::ack_and_reserve(self, acks, max, deadline).await
    }

    fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        RedisQueue::notified(self)
    }

    fn idle_sleep(&self, batch: &Batch) -> Duration {
        RedisQueue::idle_sleep(self, batch)
    }

    async fn release_receipts(&self, receipts: &[String]) -> Result<(), QueueError> {
        RedisQueue::release_receipts(self, receipts).await
    }

    fn lease(&self) -> Option<Duration> {
        Some(Duration::from_millis(self.visibility_ms))
    }

    async fn extend_receipts(
        &self,
        receipts: &[String],
        deadline: Option<Instant>,
    ) -> Result<Option<Vec<String>>, QueueError> {
        RedisQueue::extend_receipts(self, receipts, deadline).await
    }
}

#[async_trait]
impl Probe for RedisQueue {
    async fn ping(&self) -> Result<(), QueueError> {
        RedisQueue::ping(self).await
    }
}
