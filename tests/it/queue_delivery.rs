//! Delivery defects of the Redis queue, in process against the machine's Redis (own key
//! prefix per test) and PostgreSQL (own database per test), with a local HTTP receiver as
//! every action's endpoint:
//!
//! - a job runs the action it was queued for, even when the worker's config lists the
//!   observer's actions in another order;
//! - an action slower than the visibility timeout runs once: the pump extends its lease;
//! - a job that succeeded but was never acknowledged is not run again by the worker that
//!   reclaims it (the dedup window is consulted for reclaimed jobs);
//! - bookkeeping (ack, retry, dead letter, release) refused by the backend for a while is
//!   retried: running handlers keep running, nothing is lost and no action runs again; a
//!   shutdown meanwhile still ends within its grace period and leaves the unrecorded jobs to
//!   the visibility timeout, where the dedup window recognises them; a dead-letter store that
//!   fails (Redis `WRONGTYPE`, PostgreSQL for the in-process queue) does not re-run actions.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use fraiseql::observers::executor::JobExecutor;
use fraiseql::observers::matcher::ChangeEvent;
use fraiseql::queue::pump::{self, PumpConfig, PumpStats};
use fraiseql::queue::redis::RedisQueue;
use fraiseql::queue::{Batch, BatchQueue, Enqueued, Job, Queue, QueueError, Reservation};
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

// ---------------------------------------------------------------------------------------
// Bookkeeping failures: the backend refuses an ack, retry, dead letter or release with an
// error that is not transient (a Redis refusing writes with `MISCONF`, an ACL change, a
// failing script). Running work keeps running, the bookkeeping is retried, nothing is lost
// and nothing runs twice.

/// The real Redis queue whose bookkeeping calls (ack, retry, dead letter, release) fail
/// while `broken` is set, with the non-transient error a Redis refusing writes reports.
/// Reserving and heartbeats go through untouched.
struct Flaky {
    inner: Arc<RedisQueue>,
    broken: AtomicBool,
    failures: AtomicU64,
}

impl Flaky {
    fn new(inner: Arc<RedisQueue>) -> Arc<Flaky> {
        Arc::new(Flaky {
            inner,
            broken: AtomicBool::new(true),
            failures: AtomicU64::new(0),
        })
    }

    fn set_broken(&self, broken: bool) {
        self.broken.store(broken, Ordering::SeqCst);
    }

    fn check(&self, op: &str) -> Result<(), QueueError> {
        if self.broken.load(Ordering::SeqCst) {
            self.failures.fetch_add(1, Ordering::SeqCst);
            return Err(QueueError::Backend(format!(
                "redis {op}: MISCONF Errors writing to the AOF file: No space left on device"
            )));
        }
        Ok(())
    }
}

#[async_trait]
impl Queue for Flaky {
    fn backend(&self) -> &'static str {
        "redis"
    }
    fn durable(&self) -> bool {
        true
    }
    async fn enqueue(&self, job: Job) -> Result<Enqueued, QueueError> {
        Queue::enqueue(&*self.inner, job).await
    }
    async fn reserve(&self, wait: Duration) -> Result<Option<Reservation>, QueueError> {
        Queue::reserve(&*self.inner, wait).await
    }
    async fn ack(&self, r: Reservation) -> Result<(), QueueError> {
        self.check("ack")?;
        Queue::ack(&*self.inner, r).await
    }
    async fn retry(&self, r: Reservation, at: DateTime<Utc>) -> Result<(), QueueError> {
        self.check("retry")?;
        Queue::retry(&*self.inner, r, at).await
    }
    async fn dead_letter(&self, r: Reservation) -> Result<(), QueueError> {
        self.check("dead_letter")?;
        Queue::dead_letter(&*self.inner, r).await
    }
    async fn depth(&self) -> Result<u64, QueueError> {
        Queue::depth(&*self.inner).await
    }
}

