//! The HTTP server (hyper 1): routing, body limits, per-request metrics and graceful
//! shutdown. Routes: `/graphql` (handed to [`crate::graphql::http`]), `/graphiql` (embedded
//! assets), `/healthz` (alive), `/readyz` (database reachable), `/metrics` (Prometheus text).
//!
//! [`serve`] takes an already-bound listener, so tests bind port 0 and run the server
//! in-process; it returns once shutdown is requested and in-flight requests have finished
//! (or the grace period ran out).

pub mod config;

pub use config::ServerConfig;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::metrics::metrics;

pub type Body = Full<Bytes>;

/// What every request handler can reach.
pub struct AppState {
    pub config: Arc<Config>,
    pub pool: deadpool_postgres::Pool,
    /// The GraphQL engine, swapped whole on SIGHUP; `None` when no schema is configured.
    /// Requests clone the `Arc`, so those in flight finish on the engine they started with.
    /// The handle is shared with the Flight role's GraphQL source when both run.
    pub engine: Option<crate::graphql::SharedEngine>,
    /// Set when this process consumes a queue backend that is a service of its own
    /// (`fraiseql worker`): `/readyz` then also needs it, and reports "not connected yet"
    /// until the first connection.
    pub queue: Option<Arc<QueueReadiness>>,
    /// Who may call `/graphql`; `None` when `[auth]` is not configured.
    pub auth: Option<Arc<crate::auth::Authenticator>>,
    /// The budgets `/graphql` requests spend; `None` when `[rate_limit]` sets no rule.
    pub rate_limit: Option<Arc<crate::ratelimit::RateLimiter>>,
    /// `metrics.token_env`'s token: who may read `/metrics` from beyond loopback.
    pub metrics_token: Option<crate::flight::auth::Tokens>,
}

/// The queue backend `/readyz` waits for, filled once it is connected.
pub struct QueueReadiness {
    /// Backend name, for the reason `/readyz` gives.
    pub backend: &'static str,
    pub probe: std::sync::OnceLock<Arc<dyn crate::queue::Probe>>,
}

impl QueueReadiness {
    pub fn new(backend: &'static str) -> Self {
        QueueReadiness {
            backend,
            probe: std::sync::OnceLock::new(),
        }
    }
}

impl AppState {
    /// The current engine, if a schema is configured.
    pub fn engine(&self) -> Option<Arc<crate::graphql::Engine>> {
        self.engine.as_ref().map(|e| e.current())
    }

    /// Replaces the engine (schema reload).
    pub fn swap_engine(&self, engine: crate::graphql::Engine) {
        if let Some(slot) = &self.engine {
            slot.swap(engine);
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("accept failed: {0}")]
    Accept(std::io::Error),
}

/// Serves HTTP on `listener` until `shutdown` is cancelled, then stops accepting and waits
/// up to `server.grace_period_ms` for open connections to finish their requests.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: CancellationToken,
) -> Result<(), HttpError> {
    let graceful = GracefulShutdown::new();
    // hyper's HTTP/1 graceful shutdown closes a connection whose GET request has been read
    // but not yet answered (it looks idle), so in-flight requests are tracked here and
    // awaited before connections are told to close.
    let in_flight = TaskTracker::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .keep_alive(true);

    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Running out of file descriptors is transient: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let in_flight = in_flight.clone();
        let shutdown = shutdown.clone();
        let peer_ip = crate::ratelimit::Peer(peer.ip());
        let service = service_fn(move |mut req: Request<Incoming>| {
            req.extensions_mut().insert(peer_ip);
            let state = state.clone();
            let shutdown = shutdown.clone();
            in_flight.track_future(async move {
                let mut response = handle(state, req).await;
                if shutdown.is_cancelled() {
                    response
                        .headers_mut()
                        .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
                }
                Ok::<_, Infallible>(response)
            })
        });
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }

    drop(listener);
    let grace = Duration::from_millis(state.config.server.grace_period_ms);
    let deadline = tokio::time::Instant::now() + grace;
    in_flight.close();
    if tokio::time::timeout_at(deadline, in_flight.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            requests = in_flight.len(),
            grace_ms = grace.as_millis() as u64,
            "grace period over with requests still running; closing"
        );
        return Ok(());
    }
    // Responses are written by the connection tasks; give them the rest of the grace period.
    match tokio::time::timeout_at(deadline, graceful.shutdown()).await {
        Ok(()) => tracing::info!("all connections closed"),
        Err(_) => tracing::warn!("grace period over; closing remaining connections"),
    }
    Ok(())
}

