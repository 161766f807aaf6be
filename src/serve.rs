//! The `serve` role: the HTTP server over the shared database pool.
//!
//! [`run`] binds the configured address; [`run_on`] takes an already-bound listener (tests
//! bind port 0). Both return after a graceful shutdown.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::graphql::{EngineSource, SharedEngine};
use crate::http::{self, AppState};
use crate::redact::redact_url;

/// Binds `server.listen` (and `flight.listen` with `with_flight`) and serves until
/// `shutdown` is cancelled.
pub async fn run(
    config: Config,
    with_flight: bool,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if config.graphql.schema.is_empty() {
        tracing::warn!("no GraphQL schema configured; /graphql answers 404");
    }
    let listener = bind_http(&config).await?;
    let engine = shared_engine(&config)?;
    if !with_flight {
        let pool = crate::db::pool(&config.database)?;
        return serve_http(listener, config, pool, engine, None, shutdown).await;
    }
    let flight_listener = bind_flight(&config).await?;
    // One pool for both servers: the connection budget is `database.pool_size` per process.
    // One engine too: a SIGHUP reload (handled by the HTTP side) is seen by Flight tickets.
    let pool = crate::db::pool(&config.database)?;
    let flight = flight_server(&config, pool.clone(), engine.clone())?;
    let (a, b) = tokio::join!(
        serve_http(listener, config, pool, engine, None, shutdown.clone()),
        serve_flight(flight, flight_listener, shutdown.clone())
    );
    a.and(b)
}

/// The `flight` role: Arrow Flight on `flight.listen` (GraphQL tickets too when
/// `graphql.schema` is set), and /healthz, /readyz, /metrics on `server.listen` (no
/// /graphql, no observers).
pub async fn run_flight(mut config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let flight_listener = bind_flight(&config).await?;
    let http_listener = bind_http(&config).await?;
    let pool = crate::db::pool(&config.database)?;
    // GraphQL tickets use the engine; the HTTP side of this role serves no /graphql, so the
    // schema reload on SIGHUP is started here.
    let engine = shared_engine(&config)?;
    let flight = flight_server(&config, pool.clone(), engine.clone())?;
    if let Some(engine) = engine {
        spawn_reload_on_sighup(
            Arc::new(config.clone()),
            engine,
            pool.clone(),
            shutdown.clone(),
        );
    }
    config.graphql.schema.clear();
    config.observers.clear();
    let (a, b) = tokio::join!(
        serve_http(http_listener, config, pool, None, None, shutdown.clone()),
        serve_flight(flight, flight_listener, shutdown.clone())
    );
    a.and(b)
}

async fn bind_http(config: &Config) -> anyhow::Result<TcpListener> {
    TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {} (server.listen)", config.server.listen))
}

async fn bind_flight(config: &Config) -> anyhow::Result<TcpListener> {
    TcpListener::bind(&config.flight.listen)
        .await
        .with_context(|| format!("cannot listen on {} (flight.listen)", config.flight.listen))
}

/// The Flight server; with an engine, GraphQL tickets run through it.
fn flight_server(
    config: &Config,
    pool: deadpool_postgres::Pool,
    engine: Option<SharedEngine>,
) -> anyhow::Result<crate::flight::FlightServer> {
    let mut server = crate::flight::FlightServer::new(config.flight.clone(), pool.clone())
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .with_metrics(crate::metrics::metrics().flight.clone());
    if let Some(engine) = engine {
        server = server.with_graphql(Arc::new(EngineSource::new(engine, pool)));
    }
    Ok(server)
}

/// Serves Flight until `shutdown`; SIGHUP reloads its registry of va_/ta_ views. A Flight
/// server that fails stops the whole process (its shutdown token is cancelled).
async fn serve_flight(
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

/// Starts the observer runtime when `[[observers]]` are configured. With an external queue
/// backend the connection is made in the background (waiting while it is down) so that
/// GraphQL does not depend on it; configuration errors still surface here, at start.
fn start_observers(
    state: &Arc<AppState>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    let config = &state.config;
    if config.observers.is_empty() {
        return Ok(None);
    }
    let entities: Option<Vec<String>> = state
        .engine()
        .map(|e| e.schema().types.iter().map(|t| t.name.clone()).collect());
    let runtime = build_observers(config, state.pool.clone(), entities.clone(), None)?;
    tracing::info!(
        observers = config.observers.len(),
        queue = ?config.queue.backend,
        "observer runtime started"
    );
    if !config.queue.backend.is_external() {
        return Ok(Some(tokio::spawn(runtime.run(shutdown.clone()))));
    }
    drop(runtime);
    let (config, pool, shutdown) = (config.clone(), state.pool.clone(), shutdown.clone());
    Ok(Some(tokio::spawn(async move {
        let Some(queue) = connect_queue(&config, &pool, &shutdown).await else {
            return;
        };
        match build_observers(&config, pool, entities, Some(queue)) {
            Ok(runtime) => runtime.run(shutdown).await,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "observer runtime failed to start")
            }
        }
    })))
}

/// Builds the configured queue backend, waiting (and logging) while an external one is
/// unreachable; `None` when shutdown came first or the backend is unusable (logged).
pub async fn connect_queue(
    config: &Config,
    pool: &deadpool_postgres::Pool,
    shutdown: &CancellationToken,
) -> Option<crate::queue::QueueHandles> {
    let capacity = config.observer_runtime.queue_capacity;
    tokio::select! {
        _ = shutdown.cancelled() => None,
        q = crate::queue::build(&config.queue, pool, capacity) => match q {
            Ok(q) => Some(q),
            Err(e) => {
                tracing::error!(error = %e, "cannot use the {} queue (queue.url)", config.queue.backend.name());
                None
            }
        },
    }
}

