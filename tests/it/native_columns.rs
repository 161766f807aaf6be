//! `where` and `orderBy` on a view's native columns: a field whose key names a column of
//! the view with a type that holds its values compiles against the column (so the base
//! table's index can serve it), everything else against the `data` key; both give the same
//! answers, and `explain` says which path each field took.

use crate::common;

use common::*;
use serde_json::json;

/// `v_post` with native columns beside `data`: `title`, `views`, `rating`, `created_at`
/// (their own types), and a decoy `published` as text that must not be used for a Boolean.
const NATIVE_POST: &str = "ALTER VIEW v_post RENAME TO v_post_base; \
     CREATE VIEW v_post AS SELECT b.id, b.data, p.title, p.views, p.rating, p.created_at, \
       CASE WHEN p.published THEN 'yes' ELSE 'no' END AS published \
       FROM v_post_base b JOIN tb_post p ON p.id = b.id; \
     CREATE INDEX tb_post_views_idx ON tb_post (views); \
     CREATE INDEX tb_post_title_idx ON tb_post (title);";

const QUERIES: &[&str] = &[
    "{ posts(where: {views: {gte: 10}}, orderBy: [{views: DESC}, {title: ASC}], limit: 7) { title views } }",
    "{ posts(where: {views: {in: [37, 370, 74, 407]}, title: {startswith: \"Post 1\"}}, orderBy: [{title: ASC}]) { title views } }",
    "{ posts(where: {rating: {isnull: true}}, orderBy: [{title: DESC}], limit: 5) { title rating } }",
    "{ posts(where: {rating: {gt: 2.5}, _or: [{views: {lt: 100}}, {title: {icontains: \"BY USER-0\"}}]}, orderBy: [{rating: ASC}, {title: ASC}]) { title rating views } }",
    "{ posts(where: {createdAt: {gt: \"2000-01-01T00:00:00Z\"}, published: {eq: true}}, orderBy: [{createdAt: ASC}, {title: ASC}], limit: 4) { title published } }",
    "{ posts(where: {_not: {views: {gte: 500}}, author: {identifier: {eq: \"user-01\"}}}, orderBy: [{views: ASC}, {title: ASC}]) { title author { identifier } } }",
];

#[tokio::test]
async fn conditions_on_native_columns_answer_as_the_data_keys_do() {
    let plain = TestDb::new().await;
    plain.load_blog().await;
    let native = TestDb::new().await;
    native.load_blog().await;
    native.batch(NATIVE_POST).await;
    let (e1, e2) = (blog_engine(), blog_engine());
    for q in QUERIES {
        let a = gql(&e1, plain.pool(), q, json!({})).await;
        let b = gql(&e2, native.pool(), q, json!({})).await;
        assert!(a.get("errors").is_none(), "{q}: {a}");
        assert!(
            a["data"]["posts"].as_array().is_some_and(|r| !r.is_empty()),
            "{q} selects rows: {a}"
        );
        assert_eq!(a, b, "{q}");
    }
    // The second engine did compile against the columns.
    let stmts = e2
        .explain(&fraiseql::graphql::Request {
            query: QUERIES[0].into(),
            operation_name: None,
            variables: None,
        })
        .unwrap();
    let sql = &stmts[0].1.sql;
    assert!(sql.contains("v.\"views\" >= CAST("), "{sql}");
    assert!(
        sql.contains("ORDER BY v.\"views\" DESC, v.\"title\" ASC"),
        "{sql}"
    );
    assert!(
        !sql.contains("v.\"data\"->>'views'"),
        "the condition does not read the data key: {sql}"
    );
}

/// `fraiseql explain [--inline]` of `query` over the blog schema, with `db_url`'s catalog.
fn explain(db_url: &str, query: &str, inline: bool) -> String {
    let schema = crate_path("examples/blog/schema.json");
    let mut args = vec!["explain", "--schema", schema.to_str().unwrap(), query];
    if inline {
        args.push("--inline");
    }
    let o = bin()
        .env("FRAISEQL_DATABASE_URL", db_url)
        .args(&args)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test]
async fn explain_names_each_path_and_the_index_serves_the_native_ones() {
    let db = TestDb::new().await;
    db.load_blog().await;
    db.batch(NATIVE_POST).await;
    let query = "{ posts(where: {views: {gte: 10}, published: {eq: true}, author: {identifier: {eq: \"user-01\"}}}, orderBy: [{title: ASC}], limit: 3) { title } }";
    let out = explain(&db.url(), query, true);
    for note in [
        "-- where views: column v.\"views\" (integer)",
        "-- where published: data key",
        "-- where author: data key",
        "-- orderBy title: column v.\"title\" (text)",
    ] {
        assert!(out.contains(note), "{note} in:\n{out}");
    }
    // A native condition reaches the base table's index (sequential scans off, so the plan
    // shows whether an index can serve it at all on this small table).
    let sql: String = explain(
        &db.url(),
        "{ posts(where: {views: {gte: 990}}, orderBy: [{views: ASC}], limit: 3) { title } }",
        true,
    )
    .lines()
    .filter(|l| !l.starts_with("--"))
    .collect();
    let client = db.client().await;
    client
        .batch_execute("SET enable_seqscan = off")
        .await
        .unwrap();
    let plan: Vec<String> = client
        .query(
            &format!("EXPLAIN (ANALYZE, COSTS OFF) {}", sql.trim_end_matches(';')),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let plan = plan.join("\n");
    assert!(
        plan.contains("Index Scan using tb_post_views_idx")
            && plan.contains("Index Cond: (views >= 990)"),
        "{plan}"
    );

    // Without a reachable catalog, explain says so and uses the data keys.
    let out = explain("postgres://postgres@127.0.0.1:1/none", query, false);
    assert!(out.contains("catalog was not read"), "{out}");
    assert!(out.contains("'views'"), "{out}");
}

/// A value that does not fit the column's type is refused as bad input, as it is on the
/// data key path, not answered with a database error.
#[tokio::test]
async fn bad_values_on_native_columns_are_bad_input() {
    let db = TestDb::new().await;
    db.load_blog().await;
    db.batch(NATIVE_POST).await;
    let engine = blog_engine();
    let v = gql(
        &engine,
        db.pool(),
        "{ posts(where: {createdAt: {gt: \"not a time\"}}) { title } }",
        json!({}),
    )
    .await;
    assert_eq!(
        v["errors"][0]["extensions"]["code"],
        json!("BAD_USER_INPUT"),
        "{v}"
    );
}
