//! `email`: send a message over SMTP with lettre (rustls with ring; no OpenSSL).
//!
//! `tls = "none" | "starttls" | "tls"` selects plain SMTP, STARTTLS (default, port 587) or
//! implicit TLS (port 465); certificates are checked against the bundled Mozilla roots plus
//! an optional `ca_file` (a private CA). Credentials come from `username_env`/`password_env`. `to`,
//! `subject` and `body` are templates; `to` may render several comma-separated addresses.
//! SMTP 4xx replies, connection errors and timeouts are retried; 5xx replies and addresses
//! that do not parse are permanent.
//!
//! The host is resolved by [`crate::net`] for every message (lettre would ask libc, which
//! cannot resolve in the `FROM scratch` image) and the connection goes to its first address;
//! TLS is still verified against `host`.

use std::time::Duration;

use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::{Deserialize, Serialize};

use super::template::Template;
use super::{ActionConfigError, ActionDeps, ActionError};
use crate::queue::Job;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    None,
    #[default]
    Starttls,
    Tls,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// Stable identity of this action within its observer (letters, digits, `-`, `_`, `.`):
    /// queued jobs name the action they were made for, so reordering the actions or editing
    /// this one keeps them running it. Default: the type and a hash of the settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub host: String,
    /// Default: 25 for `none`, 587 for `starttls`, 465 for `tls`.
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub tls: SmtpTls,
    /// PEM file with extra root certificates to trust (a private CA), on top of the
    /// bundled Mozilla roots.
    #[serde(default)]
    pub ca_file: Option<String>,
    #[serde(default)]
    pub username_env: Option<String>,
    #[serde(default)]
    pub password_env: Option<String>,
    pub from: String,
    /// Template; comma-separated addresses.
    pub to: String,
    pub subject: String,
    pub body: String,
    #[serde(default = "super::webhook::default_timeout_ms")]
    pub timeout_ms: u64,
}

/// Where and how to connect; a transport to the host's current address is made from it
/// for each message (lettre opens a new connection per message anyway: no pool).
struct Relay {
    host: String,
    port: u16,
    /// Carries the TLS parameters made for `host`, so the certificate is checked against
    /// the name, not the address connected to.
    tls: Tls,
    credentials: Option<Credentials>,
    timeout: Duration,
}

impl Relay {
    async fn transport(&self) -> Result<AsyncSmtpTransport<Tokio1Executor>, ActionError> {
        let ip = crate::net::resolve(&self.host)
            .await
            .map_err(|e| ActionError::retryable(format!("SMTP delivery failed: {e}")))?[0];
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(ip.to_string())
            .port(self.port)
            .tls(self.tls.clone())
            .timeout(Some(self.timeout));
        if let Some(credentials) = &self.credentials {
            builder = builder.credentials(credentials.clone());
        }
        Ok(builder.build())
    }
}

pub struct EmailAction {
    relay: Relay,
    from: Mailbox,
    to: Template,
    subject: Template,
    body: Template,
}

impl EmailAction {
    pub fn build(
        prefix: &str,
        c: &EmailConfig,
        deps: &ActionDeps,
    ) -> Result<Self, ActionConfigError> {
        if c.host.is_empty() {
            return Err(ActionConfigError::new("host", "expected an SMTP host name"));
        }
        let from: Mailbox = c.from.parse().map_err(|e| {
            ActionConfigError::new(
                "from",
                format!("`{}` is not an e-mail address: {e}", c.from),
            )
        })?;
        let tls_err = |e: lettre::transport::smtp::Error| {
            ActionConfigError::new("tls", format!("cannot set up TLS for `{}`: {e}", c.host))
        };
        // Make sure rustls has its (ring) provider before lettre builds a TLS config.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let params = match (&c.ca_file, c.tls) {
            (Some(_), SmtpTls::None) => {
                return Err(ActionConfigError::new(
                    "ca_file",
                    "only meaningful with tls = \"starttls\" or \"tls\"",
                ));
            }
            (Some(path), _) => {
                let pem = std::fs::read(path).map_err(|e| {
                    ActionConfigError::new("ca_file", format!("cannot read `{path}`: {e}"))
                })?;
                let cert = Certificate::from_pem(&pem).map_err(|e| {
                    ActionConfigError::new(
                        "ca_file",
                        format!("`{path}` is not a PEM certificate: {e}"),
                    )
                })?;
                Some(
                    TlsParameters::builder(c.host.clone())
                        .add_root_certificate(cert)
                        .build_rustls()
                        .map_err(tls_err)?,
                )
            }
            (None, _) => None,
        };
        let params = match (c.tls, params) {
            (SmtpTls::None, _) => None,
            (_, Some(p)) => Some(p),
            // What lettre's `relay`/`starttls_relay` use: the bundled roots, checked against
            // `host`.
            (_, None) => Some(TlsParameters::new(c.host.clone()).map_err(tls_err)?),
        };
        let (tls, port) = match (c.tls, params) {
            (SmtpTls::Starttls, Some(p)) => (Tls::Required(p), c.port.unwrap_or(587)),
            (SmtpTls::Tls, Some(p)) => (Tls::Wrapper(p), c.port.unwrap_or(465)),
            _ => (Tls::None, c.port.unwrap_or(25)),
        };
        let credentials = match (&c.username_env, &c.password_env) {
            (Some(u), Some(p)) => {
                let user = deps.secret("username_env", u)?;
                let pass = deps.secret("password_env", p)?;
                Some(Credentials::new(user, pass))
            }
            (None, None) => None,
            _ => {
                return Err(ActionConfigError::new(
                    "password_env",
                    "expected both `username_env` and `password_env`, or neither",
                ));
            }
        };
        let relay = Relay {
            host: c.host.clone(),
            port,
            tls,
            credentials,
            timeout: Duration::from_millis(c.timeout_ms.max(1)),
        };
        Ok(EmailAction {
            relay,
            from,
            to: super::compile_template(prefix, "to", &c.to)?,
            subject: super::compile_template(prefix, "subject", &c.subject)?,
            body: super::compile_template(prefix, "body", &c.body)?,
        })
    }

    pub async fn execute(&self, job: &Job) -> Result<(), ActionError> {
        let ctx = super::render_context(job);
        let to = super::render(&self.to, &ctx, "to")?;
        let subject = super::render(&self.subject, &ctx, "subject")?;
        let body = super::render(&self.body, &ctx, "body")?;
        let mut msg = Message::builder()
            .from(self.from.clone())
            .subject(subject.trim())
            .header(ContentType::TEXT_PLAIN);
        let mut any = false;
        for addr in to.split(',').map(str::trim).filter(|a| !a.is_empty()) {
            let mb: Mailbox = addr.parse().map_err(|e| {
                ActionError::permanent(format!("recipient `{addr}` is not an e-mail address: {e}"))
            })?;
            msg = msg.to(mb);
            any = true;
        }
        if !any {
            return Err(ActionError::permanent(
                "the `to` template rendered no recipient",
            ));
        }
        // Lets the receiving side spot replays of the same job.
        msg = msg.message_id(Some(format!("<{}@fraiseql>", job.key.replace(':', "."))));
        let msg = msg
            .body(body)
            .map_err(|e| ActionError::permanent(format!("building the message: {e}")))?;
        self.relay.transport().await?.send(msg).await.map_err(|e| {
            if e.is_permanent() {
                ActionError::permanent(format!("SMTP rejected the message: {e}"))
            } else {
                ActionError::retryable(format!("SMTP delivery failed: {e}"))
            }
        })?;
        Ok(())
    }
}
