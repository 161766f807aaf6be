//! DoPut: appends Arrow record batches to an allow-listed `ta_` table with one binary
//! `COPY … FROM STDIN` inside one transaction.
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

use std::pin::pin;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Decimal128Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type,
    Int64Type, Time64MicrosecondType, UInt8Type, UInt16Type, UInt32Type,
};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_flight::FlightDescriptor;
use arrow_flight::decode::{DecodedPayload, FlightDataDecoder};
use arrow_flight::flight_descriptor::DescriptorType;
use arrow_schema::{DataType, SchemaRef, TimeUnit};
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{SinkExt, Stream, StreamExt};

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

/// Runs one DoPut: returns the number of rows written.
pub async fn put<S>(
    descriptor: Option<FlightDescriptor>,
    data: S,
    registry: &Registry,
    allowed: &[String],
    pool: &deadpool_postgres::Pool,
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
    let mut decoder = FlightDataDecoder::new(data);
    // The schema message comes first: check it before opening a transaction.
    let schema = loop {
        match decoder.next().await {
            None => return Err(PutError::NoSchema),
            Some(Err(e)) => return Err(PutError::Decode(e.to_string())),
            Some(Ok(d)) => match d.payload {
                DecodedPayload::Schema(s) => break s,
                DecodedPayload::None => continue,
                DecodedPayload::RecordBatch(_) => return Err(PutError::NoSchema),
            },
        }
    };
    let targets = plan_targets(&table, &schema, &rel.columns)?;

    let mut client = pool
        .get()
        .await
        .map_err(|e| PutError::Pool(e.to_string()))?;
    let tx = client
        .transaction()
        .await
        .map_err(|e| PutError::Database(describe_pg(&e)))?;
    let cols: Vec<String> = targets
        .iter()
        .map(|t| quote_ident(&t.column.name))
        .collect();
    let copy = format!(
        "COPY {} ({}) FROM STDIN (FORMAT binary)",
        rel.qualified(),
        cols.join(", ")
    );
    let sink = tx
        .copy_in::<_, Bytes>(&copy)
        .await
        .map_err(|e| PutError::Database(describe_pg(&e)))?;
    let mut sink = pin!(sink);
    let mut header = BytesMut::with_capacity(19);
    header.put_slice(b"PGCOPY\n\xff\r\n\0");
    header.put_i32(0);
    header.put_i32(0);
    sink.send(header.freeze())
        .await
        .map_err(|e| PutError::Database(describe_pg(&e)))?;
    let mut rows = 0u64;
    // Any early return drops the sink (aborting the COPY) and the transaction (rolling it
    // back): nothing from this upload is kept.
    while let Some(item) = decoder.next().await {
        let decoded = item.map_err(|e| PutError::Decode(e.to_string()))?;
        match decoded.payload {
            DecodedPayload::None => {}
            DecodedPayload::Schema(s) => {
                if s.fields() != schema.fields() {
                    return Err(PutError::Schema {
                        table: table.clone(),
                        message: "the schema changed in the middle of the upload".into(),
                    });
                }
            }
            DecodedPayload::RecordBatch(batch) => {
                if batch.schema().fields() != schema.fields() {
                    return Err(PutError::Schema {
                        table: table.clone(),
                        message: "a batch does not match the upload's schema".into(),
                    });
                }
                let buf = encode_batch(&batch, &targets)?;
                rows += batch.num_rows() as u64;
                sink.send(buf)
                    .await
                    .map_err(|e| PutError::Database(describe_pg(&e)))?;
            }
        }
    }
    sink.send(Bytes::from_static(&[0xff, 0xff]))
        .await
        .map_err(|e| PutError::Database(describe_pg(&e)))?;
    let written = sink
        .as_mut()
        .finish()
        .await
        .map_err(|e| PutError::Database(describe_pg(&e)))?;
    tx.commit()
        .await
        .map_err(|e| PutError::Database(describe_pg(&e)))?;
    debug_assert_eq!(written, rows);
    Ok(written)
}

/// Encodes a batch as binary COPY rows.
fn encode_batch(batch: &RecordBatch, targets: &[Target]) -> Result<Bytes, PutError> {
    let mut out = BytesMut::with_capacity(batch.num_rows() * (2 + targets.len() * 12));
    let arrays: Vec<&ArrayRef> = targets.iter().map(|t| batch.column(t.field)).collect();
    for row in 0..batch.num_rows() {
        out.put_i16(targets.len() as i16);
        for (t, a) in targets.iter().zip(&arrays) {
            encode_field(a.as_ref(), row, &t.column, &t.column.pg, false, &mut out)
                .map_err(|m| PutError::Value(format!("column {} row {row}: {m}", t.column.name)))?;
        }
    }
    Ok(out.freeze())
}

