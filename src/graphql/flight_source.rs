//! GraphQL tickets over the real engine: [`EngineSource`] implements the Flight server's
//! [`GraphQLSource`] seam with the [`Engine`] that serves `/graphql`.
//!
//! It owns three things and nothing else:
//!
//! - **Planning a ticket's query** exactly as a `/graphql` request is planned (the engine's
//!   own parsing, validation, variable coercion and limits, so the error messages are the
//!   ones a `/graphql` client would read, and never contain SQL), then checking that the
//!   operation is a query with exactly one root field, a list query. With the
//!   trusted-documents allow-list on, only its documents (by exact text) are planned.
//! - **The row shape**: the Arrow-facing [`GqlField`]s of that field's items, derived from the
//!   compiled schema and the planned selection (response keys, so aliases are column names;
//!   nested objects become structs, lists become lists; nullability from the schema). Enums
//!   are their GraphQL names (`String`); `BigInt` is `Int` (Int64); `Time` is `String`.
//! - **Streaming the rows**: the statement is the one `/graphql` runs for that field
//!   ([`build_list_rows`]: same view, filters, order, limit/offset and per-item JSON object)
//!   but returning one row per item instead of one `json_agg` text, so items flow from
//!   PostgreSQL to the Arrow builders in chunks and the result is never held whole. Each
//!   item gets the same sentinel repair as over HTTP; an item that would be a GraphQL error
//!   (a null in a non-null field, an Int out of range) ends the stream with that error.
//!
//! Authentication is the Flight layer's (bearer tokens); like `/graphql`, queries run
//! without a per-user role. The source holds a [`SharedEngine`], so a schema reload on
//! SIGHUP is seen by the next ticket. The same `graphql.*` limits apply as over HTTP, in
//! particular `graphql.max_limit` caps the rows of one ticket.

use std::pin::pin;
use std::sync::Arc;

use deadpool_postgres::Pool;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream;
use juniper::OperationType;
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio_postgres::RowStream;

use crate::auth::Identity;
use crate::db::Session;
use crate::flight::{
    GqlField, GqlType, GraphQLRows, GraphQLSource, GraphQLSourceError, NamedQuery,
};
use crate::schema::{NamedKind, ScalarKind, TypeRef};
use crate::sql::Statement;
use crate::sql::select::{SelItem, Selection, build_list_rows};

use super::execute::{Executed, Request};
use super::response::{ErrorCode, GqlError, repair};
use super::{Engine, SharedEngine};

/// Items sent from the reading task to the batcher at a time.
const CHUNK_ROWS: usize = 256;
/// Chunks buffered between them (back-pressure beyond).
const CHUNK_QUEUE: usize = 4;

/// The Flight [`GraphQLSource`] over the GraphQL engine and the shared pool.
#[derive(Debug, Clone)]
pub struct EngineSource {
    engine: SharedEngine,
    pool: Pool,
}

impl EngineSource {
    pub fn new(engine: SharedEngine, pool: Pool) -> EngineSource {
        EngineSource { engine, pool }
    }
}

/// A ticket's query, validated and planned; nothing has run.
struct Prepared {
    /// Response key of the root field.
    key: String,
    /// The root field's item type (`Post`).
    item_type: String,
    selection: Selection,
    fields: Vec<GqlField>,
    statement: Statement,
}

