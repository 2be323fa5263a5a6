//! The spool's record payload: a compact, versioned, lossless encoding of a
//! run of points.
//!
//! Layout (all integers are LEB128 varints unless said otherwise; signed
//! ones are zigzag-encoded first):
//!
//! ```text
//! record  = version:u8 (=1) n_points:u32-LE point*
//! point   = name:str n_tags tag* timestamp:i64 ttl:u32 source value
//! tag     = key:str value:str
//! str     = len bytes (UTF-8)
//! source  = 0 (none) | 1 source-body (defines the next index) | 2+index
//! body    = present:u8 (bit 0 account_id .. bit 4 module) account_id:i32? str{0..4}
//! value   = kind:u8 (0 I32, 1 U32, 2 I64, 3 U64, 4 F64, 5 Text, 6 Histogram;
//!           +0x80 = Absent of that kind, no payload) payload
//! payload = I32:i32 | U32:u32 | I64:i64 | U64:u64 | F64:8 bytes LE bits
//!         | Text:str | Histogram: flags:u8 (bit 0 cumulative) n_bins (val:i8 exp:i8 count:u64)*
//! ```
//!
//! A source is written once per record and then referred to by index, so a
//! batch of 10k points from one check stores the check identity once; the
//! decoder hands every such point one shared `Arc<Source>`. Floats keep
//! their exact bits (NaN payloads included).
//!
//! Decoding never panics and never trusts a length: every count is
//! checked against the bytes left before anything is allocated for it.
//! This module is pure: no I/O.

use std::collections::HashMap;
use std::sync::Arc;

use crate::model::{Batch, Bin, Histogram, PointRef, Source, Timestamp, Value, ValueKind};

/// The record format version written by [`encode_points`].
pub const RECORD_VERSION: u8 = 1;

/// Why a record could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The first byte names a format this build does not know.
    #[error("unsupported record version {0}")]
    UnsupportedVersion(u8),
    /// The record ends inside a field.
    #[error("record truncated")]
    Truncated,
    /// A varint runs past 10 bytes or 64 bits.
    #[error("malformed varint")]
    BadVarint,
    /// A decoded integer does not fit its field.
    #[error("{field} out of range")]
    OutOfRange {
        /// The field being decoded.
        field: &'static str,
    },
    /// A name, tag or text is not UTF-8.
    #[error("string is not utf-8")]
    InvalidUtf8,
    /// A value kind byte or a flags byte has unknown bits.
    #[error("unknown {field} byte {byte:#04x}")]
    UnknownTag {
        /// The field being decoded.
        field: &'static str,
        /// The byte found.
        byte: u8,
    },
    /// A point refers to a source the record has not defined.
    #[error("source index {index} not defined")]
    UnknownSource {
        /// The index referred to.
        index: u64,
    },
    /// Bytes follow the last point.
    #[error("{0} bytes after the last point")]
    TrailingBytes(usize),
}

/// Appends the encoding of `points` to `out` and returns how many points it
/// holds. At most `u32::MAX` points are taken from the iterator; a caller
/// with more splits them.
pub fn encode_points<'a>(points: impl Iterator<Item = PointRef<'a>>, out: &mut Vec<u8>) -> u32 {
    out.push(RECORD_VERSION);
    let count_at = out.len();
    out.extend_from_slice(&0u32.to_le_bytes());
    let mut sources = SourceTable::default();
    let mut n_points = 0u32;
    for point in points {
        encode_point(&point, &mut sources, out);
        n_points += 1;
        if n_points == u32::MAX {
            break;
        }
    }
    out[count_at..count_at + 4].copy_from_slice(&n_points.to_le_bytes());
    n_points
}

/// Decodes one record and appends its points to `out`; returns how many.
///
/// # Errors
/// Returns [`RecordError`] when the bytes are not exactly one well-formed
/// record. `out` then holds the points it had before the call (its string
/// arena may keep the bytes of the rejected points).
pub fn decode_points(bytes: &[u8], out: &mut Batch) -> Result<u32, RecordError> {
    let len_before = out.len();
    let result = decode_into(bytes, out);
    if result.is_err() {
        out.truncate(len_before);
    }
    result
}

// === encoding ===

/// Sources already written in this record, by identity and by value.
#[derive(Default)]
struct SourceTable<'a> {
    /// The last source seen: consecutive points usually share one `Arc`.
    last: Option<(&'a Arc<Source>, u64)>,
    by_value: HashMap<&'a Source, u64>,
}

