//! The GraphQL runtime: juniper types built from the compiled schema, request limits, the
//! [`Engine`] that plans and executes operations (one SQL statement per root field, the JSON
//! text spliced into the response unparsed), GraphQL-over-HTTP and the database check.

mod accept_encoding;
mod authz;
pub mod check;
pub mod config;
pub mod db_error;
pub mod execute;
pub mod flight_source;
pub mod http;
pub mod persisted;
pub mod plan;
pub mod response;
pub mod source;
pub mod types;

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, RwLock};

use juniper::{EmptySubscription, RootNode};

use crate::metrics::GraphqlMetrics;
use crate::schema::{CompiledSchema, SchemaError};
use crate::sql::filter::InputLimits;
use crate::sql::mutation::FnSignature;
use crate::sql::select::{ReadLimits, ViewSource};

pub use check::CheckItem;
pub use config::GraphqlConfig;
pub use execute::{Executed, Outcome, Request};
pub use flight_source::EngineSource;
use plan::PlanCtx;
use types::{Info, Kind, Node};

/// Limits on requests. Every limit gives a clear error (`extensions.code` =
/// `LIMIT_EXCEEDED`, or HTTP 413 for the body). `[graphql]` deserializes into this struct
/// directly (see [`config::GraphqlConfig`]); the body bound is `server.max_body_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Maximum nesting of selections (and of the document's syntax).
    pub max_depth: usize,
    /// Maximum number of aliased fields in one operation.
    pub max_aliases: usize,
    /// Maximum number of lexical tokens in a document.
    pub max_tokens: usize,
    /// Maximum number of fields in an operation, fragments expanded.
    pub max_fields: usize,
    /// Maximum size of the `query` text in bytes.
    pub max_query_bytes: usize,
    /// Maximum size of a request body in bytes (HTTP 413 beyond); `server.max_body_bytes`.
    #[serde(skip)]
    pub max_body_bytes: usize,
    /// Maximum number of root fields (each is one SQL statement).
    pub max_root_fields: usize,
    /// `limit` of a list query when the request gives none and the schema has no default.
    pub default_limit: i64,
    /// Largest `limit` accepted.
    pub max_limit: i64,
    /// Maximum number of values in one input list (`in`, `_or`, `orderBy` …).
    pub max_list_input: usize,
    /// Maximum nesting of `where` (`_and`/`_or`/`_not` and nested paths).
    pub max_filter_depth: usize,
    /// Most conditions (one per operator) in one `where`, however they are nested.
    pub max_filter_conditions: usize,
    /// Responses at least this large are gzip-compressed when the client accepts it.
    pub gzip_min_bytes: usize,
    /// Answer introspection queries.
    pub introspection: bool,
    /// Prepared statements kept per connection; the cache is emptied when full (distinct
    /// `where`/`orderBy` shapes each make a statement).
    pub max_cached_statements: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_depth: 15,
            max_aliases: 30,
            max_tokens: 10_000,
            max_fields: 2_000,
            max_query_bytes: 100_000,
            max_body_bytes: 1 << 20,
            max_root_fields: 20,
            default_limit: 100,
            max_limit: 1_000,
            max_list_input: 1_000,
            max_filter_depth: 16,
            max_filter_conditions: 1_000,
            gzip_min_bytes: 1_024,
            introspection: true,
            max_cached_statements: 500,
        }
    }
}

/// Errors of the GraphQL layer that are not GraphQL responses.
#[derive(Debug, thiserror::Error)]
pub enum GraphqlError {
    #[error("database: {0}")]
    Database(#[from] tokio_postgres::Error),
    #[error("function `{0}` does not exist")]
    MissingFunction(String),
}

pub(crate) type Root = RootNode<Node, Node, EmptySubscription<PlanCtx>>;

/// A compiled schema ready to serve: juniper's schema plus caches. `Send + Sync`; swap the
/// whole engine (e.g. behind an `ArcSwap`) to reload a schema.
pub struct Engine {
    pub(crate) schema: Arc<CompiledSchema>,
    pub(crate) limits: Limits,
    pub(crate) root: Root,
    pub(crate) signatures: Mutex<HashMap<String, Arc<FnSignature>>>,
    /// View → what its queries read (the view or its `tv_` copy) and that relation's
    /// columns, looked up once (like `signatures`: a view redefined with other columns
    /// needs a reload).
    pub(crate) view_columns: Mutex<HashMap<String, Arc<ViewSource>>>,
    /// `graphql.read_tables`: read a view's `tv_` copy when it can stand in for the view.
    pub(crate) read_tables: bool,
    /// Every queried view's columns are in `view_columns`.
    pub(crate) columns_loaded: std::sync::atomic::AtomicBool,
    pub(crate) metrics: Option<GraphqlMetrics>,
    /// `[graphql.roles]`: each role's limits (the section's with the role's in place) and
    /// statement timeout.
    pub(crate) roles: HashMap<String, (Limits, Option<u64>)>,
    /// The trusted-documents allow-list or the APQ cache; kept across schema reloads.
    pub(crate) documents: Option<Arc<persisted::Documents>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("types", &self.schema.types.len())
            .field("limits", &self.limits)
            .finish()
    }
}

