//! `fraiseql db init`: creates or upgrades FraiseQL's own schema (`fraiseql.*`: the change
//! log, checkpoints, dead letters, dedup) by applying the embedded migrations in order.

use crate::config::Config;

/// Applies the migrations that are missing and prints what it did.
pub async fn init(config: &Config) -> anyhow::Result<()> {
    let pool = crate::db::pool(&config.database)?;
    let mut client = crate::db::client(&pool).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot connect to {}: {e}",
            crate::redact::redact_url(&config.database.url)
        )
    })?;
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
