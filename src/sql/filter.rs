//! `where` filters and `orderBy` clauses over a view's `data` jsonb: typed comparisons per
//! scalar, enum values mapped to their stored form, nested objects (a path) and nested lists
//! (any element matches), `_and`/`_or`/`_not`.

use crate::schema::{CompiledSchema, FilterInput, Operator, ScalarKind, WhereInput, WhereTarget};

use std::collections::HashMap;

use super::condition::{Bound, NullTest, Operand, Shape, condition, join, shape};
use super::{ArgValue, Builder, SqlError, json_path, quote_ident, quote_literal};

/// A source's own columns, name → SQL type as `format_type` spells it, from the catalog.
pub type Columns = HashMap<String, String>;

/// The native columns of the row a top-level `where`/`orderBy` reads (alias `v`): a field
/// whose key names one of them, with a type that holds the field's values exactly, is
/// compiled against the column (so the view's base-table index can serve it) instead of
/// the `data` key. The column is taken to hold the same value as the key, which is the
/// convention of views that expose filter columns beside `data`.
#[derive(Debug, Clone, Copy)]
pub struct Native<'a> {
    pub alias: &'a str,
    pub columns: &'a Columns,
}

/// The column a field of `key` compiles against, and the type bound values are cast to
/// (`None`: compared as text), when `native` has one that fits the field's scalar.
pub fn native_column(
    native: Option<Native<'_>>,
    key: &str,
    scalar: Option<ScalarKind>,
    is_enum: bool,
) -> Option<(String, Option<&'static str>)> {
    let native = native?;
    let ty = native.columns.get(key)?;
    let base = ty.split('(').next().unwrap_or(ty).trim();
    let cast = match (base, scalar) {
        ("text" | "character varying", _) if is_enum => None,
        (_, _) if is_enum => return None,
        ("text" | "character varying", Some(ScalarKind::String | ScalarKind::Id)) => None,
        ("integer", Some(ScalarKind::Int | ScalarKind::BigInt)) => Some("integer"),
        ("bigint", Some(ScalarKind::Int | ScalarKind::BigInt)) => Some("bigint"),
        ("smallint", Some(ScalarKind::Int | ScalarKind::BigInt)) => Some("smallint"),
        (
            "numeric",
            Some(ScalarKind::Int | ScalarKind::BigInt | ScalarKind::Float | ScalarKind::Decimal),
        ) => Some("numeric"),
        ("double precision", Some(ScalarKind::Float)) => Some("double precision"),
        ("real", Some(ScalarKind::Float)) => Some("real"),
        ("uuid", Some(ScalarKind::Uuid)) => Some("uuid"),
        ("boolean", Some(ScalarKind::Boolean)) => Some("boolean"),
        ("timestamp with time zone", Some(ScalarKind::DateTime)) => Some("timestamptz"),
        ("date", Some(ScalarKind::Date)) => Some("date"),
        ("time without time zone", Some(ScalarKind::Time)) => Some("time"),
        _ => return None,
    };
    Some((format!("{}.{}", native.alias, quote_ident(key)), cast))
}

/// The operand of a native column.
fn column_operand(column: String, cast: Option<&'static str>) -> Operand {
    let text = match cast {
        None => column.clone(),
        Some(_) => format!("{column}::text"),
    };
    Operand {
        typed: column.clone(),
        text,
        null: NullTest::Sql(column),
        cast: cast.map(str::to_owned),
    }
}

/// Records, for `explain`, which path a top-level field's condition took.
fn note_path(b: &mut Builder, what: &str, field: &str, column: Option<&(String, Option<&str>)>) {
    let note = match column {
        Some((col, cast)) => format!(
            "{what} {field}: column {col}{}",
            cast.map(|c| format!(" ({c})"))
                .unwrap_or_else(|| " (text)".into())
        ),
        None => format!("{what} {field}: data key"),
    };
    if !b.notes.contains(&note) {
        b.notes.push(note);
    }
}

