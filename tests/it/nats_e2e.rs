//! NATS JetStream as the change-event transport, end to end with the real binary: changes
//! committed in PostgreSQL, published by `serve`'s reader, consumed back by the observers
//! (`[nats] consume`), executed from the Redis queue, delivered to a local webhook receiver.
//! A private `nats-server` (own port and storage) is killed and restarted mid-stream.

use crate::common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use fraiseql::nats::NatsConfig;

use common::nats::{PrivateServer, SHARED_URL, connect, delete_stream, test_config};
use common::observers::{HttpReceiver, write_posts};
use common::redis::{Cleanup, REDIS_URL};
use common::{ServeProcess, TestDb, eventually};

fn write_config(
    dir: &tempfile::TempDir,
    hook: &str,
    nats: &NatsConfig,
    redis_prefix: Option<&str>,
) -> String {
    let mut config = serde_json::json!({
        "observer_runtime": {
            "concurrency": 8,
            "poll_interval_ms": 100,
            "checkpoint_interval_ms": 50,
            "start_from": "beginning"
        },
        "nats": common::nats::serve_section(nats),
        "observers": [{
            "name": "hook",
            "entity": "Post",
            "retry": {"max_attempts": 10, "backoff": "fixed", "initial_delay_ms": 100},
            "actions": [{"type": "webhook", "url": hook}]
        }]
    });
    config["nats"]["consume"] = redis_prefix.is_some().into();
    config["nats"]["ack_wait_ms"] = 5000.into();
    config["nats"]["fetch_batch"] = nats.fetch_batch.into();
    if let Some(prefix) = redis_prefix {
        config["queue"] = serde_json::json!({
            "backend": "redis",
            "url": REDIS_URL,
            "key_prefix": prefix,
            "run_workers": true,
        });
    }
    let path = dir.path().join("fraiseql.toml");
    std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
    path.to_str().unwrap().to_string()
}

/// Reads up to `n` messages of the stream through its durable consumer (10 s at most).
async fn fetch(nats: &NatsConfig, n: usize) -> Vec<fraiseql::nats::Delivery> {
    let bus = connect(nats).await;
    let consumer = bus.consumer().await.unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.len() < n && Instant::now() < deadline {
        got.extend(
            consumer
                .fetch(10, Duration::from_millis(500))
                .await
                .unwrap(),
        );
    }
    got
}

