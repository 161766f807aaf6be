//! FraiseQL: one binary that puts a GraphQL API, event reactions and analytics on top of
//! PostgreSQL. `main.rs` parses the command line and starts one role; each role lives in its
//! own module and exposes `run(config, shutdown)`.

pub mod actions;
pub mod assets;
pub mod check;
pub mod cli;
pub mod config;
pub mod db;
pub mod error_code;
pub mod flight;
pub mod graphql;
pub mod http;
pub mod metrics;
pub mod nats;
pub mod net;
pub mod observers;
pub mod queue;
pub mod schema;
pub mod serve;
pub mod shutdown;
pub mod sql;
pub mod worker;
