//! Integration tests of the NATS JetStream transport against real nats-server processes:
//! the shared server at 127.0.0.1:4222 and private servers started per test.
//! Every test uses its own stream and subject prefix and deletes its stream at the end.

use crate::common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fraiseql::nats::{
    ChangeOp, Delivery, EventBus, EventConsumer, NatsConfig, NatsError, OutgoingEvent,
};
use tokio_util::sync::CancellationToken;

use common::nats::{PrivateServer, SHARED_URL, ServerAuth, connect, test_config, with_stream};

fn event(entity: &str, op: ChangeOp, i: usize) -> OutgoingEvent {
    OutgoingEvent {
        entity: entity.to_string(),
        op,
        msg_id: format!("evt-{i}"),
        payload: Bytes::from(format!("{{\"i\":{i}}}")),
    }
}

/// Fetches until `n` deliveries arrived or `limit` elapsed.
async fn fetch_n(consumer: &EventConsumer, n: usize, limit: Duration) -> Vec<Delivery> {
    let start = Instant::now();
    let mut out = Vec::new();
    while out.len() < n && start.elapsed() < limit {
        match consumer
            .fetch(n - out.len(), Duration::from_millis(500))
            .await
        {
            Ok(batch) => out.extend(batch),
            Err(err) => panic!("fetch failed: {err}"),
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn round_trip_100_events_in_order() {
    with_stream(test_config(SHARED_URL), |config| async move {
        let bus = connect(&config).await;
        let token = CancellationToken::new();
        let ops = [ChangeOp::Insert, ChangeOp::Update, ChangeOp::Delete];
        let items: Vec<OutgoingEvent> = (0..100)
            .map(|i| {
                let entity = if i % 2 == 0 { "post" } else { "Comment" };
                event(entity, ops[i % 3], i)
            })
            .collect();
        let outcomes = bus
            .publish_batch(items.clone(), &token)
            .await
            .expect("publish");
        assert_eq!(outcomes.len(), 100);
        assert!(outcomes.iter().all(|o| !o.duplicate));

        let consumer = bus.consumer().await.expect("consumer");
        // Available messages come back at once, not after `wait`.
        let started = Instant::now();
        let mut got = consumer
            .fetch(100, Duration::from_secs(5))
            .await
            .expect("fetch");
        assert!(!got.is_empty());
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        let rest = fetch_n(&consumer, 100 - got.len(), Duration::from_secs(10)).await;
        got.extend(rest);
        assert_eq!(got.len(), 100);
        for (d, item) in got.iter().zip(&items) {
            assert_eq!(
                d.subject,
                format!("{}.{}.{}", config.subject_prefix, item.entity, item.op)
            );
            assert_eq!(d.entity, item.entity);
            assert_eq!(d.op, item.op);
            assert_eq!(d.msg_id.as_deref(), Some(item.msg_id.as_str()));
            assert_eq!(d.payload, item.payload);
            assert!(!d.redelivered());
        }
        for d in &got {
            d.ack().await.expect("ack");
        }
        // Nothing left: fetch waits about `wait`, then returns empty.
        let started = Instant::now();
        let again = consumer
            .fetch(100, Duration::from_millis(700))
            .await
            .expect("fetch");
        assert!(again.is_empty(), "redelivered after ack: {again:?}");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(600) && waited < Duration::from_millis(2500),
            "{waited:?}"
        );
    })
    .await;
}

/// Host names are resolved by fraiseql (`fraiseql::net`), not by async-nats through libc:
/// `nats.localhost` is loopback there (RFC 6761) and unknown to libc here (`files dns`), as
/// every name is in the `FROM scratch` image.
#[tokio::test]
async fn connects_by_a_name_only_the_built_in_resolver_knows() {
    with_stream(test_config(SHARED_URL), |config| async move {
        let by_name = NatsConfig {
            url: "nats://nats.localhost:4222".into(),
            ..config.clone()
        };
        let bus = connect(&by_name).await;
        let token = CancellationToken::new();
        let outcomes = bus
            .publish_batch(vec![event("post", ChangeOp::Insert, 1)], &token)
            .await
            .expect("publish");
        assert_eq!(outcomes.len(), 1);
        assert_eq!(bus.stream_state().await.unwrap().messages, 1);
    })
    .await;
}

/// fraiseql hands async-nats resolved addresses; TLS must still be checked against the name
/// in the URL: a certificate for `localhost` only is accepted at `tls://localhost` and refused
/// at `tls://127.0.0.1`, and one for another name is refused at `tls://localhost`.
#[tokio::test]
async fn tls_by_name_is_verified_against_the_name_not_the_address() {
    let (dir, ca, cert, key) = common::observers::make_certs_for("DNS:localhost");
    let (other_dir, _, other_cert, other_key) =
        common::observers::make_certs_for("DNS:other.example");
    // The NATS client trusts the platform's roots, which SSL_CERT_FILE replaces; one test per
    // process (nextest), set before any client loaded them. Both throwaway CAs are in the file.
    let bundle = dir.join("bundle.pem");
    let ca_pems = [
        std::fs::read_to_string(&ca).unwrap(),
        std::fs::read_to_string(other_dir.join("ca.pem")).unwrap(),
    ];
    std::fs::write(&bundle, ca_pems.concat()).unwrap();
    // SAFETY: no other thread of this process reads the environment at this point.
    unsafe { std::env::set_var("SSL_CERT_FILE", &bundle) };
    let settings = fraiseql::nats::ClientSettings {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(2),
        attempt_timeout: Duration::from_secs(5),
        retry_min: Duration::from_millis(50),
        retry_max: Duration::from_millis(500),
    };
    let server = PrivateServer::started_with_tls(&cert, &key);
    let client =
        fraiseql::nats::connect_client(&format!("tls://localhost:{}", server.port()), &settings)
            .await
            .expect("TLS to localhost with a certificate for localhost");
    client.flush().await.expect("flush over TLS");
    drop(client);
    // Every attempt is refused, and for the certificate. `localhost` is 127.0.0.1 and ::1,
    // where the server does not listen: async-nats tries the two in random order and
    // reports the last failure, so a few attempts show the certificate's.
    let refused = move |url: String, why: &'static str| async move {
        let mut errors = Vec::new();
        for _ in 0..20 {
            match fraiseql::nats::connect_client(&url, &settings).await {
                Ok(_) => panic!("{url} accepted: {why}"),
                Err(NatsError::Connect(m)) if m.contains("certificate") => return,
                Err(err @ NatsError::Connect(_)) => errors.push(err.to_string()),
                Err(err) => panic!("{url}: {err}"),
            }
        }
        panic!("{url}: never refused for the certificate ({why}): {errors:?}");
    };
    refused(
        format!("tls://127.0.0.1:{}", server.port()),
        "a certificate for localhost does not fit 127.0.0.1",
    )
    .await;
    let other = PrivateServer::started_with_tls(&other_cert, &other_key);
    refused(
        format!("tls://localhost:{}", other.port()),
        "a certificate for other.example does not fit localhost",
    )
    .await;
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_dir_all(other_dir);
}

#[tokio::test]
async fn duplicate_message_id_is_suppressed() {
    with_stream(test_config(SHARED_URL), |config| async move {
        let bus = connect(&config).await;
        let first = bus
            .publish(
                "post",
                ChangeOp::Insert,
                "same-id",
                Bytes::from_static(b"a"),
            )
            .await
            .expect("publish");
        let second = bus
            .publish(
                "post",
                ChangeOp::Insert,
                "same-id",
                Bytes::from_static(b"b"),
            )
            .await
            .expect("publish");
        assert!(!first.duplicate);
        assert!(second.duplicate);
        assert_eq!(first.seq, second.seq);

        let consumer = bus.consumer().await.expect("consumer");
        let got = consumer
            .fetch(10, Duration::from_millis(700))
            .await
            .expect("fetch");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].payload, Bytes::from_static(b"a"));
        got[0].ack().await.expect("ack");
        assert_eq!(bus.stream_state().await.expect("state").messages, 1);
    })
    .await;
}

