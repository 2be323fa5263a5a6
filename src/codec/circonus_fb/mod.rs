//! Circonus FlatBuffer `MetricList` bodies, the binary form of IRONdb's
//! `/raw` submission (protocols.md sections 6.2 and 7).
//!
//! Two wire-incompatible schema generations exist; the file identifier at
//! bytes 4..8 says which one a body uses: `CIML` (legacy "v1", what gosnowth
//! writes, one sample inline per `MetricValue`, text check UUID) or `CMLS`
//! (current "v2", reconnoiter, `samples` vectors, 16 raw UUID bytes). The
//! schemas of record are `schema/circonus_v1` and `schema/circonus_v2`.
//!
//! `#![forbid(unsafe_code)]` rules out the crate's `Follow`/`Table` read
//! path (every accessor there is `unsafe`), so reading is done in two steps:
//! the crate's [`flatbuffers::Verifier`] checks the whole buffer against the
//! schema first (`verify.rs`), then `read.rs` walks it with a small
//! bounds-checked reader (`table.rs`) that cannot panic even on a gap the
//! verifier missed.
//! Writing uses the crate's safe [`flatbuffers::FlatBufferBuilder`].
//!
//! Like every codec this module does no I/O and no logging.

mod read;
mod table;
mod verify;
mod write;

#[cfg(test)]
mod tests;

use serde::Deserialize;

pub use read::decode;
pub use write::CirconusFbEncoder;

/// Which schema generation a MetricList uses.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Generation {
    /// Legacy v1 (namespace `circonus`, identifier `CIML`), what gosnowth sends.
    #[default]
    Ciml,
    /// Current v2 (namespace `noit`, identifier `CMLS`), what reconnoiter sends.
    Cmls,
}

impl Generation {
    /// The 4-byte file identifier of a MetricList in this generation.
    pub fn identifier(self) -> &'static str {
        match self {
            Generation::Ciml => "CIML",
            Generation::Cmls => "CMLS",
        }
    }

    /// The generation whose MetricList identifier is `identifier`.
    pub fn from_identifier(identifier: &[u8]) -> Option<Self> {
        match identifier {
            b"CIML" => Some(Generation::Ciml),
            b"CMLS" => Some(Generation::Cmls),
            _ => None,
        }
    }
}

/// Why a body could not be read as a MetricList at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlatbufferError {
    /// Too short to hold a root offset and a file identifier.
    #[error("flatbuffer of {len} bytes is too small for a metric list")]
    TooSmall {
        /// Length of the body.
        len: usize,
    },
    /// The file identifier is neither `CIML` nor `CMLS`.
    #[error("unknown flatbuffer identifier \"{}\"", .found.escape_ascii())]
    UnknownIdentifier {
        /// The four identifier bytes found.
        found: [u8; 4],
    },
    /// The buffer does not verify against the schema its identifier names.
    #[error("{generation:?} metric list failed verification")]
    Verification {
        /// The generation the identifier named.
        generation: Generation,
        /// What the verifier found.
        #[source]
        source: flatbuffers::InvalidFlatbuffer,
    },
}

/// What a decoded body held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FbOutcome {
    /// The schema generation of the body.
    pub generation: Generation,
    /// Points appended to the batch (one per v1 Metric, one per v2 sample).
    pub records: u64,
    /// Metrics or samples rejected (also counted in the `Rejects`).
    pub errors: u64,
}

/// Vtable slots: field `id: n` lives at byte `4 + 2n` (protocols.md section 7).
/// A union field takes two ids, its `_type` byte first.
mod slot {
    /// `MetricList.metrics`.
    pub(super) const LIST_METRICS: u16 = 4;

    /// `Metric.timestamp` (both generations).
    pub(super) const METRIC_TIMESTAMP: u16 = 4;
    /// `Metric.check_name`.
    pub(super) const METRIC_CHECK_NAME: u16 = 6;
    /// `Metric.check_uuid` (v1 string, v2 `[ubyte]`).
    pub(super) const METRIC_CHECK_UUID: u16 = 8;
    /// `Metric.account_id`.
    pub(super) const METRIC_ACCOUNT_ID: u16 = 10;
    /// `Metric.value`.
    pub(super) const METRIC_VALUE: u16 = 12;

