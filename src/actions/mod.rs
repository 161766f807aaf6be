//! Actions: what an observer does with a matching change.
//!
//! One file per kind (`webhook`, `slack`, `email`, `search`, `cache`), each owning its config
//! struct (deserialized from `[[observers.actions]]`), its start-time compilation (templates,
//! secrets read from `*_env` variables, clients) and its execution. [`Action::execute`] is
//! called by the observer workers with a [`Job`]; the [`ActionError`] it returns decides
//! what happens next: a retryable error is retried with the observer's backoff (honouring
//! `Retry-After`), a permanent one goes straight to the dead-letter store.
//!
//! Classification (the same for every HTTP-based action): connection errors, timeouts,
//! 5xx, 408 and 429 are retryable; any other 4xx is permanent, because sending the same
//! request again cannot succeed until someone fixes the receiver or the config — that is
//! what `fraiseql dlq retry` is for.

pub mod cache;
pub mod email;
pub mod nats;
pub mod search;
pub mod slack;
pub mod template;
pub mod webhook;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::queue::Job;

pub use cache::CacheConfig;
pub use email::EmailConfig;
pub use search::SearchConfig;
pub use slack::SlackConfig;
pub use webhook::WebhookConfig;

/// Why an action failed, and whether trying again may help.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ActionError {
    #[error("{message}")]
    Retryable {
        message: String,
        /// The receiver's `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
    },
    #[error("{message}")]
    Permanent { message: String },
}

impl ActionError {
    pub fn retryable(message: impl Into<String>) -> Self {
        ActionError::Retryable {
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        ActionError::Permanent {
            message: message.into(),
        }
    }

    pub fn is_retryable(&self) -> bool {
        matches!(self, ActionError::Retryable { .. })
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ActionError::Retryable { retry_after, .. } => *retry_after,
            ActionError::Permanent { .. } => None,
        }
    }
}

/// `[[observers.actions]]`: one table per action, selected by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ActionConfig {
    Webhook(WebhookConfig),
    Slack(SlackConfig),
    Email(EmailConfig),
    Search(SearchConfig),
    Cache(CacheConfig),
    Nats(nats::NatsActionConfig),
}

impl ActionConfig {
    pub fn type_name(&self) -> &'static str {
        match self {
            ActionConfig::Webhook(_) => "webhook",
            ActionConfig::Slack(_) => "slack",
            ActionConfig::Email(_) => "email",
            ActionConfig::Search(_) => "search",
            ActionConfig::Nats(_) => "nats",
            ActionConfig::Cache(_) => "cache",
        }
    }

    /// The explicit `name` key, when set.
    pub fn name(&self) -> Option<&str> {
        match self {
            ActionConfig::Webhook(c) => c.name.as_deref(),
            ActionConfig::Slack(c) => c.name.as_deref(),
            ActionConfig::Email(c) => c.name.as_deref(),
            ActionConfig::Search(c) => c.name.as_deref(),
            ActionConfig::Nats(c) => c.name.as_deref(),
            ActionConfig::Cache(c) => c.name.as_deref(),
        }
    }

    /// The action's identity within its observer, carried by its jobs: the `name` key, or
    /// `<type>-<16 hex digits>` from a SHA-256 of the type and the settings as canonical JSON
    /// (keys sorted), so it does not depend on the action's position nor on key order in
    /// the file. Identical unnamed actions of one observer share it; the matcher tells them
    /// apart ([`crate::observers::matcher`]).
    pub fn identity(&self) -> String {
        if let Some(n) = self.name() {
            return n.to_owned();
        }
        use sha2::Digest;
        let value = serde_json::to_value(self).unwrap_or_default();
        let mut canonical = String::new();
        canonical_json(&value, &mut canonical);
        let digest = sha2::Sha256::digest(canonical.as_bytes());
        let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        format!("{}-{hex}", self.type_name())
    }

    /// The action's own time limit (`timeout_ms`); `None` for `cache` (one local `NOTIFY`).
    pub fn timeout_ms(&self) -> Option<u64> {
        match self {
            ActionConfig::Webhook(c) => Some(c.timeout_ms),
            ActionConfig::Slack(c) => Some(c.timeout_ms),
            ActionConfig::Email(c) => Some(c.timeout_ms),
            ActionConfig::Search(c) => Some(c.timeout_ms),
            ActionConfig::Nats(c) => Some(c.timeout_ms),
            ActionConfig::Cache(_) => None,
        }
    }
}

/// `value` as JSON with every object's keys in sorted order, whatever serde_json's map keeps.
fn canonical_json(value: &serde_json::Value, out: &mut String) {
    match value {
        serde_json::Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::Value::String(k.clone()).to_string());
                out.push(':');
                canonical_json(&map[k], out);
            }
            out.push('}');
        }
        serde_json::Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(v, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// A config problem in one action: the key and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ActionConfigError {
    pub key: String,
    pub message: String,
}

