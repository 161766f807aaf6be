//! Rows → RecordBatch: runs one planned statement and appends each row's binary values to
//! Arrow builders, sending a batch every `batch_rows` rows into a bounded channel.
//!
//! Memory stays bounded: tokio-postgres reads the result incrementally (its connection task
//! hands rows over through a channel of one message), the batch channel holds at most
//! [`BATCH_QUEUE`] batches, and a slow gRPC client therefore slows the producer, which
//! stops reading the socket, which makes PostgreSQL wait. When the client goes away (the
//! response stream is dropped) or the server shuts down, the stop token fires, the
//! PostgreSQL query is cancelled and the connection is dropped instead of being pooled
//! mid-result (both by dropping the statement's [`Session`]).
//!
//! An events stream reads the change log by its one delivery rule
//! ([`crate::db::changelog`]): pages after the last position sent, in `(txid, pk)` order,
//! never beyond the oldest running transaction, so a change that commits after a higher pk
//! was sent still comes, once. Each batch carries its rows' positions; the service puts the
//! last one in the batch's `app_metadata`, the client's resume point. A resume point below
//! the change-log prune horizon ([`crate::db::retention`]) is refused with `OUT_OF_RANGE`:
//! the rows after it are gone, and streaming on would skip them silently.

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::RecordBatch;
use futures_util::StreamExt;
use tokio::sync::{Notify, mpsc};
use tokio_postgres::types::{FromSql, Type};
use tokio_util::sync::CancellationToken;

use crate::db::changelog::Position;
use crate::db::{RequestContext, Session};

use super::plan::{SqlPlan, plan_events};
use super::registry::describe_pg;
use super::ticket::EventsTicket;
use super::types::{ColumnBuilder, oid};

/// Batches buffered between the producer and the gRPC stream. Two lets the producer fill
/// the next batch while the previous one is being encoded and sent.
pub const BATCH_QUEUE: usize = 2;

/// Rows the builders reserve up front. They grow (by doubling) to `batch_rows` when the
/// result is that large; reserving a full batch for a 4-row result would waste memory and
/// make the Flight encoder, which sizes batches by their allocated memory, split it.
const INITIAL_CAPACITY: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("database unavailable: {0}")]
    Pool(String),
    /// A data error caused by the client's values (SQLSTATE class 22), e.g. a filter value
    /// that is not a number.
    #[error("{0}")]
    BadValue(String),
    #[error("query failed: {0}")]
    Query(String),
    #[error("{0}")]
    Decode(String),
    #[error(
        "the view changed since the schema registry was loaded ({0}); run DoAction \"refresh\""
    )]
    SchemaChanged(String),
    #[error("server is shutting down")]
    ShuttingDown,
    #[error("{0}")]
    Arrow(String),
    /// An events ticket's `after` is below the change-log prune horizon.
    #[error(transparent)]
    Pruned(#[from] crate::db::retention::PrunedError),
}

impl StreamError {
    fn from_pg(e: &tokio_postgres::Error) -> StreamError {
        match e.code().map(|c| c.code()) {
            Some(code) if code.starts_with("22") => StreamError::BadValue(describe_pg(e)),
            // Undefined table or column: the registry is stale.
            Some("42P01" | "42703") => StreamError::SchemaChanged(describe_pg(e)),
            _ => StreamError::Query(describe_pg(e)),
        }
    }
}

impl From<StreamError> for tonic::Status {
    fn from(e: StreamError) -> tonic::Status {
        match &e {
            StreamError::BadValue(_) => tonic::Status::invalid_argument(e.to_string()),
            StreamError::SchemaChanged(_) => tonic::Status::failed_precondition(e.to_string()),
            // The position exists no more: like a Kafka offset out of range.
            StreamError::Pruned(_) => tonic::Status::out_of_range(e.to_string()),
            StreamError::Pool(_) | StreamError::ShuttingDown => {
                tonic::Status::unavailable(e.to_string())
            }
            _ => tonic::Status::internal(e.to_string()),
        }
    }
}

/// Any value's raw binary bytes, whatever its type: the decoders in
/// [`types`](super::types) interpret them, so no Rust value is built per field.
struct Raw<'a>(&'a [u8]);

impl<'a> FromSql<'a> for Raw<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(raw))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// One record batch and, for a change-log stream, each row's position (empty otherwise).
pub struct Batch {
    pub rows: RecordBatch,
    pub positions: Vec<Position>,
}

