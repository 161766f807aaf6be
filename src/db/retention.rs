//! Change-log retention: `fraiseql db prune` and the periodic prune of `serve`
//! (`[change_log] retention`).
//!
//! What is deleted: a *prefix* of `fraiseql.tb_entity_change_log` in the change log's
//! position order `(txid, pk)` ([`crate::db::changelog`]), made of rows that are
//! - older than the retention (`occurred_at`),
//! - strictly before every durable checkpoint in the database (every row of
//!   `fraiseql.v_change_log_checkpoint`: each observer reader group of
//!   `fraiseql.tb_observer_checkpoint` — the NATS publisher is the reader: it publishes before
//!   its checkpoint moves, so its position is the same row — and each analytics sink of
//!   `fraiseql.tb_sink_checkpoint` as `sink:<name>`), and
//! - older than every transaction still running ([`changelog::SAFE`], the reader's own rule):
//!   a running transaction can still add rows at positions below later committed ones, and
//!   those rows must not land behind what was pruned.
//!
//! A prefix, not every row that qualifies: the first row that must stay (too young, or at a
//! checkpoint) ends the deletion, so "everything at or below the horizon is gone, everything
//! above it is kept" holds exactly. The horizon — the newest position deleted — is recorded
//! in `fraiseql.tb_change_log_horizon` in the same transaction as the delete, and Flight
//! `events` tickets that resume from a position below it are refused
//! ([`PrunedError`]) instead of silently skipping the rows the client never received.
//! A configured reader that has no checkpoint yet and starts from the beginning would want
//! every row: nothing is deleted until it has one.
//!
//! Deletion runs in batches of `prune_batch` rows, one short transaction each (select the
//! next rows in position order, delete the qualifying prefix by pk, raise the horizon), so a
//! large backlog never holds locks for long. Concurrent prunes (several `serve` instances)
//! are safe: each batch re-reads the checkpoints, a row deleted twice is deleted once, and
//! the horizon only moves forward.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::changelog::{self, Position};
use crate::setting::Invalid;

/// `[change_log]`: retention of `fraiseql.tb_entity_change_log`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChangeLogConfig {
    /// Keep rows at least this long (`30m`, `12h`, `7d`, `2w`); unset keeps everything.
    /// `serve` then prunes every `prune_interval_ms`; `fraiseql db prune` uses it when no
    /// `--older-than` is given.
    pub retention: Option<String>,
    /// How often `serve` prunes when `retention` is set.
    pub prune_interval_ms: u64,
    /// Rows deleted per transaction.
    pub prune_batch: u32,
}

impl Default for ChangeLogConfig {
    fn default() -> Self {
        ChangeLogConfig {
            retention: None,
            prune_interval_ms: 3_600_000,
            prune_batch: 10_000,
        }
    }
}

impl ChangeLogConfig {
    /// Checks what the types alone cannot.
    pub fn validate(&self) -> Result<(), Invalid> {
        if let Some(r) = &self.retention {
            parse_duration(r).map_err(|e| Invalid::new("change_log.retention", e))?;
        }
        if self.prune_interval_ms < 1000 {
            return Err(Invalid::new(
                "change_log.prune_interval_ms",
                "expected at least 1000",
            ));
        }
        if self.prune_batch == 0 || self.prune_batch > 1_000_000 {
            return Err(Invalid::new(
                "change_log.prune_batch",
                "expected 1 to 1000000",
            ));
        }
        Ok(())
    }

    /// The retention, when set (validated at load).
    pub fn retention(&self) -> Option<Duration> {
        self.retention
            .as_deref()
            .and_then(|r| parse_duration(r).ok())
    }
}

/// A duration such as `90s`, `30m`, `12h`, `7d`, `2w` (the `dlq purge --older-than` form).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::queue::dlq::parse_age(s)
}

#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    #[error("database: {0}")]
    Db(String),
    #[error("invalid change-log position in the database: {0}")]
    Position(#[from] changelog::PositionError),
}

impl From<tokio_postgres::Error> for PruneError {
    fn from(e: tokio_postgres::Error) -> Self {
        PruneError::Db(super::describe(&e))
    }
}

/// What to prune.
#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// Only rows at least this old.
    pub older_than: Duration,
    /// Rows per transaction.
    pub batch: u32,
    /// Count what would go, delete nothing.
    pub dry_run: bool,
    /// Readers this configuration runs that start from the beginning: while one has no
    /// checkpoint yet, nothing is deleted (it would want every row).
    pub required_consumers: Vec<String>,
}

