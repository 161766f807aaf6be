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

/// DoPut of `batches` through `flight::put::put` itself, for Arrow types the pyarrow tool
/// does not build.
async fn put_direct(
    db: &TestDb,
    table: &str,
    batches: Vec<arrow_array::RecordBatch>,
) -> Result<u64, fraiseql::flight::put::PutError> {
    use arrow_flight::FlightDescriptor;
    use arrow_flight::encode::FlightDataEncoderBuilder;
    use futures_util::{StreamExt, TryStreamExt};

    let registry = fraiseql::flight::Registry::default();
    registry.refresh(db.pool()).await.unwrap();
    let data: Vec<_> = FlightDataEncoderBuilder::new()
        .build(futures_util::stream::iter(batches.into_iter().map(Ok)))
        .try_collect()
        .await
        .unwrap();
    fraiseql::flight::put::put(
        Some(FlightDescriptor::new_path(vec![table.into()])),
        futures_util::stream::iter(data).map(Ok),
        &registry,
        &[table.into()],
        db.pool(),
        &fraiseql::db::RequestContext::anonymous(),
    )
    .await
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_that_cannot_be_written_names_column_and_row_and_writes_nothing() {
    use std::sync::Arc;

    use arrow_array::{RecordBatch, StringArray, TimestampSecondArray};

    let db = TestDb::new().await;
    db.batch(TABLE_SQL).await;
    let ok = RecordBatch::try_from_iter_with_nullable([
        (
            "sensor",
            Arc::new(StringArray::from(vec!["a", "b"])) as arrow_array::ArrayRef,
            false,
        ),
        (
            "at",
            Arc::new(TimestampSecondArray::from(vec![Some(0), None]).with_timezone("UTC")),
            true,
        ),
    ])
    .unwrap();
    // Seconds that overflow microseconds, in the second row of the second batch.
    let bad = RecordBatch::try_from_iter_with_nullable([
        (
            "sensor",
            Arc::new(StringArray::from(vec!["c", "d"])) as arrow_array::ArrayRef,
            false,
        ),
        (
            "at",
            Arc::new(TimestampSecondArray::from(vec![1, i64::MAX]).with_timezone("UTC")),
            true,
        ),
    ])
    .unwrap();
    let err = put_direct(&db, "ta_readings", vec![ok, bad])
        .await
        .unwrap_err();
    assert!(
        matches!(err, fraiseql::flight::put::PutError::Value(_)),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "value not writable: column at row 1: timestamp out of range"
    );
    assert_eq!(count(&db, "ta_readings").await, 0);
}

/// Every Arrow type DoPut accepts, for every column type it can be written to, NULLs and
/// edge values included, read back as PostgreSQL's text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_accepted_arrow_type_round_trips() {
    use std::sync::Arc;

    use arrow_array::*;
    use arrow_buffer::{NullBuffer, OffsetBuffer};
    use arrow_schema::Field;

    let db = TestDb::new().await;
    db.batch(
        "CREATE DOMAIN posint AS int4 CHECK (VALUE > 0);
         CREATE TABLE ta_all (
            pk int4, i2_i8 int2, i2_i16 int2, i2_u8 int2, i4_i32 int4, i4_u16 int4,
            i8_i64 int8, i8_u32 int8, f4 float4, f8_f32 float8, f8 float8,
            num numeric(12,3), num_free numeric, num_int numeric(20,0), num_neg numeric(12,0),
            t text, vc varchar(20), bp char(3), nm name, t_large text,
            j json, jb jsonb, b bool, d date, tm time, ts_ms timestamp, ts_s timestamp,
            tstz_ns timestamptz, tstz_us timestamptz, u uuid, by bytea, by_large bytea,
            dom posint, ia int4[], ta_large text[], na numeric(8,3)[], ua uuid[],
            tsa timestamptz[], jba jsonb[], da posint[]);",
    )
    .await;
    // Three rows of a list column (LargeList when `large`): `lengths` elements each from
    // `values`; the second row is NULL.
    let lists = |values: ArrayRef, lengths: [usize; 3], large: bool| -> ArrayRef {
        let item = Arc::new(Field::new("item", values.data_type().clone(), true));
        let nulls = Some(NullBuffer::from(vec![true, false, true]));
        if large {
            Arc::new(LargeListArray::new(
                item,
                OffsetBuffer::from_lengths(lengths),
                values,
                nulls,
            ))
        } else {
            Arc::new(ListArray::new(
                item,
                OffsetBuffer::from_lengths(lengths),
                values,
                nulls,
            ))
        }
    };
    let list = |values, lengths| lists(values, lengths, false);
    let uuid = |b: u8| Some([b; 16]);
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("pk", Arc::new(Int32Array::from(vec![1, 2, 3]))),
        (
            "i2_i8",
            Arc::new(Int8Array::from(vec![Some(-8), None, Some(i8::MIN)])),
        ),
        (
            "i2_i16",
            Arc::new(Int16Array::from(vec![Some(i16::MAX), None, Some(i16::MIN)])),
        ),
        (
            "i2_u8",
            Arc::new(UInt8Array::from(vec![Some(u8::MAX), None, Some(0)])),
        ),
        (
            "i4_i32",
            Arc::new(Int32Array::from(vec![Some(i32::MAX), None, Some(i32::MIN)])),
        ),
        (
            "i4_u16",
            Arc::new(UInt16Array::from(vec![Some(u16::MAX), None, Some(0)])),
        ),
        (
            "i8_i64",
            Arc::new(Int64Array::from(vec![Some(i64::MAX), None, Some(i64::MIN)])),
        ),
        (
            "i8_u32",
            Arc::new(UInt32Array::from(vec![Some(u32::MAX), None, Some(0)])),
        ),
        (
            "f4",
            Arc::new(Float32Array::from(vec![Some(1.25), None, Some(-3.4e38)])),
        ),
        (
            "f8_f32",
            Arc::new(Float32Array::from(vec![Some(0.5), None, Some(-0.25)])),
        ),
        (
            "f8",
            Arc::new(Float64Array::from(vec![Some(1e300), None, Some(-0.001)])),
        ),
        (
            "num",
            Arc::new(
                Decimal128Array::from(vec![Some(12_345), None, Some(-999_999_999_999)])
                    .with_precision_and_scale(12, 3)
                    .unwrap(),
            ),
        ),
        (
            "num_free",
            Arc::new(
                Decimal128Array::from(vec![
                    Some(99_999_999_999_999_999_999_999_999_999_999_999_999),
                    None,
                    Some(1),
                ])
                .with_precision_and_scale(38, 10)
                .unwrap(),
            ),
        ),
        (
            "num_int",
            Arc::new(Int64Array::from(vec![Some(i64::MIN), None, Some(0)])),
        ),
        (
            "num_neg",
            Arc::new(
                Decimal128Array::from(vec![Some(-12), None, Some(7)])
                    .with_precision_and_scale(5, -3)
                    .unwrap(),
            ),
        ),
        (
            "t",
            Arc::new(StringArray::from(vec![Some("hello"), None, Some("")])),
        ),
        (
            "vc",
            Arc::new(StringArray::from(vec![Some("ünïcødé 🚀"), None, Some("x")])),
        ),
        (
            "bp",
            Arc::new(StringArray::from(vec![Some("abc"), None, Some("xyz")])),
        ),
        (
            "nm",
            Arc::new(StringArray::from(vec![Some("a_name"), None, Some("n")])),
        ),
        (
            "t_large",
            Arc::new(LargeStringArray::from(vec![
                Some("tab\tand \"quotes\""),
                None,
                Some("l"),
            ])),
        ),
        (
            "j",
            Arc::new(StringArray::from(vec![
                Some("{\"a\":  1}"),
                None,
                Some("[]"),
            ])),
        ),
        (
            "jb",
            Arc::new(StringArray::from(vec![
                Some("{\"a\":1}"),
                None,
                Some("null"),
            ])),
        ),
        (
            "b",
            Arc::new(BooleanArray::from(vec![Some(true), None, Some(false)])),
        ),
        (
            "d",
            Arc::new(Date32Array::from(vec![Some(0), None, Some(-719_162)])),
        ),
        (
            "tm",
            Arc::new(Time64MicrosecondArray::from(vec![
                Some(45_296_123_456),
                None,
                Some(86_399_999_999),
            ])),
        ),
        (
            "ts_ms",
            Arc::new(TimestampMillisecondArray::from(vec![
                Some(1_700_000_000_123),
                None,
                Some(-1),
            ])),
        ),
        (
            "ts_s",
            Arc::new(TimestampSecondArray::from(vec![
                Some(0),
                None,
                Some(-62_135_596_800),
            ])),
        ),
        (
            "tstz_ns",
            Arc::new(
                TimestampNanosecondArray::from(vec![
                    Some(1_700_000_000_123_456_789),
                    None,
                    Some(-1),
                ])
                .with_timezone("+02:00"),
            ),
        ),
        (
            "tstz_us",
            Arc::new(
                TimestampMicrosecondArray::from(vec![Some(946_684_800_000_000), None, Some(1)])
                    .with_timezone("UTC"),
            ),
        ),
        (
            "u",
            Arc::new(
                FixedSizeBinaryArray::try_from_sparse_iter_with_size(
                    [uuid(0xab), None, uuid(0)].into_iter(),
                    16,
                )
                .unwrap(),
            ),
        ),
        (
            "by",
            Arc::new(BinaryArray::from(vec![
                Some(&b"\xde\xad"[..]),
                None,
                Some(&b""[..]),
            ])),
        ),
        (
            "by_large",
            Arc::new(LargeBinaryArray::from(vec![
                Some(&b"\x00\xff"[..]),
                None,
                Some(&b"x"[..]),
            ])),
        ),
        (
            "dom",
            Arc::new(Int32Array::from(vec![Some(7), None, Some(i32::MAX)])),
        ),
        (
            "ia",
            list(
                Arc::new(Int32Array::from(vec![Some(1), None, Some(3)])),
                [3, 0, 0],
            ),
        ),
        (
            "ta_large",
            lists(
                Arc::new(StringArray::from(vec![
                    Some("a"),
                    Some("b c"),
                    None,
                    Some(""),
                ])),
                [3, 0, 1],
                true,
            ),
        ),
        (
            "na",
            list(
                Arc::new(
                    Decimal128Array::from(vec![Some(1500), None, Some(-2125)])
                        .with_precision_and_scale(8, 3)
                        .unwrap(),
                ),
                [3, 0, 0],
            ),
        ),
        (
            "ua",
            list(
                Arc::new(
                    FixedSizeBinaryArray::try_from_sparse_iter_with_size(
                        [uuid(0xa0), None].into_iter(),
                        16,
                    )
                    .unwrap(),
                ),
                [1, 0, 1],
            ),
        ),
        (
            "tsa",
            list(
                Arc::new(
                    TimestampMicrosecondArray::from(vec![0, 1_700_000_000_000_001])
                        .with_timezone("UTC"),
                ),
                [2, 0, 0],
            ),
        ),
        (
            "jba",
            list(
                Arc::new(StringArray::from(vec![
                    Some("{\"k\":[1,2]}"),
                    None,
                    Some("\"s\""),
                ])),
                [2, 0, 1],
            ),
        ),
        (
            "da",
            list(Arc::new(Int32Array::from(vec![Some(2), None])), [2, 0, 0]),
        ),
    ];
    let names: Vec<&str> = columns.iter().map(|(n, _)| *n).collect();
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    let rows = put_direct(&db, "ta_all", vec![batch]).await.unwrap();
    assert_eq!(rows, 3);

    let client = db.client().await;
    client.batch_execute("SET TimeZone = 'UTC'").await.unwrap();
    let select: Vec<String> = names.iter().map(|n| format!("{n}::text")).collect();
    let got: Vec<Vec<Option<String>>> = client
        .query(
            &format!("SELECT {} FROM ta_all ORDER BY pk", select.join(", ")),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (0..names.len()).map(|i| r.get(i)).collect())
        .collect();
    // The second row is all NULL but its key.
    let nulls: Vec<Option<&str>> = std::iter::once(Some("2"))
        .chain(std::iter::repeat_n(None, names.len() - 1))
        .collect();
    let [first, third]: [&[Option<&str>]; 2] = [
        &[
            Some("1"),
            Some("-8"),
            Some("32767"),
            Some("255"),
            Some("2147483647"),
            Some("65535"),
            Some("9223372036854775807"),
            Some("4294967295"),
            Some("1.25"),
            Some("0.5"),
            Some("1e+300"),
            Some("12.345"),
            Some("9999999999999999999999999999.9999999999"),
            Some("-9223372036854775808"),
            Some("-12000"),
            Some("hello"),
            Some("ünïcødé 🚀"),
            Some("abc"),
            Some("a_name"),
            Some("tab\tand \"quotes\""),
            Some("{\"a\":  1}"),
            Some("{\"a\": 1}"),
            Some("true"),
            Some("1970-01-01"),
            Some("12:34:56.123456"),
            Some("2023-11-14 22:13:20.123"),
            Some("1970-01-01 00:00:00"),
            Some("2023-11-14 22:13:20.123456+00"),
            Some("2000-01-01 00:00:00+00"),
            Some("abababab-abab-abab-abab-abababababab"),
            Some("\\xdead"),
            Some("\\x00ff"),
            Some("7"),
            Some("{1,NULL,3}"),
            Some("{a,\"b c\",NULL}"),
            Some("{1.500,NULL,-2.125}"),
            Some("{a0a0a0a0-a0a0-a0a0-a0a0-a0a0a0a0a0a0}"),
            Some("{\"1970-01-01 00:00:00+00\",\"2023-11-14 22:13:20.000001+00\"}"),
            Some("{\"{\\\"k\\\": [1, 2]}\",NULL}"),
            Some("{2,NULL}"),
        ],
        &[
            Some("3"),
            Some("-128"),
            Some("-32768"),
            Some("0"),
            Some("-2147483648"),
            Some("0"),
            Some("-9223372036854775808"),
            Some("0"),
            Some("-3.4e+38"),
            Some("-0.25"),
            Some("-0.001"),
            Some("-999999999.999"),
            Some("0.0000000001"),
            Some("0"),
            Some("7000"),
            Some(""),
            Some("x"),
            Some("xyz"),
            Some("n"),
            Some("l"),
            Some("[]"),
            Some("null"),
            Some("false"),
            Some("0001-01-01"),
            Some("23:59:59.999999"),
            Some("1969-12-31 23:59:59.999"),
            Some("0001-01-01 00:00:00"),
            Some("1969-12-31 23:59:59.999999+00"),
            Some("1970-01-01 00:00:00.000001+00"),
            Some("00000000-0000-0000-0000-000000000000"),
            Some("\\x"),
            Some("\\x78"),
            Some("2147483647"),
            Some("{}"),
            Some("{\"\"}"),
            Some("{}"),
            Some("{NULL}"),
            Some("{}"),
            Some("{\"\\\"s\\\"\"}"),
            Some("{}"),
        ],
    ];
    assert_eq!(got.len(), 3);
    for (row, (got, want)) in got.iter().zip([first, &nulls, third]).enumerate() {
        for (i, name) in names.iter().enumerate() {
            assert_eq!(got[i].as_deref(), want[i], "row {row} column {name}");
        }
    }
}