impl From<RecordBatch> for Batch {
    fn from(rows: RecordBatch) -> Batch {
        Batch {
            rows,
            positions: Vec::new(),
        }
    }
}

pub type BatchResult = Result<Batch, StreamError>;

/// Why a producer stopped early.
enum Stop {
    /// The client went away or the server is shutting down.
    Cancelled,
    /// The query or a value failed; the error goes to the client.
    Failed(StreamError),
}

/// What every stream producer (SQL, events, GraphQL rows) runs with: rows per batch, the
/// stream's own stop token (the client went away) and the server's shutdown.
#[derive(Clone)]
pub struct Producer {
    pub batch_rows: usize,
    pub stop: CancellationToken,
    pub shutdown: CancellationToken,
}

/// Runs `plan` and streams its rows as batches. The receiver yields at most one error, last.
pub fn spawn_sql(
    pool: deadpool_postgres::Pool,
    ctx: RequestContext,
    plan: SqlPlan,
    producer: Producer,
) -> mpsc::Receiver<BatchResult> {
    let Producer {
        batch_rows,
        stop,
        shutdown,
    } = producer;
    let (tx, rx) = mpsc::channel(BATCH_QUEUE);
    tokio::spawn(async move {
        let result = async {
            let session = start(&pool, &ctx).await?;
            let outcome = run_plan(session.client(), &plan, batch_rows, &tx, &stop).await;
            finish(session, &outcome).await?;
            match outcome? {
                // Cut short by shutdown: say so, or the client would take a truncated
                // result for a complete one.
                RunOutcome::Stopped if shutdown.is_cancelled() => Err(StreamError::ShuttingDown),
                _ => Ok(()),
            }
        }
        .await;
        report(result, &tx, &shutdown).await;
    });
    rx
}

/// Sends the final error, if any, unless the client is gone.
async fn report(
    result: Result<(), StreamError>,
    tx: &mpsc::Sender<BatchResult>,
    shutdown: &CancellationToken,
) {
    if let Err(e) = result {
        let e = if shutdown.is_cancelled() {
            StreamError::ShuttingDown
        } else {
            e
        };
        tracing::debug!(error = %e, "flight stream failed");
        let _ = tx.send(Err(e)).await;
    }
}

/// Refuses to go on from `after` when change-log rows after it were pruned
/// ([`crate::db::retention`]).
async fn check_horizon(session: &Session, after: Position) -> Result<(), StreamError> {
    let horizon = crate::db::retention::horizon(session.client())
        .await
        .map_err(|e| StreamError::Query(e.to_string()))?;
    crate::db::retention::check_resume(after, horizon)?;
    Ok(())
}

/// A pooled connection for one statement of the stream, with the request's context applied.
async fn start(
    pool: &deadpool_postgres::Pool,
    ctx: &RequestContext,
) -> Result<Session, StreamError> {
    let client = pool
        .get()
        .await
        .map_err(|e| StreamError::Pool(e.to_string()))?;
    Session::start(client, ctx)
        .await
        .map_err(|e| StreamError::from_pg(&e))
}

/// A statement read to its end hands its connection back; one cut short or failed drops
/// the session, which cancels the statement and closes the connection.
async fn finish(
    session: Session,
    outcome: &Result<RunOutcome, StreamError>,
) -> Result<(), StreamError> {
    match outcome {
        Ok(RunOutcome::Done { .. }) => session.finish().await.map_err(|e| StreamError::from_pg(&e)),
        _ => {
            drop(session);
            Ok(())
        }
    }
}

enum RunOutcome {
    Done {
        rows: u64,
        /// The last row's change-log position ([`SqlPlan::position`] plans only).
        last: Option<Position>,
    },
    Stopped,
}

