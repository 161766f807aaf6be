//! The appliance (issue 2): HTTP health and readiness, metrics, graceful shutdown,
//! configuration errors, `db init`, the dashboard and the static binary.

use crate::common;

use std::time::{Duration, Instant};

use common::{Proxy, TestDb, TestServer, bin, get};

#[tokio::test]
async fn health_ready_metrics_and_errors() {
    // The metric registry is process-wide: the exact counts below need a process of their
    // own (the real binary), whatever runner and concurrency the suite uses.
    let db = TestDb::new().await;
    let server = common::ServeProcess::start(&db.url(), &[]).await;

    let (status, body) = get(&format!("{}/healthz", server.base)).await;
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));
    let (status, body) = get(&format!("{}/readyz", server.base)).await;
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ready"}"#));

    let (status, _) = get(&format!("{}/nope", server.base)).await;
    assert_eq!(status, 404);
    let r = common::http()
        .post(format!("{}/healthz", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 405);
    assert_eq!(r.headers()["allow"], "GET, HEAD");

    let (status, text) = get(&format!("{}/metrics", server.base)).await;
    assert_eq!(status, 200);
    for name in [
        "fraiseql_http_requests_total{route=\"/healthz\",status=\"200\"} 1",
        "fraiseql_http_requests_total{route=\"/healthz\",status=\"405\"} 1",
        "fraiseql_http_requests_total{route=\"other\",status=\"404\"} 1",
        "fraiseql_http_request_duration_seconds_bucket{route=\"/readyz\"",
        &format!(
            "fraiseql_db_pool_max_connections {}",
            fraiseql::db::DatabaseConfig::default().effective_pool_size()
        ),
        "fraiseql_db_up 1",
        "fraiseql_process_resident_memory_bytes",
        "fraiseql_build_info",
    ] {
        assert!(text.contains(name), "/metrics lacks {name}:\n{text}");
    }
    drop(server);
}

