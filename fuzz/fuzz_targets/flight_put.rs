//! DoPut batch decoding: Flight messages → Arrow IPC decoding → the schema checked against
//! a `ta_` table of every writable column type → every value encoded as the binary COPY
//! would write it (`flight::put::encode_upload`, no database). Also the descriptor.
//!
//! Input: byte 0 picks the form. Even: a valid upload (one of `BASES`, built once) with the
//! rest of the input applied as edits (`u16` offset, byte) over its messages, and a
//! truncation; odd: the rest is raw frames (`u16` header length, header, `u16` body length,
//! body), as a client could send anything.
#![no_main]

use std::sync::{Arc, OnceLock};

use arrow_array::builder::{Int32Builder, ListBuilder, StringBuilder};
use arrow_array::{
    ArrayRef, BinaryArray, BooleanArray, Date32Array, Decimal128Array, FixedSizeBinaryArray,
    Float32Array, Float64Array, Int8Array, Int16Array, Int32Array, Int64Array, RecordBatch,
    StringArray, Time64MicrosecondArray, TimestampMicrosecondArray, TimestampNanosecondArray,
    UInt32Array,
};
use arrow_flight::{FlightData, FlightDescriptor};
use bytes::Bytes;
use fraiseql::flight::put;
use fraiseql::flight::registry::Column;
use fraiseql::flight::types::PgType;
use libfuzzer_sys::fuzz_target;

mod common;

fn col(name: &str, pg: PgType, sql_type: &str, type_oid: u32, elem_oid: u32) -> Column {
    Column {
        name: name.into(),
        pg,
        not_null: false,
        sql_type: sql_type.into(),
        type_oid,
        elem_oid,
    }
}

/// `ta_fuzz`: one column of each writable type.
fn columns() -> Vec<Column> {
    vec![
        col("i2", PgType::Int2, "smallint", 21, 0),
        col("i4", PgType::Int4, "integer", 23, 0),
        col("i8", PgType::Int8, "bigint", 20, 0),
        col("f4", PgType::Float4, "real", 700, 0),
        col("f8", PgType::Float8, "double precision", 701, 0),
        col(
            "num",
            PgType::Numeric {
                precision: 38,
                scale: 4,
            },
            "numeric",
            1700,
            0,
        ),
        col("num_free", PgType::AsText, "numeric", 1700, 0),
        col("t", PgType::Text, "text", 25, 0),
        col("jb", PgType::Jsonb, "jsonb", 3802, 0),
        col("j", PgType::Json, "json", 114, 0),
        col("b", PgType::Bool, "boolean", 16, 0),
        col("d", PgType::Date, "date", 1082, 0),
        col("tm", PgType::Time, "time without time zone", 1083, 0),
        col(
            "ts",
            PgType::Timestamp,
            "timestamp without time zone",
            1114,
            0,
        ),
        col(
            "tz",
            PgType::Timestamptz,
            "timestamp with time zone",
            1184,
            0,
        ),
        col("u", PgType::Uuid, "uuid", 2950, 0),
        col("by", PgType::Bytea, "bytea", 17, 0),
        col(
            "ia",
            PgType::Array(Box::new(PgType::Int4)),
            "integer[]",
            1007,
            23,
        ),
        col(
            "tarr",
            PgType::Array(Box::new(PgType::Text)),
            "text[]",
            1009,
            25,
        ),
    ]
}

fn batch(cols: Vec<(&str, ArrayRef)>) -> Vec<FlightData> {
    let batch = RecordBatch::try_from_iter(cols).expect("batch");
    let mut out = arrow_flight::utils::batches_to_flight_data(&batch.schema(), [&batch, &batch])
        .expect("encode");
    // The descriptor rides on the first message.
    out[0].flight_descriptor = Some(FlightDescriptor::new_path(vec!["ta_fuzz".into()]));
    out
}

