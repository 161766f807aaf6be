//! DoPut: appends Arrow record batches to an allow-listed `ta_` table with one binary
//! `COPY … FROM STDIN` inside one transaction.
//!
//! tokio-postgres' `BinaryCopyInWriter` frames the COPY (header, rows, field lengths,
//! trailer) and each value goes through postgres-types' `ToSql` (integers, floats, bool,
//! text, bytea, uuid, arrays with their element OID and NULL flag). Two are encoded here:
//! numeric, because postgres-types writes it only from `rust_decimal` (28 digits) and
//! Decimal128 carries 38; and jsonb, whose version byte is put before the JSON text as sent
//! (postgres-types writes jsonb only from a serde value, which would parse it again).
//!
//! The upload names its table with a path descriptor (`["ta_events"]`) or a command
//! descriptor (`{"table": "ta_events"}`). The Arrow schema is checked against the table
//! before anything is written: every field must name a column and have a type that converts
//! without loss (below); a stream whose schema is wrong, or that changes schema midway, is
//! refused whole and the transaction rolled back — nothing is written. Columns the upload
//! omits take their defaults.
//!
//! | column            | accepted Arrow types                                        |
//! |-------------------|-------------------------------------------------------------|
//! | int2 / int4 / int8| signed and unsigned integers that fit                       |
//! | float4 / float8   | Float32 / Float32, Float64                                  |
//! | numeric           | Decimal128 (any precision and scale), integers              |
//! | text, varchar, …  | Utf8, LargeUtf8                                             |
//! | json / jsonb      | Utf8, LargeUtf8 (PostgreSQL validates the JSON)             |
//! | bool              | Boolean                                                     |
//! | date              | Date32                                                      |
//! | time              | Time64(µs)                                                  |
//! | timestamp         | Timestamp(any unit) without time zone                       |
//! | timestamptz       | Timestamp(any unit) with a time zone                        |
//! | uuid              | FixedSizeBinary(16)                                         |
//! | bytea             | Binary, LargeBinary                                         |
//! | T[]               | List / LargeList of an accepted element type                |

use std::error::Error as _;
use std::pin::pin;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Decimal128Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type,
    Int64Type, Time64MicrosecondType, UInt8Type, UInt16Type, UInt32Type,
};
use arrow_array::{Array, ArrayRef};
use arrow_flight::FlightDescriptor;
use arrow_flight::decode::{DecodedPayload, FlightDataDecoder};
use arrow_flight::flight_descriptor::DescriptorType;
use arrow_schema::{DataType, SchemaRef, TimeUnit};
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{IsNull, Kind, ToSql, Type, to_sql_checked};

use super::registry::{Column, Registry, RelationKind, describe_pg};
use super::types::{PG_EPOCH_OFFSET_DAYS, PG_EPOCH_OFFSET_MICROS, PgType, oid};
use crate::sql::quote_ident;

#[derive(Debug, thiserror::Error)]
pub enum PutError {
    #[error(
        "DoPut needs a descriptor naming the table: path [\"ta_x\"] or command {{\"table\": \"ta_x\"}}"
    )]
    NoDescriptor,
    #[error("invalid DoPut descriptor: {0}")]
    BadDescriptor(String),
    #[error("table {0:?} does not accept DoPut: it is not listed in flight.put_tables")]
    NotAllowed(String),
    #[error("table {0:?} is not a ta_ table in the schema registry")]
    UnknownTable(String),
    #[error("schema refused for {table}: {message}")]
    Schema { table: String, message: String },
    #[error("the upload sent no schema")]
    NoSchema,
    #[error("invalid Flight data: {0}")]
    Decode(String),
    #[error("database unavailable: {0}")]
    Pool(String),
    #[error("write refused by the database, nothing was written: {0}")]
    Database(String),
    #[error("value not writable: {0}")]
    Value(String),
}

impl From<PutError> for tonic::Status {
    fn from(e: PutError) -> tonic::Status {
        let m = e.to_string();
        match e {
            PutError::NotAllowed(_) => tonic::Status::permission_denied(m),
            PutError::UnknownTable(_) => tonic::Status::not_found(m),
            PutError::Pool(_) => tonic::Status::unavailable(m),
            PutError::Database(_) => tonic::Status::failed_precondition(m),
            _ => tonic::Status::invalid_argument(m),
        }
    }
}

/// The table a descriptor names.
pub fn descriptor_table(d: &FlightDescriptor) -> Result<String, PutError> {
    match DescriptorType::try_from(d.r#type) {
        Ok(DescriptorType::Path) => match d.path.as_slice() {
            [name] => Ok(name.clone()),
            _ => Err(PutError::BadDescriptor(
                "the path must have exactly one element, the table name".into(),
            )),
        },
        Ok(DescriptorType::Cmd) => {
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Cmd {
                table: String,
            }
            serde_json::from_slice::<Cmd>(&d.cmd)
                .map(|c| c.table)
                .map_err(|e| PutError::BadDescriptor(e.to_string()))
        }
        _ => Err(PutError::NoDescriptor),
    }
}

