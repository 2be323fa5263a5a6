//! Graphite pickle: a 4-byte big-endian length, then a pickled list of
//! `(path, (timestamp, value))` (protocols.md section 2).
//!
//! Input accepts what Python 3 carbon accepts from real senders: pickle
//! protocols 0 to 5, Python 2 byte-string names, list- or tuple-shaped
//! items, numeric strings. A bad item is counted and skipped while the rest
//! of the frame is kept; an unreadable or unsafe frame is counted as one
//! reject and the connection goes on; a frame over the limit loses the
//! framing and closes the connection. Reading uses the restricted machine in
//! `pickle_vm`, which never imports or calls anything.
//!
//! Output is what carbon's relay sends: protocol 2, names as unicode, float
//! timestamps and values, one frame per chunk, written with `serde-pickle`.

use std::borrow::Cow;

use serde_pickle::SerOptions;

use super::graphite_tags::{is_line_safe, push_graphite_point, write_graphite_name};
use super::number::{
    now_if_minus_one, parse_graphite_timestamp, parse_python_float, seconds_to_millis,
};
use super::pickle_vm::{unpickle, PVal, Store};
use super::{Encoder, FrameError, Reason, Rejects, Skipped, StreamDecoder, Unrepresentable};
use crate::model::{Batch, PointRef, Timestamp, Value};

/// Length of the frame header.
const HEADER_BYTES: usize = 4;

/// Decodes one pickle payload (without its length header), appending every
/// valid item to `out` and counting the others in `rejects`.
pub fn parse_payload(
    payload: &[u8],
    received_at: Timestamp,
    out: &mut Batch,
    rejects: &mut Rejects,
) {
    let (top, store) = match unpickle(payload) {
        Ok(parsed) => parsed,
        Err(err) => {
            let reason = if err.is_unsafe() {
                Reason::UnsafePickle
            } else {
                Reason::BadPickle
            };
            rejects.add_with_detail(reason, &[], || err.to_string());
            return;
        }
    };
    let Some(items) = store.items(&top) else {
        // Carbon iterates a dict's keys and fails each one; a scalar is unusable.
        let reason = if top == PVal::Opaque {
            Reason::BadItem
        } else {
            Reason::BadPickle
        };
        rejects.add_with_detail(reason, &[], || {
            format!("top-level value is {top:?}, not a list")
        });
        return;
    };
    for item in items {
        if let Err(reason) = push_item(item, &store, received_at, out) {
            rejects.add_with_detail(reason, &[], || format!("{item:?}"));
        }
    }
}

fn push_item(
    item: &PVal<'_>,
    store: &Store<'_>,
    received_at: Timestamp,
    out: &mut Batch,
) -> Result<(), Reason> {
    let [name, datapoint] = store.items(item).ok_or(Reason::BadItem)? else {
        return Err(Reason::BadItem);
    };
    let [timestamp, value] = store.items(datapoint).ok_or(Reason::BadItem)? else {
        return Err(Reason::BadItem);
    };
    let name: &str = match name {
        PVal::Str(text) => text,
        // A Python 3 sender's bytes: carbon would drop the connection; a
        // UTF-8 name is what the sender meant.
        PVal::Bytes(bytes) => std::str::from_utf8(bytes).map_err(|_| Reason::BadItem)?,
        _ => return Err(Reason::BadItem),
    };
    if name.is_empty() {
        return Err(Reason::BadItem);
    }
    let timestamp = pickle_timestamp(timestamp, received_at)?;
    let value = pickle_number(value).ok_or(Reason::BadValue)?;
    if value.is_nan() {
        return Err(Reason::NanValue);
    }
    push_graphite_point(out, name, timestamp, Value::F64(value));
    Ok(())
}

