//! The Flight planner: a parsed [`ViewTicket`] or [`EventsTicket`] (the wire model, in
//! [`super::ticket`]) becomes one parameterised statement and the Arrow schema of its result.
//!
//! Names (views, columns) are looked up in the [`Registry`](super::registry) and quoted from
//! it; every value is a bind parameter cast to the column's type in SQL. The `where`
//! language is the one GraphQL uses (`_and`/`_or`/`_not` and an object of operators per
//! field, see `crate::sql::condition` for the one operator table), over native columns
//! instead of `data` keys, plus a bare value as shorthand for `eq`.

use std::sync::Arc;

use arrow_schema::{Schema, SchemaRef};
use serde_json::{Map, Value};

use super::registry::{Column, Registry, Relation};
use super::ticket::{EventsTicket, TicketError, ViewTicket};
use super::types::{PgType, oid};
use crate::db::changelog::{self, Position};
use crate::schema::Operator;
use crate::sql::condition::{Bound, NullTest, Operand, Shape, condition, operator_names, shape};
use crate::sql::{Builder, Param, quote_ident};

/// One SQL statement, its parameters, and the columns it returns in order.
#[derive(Debug, Clone)]
pub struct SqlPlan {
    pub sql: String,
    pub params: Vec<crate::sql::Param>,
    pub columns: Vec<Column>,
    pub schema: SchemaRef,
    /// The statement selects one more column after `columns`: the row's change-log
    /// position's transaction id as text ([`changelog::TXID_TEXT`]); the stream reads it
    /// with the row's `pk` (the first column) and does not send it as data.
    pub position: bool,
}

/// Resolves a view ticket against the registry into SQL.
pub fn plan_view(t: &ViewTicket, registry: &Registry) -> Result<SqlPlan, TicketError> {
    let rel = registry
        .get(&t.view)
        .ok_or_else(|| TicketError::UnknownView(t.view.clone()))?;
    let columns: Vec<Column> = match &t.columns {
        None => rel.columns.clone(),
        Some(names) if names.is_empty() => {
            return Err(TicketError::Invalid(
                "columns is empty; omit it to read every column".into(),
            ));
        }
        Some(names) => {
            let mut out: Vec<Column> = Vec::with_capacity(names.len());
            for n in names {
                if out.iter().any(|c| &c.name == n) {
                    return Err(TicketError::Invalid(format!(
                        "column {n:?} is listed twice"
                    )));
                }
                out.push(column(&rel, n)?.clone());
            }
            out
        }
    };
    let select: Vec<String> = columns.iter().map(select_expr).collect();
    let fields: Vec<_> = columns
        .iter()
        .map(|c| c.pg.field(&c.name, !c.not_null))
        .collect();
    let mut b = Builder::default();
    let mut sql = format!("SELECT {} FROM {}", select.join(", "), rel.qualified());
    if let Some(w) = &t.filter {
        let obj = w.as_object().ok_or_else(|| TicketError::Where {
            path: "where".into(),
            message: "must be an object".into(),
        })?;
        let cond = compile_object(&rel, obj, "where", &mut b)?;
        sql.push_str(" WHERE ");
        sql.push_str(&cond);
    }
    if let Some(order) = &t.order_by {
        let mut parts = Vec::with_capacity(order.len());
        for o in order {
            parts.push(order_term(&rel, o)?);
        }
        if !parts.is_empty() {
            sql.push_str(" ORDER BY ");
            sql.push_str(&parts.join(", "));
        }
    }
    if let Some(limit) = t.limit {
        let p = b.param(Param::BigInt(to_i64(limit, "limit")?));
        sql.push_str(&format!(" LIMIT {p}"));
    }
    if let Some(offset) = t.offset {
        let p = b.param(Param::BigInt(to_i64(offset, "offset")?));
        sql.push_str(&format!(" OFFSET {p}"));
    }
    Ok(SqlPlan {
        sql,
        params: b.params,
        columns,
        schema: Arc::new(Schema::new(fields)),
        position: false,
    })
}

