//! The GraphQL ticket: the [`GraphQLSource`] seam the main crate implements with its
//! GraphQL engine, and the mapping of a list query's JSON rows to Arrow.
//!
//! The engine describes the row shape of the query's root list field (from the compiled
//! schema and the selection set) as [`GqlField`]s and streams the rows as JSON objects;
//! this module turns them into record batches:
//!
//! | GraphQL type                      | Arrow                                            |
//! |-----------------------------------|--------------------------------------------------|
//! | `Int`                             | Int64 (FraiseQL exposes bigint counters as Int)  |
//! | `Float`                           | Float64                                          |
//! | `String`, `ID`                    | Utf8                                             |
//! | `Boolean`                         | Boolean                                          |
//! | `UUID`                            | FixedSizeBinary(16), extension `arrow.uuid`      |
//! | `DateTime`                        | Timestamp(µs, "UTC") (RFC 3339; no offset = UTC) |
//! | `Date`                            | Date32                                           |
//! | `Decimal`                         | Utf8 (the exact decimal text; no scale is known) |
//! | `JSON` and unknown scalars        | Utf8, extension `arrow.json` (the JSON text)     |
//! | nested object                     | Struct (fields in selection order)               |
//! | list `[T]`                        | List<T>                                          |
//!
//! `Int` and `Float` also accept numeric strings (bigints serialised as text). A missing key
//! is null. Field names are the response keys (aliases included).

use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Date32Builder, FixedSizeBinaryBuilder, Float64Builder, Int64Builder,
    StringBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, ListArray, RecordBatch, StructArray};
use arrow_buffer::{NullBufferBuilder, OffsetBuffer, ScalarBuffer};
use arrow_schema::{DataType, Field, FieldRef, Fields, Schema, SchemaRef, TimeUnit};
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use serde_json::{Map, Value};
use tokio::sync::mpsc;

use super::stream::{BATCH_QUEUE, Batch, BatchResult, Producer, StreamError};
use super::types::{EXTENSION_METADATA, EXTENSION_NAME, PG_EPOCH_OFFSET_DAYS};

/// Errors a [`GraphQLSource`] reports.
#[derive(Debug, thiserror::Error)]
pub enum GraphQLSourceError {
    /// The query is invalid or is not a single list query (→ InvalidArgument).
    #[error("{0}")]
    Invalid(String),
    /// The caller may not run it (→ PermissionDenied).
    #[error("{0}")]
    Forbidden(String),
    /// The database is unavailable (→ Unavailable).
    #[error("{0}")]
    Unavailable(String),
    /// Anything else (→ Internal); must not contain SQL text.
    #[error("{0}")]
    Internal(String),
}

impl From<GraphQLSourceError> for tonic::Status {
    fn from(e: GraphQLSourceError) -> tonic::Status {
        let m = format!("graphql: {e}");
        match e {
            GraphQLSourceError::Invalid(_) => tonic::Status::invalid_argument(m),
            GraphQLSourceError::Forbidden(_) => tonic::Status::permission_denied(m),
            GraphQLSourceError::Unavailable(_) => tonic::Status::unavailable(m),
            GraphQLSourceError::Internal(_) => tonic::Status::internal(m),
        }
    }
}

/// The type of one field of a row.
#[derive(Debug, Clone, PartialEq)]
pub enum GqlType {
    Int,
    Float,
    String,
    Id,
    Boolean,
    Uuid,
    DateTime,
    Date,
    Decimal,
    Json,
    Object(Vec<GqlField>),
    List(Box<GqlType>),
}

/// One field of a row (or of a nested object).
#[derive(Debug, Clone, PartialEq)]
pub struct GqlField {
    /// The response key (alias or field name).
    pub name: String,
    pub ty: GqlType,
    pub nullable: bool,
}

impl GqlField {
    pub fn new(name: &str, ty: GqlType, nullable: bool) -> GqlField {
        GqlField {
            name: name.into(),
            ty,
            nullable,
        }
    }
}

/// The rows of a list query: their shape and the rows themselves, in order.
pub struct GraphQLRows {
    pub fields: Vec<GqlField>,
    pub rows: BoxStream<'static, Result<Value, GraphQLSourceError>>,
}

/// A list query advertised by ListFlights.
#[derive(Debug, Clone)]
pub struct NamedQuery {
    pub name: String,
    pub query: String,
}

