//! The keys a verifier checks signatures with: fixed ones (an HMAC secret, a PEM or JWK
//! file) or a JSON Web Key Set fetched over HTTP and kept fresh.
//!
//! A JWKS is fetched at start and then in the background, as often as its
//! `Cache-Control: max-age` says within a floor and a ceiling. A token naming a `kid` the
//! set does not have triggers at most one refetch per cooldown, whoever asks, so random
//! `kid`s cost an attacker nothing but a 401. When the endpoint is down the last good set
//! stays in use and [`KeySource::status`] says so (`/readyz`). Symmetric (`oct`) keys in a
//! fetched set are ignored: a published HMAC secret would let anyone sign.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::config::JwtConfig;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{key}: cannot read {path}: {message}")]
    File {
        key: String,
        path: String,
        message: String,
    },
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
    #[error("fetching the JWKS from {url}: {message}")]
    Fetch { url: String, message: String },
}

/// One verification key and what it may verify.
#[derive(Clone)]
pub struct Key {
    pub kid: Option<String>,
    /// The JWK's `alg`, when it names one: then only that algorithm.
    pub alg: Option<Algorithm>,
    pub key: DecodingKey,
}

impl Key {
    pub fn fits(&self, alg: Algorithm) -> bool {
        self.key.family() == alg.family() && self.alg.is_none_or(|a| a == alg)
    }
}

/// Keys from a JWK (one key) or a JWK Set document; unusable keys are skipped.
pub fn keys_from_jwk_document(doc: &Value, allow_secret: bool) -> Vec<Key> {
    let items: Vec<&Value> = match doc.get("keys").and_then(Value::as_array) {
        Some(keys) => keys.iter().collect(),
        None => vec![doc],
    };
    items
        .into_iter()
        .filter_map(|v| serde_json::from_value::<Jwk>(v.clone()).ok())
        .filter(|jwk| match &jwk.algorithm {
            AlgorithmParameters::OctetKey(_) => allow_secret,
            // The curves this build verifies (ES256, ES384, Ed25519).
            AlgorithmParameters::EllipticCurve(p) => {
                matches!(p.curve, EllipticCurve::P256 | EllipticCurve::P384)
            }
            AlgorithmParameters::OctetKeyPair(p) => p.curve == EllipticCurve::Ed25519,
            AlgorithmParameters::RSA(_) => true,
            _ => false,
        })
        .filter(|jwk| {
            !matches!(
                jwk.common.public_key_use,
                Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)
            )
        })
        .filter_map(|jwk| {
            let key = DecodingKey::from_jwk(&jwk).ok()?;
            let alg = match jwk.common.key_algorithm {
                // A JWK `alg` this build does not verify (RSA-OAEP, ES512): not a key here.
                Some(a) => Some(
                    serde_json::to_value(a)
                        .ok()?
                        .as_str()?
                        .parse::<Algorithm>()
                        .ok()?,
                ),
                None => None,
            };
            Some(Key {
                kid: jwk.common.key_id.clone(),
                alg,
                key,
            })
        })
        .collect()
}

/// Where a verifier's keys come from.
pub enum KeySource {
    Fixed(Vec<Key>),
    Jwks(Arc<Jwks>),
}

/// A verifier's key state, for `/readyz` and `check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyStatus {
    Ready,
    /// Serving from the last good set; the latest fetch failed.
    Stale(String),
    /// No set was ever fetched: every token of this verifier fails.
    Unavailable(String),
}

