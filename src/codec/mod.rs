//! Wire formats: pure functions from bytes to [`Batch`]es and back.
//!
//! Codecs do no I/O, no logging, keep no metrics and never read the clock:
//! the caller passes the arrival time and collects rejects in [`Rejects`],
//! then counts and logs them at the edge. A bad record is a counted reject
//! and the stream goes on; only a stream whose framing is lost is a
//! [`FrameError`] (tokio-util's decoder contract).

pub mod carbon_amqp;
pub mod circllhist;
pub mod circonus_fb;
pub mod graphite_pickle;
pub mod graphite_plain;
pub mod graphite_tags;
pub mod irondb_tsv;
pub mod kairos_json;
pub mod kairos_telnet;
pub mod line;
pub mod number;
mod pickle_vm;
pub mod stream_tags;

use std::fmt;

use serde::Deserialize;

use crate::model::{Batch, PointRef, Timestamp};

/// Every protocol tsrelay knows, as named in relay.yaml.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// Graphite plaintext lines, TCP or UDP.
    GraphitePlaintext,
    /// Graphite pickle frames over TCP.
    GraphitePickle,
    /// KairosDB telnet `put` lines.
    KairosdbTelnet,
    /// KairosDB REST JSON.
    KairosdbRest,
    /// IRONdb raw TSV.
    IrondbRaw,
    /// Circonus FlatBuffer MetricList.
    IrondbFlatbuffer,
    /// Carbon AMQP.
    Amqp,
    /// The HTTP ingest listener.
    Http,
    /// Text written to a file or stdout.
    File,
}

impl Protocol {
    /// The name used in relay.yaml.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::GraphitePlaintext => "graphite_plaintext",
            Protocol::GraphitePickle => "graphite_pickle",
            Protocol::KairosdbTelnet => "kairosdb_telnet",
            Protocol::KairosdbRest => "kairosdb_rest",
            Protocol::IrondbRaw => "irondb_raw",
            Protocol::IrondbFlatbuffer => "irondb_flatbuffer",
            Protocol::Amqp => "amqp",
            Protocol::Http => "http",
            Protocol::File => "file",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why one input record was not turned into a point.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The line is not valid UTF-8.
    InvalidUtf8,
    /// The line does not have exactly three fields.
    FieldCount,
    /// The value is not a number.
    BadValue,
    /// The timestamp is not a number or is out of range.
    BadTimestamp,
    /// The timestamp is `inf` or `nan`.
    NonFiniteTimestamp,
    /// The value is NaN (dropped, as carbon does).
    NanValue,
    /// The line is longer than the configured limit.
    LineTooLong,
    /// The connection ended in the middle of a record.
    Truncated,
    /// A pickle frame could not be read at all.
    BadPickle,
    /// A pickle frame referenced a global (code execution is never allowed).
    UnsafePickle,
    /// One item of a pickle list is not `(path, (timestamp, value))`.
    BadItem,
    /// A line that is not a known command (KairosDB telnet).
    UnknownCommand,
    /// A command with too few words.
    TooFewWords,
    /// A tag that is not `name=value` or has an empty name.
    BadTag,
    /// An empty metric name.
    EmptyName,
    /// A body or record that is not valid JSON or not the expected shape.
    InvalidJson,
    /// A metric that breaks the protocol's validation rules (KairosDB REST).
    InvalidMetric,
    /// A record whose type is not one the protocol knows (IRONdb TSV).
    UnknownRecord,
    /// A histogram that is not valid circllhist.
    BadHistogram,
    /// A name whose stream tags `|ST[...]` cannot be parsed.
    BadStreamTags,
    /// A check identity (IRONdb UUID field, FlatBuffer check) that cannot be read.
    BadCheck,
    /// A FlatBuffer that fails verification or has the wrong identifier.
    BadFlatbuffer,
    /// A name or tag over the protocol's length limits.
    NameTooLong,
    /// A body whose compression is invalid or expands past the limit.
    BadEncoding,
}

