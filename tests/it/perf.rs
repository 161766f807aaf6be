//! Measurements, not assertions of speed (run with `--release --run-ignored only`): the
//! engine's own cost per request (parse, validate, plan, SQL text) and end-to-end latency
//! compared with running the generated statement directly on the same pool; DoPut throughput.

use crate::common;

use std::time::Instant;

use common::*;
use fraiseql::graphql::Request;
use serde_json::json;
use tokio_postgres::types::ToSql;

const LIST: &str = "{ users(limit: 20, orderBy: [{identifier: ASC}]) { id name email posts { id title comments { body } } } }";
const ONE: &str = "query($id: UUID!) { user(id: $id) { id name role posts { title } } }";

#[tokio::test]
#[ignore = "measurement; run with --release --run-ignored only"]
async fn engine_overhead() {
    let db = TestDb::new().await;
    let seed = db.load_blog().await;
    let engine = blog_engine();
    let pool = db.pool();
    let n = 3000;

    for (name, q, vars) in [
        ("list of 20 users with posts and comments", LIST, json!({})),
        ("one user by id", ONE, json!({"id": seed.users[7].id})),
    ] {
        let req = Request {
            query: q.into(),
            operation_name: None,
            variables: Some(vars.clone()),
        };
        // Planning only.
        for _ in 0..200 {
            engine.explain(&req).unwrap();
        }
        let t = Instant::now();
        for _ in 0..n {
            std::hint::black_box(engine.explain(&req).unwrap());
        }
        let plan_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;

        // The same statement run directly (prepared, one connection).
        let stmts = engine.explain(&req).unwrap();
        let (_, stmt) = &stmts[0];
        let client = pool.get().await.unwrap();
        let prepared = client.prepare_cached(&stmt.sql).await.unwrap();
        let params: Vec<&(dyn ToSql + Sync)> = stmt.params.iter().map(|p| p.as_sql()).collect();
        for _ in 0..200 {
            client.query_opt(&prepared, &params).await.unwrap();
        }
        let t = Instant::now();
        let mut bytes = 0;
        for _ in 0..n {
            let row = client.query_opt(&prepared, &params).await.unwrap().unwrap();
            bytes = row.get::<_, String>(0).len();
        }
        let sql_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
        drop(client);

        // End to end through the HTTP handler.
        for _ in 0..200 {
            gql(&engine, pool, q, vars.clone()).await;
        }
        let body = json!({"query": q, "variables": vars}).to_string();
        let t = Instant::now();
        for _ in 0..n {
            let req = http::Request::builder()
                .method("POST")
                .uri("/graphql")
                .header("content-type", "application/json")
                .body(bytes::Bytes::from(body.clone()))
                .unwrap();
            let r = send(&engine, pool, req).await;
            assert_eq!(r.status, 200);
        }
        let e2e_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
        println!(
            "{name}: response {bytes} B | plan (parse+validate+look-ahead+SQL) {plan_us:.1} µs | statement alone {sql_us:.0} µs | end to end {e2e_us:.0} µs | engine overhead {:.0} µs ({:.1}%)",
            e2e_us - sql_us,
            (e2e_us - sql_us) / e2e_us * 100.0
        );
        println!("SQL: {}", stmt.sql);
    }
}