impl KeySource {
    /// Loads fixed keys or fetches the first JWKS (a failed first fetch is not fatal: the
    /// background refresh keeps trying and `/readyz` reports it).
    pub async fn load(cfg: &JwtConfig, index: usize) -> Result<KeySource, KeyError> {
        let key_name = |k: &str| format!("auth.jwt[{index}].{k}");
        if let Some(var) = &cfg.secret_env {
            let secret = std::env::var(var).map_err(|_| KeyError::Invalid {
                key: key_name("secret_env"),
                message: format!("environment variable {var} is not set"),
            })?;
            return secret_key(secret.into_bytes(), &key_name("secret_env"));
        }
        if let Some(path) = &cfg.secret_file {
            let bytes = read(path, &key_name("secret_file"))?;
            let trimmed = bytes.trim_ascii_end().to_vec();
            return secret_key(trimmed, &key_name("secret_file"));
        }
        if let Some(path) = &cfg.public_key_file {
            let bytes = read(path, &key_name("public_key_file"))?;
            return public_keys(&bytes, cfg, &key_name("public_key_file")).map(KeySource::Fixed);
        }
        let url = cfg.jwks_url.clone().expect("validated: one key source");
        let jwks = Arc::new(Jwks::new(url, cfg)?);
        jwks.refresh().await;
        Ok(KeySource::Jwks(jwks))
    }

    /// The keys that may verify a token with `alg` and `kid`; for a JWKS an unknown `kid`
    /// may refetch once (see the module docs).
    pub async fn candidates(&self, alg: Algorithm, kid: Option<&str>) -> Vec<Key> {
        match self {
            KeySource::Fixed(keys) => pick(keys, alg, kid),
            KeySource::Jwks(jwks) => {
                let found = pick(&jwks.keys(), alg, kid);
                match kid {
                    Some(kid) if found.is_empty() && jwks.refetch_for_unknown_kid().await => {
                        pick(&jwks.keys(), alg, Some(kid))
                    }
                    _ => found,
                }
            }
        }
    }

    pub fn status(&self) -> KeyStatus {
        match self {
            KeySource::Fixed(_) => KeyStatus::Ready,
            KeySource::Jwks(j) => j.status(),
        }
    }

    /// Starts the background refresh of a JWKS; nothing for fixed keys.
    pub fn spawn_refresh(&self, stop: CancellationToken) {
        if let KeySource::Jwks(jwks) = self {
            let jwks = jwks.clone();
            tokio::spawn(async move { jwks.refresh_loop(stop).await });
        }
    }
}

/// Keys of `alg`'s family; with a `kid`, only keys with that `kid` (a key without one
/// never answers for a token that names one, and a token without `kid` may use any).
fn pick(keys: &[Key], alg: Algorithm, kid: Option<&str>) -> Vec<Key> {
    keys.iter()
        .filter(|k| k.fits(alg))
        .filter(|k| match kid {
            Some(kid) => k.kid.as_deref() == Some(kid),
            None => true,
        })
        .cloned()
        .collect()
}

fn read(path: &std::path::Path, key: &str) -> Result<Vec<u8>, KeyError> {
    std::fs::read(path).map_err(|e| KeyError::File {
        key: key.into(),
        path: path.display().to_string(),
        message: e.kind().to_string(),
    })
}

fn secret_key(secret: Vec<u8>, key: &str) -> Result<KeySource, KeyError> {
    // RFC 7518 §3.2: an HMAC key at least as long as the hash output.
    if secret.len() < 32 {
        return Err(KeyError::Invalid {
            key: key.into(),
            message: "an HMAC secret of at least 32 bytes".into(),
        });
    }
    let key = DecodingKey::from_secret(&secret).map_err(|_| KeyError::Invalid {
        key: key.into(),
        message: "an HMAC secret".into(),
    })?;
    Ok(KeySource::Fixed(vec![Key {
        kid: None,
        alg: None,
        key,
    }]))
}