fn pickle_timestamp(value: &PVal<'_>, received_at: Timestamp) -> Result<Timestamp, Reason> {
    match value {
        PVal::Int(secs) => {
            let ms = secs.checked_mul(1000).ok_or(Reason::BadTimestamp)?;
            Ok(now_if_minus_one(ms, received_at))
        }
        PVal::Str(text) => parse_graphite_timestamp(text.trim().as_bytes(), received_at),
        PVal::Bytes(bytes) => parse_graphite_timestamp(bytes.trim_ascii(), received_at),
        other => {
            let secs = pickle_number(other).ok_or(Reason::BadTimestamp)?;
            Ok(now_if_minus_one(seconds_to_millis(secs)?, received_at))
        }
    }
}

/// Python's `float()` of a pickled value.
fn pickle_number(value: &PVal<'_>) -> Option<f64> {
    match value {
        PVal::Int(v) => Some(*v as f64),
        PVal::BigInt(v) | PVal::Float(v) => Some(*v),
        PVal::Bool(v) => Some(f64::from(u8::from(*v))),
        PVal::Str(text) => parse_python_float(text.as_bytes()),
        PVal::Bytes(bytes) => parse_python_float(bytes),
        _ => None,
    }
}

/// Length-prefixed pickle frames over a stream.
#[derive(Debug)]
pub struct GraphitePickleDecoder {
    max_frame_bytes: usize,
}

impl GraphitePickleDecoder {
    /// A decoder refusing frames longer than `max_frame_bytes`.
    pub fn new(max_frame_bytes: usize) -> Self {
        Self { max_frame_bytes }
    }
}

impl StreamDecoder for GraphitePickleDecoder {
    fn decode(
        &mut self,
        buf: &[u8],
        received_at: Timestamp,
        out: &mut Batch,
        rejects: &mut Rejects,
    ) -> Result<usize, FrameError> {
        let mut used = 0;
        while let Some(header) = buf.get(used..used + HEADER_BYTES) {
            let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
            if len > self.max_frame_bytes {
                return Err(FrameError::FrameTooLarge {
                    len,
                    max: self.max_frame_bytes,
                });
            }
            let body_start = used + HEADER_BYTES;
            let Some(payload) = buf.get(body_start..body_start + len) else {
                break;
            };
            parse_payload(payload, received_at, out, rejects);
            used = body_start + len;
        }
        Ok(used)
    }
}

/// Encoder for pickle upstreams: one protocol-2 frame per chunk.
#[derive(Debug, Default, Clone, Copy)]
pub struct GraphitePickleEncoder;

