//! NATS JetStream event transport for change events.
//!
//! This module owns everything FraiseQL does with NATS: the `[nats]` configuration, the
//! JetStream stream that carries change events (`<subject_prefix>.<entity>.<op>`), publishing
//! those events with a message id so that JetStream drops duplicates, and the durable pull
//! consumer that observers use instead of polling the PostgreSQL change log.
//!
//! Why it is one module: the delivery guarantee ("no change event is lost across a NATS
//! restart") is a property of several pieces working together, and keeping them together
//! keeps that reasoning in one place:
//!
//! * the change-log reader advances its checkpoint only after [`EventBus::publish_batch`]
//!   returned `Ok`, which it does only once JetStream acknowledged (stored) every event;
//! * re-publishing after a timeout or a restart is harmless because every event carries a
//!   `Nats-Msg-Id` and the stream has a duplicate window;
//! * consumers ack explicitly and wait for the server to confirm the ack, so an unconfirmed
//!   ack only ever leads to a redelivery (at-least-once), never to a loss.
//!
//! Every network operation is bounded by a timeout, so callers see an error (classified by
//! [`NatsError::is_transient`]) instead of hanging while the server is unreachable; the
//! async-nats client keeps reconnecting in the background meanwhile.
//!
//! The pull consumer is async-nats's (`Consumer<pull::Config>`: create-or-update, `fetch()`
//! batches, `+TERM` through `ack_with`); only the acks are sent by hand, as requests whose
//! answer is checked, because async-nats 0.51's `double_ack` takes the `503 no responders`
//! status of an ack that reached no consumer for a confirmation (test
//! `nats::an_ack_that_reaches_no_consumer_is_an_error`: `double_ack` returned `Ok(())`, ours
//! `NoResponders`). Switching from the hand-written `CONSUMER.MSG.NEXT` protocol cost no
//! speed: `nats::fetch_and_ack_rate` (20,000 events, batches of 256, confirmed acks) ran at
//! 37-44 k/s before and 30-72 k/s after on the shared 2-core machine (load 5-7), the same
//! within its noise.
//!
//! The connection itself is made by [`connect_client`], shared with the `nats` action.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, ReplayPolicy, pull};
use async_nats::jetstream::context::{PublishErrorKind, RequestErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::response::Response;
use async_nats::jetstream::stream::{
    ConsumerErrorKind, DiscardPolicy, RetentionPolicy, StorageType,
};
use async_nats::jetstream::{self, ErrorCode};
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;

mod connect;

pub use connect::{ClientSettings, check_urls, connect_client};

/// Maximum number of publishes awaiting their PubAck at once in one
/// [`EventBus::publish_batch`] call. 1024 measured faster than 4096 on a local server.
const PUBLISH_WINDOW: usize = 1024;
/// In-flight PubAcks allowed on the whole connection: room for several concurrent batches.
const MAX_ACK_INFLIGHT: usize = PUBLISH_WINDOW * 8;
/// How long [`EventConsumer::fetch`] waits past its pull request's expiry for the server's
/// end-of-request status before it gives up on the request.
const FETCH_GRACE: Duration = Duration::from_millis(1500);

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

/// The `[nats]` configuration section.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// Server URL(s), comma separated: `nats://host:4222` or `tls://host:4222`, optionally with
    /// `user:password@` or `token@`. Empty (the default) disables NATS.
    pub url: String,
    /// JetStream stream name.
    pub stream: String,
    /// Subject prefix; events go to `<prefix>.<entity>.<op>`.
    pub subject_prefix: String,
    /// Observers consume change events from JetStream instead of the PostgreSQL change log.
    pub consume: bool,
    /// Durable pull consumer name, shared by every instance (each gets different messages).
    pub durable: String,
    /// JetStream duplicate window: re-publishing the same message id within it is dropped.
    pub duplicate_window_secs: u64,
    /// Stream retention (max age of a message).
    pub max_age_secs: u64,
    /// How long a delivered, unacknowledged message waits before it is redelivered.
    pub ack_wait_ms: u64,
    /// Maximum deliveries of one message; `-1` (the default) is unlimited. `0` is rejected
    /// (it would silently mean "unlimited" to the server).
    pub max_deliver: i64,
    /// Default batch size for consumers' fetches.
    pub fetch_batch: usize,
    /// Minimum retry delay (reconnects, re-publishes).
    pub retry_min_delay_ms: u64,
    /// Maximum retry delay.
    pub retry_max_delay_ms: u64,
    /// Timeout of one TCP/TLS connection attempt.
    pub connect_timeout_ms: u64,
    /// Timeout of one request to the server (JetStream API, PubAck, confirmed ack).
    pub request_timeout_ms: u64,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            stream: "FRAISEQL_CHANGES".to_string(),
            subject_prefix: "fraiseql.changes".to_string(),
            consume: false,
            durable: "fraiseql-observers".to_string(),
            duplicate_window_secs: 120,
            max_age_secs: 7 * 24 * 3600,
            ack_wait_ms: 60_000,
            max_deliver: -1,
            fetch_batch: 256,
            retry_min_delay_ms: 50,
            retry_max_delay_ms: 5_000,
            connect_timeout_ms: 3_000,
            request_timeout_ms: 5_000,
        }
    }
}

impl fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsConfig")
            .field("url", &redact_url(&self.url))
            .field("stream", &self.stream)
            .field("subject_prefix", &self.subject_prefix)
            .field("consume", &self.consume)
            .field("durable", &self.durable)
            .field("duplicate_window_secs", &self.duplicate_window_secs)
            .field("max_age_secs", &self.max_age_secs)
            .field("ack_wait_ms", &self.ack_wait_ms)
            .field("max_deliver", &self.max_deliver)
            .field("fetch_batch", &self.fetch_batch)
            .field("retry_min_delay_ms", &self.retry_min_delay_ms)
            .field("retry_max_delay_ms", &self.retry_max_delay_ms)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("request_timeout_ms", &self.request_timeout_ms)
            .finish()
    }
}

