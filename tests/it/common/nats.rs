//! Shared harness for the NATS tests: per-test stream, subject prefix and durable names on the
//! machine's NATS (127.0.0.1:4222), deleted afterwards even when the test panics; and private
//! `nats-server -js` processes (own port, own storage directory) that a test may kill and
//! restart.
#![allow(dead_code)]

use std::future::Future;
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fraiseql::nats::{EventBus, NatsConfig};
use tokio_util::sync::CancellationToken;

pub const SHARED_URL: &str = "nats://127.0.0.1:4222";
/// Debian installs it in /usr/sbin, which is not on every user's PATH.
fn nats_server() -> &'static str {
    if std::path::Path::new("/usr/sbin/nats-server").exists() {
        "/usr/sbin/nats-server"
    } else {
        "nats-server"
    }
}

pub fn suffix() -> String {
    use rand::RngExt;
    let n: u64 = rand::rng().random();
    format!("{n:016x}")
}

/// A config with a stream name and subject prefix unique to this test.
pub fn test_config(url: &str) -> NatsConfig {
    let s = suffix();
    NatsConfig {
        url: url.to_string(),
        stream: format!("FQLTEST_{s}"),
        subject_prefix: format!("fqltest.{s}"),
        durable: format!("fqltest-{s}"),
        retry_min_delay_ms: 20,
        retry_max_delay_ms: 500,
        connect_timeout_ms: 1000,
        request_timeout_ms: 2000,
        ..NatsConfig::default()
    }
}

/// The `[nats]` section of a test's `serve` config (JSON, for `toml::to_string`): the
/// test's names and short retries and timeouts.
pub fn serve_section(nats: &NatsConfig) -> serde_json::Value {
    serde_json::json!({
        "url": nats.url,
        "stream": nats.stream,
        "subject_prefix": nats.subject_prefix,
        "durable": nats.durable,
        "retry_min_delay_ms": 20,
        "retry_max_delay_ms": 500,
        "connect_timeout_ms": 1000,
        "request_timeout_ms": 1000
    })
}

pub async fn delete_stream(url: &str, stream: &str) {
    let deleted = async {
        let client = async_nats::connect(url.trim_start_matches("nats://")).await?;
        let js = async_nats::jetstream::new(client);
        js.delete_stream(stream).await?;
        Ok::<(), async_nats::Error>(())
    };
    if let Ok(Err(err)) = tokio::time::timeout(Duration::from_secs(10), deleted).await {
        eprintln!("cleanup of stream {stream} failed: {err}");
    }
}

/// Runs `body`, then deletes the test's stream even if `body` panicked.
pub async fn with_stream<F, Fut>(config: NatsConfig, body: F)
where
    F: FnOnce(NatsConfig) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let result = tokio::spawn(body(config.clone())).await;
    delete_stream(&config.url, &config.stream).await;
    if let Err(err) = result {
        if err.is_panic() {
            std::panic::resume_unwind(err.into_panic());
        }
        panic!("test task failed: {err}");
    }
}

pub async fn connect(config: &NatsConfig) -> EventBus {
    let token = CancellationToken::new();
    match tokio::time::timeout(Duration::from_secs(20), EventBus::connect(config, &token)).await {
        Ok(Ok(bus)) => bus,
        Ok(Err(err)) => panic!("connect failed: {err}"),
        Err(_) => panic!("connect timed out"),
    }
}

// ---------------------------------------------------------------------------------------------
// Private nats-server harness
// ---------------------------------------------------------------------------------------------

/// A nats-server child process with JetStream, on a free port and a temporary storage dir.
/// `restart` kills it (SIGKILL) and starts it again on the same port and storage dir.
/// Killed on drop.
pub struct PrivateServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Clients must present these (written to the server's config file).
    auth: Option<ServerAuth>,
    /// PEM certificate and key files: the server then requires TLS.
    tls: Option<(String, String)>,
}

/// What a private server demands of its clients.
#[derive(Clone, Debug)]
pub enum ServerAuth {
    /// `authorization { user, password }`
    UserPassword(String, String),
    /// `authorization { token }`
    Token(String),
}

impl ServerAuth {
    /// The URL user info that satisfies it, ending in `@`.
    pub fn userinfo(&self) -> String {
        match self {
            Self::UserPassword(user, pass) => format!("{user}:{pass}@"),
            Self::Token(token) => format!("{token}@"),
        }
    }

    fn config_block(&self) -> String {
        match self {
            Self::UserPassword(user, pass) => {
                format!("authorization {{ user: \"{user}\", password: \"{pass}\" }}\n")
            }
            Self::Token(token) => format!("authorization {{ token: \"{token}\" }}\n"),
        }
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

impl PrivateServer {
    /// A server on a free port, not started yet.
    pub fn new() -> Self {
        Self {
            port: free_port(),
            dir: tempfile::tempdir().expect("tempdir"),
            child: None,
            auth: None,
            tls: None,
        }
    }

    /// A started server that requires TLS, presenting `cert` (PEM files).
    pub fn started_with_tls(cert: &str, key: &str) -> Self {
        let mut server = Self::new();
        server.tls = Some((cert.to_string(), key.to_string()));
        server.start();
        server
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A started server that refuses clients without `auth`.
    pub fn started_with_auth(auth: ServerAuth) -> Self {
        let mut server = Self::new();
        server.auth = Some(auth);
        server.start();
        server
    }

    /// What the server demands of its clients.
    pub fn auth(&self) -> Option<ServerAuth> {
        self.auth.clone()
    }

    /// `127.0.0.1:PORT`, for a client given its credentials as options.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The URL with the credentials the server demands (if any) as user info.
    pub fn url_with_credentials(&self) -> String {
        let userinfo = self
            .auth
            .as_ref()
            .map(ServerAuth::userinfo)
            .unwrap_or_default();
        format!("nats://{userinfo}127.0.0.1:{}", self.port)
    }

    pub fn started() -> Self {
        let mut server = Self::new();
        server.start();
        server
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn start(&mut self) {
        assert!(self.child.is_none(), "already running");
        let mut command = Command::new(nats_server());
        // Credentials go in a config file, not on the command line (visible in `ps`).
        let mut config = self
            .auth
            .as_ref()
            .map(ServerAuth::config_block)
            .unwrap_or_default();
        if let Some((cert, key)) = &self.tls {
            config.push_str(&format!(
                "tls {{ cert_file: \"{cert}\", key_file: \"{key}\" }}\n"
            ));
        }
        if !config.is_empty() {
            let path = self.dir.path().join("server.conf");
            std::fs::write(&path, config).expect("write nats-server config");
            command.arg("-c").arg(path);
        }
        let child = command
            .args(["-js", "-a", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .arg("-sd")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "nats-server did not listen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL and wait for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGKILL, then start again on the same port and storage dir.
    pub fn restart(&mut self) {
        self.kill();
        self.start();
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        self.kill();
    }
}
