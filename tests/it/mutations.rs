//! Mutations on real PostgreSQL: the function called with the input as jsonb or with
//! flattened arguments, the selection applied to the returned entity, exactly one change-log
//! row per change written in the same transaction, and failures rolled back completely.

use crate::common;

use common::observers::HttpReceiver;
use common::*;
use serde_json::{Value, json};

async fn count(db: &TestDb, sql: &str) -> i64 {
    db.client().await.query_one(sql, &[]).await.unwrap().get(0)
}

async fn log_rows(
    db: &TestDb,
    entity_id: &str,
) -> Vec<(String, String, Option<Value>, Option<Vec<String>>)> {
    let id = uuid::Uuid::parse_str(entity_id).unwrap();
    db.client()
        .await
        .query(
            "SELECT entity, op, after, changed_fields FROM fraiseql.tb_entity_change_log WHERE entity_id = $1 ORDER BY pk",
            &[&id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

pub(crate) const CREATE: &str = r#"
mutation Create($input: CreatePostInput!) {
  createPost(input: $input) { id title published rating tags kind: __typename author { identifier } comments { id } }
}"#;

#[tokio::test]
async fn create_update_delete_with_change_log() {
    let db = TestDb::new().await;
    let seed = db.load_blog().await;
    let engine = blog_engine();
    let pool = db.pool();
    let author = &seed.users[2];
    let posts_before = count(&db, "SELECT count(*) FROM tb_post").await;
    let log_before = count(&db, "SELECT count(*) FROM fraiseql.tb_entity_change_log").await;

    let d = data(
        &engine,
        pool,
        CREATE,
        json!({"input": {"authorId": author.id, "title": "Hello", "body": "World", "published": true, "rating": 4.5, "tags": ["x", "y"]}}),
    )
    .await;
    let created = &d["createPost"];
    assert_eq!(created["title"], json!("Hello"));
    assert_eq!(created["published"], json!(true));
    assert_eq!(created["rating"], json!(4.5));
    assert_eq!(created["tags"], json!(["x", "y"]));
    assert_eq!(created["kind"], json!("Post"));
    assert_eq!(created["author"]["identifier"], json!(author.identifier));
    assert_eq!(created["comments"], json!([]));
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(
        count(&db, "SELECT count(*) FROM tb_post").await,
        posts_before + 1
    );
    // The row is there as sent.
    let row = db
        .client()
        .await
        .query_one(
            "SELECT title, body, published FROM tb_post WHERE id = $1",
            &[&uuid::Uuid::parse_str(&id).unwrap()],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            row.get::<_, String>(0),
            row.get::<_, String>(1),
            row.get::<_, bool>(2)
        ),
        ("Hello".into(), "World".into(), true)
    );
    // Exactly one change-log row: the tracking trigger's (the row as written, every column
    // on INSERT), carrying what the mutation returned; the API adds no second one.
    let logs = log_rows(&db, &id).await;
    assert_eq!(logs.len(), 1, "{logs:?}");
    assert_eq!(logs[0].0, "Post");
    assert_eq!(logs[0].1, "INSERT");
    assert_eq!(logs[0].2.as_ref().unwrap()["title"], json!("Hello"));
    assert_eq!(
        logs[0].3.clone().unwrap(),
        vec![
            "body",
            "created_at",
            "fk_user",
            "id",
            "pk_post",
            "published",
            "rating",
            "tags",
            "title",
            "views"
        ]
    );
    let mutation: Value = db
        .client()
        .await
        .query_one(
            "SELECT mutation FROM fraiseql.tb_entity_change_log WHERE entity_id = $1",
            &[&uuid::Uuid::parse_str(&id).unwrap()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(mutation["name"], json!("createPost"));
    assert_eq!(
        mutation["entity"]["author"]["identifier"],
        json!(author.identifier)
    );
    assert_eq!(
        mutation["updated_fields"],
        json!(["title", "body", "published", "rating", "tags"])
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM fraiseql.tb_entity_change_log").await,
        log_before + 1
    );

    // Update with changed fields.
    let d = data(
        &engine,
        pool,
        "mutation($i: UpdatePostInput!) { updatePost(input: $i) { id title body } }",
        json!({"i": {"id": id, "title": "Hello again"}}),
    )
    .await;
    assert_eq!(
        d["updatePost"],
        json!({"id": id, "title": "Hello again", "body": "World"})
    );
    let logs = log_rows(&db, &id).await;
    assert_eq!(logs.len(), 2);
    assert_eq!(logs[1].1, "UPDATE");
    assert_eq!(logs[1].3.clone().unwrap(), vec!["title"]);

    // An update that changes nothing: succeeded, state_changed = false → no log row.
    let d = data(
        &engine,
        pool,
        "mutation($i: UpdatePostInput!) { updatePost(input: $i) { title } }",
        json!({"i": {"id": id, "title": "Hello again"}}),
    )
    .await;
    assert_eq!(d["updatePost"]["title"], json!("Hello again"));
    assert_eq!(log_rows(&db, &id).await.len(), 2);

    // Delete: the function declares `p_id uuid` → flattened arguments.
    let d = data(
        &engine,
        pool,
        "mutation($id: UUID!) { deletePost(id: $id) { id title } }",
        json!({"id": id}),
    )
    .await;
    assert_eq!(d["deletePost"], json!({"id": id, "title": "Hello again"}));
    assert_eq!(
        count(&db, "SELECT count(*) FROM tb_post").await,
        posts_before
    );
    let logs = log_rows(&db, &id).await;
    assert_eq!(logs.len(), 3);
    assert_eq!(logs[2].1, "DELETE");

    // Writes outside the API are still tracked by the trigger.
    db.batch("UPDATE tb_user SET name = 'Renamed' WHERE identifier = 'user-01'")
        .await;
    let logs = log_rows(&db, &seed.users[0].id.to_string()).await;
    assert_eq!(logs.last().unwrap().0, "User");
    assert_eq!(logs.last().unwrap().1, "UPDATE");

    // Several mutations in one request run in order.
    let d = data(
        &engine,
        pool,
        r#"mutation($a: UUID!) {
            first: createPost(input: {authorId: $a, title: "One", body: "b"}) { title }
            second: createPost(input: {authorId: $a, title: "Two", body: "b"}) { title }
        }"#,
        json!({"a": author.id}),
    )
    .await;
    assert_eq!(
        d,
        json!({"first": {"title": "One"}, "second": {"title": "Two"}})
    );
    let text = post(&engine, pool, "{ posts(where: {title: {in: [\"One\", \"Two\"]}}, orderBy: [{createdAt: ASC}]) { title } }", json!({})).await.text();
    assert!(text.find("One").unwrap() < text.find("Two").unwrap());
}

#[tokio::test]
async fn failures_commit_nothing() {
    let db = TestDb::new().await;
    let seed = db.load_blog().await;
    let engine = blog_engine();
    let pool = db.pool();
    let author = &seed.users[0];
    let existing = &seed.posts[author.posts[0]].title;
    let posts_before = count(&db, "SELECT count(*) FROM tb_post").await;
    let log_before = count(&db, "SELECT count(*) FROM fraiseql.tb_entity_change_log").await;

    // The function inserts, then finds the duplicate title and returns mutation_err: the
    // API rolls back, so the insert is gone too.
    let v = gql(
        &engine,
        pool,
        CREATE,
        json!({"input": {"authorId": author.id, "title": existing, "body": "dup"}}),
    )
    .await;
    assert_eq!(v["data"], Value::Null, "createPost is non-null: {v}");
    let e = &v["errors"][0];
    assert_eq!(e["extensions"]["code"], json!("CONFLICT"));
    assert_eq!(
        e["message"],
        json!("this author already has a post with this title")
    );
    assert_eq!(e["path"], json!(["createPost"]));
    assert!(e["locations"].is_array());
    assert_eq!(
        count(&db, "SELECT count(*) FROM tb_post").await,
        posts_before
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM fraiseql.tb_entity_change_log").await,
        log_before
    );

    // mutation_err before any write.
    let v = gql(&engine, pool, CREATE, json!({"input": {"authorId": "00000000-0000-4000-8000-0000000000ff", "title": "x", "body": "y"}})).await;
    assert_eq!(v["errors"][0]["extensions"]["code"], json!("NOT_FOUND"));
    let v = gql(
        &engine,
        pool,
        CREATE,
        json!({"input": {"authorId": author.id, "title": "  ", "body": "y"}}),
    )
    .await;
    assert_eq!(
        v["errors"][0]["extensions"]["code"],
        json!("VALIDATION_ERROR")
    );

    // Invalid input never reaches the database.
    let v = gql(
        &engine,
        pool,
        CREATE,
        json!({"input": {"authorId": "nope", "title": "x", "body": "y"}}),
    )
    .await;
    assert_eq!(
        v["errors"][0]["extensions"]["code"],
        json!("BAD_USER_INPUT")
    );
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("authorId")
    );

    // A function that raises: its own message (RAISE is the author's words), no SQL text,
    // nothing committed.
    db.batch(
        "CREATE OR REPLACE FUNCTION fn_update_post(input jsonb) RETURNS fraiseql.mutation_response LANGUAGE plpgsql AS $$ \
         BEGIN UPDATE tb_post SET title = 'changed'; RAISE EXCEPTION 'the post is locked'; END $$;",
    )
    .await;
    let v = gql(&engine, pool, "mutation { updatePost(input: {id: \"00000000-0000-4000-9000-000000000001\", title: \"t\"}) { id } }", json!({})).await;
    let text = v.to_string();
    assert_eq!(
        v["errors"][0]["extensions"]["code"],
        json!("MUTATION_FAILED")
    );
    assert_eq!(v["errors"][0]["message"], json!("the post is locked"));
    assert!(!text.contains("UPDATE"), "{text}");
    assert_eq!(
        count(&db, "SELECT count(*) FROM tb_post WHERE title = 'changed'").await,
        0
    );

    // A later mutation in the same request still runs after a failed one.
    let v = gql(
        &engine,
        pool,
        &format!(
            "mutation {{ bad: createPost(input: {{authorId: \"{0}\", title: \"{1}\", body: \"b\"}}) {{ id }} good: createPost(input: {{authorId: \"{0}\", title: \"Fresh\", body: \"b\"}}) {{ title }} }}",
            author.id, existing
        ),
        json!({}),
    )
    .await;
    // Both fields are non-null, so data is null, but the good one was committed.
    assert_eq!(v["data"], Value::Null);
    assert_eq!(
        count(&db, "SELECT count(*) FROM tb_post WHERE title = 'Fresh'").await,
        1
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM tb_post").await,
        posts_before + 1
    );

    // Mutations are refused over GET.
    let req = http::Request::builder()
        .method("GET")
        .uri("/graphql?query=mutation%20%7B%20deletePost(id%3A%20%2200000000-0000-4000-9000-000000000001%22)%20%7B%20id%20%7D%20%7D")
        .body(bytes::Bytes::new())
        .unwrap();
    let r = send(&engine, pool, req).await;
    assert_eq!(r.status, 405);
    assert_eq!(
        count(&db, "SELECT count(*) FROM tb_post").await,
        posts_before + 1
    );
}

/// `fn_create_post` with a side effect on another tracked table: each new post raises its
/// author's score (as an order decrements a product's stock).
pub(crate) const RAISE_SCORE_ON_NEW_POST: &str = "CREATE OR REPLACE FUNCTION fn_create_post(input jsonb) RETURNS fraiseql.mutation_response
         LANGUAGE plpgsql AS $$
         DECLARE v_author tb_user; v_id uuid;
         BEGIN
             SELECT * INTO v_author FROM tb_user WHERE id = (input ->> 'author_id')::uuid;
             INSERT INTO tb_post (fk_user, title, body) VALUES (v_author.pk_user, input ->> 'title', input ->> 'body')
             RETURNING id INTO v_id;
             UPDATE tb_user SET score = score + 1 WHERE pk_user = v_author.pk_user;
             RETURN fraiseql.mutation_ok(v_id, 'Post', (SELECT data FROM v_post WHERE id = v_id), true,
                                         'post created', ARRAY['title', 'body']);
         END $$;";

/// Every row a mutation's function writes to a tracked table is a change event, computed by
/// the tracking trigger exactly as for a write made with psql (`before`, `after`,
/// `changed_fields`), once per row change; the mutation's own entity is not logged twice,
/// and its row event carries what the mutation returned.
#[tokio::test]
async fn writes_inside_a_mutation_are_tracked_like_any_other_write() {
    let db = TestDb::new().await;
    let seed = db.load_blog().await;
    // A side effect on another tracked table: each new post raises its author's score.
    db.batch(RAISE_SCORE_ON_NEW_POST).await;
    let engine = blog_engine();
    let author = &seed.users[1];
    let start = count(
        &db,
        "SELECT coalesce(max(pk), 0) FROM fraiseql.tb_entity_change_log",
    )
    .await;
    let n = 10;
    let mut titles = Vec::new();
    for i in 0..n {
        let title = format!("Order {i}");
        let d = data(
            &engine,
            db.pool(),
            CREATE,
            json!({"input": {"authorId": author.id, "title": title, "body": "b"}}),
        )
        .await;
        assert_eq!(d["createPost"]["title"], json!(title));
        titles.push(title);
    }
    let rows = db
        .client()
        .await
        .query(
            "SELECT entity, op, before, after, changed_fields, to_jsonb(l) -> 'mutation' \
             FROM fraiseql.tb_entity_change_log l WHERE pk > $1 ORDER BY pk",
            &[&start],
        )
        .await
        .unwrap();
    let logged: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let of = |entity: &str| -> Vec<&tokio_postgres::Row> {
        rows.iter()
            .filter(|r| r.get::<_, String>(0) == entity)
            .collect()
    };
    let users = of("User");
    assert_eq!(users.len(), n, "one User UPDATE per mutation: {logged:?}");
    for (i, u) in users.iter().enumerate() {
        assert_eq!(u.get::<_, String>(1), "UPDATE");
        let before: Value = u.get(2);
        let after: Value = u.get(3);
        let score = before["score"].as_i64().unwrap();
        assert_eq!(score, author.score + i as i64, "before.score");
        assert_eq!(after["score"].as_i64().unwrap(), score + 1, "after.score");
        assert_eq!(u.get::<_, Vec<String>>(4), vec!["score"]);
        assert_eq!(
            u.get::<_, Option<Value>>(5).filter(|v| !v.is_null()),
            None,
            "not the mutation's entity"
        );
    }
    let posts = of("Post");
    assert_eq!(
        posts.len(),
        n,
        "one Post INSERT per mutation, not two: {rows:?}"
    );
    for (p, title) in posts.iter().zip(&titles) {
        assert_eq!(p.get::<_, String>(1), "INSERT");
        assert_eq!(p.get::<_, Option<Value>>(2), None);
        let after: Value = p.get(3);
        assert_eq!(after["title"], json!(title));
        let mutation: Value = p
            .get::<_, Option<Value>>(5)
            .expect("the mutation's annotation");
        assert_eq!(mutation["name"], json!("createPost"));
        assert_eq!(mutation["entity"]["title"], json!(title));
        assert_eq!(
            mutation["entity"]["author"]["identifier"],
            json!(author.identifier)
        );
        assert_eq!(mutation["updated_fields"], json!(["title", "body"]));
    }
    assert_eq!(rows.len(), 2 * n, "nothing else was logged");
}

/// End to end with the release binary: posts created through `/graphql` whose function
/// raises the author's score reach an observer on `User` UPDATE with `changed(score)` once
/// each, with `before.score` and `after.score`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutations_over_http_deliver_every_tracked_write_once() {
    use std::time::Duration;

    let db = TestDb::new().await;
    let seed = db.load_blog().await;
    db.batch(RAISE_SCORE_ON_NEW_POST).await;
    let rx = HttpReceiver::start_ok().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fraiseql.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[graphql]
schema = "{schema}"
[observer_runtime]
start_from = "beginning"
poll_interval_ms = 200
[[observers]]
name = "score"
entity = "User"
events = ["UPDATE"]
condition = "changed(score) && after.score > before.score"
[[observers.actions]]
type = "webhook"
url = "{url}"
"#,
            schema = crate_path("examples/blog/schema.json").display(),
            url = rx.url("/score")
        ),
    )
    .unwrap();
    let serve = ServeProcess::start_role(
        &["--config", path.to_str().unwrap(), "serve"],
        &db.url(),
        &[],
    )
    .await;
    let author = &seed.users[3];
    let n = 10;
    for i in 0..n {
        let r = http()
            .post(format!("{}/graphql", serve.base))
            .json(&json!({
                "query": CREATE,
                "variables": {"input": {"authorId": author.id, "title": format!("Order {i}"), "body": "b"}}
            }))
            .send()
            .await
            .unwrap();
        let v: Value = r.json().await.unwrap();
        assert!(v.get("errors").is_none(), "{v}");
    }
    let got = rx.wait_for(n, Duration::from_secs(20)).await;
    // Nothing more arrives later.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let got = if rx.len() > got.len() {
        rx.requests()
    } else {
        got
    };
    assert_eq!(got.len(), n, "one delivery per score change");
    let mut scores: Vec<(i64, i64)> = got
        .iter()
        .map(|r| {
            let d = r.json();
            (
                d["before"]["score"].as_i64().unwrap(),
                d["after"]["score"].as_i64().unwrap(),
            )
        })
        .collect();
    scores.sort();
    let want: Vec<(i64, i64)> = (0..n as i64)
        .map(|i| (author.score + i, author.score + i + 1))
        .collect();
    assert_eq!(scores, want, "before.score and after.score of each change");
    let keys: std::collections::HashSet<_> = got
        .iter()
        .map(|r| r.header("idempotency-key").unwrap_or_default().to_owned())
        .collect();
    assert_eq!(keys.len(), n, "no delivery duplicated");
    drop(serve);
}