impl<'a> SourceTable<'a> {
    /// The index of `source` if this record already holds it; `None`
    /// registers it under the next index (the caller then writes it out).
    fn lookup(&mut self, source: &'a Arc<Source>) -> Option<u64> {
        if let Some((last, index)) = self.last {
            if Arc::ptr_eq(last, source) {
                return Some(index);
            }
        }
        let next_index = self.by_value.len() as u64;
        let found = *self.by_value.entry(source).or_insert(next_index);
        self.last = Some((source, found));
        (found != next_index).then_some(found)
    }
}

fn encode_point<'a>(point: &PointRef<'a>, sources: &mut SourceTable<'a>, out: &mut Vec<u8>) {
    put_str(out, point.name());
    let tags = point.tags();
    put_varint(out, tags.len() as u64);
    for (key, value) in tags {
        put_str(out, key);
        put_str(out, value);
    }
    put_varint(out, zigzag(point.timestamp().as_millis()));
    put_varint(out, u64::from(point.ttl().unwrap_or(0)));
    match point.source() {
        None => put_varint(out, 0),
        Some(source) => match sources.lookup(source) {
            Some(index) => put_varint(out, index + 2),
            None => {
                put_varint(out, 1);
                encode_source(source, out);
            }
        },
    }
    encode_value(point.value(), out);
}

fn encode_source(source: &Source, out: &mut Vec<u8>) {
    let strings = [
        &source.check_uuid,
        &source.check_name,
        &source.target,
        &source.module,
    ];
    let mut present = u8::from(source.account_id.is_some());
    for (bit, text) in strings.iter().enumerate() {
        if text.is_some() {
            present |= 2 << bit;
        }
    }
    out.push(present);
    if let Some(account_id) = source.account_id {
        put_varint(out, zigzag(i64::from(account_id)));
    }
    for text in strings.into_iter().flatten() {
        put_str(out, text);
    }
}

fn encode_value(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Absent(kind) => out.push(ABSENT | kind_code(*kind)),
        Value::I32(v) => {
            out.push(kind_code(ValueKind::I32));
            put_varint(out, zigzag(i64::from(*v)));
        }
        Value::U32(v) => {
            out.push(kind_code(ValueKind::U32));
            put_varint(out, u64::from(*v));
        }
        Value::I64(v) => {
            out.push(kind_code(ValueKind::I64));
            put_varint(out, zigzag(*v));
        }
        Value::U64(v) => {
            out.push(kind_code(ValueKind::U64));
            put_varint(out, *v);
        }
        Value::F64(v) => {
            out.push(kind_code(ValueKind::F64));
            out.extend_from_slice(&v.to_bits().to_le_bytes());
        }
        Value::Text(text) => {
            out.push(kind_code(ValueKind::Text));
            put_str(out, text);
        }
        Value::Histogram(histogram) => {
            out.push(kind_code(ValueKind::Histogram));
            out.push(u8::from(histogram.cumulative));
            put_varint(out, histogram.bins.len() as u64);
            for bin in &histogram.bins {
                out.extend_from_slice(&[bin.val.to_le_bytes()[0], bin.exp.to_le_bytes()[0]]);
                put_varint(out, bin.count);
            }
        }
    }
}

/// Marks an absent value in the kind byte.
const ABSENT: u8 = 0x80;

const KINDS: [ValueKind; 7] = [
    ValueKind::I32,
    ValueKind::U32,
    ValueKind::I64,
    ValueKind::U64,
    ValueKind::F64,
    ValueKind::Text,
    ValueKind::Histogram,
];

fn kind_code(kind: ValueKind) -> u8 {
    match kind {
        ValueKind::I32 => 0,
        ValueKind::U32 => 1,
        ValueKind::I64 => 2,
        ValueKind::U64 => 3,
        ValueKind::F64 => 4,
        ValueKind::Text => 5,
        ValueKind::Histogram => 6,
    }
}

fn put_str(out: &mut Vec<u8>, text: &str) {
    put_varint(out, text.len() as u64);
    out.extend_from_slice(text.as_bytes());
}

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn zigzag(n: i64) -> u64 {
    ((n << 1) ^ (n >> 63)) as u64
}

fn unzigzag(n: u64) -> i64 {
    ((n >> 1) as i64) ^ -((n & 1) as i64)
}

// === decoding ===

