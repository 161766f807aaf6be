//! FraiseQL: one binary that puts a GraphQL API, event reactions and analytics on top of
//! PostgreSQL. `main.rs` parses the command line ([`cli`]), loads the [`config`] and starts
//! one of the [`roles`]; each long-running role exposes `run(config, shutdown)` and stops on
//! the one [`shutdown`] token.
//!
//! # Layout
//! ```text
//! roles        roles::{serve (HTTP + observers, optionally Flight), worker, flight, check,
//!                     dlq, explain, compile, db}, built from the parts in compose
//! doors        http (hyper server, limits, per-route metrics) ── graphql::http
//!              flight (gRPC: tickets → flight::plan, DoGet/DoPut, auth) ─ graphql::flight_source
//! engine       schema (authoring model → compiler → compiled schema)
//!              graphql (juniper types, planning, execution, responses) · error_code
//!              sql (the one SQL core of both doors: builder and parameters, identifier
//!                   quoting, the operator table in sql::condition; select, filter and
//!                   mutation statements)
//!              db (the pool every role shares; db::request: a request's context as
//!                  session settings, cancel-on-drop; readiness; migrations of `fraiseql.*`)
//! reactions    observers (reader → matcher → dispatch; executor and in-process workers)
//!              queue (the seam: memory and Redis backends built in queue::build,
//!                     capability traits, dead letters, the batching pump)
//!              actions (webhook, Slack, e-mail, search, cache, NATS) · nats (JetStream)
//!              sinks (the change log, batched and checkpointed, into ClickHouse and
//!                     Elasticsearch; one leader per sink)
//! support      metrics (every Prometheus family, defined once) · assets (dashboard)
//!              net (name resolution for an empty root) · shutdown · redact (URLs safe to print)
//!              backoff (the one retry delay: exponential, capped, equal jitter)
//! ```
//!
//! # A GraphQL request
//! `http` routes `POST /graphql` within its body limit → `graphql::http` reads
//! the GraphQL-over-HTTP request and negotiates the media type → `graphql::execute`: juniper
//! parses and validates against the types built from the compiled schema, the root resolvers
//! only plan (`graphql::plan`, limits checked) → `sql` turns each planned root field into one
//! parameterised statement over a `v_*`/`tv_*` view (a mutation: its `fn_*` call) → a
//! `db::Session` from the pool, with the request's `db::RequestContext` applied, runs it;
//! PostgreSQL returns the JSON, which `graphql::response` checks (non-null fields, the
//! sentinels of out-of-range values) and places at each root field's key. Flight GraphQL
//! tickets take the same path from `graphql::flight_source`; Flight view tickets are planned
//! by `flight::plan` with the same `sql` builder and operator table.
//!
//! # A committed change, to its action
//! A row trigger on a tracked table (`fraiseql.log_row_change`, in `db`'s migrations; or the
//! API's own row for a mutation) appends to `fraiseql.tb_entity_change_log` and NOTIFYs →
//! `observers::reader` (one leader across instances) reads committed changes in `(txid, pk)`
//! order from its durable checkpoint → `observers::matcher` picks the observers whose entity,
//! operation and condition match → `observers::dispatch` enqueues one job per action with a
//! stable idempotency key and lets the checkpoint advance only past enqueued changes →
//! `queue` holds the job (in-process, or Redis for `fraiseql worker`) → the executor
//! (`observers::worker` or `queue::pump`) runs the action from `actions`, then acknowledges,
//! retries with backoff or dead-letters it (`fraiseql dlq`). With `[nats]`, the reader
//! publishes each change to JetStream and `observers::nats_source` feeds the matcher instead.

pub mod actions;
pub mod assets;
pub mod auth;
pub mod backoff;
pub mod cli;
pub mod compose;
pub mod config;
pub mod db;
pub mod error_code;
pub mod flight;
pub mod genviews;
pub mod graphql;
pub mod http;
pub mod metrics;
pub mod nats;
pub mod net;
pub mod observers;
pub mod queue;
pub mod ratelimit;
pub mod redact;
pub mod redis_conn;
pub mod roles;
pub mod schema;
pub mod setting;
pub mod shutdown;
pub mod sinks;
pub mod sql;
