//! GraphQL over HTTP: methods, media types and status codes, GET parameters, operationName,
//! malformed requests, body limit, gzip, and the metrics the engine records.

use crate::common;

use std::io::Read;

use bytes::Bytes;
use common::*;
use fraiseql::metrics::GraphqlMetrics;
use serde_json::{Value, json};

fn req(
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> http::Request<Bytes> {
    let mut b = http::Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(body.into()).unwrap()
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn media_types_status_codes_and_methods() {
    let db = TestDb::new().await;
    let seed = db.load_blog().await;
    let engine = blog_engine();
    let pool = db.pool();
    let body =
        json!({"query": "{ users(limit: 1, orderBy: [{identifier: ASC}]) { name } }"}).to_string();

    // application/json by default.
    let r = send(
        &engine,
        pool,
        req(
            "POST",
            "/graphql",
            &[("content-type", "application/json")],
            body.clone(),
        ),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-type"], "application/json; charset=utf-8");
    assert_eq!(
        r.json(),
        json!({"data": {"users": [{"name": seed.users[0].name}]}})
    );

    // graphql-response+json when accepted.
    let gr = [
        ("content-type", "application/json; charset=utf-8"),
        (
            "accept",
            "application/graphql-response+json, application/json;q=0.9",
        ),
    ];
    let r = send(&engine, pool, req("POST", "/graphql", &gr, body.clone())).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.headers["content-type"],
        "application/graphql-response+json; charset=utf-8"
    );

    // Parse and validation errors: 400 with graphql-response+json, 200 with application/json.
    for q in ["{ users { ", "{ users { nope } }"] {
        let b = json!({"query": q}).to_string();
        let r = send(&engine, pool, req("POST", "/graphql", &gr, b.clone())).await;
        assert_eq!(r.status, 400, "{q}");
        assert!(r.json().get("data").is_none());
        assert!(r.json()["errors"][0]["locations"].is_array());
        let r = send(
            &engine,
            pool,
            req(
                "POST",
                "/graphql",
                &[("content-type", "application/json")],
                b,
            ),
        )
        .await;
        assert_eq!(r.status, 200, "{q}");
        assert!(r.json()["errors"].is_array());
    }
    // A field error still is 200 with data under both.
    let b = json!({"query": "{ user(id: \"bad\") { id } }"}).to_string();
    let r = send(&engine, pool, req("POST", "/graphql", &gr, b)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["data"]["user"], Value::Null);

    // GET with parameters.
    let uri = format!(
        "/graphql?query={}&variables={}&operationName=Q",
        enc("query Q($i: String!) { userByIdentifier(identifier: $i) { name } }"),
        enc("{\"i\": \"user-03\"}")
    );
    let r = send(&engine, pool, req("GET", &uri, &[], Bytes::new())).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["data"]["userByIdentifier"]["name"],
        json!(seed.users[2].name)
    );
    let r = send(
        &engine,
        pool,
        req("GET", "/graphql?operationName=x", &[], Bytes::new()),
    )
    .await;
    assert_eq!(r.status, 400);
    let r = send(
        &engine,
        pool,
        req(
            "GET",
            &format!(
                "/graphql?query={}",
                enc("mutation { deletePost(id: \"00000000-0000-4000-9000-000000000001\") { id } }")
            ),
            &[],
            Bytes::new(),
        ),
    )
    .await;
    assert_eq!(r.status, 405);
    assert_eq!(r.headers["allow"], "POST");
    let r = send(
        &engine,
        pool,
        req(
            "GET",
            "/graphql?query=%7B%20users%20%7B%20id&variables=%5B1%5D",
            &[],
            Bytes::new(),
        ),
    )
    .await;
    assert_eq!(r.status, 400, "variables must be an object");

    // Malformed requests.
    let json_ct = [("content-type", "application/json")];
    for (b, why) in [
        ("{not json", "not valid JSON"),
        ("[]", "must be a JSON object"),
        ("{\"variables\": {}}", "`query` is missing"),
        ("{\"query\": 42}", "`query` must be a string"),
        (
            "{\"query\": \"{ users { id } }\", \"variables\": [1]}",
            "`variables` must be an object",
        ),
        (
            "{\"query\": \"{ users { id } }\", \"operationName\": 7}",
            "`operationName` must be a string",
        ),
    ] {
        let r = send(&engine, pool, req("POST", "/graphql", &json_ct, b)).await;
        assert_eq!(r.status, 400, "{b}");
        let v = r.json();
        assert!(
            v["errors"][0]["message"].as_str().unwrap().contains(why),
            "{v}"
        );
        assert_eq!(v["errors"][0]["extensions"]["code"], json!("BAD_REQUEST"));
    }
    let r = send(
        &engine,
        pool,
        req(
            "POST",
            "/graphql",
            &[("content-type", "text/plain")],
            body.clone(),
        ),
    )
    .await;
    assert_eq!(r.status, 415);
    let r = send(&engine, pool, req("POST", "/graphql", &[], body.clone())).await;
    assert_eq!(r.status, 415);
    let r = send(
        &engine,
        pool,
        req("PUT", "/graphql", &json_ct, body.clone()),
    )
    .await;
    assert_eq!(r.status, 405);
    assert_eq!(r.headers["allow"], "GET, POST");
    let r = send(
        &engine,
        pool,
        req(
            "POST",
            "/graphql",
            &[
                ("content-type", "application/json"),
                ("accept", "text/html"),
            ],
            body.clone(),
        ),
    )
    .await;
    assert_eq!(r.status, 406);

    // Body limit.
    let small = blog_engine_with(fraiseql::graphql::Limits {
        max_body_bytes: 100,
        ..Default::default()
    });
    let big = json!({"query": format!("{{ users {{ id }} }} # {}", "x".repeat(200))}).to_string();
    let r = send(&small, pool, req("POST", "/graphql", &json_ct, big)).await;
    assert_eq!(r.status, 413);

    // operationName.
    let doc = "query A { users(limit: 1) { id } } query B { posts(limit: 2) { id } }";
    let v = post_op(&engine, pool, doc, Some("B")).await;
    assert_eq!(v["data"]["posts"].as_array().unwrap().len(), 2);
    assert!(v["data"].get("users").is_none());
    let v = post_op(&engine, pool, doc, None).await;
    assert_eq!(
        v["errors"][0]["extensions"]["code"],
        json!("OPERATION_NAME_REQUIRED")
    );
    let v = post_op(&engine, pool, doc, Some("C")).await;
    assert_eq!(
        v["errors"][0]["extensions"]["code"],
        json!("OPERATION_NOT_FOUND")
    );
}

async fn post_op(
    engine: &fraiseql::graphql::Engine,
    pool: &deadpool_postgres::Pool,
    doc: &str,
    op: Option<&str>,
) -> Value {
    let b = json!({"query": doc, "operationName": op}).to_string();
    send(
        engine,
        pool,
        req(
            "POST",
            "/graphql",
            &[("content-type", "application/json")],
            b,
        ),
    )
    .await
    .json()
}

#[tokio::test]
async fn gzip_when_accepted_and_large() {
    let db = TestDb::new().await;
    db.load_blog().await;
    let engine = blog_engine();
    let pool = db.pool();
    let big =
        json!({"query": "{ users(limit: 50) { id name posts { title body comments { body } } } }"})
            .to_string();
    let hdrs = [
        ("content-type", "application/json"),
        ("accept-encoding", "br, gzip;q=0.8"),
    ];
    let r = send(&engine, pool, req("POST", "/graphql", &hdrs, big.clone())).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-encoding"], "gzip");
    let mut text = String::new();
    flate2::read::GzDecoder::new(&r.raw[..])
        .read_to_string(&mut text)
        .unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["data"]["users"].as_array().unwrap().len(), 50);
    assert!(r.raw.len() < text.len() / 3);
    // Not accepted, or small: plain.
    let r = send(
        &engine,
        pool,
        req(
            "POST",
            "/graphql",
            &[("content-type", "application/json")],
            big,
        ),
    )
    .await;
    assert!(r.headers.get("content-encoding").is_none());
    let small = json!({"query": "{ users(limit: 1) { id } }"}).to_string();
    let r = send(&engine, pool, req("POST", "/graphql", &hdrs, small)).await;
    assert!(r.headers.get("content-encoding").is_none());
    r.json();
}

