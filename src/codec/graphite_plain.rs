//! Graphite plaintext: `path value timestamp\n` (protocols.md section 1).
//!
//! Input follows carbon's receiver: fields split on runs of ASCII
//! whitespace, exactly three fields, Python `float()` numbers, `-1` (any
//! timestamp whose `int()` is −1) means now, NaN values dropped, `inf`/`nan`
//! timestamps rejected, `;tags` parsed by carbon's rules. Unlike carbon, a
//! bad line never costs the connection: invalid UTF-8, a non-finite
//! timestamp or an oversized line are rejected one line at a time.
//!
//! Output writes integer-second timestamps, values in their shortest
//! round-trip form, `\n` line ends and tags in carbon's normalised order.

use super::graphite_tags::{push_graphite_point, write_graphite_name};
use super::line::{Line, LineFramer};
use super::number::{parse_graphite_timestamp, parse_python_float};
use super::{Encoder, FrameError, Reason, Rejects, Skipped, StreamDecoder, Unrepresentable};
use crate::model::{Batch, PointRef, Timestamp, Value};

/// Parses one line (without its `\n`) and appends its point to `out`.
/// Returns `Ok(false)` for a blank line, which is skipped.
///
/// # Errors
/// The [`Reason`] the line was rejected for.
pub fn parse_line(line: &[u8], received_at: Timestamp, out: &mut Batch) -> Result<bool, Reason> {
    // Every separator is ASCII, so splitting bytes is splitting characters.
    let mut fields = line
        .split(|b| is_separator(*b))
        .filter(|field| !field.is_empty());
    let Some(name) = fields.next() else {
        return Ok(false);
    };
    let (Some(value), Some(timestamp), None) = (fields.next(), fields.next(), fields.next()) else {
        return Err(Reason::FieldCount);
    };
    // Carbon decodes the whole line; numbers that are not ASCII fail to
    // parse below, so validating the name is validating the line.
    let name = std::str::from_utf8(name).map_err(|_| Reason::InvalidUtf8)?;
    if !value.is_ascii() || !timestamp.is_ascii() {
        return Err(Reason::InvalidUtf8);
    }
    let value = parse_python_float(value).ok_or(Reason::BadValue)?;
    let timestamp = parse_graphite_timestamp(timestamp, received_at)?;
    if value.is_nan() {
        return Err(Reason::NanValue);
    }
    push_graphite_point(out, name, timestamp, Value::F64(value));
    Ok(true)
}

/// Python's `str.split()` separators within ASCII.
pub(crate) fn is_separator(byte: u8) -> bool {
    matches!(
        byte,
        b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | 0x1c..=0x1f
    )
}

/// Parses every line of a UDP datagram; the last line needs no `\n`.
pub fn parse_datagram(
    datagram: &[u8],
    max_line_bytes: usize,
    received_at: Timestamp,
    out: &mut Batch,
    rejects: &mut Rejects,
) {
    let mut decoder = GraphitePlainDecoder::new(max_line_bytes);
    let used = decoder.decode_lines(datagram, received_at, out, rejects);
    let rest = &datagram[used..];
    if !rest.is_empty() && decoder.framer.finish(|_| {}) {
        rejects.add(Reason::LineTooLong, &rest[..rest.len().min(64)]);
    } else if !rest.is_empty() {
        parse_into(rest, received_at, out, rejects);
    }
}

