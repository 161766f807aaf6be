//! Webhook delivery end to end: change committed → reader → queue → webhook → local receiver
//! checking the body, the headers and the HMAC signature.

use crate::common;

use std::time::Duration;

use common::TestDb;
use common::observers::*;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

const SECRET: &str = "s3cr3t-for-tests";

fn config(url: &str) -> String {
    format!(
        r#"
[[observers]]
name = "notify-new-post"
entity = "Post"
events = ["INSERT", "UPDATE"]
condition = "after.published == true && changed(published)"
retry = {{ max_attempts = 3, backoff = "fixed", initial_delay_ms = 50, max_delay_ms = 50, jitter = false }}
[[observers.actions]]
type = "webhook"
url = "{url}"
secret_env = "HOOK_SECRET"
headers = {{ "X-Team" = "blog" }}
headers_env = {{ "Authorization" = "HOOK_TOKEN" }}

[[observers]]
name = "templated"
entity = "Post"
events = ["DELETE"]
[[observers.actions]]
type = "webhook"
method = "PUT"
url = "{url}/deleted"
body = '{{"deleted": {{{{ before.title | tojson }}}}, "by": "{{{{ event.actor }}}}", "key": "{{{{ idempotency_key }}}}"}}'
"#
    )
}

fn verify(req: &Request) {
    let ts = req
        .header("x-fraiseql-timestamp")
        .expect("timestamp header");
    let sig = req
        .header("x-fraiseql-signature")
        .expect("signature header");
    let ts_num: i64 = ts.parse().unwrap();
    assert!(
        (chrono::Utc::now().timestamp() - ts_num).abs() < 60,
        "fresh timestamp"
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{ts}.{}", req.body).as_bytes());
    let want = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(sig, want, "HMAC-SHA256 over timestamp.body");
}

#[tokio::test]
async fn webhook_receives_signed_event_for_matching_changes_only() {
    let db = TestDb::new().await;
    db.create_posts().await;
    let rx = HttpReceiver::start_ok().await;
    let running = start(
        &db,
        &config(&rx.url("/hook")),
        &[("HOOK_SECRET", SECRET), ("HOOK_TOKEN", "Bearer abc")],
    );

    // Not published: the condition is false, nothing is sent.
    let id = db.insert_post("Draft", false).await;
    // Published on insert: sent.
    let id2 = db.insert_post("Launch", true).await;
    let c = db.client().await;
    // Publishing the draft: changed(published) && published → sent.
    c.execute("UPDATE tb_post SET published = true WHERE id = $1", &[&id])
        .await
        .unwrap();
    // Changing only the views of a published post: not sent.
    c.execute("UPDATE tb_post SET views = 5 WHERE id = $1", &[&id2])
        .await
        .unwrap();
    c.execute("DELETE FROM tb_post WHERE id = $1", &[&id2])
        .await
        .unwrap();

    let got = rx.wait_for(3, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got_all = rx.requests();
    assert_eq!(
        got_all.len(),
        3,
        "only matching changes are delivered: {got:#?}"
    );
    let pks = db.change_pks().await;
    assert_eq!(pks.len(), 5);

    let mut hooks: Vec<_> = got_all
        .iter()
        .filter(|r| r.path == "/hook")
        .cloned()
        .collect();
    hooks.sort_by_key(|r| r.json()["event"]["pk"].as_i64());
    assert_eq!(hooks.len(), 2);
    for r in &hooks {
        assert_eq!(r.method, "POST");
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("x-team"), Some("blog"));
        assert_eq!(r.header("authorization"), Some("Bearer abc"));
        verify(r);
    }
    let insert = hooks[0].json();
    assert_eq!(insert["event"]["op"], "INSERT");
    assert_eq!(insert["event"]["entity"], "Post");
    assert_eq!(insert["event"]["entity_id"], id2.to_string());
    assert_eq!(insert["event"]["actor"], "postgres");
    assert!(
        insert["event"]["occurred_at"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    assert_eq!(insert["before"], serde_json::Value::Null);
    assert_eq!(insert["after"]["title"], "Launch");
    let pk = insert["event"]["pk"].as_i64().unwrap();
    assert_eq!(
        hooks[0].header("idempotency-key").unwrap(),
        format!("{pk}:notify-new-post:0")
    );

    let update = hooks[1].json();
    assert_eq!(update["event"]["op"], "UPDATE");
    assert_eq!(update["before"]["published"], false);
    assert_eq!(update["after"]["published"], true);
    assert_eq!(
        update["event"]["changed_fields"],
        serde_json::json!(["published"])
    );

    let deleted = got_all
        .iter()
        .find(|r| r.path == "/hook/deleted")
        .expect("delete hook");
    assert_eq!(deleted.method, "PUT");
    assert!(
        deleted.header("x-fraiseql-signature").is_none(),
        "no secret, no signature"
    );
    let body = deleted.json();
    assert_eq!(body["deleted"], "Launch");
    assert_eq!(body["by"], "postgres");
    let del_pk = pks[4];
    assert_eq!(body["key"], format!("{del_pk}:templated:0"));

    // Metrics
    eventually(Duration::from_secs(5), "checkpoint at the last change", || async {
        let c = db.client().await;
        let row = c
            .query_one("SELECT last_pk FROM fraiseql.tb_observer_checkpoint WHERE consumer = 'default'", &[])
            .await
            .unwrap();
        row.get::<_, i64>(0) == del_pk
    })
    .await;
    assert_eq!(
        metric(
            &running.registry,
            "fraiseql_observer_events_processed_total",
            None
        ),
        5.0
    );
    assert_eq!(
        metric(
            &running.registry,
            "fraiseql_job_executed_total",
            Some(("action", "webhook"))
        ),
        3.0
    );
    assert_eq!(
        metric(
            &running.registry,
            "fraiseql_job_duration_seconds",
            Some(("action", "webhook"))
        ),
        3.0
    );
    running.stop().await;
    assert_eq!(db.dead_letter_count().await, 0);
}

#[tokio::test]
async fn config_errors_are_reported_at_start_with_observer_and_key() {
    let db = TestDb::new().await;
    let err = build(
        &db,
        r#"
[[observers]]
name = "broken"
entity = "Pots"
condition = "after.published == true &&"
[[observers.actions]]
type = "webhook"
url = "ftp://example"
secret_env = "NOT_SET_ANYWHERE"
body = "{{ after.title "
[[observers.actions]]
type = "email"
host = "127.0.0.1"
from = "not an address"
to = "x@example.com"
subject = "s"
body = "b"
[[observers.actions]]
type = "search"
url = "http://127.0.0.1:9200"
index = "Posts"
"#,
        &[],
    )
    .err()
    .expect("invalid config must not build");
    for want in [
        "observer \"broken\": entity: unknown entity `Pots`; known entities: Post, User",
        "observer \"broken\": condition: column 27: expected a path or a literal, found end of condition",
        "observer \"broken\": actions[0] (webhook).url: expected an http:// or https:// URL with a host, found `ftp://example`",
        "observer \"broken\": actions[1] (email).from: `not an address` is not an e-mail address",
        "observer \"broken\": actions[2] (search).index: `Posts` is not a valid index name",
    ] {
        assert!(err.contains(want), "missing `{want}` in:\n{err}");
    }
    // Fix the URL: the next problems (secret, template) surface.
    let err = build(
        &db,
        r#"
[[observers]]
name = "broken"
entity = "Post"
[[observers.actions]]
type = "webhook"
url = "http://127.0.0.1:1/x"
secret_env = "NOT_SET_ANYWHERE"
[[observers.actions]]
type = "slack"
url = "http://127.0.0.1:1/x"
text = "{{ after.title "
"#,
        &[],
    )
    .err()
    .unwrap();
    assert!(
        err.contains("actions[0] (webhook).secret_env: environment variable `NOT_SET_ANYWHERE` is not set or empty"),
        "{err}"
    );
    assert!(
        err.contains("actions[1] (slack).text: template does not compile"),
        "{err}"
    );
}

#[tokio::test]
async fn webhook_over_https_with_a_private_ca() {
    use tokio::io::AsyncBufReadExt;
    let (dir, ca, cert, key) = make_certs();
    let out = dir.join("requests.jsonl");
    let mut child = tokio::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/https_sink.py"
        ))
        .args([&cert, &key, &out.to_string_lossy().into_owned()])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let port: u16 = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
        .parse()
        .unwrap();
    let db = TestDb::new().await;
    db.create_posts().await;
    let cfg = |ca_line: &str| {
        format!(
            r#"
[[observers]]
name = "tls-hook"
entity = "Post"
retry = {{ max_attempts = 1 }}
[[observers.actions]]
type = "webhook"
url = "https://127.0.0.1:{port}/secure"
secret_env = "HOOK_SECRET"
{ca_line}
"#
        )
    };
    let running = start(
        &db,
        &cfg(&format!("ca_file = \"{ca}\"")),
        &[("HOOK_SECRET", SECRET)],
    );
    db.insert_post("over tls", true).await;
    let mut content = String::new();
    for _ in 0..200 {
        content = std::fs::read_to_string(&out).unwrap_or_default();
        if !content.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let req: serde_json::Value =
        serde_json::from_str(content.lines().next().expect("one request")).unwrap();
    assert_eq!(req["path"], "/secure");
    let body: serde_json::Value = serde_json::from_str(req["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["after"]["title"], "over tls");
    assert!(
        req["headers"]["x-fraiseql-signature"]
            .as_str()
            .unwrap()
            .starts_with("sha256=")
    );
    running.stop().await;

    // Without the private CA the certificate is not trusted: dead letter, nothing received.
    let db2 = TestDb::new().await;
    db2.create_posts().await;
    let running = start(&db2, &cfg(""), &[("HOOK_SECRET", SECRET)]);
    db2.insert_post("untrusted", true).await;
    eventually(Duration::from_secs(10), "dead letter", || async {
        db2.dead_letter_count().await == 1
    })
    .await;
    assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 1);
    running.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// A database that is reached over TLS: the observer reader's own session (LISTEN and the
/// advisory lock, outside the pool) is encrypted and verified like the pool's connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reader_session_uses_tls_when_the_database_url_asks_for_it() {
    let snakeoil = "/etc/ssl/certs/ssl-cert-snakeoil.pem";
    let db = TestDb::new().await;
    db.create_posts().await;
    let rx = HttpReceiver::start_ok().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fraiseql.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[database]
url = "postgres://postgres@localhost:5432/{db}?sslmode=verify-full"
tls_ca_file = "{snakeoil}"
[observer_runtime]
start_from = "beginning"
poll_interval_ms = 200
[[observers]]
name = "hook"
entity = "Post"
[[observers.actions]]
type = "webhook"
url = "{url}"
"#,
            db = db.name(),
            url = rx.url("/hook")
        ),
    )
    .unwrap();
    let serve = common::ServeProcess::start_role(
        &["--config", path.to_str().unwrap(), "serve"],
        // The file's URL is the one used: the harness's variable would override it.
        &format!(
            "postgres://postgres@localhost:5432/{}?sslmode=verify-full",
            db.name()
        ),
        &[],
    )
    .await;
    db.insert_post("over tls", true).await;
    rx.wait_for(1, Duration::from_secs(10)).await;
    let ssl: Vec<bool> = db
        .client()
        .await
        .query(
            "SELECT s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
              WHERE a.application_name = 'fraiseql-observer-reader' AND a.datname = $1",
            &[&db.name()],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    drop(serve);
    assert_eq!(ssl, vec![true], "one reader session, encrypted");
}