/// A field of the upload matched to its column.
struct Target {
    field: usize,
    column: Column,
}

fn compatible(dt: &DataType, c: &Column, pg: &PgType, elem: bool) -> bool {
    let oid_ = if elem { c.elem_oid } else { c.type_oid };
    use DataType as D;
    match pg {
        PgType::Int2 => matches!(dt, D::Int8 | D::Int16 | D::UInt8),
        PgType::Int4 => matches!(dt, D::Int8 | D::Int16 | D::Int32 | D::UInt8 | D::UInt16),
        PgType::Int8 => matches!(
            dt,
            D::Int8 | D::Int16 | D::Int32 | D::Int64 | D::UInt8 | D::UInt16 | D::UInt32
        ),
        PgType::Float4 => matches!(dt, D::Float32),
        PgType::Float8 => matches!(dt, D::Float32 | D::Float64),
        PgType::Numeric { .. } => numeric_source(dt),
        PgType::AsText if oid_ == oid::NUMERIC => numeric_source(dt),
        PgType::Text | PgType::Json | PgType::Jsonb => matches!(dt, D::Utf8 | D::LargeUtf8),
        PgType::Bool => matches!(dt, D::Boolean),
        PgType::Date => matches!(dt, D::Date32),
        PgType::Time => matches!(dt, D::Time64(TimeUnit::Microsecond)),
        PgType::Timestamp => matches!(dt, D::Timestamp(_, None)),
        PgType::Timestamptz => matches!(dt, D::Timestamp(_, Some(_))),
        PgType::Uuid => matches!(dt, D::FixedSizeBinary(16)),
        PgType::Bytea => matches!(dt, D::Binary | D::LargeBinary),
        PgType::Array(e) => match dt {
            D::List(f) | D::LargeList(f) => compatible(f.data_type(), c, e, true),
            _ => false,
        },
        PgType::AsText => false,
    }
}

fn numeric_source(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Decimal128(_, _)
            | DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
    )
}

/// Matches the upload's schema to the table, naming the first problem.
fn plan_targets(
    table: &str,
    schema: &SchemaRef,
    columns: &[Column],
) -> Result<Vec<Target>, PutError> {
    let refuse = |message: String| PutError::Schema {
        table: table.to_string(),
        message,
    };
    if schema.fields().is_empty() {
        return Err(refuse("the schema has no fields".into()));
    }
    let mut targets = Vec::with_capacity(schema.fields().len());
    for (i, f) in schema.fields().iter().enumerate() {
        if schema.fields().iter().take(i).any(|g| g.name() == f.name()) {
            return Err(refuse(format!("field {:?} appears twice", f.name())));
        }
        let c = columns
            .iter()
            .find(|c| c.name == *f.name())
            .ok_or_else(|| refuse(format!("{table} has no column {:?}", f.name())))?;
        if !compatible(f.data_type(), c, &c.pg, false) {
            return Err(refuse(format!(
                "field {:?} is {}, which cannot be written to column {} of type {}",
                f.name(),
                f.data_type(),
                c.name,
                c.sql_type
            )));
        }
        targets.push(Target {
            field: i,
            column: c.clone(),
        });
    }
    Ok(targets)
}

/// The staging table of an upload into a table with row-level security (session-local,
/// dropped at commit or rollback).
const STAGE: &str = "pg_temp.fraiseql_put_stage";