/// What the Flight server needs from the GraphQL engine. The main crate implements it;
/// the tests implement it over fixed rows.
pub trait GraphQLSource: Send + Sync + 'static {
    /// Validates the query and describes the rows of its root list field, without running
    /// it (GetFlightInfo, GetSchema).
    fn shape<'a>(
        &'a self,
        identity: &'a crate::auth::Identity,
        query: &'a str,
        variables: &'a Map<String, Value>,
        operation_name: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<GqlField>, GraphQLSourceError>>;

    /// Runs the query (DoGet) as `identity` (its rules and its database context).
    fn execute<'a>(
        &'a self,
        identity: &'a crate::auth::Identity,
        query: &'a str,
        variables: &'a Map<String, Value>,
        operation_name: Option<&'a str>,
    ) -> BoxFuture<'a, Result<GraphQLRows, GraphQLSourceError>>;

    /// List queries to advertise in ListFlights (e.g. one per root list field).
    fn list_queries(&self) -> Vec<NamedQuery> {
        Vec::new()
    }
}

fn extension(field: Field, name: &str) -> Field {
    field.with_metadata(
        [
            (EXTENSION_NAME.to_string(), name.to_string()),
            (EXTENSION_METADATA.to_string(), String::new()),
        ]
        .into_iter()
        .collect::<std::collections::HashMap<String, String>>(),
    )
}

/// The Arrow field of a GraphQL field.
pub fn arrow_field(f: &GqlField) -> Field {
    field_of(&f.name, &f.ty, f.nullable)
}

fn field_of(name: &str, ty: &GqlType, nullable: bool) -> Field {
    let dt = match ty {
        GqlType::Int => DataType::Int64,
        GqlType::Float => DataType::Float64,
        GqlType::String | GqlType::Id | GqlType::Decimal => DataType::Utf8,
        GqlType::Boolean => DataType::Boolean,
        GqlType::Uuid => {
            return extension(
                Field::new(name, DataType::FixedSizeBinary(16), nullable),
                "arrow.uuid",
            );
        }
        GqlType::DateTime => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        GqlType::Date => DataType::Date32,
        GqlType::Json => {
            return extension(Field::new(name, DataType::Utf8, nullable), "arrow.json");
        }
        GqlType::Object(fields) => {
            DataType::Struct(fields.iter().map(arrow_field).collect::<Fields>())
        }
        GqlType::List(inner) => DataType::List(Arc::new(field_of("item", inner, true))),
    };
    Field::new(name, dt, nullable)
}

/// The Arrow schema of rows with these fields.
pub fn arrow_schema(fields: &[GqlField]) -> SchemaRef {
    Arc::new(Schema::new(
        fields.iter().map(arrow_field).collect::<Vec<_>>(),
    ))
}

/// A builder for one GraphQL field, fed with JSON values.
enum JsonBuilder {
    Int(Int64Builder),
    Float(Float64Builder),
    Str(StringBuilder),
    Json(StringBuilder),
    Bool(BooleanBuilder),
    Uuid(FixedSizeBinaryBuilder),
    DateTime(TimestampMicrosecondBuilder),
    Date(Date32Builder),
    Struct {
        fields: Fields,
        children: Vec<(String, bool, JsonBuilder)>,
        nulls: NullBufferBuilder,
    },
    List {
        field: FieldRef,
        offsets: Vec<i32>,
        nulls: NullBufferBuilder,
        child: Box<JsonBuilder>,
    },
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

impl JsonBuilder {
    fn new(ty: &GqlType, cap: usize) -> JsonBuilder {
        match ty {
            GqlType::Int => JsonBuilder::Int(Int64Builder::with_capacity(cap)),
            GqlType::Float => JsonBuilder::Float(Float64Builder::with_capacity(cap)),
            GqlType::String | GqlType::Id | GqlType::Decimal => {
                JsonBuilder::Str(StringBuilder::with_capacity(cap, cap * 8))
            }
            GqlType::Json => JsonBuilder::Json(StringBuilder::with_capacity(cap, cap * 8)),
            GqlType::Boolean => JsonBuilder::Bool(BooleanBuilder::with_capacity(cap)),
            GqlType::Uuid => JsonBuilder::Uuid(FixedSizeBinaryBuilder::with_capacity(cap, 16)),
            GqlType::DateTime => JsonBuilder::DateTime(
                TimestampMicrosecondBuilder::with_capacity(cap).with_timezone("UTC"),
            ),
            GqlType::Date => JsonBuilder::Date(Date32Builder::with_capacity(cap)),
            GqlType::Object(fields) => JsonBuilder::Struct {
                fields: fields.iter().map(arrow_field).collect(),
                children: fields
                    .iter()
                    .map(|f| (f.name.clone(), f.nullable, JsonBuilder::new(&f.ty, cap)))
                    .collect(),
                nulls: NullBufferBuilder::new(cap),
            },
            GqlType::List(inner) => JsonBuilder::List {
                field: Arc::new(field_of("item", inner, true)),
                offsets: vec![0],
                nulls: NullBufferBuilder::new(cap),
                child: Box::new(JsonBuilder::new(inner, cap)),
            },
        }
    }

