//! Observer test helpers: tiny local receivers (HTTP, SMTP via aiosmtpd), the runtime
//! launched from a TOML snippet, and change-log helpers on the shared [`TestDb`].
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fraiseql::metrics::ObserverMetrics;
use fraiseql::observers::{ObserverConfig, ObserverRuntime, ObserverSettings};
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::TestDb;

impl TestDb {
    pub fn pg_config(&self) -> tokio_postgres::Config {
        tokio_postgres::Config::from_str(&self.url()).unwrap()
    }

    /// A table tracked as entity `Post`.
    pub async fn create_posts(&self) {
        self.client()
            .await
            .batch_execute(
                "CREATE TABLE tb_post (
                    pk_post bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                    id uuid NOT NULL DEFAULT gen_random_uuid(),
                    title text NOT NULL,
                    published boolean NOT NULL DEFAULT false,
                    views integer NOT NULL DEFAULT 0);
                 SELECT fraiseql.track_changes('tb_post', 'Post');",
            )
            .await
            .unwrap();
    }

    /// Inserts a post, returns its id.
    pub async fn insert_post(&self, title: &str, published: bool) -> uuid::Uuid {
        self.client()
            .await
            .query_one(
                "INSERT INTO tb_post (title, published) VALUES ($1, $2) RETURNING id",
                &[&title, &published],
            )
            .await
            .unwrap()
            .get(0)
    }

    pub async fn change_pks(&self) -> Vec<i64> {
        self.client()
            .await
            .query(
                "SELECT pk FROM fraiseql.tb_entity_change_log ORDER BY pk",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    pub async fn dead_letter_count(&self) -> i64 {
        self.client()
            .await
            .query_one("SELECT count(*) FROM fraiseql.tb_observer_dead_letter", &[])
            .await
            .unwrap()
            .get(0)
    }
}

// ---------------------------------------------------------------------------------------
// HTTP receiver

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: String,
    pub at: Instant,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).expect("body is JSON")
    }
}

pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: String::new(),
        }
    }
}

type Responder = Box<dyn FnMut(&Request) -> Reply + Send>;

/// A minimal HTTP/1.1 server (keep-alive, Content-Length bodies) recording every request.
/// `stop()` closes the listener and every connection (clients then get "connection
/// refused"); `start()` binds the same port again.
pub struct HttpReceiver {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
    responder: Arc<Mutex<Responder>>,
    arrived: Arc<Notify>,
    server: Mutex<Option<JoinHandle<()>>>,
    /// Delay before each response (a slow receiver).
    delay: Arc<Mutex<Duration>>,
    /// "Down": connections are accepted and closed at once, without a response; the time of
    /// each such attempt is recorded in `refused`.
    down: Arc<std::sync::atomic::AtomicBool>,
    refused: Arc<Mutex<Vec<Instant>>>,
}

impl HttpReceiver {
    pub async fn start_ok() -> Arc<HttpReceiver> {
        Self::with(|_| Reply::status(200)).await
    }

