//! Dispatch: from a matched change to jobs in the queue, and the bookkeeping that decides
//! how far the reader's checkpoint may advance.
//!
//! The reader calls [`Dispatcher::dispatch`] for every change in cursor order. For a
//! durable queue (Redis) a change is done as soon as its jobs are enqueued. For the memory
//! queue a change is done only when every one of its jobs has finished (acknowledged or
//! dead-lettered, the dead-letter store being durable); workers report that through
//! [`Tracker::finish`]. [`Tracker::safe_cursor`] is the highest cursor below which every
//! dispatched change is done: that is what the checkpoint stores, so a crash replays
//! unfinished changes and never skips one.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio_util::sync::CancellationToken;

use super::matcher::{ChangeEvent, CompiledObservers};
use crate::metrics::ObserverMetrics;
use crate::queue::{Enqueued, Queue, QueueError};

/// A position in the change log: `(transaction id, pk)`, the order the reader delivers in
/// ([`crate::db::changelog`] says why the transaction id comes first).
pub type Cursor = crate::db::changelog::Position;

#[derive(Debug)]
struct Pending {
    /// Idempotency keys of the change's jobs that have not finished yet.
    remaining: HashSet<String>,
    /// The cursor dispatched just before this change: safe once this change is the oldest
    /// unfinished one.
    prev: Cursor,
}

#[derive(Debug, Default)]
struct TrackerState {
    pending: BTreeMap<Cursor, Pending>,
    by_key: HashMap<String, Cursor>,
    last_dispatched: Cursor,
}

/// Tracks unfinished changes by their jobs' idempotency keys. Keys, not counts: a job that
/// finishes is matched to its change exactly, even when its key was already live in the
/// queue (a replay enqueued as a duplicate of a job from an earlier session or from a
/// dead-letter retry). Its size is bounded by the queue capacity (only changes with live
/// jobs are kept).
#[derive(Debug, Default)]
pub struct Tracker {
    state: Mutex<TrackerState>,
}

impl Tracker {
    fn lock(&self) -> MutexGuard<'_, TrackerState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts over from a checkpoint (a new reader session).
    pub fn reset(&self, from: Cursor) {
        let mut st = self.lock();
        *st = TrackerState {
            last_dispatched: from,
            ..TrackerState::default()
        };
    }

    /// A change was dispatched with jobs `keys` (none: done at once).
    pub fn register<I: IntoIterator<Item = String>>(&self, cursor: Cursor, keys: I) {
        let mut st = self.lock();
        let prev = st.last_dispatched;
        st.last_dispatched = cursor;
        let remaining: HashSet<String> = keys.into_iter().collect();
        if remaining.is_empty() {
            return;
        }
        for k in &remaining {
            st.by_key.insert(k.clone(), cursor);
        }
        st.pending.insert(cursor, Pending { remaining, prev });
    }

    /// The job with idempotency key `key` finished (acknowledged or dead-lettered). Keys
    /// of no registered change (an earlier session's jobs, dead letters retried on request)
    /// are ignored.
    pub fn finish(&self, key: &str) {
        let mut st = self.lock();
        let Some(cursor) = st.by_key.remove(key) else {
            return;
        };
        let done = match st.pending.get_mut(&cursor) {
            Some(p) => {
                p.remaining.remove(key);
                p.remaining.is_empty()
            }
            None => true,
        };
        if done {
            st.pending.remove(&cursor);
        }
    }

    /// Every dispatched change at or below this cursor is done.
    pub fn safe_cursor(&self) -> Cursor {
        let st = self.lock();
        match st.pending.values().next() {
            Some(p) => p.prev,
            None => st.last_dispatched,
        }
    }

