//! Every Prometheus metric the binary exports, defined once, with its help text.
//!
//! Roles record into [`metrics()`]; `/metrics` renders [`render`]. The Grafana dashboard in
//! `assets/grafana/fraiseql.json` may only use names defined here (a test enforces it).

use std::sync::LazyLock;

use serde::{Deserialize, Serialize};

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

const NAMESPACE: &str = "fraiseql";

/// Latency buckets from 100 µs to 10 s: GraphQL answers are often sub-millisecond.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

pub struct Metrics {
    pub registry: Registry,
    /// HTTP requests by route and status code.
    pub http_requests: IntCounterVec,
    /// HTTP request duration by route.
    pub http_request_duration: HistogramVec,
    /// Connections the database pool currently holds.
    pub db_pool_size: IntGauge,
    /// Pooled connections handed out to requests.
    pub db_pool_in_use: IntGauge,
    /// Requests waiting for a pooled connection.
    pub db_pool_waiting: IntGauge,
    /// Largest number of connections the pool may open.
    pub db_pool_max: IntGauge,
    /// 1 when the last database check succeeded, else 0.
    pub db_up: IntGauge,
    /// The GraphQL engine: operations, durations, errors.
    pub graphql: GraphqlMetrics,
    /// The observer runtime (events; `observers.jobs`: the job queue and its execution,
    /// shared with `fraiseql worker`).
    pub observers: ObserverMetrics,
    /// The Arrow Flight role: streams, rows, bytes, durations.
    pub flight: FlightMetrics,
    /// Authentication outcomes and authorization refusals (no claim values as labels).
    pub auth: AuthMetrics,
    /// Rate-limit decisions and the state of the limiter's store.
    pub rate_limit: RateLimitMetrics,
    /// The analytics sinks (`[[sinks]]`): rows, batches, bytes, lag, failures.
    pub sinks: SinkMetrics,
    /// Build information as labels; the value is always 1.
    pub build_info: IntGaugeVec,
}

/// `fraiseql_sink_*`, each labelled by `sink` (the configured name).
pub struct SinkMetrics {
    /// Changes the sink acknowledged (applied, or already applied before).
    pub rows: IntCounterVec,
    /// Batches acknowledged.
    pub batches: IntCounterVec,
    /// Encoded bytes sent (re-sent bytes included).
    pub bytes: IntCounterVec,
    /// Changes after the sink's checkpoint (counted up to 1,000,000).
    pub lag_events: IntGaugeVec,
    /// Age of the oldest change read but not yet acknowledged; 0 when caught up.
    pub lag_seconds: GaugeVec,
    /// Failures by `reason`: `unavailable`, `rejected` (a refused request), `item_retry` (a
    /// refused item sent again), `dead_letter` (an item refused for good), `database`.
    pub failures: IntCounterVec,
}

/// The `reason` labels of `fraiseql_sink_failures_total`.
pub const SINK_FAILURE_REASONS: &[&str] = &[
    "unavailable",
    "rejected",
    "item_retry",
    "dead_letter",
    "database",
];

