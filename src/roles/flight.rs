//! The `flight` role: Arrow Flight on `flight.listen` (GraphQL tickets too when
//! `graphql.schema` is set), and `/healthz`, `/readyz`, `/metrics` on `server.listen` (no
//! `/graphql`, no observers). [`serve_flight`] also runs beside `serve --with-flight`.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::serve::{HttpParts, serve_http};
use crate::compose::{
    authenticator, bind_flight, bind_http, flight_server, shared_engine, spawn_reload_on_sighup,
};
use crate::config::Config;

/// Binds both listeners and serves until `shutdown`.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let flight_listener = bind_flight(&config).await?;
    let http_listener = bind_http(&config).await?;
    let pool = crate::db::pool(&config.database)?;
    // GraphQL tickets use the engine; the HTTP side of this role serves no /graphql, so the
    // schema reload on SIGHUP is started here.
    let engine = shared_engine(&config)?;
    let auth = authenticator(&config, &shutdown).await?;
    let flight = flight_server(&config, pool.clone(), engine.clone(), auth)?;
    if let Some(engine) = engine {
        spawn_reload_on_sighup(
            Arc::new(config.clone()),
            engine,
            pool.clone(),
            shutdown.clone(),
        );
    }
    let parts = HttpParts {
        pool: pool.clone(),
        engine: None,
        observers: false,
        queue: None,
        auth: None,
    };
    let (a, b) = tokio::join!(
        serve_http(http_listener, config, parts, shutdown.clone()),
        serve_flight(flight, flight_listener, shutdown.clone())
    );
    // Closed once Flight has stopped too: its draining streams read through this pool.
    pool.close();
    a.and(b)
}

/// Serves Flight until `shutdown`; SIGHUP reloads its registry of va_/ta_ views. A Flight
/// server that fails stops the whole process (its shutdown token is cancelled).
pub(crate) async fn serve_flight(
    server: crate::flight::FlightServer,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let registry = server.registry_handle();
    let hup_shutdown = shutdown.clone();
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        loop {
            tokio::select! {
                _ = hup_shutdown.cancelled() => return,
                received = hup.recv() => if received.is_none() { return },
            }
            match registry.refresh().await {
                Ok(_) => tracing::info!("flight registry refreshed"),
                Err(e) => tracing::error!(error = %e, "flight registry refresh failed"),
            }
        }
    });
    tracing::info!(addr = %listener.local_addr()?, "serving Arrow Flight");
    let result = server
        .serve(listener, shutdown.clone())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"));
    shutdown.cancel();
    result
}