#[tokio::test]
async fn two_consumers_share_the_durable() {
    let mut config = test_config(SHARED_URL);
    config.ack_wait_ms = 300_000;
    with_stream(config, |config| async move {
        let bus = connect(&config).await;
        let token = CancellationToken::new();
        let items: Vec<OutgoingEvent> = (0..1000)
            .map(|i| event("post", ChangeOp::Insert, i))
            .collect();
        bus.publish_batch(items, &token).await.expect("publish");

        let mut tasks = Vec::new();
        for _ in 0..2 {
            // Separate connections, as two instances would have.
            let bus = connect(&config).await;
            tasks.push(tokio::spawn(async move {
                let consumer = bus.consumer().await.expect("consumer");
                let mut ids = Vec::new();
                let mut empty = 0;
                while empty < 3 {
                    let batch = consumer
                        .fetch(50, Duration::from_millis(500))
                        .await
                        .expect("fetch");
                    if batch.is_empty() {
                        empty += 1;
                    }
                    for d in batch {
                        d.ack().await.expect("ack");
                        ids.push(d.msg_id.clone().expect("msg id"));
                        // Let the other instance get a turn.
                        tokio::task::yield_now().await;
                    }
                }
                ids
            }));
        }
        let mut sets = Vec::new();
        for task in tasks {
            sets.push(task.await.expect("consumer task"));
        }
        let a: HashSet<&String> = sets[0].iter().collect();
        let b: HashSet<&String> = sets[1].iter().collect();
        eprintln!("consumer A got {}, consumer B got {}", a.len(), b.len());
        assert_eq!(a.len(), sets[0].len(), "A saw duplicates");
        assert_eq!(b.len(), sets[1].len(), "B saw duplicates");
        assert!(a.is_disjoint(&b), "both consumers got the same message");
        assert_eq!(a.len() + b.len(), 1000);
        assert!(
            !a.is_empty() && !b.is_empty(),
            "one consumer did all the work"
        );
    })
    .await;
}