fn joined(errors: &[(String, String)]) -> GraphQLSourceError {
    let message = errors
        .iter()
        .map(|(m, _)| m.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    if errors
        .iter()
        .any(|(_, c)| c == ErrorCode::InternalServerError.as_str())
    {
        GraphQLSourceError::Internal(message)
    } else if errors
        .iter()
        .any(|(_, c)| c == ErrorCode::ServiceUnavailable.as_str())
    {
        GraphQLSourceError::Unavailable(message)
    } else if errors
        .iter()
        .any(|(_, c)| c == ErrorCode::Forbidden.as_str())
    {
        // A schema rule refused the identity (role, actor, missing injected claim).
        GraphQLSourceError::Forbidden(message)
    } else {
        GraphQLSourceError::Invalid(message)
    }
}

/// The errors of a response the engine refused to execute.
fn refused(done: &Executed) -> GraphQLSourceError {
    let body: Value = serde_json::from_str(&done.body).unwrap_or(Value::Null);
    let errors: Vec<(String, String)> = body["errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    (
                        e["message"].as_str().unwrap_or_default().to_owned(),
                        e["extensions"]["code"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    if errors.is_empty() {
        return GraphQLSourceError::Invalid("the query was refused".into());
    }
    joined(&errors)
}

fn field_errors(errors: &[GqlError]) -> GraphQLSourceError {
    let list: Vec<(String, String)> = errors
        .iter()
        .map(|e| (e.message.clone(), e.code.as_str().to_owned()))
        .collect();
    joined(&list)
}

fn scalar_type(s: ScalarKind) -> GqlType {
    match s {
        ScalarKind::Int | ScalarKind::BigInt => GqlType::Int,
        ScalarKind::Float => GqlType::Float,
        ScalarKind::String | ScalarKind::Time => GqlType::String,
        ScalarKind::Id => GqlType::Id,
        ScalarKind::Boolean => GqlType::Boolean,
        ScalarKind::Uuid => GqlType::Uuid,
        ScalarKind::DateTime => GqlType::DateTime,
        ScalarKind::Date => GqlType::Date,
        ScalarKind::Decimal => GqlType::Decimal,
        ScalarKind::Json => GqlType::Json,
    }
}

/// The row shape of a planned selection, in response order.
fn fields_of(sel: &Selection) -> Vec<GqlField> {
    sel.items
        .iter()
        .map(|item| match item {
            SelItem::Typename { key } => GqlField::new(key, GqlType::String, false),
            // Withheld fields are masked (a rejected one refuses the ticket beforehand).
            SelItem::Withheld { key, field, .. } => {
                GqlField::new(key, column_type(&field.ty, None), true)
            }
            SelItem::Field { key, field, sub } => {
                GqlField::new(key, column_type(&field.ty, sub.as_ref()), field.ty.nullable)
            }
        })
        .collect()
}

/// The column type of a field of type `ty` (`sub`: an object field's selection).
fn column_type(ty: &crate::schema::TypeRef, sub: Option<&Selection>) -> GqlType {
    let named = match ty.kind {
        NamedKind::Scalar(s) => scalar_type(s),
        NamedKind::Enum => GqlType::String,
        NamedKind::Object => GqlType::Object(sub.map(fields_of).unwrap_or_default()),
        NamedKind::Input => GqlType::Json,
    };
    if ty.list {
        GqlType::List(Box::new(named))
    } else {
        named
    }
}

/// True when the selection withholds a field with `on_deny = "reject"` somewhere.
fn rejects(sel: &Selection) -> bool {
    sel.items.iter().any(|i| match i {
        SelItem::Withheld { reject, .. } => *reject,
        SelItem::Field { sub: Some(s), .. } => rejects(s),
        _ => false,
    })
}

fn describe_keys(keys: &[String]) -> String {
    match keys {
        [] => "none".into(),
        keys => format!(
            "{} ({})",
            keys.len(),
            keys.iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Plans `query` as `/graphql` would and checks it is one list query.
fn prepare(
    engine: &Engine,
    identity: &Identity,
    query: &str,
    variables: &Map<String, Value>,
    operation_name: Option<&str>,
) -> Result<Prepared, GraphQLSourceError> {
    if let Some(d) = engine.documents()
        && !d.admits(query, identity)
    {
        return Err(GraphQLSourceError::Forbidden(
            "only trusted documents run on this server, and this document is not one of them"
                .into(),
        ));
    }
    let req = Request {
        query: query.to_owned(),
        operation_name: operation_name.map(str::to_owned),
        variables: Some(Value::Object(variables.clone())),
    };
    let planned = engine
        .plan_guarded(&req, true, identity, crate::auth::Door::Flight)
        .map_err(|done| refused(&done))?;
    if planned.op_type != OperationType::Query {
        return Err(GraphQLSourceError::Invalid(
            "a GraphQL ticket runs a query; this operation is a mutation".into(),
        ));
    }
    if !planned.errors.is_empty() {
        return Err(field_errors(&planned.errors));
    }
    let keys: Vec<String> = planned
        .data
        .as_object_value()
        .map(|o| o.iter().map(|(k, _)| k.to_string()).collect())
        .unwrap_or_default();
    let mut plans = planned.plans;
    let plan = match (plans.pop(), plans.is_empty(), keys.as_slice()) {
        (Some(plan), true, [key]) if *key == plan.key => plan,
        _ => {
            return Err(GraphQLSourceError::Invalid(format!(
                "a GraphQL ticket selects exactly one root field, a list query; this operation selects {}",
                describe_keys(&keys)
            )));
        }
    };
    let q = engine.schema.query(&plan.field).ok_or_else(|| {
        GraphQLSourceError::Internal(format!("query `{}` is not in the schema", plan.field))
    })?;
    if !q.returns_list {
        return Err(GraphQLSourceError::Invalid(format!(
            "`{}` returns one {}, not a list: a GraphQL ticket needs a list query",
            plan.field, q.return_type
        )));
    }
    if rejects(&plan.selection) {
        return Err(GraphQLSourceError::Forbidden(format!(
            "`{}` selects a field this token may not read",
            plan.key
        )));
    }
    let source = engine.cached_source(&q.view);
    let statement = build_list_rows(
        &engine.schema,
        q,
        &plan.args,
        &plan.injected_filters(source.as_deref().map(|s| &s.columns)),
        &plan.selection,
        &super::read_limits(&engine.limits_for(identity).0),
        source.as_deref(),
    )
    .map_err(|e| GraphQLSourceError::Invalid(e.to_string()))?;
    Ok(Prepared {
        fields: fields_of(&plan.selection),
        key: plan.key,
        item_type: q.return_type.clone(),
        selection: plan.selection,
        statement,
    })
}

/// A database error, logged with the statement; the client sees no SQL.
fn query_failed(e: &tokio_postgres::Error, sql: &str) -> GraphQLSourceError {
    tracing::error!(target: "fraiseql::graphql", error = %crate::db::describe(e), %sql, "flight graphql query failed");
    if e.is_closed() {
        GraphQLSourceError::Unavailable("the database is unavailable".into())
    } else {
        GraphQLSourceError::Internal("the query failed; the server log has details".into())
    }
}

/// Turns one item's JSON text into a value, with the `/graphql` sentinel repair.
struct Items {
    key: String,
    item: TypeRef,
    selection: Selection,
}

impl Items {
    fn value(&self, row: &tokio_postgres::Row, index: u64) -> Result<Value, GraphQLSourceError> {
        let text: Option<&str> = row
            .try_get(0)
            .map_err(|e| GraphQLSourceError::Internal(format!("row {index}: {e}")))?;
        let Some(text) = text else {
            return Ok(Value::Null);
        };
        let parse = |t: &str| {
            serde_json::from_str(t).map_err(|e| {
                GraphQLSourceError::Internal(format!(
                    "row {index}: invalid JSON from the view: {e}"
                ))
            })
        };
        match repair(text, &self.key, "Query", &self.item, &self.selection) {
            None => parse(text),
            Some(fixed) => match fixed.errors.first() {
                Some(e) => Err(GraphQLSourceError::Internal(format!(
                    "row {index}: {}",
                    e.message
                ))),
                None => parse(&fixed.text),
            },
        }
    }
}

/// Reads the items into chunks until the end, an error, or the consumer leaving. A query
/// cut short is cancelled on the server and its connection closed, not pooled mid-result.
async fn produce(
    session: Session,
    rows: RowStream,
    items: Items,
    tx: mpsc::Sender<Vec<Result<Value, GraphQLSourceError>>>,
    sql: String,
) {
    let complete = {
        let mut rows = pin!(rows);
        let mut chunk = Vec::with_capacity(CHUNK_ROWS);
        let mut index = 0u64;
        loop {
            let next = tokio::select! {
                biased;
                _ = tx.closed() => break false,
                r = rows.next() => r,
            };
            let item = match next {
                None => {
                    if !chunk.is_empty() {
                        let _ = tx.send(chunk).await;
                    }
                    break true;
                }
                Some(Err(e)) => Err(query_failed(&e, &sql)),
                Some(Ok(row)) => items.value(&row, index),
            };
            let failed = item.is_err();
            chunk.push(item);
            index += 1;
            if failed || chunk.len() == CHUNK_ROWS {
                let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK_ROWS));
                if tx.send(full).await.is_err() || failed {
                    break false;
                }
            }
        }
    };
    if complete && let Err(e) = session.finish().await {
        tracing::debug!(error = %crate::db::describe(&e), "ending the GraphQL ticket's transaction failed");
    }
    // Otherwise dropping the session cancels the statement and closes the connection.
}

impl EngineSource {
    async fn run(
        &self,
        identity: &Identity,
        query: &str,
        variables: &Map<String, Value>,
        operation_name: Option<&str>,
    ) -> Result<GraphQLRows, GraphQLSourceError> {
        let engine = self.engine.current();
        engine.load_view_columns(&self.pool).await;
        let p = prepare(&engine, identity, query, variables, operation_name)?;
        // The role's `statement_timeout` applies here as on the HTTP door.
        let ctx = identity.request_context();
        let ctx = super::execute::with_timeout(ctx, engine.limits_for(identity).1);
        let client = self.pool.get().await.map_err(|e| {
            tracing::error!(target: "fraiseql::graphql", error = %e, "no database connection");
            GraphQLSourceError::Unavailable("the database is unavailable".into())
        })?;
        let session = Session::start(client, &ctx)
            .await
            .map_err(|e| query_failed(&e, "(the request's session settings)"))?;
        let client = session.client();
        if client.statement_cache.size() >= engine.limits.max_cached_statements {
            client.statement_cache.clear();
        }
        let sql = p.statement.sql;
        let stmt = client
            .prepare_cached(&sql)
            .await
            .map_err(|e| query_failed(&e, &sql))?;
        let rows = client
            .query_raw(&stmt, p.statement.params.iter().map(|x| x.as_sql()))
            .await
            .map_err(|e| query_failed(&e, &sql))?;
        let items = Items {
            key: p.key,
            item: TypeRef {
                name: p.item_type,
                kind: NamedKind::Object,
                nullable: false,
                list: false,
                item_nullable: false,
            },
            selection: p.selection,
        };
        let (tx, rx) = mpsc::channel(CHUNK_QUEUE);
        tokio::spawn(produce(session, rows, items, tx, sql));
        let rows = stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|chunk| (stream::iter(chunk), rx))
        })
        .flatten()
        .boxed();
        Ok(GraphQLRows {
            fields: p.fields,
            rows,
        })
    }
}

impl GraphQLSource for EngineSource {
    fn shape<'a>(
        &'a self,
        identity: &'a Identity,
        query: &'a str,
        variables: &'a Map<String, Value>,
        operation_name: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<GqlField>, GraphQLSourceError>> {
        Box::pin(async move {
            let engine = self.engine.current();
            prepare(&engine, identity, query, variables, operation_name).map(|p| p.fields)
        })
    }

    fn execute<'a>(
        &'a self,
        identity: &'a Identity,
        query: &'a str,
        variables: &'a Map<String, Value>,
        operation_name: Option<&'a str>,
    ) -> BoxFuture<'a, Result<GraphQLRows, GraphQLSourceError>> {
        Box::pin(self.run(identity, query, variables, operation_name))
    }

    /// One query per root list field, selecting the item's scalar and enum fields; only
    /// queries that plan without arguments are listed.
    fn list_queries(&self) -> Vec<NamedQuery> {
        let engine: Arc<Engine> = self.engine.current();
        let empty = Map::new();
        engine
            .schema
            .queries
            .iter()
            .filter(|q| q.returns_list)
            .filter_map(|q| {
                let object = engine.schema.object(&q.return_type)?;
                let fields: Vec<&str> = object
                    .fields
                    .iter()
                    .filter(|f| matches!(f.ty.kind, NamedKind::Scalar(_) | NamedKind::Enum))
                    .map(|f| f.name.as_str())
                    .collect();
                if fields.is_empty() {
                    return None;
                }
                let query = format!("{{ {} {{ {} }} }}", q.name, fields.join(" "));
                prepare(&engine, &Identity::unrestricted(), &query, &empty, None).ok()?;
                Some(NamedQuery {
                    name: q.name.clone(),
                    query,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blog() -> Engine {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/blog/schema.json");
        let schema = crate::schema::load(&path).expect("blog schema");
        Engine::new(Arc::new(schema), super::super::Limits::default()).expect("engine")
    }

    fn shape(e: &Engine, q: &str) -> Result<Vec<GqlField>, GraphQLSourceError> {
        prepare(e, &Identity::unrestricted(), q, &Map::new(), None).map(|p| p.fields)
    }

    #[test]
    fn shape_follows_selection_and_schema() {
        let e = blog();
        let f = shape(
            &e,
            "{ posts { t: title rating tags author { name } comments { body } __typename } }",
        )
        .unwrap();
        assert_eq!(
            f,
            vec![
                GqlField::new("t", GqlType::String, false),
                GqlField::new("rating", GqlType::Float, true),
                GqlField::new("tags", GqlType::List(Box::new(GqlType::String)), false),
                GqlField::new(
                    "author",
                    GqlType::Object(vec![GqlField::new("name", GqlType::String, false)]),
                    false
                ),
                GqlField::new(
                    "comments",
                    GqlType::List(Box::new(GqlType::Object(vec![GqlField::new(
                        "body",
                        GqlType::String,
                        false
                    )]))),
                    false
                ),
                GqlField::new("__typename", GqlType::String, false),
            ]
        );
        let f = shape(&e, "{ users { role score metadata createdAt } }").unwrap();
        let types: Vec<GqlType> = f.into_iter().map(|f| f.ty).collect();
        assert_eq!(
            types,
            vec![
                GqlType::String,
                GqlType::Int,
                GqlType::Json,
                GqlType::DateTime
            ]
        );
    }

    #[test]
    fn with_an_allow_list_only_its_documents_are_planned() {
        let allowed = "{ posts { title } }";
        let dir = tempfile::tempdir().unwrap();
        let manifest = dir.path().join("m.json");
        let hash = super::super::persisted::sha256_hex(allowed);
        std::fs::write(&manifest, serde_json::json!({ hash: allowed }).to_string()).unwrap();
        let config = super::super::config::DocumentsConfig {
            trusted_documents: manifest.display().to_string(),
            trusted_documents_bypass_roles: vec!["developer".into()],
            ..Default::default()
        };
        let docs = super::super::persisted::Documents::load(&config, 100_000)
            .unwrap()
            .map(Arc::new);
        let e = blog().with_documents(docs);
        assert!(shape(&e, allowed).is_ok());
        match shape(&e, "{ posts { body } }") {
            Err(GraphQLSourceError::Forbidden(m)) => assert!(m.contains("trusted"), "{m}"),
            other => panic!("{other:?}"),
        }
        let dev = Identity::principal("me", "developer", &[]).unwrap();
        assert!(prepare(&e, &dev, "{ posts { body } }", &Map::new(), None).is_ok());
    }

    #[test]
    fn refuses_what_is_not_one_list_query() {
        let e = blog();
        for (q, want) in [
            ("{ posts { nope } }", "nope"),
            (
                "{ posts { title } users { name } }",
                "exactly one root field",
            ),
            ("{ __typename }", "exactly one root field"),
            (
                "{ user(id: \"6f1c0f3e-3f4e-4b43-9a55-0a1f3b1d2c01\") { name } }",
                "not a list",
            ),
            ("{ posts(limit: 100000) { title } }", "limit"),
            ("{ posts { title ", "Syntax error"),
            (
                "mutation { createPost(input: {authorId: \"6f1c0f3e-3f4e-4b43-9a55-0a1f3b1d2c01\", title: \"t\", body: \"b\"}) { id } }",
                "mutation",
            ),
        ] {
            match shape(&e, q) {
                Err(GraphQLSourceError::Invalid(m)) => {
                    assert!(m.contains(want), "{q}: {m}");
                    assert!(!m.contains("SELECT"), "{q}: {m}");
                }
                other => panic!("{q}: {other:?}"),
            }
        }
    }

    #[test]
    fn lists_one_query_per_list_field() {
        let e = blog();
        let source_queries: Vec<String> = e
            .schema
            .queries
            .iter()
            .filter(|q| q.returns_list)
            .map(|q| q.name.clone())
            .collect();
        let pool = crate::db::pool(&crate::db::DatabaseConfig::default()).expect("pool");
        let s = EngineSource::new(SharedEngine::new(e), pool);
        let listed = s.list_queries();
        assert_eq!(
            listed.iter().map(|q| q.name.clone()).collect::<Vec<_>>(),
            source_queries
        );
        for q in &listed {
            assert!(q.query.starts_with(&format!("{{ {} {{", q.name)), "{q:?}");
        }
    }
}