    fn append(&mut self, v: &Value) -> Result<(), String> {
        if v.is_null() {
            self.append_null();
            return Ok(());
        }
        let expected = |what: &str| format!("expected {what}, got {}", kind(v));
        match self {
            JsonBuilder::Int(b) => {
                let n = match v {
                    Value::Number(n) => n.as_i64(),
                    Value::String(s) => s.parse().ok(),
                    _ => None,
                };
                b.append_value(n.ok_or_else(|| expected("an integer"))?);
            }
            JsonBuilder::Float(b) => {
                let n = match v {
                    Value::Number(n) => n.as_f64(),
                    Value::String(s) => s.parse().ok(),
                    _ => None,
                };
                b.append_value(n.ok_or_else(|| expected("a number"))?);
            }
            JsonBuilder::Str(b) => match v {
                Value::String(s) => b.append_value(s),
                Value::Number(n) => b.append_value(n.to_string()),
                Value::Bool(x) => b.append_value(x.to_string()),
                _ => return Err(expected("a string")),
            },
            JsonBuilder::Json(b) => b.append_value(v.to_string()),
            JsonBuilder::Bool(b) => {
                b.append_value(v.as_bool().ok_or_else(|| expected("a boolean"))?)
            }
            JsonBuilder::Uuid(b) => {
                let s = v.as_str().ok_or_else(|| expected("a UUID string"))?;
                let u = uuid::Uuid::parse_str(s).map_err(|_| format!("{s:?} is not a UUID"))?;
                b.append_value(u.as_bytes()).map_err(|e| e.to_string())?;
            }
            JsonBuilder::DateTime(b) => {
                let s = v
                    .as_str()
                    .ok_or_else(|| expected("an RFC 3339 timestamp"))?;
                b.append_value(parse_datetime(s)?);
            }
            JsonBuilder::Date(b) => {
                let s = v.as_str().ok_or_else(|| expected("a date YYYY-MM-DD"))?;
                let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
                    .map_err(|_| format!("{s:?} is not a date YYYY-MM-DD"))?;
                let epoch = chrono::NaiveDate::from_ymd_opt(2000, 1, 1).expect("valid date");
                let days = (d - epoch).num_days() as i32 + PG_EPOCH_OFFSET_DAYS;
                b.append_value(days);
            }
            JsonBuilder::Struct {
                children, nulls, ..
            } => {
                let obj = v.as_object().ok_or_else(|| expected("an object"))?;
                for (name, nullable, child) in children.iter_mut() {
                    let value = obj.get(name.as_str()).unwrap_or(&Value::Null);
                    if value.is_null() && !*nullable {
                        return Err(format!("{name}: null in a non-null field"));
                    }
                    child.append(value).map_err(|e| format!("{name}: {e}"))?;
                }
                nulls.append_non_null();
            }
            JsonBuilder::List {
                offsets,
                nulls,
                child,
                ..
            } => {
                let items = v.as_array().ok_or_else(|| expected("a list"))?;
                for (i, item) in items.iter().enumerate() {
                    child.append(item).map_err(|e| format!("[{i}]: {e}"))?;
                }
                let last = *offsets.last().expect("offsets start with 0");
                let next = i32::try_from(items.len())
                    .ok()
                    .and_then(|n| last.checked_add(n))
                    .ok_or("list too long for a 32-bit offset")?;
                offsets.push(next);
                nulls.append_non_null();
            }
        }
        Ok(())
    }