#[tokio::test]
async fn database_down_at_start_then_up_then_gone_again() {
    let db = TestDb::new().await;
    let proxy = Proxy::start("127.0.0.1:5432".parse().unwrap()).await;
    proxy.down();
    let mut config = db.config();
    config.database.url = format!("postgres://postgres@{}/{}", proxy.addr, db.name());
    config.database.connect_timeout_ms = 500;
    let server = TestServer::start(config).await;

    // Down at start: serve keeps running, /readyz says why.
    let (status, body) = get(&server.url("/readyz")).await;
    assert_eq!(status, 503, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "unavailable");
    assert!(
        v["reason"].as_str().unwrap().contains("database"),
        "reason names the database: {body}"
    );
    assert_eq!(get(&server.url("/healthz")).await.0, 200);

    proxy.up();
    assert!(
        common::eventually(Duration::from_secs(10), || async {
            get(&server.url("/readyz")).await.0 == 200
        })
        .await,
        "ready once the database is back"
    );

    // Gone again: pooled connections are broken; readiness reports it, then recovers.
    proxy.down();
    assert!(
        common::eventually(Duration::from_secs(10), || async {
            get(&server.url("/readyz")).await.0 == 503
        })
        .await
    );
    proxy.up();
    assert!(
        common::eventually(Duration::from_secs(10), || async {
            get(&server.url("/readyz")).await.0 == 200
        })
        .await
    );
    server.stop().await;
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let db = TestDb::new().await;
    let proxy = Proxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let mut config = db.config();
    config.database.url = format!("postgres://postgres@{}/{}", proxy.addr, db.name());
    let server = TestServer::start(config).await;
    assert_eq!(get(&server.url("/readyz")).await.0, 200);
    // Make the next database connection take ~1 s, so /readyz is in flight at shutdown.
    proxy.down();
    proxy.up();
    proxy.set_delay(1000);
    let url = server.url("/readyz");
    let in_flight = tokio::spawn(async move { get(&url).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopping = Instant::now();
    let addr = server.addr;
    server.shutdown.cancel();
    let (status, _) = in_flight.await.unwrap();
    assert_eq!(status, 200, "the in-flight request finished");
    server.stopped(Duration::from_secs(10)).await;
    assert!(stopping.elapsed() < Duration::from_secs(5));
    // No longer accepting.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn binary_serves_and_exits_zero_on_sigterm() {
    let db = TestDb::new().await;
    let mut child = common::ServeProcess::start(&db.url(), &[]).await;
    let pid = child.child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::task::spawn_blocking(move || child.child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

/// Runs the binary with `args` and `env`; returns (exit code, stderr).
fn run_bin(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = bin();
    cmd.args(args).env_remove("DATABASE_URL");
    for (k, _) in std::env::vars() {
        if k.starts_with("FRAISEQL_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn six_kinds_of_bad_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let unknown = write(
        "unknown.toml",
        b"[server]\nlisten = \"127.0.0.1:1\"\nlisten_adress = \"x\"\n",
    );
    let wrong_type = write("wrong.toml", b"[database]\npool_size = \"sixteen\"\n");
    let bad_url = write(
        "url.toml",
        b"[database]\nurl = \"mysql://app:hunter2@db.example/app\"\n",
    );
    let bad_listen = write("listen.toml", b"[server]\nlisten = \"localhost-8080\"\n");
    let missing = dir.path().join("missing.toml");
    let unreadable = dir.path().join("a-directory.toml");
    std::fs::create_dir(&unreadable).unwrap();

    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "unknown key",
            unknown.clone(),
            vec![&unknown, "unknown field `listen_adress`", "line 3"],
        ),
        (
            "wrong type",
            wrong_type.clone(),
            vec![&wrong_type, "pool_size", "expected a non-negative integer"],
        ),
        (
            "bad database URL",
            bad_url.clone(),
            vec!["database.url", &bad_url, "invalid PostgreSQL URL"],
        ),
        (
            "bad listen address",
            bad_listen.clone(),
            vec![&bad_listen, "listen", "invalid socket address"],
        ),
        (
            "missing file",
            missing.to_str().unwrap().into(),
            vec!["missing.toml: not found"],
        ),
        (
            "unreadable file",
            unreadable.to_str().unwrap().into(),
            vec!["a-directory.toml: cannot be read"],
        ),
    ];
    for (what, path, expected) in cases {
        let (code, stderr) = run_bin(&["--config", &path, "check"], &[]);
        println!("{what}: {}", stderr.trim());
        assert_eq!(code, 2, "{what}: exit code 2, got {code}: {stderr}");
        for e in expected {
            assert!(stderr.contains(e), "{what}: expected {e:?} in {stderr:?}");
        }
        assert!(
            !stderr.contains("hunter2"),
            "{what}: secret printed: {stderr}"
        );
    }

    // Environment overrides are checked the same way.
    let (code, stderr) = run_bin(&["check"], &[("FRAISEQL_SERVER_GRACE_PERIOD_MS", "soon")]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("FRAISEQL_SERVER_GRACE_PERIOD_MS") && stderr.contains("integer"),
        "{stderr}"
    );
    let (code, stderr) = run_bin(&["check"], &[("FRAISEQL_DATABSE_URL", "x")]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("FRAISEQL_DATABSE_URL") && stderr.contains("unknown section"),
        "{stderr}"
    );
}

#[tokio::test]
async fn check_reports_each_item_and_fails_when_database_is_unreachable() {
    let db = TestDb::new().await;
    let out = bin()
        .arg("check")
        .env("FRAISEQL_DATABASE_URL", db.url())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("ok    config"), "{stdout}");
    assert!(
        stdout.contains("ok    database") && stdout.contains("PostgreSQL"),
        "{stdout}"
    );

    let out = bin()
        .arg("check")
        .env(
            "FRAISEQL_DATABASE_URL",
            "postgres://app:s3cret@127.0.0.1:1/x",
        )
        .env("FRAISEQL_DATABASE_CONNECT_TIMEOUT_MS", "500")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAIL  database postgres://app:***@127.0.0.1:1/x"),
        "{stdout}"
    );
    assert!(!stdout.contains("s3cret"));
}

const OBJECTS_SQL: &str = "SELECT
    (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'fraiseql'),
    (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'fraiseql'),
    (SELECT count(*) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'fraiseql' AND NOT t.tgisinternal),
    (SELECT count(*) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE n.nspname = 'fraiseql'),
    (SELECT count(*) FROM fraiseql.schema_migrations)";

async fn object_counts(db: &TestDb) -> Vec<i64> {
    let row = db.client().await.query_one(OBJECTS_SQL, &[]).await.unwrap();
    (0..5).map(|i| row.get::<_, i64>(i)).collect()
}

#[tokio::test]
async fn db_init_twice_and_concurrently_changes_nothing() {
    let db = TestDb::empty().await;
    let init = || {
        let mut cmd = tokio::process::Command::new(common::bin_path());
        cmd.args(["db", "init"])
            .env("FRAISEQL_DATABASE_URL", db.url());
        cmd
    };
    // Twice at once on an empty database.
    let (a, b) = tokio::join!(init().output(), init().output());
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
    let applied: Vec<String> = [&a, &b]
        .iter()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .collect();
    assert_eq!(
        applied
            .iter()
            .filter(|s| s.contains("applied 0001_core"))
            .count(),
        1,
        "exactly one run applied the migration: {applied:?}"
    );
    let first = object_counts(&db).await;
    assert!(first[0] >= 3 && first[1] >= 5 && first[2] == 1, "{first:?}");

    // Then twice more in sequence: nothing changes.
    for _ in 0..2 {
        let out = init().output().await.unwrap();
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains("0 applied"));
    }
    assert_eq!(object_counts(&db).await, first);

    // What it created works: a tracked table writes the change log and notifies.
    db.batch(
        "CREATE TABLE tb_thing (pk_thing bigint GENERATED ALWAYS AS IDENTITY, id uuid DEFAULT gen_random_uuid(), name text);
         SELECT fraiseql.track_changes('tb_thing', 'Thing');
         INSERT INTO tb_thing (name) VALUES ('a');
         UPDATE tb_thing SET name = 'b';
         UPDATE tb_thing SET name = 'b';
         DELETE FROM tb_thing;",
    )
    .await;
    let rows = db
        .client()
        .await
        .query(
            "SELECT op, changed_fields, before->>'name', after->>'name', entity_id IS NOT NULL
               FROM fraiseql.tb_entity_change_log WHERE entity = 'Thing' ORDER BY pk",
            &[],
        )
        .await
        .unwrap();
    type LogRow = (
        String,
        Option<Vec<String>>,
        Option<String>,
        Option<String>,
        bool,
    );
    let seen: Vec<LogRow> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    assert_eq!(
        seen,
        vec![
            (
                "INSERT".into(),
                Some(vec!["id".into(), "name".into(), "pk_thing".into()]),
                None,
                Some("a".into()),
                true
            ),
            (
                "UPDATE".into(),
                Some(vec!["name".into()]),
                Some("a".into()),
                Some("b".into()),
                true
            ),
            ("DELETE".into(), None, Some("b".into()), None, true),
        ],
        "a no-op UPDATE writes nothing"
    );
    let row = db
        .client()
        .await
        .query_one(
            "SELECT (fraiseql.mutation_ok(gen_random_uuid(), 'Thing', '{\"a\":1}')).succeeded,
                    (fraiseql.mutation_err('NOT_FOUND', 'no such thing')).error_class",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0));
    assert_eq!(row.get::<_, String>(1), "NOT_FOUND");
}

/// Metric names a PromQL expression refers to: identifiers starting with `fraiseql_`.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(pos) = expr[i..].find("fraiseql_") {
        let start = i + pos;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        let preceded =
            start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        if !preceded {
            names.push(expr[start..end].to_string());
        }
        i = end;
    }
    names
}

