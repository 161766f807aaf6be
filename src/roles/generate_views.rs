//! `fraiseql generate-views`: plans the copies of the schema's views from the catalog
//! ([`crate::genviews`]) and prints the SQL, writes it (`-o`), applies it (`--apply`, one
//! transaction, chunked initial fill with a progress line on a terminal) or compares every
//! copy with its view (`--check`, `EXCEPT` both ways, non-zero exit on drift).

use std::io::{IsTerminal, Write as _};
use std::path::PathBuf;
use std::time::Instant;

use crate::config::Config;
use crate::genviews::{EntityPlan, GenViewsError, Kind, emit};
use crate::sql::quote_ident;

/// Rows recomputed per statement of the initial fill.
const FILL_CHUNK: i64 = 5_000;

/// What to do with the plans.
#[derive(Debug, Clone)]
pub enum Mode {
    Print,
    Write(PathBuf),
    Apply,
    Check,
}

/// The command's arguments.
#[derive(Debug, Clone)]
pub struct Args {
    pub entities: Vec<String>,
    pub kinds: Vec<Kind>,
    pub index: Vec<String>,
    pub mode: Mode,
}

/// What `--apply` did to one copy.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub table: String,
    /// Rows inserted or rewritten because they differed, plus rows removed.
    pub written: i64,
    /// The table existed with other columns and was rebuilt.
    pub rebuilt: bool,
    pub triggers_on: Vec<String>,
    pub seconds: f64,
}

/// Plans the entities of the schema named in `args`, reading the catalog over `client`.
pub async fn plans(
    client: &tokio_postgres::Client,
    schema: &crate::schema::CompiledSchema,
    args: &Args,
) -> Result<Vec<EntityPlan>, GenViewsError> {
    let list = crate::genviews::entities(schema, &args.entities)?;
    let plans = crate::genviews::plan_all(client, schema, &list, &args.index).await?;
    for path in &args.index {
        let used = plans.iter().any(|p| {
            let name = path.replace('.', "__");
            p.index_columns.iter().any(|c| c.name == name) || p.indexed_view_columns.contains(&name)
        });
        if !used {
            return Err(GenViewsError::BadIndex(format!(
                "{path}: no generated entity has this field"
            )));
        }
    }
    for p in &plans {
        for &k in args.kinds.iter().filter(|k| **k != Kind::Va) {
            if let Some(name) = emit::too_long(p, k) {
                return Err(GenViewsError::Refused(format!(
                    "{name}: longer than PostgreSQL's 63-byte names"
                )));
            }
        }
    }
    Ok(plans)
}

/// The columns a stored copy has now (name, type; generated columns and `updated_at`
/// excluded), empty when it does not exist.
async fn existing_columns(
    client: &tokio_postgres::Transaction<'_>,
    table: &str,
) -> Result<Vec<(String, String)>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a \
             WHERE a.attrelid = to_regclass($1::text) AND a.attnum > 0 AND NOT a.attisdropped \
               AND a.attgenerated = '' AND a.attname <> 'updated_at' ORDER BY a.attnum",
            &[&table],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Applies the plans in one transaction: rebuilds a copy whose columns no longer match its
/// view, drops triggers left on tables the view no longer reads, creates or replaces every
/// object, and fills each copy in chunks (rows already equal are not rewritten, so a second
/// run writes nothing). `progress` prints a line per chunk to stderr.
pub async fn apply(
    client: &mut deadpool_postgres::Client,
    plans: &[EntityPlan],
    kinds: &[Kind],
    progress: bool,
) -> Result<Vec<Applied>, GenViewsError> {
    let tx = client.transaction().await?;
    tx.batch_execute(&emit::common()).await?;
    let mut out = Vec::new();
    for plan in plans {
        let mut rebuilt = Vec::new();
        for &kind in kinds.iter().filter(|k| **k != Kind::Va) {
            let table = plan.view.sibling(&emit::table_name(plan, kind));
            let have = existing_columns(&tx, &table).await?;
            let want: Vec<(String, String)> = emit::stored_columns(plan, kind)
                .into_iter()
                .map(|(n, t)| (n, t.replace("timestamptz", "timestamp with time zone")))
                .collect();
            let differs = !have.is_empty() && have != want;
            if differs {
                tx.batch_execute(&format!("DROP TABLE {table} CASCADE"))
                    .await?;
            }
            rebuilt.push(differs);
            // Triggers of this kind left on tables the view no longer reads.
            let prefix = emit::trigger_prefix(plan, kind);
            let keep: Vec<u32> = plan.sources.iter().map(|s| s.table.oid).collect();
            let stale = tx
                .query(
                    "SELECT t.tgname::text, t.tgrelid::regclass::text FROM pg_trigger t \
                     WHERE NOT t.tgisinternal AND starts_with(t.tgname::text, $1::text) \
                       AND NOT (t.tgrelid = ANY($2::oid[])) ORDER BY 2, 1",
                    &[&prefix, &keep],
                )
                .await?;
            for row in stale {
                let (name, rel): (String, String) = (row.get(0), row.get(1));
                tx.batch_execute(&format!("DROP TRIGGER {} ON {rel}", quote_ident(&name)))
                    .await?;
            }
        }
        tx.batch_execute(&emit::entity_ddl(plan, kinds)).await?;
        for (i, &kind) in kinds.iter().filter(|k| **k != Kind::Va).enumerate() {
            let started = Instant::now();
            let written = fill(&tx, plan, kind, progress).await?;
            out.push(Applied {
                table: emit::table_name(plan, kind),
                written,
                rebuilt: rebuilt.get(i).copied().unwrap_or(false),
                triggers_on: plan.sources.iter().map(|s| s.table.name.clone()).collect(),
                seconds: started.elapsed().as_secs_f64(),
            });
        }
    }
    tx.commit().await?;
    Ok(out)
}

