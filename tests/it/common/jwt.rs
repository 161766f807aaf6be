//! Tokens for the authentication tests of both doors: the test keys, a local identity
//! provider serving a JWKS (and recording every other request, which nothing may fetch),
//! the `[auth]` section with a PEM verifier and a JWKS verifier, and the token attack list
//! that `/graphql` must answer 401 and Flight UNAUTHENTICATED, with no statement run.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use super::crate_path;
use super::observers::{HttpReceiver, Reply};

pub const STATIC_ISS: &str = "https://static.test/";
pub const JWKS_ISS: &str = "https://jwks.test/";

pub fn key(name: &str) -> Vec<u8> {
    std::fs::read(crate_path(&format!("tests/fixtures/jwt/{name}"))).unwrap()
}

pub fn now() -> i64 {
    jsonwebtoken::get_current_timestamp() as i64
}

/// Valid claims of issuer `iss` (audience `fraiseql`, role `reader`, ten minutes left).
pub fn claims(iss: &str) -> Value {
    json!({"sub": "user-1", "iss": iss, "aud": "fraiseql", "exp": now() + 600, "role": "reader"})
}

pub fn rs256(key_file: &str, kid: Option<&str>, claims: &Value) -> String {
    let mut h = Header::new(Algorithm::RS256);
    h.kid = kid.map(str::to_string);
    jsonwebtoken::encode(
        &h,
        claims,
        &EncodingKey::from_rsa_pem(&key(key_file)).unwrap(),
    )
    .unwrap()
}

/// The public JWK of a test key, with `kid`.
pub fn jwk(key_file: &str, kid: &str) -> Value {
    let enc = EncodingKey::from_rsa_pem(&key(key_file)).unwrap();
    let mut j = serde_json::to_value(
        jsonwebtoken::jwk::Jwk::from_encoding_key(&enc, Algorithm::RS256).unwrap(),
    )
    .unwrap();
    j["kid"] = json!(kid);
    j
}

/// A token assembled by hand: any header, any payload, any signature bytes.
pub fn forge(header: Value, payload: Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        B64.encode(header.to_string()),
        B64.encode(payload.to_string()),
        B64.encode(signature)
    )
}

/// A local identity provider: `/jwks.json` serves the current set (with `max-age`), or 503
/// while `down`; every other path is recorded (nothing may ever fetch it).
pub struct Idp {
    pub server: Arc<HttpReceiver>,
    pub keys: Arc<Mutex<Value>>,
    pub down: Arc<AtomicBool>,
}

impl Idp {
    pub async fn start(keys: Value, max_age: u64) -> Idp {
        let shared = Arc::new(Mutex::new(keys));
        let down = Arc::new(AtomicBool::new(false));
        let (k, d) = (shared.clone(), down.clone());
        let server = HttpReceiver::with(move |req| {
            if req.path != "/jwks.json" || d.load(Ordering::SeqCst) {
                return Reply::status(503);
            }
            Reply {
                status: 200,
                headers: vec![
                    ("content-type".into(), "application/json".into()),
                    ("cache-control".into(), format!("public, max-age={max_age}")),
                ],
                body: k.lock().unwrap().to_string(),
            }
        })
        .await;
        Idp {
            server,
            keys: shared,
            down,
        }
    }

    pub fn fetches(&self) -> usize {
        self.server
            .requests()
            .iter()
            .filter(|r| r.path == "/jwks.json")
            .count()
    }

    pub fn other_requests(&self) -> usize {
        self.server
            .requests()
            .iter()
            .filter(|r| r.path != "/jwks.json")
            .count()
    }
}

/// The `[auth]` section (mode `required`, then `extra`) with two verifiers: RS256/ES256 with
/// the PEM key `rsa1.pub` for [`STATIC_ISS`], and RS256 with the identity provider's JWKS
/// for [`JWKS_ISS`] (unknown-`kid` cooldown `cooldown_s`).
pub fn auth_toml(idp: &Idp, extra: &str, cooldown_s: u64) -> String {
    format!(
        r#"
[auth]
mode = "required"
{extra}

[[auth.jwt]]
algorithms = ["RS256", "ES256"]
public_key_file = "{pem}"
issuer = "{STATIC_ISS}"
audience = ["fraiseql"]
required_claims = ["sub", "exp"]

[[auth.jwt]]
algorithms = ["RS256"]
jwks_url = "{jwks}"
issuer = "{JWKS_ISS}"
audience = ["fraiseql"]
jwks_min_refresh_s = 1
jwks_unknown_kid_cooldown_s = {cooldown_s}
jwks_timeout_ms = 1000
"#,
        pem = crate_path("tests/fixtures/jwt/rsa1.pub").display(),
        jwks = idp.server.url("/jwks.json"),
    )
}

