//! GraphQL tickets over the real engine (`EngineSource`) on the blog fixture: a ticket
//! returns the rows and values `/graphql` returns for the same query (aliases, nested
//! objects and lists, a filter with a variable), typed columns; invalid queries fail with
//! InvalidArgument and the GraphQL message, never SQL; GetFlightInfo / GetSchema describe a
//! query without running it; ListFlights advertises the list queries; pyarrow reads a
//! ticket into a table.

use crate::common;

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, TimestampMicrosecondType};
use arrow_array::{Array, RecordBatch};
use arrow_flight::client::FlightClient;
use arrow_flight::error::FlightError;
use arrow_flight::{FlightDescriptor, Ticket};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use bytes::Bytes;
use common::flight::*;
use common::{Seed, TestDb, blog_engine, blog_engine_with, data, errors, gql, ts};
use fraiseql::graphql::{EngineSource, Limits, SharedEngine};
use futures_util::TryStreamExt;
use serde_json::{Value, json};

/// A filter with a variable, an alias, a nested object, a list of nested objects, a list
/// of scalars, nullable values and a timestamp.
const POSTS: &str = "query Popular($min: Int!) {
  posts(where: {views: {gte: $min}}, orderBy: [{views: DESC}, {createdAt: ASC}], limit: 1000) {
    id headline: title views rating published tags createdAt
    author { name identifier }
    comments { body author { name } }
  }
}";

struct Fixture {
    db: TestDb,
    seed: Seed,
    engine: SharedEngine,
    flight: TestFlight,
}

async fn setup() -> Fixture {
    let db = TestDb::new().await;
    let seed = db.load_blog().await;
    let engine = SharedEngine::new(blog_engine());
    let source = EngineSource::new(engine.clone(), db.pool().clone());
    let flight = TestFlight::start_with(&db, config(), Some(Arc::new(source))).await;
    Fixture {
        db,
        seed,
        engine,
        flight,
    }
}

async fn client(f: &TestFlight) -> FlightClient {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", f.addr))
        .expect("endpoint")
        .connect()
        .await
        .expect("connects");
    let mut c = FlightClient::new(channel);
    c.add_header("authorization", &format!("Bearer {TOKEN}"))
        .expect("header");
    c
}

fn ticket(query: &str, variables: Value) -> String {
    json!({"type": "graphql", "query": query, "variables": variables}).to_string()
}

async fn fetch(c: &mut FlightClient, t: String) -> Result<Vec<RecordBatch>, tonic::Status> {
    let stream = c.do_get(Ticket::new(t)).await.map_err(status)?;
    stream.try_collect().await.map_err(status)
}

fn status(e: FlightError) -> tonic::Status {
    match e {
        FlightError::Tonic(s) => *s,
        other => panic!("expected a gRPC status, got {other}"),
    }
}

/// One cell as JSON: timestamps as microseconds, UUIDs as text, numbers as f64, `arrow.json`
/// columns parsed.
fn cell(field: &Field, col: &dyn Array, i: usize) -> Value {
    if col.is_null(i) {
        return Value::Null;
    }
    match col.data_type() {
        DataType::Utf8
            if field
                .metadata()
                .get("ARROW:extension:name")
                .is_some_and(|n| n == "arrow.json") =>
        {
            serde_json::from_str(col.as_string::<i32>().value(i)).expect("JSON text")
        }
        DataType::Utf8 => json!(col.as_string::<i32>().value(i)),
        DataType::Int64 => json!(col.as_primitive::<Int64Type>().value(i) as f64),
        DataType::Float64 => json!(col.as_primitive::<Float64Type>().value(i)),
        DataType::Boolean => json!(col.as_boolean().value(i)),
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            json!(col.as_primitive::<TimestampMicrosecondType>().value(i) as f64)
        }
        DataType::FixedSizeBinary(16) => {
            let b = col.as_fixed_size_binary().value(i);
            json!(uuid::Uuid::from_slice(b).expect("16 bytes").to_string())
        }
        DataType::List(item) => {
            let items = col.as_list::<i32>().value(i);
            Value::Array((0..items.len()).map(|j| cell(item, &items, j)).collect())
        }
        DataType::Struct(fields) => {
            let s = col.as_struct();
            Value::Object(
                fields
                    .iter()
                    .zip(s.columns())
                    .map(|(f, c)| (f.name().clone(), cell(f, c, i)))
                    .collect(),
            )
        }
        other => panic!("unexpected column type {other}"),
    }
}

/// The rows of the batches, normalised like the /graphql side.
fn rows(batches: &[RecordBatch]) -> Vec<Value> {
    let mut out = Vec::new();
    for b in batches {
        let schema = b.schema();
        for i in 0..b.num_rows() {
            let row = Value::Object(
                schema
                    .fields()
                    .iter()
                    .zip(b.columns())
                    .map(|(f, c)| (f.name().clone(), cell(f, c, i)))
                    .collect(),
            );
            out.push(normalise(&row, ""));
        }
    }
    out
}

