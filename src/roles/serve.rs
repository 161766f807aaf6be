//! The `serve` role: GraphQL over HTTP, the observer runtime, the analytics sinks
//! (`[[sinks]]`), health and metrics, over the shared database pool (and Arrow Flight beside
//! it with `--with-flight`), and the periodic change-log prune when `[change_log] retention`
//! is set.
//!
//! [`run`] binds the configured address; [`run_on`] takes an already-bound listener (tests
//! bind port 0). Both return after a graceful shutdown. [`serve_http`] is the HTTP side the
//! `flight` and `worker` roles run too, given only the parts they serve ([`HttpParts`]).

use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::compose::{
    authenticator, bind_flight, bind_http, build_observers, connect_queue, flight_server,
    shared_engine, spawn_reload_on_sighup,
};
use crate::config::Config;
use crate::graphql::SharedEngine;
use crate::http::{self, AppState, QueueReadiness};
use crate::redact::redact_url;

/// What the HTTP side serves besides health and metrics.
pub struct HttpParts {
    pub pool: deadpool_postgres::Pool,
    /// `/graphql` and `/graphiql` (reloaded on SIGHUP); `None` answers 404 there.
    pub engine: Option<SharedEngine>,
    /// Run the observer runtime of `[[observers]]`.
    pub observers: bool,
    /// A queue backend `/readyz` also waits for (see [`AppState::queue`]).
    pub queue: Option<Arc<QueueReadiness>>,
    /// Who may call `/graphql` (`[auth]`); `None`: everyone, unrestricted.
    pub auth: Option<Arc<crate::auth::Authenticator>>,
}

/// Binds `server.listen` (and `flight.listen` with `with_flight`) and serves until
/// `shutdown` is cancelled.
pub async fn run(
    config: Config,
    with_flight: bool,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    config.validate_for(&[crate::config::Role::Serve])?;
    if config.graphql.schema.is_empty() {
        tracing::warn!("no GraphQL schema configured; /graphql answers 404");
    }
    let listener = bind_http(&config).await?;
    let engine = shared_engine(&config)?;
    let auth = authenticator(&config, &shutdown).await?;
    if !with_flight {
        let pool = crate::db::pool(&config.database)?;
        return serve_http_then_close(listener, config, pool, engine, auth, shutdown).await;
    }
    let flight_listener = bind_flight(&config).await?;
    // One pool for both servers: the connection budget is `database.pool_size` per process.
    // One engine too: a SIGHUP reload (handled by the HTTP side) is seen by Flight tickets.
    let pool = crate::db::pool(&config.database)?;
    // One authenticator too: JWKS fetched and refreshed once, for both doors.
    let flight = flight_server(&config, pool.clone(), engine.clone(), auth.clone())?;
    let (a, b) = tokio::join!(
        serve_http(
            listener,
            config,
            serve_parts(pool.clone(), engine, auth),
            shutdown.clone()
        ),
        super::flight::serve_flight(flight, flight_listener, shutdown.clone())
    );
    pool.close();
    a.and(b)
}

/// Everything: GraphQL and the observers.
fn serve_parts(
    pool: deadpool_postgres::Pool,
    engine: Option<SharedEngine>,
    auth: Option<Arc<crate::auth::Authenticator>>,
) -> HttpParts {
    HttpParts {
        pool,
        engine,
        observers: true,
        queue: None,
        auth,
    }
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
    let auth = authenticator(&config, &shutdown).await?;
    serve_http_then_close(listener, config, pool, engine, auth, shutdown).await
}

/// [`serve_http`] with everything, then the pool closed (nothing else shares it).
async fn serve_http_then_close(
    listener: TcpListener,
    config: Config,
    pool: deadpool_postgres::Pool,
    engine: Option<SharedEngine>,
    auth: Option<Arc<crate::auth::Authenticator>>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let served = serve_http(
        listener,
        config,
        serve_parts(pool.clone(), engine, auth),
        shutdown,
    )
    .await;
    pool.close();
    served
}

/// The HTTP side: health and metrics, plus what `parts` names (GraphQL, the observers).
pub(crate) async fn serve_http(
    listener: TcpListener,
    config: Config,
    parts: HttpParts,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let HttpParts {
        pool,
        engine,
        observers,
        queue,
        auth,
    } = parts;
    let started = Instant::now();
    let addr = listener.local_addr()?;
    let rate_limit = match engine {
        Some(_) => crate::compose::rate_limiter(&config)?,
        None => None,
    };
    let config_token = config
        .metrics
        .token()
        .map(|t| crate::flight::auth::Tokens::new(vec![t]));
    let state = Arc::new(AppState {
        config: Arc::new(config),
        pool: pool.clone(),
        engine,
        queue,
        auth,
        rate_limit,
        metrics_token: config_token,
    });
    if let Some(engine) = &state.engine {
        spawn_reload_on_sighup(
            state.config.clone(),
            engine.clone(),
            pool.clone(),
            shutdown.clone(),
        );
    }
    let observers_enabled = observers;
    let observers = if observers {
        // The change-log retention runs beside the observers (serve only): it keeps every
        // row a checkpoint has not passed, so it is safe with any number of instances.
        if state.config.change_log.retention.is_some() {
            tokio::spawn(crate::db::retention::run_periodic(
                pool.clone(),
                state.config.change_log.clone(),
                crate::db::retention::required_consumers(&state.config),
                shutdown.clone(),
            ));
        }
        start_observers(&state, &shutdown)?
    } else {
        None
    };

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
    // The sinks run beside the observers (serve only), each its own leader across
    // instances; they stop on the shutdown token and are awaited before returning.
    let sinks = tokio_util::task::TaskTracker::new();
    if observers_enabled {
        crate::sinks::spawn(&state.config, &sinks, &shutdown)?;
    }
    sinks.close();
    tracing::info!(%addr, startup_ms = started.elapsed().as_millis() as u64, "serving HTTP");
    http::serve(listener, state, shutdown).await?;
    sinks.wait().await;
    if let Some(task) = observers {
        // The runtime drains on the same shutdown signal: in-flight jobs finish or are
        // handed back within observer_runtime.shutdown_grace_ms, then the checkpoint is
        // written.
        if let Err(e) = task.await {
            tracing::error!(error = %e, "observer runtime ended abnormally");
        }
    }
    // The pool is not closed here: the caller owns it and closes it once every part that
    // shares it (a draining worker pump, Flight streams) has stopped too.
    tracing::info!("stopped");
    Ok(())
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