/// The selectors of a PromQL expression: each `fraiseql_*` name with the label matchers in
/// its braces, except the dashboard's own `job`/`instance` variables.
fn selectors(expr: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut out = Vec::new();
    let mut rest = expr;
    for name in metric_names(expr) {
        let at = rest.find(&name).expect("metric_names found it");
        rest = &rest[at + name.len()..];
        let mut matchers = Vec::new();
        if let Some(braced) = rest.strip_prefix('{') {
            let inner = &braced[..braced.find('}').expect("closing brace")];
            for m in inner.split(',') {
                let (label, value) = m.split_once("=~").or_else(|| m.split_once('=')).unwrap();
                let value = value.trim_matches('"');
                if !value.starts_with('$') {
                    matchers.push((label.to_string(), value.to_string()));
                }
            }
        }
        out.push((name, matchers));
    }
    out
}

/// Whether `value` matches a PromQL regex made of literal characters and `.` (all the
/// dashboard uses; anything richer must extend this function, not pass unchecked).
fn matches_simple_regex(pattern: &str, value: &str) -> bool {
    assert!(
        pattern
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '/'),
        "extend matches_simple_regex for {pattern:?}"
    );
    pattern.len() == value.len()
        && pattern
            .chars()
            .zip(value.chars())
            .all(|(p, v)| p == '.' || p == v)
}

