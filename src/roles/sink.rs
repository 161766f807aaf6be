//! `fraiseql sink ddl <backend>`: what each configured sink of a backend needs created
//! before `serve` writes to it ([`crate::sinks::clickhouse::ddl`],
//! [`crate::sinks::elasticsearch::ddl`]). With no sink of that backend configured, a sink
//! with the defaults is shown, so the output can be tried before writing the configuration.

use crate::config::Config;
use crate::sinks::{SinkConfig, SinkKind, clickhouse, elasticsearch};

/// The DDL of every configured sink of `backend` (or of a default one).
pub fn ddl(config: &Config, backend: SinkKind) -> String {
    let mut sinks: Vec<SinkConfig> = config
        .sinks
        .iter()
        .filter(|s| s.kind == backend)
        .cloned()
        .collect();
    if sinks.is_empty() {
        let default = format!(
            "name = \"default\"\ntype = \"{}\"\nurl = \"http://127.0.0.1\"\n",
            backend.as_str()
        );
        if let Ok(s) = toml::from_str::<SinkConfig>(&default) {
            sinks.push(s);
        }
    }
    sinks
        .iter()
        .map(|s| match backend {
            SinkKind::Clickhouse => clickhouse::ddl(s),
            SinkKind::Elasticsearch => elasticsearch::ddl(s),
        })
        .collect::<Vec<_>>()
        .join("\n")
}
