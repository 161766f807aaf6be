//! Typed configuration: defaults, then the TOML file, then `FRAISEQL_<SECTION>_<KEY>`
//! environment variables, then command-line flags (highest precedence).
//!
//! Every role receives one validated [`Config`]. Errors name the file (or environment
//! variable), the key and what was expected, and never print secrets: database URLs are
//! shown through [`redact_url`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::redact::redact_url;

/// The file used when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "fraiseql.toml";
const ENV_PREFIX: &str = "FRAISEQL_";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: not found")]
    NotFound { path: PathBuf },
    #[error("config file {path}: cannot be read: {source}")]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("{key} (from {origin}): {message}")]
    Value {
        key: String,
        origin: String,
        message: String,
    },
}

/// The whole configuration. Each section is owned by one concern.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub metrics: MetricsConfig,
    pub log: LogConfig,
    pub graphql: GraphqlConfig,
    /// How the observer runtime runs (reader, workers, queue bounds, dedup).
    pub observer_runtime: crate::observers::ObserverSettings,
    /// What reacts to committed changes: `[[observers]]` with their `[[observers.actions]]`.
    pub observers: Vec<crate::observers::ObserverConfig>,
    /// The Arrow Flight server (`fraiseql flight`, `serve --with-flight`).
    pub flight: crate::flight::FlightConfig,
    /// Which backend carries observer jobs (`memory` in-process, or `redis`).
    pub queue: crate::queue::config::QueueConfig,
    /// `fraiseql worker`: the standalone consumer of the Redis queue.
    pub worker: WorkerConfig,
    /// NATS JetStream: change events published to `<prefix>.<entity>.<op>`.
    pub nats: crate::nats::NatsConfig,
    /// Where each top-level key came from, for error messages. Not part of the file format.
    #[serde(skip)]
    pub origins: Origins,
}

/// `[worker]`: the `fraiseql worker` role.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// Address of the worker's own `/healthz`, `/readyz` and `/metrics`.
    pub listen: SocketAddr,
    /// Jobs executed at once (`--concurrency` overrides).
    pub concurrency: usize,
    /// After SIGTERM, running jobs get this long to finish; the rest are handed back.
    pub grace_period_ms: u64,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9091)),
            concurrency: 16,
            grace_period_ms: 10_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address the HTTP server binds to. Loopback by default: exposing the API is a choice.
    pub listen: SocketAddr,
    /// Time allowed for in-flight requests to finish after SIGINT/SIGTERM, in milliseconds.
    pub grace_period_ms: u64,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Time allowed for one request, in milliseconds.
    pub request_timeout_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            grace_period_ms: 10_000,
            max_body_bytes: 1024 * 1024,
            request_timeout_ms: 30_000,
        }
    }
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// PostgreSQL connection URL (`postgres://user:password@host:port/dbname`).
    pub url: String,
    /// Most connections the pool opens; 0 = twice the CPU cores, at least 4 (more
    /// connections than PostgreSQL can run at once only add queueing and tail latency).
    pub pool_size: usize,
    /// Time allowed to open one connection, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Time a request waits for a free pooled connection, in milliseconds.
    pub acquire_timeout_ms: u64,
    /// `statement_timeout` set on every connection, in milliseconds (0 = none).
    pub statement_timeout_ms: u64,
    /// PEM file of CA certificates for `sslmode=require`; empty = the bundled Mozilla roots.
    pub tls_ca_file: String,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: "postgres://postgres@127.0.0.1:5432/postgres".to_string(),
            pool_size: 0,
            connect_timeout_ms: 5_000,
            acquire_timeout_ms: 5_000,
            statement_timeout_ms: 30_000,
            tls_ca_file: String::new(),
        }
    }
}

impl DatabaseConfig {
    /// `pool_size`, with 0 resolved to twice the available cores (at least 4).
    pub fn effective_pool_size(&self) -> usize {
        if self.pool_size > 0 {
            return self.pool_size;
        }
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        (cores * 2).max(4)
    }

    /// The URL as tokio-postgres understands it: libpq's `sslmode=verify-full` and
    /// `verify-ca` become `require` (FraiseQL always verifies certificates under TLS).
    pub fn normalized_url(&self) -> String {
        self.url
            .replace("sslmode=verify-full", "sslmode=require")
            .replace("sslmode=verify-ca", "sslmode=require")
    }
}

impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &redact_url(&self.url))
            .field("pool_size", &self.pool_size)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("acquire_timeout_ms", &self.acquire_timeout_ms)
            .field("statement_timeout_ms", &self.statement_timeout_ms)
            .field("tls_ca_file", &self.tls_ca_file)
            .finish()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Serve Prometheus metrics at `path`.
    pub enabled: bool,
    /// HTTP path of the Prometheus endpoint.
    pub path: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            path: "/metrics".to_string(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `pretty` for people, `json` for log collectors.
    pub format: LogFormat,
    /// Filter in `tracing` syntax (`info`, `fraiseql=debug,warn`); `FRAISEQL_LOG` or
    /// `RUST_LOG` override it.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Pretty,
            level: "info,tokio_postgres=warn".to_string(),
        }
    }
}

/// The GraphQL endpoint: which schema it serves and the limits every request must respect.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GraphqlConfig {
    /// `schema.json` (as the SDKs export it) or `schema.compiled.json`; empty = no `/graphql`.
    pub schema: String,
    /// Serve GraphiQL at `/graphiql`.
    pub graphiql: bool,
    /// Answer introspection queries (GraphiQL needs them).
    pub introspection: bool,
    /// Deepest selection nesting accepted.
    pub max_depth: usize,
    /// Most aliased fields in one operation.
    pub max_aliases: usize,
    /// Most lexical tokens in one document.
    pub max_tokens: usize,
    /// Most fields in one operation, fragments expanded.
    pub max_fields: usize,
    /// Largest `query` text, in bytes.
    pub max_query_bytes: usize,
    /// Most root fields in one operation (each is one SQL statement).
    pub max_root_fields: usize,
    /// `limit` of a list query that gives none.
    pub default_limit: i64,
    /// Largest `limit` accepted.
    pub max_limit: i64,
    /// Most values in one input list (`in`, `_or`, `orderBy`, …).
    pub max_list_input: usize,
    /// Deepest `where` nesting (`_and`/`_or`/`_not` and nested paths).
    pub max_filter_depth: usize,
    /// Responses at least this large are gzip-compressed when the client accepts gzip.
    pub gzip_min_bytes: usize,
    /// Prepared statements cached per database connection.
    pub max_cached_statements: usize,
}

impl Default for GraphqlConfig {
    fn default() -> Self {
        let l = crate::graphql::Limits::default();
        Self {
            schema: String::new(),
            graphiql: true,
            introspection: l.introspection,
            max_depth: l.max_depth,
            max_aliases: l.max_aliases,
            max_tokens: l.max_tokens,
            max_fields: l.max_fields,
            max_query_bytes: l.max_query_bytes,
            max_root_fields: l.max_root_fields,
            default_limit: l.default_limit,
            max_limit: l.max_limit,
            max_list_input: l.max_list_input,
            max_filter_depth: l.max_filter_depth,
            gzip_min_bytes: l.gzip_min_bytes,
            max_cached_statements: l.max_cached_statements,
        }
    }
}

impl Config {
    /// The engine's limits from `[graphql]` and `server.max_body_bytes`.
    pub fn graphql_limits(&self) -> crate::graphql::Limits {
        let g = &self.graphql;
        crate::graphql::Limits {
            max_depth: g.max_depth,
            max_aliases: g.max_aliases,
            max_tokens: g.max_tokens,
            max_fields: g.max_fields,
            max_query_bytes: g.max_query_bytes,
            max_body_bytes: self.server.max_body_bytes,
            max_root_fields: g.max_root_fields,
            default_limit: g.default_limit,
            max_limit: g.max_limit,
            max_list_input: g.max_list_input,
            max_filter_depth: g.max_filter_depth,
            gzip_min_bytes: g.gzip_min_bytes,
            introspection: g.introspection,
            max_cached_statements: g.max_cached_statements,
        }
    }
}

/// Where configuration values came from, used to point error messages at the right place.
#[derive(Debug, Clone, Default)]
pub struct Origins {
    file: Option<PathBuf>,
    env: Vec<(String, String)>,
    flags: Vec<String>,
}