/// Replaces `fn_update_post` with a body that fails the way `body` does (after a write that
/// must be rolled back), runs `updatePost`, and returns the answer.
async fn update_post_failing(db: &TestDb, engine: &fraiseql::graphql::Engine, body: &str) -> Value {
    db.batch(&format!(
        "CREATE OR REPLACE FUNCTION fn_update_post(input jsonb) RETURNS fraiseql.mutation_response \
         LANGUAGE plpgsql AS $f$ BEGIN UPDATE tb_post SET title = 'changed'; {body} \
         RETURN fraiseql.mutation_ok(NULL, 'Post', NULL, false, 'no change'); END $f$;"
    ))
    .await;
    let v = gql(
        engine,
        db.pool(),
        "mutation { updatePost(input: {id: \"00000000-0000-4000-9000-000000000001\", title: \"t\"}) { id } }",
        json!({}),
    )
    .await;
    assert_eq!(
        count(db, "SELECT count(*) FROM tb_post WHERE title = 'changed'").await,
        0,
        "nothing is committed: {v}"
    );
    v
}

#[tokio::test]
async fn database_errors_become_codes_a_client_can_act_on() {
    let db = TestDb::new().await;
    db.load_blog().await;
    let engine = blog_engine();
    let noperm = format!("fq_noperm_{}", db.name());
    db.batch(&format!(
        "CREATE TABLE t_key (k text PRIMARY KEY); INSERT INTO t_key VALUES ('taken'); \
         CREATE TABLE t_ref (k text REFERENCES t_key (k)); \
         CREATE SEQUENCE t_attempts; \
         DROP ROLE IF EXISTS {noperm}; CREATE ROLE {noperm};"
    ))
    .await;
    let _role = DropRole(noperm.clone());

    // The fuzzer's case: an invalid uuid cast inside the function. The message describes
    // the value, so the client sees it.
    let v = update_post_failing(&db, &engine, "PERFORM (input->>'title')::uuid;").await;
    let e = &v["errors"][0];
    assert_eq!(e["extensions"]["code"], json!("BAD_USER_INPUT"), "{v}");
    assert_eq!(e["extensions"]["sqlstate"], json!("22P02"), "{v}");
    assert!(e["message"].as_str().unwrap().contains("uuid"), "{v}");
    assert_eq!(e["path"], json!(["updatePost"]));

    let cases: &[(&str, &str, &str)] = &[
        ("INSERT INTO t_key VALUES ('taken');", "CONFLICT", "23505"),
        ("INSERT INTO t_ref VALUES ('missing');", "CONFLICT", "23503"),
        (
            "INSERT INTO t_key VALUES (NULL);",
            "BAD_USER_INPUT",
            "23502",
        ),
        ("PERFORM 1 / 0;", "BAD_USER_INPUT", "22012"),
        (
            &format!("SET LOCAL ROLE {noperm}; INSERT INTO t_key VALUES ('x');"),
            "FORBIDDEN",
            "42501",
        ),
        (
            "RAISE EXCEPTION 'cancelled' USING ERRCODE = 'query_canceled';",
            "TIMEOUT",
            "57014",
        ),
        (
            "RAISE EXCEPTION 'deadlock' USING ERRCODE = 'deadlock_detected';",
            "CONFLICT",
            "40P01",
        ),
        (
            "PERFORM * FROM no_such_table;",
            "INTERNAL_SERVER_ERROR",
            "42P01",
        ),
    ];
    for (body, code, sqlstate) in cases {
        let v = update_post_failing(&db, &engine, body).await;
        let e = &v["errors"][0];
        assert_eq!(e["extensions"]["code"], json!(code), "{body}: {v}");
        let text = v.to_string();
        // Never SQL text, never the database's own wording about tables, constraints or roles.
        for leak in [
            "INSERT",
            "t_key",
            "t_ref",
            "no_such_table",
            "noperm",
            "SELECT",
            "pkey",
        ] {
            assert!(!text.contains(leak), "{body} leaks {leak}: {text}");
        }
        if *code == "INTERNAL_SERVER_ERROR" {
            assert!(e["extensions"].get("sqlstate").is_none(), "{v}");
        } else {
            assert_eq!(e["extensions"]["sqlstate"], json!(sqlstate), "{body}: {v}");
        }
    }

    // The function's own RAISE: its message, its code from HINT, else MUTATION_FAILED.
    let v = update_post_failing(
        &db,
        &engine,
        "RAISE EXCEPTION 'post % is locked', 7 USING HINT = 'POST_LOCKED';",
    )
    .await;
    assert_eq!(v["errors"][0]["message"], json!("post 7 is locked"), "{v}");
    assert_eq!(
        v["errors"][0]["extensions"]["code"],
        json!("POST_LOCKED"),
        "{v}"
    );
    let v = update_post_failing(&db, &engine, "RAISE EXCEPTION 'try again later';").await;
    assert_eq!(v["errors"][0]["message"], json!("try again later"), "{v}");
    assert_eq!(
        v["errors"][0]["extensions"]["code"],
        json!("MUTATION_FAILED"),
        "{v}"
    );
    // A hint that is not a code (prose) is not taken as one.
    let v = update_post_failing(
        &db,
        &engine,
        "RAISE EXCEPTION 'no' USING HINT = 'see the docs at /etc/x';",
    )
    .await;
    assert_eq!(
        v["errors"][0]["extensions"]["code"],
        json!("MUTATION_FAILED"),
        "{v}"
    );
    assert!(!v.to_string().contains("/etc/x"), "{v}");

    // A serialization failure is retried once: the second attempt commits.
    db.batch(
        "CREATE OR REPLACE FUNCTION fn_update_post(input jsonb) RETURNS fraiseql.mutation_response \
         LANGUAGE plpgsql AS $f$ BEGIN \
           IF nextval('t_attempts') = 1 THEN \
             RAISE EXCEPTION 'conflict' USING ERRCODE = 'serialization_failure'; \
           END IF; \
           UPDATE tb_post SET title = 'retried' WHERE id = (input->>'id')::uuid; \
           RETURN fraiseql.mutation_ok((input->>'id')::uuid, 'Post', \
             (SELECT data FROM v_post WHERE id = (input->>'id')::uuid), true, 'ok', ARRAY['title']); \
         END $f$;",
    )
    .await;
    let post: String = db
        .client()
        .await
        .query_one("SELECT id::text FROM tb_post ORDER BY pk_post LIMIT 1", &[])
        .await
        .unwrap()
        .get(0);
    let v = gql(
        &engine,
        db.pool(),
        &format!("mutation {{ updatePost(input: {{id: \"{post}\", title: \"x\"}}) {{ title }} }}"),
        json!({}),
    )
    .await;
    assert_eq!(v["data"]["updatePost"]["title"], json!("retried"), "{v}");
    assert_eq!(count(&db, "SELECT last_value FROM t_attempts").await, 2);
    // Failing on every attempt: tried twice, then CONFLICT.
    db.batch("ALTER SEQUENCE t_attempts RESTART WITH 1").await;
    let v = update_post_failing(
        &db,
        &engine,
        "PERFORM nextval('t_attempts'); RAISE EXCEPTION 'c' USING ERRCODE = 'serialization_failure';",
    )
    .await;
    assert_eq!(
        v["errors"][0]["extensions"]["code"],
        json!("CONFLICT"),
        "{v}"
    );
    assert_eq!(
        v["errors"][0]["extensions"]["sqlstate"],
        json!("40001"),
        "{v}"
    );
    assert_eq!(count(&db, "SELECT last_value FROM t_attempts").await, 2);

    // An error class in lower case becomes the conventional code; the original is kept.
    let v = update_post_failing(
        &db,
        &engine,
        "RETURN fraiseql.mutation_err('not_found', 'no such post');",
    )
    .await;
    let e = &v["errors"][0];
    assert_eq!(e["extensions"]["code"], json!("NOT_FOUND"), "{v}");
    assert_eq!(e["extensions"]["errorClass"], json!("not_found"), "{v}");
    assert_eq!(e["message"], json!("no such post"));
    let v = update_post_failing(
        &db,
        &engine,
        "RETURN fraiseql.mutation_err('validation', 'title is too short');",
    )
    .await;
    assert_eq!(
        v["errors"][0]["extensions"]["code"],
        json!("VALIDATION_ERROR"),
        "{v}"
    );
    assert_eq!(
        v["errors"][0]["extensions"]["errorClass"],
        json!("validation"),
        "{v}"
    );
}