impl Reason {
    /// Every reason, for registering counters up front.
    pub const ALL: &'static [Reason] = &[
        Reason::InvalidUtf8,
        Reason::FieldCount,
        Reason::BadValue,
        Reason::BadTimestamp,
        Reason::NonFiniteTimestamp,
        Reason::NanValue,
        Reason::LineTooLong,
        Reason::Truncated,
        Reason::BadPickle,
        Reason::UnsafePickle,
        Reason::BadItem,
        Reason::UnknownCommand,
        Reason::TooFewWords,
        Reason::BadTag,
        Reason::EmptyName,
        Reason::InvalidJson,
        Reason::InvalidMetric,
        Reason::UnknownRecord,
        Reason::BadHistogram,
        Reason::BadStreamTags,
        Reason::BadCheck,
        Reason::BadFlatbuffer,
        Reason::NameTooLong,
        Reason::BadEncoding,
    ];

    /// The label used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidUtf8 => "invalid_utf8",
            Reason::FieldCount => "field_count",
            Reason::BadValue => "bad_value",
            Reason::BadTimestamp => "bad_timestamp",
            Reason::NonFiniteTimestamp => "non_finite_timestamp",
            Reason::NanValue => "nan_value",
            Reason::LineTooLong => "line_too_long",
            Reason::Truncated => "truncated",
            Reason::BadPickle => "bad_pickle",
            Reason::UnsafePickle => "unsafe_pickle",
            Reason::BadItem => "bad_item",
            Reason::UnknownCommand => "unknown_command",
            Reason::TooFewWords => "too_few_words",
            Reason::BadTag => "bad_tag",
            Reason::EmptyName => "empty_name",
            Reason::InvalidJson => "invalid_json",
            Reason::InvalidMetric => "invalid_metric",
            Reason::UnknownRecord => "unknown_record",
            Reason::BadHistogram => "bad_histogram",
            Reason::BadStreamTags => "bad_stream_tags",
            Reason::BadCheck => "bad_check",
            Reason::BadFlatbuffer => "bad_flatbuffer",
            Reason::NameTooLong => "name_too_long",
            Reason::BadEncoding => "bad_encoding",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Rejected records seen while decoding: counts per reason and a few samples.
#[derive(Debug, Default)]
pub struct Rejects {
    counts: [u64; Reason::ALL.len()],
    samples: Vec<Sample>,
}

/// One rejected record kept for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// Why it was rejected.
    pub reason: Reason,
    /// Extra words from the decoder, when the reason alone is not enough.
    pub detail: String,
    /// The start of the record, lossily decoded.
    pub record: String,
}

/// How many samples a [`Rejects`] keeps between two drains.
const MAX_SAMPLES: usize = 4;
/// How much of a rejected record a sample keeps.
const SAMPLE_BYTES: usize = 200;

impl Rejects {
    /// Records one reject; keeps a sample while there is room.
    pub fn add(&mut self, reason: Reason, record: &[u8]) {
        self.add_with_detail(reason, record, String::new);
    }

    /// Records one reject with a detail message built only if sampled.
    pub fn add_with_detail(
        &mut self,
        reason: Reason,
        record: &[u8],
        detail: impl FnOnce() -> String,
    ) {
        self.counts[reason.index()] += 1;
        if self.samples.len() < MAX_SAMPLES {
            let cut = &record[..record.len().min(SAMPLE_BYTES)];
            self.samples.push(Sample {
                reason,
                detail: detail(),
                record: String::from_utf8_lossy(cut).into_owned(),
            });
        }
    }

    /// Adds `n` rejects of one reason without samples.
    pub fn add_many(&mut self, reason: Reason, n: u64) {
        self.counts[reason.index()] += n;
    }

    /// How many records were rejected for `reason`.
    pub fn count(&self, reason: Reason) -> u64 {
        self.counts[reason.index()]
    }

