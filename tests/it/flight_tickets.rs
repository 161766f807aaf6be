//! Tickets and RPCs through the pyarrow Flight client: view filters, change events (range
//! and follow), GraphQL rows through a test `GraphQLSource`, discovery RPCs, actions,
//! handshake, clear errors for bad tickets and tokens, and query cancellation when the client
//! goes away.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::TestDb;
use common::flight::*;
use fraiseql::flight::{
    GqlField, GqlType, GraphQLRows, GraphQLSource, GraphQLSourceError, NamedQuery,
};
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};
use serde_json::{Map, Value, json};

const ORDERS_SQL: &str = r#"
CREATE TABLE tb_order (
    pk_order bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    customer text,
    status text NOT NULL,
    total numeric(10,2) NOT NULL,
    created_at timestamptz NOT NULL
);
INSERT INTO tb_order (customer, status, total, created_at) VALUES
 ('ann',  'paid',    120.00, '2026-01-01T10:00:00Z'),
 ('bob',  'shipped',  35.50, '2026-01-02T10:00:00Z'),
 ('cy_1', 'paid',     99.99, '2026-01-03T10:00:00Z'),
 (NULL,   'draft',     0.00, '2026-01-04T10:00:00Z'),
 ('50%',  'paid',    500.00, '2026-01-05T10:00:00Z');
CREATE VIEW va_orders AS
  SELECT id, customer, status, total, created_at FROM tb_order;
"#;

async fn setup() -> (TestDb, TestFlight) {
    let db = TestDb::new().await;
    db.batch(ORDERS_SQL).await;
    let f = TestFlight::start_with(&db, config(), Some(Arc::new(TestGraphQL))).await;
    (db, f)
}

