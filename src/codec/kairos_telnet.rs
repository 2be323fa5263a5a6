//! KairosDB telnet: `put <name> <ts> <value> [<k>=<v> ...]\n` (protocols.md section 4).
//!
//! Input follows KairosDB's `WordSplitter` and `PutMillisecondCommand`:
//! words split on runs of bytes `<= 0x20`, a `"` that starts a word quotes
//! it, `put` timestamps below 3 000 000 000 are seconds (others
//! milliseconds), `putm` and `puts` are always milliseconds, a value with a
//! `.` is a Java double and anything else a Java long, tags are split like
//! Java's `String.split("=")`, `kairos_opt.ttl=<secs>` sets the point's TTL
//! and a point without tags gets `add=tag`. `version` is the only command
//! that answers. Words that are valid UTF-8 stay UTF-8; any other word is
//! decoded as ISO-8859-1, as KairosDB decodes every byte. A bad line is
//! rejected on its own and the connection goes on, as in KairosDB.
//!
//! Output writes `put` lines with millisecond timestamps (`putm` when `put`
//! would misread the timestamp as seconds), `puts` for text, values that
//! KairosDB reads back exactly, and refuses what the word splitter cannot
//! carry instead of writing a line KairosDB would misread.
//!
//! This module is pure: no I/O, no logging, no clock.

use std::borrow::Cow;

use smallvec::SmallVec;

use super::line::{Line, LineFramer};
use super::{Encoder, FrameError, Reason, Rejects, Skipped, StreamDecoder, Unrepresentable};
use crate::model::{Batch, PointRef, Timestamp, Value};

/// KairosDB's default `kairosdb.telnetserver.max_command_size`, in bytes.
pub const DEFAULT_MAX_COMMAND_BYTES: usize = 1024;

/// `put` timestamps below this are seconds (KairosDB's "hack for the next 30 years").
const SECONDS_BELOW: i64 = 3_000_000_000;

/// The tag that sets a point's time to live instead of being stored.
const TTL_TAG: &str = "kairos_opt.ttl";

/// The answer to `version` (KairosDB answers its JAR's title and version).
const VERSION_REPLY: &str = concat!("tsrelay ", env!("CARGO_PKG_VERSION"), "\n");

/// How input lines are turned into points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TelnetOptions {
    /// The tag given to a point sent without tags; `None` keeps it untagged.
    pub default_tag: Option<(String, String)>,
}

impl Default for TelnetOptions {
    /// KairosDB's behaviour: an untagged point gets `add=tag`.
    fn default() -> Self {
        Self {
            default_tag: Some(("add".to_owned(), "tag".to_owned())),
        }
    }
}

/// Which command the encoder writes for numeric values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TelnetMode {
    /// `put`, falling back to `putm` for timestamps `put` would read as seconds.
    #[default]
    Put,
    /// Always `putm`.
    Putm,
}

/// Parses one line (without its `\n`), appending its point to `out` and
/// the answer to a `version` command to `replies`. Returns whether a point
/// was appended: `Ok(false)` for a blank line or `version`.
///
/// # Errors
/// The [`Reason`] the line was rejected for; nothing is appended then.
pub fn parse_line(
    line: &[u8],
    options: &TelnetOptions,
    out: &mut Batch,
    replies: &mut Vec<u8>,
) -> Result<bool, Reason> {
    let mut words = Words { line, pos: 0 };
    let Some(command) = words.next() else {
        return Ok(false);
    };
    let seconds_heuristic = match command {
        b"put" => true,
        b"putm" | b"puts" => false,
        b"version" => {
            replies.extend_from_slice(VERSION_REPLY.as_bytes());
            return Ok(false);
        }
        _ => return Err(Reason::UnknownCommand),
    };
    let (Some(name), Some(timestamp), Some(value)) = (words.next(), words.next(), words.next())
    else {
        return Err(Reason::TooFewWords);
    };
    let mut timestamp = parse_long(timestamp).ok_or(Reason::BadTimestamp)?;
    if seconds_heuristic && timestamp < SECONDS_BELOW {
        // Java wraps silently on overflow; a wrapped timestamp is garbage.
        timestamp = timestamp.checked_mul(1000).ok_or(Reason::BadTimestamp)?;
    }
    if name.is_empty() {
        return Err(Reason::EmptyName);
    }
    let value = if command == b"puts" {
        Value::Text(decode_word(value).as_ref().into())
    } else {
        parse_value(value)?
    };
    let (tags, ttl) = parse_tags(words)?;
    // KairosDB counts only stored tags here, so a lone TTL tag still gets the default.
    let default_tag = match &options.default_tag {
        Some((key, tag_value)) if tags.is_empty() => Some((key.as_str(), tag_value.as_str())),
        _ => None,
    };
    let stored = tags.iter().map(|(k, v)| (k.as_ref(), v.as_ref()));
    out.push(
        &decode_word(name),
        stored.chain(default_tag),
        Timestamp::from_millis(timestamp),
        value,
        None,
    );
    out.set_last_ttl(ttl);
    Ok(true)
}

/// Writes one point as a telnet line. Nothing is written when it fails.
///
/// # Errors
/// The reason KairosDB could not read the point back from a telnet line.
pub fn write_line(
    point: &PointRef<'_>,
    mode: TelnetMode,
    max_line: usize,
    out: &mut Vec<u8>,
) -> Result<(), Unrepresentable> {
    let start = out.len();
    let result = write_line_inner(point, mode, out).and_then(|()| {
        // The limit counts the line without its `\n`.
        if out.len() - start - 1 > max_line {
            Err(Unrepresentable::LineTooLong)
        } else {
            Ok(())
        }
    });
    if result.is_err() {
        out.truncate(start);
    }
    result
}