/// Writes one field: its length (−1 for NULL), then its binary value.
fn encode_field(
    a: &dyn Array,
    row: usize,
    c: &Column,
    pg: &PgType,
    elem: bool,
    out: &mut BytesMut,
) -> Result<(), String> {
    if a.is_null(row) {
        out.put_i32(-1);
        return Ok(());
    }
    let len_at = out.len();
    out.put_i32(0);
    encode_value(a, row, c, pg, elem, out)?;
    let len = i32::try_from(out.len() - len_at - 4).map_err(|_| "value too large")?;
    out[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
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

fn encode_value(
    a: &dyn Array,
    row: usize,
    c: &Column,
    pg: &PgType,
    elem: bool,
    out: &mut BytesMut,
) -> Result<(), String> {
    let unsupported = || format!("unsupported Arrow type {}", a.data_type());
    match pg {
        PgType::Int2 => out.put_i16(int_value(a, row).ok_or_else(unsupported)? as i16),
        PgType::Int4 => out.put_i32(int_value(a, row).ok_or_else(unsupported)? as i32),
        PgType::Int8 => out.put_i64(int_value(a, row).ok_or_else(unsupported)?),
        PgType::Float4 => out.put_f32(a.as_primitive::<Float32Type>().value(row)),
        PgType::Float8 => match a.data_type() {
            DataType::Float32 => out.put_f64(a.as_primitive::<Float32Type>().value(row) as f64),
            _ => out.put_f64(a.as_primitive::<Float64Type>().value(row)),
        },
        PgType::Numeric { .. } | PgType::AsText => match a.data_type() {
            DataType::Decimal128(_, scale) => {
                encode_numeric(a.as_primitive::<Decimal128Type>().value(row), *scale, out)?
            }
            _ => encode_numeric(int_value(a, row).ok_or_else(unsupported)? as i128, 0, out)?,
        },
        PgType::Text | PgType::Json | PgType::Jsonb => {
            let s = match a.data_type() {
                DataType::Utf8 => a.as_string::<i32>().value(row),
                _ => a.as_string::<i64>().value(row),
            };
            if matches!(pg, PgType::Jsonb) {
                out.put_u8(1);
            }
            out.put_slice(s.as_bytes());
        }
        PgType::Bool => out.put_u8(a.as_boolean().value(row) as u8),
        PgType::Date => {
            out.put_i32(a.as_primitive::<Date32Type>().value(row) - PG_EPOCH_OFFSET_DAYS)
        }
        PgType::Time => out.put_i64(a.as_primitive::<Time64MicrosecondType>().value(row)),
        PgType::Timestamp | PgType::Timestamptz => {
            let DataType::Timestamp(unit, _) = a.data_type() else {
                return Err(unsupported());
            };
            use arrow_array::types::{
                TimestampMicrosecondType as Us, TimestampMillisecondType as Ms,
                TimestampNanosecondType as Ns, TimestampSecondType as S,
            };
            let micros = match unit {
                TimeUnit::Second => a.as_primitive::<S>().value(row).checked_mul(1_000_000),
                TimeUnit::Millisecond => a.as_primitive::<Ms>().value(row).checked_mul(1_000),
                TimeUnit::Microsecond => Some(a.as_primitive::<Us>().value(row)),
                TimeUnit::Nanosecond => Some(a.as_primitive::<Ns>().value(row).div_euclid(1_000)),
            }
            .ok_or("timestamp out of range")?;
            out.put_i64(micros - PG_EPOCH_OFFSET_MICROS);
        }
        PgType::Uuid => out.put_slice(a.as_fixed_size_binary().value(row)),
        PgType::Bytea => match a.data_type() {
            DataType::Binary => out.put_slice(a.as_binary::<i32>().value(row)),
            _ => out.put_slice(a.as_binary::<i64>().value(row)),
        },
        PgType::Array(e) => {
            let values = match a.data_type() {
                DataType::List(_) => a.as_list::<i32>().value(row),
                _ => a.as_list::<i64>().value(row),
            };
            let n = values.len();
            out.put_i32(if n == 0 { 0 } else { 1 });
            out.put_i32((values.null_count() > 0) as i32);
            out.put_u32(c.elem_oid);
            if n > 0 {
                out.put_i32(i32::try_from(n).map_err(|_| "array too long")?);
                out.put_i32(1);
            }
            for i in 0..n {
                encode_field(values.as_ref(), i, c, e, true, out)?;
            }
        }
    }
    let _ = elem;
    Ok(())
}

/// PostgreSQL's binary numeric from an integer scaled by `10^scale`.
fn encode_numeric(value: i128, scale: i8, out: &mut BytesMut) -> Result<(), String> {
    let negative = value < 0;
    let mut digits = value.unsigned_abs().to_string();
    let scale = if scale < 0 {
        // A negative scale means trailing zeros before the point.
        digits.extend(std::iter::repeat_n('0', (-scale) as usize));
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
}