/// The Arrow schema a view ticket returns, without building SQL values.
pub fn view_schema(t: &ViewTicket, registry: &Registry) -> Result<SchemaRef, TicketError> {
    Ok(plan_view(t, registry)?.schema)
}

fn to_i64(v: u64, what: &str) -> Result<i64, TicketError> {
    i64::try_from(v).map_err(|_| TicketError::Invalid(format!("{what} is too large")))
}

fn column<'a>(rel: &'a Relation, name: &str) -> Result<&'a Column, TicketError> {
    rel.column(name).ok_or_else(|| TicketError::UnknownColumn {
        relation: rel.name.clone(),
        column: name.to_string(),
    })
}

/// The select-list expression: types without a binary decoder are read as text.
pub fn select_expr(c: &Column) -> String {
    let q = quote_ident(&c.name);
    match &c.pg {
        PgType::AsText => format!("{q}::text AS {q}"),
        PgType::Array(e) if e.read_as_text() => format!("{q}::text[] AS {q}"),
        _ => q,
    }
}

fn order_term(rel: &Relation, o: &Value) -> Result<String, TicketError> {
    let (name, direction, nulls) = match o {
        Value::String(s) => (s.as_str(), None, None),
        Value::Object(m) => {
            for k in m.keys() {
                if !matches!(k.as_str(), "column" | "field" | "direction" | "nulls") {
                    return Err(TicketError::OrderBy(format!(
                        "unknown key {k:?} (expected column, direction, nulls)"
                    )));
                }
            }
            let name = m
                .get("column")
                .or_else(|| m.get("field"))
                .and_then(Value::as_str)
                .ok_or_else(|| TicketError::OrderBy("an entry needs \"column\"".into()))?;
            let s = |k: &str| -> Result<Option<String>, TicketError> {
                match m.get(k) {
                    None | Some(Value::Null) => Ok(None),
                    Some(Value::String(s)) => Ok(Some(s.to_ascii_lowercase())),
                    Some(_) => Err(TicketError::OrderBy(format!("{k} must be a string"))),
                }
            };
            (name, s("direction")?, s("nulls")?)
        }
        _ => {
            return Err(TicketError::OrderBy(
                "entries are column names or {\"column\": …, \"direction\": \"asc\"|\"desc\"}"
                    .into(),
            ));
        }
    };
    let c = column(rel, name)?;
    if matches!(c.pg, PgType::Json) {
        return Err(TicketError::OrderBy(format!(
            "column {name:?} is json and cannot be ordered"
        )));
    }
    let mut term = quote_ident(&c.name);
    match direction.as_deref() {
        None | Some("asc") => term.push_str(" ASC"),
        Some("desc") => term.push_str(" DESC"),
        Some(d) => {
            return Err(TicketError::OrderBy(format!(
                "direction {d:?} (expected asc or desc)"
            )));
        }
    }
    match nulls.as_deref() {
        None => {}
        Some("first") => term.push_str(" NULLS FIRST"),
        Some("last") => term.push_str(" NULLS LAST"),
        Some(n) => {
            return Err(TicketError::OrderBy(format!(
                "nulls {n:?} (expected first or last)"
            )));
        }
    }
    Ok(term)
}

fn where_err(path: &str, message: impl Into<String>) -> TicketError {
    TicketError::Where {
        path: path.to_string(),
        message: message.into(),
    }
}