fn write_line_inner(
    point: &PointRef<'_>,
    mode: TelnetMode,
    out: &mut Vec<u8>,
) -> Result<(), Unrepresentable> {
    let millis = point.timestamp().as_millis();
    let command: &[u8] = match point.value() {
        Value::Text(_) => b"puts",
        Value::Histogram(_) => return Err(Unrepresentable::Histogram),
        Value::Absent(_) => return Err(Unrepresentable::Absent),
        // `put` would read a millisecond timestamp below 3e9 as seconds.
        _ if mode == TelnetMode::Putm || millis < SECONDS_BELOW => b"putm",
        _ => b"put",
    };
    out.extend_from_slice(command);
    out.push(b' ');
    if point.name().is_empty() {
        return Err(Unrepresentable::InvalidName);
    }
    write_word(point.name(), out).ok_or(Unrepresentable::InvalidName)?;
    out.push(b' ');
    out.extend_from_slice(itoa::Buffer::new().format(millis).as_bytes());
    out.push(b' ');
    write_value(point.value(), out)?;
    for (key, tag_value) in point.tags() {
        if !is_writable_tag_key(key) || !is_writable_tag_value(tag_value) {
            return Err(Unrepresentable::InvalidName);
        }
        out.push(b' ');
        out.extend_from_slice(key.as_bytes());
        out.push(b'=');
        out.extend_from_slice(tag_value.as_bytes());
    }
    if let Some(ttl) = point.ttl() {
        // KairosDB reads the TTL with Integer.parseInt; 68 years is forever enough.
        let ttl = ttl.min(i32::MAX as u32);
        out.extend_from_slice(b" kairos_opt.ttl=");
        out.extend_from_slice(itoa::Buffer::new().format(ttl).as_bytes());
    }
    out.push(b'\n');
    Ok(())
}

/// Stream decoder for KairosDB telnet over TCP.
#[derive(Debug)]
pub struct KairosTelnetDecoder {
    framer: LineFramer,
    options: TelnetOptions,
    replies: Vec<u8>,
}

impl KairosTelnetDecoder {
    /// A decoder accepting lines of at most `max_line_bytes` (KairosDB: 1024)
    /// with KairosDB's default options.
    pub fn new(max_line_bytes: usize) -> Self {
        Self::with_options(max_line_bytes, TelnetOptions::default())
    }

    /// A decoder with explicit options.
    pub fn with_options(max_line_bytes: usize, options: TelnetOptions) -> Self {
        Self {
            framer: LineFramer::new(max_line_bytes),
            options,
            replies: Vec::new(),
        }
    }
}

impl StreamDecoder for KairosTelnetDecoder {
    fn decode(
        &mut self,
        buf: &[u8],
        _received_at: Timestamp,
        out: &mut Batch,
        rejects: &mut Rejects,
    ) -> Result<usize, FrameError> {
        let Self {
            framer,
            options,
            replies,
        } = self;
        Ok(framer.frame(buf, |line| match line {
            Line::Complete(bytes) => {
                if let Err(reason) = parse_line(bytes, options, out, replies) {
                    rejects.add(reason, bytes);
                }
            }
            Line::TooLong { len } => {
                rejects.add_with_detail(Reason::LineTooLong, &[], || format!("{len} bytes"));
            }
        }))
    }

    fn decode_eof(&mut self, rest: &[u8], rejects: &mut Rejects) {
        let was_discarding = self.framer.finish(|line| {
            if let Line::TooLong { len } = line {
                rejects.add_with_detail(Reason::LineTooLong, &[], || format!("{len} bytes"));
            }
        });
        // KairosDB drops a last line without `\n`; one without words loses nothing.
        if !was_discarding && !rest.iter().all(|b| is_separator(*b)) {
            rejects.add(Reason::Truncated, rest);
        }
    }

    fn take_reply(&mut self) -> Option<Vec<u8>> {
        (!self.replies.is_empty()).then(|| std::mem::take(&mut self.replies))
    }
}

/// Encoder for KairosDB telnet upstreams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KairosTelnetEncoder {
    /// Which command numeric values are written with.
    pub mode: TelnetMode,
    /// The upstream's `max_command_size`: longer lines are skipped.
    pub max_line: usize,
}

impl Default for KairosTelnetEncoder {
    fn default() -> Self {
        Self {
            mode: TelnetMode::Put,
            max_line: DEFAULT_MAX_COMMAND_BYTES,
        }
    }
}

impl Encoder for KairosTelnetEncoder {
    fn encode(
        &mut self,
        points: &mut dyn Iterator<Item = PointRef<'_>>,
        out: &mut Vec<u8>,
        skipped: &mut Skipped,
    ) -> usize {
        let mut written = 0;
        for point in points {
            match write_line(&point, self.mode, self.max_line, out) {
                Ok(()) => written += 1,
                Err(reason) => skipped.add(reason),
            }
        }
        written
    }
}

// === words ===

/// KairosDB's word separators: every char `<= 0x20` (space, tab, CR, NUL, ...).
fn is_separator(byte: u8) -> bool {
    byte <= b' '
}

/// The words of a line, with KairosDB's quoting. Every byte that matters
/// here is ASCII, so splitting bytes splits UTF-8 and ISO-8859-1 alike.
struct Words<'a> {
    line: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for Words<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let line = self.line;
        let start = self.pos + line[self.pos..].iter().position(|b| !is_separator(*b))?;
        if line[start] == b'"' {
            let content = start + 1;
            // The word closes at a `"` followed by a separator or the line end.
            let close = (content..line.len())
                .find(|&i| line[i] == b'"' && line.get(i + 1).is_none_or(|b| is_separator(*b)));
            return Some(match close {
                Some(end) => {
                    self.pos = end + 1;
                    &line[content..end]
                }
                None => {
                    // Unterminated: the rest of the (trimmed) line is one word.
                    self.pos = line.len();
                    let rest = &line[content..];
                    let len = rest
                        .iter()
                        .rposition(|b| !is_separator(*b))
                        .map_or(0, |i| i + 1);
                    &rest[..len]
                }
            });
        }
        let end = line[start..]
            .iter()
            .position(|b| is_separator(*b))
            .map_or(line.len(), |n| start + n);
        self.pos = end;
        Some(&line[start..end])
    }
}

/// Decoded `(key, value)` tags of one line.
type TagList<'a> = SmallVec<[(Cow<'a, str>, Cow<'a, str>); 8]>;

/// The tag words of a put line: the tags to store and the TTL (0 = none).
fn parse_tags<'a>(words: Words<'a>) -> Result<(TagList<'a>, u32), Reason> {
    let mut tags = TagList::new();
    let mut ttl = 0;
    for word in words {
        let (key, tag_value) = split_tag(word)?;
        if key == TTL_TAG.as_bytes() {
            ttl = parse_ttl(tag_value)?;
        } else {
            // The whole word decides the charset, as if decoded before the split.
            let utf8 = std::str::from_utf8(word).is_ok();
            tags.push((decode_part(key, utf8), decode_part(tag_value, utf8)));
        }
    }
    Ok((tags, ttl))
}