impl Encoder for GraphitePickleEncoder {
    fn encode(
        &mut self,
        points: &mut dyn Iterator<Item = PointRef<'_>>,
        out: &mut Vec<u8>,
        skipped: &mut Skipped,
    ) -> usize {
        let mut items: Vec<(Cow<'_, str>, (f64, f64))> = Vec::with_capacity(points.size_hint().0);
        for point in points {
            match pickle_item(&point) {
                Ok(item) => items.push(item),
                Err(reason) => skipped.add(reason),
            }
        }
        if items.is_empty() {
            return 0;
        }
        let header_at = out.len();
        out.extend_from_slice(&[0; HEADER_BYTES]);
        // Writing into a Vec cannot fail and every item is a plain tuple.
        if serde_pickle::to_writer(&mut *out, &items, SerOptions::new().proto_v2()).is_err() {
            out.truncate(header_at);
            for _ in &items {
                skipped.add(Unrepresentable::InvalidName);
            }
            return 0;
        }
        let len = u32::try_from(out.len() - header_at - HEADER_BYTES).unwrap_or(u32::MAX);
        out[header_at..header_at + HEADER_BYTES].copy_from_slice(&len.to_be_bytes());
        items.len()
    }
}

fn pickle_item<'a>(point: &PointRef<'a>) -> Result<(Cow<'a, str>, (f64, f64)), Unrepresentable> {
    let value = match point.value() {
        Value::Text(_) => return Err(Unrepresentable::Text),
        Value::Histogram(_) => return Err(Unrepresentable::Histogram),
        Value::Absent(_) => return Err(Unrepresentable::Absent),
        other => other.as_f64().unwrap_or(f64::NAN),
    };
    if !value.is_finite() {
        return Err(Unrepresentable::NonFiniteValue);
    }
    let name = if !point.has_tags() && !point.name().is_empty() && is_line_safe(point.name()) {
        Cow::Borrowed(point.name())
    } else {
        let mut text = Vec::with_capacity(point.name().len() + 32);
        write_graphite_name(point, &mut text)?;
        Cow::Owned(String::from_utf8(text).map_err(|_| Unrepresentable::InvalidName)?)
    };
    Ok((name, (point.timestamp().as_secs_f64(), value)))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::model::Point;

    const NOW: Timestamp = Timestamp::from_millis(1_800_000_000_000);

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut out = (payload.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(payload);
        out
    }

    fn decode(stream: &[u8]) -> (Result<usize, FrameError>, Vec<Point>, Rejects) {
        let mut decoder = GraphitePickleDecoder::new(1 << 20);
        let mut batch = Batch::new();
        let mut rejects = Rejects::default();
        let used = decoder.decode(stream, NOW, &mut batch, &mut rejects);
        (used, batch.to_points(), rejects)
    }

    fn summary(points: &[Point]) -> Vec<(String, i64, f64)> {
        points
            .iter()
            .map(|p| {
                (
                    p.name.clone(),
                    p.timestamp.as_millis(),
                    p.value.as_f64().unwrap_or(f64::NAN),
                )
            })
            .collect()
    }

    #[test]
    fn protocols_md_2_6_examples() {
        // Example 1: Python 3, protocol 2.
        let ex1 = b"\x00\x00\x00\x25\x80\x02\x5d\x71\x00\x58\x03\x00\x00\x00\x61\x2e\x62\x71\x01\x4a\x00\xf1\x53\x65\x47\x3f\xf8\x00\x00\x00\x00\x00\x00\x86\x71\x02\x86\x71\x03\x61\x2e";
        // Example 2: Python 2 style, byte-string name, APPENDS.
        let ex2 = frame(b"\x80\x02\x5d\x28\x55\x03\x61\x2e\x62\x4a\x00\xf1\x53\x65\x47\x3f\xf8\x00\x00\x00\x00\x00\x00\x86\x86\x65\x2e");
        // Example 3: Python 2 protocol 0 text pickle.
        let ex3 = frame(b"(lp0\n(S'a.b'\np1\n(I1700000000\nF1.5\ntp2\ntp3\na.");
        // Example 4: numeric strings.
        let ex4 = frame(b"\x80\x02]q\x00X\x03\x00\x00\x00a.bq\x01X\n\x00\x00\x001700000000q\x02X\x03\x00\x00\x007.5q\x03\x86q\x04\x86q\x05a.");
        // Example 5: a bad item beside a good one.
        let ex5 = frame(b"\x80\x02](X\x03\x00\x00\x00badK\x01\x86X\x04\x00\x00\x00goodJ\x00\xf1\x53\x65G@#\x00\x00\x00\x00\x00\x00\x86\x86e.");
        for (stream, expected) in [
            (
                ex1.to_vec(),
                vec![("a.b".to_owned(), 1_700_000_000_000, 1.5)],
            ),
            (ex2, vec![("a.b".to_owned(), 1_700_000_000_000, 1.5)]),
            (ex3, vec![("a.b".to_owned(), 1_700_000_000_000, 1.5)]),
            (ex4, vec![("a.b".to_owned(), 1_700_000_000_000, 7.5)]),
        ] {
            let (used, points, rejects) = decode(&stream);
            assert_eq!(used, Ok(stream.len()));
            assert_eq!(summary(&points), expected);
            assert_eq!(rejects.total(), 0);
        }
        let (_, points, rejects) = decode(&ex5);
        assert_eq!(
            summary(&points),
            vec![("good".to_owned(), 1_700_000_000_000, 9.5)]
        );
        assert_eq!(rejects.count(Reason::BadItem), 1);
        assert_eq!(rejects.total(), 1);
    }

    #[test]
    fn frame_limit_is_inclusive_and_fatal_above() {
        let mut decoder = GraphitePickleDecoder::new(1_048_576);
        let mut batch = Batch::new();
        let mut rejects = Rejects::default();
        let at_limit = [0x00, 0x10, 0x00, 0x00];
        assert_eq!(
            decoder.decode(&at_limit, NOW, &mut batch, &mut rejects),
            Ok(0)
        );
        let over = [0x00, 0x10, 0x00, 0x01];
        assert_eq!(
            decoder.decode(&over, NOW, &mut batch, &mut rejects),
            Err(FrameError::FrameTooLarge {
                len: 1_048_577,
                max: 1_048_576
            })
        );
    }

    #[test]
    fn bad_frames_are_counted_and_the_stream_goes_on() {
        let mut stream = frame(b"\x80\x02cdecimal\nDecimal\n.");
        stream.extend(frame(b"garbage"));
        stream.extend(frame(b"K\x05."));
        stream.extend(frame(
            b"(lp0\n(S'ok'\n(I-1\nI3\ntp1\ntp2\na(S'nan'\n(I1\nFnan\nttp3\na.",
        ));
        stream.extend_from_slice(&[0, 0, 0, 9, b'(']);
        let (used, points, rejects) = decode(&stream);
        assert_eq!(used, Ok(stream.len() - 5));
        assert_eq!(
            summary(&points),
            vec![("ok".to_owned(), NOW.as_millis(), 3.0)]
        );
        assert_eq!(rejects.count(Reason::UnsafePickle), 1);
        assert_eq!(rejects.count(Reason::BadPickle), 2);
        assert_eq!(rejects.count(Reason::NanValue), 1);
    }

    #[test]
    fn encoder_writes_carbon_relay_frames() {
        let batch: Batch = [Point::new(
            "a.b",
            Timestamp::from_millis(1_700_000_000_000),
            Value::F64(1.5),
        )]
        .into_iter()
        .collect();
        let mut out = Vec::new();
        let mut skipped = Skipped::default();
        let written = GraphitePickleEncoder.encode(&mut batch.iter(), &mut out, &mut skipped);
        assert_eq!(written, 1);
        let len = u32::from_be_bytes([out[0], out[1], out[2], out[3]]) as usize;
        assert_eq!(len, out.len() - 4);
        assert_eq!(&out[4..6], b"\x80\x02", "protocol 2");
        assert!(
            out.windows(4).any(|w| w == b"X\x03\x00\x00"),
            "unicode name"
        );
        let (used, points, _) = decode(&out);
        assert_eq!(used, Ok(out.len()));
        assert_eq!(
            summary(&points),
            vec![("a.b".to_owned(), 1_700_000_000_000, 1.5)]
        );
    }

    proptest! {
        #[test]
        fn encode_then_decode_round_trips(
            names in proptest::collection::vec("[a-z][a-z0-9._\\-]{0,30}", 1..50),
            secs in 0i64..4_000_000_000,
            millis in 0i64..1000,
            value in proptest::num::f64::NORMAL | proptest::num::f64::ZERO,
        ) {
            let at = Timestamp::from_millis(secs * 1000 + millis);
            let batch: Batch = names.iter().map(|name| Point::new(name.clone(), at, Value::F64(value))).collect();
            let mut out = Vec::new();
            let mut skipped = Skipped::default();
            GraphitePickleEncoder.encode(&mut batch.iter(), &mut out, &mut skipped);
            let (used, points, rejects) = decode(&out);
            prop_assert_eq!(used, Ok(out.len()));
            prop_assert_eq!(rejects.total(), 0);
            prop_assert_eq!(points, batch.to_points());
        }

        #[test]
        fn arbitrary_payloads_never_panic(payload in proptest::collection::vec(any::<u8>(), 0..256)) {
            let (used, _, rejects) = decode(&frame(&payload));
            prop_assert_eq!(used, Ok(payload.len() + 4));
            prop_assert!(rejects.total() <= payload.len() as u64 + 1);
        }
    }
}

