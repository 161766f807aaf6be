//! The command line: one clap variant per subcommand. `main.rs` turns a parsed [`Cli`] into
//! a loaded [`crate::config::Config`] and starts the matching role.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::LogFormat;

/// FraiseQL: a GraphQL API, event reactions and analytics on top of PostgreSQL.
#[derive(Debug, Parser)]
#[command(name = "fraiseql", version, about, long_about = None)]
pub struct Cli {
    /// Configuration file (default: ./fraiseql.toml when it exists).
    #[arg(long, global = true, env = "FRAISEQL_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Log format; the level comes from FRAISEQL_LOG (or RUST_LOG), else [log] level.
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve HTTP (/graphql, /graphiql, /healthz, /readyz, /metrics) and run the observers.
    /// SIGHUP reloads the schema.
    Serve {
        /// Address to bind (overrides [server] listen).
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
        /// schema.json or schema.compiled.json to serve (overrides [graphql] schema).
        #[arg(long, value_name = "PATH")]
        schema: Option<PathBuf>,
        /// Also run the Arrow Flight server ([flight] section) in this process.
        #[arg(long)]
        with_flight: bool,
    },
    /// Serve Arrow Flight (gRPC): va_/ta_ views and change events as Arrow record batches;
    /// /healthz, /readyz and /metrics on [server] listen.
    Flight {
        /// Address to bind (overrides [flight] listen).
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
        /// schema.json or schema.compiled.json for GraphQL tickets (overrides [graphql] schema).
        #[arg(long, value_name = "PATH")]
        schema: Option<PathBuf>,
    },
    /// Execute observer jobs from the Redis queue ([queue] backend = "redis"); /healthz,
    /// /readyz and /metrics on [worker] listen. SIGTERM drains: no new jobs, running ones
    /// finish within [worker] grace_period_ms or are handed back.
    Worker {
        /// Jobs executed at once (overrides [worker] concurrency).
        #[arg(long, value_name = "N")]
        concurrency: Option<usize>,
        /// Address of /healthz, /readyz and /metrics (overrides [worker] listen).
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
    },
    /// Compile schema.json (as the SDKs export it) into schema.compiled.json.
    Compile {
        /// The schema.json to compile.
        #[arg(value_name = "SCHEMA_JSON")]
        input: PathBuf,
        /// Where to write the compiled schema.
        #[arg(
            short,
            long,
            value_name = "PATH",
            default_value = "schema.compiled.json"
        )]
        output: PathBuf,
    },
    /// Manage the database objects FraiseQL owns (the `fraiseql` schema).
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
    /// Print the SQL a GraphQL query runs (one statement per root field) without running it,
    /// and which path (native column or data key) each where/orderBy field takes.
    Explain {
        /// The GraphQL query text.
        #[arg(value_name = "QUERY")]
        query: String,
        /// JSON object of variables.
        #[arg(long, value_name = "JSON")]
        variables: Option<String>,
        /// schema.json or schema.compiled.json (overrides [graphql] schema).
        #[arg(long, value_name = "PATH")]
        schema: Option<PathBuf>,
        /// Write parameters into the SQL as literals (for psql or pgbench).
        #[arg(long)]
        inline: bool,
    },
    /// Validate the configuration and schema, and reach every configured service.
    Check,
    /// Derive the stored copies of the schema's views (tv_<entity>; ta_/va_ typed forms) and
    /// the statement-level triggers that keep them equal to their views, from the catalog's
    /// view dependencies and foreign keys. Prints the SQL unless -o, --apply or --check.
    GenerateViews {
        /// schema.json or schema.compiled.json (overrides [graphql] schema).
        #[arg(long, value_name = "PATH")]
        schema: Option<PathBuf>,
        /// Only this entity (type name such as Post, or view suffix such as post); repeatable.
        #[arg(long = "entity", value_name = "NAME")]
        entities: Vec<String>,
        /// Which copies: tv (JSON, default), ta (typed table), va (typed view); repeatable.
        #[arg(long = "kind", value_enum, value_name = "KIND")]
        kinds: Vec<crate::genviews::Kind>,
        /// Fields to filter and sort on: a stored generated column and a b-tree index each
        /// (comma-separated; nested with dots, e.g. number,placed_at,customer.tier).
        #[arg(long, value_name = "FIELDS", value_delimiter = ',')]
        index: Vec<String>,
        /// Write the SQL to this file.
        #[arg(short, long, value_name = "FILE", conflicts_with_all = ["apply", "check"])]
        output: Option<PathBuf>,
        /// Apply it in one transaction and fill the copies (idempotent).
        #[arg(long, conflicts_with = "check")]
        apply: bool,
        /// Compare every copy with its view (EXCEPT both ways); exit 1 on drift.
        #[arg(long)]
        check: bool,
    },
    /// Inspect, retry and purge observer jobs that exhausted their retries.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Analytics sinks ([[sinks]]): what a backend needs before `serve` can write to it.
    Sink {
        #[command(subcommand)]
        command: SinkCommand,
    },
    /// Print the Grafana dashboard JSON built into this binary.
    Dashboard,
    /// Probe a health endpoint: exit 0 when it answers 2xx, 1 otherwise. Needs no shell
    /// or curl (the image's HEALTHCHECK) and reads no configuration.
    Health {
        /// The URL to GET.
        #[arg(
            long,
            value_name = "URL",
            default_value = "http://127.0.0.1:8080/healthz"
        )]
        url: String,
        /// Give up after this many milliseconds.
        #[arg(long, value_name = "MS", default_value_t = 3000)]
        timeout_ms: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Create or upgrade the `fraiseql` schema (idempotent, safe to run concurrently).
    Init,
    /// Delete old change-log rows that no checkpoint still needs: older than the retention,
    /// strictly before every observer reader's (and NATS publisher's) checkpoint, and older
    /// than every running transaction. Safe to run while serve runs.
    Prune {
        /// Keep rows younger than this (30m, 12h, 7d, 2w); default: [change_log] retention.
        #[arg(long, value_name = "DURATION")]
        older_than: Option<String>,
        /// Count what would be deleted; delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters, newest first.
    List {
        /// One JSON document instead of a table.
        #[arg(long)]
        json: bool,
        /// Only this observer's jobs.
        #[arg(long, value_name = "NAME")]
        observer: Option<String>,
        /// At most this many.
        #[arg(long, value_name = "N", default_value_t = 100)]
        limit: i64,
    },
    /// Show one dead letter: the whole job and every attempt's error (JSON).
    Show {
        #[arg(value_name = "ID")]
        id: i64,
    },
    /// Hand a dead letter (or all of them) back to the running observers for a new round of
    /// attempts; a running `serve` picks it up within a second.
    Retry {
        #[arg(
            value_name = "ID",
            required_unless_present = "all",
            conflicts_with = "all"
        )]
        id: Option<i64>,
        /// Every dead letter.
        #[arg(long)]
        all: bool,
    },
    /// Delete dead letters (all, or those older than an age such as 30m, 12h, 7d).
    Purge {
        #[arg(long, value_name = "AGE")]
        older_than: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum SinkCommand {
    /// Print what the configured sinks of a backend need created (a sink with the defaults
    /// when none is configured): for ClickHouse the events table (ReplacingMergeTree) and
    /// its hourly and daily roll-up materialized views; for Elasticsearch the index template
    /// and ILM policy.
    Ddl {
        #[arg(value_enum, value_name = "BACKEND")]
        backend: crate::sinks::SinkKind,
    },
}