    fn append_null(&mut self) {
        match self {
            JsonBuilder::Int(b) => b.append_null(),
            JsonBuilder::Float(b) => b.append_null(),
            JsonBuilder::Str(b) | JsonBuilder::Json(b) => b.append_null(),
            JsonBuilder::Bool(b) => b.append_null(),
            JsonBuilder::Uuid(b) => b.append_null(),
            JsonBuilder::DateTime(b) => b.append_null(),
            JsonBuilder::Date(b) => b.append_null(),
            JsonBuilder::Struct {
                children, nulls, ..
            } => {
                // A null struct still has one (null) slot in every child.
                for (_, _, c) in children.iter_mut() {
                    c.append_null();
                }
                nulls.append_null();
            }
            JsonBuilder::List { offsets, nulls, .. } => {
                let last = *offsets.last().expect("offsets start with 0");
                offsets.push(last);
                nulls.append_null();
            }
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            JsonBuilder::Int(b) => Arc::new(b.finish()),
            JsonBuilder::Float(b) => Arc::new(b.finish()),
            JsonBuilder::Str(b) | JsonBuilder::Json(b) => Arc::new(b.finish()),
            JsonBuilder::Bool(b) => Arc::new(b.finish()),
            JsonBuilder::Uuid(b) => Arc::new(b.finish()),
            JsonBuilder::DateTime(b) => Arc::new(b.finish()),
            JsonBuilder::Date(b) => Arc::new(b.finish()),
            JsonBuilder::Struct {
                fields,
                children,
                nulls,
            } => {
                let arrays: Vec<ArrayRef> =
                    children.iter_mut().map(|(_, _, c)| c.finish()).collect();
                Arc::new(StructArray::new(fields.clone(), arrays, nulls.finish()))
            }
            JsonBuilder::List {
                field,
                offsets,
                nulls,
                child,
            } => {
                let values = child.finish();
                let taken = std::mem::replace(offsets, vec![0]);
                Arc::new(ListArray::new(
                    field.clone(),
                    OffsetBuffer::new(ScalarBuffer::from(taken)),
                    values,
                    nulls.finish(),
                ))
            }
        }
    }
}

fn parse_datetime(s: &str) -> Result<i64, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_micros());
    }
    // Timestamps without an offset (PostgreSQL `timestamp` rendered by to_json) are UTC.
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
        .map(|t| t.and_utc().timestamp_micros())
        .map_err(|_| format!("{s:?} is not an RFC 3339 timestamp"))
}

/// Accumulates JSON rows into record batches.
pub struct RowBatcher {
    schema: SchemaRef,
    root: JsonBuilder,
    rows: usize,
}

impl RowBatcher {
    pub fn new(fields: &[GqlField], capacity: usize) -> RowBatcher {
        RowBatcher {
            schema: arrow_schema(fields),
            root: JsonBuilder::new(&GqlType::Object(fields.to_vec()), capacity),
            rows: 0,
        }
    }

    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Rows appended since the last batch.
    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Appends one row (a JSON object); the error names the row and field.
    pub fn push(&mut self, row: &Value, index: u64) -> Result<(), String> {
        if !row.is_object() {
            return Err(format!(
                "row {index}: expected an object, got {}",
                kind(row)
            ));
        }
        self.root
            .append(row)
            .map_err(|e| format!("row {index}: {e}"))?;
        self.rows += 1;
        Ok(())
    }

    /// The rows appended so far as a batch.
    pub fn finish(&mut self) -> Result<RecordBatch, String> {
        let root = self.root.finish();
        self.rows = 0;
        let s = root
            .as_any()
            .downcast_ref::<StructArray>()
            .ok_or("root is a struct")?;
        RecordBatch::try_new(self.schema.clone(), s.columns().to_vec()).map_err(|e| e.to_string())
    }
}

