//! IRONdb raw TSV submission to `/raw`: `M` and `H1`/`H2` records (protocols.md 6.1).
//!
//! ```text
//! M  <TAB> SECS.MMM <TAB> TARGET`MODULE`c_ACCOUNT_BUNDLE::MODULE`uuid <TAB> NAME <TAB> TYPE <TAB> VALUE
//! H1 <TAB> SECS.MMM <TAB> (same check field)                          <TAB> NAME <TAB> BASE64
//! ```
//!
//! Records are separated by `\n` (a trailing `\r` is dropped) and fields by
//! TAB. `TYPE` is one of `i I l L n s` (int32, uint32, int64, uint64,
//! double, string); `[[null]]` is "no value"; `H2` carries a cumulative
//! histogram. NAME is an IRONdb canonical name whose stream tags become the
//! point's tags ([`super::stream_tags`]).
//!
//! Reading rejects a bad record on its own and keeps the records around it.
//! Doubles that are NaN or infinite are rejected as no other target stores
//! them safely. The check field is parsed once per distinct field per body.
//!
//! Writing follows reconnoiter's writer: `%u.%03u` timestamps, integers in
//! full, doubles as C's `%.12e` (13 significant digits, so a double with more
//! digits than that is rounded, as reconnoiter rounds it), strings raw, and
//! histograms as base64 circllhist. Points without an IRONdb check identity
//! take the encoder's default one; the check name is written verbatim when
//! it already starts with `c_<account>_` (reconnoiter's
//! `c_<account>_<bundle>::<module>`), otherwise as
//! `c_<account>_<bundle>::<module>`, where the bundle is the check name when
//! it is numeric and 0 otherwise (IRONdb wants a numeric check bundle id,
//! which only checks that came from IRONdb carry). Timestamps before 1970 cannot be written as `%u.%03u`: such
//! points are skipped and counted as [`Unrepresentable::TimestampOutOfRange`].
//!
//! This module is pure: no I/O, no logging, no clock.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::sync::Arc;

use super::circllhist::{self, HistogramError};
use super::stream_tags::{self, StreamTagError};
use super::{Encoder, Reason, Rejects, Skipped, Unrepresentable};
use crate::model::{Batch, PointRef, Source, Timestamp, Value, ValueKind};

/// What [`parse_body`] saw: the counts IRONdb's `/raw` answer reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TsvOutcome {
    /// Non-blank lines seen.
    pub records: u64,
    /// Lines rejected (each also counted in the caller's [`Rejects`]).
    pub errors: u64,
}

/// Encoder for IRONdb `/raw` TSV upstreams.
#[derive(Clone, Debug, Default)]
pub struct IrondbTsvEncoder {
    /// The check identity of points that carry none (an IRONdb upstream's
    /// configured account, check UUID and name).
    pub default_source: Option<Arc<Source>>,
}

/// IRONdb's "no value" marker.
const NULL_VALUE: &str = "[[null]]";

/// Parses a `/raw` TSV body, appending a point per good record to `out` and
/// a reject per bad record to `rejects`.
pub fn parse_body(body: &[u8], out: &mut Batch, rejects: &mut Rejects) -> TsvOutcome {
    let mut outcome = TsvOutcome::default();
    let mut state = ParseState::default();
    let mut start = 0;
    while start < body.len() {
        let end = memchr::memchr(b'\n', &body[start..]).map_or(body.len(), |n| start + n);
        let raw = &body[start..end];
        start = end + 1;
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        outcome.records += 1;
        if let Err(bad) = parse_record(line, &mut state, out) {
            outcome.errors += 1;
            rejects.add_with_detail(bad.reason, line, || bad.detail.to_string());
        }
    }
    outcome
}

impl Encoder for IrondbTsvEncoder {
    fn encode(
        &mut self,
        points: &mut dyn Iterator<Item = PointRef<'_>>,
        out: &mut Vec<u8>,
        skipped: &mut Skipped,
    ) -> usize {
        let mut scratch = WriteScratch::default();
        let default_source = self.default_source.as_deref().filter(|s| is_usable(s));
        let mut written = 0;
        for point in points {
            let start = out.len();
            match write_record(&point, default_source, &mut scratch, out) {
                Ok(()) => written += 1,
                Err(reason) => {
                    out.truncate(start);
                    skipped.add(reason);
                }
            }
        }
        written
    }
}

// === reading ===

/// Buffers and caches reused across the records of one body.
#[derive(Default)]
struct ParseState<'a> {
    tags: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    sources: HashMap<&'a str, Arc<Source>>,
    last_source: Option<(&'a str, Arc<Source>)>,
    histogram_bytes: Vec<u8>,
}

/// Why a record was rejected, with the words for the log.
struct Bad {
    reason: Reason,
    detail: Detail,
}

/// The detail of a reject, formatted only when the reject is sampled.
enum Detail {
    Text(&'static str),
    Tags(StreamTagError),
    Histogram(HistogramError),
}

impl fmt::Display for Detail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Detail::Text(text) => f.write_str(text),
            Detail::Tags(error) => error.fmt(f),
            Detail::Histogram(error) => error.fmt(f),
        }
    }
}

