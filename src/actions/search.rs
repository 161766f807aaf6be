//! `search`: keep an Elasticsearch/OpenSearch index in step with an entity, through `_bulk`.
//!
//! Each job becomes one bulk item: `index` with document id = the change's entity id and the
//! `after` image as the document, or `delete` on DELETE (a 404 for a missing document counts
//! as done). Every item carries the change-log position as its external version
//! (`version_type=external`), and a 409 version conflict counts as done: a newer change of
//! the document is already indexed. Jobs are batched: workers hand their item to a per-action batcher task over a
//! bounded channel and wait for that item's own result; the batcher sends one `_bulk`
//! request per `batch_size` items or `flush_interval_ms`, whichever comes first, and maps
//! the per-item statuses back (429/5xx retryable, other 4xx permanent). So one bad document
//! fails alone, and a down cluster fails (and retries) every item of the batch.
//!
//! Batches are as large as the number of jobs in flight at once, i.e. at most the worker
//! concurrency.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{OnceCell, mpsc, oneshot};

use super::{ActionConfigError, ActionDeps, ActionError};
use crate::queue::Job;

const MAX_BATCH_SIZE: usize = 10_000;

fn default_batch_size() -> usize {
    100
}
fn default_flush_interval_ms() -> u64 {
    20
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchConfig {
    /// Stable identity of this action within its observer (letters, digits, `-`, `_`, `.`):
    /// queued jobs name the action they were made for, so reordering the actions or editing
    /// this one keeps them running it. Default: the type and a hash of the settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Base URL of the cluster, e.g. `http://127.0.0.1:9200`; `/_bulk` is appended.
    pub url: String,
    pub index: String,
    #[serde(default)]
    pub username_env: Option<String>,
    #[serde(default)]
    pub password_env: Option<String>,
    /// Sent as `Authorization: ApiKey <value>`.
    #[serde(default)]
    pub api_key_env: Option<String>,
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    #[serde(default = "default_flush_interval_ms")]
    pub flush_interval_ms: u64,
    #[serde(default = "super::webhook::default_timeout_ms")]
    pub timeout_ms: u64,
}

enum Auth {
    Basic(String, String),
    ApiKey(String),
}

struct Inner {
    http: reqwest::Client,
    bulk_url: reqwest::Url,
    auth: Option<Auth>,
    batch_size: usize,
    flush_interval: Duration,
    timeout: Duration,
}

struct Item {
    lines: String,
    delete: bool,
    reply: oneshot::Sender<Result<(), ActionError>>,
}

pub struct SearchAction {
    inner: Arc<Inner>,
    index: String,
    /// Started on first use so that building actions needs no runtime (`fraiseql check`).
    batcher: OnceCell<mpsc::Sender<Item>>,
}

impl SearchAction {
    pub fn build(
        _prefix: &str,
        c: &SearchConfig,
        deps: &ActionDeps,
    ) -> Result<Self, ActionConfigError> {
        let base = super::parse_url("url", &c.url)?;
        // Keep a base path such as `/es` intact (Url::join would replace its last segment).
        let mut bulk_url = base.clone();
        bulk_url.set_path(&format!("{}/_bulk", base.path().trim_end_matches('/')));
        if c.index.is_empty()
            || c.index.starts_with(['_', '-', '+'])
            || c.index
                .chars()
                .any(|ch| ch.is_ascii_uppercase() || "\\/*?\"<>| ,#:".contains(ch))
        {
            return Err(ActionConfigError::new(
                "index",
                format!(
                    "`{}` is not a valid index name (lowercase, no spaces or \\/*?\"<>|,#:)",
                    c.index
                ),
            ));
        }
        // The upper bound keeps a `_bulk` answer (a few hundred bytes an item) well inside
        // what `flush` reads of it.
        if !(1..=MAX_BATCH_SIZE).contains(&c.batch_size) {
            return Err(ActionConfigError::new(
                "batch_size",
                format!("expected 1 to {MAX_BATCH_SIZE}"),
            ));
        }
        let auth = match (&c.api_key_env, &c.username_env, &c.password_env) {
            (Some(k), None, None) => Some(Auth::ApiKey(deps.secret("api_key_env", k)?)),
            (None, Some(u), Some(p)) => Some(Auth::Basic(
                deps.secret("username_env", u)?,
                deps.secret("password_env", p)?,
            )),
            (None, None, None) => None,
            _ => {
                return Err(ActionConfigError::new(
                    "api_key_env",
                    "expected `api_key_env`, or `username_env` with `password_env`, or none",
                ));
            }
        };
        Ok(SearchAction {
            inner: Arc::new(Inner {
                http: deps.http.clone(),
                bulk_url,
                auth,
                batch_size: c.batch_size,
                flush_interval: Duration::from_millis(c.flush_interval_ms),
                timeout: Duration::from_millis(c.timeout_ms.max(1)),
            }),
            index: c.index.clone(),
            batcher: OnceCell::new(),
        })
    }

    /// The NDJSON lines for one job (exposed for tests).
    pub fn bulk_lines(&self, job: &Job) -> Result<(String, bool), ActionError> {
        let ev = &job.payload["event"];
        let id = match &ev["entity_id"] {
            serde_json::Value::String(s) => s.clone(),
            _ => match job.payload["after"]["id"]
                .as_str()
                .or_else(|| job.payload["before"]["id"].as_str())
            {
                Some(s) => s.to_owned(),
                None => {
                    return Err(ActionError::permanent(
                        "the change has no entity id to use as document id",
                    ));
                }
            },
        };
        let delete = ev["op"] == "DELETE";
        // The change-log position as an external version: the changes of one row are
        // logged in commit order, so a retried or reordered write of an older change is
        // refused by the cluster (409) instead of overwriting a newer document, and a late
        // index cannot resurrect a delete while its tombstone lives (`index.gc_deletes`).
        let meta = serde_json::json!({
            "_index": self.index,
            "_id": id,
            "version": job.change_pk,
            "version_type": "external",
        });
        let mut lines = String::new();
        if delete {
            lines.push_str(&serde_json::json!({ "delete": meta }).to_string());
            lines.push('\n');
        } else {
            lines.push_str(&serde_json::json!({ "index": meta }).to_string());
            lines.push('\n');
            lines.push_str(&job.payload["after"].to_string());
            lines.push('\n');
        }
        Ok((lines, delete))
    }

    pub async fn execute(&self, job: &Job) -> Result<(), ActionError> {
        let (lines, delete) = self.bulk_lines(job)?;
        let tx = self
            .batcher
            .get_or_init(|| async {
                let (tx, rx) = mpsc::channel(self.inner.batch_size * 4);
                tokio::spawn(run_batcher(self.inner.clone(), rx));
                tx
            })
            .await;
        let (reply, rx) = oneshot::channel();
        tx.send(Item {
            lines,
            delete,
            reply,
        })
        .await
        .map_err(|_| ActionError::retryable("search batcher stopped"))?;
        rx.await
            .unwrap_or_else(|_| Err(ActionError::retryable("search batcher dropped the item")))
    }
}

async fn run_batcher(inner: Arc<Inner>, mut rx: mpsc::Receiver<Item>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + inner.flush_interval;
        while batch.len() < inner.batch_size {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(item)) => batch.push(item),
                Ok(None) | Err(_) => break,
            }
        }
        let results = flush(&inner, &batch).await;
        for (item, result) in batch.into_iter().zip(results) {
            let _ = item.reply.send(result);
        }
    }
}

