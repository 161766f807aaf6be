//! PostgreSQL column types → Arrow types, and the decoders that append PostgreSQL's binary
//! wire format straight into Arrow builders (no intermediate Rust values per row).
//!
//! The mapping (also in the module docs of [`crate::flight`]):
//!
//! | PostgreSQL                      | Arrow                                                   |
//! |---------------------------------|---------------------------------------------------------|
//! | `int2` / `int4` / `int8`        | Int16 / Int32 / Int64                                   |
//! | `float4` / `float8`             | Float32 / Float64                                       |
//! | `numeric(p,s)`, p ≤ 38          | Decimal128(p, s) (`NaN` → null)                         |
//! | `numeric` unconstrained, p > 38 | Utf8 (PostgreSQL's text form: no precision is lost)     |
//! | `text`, `varchar`, `bpchar`, `name` | Utf8                                                |
//! | `bool`                          | Boolean                                                 |
//! | `date`                          | Date32 (`±infinity` → null)                             |
//! | `time`                          | Time64(µs)                                              |
//! | `timestamp`                     | Timestamp(µs, none) (`±infinity` → null)                |
//! | `timestamptz`                   | Timestamp(µs, "UTC") (`±infinity` → null)               |
//! | `uuid`                          | FixedSizeBinary(16), extension `arrow.uuid`             |
//! | `json` / `jsonb`                | Utf8, extension `arrow.json`                            |
//! | `bytea`                         | Binary                                                  |
//! | `T[]` (any of the above)        | List<T> (multi-dimensional arrays are flattened)        |
//! | anything else (enums, intervals, inet, …) | Utf8 (the value cast to `text` in SQL)        |
//!
//! Every Arrow field is nullable except table columns declared `NOT NULL`.
//! uuid is FixedSizeBinary(16) with the canonical `arrow.uuid` extension, as ADBC returns
//! it: 16 bytes instead of 36 characters, and pyarrow ≥ 18 shows it as `uuid`.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::ArrayRef;
use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, FixedSizeBinaryBuilder,
    Float32Builder, Float64Builder, Int16Builder, Int32Builder, Int64Builder, StringBuilder,
    Time64MicrosecondBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::{Array, ListArray};
use arrow_buffer::{NullBufferBuilder, OffsetBuffer, ScalarBuffer};
use arrow_schema::{DataType, Field, FieldRef, TimeUnit};

/// Arrow's canonical extension-name metadata key.
pub const EXTENSION_NAME: &str = "ARROW:extension:name";
/// Arrow's canonical extension-metadata key.
pub const EXTENSION_METADATA: &str = "ARROW:extension:metadata";

/// Microseconds between 1970-01-01 and PostgreSQL's epoch 2000-01-01.
pub const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;
/// Days between 1970-01-01 and 2000-01-01.
pub const PG_EPOCH_OFFSET_DAYS: i32 = 10_957;

/// Largest precision Decimal128 holds.
const DECIMAL128_MAX_PRECISION: u32 = 38;

/// A value PostgreSQL sent that does not fit the column's Arrow type (the caller adds the
/// column name).
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("{0}")]
    Malformed(String),
    #[error("numeric value out of Decimal128 range")]
    DecimalOverflow,
    #[error("invalid UTF-8 in a text value")]
    Utf8,
    #[error("list too long for 32-bit offsets")]
    ListTooLong,
}

impl From<String> for DecodeError {
    fn from(s: String) -> DecodeError {
        DecodeError::Malformed(s)
    }
}

/// The PostgreSQL types the Flight server understands, as resolved from the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgType {
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    /// `numeric(p,s)` with p ≤ 38.
    Numeric {
        precision: u8,
        scale: i8,
    },
    Text,
    Bool,
    Date,
    Time,
    Timestamp,
    Timestamptz,
    Uuid,
    Json,
    Jsonb,
    Bytea,
    Array(Box<PgType>),
    /// Read as text: the SELECT casts it (`::text`). Unconstrained numerics land here too.
    AsText,
}