fn decode_into(bytes: &[u8], out: &mut Batch) -> Result<u32, RecordError> {
    let mut reader = Reader { bytes };
    let version = reader.byte()?;
    if version != RECORD_VERSION {
        return Err(RecordError::UnsupportedVersion(version));
    }
    let n_points = u32::from_le_bytes(reader.array::<4>()?);
    let mut sources: Vec<Arc<Source>> = Vec::new();
    // Reused across points; grows only as tags are actually read.
    let mut tags: Vec<(&str, &str)> = Vec::new();
    for _ in 0..n_points {
        let name = reader.str()?;
        tags.clear();
        let n_tags = reader.varint()?;
        for _ in 0..n_tags {
            tags.push((reader.str()?, reader.str()?));
        }
        let timestamp = Timestamp::from_millis(unzigzag(reader.varint()?));
        let ttl = reader.int::<u32>("ttl")?;
        let source = match reader.varint()? {
            0 => None,
            1 => {
                let source = Arc::new(reader.source()?);
                sources.push(Arc::clone(&source));
                Some(source)
            }
            reference => {
                let index = reference - 2;
                let source = usize::try_from(index).ok().and_then(|i| sources.get(i));
                Some(Arc::clone(
                    source.ok_or(RecordError::UnknownSource { index })?,
                ))
            }
        };
        let value = reader.value()?;
        out.push(name, tags.iter().copied(), timestamp, value, source);
        out.set_last_ttl(ttl);
    }
    if !reader.bytes.is_empty() {
        return Err(RecordError::TrailingBytes(reader.bytes.len()));
    }
    Ok(n_points)
}

/// A cursor over the record's bytes; every read is bounds-checked.
struct Reader<'b> {
    bytes: &'b [u8],
}

impl<'b> Reader<'b> {
    fn byte(&mut self) -> Result<u8, RecordError> {
        let (&first, rest) = self.bytes.split_first().ok_or(RecordError::Truncated)?;
        self.bytes = rest;
        Ok(first)
    }

    fn take(&mut self, len: u64) -> Result<&'b [u8], RecordError> {
        let len = usize::try_from(len).map_err(|_| RecordError::Truncated)?;
        if len > self.bytes.len() {
            return Err(RecordError::Truncated);
        }
        let (taken, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], RecordError> {
        let mut array = [0u8; N];
        array.copy_from_slice(self.take(N as u64)?);
        Ok(array)
    }