fn distinct_keys(rx: &HttpReceiver) -> HashSet<String> {
    rx.requests()
        .iter()
        .filter_map(|r| r.header("idempotency-key").map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restarted_mid_stream_loses_no_event_and_suppresses_duplicates() {
    const CHANGES: usize = 300;
    let mut nats_server = PrivateServer::started();
    let nats = test_config(&nats_server.url());
    let db = TestDb::new().await;
    db.create_posts().await;
    let cleanup = Cleanup::new(REDIS_URL);
    let prefix = cleanup.prefix();
    let rx = HttpReceiver::start_ok().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(&dir, &rx.url("/hook"), &nats, Some(&prefix));
    let serve = ServeProcess::start_role(&["--config", &config, "serve"], &db.url(), &[]).await;

    let started = Instant::now();
    let writer = write_posts(db.pool().clone(), CHANGES, 10, Duration::from_millis(40));
    // Two kills mid-stream: one with the server down for 1.5 s (longer than the request
    // timeout, so publishes and acks fail and are retried), one restarted at once.
    tokio::time::sleep(Duration::from_millis(400)).await;
    nats_server.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    nats_server.start();
    tokio::time::sleep(Duration::from_millis(500)).await;
    nats_server.restart();
    writer.await.unwrap();

    let all = eventually(Duration::from_secs(60), || async {
        distinct_keys(&rx).len() >= CHANGES
    })
    .await;
    let elapsed = started.elapsed();
    // Let redeliveries (if any) arrive before counting duplicates.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let bus = connect(&nats).await;
    let state = bus.stream_state().await.unwrap();
    let requests = rx.len();
    let distinct = distinct_keys(&rx).len();
    let published_new = serve
        .metric("fraiseql_observer_events_published_total{outcome=\"new\"}")
        .await;
    let published_dup = serve
        .metric("fraiseql_observer_events_published_total{outcome=\"duplicate\"}")
        .await;
    eprintln!(
        "NATS killed twice mid-stream: {CHANGES} changes -> stream holds {} messages; \
         publishes acked new {published_new}, as duplicates {published_dup}; webhook got \
         {requests} requests for {distinct} distinct changes in {elapsed:?}",
        state.messages
    );
    assert!(all, "every change delivered (got {distinct} of {CHANGES})");
    assert_eq!(distinct, CHANGES);
    assert_eq!(
        state.messages, CHANGES as u64,
        "one stream message per change: re-publishes were suppressed by message id"
    );
    // A publish whose acknowledgement was lost in a kill is re-sent and acknowledged as a
    // duplicate: every change was acknowledged once, new or duplicate.
    assert!(published_new <= CHANGES as f64);
    assert!(published_new + published_dup >= CHANGES as f64);
    drop(serve);
    drop(nats_server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_publishes_each_change_to_entity_op_subject_with_its_id() {
    let nats = test_config(SHARED_URL);
    let db = TestDb::new().await;
    db.create_posts().await;
    let rx = HttpReceiver::start_ok().await;
    let dir = tempfile::tempdir().unwrap();
    // Publish only: the observers keep reading the change log (memory queue).
    let config = write_config(&dir, &rx.url("/hook"), &nats, None);
    let serve = ServeProcess::start_role(&["--config", &config, "serve"], &db.url(), &[]).await;
    db.insert_post("one", true).await;
    db.insert_post("two", false).await;
    rx.wait_for(2, Duration::from_secs(10)).await;

    let result = fetch(&nats, 2).await;
    let ids: Vec<(i64, String)> = db
        .client()
        .await
        .query(
            "SELECT pk, id::text FROM fraiseql.tb_entity_change_log ORDER BY pk",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    delete_stream(&nats.url, &nats.stream).await;
    drop(serve);

    assert_eq!(result.len(), 2, "both changes published");
    for (d, (pk, id)) in result.iter().zip(&ids) {
        assert_eq!(d.subject, format!("{}.Post.insert", nats.subject_prefix));
        assert_eq!(
            d.msg_id.as_deref(),
            Some(id.as_str()),
            "message id = change id"
        );
        let ev: serde_json::Value = serde_json::from_slice(&d.payload).unwrap();
        assert_eq!(ev["pk"].as_i64(), Some(*pk));
        assert_eq!(ev["entity"], "Post");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_the_events_of_the_durable_consumer() {
    const CHANGES: usize = 200;
    let nats = NatsConfig {
        fetch_batch: 5,
        ..test_config(SHARED_URL)
    };
    let db = TestDb::new().await;
    db.create_posts().await;
    let cleanup = Cleanup::new(REDIS_URL);
    let prefix = cleanup.prefix();
    let rx = HttpReceiver::start_ok().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(&dir, &rx.url("/hook"), &nats, Some(&prefix));
    let a = ServeProcess::start_role(&["--config", &config, "serve"], &db.url(), &[]).await;
    let b = ServeProcess::start_role(&["--config", &config, "serve"], &db.url(), &[]).await;
    write_posts(db.pool().clone(), CHANGES, 5, Duration::from_millis(30))
        .await
        .unwrap();
    let all = eventually(Duration::from_secs(30), || async {
        distinct_keys(&rx).len() >= CHANGES
    })
    .await;
    let processed = "fraiseql_observer_events_processed_total";
    let (by_a, by_b) = (a.metric(processed).await, b.metric(processed).await);
    delete_stream(&nats.url, &nats.stream).await;
    eprintln!(
        "two instances on one durable consumer: A dispatched {by_a}, B dispatched {by_b} of \
         {CHANGES} changes; webhook got {} requests, {} distinct",
        rx.len(),
        distinct_keys(&rx).len()
    );
    assert!(all, "every change delivered");
    assert!(by_a > 0.0 && by_b > 0.0, "both instances took events");
    assert!(by_a + by_b >= CHANGES as f64);
}

/// An entity whose name cannot be a subject token as it is (here `Order Line`) is still
/// published — under an encoded token — and the reader never moves past it unpublished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_of_an_entity_outside_the_subject_alphabet_is_published_not_skipped() {
    let nats = test_config(SHARED_URL);
    let db = TestDb::new().await;
    db.create_posts().await;
    let rx = HttpReceiver::start_ok().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(&dir, &rx.url("/hook"), &nats, None);
    let serve = ServeProcess::start_role(&["--config", &config, "serve"], &db.url(), &[]).await;
    db.batch(
        "INSERT INTO fraiseql.tb_entity_change_log (entity, entity_id, op, after) \
         VALUES ('Order Line', gen_random_uuid(), 'INSERT', '{\"qty\": 2}')",
    )
    .await;
    db.insert_post("after it", true).await;
    rx.wait_for(1, Duration::from_secs(10)).await;
    let got = fetch(&nats, 2).await;
    delete_stream(&nats.url, &nats.stream).await;
    drop(serve);
    let entities: Vec<String> = got
        .iter()
        .map(|d| {
            let ev: serde_json::Value = serde_json::from_slice(&d.payload).unwrap();
            ev["entity"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(
        entities,
        vec!["Order Line", "Post"],
        "both published, in order"
    );
    let token = &got[0].subject[nats.subject_prefix.len() + 1..];
    assert_eq!(token, "~4f72646572204c696e65.insert");
    assert_eq!(
        got[0].entity, "Order Line",
        "the consumer decodes the token"
    );
}

/// A change larger than the server's `max_payload` (a 2 MiB row; 1 MiB by default) is
/// published as a reference the consumers complete from the change log: it reaches its
/// observer whole, and the changes behind it are not held back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_larger_than_max_payload_is_delivered_whole_and_blocks_nothing() {
    let nats = test_config(SHARED_URL);
    let db = TestDb::new().await;
    db.create_posts().await;
    let cleanup = Cleanup::new(REDIS_URL);
    let prefix = cleanup.prefix();
    let rx = HttpReceiver::start_ok().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(&dir, &rx.url("/hook"), &nats, Some(&prefix));
    let serve = ServeProcess::start_role(&["--config", &config, "serve"], &db.url(), &[]).await;
    db.batch(
        "INSERT INTO fraiseql.tb_entity_change_log (entity, entity_id, op, after) \
         VALUES ('Post', gen_random_uuid(), 'INSERT', \
                 jsonb_build_object('title', 'big', 'blob', repeat('x', 2097152)))",
    )
    .await;
    db.insert_post("small, after it", true).await;
    let got = rx.wait_for(2, Duration::from_secs(20)).await;
    delete_stream(&nats.url, &nats.stream).await;
    drop(serve);
    let mut titles: Vec<(String, usize)> = got
        .iter()
        .map(|r| {
            let d = r.json();
            (
                d["after"]["title"].as_str().unwrap_or_default().to_owned(),
                d["after"]["blob"].as_str().map_or(0, str::len),
            )
        })
        .collect();
    titles.sort();
    assert_eq!(
        titles,
        vec![
            ("big".to_owned(), 2_097_152),
            ("small, after it".to_owned(), 0)
        ]
    );
}
