//! Analytics sinks against real parts: the ClickHouse server of the machine (HTTP on 8123,
//! Debian's 18.16; `.ci/run` starts it), `serve` in-process and as the real binary (killed
//! with -9), and an Elasticsearch `_bulk` receiver written here that enforces NDJSON
//! framing and external versions and answers 429 for some items.
//!
//! Every test has its own PostgreSQL database and its own ClickHouse database.

use crate::common;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::TestDb;
use common::observers::{HttpReceiver, Reply, Request};
use fraiseql::sinks::SinkConfig;
use serde_json::{Value, json};

const CLICKHOUSE: &str = "http://127.0.0.1:8123";

/// One ClickHouse statement; panics on an error answer.
async fn ch(sql: &str) -> String {
    let r = common::http()
        .post(CLICKHOUSE)
        .body(sql.to_string())
        .send()
        .await
        .expect("ClickHouse on 127.0.0.1:8123 (.ci/run starts it)");
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    assert_eq!(status, 200, "{sql}: {text}");
    text
}

async fn ch_u64(sql: &str) -> u64 {
    ch(sql).await.trim().parse().unwrap_or(0)
}

/// A ClickHouse database for one test, dropped with the guard.
struct ChDb(String);

impl ChDb {
    async fn new() -> ChDb {
        let name = format!("fraiseql_t_{}", uuid::Uuid::new_v4().simple());
        ch(&format!("CREATE DATABASE {name}")).await;
        ChDb(name)
    }

    fn events(&self) -> String {
        format!("{}.events", self.0)
    }
}

impl Drop for ChDb {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {}", self.0);
        let _ = std::thread::spawn(move || {
            let _ = std::process::Command::new("curl")
                .args(["-sS", CLICKHOUSE, "--data-binary", &sql])
                .output();
        })
        .join();
    }
}

/// Applies DDL text (statements ending in `;`, `--` comments) one statement per request.
async fn apply_ddl(text: &str) {
    let code: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    for stmt in code.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        ch(stmt).await;
    }
}

fn clickhouse_sink(table: &str, extra: &str) -> SinkConfig {
    toml::from_str(&format!(
        "name = \"ch\"\ntype = \"clickhouse\"\nurl = \"{CLICKHOUSE}\"\ntable = \"{table}\"\n\
         max_rows = 500\nmax_delay_ms = 50\npoll_interval_ms = 200\ntakeover_interval_ms = 100\n\
         retry = {{ initial_delay_ms = 50, max_delay_ms = 500 }}\n{extra}"
    ))
    .unwrap()
}

/// Inserts `n` posts, updates every third, deletes every fifth (direct SQL, one statement
/// each); returns the number of change-log rows written.
async fn churn_posts(db: &TestDb, n: usize, offset: usize) -> usize {
    let c = db.client().await;
    let mut changes = 0;
    for i in 0..n {
        let id: uuid::Uuid = c
            .query_one(
                "INSERT INTO tb_post (title) VALUES ($1) RETURNING id",
                &[&format!("p{}", i + offset)],
            )
            .await
            .unwrap()
            .get(0);
        changes += 1;
        if i % 3 == 0 {
            c.execute(
                "UPDATE tb_post SET views = views + 1, title = title || '!' WHERE id = $1",
                &[&id],
            )
            .await
            .unwrap();
            changes += 1;
        }
        if i % 5 == 0 {
            c.execute("DELETE FROM tb_post WHERE id = $1", &[&id])
                .await
                .unwrap();
            changes += 1;
        }
    }
    changes
}

async fn change_count(db: &TestDb) -> u64 {
    let n: i64 = db
        .client()
        .await
        .query_one("SELECT count(*) FROM fraiseql.tb_entity_change_log", &[])
        .await
        .unwrap()
        .get(0);
    n as u64
}

