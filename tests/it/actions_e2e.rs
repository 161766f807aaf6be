//! The other action kinds against real local receivers: Slack-format webhook, SMTP
//! (Python aiosmtpd), an Elasticsearch-style `_bulk` endpoint, cache invalidation over
//! PostgreSQL NOTIFY, and NATS JetStream (the machine's NATS, a stream of the test's own).

use crate::common;

use std::time::Duration;

use common::TestDb;
use common::observers::*;
use futures_util::StreamExt;
use tokio::io::AsyncBufReadExt;

const RUNTIME: &str = r#"
[observer_runtime]
concurrency = 8
poll_interval_ms = 200
checkpoint_interval_ms = 20
start_from = "beginning"
"#;

#[tokio::test]
async fn slack_receives_an_incoming_webhook_message() {
    let db = TestDb::new().await;
    db.create_posts().await;
    let rx = HttpReceiver::with(|_| Reply {
        status: 200,
        headers: vec![],
        body: "ok".into(),
    })
    .await;
    let running = start(
        &db,
        &format!(
            r#"{RUNTIME}
[[observers]]
name = "slack-new-post"
entity = "Post"
events = ["INSERT"]
condition = "after.published == true"
[[observers.actions]]
type = "slack"
url_env = "SLACK_URL"
text = "New post *{{{{ after.title }}}}* ({{{{ event.op | lower }}}}) by {{{{ event.actor }}}}"
"#
        ),
        &[("SLACK_URL", &rx.url("/services/T000/B000/XXXX"))],
    );
    db.insert_post("Hidden", false).await;
    db.insert_post("Hello <world>", true).await;
    let got = rx.wait_for(1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.requests().len(), 1);
    let r = &got[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/services/T000/B000/XXXX");
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(
        r.json(),
        serde_json::json!({"text": "New post *Hello <world>* (insert) by postgres"})
    );
    running.stop().await;
}

struct SmtpSink {
    port: u16,
    out: std::path::PathBuf,
    _child: tokio::process::Child,
}

impl SmtpSink {
    async fn messages(&self, n: usize) -> Vec<serde_json::Value> {
        for _ in 0..200 {
            let content = std::fs::read_to_string(&self.out).unwrap_or_default();
            if content.lines().count() >= n {
                return content
                    .lines()
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("expected {n} e-mails");
    }
}

async fn email_over_tls(mode: &str) {
    email_over_tls_to(mode, "127.0.0.1", "IP:127.0.0.1").await;
}

/// An e-mail over TLS (`mode`) to the sink as `host`, its certificate valid for `san` only.
async fn email_over_tls_to(mode: &str, host: &str, san: &str) {
    let (dir, ca, cert, key) = make_certs_for(san);
    let smtp = start_smtp_with(&[mode, &cert, &key]).await;
    let db = TestDb::new().await;
    db.create_posts().await;
    let running = start(
        &db,
        &format!(
            r#"{RUNTIME}
[[observers]]
name = "mail"
entity = "Post"
[[observers.actions]]
type = "email"
host = "{host}"
port = {port}
tls = "{mode}"
ca_file = "{ca}"
from = "noreply@example.com"
to = "ops@example.com"
subject = "{{{{ event.op }}}} {{{{ after.title }}}}"
body = "over {mode}"
"#,
            port = smtp.port
        ),
        &[],
    );
    db.insert_post("Secure", true).await;
    let m = &smtp.messages(1).await[0];
    assert_eq!(m["tls"], true, "the message travelled over TLS");
    let data = m["data"].as_str().unwrap();
    assert!(data.contains("Subject: INSERT Secure"), "{data}");
    assert!(data.contains(&format!("over {mode}")), "{data}");
    running.stop().await;
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_file(&smtp.out);
}

#[tokio::test]
async fn email_over_starttls_with_a_private_ca() {
    email_over_tls("starttls").await;
}

#[tokio::test]
async fn email_over_implicit_tls_with_a_private_ca() {
    email_over_tls("tls").await;
}

/// The host name is resolved by fraiseql (`fraiseql::net`), not libc: `mail.localhost` is
/// loopback there (RFC 6761) and unknown to libc here (`files dns`), as every name is in the
/// `FROM scratch` image. The connection goes to the address, the certificate (valid for the
/// name only, not for 127.0.0.1) is checked against the name.
#[tokio::test]
async fn email_over_starttls_to_a_host_name_checks_the_certificate_against_the_name() {
    email_over_tls_to("starttls", "mail.localhost", "DNS:mail.localhost").await;
}

#[tokio::test]
async fn email_refuses_a_certificate_it_does_not_trust() {
    let (dir, _ca, cert, key) = make_certs();
    let smtp = start_smtp_with(&["starttls", &cert, &key]).await;
    let db = TestDb::new().await;
    db.create_posts().await;
    let running = start(
        &db,
        &format!(
            r#"{RUNTIME}
[[observers]]
name = "mail"
entity = "Post"
retry = {{ max_attempts = 1 }}
[[observers.actions]]
type = "email"
host = "127.0.0.1"
port = {port}
tls = "starttls"
from = "noreply@example.com"
to = "ops@example.com"
subject = "s"
body = "b"
"#,
            port = smtp.port
        ),
        &[],
    );
    db.insert_post("x", true).await;
    eventually(Duration::from_secs(10), "dead letter", || async {
        db.dead_letter_count().await == 1
    })
    .await;
    let dl = &fraiseql::queue::dlq::PgDeadLetters::new(db.pool().clone())
        .list(&Default::default())
        .await
        .unwrap()[0];
    assert!(
        dl.last_error
            .as_deref()
            .unwrap()
            .to_lowercase()
            .contains("certificate"),
        "{:?}",
        dl.last_error
    );
    assert!(
        std::fs::read_to_string(&smtp.out)
            .unwrap_or_default()
            .is_empty()
    );
    running.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

async fn start_smtp() -> SmtpSink {
    start_smtp_with(&[]).await
}

async fn start_smtp_with(extra: &[&str]) -> SmtpSink {
    // Pick a free port, then let aiosmtpd bind it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = std::env::temp_dir().join(format!("fraiseql-smtp-{}.jsonl", uuid::Uuid::new_v4()));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/smtp_sink.py");
    let mut child = tokio::process::Command::new("python3")
        .arg(script)
        .arg(port.to_string())
        .arg(&out)
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 is required for the SMTP test");
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(15), lines.next_line())
        .await
        .expect("aiosmtpd started")
        .unwrap();
    assert_eq!(
        line.as_deref(),
        Some("ready"),
        "the SMTP sink did not start; is aiosmtpd installed (pip install aiosmtpd)?"
    );
    SmtpSink {
        port,
        out,
        _child: child,
    }
}

#[tokio::test]
async fn email_is_delivered_over_smtp() {
    let smtp = start_smtp().await;
    let db = TestDb::new().await;
    db.create_posts().await;
    let running = start(
        &db,
        &format!(
            r#"{RUNTIME}
[[observers]]
name = "mail-on-publish"
entity = "Post"
events = ["UPDATE"]
condition = "changed_to(published, true)"
[[observers.actions]]
type = "email"
host = "127.0.0.1"
port = {port}
tls = "none"
from = "FraiseQL <noreply@example.com>"
to = "editor@example.com, {{{{ after.title | lower }}}}@example.com"
subject = "Published: {{{{ after.title }}}}"
body = """
Post {{{{ event.entity_id }}}} was published.
Views: {{{{ after.views }}}}
"""
"#,
            port = smtp.port
        ),
        &[],
    );
    let id = db.insert_post("Alice", false).await;
    db.client()
        .await
        .execute(
            "UPDATE tb_post SET published = true, views = 7 WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    let mut content = String::new();
    for _ in 0..200 {
        content = std::fs::read_to_string(&smtp.out).unwrap_or_default();
        if !content.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let lines: Vec<serde_json::Value> = content
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "one message: {content}");
    let m = &lines[0];
    assert_eq!(m["from"], "noreply@example.com");
    assert_eq!(
        m["to"],
        serde_json::json!(["editor@example.com", "alice@example.com"])
    );
    let data = m["data"].as_str().unwrap();
    assert!(data.contains("Subject: Published: Alice"), "{data}");
    assert!(
        data.contains(&format!("Post {id} was published.")),
        "{data}"
    );
    assert!(data.contains("Views: 7"), "{data}");
    let pk = db.change_pks().await[1];
    assert!(
        data.contains(&format!("Message-ID: <{pk}.mail-on-publish.0@fraiseql>")),
        "{data}"
    );
    running.stop().await;
    let _ = std::fs::remove_file(&smtp.out);
}

#[tokio::test]
async fn email_to_a_down_smtp_server_is_retried_then_dead_lettered() {
    let db = TestDb::new().await;
    db.create_posts().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let running = start(
        &db,
        &format!(
            r#"{RUNTIME}
[[observers]]
name = "mail"
entity = "Post"
retry = {{ max_attempts = 2, backoff = "fixed", initial_delay_ms = 20, max_delay_ms = 20, jitter = false }}
[[observers.actions]]
type = "email"
host = "127.0.0.1"
port = {port}
tls = "none"
from = "noreply@example.com"
to = "a@example.com"
subject = "s"
body = "b"
"#
        ),
        &[],
    );
    db.insert_post("x", true).await;
    eventually(Duration::from_secs(10), "dead letter", || async {
        db.dead_letter_count().await == 1
    })
    .await;
    let dl = &fraiseql::queue::dlq::PgDeadLetters::new(db.pool().clone())
        .list(&Default::default())
        .await
        .unwrap()[0];
    assert_eq!(dl.attempts, 2, "connection refused is retryable");
    assert!(dl.errors.iter().all(|e| e.retryable));
    running.stop().await;
}

#[tokio::test]
async fn search_index_receives_batched_bulk_ndjson() {
    let db = TestDb::new().await;
    db.create_posts().await;
    // An Elasticsearch-like `_bulk`: one item result per action line, 201/200 for index,
    // 404 for deleting a missing document.
    let rx = HttpReceiver::with(|req| {
        let lines: Vec<serde_json::Value> = req
            .body
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let mut items = Vec::new();
        let mut i = 0;
        while i < lines.len() {
            if let Some(meta) = lines[i].get("index") {
                items.push(serde_json::json!({"index": {"_id": meta["_id"], "status": 201}}));
                i += 2;
            } else {
                let meta = &lines[i]["delete"];
                items.push(serde_json::json!({"delete": {"_id": meta["_id"], "status": 404}}));
                i += 1;
            }
        }
        Reply {
            status: 200,
            headers: vec![],
            body: serde_json::json!({"took": 1, "errors": false, "items": items}).to_string(),
        }
    })
    .await;
    let running = start(
        &db,
        &format!(
            r#"{RUNTIME}
[[observers]]
name = "index-posts"
entity = "Post"
[[observers.actions]]
type = "search"
url = "{}"
index = "posts"
api_key_env = "ES_KEY"
batch_size = 50
flush_interval_ms = 100
"#,
            rx.url("/es")
        ),
        &[("ES_KEY", "k3y")],
    );
    // 30 inserts in one statement: their jobs are in flight together and share batches.
    db.client()
        .await
        .execute(
            "INSERT INTO tb_post (title) SELECT 'post ' || g FROM generate_series(1, 30) g",
            &[],
        )
        .await
        .unwrap();
    let first: uuid::Uuid = db
        .client()
        .await
        .query_one("SELECT id FROM tb_post ORDER BY pk_post LIMIT 1", &[])
        .await
        .unwrap()
        .get(0);
    db.client()
        .await
        .execute("DELETE FROM tb_post WHERE id = $1", &[&first])
        .await
        .unwrap();

    let mut items = Vec::new();
    for _ in 0..200 {
        items = rx
            .requests()
            .iter()
            .flat_map(|r| r.body.lines().map(str::to_owned).collect::<Vec<_>>())
            .collect::<Vec<_>>();
        if items.len() >= 61 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reqs = rx.requests();
    assert!(
        reqs.len() < 31,
        "batched: {} requests for 31 jobs",
        reqs.len()
    );
    for r in &reqs {
        assert_eq!(r.path, "/es/_bulk");
        assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
        assert_eq!(r.header("authorization"), Some("ApiKey k3y"));
        assert!(r.body.ends_with('\n'), "NDJSON ends with a newline");
    }
    assert_eq!(items.len(), 61, "30 index pairs + 1 delete");
    let parsed: Vec<serde_json::Value> = items
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut indexed = 0;
    let mut i = 0;
    while i < parsed.len() {
        if let Some(meta) = parsed[i].get("index") {
            assert_eq!(meta["_index"], "posts");
            let doc = &parsed[i + 1];
            assert_eq!(meta["_id"], doc["id"], "document id = entity id");
            assert!(doc["title"].as_str().unwrap().starts_with("post "));
            indexed += 1;
            i += 2;
        } else {
            let meta = &parsed[i]["delete"];
            assert_eq!(meta["_id"], first.to_string());
            assert_eq!(meta["_index"], "posts");
            i += 1;
        }
    }
    assert_eq!(indexed, 30);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        db.dead_letter_count().await,
        0,
        "a 404 on delete counts as done"
    );
    assert_eq!(
        metric(
            &running.registry,
            "fraiseql_job_executed_total",
            Some(("action", "search"))
        ),
        31.0
    );
    running.stop().await;
}

#[tokio::test]
async fn search_item_errors_are_classified_per_item() {
    let db = TestDb::new().await;
    db.create_posts().await;
    // Rejects documents titled "bad" with a mapping error (400), accepts the others.
    let rx = HttpReceiver::with(|req| {
        let lines: Vec<serde_json::Value> = req.body.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let items: Vec<_> = lines
            .chunks(2)
            .map(|pair| {
                if pair[1]["title"] == "bad" {
                    serde_json::json!({"index": {"status": 400, "error": {"type": "mapper_parsing_exception"}}})
                } else {
                    serde_json::json!({"index": {"status": 200}})
                }
            })
            .collect();
        Reply { status: 200, headers: vec![], body: serde_json::json!({"errors": true, "items": items}).to_string() }
    })
    .await;
    let running = start(
        &db,
        &format!(
            r#"{RUNTIME}
[[observers]]
name = "idx"
entity = "Post"
[[observers.actions]]
type = "search"
url = "{}"
index = "posts"
"#,
            rx.url("")
        ),
        &[],
    );
    db.client()
        .await
        .execute(
            "INSERT INTO tb_post (title) VALUES ('good'), ('bad'), ('fine')",
            &[],
        )
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "one dead letter", || async {
        db.dead_letter_count().await == 1
    })
    .await;
    let dl = &fraiseql::queue::dlq::PgDeadLetters::new(db.pool().clone())
        .list(&Default::default())
        .await
        .unwrap()[0];
    assert_eq!(dl.job.payload["after"]["title"], "bad");
    assert!(
        dl.last_error
            .as_deref()
            .unwrap()
            .contains("mapper_parsing_exception")
    );
    assert_eq!(
        metric(
            &running.registry,
            "fraiseql_job_executed_total",
            Some(("action", "search"))
        ),
        2.0
    );
    running.stop().await;
}

/// A retried write must not overwrite a newer document: `_bulk` items carry the change-log
/// position as an external version, and a version conflict (409) means "a newer version is
/// already there", i.e. done. The receiver keeps documents with Elasticsearch's external
/// versioning rules (a write without a version always wins) and refuses the first write of
/// the older change once (503), so its retry arrives after the newer one.
#[tokio::test]
async fn a_retried_search_write_never_overwrites_a_newer_document() {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    let db = TestDb::new().await;
    db.create_posts().await;
    /// Document id → (external version, document).
    type Docs = HashMap<String, (Option<u64>, serde_json::Value)>;
    let docs: Arc<Mutex<Docs>> = Arc::default();
    let refused = Arc::new(Mutex::new(false));
    let (store, once) = (docs.clone(), refused.clone());
    let rx = HttpReceiver::with(move |req| {
        let lines: Vec<serde_json::Value> = req
            .body
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let mut items = Vec::new();
        let mut i = 0;
        while i < lines.len() {
            let (kind, meta) = lines[i].as_object().unwrap().iter().next().unwrap();
            let id = meta["_id"].as_str().unwrap().to_owned();
            let doc = (kind == "index").then(|| lines[i + 1].clone());
            i += if doc.is_some() { 2 } else { 1 };
            if doc.as_ref().is_some_and(|d| d["title"] == "v1") && !*once.lock().unwrap() {
                *once.lock().unwrap() = true;
                items.push(serde_json::json!({kind: {"_id": id, "status": 503}}));
                continue;
            }
            let version = meta["version"].as_u64();
            assert!(
                version.is_none() || meta["version_type"] == "external",
                "a version is external: {meta}"
            );
            let mut store = store.lock().unwrap();
            let current = store.get(&id).and_then(|(v, _)| *v);
            if let (Some(v), Some(c)) = (version, current)
                && v <= c
            {
                items.push(serde_json::json!({kind: {"_id": id, "status": 409,
                    "error": {"type": "version_conflict_engine_exception"}}}));
                continue;
            }
            store.insert(
                id.clone(),
                (version, doc.unwrap_or(serde_json::Value::Null)),
            );
            items.push(serde_json::json!({kind: {"_id": id, "status": 200}}));
        }
        Reply {
            status: 200,
            headers: vec![],
            body: serde_json::json!({"errors": true, "items": items}).to_string(),
        }
    })
    .await;
    let running = start(
        &db,
        &format!(
            r#"{RUNTIME}
[[observers]]
name = "idx"
entity = "Post"
events = ["UPDATE"]
retry = {{ max_attempts = 5, backoff = "fixed", initial_delay_ms = 500 }}
[[observers.actions]]
type = "search"
url = "{}"
index = "posts"
batch_size = 1
"#,
            rx.url("")
        ),
        &[],
    );
    let id = db.insert_post("v0", true).await;
    let client = db.client().await;
    client
        .execute("UPDATE tb_post SET title = 'v1' WHERE id = $1", &[&id])
        .await
        .unwrap();
    client
        .execute("UPDATE tb_post SET title = 'v2' WHERE id = $1", &[&id])
        .await
        .unwrap();
    // Both changes done (the refused one retried once): three requests in all.
    eventually(Duration::from_secs(10), "three _bulk requests", || async {
        rx.len() >= 3
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stored = docs.lock().unwrap().get(&id.to_string()).cloned();
    assert_eq!(
        stored.map(|(_, d)| d["title"].clone()),
        Some(serde_json::json!("v2")),
        "the newer document stays"
    );
    assert_eq!(
        db.dead_letter_count().await,
        0,
        "a version conflict is done"
    );
    running.stop().await;
}

#[tokio::test]
async fn cache_invalidation_is_published_on_a_notify_channel() {
    let db = TestDb::new().await;
    db.create_posts().await;
    let (listener, mut conn) = tokio_postgres::connect(&db.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    let (tx, mut notes) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        let mut s = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(Ok(m)) = s.next().await {
            if let tokio_postgres::AsyncMessage::Notification(n) = m {
                let _ = tx
                    .send((n.channel().to_string(), n.payload().to_string()))
                    .await;
            }
        }
    });
    listener.batch_execute("LISTEN post_cache").await.unwrap();
    let running = start(
        &db,
        &format!(
            r#"{RUNTIME}
[[observers]]
name = "invalidate"
entity = "Post"
events = ["UPDATE", "DELETE"]
[[observers.actions]]
type = "cache"
channel = "post_cache"
"#
        ),
        &[],
    );
    let id = db.insert_post("c", true).await;
    db.client()
        .await
        .execute("UPDATE tb_post SET views = 1 WHERE id = $1", &[&id])
        .await
        .unwrap();
    let (channel, payload) = tokio::time::timeout(Duration::from_secs(10), notes.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(channel, "post_cache");
    let msg: serde_json::Value = serde_json::from_str(&payload).unwrap();
    let pk = db.change_pks().await[1];
    assert_eq!(
        msg,
        serde_json::json!({"entity": "Post", "entity_id": id, "op": "UPDATE", "change_pk": pk,
                           "idempotency_key": format!("{pk}:invalidate:0")})
    );
    running.stop().await;
}

#[tokio::test]
async fn a_secret_slack_url_never_appears_in_errors() {
    let db = TestDb::new().await;
    db.create_posts().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let secret_url = format!("http://127.0.0.1:{port}/services/T000/B000/TOPSECRET");
    let running = start(
        &db,
        &format!(
            r#"{RUNTIME}
[[observers]]
name = "slack"
entity = "Post"
retry = {{ max_attempts = 2, backoff = "fixed", initial_delay_ms = 10, max_delay_ms = 10, jitter = false }}
[[observers.actions]]
type = "slack"
url_env = "SLACK_URL"
text = "x"
"#
        ),
        &[("SLACK_URL", &secret_url)],
    );
    db.insert_post("x", true).await;
    eventually(Duration::from_secs(10), "dead letter", || async {
        db.dead_letter_count().await == 1
    })
    .await;
    let dl = &fraiseql::queue::dlq::PgDeadLetters::new(db.pool().clone())
        .list(&Default::default())
        .await
        .unwrap()[0];
    let stored = serde_json::to_string(&dl.errors).unwrap();
    assert!(stored.contains("connection failed"), "{stored}");
    assert!(!stored.contains("TOPSECRET"), "secret leaked: {stored}");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_action_publishes_to_jetstream_with_the_idempotency_key_as_message_id() {
    let db = TestDb::new().await;
    db.create_posts().await;
    // A stream of this test's own on `<prefix>.>`, deleted at the end.
    let nats = common::nats::test_config(common::nats::SHARED_URL);
    let bus = common::nats::connect(&nats).await;
    let running = start(
        &db,
        &format!(
            r#"{RUNTIME}
[[observers]]
name = "to-nats"
entity = "Post"
[[observers.actions]]
type = "nats"
url = "{url}"
subject = "{prefix}.{{{{ event.entity | lower }}}}.{{{{ event.op | lower }}}}"
"#,
            url = nats.url,
            prefix = nats.subject_prefix
        ),
        &[],
    );
    db.insert_post("Hello", true).await;
    let consumer = bus.consumer().await.unwrap();
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while got.is_empty() && std::time::Instant::now() < deadline {
        got = consumer
            .fetch(10, Duration::from_millis(500))
            .await
            .unwrap();
    }
    running.stop().await;
    common::nats::delete_stream(&nats.url, &nats.stream).await;
    assert_eq!(got.len(), 1);
    let pk = db.change_pks().await[0];
    assert_eq!(
        got[0].subject,
        format!("{}.post.insert", nats.subject_prefix)
    );
    assert_eq!(
        got[0].msg_id.as_deref(),
        Some(format!("{pk}:to-nats:0").as_str())
    );
    let doc: serde_json::Value = serde_json::from_slice(&got[0].payload).unwrap();
    assert_eq!(doc["after"]["title"], "Hello");
    assert_eq!(doc["event"]["op"], "INSERT");
}

/// A `nats` action whose `url_env` URL carries the credentials a private server demands
/// delivers the event to a subscriber of that server; a failure shows the job's errors,
/// which must not contain the secret.
async fn nats_action_delivers_with_url_credentials(auth: common::nats::ServerAuth, secret: &str) {
    let db = TestDb::new().await;
    db.create_posts().await;
    let server = common::nats::PrivateServer::started_with_auth(auth);
    let url = server.url_with_credentials();
    let prefix = format!("fqlcred.{}", common::nats::suffix());
    let options = match server.auth() {
        Some(common::nats::ServerAuth::UserPassword(user, pass)) => {
            async_nats::ConnectOptions::with_user_and_password(user, pass)
        }
        Some(common::nats::ServerAuth::Token(token)) => {
            async_nats::ConnectOptions::with_token(token)
        }
        None => async_nats::ConnectOptions::new(),
    };
    let subscriber = options
        .connect(server.address())
        .await
        .expect("subscriber connects");
    let mut messages = subscriber
        .subscribe(format!("{prefix}.>"))
        .await
        .expect("subscribe");
    subscriber.flush().await.expect("flush");
    let running = start(
        &db,
        &format!(
            r#"{RUNTIME}
[[observers]]
name = "to-nats-cred"
entity = "Post"
retry = {{ max_attempts = 3, backoff = "fixed", initial_delay_ms = 200, max_delay_ms = 200, jitter = false }}
[[observers.actions]]
type = "nats"
url_env = "NATS_URL"
jetstream = false
timeout_ms = 2000
subject = "{prefix}.{{{{ event.entity | lower }}}}.{{{{ event.op | lower }}}}"
"#
        ),
        &[("NATS_URL", &url)],
    );
    db.insert_post("Hello", true).await;
    let got = tokio::time::timeout(Duration::from_secs(10), messages.next()).await;
    let dead = if got.is_err() {
        eventually(Duration::from_secs(10), "dead letter", || async {
            db.dead_letter_count().await == 1
        })
        .await;
        let dl = fraiseql::queue::dlq::PgDeadLetters::new(db.pool().clone())
            .list(&Default::default())
            .await
            .unwrap();
        serde_json::to_string(&dl[0].errors).unwrap()
    } else {
        String::new()
    };
    running.stop().await;
    assert!(!dead.contains(secret), "secret leaked: {dead}");
    let message = got
        .unwrap_or_else(|_| panic!("no message within 10 s; the job failed with: {dead}"))
        .expect("subscription open");
    assert_eq!(message.subject.as_str(), format!("{prefix}.post.insert"));
    let doc: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(doc["after"]["title"], "Hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_action_with_user_and_password_in_the_url_delivers() {
    nats_action_delivers_with_url_credentials(
        common::nats::ServerAuth::UserPassword("fql".into(), "pw-s3cret".into()),
        "pw-s3cret",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_action_with_a_token_in_the_url_delivers() {
    nats_action_delivers_with_url_credentials(
        common::nats::ServerAuth::Token("tok-s3cret".into()),
        "tok-s3cret",
    )
    .await;
}