    pub async fn with(
        responder: impl FnMut(&Request) -> Reply + Send + 'static,
    ) -> Arc<HttpReceiver> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let rx = Arc::new(HttpReceiver {
            addr,
            requests: Arc::default(),
            responder: Arc::new(Mutex::new(Box::new(responder))),
            arrived: Arc::new(Notify::new()),
            server: Mutex::new(None),
            delay: Arc::default(),
            down: Arc::default(),
            refused: Arc::default(),
        });
        rx.serve(listener);
        rx
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// While down, every connection is closed without a response (recorded in `refused()`).
    pub fn set_down(&self, down: bool) {
        self.down.store(down, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn refused(&self) -> Vec<Instant> {
        self.refused.lock().unwrap().clone()
    }

    pub fn set_delay(&self, d: Duration) {
        *self.delay.lock().unwrap() = d;
    }

    pub fn set_responder(&self, responder: impl FnMut(&Request) -> Reply + Send + 'static) {
        *self.responder.lock().unwrap() = Box::new(responder);
    }

    pub fn len(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    /// Stops listening (clients get "connection refused") and closes every connection;
    /// returns once the listener is closed.
    pub async fn stop(&self) {
        let handle = self.server.lock().unwrap().take();
        if let Some(h) = handle {
            h.abort();
            let _ = h.await;
        }
    }

    pub async fn start(&self) {
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }

    fn serve(&self, listener: TcpListener) {
        let requests = self.requests.clone();
        let responder = self.responder.clone();
        let arrived = self.arrived.clone();
        let delay = self.delay.clone();
        let (down, refused) = (self.down.clone(), self.refused.clone());
        let handle = tokio::spawn(async move {
            // Connection tasks live in this set so aborting the server closes them too.
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                if down.load(std::sync::atomic::Ordering::SeqCst) {
                    refused.lock().unwrap().push(Instant::now());
                    drop(stream);
                    continue;
                }
                while conns.try_join_next().is_some() {}
                let (requests, responder, arrived, delay) = (
                    requests.clone(),
                    responder.clone(),
                    arrived.clone(),
                    delay.clone(),
                );
                conns.spawn(async move {
                    let _ = handle_conn(stream, requests, responder, arrived, delay).await;
                });
            }
        });
        *self.server.lock().unwrap() = Some(handle);
    }

    /// Waits until at least `n` requests arrived (panics after `timeout`).
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Request> {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.arrived.notified();
            // Only the length under the lock: cloning every request on every arrival would
            // make waiting for many requests quadratic.
            if self.len() >= n {
                return self.requests();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let got = self.requests();
                panic!(
                    "expected {n} requests, got {}: {:#?}",
                    got.len(),
                    got.iter().map(|r| &r.body).collect::<Vec<_>>()
                );
            }
            let _ = tokio::time::timeout(left, notified).await;
        }
    }
}

impl Drop for HttpReceiver {
    fn drop(&mut self) {
        if let Some(h) = self.server.lock().unwrap().take() {
            h.abort();
        }
    }
}

async fn handle_conn(
    stream: TcpStream,
    requests: Arc<Mutex<Vec<Request>>>,
    responder: Arc<Mutex<Responder>>,
    arrived: Arc<Notify>,
    delay: Arc<Mutex<Duration>>,
) -> std::io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_string();
        let path = parts.next().unwrap_or_default().to_string();
        let mut headers = HashMap::new();
        loop {
            let mut h = String::new();
            r.read_line(&mut h).await?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        r.read_exact(&mut body).await?;
        let req = Request {
            method,
            path,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
            at: Instant::now(),
        };
        let reply = (responder.lock().unwrap())(&req);
        requests.lock().unwrap().push(req);
        arrived.notify_waiters();
        // A slow receiver: the request has arrived, the response takes a while.
        let pause = *delay.lock().unwrap();
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
        let mut out = format!(
            "HTTP/1.1 {} X\r\ncontent-length: {}\r\ncontent-type: application/json\r\n",
            reply.status,
            reply.body.len()
        );
        for (k, v) in &reply.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str("\r\n");
        out.push_str(&reply.body);
        w.write_all(out.as_bytes()).await?;
    }
}

// ---------------------------------------------------------------------------------------
// Runtime launcher

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestConfig {
    #[serde(default)]
    pub observer_runtime: Option<ObserverSettings>,
    #[serde(default)]
    pub observers: Vec<ObserverConfig>,
}

/// Settings tuned for fast tests.
pub fn fast_settings() -> ObserverSettings {
    ObserverSettings {
        concurrency: 4,
        poll_interval_ms: 200,
        checkpoint_interval_ms: 20,
        takeover_interval_ms: 200,
        start_from: fraiseql::observers::config::StartFrom::Beginning,
        shutdown_grace_ms: 2_000,
        ..ObserverSettings::default()
    }
}

pub struct Running {
    pub shutdown: CancellationToken,
    pub handle: JoinHandle<()>,
    pub metrics: ObserverMetrics,
    pub registry: prometheus::Registry,
}

impl Running {
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(15), self.handle)
            .await
            .expect("runtime drains within 15 s")
            .unwrap();
    }
}

/// Environment for `*_env` lookups in tests (no process-wide env mutation).
pub fn env(pairs: &[(&str, &str)]) -> fraiseql::actions::EnvLookup {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Arc::new(move |k| map.get(k).cloned())
}

pub fn parse_config(toml_src: &str) -> TestConfig {
    toml::from_str(toml_src).unwrap_or_else(|e| panic!("test config: {e}"))
}

pub fn build(
    db: &TestDb,
    toml_src: &str,
    vars: &[(&str, &str)],
) -> Result<(ObserverRuntime, prometheus::Registry), String> {
    build_with(db, toml_src, vars, None)
}