impl SinkMetrics {
    fn register(registry: &Registry) -> SinkMetrics {
        let gauge_vec = |name: &str, help: &str| {
            let g = GaugeVec::new(Opts::new(name, help).namespace(NAMESPACE), &["sink"])
                .expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let lag_events = IntGaugeVec::new(
            Opts::new(
                "sink_lag_events",
                "Changes after the sink's checkpoint (counted up to 1,000,000).",
            )
            .namespace(NAMESPACE),
            &["sink"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(lag_events.clone()))
            .expect("unique metric");
        SinkMetrics {
            rows: counter_vec(
                registry,
                "sink_rows_total",
                "Changes acknowledged by the sink (applied, or already applied).",
                &["sink"],
            ),
            batches: counter_vec(
                registry,
                "sink_batches_total",
                "Batches acknowledged by the sink.",
                &["sink"],
            ),
            bytes: counter_vec(
                registry,
                "sink_bytes_total",
                "Encoded bytes sent to the sink, re-sent bytes included.",
                &["sink"],
            ),
            lag_events,
            lag_seconds: gauge_vec(
                "sink_lag_seconds",
                "Age of the oldest change read but not yet acknowledged by the sink; 0 when \
                 caught up.",
            ),
            failures: counter_vec(
                registry,
                "sink_failures_total",
                "Sink failures by reason (unavailable, rejected, item_retry, dead_letter, \
                 database).",
                &["sink", "reason"],
            ),
        }
    }

    /// Creates the series of one sink at zero, so a fresh process exports them.
    pub fn known(&self, sink: &str) {
        self.rows.with_label_values(&[sink]);
        self.batches.with_label_values(&[sink]);
        self.bytes.with_label_values(&[sink]);
        self.lag_events.with_label_values(&[sink]);
        self.lag_seconds.with_label_values(&[sink]);
        for r in SINK_FAILURE_REASONS {
            self.failures.with_label_values(&[sink, r]);
        }
    }
}

pub struct RateLimitMetrics {
    /// Budget checks by rule (`global`, `client`, `tenant`, `mutations`, `flight`) and
    /// outcome (`allowed`, `limited`, `store_error`).
    pub decisions: IntCounterVec,
    /// 1 while the rate-limit store answers (always 1 for the memory store), else 0.
    pub store_up: IntGauge,
}

/// The rule labels of `fraiseql_rate_limit_decisions_total`.
pub const RATE_LIMIT_RULES: &[&str] = &["global", "client", "tenant", "mutations", "flight"];
/// Its outcome labels.
pub const RATE_LIMIT_OUTCOMES: &[&str] = &["allowed", "limited", "store_error"];

pub struct AuthMetrics {
    /// Requests by door (`http`, `flight`) and outcome (`ok`, `anonymous`, or why a token
    /// was refused: `missing`, `expired`, `bad_signature`, …).
    pub outcomes: IntCounterVec,
    /// Requests refused for lack of a role, scope or actor, by door and role (a configured
    /// or schema role; any other value counts as `other`).
    pub denied: IntCounterVec,
    /// JWKS fetches by outcome (`ok`, `error`, `cooldown`: an unknown `kid` not refetched).
    pub jwks_fetches: IntCounterVec,
}

/// Every authentication outcome label, created at zero so a fresh process exports them.
pub const AUTH_OUTCOMES: &[&str] = &[
    "ok",
    "anonymous",
    "missing",
    "malformed",
    "too_large",
    "algorithm",
    "unknown_key",
    "bad_signature",
    "expired",
    "not_yet_valid",
    "issuer",
    "audience",
    "missing_claim",
    "role_not_allowed",
];

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help).namespace(NAMESPACE), labels)
        .expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::with_opts(Opts::new(name, help).namespace(NAMESPACE)).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric");
    g
}

fn histogram_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help)
            .namespace(NAMESPACE)
            .buckets(LATENCY_BUCKETS.to_vec()),
        labels,
    )
    .expect("valid metric");
    registry
        .register(Box::new(h.clone()))
        .expect("unique metric");
    h
}

