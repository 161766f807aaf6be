//! `fraiseql generate-views`: the derived copies stay exactly equal to their views under
//! concurrent random writes (blog, and the nested example it was not written for), GraphQL
//! answers the same from `v_` and `tv_`, a view with no foreign-key path is refused with a
//! message naming the table, `--apply` is idempotent and `--check` detects drift; the typed
//! copies (`ta_`, `va_`) and the `--index` columns on the shop stay exact too, and the
//! index serves a filter on a nested field.

use crate::common;

use std::sync::Arc;
use std::time::Instant;

use common::*;
use fraiseql::genviews::Kind;
use fraiseql::graphql::Engine;
use fraiseql::roles::generate_views::{self as gv, Args, Mode};
use serde_json::json;

fn args(kinds: &[Kind], index: &[&str]) -> Args {
    Args {
        entities: vec![],
        kinds: kinds.to_vec(),
        index: index.iter().map(|s| s.to_string()).collect(),
        mode: Mode::Apply,
    }
}

fn load_schema(rel: &str) -> fraiseql::schema::CompiledSchema {
    fraiseql::schema::load(&crate_path(rel)).expect("schema")
}

/// Plans and applies in-process; returns the plans and what apply did.
async fn apply(
    db: &TestDb,
    schema: &str,
    a: &Args,
) -> (Vec<fraiseql::genviews::EntityPlan>, Vec<gv::Applied>) {
    let schema = load_schema(schema);
    let mut client = db.client().await;
    let plans = gv::plans(&client, &schema, a).await.expect("plans");
    let applied = gv::apply(&mut client, &plans, &a.kinds, false)
        .await
        .expect("apply");
    (plans, applied)
}

/// Every copy equals its view (EXCEPT both ways is empty); returns the number checked.
async fn assert_no_drift(
    db: &TestDb,
    plans: &[fraiseql::genviews::EntityPlan],
    kinds: &[Kind],
) -> usize {
    let client = db.client().await;
    let drift = gv::check(&client, plans, kinds).await.expect("check");
    for (table, d) in &drift {
        assert_eq!(*d, Some((0, 0)), "{table}: rows differ from the view");
    }
    drift.len()
}

/// A small deterministic generator (the test must not depend on a crate for dice).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// Outcome counts of the random writes.
#[derive(Debug, Default)]
struct Tally {
    committed: usize,
    rejected: usize,
    deadlock_retries: usize,
}

/// Runs `total` writes spread over `sessions` concurrent connections; `op` picks the SQL of
/// one write (several statements run as one transaction). A write refused by a constraint
/// (its random target went away concurrently) counts as rejected; a deadlock is retried.
async fn random_writes(
    db: &TestDb,
    sessions: usize,
    total: usize,
    op: fn(&mut Lcg) -> String,
) -> Tally {
    let mut handles = Vec::new();
    for s in 0..sessions {
        let url = db.url();
        handles.push(tokio::spawn(async move {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            let mut rng = Lcg(0x9e37_79b9 + s as u64 * 7919);
            let mut t = Tally::default();
            for _ in 0..total / sessions {
                let sql = op(&mut rng);
                let mut tries = 0;
                loop {
                    match client.batch_execute(&format!("BEGIN; {sql}; COMMIT")).await {
                        Ok(()) => {
                            t.committed += 1;
                            break;
                        }
                        Err(e) => {
                            let _ = client.batch_execute("ROLLBACK").await;
                            let code = e.code().map(|c| c.code().to_owned()).unwrap_or_default();
                            if code == "40P01" && tries < 10 {
                                tries += 1;
                                t.deadlock_retries += 1;
                                continue;
                            }
                            assert!(code.starts_with("23"), "unexpected error for {sql}: {e:?}");
                            t.rejected += 1;
                            break;
                        }
                    }
                }
            }
            t
        }));
    }
    let mut all = Tally::default();
    for h in handles {
        let t = h.await.unwrap();
        all.committed += t.committed;
        all.rejected += t.rejected;
        all.deadlock_retries += t.deadlock_retries;
    }
    all
}