impl ActionConfigError {
    pub fn new(key: &str, message: impl Into<String>) -> Self {
        ActionConfigError {
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

/// Looks up an environment variable by name (`std::env::var` in production).
pub type EnvLookup = std::sync::Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// What actions may need from the runtime, shared by all of them.
#[derive(Clone)]
pub struct ActionDeps {
    pub http: reqwest::Client,
    /// For the cache action's NOTIFY.
    pub pool: deadpool_postgres::Pool,
    /// Looks up `*_env` secrets; `std::env::var` in production, a map in tests.
    pub env: EnvLookup,
}

impl ActionDeps {
    /// Production dependencies: a shared HTTP client and the process environment.
    pub fn new(pool: deadpool_postgres::Pool) -> Result<Self, reqwest::Error> {
        Ok(ActionDeps {
            http: http_client()?,
            pool,
            env: std::sync::Arc::new(|name| std::env::var(name).ok()),
        })
    }

    /// Reads a secret named by a `*_env` key; the value is never logged.
    pub fn secret(&self, key: &str, var: &str) -> Result<String, ActionConfigError> {
        match (self.env)(var) {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(ActionConfigError::new(
                key,
                format!("environment variable `{var}` is not set or empty"),
            )),
        }
    }
}

/// The HTTP client shared by webhook, slack and search: rustls with the ring provider (no
/// OpenSSL, no aws-lc) and the Mozilla roots compiled in (webpki-roots), so HTTPS works in
/// a `FROM scratch` image that has no system certificate store; host names are resolved by
/// [`crate::net`] (not libc, which cannot in that image), for every new connection. Connections
/// are pooled; no global timeout (each action sets its own).
pub fn http_client() -> Result<reqwest::Client, reqwest::Error> {
    http_client_with_roots(Vec::new())
}

/// [`http_client`] trusting `extra_roots` (a private CA) besides the bundled roots.
pub fn http_client_with_roots(
    extra_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
) -> Result<reqwest::Client, reqwest::Error> {
    http_client_builder(extra_roots).build()
}

/// The builder behind [`http_client_with_roots`], for clients that add their own limits
/// (the analytics sinks' request timeouts).
pub fn http_client_builder(
    extra_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
) -> reqwest::ClientBuilder {
    // Also the process default, for anything (lettre) that asks rustls for one. An error
    // only means a provider is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default TLS versions")
    .with_root_certificates({
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        // Invalid extra roots were rejected when the config was loaded.
        roots.add_parsable_certificates(extra_roots);
        roots
    })
    .with_no_client_auth();
    reqwest::Client::builder()
        .user_agent(concat!("fraiseql/", env!("CARGO_PKG_VERSION")))
        .pool_idle_timeout(Duration::from_secs(60))
        .tls_backend_preconfigured(tls)
        .dns_resolver(crate::net::Resolver)
}

/// A compiled action, ready to execute.
pub enum Action {
    Webhook(webhook::WebhookAction),
    Slack(slack::SlackAction),
    Email(email::EmailAction),
    Search(search::SearchAction),
    Cache(cache::CacheAction),
    Nats(nats::NatsAction),
}

impl Action {
    /// Compiles an action at start: templates, secrets, clients. `prefix` names the
    /// template for error messages (`<observer>/<index>`).
    pub fn build(
        prefix: &str,
        cfg: &ActionConfig,
        deps: &ActionDeps,
    ) -> Result<Action, ActionConfigError> {
        Ok(match cfg {
            ActionConfig::Webhook(c) => {
                Action::Webhook(webhook::WebhookAction::build(prefix, c, deps)?)
            }
            ActionConfig::Slack(c) => Action::Slack(slack::SlackAction::build(prefix, c, deps)?),
            ActionConfig::Email(c) => Action::Email(email::EmailAction::build(prefix, c, deps)?),
            ActionConfig::Search(c) => {
                Action::Search(search::SearchAction::build(prefix, c, deps)?)
            }
            ActionConfig::Cache(c) => Action::Cache(cache::CacheAction::build(c, deps)?),
            ActionConfig::Nats(c) => Action::Nats(nats::NatsAction::build(prefix, c, deps)?),
        })
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            Action::Webhook(_) => "webhook",
            Action::Slack(_) => "slack",
            Action::Email(_) => "email",
            Action::Search(_) => "search",
            Action::Cache(_) => "cache",
            Action::Nats(_) => "nats",
        }
    }

    pub async fn execute(&self, job: &Job) -> Result<(), ActionError> {
        match self {
            Action::Webhook(a) => a.execute(job).await,
            Action::Slack(a) => a.execute(job).await,
            Action::Email(a) => a.execute(job).await,
            Action::Search(a) => a.execute(job).await,
            Action::Cache(a) => a.execute(job).await,
            Action::Nats(a) => a.execute(job).await,
        }
    }
}

/// The template context for a job: its event document plus `idempotency_key`.
pub fn render_context(job: &Job) -> serde_json::Value {
    let mut ctx = job.payload.clone();
    if let Some(obj) = ctx.as_object_mut() {
        obj.insert(
            "idempotency_key".into(),
            serde_json::Value::String(job.key.clone()),
        );
    }
    ctx
}

/// Compiles a template, turning its error into a config error on `key`.
pub(crate) fn compile_template(
    prefix: &str,
    key: &str,
    source: &str,
) -> Result<template::Template, ActionConfigError> {
    template::Template::compile(&format!("{prefix}/{key}"), source)
        .map_err(|e| ActionConfigError::new(key, format!("template does not compile: {e}")))
}

/// Renders a template at delivery time. Rendering can only fail on a runtime error in the
/// template itself (e.g. a filter applied to the wrong type), which retrying cannot fix.
pub(crate) fn render(
    t: &template::Template,
    ctx: &serde_json::Value,
    what: &str,
) -> Result<String, ActionError> {
    t.render(ctx)
        .map_err(|e| ActionError::permanent(format!("rendering {what} failed: {e}")))
}

/// Reads a `ca_file` (PEM, one or more certificates) at start.
pub(crate) fn read_ca_file(
    path: &str,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, ActionConfigError> {
    use rustls::pki_types::pem::PemObject;
    let certs = rustls::pki_types::CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            ActionConfigError::new(
                "ca_file",
                format!("cannot read certificates from `{path}`: {e}"),
            )
        })?;
    if certs.is_empty() {
        return Err(ActionConfigError::new(
            "ca_file",
            format!("`{path}` holds no PEM certificate"),
        ));
    }
    Ok(certs)
}

/// Validates an http(s) URL at start.
pub(crate) fn parse_url(key: &str, url: &str) -> Result<reqwest::Url, ActionConfigError> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| ActionConfigError::new(key, format!("`{url}` is not a valid URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(ActionConfigError::new(
            key,
            format!("expected an http:// or https:// URL with a host, found `{url}`"),
        ));
    }
    Ok(parsed)
}

