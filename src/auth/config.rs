//! `[auth]` and its `[[auth.jwt]]` verifiers: who may call the API and what a verified token
//! means to PostgreSQL. Owned by [`crate::auth`]; validated here so `check` and every role
//! refuse the same mistakes before anything listens.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::setting::Invalid;

/// What a request without a token gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// No token: 401. The default once `[auth]` is present.
    #[default]
    Required,
    /// No token: the request runs as `anonymous_role`. An invalid token is still 401.
    Optional,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub mode: AuthMode,
    /// The role of requests without a token (`mode = "optional"`) and of tokens without a
    /// role claim.
    pub anonymous_role: String,
    /// Path into the claims to the role: `role`, `app_metadata.role`, or with a quoted
    /// segment `"https://hasura.io/jwt/claims".x-hasura-default-role`.
    pub role_claim: String,
    /// Path to the scopes: a space-separated string or an array of strings. `scp` is read
    /// when this claim is absent.
    pub scope_claim: String,
    /// Path to the actor type, for the SDK's `requires_actor`.
    pub actor_claim: String,
    /// Path to the tenant, written to the change log's `tenant_id` of the request's writes.
    pub tenant_claim: String,
    /// Roles that `SET LOCAL ROLE` may switch to. Empty: the login role is kept. Not empty:
    /// every request runs as one of them, and a token whose role is not listed is refused.
    pub db_roles: Vec<String>,
    /// Longest accepted token, in bytes (the whole `Authorization` value).
    pub max_token_bytes: usize,
    /// GraphiQL and introspection for authenticated users; off by default when
    /// `mode = "required"`, on when `"optional"`.
    pub introspection: Option<bool>,
    /// Setting → claim path (`$` for the whole claims object as JSON), set with
    /// `set_config(name, value, true)` in every request's transaction.
    pub settings: BTreeMap<String, String>,
    pub jwt: Vec<JwtConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            mode: AuthMode::Required,
            anonymous_role: "anon".into(),
            role_claim: "role".into(),
            scope_claim: "scope".into(),
            actor_claim: "actor_type".into(),
            tenant_claim: "tenant_id".into(),
            db_roles: Vec::new(),
            max_token_bytes: 8192,
            introspection: None,
            settings: BTreeMap::new(),
            jwt: Vec::new(),
        }
    }
}

/// One verifier: an issuer, its algorithms and where its keys come from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwtConfig {
    /// Accepted `alg` values; the token's header only picks among these.
    pub algorithms: Vec<String>,
    /// A JSON Web Key Set, fetched at start and refreshed in the background.
    pub jwks_url: Option<String>,
    /// A PEM public key, a JWK or a JWK Set on disk.
    pub public_key_file: Option<PathBuf>,
    /// The environment variable holding an HMAC secret.
    pub secret_env: Option<String>,
    /// A file holding an HMAC secret (trailing newline ignored).
    pub secret_file: Option<PathBuf>,
    /// The expected `iss`; tokens are routed to the verifier of their issuer.
    pub issuer: Option<String>,
    /// Accepted `aud` values (any one must match); empty: `aud` is not checked.
    pub audience: Vec<String>,
    /// Clock skew allowed on `exp`, `nbf` and `iat`, in seconds.
    pub leeway_s: u64,
    /// Claims a token must carry.
    pub required_claims: Vec<String>,
    /// JWKS refresh when the response has no usable `Cache-Control: max-age`, and the floor
    /// and ceiling applied to one that has.
    pub jwks_refresh_s: u64,
    pub jwks_min_refresh_s: u64,
    pub jwks_max_refresh_s: u64,
    /// After a token names an unknown `kid`, at most one refetch per this many seconds.
    pub jwks_unknown_kid_cooldown_s: u64,
    pub jwks_timeout_ms: u64,
    pub jwks_max_bytes: usize,
}

impl Default for JwtConfig {
    fn default() -> Self {
        JwtConfig {
            algorithms: vec!["RS256".into()],
            jwks_url: None,
            public_key_file: None,
            secret_env: None,
            secret_file: None,
            issuer: None,
            audience: Vec::new(),
            leeway_s: 30,
            required_claims: vec!["exp".into()],
            jwks_refresh_s: 300,
            jwks_min_refresh_s: 60,
            jwks_max_refresh_s: 86_400,
            jwks_unknown_kid_cooldown_s: 30,
            jwks_timeout_ms: 5_000,
            jwks_max_bytes: 1 << 20,
        }
    }
}

/// Algorithms this build verifies.
pub const ALGORITHMS: &[&str] = &[
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256",
    "ES384", "EdDSA",
];

