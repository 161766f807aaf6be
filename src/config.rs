//! Typed configuration: defaults, then the TOML file, then `FRAISEQL_<SECTION>_<KEY>`
//! environment variables, then command-line flags (highest precedence).
//!
//! Every role receives one validated [`Config`]. Errors name the file (or environment
//! variable), the key and what was expected, and never print secrets: database URLs are
//! shown through [`redact_url`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::redact::redact_url;
use crate::setting::Invalid;

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
    pub server: crate::http::ServerConfig,
    pub database: crate::db::DatabaseConfig,
    pub metrics: crate::metrics::MetricsConfig,
    pub log: LogConfig,
    pub graphql: crate::graphql::GraphqlConfig,
    /// How the observer runtime runs (reader, workers, queue bounds, dedup).
    pub observer_runtime: crate::observers::ObserverSettings,
    /// What reacts to committed changes: `[[observers]]` with their `[[observers.actions]]`.
    pub observers: Vec<crate::observers::ObserverConfig>,
    /// The Arrow Flight server (`fraiseql flight`, `serve --with-flight`).
    pub flight: crate::flight::FlightConfig,
    /// Which backend carries observer jobs (`memory` in-process, or `redis`).
    pub queue: crate::queue::config::QueueConfig,
    /// `fraiseql worker`: the standalone consumer of the Redis queue.
    pub worker: crate::roles::worker::WorkerConfig,
    /// NATS JetStream: change events published to `<prefix>.<entity>.<op>`.
    pub nats: crate::nats::NatsConfig,
    /// Authentication (JWT verifiers) and what an identity means to PostgreSQL. Absent:
    /// every request is served with the pool's login role and no schema rule refuses.
    pub auth: Option<crate::auth::AuthConfig>,
    /// Retention of the change log (`fraiseql db prune`, `serve`'s periodic prune).
    pub change_log: crate::db::retention::ChangeLogConfig,
    /// Rate limits (`[rate_limit]`); absent: none.
    pub rate_limit: Option<crate::ratelimit::RateLimitConfig>,
    /// Analytics sinks (`[[sinks]]`): the change log into ClickHouse or Elasticsearch.
    pub sinks: Vec<crate::sinks::SinkConfig>,
    /// Where each top-level key came from, for error messages. Not part of the file format.
    #[serde(skip)]
    pub origins: Origins,
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

    /// Checks every section's values that types alone cannot express; what only some roles
    /// need is checked by [`Config::validate_for`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        let sections = [
            self.database.validate(),
            self.server.validate(),
            self.metrics.validate(),
            self.graphql.validate(),
            self.worker.validate(),
            self.queue.validate(),
            self.nats.validate(),
            self.auth.as_ref().map_or(Ok(()), |a| a.validate()),
            self.rate_limit.as_ref().map_or(Ok(()), |r| r.validate()),
            self.change_log.validate(),
            crate::sinks::config::validate(&self.sinks),
            self.validate_across(),
        ];
        for r in sections {
            r.map_err(|e| self.invalid(e))?;
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
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(self.value_error("log.level", format!("invalid filter: {e}")));
        }
        Ok(())
    }

    /// Rules that tie two sections together.
    fn validate_across(&self) -> Result<(), Invalid> {
        if let Some(rl) = &self.rate_limit {
            if rl.tenant.is_some() && self.auth.is_none() {
                return Err(Invalid::new(
                    "rate_limit.tenant",
                    "needs [auth]: the tenant is the auth.tenant_claim of the request's token",
                ));
            }
            if rl.store == crate::ratelimit::config::Store::Redis
                && rl.redis_url.is_empty()
                && self.queue.url.is_empty()
            {
                return Err(Invalid::new(
                    "rate_limit.redis_url",
                    "a redis:// URL for store = \"redis\" (or set queue.url)",
                ));
            }
        }
        // Who runs the jobs: with the in-process queue, this process (observer_runtime);
        // with Redis, `queue.run_workers` (serve joins the workers) — never a silent winner.
        let rt = &self.observer_runtime;
        if !self.queue.backend.is_external() && rt.run_reader && !rt.run_workers {
            return Err(Invalid::new(
                "observer_runtime.run_workers",
                "must be true with the in-process queue: its jobs run only in this process, and \
                 the reader would stall once observer_runtime.queue_capacity jobs wait (use \
                 [queue] backend = \"redis\" to run them elsewhere)",
            ));
        }
        if self.queue.backend.is_external() && !rt.run_workers && self.queue.run_workers {
            return Err(Invalid::new(
                "observer_runtime.run_workers",
                "contradicts queue.run_workers = true: with the Redis queue, queue.run_workers \
                 alone says whether serve executes jobs; remove observer_runtime.run_workers",
            ));
        }
        if !self
            .graphql
            .documents
            .trusted_documents_bypass_roles
            .is_empty()
            && self.auth.is_none()
        {
            return Err(Invalid::new(
                "graphql.trusted_documents_bypass_roles",
                "needs [auth]: without it no request has a role, so none could bypass the \
                 allow-list",
            ));
        }
        if self.nats.consume && !self.nats.enabled() {
            return Err(Invalid::new("nats.consume", "needs nats.url"));
        }
        if self.nats.consume && self.queue.backend != crate::queue::config::QueueBackend::Redis {
            return Err(Invalid::new(
                "nats.consume",
                "needs [queue] backend = \"redis\": a NATS message is acknowledged once its jobs \
                 are queued, and only the Redis queue keeps them if this process dies",
            ));
        }
        self.visibility_covers_actions()
    }

    /// With the Redis queue a reservation expires after `queue.visibility_timeout_ms` unless
    /// the worker's heartbeat extends it; a lease shorter than an action's own time limit
    /// would hand a running job to a second worker as soon as one heartbeat is late.
    fn visibility_covers_actions(&self) -> Result<(), Invalid> {
        if self.queue.backend != crate::queue::config::QueueBackend::Redis {
            return Ok(());
        }
        let longest = self
            .observers
            .iter()
            .flat_map(|o| {
                o.actions
                    .iter()
                    .enumerate()
                    .filter_map(move |(i, a)| Some((a.timeout_ms()?, o.name.as_str(), i)))
            })
            .max_by_key(|(t, _, _)| *t);
        match longest {
            Some((timeout, observer, i)) if timeout > self.queue.visibility_timeout_ms => {
                Err(Invalid::new(
                    "queue.visibility_timeout_ms",
                    format!(
                        "expected at least the longest action timeout: observer \"{observer}\" \
                         actions[{i}].timeout_ms is {timeout}, queue.visibility_timeout_ms is {}",
                        self.queue.visibility_timeout_ms
                    ),
                ))
            }
            _ => Ok(()),
        }
    }

    /// [`Config::validate`] plus what `roles` need beyond it: a role refuses to start, and
    /// `fraiseql check` fails, on exactly these.
    pub fn validate_for(&self, roles: &[Role]) -> Result<(), ConfigError> {
        self.validate()?;
        for role in roles {
            match role {
                Role::Serve => {
                    let listen = self.server.listen;
                    if !listen.ip().is_loopback()
                        && self.auth.is_none()
                        && !self.server.allow_unauthenticated
                    {
                        return Err(self.value_error(
                            "server.listen",
                            format!(
                                "{listen} is reachable beyond this machine, and there is no [auth]: \
                                 anyone who can reach it would read and write everything. \
                                 Configure [auth] (README: Authentication and authorization), or \
                                 set server.allow_unauthenticated = true to serve everyone"
                            ),
                        ));
                    }
                }
                Role::Flight => {
                    self.flight
                        .validate_with(self.auth.is_some())
                        .and_then(|()| self.flight.resolved_tokens().map(drop))
                        .map_err(|e| {
                            let message = e.to_string();
                            let key = e.key();
                            ConfigError::Value {
                                origin: self.origins.of(&key),
                                message: message
                                    .strip_prefix(&format!("{key}: "))
                                    .unwrap_or(&message)
                                    .to_string(),
                                key,
                            }
                        })?;
                    if let Some(auth) = &self.auth
                        && let Err(e) = self.flight.check_principal_roles(&auth.db_roles)
                    {
                        let key = e.key();
                        let message = e.to_string();
                        let message = message
                            .strip_prefix(&format!("{key}: "))
                            .unwrap_or(&message);
                        return Err(self.value_error(&key, message));
                    }
                }
                Role::Worker => {
                    if !self.queue.backend.is_external() {
                        return Err(self.value_error(
                            "queue.backend",
                            "fraiseql worker consumes the Redis queue, but this is \"memory\": set \
                             [queue] backend = \"redis\" (with the memory queue, serve runs the \
                             workers itself)",
                        ));
                    }
                    if self.observers.is_empty() {
                        return Err(self.value_error(
                            "observers",
                            "none configured: the worker runs the actions of the observers in the \
                             configuration, so it needs the same [[observers]] as serve",
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    fn invalid(&self, e: Invalid) -> ConfigError {
        ConfigError::Value {
            origin: self.origins.of(&e.key),
            key: e.key,
            message: e.expected,
        }
    }

    /// The engine's limits from `[graphql]` and `server.max_body_bytes`.
    pub fn graphql_limits(&self) -> crate::graphql::Limits {
        let mut limits = self.graphql.limits(self.server.max_body_bytes);
        // With authentication, introspection is opt-in (`auth.introspection`).
        if let Some(auth) = &self.auth {
            limits.introspection &= auth.introspection_enabled();
        }
        limits
    }

    /// Whether `/graphiql` is served: configured, and allowed by `[auth]`.
    pub fn graphiql_enabled(&self) -> bool {
        self.graphql.graphiql && self.auth.as_ref().is_none_or(|a| a.introspection_enabled())
    }
}

/// What a process runs, for [`Config::validate_for`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `fraiseql serve`: HTTP, GraphQL, observers.
    Serve,
    /// `fraiseql flight`, or `serve --with-flight`.
    Flight,
    /// `fraiseql worker`: the Redis queue consumer.
    Worker,
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
    // Optional sections count with their defaults, so `FRAISEQL_AUTH_MODE` is known.
    let defaults = toml::Table::try_from(Config {
        auth: Some(Default::default()),
        rate_limit: Some(Default::default()),
        ..Config::default()
    })
    .expect("defaults serialize");
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
        // An optional table without a default (`FRAISEQL_RATE_LIMIT_CLIENT`) is given as an
        // inline table: `{ requests_per_minute = 600 }`.
        let table_default = toml::Value::Table(toml::Table::new());
        let default =
            section_defaults
                .get(&key)
                .unwrap_or(if value.trim_start().starts_with('{') {
                    &table_default
                } else {
                    &string_default
                });
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
    fn auth_takes_environment_overrides_and_is_validated() {
        let file = "[auth]\n[[auth.jwt]]\nalgorithms = [\"HS256\"]\nsecret_env = \"JWT_SECRET\"\n";
        let c = load(
            file,
            &[
                ("FRAISEQL_AUTH_MODE", "optional"),
                ("FRAISEQL_AUTH_DB_ROLES", "[\"anon\", \"web\"]"),
            ],
        )
        .unwrap();
        let auth = c.auth.unwrap();
        assert_eq!(auth.mode, crate::auth::AuthMode::Optional);
        assert_eq!(auth.db_roles, ["anon", "web"]);
        assert!(load("", &[]).unwrap().auth.is_none());
        let e = load(
            file,
            &[
                ("FRAISEQL_AUTH_ANONYMOUS_ROLE", "nobody"),
                ("FRAISEQL_AUTH_DB_ROLES", "[\"web\"]"),
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("auth.anonymous_role"), "{e}");
        let e = load("[auth]\nmode = \"sometimes\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("mode"), "{e}");
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
    fn a_visibility_timeout_shorter_than_an_action_timeout_is_refused() {
        let observers = "[[observers]]\nname = \"hook\"\nentity = \"Post\"\n\
                         [[observers.actions]]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9/h\"\n\
                         timeout_ms = 5000\n";
        let redis = |vt: u64| {
            format!("[queue]\nbackend = \"redis\"\nvisibility_timeout_ms = {vt}\n{observers}")
        };
        let e = load(&redis(1000), &[]).unwrap_err().to_string();
        assert!(
            e.contains("queue.visibility_timeout_ms")
                && e.contains("actions[0].timeout_ms is 5000")
                && e.contains("\"hook\""),
            "{e}"
        );
        load(&redis(5000), &[]).unwrap();
        // The memory queue has no visibility timeout.
        load(
            &format!("[queue]\nvisibility_timeout_ms = 1000\n{observers}"),
            &[],
        )
        .unwrap();
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

    /// Which process runs the jobs is one decision per backend, and a configuration that
    /// contradicts it is refused instead of one key silently winning.
    #[test]
    fn run_workers_is_validated_against_the_queue_backend() {
        let e = load("[observer_runtime]\nrun_workers = false\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("observer_runtime.run_workers") && e.contains("stall"),
            "{e}"
        );
        let redis =
            "[queue]\nbackend = \"redis\"\nurl = \"redis://127.0.0.1:6379\"\nrun_workers = true\n";
        let e = load(
            &format!("{redis}[observer_runtime]\nrun_workers = false\n"),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("observer_runtime.run_workers") && e.contains("queue.run_workers"),
            "{e}"
        );
        assert!(load(redis, &[]).is_ok());
        assert!(
            load(
                &redis.replace("run_workers = true", "run_workers = false"),
                &[]
            )
            .is_ok()
        );
    }

    /// `[graphql]` reads into the engine's limits; the environment still types its keys.
    #[test]
    fn graphql_limits_take_env_overrides() {
        let c = load(
            "",
            &[
                ("FRAISEQL_GRAPHQL_MAX_DEPTH", "7"),
                ("FRAISEQL_GRAPHQL_INTROSPECTION", "false"),
                ("FRAISEQL_SERVER_MAX_BODY_BYTES", "4096"),
            ],
        )
        .unwrap();
        let l = c.graphql_limits();
        assert_eq!(
            (l.max_depth, l.introspection, l.max_body_bytes),
            (7, false, 4096)
        );
        let e = load("", &[("FRAISEQL_GRAPHQL_MAX_DEPTH", "deep")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("FRAISEQL_GRAPHQL_MAX_DEPTH") && e.contains("integer"),
            "{e}"
        );
    }

    /// The persisted-document keys of `[graphql]` take overrides too; bypass roles need a
    /// manifest and `[auth]` (without it no request has a role).
    #[test]
    fn trusted_documents_keys_take_env_overrides_and_bypass_needs_auth() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = dir.path().join("m.json");
        std::fs::write(&manifest, "{}").unwrap();
        let m = manifest.to_str().unwrap();
        let c = load(
            "",
            &[
                ("FRAISEQL_GRAPHQL_TRUSTED_DOCUMENTS", m),
                ("FRAISEQL_GRAPHQL_APQ", "false"),
                ("FRAISEQL_GRAPHQL_APQ_CACHE_BYTES", "4096"),
            ],
        )
        .unwrap();
        let d = &c.graphql.documents;
        assert_eq!(
            (d.trusted_documents.as_str(), d.apq, d.apq_cache_bytes),
            (m, false, 4096)
        );
        let e = load(
            "",
            &[
                ("FRAISEQL_GRAPHQL_TRUSTED_DOCUMENTS", m),
                (
                    "FRAISEQL_GRAPHQL_TRUSTED_DOCUMENTS_BYPASS_ROLES",
                    "[\"developer\"]",
                ),
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("graphql.trusted_documents_bypass_roles") && e.contains("[auth]"),
            "{e}"
        );
        let e = load(
            "[graphql]\ntrusted_documents_bypass_roles = [\"developer\"]",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("without graphql.trusted_documents"), "{e}");
        let e = load(
            "[graphql]\ntrusted_documents = \"/nonexistent/m.json\"",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("graphql.trusted_documents") && e.contains("not a readable file"),
            "{e}"
        );
    }

    #[test]
    fn rate_limit_rules_take_env_overrides_as_inline_tables() {
        let c = load(
            "",
            &[
                ("FRAISEQL_RATE_LIMIT_STORE", "redis"),
                ("FRAISEQL_RATE_LIMIT_REDIS_URL", "redis://127.0.0.1:6379"),
                (
                    "FRAISEQL_RATE_LIMIT_CLIENT",
                    "{ requests_per_minute = 600, burst = 50 }",
                ),
                ("FRAISEQL_RATE_LIMIT_TRUSTED_PROXIES", "[\"10.0.0.0/8\"]"),
            ],
        )
        .unwrap();
        let rl = c.rate_limit.unwrap();
        assert_eq!(rl.store, crate::ratelimit::config::Store::Redis);
        assert_eq!(rl.client.unwrap().requests_per_minute, 600);
        assert_eq!(rl.client.unwrap().burst(), 50);
        assert_eq!(rl.trusted_proxies, ["10.0.0.0/8"]);
        let e = load(
            "",
            &[("FRAISEQL_RATE_LIMIT_CLIENT", "{ requests_per_minute = 0 }")],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("rate_limit.client.requests_per_minute"), "{e}");
    }

    #[test]
    fn flight_roles_and_client_principals_take_env_overrides_as_inline_toml() {
        let c = load(
            "[flight.roles.old]\nviews = [\"va_old\"]\n",
            &[
                (
                    "FRAISEQL_FLIGHT_ROLES",
                    r#"{ analyst = { views = ["v_post"], events = ["*"] }, etl = { put_tables = ["ta_x"] } }"#,
                ),
                (
                    "FRAISEQL_FLIGHT_CLIENT_PRINCIPALS",
                    r#"[{ subject = "CN=etl", role = "etl" }, { subject = "DNS:bi.internal", role = "analyst" }]"#,
                ),
            ],
        )
        .unwrap();
        let roles = &c.flight.roles;
        // The variable replaces the file's table, as for every other key.
        assert_eq!(
            roles.keys().collect::<Vec<_>>(),
            ["analyst", "etl"],
            "{roles:?}"
        );
        assert_eq!(roles["analyst"].views, ["v_post"]);
        assert!(roles["analyst"].may_read_events(Some("Order")));
        assert_eq!(roles["etl"].put_tables, ["ta_x"]);
        let p = &c.flight.client_principals;
        assert_eq!(p.len(), 2);
        assert_eq!(
            (p[0].subject.as_str(), p[0].role.as_str()),
            ("CN=etl", "etl")
        );
        assert_eq!(p[1].subject, "DNS:bi.internal");
        assert!(
            c.origins
                .of("flight.roles")
                .contains("FRAISEQL_FLIGHT_ROLES"),
            "{}",
            c.origins.of("flight.roles")
        );

        // Wrong shapes are refused by key, naming the variable or the field.
        let e = load("", &[("FRAISEQL_FLIGHT_ROLES", "{ analyst = { views = [")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("FRAISEQL_FLIGHT_ROLES"), "{e}");
        let e = load(
            "",
            &[(
                "FRAISEQL_FLIGHT_ROLES",
                r#"{ analyst = { view = ["v_post"] } }"#,
            )],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("unknown field `view`"), "{e}");
        let e = load(
            "",
            &[(
                "FRAISEQL_FLIGHT_CLIENT_PRINCIPALS",
                r#"[{ subject = "CN=etl" }]"#,
            )],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("role"), "{e}");
    }

    #[test]
    fn sections_with_underscores_take_env_overrides() {
        let c = load("", &[("FRAISEQL_OBSERVER_RUNTIME_CONCURRENCY", "3")]).unwrap();
        assert_eq!(c.observer_runtime.concurrency, 3);
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
