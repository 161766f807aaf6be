//! The one way FraiseQL connects to NATS: a URL list (plus timeouts and reconnect delays) in,
//! a connected `async_nats::Client` out. Used by the JetStream transport
//! ([`super::EventBus::connect`], which retries it while the server is down) and by the
//! `nats` action (which connects once per attempt of a job), so both accept the same URLs.
//!
//! It owns what a URL means here:
//!
//! * schemes: `nats://` and `tls://` (TLS through rustls with ring, which async-nats brings
//!   anyway); any `tls://` entry makes TLS required for the whole list. `ws://`/`wss://` are
//!   rejected: they would need the websockets feature;
//! * credentials in the user info: `user:password@` or a lone `token@`, applied as connect
//!   options because async-nats ignores a URL's user info when it builds its CONNECT;
//! * a comma-separated list is one cluster: the first entry's credentials are used;
//! * host names are resolved by [`crate::net`] at every connect, not by async-nats (which
//!   asks libc, and libc cannot resolve in the `FROM scratch` image): async-nats is given the
//!   addresses, and TLS certificates are verified against the names they were resolved from
//!   ([`crate::net::ResolvedNameVerifier`]; the handshake sends no SNI then). The client's own
//!   reconnects after a lost connection go to the addresses of its connect (and to the servers
//!   the cluster announces); a new connect (the transport's first, every `nats` action
//!   attempt) resolves again.
//!
//! Credentials never reach a log line or an error: URLs are printed through
//! [`crate::redact::redact_userinfo`], and a client error's text is scrubbed of the secrets
//! before it is kept.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_nats::{ConnectErrorKind, ServerAddr};

use super::{NatsConfigError, NatsError, config_err};
use crate::backoff::Backoff;
use crate::redact::redact_userinfo;

/// Credentials found in the URL list, applied as connect options.
#[derive(Clone)]
pub(super) enum UrlAuth {
    None,
    Token(String),
    UserPassword(String, String),
}

impl UrlAuth {
    fn options(&self) -> async_nats::ConnectOptions {
        match self {
            Self::None => async_nats::ConnectOptions::new(),
            Self::Token(token) => async_nats::ConnectOptions::with_token(token.clone()),
            Self::UserPassword(user, pass) => {
                async_nats::ConnectOptions::with_user_and_password(user.clone(), pass.clone())
            }
        }
    }

    /// `text` with every secret of these credentials replaced by `***`.
    fn scrub(&self, text: String) -> String {
        let secret = match self {
            Self::None => return text,
            Self::Token(token) => token,
            Self::UserPassword(_, pass) => pass,
        };
        if secret.is_empty() {
            text
        } else {
            text.replace(secret.as_str(), "***")
        }
    }
}

/// Parses and checks a comma-separated URL list; errors name `nats.url` and never quote a
/// credential.
pub(super) fn parse_urls(urls: &str) -> Result<(Vec<ServerAddr>, UrlAuth), NatsConfigError> {
    let mut addrs = Vec::new();
    let mut auth = UrlAuth::None;
    for part in urls.split(',').map(str::trim) {
        if part.is_empty() {
            return Err(config_err("nats.url", "empty entry in the URL list"));
        }
        let (scheme, _) = part.split_once("://").ok_or_else(|| {
            config_err(
                "nats.url",
                format!(
                    "`{}` has no scheme: use nats:// or tls://",
                    redact_userinfo(part)
                ),
            )
        })?;
        if scheme != "nats" && scheme != "tls" {
            return Err(config_err(
                "nats.url",
                format!("unsupported scheme `{scheme}://`: use nats:// or tls://"),
            ));
        }
        // Never echo the input: it may hold a password.
        let addr: ServerAddr = part.parse().map_err(|_| {
            config_err(
                "nats.url",
                format!("`{}` is not a valid URL", redact_userinfo(part)),
            )
        })?;
        if addr.host().is_empty() {
            return Err(config_err("nats.url", "URL has no host"));
        }
        if let Some(user) = addr.username() {
            let found = match addr.password() {
                Some(pass) => UrlAuth::UserPassword(user.to_string(), pass.to_string()),
                None => UrlAuth::Token(user.to_string()),
            };
            if matches!(auth, UrlAuth::None) {
                auth = found;
            }
        }
        addrs.push(addr);
    }
    Ok((addrs, auth))
}

/// Checks a URL list the way [`connect_client`] will read it, without connecting.
pub fn check_urls(urls: &str) -> Result<(), NatsConfigError> {
    parse_urls(urls).map(|_| ())
}

