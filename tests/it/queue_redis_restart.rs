//! Redis killed (-9) and restarted mid-run: producers and workers wait and carry on, and no
//! acknowledged enqueue is lost. Runs its own redis-server on a free port with
//! `--appendonly yes --appendfsync always` in a temporary directory (the machine's Redis keeps
//! nothing on disk and is not touched).

use crate::common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fraiseql::queue::Outcome;
use fraiseql::queue::pump::{self, PumpConfig};
use fraiseql::queue::redis::RedisQueue;
use fraiseql::queue::{Enqueued, Queue};
use tokio_util::sync::CancellationToken;

use common::redis::{RedisServer, job};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_enqueue_is_lost_when_redis_restarts() {
    let mut server = RedisServer::start();
    let mut cfg = common::redis::config(&server.url(), "restart");
    cfg.visibility_timeout_ms = 3_000;
    cfg.retry_min_delay_ms = 20;
    cfg.retry_max_delay_ms = 300;
    cfg.response_timeout_ms = 2_000;
    let queue = Arc::new(RedisQueue::connect(&cfg).await.unwrap());

    // Producer: one awaited enqueue at a time; remember every key whose enqueue said Ok.
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let producer = {
        let queue = queue.clone();
        let acknowledged = acknowledged.clone();
        tokio::spawn(async move {
            let t = Instant::now();
            let mut pk = 0;
            while t.elapsed() < Duration::from_secs(4) {
                let j = job(pk);
                let r = queue
                    .enqueue(j.clone())
                    .await
                    .expect("enqueue waits, never fails");
                assert_eq!(r, Enqueued::Added);
                acknowledged.lock().unwrap().push(j.key);
                pk += 1;
            }
        })
    };

    // Consumer: a worker loop running through the restarts.
    let done = Arc::new(Mutex::new(HashSet::<String>::new()));
    let executions = Arc::new(Mutex::new(0u64));
    let shutdown = CancellationToken::new();
    let consumer = {
        let done = done.clone();
        let executions = executions.clone();
        tokio::spawn(pump::run(
            queue.clone(),
            PumpConfig {
                concurrency: 10,
                batch: 10,
                grace: Duration::from_secs(5),
            },
            move |job| {
                let done = done.clone();
                let executions = executions.clone();
                async move {
                    *executions.lock().unwrap() += 1;
                    done.lock().unwrap().insert(job.key);
                    Outcome::Ack
                }
            },
            shutdown.clone(),
        ))
    };

    // Two kill -9 / restart cycles while both run.
    let mut restarts = 0;
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(800)).await;
        let before = acknowledged.lock().unwrap().len();
        server.kill9();
        tokio::time::sleep(Duration::from_millis(400)).await;
        let during = acknowledged.lock().unwrap().len();
        server.spawn();
        restarts += 1;
        println!("restart {restarts}: acknowledged before kill {before}, while down {during}");
    }
    producer.await.unwrap();
    let acked: Vec<String> = acknowledged.lock().unwrap().clone();

    // Everything acknowledged must be executed (reclaims after the visibility timeout
    // included).
    let t = Instant::now();
    loop {
        let missing = acked
            .iter()
            .filter(|k| !done.lock().unwrap().contains(*k))
            .count();
        if missing == 0 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "{missing} acknowledged enqueues were never executed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shutdown.cancel();
    let stats = consumer.await.unwrap().unwrap();
    let depth = queue.depth().await.unwrap();
    let executed = *executions.lock().unwrap();
    let distinct = done.lock().unwrap().len() as u64;
    println!(
        "redis restart: restarts = {restarts}, acknowledged enqueues = {}, executed = {executed} \
         (distinct {}), lost = 0, re-executions = {}, depth after = {depth}, stats = {stats:?}",
        acked.len(),
        distinct,
        executed - distinct,
    );
    let retried: u64 = ["enqueue", "reserve"]
        .iter()
        .map(|op| {
            queue
                .metrics()
                .backend_retries
                .with_label_values(&[*op])
                .get()
        })
        .sum();
    println!("redis calls retried while Redis was down: {retried}");
    assert!(retried > 0, "the restarts were seen (and waited out)");
    assert!(acked.len() > 100, "the producer made progress");
    assert_eq!(depth, 0);
}
