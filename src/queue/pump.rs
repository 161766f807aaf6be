//! The batching worker loop over a [`BatchQueue`] (the Redis backend): keeps up to
//! `concurrency` jobs running and spends one backend round trip per batch, not per job.
//!
//! Each round trip acknowledges every job that finished since the last one *and* reserves jobs
//! for the slots that freed up, in one call ([`BatchQueue::ack_and_reserve`]); two round
//! trips may be in flight at once, so finished jobs are acknowledged while the previous
//! batch is still on the wire. Slots promised to a round trip in flight count as taken: no
//! more than `concurrency` jobs are ever reserved by this loop. Handlers run
//! as tasks of a `JoinSet`, so their number is bounded by `concurrency` by construction and no
//! channel is needed. Retries and dead letters (rare) go through the trait methods one by one,
//! each as a future of its own, so a slow one never holds up the loop.
//!
//! Bookkeeping failures: an ack, retry, dead letter or release that the backend refuses —
//! with any error, transient or not (a Redis refusing writes, a failing script, a dead-letter
//! store that cannot be written) — is retried with backoff ([`super::bookkeeping_backoff`],
//! counted in `fraiseql_job_bookkeeping_retries_total`); the loop never gives up on it and
//! never returns for it. Running handlers keep running. A finished job whose outcome is not
//! recorded yet keeps its slot (no more than `concurrency` jobs are held, running or
//! finished) and its reservation (the heartbeat extends it), and it is never run again for a
//! bookkeeping failure: a job that failed for good is not sent through its action once more
//! because its dead letter could not be written. While acks fail, nothing new is reserved.
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
//! the visibility timeout. Recording what is left gets at most [`FINAL_FLUSH`] more; what the
//! backend still refuses then is left to the visibility timeout: the worker that reclaims a
//! job marks it `replay`, so one that had succeeded is recognised by the dedup window and not
//! run again. Finished jobs are never handed back (that would run them again unchecked).
//! `fraiseql worker` is this loop plus an action executor as handler.

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
use crate::metrics::JobMetrics;

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
    /// Bookkeeping calls (ack, retry, dead letter, release) that failed and were retried.
    pub bookkeeping_retries: u64,
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
/// back. `handler` runs one job. Bookkeeping retries are counted in a private metric set;
/// [`run_metered`] counts them into the process's.
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
    run_metered(queue, config, JobMetrics::unregistered(), handler, shutdown).await
}

/// A retry or dead letter being recorded (with retries), and what it resolved to.
type OpFut<'a> = Pin<Box<dyn Future<Output = OpDone> + Send + 'a>>;

/// How a retry or dead-letter call ended.
struct OpDone {
    dead: bool,
    receipt: String,
    /// Failed calls before the last one.
    retries: u64,
    /// The reservation was no longer ours (reclaimed meanwhile).
    lost: bool,
}

