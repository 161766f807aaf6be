//! In-process workers over any [`Queue`]: reserve a job, let the [`JobExecutor`] run it,
//! then acknowledge, retry or dead-letter it as the executor decided.
//!
//! `concurrency` workers share the queue. Every finished job (acked or dead-lettered) is
//! reported to the dispatch [`Tracker`] so the reader's checkpoint can move (memory queue).
//! On shutdown a worker stops reserving; the job in hand gets `shutdown_grace_ms` to finish,
//! after which it is handed back to the queue (retry now) — for the memory queue that means
//! it is replayed from the checkpoint by the next start. A dead letter the store refuses is
//! stored again with backoff ([`crate::queue::bookkeeping_backoff`]) while the job keeps its
//! worker; its action is not run again. `fraiseql worker` uses the batching
//! [`crate::queue::pump`] over Redis instead, with the same executor.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::dispatch::Tracker;
use super::executor::JobExecutor;
use crate::queue::{Outcome, Queue, QueueError, Reservation};

pub struct Workers {
    pub executor: Arc<JobExecutor>,
    pub queue: Arc<dyn Queue>,
    pub tracker: Arc<Tracker>,
    pub concurrency: usize,
    pub grace: Duration,
}

impl Workers {
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..self.concurrency.max(1) {
            let me = self.clone();
            let shutdown = shutdown.clone();
            set.spawn(async move { me.worker_loop(i, shutdown).await });
        }
        while set.join_next().await.is_some() {}
        info!("observer workers stopped");
    }

    async fn worker_loop(&self, id: usize, shutdown: CancellationToken) {
        loop {
            // Biased: once shutdown is signalled a worker must not take another job, even
            // when one is ready (an unbiased select picks a ready branch at random).
            let reserved = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                r = self.queue.reserve(Duration::from_secs(1)) => r,
            };
            match reserved {
                Ok(Some(r)) => self.process(r, &shutdown).await,
                Ok(None) => {}
                Err(e) => {
                    warn!(worker = id, error = %e, "reserving a job failed");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    }

    async fn process(&self, r: Reservation, shutdown: &CancellationToken) {
        let Reservation { job, receipt } = r;
        let outcome = {
            let exec = self.executor.run(job.clone());
            tokio::pin!(exec);
            let grace = self.grace;
            tokio::select! {
                o = &mut exec => Some(o),
                _ = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => None,
            }
        };
        let key = job.key.clone();
        match outcome {
            None => {
                info!(key = %key, "shutdown grace period over; handing the job back");
                self.executor.metrics.released.inc();
                // Stopped mid-run: the action may have succeeded already.
                let mut job = job;
                job.replay = true;
                if let Err(e) = self
                    .queue
                    .retry(Reservation { job, receipt }, Utc::now())
                    .await
                {
                    warn!(error = %e, "handing a job back failed");
                }
            }
            Some(Outcome::Ack) => {
                if let Err(e) = self.queue.ack(Reservation { job, receipt }).await {
                    warn!(error = %e, "acknowledging a job failed");
                }
                self.tracker.finish(&key);
            }
            Some(Outcome::Retry { job, at }) => {
                if let Err(qe) = self.queue.retry(Reservation { job, receipt }, at).await {
                    warn!(error = %qe, "scheduling a retry failed");
                }
            }
            Some(Outcome::DeadLetter { job }) => {
                self.dead_letter(Reservation { job, receipt }, shutdown)
                    .await;
            }
        }
    }

    /// Stores the dead letter, retrying with backoff while the store fails: the job keeps
    /// its reservation (and this worker) meanwhile, and its action is not run again — it
    /// failed for good, and running it once more per failed write would also grow its
    /// error list. At shutdown, after the grace period, the job is left where it is: the
    /// in-process queue is gone with the process, and the change is replayed from the
    /// reader's checkpoint, which never passed it.
    async fn dead_letter(&self, r: Reservation, shutdown: &CancellationToken) {
        let key = r.job.key.clone();
        let mut backoff = crate::queue::bookkeeping_backoff();
        let give_up = async {
            shutdown.cancelled().await;
            tokio::time::sleep(self.grace).await;
        };
        tokio::pin!(give_up);
        loop {
            match self.queue.dead_letter(r.clone()).await {
                Ok(()) => {
                    self.tracker.finish(&key);
                    return;
                }
                Err(QueueError::UnknownReservation(_)) => return,
                Err(e) => {
                    let delay = backoff.next_delay();
                    self.executor
                        .metrics
                        .bookkeeping_retries
                        .with_label_values(&["dead_letter"])
                        .inc();
                    warn!(error = %e, key = %key, retry_in = ?delay, "dead-lettering failed; will try again (the action is not run again)");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = &mut give_up => {
                            warn!(key = %key, "shutting down with a dead letter not stored; the change is replayed from the checkpoint at the next start");
                            return;
                        }
                    }
                }
            }
        }
    }
}
