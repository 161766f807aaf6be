//! The one integration-test binary: every area of FraiseQL tested against the real
//! PostgreSQL, Redis and NATS of the machine, through the shared harness in `common`.
//!
//! One binary instead of one per file: the crate and its dependencies are linked once,
//! and `cargo nextest run` still runs each test in its own process.

mod common;

mod actions_e2e;
mod appliance;
mod auth_flight;
mod auth_http;
mod authz;
mod change_log_retention;
mod check;
mod db_session;
mod delivery_e2e;
mod dlq_cli;
mod filters;
mod flight_events;
mod flight_graphql;
mod flight_put;
mod flight_role;
mod flight_tickets;
mod flight_tls;
mod flight_types;
mod generate_views;
mod hostile;
mod http;
mod introspection;
mod kill9_e2e;
mod mutations;
mod native_columns;
mod nats;
mod nats_e2e;
mod perf;
mod queries;
mod queue_conformance;
mod queue_delivery;
mod queue_redis;
mod queue_redis_restart;
mod rate_limit;
mod read_tables;
mod rls;
mod schema;
mod serve_graphql;
mod sinks;
mod soak;
mod sql_params;
mod trusted_documents;
mod webhook_e2e;
mod worker_e2e;
