//! `[database]`: the PostgreSQL connection every role shares, and its validation.

use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::redact::redact_url;
use crate::setting::Invalid;

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// PostgreSQL connection URL (`postgres://user:password@host:port/dbname`).
    pub url: String,
    /// Most connections the pool opens; 0 = twice the CPU cores, at least 4 (more
    /// connections than PostgreSQL can run at once only add queueing and tail latency).
    pub pool_size: usize,
    /// Time allowed to open one connection, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Time a request waits for a free pooled connection, in milliseconds.
    pub acquire_timeout_ms: u64,
    /// `statement_timeout` set on every connection, in milliseconds (0 = none).
    pub statement_timeout_ms: u64,
    /// PEM file of CA certificates for `sslmode=require`; empty = the bundled Mozilla roots.
    pub tls_ca_file: String,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: "postgres://postgres@127.0.0.1:5432/postgres".to_string(),
            pool_size: 0,
            connect_timeout_ms: 5_000,
            acquire_timeout_ms: 5_000,
            statement_timeout_ms: 30_000,
            tls_ca_file: String::new(),
        }
    }
}

impl DatabaseConfig {
    /// `pool_size`, with 0 resolved to twice the available cores (at least 4).
    pub fn effective_pool_size(&self) -> usize {
        if self.pool_size > 0 {
            return self.pool_size;
        }
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        (cores * 2).max(4)
    }

    /// The URL as tokio-postgres understands it: libpq's `sslmode=verify-full` and
    /// `verify-ca` become `require` (FraiseQL always verifies certificates under TLS).
    pub fn normalized_url(&self) -> String {
        self.url
            .replace("sslmode=verify-full", "sslmode=require")
            .replace("sslmode=verify-ca", "sslmode=require")
    }
}

impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &redact_url(&self.url))
            .field("pool_size", &self.pool_size)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("acquire_timeout_ms", &self.acquire_timeout_ms)
            .field("statement_timeout_ms", &self.statement_timeout_ms)
            .field("tls_ca_file", &self.tls_ca_file)
            .finish()
    }
}

impl DatabaseConfig {
    /// Checks what the types alone cannot.
    pub fn validate(&self) -> Result<(), Invalid> {
        if let Err(e) = tokio_postgres::Config::from_str(&self.normalized_url()) {
            return Err(Invalid::new(
                "database.url",
                format!(
                    "invalid PostgreSQL URL {}: {e}; expected postgres://user@host:port/dbname",
                    redact_url(&self.url)
                ),
            ));
        }
        if !self.tls_ca_file.is_empty() && !Path::new(&self.tls_ca_file).is_file() {
            return Err(Invalid::new(
                "database.tls_ca_file",
                format!("{} is not a readable file", self.tls_ca_file),
            ));
        }
        if self.pool_size > 10_000 {
            return Err(Invalid::new("database.pool_size", "must be at most 10000"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_url_is_redacted_in_debug() {
        let c = DatabaseConfig {
            url: "postgres://u:secret@h/db".into(),
            ..Default::default()
        };
        assert!(!format!("{c:?}").contains("secret"));
    }
}