/// What of the dashboard's selectors `exported` (a /metrics text) has no series for.
fn unanswered(exprs: &[String], exported: &str) -> Vec<String> {
    let mut missing = Vec::new();
    for expr in exprs {
        for (name, matchers) in selectors(expr) {
            let answered = exported.lines().any(|l| {
                let labels = if let Some(rest) = l.strip_prefix(&format!("{name}{{")) {
                    &rest[..rest.find('}').unwrap_or(rest.len())]
                } else if l.starts_with(&format!("{name} ")) {
                    ""
                } else {
                    return false;
                };
                matchers.iter().all(|(label, pattern)| {
                    labels.split(',').any(|kv| {
                        kv.split_once('=').is_some_and(|(k, v)| {
                            k == label && matches_simple_regex(pattern, v.trim_matches('"'))
                        })
                    })
                })
            });
            if !answered {
                missing.push(format!("{name} {matchers:?} (in `{expr}`)"));
            }
        }
    }
    missing
}

#[test]
fn selectors_read_names_and_matchers() {
    let expr = r#"sum(rate(fraiseql_http_requests_total{job=~"$job",status=~"5.."}[1m])) / sum(fraiseql_db_up)"#;
    assert_eq!(
        selectors(expr),
        vec![
            (
                "fraiseql_http_requests_total".to_string(),
                vec![("status".to_string(), "5..".to_string())]
            ),
            ("fraiseql_db_up".to_string(), vec![])
        ]
    );
    let exported =
        "fraiseql_http_requests_total{route=\"/graphql\",status=\"200\"} 3\nfraiseql_db_up 1\n";
    assert_eq!(unanswered(&[expr.to_string()], exported).len(), 1);
    let exported =
        format!("{exported}fraiseql_http_requests_total{{route=\"other\",status=\"503\"}} 0\n");
    assert!(unanswered(&[expr.to_string()], &exported).is_empty());
}

#[tokio::test]
async fn dashboard_only_uses_exported_metrics() {
    let out = bin().arg("dashboard").output().unwrap();
    assert!(out.status.success());
    let dashboard: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("dashboard is JSON");
    let mut exprs = Vec::new();
    fn collect(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    if k == "expr" || k == "query" {
                        if let Some(s) = v.as_str() {
                            out.push(s.to_string());
                        }
                    } else {
                        collect(v, out);
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| collect(v, out)),
            _ => {}
        }
    }
    collect(&dashboard, &mut exprs);
    assert!(exprs.len() >= 6, "the dashboard has panels: {exprs:?}");

    let db = TestDb::new().await;
    db.load_blog().await;
    let schema = common::crate_path("examples/blog/schema.json");
    let child = common::ServeProcess::start(
        &db.url(),
        &[("FRAISEQL_GRAPHQL_SCHEMA", schema.to_str().unwrap())],
    )
    .await;
    let base = child.base.clone();

    // A fresh process, before any request but this scrape: every expression has a series
    // (a dashboard shows 0, not "No data").
    let (_, fresh) = get(&format!("{base}/metrics")).await;
    let missing = unanswered(&exprs, &fresh);
    assert!(
        missing.is_empty(),
        "a fresh serve has no series for these dashboard selectors: {missing:#?}"
    );

    // And after traffic of every kind.
    get(&format!("{base}/healthz")).await;
    get(&format!("{base}/nope")).await;
    for query in ["{ users(limit: 1) { id } }", "{ nope }"] {
        common::http()
            .post(format!("{base}/graphql"))
            .json(&serde_json::json!({ "query": query }))
            .send()
            .await
            .unwrap();
    }
    let (_, exported) = get(&format!("{base}/metrics")).await;
    drop(child);
    let missing = unanswered(&exprs, &exported);
    assert!(
        missing.is_empty(),
        "dashboard names metrics /metrics does not export: {missing:#?}"
    );
}

