//! Redis-specific behaviour beyond the shared conformance suite: batch methods, nothing left
//! behind by finished jobs, the dead-letter functions behind `fraiseql dlq`, and graceful
//! drain handing unfinished jobs back.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use fraiseql::queue::Outcome;
use fraiseql::queue::dlq::{ListFilter, RetryOutcome};
use fraiseql::queue::pump::{self, PumpConfig};
use fraiseql::queue::redis::RedisDeadLetters;
use fraiseql::queue::{Enqueued, Queue};
use tokio_util::sync::CancellationToken;

use common::redis::{Cleanup, REDIS_URL, job, queue};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_round_trip_and_finished_jobs_leave_no_keys() {
    let cleanup = Cleanup::new(REDIS_URL);
    let q = queue(&cleanup).await;
    let jobs: Vec<_> = (0..2500).map(job).collect();
    let added = q.enqueue_many(&jobs).await.unwrap();
    assert_eq!(added.len(), 2500);
    assert!(added.iter().all(|e| *e == Enqueued::Added));
    // Resending the same batch finds the very same jobs stored: reported added, not doubled.
    assert!(
        q.enqueue_many(&jobs[..10])
            .await
            .unwrap()
            .iter()
            .all(|e| *e == Enqueued::Added)
    );
    // A different job with a live key is a duplicate.
    assert_eq!(q.enqueue(job(5)).await.unwrap(), Enqueued::Duplicate);
    assert_eq!(q.depth().await.unwrap(), 2500);

    let mut seen = 0;
    let mut acks = Vec::new();
    while seen < 2500 {
        let batch = q.ack_and_reserve(&acks, 300, None).await.unwrap().unwrap();
        for (i, r) in batch.reserved.iter().enumerate() {
            assert_eq!(r.job.change_pk, (seen + i) as i64, "FIFO across batches");
        }
        seen += batch.reserved.len();
        acks = batch.reserved.into_iter().map(|r| r.receipt).collect();
    }
    let last = q.ack_and_reserve(&acks, 0, None).await.unwrap().unwrap();
    assert_eq!(last.acked.acked, acks.len());
    assert_eq!(q.depth().await.unwrap(), 0);
    // Only the lease counter stays (one small string per queue, not per job).
    let left = cleanup.remaining_keys();
    assert!(
        left.iter().all(|k| k.ends_with(":lease")),
        "finished jobs left keys behind: {left:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_list_show_retry_and_purge() {
    let cleanup = Cleanup::new(REDIS_URL);
    let q = Arc::new(queue(&cleanup).await);
    let dl = RedisDeadLetters::new(q.clone());
    for pk in 0..3 {
        let mut j = job(pk);
        if pk == 2 {
            j.observer = "other".into();
            j.key = fraiseql::queue::idempotency_key(pk, "other", 0);
        }
        q.enqueue(j).await.unwrap();
    }
    for n in 0..3 {
        let mut r = q.reserve(Duration::from_secs(1)).await.unwrap().unwrap();
        r.job.record_failure("503 Service Unavailable", true);
        r.job
            .record_failure(&format!("400 Bad Request #{n}"), false);
        q.dead_letter(r).await.unwrap();
    }
    assert_eq!(q.depth().await.unwrap(), 0);
    assert_eq!(dl.count().await.unwrap(), 3);

    let all = dl.list(&ListFilter::default()).await.unwrap();
    assert_eq!(all.len(), 3);
    assert!(all[0].created_at >= all[2].created_at, "newest first");
    let d = &all[2];
    assert_eq!(d.attempts, 2, "every attempt's error is kept");
    assert_eq!(d.errors[0].error, "503 Service Unavailable");
    assert_eq!(d.last_error.as_deref(), Some("400 Bad Request #0"));
    let only_other = dl
        .list(&ListFilter {
            observer: Some("other".into()),
            limit: Some(10),
        })
        .await
        .unwrap();
    assert_eq!(only_other.len(), 1);

    let shown = dl.show(d.id).await.unwrap().unwrap();
    assert_eq!(shown.job.key, d.job.key);
    assert!(dl.show(999_999).await.unwrap().is_none());

    // Retry one: it is live again with a fresh budget, its history and its dead-letter id.
    assert_eq!(dl.retry(d.id).await.unwrap(), RetryOutcome::Retried);
    assert_eq!(dl.retry(d.id).await.unwrap(), RetryOutcome::NotFound);
    let mut r = q.reserve(Duration::from_secs(1)).await.unwrap().unwrap();
    assert_eq!(r.job.key, d.job.key);
    assert_eq!(r.job.attempts, 0);
    assert_eq!(r.job.errors.len(), 2);
    assert_eq!(r.job.dead_letter_id, Some(d.id));
    assert!(r.job.replay);
    // It fails again: back under the same id, with the new error appended.
    r.job.record_failure("still broken", false);
    q.dead_letter(r).await.unwrap();
    let again = dl.show(d.id).await.unwrap().unwrap();
    assert_eq!(again.attempts, 3);
    assert_eq!(again.last_error.as_deref(), Some("still broken"));
    assert_eq!(dl.count().await.unwrap(), 3);

    // A dead letter whose key is live again is left alone.
    q.enqueue(all[0].job.clone()).await.unwrap();
    let s = dl.retry_matching(&ListFilter::default()).await.unwrap();
    assert_eq!((s.retried, s.already_live), (2, 1));
    assert_eq!(q.depth().await.unwrap(), 3);

    // Purge: nothing is older than an hour; everything is older than "now + 1s".
    assert_eq!(
        dl.purge_older_than(Duration::from_secs(3600))
            .await
            .unwrap(),
        0
    );
    let cutoff = Utc::now() + chrono::Duration::seconds(1);
    assert_eq!(dl.purge_before(cutoff).await.unwrap(), 1);
    assert_eq!(dl.count().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_worker_finishes_or_hands_back_its_jobs() {
    let cleanup = Cleanup::new(REDIS_URL);
    let q = Arc::new(queue(&cleanup).await);
    let jobs: Vec<_> = (0..20).map(job).collect();
    q.enqueue_many(&jobs).await.unwrap();
    let shutdown = CancellationToken::new();
    let h = tokio::spawn(pump::run(
        q.clone(),
        PumpConfig {
            concurrency: 4,
            batch: 4,
            grace: Duration::from_millis(300),
        },
        |job| async move {
            // Even jobs are quick; odd ones would take far longer than the grace period.
            if job.change_pk % 2 == 1 {
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
            Outcome::Ack
        },
        shutdown.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = std::time::Instant::now();
    shutdown.cancel();
    let stats = h.await.unwrap().unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "drain respects the grace period"
    );
    assert!(stats.released > 0, "{stats:?}");
    assert_eq!(stats.reserved, stats.acked + stats.released, "{stats:?}");
    // What was handed back is ready at once (not after the 30 s visibility timeout).
    assert_eq!(q.depth().await.unwrap(), 20 - stats.acked);
    let back = q
        .reserve_many(100, Duration::from_millis(200))
        .await
        .unwrap();
    assert_eq!(back.len() as u64, 20 - stats.acked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_retry_wakes_an_idle_reserver_when_due() {
    let cleanup = Cleanup::new(REDIS_URL);
    let q = Arc::new(queue(&cleanup).await);
    q.enqueue(job(1)).await.unwrap();
    let r = q.reserve(Duration::from_secs(1)).await.unwrap().unwrap();
    let q2 = q.clone();
    let waiter = tokio::spawn(async move {
        let t = std::time::Instant::now();
        let r = q2.reserve(Duration::from_secs(5)).await.unwrap();
        (r, t.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    q.retry(r, Utc::now() + chrono::Duration::milliseconds(400))
        .await
        .unwrap();
    let (r, waited) = waiter.await.unwrap();
    assert!(r.is_some());
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_millis(1500),
        "{waited:?}"
    );
    q.ack(r.unwrap()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_waits_for_redis_and_a_bad_url_fails_at_once() {
    let mut cfg = common::redis::config("redis://127.0.0.1:1", "x");
    cfg.retry_max_delay_ms = 100;
    let r = tokio::time::timeout(
        Duration::from_millis(500),
        fraiseql::queue::redis::RedisQueue::connect(&cfg),
    )
    .await;
    assert!(r.is_err(), "connect keeps waiting while Redis is down");
    cfg.url = "redis://[bad".into();
    assert!(
        fraiseql::queue::redis::RedisQueue::connect(&cfg)
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_worker_loop_wakes_up_on_enqueue_not_on_its_poll() {
    let cleanup = Cleanup::new(REDIS_URL);
    let q = Arc::new(queue(&cleanup).await);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<std::time::Instant>(4);
    let shutdown = CancellationToken::new();
    let h = tokio::spawn(pump::run(
        q.clone(),
        PumpConfig::default(),
        move |_job| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(std::time::Instant::now()).await;
                Outcome::Ack
            }
        },
        shutdown.clone(),
    ));
    for pk in 0..3 {
        // Idle long enough to be parked on the wake-up, well short of the 2 s recheck.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let t = std::time::Instant::now();
        q.enqueue(job(pk)).await.unwrap();
        let ran = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(
            ran - t < Duration::from_millis(500),
            "woke after {:?}",
            ran - t
        );
    }
    shutdown.cancel();
    let stats = h.await.unwrap().unwrap();
    assert_eq!(stats.acked, 3);
    assert_eq!(q.depth().await.unwrap(), 0);
}

/// Host names are resolved by fraiseql (`fraiseql::net`), not libc, for the command
/// connection and the wake-up subscription alike: `redis.localhost` is loopback there (RFC
/// 6761) and unknown to libc here (`files dns`), as every name is in the `FROM scratch` image.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_reaches_redis_by_a_name_only_the_built_in_resolver_knows() {
    let cleanup = Cleanup::new(REDIS_URL);
    let prefix = cleanup.prefix();
    let cfg = common::redis::config("redis://redis.localhost:6379", &prefix);
    let q = tokio::time::timeout(
        Duration::from_secs(5),
        fraiseql::queue::redis::RedisQueue::connect(&cfg),
    )
    .await
    .expect("connected to redis.localhost within 5 s")
    .unwrap();
    assert_eq!(q.enqueue(job(1)).await.unwrap(), Enqueued::Added);
    assert_eq!(q.depth().await.unwrap(), 1);
    // The wake-up subscription is connected by name too: Redis counts its subscriber.
    let mut conn = redis::Client::open(REDIS_URL)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let (channel, subscribers): (String, i64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(format!("{prefix}:wake"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        (channel.as_str(), subscribers),
        (format!("{prefix}:wake").as_str(), 1)
    );
}