/// Bounds on user input while building filters.
#[derive(Debug, Clone, Copy)]
pub struct InputLimits {
    /// Maximum number of values in one list (`in`, `nin`, `_and`, `orderBy` …).
    pub max_list: usize,
    /// Maximum nesting of `_and`/`_or`/`_not` and nested paths.
    pub max_depth: usize,
    /// Most conditions (one per operator) in one `where`, whatever their nesting: the
    /// per-list and depth bounds alone let a 1 MiB body expand into megabytes of SQL.
    pub max_conditions: usize,
}

fn bad(msg: impl Into<String>) -> SqlError {
    SqlError::BadInput(msg.into())
}

/// `(src->>'key')` cast to the comparison type of `scalar` (text for enums).
pub fn typed_expr(src: &str, key: &str, scalar: Option<ScalarKind>) -> String {
    cast_text(format!("({}->>{})", src, quote_literal(key)), scalar)
}

/// A text expression cast to the comparison type of `scalar`.
fn cast_text(text: String, scalar: Option<ScalarKind>) -> String {
    match scalar.and_then(cast_of) {
        Some(cast) => format!("{text}::{cast}"),
        None => text,
    }
}

/// The SQL type a scalar's text is cast to for comparing and ordering (`None`: as text).
pub fn cast_of(s: ScalarKind) -> Option<&'static str> {
    match s {
        ScalarKind::Id | ScalarKind::String | ScalarKind::Json => None,
        ScalarKind::Int | ScalarKind::Float | ScalarKind::BigInt | ScalarKind::Decimal => {
            Some("numeric")
        }
        ScalarKind::Boolean => Some("boolean"),
        ScalarKind::DateTime => Some("timestamptz"),
        ScalarKind::Date => Some("date"),
        ScalarKind::Time => Some("time"),
        ScalarKind::Uuid => Some("uuid"),
    }
}

fn is_numeric_text(s: &str) -> bool {
    let s = s.trim();
    !s.is_empty()
        && s.len() <= 100
        && s.parse::<f64>().is_ok_and(f64::is_finite)
        && s.chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '-' | '+' | '.' | 'e' | 'E'))
}