/// Waits until `sql` (a count) reaches `want`; returns the last value seen.
async fn wait_count(sql: &str, want: u64, within: Duration) -> u64 {
    let deadline = Instant::now() + within;
    loop {
        let got = ch_u64(sql).await;
        if got >= want || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Per (op) counts and pk sums of the change log, as ClickHouse should have them.
async fn pg_summary(db: &TestDb) -> Vec<(String, i64, i64)> {
    db.client()
        .await
        .query(
            "SELECT op, count(*), sum(pk)::bigint FROM fraiseql.tb_entity_change_log \
             GROUP BY op ORDER BY op",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

async fn ch_summary(table: &str) -> Vec<(String, i64, i64)> {
    ch(&format!(
        "SELECT op, count(), sum(version) FROM {table} FINAL GROUP BY op ORDER BY toString(op) \
         FORMAT TabSeparated"
    ))
    .await
    .lines()
    .map(|l| {
        let f: Vec<&str> = l.split('\t').collect();
        (
            f[0].to_string(),
            f[1].parse().unwrap(),
            f[2].parse().unwrap(),
        )
    })
    .collect()
}

fn config_with(db: &TestDb, sink: SinkConfig) -> fraiseql::config::Config {
    let mut c = db.config();
    c.sinks = vec![sink];
    c
}

/// Changes into ClickHouse through `serve`; then a crash after a send and before its
/// checkpoint (simulated by moving the checkpoint back to the start): everything is sent
/// again, and the copies collapse under FINAL and in the roll-ups.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_clickhouse_delivers_and_a_resent_batch_collapses() {
    let _settled = common::read_change_log().await;
    let db = TestDb::new().await;
    db.create_posts().await;
    let chdb = ChDb::new().await;
    let sink = clickhouse_sink(&chdb.events(), "");
    // The DDL as `fraiseql sink ddl clickhouse` prints it for this configuration.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fraiseql.toml");
    let file = json!({"sinks": [sink]});
    std::fs::write(&path, toml::to_string(&file).unwrap()).unwrap();
    let out = common::bin()
        .args([
            "--config",
            path.to_str().unwrap(),
            "sink",
            "ddl",
            "clickhouse",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ddl = String::from_utf8(out.stdout).unwrap();
    assert!(ddl.contains("ReplacingMergeTree(version)"), "{ddl}");
    apply_ddl(&ddl).await;

    let changes = churn_posts(&db, 300, 0).await as u64;
    assert_eq!(change_count(&db).await, changes);
    let server = common::TestServer::start(config_with(&db, sink.clone())).await;
    let table = chdb.events();
    let got = wait_count(
        &format!("SELECT count() FROM {table} FINAL"),
        changes,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(got, changes, "every change in ClickHouse");
    assert_eq!(ch_summary(&table).await, pg_summary(&db).await);
    // More changes while it runs (woken by NOTIFY, not only polled).
    let more = churn_posts(&db, 60, 1000).await as u64;
    let got = wait_count(
        &format!("SELECT count() FROM {table} FINAL"),
        changes + more,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(got, changes + more);
    // The rows are in ClickHouse before the sink has read its acknowledgement and counted
    // them: the metric follows within moments.
    let metric_rows = async || {
        let (_, text) = common::get(&server.url("/metrics")).await;
        text.lines()
            .find_map(|l| l.strip_prefix("fraiseql_sink_rows_total{sink=\"ch\"} "))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    let counted = std::time::Instant::now();
    let mut rows = metric_rows().await;
    while rows != Some((changes + more) as f64) && counted.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        rows = metric_rows().await;
    }
    assert_eq!(rows, Some((changes + more) as f64), "metric rows");
    server.stop().await;

    // The crash: the batches were sent, the checkpoint did not move.
    db.batch("UPDATE fraiseql.tb_sink_checkpoint SET last_txid = '0', last_pk = 0")
        .await;
    let total = changes + more;
    let server = common::TestServer::start(config_with(&db, sink)).await;
    let raw = wait_count(
        &format!("SELECT count() FROM {table}"),
        2 * total,
        Duration::from_secs(60),
    )
    .await;
    server.stop().await;
    assert_eq!(raw, 2 * total, "the whole log was sent a second time");
    assert_eq!(
        ch_u64(&format!("SELECT count() FROM {table} FINAL")).await,
        total,
        "copies collapse under FINAL"
    );
    assert_eq!(ch_summary(&table).await, pg_summary(&db).await);
    let hourly = ch_u64(&format!(
        "SELECT sum(n) FROM (SELECT uniqExactMerge(events) AS n FROM {table}_hourly \
         GROUP BY entity, op, hour)"
    ))
    .await;
    assert_eq!(hourly, total, "the hourly roll-up counts each change once");
}

// ---------------------------------------------------------------------------------------
// kill -9 of serve, and a ClickHouse restart, mid-stream

fn spawn_serve(db_url: &str, config: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_fraiseql"))
        .args(["--config", config.to_str().unwrap(), "serve", "--listen"])
        .arg(format!("127.0.0.1:{}", common::free_port()))
        .env("FRAISEQL_DATABASE_URL", db_url)
        .env("FRAISEQL_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("fraiseql binary")
}

async fn clickhouse_up() -> bool {
    matches!(
        common::http().get(format!("{CLICKHOUSE}/ping")).send().await,
        Ok(r) if r.status().is_success()
    )
}

/// Stops the machine's ClickHouse server (SIGTERM to its pid) and starts it again the way
/// `.ci/run` does; returns how long it was down.
async fn restart_clickhouse() -> Duration {
    let pid = String::from_utf8(
        Command::new("pidof")
            .arg("clickhouse-server")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let pid = pid
        .split_whitespace()
        .next()
        .expect("clickhouse-server runs")
        .to_string();
    let down_at = Instant::now();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    assert!(
        common::eventually(Duration::from_secs(30), || async { !clickhouse_up().await }).await,
        "ClickHouse stopped"
    );
    // Its pid must be gone before a new server can take the ports.
    let gone = common::eventually(Duration::from_secs(30), || {
        let pid = pid.clone();
        async move { !std::path::Path::new(&format!("/proc/{pid}")).exists() }
    })
    .await;
    assert!(gone, "clickhouse-server {pid} exited");
    let started = Command::new("start-stop-daemon")
        .args([
            "--start",
            "--oknodo",
            "--background",
            "--chuid",
            "clickhouse",
            "--chdir",
            "/var/lib/clickhouse",
            "--exec",
            "/usr/sbin/clickhouse-server",
            "--",
            "--config-file=/etc/clickhouse-server/config.xml",
        ])
        .status()
        .unwrap();
    assert!(started.success());
    assert!(
        common::eventually(Duration::from_secs(60), clickhouse_up).await,
        "ClickHouse back"
    );
    down_at.elapsed()
}

/// `SINK_E2E_CHANGES` changes (default 3,000) committed while the `serve` running the sink is
/// killed -9 twice and ClickHouse is restarted once: `count() FINAL` equals the change count
/// and the per-op counts and version sums equal PostgreSQL's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_clickhouse_survives_kill9_and_a_clickhouse_restart() {
    let posts: usize = std::env::var("SINK_E2E_CHANGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(2000, |changes: usize| changes * 15 / 23);
    let db = TestDb::new().await;
    db.create_posts().await;
    let chdb = ChDb::new().await;
    let sink = clickhouse_sink(&chdb.events(), "");
    apply_ddl(&fraiseql::sinks::clickhouse::ddl(&sink)).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fraiseql.toml");
    std::fs::write(&path, toml::to_string(&json!({"sinks": [sink]})).unwrap()).unwrap();

    let started = Instant::now();
    let mut child = spawn_serve(&db.url(), &path);
    // The writer runs until every event happened (so each one is mid-stream), and at least
    // until it wrote `posts` posts.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let db_url = db.url();
        let stop = stop.clone();
        tokio::spawn(async move {
            let (c, conn) = tokio_postgres::connect(&db_url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            let mut changes = 0usize;
            let mut i = 0;
            while i < posts || !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let id: uuid::Uuid = c
                    .query_one(
                        "INSERT INTO tb_post (title) VALUES ($1) RETURNING id",
                        &[&format!("p{i}")],
                    )
                    .await
                    .unwrap()
                    .get(0);
                changes += 1;
                if i % 3 == 0 {
                    c.execute("UPDATE tb_post SET views = views + 1 WHERE id = $1", &[&id])
                        .await
                        .unwrap();
                    changes += 1;
                }
                if i % 5 == 0 {
                    c.execute("DELETE FROM tb_post WHERE id = $1", &[&id])
                        .await
                        .unwrap();
                    changes += 1;
                }
                if i % 10 == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                i += 1;
            }
            changes
        })
    };
    let table = chdb.events();
    let count_sql = format!("SELECT count() FROM {table} FINAL");
    let mut events = Vec::new();
    // kill -9, kill -9, a ClickHouse restart: each once some changes have arrived since the
    // previous event, all while the writer writes.
    for step in 0..3 {
        let before = ch_u64(&count_sql).await;
        let moved = common::eventually(Duration::from_secs(60), || {
            let sql = count_sql.clone();
            async move { ch_u64(&sql).await > before + 300 }
        })
        .await;
        assert!(moved, "changes keep arriving before step {step}");
        if step == 2 {
            let down = restart_clickhouse().await;
            events.push(format!(
                "ClickHouse restarted at {:?} (down {down:?})",
                started.elapsed()
            ));
        } else {
            child.kill().unwrap();
            child.wait().unwrap();
            events.push(format!(
                "serve killed -9 at {:?} with {} rows in ClickHouse",
                started.elapsed(),
                ch_u64(&count_sql).await
            ));
            child = spawn_serve(&db.url(), &path);
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let changes = writer.await.unwrap() as u64;
    let written_at = started.elapsed();
    assert_eq!(change_count(&db).await, changes);
    let got = wait_count(&count_sql, changes, Duration::from_secs(180)).await;
    let done_at = started.elapsed();
    child.kill().unwrap();
    child.wait().unwrap();
    let raw = ch_u64(&format!("SELECT count() FROM {table}")).await;
    println!(
        "sink kill -9 x2 + ClickHouse restart: {changes} changes written in {written_at:?}, \
         count() FINAL = {got} at {done_at:?}, {raw} rows before collapsing ({} re-sent); {events:?}",
        raw.saturating_sub(got)
    );
    assert_eq!(got, changes, "count() FINAL equals the change count");
    assert_eq!(ch_summary(&table).await, pg_summary(&db).await);
}

// ---------------------------------------------------------------------------------------
// Elasticsearch `_bulk` receiver

#[derive(Debug, Clone)]
struct Doc {
    version: i64,
    deleted: bool,
    source: Value,
}

#[derive(Default)]
struct Es {
    docs: HashMap<(String, String), Doc>,
    items: u64,
    injected_429: u64,
    conflicts: u64,
    refused: u64,
}

/// Answers `_bulk` like Elasticsearch with external versions: NDJSON framing enforced (400
/// for a body not ending in a newline, a line that is not a JSON object, an unknown action
/// or a missing document line), 409 for a version not above the stored one (deletes keep a
/// tombstone with their version), 429 for every `every_429`th item (not applied), 400 for a
/// document whose `title` is `"poison"`.
fn bulk_responder(es: Arc<Mutex<Es>>, every_429: u64) -> impl FnMut(&Request) -> Reply + Send {
    move |req: &Request| {
        let json_reply = |status: u16, v: Value| Reply {
            status,
            headers: Vec::new(),
            body: v.to_string(),
        };
        if req.method == "GET" {
            return json_reply(200, json!({"version": {"number": "8.0.0-test-receiver"}}));
        }
        if req.path != "/_bulk"
            || req.header("content-type") != Some("application/x-ndjson")
            || !req.body.ends_with('\n')
        {
            return json_reply(400, json!({"error": "bad framing"}));
        }
        let mut es = es.lock().unwrap();
        let mut lines = req.body.lines();
        let mut items = Vec::new();
        while let Some(line) = lines.next() {
            let Ok(Value::Object(action)) = serde_json::from_str::<Value>(line) else {
                return json_reply(400, json!({"error": format!("not a JSON object: {line}")}));
            };
            let Some((kind, target)) = action.iter().next() else {
                return json_reply(400, json!({"error": "empty action"}));
            };
            let source = match kind.as_str() {
                "index" | "create" => match lines.next().map(serde_json::from_str::<Value>) {
                    Some(Ok(v @ Value::Object(_))) => Some(v),
                    _ => return json_reply(400, json!({"error": "missing document line"})),
                },
                "delete" => None,
                _ => return json_reply(400, json!({"error": format!("unknown action {kind}")})),
            };
            es.items += 1;
            let key = (
                target["_index"].as_str().unwrap_or_default().to_string(),
                target["_id"].as_str().unwrap_or_default().to_string(),
            );
            if es.items.is_multiple_of(every_429) {
                es.injected_429 += 1;
                items.push(json!({kind: {"status": 429, "error": {"type": "es_rejected_execution_exception"}}}));
                continue;
            }
            if source.as_ref().is_some_and(|s| s["title"] == "poison") {
                es.refused += 1;
                items.push(json!({kind: {"status": 400, "error": {"type": "mapper_parsing_exception", "reason": "poison"}}}));
                continue;
            }
            let external = target["version_type"] == "external";
            let version = target["version"].as_i64();
            let stored = es.docs.get(&key).cloned();
            let status = match (kind.as_str(), external, version) {
                ("create", _, _) => {
                    if stored.is_some() {
                        409
                    } else {
                        es.docs.insert(
                            key,
                            Doc {
                                version: 1,
                                deleted: false,
                                source: source.unwrap(),
                            },
                        );
                        201
                    }
                }
                (_, true, Some(v)) => {
                    if stored.as_ref().is_some_and(|d| d.version >= v) {
                        409
                    } else {
                        let deleted = kind == "delete";
                        let existed = stored.as_ref().is_some_and(|d| !d.deleted);
                        es.docs.insert(
                            key,
                            Doc {
                                version: v,
                                deleted,
                                source: source.unwrap_or(Value::Null),
                            },
                        );
                        match (deleted, existed) {
                            (true, false) => 404,
                            (false, false) => 201,
                            _ => 200,
                        }
                    }
                }
                _ => return json_reply(400, json!({"error": "external version required"})),
            };
            if status == 409 {
                es.conflicts += 1;
            }
            items.push(json!({kind: {"status": status}}));
        }
        json_reply(200, json!({"errors": true, "items": items}))
    }
}

fn es_sink(url: &str) -> SinkConfig {
    toml::from_str(&format!(
        "name = \"es\"\ntype = \"elasticsearch\"\nurl = \"{url}\"\nindex = \"fx-{{entity}}\"\n\
         max_rows = 200\nmax_delay_ms = 50\npoll_interval_ms = 200\ntakeover_interval_ms = 100\n\
         retry = {{ initial_delay_ms = 20, max_delay_ms = 200 }}\n"
    ))
    .unwrap()
}

/// The checkpoint reached the last change-log position.
async fn caught_up(db: &TestDb, sink: &str, within: Duration) -> bool {
    common::eventually(within, || async {
        let c = db.client().await;
        let last: Option<(String, i64)> = c
            .query_opt(
                "SELECT txid::text, pk FROM fraiseql.tb_entity_change_log \
                 ORDER BY txid DESC, pk DESC LIMIT 1",
                &[],
            )
            .await
            .unwrap()
            .map(|r| (r.get(0), r.get(1)));
        let at = fraiseql::sinks::read_checkpoint(&c, sink).await.unwrap();
        match (last, at) {
            (Some((t, pk)), Some(at)) => at.pk == pk && at.txid.to_string() == t,
            _ => false,
        }
    })
    .await
}

/// Every document ends at its latest version (the entity's newest change-log pk) with its
/// latest title; every deleted one stays deleted, also after the whole log is sent again;
/// injected 429s are retried per item; a refused item is dead-lettered with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_elasticsearch_bulk_latest_version_and_no_resurrection() {
    let _settled = common::read_change_log().await;
    let db = TestDb::new().await;
    db.create_posts().await;
    let es = Arc::new(Mutex::new(Es::default()));
    let rx = HttpReceiver::with(bulk_responder(es.clone(), 7)).await;
    let sink = es_sink(&rx.url(""));
    let changes = churn_posts(&db, 400, 0).await;
    db.insert_post("poison", false).await;
    let server = common::TestServer::start(config_with(&db, sink.clone())).await;
    assert!(
        caught_up(&db, "es", Duration::from_secs(60)).await,
        "the sink's checkpoint reaches the end of the log"
    );
    server.stop().await;

    let check = |es: &Es, expected: &[(String, i64, Option<String>)]| {
        for (id, version, title) in expected {
            let doc = es.docs.get(&("fx-post".to_string(), id.clone()));
            let doc = doc.unwrap_or_else(|| panic!("document {id} missing"));
            assert_eq!(doc.version, *version, "{id} at its latest version");
            match title {
                Some(t) => {
                    assert!(!doc.deleted, "{id} is live");
                    assert_eq!(doc.source["title"].as_str(), Some(t.as_str()));
                }
                None => assert!(doc.deleted, "{id} stays deleted"),
            }
        }
    };
    // Expected: per entity id, its newest change and the row as it is now (None: deleted).
    let expected: Vec<(String, i64, Option<String>)> = db
        .client()
        .await
        .query(
            "SELECT l.entity_id::text, max(l.pk), p.title FROM fraiseql.tb_entity_change_log l \
             LEFT JOIN tb_post p ON p.id = l.entity_id \
             WHERE coalesce(p.title, '') <> 'poison' GROUP BY l.entity_id, p.title",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(expected.len(), 400);
    let deleted = expected.iter().filter(|e| e.2.is_none()).count();
    {
        let es = es.lock().unwrap();
        check(&es, &expected);
        assert!(es.injected_429 > 0, "429s were injected");
        assert_eq!(es.refused, 1);
        println!(
            "bulk receiver: {changes} changes + 1 poison, {} items received, {} answered 429 \
             (retried), {deleted} documents deleted",
            es.items, es.injected_429
        );
    }
    let dead: Vec<(String, String)> = db
        .client()
        .await
        .query(
            "SELECT entity, reason FROM fraiseql.tb_sink_dead_letter WHERE sink = 'es'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(dead[0].1.contains("HTTP 400") && dead[0].1.contains("mapper_parsing_exception"));

    // Everything again, as after a crash before the first checkpoint: only conflicts.
    db.batch("UPDATE fraiseql.tb_sink_checkpoint SET last_txid = '0', last_pk = 0")
        .await;
    let conflicts_before = es.lock().unwrap().conflicts;
    let server = common::TestServer::start(config_with(&db, sink)).await;
    assert!(caught_up(&db, "es", Duration::from_secs(60)).await);
    server.stop().await;
    let es = es.lock().unwrap();
    check(&es, &expected);
    assert!(
        es.conflicts - conflicts_before >= changes as u64,
        "every re-sent change answered 409"
    );
}

// ---------------------------------------------------------------------------------------
// Throughput and lag

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Writes ~1,000 changes/s for `secs` seconds (10 rows per statement every 10 ms).
async fn steady_writer(db: &TestDb, secs: u64) -> usize {
    let c = db.client().await;
    let start = Instant::now();
    let mut n = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    while start.elapsed() < Duration::from_secs(secs) {
        tick.tick().await;
        c.execute(
            "INSERT INTO tb_post (title) SELECT 'lag' || g FROM generate_series(1, 10) g",
            &[],
        )
        .await
        .unwrap();
        n += 10;
    }
    n
}

/// Throughput from a backlog and end-to-end lag at ~1,000 changes/s, into ClickHouse and into
/// the `_bulk` receiver; prints the figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_throughput_and_lag() {
    let _settled = common::read_change_log().await;
    const BACKLOG: i64 = 20_000;
    let db = TestDb::new().await;
    db.create_posts().await;
    db.batch(&format!(
        "INSERT INTO tb_post (title) SELECT 'b' || g FROM generate_series(1, {BACKLOG}) g"
    ))
    .await;
    let chdb = ChDb::new().await;
    let table = chdb.events();
    let ch_cfg = clickhouse_sink(&table, "").clone();
    let ch_cfg = SinkConfig {
        max_rows: 5000,
        ..ch_cfg
    };
    apply_ddl(&fraiseql::sinks::clickhouse::ddl(&ch_cfg)).await;
    let es = Arc::new(Mutex::new(Es::default()));
    let rx = HttpReceiver::with(bulk_responder(es.clone(), u64::MAX)).await;
    let es_cfg = SinkConfig {
        max_rows: 2000,
        ..es_sink(&rx.url(""))
    };
    let mut config = db.config();
    config.sinks = vec![ch_cfg, es_cfg];

    let started = Instant::now();
    let server = common::TestServer::start(config).await;
    let count_sql = format!("SELECT count() FROM {table} FINAL");
    let got = wait_count(&count_sql, BACKLOG as u64, Duration::from_secs(120)).await;
    let ch_secs = started.elapsed().as_secs_f64();
    assert_eq!(got, BACKLOG as u64);
    assert!(caught_up(&db, "es", Duration::from_secs(120)).await);
    let es_secs = started.elapsed().as_secs_f64();

    // Lag: commit (occurred_at) to visible in ClickHouse, polled every 10 ms; and to
    // arrival at the receiver (the request's time).
    let seen_from = ch_u64(&format!("SELECT max(version) FROM {table}")).await;
    let sampler = {
        let table = table.clone();
        tokio::spawn(async move {
            let mut lags = Vec::new();
            let mut last = seen_from;
            let until = Instant::now() + Duration::from_secs(14);
            while Instant::now() < until {
                let text = ch(&format!(
                    "SELECT version, occurred_at_us FROM {table} WHERE version > {last} \
                     FORMAT TabSeparated"
                ))
                .await;
                let now_us = chrono::Utc::now().timestamp_micros();
                for l in text.lines() {
                    let mut f = l.split('\t');
                    let v: u64 = f.next().unwrap().parse().unwrap();
                    let at: i64 = f.next().unwrap().parse().unwrap();
                    last = last.max(v);
                    lags.push((now_us - at) as f64 / 1000.0);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            lags
        })
    };
    let rx_from = rx.len();
    let written = steady_writer(&db, 10).await;
    let mut ch_lags = sampler.await.unwrap();
    ch_lags.sort_by(f64::total_cmp);
    assert!(caught_up(&db, "es", Duration::from_secs(30)).await);
    server.stop().await;
    let mut es_lags = Vec::new();
    for r in &rx.requests()[rx_from..] {
        let arrived =
            chrono::Utc::now() - chrono::Duration::from_std(r.at.elapsed()).unwrap_or_default();
        for l in r.body.lines() {
            let v: Value = serde_json::from_str(l).unwrap();
            if let Some(at) = v["_fraiseql"]["occurred_at"].as_str() {
                let at = chrono::DateTime::parse_from_rfc3339(at).unwrap();
                es_lags.push(
                    (arrived - at.with_timezone(&chrono::Utc))
                        .num_microseconds()
                        .unwrap() as f64
                        / 1000.0,
                );
            }
        }
    }
    es_lags.sort_by(f64::total_cmp);
    println!(
        "sink throughput: {BACKLOG} backlog changes into ClickHouse in {ch_secs:.2} s \
         ({:.0} events/s), into the _bulk receiver in {es_secs:.2} s ({:.0} events/s, both \
         sinks running together)",
        BACKLOG as f64 / ch_secs,
        BACKLOG as f64 / es_secs
    );
    println!(
        "sink lag at ~1,000 changes/s ({written} changes in 10 s, max_delay_ms = 50): \
         ClickHouse p50 {:.0} ms p99 {:.0} ms ({} samples); receiver p50 {:.0} ms p99 {:.0} ms \
         ({} samples)",
        percentile(&ch_lags, 0.5),
        percentile(&ch_lags, 0.99),
        ch_lags.len(),
        percentile(&es_lags, 0.5),
        percentile(&es_lags, 0.99),
        es_lags.len()
    );
    assert_eq!(ch_lags.len(), written, "every change seen in ClickHouse");
    assert_eq!(es_lags.len(), written, "every change at the receiver");
    assert!(percentile(&ch_lags, 0.99) < 5000.0);
    assert!(percentile(&es_lags, 0.99) < 5000.0);
}
