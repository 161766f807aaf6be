//! The `[[observers]]` section of the config file, and the observer runtime's settings.
//!
//! These are plain serde structs with `deny_unknown_fields`, deserialized by the main
//! crate's config loader (TOML). [`validate`] checks what can be checked without building
//! anything (names, events, retry policy, the condition's syntax, known entities);
//! [`crate::observers::matcher::CompiledObservers::compile`] calls it and then builds the
//! actions (templates, URLs, secrets), so every error is reported at start with the observer,
//! the key and what was expected, e.g.
//! `observer "notify-new-post": condition: column 17: `=` is not an operator; use `==``.
//!
//! ```toml
//! [observer_runtime]            # optional; every key has a default
//! consumer = "default"
//! concurrency = 8
//!
//! [[observers]]
//! name = "notify-new-post"
//! entity = "Post"
//! events = ["INSERT", "UPDATE"]
//! condition = "after.published == true && changed(published)"
//! retry = { max_attempts = 5, backoff = "exponential", initial_delay_ms = 100, max_delay_ms = 30000, jitter = true }
//! [[observers.actions]]
//! type = "webhook"
//! url = "http://127.0.0.1:9000/hook"
//! secret_env = "HOOK_SECRET"
//! ```

use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::actions::ActionConfig;
use crate::observers::condition::Condition;
use crate::queue::backoff::{Backoff, RetryPolicy};

/// One `[[observers]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObserverConfig {
    /// Unique; part of every idempotency key, so renaming an observer re-delivers.
    pub name: String,
    /// The entity name as written to the change log (`tb_entity_change_log.entity`).
    pub entity: String,
    #[serde(default = "all_ops")]
    pub events: Vec<ChangeOp>,
    #[serde(default)]
    pub condition: Option<String>,
    #[serde(default)]
    pub retry: RetryConfig,
    #[serde(default)]
    pub actions: Vec<ActionConfig>,
}

fn all_ops() -> Vec<ChangeOp> {
    vec![ChangeOp::Insert, ChangeOp::Update, ChangeOp::Delete]
}

/// The kind of a change: the one type from the change log (`op` column, `INSERT`...) through
/// the observers' `events`, the event document (`"op": "INSERT"`) and the NATS subjects
/// (last token `insert`...).
///
/// Two spellings, each kept where it is on the wire: upper case ([`ChangeOp::as_str`],
/// serde, [`ChangeOp::parse`]) in the change log, the config and JSON; lower case
/// ([`ChangeOp::subject_token`], `Display`, `FromStr` in any letter case) in subjects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ChangeOp {
    /// `INSERT` / `insert`
    Insert,
    /// `UPDATE` / `update`
    Update,
    /// `DELETE` / `delete`
    Delete,
}

impl ChangeOp {
    /// The change-log and JSON spelling: `INSERT`, `UPDATE`, `DELETE`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeOp::Insert => "INSERT",
            ChangeOp::Update => "UPDATE",
            ChangeOp::Delete => "DELETE",
        }
    }

    /// Reads the change-log spelling exactly (upper case only).
    pub fn parse(s: &str) -> Option<ChangeOp> {
        match s {
            "INSERT" => Some(ChangeOp::Insert),
            "UPDATE" => Some(ChangeOp::Update),
            "DELETE" => Some(ChangeOp::Delete),
            _ => None,
        }
    }

    /// The NATS subject token: `insert`, `update`, `delete`.
    pub fn subject_token(self) -> &'static str {
        match self {
            ChangeOp::Insert => "insert",
            ChangeOp::Update => "update",
            ChangeOp::Delete => "delete",
        }
    }
}

/// The subject token.
impl fmt::Display for ChangeOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.subject_token())
    }
}

/// A word that is not insert, update or delete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("operation `{0}` is not insert, update or delete")]
pub struct UnknownChangeOp(String);

impl std::str::FromStr for ChangeOp {
    type Err = UnknownChangeOp;

    /// Accepts `insert`, `update`, `delete` in any letter case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "insert" => Ok(ChangeOp::Insert),
            "update" => Ok(ChangeOp::Update),
            "delete" => Ok(ChangeOp::Delete),
            _ => Err(UnknownChangeOp(s.escape_debug().to_string())),
        }
    }
}