/// Converts one comparison value to the text bound for `scalar` (or the enum's stored
/// value), validating it so that PostgreSQL never sees a value it cannot cast.
pub fn value_text(
    schema: &CompiledSchema,
    scalar: Option<ScalarKind>,
    enum_name: Option<&str>,
    what: &str,
    v: &ArgValue,
) -> Result<String, SqlError> {
    if let Some(enum_name) = enum_name {
        let name = match v {
            ArgValue::Enum(s) | ArgValue::String(s) => s,
            other => {
                return Err(bad(format!(
                    "{what}: expected a value of enum {enum_name}, found {}",
                    other.kind()
                )));
            }
        };
        let e = schema
            .enum_type(enum_name)
            .ok_or_else(|| bad(format!("{what}: unknown enum {enum_name}")))?;
        return e.stored(name).map(str::to_owned).ok_or_else(|| {
            bad(format!(
                "{what}: `{}` is not a value of enum {enum_name}",
                truncate(name)
            ))
        });
    }
    if let ArgValue::String(s) | ArgValue::Enum(s) = v
        && s.contains('\0')
    {
        return Err(bad(format!(
            "{what}: strings cannot contain NUL characters"
        )));
    }
    let scalar = scalar.unwrap_or(ScalarKind::String);
    let wrong = |v: &ArgValue| {
        bad(format!(
            "{what}: expected {}, found {}",
            scalar.name(),
            v.kind()
        ))
    };
    match scalar {
        ScalarKind::String | ScalarKind::Json => match v {
            ArgValue::String(s) => Ok(s.clone()),
            other => Err(wrong(other)),
        },
        ScalarKind::Id => match v {
            ArgValue::String(s) => Ok(s.clone()),
            ArgValue::Int(i) => Ok(i.to_string()),
            other => Err(wrong(other)),
        },
        ScalarKind::Int | ScalarKind::Float | ScalarKind::BigInt | ScalarKind::Decimal => match v {
            ArgValue::Int(i) => Ok(i.to_string()),
            ArgValue::Float(f) if f.is_finite() => Ok(f.to_string()),
            ArgValue::String(s)
                if matches!(scalar, ScalarKind::BigInt | ScalarKind::Decimal)
                    && is_numeric_text(s) =>
            {
                Ok(s.trim().to_owned())
            }
            other => Err(wrong(other)),
        },
        ScalarKind::Boolean => match v {
            ArgValue::Boolean(b) => Ok(b.to_string()),
            other => Err(wrong(other)),
        },
        ScalarKind::DateTime => match v {
            ArgValue::String(s) if chrono::DateTime::parse_from_rfc3339(s).is_ok() => Ok(s.clone()),
            ArgValue::String(s) => Err(bad(format!(
                "{what}: `{}` is not an RFC 3339 date-time (e.g. 2024-01-31T12:00:00Z)",
                truncate(s)
            ))),
            other => Err(wrong(other)),
        },
        ScalarKind::Date => match v {
            ArgValue::String(s) if chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok() => {
                Ok(s.clone())
            }
            ArgValue::String(s) => Err(bad(format!(
                "{what}: `{}` is not a date (YYYY-MM-DD)",
                truncate(s)
            ))),
            other => Err(wrong(other)),
        },
        ScalarKind::Time => match v {
            ArgValue::String(s)
                if chrono::NaiveTime::parse_from_str(s, "%H:%M:%S%.f").is_ok()
                    || chrono::NaiveTime::parse_from_str(s, "%H:%M").is_ok() =>
            {
                Ok(s.clone())
            }
            ArgValue::String(s) => Err(bad(format!(
                "{what}: `{}` is not a time (HH:MM:SS)",
                truncate(s)
            ))),
            other => Err(wrong(other)),
        },
        ScalarKind::Uuid => match v {
            ArgValue::String(s) if uuid::Uuid::parse_str(s).is_ok() => Ok(s.clone()),
            ArgValue::String(s) => Err(bad(format!("{what}: `{}` is not a UUID", truncate(s)))),
            other => Err(wrong(other)),
        },
    }
}

/// Shortens user text quoted back in an error message.
pub fn truncate(s: &str) -> String {
    if s.chars().count() <= 64 {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(61).collect();
        t.push_str("...");
        t
    }
}

fn list_items(v: &ArgValue) -> Vec<&ArgValue> {
    match v {
        ArgValue::List(items) => items.iter().collect(),
        other => vec![other],
    }
}

/// The operand of a filter on the jsonb expression `json` (its text form `text`).
fn json_operand(json: String, text: String, filter: &FilterInput) -> Operand {
    let cast = if filter.enum_name.is_some() {
        None
    } else {
        filter.scalar.and_then(cast_of)
    };
    Operand {
        typed: cast_text(
            text.clone(),
            if filter.enum_name.is_some() {
                None
            } else {
                filter.scalar
            },
        ),
        text,
        null: NullTest::Json(json),
        cast: cast.map(str::to_owned),
    }
}

