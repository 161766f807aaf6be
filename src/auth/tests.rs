//! Verification against tokens signed here with the test keys in `tests/fixtures/jwt`.

use super::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;

const FIX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jwt");

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIX}/{name}")).unwrap()
}

fn now() -> i64 {
    jsonwebtoken::get_current_timestamp() as i64
}

fn sign(alg: Algorithm, key: &str, kid: Option<&str>, claims: Value) -> String {
    let pem = fixture(key);
    let enc = match alg.family() {
        jsonwebtoken::AlgorithmFamily::Rsa => EncodingKey::from_rsa_pem(&pem),
        jsonwebtoken::AlgorithmFamily::Ec => EncodingKey::from_ec_pem(&pem),
        jsonwebtoken::AlgorithmFamily::Ed => EncodingKey::from_ed_pem(&pem),
        jsonwebtoken::AlgorithmFamily::Hmac => EncodingKey::from_secret(&pem),
    }
    .unwrap();
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&h, &claims, &enc).unwrap()
}

fn claims() -> Value {
    json!({"sub": "u1", "exp": now() + 600, "iss": "https://idp.test/", "aud": "fraiseql",
           "role": "editor", "scope": "read:a write:b", "tenant_id": "t1"})
}

fn verifier(algs: &[&str], key: &str) -> JwtConfig {
    JwtConfig {
        algorithms: algs.iter().map(|a| a.to_string()).collect(),
        public_key_file: Some(format!("{FIX}/{key}").into()),
        issuer: Some("https://idp.test/".into()),
        audience: vec!["fraiseql".into()],
        required_claims: vec!["sub".into(), "exp".into()],
        ..Default::default()
    }
}

async fn auth(jwt: Vec<JwtConfig>) -> Authenticator {
    Authenticator::new(&AuthConfig {
        jwt,
        ..Default::default()
    })
    .await
    .unwrap()
}

async fn check(a: &Authenticator, token: &str) -> Result<Identity, AuthError> {
    a.authenticate(Some(&format!("Bearer {token}")), Door::Http)
        .await
}

#[tokio::test]
async fn every_algorithm_verifies_with_its_own_key_only() {
    let cases = [
        (Algorithm::RS256, "rsa1"),
        (Algorithm::RS384, "rsa1"),
        (Algorithm::RS512, "rsa1"),
        (Algorithm::PS256, "rsa1"),
        (Algorithm::PS384, "rsa1"),
        (Algorithm::PS512, "rsa1"),
        (Algorithm::ES256, "ec256"),
        (Algorithm::ES384, "ec384"),
        (Algorithm::EdDSA, "ed25519"),
    ];
    for (alg, key) in cases {
        let name = format!("{alg:?}");
        let a = auth(vec![verifier(&[name.as_str()], &format!("{key}.pub"))]).await;
        let token = sign(alg, &format!("{key}.key"), None, claims());
        let id = check(&a, &token)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(id.subject(), Some("u1"));
        assert_eq!(id.role(), "editor");
        assert!(id.has_scope("write:b") && !id.has_scope("write"));
        if key == "rsa1" {
            let other = sign(alg, "rsa2.key", None, claims());
            assert_eq!(
                check(&a, &other).await.unwrap_err(),
                AuthError::BadSignature,
                "{name}"
            );
        }
    }
}

#[tokio::test]
async fn hmac_secrets_from_env_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "0123456789abcdef0123456789abcdef-secret";
    std::fs::write(dir.path().join("s"), format!("{secret}\n")).unwrap();
    std::fs::write(dir.path().join("short"), "short").unwrap();
    for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        let name = format!("{alg:?}");
        let a = auth(vec![JwtConfig {
            algorithms: vec![name.clone()],
            secret_file: Some(dir.path().join("s")),
            ..Default::default()
        }])
        .await;
        let enc = EncodingKey::from_secret(secret.as_bytes()).unwrap();
        let token = jsonwebtoken::encode(&Header::new(alg), &claims(), &enc).unwrap();
        check(&a, &token).await.unwrap();
        let wrong = EncodingKey::from_secret(b"another-secret-of-32-bytes-or-more!!").unwrap();
        let token = jsonwebtoken::encode(&Header::new(alg), &claims(), &wrong).unwrap();
        assert_eq!(
            check(&a, &token).await.unwrap_err(),
            AuthError::BadSignature
        );
    }
    let short = Authenticator::new(&AuthConfig {
        jwt: vec![JwtConfig {
            algorithms: vec!["HS256".into()],
            secret_file: Some(dir.path().join("short")),
            ..Default::default()
        }],
        ..Default::default()
    })
    .await
    .unwrap_err();
    assert!(short.to_string().contains("at least 32 bytes"), "{short}");
    assert!(!short.to_string().contains("short\""));
}