/// Accept-Encoding as RFC 9110 §12.5.3 reads it, sent to a real `serve` over TCP: q=0 in any
/// spelling refuses gzip, a coding's own q wins over `*`, names are case-insensitive and
/// whitespace may surround `;` and `=`.
#[tokio::test]
async fn accept_encoding_q_values_over_http() {
    let db = TestDb::new().await;
    db.load_blog().await;
    let mut config = db.config();
    config.graphql.schema = crate_path("examples/blog/schema.json")
        .display()
        .to_string();
    let server = TestServer::start(config).await;
    let big = json!({"query": "{ users(limit: 50) { id name posts { title body } } }"});
    let cases = [
        ("gzip;q=0", false),
        ("gzip;q=0.0", false),
        ("gzip;q=0.000", false),
        ("gzip; q=0.00", false),
        ("GZIP;Q=0", false),
        ("gzip;q=0, *", false),
        ("*, gzip;q=0", false),
        ("*;q=0.5, gzip ; q = 0", false),
        ("*;q=0", false),
        ("br", false),
        ("identity", false),
        ("gzip", true),
        ("GZip", true),
        ("gzip;q=0.001", true),
        ("gzip ; q = 0.5", true),
        ("gzip;q=1", true),
        ("gzip;q=1.000", true),
        ("*", true),
        ("br;q=0, *;q=0.1", true),
        ("deflate, gzip;q=0.8", true),
    ];
    let mut wrong = Vec::new();
    for (accept_encoding, gzip) in cases {
        let r = http()
            .post(server.url("/graphql"))
            .header("accept-encoding", accept_encoding)
            .json(&big)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{accept_encoding}");
        let got = r
            .headers()
            .get("content-encoding")
            .map(|v| v.to_str().unwrap().to_owned());
        let body = r.bytes().await.unwrap();
        let text = if got.as_deref() == Some("gzip") {
            let mut t = String::new();
            flate2::read::GzDecoder::new(&body[..])
                .read_to_string(&mut t)
                .unwrap();
            t
        } else {
            String::from_utf8(body.to_vec()).unwrap()
        };
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["data"]["users"].as_array().unwrap().len(), 50);
        if (got.as_deref() == Some("gzip")) != gzip {
            wrong.push(format!(
                "Accept-Encoding: {accept_encoding:?} -> Content-Encoding {got:?}"
            ));
        }
    }
    assert!(wrong.is_empty(), "wrong choices:\n{}", wrong.join("\n"));
    server.stop().await;
}

