//! The shared integration-test harness: a fresh PostgreSQL database per test, the role
//! started in-process on port 0 or the real binary as a child process, a TCP proxy to cut
//! and restore a service connection, and small HTTP helpers.
//!
//! Everything a test creates is dropped when its guard goes out of scope, so tests run in
//! parallel and leave nothing behind.
#![allow(dead_code)]

mod blog;
pub mod flight;
pub mod jwt;
pub mod nats;
pub mod observers;
pub mod redis;
#[allow(unused_imports)]
pub use blog::*;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use deadpool_postgres::Pool;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use fraiseql::config::Config;

/// Change-log reads hold back the rows after the oldest running transaction anywhere in the
/// PostgreSQL cluster (`fraiseql::db::changelog`), so a test that keeps a writing
/// transaction open for seconds takes this lock exclusively ([`hold_change_log`]), and a
/// test that expects its change-log rows promptly shares it ([`read_change_log`]).
static CHANGE_LOG: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

pub async fn hold_change_log() -> tokio::sync::RwLockWriteGuard<'static, ()> {
    CHANGE_LOG.write().await
}

pub async fn read_change_log() -> tokio::sync::RwLockReadGuard<'static, ()> {
    CHANGE_LOG.read().await
}

/// Waits until no change-log row of `db` is held back by an older transaction still
/// running elsewhere in the cluster (other tests' CREATE/DROP DATABASE take seconds under
/// load), so a read that follows sees every row already written.
pub async fn change_log_settled(db: &TestDb) {
    let c = db.client().await;
    for _ in 0..600 {
        let held: i64 = c
            .query_one(
                "SELECT count(*) FROM fraiseql.tb_entity_change_log \
                 WHERE txid >= pg_snapshot_xmin(pg_current_snapshot())",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if held == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("change-log rows still held back by a running transaction after 30 s");
}

pub const ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The binary under test.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fraiseql"))
}

/// `fraiseql --config <config> dlq list --json` against `db_url`: the dead letters of the
/// configured store (Redis with `[queue] backend = "redis"`), as JSON. Panics if it fails.
pub fn dlq_list(config: &str, db_url: &str) -> serde_json::Value {
    let out = bin()
        .args(["--config", config, "dlq", "list", "--json"])
        .env("FRAISEQL_DATABASE_URL", db_url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "dlq list: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("dlq list --json prints JSON")
}

pub fn bin_path() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_fraiseql"))
}

async fn admin() -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(ADMIN_URL, tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL at 127.0.0.1:5432 (start it: see README)");
    tokio::spawn(conn);
    client
}

/// A database created for one test and dropped (with FORCE) when this guard drops.
pub struct TestDb {
    name: String,
    pool: Pool,
}

impl TestDb {
    /// An empty database.
    pub async fn empty() -> TestDb {
        let name = format!("fraiseql_t_{}", uuid::Uuid::new_v4().simple());
        admin()
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create test database");
        let cfg = fraiseql::db::DatabaseConfig {
            url: format!("postgres://postgres@127.0.0.1:5432/{name}"),
            pool_size: 8,
            ..Default::default()
        };
        let pool = fraiseql::db::pool(&cfg).expect("pool");
        TestDb { name, pool }
    }

    /// A database with FraiseQL's own schema (`db init`) applied.
    pub async fn new() -> TestDb {
        let db = Self::empty().await;
        let mut client = db.pool.get().await.expect("pool connection");
        fraiseql::db::migrate::run(&mut client)
            .await
            .expect("migrations apply");
        db
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:5432/{}", self.name)
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub async fn client(&self) -> deadpool_postgres::Client {
        self.pool.get().await.expect("pool connection")
    }

    /// Runs SQL text (several statements allowed).
    pub async fn batch(&self, sql: &str) {
        self.client()
            .await
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("SQL failed: {e:?}"));
    }

    /// Runs a SQL file of this crate (e.g. `examples/blog/seed.sql`).
    /// The first column of every row `sql` returns, as text (catalog lookups, EXPLAIN).
    pub async fn texts(&self, sql: &str) -> Vec<String> {
        let client = self.client().await;
        let rows = client
            .query(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        rows.iter().map(|r| r.get(0)).collect()
    }

    pub async fn run_file(&self, rel: &str) {
        let sql = std::fs::read_to_string(crate_path(rel)).expect("SQL file");
        self.batch(&sql).await;
    }

    /// A config pointing at this database, with everything else at its default.
    pub fn config(&self) -> Config {
        let mut c = Config::default();
        c.database.url = self.url();
        c.server.grace_period_ms = 5_000;
        c
    }

    /// [`TestDb::config`] serving the blog example's schema.
    pub fn blog_config(&self) -> Config {
        let mut c = self.config();
        c.graphql.schema = crate_path("examples/blog/schema.json")
            .display()
            .to_string();
        c
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        self.pool.close();
        admin_batch_on_drop(vec![format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )]);
    }
}

/// Runs `statements` as the admin, ignoring errors, from a `Drop`: it runs inside the
/// test's runtime, so a fresh thread with its own runtime avoids blocking it.
pub fn admin_batch_on_drop(statements: Vec<String>) {
    let _ = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            if let Ok((client, conn)) =
                tokio_postgres::connect(ADMIN_URL, tokio_postgres::NoTls).await
            {
                let h = tokio::spawn(conn);
                for sql in statements {
                    let _ = client.batch_execute(&sql).await;
                }
                drop(client);
                let _ = h.await;
            }
        });
    })
    .join();
}