/// [`build`] with the Redis queue instead of the in-process one when `redis` is given.
pub fn build_with(
    db: &TestDb,
    toml_src: &str,
    vars: &[(&str, &str)],
    redis: Option<Arc<fraiseql::queue::redis::RedisQueue>>,
) -> Result<(ObserverRuntime, prometheus::Registry), String> {
    let cfg = parse_config(toml_src);
    let registry = prometheus::Registry::new();
    let metrics = ObserverMetrics::new(&registry).unwrap();
    let mut builder = ObserverRuntime::builder(
        cfg.observer_runtime.unwrap_or_else(fast_settings),
        cfg.observers,
        db.pool().clone(),
        db.pg_config(),
    )
    .metrics(metrics)
    .env(env(vars))
    .known_entities(vec!["Post".into(), "User".into()]);
    if let Some(q) = redis {
        builder = builder.queue(fraiseql::queue::QueueHandles::redis(q));
    }
    builder
        .build()
        .map(|r| (r, registry))
        .map_err(|e| e.to_string())
}

pub fn start(db: &TestDb, toml_src: &str, vars: &[(&str, &str)]) -> Running {
    start_with(db, toml_src, vars, None)
}

/// [`start`] with the Redis queue when `redis` is given.
pub fn start_with(
    db: &TestDb,
    toml_src: &str,
    vars: &[(&str, &str)],
    redis: Option<Arc<fraiseql::queue::redis::RedisQueue>>,
) -> Running {
    let (rt, registry) = build_with(db, toml_src, vars, redis).unwrap();
    let metrics = rt.metrics().clone();
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(rt.run(shutdown.clone()));
    Running {
        shutdown,
        handle,
        metrics,
        registry,
    }
}

/// Polls `f` until it returns true (panics after `timeout`).
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for: {what}");
}

pub fn metric(registry: &prometheus::Registry, name: &str, label: Option<(&str, &str)>) -> f64 {
    for fam in registry.gather() {
        if fam.name() != name {
            continue;
        }
        for m in fam.get_metric() {
            let ok = match label {
                None => true,
                Some((k, v)) => m
                    .get_label()
                    .iter()
                    .any(|l| l.name() == k && l.value() == v),
            };
            if ok {
                use prometheus::proto::MetricType;
                return match fam.get_field_type() {
                    MetricType::COUNTER => m.get_counter().get_value(),
                    MetricType::GAUGE => m.get_gauge().get_value(),
                    MetricType::HISTOGRAM => m.get_histogram().get_sample_count() as f64,
                    _ => 0.0,
                };
            }
        }
    }
    0.0
}

// ---------------------------------------------------------------------------------------
// TLS

/// A throwaway CA and a server certificate for 127.0.0.1, made with the openssl CLI.
/// Returns (dir, ca.pem, server.pem, server.key).
pub fn make_certs() -> (std::path::PathBuf, String, String, String) {
    make_certs_for("IP:127.0.0.1")
}

/// [`make_certs`] with the server certificate valid for `san` only (`DNS:mail.localhost`).
pub fn make_certs_for(san: &str) -> (std::path::PathBuf, String, String, String) {
    let dir = std::env::temp_dir().join(format!("fraiseql-tls-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = |f: &str| dir.join(f).to_string_lossy().into_owned();
    std::fs::write(
        p("ext.cnf"),
        format!("subjectAltName={san}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n"),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl CLI");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut args = vec!["req", "-x509"];
    args.extend(ec);
    let (ca_key, ca, key, csr, cert, ext) = (
        p("ca.key"),
        p("ca.pem"),
        p("server.key"),
        p("server.csr"),
        p("server.pem"),
        p("ext.cnf"),
    );
    args.extend([
        "-keyout",
        &ca_key,
        "-out",
        &ca,
        "-days",
        "1",
        "-subj",
        "/CN=FraiseQL Test CA",
    ]);
    run(&args);
    let mut args = vec!["req"];
    args.extend(ec);
    args.extend(["-keyout", &key, "-out", &csr, "-subj", "/CN=127.0.0.1"]);
    run(&args);
    run(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-out",
        &cert,
        "-days",
        "1",
        "-extfile",
        &ext,
    ]);
    (dir, ca, cert, key)
}

/// Commits `n` posts (`p0`, `p1`, …), one per transaction, pausing `pause` after every
/// `every`-th: a steady stream of changes while a test kills something.
pub fn write_posts(
    pool: deadpool_postgres::Pool,
    n: usize,
    every: usize,
    pause: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let c = pool.get().await.unwrap();
        for i in 0..n {
            c.execute(
                "INSERT INTO tb_post (title, published) VALUES ($1, true)",
                &[&format!("p{i}")],
            )
            .await
            .unwrap();
            if i % every == 0 {
                tokio::time::sleep(pause).await;
            }
        }
    })
}