/// Writes one point as a plaintext line.
///
/// # Errors
/// The reason the point cannot be written as Graphite plaintext.
pub fn write_line(point: &PointRef<'_>, out: &mut Vec<u8>) -> Result<(), Unrepresentable> {
    let start = out.len();
    let result = write_line_inner(point, out);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

fn write_line_inner(point: &PointRef<'_>, out: &mut Vec<u8>) -> Result<(), Unrepresentable> {
    write_graphite_name(point, out)?;
    out.push(b' ');
    write_value_and_seconds(point, out)
}

/// `value seconds\n`: a plaintext line without its name, which is also
/// carbon's AMQP message body.
///
/// # Errors
/// For values Graphite cannot store (see [`write_value`]).
pub(crate) fn write_value_and_seconds(
    point: &PointRef<'_>,
    out: &mut Vec<u8>,
) -> Result<(), Unrepresentable> {
    write_value(point.value(), out)?;
    out.push(b' ');
    out.extend_from_slice(
        itoa::Buffer::new()
            .format(point.timestamp().as_secs_trunc())
            .as_bytes(),
    );
    out.push(b'\n');
    Ok(())
}

/// Writes a numeric value so that Python's `float()` reads back the same
/// double: integers exactly, doubles in their shortest round-trip form.
///
/// # Errors
/// For values Graphite cannot store: non-finite, text, histogram, absent.
pub fn write_value(value: &Value, out: &mut Vec<u8>) -> Result<(), Unrepresentable> {
    let mut ints = itoa::Buffer::new();
    let text = match *value {
        Value::F64(v) => return write_f64(v, out),
        Value::I32(v) => ints.format(v),
        Value::U32(v) => ints.format(v),
        Value::I64(v) => ints.format(v),
        Value::U64(v) => ints.format(v),
        Value::Text(_) => return Err(Unrepresentable::Text),
        Value::Histogram(_) => return Err(Unrepresentable::Histogram),
        Value::Absent(_) => return Err(Unrepresentable::Absent),
    };
    out.extend_from_slice(text.as_bytes());
    Ok(())
}

fn write_f64(value: f64, out: &mut Vec<u8>) -> Result<(), Unrepresentable> {
    if !value.is_finite() {
        return Err(Unrepresentable::NonFiniteValue);
    }
    // Whole numbers print without ".0", as carbon's relay writes them.
    if value.fract() == 0.0 && value.abs() < 1e15 {
        if value == 0.0 && value.is_sign_negative() {
            out.extend_from_slice(b"-0");
        } else {
            out.extend_from_slice(itoa::Buffer::new().format(value as i64).as_bytes());
        }
    } else {
        out.extend_from_slice(ryu::Buffer::new().format_finite(value).as_bytes());
    }
    Ok(())
}

/// Stream decoder for plaintext over TCP.
#[derive(Debug)]
pub struct GraphitePlainDecoder {
    framer: LineFramer,
}

impl GraphitePlainDecoder {
    /// A decoder accepting lines of at most `max_line_bytes`.
    pub fn new(max_line_bytes: usize) -> Self {
        Self {
            framer: LineFramer::new(max_line_bytes),
        }
    }

    fn decode_lines(
        &mut self,
        buf: &[u8],
        received_at: Timestamp,
        out: &mut Batch,
        rejects: &mut Rejects,
    ) -> usize {
        self.framer.frame(buf, |line| match line {
            Line::Complete(bytes) => parse_into(bytes, received_at, out, rejects),
            Line::TooLong { len } => {
                rejects.add_with_detail(Reason::LineTooLong, &[], || format!("{len} bytes"))
            }
        })
    }
}

fn parse_into(line: &[u8], received_at: Timestamp, out: &mut Batch, rejects: &mut Rejects) {
    if let Err(reason) = parse_line(line, received_at, out) {
        rejects.add(reason, line);
    }
}

impl StreamDecoder for GraphitePlainDecoder {
    fn decode(
        &mut self,
        buf: &[u8],
        received_at: Timestamp,
        out: &mut Batch,
        rejects: &mut Rejects,
    ) -> Result<usize, FrameError> {
        Ok(self.decode_lines(buf, received_at, out, rejects))
    }

    fn decode_eof(&mut self, rest: &[u8], rejects: &mut Rejects) {
        let was_discarding = self.framer.finish(|line| {
            if let Line::TooLong { len } = line {
                rejects.add_with_detail(Reason::LineTooLong, &[], || format!("{len} bytes"));
            }
        });
        if !was_discarding && !rest.iter().all(u8::is_ascii_whitespace) {
            rejects.add(Reason::Truncated, rest);
        }
    }
}

/// Encoder for plaintext upstreams.
#[derive(Debug, Default, Clone, Copy)]
pub struct GraphitePlainEncoder;

impl Encoder for GraphitePlainEncoder {
    fn encode(
        &mut self,
        points: &mut dyn Iterator<Item = PointRef<'_>>,
        out: &mut Vec<u8>,
        skipped: &mut Skipped,
    ) -> usize {
        let mut written = 0;
        for point in points {
            match write_line(&point, out) {
                Ok(()) => written += 1,
                Err(reason) => skipped.add(reason),
            }
        }
        written
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::model::Point;

    const NOW: Timestamp = Timestamp::from_millis(1_800_000_000_000);

    fn decode(input: &[u8]) -> (Vec<Point>, Rejects) {
        let mut decoder = GraphitePlainDecoder::new(16_384);
        let mut batch = Batch::new();
        let mut rejects = Rejects::default();
        let used = decoder
            .decode(input, NOW, &mut batch, &mut rejects)
            .expect("line framing never fails");
        decoder.decode_eof(&input[used..], &mut rejects);
        (batch.to_points(), rejects)
    }

    fn encode(points: &[Point]) -> (String, Skipped) {
        let batch: Batch = points.iter().cloned().collect();
        let mut out = Vec::new();
        let mut skipped = Skipped::default();
        GraphitePlainEncoder.encode(&mut batch.iter(), &mut out, &mut skipped);
        (String::from_utf8(out).expect("utf-8"), skipped)
    }

    #[test]
    fn carbon_examples_from_protocols_md_1_9() {
        let (points, rejects) = decode(
            b"servers.web01.load 0.42 1700000000\n\
              a.b\t1e3\t1700000000.9\r\n\
              a.b 5 -1\n\
              a.b nan 1700000000\n\
              a.b 5 N\na.b 5\na.b 1 2 3\n\
              disk.used;rack=a1;dc=dc1 9 1700000000\n\
              a.b 1 inf\n\
              after.inf 2 1700000000\n",
        );
        let got: Vec<_> = points
            .iter()
            .map(|p| {
                (
                    p.name.as_str(),
                    p.tags.len(),
                    p.timestamp.as_millis(),
                    p.value.as_f64(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("servers.web01.load", 0, 1_700_000_000_000, Some(0.42)),
                ("a.b", 0, 1_700_000_000_900, Some(1000.0)),
                ("a.b", 0, NOW.as_millis(), Some(5.0)),
                ("disk.used", 2, 1_700_000_000_000, Some(9.0)),
                ("after.inf", 0, 1_700_000_000_000, Some(2.0)),
            ]
        );
        assert_eq!(rejects.count(Reason::NanValue), 1);
        assert_eq!(rejects.count(Reason::BadTimestamp), 1);
        assert_eq!(rejects.count(Reason::FieldCount), 2);
        assert_eq!(rejects.count(Reason::NonFiniteTimestamp), 1);
        assert_eq!(rejects.total(), 5);
    }

    #[test]
    fn bad_lines_are_rejected_one_at_a_time() {
        let mut input = b"ok.1 1 1700000000\n".to_vec();
        input.extend_from_slice(b"bad\xff.utf8 1 1700000000\n");
        input.extend_from_slice(b"a.b 1 1700000000\rb.c 2 1700000000\n");
        input.extend_from_slice(b"v.bad 1,5 1700000000\n");
        input.extend_from_slice(&vec![b'x'; 20_000]);
        input.extend_from_slice(b" 1 1700000000\n\n   \nok.2 2 1700000000\npartial 1");
        let (points, rejects) = decode(&input);
        let names: Vec<_> = points.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, vec!["ok.1", "ok.2"]);
        assert_eq!(rejects.count(Reason::InvalidUtf8), 1);
        assert_eq!(rejects.count(Reason::FieldCount), 1);
        assert_eq!(rejects.count(Reason::BadValue), 1);
        assert_eq!(rejects.count(Reason::LineTooLong), 1);
        assert_eq!(rejects.count(Reason::Truncated), 1);
        assert_eq!(rejects.samples()[0].reason, Reason::InvalidUtf8);
    }

    #[test]
    fn udp_datagrams_need_no_final_newline() {
        let mut batch = Batch::new();
        let mut rejects = Rejects::default();
        parse_datagram(
            b"a 1 1700000000\nb 2 1700000000",
            100,
            NOW,
            &mut batch,
            &mut rejects,
        );
        assert_eq!(batch.len(), 2);
        assert_eq!(rejects.total(), 0);
    }

    #[test]
    fn values_and_timestamps_are_written_like_carbon_reads_them() {
        let at = Timestamp::from_millis(1_700_000_000_700);
        let (text, skipped) = encode(&[
            Point::new("r.a", at, Value::F64(1.0)),
            Point::new("r.b", at, Value::F64(2.5)),
            Point::new("r.d", at, Value::F64(1e20)),
            Point::new("r.e", at, Value::F64(-0.0)),
            Point::new("r.tiny", at, Value::F64(1e-11)),
            Point::new("r.u64", at, Value::U64(u64::MAX)),
            Point::new("r.inf", at, Value::F64(f64::INFINITY)),
            Point::new("r.text", at, Value::Text("x".into())),
            Point::new("r.tag", at, Value::I32(3))
                .with_tag("z", "1")
                .with_tag("a", "2"),
        ]);
        assert_eq!(
            text,
            "r.a 1 1700000000\nr.b 2.5 1700000000\nr.d 1e20 1700000000\nr.e -0 1700000000\n\
             r.tiny 1e-11 1700000000\nr.u64 18446744073709551615 1700000000\n\
             r.tag;a=2;z=1 3 1700000000\n"
        );
        assert_eq!(skipped.count(Unrepresentable::NonFiniteValue), 1);
        assert_eq!(skipped.count(Unrepresentable::Text), 1);
    }

    fn arb_name() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9_.\\-]{1,40}".prop_filter("carbon strips a leading ~", |s| !s.starts_with('~'))
    }

    fn arb_tags() -> impl Strategy<Value = Vec<(String, String)>> {
        proptest::collection::btree_map("[a-z][a-z0-9_\\-]{0,8}", "[a-zA-Z0-9_.:\\-]{1,12}", 0..4)
            .prop_map(|tags| tags.into_iter().filter(|(k, _)| k != "name").collect())
    }

    proptest! {
        #[test]
        fn encode_then_decode_round_trips(
            name in arb_name(),
            tags in arb_tags(),
            secs in -1_000_000_000i64..4_000_000_000,
            value in proptest::num::f64::NORMAL | proptest::num::f64::SUBNORMAL | proptest::num::f64::ZERO,
        ) {
            prop_assume!(!(-1..=-1).contains(&secs));
            let mut point = Point::new(name, Timestamp::from_secs(secs), Value::F64(value));
            point.tags = tags;
            let (text, skipped) = encode(std::slice::from_ref(&point));
            prop_assert_eq!(skipped.total(), 0);
            let (decoded, rejects) = decode(text.as_bytes());
            prop_assert_eq!(rejects.total(), 0);
            prop_assert_eq!(decoded, vec![point]);
        }

        #[test]
        fn arbitrary_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..512)) {
            let (points, rejects) = decode(&input);
            let lines = input.iter().filter(|b| **b == b'\n').count() as u64;
            prop_assert!(points.len() as u64 + rejects.total() <= lines + 1);
        }
    }
}

#[cfg(test)]
mod no_panic {
    use proptest::prelude::*;
    use proptest::sample::Index;

    use super::*;
    use crate::codec::read_split::{cut_points, decode_in_reads};

    /// Mostly arbitrary bytes, with enough separators to make lines.
    fn arb_stream() -> impl Strategy<Value = Vec<u8>> {
        let byte =
            prop_oneof![6 => any::<u8>(), 1 => Just(b'\n'), 1 => Just(b' '), 1 => Just(b'1')];
        proptest::collection::vec(byte, 0..512)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_reads_never_panic_and_cuts_change_nothing(
            input in arb_stream(),
            cuts in proptest::collection::vec(any::<Index>(), 0..4),
        ) {
            // A small limit, so that oversized lines cross read boundaries.
            let decode = |cuts: &[usize]| {
                decode_in_reads(&mut GraphitePlainDecoder::new(64), &input, cuts)
            };
            let whole = decode(&[]);
            prop_assert_eq!(&decode(&cut_points(input.len(), &cuts)), &whole);
            let lines = input.iter().filter(|b| **b == b'\n').count() as u64;
            prop_assert!(whole.records() <= lines + 1);
        }
    }
}