fn bad(reason: Reason, detail: &'static str) -> Bad {
    Bad {
        reason,
        detail: Detail::Text(detail),
    }
}

/// Parses one record (without its line end) and appends its point.
fn parse_record<'a>(
    line: &'a [u8],
    state: &mut ParseState<'a>,
    out: &mut Batch,
) -> Result<(), Bad> {
    let line =
        std::str::from_utf8(line).map_err(|_| bad(Reason::InvalidUtf8, "record is not UTF-8"))?;
    // One more slot than the longest record, to notice extra fields.
    let mut fields = [""; 7];
    let mut n_fields = 0;
    for (slot, field) in fields.iter_mut().zip(line.split('\t')) {
        *slot = field;
        n_fields += 1;
    }
    let (expected, histogram) = match fields[0] {
        "M" => (6, None),
        "H1" => (5, Some(false)),
        "H2" => (5, Some(true)),
        _ => return Err(bad(Reason::UnknownRecord, "record type is not M, H1 or H2")),
    };
    if n_fields != expected {
        return Err(bad(
            Reason::FieldCount,
            "wrong number of TAB-separated fields",
        ));
    }
    let timestamp = parse_timestamp(fields[1])
        .ok_or_else(|| bad(Reason::BadTimestamp, "timestamp is not SECONDS.MMM"))?;
    let source = state.source(fields[2])?;
    let value = match histogram {
        None => parse_value(fields[4], fields[5])?,
        Some(cumulative) => {
            let mut histogram =
                circllhist::decode_base64_with(fields[4].as_bytes(), &mut state.histogram_bytes)
                    .map_err(|error| Bad {
                        reason: Reason::BadHistogram,
                        detail: Detail::Histogram(error),
                    })?;
            histogram.cumulative = cumulative;
            Value::Histogram(Arc::new(histogram))
        }
    };
    state.tags.clear();
    let name = stream_tags::parse_name(fields[3], &mut state.tags).map_err(|error| Bad {
        reason: Reason::BadStreamTags,
        detail: Detail::Tags(error),
    })?;
    if name.is_empty() {
        return Err(bad(Reason::EmptyName, "metric name is empty"));
    }
    let tags = state.tags.iter().map(|(k, v)| (k.as_ref(), v.as_ref()));
    out.push(name, tags, timestamp, value, Some(source));
    Ok(())
}

impl<'a> ParseState<'a> {
    /// The source of a check field, parsed once per distinct field.
    fn source(&mut self, field: &'a str) -> Result<Arc<Source>, Bad> {
        // Bodies usually hold runs of one check: try the last one first.
        if let Some((last, source)) = &self.last_source {
            if *last == field {
                return Ok(Arc::clone(source));
            }
        }
        let source = match self.sources.get(field) {
            Some(source) => Arc::clone(source),
            None => {
                let source = Arc::new(parse_source(field)?);
                self.sources.insert(field, Arc::clone(&source));
                source
            }
        };
        self.last_source = Some((field, Arc::clone(&source)));
        Ok(source)
    }
}

/// `SECONDS.MMM`: ASCII digits, a dot and exactly three digits.
fn parse_timestamp(text: &str) -> Option<Timestamp> {
    let (secs, millis) = text.split_once('.')?;
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(secs) || millis.len() != 3 || !all_digits(millis) {
        return None;
    }
    let secs: i64 = secs.parse().ok()?;
    let millis: i64 = millis.parse().ok()?;
    secs.checked_mul(1000)?
        .checked_add(millis)
        .map(Timestamp::from_millis)
}

/// ``TARGET`MODULE`c_ACCOUNT_BUNDLE::MODULE`uuid``.
fn parse_source(field: &str) -> Result<Source, Bad> {
    let mut parts = field.split('`');
    let (Some(target), Some(module), Some(check_name), Some(uuid), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(bad(
            Reason::BadCheck,
            "check field is not TARGET`MODULE`CHECK_NAME`UUID",
        ));
    };
    let account_id = circonus_account(check_name).ok_or_else(|| {
        bad(
            Reason::BadCheck,
            "check name does not start with c_<account>_",
        )
    })?;
    if !is_uuid(uuid) {
        return Err(bad(Reason::BadCheck, "check uuid is not a hyphenated uuid"));
    }
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    Ok(Source {
        account_id: Some(account_id),
        check_uuid: Some(uuid.to_ascii_lowercase()),
        check_name: Some(check_name.to_owned()),
        target: non_empty(target),
        module: non_empty(module),
    })
}

/// The account of a Circonus check name `c_<account>_<rest>` (rest non-empty).
fn circonus_account(check_name: &str) -> Option<i32> {
    let (digits, rest) = check_name.strip_prefix("c_")?.split_once('_')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || rest.is_empty() {
        return None;
    }
    digits.parse().ok()
}

