//! `[server]`: the HTTP listener of `serve` (address, grace period, body and time bounds).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::setting::Invalid;

/// `[server]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address the HTTP server binds to. Loopback by default: exposing the API is a choice.
    pub listen: SocketAddr,
    /// Time allowed for in-flight requests to finish after SIGINT/SIGTERM, in milliseconds.
    pub grace_period_ms: u64,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Time allowed for one request, in milliseconds.
    pub request_timeout_ms: u64,
    /// Serve a non-loopback `listen` without `[auth]`: everyone who can reach it reads and
    /// writes everything. Off: `serve` refuses to start so.
    pub allow_unauthenticated: bool,
    /// Origins whose browser pages may call `/graphql` (CORS): exact origins such as
    /// `https://app.example.com`, or `*` for any. Empty (the default): no CORS headers, so
    /// browsers refuse cross-origin calls.
    pub cors_allowed_origins: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            grace_period_ms: 10_000,
            max_body_bytes: 1024 * 1024,
            request_timeout_ms: 30_000,
            allow_unauthenticated: false,
            cors_allowed_origins: Vec::new(),
        }
    }
}

impl ServerConfig {
    /// Checks what the types alone cannot.
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.max_body_bytes < 1024 {
            return Err(Invalid::new(
                "server.max_body_bytes",
                "must be at least 1024",
            ));
        }
        for origin in &self.cors_allowed_origins {
            let ok = origin == "*"
                || ((origin.starts_with("https://") || origin.starts_with("http://"))
                    && !origin.ends_with('/')
                    && origin.len() <= 256
                    && origin.bytes().all(|b| b.is_ascii_graphic()));
            if !ok {
                return Err(Invalid::new(
                    "server.cors_allowed_origins",
                    format!(
                        "origins such as \"https://app.example.com\" (scheme and host, no path) \
                         or \"*\", found {origin:?}"
                    ),
                ));
            }
        }
        Ok(())
    }
}
