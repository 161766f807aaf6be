//! Queue benchmark (run in release; `bench/queue_bench.sh` runs it beside BullMQ):
//! enqueue N no-op jobs, then process N no-op jobs with the batching worker loop at each
//! concurrency. Prints one JSON line: `{"enqueue": jobs/s, "c10": jobs/s, "c50": jobs/s, ...}`.
//!
//! Usage: `queue_bench [redis url] [jobs] [concurrency,...]`
//! (defaults: redis://127.0.0.1:6379, 100000, 10,50). Uses its own key prefix and deletes
//! its keys at the end.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fraiseql::queue::Job;
use fraiseql::queue::Outcome;
use fraiseql::queue::config::{QueueBackend, QueueConfig};
use fraiseql::queue::pump::{self, PumpConfig};
use fraiseql::queue::redis::RedisQueue;
use tokio_util::sync::CancellationToken;

fn jobs(n: usize, round: usize) -> Vec<Job> {
    (0..n)
        .map(|i| {
            Job::new(
                (round * n + i) as i64,
                "bench",
                0,
                "noop",
                serde_json::json!({ "i": i }),
            )
        })
        .collect()
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let url = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "redis://127.0.0.1:6379".into());
    let n: usize = args.get(2).map(|s| s.parse().unwrap()).unwrap_or(100_000);
    let concurrencies: Vec<usize> = args
        .get(3)
        .map(|s| s.split(',').map(|c| c.parse().unwrap()).collect())
        .unwrap_or_else(|| vec![10, 50]);

    let config = QueueConfig {
        backend: QueueBackend::Redis,
        url,
        key_prefix: format!("fqbench:{}", uuid::Uuid::new_v4().simple()),
        visibility_timeout_ms: 60_000,
        ..Default::default()
    };
    let queue = Arc::new(RedisQueue::connect(&config).await.expect("redis"));
    let mut out = Vec::new();

    // Enqueue: building and encoding the jobs is part of the measured work, as it is for
    // BullMQ's addBulk.
    let t = Instant::now();
    let batch = jobs(n, 0);
    queue.enqueue_many(&batch).await.unwrap();
    let enqueue_rate = n as f64 / t.elapsed().as_secs_f64();
    out.push(format!("\"enqueue\": {enqueue_rate:.0}"));

    for (round, &c) in concurrencies.iter().enumerate() {
        if round > 0 {
            queue.enqueue_many(&jobs(n, round)).await.unwrap();
        }
        let done = Arc::new(AtomicU64::new(0));
        let shutdown = CancellationToken::new();
        let t = Instant::now();
        let handle = {
            let done = done.clone();
            let stop = shutdown.clone();
            let target = n as u64;
            tokio::spawn(pump::run(
                queue.clone(),
                PumpConfig {
                    concurrency: c,
                    batch: c,
                    grace: Duration::from_secs(10),
                },
                move |_job| {
                    let done = done.clone();
                    let stop = stop.clone();
                    async move {
                        if done.fetch_add(1, Ordering::Relaxed) + 1 == target {
                            stop.cancel();
                        }
                        Outcome::Ack
                    }
                },
                shutdown.clone(),
            ))
        };
        let stats = handle.await.unwrap().unwrap();
        // Measured until the last acknowledgement is in Redis (the loop returns after it).
        let rate = n as f64 / t.elapsed().as_secs_f64();
        assert_eq!(stats.acked, n as u64, "{stats:?}");
        eprintln!(
            "concurrency {c}: {rate:.0} jobs/s, {} round trips ({:.1} jobs per round trip)",
            stats.round_trips,
            n as f64 / stats.round_trips as f64
        );
        out.push(format!("\"c{c}\": {rate:.0}"));
    }
    use fraiseql::queue::Queue;
    assert_eq!(queue.depth().await.unwrap(), 0);
    queue.delete_all_keys().await.unwrap();
    println!("{{{}}}", out.join(", "));
}
