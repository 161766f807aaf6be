//! DoPut through the pyarrow client: batches appended to an allow-listed `ta_` table in one
//! transaction; a wrong schema, a table not allow-listed, or a row the database refuses
//! leaves the table untouched.

use crate::common;

use common::TestDb;
use common::flight::*;
use fraiseql::flight::FlightConfig;
use serde_json::{Value, json};

const TABLE_SQL: &str = r#"
CREATE TABLE ta_readings (
    id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sensor   text NOT NULL,
    n        int4,
    value    float8,
    reading  numeric(10,3),
    at       timestamptz,
    local_at timestamp,
    day      date,
    tags     text[],
    uid      uuid,
    ok       bool,
    payload  jsonb,
    raw      bytea,
    created  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE ta_other (x int);
CREATE VIEW va_readings AS SELECT * FROM ta_readings;
"#;

async fn setup() -> (TestDb, TestFlight) {
    let db = TestDb::new().await;
    db.batch(TABLE_SQL).await;
    let f = TestFlight::start(
        &db,
        FlightConfig {
            put_tables: vec!["ta_readings".into()],
            ..config()
        },
    )
    .await;
    (db, f)
}

async fn put(f: &TestFlight, table: &str, data: Value) -> Value {
    let mut args = base_args(f);
    args.extend([
        "put".into(),
        "--table".into(),
        table.into(),
        "--data".into(),
        data.to_string(),
    ]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    py(&refs).await
}

async fn count(db: &TestDb, table: &str) -> i64 {
    db.client()
        .await
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0)
}

fn good_columns() -> Value {
    json!([
        ["sensor", "string"],
        ["n", "int32"],
        ["value", "float64"],
        ["reading", "decimal(10,3)"],
        ["at", "timestamp_ns_utc"],
        ["local_at", "timestamp_us"],
        ["day", "date32"],
        ["tags", "list_string"],
        ["uid", "uuid"],
        ["ok", "bool"],
        ["payload", "string"],
        ["raw", "binary"]
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn do_put_appends_batches_in_one_transaction() {
    let (db, f) = setup().await;
    let data = json!({
        "columns": good_columns(),
        "batches": [
            [["s1", 1, 1.5, "12.345", "2026-01-02T03:04:05.123456+00:00", "2026-01-02T03:04:05",
              "2026-01-02", ["a", null], "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", true, "{\"k\": [1]}", "00ff"],
             ["s2", null, null, null, null, null, null, null, null, null, null, null]],
            [["s3", -7, -0.25, "-0.001", "1999-12-31T23:59:59+00:00", "1970-01-01T00:00:00",
              "1970-01-01", [], "00000000-0000-0000-0000-000000000000", false, "null", ""]]
        ]
    });
    let out = put(&f, "ta_readings", data).await;
    assert_eq!(out["result"], json!({"rows": 3}), "{out}");
    let client = db.client().await;
    let rows = client
        .query(
            "SELECT sensor, n, value, reading::text, to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'),
                    local_at::text, day::text, tags, uid::text, ok, payload, encode(raw, 'hex')
               FROM ta_readings ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    let got: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!([
                r.get::<_, String>(0),
                r.get::<_, Option<i32>>(1),
                r.get::<_, Option<f64>>(2),
                r.get::<_, Option<String>>(3),
                r.get::<_, Option<String>>(4),
                r.get::<_, Option<String>>(5),
                r.get::<_, Option<String>>(6),
                r.get::<_, Option<Vec<Option<String>>>>(7),
                r.get::<_, Option<String>>(8),
                r.get::<_, Option<bool>>(9),
                r.get::<_, Option<Value>>(10),
                r.get::<_, Option<String>>(11),
            ])
        })
        .collect();
    assert_eq!(
        got,
        vec![
            json!(["s1", 1, 1.5, "12.345", "2026-01-02 03:04:05.123456", "2026-01-02 03:04:05",
                   "2026-01-02", ["a", null], "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", true, {"k": [1]}, "00ff"]),
            json!([
                "s2", null, null, null, null, null, null, null, null, null, null, null
            ]),
            json!([
                "s3",
                -7,
                -0.25,
                "-0.001",
                "1999-12-31 23:59:59.000000",
                "1970-01-01 00:00:00",
                "1970-01-01",
                [],
                "00000000-0000-0000-0000-000000000000",
                false,
                null,
                ""
            ]),
        ]
    );
    // Written rows read back through Flight.
    let out = get(
        &f,
        &json!({"type": "view", "view": "va_readings", "columns": ["sensor", "reading"], "order_by": ["id"]}),
    )
    .await;
    assert_eq!(
        out["rows"],
        json!([{"sensor": "s1", "reading": "12.345"}, {"sensor": "s2", "reading": null},
               {"sensor": "s3", "reading": "-0.001"}])
    );
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_schema_is_refused_whole_and_nothing_is_written() {
    let (db, f) = setup().await;
    let cases: Vec<(Value, &str)> = vec![
        (
            json!([["sensor", "string"], ["value", "string"]]),
            "field \"value\" is Utf8, which cannot be written to column value of type double precision",
        ),
        (
            json!([["sensor", "string"], ["password", "string"]]),
            "ta_readings has no column \"password\"",
        ),
        (
            json!([["sensor", "string"], ["n", "int64"]]),
            "field \"n\" is Int64, which cannot be written to column n of type integer",
        ),
        (
            json!([["sensor", "string"], ["at", "timestamp_us"]]),
            "cannot be written to column at of type timestamp with time zone",
        ),
    ];
    for (columns, message) in cases {
        let width = columns.as_array().unwrap().len();
        let row: Vec<Value> = (0..width)
            .map(|i| if i == 0 { json!("s") } else { Value::Null })
            .collect();
        let out = put(
            &f,
            "ta_readings",
            json!({"columns": columns, "batches": [[row.clone()], [row]]}),
        )
        .await;
        let (class, m) = expect_error(&out);
        assert_eq!(class, "ArrowInvalid", "{m}");
        assert!(m.contains("schema refused for ta_readings"), "{m}");
        assert!(m.contains(message), "{m}");
    }
    assert_eq!(count(&db, "ta_readings").await, 0);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_row_rolls_back_every_batch() {
    let (db, f) = setup().await;
    // The second batch has a NULL sensor (NOT NULL): the first batch is not kept either.
    let out = put(
        &f,
        "ta_readings",
        json!({"columns": [["sensor", "string"], ["n", "int32"]],
               "batches": [[["ok", 1], ["ok", 2]], [[null, 3]]]}),
    )
    .await;
    let (_, m) = expect_error(&out);
    assert!(m.contains("nothing was written"), "{m}");
    assert!(m.contains("sensor"), "{m}");
    assert!(!m.to_lowercase().contains("copy "), "no SQL text: {m}");
    assert_eq!(count(&db, "ta_readings").await, 0);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_allow_listed_tables_accept_do_put() {
    let (db, f) = setup().await;
    let data = json!({"columns": [["x", "int32"]], "batches": [[[1]]]});
    let out = put(&f, "ta_other", data.clone()).await;
    let (_, m) = expect_error(&out);
    assert!(m.contains("not listed in flight.put_tables"), "{m}");
    let out = put(&f, "va_readings", data).await;
    let (_, m) = expect_error(&out);
    assert!(m.contains("not listed in flight.put_tables"), "{m}");
    assert_eq!(count(&db, "ta_other").await, 0);
    f.stop().await;
}
