//! The change-log reader: wake-up by LISTEN, catch-up from a durable checkpoint, one active
//! reader per consumer across instances.
//!
//! A session runs on its own connection (not from the pool, because it must receive
//! notifications and hold a session-level advisory lock):
//! 1. `LISTEN fraiseql_changes`, then `pg_try_advisory_lock(hashtextextended('fraiseql.observers:' || consumer, 0))`
//!    every `takeover_interval_ms` until it is ours ([`crate::db::leader`]). The lock belongs to the connection, so
//!    when the active instance dies (even by kill -9) PostgreSQL releases it as the socket
//!    closes and a standby takes over within one interval.
//! 2. Load the checkpoint `(last_txid, last_pk)` from `fraiseql.tb_observer_checkpoint`
//!    (created at `start_from` on first use). `start_from = "now"` stores the snapshot
//!    taken at creation: the cursor starts at its xmin and rows already visible in it (the
//!    history) are skipped, while transactions still running at that moment are delivered
//!    when they commit.
//! 3. Catch up: read rows after the cursor in `(txid, pk)` order, in batches, dispatch them,
//!    repeat; when a batch comes back short, wait for a notification or `poll_interval_ms`.
//!    Notifications are only wake-ups: a lost one delays, never loses, a change.
//! 4. A checkpoint task writes the dispatcher's safe cursor every `checkpoint_interval_ms`
//!    when it moved (only ever forwards, so a stale writer can never move it back).
//! 5. Before dispatching a batch, the reader raises the dispatch high-water mark to
//!    the batch's last cursor. Changes at or below the mark loaded at session start may have
//!    been dispatched by an earlier session (crash, takeover): their jobs are marked
//!    `replay` and consult the dedup store. Changes above it are fresh and skip that lookup,
//!    which keeps the dedup table off the hot path.
//!
//! Why `(txid, pk)` and not `pk` alone: `pk` comes from a sequence when the row is inserted,
//! not when it commits, so a transaction that commits late can make a smaller `pk` appear
//! behind a reader that already moved past it — the classic lost-event bug of pk-cursor
//! outbox readers. The reader follows the change log's one delivery rule
//! ([`crate::db::changelog`], shared with Flight `events` tickets): `(txid, pk)` order, and
//! only rows whose transaction is older than every transaction still running, so no row can
//! ever appear below the cursor afterwards. The cost is that a long-running writing
//! transaction delays delivery of later changes until it ends.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::config::{ChangeOp, ObserverSettings, StartFrom};
use super::dispatch::{Cursor, DispatchError, Dispatcher};
use super::matcher::ChangeEvent;
use crate::db::changelog;

pub const CHANNEL: &str = "fraiseql_changes";
/// `application_name` of the reader's session.
pub const APPLICATION_NAME: &str = "fraiseql-observer-reader";