#[tokio::test]
async fn unacked_message_is_redelivered_after_ack_wait() {
    let mut config = test_config(SHARED_URL);
    config.ack_wait_ms = 500;
    with_stream(config, |config| async move {
        let bus = connect(&config).await;
        bus.publish("post", ChangeOp::Update, "m1", Bytes::from_static(b"x"))
            .await
            .expect("publish");
        let consumer = bus.consumer().await.expect("consumer");
        let first = consumer
            .fetch(1, Duration::from_secs(2))
            .await
            .expect("fetch");
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].num_delivered, 1);
        // Not acked: nothing until ack_wait passes.
        let early = Instant::now();
        let second = fetch_n(&consumer, 1, Duration::from_secs(5)).await;
        assert_eq!(second.len(), 1);
        assert!(
            early.elapsed() >= Duration::from_millis(300),
            "redelivered too early"
        );
        assert!(second[0].redelivered());
        // 2, or more if a pull request expired client-side under load after the server had
        // already handed it the message (that delivery then also waits for ack_wait).
        assert!(second[0].num_delivered >= 2);
        assert_eq!(second[0].msg_id.as_deref(), Some("m1"));
        second[0].ack().await.expect("ack");
        let none = consumer
            .fetch(1, Duration::from_millis(1200))
            .await
            .expect("fetch");
        assert!(none.is_empty());
    })
    .await;
}

#[tokio::test]
async fn nak_redelivers_and_in_progress_is_confirmed() {
    with_stream(test_config(SHARED_URL), |config| async move {
        let bus = connect(&config).await;
        bus.publish("post", ChangeOp::Delete, "n1", Bytes::from_static(b"x"))
            .await
            .expect("publish");
        let consumer = bus.consumer().await.expect("consumer");
        let first = fetch_n(&consumer, 1, Duration::from_secs(5)).await;
        assert_eq!(first.len(), 1);
        first[0].in_progress().await.expect("in_progress");
        first[0].nak(None).await.expect("nak");
        let second = fetch_n(&consumer, 1, Duration::from_secs(5)).await;
        assert_eq!(second.len(), 1);
        assert!(second[0].redelivered());
        assert_eq!(second[0].op, ChangeOp::Delete);
        second[0].ack().await.expect("ack");
    })
    .await;
}

