//! Shared harness for the Redis queue tests: a queue on the machine's Redis
//! (127.0.0.1:6379) under a random key prefix, and a guard that deletes every key with that
//! prefix when the test ends (even when it panics), so tests run in parallel and leave nothing
//! behind.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use fraiseql::queue::Job;
use fraiseql::queue::config::{QueueBackend, QueueConfig};
use fraiseql::queue::redis::RedisQueue;

pub const REDIS_URL: &str = "redis://127.0.0.1:6379";

/// Deletes `<prefix>:*` on drop.
pub struct Cleanup {
    url: String,
    prefixes: Arc<Mutex<Vec<String>>>,
}

impl Cleanup {
    pub fn new(url: &str) -> Self {
        Cleanup {
            url: url.to_string(),
            prefixes: Arc::default(),
        }
    }

    /// A fresh random prefix, remembered for deletion.
    pub fn prefix(&self) -> String {
        let p = format!("fqtest:{}", uuid::Uuid::new_v4().simple());
        self.prefixes.lock().unwrap().push(p.clone());
        p
    }

    pub fn config(&self) -> QueueConfig {
        config(&self.url, &self.prefix())
    }

    /// Keys still present under this guard's prefixes.
    pub fn remaining_keys(&self) -> Vec<String> {
        let mut conn = redis::Client::open(self.url.as_str())
            .unwrap()
            .get_connection()
            .unwrap();
        let mut out = Vec::new();
        for p in self.prefixes.lock().unwrap().iter() {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{p}:*"))
                .query(&mut conn)
                .unwrap_or_default();
            out.extend(keys);
        }
        out
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open(self.url.as_str()) else {
            return;
        };
        let Ok(mut conn) = client.get_connection() else {
            return;
        };
        for p in self.prefixes.lock().unwrap().iter() {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{p}:*"))
                .query(&mut conn)
                .unwrap_or_default();
            if !keys.is_empty() {
                let _ = redis::cmd("DEL").arg(keys).query::<()>(&mut conn);
            }
        }
    }
}

pub fn config(url: &str, prefix: &str) -> QueueConfig {
    QueueConfig {
        backend: QueueBackend::Redis,
        url: url.to_string(),
        key_prefix: prefix.to_string(),
        visibility_timeout_ms: 30_000,
        ..Default::default()
    }
}

pub async fn queue(cleanup: &Cleanup) -> RedisQueue {
    RedisQueue::connect(&cleanup.config())
        .await
        .expect("Redis at 127.0.0.1:6379")
}

pub fn job(pk: i64) -> Job {
    Job::new(
        pk,
        "test",
        0,
        "webhook",
        serde_json::json!({"event": {"pk": pk}, "after": {"n": pk}}),
    )
}