/// Runs one DoPut: returns the number of rows written.
pub async fn put<S>(
    descriptor: Option<FlightDescriptor>,
    data: S,
    registry: &Registry,
    allowed: &[String],
    pool: &deadpool_postgres::Pool,
    ctx: &crate::db::RequestContext,
) -> Result<u64, PutError>
where
    S: Stream<Item = Result<arrow_flight::FlightData, arrow_flight::error::FlightError>>
        + Send
        + 'static,
{
    let table = descriptor_table(&descriptor.ok_or(PutError::NoDescriptor)?)?;
    if !allowed.contains(&table) {
        return Err(PutError::NotAllowed(table));
    }
    let rel = registry
        .get(&table)
        .filter(|r| r.kind == RelationKind::Table)
        .ok_or_else(|| PutError::UnknownTable(table.clone()))?;
    let mut decoder = Decoder::new(data);
    // The schema message comes first: check it before opening a transaction.
    let schema = upload_schema(&mut decoder).await?;
    let targets = plan_targets(&table, &schema, &rel.columns)?;

    let mut client = pool
        .get()
        .await
        .map_err(|e| PutError::Pool(e.to_string()))?;
    let tx = client
        .transaction()
        .await
        .map_err(|e| PutError::Database(describe_pg(&e)))?;
    // The caller's role and settings, as for every statement Flight runs: row-level
    // security and grants see the token's identity, not the pool's login role.
    crate::db::request::apply(&*tx, ctx)
        .await
        .map_err(|e| PutError::Database(describe_pg(&e)))?;
    let cols: Vec<String> = targets
        .iter()
        .map(|t| quote_ident(&t.column.name))
        .collect();
    // PostgreSQL refuses COPY FROM into a table with row-level security: such uploads are
    // staged in a temporary table and moved with INSERT … SELECT, where the policies'
    // WITH CHECK applies to every row (one violation refuses the whole upload).
    let rls: bool = tx
        .query_one(
            "SELECT relrowsecurity FROM pg_class WHERE oid = $1::text::regclass",
            &[&rel.qualified()],
        )
        .await
        .map_err(|e| PutError::Database(describe_pg(&e)))?
        .get(0);
    let copy_into = if rls {
        // Column types come from the catalog (format_type), not from the client.
        let defs: Vec<String> = targets
            .iter()
            .map(|t| format!("{} {}", quote_ident(&t.column.name), t.column.sql_type))
            .collect();
        tx.batch_execute(&format!(
            "CREATE TEMPORARY TABLE {STAGE} ({}) ON COMMIT DROP",
            defs.join(", ")
        ))
        .await
        .map_err(|e| PutError::Database(describe_pg(&e)))?;
        STAGE.to_string()
    } else {
        rel.qualified()
    };
    let copy = format!(
        "COPY {copy_into} ({}) FROM STDIN (FORMAT binary)",
        cols.join(", ")
    );
    let sink = tx
        .copy_in::<_, Bytes>(&copy)
        .await
        .map_err(|e| PutError::Database(describe_pg(&e)))?;
    let types: Vec<Type> = targets.iter().map(|t| copy_type(&t.column)).collect();
    let mut writer = pin!(BinaryCopyInWriter::new(sink, &types));
    let mut rows = 0u64;
    // Any early return drops the writer (aborting the COPY) and the transaction (rolling it
    // back): nothing from this upload is kept.
    while let Some(item) = decoder.next().await {
        let Some(batch) = next_batch(item, &schema, &table)? else {
            continue;
        };
        let arrays: Vec<&ArrayRef> = targets.iter().map(|t| batch.column(t.field)).collect();
        for row in 0..batch.num_rows() {
            let fields = RowFields {
                targets: &targets,
                arrays: &arrays,
                row,
                next: 0,
            };
            writer
                .as_mut()
                .write_raw(fields)
                .await
                .map_err(write_error)?;
        }
        rows += batch.num_rows() as u64;
    }
    let written = writer
        .as_mut()
        .finish()
        .await
        .map_err(|e| PutError::Database(describe_pg(&e)))?;
    if rls {
        let cols = cols.join(", ");
        tx.execute(
            &format!(
                "INSERT INTO {} ({cols}) SELECT {cols} FROM {STAGE}",
                rel.qualified()
            ),
            &[],
        )
        .await
        .map_err(|e| PutError::Database(describe_pg(&e)))?;
    }
    tx.commit()
        .await
        .map_err(|e| PutError::Database(describe_pg(&e)))?;
    debug_assert_eq!(written, rows);
    Ok(written)
}

type FlightItem = Result<arrow_flight::FlightData, arrow_flight::error::FlightError>;

/// Checks each message before arrow-ipc decodes it, so that no client input reaches one of
/// the assertions arrow keeps for buffers it trusts (each kind found by `make fuzz`, target
/// `flight_put`):
/// - every buffer of a batch lies inside the message body at an 8-byte aligned offset:
///   arrow-ipc slices the buffers at the offsets the header gives and panics on one past the
///   end, and arrow-data asserts the alignment of an offsets buffer it validates;
/// - every buffer of a record batch that arrow-data views as values or offsets of width w
///   (from the layout of the upload's schema) is a whole number of w-byte values: its
///   `typed_data` asserts that, and a 13-byte offsets buffer panicked (input `ZgBAISgqAA==`).
///
/// The IPC format pads every buffer to a multiple of 8 bytes and a writer writes whole
/// values, so no writer that follows the format is refused. A header that does not parse is
/// left to the decoder.
#[derive(Default)]
struct Checker {
    /// Per buffer of a record batch, in IPC order, the width its length must be a multiple
    /// of; `None` before a schema, or for a schema with a type no upload carries (such an
    /// upload is refused at its schema, before any batch is decoded).
    widths: Option<Vec<usize>>,
}

