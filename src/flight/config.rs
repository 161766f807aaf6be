//! The `[flight]` section of the configuration file: where the Flight server listens, how
//! big its batches are, who may call it (bearer tokens, TLS, mutual TLS) and which `ta_`
//! tables accept DoPut. Parsing is strict (unknown keys are errors) and [`FlightConfig::validate`]
//! names the offending key, so a typo never silently weakens security.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Errors in the `[flight]` section; each names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("flight.{key}: {message}")]
    Invalid { key: &'static str, message: String },
    #[error("flight.tokens_env: environment variable {var} is not set or empty")]
    TokensEnvMissing { var: String },
    #[error("flight.{key}: cannot read {path}: {message}")]
    File {
        key: &'static str,
        path: PathBuf,
        message: String,
    },
}

impl ConfigError {
    /// The dotted key the error is about.
    pub fn key(&self) -> String {
        match self {
            ConfigError::Invalid { key, .. } | ConfigError::File { key, .. } => {
                format!("flight.{key}")
            }
            ConfigError::TokensEnvMissing { .. } => "flight.tokens_env".into(),
        }
    }
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

/// The `[flight]` TOML section.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlightConfig {
    /// Address to listen on (`fraiseql flight --listen` overrides it).
    pub listen: String,
    /// Rows per Arrow record batch.
    pub batch_rows: usize,
    /// Accepted bearer tokens. Never logged (`Debug` redacts them).
    pub tokens: Vec<String>,
    /// Name of an environment variable holding more tokens, separated by commas or
    /// whitespace, so secrets can stay out of the file.
    pub tokens_env: Option<String>,
    /// PEM server certificate chain; enables TLS together with `tls_key`.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// PEM CA bundle for client certificates: when set, every client must present a
    /// certificate signed by it (mutual TLS).
    pub client_ca: Option<PathBuf>,
    /// Allows plaintext gRPC on a non-loopback address (behind a TLS-terminating proxy).
    pub allow_plaintext_non_loopback: bool,
    /// `ta_` tables that DoPut may append to. Empty: DoPut is refused.
    pub put_tables: Vec<String>,
    /// Largest ticket (and command descriptor) accepted, in bytes.
    pub max_ticket_bytes: usize,
    /// How often a `follow` events stream polls for new rows when no wake-up arrives, in
    /// milliseconds.
    pub follow_poll_ms: u64,
    /// Largest DoPut message accepted, in bytes (one encoded record batch).
    pub max_put_message_bytes: usize,
    /// What each role of a verified token (`[auth]`) may read and write through Flight,
    /// keyed by role. A role not listed may run GraphQL tickets only (the schema's rules
    /// apply there); static service tokens are unrestricted.
    pub roles: BTreeMap<String, RoleAccess>,
    /// Mutual TLS: client certificates whose subject maps to a principal with a role
    /// (`[[flight.client_principals]]`), used when a call carries no token.
    pub client_principals: Vec<ClientPrincipal>,
}

/// `[[flight.client_principals]]`: a client certificate name and the role it acts as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientPrincipal {
    /// `CN=<common name>`, `DNS:<name>`, `URI:<uri>` or `email:<address>`: the subject's
    /// common name or one of the certificate's subject alternative names, exactly.
    pub subject: String,
    /// The role: checked against `[flight.roles]`, and switched to with `SET LOCAL ROLE`
    /// when it is one of `auth.db_roles` (a role outside a non-empty `db_roles` is refused).
    pub role: String,
}

/// The prefixes a principal's `subject` may have.
pub const SUBJECT_KINDS: &[&str] = &["CN=", "DNS:", "URI:", "email:"];

/// `[flight.roles.<role>]`: the allow-lists of one role. Names are exact; `"*"` in
/// `events` allows every entity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoleAccess {
    /// `va_`/`ta_` views and tables its view tickets may read (and ListFlights shows).
    pub views: Vec<String>,
    /// Change-log entities its events tickets may read (the ticket must name one), or
    /// `["*"]` for the whole change log.
    pub events: Vec<String>,
    /// Tables of `flight.put_tables` its DoPut may append to.
    pub put_tables: Vec<String>,
}

impl RoleAccess {
    pub fn may_read(&self, view: &str) -> bool {
        self.views.iter().any(|v| v == view)
    }

    /// Events of `entity` (`None`: the whole change log).
    pub fn may_read_events(&self, entity: Option<&str>) -> bool {
        self.events.iter().any(|e| e == "*")
            || entity.is_some_and(|n| self.events.iter().any(|e| e == n))
    }

    pub fn may_put(&self, table: &str) -> bool {
        self.put_tables.iter().any(|t| t == table)
    }
}