/// Type OIDs (stable across PostgreSQL versions, see `pg_type.dat`).
pub mod oid {
    pub const BOOL: u32 = 16;
    pub const BYTEA: u32 = 17;
    pub const NAME: u32 = 19;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const TEXT: u32 = 25;
    pub const JSON: u32 = 114;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const BPCHAR: u32 = 1042;
    pub const VARCHAR: u32 = 1043;
    pub const DATE: u32 = 1082;
    pub const TIME: u32 = 1083;
    pub const TIMESTAMP: u32 = 1114;
    pub const TIMESTAMPTZ: u32 = 1184;
    pub const NUMERIC: u32 = 1700;
    pub const UUID: u32 = 2950;
    pub const JSONB: u32 = 3802;
}

impl PgType {
    /// Resolves a scalar type OID and its type modifier (`atttypmod`).
    pub fn from_scalar(type_oid: u32, typmod: i32) -> PgType {
        match type_oid {
            oid::BOOL => PgType::Bool,
            oid::BYTEA => PgType::Bytea,
            oid::NAME | oid::TEXT | oid::BPCHAR | oid::VARCHAR => PgType::Text,
            oid::INT2 => PgType::Int2,
            oid::INT4 => PgType::Int4,
            oid::INT8 => PgType::Int8,
            oid::JSON => PgType::Json,
            oid::JSONB => PgType::Jsonb,
            oid::FLOAT4 => PgType::Float4,
            oid::FLOAT8 => PgType::Float8,
            oid::DATE => PgType::Date,
            oid::TIME => PgType::Time,
            oid::TIMESTAMP => PgType::Timestamp,
            oid::TIMESTAMPTZ => PgType::Timestamptz,
            oid::UUID => PgType::Uuid,
            oid::NUMERIC => numeric(typmod),
            _ => PgType::AsText,
        }
    }

    /// Resolves a column: `elem_oid` is the element type when the column is an array.
    pub fn from_column(type_oid: u32, typmod: i32, elem_oid: Option<u32>) -> PgType {
        match elem_oid {
            Some(e) => PgType::Array(Box::new(PgType::from_scalar(e, typmod))),
            None => PgType::from_scalar(type_oid, typmod),
        }
    }

    /// True when the SELECT must cast the column to text (or text[]).
    pub fn read_as_text(&self) -> bool {
        match self {
            PgType::AsText => true,
            PgType::Array(e) => e.read_as_text(),
            _ => false,
        }
    }

    /// The Arrow type this column is sent as.
    pub fn arrow_type(&self) -> DataType {
        match self {
            PgType::Int2 => DataType::Int16,
            PgType::Int4 => DataType::Int32,
            PgType::Int8 => DataType::Int64,
            PgType::Float4 => DataType::Float32,
            PgType::Float8 => DataType::Float64,
            PgType::Numeric { precision, scale } => DataType::Decimal128(*precision, *scale),
            PgType::Text | PgType::AsText | PgType::Json | PgType::Jsonb => DataType::Utf8,
            PgType::Bool => DataType::Boolean,
            PgType::Date => DataType::Date32,
            PgType::Time => DataType::Time64(TimeUnit::Microsecond),
            PgType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            PgType::Timestamptz => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            PgType::Uuid => DataType::FixedSizeBinary(16),
            PgType::Bytea => DataType::Binary,
            PgType::Array(e) => DataType::List(Arc::new(e.field("item", true))),
        }
    }

    /// The Arrow field, with the extension metadata for uuid and json.
    pub fn field(&self, name: &str, nullable: bool) -> Field {
        let field = Field::new(name, self.arrow_type(), nullable);
        match self {
            PgType::Uuid => field.with_metadata(extension("arrow.uuid")),
            PgType::Json | PgType::Jsonb => field.with_metadata(extension("arrow.json")),
            _ => field,
        }
    }

    /// A short name for error messages.
    pub fn describe(&self) -> String {
        match self {
            PgType::Int2 => "int2".into(),
            PgType::Int4 => "int4".into(),
            PgType::Int8 => "int8".into(),
            PgType::Float4 => "float4".into(),
            PgType::Float8 => "float8".into(),
            PgType::Numeric { precision, scale } => format!("numeric({precision},{scale})"),
            PgType::Text => "text".into(),
            PgType::Bool => "bool".into(),
            PgType::Date => "date".into(),
            PgType::Time => "time".into(),
            PgType::Timestamp => "timestamp".into(),
            PgType::Timestamptz => "timestamptz".into(),
            PgType::Uuid => "uuid".into(),
            PgType::Json => "json".into(),
            PgType::Jsonb => "jsonb".into(),
            PgType::Bytea => "bytea".into(),
            PgType::Array(e) => format!("{}[]", e.describe()),
            PgType::AsText => "text (cast)".into(),
        }
    }