/// An object of conditions, ANDed.
fn compile_object(
    rel: &Relation,
    obj: &Map<String, Value>,
    path: &str,
    b: &mut Builder,
) -> Result<String, TicketError> {
    let mut parts = Vec::with_capacity(obj.len());
    for (key, value) in obj {
        let here = format!("{path}.{key}");
        let part = match key.as_str() {
            "_and" | "_or" => {
                let list = value
                    .as_array()
                    .ok_or_else(|| where_err(&here, "must be a list of objects"))?;
                let mut subs = Vec::with_capacity(list.len());
                for (i, item) in list.iter().enumerate() {
                    let p = format!("{here}[{i}]");
                    let o = item
                        .as_object()
                        .ok_or_else(|| where_err(&p, "must be an object"))?;
                    subs.push(compile_object(rel, o, &p, b)?);
                }
                match (key.as_str(), subs.is_empty()) {
                    ("_and", true) => "TRUE".to_string(),
                    ("_or", true) => "FALSE".to_string(),
                    ("_and", false) => format!("({})", subs.join(" AND ")),
                    _ => format!("({})", subs.join(" OR ")),
                }
            }
            "_not" => {
                let o = value
                    .as_object()
                    .ok_or_else(|| where_err(&here, "must be an object"))?;
                format!("(NOT {})", compile_object(rel, o, &here, b)?)
            }
            name => {
                let c = rel.column(name).ok_or_else(|| {
                    where_err(&here, format!("{} has no column {name:?}", rel.name))
                })?;
                match value {
                    Value::Object(ops) => {
                        if ops.is_empty() {
                            return Err(where_err(&here, "no operator given"));
                        }
                        let mut conds = Vec::with_capacity(ops.len());
                        for (op, v) in ops {
                            conds.push(compile_op(c, op, v, &format!("{here}.{op}"), b)?);
                        }
                        conds.join(" AND ")
                    }
                    v => compile_op(c, "eq", v, &here, b)?,
                }
            }
        };
        parts.push(part);
    }
    Ok(if parts.is_empty() {
        "TRUE".to_string()
    } else {
        format!("({})", parts.join(" AND "))
    })
}

/// A JSON scalar as the text PostgreSQL casts from (jsonb columns take any JSON value).
fn value_text(c: &Column, v: &Value, path: &str) -> Result<String, TicketError> {
    if matches!(c.pg, PgType::Jsonb) {
        return Ok(v.to_string());
    }
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Null => Err(where_err(path, "null is not a value; use isnull")),
        _ => Err(where_err(
            path,
            format!("expected a scalar value for column {:?}", c.name),
        )),
    }
}

fn compile_op(
    c: &Column,
    op_name: &str,
    v: &Value,
    path: &str,
    b: &mut Builder,
) -> Result<String, TicketError> {
    let op = Operator::from_name(op_name).ok_or_else(|| {
        where_err(
            path,
            format!(
                "unknown operator {op_name:?} (supported: {})",
                operator_names()
            ),
        )
    })?;
    let comparable = !matches!(c.pg, PgType::Json | PgType::Array(_));
    let not_comparable = || {
        where_err(
            path,
            format!(
                "operator {op_name} does not apply to column {:?} of type {}",
                c.name,
                c.pg.describe()
            ),
        )
    };
    let bound = match shape(op) {
        Shape::Compare(_) if comparable => Bound::One(value_text(c, v, path)?),
        Shape::AnyOf { .. } if comparable => {
            let list = v
                .as_array()
                .ok_or_else(|| where_err(path, "expects a list of values"))?;
            let mut texts = Vec::with_capacity(list.len());
            for (i, item) in list.iter().enumerate() {
                texts.push(value_text(c, item, &format!("{path}[{i}]"))?);
            }
            Bound::Many(texts)
        }
        Shape::Like { .. } if c.pg.is_textual() => Bound::One(
            v.as_str()
                .ok_or_else(|| where_err(path, "expects a string"))?
                .to_owned(),
        ),
        Shape::IsNull => match v {
            Value::Bool(flag) => Bound::Flag(*flag),
            _ => return Err(where_err(path, "isnull expects true or false")),
        },
        _ => return Err(not_comparable()),
    };
    let col = quote_ident(&c.name);
    let operand = Operand {
        typed: col.clone(),
        text: col.clone(),
        null: NullTest::Sql(col),
        cast: Some(c.sql_type.clone()),
    };
    condition(b, op, &operand, bound)
        .map_err(|_| where_err(path, "the value does not fit the operator"))
}