impl Metrics {
    fn new() -> Self {
        let registry = Registry::new();
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::new(
                    std::process::id() as i32,
                    NAMESPACE,
                ),
            ))
            .expect("unique metric");
        let build_info = IntGaugeVec::new(
            Opts::new(
                "build_info",
                "FraiseQL build information; the value is always 1.",
            )
            .namespace(NAMESPACE),
            &["version"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(build_info.clone()))
            .expect("unique metric");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        Self {
            http_requests: counter_vec(
                &registry,
                "http_requests_total",
                "HTTP requests answered, by route and status code.",
                &["route", "status"],
            ),
            http_request_duration: histogram_vec(
                &registry,
                "http_request_duration_seconds",
                "Time from request received to response headers sent, by route.",
                &["route"],
            ),
            auth: AuthMetrics {
                outcomes: counter_vec(
                    &registry,
                    "auth_requests_total",
                    "Requests by door and authentication outcome (ok, anonymous, or why the \
                     token was refused).",
                    &["door", "outcome"],
                ),
                denied: counter_vec(
                    &registry,
                    "auth_denied_total",
                    "Requests or fields refused for lack of a role, scope or actor, by door and \
                     role.",
                    &["door", "role"],
                ),
                jwks_fetches: counter_vec(
                    &registry,
                    "auth_jwks_fetches_total",
                    "JWKS fetches by outcome (ok, error, cooldown).",
                    &["outcome"],
                ),
            }
            .with_known_labels(),
            rate_limit: RateLimitMetrics {
                decisions: counter_vec(
                    &registry,
                    "rate_limit_decisions_total",
                    "Rate-limit budget checks by rule and outcome (allowed, limited, \
                     store_error).",
                    &["rule", "outcome"],
                ),
                store_up: gauge(
                    &registry,
                    "rate_limit_store_up",
                    "1 while the rate-limit store answers, else 0.",
                ),
            }
            .with_known_labels(),
            db_pool_size: gauge(
                &registry,
                "db_pool_connections",
                "Connections the database pool currently holds.",
            ),
            db_pool_in_use: gauge(
                &registry,
                "db_pool_connections_in_use",
                "Pooled database connections currently handed out.",
            ),
            db_pool_waiting: gauge(
                &registry,
                "db_pool_waiting",
                "Tasks waiting for a pooled database connection.",
            ),
            db_pool_max: gauge(
                &registry,
                "db_pool_max_connections",
                "Largest number of connections the database pool may open.",
            ),
            db_up: gauge(
                &registry,
                "db_up",
                "1 when the last database readiness check succeeded, else 0.",
            ),
            graphql: GraphqlMetrics::register(&registry)
                .expect("unique metric")
                .with_known_labels(),
            observers: ObserverMetrics::with_jobs(
                &registry,
                JobMetrics::new(&registry)
                    .expect("unique metric")
                    .with_known_actions(),
            )
            .expect("unique metric"),
            flight: FlightMetrics::register(&registry)
                .expect("unique metric")
                .with_known_tickets(),
            sinks: SinkMetrics::register(&registry),
            build_info,
            registry,
        }
        .with_known_routes()
    }

    /// Creates the series of every route with the statuses it can answer, at zero: the
    /// dashboard's error-ratio panels need a `5..`/`4..` series before the first error.
    fn with_known_routes(self) -> Self {
        for (route, statuses) in HTTP_ROUTES {
            self.http_request_duration.with_label_values(&[route]);
            for status in *statuses {
                self.http_requests.with_label_values(&[route, status]);
            }
        }
        self
    }
}

impl RateLimitMetrics {
    fn with_known_labels(self) -> Self {
        for rule in RATE_LIMIT_RULES {
            for outcome in RATE_LIMIT_OUTCOMES {
                self.decisions.with_label_values(&[rule, outcome]);
            }
        }
        self
    }
}

/// The route labels of `fraiseql_http_*` (a closed set: unknown paths are `other`) and the
/// statuses each can answer (every route can time out: 503).
pub const HTTP_ROUTES: &[(&str, &[&str])] = &[
    (
        "/graphql",
        &[
            "200", "204", "400", "401", "403", "405", "406", "413", "415", "429", "500", "503",
        ],
    ),
    ("/graphiql", &["200", "404", "503"]),
    ("/healthz", &["200", "503"]),
    ("/readyz", &["200", "503"]),
    ("/metrics", &["200", "401", "503"]),
    ("other", &["404", "503"]),
];