/// Executes one statement into batches. Returns how many rows were sent and the last row's
/// position.
async fn run_plan(
    client: &deadpool_postgres::Object,
    plan: &SqlPlan,
    batch_rows: usize,
    tx: &mpsc::Sender<BatchResult>,
    stop: &CancellationToken,
) -> Result<RunOutcome, StreamError> {
    let types: Vec<Type> = plan.params.iter().map(|p| p.sql_type()).collect();
    // Not the connection's statement cache: tickets vary in shape without bound, and one
    // prepare round trip is nothing next to a Flight stream.
    let stmt = client
        .prepare_typed(&plan.sql, &types)
        .await
        .map_err(|e| StreamError::from_pg(&e))?;
    check_columns(&stmt, plan)?;
    let rows = client
        .query_raw(&stmt, plan.params.iter().map(|p| p.as_sql()))
        .await
        .map_err(|e| StreamError::from_pg(&e))?;
    let mut rows = pin!(rows);
    let mut cancelled = pin!(stop.cancelled());
    let ncols = plan.columns.len();
    let mut builders: Vec<ColumnBuilder> = plan
        .columns
        .iter()
        .map(|c| ColumnBuilder::new(&c.pg, batch_rows.min(INITIAL_CAPACITY)))
        .collect();
    let mut in_batch = 0usize;
    let mut total = 0u64;
    let mut positions: Vec<Position> = Vec::new();
    let mut last = None;
    let result: Result<(), Stop> = async {
        loop {
            let next = tokio::select! {
                biased;
                _ = &mut cancelled => return Err(Stop::Cancelled),
                r = rows.next() => r,
            };
            let Some(row) = next else { break };
            let row = row.map_err(|e| Stop::Failed(StreamError::from_pg(&e)))?;
            for (i, b) in builders.iter_mut().enumerate() {
                let column = || &plan.columns[i].name;
                let raw: Option<Raw<'_>> = row.try_get(i).map_err(|e| {
                    Stop::Failed(StreamError::Decode(format!("column {}: {e}", column())))
                })?;
                b.append(raw.map(|r| r.0)).map_err(|m| {
                    Stop::Failed(StreamError::Decode(format!("column {}: {m}", column())))
                })?;
            }
            if plan.position {
                let p = position(&row, ncols).map_err(Stop::Failed)?;
                positions.push(p);
                last = Some(p);
            }
            in_batch += 1;
            if in_batch == batch_rows {
                let batch = make_batch(plan, &mut builders, std::mem::take(&mut positions))?;
                total += in_batch as u64;
                in_batch = 0;
                send(tx, batch, &mut cancelled).await?;
            }
        }
        if in_batch > 0 {
            let batch = make_batch(plan, &mut builders, positions)?;
            total += in_batch as u64;
            send(tx, batch, &mut cancelled).await?;
        }
        Ok(())
    }
    .await;
    debug_assert_eq!(builders.len(), ncols);
    match result {
        Ok(()) => Ok(RunOutcome::Done { rows: total, last }),
        // The caller drops the session, which cancels the statement on the server.
        Err(Stop::Cancelled) => Ok(RunOutcome::Stopped),
        Err(Stop::Failed(e)) => Err(e),
    }
}

impl From<StreamError> for Stop {
    fn from(e: StreamError) -> Stop {
        Stop::Failed(e)
    }
}

fn make_batch(
    plan: &SqlPlan,
    builders: &mut [ColumnBuilder],
    positions: Vec<Position>,
) -> Result<Batch, StreamError> {
    let arrays = builders.iter_mut().map(|b| b.finish()).collect();
    let rows = RecordBatch::try_new(plan.schema.clone(), arrays)
        .map_err(|e| StreamError::Arrow(e.to_string()))?;
    Ok(Batch { rows, positions })
}

/// A change-log row's position: its `pk` (the first column) and the transaction id the
/// plan selects after the data columns.
fn position(row: &tokio_postgres::Row, txid_column: usize) -> Result<Position, StreamError> {
    let decode = |e: &dyn std::fmt::Display| StreamError::Decode(format!("position: {e}"));
    let pk: i64 = row.try_get(0).map_err(|e| decode(&e))?;
    let txid: &str = row.try_get(txid_column).map_err(|e| decode(&e))?;
    Position::from_parts(txid, pk).map_err(|e| decode(&e))
}

/// Sends a batch, waiting for room (back-pressure) unless the stream is stopped meanwhile.
async fn send(
    tx: &mpsc::Sender<BatchResult>,
    batch: Batch,
    cancelled: &mut std::pin::Pin<&mut tokio_util::sync::WaitForCancellationFuture<'_>>,
) -> Result<(), Stop> {
    tokio::select! {
        biased;
        _ = cancelled.as_mut() => Err(Stop::Cancelled),
        r = tx.send(Ok(batch)) => r.map_err(|_| Stop::Cancelled),
    }
}