/// UTF-8 when the word is valid UTF-8, otherwise ISO-8859-1 (one char per
/// byte) as KairosDB decodes it.
fn decode_word(word: &[u8]) -> Cow<'_, str> {
    decode_part(word, std::str::from_utf8(word).is_ok())
}

/// A part of a word, decoded as UTF-8 only if the whole word is UTF-8.
fn decode_part(part: &[u8], word_is_utf8: bool) -> Cow<'_, str> {
    match std::str::from_utf8(part) {
        Ok(text) if word_is_utf8 => Cow::Borrowed(text),
        _ => Cow::Owned(part.iter().map(|&b| char::from(b)).collect()),
    }
}

/// Splits a tag word like Java's `"k=v=w".split("=")` and keeps the first
/// two parts. Trailing empty parts are dropped by Java, so `host=` has one
/// part; `a==b` has an empty value; both are errors in KairosDB.
fn split_tag(word: &[u8]) -> Result<(&[u8], &[u8]), Reason> {
    let mut parts = word.split(|b| *b == b'=');
    let key = parts.next().unwrap_or_default();
    let value = parts.next().unwrap_or_default();
    if key.is_empty() || value.is_empty() {
        return Err(Reason::BadTag);
    }
    Ok((key, value))
}

/// Writes a name or text value as one word, quoting it when the splitter
/// would otherwise cut it or strip a leading `"`. `None` when no word can
/// carry it: a `\n` ends the line, and inside quotes a `"` followed by a
/// separator ends the word.
fn write_word(word: &str, out: &mut Vec<u8>) -> Option<()> {
    let bytes = word.as_bytes();
    if bytes.contains(&b'\n') {
        return None;
    }
    let needs_quotes =
        bytes.first().is_none_or(|b| *b == b'"') || bytes.iter().any(|b| is_separator(*b));
    if !needs_quotes {
        out.extend_from_slice(bytes);
        return Some(());
    }
    if bytes
        .windows(2)
        .any(|pair| pair[0] == b'"' && is_separator(pair[1]))
    {
        return None;
    }
    out.push(b'"');
    out.extend_from_slice(bytes);
    out.push(b'"');
    Some(())
}

/// A tag word is never quoted (its first char is the key's), so keys and
/// values must be plain: no separator, no `=`, not empty; a key must not
/// start a quote or be the TTL option.
fn is_writable_tag_key(key: &str) -> bool {
    is_writable_tag_value(key) && !key.starts_with('"') && key != TTL_TAG
}

fn is_writable_tag_value(text: &str) -> bool {
    !text.is_empty() && !text.bytes().any(|b| is_separator(b) || b == b'=')
}

// === numbers ===

/// A value word: a Java double when it contains `.`, else a Java long.
fn parse_value(word: &[u8]) -> Result<Value, Reason> {
    if !word.contains(&b'.') {
        return parse_long(word).map(Value::I64).ok_or(Reason::BadValue);
    }
    match parse_java_double(word) {
        // KairosDB stores `1.0e999` as Infinity, then cannot serialise it
        // in its JSON query output; refuse it here instead.
        Some(value) if value.is_finite() => Ok(Value::F64(value)),
        _ => Err(Reason::BadValue),
    }
}

/// KairosDB's `Util.parseLong`: an optional `-`, then ASCII digits, within `i64`.
fn parse_long(text: &[u8]) -> Option<i64> {
    match text.split_first() {
        Some((b'-', digits)) => 0i64.checked_sub_unsigned(parse_digits(digits)?),
        _ => i64::try_from(parse_digits(text)?).ok(),
    }
}

/// One or more ASCII digits, within `u64`.
fn parse_digits(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &b| {
        let digit = char::from(b).to_digit(10)?;
        acc.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// A TTL as Java's `Integer.parseInt` reads it. Zero means "no TTL" (as in
/// KairosDB); a negative TTL means nothing and cannot be carried.
fn parse_ttl(text: &[u8]) -> Result<u32, Reason> {
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, text),
    };
    match parse_digits(digits) {
        Some(0) => Ok(0),
        Some(secs) if !negative && secs <= i32::MAX as u64 => Ok(secs as u32),
        _ => Err(Reason::BadTag),
    }
}

/// Java's `Double.parseDouble`: surrounding chars `<= 0x20` trimmed, an
/// optional sign, a decimal or `0x` hexadecimal float, and an optional
/// `d`/`D`/`f`/`F` suffix (which does not change the result). `NaN` and
/// `Infinity` are left out: they never contain the `.` that leads here.
fn parse_java_double(word: &[u8]) -> Option<f64> {
    let start = word.iter().position(|b| !is_separator(*b))?;
    let end = word.iter().rposition(|b| !is_separator(*b))? + 1;
    let mut text = &word[start..end];
    if let Some((b'd' | b'D' | b'f' | b'F', rest)) = text.split_last() {
        text = rest;
    }
    let (negative, body) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, text),
    };
    let magnitude = match body {
        [b'0', b'x' | b'X', hex @ ..] => parse_hex_float(hex)?,
        // Rust's parser is correctly rounded like Java's and accepts the
        // same decimal syntax once signs, `inf` and `nan` are ruled out.
        [b'0'..=b'9' | b'.', ..]
            if body
                .iter()
                .all(|b| matches!(b, b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')) =>
        {
            std::str::from_utf8(body).ok()?.parse::<f64>().ok()?
        }
        _ => return None,
    };
    Some(if negative { -magnitude } else { magnitude })
}

/// The part of a Java hex float after `0x`: hex digits with an optional
/// `.`, then a mandatory binary exponent `p[sign]digits`. Correctly rounded.
fn parse_hex_float(text: &[u8]) -> Option<f64> {
    let p = text.iter().position(|b| matches!(b, b'p' | b'P'))?;
    let (mantissa, exponent) = (&text[..p], &text[p + 1..]);
    let (exponent_negative, exponent_digits) = match exponent.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, exponent),
    };
    if exponent_digits.is_empty() || !exponent_digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // Past ±2^20 every result is zero or infinite, so saturating is exact.
    let exponent = exponent_digits.iter().fold(0i64, |acc, &b| {
        (acc * 10 + i64::from(b - b'0')).min(1 << 20)
    });
    let mut exp2 = if exponent_negative {
        -exponent
    } else {
        exponent
    };
    let (mut bits, mut sticky, mut seen_dot, mut n_digits) = (0u64, false, false, 0);
    for &b in mantissa {
        if b == b'.' && !seen_dot {
            seen_dot = true;
            continue;
        }
        let digit = u64::from(char::from(b).to_digit(16)?);
        n_digits += 1;
        if bits >> 60 == 0 {
            bits = bits << 4 | digit;
            exp2 -= if seen_dot { 4 } else { 0 };
        } else {
            // Beyond 64 bits only "something non-zero was dropped" matters.
            sticky |= digit != 0;
            exp2 += if seen_dot { 0 } else { 4 };
        }
    }
    (n_digits > 0).then(|| round_to_f64(bits, sticky, exp2))
}

