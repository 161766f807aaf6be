//! `[[sinks]]`: one entry per analytics sink (a ClickHouse events table or an
//! Elasticsearch/OpenSearch index), with its batching, retry policy and backend keys. The
//! runner ([`super::run`]) reads the change log for it; this module only says what a valid
//! entry is.
//!
//! ```toml
//! [[sinks]]
//! name = "analytics"
//! type = "clickhouse"
//! url = "http://127.0.0.1:8123"
//! entities = ["Post"]        # empty: every entity
//! max_rows = 5000
//! max_bytes = 4194304
//! max_delay_ms = 1000
//! retry = { initial_delay_ms = 100, max_delay_ms = 30000 }
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::backoff::Backoff;
use crate::setting::Invalid;

/// Which backend a sink writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    Clickhouse,
    Elasticsearch,
}

impl SinkKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SinkKind::Clickhouse => "clickhouse",
            SinkKind::Elasticsearch => "elasticsearch",
        }
    }
}

/// What an Elasticsearch document's `_id` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DocumentId {
    /// The entity id: the index holds each entity's current state (deletes remove it).
    #[default]
    Entity,
    /// The change's id: the index holds every change event (append-only).
    Event,
}

/// How a failed batch (or a failed item) is retried: exponential from `initial_delay_ms`
/// to `max_delay_ms` with equal jitter ([`crate::backoff`]), without an attempt limit — a
/// sink never skips a change it could not deliver; a permanently refused item is
/// dead-lettered instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinkRetry {
    pub initial_delay_ms: u64,
    pub max_delay_ms: u64,
}

impl Default for SinkRetry {
    fn default() -> Self {
        SinkRetry {
            initial_delay_ms: 100,
            max_delay_ms: 30_000,
        }
    }
}

impl SinkRetry {
    pub fn backoff(&self) -> Backoff {
        Backoff::new(
            Duration::from_millis(self.initial_delay_ms),
            Duration::from_millis(self.max_delay_ms),
        )
    }
}

/// One `[[sinks]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// Unique; names the checkpoint (`fraiseql.tb_sink_checkpoint`) and the leader lock, so
    /// renaming a sink starts it again from the beginning of the change log.
    pub name: String,
    #[serde(rename = "type")]
    pub kind: SinkKind,
    /// `http://host:8123` (ClickHouse HTTP interface) or `http://host:9200` (Elasticsearch).
    pub url: String,
    /// Entity names to send (as in `tb_entity_change_log.entity`); empty: every entity.
    #[serde(default)]
    pub entities: Vec<String>,
    /// A batch is sent once it holds this many changes...
    #[serde(default = "default_max_rows")]
    pub max_rows: usize,
    /// ...or this many encoded bytes (a single larger change is sent alone)...
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
    /// ...or when its first change has waited this long.
    #[serde(default = "default_max_delay_ms")]
    pub max_delay_ms: u64,
    #[serde(default)]
    pub retry: SinkRetry,
    /// How often the change log is polled when no notification arrives.
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// How often a standby instance tries to become this sink's leader.
    #[serde(default = "default_takeover_interval_ms")]
    pub takeover_interval_ms: u64,
    /// Time limit of one request to the backend.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// ClickHouse: the events table, `table` or `database.table`.
    #[serde(default = "default_table")]
    pub table: String,
    /// Elasticsearch: the index name pattern; `{entity}` (the entity, lower-cased) and, with
    /// `document_id = "event"`, `{month}` (`YYYY.MM` of the change) are replaced.
    #[serde(default = "default_index")]
    pub index: String,
    /// Elasticsearch: `entity` (current-state index) or `event` (event index).
    #[serde(default)]
    pub document_id: DocumentId,
}

fn default_max_rows() -> usize {
    1000
}
fn default_max_bytes() -> usize {
    4 << 20
}
fn default_max_delay_ms() -> u64 {
    1000
}
fn default_poll_interval_ms() -> u64 {
    1000
}
fn default_takeover_interval_ms() -> u64 {
    1000
}
fn default_request_timeout_ms() -> u64 {
    30_000
}
fn default_table() -> String {
    "fraiseql_events".into()
}
fn default_index() -> String {
    "fraiseql-{entity}".into()
}

