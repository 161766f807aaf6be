//! The Arrow Flight role (`fraiseql flight`, and `serve --with-flight`): analytics clients
//! (pandas, polars, DuckDB, R arrow through pyarrow or ADBC Flight) read `va_`/`ta_` views,
//! the change log and GraphQL list queries as Arrow, and append to allow-listed `ta_`
//! tables.
//!
//! Start it with [`run_on`] (a bound listener, the `[flight]` config, the shared pool), or
//! build a [`FlightServer`] to add a GraphQL source, metrics, a change-log wake-up and keep a
//! [`RegistryHandle`] for SIGHUP. Tickets are documented in [`ticket`], types in [`types`]
//! and [`graphql`], security in [`auth`], DoPut in [`put`].

pub mod auth;
pub mod config;
pub mod graphql;
pub mod plan;
pub mod put;
pub mod registry;
pub mod service;
pub mod stream;
pub mod ticket;
pub mod types;

use std::sync::Arc;
use std::time::Duration;

use arrow_flight::flight_service_server::FlightServiceServer;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;

pub use auth::Tokens;
pub use config::{ClientPrincipal, ConfigError, FlightConfig, RoleAccess};
pub use graphql::{GqlField, GqlType, GraphQLRows, GraphQLSource, GraphQLSourceError, NamedQuery};
pub use registry::{Registry, RegistryError, RegistryHandle};

use crate::auth::Authenticator;
use crate::backoff::Backoff;
use crate::metrics::FlightMetrics;

/// Why the Flight server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum FlightError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Tls(#[from] auth::TlsError),
    #[error("cannot read the listener address: {0}")]
    Listener(std::io::Error),
    #[error("TLS setup failed: {0}")]
    TlsSetup(String),
    #[error("gRPC server failed: {0}")]
    Transport(String),
}

/// The Flight server before it starts.
pub struct FlightServer {
    cfg: FlightConfig,
    tokens: Tokens,
    pool: deadpool_postgres::Pool,
    registry: Arc<Registry>,
    metrics: Option<FlightMetrics>,
    graphql: Option<Arc<dyn GraphQLSource>>,
    wake: Option<Arc<Notify>>,
    auth: Option<Arc<Authenticator>>,
    rate_limit: Option<Arc<crate::ratelimit::RateLimiter>>,
}

impl FlightServer {
    /// Validates the config and resolves the tokens (including `tokens_env`); only the
    /// static tokens are accepted.
    pub fn new(
        cfg: FlightConfig,
        pool: deadpool_postgres::Pool,
    ) -> Result<FlightServer, FlightError> {
        FlightServer::with_auth(cfg, pool, None)
    }

    /// As [`FlightServer::new`], and with `auth` the JWTs its verifiers accept too (the
    /// static tokens are then optional). The authenticator is the one the HTTP side uses
    /// in the same process, so keys and metrics are shared.
    pub fn with_auth(
        cfg: FlightConfig,
        pool: deadpool_postgres::Pool,
        auth: Option<Arc<Authenticator>>,
    ) -> Result<FlightServer, FlightError> {
        cfg.validate_with(auth.is_some())?;
        if let Some(a) = &auth {
            cfg.check_principal_roles(&a.config().db_roles)?;
        }
        let tokens = Tokens::new(cfg.resolved_tokens()?);
        Ok(FlightServer {
            cfg,
            tokens,
            auth,
            pool,
            registry: Arc::new(Registry::default()),
            metrics: None,
            graphql: None,
            wake: None,
            rate_limit: None,
        })
    }

    /// Spends these budgets on every DoGet and DoPut (`RESOURCE_EXHAUSTED` when spent).
    pub fn with_rate_limit(
        mut self,
        limiter: Option<Arc<crate::ratelimit::RateLimiter>>,
    ) -> FlightServer {
        self.rate_limit = limiter;
        self
    }

    /// Records `fraiseql_flight_*` into these metrics (default: an unexported registry).
    pub fn with_metrics(mut self, metrics: FlightMetrics) -> FlightServer {
        self.metrics = Some(metrics);
        self
    }