impl Default for FlightConfig {
    fn default() -> Self {
        FlightConfig {
            listen: "127.0.0.1:50051".into(),
            batch_rows: 65_536,
            tokens: Vec::new(),
            tokens_env: None,
            tls_cert: None,
            tls_key: None,
            client_ca: None,
            allow_plaintext_non_loopback: false,
            put_tables: Vec::new(),
            max_ticket_bytes: 16 * 1024,
            follow_poll_ms: 500,
            max_put_message_bytes: 64 * 1024 * 1024,
            roles: BTreeMap::new(),
            client_principals: Vec::new(),
        }
    }
}

// Tokens are secrets: Debug shows how many there are, never their values.
impl fmt::Debug for FlightConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlightConfig")
            .field("listen", &self.listen)
            .field("batch_rows", &self.batch_rows)
            .field("tokens", &format_args!("[{} redacted]", self.tokens.len()))
            .field("tokens_env", &self.tokens_env)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("client_ca", &self.client_ca)
            .field(
                "allow_plaintext_non_loopback",
                &self.allow_plaintext_non_loopback,
            )
            .field("put_tables", &self.put_tables)
            .field("max_ticket_bytes", &self.max_ticket_bytes)
            .field("follow_poll_ms", &self.follow_poll_ms)
            .field("max_put_message_bytes", &self.max_put_message_bytes)
            .field("roles", &self.roles)
            .field("client_principals", &self.client_principals)
            .finish()
    }
}

/// Largest batch accepted: bigger batches only cost memory (and gRPC messages are split
/// anyway).
const MAX_BATCH_ROWS: usize = 1 << 22;

impl FlightConfig {
    /// Parses a `[flight]` table given as TOML text (the section body, or a document with a
    /// `[flight]` table).
    pub fn from_toml(text: &str) -> Result<FlightConfig, ConfigError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Doc {
            flight: FlightConfig,
        }
        let cfg = match toml::from_str::<Doc>(text) {
            Ok(doc) => doc.flight,
            Err(_) => toml::from_str::<FlightConfig>(text)
                .map_err(|e| invalid("(section)", e.message().to_string()))?,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// The listen address, parsed.
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen.parse().map_err(|_| {
            invalid(
                "listen",
                format!("{:?} is not an address like 127.0.0.1:50051", self.listen),
            )
        })
    }

    /// Whether TLS is configured.
    pub fn tls_enabled(&self) -> bool {
        self.tls_cert.is_some()
    }

