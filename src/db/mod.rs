//! PostgreSQL access: the connection pool every role shares, readiness checks, and the
//! appliance's own migrations ([`migrate`]), and change-log retention ([`retention`]).
//!
//! The pool opens connections lazily, so a role starts while the database is down and
//! recovers by itself when it comes back; [`ping`] is what `/readyz` and `check` use.

pub mod changelog;
pub mod config;
pub mod leader;
pub mod migrate;
pub mod request;
pub mod retention;

pub use config::DatabaseConfig;
pub use request::{RequestContext, Session};

use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use crate::metrics::metrics;
use crate::redact::redact_url;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("invalid database URL {url}: {message}")]
    Url { url: String, message: String },
    #[error("database.tls_ca_file {file}: {message}")]
    Tls { file: String, message: String },
    #[error("cannot create the connection pool: {0}")]
    Build(String),
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Query(String),
    #[error("timed out after {0:?} waiting for the database")]
    Timeout(Duration),
}

/// Human-readable cause of a tokio-postgres error, without SQL text.
pub fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} ({})", db.message(), db.code().code());
    }
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg = format!("{msg}: {s}");
        source = s.source();
    }
    msg
}

fn describe_pool(e: &deadpool_postgres::PoolError) -> String {
    match e {
        deadpool_postgres::PoolError::Backend(e) => describe(e),
        deadpool_postgres::PoolError::Timeout(_) => "timed out waiting for a connection".into(),
        other => other.to_string(),
    }
}

/// Parses the URL into a tokio-postgres config with the configured timeouts applied.
///
/// `sslmode=verify-full` and `verify-ca` (libpq's names) mean `require`: with TLS the
/// server certificate is always verified (see [`tls_connector`]).
pub fn pg_config(cfg: &DatabaseConfig) -> Result<tokio_postgres::Config, DbError> {
    let url = cfg.normalized_url();
    let mut pg = tokio_postgres::Config::from_str(&url).map_err(|e| DbError::Url {
        url: redact_url(&cfg.url),
        message: e.to_string(),
    })?;
    if pg.get_connect_timeout().is_none() {
        pg.connect_timeout(Duration::from_millis(cfg.connect_timeout_ms));
    }
    if pg.get_application_name().is_none() {
        pg.application_name("fraiseql");
    }
    if cfg.statement_timeout_ms > 0 {
        let existing = pg.get_options().unwrap_or("").to_string();
        pg.options(format!(
            "{existing} -c statement_timeout={}",
            cfg.statement_timeout_ms
        ));
    }
    pg.keepalives(true);
    Ok(pg)
}

/// How connections are encrypted: TLS (rustls, certificates verified) when the URL says
/// `sslmode=require`, else plaintext. `prefer` is treated as plaintext rather than as
/// "TLS without verification", which would protect against nothing.
#[derive(Clone)]
struct Connector {
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
}