#[tokio::test]
async fn existing_stream_with_other_subjects_is_an_error() {
    let config = test_config(SHARED_URL);
    let client = async_nats::connect("127.0.0.1:4222")
        .await
        .expect("connect");
    let js = async_nats::jetstream::new(client);
    js.create_stream(async_nats::jetstream::stream::Config {
        name: config.stream.clone(),
        subjects: vec![format!("{}.other.>", config.subject_prefix)],
        ..Default::default()
    })
    .await
    .expect("create foreign stream");
    with_stream(config, |config| async move {
        let token = CancellationToken::new();
        let err = EventBus::connect(&config, &token)
            .await
            .expect_err("must not accept the stream");
        assert!(matches!(err, NatsError::StreamMismatch { .. }), "{err:?}");
        assert!(!err.is_transient());
        assert!(err.to_string().contains(&config.stream), "{err}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restarted_mid_stream_loses_nothing() {
    const TOTAL: usize = 5000;
    const BATCH: usize = 100;
    let mut server = PrivateServer::started();
    let mut config = test_config(&server.url());
    config.ack_wait_ms = 5_000;
    config.request_timeout_ms = 1_000;
    let bus = connect(&config).await;
    let consumer = bus.consumer().await.expect("consumer");
    let shutdown = CancellationToken::new();
    let published_batches = Arc::new(AtomicUsize::new(0));

    let publisher = {
        let bus = bus.clone();
        let shutdown = shutdown.clone();
        let published_batches = published_batches.clone();
        tokio::spawn(async move {
            let mut duplicates = 0usize;
            for start in (0..TOTAL).step_by(BATCH) {
                let items: Vec<OutgoingEvent> = (start..start + BATCH)
                    .map(|i| event("post", ChangeOp::Insert, i))
                    .collect();
                let outcomes = bus
                    .publish_batch(items, &shutdown)
                    .await
                    .expect("publish_batch");
                assert_eq!(outcomes.len(), BATCH);
                duplicates += outcomes.iter().filter(|o| o.duplicate).count();
                published_batches.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            duplicates
        })
    };

    let seen = Arc::new(tokio::sync::Mutex::new(HashMap::<String, u64>::new()));
    let redeliveries = Arc::new(AtomicU64::new(0));
    let fetch_errors = Arc::new(AtomicU64::new(0));
    let ack_errors = Arc::new(AtomicU64::new(0));
    let consumer_task = {
        let seen = seen.clone();
        let redeliveries = redeliveries.clone();
        let fetch_errors = fetch_errors.clone();
        let ack_errors = ack_errors.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                match consumer.fetch(256, Duration::from_millis(500)).await {
                    Ok(batch) => {
                        for d in batch {
                            if d.redelivered() {
                                redeliveries.fetch_add(1, Ordering::Relaxed);
                            }
                            let id = d.msg_id.clone().expect("msg id");
                            *seen.lock().await.entry(id).or_insert(0) += 1;
                            if d.ack().await.is_err() {
                                ack_errors.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    Err(err) => {
                        assert!(err.is_transient(), "fetch: {err}");
                        fetch_errors.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        })
    };

    let start = Instant::now();
    let mut at_kill = Vec::new();
    // First restart: down longer than the request timeout, so in-flight PubAcks time out
    // and publish_batch has to re-publish. Second: an immediate restart.
    for (wait, downtime) in [
        (Duration::from_millis(400), Duration::from_millis(1500)),
        (Duration::from_millis(600), Duration::ZERO),
    ] {
        tokio::time::sleep(wait).await;
        at_kill.push(published_batches.load(Ordering::SeqCst));
        if downtime.is_zero() {
            tokio::task::block_in_place(|| server.restart());
        } else {
            server.kill();
            tokio::time::sleep(downtime).await;
            tokio::task::block_in_place(|| server.start());
        }
    }
    let duplicates = tokio::time::timeout(Duration::from_secs(120), publisher)
        .await
        .expect("publisher finished in time")
        .expect("publisher task");
    eprintln!(
        "batches published when killed: {at_kill:?} of {}; publishing took {:?}",
        TOTAL / BATCH,
        start.elapsed()
    );
    assert!(
        at_kill.iter().all(|&n| n > 0 && n < TOTAL / BATCH),
        "kills were not mid-run: {at_kill:?}"
    );

    // Wait for the consumer to see every id.
    let wait_start = Instant::now();
    loop {
        let n = seen.lock().await.len();
        if n == TOTAL || wait_start.elapsed() > Duration::from_secs(60) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shutdown.cancel();
    consumer_task.await.expect("consumer task");

    let seen = seen.lock().await;
    let missing: Vec<usize> = (0..TOTAL)
        .filter(|i| !seen.contains_key(&format!("evt-{i}")))
        .collect();
    let state = bus.stream_state().await.expect("stream state");
    eprintln!(
        "re-published events: {}, duplicates acked on re-publish: {duplicates}, \
         redeliveries seen: {}, consumed more than once: {}, fetch errors: {}, ack errors: {}, \
         stream messages: {}",
        bus.republished_total(),
        redeliveries.load(Ordering::Relaxed),
        seen.values().filter(|&&c| c > 1).count(),
        fetch_errors.load(Ordering::Relaxed),
        ack_errors.load(Ordering::Relaxed),
        state.messages
    );
    assert!(
        missing.is_empty(),
        "lost {} events, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert_eq!(state.messages, TOTAL as u64);
    assert_eq!(state.last_seq, TOTAL as u64, "a duplicate was stored");
}

#[tokio::test]
async fn connect_waits_for_the_server_and_honours_cancellation() {
    let mut server = PrivateServer::new();
    let config = test_config(&server.url());

    // Cancellation ends the wait with an error.
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        cancel.cancel();
    });
    let started = Instant::now();
    let result = EventBus::connect(&config, &token).await;
    assert!(matches!(result, Err(NatsError::Cancelled)), "{result:?}");
    assert!(started.elapsed() < Duration::from_secs(3));

    // Waits while the server is down, succeeds once it is up.
    let token = CancellationToken::new();
    let connecting = {
        let config = config.clone();
        tokio::spawn(async move { EventBus::connect(&config, &token).await })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !connecting.is_finished(),
        "connect returned while NATS was down"
    );
    server.start();
    let bus = tokio::time::timeout(Duration::from_secs(15), connecting)
        .await
        .expect("connected after start")
        .expect("task")
        .expect("connect");
    bus.publish("post", ChangeOp::Insert, "x", Bytes::from_static(b"{}"))
        .await
        .expect("publish after connect");
}

#[tokio::test]
async fn operations_fail_instead_of_hanging_while_disconnected() {
    let mut server = PrivateServer::started();
    let config = test_config(&server.url());
    let bus = connect(&config).await;
    let consumer = bus.consumer().await.expect("consumer");
    server.kill();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let publish = bus
        .publish("post", ChangeOp::Insert, "y", Bytes::from_static(b"{}"))
        .await;
    assert!(
        publish.as_ref().is_err_and(NatsError::is_transient),
        "{publish:?}"
    );
    let fetched = consumer.fetch(10, Duration::from_millis(200)).await;
    assert!(
        fetched.as_ref().is_err_and(NatsError::is_transient),
        "{fetched:?}"
    );
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        cancel.cancel();
    });
    let batch = bus
        .publish_batch(vec![event("post", ChangeOp::Insert, 1)], &token)
        .await;
    assert!(matches!(batch, Err(NatsError::Cancelled)), "{batch:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn existing_push_consumer_of_the_durable_name_is_an_error() {
    with_stream(test_config(SHARED_URL), |config| async move {
        let bus = connect(&config).await;
        let client = async_nats::connect("127.0.0.1:4222")
            .await
            .expect("connect");
        let js = async_nats::jetstream::new(client);
        js.create_consumer_on_stream(
            async_nats::jetstream::consumer::push::Config {
                durable_name: Some(config.durable.clone()),
                deliver_subject: format!("{}-deliver", config.subject_prefix),
                ..Default::default()
            },
            &config.stream,
        )
        .await
        .expect("create a push consumer");
        let err = bus
            .consumer()
            .await
            .expect_err("must not use a push consumer");
        eprintln!("push consumer refused: {err}");
        assert!(matches!(err, NatsError::ConsumerMismatch { .. }), "{err:?}");
        assert!(!err.is_transient());
        assert!(err.to_string().contains(&config.durable), "{err}");
    })
    .await;
}

/// Why [`Delivery::ack`] sends its own request instead of async-nats's `double_ack`: an ack
/// that reaches no consumer (deleted, or not loaded yet after a restart) is answered by a
/// `503 no responders` status, which `double_ack` takes for a confirmation.
#[tokio::test]
async fn an_ack_that_reaches_no_consumer_is_an_error() {
    with_stream(test_config(SHARED_URL), |config| async move {
        let bus = connect(&config).await;
        for i in 0..2 {
            bus.publish(
                "post",
                ChangeOp::Insert,
                &format!("ack-{i}"),
                Bytes::from_static(b"{}"),
            )
            .await
            .expect("publish");
        }
        let consumer = bus.consumer().await.expect("consumer");
        let ours = fetch_n(&consumer, 1, Duration::from_secs(5)).await;
        assert_eq!(ours.len(), 1);

        let client = async_nats::connect("127.0.0.1:4222")
            .await
            .expect("connect");
        let js = async_nats::jetstream::new(client);
        let theirs: async_nats::jetstream::consumer::PullConsumer = js
            .create_consumer_on_stream(
                async_nats::jetstream::consumer::pull::Config {
                    durable_name: Some(format!("{}-lib", config.durable)),
                    ..Default::default()
                },
                &config.stream,
            )
            .await
            .expect("library consumer");
        let mut batch = theirs
            .fetch()
            .max_messages(1)
            .messages()
            .await
            .expect("fetch");
        let library_message = futures_util::StreamExt::next(&mut batch)
            .await
            .expect("a message")
            .expect("ok");

        let stream = js.get_stream(&config.stream).await.expect("stream");
        stream
            .delete_consumer(&config.durable)
            .await
            .expect("delete ours");
        stream
            .delete_consumer(&format!("{}-lib", config.durable))
            .await
            .expect("delete theirs");

        let err = ours[0].ack().await.expect_err("an ack nobody received");
        assert!(matches!(err, NatsError::NoResponders(_)), "{err:?}");
        assert!(err.is_transient());
        // async-nats 0.51: the 503 status counts as the server's confirmation.
        let library = library_message.double_ack().await;
        eprintln!("async-nats double_ack to a deleted consumer: {library:?}");
        assert!(
            library.is_ok(),
            "double_ack now reports a lost ack ({library:?}): Delivery::ack could use it"
        );
    })
    .await;
}

/// Publishes and consumes 20,000 events (batches of 256, each acknowledged with
/// confirmation) and prints the rates. A measurement, run by hand:
/// `cargo test --test it -- --ignored nats::fetch_and_ack_rate --nocapture`.
#[tokio::test]
#[ignore = "a measurement, run by hand"]
async fn fetch_and_ack_rate() {
    const TOTAL: usize = 20_000;
    with_stream(test_config(SHARED_URL), |config| async move {
        let bus = connect(&config).await;
        let token = CancellationToken::new();
        let items: Vec<OutgoingEvent> = (0..TOTAL)
            .map(|i| event("post", ChangeOp::Insert, i))
            .collect();
        bus.publish_batch(items, &token).await.expect("publish");
        let consumer = bus.consumer().await.expect("consumer");
        let started = Instant::now();
        let mut fetched = 0;
        let mut fetch_time = Duration::ZERO;
        while fetched < TOTAL {
            let t = Instant::now();
            let batch = consumer
                .fetch(256, Duration::from_millis(500))
                .await
                .expect("fetch");
            fetch_time += t.elapsed();
            fetched += batch.len();
            let acks = batch.iter().map(|d| d.ack());
            for r in futures_util::future::join_all(acks).await {
                r.expect("ack");
            }
        }
        let total = started.elapsed();
        eprintln!(
            "fetched and acked {fetched} in {total:?} ({:.0}/s); fetching alone {fetch_time:?} ({:.0}/s)",
            fetched as f64 / total.as_secs_f64(),
            fetched as f64 / fetch_time.as_secs_f64()
        );
    })
    .await;
}

/// Connects the transport with the credentials in the URL's user info and publishes once;
/// the same URL with a wrong secret is refused as an authentication error that does not
/// quote the secret.
async fn transport_connects_with_url_credentials(auth: ServerAuth, wrong: ServerAuth) {
    let server = PrivateServer::started_with_auth(auth);
    let config = test_config(&server.url_with_credentials());
    let bus = connect(&config).await;
    let outcome = bus
        .publish(
            "post",
            ChangeOp::Insert,
            "cred-1",
            Bytes::from_static(b"{}"),
        )
        .await
        .expect("publish with URL credentials");
    assert_eq!(outcome.seq, 1);
    bus.close().await;

    let refused = test_config(&server.url().replacen(
        "nats://",
        &format!("nats://{}", wrong.userinfo()),
        1,
    ));
    let token = CancellationToken::new();
    let err = tokio::time::timeout(Duration::from_secs(10), EventBus::connect(&refused, &token))
        .await
        .expect("refused connect returns")
        .expect_err("wrong credentials");
    assert!(matches!(err, NatsError::Auth(_)), "{err}");
    let secret = wrong.userinfo();
    let secret = secret
        .trim_end_matches('@')
        .rsplit(':')
        .next()
        .unwrap_or_default();
    assert!(
        !err.to_string().contains(secret),
        "secret in the error: {err}"
    );
}

#[tokio::test]
async fn transport_connects_with_user_and_password_in_the_url() {
    transport_connects_with_url_credentials(
        ServerAuth::UserPassword("fql".into(), "pw-s3cret".into()),
        ServerAuth::UserPassword("fql".into(), "pw-wrong".into()),
    )
    .await;
}

#[tokio::test]
async fn transport_connects_with_a_token_in_the_url() {
    transport_connects_with_url_credentials(
        ServerAuth::Token("tok-s3cret".into()),
        ServerAuth::Token("tok-wrong".into()),
    )
    .await;
}

#[test]
fn config_validation_names_the_key() {
    assert!(NatsConfig::default().validate().is_ok());
    let bad_prefix = |p: &str| NatsConfig {
        subject_prefix: p.to_string(),
        ..NatsConfig::default()
    };
    for p in ["fraiseql.>", "a b", "a..b", "a.*.b", "", ".a", "$JS.x"] {
        let err = bad_prefix(p).validate().expect_err(p);
        assert_eq!(err.key, "nats.subject_prefix", "{p}");
    }
    let bad_url = |u: &str| NatsConfig {
        url: u.to_string(),
        ..NatsConfig::default()
    };
    for u in [
        "http://127.0.0.1:4222",
        "ws://127.0.0.1:4222",
        "127.0.0.1:4222",
        "nats://",
        "nats://a,",
    ] {
        let err = bad_url(u).validate().expect_err(u);
        assert_eq!(err.key, "nats.url", "{u}");
    }
    let err = bad_url("http://user:hunter2@h:1")
        .validate()
        .expect_err("url");
    assert!(!err.to_string().contains("hunter2"));
    assert!(bad_url("nats://u:p@a:4222,tls://b:4222").validate().is_ok());
    let err = NatsConfig {
        stream: "A.B".into(),
        ..NatsConfig::default()
    }
    .validate()
    .expect_err("stream");
    assert_eq!(err.key, "nats.stream");
    let err = NatsConfig {
        ack_wait_ms: 0,
        ..NatsConfig::default()
    }
    .validate()
    .expect_err("ack wait");
    assert_eq!(err.key, "nats.ack_wait_ms");
    let err = NatsConfig {
        max_deliver: 0,
        ..NatsConfig::default()
    }
    .validate()
    .expect_err("max deliver");
    assert_eq!(err.key, "nats.max_deliver");
    let parsed: Result<NatsConfig, _> = serde_json::from_str(r#"{"urll": "nats://x"}"#);
    assert!(parsed.is_err(), "unknown keys are rejected");
}
