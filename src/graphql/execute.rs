//! Execution of one GraphQL request: juniper parses, validates and coerces variables and
//! runs the root resolvers, which only plan; then each planned root field runs as one SQL
//! statement (queries pipelined on one connection, mutations serially, each in its own
//! transaction with the change-log row) and the JSON text PostgreSQL returns is written into
//! the response without being parsed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use deadpool_postgres::Pool;
use juniper::{
    DefaultScalarValue, GraphQLError, InputValue, OperationType, ValidatedOperation, Value,
};
use tokio_postgres::types::ToSql;

use crate::auth::{Door, Identity};
use crate::db::{RequestContext, Session};
use crate::schema::{MutationField, NamedKind, TypeRef};
use crate::sql::mutation::{CHANGE_LOG_SQL, FnSignature, SIGNATURE_SQL, build_call, split_name};
use crate::sql::select::{ReadLimits, ViewSource, build_query};
use crate::sql::{SqlError, Statement};

use super::plan::{PlanCtx, PlanKind, RootPlan};
use super::response::{Code, ErrorCode, GqlError, PathSeg, errors_only, repair, write_errors};
use super::{Engine, GraphqlError};

/// A GraphQL request (from JSON or from GET parameters).
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub query: String,
    pub operation_name: Option<String>,
    pub variables: Option<serde_json::Value>,
}

/// How a request ended, for the HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Execution happened; the body has `data` (maybe with errors).
    Executed,
    /// The request failed before execution (parse, validation, variables, limits).
    RequestError,
    /// A mutation was sent where only queries are allowed (GET).
    MutationNotAllowed,
    /// The mutation gate refused it (a rate limit): nothing ran.
    Refused,
}

/// Asked once a request is known to be a mutation, before anything runs; an error refuses
/// the request (the HTTP door's mutation rate limit).
pub type MutationGate<'a> =
    &'a (dyn Fn() -> futures_util::future::BoxFuture<'a, Result<(), GqlError>> + Sync);

/// The response body and how it ended.
#[derive(Debug, Clone)]
pub struct Executed {
    pub body: String,
    pub outcome: Outcome,
    /// Operation type label (`query`, `mutation`, `invalid`).
    pub op_type: &'static str,
    /// Number of errors in the body.
    pub error_count: usize,
}

/// Result of one root field.
enum RootResult {
    Raw(String),
    Null,
}

/// A validated operation with its root fields planned (nothing has run).
pub(crate) struct Planned {
    pub(crate) op_type: OperationType,
    /// juniper's value: one key per root field, in response order.
    pub(crate) data: Value<DefaultScalarValue>,
    /// Field errors raised while planning.
    pub(crate) errors: Vec<GqlError>,
    pub(crate) plans: Vec<RootPlan>,
}

fn parse_error_message(e: &GraphQLError) -> Vec<GqlError> {
    match e {
        GraphQLError::ParseError(sp) => {
            let msg = match &sp.item {
                juniper::ParseError::DepthLimitExceeded(n) => {
                    format!("the document is nested too deeply (syntax depth limit {n})")
                }
                juniper::ParseError::TokenLimitExceeded(n) => {
                    format!("the document has more than {n} tokens")
                }
                juniper::ParseError::FieldLimitExceeded(n) => {
                    format!("the operation has more than {n} fields (fragments expanded)")
                }
                other => format!("Syntax error: {other}"),
            };
            let code = if matches!(
                sp.item,
                juniper::ParseError::DepthLimitExceeded(_)
                    | juniper::ParseError::TokenLimitExceeded(_)
                    | juniper::ParseError::FieldLimitExceeded(_)
            ) {
                ErrorCode::LimitExceeded
            } else {
                ErrorCode::GraphqlParseFailed
            };
            vec![GqlError::new(msg, code).at(sp.span.start.line() + 1, sp.span.start.column() + 1)]
        }
        GraphQLError::ValidationError(errs) => errs
            .iter()
            .map(|r| {
                let mut e = GqlError::new(r.message(), ErrorCode::GraphqlValidationFailed);
                for l in r.locations() {
                    e = e.at(l.line() + 1, l.column() + 1);
                }
                e
            })
            .collect(),
        GraphQLError::NoOperationProvided => vec![GqlError::new(
            "the document contains no operation",
            ErrorCode::GraphqlValidationFailed,
        )],
        GraphQLError::MultipleOperationsProvided => vec![GqlError::new(
            "the document contains several operations: give operationName",
            ErrorCode::OperationNameRequired,
        )],
        GraphQLError::UnknownOperationName => vec![GqlError::new(
            "operationName matches no operation of the document",
            ErrorCode::OperationNotFound,
        )],
        GraphQLError::IsSubscription | GraphQLError::NotSubscription => vec![GqlError::new(
            "subscriptions are not supported over this endpoint",
            ErrorCode::OperationNotSupported,
        )],
        GraphQLError::NotSupported(t) => vec![GqlError::new(
            format!(
                "this schema has no {}",
                match t {
                    OperationType::Query => "queries",
                    OperationType::Mutation => "mutations",
                    OperationType::Subscription => "subscriptions",
                }
            ),
            ErrorCode::OperationNotSupported,
        )],
    }
}

