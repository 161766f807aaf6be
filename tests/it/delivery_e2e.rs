//! Delivery guarantees end to end: retries and their spacing, dead letters and `dlq retry`,
//! dedup on replay, checkpoint resume, late commits, reader takeover, back-pressure.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::TestDb;
use common::observers::*;
use fraiseql::queue::dlq::{ListFilter, PgDeadLetters};

fn hook_config(url: &str, retry: &str, runtime: &str) -> String {
    format!(
        r#"
[observer_runtime]
concurrency = 4
poll_interval_ms = 200
checkpoint_interval_ms = 20
takeover_interval_ms = 200
start_from = "beginning"

{runtime}

[[observers]]
name = "hook"
entity = "Post"
retry = {retry}
[[observers.actions]]
type = "webhook"
url = "{url}"
timeout_ms = 2000
"#
    )
}

fn keys(reqs: &[Request]) -> Vec<String> {
    let mut k: Vec<String> = reqs
        .iter()
        .map(|r| r.header("idempotency-key").unwrap().to_string())
        .collect();
    k.sort();
    k
}

#[tokio::test]
async fn receiver_down_then_up_everything_delivered_and_no_dead_letters() {
    let db = TestDb::new().await;
    db.create_posts().await;
    let rx = HttpReceiver::start_ok().await;
    rx.stop().await; // connection refused from now on
    let running = start(
        &db,
        &hook_config(
            &rx.url("/hook"),
            r#"{ max_attempts = 10, backoff = "exponential", initial_delay_ms = 100, max_delay_ms = 800, jitter = true }"#,
            "",
        ),
        &[],
    );
    for i in 0..20 {
        db.insert_post(&format!("p{i}"), true).await;
    }
    // Down for ~1.5 s: every job fails a few times.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(rx.requests().is_empty());
    assert!(
        metric(
            &running.registry,
            "fraiseql_job_failed_total",
            Some(("kind", "retryable"))
        ) >= 20.0,
        "every job failed at least once while the receiver was down: {}",
        metric(
            &running.registry,
            "fraiseql_job_failed_total",
            Some(("kind", "retryable"))
        )
    );
    rx.start().await;
    let got = rx.wait_for(20, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got_keys = keys(&rx.requests());
    let mut uniq = got_keys.clone();
    uniq.dedup();
    assert_eq!(uniq.len(), 20, "all 20 delivered: {got_keys:?}");
    assert_eq!(got.len(), rx.requests().len());
    assert_eq!(db.dead_letter_count().await, 0, "dead-letter store empty");
    running.stop().await;
}

/// Measures the gaps between attempts against a receiver answering 503 three times.
async fn measure_gaps(backoff: &str, expect_ms: &[u64]) {
    let db = TestDb::new().await;
    db.create_posts().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let c2 = calls.clone();
    let rx = HttpReceiver::with(move |_| {
        if c2.fetch_add(1, Ordering::SeqCst) < 3 {
            Reply::status(503)
        } else {
            Reply::status(200)
        }
    })
    .await;
    let running = start(
        &db,
        &hook_config(
            &rx.url("/hook"),
            &format!(
                r#"{{ max_attempts = 5, backoff = "{backoff}", initial_delay_ms = 200, max_delay_ms = 700, jitter = false }}"#
            ),
            "",
        ),
        &[],
    );
    db.insert_post("retry me", true).await;
    let got = rx.wait_for(4, Duration::from_secs(10)).await;
    let gaps: Vec<u128> = got
        .windows(2)
        .map(|w| (w[1].at - w[0].at).as_millis())
        .collect();
    println!("{backoff}: measured gaps {gaps:?} ms, expected {expect_ms:?} ms");
    for (gap, want) in gaps.iter().zip(expect_ms) {
        let want = *want as u128;
        assert!(
            *gap >= want.saturating_sub(5) && *gap <= want + 150,
            "{backoff}: gap {gap} ms, expected {want} ms (all gaps {gaps:?})"
        );
    }
    assert!(
        got.iter()
            .all(|r| r.header("idempotency-key") == got[0].header("idempotency-key"))
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rx.requests().len(), 4, "no attempt after the success");
    assert_eq!(db.dead_letter_count().await, 0);
    running.stop().await;
}

#[tokio::test]
async fn retry_spacing_follows_exponential_policy_with_cap() {
    // 200, 400, then 800 capped at 700.
    measure_gaps("exponential", &[200, 400, 700]).await;
}

#[tokio::test]
async fn retry_spacing_follows_linear_policy() {
    measure_gaps("linear", &[200, 400, 600]).await;
}

#[tokio::test]
async fn retry_spacing_follows_fixed_policy() {
    measure_gaps("fixed", &[200, 200, 200]).await;
}

#[tokio::test]
async fn retry_after_on_429_is_honoured() {
    let db = TestDb::new().await;
    db.create_posts().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let c2 = calls.clone();
    let rx = HttpReceiver::with(move |_| {
        if c2.fetch_add(1, Ordering::SeqCst) == 0 {
            Reply {
                status: 429,
                headers: vec![("Retry-After".into(), "1".into())],
                body: String::new(),
            }
        } else {
            Reply::status(200)
        }
    })
    .await;
    let running = start(
        &db,
        &hook_config(
            &rx.url("/hook"),
            r#"{ max_attempts = 3, backoff = "fixed", initial_delay_ms = 50, max_delay_ms = 50, jitter = false }"#,
            "",
        ),
        &[],
    );
    db.insert_post("rate limited", true).await;
    let got = rx.wait_for(2, Duration::from_secs(10)).await;
    let gap = (got[1].at - got[0].at).as_millis();
    println!("429 Retry-After: 1 → measured gap {gap} ms");
    assert!(
        (995..1300).contains(&gap),
        "Retry-After: 1 honoured over the 50 ms backoff, gap {gap} ms"
    );
    running.stop().await;
}

#[tokio::test]
async fn http_400_is_dead_lettered_at_once_and_dlq_retry_delivers_after_the_fix() {
    let db = TestDb::new().await;
    db.create_posts().await;
    let rx = HttpReceiver::with(|_| Reply {
        status: 400,
        headers: vec![],
        body: r#"{"error":"bad field"}"#.into(),
    })
    .await;
    let running = start(
        &db,
        &hook_config(
            &rx.url("/hook"),
            r#"{ max_attempts = 5, backoff = "fixed", initial_delay_ms = 50, max_delay_ms = 50, jitter = false }"#,
            "",
        ),
        &[],
    );
    db.insert_post("rejected", true).await;
    let dlq = PgDeadLetters::new(db.pool().clone());
    eventually(Duration::from_secs(10), "a dead letter", || async {
        db.dead_letter_count().await == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.requests().len(), 1, "a permanent 4xx is not retried");
    let list = dlq.list(&ListFilter::default()).await.unwrap();
    assert_eq!(list.len(), 1);
    let dl = &list[0];
    let pk = db.change_pks().await[0];
    assert_eq!(dl.idempotency_key, format!("{pk}:hook:0"));
    assert_eq!(dl.attempts, 1);
    assert_eq!(dl.errors.len(), 1);
    assert!(!dl.errors[0].retryable);
    assert!(
        dl.last_error.as_deref().unwrap().contains("400"),
        "{:?}",
        dl.last_error
    );
    assert!(dl.last_error.as_deref().unwrap().contains("bad field"));
    assert_eq!(dl.job.payload["after"]["title"], "rejected");
    let table = fraiseql::queue::dlq::format_table(&list);
    println!("dlq list:\n{table}");
    assert!(
        table.contains("hook[0]") && table.contains("webhook") && table.contains("HTTP 400"),
        "{table}"
    );
    let shown = dlq.show(dl.id).await.unwrap().unwrap();
    assert_eq!(shown.idempotency_key, dl.idempotency_key);
    eventually(Duration::from_secs(5), "dead-letter gauge", || async {
        metric(&running.registry, "fraiseql_job_dead_letters", None) == 1.0
    })
    .await;
    // The checkpoint moved past the change: dead-lettered counts as finished.
    eventually(
        Duration::from_secs(5),
        "checkpoint past the dead letter",
        || async {
            let c = db.client().await;
            let r = c
                .query_one("SELECT last_pk FROM fraiseql.tb_observer_checkpoint", &[])
                .await
                .unwrap();
            r.get::<_, i64>(0) == pk
        },
    )
    .await;

    // Fix the receiver, then `fraiseql dlq retry ID`.
    rx.set_responder(|_| Reply::status(200));
    assert!(!dlq.request_retry(999_999).await.unwrap(), "unknown id");
    assert!(dlq.request_retry(dl.id).await.unwrap());
    let got = rx.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(
        got[1].header("idempotency-key"),
        got[0].header("idempotency-key")
    );
    eventually(Duration::from_secs(5), "dead letter resolved", || async {
        db.dead_letter_count().await == 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        rx.requests().len(),
        2,
        "delivered exactly once by the retry"
    );
    running.stop().await;
}

#[tokio::test]
async fn exhausted_retries_keep_every_error_and_retry_all_then_purge() {
    let db = TestDb::new().await;
    db.create_posts().await;
    let rx = HttpReceiver::with(|_| Reply::status(503)).await;
    let running = start(
        &db,
        &hook_config(
            &rx.url("/hook"),
            r#"{ max_attempts = 3, backoff = "fixed", initial_delay_ms = 30, max_delay_ms = 30, jitter = false }"#,
            "",
        ),
        &[],
    );
    db.insert_post("a", true).await;
    db.insert_post("b", true).await;
    db.insert_post("c", true).await;
    eventually(Duration::from_secs(10), "3 dead letters", || async {
        db.dead_letter_count().await == 3
    })
    .await;
    assert_eq!(rx.requests().len(), 9, "3 attempts each");
    let dlq = PgDeadLetters::new(db.pool().clone());
    for dl in dlq.list(&ListFilter::default()).await.unwrap() {
        assert_eq!(dl.attempts, 3);
        let nums: Vec<u32> = dl.errors.iter().map(|e| e.attempt).collect();
        assert_eq!(nums, vec![1, 2, 3]);
        assert!(
            dl.errors
                .iter()
                .all(|e| e.retryable && e.error.contains("503"))
        );
    }
    // Purge with a window that keeps them, then retry them all after a fix.
    assert_eq!(dlq.purge(Some(Duration::from_secs(3600))).await.unwrap(), 0);
    rx.set_responder(|_| Reply::status(200));
    assert_eq!(dlq.request_retry_all().await.unwrap(), 3);
    eventually(Duration::from_secs(10), "all retried", || async {
        db.dead_letter_count().await == 0
    })
    .await;
    assert_eq!(rx.requests().len(), 12);

    // A new dead letter, then `purge` (no window) removes it.
    rx.set_responder(|_| Reply::status(410));
    db.insert_post("d", true).await;
    eventually(Duration::from_secs(10), "1 dead letter", || async {
        db.dead_letter_count().await == 1
    })
    .await;
    assert_eq!(dlq.purge(None).await.unwrap(), 1);
    assert_eq!(db.dead_letter_count().await, 0);
    running.stop().await;
}

#[tokio::test]
async fn replay_after_crash_is_deduplicated() {
    let db = TestDb::new().await;
    db.create_posts().await;
    let rx = HttpReceiver::start_ok().await;
    let cfg = hook_config(
        &rx.url("/hook"),
        r#"{ max_attempts = 3, backoff = "fixed", initial_delay_ms = 50, max_delay_ms = 50, jitter = false }"#,
        "",
    );
    let running = start(&db, &cfg, &[]);
    for i in 0..5 {
        db.insert_post(&format!("p{i}"), true).await;
    }
    rx.wait_for(5, Duration::from_secs(10)).await;
    running.stop().await;
    // Simulate a crash before the checkpoint was written: rewind it to the start.
    db.client()
        .await
        .execute(
            "UPDATE fraiseql.tb_observer_checkpoint SET last_txid = '0', last_pk = 0",
            &[],
        )
        .await
        .unwrap();
    let running = start(&db, &cfg, &[]);
    eventually(Duration::from_secs(10), "5 dedup skips", || async {
        metric(&running.registry, "fraiseql_job_dedup_skips_total", None) == 5.0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        rx.requests().len(),
        5,
        "replayed changes are not executed again"
    );
    assert_eq!(
        metric(
            &running.registry,
            "fraiseql_observer_events_processed_total",
            None
        ),
        5.0
    );
    running.stop().await;
}

#[tokio::test]
async fn restart_resumes_from_the_checkpoint_without_full_replay() {
    let db = TestDb::new().await;
    db.create_posts().await;
    let rx = HttpReceiver::start_ok().await;
    // Dedup off: only the checkpoint can prevent a replay here.
    let cfg = hook_config(
        &rx.url("/hook"),
        r#"{ max_attempts = 3, backoff = "fixed", initial_delay_ms = 50, max_delay_ms = 50, jitter = false }"#,
        "dedup_window_secs = 0",
    );
    let running = start(&db, &cfg, &[]);
    for i in 0..5 {
        db.insert_post(&format!("p{i}"), true).await;
    }
    rx.wait_for(5, Duration::from_secs(10)).await;
    // Stop right away: the jobs finishing during the drain must still move the checkpoint.
    running.stop().await;
    for i in 5..8 {
        db.insert_post(&format!("p{i}"), true).await;
    }
    let running = start(&db, &cfg, &[]);
    rx.wait_for(8, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let k = keys(&rx.requests());
    let mut uniq = k.clone();
    uniq.dedup();
    assert_eq!(
        (k.len(), uniq.len()),
        (8, 8),
        "no replay of the first 5: {k:?}"
    );
    assert_eq!(
        metric(
            &running.registry,
            "fraiseql_observer_events_processed_total",
            None
        ),
        3.0
    );
    running.stop().await;
}

#[tokio::test]
async fn a_late_commit_with_a_smaller_pk_is_not_skipped() {
    let _held = common::hold_change_log().await;
    let db = TestDb::new().await;
    db.create_posts().await;
    let rx = HttpReceiver::start_ok().await;
    let running = start(
        &db,
        &hook_config(
            &rx.url("/hook"),
            r#"{ max_attempts = 3, backoff = "fixed", initial_delay_ms = 50, max_delay_ms = 50, jitter = false }"#,
            "",
        ),
        &[],
    );
    // Transaction A takes the smaller change pk but commits last.
    let (mut a, conn) = tokio_postgres::connect(&db.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let ta = a.transaction().await.unwrap();
    ta.execute(
        "INSERT INTO tb_post (title, published) VALUES ('slow', true)",
        &[],
    )
    .await
    .unwrap();
    db.insert_post("fast", true).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    // While A is open, B (the larger pk) is held back, never read past A.
    ta.commit().await.unwrap();
    let got = rx.wait_for(2, Duration::from_secs(10)).await;
    let titles: Vec<_> = got
        .iter()
        .map(|r| r.json()["after"]["title"].as_str().unwrap().to_string())
        .collect();
    assert!(
        titles.contains(&"slow".to_string()) && titles.contains(&"fast".to_string()),
        "{titles:?}"
    );
    running.stop().await;
}

#[tokio::test]
async fn one_active_reader_and_takeover_when_it_stops() {
    let db = TestDb::new().await;
    db.create_posts().await;
    let rx = HttpReceiver::start_ok().await;
    let cfg = hook_config(
        &rx.url("/hook"),
        r#"{ max_attempts = 3, backoff = "fixed", initial_delay_ms = 50, max_delay_ms = 50, jitter = false }"#,
        "dedup_window_secs = 0",
    );
    let first = start(&db, &cfg, &[]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = start(&db, &cfg, &[]);
    for i in 0..10 {
        db.insert_post(&format!("p{i}"), true).await;
    }
    rx.wait_for(10, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        rx.requests().len(),
        10,
        "exactly one instance reads (no duplicates, dedup off)"
    );
    assert_eq!(
        metric(
            &first.registry,
            "fraiseql_observer_events_processed_total",
            None
        ),
        10.0
    );
    assert_eq!(
        metric(
            &second.registry,
            "fraiseql_observer_events_processed_total",
            None
        ),
        0.0
    );

    first.stop().await; // releases the advisory lock (its connection closes)
    for i in 10..15 {
        db.insert_post(&format!("p{i}"), true).await;
    }
    rx.wait_for(15, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let k = keys(&rx.requests());
    let mut uniq = k.clone();
    uniq.dedup();
    assert_eq!(uniq.len(), 15);
    assert_eq!(k.len(), 15, "takeover resumed from the checkpoint: {k:?}");
    assert_eq!(
        metric(
            &second.registry,
            "fraiseql_observer_events_processed_total",
            None
        ),
        5.0
    );
    second.stop().await;
}

#[tokio::test]
async fn bounded_queue_applies_back_pressure_and_everything_arrives() {
    let db = TestDb::new().await;
    db.create_posts().await;
    let rx = HttpReceiver::start_ok().await;
    let running = start(
        &db,
        &hook_config(
            &rx.url("/hook"),
            r#"{ max_attempts = 3, backoff = "fixed", initial_delay_ms = 50, max_delay_ms = 50, jitter = false }"#,
            "queue_capacity = 3\nbatch_size = 7",
        ),
        &[],
    );
    db.client()
        .await
        .execute("INSERT INTO tb_post (title, published) SELECT 'p' || g, true FROM generate_series(1, 200) g", &[])
        .await
        .unwrap();
    let mut max_backlog = 0.0f64;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while rx.requests().len() < 200 && std::time::Instant::now() < deadline {
        max_backlog = max_backlog.max(metric(&running.registry, "fraiseql_job_queue_depth", None));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let k = keys(&rx.requests());
    let mut uniq = k.clone();
    uniq.dedup();
    assert_eq!(uniq.len(), 200);
    assert!(
        max_backlog <= 3.0,
        "backlog never above the capacity: {max_backlog}"
    );
    running.stop().await;
}

#[tokio::test]
async fn shutdown_finishes_in_flight_jobs_within_the_grace_period() {
    let db = TestDb::new().await;
    db.create_posts().await;
    let rx = HttpReceiver::start_ok().await;
    rx.set_delay(Duration::from_millis(500));
    let cfg = hook_config(
        &rx.url("/hook"),
        r#"{ max_attempts = 3, backoff = "fixed", initial_delay_ms = 50, max_delay_ms = 50, jitter = false }"#,
        "dedup_window_secs = 0",
    );
    let running = start(&db, &cfg, &[]);
    db.insert_post("slow", true).await;
    rx.wait_for(1, Duration::from_secs(10)).await; // the request is in flight now
    let t = std::time::Instant::now();
    running.stop().await;
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "stop waited for the in-flight job"
    );
    // Finished and checkpointed: a restart does not deliver it again (dedup is off).
    rx.set_delay(Duration::ZERO);
    let running = start(&db, &cfg, &[]);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(rx.requests().len(), 1);
    running.stop().await;
}

#[tokio::test]
async fn shutdown_hands_back_jobs_that_outlive_the_grace_period() {
    let db = TestDb::new().await;
    db.create_posts().await;
    let rx = HttpReceiver::start_ok().await;
    rx.set_delay(Duration::from_secs(5));
    let cfg = hook_config(
        &rx.url("/hook"),
        r#"{ max_attempts = 3, backoff = "fixed", initial_delay_ms = 50, max_delay_ms = 50, jitter = false }"#,
        "shutdown_grace_ms = 200\ndedup_window_secs = 0",
    );
    let running = start(&db, &cfg, &[]);
    db.insert_post("stuck", true).await;
    rx.wait_for(1, Duration::from_secs(10)).await;
    let t = std::time::Instant::now();
    running.stop().await;
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "stop did not wait past the grace period"
    );
    // Not finished: the checkpoint stayed behind it, and the next start delivers it again.
    rx.set_delay(Duration::ZERO);
    let running = start(&db, &cfg, &[]);
    let got = rx.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(
        got[0].header("idempotency-key"),
        got[1].header("idempotency-key")
    );
    running.stop().await;
}

#[tokio::test]
async fn the_reader_reconnects_when_its_session_is_killed() {
    let db = TestDb::new().await;
    db.create_posts().await;
    let rx = HttpReceiver::start_ok().await;
    let running = start(
        &db,
        &hook_config(
            &rx.url("/hook"),
            r#"{ max_attempts = 3, backoff = "fixed", initial_delay_ms = 50, max_delay_ms = 50, jitter = false }"#,
            "",
        ),
        &[],
    );
    db.insert_post("before", true).await;
    rx.wait_for(1, Duration::from_secs(10)).await;
    let killed: i64 = db
        .client()
        .await
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = 'fraiseql-observer-reader' AND datname = current_database()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(killed, 1, "one reader session");
    db.insert_post("after", true).await;
    let got = rx.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(got[1].json()["after"]["title"], "after");
    running.stop().await;
}

#[tokio::test]
async fn a_new_consumer_starts_from_now_by_default() {
    let db = TestDb::new().await;
    db.create_posts().await;
    for i in 0..3 {
        db.insert_post(&format!("history {i}"), true).await;
    }
    let rx = HttpReceiver::start_ok().await;
    let cfg = hook_config(
        &rx.url("/hook"),
        r#"{ max_attempts = 3, backoff = "fixed", initial_delay_ms = 50, max_delay_ms = 50, jitter = false }"#,
        "",
    )
    .replace("start_from = \"beginning\"", "");
    let running = start(&db, &cfg, &[]);
    // The checkpoint row appears once the reader holds the lock.
    eventually(Duration::from_secs(5), "checkpoint row", || async {
        db.client()
            .await
            .query_opt("SELECT 1 FROM fraiseql.tb_observer_checkpoint", &[])
            .await
            .unwrap()
            .is_some()
    })
    .await;
    db.insert_post("new", true).await;
    let got = rx.wait_for(1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(rx.requests().len(), 1, "history is not replayed");
    assert_eq!(got[0].json()["after"]["title"], "new");
    running.stop().await;
}

#[tokio::test]
async fn a_receiver_slower_than_the_timeout_is_retried_as_a_timeout() {
    let db = TestDb::new().await;
    db.create_posts().await;
    let rx = HttpReceiver::start_ok().await;
    rx.set_delay(Duration::from_millis(1500));
    let running = start(
        &db,
        &hook_config(
            &rx.url("/hook"),
            r#"{ max_attempts = 2, backoff = "fixed", initial_delay_ms = 50, max_delay_ms = 50, jitter = false }"#,
            "",
        )
        .replace("timeout_ms = 2000", "timeout_ms = 200"),
        &[],
    );
    db.insert_post("slow", true).await;
    eventually(Duration::from_secs(10), "dead letter", || async {
        db.dead_letter_count().await == 1
    })
    .await;
    let dl = &PgDeadLetters::new(db.pool().clone())
        .list(&ListFilter::default())
        .await
        .unwrap()[0];
    assert_eq!(dl.attempts, 2);
    assert!(
        dl.errors
            .iter()
            .all(|e| e.retryable && e.error.contains("timed out")),
        "{:?}",
        dl.errors
    );
    running.stop().await;
}

#[tokio::test]
async fn receiver_down_then_up_retry_spacing_measured_on_the_failed_connections() {
    let db = TestDb::new().await;
    db.create_posts().await;
    let rx = HttpReceiver::start_ok().await;
    rx.set_down(true); // connections are closed without a response
    let running = start(
        &db,
        &hook_config(
            &rx.url("/hook"),
            r#"{ max_attempts = 10, backoff = "exponential", initial_delay_ms = 100, max_delay_ms = 800, jitter = false }"#,
            "",
        ),
        &[],
    );
    db.insert_post("while down", true).await;
    // Attempts at ~0, 100, 300, 700, 1500 ms; the receiver comes back at ~1.7 s, the
    // next attempt (at ~2.3 s) is delivered.
    eventually(Duration::from_secs(10), "5 failed attempts", || async {
        rx.refused().len() >= 5
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    rx.set_down(false);
    let got = rx.wait_for(1, Duration::from_secs(10)).await;
    let mut attempts = rx.refused();
    attempts.push(got[0].at);
    let gaps: Vec<u128> = attempts
        .windows(2)
        .map(|w| (w[1] - w[0]).as_millis())
        .collect();
    println!(
        "receiver down → gaps between attempts {gaps:?} ms, expected [100, 200, 400, 800, 800]"
    );
    assert_eq!(gaps.len(), 5, "{gaps:?}");
    for (gap, want) in gaps.iter().zip([100u128, 200, 400, 800, 800]) {
        assert!(
            *gap + 5 >= want && *gap <= want + 150,
            "gap {gap} ms, expected {want} ms ({gaps:?})"
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.requests().len(), 1);
    assert_eq!(db.dead_letter_count().await, 0, "dead-letter store empty");
    running.stop().await;
}