impl Checker {
    fn check(&mut self, item: FlightItem) -> FlightItem {
        let d = item?;
        let Ok(msg) = arrow_ipc::root_as_message(&d.data_header) else {
            return Ok(d);
        };
        let refuse = |m: String| Err(arrow_flight::error::FlightError::DecodeError(m));
        let (batch, record) = match msg.header_type() {
            arrow_ipc::MessageHeader::Schema => {
                self.widths = arrow_schema::Schema::try_from(&d)
                    .ok()
                    .and_then(|s| buffer_widths(&s));
                return Ok(d);
            }
            arrow_ipc::MessageHeader::RecordBatch => (msg.header_as_record_batch(), true),
            arrow_ipc::MessageHeader::DictionaryBatch => (
                msg.header_as_dictionary_batch().and_then(|b| b.data()),
                false,
            ),
            _ => return Ok(d),
        };
        let Some((batch, buffers)) = batch.and_then(|b| Some((b, b.buffers()?))) else {
            return Ok(d);
        };
        let body = d.data_body.len() as u64;
        let fits = buffers.iter().all(|b| {
            u64::try_from(b.offset())
                .ok()
                .zip(u64::try_from(b.length()).ok())
                .filter(|(o, _)| o % 8 == 0)
                .and_then(|(o, l)| o.checked_add(l))
                .is_some_and(|end| end <= body)
        });
        if !fits {
            return refuse(
                "a buffer of the batch lies outside the message body or is not 8-byte aligned"
                    .into(),
            );
        }
        // A compressed buffer's length is its compressed size; arrow-ipc refuses those
        // itself (no codec is built in).
        if !record || batch.compression().is_some() {
            return Ok(d);
        }
        let Some(widths) = &self.widths else {
            return refuse("a record batch before a schema an upload can carry".into());
        };
        if widths.len() != buffers.len() {
            return refuse(format!(
                "the batch's buffers do not match its schema: {} buffers where the schema lays out {}",
                buffers.len(),
                widths.len()
            ));
        }
        for (i, (b, &w)) in buffers.iter().zip(widths).enumerate() {
            if b.length() % w as i64 != 0 {
                return refuse(format!(
                    "the batch's buffers do not match its schema: buffer {i} is {} bytes, not whole {w}-byte values",
                    b.length()
                ));
            }
        }
        Ok(d)
    }
}

/// The buffers of a record batch of `schema` in IPC order (each field's validity bitmap,
/// then its offsets and values, then its children's), as the width each one's length must
/// be a multiple of (1 for bytes and bitmaps). `None` when a field has a type no upload
/// accepts (`compatible`).
fn buffer_widths(schema: &arrow_schema::Schema) -> Option<Vec<usize>> {
    fn field(dt: &DataType, out: &mut Vec<usize>) -> Option<()> {
        use DataType as D;
        out.push(1);
        match dt {
            D::Boolean | D::FixedSizeBinary(_) => out.push(1),
            D::Utf8 | D::Binary => out.extend([4, 1]),
            D::LargeUtf8 | D::LargeBinary => out.extend([8, 1]),
            D::List(f) => {
                out.push(4);
                field(f.data_type(), out)?;
            }
            D::LargeList(f) => {
                out.push(8);
                field(f.data_type(), out)?;
            }
            D::Int8
            | D::Int16
            | D::Int32
            | D::Int64
            | D::UInt8
            | D::UInt16
            | D::UInt32
            | D::Float32
            | D::Float64
            | D::Decimal128(_, _)
            | D::Date32
            | D::Time64(_)
            | D::Timestamp(_, _) => out.push(dt.primitive_width()?),
            _ => return None,
        }
        Some(())
    }
    let mut out = Vec::new();
    for f in schema.fields() {
        field(f.data_type(), &mut out)?;
    }
    Some(out)
}

/// The upload's decoder: messages [`Checker`]-checked into arrow-ipc, with a guard. The
/// checks refuse the inputs known to reach an assertion in arrow; the guard is for any
/// other: a panic while decoding becomes a decode error for this upload, and the decoder is
/// not polled again.
struct Decoder {
    inner: FlightDataDecoder,
    failed: bool,
}

impl Decoder {
    fn new<S>(data: S) -> Decoder
    where
        S: Stream<Item = FlightItem> + Send + 'static,
    {
        let mut checker = Checker::default();
        Decoder {
            inner: FlightDataDecoder::new(data.map(move |item| checker.check(item))),
            failed: false,
        }
    }

    async fn next(
        &mut self,
    ) -> Option<Result<arrow_flight::decode::DecodedFlightData, arrow_flight::error::FlightError>>
    {
        if self.failed {
            return None;
        }
        let inner = &mut self.inner;
        let polled = std::future::poll_fn(|cx| {
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                inner.poll_next_unpin(cx)
            })) {
                Ok(p) => p.map(|item| item.map(Ok)),
                Err(_) => std::task::Poll::Ready(Some(Err(()))),
            }
        })
        .await;
        match polled {
            None => None,
            Some(Ok(item)) => Some(item),
            Some(Err(())) => {
                self.failed = true;
                tracing::warn!(target: "fraiseql::flight", "DoPut: a batch whose buffers do not match its schema made the Arrow decoder panic; refused");
                Some(Err(arrow_flight::error::FlightError::DecodeError(
                    "the batch's buffers do not match its schema".into(),
                )))
            }
        }
    }
}