/// `addrs` with every host name replaced by the addresses [`crate::net`] resolves it to, and
/// the names each address came from (for TLS). A name that does not resolve is left out
/// while another server remains; with none left, the error is the last name's.
async fn resolve_servers(
    addrs: Vec<ServerAddr>,
) -> Result<(Vec<ServerAddr>, HashMap<IpAddr, Vec<String>>), NatsError> {
    let mut out = Vec::with_capacity(addrs.len());
    let mut names: HashMap<IpAddr, Vec<String>> = HashMap::new();
    let mut failed = None;
    for addr in addrs {
        let host = addr.host().to_string();
        if host.parse::<IpAddr>().is_ok() {
            out.push(addr);
            continue;
        }
        let ips = match crate::net::resolve(&host).await {
            Ok(ips) => ips,
            Err(err) => {
                tracing::warn!(error = %err, "NATS server name does not resolve");
                failed = Some(err);
                continue;
            }
        };
        for ip in ips {
            let mut url = addr.clone().into_inner();
            // A URL with a host always takes an IP host; ServerAddr keeps the scheme check.
            if url.set_ip_host(ip).is_err() {
                continue;
            }
            if let Ok(resolved) = ServerAddr::from_url(url) {
                let hosts = names.entry(ip).or_default();
                if !hosts.contains(&host) {
                    hosts.push(host.clone());
                }
                out.push(resolved);
            }
        }
    }
    if out.is_empty() {
        let message = failed.map_or_else(|| "no server address".to_string(), |e| e.to_string());
        return Err(NatsError::Connect(message));
    }
    Ok((out, names))
}

/// The platform's root certificates, as async-nats would load them, read once per process.
fn native_roots() -> Arc<rustls::RootCertStore> {
    static ROOTS: OnceLock<Arc<rustls::RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            Arc::new(roots)
        })
        .clone()
}

/// Timeouts and reconnect delays of one client.
#[derive(Debug, Clone, Copy)]
pub struct ClientSettings {
    /// One TCP/TLS connection attempt (async-nats's connection timeout).
    pub connect_timeout: Duration,
    /// Requests made through the client (async-nats's request timeout).
    pub request_timeout: Duration,
    /// Bound of the whole first connect (TCP, TLS, INFO, CONNECT, PONG).
    pub attempt_timeout: Duration,
    /// Delays between the background reconnects after a connection was lost: exponential
    /// from `retry_min` to `retry_max` with equal jitter, for ever.
    pub retry_min: Duration,
    /// See `retry_min`.
    pub retry_max: Duration,
}

/// Makes one connection attempt to the servers of `urls` and returns the client, which
/// then reconnects by itself whenever the connection drops.
///
/// Errors: [`NatsError::Config`] for a URL list that does not parse (or that the server's
/// INFO makes unparsable), [`NatsError::Auth`] when the server refuses the credentials, and
/// the transient [`NatsError::Connect`] / [`NatsError::Timeout`] otherwise. None quotes a
/// credential.
pub async fn connect_client(
    urls: &str,
    settings: &ClientSettings,
) -> Result<async_nats::Client, NatsError> {
    let (addrs, auth) = parse_urls(urls)?;
    let reconnect = Backoff::new(settings.retry_min, settings.retry_max);
    let mut options = auth
        .options()
        .name("fraiseql")
        .connection_timeout(settings.connect_timeout)
        .request_timeout(Some(settings.request_timeout))
        .max_reconnects(None)
        .reconnect_delay_callback(move |attempts| {
            reconnect.delay(u32::try_from(attempts).unwrap_or(u32::MAX))
        })
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Connected => tracing::info!("NATS connected"),
                async_nats::Event::Disconnected => tracing::warn!("NATS disconnected"),
                other => tracing::info!(event = %other, "NATS event"),
            }
        });
    if addrs.iter().any(ServerAddr::tls_required) {
        options = options.require_tls(true);
    }
    let connect = async move {
        let (addrs, names) = resolve_servers(addrs).await?;
        if !names.is_empty()
            && let Some(tls) =
                crate::net::ResolvedNameVerifier::client_config(native_roots(), names)
        {
            options = options.tls_client_config(tls);
        }
        Ok::<_, NatsError>(options.connect(addrs).await)
    };
    match tokio::time::timeout(settings.attempt_timeout, connect).await {
        Ok(Err(err)) => Err(err),
        Ok(Ok(Ok(client))) => Ok(client),
        Ok(Ok(Err(err))) => {
            let message = auth.scrub(err.to_string());
            Err(match err.kind() {
                ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication => {
                    NatsError::Auth(message)
                }
                ConnectErrorKind::ServerParse => config_err("nats.url", message).into(),
                _ => NatsError::Connect(message),
            })
        }
        Err(_) => Err(NatsError::Timeout("connect")),
    }
}
