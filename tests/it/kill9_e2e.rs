//! Kill -9: 2,000 changes committed while the process running the observers is killed and
//! restarted twice mid-stream. Every (change, action) pair must be delivered at least once;
//! duplicates may only appear around the kills and carry the same idempotency key.

use crate::common;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::TestDb;
use common::observers::*;

const CHANGES: usize = 2000;

/// The real `fraiseql serve`, running the observers from `config` (TOML).
fn spawn_runner(db_url: &str, config: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_fraiseql"))
        .args(["--config", config.to_str().unwrap(), "serve", "--listen"])
        .arg(format!("127.0.0.1:{}", common::free_port()))
        .env("FRAISEQL_DATABASE_URL", db_url)
        .env("FRAISEQL_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("fraiseql binary")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_twice_mid_stream_loses_nothing() {
    let db = TestDb::new().await;
    db.create_posts().await;
    let rx = HttpReceiver::start_ok().await;
    let config = serde_json::json!({
        "observer_runtime": {
            "concurrency": 8,
            "poll_interval_ms": 200,
            "checkpoint_interval_ms": 50,
            "takeover_interval_ms": 100,
            "start_from": "beginning"
        },
        "observers": [{
            "name": "hook",
            "entity": "Post",
            "retry": {"max_attempts": 10, "backoff": "exponential", "initial_delay_ms": 50, "max_delay_ms": 500, "jitter": true},
            "actions": [
                {"type": "webhook", "url": rx.url("/a")},
                {"type": "webhook", "url": rx.url("/b")}
            ]
        }]
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fraiseql.toml");
    std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();

    let mut child = spawn_runner(&db.url(), &path);
    let started = Instant::now();
    // Commit 2,000 changes over ~3 s, one per transaction.
    let writer = write_posts(db.pool().clone(), CHANGES, 20, Duration::from_millis(25));
    let mut kills = Vec::new();
    for at in [Duration::from_millis(900), Duration::from_millis(2000)] {
        tokio::time::sleep(at.saturating_sub(started.elapsed())).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let delivered = rx.requests().len();
        kills.push((Instant::now(), delivered));
        child = spawn_runner(&db.url(), &path);
    }
    writer.await.unwrap();
    let committed = db.change_pks().await.len();
    assert_eq!(committed, CHANGES);
    let reqs = rx.wait_for(2 * CHANGES, Duration::from_secs(90)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let reqs = if rx.requests().len() > reqs.len() {
        rx.requests()
    } else {
        reqs
    };
    child.kill().unwrap();
    child.wait().unwrap();
    let _ = std::fs::remove_file(&path);

    let mut count: HashMap<(String, String), (usize, Instant)> = HashMap::new();
    for r in &reqs {
        let key = r.header("idempotency-key").unwrap().to_string();
        let e = count.entry((r.path.clone(), key)).or_insert((0, r.at));
        e.0 += 1;
    }
    let pairs = count.len();
    let dups: Vec<_> = count.iter().filter(|(_, (n, _))| *n > 1).collect();
    let extra: usize = dups.iter().map(|(_, (n, _))| n - 1).sum();
    println!(
        "kill -9 x2: {CHANGES} changes, {} (change, action) pairs expected, {pairs} delivered, \
         {} requests, {} duplicated pairs ({extra} extra deliveries); delivered before kills: {:?}",
        2 * CHANGES,
        reqs.len(),
        dups.len(),
        kills.iter().map(|k| k.1).collect::<Vec<_>>()
    );
    assert_eq!(
        pairs,
        2 * CHANGES,
        "every (change, action) pair delivered at least once"
    );
    for ((path, key), (_, first)) in &dups {
        // The idempotency key names the change and the action: same key on every copy.
        let want_suffix = if path == "/a" { ":hook:0" } else { ":hook:1" };
        assert!(key.ends_with(want_suffix), "{path} {key}");
        // A duplicate was first delivered shortly before one of the kills.
        assert!(
            kills
                .iter()
                .any(|(k, _)| *first <= *k && k.duration_since(*first) < Duration::from_secs(3)),
            "duplicate {key} not around a kill"
        );
    }
    assert_eq!(db.dead_letter_count().await, 0);
}