/// An identifier ClickHouse and Elasticsearch both accept without quoting: the table name
/// goes into the INSERT statement, so nothing else is allowed there.
fn is_plain_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl SinkConfig {
    /// The ClickHouse `(database, table)`; the database is `None` for the user's default.
    pub fn table_parts(&self) -> (Option<&str>, &str) {
        match self.table.split_once('.') {
            Some((db, t)) => (Some(db), t),
            None => (None, &self.table),
        }
    }

    fn validate(&self, i: usize) -> Result<(), Invalid> {
        let key = |k: &str| format!("sinks[{i}].{k}");
        if self.name.trim().is_empty() {
            return Err(Invalid::new(key("name"), "expected a non-empty sink name"));
        }
        let key = |k: &str| format!("sinks[{i}] (\"{}\").{k}", self.name);
        match reqwest::Url::parse(&self.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            _ => {
                return Err(Invalid::new(
                    key("url"),
                    format!(
                        "expected an http:// or https:// URL, got {:?}",
                        crate::redact::redact_url(&self.url)
                    ),
                ));
            }
        }
        if let Some(e) = self.entities.iter().find(|e| e.trim().is_empty()) {
            return Err(Invalid::new(
                key("entities"),
                format!("expected entity names, got {e:?}"),
            ));
        }
        for (k, v) in [
            ("max_rows", self.max_rows as u64),
            ("max_bytes", self.max_bytes as u64),
            ("max_delay_ms", self.max_delay_ms),
            ("poll_interval_ms", self.poll_interval_ms),
            ("takeover_interval_ms", self.takeover_interval_ms),
            ("request_timeout_ms", self.request_timeout_ms),
            ("retry.initial_delay_ms", self.retry.initial_delay_ms),
        ] {
            if v == 0 {
                return Err(Invalid::new(key(k), "must be at least 1"));
            }
        }
        if self.retry.max_delay_ms < self.retry.initial_delay_ms {
            return Err(Invalid::new(
                key("retry.max_delay_ms"),
                "must be at least retry.initial_delay_ms",
            ));
        }
        match self.kind {
            SinkKind::Clickhouse => {
                let (db, table) = self.table_parts();
                if !db.is_none_or(is_plain_identifier) || !is_plain_identifier(table) {
                    return Err(Invalid::new(
                        key("table"),
                        format!(
                            "expected `table` or `database.table` of letters, digits and `_`, got {:?}",
                            self.table
                        ),
                    ));
                }
            }
            SinkKind::Elasticsearch => {
                let probe = self.index.replace("{entity}", "e").replace("{month}", "m");
                let valid = !probe.is_empty()
                    && !probe.starts_with(['-', '_', '+'])
                    && probe
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c));
                if !valid {
                    return Err(Invalid::new(
                        key("index"),
                        format!(
                            "expected a lower-case index name pattern ({{entity}}, {{month}} \
                             allowed), got {:?}",
                            self.index
                        ),
                    ));
                }
                if self.document_id == DocumentId::Entity && self.index.contains("{month}") {
                    return Err(Invalid::new(
                        key("index"),
                        "{month} needs document_id = \"event\": with entity ids, an entity \
                         changed in two months would have a document in both indexes, and a \
                         delete would only remove the newer one",
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Checks every entry, and that names are unique.
pub fn validate(sinks: &[SinkConfig]) -> Result<(), Invalid> {
    for (i, s) in sinks.iter().enumerate() {
        s.validate(i)?;
        if sinks[..i].iter().any(|o| o.name == s.name) {
            return Err(Invalid::new(
                format!("sinks[{i}].name"),
                format!(
                    "\"{}\" is used by an earlier sink; names must be unique (each has its own \
                     checkpoint)",
                    s.name
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<SinkConfig>, String> {
        #[derive(Deserialize)]
        struct W {
            sinks: Vec<SinkConfig>,
        }
        let w: W = toml::from_str(text).map_err(|e| e.to_string())?;
        validate(&w.sinks).map_err(|e| e.to_string())?;
        Ok(w.sinks)
    }

    #[test]
    fn defaults_and_validation() {
        let s = parse("[[sinks]]\nname = \"a\"\ntype = \"clickhouse\"\nurl = \"http://h:8123\"\n")
            .unwrap();
        assert_eq!(
            (s[0].max_rows, s[0].max_delay_ms, s[0].table.as_str()),
            (1000, 1000, "fraiseql_events")
        );
        let bad = |extra: &str, want: &str| {
            let e = parse(&format!(
                "[[sinks]]\nname = \"a\"\ntype = \"elasticsearch\"\nurl = \"http://h:9200\"\n{extra}"
            ))
            .unwrap_err();
            assert!(e.contains(want), "{extra}: {e}");
        };
        bad("max_rows = 0", "max_rows");
        bad("index = \"Bad{entity}\"", "index");
        bad("index = \"x-{entity}-{month}\"", "document_id");
        bad("url = \"ftp://x\"", "duplicate key");
        bad(
            "retry = { initial_delay_ms = 10, max_delay_ms = 5 }",
            "retry.max_delay_ms",
        );
        let e = parse("[[sinks]]\nname = \"a\"\ntype = \"clickhouse\"\nurl = \"http://h\"\ntable = \"x; DROP\"\n")
            .unwrap_err();
        assert!(e.contains("table"), "{e}");
        let e =
            parse("[[sinks]]\nname = \"a\"\ntype = \"kafka\"\nurl = \"http://h\"\n").unwrap_err();
        assert!(e.contains("kafka"), "{e}");
        let two = "[[sinks]]\nname = \"a\"\ntype = \"clickhouse\"\nurl = \"http://h\"\n";
        let e = parse(&format!("{two}{two}")).unwrap_err();
        assert!(e.contains("unique"), "{e}");
        parse("[[sinks]]\nname = \"e\"\ntype = \"elasticsearch\"\nurl = \"http://h:9200\"\nindex = \"ev-{entity}-{month}\"\ndocument_id = \"event\"\n").unwrap();
    }
}