fn forge(header: Value, payload: Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        B64.encode(header.to_string()),
        B64.encode(payload.to_string()),
        B64.encode(signature)
    )
}

#[tokio::test]
async fn the_token_attacks_are_refused_for_the_right_reason() {
    let a = auth(vec![verifier(&["RS256", "ES256"], "rsa1.pub"), {
        let mut v = verifier(&["ES256"], "ec256.pub");
        v.issuer = Some("https://other.test/".into());
        v
    }])
    .await;
    let good = sign(Algorithm::RS256, "rsa1.key", None, claims());
    check(&a, &good).await.unwrap();

    // alg none, in every spelling, with and without a signature.
    for none in ["none", "None", "NONE", "nOnE"] {
        let t = forge(json!({"alg": none, "typ": "JWT"}), claims(), b"");
        assert_eq!(
            check(&a, &t).await.unwrap_err(),
            AuthError::Malformed,
            "{none}"
        );
        let t = forge(json!({"alg": none}), claims(), b"x");
        assert_eq!(
            check(&a, &t).await.unwrap_err(),
            AuthError::Algorithm,
            "{none}"
        );
    }
    // HS256 keyed with the RS256 public key.
    let pubkey = fixture("rsa1.pub");
    let t = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(),
        &EncodingKey::from_secret(&pubkey).unwrap(),
    )
    .unwrap();
    assert_eq!(check(&a, &t).await.unwrap_err(), AuthError::Algorithm);
    // Wrong key, expired, nbf ahead, iat ahead, wrong iss/aud, missing claim.
    let mut bad = vec![(
        sign(Algorithm::RS256, "rsa2.key", None, claims()),
        AuthError::BadSignature,
    )];
    let mut with = |k: &str, v: Value, e: AuthError| {
        let mut c = claims();
        c[k] = v;
        bad.push((sign(Algorithm::RS256, "rsa1.key", None, c), e));
    };
    with("exp", json!(now() - 120), AuthError::Expired);
    with("nbf", json!(now() + 600), AuthError::NotYetValid);
    with("iat", json!(now() + 600), AuthError::NotYetValid);
    with("aud", json!("someone-else"), AuthError::Audience);
    // A time claim of the wrong type is never skipped (CVE-2026-25537).
    with("exp", json!("never"), AuthError::MissingClaim("exp".into()));
    with("nbf", json!("99999999999"), AuthError::Malformed);
    with("iss", json!("https://unknown.test/"), AuthError::Issuer);
    let mut c = claims();
    c.as_object_mut().unwrap().remove("sub");
    bad.push((
        sign(Algorithm::RS256, "rsa1.key", None, c),
        AuthError::MissingClaim("sub".into()),
    ));
    // A token for the other verifier's issuer, signed with this one's key.
    let mut c = claims();
    c["iss"] = json!("https://other.test/");
    bad.push((
        sign(Algorithm::RS256, "rsa1.key", None, c.clone()),
        AuthError::Algorithm,
    ));
    bad.push((
        sign(Algorithm::ES256, "ec256b.key", None, c),
        AuthError::BadSignature,
    ));
    for (t, e) in &bad {
        assert_eq!(&check(&a, t).await.unwrap_err(), e, "{t}");
    }
    // Malformed encodings and JSON, an oversized token.
    let parts: Vec<&str> = good.split('.').collect();
    for t in [
        "x".to_string(),
        format!("{}.{}", parts[0], parts[1]),
        format!("{}.{}.{}.x", parts[0], parts[1], parts[2]),
        format!("{}.!!!.{}", parts[0], parts[2]),
        format!("{}.{}.{}", B64.encode("{not json"), parts[1], parts[2]),
        format!("{}.{}.{}", parts[0], B64.encode("[1,2]"), parts[2]),
    ] {
        assert_eq!(
            check(&a, &t).await.unwrap_err(),
            AuthError::Malformed,
            "{t}"
        );
    }
    let huge = format!("{}.{}.{}", parts[0], "A".repeat(9000), parts[2]);
    assert_eq!(check(&a, &huge).await.unwrap_err(), AuthError::TooLarge);
    // An ES256 signature with r = s = 0.
    let mut c = claims();
    c["iss"] = json!("https://other.test/");
    let t = forge(json!({"alg": "ES256"}), c, &[0u8; 64]);
    assert_eq!(check(&a, &t).await.unwrap_err(), AuthError::BadSignature);
    // Header fields pointing elsewhere change nothing: the configured key decides.
    let mut h = Header::new(Algorithm::RS256);
    h.jku = Some("http://127.0.0.1:9/jwks.json".into());
    h.x5u = Some("http://127.0.0.1:9/cert.pem".into());
    let t = jsonwebtoken::encode(
        &h,
        &claims(),
        &EncodingKey::from_rsa_pem(&fixture("rsa2.key")).unwrap(),
    )
    .unwrap();
    assert_eq!(check(&a, &t).await.unwrap_err(), AuthError::BadSignature);
    // No header, a wrong scheme, an empty token.
    assert_eq!(
        a.authenticate(None, Door::Http).await.unwrap_err(),
        AuthError::Missing
    );
    for v in [
        "Basic abc",
        "Bearer",
        "Bearer ",
        "Token x.y.z",
        "Bearer a b",
    ] {
        assert_eq!(
            a.authenticate(Some(v), Door::Http).await.unwrap_err(),
            AuthError::Malformed,
            "{v}"
        );
    }
}

