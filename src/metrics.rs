//! Every Prometheus metric the binary exports, defined once, with its help text.
//!
//! Roles record into [`metrics()`]; `/metrics` renders [`render`]. The Grafana dashboard in
//! `assets/grafana/fraiseql.json` may only use names defined here (a test enforces it).

use std::sync::LazyLock;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
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
    /// Build information as labels; the value is always 1.
    pub build_info: IntGaugeVec,
}

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
            graphql: GraphqlMetrics::register(&registry).expect("unique metric"),
            build_info,
            registry,
        }
    }
}

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
}

impl GraphqlMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> Result<GraphqlMetrics, prometheus::Error> {
        let m = GraphqlMetrics::unregistered()?;
        registry.register(Box::new(m.operations_total.clone()))?;
        registry.register(Box::new(m.request_duration_seconds.clone()))?;
        registry.register(Box::new(m.sql_duration_seconds.clone()))?;
        registry.register(Box::new(m.errors_total.clone()))?;
        Ok(m)
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
        })
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
