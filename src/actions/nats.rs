//! `nats`: publish the event (or a rendered body) to a NATS subject.
//!
//! The subject is a template (`app.{{ event.entity | lower }}.{{ event.op | lower }}`); every
//! message carries the job's idempotency key as `Nats-Msg-Id` (and `Idempotency-Key`), so a
//! JetStream stream on that subject drops a retried or replayed copy within its duplicate
//! window. With `jetstream = true` (the default) the action succeeds only when a stream
//! stored the message (its PubAck); with `false` it is a core NATS publish, flushed to the
//! server, for plain subscribers (at-most-once on their side).
//!
//! Failures: the server unreachable, a timeout, or no stream answering (`no responders`: the
//! stream may be created later) are retried; a rendered subject that is not a valid subject
//! (empty, whitespace, wildcards) is permanent — no retry can fix the template.
//!
//! The connection is made on first use and kept; async-nats reconnects it in the background.
//! It is made by [`crate::nats::connect_client`], as the transport's is, so the URL means the
//! same in both places (credentials in the user info, `tls://`, comma-separated lists).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

use super::template::Template;
use super::{ActionConfigError, ActionDeps, ActionError};
use crate::queue::Job;

fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsActionConfig {
    /// Stable identity of this action within its observer (letters, digits, `-`, `_`, `.`):
    /// queued jobs name the action they were made for, so reordering the actions or editing
    /// this one keeps them running it. Default: the type and a hash of the settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Server URL(s) as `[nats] url` takes them (`nats://host:4222`, `tls://`,
    /// `user:password@` or `token@`); use `url_env` when it carries credentials.
    #[serde(default)]
    pub url: Option<String>,
    /// Environment variable holding the URL.
    #[serde(default)]
    pub url_env: Option<String>,
    /// Subject template.
    pub subject: String,
    /// Payload template; default: the event document as JSON.
    #[serde(default)]
    pub body: Option<String>,
    /// Wait for a JetStream stream to store the message (PubAck).
    #[serde(default = "default_true")]
    pub jetstream: bool,
    #[serde(default = "super::webhook::default_timeout_ms")]
    pub timeout_ms: u64,
}

pub struct NatsAction {
    url: String,
    client: OnceCell<async_nats::Client>,
    subject: Template,
    body: Option<Template>,
    jetstream: bool,
    timeout: Duration,
}

impl NatsAction {
    pub fn build(
        prefix: &str,
        c: &NatsActionConfig,
        deps: &ActionDeps,
    ) -> Result<Self, ActionConfigError> {
        let url = match (&c.url, &c.url_env) {
            (Some(u), None) => u.clone(),
            (None, Some(var)) => deps.secret("url_env", var)?,
            _ => {
                return Err(ActionConfigError::new(
                    "url",
                    "expected exactly one of `url` or `url_env`",
                ));
            }
        };
        // The transport's URL rules (schemes, credentials, TLS); its messages never quote
        // a credential.
        if let Err(e) = crate::nats::check_urls(&url) {
            return Err(ActionConfigError::new(
                if c.url.is_some() { "url" } else { "url_env" },
                format!("expected a nats:// or tls:// URL: {}", e.expected),
            ));
        }
        Ok(NatsAction {
            url,
            client: OnceCell::new(),
            subject: super::compile_template(prefix, "subject", &c.subject)?,
            body: c
                .body
                .as_deref()
                .map(|b| super::compile_template(prefix, "body", b))
                .transpose()?,
            jetstream: c.jetstream,
            timeout: Duration::from_millis(c.timeout_ms.max(1)),
        })
    }

    async fn client(&self) -> Result<&async_nats::Client, ActionError> {
        self.client
            .get_or_try_init(|| async {
                let defaults = crate::nats::NatsConfig::default();
                let settings = crate::nats::ClientSettings {
                    connect_timeout: self.timeout,
                    request_timeout: self.timeout,
                    attempt_timeout: self.timeout,
                    retry_min: Duration::from_millis(defaults.retry_min_delay_ms),
                    retry_max: Duration::from_millis(defaults.retry_max_delay_ms),
                };
                // Every failure is worth a retry of the job: a server that is down or
                // restarting, credentials about to be rotated. The error never quotes them.
                crate::nats::connect_client(&self.url, &settings)
                    .await
                    .map_err(|e| match e {
                        crate::nats::NatsError::Timeout(_) => {
                            ActionError::retryable("cannot connect to NATS: timed out")
                        }
                        crate::nats::NatsError::Connect(_) => ActionError::retryable(e.to_string()),
                        other => ActionError::retryable(format!("cannot connect to NATS: {other}")),
                    })
            })
            .await
    }

    pub async fn execute(&self, job: &Job) -> Result<(), ActionError> {
        let ctx = super::render_context(job);
        let subject = super::render(&self.subject, &ctx, "subject")?;
        if !valid_subject(&subject) {
            return Err(ActionError::permanent(format!(
                "rendered subject {subject:?} is not a valid NATS subject (no spaces, no * or >, no empty tokens)"
            )));
        }
        let payload = match &self.body {
            Some(t) => super::render(t, &ctx, "body")?,
            None => job.payload.to_string(),
        };
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", job.key.as_str());
        headers.insert("Idempotency-Key", job.key.as_str());
        let client = self.client().await?;
        let sent = async {
            if self.jetstream {
                let js = async_nats::jetstream::new(client.clone());
                let ack = js
                    .publish_with_headers(subject, headers, payload.into())
                    .await
                    .map_err(|e| ActionError::retryable(format!("NATS publish failed: {e}")))?;
                ack.await.map(|_| ()).map_err(|e| {
                    ActionError::retryable(format!("JetStream did not store the message: {e}"))
                })
            } else {
                client
                    .publish_with_headers(subject, headers, payload.into())
                    .await
                    .map_err(|e| ActionError::retryable(format!("NATS publish failed: {e}")))?;
                client
                    .flush()
                    .await
                    .map_err(|e| ActionError::retryable(format!("NATS flush failed: {e}")))
            }
        };
        match tokio::time::timeout(self.timeout, sent).await {
            Ok(r) => r,
            Err(_) => Err(ActionError::retryable("NATS publish timed out")),
        }
    }
}

fn valid_subject(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 1024
        && s.split('.').all(|t| {
            !t.is_empty()
                && t != "*"
                && t != ">"
                && !t.chars().any(|c| c.is_whitespace() || c == '*' || c == '>')
        })
}

#[cfg(test)]
mod tests {
    use super::valid_subject;

    #[test]
    fn subjects() {
        assert!(valid_subject("app.post.insert"));
        assert!(valid_subject("a"));
        for bad in ["", "a..b", "a.*", "a.>", "a b", ".a", "a.", "a.b\n"] {
            assert!(!valid_subject(bad), "{bad:?}");
        }
    }
}