    /// Total rejects of every reason.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Non-zero counts per reason.
    pub fn counts(&self) -> impl Iterator<Item = (Reason, u64)> + '_ {
        Reason::ALL
            .iter()
            .map(|reason| (*reason, self.counts[reason.index()]))
            .filter(|(_, n)| *n > 0)
    }

    /// The samples kept so far.
    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }

    /// Empties the collector for the next read.
    pub fn clear(&mut self) {
        self.counts = [0; Reason::ALL.len()];
        self.samples.clear();
    }
}

/// A stream whose framing is lost: the connection must be closed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// A length-prefixed frame announced more bytes than allowed.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// Announced length.
        len: usize,
        /// Configured limit.
        max: usize,
    },
}

/// Turns a byte stream into points, record by record.
pub trait StreamDecoder: Send {
    /// Decodes every complete record at the start of `buf`, appending points
    /// to `out` and rejects to `rejects`. Returns how many bytes were used;
    /// the caller keeps the rest for the next read.
    ///
    /// # Errors
    /// [`FrameError`] when the stream cannot be framed any more.
    fn decode(
        &mut self,
        buf: &[u8],
        received_at: Timestamp,
        out: &mut Batch,
        rejects: &mut Rejects,
    ) -> Result<usize, FrameError>;

    /// Called once at end of stream with the bytes no record claimed.
    /// A partial record is counted as [`Reason::Truncated`] and discarded.
    fn decode_eof(&mut self, rest: &[u8], rejects: &mut Rejects) {
        if !rest.iter().all(u8::is_ascii_whitespace) {
            rejects.add(Reason::Truncated, rest);
        }
    }

    /// Bytes the protocol answers to the peer (KairosDB's `version`),
    /// collected during `decode`; most protocols never answer.
    fn take_reply(&mut self) -> Option<Vec<u8>> {
        None
    }
}

/// Why an output format could not carry a point.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Unrepresentable {
    /// NaN or an infinity, which Graphite backends cannot store safely.
    NonFiniteValue,
    /// A text value sent to a numeric-only protocol.
    Text,
    /// A histogram sent to a protocol without histograms.
    Histogram,
    /// An explicit "no value".
    Absent,
    /// A name or tag the format cannot write (empty, whitespace, control bytes).
    InvalidName,
    /// The encoded record would exceed the upstream's line limit.
    LineTooLong,
    /// The target requires tags and the point has none (KairosDB REST).
    MissingTags,
    /// The name with its tags exceeds the target's limits (IRONdb).
    NameTooLong,
    /// No check identity from the point or the upstream (IRONdb).
    MissingCheck,
    /// A timestamp the format cannot write (before 1970 for IRONdb).
    TimestampOutOfRange,
}

impl Unrepresentable {
    /// Every reason, for registering counters up front.
    pub const ALL: &'static [Unrepresentable] = &[
        Unrepresentable::NonFiniteValue,
        Unrepresentable::Text,
        Unrepresentable::Histogram,
        Unrepresentable::Absent,
        Unrepresentable::InvalidName,
        Unrepresentable::LineTooLong,
        Unrepresentable::MissingTags,
        Unrepresentable::NameTooLong,
        Unrepresentable::MissingCheck,
        Unrepresentable::TimestampOutOfRange,
    ];

    /// The label used in metrics and logs (the `reason` of a drop).
    pub fn as_str(self) -> &'static str {
        match self {
            Unrepresentable::NonFiniteValue => "non_finite_value",
            Unrepresentable::Text => "unrepresentable_text",
            Unrepresentable::Histogram => "unrepresentable_histogram",
            Unrepresentable::Absent => "absent_value",
            Unrepresentable::InvalidName => "invalid_name",
            Unrepresentable::LineTooLong => "line_too_long",
            Unrepresentable::MissingTags => "missing_tags",
            Unrepresentable::NameTooLong => "name_too_long",
            Unrepresentable::MissingCheck => "missing_check",
            Unrepresentable::TimestampOutOfRange => "timestamp_out_of_range",
        }
    }
}

/// Points an encoder skipped, by reason.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Skipped {
    counts: [u64; Unrepresentable::ALL.len()],
}

