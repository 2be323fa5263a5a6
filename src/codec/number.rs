//! Numbers as carbon reads them: Python's `float()` and the `-1` = now rule.
//!
//! Rust's `f64::from_str` already accepts what Python's does for ASCII input
//! (`1e3`, `.5`, `5.`, `+1`, `inf`, `infinity`, `nan` in any case) except
//! underscores between digits (`1_000`), which are handled here. Non-ASCII
//! Unicode digits, which Python also accepts, are rejected: no real sender
//! writes them and accepting them would cost the fast path.

use super::Reason;
use crate::model::Timestamp;

/// Parses a number the way Python's `float()` does (ASCII forms).
pub fn parse_python_float(text: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(text.trim_ascii()).ok()?;
    if let Ok(value) = text.parse::<f64>() {
        return Some(value);
    }
    // Only underscores can rescue a number Rust's parser refused.
    memchr::memchr(b'_', text.as_bytes())?;
    // Python allows one underscore between two digits, nowhere else.
    let bytes = text.as_bytes();
    let well_placed = bytes.iter().enumerate().all(|(i, &b)| {
        b != b'_'
            || (i > 0
                && i + 1 < bytes.len()
                && bytes[i - 1].is_ascii_digit()
                && bytes[i + 1].is_ascii_digit())
    });
    if !well_placed {
        return None;
    }
    text.replace('_', "").parse().ok()
}

/// Converts a Graphite timestamp in (possibly fractional) seconds to
/// milliseconds, applying carbon's rule that anything whose `int()` is `-1`
/// means "now".
///
/// # Errors
/// [`Reason::NonFiniteTimestamp`] for `inf`/`nan`, [`Reason::BadTimestamp`]
/// for text that is not a number or is outside the millisecond range.
pub fn parse_graphite_timestamp(text: &[u8], now: Timestamp) -> Result<Timestamp, Reason> {
    let ms = parse_seconds(text)?.as_millis();
    Ok(now_if_minus_one(ms, now))
}

/// Converts a timestamp in (possibly fractional) seconds to milliseconds
/// as written, without the `-1` rule (carbon's AMQP listener applies none).
///
/// # Errors
/// As [`parse_graphite_timestamp`].
pub fn parse_seconds(text: &[u8]) -> Result<Timestamp, Reason> {
    let ms = match parse_decimal_millis(text) {
        Some(ms) => ms,
        None => {
            let secs = parse_python_float(text).ok_or(Reason::BadTimestamp)?;
            seconds_to_millis(secs)?
        }
    };
    Ok(Timestamp::from_millis(ms))
}

/// Converts float seconds (pickle, AMQP) to milliseconds, rounding to the
/// nearest millisecond because the float itself is an approximation.
///
/// # Errors
/// As [`parse_graphite_timestamp`].
pub fn seconds_to_millis(secs: f64) -> Result<i64, Reason> {
    if !secs.is_finite() {
        return Err(Reason::NonFiniteTimestamp);
    }
    let ms = (secs * 1000.0).round();
    // i64::MAX as f64 rounds up to 2^63, so the bound must be exclusive.
    if ms >= -(i64::MAX as f64) && ms < i64::MAX as f64 {
        Ok(ms as i64)
    } else {
        Err(Reason::BadTimestamp)
    }
}

/// Carbon replaces a timestamp whose `int()` is `-1` (−2 < t ≤ −1) with the
/// arrival time.
pub fn now_if_minus_one(ms: i64, now: Timestamp) -> Timestamp {
    if (-1999..=-1000).contains(&ms) {
        now
    } else {
        Timestamp::from_millis(ms)
    }
}

/// Exact fast path for `[-]digits[.digits]`: keeps the first three
/// fractional digits and truncates the rest, so no float rounding creeps in.
fn parse_decimal_millis(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, text),
    };
    let (int_part, frac_part) = match memchr::memchr(b'.', digits) {
        Some(dot) => (&digits[..dot], &digits[dot + 1..]),
        None => (digits, &[][..]),
    };
    if int_part.is_empty() && frac_part.is_empty() {
        return None;
    }
    if int_part.len() > 15 || !int_part.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if !frac_part.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut secs: i64 = 0;
    for &digit in int_part {
        secs = secs * 10 + i64::from(digit - b'0');
    }
    let mut millis: i64 = 0;
    for position in 0..3 {
        let digit = frac_part.get(position).map_or(0, |d| i64::from(d - b'0'));
        millis = millis * 10 + digit;
    }
    let total = secs * 1000 + millis;
    Some(if negative { -total } else { total })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = Timestamp::from_millis(1_800_000_000_000);

    #[test]
    fn python_float_forms() {
        let cases: &[(&str, Option<f64>)] = &[
            ("1", Some(1.0)),
            ("1e3", Some(1000.0)),
            (".5", Some(0.5)),
            ("5.", Some(5.0)),
            ("+1.5", Some(1.5)),
            ("-2", Some(-2.0)),
            ("1_000", Some(1000.0)),
            ("1_000.5", Some(1000.5)),
            ("INF", Some(f64::INFINITY)),
            ("-Infinity", Some(f64::NEG_INFINITY)),
            ("_1", None),
            ("1__0", None),
            ("1_", None),
            ("0x10", None),
            ("1,5", None),
            ("", None),
            ("N", None),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_python_float(text.as_bytes()), *expected, "{text}");
        }
        assert!(parse_python_float(b"nan").is_some_and(f64::is_nan));
        assert!(parse_python_float(b"-NaN").is_some_and(f64::is_nan));
    }

    #[test]
    fn timestamps_keep_milliseconds_and_minus_one_means_now() {
        let ok: &[(&str, i64)] = &[
            ("1700000000", 1_700_000_000_000),
            ("1700000000.9", 1_700_000_000_900),
            ("1700000000.1239", 1_700_000_000_123),
            ("1.7e9", 1_700_000_000_000),
            ("-1", NOW.as_millis()),
            ("-1.0", NOW.as_millis()),
            ("-1.999", NOW.as_millis()),
            ("-0.5", -500),
            ("-2", -2000),
            ("0", 0),
        ];
        for (text, ms) in ok {
            assert_eq!(
                parse_graphite_timestamp(text.as_bytes(), NOW),
                Ok(Timestamp::from_millis(*ms)),
                "{text}"
            );
        }
        let bad: &[(&str, Reason)] = &[
            ("inf", Reason::NonFiniteTimestamp),
            ("nan", Reason::NonFiniteTimestamp),
            ("N", Reason::BadTimestamp),
            ("1e300", Reason::BadTimestamp),
            ("", Reason::BadTimestamp),
            (".", Reason::BadTimestamp),
        ];
        for (text, reason) in bad {
            assert_eq!(
                parse_graphite_timestamp(text.as_bytes(), NOW),
                Err(*reason),
                "{text}"
            );
        }
    }
}
