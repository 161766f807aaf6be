//! Analytics sinks (`[[sinks]]`): a continuous, batched, checkpointed stream of change events
//! from `fraiseql.tb_entity_change_log` into ClickHouse ([`clickhouse`]) or
//! Elasticsearch/OpenSearch ([`elasticsearch`]), exactly once in effect.
//!
//! Each sink runs inside `serve` ([`spawn`], under the shutdown token and the role's task
//! tracker), one leader at a time across instances ([`crate::db::leader`], the observer
//! reader's mechanism, on the lock `fraiseql.sinks:<name>`). The leader:
//! 1. loads its position from `fraiseql.tb_sink_checkpoint` (`0:0` the first time: a sink
//!    starts from the beginning of the log);
//! 2. reads the rows after it by the change log's one delivery rule
//!    ([`crate::db::changelog`]: `(txid, pk)` order, only transactions older than every
//!    running one), at most `max_rows` at a time (`LIMIT`), so memory stays bounded whatever
//!    the backlog;
//! 3. encodes them ([`Sink::encode`]) into a batch until `max_rows` or `max_bytes` is reached
//!    or the first buffered change has waited `max_delay_ms`;
//! 4. sends the batch ([`Sink::send`]) until the backend acknowledges it, retrying with
//!    backoff ([`crate::backoff`]) and sending again only the items it asks for (429/5xx);
//!    items refused for good go to `fraiseql.tb_sink_dead_letter` with the reason;
//! 5. only then moves the checkpoint past the batch (in the same transaction as the dead
//!    letters).
//!
//! A crash between 4 and 5 (kill -9, a lost connection, a takeover) sends the batch again.
//! That is safe by construction of the backends' keys, not by luck: every change carries its
//! `version` = its change-log `pk`, so ClickHouse's `ReplacingMergeTree(version)` ordered by
//! `(entity, entity_id, version)` collapses the copy, and Elasticsearch's external versions
//! answer 409 (counted as already applied).
//!
//! Why `pk` as the version and not a packing of `(txid, pk)`: `(txid, pk)` is the order in
//! which rows become safe to read, not the order of one entity's changes. Two changes to the
//! same row are serialised by the row lock: the second writer's trigger runs after the first
//! writer committed, so its `pk` (taken from the sequence then) is larger. Its `txid` may be
//! smaller, though (the transaction can have started writing elsewhere earlier). So per
//! entity, `pk` order is the order of the changes, and it is unique and fits in a `UInt64`
//! — what both an external version and a ReplacingMergeTree version need. A re-sent or
//! out-of-`pk`-order delivered change is thus never mistaken for a newer one.

pub mod clickhouse;
pub mod config;
pub mod elasticsearch;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub use config::{DocumentId, SinkConfig, SinkKind};

use crate::db::changelog::{self, Position};
use crate::db::leader::{self, Leadership};
use crate::metrics::metrics;
use crate::observers::matcher::ChangeEvent;

/// `application_name` of a sink's session.
pub const APPLICATION_NAME: &str = "fraiseql-sink";
/// Largest count behind `fraiseql_sink_lag_events`: the count stays cheap on a huge backlog.
const LAG_COUNT_CAP: i64 = 1_000_000;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The backend could not be reached, or did not answer in time.
    #[error("{0}")]
    Unavailable(String),
    /// The backend refused the whole request.
    #[error("HTTP {status}: {body}")]
    Rejected { status: u16, body: String },
    /// The backend answered something this sink does not understand.
    #[error("unexpected answer: {0}")]
    Protocol(String),
    /// A change that cannot be encoded for this backend (dead-lettered).
    #[error("cannot encode change: {0}")]
    Encode(String),
    #[error("database: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("{0}")]
    Connect(String),
    #[error("bad checkpoint value: {0}")]
    Checkpoint(String),
    #[error("the sink's database connection was lost")]
    ConnectionLost,
}

impl SinkError {
    /// The `reason` label of `fraiseql_sink_failures_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            SinkError::Unavailable(_) => "unavailable",
            SinkError::Rejected { .. } | SinkError::Protocol(_) => "rejected",
            SinkError::Encode(_) => "dead_letter",
            SinkError::Db(_)
            | SinkError::Connect(_)
            | SinkError::Checkpoint(_)
            | SinkError::ConnectionLost => "database",
        }
    }
}

