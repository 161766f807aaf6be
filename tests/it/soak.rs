//! The delivery soak: `serve` (reader and enqueuer only) and two `fraiseql worker` processes
//! on a private Redis, changes committed concurrently through `/graphql` mutations (each
//! also raising its author's score: two tracked writes per mutation) and direct SQL inserts
//! and updates, while
//!
//! 1. worker A is killed with SIGKILL and started again,
//! 2. Redis is killed with SIGKILL and started again on the same port (it persists with
//!    `--appendonly yes --appendfsync always`: without an AOF a Redis restart loses every
//!    queued job, which is why the README asks for it in production),
//! 3. worker B is stopped and started again with the `[[observers.actions]]` of both
//!    observers in the opposite order (jobs name their action by identity, not position).
//!
//! Once quiescent: every (change, action) pair was delivered at least once, to the action it
//! was made for; every repeated delivery carries the key of the first; nothing was
//! dead-lettered. Size: `SOAK_CHANGES` (default 2,000; the figure is 20,000), e.g.
//! `SOAK_CHANGES=20000 cargo nextest run --test it -E 'test(/soak/)' --no-capture`. Not
//! `FRAISEQL_…`: the child processes inherit the environment, and the binary refuses a
//! `FRAISEQL_` variable that names no config key.

use crate::common;
use crate::mutations::{CREATE, RAISE_SCORE_ON_NEW_POST};

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use fraiseql::queue::Queue;
use fraiseql::queue::redis::RedisQueue;
use serde_json::{Value, json};
use tokio::sync::watch;

use common::observers::HttpReceiver;
use common::redis::RedisServer;
use common::{ServeProcess, TestDb, http};

const DEFAULT_CHANGES: usize = 2_000;
const PREFIX: &str = "soak";

fn changes() -> usize {
    std::env::var("SOAK_CHANGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CHANGES)
}

/// An action: its `name` (none: identified by a hash of its settings) and the receiver's path.
type Action = (Option<&'static str>, &'static str);
type Observer = (&'static str, &'static str, [Action; 2]);

/// (observer, entity, actions as (name, path) in `serve`'s order). A job's idempotency key
/// ends with `:<observer>:<index in this order>`, whichever worker runs it.
const OBSERVERS: [Observer; 2] = [
    // Unnamed actions: their identity is a hash of their settings.
    ("posts", "Post", [(None, "/post/a"), (None, "/post/b")]),
    (
        "users",
        "User",
        [(Some("audit"), "/user/a"), (Some("crm"), "/user/b")],
    ),
];

/// The config file: the blog schema, the private Redis, both observers with their actions
/// in `serve`'s order or `reversed`.
fn write_config(path: &Path, rx: &HttpReceiver, redis_url: &str, reversed: bool) {
    let observers: Vec<Value> = OBSERVERS
        .iter()
        .map(|(name, entity, actions)| {
            let mut actions: Vec<Value> = actions
                .iter()
                .map(|(aname, p)| {
                    let mut a = json!({"type": "webhook", "url": rx.url(p), "timeout_ms": 2000});
                    if let Some(n) = aname {
                        a["name"] = json!(n);
                    }
                    a
                })
                .collect();
            if reversed {
                actions.reverse();
            }
            json!({
                "name": name,
                "entity": entity,
                "retry": {"max_attempts": 10, "backoff": "exponential", "initial_delay_ms": 50,
                          "max_delay_ms": 1000, "jitter": true},
                "actions": actions,
            })
        })
        .collect();
    let config = json!({
        "graphql": {"schema": common::crate_path("examples/blog/schema.json")},
        "observer_runtime": {
            "concurrency": 16,
            "poll_interval_ms": 100,
            "checkpoint_interval_ms": 50,
            "start_from": "beginning"
        },
        "queue": {
            "backend": "redis",
            "url": redis_url,
            "key_prefix": PREFIX,
            "visibility_timeout_ms": 3000,
            "retry_min_delay_ms": 20,
            "retry_max_delay_ms": 500,
            "response_timeout_ms": 2000,
        },
        "worker": {"grace_period_ms": 2000},
        "observers": observers,
    });
    std::fs::write(path, toml::to_string(&config).unwrap()).unwrap();
}

/// Sends `SIG<sig>` to the process.
fn signal(p: &ServeProcess, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &p.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{sig}");
}

async fn worker(config: &Path, db: &TestDb) -> ServeProcess {
    ServeProcess::start_role(
        &[
            "--config",
            config.to_str().unwrap(),
            "worker",
            "--concurrency",
            "8",
        ],
        &db.url(),
        &[],
    )
    .await
}

/// The job counters a worker process reports, summed over their labels: executed,
/// retried, reclaimed, released (handed back), dedup skips, dead-lettered, Redis calls
/// retried (Redis unreachable).
const WORKER_COUNTERS: [&str; 7] = [
    "fraiseql_job_executed_total",
    "fraiseql_job_retried_total",
    "fraiseql_job_reclaimed_total",
    "fraiseql_job_released_total",
    "fraiseql_job_dedup_skips_total",
    "fraiseql_job_dead_lettered_total",
    "fraiseql_job_backend_retries_total",
];

async fn worker_counters(p: &ServeProcess) -> [f64; 7] {
    let (_, text) = common::get(&format!("{}/metrics", p.base)).await;
    WORKER_COUNTERS.map(|name| {
        text.lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|r| r.starts_with(' ') || r.starts_with('{'))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    })
}

