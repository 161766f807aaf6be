//! Hostile inputs: each gets a clear error (status and `extensions.code`), nothing leaks
//! (no SQL, no table or view names, no internals), nothing changes, and the engine keeps
//! serving afterwards.

use crate::common;

use bytes::Bytes;
use common::*;
use serde_json::{Value, json};

enum Body {
    Gql(String, Value),
    GqlOp(String, Option<String>),
    Raw(&'static str, Vec<u8>),
    Get(String),
}

struct Case {
    name: &'static str,
    body: Body,
    status: u16,
    /// Expected `extensions.code` of the first error (`None`: no error expected).
    code: Option<&'static str>,
}

fn case(name: &'static str, query: impl Into<String>, vars: Value, code: &'static str) -> Case {
    Case {
        name,
        body: Body::Gql(query.into(), vars),
        status: 200,
        code: Some(code),
    }
}

const LEAKS: &[&str] = &[
    "SELECT",
    "select ",
    "jsonb",
    "json_build",
    "v_user",
    "v_post",
    "tb_",
    "postgres",
    "syntax error at or near",
    "panicked",
    "fraiseql.",
    "$1",
    "sqlstate",
    "SQLSTATE",
];

fn cases() -> Vec<Case> {
    let deep_where = {
        let mut w = json!({"views": {"gt": 1}});
        for _ in 0..40 {
            w = json!({"_not": w});
        }
        w
    };
    let deep_literal = format!(
        "{{ posts(where: {}{}{}) {{ id }} }}",
        "{_not: ".repeat(300),
        "{views: {gt: 1}}",
        "}".repeat(300)
    );
    let alias_bomb = format!(
        "{{ users(limit: 1) {{ {} }} }}",
        (0..200)
            .map(|i| format!("a{i}: name"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let root_bomb = format!(
        "{{ {} }}",
        (0..100)
            .map(|i| format!("u{i}: users(limit: 1000) {{ id }}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let fragment_bomb = {
        let mut doc = String::from("{ users(limit: 1) { ...F0 } }\n");
        for i in 0..20 {
            doc.push_str(&format!(
                "fragment F{i} on User {{ ...F{} ...F{} }}\n",
                i + 1,
                i + 1
            ));
        }
        doc.push_str("fragment F20 on User { name }\n");
        doc
    };
    let huge_in: Vec<i32> = (0..5000).collect();
    let token_bomb = format!("{{ users(limit: 1) {{ {} }} }}", "id ".repeat(20_000));
    let brace_bomb = format!("{}{}", "{".repeat(10_000), "}".repeat(10_000));
    vec![
        case(
            "SQL in a string value",
            "{ posts(where: {title: {eq: \"'; DROP TABLE tb_post; --\"}}) { id } }",
            json!({}),
            "NONE",
        ),
        case(
            "SQL in a like pattern",
            "{ posts(where: {title: {like: \"%' OR 1=1 --\"}}) { id } }",
            json!({}),
            "NONE",
        ),
        case(
            "SQL in a variable",
            "query($t: String) { posts(where: {body: {contains: $t}}) { id } }",
            json!({"t": "x\\'); DELETE FROM tb_post; --"}),
            "NONE",
        ),
        case(
            "SQL in a field name",
            "{ users { name; DROP TABLE tb_user } }",
            json!({}),
            "GRAPHQL_PARSE_FAILED",
        ),
        case(
            "unknown field",
            "{ users { password } }",
            json!({}),
            "GRAPHQL_VALIDATION_FAILED",
        ),
        case(
            "SQL in an enum literal",
            "{ users(where: {role: {eq: ADMIN_OR_1_EQ_1}}) { id } }",
            json!({}),
            "BAD_USER_INPUT",
        ),
        case(
            "SQL in an enum variable",
            "query($r: Role) { users(where: {role: {eq: $r}}) { id } }",
            json!({"r": "admin' OR '1'='1"}),
            "BAD_USER_INPUT",
        ),
        case(
            "SQL in an orderBy field",
            "{ users(orderBy: [{name_DESC_DROP: ASC}]) { id } }",
            json!({}),
            "GRAPHQL_VALIDATION_FAILED",
        ),
        case(
            "SQL in an orderBy direction variable",
            "query($o: [UserOrderBy!]) { users(orderBy: $o) { id } }",
            json!({"o": [{"name": "ASC; DROP TABLE tb_user"}]}),
            "BAD_USER_INPUT",
        ),
        Case {
            name: "SQL in the operation name",
            body: Body::GqlOp(
                "query A { users(limit: 1) { id } }".into(),
                Some("A'; DROP TABLE tb_user; --".into()),
            ),
            status: 200,
            code: Some("OPERATION_NOT_FOUND"),
        },
        Case {
            name: "unknown operation name",
            body: Body::GqlOp(
                "query A { users(limit: 1) { id } } query B { posts(limit: 1) { id } }".into(),
                Some("C".into()),
            ),
            status: 200,
            code: Some("OPERATION_NOT_FOUND"),
        },
        case(
            "deeply nested braces",
            brace_bomb,
            json!({}),
            "LIMIT_EXCEEDED",
        ),
        case(
            "deeply nested where (variables)",
            "query($w: PostWhereInput) { posts(where: $w) { id } }",
            json!({"w": deep_where}),
            "LIMIT_EXCEEDED",
        ),
        case(
            "deeply nested where (literal)",
            deep_literal,
            json!({}),
            "LIMIT_EXCEEDED",
        ),
        case("alias bomb", alias_bomb, json!({}), "LIMIT_EXCEEDED"),
        case("root field bomb", root_bomb, json!({}), "LIMIT_EXCEEDED"),
        case(
            "fragment expansion bomb",
            fragment_bomb,
            json!({}),
            "LIMIT_EXCEEDED",
        ),
        case("token bomb", token_bomb, json!({}), "LIMIT_EXCEEDED"),
        case(
            "huge in list",
            "query($v: [Int!]) { posts(where: {views: {in: $v}}) { id } }",
            json!({"v": huge_in}),
            "LIMIT_EXCEEDED",
        ),
        case(
            "huge limit",
            "{ posts(limit: 1000000) { id } }",
            json!({}),
            "LIMIT_EXCEEDED",
        ),
        case(
            "negative offset",
            "{ posts(offset: -5) { id } }",
            json!({}),
            "BAD_USER_INPUT",
        ),
        case(
            "Int literal out of range",
            "{ posts(limit: 99999999999) { id } }",
            json!({}),
            "GRAPHQL_PARSE_FAILED",
        ),
        case(
            "wrong variable type",
            "query($l: Int) { posts(limit: $l) { id } }",
            json!({"l": "ten"}),
            "BAD_USER_INPUT",
        ),
        case(
            "missing required variable",
            "query($id: UUID!) { user(id: $id) { id } }",
            json!({}),
            "BAD_USER_INPUT",
        ),
        case(
            "variable object for a scalar",
            "query($id: UUID!) { user(id: $id) { id } }",
            json!({"id": {"$ne": null}}),
            "BAD_USER_INPUT",
        ),
        case(
            "invalid UUID",
            "{ user(id: \"1 OR 1=1\") { id } }",
            json!({}),
            "BAD_USER_INPUT",
        ),
        case(
            "invalid timestamp",
            "{ posts(where: {createdAt: {gt: \"yesterday'; --\"}}) { id } }",
            json!({}),
            "BAD_USER_INPUT",
        ),
        case(
            "NUL byte in a value",
            "query($t: String) { posts(where: {title: {eq: $t}}) { id } }",
            json!({"t": "a\u{0}b"}),
            "BAD_USER_INPUT",
        ),
        case(
            "float where an Int is needed",
            "{ posts(where: {views: {gt: 1.5}}) { id } }",
            json!({}),
            "GRAPHQL_VALIDATION_FAILED",
        ),
        case(
            "subscription",
            "subscription { users { id } }",
            json!({}),
            "OPERATION_NOT_SUPPORTED",
        ),
        case(
            "mutation with SQL in input",
            "mutation { deletePost(id: \"00000000-0000-4000-9000-000000000001'; DROP TABLE tb_post; --\") { id } }",
            json!({}),
            "BAD_USER_INPUT",
        ),
        case(
            "__type with SQL in the name",
            "{ __type(name: \"User'; DROP TABLE tb_user; --\") { name } }",
            json!({}),
            "NONE",
        ),
        case("empty query", "   ", json!({}), "GRAPHQL_PARSE_FAILED"),
        case(
            "query too large",
            format!("{{ users {{ id }} }} #{}", "x".repeat(200_000)),
            json!({}),
            "LIMIT_EXCEEDED",
        ),
        Case {
            name: "10 MB body",
            body: Body::Raw("application/json", {
                let mut b = br#"{"query": "{ users { id } }", "pad": ""#.to_vec();
                b.extend(std::iter::repeat_n(b'x', 10 << 20));
                b.extend(br#""}"#);
                b
            }),
            status: 413,
            code: Some("PAYLOAD_TOO_LARGE"),
        },
        Case {
            name: "invalid UTF-8",
            body: Body::Raw(
                "application/json",
                vec![b'{', b'"', b'q', 0xff, 0xfe, b'"', b'}'],
            ),
            status: 400,
            code: Some("BAD_REQUEST"),
        },
        Case {
            name: "truncated JSON",
            body: Body::Raw("application/json", b"{\"query\": \"{ users".to_vec()),
            status: 400,
            code: Some("BAD_REQUEST"),
        },
        Case {
            name: "batch array",
            body: Body::Raw(
                "application/json",
                b"[{\"query\": \"{ users { id } }\"}]".to_vec(),
            ),
            status: 400,
            code: Some("BAD_REQUEST"),
        },
        Case {
            name: "form body",
            body: Body::Raw(
                "application/x-www-form-urlencoded",
                b"query=%7B+users+%7B+id+%7D+%7D".to_vec(),
            ),
            status: 415,
            code: Some("UNSUPPORTED_MEDIA_TYPE"),
        },
        Case {
            name: "bad percent-encoding in GET",
            body: Body::Get("/graphql?query=%7B%20users%20%7B%20id%20%7D%20%7D%ZZ".into()),
            status: 400,
            code: Some("BAD_REQUEST"),
        },
        Case {
            name: "invalid UTF-8 in GET",
            body: Body::Get("/graphql?query=%7B%20users%20%7B%20id%20%7D%FF%7D".into()),
            status: 400,
            code: Some("BAD_REQUEST"),
        },
    ]
}

async fn count(db: &TestDb, sql: &str) -> i64 {
    db.client().await.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn hostile_inputs_get_clear_errors_and_change_nothing() {
    let db = TestDb::new().await;
    let seed = db.load_blog().await;
    let engine = blog_engine();
    let pool = db.pool();
    let posts = count(&db, "SELECT count(*) FROM tb_post").await;
    let users = count(&db, "SELECT count(*) FROM tb_user").await;
    let all = cases();
    assert!(all.len() >= 25, "{} cases", all.len());
    for c in all {
        let r = match &c.body {
            Body::Gql(q, vars) => post(&engine, pool, q, vars.clone()).await,
            Body::GqlOp(q, op) => {
                let b = json!({"query": q, "operationName": op}).to_string();
                let req = http::Request::builder()
                    .method("POST")
                    .uri("/graphql")
                    .header("content-type", "application/json")
                    .body(Bytes::from(b))
                    .unwrap();
                send(&engine, pool, req).await
            }
            Body::Raw(ct, bytes) => {
                let req = http::Request::builder()
                    .method("POST")
                    .uri("/graphql")
                    .header("content-type", *ct)
                    .body(Bytes::from(bytes.clone()))
                    .unwrap();
                send(&engine, pool, req).await
            }
            Body::Get(uri) => {
                let req = http::Request::builder()
                    .method("GET")
                    .uri(uri.as_str())
                    .body(Bytes::new())
                    .unwrap();
                send(&engine, pool, req).await
            }
        };
        assert_eq!(r.status, c.status, "{}: {}", c.name, r.text());
        let text = r.text();
        let sent = match &c.body {
            Body::Gql(q, vars) => format!("{q}{vars}"),
            Body::GqlOp(q, op) => format!("{q}{op:?}"),
            Body::Raw(_, b) => String::from_utf8_lossy(&b[..b.len().min(4096)]).into_owned(),
            Body::Get(u) => u.clone(),
        };
        for leak in LEAKS {
            // Echoing the client's own input back is fine; anything else is a leak.
            if !sent.contains(leak) {
                assert!(!text.contains(leak), "{}: leaks `{leak}`: {text}", c.name);
            }
        }
        let v = r.json();
        match c.code {
            Some("NONE") => assert!(v.get("errors").is_none(), "{}: {v}", c.name),
            Some(code) => {
                let errs = errors(&v);
                assert!(!errs.is_empty(), "{}: expected an error: {v}", c.name);
                assert_eq!(errs[0].1, code, "{}: {v}", c.name);
                assert!(
                    errs[0].0.len() > 10,
                    "{}: message should explain: {v}",
                    c.name
                );
            }
            None => {}
        }
    }
    // Nothing changed and the engine still serves.
    assert_eq!(count(&db, "SELECT count(*) FROM tb_post").await, posts);
    assert_eq!(count(&db, "SELECT count(*) FROM tb_user").await, users);
    let d = data(
        &engine,
        pool,
        "{ users(limit: 1, orderBy: [{identifier: ASC}]) { name } }",
        json!({}),
    )
    .await;
    assert_eq!(d["users"][0]["name"], json!(seed.users[0].name));
}

#[tokio::test]
async fn selection_depth_limit_counts_fragments() {
    let db = TestDb::new().await;
    db.load_blog().await;
    let engine = blog_engine_with(fraiseql::graphql::Limits {
        max_depth: 3,
        ..Default::default()
    });
    let pool = db.pool();
    // users(1) → posts(2) → comments(3): allowed.
    data(
        &engine,
        pool,
        "{ users(limit: 1) { posts { comments { body } } } }",
        json!({}),
    )
    .await;
    // … → author(4), hidden behind fragments: refused before any SQL runs.
    let v = gql(
        &engine,
        pool,
        "{ users(limit: 1) { ...P } } fragment P on User { posts { ...C } } fragment C on Post { comments { author { name } } }",
        json!({}),
    )
    .await;
    assert_eq!(errors(&v)[0].1, "LIMIT_EXCEEDED", "{v}");
    assert!(errors(&v)[0].0.contains("deeper than 3"), "{v}");
    assert!(v.get("data").is_none());
}

/// Found by `make fuzz` (graphql_request): a variable whose type is not in the schema, with a
/// default value, made juniper's validation panic (caught, but answered as an internal
/// error and logged as a panic). It is a validation error like any unknown type.
#[test]
fn unknown_variable_type_with_default_is_a_validation_error() {
    let engine = blog_engine();
    let crash: &[u8] = br#"{"query":"query Q($w: PostWhmrhmreq=ery) { posts(where:$,w  orderBy: [{views: DESC}], limit: 5, offset: 1) i{d az gs author { name } comments { body } } }","opeionName":"Q","variables":{"w":{"_or":[{"title":{"conta/ns":"x"}},{"views":{"gt":1}}]}}}"#;
    let fuzzed = fraiseql::graphql::http::parse_body(crash)
        .expect("a JSON body")
        .expect("with a query");
    let minimal = fraiseql::graphql::Request {
        query: "query($w: Nope = 1, $v: [Missing!]! = []) { posts { id } }".into(),
        operation_name: None,
        variables: None,
    };
    for req in [fuzzed, minimal] {
        let body = engine.explain(&req).expect_err("refused");
        let v: Value = serde_json::from_str(&body).expect("an error body");
        let e = &v["errors"][0];
        assert_eq!(
            e["extensions"]["code"], "GRAPHQL_VALIDATION_FAILED",
            "{body}"
        );
        assert!(
            e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("Unknown type")),
            "{body}"
        );
    }
}
