//! `serve` with a GraphQL schema, end to end over HTTP: /graphql, GraphiQL, body limits,
//! metrics, `compile`, `check` of the schema's objects, and SIGHUP schema reload.

use crate::common;

use std::time::Duration;

use common::{ServeProcess, TestDb, TestServer, bin, crate_path, get, http};
use serde_json::{Value, json};

async fn post(url: &str, query: &str) -> (u16, Value) {
    let r = http()
        .post(url)
        .json(&json!({ "query": query }))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn graphql_graphiql_limits_and_metrics_over_http() {
    let db = TestDb::new().await;
    let seed = db.load_blog().await;
    let mut config = db.config();
    config.graphql.schema = crate_path("examples/blog/schema.json")
        .display()
        .to_string();
    config.server.max_body_bytes = 64 * 1024;
    let server = TestServer::start(config).await;

    let (status, v) = post(
        &server.url("/graphql"),
        "{ users(limit: 3, orderBy: [{identifier: ASC}]) { identifier posts { title } } }",
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let mut users: Vec<(usize, &common::SeedUser)> = seed.users.iter().enumerate().collect();
    users.sort_by(|a, b| a.1.identifier.cmp(&b.1.identifier));
    let expected: Vec<Value> = users[..3]
        .iter()
        .map(|(i, u)| {
            let posts: Vec<Value> = seed
                .posts
                .iter()
                .filter(|p| p.author == *i)
                .map(|p| json!({ "title": p.title }))
                .collect();
            json!({ "identifier": u.identifier, "posts": posts })
        })
        .collect();
    assert_eq!(v, json!({ "data": { "users": expected } }));

    // GraphiQL and its assets are served from the binary.
    let (status, html) = get(&server.url("/graphiql")).await;
    assert_eq!(status, 200);
    assert!(
        html.contains("/graphiql/graphiql.min.js") && !html.contains("https://"),
        "{html}"
    );
    for asset in [
        "graphiql.min.js",
        "graphiql.min.css",
        "react.production.min.js",
        "react-dom.production.min.js",
    ] {
        let r = http()
            .get(server.url(&format!("/graphiql/{asset}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{asset}");
        assert!(r.bytes().await.unwrap().len() > 1000, "{asset}");
    }
    assert_eq!(get(&server.url("/graphiql/../Cargo.toml")).await.0, 404);

    // A body over the limit is refused without being read whole, in GraphQL's error format.
    let huge = format!(
        "{{\"query\":\"{{ users {{ id }} }}\",\"x\":\"{}\"}}",
        "a".repeat(200 * 1024)
    );
    let r = http()
        .post(server.url("/graphql"))
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["errors"][0]["extensions"]["code"], "PAYLOAD_TOO_LARGE",
        "{v}"
    );

    let (_, metrics) = get(&server.url("/metrics")).await;
    assert!(
        metrics.contains(
            "fraiseql_graphql_operations_total{name=\"anonymous\",outcome=\"ok\",type=\"query\"}"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("fraiseql_http_requests_total{route=\"/graphql\",status=\"200\"}"));
    assert!(metrics.contains("fraiseql_http_requests_total{route=\"/graphql\",status=\"413\"}"));
    server.stop().await;
}

#[tokio::test]
async fn without_a_schema_graphql_is_404_with_a_reason() {
    let db = TestDb::new().await;
    let server = TestServer::start(db.config()).await;
    let (status, body) = get(&server.url("/graphql?query=%7B__typename%7D")).await;
    assert_eq!(status, 404);
    assert!(body.contains("no GraphQL schema configured"), "{body}");
    assert_eq!(get(&server.url("/graphiql")).await.0, 404);
    server.stop().await;
}

#[test]
fn compile_writes_a_loadable_schema_and_names_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("schema.compiled.json");
    let o = bin()
        .args([
            "compile",
            crate_path("tests/fixtures/sdk-blog.schema.json")
                .to_str()
                .unwrap(),
            "-o",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let compiled = fraiseql::schema::load(&out).expect("compiled schema loads");
    assert!(compiled.queries.iter().any(|q| q.name == "users"));

    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"types":[{"name":"Post","fields":[{"name":"title","nullable":false}]}]}"#,
    )
    .unwrap();
    let o = bin()
        .arg("compile")
        .arg(&bad)
        .arg("-o")
        .arg(dir.path().join("x.json"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("bad.json") && stderr.contains("Post") && stderr.contains("title"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("x.json").exists(),
        "nothing written on error"
    );
}

#[tokio::test]
async fn check_names_missing_views_and_functions() {
    let db = TestDb::new().await;
    db.load_blog().await;
    db.batch("DROP VIEW v_comment; DROP FUNCTION fn_delete_post(uuid);")
        .await;
    let o = bin()
        .arg("check")
        .env("FRAISEQL_DATABASE_URL", db.url())
        .env(
            "FRAISEQL_GRAPHQL_SCHEMA",
            crate_path("examples/blog/schema.json"),
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("ok    view v_user"), "{stdout}");
    let fails: Vec<&str> = stdout.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert_eq!(fails.len(), 2, "{stdout}");
    assert!(fails.iter().any(|l| l.contains("v_comment")), "{stdout}");
    assert!(
        fails.iter().any(|l| l.contains("fn_delete_post")),
        "{stdout}"
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
async fn sighup_reloads_the_schema_and_keeps_the_old_one_when_the_new_is_broken() {
    let db = TestDb::new().await;
    let seed = db.load_blog().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("schema.json");
    let full: Value = serde_json::from_str(
        &std::fs::read_to_string(crate_path("examples/blog/schema.json")).unwrap(),
    )
    .unwrap();
    // Start without the `comments` query.
    let mut reduced = full.clone();
    reduced["queries"]
        .as_array_mut()
        .unwrap()
        .retain(|q| q["name"] != "comments");
    std::fs::write(&path, reduced.to_string()).unwrap();
    let server = ServeProcess::start(
        &db.url(),
        &[("FRAISEQL_GRAPHQL_SCHEMA", path.to_str().unwrap())],
    )
    .await;
    let url = format!("{}/graphql", server.base);
    let (_, v) = post(&url, "{ comments(limit: 1) { body } }").await;
    assert_eq!(
        v["errors"][0]["extensions"]["code"], "GRAPHQL_VALIDATION_FAILED",
        "{v}"
    );

    std::fs::write(&path, full.to_string()).unwrap();
    sighup(&server.child);
    let reloaded = common::eventually(Duration::from_secs(10), || async {
        post(&url, "{ comments(limit: 1) { body } }")
            .await
            .1
            .get("errors")
            .is_none()
    })
    .await;
    assert!(reloaded, "the new schema serves `comments` after SIGHUP");
    let (_, v) = post(&url, "{ comments(limit: 500) { body } }").await;
    let mut got: Vec<&str> = v["data"]["comments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["body"].as_str().unwrap())
        .collect();
    let mut want: Vec<&str> = seed.comments.iter().map(|c| c.body.as_str()).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);

    // A broken file: the reload fails and the current schema keeps serving.
    std::fs::write(&path, "{ not json").unwrap();
    sighup(&server.child);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, v) = post(&url, "{ comments(limit: 1) { body } }").await;
    assert_eq!(status, 200);
    assert!(v.get("errors").is_none(), "{v}");
    assert_eq!(get(&format!("{}/healthz", server.base)).await.0, 200);
}

#[tokio::test]
async fn explain_prints_the_statement_that_runs() {
    let db = TestDb::new().await;
    db.load_blog().await;
    let query = r#"{ posts(where: {title: {in: ["Post 1 by user-01", "it's $2"]}, views: {gte: 0}}, orderBy: [{title: ASC}]) { title views } }"#;
    let schema = crate_path("examples/blog/schema.json");
    let o = bin()
        .args([
            "explain",
            "--inline",
            "--schema",
            schema.to_str().unwrap(),
            query,
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let sql: String = stdout.lines().filter(|l| !l.starts_with("--")).collect();
    let via_sql: String = db
        .client()
        .await
        .query_one(sql.trim_end_matches(';'), &[])
        .await
        .unwrap()
        .get(0);

    let mut config = db.config();
    config.graphql.schema = schema.display().to_string();
    let server = TestServer::start(config).await;
    let (_, via_http) = post(&server.url("/graphql"), query).await;
    let via_sql: Value = serde_json::from_str(&via_sql).unwrap();
    assert_eq!(via_http["data"]["posts"], via_sql);
    assert_eq!(via_sql.as_array().unwrap().len(), 1);
    server.stop().await;
}

/// The blog schema with every `v_` source replaced by its `tv_` table.
fn tv_schema(dir: &std::path::Path) -> std::path::PathBuf {
    let mut sdk: Value = serde_json::from_str(
        &std::fs::read_to_string(crate_path("examples/blog/schema.json")).unwrap(),
    )
    .unwrap();
    for list in ["types", "queries"] {
        for item in sdk[list].as_array_mut().unwrap() {
            if let Some(src) = item["sql_source"].as_str().filter(|s| s.starts_with("v_")) {
                item["sql_source"] = Value::String(format!("t{src}"));
            }
        }
    }
    let path = dir.join("schema.tv.json");
    std::fs::write(&path, sdk.to_string()).unwrap();
    path
}

#[tokio::test]
async fn tv_tables_answer_like_the_views_and_follow_mutations() {
    let db = TestDb::new().await;
    db.batch(common::BLOG_SCHEMA_SQL).await;
    db.run_file("examples/blog/tv.sql").await;
    db.run_file("examples/blog/seed.sql").await;
    let dir = tempfile::tempdir().unwrap();
    let mut via_view = db.config();
    via_view.graphql.schema = crate_path("examples/blog/schema.json")
        .display()
        .to_string();
    let mut via_tv = db.config();
    via_tv.graphql.schema = tv_schema(dir.path()).display().to_string();
    let (a, b) = (
        TestServer::start(via_view).await,
        TestServer::start(via_tv).await,
    );

    let (_, created) = post(
        &b.url("/graphql"),
        r#"mutation { createPost(input: {authorId: "00000000-0000-4000-8000-000000000003", title: "tv", body: "b"}) { id } }"#,
    )
    .await;
    let id = created["data"]["createPost"]["id"]
        .as_str()
        .expect("created")
        .to_string();
    post(
        &b.url("/graphql"),
        &format!(r#"mutation {{ updatePost(input: {{id: "{id}", title: "tv 2"}}) {{ id }} }}"#),
    )
    .await;
    db.batch("UPDATE tb_user SET name = 'Renamed' WHERE identifier = 'user-03'; DELETE FROM tb_comment WHERE pk_comment = 1;").await;

    for q in [
        "{ users(limit: 100, orderBy: [{identifier: ASC}]) { identifier name posts { title author { name } comments { body author { name } } } } }",
        "{ posts(limit: 500, where: {author: {name: {eq: \"Renamed\"}}}, orderBy: [{title: ASC}]) { title comments { body } } }",
        "{ comments(limit: 500, orderBy: [{body: ASC}]) { body author { name } } }",
    ] {
        let (_, x) = post(&a.url("/graphql"), q).await;
        let (_, y) = post(&b.url("/graphql"), q).await;
        assert!(x.get("errors").is_none(), "{x}");
        assert_eq!(x, y, "{q}");
    }
    let (_, renamed) = post(
        &b.url("/graphql"),
        "{ posts(limit: 500, where: {title: {eq: \"tv 2\"}}) { author { name } } }",
    )
    .await;
    assert_eq!(
        renamed["data"]["posts"],
        json!([{ "author": { "name": "Renamed" } }])
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn security_headers_on_every_answer_and_cors_only_for_listed_origins() {
    let db = TestDb::new().await;
    db.load_blog().await;
    let mut config = db.blog_config();
    config.server.cors_allowed_origins = vec!["https://app.example.com".into()];
    let server = TestServer::start(config).await;
    let client = http();
    let body = json!({"query": "{ users(limit: 1) { identifier } }"}).to_string();

    for path in ["/graphql", "/graphiql", "/healthz", "/nope"] {
        let r = client.get(server.url(path)).send().await.unwrap();
        let h = r.headers();
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        if path == "/graphiql" {
            // The page runs only its own scripts: no inline script is left to allow.
            assert!(
                csp.contains("script-src 'self'") && !csp.contains("unsafe-eval"),
                "{csp}"
            );
            let html = r.text().await.unwrap();
            assert!(!html.contains("<script>"), "{html}");
            assert!(html.contains("/graphiql/app.js"), "{html}");
        } else {
            assert!(csp.starts_with("default-src 'none'"), "{path}: {csp}");
        }
    }
    let app = get(&server.url("/graphiql/app.js")).await;
    assert_eq!(app.0, 200);
    assert!(app.1.contains("URLSearchParams"), "the page reads ?query=");

    // A listed origin: preflight and answer carry the CORS headers.
    let pre = client
        .request(reqwest::Method::OPTIONS, server.url("/graphql"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type, authorization",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(pre.status(), 204);
    assert_eq!(
        pre.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    let methods = pre.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap();
    assert!(methods.contains("POST"), "{methods}");
    let allowed = pre.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap();
    assert!(allowed.contains("authorization") && allowed.contains("content-type"));
    let r = client
        .post(server.url("/graphql"))
        .header("origin", "https://app.example.com")
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert!(r.headers().get_all("vary").iter().any(|v| v == "Origin"));

    // Any other origin: no CORS header at all, so the browser refuses.
    for origin in [
        "https://evil.example",
        "https://app.example.com.evil.example",
    ] {
        let pre = client
            .request(reqwest::Method::OPTIONS, server.url("/graphql"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .send()
            .await
            .unwrap();
        assert_eq!(pre.status(), 204);
        assert!(pre.headers().get("access-control-allow-origin").is_none());
        let r = client
            .post(server.url("/graphql"))
            .header("origin", origin)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert!(r.headers().get("access-control-allow-origin").is_none());
    }
    server.stop().await;
}

/// An address of this machine that is not loopback, for a client that must not count as
/// local.
fn non_loopback_ip() -> std::net::IpAddr {
    // A UDP "connect" sends nothing: it only picks the interface a packet would leave by.
    ["192.0.2.1:9", "10.0.0.1:9", "8.8.8.8:9"]
        .iter()
        .find_map(|target| {
            let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
            s.connect(target).ok()?;
            Some(s.local_addr().ok()?.ip()).filter(|ip| !ip.is_loopback())
        })
        .expect("this machine has a non-loopback address")
}

#[tokio::test]
async fn metrics_are_for_loopback_clients_or_the_token() {
    let db = TestDb::new().await;
    db.load_blog().await;
    const TOKEN: &str = "a-metrics-token-of-enough-length";
    let ip = non_loopback_ip();
    let metrics = |host: String, port: u16, token: Option<&'static str>| async move {
        let mut req = http().get(format!("http://{host}:{port}/metrics"));
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.text().await.unwrap())
    };
    for token in [false, true] {
        let port = common::free_port();
        let schema = crate_path("examples/blog/schema.json");
        let mut cmd = bin();
        cmd.args(["serve", "--listen", &format!("0.0.0.0:{port}"), "--schema"])
            .arg(&schema)
            .env("FRAISEQL_DATABASE_URL", db.url())
            .env("FRAISEQL_SERVER_ALLOW_UNAUTHENTICATED", "true")
            .env("FRAISEQL_LOG", "warn");
        if token {
            cmd.env("FRAISEQL_METRICS_TOKEN_ENV", "FQ_TEST_METRICS_TOKEN")
                .env("FQ_TEST_METRICS_TOKEN", TOKEN);
        }
        let mut child = cmd.spawn().unwrap();
        assert!(
            common::eventually(Duration::from_secs(15), || async {
                let url = format!("http://127.0.0.1:{port}/healthz");
                matches!(http().get(url).send().await, Ok(r) if r.status() == 200)
            })
            .await
        );
        if token {
            assert_eq!(metrics(ip.to_string(), port, Some(TOKEN)).await.0, 200);
            let wrong = metrics(ip.to_string(), port, Some("wrong-token-wrong-token")).await;
            assert_eq!(wrong.0, 401);
            assert_eq!(metrics(ip.to_string(), port, None).await.0, 401);
            let local = metrics("127.0.0.1".into(), port, None).await;
            assert_eq!(local.0, 401, "with a token, loopback needs it too");
        } else {
            let (status, body) = metrics("127.0.0.1".into(), port, None).await;
            assert_eq!(status, 200);
            assert!(body.contains("fraiseql_build_info"));
            let (status, body) = metrics(ip.to_string(), port, None).await;
            assert_eq!(status, 401, "a client beyond loopback: {body}");
            assert!(!body.contains("fraiseql_"), "{body}");
            // The API itself still answers that client.
            assert_eq!(get(&format!("http://{ip}:{port}/healthz")).await.0, 200);
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}