impl Origins {
    /// Describes where `section.key` was set.
    pub fn of(&self, key: &str) -> String {
        if self.flags.iter().any(|k| k == key) {
            return "command line".to_string();
        }
        if let Some((_, var)) = self.env.iter().find(|(k, _)| k == key) {
            return format!("environment variable {var}");
        }
        match &self.file {
            Some(p) => format!("config file {}", p.display()),
            None => "defaults".to_string(),
        }
    }

    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }
}

/// Command-line values that override the file and the environment.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub schema: Option<PathBuf>,
    pub flight_listen: Option<String>,
    pub worker_listen: Option<SocketAddr>,
    pub worker_concurrency: Option<usize>,
    pub log_format: Option<LogFormat>,
}

impl Config {
    /// Loads the configuration: `path` if given (it must exist), else `./fraiseql.toml` if it
    /// exists, else defaults; then the process environment; then `overrides`.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::load_with_env(path, &env, overrides)
    }

    /// Same as [`Config::load`] with an explicit environment (tests use this).
    pub fn load_with_env(
        path: Option<&Path>,
        env: &[(String, String)],
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        let file = match path {
            Some(p) => Some(p.to_path_buf()),
            None => {
                let p = PathBuf::from(DEFAULT_CONFIG_FILE);
                p.is_file().then_some(p)
            }
        };

        let mut table = toml::Table::new();
        if let Some(p) = &file {
            let text = read_file(p)?;
            // Deserialize straight from the text first: toml's errors then carry the line,
            // the column and the offending key.
            toml::from_str::<Config>(&text).map_err(|e| ConfigError::Invalid {
                path: p.clone(),
                message: friendly(e.to_string().trim_end()),
            })?;
            table = text
                .parse::<toml::Table>()
                .map_err(|e| ConfigError::Invalid {
                    path: p.clone(),
                    message: e.to_string(),
                })?;
        }

        let mut origins = Origins {
            file: file.clone(),
            ..Default::default()
        };
        apply_env(&mut table, env, &mut origins)?;

        let mut config: Config = table.try_into().map_err(|e: toml::de::Error| {
            // Only environment values can fail here; the file alone already parsed.
            let var = origins
                .env
                .iter()
                .map(|(_, v)| v.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            // serde's message quotes the rejected value: withheld when any of the variables
            // holds a secret.
            let secret = origins.env.iter().any(|(_, v)| holds_secret(v));
            let message = if secret {
                "a value does not have the expected type (not shown: a secret)".to_string()
            } else {
                friendly(e.message())
            };
            ConfigError::Env { var, message }
        })?;

        if let Some(listen) = overrides.listen {
            config.server.listen = listen;
            origins.flags.push("server.listen".into());
        }
        if let Some(schema) = &overrides.schema {
            config.graphql.schema = schema.display().to_string();
            origins.flags.push("graphql.schema".into());
        }
        if let Some(listen) = &overrides.flight_listen {
            config.flight.listen = listen.clone();
            origins.flags.push("flight.listen".into());
        }
        if let Some(listen) = overrides.worker_listen {
            config.worker.listen = listen;
            origins.flags.push("worker.listen".into());
        }
        if let Some(n) = overrides.worker_concurrency {
            config.worker.concurrency = n;
            origins.flags.push("worker.concurrency".into());
        }
        if let Some(format) = overrides.log_format {
            config.log.format = format;
            origins.flags.push("log.format".into());
        }
        config.origins = origins;
        config.validate()?;
        Ok(config)
    }

    fn value_error(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Value {
            key: key.to_string(),
            origin: self.origins.of(key),
            message: message.into(),
        }
    }

    /// Checks values that types alone cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Err(e) = tokio_postgres::Config::from_str(&self.database.normalized_url()) {
            return Err(self.value_error(
                "database.url",
                format!(
                    "invalid PostgreSQL URL {}: {e}; expected postgres://user@host:port/dbname",
                    redact_url(&self.database.url)
                ),
            ));
        }
        if !self.database.tls_ca_file.is_empty() && !Path::new(&self.database.tls_ca_file).is_file()
        {
            return Err(self.value_error(
                "database.tls_ca_file",
                format!("{} is not a readable file", self.database.tls_ca_file),
            ));
        }
        if self.database.pool_size > 10_000 {
            return Err(self.value_error("database.pool_size", "must be at most 10000"));
        }
        if self.server.max_body_bytes < 1024 {
            return Err(self.value_error("server.max_body_bytes", "must be at least 1024"));
        }
        if !self.metrics.path.starts_with('/') {
            return Err(self.value_error("metrics.path", "must start with '/'"));
        }
        if !self.graphql.schema.is_empty() && !Path::new(&self.graphql.schema).is_file() {
            return Err(self.value_error(
                "graphql.schema",
                format!("{} is not a readable file", self.graphql.schema),
            ));
        }
        if self.graphql.default_limit < 1 || self.graphql.default_limit > self.graphql.max_limit {
            return Err(self.value_error(
                "graphql.default_limit",
                format!(
                    "must be between 1 and graphql.max_limit ({})",
                    self.graphql.max_limit
                ),
            ));
        }
        for (key, v) in [
            ("graphql.max_depth", self.graphql.max_depth),
            ("graphql.max_tokens", self.graphql.max_tokens),
            ("graphql.max_fields", self.graphql.max_fields),
            ("graphql.max_query_bytes", self.graphql.max_query_bytes),
            ("graphql.max_root_fields", self.graphql.max_root_fields),
        ] {
            if v == 0 {
                return Err(self.value_error(key, "must be at least 1"));
            }
        }
        if let Err(e) =
            crate::observers::config::validate(&self.observers, &self.observer_runtime, None)
        {
            let origin = self.origins.of("observers");
            return Err(ConfigError::Value {
                key: "observers".into(),
                origin,
                message: e.to_string(),
            });
        }
        if let Err(e) = self.queue.validate() {
            return Err(self.value_error(&format!("queue.{}", e.key), e.message));
        }
        if let Err(e) = self.nats.validate() {
            return Err(self.value_error(e.key, e.message));
        }
        if self.nats.consume && !self.nats.enabled() {
            return Err(self.value_error("nats.consume", "needs nats.url"));
        }
        if self.nats.consume && self.queue.backend != crate::queue::config::QueueBackend::Redis {
            return Err(self.value_error(
                "nats.consume",
                "needs [queue] backend = \"redis\": a NATS message is acknowledged once its jobs \
                 are queued, and only the Redis queue keeps them if this process dies",
            ));
        }
        if self.worker.concurrency == 0 || self.worker.concurrency > 10_000 {
            return Err(self.value_error("worker.concurrency", "expected 1 to 10000"));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(self.value_error("log.level", format!("invalid filter: {e}")));
        }
        Ok(())
    }
}

