//! The `flight` role and `serve --with-flight` as users run them: the real binary, the token
//! from the environment, a va_ view and a GraphQL ticket read with pyarrow, /metrics on the
//! HTTP side.

use crate::common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::flight::py;
use common::{TestDb, bin, free_port, get};
use serde_json::json;

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the binary; the Flight address comes from the environment ([flight] listen).
fn start(db: &TestDb, args: &[&str], http_port: u16, flight_port: u16) -> Killed {
    start_with(db, args, http_port, flight_port, &[])
}

fn start_with(
    db: &TestDb,
    args: &[&str],
    http_port: u16,
    flight_port: u16,
    env: &[(&str, &str)],
) -> Killed {
    let mut cmd: Command = bin();
    cmd.envs(env.iter().copied());
    cmd.args(args)
        .env("FRAISEQL_DATABASE_URL", db.url())
        .env("FRAISEQL_SERVER_LISTEN", format!("127.0.0.1:{http_port}"))
        .env("FRAISEQL_FLIGHT_LISTEN", format!("127.0.0.1:{flight_port}"))
        .env("FRAISEQL_FLIGHT_TOKENS", r#"["role-token"]"#)
        .env("FRAISEQL_LOG", "warn")
        .stdout(Stdio::null());
    Killed(cmd.spawn().unwrap())
}

async fn wait_view(port: &str) -> serde_json::Value {
    let ticket = json!({"type": "view", "view": "va_item", "order_by": [{"column": "n", "direction": "asc"}]}).to_string();
    let mut last = json!(null);
    for _ in 0..100 {
        last = py(&[
            "--port",
            port,
            "--token",
            "role-token",
            "get",
            "--ticket",
            &ticket,
        ])
        .await;
        match last["error"]["class"].as_str() {
            None => return last,
            // Not listening yet.
            Some("FlightUnavailableError") => {}
            Some(_) => panic!("{last}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("flight never answered: {last}");
}

#[tokio::test]
async fn flight_role_and_serve_with_flight_stream_a_view() {
    let db = TestDb::new().await;
    db.batch(
        "CREATE TABLE tb_item (n int PRIMARY KEY, label text);
         INSERT INTO tb_item SELECT g, 'item ' || g FROM generate_series(1, 5) g;
         CREATE VIEW va_item AS SELECT n, label FROM tb_item;",
    )
    .await;

    for args in [vec!["flight"], vec!["serve", "--with-flight"]] {
        let (flight_port, http_port) = (free_port(), free_port());
        let child = start(&db, &args, http_port, flight_port);
        let out = wait_view(&flight_port.to_string()).await;
        let text = out.to_string();
        for n in 1..=5 {
            assert!(text.contains(&format!("item {n}")), "{args:?}: {out}");
        }
        let (status, metrics) = get(&format!("http://127.0.0.1:{http_port}/metrics")).await;
        assert_eq!(status, 200);
        assert!(
            metrics.contains("fraiseql_flight_streams_finished_total{ticket=\"view\"}"),
            "{args:?}: {metrics}"
        );
        drop(child);
    }
}

/// With `graphql.schema` set (or `flight --schema`), both roles answer GraphQL tickets
/// through the engine; the `flight` role still serves no /graphql.
#[tokio::test]
async fn both_roles_answer_graphql_tickets_when_a_schema_is_configured() {
    let db = TestDb::new().await;
    db.load_blog().await;
    db.batch(
        "CREATE VIEW va_item AS SELECT n, 'item ' || n AS label FROM generate_series(1, 5) n;",
    )
    .await;
    let schema = common::crate_path("examples/blog/schema.json");
    let schema = schema.to_str().unwrap();
    let ticket = json!({"type": "graphql",
                        "query": "{ users(limit: 3, orderBy: [{identifier: ASC}]) { who: identifier } }"})
    .to_string();
    let by_env = [("FRAISEQL_GRAPHQL_SCHEMA", schema)];
    for (args, env, graphql_status) in [
        (vec!["flight"], &by_env[..], 404),
        (vec!["flight", "--schema", schema], &[][..], 404),
        (vec!["serve", "--with-flight"], &by_env[..], 200),
    ] {
        let (flight_port, http_port) = (free_port(), free_port());
        let child = start_with(&db, &args, http_port, flight_port, env);
        let port = flight_port.to_string();
        wait_view(&port).await;
        let out = py(&[
            "--port",
            &port,
            "--token",
            "role-token",
            "get",
            "--ticket",
            &ticket,
        ])
        .await;
        assert_eq!(
            out["rows"],
            json!([{"who": "user-01"}, {"who": "user-02"}, {"who": "user-03"}]),
            "{args:?}: {out}"
        );
        let (status, _) = get(&format!(
            "http://127.0.0.1:{http_port}/graphql?query=%7B__typename%7D"
        ))
        .await;
        assert_eq!(status, graphql_status, "{args:?}: /graphql");
        drop(child);
    }
}

#[test]
fn flight_without_a_token_refuses_to_start() {
    let o = bin()
        .args(["flight", "--listen", "127.0.0.1:0"])
        .env(
            "FRAISEQL_SERVER_LISTEN",
            format!("127.0.0.1:{}", free_port()),
        )
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("token"), "{stderr}");
}