/// Why the deletion stopped where it did (the first row kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeptBy {
    /// Nothing (more) to delete: the log ends before any limit.
    End,
    /// A row younger than the retention.
    Age,
    /// A consumer's checkpoint (its name and position).
    Checkpoint(String, Position),
    /// A transaction still running (rows from it and after it are kept).
    RunningTransaction,
    /// A configured reader has no checkpoint yet.
    NoCheckpoint(String),
}

impl std::fmt::Display for KeptBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeptBy::End => write!(f, "no older rows"),
            KeptBy::Age => write!(f, "the next row is younger than the retention"),
            KeptBy::Checkpoint(c, p) => write!(
                f,
                "the checkpoint of consumer \"{c}\" at {p} (rows it has not passed are kept)"
            ),
            KeptBy::RunningTransaction => write!(
                f,
                "a transaction still running (its rows and every later one are kept)"
            ),
            KeptBy::NoCheckpoint(c) => write!(
                f,
                "consumer \"{c}\" has no checkpoint yet and starts from the beginning: nothing \
                 is deleted until it has read the log"
            ),
        }
    }
}

/// What a prune did (or, with `dry_run`, would do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PruneReport {
    pub dry_run: bool,
    /// Rows deleted (would be deleted).
    pub rows: u64,
    /// The newest position deleted (would be), if any.
    pub last: Option<Position>,
    /// The horizon now recorded (before the prune, with `dry_run`).
    pub horizon: Option<Position>,
    pub kept_by: KeptBy,
}

impl std::fmt::Display for PruneReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verb = if self.dry_run {
            "would delete"
        } else {
            "deleted"
        };
        write!(f, "{verb} {} change-log rows", self.rows)?;
        if let Some(last) = self.last {
            write!(f, " (up to position {last})")?;
        }
        write!(f, "; kept from there on: {}", self.kept_by)?;
        match self.horizon {
            Some(h) => write!(f, "; prune horizon {h}"),
            None => write!(f, "; nothing pruned so far"),
        }
    }
}

/// The recorded horizon: the newest position ever pruned (`None`: nothing was).
pub async fn horizon(client: &Client) -> Result<Option<Position>, PruneError> {
    let row = client
        .query_opt(
            "SELECT pruned_txid::text, pruned_pk FROM fraiseql.tb_change_log_horizon",
            &[],
        )
        .await?;
    match row {
        Some(r) => Ok(Some(Position::from_parts(r.get(0), r.get(1))?)),
        None => Ok(None),
    }
}

/// A Flight `events` resume position below the prune horizon: rows after it are gone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "change-log position {after} was pruned: rows up to {horizon} were deleted by the change-log \
     retention ([change_log] retention / fraiseql db prune), so resuming there would skip \
     changes; start again without \"after\" (from the oldest row kept) or from a position at or \
     after {horizon}"
)]
pub struct PrunedError {
    pub after: Position,
    pub horizon: Position,
}

/// Refuses `after` when rows after it were pruned.
pub fn check_resume(after: Position, horizon: Option<Position>) -> Result<(), PrunedError> {
    match horizon {
        Some(horizon) if after < horizon => Err(PrunedError { after, horizon }),
        _ => Ok(()),
    }
}