#[derive(Debug, thiserror::Error)]
pub enum ReaderError {
    #[error("database: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("the reader's database connection was lost")]
    ConnectionLost,
    #[error(transparent)]
    Dispatch(#[from] DispatchError),
    #[error("bad checkpoint value: {0}")]
    Checkpoint(String),
    #[error("nats: {0}")]
    Nats(#[from] crate::nats::NatsError),
    #[error("{0}")]
    Connect(String),
    #[error("no database connection: {0}")]
    Pool(String),
}

pub struct Reader {
    pub settings: ObserverSettings,
    pub pg_config: tokio_postgres::Config,
    pub dispatcher: Dispatcher,
    /// `[nats]` when configured: every change is published to JetStream before the
    /// checkpoint may pass it.
    pub nats: Option<crate::nats::NatsConfig>,
    /// `database.tls_ca_file`: the session is encrypted like the pool's connections.
    pub tls_ca_file: String,
}

/// One change by its pk: what a consumer of a truncated NATS reference reads.
const ONE_SQL: &str = "SELECT pk, txid::text AS txid, id, occurred_at, entity, entity_id, op, \
       before, after, changed_fields, actor, tenant_id, trace_id, mutation \
     FROM fraiseql.tb_entity_change_log WHERE pk = $1";

/// The full change behind a truncated reference; `None` when it is gone (pruned).
pub async fn load_change(
    pool: &deadpool_postgres::Pool,
    pk: i64,
) -> Result<Option<ChangeEvent>, ReaderError> {
    let client = pool
        .get()
        .await
        .map_err(|e| ReaderError::Pool(e.to_string()))?;
    let row = client.query_opt(ONE_SQL, &[&pk]).await?;
    Ok(row.as_ref().and_then(decode))
}

/// Bytes of a message's max_payload kept for its headers and subject.
const PUBLISH_HEADROOM: usize = 4096;

/// One batch after the cursor, by the change log's delivery rule ([`changelog`]); with
/// `start_from = "now"`, rows visible in the start snapshot are history.
fn read_sql() -> String {
    format!(
        "SELECT {columns} FROM fraiseql.tb_entity_change_log \
         WHERE {after} AND {safe} \
           AND ($4::text IS NULL OR NOT pg_visible_in_snapshot(txid, $4::text::pg_snapshot)) \
         ORDER BY {order} LIMIT $3",
        columns = changelog::EVENT_COLUMNS,
        after = changelog::after("$1::text", "$2::bigint"),
        safe = changelog::SAFE,
        order = changelog::ORDER,
    )
}

/// What a session loads besides the checkpoint.
struct Start {
    /// Dispatch high-water mark at session start: changes at or below it may have been
    /// dispatched before (their jobs are marked `replay`).
    high_water_mark: Cursor,
    /// `start_from = "now"`: rows visible in this snapshot are history.
    snapshot: Option<String>,
}

impl Reader {
    /// Runs sessions until shutdown; a failed session (database down, connection lost) is
    /// retried after `takeover_interval_ms`.
    ///
    /// `shutdown` stops reading; `drained` (cancelled by the runtime once the workers have
    /// finished their in-flight jobs) ends the session after a last checkpoint write, so
    /// the jobs finished during the drain are not replayed by the next start.
    pub async fn run(self, shutdown: CancellationToken, drained: CancellationToken) {
        let retry = Duration::from_millis(self.settings.takeover_interval_ms.max(10));
        // Without NATS nothing may pass the checkpoint when publishing is configured: wait
        // for it (connect retries with backoff and logs).
        let bus = match &self.nats {
            Some(config) => match crate::nats::EventBus::connect(config, &shutdown).await {
                Ok(bus) => Some(bus),
                Err(e) => {
                    if !shutdown.is_cancelled() {
                        tracing::error!(error = %e, "observer reader cannot use NATS; not reading");
                    }
                    return;
                }
            },
            None => None,
        };
        while !shutdown.is_cancelled() {
            match self.session(bus.as_ref(), &shutdown, &drained).await {
                Ok(()) => break,
                Err(ReaderError::Dispatch(DispatchError::Shutdown)) => break,
                Err(e) => warn!(error = %e, "observer reader session ended; retrying"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(retry) => {}
            }
        }
        info!("observer reader stopped");
    }

    async fn session(
        &self,
        bus: Option<&crate::nats::EventBus>,
        shutdown: &CancellationToken,
        drained: &CancellationToken,
    ) -> Result<(), ReaderError> {
        let mut pg_config = self.pg_config.clone();
        // Lets operators (and tests) find the reader's session in pg_stat_activity.
        pg_config.application_name(APPLICATION_NAME);
        let wake = Arc::new(Notify::new());
        // The session's tasks end with it, whatever way it ends: first the checkpoint task
        // (`session_end`, final write included), then the connection (`conn_end`).
        let session_end = CancellationToken::new();
        let conn_end = CancellationToken::new();
        let _end_guard = (
            session_end.clone().drop_guard(),
            conn_end.clone().drop_guard(),
        );
        let (client, lost) = {
            let wake = wake.clone();
            crate::db::session(
                &pg_config,
                &self.tls_ca_file,
                move || wake.notify_one(),
                conn_end.clone(),
            )
            .await
            .map_err(|e| ReaderError::Connect(e.to_string()))?
        };
        let client = Arc::new(client);
        // The session only writes progress markers (checkpoint, high-water mark). Losing the
        // last few hundred milliseconds of them to a PostgreSQL crash means replaying (and
        // at worst re-delivering) a few changes, which at-least-once allows; waiting for a
        // WAL flush per batch would add a disk sync to every delivery's latency.
        client
            .batch_execute(&format!("SET synchronous_commit = off; LISTEN {CHANNEL}"))
            .await?;

        let lock_name = format!("fraiseql.observers:{}", self.settings.consumer);
        let takeover = Duration::from_millis(self.settings.takeover_interval_ms.max(10));
        let standing_by = || info!(consumer = %self.settings.consumer, "another instance is the active observer reader; standing by");
        match crate::db::leader::acquire(
            &client,
            &lock_name,
            takeover,
            shutdown,
            &lost,
            standing_by,
        )
        .await?
        {
            crate::db::leader::Leadership::Acquired => {}
            crate::db::leader::Leadership::Shutdown => return Ok(()),
            crate::db::leader::Leadership::Lost => return Err(ReaderError::ConnectionLost),
        }

        let (mut cursor, start) = self.load_checkpoint(&client).await?;
        info!(consumer = %self.settings.consumer, txid = cursor.txid, pk = cursor.pk, "active observer reader; catching up from checkpoint");
        let tracker = self.dispatcher.tracker.clone();
        tracker.reset(cursor);
        let checkpointer = tokio::spawn(checkpoint_task(
            client.clone(),
            self.settings.consumer.clone(),
            tracker.clone(),
            cursor,
            Duration::from_millis(self.settings.checkpoint_interval_ms.max(1)),
            session_end.clone(),
        ));

        let result = match self
            .read_loop(&client, bus, &mut cursor, &start, &wake, &lost, shutdown)
            .await
        {
            Err(ReaderError::Dispatch(DispatchError::Shutdown)) => Ok(()),
            other => other,
        };
        if result.is_ok() {
            // Shutting down: keep the checkpoint task (and the lock) until the workers are
            // done, then write the final checkpoint.
            tokio::select! {
                _ = drained.cancelled() => {}
                _ = lost.cancelled() => {}
            }
        }
        session_end.cancel();
        // The final checkpoint write happens in the task before it returns.
        let _ = checkpointer.await;
        conn_end.cancel();
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn read_loop(
        &self,
        client: &Client,
        bus: Option<&crate::nats::EventBus>,
        cursor: &mut Cursor,
        start: &Start,
        wake: &Notify,
        lost: &CancellationToken,
        shutdown: &CancellationToken,
    ) -> Result<(), ReaderError> {
        let stmt = client.prepare(&read_sql()).await?;
        let mut hwm_written = start.high_water_mark;
        let poll = Duration::from_millis(self.settings.poll_interval_ms.max(1));
        loop {
            if shutdown.is_cancelled() {
                return Ok(());
            }
            let rows = client
                .query(
                    &stmt,
                    &[
                        &cursor.txid.to_string(),
                        &cursor.pk,
                        &self.settings.batch_size,
                        &start.snapshot,
                    ],
                )
                .await?;
            let full = rows.len() as i64 >= self.settings.batch_size;
            let cursors = rows
                .iter()
                .map(|row| {
                    let txid: &str = row.get("txid");
                    Cursor::from_parts(txid, row.get("pk"))
                        .map_err(|_| ReaderError::Checkpoint(txid.to_string()))
                })
                .collect::<Result<Vec<_>, ReaderError>>()?;
            if let Some(&last) = cursors.last()
                && last > hwm_written
            {
                write_high_water_mark(client, &self.settings.consumer, last).await?;
                hwm_written = last;
            }
            let events: Vec<Option<ChangeEvent>> = rows.iter().map(decode).collect();
            if let Some(bus) = bus
                && !self.publish(bus, &events, shutdown).await?
            {
                return Ok(());
            }
            // With `[nats] consume`, the observers read the events back from JetStream
            // (on every instance); this reader only publishes.
            let publish_only = self.nats.as_ref().is_some_and(|n| n.consume);
            if !publish_only && self.dispatcher.queue.durable() {
                // A durable queue keeps what it accepted: the whole batch in one call, and
                // every cursor is done once it returns.
                let changes: Vec<(&ChangeEvent, bool)> = events
                    .iter()
                    .zip(&cursors)
                    .filter_map(|(ev, c)| ev.as_ref().map(|ev| (ev, *c <= start.high_water_mark)))
                    .collect();
                self.dispatcher.dispatch_durable(&changes, shutdown).await?;
                for (ev, &next) in events.iter().zip(&cursors) {
                    if ev.is_none() {
                        warn!(pk = next.pk, "change-log row could not be decoded; skipped");
                        self.dispatcher.metrics.events_failed.inc();
                    }
                    self.dispatcher.tracker.register(next, None);
                    *cursor = next;
                }
            } else {
                for (ev, &next) in events.into_iter().zip(&cursors) {
                    match ev {
                        Some(_) if publish_only => self.dispatcher.tracker.register(next, None),
                        Some(ev) => {
                            let replay = next <= start.high_water_mark;
                            self.dispatcher
                                .dispatch(next, &ev, replay, shutdown)
                                .await?;
                        }
                        None => {
                            warn!(pk = next.pk, "change-log row could not be decoded; skipped");
                            self.dispatcher.metrics.events_failed.inc();
                            self.dispatcher.tracker.register(next, None);
                        }
                    }
                    *cursor = next;
                }
            }
            if let Ok(depth) = self.dispatcher.queue.depth().await {
                self.dispatcher
                    .metrics
                    .jobs
                    .queue_depth
                    .set(i64::try_from(depth).unwrap_or(i64::MAX));
            }
            if full {
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = lost.cancelled() => return Err(ReaderError::ConnectionLost),
                _ = wake.notified() => {}
                _ = tokio::time::sleep(poll) => {}
            }
        }
    }

    /// Returns the checkpoint and what else the session starts from.
    async fn load_checkpoint(&self, client: &Client) -> Result<(Cursor, Start), ReaderError> {
        let (start, snapshot) = match self.settings.start_from {
            // Transactions below the snapshot's xmin have ended; the others visible in it
            // are filtered out by the snapshot itself.
            StartFrom::Now => ("pg_snapshot_xmin(s)", "s"),
            StartFrom::Beginning => ("'0'::xid8", "NULL::pg_snapshot"),
        };
        client
            .execute(
                &format!(
                    "INSERT INTO fraiseql.tb_observer_checkpoint \
                       (consumer, last_txid, last_pk, dispatched_txid, dispatched_pk, start_snapshot) \
                     SELECT $1, {start}, 0, {start}, 0, {snapshot} \
                     FROM (SELECT pg_current_snapshot() AS s) AS snap \
                     ON CONFLICT (consumer) DO NOTHING"
                ),
                &[&self.settings.consumer],
            )
            .await?;
        let row = client
            .query_one(
                "SELECT last_txid::text, last_pk, dispatched_txid::text, dispatched_pk, \
                   start_snapshot::text \
                 FROM fraiseql.tb_observer_checkpoint WHERE consumer = $1",
                &[&self.settings.consumer],
            )
            .await?;
        let parse = |s: String| s.parse::<u64>().map_err(|_| ReaderError::Checkpoint(s));
        let checkpoint = Cursor {
            txid: parse(row.get(0))?,
            pk: row.get(1),
        };
        let hwm = Cursor {
            txid: parse(row.get(2))?,
            pk: row.get(3),
        };
        Ok((
            checkpoint,
            Start {
                high_water_mark: hwm.max(checkpoint),
                snapshot: row.get(4),
            },
        ))
    }
}

/// Raises the dispatch high-water mark (durably, before the batch is dispatched).
async fn write_high_water_mark(
    client: &Client,
    consumer: &str,
    c: Cursor,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "UPDATE fraiseql.tb_observer_checkpoint \
             SET dispatched_txid = $2::text::xid8, dispatched_pk = $3 \
             WHERE consumer = $1 AND (dispatched_txid, dispatched_pk) < ($2::text::xid8, $3)",
            &[&consumer, &c.txid.to_string(), &c.pk],
        )
        .await?;
    Ok(())
}

/// Writes the safe cursor when it moved; once more when the session ends.
async fn checkpoint_task(
    client: Arc<Client>,
    consumer: String,
    tracker: Arc<super::dispatch::Tracker>,
    mut written: Cursor,
    every: Duration,
    end: CancellationToken,
) {
    loop {
        let stop = tokio::select! {
            _ = end.cancelled() => true,
            _ = tokio::time::sleep(every) => false,
        };
        let safe = tracker.safe_cursor();
        if safe != written {
            match write_checkpoint(&client, &consumer, safe).await {
                Ok(()) => written = safe,
                Err(e) => debug!(error = %e, "checkpoint write failed; will retry"),
            }
        }
        if stop {
            return;
        }
    }
}

async fn write_checkpoint(
    client: &Client,
    consumer: &str,
    c: Cursor,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "UPDATE fraiseql.tb_observer_checkpoint \
             SET last_txid = $2::text::xid8, last_pk = $3, updated_at = now() \
             WHERE consumer = $1 AND (last_txid, last_pk) < ($2::text::xid8, $3)",
            &[&consumer, &c.txid.to_string(), &c.pk],
        )
        .await?;
    Ok(())
}

/// Reads a consumer's checkpoint (for `fraiseql check` / tests).
pub async fn read_checkpoint(
    client: &Client,
    consumer: &str,
) -> Result<Option<Cursor>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            "SELECT last_txid::text, last_pk FROM fraiseql.tb_observer_checkpoint WHERE consumer = $1",
            &[&consumer],
        )
        .await?;
    Ok(row.and_then(|r| {
        let t: String = r.get(0);
        Some(Cursor {
            txid: t.parse().ok()?,
            pk: r.get(1),
        })
    }))
}