    pub fn unfinished(&self) -> usize {
        self.lock().pending.len()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("enqueue failed: {0}")]
    Queue(#[from] QueueError),
    #[error("shutting down")]
    Shutdown,
}

/// Turns changes into jobs. Shared by the reader (one per session).
#[derive(Clone)]
pub struct Dispatcher {
    pub observers: Arc<CompiledObservers>,
    pub queue: Arc<dyn Queue>,
    pub tracker: Arc<Tracker>,
    pub metrics: ObserverMetrics,
}

impl Dispatcher {
    /// Enqueues one job per matching action. Waits while the queue is full (back-pressure);
    /// returns [`DispatchError::Shutdown`] if shutdown comes first, leaving the change
    /// unfinished (it is replayed from the checkpoint next time).
    /// `replay`: the change may have been dispatched before (see the reader's high-water
    /// mark); its jobs then consult the dedup store.
    pub async fn dispatch(
        &self,
        cursor: Cursor,
        ev: &ChangeEvent,
        replay: bool,
        shutdown: &CancellationToken,
    ) -> Result<usize, DispatchError> {
        let mut jobs = self.observers.jobs_for(ev);
        for j in &mut jobs {
            j.replay = replay;
        }
        let n = jobs.len();
        let durable = self.queue.durable();
        if !durable {
            // Register before enqueueing: a fast worker may finish a job before the last
            // enqueue returns.
            self.tracker
                .register(cursor, jobs.iter().map(|j| j.key.clone()));
        }
        for job in jobs {
            let action = crate::metrics::action_label(&job.action_type);
            tokio::select! {
                r = self.queue.enqueue(job) => {
                    if r? == Enqueued::Added {
                        self.metrics.jobs.queued.with_label_values(&[action]).inc();
                    }
                }
                _ = shutdown.cancelled() => return Err(DispatchError::Shutdown),
            }
        }
        if durable {
            self.tracker.register(cursor, None);
        }
        self.metrics.events_processed.inc();
        let lag = (chrono::Utc::now() - ev.occurred_at)
            .to_std()
            .unwrap_or_default();
        self.metrics.read_lag.observe(lag.as_secs_f64());
        Ok(n)
    }
}

impl Dispatcher {
    /// Dispatches a batch of changes into a durable queue with one [`Queue::enqueue_many`]
    /// (for Redis: one round trip per thousand jobs instead of one per job). Every change
    /// counts as done once the call returns, since a durable queue keeps its jobs; the caller
    /// registers the cursors. With a non-durable queue use [`Dispatcher::dispatch`] per change.
    pub async fn dispatch_durable(
        &self,
        changes: &[(&ChangeEvent, bool)],
        shutdown: &CancellationToken,
    ) -> Result<usize, DispatchError> {
        let mut jobs = Vec::new();
        for (ev, replay) in changes {
            for mut j in self.observers.jobs_for(ev) {
                j.replay = *replay;
                jobs.push(j);
            }
        }
        let n = jobs.len();
        if n > 0 {
            let actions: Vec<&'static str> = jobs
                .iter()
                .map(|j| crate::metrics::action_label(&j.action_type))
                .collect();
            let results = tokio::select! {
                r = self.queue.enqueue_many(jobs) => r?,
                _ = shutdown.cancelled() => return Err(DispatchError::Shutdown),
            };
            for (r, action) in results.iter().zip(actions) {
                if *r == Enqueued::Added {
                    self.metrics.jobs.queued.with_label_values(&[action]).inc();
                }
            }
        }
        let now = chrono::Utc::now();
        for (ev, _) in changes {
            self.metrics.events_processed.inc();
            let lag = (now - ev.occurred_at).to_std().unwrap_or_default();
            self.metrics.read_lag.observe(lag.as_secs_f64());
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(pk: i64) -> Cursor {
        Cursor {
            txid: 100 + pk as u64,
            pk,
        }
    }

    fn keys(pk: i64, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{pk}:o:{i}")).collect()
    }

    #[test]
    fn checkpoint_waits_for_the_oldest_unfinished_change() {
        let t = Tracker::default();
        t.reset(c(0));
        t.register(c(1), keys(1, 2));
        t.register(c(2), None);
        t.register(c(3), keys(3, 1));
        t.register(c(4), None);
        assert_eq!(t.safe_cursor(), c(0));
        t.finish("3:o:0");
        assert_eq!(t.safe_cursor(), c(0), "change 1 still has jobs");
        t.finish("1:o:1");
        assert_eq!(t.safe_cursor(), c(0));
        t.finish("1:o:1"); // finishing the same job twice changes nothing
        assert_eq!(t.safe_cursor(), c(0));
        t.finish("1:o:0");
        assert_eq!(t.safe_cursor(), c(4), "everything dispatched is done");
        t.finish("99:o:0"); // unknown: ignored
        assert_eq!(t.unfinished(), 0);
    }

    #[test]
    fn middle_change_holds_back_only_from_itself() {
        let t = Tracker::default();
        t.reset(c(0));
        t.register(c(1), keys(1, 1));
        t.register(c(2), keys(2, 1));
        t.register(c(3), None);
        t.finish("1:o:0");
        assert_eq!(t.safe_cursor(), c(1));
        t.finish("2:o:0");
        assert_eq!(t.safe_cursor(), c(3));
    }
}