/// DoPut throughput: 200,000 rows of twelve column types in 20 batches, appended through
/// `flight::put::put` (decoding, conversion, binary COPY, commit) without the gRPC transport.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run with --release --run-ignored only"]
async fn do_put_throughput() {
    use std::sync::Arc;

    use arrow_array::builder::{ListBuilder, StringBuilder};
    use arrow_array::{
        ArrayRef, BooleanArray, Date32Array, Decimal128Array, FixedSizeBinaryArray, Float64Array,
        Int32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
    };
    use arrow_flight::FlightDescriptor;
    use arrow_flight::encode::FlightDataEncoderBuilder;
    use futures_util::{StreamExt, TryStreamExt};

    let db = TestDb::empty().await;
    db.batch(
        "CREATE TABLE ta_bulk (id bigint GENERATED ALWAYS AS IDENTITY, n int4, big int8,
            value float8, reading numeric(12,3), label text, at timestamptz, day date, uid uuid,
            ok bool, payload jsonb, tags text[])",
    )
    .await;
    let registry = fraiseql::flight::Registry::default();
    registry.refresh(db.pool()).await.unwrap();
    let (batches, rows_per_batch) = (20usize, 10_000usize);
    let batch = |b: usize| {
        let base = (b * rows_per_batch) as i64;
        let ids = || (0..rows_per_batch as i64).map(move |i| base + i);
        let mut tags = ListBuilder::new(StringBuilder::new());
        for i in ids() {
            tags.values().append_value(format!("t{}", i % 13));
            tags.values().append_value("x");
            tags.append(i % 5 != 0);
        }
        let columns: Vec<(&str, ArrayRef)> = vec![
            (
                "n",
                Arc::new(Int32Array::from_iter(
                    ids().map(|i| (i % 7 != 0).then_some(i as i32)),
                )),
            ),
            (
                "big",
                Arc::new(Int64Array::from_iter_values(ids().map(|i| i * 1_000_003))),
            ),
            (
                "value",
                Arc::new(Float64Array::from_iter_values(
                    ids().map(|i| i as f64 / 3.0),
                )),
            ),
            (
                "reading",
                Arc::new(
                    Decimal128Array::from_iter_values(ids().map(|i| i as i128 * 1_001 - 5_000))
                        .with_precision_and_scale(12, 3)
                        .unwrap(),
                ),
            ),
            (
                "label",
                Arc::new(StringArray::from_iter_values(
                    ids().map(|i| format!("label {i}")),
                )),
            ),
            (
                "at",
                Arc::new(
                    TimestampMicrosecondArray::from_iter_values(
                        ids().map(|i| 1_700_000_000_000_000 + i * 1_000_000),
                    )
                    .with_timezone("UTC"),
                ),
            ),
            (
                "day",
                Arc::new(Date32Array::from_iter_values(
                    ids().map(|i| 19_000 + (i % 1000) as i32),
                )),
            ),
            (
                "uid",
                Arc::new(
                    FixedSizeBinaryArray::try_from_iter(
                        ids().map(|i| uuid::Uuid::from_u128(i as u128).into_bytes()),
                    )
                    .unwrap(),
                ),
            ),
            (
                "ok",
                Arc::new(BooleanArray::from_iter(ids().map(|i| Some(i % 2 == 0)))),
            ),
            (
                "payload",
                Arc::new(StringArray::from_iter_values(
                    ids().map(|i| format!("{{\"i\": {i}, \"k\": [1, 2]}}")),
                )),
            ),
            ("tags", Arc::new(tags.finish())),
        ];
        RecordBatch::try_from_iter(columns).unwrap()
    };
    let total = (batches * rows_per_batch) as u64;
    let input: Vec<RecordBatch> = (0..batches).map(batch).collect();
    let mut best = f64::MAX;
    for run in 1..=3 {
        db.batch("TRUNCATE ta_bulk").await;
        let data: Vec<_> = FlightDataEncoderBuilder::new()
            .build(futures_util::stream::iter(
                input.clone().into_iter().map(Ok),
            ))
            .try_collect()
            .await
            .unwrap();
        let stream = futures_util::stream::iter(data).map(Ok);
        let t = Instant::now();
        let rows = fraiseql::flight::put::put(
            Some(FlightDescriptor::new_path(vec!["ta_bulk".into()])),
            stream,
            &registry,
            &["ta_bulk".into()],
            db.pool(),
            &fraiseql::db::RequestContext::anonymous(),
        )
        .await
        .unwrap();
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(rows, total);
        best = best.min(secs);
        println!(
            "DoPut run {run}: {total} rows in {secs:.3} s ({:.0} rows/s)",
            total as f64 / secs
        );
    }
    println!(
        "DoPut best of 3: {:.3} s ({:.0} rows/s)",
        best,
        total as f64 / best
    );
    let client = db.client().await;
    let check = client
        .query_one(
            "SELECT count(*), count(n), sum(reading)::text, count(tags) FROM ta_bulk",
            &[],
        )
        .await
        .unwrap();
    println!(
        "check: count {} n {} sum(reading) {} tags {}",
        check.get::<_, i64>(0),
        check.get::<_, i64>(1),
        check.get::<_, String>(2),
        check.get::<_, i64>(3)
    );
}