fn column(out: &Value, name: &str) -> Vec<Value> {
    out["rows"]
        .as_array()
        .unwrap_or_else(|| panic!("no rows in {out}"))
        .iter()
        .map(|r| r[name].clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn view_ticket_filters_orders_and_limits() {
    let (_db, f) = setup().await;
    let out = get(
        &f,
        &json!({"type": "view", "view": "va_orders", "columns": ["customer", "total"],
                "where": {"status": {"in": ["paid", "shipped"]}, "total": {"gte": "40"}},
                "order_by": [{"column": "total", "direction": "desc"}]}),
    )
    .await;
    assert_eq!(
        column(&out, "customer"),
        vec![json!("50%"), json!("ann"), json!("cy_1")]
    );
    assert_eq!(
        column(&out, "total"),
        vec![json!("500.00"), json!("120.00"), json!("99.99")]
    );
    assert_eq!(out["schema"].as_array().unwrap().len(), 2);

    // Alias type name, _or / _not, string operators with LIKE metacharacters, limit/offset.
    let out = get(
        &f,
        &json!({"type": "OptimizedView", "view": "va_orders", "columns": ["customer"],
                "where": {"_or": [{"customer": {"contains": "%"}}, {"customer": {"istartswith": "AN"}},
                                  {"customer": {"endswith": "_1"}}],
                          "_not": {"customer": {"isnull": true}}},
                "order_by": ["customer"], "limit": 2, "offset": 1}),
    )
    .await;
    assert_eq!(column(&out, "customer"), vec![json!("ann"), json!("cy_1")]);

    // neq / lt / nin / eq shorthand / like.
    let out = get(
        &f,
        &json!({"type": "view", "view": "va_orders", "columns": ["customer"],
                "where": {"status": "paid", "customer": {"neq": "ann", "like": "c%"},
                          "total": {"lt": 100, "nin": [1, 2]}}}),
    )
    .await;
    assert_eq!(column(&out, "customer"), vec![json!("cy_1")]);

    // Timestamps compare as timestamps.
    let out = get(
        &f,
        &json!({"type": "view", "view": "va_orders", "columns": ["customer"],
                "where": {"created_at": {"gt": "2026-01-04T00:00:00+00:00"}},
                "order_by": ["created_at"]}),
    )
    .await;
    assert_eq!(column(&out, "customer"), vec![Value::Null, json!("50%")]);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tickets_get_clear_flight_errors() {
    let (_db, f) = setup().await;
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            json!("not a ticket"),
            "ArrowInvalid",
            "ticket is not valid JSON",
        ),
        (json!("[1]"), "ArrowInvalid", "a ticket is a JSON object"),
        (
            json!({"type": "sql", "sql": "DELETE FROM tb_order"}),
            "ArrowInvalid",
            "unknown variant `sql`",
        ),
        (
            json!({"type": "view", "view": "tb_order"}),
            "",
            "unknown view \"tb_order\"",
        ),
        (
            json!({"type": "view", "view": "va_orders", "columns": ["password"]}),
            "ArrowInvalid",
            "va_orders has no column \"password\"",
        ),
        (
            json!({"type": "view", "view": "va_orders", "where": {"total": {"regex": ".*"}}}),
            "ArrowInvalid",
            "invalid where at where.total.regex: unknown operator",
        ),
        (
            json!({"type": "view", "view": "va_orders", "where": {"total": {"gt": "lots"}}}),
            "ArrowInvalid",
            "invalid input syntax for type numeric",
        ),
        (
            json!({"type": "view", "view": "va_orders", "limit": 5, "extra": 1}),
            "ArrowInvalid",
            "unknown field `extra`",
        ),
    ];
    for (ticket, class, message) in cases {
        let t = match &ticket {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let mut args = base_args(&f);
        args.extend(["get".into(), "--ticket".into(), t]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = py(&refs).await;
        let (c, m) = expect_error(&out);
        assert!(m.contains(message), "{ticket}: {m}");
        if !class.is_empty() {
            assert_eq!(c, class, "{ticket}: {m}");
        }
        assert!(
            !m.to_lowercase().contains("select"),
            "no SQL in errors: {m}"
        );
    }
    // Oversized ticket.
    let big = json!({"type": "view", "view": "va_orders", "columns": vec!["customer"; 3000]});
    let out = get(&f, &big).await;
    let (_, m) = expect_error(&out);
    assert!(m.contains("flight.max_ticket_bytes"), "{m}");
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_or_missing_token_is_unauthenticated() {
    let (_db, f) = setup().await;
    let ticket = json!({"type": "view", "view": "va_orders"}).to_string();
    let port = f.port();
    let out = py(&[
        "--port", &port, "--token", "wrong", "get", "--ticket", &ticket,
    ])
    .await;
    let (class, message) = expect_error(&out);
    assert_eq!(class, "FlightUnauthenticatedError", "{message}");
    assert!(message.contains("invalid bearer token"), "{message}");
    assert!(
        !message.contains("wrong"),
        "the token is not echoed: {message}"
    );

    let out = py(&["--port", &port, "list"]).await;
    let (class, message) = expect_error(&out);
    assert_eq!(class, "FlightUnauthenticatedError");
    assert!(
        message.contains("missing authorization header"),
        "{message}"
    );

    for cmd in ["actions", "list"] {
        let out = py(&["--port", &port, "--token", "nope", cmd]).await;
        assert_eq!(expect_error(&out).0, "FlightUnauthenticatedError", "{cmd}");
    }
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_actions_and_handshake() {
    let (db, f) = setup().await;
    let port = f.port();
    let out = py(&["--port", &port, "--token", TOKEN, "list"]).await;
    let names: Vec<String> = out["flights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["path"][0].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, vec!["va_orders", "events", "posts"], "{out}");
    let orders = &out["flights"][0];
    assert_eq!(
        orders["fields"],
        json!(["id", "customer", "status", "total", "created_at"])
    );

    // GetFlightInfo by path and by command; the endpoint ticket works with DoGet.
    let info = py(&[
        "--port",
        &port,
        "--token",
        TOKEN,
        "info",
        "--path",
        "va_orders",
    ])
    .await;
    let ticket: Value = serde_json::from_str(info["tickets"][0].as_str().unwrap()).unwrap();
    assert_eq!(ticket, json!({"type": "view", "view": "va_orders"}));
    assert_eq!(get(&f, &ticket).await["num_rows"], json!(5));
    let cmd = json!({"type": "view", "view": "va_orders", "columns": ["total"]}).to_string();
    let info = py(&["--port", &port, "--token", TOKEN, "info", "--cmd", &cmd]).await;
    assert_eq!(info["schema"][0]["type"], json!("decimal128(10, 2)"));
    assert_eq!(info["tickets"][0].as_str().unwrap(), cmd);
    let missing = py(&[
        "--port", &port, "--token", TOKEN, "info", "--path", "va_nope",
    ])
    .await;
    assert!(
        expect_error(&missing)
            .1
            .contains("no flight named \"va_nope\"")
    );

    // GetSchema for a view, the events flight and a GraphQL query.
    let s = py(&[
        "--port", &port, "--token", TOKEN, "schema", "--path", "events",
    ])
    .await;
    let names: Vec<&str> = s["schema"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "pk",
            "id",
            "occurred_at",
            "entity",
            "entity_id",
            "op",
            "before",
            "after",
            "changed_fields",
            "actor",
            "tenant_id"
        ]
    );
    let s = py(&[
        "--port", &port, "--token", TOKEN, "schema", "--path", "posts",
    ])
    .await;
    assert_eq!(
        s["schema"][2]["type"],
        json!("struct<name: string, karma: int64>")
    );

    // Actions: health, refresh (picks up a new view), unknown.
    let out = py(&["--port", &port, "--token", TOKEN, "actions"]).await;
    assert_eq!(out["actions"], json!(["health", "refresh"]));
    let out = py(&[
        "--port", &port, "--token", TOKEN, "action", "--type", "health",
    ])
    .await;
    assert_eq!(out["results"][0]["status"], json!("ok"));
    db.batch("CREATE VIEW va_paid AS SELECT * FROM va_orders WHERE status = 'paid'")
        .await;
    let out = py(&[
        "--port", &port, "--token", TOKEN, "action", "--type", "refresh",
    ])
    .await;
    assert_eq!(out["results"][0]["relations"], json!(2));
    assert_eq!(
        get(&f, &json!({"type": "view", "view": "va_paid"})).await["num_rows"],
        json!(3)
    );
    // The pub fn the main crate calls on SIGHUP.
    db.batch("CREATE VIEW va_drafts AS SELECT * FROM va_orders WHERE status = 'draft'")
        .await;
    assert_eq!(f.registry.refresh().await.unwrap(), 3);
    let out = py(&[
        "--port", &port, "--token", TOKEN, "action", "--type", "nope",
    ])
    .await;
    assert!(expect_error(&out).1.contains("unknown action \"nope\""));

    // Handshake with Basic credentials whose password is the token (pyarrow's
    // authenticate_basic_token), then calls with the returned bearer header.
    let out = py(&["--port", &port, "handshake", "--password", TOKEN]).await;
    assert_eq!(
        out["header"],
        json!(["authorization", format!("Bearer {TOKEN}")])
    );
    assert_eq!(out["actions"], json!(["health", "refresh"]));
    let out = py(&["--port", &port, "handshake", "--password", "nope"]).await;
    assert_eq!(expect_error(&out).0, "FlightUnauthenticatedError");
    f.stop().await;
}

const EVENTS_SQL: &str = r#"
INSERT INTO fraiseql.tb_entity_change_log
  (entity, entity_id, op, before, after, changed_fields, actor, tenant_id, occurred_at)
VALUES
 ('order', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'INSERT', NULL, '{"total": 1}', '{total}', 'ann', 't1', '2026-01-01T00:00:00Z'),
 ('user',  NULL, 'UPDATE', '{"n": 1}', '{"n": 2}', '{n}', NULL, NULL, '2026-01-02T00:00:00Z'),
 ('order', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'UPDATE', '{"total": 1}', '{"total": 2}', '{total}', 'bob', 't1', '2026-01-03T00:00:00Z'),
 ('order', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'DELETE', '{"total": 2}', NULL, NULL, 'bob', 't1', '2026-01-04T00:00:00Z');
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_ticket_reads_the_change_log() {
    let _log = common::read_change_log().await;
    let (db, f) = setup().await;
    db.batch(EVENTS_SQL).await;
    common::change_log_settled(&db).await;
    let out = get(&f, &json!({"type": "events"})).await;
    assert_eq!(
        column(&out, "pk"),
        vec![json!(1), json!(2), json!(3), json!(4)]
    );
    // Compare every column with tokio-postgres.
    let client = db.client().await;
    let rows = client
        .query(
            "SELECT pk, id, occurred_at, entity, entity_id, op, before, after, changed_fields,
                    actor, tenant_id FROM fraiseql.tb_entity_change_log ORDER BY pk",
            &[],
        )
        .await
        .unwrap();
    for (r, got) in rows.iter().zip(out["rows"].as_array().unwrap()) {
        let expected = json!({
            "pk": r.get::<_, i64>(0),
            "id": r.get::<_, uuid::Uuid>(1).to_string(),
            "occurred_at": r.get::<_, chrono::DateTime<chrono::Utc>>(2)
                .format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
            "entity": r.get::<_, String>(3),
            "entity_id": r.get::<_, Option<uuid::Uuid>>(4).map(|u| u.to_string()),
            "op": r.get::<_, String>(5),
            "before": r.get::<_, Option<Value>>(6),
            "after": r.get::<_, Option<Value>>(7),
            "changed_fields": r.get::<_, Option<Vec<String>>>(8),
            "actor": r.get::<_, Option<String>>(9),
            "tenant_id": r.get::<_, Option<String>>(10),
        });
        assert_eq!(got, &expected);
    }
    // Entity, since_pk (exclusive), since/until, limit; alias type name.
    let out = get(
        &f,
        &json!({"type": "ObserverEvents", "entity": "order", "since_pk": 1,
                "since": "2026-01-02T00:00:00Z", "until": "2026-01-05T00:00:00Z", "limit": 1}),
    )
    .await;
    assert_eq!(column(&out, "pk"), vec![json!(3)]);
    assert_eq!(column(&out, "op"), vec![json!("UPDATE")]);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_follow_tails_new_rows() {
    let _log = common::read_change_log().await;
    let db = TestDb::new().await;
    db.batch(EVENTS_SQL).await;
    common::change_log_settled(&db).await;
    let f = TestFlight::start_following(&db, config()).await;
    // Follow from pk 4 until 2 more events arrive (limit), then the stream ends.
    let ticket = json!({"type": "events", "since_pk": 4, "follow": true, "limit": 2});
    let reader = {
        let port = f.port();
        let t = ticket.to_string();
        tokio::spawn(async move {
            py(&["--port", &port, "--token", TOKEN, "get", "--ticket", &t]).await
        })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!reader.is_finished(), "follow keeps the stream open");
    db.batch(
        "INSERT INTO fraiseql.tb_entity_change_log (entity, op, after) VALUES ('order', 'INSERT', '{\"n\": 5}');",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    db.batch(
        "INSERT INTO fraiseql.tb_entity_change_log (entity, op, after) VALUES ('order', 'INSERT', '{\"n\": 6}');",
    )
    .await;
    let out = tokio::time::timeout(Duration::from_secs(20), reader)
        .await
        .expect("stream ends at its limit")
        .unwrap();
    assert_eq!(column(&out, "pk"), vec![json!(5), json!(6)]);
    assert_eq!(
        column(&out, "after"),
        vec![json!({"n": 5}), json!({"n": 6})]
    );
    f.stop().await;
}

/// A GraphQL source over fixed rows: `{ posts { … } }` is the only list query.
struct TestGraphQL;

fn posts_shape() -> Vec<GqlField> {
    vec![
        GqlField::new("id", GqlType::Uuid, false),
        GqlField::new("title", GqlType::String, true),
        GqlField::new(
            "author",
            GqlType::Object(vec![
                GqlField::new("name", GqlType::String, true),
                GqlField::new("karma", GqlType::Int, true),
            ]),
            true,
        ),
        GqlField::new("tags", GqlType::List(Box::new(GqlType::String)), true),
        GqlField::new("score", GqlType::Float, true),
        GqlField::new("published", GqlType::Boolean, true),
        GqlField::new("createdAt", GqlType::DateTime, true),
        GqlField::new("day", GqlType::Date, true),
        GqlField::new("meta", GqlType::Json, true),
        GqlField::new(
            "comments",
            GqlType::List(Box::new(GqlType::Object(vec![GqlField::new(
                "body",
                GqlType::String,
                true,
            )]))),
            true,
        ),
    ]
}

fn posts_rows() -> Vec<Value> {
    vec![
        json!({"id": "6f1c0f3e-3f4e-4b43-9a55-0a1f3b1d2c01", "title": "Hello", "author": {"name": "Ann", "karma": 42},
               "tags": ["rust", "arrow"], "score": 4.5, "published": true, "createdAt": "2026-01-02T03:04:05.5+01:00",
               "day": "2026-01-02", "meta": {"k": [1, 2]}, "comments": [{"body": "first"}, {"body": null}]}),
        json!({"id": "6f1c0f3e-3f4e-4b43-9a55-0a1f3b1d2c02", "title": null, "author": null, "tags": null,
               "score": null, "published": null, "createdAt": null, "day": null, "meta": null, "comments": []}),
        json!({"id": "6f1c0f3e-3f4e-4b43-9a55-0a1f3b1d2c03", "title": "Third", "author": {"name": null, "karma": null},
               "tags": [null], "score": -1, "published": false, "createdAt": "2026-03-01T00:00:00Z",
               "day": "1999-12-31", "meta": "text", "comments": null}),
    ]
}

impl GraphQLSource for TestGraphQL {
    fn shape<'a>(
        &'a self,
        _identity: &'a fraiseql::auth::Identity,
        query: &'a str,
        _variables: &'a Map<String, Value>,
        _operation_name: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<GqlField>, GraphQLSourceError>> {
        async move {
            if query.contains("posts") {
                Ok(posts_shape())
            } else {
                Err(GraphQLSourceError::Invalid(
                    "Unknown field \"nope\" on type \"Query\"".into(),
                ))
            }
        }
        .boxed()
    }

    fn execute<'a>(
        &'a self,
        identity: &'a fraiseql::auth::Identity,
        query: &'a str,
        variables: &'a Map<String, Value>,
        operation_name: Option<&'a str>,
    ) -> BoxFuture<'a, Result<GraphQLRows, GraphQLSourceError>> {
        async move {
            let fields = self
                .shape(identity, query, variables, operation_name)
                .await?;
            let limit = variables
                .get("limit")
                .and_then(Value::as_u64)
                .unwrap_or(u64::MAX) as usize;
            let rows: Vec<_> = posts_rows().into_iter().take(limit).map(Ok).collect();
            Ok(GraphQLRows {
                fields,
                rows: futures_util::stream::iter(rows).boxed(),
            })
        }
        .boxed()
    }

    fn list_queries(&self) -> Vec<NamedQuery> {
        vec![NamedQuery {
            name: "posts".into(),
            query: "{ posts { id title author { name karma } tags score published createdAt day meta comments { body } } }".into(),
        }]
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphql_ticket_maps_rows_to_arrow() {
    let (_db, f) = setup().await;
    let out = get(
        &f,
        &json!({"type": "graphql", "query": "{ posts { id } }", "variables": {}}),
    )
    .await;
    let types: Vec<&str> = out["schema"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "extension<arrow.uuid>",
            "string",
            "struct<name: string, karma: int64>",
            "list<item: string>",
            "double",
            "bool",
            "timestamp[us, tz=UTC]",
            "date32[day]",
            "extension<arrow.json>",
            "list<item: struct<body: string>>"
        ]
    );
    // The rows, normalised like the source's JSON: timestamps in UTC, numbers as numbers.
    let expected = json!([
        {"id": "6f1c0f3e-3f4e-4b43-9a55-0a1f3b1d2c01", "title": "Hello", "author": {"name": "Ann", "karma": 42},
         "tags": ["rust", "arrow"], "score": 4.5, "published": true, "createdAt": "2026-01-02T02:04:05.500000Z",
         "day": "2026-01-02", "meta": {"k": [1, 2]}, "comments": [{"body": "first"}, {"body": null}]},
        {"id": "6f1c0f3e-3f4e-4b43-9a55-0a1f3b1d2c02", "title": null, "author": null, "tags": null,
         "score": null, "published": null, "createdAt": null, "day": null, "meta": null, "comments": []},
        {"id": "6f1c0f3e-3f4e-4b43-9a55-0a1f3b1d2c03", "title": "Third", "author": {"name": null, "karma": null},
         "tags": [null], "score": -1.0, "published": false, "createdAt": "2026-03-01T00:00:00.000000Z",
         "day": "1999-12-31", "meta": "text", "comments": null}
    ]);
    assert_eq!(out["rows"], expected);

    // Variables reach the source; the alias type name works.
    let out = get(
        &f,
        &json!({"type": "GraphQLQuery", "query": "{ posts { id } }", "variables": {"limit": 1}}),
    )
    .await;
    assert_eq!(out["num_rows"], json!(1));

    // An invalid query is InvalidArgument with the engine's message.
    let out = get(&f, &json!({"type": "graphql", "query": "{ nope }"})).await;
    let (class, message) = expect_error(&out);
    assert_eq!(class, "ArrowInvalid");
    assert!(message.contains("Unknown field \"nope\""), "{message}");
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphql_ticket_without_a_source_is_unimplemented() {
    let db = TestDb::new().await;
    let f = TestFlight::start(&db, config()).await;
    let out = get(&f, &json!({"type": "graphql", "query": "{ posts { id } }"})).await;
    let (class, message) = expect_error(&out);
    assert_eq!(class, "ArrowNotImplementedError", "{message}");
    assert!(message.contains("no GraphQL schema"), "{message}");
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_going_away_cancels_the_query() {
    let db = TestDb::new().await;
    // ~100M rows streamed by a set-returning function: minutes if not cancelled.
    db.batch(
        "CREATE VIEW va_big AS SELECT n, md5(n::text) AS s FROM (SELECT generate_series(1, 100000000) AS n) g",
    )
    .await;
    let f = TestFlight::start(
        &db,
        fraiseql::flight::FlightConfig {
            batch_rows: 10_000,
            ..config()
        },
    )
    .await;
    let ticket = json!({"type": "view", "view": "va_big"}).to_string();
    let port = f.port();
    let out = py(&[
        "--port",
        &port,
        "--token",
        TOKEN,
        "get",
        "--ticket",
        &ticket,
        "--batches",
        "2",
    ])
    .await;
    assert_eq!(out["rows_read"], json!(20_000));
    let client = db.client().await;
    let name = db.name().to_string();
    let gone = eventually(Duration::from_secs(15), || {
        let client = &client;
        let name = name.clone();
        async move {
            let n: i64 = client
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity
                      WHERE datname = $1 AND state = 'active' AND pid <> pg_backend_pid()",
                    &[&name],
                )
                .await
                .unwrap()
                .get(0);
            n == 0
        }
    })
    .await;
    assert!(gone, "the PostgreSQL query stops when the client goes away");
    let m = &f.metrics;
    assert!(
        eventually(Duration::from_secs(5), || async {
            m.streams_failed.with_label_values(&["view"]).get() == 1
        })
        .await
    );
    assert_eq!(m.streams_started.with_label_values(&["view"]).get(), 1);
    assert_eq!(m.streams_finished.with_label_values(&["view"]).get(), 0);
    assert!(m.rows_sent.get() >= 20_000);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_streams_rows_and_bytes() {
    let (_db, f) = setup().await;
    get(&f, &json!({"type": "view", "view": "va_orders"})).await;
    get(&f, &json!({"type": "events"})).await;
    get(
        &f,
        &json!({"type": "view", "view": "va_orders", "where": {"total": {"gt": "x"}}}),
    )
    .await;
    let m = &f.metrics;
    assert_eq!(m.streams_started.with_label_values(&["view"]).get(), 2);
    assert_eq!(m.streams_finished.with_label_values(&["view"]).get(), 1);
    assert_eq!(m.streams_failed.with_label_values(&["view"]).get(), 1);
    assert_eq!(m.streams_finished.with_label_values(&["events"]).get(), 1);
    assert_eq!(m.rows_sent.get(), 5);
    assert!(m.bytes_sent.get() > 100);
    assert_eq!(m.stream_duration.get_sample_count(), 3);
    let names: Vec<String> = f
        .prometheus
        .gather()
        .iter()
        .map(|x| x.name().to_string())
        .collect();
    assert!(names.contains(&"fraiseql_flight_rows_sent_total".to_string()));
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_client_reads_a_view_and_a_graphql_query_into_dataframes() {
    let (_db, f) = setup().await;
    let port = f.port();
    let out = run_python_raw(
        "examples/python/flight_client.py",
        &[
            "--port",
            &port,
            "--token",
            TOKEN,
            "--view",
            "va_orders",
            "--where",
            r#"{"status": {"eq": "paid"}}"#,
            "--graphql",
            "{ posts { id title author { name karma } } }",
        ],
    )
    .await;
    assert!(out.contains("flights: va_orders, events, posts"), "{out}");
    assert!(out.contains("view va_orders: 3 rows x 5 columns"), "{out}");
    assert!(out.contains("graphql: 3 rows x 10 columns"), "{out}");
    assert!(out.contains("Hello"), "{out}");
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_follow_streams_cleanly() {
    let _log = common::read_change_log().await;
    let db = TestDb::new().await;
    db.batch(EVENTS_SQL).await;
    common::change_log_settled(&db).await;
    let f = TestFlight::start_following(&db, config()).await;
    let reader = {
        let port = f.port();
        let t = json!({"type": "events", "follow": true}).to_string();
        tokio::spawn(async move {
            py(&["--port", &port, "--token", TOKEN, "get", "--ticket", &t]).await
        })
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!reader.is_finished());
    f.stop().await;
    let out = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("the follow stream ends on shutdown")
        .unwrap();
    assert_eq!(out["num_rows"], json!(4), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_down_at_startup_is_unavailable_not_fatal() {
    // Nothing listens on port 1: the pool cannot connect.
    let mut pg = deadpool_postgres::Config::new();
    pg.url = Some("postgres://postgres@127.0.0.1:1/none?connect_timeout=1".into());
    let pool = pg
        .create_pool(
            Some(deadpool_postgres::Runtime::Tokio1),
            tokio_postgres::NoTls,
        )
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(fraiseql::flight::run_on(
        listener,
        config(),
        pool,
        shutdown.clone(),
    ));
    let ticket = json!({"type": "view", "view": "va_orders"}).to_string();
    let out = py(&[
        "--port", &port, "--token", TOKEN, "get", "--ticket", &ticket,
    ])
    .await;
    let (class, message) = expect_error(&out);
    assert_eq!(class, "FlightUnavailableError", "{message}");
    assert!(
        message.contains("schema registry is not loaded"),
        "{message}"
    );
    let out = py(&[
        "--port", &port, "--token", TOKEN, "action", "--type", "health",
    ])
    .await;
    let (class, message) = expect_error(&out);
    assert_eq!(class, "FlightUnavailableError", "{message}");
    assert!(message.contains("database unavailable"), "{message}");
    assert!(!task.is_finished(), "the server keeps running");
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_cuts_a_bounded_stream_with_an_error_not_a_short_result() {
    let db = TestDb::new().await;
    db.batch("CREATE VIEW va_big AS SELECT n FROM (SELECT generate_series(1, 100000000) AS n) g")
        .await;
    let f = TestFlight::start(
        &db,
        fraiseql::flight::FlightConfig {
            batch_rows: 10_000,
            ..config()
        },
    )
    .await;
    let reader = {
        let port = f.port();
        let t = json!({"type": "view", "view": "va_big"}).to_string();
        tokio::spawn(async move {
            py(&["--port", &port, "--token", TOKEN, "get", "--ticket", &t]).await
        })
    };
    let m = f.metrics.clone();
    assert!(
        eventually(Duration::from_secs(10), || async { m.rows_sent.get() > 0 }).await,
        "streaming started"
    );
    f.stop().await;
    let out = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("client returns")
        .unwrap();
    let (class, message) = expect_error(&out);
    assert_eq!(class, "FlightUnavailableError", "{message}");
    assert!(message.contains("shutting down"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_changed_since_the_registry_loaded_asks_for_refresh() {
    let (db, f) = setup().await;
    db.batch("DROP VIEW va_orders; CREATE VIEW va_orders AS SELECT id, status FROM tb_order")
        .await;
    let out = get(&f, &json!({"type": "view", "view": "va_orders"})).await;
    let (_, message) = expect_error(&out);
    assert!(message.contains("run DoAction \"refresh\""), "{message}");
    let port = f.port();
    py(&[
        "--port", &port, "--token", TOKEN, "action", "--type", "refresh",
    ])
    .await;
    let out = get(&f, &json!({"type": "view", "view": "va_orders"})).await;
    assert_eq!(out["schema"].as_array().unwrap().len(), 2, "{out}");
    assert_eq!(out["num_rows"], json!(5));
    f.stop().await;
}
