//! Integration-test harness for the Flight role: a fresh PostgreSQL database per test (the
//! main crate's `TestDb` pattern, dropped WITH (FORCE)), the Flight server started
//! in-process on port 0, and the pyarrow client run as a subprocess
//! (`tests/python/flight_tool.py`), whose JSON output the tests compare with rows read
//! through tokio-postgres.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use fraiseql::flight::{FlightConfig, FlightServer, GraphQLSource, RegistryHandle};
use fraiseql::metrics::FlightMetrics;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const TOKEN: &str = "test-token-0123456789";

use super::TestDb;

/// A config with the test token.
pub fn config() -> FlightConfig {
    FlightConfig {
        tokens: vec![TOKEN.into()],
        ..Default::default()
    }
}

/// The Flight server running in-process on an ephemeral port.
pub struct TestFlight {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub registry: RegistryHandle,
    pub metrics: FlightMetrics,
    pub prometheus: prometheus::Registry,
    handle: Option<JoinHandle<Result<(), fraiseql::flight::FlightError>>>,
}

impl TestFlight {
    pub async fn start(db: &TestDb, cfg: FlightConfig) -> TestFlight {
        Self::start_with(db, cfg, None).await
    }

    /// A server whose `follow` streams poll every 100 ms.
    pub async fn start_following(db: &TestDb, cfg: FlightConfig) -> TestFlight {
        Self::start(
            db,
            FlightConfig {
                follow_poll_ms: 100,
                ..cfg
            },
        )
        .await
    }

    pub async fn start_with(
        db: &TestDb,
        cfg: FlightConfig,
        graphql: Option<Arc<dyn GraphQLSource>>,
    ) -> TestFlight {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let prometheus = prometheus::Registry::new();
        let metrics = FlightMetrics::register(&prometheus).unwrap();
        let mut server = FlightServer::new(cfg, db.pool().clone())
            .expect("valid config")
            .with_metrics(metrics.clone());
        if let Some(g) = graphql {
            server = server.with_graphql(g);
        }
        let registry = server.registry_handle();
        // Load the registry before the first call so tests are deterministic.
        registry.refresh().await.expect("registry loads");
        let handle = tokio::spawn(server.serve(listener, shutdown.clone()));
        TestFlight {
            addr,
            shutdown,
            registry,
            metrics,
            prometheus,
            handle: Some(handle),
        }
    }

    pub fn port(&self) -> String {
        self.addr.port().to_string()
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        let h = self.handle.take().unwrap();
        tokio::time::timeout(Duration::from_secs(10), h)
            .await
            .expect("flight stops")
            .expect("task")
            .expect("flight returns Ok");
    }
}

impl Drop for TestFlight {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub fn python_script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(name)
}

/// Runs `tests/python/flight_tool.py ARGS` (pyarrow) and parses its JSON output.
pub async fn py(args: &[&str]) -> Value {
    run_python("tests/python/flight_tool.py", args).await
}

pub async fn run_python(script: &str, args: &[&str]) -> Value {
    let out = run_python_raw(script, args).await;
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("python output is not JSON ({e}): {out}"))
}

pub async fn run_python_raw(script: &str, args: &[&str]) -> String {
    let mut cmd = Command::new("python3");
    cmd.arg(python_script(script)).args(args);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .expect("python3 runs (pip install -r requirements-test.txt)");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "python failed: {}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Common arguments: port and token.
pub fn base_args(f: &TestFlight) -> Vec<String> {
    vec!["--port".into(), f.port(), "--token".into(), TOKEN.into()]
}

/// `flight_tool.py get` for a ticket.
pub async fn get(f: &TestFlight, ticket: &Value) -> Value {
    let mut args = base_args(f);
    args.extend(["get".into(), "--ticket".into(), ticket.to_string()]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    py(&refs).await
}

/// The error a pyarrow call raised, as {"class", "message"}, or panics with the output.
pub fn expect_error(v: &Value) -> (String, String) {
    let e = v
        .get("error")
        .unwrap_or_else(|| panic!("expected an error, got {v}"));
    (
        e["class"].as_str().unwrap().to_string(),
        e["message"].as_str().unwrap().to_string(),
    )
}

/// Polls until `check` holds or `timeout` passes.
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

/// A Flight server spawned on an ephemeral port (its registry loaded first); stops when
/// dropped.
pub struct Spawned {
    pub addr: SocketAddr,
    shutdown: CancellationToken,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub async fn spawn(server: FlightServer) -> Spawned {
    server
        .registry_handle()
        .refresh()
        .await
        .expect("registry loads");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(server.serve(listener, shutdown.clone()));
    Spawned { addr, shutdown }
}

/// A Rust Flight client of `addr`, sending `authorization` on every call when given.
pub async fn client(
    addr: SocketAddr,
    authorization: Option<&str>,
) -> arrow_flight::client::FlightClient {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("connects");
    let mut c = arrow_flight::client::FlightClient::new(channel);
    if let Some(a) = authorization {
        c.add_header("authorization", a).unwrap();
    }
    c
}
