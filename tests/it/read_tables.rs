//! `graphql.read_tables`: queries read a view's `tv_` copy when it exists and can stand in
//! for the view, with the same answers; its stored generated columns serve conditions; a
//! copy that lacks one of the view's columns is not read, and `check` says why.

use crate::common;

use common::*;
use fraiseql::graphql::Engine;
use serde_json::json;

const QUERIES: &[&str] = &[
    "{ users(orderBy: [{identifier: ASC}], limit: 3) { identifier name posts { title } } }",
    "{ posts(where: {views: {gte: 10}}, orderBy: [{views: DESC}, {title: ASC}], limit: 5) { title views author { name } comments { body } } }",
    "{ comments(orderBy: [{body: ASC}], limit: 4) { body author { identifier } } }",
];

/// The blog with its hand-written copies (examples/blog/tv.sql) filled in.
async fn blog_with_copies() -> TestDb {
    let db = TestDb::new().await;
    db.load_blog().await;
    let tv = std::fs::read_to_string(crate_path("examples/blog/tv.sql")).unwrap();
    db.batch(&tv).await;
    db
}

fn reading_tables() -> Engine {
    blog_engine().with_read_tables(true)
}

fn sql_of(engine: &Engine, query: &str) -> String {
    let stmts = engine
        .explain(&fraiseql::graphql::Request {
            query: query.into(),
            operation_name: None,
            variables: None,
        })
        .unwrap();
    stmts[0].1.sql.clone()
}

#[tokio::test]
async fn read_tables_answers_from_the_copy_as_from_the_view() {
    let db = blog_with_copies().await;
    let (views, tables) = (blog_engine(), reading_tables());
    for q in QUERIES {
        let a = data(&views, db.pool(), q, json!({})).await;
        let b = data(&tables, db.pool(), q, json!({})).await;
        assert!(
            a.as_object()
                .unwrap()
                .values()
                .all(|v| v.as_array().is_some_and(|r| !r.is_empty())),
            "{q} selects rows: {a}"
        );
        assert_eq!(a, b, "{q}");
    }
    let sql = sql_of(&tables, QUERIES[1]);
    assert!(sql.contains("FROM \"tv_post\" v"), "{sql}");
    assert!(sql_of(&views, QUERIES[1]).contains("FROM \"v_post\" v"));

    // The answer does come from the copy: a row changed only there shows, and only there.
    db.batch("UPDATE tv_user SET data = jsonb_set(data, '{name}', '\"only in tv_user\"') WHERE data->>'identifier' = 'user-01'")
        .await;
    let q = "{ users(where: {identifier: {eq: \"user-01\"}}) { name } }";
    assert_eq!(
        data(&tables, db.pool(), q, json!({})).await,
        json!({"users": [{"name": "only in tv_user"}]})
    );
    assert_ne!(
        data(&views, db.pool(), q, json!({})).await,
        json!({"users": [{"name": "only in tv_user"}]})
    );
}

#[tokio::test]
async fn read_tables_conditions_use_generated_columns_and_nothing_else() {
    let db = blog_with_copies().await;
    // `views` is derived from data (usable); `title` is a plain column the view lacks
    // (nothing says it equals the key: filled with a decoy here), as is `updated_at`.
    db.batch(
        "ALTER TABLE tv_post ADD COLUMN views integer GENERATED ALWAYS AS ((data->>'views')::integer) STORED; \
         CREATE INDEX tv_post_views_idx ON tv_post (views); \
         ALTER TABLE tv_post ADD COLUMN title text DEFAULT 'decoy', ADD COLUMN updated_at timestamptz DEFAULT now();",
    )
    .await;
    let (views, tables) = (blog_engine(), reading_tables());
    let q = "{ posts(where: {views: {gte: 10}, title: {startswith: \"Post 1\"}}, orderBy: [{views: ASC}, {title: ASC}]) { title views } }";
    let a = data(&views, db.pool(), q, json!({})).await;
    assert!(a["posts"].as_array().is_some_and(|r| !r.is_empty()), "{a}");
    assert_eq!(a, data(&tables, db.pool(), q, json!({})).await);
    let sql = sql_of(&tables, q);
    assert!(sql.contains("FROM \"tv_post\" v"), "{sql}");
    assert!(
        sql.contains("v.\"views\" >= CAST("),
        "the generated column serves `views`: {sql}"
    );
    assert!(
        !sql.contains("v.\"title\""),
        "a plain column of the copy is not taken for the key: {sql}"
    );
}

#[tokio::test]
async fn read_tables_skips_a_copy_that_cannot_stand_in_and_check_says_why() {
    let db = blog_with_copies().await;
    // v_post gains a native column the copy does not have: reading tv_post would lose it.
    db.batch(
        "ALTER VIEW v_post RENAME TO v_post_base; \
         CREATE VIEW v_post AS SELECT b.id, b.data, p.views FROM v_post_base b JOIN tb_post p ON p.id = b.id;",
    )
    .await;
    let tables = reading_tables();
    let q = "{ posts(orderBy: [{title: ASC}], limit: 2) { title } }";
    let a = data(&tables, db.pool(), q, json!({})).await;
    assert_eq!(a, data(&blog_engine(), db.pool(), q, json!({})).await);
    let sql = sql_of(&tables, q);
    assert!(sql.contains("FROM \"v_post\" v"), "the view is read: {sql}");

    let client = db.client().await;
    let items = tables.check_database(&client).await;
    let post = items.iter().find(|i| i.name == "tv_post").unwrap();
    assert!(!post.ok, "{post:?}");
    assert!(
        post.message.contains("lacks the view's column `views`"),
        "{post:?}"
    );
    let user = items.iter().find(|i| i.name == "tv_user").unwrap();
    assert!(
        user.ok && user.message.contains("read instead of v_user"),
        "{user:?}"
    );
    // Without read_tables, check does not look at the copies.
    let items = blog_engine().check_database(&client).await;
    assert!(items.iter().all(|i| i.kind != "table"), "{items:?}");
}
