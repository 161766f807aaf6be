//! Trusted documents and Apollo APQ over `/graphql`, end to end: with an allow-list
//! manifest, a document of the manifest runs by hash (GET and POST) and by its exact text, an
//! unknown hash and a raw document are refused with `PERSISTED_QUERY_NOT_FOUND` before any
//! statement runs, a bypass role (from the token) may send any document; a manifest whose id
//! is not the SHA-256 of its body refuses the start (and `check`); SIGHUP reloads the manifest
//! (a broken one keeps the current); APQ registers a document with its hash, then runs the
//! hash alone, and refuses a hash that is not the document's.

use crate::common;

use std::time::Duration;

use common::{ServeProcess, TestDb, TestServer, bin, crate_path};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use sha2::Digest as _;

const ISS: &str = "https://trusted.test/";
/// In the manifest.
const Q: &str = "{ users(limit: 3, orderBy: [{identifier: ASC}]) { identifier } }";
/// Not in the manifest at first.
const Q2: &str = "{ users(limit: 2, orderBy: [{identifier: DESC}]) { identifier name } }";

fn sha(doc: &str) -> String {
    hex::encode(sha2::Sha256::digest(doc.as_bytes()))
}

fn persisted(doc: &str) -> Value {
    json!({ "persistedQuery": { "version": 1, "sha256Hash": sha(doc) } })
}

/// Apollo's persisted query manifest of `docs`.
fn apollo_manifest(docs: &[&str]) -> String {
    let operations: Vec<Value> = docs
        .iter()
        .map(|d| json!({ "id": sha(d), "body": d, "name": "Op", "type": "query" }))
        .collect();
    json!({ "format": "apollo-persisted-query-manifest", "version": 1, "operations": operations })
        .to_string()
}

/// The Trusted Documents / Relay map of `docs`.
fn map_manifest(docs: &[&str]) -> String {
    Value::Object(docs.iter().map(|d| (sha(d), json!(d))).collect()).to_string()
}

fn token(role: &str) -> String {
    let claims = json!({
        "sub": "user-1", "iss": ISS, "aud": "fraiseql",
        "exp": jsonwebtoken::get_current_timestamp() + 600, "role": role,
    });
    let key = std::fs::read(crate_path("tests/fixtures/jwt/rsa1.key")).unwrap();
    jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &claims,
        &EncodingKey::from_rsa_pem(&key).unwrap(),
    )
    .unwrap()
}

