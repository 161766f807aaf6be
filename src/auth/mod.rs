//! Authentication: who a request is, decided once per request for both doors (HTTP GraphQL
//! and Arrow Flight), and what that identity means to PostgreSQL.
//!
//! [`Authenticator`] holds the `[[auth.jwt]]` verifiers ([`keys`] for where their keys come
//! from). Each door hands it the `Authorization` value and gets an [`Identity`] or an
//! [`AuthError`] (HTTP 401/403, Flight `UNAUTHENTICATED`/`PERMISSION_DENIED`) — before any
//! statement runs. The identity carries the role, scopes, actor and claims the GraphQL
//! engine checks the schema's rules against, and the [`RequestContext`] that
//! [`crate::db::Session`] turns into `SET LOCAL ROLE` and transaction-local settings.
//!
//! Tokens are routed by their (unverified) `iss` to the verifier of that issuer; the
//! algorithm must be on that verifier's list (the header only picks among them, `none` is
//! never one) and the key must be of the algorithm's family, so a public key can never be
//! used as an HMAC secret. Header fields that point elsewhere (`jku`, `x5u`, `jwk`, `x5c`)
//! are never read.

pub mod claims;
pub mod config;
pub mod keys;

use std::collections::BTreeSet;
use std::sync::Arc;

use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};
use sha2::Digest as _;
use tokio_util::sync::CancellationToken;

pub use config::{AuthConfig, AuthMode, JwtConfig};

use crate::db::RequestContext;
use claims::ClaimPath;
use keys::{KeyError, KeySource, KeyStatus};

/// Why a request was refused before anything ran. Messages are general (they never echo
/// the token or a claim value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("authentication required: send \"Authorization: Bearer <token>\"")]
    Missing,
    #[error("malformed token")]
    Malformed,
    #[error("token too large")]
    TooLarge,
    #[error("token algorithm not accepted")]
    Algorithm,
    #[error("token signed with an unknown key")]
    UnknownKey,
    #[error("invalid token signature")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token not valid yet")]
    NotYetValid,
    #[error("token issuer not accepted")]
    Issuer,
    #[error("token audience not accepted")]
    Audience,
    #[error("token lacks the required claim \"{0}\"")]
    MissingClaim(String),
    #[error("the token's role is not one this server may switch to")]
    RoleNotAllowed,
}

impl AuthError {
    /// The `outcome` label of `fraiseql_auth_requests_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Malformed => "malformed",
            AuthError::TooLarge => "too_large",
            AuthError::Algorithm => "algorithm",
            AuthError::UnknownKey => "unknown_key",
            AuthError::BadSignature => "bad_signature",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::Issuer => "issuer",
            AuthError::Audience => "audience",
            AuthError::MissingClaim(_) => "missing_claim",
            AuthError::RoleNotAllowed => "role_not_allowed",
        }
    }

    /// True for a valid token that may not be used (403), false for no valid token (401).
    pub fn is_forbidden(&self) -> bool {
        matches!(self, AuthError::RoleNotAllowed)
    }

    /// The RFC 6750 challenge for a 401.
    pub fn challenge(&self) -> String {
        match self {
            AuthError::Missing => "Bearer".to_string(),
            other => format!(
                "Bearer error=\"invalid_token\", error_description=\"{}\"",
                other.to_string().replace('"', "'")
            ),
        }
    }
}

/// Which door a request came through, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    Http,
    Flight,
}

impl Door {
    fn label(self) -> &'static str {
        match self {
            Door::Http => "http",
            Door::Flight => "flight",
        }
    }
}

/// Who a request is, as the engine and the database see it.
#[derive(Debug, Clone)]
pub struct Identity {
    /// No `[auth]`, or a Flight service token: every schema rule passes.
    unrestricted: bool,
    anonymous: bool,
    role: String,
    subject: Option<String>,
    scopes: BTreeSet<String>,
    actor: Option<String>,
    claims: Arc<Map<String, Value>>,
    context: RequestContext,
    /// [`Identity::request_context`] plus the change log's actor and tenant.
    write_context: RequestContext,
}

impl Identity {
    /// The identity of every request when `[auth]` is not configured (and of Flight's
    /// static service tokens): nothing is set in the database and no schema rule refuses.
    pub fn unrestricted() -> Identity {
        Identity {
            unrestricted: true,
            anonymous: false,
            role: String::new(),
            subject: None,
            scopes: BTreeSet::new(),
            actor: None,
            claims: Arc::new(Map::new()),
            context: RequestContext::anonymous(),
            write_context: RequestContext::anonymous(),
        }
    }