// ---------------------------------------------------------------------------------------
// GraphQL engine metrics: operations by type, operation name and outcome; request and SQL
// duration histograms; errors by code. A separate struct so tests can give an engine its own
// registry.
/// The engine's metrics, registered once per process.
#[derive(Clone, Debug)]
pub struct GraphqlMetrics {
    /// `fraiseql_graphql_operations_total{type,name,outcome}`.
    pub operations_total: IntCounterVec,
    /// `fraiseql_graphql_request_duration_seconds{type}`.
    pub request_duration_seconds: HistogramVec,
    /// `fraiseql_graphql_sql_duration_seconds{type}`.
    pub sql_duration_seconds: HistogramVec,
    /// `fraiseql_graphql_errors_total{code}`.
    pub errors_total: IntCounterVec,
    /// `fraiseql_graphql_persisted_queries_total{outcome}`.
    pub persisted_queries_total: IntCounterVec,
}

impl GraphqlMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> Result<GraphqlMetrics, prometheus::Error> {
        let m = GraphqlMetrics::unregistered()?;
        registry.register(Box::new(m.operations_total.clone()))?;
        registry.register(Box::new(m.request_duration_seconds.clone()))?;
        registry.register(Box::new(m.sql_duration_seconds.clone()))?;
        registry.register(Box::new(m.errors_total.clone()))?;
        registry.register(Box::new(m.persisted_queries_total.clone()))?;
        Ok(m)
    }

    /// Creates the series a dashboard reads before the first request, at zero: every
    /// operation type and outcome (for the anonymous operation name), every error code.
    pub fn with_known_labels(self) -> Self {
        for op_type in ["query", "mutation", "invalid"] {
            self.request_duration_seconds.with_label_values(&[op_type]);
            self.sql_duration_seconds.with_label_values(&[op_type]);
            for outcome in ["ok", "error", "partial"] {
                self.operations_total
                    .with_label_values(&[op_type, "anonymous", outcome]);
            }
        }
        for code in crate::error_code::ErrorCode::ALL {
            self.errors_total.with_label_values(&[code.as_str()]);
        }
        for outcome in crate::graphql::persisted::OUTCOMES {
            self.persisted_queries_total.with_label_values(&[outcome]);
        }
        self
    }

    /// Creates the metrics without registering them (tests).
    pub fn unregistered() -> Result<GraphqlMetrics, prometheus::Error> {
        Ok(GraphqlMetrics {
            operations_total: IntCounterVec::new(
                Opts::new(
                    "fraiseql_graphql_operations_total",
                    "GraphQL operations by type (query, mutation, invalid), operation name and outcome (ok, error, partial).",
                ),
                &["type", "name", "outcome"],
            )?,
            request_duration_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "fraiseql_graphql_request_duration_seconds",
                    "Time to answer a GraphQL request, from parsing to the serialized response.",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["type"],
            )?,
            sql_duration_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "fraiseql_graphql_sql_duration_seconds",
                    "Time of one generated SQL statement (root field), including the wait for a connection.",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["type"],
            )?,
            errors_total: IntCounterVec::new(
                Opts::new(
                    "fraiseql_graphql_errors_total",
                    "GraphQL errors returned to clients, by extensions.code.",
                ),
                &["code"],
            )?,
            persisted_queries_total: IntCounterVec::new(
                Opts::new(
                    "fraiseql_graphql_persisted_queries_total",
                    "Requests with a persisted document (a hash, or a document in allow-list mode), by outcome.",
                ),
                &["outcome"],
            )?,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Observer metrics (`fraiseql_observer_*`): the reader and dispatch update them. What happens
// to the jobs they create is in [`JobMetrics`].
#[derive(Clone)]
pub struct ObserverMetrics {
    /// Change-log rows read and matched (whether or not any observer matched).
    pub events_processed: IntCounter,
    /// Changes that could not be dispatched (undecodable row, enqueue failure).
    pub events_failed: IntCounter,
    /// Commit-to-dispatch lag of the last change read.
    pub read_lag: Histogram,
    /// Changes published to NATS JetStream, and how many JetStream reported as duplicates.
    pub events_published: IntCounterVec,
    /// The jobs these events become.
    pub jobs: JobMetrics,
}

impl ObserverMetrics {
    /// Registers the observer metrics and the job metrics in `registry`.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        Self::with_jobs(registry, JobMetrics::new(registry)?)
    }

    /// Registers the observer metrics; `jobs` is already registered.
    pub fn with_jobs(registry: &Registry, jobs: JobMetrics) -> Result<Self, prometheus::Error> {
        let m = ObserverMetrics {
            events_processed: IntCounter::new(
                "fraiseql_observer_events_processed_total",
                "Change-log rows read and matched against the observers",
            )?,
            events_failed: IntCounter::new(
                "fraiseql_observer_events_failed_total",
                "Change-log rows that could not be dispatched",
            )?,
            read_lag: Histogram::with_opts(
                HistogramOpts::new(
                    "fraiseql_observer_read_lag_seconds",
                    "Time from a change's commit to its dispatch by the reader",
                )
                .buckets(vec![
                    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
                ]),
            )?,
            events_published: IntCounterVec::new(
                Opts::new(
                    "fraiseql_observer_events_published_total",
                    "Changes published to NATS JetStream, by outcome (new, duplicate)",
                ),
                &["outcome"],
            )?,
            jobs,
        };
        registry.register(Box::new(m.events_processed.clone()))?;
        registry.register(Box::new(m.events_failed.clone()))?;
        registry.register(Box::new(m.read_lag.clone()))?;
        registry.register(Box::new(m.events_published.clone()))?;
        for outcome in ["new", "duplicate"] {
            m.events_published.with_label_values(&[outcome]);
        }
        Ok(m)
    }

    /// Metrics registered into a throwaway registry (tests, `fraiseql check`).
    pub fn unregistered() -> Self {
        Self::new(&Registry::new()).expect("metric definitions are valid")
    }
}

