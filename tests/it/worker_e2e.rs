//! `fraiseql worker` as users run it: the real binary, the machine's Redis (own key prefix
//! per test), PostgreSQL (own database per test) and a local HTTP receiver standing in for
//! the webhook endpoint.
//!
//! - kill -9 of a worker holding 50 reserved jobs: another worker completes all 50 after the
//!   visibility timeout;
//! - SIGTERM drains: running jobs finish within the grace period, exit code 0;
//! - `serve` with the Redis backend only enqueues; the worker executes; a permanent failure
//!   lands in the Redis dead letters, `fraiseql dlq list/retry` work on them.

use crate::common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use fraiseql::queue::redis::RedisQueue;
use fraiseql::queue::{Job, Queue};

use common::observers::{HttpReceiver, Reply};
use common::redis::{Cleanup, REDIS_URL};
use common::{ServeProcess, TestDb, bin, eventually};

/// A config file with one observer (`hook`, entity `Post`) whose only action is a webhook to
/// `url`, and the Redis queue under `prefix`.
fn write_config(dir: &tempfile::TempDir, url: &str, prefix: &str, visibility_ms: u64) -> String {
    let config = serde_json::json!({
        "observer_runtime": {
            "concurrency": 8,
            "poll_interval_ms": 200,
            "checkpoint_interval_ms": 50,
            "start_from": "beginning"
        },
        "queue": {
            "backend": "redis",
            "url": REDIS_URL,
            "key_prefix": prefix,
            "visibility_timeout_ms": visibility_ms,
        },
        "worker": { "grace_period_ms": 5000 },
        "observers": [{
            "name": "hook",
            "entity": "Post",
            "retry": {"max_attempts": 3, "backoff": "fixed", "initial_delay_ms": 50},
            "actions": [{"type": "webhook", "url": url, "timeout_ms": visibility_ms}]
        }]
    });
    let path = dir.path().join("fraiseql.toml");
    std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
    path.to_str().unwrap().to_string()
}

fn hook_job(pk: i64) -> Job {
    Job::new(
        pk,
        "hook",
        0,
        "webhook",
        serde_json::json!({
            "event": {"pk": pk, "entity": "Post", "op": "INSERT"},
            "before": null,
            "after": {"n": pk}
        }),
    )
}

/// A database, a Redis prefix holding `jobs` queued webhook jobs, a receiver answering after
/// `delay`, and the config file pointing at them.
struct Fixture {
    db: TestDb,
    _cleanup: Cleanup,
    prefix: String,
    rx: std::sync::Arc<HttpReceiver>,
    _dir: tempfile::TempDir,
    config: String,
    q: RedisQueue,
}

impl Fixture {
    async fn new(jobs: i64, delay: Duration, visibility_ms: u64) -> Fixture {
        let db = TestDb::new().await;
        let cleanup = Cleanup::new(REDIS_URL);
        let prefix = cleanup.prefix();
        let rx = HttpReceiver::start_ok().await;
        rx.set_delay(delay);
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(&dir, &rx.url("/hook"), &prefix, visibility_ms);
        let q = RedisQueue::connect(&common::redis::config(REDIS_URL, &prefix))
            .await
            .unwrap();
        for pk in 1..=jobs {
            q.enqueue(hook_job(pk)).await.unwrap();
        }
        Fixture {
            db,
            _cleanup: cleanup,
            prefix,
            rx,
            _dir: dir,
            config,
            q,
        }
    }
}

async fn worker(config: &str, db: &TestDb, concurrency: usize) -> ServeProcess {
    let n = concurrency.to_string();
    ServeProcess::start_role(
        &["--config", config, "worker", "--concurrency", &n],
        &db.url(),
        &[],
    )
    .await
}

/// Reservations held right now (receipts in `<prefix>:inflight`).
async fn inflight(prefix: &str) -> usize {
    let mut conn = redis::Client::open(REDIS_URL)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    redis::cmd("ZCARD")
        .arg(format!("{prefix}:inflight"))
        .query_async(&mut conn)
        .await
        .unwrap()
}