fn sql_error(e: &SqlError, plan: &RootPlan) -> GqlError {
    GqlError::new(e.to_string(), e.code())
        .at(plan.location.0, plan.location.1)
        .with_path(vec![PathSeg::Key(plan.key.clone())])
}

/// `ctx` with the role's `statement_timeout`, set in the request's transaction like its
/// other settings.
pub(crate) fn with_timeout(
    ctx: &RequestContext,
    timeout_ms: Option<u64>,
) -> std::borrow::Cow<'_, RequestContext> {
    match timeout_ms {
        None => std::borrow::Cow::Borrowed(ctx),
        Some(ms) => std::borrow::Cow::Owned(
            ctx.clone()
                .with_setting("statement_timeout", ms.to_string()),
        ),
    }
}

/// The error for a statement PostgreSQL refused: a code the client can act on when the
/// SQLSTATE says the cause is theirs, else a pointer to the log (which gets the statement).
fn db_failed(plan: &RootPlan, what: &str, e: &tokio_postgres::Error, sql: &str) -> GqlError {
    match super::db_error::classify(e) {
        Some(c) => {
            tracing::info!(target: "fraiseql::graphql", field = %plan.field, sqlstate = %c.sqlstate, code = %c.code.as_str(), error = %crate::db::describe(e), "{what}");
            GqlError::new(c.message, c.code)
                .at(plan.location.0, plan.location.1)
                .with_path(vec![PathSeg::Key(plan.key.clone())])
                .with_extension("sqlstate", c.sqlstate)
        }
        None => {
            tracing::error!(target: "fraiseql::graphql", field = %plan.field, error = %crate::db::describe(e), sql = %sql, "{what}");
            internal(plan, what)
        }
    }
}

/// How one attempt at a mutation's transaction ended short of committing.
enum Attempt {
    /// PostgreSQL refused a statement (the transaction is rolled back when dropped).
    Db(tokio_postgres::Error),
    /// The function reported failure, or returned nothing; rolled back.
    Refused(GqlError),
}

impl From<tokio_postgres::Error> for Attempt {
    fn from(e: tokio_postgres::Error) -> Attempt {
        Attempt::Db(e)
    }
}

fn internal(plan: &RootPlan, what: &str) -> GqlError {
    GqlError::new(
        format!("{what}; the server log has details"),
        ErrorCode::InternalServerError,
    )
    .at(plan.location.0, plan.location.1)
    .with_path(vec![PathSeg::Key(plan.key.clone())])
}

/// The read statement of a planned root query, with its injected claims as row filters.
fn read_statement(
    engine: &Engine,
    q: &crate::schema::QueryField,
    plan: &RootPlan,
    limits: &crate::sql::select::ReadLimits,
) -> Result<Statement, SqlError> {
    let source = engine.cached_source(&q.view);
    build_query(
        &engine.schema,
        q,
        &plan.args,
        &plan.injected_filters(source.as_deref().map(|s| &s.columns)),
        &plan.selection,
        limits,
        source.as_deref(),
    )
}

/// The code [`super::plan::field_error`] put on a field error.
fn extension_code(v: &Value<DefaultScalarValue>) -> Option<ErrorCode> {
    v.as_object_value()?
        .get_field_value("code")?
        .as_scalar()
        .and_then(|s| match s {
            DefaultScalarValue::String(s) => ErrorCode::parse(s),
            _ => None,
        })
}

impl Engine {
    fn request_error(&self, errors: Vec<GqlError>) -> Executed {
        self.count_errors(&errors);
        Executed {
            body: errors_only(&errors),
            outcome: Outcome::RequestError,
            op_type: "invalid",
            error_count: errors.len(),
        }
    }

    fn count_errors(&self, errors: &[GqlError]) {
        if let Some(m) = &self.metrics {
            for e in errors {
                m.errors_total.with_label_values(&[e.code.as_str()]).inc();
            }
        }
    }

