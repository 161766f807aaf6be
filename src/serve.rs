//! The `serve` role: the HTTP server over the shared database pool.
//!
//! [`run`] binds the configured address; [`run_on`] takes an already-bound listener (tests
//! bind port 0). Both return after a graceful shutdown.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, redact_url};
use crate::http::{self, AppState};

/// Binds `server.listen` and serves until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {} (server.listen)", config.server.listen))?;
    run_on(listener, config, shutdown).await
}

/// Serves on `listener` until `shutdown` is cancelled.
pub async fn run_on(
    listener: TcpListener,
    config: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let pool = crate::db::pool(&config.database)?;
    let addr = listener.local_addr()?;
    let state = Arc::new(AppState {
        config: Arc::new(config),
        pool: pool.clone(),
    });

    // Warm one connection so the first request does not pay for it, and say early whether
    // the database is reachable. Failure is not fatal: /readyz reports it until it recovers.
    let (warm_pool, url) = (pool.clone(), redact_url(&state.config.database.url));
    tokio::spawn(async move {
        match crate::db::ping(&warm_pool, std::time::Duration::from_secs(5)).await {
            Ok(version) => tracing::info!(database = %url, %version, "database reachable"),
            Err(e) => tracing::warn!(
                database = %url, error = %e, "database not reachable yet; serving and retrying"
            ),
        }
    });
    tracing::info!(%addr, startup_ms = started.elapsed().as_millis() as u64, "serving HTTP");
    http::serve(listener, state, shutdown).await?;
    pool.close();
    tracing::info!("stopped");
    Ok(())
}