fn keys_of(requests: &[common::observers::Request]) -> Vec<String> {
    requests
        .iter()
        .map(|r| r.header("idempotency-key").unwrap_or_default().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_of_a_worker_holding_50_jobs_loses_none() {
    // Worker A's requests hang: it holds every job it reserved when it dies.
    let f = Fixture::new(50, Duration::from_secs(600), 3000).await;
    let Fixture {
        db,
        prefix,
        rx,
        config,
        q,
        ..
    } = &f;

    let mut a = worker(config, db, 50).await;
    assert!(
        eventually(Duration::from_secs(10), || async { rx.len() >= 50 }).await,
        "worker A started all 50 jobs (receiver saw {})",
        rx.len()
    );
    assert_eq!(inflight(prefix).await, 50, "A holds 50 reservations");
    a.child.kill().unwrap(); // SIGKILL: no hand-back, no cleanup
    a.child.wait().unwrap();
    let killed_at = Instant::now();

    rx.set_delay(Duration::ZERO);
    let b = worker(config, db, 10).await;
    let done = eventually(Duration::from_secs(20), || async {
        q.depth().await.unwrap() == 0
    })
    .await;
    let waited = killed_at.elapsed();
    let executed_by_b = b
        .metric("fraiseql_job_executed_total{action=\"webhook\"}")
        .await;
    let reclaimed_by_b = b.metric("fraiseql_job_reclaimed_total").await;
    let requests = rx.requests();
    let distinct: HashSet<String> = keys_of(&requests).into_iter().collect();
    eprintln!(
        "kill -9 with 50 reserved: A received {} requests before dying; B completed {executed_by_b} \
         ({reclaimed_by_b} reclaimed) {waited:?} after the kill; {} requests in all, {} distinct keys",
        50,
        requests.len(),
        distinct.len()
    );
    assert!(done, "queue drained after the visibility timeout");
    assert_eq!(executed_by_b, 50.0, "B completed all 50");
    assert_eq!(reclaimed_by_b, 50.0, "all 50 were reclaimed from A");
    assert!(
        waited >= Duration::from_millis(2500),
        "not reclaimed before the visibility timeout ({waited:?})"
    );
    assert_eq!(distinct.len(), 50, "every job delivered");
    assert_eq!(requests.len(), 100, "50 hung on A + 50 completed by B");
    assert_eq!(inflight(prefix).await, 0);
}

/// A worker with 10 slots starts 10 jobs and gets SIGTERM; asserts it exits 0.
async fn sigterm_while_ten_run(f: &Fixture) {
    let mut w = worker(&f.config, &f.db, 10).await;
    assert!(eventually(Duration::from_secs(10), || async { f.rx.len() >= 10 }).await);
    let status = w
        .terminate(Duration::from_secs(10))
        .expect("exits after SIGTERM");
    assert!(status.success(), "exit status {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_running_jobs_then_exits_zero() {
    let f = Fixture::new(30, Duration::from_millis(800), 30_000).await;
    sigterm_while_ten_run(&f).await;
    let Fixture { prefix, rx, q, .. } = &f;
    // The 10 running jobs finished (800 ms < 5 s grace) and were acknowledged; nothing new
    // was reserved after the signal: exactly 20 remain, none in flight.
    assert_eq!(
        q.depth().await.unwrap(),
        20,
        "running jobs finished, the rest stay queued"
    );
    assert_eq!(inflight(prefix).await, 0, "nothing left reserved");
    assert_eq!(rx.len(), 10);
}

/// The jobs that finish while a worker drains after SIGTERM are recorded in the dedup window
/// like any other success, so when their changes come back as replays (a `serve` restarted
/// from an older checkpoint re-dispatches them) the next worker does not deliver them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn successes_during_the_sigterm_drain_are_recorded_for_dedup() {
    let f = Fixture::new(30, Duration::from_millis(800), 30_000).await;
    sigterm_while_ten_run(&f).await;
    let Fixture {
        db, rx, config, q, ..
    } = &f;
    assert_eq!(q.depth().await.unwrap(), 20, "the 10 running jobs finished");
    let drained = keys_of(&rx.requests());
    let recorded: i64 = db
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM fraiseql.tb_observer_dedup WHERE idempotency_key = ANY($1)",
            &[&drained],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        recorded, 10,
        "every success of the drain is in the dedup window"
    );

    // The same 10 changes dispatched again as replays: the next worker skips them.
    for r in rx.requests() {
        let pk = r.json()["event"]["pk"].as_i64().unwrap();
        let mut job = hook_job(pk);
        job.replay = true;
        q.enqueue(job).await.unwrap();
    }
    rx.set_delay(Duration::ZERO);
    let _w = worker(config, db, 10).await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            q.depth().await.unwrap() == 0
        })
        .await
    );
    let keys = keys_of(&rx.requests());
    let distinct: HashSet<&String> = keys.iter().collect();
    assert_eq!(distinct.len(), 30, "every job delivered");
    assert_eq!(
        keys.len(),
        30,
        "no replay of a drained success delivered again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_enqueues_worker_executes_and_dlq_works_on_redis() {
    let db = TestDb::new().await;
    db.create_posts().await;
    let cleanup = Cleanup::new(REDIS_URL);
    let prefix = cleanup.prefix();
    // Titles starting with "bad" are refused for good (400) until the receiver is fixed.
    let rx = HttpReceiver::with(|r| {
        if r.body.contains("\"bad") {
            Reply::status(400)
        } else {
            Reply::status(200)
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(&dir, &rx.url("/hook"), &prefix, 30_000);
    let serve = ServeProcess::start_role(&["--config", &config, "serve"], &db.url(), &[]).await;
    for i in 0..20 {
        db.insert_post(&format!("good {i}"), true).await;
    }
    db.insert_post("bad one", true).await;

    let q = RedisQueue::connect(&common::redis::config(REDIS_URL, &prefix))
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            q.depth().await.unwrap() == 21
        })
        .await,
        "serve enqueued 21 jobs into Redis (depth {})",
        q.depth().await.unwrap()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        rx.len(),
        0,
        "serve does not execute jobs with the Redis backend"
    );

    let w = worker(&config, &db, 8).await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            q.depth().await.unwrap() == 0
        })
        .await
    );
    assert_eq!(rx.len(), 21);
    assert_eq!(
        w.metric("fraiseql_job_dead_lettered_total{action=\"webhook\"}")
            .await,
        1.0
    );
    assert_eq!(
        serve
            .metric("fraiseql_job_queued_total{action=\"webhook\"}")
            .await,
        21.0
    );

    // The dead letter, through the CLI against Redis.
    let list = common::dlq_list(&config, &db.url());
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["observer"], "hook");
    assert!(list[0]["last_error"].as_str().unwrap().contains("400"));
    let id = list[0]["id"].as_i64().unwrap().to_string();

    rx.set_responder(|_| Reply::status(200));
    let out = bin()
        .args(["--config", &config, "dlq", "retry", &id])
        .env("FRAISEQL_DATABASE_URL", db.url())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        eventually(Duration::from_secs(10), || async { rx.len() == 22 }).await,
        "the retried dead letter was delivered"
    );
    let list = common::dlq_list(&config, &db.url());
    assert_eq!(list.as_array().unwrap().len(), 0, "{list}");
    assert!(
        eventually(Duration::from_secs(5), || async {
            q.depth().await.unwrap() == 0
        })
        .await
    );
    // Nothing but the (empty) bookkeeping is left under the prefix once jobs are done.
    let left: Vec<String> = cleanup
        .remaining_keys()
        .into_iter()
        .filter(|k| !k.ends_with(":lease") && !k.ends_with(":dead:seq"))
        .collect();
    assert!(left.is_empty(), "finished jobs left keys behind: {left:?}");
}