/// Routes one request and records its metrics.
async fn handle(state: Arc<AppState>, req: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    let path = req.uri().path().to_string();
    let origin = allowed_origin(&state.config.server.cors_allowed_origins, req.headers());
    if path == "/graphql" && req.method() == Method::OPTIONS {
        let response = preflight(origin.as_ref());
        metrics()
            .http_requests
            .with_label_values(&["/graphql", response.status().as_str()])
            .inc();
        return response;
    }
    let timeout = Duration::from_millis(state.config.server.request_timeout_ms);
    let (route, response) = match tokio::time::timeout(timeout, route(&state, req, &path)).await {
        Ok(r) => r,
        Err(_) => (
            route_label(&path),
            json_error(StatusCode::SERVICE_UNAVAILABLE, "request timed out"),
        ),
    };
    let mut response = response;
    security_headers(&mut response, route);
    if route == "/graphql"
        && let Some(origin) = origin
    {
        let h = response.headers_mut();
        h.insert(hyper::header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.append(hyper::header::VARY, HeaderValue::from_static("Origin"));
        h.insert(
            hyper::header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("retry-after, ratelimit, ratelimit-policy"),
        );
    }
    let m = metrics();
    m.http_requests
        .with_label_values(&[route, response.status().as_str()])
        .inc();
    m.http_request_duration
        .with_label_values(&[route])
        .observe(started.elapsed().as_secs_f64());
    response
}

/// What GraphiQL's page may load: its own scripts and styles (GraphiQL sets inline styles),
/// and calls to this server only.
const GRAPHIQL_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; font-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; \
     base-uri 'none'; form-action 'none'";

/// Headers on every answer: nothing is sniffed, framed or referred; only GraphiQL's page
/// may run anything.
fn security_headers(response: &mut Response<Body>, route: &str) {
    let csp = if route == "/graphiql" {
        GRAPHIQL_CSP
    } else {
        "default-src 'none'; frame-ancestors 'none'"
    };
    insert_static(
        response,
        &[
            (hyper::header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (hyper::header::X_FRAME_OPTIONS, "DENY"),
            (hyper::header::REFERRER_POLICY, "no-referrer"),
            (hyper::header::CONTENT_SECURITY_POLICY, csp),
        ],
    );
}

fn insert_static(
    response: &mut Response<Body>,
    headers: &[(hyper::header::HeaderName, &'static str)],
) {
    for (name, value) in headers {
        response
            .headers_mut()
            .insert(name.clone(), HeaderValue::from_static(value));
    }
}

/// The request's `Origin` when `server.cors_allowed_origins` allows it.
fn allowed_origin(allowed: &[String], headers: &hyper::HeaderMap) -> Option<HeaderValue> {
    if allowed.is_empty() {
        return None;
    }
    let origin = headers.get(hyper::header::ORIGIN)?;
    let text = origin.to_str().ok()?;
    allowed
        .iter()
        .any(|a| a == "*" || a.eq_ignore_ascii_case(text))
        .then(|| origin.clone())
}

/// The answer to a CORS preflight of `/graphql`: 204 with what may be sent when the origin
/// is allowed, else 204 without any `Access-Control-*` header (the browser then refuses).
fn preflight(origin: Option<&HeaderValue>) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::NO_CONTENT;
    insert_static(&mut r, &[(hyper::header::VARY, "Origin")]);
    if let Some(origin) = origin {
        r.headers_mut()
            .insert(hyper::header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        insert_static(
            &mut r,
            &[
                (
                    hyper::header::ACCESS_CONTROL_ALLOW_METHODS,
                    "GET, POST, OPTIONS",
                ),
                (
                    hyper::header::ACCESS_CONTROL_ALLOW_HEADERS,
                    "authorization, content-type, accept",
                ),
                (hyper::header::ACCESS_CONTROL_MAX_AGE, "600"),
            ],
        );
    }
    r
}

/// The metrics label for a path: known routes by name, everything else as "other" so
/// arbitrary paths cannot blow up label cardinality.
fn route_label(path: &str) -> &'static str {
    match path {
        "/graphql" => "/graphql",
        "/healthz" => "/healthz",
        "/readyz" => "/readyz",
        "/metrics" => "/metrics",
        p if p == "/graphiql" || p.starts_with("/graphiql/") => "/graphiql",
        _ => "other",
    }
}

async fn route(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    path: &str,
) -> (&'static str, Response<Body>) {
    let metrics_path = state.config.metrics.enabled && path == state.config.metrics.path;
    match path {
        "/graphql" => match state.engine() {
            Some(engine) => ("/graphql", graphql(state, &engine, req).await),
            None => (
                "/graphql",
                json_error(
                    StatusCode::NOT_FOUND,
                    "no GraphQL schema configured (set [graphql] schema or serve --schema)",
                ),
            ),
        },
        p if (p == "/graphiql" || p.starts_with("/graphiql/"))
            && state.config.graphiql_enabled()
            && state.engine.is_some() =>
        {
            let resp = match only_get(&req) {
                Some(r) => r,
                None => graphiql(p),
            };
            ("/graphiql", resp)
        }
        "/healthz" => ("/healthz", only_get(&req).unwrap_or_else(healthz)),
        "/readyz" => {
            let resp = match only_get(&req) {
                Some(r) => r,
                None => readyz(state).await,
            };
            ("/readyz", resp)
        }
        _ if metrics_path => {
            let resp = match only_get(&req).or_else(|| metrics_refused(state, &req)) {
                Some(r) => r,
                None => metrics_endpoint(state),
            };
            ("/metrics", resp)
        }
        _ => ("other", json_error(StatusCode::NOT_FOUND, "not found")),
    }
}

/// Hands a request to the GraphQL engine. The body is read up to `server.max_body_bytes`
/// and no further, so an oversized body costs no more memory than the limit.
async fn graphql(
    state: &AppState,
    engine: &crate::graphql::Engine,
    req: Request<Incoming>,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let limit = state.config.server.max_body_bytes;
    let body = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return crate::graphql::http::body_too_large(engine, &parts.headers).map(Full::new);
        }
        Err(_) => return json_error(StatusCode::BAD_REQUEST, "could not read the request body"),
    };
    let request = Request::from_parts(parts, body);
    crate::graphql::http::handle(
        engine,
        &state.pool,
        state.auth.as_deref(),
        state.rate_limit.as_deref(),
        request,
    )
    .await
    .map(Full::new)
}

/// GraphiQL, embedded (no CDN: it works offline).
fn graphiql(path: &str) -> Response<Body> {
    let rest = path.strip_prefix("/graphiql").unwrap_or(path);
    let file = match rest.strip_prefix('/').unwrap_or(rest) {
        "" | "index.html" => "index.html",
        other => other,
    };
    let Some(asset) = crate::assets::Assets::get(&format!("graphiql/{file}")) else {
        return json_error(StatusCode::NOT_FOUND, "not found");
    };
    let content_type = match file.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        _ => "application/octet-stream",
    };
    let mut r = Response::new(Full::new(Bytes::from(asset.data.into_owned())));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    r
}