impl Skipped {
    /// Counts one skipped point.
    pub fn add(&mut self, reason: Unrepresentable) {
        self.counts[reason as usize] += 1;
    }

    /// How many points were skipped for `reason`.
    pub fn count(&self, reason: Unrepresentable) -> u64 {
        self.counts[reason as usize]
    }

    /// Total skipped points.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Non-zero counts per reason.
    pub fn counts(&self) -> impl Iterator<Item = (Unrepresentable, u64)> + '_ {
        Unrepresentable::ALL
            .iter()
            .map(|reason| (*reason, self.counts[*reason as usize]))
            .filter(|(_, n)| *n > 0)
    }
}

/// Writes a chunk of points in one output format.
pub trait Encoder: Send {
    /// Appends the encoding of `points` to `out` as one unit (a run of
    /// lines, one pickle frame, ...). Points the format cannot carry are
    /// left out and counted in `skipped`. Returns how many were written.
    fn encode(
        &mut self,
        points: &mut dyn Iterator<Item = PointRef<'_>>,
        out: &mut Vec<u8>,
        skipped: &mut Skipped,
    ) -> usize;
}

/// Settings some encoders take.
#[derive(Debug, Clone)]
pub struct EncoderOptions {
    /// KairosDB telnet: write `putm` rather than `put`.
    pub telnet_putm: bool,
    /// KairosDB telnet: longest line written.
    pub max_line_bytes: usize,
    /// IRONdb FlatBuffer: write the current `CMLS` generation, not `CIML`.
    pub flatbuffer_cmls: bool,
    /// IRONdb: the check identity of points that carry none.
    pub default_source: Option<std::sync::Arc<crate::model::Source>>,
}

impl Default for EncoderOptions {
    fn default() -> Self {
        Self {
            telnet_putm: false,
            max_line_bytes: 1024,
            flatbuffer_cmls: false,
            default_source: None,
        }
    }
}

/// Builds the encoder for an output protocol, or `None` when the protocol
/// has no byte encoding of its own yet.
pub fn encoder_for(protocol: Protocol, options: &EncoderOptions) -> Option<Box<dyn Encoder>> {
    match protocol {
        Protocol::KairosdbTelnet => Some(Box::new(kairos_telnet::KairosTelnetEncoder {
            mode: if options.telnet_putm {
                kairos_telnet::TelnetMode::Putm
            } else {
                kairos_telnet::TelnetMode::Put
            },
            max_line: options.max_line_bytes,
        })),
        Protocol::KairosdbRest => Some(Box::new(kairos_json::KairosJsonEncoder)),
        Protocol::GraphitePlaintext => Some(Box::new(graphite_plain::GraphitePlainEncoder)),
        Protocol::GraphitePickle => Some(Box::new(graphite_pickle::GraphitePickleEncoder)),
        Protocol::IrondbRaw => Some(Box::new(irondb_tsv::IrondbTsvEncoder {
            default_source: options.default_source.clone(),
        })),
        Protocol::IrondbFlatbuffer => Some(Box::new(circonus_fb::CirconusFbEncoder::new(
            if options.flatbuffer_cmls {
                circonus_fb::Generation::Cmls
            } else {
                circonus_fb::Generation::Ciml
            },
            options.default_source.clone(),
        ))),
        _ => None,
    }
}

/// Settings some decoders take.
#[derive(Debug, Clone, Default)]
pub struct DecoderOptions {
    /// Size limits.
    pub limits: Limits,
    /// KairosDB telnet: the tag given to points without tags.
    pub default_tag: Option<(String, String)>,
}

