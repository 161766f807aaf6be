//! The GraphiQL introspection query (built by graphql-js's `getIntrospectionQuery`) answered
//! by the engine loads in graphql-js `buildClientSchema` and passes `validateSchema`.
//! Installs npm `graphql` into tests/js when node_modules is missing.

use crate::common;

use std::process::Command;

use common::*;
use serde_json::json;

fn js_dir() -> std::path::PathBuf {
    crate_path("tests/js")
}

fn ensure_graphql_js() {
    if js_dir().join("node_modules/graphql/package.json").exists() {
        return;
    }
    let status = Command::new("npm")
        .args(["install", "--no-audit", "--no-fund"])
        .current_dir(js_dir())
        .status()
        .expect("npm must be installed to run this test");
    assert!(status.success(), "npm install failed");
}

#[tokio::test]
async fn introspection_loads_in_graphql_js() {
    ensure_graphql_js();
    let out = Command::new("node")
        .arg("check-introspection.js")
        .arg("--query")
        .current_dir(js_dir())
        .output()
        .expect("node");
    assert!(out.status.success());
    let query = String::from_utf8(out.stdout).unwrap();
    assert!(query.contains("IntrospectionQuery"));

    // Introspection needs no database: the pool points at the test database anyway.
    let db = TestDb::new().await;
    let engine = blog_engine();
    let r = post(&engine, db.pool(), &query, json!({})).await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert!(v.get("errors").is_none(), "{v}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("introspection.json");
    std::fs::write(&file, r.raw.as_ref()).unwrap();
    let out = Command::new("node")
        .arg("check-introspection.js")
        .arg(&file)
        .current_dir(js_dir())
        .output()
        .expect("node");
    let sdl = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "graphql-js rejected the schema: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "type Query {",
        "users(limit: Int! = 10, where: UserWhereInput, orderBy: [UserOrderBy!], offset: Int): [User!]!",
        "type Mutation {",
        "createPost(input: CreatePostInput!): Post!",
        "input UserWhereInput {",
        "_and: [UserWhereInput!]",
        "input StringFilter {",
        "icontains: String",
        "enum Role {",
        "enum OrderDirection {",
        "scalar DateTime",
        "scalar UUID",
        "scalar BigInt",
    ] {
        assert!(sdl.contains(needle), "missing `{needle}` in\n{sdl}");
    }
    assert!(!sdl.contains("_EmptySubscription"));

    // Introspection can be switched off.
    let closed = blog_engine_with(fraiseql::graphql::Limits {
        introspection: false,
        ..Default::default()
    });
    let v = gql(
        &closed,
        db.pool(),
        "{ __schema { queryType { name } } }",
        json!({}),
    )
    .await;
    assert!(v["errors"].is_array() && v.get("data").is_none(), "{v}");
    let d = data(&closed, db.pool(), "{ __typename }", json!({})).await;
    assert_eq!(d, json!({"__typename": "Query"}));
}