/// `bits × 2^exp2` (plus a little more when `sticky`), rounded half to even.
fn round_to_f64(bits: u64, sticky: bool, exp2: i64) -> f64 {
    if bits == 0 {
        return 0.0;
    }
    let top = exp2 + 63 - i64::from(bits.leading_zeros());
    if top > 1023 {
        return f64::INFINITY;
    }
    // The weight of the last bit a double keeps at this magnitude.
    let lsb = (top - 52).max(-1074);
    let shift = lsb - exp2;
    if shift <= 0 {
        // At most 53 significant bits and no sticky bits: exact.
        return bits as f64 * pow2(exp2);
    }
    if shift > 64 {
        return 0.0;
    }
    let (kept, rest) = if shift == 64 {
        (0, bits)
    } else {
        (bits >> shift, bits & ((1 << shift) - 1))
    };
    let half = 1u64 << (shift - 1);
    let round_up = rest > half || (rest == half && (sticky || kept & 1 == 1));
    (kept + u64::from(round_up)) as f64 * pow2(lsb)
}

/// `2^exp` for `-1074 <= exp <= 1023`, built from its bits.
fn pow2(exp: i64) -> f64 {
    if exp >= -1022 {
        f64::from_bits(((exp + 1023) as u64) << 52)
    } else {
        f64::from_bits(1u64 << (exp + 1074))
    }
}

/// Writes a value so that KairosDB reads back the same long or double.
fn write_value(value: &Value, out: &mut Vec<u8>) -> Result<(), Unrepresentable> {
    let mut ints = itoa::Buffer::new();
    let text = match value {
        Value::I32(v) => ints.format(*v),
        Value::U32(v) => ints.format(*v),
        Value::I64(v) => ints.format(*v),
        Value::U64(v) => match i64::try_from(*v) {
            Ok(v) => ints.format(v),
            // Beyond a Java long: the nearest double is the best KairosDB can hold.
            Err(_) => return write_double(*v as f64, out),
        },
        Value::F64(v) => return write_double(*v, out),
        Value::Text(text) => {
            // A text no telnet word can carry (a `\n`, or `"` before a space).
            return write_word(text, out).ok_or(Unrepresentable::Text);
        }
        Value::Histogram(_) => return Err(Unrepresentable::Histogram),
        Value::Absent(_) => return Err(Unrepresentable::Absent),
    };
    out.extend_from_slice(text.as_bytes());
    Ok(())
}