/// Replaces Rust type names in serde's messages with words a user knows.
fn friendly(message: &str) -> String {
    message
        .replace("expected usize", "expected a non-negative integer")
        .replace("expected u64", "expected a non-negative integer")
        .replace("expected u32", "expected a non-negative integer")
        .replace("expected i64", "expected an integer")
        .replace("expected f64", "expected a number")
        .replace("expected a boolean", "expected true or false")
}

fn read_file(path: &Path) -> Result<String, ConfigError> {
    let bytes = std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ConfigError::NotFound {
            path: path.to_path_buf(),
        },
        _ => ConfigError::Unreadable {
            path: path.to_path_buf(),
            source: e,
        },
    })?;
    String::from_utf8(bytes).map_err(|e| ConfigError::Invalid {
        path: path.to_path_buf(),
        message: format!("not valid UTF-8 (byte {})", e.utf8_error().valid_up_to()),
    })
}

/// Environment variables that are not `section.key` overrides.
/// Whether an environment variable's name says it holds a secret.
fn holds_secret(var: &str) -> bool {
    const SECRET: &[&str] = &[
        "TOKEN",
        "SECRET",
        "PASSWORD",
        "PASSWD",
        "KEY",
        "CREDENTIAL",
        "AUTH",
    ];
    SECRET.iter().any(|m| var.contains(m))
}

/// How a rejected environment value appears in an error: quoted as given, unless the
/// variable's name says it holds a secret (a token, password, key or credential, or a URL
/// that may carry a password), whose value is never printed back.
fn shown(var: &str, value: &str) -> String {
    if holds_secret(var) {
        return format!(
            "a value of {} characters (not shown: {var} holds a secret)",
            value.chars().count()
        );
    }
    if var.ends_with("_URL") {
        return format!("{:?}", redact_url(value));
    }
    format!("{value:?}")
}