/// Builds the stream decoder for an input protocol, or `None` when the
/// protocol is not a byte stream tsrelay can decode yet.
pub fn decoder_for(protocol: Protocol, options: &DecoderOptions) -> Option<Box<dyn StreamDecoder>> {
    let limits = &options.limits;
    match protocol {
        Protocol::KairosdbTelnet => {
            Some(Box::new(kairos_telnet::KairosTelnetDecoder::with_options(
                limits.max_line_bytes,
                kairos_telnet::TelnetOptions {
                    default_tag: options.default_tag.clone(),
                },
            )))
        }
        Protocol::GraphitePlaintext => Some(Box::new(graphite_plain::GraphitePlainDecoder::new(
            limits.max_line_bytes,
        ))),
        Protocol::GraphitePickle => Some(Box::new(graphite_pickle::GraphitePickleDecoder::new(
            limits.max_frame_bytes,
        ))),
        _ => None,
    }
}

/// Size limits a decoder enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest accepted line, without its `\n`.
    pub max_line_bytes: usize,
    /// Largest accepted length-prefixed frame payload.
    pub max_frame_bytes: usize,
}

/// Carbon's (Twisted's) `MAX_LENGTH` for a line.
pub const DEFAULT_MAX_LINE_BYTES: usize = 16_384;
/// Carbon's `PICKLE_RECEIVER_MAX_LENGTH`.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 1 << 20;

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
        }
    }
}

/// Test support for the decoders' `no_panic` property tests: drives a
/// [`StreamDecoder`] the way `input::tcp` does, over reads cut anywhere.
#[cfg(test)]
pub(crate) mod read_split {
    use proptest::sample::Index;

    use super::{FrameError, Reason, Rejects, Sample, StreamDecoder};
    use crate::model::{Batch, Timestamp};

    /// Everything a decoder produced from one stream, comparable across cuts.
    #[derive(Debug, PartialEq)]
    pub(crate) struct Decoded {
        /// `Debug` of each point with its TTL (so NaN values compare equal).
        pub(crate) points: Vec<String>,
        pub(crate) rejects: Vec<(Reason, u64)>,
        pub(crate) samples: Vec<Sample>,
        pub(crate) replies: Vec<u8>,
        /// The error that closed the stream; `decode_eof` is not called then.
        pub(crate) error: Option<FrameError>,
    }

    impl Decoded {
        /// Points plus rejects.
        pub(crate) fn records(&self) -> u64 {
            self.points.len() as u64 + self.rejects.iter().map(|(_, n)| n).sum::<u64>()
        }
    }

    /// Sorted cut offsets within `0..=len` from proptest indices.
    pub(crate) fn cut_points(len: usize, indices: &[Index]) -> Vec<usize> {
        let mut cuts: Vec<_> = indices.iter().map(|i| i.index(len + 1)).collect();
        cuts.sort_unstable();
        cuts
    }

    /// Feeds `input` in reads ending at each of the sorted `cuts`, keeping
    /// the unused bytes for the next read, then calls `decode_eof`.
    ///
    /// # Panics
    /// When the decoder reports using more bytes than it was given.
    pub(crate) fn decode_in_reads(
        decoder: &mut dyn StreamDecoder,
        input: &[u8],
        cuts: &[usize],
    ) -> Decoded {
        let at = Timestamp::from_millis(1_700_000_000_000);
        let (mut buffer, mut batch, mut rejects) = (Vec::new(), Batch::new(), Rejects::default());
        let (mut replies, mut error, mut start) = (Vec::new(), None, 0);
        for end in cuts.iter().copied().chain([input.len()]) {
            buffer.extend_from_slice(&input[start..end]);
            start = end;
            match decoder.decode(&buffer, at, &mut batch, &mut rejects) {
                Ok(used) => {
                    assert!(used <= buffer.len(), "used {used} of {}", buffer.len());
                    buffer.drain(..used);
                }
                Err(err) => {
                    error = Some(err);
                    break;
                }
            }
            replies.extend(decoder.take_reply().unwrap_or_default());
        }
        if error.is_none() {
            decoder.decode_eof(&buffer, &mut rejects);
        }
        Decoded {
            points: batch
                .iter()
                .map(|point| format!("{:?} ttl={:?}", point.to_point(), point.ttl()))
                .collect(),
            rejects: rejects.counts().collect(),
            samples: rejects.samples().to_vec(),
            replies,
            error,
        }
    }
}