/// A configuration value that is not acceptable, naming its key (`nats.<field>`): the
/// one error shape of every section.
pub use crate::setting::Invalid as NatsConfigError;

fn config_err(key: &str, message: impl Into<String>) -> NatsConfigError {
    NatsConfigError::new(key, message)
}

impl NatsConfig {
    /// Whether NATS is configured at all (`url` is not empty).
    pub fn enabled(&self) -> bool {
        !self.url.trim().is_empty()
    }

    /// The URL(s) with any password or token replaced, safe to print.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }

    /// Checks every value. An empty `url` is valid (NATS disabled); the other values are
    /// checked regardless so that a typo is reported before NATS is switched on.
    ///
    /// The URL list is checked by [`check_urls`] (schemes, credentials, TLS: see
    /// [`connect`](self::connect_client)).
    pub fn validate(&self) -> Result<(), NatsConfigError> {
        if self.enabled() {
            check_urls(&self.url)?;
        }
        validate_stream_name(&self.stream).map_err(|m| config_err("nats.stream", m))?;
        validate_subject_prefix(&self.subject_prefix)
            .map_err(|m| config_err("nats.subject_prefix", m))?;
        validate_stream_name(&self.durable).map_err(|m| config_err("nats.durable", m))?;
        let positive: [(&'static str, u64); 7] = [
            ("nats.duplicate_window_secs", self.duplicate_window_secs),
            ("nats.max_age_secs", self.max_age_secs),
            ("nats.ack_wait_ms", self.ack_wait_ms),
            ("nats.retry_min_delay_ms", self.retry_min_delay_ms),
            ("nats.retry_max_delay_ms", self.retry_max_delay_ms),
            ("nats.connect_timeout_ms", self.connect_timeout_ms),
            ("nats.request_timeout_ms", self.request_timeout_ms),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(config_err(key, "must be greater than 0"));
            }
        }
        if self.duplicate_window_secs > self.max_age_secs {
            return Err(config_err(
                "nats.duplicate_window_secs",
                "must not exceed nats.max_age_secs",
            ));
        }
        if self.retry_min_delay_ms > self.retry_max_delay_ms {
            return Err(config_err(
                "nats.retry_min_delay_ms",
                "must not exceed nats.retry_max_delay_ms",
            ));
        }
        if self.max_deliver == 0 || self.max_deliver < -1 {
            return Err(config_err(
                "nats.max_deliver",
                "must be -1 (unlimited) or at least 1",
            ));
        }
        if self.fetch_batch == 0 || self.fetch_batch > 10_000 {
            return Err(config_err(
                "nats.fetch_batch",
                "must be between 1 and 10000",
            ));
        }
        Ok(())
    }

    /// Reconnects and re-publishes: exponential with equal jitter, so that many instances
    /// restarting together do not retry in lockstep.
    fn retry(&self) -> Backoff {
        Backoff::new(
            Duration::from_millis(self.retry_min_delay_ms),
            Duration::from_millis(self.retry_max_delay_ms),
        )
    }
}

use crate::redact::redact_userinfo as redact_url;

/// Stream and consumer names: no whitespace, `.`, `*`, `>`, path separators or control
/// characters, at most 255 bytes (what the server accepts and what can be a file name).
fn validate_stream_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".to_string());
    }
    if name.len() > 255 {
        return Err("must be at most 255 bytes".to_string());
    }
    if let Some(c) = name
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || matches!(c, '.' | '*' | '>' | '/' | '\\'))
    {
        return Err(format!("must not contain {c:?}"));
    }
    Ok(())
}

/// A literal subject token: printable ASCII without whitespace, `.`, `*` or `>`.
fn valid_token(token: &str) -> bool {
    !token.is_empty()
        && token
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'.' | b'*' | b'>'))
}

