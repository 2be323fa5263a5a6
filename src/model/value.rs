//! Typed point values, wide enough to carry every protocol without loss.

use std::sync::Arc;

use super::Histogram;

/// A point's value. The integer widths mirror IRONdb's `i I l L` types so
/// that IRONdb to IRONdb relaying keeps them exactly.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// Signed 32-bit integer (IRONdb `i`).
    I32(i32),
    /// Unsigned 32-bit integer (IRONdb `I`).
    U32(u32),
    /// Signed 64-bit integer (IRONdb `l`, KairosDB long).
    I64(i64),
    /// Unsigned 64-bit integer (IRONdb `L`).
    U64(u64),
    /// Double (Graphite, IRONdb `n`, KairosDB double).
    F64(f64),
    /// Text (KairosDB string, IRONdb `s`).
    Text(Arc<str>),
    /// A log-linear histogram (IRONdb `H1`/`H2`).
    Histogram(Arc<Histogram>),
    /// An explicit "no value" of the given kind (IRONdb `[[null]]`).
    Absent(ValueKind),
}

/// The kind of a value, without the value itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ValueKind {
    /// See [`Value::I32`].
    I32,
    /// See [`Value::U32`].
    U32,
    /// See [`Value::I64`].
    I64,
    /// See [`Value::U64`].
    U64,
    /// See [`Value::F64`].
    F64,
    /// See [`Value::Text`].
    Text,
    /// See [`Value::Histogram`].
    Histogram,
}

impl Value {
    /// The value as a double, for numeric targets; `None` for text,
    /// histograms and absent values.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::I32(v) => Some(f64::from(v)),
            Value::U32(v) => Some(f64::from(v)),
            Value::I64(v) => Some(v as f64),
            Value::U64(v) => Some(v as f64),
            Value::F64(v) => Some(v),
            Value::Text(_) | Value::Histogram(_) | Value::Absent(_) => None,
        }
    }

    /// The kind of this value.
    pub fn kind(&self) -> ValueKind {
        match self {
            Value::I32(_) => ValueKind::I32,
            Value::U32(_) => ValueKind::U32,
            Value::I64(_) => ValueKind::I64,
            Value::U64(_) => ValueKind::U64,
            Value::F64(_) => ValueKind::F64,
            Value::Text(_) => ValueKind::Text,
            Value::Histogram(_) => ValueKind::Histogram,
            Value::Absent(kind) => *kind,
        }
    }
}