/// One filter (`{eq: 1, lt: 5}`) on one operand.
fn filter_sql(
    b: &mut Builder,
    schema: &CompiledSchema,
    filter: &FilterInput,
    operand: &Operand,
    field_name: &str,
    v: &ArgValue,
    limits: InputLimits,
) -> Result<String, SqlError> {
    let ops = match v {
        ArgValue::Null => return Ok("TRUE".into()),
        ArgValue::Object(ops) => ops,
        other => {
            return Err(bad(format!(
                "filter on `{field_name}`: expected an object of operators, found {}",
                other.kind()
            )));
        }
    };
    let scalar = filter.scalar;
    let enum_name = filter.enum_name.as_deref();
    let mut parts = Vec::new();
    for (op_name, value) in ops {
        let op = Operator::from_name(op_name)
            .filter(|o| filter.operators.contains(o))
            .ok_or_else(|| {
                bad(format!(
                    "filter on `{field_name}`: unknown operator `{}`",
                    truncate(op_name)
                ))
            })?;
        if matches!(value, ArgValue::Null) {
            continue;
        }
        let what = format!("`{field_name}.{op_name}`");
        let bound = match shape(op) {
            Shape::Compare(_) => Bound::One(value_text(schema, scalar, enum_name, &what, value)?),
            Shape::AnyOf { .. } => {
                let items = list_items(value);
                if items.len() > limits.max_list {
                    return Err(SqlError::LimitExceeded(format!(
                        "{what}: {} values exceed the limit of {}",
                        items.len(),
                        limits.max_list
                    )));
                }
                let mut texts = Vec::with_capacity(items.len());
                for item in items {
                    if matches!(item, ArgValue::Null) {
                        continue;
                    }
                    texts.push(value_text(schema, scalar, enum_name, &what, item)?);
                }
                Bound::Many(texts)
            }
            Shape::Like { .. } => Bound::One(
                value_text(schema, Some(ScalarKind::String), None, &what, value)
                    .or_else(|_| value_text(schema, scalar, enum_name, &what, value))?,
            ),
            Shape::IsNull => match value {
                ArgValue::Boolean(flag) => Bound::Flag(*flag),
                other => {
                    return Err(bad(format!(
                        "{what}: expected Boolean, found {}",
                        other.kind()
                    )));
                }
            },
        };
        if b.conditions >= limits.max_conditions {
            return Err(SqlError::LimitExceeded(format!(
                "`where` has more than {} conditions",
                limits.max_conditions
            )));
        }
        let sql = condition(b, op, operand, bound)
            .map_err(|_| bad(format!("{what}: the value does not fit the operator")))?;
        parts.push(sql);
    }
    Ok(join(parts, "AND"))
}

