//! `fraiseql dlq` against a running `fraiseql serve`: a receiver answering 400 dead-letters
//! the job; `dlq list/show` report it with its error; `dlq retry ID` delivers it once the
//! receiver is fixed; `dlq purge` empties the store.

use crate::common;

use std::time::Duration;

use common::observers::{HttpReceiver, Reply};
use common::{ServeProcess, TestDb, bin};
use serde_json::Value;

fn dlq(db: &TestDb, args: &[&str]) -> (i32, String, String) {
    let o = bin()
        .arg("dlq")
        .args(args)
        .env("FRAISEQL_DATABASE_URL", db.url())
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[tokio::test]
async fn dead_letter_list_show_retry_purge_through_the_cli() {
    let db = TestDb::new().await;
    db.create_posts().await;
    let rx = HttpReceiver::with(|_| Reply {
        status: 400,
        headers: vec![],
        body: r#"{"error":"bad field"}"#.into(),
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("fraiseql.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[observer_runtime]
poll_interval_ms = 100

[[observers]]
name = "hook"
entity = "Post"
events = ["INSERT"]
retry = {{ max_attempts = 3, backoff = "fixed", initial_delay_ms = 50, max_delay_ms = 50, jitter = false }}

[[observers.actions]]
type = "webhook"
url = "{}"
"#,
            rx.url("/hook")
        ),
    )
    .unwrap();
    let _serve =
        ServeProcess::start(&db.url(), &[("FRAISEQL_CONFIG", config.to_str().unwrap())]).await;
    // The reader starts from "now": wait until it holds the reader lock before writing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    db.insert_post("rejected", true).await;

    let listed = common::eventually(Duration::from_secs(10), || async {
        let (_, out, _) = dlq(&db, &["list", "--json"]);
        serde_json::from_str::<Value>(&out)
            .map(|v| v.as_array().map(|a| a.len()) == Some(1))
            .unwrap_or(false)
    })
    .await;
    assert!(listed, "one dead letter listed");
    let (code, out, _) = dlq(&db, &["list", "--json"]);
    assert_eq!(code, 0);
    let items: Value = serde_json::from_str(&out).unwrap();
    let id = items[0]["id"].as_i64().unwrap();
    let pk: i64 = db.change_pks().await[0];
    assert_eq!(items[0]["idempotency_key"], format!("{pk}:hook:0"));

    let (code, table, _) = dlq(&db, &["list"]);
    assert_eq!(code, 0);
    assert!(
        table.contains("HTTP 400") && table.contains("webhook"),
        "{table}"
    );
    let (code, shown, _) = dlq(&db, &["show", &id.to_string()]);
    assert_eq!(code, 0);
    let shown: Value = serde_json::from_str(&shown).unwrap();
    assert!(
        shown["errors"][0]["error"]
            .as_str()
            .unwrap()
            .contains("bad field"),
        "{shown}"
    );

    let (code, _, err) = dlq(&db, &["retry", "999999"]);
    assert_eq!(code, 1);
    assert!(err.contains("no dead letter 999999"), "{err}");

    // Fix the receiver, retry through the CLI: delivered once more with the same key.
    rx.set_responder(|_| Reply::status(200));
    let (code, out, _) = dlq(&db, &["retry", &id.to_string()]);
    assert_eq!(code, 0, "{out}");
    let got = rx.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(
        got[1].header("idempotency-key"),
        got[0].header("idempotency-key")
    );
    let emptied = common::eventually(Duration::from_secs(10), || async {
        dlq(&db, &["list", "--json"]).1.trim() == "[]"
    })
    .await;
    assert!(emptied, "the retried dead letter is resolved");
    let (code, out, _) = dlq(&db, &["purge", "--older-than", "7d"]);
    assert_eq!((code, out.trim()), (0, "0 dead letters purged"));
    let (code, _, err) = dlq(&db, &["purge", "--older-than", "soon"]);
    assert_eq!(code, 1);
    assert!(err.contains("--older-than"), "{err}");
}
