//! The appliance's own schema (`fraiseql.*`), created and upgraded by `fraiseql db init`
//! from versioned migrations embedded in the binary.
//!
//! Each migration runs in its own transaction and is recorded in
//! `fraiseql.schema_migrations`; a transaction-scoped advisory lock serialises concurrent
//! runs, so running `db init` twice — or twice at once — changes nothing the second time.

use tokio_postgres::Client;

use super::{DbError, describe};

/// `(version, name, sql)` in the order they apply. Never edit a released migration: add one.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "core", include_str!("migrations/0001_core.sql")),
    (
        2,
        "observers",
        include_str!("migrations/0002_observers.sql"),
    ),
    (
        3,
        "mutation_events",
        include_str!("migrations/0003_mutation_events.sql"),
    ),
    (
        4,
        "change_log_retention",
        include_str!("migrations/0004_change_log_retention.sql"),
    ),
    (5, "sinks", include_str!("migrations/0005_sinks.sql")),
];

/// Arbitrary constant identifying FraiseQL's migration lock (`pg_advisory_xact_lock`).
const MIGRATION_LOCK: i64 = 0x6672_6169_7365_0001;

/// What one `db init` did.
#[derive(Debug, Default)]
pub struct Report {
    pub applied: Vec<(i32, &'static str)>,
    pub already: usize,
}

/// Applies every migration not yet recorded.
pub async fn run(client: &mut Client) -> Result<Report, DbError> {
    let q = |e: tokio_postgres::Error| DbError::Query(describe(&e));
    let mut report = Report::default();
    for &(version, name, sql) in MIGRATIONS {
        let tx = client.transaction().await.map_err(q)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(q)?;
        // "already exists, skipping" notices are expected on every re-run.
        tx.batch_execute("SET LOCAL client_min_messages = warning")
            .await
            .map_err(q)?;
        // CREATE SCHEMA IF NOT EXISTS races with itself in concurrent sessions; the lock
        // above is taken first, so these never run concurrently.
        tx.batch_execute(
            "CREATE SCHEMA IF NOT EXISTS fraiseql;
             CREATE TABLE IF NOT EXISTS fraiseql.schema_migrations (
                 version integer PRIMARY KEY,
                 name text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await
        .map_err(q)?;
        let done = tx
            .query_opt(
                "SELECT 1 FROM fraiseql.schema_migrations WHERE version = $1",
                &[&version],
            )
            .await
            .map_err(q)?
            .is_some();
        if done {
            report.already += 1;
            continue;
        }
        tx.batch_execute(sql).await.map_err(|e| {
            DbError::Query(format!("migration {version:04}_{name}: {}", describe(&e)))
        })?;
        tx.execute(
            "INSERT INTO fraiseql.schema_migrations (version, name) VALUES ($1, $2)",
            &[&version, &name],
        )
        .await
        .map_err(q)?;
        tx.commit().await.map_err(q)?;
        report.applied.push((version, name));
    }
    Ok(report)
}
