//! Harnesses shared by the fuzz targets, so that a target is one call.
//!
//! Two shapes of decoder exist in tsrelay, and each has one harness:
//!
//! * [`stream_decoder`] drives a [`StreamDecoder`] from `decoder_for` the way
//!   `input::tcp` does (decode, drop the bytes used, append the next read,
//!   `decode_eof` at the end), over the input split into two reads, and
//!   checks that the split changes nothing;
//! * [`body_parser`] runs a whole-body parser (`fn(&[u8], &mut Batch, &mut
//!   Rejects)`) once.
//!
//! Both then check the [`Batch`] invariants every decoder must keep. A
//! failed `assert!` is a crash to libFuzzer, like a panic in the decoder.

use tsrelay::codec::{
    decoder_for, DecoderOptions, FrameError, Limits, Protocol, Reason, Rejects, Sample,
    StreamDecoder,
};
use tsrelay::model::{Batch, Timestamp};

/// Limits small enough that "line too long" and "frame too large" are
/// reachable within the `-max_len` that `.ci/fuzz` passes (8192).
pub const FUZZ_LIMITS: Limits = Limits {
    max_line_bytes: 256,
    max_frame_bytes: 4096,
};

/// The arrival time passed to decoders; fixed, so runs are comparable.
pub const RECEIVED_AT: Timestamp = Timestamp::from_millis(1_700_000_000_000);

/// How a protocol delimits records, for the invariants that depend on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// `\n`-terminated lines: every point or reject needs its own `\n`,
    /// except one for the end of the stream.
    Lines,
    /// Length-prefixed frames holding any number of records.
    LengthPrefixed,
}

/// Fuzzes the stream decoder of `protocol`. The first byte of `data` picks
/// where the rest is split into two reads (0 = all in the second read,
/// 255 = all in the first).
///
/// # Panics
/// When the decoder panics or breaks an invariant: it uses more bytes than
/// it was given, the split changes the points, rejects, replies or error,
/// a line protocol yields more records than lines, or the batch is
/// inconsistent.
pub fn stream_decoder(protocol: Protocol, framing: Framing, data: &[u8]) {
    let Some((&split_byte, stream)) = data.split_first() else {
        return;
    };
    let split_at = stream.len() * usize::from(split_byte) / 255;
    let (first, second) = stream.split_at(split_at);
    let whole = run_stream(protocol, &[stream]);
    let in_two_reads = run_stream(protocol, &[first, second]);
    assert_eq!(
        whole, in_two_reads,
        "splitting the input at {split_at} changed the result"
    );
    if framing == Framing::Lines {
        let newlines = stream.iter().filter(|b| **b == b'\n').count();
        let records = whole.points.len() as u64 + whole.rejects.iter().map(|(_, n)| n).sum::<u64>();
        assert!(
            records <= newlines as u64 + 1,
            "{records} records from {newlines} lines"
        );
    }
}

/// Fuzzes a whole-body parser such as `irondb_tsv::parse_body`; whatever
/// it returns is handed back for target-specific checks.
///
/// # Panics
/// When the parser panics or leaves an inconsistent batch.
pub fn body_parser<R>(data: &[u8], parse: impl FnOnce(&[u8], &mut Batch, &mut Rejects) -> R) -> R {
    let mut batch = Batch::new();
    let mut rejects = Rejects::default();
    let returned = parse(data, &mut batch, &mut rejects);
    check_batch(&batch);
    check_rejects(&rejects);
    returned
}

/// Checks what every decoder must leave behind: each point readable, its
/// tags sorted by key with no key twice (the model's canonical form).
///
/// # Panics
/// When an invariant does not hold.
pub fn check_batch(batch: &Batch) {
    assert_eq!(batch.iter().len(), batch.len());
    for point in batch.iter() {
        let tags: Vec<_> = point.tags().collect();
        assert!(
            tags.windows(2).all(|pair| pair[0].0 < pair[1].0),
            "tags not canonical: {tags:?}"
        );
        let owned = point.to_point();
        assert_eq!(owned.name, point.name());
    }
}

/// Checks that the reject counts and samples agree.
///
/// # Panics
/// When a sample's reason has no count.
pub fn check_rejects(rejects: &Rejects) {
    let counted: u64 = rejects.counts().map(|(_, n)| n).sum();
    assert_eq!(counted, rejects.total());
    for sample in rejects.samples() {
        assert!(rejects.count(sample.reason) > 0, "{sample:?} not counted");
    }
}

/// Everything observable from one decoded stream, comparable across splits.
#[derive(Debug, PartialEq, Eq)]
struct StreamResult {
    /// `Debug` of each point and its TTL (`Debug` compares NaN values equal).
    points: Vec<String>,
    rejects: Vec<(Reason, u64)>,
    samples: Vec<Sample>,
    replies: Vec<u8>,
    /// The error that would close the connection; `decode_eof` is not called then.
    error: Option<FrameError>,
}

fn run_stream(protocol: Protocol, reads: &[&[u8]]) -> StreamResult {
    let options = DecoderOptions {
        limits: FUZZ_LIMITS,
        // KairosDB's `add=tag`, so that the default-tag path is exercised too.
        default_tag: Some(("add".to_owned(), "tag".to_owned())),
    };
    let mut decoder: Box<dyn StreamDecoder> =
        decoder_for(protocol, &options).expect("the protocol has a stream decoder");
    let mut buffer = Vec::new();
    let mut batch = Batch::new();
    let mut rejects = Rejects::default();
    let mut replies = Vec::new();
    let mut error = None;
    for read in reads {
        buffer.extend_from_slice(read);
        match decoder.decode(&buffer, RECEIVED_AT, &mut batch, &mut rejects) {
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
    check_batch(&batch);
    check_rejects(&rejects);
    StreamResult {
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