/// The change-log columns, in the order of the fixed events schema.
pub fn events_columns() -> Vec<Column> {
    let col = |name: &str, pg: PgType, not_null: bool, sql_type: &str, type_oid: u32| Column {
        name: name.into(),
        pg,
        not_null,
        sql_type: sql_type.into(),
        type_oid,
        elem_oid: if type_oid == 1009 { oid::TEXT } else { 0 },
    };
    vec![
        col("pk", PgType::Int8, true, "bigint", oid::INT8),
        col("id", PgType::Uuid, true, "uuid", oid::UUID),
        col(
            "occurred_at",
            PgType::Timestamptz,
            true,
            "timestamp with time zone",
            oid::TIMESTAMPTZ,
        ),
        col("entity", PgType::Text, true, "text", oid::TEXT),
        col("entity_id", PgType::Uuid, false, "uuid", oid::UUID),
        col("op", PgType::Text, true, "text", oid::TEXT),
        col("before", PgType::Jsonb, false, "jsonb", oid::JSONB),
        col("after", PgType::Jsonb, false, "jsonb", oid::JSONB),
        col(
            "changed_fields",
            PgType::Array(Box::new(PgType::Text)),
            false,
            "text[]",
            1009,
        ),
        col("actor", PgType::Text, false, "text", oid::TEXT),
        col("tenant_id", PgType::Text, false, "text", oid::TEXT),
    ]
}

/// The fixed Arrow schema of the events ticket.
pub fn events_schema() -> SchemaRef {
    let fields: Vec<_> = events_columns()
        .iter()
        .map(|c| c.pg.field(&c.name, !c.not_null))
        .collect();
    Arc::new(Schema::new(fields))
}