/// The OID a result column must have for its registry type: read-as-text columns are
/// cast to text in the SELECT.
fn expected_oid(c: &super::registry::Column) -> u32 {
    use super::types::PgType;
    match &c.pg {
        PgType::AsText => oid::TEXT,
        PgType::Array(e) if e.read_as_text() => 1009,
        _ => c.type_oid,
    }
}

fn check_columns(stmt: &tokio_postgres::Statement, plan: &SqlPlan) -> Result<(), StreamError> {
    let cols = stmt.columns();
    // The position's transaction id comes after the data columns.
    let cols = match cols.split_last() {
        Some((txid, data)) if plan.position && txid.type_().oid() == oid::TEXT => data,
        _ if plan.position => return Err(StreamError::SchemaChanged("its columns differ".into())),
        _ => cols,
    };
    let arrays_ok = |got: &Type, c: &super::registry::Column| {
        // Array columns report the array type's OID, the registry the base type's.
        matches!(got.kind(), tokio_postgres::types::Kind::Array(_))
            && matches!(c.pg, super::types::PgType::Array(_))
    };
    if cols.len() != plan.columns.len()
        || cols.iter().zip(&plan.columns).any(|(got, want)| {
            let t = got.type_();
            (t.oid() != expected_oid(want) && !arrays_ok(t, want)) || got.name() != want.name
        })
    {
        return Err(StreamError::SchemaChanged("its columns differ".into()));
    }
    Ok(())
}

/// How a `follow` stream waits for new rows: a poll interval, and a notification that
/// wakes it early when the observer runtime sees a change.
#[derive(Clone)]
pub struct Follow {
    pub poll: Duration,
    pub wake: Option<Arc<Notify>>,
}

/// Streams change-log rows by the change log's delivery rule ([`crate::db::changelog`]), from the
/// ticket's `after` position; with `follow`, keeps polling for new rows until the client
/// goes away, the limit is reached, `until` has passed, or the server shuts down.
pub fn spawn_events(
    pool: deadpool_postgres::Pool,
    ctx: RequestContext,
    ticket: EventsTicket,
    follow: Follow,
    producer: Producer,
) -> mpsc::Receiver<BatchResult> {
    let Producer {
        batch_rows,
        stop,
        shutdown,
    } = producer;
    let (tx, rx) = mpsc::channel(BATCH_QUEUE);
    tokio::spawn(async move {
        let result = async {
            let mut after = ticket.after.unwrap_or_default();
            let mut remaining = ticket.limit.map(|l| l.min(i64::MAX as u64) as i64);
            loop {
                let page = remaining.map_or(batch_rows as i64, |r| r.min(batch_rows as i64));
                if page == 0 {
                    return Ok(());
                }
                let plan = plan_events(&ticket, after, page);
                let session = start(&pool, &ctx).await?;
                // Resuming (or going on) from a position: every row after it must still be
                // there. Checked before the page, so a pruned resume point sends nothing,
                // and after it, so a prune that ran meanwhile is not silently skipped.
                let resumes = ticket.after.is_some() || after != Position::default();
                if resumes {
                    check_horizon(&session, after).await?;
                }
                let outcome = run_plan(session.client(), &plan, batch_rows, &tx, &stop).await;
                if resumes && matches!(outcome, Ok(RunOutcome::Done { .. })) {
                    check_horizon(&session, after).await?;
                }
                finish(session, &outcome).await?;
                let (rows, last) = match outcome? {
                    RunOutcome::Done { rows, last } => (rows, last),
                    // A follow stream has no end: shutdown ends it cleanly. A bounded one
                    // cut short says so.
                    RunOutcome::Stopped if shutdown.is_cancelled() && !ticket.follow => {
                        return Err(StreamError::ShuttingDown);
                    }
                    RunOutcome::Stopped => return Ok(()),
                };
                if let Some(p) = last {
                    after = p;
                }
                if let Some(r) = remaining.as_mut() {
                    *r -= rows as i64;
                }
                if (rows as i64) < page {
                    // Caught up.
                    if !ticket.follow || ticket.until.is_some_and(|u| chrono::Utc::now() >= u) {
                        return Ok(());
                    }
                    let woken = async {
                        match &follow.wake {
                            Some(n) => n.notified().await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        _ = stop.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(follow.poll) => {}
                        _ = woken => {}
                    }
                }
            }
        }
        .await;
        report(result, &tx, &shutdown).await;
    });
    rx
}