#[tokio::test]
async fn metrics_are_recorded() {
    let db = TestDb::new().await;
    db.load_blog().await;
    let registry = prometheus::Registry::new();
    let metrics = GraphqlMetrics::register(&registry).unwrap();
    let engine = blog_engine().with_metrics(metrics);
    let pool = db.pool();
    let b = json!({"query": "query Users { users(limit: 1) { id } }", "operationName": "Users"})
        .to_string();
    let r = send(
        &engine,
        pool,
        req(
            "POST",
            "/graphql",
            &[("content-type", "application/json")],
            b,
        ),
    )
    .await;
    assert_eq!(r.status, 200);
    gql(&engine, pool, "{ nope }", json!({})).await;
    gql(&engine, pool, "{ user(id: \"x\") { id } }", json!({})).await;
    gql(
        &engine,
        pool,
        "mutation { deletePost(id: \"00000000-0000-4000-9000-000000000001\") { id } }",
        json!({}),
    )
    .await;
    let mut out = Vec::new();
    prometheus::Encoder::encode(
        &prometheus::TextEncoder::new(),
        &registry.gather(),
        &mut out,
    )
    .unwrap();
    let text = String::from_utf8(out).unwrap();
    for needle in [
        "fraiseql_graphql_operations_total{name=\"Users\",outcome=\"ok\",type=\"query\"} 1",
        "fraiseql_graphql_operations_total{name=\"anonymous\",outcome=\"error\",type=\"invalid\"} 1",
        "fraiseql_graphql_operations_total{name=\"anonymous\",outcome=\"partial\",type=\"query\"} 1",
        "fraiseql_graphql_operations_total{name=\"anonymous\",outcome=\"ok\",type=\"mutation\"} 1",
        "fraiseql_graphql_errors_total{code=\"GRAPHQL_VALIDATION_FAILED\"} 1",
        "fraiseql_graphql_errors_total{code=\"BAD_USER_INPUT\"} 1",
        "fraiseql_graphql_request_duration_seconds_count{type=\"query\"} 2",
        "fraiseql_graphql_sql_duration_seconds_count{type=\"mutation\"} 1",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
}