/// One page of change-log rows after `after`, at most `limit` rows, by the change log's
/// delivery rule ([`changelog`]): `(txid, pk)` order, never beyond the oldest running
/// transaction. `since_pk` stays what it always was, a filter on `pk`.
pub fn plan_events(t: &EventsTicket, after: Position, limit: i64) -> SqlPlan {
    let columns = events_columns();
    let mut b = Builder::default();
    let select: Vec<String> = columns.iter().map(|c| quote_ident(&c.name)).collect();
    let txid = b.param(Param::Text(Some(after.txid.to_string())));
    let pk = b.param(Param::BigInt(after.pk));
    let mut sql = format!(
        "SELECT {}, {} FROM fraiseql.tb_entity_change_log WHERE {} AND {}",
        select.join(", "),
        changelog::TXID_TEXT,
        changelog::after(&txid, &pk),
        changelog::SAFE,
    );
    if let Some(since_pk) = t.since_pk {
        let p = b.param(Param::BigInt(since_pk));
        sql.push_str(&format!(" AND pk > {p}"));
    }
    if let Some(e) = &t.entity {
        let p = b.param(Param::Text(Some(e.clone())));
        sql.push_str(&format!(" AND entity = {p}"));
    }
    if let Some(since) = t.since {
        let p = b.param(Param::Text(Some(since.to_rfc3339())));
        sql.push_str(&format!(" AND occurred_at >= CAST({p} AS timestamptz)"));
    }
    if let Some(until) = t.until {
        let p = b.param(Param::Text(Some(until.to_rfc3339())));
        sql.push_str(&format!(" AND occurred_at < CAST({p} AS timestamptz)"));
    }
    let p = b.param(Param::BigInt(limit));
    sql.push_str(&format!(" ORDER BY {} LIMIT {p}", changelog::ORDER));
    SqlPlan {
        sql,
        params: b.params,
        columns,
        schema: events_schema(),
        position: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flight::registry::{RelationKind, Snapshot};

    fn registry() -> Registry {
        let columns = vec![
            Column {
                name: "id".into(),
                pg: PgType::Int8,
                not_null: false,
                sql_type: "bigint".into(),
                type_oid: oid::INT8,
                elem_oid: 0,
            },
            Column {
                name: "name".into(),
                pg: PgType::Text,
                not_null: false,
                sql_type: "text".into(),
                type_oid: oid::TEXT,
                elem_oid: 0,
            },
            Column {
                name: "tags".into(),
                pg: PgType::Array(Box::new(PgType::Text)),
                not_null: false,
                sql_type: "text[]".into(),
                type_oid: 1009,
                elem_oid: oid::TEXT,
            },
        ];
        let fields: Vec<_> = columns.iter().map(|c| c.pg.field(&c.name, true)).collect();
        let rel = Relation {
            schema_name: "public".into(),
            name: "va_x".into(),
            kind: RelationKind::View,
            columns,
            arrow_schema: Arc::new(Schema::new(fields)),
        };
        let r = Registry::default();
        r.replace(Snapshot {
            relations: [("va_x".to_string(), Arc::new(rel))].into(),
        });
        r
    }

    #[test]
    fn where_binds_values_and_quotes_names() {
        let r = registry();
        let t: ViewTicket = serde_json::from_value(serde_json::json!({
            "view": "va_x",
            "columns": ["id"],
            "where": {"_or": [{"id": {"gt": 3, "lte": "10"}}, {"name": {"contains": "50%_"}}],
                      "_not": {"name": {"isnull": true}}, "id": {"in": [1, 2]}},
            "order_by": [{"column": "name", "direction": "desc", "nulls": "last"}, "id"],
            "limit": 5
        }))
        .unwrap();
        let plan = plan_view(&t, &r).unwrap();
        assert_eq!(
            plan.sql,
            // The shared builder casts every placeholder to its bound type (`$1::text`).
            "SELECT \"id\" FROM \"public\".\"va_x\" WHERE ((NOT (\"name\" IS NULL)) AND \
             ((\"id\" > CAST($1::text AS bigint) AND \"id\" <= CAST($2::text AS bigint)) OR \
             (\"name\" LIKE $3::text)) AND \"id\" = ANY (CAST($4::text[] AS bigint[]))) ORDER BY \
             \"name\" DESC NULLS LAST, \"id\" ASC LIMIT $5::bigint"
        );
        assert!(matches!(&plan.params[2], Param::Text(Some(s)) if s == "%50\\%\\_%"));
        assert_eq!(plan.schema.fields().len(), 1);
    }

    #[test]
    fn events_read_after_a_position_in_txid_pk_order_below_the_running_transactions() {
        let t: EventsTicket = serde_json::from_value(serde_json::json!({
            "entity": "order", "since_pk": 3, "after": "7412:12"
        }))
        .unwrap();
        let plan = plan_events(&t, t.after.unwrap_or_default(), 100);
        assert!(plan.position);
        assert!(
            plan.sql.ends_with(
                "\"tenant_id\", txid::text FROM fraiseql.tb_entity_change_log \
                 WHERE (txid, pk) > (CAST($1::text AS xid8), $2::bigint) \
                 AND txid < pg_snapshot_xmin(pg_current_snapshot()) AND pk > $3::bigint \
                 AND entity = $4::text ORDER BY txid, pk LIMIT $5::bigint"
            ),
            "{}",
            plan.sql
        );
        assert!(matches!(&plan.params[0], Param::Text(Some(s)) if s == "7412"));
        assert!(matches!(plan.params[1], Param::BigInt(12)));
    }

    #[test]
    fn where_errors_name_the_path() {
        let r = registry();
        let cases = [
            (serde_json::json!({"nope": {"eq": 1}}), "where.nope"),
            (serde_json::json!({"id": {"regex": "x"}}), "where.id.regex"),
            (
                serde_json::json!({"id": {"contains": "x"}}),
                "where.id.contains",
            ),
            (serde_json::json!({"tags": {"eq": "x"}}), "where.tags.eq"),
            (
                serde_json::json!({"_and": [{"id": {"eq": null}}]}),
                "where._and[0].id.eq",
            ),
        ];
        for (w, path) in cases {
            let t = ViewTicket {
                view: "va_x".into(),
                columns: None,
                filter: Some(w),
                order_by: None,
                limit: None,
                offset: None,
            };
            let e = plan_view(&t, &r).unwrap_err().to_string();
            assert!(e.contains(path), "{e} should name {path}");
        }
        let t = ViewTicket {
            view: "va_y".into(),
            columns: None,
            filter: None,
            order_by: None,
            limit: None,
            offset: None,
        };
        assert!(plan_view(&t, &r).unwrap_err().to_string().contains("va_y"));
    }
}