/// One change, encoded for the sink.
#[derive(Debug, Clone)]
pub struct Record {
    pub position: Position,
    pub event: ChangeEvent,
    /// What [`Sink::encode`] made of it (one or more whole lines).
    pub encoded: Vec<u8>,
}

/// Changes sent together, in change-log order.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub records: Vec<Record>,
    /// Sum of the records' encoded sizes.
    pub bytes: usize,
}

impl Batch {
    fn push(&mut self, r: Record) {
        self.bytes += r.encoded.len();
        self.records.push(r);
    }

    /// The request body: the records' lines, concatenated.
    pub fn body(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(self.bytes);
        for r in &self.records {
            body.extend_from_slice(&r.encoded);
        }
        body
    }
}

/// An item of a batch the backend refused for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// Index into [`Batch::records`].
    pub index: usize,
    pub status: Option<u16>,
    pub reason: String,
}

/// What the backend made of a batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ack {
    /// Items applied now.
    pub applied: usize,
    /// Items the backend already had (a re-sent batch).
    pub already: usize,
    /// Items to send again later (429, 5xx), by index into [`Batch::records`].
    pub retry: Vec<usize>,
    /// Items refused for good: dead-lettered, and the checkpoint moves past them.
    pub refused: Vec<Refused>,
}

/// A backend. Implementations own only their wire format; reading, batching, retries and
/// checkpoints are the runner's.
#[async_trait::async_trait]
pub trait Sink: Send + Sync {
    /// The change as the bytes it adds to a request body (whole lines).
    fn encode(&self, position: Position, event: &ChangeEvent) -> Result<Vec<u8>, SinkError>;
    /// Sends a batch; `Err` when nothing can be said about any item (send it all again).
    async fn send(&self, batch: &Batch) -> Result<Ack, SinkError>;
    /// Reaches the backend (for `fraiseql check`): what it is, and that the target exists.
    async fn reach(&self) -> Result<String, SinkError>;
}

/// The backend of `cfg`.
pub fn build(cfg: &SinkConfig) -> Result<Arc<dyn Sink>, SinkError> {
    Ok(match cfg.kind {
        SinkKind::Clickhouse => Arc::new(clickhouse::ClickHouse::new(cfg)?),
        SinkKind::Elasticsearch => Arc::new(elasticsearch::Elasticsearch::new(cfg)?),
    })
}

/// The HTTP client of a sink: the actions' client (rustls with ring, bundled roots, the
/// crate's resolver) with the sink's request timeout.
pub(crate) fn http_client(cfg: &SinkConfig) -> Result<reqwest::Client, SinkError> {
    crate::actions::http_client_builder(Vec::new())
        .timeout(Duration::from_millis(cfg.request_timeout_ms))
        .connect_timeout(Duration::from_millis(cfg.request_timeout_ms.min(5_000)))
        .build()
        .map_err(|e| SinkError::Connect(e.to_string()))
}

/// Describes a reqwest failure without the URL's credentials.
pub(crate) fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut s = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

/// Starts every configured sink on `tracker`; each stops on `shutdown`.
pub fn spawn(
    config: &crate::config::Config,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    if config.sinks.is_empty() {
        return Ok(());
    }
    let pg_config = crate::db::pg_config(&config.database)?;
    for cfg in &config.sinks {
        let sink = build(cfg).map_err(|e| anyhow::anyhow!("sink \"{}\": {e}", cfg.name))?;
        metrics().sinks.known(&cfg.name);
        let runner = Runner {
            cfg: cfg.clone(),
            sink,
            pg_config: pg_config.clone(),
            tls_ca_file: config.database.tls_ca_file.clone(),
        };
        tracker.spawn(runner.run(shutdown.clone()));
    }
    info!(sinks = config.sinks.len(), "sinks started");
    Ok(())
}

/// One sink's loop: leader sessions until shutdown.
pub struct Runner {
    pub cfg: SinkConfig,
    pub sink: Arc<dyn Sink>,
    pub pg_config: tokio_postgres::Config,
    pub tls_ca_file: String,
}

fn read_sql() -> String {
    format!(
        "SELECT {columns} FROM fraiseql.tb_entity_change_log \
         WHERE {after} AND {safe} AND ($4::text[] IS NULL OR entity = ANY($4::text[])) \
         ORDER BY {order} LIMIT $3",
        columns = changelog::EVENT_COLUMNS,
        after = changelog::after("$1::text", "$2::bigint"),
        safe = changelog::SAFE,
        order = changelog::ORDER,
    )
}

