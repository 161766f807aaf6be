//! Every supported PostgreSQL type, NULLs included, read with the pyarrow Flight client and
//! compared value by value with the same rows read through tokio-postgres.

use crate::common;

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use common::TestDb;
use common::flight::*;
use serde_json::{Value, json};

const TYPES_SQL: &str = r#"
CREATE TYPE mood AS ENUM ('happy', 'sad');
CREATE DOMAIN posint AS int4 CHECK (VALUE > 0);
CREATE TABLE ta_types (
    pk             int PRIMARY KEY,
    c_int2         int2,
    c_int4         int4,
    c_int8         int8,
    c_float4       float4,
    c_float8       float8,
    c_numeric      numeric(12,2),
    c_numeric_free numeric,
    c_text         text,
    c_varchar      varchar(20),
    c_bool         bool,
    c_date         date,
    c_time         time,
    c_ts           timestamp,
    c_tstz         timestamptz,
    c_uuid         uuid,
    c_jsonb        jsonb,
    c_json         json,
    c_bytea        bytea,
    c_mood         mood,
    c_int_arr      int4[],
    c_text_arr     text[],
    c_num_arr      numeric(8,3)[],
    c_uuid_arr     uuid[],
    c_tstz_arr     timestamptz[],
    c_domain       posint,
    c_domain_arr   posint[]
);
INSERT INTO ta_types VALUES
 (1, 12, 123456, 9007199254740993, 1.25, 3.141592653589793, 12.50, 3.14159265358979323846264338,
  'hello', 'varchar ✓', true, '2026-11-27', '13:14:15.123456', '2026-01-02 03:04:05.678901',
  '2026-01-02 03:04:05.678901+02', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
  '{"a": [1, 2.5, null], "b": {"c": "d"}}', '{"x": 1}', '\xdeadbeef', 'happy',
  '{1,NULL,3}', '{"a","b c",NULL}', '{1.5,NULL,-2.125}',
  '{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12}', '{"2026-05-06 07:08:09+00"}', 7, '{1,NULL,2}'),
 (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (3, -32768, -2147483648, -9223372036854775808, -0.5, -1e300, -9999999999.99, -0.000001,
  '', 'ünïcødé 🚀', false, '1970-01-01', '00:00:00', '1999-12-31 23:59:59.999999',
  '1900-06-15 12:00:00+00', '00000000-0000-0000-0000-000000000000',
  '"just a string"', '[]', '\x', 'sad',
  '{}', '{}', '{}', '{}', '{}', 1, '{}'),
 (4, 32767, 2147483647, 9223372036854775807, 3.4e38, 1.7976931348623157e308, 0.05, 0,
  'tab	and "quotes"', 'x', true, '0001-01-01', '23:59:59.999999', '2262-04-11 23:47:16',
  '2038-01-19 03:14:08+00', 'ffffffff-ffff-ffff-ffff-ffffffffffff',
  'null', 'null', '\x00ff', NULL, '{NULL}', '{NULL}', '{NULL}', '{NULL}', '{NULL}', 2147483647, '{NULL}');
CREATE VIEW va_types AS SELECT * FROM ta_types;
"#;

/// The rows read through tokio-postgres, normalised like flight_tool.py does.
async fn rows_via_postgres(db: &TestDb) -> Vec<Value> {
    let client = db.client().await;
    let rows = client
        .query(
            "SELECT pk, c_int2, c_int4, c_int8, c_float4, c_float8, c_numeric::text,
                    c_numeric_free::text, c_text, c_varchar, c_bool, c_date, c_time, c_ts, c_tstz,
                    c_uuid, c_jsonb, c_json::text, c_bytea, c_mood::text, c_int_arr, c_text_arr,
                    c_num_arr::text[], c_uuid_arr, c_tstz_arr, c_domain::int4, c_domain_arr::int4[]
               FROM ta_types ORDER BY pk",
            &[],
        )
        .await
        .unwrap();
    let ts = |t: NaiveDateTime| t.format("%Y-%m-%dT%H:%M:%S%.6f").to_string();
    let tstz = |t: DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
    rows.iter()
        .map(|r| {
            json!({
                "pk": r.get::<_, i32>(0),
                "c_int2": r.get::<_, Option<i16>>(1),
                "c_int4": r.get::<_, Option<i32>>(2),
                "c_int8": r.get::<_, Option<i64>>(3),
                "c_float4": r.get::<_, Option<f32>>(4).map(|v| v as f64),
                "c_float8": r.get::<_, Option<f64>>(5),
                "c_numeric": r.get::<_, Option<String>>(6),
                "c_numeric_free": r.get::<_, Option<String>>(7),
                "c_text": r.get::<_, Option<String>>(8),
                "c_varchar": r.get::<_, Option<String>>(9),
                "c_bool": r.get::<_, Option<bool>>(10),
                "c_date": r.get::<_, Option<NaiveDate>>(11).map(|d| d.format("%Y-%m-%d").to_string()),
                "c_time": r.get::<_, Option<NaiveTime>>(12).map(|t| t.format("%H:%M:%S%.6f").to_string()),
                "c_ts": r.get::<_, Option<NaiveDateTime>>(13).map(ts),
                "c_tstz": r.get::<_, Option<DateTime<Utc>>>(14).map(tstz),
                "c_uuid": r.get::<_, Option<uuid::Uuid>>(15).map(|u| u.to_string()),
                "c_jsonb": r.get::<_, Option<Value>>(16),
                "c_json": r.get::<_, Option<String>>(17).map(|s| serde_json::from_str::<Value>(&s).unwrap()),
                "c_bytea": r.get::<_, Option<Vec<u8>>>(18).map(|b| b.iter().map(|x| format!("{x:02x}")).collect::<String>()),
                "c_mood": r.get::<_, Option<String>>(19),
                "c_int_arr": r.get::<_, Option<Vec<Option<i32>>>>(20),
                "c_text_arr": r.get::<_, Option<Vec<Option<String>>>>(21),
                "c_num_arr": r.get::<_, Option<Vec<Option<String>>>>(22),
                "c_uuid_arr": r.get::<_, Option<Vec<Option<uuid::Uuid>>>>(23)
                    .map(|v| v.into_iter().map(|u| u.map(|u| u.to_string())).collect::<Vec<_>>()),
                "c_tstz_arr": r.get::<_, Option<Vec<Option<DateTime<Utc>>>>>(24)
                    .map(|v| v.into_iter().map(|t| t.map(tstz)).collect::<Vec<_>>()),
                "c_domain": r.get::<_, Option<i32>>(25),
                "c_domain_arr": r.get::<_, Option<Vec<Option<i32>>>>(26),
            })
        })
        .collect()
}

/// Equality, except that floats may differ in the last bit: serde_json's default float
/// parser is not exactly round-trip (Python prints the shortest repr).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            x == y || (x - y).abs() <= 1e-15 * x.abs().max(y.abs())
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        _ => a == b,
    }
}