/// The upload's schema: its first message that is not empty.
async fn upload_schema(decoder: &mut Decoder) -> Result<SchemaRef, PutError> {
    loop {
        match decoder.next().await {
            None => return Err(PutError::NoSchema),
            Some(Err(e)) => return Err(PutError::Decode(e.to_string())),
            Some(Ok(d)) => match d.payload {
                DecodedPayload::Schema(s) => return Ok(s),
                DecodedPayload::None => continue,
                DecodedPayload::RecordBatch(_) => return Err(PutError::NoSchema),
            },
        }
    }
}

/// One decoded message after the schema: a batch to write, `None` for a message without
/// rows; a schema that differs from the first refuses the upload.
fn next_batch(
    item: Result<arrow_flight::decode::DecodedFlightData, arrow_flight::error::FlightError>,
    schema: &SchemaRef,
    table: &str,
) -> Result<Option<arrow_array::RecordBatch>, PutError> {
    let decoded = item.map_err(|e| PutError::Decode(e.to_string()))?;
    let refuse = |message: &str| PutError::Schema {
        table: table.to_string(),
        message: message.into(),
    };
    match decoded.payload {
        DecodedPayload::None => Ok(None),
        DecodedPayload::Schema(s) if s.fields() != schema.fields() => {
            Err(refuse("the schema changed in the middle of the upload"))
        }
        DecodedPayload::Schema(_) => Ok(None),
        DecodedPayload::RecordBatch(batch) if batch.schema().fields() != schema.fields() => {
            Err(refuse("a batch does not match the upload's schema"))
        }
        DecodedPayload::RecordBatch(batch) => Ok(Some(batch)),
    }
}

/// The DoPut path without a database: decodes an upload into `table` (whose columns are
/// `columns`), checks its schema and encodes every value as the binary COPY would. Returns
/// the rows and the bytes encoded. Public for the fuzz targets (`fuzz/`).
pub async fn encode_upload<S>(
    table: &str,
    data: S,
    columns: &[Column],
) -> Result<(u64, usize), PutError>
where
    S: Stream<Item = Result<arrow_flight::FlightData, arrow_flight::error::FlightError>>
        + Send
        + 'static,
{
    let mut decoder = Decoder::new(data);
    let schema = upload_schema(&mut decoder).await?;
    let targets = plan_targets(table, &schema, columns)?;
    let types: Vec<Type> = targets.iter().map(|t| copy_type(&t.column)).collect();
    let (mut rows, mut bytes) = (0u64, 0usize);
    let mut buf = BytesMut::new();
    while let Some(item) = decoder.next().await {
        let Some(batch) = next_batch(item, &schema, table)? else {
            continue;
        };
        let arrays: Vec<&ArrayRef> = targets.iter().map(|t| batch.column(t.field)).collect();
        for row in 0..batch.num_rows() {
            let fields = RowFields {
                targets: &targets,
                arrays: &arrays,
                row,
                next: 0,
            };
            for (field, ty) in fields.zip(&types) {
                buf.clear();
                field
                    .to_sql_checked(ty, &mut buf)
                    .map_err(|e| PutError::Value(e.to_string()))?;
                bytes += buf.len();
            }
        }
        rows += batch.num_rows() as u64;
    }
    Ok((rows, bytes))
}

/// The type COPY is told a column has. Arrays are built from the column's element OID,
/// which each array value carries (for an array of a domain, the domain's base type); a
/// scalar is the built-in type of its OID (every writable scalar is one).
fn copy_type(c: &Column) -> Type {
    let named = |oid: u32, name: String| {
        Type::from_oid(oid)
            .unwrap_or_else(|| Type::new(name, oid, Kind::Simple, "pg_catalog".into()))
    };
    match &c.pg {
        PgType::Array(e) => Type::new(
            c.sql_type.clone(),
            c.type_oid,
            Kind::Array(named(c.elem_oid, e.describe())),
            "pg_catalog".into(),
        ),
        _ => named(c.type_oid, c.sql_type.clone()),
    }
}

/// The message of a value that cannot be written, with its column and row.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct ValueError(String);

/// A writer error: a value this module refused, or the database's answer.
fn write_error(e: tokio_postgres::Error) -> PutError {
    match e.source().and_then(|s| s.downcast_ref::<ValueError>()) {
        Some(v) => PutError::Value(v.0.clone()),
        None => PutError::Database(describe_pg(&e)),
    }
}

type BoxError = Box<dyn std::error::Error + Sync + Send>;

/// The fields of one row, in column order. A named iterator rather than a closure chain:
/// the future that holds it must be `Send` for every lifetime, which closures over
/// borrowed slices do not prove.
struct RowFields<'a> {
    targets: &'a [Target],
    arrays: &'a [&'a ArrayRef],
    row: usize,
    next: usize,
}

impl<'a> Iterator for RowFields<'a> {
    type Item = Field<'a>;

    fn next(&mut self) -> Option<Field<'a>> {
        let t = self.targets.get(self.next)?;
        let array = self.arrays[self.next].as_ref();
        self.next += 1;
        Some(Field {
            value: Value {
                array,
                row: self.row,
                pg: &t.column.pg,
            },
            column: &t.column.name,
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.targets.len() - self.next;
        (n, Some(n))
    }
}

impl ExactSizeIterator for RowFields<'_> {}

/// One field of a row: its value, and the column named when the value cannot be written.
#[derive(Debug)]
struct Field<'a> {
    value: Value<'a>,
    column: &'a str,
}