/// The most of a `_bulk` answer that is read: a few hundred bytes per item, for batches far
/// larger than any this action sends.
const MAX_BULK_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// Sends one `_bulk` request; returns one result per item, in order.
async fn flush(inner: &Inner, batch: &[Item]) -> Vec<Result<(), ActionError>> {
    let all = |e: ActionError| batch.iter().map(|_| Err(e.clone())).collect();
    let body: String = batch.iter().map(|i| i.lines.as_str()).collect();
    let mut req = inner
        .http
        .post(inner.bulk_url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/x-ndjson")
        .timeout(inner.timeout)
        .body(body);
    req = match &inner.auth {
        Some(Auth::Basic(u, p)) => req.basic_auth(u, Some(p)),
        Some(Auth::ApiKey(k)) => req.header(reqwest::header::AUTHORIZATION, format!("ApiKey {k}")),
        None => req,
    };
    let text = match super::send_classified(req, MAX_BULK_RESPONSE_BYTES).await {
        Ok(t) if t.len() >= MAX_BULK_RESPONSE_BYTES => {
            return all(ActionError::retryable(format!(
                "_bulk response larger than {MAX_BULK_RESPONSE_BYTES} bytes"
            )));
        }
        Ok(t) => t,
        Err(e) => return all(e),
    };
    let resp: serde_json::Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            return all(ActionError::retryable(format!(
                "unreadable _bulk response: {e}"
            )));
        }
    };
    let items = resp["items"].as_array().cloned().unwrap_or_default();
    if items.len() != batch.len() {
        return all(ActionError::retryable(format!(
            "_bulk answered {} items for {} sent",
            items.len(),
            batch.len()
        )));
    }
    batch
        .iter()
        .zip(items)
        .map(|(item, result)| {
            let r = result
                .as_object()
                .and_then(|o| o.values().next())
                .cloned()
                .unwrap_or_default();
            let status = r["status"].as_u64().unwrap_or(0);
            // 409: the cluster holds this version or a newer one, so this write is applied.
            if (200..300).contains(&status) || status == 409 || (item.delete && status == 404) {
                return Ok(());
            }
            let message = format!("_bulk item failed with status {status}: {}", r["error"]);
            if status == 429 || status >= 500 || status == 0 {
                Err(ActionError::retryable(message))
            } else {
                Err(ActionError::permanent(message))
            }
        })
        .collect()
}