    /// `MetricValue.name` (both generations).
    pub(super) const VALUE_NAME: u16 = 4;
    /// v1 `MetricValue.timestamp`.
    pub(super) const V1_VALUE_TIMESTAMP: u16 = 6;
    /// v1 `MetricValue.value_type`.
    pub(super) const V1_VALUE_TYPE: u16 = 8;
    /// v1 `MetricValue.value`.
    pub(super) const V1_VALUE_VALUE: u16 = 10;
    /// v1 `MetricValue.generation`.
    pub(super) const V1_VALUE_GENERATION: u16 = 12;
    /// v1 `MetricValue.stream_tags`.
    pub(super) const V1_VALUE_STREAM_TAGS: u16 = 14;
    /// v2 `MetricValue.stream_tags`.
    pub(super) const V2_VALUE_STREAM_TAGS: u16 = 6;
    /// v2 `MetricValue.samples`.
    pub(super) const V2_VALUE_SAMPLES: u16 = 8;

    /// v2 `MetricSample.timestamp`.
    pub(super) const SAMPLE_TIMESTAMP: u16 = 4;
    /// v2 `MetricSample.value_type`.
    pub(super) const SAMPLE_TYPE: u16 = 6;
    /// v2 `MetricSample.value`.
    pub(super) const SAMPLE_VALUE: u16 = 8;
    /// v2 `MetricSample.generation`.
    pub(super) const SAMPLE_GENERATION: u16 = 10;

    /// The single `value` field of IntValue ... StringValue.
    pub(super) const SCALAR_VALUE: u16 = 4;

    /// `Histogram.buckets`.
    pub(super) const HISTOGRAM_BUCKETS: u16 = 4;
    /// `Histogram.cumulative`.
    pub(super) const HISTOGRAM_CUMULATIVE: u16 = 6;

    /// v1 `HistogramBucket.val` (a table in v1).
    pub(super) const BUCKET_VAL: u16 = 4;
    /// v1 `HistogramBucket.exp`.
    pub(super) const BUCKET_EXP: u16 = 6;
    /// v1 `HistogramBucket.count`.
    pub(super) const BUCKET_COUNT: u16 = 8;
}

/// `MetricValueUnion` discriminants, identical in both generations.
mod tag {
    /// No value.
    pub(super) const NONE: u8 = 0;
    /// `IntValue`.
    pub(super) const INT: u8 = 1;
    /// `UintValue`.
    pub(super) const UINT: u8 = 2;
    /// `LongValue`.
    pub(super) const LONG: u8 = 3;
    /// `UlongValue`.
    pub(super) const ULONG: u8 = 4;
    /// `DoubleValue`.
    pub(super) const DOUBLE: u8 = 5;
    /// `StringValue`.
    pub(super) const STRING: u8 = 6;
    /// `Histogram`.
    pub(super) const HISTOGRAM: u8 = 7;
    /// `AbsentNumericValue`.
    pub(super) const ABSENT_NUMERIC: u8 = 8;
    /// `AbsentStringValue`.
    pub(super) const ABSENT_STRING: u8 = 9;
    /// `AbsentHistogramValue`.
    pub(super) const ABSENT_HISTOGRAM: u8 = 10;
}

/// Size of a v2 `HistogramBucket` struct: u64 count, i8 val, i8 exp, 6 padding bytes.
const V2_BUCKET_BYTES: usize = 16;

/// Length of a hyphenated text UUID.
const UUID_TEXT_LEN: usize = 36;

/// Byte offsets of the hyphens in a text UUID (8-4-4-4-12).
const UUID_HYPHENS: [usize; 4] = [8, 13, 18, 23];

/// Formats 16 raw UUID bytes as lowercase hyphenated text.
fn format_uuid(bytes: &[u8; 16]) -> [u8; UUID_TEXT_LEN] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = [b'-'; UUID_TEXT_LEN];
    let mut at = 0;
    for byte in bytes {
        if UUID_HYPHENS.contains(&at) {
            at += 1;
        }
        text[at] = HEX[usize::from(byte >> 4)];
        text[at + 1] = HEX[usize::from(byte & 0x0f)];
        at += 2;
    }
    text
}

/// Parses hyphenated text (any case) into 16 raw UUID bytes.
fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    let text = text.as_bytes();
    if text.len() != UUID_TEXT_LEN || UUID_HYPHENS.iter().any(|at| text[*at] != b'-') {
        return None;
    }
    let mut digits = text
        .iter()
        .enumerate()
        .filter(|(at, _)| !UUID_HYPHENS.contains(at))
        .map(|(_, digit)| char::from(*digit).to_digit(16));
    let mut bytes = [0u8; 16];
    for byte in &mut bytes {
        let high = digits.next()??;
        let low = digits.next()??;
        // Two hex digits always fit a byte.
        *byte = u8::try_from(high << 4 | low).ok()?;
    }
    Some(bytes)
}