/// `retry = { ... }`; every key optional.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Total attempts, the first one included.
    pub max_attempts: u32,
    pub backoff: Backoff,
    pub initial_delay_ms: u64,
    pub max_delay_ms: u64,
    pub jitter: bool,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 5,
            backoff: Backoff::Exponential,
            initial_delay_ms: 1000,
            max_delay_ms: 60_000,
            jitter: true,
        }
    }
}

impl RetryConfig {
    pub fn policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.max_attempts,
            backoff: self.backoff,
            initial_delay: Duration::from_millis(self.initial_delay_ms),
            max_delay: Duration::from_millis(self.max_delay_ms),
            jitter: self.jitter,
        }
    }
}

/// Where a consumer without a checkpoint starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StartFrom {
    /// Only changes committed after the first start (what Hasura event triggers do): turning
    /// observers on for an old database does not replay its history.
    #[default]
    Now,
    /// Every change still in the change log.
    Beginning,
}

/// Runtime settings (suggested table: `[observer_runtime]`); every key has a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ObserverSettings {
    /// Checkpoint name: instances sharing it share one reader (and one checkpoint).
    pub consumer: String,
    /// Concurrent action executions.
    pub concurrency: usize,
    /// Memory queue bound (jobs); the reader waits when it is full.
    pub queue_capacity: usize,
    /// Change-log rows per catch-up query.
    pub batch_size: i64,
    /// Catch-up poll when no notification arrives (notifications are only a wake-up).
    pub poll_interval_ms: u64,
    /// How often the checkpoint is written when it moved.
    pub checkpoint_interval_ms: u64,
    /// How often a standby instance tries to take over the reader lock.
    pub takeover_interval_ms: u64,
    /// A succeeded idempotency key is not executed again within this window (0 = off).
    pub dedup_window_secs: u64,
    /// On shutdown, in-flight jobs get this long to finish before being handed back.
    pub shutdown_grace_ms: u64,
    pub start_from: StartFrom,
    /// A dead letter claimed for retry by an instance that died is reclaimed after this.
    pub dlq_retry_lease_secs: u64,
    /// Run the change-log reader in this process.
    pub run_reader: bool,
    /// Run action workers in this process. With the in-process queue it must be true
    /// while `run_reader` is (`Config::validate` refuses otherwise); with Redis,
    /// `queue.run_workers` decides.
    pub run_workers: bool,
    /// A job whose observer or action this process does not know (another config version
    /// queued it, e.g. during a rolling deploy) is retried with backoff for this long before
    /// it is dead-lettered (0 = at once).
    pub unknown_action_retry_ms: u64,
}

impl Default for ObserverSettings {
    fn default() -> Self {
        ObserverSettings {
            consumer: "default".into(),
            concurrency: 8,
            queue_capacity: 10_000,
            batch_size: 500,
            poll_interval_ms: 1_000,
            checkpoint_interval_ms: 100,
            takeover_interval_ms: 1_000,
            dedup_window_secs: 86_400,
            shutdown_grace_ms: 10_000,
            start_from: StartFrom::Now,
            dlq_retry_lease_secs: 600,
            run_reader: true,
            run_workers: true,
            unknown_action_retry_ms: 600_000,
        }
    }
}

/// One problem found in the observer config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Observer name (or `#index` when the name itself is missing).
    pub observer: String,
    /// The key, e.g. `condition`, `retry.max_attempts`, `actions[0].url`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "observer \"{}\": {}: {}",
            self.observer, self.key, self.message
        )
    }
}

/// Every problem found, so the user fixes them in one round.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<ConfigProblem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid observer configuration:")?;
        for p in &self.problems {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

/// Collects problems while validating.
#[derive(Default)]
pub(crate) struct Problems(pub Vec<ConfigProblem>);

impl Problems {
    pub fn push(&mut self, observer: &str, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigProblem {
            observer: observer.to_owned(),
            key: key.into(),
            message: message.into(),
        });
    }

    pub fn into_result(self) -> Result<(), ConfigError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { problems: self.0 })
        }
    }
}