const RESERVED_ENV: &[&str] = &["FRAISEQL_CONFIG", "FRAISEQL_LOG"];

/// Folds `FRAISEQL_<SECTION>_<KEY>` (and `DATABASE_URL`) into the table. A value is typed by
/// the key's default: strings stay strings, numbers and booleans are parsed.
fn apply_env(
    table: &mut toml::Table,
    env: &[(String, String)],
    origins: &mut Origins,
) -> Result<(), ConfigError> {
    let defaults = toml::Table::try_from(Config::default()).expect("defaults serialize");
    let mut pairs: Vec<(&String, &String)> = env.iter().map(|(k, v)| (k, v)).collect();
    // DATABASE_URL first so FRAISEQL_DATABASE_URL wins over it.
    pairs.sort_by_key(|(k, _)| *k != "DATABASE_URL");
    for (var, value) in pairs {
        let (section, key) = if var == "DATABASE_URL" {
            ("database".to_string(), "url".to_string())
        } else if let Some(rest) = var.strip_prefix(ENV_PREFIX) {
            if RESERVED_ENV.contains(&var.as_str()) {
                continue;
            }
            let lower = rest.to_ascii_lowercase();
            // Section names may contain `_` (`observer_runtime`): the longest section that
            // prefixes the name wins.
            let known = defaults
                .keys()
                .filter(|sec| lower.starts_with(&format!("{sec}_")))
                .max_by_key(|sec| sec.len());
            match known {
                Some(sec) => (sec.clone(), lower[sec.len() + 1..].to_string()),
                None => match lower.split_once('_') {
                    Some((section, key)) => (section.to_string(), key.to_string()),
                    None => {
                        return Err(ConfigError::Env {
                            var: var.clone(),
                            message: "not a configuration key; expected FRAISEQL_<SECTION>_<KEY>"
                                .into(),
                        });
                    }
                },
            }
        } else {
            continue;
        };
        let Some(toml::Value::Table(section_defaults)) = defaults.get(&section) else {
            return Err(ConfigError::Env {
                var: var.clone(),
                message: format!(
                    "unknown section `{section}`; expected one of {}",
                    defaults
                        .iter()
                        .filter(|(_, v)| v.is_table())
                        .map(|(k, _)| k.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        };
        // Optional keys without a default (unset paths) are absent from the defaults: they
        // are taken as strings, and an unknown key is refused when the table is deserialized.
        let string_default = toml::Value::String(String::new());
        let default = section_defaults.get(&key).unwrap_or(&string_default);
        let parsed = match default {
            toml::Value::String(_) => toml::Value::String(value.clone()),
            toml::Value::Integer(_) => value
                .trim()
                .parse::<i64>()
                .map(toml::Value::Integer)
                .map_err(|_| ConfigError::Env {
                    var: var.clone(),
                    message: format!("expected an integer, got {}", shown(var, value)),
                })?,
            toml::Value::Float(_) => value
                .trim()
                .parse::<f64>()
                .map(toml::Value::Float)
                .map_err(|_| ConfigError::Env {
                    var: var.clone(),
                    message: format!("expected a number, got {}", shown(var, value)),
                })?,
            toml::Value::Boolean(_) => match value.trim() {
                "true" | "1" | "yes" | "on" => toml::Value::Boolean(true),
                "false" | "0" | "no" | "off" => toml::Value::Boolean(false),
                _ => {
                    return Err(ConfigError::Env {
                        var: var.clone(),
                        message: format!("expected true or false, got {}", shown(var, value)),
                    });
                }
            },
            _ => {
                let doc = format!("v = {value}");
                doc.parse::<toml::Table>()
                    .ok()
                    .and_then(|mut t| t.remove("v"))
                    .ok_or_else(|| ConfigError::Env {
                        var: var.clone(),
                        message: format!("expected a TOML value, got {}", shown(var, value)),
                    })?
            }
        };
        let entry = table
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let toml::Value::Table(section_table) = entry else {
            return Err(ConfigError::Env {
                var: var.clone(),
                message: format!("section `{section}` in the config file is not a table"),
            });
        };
        section_table.insert(key.clone(), parsed);
        let dotted = format!("{section}.{key}");
        origins.env.retain(|(k, _)| *k != dotted);
        origins.env.push((dotted, var.clone()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fraiseql.toml");
        std::fs::write(&path, text).unwrap();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::load_with_env(Some(&path), &env, &Overrides::default())
    }

    #[test]
    fn precedence_flags_env_file_defaults() {
        let c = load(
            "[server]\nlisten = \"127.0.0.1:9000\"\ngrace_period_ms = 5\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.server.listen.port(), 9000);
        assert_eq!(c.server.grace_period_ms, 5);
        assert_eq!(c.database.pool_size, 0);

        let c = load(
            "[server]\nlisten = \"127.0.0.1:9000\"\n",
            &[("FRAISEQL_SERVER_LISTEN", "127.0.0.1:9001")],
        )
        .unwrap();
        assert_eq!(c.server.listen.port(), 9001);
        assert_eq!(
            c.origins.of("server.listen"),
            "environment variable FRAISEQL_SERVER_LISTEN"
        );

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[server]\nlisten = \"127.0.0.1:9000\"\n").unwrap();
        let env = vec![("FRAISEQL_SERVER_LISTEN".into(), "127.0.0.1:9001".into())];
        let o = Overrides {
            listen: Some("127.0.0.1:9002".parse().unwrap()),
            ..Default::default()
        };
        let c = Config::load_with_env(Some(&path), &env, &o).unwrap();
        assert_eq!(c.server.listen.port(), 9002);
    }

    #[test]
    fn database_url_env_and_plain_database_url() {
        let c = load("", &[("DATABASE_URL", "postgres://a@h/x")]).unwrap();
        assert_eq!(c.database.url, "postgres://a@h/x");
        let c = load(
            "",
            &[
                ("FRAISEQL_DATABASE_URL", "postgres://b@h/y"),
                ("DATABASE_URL", "postgres://a@h/x"),
            ],
        )
        .unwrap();
        assert_eq!(c.database.url, "postgres://b@h/y");
    }

    #[test]
    fn unknown_key_is_named() {
        let e = load("[server]\nlisten_addr = \"x\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("fraiseql.toml"), "{e}");
        assert!(e.contains("listen_addr"), "{e}");
        let e = load("[servr]\n", &[]).unwrap_err().to_string();
        assert!(e.contains("servr"), "{e}");
    }

    #[test]
    fn wrong_type_is_named() {
        let e = load("[database]\npool_size = \"many\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("pool_size") || e.contains("line 2"), "{e}");
        assert!(e.contains("integer"), "{e}");
        let e = load("", &[("FRAISEQL_DATABASE_POOL_SIZE", "many")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("FRAISEQL_DATABASE_POOL_SIZE") && e.contains("integer"),
            "{e}"
        );
    }

    #[test]
    fn bad_values_are_named_without_secrets() {
        let e = load("[database]\nurl = \"mysql://u:hunter2@h/x\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("database.url"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        let e = load("[server]\nlisten = \"nowhere\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("listen") && e.contains("socket address"), "{e}");
        let e = load("", &[("FRAISEQL_SERVR_LISTEN", "x")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("FRAISEQL_SERVR_LISTEN") && e.contains("unknown section"),
            "{e}"
        );
    }

    #[test]
    fn sections_with_underscores_take_env_overrides() {
        let c = load("", &[("FRAISEQL_OBSERVER_RUNTIME_CONCURRENCY", "3")]).unwrap();
        assert_eq!(c.observer_runtime.concurrency, 3);
    }

    #[test]
    fn database_url_is_redacted_in_debug() {
        let c = DatabaseConfig {
            url: "postgres://u:secret@h/db".into(),
            ..Default::default()
        };
        assert!(!format!("{c:?}").contains("secret"));
    }

    #[test]
    fn example_config_parses_and_lists_every_key() {
        let text = include_str!("../config.example.toml");
        let parsed: Config = toml::from_str(text).expect("config.example.toml parses");
        let defaults = toml::Table::try_from(Config::default()).unwrap();
        assert_eq!(
            toml::Table::try_from(parsed).unwrap(),
            defaults,
            "config.example.toml shows the defaults"
        );
        for (section, keys) in &defaults {
            let toml::Value::Table(keys) = keys else {
                continue;
            };
            for key in keys.keys() {
                assert!(
                    text.contains(&format!("[{section}]")) && text.contains(&format!("{key} =")),
                    "config.example.toml lacks {section}.{key}"
                );
            }
        }
    }
}
