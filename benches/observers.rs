//! Observer throughput and latency, commit → webhook delivered, against a local receiver,
//! once with the in-process queue and once with the Redis queue (the machine's Redis, a key
//! prefix of its own, deleted afterwards; jobs executed by the same batching pump as
//! `fraiseql worker`).
//!
//! `cargo bench --bench observers -- [THROUGHPUT_CHANGES] [RATE_PER_S] [SECONDS]` (`make bench`)
//! 1. throughput: THROUGHPUT_CHANGES (default 20,000) changes committed as fast as four
//!    writers can (100 rows per statement); changes/s from the first commit to the last
//!    delivery;
//! 2. latency: RATE_PER_S (default 1,000) single-row commits per second for SECONDS
//!    (default 5); p50/p99 of delivery time − the change's `occurred_at`.

#[path = "../tests/it/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use chrono::Utc;
use common::TestDb;
use common::observers::*;

const CONFIG: &str = r#"
[observer_runtime]
concurrency = 32
batch_size = 1000
poll_interval_ms = 500
checkpoint_interval_ms = 100
start_from = "beginning"
queue_capacity = 10000

[[observers]]
name = "bench"
entity = "Post"
[[observers.actions]]
type = "webhook"
url = "URL"
"#;

fn pct(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    // `cargo bench` passes `--bench`; only positional arguments are ours.
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with("--"));
    let n: usize = args.next().map(|a| a.parse().unwrap()).unwrap_or(20_000);
    let rate: usize = args.next().map(|a| a.parse().unwrap()).unwrap_or(1_000);
    let secs: usize = args.next().map(|a| a.parse().unwrap()).unwrap_or(5);
    println!("-- in-process queue");
    run(n, rate, secs, None).await;
    let cleanup = common::redis::Cleanup::new(common::redis::REDIS_URL);
    let queue = std::sync::Arc::new(common::redis::queue(&cleanup).await);
    println!("-- Redis queue");
    run(n, rate, secs, Some(queue)).await;
}

async fn run(
    n: usize,
    rate: usize,
    secs: usize,
    redis: Option<std::sync::Arc<fraiseql::queue::redis::RedisQueue>>,
) {
    let db = TestDb::new().await;
    db.create_posts().await;
    // Receiver timestamps are Instants; anchor them to wall-clock time.
    let anchor = (Instant::now(), Utc::now());
    let rx = HttpReceiver::start_ok().await;
    let running = start_with(&db, &CONFIG.replace("URL", &rx.url("/hook")), &[], redis);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // 1. Throughput.
    let t0 = Instant::now();
    let mut writers = Vec::new();
    for w in 0..4 {
        let pool = db.pool().clone();
        let per = n / 4;
        writers.push(tokio::spawn(async move {
            let c = pool.get().await.unwrap();
            for b in 0..per / 100 {
                c.execute(
                    "INSERT INTO tb_post (title, published) SELECT $1 || g, true FROM generate_series(1, 100) g",
                    &[&format!("w{w}b{b}-")],
                )
                .await
                .unwrap();
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let committed = t0.elapsed();
    let got = rx.wait_for(n, Duration::from_secs(600)).await;
    let last = got.iter().map(|r| r.at).max().unwrap();
    let total = last.duration_since(t0);
    println!(
        "throughput: {n} changes committed in {:.2} s; all delivered {:.2} s after the first commit → {:.0} changes/s",
        committed.as_secs_f64(),
        total.as_secs_f64(),
        n as f64 / total.as_secs_f64()
    );

    // 2. Latency at a fixed rate.
    let before = rx.requests().len();
    let m = rate * secs;
    let start = Instant::now();
    let mut writers = Vec::new();
    for w in 0..4usize {
        let pool = db.pool().clone();
        writers.push(tokio::spawn(async move {
            let c = pool.get().await.unwrap();
            let mut i = w;
            while i < m {
                let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
                tokio::time::sleep_until(due.into()).await;
                c.execute(
                    "INSERT INTO tb_post (title) VALUES ($1)",
                    &[&format!("l{i}")],
                )
                .await
                .unwrap();
                i += 4;
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let got = rx.wait_for(before + m, Duration::from_secs(600)).await;
    let mut lat: Vec<f64> = got[before..]
        .iter()
        .map(|r| {
            let body = r.json();
            let occurred = chrono::DateTime::parse_from_rfc3339(
                body["event"]["occurred_at"].as_str().unwrap(),
            )
            .unwrap();
            let delivered =
                anchor.1 + chrono::Duration::from_std(r.at.duration_since(anchor.0)).unwrap();
            (delivered - occurred.with_timezone(&Utc))
                .num_microseconds()
                .unwrap() as f64
                / 1000.0
        })
        .collect();
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "latency at {rate} changes/s for {secs} s ({m} changes): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        lat.last().unwrap()
    );
    running.stop().await;
}