/// Classifies a transport-level reqwest error: everything that happens before a response
/// (connect refused, DNS, timeout, reset) is worth retrying; a request we could not even
/// build is not. The URL is stripped from the message: Slack webhook URLs (and some webhook
/// URLs) carry secrets, and the message is logged and stored with dead letters.
pub(crate) fn classify_transport(e: reqwest::Error) -> ActionError {
    let e = &e.without_url();
    if e.is_builder() {
        return ActionError::permanent(format!("invalid request: {e}"));
    }
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    ActionError::retryable(format!("{what}: {}", error_chain(e)))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(src) = cur {
        s.push_str(": ");
        s.push_str(&src.to_string());
        cur = src.source();
    }
    s
}

/// Classifies an HTTP response status (the body snippet goes into the error message).
pub(crate) fn classify_status(
    status: reqwest::StatusCode,
    retry_after: Option<&str>,
    body: &str,
) -> Result<(), ActionError> {
    if status.is_success() {
        return Ok(());
    }
    let snippet: String = body.chars().take(300).collect();
    let message = format!("HTTP {status}: {snippet}");
    let code = status.as_u16();
    if status.is_server_error() || code == 408 || code == 429 {
        Err(ActionError::Retryable {
            message,
            retry_after: retry_after.and_then(parse_retry_after),
        })
    } else {
        Err(ActionError::Permanent { message })
    }
}

/// How much of a webhook's or Slack's answer is read: only an error snippet is ever used.
pub(crate) const SMALL_RESPONSE_BYTES: usize = 64 * 1024;

