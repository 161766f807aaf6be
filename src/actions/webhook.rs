//! `webhook`: an HTTP request per job, signed with HMAC-SHA256.
//!
//! Request: `method url` with the configured headers, the body template rendered against the
//! event (default: the event document as JSON), and
//! - `Idempotency-Key: <change pk>:<observer>:<action index>` (same on every retry/replay),
//! - `X-Fraiseql-Timestamp: <unix seconds>`,
//! - `X-Fraiseql-Signature: sha256=<hex(HMAC-SHA256(secret, timestamp + "." + body))>` when
//!   `secret_env` is set. Receivers verify by recomputing it and rejecting old timestamps
//!   (replay protection), the scheme Stripe and Slack use.
//!
//! Header names are configurable. Secrets only come from environment variables named by
//! `secret_env` and `headers_env`, and are never logged.

use std::collections::BTreeMap;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::template::Template;
use super::{ActionConfigError, ActionDeps, ActionError};
use crate::queue::Job;

fn default_method() -> String {
    "POST".into()
}
fn default_signature_header() -> String {
    "X-Fraiseql-Signature".into()
}
fn default_timestamp_header() -> String {
    "X-Fraiseql-Timestamp".into()
}
fn default_idempotency_header() -> String {
    "Idempotency-Key".into()
}
fn default_content_type() -> String {
    "application/json".into()
}
pub(crate) fn default_timeout_ms() -> u64 {
    10_000
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Stable identity of this action within its observer (letters, digits, `-`, `_`, `.`):
    /// queued jobs name the action they were made for, so reordering the actions or editing
    /// this one keeps them running it. Default: the type and a hash of the settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub url: String,
    #[serde(default = "default_method")]
    pub method: String,
    /// Static headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Secret headers: header name → environment variable holding the value.
    #[serde(default)]
    pub headers_env: BTreeMap<String, String>,
    /// Body template; default: the event document as JSON.
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default = "default_content_type")]
    pub content_type: String,
    /// Environment variable holding the HMAC secret; no signature header without it.
    #[serde(default)]
    pub secret_env: Option<String>,
    #[serde(default = "default_signature_header")]
    pub signature_header: String,
    #[serde(default = "default_timestamp_header")]
    pub timestamp_header: String,
    #[serde(default = "default_idempotency_header")]
    pub idempotency_header: String,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// PEM file with extra root certificates to trust for an https URL (a private CA).
    #[serde(default)]
    pub ca_file: Option<String>,
}

pub struct WebhookAction {
    http: reqwest::Client,
    method: reqwest::Method,
    url: reqwest::Url,
    headers: HeaderMap,
    body: Option<Template>,
    secret: Option<Vec<u8>>,
    signature_header: HeaderName,
    timestamp_header: HeaderName,
    idempotency_header: HeaderName,
    timeout: Duration,
}

pub(crate) fn header_name(key: &str, name: &str) -> Result<HeaderName, ActionConfigError> {
    HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| ActionConfigError::new(key, format!("`{name}` is not a valid header name")))
}

fn header_value(key: &str, name: &str, value: &str) -> Result<HeaderValue, ActionConfigError> {
    HeaderValue::from_str(value).map_err(|_| {
        ActionConfigError::new(
            key,
            format!("the value of header `{name}` is not a valid header value"),
        )
    })
}

/// `sha256=<hex>` over `timestamp + "." + body`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

impl WebhookAction {
    pub fn build(
        prefix: &str,
        c: &WebhookConfig,
        deps: &ActionDeps,
    ) -> Result<Self, ActionConfigError> {
        let url = super::parse_url("url", &c.url)?;
        let method = reqwest::Method::from_bytes(c.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| {
                ActionConfigError::new("method", format!("`{}` is not an HTTP method", c.method))
            })?;
        let mut headers = HeaderMap::new();
        headers.insert(
            reqwest::header::CONTENT_TYPE,
            header_value("content_type", "content-type", &c.content_type)?,
        );
        for (name, value) in &c.headers {
            headers.insert(
                header_name("headers", name)?,
                header_value("headers", name, value)?,
            );
        }
        for (name, var) in &c.headers_env {
            let value = deps.secret("headers_env", var)?;
            let mut v = header_value("headers_env", name, &value)?;
            v.set_sensitive(true);
            headers.insert(header_name("headers_env", name)?, v);
        }
        let body = match &c.body {
            Some(src) => Some(super::compile_template(prefix, "body", src)?),
            None => None,
        };
        let secret = match &c.secret_env {
            Some(var) => Some(deps.secret("secret_env", var)?.into_bytes()),
            None => None,
        };
        if c.timeout_ms == 0 {
            return Err(ActionConfigError::new(
                "timeout_ms",
                "expected a timeout above 0",
            ));
        }
        let http = match &c.ca_file {
            None => deps.http.clone(),
            // Its own client: the extra trust applies to this receiver only.
            Some(path) => {
                super::http_client_with_roots(super::read_ca_file(path)?).map_err(|e| {
                    ActionConfigError::new("ca_file", format!("cannot build an HTTP client: {e}"))
                })?
            }
        };
        Ok(WebhookAction {
            http,
            method,
            url,
            headers,
            body,
            secret,
            signature_header: header_name("signature_header", &c.signature_header)?,
            timestamp_header: header_name("timestamp_header", &c.timestamp_header)?,
            idempotency_header: header_name("idempotency_header", &c.idempotency_header)?,
            timeout: Duration::from_millis(c.timeout_ms),
        })
    }

    pub async fn execute(&self, job: &Job) -> Result<(), ActionError> {
        let body = match &self.body {
            Some(t) => super::render(t, &super::render_context(job), "body")?,
            None => serde_json::to_string(&job.payload)
                .map_err(|e| ActionError::permanent(format!("serializing event: {e}")))?,
        };
        let timestamp = chrono::Utc::now().timestamp();
        let mut headers = self.headers.clone();
        headers.insert(
            self.idempotency_header.clone(),
            HeaderValue::from_str(&job.key).map_err(|_| {
                ActionError::permanent("idempotency key is not a valid header value")
            })?,
        );
        headers.insert(self.timestamp_header.clone(), HeaderValue::from(timestamp));
        if let Some(secret) = &self.secret {
            let sig = sign(secret, timestamp, body.as_bytes());
            headers.insert(
                self.signature_header.clone(),
                HeaderValue::from_str(&sig).expect("hex is a valid header value"),
            );
        }
        let req = self
            .http
            .request(self.method.clone(), self.url.clone())
            .headers(headers)
            .timeout(self.timeout)
            .body(body);
        super::send_classified(req, super::SMALL_RESPONSE_BYTES)
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_dot_body() {
        // Reference value computed with Python's hmac module.
        assert_eq!(
            sign(b"secret", 1_700_000_000, br#"{"a":1}"#),
            "sha256=49f24e537407743fa4a0242bb63b94b9a47ee99cbbe071ccd8a22550ae411686"
        );
        assert_ne!(sign(b"secret", 1, b"x"), sign(b"secret", 2, b"x"));
        assert_ne!(sign(b"secret", 1, b"x"), sign(b"other", 1, b"x"));
    }
}
