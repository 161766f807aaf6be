//! Delivery defects of the Redis queue, in process against the machine's Redis (own key
//! prefix per test) and PostgreSQL (own database per test), with a local HTTP receiver as
//! every action's endpoint:
//!
//! - a job runs the action it was queued for, even when the worker's config lists the
//!   observer's actions in another order;
//! - an action slower than the visibility timeout runs once: the pump extends its lease;
//! - a job that succeeded but was never acknowledged is not run again by the worker that
//!   reclaims it (the dedup window is consulted for reclaimed jobs).

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use fraiseql::observers::executor::JobExecutor;
use fraiseql::observers::matcher::ChangeEvent;
use fraiseql::queue::pump::{self, PumpConfig, PumpStats};
use fraiseql::queue::redis::RedisQueue;
use fraiseql::queue::{BatchQueue, Queue};
use tokio_util::sync::CancellationToken;

use common::TestDb;
use common::observers::{HttpReceiver, build};
use common::redis::{Cleanup, REDIS_URL};

/// The executor of a runtime built from `toml` (the reader is not started).
fn executor(db: &TestDb, toml: &str) -> Arc<JobExecutor> {
    let (rt, _registry) = build(db, toml, &[]).unwrap();
    rt.executor()
}

fn change(pk: i64) -> ChangeEvent {
    ChangeEvent {
        pk,
        id: uuid::Uuid::new_v4(),
        occurred_at: chrono::Utc::now(),
        entity: "Post".into(),
        entity_id: Some(uuid::Uuid::new_v4()),
        op: fraiseql::observers::config::ChangeOp::Insert,
        before: None,
        after: Some(serde_json::json!({"title": format!("post {pk}")})),
        changed_fields: None,
        actor: None,
        tenant_id: None,
        trace_id: None,
        mutation: None,
        truncated: false,
    }
}

async fn redis_queue(prefix: &str, visibility_ms: u64) -> Arc<RedisQueue> {
    let mut c = common::redis::config(REDIS_URL, prefix);
    c.visibility_timeout_ms = visibility_ms;
    Arc::new(RedisQueue::connect(&c).await.expect("Redis at 6379"))
}

