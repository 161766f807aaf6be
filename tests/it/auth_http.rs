//! Authentication on `/graphql`, end to end with the real binary: the token attack suite
//! (each answered 401 with no statement reaching PostgreSQL, counted from the engine's SQL
//! metric), JWKS rotation and outage against a local identity provider (an HTTP server in
//! the test that serves the key set and counts fetches), and the answers' wire format.

use crate::common;

use std::time::Duration;

use common::jwt::{
    Idp, JWKS_ISS, STATIC_ISS, auth_toml, claims, good_tokens, jwk, rs256, token_attacks,
    unknown_kid_tokens,
};
use common::{ServeProcess, TestDb, crate_path};
use serde_json::{Value, json};

/// `serve` over the blog with `[auth]`: a verifier with a PEM key and one with a JWKS.
async fn serve(
    db: &TestDb,
    idp: &Idp,
    extra: &str,
    cooldown_s: u64,
) -> (ServeProcess, tempfile::TempDir) {
    serve_env(db, idp, extra, cooldown_s, &[]).await
}

async fn serve_env(
    db: &TestDb,
    idp: &Idp,
    extra: &str,
    cooldown_s: u64,
    env: &[(&str, &str)],
) -> (ServeProcess, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fraiseql.toml");
    let toml = format!(
        "[graphql]\nschema = \"{schema}\"\n{auth}",
        schema = crate_path("examples/blog/schema.json").display(),
        auth = auth_toml(idp, extra, cooldown_s),
    );
    std::fs::write(&path, toml).unwrap();
    let p = ServeProcess::start_role(
        &["--config", path.to_str().unwrap(), "serve"],
        &db.url(),
        env,
    )
    .await;
    (p, dir)
}

const QUERY: &str = "{ posts(limit: 2) { title } }";

async fn ask(base: &str, authorization: Option<&str>) -> (u16, Option<String>, Value) {
    let mut req = common::http()
        .post(format!("{base}/graphql"))
        .header("content-type", "application/json")
        .json(&json!({ "query": QUERY }));
    if let Some(a) = authorization {
        req = req.header("authorization", a);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let challenge = r
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string());
    let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    (status, challenge, body)
}

/// Statements the engine ran, from its own metric.
async fn statements(p: &ServeProcess) -> f64 {
    p.metric("fraiseql_graphql_sql_duration_seconds_count{type=\"query\"}")
        .await
}

