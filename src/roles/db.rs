//! `fraiseql db init`: creates or upgrades FraiseQL's own schema (`fraiseql.*`: the change
//! log, checkpoints, dead letters, dedup) by applying the embedded migrations in order.
//! `fraiseql db prune`: deletes the change-log rows no checkpoint needs any more
//! ([`crate::db::retention`]).

use crate::config::Config;

/// One connection to the configured database.
async fn connect(config: &Config) -> anyhow::Result<deadpool_postgres::Object> {
    let pool = crate::db::pool(&config.database)?;
    crate::db::client(&pool).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot connect to {}: {e}",
            crate::redact::redact_url(&config.database.url)
        )
    })
}

/// Applies the migrations that are missing and prints what it did.
pub async fn init(config: &Config) -> anyhow::Result<()> {
    let mut client = connect(config).await?;
    let report = crate::db::migrate::run(&mut client).await?;
    for (version, name) in &report.applied {
        println!("applied {version:04}_{name}");
    }
    println!(
        "fraiseql schema up to date ({} applied, {} already present)",
        report.applied.len(),
        report.already
    );
    Ok(())
}

/// Prunes the change log (`--older-than`, else `[change_log] retention`) and prints what it
/// did. A bad duration, or none at all, fails before anything is touched.
pub async fn prune(config: &Config, older_than: Option<&str>, dry_run: bool) -> anyhow::Result<()> {
    use crate::db::retention;
    let older_than = match older_than {
        Some(s) => {
            retention::parse_duration(s).map_err(|e| anyhow::anyhow!("--older-than: {e}"))?
        }
        None => config.change_log.retention().ok_or_else(|| {
            anyhow::anyhow!(
                "no retention: pass --older-than (e.g. 7d) or set [change_log] retention"
            )
        })?,
    };
    let mut client = connect(config).await?;
    let opts = retention::PruneOptions {
        older_than,
        batch: config.change_log.prune_batch,
        dry_run,
        required_consumers: retention::required_consumers(config),
    };
    let report = retention::prune(&mut client, &opts).await?;
    println!("{report}");
    Ok(())
}