#[tokio::test]
async fn an_embedded_jwk_is_never_trusted() {
    let a = auth(vec![verifier(&["RS256"], "rsa1.pub")]).await;
    // Signed with the attacker's key, which the header offers as `jwk`.
    let mut h = Header::new(Algorithm::RS256);
    let enc = EncodingKey::from_rsa_pem(&fixture("rsa2.key")).unwrap();
    h.jwk = Some(jsonwebtoken::jwk::Jwk::from_encoding_key(&enc, Algorithm::RS256).unwrap());
    let t = jsonwebtoken::encode(&h, &claims(), &enc).unwrap();
    assert_eq!(check(&a, &t).await.unwrap_err(), AuthError::BadSignature);
}

#[tokio::test]
async fn identity_settings_role_and_anonymous() {
    let mut cfg = AuthConfig {
        jwt: vec![verifier(&["RS256"], "rsa1.pub")],
        mode: AuthMode::Optional,
        db_roles: vec!["anon".into(), "editor".into()],
        ..Default::default()
    };
    cfg.settings.insert("app.user_id".into(), "sub".into());
    cfg.settings
        .insert("app.tenant_id".into(), "tenant_id".into());
    cfg.settings.insert("request.jwt.claims".into(), "$".into());
    cfg.settings.insert("app.missing".into(), "nope".into());
    let a = Authenticator::new(&cfg).await.unwrap();
    let id = check(&a, &sign(Algorithm::RS256, "rsa1.key", None, claims()))
        .await
        .unwrap();
    let ctx = id.request_context();
    assert_eq!(ctx.role(), Some("editor"));
    assert_eq!(ctx.setting("app.user_id"), Some("u1"));
    assert_eq!(ctx.setting("app.tenant_id"), Some("t1"));
    // The change log's actor and tenant are set for writes only.
    assert_eq!(ctx.setting("fraiseql.actor"), None);
    let w = id.write_context();
    assert_eq!(w.setting("fraiseql.actor"), Some("u1"));
    assert_eq!(w.setting("fraiseql.tenant_id"), Some("t1"));
    assert_eq!(w.role(), Some("editor"));
    assert_eq!(ctx.setting("app.missing"), None);
    let whole: Value = serde_json::from_str(ctx.setting("request.jwt.claims").unwrap()).unwrap();
    assert_eq!(whole["scope"], "read:a write:b");

    let anon = a.authenticate(None, Door::Http).await.unwrap();
    assert!(anon.is_anonymous());
    assert_eq!(anon.request_context().role(), Some("anon"));

    let mut c = claims();
    c["role"] = json!("postgres");
    let e = check(&a, &sign(Algorithm::RS256, "rsa1.key", None, c))
        .await
        .unwrap_err();
    assert_eq!(e, AuthError::RoleNotAllowed);
    assert!(e.is_forbidden());
    // An invalid token never falls back to the anonymous role.
    let e = check(&a, &sign(Algorithm::RS256, "rsa2.key", None, claims()))
        .await
        .unwrap_err();
    assert_eq!(e, AuthError::BadSignature);
}