/// `Some(405)` unless the method is GET or HEAD.
fn only_get(req: &Request<Incoming>) -> Option<Response<Body>> {
    if req.method() == Method::GET || req.method() == Method::HEAD {
        None
    } else {
        let mut r = json_error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
        r.headers_mut()
            .insert(hyper::header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        Some(r)
    }
}

fn healthz() -> Response<Body> {
    json(StatusCode::OK, serde_json::json!({"status": "ok"}))
}

async fn readyz(state: &AppState) -> Response<Body> {
    let unavailable = |reason: String| {
        json(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"status": "unavailable", "reason": reason}),
        )
    };
    if let Err(e) = crate::db::ping(&state.pool, Duration::from_secs(2)).await {
        return unavailable(e.to_string());
    }
    if let Some(ready) = &state.queue {
        let name = ready.backend;
        let Some(probe) = ready.probe.get() else {
            return unavailable(format!("{name}: not connected yet"));
        };
        match tokio::time::timeout(Duration::from_secs(2), probe.ping()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return unavailable(format!("{name}: {e}")),
            Err(_) => return unavailable(format!("{name}: no answer within 2 s")),
        }
    }
    let mut warnings = Vec::new();
    if let Some(rl) = &state.rate_limit
        && let Err((e, mode)) = rl.probe().await
    {
        match mode {
            crate::ratelimit::OnStoreError::Refuse => {
                return unavailable(format!("rate_limit: {e} (requests are refused meanwhile)"));
            }
            crate::ratelimit::OnStoreError::Allow => warnings.push(format!(
                "rate_limit: {e} (requests are served unlimited meanwhile)"
            )),
        }
    }
    if let Some(auth) = &state.auth {
        // A JWKS never fetched refuses every token of its verifier: not ready. One serving
        // its last good keys while the endpoint is down still works: ready, and said.
        let problems = auth.key_status();
        if let Some((i, crate::auth::keys::KeyStatus::Unavailable(e))) = problems
            .iter()
            .find(|(_, s)| matches!(s, crate::auth::keys::KeyStatus::Unavailable(_)))
        {
            return unavailable(format!("auth.jwt[{i}]: no keys: {e}"));
        }
        if let Some((i, crate::auth::keys::KeyStatus::Stale(e))) = problems.first() {
            warnings.push(format!("auth.jwt[{i}]: serving the last good JWKS: {e}"));
        }
    }
    match warnings.is_empty() {
        true => json(StatusCode::OK, serde_json::json!({"status": "ready"})),
        false => json(
            StatusCode::OK,
            serde_json::json!({"status": "ready", "warning": warnings.join("; ")}),
        ),
    }
}