impl Reader {
    /// Publishes the batch's changes to JetStream (message id = the change's id), returning
    /// once JetStream stored every one of them; `false` when shutdown came first. Every
    /// change is published (entity names outside the subject alphabet are encoded), so the
    /// checkpoint never passes one that JetStream did not store.
    async fn publish(
        &self,
        bus: &crate::nats::EventBus,
        events: &[Option<ChangeEvent>],
        shutdown: &CancellationToken,
    ) -> Result<bool, ReaderError> {
        let prefix = &bus.config().subject_prefix;
        // Read once per batch: the server info is copied on every call.
        let max_payload = bus.max_payload().saturating_sub(PUBLISH_HEADROOM);
        let mut items = Vec::with_capacity(events.len());
        for ev in events.iter().flatten() {
            let op = ev.op;
            if let Err(e) = crate::nats::subject(prefix, &ev.entity, op) {
                warn!(pk = ev.pk, error = %e, "change not published to NATS");
                self.dispatcher.metrics.events_failed.inc();
                continue;
            }
            let mut payload = match serde_json::to_vec(ev) {
                Ok(p) => p,
                Err(e) => {
                    warn!(pk = ev.pk, error = %e, "change not published to NATS");
                    self.dispatcher.metrics.events_failed.inc();
                    continue;
                }
            };
            // Too large for one message (the server's max_payload, less room for the
            // headers): a reference instead, which consumers complete from the change log.
            // Retrying the full payload could never succeed and would hold every change
            // behind it.
            if payload.len() > max_payload {
                let reference = ChangeEvent {
                    before: None,
                    after: None,
                    mutation: None,
                    truncated: true,
                    ..ev.clone()
                };
                payload = serde_json::to_vec(&reference).unwrap_or_default();
                warn!(
                    pk = ev.pk,
                    bytes = payload.len(),
                    "change larger than NATS max_payload; published as a reference"
                );
            }
            items.push(crate::nats::OutgoingEvent {
                entity: ev.entity.clone(),
                op,
                msg_id: ev.id.to_string(),
                payload: payload.into(),
            });
        }
        if items.is_empty() {
            return Ok(true);
        }
        match bus.publish_batch(items, shutdown).await {
            Ok(outcomes) => {
                let dup = outcomes.iter().filter(|o| o.duplicate).count() as u64;
                let m = &self.dispatcher.metrics.events_published;
                m.with_label_values(&["new"])
                    .inc_by(outcomes.len() as u64 - dup);
                m.with_label_values(&["duplicate"]).inc_by(dup);
                Ok(true)
            }
            Err(crate::nats::NatsError::Cancelled) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

/// A change-log row selected with the columns of the reader's query; `None` when a column
/// does not decode.
pub(crate) fn decode(row: &tokio_postgres::Row) -> Option<ChangeEvent> {
    Some(ChangeEvent {
        pk: row.try_get("pk").ok()?,
        id: row.try_get("id").ok()?,
        occurred_at: row.try_get("occurred_at").ok()?,
        entity: row.try_get("entity").ok()?,
        entity_id: row.try_get("entity_id").ok()?,
        op: ChangeOp::parse(row.try_get("op").ok()?)?,
        before: row.try_get("before").ok()?,
        after: row.try_get("after").ok()?,
        changed_fields: row.try_get("changed_fields").ok()?,
        actor: row.try_get("actor").ok()?,
        tenant_id: row.try_get("tenant_id").ok()?,
        trace_id: row.try_get("trace_id").ok()?,
        mutation: row.try_get("mutation").ok()?,
        truncated: false,
    })
}
