//! Dedup of replays: a job whose idempotency key already succeeded within a configurable
//! window is not executed again.
//!
//! At-least-once delivery means a change can be dispatched twice (a crash before the
//! checkpoint moved, a reader takeover). Workers ask [`DedupStore::already_succeeded`]
//! before running a job that may be a replay and [`DedupStore::record_success`] after it
//! succeeded; the PostgreSQL store keeps one row per key in `fraiseql.tb_observer_dedup`
//! and forgets rows older than the window. A duplicate can still slip through when the
//! process dies between the action's success and the (batched) record — that is the
//! at-least-once edge, and the action carries the idempotency key (webhook header, search
//! document id, e-mail Message-ID) so the receiver can tell.

use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::Pool;
use tokio::sync::{OnceCell, mpsc, oneshot};
use tracing::warn;

#[derive(Debug, thiserror::Error)]
pub enum DedupError {
    #[error("database pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("database: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("the dedup writer stopped")]
    WriterGone,
}

#[async_trait]
pub trait DedupStore: Send + Sync + 'static {
    async fn already_succeeded(&self, key: &str) -> Result<bool, DedupError>;
    /// Records a success. May be buffered: see [`DedupStore::flush`].
    async fn record_success(&self, key: &str) -> Result<(), DedupError>;
    /// Waits until every success recorded so far is written.
    async fn flush(&self) -> Result<(), DedupError>;
    /// Deletes records older than the window; returns how many.
    async fn purge_expired(&self) -> Result<u64, DedupError>;
}

/// Largest number of keys written by one statement.
const WRITE_BATCH: usize = 1000;
/// How long the writer waits for more keys before writing.
const WRITE_DELAY: Duration = Duration::from_millis(10);

enum Msg {
    Record(String),
    Flush(oneshot::Sender<()>),
}

/// PostgreSQL-backed dedup window. A zero window disables dedup (no queries at all).
///
/// Successes are written by a background task in batches (one `INSERT … SELECT unnest($1)`
/// per batch) with `synchronous_commit = off`: a record is an optimisation, not a
/// guarantee — losing the last few to a crash means those jobs may run once more on replay,
/// which at-least-once delivery allows — so it must not cost a WAL flush per job.
#[derive(Clone)]
pub struct PgDedup {
    pool: Pool,
    window: Duration,
    writer: std::sync::Arc<OnceCell<mpsc::Sender<Msg>>>,
}

impl PgDedup {
    pub fn new(pool: Pool, window: Duration) -> Self {
        PgDedup {
            pool,
            window,
            writer: std::sync::Arc::new(OnceCell::new()),
        }
    }

    fn window_secs(&self) -> f64 {
        self.window.as_secs_f64()
    }

    /// Started on first use, so building the store needs no runtime.
    async fn writer(&self) -> &mpsc::Sender<Msg> {
        self.writer
            .get_or_init(|| async {
                let (tx, rx) = mpsc::channel(WRITE_BATCH * 4);
                tokio::spawn(run_writer(self.pool.clone(), rx));
                tx
            })
            .await
    }
}

async fn run_writer(pool: Pool, mut rx: mpsc::Receiver<Msg>) {
    while let Some(first) = rx.recv().await {
        let mut keys = Vec::new();
        let mut waiters = Vec::new();
        let mut msg = Some(first);
        let deadline = tokio::time::Instant::now() + WRITE_DELAY;
        while let Some(m) = msg.take() {
            match m {
                Msg::Record(k) => keys.push(k),
                Msg::Flush(w) => waiters.push(w),
            }
            // A flush request writes right away; otherwise gather for a moment.
            if !waiters.is_empty() || keys.len() >= WRITE_BATCH {
                break;
            }
            // Timing out ends the gathering (None).
            msg = tokio::time::timeout_at(deadline, rx.recv())
                .await
                .unwrap_or_default();
        }
        if !keys.is_empty() {
            keys.sort_unstable();
            // ON CONFLICT cannot touch the same row twice in one statement.
            keys.dedup();
            if let Err(e) = write_batch(&pool, &keys).await {
                warn!(error = %e, keys = keys.len(), "writing dedup records failed (a replay may deliver these again)");
            }
        }
        for w in waiters {
            let _ = w.send(());
        }
    }
}

async fn write_batch(pool: &Pool, keys: &[String]) -> Result<(), DedupError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.batch_execute("SET LOCAL synchronous_commit = off")
        .await?;
    tx.execute(
        "INSERT INTO fraiseql.tb_observer_dedup (idempotency_key, succeeded_at) \
         SELECT k, now() FROM unnest($1::text[]) AS k \
         ON CONFLICT (idempotency_key) DO UPDATE SET succeeded_at = now()",
        &[&keys],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

#[async_trait]
impl DedupStore for PgDedup {
    async fn already_succeeded(&self, key: &str) -> Result<bool, DedupError> {
        if self.window.is_zero() {
            return Ok(false);
        }
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                "SELECT 1 FROM fraiseql.tb_observer_dedup \
                 WHERE idempotency_key = $1 AND succeeded_at > now() - make_interval(secs => $2)",
                &[&key, &self.window_secs()],
            )
            .await?;
        Ok(row.is_some())
    }

    async fn record_success(&self, key: &str) -> Result<(), DedupError> {
        if self.window.is_zero() {
            return Ok(());
        }
        self.writer()
            .await
            .send(Msg::Record(key.to_owned()))
            .await
            .map_err(|_| DedupError::WriterGone)
    }

    async fn flush(&self) -> Result<(), DedupError> {
        let Some(tx) = self.writer.get() else {
            return Ok(()); // nothing was ever recorded
        };
        let (done, wait) = oneshot::channel();
        tx.send(Msg::Flush(done))
            .await
            .map_err(|_| DedupError::WriterGone)?;
        wait.await.map_err(|_| DedupError::WriterGone)
    }

    async fn purge_expired(&self) -> Result<u64, DedupError> {
        let client = self.pool.get().await?;
        Ok(client
            .execute(
                "DELETE FROM fraiseql.tb_observer_dedup \
                 WHERE succeeded_at <= now() - make_interval(secs => $1)",
                &[&self.window_secs()],
            )
            .await?)
    }
}