/// Recomputes a copy chunk by chunk over its root table's ids, then removes rows whose id
/// left the view. Returns the rows written or removed.
async fn fill(
    tx: &tokio_postgres::Transaction<'_>,
    plan: &EntityPlan,
    kind: Kind,
    progress: bool,
) -> Result<i64, GenViewsError> {
    let table = emit::table_name(plan, kind);
    let refresh = emit::refresh_call(plan, kind);
    let root = plan.root.quoted();
    let total: i64 = tx
        .query_one(&format!("SELECT count(*) FROM {root}"), &[])
        .await?
        .get(0);
    let chunk_sql = format!(
        "WITH chunk AS MATERIALIZED (SELECT id FROM {root} WHERE $1::uuid IS NULL OR id > $1::uuid \
         ORDER BY id LIMIT $2::int8) \
         SELECT {refresh}(ARRAY(SELECT id FROM chunk)), \
                (SELECT id FROM chunk ORDER BY id DESC LIMIT 1), (SELECT count(*) FROM chunk)"
    );
    let started = Instant::now();
    let mut last: Option<uuid::Uuid> = None;
    let (mut done, mut written) = (0i64, 0i64);
    loop {
        let row = tx.query_one(&chunk_sql, &[&last, &FILL_CHUNK]).await?;
        let n: i64 = row.get(2);
        if n == 0 {
            break;
        }
        written += row.get::<_, i64>(0);
        last = row.get(1);
        done += n;
        if progress {
            let secs = started.elapsed().as_secs_f64().max(1e-3);
            let rate = done as f64 / secs;
            let eta = (total - done).max(0) as f64 / rate.max(1.0);
            eprint!("\r{table}: {done}/{total} rows, {rate:.0} rows/s, ETA {eta:.0} s   ");
            let _ = std::io::stderr().flush();
        }
    }
    if progress && done > 0 {
        eprintln!();
    }
    let quoted = plan.view.sibling(&table);
    let view = plan.view.quoted();
    written += tx
        .execute(
            &format!(
                "DELETE FROM {quoted} t WHERE NOT EXISTS (SELECT 1 FROM {view} v WHERE v.id = t.id)"
            ),
            &[],
        )
        .await? as i64;
    Ok(written)
}

/// `--check`: per stored copy, how many rows differ from the view (copy EXCEPT view, plus
/// view EXCEPT copy); `None` when the copy does not exist.
pub async fn check(
    client: &tokio_postgres::Client,
    plans: &[EntityPlan],
    kinds: &[Kind],
) -> Result<Vec<(String, Option<(i64, i64)>)>, GenViewsError> {
    let mut out = Vec::new();
    for plan in plans {
        for &kind in kinds.iter().filter(|k| **k != Kind::Va) {
            let table = emit::table_name(plan, kind);
            let exists: bool = client
                .query_one(
                    "SELECT to_regclass($1::text) IS NOT NULL",
                    &[&plan.view.sibling(&table)],
                )
                .await?
                .get(0);
            let drift = if exists {
                let row = client.query_one(&emit::drift_sql(plan, kind), &[]).await?;
                Some((row.get(0), row.get(1)))
            } else {
                None
            };
            out.push((table, drift));
        }
    }
    Ok(out)
}

/// Runs the command; the exit code is 1 when `--check` finds drift.
pub async fn run(config: &Config, args: Args) -> anyhow::Result<std::process::ExitCode> {
    if config.graphql.schema.is_empty() {
        anyhow::bail!("no schema: pass --schema PATH or set [graphql] schema");
    }
    let schema = crate::schema::load(std::path::Path::new(&config.graphql.schema))?;
    let pool = crate::db::pool(&config.database)?;
    let mut client = crate::db::client(&pool).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot connect to {}: {e}",
            crate::redact::redact_url(&config.database.url)
        )
    })?;
    let plans = plans(&client, &schema, &args).await?;
    let kinds = &args.kinds;
    match &args.mode {
        Mode::Print => print!("{}", emit::script(&plans, kinds)),
        Mode::Write(path) => {
            std::fs::write(path, emit::script(&plans, kinds))
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            println!("wrote {} ({} entities)", path.display(), plans.len());
        }
        Mode::Apply => {
            let progress = std::io::stderr().is_terminal();
            for a in apply(&mut client, &plans, kinds, progress).await? {
                println!(
                    "{}: {} rows written{} in {:.2} s; triggers on {}",
                    a.table,
                    a.written,
                    if a.rebuilt {
                        " (rebuilt: its view's columns changed)"
                    } else {
                        ""
                    },
                    a.seconds,
                    a.triggers_on.join(", ")
                );
            }
        }
        Mode::Check => {
            let mut drift = false;
            for (table, d) in check(&client, &plans, kinds).await? {
                match d {
                    None => {
                        drift = true;
                        println!("DRIFT {table}: does not exist");
                    }
                    Some((0, 0)) => println!("ok    {table}: equal to its view"),
                    Some((extra, missing)) => {
                        drift = true;
                        println!(
                            "DRIFT {table}: {} rows differ ({extra} not in the view, {missing} of the view missing or different)",
                            extra + missing
                        );
                    }
                }
            }
            if drift {
                return Ok(std::process::ExitCode::FAILURE);
            }
        }
    }
    pool.close();
    Ok(std::process::ExitCode::SUCCESS)
}