#[cfg(test)]
mod no_panic {
    use proptest::prelude::*;
    use proptest::sample::Index;

    use super::*;
    use crate::codec::read_split::{cut_points, decode_in_reads, Decoded};

    /// A small frame limit, so that both sides of it are reachable.
    const MAX_FRAME: usize = 256;

    fn decode(input: &[u8], cuts: &[usize]) -> Decoded {
        decode_in_reads(&mut GraphitePickleDecoder::new(MAX_FRAME), input, cuts)
    }

    fn frames(payloads: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for payload in payloads {
            out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            out.extend_from_slice(payload);
        }
        out
    }

    /// Opcodes that push one value, with their arguments.
    const PUSHES: &[&[u8]] = &[
        b"N",
        b"\x88",
        b"K\x01",
        b"]",
        b")",
        b"}",
        b"I-1\n",
        b"F1.5\n",
        b"U\x01x",
        b"C\x01y",
        b"S'a'\n",
        b"J\x00\xf1Se",
        b"G?\xf8\x00\x00\x00\x00\x00\x00",
        b"X\x03\x00\x00\x00a.b",
    ];
    /// MARK and the opcodes that consume stack items or marks.
    const BUILDERS: &[&[u8]] = &[
        b"(", b"(", b"\x85", b"\x86", b"\x87", b"t", b"l", b"d", b"e", b"a", b"s", b"u", b"1",
        b"0", b"2",
    ];
    /// Memo, protocol and STOP opcodes.
    const OTHERS: &[&[u8]] = &[
        b"q\x00",
        b"h\x00",
        b"p0\n",
        b"g0\n",
        b"\x94",
        b"\x80\x02",
        b".",
    ];