/// Runs a batching pump with `exec` over `q` until `stop` is cancelled.
fn spawn_pump(
    q: Arc<RedisQueue>,
    exec: Arc<JobExecutor>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<PumpStats> {
    let cfg = PumpConfig {
        concurrency: 4,
        batch: 4,
        grace: Duration::from_secs(5),
    };
    tokio::spawn(async move {
        let q: Arc<dyn BatchQueue> = q;
        pump::run(
            q,
            cfg,
            move |job| {
                let exec = exec.clone();
                async move { exec.run(job).await }
            },
            stop,
        )
        .await
        .unwrap()
    })
}

fn observer(actions: &str) -> String {
    format!(
        r#"
[[observers]]
name = "posts"
entity = "Post"
retry = {{ max_attempts = 3, backoff = "fixed", initial_delay_ms = 50 }}
{actions}
"#
    )
}

/// A database, a Redis prefix, a receiver, and two actions calling it (`/webhook` and
/// `/slack`) as `[[observers.actions]]` tables.
struct Setup {
    db: TestDb,
    _cleanup: Cleanup,
    prefix: String,
    rx: Arc<HttpReceiver>,
    webhook: String,
    slack: String,
}

impl Setup {
    async fn new() -> Setup {
        let db = TestDb::new().await;
        let cleanup = Cleanup::new(REDIS_URL);
        let prefix = cleanup.prefix();
        let rx = HttpReceiver::start_ok().await;
        let webhook = format!(
            "[[observers.actions]]\ntype = \"webhook\"\nurl = \"{}\"\n",
            rx.url("/webhook")
        );
        let slack = format!(
            "[[observers.actions]]\ntype = \"slack\"\nurl = \"{}\"\ntext = \"new post\"\n",
            rx.url("/slack")
        );
        Setup {
            db,
            _cleanup: cleanup,
            prefix,
            rx,
            webhook,
            slack,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_run_their_own_action_when_the_actions_are_reordered() {
    let s = Setup::new().await;
    let (db, prefix, rx, webhook, slack) = (&s.db, &s.prefix, &s.rx, &s.webhook, &s.slack);
    // Version 1 queues the jobs: webhook first, slack second.
    let v1 = executor(db, &observer(&format!("{webhook}{slack}")));
    let q = redis_queue(prefix, 30_000).await;
    let jobs: Vec<_> = (1..=5)
        .flat_map(|pk| v1.observers.jobs_for(&change(pk)))
        .collect();
    assert_eq!(jobs.len(), 10);
    q.enqueue_many(&jobs).await.unwrap();

    // Version 2 runs them: the same actions, slack first.
    let v2 = executor(db, &observer(&format!("{slack}{webhook}")));
    let stop = CancellationToken::new();
    let pump = spawn_pump(q.clone(), v2, stop.clone());
    let requests = rx.wait_for(10, Duration::from_secs(20)).await;
    common::observers::eventually(Duration::from_secs(10), "queue drained", || async {
        q.depth().await.unwrap() == 0
    })
    .await;
    stop.cancel();
    pump.await.unwrap();

    let webhook_keys: Vec<_> = requests
        .iter()
        .filter(|r| r.path == "/webhook")
        .map(|r| r.header("idempotency-key").unwrap_or_default().to_string())
        .collect();
    let slack_calls = requests.iter().filter(|r| r.path == "/slack").count();
    eprintln!(
        "reordered actions: {} webhook calls (keys {webhook_keys:?}), {slack_calls} slack calls",
        webhook_keys.len()
    );
    assert_eq!(requests.len(), 10, "one call per job");
    assert_eq!(
        webhook_keys.len(),
        5,
        "the five webhook jobs ran the webhook"
    );
    assert_eq!(slack_calls, 5, "the five slack jobs ran slack");
    for k in &webhook_keys {
        assert!(
            k.ends_with(":posts:0"),
            "a webhook job (queued as action 0) called the webhook: {k}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_slower_than_the_visibility_timeout_runs_once() {
    let db = TestDb::new().await;
    let cleanup = Cleanup::new(REDIS_URL);
    let prefix = cleanup.prefix();
    let rx = HttpReceiver::start_ok().await;
    rx.set_delay(Duration::from_secs(3));
    let toml = observer(&format!(
        "[[observers.actions]]\ntype = \"webhook\"\nurl = \"{}\"\ntimeout_ms = 10000\n",
        rx.url("/slow")
    ));
    let exec = executor(&db, &toml);
    let a = redis_queue(&prefix, 1_000).await;
    let b = redis_queue(&prefix, 1_000).await;
    a.enqueue_many(&exec.observers.jobs_for(&change(1)))
        .await
        .unwrap();

    let stop = CancellationToken::new();
    let pa = spawn_pump(a.clone(), exec.clone(), stop.clone());
    let pb = spawn_pump(b.clone(), exec.clone(), stop.clone());
    common::observers::eventually(Duration::from_secs(15), "the job finished", || async {
        a.depth().await.unwrap() == 0
    })
    .await;
    // Long enough for a second, reclaimed run to reach the receiver.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.cancel();
    let (sa, sb) = (pa.await.unwrap(), pb.await.unwrap());
    let reclaimed = a.metrics().reclaimed.get() + b.metrics().reclaimed.get();
    eprintln!(
        "3 s action, 1 s visibility, two workers: {} calls, {reclaimed} reclaims, \
         worker A {sa:?}, worker B {sb:?}",
        rx.len()
    );
    assert_eq!(rx.len(), 1, "the action ran exactly once");
    assert_eq!(reclaimed, 0, "the running job was not reclaimed");
    assert_eq!(sa.lost_reservations + sb.lost_reservations, 0);
    assert_eq!(sa.acked + sb.acked, 1);
    assert_eq!(sa.dead_lettered + sb.dead_lettered, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reclaimed_job_that_already_succeeded_is_not_run_again() {
    let db = TestDb::new().await;
    let cleanup = Cleanup::new(REDIS_URL);
    let prefix = cleanup.prefix();
    let rx = HttpReceiver::start_ok().await;
    let toml = observer(&format!(
        "[[observers.actions]]\ntype = \"webhook\"\nurl = \"{}\"\ntimeout_ms = 1000\n",
        rx.url("/hook")
    ));
    let exec = executor(&db, &toml);
    let a = redis_queue(&prefix, 1_000).await;
    a.enqueue_many(&exec.observers.jobs_for(&change(1)))
        .await
        .unwrap();

    // Worker A reserves the job, runs it, records its success, and dies before its ack.
    let r = a
        .reserve(Duration::from_secs(2))
        .await
        .unwrap()
        .expect("a job");
    assert!(matches!(
        exec.run(r.job.clone()).await,
        fraiseql::queue::Outcome::Ack
    ));
    exec.dedup.flush().await.unwrap();
    assert_eq!(rx.len(), 1);
    drop(r);
    drop(a);

    // Worker B reclaims it after the visibility timeout.
    let b = redis_queue(&prefix, 1_000).await;
    let stop = CancellationToken::new();
    let pb = spawn_pump(b.clone(), exec.clone(), stop.clone());
    common::observers::eventually(
        Duration::from_secs(10),
        "the job was reclaimed and finished",
        || async { b.depth().await.unwrap() == 0 },
    )
    .await;
    stop.cancel();
    let stats = pb.await.unwrap();
    let reclaimed = b.metrics().reclaimed.get();
    eprintln!(
        "succeeded, not acked, reclaimed: {} calls in all, {reclaimed} reclaims, worker B {stats:?}",
        rx.len()
    );
    assert_eq!(reclaimed, 1, "B got the job by reclaiming it");
    assert_eq!(rx.len(), 1, "the action was not called a second time");
}

/// `exec` with another `observer_runtime.unknown_action_retry_ms`.
fn with_unknown_retry(exec: &JobExecutor, retry: Duration) -> Arc<JobExecutor> {
    Arc::new(JobExecutor {
        observers: exec.observers.clone(),
        dedup: exec.dedup.clone(),
        metrics: exec.metrics.clone(),
        unknown_action_retry: retry,
    })
}

async fn dead_letters(prefix: &str) -> Vec<serde_json::Value> {
    let mut conn = redis::Client::open(REDIS_URL)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let raw: Vec<String> = redis::cmd("HVALS")
        .arg(format!("{prefix}:dead"))
        .query_async(&mut conn)
        .await
        .unwrap();
    raw.iter()
        .map(|j| serde_json::from_str(j).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_action_waits_for_a_worker_that_knows_it_then_dead_letters() {
    let s = Setup::new().await;
    let (db, prefix, rx, webhook, slack) = (&s.db, &s.prefix, &s.rx, &s.webhook, &s.slack);
    let limit = Duration::from_millis(4000);
    // The new version adds the slack action; an old worker (webhook only) is still running.
    let new = with_unknown_retry(
        &executor(db, &observer(&format!("{webhook}{slack}"))),
        limit,
    );
    let old = with_unknown_retry(&executor(db, &observer(webhook)), limit);
    let q = redis_queue(prefix, 30_000).await;
    let mut jobs = new.observers.jobs_for(&change(1));
    // A job queued by a version without identities runs by position.
    let mut legacy = new.observers.jobs_for(&change(2)).remove(0);
    legacy.action_id = None;
    jobs.push(legacy);
    // A job for an action no version here has.
    let mut gone = new.observers.jobs_for(&change(3)).remove(1);
    gone.action_id = Some("slack-0000000000000000".into());
    jobs.push(gone);
    q.enqueue_many(&jobs).await.unwrap();

    let stop_old = CancellationToken::new();
    let p_old = spawn_pump(q.clone(), old, stop_old.clone());
    common::observers::eventually(
        Duration::from_secs(10),
        "the old worker ran the webhooks",
        || async { rx.len() == 2 },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(
        dead_letters(prefix).await.is_empty(),
        "the old worker does not dead-letter the new action's job"
    );
    assert_eq!(q.depth().await.unwrap(), 2, "the slack jobs wait");

    // The old worker is replaced by one of the new version, which runs the job the old one
    // could not.
    stop_old.cancel();
    p_old.await.unwrap();
    let stop = CancellationToken::new();
    let p_new = spawn_pump(q.clone(), new, stop.clone());
    let requests = rx.wait_for(3, Duration::from_secs(10)).await;
    common::observers::eventually(
        Duration::from_secs(10),
        "the unknown action's job dead-lettered",
        || async { !dead_letters(prefix).await.is_empty() },
    )
    .await;
    stop.cancel();
    p_new.await.unwrap();

    let paths: Vec<&str> = requests.iter().map(|r| r.path.as_str()).collect();
    let dead = dead_letters(prefix).await;
    eprintln!("calls {paths:?}; dead letters {dead:#?}");
    assert_eq!(requests.len(), 3);
    assert_eq!(paths.iter().filter(|p| **p == "/webhook").count(), 2);
    assert_eq!(paths.iter().filter(|p| **p == "/slack").count(), 1);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["change_pk"], 3);
    assert_eq!(dead[0]["attempts"], 1, "waiting spent no attempts");
    let last = dead[0]["errors"].as_array().unwrap().last().unwrap()["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        last.contains("slack-0000000000000000") && last.contains("unknown_action_retry_ms"),
        "{last}"
    );
    assert_eq!(q.depth().await.unwrap(), 0);
}
