//! `cache`: publish an invalidation message for the changed entity.
//!
//! FraiseQL has no response cache yet, so this action publishes to a PostgreSQL NOTIFY
//! channel (default `fraiseql_cache_invalidation`) that any cache layer — a future built-in
//! response cache, or an external one listening with `LISTEN` — consumes. The payload is
//! JSON: `{"entity", "entity_id", "op", "change_pk", "idempotency_key"}`. NOTIFY is
//! transactional and cheap; a failure to reach the database is retryable.

use serde::{Deserialize, Serialize};

use super::{ActionConfigError, ActionDeps, ActionError};
use crate::queue::Job;

fn default_channel() -> String {
    "fraiseql_cache_invalidation".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Stable identity of this action within its observer (letters, digits, `-`, `_`, `.`):
    /// queued jobs name the action they were made for, so reordering the actions or editing
    /// this one keeps them running it. Default: the type and a hash of the settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default = "default_channel")]
    pub channel: String,
}

pub struct CacheAction {
    pool: deadpool_postgres::Pool,
    channel: String,
}

impl CacheAction {
    pub fn build(c: &CacheConfig, deps: &ActionDeps) -> Result<Self, ActionConfigError> {
        let ok = !c.channel.is_empty()
            && c.channel.len() < 64
            && c.channel
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '.');
        if !ok {
            return Err(ActionConfigError::new(
                "channel",
                format!(
                    "expected a channel name of letters, digits, `_` or `.` (under 64), found `{}`",
                    c.channel
                ),
            ));
        }
        Ok(CacheAction {
            pool: deps.pool.clone(),
            channel: c.channel.clone(),
        })
    }

    /// The message published for a job.
    pub fn message(job: &Job) -> serde_json::Value {
        let ev = &job.payload["event"];
        serde_json::json!({
            "entity": ev["entity"],
            "entity_id": ev["entity_id"],
            "op": ev["op"],
            "change_pk": job.change_pk,
            "idempotency_key": job.key,
        })
    }

    pub async fn execute(&self, job: &Job) -> Result<(), ActionError> {
        let client = self
            .pool
            .get()
            .await
            .map_err(|e| ActionError::retryable(format!("database unavailable: {e}")))?;
        let payload = Self::message(job).to_string();
        client
            .execute("SELECT pg_notify($1, $2)", &[&self.channel, &payload])
            .await
            .map_err(|e| ActionError::retryable(format!("NOTIFY failed: {e}")))?;
        Ok(())
    }
}