/// A PostgreSQL custom setting name: two or more dotted identifier parts.
fn valid_setting_name(name: &str) -> bool {
    let parts: Vec<&str> = name.split('.').collect();
    parts.len() >= 2
        && parts.iter().all(|p| {
            let mut c = p.chars();
            c.next().is_some_and(|f| f.is_ascii_lowercase() || f == '_')
                && c.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
}

impl AuthConfig {
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.jwt.is_empty() {
            return Err(Invalid::new(
                "auth.jwt",
                "at least one [[auth.jwt]] verifier (jwks_url, public_key_file, secret_env or \
                 secret_file)",
            ));
        }
        if !(256..=1 << 20).contains(&self.max_token_bytes) {
            return Err(Invalid::new(
                "auth.max_token_bytes",
                "must be between 256 and 1048576",
            ));
        }
        for (key, path) in [
            ("auth.role_claim", &self.role_claim),
            ("auth.scope_claim", &self.scope_claim),
            ("auth.actor_claim", &self.actor_claim),
            ("auth.tenant_claim", &self.tenant_claim),
        ] {
            super::claims::ClaimPath::parse(path)
                .map_err(|e| Invalid::new(key, format!("a claim path: {e}")))?;
        }
        for (name, path) in &self.settings {
            if !valid_setting_name(name) || name.starts_with("fraiseql.") {
                return Err(Invalid::new(
                    format!("auth.settings.\"{name}\""),
                    "a custom setting name such as app.user_id (lowercase, dotted; fraiseql.* is \
                     reserved)",
                ));
            }
            if path != "$" {
                super::claims::ClaimPath::parse(path).map_err(|e| {
                    Invalid::new(
                        format!("auth.settings.\"{name}\""),
                        format!("a claim path or \"$\": {e}"),
                    )
                })?;
            }
        }
        for role in &self.db_roles {
            if role.is_empty() || role.len() > 63 {
                return Err(Invalid::new("auth.db_roles", "role names of 1 to 63 bytes"));
            }
        }
        if !self.db_roles.is_empty() && !self.db_roles.contains(&self.anonymous_role) {
            return Err(Invalid::new(
                "auth.anonymous_role",
                format!(
                    "one of auth.db_roles when db_roles is set (every request runs as one of them), \
                     found \"{}\"",
                    self.anonymous_role
                ),
            ));
        }
        for (i, j) in self.jwt.iter().enumerate() {
            j.validate(i)?;
        }
        Ok(())
    }

    /// Whether introspection and GraphiQL are served.
    pub fn introspection_enabled(&self) -> bool {
        self.introspection
            .unwrap_or(self.mode == AuthMode::Optional)
    }
}

impl JwtConfig {
    fn validate(&self, i: usize) -> Result<(), Invalid> {
        let key = |k: &str| format!("auth.jwt[{i}].{k}");
        if self.algorithms.is_empty() {
            return Err(Invalid::new(key("algorithms"), "at least one algorithm"));
        }
        for a in &self.algorithms {
            if !ALGORITHMS.contains(&a.as_str()) {
                return Err(Invalid::new(
                    key("algorithms"),
                    format!("one of {}, found \"{a}\"", ALGORITHMS.join(", ")),
                ));
            }
        }
        let hmac = self.algorithms.iter().any(|a| a.starts_with("HS"));
        let public = self.algorithms.iter().any(|a| !a.starts_with("HS"));
        if hmac && public {
            return Err(Invalid::new(
                key("algorithms"),
                "HMAC (HS*) and public-key algorithms in separate [[auth.jwt]] verifiers: a \
                 public key must never be usable as an HMAC secret",
            ));
        }
        let sources = [
            self.jwks_url.is_some(),
            self.public_key_file.is_some(),
            self.secret_env.is_some(),
            self.secret_file.is_some(),
        ]
        .iter()
        .filter(|s| **s)
        .count();
        if sources != 1 {
            return Err(Invalid::new(
                key("jwks_url"),
                "exactly one key source: jwks_url, public_key_file, secret_env or secret_file",
            ));
        }
        let secret = self.secret_env.is_some() || self.secret_file.is_some();
        if secret != hmac {
            return Err(Invalid::new(
                key("algorithms"),
                "HS* algorithms with secret_env/secret_file, public-key algorithms with jwks_url \
                 or public_key_file",
            ));
        }
        if let Some(url) = &self.jwks_url {
            let ok = reqwest::Url::parse(url)
                .map(|u| matches!(u.scheme(), "https" | "http") && u.host().is_some())
                .unwrap_or(false);
            if !ok {
                return Err(Invalid::new(key("jwks_url"), "an http(s) URL"));
            }
        }
        if self.jwks_min_refresh_s == 0 || self.jwks_min_refresh_s > self.jwks_max_refresh_s {
            return Err(Invalid::new(
                key("jwks_min_refresh_s"),
                "at least 1 and at most jwks_max_refresh_s",
            ));
        }
        if self.jwks_timeout_ms == 0 || self.jwks_max_bytes == 0 {
            return Err(Invalid::new(
                key("jwks_timeout_ms"),
                "jwks_timeout_ms and jwks_max_bytes must be at least 1",
            ));
        }
        if self.leeway_s > 3600 {
            return Err(Invalid::new(key("leeway_s"), "at most 3600"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hs() -> JwtConfig {
        JwtConfig {
            algorithms: vec!["HS256".into()],
            secret_env: Some("S".into()),
            ..Default::default()
        }
    }

    #[test]
    fn verifiers_and_settings_are_checked() {
        let ok = AuthConfig {
            jwt: vec![hs()],
            ..Default::default()
        };
        ok.validate().unwrap();
        let none = AuthConfig::default();
        assert_eq!(none.validate().unwrap_err().key, "auth.jwt");
        let mixed = AuthConfig {
            jwt: vec![JwtConfig {
                algorithms: vec!["HS256".into(), "RS256".into()],
                ..hs()
            }],
            ..Default::default()
        };
        assert!(mixed.validate().unwrap_err().expected.contains("separate"));
        let alg_none = AuthConfig {
            jwt: vec![JwtConfig {
                algorithms: vec!["none".into()],
                ..hs()
            }],
            ..Default::default()
        };
        assert_eq!(
            alg_none.validate().unwrap_err().key,
            "auth.jwt[0].algorithms"
        );
        let mut bad_setting = ok.clone();
        bad_setting
            .settings
            .insert("search_path".into(), "sub".into());
        assert!(bad_setting.validate().is_err());
        let mut reserved = ok.clone();
        reserved
            .settings
            .insert("fraiseql.skip_tracking".into(), "sub".into());
        assert!(reserved.validate().is_err());
        let roles = AuthConfig {
            db_roles: vec!["web_user".into()],
            ..ok.clone()
        };
        assert_eq!(roles.validate().unwrap_err().key, "auth.anonymous_role");
    }
}