/// Builds the connector for `pg`: the bundled Mozilla roots, or `ca_file` when given.
fn tls_connector(pg: &tokio_postgres::Config, ca_file: &str) -> Result<Connector, DbError> {
    if pg.get_ssl_mode() != tokio_postgres::config::SslMode::Require {
        return Ok(Connector { tls: None });
    }
    let mut roots = rustls::RootCertStore::empty();
    if ca_file.is_empty() {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    } else {
        let tls_err = |message: String| DbError::Tls {
            file: ca_file.to_string(),
            message,
        };
        let pem = std::fs::read(ca_file).map_err(|e| tls_err(e.to_string()))?;
        let mut reader = std::io::BufReader::new(pem.as_slice());
        for cert in rustls_pemfile::certs(&mut reader) {
            let cert = cert.map_err(|e| tls_err(e.to_string()))?;
            roots.add(cert).map_err(|e| tls_err(e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(tls_err("no PEM certificates found".into()));
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| DbError::Build(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Connector {
        tls: Some(tokio_postgres_rustls::MakeRustlsConnect::new(config)),
    })
}

/// Opens one connection, resolving TCP host names with [`crate::net::resolve`] (not NSS)
/// and driving the connection on its own task.
async fn connect(
    pg: &tokio_postgres::Config,
    connector: &Connector,
) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), tokio_postgres::Error> {
    let resolved = with_resolved_hosts(pg).await;
    let pg = resolved.as_ref().unwrap_or(pg);
    let on_close = |r: Result<(), tokio_postgres::Error>| {
        if let Err(e) = r {
            tracing::debug!(error = %e, "database connection closed");
        }
    };
    match &connector.tls {
        Some(tls) => {
            let (client, connection) = pg.connect(tls.clone()).await?;
            Ok((
                client,
                tokio::spawn(async move { on_close(connection.await) }),
            ))
        }
        None => {
            let (client, connection) = pg.connect(NoTls).await?;
            Ok((
                client,
                tokio::spawn(async move { on_close(connection.await) }),
            ))
        }
    }
}

/// A copy of `pg` with `hostaddr` set for every TCP host given by name. `None` when nothing
/// needs resolving (or a name cannot be resolved: the connect attempt then reports it).
async fn with_resolved_hosts(pg: &tokio_postgres::Config) -> Option<tokio_postgres::Config> {
    use tokio_postgres::config::Host;
    if !pg.get_hostaddrs().is_empty() {
        return None;
    }
    let hosts = pg.get_hosts();
    let needs = hosts.iter().any(|h| match h {
        Host::Tcp(name) => name.parse::<std::net::IpAddr>().is_err(),
        #[cfg(unix)]
        Host::Unix(_) => false,
    });
    if !needs || hosts.iter().any(|h| !matches!(h, Host::Tcp(_))) {
        return None;
    }
    let mut resolved = pg.clone();
    for host in hosts {
        let Host::Tcp(name) = host else { return None };
        match crate::net::resolve(name).await {
            Ok(addrs) => {
                resolved.hostaddr(addrs[0]);
            }
            Err(e) => {
                tracing::debug!(error = %e, "host name resolution failed");
                return None;
            }
        }
    }
    Some(resolved)
}

struct ResolvingConnect(Connector);

impl deadpool_postgres::Connect for ResolvingConnect {
    fn connect(
        &self,
        pg: &tokio_postgres::Config,
    ) -> futures_util::future::BoxFuture<
        '_,
        Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), tokio_postgres::Error>,
    > {
        let pg = pg.clone();
        Box::pin(async move { connect(&pg, &self.0).await })
    }
}

/// Builds the shared pool. No connection is opened until one is needed.
pub fn pool(cfg: &DatabaseConfig) -> Result<Pool, DbError> {
    let pg = pg_config(cfg)?;
    let connector = tls_connector(&pg, &cfg.tls_ca_file)?;
    // One pool per process: its connector also serves query cancellation.
    let _ = CANCEL_CONNECTOR.set(connector.clone());
    let manager = Manager::from_connect(
        pg,
        ResolvingConnect(connector),
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let acquire = Duration::from_millis(cfg.acquire_timeout_ms);
    Pool::builder(manager)
        .max_size(cfg.effective_pool_size())
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(acquire))
        .create_timeout(Some(Duration::from_millis(cfg.connect_timeout_ms)))
        .recycle_timeout(Some(acquire))
        .build()
        .map_err(|e| DbError::Build(e.to_string()))
}

/// The pool's connector, for [`cancel_query`] (cancel requests open their own connection).
static CANCEL_CONNECTOR: std::sync::OnceLock<Connector> = std::sync::OnceLock::new();

/// Cancels the statement running on `token`'s connection, encrypted like the pool's
/// connections (a database that requires TLS refuses a plaintext cancel request).
pub async fn cancel_query(token: tokio_postgres::CancelToken) -> Result<(), tokio_postgres::Error> {
    match CANCEL_CONNECTOR.get().and_then(|c| c.tls.clone()) {
        Some(tls) => token.cancel_query(tls).await,
        None => token.cancel_query(NoTls).await,
    }
}

/// A dedicated session outside the pool, for what a pooled connection cannot do: receive
/// notifications (LISTEN) and hold session-level advisory locks. Same TLS and host-name
/// resolution as the pool. `on_notification` runs for every NOTIFY; cancelling `end` closes
/// the connection; the returned token is cancelled once the connection has ended (lost or
/// closed), so the caller notices a dead session without a query.
pub async fn session<F>(
    pg: &tokio_postgres::Config,
    tls_ca_file: &str,
    on_notification: F,
    end: tokio_util::sync::CancellationToken,
) -> Result<(tokio_postgres::Client, tokio_util::sync::CancellationToken), DbError>
where
    F: Fn() + Send + 'static,
{
    let connector = tls_connector(pg, tls_ca_file)?;
    let resolved = with_resolved_hosts(pg).await;
    let pg = resolved.as_ref().unwrap_or(pg);
    let lost = tokio_util::sync::CancellationToken::new();
    let unavailable = |e: tokio_postgres::Error| DbError::Unavailable(describe(&e));
    let client = match &connector.tls {
        Some(tls) => {
            let (client, connection) = pg.connect(tls.clone()).await.map_err(unavailable)?;
            tokio::spawn(drive_session(
                connection,
                on_notification,
                end,
                lost.clone(),
            ));
            client
        }
        None => {
            let (client, connection) = pg.connect(NoTls).await.map_err(unavailable)?;
            tokio::spawn(drive_session(
                connection,
                on_notification,
                end,
                lost.clone(),
            ));
            client
        }
    };
    Ok((client, lost))
}

async fn drive_session<S, T, F>(
    mut connection: tokio_postgres::Connection<S, T>,
    on_notification: F,
    end: tokio_util::sync::CancellationToken,
    lost: tokio_util::sync::CancellationToken,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    F: Fn(),
{
    use futures_util::StreamExt;
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    loop {
        tokio::select! {
            m = messages.next() => match m {
                Some(Ok(tokio_postgres::AsyncMessage::Notification(_))) => on_notification(),
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "session connection error");
                    break;
                }
                None => break,
            },
            // Dropping the connection closes it (and releases session locks).
            _ = end.cancelled() => break,
        }
    }
    lost.cancel();
}

/// A pooled connection, with the pool's failure described (no SQL, no password).
pub async fn client(pool: &Pool) -> Result<deadpool_postgres::Object, DbError> {
    pool.get()
        .await
        .map_err(|e| DbError::Unavailable(describe_pool(&e)))
}

/// Takes a connection and runs `SELECT version()`; returns the server version.
pub async fn ping(pool: &Pool, timeout: Duration) -> Result<String, DbError> {
    let work = async {
        let client = client(pool).await?;
        let row = client
            .query_one("SELECT current_setting('server_version')", &[])
            .await
            .map_err(|e| DbError::Unavailable(describe(&e)))?;
        Ok::<_, DbError>(row.get::<_, String>(0))
    };
    let result = match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(DbError::Timeout(timeout)),
    };
    metrics().db_up.set(i64::from(result.is_ok()));
    result
}

/// Copies the pool's status into the pool gauges (called when `/metrics` is scraped).
pub fn record_pool_metrics(pool: &Pool) {
    let s = pool.status();
    let m = metrics();
    m.db_pool_max.set(s.max_size as i64);
    m.db_pool_size.set(s.size as i64);
    m.db_pool_in_use
        .set(s.size.saturating_sub(s.available) as i64);
    m.db_pool_waiting.set(s.waiting as i64);
}
