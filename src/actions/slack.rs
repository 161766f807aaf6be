//! `slack`: post a message to a Slack incoming webhook (`{"text": "..."}`).
//!
//! The webhook URL is itself a secret, so it normally comes from `url_env`; a plain `url` is
//! accepted for local receivers and tests. Slack answers 200 `ok`, 4xx for a bad payload or
//! a revoked hook (permanent), 429 with `Retry-After` when rate limiting (retried).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::template::Template;
use super::{ActionConfigError, ActionDeps, ActionError};
use crate::queue::Job;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    /// Stable identity of this action within its observer (letters, digits, `-`, `_`, `.`):
    /// queued jobs name the action they were made for, so reordering the actions or editing
    /// this one keeps them running it. Default: the type and a hash of the settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Environment variable holding the incoming-webhook URL (preferred: it is a secret).
    #[serde(default)]
    pub url_env: Option<String>,
    /// The incoming-webhook URL in clear (local receivers, tests).
    #[serde(default)]
    pub url: Option<String>,
    /// Message template (Slack mrkdwn).
    pub text: String,
    #[serde(default = "super::webhook::default_timeout_ms")]
    pub timeout_ms: u64,
}

pub struct SlackAction {
    http: reqwest::Client,
    url: reqwest::Url,
    text: Template,
    timeout: Duration,
}

impl SlackAction {
    pub fn build(
        prefix: &str,
        c: &SlackConfig,
        deps: &ActionDeps,
    ) -> Result<Self, ActionConfigError> {
        let url = match (&c.url, &c.url_env) {
            (Some(u), None) => super::parse_url("url", u)?,
            (None, Some(var)) => {
                let u = deps.secret("url_env", var)?;
                // Do not echo the URL: it is the secret.
                super::parse_url("url_env", &u).map_err(|_| {
                    ActionConfigError::new(
                        "url_env",
                        format!("`{var}` does not hold an http(s) URL"),
                    )
                })?
            }
            _ => {
                return Err(ActionConfigError::new(
                    "url_env",
                    "expected exactly one of `url_env` (recommended) or `url`",
                ));
            }
        };
        Ok(SlackAction {
            http: deps.http.clone(),
            url,
            text: super::compile_template(prefix, "text", &c.text)?,
            timeout: Duration::from_millis(c.timeout_ms.max(1)),
        })
    }

    pub async fn execute(&self, job: &Job) -> Result<(), ActionError> {
        let text = super::render(&self.text, &super::render_context(job), "text")?;
        let req = self
            .http
            .post(self.url.clone())
            .timeout(self.timeout)
            .json(&serde_json::json!({ "text": text }));
        super::send_classified(req, super::SMALL_RESPONSE_BYTES)
            .await
            .map(|_| ())
    }
}