/// 8-4-4-4-12 hexadecimal digits, either case.
fn is_uuid(text: &str) -> bool {
    text.len() == 36
        && text.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// An `M` record's value from its TYPE letter and text.
fn parse_value(type_letter: &str, text: &str) -> Result<Value, Bad> {
    let kind = match type_letter {
        "i" => ValueKind::I32,
        "I" => ValueKind::U32,
        "l" => ValueKind::I64,
        "L" => ValueKind::U64,
        "n" => ValueKind::F64,
        "s" => ValueKind::Text,
        _ => {
            return Err(bad(
                Reason::BadValue,
                "metric type is not one of i I l L n s",
            ))
        }
    };
    if text == NULL_VALUE {
        return Ok(Value::Absent(kind));
    }
    let not_a = |what| bad(Reason::BadValue, what);
    Ok(match kind {
        ValueKind::I32 => Value::I32(text.parse().map_err(|_| not_a("not an int32"))?),
        ValueKind::U32 => Value::U32(text.parse().map_err(|_| not_a("not a uint32"))?),
        ValueKind::I64 => Value::I64(text.parse().map_err(|_| not_a("not an int64"))?),
        ValueKind::U64 => Value::U64(text.parse().map_err(|_| not_a("not a uint64"))?),
        ValueKind::F64 => {
            let value: f64 = text.parse().map_err(|_| not_a("not a double"))?;
            if value.is_nan() {
                return Err(bad(Reason::NanValue, "double is NaN"));
            }
            if value.is_infinite() {
                return Err(not_a("double is infinite"));
            }
            Value::F64(value)
        }
        ValueKind::Text | ValueKind::Histogram => Value::Text(text.into()),
    })
}

// === writing ===

/// Buffers reused across the points of one `encode` call.
#[derive(Default)]
struct WriteScratch {
    name: String,
    number: String,
    histogram_bytes: Vec<u8>,
}

/// Writes one point as a record. On error `out` may hold part of the
/// record; the caller truncates it.
fn write_record(
    point: &PointRef<'_>,
    default_source: Option<&Source>,
    scratch: &mut WriteScratch,
    out: &mut Vec<u8>,
) -> Result<(), Unrepresentable> {
    // `%u.%03u` has no sign: see the module docs.
    let millis = u64::try_from(point.timestamp().as_millis())
        .map_err(|_| Unrepresentable::TimestampOutOfRange)?;
    let source = point
        .source()
        .map(|source| &**source)
        .filter(|source| is_usable(source))
        .or(default_source)
        .ok_or(Unrepresentable::MissingCheck)?;
    let record: &[u8] = match point.value() {
        Value::Histogram(histogram) if histogram.cumulative => b"H2",
        Value::Histogram(_) => b"H1",
        // IRONdb has no "no histogram" record.
        Value::Absent(ValueKind::Histogram) => return Err(Unrepresentable::Absent),
        _ => b"M",
    };
    let name = point.name();
    if name.contains(['\t', '\n', '\r']) {
        return Err(Unrepresentable::InvalidName);
    }
    scratch.name.clear();
    stream_tags::write_name(name, point.tags(), &mut scratch.name).map_err(
        |error| match error {
            StreamTagError::TagTooLong { .. } | StreamTagError::NameTooLong { .. } => {
                Unrepresentable::NameTooLong
            }
            _ => Unrepresentable::InvalidName,
        },
    )?;
    out.extend_from_slice(record);
    out.push(b'\t');
    write_timestamp(millis, out);
    out.push(b'\t');
    write_check(source, out)?;
    out.push(b'\t');
    out.extend_from_slice(scratch.name.as_bytes());
    out.push(b'\t');
    match point.value() {
        Value::Histogram(histogram) => {
            circllhist::encode_base64_with(histogram, &mut scratch.histogram_bytes, out);
        }
        value => write_value(value, &mut scratch.number, out)?,
    }
    out.push(b'\n');
    Ok(())
}

/// A source IRONdb can file points under: an account and a valid check UUID.
fn is_usable(source: &Source) -> bool {
    source.account_id.is_some() && source.check_uuid.as_deref().is_some_and(is_uuid)
}

/// `%u.%03u` of a millisecond timestamp.
fn write_timestamp(millis: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(itoa::Buffer::new().format(millis / 1000).as_bytes());
    let fraction = millis % 1000;
    out.push(b'.');
    out.push(b'0' + (fraction / 100) as u8);
    out.push(b'0' + (fraction / 10 % 10) as u8);
    out.push(b'0' + (fraction % 10) as u8);
}

/// The check field of a usable source; see the module docs for the name.
fn write_check(source: &Source, out: &mut Vec<u8>) -> Result<(), Unrepresentable> {
    let (Some(account), Some(uuid)) = (source.account_id, source.check_uuid.as_deref()) else {
        return Err(Unrepresentable::MissingCheck);
    };
    let target = source.target.as_deref().unwrap_or("");
    let module = source.module.as_deref().unwrap_or("");
    let check_name = source.check_name.as_deref().unwrap_or("");
    let is_writable = |part: &str| !part.contains(['`', '\t', '\n', '\r']);
    if !(is_writable(target) && is_writable(module) && is_writable(check_name)) {
        return Err(Unrepresentable::InvalidName);
    }
    out.extend_from_slice(target.as_bytes());
    out.push(b'`');
    out.extend_from_slice(module.as_bytes());
    out.push(b'`');
    if circonus_account(check_name) == Some(account) {
        out.extend_from_slice(check_name.as_bytes());
    } else {
        // The field needs a numeric check bundle id, which only a check
        // that came from IRONdb has: a numeric check name is taken as one,
        // anything else becomes bundle 0 (the name is informational).
        let bundle = if !check_name.is_empty() && check_name.bytes().all(|b| b.is_ascii_digit()) {
            check_name
        } else {
            "0"
        };
        out.extend_from_slice(b"c_");
        out.extend_from_slice(itoa::Buffer::new().format(account).as_bytes());
        out.push(b'_');
        out.extend_from_slice(bundle.as_bytes());
        out.extend_from_slice(b"::");
        out.extend_from_slice(module.as_bytes());
    }
    out.push(b'`');
    out.extend(uuid.bytes().map(|b| b.to_ascii_lowercase()));
    Ok(())
}

/// `TYPE<TAB>VALUE` of an `M` record.
fn write_value(
    value: &Value,
    number: &mut String,
    out: &mut Vec<u8>,
) -> Result<(), Unrepresentable> {
    let mut ints = itoa::Buffer::new();
    let (letter, text): (u8, &str) = match value {
        Value::I32(v) => (b'i', ints.format(*v)),
        Value::U32(v) => (b'I', ints.format(*v)),
        Value::I64(v) => (b'l', ints.format(*v)),
        Value::U64(v) => (b'L', ints.format(*v)),
        Value::F64(v) => {
            if !v.is_finite() {
                return Err(Unrepresentable::NonFiniteValue);
            }
            format_c_exponent(*v, number);
            (b'n', number.as_str())
        }
        Value::Text(text) => {
            // A field cannot hold TAB or a line end, and the marker would read back as null.
            if text.contains(['\t', '\n', '\r']) || &**text == NULL_VALUE {
                return Err(Unrepresentable::Text);
            }
            (b's', text)
        }
        Value::Absent(kind) => {
            let letter = match kind {
                ValueKind::I32 => b'i',
                ValueKind::U32 => b'I',
                ValueKind::I64 => b'l',
                ValueKind::U64 => b'L',
                ValueKind::F64 => b'n',
                ValueKind::Text => b's',
                ValueKind::Histogram => return Err(Unrepresentable::Absent),
            };
            (letter, NULL_VALUE)
        }
        Value::Histogram(_) => return Err(Unrepresentable::Histogram),
    };
    out.push(letter);
    out.push(b'\t');
    out.extend_from_slice(text.as_bytes());
    Ok(())
}

/// C's `printf("%.12e")` of a finite double: Rust's `{:.12e}` gives the same
/// correctly rounded digits but writes the exponent as `e0`/`e-7`; C writes
/// a sign and at least two digits (`e+00`, `e-07`, `e+100`).
fn format_c_exponent(value: f64, out: &mut String) {
    out.clear();
    // Writing to a String cannot fail.
    let _ = write!(out, "{value:.12e}");
    let Some(e) = out.find('e') else {
        return;
    };
    let exponent: i32 = out[e + 1..].parse().unwrap_or(0);
    out.truncate(e + 1);
    out.push(if exponent < 0 { '-' } else { '+' });
    let _ = write!(out, "{:02}", exponent.unsigned_abs());
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::model::{Bin, Histogram, Point};

    const CHECK: &str = "example.com`http`c_123_987654::http`1b988fd7-d1e1-48ec-848e-55709511d43f";

    fn decode(body: &[u8]) -> (Batch, Rejects, TsvOutcome) {
        let mut batch = Batch::new();
        let mut rejects = Rejects::default();
        let outcome = parse_body(body, &mut batch, &mut rejects);
        (batch, rejects, outcome)
    }

    fn encode_with(encoder: &mut IrondbTsvEncoder, batch: &Batch) -> (String, Skipped) {
        let mut out = Vec::new();
        let mut skipped = Skipped::default();
        let written = encoder.encode(&mut batch.iter(), &mut out, &mut skipped);
        assert_eq!(written as u64 + skipped.total(), batch.len() as u64);
        (String::from_utf8(out).expect("utf-8"), skipped)
    }

    fn http_source() -> Source {
        Source {
            account_id: Some(123),
            check_uuid: Some("1b988fd7-d1e1-48ec-848e-55709511d43f".to_owned()),
            check_name: Some("c_123_987654::http".to_owned()),
            target: Some("example.com".to_owned()),
            module: Some("http".to_owned()),
        }
    }

    fn record(kind: &str, rest: &str) -> String {
        format!("{kind}\t1512691226.137\t{CHECK}\t{rest}\n")
    }

    fn c_format(value: f64) -> String {
        let mut out = String::new();
        format_c_exponent(value, &mut out);
        out
    }

    #[test]
    fn the_protocol_samples_decode_exactly() {
        let body = "M\t1512691226.137\texample.com`http`c_123_987654::http`1b988fd7-d1e1-48ec-848e-55709511d43f\tduration\tI\t1\n\
                    H1\t1512691200.000\texample.com`ping_icmp`c_123_45678::ping_icmp`c50361d8-7565-4f04-8128-3cd2613dbc82\tmaximum\tAAFQ/gAB\n";
        let (batch, rejects, outcome) = decode(body.as_bytes());
        assert_eq!(rejects.total(), 0, "{:?}", rejects.samples());
        assert_eq!(
            outcome,
            TsvOutcome {
                records: 2,
                errors: 0
            }
        );
        let points = batch.to_points();
        assert_eq!(points[0].name, "duration");
        assert!(points[0].tags.is_empty());
        assert_eq!(
            points[0].timestamp,
            Timestamp::from_millis(1_512_691_226_137)
        );
        assert_eq!(points[0].value, Value::U32(1));
        assert_eq!(points[0].source.as_deref(), Some(&http_source()));
        assert_eq!(points[1].name, "maximum");
        assert_eq!(
            points[1].timestamp,
            Timestamp::from_millis(1_512_691_200_000)
        );
        let expected = Histogram {
            bins: vec![Bin {
                val: 80,
                exp: -2,
                count: 1,
            }],
            cumulative: false,
        };
        assert_eq!(points[1].value, Value::Histogram(Arc::new(expected)));
        assert_eq!(
            points[1].source.as_deref(),
            Some(&Source {
                account_id: Some(123),
                check_uuid: Some("c50361d8-7565-4f04-8128-3cd2613dbc82".to_owned()),
                check_name: Some("c_123_45678::ping_icmp".to_owned()),
                target: Some("example.com".to_owned()),
                module: Some("ping_icmp".to_owned()),
            })
        );
    }

    #[test]
    fn every_type_and_null_decode() {
        let cases: &[(&str, &str, Value)] = &[
            ("i", "-2147483648", Value::I32(i32::MIN)),
            ("I", "4294967295", Value::U32(u32::MAX)),
            ("l", "-9223372036854775808", Value::I64(i64::MIN)),
            ("L", "18446744073709551615", Value::U64(u64::MAX)),
            ("n", "1.500000000000e+00", Value::F64(1.5)),
            ("n", "-2.5e-7", Value::F64(-2.5e-7)),
            (
                "s",
                "hello world: ok",
                Value::Text("hello world: ok".into()),
            ),
            ("s", "", Value::Text("".into())),
            ("i", "[[null]]", Value::Absent(ValueKind::I32)),
            ("I", "[[null]]", Value::Absent(ValueKind::U32)),
            ("l", "[[null]]", Value::Absent(ValueKind::I64)),
            ("L", "[[null]]", Value::Absent(ValueKind::U64)),
            ("n", "[[null]]", Value::Absent(ValueKind::F64)),
            ("s", "[[null]]", Value::Absent(ValueKind::Text)),
        ];
        for (letter, text, expected) in cases {
            let body = record("M", &format!("m\t{letter}\t{text}"));
            let (batch, rejects, _) = decode(body.as_bytes());
            assert_eq!(rejects.total(), 0, "{body}");
            assert_eq!(batch.get(0).expect("point").value(), expected, "{body}");
        }
    }

    #[test]
    fn bad_values_are_rejected() {
        let cases: &[(&str, &str, Reason)] = &[
            ("i", "2147483648", Reason::BadValue),
            ("I", "-1", Reason::BadValue),
            ("l", "1.0", Reason::BadValue),
            ("L", "", Reason::BadValue),
            ("n", "one", Reason::BadValue),
            ("n", "inf", Reason::BadValue),
            ("n", "nan", Reason::NanValue),
            ("x", "1", Reason::BadValue),
            ("ii", "1", Reason::BadValue),
        ];
        for (letter, text, reason) in cases {
            let body = record("M", &format!("m\t{letter}\t{text}"));
            let (batch, rejects, outcome) = decode(body.as_bytes());
            assert!(batch.is_empty(), "{body}");
            assert_eq!(rejects.count(*reason), 1, "{body}");
            assert_eq!(
                outcome,
                TsvOutcome {
                    records: 1,
                    errors: 1
                }
            );
        }
    }

    #[test]
    fn h1_and_h2_records_carry_histograms() {
        let body = record("H1", "lat|ST[env:prod]\tAAEKAAEsAQ==") + &record("H2", "lat\tAAA=");
        let (batch, rejects, _) = decode(body.as_bytes());
        assert_eq!(rejects.total(), 0);
        let first = batch.get(0).expect("point");
        let Value::Histogram(histogram) = first.value() else {
            panic!("not a histogram: {:?}", first.value());
        };
        assert!(!histogram.cumulative);
        assert_eq!(histogram.count(), 300);
        assert_eq!(first.tags().collect::<Vec<_>>(), vec![("env", "prod")]);
        let Value::Histogram(histogram) = batch.get(1).expect("point").value() else {
            panic!("not a histogram");
        };
        assert!(histogram.cumulative);
        assert!(histogram.bins.is_empty());
        let (_, rejects, _) = decode(record("H1", "lat\tAAFQ/gABAA==").as_bytes());
        assert_eq!(rejects.count(Reason::BadHistogram), 1);
        assert_eq!(rejects.samples()[0].detail, "1 bytes after the last bin");
    }

    #[test]
    fn timestamps_must_have_exactly_three_decimals() {
        for timestamp in [
            "1512691226.1",
            "1512691226",
            "1512691226.1370",
            "-1.000",
            "+1.000",
            ".137",
            "1512691226.",
            "1512691226.13a",
            "1e9.000",
            "99999999999999999999.000",
            " 1512691226.137",
        ] {
            let body = format!("M\t{timestamp}\t{CHECK}\tm\tl\t1\n");
            let (batch, rejects, _) = decode(body.as_bytes());
            assert!(batch.is_empty(), "{timestamp}");
            assert_eq!(rejects.count(Reason::BadTimestamp), 1, "{timestamp}");
        }
        let (batch, _, _) = decode(format!("M\t0.001\t{CHECK}\tm\tl\t1\n").as_bytes());
        assert_eq!(
            batch.get(0).expect("point").timestamp(),
            Timestamp::from_millis(1)
        );
    }

    #[test]
    fn bad_records_are_counted_and_good_ones_kept() {
        let uuid = "1b988fd7-d1e1-48ec-848e-55709511d43f";
        let mut body = record("M", "ok.1\tl\t1").replace('\n', "\r\n");
        body += "\n  \r\n";
        body += &record("X", "m\tl\t1");
        body += &record("M", "m\tl");
        body += &record("M", "m\tl\t1\textra");
        body += "M\t1.000\tt`m`c_1_2::m\tm\tl\t1\n";
        body += &format!("M\t1.000\tt`m`x_1_2::m`{uuid}\tm\tl\t1\n");
        body += &format!("M\t1.000\tt`m`c_1_2::m`{}\tm\tl\t1\n", &uuid[1..]);
        body += &format!("M\t1.000\tt`m`c_1_2::m`{}g\tm\tl\t1\n", &uuid[1..]);
        body += &record("M", "m|ST[a:b\tl\t1");
        body += &record("M", "|ST[a:b]\tl\t1");
        body += &record("M", "m\tl\tx");
        body += &record("H1", "m\t!!");
        body += &record("M", "ok.2|ST[b:2,a:1]\tn\t2.5");
        let mut bytes = body.into_bytes();
        // Invalid UTF-8 and a last record without a newline.
        bytes.extend_from_slice(b"M\t1.000\tt`m`c_1_2::m`x\t\xff\tl\t1\n");
        bytes.extend_from_slice(record("M", "ok.3\ts\tlast").trim_end().as_bytes());
        let (batch, rejects, outcome) = decode(&bytes);
        let names: Vec<_> = batch.iter().map(|p| p.name()).collect();
        assert_eq!(names, vec!["ok.1", "ok.2", "ok.3"]);
        assert_eq!(
            batch.get(1).expect("point").tags().collect::<Vec<_>>(),
            vec![("a", "1"), ("b", "2")]
        );
        assert_eq!(
            outcome,
            TsvOutcome {
                records: 15,
                errors: 12
            }
        );
        assert_eq!(rejects.total(), 12);
        let expected = [
            (Reason::UnknownRecord, 1),
            (Reason::FieldCount, 2),
            (Reason::BadCheck, 4),
            (Reason::BadStreamTags, 1),
            (Reason::EmptyName, 1),
            (Reason::BadValue, 1),
            (Reason::BadHistogram, 1),
            (Reason::InvalidUtf8, 1),
        ];
        for (reason, n) in expected {
            assert_eq!(rejects.count(reason), n, "{reason}");
        }
        assert_eq!(
            rejects.samples()[0].detail,
            "record type is not M, H1 or H2"
        );
    }

    #[test]
    fn check_fields_are_parsed_once_per_body() {
        let other = CHECK.replace("example.com", "other.com");
        let body = record("M", "a\tl\t1")
            + &record("M", "b\tl\t2")
            + &format!("M\t1.000\t{other}\tc\tl\t3\n")
            + &record("M", "d\tl\t4");
        let (batch, _, _) = decode(body.as_bytes());
        let sources: Vec<_> = batch.iter().map(|p| p.source().expect("source")).collect();
        assert!(Arc::ptr_eq(sources[0], sources[1]));
        assert!(Arc::ptr_eq(sources[0], sources[3]));
        assert!(!Arc::ptr_eq(sources[0], sources[2]));
        assert_eq!(sources[2].target.as_deref(), Some("other.com"));
        // Upper-case UUIDs are accepted and stored in lower case.
        let upper = CHECK.replace("1b988fd7-d1e1", "1B988FD7-D1E1");
        let (batch, _, _) = decode(format!("M\t1.000\t{upper}\tm\tl\t1\n").as_bytes());
        let source = batch
            .get(0)
            .expect("point")
            .source()
            .expect("source")
            .clone();
        assert_eq!(source.check_uuid, http_source().check_uuid);
    }

    #[test]
    fn doubles_are_written_like_c_printf() {
        let cases: &[(f64, &str)] = &[
            (1.5, "1.500000000000e+00"),
            (-2.5e-7, "-2.500000000000e-07"),
            (1e100, "1.000000000000e+100"),
            (0.0, "0.000000000000e+00"),
            (-0.0, "-0.000000000000e+00"),
            (0.1, "1.000000000000e-01"),
            (123_456.789, "1.234567890000e+05"),
            (1.0 / 3.0, "3.333333333333e-01"),
            (f64::MAX, "1.797693134862e+308"),
            (f64::MIN_POSITIVE, "2.225073858507e-308"),
            (5e-324, "4.940656458412e-324"),
            (9.9999999999994, "9.999999999999e+00"),
            // Rounding carries into the exponent.
            (9.9999999999995, "1.000000000000e+01"),
            // An exact tie rounds half to even, as glibc does.
            (12_345_678_901_225.0, "1.234567890122e+13"),
            (12_345_678_901_235.0, "1.234567890124e+13"),
        ];
        for (value, expected) in cases {
            assert_eq!(c_format(*value), *expected, "{value:e}");
        }
    }

    #[test]
    fn encoder_writes_each_value_kind() {
        let at = Timestamp::from_millis(1_512_691_226_007);
        let source = Arc::new(http_source());
        let histogram = Histogram::from_values([1.0, 1.0, 2.5]);
        let cumulative = Histogram {
            cumulative: true,
            ..histogram.clone()
        };
        let points = [
            Point::new("i", at, Value::I32(-5)),
            Point::new("u", at, Value::U32(u32::MAX)),
            Point::new("l", at, Value::I64(i64::MIN)),
            Point::new("L", at, Value::U64(u64::MAX)),
            Point::new("n", at, Value::F64(-2.5e-7)),
            Point::new("s", at, Value::Text("a b:c".into())),
            Point::new("null", at, Value::Absent(ValueKind::F64)),
            Point::new("h", at, Value::Histogram(Arc::new(histogram))),
            Point::new("h2", at, Value::Histogram(Arc::new(cumulative))),
            Point::new("kairos", at, Value::I64(1))
                .with_tag("host", "a b")
                .with_tag("dc", "eu"),
        ];
        let batch: Batch = points
            .into_iter()
            .map(|mut p| {
                p.source = Some(Arc::clone(&source));
                p
            })
            .collect();
        let (text, skipped) = encode_with(&mut IrondbTsvEncoder::default(), &batch);
        assert_eq!(skipped.total(), 0);
        let prefix = format!("1512691226.007\t{CHECK}");
        let expected = [
            format!("M\t{prefix}\ti\ti\t-5\n"),
            format!("M\t{prefix}\tu\tI\t4294967295\n"),
            format!("M\t{prefix}\tl\tl\t-9223372036854775808\n"),
            format!("M\t{prefix}\tL\tL\t18446744073709551615\n"),
            format!("M\t{prefix}\tn\tn\t-2.500000000000e-07\n"),
            format!("M\t{prefix}\ts\ts\ta b:c\n"),
            format!("M\t{prefix}\tnull\tn\t[[null]]\n"),
            format!("H1\t{prefix}\th\tAAIKAAACGQAAAQ==\n"),
            format!("H2\t{prefix}\th2\tAAIKAAACGQAAAQ==\n"),
            format!("M\t{prefix}\tkairos|ST[dc:eu,host:b\"YSBi\"]\tl\t1\n"),
        ];
        assert_eq!(text, expected.concat());
        let (decoded, rejects, _) = decode(text.as_bytes());
        assert_eq!(rejects.total(), 0);
        assert_eq!(decoded.to_points(), batch.to_points());
    }

    #[test]
    fn round_trips_are_lossless_for_every_kind() {
        let at = Timestamp::from_millis(1_700_000_000_123);
        let source = Some(Arc::new(http_source()));
        let values = [
            Value::I32(i32::MIN),
            Value::U32(0),
            Value::I64(i64::MAX),
            Value::U64(u64::MAX),
            Value::F64(0.1),
            Value::F64(-1e-300),
            Value::Text("é\"|ST[x]".into()),
            Value::Absent(ValueKind::I32),
            Value::Absent(ValueKind::U32),
            Value::Absent(ValueKind::I64),
            Value::Absent(ValueKind::U64),
            Value::Absent(ValueKind::Text),
            Value::Histogram(Arc::new(Histogram::from_values([
                -1.0,
                0.0,
                1e-100,
                f64::NAN,
            ]))),
        ];
        let mut batch = Batch::new();
        for value in values {
            batch.push("m.x", [("k", "v w")], at, value, source.clone());
        }
        let (text, skipped) = encode_with(&mut IrondbTsvEncoder::default(), &batch);
        assert_eq!(skipped.total(), 0);
        let (decoded, rejects, _) = decode(text.as_bytes());
        assert_eq!(rejects.total(), 0);
        assert_eq!(decoded.to_points(), batch.to_points());
    }

    #[test]
    fn sources_default_source_and_check_names() {
        let at = Timestamp::from_millis(1_000);
        let uuid = "C50361D8-7565-4F04-8128-3CD2613DBC82";
        let default = Source {
            account_id: Some(7),
            check_uuid: Some(uuid.to_owned()),
            check_name: Some("relay".to_owned()),
            target: None,
            module: Some("graphite".to_owned()),
        };
        let no_uuid = Source {
            check_uuid: None,
            ..http_source()
        };
        let other_account = Source {
            check_name: Some("c_999_5::http".to_owned()),
            ..http_source()
        };
        let mut batch = Batch::new();
        batch.push("own", [], at, Value::I64(1), Some(Arc::new(http_source())));
        batch.push("none", [], at, Value::I64(2), None);
        batch.push("partial", [], at, Value::I64(3), Some(Arc::new(no_uuid)));
        batch.push(
            "other",
            [],
            at,
            Value::I64(4),
            Some(Arc::new(other_account)),
        );
        let mut encoder = IrondbTsvEncoder {
            default_source: Some(Arc::new(default)),
        };
        let (text, skipped) = encode_with(&mut encoder, &batch);
        assert_eq!(skipped.total(), 0);
        let lower = uuid.to_ascii_lowercase();
        let fallback = format!("`graphite`c_7_0::graphite`{lower}");
        assert_eq!(
            text,
            format!(
                "M\t1.000\t{CHECK}\town\tl\t1\n\
                 M\t1.000\t{fallback}\tnone\tl\t2\n\
                 M\t1.000\t{fallback}\tpartial\tl\t3\n\
                 M\t1.000\texample.com`http`c_123_0::http`1b988fd7-d1e1-48ec-848e-55709511d43f\tother\tl\t4\n"
            )
        );
        let (text, skipped) = encode_with(&mut IrondbTsvEncoder::default(), &batch);
        assert_eq!(text.lines().count(), 2);
        assert_eq!(skipped.count(Unrepresentable::MissingCheck), 2);
    }

    #[test]
    fn unwritable_points_are_skipped_with_a_reason() {
        let at = Timestamp::from_millis(1_000);
        let long = "v".repeat(300);
        let bad_target = Source {
            target: Some("a`b".to_owned()),
            ..http_source()
        };
        let mut batch = Batch::new();
        let mut push = |name: &str, tags: &[(&str, &str)], at, value, source: Source| {
            batch.push(
                name,
                tags.iter().copied(),
                at,
                value,
                Some(Arc::new(source)),
            );
        };
        push("ok", &[], at, Value::I64(1), http_source());
        push(
            "neg",
            &[],
            Timestamp::from_millis(-1),
            Value::I64(1),
            http_source(),
        );
        push("nan", &[], at, Value::F64(f64::NAN), http_source());
        push("inf", &[], at, Value::F64(f64::INFINITY), http_source());
        push("tab", &[], at, Value::Text("a\tb".into()), http_source());
        push("nl", &[], at, Value::Text("a\nb".into()), http_source());
        push(
            "null",
            &[],
            at,
            Value::Text("[[null]]".into()),
            http_source(),
        );
        push(
            "absent.h",
            &[],
            at,
            Value::Absent(ValueKind::Histogram),
            http_source(),
        );
        push("a\tb", &[], at, Value::I64(1), http_source());
        push("", &[], at, Value::I64(1), http_source());
        push("a|ST[b", &[], at, Value::I64(1), http_source());
        push(
            "long",
            &[("k", long.as_str())],
            at,
            Value::I64(1),
            http_source(),
        );
        push("target", &[], at, Value::I64(1), bad_target);
        let (text, skipped) = encode_with(&mut IrondbTsvEncoder::default(), &batch);
        assert_eq!(text, format!("M\t1.000\t{CHECK}\tok\tl\t1\n"));
        assert_eq!(skipped.count(Unrepresentable::NonFiniteValue), 2);
        assert_eq!(skipped.count(Unrepresentable::TimestampOutOfRange), 1);
        assert_eq!(skipped.count(Unrepresentable::Text), 3);
        assert_eq!(skipped.count(Unrepresentable::Absent), 1);
        assert_eq!(skipped.count(Unrepresentable::InvalidName), 4);
        assert_eq!(skipped.count(Unrepresentable::NameTooLong), 1);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let (batch, rejects, outcome) = decode(&body);
            prop_assert_eq!(outcome.records, batch.len() as u64 + outcome.errors);
            prop_assert_eq!(outcome.errors, rejects.total());
        }

        #[test]
        fn arbitrary_records_never_panic(
            line in "(M|H1|H2|X)\t[0-9.]{0,14}\t[a-z`_:0-9c-]{0,50}\t[a-z|ST\\[\\]:,]{0,20}\t[iIlLns]\t[-0-9.e\\[\\]nul]{0,12}"
        ) {
            let (batch, rejects, _) = decode(line.as_bytes());
            prop_assert_eq!(batch.len() as u64 + rejects.total(), 1);
        }

        #[test]
        fn numbers_round_trip(int in any::<i64>(), unsigned in any::<u64>(), millis in 0i64..=i64::MAX) {
            let source = Some(Arc::new(http_source()));
            let mut batch = Batch::new();
            let at = Timestamp::from_millis(millis);
            batch.push("a", [], at, Value::I64(int), source.clone());
            batch.push("b", [], at, Value::U64(unsigned), source.clone());
            batch.push("c", [], at, Value::I32(int as i32), source.clone());
            batch.push("d", [], at, Value::U32(unsigned as u32), source);
            let (text, skipped) = encode_with(&mut IrondbTsvEncoder::default(), &batch);
            prop_assert_eq!(skipped.total(), 0);
            let (decoded, rejects, _) = decode(text.as_bytes());
            prop_assert_eq!(rejects.total(), 0);
            prop_assert_eq!(decoded.to_points(), batch.to_points());
        }

        #[test]
        fn doubles_keep_thirteen_significant_digits(bits in any::<u64>()) {
            let value = f64::from_bits(bits);
            prop_assume!(value.is_finite());
            let text = c_format(value);
            let parsed: f64 = text.parse().expect("a double");
            let rust = format!("{value:.12e}");
            prop_assert_eq!(parsed, rust.parse::<f64>().expect("a double"));
        }
    }
}