fn add(total: &mut [f64; 7], c: [f64; 7]) {
    for (t, v) in total.iter_mut().zip(c) {
        *t += v;
    }
}

/// Waits until the generators may commit row number `n` (the controller raises the limit
/// once each disruption has begun, so every disruption happens mid-stream).
async fn admit(limit: &mut watch::Receiver<usize>, n: usize) {
    let _ = limit.wait_for(|l| n < *l).await;
}

/// The four generators: two send `createPost` mutations through `/graphql` (two change-log
/// rows each: the post and its author's score), one inserts posts with SQL, one updates
/// seed posts' `views` with SQL. One change per SQL transaction.
fn generate(
    db: &TestDb,
    seed: &common::Seed,
    base: &str,
    total: usize,
    committed: Arc<AtomicUsize>,
    limit: watch::Receiver<usize>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mutations = total * 3 / 20; // 30 % of the rows come through the API
    let sql = total - 2 * mutations;
    let inserts = sql / 2;
    let updates = sql - inserts;
    let mut tasks = Vec::new();
    for (t, author) in [(0, &seed.users[1]), (1, &seed.users[2])] {
        let n = mutations / 2 + if t == 0 { mutations % 2 } else { 0 };
        let (url, author, committed, mut limit) = (
            format!("{base}/graphql"),
            author.id,
            committed.clone(),
            limit.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let client = http();
            for i in 0..n {
                admit(&mut limit, committed.load(Ordering::SeqCst)).await;
                let v: Value = client
                    .post(&url)
                    .json(&json!({
                        "query": CREATE,
                        "variables": {"input": {"authorId": author, "title": format!("api {t}-{i}"), "body": "b"}}
                    }))
                    .send()
                    .await
                    .expect("serve answers")
                    .json()
                    .await
                    .unwrap();
                assert!(v.get("errors").is_none(), "{v}");
                committed.fetch_add(2, Ordering::SeqCst);
            }
        }));
    }
    let (pool, author) = (db.pool().clone(), seed.users[0].id);
    let (c, mut l) = (committed.clone(), limit.clone());
    tasks.push(tokio::spawn(async move {
        let conn = pool.get().await.unwrap();
        for i in 0..inserts {
            admit(&mut l, c.load(Ordering::SeqCst)).await;
            let n = conn
                .execute(
                    "INSERT INTO tb_post (fk_user, title, body) \
                     SELECT pk_user, $1, 'sql' FROM tb_user WHERE id = $2",
                    &[&format!("sql {i}"), &author],
                )
                .await
                .unwrap();
            assert_eq!(n, 1);
            c.fetch_add(1, Ordering::SeqCst);
        }
    }));
    let pool = db.pool().clone();
    let posts: Vec<uuid::Uuid> = seed.posts.iter().map(|p| p.id).collect();
    let mut l = limit;
    tasks.push(tokio::spawn(async move {
        let conn = pool.get().await.unwrap();
        for i in 0..updates {
            admit(&mut l, committed.load(Ordering::SeqCst)).await;
            let n = conn
                .execute(
                    "UPDATE tb_post SET views = views + 1 WHERE id = $1",
                    &[&posts[i % posts.len()]],
                )
                .await
                .unwrap();
            assert_eq!(n, 1);
            committed.fetch_add(1, Ordering::SeqCst);
        }
    }));
    tasks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_serve_two_workers_kill_reorder_redis_restart_loses_nothing() {
    let total = changes();
    let db = TestDb::new().await;
    let seed = db.load_blog().await;
    db.batch(RAISE_SCORE_ON_NEW_POST).await;
    let rx = HttpReceiver::start_ok().await;
    // A receiver taking 20 ms per request: the two workers (8 slots each) then run about as
    // fast as changes arrive, so each disruption finds jobs in flight.
    rx.set_delay(Duration::from_millis(20));
    let mut redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = |n: &str| -> PathBuf { dir.path().join(n) };
    let (serve_cfg, a_cfg, b_cfg) = (cfg("serve.toml"), cfg("a.toml"), cfg("b.toml"));
    for p in [&serve_cfg, &a_cfg, &b_cfg] {
        write_config(p, &rx, &redis.url(), false);
    }

    let serve = ServeProcess::start_role(
        &["--config", serve_cfg.to_str().unwrap(), "serve"],
        &db.url(),
        &[],
    )
    .await;
    let mut a = worker(&a_cfg, &db).await;
    let mut b = worker(&b_cfg, &db).await;

    let started = Instant::now();
    let committed = Arc::new(AtomicUsize::new(0));
    let (limit_tx, limit_rx) = watch::channel(total / 5);
    let generators = generate(&db, &seed, &serve.base, total, committed.clone(), limit_rx);
    let reached = |n: usize| {
        let committed = committed.clone();
        async move {
            while committed.load(Ordering::SeqCst) < n {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    let mut log = Vec::new();

    // 1. kill -9 worker A while it is delivering, start it again. To be sure A holds jobs
    //    whose requests went out: B is frozen (SIGSTOP, well under the visibility timeout)
    //    and the receiver holds its answers, so the next request that arrives is A's and
    //    is still unanswered when A dies.
    // Counters of every worker process, read just before it goes away and at the end.
    let mut counters = [0.0; 7];
    reached(total / 5).await;
    limit_tx.send(2 * total / 5).unwrap();
    signal(&b, "STOP");
    // What B wrote before it froze is answered as usual.
    tokio::time::sleep(Duration::from_millis(100)).await;
    rx.set_delay(Duration::from_secs(10));
    let seen = rx.len();
    let a_busy = common::eventually(Duration::from_secs(10), || async { rx.len() > seen }).await;
    add(&mut counters, worker_counters(&a).await);
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    rx.set_delay(Duration::from_millis(20));
    signal(&b, "CONT");
    assert!(a_busy, "worker A was delivering when it was killed");
    log.push(format!(
        "A killed -9 at {} changes, {} deliveries, with {} of its requests unanswered",
        committed.load(Ordering::SeqCst),
        rx.len(),
        rx.len() - seen
    ));
    a = worker(&a_cfg, &db).await;

    // 2. kill -9 Redis, start it again on the same port (its AOF is replayed).
    reached(2 * total / 5).await;
    tokio::task::block_in_place(|| redis.kill9());
    log.push(format!(
        "Redis killed -9 at {} changes, {} deliveries",
        committed.load(Ordering::SeqCst),
        rx.len()
    ));
    limit_tx.send(3 * total / 5).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    tokio::task::block_in_place(|| redis.spawn());

    // 3. stop worker B (SIGTERM), start it with every observer's actions reversed.
    reached(3 * total / 5).await;
    add(&mut counters, worker_counters(&b).await);
    let status = tokio::task::block_in_place(|| b.terminate(Duration::from_secs(10)));
    assert!(
        status.is_some_and(|s| s.success()),
        "worker B drained: {status:?}"
    );
    log.push(format!(
        "B stopped at {} changes, {} deliveries; restarted with its actions reversed",
        committed.load(Ordering::SeqCst),
        rx.len()
    ));
    write_config(&b_cfg, &rx, &redis.url(), true);
    limit_tx.send(usize::MAX).unwrap();
    b = worker(&b_cfg, &db).await;

    for g in generators {
        g.await.unwrap();
    }
    let generated = committed.load(Ordering::SeqCst);
    let generated_in = started.elapsed();
    assert_eq!(generated, total);

    // What must be delivered: every change-log row of the observed entities (the seed's
    // included: the observers start from the beginning), to both actions of its observer.
    common::change_log_settled(&db).await;
    let rows = db
        .client()
        .await
        .query(
            "SELECT pk, entity FROM fraiseql.tb_entity_change_log WHERE entity IN ('Post', 'User')",
            &[],
        )
        .await
        .unwrap();
    let observer_of: HashMap<&str, usize> = OBSERVERS
        .iter()
        .enumerate()
        .map(|(i, o)| (o.1, i))
        .collect();
    let mut expected: HashMap<(i64, String), String> = HashMap::new();
    for r in &rows {
        let (pk, entity): (i64, String) = (r.get(0), r.get(1));
        let (name, _, actions) = OBSERVERS[observer_of[entity.as_str()]];
        for (i, (_, path)) in actions.iter().enumerate() {
            expected.insert((pk, path.to_string()), format!("{pk}:{name}:{i}"));
        }
    }
    assert!(rows.len() >= total, "{} rows logged", rows.len());

    let q = RedisQueue::connect(&common::redis::config(&redis.url(), PREFIX))
        .await
        .unwrap();
    let budget = Duration::from_secs(60 + total as u64 / 100);
    let deadline = Instant::now() + budget;
    let delivered = |reqs: &[common::observers::Request]| -> HashSet<(i64, String)> {
        reqs.iter()
            .filter_map(|r| Some((r.json()["event"]["pk"].as_i64()?, r.path.clone())))
            .collect()
    };
    loop {
        if rx.len() >= expected.len() {
            let got = delivered(&rx.requests());
            let missing = expected.keys().filter(|k| !got.contains(*k)).count();
            if missing == 0 && q.depth().await.unwrap() == 0 {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "not quiescent after {budget:?}: {} of {} pairs delivered, depth {}",
            delivered(&rx.requests()).len(),
            expected.len(),
            q.depth().await.unwrap_or(u64::MAX)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let quiescent_in = started.elapsed();
    // Anything still on its way (a reclaimed job finishing twice) arrives now.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let reqs = rx.requests();

    // Every delivery is for an expected pair, under that pair's key; the first key of each
    // pair is the one every copy repeats.
    let mut first: HashMap<(i64, String), (String, usize)> = HashMap::new();
    for r in &reqs {
        let pk = r.json()["event"]["pk"]
            .as_i64()
            .expect("event.pk in the body");
        let key = r.header("idempotency-key").expect("idempotency key");
        let want = expected
            .get(&(pk, r.path.clone()))
            .unwrap_or_else(|| panic!("delivery of change {pk} to {} was not expected", r.path));
        assert_eq!(
            key, want,
            "change {pk} at {} carries the key of another action",
            r.path
        );
        let e = first
            .entry((pk, r.path.clone()))
            .or_insert((key.to_string(), 0));
        assert_eq!(e.0, key, "a duplicate with a different key");
        e.1 += 1;
    }
    let duplicated = first.values().filter(|(_, n)| *n > 1).count();
    let extra: usize = first.values().map(|(_, n)| n - 1).sum();

    // No dead letters anywhere: Redis's store (through the CLI) and PostgreSQL's.
    let dead = common::dlq_list(b_cfg.to_str().unwrap(), &db.url());
    let retried_redis = serve
        .metric("fraiseql_job_backend_retries_total{op=\"enqueue\"}")
        .await;
    add(&mut counters, worker_counters(&a).await);
    let reordered = worker_counters(&b).await;
    add(&mut counters, reordered);
    let counted: Vec<String> = WORKER_COUNTERS
        .iter()
        .zip(counters)
        .map(|(n, v)| format!("{}={v}", &n["fraiseql_job_".len()..]))
        .collect();
    let secs = quiescent_in.as_secs_f64();
    println!(
        "soak: {generated} changes generated in {generated_in:.1?} ({} of them by {} /graphql \
         mutations, the rest by direct SQL); {} change-log rows observed; {} (change, action) pairs expected, \
         {} delivered; {} requests, {duplicated} pairs delivered twice or more ({extra} extra \
         deliveries, each with the first's key); dead letters {}; quiescent after {secs:.1} s \
         ({:.0} changes/s, {:.0} deliveries/s); serve's enqueue retries while Redis was down: \
         {retried_redis}\n  workers (A before the kill, B before its restart, both at the end): \
         {}; B with its actions reversed executed {}\n  {}",
        2 * (total * 3 / 20),
        total * 3 / 20,
        rows.len(),
        expected.len(),
        first.len(),
        reqs.len(),
        dead.as_array().map_or(0, Vec::len),
        rows.len() as f64 / secs,
        reqs.len() as f64 / secs,
        counted.join(" "),
        reordered[0],
        log.join("\n  ")
    );
    assert_eq!(
        first.len(),
        expected.len(),
        "every (change, action) delivered"
    );
    assert_eq!(dead, json!([]), "no dead letters in Redis");
    assert_eq!(counters[5], 0.0, "no worker dead-lettered a job");
    // The disruptions hit work in progress (else they prove nothing).
    assert!(
        counters[2] > 0.0 && duplicated > 0,
        "jobs of the killed worker were reclaimed and delivered again"
    );
    assert!(reordered[0] > 0.0, "the reordered worker ran jobs");
    assert!(
        counters[6] > 0.0,
        "the workers waited out the Redis restart"
    );
    assert_eq!(
        db.dead_letter_count().await,
        0,
        "no dead letters in PostgreSQL"
    );
    drop((a, b, serve));
}
