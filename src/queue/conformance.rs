//! The conformance suite every [`Queue`] backend must pass.
//!
//! Public (not `cfg(test)`) so that each backend's integration tests call it: the memory
//! backend in `tests/it/queue_conformance.rs`, and the Redis backend of the scale-out issue the
//! same way. `make` builds a fresh, empty queue for each case. Each case panics with a
//! message naming the broken contract.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use super::{Enqueued, Job, Queue};

const SHORT: Duration = Duration::from_millis(50);
const LONG: Duration = Duration::from_secs(5);

fn job(pk: i64, idx: usize) -> Job {
    Job::new(
        pk,
        "conformance",
        idx,
        "webhook",
        serde_json::json!({"event": {"pk": pk}, "before": null, "after": {"n": pk}}),
    )
}

/// Runs every case against fresh queues from `make`.
pub async fn run_all<Q, F, Fut>(make: F)
where
    Q: Queue,
    F: Fn() -> Fut,
    Fut: Future<Output = Q>,
{
    enqueue_then_reserve_returns_the_same_job(make().await).await;
    reserve_on_empty_waits_then_returns_none(make().await).await;
    reserve_wakes_up_on_enqueue(Arc::new(make().await)).await;
    enqueue_is_idempotent_by_key_while_live(make().await).await;
    ack_removes_the_job_and_frees_the_key(make().await).await;
    ready_jobs_come_out_in_fifo_order(make().await).await;
    retry_delays_the_job_and_keeps_its_history(make().await).await;
    dead_letter_removes_the_job(make().await).await;
    unknown_reservations_are_rejected(make().await).await;
    concurrent_reservers_never_share_a_job(Arc::new(make().await)).await;
    depth_counts_ready_delayed_and_reserved(make().await).await;
    enqueue_many_keeps_order_and_skips_live_keys(make().await).await;
}

pub async fn enqueue_then_reserve_returns_the_same_job<Q: Queue>(q: Q) {
    let j = job(1, 0);
    assert_eq!(q.enqueue(j.clone()).await.unwrap(), Enqueued::Added);
    let r = q
        .reserve(LONG)
        .await
        .unwrap()
        .expect("enqueued job must be reservable");
    assert_eq!(r.job.key, "1:conformance:0");
    assert_eq!(r.job.payload, j.payload, "payload must round-trip");
    assert_eq!(r.job.id, j.id);
    q.ack(r).await.unwrap();
}

pub async fn reserve_on_empty_waits_then_returns_none<Q: Queue>(q: Q) {
    let t = std::time::Instant::now();
    assert!(
        q.reserve(Duration::from_millis(100))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        t.elapsed() >= Duration::from_millis(90),
        "reserve must wait for the given duration"
    );
}

pub async fn reserve_wakes_up_on_enqueue<Q: Queue>(q: Arc<Q>) {
    let q2 = q.clone();
    let waiter = tokio::spawn(async move { q2.reserve(LONG).await.unwrap() });
    tokio::time::sleep(SHORT).await;
    let t = std::time::Instant::now();
    q.enqueue(job(2, 0)).await.unwrap();
    let r = waiter
        .await
        .unwrap()
        .expect("waiting reserver must get the job");
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "reserver woke up late"
    );
    q.ack(r).await.unwrap();
}

pub async fn enqueue_is_idempotent_by_key_while_live<Q: Queue>(q: Q) {
    assert_eq!(q.enqueue(job(3, 0)).await.unwrap(), Enqueued::Added);
    assert_eq!(q.enqueue(job(3, 0)).await.unwrap(), Enqueued::Duplicate);
    assert_eq!(q.enqueue(job(3, 1)).await.unwrap(), Enqueued::Added);
    let a = q.reserve(LONG).await.unwrap().unwrap();
    // Still live while reserved.
    assert_eq!(q.enqueue(job(3, 0)).await.unwrap(), Enqueued::Duplicate);
    let b = q.reserve(LONG).await.unwrap().unwrap();
    assert!(
        q.reserve(SHORT).await.unwrap().is_none(),
        "duplicate was queued"
    );
    q.ack(a).await.unwrap();
    q.ack(b).await.unwrap();
}

pub async fn ack_removes_the_job_and_frees_the_key<Q: Queue>(q: Q) {
    q.enqueue(job(4, 0)).await.unwrap();
    let r = q.reserve(LONG).await.unwrap().unwrap();
    q.ack(r).await.unwrap();
    assert!(
        q.reserve(SHORT).await.unwrap().is_none(),
        "acked job came back"
    );
    // Once finished, the key may be enqueued again (replays are filtered by dedup, not here).
    assert_eq!(q.enqueue(job(4, 0)).await.unwrap(), Enqueued::Added);
}