fn expected_types() -> Vec<(&'static str, &'static str)> {
    vec![
        ("pk", "int32"),
        ("c_int2", "int16"),
        ("c_int4", "int32"),
        ("c_int8", "int64"),
        ("c_float4", "float"),
        ("c_float8", "double"),
        ("c_numeric", "decimal128(12, 2)"),
        ("c_numeric_free", "string"),
        ("c_text", "string"),
        ("c_varchar", "string"),
        ("c_bool", "bool"),
        ("c_date", "date32[day]"),
        ("c_time", "time64[us]"),
        ("c_ts", "timestamp[us]"),
        ("c_tstz", "timestamp[us, tz=UTC]"),
        ("c_uuid", "extension<arrow.uuid>"),
        ("c_jsonb", "extension<arrow.json>"),
        ("c_json", "extension<arrow.json>"),
        ("c_bytea", "binary"),
        ("c_mood", "string"),
        ("c_int_arr", "list<item: int32>"),
        ("c_text_arr", "list<item: string>"),
        ("c_num_arr", "list<item: decimal128(8, 3)>"),
        ("c_uuid_arr", "list<item: extension<arrow.uuid>>"),
        ("c_tstz_arr", "list<item: timestamp[us, tz=UTC]>"),
        ("c_domain", "int32"),
        ("c_domain_arr", "list<item: int32>"),
    ]
}

async fn check_relation(relation: &str, batch_rows: usize) {
    let db = TestDb::new().await;
    db.batch(TYPES_SQL).await;
    let flight = TestFlight::start(
        &db,
        fraiseql::flight::FlightConfig {
            batch_rows,
            ..config()
        },
    )
    .await;
    let out = get(
        &flight,
        &json!({"type": "view", "view": relation, "order_by": ["pk"]}),
    )
    .await;
    assert!(out.get("error").is_none(), "{out}");
    let types: Vec<(String, String)> = out["schema"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap().to_string(),
                f["type"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = expected_types()
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(types, expected);
    // Only table columns declared NOT NULL are non-nullable.
    let pk = &out["schema"][0];
    assert_eq!(pk["nullable"], json!(relation.starts_with("va_")), "{pk}");
    let expected_rows = rows_via_postgres(&db).await;
    let got = out["rows"].as_array().unwrap();
    assert_eq!(got.len(), expected_rows.len());
    for (g, e) in got.iter().zip(&expected_rows) {
        for (k, v) in e.as_object().unwrap() {
            assert!(
                same(&g[k], v),
                "{relation} row pk={} column {k}: flight {} != postgres {v}",
                e["pk"],
                g[k]
            );
        }
    }
    assert_eq!(
        out["batches"].as_u64().unwrap(),
        expected_rows.len().div_ceil(batch_rows) as u64
    );
    flight.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_from_a_view_matches_postgres() {
    check_relation("va_types", 65_536).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_from_a_table_in_small_batches_matches_postgres() {
    check_relation("ta_types", 3).await;
}