// ---------------------------------------------------------------------------------------
// Job metrics (`fraiseql_job_*`): the queue and whoever executes its jobs (the workers inside
// `serve`, or `fraiseql worker`) update them.
#[derive(Clone)]
pub struct JobMetrics {
    /// Jobs added to the queue (duplicates of a live job are not counted), by action type.
    pub queued: IntCounterVec,
    /// Jobs whose action succeeded, by action type.
    pub executed: IntCounterVec,
    /// Failed attempts, by action type and kind (`retryable`, `permanent`).
    pub failed: IntCounterVec,
    /// Failed attempts scheduled to run again, by action type.
    pub retried: IntCounterVec,
    /// Jobs moved to the dead-letter store, by action type.
    pub dead_lettered: IntCounterVec,
    /// Duration of one attempt, by action type.
    pub duration: HistogramVec,
    /// Jobs live in the queue (ready + delayed + running), as last sampled.
    pub queue_depth: IntGauge,
    /// Dead letters waiting for an operator, as last sampled.
    pub dead_letters: IntGauge,
    /// Replayed jobs not executed again because their key already succeeded.
    pub dedup_skips: IntCounter,
    /// Jobs handed to a worker again because their reservation expired (Redis).
    pub reclaimed: IntCounter,
    /// Running jobs handed back to the queue when a worker's grace period ran out.
    pub released: IntCounter,
    /// Queue backend calls that failed transiently and were retried, by operation (Redis).
    pub backend_retries: IntCounterVec,
    /// Bookkeeping calls (ack, retry, dead letter, release) that failed, with any error, and
    /// were retried by the worker instead of giving up on the job's outcome, by operation.
    pub bookkeeping_retries: IntCounterVec,
}

/// The `op` labels of `fraiseql_job_bookkeeping_retries_total`.
pub const BOOKKEEPING_OPS: [&str; 4] = ["ack", "retry", "dead_letter", "release"];