pub async fn ready_jobs_come_out_in_fifo_order<Q: Queue>(q: Q) {
    for pk in 10..20 {
        q.enqueue(job(pk, 0)).await.unwrap();
    }
    for pk in 10..20 {
        let r = q.reserve(LONG).await.unwrap().unwrap();
        assert_eq!(r.job.change_pk, pk, "ready jobs must be FIFO");
        q.ack(r).await.unwrap();
    }
}

pub async fn retry_delays_the_job_and_keeps_its_history<Q: Queue>(q: Q) {
    q.enqueue(job(5, 0)).await.unwrap();
    let mut r = q.reserve(LONG).await.unwrap().unwrap();
    r.job.record_failure("boom", true);
    let at = Utc::now() + chrono::Duration::milliseconds(300);
    q.retry(r, at).await.unwrap();
    assert!(
        q.reserve(Duration::from_millis(100))
            .await
            .unwrap()
            .is_none(),
        "retried job was reservable before its time"
    );
    assert_eq!(q.enqueue(job(5, 0)).await.unwrap(), Enqueued::Duplicate);
    let r = q
        .reserve(LONG)
        .await
        .unwrap()
        .expect("retried job never came back");
    assert!(Utc::now() >= at - chrono::Duration::milliseconds(5));
    assert_eq!(r.job.attempts, 1);
    assert_eq!(r.job.errors.len(), 1);
    assert_eq!(r.job.errors[0].error, "boom");
    q.ack(r).await.unwrap();
}

pub async fn dead_letter_removes_the_job<Q: Queue>(q: Q) {
    q.enqueue(job(6, 0)).await.unwrap();
    let mut r = q.reserve(LONG).await.unwrap().unwrap();
    r.job.record_failure("400 Bad Request", false);
    q.dead_letter(r).await.unwrap();
    assert!(q.reserve(SHORT).await.unwrap().is_none());
    assert_eq!(q.depth().await.unwrap(), 0);
}

pub async fn unknown_reservations_are_rejected<Q: Queue>(q: Q) {
    q.enqueue(job(7, 0)).await.unwrap();
    let r = q.reserve(LONG).await.unwrap().unwrap();
    q.ack(r.clone()).await.unwrap();
    assert!(q.ack(r.clone()).await.is_err(), "double ack must fail");
    assert!(q.retry(r.clone(), Utc::now()).await.is_err());
    assert!(q.dead_letter(r).await.is_err());
}

pub async fn concurrent_reservers_never_share_a_job<Q: Queue>(q: Arc<Q>) {
    const N: i64 = 200;
    for pk in 0..N {
        q.enqueue(job(1000 + pk, 0)).await.unwrap();
    }
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let q = q.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(r) = q.reserve(SHORT).await.unwrap() {
                got.push(r.job.key.clone());
                q.ack(r).await.unwrap();
            }
            got
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), N as usize, "every job reserved exactly once");
    assert_eq!(
        unique.len(),
        N as usize,
        "a job was handed to two reservers"
    );
}

pub async fn depth_counts_ready_delayed_and_reserved<Q: Queue>(q: Q) {
    for pk in 0..3 {
        q.enqueue(job(2000 + pk, 0)).await.unwrap();
    }
    let r1 = q.reserve(LONG).await.unwrap().unwrap();
    let r2 = q.reserve(LONG).await.unwrap().unwrap();
    q.retry(r2, Utc::now() + chrono::Duration::seconds(60))
        .await
        .unwrap();
    assert_eq!(q.depth().await.unwrap(), 3);
    q.ack(r1).await.unwrap();
    assert_eq!(q.depth().await.unwrap(), 2);
}

/// `enqueue_many` keeps the order of its jobs and the per-key idempotency of `enqueue`.
pub async fn enqueue_many_keeps_order_and_skips_live_keys<Q: Queue>(q: Q) {
    q.enqueue(job(1, 0)).await.unwrap();
    let results = q
        .enqueue_many(vec![job(2, 0), job(1, 0), job(3, 0)])
        .await
        .unwrap();
    assert_eq!(
        results,
        vec![Enqueued::Added, Enqueued::Duplicate, Enqueued::Added],
        "enqueue_many: one result per job, a live key is a duplicate"
    );
    for pk in [1, 2, 3] {
        let r = q
            .reserve(LONG)
            .await
            .unwrap()
            .expect("enqueue_many: queued jobs are reservable");
        assert_eq!(r.job.change_pk, pk, "enqueue_many: FIFO order kept");
        q.ack(r).await.unwrap();
    }
    assert_eq!(q.depth().await.unwrap(), 0, "enqueue_many: no extra job");
}