/// The display name used in errors for observer `i`.
pub(crate) fn label(i: usize, o: &ObserverConfig) -> String {
    if o.name.is_empty() {
        format!("#{}", i + 1)
    } else {
        o.name.clone()
    }
}

/// Structural checks. `known_entities`, when given (from the compiled schema), turns an
/// unknown `entity` into an error that lists the known ones.
pub fn validate(
    observers: &[ObserverConfig],
    settings: &ObserverSettings,
    known_entities: Option<&[String]>,
) -> Result<(), ConfigError> {
    let mut p = Problems::default();
    validate_into(&mut p, observers, settings, known_entities);
    p.into_result()
}

pub(crate) fn validate_into(
    p: &mut Problems,
    observers: &[ObserverConfig],
    settings: &ObserverSettings,
    known_entities: Option<&[String]>,
) {
    let rt = "(observer_runtime)";
    if settings.consumer.is_empty() {
        p.push(rt, "consumer", "expected a non-empty consumer name");
    }
    if settings.concurrency == 0 {
        p.push(rt, "concurrency", "expected at least 1");
    }
    if settings.queue_capacity == 0 {
        p.push(rt, "queue_capacity", "expected at least 1");
    }
    if settings.batch_size <= 0 {
        p.push(rt, "batch_size", "expected at least 1");
    }
    if settings.poll_interval_ms == 0 {
        p.push(rt, "poll_interval_ms", "expected at least 1");
    }

    let mut names = HashSet::new();
    for (i, o) in observers.iter().enumerate() {
        let who = label(i, o);
        if o.name.is_empty() {
            p.push(&who, "name", "expected a non-empty name");
        } else if !o
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            // `:` separates the parts of the idempotency key.
            p.push(
                &who,
                "name",
                "expected letters, digits, `-`, `_` or `.` only",
            );
        } else if !names.insert(o.name.as_str()) {
            p.push(&who, "name", "another observer has the same name");
        }
        if o.entity.is_empty() {
            p.push(&who, "entity", "expected an entity name");
        } else if let Some(known) = known_entities
            && !known.iter().any(|e| e == &o.entity)
        {
            p.push(
                &who,
                "entity",
                format!(
                    "unknown entity `{}`; known entities: {}",
                    o.entity,
                    known.join(", ")
                ),
            );
        }
        if o.events.is_empty() {
            p.push(
                &who,
                "events",
                "expected at least one of INSERT, UPDATE, DELETE",
            );
        }
        let mut seen = HashSet::new();
        for e in &o.events {
            if !seen.insert(*e) {
                p.push(&who, "events", format!("{} is listed twice", e.as_str()));
            }
        }
        if let Some(src) = &o.condition
            && let Err(e) = Condition::parse(src)
        {
            p.push(&who, "condition", e.to_string());
        }
        let r = &o.retry;
        if r.max_attempts == 0 {
            p.push(
                &who,
                "retry.max_attempts",
                "expected at least 1 (the first attempt)",
            );
        }
        if r.max_delay_ms < r.initial_delay_ms {
            p.push(
                &who,
                "retry.max_delay_ms",
                format!(
                    "expected at least initial_delay_ms ({}), found {}",
                    r.initial_delay_ms, r.max_delay_ms
                ),
            );
        }
        for (ai, a) in o.actions.iter().enumerate() {
            if let Some(n) = a.name()
                && (n.is_empty()
                    || !n
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
            {
                p.push(
                    &who,
                    format!("actions[{ai}].name"),
                    "expected a non-empty name of letters, digits, `-`, `_` or `.`",
                );
            }
        }
        if o.actions.is_empty() {
            p.push(
                &who,
                "actions",
                "expected at least one [[observers.actions]] entry",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_op_spellings() {
        for (op, upper, lower) in [
            (ChangeOp::Insert, "INSERT", "insert"),
            (ChangeOp::Update, "UPDATE", "update"),
            (ChangeOp::Delete, "DELETE", "delete"),
        ] {
            assert_eq!(op.as_str(), upper);
            assert_eq!(ChangeOp::parse(upper), Some(op));
            assert_eq!(ChangeOp::parse(lower), None, "the change log is upper case");
            assert_eq!(serde_json::to_value(op).unwrap(), upper);
            assert_eq!(
                serde_json::from_value::<ChangeOp>(upper.into()).unwrap(),
                op
            );
            assert_eq!(op.subject_token(), lower);
            assert_eq!(op.to_string(), lower);
            assert_eq!(upper.parse::<ChangeOp>(), Ok(op));
            assert_eq!(lower.parse::<ChangeOp>(), Ok(op));
        }
        assert!(serde_json::from_value::<ChangeOp>("insert".into()).is_err());
        assert!("merge".parse::<ChangeOp>().is_err());
    }

    #[derive(Deserialize)]
    struct File {
        #[serde(default)]
        observers: Vec<ObserverConfig>,
    }

    fn parse(s: &str) -> Result<Vec<ObserverConfig>, String> {
        toml::from_str::<File>(s)
            .map(|f| f.observers)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn parses_the_issue_example() {
        let obs = parse(
            r#"
[[observers]]
name = "notify-new-post"
entity = "Post"
events = ["INSERT", "UPDATE"]
condition = "after.published == true && changed(published)"
retry = { max_attempts = 5, backoff = "exponential", initial_delay_ms = 100, max_delay_ms = 30000, jitter = true }
[[observers.actions]]
type = "webhook"
url = "http://127.0.0.1:9000/hook"
secret_env = "HOOK_SECRET"
[[observers.actions]]
type = "cache"
"#,
        )
        .unwrap();
        assert_eq!(obs.len(), 1);
        assert_eq!(obs[0].events, vec![ChangeOp::Insert, ChangeOp::Update]);
        assert_eq!(obs[0].retry.initial_delay_ms, 100);
        assert_eq!(obs[0].actions.len(), 2);
        assert!(matches!(&obs[0].actions[0], ActionConfig::Webhook(w) if w.method == "POST"));
        validate(&obs, &ObserverSettings::default(), Some(&["Post".into()])).unwrap();
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let e = parse("[[observers]]\nname='a'\nentity='Post'\nconditon='x'\n").unwrap_err();
        assert!(e.contains("unknown field `conditon`"), "{e}");
        let e = parse("[[observers]]\nname='a'\nentity='Post'\n[[observers.actions]]\ntype='webhook'\nurl='http://x'\nsecret='s'\n")
            .unwrap_err();
        assert!(e.contains("unknown field `secret`"), "{e}");
        let e =
            parse("[[observers]]\nname='a'\nentity='Post'\n[[observers.actions]]\ntype='sms'\n")
                .unwrap_err();
        assert!(e.contains("unknown variant `sms`"), "{e}");
        let e = parse("[[observers]]\nname='a'\nentity='Post'\nevents=['UPSERT']\n").unwrap_err();
        assert!(e.contains("UPSERT"), "{e}");
        let e =
            parse("[[observers]]\nname='a'\nentity='Post'\nretry={backof='fixed'}\n").unwrap_err();
        assert!(e.contains("unknown field `backof`"), "{e}");
    }

    #[test]
    fn validation_names_observer_key_and_expectation() {
        let obs = parse(
            r#"
[[observers]]
name = "bad"
entity = "Pots"
events = ["INSERT", "INSERT"]
condition = "after.published = true"
retry = { max_attempts = 0, initial_delay_ms = 500, max_delay_ms = 100 }
[[observers]]
name = "bad"
entity = "Post"
[[observers.actions]]
type = "cache"
"#,
        )
        .unwrap();
        let e = validate(
            &obs,
            &ObserverSettings::default(),
            Some(&["Post".into(), "User".into()]),
        )
        .unwrap_err();
        let text = e.to_string();
        for want in [
            "observer \"bad\": entity: unknown entity `Pots`; known entities: Post, User",
            "observer \"bad\": events: INSERT is listed twice",
            "observer \"bad\": condition: column 17: `=` is not an operator; use `==` to compare",
            "observer \"bad\": retry.max_attempts: expected at least 1",
            "observer \"bad\": retry.max_delay_ms: expected at least initial_delay_ms (500), found 100",
            "observer \"bad\": actions: expected at least one",
            "observer \"bad\": name: another observer has the same name",
        ] {
            assert!(text.contains(want), "missing `{want}` in:\n{text}");
        }
    }
}