/// The shortest round-trip form, always with a `.`: KairosDB parses a word
/// without one as a long, so ryu's `1e20` becomes `1.0e20`.
fn write_double(value: f64, out: &mut Vec<u8>) -> Result<(), Unrepresentable> {
    if !value.is_finite() {
        return Err(Unrepresentable::NonFiniteValue);
    }
    let mut buffer = ryu::Buffer::new();
    let text = buffer.format_finite(value);
    // ryu writes `1e20` for some doubles; a `.` before the exponent keeps them doubles.
    let bytes = text.as_bytes();
    let exponent_at = bytes.iter().position(|b| *b == b'e').unwrap_or(bytes.len());
    let (mantissa, exponent) = bytes.split_at(exponent_at);
    out.extend_from_slice(mantissa);
    if !mantissa.contains(&b'.') {
        out.extend_from_slice(b".0");
    }
    out.extend_from_slice(exponent);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;
    use crate::model::{Histogram, Point, ValueKind};

    const NOW: Timestamp = Timestamp::from_millis(1_800_000_000_000);

    type Tags = &'static [(&'static str, &'static str)];

    fn words(line: &str) -> Vec<String> {
        Words {
            line: line.as_bytes(),
            pos: 0,
        }
        .map(|word| String::from_utf8_lossy(word).into_owned())
        .collect()
    }

    fn decode_with(input: &[u8], options: TelnetOptions) -> (Batch, Rejects, Vec<u8>) {
        let mut decoder = KairosTelnetDecoder::with_options(DEFAULT_MAX_COMMAND_BYTES, options);
        let mut batch = Batch::new();
        let mut rejects = Rejects::default();
        let used = decoder
            .decode(input, NOW, &mut batch, &mut rejects)
            .expect("line framing never fails");
        decoder.decode_eof(&input[used..], &mut rejects);
        let reply = decoder.take_reply().unwrap_or_default();
        (batch, rejects, reply)
    }

    fn decode(input: &[u8]) -> (Vec<Point>, Rejects) {
        let (batch, rejects, _) = decode_with(input, TelnetOptions::default());
        (batch.to_points(), rejects)
    }

    /// Parses one line; the point or the reason.
    fn parse(line: &str) -> Result<Point, Reason> {
        let mut batch = Batch::new();
        let mut replies = Vec::new();
        let options = TelnetOptions::default();
        match parse_line(line.as_bytes(), &options, &mut batch, &mut replies)? {
            true => Ok(batch.to_points().remove(0)),
            false => panic!("no point from {line:?}"),
        }
    }

    fn tags(point: &Point) -> Vec<(&str, &str)> {
        point
            .tags
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    fn encode_with(encoder: &mut KairosTelnetEncoder, batch: &Batch) -> (String, Skipped) {
        let mut out = Vec::new();
        let mut skipped = Skipped::default();
        encoder.encode(&mut batch.iter(), &mut out, &mut skipped);
        (String::from_utf8(out).expect("utf-8"), skipped)
    }

    fn encode(points: &[Point]) -> (String, Skipped) {
        let batch: Batch = points.iter().cloned().collect();
        encode_with(&mut KairosTelnetEncoder::default(), &batch)
    }

    #[test]
    fn examples_from_protocols_md_4_5() {
        let ok: &[(&str, &str, i64, Value, Tags)] = &[
            (
                "put sys.cpu 1700000000 42 host=a dc=x",
                "sys.cpu",
                1_700_000_000_000,
                Value::I64(42),
                &[("dc", "x"), ("host", "a")],
            ),
            (
                "put sys.cpu 1700000000123 42.5 host=a",
                "sys.cpu",
                1_700_000_000_123,
                Value::F64(42.5),
                &[("host", "a")],
            ),
            (
                "putm sys.cpu 1700000000 1 host=a",
                "sys.cpu",
                1_700_000_000,
                Value::I64(1),
                &[("host", "a")],
            ),
            (
                "put \"my metric\" 1700000000 1 host=a",
                "my metric",
                1_700_000_000_000,
                Value::I64(1),
                &[("host", "a")],
            ),
            (
                "put m 1700000000 1 a=b=c",
                "m",
                1_700_000_000_000,
                Value::I64(1),
                &[("a", "b")],
            ),
            (
                "put m 1700000000 1",
                "m",
                1_700_000_000_000,
                Value::I64(1),
                &[("add", "tag")],
            ),
            (
                "puts m 1700000000123 hello host=a",
                "m",
                1_700_000_000_123,
                Value::Text("hello".into()),
                &[("host", "a")],
            ),
        ];
        for (line, name, ms, value, expected_tags) in ok {
            let point = parse(line).unwrap_or_else(|reason| panic!("{line}: {reason}"));
            assert_eq!(point.name, *name, "{line}");
            assert_eq!(point.timestamp.as_millis(), *ms, "{line}");
            assert_eq!(point.value, *value, "{line}");
            assert_eq!(tags(&point), *expected_tags, "{line}");
        }
        assert_eq!(parse("put m 1700000000 1e5 host=a"), Err(Reason::BadValue));
    }

    #[test]
    fn word_splitter_examples_from_protocols_md_4_2_and_upstream_tests() {
        let cases: &[(&str, &[&str])] = &[
            ("\"quoted space\" at", &["quoted space", "at"]),
            ("string \"with\"in\" it", &["string", "with\"in", "it"]),
            (
                "simple white space string",
                &["simple", "white", "space", "string"],
            ),
            ("uses\ttab\tseparators", &["uses", "tab", "separators"]),
            ("", &[]),
            ("  \t  \t", &[]),
            (
                "  space at start and end  ",
                &["space", "at", "start", "and", "end"],
            ),
            ("a\rb\x00c\x1fd", &["a", "b", "c", "d"]),
            ("a\"b\" c", &["a\"b\"", "c"]),
            ("\"\" x", &["", "x"]),
            ("\"ab\"\" x", &["ab\"", "x"]),
            ("x \"unterminated rest  ", &["x", "unterminated rest"]),
            ("x \"", &["x", ""]),
        ];
        for (line, expected) in cases {
            assert_eq!(words(line), *expected, "{line:?}");
        }
    }

    #[test]
    fn put_reads_small_timestamps_as_seconds_and_putm_never_does() {
        let cases: &[(&str, Result<i64, Reason>)] = &[
            ("put m 2999999999 1", Ok(2_999_999_999_000)),
            ("put m 3000000000 1", Ok(3_000_000_000)),
            ("put m 0 1", Ok(0)),
            ("put m -5 1", Ok(-5000)),
            ("putm m -5 1", Ok(-5)),
            ("putm m 2999999999 1", Ok(2_999_999_999)),
            ("put m 9223372036854775807 1", Ok(i64::MAX)),
            ("putm m -9223372036854775808 1", Ok(i64::MIN)),
            ("put m -9223372036854775808 1", Err(Reason::BadTimestamp)),
            ("put m 9223372036854775808 1", Err(Reason::BadTimestamp)),
            ("put m +5 1", Err(Reason::BadTimestamp)),
            ("put m 1.5 1", Err(Reason::BadTimestamp)),
            ("put m 1e9 1", Err(Reason::BadTimestamp)),
            ("put m - 1", Err(Reason::BadTimestamp)),
            ("put m -- 1", Err(Reason::BadTimestamp)),
        ];
        for (line, expected) in cases {
            let got = parse(line).map(|point| point.timestamp.as_millis());
            assert_eq!(got, *expected, "{line}");
        }
    }

    #[test]
    fn values_parse_as_java_long_or_double() {
        let cases: &[(&str, Result<Value, Reason>)] = &[
            ("42", Ok(Value::I64(42))),
            ("-7", Ok(Value::I64(-7))),
            ("9223372036854775807", Ok(Value::I64(i64::MAX))),
            ("1.", Ok(Value::F64(1.0))),
            (".5", Ok(Value::F64(0.5))),
            ("-.5", Ok(Value::F64(-0.5))),
            ("+1.5", Ok(Value::F64(1.5))),
            ("1.5e3", Ok(Value::F64(1500.0))),
            ("1.0E-3", Ok(Value::F64(0.001))),
            ("1.e2", Ok(Value::F64(100.0))),
            ("1.5f", Ok(Value::F64(1.5))),
            ("2.5D", Ok(Value::F64(2.5))),
            ("0x1.8p1", Ok(Value::F64(3.0))),
            ("-0X.8P+1d", Ok(Value::F64(-1.0))),
            ("1e5", Err(Reason::BadValue)),
            ("+5", Err(Reason::BadValue)),
            ("1_000", Err(Reason::BadValue)),
            ("NaN", Err(Reason::BadValue)),
            ("Infinity", Err(Reason::BadValue)),
            ("NaN.", Err(Reason::BadValue)),
            ("Infinity.", Err(Reason::BadValue)),
            ("inf.0", Err(Reason::BadValue)),
            ("1.0e999", Err(Reason::BadValue)),
            ("9223372036854775808", Err(Reason::BadValue)),
            (".", Err(Reason::BadValue)),
            (".e5", Err(Reason::BadValue)),
            ("1.5e", Err(Reason::BadValue)),
            ("1.5ff", Err(Reason::BadValue)),
            ("--1.5", Err(Reason::BadValue)),
            ("1,5", Err(Reason::BadValue)),
            ("0x1.8", Err(Reason::BadValue)),
            ("0x.p1", Err(Reason::BadValue)),
            ("0x1.fffffffffffff8p1023", Err(Reason::BadValue)),
            ("\"\"", Err(Reason::BadValue)),
        ];
        for (word, expected) in cases {
            let line = format!("put m 1700000000 {word} host=a");
            assert_eq!(parse(&line).map(|p| p.value), *expected, "{word}");
        }
        // A quoted value is trimmed by Double.parseDouble, not by parseLong.
        assert_eq!(
            parse("put m 1 \" 2.5 \" a=b").map(|p| p.value),
            Ok(Value::F64(2.5))
        );
        assert_eq!(
            parse("put m 1 \" 2 \" a=b").map(|p| p.value),
            Err(Reason::BadValue)
        );
    }

    #[test]
    fn hex_floats_are_correctly_rounded() {
        let cases: &[(&str, f64)] = &[
            ("0x1.fffffffffffffp1023", f64::MAX),
            ("0x1.p-1022", f64::MIN_POSITIVE),
            ("0x0.0000000000001p-1022", 5e-324),
            ("0x1.0p-1075", 0.0),
            ("0x1.8p-1075", 5e-324),
            ("0x1.00000000000008p0", 1.0),
            ("0x1.00000000000008000001p0", 1.0 + f64::EPSILON),
            ("0x1.00000000000018p0", 1.0 + 2.0 * f64::EPSILON),
            (
                "0x123456789abcdef0123.4p-72",
                0x1234_5678_9abc_def0_u64 as f64 / 2f64.powi(60),
            ),
            ("0x0.000p99999999999999999", 0.0),
        ];
        for (text, expected) in cases {
            assert_eq!(
                parse_java_double(text.as_bytes()),
                Some(*expected),
                "{text}"
            );
        }
    }

    #[test]
    fn tags_follow_java_split_rules() {
        let cases: &[(&str, Result<Tags, Reason>)] = &[
            ("host", Err(Reason::BadTag)),
            ("host=", Err(Reason::BadTag)),
            ("=x", Err(Reason::BadTag)),
            ("=", Err(Reason::BadTag)),
            ("a==b", Err(Reason::BadTag)),
            ("a=b=c", Ok(&[("a", "b")])),
            ("a=b=", Ok(&[("a", "b")])),
            ("k=1 k=2", Ok(&[("k", "2")])),
            ("z=1 a=2", Ok(&[("a", "2"), ("z", "1")])),
            ("\"a b=c d\"", Ok(&[("a b", "c d")])),
        ];
        for (tag_words, expected) in cases {
            let line = format!("put m 1700000000 1 {tag_words}");
            let got = parse(&line);
            match expected {
                Ok(expected) => assert_eq!(tags(&got.expect("accepted")), *expected, "{line}"),
                Err(reason) => assert_eq!(got, Err(*reason), "{line}"),
            }
        }
        // The same reasons and order KairosDB checks in.
        let errors: &[(&str, Reason)] = &[
            ("put m 1700000000", Reason::TooFewWords),
            ("put", Reason::TooFewWords),
            ("put \"\" 1700000000 1", Reason::EmptyName),
            ("PUT m 1700000000 1", Reason::UnknownCommand),
            ("help", Reason::UnknownCommand),
            ("\"\" x", Reason::UnknownCommand),
        ];
        for (line, reason) in errors {
            assert_eq!(parse(line), Err(*reason), "{line}");
        }
    }

    #[test]
    fn without_default_tag_an_untagged_point_stays_untagged() {
        let options = TelnetOptions { default_tag: None };
        let (batch, rejects, _) = decode_with(b"put m 1700000000 1\n", options);
        assert_eq!(rejects.total(), 0);
        assert!(batch.to_points()[0].tags.is_empty());
    }

    #[test]
    fn the_ttl_option_sets_the_ttl_and_is_not_a_tag() {
        let (batch, rejects, _) = decode_with(
            b"put m 1700000000 1 host=a kairos_opt.ttl=60\n\
              put m 1700000000 1 kairos_opt.ttl=+30\n\
              put m 1700000000 1 kairos_opt.ttl=0 host=a\n\
              put m 1700000000 1 kairos_opt.ttl=1h\n\
              put m 1700000000 1 kairos_opt.ttl=-5\n\
              put m 1700000000 1 kairos_opt.ttl=2147483648\n\
              put m 1700000000 1 kairos_opt.ttl=\n",
            TelnetOptions::default(),
        );
        let got: Vec<_> = batch
            .iter()
            .map(|p| (p.ttl(), p.tags().collect::<Vec<_>>()))
            .collect();
        assert_eq!(
            got,
            vec![
                (Some(60), vec![("host", "a")]),
                // KairosDB counts only stored tags, so a lone TTL gets add=tag.
                (Some(30), vec![("add", "tag")]),
                (None, vec![("host", "a")]),
            ]
        );
        assert_eq!(rejects.count(Reason::BadTag), 4);
    }

    #[test]
    fn version_answers_and_adds_no_point() {
        let (batch, rejects, reply) =
            decode_with(b"version\nversion extra words\n", TelnetOptions::default());
        assert!(batch.is_empty());
        assert_eq!(rejects.total(), 0);
        let expected = format!("tsrelay {}\n", env!("CARGO_PKG_VERSION"));
        assert_eq!(VERSION_REPLY, expected);
        assert_eq!(String::from_utf8(reply).expect("utf-8"), expected.repeat(2));
        let mut decoder = KairosTelnetDecoder::new(100);
        assert_eq!(decoder.take_reply(), None);
    }

    #[test]
    fn bad_lines_are_rejected_one_at_a_time() {
        let mut input = b"put ok.1 1700000000 1 a=b\r\n\n  \t \n".to_vec();
        input.extend_from_slice(&vec![b'x'; 2000]);
        input.extend_from_slice(b" 1 1 a=b\nput bad 1700000000 1e5 a=b\n");
        input.extend_from_slice(b"put ok.2\r1700000000\t2 a=b\ncpu 1 2 3\nput partial 1");
        let (points, rejects) = decode(&input);
        let names: Vec<_> = points.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, vec!["ok.1", "ok.2"]);
        assert_eq!(rejects.count(Reason::LineTooLong), 1);
        assert_eq!(rejects.count(Reason::BadValue), 1);
        assert_eq!(rejects.count(Reason::UnknownCommand), 1);
        assert_eq!(rejects.count(Reason::Truncated), 1);
        assert_eq!(rejects.total(), 4);
    }

    #[test]
    fn the_line_limit_counts_bytes_before_the_newline() {
        let line = format!("put m 1700000000 1 k={}", "v".repeat(1000));
        let exact = format!(
            "{line}{}\n",
            "v".repeat(DEFAULT_MAX_COMMAND_BYTES - line.len())
        );
        let (points, rejects) = decode(exact.as_bytes());
        assert_eq!((points.len(), rejects.total()), (1, 0));
        let over = format!("{}v\nput m 1700000000 2 a=b\n", exact.trim_end());
        let (points, rejects) = decode(over.as_bytes());
        assert_eq!(points.len(), 1);
        assert_eq!(rejects.count(Reason::LineTooLong), 1);
        // An oversized partial line at EOF is too long, not truncated.
        let (_, rejects) = decode(&[b'x'; 3000]);
        assert_eq!(rejects.count(Reason::LineTooLong), 1);
        assert_eq!(rejects.total(), 1);
        // Only separators before EOF lose nothing.
        let (_, rejects) = decode(b"put m 1700000000 1 a=b\n \r\x00");
        assert_eq!(rejects.total(), 0);
    }

    #[test]
    fn invalid_utf8_words_are_iso_8859_1_and_valid_ones_stay_utf8() {
        let (points, rejects) =
            decode(b"put caf\xe9 1700000000 1 city=z\xfcrich name=\xc3\xa9t\xc3\xa9\n");
        assert_eq!(rejects.total(), 0);
        assert_eq!(points[0].name, "café");
        assert_eq!(tags(&points[0]), vec![("city", "zürich"), ("name", "été")]);
        let (points, _) = decode(b"puts m 1700000000123 \xff\xfe a=b\n");
        assert_eq!(points[0].value, Value::Text("ÿþ".into()));
        // One bad byte makes the whole tag word ISO-8859-1, key included.
        let (points, _) = decode(b"put m 1700000000 1 k\xc3\xa9=v\xff\n");
        assert_eq!(tags(&points[0]), vec![("kÃ©", "vÿ")]);
    }

    #[test]
    fn writer_output_for_each_value_type() {
        let at = Timestamp::from_millis(1_700_000_000_123);
        let early = Timestamp::from_millis(2_999_999_999);
        let histogram = Arc::new(Histogram::default());
        let (text, skipped) = encode(&[
            Point::new("i32", at, Value::I32(-3)).with_tag("host", "a"),
            Point::new("u32", at, Value::U32(4_000_000_000)).with_tag("host", "a"),
            Point::new("i64", at, Value::I64(i64::MIN)).with_tag("host", "a"),
            Point::new("u64", at, Value::U64(u64::MAX)).with_tag("host", "a"),
            Point::new("whole", at, Value::F64(2.0)).with_tag("host", "a"),
            Point::new("big", at, Value::F64(1e20)).with_tag("host", "a"),
            Point::new("tiny", at, Value::F64(-1.5e-7)).with_tag("host", "a"),
            Point::new("negzero", at, Value::F64(-0.0)).with_tag("host", "a"),
            Point::new("text", at, Value::Text("hi there".into())).with_tag("host", "a"),
            Point::new("empty.text", at, Value::Text("".into())),
            Point::new("early", early, Value::I64(1))
                .with_tag("z", "1")
                .with_tag("a", "2"),
            Point::new("nan", at, Value::F64(f64::NAN)),
            Point::new("inf", at, Value::F64(f64::NEG_INFINITY)),
            Point::new("hist", at, Value::Histogram(histogram)),
            Point::new("absent", at, Value::Absent(ValueKind::F64)),
            Point::new("bad.text", at, Value::Text("a\nb".into())),
        ]);
        assert_eq!(
            text,
            "put i32 1700000000123 -3 host=a\n\
             put u32 1700000000123 4000000000 host=a\n\
             put i64 1700000000123 -9223372036854775808 host=a\n\
             put u64 1700000000123 1.8446744073709552e19 host=a\n\
             put whole 1700000000123 2.0 host=a\n\
             put big 1700000000123 1.0e20 host=a\n\
             put tiny 1700000000123 -1.5e-7 host=a\n\
             put negzero 1700000000123 -0.0 host=a\n\
             puts text 1700000000123 \"hi there\" host=a\n\
             puts empty.text 1700000000123 \"\"\n\
             putm early 2999999999 1 a=2 z=1\n"
        );
        assert_eq!(skipped.count(Unrepresentable::NonFiniteValue), 2);
        assert_eq!(skipped.count(Unrepresentable::Histogram), 1);
        assert_eq!(skipped.count(Unrepresentable::Absent), 1);
        assert_eq!(skipped.count(Unrepresentable::Text), 1);
        assert_eq!(skipped.total(), 5);
    }

    #[test]
    fn putm_mode_and_ttl_are_written() {
        let mut batch = Batch::new();
        let at = Timestamp::from_millis(1_700_000_000_123);
        batch.push("m", [("host", "a")], at, Value::I64(1), None);
        batch.set_last_ttl(3600);
        batch.push("n", [], at, Value::I64(2), None);
        batch.set_last_ttl(u32::MAX);
        let mut encoder = KairosTelnetEncoder {
            mode: TelnetMode::Putm,
            max_line: 100,
        };
        let (text, skipped) = encode_with(&mut encoder, &batch);
        assert_eq!(skipped.total(), 0);
        assert_eq!(
            text,
            "putm m 1700000000123 1 host=a kairos_opt.ttl=3600\n\
             putm n 1700000000123 2 kairos_opt.ttl=2147483647\n"
        );
    }

    #[test]
    fn names_are_quoted_when_needed_and_unwritable_ones_skipped() {
        let at = Timestamp::from_millis(1_700_000_000_123);
        let point = |name: &str| Point::new(name, at, Value::I64(1)).with_tag("k", "v");
        let (text, skipped) = encode(&[
            point("my metric"),
            point("\"quoted"),
            point("say \"hi\""),
            point("with\"in"),
            point("你好:colon"),
            point("bad\" space"),
            point("new\nline"),
            point(""),
            point("m").with_tag("bad key", "v"),
            point("m").with_tag("k", "bad value"),
            point("m").with_tag("k=", "v"),
            point("m").with_tag("k", "a=b"),
            point("m").with_tag("\"k", "v"),
            point("m").with_tag("kairos_opt.ttl", "5"),
            point("m").with_tag("e", ""),
        ]);
        assert_eq!(
            text,
            "put \"my metric\" 1700000000123 1 k=v\n\
             put \"\"quoted\" 1700000000123 1 k=v\n\
             put \"say \"hi\"\" 1700000000123 1 k=v\n\
             put with\"in 1700000000123 1 k=v\n\
             put 你好:colon 1700000000123 1 k=v\n"
        );
        assert_eq!(skipped.count(Unrepresentable::InvalidName), 10);
        let (decoded, rejects) = decode(text.as_bytes());
        assert_eq!(rejects.total(), 0);
        let names: Vec<_> = decoded.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "my metric",
                "\"quoted",
                "say \"hi\"",
                "with\"in",
                "你好:colon"
            ]
        );
    }

    #[test]
    fn lines_over_the_limit_are_skipped_whole() {
        let at = Timestamp::from_millis(1_700_000_000_123);
        let batch: Batch = [
            Point::new("a", at, Value::I64(1)).with_tag("k", "v"),
            Point::new("b".repeat(30), at, Value::I64(1)).with_tag("k", "v"),
        ]
        .into_iter()
        .collect();
        let line_len = "put a 1700000000123 1 k=v".len();
        let mut encoder = KairosTelnetEncoder {
            mode: TelnetMode::Put,
            max_line: line_len,
        };
        let (text, skipped) = encode_with(&mut encoder, &batch);
        assert_eq!(text, "put a 1700000000123 1 k=v\n");
        assert_eq!(skipped.count(Unrepresentable::LineTooLong), 1);
        encoder.max_line = line_len - 1;
        let (text, skipped) = encode_with(&mut encoder, &batch);
        assert_eq!((text.as_str(), skipped.total()), ("", 2));
    }

    fn arb_name() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9_.:\\-\"é你 ]{1,30}"
    }

    fn arb_tags() -> impl Strategy<Value = Vec<(String, String)>> {
        proptest::collection::vec(
            ("[a-zA-Z0-9_.\\-é]{1,8}", "[a-zA-Z0-9_.:\"/\\-é]{1,12}"),
            0..4,
        )
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<i64>().prop_map(Value::I64),
            (proptest::num::f64::NORMAL | proptest::num::f64::SUBNORMAL | proptest::num::f64::ZERO)
                .prop_map(Value::F64),
            "[a-z \"é]{0,10}".prop_map(|text| Value::Text(text.as_str().into())),
        ]
    }

    proptest! {
        #[test]
        fn write_then_parse_round_trips(
            name in arb_name(),
            tags in arb_tags(),
            value in arb_value(),
            millis in prop_oneof![3_000_000_000i64..=i64::MAX, any::<i64>()],
            ttl in prop_oneof![Just(0u32), 1u32..=i32::MAX as u32],
            putm in any::<bool>(),
        ) {
            let mut batch = Batch::new();
            let tag_refs = tags.iter().map(|(k, v)| (k.as_str(), v.as_str()));
            batch.push(&name, tag_refs, Timestamp::from_millis(millis), value, None);
            batch.set_last_ttl(ttl);
            let point = batch.get(0).expect("one point");
            let mode = if putm { TelnetMode::Putm } else { TelnetMode::Put };
            let mut out = Vec::new();
            if let Err(reason) = write_line(&point, mode, usize::MAX, &mut out) {
                // Only a `"` before a separator inside a quoted word is unwritable.
                let text_has_quote = matches!(point.value(), Value::Text(text) if text.contains('"'));
                prop_assert!(name.contains('"') || text_has_quote);
                prop_assert!(matches!(reason, Unrepresentable::InvalidName | Unrepresentable::Text));
                prop_assert!(out.is_empty());
                return Ok(());
            }
            let (decoded, rejects, _) =
                decode_with(&out, TelnetOptions { default_tag: None });
            prop_assert_eq!(rejects.total(), 0);
            let again = decoded.get(0).expect("one point");
            prop_assert_eq!(again.to_point(), point.to_point());
            prop_assert_eq!(again.ttl(), point.ttl());
        }

        #[test]
        fn java_hex_floats_round_trip(bits in any::<u64>()) {
            let value = f64::from_bits(bits);
            prop_assume!(value.is_finite());
            let (sign, magnitude) = (if value < 0.0 { "-" } else { "" }, value.abs());
            let raw = magnitude.to_bits();
            let (exponent, fraction) = ((raw >> 52) as i64, raw & ((1 << 52) - 1));
            let text = if exponent == 0 {
                format!("{sign}0x0.{fraction:013x}p-1022")
            } else {
                format!("{sign}0x1.{fraction:013x}p{}", exponent - 1023)
            };
            let parsed = parse_java_double(text.as_bytes()).expect(&text);
            prop_assert_eq!(parsed.to_bits(), value.to_bits(), "{}", text);
        }

        #[test]
        fn arbitrary_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..512)) {
            let (points, rejects) = decode(&input);
            let lines = input.iter().filter(|b| **b == b'\n').count() as u64;
            prop_assert!(points.len() as u64 + rejects.total() <= lines + 1);
        }

        #[test]
        fn arbitrary_put_lines_never_panic(line in "(put|putm|puts) [ -~\t\"=.]{0,60}") {
            let mut batch = Batch::new();
            let mut replies = Vec::new();
            let _ = parse_line(line.as_bytes(), &TelnetOptions::default(), &mut batch, &mut replies);
            prop_assert!(batch.len() <= 1);
        }
    }
}

#[cfg(test)]
mod no_panic {
    use proptest::prelude::*;
    use proptest::sample::Index;

    use super::*;
    use crate::codec::read_split::{cut_points, decode_in_reads};

    /// Arbitrary bytes mixed with the words and separators of the protocol.
    fn arb_stream() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            4 => any::<u8>().prop_map(|b| vec![b]),
            1 => prop::sample::select(vec![
                &b"put "[..], b"putm ", b"puts ", b"version", b"\n", b" ", b"\"", b"=",
                b"kairos_opt.ttl=", b"1700000000 ", b"1.5 ", b"0x1p3 ", b"a=b ",
            ])
            .prop_map(<[u8]>::to_vec),
        ];
        proptest::collection::vec(piece, 0..160).prop_map(|pieces| pieces.concat())
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
                let mut decoder = KairosTelnetDecoder::new(64);
                decode_in_reads(&mut decoder, &input, cuts)
            };
            let whole = decode(&[]);
            prop_assert_eq!(&decode(&cut_points(input.len(), &cuts)), &whole);
            let lines = input.iter().filter(|b| **b == b'\n').count() as u64;
            prop_assert!(whole.records() <= lines + 1);
        }
    }
}