#[async_trait]
impl BatchQueue for Flaky {
    fn max_batch(&self) -> usize {
        BatchQueue::max_batch(&*self.inner)
    }
    async fn ack_and_reserve(
        &self,
        acks: &[String],
        max: usize,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Option<Batch>, QueueError> {
        if !acks.is_empty() {
            self.check("reserve")?;
        }
        BatchQueue::ack_and_reserve(&*self.inner, acks, max, deadline).await
    }
    fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        BatchQueue::notified(&*self.inner)
    }
    fn idle_sleep(&self, batch: &Batch) -> Duration {
        BatchQueue::idle_sleep(&*self.inner, batch)
    }
    async fn release_receipts(&self, receipts: &[String]) -> Result<(), QueueError> {
        if !receipts.is_empty() {
            self.check("release")?;
        }
        BatchQueue::release_receipts(&*self.inner, receipts).await
    }
    fn lease(&self) -> Option<Duration> {
        BatchQueue::lease(&*self.inner)
    }
    async fn extend_receipts(
        &self,
        receipts: &[String],
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Option<Vec<String>>, QueueError> {
        BatchQueue::extend_receipts(&*self.inner, receipts, deadline).await
    }
}

/// Handler runs started and finished (a handler aborted mid-run never finishes).
#[derive(Default)]
struct Runs {
    started: AtomicU64,
    finished: AtomicU64,
}

/// A pump over `q` running `exec`, counting handler runs into `runs`; returns the pump's
/// own result (an error means it gave up).
fn spawn_counted_pump(
    q: Arc<dyn BatchQueue>,
    exec: Arc<JobExecutor>,
    runs: Arc<Runs>,
    grace: Duration,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<Result<PumpStats, QueueError>> {
    let cfg = PumpConfig {
        concurrency: 4,
        batch: 4,
        grace,
    };
    tokio::spawn(pump::run(
        q,
        cfg,
        move |job| {
            let (exec, runs) = (exec.clone(), runs.clone());
            async move {
                runs.started.fetch_add(1, Ordering::SeqCst);
                let outcome = exec.run(job).await;
                runs.finished.fetch_add(1, Ordering::SeqCst);
                outcome
            }
        },
        stop,
    ))
}

/// An executor whose one action is a webhook to `rx`, a Redis queue under `prefix`, and the
/// jobs of changes `pks` in it.
async fn hook_jobs(
    db: &TestDb,
    rx: &HttpReceiver,
    prefix: &str,
    visibility_ms: u64,
    pks: std::ops::RangeInclusive<i64>,
) -> (Arc<JobExecutor>, Arc<RedisQueue>) {
    let toml = observer(&format!(
        "[[observers.actions]]\ntype = \"webhook\"\nurl = \"{}\"\ntimeout_ms = 5000\n",
        rx.url("/hook")
    ));
    let exec = executor(db, &toml);
    let q = redis_queue(prefix, visibility_ms).await;
    let jobs: Vec<_> = pks
        .flat_map(|pk| exec.observers.jobs_for(&change(pk)))
        .collect();
    q.enqueue_many(&jobs).await.unwrap();
    (exec, q)
}

/// The `pk` of the change a webhook request was for.
fn pk_of(r: &common::observers::Request) -> i64 {
    r.json()["event"]["pk"].as_i64().unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookkeeping_failures_keep_running_work_and_lose_nothing() {
    let db = TestDb::new().await;
    let cleanup = Cleanup::new(REDIS_URL);
    let prefix = cleanup.prefix();
    // Changes 1-6 succeed, 7-8 fail once (503) then succeed, 9-10 fail for good (400).
    let seen = Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    let rx = HttpReceiver::with(move |r| {
        let pk = pk_of(r);
        let first = seen.lock().unwrap().insert(pk);
        match pk {
            7 | 8 if first => common::observers::Reply::status(503),
            9 | 10 => common::observers::Reply::status(400),
            _ => common::observers::Reply::status(200),
        }
    })
    .await;
    rx.set_delay(Duration::from_millis(400));
    let (exec, inner) = hook_jobs(&db, &rx, &prefix, 30_000, 1..=10).await;

    // Every ack, retry, dead letter and release fails for the first 3 s.
    let flaky = Flaky::new(inner.clone());
    let runs = Arc::new(Runs::default());
    let stop = CancellationToken::new();
    let pump = spawn_counted_pump(
        flaky.clone(),
        exec.clone(),
        runs.clone(),
        Duration::from_secs(5),
        stop.clone(),
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let failed_calls = flaky.failures.load(Ordering::SeqCst);
    assert!(failed_calls > 0, "bookkeeping calls failed meanwhile");
    assert!(
        !pump.is_finished(),
        "the pump keeps running through bookkeeping failures: {:?}",
        pump.await
    );
    flaky.set_broken(false);

    common::observers::eventually(
        Duration::from_secs(20),
        "every job recorded once the backend accepts bookkeeping again",
        || async { inner.depth().await.unwrap() == 0 },
    )
    .await;
    stop.cancel();
    let stats = pump.await.unwrap();
    let mut calls: Vec<i64> = rx.requests().iter().map(pk_of).collect();
    calls.sort();
    let dead = dead_letters(&prefix).await;
    let (started, finished) = (
        runs.started.load(Ordering::SeqCst),
        runs.finished.load(Ordering::SeqCst),
    );
    eprintln!(
        "{failed_calls} failed bookkeeping calls; calls by change {calls:?}; \
         {} dead letters; handler runs started {started}, finished {finished}; \
         reclaimed {}; pump {stats:?}",
        dead.len(),
        inner.metrics().reclaimed.get()
    );
    let stats = stats.expect("the pump ends cleanly");
    assert_eq!(
        calls,
        [1, 2, 3, 4, 5, 6, 7, 7, 8, 8, 9, 10],
        "each action ran once (the two 503s once more): none lost, none repeated"
    );
    assert_eq!(started, finished, "no running handler was aborted");
    assert_eq!(
        inner.metrics().reclaimed.get(),
        0,
        "nothing waited for a reclaim"
    );
    let mut dead_pks: Vec<i64> = dead
        .iter()
        .map(|d| d["change_pk"].as_i64().unwrap())
        .collect();
    dead_pks.sort();
    assert_eq!(
        dead_pks,
        [9, 10],
        "both permanent failures are dead letters"
    );
    for d in &dead {
        assert_eq!(d["attempts"], 1, "dead-lettered after its one attempt: {d}");
        assert_eq!(d["errors"].as_array().unwrap().len(), 1, "{d}");
    }
    assert!(stats.bookkeeping_retries > 0, "{stats:?}");
    assert_eq!(stats.lost_reservations, 0, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_during_a_bookkeeping_outage_ends_within_grace_and_nothing_runs_twice() {
    let db = TestDb::new().await;
    let cleanup = Cleanup::new(REDIS_URL);
    let prefix = cleanup.prefix();
    let rx = HttpReceiver::start_ok().await;
    rx.set_delay(Duration::from_millis(200));
    let (exec, inner) = hook_jobs(&db, &rx, &prefix, 2_000, 1..=4).await;

    // The backend refuses every ack for good: the worker is told to stop meanwhile.
    let flaky = Flaky::new(inner.clone());
    let runs = Arc::new(Runs::default());
    let stop = CancellationToken::new();
    let grace = Duration::from_secs(1);
    let pump = spawn_counted_pump(flaky.clone(), exec.clone(), runs, grace, stop.clone());
    rx.wait_for(4, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = std::time::Instant::now();
    stop.cancel();
    let ended = tokio::time::timeout(Duration::from_secs(10), pump).await;
    let took = t.elapsed();
    eprintln!("shutdown with every ack refused took {took:?}: {ended:?}");
    let stats = ended
        .expect("the pump ends")
        .unwrap()
        .expect("the pump ends cleanly");
    assert!(
        took < grace + Duration::from_millis(1500),
        "shutdown ends within the grace period: {took:?}"
    );
    assert_eq!(
        stats.released, 0,
        "finished jobs are not handed back to run again"
    );

    // What could not be acknowledged is reclaimed after the visibility timeout by another
    // worker, which recognises it by the dedup window instead of running it again.
    exec.dedup.flush().await.unwrap();
    let other = redis_queue(&prefix, 2_000).await;
    let stop = CancellationToken::new();
    let p = spawn_pump(other.clone(), exec.clone(), stop.clone());
    common::observers::eventually(
        Duration::from_secs(15),
        "the unacknowledged jobs reclaimed and finished",
        || async { other.depth().await.unwrap() == 0 },
    )
    .await;
    stop.cancel();
    let again = p.await.unwrap();
    eprintln!(
        "after the outage: {} calls in all, {} reclaims, {} dedup skips, worker {again:?}",
        rx.len(),
        other.metrics().reclaimed.get(),
        exec.metrics.dedup_skips.get()
    );
    assert_eq!(rx.len(), 4, "no action ran twice");
    assert_eq!(other.metrics().reclaimed.get(), 4);
    assert_eq!(exec.metrics.dedup_skips.get(), 4);
}

/// A real failure of the Redis dead-letter store: `P:dead` holds a string, so the dead-letter
/// script's write fails (`WRONGTYPE`) until the key is removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_redis_dead_letter_write_keeps_the_job_and_does_not_rerun_it() {
    let db = TestDb::new().await;
    let cleanup = Cleanup::new(REDIS_URL);
    let prefix = cleanup.prefix();
    let rx = HttpReceiver::with(|_| common::observers::Reply::status(400)).await;
    let (exec, q) = hook_jobs(&db, &rx, &prefix, 30_000, 1..=1).await;
    let mut conn = redis::Client::open(REDIS_URL)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let dead_key = format!("{prefix}:dead");
    redis::cmd("SET")
        .arg(&dead_key)
        .arg("not a hash")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let runs = Arc::new(Runs::default());
    let stop = CancellationToken::new();
    let pump = spawn_counted_pump(
        q.clone(),
        exec.clone(),
        runs.clone(),
        Duration::from_secs(5),
        stop.clone(),
    );
    rx.wait_for(1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let depth = q.depth().await.unwrap();
    eprintln!(
        "dead-letter store failing: depth {depth}, {} calls, pump finished: {}",
        rx.len(),
        pump.is_finished()
    );
    assert_eq!(
        depth, 1,
        "the job is kept while its dead letter cannot be written"
    );
    assert!(
        !pump.is_finished(),
        "the pump keeps running: {:?}",
        pump.await
    );

    redis::cmd("DEL")
        .arg(&dead_key)
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    common::observers::eventually(
        Duration::from_secs(15),
        "the dead letter written once the store works",
        || async { dead_letters(&prefix).await.len() == 1 },
    )
    .await;
    stop.cancel();
    let stats = pump.await.unwrap().expect("the pump ends cleanly");
    let dead = dead_letters(&prefix).await;
    eprintln!(
        "after: {} calls, dead letters {dead:?}, pump {stats:?}",
        rx.len()
    );
    assert_eq!(
        rx.len(),
        1,
        "the action ran once, not again for every failed write"
    );
    assert_eq!(dead[0]["errors"].as_array().unwrap().len(), 1);
    assert_eq!(q.depth().await.unwrap(), 0);
    assert!(stats.bookkeeping_retries > 0, "{stats:?}");
}

/// The in-process queue (`serve` without Redis): its dead letters go to PostgreSQL, which
/// fails for 7 s (the table is renamed away). The action must not run again meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_store_outage_does_not_rerun_the_action_on_the_memory_queue() {
    let db = TestDb::new().await;
    db.create_posts().await;
    let rx = HttpReceiver::with(|_| common::observers::Reply::status(400)).await;
    let toml = format!(
        "{}\n{}",
        "[observer_runtime]\nconcurrency = 2\npoll_interval_ms = 100\ncheckpoint_interval_ms = 20\n\
         takeover_interval_ms = 200\nstart_from = \"beginning\"\nshutdown_grace_ms = 2000\n",
        observer(&format!(
            "[[observers.actions]]\ntype = \"webhook\"\nurl = \"{}\"\ntimeout_ms = 2000\n",
            rx.url("/hook")
        ))
    );
    db.batch("ALTER TABLE fraiseql.tb_observer_dead_letter RENAME TO tb_dead_letter_away")
        .await;
    let running = common::observers::start(&db, &toml, &[]);
    db.insert_post("p1", true).await;
    rx.wait_for(1, Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_secs(7)).await;
    let during = rx.len();
    db.batch("ALTER TABLE fraiseql.tb_dead_letter_away RENAME TO tb_observer_dead_letter")
        .await;
    common::observers::eventually(
        Duration::from_secs(20),
        "the dead letter stored once the store is back",
        || async { db.dead_letter_count().await == 1 },
    )
    .await;
    running.stop().await;
    let c = db.client().await;
    let row = c
        .query_one(
            "SELECT attempts, jsonb_array_length(errors) FROM fraiseql.tb_observer_dead_letter",
            &[],
        )
        .await
        .unwrap();
    let (attempts, errors): (i32, i32) = (row.get(0), row.get(1));
    eprintln!(
        "memory queue, dead-letter store down 7 s: {during} calls meanwhile, {} in all; \
         dead letter with {attempts} attempts, {errors} errors",
        rx.len()
    );
    assert_eq!(
        during, 1,
        "the action was not run again while the store was down"
    );
    assert_eq!(rx.len(), 1);
    assert_eq!(errors, 1, "one attempt, one error");
}
