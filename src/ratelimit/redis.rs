//! The shared store: each check is one Lua script run atomically by Redis on its own clock
//! (`TIME`), so every `serve` instance spends from one budget and no two clocks disagree.
//! GCRA: a key holds the budget's theoretical arrival time in milliseconds and expires
//! when the budget is full again, so idle clients cost Redis nothing.

use std::time::Duration;

use futures_util::future::BoxFuture;

use super::{Decision, Rule, Store, StoreError};
use crate::redis_conn::SharedConnection;

/// KEYS[1]: the budget. ARGV: milliseconds one request adds, the burst.
/// Returns {allowed, remaining, reset_ms, retry_after_ms}.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local per = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + per
local allow_at = new_tat - per * burst
if now < allow_at then
  return {0, 0, math.ceil(tat - now), math.ceil(allow_at - now)}
end
redis.call('SET', KEYS[1], string.format('%.3f', new_tat), 'PX', math.max(1, math.ceil(new_tat - now)))
local remaining = math.floor((now - allow_at) / per)
return {1, remaining, math.ceil(new_tat - now), 0}
";

pub struct RedisStore {
    conn: SharedConnection,
    script: redis::Script,
    prefix: String,
}

impl RedisStore {
    /// No connection is made until the first check.
    pub fn new(url: &str, prefix: &str, timeout: Duration) -> Result<RedisStore, StoreError> {
        let client = redis::Client::open(url)
            .map_err(|e| StoreError::Url(format!("{}: {e}", crate::redact::redact_url(url))))?;
        Ok(RedisStore {
            conn: SharedConnection::new(client, timeout, timeout),
            script: redis::Script::new(GCRA),
            prefix: prefix.to_owned(),
        })
    }
}

impl Store for RedisStore {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn check<'a>(
        &'a self,
        key: &'a str,
        rule: Rule,
    ) -> BoxFuture<'a, Result<Decision, StoreError>> {
        Box::pin(async move {
            let per_ms = 60_000.0 / f64::from(rule.requests_per_minute.max(1));
            let mut conn = self.conn.clone();
            let (allowed, remaining, reset_ms, retry_ms): (i64, i64, i64, i64) = self
                .script
                .key(format!("{}{key}", self.prefix))
                .arg(per_ms)
                .arg(rule.burst())
                .invoke_async(&mut conn)
                .await
                .map_err(|e| StoreError::Failed(e.to_string()))?;
            let ms = |v: i64| Duration::from_millis(v.max(0) as u64);
            Ok(Decision {
                allowed: allowed == 1,
                remaining: remaining.clamp(0, i64::from(u32::MAX)) as u32,
                reset: ms(reset_ms),
                retry_after: ms(retry_ms),
            })
        })
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .map(drop)
                .map_err(|e| StoreError::Failed(e.to_string()))
        })
    }
}