/// The action types, a closed set: their series exist at zero from the start.
pub const ACTION_TYPES: [&str; 6] = ["webhook", "slack", "email", "search", "cache", "nats"];

/// `action_type` when it is one of [`ACTION_TYPES`], else `unknown`: a job read from Redis
/// must not be able to invent label values.
pub fn action_label(action_type: &str) -> &'static str {
    ACTION_TYPES
        .into_iter()
        .find(|t| *t == action_type)
        .unwrap_or("unknown")
}

impl JobMetrics {
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let by_action =
            |name: &str, help: &str| IntCounterVec::new(Opts::new(name, help), &["action"]);
        let m = JobMetrics {
            queued: by_action(
                "fraiseql_job_queued_total",
                "Jobs added to the queue, by action type",
            )?,
            executed: by_action(
                "fraiseql_job_executed_total",
                "Jobs whose action succeeded, by action type",
            )?,
            failed: IntCounterVec::new(
                Opts::new(
                    "fraiseql_job_failed_total",
                    "Failed job attempts, by action type and kind (retryable or permanent)",
                ),
                &["action", "kind"],
            )?,
            retried: by_action(
                "fraiseql_job_retried_total",
                "Failed job attempts scheduled to run again, by action type",
            )?,
            dead_lettered: by_action(
                "fraiseql_job_dead_lettered_total",
                "Jobs moved to the dead-letter store, by action type",
            )?,
            duration: HistogramVec::new(
                HistogramOpts::new(
                    "fraiseql_job_duration_seconds",
                    "Duration of one job attempt (the action), by action type",
                )
                .buckets(vec![
                    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ]),
                &["action"],
            )?,
            queue_depth: IntGauge::new(
                "fraiseql_job_queue_depth",
                "Jobs live in the queue: ready, waiting for a retry, or running",
            )?,
            dead_letters: IntGauge::new(
                "fraiseql_job_dead_letters",
                "Jobs in the dead-letter store awaiting an operator",
            )?,
            dedup_skips: IntCounter::new(
                "fraiseql_job_dedup_skips_total",
                "Replayed jobs not executed because their idempotency key already succeeded",
            )?,
            reclaimed: IntCounter::new(
                "fraiseql_job_reclaimed_total",
                "Jobs handed to a worker again because their reservation expired",
            )?,
            released: IntCounter::new(
                "fraiseql_job_released_total",
                "Running jobs handed back to the queue when a worker's grace period ran out",
            )?,
            backend_retries: IntCounterVec::new(
                Opts::new(
                    "fraiseql_job_backend_retries_total",
                    "Queue backend calls that failed transiently (Redis down, loading, OOM) and were retried, by operation",
                ),
                &["op"],
            )?,
            bookkeeping_retries: IntCounterVec::new(
                Opts::new(
                    "fraiseql_job_bookkeeping_retries_total",
                    "Job bookkeeping calls (ack, retry, dead_letter, release) that failed and were retried, by operation",
                ),
                &["op"],
            )?,
        };
        registry.register(Box::new(m.queued.clone()))?;
        registry.register(Box::new(m.executed.clone()))?;
        registry.register(Box::new(m.failed.clone()))?;
        registry.register(Box::new(m.retried.clone()))?;
        registry.register(Box::new(m.dead_lettered.clone()))?;
        registry.register(Box::new(m.duration.clone()))?;
        registry.register(Box::new(m.queue_depth.clone()))?;
        registry.register(Box::new(m.dead_letters.clone()))?;
        registry.register(Box::new(m.dedup_skips.clone()))?;
        registry.register(Box::new(m.reclaimed.clone()))?;
        registry.register(Box::new(m.released.clone()))?;
        registry.register(Box::new(m.backend_retries.clone()))?;
        registry.register(Box::new(m.bookkeeping_retries.clone()))?;
        Ok(m)
    }

    /// Creates the series of every action type at zero, so rates and dashboards work before
    /// the first job (the label values are a closed set).
    pub fn with_known_actions(self) -> Self {
        for action in ACTION_TYPES {
            for c in [
                &self.queued,
                &self.executed,
                &self.retried,
                &self.dead_lettered,
            ] {
                c.with_label_values(&[action]);
            }
            self.duration.with_label_values(&[action]);
            for kind in ["retryable", "permanent"] {
                self.failed.with_label_values(&[action, kind]);
            }
        }
        for op in ["enqueue", "reserve", "ack", "retry", "dead_letter"] {
            self.backend_retries.with_label_values(&[op]);
        }
        for op in BOOKKEEPING_OPS {
            self.bookkeeping_retries.with_label_values(&[op]);
        }
        self
    }

    /// Metrics registered into a throwaway registry (tests, benchmarks).
    pub fn unregistered() -> Self {
        Self::new(&Registry::new()).expect("metric definitions are valid")
    }
}

