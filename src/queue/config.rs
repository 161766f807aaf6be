//! The `[queue]` section of the configuration: which backend carries jobs and, for Redis,
//! where it lives and how it behaves.
//!
//! A plain serde struct with `deny_unknown_fields` and defaults for every key, in the style of
//! the main crate's `config.rs`, so that the lead can add it to `Config` as
//! `pub queue: QueueConfig`. The memory backend's bound stays in `[observers] queue_capacity`.

use crate::setting::Invalid;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::redact::redact_url;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueBackend {
    /// In-process queue: jobs live in this process; the reader keeps its checkpoint behind
    /// unfinished jobs.
    #[default]
    Memory,
    /// Redis: jobs survive any process dying; any number of `fraiseql worker`s consume.
    Redis,
}

impl QueueBackend {
    /// The name in logs and readiness reasons (`memory`, `redis`).
    pub fn name(self) -> &'static str {
        match self {
            QueueBackend::Memory => "memory",
            QueueBackend::Redis => "redis",
        }
    }

    /// True when jobs live in a service of their own: connecting may wait for it, other
    /// processes (`fraiseql worker`) can consume them, and readiness depends on it.
    pub fn is_external(self) -> bool {
        self != QueueBackend::Memory
    }
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// `memory` or `redis`.
    pub backend: QueueBackend,
    /// Redis URL (`redis://[:password@]host:port[/db]`). Only `redis://` is accepted in this
    /// build: TLS would need the rustls feature of the `redis` crate.
    pub url: String,
    /// Prefix of every Redis key and of the wake-up channel, so that several instances (or
    /// test runs) share one Redis without seeing each other's jobs.
    pub key_prefix: String,
    /// How long a reserved job stays owned by its worker. When the worker neither acks,
    /// retries nor dead-letters it within this time (it died, or hung), the job is handed to
    /// another worker. The pump extends running jobs' reservations every third of it; the
    /// config still refuses one below the longest action timeout (`Config::validate`).
    pub visibility_timeout_ms: u64,
    /// A job reclaimed more often than this (it kills or hangs every worker that takes it) is
    /// dead-lettered instead of being handed out again.
    pub max_reclaims: u32,
    /// Back-pressure: `enqueue` waits while this many jobs are live (ready, delayed or
    /// reserved). 0 = no bound (Redis's `maxmemory` is then the only limit).
    pub max_live_jobs: u64,
    /// First wait after Redis failed (connection refused, reset, loading the AOF, OOM), in
    /// milliseconds; doubled on each further failure up to `retry_max_delay_ms`.
    pub retry_min_delay_ms: u64,
    pub retry_max_delay_ms: u64,
    /// Time allowed for one Redis reply before the connection is considered dead, in
    /// milliseconds.
    pub response_timeout_ms: u64,
    /// Time allowed to open a connection, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Most jobs one worker process reserves in one round trip (`fraiseql worker` fills its
    /// free concurrency slots with one call, up to this).
    pub reserve_batch: usize,
    /// With the Redis backend, `serve` only enqueues unless this is true.
    pub run_workers: bool,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            backend: QueueBackend::Memory,
            url: "redis://127.0.0.1:6379".to_string(),
            key_prefix: "fraiseql".to_string(),
            visibility_timeout_ms: 60_000,
            max_reclaims: 5,
            max_live_jobs: 1_000_000,
            retry_min_delay_ms: 50,
            retry_max_delay_ms: 5_000,
            response_timeout_ms: 10_000,
            connect_timeout_ms: 3_000,
            reserve_batch: 100,
            run_workers: false,
        }
    }
}

impl std::fmt::Debug for QueueConfig {
    // The URL may carry a password: never print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueConfig")
            .field("backend", &self.backend)
            .field("url", &redact_url(&self.url))
            .field("key_prefix", &self.key_prefix)
            .field("visibility_timeout_ms", &self.visibility_timeout_ms)
            .field("max_reclaims", &self.max_reclaims)
            .field("max_live_jobs", &self.max_live_jobs)
            .field("retry_min_delay_ms", &self.retry_min_delay_ms)
            .field("retry_max_delay_ms", &self.retry_max_delay_ms)
            .field("response_timeout_ms", &self.response_timeout_ms)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("reserve_batch", &self.reserve_batch)
            .field("run_workers", &self.run_workers)
            .finish()
    }
}

impl QueueConfig {
    /// Checks ranges and the URL scheme; `Config::validate` adds where the value came from.
    pub fn validate(&self) -> Result<(), Invalid> {
        let err = |key: &str, expected: &str| Err(Invalid::new(format!("queue.{key}"), expected));
        if self.backend == QueueBackend::Redis {
            if !(self.url.starts_with("redis://") || self.url.starts_with("redis+unix://")) {
                return err(
                    "url",
                    "expected redis://host:port[/db] or redis+unix://path",
                );
            }
            if self.key_prefix.is_empty() {
                return err("key_prefix", "must not be empty");
            }
        }
        if self.visibility_timeout_ms < 100 {
            return err("visibility_timeout_ms", "expected at least 100");
        }
        if self.retry_min_delay_ms == 0 || self.retry_max_delay_ms < self.retry_min_delay_ms {
            return err(
                "retry_max_delay_ms",
                "expected retry_min_delay_ms >= 1 and retry_max_delay_ms >= retry_min_delay_ms",
            );
        }
        if self.response_timeout_ms == 0 {
            return err("response_timeout_ms", "expected at least 1");
        }
        if self.reserve_batch == 0 || self.reserve_batch > 1000 {
            return err("reserve_batch", "expected 1 to 1000");
        }
        Ok(())
    }

    /// Where the jobs live, for messages: `Redis at redis://…` (password hidden).
    pub fn location(&self) -> String {
        match self.backend {
            QueueBackend::Memory => "the in-process queue".to_string(),
            QueueBackend::Redis => format!("Redis at {}", redact_url(&self.url)),
        }
    }

    pub fn visibility_timeout(&self) -> Duration {
        Duration::from_millis(self.visibility_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_a_full_section_parse() {
        let c: QueueConfig = toml::from_str("").unwrap();
        assert_eq!(c, QueueConfig::default());
        c.validate().unwrap();
        let c: QueueConfig = toml::from_str(
            r#"
            backend = "redis"
            url = "redis://127.0.0.1:6380/2"
            key_prefix = "app1"
            visibility_timeout_ms = 5000
            run_workers = true
            "#,
        )
        .unwrap();
        assert_eq!(c.backend, QueueBackend::Redis);
        assert_eq!(c.visibility_timeout(), Duration::from_secs(5));
        c.validate().unwrap();
    }

    #[test]
    fn unknown_keys_and_bad_values_are_rejected() {
        let e = toml::from_str::<QueueConfig>("visibility_timeout = 5").unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
        let e = toml::from_str::<QueueConfig>("backend = \"kafka\"").unwrap_err();
        assert!(e.to_string().contains("memory"), "{e}");
        let c = QueueConfig {
            backend: QueueBackend::Redis,
            url: "http://x".into(),
            ..Default::default()
        };
        assert_eq!(c.validate().unwrap_err().key, "queue.url");
    }

    #[test]
    fn the_password_is_never_printed() {
        let c = QueueConfig {
            url: "redis://app:hunter2@redis:6379/0".into(),
            ..Default::default()
        };
        let s = format!("{c:?}");
        assert!(
            !s.contains("hunter2") && s.contains("redis://app:***@redis:6379/0"),
            "{s}"
        );
    }
}