/// A PEM public key (RSA, EC or Ed25519, as the verifier's algorithms say) or a JWK (Set).
fn public_keys(bytes: &[u8], cfg: &JwtConfig, key: &str) -> Result<Vec<Key>, KeyError> {
    let invalid = |message: &str| KeyError::Invalid {
        key: key.into(),
        message: message.into(),
    };
    let text = std::str::from_utf8(bytes).map_err(|_| invalid("a PEM or JWK text file"))?;
    let keys = if text.trim_start().starts_with('{') {
        let doc: Value =
            serde_json::from_str(text).map_err(|_| invalid("a JWK or JWK Set (JSON)"))?;
        keys_from_jwk_document(&doc, false)
    } else {
        let mut keys = Vec::new();
        for a in &cfg.algorithms {
            let family = a.parse::<Algorithm>().map(|a| a.family()).ok();
            let parsed = match family {
                Some(jsonwebtoken::AlgorithmFamily::Rsa) => DecodingKey::from_rsa_pem(bytes),
                Some(jsonwebtoken::AlgorithmFamily::Ec) => DecodingKey::from_ec_pem(bytes),
                Some(jsonwebtoken::AlgorithmFamily::Ed) => DecodingKey::from_ed_pem(bytes),
                _ => continue,
            };
            let Ok(k) = parsed else { continue };
            if !keys.iter().any(|x: &Key| x.key.family() == k.family()) {
                keys.push(Key {
                    kid: None,
                    alg: None,
                    key: k,
                });
            }
        }
        keys
    };
    if keys.is_empty() {
        return Err(invalid(
            "no public key usable with the verifier's algorithms (PEM or JWK expected)",
        ));
    }
    Ok(keys)
}

/// A JWKS endpoint and the last good key set fetched from it.
pub struct Jwks {
    url: String,
    client: reqwest::Client,
    timeout: Duration,
    max_bytes: usize,
    default_ttl: Duration,
    min_ttl: Duration,
    max_ttl: Duration,
    cooldown: Duration,
    state: RwLock<JwksState>,
    /// Serialises fetches and remembers when the last unknown-`kid` fetch ran.
    fetch: tokio::sync::Mutex<Option<Instant>>,
}

struct JwksState {
    keys: Arc<Vec<Key>>,
    fetched: bool,
    last_error: Option<String>,
    ttl: Duration,
}

impl Jwks {
    fn new(url: String, cfg: &JwtConfig) -> Result<Jwks, KeyError> {
        let client = crate::actions::http_client().map_err(|e| KeyError::Fetch {
            url: url.clone(),
            message: e.to_string(),
        })?;
        Ok(Jwks {
            url,
            client,
            timeout: Duration::from_millis(cfg.jwks_timeout_ms),
            max_bytes: cfg.jwks_max_bytes,
            default_ttl: Duration::from_secs(cfg.jwks_refresh_s.max(1)),
            min_ttl: Duration::from_secs(cfg.jwks_min_refresh_s),
            max_ttl: Duration::from_secs(cfg.jwks_max_refresh_s),
            cooldown: Duration::from_secs(cfg.jwks_unknown_kid_cooldown_s),
            state: RwLock::new(JwksState {
                keys: Arc::new(Vec::new()),
                fetched: false,
                last_error: None,
                ttl: Duration::from_secs(cfg.jwks_refresh_s.max(1)),
            }),
            fetch: tokio::sync::Mutex::new(None),
        })
    }

    fn keys(&self) -> Arc<Vec<Key>> {
        self.state
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys
            .clone()
    }

    fn status(&self) -> KeyStatus {
        let s = self.state.read().unwrap_or_else(|p| p.into_inner());
        match (&s.last_error, s.fetched) {
            (None, true) => KeyStatus::Ready,
            (Some(e), true) => KeyStatus::Stale(e.clone()),
            (e, false) => {
                KeyStatus::Unavailable(e.clone().unwrap_or_else(|| "not fetched yet".to_string()))
            }
        }
    }

    /// One fetch; on failure the previous keys stay.
    async fn refresh(&self) {
        let _one_at_a_time = self.fetch.lock().await;
        self.fetch_now().await;
    }

