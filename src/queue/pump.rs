//! The batching worker loop over a [`BatchQueue`] (the Redis backend): keeps up to
//! `concurrency` jobs running and spends one backend round trip per batch, not per job.
//!
//! Each round trip acknowledges every job that finished since the last one *and* reserves jobs
//! for the slots that freed up, in one call ([`BatchQueue::ack_and_reserve`]); two round
//! trips may be in flight at once, so finished jobs are acknowledged while the previous
//! batch is still on the wire. Slots promised to a round trip in flight count as taken: no
//! more than `concurrency` jobs are ever reserved by this loop. Handlers run
//! as tasks of a `JoinSet`, so their number is bounded by `concurrency` by construction and no
//! channel is needed. Retries and dead letters (rare) go through the trait methods one by one.
//!
//! Heartbeat: every third of the backend's lease ([`BatchQueue::lease`], the visibility
//! timeout) the loop extends the reservations of every job still running, in one call
//! ([`BatchQueue::extend_receipts`]), so an action slower than the visibility timeout stays
//! owned by this worker instead of running on a second one and counting as a reclaim. A
//! finished job leaves the heartbeat at once (its receipt is dropped when its task returns,
//! before its ack is sent), and a worker that dies stops extending: its jobs are reclaimed
//! one visibility timeout later, as before.
//!
//! On shutdown the loop stops reserving, keeps acknowledging until the running jobs finish,
//! and when `grace` runs out aborts the rest and hands their reservations back
//! ([`BatchQueue::release_receipts`]) so another worker takes them at once instead of after
//! the visibility timeout. `fraiseql worker` is this loop plus an action executor as handler.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::futures::Notified;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::{Batch, BatchQueue, Job, Outcome, QueueError, Reservation};

#[derive(Debug, Clone)]
pub struct PumpConfig {
    /// Most jobs running (reserved and not yet finished) at once.
    pub concurrency: usize,
    /// Most jobs reserved in one round trip.
    pub batch: usize,
    /// Time allowed for running jobs to finish after shutdown before they are handed back.
    pub grace: Duration,
}

impl Default for PumpConfig {
    fn default() -> Self {
        PumpConfig {
            concurrency: 10,
            batch: 100,
            grace: Duration::from_secs(10),
        }
    }
}

/// Counts for logs, tests and the benchmark.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PumpStats {
    pub reserved: u64,
    pub acked: u64,
    pub retried: u64,
    pub dead_lettered: u64,
    /// Finished jobs whose reservation had already expired (another worker got them).
    pub lost_reservations: u64,
    /// Jobs handed back at shutdown.
    pub released: u64,
    /// Round trips of the ack-and-reserve call.
    pub round_trips: u64,
    /// Heartbeat calls (extending running jobs' reservations).
    pub heartbeats: u64,
}

/// Round trips in flight at once: while one is on the wire the next batch of finished jobs
/// is already being acknowledged, so throughput is bound by Redis, not by round-trip latency.
const MAX_IN_FLIGHT: usize = 2;

type RoundTrip<'a> = Pin<
    Box<
        dyn Future<
                Output = (
                    Result<Option<Batch>, QueueError>,
                    usize,
                    Vec<String>,
                    Pin<Box<Notified<'a>>>,
                ),
            > + Send
            + 'a,
    >,
>;

/// Waiting for work after an empty round trip: its wake-up registration and its timer.
type Idle<'a> = (Pin<Box<Notified<'a>>>, Pin<Box<tokio::time::Sleep>>);

/// One heartbeat call in flight: the receipts no longer ours (`None`: backend unreachable).
type Beat<'a> = Pin<Box<dyn Future<Output = Result<Option<Vec<String>>, QueueError>> + Send + 'a>>;

/// Shortest heartbeat period, whatever the lease.
const MIN_BEAT: Duration = Duration::from_millis(10);