/// `Some(401)` unless the client may read the metrics: it sends the configured token, or
/// (without one) it connects from a loopback address. Metrics name views, queues and
/// observers, so they are not for everyone who can reach the API.
fn metrics_refused(state: &AppState, req: &Request<Incoming>) -> Option<Response<Body>> {
    let allowed = match &state.metrics_token {
        Some(tokens) => req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(crate::auth::bearer)
            .is_some_and(|t| tokens.accepts(t.as_bytes())),
        None => req
            .extensions()
            .get::<crate::ratelimit::Peer>()
            .is_some_and(|p| p.0.is_loopback()),
    };
    if allowed {
        return None;
    }
    let mut r = json_error(
        StatusCode::UNAUTHORIZED,
        "metrics need \"Authorization: Bearer <metrics.token_env's token>\", or a loopback client",
    );
    r.headers_mut().insert(
        hyper::header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer"),
    );
    Some(r)
}

fn metrics_endpoint(state: &AppState) -> Response<Body> {
    crate::db::record_pool_metrics(&state.pool);
    let mut r = Response::new(Full::new(Bytes::from(crate::metrics::render())));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

pub fn json(status: StatusCode, value: serde_json::Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(value.to_string())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

pub fn json_error(status: StatusCode, message: &str) -> Response<Body> {
    json(status, serde_json::json!({"error": message}))
}