/// Drops a cluster-wide role when the test ends, whether it passed or not.
struct DropRole(String);

impl Drop for DropRole {
    fn drop(&mut self) {
        admin_batch_on_drop(vec![format!("DROP ROLE IF EXISTS {}", self.0)]);
    }
}

/// A mutation whose request goes away (the request timeout, the client gone) is cancelled
/// on the server as a read is, not left running to its end.
#[tokio::test]
async fn a_mutation_dropped_mid_statement_is_cancelled() {
    let db = TestDb::new().await;
    db.load_blog().await;
    let engine = blog_engine();
    db.batch(
        "CREATE OR REPLACE FUNCTION fn_update_post(input jsonb) RETURNS fraiseql.mutation_response \
         LANGUAGE plpgsql AS $f$ BEGIN UPDATE tb_post SET title = 'slow'; PERFORM pg_sleep(30); \
         RETURN fraiseql.mutation_ok(NULL, 'Post', NULL, false, 'no change'); END $f$;",
    )
    .await;
    let admin = db.client().await;
    let running = async || -> i64 {
        admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                 AND state = 'active' AND query LIKE '%fn_update_post%' AND pid <> pg_backend_pid()",
                &[],
            )
            .await
            .unwrap()
            .get(0)
    };
    let mutation = gql(
        &engine,
        db.pool(),
        "mutation { updatePost(input: {id: \"00000000-0000-4000-9000-000000000001\", title: \"t\"}) { id } }",
        json!({}),
    );
    let mut mutation = Box::pin(mutation);
    let started = std::time::Instant::now();
    loop {
        tokio::select! {
            v = &mut mutation => panic!("the mutation ended early: {v}"),
            _ = tokio::time::sleep(std::time::Duration::from_millis(20)) => {}
        }
        if running().await == 1 {
            break;
        }
        assert!(started.elapsed().as_secs() < 5, "the mutation runs");
    }
    drop(mutation);
    let dropped = std::time::Instant::now();
    while running().await > 0 {
        assert!(
            dropped.elapsed().as_secs() < 5,
            "the dropped mutation's statement was cancelled within 5 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        count(&db, "SELECT count(*) FROM tb_post WHERE title = 'slow'").await,
        0,
        "nothing of the dropped mutation is committed"
    );
}