/// Sends a prepared request and classifies the outcome. At most `max_body` bytes of the
/// answer are read (an endpoint that streams without end must not hold a handler or its
/// memory); the rest is dropped with the connection. The returned body is cut at the bound
/// (lossy UTF-8): a caller that must parse the whole answer compares its length with the bound.
pub(crate) async fn send_classified(
    req: reqwest::RequestBuilder,
    max_body: usize,
) -> Result<String, ActionError> {
    let mut resp = req.send().await.map_err(classify_transport)?;
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut body = Vec::new();
    while body.len() < max_body {
        match resp.chunk().await.map_err(classify_transport)? {
            Some(chunk) => {
                let room = max_body - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            None => break,
        }
    }
    let body = String::from_utf8_lossy(&body).into_owned();
    classify_status(status, retry_after.as_deref(), &body)?;
    Ok(body)
}

/// `Retry-After` is either delta-seconds or an HTTP date.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let delta = at.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(delta.to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::StatusCode;

    #[test]
    fn http_client_builds_with_ring_and_bundled_roots() {
        http_client().unwrap();
    }

    #[test]
    fn status_classification() {
        assert!(classify_status(StatusCode::OK, None, "").is_ok());
        assert!(classify_status(StatusCode::NO_CONTENT, None, "").is_ok());
        for code in [500, 502, 503, 408, 429] {
            let e = classify_status(StatusCode::from_u16(code).unwrap(), None, "x").unwrap_err();
            assert!(e.is_retryable(), "{code}");
        }
        for code in [400, 401, 403, 404, 410, 422] {
            let e = classify_status(StatusCode::from_u16(code).unwrap(), None, "x").unwrap_err();
            assert!(!e.is_retryable(), "{code}");
        }
        let e = classify_status(StatusCode::TOO_MANY_REQUESTS, Some("7"), "").unwrap_err();
        assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
    }

    /// An HTTP/1.1 server on a free port that answers every request `200` with
    /// `body_bytes` of body (`None`: a chunked body that never ends).
    async fn answering(body_bytes: Option<usize>) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = sock.read(&mut buf).await;
                    let chunk = vec![b'x'; 16 * 1024];
                    match body_bytes {
                        Some(n) => {
                            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {n}\r\n\r\n");
                            let _ = sock.write_all(head.as_bytes()).await;
                            let _ = sock.write_all(&vec![b'x'; n]).await;
                        }
                        None => {
                            let head = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
                            let _ = sock.write_all(head.as_bytes()).await;
                            let frame = format!("{:x}\r\n", chunk.len());
                            loop {
                                if sock.write_all(frame.as_bytes()).await.is_err()
                                    || sock.write_all(&chunk).await.is_err()
                                    || sock.write_all(b"\r\n").await.is_err()
                                {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        format!("http://{addr}/")
    }

    /// Host names are resolved by fraiseql (`crate::net`), not by libc: `web.localhost` is
    /// loopback there (RFC 6761) and unknown to libc here (`files dns`), as every name is in
    /// the `FROM scratch` image.
    #[tokio::test]
    async fn http_client_resolves_host_names_itself() {
        let url = answering(Some(5))
            .await
            .replace("127.0.0.1", "web.localhost");
        let req = http_client()
            .unwrap()
            .post(&url)
            .timeout(Duration::from_secs(5));
        let body = send_classified(req, 1024).await.expect("delivered by name");
        assert_eq!(body.len(), 5);
    }

    #[tokio::test]
    async fn response_bodies_are_read_up_to_the_bound_only() {
        let client = http_client().unwrap();
        // An endpoint that accepts the delivery and then never stops sending: the action
        // succeeds after reading the bound instead of running into its timeout.
        let url = answering(None).await;
        let req = client.post(&url).timeout(Duration::from_secs(3));
        let body = send_classified(req, 64 * 1024).await.expect("delivered");
        assert!(body.len() <= 64 * 1024, "{}", body.len());
        // A body within the bound is read whole.
        let url = answering(Some(1000)).await;
        let body = send_classified(client.post(&url), 64 * 1024).await.unwrap();
        assert_eq!(body.len(), 1000);
    }

    #[test]
    fn retry_after_formats() {
        assert_eq!(parse_retry_after(" 12 "), Some(Duration::from_secs(12)));
        let future = (chrono::Utc::now() + chrono::Duration::seconds(30)).to_rfc2822();
        let d = parse_retry_after(&future).unwrap();
        assert!(
            d > Duration::from_secs(25) && d <= Duration::from_secs(30),
            "{d:?}"
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn action_identity_is_the_name_or_a_hash_of_type_and_settings() {
        let parse = |t: &str| -> ActionConfig { toml::from_str(t).unwrap() };
        let a = parse("type = \"webhook\"\nurl = \"http://h/a\"\ntimeout_ms = 5\n");
        let same = parse("timeout_ms = 5\nurl = \"http://h/a\"\ntype = \"webhook\"\n");
        let other = parse("type = \"webhook\"\nurl = \"http://h/b\"\ntimeout_ms = 5\n");
        let named = parse("type = \"webhook\"\nname = \"hook\"\nurl = \"http://h/b\"\n");
        let id = a.identity();
        assert!(
            id.starts_with("webhook-") && id.len() == "webhook-".len() + 16,
            "{id}"
        );
        assert_eq!(same.identity(), id, "key order does not matter");
        assert_ne!(other.identity(), id, "settings do");
        assert_eq!(named.identity(), "hook");
        assert_eq!(named.name(), Some("hook"));
    }
}