/// Deletes (or counts, with `dry_run`) the prunable prefix of the change log. See the
/// module docs for the rule.
pub async fn prune(client: &mut Client, opts: &PruneOptions) -> Result<PruneReport, PruneError> {
    let mut report = PruneReport {
        dry_run: opts.dry_run,
        rows: 0,
        last: None,
        horizon: horizon(&*client).await?,
        kept_by: KeptBy::End,
    };
    if !opts.required_consumers.is_empty() {
        let present: Vec<String> = client
            .query(
                "SELECT consumer FROM fraiseql.v_change_log_checkpoint WHERE consumer = ANY($1)",
                &[&opts.required_consumers],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if let Some(missing) = opts
            .required_consumers
            .iter()
            .find(|c| !present.contains(c))
        {
            report.kept_by = KeptBy::NoCheckpoint(missing.clone());
            return Ok(report);
        }
    }
    let secs = opts.older_than.as_secs_f64();
    let batch = i64::from(opts.batch.max(1));
    // Where the previous batch stopped: the next one reads after it (a dry run deletes
    // nothing, so it must not read the same rows again).
    let mut cursor = Position::default();
    loop {
        let tx = client.transaction().await?;
        // Read the checkpoints in this transaction: a consumer created since the last batch
        // counts too.
        let checkpoint = tx
            .query_opt(
                "SELECT consumer, last_txid::text, last_pk FROM fraiseql.v_change_log_checkpoint \
                 ORDER BY last_txid, last_pk LIMIT 1",
                &[],
            )
            .await?;
        let checkpoint = match checkpoint {
            Some(r) => Some((
                r.get::<_, String>(0),
                Position::from_parts(r.get(1), r.get(2))?,
            )),
            None => None,
        };
        let (cp_txid, cp_pk) = checkpoint.as_ref().map_or((None, None), |(_, p)| {
            (Some(p.txid.to_string()), Some(p.pk))
        });
        let mut conds = vec![
            changelog::SAFE.to_string(),
            changelog::after("$1::text", "$2::bigint"),
        ];
        if checkpoint.is_some() {
            conds.push(changelog::before("$5::text", "$6::bigint"));
        }
        let sql = format!(
            "SELECT pk, {}, occurred_at < now() - make_interval(secs => $3) \
             FROM fraiseql.tb_entity_change_log WHERE {} ORDER BY {} LIMIT $4",
            changelog::TXID_TEXT,
            conds.join(" AND "),
            changelog::ORDER
        );
        let cursor_txid = cursor.txid.to_string();
        let rows = if checkpoint.is_some() {
            tx.query(
                &sql,
                &[&cursor_txid, &cursor.pk, &secs, &batch, &cp_txid, &cp_pk],
            )
            .await?
        } else {
            tx.query(&sql, &[&cursor_txid, &cursor.pk, &secs, &batch])
                .await?
        };
        let fetched = rows.len();
        let mut pks: Vec<i64> = Vec::with_capacity(fetched);
        let mut last = None;
        let mut young = false;
        for r in &rows {
            if !r.get::<_, bool>(2) {
                young = true;
                break;
            }
            let pk: i64 = r.get(0);
            pks.push(pk);
            last = Some(Position::from_parts(r.get(1), pk)?);
        }
        if let Some(last) = last {
            if !opts.dry_run {
                tx.execute(
                    "DELETE FROM fraiseql.tb_entity_change_log WHERE pk = ANY($1)",
                    &[&pks],
                )
                .await?;
                // Only forwards: a concurrent prune may have gone further already.
                tx.execute(
                    "INSERT INTO fraiseql.tb_change_log_horizon AS h \
                       (id, pruned_txid, pruned_pk, pruned_rows, pruned_at) \
                     VALUES (true, CAST($1::text AS xid8), $2, $3, now()) \
                     ON CONFLICT (id) DO UPDATE SET \
                       pruned_txid = CASE WHEN (EXCLUDED.pruned_txid, EXCLUDED.pruned_pk) \
                         > (h.pruned_txid, h.pruned_pk) THEN EXCLUDED.pruned_txid ELSE h.pruned_txid END, \
                       pruned_pk = CASE WHEN (EXCLUDED.pruned_txid, EXCLUDED.pruned_pk) \
                         > (h.pruned_txid, h.pruned_pk) THEN EXCLUDED.pruned_pk ELSE h.pruned_pk END, \
                       pruned_rows = h.pruned_rows + EXCLUDED.pruned_rows, \
                       pruned_at = now()",
                    &[&last.txid.to_string(), &last.pk, &(pks.len() as i64)],
                )
                .await?;
            }
            report.rows += pks.len() as u64;
            report.last = Some(last);
            cursor = last;
        }
        if young {
            tx.commit().await?;
            report.kept_by = KeptBy::Age;
            break;
        }
        if (fetched as i64) < batch {
            // The read ran out of rows below the limits: say which limit it met.
            report.kept_by = match &checkpoint {
                Some((c, p)) if next_exists(&tx, cursor, Some(*p)).await? => {
                    KeptBy::Checkpoint(c.clone(), *p)
                }
                _ if next_exists(&tx, cursor, None).await? => KeptBy::RunningTransaction,
                _ => KeptBy::End,
            };
            tx.commit().await?;
            break;
        }
        tx.commit().await?;
    }
    if !opts.dry_run {
        report.horizon = horizon(&*client).await?;
    }
    Ok(report)
}

/// Whether a row follows `cursor` (at or after `at` when given, else at all): tells which
/// limit ended a prune.
async fn next_exists(
    tx: &tokio_postgres::Transaction<'_>,
    cursor: Position,
    at: Option<Position>,
) -> Result<bool, PruneError> {
    let cursor_txid = cursor.txid.to_string();
    let row = match at {
        Some(at) => {
            let sql = format!(
                "SELECT EXISTS (SELECT 1 FROM fraiseql.tb_entity_change_log WHERE {} AND NOT {})",
                changelog::after("$1::text", "$2::bigint"),
                changelog::before("$3::text", "$4::bigint"),
            );
            tx.query_one(
                &sql,
                &[&cursor_txid, &cursor.pk, &at.txid.to_string(), &at.pk],
            )
            .await?
        }
        None => {
            let sql = format!(
                "SELECT EXISTS (SELECT 1 FROM fraiseql.tb_entity_change_log WHERE {})",
                changelog::after("$1::text", "$2::bigint"),
            );
            tx.query_one(&sql, &[&cursor_txid, &cursor.pk]).await?
        }
    };
    Ok(row.get(0))
}

/// The readers a configuration runs that would read the log from its first row: their
/// checkpoint must exist before anything is pruned.
pub fn required_consumers(config: &crate::config::Config) -> Vec<String> {
    let rt = &config.observer_runtime;
    // The reader (which is also the NATS publisher) runs when observers are configured.
    let reads = rt.run_reader && !config.observers.is_empty();
    let mut consumers = Vec::new();
    if reads && rt.start_from == crate::observers::config::StartFrom::Beginning {
        consumers.push(rt.consumer.clone());
    }
    // Sinks always start from the beginning of the log.
    consumers.extend(config.sinks.iter().map(|s| format!("sink:{}", s.name)));
    consumers
}

/// `serve`'s periodic prune: every `prune_interval_ms` while `retention` is set, until
/// `shutdown`. Failures are logged and tried again at the next interval.
pub async fn run_periodic(
    pool: deadpool_postgres::Pool,
    config: ChangeLogConfig,
    required_consumers: Vec<String>,
    shutdown: CancellationToken,
) {
    let Some(retention) = config.retention() else {
        return;
    };
    let opts = PruneOptions {
        older_than: retention,
        batch: config.prune_batch,
        dry_run: false,
        required_consumers,
    };
    let mut tick = tokio::time::interval(Duration::from_millis(config.prune_interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let result = async {
            let mut client = pool
                .get()
                .await
                .map_err(|e| PruneError::Db(e.to_string()))?;
            let client: &mut Client = &mut client;
            prune(client, &opts).await
        };
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = result => r,
        };
        match result {
            Ok(r) if r.rows > 0 => {
                info!(rows = r.rows, horizon = ?r.horizon.map(|h| h.to_string()), kept_by = %r.kept_by, "change log pruned")
            }
            Ok(r) => tracing::debug!(kept_by = %r.kept_by, "change log: nothing to prune"),
            Err(e) => {
                warn!(error = %e, "pruning the change log failed; trying again at the next interval")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_validation_names_the_key() {
        let c = ChangeLogConfig {
            retention: Some("7 days".into()),
            ..ChangeLogConfig::default()
        };
        let e = c.validate().unwrap_err();
        assert_eq!(e.key, "change_log.retention");
        let c = ChangeLogConfig {
            retention: Some("7d".into()),
            ..ChangeLogConfig::default()
        };
        c.validate().unwrap();
        assert_eq!(c.retention(), Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(ChangeLogConfig::default().retention(), None);
    }

    #[test]
    fn a_resume_below_the_horizon_is_refused() {
        let h = Position { txid: 10, pk: 50 };
        assert!(check_resume(Position { txid: 10, pk: 49 }, Some(h)).is_err());
        assert!(check_resume(Position { txid: 9, pk: 99 }, Some(h)).is_err());
        check_resume(h, Some(h)).unwrap();
        check_resume(Position { txid: 11, pk: 1 }, Some(h)).unwrap();
        check_resume(Position::default(), None).unwrap();
        let e = check_resume(Position { txid: 1, pk: 1 }, Some(h))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("1:1") && e.contains("10:50") && e.contains("pruned"),
            "{e}"
        );
    }
}