/// A random row's key of a table, chosen in SQL.
fn pick(table: &str, pk: &str) -> String {
    format!("(SELECT {pk} FROM {table} ORDER BY random() LIMIT 1)")
}

fn blog_op(r: &mut Lcg) -> String {
    let n = r.next(1_000_000);
    let user = pick("tb_user", "pk_user");
    let post = pick("tb_post", "pk_post");
    let comment = pick("tb_comment", "pk_comment");
    match r.next(16) {
        0 => format!("INSERT INTO tb_user (identifier, name) VALUES ('gen-{n}', 'Gen {n}')"),
        1 | 2 => format!(
            "UPDATE tb_user SET name = 'renamed {n}', score = score + 1 WHERE pk_user = {user}"
        ),
        3 => format!("DELETE FROM tb_user WHERE pk_user = {user} AND random() < 0.3"),
        4 => format!(
            "INSERT INTO tb_post (fk_user, title, body, views) VALUES ({user}, 'T {n}', 'B', {})",
            n % 50
        ),
        5 => format!(
            "UPDATE tb_post SET title = 'retitled {n}', views = views + 1 WHERE pk_post = {post}"
        ),
        6 => format!("UPDATE tb_post SET fk_user = {user} WHERE pk_post = {post}"),
        7 => format!("DELETE FROM tb_post WHERE pk_post = {post}"),
        8 | 9 => format!(
            "INSERT INTO tb_comment (fk_post, fk_user, body) VALUES ({post}, {user}, 'c {n}')"
        ),
        10 => format!("UPDATE tb_comment SET body = 'edited {n}' WHERE pk_comment = {comment}"),
        11 => format!("UPDATE tb_comment SET fk_post = {post} WHERE pk_comment = {comment}"),
        12 => format!("DELETE FROM tb_comment WHERE pk_comment = {comment}"),
        13 => format!(
            "SELECT fn_create_post(jsonb_build_object('author_id', (SELECT id FROM tb_user ORDER BY random() LIMIT 1), 'title', 'fn {n}', 'body', 'x'))"
        ),
        14 => format!(
            "SELECT fn_update_post(jsonb_build_object('id', (SELECT id FROM tb_post ORDER BY random() LIMIT 1), 'title', 'fn-upd {n}')); \
             SELECT fn_delete_post((SELECT id FROM tb_post WHERE random() < 0.2 ORDER BY random() LIMIT 1))"
        ),
        // A transaction over two tables, and a multi-row statement.
        _ => format!(
            "UPDATE tb_user SET name = 'both {n}' WHERE pk_user = {user}; \
             UPDATE tb_comment SET body = body || '!' WHERE pk_comment % 23 = {}",
            n % 23
        ),
    }
}

const BLOG_QUERIES: &[&str] = &[
    "{ users(orderBy: [{identifier: ASC}], limit: 20) { identifier name score posts { title views comments { body author { name } } } } }",
    "{ posts(orderBy: [{title: ASC}], limit: 30) { title views author { name } comments { body author { identifier name } } } }",
    "{ comments(orderBy: [{body: ASC}], limit: 30) { body author { identifier name } } }",
];