    fn varint(&mut self) -> Result<u64, RecordError> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?;
            let bits = u64::from(byte & 0x7f);
            // The tenth byte may only carry the top bit of a u64.
            if shift == 63 && bits > 1 {
                return Err(RecordError::BadVarint);
            }
            n |= bits << shift;
            if byte & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err(RecordError::BadVarint)
    }

    fn int<T: TryFrom<u64>>(&mut self, field: &'static str) -> Result<T, RecordError> {
        T::try_from(self.varint()?).map_err(|_| RecordError::OutOfRange { field })
    }

    fn signed<T: TryFrom<i64>>(&mut self, field: &'static str) -> Result<T, RecordError> {
        T::try_from(unzigzag(self.varint()?)).map_err(|_| RecordError::OutOfRange { field })
    }

    fn str(&mut self) -> Result<&'b str, RecordError> {
        let len = self.varint()?;
        std::str::from_utf8(self.take(len)?).map_err(|_| RecordError::InvalidUtf8)
    }

    fn source(&mut self) -> Result<Source, RecordError> {
        let present = self.byte()?;
        if present & !0x1f != 0 {
            return Err(RecordError::UnknownTag {
                field: "source",
                byte: present,
            });
        }
        let account_id = if present & 1 != 0 {
            Some(self.signed::<i32>("account_id")?)
        } else {
            None
        };
        let mut strings: [Option<String>; 4] = Default::default();
        for (bit, slot) in strings.iter_mut().enumerate() {
            if present & (2 << bit) != 0 {
                *slot = Some(self.str()?.to_owned());
            }
        }
        let [check_uuid, check_name, target, module] = strings;
        Ok(Source {
            account_id,
            check_uuid,
            check_name,
            target,
            module,
        })
    }

    fn value(&mut self) -> Result<Value, RecordError> {
        let byte = self.byte()?;
        let kind =
            KINDS
                .get(usize::from(byte & !ABSENT))
                .copied()
                .ok_or(RecordError::UnknownTag {
                    field: "value kind",
                    byte,
                })?;
        if byte & ABSENT != 0 {
            return Ok(Value::Absent(kind));
        }
        Ok(match kind {
            ValueKind::I32 => Value::I32(self.signed("i32 value")?),
            ValueKind::U32 => Value::U32(self.int("u32 value")?),
            ValueKind::I64 => Value::I64(unzigzag(self.varint()?)),
            ValueKind::U64 => Value::U64(self.varint()?),
            ValueKind::F64 => Value::F64(f64::from_bits(u64::from_le_bytes(self.array::<8>()?))),
            ValueKind::Text => Value::Text(Arc::from(self.str()?)),
            ValueKind::Histogram => Value::Histogram(Arc::new(self.histogram()?)),
        })
    }

    fn histogram(&mut self) -> Result<Histogram, RecordError> {
        let flags = self.byte()?;
        if flags > 1 {
            return Err(RecordError::UnknownTag {
                field: "histogram flags",
                byte: flags,
            });
        }
        let n_bins = self.varint()?;
        // A bin takes at least 3 bytes: never reserve more than that allows.
        let room = self.bytes.len() / 3;
        let mut bins = Vec::with_capacity(usize::try_from(n_bins).unwrap_or(room).min(room));
        for _ in 0..n_bins {
            let [val, exp] = self.array::<2>()?;
            bins.push(Bin {
                val: i8::from_le_bytes([val]),
                exp: i8::from_le_bytes([exp]),
                count: self.varint()?,
            });
        }
        Ok(Histogram {
            bins,
            cumulative: flags == 1,
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::model::Point;

    fn source(name: &str) -> Arc<Source> {
        Arc::new(Source {
            account_id: Some(-7),
            check_uuid: Some("0b7a6c3e-1d2f-4a5b-9c8d-7e6f5a4b3c2d".into()),
            check_name: Some(name.into()),
            target: Some("web01".into()),
            module: None,
        })
    }

    fn every_variant() -> Batch {
        let histogram = Histogram {
            bins: vec![
                Bin {
                    val: -99,
                    exp: -128,
                    count: u64::MAX,
                },
                Bin {
                    val: 10,
                    exp: 127,
                    count: 0,
                },
            ],
            cumulative: true,
        };
        let mut values = vec![
            Value::I32(i32::MIN),
            Value::U32(u32::MAX),
            Value::I64(i64::MIN),
            Value::U64(u64::MAX),
            Value::F64(-0.0),
            Value::F64(f64::from_bits(0x7ff8_dead_beef_0001)),
            Value::F64(f64::INFINITY),
            Value::Text("héllo\n\t\"".into()),
            Value::Text("".into()),
            Value::Histogram(Arc::new(histogram)),
            Value::Histogram(Arc::new(Histogram::default())),
        ];
        values.extend(KINDS.iter().map(|kind| Value::Absent(*kind)));
        let shared = source("a");
        let full = Arc::new(Source {
            account_id: Some(i32::MAX),
            check_uuid: Some("u".into()),
            check_name: Some("".into()),
            target: Some("t".into()),
            module: Some("m".into()),
        });
        let mut batch = Batch::new();
        for (i, value) in values.into_iter().enumerate() {
            let point_source = match i % 4 {
                0 => None,
                1 | 2 => Some(Arc::clone(&shared)),
                _ => Some(Arc::clone(&full)),
            };
            let millis = [i64::MIN, -1, 0, 1_700_000_000_123, i64::MAX][i % 5];
            batch.push(
                &format!("metric.{i}"),
                [("host", "a"), ("dc", "é")].into_iter().take(i % 3),
                Timestamp::from_millis(millis),
                value,
                point_source,
            );
            batch.set_last_ttl([0, 1, u32::MAX][i % 3]);
        }
        batch
    }

    fn encode(batch: &Batch) -> Vec<u8> {
        let mut out = Vec::new();
        let n = encode_points(batch.iter(), &mut out);
        assert_eq!(n as usize, batch.len());
        out
    }

    /// Compares points field by field, floats by their bits.
    fn assert_same(left: &Batch, right: &Batch) {
        assert_eq!(left.len(), right.len());
        for (a, b) in left.iter().zip(right.iter()) {
            let (pa, pb): (Point, Point) = (a.to_point(), b.to_point());
            assert_eq!(pa.name, pb.name);
            assert_eq!(pa.tags, pb.tags);
            assert_eq!(pa.timestamp, pb.timestamp);
            assert_eq!(pa.source, pb.source);
            assert_eq!(a.ttl(), b.ttl());
            match (a.value(), b.value()) {
                (Value::F64(x), Value::F64(y)) => assert_eq!(x.to_bits(), y.to_bits()),
                (x, y) => assert_eq!(x, y),
            }
        }
    }

    #[test]
    fn every_variant_round_trips() {
        let batch = every_variant();
        let bytes = encode(&batch);
        let mut decoded = Batch::new();
        assert_eq!(decode_points(&bytes, &mut decoded), Ok(batch.len() as u32));
        assert_same(&batch, &decoded);
    }

    #[test]
    fn decoding_appends_to_a_batch() {
        let batch = every_variant();
        let bytes = encode(&batch);
        let mut decoded = Batch::new();
        decode_points(&bytes, &mut decoded).expect("first");
        decode_points(&bytes, &mut decoded).expect("second");
        assert_eq!(decoded.len(), 2 * batch.len());
    }

    #[test]
    fn empty_run_round_trips() {
        let mut out = Vec::new();
        assert_eq!(encode_points(Batch::new().iter(), &mut out), 0);
        let mut decoded = Batch::new();
        assert_eq!(decode_points(&out, &mut decoded), Ok(0));
    }

    #[test]
    fn a_repeated_source_is_stored_once_and_decoded_shared() {
        let shared = source("one-check");
        let mut batch = Batch::new();
        for i in 0..10_000 {
            let value = Value::F64(f64::from(i));
            batch.push("m", [], Timestamp::from_millis(i64::from(i)), value, None);
        }
        let mut with_source = Batch::new();
        for point in batch.iter() {
            let value = point.value().clone();
            let shared = Some(Arc::clone(&shared));
            with_source.push(point.name(), [], point.timestamp(), value, shared);
        }
        let (plain, sourced) = (encode(&batch), encode(&with_source));
        // Every point spends one byte on its source either way (0 = none,
        // 2 = index 0); the identity itself (flags, account id, three
        // strings) is written once.
        let definition = 1 + 1 + 37 + 10 + 6;
        assert_eq!(sourced.len(), plain.len() + definition);
        let mut decoded = Batch::new();
        decode_points(&sourced, &mut decoded).expect("decodes");
        let first = decoded.get(0).and_then(|p| p.source()).expect("source");
        assert_eq!(**first, *shared);
        assert!(decoded
            .iter()
            .all(|p| p.source().is_some_and(|s| Arc::ptr_eq(s, first))));
    }

    #[test]
    fn equal_sources_in_different_arcs_are_deduplicated() {
        let mut batch = Batch::new();
        for name in ["x", "y", "x", "y"] {
            let value = Value::I64(1);
            batch.push(
                "m",
                [],
                Timestamp::from_millis(1),
                value,
                Some(source(name)),
            );
        }
        let mut decoded = Batch::new();
        decode_points(&encode(&batch), &mut decoded).expect("decodes");
        let sources: Vec<_> = decoded.iter().filter_map(|p| p.source()).collect();
        assert!(Arc::ptr_eq(sources[0], sources[2]));
        assert!(Arc::ptr_eq(sources[1], sources[3]));
        assert_same(&batch, &decoded);
    }

    #[test]
    fn every_truncation_is_an_error_and_leaves_the_batch_as_it_was() {
        let bytes = encode(&every_variant());
        let mut decoded = Batch::new();
        decoded.push("kept", [], Timestamp::from_millis(1), Value::U32(1), None);
        for len in 0..bytes.len() {
            assert!(decode_points(&bytes[..len], &mut decoded).is_err(), "{len}");
            assert_eq!(decoded.len(), 1);
        }
    }

    #[test]
    fn malformed_records_are_rejected() {
        let valid = encode(&every_variant());
        let mut batch = Batch::new();
        let mut with_trailing = valid.clone();
        with_trailing.push(0);
        let cases: Vec<(Vec<u8>, RecordError)> = vec![
            (vec![2, 0, 0, 0, 0], RecordError::UnsupportedVersion(2)),
            (with_trailing, RecordError::TrailingBytes(1)),
            // name "", no tags, ts 0, ttl 0, source index 0 never defined.
            (
                vec![1, 1, 0, 0, 0, 0, 0, 0, 0, 2],
                RecordError::UnknownSource { index: 0 },
            ),
            (
                vec![1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0x07],
                RecordError::UnknownTag {
                    field: "value kind",
                    byte: 7,
                },
            ),
            (
                vec![
                    1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80, 0x80, 0x80, 0x80, 0x10,
                ],
                RecordError::OutOfRange { field: "i32 value" },
            ),
            (
                [vec![1, 1, 0, 0, 0, 0, 0, 0, 0x80], vec![0xff; 9], vec![2]].concat(),
                RecordError::BadVarint,
            ),
            (
                vec![1, 1, 0, 0, 0, 1, 0xff, 0, 0, 0, 0, 0],
                RecordError::InvalidUtf8,
            ),
        ];
        for (bytes, expected) in cases {
            assert_eq!(
                decode_points(&bytes, &mut batch),
                Err(expected),
                "{bytes:?}"
            );
        }
        assert!(batch.is_empty());
    }

    #[test]
    fn a_huge_bin_count_allocates_nothing_it_cannot_fill() {
        // One histogram point claiming u64::MAX bins with none present.
        let mut bytes = vec![1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 6, 0];
        bytes.extend_from_slice(&[0xff; 9]);
        bytes.push(0x01);
        let mut batch = Batch::new();
        assert_eq!(
            decode_points(&bytes, &mut batch),
            Err(RecordError::Truncated)
        );
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        let bin = (any::<i8>(), any::<i8>(), any::<u64>()).prop_map(|(val, exp, count)| Bin {
            val,
            exp,
            count,
        });
        let histogram =
            (proptest::collection::vec(bin, 0..5), any::<bool>()).prop_map(|(bins, cumulative)| {
                Value::Histogram(Arc::new(Histogram { bins, cumulative }))
            });
        prop_oneof![
            any::<i32>().prop_map(Value::I32),
            any::<u32>().prop_map(Value::U32),
            any::<i64>().prop_map(Value::I64),
            any::<u64>().prop_map(Value::U64),
            any::<u64>().prop_map(|bits| Value::F64(f64::from_bits(bits))),
            ".{0,8}".prop_map(|text| Value::Text(text.as_str().into())),
            histogram,
            (0..KINDS.len()).prop_map(|i| Value::Absent(KINDS[i])),
        ]
    }

    fn arb_source() -> impl Strategy<Value = Option<Arc<Source>>> {
        let fields = (
            proptest::option::of(any::<i32>()),
            proptest::option::of(".{0,4}"),
            proptest::option::of(".{0,4}"),
            proptest::option::of(".{0,4}"),
            proptest::option::of(".{0,4}"),
        );
        let source = fields.prop_map(|(account_id, check_uuid, check_name, target, module)| {
            Arc::new(Source {
                account_id,
                check_uuid,
                check_name,
                target,
                module,
            })
        });
        proptest::option::of(source)
    }

    type ArbPoint = (String, Vec<(String, String)>, i64, u32, Value, usize);

    fn arb_point() -> impl Strategy<Value = ArbPoint> {
        (
            ".{0,10}",
            proptest::collection::vec((".{0,4}", ".{0,4}"), 0..4),
            any::<i64>(),
            any::<u32>(),
            arb_value(),
            0usize..4,
        )
    }

    proptest! {
        #[test]
        fn arbitrary_points_round_trip(
            points in proptest::collection::vec(arb_point(), 0..20),
            pool in proptest::collection::vec(arb_source(), 3),
        ) {
            let mut batch = Batch::new();
            for (name, tags, millis, ttl, value, source_index) in points {
                let tags = tags.iter().map(|(k, v)| (k.as_str(), v.as_str()));
                let source = pool.get(source_index).cloned().flatten();
                batch.push(&name, tags, Timestamp::from_millis(millis), value, source);
                batch.set_last_ttl(ttl);
            }
            let bytes = encode(&batch);
            let mut decoded = Batch::new();
            prop_assert_eq!(decode_points(&bytes, &mut decoded), Ok(batch.len() as u32));
            assert_same(&batch, &decoded);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut batch = Batch::new();
            let _ = decode_points(&bytes, &mut batch);
            // Again past the version check, so the point decoder sees noise.
            let versioned = [&[RECORD_VERSION][..], &bytes].concat();
            if decode_points(&versioned, &mut batch).is_err() {
                prop_assert!(batch.is_empty());
            }
        }

        #[test]
        fn mutated_records_never_panic(index in any::<usize>(), byte in any::<u8>()) {
            let mut bytes = encode(&every_variant());
            let at = index % bytes.len();
            bytes[at] = byte;
            let mut batch = Batch::new();
            if decode_points(&bytes, &mut batch).is_err() {
                prop_assert!(batch.is_empty());
            }
        }
    }
}