#[tokio::test]
async fn a_verified_token_is_cached_until_it_expires() {
    let a = auth(vec![verifier(&["RS256"], "rsa1.pub")]).await;
    let mut c = claims();
    c["exp"] = json!(now() + 2);
    let t = sign(Algorithm::RS256, "rsa1.key", None, c);
    check(&a, &t).await.unwrap();
    check(&a, &t).await.unwrap();
    assert_eq!(a.verified.entries.lock().unwrap().len(), 1);
    // exp + leeway (30 s) bounds the entry: past it the token is verified again, and
    // refused.
    let key: [u8; 32] = sha2::Sha256::digest(t.as_bytes()).into();
    let until = a.verified.entries.lock().unwrap()[&key].1;
    assert_eq!(until, (now() + 2 + 30) as u64);
    assert!(
        a.verified.get(&key, until).is_none(),
        "expired entries are not served"
    );
    for i in 0..(VerifiedCache::MAX_ENTRIES + 10) {
        let k = [
            (i % 251) as u8,
            (i / 251) as u8,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            1,
        ];
        a.verified
            .put(k, Arc::new(Map::new()), &Map::new(), now() as u64);
    }
    assert!(a.verified.entries.lock().unwrap().len() <= VerifiedCache::MAX_ENTRIES);
}

#[tokio::test]
async fn kid_selects_among_a_jwk_set_file() {
    let dir = tempfile::tempdir().unwrap();
    let jwks = json!({"keys": [
        jwk_of("rsa1.key", "k1"),
        jwk_of("rsa2.key", "k2"),
    ]});
    std::fs::write(dir.path().join("jwks.json"), jwks.to_string()).unwrap();
    let mut v = verifier(&["RS256"], "rsa1.pub");
    v.public_key_file = Some(dir.path().join("jwks.json"));
    let a = auth(vec![v]).await;
    check(
        &a,
        &sign(Algorithm::RS256, "rsa2.key", Some("k2"), claims()),
    )
    .await
    .unwrap();
    check(&a, &sign(Algorithm::RS256, "rsa1.key", None, claims()))
        .await
        .unwrap();
    assert_eq!(
        check(
            &a,
            &sign(Algorithm::RS256, "rsa1.key", Some("k2"), claims())
        )
        .await
        .unwrap_err(),
        AuthError::BadSignature
    );
    assert_eq!(
        check(
            &a,
            &sign(Algorithm::RS256, "rsa1.key", Some("k9"), claims())
        )
        .await
        .unwrap_err(),
        AuthError::UnknownKey
    );
}

/// The public JWK of a test private key, with `kid`.
pub(crate) fn jwk_of(key: &str, kid: &str) -> Value {
    let enc = EncodingKey::from_rsa_pem(&fixture(key)).unwrap();
    let mut jwk = serde_json::to_value(
        jsonwebtoken::jwk::Jwk::from_encoding_key(&enc, Algorithm::RS256).unwrap(),
    )
    .unwrap();
    jwk["kid"] = json!(kid);
    jwk
}