/// An empty root holding only `dist/fraiseql` (as the `FROM scratch` image does): no
/// `/etc/hosts`, no `/etc/resolv.conf`, no NSS modules.
fn empty_root_with_static_binary() -> tempfile::TempDir {
    let dist = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("dist/fraiseql");
    assert!(
        dist.exists(),
        "dist/fraiseql missing: `make static` builds it (make test does)"
    );
    let readelf = std::process::Command::new("readelf")
        .arg("-d")
        .arg(&dist)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&readelf.stdout);
    assert!(
        text.contains("There is no dynamic section"),
        "readelf -d: {text}"
    );
    let root = tempfile::tempdir().unwrap();
    std::fs::copy(&dist, root.path().join("fraiseql")).unwrap();
    root
}

/// Runs `/fraiseql args` chrooted into `root` with nothing but `env` in its environment.
fn run_in_root(
    root: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> std::process::Output {
    std::process::Command::new("/usr/sbin/chroot")
        .arg(root)
        .arg("/fraiseql")
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

#[test]
fn static_binary_runs_alone_in_a_chroot() {
    let root = empty_root_with_static_binary();
    let env = [(
        "FRAISEQL_DATABASE_URL",
        "postgres://postgres@127.0.0.1:5432/postgres",
    )];
    let out = run_in_root(root.path(), &["--version"], &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let version = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        version.trim(),
        format!("fraiseql {}", env!("CARGO_PKG_VERSION"))
    );
    let out = run_in_root(root.path(), &["check"], &env);
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!(
        "chroot check:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("ok    database postgres://postgres@127.0.0.1:5432/postgres: PostgreSQL")
    );
}

/// Every client resolves names the same way: in an empty root (no `/etc/hosts`, no NSS,
/// only the /dev/random and /dev/urandom a container runtime adds),
/// `check` reaches PostgreSQL, Redis and NATS by `localhost`.
#[tokio::test]
async fn static_binary_reaches_redis_and_nats_by_localhost_in_a_chroot() {
    let root = empty_root_with_static_binary();
    // What every container runtime puts into even a `FROM scratch` image: the queue's and
    // NATS's jittered backoffs seed their RNG from it (a static glibc binary has no
    // `getrandom` symbol for the getrandom crate to find, so it reads /dev/urandom).
    // It polls /dev/random once first, to wait for the kernel's pool.
    std::fs::create_dir(root.path().join("dev")).unwrap();
    for (name, minor) in [("random", "8"), ("urandom", "9")] {
        let mknod = std::process::Command::new("mknod")
            .args(["-m", "444"])
            .arg(root.path().join("dev").join(name))
            .args(["c", "1", minor])
            .status()
            .unwrap();
        assert!(mknod.success(), "mknod /dev/{name} (run the tests as root)");
    }
    let redis = common::redis::Cleanup::new(common::redis::REDIS_URL);
    let prefix = redis.prefix();
    let nats = common::nats::test_config(common::nats::SHARED_URL);
    let env = [
        (
            "FRAISEQL_DATABASE_URL",
            "postgres://postgres@localhost:5432/postgres",
        ),
        ("FRAISEQL_QUEUE_BACKEND", "redis"),
        ("FRAISEQL_QUEUE_URL", "redis://localhost:6379/"),
        ("FRAISEQL_QUEUE_KEY_PREFIX", prefix.as_str()),
        ("FRAISEQL_NATS_URL", "nats://localhost:4222"),
        ("FRAISEQL_NATS_STREAM", nats.stream.as_str()),
        ("FRAISEQL_NATS_SUBJECT_PREFIX", nats.subject_prefix.as_str()),
    ];
    // A child process: blocking this test's runtime thread for it is harmless.
    let out = run_in_root(root.path(), &["check"], &env);
    common::nats::delete_stream(&nats.url, &nats.stream).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!(
        "chroot check:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("ok    database postgres://postgres@localhost:5432/postgres: PostgreSQL"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "ok    redis queue redis://localhost:6379/ (prefix {prefix}): 0 jobs live, 0 dead letters"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "ok    nats nats://localhost:4222 (stream {}): JetStream stream holds 0 events",
            nats.stream
        )),
        "{stdout}"
    );
    assert!(out.status.success(), "{stdout}");
}

