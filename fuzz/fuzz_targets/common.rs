//! What the targets share: the blog example's engine, built once.
#![allow(dead_code)]

use std::sync::{Arc, OnceLock};

use fraiseql::graphql::{Engine, Limits};

/// The engine over `examples/blog/schema.json` (the test fixture), default limits.
pub fn blog_engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/blog/schema.json");
        let schema = fraiseql::schema::load(std::path::Path::new(path)).expect("blog schema");
        Engine::new(Arc::new(schema), Limits::default()).expect("blog engine")
    })
}

/// A single-threaded runtime for the async entry points.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    })
}