/// Path of a file of this crate.
pub fn crate_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// `serve` running in-process on an ephemeral port.
pub struct TestServer {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    pub async fn start(config: Config) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(fraiseql::roles::serve::run_on(
            listener,
            config,
            shutdown.clone(),
        ));
        TestServer {
            addr,
            shutdown,
            handle: Some(handle),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Requests shutdown and waits for `run_on` to return Ok.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.stopped(Duration::from_secs(15)).await;
    }

    /// Waits for the server to return Ok (after shutdown was requested elsewhere).
    pub async fn stopped(mut self, within: Duration) {
        let handle = self.handle.take().expect("not yet joined");
        tokio::time::timeout(within, handle)
            .await
            .expect("server stops within its grace period")
            .expect("server task")
            .expect("server returns Ok");
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The real binary running `serve` on a free port, killed when dropped.
pub struct ServeProcess {
    pub child: std::process::Child,
    pub base: String,
}

impl ServeProcess {
    /// Starts `fraiseql serve` against `db_url` with extra `env`, and waits until it answers.
    pub async fn start(db_url: &str, env: &[(&str, &str)]) -> ServeProcess {
        Self::start_role(&["serve"], db_url, env).await
    }

    /// Starts the binary with `args` (global flags, a role and its flags) followed by
    /// `--listen 127.0.0.1:<free port>`, and waits until its `/readyz` answers 200.
    pub async fn start_role(args: &[&str], db_url: &str, env: &[(&str, &str)]) -> ServeProcess {
        let port = free_port();
        let mut cmd = bin();
        cmd.args(args)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("FRAISEQL_DATABASE_URL", db_url)
            .env("FRAISEQL_LOG", "warn");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start fraiseql");
        let base = format!("http://127.0.0.1:{port}");
        let url = format!("{base}/readyz");
        let ready =
            eventually(Duration::from_secs(15), || {
                let url = url.clone();
                async move {
                    matches!(http().get(&url).send().await, Ok(r) if r.status().as_u16() == 200)
                }
            })
            .await;
        assert!(ready, "fraiseql {args:?} became ready on {base}");
        ServeProcess { child, base }
    }

    /// Sends SIGTERM and waits (up to `limit`) for the exit status.
    pub fn terminate(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The value of one Prometheus sample from `/metrics` (`name{labels}` as printed), or 0.
    pub async fn metric(&self, series: &str) -> f64 {
        let (_, text) = get(&format!("{}/metrics", self.base)).await;
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0.0)
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago (for child processes that must bind it themselves).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

pub fn http() -> reqwest::Client {
    // reqwest is built without a default TLS provider (the binary chooses ring).
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// GET `url`; returns status and body text.
pub async fn get(url: &str) -> (u16, String) {
    let r = http().get(url).send().await.expect("request");
    let status = r.status().as_u16();
    (status, r.text().await.unwrap())
}

/// A TCP forwarder to a real service that a test can cut (`down`) and restore (`up`), and
/// slow down, to see how FraiseQL behaves when the service goes away or lags.
pub struct Proxy {
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    delay_ms: Arc<std::sync::atomic::AtomicU64>,
    cut: Arc<tokio::sync::Notify>,
    task: JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let delay_ms = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let cut = Arc::new(tokio::sync::Notify::new());
        let (up2, delay2, cut2) = (up.clone(), delay_ms.clone(), cut.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                if !up2.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let delay = delay2.load(Ordering::SeqCst);
                let cut = cut2.clone();
                tokio::spawn(async move {
                    if delay > 0 {
                        tokio::time::sleep(Duration::from_millis(delay)).await;
                    }
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.notified() => {}
                    }
                });
            }
        });
        Proxy {
            addr,
            up,
            delay_ms,
            cut,
            task,
        }
    }

    /// Refuses new connections and cuts the open ones.
    pub fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.cut.notify_waiters();
    }

    pub fn up(&self) {
        self.up.store(true, Ordering::SeqCst);
    }

    /// Delays each new connection before it reaches the service.
    pub fn set_delay(&self, ms: u64) {
        self.delay_ms.store(ms, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Polls `check` every 50 ms until it returns true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
