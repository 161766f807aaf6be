//! Measurements, not assertions of speed (run with `--release --run-ignored only`): the
//! engine's own cost per request (parse, validate, plan, SQL text) and end-to-end latency
//! compared with running the generated statement directly on the same pool.

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