/// A boolean SQL expression for a `<Type>WhereInput` value over the jsonb expression `src`.
#[allow(clippy::too_many_arguments)]
pub fn where_sql(
    b: &mut Builder,
    schema: &CompiledSchema,
    input: &WhereInput,
    src: &str,
    native: Option<Native<'_>>,
    v: &ArgValue,
    limits: InputLimits,
    depth: usize,
) -> Result<String, SqlError> {
    if depth > limits.max_depth {
        return Err(SqlError::LimitExceeded(format!(
            "`where` is nested deeper than {} levels",
            limits.max_depth
        )));
    }
    let fields = match v {
        ArgValue::Null => return Ok("TRUE".into()),
        ArgValue::Object(fields) => fields,
        other => {
            return Err(bad(format!(
                "`where` of {}: expected an object, found {}",
                input.type_name,
                other.kind()
            )));
        }
    };
    let mut parts = Vec::new();
    for (name, value) in fields {
        if matches!(value, ArgValue::Null) {
            continue;
        }
        match name.as_str() {
            "_and" | "_or" => {
                let items = list_items(value);
                if items.len() > limits.max_list {
                    return Err(SqlError::LimitExceeded(format!(
                        "`{name}` has {} items, more than the limit of {}",
                        items.len(),
                        limits.max_list
                    )));
                }
                let mut sub = Vec::new();
                for item in items {
                    sub.push(where_sql(
                        b,
                        schema,
                        input,
                        src,
                        native,
                        item,
                        limits,
                        depth + 1,
                    )?);
                }
                if !sub.is_empty() {
                    parts.push(join(sub, if name == "_and" { "AND" } else { "OR" }));
                }
            }
            "_not" => {
                let inner = where_sql(b, schema, input, src, native, value, limits, depth + 1)?;
                parts.push(format!("NOT ({inner})"));
            }
            _ => {
                let field = input
                    .fields
                    .iter()
                    .find(|f| &f.name == name)
                    .ok_or_else(|| {
                        bad(format!(
                            "`where` of {}: unknown field `{}`",
                            input.type_name,
                            truncate(name)
                        ))
                    })?;
                match &field.target {
                    WhereTarget::Filter { filter } => {
                        let f = schema
                            .filter(filter)
                            .ok_or_else(|| bad(format!("unknown filter {filter}")))?;
                        let column =
                            native_column(native, &field.key, f.scalar, f.enum_name.is_some());
                        if native.is_some() {
                            note_path(b, "where", &field.name, column.as_ref());
                        }
                        let operand = match column {
                            Some((col, cast)) => column_operand(col, cast),
                            None => json_operand(
                                json_path(src, &field.key),
                                format!("({}->>{})", src, quote_literal(&field.key)),
                                f,
                            ),
                        };
                        parts.push(filter_sql(
                            b,
                            schema,
                            f,
                            &operand,
                            &field.name,
                            value,
                            limits,
                        )?);
                    }
                    WhereTarget::ScalarList { filter } => {
                        let f = schema
                            .filter(filter)
                            .ok_or_else(|| bad(format!("unknown filter {filter}")))?;
                        let list = json_path(src, &field.key);
                        let ArgValue::Object(ops) = value else {
                            return Err(bad(format!(
                                "filter on `{}`: expected an object of operators, found {}",
                                field.name,
                                value.kind()
                            )));
                        };
                        let (isnull, elem_ops): (Vec<_>, Vec<_>) =
                            ops.iter().cloned().partition(|(k, _)| k == "isnull");
                        if !isnull.is_empty() {
                            let operand = json_operand(
                                list.clone(),
                                format!("({src}->>{})", quote_literal(&field.key)),
                                f,
                            );
                            parts.push(filter_sql(
                                b,
                                schema,
                                f,
                                &operand,
                                &field.name,
                                &ArgValue::Object(isnull),
                                limits,
                            )?);
                        }
                        if !elem_ops.is_empty() {
                            let alias = b.alias("w");
                            let operand = json_operand(
                                format!("{alias}.v"),
                                format!("({alias}.v #>> '{{}}')"),
                                f,
                            );
                            let cond = filter_sql(
                                b,
                                schema,
                                f,
                                &operand,
                                &field.name,
                                &ArgValue::Object(elem_ops),
                                limits,
                            )?;
                            parts.push(format!(
                                "EXISTS (SELECT 1 FROM jsonb_array_elements(CASE WHEN jsonb_typeof({list}) = 'array' THEN {list} END) {alias}(v) WHERE {cond})"
                            ));
                        }
                    }
                    WhereTarget::Object { where_input } => {
                        if native.is_some() {
                            note_path(b, "where", &field.name, None);
                        }
                        let wi = schema
                            .where_input(where_input)
                            .ok_or_else(|| bad(format!("unknown input {where_input}")))?;
                        let inner_src = json_path(src, &field.key);
                        parts.push(where_sql(
                            b,
                            schema,
                            wi,
                            &format!("({inner_src})"),
                            None,
                            value,
                            limits,
                            depth + 1,
                        )?);
                    }
                    WhereTarget::List { where_input } => {
                        if native.is_some() {
                            note_path(b, "where", &field.name, None);
                        }
                        let wi = schema
                            .where_input(where_input)
                            .ok_or_else(|| bad(format!("unknown input {where_input}")))?;
                        let list = json_path(src, &field.key);
                        let alias = b.alias("w");
                        let elem = format!("{alias}.v");
                        let cond = where_sql(b, schema, wi, &elem, None, value, limits, depth + 1)?;
                        parts.push(format!(
                            "EXISTS (SELECT 1 FROM jsonb_array_elements(CASE WHEN jsonb_typeof({list}) = 'array' THEN {list} END) {alias}(v) WHERE {cond})"
                        ));
                    }
                }
            }
        }
    }
    Ok(join(parts, "AND"))
}