#[tokio::test]
async fn tls_to_postgres_verifies_the_server_certificate() {
    // Debian's PostgreSQL serves TLS with the self-signed "snakeoil" certificate for
    // `localhost`: trusting that file must work, the bundled public roots must refuse it.
    let snakeoil = "/etc/ssl/certs/ssl-cert-snakeoil.pem";
    assert!(
        std::path::Path::new(snakeoil).exists(),
        "{snakeoil} (Debian ssl-cert)"
    );
    let db = TestDb::new().await;
    let mut cfg = db.config().database;
    cfg.url = format!(
        "postgres://postgres@localhost:5432/{}?sslmode=verify-full",
        db.name()
    );
    cfg.tls_ca_file = snakeoil.into();
    let pool = fraiseql::db::pool(&cfg).unwrap();
    let client = pool
        .get()
        .await
        .expect("TLS connection with the trusted CA");
    let ssl: bool = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(ssl, "the connection is encrypted");

    cfg.tls_ca_file = String::new();
    let pool = fraiseql::db::pool(&cfg).unwrap();
    let err = fraiseql::db::ping(&pool, Duration::from_secs(5))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("certificate"), "{err}");
}

/// The systemd units as shipped (binary path aside): `systemd-analyze verify` finds
/// nothing to say, and `systemd-analyze security` rates each one's exposure low.
#[test]
fn systemd_units_verify_and_are_sandboxed() {
    let dir = tempfile::tempdir().unwrap();
    let bin = common::bin_path();
    for role in ["serve", "flight", "worker"] {
        let name = format!("fraiseql-{role}.service");
        let unit =
            std::fs::read_to_string(common::crate_path(&format!("packaging/systemd/{name}")))
                .unwrap();
        assert!(
            unit.contains(&format!(
                "ExecStart=/usr/local/bin/fraiseql --config /etc/fraiseql/fraiseql.toml {role}\n"
            )),
            "{name}: {unit}"
        );
        for key in [
            "DynamicUser=yes",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "CapabilityBoundingSet=\n",
        ] {
            assert!(unit.contains(key), "{name} lacks {key}");
        }
        // verify checks that ExecStart is executable: point it at the binary under test.
        let path = dir.path().join(&name);
        std::fs::write(
            &path,
            unit.replace("/usr/local/bin/fraiseql", bin.to_str().unwrap()),
        )
        .unwrap();
        let out = std::process::Command::new("systemd-analyze")
            .arg("verify")
            .arg(&path)
            .output()
            .expect("systemd-analyze (Debian's systemd package)");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.trim().is_empty(),
            "{name}: {stderr}"
        );
        let out = std::process::Command::new("systemd-analyze")
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(&path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let level: f64 = text
            .lines()
            .find_map(|l| {
                l.split_once("Overall exposure level for ")?
                    .1
                    .split_once(": ")?
                    .1
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("{name}: no exposure level in {text}"));
        println!("{name}: exposure {level}");
        assert!(level <= 2.0, "{name}: exposure {level}\n{text}");
    }
}

/// The Homebrew formula builds from source with Rust and tests the binary it installed;
/// rendered as `make dist` renders it, it is valid Ruby (`ruby -c`), with no placeholder left.
#[test]
fn homebrew_formula_builds_from_source_and_is_valid_ruby() {
    let template =
        std::fs::read_to_string(common::crate_path("packaging/homebrew/fraiseql.rb.in")).unwrap();
    for needed in [
        "depends_on \"rust\" => :build",
        "system \"cargo\", \"install\", *std_cargo_args",
        "test do",
        "#{bin}/fraiseql --version",
    ] {
        assert!(template.contains(needed), "the formula lacks {needed}");
    }
    let rendered = template
        .replace("@VERSION@", env!("CARGO_PKG_VERSION"))
        .replace("@SHA256@", &"ab".repeat(32));
    assert!(!rendered.contains('@'), "{rendered}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fraiseql.rb");
    std::fs::write(&path, rendered).unwrap();
    let out = std::process::Command::new("ruby")
        .arg("-c")
        .arg(&path)
        .output()
        .expect("ruby (Debian's ruby package)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "Syntax OK");
}