    async fn fetch_now(&self) {
        let result = self.fetch_once().await;
        let mut s = self.state.write().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok((keys, ttl)) => {
                jwks_fetch("ok");
                s.keys = Arc::new(keys);
                s.fetched = true;
                s.last_error = None;
                s.ttl = ttl;
            }
            Err(e) => {
                jwks_fetch("error");
                tracing::warn!(url = %self.url, error = %e, "JWKS fetch failed; the previous key set, if any, stays in use");
                s.last_error = Some(e.to_string());
            }
        }
    }

    async fn fetch_once(&self) -> Result<(Vec<Key>, Duration), KeyError> {
        let fail = |message: String| KeyError::Fetch {
            url: self.url.clone(),
            message,
        };
        let mut resp = self
            .client
            .get(&self.url)
            .timeout(self.timeout)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| fail(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(fail(format!("HTTP {}", resp.status().as_u16())));
        }
        let ttl = resp
            .headers()
            .get(reqwest::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(max_age)
            .map(|s| Duration::from_secs(s).clamp(self.min_ttl, self.max_ttl))
            .unwrap_or(self.default_ttl);
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| fail(e.to_string()))? {
            if body.len() + chunk.len() > self.max_bytes {
                return Err(fail(format!("larger than {} bytes", self.max_bytes)));
            }
            body.extend_from_slice(&chunk);
        }
        let doc: Value =
            serde_json::from_slice(&body).map_err(|_| fail("not a JSON document".into()))?;
        if doc.get("keys").and_then(Value::as_array).is_none() {
            return Err(fail("not a JWK Set (no \"keys\" array)".into()));
        }
        let keys = keys_from_jwk_document(&doc, false);
        if keys.is_empty() {
            return Err(fail("no usable signing keys".into()));
        }
        Ok((keys, ttl))
    }

    /// Refetches for a token's unknown `kid` unless one such fetch ran within the cooldown;
    /// true when a fetch ran (whether or not it found the key).
    async fn refetch_for_unknown_kid(&self) -> bool {
        let mut last = self.fetch.lock().await;
        if last.is_some_and(|t| t.elapsed() < self.cooldown) {
            jwks_fetch("cooldown");
            return false;
        }
        *last = Some(Instant::now());
        self.fetch_now().await;
        true
    }

    async fn refresh_loop(&self, stop: CancellationToken) {
        let mut retry =
            crate::backoff::Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        loop {
            let wait = {
                let s = self.state.read().unwrap_or_else(|p| p.into_inner());
                if s.last_error.is_some() {
                    // Retry a failing endpoint sooner than the normal refresh, backing off.
                    retry.next_delay().min(s.ttl.max(Duration::from_secs(1)))
                } else {
                    s.ttl
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            self.refresh().await;
            if self.status() == KeyStatus::Ready {
                retry.reset();
            }
        }
    }
}

fn jwks_fetch(outcome: &str) {
    crate::metrics::metrics()
        .auth
        .jwks_fetches
        .with_label_values(&[outcome])
        .inc();
}

/// `max-age` from a `Cache-Control` value (`no-store`/`no-cache` count as 0).
fn max_age(value: &str) -> Option<u64> {
    let mut age = None;
    for directive in value.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-store" || lower == "no-cache" {
            return Some(0);
        }
        if let Some(v) = lower.strip_prefix("max-age=") {
            age = v.trim_matches('"').parse().ok();
        }
    }
    age
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_max_age() {
        assert_eq!(max_age("public, max-age=600"), Some(600));
        assert_eq!(max_age("max-age=\"30\", must-revalidate"), Some(30));
        assert_eq!(max_age("no-store"), Some(0));
        assert_eq!(max_age("private"), None);
        assert_eq!(max_age("max-age=abc"), None);
    }

    #[test]
    fn a_published_hmac_secret_is_not_a_key() {
        let doc = serde_json::json!({"keys": [
            {"kty": "oct", "k": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0", "kid": "h"},
            {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "kid": "e"},
            {"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA", "kid": "unsupported"}
        ]});
        let keys = keys_from_jwk_document(&doc, false);
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid.as_deref(), Some("e"));
        assert!(keys[0].fits(Algorithm::EdDSA) && !keys[0].fits(Algorithm::HS256));
    }
}