fn validate_subject_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() {
        return Err("must not be empty".to_string());
    }
    if prefix.starts_with('$') {
        return Err("must not start with `$` (reserved for the system)".to_string());
    }
    for token in prefix.split('.') {
        if !valid_token(token) {
            return Err(format!(
                "`{prefix}` is not a literal subject: tokens separated by single dots, \
                 no spaces or wildcards (`*`, `>`)"
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Subjects
// ---------------------------------------------------------------------------------------------

/// The kind of change an event describes, the observers' own (one type from the change log
/// to the subject): its last subject token is [`ChangeOp::subject_token`] (`insert`,
/// `update`, `delete`), which is also its `Display`; parsing a token accepts any letter case.
pub use crate::observers::config::ChangeOp;

/// Entity names that are identifiers (ASCII letters, digits, `_` and `-`, at most 128 bytes)
/// are their own subject token.
fn is_identifier(entity: &str) -> bool {
    !entity.is_empty()
        && entity.len() <= 128
        && entity
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Longest entity name that can be encoded into a token (hex doubles it; the subject must
/// stay well inside the server's control-line limit).
const MAX_ENCODED_ENTITY: usize = 1024;

/// The subject token of an entity: the name itself when it is an identifier, else `~`
/// followed by the name's UTF-8 bytes in lower-case hex. `~` never starts an identifier, so
/// two distinct names never share a token, and every change can be published (a change
/// that could not be would hold the reader's checkpoint back forever or be lost).
fn entity_token(entity: &str) -> Result<String, NatsError> {
    if is_identifier(entity) {
        return Ok(entity.to_owned());
    }
    if entity.is_empty() || entity.len() > MAX_ENCODED_ENTITY {
        return Err(NatsError::InvalidSubject(format!(
            "entity name of {} bytes (1 to {MAX_ENCODED_ENTITY} are published)",
            entity.len()
        )));
    }
    let mut token = String::with_capacity(1 + 2 * entity.len());
    token.push('~');
    for b in entity.bytes() {
        token.push_str(&format!("{b:02x}"));
    }
    Ok(token)
}

/// The entity a subject token names (see [`entity_token`]).
fn entity_from_token(token: &str) -> Option<String> {
    let Some(hex) = token.strip_prefix('~') else {
        return is_identifier(token).then(|| token.to_owned());
    };
    if hex.is_empty() || hex.len() % 2 != 0 || hex.len() > 2 * MAX_ENCODED_ENTITY {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok().filter(|e| !is_identifier(e))
}

/// `<prefix>.<entity token>.<op>`, each part validated.
pub fn subject(prefix: &str, entity: &str, op: ChangeOp) -> Result<String, NatsError> {
    validate_subject_prefix(prefix).map_err(NatsError::InvalidSubject)?;
    Ok(format!(
        "{prefix}.{}.{}",
        entity_token(entity)?,
        op.subject_token()
    ))
}

/// Splits `<prefix>.<entity token>.<op>` back into entity and op.
fn parse_subject(prefix: &str, subject: &str) -> Option<(String, ChangeOp)> {
    let rest = subject.strip_prefix(prefix)?.strip_prefix('.')?;
    let (token, op) = rest.split_once('.')?;
    Some((entity_from_token(token)?, op.parse().ok()?))
}

fn validate_msg_id(msg_id: &str) -> Result<(), NatsError> {
    if msg_id.is_empty() || msg_id.len() > 1024 || msg_id.bytes().any(|b| b.is_ascii_control()) {
        return Err(NatsError::InvalidMessageId);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Errors of the NATS transport.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    /// The configuration is not valid.
    #[error(transparent)]
    Config(#[from] NatsConfigError),
    /// The shutdown token was cancelled while waiting.
    #[error("cancelled by shutdown")]
    Cancelled,
    /// An entity/op/prefix cannot form a subject.
    #[error("invalid subject: {0}")]
    InvalidSubject(String),
    /// A message id must be 1-1024 bytes without control characters.
    #[error("invalid message id: must be 1-1024 bytes without control characters")]
    InvalidMessageId,
    /// The server refused the credentials.
    #[error("NATS refused the credentials: {0}")]
    Auth(String),
    /// A connection attempt failed (server down, DNS, TLS handshake, ...).
    #[error("cannot connect to NATS: {0}")]
    Connect(String),
    /// The client is not connected (it keeps reconnecting in the background).
    #[error("not connected to NATS")]
    Disconnected,
    /// An operation did not complete in time (typically while disconnected).
    #[error("NATS {0} timed out")]
    Timeout(&'static str),
    /// Nobody answered: the stream or consumer is not (yet) loaded, e.g. while the server
    /// restarts.
    #[error("no responders for {0} (JetStream stream or consumer not available)")]
    NoResponders(&'static str),
    /// The stream exists with other subjects than this configuration needs.
    #[error(
        "JetStream stream `{stream}` exists with subjects {actual:?}, expected {expected:?}; \
         use another `nats.stream` or `nats.subject_prefix`, or fix the stream"
    )]
    StreamMismatch {
        /// Stream name.
        stream: String,
        /// Subjects this configuration needs.
        expected: Vec<String>,
        /// Subjects the stream has.
        actual: Vec<String>,
    },
    /// The consumer exists with a configuration that cannot be used here.
    #[error("JetStream consumer `{consumer}` on stream `{stream}` is unusable: {reason}")]
    ConsumerMismatch {
        /// Stream name.
        stream: String,
        /// Consumer name.
        consumer: String,
        /// What is wrong.
        reason: String,
    },
    /// JetStream answered with an error.
    #[error("JetStream {op} failed: {code} (err_code {err_code}): {description}")]
    Api {
        /// The operation.
        op: &'static str,
        /// HTTP-like status.
        code: usize,
        /// JetStream error code.
        err_code: u64,
        /// Server's description.
        description: String,
    },
    /// A pull request ended with an unexpected status.
    #[error("pull request failed: status {code}: {description}")]
    PullStatus {
        /// Status code.
        code: u16,
        /// Server's description.
        description: String,
    },
    /// Any other client error.
    #[error("NATS {op} failed: {message}")]
    Other {
        /// The operation.
        op: &'static str,
        /// The client's error.
        message: String,
    },
}

impl NatsError {
    /// Whether retrying the same operation later may succeed (server down or restarting,
    /// timeouts, temporary JetStream unavailability).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Connect(_)
            | Self::Disconnected
            | Self::Timeout(_)
            | Self::NoResponders(_)
            | Self::PullStatus { .. } => true,
            Self::Api { code, .. } => *code == 503 || *code == 408,
            Self::Config(_)
            | Self::Cancelled
            | Self::InvalidSubject(_)
            | Self::InvalidMessageId
            | Self::Auth(_)
            | Self::StreamMismatch { .. }
            | Self::ConsumerMismatch { .. }
            | Self::Other { .. } => false,
        }
    }

    fn api(op: &'static str, err: &jetstream::Error) -> Self {
        Self::Api {
            op,
            code: err.code(),
            err_code: err.error_code().0,
            description: err.to_string(),
        }
    }

    fn request(op: &'static str, err: &async_nats::jetstream::context::RequestError) -> Self {
        match err.kind() {
            RequestErrorKind::TimedOut => Self::Timeout(op),
            RequestErrorKind::NoResponders => Self::NoResponders(op),
            RequestErrorKind::InvalidSubject | RequestErrorKind::Other => Self::Other {
                op,
                message: err.to_string(),
            },
        }
    }

    fn client_request(op: &'static str, err: &async_nats::RequestError) -> Self {
        match err.kind() {
            async_nats::RequestErrorKind::TimedOut => Self::Timeout(op),
            async_nats::RequestErrorKind::NoResponders => Self::NoResponders(op),
            _ => Self::Other {
                op,
                message: err.to_string(),
            },
        }
    }

    fn publish(err: &async_nats::jetstream::context::PublishError) -> Self {
        const OP: &str = "publish";
        match err.kind() {
            PublishErrorKind::TimedOut => Self::Timeout(OP),
            // The ack channel was dropped: the connection went away under the request.
            PublishErrorKind::BrokenPipe => Self::Disconnected,
            // No responders on the stream's subjects: JetStream has not loaded the stream
            // (restart in progress) or the stream was deleted.
            PublishErrorKind::StreamNotFound => Self::NoResponders(OP),
            PublishErrorKind::MaxAckPending => Self::Timeout(OP),
            _ => {
                let mut source = std::error::Error::source(err);
                while let Some(s) = source {
                    if let Some(api) = s.downcast_ref::<jetstream::Error>() {
                        return Self::api(OP, api);
                    }
                    source = s.source();
                }
                Self::Other {
                    op: OP,
                    message: err.to_string(),
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Retry delays
// ---------------------------------------------------------------------------------------------

/// Sleeps unless `shutdown` is cancelled first.
async fn sleep_or_cancel(delay: Duration, shutdown: &CancellationToken) -> Result<(), NatsError> {
    tokio::select! {
        () = shutdown.cancelled() => Err(NatsError::Cancelled),
        () = tokio::time::sleep(delay) => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------------
// EventBus: connection, stream, publishing
// ---------------------------------------------------------------------------------------------

/// One event for [`EventBus::publish_batch`].
#[derive(Debug, Clone)]
pub struct OutgoingEvent {
    /// Entity name (subject token).
    pub entity: String,
    /// Operation.
    pub op: ChangeOp,
    /// Unique, stable id of the event (e.g. the change-log row id); JetStream drops a second
    /// publish of the same id within the duplicate window.
    pub msg_id: String,
    /// Event body.
    pub payload: Bytes,
}

/// JetStream's acknowledgement of one publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishOutcome {
    /// The message id was already in the stream; nothing new was stored.
    pub duplicate: bool,
    /// Stream sequence of the message (of the original, for a duplicate).
    pub seq: u64,
}

/// Message counts of the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamState {
    /// Messages stored.
    pub messages: u64,
    /// First sequence.
    pub first_seq: u64,
    /// Last sequence.
    pub last_seq: u64,
}

/// Connection to NATS plus the ensured stream. Cheap to clone.
#[derive(Clone)]
pub struct EventBus {
    inner: Arc<BusInner>,
}

struct BusInner {
    config: NatsConfig,
    client: async_nats::Client,
    js: jetstream::Context,
    request_timeout: Duration,
    retry: Backoff,
    /// Events re-sent by `publish_batch` after a transient failure (a metric).
    republished: AtomicU64,
}

impl fmt::Debug for EventBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventBus")
            .field("config", &self.inner.config)
            .field("state", &self.inner.client.connection_state())
            .finish()
    }
}

impl EventBus {
    /// Connects, waiting and retrying with backoff while NATS is unreachable or JetStream is
    /// not ready, then makes sure the stream exists. Returns `Err` only for a configuration
    /// problem (invalid config, refused credentials, a conflicting existing stream, a
    /// non-transient JetStream error) or when `shutdown` is cancelled.
    pub async fn connect(
        config: &NatsConfig,
        shutdown: &CancellationToken,
    ) -> Result<Self, NatsError> {
        config.validate()?;
        if !config.enabled() {
            return Err(config_err("nats.url", "NATS is disabled (empty url)").into());
        }
        let retry = config.retry();
        let request_timeout = Duration::from_millis(config.request_timeout_ms);
        let connect_timeout = Duration::from_millis(config.connect_timeout_ms);
        let settings = ClientSettings {
            connect_timeout,
            request_timeout,
            attempt_timeout: connect_timeout.saturating_mul(2),
            retry_min: retry.min(),
            retry_max: retry.max(),
        };

        let mut attempt: u32 = 0;
        let client = loop {
            if shutdown.is_cancelled() {
                return Err(NatsError::Cancelled);
            }
            let result = tokio::select! {
                () = shutdown.cancelled() => return Err(NatsError::Cancelled),
                r = connect_client(&config.url, &settings) => r,
            };
            match result {
                Ok(client) => break client,
                Err(err @ (NatsError::Auth(_) | NatsError::Config(_))) => return Err(err),
                Err(err) => {
                    tracing::warn!(
                        url = %redact_url(&config.url), attempt, error = %err,
                        "NATS not reachable, retrying"
                    );
                }
            }
            sleep_or_cancel(retry.delay(attempt), shutdown).await?;
            attempt = attempt.saturating_add(1);
        };

        let js = jetstream::ContextBuilder::new()
            .timeout(request_timeout)
            .max_ack_inflight(MAX_ACK_INFLIGHT)
            .backpressure_on_inflight(true)
            .build(client.clone());
        let bus = Self {
            inner: Arc::new(BusInner {
                config: config.clone(),
                client,
                js,
                request_timeout,
                retry,
                republished: AtomicU64::new(0),
            }),
        };

        let mut attempt: u32 = 0;
        loop {
            match bus.ensure_stream().await {
                Ok(()) => break,
                Err(err) if err.is_transient() => {
                    tracing::warn!(stream = %config.stream, attempt, error = %err, "JetStream not ready, retrying");
                }
                Err(err) => return Err(err),
            }
            sleep_or_cancel(retry.delay(attempt), shutdown).await?;
            attempt = attempt.saturating_add(1);
        }
        Ok(bus)
    }

    /// The configuration this bus was connected with.
    pub fn config(&self) -> &NatsConfig {
        &self.inner.config
    }

    /// Total events re-sent by [`EventBus::publish_batch`] after transient failures since
    /// connect (each one was retried because its PubAck did not arrive).
    pub fn republished_total(&self) -> u64 {
        self.inner.republished.load(Ordering::Relaxed)
    }

    /// Whether the client currently has a connection.
    pub fn is_connected(&self) -> bool {
        self.inner.client.connection_state() == State::Connected
    }

    fn stream_subjects(&self) -> Vec<String> {
        vec![format!("{}.>", self.inner.config.subject_prefix)]
    }

    fn stream_config(&self) -> jetstream::stream::Config {
        let c = &self.inner.config;
        jetstream::stream::Config {
            name: c.stream.clone(),
            subjects: self.stream_subjects(),
            storage: StorageType::File,
            retention: RetentionPolicy::Limits,
            discard: DiscardPolicy::Old,
            duplicate_window: Duration::from_secs(c.duplicate_window_secs),
            max_age: Duration::from_secs(c.max_age_secs),
            ..Default::default()
        }
    }

    /// Creates the stream if missing; fails if it exists with other subjects; updates the
    /// duplicate window and max age if they differ.
    async fn ensure_stream(&self) -> Result<(), NatsError> {
        let js = &self.inner.js;
        let name = &self.inner.config.stream;
        let wanted = self.stream_config();
        let info: Response<jetstream::stream::Info> = js
            .request(format!("STREAM.INFO.{name}"), &())
            .await
            .map_err(|e| NatsError::request("stream info", &e))?;
        let existing = match info {
            Response::Ok(info) => info,
            Response::Err { error } if error.error_code() == ErrorCode::STREAM_NOT_FOUND => {
                let created: Response<jetstream::stream::Info> = js
                    .request(format!("STREAM.CREATE.{name}"), &wanted)
                    .await
                    .map_err(|e| NatsError::request("stream create", &e))?;
                match created {
                    Response::Ok(_) => {
                        tracing::info!(stream = %name, subjects = ?wanted.subjects, "created JetStream stream");
                        return Ok(());
                    }
                    // Created concurrently by another instance: check it like an existing one.
                    Response::Err { error }
                        if error.error_code() == ErrorCode::STREAM_NAME_EXIST =>
                    {
                        return Err(NatsError::Api {
                            op: "stream create (raced, retrying)",
                            code: 503,
                            err_code: error.error_code().0,
                            description: error.to_string(),
                        });
                    }
                    Response::Err { error } => return Err(NatsError::api("stream create", &error)),
                }
            }
            Response::Err { error } => return Err(NatsError::api("stream info", &error)),
        };
        let have: HashSet<&String> = existing.config.subjects.iter().collect();
        let want: HashSet<&String> = wanted.subjects.iter().collect();
        if have != want {
            return Err(NatsError::StreamMismatch {
                stream: name.clone(),
                expected: wanted.subjects.clone(),
                actual: existing.config.subjects.clone(),
            });
        }
        if existing.config.duplicate_window != wanted.duplicate_window
            || existing.config.max_age != wanted.max_age
        {
            let mut updated = existing.config.clone();
            updated.duplicate_window = wanted.duplicate_window;
            updated.max_age = wanted.max_age;
            let resp: Response<jetstream::stream::Info> = js
                .request(format!("STREAM.UPDATE.{name}"), &updated)
                .await
                .map_err(|e| NatsError::request("stream update", &e))?;
            if let Response::Err { error } = resp {
                return Err(NatsError::api("stream update", &error));
            }
            tracing::info!(stream = %name, "updated JetStream stream duplicate window / max age");
        }
        Ok(())
    }

    /// Current message counts of the stream.
    pub async fn stream_state(&self) -> Result<StreamState, NatsError> {
        let name = &self.inner.config.stream;
        let info: Response<jetstream::stream::Info> = self
            .inner
            .js
            .request(format!("STREAM.INFO.{name}"), &())
            .await
            .map_err(|e| NatsError::request("stream info", &e))?;
        match info {
            Response::Ok(info) => Ok(StreamState {
                messages: info.state.messages,
                first_seq: info.state.first_sequence,
                last_seq: info.state.last_sequence,
            }),
            Response::Err { error } => Err(NatsError::api("stream info", &error)),
        }
    }

    /// The largest message the connected server accepts (`max_payload`, 1 MiB by default).
    pub fn max_payload(&self) -> usize {
        self.inner.client.server_info().max_payload
    }

    fn prepare(
        &self,
        entity: &str,
        op: ChangeOp,
        msg_id: &str,
        payload: Bytes,
    ) -> Result<(String, PublishMessage), NatsError> {
        let subject = subject(&self.inner.config.subject_prefix, entity, op)?;
        validate_msg_id(msg_id)?;
        Ok((
            subject,
            PublishMessage::build().payload(payload).message_id(msg_id),
        ))
    }

    /// Sends one message; returns the future of its PubAck (bounded by the request timeout).
    async fn send(
        &self,
        subject: String,
        message: PublishMessage,
    ) -> Result<jetstream::context::PublishAckFuture, NatsError> {
        // send_publish bounds the hand-over to the connection task by the context timeout,
        // and waits for an in-flight slot (backpressure) without a bound: bound it here.
        match tokio::time::timeout(
            self.inner.request_timeout,
            self.inner.js.send_publish(subject, message),
        )
        .await
        {
            Ok(Ok(ack)) => Ok(ack),
            Ok(Err(err)) => Err(NatsError::publish(&err)),
            Err(_) => Err(NatsError::Timeout("publish")),
        }
    }

    /// Publishes one event with `Nats-Msg-Id: msg_id` and waits for JetStream's PubAck.
    /// No retry: see [`EventBus::publish_batch`] for that.
    pub async fn publish(
        &self,
        entity: &str,
        op: ChangeOp,
        msg_id: &str,
        payload: Bytes,
    ) -> Result<PublishOutcome, NatsError> {
        let (subject, message) = self.prepare(entity, op, msg_id, payload)?;
        let ack = self.send(subject, message).await?;
        let ack = ack.await.map_err(|e| NatsError::publish(&e))?;
        Ok(PublishOutcome {
            duplicate: ack.duplicate,
            seq: ack.sequence,
        })
    }

    /// Publishes every event, pipelined (up to 1024 PubAcks outstanding), and
    /// re-publishes the unacknowledged ones after a transient failure (timeout, no responders
    /// while the server restarts, connection lost) with backoff and jitter, until all are
    /// acknowledged or `shutdown` is cancelled. `Ok` means JetStream stored every event
    /// (duplicates count: they were stored before); the outcomes are in input order.
    ///
    /// A non-transient failure (e.g. a payload over the server's max, an invalid entity)
    /// returns `Err` at once; some events may have been stored already, which is harmless as
    /// re-publishing them later is deduplicated by message id.
    pub async fn publish_batch(
        &self,
        items: Vec<OutgoingEvent>,
        shutdown: &CancellationToken,
    ) -> Result<Vec<PublishOutcome>, NatsError> {
        // Validate everything first: a bad item must not be half-published on every retry.
        let mut prepared = Vec::with_capacity(items.len());
        for item in items {
            let (subject, message) =
                self.prepare(&item.entity, item.op, &item.msg_id, item.payload)?;
            prepared.push((subject, message));
        }
        let mut results: Vec<Option<PublishOutcome>> = vec![None; prepared.len()];
        let mut pending: Vec<usize> = (0..prepared.len()).collect();
        let mut attempt: u32 = 0;
        let mut republished: usize = 0;

        while !pending.is_empty() {
            if shutdown.is_cancelled() {
                return Err(NatsError::Cancelled);
            }
            let mut failed: Vec<usize> = Vec::new();
            let mut last_error: Option<NatsError> = None;
            let mut inflight = FuturesUnordered::new();
            let mut send_broken = false;

            let mut handle = |(idx, result): (
                usize,
                Result<jetstream::publish::PublishAck, jetstream::context::PublishError>,
            ),
                              failed: &mut Vec<usize>,
                              last_error: &mut Option<NatsError>|
             -> Result<(), NatsError> {
                match result {
                    Ok(ack) => {
                        if let Some(slot) = results.get_mut(idx) {
                            *slot = Some(PublishOutcome {
                                duplicate: ack.duplicate,
                                seq: ack.sequence,
                            });
                        }
                        Ok(())
                    }
                    Err(err) => {
                        let err = NatsError::publish(&err);
                        if err.is_transient() {
                            failed.push(idx);
                            *last_error = Some(err);
                            Ok(())
                        } else {
                            Err(err)
                        }
                    }
                }
            };

            for idx in pending.drain(..) {
                if send_broken {
                    failed.push(idx);
                    continue;
                }
                // Window full: collect acks down to half of it, then send the next burst
                // (sending one per returned ack would flush the socket per message).
                if inflight.len() >= PUBLISH_WINDOW {
                    while inflight.len() > PUBLISH_WINDOW / 2 {
                        match inflight.next().await {
                            Some(done) => handle(done, &mut failed, &mut last_error)?,
                            None => break,
                        }
                    }
                }
                let Some((subject, message)) = prepared.get(idx) else {
                    continue;
                };
                match self.send(subject.clone(), message.clone()).await {
                    Ok(ack) => inflight.push(async move { (idx, ack.await) }),
                    Err(err) if err.is_transient() => {
                        // The connection is not taking messages: do not wait a timeout for
                        // each remaining item, retry them all after the backoff.
                        failed.push(idx);
                        last_error = Some(err);
                        send_broken = true;
                    }
                    Err(err) => return Err(err),
                }
            }
            while let Some(done) = inflight.next().await {
                handle(done, &mut failed, &mut last_error)?;
            }

            if failed.is_empty() {
                break;
            }
            failed.sort_unstable();
            republished = republished.saturating_add(failed.len());
            self.inner.republished.fetch_add(
                u64::try_from(failed.len()).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            );
            tracing::warn!(
                unacked = failed.len(),
                attempt,
                error = %last_error.as_ref().map(ToString::to_string).unwrap_or_default(),
                "JetStream publish not acknowledged, retrying"
            );
            sleep_or_cancel(self.inner.retry.delay(attempt), shutdown).await?;
            attempt = attempt.saturating_add(1);
            pending = failed;
        }
        if republished > 0 {
            tracing::info!(republished, "JetStream batch acknowledged after retries");
        }
        Ok(results.into_iter().flatten().collect())
    }

    /// The durable pull consumer (created if missing). Several instances using the same
    /// `durable` share the work: each message goes to one of them.
    pub async fn consumer(&self) -> Result<EventConsumer, NatsError> {
        let consumer = EventConsumer {
            bus: self.clone(),
            pull: Arc::default(),
        };
        consumer.ensure().await?;
        Ok(consumer)
    }

    /// Drains the connection: flushes what is buffered and closes it.
    pub async fn close(self) {
        if let Err(err) = self.inner.client.drain().await {
            tracing::debug!(error = %err, "NATS drain failed");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Consumer
// ---------------------------------------------------------------------------------------------

/// Handle on the durable pull consumer. Cheap to clone; clones share the consumer.
///
/// Built on async-nats's pull consumer: [`jetstream::Context::create_consumer_on_stream`]
/// creates or updates it and [`PullConsumer::fetch`] pulls (one pull request per call, the
/// request's end-of-request status ends the batch). Only the acknowledgements are sent by
/// hand, as confirmed requests: see [`Delivery::ack`] for why.
#[derive(Clone, Debug)]
pub struct EventConsumer {
    bus: EventBus,
    /// `None` when the consumer may be missing on the server (first use, `503`, "consumer
    /// deleted"): the next fetch creates it again before pulling.
    pull: Arc<std::sync::Mutex<Option<PullConsumer>>>,
}

impl EventConsumer {
    fn consumer_config(&self) -> pull::Config {
        let c = &self.bus.inner.config;
        pull::Config {
            durable_name: Some(c.durable.clone()),
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::Explicit,
            ack_wait: Duration::from_millis(c.ack_wait_ms),
            max_deliver: c.max_deliver,
            filter_subject: format!("{}.>", c.subject_prefix),
            replay_policy: ReplayPolicy::Instant,
            ..Default::default()
        }
    }

    fn set_pull(&self, pull: Option<PullConsumer>) {
        // A poisoned lock only means another fetch panicked; the value is still sound.
        *self
            .pull
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = pull;
    }

    fn forget(&self) {
        self.set_pull(None);
    }

    /// Creates the durable consumer, or updates its editable settings (ack wait, max
    /// deliver) if it exists; JetStream makes this idempotent.
    async fn ensure(&self) -> Result<PullConsumer, NatsError> {
        const OP: &str = "consumer create";
        let c = &self.bus.inner.config;
        let mismatch = |reason: String| NatsError::ConsumerMismatch {
            stream: c.stream.clone(),
            consumer: c.durable.clone(),
            reason,
        };
        let created = self
            .bus
            .inner
            .js
            .create_consumer_on_stream(self.consumer_config(), &c.stream)
            .await;
        match created {
            Ok(consumer) => {
                self.set_pull(Some(consumer.clone()));
                Ok(consumer)
            }
            Err(err) => Err(match err.kind() {
                ConsumerErrorKind::TimedOut => NatsError::Timeout(OP),
                ConsumerErrorKind::Request => std::error::Error::source(&err)
                    .and_then(|s| s.downcast_ref::<jetstream::context::RequestError>())
                    .map_or_else(
                        || NatsError::Other {
                            op: OP,
                            message: err.to_string(),
                        },
                        |e| NatsError::request(OP, e),
                    ),
                ConsumerErrorKind::JetStream(error) if error.code() == 503 => {
                    NatsError::api(OP, &error)
                }
                ConsumerErrorKind::JetStream(error) => mismatch(error.to_string()),
                // The existing durable is a push consumer (it has a deliver subject).
                ConsumerErrorKind::Other | ConsumerErrorKind::InvalidConsumerType => {
                    mismatch("it is a push consumer".to_string())
                }
                ConsumerErrorKind::InvalidName => mismatch(err.to_string()),
            }),
        }
    }

    /// The pull consumer, created first if it may be missing.
    async fn pull_consumer(&self) -> Result<PullConsumer, NatsError> {
        let known = self
            .pull
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        match known {
            Some(consumer) => Ok(consumer),
            None => self.ensure().await,
        }
    }

    /// Pulls up to `max` messages, waiting at most `wait` (plus a short grace for the server's
    /// answer) for the first one; returns at once with what is available once something is.
    /// `Ok(vec![])` when nothing arrived. A transient error (disconnected, consumer not yet
    /// loaded after a restart) leaves the consumer usable: call again later; the durable
    /// consumer lives on the server, so nothing is lost.
    ///
    /// Messages that cannot be parsed as `<prefix>.<entity>.<op>` are terminated (`+TERM`,
    /// never redelivered) with a warning instead of being returned.
    pub async fn fetch(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, NatsError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let consumer = self.pull_consumer().await?;
        let inner = &self.bus.inner;
        let client = &inner.client;
        if client.connection_state() != State::Connected {
            return Err(NatsError::Disconnected);
        }
        let wait = wait.max(Duration::from_millis(10));
        // async-nats ends a batch whose end-of-request status is lost only 5 s past its
        // expiry; this bound keeps a lost status from holding the caller that long.
        let deadline = tokio::time::Instant::now() + wait + FETCH_GRACE;

        // A fetch request (`no_wait` with `expires`): the server answers as soon as it has
        // any message (up to `max`) instead of waiting for `max` of them.
        let mut batch = tokio::time::timeout(
            inner.request_timeout,
            consumer.fetch().max_messages(max).expires(wait).messages(),
        )
        .await
        .map_err(|_| NatsError::Timeout("pull request"))?
        .map_err(|e| NatsError::Other {
            op: "pull request",
            message: e.to_string(),
        })?;

        let mut out = Vec::new();
        loop {
            let message = match tokio::time::timeout_at(deadline, batch.next()).await {
                // The end-of-request status did not come in time, or the batch is over
                // (404 no messages, 408 expired, `max` received, subscription closed).
                Err(_) | Ok(None) => break,
                Ok(Some(Ok(message))) => message,
                Ok(Some(Err(err))) => {
                    let (code, description) = pull_status(&err.to_string());
                    if code == Some(503) || description.to_ascii_lowercase().contains("deleted") {
                        self.forget();
                    }
                    if !out.is_empty() {
                        break;
                    }
                    return Err(match code {
                        Some(503) => NatsError::NoResponders("pull request"),
                        code => NatsError::PullStatus {
                            code: code.unwrap_or(0),
                            description,
                        },
                    });
                }
            };
            if let Some(d) = self.delivery(message).await {
                out.push(d);
            }
        }
        if out.is_empty() && client.connection_state() != State::Connected {
            return Err(NatsError::Disconnected);
        }
        Ok(out)
    }

    async fn delivery(&self, message: jetstream::Message) -> Option<Delivery> {
        let inner = &self.bus.inner;
        let (stream_seq, num_delivered) = match message.info() {
            Ok(info) => (
                info.stream_sequence,
                u64::try_from(info.delivered).unwrap_or(0),
            ),
            Err(err) => {
                tracing::warn!(error = %err, "JetStream message without a parsable reply subject, skipped");
                return None;
            }
        };
        let subject = message.subject.to_string();
        let Some((entity, op)) = parse_subject(&inner.config.subject_prefix, &subject) else {
            tracing::warn!(%subject, stream_seq, "message subject is not <prefix>.<entity>.<op>; terminating it");
            if let Err(err) = message.ack_with(jetstream::AckKind::Term).await {
                tracing::warn!(error = %err, "could not terminate message");
            }
            return None;
        };
        let message = message.message;
        let reply = message.reply.as_ref().map(ToString::to_string)?;
        let msg_id = message
            .headers
            .as_ref()
            .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
            .map(|v| v.as_str().to_string());
        Some(Delivery {
            subject,
            entity,
            op,
            msg_id,
            payload: message.payload,
            stream_seq,
            num_delivered,
            reply,
            client: inner.client.clone(),
            timeout: inner.request_timeout,
        })
    }
}

/// The status code and description of a pull request that ended with an error status.
/// async-nats's batch reports one only as text,
/// `error while processing messages from the stream: <code>, <description:?>`.
fn pull_status(text: &str) -> (Option<u16>, String) {
    let rest = text.rsplit_once("stream: ").map_or(text, |(_, r)| r);
    let (code, description) = rest.split_once(", ").unwrap_or((rest, ""));
    let description = description
        .strip_prefix("Some(\"")
        .and_then(|d| d.strip_suffix("\")"))
        .unwrap_or(if description == "None" {
            ""
        } else {
            description
        });
    match code.trim().parse::<u16>() {
        Ok(code) => (Some(code), description.to_string()),
        Err(_) => (None, text.to_string()),
    }
}

/// One delivered event. Must be acknowledged with [`Delivery::ack`] once handled, else it is
/// redelivered after `ack_wait`.
pub struct Delivery {
    /// Full subject.
    pub subject: String,
    /// Entity token of the subject.
    pub entity: String,
    /// Operation token of the subject.
    pub op: ChangeOp,
    /// The `Nats-Msg-Id` header, if the publisher set one.
    pub msg_id: Option<String>,
    /// Event body.
    pub payload: Bytes,
    /// Stream sequence.
    pub stream_seq: u64,
    /// How many times this message has been delivered (1 on the first delivery).
    pub num_delivered: u64,
    reply: String,
    client: async_nats::Client,
    timeout: Duration,
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("subject", &self.subject)
            .field("msg_id", &self.msg_id)
            .field("stream_seq", &self.stream_seq)
            .field("num_delivered", &self.num_delivered)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

impl Delivery {
    /// Whether this is a redelivery.
    pub fn redelivered(&self) -> bool {
        self.num_delivered > 1
    }

    /// Sends `kind` as a request and waits for the server's confirmation.
    ///
    /// Why not async-nats's `double_ack`: it subscribes to a fresh inbox per ack and treats
    /// *any* reply as success, including the `503 no responders` status the server sends
    /// when the consumer is not loaded (e.g. right after a restart) — an ack that was not
    /// applied would look confirmed. A plain request over the shared inbox maps 503 to an
    /// error and costs no SUB/UNSUB per message.
    async fn confirm(&self, kind: jetstream::AckKind, op: &'static str) -> Result<(), NatsError> {
        match tokio::time::timeout(
            self.timeout,
            self.client.request(self.reply.clone(), Bytes::from(kind)),
        )
        .await
        {
            Err(_) => Err(NatsError::Timeout(op)),
            Ok(Err(err)) => Err(NatsError::client_request(op, &err)),
            Ok(Ok(_)) => Ok(()),
        }
    }

    /// Acknowledges the message and waits for the server to confirm it received the ack.
    /// On `Err` the ack may or may not have been applied; the message may be redelivered.
    pub async fn ack(&self) -> Result<(), NatsError> {
        self.confirm(jetstream::AckKind::Ack, "ack").await
    }

    /// Negative acknowledgement: redeliver after `delay` (at once with `None`).
    pub async fn nak(&self, delay: Option<Duration>) -> Result<(), NatsError> {
        self.confirm(jetstream::AckKind::Nak(delay), "nak").await
    }

    /// Work in progress: resets the ack-wait timer.
    pub async fn in_progress(&self) -> Result<(), NatsError> {
        self.confirm(jetstream::AckKind::Progress, "in_progress")
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_tokens() {
        assert_eq!(
            subject("fraiseql.changes", "Post", ChangeOp::Insert).ok(),
            Some("fraiseql.changes.Post.insert".to_string())
        );
        // Names outside the subject alphabet are encoded, never rewritten into another name.
        for name in ["po st", "a.b", "*", ">", "~4142", "Ordér"] {
            let s = subject("fraiseql.changes", name, ChangeOp::Insert).unwrap();
            assert!(s.starts_with("fraiseql.changes.~"), "{s}");
            assert_eq!(s.matches('.').count(), 3, "{s}");
            assert_eq!(
                parse_subject("fraiseql.changes", &s),
                Some((name.to_string(), ChangeOp::Insert))
            );
        }
        assert!(subject("fraiseql.changes", "", ChangeOp::Insert).is_err());
        assert!(subject("fraiseql.changes", &"x ".repeat(600), ChangeOp::Insert).is_err());
        // A token that decodes to an identifier is not canonical: refused.
        assert_eq!(parse_subject("p", "p.~706f7374.insert"), None);
        assert_eq!(parse_subject("p", "p.~zz.insert"), None);
        assert!(subject("fraiseql.>", "post", ChangeOp::Insert).is_err());
        assert!(subject("a..b", "post", ChangeOp::Insert).is_err());
        assert_eq!(
            parse_subject("p.q", "p.q.post.delete"),
            Some(("post".to_string(), ChangeOp::Delete))
        );
        assert_eq!(parse_subject("p.q", "p.q.post.upsert"), None);
        assert_eq!(parse_subject("p.q", "p.qq.post.delete"), None);
        assert!("UPDATE".parse::<ChangeOp>().is_ok());
        assert!("merge".parse::<ChangeOp>().is_err());
    }

    #[test]
    fn pull_status_from_the_batch_error_text() {
        let text = |code: u16, description: Option<&str>| {
            format!("error while processing messages from the stream: {code}, {description:?}")
        };
        assert_eq!(pull_status(&text(503, None)), (Some(503), String::new()));
        assert_eq!(
            pull_status(&text(409, Some("Consumer Deleted"))),
            (Some(409), "Consumer Deleted".to_string())
        );
        assert_eq!(
            pull_status("something else"),
            (None, "something else".to_string())
        );
    }

    #[test]
    fn redaction() {
        assert_eq!(
            redact_url("nats://u:secret@h:4222,tls://tok@h2"),
            "nats://***@h:4222,tls://***@h2"
        );
        assert_eq!(redact_url("nats://h:4222"), "nats://h:4222");
        let c = NatsConfig {
            url: "nats://u:secret@h:4222".into(),
            ..Default::default()
        };
        assert!(!format!("{c:?}").contains("secret"));
    }
}