    /// A principal authenticated by other means than a token (a Flight client certificate)
    /// acting as `role`: with a non-empty `db_roles` the role must be one of them and is
    /// switched to, as for a token's role claim; `subject` is the change log's actor.
    pub fn principal(
        subject: &str,
        role: &str,
        db_roles: &[String],
    ) -> Result<Identity, AuthError> {
        let mut context = RequestContext::anonymous();
        if !db_roles.is_empty() {
            if !db_roles.iter().any(|r| r == role) {
                return Err(AuthError::RoleNotAllowed);
            }
            context = context.with_role(role);
        }
        Ok(Identity {
            unrestricted: false,
            anonymous: false,
            role: role.to_string(),
            subject: Some(subject.to_string()),
            scopes: BTreeSet::new(),
            actor: None,
            claims: Arc::new(Map::new()),
            write_context: context.clone().with_setting("fraiseql.actor", subject),
            context,
        })
    }

    pub fn is_unrestricted(&self) -> bool {
        self.unrestricted
    }
    pub fn is_anonymous(&self) -> bool {
        self.anonymous
    }
    pub fn role(&self) -> &str {
        &self.role
    }
    pub fn subject(&self) -> Option<&str> {
        self.subject.as_deref()
    }
    pub fn actor(&self) -> Option<&str> {
        self.actor.as_deref()
    }
    pub fn claims(&self) -> &Map<String, Value> {
        &self.claims
    }

    /// True when the role is one of the configured `auth.db_roles` (the request runs as
    /// it): a value the operator chose, bounded by the config, so fit for a metric label.
    pub fn is_db_role(&self) -> bool {
        !self.role.is_empty() && self.context.role() == Some(self.role.as_str())
    }

    pub fn has_role(&self, role: &str) -> bool {
        self.unrestricted || self.role == role
    }

    pub fn has_scope(&self, scope: &str) -> bool {
        self.unrestricted || self.scopes.contains(scope)
    }

    /// The claim at `path` (see [`claims`]); a malformed path finds nothing.
    pub fn claim(&self, path: &str) -> Option<&Value> {
        ClaimPath::parse(path).ok()?.lookup(&self.claims)
    }

    /// What the database is told about this request's reads.
    pub fn request_context(&self) -> &RequestContext {
        &self.context
    }

    /// What the database is told about this request's writes (mutations, DoPut): the read
    /// context plus `fraiseql.actor` (the `sub`) and `fraiseql.tenant_id`, which the change
    /// log's triggers record.
    pub fn write_context(&self) -> &RequestContext {
        &self.write_context
    }
}

struct Verifier {
    issuer: Option<String>,
    /// Each accepted algorithm with its validation (jsonwebtoken checks every listed
    /// algorithm against the key's family, so one list per algorithm).
    validations: Vec<(Algorithm, Validation)>,
    /// Required claims jsonwebtoken does not check itself (anything but exp/nbf/aud/iss/sub).
    required_other: Vec<String>,
    leeway: u64,
    keys: KeySource,
}

/// Claims jsonwebtoken checks for presence itself.
const SPEC_CLAIMS: &[&str] = &["exp", "nbf", "aud", "iss", "sub"];