fn lag_sql() -> String {
    format!(
        "SELECT count(*) FROM (SELECT 1 FROM fraiseql.tb_entity_change_log \
           WHERE {after} AND ($3::text[] IS NULL OR entity = ANY($3::text[])) LIMIT {LAG_COUNT_CAP}) s",
        after = changelog::after("$1::text", "$2::bigint"),
    )
}

/// The batch being filled, and the position after everything read into it (records and
/// undecodable rows alike).
struct Pending {
    batch: Batch,
    /// Rows that could not be decoded or encoded: dead-lettered with the batch.
    refused: Vec<(Position, Option<ChangeEvent>, String)>,
    last: Option<Position>,
    since: Option<Instant>,
}

impl Pending {
    fn new() -> Pending {
        Pending {
            batch: Batch::default(),
            refused: Vec::new(),
            last: None,
            since: None,
        }
    }

    fn rows(&self) -> usize {
        self.batch.records.len() + self.refused.len()
    }
}

impl Runner {
    /// Runs leader sessions until `shutdown`; a failed session is retried after
    /// `takeover_interval_ms`.
    pub async fn run(self, shutdown: CancellationToken) {
        let retry = Duration::from_millis(self.cfg.takeover_interval_ms);
        while !shutdown.is_cancelled() {
            match self.session(&shutdown).await {
                Ok(()) => break,
                Err(e) => {
                    metrics()
                        .sinks
                        .failures
                        .with_label_values(&[&self.cfg.name, e.reason()])
                        .inc();
                    warn!(sink = %self.cfg.name, error = %e, "sink session ended; retrying")
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(retry) => {}
            }
        }
        info!(sink = %self.cfg.name, "sink stopped");
    }

    async fn session(&self, shutdown: &CancellationToken) -> Result<(), SinkError> {
        let mut pg_config = self.pg_config.clone();
        pg_config.application_name(APPLICATION_NAME);
        let wake = Arc::new(Notify::new());
        let conn_end = CancellationToken::new();
        let _end_guard = conn_end.clone().drop_guard();
        let (mut client, lost) = {
            let wake = wake.clone();
            crate::db::session(
                &pg_config,
                &self.tls_ca_file,
                move || wake.notify_one(),
                conn_end.clone(),
            )
            .await
            .map_err(|e| SinkError::Connect(e.to_string()))?
        };
        // Losing the last checkpoint writes to a PostgreSQL crash only re-sends batches,
        // which the backends' versions collapse; a WAL flush per batch would not buy more.
        client
            .batch_execute(&format!(
                "SET synchronous_commit = off; LISTEN {}",
                crate::observers::reader::CHANNEL
            ))
            .await?;
        let lock = format!("fraiseql.sinks:{}", self.cfg.name);
        let every = Duration::from_millis(self.cfg.takeover_interval_ms);
        let standing_by =
            || info!(sink = %self.cfg.name, "another instance is this sink's leader; standing by");
        match leader::acquire(&client, &lock, every, shutdown, &lost, standing_by).await? {
            Leadership::Acquired => {}
            Leadership::Shutdown => return Ok(()),
            Leadership::Lost => return Err(SinkError::ConnectionLost),
        }
        let mut cursor = load_checkpoint(&client, &self.cfg.name).await?;
        info!(sink = %self.cfg.name, position = %cursor, "sink leader; sending from checkpoint");
        self.read_loop(&mut client, &mut cursor, &wake, &lost, shutdown)
            .await
    }

    async fn read_loop(
        &self,
        client: &mut Client,
        cursor: &mut Position,
        wake: &Notify,
        lost: &CancellationToken,
        shutdown: &CancellationToken,
    ) -> Result<(), SinkError> {
        let read = client.prepare(&read_sql()).await?;
        let lag = client.prepare(&lag_sql()).await?;
        let entities: Option<Vec<String>> =
            (!self.cfg.entities.is_empty()).then(|| self.cfg.entities.clone());
        let m = &metrics().sinks;
        let name = self.cfg.name.as_str();
        let max_delay = Duration::from_millis(self.cfg.max_delay_ms);
        let poll = Duration::from_millis(self.cfg.poll_interval_ms);
        let mut pending = Pending::new();
        let mut lag_counted = false;
        loop {
            if shutdown.is_cancelled() {
                return Ok(());
            }
            let from = pending.last.unwrap_or(*cursor);
            let want = self.cfg.max_rows.saturating_sub(pending.rows()).max(1);
            let limit = i64::try_from(want).unwrap_or(i64::MAX);
            let rows = client
                .query(
                    &read,
                    &[&from.txid.to_string(), &from.pk, &limit, &entities],
                )
                .await?;
            let page_full = rows.len() >= want;
            let mut stopped_early = false;
            for row in &rows {
                let txid: &str = row.get("txid");
                let position = Position::from_parts(txid, row.get("pk"))
                    .map_err(|_| SinkError::Checkpoint(txid.to_string()))?;
                match crate::observers::reader::decode(row) {
                    Some(event) => match self.sink.encode(position, &event) {
                        Ok(encoded) => {
                            // A change that alone exceeds max_bytes goes in a batch of its own.
                            if !pending.batch.records.is_empty()
                                && pending.batch.bytes + encoded.len() > self.cfg.max_bytes
                            {
                                stopped_early = true;
                                break;
                            }
                            pending.batch.push(Record {
                                position,
                                event,
                                encoded,
                            });
                        }
                        Err(e) => pending.refused.push((position, Some(event), e.to_string())),
                    },
                    None => pending.refused.push((
                        position,
                        None,
                        "change-log row could not be decoded".into(),
                    )),
                }
                pending.since.get_or_insert_with(Instant::now);
                pending.last = Some(position);
            }
            let oldest = pending.batch.records.first().map(|r| r.event.occurred_at);
            m.lag_seconds
                .with_label_values(&[name])
                .set(oldest.map_or(0.0, |t| {
                    (chrono::Utc::now() - t).num_microseconds().unwrap_or(0) as f64 / 1e6
                }));
            let full = stopped_early
                || pending.rows() >= self.cfg.max_rows
                || pending.batch.bytes >= self.cfg.max_bytes;
            let waited = pending.since.map(|s| s.elapsed()).unwrap_or_default();
            if pending.last.is_some() && (full || waited >= max_delay) {
                let batch = std::mem::replace(&mut pending, Pending::new());
                if !self.flush(client, batch, cursor, lost, shutdown).await? {
                    return Ok(());
                }
                lag_counted = false;
                continue;
            }
            if page_full {
                continue;
            }
            if !lag_counted {
                // Once per catch-up, not per poll: an idle sink does not count rows.
                let n: i64 = client
                    .query_one(&lag, &[&cursor.txid.to_string(), &cursor.pk, &entities])
                    .await?
                    .get(0);
                m.lag_events.with_label_values(&[name]).set(n);
                lag_counted = true;
            }
            let wait = match pending.since {
                Some(s) => max_delay.saturating_sub(s.elapsed()).min(poll),
                None => poll,
            };
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = lost.cancelled() => return Err(SinkError::ConnectionLost),
                _ = wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Sends `pending` until acknowledged, then moves the checkpoint past it (with its dead
    /// letters, in one transaction). `false`: shutdown came first (nothing written; the batch
    /// is sent again by the next leader).
    async fn flush(
        &self,
        client: &mut Client,
        pending: Pending,
        cursor: &mut Position,
        lost: &CancellationToken,
        shutdown: &CancellationToken,
    ) -> Result<bool, SinkError> {
        let m = &metrics().sinks;
        let name = self.cfg.name.as_str();
        let Pending {
            batch,
            mut refused,
            last,
            ..
        } = pending;
        let Some(last) = last else {
            return Ok(true);
        };
        let total = batch.records.len();
        let mut to_send = batch;
        let mut backoff = self.cfg.retry.backoff();
        while !to_send.records.is_empty() {
            let sent = tokio::select! {
                _ = shutdown.cancelled() => return Ok(false),
                _ = lost.cancelled() => return Err(SinkError::ConnectionLost),
                r = self.sink.send(&to_send) => r,
            };
            m.bytes
                .with_label_values(&[name])
                .inc_by(to_send.bytes as u64);
            let retry = match sent {
                Ok(ack) => {
                    m.rows
                        .with_label_values(&[name])
                        .inc_by((ack.applied + ack.already) as u64);
                    for r in &ack.refused {
                        if let Some(rec) = to_send.records.get(r.index) {
                            let reason = match r.status {
                                Some(s) => format!("HTTP {s}: {}", r.reason),
                                None => r.reason.clone(),
                            };
                            refused.push((rec.position, Some(rec.event.clone()), reason));
                        }
                    }
                    if ack.retry.is_empty() {
                        break;
                    }
                    m.failures
                        .with_label_values(&[name, "item_retry"])
                        .inc_by(ack.retry.len() as u64);
                    let mut next = Batch::default();
                    for i in ack.retry {
                        if let Some(rec) = to_send.records.get(i) {
                            next.push(rec.clone());
                        }
                    }
                    to_send = next;
                    backoff.next_delay()
                }
                Err(e) => {
                    m.failures.with_label_values(&[name, e.reason()]).inc();
                    let delay = backoff.next_delay();
                    warn!(sink = %name, error = %e, rows = to_send.records.len(), retry_in_ms = delay.as_millis() as u64, "sink batch not acknowledged; retrying");
                    delay
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(false),
                _ = lost.cancelled() => return Err(SinkError::ConnectionLost),
                _ = tokio::time::sleep(retry) => {}
            }
        }
        m.failures
            .with_label_values(&[name, "dead_letter"])
            .inc_by(refused.len() as u64);
        let tx = client.transaction().await?;
        for (position, event, reason) in &refused {
            warn!(sink = %name, pk = position.pk, %reason, "change refused by the sink; dead-lettered");
            let document = event.as_ref().map(|e| e.document());
            tx.execute(
                "INSERT INTO fraiseql.tb_sink_dead_letter \
                   (sink, change_pk, entity, entity_id, reason, document) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (sink, change_pk) DO NOTHING",
                &[
                    &name,
                    &position.pk,
                    &event.as_ref().map_or("", |e| e.entity.as_str()),
                    &event.as_ref().and_then(|e| e.entity_id),
                    reason,
                    &document,
                ],
            )
            .await?;
        }
        let rows_sent = i64::try_from(total).unwrap_or(i64::MAX);
        // Only forwards: a stale leader (its lock lost with its connection) never moves a
        // newer leader's checkpoint back.
        tx.execute(
            "UPDATE fraiseql.tb_sink_checkpoint \
             SET last_txid = $2::text::xid8, last_pk = $3, rows_sent = rows_sent + $4, \
                 updated_at = now() \
             WHERE sink = $1 AND (last_txid, last_pk) < ($2::text::xid8, $3)",
            &[&name, &last.txid.to_string(), &last.pk, &rows_sent],
        )
        .await?;
        tx.commit().await?;
        *cursor = last;
        m.batches.with_label_values(&[name]).inc();
        Ok(true)
    }
}

/// The sink's checkpoint, created at `0:0` (before every row) on first use.
async fn load_checkpoint(client: &Client, sink: &str) -> Result<Position, SinkError> {
    client
        .execute(
            "INSERT INTO fraiseql.tb_sink_checkpoint (sink) VALUES ($1) ON CONFLICT (sink) DO NOTHING",
            &[&sink],
        )
        .await?;
    read_checkpoint(client, sink)
        .await?
        .ok_or_else(|| SinkError::Checkpoint(format!("no checkpoint row for sink {sink}")))
}

/// A sink's checkpoint, if it has one (for `fraiseql check` and tests).
pub async fn read_checkpoint(client: &Client, sink: &str) -> Result<Option<Position>, SinkError> {
    let row = client
        .query_opt(
            "SELECT last_txid::text, last_pk FROM fraiseql.tb_sink_checkpoint WHERE sink = $1",
            &[&sink],
        )
        .await?;
    match row {
        Some(r) => {
            let txid: String = r.get(0);
            Position::from_parts(&txid, r.get(1))
                .map(Some)
                .map_err(|_| SinkError::Checkpoint(txid))
        }
        None => Ok(None),
    }
}

/// Changes after `sink`'s checkpoint (all of them without one), counted up to 1,000,000.
pub async fn lag(client: &Client, cfg: &SinkConfig) -> Result<i64, SinkError> {
    let at = read_checkpoint(client, &cfg.name)
        .await?
        .unwrap_or_default();
    let entities: Option<Vec<String>> = (!cfg.entities.is_empty()).then(|| cfg.entities.clone());
    Ok(client
        .query_one(&lag_sql(), &[&at.txid.to_string(), &at.pk, &entities])
        .await?
        .get(0))
}