/// Runs the loop until `shutdown` is cancelled and the running jobs are finished or handed
/// back. `handler` runs one job.
pub async fn run<H, Fut>(
    queue: Arc<dyn BatchQueue>,
    config: PumpConfig,
    handler: H,
    shutdown: CancellationToken,
) -> Result<PumpStats, QueueError>
where
    H: Fn(Job) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let q: &dyn BatchQueue = &*queue;
    let handler = Arc::new(handler);
    let concurrency = config.concurrency.max(1);
    let batch = config.batch.clamp(1, q.max_batch());
    let mut stats = PumpStats::default();
    let mut running: JoinSet<(String, Outcome)> = JoinSet::new();
    // Receipts of the jobs whose handler is still running, by task: what the heartbeat
    // extends (a panicked task is known only by its id).
    let mut leases: HashMap<tokio::task::Id, String> = HashMap::new();
    let period = q.lease().map(|l| (l / 3).max(MIN_BEAT));
    let mut beat_timer = tokio::time::interval(period.unwrap_or(Duration::from_secs(3600)));
    beat_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut beat: Option<Beat<'_>> = None;
    let mut held: HashSet<String> = HashSet::new();
    let mut acks: Vec<String> = Vec::new();
    let mut trips: FuturesUnordered<RoundTrip<'_>> = FuturesUnordered::new();
    // Slots promised to round trips in flight, so that running + promised <= concurrency.
    let mut promised = 0usize;
    let mut drain_deadline: Option<Instant> = None;
    // After a round trip that found no work: the wake-up registered before it was sent (so a
    // publish after the script ran is not lost) and the longest sleep Redis suggested.
    let mut idle: Option<Idle<'_>> = None;

    loop {
        if drain_deadline.is_none() && shutdown.is_cancelled() {
            drain_deadline = Some(Instant::now() + config.grace);
        }
        let draining = drain_deadline.is_some();

        while trips.len() < MAX_IN_FLIGHT {
            let free = concurrency - running.len() - promised;
            let want = if draining || idle.is_some() {
                0
            } else {
                free.min(batch)
            };
            if acks.is_empty() && want == 0 {
                break;
            }
            let mut notified = Box::pin(q.notified());
            notified.as_mut().enable();
            promised += want;
            let sent = std::mem::take(&mut acks);
            trips.push(Box::pin(async move {
                let r = q.ack_and_reserve(&sent, want, None).await;
                (r, want, sent, notified)
            }));
        }

        if draining && running.is_empty() && acks.is_empty() && trips.is_empty() {
            return Ok(stats);
        }

        tokio::select! {
            Some((result, want, sent, notified)) = trips.next(), if !trips.is_empty() => {
                promised -= want;
                let b = result?.expect("no deadline");
                stats.round_trips += 1;
                stats.acked += b.acked.acked as u64;
                stats.lost_reservations += b.acked.unknown.len() as u64;
                for r in &sent {
                    held.remove(r);
                }
                if want > 0 && b.reserved.is_empty() && idle.is_none() {
                    let sleep = Box::pin(tokio::time::sleep(q.idle_sleep(&b)));
                    idle = Some((notified, sleep));
                }
                for Reservation { job, receipt } in b.reserved {
                    stats.reserved += 1;
                    held.insert(receipt.clone());
                    let h = handler.clone();
                    let task = running.spawn({
                        let receipt = receipt.clone();
                        async move { (receipt, h(job).await) }
                    });
                    if leases.is_empty() {
                        // Busy again after idling: the first heartbeat is due one period
                        // after this reservation, not at once for the ticks missed meanwhile.
                        beat_timer.reset();
                    }
                    leases.insert(task.id(), receipt);
                }
            }
            done = running.join_next_with_id(), if !running.is_empty() => {
                match done {
                    Some(Ok((id, (receipt, outcome)))) => {
                        leases.remove(&id);
                        finish(q, &mut stats, &mut acks, &mut held, receipt, outcome).await?;
                        // Let handlers that are ready to finish do so (they were spawned on
                        // this thread's run queue), then collect everything that finished into
                        // the same round trip: a few microseconds for far fewer round trips.
                        tokio::task::yield_now().await;
                        while let Some(res) = running.try_join_next_with_id() {
                            match res {
                                Ok((id, (receipt, outcome))) => {
                                    leases.remove(&id);
                                    finish(q, &mut stats, &mut acks, &mut held, receipt, outcome)
                                        .await?;
                                }
                                Err(e) => {
                                    leases.remove(&e.id());
                                    warn!(error = %e, "pump: a handler panicked; its job will be reclaimed");
                                }
                            }
                        }
                    }
                    Some(Err(e)) => {
                        leases.remove(&e.id());
                        warn!(error = %e, "pump: a handler panicked; its job will be reclaimed");
                    }
                    None => {}
                }
            }
            _ = async {
                match idle.as_mut() {
                    Some((n, s)) => tokio::select! { _ = n.as_mut() => {}, _ = s.as_mut() => {} },
                    None => std::future::pending().await,
                }
            }, if idle.is_some() && !draining => {
                idle = None;
            }
            _ = beat_timer.tick(), if period.is_some() && beat.is_none() && !leases.is_empty() => {
                let receipts: Vec<String> = leases.values().cloned().collect();
                // A heartbeat later than the next one is of no use: give up at the next tick.
                let deadline = Instant::now() + period.unwrap_or(MIN_BEAT);
                beat = Some(Box::pin(async move {
                    q.extend_receipts(&receipts, Some(deadline)).await
                }));
            }
            lost = async {
                match beat.as_mut() {
                    Some(b) => b.as_mut().await,
                    None => std::future::pending().await,
                }
            }, if beat.is_some() => {
                beat = None;
                stats.heartbeats += 1;
                match lost {
                    Ok(Some(lost)) => {
                        // Finished meanwhile (acked), or reclaimed before this heartbeat landed.
                        let still_running: Vec<&String> =
                            lost.iter().filter(|r| leases.values().any(|l| l == *r)).collect();
                        if !still_running.is_empty() {
                            warn!(receipts = ?still_running, "pump: running jobs' reservations expired before the heartbeat (they may run on another worker too)");
                        }
                    }
                    Ok(None) => warn!("pump: the heartbeat did not reach the queue in time"),
                    Err(e) => warn!(error = %e, "pump: extending running jobs' reservations failed"),
                }
            }
            _ = shutdown.cancelled(), if !draining => {}
            _ = tokio::time::sleep_until(drain_deadline.unwrap_or_else(Instant::now)), if draining => {
                // Grace is over: stop the stragglers, let the round trips in flight land (what
                // they reserved is ours too), and give every unfinished job back.
                running.abort_all();
                while running.join_next().await.is_some() {}
                while let Some((result, _, sent, _)) = trips.next().await {
                    let b = result?.expect("no deadline");
                    stats.acked += b.acked.acked as u64;
                    for r in &sent {
                        held.remove(r);
                    }
                    for r in b.reserved {
                        held.insert(r.receipt);
                    }
                }
                if !acks.is_empty() {
                    let b = q.ack_and_reserve(&acks, 0, None).await?.expect("no deadline");
                    stats.acked += b.acked.acked as u64;
                    for r in &acks {
                        held.remove(r);
                    }
                }
                let rest: Vec<String> = held.drain().collect();
                stats.released += rest.len() as u64;
                q.release_receipts(&rest).await?;
                return Ok(stats);
            }
        }
    }
}

async fn finish(
    queue: &dyn BatchQueue,
    stats: &mut PumpStats,
    acks: &mut Vec<String>,
    held: &mut HashSet<String>,
    receipt: String,
    outcome: Outcome,
) -> Result<(), QueueError> {
    let result = match outcome {
        Outcome::Ack => {
            acks.push(receipt);
            return Ok(());
        }
        Outcome::Retry { job, at } => {
            held.remove(&receipt);
            stats.retried += 1;
            queue.retry(Reservation { job, receipt }, at).await
        }
        Outcome::DeadLetter { job } => {
            held.remove(&receipt);
            stats.dead_lettered += 1;
            queue.dead_letter(Reservation { job, receipt }).await
        }
    };
    match result {
        Err(QueueError::UnknownReservation(_)) => {
            stats.lost_reservations += 1;
            Ok(())
        }
        other => other,
    }
}