    /// Runs of opcodes with their arguments, weighted so that marks, values
    /// and the opcodes consuming them meet often: the pickle machine gets
    /// far past the first byte.
    fn arb_pickle() -> impl Strategy<Value = Vec<u8>> {
        let opcode = prop_oneof![
            4 => prop::sample::select(PUSHES),
            4 => prop::sample::select(BUILDERS),
            1 => prop::sample::select(OTHERS),
        ];
        proptest::collection::vec(opcode, 0..48).prop_map(|opcodes| opcodes.concat())
    }

    fn arb_cuts() -> impl Strategy<Value = Vec<Index>> {
        proptest::collection::vec(any::<Index>(), 0..4)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_bytes_in_arbitrary_reads_never_panic(
            input in proptest::collection::vec(any::<u8>(), 0..512),
            cuts in arb_cuts(),
        ) {
            let whole = decode(&input, &[]);
            prop_assert_eq!(&decode(&input, &cut_points(input.len(), &cuts)), &whole);
        }

        #[test]
        fn framed_arbitrary_payloads_never_panic(
            payloads in proptest::collection::vec(
                proptest::collection::vec(any::<u8>(), 0..=MAX_FRAME + 8),
                0..4,
            ),
            cuts in arb_cuts(),
        ) {
            let input = frames(&payloads);
            let whole = decode(&input, &[]);
            prop_assert_eq!(&decode(&input, &cut_points(input.len(), &cuts)), &whole);
            let fatal = payloads.iter().any(|payload| payload.len() > MAX_FRAME);
            prop_assert_eq!(whole.error.is_some(), fatal);
        }

        #[test]
        fn pickle_shaped_payloads_never_panic(
            payloads in proptest::collection::vec(arb_pickle(), 1..4),
            cuts in arb_cuts(),
        ) {
            let input = frames(&payloads);
            let whole = decode(&input, &[]);
            prop_assert_eq!(&decode(&input, &cut_points(input.len(), &cuts)), &whole);
        }
    }

    #[test]
    fn a_tuple_opcode_never_takes_items_below_a_mark() {
        // TUPLE3 across a MARK, then TUPLE: CPython refuses ("unexpected MARK
        // found"); this once panicked in `pop_mark` with the mark past the end.
        let input = frames(&[b"K\x01K\x02(K\x03\x87t.".to_vec()]);
        let decoded = decode(&input, &[]);
        assert!(decoded.points.is_empty());
        assert_eq!(decoded.rejects, vec![(Reason::BadPickle, 1)]);
    }
}