async fn post(base: &str, token: Option<&str>, body: Value) -> (u16, Value) {
    let mut req = common::http().post(format!("{base}/graphql")).json(&body);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// GET with the `extensions` parameter only (Apollo's GET APQ).
async fn get_hash(base: &str, token: Option<&str>, doc: &str) -> (u16, Value) {
    let ext = persisted(doc).to_string();
    let ext = percent_encoding::utf8_percent_encode(&ext, percent_encoding::NON_ALPHANUMERIC);
    let mut req = common::http().get(format!("{base}/graphql?extensions={ext}"));
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

fn code(v: &Value) -> &str {
    v["errors"][0]["extensions"]["code"].as_str().unwrap_or("")
}

/// `serve` over the blog with `[auth]` (RS256 tokens, role claim `role`) and the manifest
/// at `manifest`, bypassed by the role `developer`.
async fn serve_allow_list(
    db: &TestDb,
    manifest: &std::path::Path,
) -> (ServeProcess, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fraiseql.toml");
    std::fs::write(&path, config_toml(manifest)).unwrap();
    let p = ServeProcess::start_role(
        &["--config", path.to_str().unwrap(), "serve"],
        &db.url(),
        &[],
    )
    .await;
    (p, dir)
}

fn config_toml(manifest: &std::path::Path) -> String {
    format!(
        r#"
[graphql]
schema = "{schema}"
trusted_documents = "{manifest}"
trusted_documents_bypass_roles = ["developer"]

[auth]
mode = "required"

[[auth.jwt]]
algorithms = ["RS256"]
public_key_file = "{pem}"
issuer = "{ISS}"
audience = ["fraiseql"]
"#,
        schema = crate_path("examples/blog/schema.json").display(),
        manifest = manifest.display(),
        pem = crate_path("tests/fixtures/jwt/rsa1.pub").display(),
    )
}

async fn statements(p: &ServeProcess) -> f64 {
    p.metric("fraiseql_graphql_sql_duration_seconds_count{type=\"query\"}")
        .await
}

#[tokio::test]
async fn the_allow_list_runs_its_documents_by_hash_and_refuses_unknown_hashes_and_raw_documents() {
    let db = TestDb::new().await;
    db.load_blog().await;
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("manifest.json");
    std::fs::write(&manifest, apollo_manifest(&[Q])).unwrap();
    let (p, _cfg) = serve_allow_list(&db, &manifest).await;
    let base = p.base.as_str();
    let reader = token("reader");
    let developer = token("developer");

    // The raw document's answer, from the bypass role.
    let (status, raw) = post(base, Some(&developer), json!({ "query": Q })).await;
    assert_eq!(status, 200, "{raw}");
    assert!(raw.get("errors").is_none(), "{raw}");
    assert_eq!(raw["data"]["users"].as_array().unwrap().len(), 3, "{raw}");

    // An allowed hash runs: the same answer, by POST and by GET, and the exact text too.
    let (status, v) = post(base, Some(&reader), json!({ "extensions": persisted(Q) })).await;
    assert_eq!((status, &v), (200, &raw));
    let (status, v) = get_hash(base, Some(&reader), Q).await;
    assert_eq!((status, &v), (200, &raw));
    let (status, v) = post(
        base,
        Some(&reader),
        json!({ "query": Q, "extensions": persisted(Q) }),
    )
    .await;
    assert_eq!((status, &v), (200, &raw));
    let (status, v) = post(base, Some(&reader), json!({ "query": Q })).await;
    assert_eq!((status, &v), (200, &raw));

    // Refused: nothing reaches PostgreSQL.
    let before = statements(&p).await;
    let (status, v) = post(base, Some(&reader), json!({ "extensions": persisted(Q2) })).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(code(&v), "PERSISTED_QUERY_NOT_FOUND", "{v}");
    assert_eq!(v["errors"][0]["message"], "PersistedQueryNotFound", "{v}");
    assert!(v.get("data").is_none(), "{v}");
    let (_, v) = get_hash(base, Some(&reader), Q2).await;
    assert_eq!(code(&v), "PERSISTED_QUERY_NOT_FOUND", "{v}");
    // A raw document, alone or with its hash (an APQ registration): refused.
    for body in [
        json!({ "query": Q2 }),
        json!({ "query": Q2, "extensions": persisted(Q2) }),
    ] {
        let (status, v) = post(base, Some(&reader), body).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(code(&v), "PERSISTED_QUERY_NOT_FOUND", "{v}");
        let msg = v["errors"][0]["message"].as_str().unwrap();
        assert!(msg.contains("only trusted documents"), "{v}");
    }
    // Still refused: the refused document was not registered.
    let (_, v) = post(base, Some(&reader), json!({ "extensions": persisted(Q2) })).await;
    assert_eq!(code(&v), "PERSISTED_QUERY_NOT_FOUND", "{v}");
    // A hash that is not the document's.
    let (status, v) = post(
        base,
        Some(&reader),
        json!({ "query": Q2, "extensions": persisted(Q) }),
    )
    .await;
    assert_eq!((status, code(&v)), (400, "BAD_REQUEST"), "{v}");
    assert_eq!(
        statements(&p).await,
        before,
        "no statement ran for a refused request"
    );

    // The bypass role sends any document.
    let (status, v) = post(base, Some(&developer), json!({ "query": Q2 })).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["users"].as_array().unwrap().len(), 2, "{v}");
    // Authentication still comes first.
    let (status, _) = post(base, None, json!({ "extensions": persisted(Q) })).await;
    assert_eq!(status, 401);

    // Hits: the manifest's text (twice) and its hash (three times); the 401 never got here.
    for (outcome, n) in [
        ("hit", 5.0),
        ("bypass", 1.0),
        ("not_found", 3.0),
        ("refused", 2.0),
        ("mismatch", 1.0),
    ] {
        let series = format!("fraiseql_graphql_persisted_queries_total{{outcome=\"{outcome}\"}}");
        assert_eq!(p.metric(&series).await, n, "{series}");
    }
    let series = "fraiseql_graphql_errors_total{code=\"PERSISTED_QUERY_NOT_FOUND\"}";
    assert_eq!(p.metric(series).await, 5.0);
}

/// Runs the binary with `args` and returns its exit code and stderr, killing it after 20 s.
fn run_to_exit(cmd: &mut std::process::Command) -> (Option<i32>, String) {
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stdout));
    (out.status.code(), text)
}