    /// Whether string operators (`contains`, `like`, …) apply to it.
    pub fn is_textual(&self) -> bool {
        matches!(self, PgType::Text)
    }
}

fn extension(name: &str) -> HashMap<String, String> {
    HashMap::from([
        (EXTENSION_NAME.to_string(), name.to_string()),
        (EXTENSION_METADATA.to_string(), String::new()),
    ])
}

/// `numeric` with a type modifier → Decimal128 when it fits, else text.
fn numeric(typmod: i32) -> PgType {
    if typmod < 4 {
        return PgType::AsText;
    }
    let t = typmod - 4;
    let precision = ((t >> 16) & 0xffff) as u32;
    // Since PostgreSQL 15 the scale is an 11-bit signed field (negative scales exist).
    let raw_scale = t & 0x7ff;
    let scale = if raw_scale & 0x400 != 0 {
        raw_scale - 0x800
    } else {
        raw_scale
    };
    if precision == 0 || precision > DECIMAL128_MAX_PRECISION || !(-38..=38).contains(&scale) {
        return PgType::AsText;
    }
    PgType::Numeric {
        precision: precision as u8,
        scale: scale as i8,
    }
}

fn read_i16(b: &[u8], at: usize) -> Option<i16> {
    Some(i16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn read_i32(b: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn read_i64(b: &[u8], at: usize) -> Option<i64> {
    Some(i64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Decodes PostgreSQL's binary numeric into an integer scaled by `10^scale`.
/// Returns Ok(None) for NaN (and the infinities, which constrained columns cannot hold).
pub fn numeric_to_i128(b: &[u8], scale: i8) -> Result<Option<i128>, DecodeError> {
    let bad = || DecodeError::Malformed("malformed numeric".into());
    let ndigits = read_i16(b, 0).ok_or_else(bad)?;
    let weight = read_i16(b, 2).ok_or_else(bad)? as i32;
    let sign = read_i16(b, 4).ok_or_else(bad)? as u16;
    match sign {
        0x0000 | 0x4000 => {}
        _ => return Ok(None),
    }
    if ndigits < 0 || b.len() < 8 + 2 * ndigits as usize {
        return Err(bad());
    }
    let overflow = || DecodeError::DecimalOverflow;
    let mut acc: i128 = 0;
    for i in 0..ndigits as usize {
        let d = read_i16(b, 8 + 2 * i).ok_or_else(bad)? as i128;
        // This digit is worth d × 10000^(weight − i); scaled by 10^scale.
        let exp = 4 * (weight - i as i32) + scale as i32;
        let term = if exp >= 0 {
            let m = 10i128.checked_pow(exp as u32).ok_or_else(overflow)?;
            d.checked_mul(m).ok_or_else(overflow)?
        } else if exp > -8 {
            // Digits beyond the column's scale are zero for constrained columns; anything
            // left is truncated toward zero.
            d / 10i128.pow((-exp) as u32)
        } else {
            0
        };
        acc = acc.checked_add(term).ok_or_else(overflow)?;
    }
    Ok(Some(if sign == 0x4000 { -acc } else { acc }))
}

/// An Arrow builder for one column, fed with PostgreSQL binary values.
pub enum ColumnBuilder {
    Int16(Int16Builder),
    Int32(Int32Builder),
    Int64(Int64Builder),
    Float32(Float32Builder),
    Float64(Float64Builder),
    Decimal(Decimal128Builder, i8),
    /// `jsonb` binary values start with a version byte that the text form drops.
    Utf8 {
        builder: StringBuilder,
        jsonb: bool,
    },
    Bool(BooleanBuilder),
    Date(Date32Builder),
    Time(Time64MicrosecondBuilder),
    Timestamp(TimestampMicrosecondBuilder),
    Uuid(FixedSizeBinaryBuilder),
    Binary(BinaryBuilder),
    List {
        field: FieldRef,
        offsets: Vec<i32>,
        nulls: NullBufferBuilder,
        child: Box<ColumnBuilder>,
    },
}

impl ColumnBuilder {
    /// A builder for `ty` with room for `capacity` rows.
    pub fn new(ty: &PgType, capacity: usize) -> ColumnBuilder {
        match ty {
            PgType::Int2 => ColumnBuilder::Int16(Int16Builder::with_capacity(capacity)),
            PgType::Int4 => ColumnBuilder::Int32(Int32Builder::with_capacity(capacity)),
            PgType::Int8 => ColumnBuilder::Int64(Int64Builder::with_capacity(capacity)),
            PgType::Float4 => ColumnBuilder::Float32(Float32Builder::with_capacity(capacity)),
            PgType::Float8 => ColumnBuilder::Float64(Float64Builder::with_capacity(capacity)),
            PgType::Numeric { precision, scale } => ColumnBuilder::Decimal(
                Decimal128Builder::with_capacity(capacity)
                    .with_precision_and_scale(*precision, *scale)
                    .expect("precision and scale validated by numeric()"),
                *scale,
            ),
            PgType::Text | PgType::AsText | PgType::Json => ColumnBuilder::Utf8 {
                builder: StringBuilder::with_capacity(capacity, capacity * 8),
                jsonb: false,
            },
            PgType::Jsonb => ColumnBuilder::Utf8 {
                builder: StringBuilder::with_capacity(capacity, capacity * 16),
                jsonb: true,
            },
            PgType::Bool => ColumnBuilder::Bool(BooleanBuilder::with_capacity(capacity)),
            PgType::Date => ColumnBuilder::Date(Date32Builder::with_capacity(capacity)),
            PgType::Time => ColumnBuilder::Time(Time64MicrosecondBuilder::with_capacity(capacity)),
            PgType::Timestamp => {
                ColumnBuilder::Timestamp(TimestampMicrosecondBuilder::with_capacity(capacity))
            }
            PgType::Timestamptz => ColumnBuilder::Timestamp(
                TimestampMicrosecondBuilder::with_capacity(capacity).with_timezone("UTC"),
            ),
            PgType::Uuid => {
                ColumnBuilder::Uuid(FixedSizeBinaryBuilder::with_capacity(capacity, 16))
            }
            PgType::Bytea => ColumnBuilder::Binary(BinaryBuilder::with_capacity(capacity, 0)),
            PgType::Array(e) => {
                let mut offsets = Vec::with_capacity(capacity + 1);
                offsets.push(0);
                ColumnBuilder::List {
                    field: Arc::new(e.field("item", true)),
                    offsets,
                    nulls: NullBufferBuilder::new(capacity),
                    child: Box::new(ColumnBuilder::new(e, capacity)),
                }
            }
        }
    }

    /// Appends one value in PostgreSQL binary format (`None` is SQL NULL).
    pub fn append(&mut self, value: Option<&[u8]>) -> Result<(), DecodeError> {
        let Some(b) = value else {
            self.append_null();
            return Ok(());
        };
        let short = || format!("value of {} bytes is malformed", b.len());
        match self {
            ColumnBuilder::Int16(x) => x.append_value(read_i16(b, 0).ok_or_else(short)?),
            ColumnBuilder::Int32(x) => x.append_value(read_i32(b, 0).ok_or_else(short)?),
            ColumnBuilder::Int64(x) => x.append_value(read_i64(b, 0).ok_or_else(short)?),
            ColumnBuilder::Float32(x) => {
                x.append_value(f32::from_bits(read_i32(b, 0).ok_or_else(short)? as u32))
            }
            ColumnBuilder::Float64(x) => {
                x.append_value(f64::from_bits(read_i64(b, 0).ok_or_else(short)? as u64))
            }
            ColumnBuilder::Decimal(x, scale) => match numeric_to_i128(b, *scale)? {
                Some(v) => x.append_value(v),
                None => x.append_null(),
            },
            ColumnBuilder::Utf8 { builder, jsonb } => {
                let text = if *jsonb {
                    match b.split_first() {
                        Some((1, rest)) => rest,
                        _ => {
                            return Err(DecodeError::Malformed(
                                "unknown jsonb binary version".into(),
                            ));
                        }
                    }
                } else {
                    b
                };
                let s = std::str::from_utf8(text).map_err(|_| DecodeError::Utf8)?;
                builder.append_value(s);
            }
            ColumnBuilder::Bool(x) => x.append_value(*b.first().ok_or_else(short)? != 0),
            ColumnBuilder::Date(x) => {
                let d = read_i32(b, 0).ok_or_else(short)?;
                if d == i32::MAX || d == i32::MIN {
                    x.append_null();
                } else {
                    x.append_value(d + PG_EPOCH_OFFSET_DAYS);
                }
            }
            ColumnBuilder::Time(x) => x.append_value(read_i64(b, 0).ok_or_else(short)?),
            ColumnBuilder::Timestamp(x) => {
                let t = read_i64(b, 0).ok_or_else(short)?;
                if t == i64::MAX || t == i64::MIN {
                    x.append_null();
                } else {
                    x.append_value(t + PG_EPOCH_OFFSET_MICROS);
                }
            }
            ColumnBuilder::Uuid(x) => x
                .append_value(b)
                .map_err(|e| DecodeError::Malformed(e.to_string()))?,
            ColumnBuilder::Binary(x) => x.append_value(b),
            ColumnBuilder::List {
                offsets,
                nulls,
                child,
                ..
            } => {
                let n = append_array_elements(b, child)?;
                let last = *offsets.last().expect("offsets start with 0");
                let next = i32::try_from(n)
                    .ok()
                    .and_then(|n| last.checked_add(n))
                    .ok_or(DecodeError::ListTooLong)?;
                offsets.push(next);
                nulls.append_non_null();
            }
        }
        Ok(())
    }

    /// Appends SQL NULL.
    pub fn append_null(&mut self) {
        match self {
            ColumnBuilder::Int16(x) => x.append_null(),
            ColumnBuilder::Int32(x) => x.append_null(),
            ColumnBuilder::Int64(x) => x.append_null(),
            ColumnBuilder::Float32(x) => x.append_null(),
            ColumnBuilder::Float64(x) => x.append_null(),
            ColumnBuilder::Decimal(x, _) => x.append_null(),
            ColumnBuilder::Utf8 { builder, .. } => builder.append_null(),
            ColumnBuilder::Bool(x) => x.append_null(),
            ColumnBuilder::Date(x) => x.append_null(),
            ColumnBuilder::Time(x) => x.append_null(),
            ColumnBuilder::Timestamp(x) => x.append_null(),
            ColumnBuilder::Uuid(x) => x.append_null(),
            ColumnBuilder::Binary(x) => x.append_null(),
            ColumnBuilder::List { offsets, nulls, .. } => {
                let last = *offsets.last().expect("offsets start with 0");
                offsets.push(last);
                nulls.append_null();
            }
        }
    }

    /// Takes the values appended so far as an array and resets the builder.
    pub fn finish(&mut self) -> ArrayRef {
        match self {
            ColumnBuilder::Int16(x) => Arc::new(x.finish()),
            ColumnBuilder::Int32(x) => Arc::new(x.finish()),
            ColumnBuilder::Int64(x) => Arc::new(x.finish()),
            ColumnBuilder::Float32(x) => Arc::new(x.finish()),
            ColumnBuilder::Float64(x) => Arc::new(x.finish()),
            ColumnBuilder::Decimal(x, _) => Arc::new(x.finish()),
            ColumnBuilder::Utf8 { builder, .. } => Arc::new(builder.finish()),
            ColumnBuilder::Bool(x) => Arc::new(x.finish()),
            ColumnBuilder::Date(x) => Arc::new(x.finish()),
            ColumnBuilder::Time(x) => Arc::new(x.finish()),
            ColumnBuilder::Timestamp(x) => Arc::new(x.finish()),
            ColumnBuilder::Uuid(x) => Arc::new(x.finish()),
            ColumnBuilder::Binary(x) => Arc::new(x.finish()),
            ColumnBuilder::List {
                field,
                offsets,
                nulls,
                child,
            } => {
                let values = child.finish();
                let taken = std::mem::replace(offsets, vec![0]);
                let offsets = OffsetBuffer::new(ScalarBuffer::from(taken));
                let list = ListArray::new(field.clone(), offsets, values, nulls.finish());
                debug_assert_eq!(
                    list.null_count(),
                    list.nulls().map_or(0, |n| n.null_count())
                );
                Arc::new(list)
            }
        }
    }
}

/// Appends the elements of a binary PostgreSQL array to `child`, flattening dimensions;
/// returns how many there were.
fn append_array_elements(b: &[u8], child: &mut ColumnBuilder) -> Result<usize, DecodeError> {
    let bad = || DecodeError::Malformed("malformed array".into());
    let ndim = read_i32(b, 0).ok_or_else(bad)?;
    if !(0..=6).contains(&ndim) {
        return Err(bad());
    }
    let mut count: usize = if ndim == 0 { 0 } else { 1 };
    let mut at = 12;
    for _ in 0..ndim {
        let len = read_i32(b, at).ok_or_else(bad)?;
        count = count
            .checked_mul(usize::try_from(len).map_err(|_| bad())?)
            .ok_or_else(bad)?;
        at += 8;
    }
    for _ in 0..count {
        let len = read_i32(b, at).ok_or_else(bad)?;
        at += 4;
        if len < 0 {
            child.append(None)?;
        } else {
            let end = at + len as usize;
            child.append(Some(b.get(at..end).ok_or_else(bad)?))?;
            at = end;
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Decimal128Type, Int32Type};

    fn numeric_bytes(ndigits: &[i16], weight: i16, sign: u16, dscale: i16) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend((ndigits.len() as i16).to_be_bytes());
        v.extend(weight.to_be_bytes());
        v.extend(sign.to_be_bytes());
        v.extend(dscale.to_be_bytes());
        for d in ndigits {
            v.extend(d.to_be_bytes());
        }
        v
    }

    #[test]
    fn numeric_typmod() {
        // numeric(12,2): typmod = (12 << 16 | 2) + 4
        assert_eq!(
            PgType::from_scalar(oid::NUMERIC, ((12 << 16) | 2) + 4),
            PgType::Numeric {
                precision: 12,
                scale: 2
            }
        );
        assert_eq!(PgType::from_scalar(oid::NUMERIC, -1), PgType::AsText);
        assert_eq!(
            PgType::from_scalar(oid::NUMERIC, ((50 << 16) | 2) + 4),
            PgType::AsText
        );
    }

    #[test]
    fn numeric_decoding() {
        // 1234.5 = [1234, 5000], weight 0
        let b = numeric_bytes(&[1234, 5000], 0, 0, 1);
        assert_eq!(numeric_to_i128(&b, 2).unwrap(), Some(123_450));
        // -0.05 = [500], weight -1, scale 2
        let b = numeric_bytes(&[500], -1, 0x4000, 2);
        assert_eq!(numeric_to_i128(&b, 2).unwrap(), Some(-5));
        // 12345678 = [1234, 5678], weight 1
        let b = numeric_bytes(&[1234, 5678], 1, 0, 0);
        assert_eq!(numeric_to_i128(&b, 3).unwrap(), Some(12_345_678_000));
        // 0
        let b = numeric_bytes(&[], 0, 0, 0);
        assert_eq!(numeric_to_i128(&b, 2).unwrap(), Some(0));
        // NaN
        let b = numeric_bytes(&[], 0, 0xC000, 0);
        assert_eq!(numeric_to_i128(&b, 2).unwrap(), None);
        let mut builder = ColumnBuilder::new(
            &PgType::Numeric {
                precision: 10,
                scale: 2,
            },
            4,
        );
        builder
            .append(Some(&numeric_bytes(&[1, 2500], 0, 0, 2)))
            .unwrap();
        builder.append(None).unwrap();
        let a = builder.finish();
        let d = a.as_primitive::<Decimal128Type>();
        assert_eq!(d.value(0), 125);
        assert!(d.is_null(1));
    }

    #[test]
    fn arrays_flatten_and_keep_nulls() {
        // int4[] {1,NULL,3}
        let mut b = Vec::new();
        b.extend(1i32.to_be_bytes());
        b.extend(1i32.to_be_bytes());
        b.extend(23u32.to_be_bytes());
        b.extend(3i32.to_be_bytes());
        b.extend(1i32.to_be_bytes());
        for v in [Some(1i32), None, Some(3)] {
            match v {
                Some(v) => {
                    b.extend(4i32.to_be_bytes());
                    b.extend(v.to_be_bytes());
                }
                None => b.extend((-1i32).to_be_bytes()),
            }
        }
        let mut builder = ColumnBuilder::new(&PgType::Array(Box::new(PgType::Int4)), 2);
        builder.append(Some(&b)).unwrap();
        builder.append(None).unwrap();
        let a = builder.finish();
        let list = a.as_list::<i32>();
        assert_eq!(list.len(), 2);
        assert!(list.is_null(1));
        let first = list.value(0);
        let ints = first.as_primitive::<Int32Type>();
        assert_eq!(ints.len(), 3);
        assert!(ints.is_null(1));
        assert_eq!(ints.value(2), 3);
    }
}