    fn plan(
        &self,
        req: &Request,
        allow_mutation: bool,
        identity: &Identity,
        door: Door,
    ) -> Result<Planned, Executed> {
        if req.query.len() > self.limits.max_query_bytes {
            return Err(self.request_error(vec![GqlError::new(
                format!(
                    "the query is {} bytes, more than the limit of {}",
                    req.query.len(),
                    self.limits.max_query_bytes
                ),
                ErrorCode::LimitExceeded,
            )]));
        }
        if req.query.trim().is_empty() {
            return Err(self.request_error(vec![GqlError::new(
                "the query is empty",
                ErrorCode::GraphqlParseFailed,
            )]));
        }
        if let Some(e) = self.unknown_variable_type(&req.query) {
            return Err(self.request_error(vec![e]));
        }
        let op = ValidatedOperation::new(&req.query, req.operation_name.as_deref(), &self.root)
            .map_err(|e| self.request_error(parse_error_message(&e)))?;
        let op_type = op.operation_type();
        if op_type == OperationType::Mutation && !allow_mutation {
            let errors = vec![GqlError::new(
                "mutations are only accepted with POST",
                ErrorCode::MethodNotAllowed,
            )];
            self.count_errors(&errors);
            return Err(Executed {
                body: errors_only(&errors),
                outcome: Outcome::MutationNotAllowed,
                op_type: "mutation",
                error_count: 1,
            });
        }
        let variables: juniper::Variables<DefaultScalarValue> = match &req.variables {
            None | Some(serde_json::Value::Null) => juniper::Variables::new(),
            Some(serde_json::Value::Object(map)) => {
                let mut vars = juniper::Variables::new();
                for (k, v) in map {
                    let iv: InputValue<DefaultScalarValue> = serde_json::from_value(v.clone())
                        .map_err(|_| {
                            self.request_error(vec![GqlError::new(
                                format!("variable `${k}` is not a valid value"),
                                ErrorCode::BadUserInput,
                            )])
                        })?;
                    vars.insert(k.clone(), iv);
                }
                vars
            }
            Some(_) => {
                return Err(self.request_error(vec![GqlError::new(
                    "`variables` must be an object",
                    ErrorCode::BadRequest,
                )]));
            }
        };
        let ctx = PlanCtx::new(
            Arc::clone(&self.schema),
            self.limits_for(identity).0,
            identity.clone(),
            door,
        );
        let (data, errors) = op.execute_sync(&variables, &ctx).map_err(|e| {
            let mut errs = parse_error_message(&e);
            for err in &mut errs {
                if err.code == ErrorCode::GraphqlValidationFailed {
                    err.code = ErrorCode::BadUserInput.into();
                }
            }
            self.request_error(errs)
        })?;
        if let Some(msg) = ctx
            .limit_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            return Err(self.request_error(vec![GqlError::new(msg, ErrorCode::LimitExceeded)]));
        }
        let errors = errors
            .iter()
            .map(|e| {
                let mut g = GqlError::new(
                    e.error().message(),
                    extension_code(e.error().extensions())
                        .unwrap_or(ErrorCode::InternalServerError),
                )
                .at(e.location().line() + 1, e.location().column() + 1);
                g.path = e.path().iter().map(|p| PathSeg::Key(p.clone())).collect();
                g
            })
            .collect();
        let plans = std::mem::take(&mut *ctx.plans.lock().unwrap_or_else(|p| p.into_inner()));
        let mut data = data;
        super::authz::filter_introspection(&self.schema, &ctx, &mut data);
        Ok(Planned {
            op_type,
            data,
            errors,
            plans,
        })
    }

    /// The SQL statements a query operation would run, by response key, without running
    /// them (for `EXPLAIN`, benchmarks against `pgbench`, and debugging). Errors are the
    /// response body a request would get.
    pub fn explain(&self, req: &Request) -> Result<Vec<(String, Statement)>, String> {
        let planned = self
            .plan_guarded(req, false, &Identity::unrestricted(), Door::Http)
            .map_err(|e| e.body)?;
        let limits = self.read_limits();
        planned
            .plans
            .iter()
            .map(|plan| {
                let q = self
                    .schema
                    .query(&plan.field)
                    .ok_or_else(|| format!("unknown query {}", plan.field))?;
                read_statement(self, q, plan, &limits)
                    .map(|s| (plan.key.clone(), s))
                    .map_err(|e| e.to_string())
            })
            .collect()
    }

    /// A variable declared with a type the schema does not have. juniper's validation
    /// panics on one when the variable also has a default value (`$w: Nope = 1`, found by
    /// the `graphql_request` fuzz target), so it is refused here first, as a validation
    /// error. A document that does not parse is left to juniper's own error.
    fn unknown_variable_type(&self, query: &str) -> Option<GqlError> {
        let doc =
            juniper::parser::parse_document_source::<DefaultScalarValue>(query, &self.root.schema)
                .ok()?;
        doc.iter().find_map(|d| {
            let juniper::Definition::Operation(op) = d else {
                return None;
            };
            let vars = op.item.variables_definition.as_ref()?;
            vars.item.items.iter().find_map(|(_, v)| {
                let name = v.var_type.item.innermost_name();
                let start = &v.var_type.span.start;
                self.root.schema.type_by_name(name).is_none().then(|| {
                    GqlError::new(
                        format!("Unknown type \"{name}\""),
                        ErrorCode::GraphqlValidationFailed,
                    )
                    .at(start.line() + 1, start.column() + 1)
                })
            })
        })
    }

    /// [`Engine::plan`], with a panic inside juniper turned into an error response.
    pub(crate) fn plan_guarded(
        &self,
        req: &Request,
        allow_mutation: bool,
        identity: &Identity,
        door: Door,
    ) -> Result<Planned, Executed> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.plan(req, allow_mutation, identity, door)
        }))
        .unwrap_or_else(|_| {
            tracing::error!(target: "fraiseql::graphql", query = %req.query, "planning panicked");
            Err(self.request_error(vec![GqlError::new(
                "the request could not be processed; the server log has details",
                ErrorCode::InternalServerError,
            )]))
        })
    }

    /// Executes a request. `allow_mutation` is false for GET; `identity` is who asks: the
    /// schema's rules are planned against it and its database context is applied to every
    /// statement the request runs.
    pub async fn execute(
        &self,
        pool: &Pool,
        identity: &Identity,
        req: &Request,
        allow_mutation: bool,
    ) -> Executed {
        self.execute_gated(pool, identity, req, allow_mutation, None)
            .await
    }

    /// [`Engine::execute`], asking `gate` before a mutation runs.
    pub async fn execute_gated(
        &self,
        pool: &Pool,
        identity: &Identity,
        req: &Request,
        allow_mutation: bool,
        gate: Option<MutationGate<'_>>,
    ) -> Executed {
        let started = Instant::now();
        let ctx = identity.request_context();
        let op_name = metric_name(req.operation_name.as_deref());
        let planned = match self.plan_guarded(req, allow_mutation, identity, Door::Http) {
            Ok(p) => p,
            Err(done) => {
                self.observe(done.op_type, &op_name, "error", started);
                return done;
            }
        };
        let op_type = match planned.op_type {
            OperationType::Mutation => "mutation",
            _ => "query",
        };
        if let (OperationType::Mutation, Some(gate)) = (planned.op_type, gate)
            && let Err(e) = gate().await
        {
            let errors = vec![e];
            self.count_errors(&errors);
            self.observe(op_type, &op_name, "error", started);
            return Executed {
                body: errors_only(&errors),
                outcome: Outcome::Refused,
                op_type,
                error_count: 1,
            };
        }
        let Planned {
            data,
            mut errors,
            plans,
            ..
        } = planned;
        let mut results: HashMap<String, RootResult> = HashMap::new();
        let mut data_null = data.is_null();
        if !data_null && !plans.is_empty() {
            let (limits, timeout) = self.limits_for(identity);
            let outcome = match op_type {
                "mutation" => {
                    let ctx = with_timeout(identity.write_context(), timeout);
                    self.run_mutations(pool, &ctx, &plans).await
                }
                _ => {
                    let ctx = with_timeout(ctx, timeout);
                    self.run_queries(pool, &ctx, &plans, &super::read_limits(&limits))
                        .await
                }
            };
            for (plan, res) in plans.iter().zip(outcome) {
                let (nullable, ty) = self.root_type(plan);
                match res {
                    Ok(Some(raw)) => {
                        let parent = if plan.kind == PlanKind::Mutation {
                            "Mutation"
                        } else {
                            "Query"
                        };
                        if let Some(fixed) = repair(&raw, &plan.key, parent, &ty, &plan.selection) {
                            errors.extend(fixed.errors);
                            if fixed.propagate {
                                data_null = true;
                            }
                            results.insert(plan.key.clone(), RootResult::Raw(fixed.text));
                        } else {
                            results.insert(plan.key.clone(), RootResult::Raw(raw));
                        }
                    }
                    Ok(None) => {
                        if !nullable {
                            errors.push(
                                GqlError::new(
                                    format!(
                                        "Cannot return null for non-nullable field {}.",
                                        plan.field
                                    ),
                                    if plan.kind == PlanKind::Mutation {
                                        ErrorCode::InternalServerError
                                    } else {
                                        ErrorCode::NotFound
                                    },
                                )
                                .at(plan.location.0, plan.location.1)
                                .with_path(vec![PathSeg::Key(plan.key.clone())]),
                            );
                            data_null = true;
                        }
                        results.insert(plan.key.clone(), RootResult::Null);
                    }
                    Err(e) => {
                        errors.push(e);
                        if !nullable {
                            data_null = true;
                        }
                        results.insert(plan.key.clone(), RootResult::Null);
                    }
                }
            }
        }
        let mut body = String::with_capacity(
            64 + results
                .values()
                .map(|r| match r {
                    RootResult::Raw(s) => s.len() + 8,
                    RootResult::Null => 8,
                })
                .sum::<usize>(),
        );
        body.push('{');
        if !errors.is_empty() {
            write_errors(&mut body, &errors);
            body.push(',');
        }
        body.push_str("\"data\":");
        match (&data, data_null) {
            (Value::Object(obj), false) => {
                body.push('{');
                for (i, (k, v)) in obj.iter().enumerate() {
                    if i > 0 {
                        body.push(',');
                    }
                    body.push_str(&serde_json::to_string(k).unwrap_or_default());
                    body.push(':');
                    match results.get(k.as_str()) {
                        Some(RootResult::Raw(raw)) => body.push_str(raw),
                        Some(RootResult::Null) => body.push_str("null"),
                        None => body
                            .push_str(&serde_json::to_string(v).unwrap_or_else(|_| "null".into())),
                    }
                }
                body.push('}');
            }
            _ => body.push_str("null"),
        }
        body.push('}');
        self.count_errors(&errors);
        let outcome = if errors.is_empty() {
            "ok"
        } else if data_null {
            "error"
        } else {
            "partial"
        };
        self.observe(op_type, &op_name, outcome, started);
        Executed {
            body,
            outcome: Outcome::Executed,
            op_type,
            error_count: errors.len(),
        }
    }

    fn observe(&self, op_type: &str, name: &str, outcome: &str, started: Instant) {
        if let Some(m) = &self.metrics {
            m.operations_total
                .with_label_values(&[op_type, name, outcome])
                .inc();
            m.request_duration_seconds
                .with_label_values(&[op_type])
                .observe(started.elapsed().as_secs_f64());
        }
    }

    fn observe_sql(&self, op_type: &str, started: Instant) {
        if let Some(m) = &self.metrics {
            m.sql_duration_seconds
                .with_label_values(&[op_type])
                .observe(started.elapsed().as_secs_f64());
        }
    }

    fn root_type(&self, plan: &RootPlan) -> (bool, TypeRef) {
        let (nullable, list, name) = match plan.kind {
            PlanKind::Query => self
                .schema
                .query(&plan.field)
                .map(|q| (q.nullable, q.returns_list, q.return_type.clone())),
            PlanKind::Mutation => self
                .schema
                .mutation(&plan.field)
                .map(|m| (m.nullable, m.returns_list, m.return_type.clone())),
        }
        .unwrap_or((true, false, String::new()));
        (
            nullable,
            TypeRef {
                name,
                kind: NamedKind::Object,
                nullable,
                list,
                item_nullable: false,
            },
        )
    }

    /// A pooled connection with room in its statement cache, or every root field's error.
    async fn connection(
        &self,
        pool: &Pool,
        plans: &[RootPlan],
    ) -> Result<deadpool_postgres::Client, Vec<Result<Option<String>, GqlError>>> {
        let client = match pool.get().await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(target: "fraiseql::graphql", error = %e, "no database connection");
                return Err(plans
                    .iter()
                    .map(|p| {
                        Err(GqlError::new(
                            "the database is unavailable",
                            ErrorCode::ServiceUnavailable,
                        )
                        .at(p.location.0, p.location.1)
                        .with_path(vec![PathSeg::Key(p.key.clone())]))
                    })
                    .collect());
            }
        };
        if client.statement_cache.size() >= self.limits.max_cached_statements {
            client.statement_cache.clear();
        }
        Ok(client)
    }

    async fn run_queries(
        &self,
        pool: &Pool,
        ctx: &RequestContext,
        plans: &[RootPlan],
        limits: &ReadLimits,
    ) -> Vec<Result<Option<String>, GqlError>> {
        self.load_view_columns(pool).await;
        let mut statements: Vec<Result<(Statement, bool), GqlError>> = Vec::new();
        for plan in plans {
            let Some(q) = self.schema.query(&plan.field) else {
                statements.push(Err(internal(plan, "unknown query")));
                continue;
            };
            statements.push(
                read_statement(self, q, plan, limits)
                    .map(|s| (s, q.returns_list))
                    .map_err(|e| sql_error(&e, plan)),
            );
        }
        if statements.iter().all(|s| s.is_err()) {
            return statements.into_iter().map(|s| s.map(|_| None)).collect();
        }
        let started = Instant::now();
        let client = match self.connection(pool, plans).await {
            Ok(c) => c,
            Err(failed) => return failed,
        };
        let all_failed = || {
            plans
                .iter()
                .map(|p| Err(internal(p, "the query failed")))
                .collect()
        };
        let query_failed = |plan: &RootPlan, sql: &str, e: &tokio_postgres::Error| {
            db_failed(plan, "the query failed", e, sql)
        };
        // Dropped with the request (the client went away), the session cancels what runs.
        let session = match Session::open(client, ctx).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(target: "fraiseql::graphql", error = %crate::db::describe(&e), "preparing the request's session settings failed");
                return all_failed();
            }
        };
        let client = session.client();
        // Prepared first (from the connection's cache: no I/O once seen), so that each
        // statement below is sent on its first poll.
        let prepared = juniper::futures::future::join_all(statements.into_iter().zip(plans).map(
            |(st, plan)| async move {
                let (stmt, _list) = st?;
                match client.prepare_cached(&stmt.sql).await {
                    Ok(prepared) => Ok((prepared, stmt)),
                    Err(e) => Err(query_failed(plan, &stmt.sql, &e)),
                }
            },
        ))
        .await;
        let mut queries: Vec<_> = prepared
            .into_iter()
            .zip(plans)
            .map(|(p, plan)| {
                Box::pin(futures_util::future::maybe_done(async move {
                    let (prepared, stmt) = p?;
                    let params: Vec<&(dyn ToSql + Sync)> =
                        stmt.params.iter().map(|p| p.as_sql()).collect();
                    match client.query_opt(&prepared, &params).await {
                        Ok(row) => Ok(row.and_then(|r| r.get::<_, Option<String>>(0))),
                        Err(e) => Err(query_failed(plan, &stmt.sql, &e)),
                    }
                }))
            })
            .collect();
        // One flight, in this order: BEGIN and the settings, every statement, COMMIT. Each
        // is polled once explicitly, so the order does not depend on how a combinator
        // schedules its futures.
        let mut setup_f = Box::pin(futures_util::future::maybe_done(session.setup(ctx)));
        let _ = futures_util::poll!(setup_f.as_mut());
        for q in &mut queries {
            let _ = futures_util::poll!(q.as_mut());
        }
        let mut commit_f = Box::pin(futures_util::future::maybe_done(session.commit()));
        let _ = futures_util::poll!(commit_f.as_mut());
        futures_util::future::join3(
            setup_f.as_mut(),
            futures_util::future::join_all(queries.iter_mut().map(|q| q.as_mut())),
            commit_f.as_mut(),
        )
        .await;
        // Joined above: every output is there.
        let ended = setup_f
            .as_mut()
            .take_output()
            .zip(commit_f.as_mut().take_output());
        let out: Vec<_> = queries
            .iter_mut()
            .zip(plans)
            .map(|(q, plan)| {
                q.as_mut()
                    .take_output()
                    .unwrap_or_else(|| Err(internal(plan, "the query failed")))
            })
            .collect();
        drop((setup_f, commit_f, queries));
        let ended = ended.map(|(setup, commit)| {
            setup
                .map_err(|e| (e, "applying the request's session settings failed"))
                .and_then(|()| commit.map_err(|e| (e, "ending the request's transaction failed")))
        });
        match ended {
            Some(Ok(())) => {}
            failed => {
                if let Some(Err((e, what))) = failed {
                    tracing::error!(target: "fraiseql::graphql", error = %crate::db::describe(&e), "{what}");
                }
                return all_failed();
            }
        }
        session.release();
        self.observe_sql("query", started);
        out
    }

    /// Whether every queried view's columns were read from the catalog.
    pub fn view_columns_loaded(&self) -> bool {
        self.columns_loaded
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// What a query over `view` reads (the view or its `tv_` copy) and that relation's
    /// columns, when looked up already.
    pub(crate) fn cached_source(&self, view: &str) -> Option<Arc<ViewSource>> {
        self.view_columns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(view)
            .cloned()
    }

    /// Looks up, once per engine (so at start and after each SIGHUP reload), what every
    /// queried view reads ([`super::source`]: the view, or with `graphql.read_tables` its
    /// `tv_` copy) and that relation's columns: `where`/`orderBy` conditions and injected
    /// row filters on a field whose key names a column use that column (and its index). A
    /// failed lookup is logged, leaves the view and its `data` keys in place and is tried
    /// again by the next request.
    pub async fn load_view_columns(&self, pool: &Pool) {
        if self
            .columns_loaded
            .load(std::sync::atomic::Ordering::Acquire)
        {
            return;
        }
        let mut missing: Vec<&str> = self
            .schema
            .queries
            .iter()
            .filter(|q| self.cached_source(&q.view).is_none())
            .map(|q| q.view.as_str())
            .collect();
        missing.sort_unstable();
        missing.dedup();
        if missing.is_empty() {
            self.columns_loaded
                .store(true, std::sync::atomic::Ordering::Release);
            return;
        }
        let client = match pool.get().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(target: "fraiseql::graphql", error = %e, "no connection to look up view columns");
                return;
            }
        };
        let mut all_found = true;
        for view in missing {
            match super::source::resolve(&client, view, self.read_tables).await {
                Ok(r) => {
                    if let Some(table) = &r.source.table {
                        tracing::info!(target: "fraiseql::graphql", view, table = %table, "reading the table-backed copy (graphql.read_tables)");
                    }
                    if let Some(why) = &r.skipped {
                        tracing::warn!(target: "fraiseql::graphql", view, "{why}; reading the view");
                    }
                    self.view_columns
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(view.to_owned(), Arc::new(r.source));
                }
                Err(e) => {
                    all_found = false;
                    tracing::warn!(target: "fraiseql::graphql", view, error = %crate::db::describe(&e), "looking up the view's columns failed");
                }
            }
        }
        if all_found {
            self.columns_loaded
                .store(true, std::sync::atomic::Ordering::Release);
        }
    }

    async fn signature(
        &self,
        client: &deadpool_postgres::Client,
        function: &str,
    ) -> Result<Arc<FnSignature>, GraphqlError> {
        if let Some(s) = self
            .signatures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(function)
        {
            return Ok(Arc::clone(s));
        }
        let (schema, name) = split_name(function);
        let rows = client.query(SIGNATURE_SQL, &[&schema, &name]).await?;
        let row = rows
            .first()
            .ok_or_else(|| GraphqlError::MissingFunction(function.to_owned()))?;
        let names: Vec<String> = row.get(0);
        let types: Vec<String> = row.get(1);
        let sig = Arc::new(FnSignature {
            params: names.into_iter().zip(types).collect(),
        });
        self.signatures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(function.to_owned(), Arc::clone(&sig));
        Ok(sig)
    }

    async fn run_mutations(
        &self,
        pool: &Pool,
        ctx: &RequestContext,
        plans: &[RootPlan],
    ) -> Vec<Result<Option<String>, GqlError>> {
        // Dropped mid-mutation (the request timeout, the client gone), the statement is
        // cancelled on the server and its transaction rolled back, as a read's is.
        let mut client = match self.connection(pool, plans).await {
            Ok(c) => crate::db::request::Held::new(c),
            Err(failed) => return failed,
        };
        let mut out = Vec::with_capacity(plans.len());
        for plan in plans {
            let Some(m) = self.schema.mutation(&plan.field) else {
                out.push(Err(internal(plan, "unknown mutation")));
                continue;
            };
            let started = Instant::now();
            let r = self.run_mutation(client.client(), ctx, m, plan).await;
            self.observe_sql("mutation", started);
            out.push(r);
        }
        client.release();
        out
    }

    async fn run_mutation(
        &self,
        client: &mut deadpool_postgres::Client,
        ctx: &RequestContext,
        m: &MutationField,
        plan: &RootPlan,
    ) -> Result<Option<String>, GqlError> {
        let sig = self.signature(client, &m.function).await.map_err(|e| {
            tracing::error!(target: "fraiseql::graphql", mutation = %m.name, error = %e, "function lookup failed");
            internal(plan, "the mutation is not available")
        })?;
        let stmt = build_call(
            &self.schema,
            m,
            &sig,
            &plan.args,
            &plan.injected,
            Some(&plan.selection),
        )
        .map_err(|e| sql_error(&e, plan))?;
        // A serialization failure or deadlock is run again once: the usual cure, and what a
        // client would do anyway.
        let mut retried = false;
        loop {
            match self.mutation_attempt(client, ctx, m, plan, &stmt).await {
                Ok(json) => return Ok(json),
                Err(Attempt::Refused(e)) => return Err(e),
                Err(Attempt::Db(e)) => {
                    let retryable = super::db_error::classify(&e).is_some_and(|c| c.retryable);
                    if retryable && !retried {
                        retried = true;
                        tracing::info!(target: "fraiseql::graphql", mutation = %m.name, error = %crate::db::describe(&e), "retrying the mutation once");
                        continue;
                    }
                    return Err(db_failed(plan, "the mutation failed", &e, &stmt.sql));
                }
            }
        }
    }

    /// One transaction of a mutation: the request's settings, the function, the change-log
    /// row, the commit.
    async fn mutation_attempt(
        &self,
        client: &mut deadpool_postgres::Client,
        ctx: &RequestContext,
        m: &MutationField,
        plan: &RootPlan,
        stmt: &crate::sql::Statement,
    ) -> Result<Option<String>, Attempt> {
        let tx = client.transaction().await?;
        crate::db::request::apply(&*tx, ctx).await?;
        let prepared = tx.prepare_cached(&stmt.sql).await?;
        let params: Vec<&(dyn ToSql + Sync)> = stmt.params.iter().map(|p| p.as_sql()).collect();
        let row = tx.query_opt(&prepared, &params).await?;
        let Some(row) = row else {
            let _ = tx.rollback().await;
            return Err(Attempt::Refused(internal(
                plan,
                "the mutation function returned no row",
            )));
        };
        let succeeded: Option<bool> = row.try_get(0)?;
        if succeeded != Some(true) {
            let _ = tx.rollback().await;
            let class: Option<String> = row.try_get(2)?;
            let message: Option<String> = row.try_get(3)?;
            let class = class.filter(|c| !c.is_empty());
            let code = class
                .as_deref()
                .and_then(super::db_error::class_code)
                .unwrap_or(Code::Engine(ErrorCode::MutationFailed));
            let mut e = GqlError::new(
                message.unwrap_or_else(|| format!("{} failed", m.name)),
                code,
            )
            .at(plan.location.0, plan.location.1)
            .with_path(vec![PathSeg::Key(plan.key.clone())]);
            if let Some(class) = class {
                e = e.with_extension("errorClass", super::db_error::bounded(&class));
            }
            return Err(Attempt::Refused(e));
        }
        let state_changed: Option<bool> = row.try_get(1)?;
        if state_changed == Some(true) {
            let entity_id: Option<uuid::Uuid> = row.try_get(4)?;
            let entity_type: Option<String> = row.try_get(5)?;
            let entity: Option<serde_json::Value> = row.try_get(6)?;
            let updated: Option<Vec<String>> = row.try_get(7)?;
            let entity_name = entity_type
                .filter(|t| !t.is_empty())
                .unwrap_or_else(|| m.return_type.clone());
            let op = m.operation.change_op();
            let annotation = serde_json::json!({
                "name": m.name,
                "entity": entity,
                "updated_fields": updated,
            });
            let log = tx.prepare_cached(CHANGE_LOG_SQL).await?;
            tx.execute(
                &log,
                &[
                    &entity_name,
                    &entity_id,
                    &op,
                    &entity,
                    &updated,
                    &annotation,
                ],
            )
            .await?;
        }
        let json: Option<String> = row.try_get(8)?;
        tx.commit().await?;
        Ok(json)
    }
}

/// A bounded label for an operation name.
/// Distinct operation names kept as metric labels; later names are counted as "other".
/// Clients choose operation names, so without a bound they could create unbounded series.
const MAX_METRIC_NAMES: usize = 200;

fn metric_name(name: Option<&str>) -> String {
    static SEEN: std::sync::LazyLock<std::sync::Mutex<std::collections::HashSet<String>>> =
        std::sync::LazyLock::new(Default::default);
    match name {
        None => "anonymous".into(),
        Some(n)
            if !n.is_empty()
                && n.len() <= 64
                && n.chars().all(|c| c == '_' || c.is_ascii_alphanumeric()) =>
        {
            let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
            if seen.contains(n) {
                n.to_owned()
            } else if seen.len() < MAX_METRIC_NAMES {
                seen.insert(n.to_owned());
                n.to_owned()
            } else {
                "other".into()
            }
        }
        Some(_) => "invalid".into(),
    }
}
