//! The in-process queue backend: bounded, with back-pressure on the producer.
//!
//! Jobs live only in this process's memory, so this backend is not [`Queue::durable`]: the
//! observer reader keeps its checkpoint behind every change whose jobs have not finished
//! (acknowledged or dead-lettered), and a crash replays those changes from PostgreSQL.
//! Dead letters are written through a [`DeadLetterSink`] (the PostgreSQL store in
//! production) before the job leaves the queue, so a dead letter is never lost.
//!
//! Capacity counts every live job (ready, delayed and reserved): a retry keeps its slot, so
//! workers can never deadlock against a full queue, and `enqueue` waits for a slot — that
//! wait is the back-pressure that slows the reader down.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::{Notify, Semaphore};

use super::dlq::DeadLetterSink;
use super::{Enqueued, Job, Queue, QueueError, Reservation};

#[derive(Default)]
struct State {
    ready: VecDeque<Job>,
    /// Delayed retries ordered by due time; the u64 breaks ties in insertion order.
    delayed: BTreeMap<(DateTime<Utc>, u64), Job>,
    /// receipt → idempotency key of the reserved job.
    inflight: HashMap<String, String>,
    /// Keys of every live job, for idempotent enqueue.
    live_keys: HashSet<String>,
    seq: u64,
}

impl State {
    fn promote_due(&mut self, now: DateTime<Utc>) {
        while let Some(entry) = self.delayed.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let job = entry.remove();
            self.ready.push_back(job);
        }
    }
}

/// Bounded in-process queue. See the module docs.
pub struct MemoryQueue {
    state: Mutex<State>,
    /// Wakes reservers when a job becomes ready (or a retry moves the next due time).
    ready: Notify,
    /// One permit per free slot.
    slots: Semaphore,
    capacity: usize,
    receipts: AtomicU64,
    sink: Arc<dyn DeadLetterSink>,
}

impl MemoryQueue {
    pub fn new(capacity: usize, sink: Arc<dyn DeadLetterSink>) -> Self {
        let capacity = capacity.max(1);
        MemoryQueue {
            state: Mutex::new(State::default()),
            ready: Notify::new(),
            slots: Semaphore::new(capacity),
            capacity,
            receipts: AtomicU64::new(1),
            sink,
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the state half-updated in a way that
        // matters more than losing the process, so poisoning is ignored.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Removes a reservation and frees its slot; the caller decides what happens to the job.
    fn finish(&self, receipt: &str) -> Result<(), QueueError> {
        let mut st = self.lock();
        let key = st
            .inflight
            .remove(receipt)
            .ok_or_else(|| QueueError::UnknownReservation(receipt.to_owned()))?;
        st.live_keys.remove(&key);
        drop(st);
        self.slots.add_permits(1);
        Ok(())
    }
}

#[async_trait]
impl Queue for MemoryQueue {
    fn backend(&self) -> &'static str {
        "memory"
    }

    fn durable(&self) -> bool {
        false
    }

    async fn enqueue(&self, job: Job) -> Result<Enqueued, QueueError> {
        // Cheap early check so that a duplicate never waits for a slot.
        if self.lock().live_keys.contains(&job.key) {
            return Ok(Enqueued::Duplicate);
        }
        let permit = self.slots.acquire().await.map_err(|_| QueueError::Closed)?;
        let mut st = self.lock();
        if !st.live_keys.insert(job.key.clone()) {
            // Raced with another enqueue of the same key while waiting; the permit is
            // dropped (returned) here.
            return Ok(Enqueued::Duplicate);
        }
        permit.forget();
        st.ready.push_back(job);
        drop(st);
        self.ready.notify_one();
        Ok(Enqueued::Added)
    }

    async fn reserve(&self, wait: Duration) -> Result<Option<Reservation>, QueueError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Register interest before looking at the state so that a notify between the
            // check and the wait is not lost.
            let notified = self.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();

            let next_due = {
                let mut st = self.lock();
                st.promote_due(Utc::now());
                if let Some(job) = st.ready.pop_front() {
                    let receipt = self.receipts.fetch_add(1, Ordering::Relaxed).to_string();
                    st.inflight.insert(receipt.clone(), job.key.clone());
                    let more = !st.ready.is_empty();
                    drop(st);
                    if more {
                        // Pass the baton: another waiter may take the next ready job.
                        self.ready.notify_one();
                    }
                    return Ok(Some(Reservation { job, receipt }));
                }
                st.delayed.keys().next().map(|(at, _)| *at)
            };

            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let mut sleep_for = deadline - now;
            if let Some(at) = next_due {
                let until_due = (at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
                sleep_for = sleep_for.min(until_due);
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep(sleep_for) => {}
            }
        }
    }

    async fn ack(&self, reservation: Reservation) -> Result<(), QueueError> {
        if !self.lock().inflight.contains_key(&reservation.receipt) {
            return Err(QueueError::UnknownReservation(reservation.receipt));
        }
        // A retried dead letter that succeeded is resolved in the store. When that fails the
        // job is still acknowledged: the row stays claimed and its lease brings it back once
        // more (at-least-once), which beats holding the queue slot on a store outage.
        if let Some(id) = reservation.job.dead_letter_id
            && let Err(e) = self.sink.resolve(id).await
        {
            tracing::warn!(error = %e, dead_letter = id, "resolving a retried dead letter failed");
        }
        self.finish(&reservation.receipt)
    }

    async fn retry(&self, reservation: Reservation, at: DateTime<Utc>) -> Result<(), QueueError> {
        let mut st = self.lock();
        if st.inflight.remove(&reservation.receipt).is_none() {
            return Err(QueueError::UnknownReservation(reservation.receipt));
        }
        // The job keeps its slot and its key stays live while it waits.
        st.seq += 1;
        let seq = st.seq;
        st.delayed.insert((at, seq), reservation.job);
        drop(st);
        // A sleeping reserver may be waiting for a later due time.
        self.ready.notify_one();
        Ok(())
    }

    async fn dead_letter(&self, reservation: Reservation) -> Result<(), QueueError> {
        if !self.lock().inflight.contains_key(&reservation.receipt) {
            return Err(QueueError::UnknownReservation(reservation.receipt));
        }
        // Durable first: if the store fails the job stays reserved and the caller retries.
        self.sink
            .store(&reservation.job)
            .await
            .map_err(|e| QueueError::DeadLetter(e.to_string()))?;
        self.finish(&reservation.receipt)
    }

    async fn depth(&self) -> Result<u64, QueueError> {
        Ok(self.lock().live_keys.len() as u64)
    }
}