    /// Checks every key; the error names the first bad one. Without `[auth]` a bearer
    /// token is required (see [`FlightConfig::validate_with`]).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_with(false)
    }

    /// Checks every key; with `auth_configured` (an `[auth]` section verifies JWTs) the
    /// static tokens are optional, since tokens of the identity provider are accepted.
    pub fn validate_with(&self, auth_configured: bool) -> Result<(), ConfigError> {
        self.listen_addr()?;
        if self.batch_rows == 0 || self.batch_rows > MAX_BATCH_ROWS {
            return Err(invalid(
                "batch_rows",
                format!("must be between 1 and {MAX_BATCH_ROWS}"),
            ));
        }
        if self.max_ticket_bytes < 64 || self.max_ticket_bytes > 1024 * 1024 {
            return Err(invalid(
                "max_ticket_bytes",
                "must be between 64 and 1048576",
            ));
        }
        if self.follow_poll_ms == 0 {
            return Err(invalid("follow_poll_ms", "must be at least 1"));
        }
        if self.max_put_message_bytes < 1024 {
            return Err(invalid("max_put_message_bytes", "must be at least 1024"));
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => return Err(invalid("tls_key", "required when tls_cert is set")),
            (None, Some(_)) => return Err(invalid("tls_cert", "required when tls_key is set")),
            _ => {}
        }
        if self.client_ca.is_some() && self.tls_cert.is_none() {
            return Err(invalid(
                "client_ca",
                "mutual TLS needs tls_cert and tls_key as well",
            ));
        }
        if self.tokens.iter().any(|t| t.trim().is_empty()) {
            return Err(invalid("tokens", "tokens must not be empty strings"));
        }
        if !self.client_principals.is_empty() && self.client_ca.is_none() {
            return Err(invalid(
                "client_principals",
                "client certificates are only verified with mutual TLS: set client_ca",
            ));
        }
        for p in &self.client_principals {
            let name = SUBJECT_KINDS
                .iter()
                .find_map(|k| p.subject.strip_prefix(k))
                .ok_or_else(|| {
                    invalid(
                        "client_principals",
                        format!(
                            "subject {:?} must start with one of {SUBJECT_KINDS:?}",
                            p.subject
                        ),
                    )
                })?;
            if name.is_empty() || p.role.trim().is_empty() {
                return Err(invalid(
                    "client_principals",
                    "subject names and roles must not be empty",
                ));
            }
        }
        if self.tokens.is_empty()
            && self.tokens_env.is_none()
            && !auth_configured
            && self.client_principals.is_empty()
        {
            return Err(invalid(
                "tokens",
                "at least one bearer token is required (set tokens or tokens_env, or configure \
                 [auth] to accept JWTs)",
            ));
        }
        for (role, access) in &self.roles {
            if role.trim().is_empty() {
                return Err(invalid("roles", "a role name must not be empty"));
            }
            for v in &access.views {
                if !(v.starts_with("va_") || v.starts_with("ta_")) {
                    return Err(invalid(
                        "roles",
                        format!("roles.{role}.views: {v:?} is not a va_/ta_ view or table"),
                    ));
                }
            }
            if access.events.iter().any(|e| e.trim().is_empty()) {
                return Err(invalid(
                    "roles",
                    format!("roles.{role}.events: entity names must not be empty"),
                ));
            }
            for t in &access.put_tables {
                if !self.put_tables.contains(t) {
                    return Err(invalid(
                        "roles",
                        format!(
                            "roles.{role}.put_tables: {t:?} is not in flight.put_tables, so no \
                             DoPut may write it"
                        ),
                    ));
                }
            }
        }
        for t in &self.put_tables {
            if !t.starts_with("ta_") {
                return Err(invalid(
                    "put_tables",
                    format!("{t:?} is not a ta_ table; only ta_ tables accept DoPut"),
                ));
            }
        }
        Ok(())
    }

    /// With a non-empty `auth.db_roles`, every principal's role must be one of them: any
    /// other would be refused on every call, so it is refused at start instead.
    pub fn check_principal_roles(&self, db_roles: &[String]) -> Result<(), ConfigError> {
        if db_roles.is_empty() {
            return Ok(());
        }
        match self
            .client_principals
            .iter()
            .find(|p| !db_roles.contains(&p.role))
        {
            Some(p) => Err(invalid(
                "client_principals",
                format!(
                    "the role {:?} of {:?} is not in auth.db_roles, so its calls would all be \
                     refused",
                    p.role, p.subject
                ),
            )),
            None => Ok(()),
        }
    }

    /// All accepted tokens: `tokens` plus those in the `tokens_env` variable.
    pub fn resolved_tokens(&self) -> Result<Vec<String>, ConfigError> {
        let mut out = self.tokens.clone();
        if let Some(var) = &self.tokens_env {
            let value = std::env::var(var).unwrap_or_default();
            let from_env: Vec<String> = value
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
            if from_env.is_empty() {
                return Err(ConfigError::TokensEnvMissing { var: var.clone() });
            }
            out.extend(from_env);
        }
        Ok(out)
    }

    /// Reads a PEM file named by `key`.
    pub(crate) fn read_pem(key: &'static str, path: &PathBuf) -> Result<Vec<u8>, ConfigError> {
        std::fs::read(path).map_err(|e| ConfigError::File {
            key,
            path: path.clone(),
            message: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_a_token() {
        let err = FlightConfig::default().validate().unwrap_err().to_string();
        assert!(err.contains("flight.tokens"), "{err}");
    }

    #[test]
    fn client_principals_need_mutual_tls_and_a_known_subject_kind() {
        let p = |subject: &str| ClientPrincipal {
            subject: subject.into(),
            role: "etl".into(),
        };
        let mtls = FlightConfig {
            tls_cert: Some("c.pem".into()),
            tls_key: Some("k.pem".into()),
            client_ca: Some("ca.pem".into()),
            client_principals: vec![p("CN=etl"), p("DNS:etl.internal")],
            ..Default::default()
        };
        assert!(mtls.validate().is_ok(), "principals stand in for tokens");
        assert!(mtls.check_principal_roles(&[]).is_ok());
        assert!(mtls.check_principal_roles(&["etl".into()]).is_ok());
        let err = mtls
            .check_principal_roles(&["web".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("not in auth.db_roles"), "{err}");
        for (cfg, says) in [
            (
                FlightConfig {
                    client_ca: None,
                    ..mtls.clone()
                },
                "client_ca",
            ),
            (
                FlightConfig {
                    client_principals: vec![p("etl")],
                    ..mtls.clone()
                },
                "must start with",
            ),
            (
                FlightConfig {
                    client_principals: vec![p("CN=")],
                    ..mtls.clone()
                },
                "must not be empty",
            ),
        ] {
            let err = cfg.validate().unwrap_err().to_string();
            assert!(
                err.starts_with("flight.client_principals") && err.contains(says),
                "{err}"
            );
        }
    }

    #[test]
    fn tokens_are_optional_with_auth() {
        assert!(FlightConfig::default().validate_with(true).is_ok());
    }

    #[test]
    fn role_allow_lists_parse_and_are_checked() {
        let cfg = FlightConfig::from_toml(
            "[flight]\ntokens = [\"t\"]\nput_tables = [\"ta_r\"]\n\
             [flight.roles.analyst]\nviews = [\"va_orders\"]\nevents = [\"Order\"]\n\
             put_tables = [\"ta_r\"]\n",
        )
        .unwrap();
        let a = &cfg.roles["analyst"];
        assert!(a.may_read("va_orders") && !a.may_read("va_other"));
        assert!(a.may_read_events(Some("Order")) && !a.may_read_events(Some("User")));
        assert!(!a.may_read_events(None), "the whole change log needs \"*\"");
        assert!(a.may_put("ta_r") && !a.may_put("ta_x"));
        let all = RoleAccess {
            events: vec!["*".into()],
            ..Default::default()
        };
        assert!(all.may_read_events(None));
        for bad in [
            "[flight.roles.a]\nviews = [\"tb_user\"]\n",
            "[flight.roles.a]\nput_tables = [\"ta_r\"]\n",
            "[flight.roles.a]\nevents = [\"\"]\n",
            "[flight.roles.a]\nview = [\"va_x\"]\n",
        ] {
            let err = FlightConfig::from_toml(&format!("[flight]\ntokens = [\"t\"]\n{bad}"))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("roles") || err.contains("view"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn parses_section_and_rejects_unknown_keys() {
        let cfg =
            FlightConfig::from_toml("[flight]\ntokens = [\"s3cret\"]\nbatch_rows = 10\n").unwrap();
        assert_eq!(cfg.batch_rows, 10);
        assert_eq!(cfg.listen, "127.0.0.1:50051");
        let err = FlightConfig::from_toml("[flight]\ntokens = [\"x\"]\nbatch_row = 10\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("batch_row"), "{err}");
    }

    #[test]
    fn debug_redacts_tokens() {
        let cfg = FlightConfig {
            tokens: vec!["s3cret-value".into()],
            ..Default::default()
        };
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("s3cret-value"), "{shown}");
    }

    #[test]
    fn validation_names_the_key() {
        let base = FlightConfig {
            tokens: vec!["t".into()],
            ..Default::default()
        };
        let cases: Vec<(FlightConfig, &str)> = vec![
            (
                FlightConfig {
                    listen: "nope".into(),
                    ..base.clone()
                },
                "flight.listen",
            ),
            (
                FlightConfig {
                    batch_rows: 0,
                    ..base.clone()
                },
                "flight.batch_rows",
            ),
            (
                FlightConfig {
                    tls_cert: Some("c.pem".into()),
                    ..base.clone()
                },
                "flight.tls_key",
            ),
            (
                FlightConfig {
                    client_ca: Some("ca.pem".into()),
                    ..base.clone()
                },
                "flight.client_ca",
            ),
            (
                FlightConfig {
                    put_tables: vec!["tb_user".into()],
                    ..base.clone()
                },
                "flight.put_tables",
            ),
        ];
        for (cfg, key) in cases {
            let err = cfg.validate().unwrap_err().to_string();
            assert!(err.starts_with(key), "{err} should name {key}");
        }
    }

    #[test]
    fn tokens_env_is_read() {
        // Setting a variable needs `unsafe` in edition 2024, so this checks the missing
        // case; the integration tests set it for a child process.
        let var = "FRAISEQL_TEST_FLIGHT_TOKENS_ENV_UNSET";
        let cfg = FlightConfig {
            tokens_env: Some(var.into()),
            ..Default::default()
        };
        assert!(cfg.validate().is_ok());
        let err = cfg.resolved_tokens().unwrap_err().to_string();
        assert!(err.contains(var), "{err}");
        // cargo and nextest set CARGO_PKG_NAME for the test process: read it as a token.
        if std::env::var("CARGO_PKG_NAME").is_ok() {
            let cfg = FlightConfig {
                tokens: vec!["file-token".into()],
                tokens_env: Some("CARGO_PKG_NAME".into()),
                ..Default::default()
            };
            assert_eq!(
                cfg.resolved_tokens().unwrap(),
                vec!["file-token".to_string(), "fraiseql".to_string()]
            );
        }
    }
}