#[tokio::test]
async fn a_manifest_whose_id_is_not_the_hash_of_its_body_refuses_to_start() {
    let db = TestDb::new().await;
    db.load_blog().await;
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("manifest.json");
    let wrong = sha(Q2);
    std::fs::write(
        &manifest,
        json!({ "format": "apollo-persisted-query-manifest", "version": 1,
                "operations": [{ "id": wrong, "body": Q }] })
        .to_string(),
    )
    .unwrap();
    let config = dir.path().join("fraiseql.toml");
    std::fs::write(&config, config_toml(&manifest)).unwrap();
    let (status, out) = run_to_exit(
        bin()
            .args(["--config", config.to_str().unwrap(), "serve"])
            .args(["--listen", "127.0.0.1:0"])
            .env("FRAISEQL_DATABASE_URL", db.url()),
    );
    assert!(
        status.is_some_and(|c| c != 0),
        "exits with an error: {status:?} {out}"
    );
    assert!(
        out.contains(&wrong) && out.contains("not the SHA-256 of its body"),
        "{out}"
    );
    assert!(out.contains("manifest.json"), "names the file: {out}");

    let (status, out) = run_to_exit(
        bin()
            .args(["--config", config.to_str().unwrap(), "check"])
            .env("FRAISEQL_DATABASE_URL", db.url()),
    );
    assert_eq!(status, Some(1), "{out}");
    assert!(
        out.lines().any(|l| l.starts_with("FAIL")
            && l.contains("trusted documents")
            && l.contains(&wrong)),
        "{out}"
    );
}

