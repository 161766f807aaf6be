//! Shared harness for the Redis queue tests: a queue on the machine's Redis
//! (127.0.0.1:6379) under a random key prefix, and a guard that deletes every key with that
//! prefix when the test ends (even when it panics), so tests run in parallel and leave nothing
//! behind.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// A private redis-server on a free port, persisting to an append-only file in a temporary
/// directory (`--appendonly yes --appendfsync always`, no RDB snapshots): a test can kill and
/// restart it without touching the machine's Redis, and every acknowledged write survives.
pub struct RedisServer {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut s = RedisServer {
            port,
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        s.spawn();
        s
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH");
        self.child = Some(child);
        let t = Instant::now();
        loop {
            if let Ok(mut c) = redis::Client::open(self.url()).unwrap().get_connection()
                && redis::cmd("PING").query::<String>(&mut c).is_ok()
            {
                return;
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no shutdown save, only what the AOF already has.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill9();
    }
}