#[tokio::test]
async fn every_token_attack_is_401_and_no_statement_reaches_postgresql() {
    let db = TestDb::new().await;
    db.load_blog().await;
    let idp = Idp::start(json!({"keys": [jwk("rsa2.key", "idp-1")]}), 3600).await;
    let (p, _dir) = serve(&db, &idp, "", 3600).await;

    // Both verifiers accept their own tokens.
    let [ok, ok2] = good_tokens();
    let (status, _, body) = ask(&p.base, Some(&format!("Bearer {ok}"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["posts"].as_array().unwrap().len(), 2, "{body}");
    assert_eq!(ask(&p.base, Some(&format!("Bearer {ok2}"))).await.0, 200);
    let fetches_before = idp.fetches();
    let ran = statements(&p).await;
    assert!(ran >= 2.0, "the good tokens ran their statements ({ran})");

    let attacks = token_attacks(&idp);
    for (what, token) in &attacks {
        let (status, challenge, body) = ask(&p.base, Some(&format!("Bearer {token}"))).await;
        assert_eq!(status, 401, "{what}: {body}");
        let challenge = challenge.unwrap_or_default();
        assert!(
            challenge.starts_with("Bearer error=\"invalid_token\""),
            "{what}: {challenge}"
        );
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
            "{what}"
        );
        assert!(
            body.get("data").is_none_or(Value::is_null),
            "{what}: {body}"
        );
        let message = body["errors"][0]["message"].as_str().unwrap();
        assert!(
            !message.contains(&token[..20]),
            "{what}: the token is never echoed"
        );
    }
    // An unknown kid: at most one JWKS fetch for many requests (cooldown), then 401 each.
    for t in unknown_kid_tokens(20) {
        assert_eq!(ask(&p.base, Some(&format!("Bearer {t}"))).await.0, 401);
    }
    // No token at all with mode = "required": 401 with the bare challenge.
    let (status, challenge, body) = ask(&p.base, None).await;
    assert_eq!(
        (status, challenge.as_deref()),
        (401, Some("Bearer")),
        "{body}"
    );

    assert_eq!(
        statements(&p).await,
        ran,
        "no refused request ran a statement"
    );
    let unknown_kid_fetches = idp.fetches() - fetches_before;
    assert!(
        unknown_kid_fetches <= 1,
        "{unknown_kid_fetches} JWKS fetches for 20 unknown kids"
    );
    assert_eq!(idp.other_requests(), 0, "jku/x5u were never fetched");
    let refused = p
        .metric("fraiseql_auth_requests_total{door=\"http\",outcome=\"bad_signature\"}")
        .await;
    assert!(refused >= 3.0, "refusals are counted by reason ({refused})");
    eprintln!(
        "{} attacks + 20 unknown kids + 1 missing token: all 401, {unknown_kid_fetches} JWKS \
         fetch, 0 statements",
        attacks.len()
    );
}

#[tokio::test]
async fn jwks_rotation_needs_one_refetch_and_an_outage_keeps_the_last_good_keys() {
    let db = TestDb::new().await;
    db.load_blog().await;
    let idp = Idp::start(json!({"keys": [jwk("rsa1.key", "k1")]}), 1).await;
    let (p, _dir) = serve(&db, &idp, "", 0).await;
    let k1 = format!(
        "Bearer {}",
        rs256("rsa1.key", Some("k1"), &claims(JWKS_ISS))
    );
    let k2 = format!(
        "Bearer {}",
        rs256("rsa2.key", Some("k2"), &claims(JWKS_ISS))
    );
    assert_eq!(ask(&p.base, Some(&k1)).await.0, 200);
    assert_eq!(
        ask(&p.base, Some(&k2)).await.0,
        401,
        "k2 is not published yet"
    );

    // The provider rotates: k2 is new, k1 stays for tokens still in flight.
    *idp.keys.lock().unwrap() = json!({"keys": [jwk("rsa1.key", "k1"), jwk("rsa2.key", "k2")]});
    let (status, _, body) = ask(&p.base, Some(&k2)).await;
    assert_eq!(
        status, 200,
        "a token with the new kid works after a refetch: {body}"
    );
    assert_eq!(ask(&p.base, Some(&k1)).await.0, 200);

    // The endpoint goes down: the background refresh fails, the last good set stays.
    idp.down.store(true, std::sync::atomic::Ordering::SeqCst);
    let fetched = idp.fetches();
    let warned = common::eventually(Duration::from_secs(10), || async {
        let (status, body) = common::get(&format!("{}/readyz", p.base)).await;
        status == 200 && body.contains("last good JWKS")
    })
    .await;
    assert!(warned, "/readyz says the last good key set is in use");
    assert!(idp.fetches() > fetched, "the refresh kept trying");
    assert_eq!(ask(&p.base, Some(&k1)).await.0, 200);
    assert_eq!(ask(&p.base, Some(&k2)).await.0, 200);
    idp.down.store(false, std::sync::atomic::Ordering::SeqCst);
    let recovered = common::eventually(Duration::from_secs(10), || async {
        let (_, body) = common::get(&format!("{}/readyz", p.base)).await;
        body == r#"{"status":"ready"}"#
    })
    .await;
    assert!(
        recovered,
        "/readyz is plain ready once the endpoint answers again"
    );
}

#[tokio::test]
async fn a_jwks_never_fetched_is_not_ready_and_introspection_is_off_by_default() {
    let db = TestDb::new().await;
    db.load_blog().await;
    let idp = Idp::start(json!({"keys": [jwk("rsa2.key", "idp-1")]}), 3600).await;
    let (p, _dir) = serve(&db, &idp, "", 3600).await;
    let ok = format!("Bearer {}", rs256("rsa1.key", None, &claims(STATIC_ISS)));
    let r = common::http()
        .post(format!("{}/graphql", p.base))
        .header("content-type", "application/json")
        .header("authorization", &ok)
        .json(&json!({"query": "{ __schema { queryType { name } } }"}))
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert!(
        body["errors"].is_array(),
        "introspection is refused: {body}"
    );
    let (status, _) = common::get(&format!("{}/graphiql", p.base)).await;
    assert_eq!(
        status, 404,
        "GraphiQL is not served with mode = \"required\""
    );

    // A verifier whose JWKS cannot be fetched: /readyz is 503 and names it.
    let dead = Idp::start(json!({}), 1).await;
    dead.down.store(true, std::sync::atomic::Ordering::SeqCst);
    let db2 = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fraiseql.toml");
    std::fs::write(
        &path,
        format!(
            "[auth]\n[[auth.jwt]]\nalgorithms = [\"RS256\"]\njwks_url = \"{}\"\njwks_timeout_ms = 500\n",
            dead.server.url("/jwks.json")
        ),
    )
    .unwrap();
    let port = common::free_port();
    let mut child = common::bin()
        .args(["--config", path.to_str().unwrap(), "serve", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .env("FRAISEQL_DATABASE_URL", db2.url())
        .env("FRAISEQL_LOG", "warn")
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/readyz");
    let said = common::eventually(Duration::from_secs(15), || async {
        let Ok(r) = common::http().get(&url).send().await else {
            return false;
        };
        r.status().as_u16() == 503 && r.text().await.unwrap().contains("auth.jwt[0]: no keys")
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    assert!(said, "/readyz is 503 while no key set was ever fetched");
}

#[tokio::test]
async fn a_mutation_records_the_token_subject_and_tenant_as_actor_and_tenant() {
    let db = TestDb::new().await;
    let seed = db.load_blog().await;
    let idp = Idp::start(json!({"keys": [jwk("rsa2.key", "idp-1")]}), 3600).await;
    let (p, _dir) = serve(&db, &idp, "", 3600).await;
    let mut c = claims(STATIC_ISS);
    c["tenant_id"] = json!("tenant-7");
    let token = format!("Bearer {}", rs256("rsa1.key", None, &c));
    let r = common::http()
        .post(format!("{}/graphql", p.base))
        .header("content-type", "application/json")
        .header("authorization", &token)
        .json(&json!({
            "query": "mutation($i: CreatePostInput!) { createPost(input: $i) { id } }",
            "variables": {"i": {"authorId": seed.users[0].id, "title": "t", "body": "b"}}
        }))
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    let id = body["data"]["createPost"]["id"]
        .as_str()
        .expect("created")
        .to_string();
    let row = db
        .client()
        .await
        .query_one(
            "SELECT actor, tenant_id FROM fraiseql.tb_entity_change_log \
             WHERE entity_id = $1 AND entity = 'Post'",
            &[&uuid::Uuid::parse_str(&id).unwrap()],
        )
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, Option<String>>(1)),
        ("user-1".to_string(), Some("tenant-7".to_string()))
    );
}

#[test]
fn serve_refuses_to_listen_beyond_loopback_without_auth_unless_told_to() {
    let port = common::free_port();
    let out = common::bin()
        .args(["serve", "--listen", &format!("0.0.0.0:{port}")])
        .env(
            "FRAISEQL_DATABASE_URL",
            "postgres://postgres@127.0.0.1:1/none",
        )
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("server.listen (from command line)")
            && stderr.contains("[auth]")
            && stderr.contains("server.allow_unauthenticated = true"),
        "the message names both ways out: {stderr}"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "nothing listened"
    );
}

#[tokio::test]
async fn forty_root_fields_in_one_flight_all_run_inside_the_tokens_transaction() {
    let db = TestDb::new().await;
    db.load_blog().await;
    // The view answers only as the token's role with its setting applied: a statement
    // sent ahead of the settings, or after the COMMIT, would see no rows.
    let role = format!("fq_reader_{}", db.name());
    db.batch(&format!(
        "CREATE ROLE {role} NOLOGIN; GRANT {role} TO CURRENT_USER; \
         GRANT USAGE ON SCHEMA public TO {role}; \
         ALTER VIEW v_post RENAME TO v_post_all; \
         CREATE VIEW v_post AS SELECT * FROM v_post_all \
         WHERE current_setting('app.user_id', true) = 'user-1' AND current_user = '{role}'; \
         GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}"
    ))
    .await;
    common::admin_batch_on_drop(vec![format!("DROP ROLE IF EXISTS {role}")]);
    let idp = Idp::start(json!({"keys": [jwk("rsa2.key", "idp-1")]}), 3600).await;
    let (p, _dir) = serve_env(
        &db,
        &idp,
        &format!(
            "role_claim = \"role\"\nanonymous_role = \"{role}\"\ndb_roles = [\"{role}\"]\n\
             [auth.settings]\n\"app.user_id\" = \"sub\"\n"
        ),
        3600,
        &[
            ("FRAISEQL_GRAPHQL_MAX_ROOT_FIELDS", "40"),
            ("FRAISEQL_GRAPHQL_MAX_ALIASES", "40"),
        ],
    )
    .await;
    let mut c = claims(STATIC_ISS);
    c["role"] = json!(role);
    let token = format!("Bearer {}", rs256("rsa1.key", None, &c));
    let query = format!(
        "{{ {} }}",
        (0..40)
            .map(|i| format!("p{i}: posts(limit: 2) {{ title }}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    for _ in 0..5 {
        let r = common::http()
            .post(format!("{}/graphql", p.base))
            .header("authorization", &token)
            .json(&json!({ "query": query }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        assert!(body.get("errors").is_none(), "{body}");
        for i in 0..40 {
            assert_eq!(
                body["data"][format!("p{i}")].as_array().map(Vec::len),
                Some(2),
                "p{i}: {body}"
            );
        }
    }
    // Every transaction ended: no pooled connection is left inside one.
    let open: i64 = db
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND state LIKE 'idle in transaction%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(open, 0, "connections left inside a transaction");
}

#[tokio::test]
async fn a_read_sees_the_tokens_settings_pipelined_with_its_statement() {
    let db = TestDb::new().await;
    db.load_blog().await;
    // The view answers only while app.user_id is user-1.
    db.batch(
        "ALTER VIEW v_post RENAME TO v_post_all; \
         CREATE VIEW v_post AS SELECT * FROM v_post_all \
         WHERE current_setting('app.user_id', true) = 'user-1'",
    )
    .await;
    let idp = Idp::start(json!({"keys": [jwk("rsa2.key", "idp-1")]}), 3600).await;
    let (p, _dir) = serve(
        &db,
        &idp,
        "[auth.settings]\n\"app.user_id\" = \"sub\"\n",
        3600,
    )
    .await;
    let mut other = claims(STATIC_ISS);
    other["sub"] = json!("user-2");
    for (c, rows) in [(claims(STATIC_ISS), 2), (other, 0), (claims(STATIC_ISS), 2)] {
        let token = format!("Bearer {}", rs256("rsa1.key", None, &c));
        let (status, _, body) = ask(&p.base, Some(&token)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body["data"]["posts"].as_array().unwrap().len(),
            rows,
            "{c}: {body}"
        );
    }
}

#[tokio::test]
async fn a_role_has_its_own_limits_and_statement_timeout() {
    let db = TestDb::new().await;
    db.load_blog().await;
    // Every read of posts takes 300 ms (an initplan: once per statement).
    db.batch(
        "CREATE FUNCTION slow_ok() RETURNS boolean LANGUAGE plpgsql AS \
         $$ BEGIN PERFORM pg_sleep(0.3); RETURN true; END $$; \
         ALTER VIEW v_post RENAME TO v_post_all; \
         CREATE VIEW v_post AS SELECT * FROM v_post_all WHERE (SELECT slow_ok());",
    )
    .await;
    let idp = Idp::start(json!({"keys": [jwk("rsa2.key", "idp-1")]}), 3600).await;
    let (p, _dir) = serve(
        &db,
        &idp,
        "role_claim = \"role\"\n\
         [graphql.roles.analyst]\nmax_limit = 5000\nstatement_timeout_ms = 100\n",
        3600,
    )
    .await;
    let token = |role: &str| {
        let mut c = claims(STATIC_ISS);
        c["role"] = json!(role);
        format!("Bearer {}", rs256("rsa1.key", None, &c))
    };
    let post = |auth: String, query: &'static str| {
        let url = format!("{}/graphql", p.base);
        async move {
            let r = common::http()
                .post(url)
                .header("authorization", auth)
                .json(&json!({ "query": query }))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        }
    };
    const BIG: &str = "{ users(limit: 2000) { identifier } }";
    let (status, v) = post(token("reader"), BIG).await;
    assert_eq!(status, 200);
    assert_eq!(
        v["errors"][0]["extensions"]["code"],
        json!("LIMIT_EXCEEDED"),
        "{v}"
    );
    let (_, v) = post(token("analyst"), BIG).await;
    assert!(
        v.get("errors").is_none(),
        "the analyst's max_limit is 5000: {v}"
    );
    assert!(v["data"]["users"].is_array(), "{v}");

    const SLOW: &str = "{ posts(limit: 1) { title } }";
    let (_, v) = post(token("reader"), SLOW).await;
    assert_eq!(v["data"]["posts"].as_array().map(Vec::len), Some(1), "{v}");
    let started = std::time::Instant::now();
    let (status, v) = post(token("analyst"), SLOW).await;
    assert_eq!(status, 200);
    let e = &v["errors"][0];
    assert_eq!(e["extensions"]["code"], json!("TIMEOUT"), "{v}");
    assert_eq!(e["extensions"]["sqlstate"], json!("57014"), "{v}");
    assert!(!v.to_string().contains("slow_ok"), "{v}");
    assert!(started.elapsed() < std::time::Duration::from_millis(290));
    // The timeout was the transaction's own: the pool's connections keep no timeout.
    let (_, v) = post(token("reader"), SLOW).await;
    assert_eq!(v["data"]["posts"].as_array().map(Vec::len), Some(1), "{v}");
}