/// `ORDER BY` terms for an `orderBy` value (a list of `<Type>OrderBy`, or one of them).
pub fn order_sql(
    b: &mut Builder,
    schema: &CompiledSchema,
    input_name: &str,
    src: &str,
    native: Option<Native<'_>>,
    v: &ArgValue,
    limits: InputLimits,
) -> Result<Vec<String>, SqlError> {
    let input = schema
        .order_input(input_name)
        .ok_or_else(|| bad(format!("unknown input {input_name}")))?;
    let items = match v {
        ArgValue::Null => return Ok(Vec::new()),
        other => list_items(other),
    };
    if items.len() > limits.max_list {
        return Err(SqlError::LimitExceeded(format!(
            "`orderBy` has {} items, more than the limit of {}",
            items.len(),
            limits.max_list
        )));
    }
    let mut terms = Vec::new();
    for item in items {
        let ArgValue::Object(fields) = item else {
            if matches!(item, ArgValue::Null) {
                continue;
            }
            return Err(bad(format!(
                "`orderBy`: expected {input_name}, found {}",
                item.kind()
            )));
        };
        for (name, dir) in fields {
            let field = input
                .fields
                .iter()
                .find(|f| &f.name == name)
                .ok_or_else(|| {
                    bad(format!(
                        "`orderBy`: `{}` is not a sortable field of {}",
                        truncate(name),
                        input.type_name
                    ))
                })?;
            let dir = match dir {
                ArgValue::Null => continue,
                ArgValue::Enum(d) | ArgValue::String(d) if d == "ASC" => "ASC",
                ArgValue::Enum(d) | ArgValue::String(d) if d == "DESC" => "DESC",
                other => {
                    return Err(bad(format!(
                        "`orderBy.{name}`: expected ASC or DESC, found {}",
                        match other {
                            ArgValue::Enum(s) | ArgValue::String(s) => format!("`{}`", truncate(s)),
                            o => o.kind().to_owned(),
                        }
                    )));
                }
            };
            let column = native_column(native, &field.key, field.scalar, field.scalar.is_none());
            if native.is_some() {
                note_path(b, "orderBy", &field.name, column.as_ref());
            }
            let expr = match column {
                Some((col, _)) => col,
                None => typed_expr(src, &field.key, field.scalar),
            };
            terms.push(format!("{expr} {dir}"));
        }
    }
    Ok(terms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_native_column_is_used_only_when_its_type_holds_the_field() {
        let cols: Columns = [
            ("number", "integer"),
            ("total", "numeric(12,2)"),
            ("placed_at", "timestamp with time zone"),
            ("local_at", "timestamp without time zone"),
            ("status", "character varying(20)"),
            ("id", "uuid"),
            ("flag", "text"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let n = Some(Native {
            alias: "v",
            columns: &cols,
        });
        let col = |key, scalar, is_enum| native_column(n, key, scalar, is_enum);
        assert_eq!(
            col("number", Some(ScalarKind::Int), false),
            Some(("v.\"number\"".into(), Some("integer")))
        );
        assert_eq!(
            col("total", Some(ScalarKind::Decimal), false).map(|c| c.1),
            Some(Some("numeric"))
        );
        assert_eq!(
            col("placed_at", Some(ScalarKind::DateTime), false).map(|c| c.1),
            Some(Some("timestamptz"))
        );
        // A timestamp without time zone compares differently: the data key is kept.
        assert_eq!(col("local_at", Some(ScalarKind::DateTime), false), None);
        assert_eq!(col("status", None, true).map(|c| c.1), Some(None));
        assert_eq!(
            col("status", Some(ScalarKind::String), false).map(|c| c.1),
            Some(None)
        );
        // An ID need not be a uuid; a Boolean is not text; an Int is not a timestamp.
        assert_eq!(col("id", Some(ScalarKind::Id), false), None);
        assert_eq!(
            col("id", Some(ScalarKind::Uuid), false).map(|c| c.1),
            Some(Some("uuid"))
        );
        assert_eq!(col("flag", Some(ScalarKind::Boolean), false), None);
        assert_eq!(col("placed_at", Some(ScalarKind::Int), false), None);
        assert_eq!(col("missing", Some(ScalarKind::Int), false), None);
        assert_eq!(
            native_column(None, "number", Some(ScalarKind::Int), false),
            None
        );
    }
}