/// Valid uploads the edits start from.
fn bases() -> &'static Vec<Vec<FlightData>> {
    static BASES: OnceLock<Vec<Vec<FlightData>>> = OnceLock::new();
    BASES.get_or_init(|| {
        let mut ints = ListBuilder::new(Int32Builder::new());
        ints.append_value([Some(1), None, Some(3)]);
        ints.append_null();
        ints.append_value([]);
        let mut texts = ListBuilder::new(StringBuilder::new());
        texts.append_value([Some("a"), None]);
        texts.append_value([Some("'; DROP TABLE x; --")]);
        texts.append_null();
        let uuid = |b: u8| Some([b; 16]);
        vec![
            batch(vec![
                (
                    "i2",
                    Arc::new(Int16Array::from(vec![Some(1), None, Some(-3)])) as ArrayRef,
                ),
                (
                    "i4",
                    Arc::new(Int32Array::from(vec![i32::MIN, 0, i32::MAX])),
                ),
                (
                    "i8",
                    Arc::new(Int64Array::from(vec![Some(i64::MAX), None, Some(0)])),
                ),
                (
                    "f4",
                    Arc::new(Float32Array::from(vec![1.5, f32::NAN, -0.0])),
                ),
                (
                    "f8",
                    Arc::new(Float64Array::from(vec![
                        Some(1e300),
                        None,
                        Some(f64::INFINITY),
                    ])),
                ),
                (
                    "num",
                    Arc::new(
                        Decimal128Array::from(vec![Some(12_345), None, Some(-999_999_999_999)])
                            .with_precision_and_scale(38, 4)
                            .expect("decimal"),
                    ),
                ),
                (
                    "t",
                    Arc::new(StringArray::from(vec![Some("é"), None, Some("")])),
                ),
                (
                    "jb",
                    Arc::new(StringArray::from(vec![Some("{\"a\":1}"), None, Some("[]")])),
                ),
                (
                    "b",
                    Arc::new(BooleanArray::from(vec![Some(true), None, Some(false)])),
                ),
                (
                    "d",
                    Arc::new(Date32Array::from(vec![Some(0), None, Some(i32::MAX)])),
                ),
                (
                    "tm",
                    Arc::new(Time64MicrosecondArray::from(vec![0, 86_399_999_999, 1])),
                ),
                (
                    "ts",
                    Arc::new(TimestampMicrosecondArray::from(vec![
                        Some(0),
                        None,
                        Some(i64::MIN),
                    ])),
                ),
                (
                    "tz",
                    Arc::new(TimestampMicrosecondArray::from(vec![1, 2, 3]).with_timezone("UTC")),
                ),
                (
                    "u",
                    Arc::new(
                        FixedSizeBinaryArray::try_from_sparse_iter_with_size(
                            [uuid(0xab), None, uuid(0)].into_iter(),
                            16,
                        )
                        .expect("uuid"),
                    ),
                ),
                (
                    "by",
                    Arc::new(BinaryArray::from(vec![
                        Some(&b"\x00\x01"[..]),
                        None,
                        Some(b""),
                    ])),
                ),
                ("ia", Arc::new(ints.finish())),
                ("tarr", Arc::new(texts.finish())),
            ]),
            batch(vec![
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
                            .expect("decimal"),
                    ),
                ),
                (
                    "ts",
                    Arc::new(TimestampNanosecondArray::from(vec![i64::MAX, -1])),
                ),
                ("j", Arc::new(StringArray::from(vec![Some("null"), None]))),
            ]),
        ]
    })
}

fn frames(mut data: &[u8]) -> Vec<FlightData> {
    let mut out = Vec::new();
    let take = |data: &mut &[u8]| -> Option<Bytes> {
        let (len, rest) = data.split_first_chunk::<2>()?;
        let len = (u16::from_le_bytes(*len) as usize).min(rest.len());
        let (part, rest) = rest.split_at(len);
        *data = rest;
        Some(Bytes::copy_from_slice(part))
    };
    while out.len() < 16 {
        let Some(header) = take(&mut data) else { break };
        let body = take(&mut data).unwrap_or_default();
        out.push(FlightData {
            data_header: header,
            data_body: body,
            ..Default::default()
        });
    }
    out
}

fn edited(base: &[FlightData], edits: &[u8]) -> Vec<FlightData> {
    let mut msgs: Vec<(Vec<u8>, Vec<u8>)> = base
        .iter()
        .map(|m| (m.data_header.to_vec(), m.data_body.to_vec()))
        .collect();
    let total: usize = msgs.iter().map(|(h, b)| h.len() + b.len()).sum();
    let mut chunks = edits.chunks_exact(3);
    for e in &mut chunks {
        let mut at = u16::from_le_bytes([e[0], e[1]]) as usize % total.max(1);
        for (h, b) in msgs.iter_mut() {
            if at < h.len() {
                h[at] = e[2];
                break;
            }
            at -= h.len();
            if at < b.len() {
                b[at] = e[2];
                break;
            }
            at -= b.len();
        }
    }
    // A trailing byte drops messages from the end.
    if let [n] = chunks.remainder() {
        msgs.truncate(msgs.len().saturating_sub(*n as usize % 3));
    }
    msgs.into_iter()
        .map(|(h, b)| FlightData {
            data_header: h.into(),
            data_body: b.into(),
            ..Default::default()
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let msgs = if mode % 2 == 1 {
        let d = FlightDescriptor::new_cmd(rest.to_vec());
        let _ = put::descriptor_table(&d);
        frames(rest)
    } else {
        let bases = bases();
        edited(&bases[(mode as usize / 2) % bases.len()], rest)
    };
    let columns = columns();
    let stream = futures_util::stream::iter(msgs.into_iter().map(Ok));
    let _ = common::runtime().block_on(put::encode_upload("ta_fuzz", stream, &columns));
});