/// The same queries answer identically from the views and from the copies, and select rows.
async fn same_answers(engine: fn() -> Engine, db: &TestDb, queries: &[&str]) {
    let (views, tables) = (engine(), engine().with_read_tables(true));
    for q in queries {
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
}

#[tokio::test]
async fn generate_views_blog_stays_exact_under_concurrent_writes() {
    let db = TestDb::new().await;
    db.load_blog().await;
    let (plans, applied) = apply(&db, "examples/blog/schema.json", &args(&[Kind::Tv], &[])).await;
    let tables: Vec<_> = applied.iter().map(|a| a.table.as_str()).collect();
    assert_eq!(tables, ["tv_comment", "tv_post", "tv_user"]);
    assert!(applied.iter().all(|a| a.written > 0), "{applied:?}");

    // API mutations through the engine, beside the SQL sessions below.
    let api = {
        let engine = blog_engine();
        let pool = db.pool().clone();
        let client = db.client().await;
        let authors: Vec<uuid::Uuid> = client
            .query("SELECT id FROM tb_user ORDER BY pk_user LIMIT 10", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        tokio::spawn(async move {
            let mut ok = 0;
            for (i, a) in authors.iter().cycle().take(20).enumerate() {
                let v = gql(
                    &engine,
                    &pool,
                    "mutation($i: CreatePostInput!) { createPost(input: $i) { id } }",
                    json!({"i": {"authorId": a, "title": format!("api {i}"), "body": "b"}}),
                )
                .await;
                if v.get("errors").is_none() {
                    ok += 1;
                }
            }
            ok
        })
    };
    let started = Instant::now();
    let tally = random_writes(&db, 8, 1000, blog_op).await;
    let api_ok = api.await.unwrap();
    eprintln!(
        "blog: {tally:?} in {:.2} s; {api_ok} API createPost committed",
        started.elapsed().as_secs_f64()
    );
    assert!(tally.committed >= 800, "{tally:?}");
    assert!(api_ok > 0);
    assert_eq!(assert_no_drift(&db, &plans, &[Kind::Tv]).await, 3);
    same_answers(blog_engine, &db, BLOG_QUERIES).await;
}

fn nested_op(r: &mut Lcg) -> String {
    let n = r.next(1_000_000);
    let publisher = pick("tb_publisher", "pk_publisher");
    let author = pick("tb_author", "pk_author");
    let book = pick("tb_book", "pk_book");
    let tag = pick("tb_tag", "pk_tag");
    match r.next(20) {
        0 => format!("INSERT INTO tb_publisher (name) VALUES ('P {n}')"),
        1 => format!("UPDATE tb_publisher SET name = 'P renamed {n}' WHERE pk_publisher = {publisher}"),
        2 => format!("INSERT INTO tb_author (fk_publisher, name) VALUES ({publisher}, 'A {n}')"),
        3 => format!("UPDATE tb_author SET name = 'A renamed {n}', tier = 'gold' WHERE pk_author = {author}"),
        4 => format!("UPDATE tb_author SET fk_publisher = {publisher} WHERE pk_author = {author}"),
        5 => format!("DELETE FROM tb_author WHERE pk_author = {author} AND random() < 0.3"),
        6 => format!("INSERT INTO tb_book (fk_author, title) VALUES ({author}, 'B {n}')"),
        7 => format!("UPDATE tb_book SET title = 'B renamed {n}', price = price + 1 WHERE pk_book = {book}"),
        8 => format!("UPDATE tb_book SET fk_author = {author} WHERE pk_book = {book}"),
        9 => format!("DELETE FROM tb_book WHERE pk_book = {book} AND random() < 0.5"),
        10 => format!("INSERT INTO tb_chapter (fk_book, number, title) VALUES ({book}, {}, 'C {n}')", n % 9),
        11 => format!("UPDATE tb_chapter SET title = 'C edited {n}' WHERE pk_chapter = {}", pick("tb_chapter", "pk_chapter")),
        12 => format!("DELETE FROM tb_chapter WHERE pk_chapter = {}", pick("tb_chapter", "pk_chapter")),
        13 => format!("INSERT INTO tb_tag (name) VALUES ('tag {n}')"),
        14 => format!("UPDATE tb_tag SET name = 'tag renamed {n}' WHERE pk_tag = {tag}"),
        15 => format!("INSERT INTO tb_book_tag (fk_book, fk_tag) VALUES ({book}, {tag}) ON CONFLICT DO NOTHING"),
        16 => "DELETE FROM tb_book_tag WHERE ctid = (SELECT ctid FROM tb_book_tag ORDER BY random() LIMIT 1)".to_string(),
        17 | 18 => format!("INSERT INTO tb_review (fk_book, stars) VALUES ({book}, {})", 1 + n % 5),
        _ => format!(
            "UPDATE tb_review SET stars = 1 + (stars % 5) WHERE pk_review % 31 = {}; \
             DELETE FROM tb_review WHERE pk_review = {}",
            n % 31,
            pick("tb_review", "pk_review")
        ),
    }
}

fn nested_engine() -> Engine {
    let schema = load_schema("examples/nested/schema.json");
    Engine::new(Arc::new(schema), Default::default()).unwrap()
}

const NESTED_QUERIES: &[&str] = &[
    "{ publishers(orderBy: [{name: ASC}], limit: 10) { name authors { name books { title price author { reviewCount totalStars publisher { name } } tags { name } chapters { number title } } } } }",
    "{ books(orderBy: [{title: ASC}, {price: ASC}], limit: 200) { title price publishedAt author { name tier reviewCount totalStars } tags { name bookCount } chapters { title } } }",
    "{ authors(orderBy: [{name: ASC}, {totalStars: ASC}], limit: 100) { name tier reviewCount totalStars publisher { name } } }",
    "{ tags(orderBy: [{name: ASC}], limit: 100) { name bookCount } }",
];

#[tokio::test]
async fn generate_views_nested_example_stays_exact_under_concurrent_writes() {
    let db = TestDb::new().await;
    db.run_file("examples/nested/schema.sql").await;
    db.run_file("examples/nested/seed.sql").await;
    let (plans, applied) = apply(&db, "examples/nested/schema.json", &args(&[Kind::Tv], &[])).await;
    let tables: Vec<_> = applied.iter().map(|a| a.table.as_str()).collect();
    assert_eq!(tables, ["tv_author", "tv_book", "tv_publisher", "tv_tag"]);
    // The aggregate inside the embedded view: a review reaches every book of the author.
    let book = plans.iter().find(|p| p.entity == "book").unwrap();
    let review = book
        .sources
        .iter()
        .find(|s| s.table.name == "tb_review")
        .unwrap();
    assert!(
        review
            .paths
            .iter()
            .any(|p| p.iter().map(|h| h.table.name.as_str()).eq([
                "tb_book",
                "tb_author",
                "tb_book"
            ])),
        "{review:?}"
    );
    // A direct check of that dependency before the random writes.
    db.batch("INSERT INTO tb_review (fk_book, stars) VALUES (1, 5)")
        .await;
    assert_no_drift(&db, &plans, &[Kind::Tv]).await;

    let started = Instant::now();
    let tally = random_writes(&db, 8, 1000, nested_op).await;
    eprintln!(
        "nested: {tally:?} in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    assert!(tally.committed >= 800, "{tally:?}");
    assert_eq!(assert_no_drift(&db, &plans, &[Kind::Tv]).await, 4);
    same_answers(nested_engine, &db, NESTED_QUERIES).await;
}

/// Runs the binary against `db`.
fn cli(db: &TestDb, extra: &[&str]) -> std::process::Output {
    bin()
        .arg("generate-views")
        .args(extra)
        .env("FRAISEQL_DATABASE_URL", db.url())
        .env_remove("FRAISEQL_CONFIG")
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap()
}

#[tokio::test]
async fn generate_views_refuses_a_table_no_foreign_key_leads_from() {
    let db = TestDb::new().await;
    db.load_blog().await;
    // v_comment now reads tb_badge, joined on a text column with no foreign key.
    db.batch(
        "CREATE TABLE tb_badge (identifier text PRIMARY KEY, label text NOT NULL); \
         CREATE OR REPLACE VIEW v_comment AS \
         SELECT c.id, jsonb_build_object('id', c.id, 'body', c.body, 'created_at', c.created_at, \
                'author', jsonb_build_object('id', u.id, 'identifier', u.identifier, 'name', u.name), \
                'badge', bd.label) AS data \
           FROM tb_comment c JOIN tb_user u ON u.pk_user = c.fk_user \
           LEFT JOIN tb_badge bd ON bd.identifier = u.identifier;",
    )
    .await;
    let schema = crate_path("examples/blog/schema.json");
    let out = cli(&db, &["--schema", schema.to_str().unwrap(), "--apply"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("error: tb_badge: no foreign key leads to tb_comment\n"),
        "{stderr}"
    );
    // Nothing was created.
    let client = db.client().await;
    let n: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_class WHERE relname LIKE 'tv\\_%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    // The other entities are still generated when named.
    let out = cli(
        &db,
        &[
            "--schema",
            schema.to_str().unwrap(),
            "--entity",
            "Post",
            "--apply",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn generate_views_apply_is_idempotent_and_check_finds_drift() {
    let db = TestDb::new().await;
    db.load_blog().await;
    let schema = crate_path("examples/blog/schema.json");
    let schema = schema.to_str().unwrap();
    let first = cli(&db, &["--schema", schema, "--apply"]);
    let text = String::from_utf8_lossy(&first.stdout).to_string();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(text.contains("tv_user: 50 rows written"), "{text}");

    let client = db.client().await;
    let versions = "SELECT string_agg(xmin::text || id::text, ',' ORDER BY id) FROM tv_post";
    let before: String = client.query_one(versions, &[]).await.unwrap().get(0);
    let second = cli(&db, &["--schema", schema, "--apply"]);
    let text = String::from_utf8_lossy(&second.stdout).to_string();
    assert!(second.status.success());
    for t in ["tv_comment", "tv_post", "tv_user"] {
        assert!(text.contains(&format!("{t}: 0 rows written")), "{text}");
    }
    let after: String = client.query_one(versions, &[]).await.unwrap().get(0);
    assert_eq!(before, after, "the second run rewrote rows");
    let triggers: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'fraiseql\\_tv\\_%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        triggers,
        (2 + 3 + 3) * 4,
        "4 triggers per (entity, base table)"
    );

    // The SQL text is deterministic.
    let a = cli(&db, &["--schema", schema]);
    let b = cli(&db, &["--schema", schema]);
    assert!(a.status.success());
    assert_eq!(a.stdout, b.stdout);

    let check = cli(&db, &["--schema", schema, "--check"]);
    assert_eq!(
        check.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );

    // A manual change of the copy is drift.
    client
        .batch_execute("UPDATE tv_user SET data = data || '{\"name\": \"tampered\"}' WHERE id = (SELECT id FROM tv_user ORDER BY id LIMIT 1)")
        .await
        .unwrap();
    let check = cli(&db, &["--schema", schema, "--check"]);
    let text = String::from_utf8_lossy(&check.stdout).to_string();
    assert_eq!(check.status.code(), Some(1), "{text}");
    assert!(text.contains("DRIFT tv_user: 2 rows differ"), "{text}");
    assert!(text.contains("ok    tv_post: equal to its view"), "{text}");

    // refresh_tv repairs it.
    let fixed: i64 = client
        .query_one("SELECT fraiseql.refresh_tv('user')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(fixed, 1);
    let check = cli(&db, &["--schema", schema, "--check"]);
    assert_eq!(check.status.code(), Some(0));
}

#[tokio::test]
async fn generate_views_a_changed_view_is_an_upgrade() {
    let db = TestDb::new().await;
    db.load_blog().await;
    apply(&db, "examples/blog/schema.json", &args(&[Kind::Tv], &[])).await;
    // v_post gains a native column: the copy is rebuilt with it, and read_tables uses it.
    db.batch(
        "ALTER VIEW v_post RENAME TO v_post_base; \
         CREATE VIEW v_post AS SELECT b.id, p.views, b.data FROM v_post_base b JOIN tb_post p ON p.id = b.id;",
    )
    .await;
    let (plans, applied) = apply(&db, "examples/blog/schema.json", &args(&[Kind::Tv], &[])).await;
    let post = applied.iter().find(|a| a.table == "tv_post").unwrap();
    assert!(post.rebuilt && post.written == 150, "{post:?}");
    db.batch("UPDATE tb_post SET views = views + 100 WHERE pk_post % 2 = 0")
        .await;
    assert_no_drift(&db, &plans, &[Kind::Tv]).await;
}

fn shop_op(r: &mut Lcg) -> String {
    let n = r.next(1_000_000);
    let customer = pick("tb_customer", "pk_customer");
    let product = pick("tb_product", "pk_product");
    let order = pick("tb_order", "pk_order");
    let item = pick("tb_order_item", "pk_order_item");
    match r.next(14) {
        0 => format!(
            "INSERT INTO tb_customer (email, name, country) VALUES ('g{n}@x', 'Gen {n}', 'FR')"
        ),
        1 => format!("UPDATE tb_customer SET name = 'renamed {n}' WHERE pk_customer = {customer}"),
        2 => format!("DELETE FROM tb_customer WHERE pk_customer = {customer} AND random() < 0.2"),
        3 => format!(
            "UPDATE tb_product SET name = 'P {n}', sku = 'SKU-G{n}' WHERE pk_product = {product}"
        ),
        4 => format!(
            "INSERT INTO tb_order (number, fk_customer, placed_at) VALUES ({}, {customer}, now() - interval '{} minutes')",
            200_000 + n,
            n % 5000
        ),
        5 | 6 => format!(
            "UPDATE tb_order SET status = 'shipped', total = total + 1, placed_at = placed_at + interval '1 hour' WHERE pk_order = {order}"
        ),
        7 => format!("UPDATE tb_order SET fk_customer = {customer} WHERE pk_order = {order}"),
        8 => format!("DELETE FROM tb_order WHERE pk_order = {order} AND random() < 0.5"),
        9 => format!(
            "INSERT INTO tb_order_item (fk_order, fk_product, line, quantity, unit_price) VALUES ({order}, {product}, {}, 1, 9.5)",
            10 + n % 1000
        ),
        10 | 11 => {
            format!("UPDATE tb_order_item SET quantity = quantity + 1 WHERE pk_order_item = {item}")
        }
        12 => format!("DELETE FROM tb_order_item WHERE pk_order_item = {item}"),
        // A multi-row statement.
        _ => format!(
            "UPDATE tb_order_item SET unit_price = unit_price + 1 WHERE pk_order_item % 97 = {}",
            n % 97
        ),
    }
}

/// Column name → type of a relation, in column order; `generated` only the stored generated
/// columns.
async fn columns_of(db: &TestDb, rel: &str, generated: bool) -> Vec<(String, String)> {
    let client = db.client().await;
    client
        .query(
            "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute \
              WHERE attrelid = $1::text::regclass AND attnum > 0 AND NOT attisdropped \
                AND (NOT $2 OR attgenerated = 's') ORDER BY attnum",
            &[&rel, &generated],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// Rows of `a` not in `b` plus rows of `b` not in `a`, over the given columns.
async fn except_both_ways(db: &TestDb, a: &str, b: &str, cols: &str) -> i64 {
    db.client()
        .await
        .query_one(
            &format!(
                "SELECT (SELECT count(*) FROM (SELECT {cols} FROM {a} EXCEPT ALL SELECT {cols} FROM {b}) x) \
                      + (SELECT count(*) FROM (SELECT {cols} FROM {b} EXCEPT ALL SELECT {cols} FROM {a}) y)"
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn generate_views_typed_copies_and_index_columns_stay_exact() {
    let db = TestDb::new().await;
    db.run_file("examples/shop/schema.sql").await;
    db.run_file("examples/shop/seed.sql").await;
    let kinds = [Kind::Tv, Kind::Ta, Kind::Va];
    let mut a = args(&kinds, &["total", "customer.name"]);
    a.entities = vec!["order".into()];
    let (plans, applied) = apply(&db, "examples/shop/schema.json", &a).await;
    let tables: Vec<_> = applied.iter().map(|a| a.table.as_str()).collect();
    assert!(
        tables.contains(&"tv_order") && tables.contains(&"ta_order"),
        "{tables:?}"
    );

    // ta_order: one typed column per scalar field, types from the compiled schema.
    let ta = columns_of(&db, "ta_order", false).await;
    for (name, ty) in [
        ("id", "uuid"),
        ("number", "integer"),
        ("status", "text"),
        ("placed_at", "timestamp with time zone"),
    ] {
        assert!(
            ta.iter().any(|(n, t)| n == name && t == ty),
            "ta_order lacks {name} {ty}: {ta:?}"
        );
    }
    assert!(!ta.iter().any(|(n, _)| n == "data"), "{ta:?}");
    // BRIN on its timestamp column.
    let brin = db
        .texts("SELECT indexdef FROM pg_indexes WHERE tablename = 'ta_order' AND indexdef LIKE '%USING brin%'")
        .await;
    let client = db.client().await;
    assert!(brin.iter().any(|d| d.contains("(placed_at)")), "{brin:?}");
    // --index on tv_: stored generated columns over `data`; on ta_ (no `data`): the nested
    // field is a typed column of its own. A b-tree index on each, on both.
    let generated = columns_of(&db, "tv_order", true).await;
    assert_eq!(
        generated,
        [
            ("total".to_owned(), "numeric".to_owned()),
            ("customer__name".to_owned(), "text".to_owned())
        ],
        "tv_order"
    );
    assert!(columns_of(&db, "ta_order", true).await.is_empty());
    assert!(
        ta.contains(&("customer__name".to_owned(), "text".to_owned())),
        "{ta:?}"
    );
    assert!(
        ta.contains(&("total".to_owned(), "numeric".to_owned())),
        "{ta:?}"
    );
    for table in ["tv_order", "ta_order"] {
        let btrees: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_indexes WHERE tablename = $1 AND indexdef LIKE '%USING btree%' \
                   AND (indexdef LIKE '%(total)' OR indexdef LIKE '%(customer__name)')",
                &[&table],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(btrees, 2, "{table}: a b-tree index per --index field");
    }
    // The index serves a filter on the nested field.
    client
        .batch_execute("SET enable_seqscan = off")
        .await
        .unwrap();
    for table in ["tv_order", "ta_order"] {
        let plan: Vec<String> = client
            .query(
                &format!("EXPLAIN SELECT id FROM {table} WHERE customer__name = 'Customer 001'"),
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert!(
            plan.iter()
                .any(|l| l.contains(&format!("{table}_customer__name_idx"))),
            "{plan:?}"
        );
    }
    let cols = ta
        .iter()
        .filter(|(n, _)| n != "updated_at")
        .map(|(n, _)| format!("\"{n}\""))
        .collect::<Vec<_>>()
        .join(", ");
    assert_eq!(
        except_both_ways(&db, "ta_order", "va_order", &cols).await,
        0
    );

    let tally = random_writes(&db, 8, 600, shop_op).await;
    assert!(tally.committed >= 450, "{tally:?}");
    // Both stored copies equal the view, and the typed view equals the typed table.
    assert_eq!(assert_no_drift(&db, &plans, &kinds).await, 2);
    assert_eq!(
        except_both_ways(&db, "ta_order", "va_order", &cols).await,
        0
    );
    let n: i64 = client
        .query_one("SELECT count(*) FROM ta_order", &[])
        .await
        .unwrap()
        .get(0);
    assert!(n > 1000, "{n}");
}