/// [`run`], counting bookkeeping retries into `metrics`
/// (`fraiseql_job_bookkeeping_retries_total`).
///
/// Never returns an error for a backend failure: every call is retried with backoff, and
/// the `Result` is kept for callers that match on it.
pub async fn run_metered<H, Fut>(
    queue: Arc<dyn BatchQueue>,
    config: PumpConfig,
    metrics: JobMetrics,
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
    let mut acks: Vec<String> = Vec::new();
    let mut trips: FuturesUnordered<RoundTrip<'_>> = FuturesUnordered::new();
    // Slots promised to round trips in flight, so that running + promised <= concurrency.
    let mut promised = 0usize;
    // Retries and dead letters being recorded; each holds its job's slot until it is.
    let mut ops: FuturesUnordered<OpFut<'_>> = FuturesUnordered::new();
    let mut op_receipts: HashSet<String> = HashSet::new();
    // After a failed round trip: no new one before this, and (when it carried acks) none
    // that reserves until the acks are recorded, so unrecorded jobs stay bounded.
    let mut trip_backoff = super::bookkeeping_backoff();
    let mut trip_pause: Option<Pin<Box<tokio::time::Sleep>>> = None;
    let mut acks_failing = false;
    let mut drain_deadline: Option<Instant> = None;
    // After a round trip that found no work: the wake-up registered before it was sent (so a
    // publish after the script ran is not lost) and the longest sleep Redis suggested.
    let mut idle: Option<Idle<'_>> = None;

    loop {
        if drain_deadline.is_none() && shutdown.is_cancelled() {
            drain_deadline = Some(Instant::now() + config.grace);
        }
        let draining = drain_deadline.is_some();

        while trips.len() < MAX_IN_FLIGHT && trip_pause.is_none() {
            let free = concurrency.saturating_sub(running.len() + promised + ops.len());
            let want = if draining || idle.is_some() || acks_failing {
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
            // While draining, a round trip must not outlive the grace period.
            let deadline = drain_deadline;
            trips.push(Box::pin(async move {
                let r = q.ack_and_reserve(&sent, want, deadline).await;
                (r, want, sent, notified)
            }));
        }

        if draining && running.is_empty() && acks.is_empty() && trips.is_empty() && ops.is_empty() {
            return Ok(stats);
        }

        tokio::select! {
            Some((result, want, sent, notified)) = trips.next(), if !trips.is_empty() => {
                promised -= want;
                let b = match result {
                    Ok(Some(b)) => b,
                    failed => {
                        // Not recorded: the acks go out again with the next round trip, after
                        // a pause; the reservations stay ours (the heartbeat keeps them).
                        let error = match failed {
                            Err(e) => e.to_string(),
                            _ => "the queue stayed unreachable until the grace period ended".into(),
                        };
                        let delay = trip_backoff.next_delay();
                        if !sent.is_empty() {
                            acks_failing = true;
                            stats.bookkeeping_retries += 1;
                            metrics.bookkeeping_retries.with_label_values(&["ack"]).inc();
                            warn!(%error, jobs = sent.len(), retry_in = ?delay, "pump: acknowledging finished jobs failed; retrying");
                        } else {
                            warn!(%error, retry_in = ?delay, "pump: reserving jobs failed; retrying");
                        }
                        let mut back = sent;
                        back.append(&mut acks);
                        acks = back;
                        trip_pause = Some(Box::pin(tokio::time::sleep(delay)));
                        continue;
                    }
                };
                trip_backoff.reset();
                if !sent.is_empty() {
                    acks_failing = false;
                }
                stats.round_trips += 1;
                stats.acked += b.acked.acked as u64;
                stats.lost_reservations += b.acked.unknown.len() as u64;
                if want > 0 && b.reserved.is_empty() && idle.is_none() {
                    let sleep = Box::pin(tokio::time::sleep(q.idle_sleep(&b)));
                    idle = Some((notified, sleep));
                }
                for Reservation { job, receipt } in b.reserved {
                    stats.reserved += 1;
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
            _ = when_some(trip_pause.as_mut()), if trip_pause.is_some() => {
                trip_pause = None;
            }
            done = running.join_next_with_id(), if !running.is_empty() => {
                let mut finished = vec![done];
                // Let handlers that are ready to finish do so (they were spawned on this
                // thread's run queue), then collect everything that finished into the same
                // round trip: a few microseconds for far fewer round trips.
                tokio::task::yield_now().await;
                while let Some(res) = running.try_join_next_with_id() {
                    finished.push(Some(res));
                }
                for res in finished.into_iter().flatten() {
                    let mut owed = Owed { leases: &mut leases, acks: &mut acks, ops: &mut ops, receipts: &mut op_receipts };
                    owed.take(q, &metrics, res);
                }
            }
            Some(done) = ops.next(), if !ops.is_empty() => {
                op_receipts.remove(&done.receipt);
                count_op(&mut stats, &done);
            }
            _ = async {
                match idle.as_mut() {
                    Some((n, s)) => tokio::select! { _ = n.as_mut() => {}, _ = s.as_mut() => {} },
                    None => std::future::pending().await,
                }
            }, if idle.is_some() && !draining => {
                idle = None;
            }
            _ = beat_timer.tick(), if period.is_some() && beat.is_none()
                && !(leases.is_empty() && op_receipts.is_empty() && !acks_failing) => {
                // Running jobs, and finished ones whose outcome is not recorded yet: their
                // reservations must not expire while the bookkeeping is retried.
                let mut receipts: Vec<String> = leases.values().cloned().collect();
                receipts.extend(op_receipts.iter().cloned());
                if acks_failing {
                    receipts.extend(acks.iter().cloned());
                }
                // A heartbeat later than the next one is of no use: give up at the next tick.
                let deadline = Instant::now() + period.unwrap_or(MIN_BEAT);
                beat = Some(Box::pin(async move {
                    q.extend_receipts(&receipts, Some(deadline)).await
                }));
            }
            lost = when_some(beat.as_mut()), if beat.is_some() => {
                beat = None;
                stats.heartbeats += 1;
                match lost {
                    Ok(Some(lost)) => {
                        // Finished meanwhile (acked), or reclaimed before this heartbeat landed.
                        let still_ours: Vec<&String> = lost
                            .iter()
                            .filter(|r| {
                                leases.values().any(|l| l == *r)
                                    || op_receipts.contains(*r)
                                    || acks.contains(*r)
                            })
                            .collect();
                        if !still_ours.is_empty() {
                            warn!(receipts = ?still_ours, "pump: reservations expired before the heartbeat (those jobs may run on another worker too)");
                        }
                    }
                    Ok(None) => warn!("pump: the heartbeat did not reach the queue in time"),
                    Err(e) => warn!(error = %e, "pump: extending reservations failed"),
                }
            }
            _ = shutdown.cancelled(), if !draining => {}
            _ = tokio::time::sleep_until(drain_deadline.unwrap_or_else(Instant::now)), if draining => {
                // Grace is over: stop the stragglers, then record what can be recorded
                // within FINAL_FLUSH and return.
                running.abort_all();
                let mut unfinished: Vec<String> = Vec::new();
                while let Some(res) = running.join_next_with_id().await {
                    // Finished before the abort landed: an outcome like any other.
                    let mut owed = Owed { leases: &mut leases, acks: &mut acks, ops: &mut ops, receipts: &mut op_receipts };
                    if let Some(r) = owed.take(q, &metrics, res) {
                        unfinished.push(r);
                    }
                }
                let flush_until = Instant::now() + FINAL_FLUSH.min(config.grace.max(MIN_BEAT));
                flush(q, &metrics, &mut stats, Flush {
                    trips, ops, acks, unfinished, until: flush_until,
                }).await;
                return Ok(stats);
            }
        }
    }
}

/// Longest the pump spends recording outcomes after the grace period ran out: a backend
/// that refuses bookkeeping must not hold a shutdown. What is not recorded by then stays
/// reserved until the visibility timeout; the worker that reclaims it marks it `replay`,
/// so a job that had succeeded is recognised by the dedup window instead of running again.
pub const FINAL_FLUSH: Duration = Duration::from_secs(1);

/// What is left to record when the grace period runs out.
struct Flush<'a> {
    trips: FuturesUnordered<RoundTrip<'a>>,
    ops: FuturesUnordered<OpFut<'a>>,
    acks: Vec<String>,
    /// Receipts of handlers stopped mid-run: handed back so another worker starts them at
    /// once (the stored job is unchanged).
    unfinished: Vec<String>,
    until: Instant,
}

async fn flush(q: &dyn BatchQueue, metrics: &JobMetrics, stats: &mut PumpStats, f: Flush<'_>) {
    let Flush {
        mut trips,
        mut ops,
        mut acks,
        mut unfinished,
        until,
    } = f;
    // Round trips in flight: what they reserved is ours and goes back; acks that failed are
    // sent once more below.
    while let Ok(Some((result, _, sent, _))) = tokio::time::timeout_at(until, trips.next()).await {
        match result {
            Ok(Some(b)) => {
                stats.acked += b.acked.acked as u64;
                stats.lost_reservations += b.acked.unknown.len() as u64;
                stats.reserved += b.reserved.len() as u64;
                unfinished.extend(b.reserved.into_iter().map(|r| r.receipt));
            }
            _ => acks.extend(sent),
        }
    }
    while let Ok(Some(done)) = tokio::time::timeout_at(until, ops.next()).await {
        count_op(stats, &done);
    }
    if !acks.is_empty() {
        let sent = acks.len();
        let acked = retry_until(until, "ack", metrics, stats, || {
            q.ack_and_reserve(&acks, 0, Some(until))
        })
        .await;
        match acked {
            Some(Some(b)) => {
                stats.acked += b.acked.acked as u64;
                stats.lost_reservations += b.acked.unknown.len() as u64;
            }
            _ => warn!(
                jobs = sent,
                "pump: finished jobs not acknowledged at shutdown; they are reclaimed after the visibility timeout"
            ),
        }
    }
    if !unfinished.is_empty() {
        let released = retry_until(until, "release", metrics, stats, || {
            q.release_receipts(&unfinished)
        })
        .await;
        match released {
            Some(()) => stats.released += unfinished.len() as u64,
            None => warn!(
                jobs = unfinished.len(),
                "pump: unfinished jobs not handed back at shutdown; they are reclaimed after the visibility timeout"
            ),
        }
    }
}

/// Calls `call` until it succeeds, retrying failures with backoff, but not past `until`
/// (`None` then).
async fn retry_until<T, F, Fut>(
    until: Instant,
    op: &'static str,
    metrics: &JobMetrics,
    stats: &mut PumpStats,
    mut call: F,
) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, QueueError>>,
{
    let mut backoff = super::bookkeeping_backoff();
    loop {
        match tokio::time::timeout_at(until, call()).await {
            Ok(Ok(v)) => return Some(v),
            Ok(Err(e)) => {
                stats.bookkeeping_retries += 1;
                metrics.bookkeeping_retries.with_label_values(&[op]).inc();
                let delay = backoff.next_delay();
                if Instant::now() + delay >= until {
                    warn!(error = %e, op, "pump: bookkeeping still refused when shutdown time ran out");
                    return None;
                }
                tokio::time::sleep(delay).await;
            }
            Err(_) => return None,
        }
    }
}

/// Waits for `f` when there is one, forever otherwise (for a `select!` branch that is off).
async fn when_some<F: Future + Unpin>(f: Option<&mut F>) -> F::Output {
    match f {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

/// A handler task's end, as `JoinSet::join_next_with_id` reports it.
type Joined = Result<(tokio::task::Id, (String, Outcome)), tokio::task::JoinError>;

/// The running jobs' leases, and where finished jobs wait for their outcome to be recorded.
struct Owed<'s, 'a> {
    leases: &'s mut HashMap<tokio::task::Id, String>,
    acks: &'s mut Vec<String>,
    ops: &'s mut FuturesUnordered<OpFut<'a>>,
    receipts: &'s mut HashSet<String>,
}

impl<'a> Owed<'_, 'a> {
    /// Takes a handler's end: its job leaves the heartbeat; an ack goes with the next round
    /// trip, a retry or dead letter is recorded on its own. Returns the receipt of a handler
    /// that was stopped (aborted) before it finished; a panicked one's job is left to the
    /// reclaim.
    fn take(&mut self, q: &'a dyn BatchQueue, metrics: &JobMetrics, res: Joined) -> Option<String> {
        match res {
            Ok((id, (receipt, outcome))) => {
                self.leases.remove(&id);
                match outcome {
                    Outcome::Ack => self.acks.push(receipt),
                    other => {
                        self.receipts.insert(receipt.clone());
                        self.ops.push(record(q, metrics.clone(), receipt, other));
                    }
                }
                None
            }
            Err(e) => {
                let receipt = self.leases.remove(&e.id());
                if e.is_cancelled() {
                    return receipt;
                }
                warn!(error = %e, "pump: a handler panicked; its job will be reclaimed");
                None
            }
        }
    }
}

fn count_op(stats: &mut PumpStats, done: &OpDone) {
    stats.bookkeeping_retries += done.retries;
    if done.lost {
        stats.lost_reservations += 1;
    } else if done.dead {
        stats.dead_lettered += 1;
    } else {
        stats.retried += 1;
    }
}

/// Records a retry or dead letter, retrying failed calls with backoff until one succeeds
/// (or finds the reservation gone): the job is not run again for a bookkeeping failure, and
/// it keeps its slot meanwhile. Dropped at shutdown when it has not succeeded by then.
fn record<'a>(
    q: &'a dyn BatchQueue,
    metrics: JobMetrics,
    receipt: String,
    outcome: Outcome,
) -> OpFut<'a> {
    Box::pin(async move {
        let (job, at, dead) = match outcome {
            Outcome::Retry { job, at } => (job, Some(at), false),
            Outcome::DeadLetter { job } => (job, None, true),
            Outcome::Ack => unreachable!("acks go with the round trips"),
        };
        let op = if dead { "dead_letter" } else { "retry" };
        let mut backoff = super::bookkeeping_backoff();
        let mut retries = 0;
        loop {
            let r = Reservation {
                job: job.clone(),
                receipt: receipt.clone(),
            };
            let result = match at {
                Some(at) => q.retry(r, at).await,
                None => q.dead_letter(r).await,
            };
            let lost = match result {
                Ok(()) => false,
                Err(QueueError::UnknownReservation(_)) => true,
                Err(e) => {
                    retries += 1;
                    metrics.bookkeeping_retries.with_label_values(&[op]).inc();
                    let delay = backoff.next_delay();
                    warn!(error = %e, key = %job.key, op, retry_in = ?delay, "pump: recording a job's outcome failed; retrying (the action is not run again)");
                    tokio::time::sleep(delay).await;
                    continue;
                }
            };
            return OpDone {
                dead,
                receipt,
                retries,
                lost,
            };
        }
    })
}