// ---------------------------------------------------------------------------------------
// Arrow Flight metrics (`fraiseql_flight_*`).
/// Stream durations range from milliseconds (a small view) to hours (a `follow` stream).
const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0,
];

/// Ticket type labels: `view`, `events`, `graphql`.
#[derive(Clone)]
pub struct FlightMetrics {
    /// DoGet streams started, by ticket type.
    pub streams_started: IntCounterVec,
    /// DoGet streams that sent their last batch, by ticket type.
    pub streams_finished: IntCounterVec,
    /// DoGet streams that ended in an error or were abandoned by the client, by ticket type.
    pub streams_failed: IntCounterVec,
    /// Rows sent in DoGet streams.
    pub rows_sent: IntCounter,
    /// Bytes of Flight data (IPC headers and bodies) sent in DoGet streams.
    pub bytes_sent: IntCounter,
    /// Wall time of DoGet streams, from ticket to last message.
    pub stream_duration: Histogram,
}

fn ticket_counter_vec(
    registry: &Registry,
    name: &str,
    help: &str,
) -> Result<IntCounterVec, prometheus::Error> {
    let c = IntCounterVec::new(Opts::new(name, help).namespace(NAMESPACE), &["ticket"])?;
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

fn try_counter(
    registry: &Registry,
    name: &str,
    help: &str,
) -> Result<IntCounter, prometheus::Error> {
    let c = IntCounter::with_opts(Opts::new(name, help).namespace(NAMESPACE))?;
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

impl FlightMetrics {
    /// Creates the series of every ticket type at zero (the label values are a closed set).
    pub fn with_known_tickets(self) -> Self {
        for ticket in ["view", "events", "graphql"] {
            self.streams_started.with_label_values(&[ticket]);
            self.streams_finished.with_label_values(&[ticket]);
            self.streams_failed.with_label_values(&[ticket]);
        }
        self
    }

    /// Creates the metrics and registers them into `registry`.
    pub fn register(registry: &Registry) -> Result<FlightMetrics, prometheus::Error> {
        let stream_duration = Histogram::with_opts(
            HistogramOpts::new(
                "flight_stream_duration_seconds",
                "Wall time of Arrow Flight DoGet streams.",
            )
            .namespace(NAMESPACE)
            .buckets(DURATION_BUCKETS.to_vec()),
        )?;
        registry.register(Box::new(stream_duration.clone()))?;
        Ok(FlightMetrics {
            streams_started: ticket_counter_vec(
                registry,
                "flight_streams_started_total",
                "Arrow Flight DoGet streams started, by ticket type.",
            )?,
            streams_finished: ticket_counter_vec(
                registry,
                "flight_streams_finished_total",
                "Arrow Flight DoGet streams completed, by ticket type.",
            )?,
            streams_failed: ticket_counter_vec(
                registry,
                "flight_streams_failed_total",
                "Arrow Flight DoGet streams that failed or were cancelled by the client, by ticket type.",
            )?,
            rows_sent: try_counter(
                registry,
                "flight_rows_sent_total",
                "Rows sent in Arrow Flight DoGet streams.",
            )?,
            bytes_sent: try_counter(
                registry,
                "flight_bytes_sent_total",
                "Bytes of Arrow Flight data sent in DoGet streams.",
            )?,
            stream_duration,
        })
    }

    /// Metrics in a registry of their own, for callers that do not export them.
    pub fn unregistered() -> FlightMetrics {
        FlightMetrics::register(&Registry::new()).expect("fresh registry has no duplicates")
    }
}

impl AuthMetrics {
    fn with_known_labels(self) -> Self {
        for door in ["http", "flight"] {
            for outcome in AUTH_OUTCOMES {
                self.outcomes.with_label_values(&[door, outcome]);
            }
        }
        for outcome in ["ok", "error", "cooldown"] {
            self.jwks_fetches.with_label_values(&[outcome]);
        }
        self
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

/// The Prometheus text exposition of every metric.
pub fn render() -> Vec<u8> {
    let mut out = Vec::with_capacity(16 * 1024);
    let families = metrics().registry.gather();
    // Encoding into a Vec cannot fail for well-formed families.
    let _ = TextEncoder::new().encode(&families, &mut out);
    out
}

/// `[metrics]`: the Prometheus endpoint of every role that serves HTTP.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Serve Prometheus metrics at `path`.
    pub enabled: bool,
    /// HTTP path of the Prometheus endpoint.
    pub path: String,
    /// Name of an environment variable holding a token: with it, `path` answers any
    /// client sending `Authorization: Bearer <token>`; without it, only clients connecting
    /// from a loopback address.
    pub token_env: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            path: "/metrics".to_string(),
            token_env: String::new(),
        }
    }
}

impl MetricsConfig {
    /// Checks what the types alone cannot.
    pub fn validate(&self) -> Result<(), crate::setting::Invalid> {
        if !self.path.starts_with('/') {
            return Err(crate::setting::Invalid::new(
                "metrics.path",
                "must start with '/'",
            ));
        }
        if !self.token_env.is_empty() && self.token().is_none() {
            return Err(crate::setting::Invalid::new(
                "metrics.token_env",
                format!(
                    "the environment variable {} is not set or shorter than 16 bytes",
                    self.token_env
                ),
            ));
        }
        Ok(())
    }

    /// The token of `token_env`, when it names a variable holding one.
    pub fn token(&self) -> Option<String> {
        if self.token_env.is_empty() {
            return None;
        }
        std::env::var(&self.token_env)
            .ok()
            .map(|t| t.trim().to_owned())
            .filter(|t| t.len() >= 16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_every_name() {
        let registry = Registry::new();
        let m = FlightMetrics::register(&registry).unwrap();
        m.streams_started.with_label_values(&["view"]).inc();
        m.streams_finished.with_label_values(&["view"]).inc();
        m.streams_failed.with_label_values(&["view"]).inc();
        m.rows_sent.inc();
        m.bytes_sent.inc();
        m.stream_duration.observe(0.1);
        let names: Vec<String> = registry
            .gather()
            .iter()
            .map(|f| f.name().to_string())
            .collect();
        for n in [
            "fraiseql_flight_streams_started_total",
            "fraiseql_flight_streams_finished_total",
            "fraiseql_flight_streams_failed_total",
            "fraiseql_flight_rows_sent_total",
            "fraiseql_flight_bytes_sent_total",
            "fraiseql_flight_stream_duration_seconds",
        ] {
            assert!(names.iter().any(|x| x == n), "{n} missing from {names:?}");
        }
        // Registering twice into one registry is an error, not a panic.
        assert!(FlightMetrics::register(&registry).is_err());
    }
}