impl Engine {
    /// Builds the runtime schema.
    pub fn new(schema: Arc<CompiledSchema>, limits: Limits) -> Result<Engine, SchemaError> {
        let query = Info::new(&schema, Kind::Query, "Query");
        let mutation = if schema.mutations.is_empty() {
            Info::new(&schema, Kind::NoMutation, "_EmptyMutation")
        } else {
            Info::new(&schema, Kind::Mutation, "Mutation")
        };
        let built = std::panic::catch_unwind(AssertUnwindSafe(|| {
            RootNode::new_with_info(Node, Node, EmptySubscription::new(), query, mutation, ())
        }))
        .map_err(|p| {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "invalid schema".into());
            SchemaError::Runtime(msg)
        })?;
        let mut root = built
            .limit_depth(limits.max_depth.max(4) * 2 + 8)
            .limit_tokens(limits.max_tokens)
            .limit_fields(limits.max_fields);
        if !limits.introspection {
            root = root.disable_introspection();
        }
        Ok(Engine {
            schema,
            limits,
            root,
            signatures: Mutex::new(HashMap::new()),
            view_columns: Mutex::new(HashMap::new()),
            columns_loaded: std::sync::atomic::AtomicBool::new(false),
            read_tables: false,
            metrics: None,
            roles: HashMap::new(),
            documents: None,
        })
    }

    /// Gives each role of `roles` its own limits and statement timeout. The parser's own
    /// bounds (nesting, tokens, fields) stay the section's.
    pub fn with_role_limits(
        mut self,
        roles: &std::collections::BTreeMap<String, config::RoleLimits>,
    ) -> Engine {
        self.roles = roles
            .iter()
            .map(|(role, r)| (role.clone(), (r.apply(self.limits), r.statement_timeout_ms)))
            .collect();
        self
    }

    /// With `on`, queries read a view's `tv_` copy when it exists and can stand in for the
    /// view ([`source`]).
    pub fn with_read_tables(mut self, on: bool) -> Engine {
        self.read_tables = on;
        self
    }

    /// The limits of `identity`'s requests: its role's, else the section's.
    pub(crate) fn limits_for(&self, identity: &crate::auth::Identity) -> (Limits, Option<u64>) {
        if identity.is_unrestricted() {
            return (self.limits, None);
        }
        self.roles
            .get(identity.role())
            .copied()
            .unwrap_or((self.limits, None))
    }

    /// Records metrics in `metrics` from now on.
    pub fn with_metrics(mut self, metrics: GraphqlMetrics) -> Engine {
        self.metrics = Some(metrics);
        self
    }

    /// Resolves persisted documents (allow-list or APQ) with `documents` from now on.
    pub fn with_documents(mut self, documents: Option<Arc<persisted::Documents>>) -> Engine {
        self.documents = documents;
        self
    }

    /// The persisted-document state, shared by the engines of every schema reload.
    pub fn documents(&self) -> Option<&Arc<persisted::Documents>> {
        self.documents.as_ref()
    }

    /// The compiled schema served.
    pub fn schema(&self) -> &Arc<CompiledSchema> {
        &self.schema
    }

    /// The limits applied.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The schema in SDL.
    pub fn sdl(&self) -> String {
        self.root.as_sdl()
    }

    pub(crate) fn read_limits(&self) -> ReadLimits {
        read_limits(&self.limits)
    }
}

/// The statement builder's share of `limits`.
pub(crate) fn read_limits(limits: &Limits) -> ReadLimits {
    ReadLimits {
        default_limit: limits.default_limit,
        max_limit: limits.max_limit,
        input: InputLimits {
            max_list: limits.max_list_input,
            max_depth: limits.max_filter_depth,
            max_conditions: limits.max_filter_conditions,
        },
    }
}

/// The engine being served, shared by the HTTP and Flight roles and swapped whole on a
/// schema reload (SIGHUP). Callers take the current `Arc<Engine>` per request, so work in
/// flight finishes on the engine it started with.
#[derive(Debug, Clone)]
pub struct SharedEngine(Arc<RwLock<Arc<Engine>>>);

impl SharedEngine {
    pub fn new(engine: Engine) -> SharedEngine {
        SharedEngine(Arc::new(RwLock::new(Arc::new(engine))))
    }

    /// The engine serving now.
    pub fn current(&self) -> Arc<Engine> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the engine for every holder of this handle.
    pub fn swap(&self, engine: Engine) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(engine);
    }
}

#[cfg(test)]
mod tests {
    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn engine_is_send_sync() {
        assert_send_sync::<super::Engine>();
    }
}