/// Validates and compiles the observers (conditions, templates, URLs, secrets); starts
/// nothing, so `check` uses it too. `known_entities` (the schema's type names) turns an
/// observer on an unknown entity into an error, so typos are found at start.
///
/// `queue`: the connected backend when it is external (`[queue] backend = "redis"`); jobs
/// then go there and this process executes them only with `[queue] run_workers = true`.
pub fn build_observers(
    config: &Config,
    pool: deadpool_postgres::Pool,
    known_entities: Option<Vec<String>>,
    queue: Option<crate::queue::QueueHandles>,
) -> anyhow::Result<crate::observers::ObserverRuntime> {
    let pg = crate::db::pg_config(&config.database)?;
    let mut settings = config.observer_runtime.clone();
    if config.queue.backend.is_external() {
        settings.run_workers = config.queue.run_workers;
    }
    let mut builder =
        crate::observers::ObserverRuntime::builder(settings, config.observers.clone(), pool, pg)
            .metrics(crate::metrics::metrics().observers.clone())
            .nats(config.nats.clone())
            .tls_ca_file(&config.database.tls_ca_file);
    if let Some(entities) = known_entities {
        builder = builder.known_entities(entities);
    }
    if let Some(queue) = queue {
        builder = builder.queue(queue);
    }
    let runtime = builder.build().map_err(|e| {
        let file = config
            .origins
            .file()
            .map(|p| format!("config file {}: ", p.display()))
            .unwrap_or_default();
        anyhow::anyhow!("{file}{e}")
    })?;
    Ok(runtime)
}

/// Loads the schema at `path` (schema.json or compiled) and builds an engine for it.
pub fn load_engine(config: &Config, path: &str) -> anyhow::Result<crate::graphql::Engine> {
    let schema = crate::schema::load(std::path::Path::new(path))?;
    let engine = crate::graphql::Engine::new(Arc::new(schema), config.graphql_limits())?
        .with_metrics(crate::metrics::metrics().graphql.clone());
    Ok(engine)
}

/// The engine of `graphql.schema`, or `None` when no schema is configured.
fn shared_engine(config: &Config) -> anyhow::Result<Option<SharedEngine>> {
    match config.graphql.schema.as_str() {
        "" => Ok(None),
        path => Ok(Some(SharedEngine::new(load_engine(config, path)?))),
    }
}

/// On SIGHUP, reloads the schema and swaps the engine atomically. Requests in flight keep
/// the engine they started with; a schema that fails to load leaves the old one serving.
fn spawn_reload_on_sighup(
    config: Arc<Config>,
    engine: SharedEngine,
    pool: deadpool_postgres::Pool,
    shutdown: CancellationToken,
) {
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGHUP; schema reload disabled");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                received = hup.recv() => if received.is_none() { return },
            }
            let path = config.graphql.schema.clone();
            match load_engine(&config, &path) {
                Ok(loaded) => {
                    engine.swap(loaded);
                    // Prepared statements of the old schema's shapes may no longer fit the
                    // views; new ones are prepared on demand.
                    pool.manager().statement_caches.clear();
                    tracing::info!(schema = %path, "schema reloaded");
                }
                Err(e) => {
                    tracing::error!(schema = %path, error = %format!("{e:#}"), "schema reload failed; keeping the current schema");
                }
            }
        }
    });
    #[cfg(not(unix))]
    let _ = (config, engine, pool, shutdown);
}

/// Serves on `listener` until `shutdown` is cancelled.
pub async fn run_on(
    listener: TcpListener,
    config: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if config.graphql.schema.is_empty() {
        tracing::warn!("no GraphQL schema configured; /graphql answers 404");
    }
    let pool = crate::db::pool(&config.database)?;
    let engine = shared_engine(&config)?;
    serve_http(listener, config, pool, engine, None, shutdown).await
}

/// The HTTP side over `pool`: GraphQL (with `engine`, reloaded on SIGHUP), observers (when
/// configured), health and metrics. `queue`: see [`AppState::queue`].
pub(crate) async fn serve_http(
    listener: TcpListener,
    config: Config,
    pool: deadpool_postgres::Pool,
    engine: Option<SharedEngine>,
    queue: Option<Arc<crate::http::QueueReadiness>>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let addr = listener.local_addr()?;
    let state = Arc::new(AppState {
        config: Arc::new(config),
        pool: pool.clone(),
        engine,
        queue,
    });
    if let Some(engine) = &state.engine {
        spawn_reload_on_sighup(
            state.config.clone(),
            engine.clone(),
            pool.clone(),
            shutdown.clone(),
        );
    }
    let observers = start_observers(&state, &shutdown)?;

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
    if let Some(task) = observers {
        // The runtime drains on the same shutdown signal: in-flight jobs finish or are
        // handed back within observer_runtime.shutdown_grace_ms, then the checkpoint is
        // written.
        if let Err(e) = task.await {
            tracing::error!(error = %e, "observer runtime ended abnormally");
        }
    }
    pool.close();
    tracing::info!("stopped");
    Ok(())
}