impl ToSql for Field<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        self.value.to_sql(ty, out).map_err(|e| {
            let row = self.value.row;
            Box::new(ValueError(format!("column {} row {row}: {e}", self.column))) as BoxError
        })
    }

    /// `plan_targets` has matched every field to its column's type.
    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// Row `row` of an Arrow array, written in the binary form of the column type `pg`.
struct Value<'a> {
    array: &'a dyn Array,
    row: usize,
    pg: &'a PgType,
}

impl std::fmt::Debug for Value<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} row {} as {:?}",
            self.array.data_type(),
            self.row,
            self.pg
        )
    }
}

impl ToSql for Value<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        if self.array.is_null(self.row) {
            return Ok(IsNull::Yes);
        }
        let start = out.len();
        let is_null = self.encode(ty, out)?;
        if i32::try_from(out.len() - start).is_err() {
            return Err("value too large".into());
        }
        Ok(is_null)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

fn int_value(a: &dyn Array, row: usize) -> Option<i64> {
    Some(match a.data_type() {
        DataType::Int8 => a.as_primitive::<Int8Type>().value(row) as i64,
        DataType::Int16 => a.as_primitive::<Int16Type>().value(row) as i64,
        DataType::Int32 => a.as_primitive::<Int32Type>().value(row) as i64,
        DataType::Int64 => a.as_primitive::<Int64Type>().value(row),
        DataType::UInt8 => a.as_primitive::<UInt8Type>().value(row) as i64,
        DataType::UInt16 => a.as_primitive::<UInt16Type>().value(row) as i64,
        DataType::UInt32 => a.as_primitive::<UInt32Type>().value(row) as i64,
        _ => return None,
    })
}

impl Value<'_> {
    /// The non-NULL value. Integers narrower than their column were accepted by
    /// `compatible` only where they fit, so the `as` casts below are lossless.
    fn encode(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        let (a, row) = (self.array, self.row);
        let unsupported =
            || -> BoxError { format!("unsupported Arrow type {}", a.data_type()).into() };
        let int = || int_value(a, row).ok_or_else(unsupported);
        let text = || match a.data_type() {
            DataType::Utf8 => a.as_string::<i32>().value(row),
            _ => a.as_string::<i64>().value(row),
        };
        match self.pg {
            PgType::Int2 => (int()? as i16).to_sql(ty, out),
            PgType::Int4 => (int()? as i32).to_sql(ty, out),
            PgType::Int8 => int()?.to_sql(ty, out),
            PgType::Float4 => a.as_primitive::<Float32Type>().value(row).to_sql(ty, out),
            PgType::Float8 => match a.data_type() {
                DataType::Float32 => {
                    f64::from(a.as_primitive::<Float32Type>().value(row)).to_sql(ty, out)
                }
                _ => a.as_primitive::<Float64Type>().value(row).to_sql(ty, out),
            },
            PgType::Numeric { .. } | PgType::AsText => {
                match a.data_type() {
                    DataType::Decimal128(_, scale) => {
                        encode_numeric(a.as_primitive::<Decimal128Type>().value(row), *scale, out)?
                    }
                    _ => encode_numeric(int()? as i128, 0, out)?,
                }
                Ok(IsNull::No)
            }
            PgType::Text | PgType::Json => text().to_sql(ty, out),
            PgType::Jsonb => {
                // jsonb's binary form: format version 1, then the JSON text.
                out.put_u8(1);
                out.put_slice(text().as_bytes());
                Ok(IsNull::No)
            }
            PgType::Bool => a.as_boolean().value(row).to_sql(ty, out),
            // PostgreSQL's date is int4 days, and time and timestamps int8 microseconds,
            // counted from 2000-01-01 where Arrow counts from 1970-01-01.
            PgType::Date => a
                .as_primitive::<Date32Type>()
                .value(row)
                .checked_sub(PG_EPOCH_OFFSET_DAYS)
                .ok_or("date out of range")?
                .to_sql(ty, out),
            PgType::Time => a
                .as_primitive::<Time64MicrosecondType>()
                .value(row)
                .to_sql(ty, out),
            PgType::Timestamp | PgType::Timestamptz => {
                let DataType::Timestamp(unit, _) = a.data_type() else {
                    return Err(unsupported());
                };
                use arrow_array::types::{
                    TimestampMicrosecondType as Us, TimestampMillisecondType as Ms,
                    TimestampNanosecondType as Ns, TimestampSecondType as S,
                };
                match unit {
                    TimeUnit::Second => a.as_primitive::<S>().value(row).checked_mul(1_000_000),
                    TimeUnit::Millisecond => a.as_primitive::<Ms>().value(row).checked_mul(1_000),
                    TimeUnit::Microsecond => Some(a.as_primitive::<Us>().value(row)),
                    TimeUnit::Nanosecond => {
                        Some(a.as_primitive::<Ns>().value(row).div_euclid(1_000))
                    }
                }
                .and_then(|micros| micros.checked_sub(PG_EPOCH_OFFSET_MICROS))
                .ok_or("timestamp out of range")?
                .to_sql(ty, out)
            }
            PgType::Uuid => {
                uuid::Uuid::from_slice(a.as_fixed_size_binary().value(row))?.to_sql(ty, out)
            }
            PgType::Bytea => match a.data_type() {
                DataType::Binary => a.as_binary::<i32>().value(row).to_sql(ty, out),
                _ => a.as_binary::<i64>().value(row).to_sql(ty, out),
            },
            PgType::Array(e) => {
                let values = match a.data_type() {
                    DataType::List(_) => a.as_list::<i32>().value(row),
                    _ => a.as_list::<i64>().value(row),
                };
                if i32::try_from(values.len()).is_err() {
                    return Err("array too long".into());
                }
                let elements: Vec<Value> = (0..values.len())
                    .map(|i| Value {
                        array: values.as_ref(),
                        row: i,
                        pg: e,
                    })
                    .collect();
                elements.to_sql(ty, out)
            }
        }
    }
}