/// Maps JSON rows to batches in a task, with the same channel and stop rules as SQL streams.
pub fn spawn_rows(rows: GraphQLRows, producer: Producer) -> mpsc::Receiver<BatchResult> {
    let Producer {
        batch_rows,
        stop,
        shutdown,
    } = producer;
    let (tx, rx) = mpsc::channel(BATCH_QUEUE);
    tokio::spawn(async move {
        let GraphQLRows { fields, mut rows } = rows;
        // Reserve a little and grow: most GraphQL lists are small.
        let mut batcher = RowBatcher::new(&fields, batch_rows.min(1024));
        let mut index = 0u64;
        loop {
            let next = tokio::select! {
                _ = stop.cancelled() => {
                    // Cut short by shutdown: tell the client (if the client left, nobody
                    // is listening and the send fails harmlessly).
                    if shutdown.is_cancelled() {
                        let _ = tx.try_send(Err(StreamError::ShuttingDown));
                    }
                    return;
                }
                r = rows.next() => r,
            };
            let row = match next {
                None => break,
                Some(Ok(row)) => row,
                Some(Err(e)) => {
                    let _ = tx
                        .send(Err(StreamError::Query(format!("graphql: {e}"))))
                        .await;
                    return;
                }
            };
            if let Err(e) = batcher.push(&row, index) {
                let _ = tx
                    .send(Err(StreamError::Decode(format!("graphql {e}"))))
                    .await;
                return;
            }
            index += 1;
            if batcher.len() == batch_rows {
                let b = batcher
                    .finish()
                    .map(Batch::from)
                    .map_err(StreamError::Arrow);
                if tx.send(b).await.is_err() {
                    return;
                }
            }
        }
        if !batcher.is_empty() {
            let _ = tx
                .send(
                    batcher
                        .finish()
                        .map(Batch::from)
                        .map_err(StreamError::Arrow),
                )
                .await;
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Array;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Int64Type, TimestampMicrosecondType};
    use serde_json::json;

    fn shape() -> Vec<GqlField> {
        vec![
            GqlField::new("id", GqlType::Uuid, false),
            GqlField::new("n", GqlType::Int, true),
            GqlField::new("at", GqlType::DateTime, true),
            GqlField::new(
                "author",
                GqlType::Object(vec![
                    GqlField::new("name", GqlType::String, true),
                    GqlField::new("score", GqlType::Float, true),
                ]),
                true,
            ),
            GqlField::new("tags", GqlType::List(Box::new(GqlType::String)), true),
            GqlField::new("meta", GqlType::Json, true),
        ]
    }

    #[test]
    fn maps_rows_to_typed_columns() {
        let mut b = RowBatcher::new(&shape(), 4);
        let rows = [
            json!({"id": "6f1c0f3e-3f4e-4b43-9a55-0a1f3b1d2c01", "n": 3, "at": "2026-01-02T03:04:05.123456+01:00",
                   "author": {"name": "Ann", "score": 1.5}, "tags": ["a", null], "meta": {"k": [1]}}),
            json!({"id": "6f1c0f3e-3f4e-4b43-9a55-0a1f3b1d2c02", "n": "9007199254740993", "at": null,
                   "author": null, "tags": null}),
        ];
        for (i, r) in rows.iter().enumerate() {
            b.push(r, i as u64).unwrap();
        }
        let batch = b.finish().unwrap();
        assert_eq!(batch.num_rows(), 2);
        let n = batch.column(1).as_primitive::<Int64Type>();
        assert_eq!(n.value(1), 9_007_199_254_740_993);
        let at = batch.column(2).as_primitive::<TimestampMicrosecondType>();
        assert_eq!(at.value(0), 1_767_319_445_123_456);
        assert!(at.is_null(1));
        let author = batch.column(3).as_struct();
        assert!(author.is_null(1));
        assert_eq!(author.column(0).as_string::<i32>().value(0), "Ann");
        let tags = batch.column(4).as_list::<i32>();
        assert_eq!(tags.value(0).len(), 2);
        assert!(tags.is_null(1));
        assert_eq!(batch.column(5).as_string::<i32>().value(0), "{\"k\":[1]}");
        assert!(batch.column(5).is_null(1));
    }

    #[test]
    fn bad_values_name_row_and_field() {
        let mut b = RowBatcher::new(&shape(), 4);
        let e = b
            .push(
                &json!({"id": "6f1c0f3e-3f4e-4b43-9a55-0a1f3b1d2c01", "author": {"score": "x"}}),
                7,
            )
            .unwrap_err();
        assert!(
            e.contains("row 7") && e.contains("author") && e.contains("score"),
            "{e}"
        );
        let e = b.push(&json!({"n": 1}), 8).unwrap_err();
        assert!(e.contains("id"), "{e}");
    }
}