    /// Enables `graphql` tickets.
    pub fn with_graphql(mut self, source: Arc<dyn GraphQLSource>) -> FlightServer {
        self.graphql = Some(source);
        self
    }

    /// A notification fired when the change log grows (the observer's LISTEN wake-up), so
    /// `follow` event streams deliver without waiting for their poll interval.
    pub fn with_change_wakeup(mut self, wake: Arc<Notify>) -> FlightServer {
        self.wake = Some(wake);
        self
    }

    /// A handle to reload the schema registry (call its `refresh` on SIGHUP).
    pub fn registry_handle(&self) -> RegistryHandle {
        RegistryHandle {
            registry: self.registry.clone(),
            pool: self.pool.clone(),
        }
    }

    /// Serves on `listener` until `shutdown` fires. Running streams end when it does
    /// (`follow` streams cleanly, others with Unavailable).
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> Result<(), FlightError> {
        let local = listener.local_addr().map_err(FlightError::Listener)?;
        let tls = auth::tls_config(&self.cfg, local)?;
        let tls_on = tls.is_some();
        let mtls_on = self.cfg.client_ca.is_some();

        // A database that is down at startup must not stop the server: the registry is
        // loaded in the background with backoff, and `refresh` reloads it later.
        let handle = self.registry_handle();
        let load_shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut backoff =
                Backoff::new(Duration::from_millis(500), Duration::from_secs(30)).without_jitter();
            while !handle.registry.is_loaded() {
                let delay = backoff.next_delay();
                match handle.refresh().await {
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in = ?delay, "flight schema registry not loaded")
                    }
                }
                tokio::select! {
                    _ = load_shutdown.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        });

        let header_list = header_list_bytes(self.auth.as_deref());
        let state = service::FlightState {
            pool: self.pool,
            registry: self.registry,
            tokens: self.tokens,
            auth: self.auth,
            roles: self.cfg.roles.clone(),
            principals: self.cfg.client_principals.clone(),
            metrics: self.metrics.unwrap_or_else(FlightMetrics::unregistered),
            graphql: self.graphql,
            wake: self.wake,
            shutdown: shutdown.clone(),
            batch_rows: self.cfg.batch_rows,
            max_ticket_bytes: self.cfg.max_ticket_bytes,
            put_tables: self.cfg.put_tables.clone(),
            follow_poll: Duration::from_millis(self.cfg.follow_poll_ms),
            rate_limit: self.rate_limit,
        };
        let svc = FlightServiceServer::new(service::FraiseFlightService::new(state))
            .max_decoding_message_size(self.cfg.max_put_message_bytes);
        let mut builder =
            tonic::transport::Server::builder().http2_max_header_list_size(header_list);
        if let Some(tls) = tls {
            builder = builder
                .tls_config(tls)
                .map_err(|e| FlightError::TlsSetup(describe(&e)))?;
        }
        tracing::info!(%local, tls = tls_on, mtls = mtls_on, "flight listening");
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        builder
            .add_service(svc)
            .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
            .await
            .map_err(|e| FlightError::Transport(describe(&e)))?;
        tracing::info!("flight stopped");
        Ok(())
    }
}

/// The HTTP/2 header-list bound of Flight calls: room for a token well beyond
/// `auth.max_token_bytes` (at least 24 KiB of it), so an oversized token reaches the
/// authenticator and is answered UNAUTHENTICATED like every other bad token; a larger
/// header list is refused by HTTP/2 itself (431). Bounded: at most 2 MiB + 16 KiB.
fn header_list_bytes(auth: Option<&Authenticator>) -> u32 {
    let token = auth
        .map_or(0, |a| a.config().max_token_bytes)
        .max(12 * 1024);
    u32::try_from(token * 2 + 16 * 1024).unwrap_or(u32::MAX)
}

fn describe(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg = format!("{msg}: {s}");
        source = s.source();
    }
    msg
}

/// Starts the Flight server with the defaults: no GraphQL source, metrics unexported.
pub async fn run_on(
    listener: TcpListener,
    cfg: FlightConfig,
    pool: deadpool_postgres::Pool,
    shutdown: CancellationToken,
) -> Result<(), FlightError> {
    FlightServer::new(cfg, pool)?
        .serve(listener, shutdown)
        .await
}