/// A /graphql value in the form of [`cell`]: numbers as f64, `createdAt` as microseconds.
fn normalise(v: &Value, key: &str) -> Value {
    match v {
        Value::Number(n) => json!(n.as_f64().expect("finite")),
        Value::String(_) if key == "createdAt" => json!(ts(v).timestamp_micros() as f64),
        Value::Array(a) => Value::Array(a.iter().map(|x| normalise(x, key)).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| (k.clone(), normalise(x, k)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn field_summary(schema: &Schema) -> Vec<(String, DataType, bool)> {
    schema
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().clone(), f.is_nullable()))
        .collect()
}

fn posts_schema_summary() -> Vec<(String, DataType, bool)> {
    let utc = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let s = |n: &str, t: DataType, null: bool| (n.to_string(), t, null);
    let f = |n: &str, t: DataType, null: bool| Field::new(n, t, null);
    vec![
        s("id", DataType::Utf8, false),
        s("headline", DataType::Utf8, false),
        s("views", DataType::Int64, false),
        s("rating", DataType::Float64, true),
        s("published", DataType::Boolean, false),
        s(
            "tags",
            DataType::List(Arc::new(f("item", DataType::Utf8, true))),
            false,
        ),
        s("createdAt", utc, false),
        s(
            "author",
            DataType::Struct(
                vec![
                    f("name", DataType::Utf8, false),
                    f("identifier", DataType::Utf8, false),
                ]
                .into(),
            ),
            false,
        ),
        s(
            "comments",
            DataType::List(Arc::new(f(
                "item",
                DataType::Struct(
                    vec![
                        f("body", DataType::Utf8, false),
                        f(
                            "author",
                            DataType::Struct(vec![f("name", DataType::Utf8, false)].into()),
                            true,
                        ),
                    ]
                    .into(),
                ),
                true,
            ))),
            false,
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticket_returns_the_rows_of_graphql_with_typed_columns() {
    let fx = setup().await;
    let engine = fx.engine.current();
    let vars = json!({"min": 500});
    let over_http = data(&engine, fx.db.pool(), POSTS, vars.clone()).await["posts"].clone();
    let expected: Vec<Value> = over_http
        .as_array()
        .expect("a list")
        .iter()
        .map(|r| normalise(r, ""))
        .collect();
    let want = fx.seed.posts.iter().filter(|p| p.views >= 500).count();
    assert!(want > 10, "the fixture has rows to compare ({want})");
    assert_eq!(expected.len(), want);

    let mut c = client(&fx.flight).await;
    let batches = fetch(&mut c, ticket(POSTS, vars)).await.expect("DoGet");
    let got = rows(&batches);
    assert_eq!(got.len(), want);
    assert_eq!(got, expected);
    assert_eq!(field_summary(&batches[0].schema()), posts_schema_summary());
    // Spot-check against the seed (not the server): the first row is the most viewed.
    let top = fx
        .seed
        .posts
        .iter()
        .filter(|p| p.views >= 500)
        .max_by_key(|p| (p.views, std::cmp::Reverse(p.created_at)))
        .expect("a post");
    assert_eq!(got[0]["headline"], json!(top.title));
    assert_eq!(got[0]["views"], json!(top.views as f64));

    // An advertised list query (path descriptor) runs through the same engine too.
    let info = c
        .get_flight_info(FlightDescriptor::new_path(vec!["users".into()]))
        .await
        .expect("GetFlightInfo users");
    let t = info.endpoint[0].ticket.clone().expect("a ticket").ticket;
    let doc: Value = serde_json::from_slice(&t).expect("JSON ticket");
    let query = doc["query"].as_str().expect("a query");
    let over_http = data(&engine, fx.db.pool(), query, json!({})).await["users"].clone();
    let batches = fetch(&mut c, String::from_utf8(t.to_vec()).unwrap())
        .await
        .expect("DoGet users");
    let got = rows(&batches);
    assert!(!got.is_empty());
    let expected: Vec<Value> = over_http
        .as_array()
        .unwrap()
        .iter()
        .map(|r| normalise(r, ""))
        .collect();
    assert_eq!(got, expected);
    let role = batches[0].schema().field_with_name("role").unwrap().clone();
    assert_eq!(role.data_type(), &DataType::Utf8);
    assert!(got.iter().all(|r| {
        r["role"]
            .as_str()
            .is_some_and(|s| s.chars().all(|ch| ch.is_ascii_uppercase()))
    }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_queries_fail_with_the_graphql_message_and_no_sql() {
    let fx = setup().await;
    let engine = fx.engine.current();
    let pool = fx.db.pool();
    let mut c = client(&fx.flight).await;
    let no_sql = |m: &str| {
        for word in ["SELECT", "json_build_object", "v_post", "jsonb"] {
            assert!(!m.contains(word), "SQL in {m:?}");
        }
    };

    // The same message /graphql gives, for a validation error and for a bad variable.
    let bad_variable = "query($min: Int!) { posts(where: {views: {gte: $min}}) { id } }";
    for (query, vars) in [
        ("{ posts { id nope } }", json!({})),
        (bad_variable, json!({"min": "many"})),
        ("{ posts(limit: 5000) { id } }", json!({})),
    ] {
        let over_http = errors(&gql(&engine, pool, query, vars.clone()).await);
        let (message, _) = over_http.first().cloned().expect("an error over /graphql");
        let s = fetch(&mut c, ticket(query, vars.clone()))
            .await
            .expect_err("DoGet fails");
        assert_eq!(s.code(), tonic::Code::InvalidArgument, "{query}: {s:?}");
        assert!(
            s.message().contains(&message),
            "{query}: {s:?} vs {message}"
        );
        no_sql(s.message());
        let s = c
            .get_flight_info(FlightDescriptor::new_cmd(ticket(query, vars)))
            .await
            .map_err(status)
            .expect_err("GetFlightInfo fails");
        assert_eq!(s.code(), tonic::Code::InvalidArgument, "{query}: {s:?}");
        assert!(s.message().contains(&message), "{query}: {s:?}");
    }

    // Not one list query.
    for (query, want) in [
        (
            "{ post(id: \"00000000-0000-4000-9000-000000000001\") { title } }",
            "not a list",
        ),
        ("{ posts { id } users { id } }", "exactly one root field"),
        (
            "{ __schema { queryType { name } } }",
            "exactly one root field",
        ),
    ] {
        let s = fetch(&mut c, ticket(query, json!({})))
            .await
            .expect_err("DoGet fails");
        assert_eq!(s.code(), tonic::Code::InvalidArgument, "{query}: {s:?}");
        assert!(s.message().contains(want), "{query}: {s:?}");
        no_sql(s.message());
    }

    // The source follows the shared engine: after a swap (SIGHUP reload) the new limits hold.
    fx.engine.swap(blog_engine_with(Limits {
        max_limit: 5,
        default_limit: 5,
        ..Limits::default()
    }));
    let s = fetch(&mut c, ticket("{ posts(limit: 10) { id } }", json!({})))
        .await
        .expect_err("over the new max_limit");
    assert_eq!(s.code(), tonic::Code::InvalidArgument, "{s:?}");
    assert!(s.message().contains("maximum of 5"), "{s:?}");
    let batches = fetch(&mut c, ticket("{ posts { id } }", json!({})))
        .await
        .expect("DoGet");
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flight_info_and_schema_describe_without_running() {
    let fx = setup().await;
    // The view is gone: describing the query must not touch it, running it must fail.
    fx.db
        .batch("ALTER VIEW v_post RENAME TO v_post_elsewhere")
        .await;
    let mut c = client(&fx.flight).await;
    let t = ticket(POSTS, json!({"min": 500}));
    let descriptor = FlightDescriptor::new_cmd(t.clone());

    let info = c
        .get_flight_info(descriptor.clone())
        .await
        .expect("GetFlightInfo");
    let schema = info.clone().try_decode_schema().expect("a schema");
    assert_eq!(field_summary(&schema), posts_schema_summary());
    let endpoint_ticket = info.endpoint[0].ticket.clone().expect("a ticket").ticket;
    assert_eq!(endpoint_ticket, Bytes::from(t.clone()));

    let schema = c.get_schema(descriptor).await.expect("GetSchema");
    assert_eq!(field_summary(&schema), posts_schema_summary());

    // ListFlights advertises the list queries with their schemas (no query runs either).
    let flights: Vec<_> = c
        .list_flights(Bytes::new())
        .await
        .expect("ListFlights")
        .try_collect()
        .await
        .expect("flights");
    let paths: Vec<String> = flights
        .iter()
        .filter_map(|f| f.flight_descriptor.as_ref())
        .flat_map(|d| d.path.clone())
        .collect();
    for name in ["users", "posts", "comments"] {
        assert!(paths.contains(&name.to_string()), "{name} in {paths:?}");
    }

    let s = fetch(&mut c, t).await.expect_err("the view is gone");
    assert_eq!(s.code(), tonic::Code::Internal, "{s:?}");
    assert!(s.message().contains("the query failed"), "{s:?}");
    assert!(!s.message().contains("SELECT"), "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyarrow_reads_a_graphql_ticket_into_a_table() {
    let fx = setup().await;
    let out = get(
        &fx.flight,
        &json!({"type": "graphql", "query": POSTS, "variables": {"min": 900}}),
    )
    .await;
    let rows = out["rows"].as_array().unwrap_or_else(|| panic!("{out}"));
    let mut want: Vec<_> = fx.seed.posts.iter().filter(|p| p.views >= 900).collect();
    want.sort_by_key(|p| (std::cmp::Reverse(p.views), p.created_at));
    assert!(!want.is_empty());
    assert_eq!(rows.len(), want.len());
    assert_eq!(rows[0]["headline"], json!(want[0].title));
    assert_eq!(rows[0]["id"], json!(want[0].id.to_string()));
    assert_eq!(
        rows[0]["author"]["identifier"],
        json!(fx.seed.users[want[0].author].identifier)
    );
}