fn sighup(child: &std::process::Child) {
    let ok = std::process::Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

#[tokio::test]
async fn sighup_reloads_the_manifest_and_keeps_it_when_the_new_one_is_broken() {
    let db = TestDb::new().await;
    db.load_blog().await;
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("trusted.json");
    std::fs::write(&manifest, map_manifest(&[Q])).unwrap();
    let p = ServeProcess::start(
        &db.url(),
        &[
            (
                "FRAISEQL_GRAPHQL_SCHEMA",
                crate_path("examples/blog/schema.json").to_str().unwrap(),
            ),
            (
                "FRAISEQL_GRAPHQL_TRUSTED_DOCUMENTS",
                manifest.to_str().unwrap(),
            ),
        ],
    )
    .await;
    let base = p.base.as_str();
    let by_hash = |doc: &'static str| async move {
        post(base, None, json!({ "extensions": persisted(doc) }))
            .await
            .1
    };
    assert!(by_hash(Q).await.get("errors").is_none());
    assert_eq!(code(&by_hash(Q2).await), "PERSISTED_QUERY_NOT_FOUND");

    std::fs::write(&manifest, map_manifest(&[Q, Q2])).unwrap();
    sighup(&p.child);
    let reloaded = common::eventually(Duration::from_secs(10), || async {
        by_hash(Q2).await.get("errors").is_none()
    })
    .await;
    assert!(reloaded, "the new hash runs after SIGHUP");
    let v = by_hash(Q2).await;
    assert_eq!(v["data"]["users"].as_array().unwrap().len(), 2, "{v}");

    // A broken manifest (an id that is not its body's hash): the current one stays.
    std::fs::write(&manifest, format!(r#"{{"{}": {Q:?}}}"#, sha(Q2))).unwrap();
    sighup(&p.child);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(by_hash(Q).await.get("errors").is_none());
    assert!(by_hash(Q2).await.get("errors").is_none());

    // A reload also revokes.
    std::fs::write(&manifest, apollo_manifest(&[Q2])).unwrap();
    sighup(&p.child);
    let revoked = common::eventually(Duration::from_secs(10), || async {
        code(&by_hash(Q).await) == "PERSISTED_QUERY_NOT_FOUND"
    })
    .await;
    assert!(
        revoked,
        "a hash removed from the manifest is refused after SIGHUP"
    );
    assert!(by_hash(Q2).await.get("errors").is_none());
    assert_eq!(common::get(&format!("{base}/healthz")).await.0, 200);
}

#[tokio::test]
async fn apq_registers_a_document_with_its_hash_then_runs_the_hash_alone() {
    let db = TestDb::new().await;
    db.load_blog().await;
    let mut config = db.config();
    config.graphql.schema = crate_path("examples/blog/schema.json")
        .display()
        .to_string();
    let server = TestServer::start(config.clone()).await;
    let base = format!("http://{}", server.addr);
    let base = base.as_str();

    let (_, raw) = post(base, None, json!({ "query": Q })).await;
    assert!(raw.get("errors").is_none(), "{raw}");

    // Unknown hash: the client is told to send the document (200, as Apollo's clients expect).
    let (status, v) = post(base, None, json!({ "extensions": persisted(Q) })).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(code(&v), "PERSISTED_QUERY_NOT_FOUND", "{v}");
    assert_eq!(v["errors"][0]["message"], "PersistedQueryNotFound", "{v}");
    // The document with a hash that is not its own: refused, nothing registered.
    let (status, v) = post(
        base,
        None,
        json!({ "query": Q2, "extensions": persisted(Q) }),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(code(&v), "BAD_REQUEST", "{v}");
    assert_eq!(
        v["errors"][0]["message"],
        "provided sha does not match query"
    );
    let (_, v) = post(base, None, json!({ "extensions": persisted(Q) })).await;
    assert_eq!(code(&v), "PERSISTED_QUERY_NOT_FOUND", "{v}");

    // Registered with its hash, then the hash alone runs it (POST and GET).
    let (status, v) = post(
        base,
        None,
        json!({ "query": Q, "extensions": persisted(Q) }),
    )
    .await;
    assert_eq!((status, &v), (200, &raw));
    let (status, v) = post(base, None, json!({ "extensions": persisted(Q) })).await;
    assert_eq!((status, &v), (200, &raw));
    let (status, v) = get_hash(base, None, Q).await;
    assert_eq!((status, &v), (200, &raw));
    // Without the allow-list a raw document still runs.
    let (_, v) = post(base, None, json!({ "query": Q2 })).await;
    assert!(v.get("errors").is_none(), "{v}");
    // A malformed extension is a bad request.
    let (status, v) = post(
        base,
        None,
        json!({ "extensions": { "persistedQuery": { "version": 1, "sha256Hash": "abc" } } }),
    )
    .await;
    assert_eq!((status, code(&v)), (400, "BAD_REQUEST"), "{v}");
    server.stop().await;

    // APQ off: a hash is not supported (Apollo's clients then send the document).
    config.graphql.documents.apq = false;
    let server = TestServer::start(config).await;
    let base = format!("http://{}", server.addr);
    let (status, v) = post(&base, None, json!({ "extensions": persisted(Q) })).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(code(&v), "PERSISTED_QUERY_NOT_SUPPORTED", "{v}");
    let (_, v) = post(&base, None, json!({ "query": Q })).await;
    assert_eq!(v, raw);
    server.stop().await;
}