/// [`auth_toml`] as the `AuthConfig` the in-process servers take.
pub fn auth_config(idp: &Idp, extra: &str, cooldown_s: u64) -> fraiseql::auth::AuthConfig {
    let config: fraiseql::config::Config =
        toml::from_str(&auth_toml(idp, extra, cooldown_s)).expect("[auth] parses");
    config.auth.expect("[auth] is set")
}

/// A valid token of each verifier of [`auth_toml`] (the JWKS one with `kid` `idp-1`, which
/// the identity provider must serve as `jwk("rsa2.key", "idp-1")`).
pub fn good_tokens() -> [String; 2] {
    [
        rs256("rsa1.key", None, &claims(STATIC_ISS)),
        rs256("rsa2.key", Some("idp-1"), &claims(JWKS_ISS)),
    ]
}

/// Every token attack of the issue's must-show list against the verifiers of
/// [`auth_toml`], named. Each must be refused as unauthenticated without a statement run;
/// the `jku`/`x5u` ones point at `idp`, which must never see a request for them. (The
/// unknown-`kid` attack needs many requests and is run by each door's test.)
pub fn token_attacks(idp: &Idp) -> Vec<(&'static str, String)> {
    let ok = rs256("rsa1.key", None, &claims(STATIC_ISS));
    let with = |k: &str, v: Value| {
        let mut c = claims(STATIC_ISS);
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v;
        }
        rs256("rsa1.key", None, &c)
    };
    let parts: Vec<String> = ok.split('.').map(str::to_string).collect();
    let mut jku = Header::new(Algorithm::RS256);
    jku.jku = Some(idp.server.url("/attacker-jwks.json"));
    jku.x5u = Some(idp.server.url("/attacker-cert.pem"));
    let mut embedded = Header::new(Algorithm::RS256);
    let attacker = EncodingKey::from_rsa_pem(&key("rsa2.key")).unwrap();
    embedded.jwk =
        Some(jsonwebtoken::jwk::Jwk::from_encoding_key(&attacker, Algorithm::RS256).unwrap());
    vec![
        (
            "alg none",
            forge(json!({"alg": "none"}), claims(STATIC_ISS), b""),
        ),
        (
            "alg None",
            forge(json!({"alg": "None"}), claims(STATIC_ISS), b""),
        ),
        (
            "alg NONE",
            forge(json!({"alg": "NONE"}), claims(STATIC_ISS), b"x"),
        ),
        (
            "HS256 keyed with the RS256 public key",
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &claims(STATIC_ISS),
                &EncodingKey::from_secret(&key("rsa1.pub")).unwrap(),
            )
            .unwrap(),
        ),
        ("wrong key", rs256("rsa2.key", None, &claims(STATIC_ISS))),
        ("expired", with("exp", json!(now() - 3600))),
        ("nbf in the future", with("nbf", json!(now() + 3600))),
        ("wrong iss", with("iss", json!("https://evil.test/"))),
        ("wrong aud", with("aud", json!("someone-else"))),
        ("missing required claim", with("sub", Value::Null)),
        ("exp of the wrong type", with("exp", json!("never"))),
        ("malformed base64", format!("{}.%%%.{}", parts[0], parts[2])),
        (
            "malformed JSON",
            format!("{}.{}.{}", B64.encode("{\"alg\":"), parts[1], parts[2]),
        ),
        (
            "oversized",
            format!("{}.{}.{}", parts[0], "A".repeat(20_000), parts[2]),
        ),
        (
            "jku and x5u pointing at a local server",
            jsonwebtoken::encode(&jku, &claims(STATIC_ISS), &attacker).unwrap(),
        ),
        (
            "an embedded jwk",
            jsonwebtoken::encode(&embedded, &claims(STATIC_ISS), &attacker).unwrap(),
        ),
        (
            "ES256 with r = s = 0",
            forge(json!({"alg": "ES256"}), claims(STATIC_ISS), &[0; 64]),
        ),
        (
            "a token for the other verifier's issuer",
            rs256("rsa1.key", Some("idp-1"), &claims(JWKS_ISS)),
        ),
    ]
}

/// `count` tokens of the JWKS issuer with random `kid`s the identity provider never served.
pub fn unknown_kid_tokens(count: usize) -> Vec<String> {
    (0..count)
        .map(|i| rs256("rsa2.key", Some(&format!("random-{i}")), &claims(JWKS_ISS)))
        .collect()
}