/// PostgreSQL's binary numeric from an integer scaled by `10^scale`.
fn encode_numeric(value: i128, scale: i8, out: &mut BytesMut) -> Result<(), String> {
    let negative = value < 0;
    let mut digits = value.unsigned_abs().to_string();
    let scale = if scale < 0 {
        // A negative scale means trailing zeros before the point.
        digits.extend(std::iter::repeat_n('0', usize::from(scale.unsigned_abs())));
        0usize
    } else {
        scale as usize
    };
    if digits.len() <= scale {
        digits = format!("{}{}", "0".repeat(scale - digits.len() + 1), digits);
    }
    let (int_part, frac_part) = digits.split_at(digits.len() - scale);
    let int_part = int_part.trim_start_matches('0');
    // Align to base-10000 groups around the decimal point.
    let int_pad = (4 - int_part.len() % 4) % 4;
    let frac_pad = (4 - frac_part.len() % 4) % 4;
    let int_str = format!("{}{}", "0".repeat(int_pad), int_part);
    let frac_str = format!("{}{}", frac_part, "0".repeat(frac_pad));
    let group = |s: &str| -> Vec<i16> {
        s.as_bytes()
            .chunks(4)
            .map(|c| c.iter().fold(0i16, |acc, d| acc * 10 + (d - b'0') as i16))
            .collect()
    };
    let int_groups = group(&int_str);
    let mut groups: Vec<i16> = int_groups.clone();
    groups.extend(group(&frac_str));
    let mut weight = int_groups.len() as i32 - 1;
    // Strip leading zero groups (each lowers the weight) and trailing zero groups.
    let lead = groups.iter().take_while(|g| **g == 0).count();
    groups.drain(..lead);
    weight -= lead as i32;
    while groups.last() == Some(&0) {
        groups.pop();
    }
    if groups.is_empty() {
        weight = 0;
    }
    out.put_i16(groups.len() as i16);
    out.put_i16(weight as i16);
    out.put_u16(if negative && !groups.is_empty() {
        0x4000
    } else {
        0
    });
    out.put_i16(scale as i16);
    for g in groups {
        out.put_i16(g);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flight::types::numeric_to_i128;

    #[test]
    fn numeric_round_trips() {
        for (v, s) in [
            (0i128, 2i8),
            (125, 2),
            (-5, 2),
            (12_345_678_000, 3),
            (1, 6),
            (-99_999_999_999_999_999_999_999_999_999_999_999i128, 4),
            (10_000, 0),
        ] {
            let mut b = BytesMut::new();
            encode_numeric(v, s, &mut b).unwrap();
            assert_eq!(numeric_to_i128(&b, s).unwrap(), Some(v), "{v} scale {s}");
        }
    }

    /// Arrow allows scales from -128 to 127: every one encodes, none panics.
    #[test]
    fn every_decimal_scale_encodes() {
        for s in i8::MIN..=i8::MAX {
            for v in [0i128, 1, -7, i128::MAX / 3, i128::MIN + 1] {
                let mut b = BytesMut::new();
                let r = encode_numeric(v, s, &mut b);
                assert!(r.is_ok(), "{v} scale {s}: {r:?}");
            }
        }
        // A negative scale is trailing zeros: 7 at scale -128 is 7·10^128.
        let mut b = BytesMut::new();
        encode_numeric(7, -128, &mut b).unwrap();
        let weight = i16::from_be_bytes([b[2], b[3]]);
        assert_eq!(weight, 32, "10^128 is 32 base-10000 digits up");
    }
}

#[cfg(test)]
mod fuzz_regressions {
    use std::sync::Arc;

    use arrow_array::{Int32Array, RecordBatch};

    use super::*;

    /// Found by `make fuzz` (flight_put): a batch whose buffers lie past the end of its body
    /// made arrow-ipc panic while decoding; it is refused as invalid Flight data.
    #[tokio::test]
    async fn a_buffer_past_the_body_is_refused_not_a_panic() {
        let batch = RecordBatch::try_from_iter([(
            "i4",
            Arc::new(Int32Array::from(vec![1, 2, 3, 4])) as ArrayRef,
        )])
        .unwrap();
        let mut msgs =
            arrow_flight::utils::batches_to_flight_data(&batch.schema(), [&batch]).unwrap();
        let last = msgs.last_mut().unwrap();
        last.data_body = last.data_body.slice(..4);
        let columns = vec![Column {
            name: "i4".into(),
            pg: PgType::Int4,
            not_null: false,
            sql_type: "integer".into(),
            type_oid: 23,
            elem_oid: 0,
        }];
        let stream = futures_util::stream::iter(msgs.into_iter().map(Ok));
        let err = encode_upload("ta_x", stream, &columns).await.unwrap_err();
        assert!(
            matches!(&err, PutError::Decode(m) if m.contains("outside the message body")),
            "{err}"
        );
    }
    /// Found by `make fuzz` (flight_put, input `ZgBAISgqAA==`): two bytes of an upload
    /// edited so that a batch's buffers no longer fit its schema's layout; arrow-data's
    /// validation asserted (an offsets buffer of the wrong length) and the call panicked.
    #[tokio::test]
    async fn a_batch_whose_buffers_do_not_fit_its_schema_is_refused_not_a_panic() {
        use arrow_array::{
            Decimal128Array, Int8Array, Int64Array, StringArray, TimestampNanosecondArray,
            UInt32Array,
        };
        let batch = RecordBatch::try_from_iter([
            (
                "i8",
                Arc::new(UInt32Array::from(vec![u32::MAX, 0])) as ArrayRef,
            ),
            ("i2", Arc::new(Int8Array::from(vec![-128, 127]))),
            ("num", Arc::new(Int64Array::from(vec![i64::MIN, i64::MAX]))),
            (
                "num_free",
                Arc::new(
                    Decimal128Array::from(vec![Some(i128::MAX / 7), Some(-1)])
                        .with_precision_and_scale(38, 10)
                        .unwrap(),
                ),
            ),
            (
                "ts",
                Arc::new(TimestampNanosecondArray::from(vec![i64::MAX, -1])),
            ),
            ("j", Arc::new(StringArray::from(vec![Some("null"), None]))),
        ])
        .unwrap();
        let msgs =
            arrow_flight::utils::batches_to_flight_data(&batch.schema(), [&batch, &batch]).unwrap();
        // The fuzzer's edits: (offset modulo the upload's size, byte).
        let mut parts: Vec<(Vec<u8>, Vec<u8>)> = msgs
            .iter()
            .map(|m| (m.data_header.to_vec(), m.data_body.to_vec()))
            .collect();
        let total: usize = parts.iter().map(|(h, b)| h.len() + b.len()).sum();
        for (at, byte) in [(0x4000usize, 0x21u8), (0x2a28, 0x00)] {
            let mut at = at % total;
            for (h, b) in parts.iter_mut() {
                if at < h.len() {
                    h[at] = byte;
                    break;
                }
                at -= h.len();
                if at < b.len() {
                    b[at] = byte;
                    break;
                }
                at -= b.len();
            }
        }
        let msgs: Vec<arrow_flight::FlightData> = parts
            .into_iter()
            .map(|(h, b)| arrow_flight::FlightData {
                data_header: h.into(),
                data_body: b.into(),
                ..Default::default()
            })
            .collect();
        let col = |name: &str, pg: PgType, sql_type: &str, type_oid: u32| Column {
            name: name.into(),
            pg,
            not_null: false,
            sql_type: sql_type.into(),
            type_oid,
            elem_oid: 0,
        };
        let columns = vec![
            col("i2", PgType::Int2, "smallint", 21),
            col("i8", PgType::Int8, "bigint", 20),
            col(
                "num",
                PgType::Numeric {
                    precision: 38,
                    scale: 4,
                },
                "numeric",
                1700,
            ),
            col("num_free", PgType::AsText, "numeric", 1700),
            col("ts", PgType::Timestamp, "timestamp without time zone", 1114),
            col("j", PgType::Json, "json", 114),
        ];
        let stream = futures_util::stream::iter(msgs.into_iter().map(Ok));
        let res =
            tokio::spawn(async move { encode_upload("ta_fuzz", stream, &columns).await }).await;
        let err = res.expect("no panic").unwrap_err();
        // Refused by the checks before arrow decodes it, not caught by the panic guard
        // (under `make fuzz` libFuzzer's panic hook aborts before any guard runs).
        assert!(
            matches!(&err, PutError::Decode(m) if m.contains("do not match its schema: buffer")),
            "{err}"
        );
    }
}
