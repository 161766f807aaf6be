//! Files built into the binary from `assets/` (rust-embed): the Grafana dashboard.

use rust_embed::RustEmbed;

#[derive(RustEmbed)]
#[folder = "assets/"]
pub struct Assets;

/// The Grafana dashboard JSON (`assets/grafana/fraiseql.json`).
pub fn dashboard() -> std::borrow::Cow<'static, [u8]> {
    Assets::get("grafana/fraiseql.json")
        .expect("assets/grafana/fraiseql.json is embedded at build time")
        .data
}