impl Verifier {
    async fn new(cfg: &JwtConfig, index: usize) -> Result<Verifier, KeyError> {
        let algorithms: Vec<Algorithm> = cfg
            .algorithms
            .iter()
            .filter_map(|a| a.parse().ok())
            .collect();
        let mut validation = Validation::new(algorithms[0]);
        validation.algorithms = algorithms.clone();
        validation.leeway = cfg.leeway_s;
        validation.validate_nbf = true;
        validation.validate_exp = true;
        let mut required: Vec<String> = cfg
            .required_claims
            .iter()
            .filter(|c| SPEC_CLAIMS.contains(&c.as_str()))
            .cloned()
            .collect();
        if let Some(iss) = &cfg.issuer {
            validation.set_issuer(&[iss]);
            required.push("iss".into());
        }
        if cfg.audience.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&cfg.audience);
            required.push("aud".into());
        }
        validation.required_spec_claims = required.into_iter().collect();
        let validations = algorithms
            .iter()
            .map(|a| {
                let mut v = validation.clone();
                v.algorithms = vec![*a];
                (*a, v)
            })
            .collect();
        Ok(Verifier {
            issuer: cfg.issuer.clone(),
            validations,
            required_other: cfg
                .required_claims
                .iter()
                .filter(|c| !SPEC_CLAIMS.contains(&c.as_str()))
                .cloned()
                .collect(),
            leeway: cfg.leeway_s,
            keys: KeySource::load(cfg, index).await?,
        })
    }

    async fn verify(
        &self,
        token: &str,
        alg: Algorithm,
        kid: Option<&str>,
    ) -> Result<Map<String, Value>, AuthError> {
        let Some((_, validation)) = self.validations.iter().find(|(a, _)| *a == alg) else {
            return Err(AuthError::Algorithm);
        };
        let keys = self.keys.candidates(alg, kid).await;
        if keys.is_empty() {
            return Err(AuthError::UnknownKey);
        }
        let mut last = AuthError::BadSignature;
        for key in &keys {
            match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, validation) {
                Ok(data) => return self.check_more(data.claims),
                Err(e) => {
                    last = map_error(e.kind());
                    if last != AuthError::BadSignature {
                        // Signed by this key: its claims are what is wrong.
                        return Err(last);
                    }
                }
            }
        }
        Err(last)
    }

    /// What jsonwebtoken leaves to the caller: other required claims, and `iat`.
    fn check_more(&self, claims: Map<String, Value>) -> Result<Map<String, Value>, AuthError> {
        for c in &self.required_other {
            if claims.get(c).is_none_or(Value::is_null) {
                return Err(AuthError::MissingClaim(c.clone()));
            }
        }
        for time in ["exp", "nbf", "iat"] {
            if claims.get(time).is_some_and(|v| !v.is_number()) {
                return Err(AuthError::Malformed);
            }
        }
        if let Some(iat) = claims.get("iat").and_then(Value::as_f64) {
            let now = jsonwebtoken::get_current_timestamp() as f64;
            if iat > now + self.leeway as f64 {
                return Err(AuthError::NotYetValid);
            }
        }
        Ok(claims)
    }
}

fn map_error(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidIssuer => AuthError::Issuer,
        ErrorKind::InvalidAudience => AuthError::Audience,
        ErrorKind::MissingRequiredClaim(c) => AuthError::MissingClaim(c.clone()),
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => AuthError::Algorithm,
        // An ES256 signature of r = s = 0 and other unusable signatures or keys.
        ErrorKind::InvalidEcdsaKey | ErrorKind::InvalidEddsaKey | ErrorKind::InvalidRsaKey(_) => {
            AuthError::BadSignature
        }
        _ => AuthError::Malformed,
    }
}

/// The verifiers and the meaning of claims, from `[auth]`.
pub struct Authenticator {
    config: AuthConfig,
    verifiers: Vec<Verifier>,
    role_claim: ClaimPath,
    scope_claim: ClaimPath,
    actor_claim: ClaimPath,
    tenant_claim: ClaimPath,
    /// Setting name → claim path; `None` for `$`, the whole claims object.
    settings: Vec<(String, Option<ClaimPath>)>,
    verified: VerifiedCache,
}

/// Tokens verified recently (by SHA-256), so a client that sends the same token on every
/// request pays for the signature once: an entry lives until the token's `exp` (plus
/// leeway) or [`VerifiedCache::TTL_S`], whichever comes first — so a key removed from a
/// JWKS stops verifying within that time. Bounded: when full, expired entries go, and if
/// none have, all.
type Claims = Arc<Map<String, Value>>;

struct VerifiedCache {
    /// Token digest → its claims and the time (Unix seconds) the entry stops serving.
    entries: std::sync::Mutex<std::collections::HashMap<[u8; 32], (Claims, u64)>>,
    leeway: u64,
}

impl VerifiedCache {
    const MAX_ENTRIES: usize = 4096;
    const TTL_S: u64 = 300;

