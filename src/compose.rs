//! The shared parts every role is built from: the listeners, the GraphQL engine (and its
//! reload on SIGHUP), the observer runtime, the queue connection and the Flight server.
//! Roles (`crate::roles`) compose these; none of them builds a part another role builds
//! differently.

use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::graphql::{EngineSource, SharedEngine};

/// Binds `server.listen`.
pub async fn bind_http(config: &Config) -> anyhow::Result<TcpListener> {
    TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {} (server.listen)", config.server.listen))
}

/// Binds `flight.listen`.
pub async fn bind_flight(config: &Config) -> anyhow::Result<TcpListener> {
    TcpListener::bind(&config.flight.listen)
        .await
        .with_context(|| format!("cannot listen on {} (flight.listen)", config.flight.listen))
}

/// The Flight server; with an engine, GraphQL tickets run through it; with `auth` (the
/// process's one authenticator, shared with the HTTP side) it accepts JWTs too.
pub fn flight_server(
    config: &Config,
    pool: deadpool_postgres::Pool,
    engine: Option<SharedEngine>,
    auth: Option<Arc<crate::auth::Authenticator>>,
) -> anyhow::Result<crate::flight::FlightServer> {
    let mut server =
        crate::flight::FlightServer::with_auth(config.flight.clone(), pool.clone(), auth)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .with_metrics(crate::metrics::metrics().flight.clone())
            .with_rate_limit(rate_limiter(config)?);
    if let Some(engine) = engine {
        server = server.with_graphql(Arc::new(EngineSource::new(engine, pool)));
    }
    Ok(server)
}

/// The limiter of `[rate_limit]`, or `None` when it sets no rule.
pub fn rate_limiter(config: &Config) -> anyhow::Result<Option<Arc<crate::ratelimit::RateLimiter>>> {
    let Some(rl) = &config.rate_limit else {
        return Ok(None);
    };
    crate::ratelimit::RateLimiter::new(
        rl,
        &config.queue.url,
        config.auth.as_ref().map(|a| a.tenant_claim.as_str()),
    )
    .map_err(|e| anyhow::anyhow!("rate_limit: {e}"))
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

/// The authenticator of `[auth]` (its JWKS kept fresh until `shutdown`), or `None` when
/// authentication is not configured.
pub async fn authenticator(
    config: &Config,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<Arc<crate::auth::Authenticator>>> {
    let Some(cfg) = &config.auth else {
        return Ok(None);
    };
    let auth = crate::auth::Authenticator::new(cfg).await?;
    for (i, status) in auth.key_status() {
        tracing::warn!(verifier = i, status = ?status, "auth: keys not available yet; tokens of this verifier are refused until they are");
    }
    auth.spawn_refresh(shutdown.child_token());
    Ok(Some(Arc::new(auth)))
}

/// Loads the schema at `path` (schema.json or compiled) and builds an engine for it.
pub fn load_engine(config: &Config, path: &str) -> anyhow::Result<crate::graphql::Engine> {
    let schema = crate::schema::load(std::path::Path::new(path))?;
    let engine = crate::graphql::Engine::new(Arc::new(schema), config.graphql_limits())?
        .with_role_limits(&config.graphql.roles)
        .with_read_tables(config.graphql.read_tables)
        .with_metrics(crate::metrics::metrics().graphql.clone());
    Ok(engine)
}

/// The persisted-document state of `[graphql]`: the trusted-documents manifest loaded (a
/// manifest that does not load refuses the start), or the APQ cache; `None` when both are off.
pub fn documents(
    config: &Config,
) -> anyhow::Result<Option<Arc<crate::graphql::persisted::Documents>>> {
    let docs = crate::graphql::persisted::Documents::load(
        &config.graphql.documents,
        config.graphql_limits().max_query_bytes,
    )?
    .map(Arc::new);
    if let Some(m) = docs.as_ref().and_then(|d| d.manifest()) {
        tracing::info!(manifest = %config.graphql.documents.trusted_documents, documents = m.len(), "trusted documents: only these run");
    }
    Ok(docs)
}

/// The engine of `graphql.schema`, or `None` when no schema is configured.
pub fn shared_engine(config: &Config) -> anyhow::Result<Option<SharedEngine>> {
    match config.graphql.schema.as_str() {
        "" => Ok(None),
        path => Ok(Some(SharedEngine::new(
            load_engine(config, path)?.with_documents(documents(config)?),
        ))),
    }
}

/// On SIGHUP, reloads the trusted-documents manifest and the schema, and swaps the engine
/// atomically. Requests in flight keep the engine they started with; a manifest or a schema
/// that fails to load leaves the old one serving (each logged).
pub fn spawn_reload_on_sighup(
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
            let documents = engine.current().documents().cloned();
            if let Some(d) = &documents {
                let manifest = d
                    .path()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                match d.reload() {
                    Ok(None) => {}
                    Ok(Some(n)) => {
                        tracing::info!(%manifest, documents = n, "trusted documents reloaded")
                    }
                    Err(e) => {
                        tracing::error!(%manifest, error = %e, "trusted documents reload failed; keeping the current manifest")
                    }
                }
            }
            let path = config.graphql.schema.clone();
            match load_engine(&config, &path) {
                Ok(loaded) => {
                    engine.swap(loaded.with_documents(documents));
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