#[tokio::test]
async fn worker_refuses_the_memory_backend_and_a_config_without_observers() {
    let out = bin()
        .args(["worker"])
        .env(
            "FRAISEQL_DATABASE_URL",
            "postgres://postgres@127.0.0.1:5432/postgres",
        )
        .env("FRAISEQL_WORKER_LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("queue.backend") && err.contains("redis"),
        "{err}"
    );

    let out = bin()
        .args(["worker"])
        .env(
            "FRAISEQL_DATABASE_URL",
            "postgres://postgres@127.0.0.1:5432/postgres",
        )
        .env("FRAISEQL_WORKER_LISTEN", "127.0.0.1:0")
        .env("FRAISEQL_QUEUE_BACKEND", "redis")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("[[observers]]"), "{err}");
}

#[tokio::test]
async fn check_reaches_redis_and_nats_and_names_the_one_that_is_down() {
    let db = TestDb::new().await;
    let cleanup = Cleanup::new(REDIS_URL);
    let prefix = cleanup.prefix();
    let nats = common::nats::test_config(common::nats::SHARED_URL);
    let run = |redis_url: &str| {
        bin()
            .arg("check")
            .env("FRAISEQL_DATABASE_URL", db.url())
            .env("FRAISEQL_QUEUE_BACKEND", "redis")
            .env("FRAISEQL_QUEUE_URL", redis_url)
            .env("FRAISEQL_QUEUE_KEY_PREFIX", &prefix)
            .env("FRAISEQL_QUEUE_CONNECT_TIMEOUT_MS", "500")
            .env("FRAISEQL_NATS_URL", &nats.url)
            .env("FRAISEQL_NATS_STREAM", &nats.stream)
            .env("FRAISEQL_NATS_SUBJECT_PREFIX", &nats.subject_prefix)
            .output()
            .unwrap()
    };
    let out = run(REDIS_URL);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    common::nats::delete_stream(&nats.url, &nats.stream).await;
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!(
            "ok    redis queue {REDIS_URL} (prefix {prefix}): 0 jobs live, 0 dead letters"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("ok    nats {} (stream {})", nats.url, nats.stream)),
        "{text}"
    );

    // Nothing listens on this port: check fails, naming Redis, within its time limit.
    let port = common::free_port();
    let out = run(&format!("redis://127.0.0.1:{port}"));
    common::nats::delete_stream(&nats.url, &nats.stream).await;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!("FAIL  redis queue redis://127.0.0.1:{port}")),
        "{text}"
    );
}