    fn get(&self, key: &[u8; 32], now: u64) -> Option<Arc<Map<String, Value>>> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        match entries.get(key) {
            Some((claims, until)) if now < *until => Some(claims.clone()),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    fn put(
        &self,
        key: [u8; 32],
        claims: Arc<Map<String, Value>>,
        c: &Map<String, Value>,
        now: u64,
    ) {
        let exp = c
            .get("exp")
            .and_then(Value::as_f64)
            .map(|e| (e.max(0.0) as u64).saturating_add(self.leeway));
        let until = exp.unwrap_or(u64::MAX).min(now + Self::TTL_S);
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= Self::MAX_ENTRIES {
            entries.retain(|_, (_, u)| now < *u);
            if entries.len() >= Self::MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(key, (claims, until));
    }
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("mode", &self.config.mode)
            .field("verifiers", &self.verifiers.len())
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Config(#[from] crate::setting::Invalid),
    #[error(transparent)]
    Keys(#[from] KeyError),
}

fn path(p: &str) -> ClaimPath {
    ClaimPath::parse(p).expect("validated with the config")
}

impl Authenticator {
    /// Loads every verifier's keys (a JWKS that cannot be fetched yet is not fatal).
    pub async fn new(config: &AuthConfig) -> Result<Authenticator, SetupError> {
        config.validate()?;
        let mut verifiers = Vec::with_capacity(config.jwt.len());
        for (i, j) in config.jwt.iter().enumerate() {
            verifiers.push(Verifier::new(j, i).await?);
        }
        Ok(Authenticator {
            role_claim: path(&config.role_claim),
            scope_claim: path(&config.scope_claim),
            actor_claim: path(&config.actor_claim),
            tenant_claim: path(&config.tenant_claim),
            settings: config
                .settings
                .iter()
                .map(|(name, p)| (name.clone(), (p != "$").then(|| path(p))))
                .collect(),
            verified: VerifiedCache {
                entries: Default::default(),
                // The smallest leeway of any verifier: a cached token is never accepted
                // after the verifier that accepted it would refuse it.
                leeway: config.jwt.iter().map(|j| j.leeway_s).min().unwrap_or(0),
            },
            verifiers,
            config: config.clone(),
        })
    }

    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// Keeps every JWKS fresh until `stop`.
    pub fn spawn_refresh(&self, stop: CancellationToken) {
        for v in &self.verifiers {
            v.keys.spawn_refresh(stop.clone());
        }
    }

    /// Problems with the verifiers' keys, for `/readyz` (`None`: all keys usable). A stale
    /// JWKS still verifies with its last good keys: reported, not unready.
    pub fn key_status(&self) -> Vec<(usize, KeyStatus)> {
        self.verifiers
            .iter()
            .enumerate()
            .map(|(i, v)| (i, v.keys.status()))
            .filter(|(_, s)| *s != KeyStatus::Ready)
            .collect()
    }

    /// Decides who a request is from its `Authorization` header value; counts the outcome.
    pub async fn authenticate(
        &self,
        authorization: Option<&str>,
        door: Door,
    ) -> Result<Identity, AuthError> {
        let result = self.identify(authorization).await;
        let outcome = match &result {
            Ok(id) if id.anonymous => "anonymous",
            Ok(_) => "ok",
            Err(e) => e.reason(),
        };
        crate::metrics::metrics()
            .auth
            .outcomes
            .with_label_values(&[door.label(), outcome])
            .inc();
        result
    }

    /// A bearer token's identity (no header parsing), for Flight's Handshake.
    pub async fn authenticate_token(&self, token: &str, door: Door) -> Result<Identity, AuthError> {
        self.authenticate(Some(&format!("Bearer {token}")), door)
            .await
    }

    async fn identify(&self, authorization: Option<&str>) -> Result<Identity, AuthError> {
        let Some(value) = authorization else {
            return match self.config.mode {
                AuthMode::Required => Err(AuthError::Missing),
                AuthMode::Optional => Ok(self.anonymous()),
            };
        };
        if value.len() > self.config.max_token_bytes {
            return Err(AuthError::TooLarge);
        }
        let token = bearer(value).ok_or(AuthError::Malformed)?;
        let key: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        let now = jsonwebtoken::get_current_timestamp();
        if let Some(claims) = self.verified.get(&key, now) {
            return self.identity(claims);
        }
        let claims = Arc::new(self.verify(token).await?);
        self.verified.put(key, claims.clone(), &claims, now);
        self.identity(claims)
    }

    fn anonymous(&self) -> Identity {
        let role = self.config.anonymous_role.clone();
        let mut context = RequestContext::anonymous();
        if !self.config.db_roles.is_empty() {
            context = context.with_role(role.clone());
        }
        Identity {
            unrestricted: false,
            anonymous: true,
            role,
            subject: None,
            scopes: BTreeSet::new(),
            actor: None,
            claims: Arc::new(Map::new()),
            write_context: context.clone(),
            context,
        }
    }

    async fn verify(&self, token: &str) -> Result<Map<String, Value>, AuthError> {
        let TokenParts { alg, kid, payload } = token_parts(token)?;
        let kid = kid.as_deref();
        let iss = payload.get("iss").and_then(Value::as_str);
        let by_issuer: Vec<&Verifier> = self
            .verifiers
            .iter()
            .filter(|v| v.issuer.is_some() && v.issuer.as_deref() == iss)
            .collect();
        let candidates = if by_issuer.is_empty() {
            self.verifiers
                .iter()
                .filter(|v| v.issuer.is_none())
                .collect()
        } else {
            by_issuer
        };
        if candidates.is_empty() {
            return Err(AuthError::Issuer);
        }
        let mut last = AuthError::Algorithm;
        for v in candidates {
            match v.verify(token, alg, kid).await {
                Ok(claims) => return Ok(claims),
                // A verifier that cannot judge this token (another algorithm, no such key)
                // yields to the next; any other answer is final.
                Err(e @ (AuthError::Algorithm | AuthError::UnknownKey)) => {
                    if last == AuthError::Algorithm {
                        last = e;
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    fn identity(&self, claims: Arc<Map<String, Value>>) -> Result<Identity, AuthError> {
        let role = match self.role_claim.lookup(&claims) {
            Some(Value::String(r)) if !r.is_empty() => r.clone(),
            _ => self.config.anonymous_role.clone(),
        };
        let mut context = RequestContext::anonymous();
        if !self.config.db_roles.is_empty() {
            if !self.config.db_roles.contains(&role) {
                return Err(AuthError::RoleNotAllowed);
            }
            context = context.with_role(role.clone());
        }
        let scopes = self
            .scope_claim
            .lookup(&claims)
            .or_else(|| claims.get("scp"))
            .map(claims::scopes)
            .unwrap_or_default()
            .into_iter()
            .collect();
        let text = |p: &ClaimPath| p.lookup(&claims).and_then(claims::as_setting);
        let subject = claims.get("sub").and_then(claims::as_setting);
        let actor = text(&self.actor_claim);
        let tenant = text(&self.tenant_claim);
        for (name, p) in &self.settings {
            let value = match p {
                None => Some(Value::Object((*claims).clone()).to_string()),
                Some(p) => p.lookup(&claims).and_then(claims::as_setting),
            };
            if let Some(v) = value {
                context = context.with_setting(name.clone(), v);
            }
        }
        // The change log's actor and tenant for this request's writes (the triggers read
        // these two settings). Reads do not need them: without settings or a role a read
        // stays one round trip, with no transaction.
        let mut write_context = context.clone();
        if let Some(s) = &subject {
            write_context = write_context.with_setting("fraiseql.actor", s.clone());
        }
        if let Some(t) = &tenant {
            write_context = write_context.with_setting("fraiseql.tenant_id", t.clone());
        }
        Ok(Identity {
            unrestricted: false,
            anonymous: false,
            role,
            subject,
            scopes,
            actor,
            claims,
            context,
            write_context,
        })
    }
}

/// `Bearer <token>`, the scheme in any case.
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    let token = rest.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && !token.contains(' '))
        .then_some(token)
}

/// What a token says of itself before any signature is checked: the header's algorithm and
/// key id, and the payload (which picks the verifier by `iss`). Nothing here is trusted.
#[derive(Debug)]
pub struct TokenParts {
    pub alg: Algorithm,
    pub kid: Option<String>,
    pub payload: Map<String, Value>,
}

/// Splits a compact JWS into its three parts and decodes the header and payload (not the
/// signature). Public for the fuzz targets (`fuzz/`).
pub fn token_parts(token: &str) -> Result<TokenParts, AuthError> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed);
    };
    if h.is_empty() || p.is_empty() || s.is_empty() {
        return Err(AuthError::Malformed);
    }
    let header = decode_part(h).ok_or(AuthError::Malformed)?;
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(AuthError::Malformed)?;
    // `none` in any spelling, and anything this build does not verify.
    let alg: Algorithm = alg.parse().map_err(|_| AuthError::Algorithm)?;
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err(AuthError::Malformed),
    };
    let payload = decode_part(p).ok_or(AuthError::Malformed)?;
    Ok(TokenParts { alg, kid, payload })
}

/// A base64url JSON object (a token's header or payload).
fn decode_part(part: &str) -> Option<Map<String, Value>> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
