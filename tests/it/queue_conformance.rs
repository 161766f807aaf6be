//! The queue conformance suite (`queue::conformance`) on both backends: the whole suite on
//! the in-process backend, and every case on a fresh Redis queue with its own key prefix.

use crate::common;

use std::sync::Arc;

use fraiseql::queue::conformance;
use fraiseql::queue::dlq::MemoryDeadLetters;
use fraiseql::queue::memory::MemoryQueue;
use fraiseql::queue::{Job, Queue};

use common::redis::{Cleanup, queue};
use fraiseql::queue::conformance as c;

#[tokio::test]
async fn memory_queue_passes_the_conformance_suite() {
    conformance::run_all(|| async {
        MemoryQueue::new(1000, Arc::new(MemoryDeadLetters::default()))
    })
    .await;
}

#[tokio::test]
async fn memory_queue_writes_dead_letters_to_its_sink() {
    let sink = Arc::new(MemoryDeadLetters::default());
    let q = MemoryQueue::new(10, sink.clone());
    q.enqueue(Job::new(1, "o", 0, "webhook", serde_json::json!({})))
        .await
        .unwrap();
    let mut r = q
        .reserve(std::time::Duration::from_secs(1))
        .await
        .unwrap()
        .unwrap();
    r.job.record_failure("HTTP 400", false);
    q.dead_letter(r).await.unwrap();
    let dead = sink.jobs();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].key, "1:o:0");
    assert_eq!(dead[0].errors[0].error, "HTTP 400");
}

#[tokio::test]
async fn memory_queue_applies_back_pressure_when_full() {
    let q = Arc::new(MemoryQueue::new(2, Arc::new(MemoryDeadLetters::default())));
    for pk in 0..2 {
        q.enqueue(Job::new(pk, "o", 0, "webhook", serde_json::json!({})))
            .await
            .unwrap();
    }
    let q2 = q.clone();
    let blocked = tokio::spawn(async move {
        q2.enqueue(Job::new(9, "o", 0, "webhook", serde_json::json!({})))
            .await
    });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(
        !blocked.is_finished(),
        "enqueue into a full queue must wait"
    );
    // A retry keeps its slot: still full.
    let r = q
        .reserve(std::time::Duration::from_secs(1))
        .await
        .unwrap()
        .unwrap();
    q.retry(r, chrono::Utc::now()).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(!blocked.is_finished());
    let r = q
        .reserve(std::time::Duration::from_secs(1))
        .await
        .unwrap()
        .unwrap();
    q.ack(r).await.unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(1), blocked)
        .await
        .expect("an ack frees a slot")
        .unwrap()
        .unwrap();
    assert_eq!(q.depth().await.unwrap(), 2);
}

macro_rules! redis_case {
    ($name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let cleanup = Cleanup::new(common::redis::REDIS_URL);
            c::$name(queue(&cleanup).await).await;
        }
    };
    (arc $name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let cleanup = Cleanup::new(common::redis::REDIS_URL);
            c::$name(Arc::new(queue(&cleanup).await)).await;
        }
    };
}

mod redis_backend {
    use super::*;
    redis_case!(enqueue_then_reserve_returns_the_same_job);
    redis_case!(reserve_on_empty_waits_then_returns_none);
    redis_case!(arc reserve_wakes_up_on_enqueue);
    redis_case!(enqueue_is_idempotent_by_key_while_live);
    redis_case!(ack_removes_the_job_and_frees_the_key);
    redis_case!(ready_jobs_come_out_in_fifo_order);
    redis_case!(retry_delays_the_job_and_keeps_its_history);
    redis_case!(dead_letter_removes_the_job);
    redis_case!(unknown_reservations_are_rejected);
    redis_case!(arc concurrent_reservers_never_share_a_job);
    redis_case!(depth_counts_ready_delayed_and_reserved);
    redis_case!(enqueue_many_keeps_order_and_skips_live_keys);

    /// The suite's own entry point, as the memory backend runs it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn run_all() {
        let cleanup = Cleanup::new(common::redis::REDIS_URL);
        c::run_all(|| queue(&cleanup)).await;
    }
}
