//! Carbon AMQP message bodies (protocols.md section 3).
//!
//! Carbon's listener names points in one of two ways. By default the
//! routing key is the metric name and each body line is `value timestamp`;
//! with `AMQP_METRIC_NAME_IN_BODY` each line is a plaintext
//! `metric value timestamp` line and the routing key is ignored. The body
//! is split on `\n`, each line stripped and split on whitespace, blank
//! lines skipped, NaN values dropped and bad lines skipped. Unlike the
//! line, UDP and pickle receivers there is no `-1` = now rule: carbon's
//! AMQP path hands points straight to the cache, so `-1` is stored as is.
//!
//! Output writes carbon's reference publisher layout for one point: the
//! routing key is the name (tags in carbon's normalised order) and the body
//! `value timestamp\n`, numbers written as the plaintext encoder writes
//! them. This module is pure: no I/O, no logging, no clock.

use super::graphite_plain::{is_separator, write_value_and_seconds};
use super::graphite_tags::{push_graphite_point, write_graphite_name};
use super::number::{parse_python_float, parse_seconds};
use super::{Reason, Rejects, Unrepresentable};
use crate::model::{Batch, PointRef, Value};

/// Longest AMQP routing key (a short string): longer names need
/// name-in-body messages.
pub const MAX_ROUTING_KEY_BYTES: usize = 255;

/// Where a message's points get their name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameIn {
    /// The routing key is the name; body lines are `value timestamp`.
    RoutingKey,
    /// Body lines are `metric value timestamp`; the routing key is ignored.
    Body,
}

/// Parses one message body, appending its points to `out` and its bad
/// lines to `rejects`. Blank lines are skipped; nothing is fatal.
pub fn parse_message(
    routing_key: &str,
    body: &[u8],
    name_in: NameIn,
    out: &mut Batch,
    rejects: &mut Rejects,
) {
    for line in body.split(|b| *b == b'\n') {
        let result = match name_in {
            NameIn::RoutingKey => parse_value_line(routing_key, line, out),
            NameIn::Body => parse_named_line(line, out),
        };
        if let Err(reason) = result {
            rejects.add(reason, line);
        }
    }
}

/// Writes one point as a carbon message: its routing key into
/// `routing_key` and its body into `body` (both appended to). Nothing is
/// written when the point cannot be carried.
///
/// # Errors
/// The reason the point cannot be a carbon message: a name Graphite cannot
/// write or longer than [`MAX_ROUTING_KEY_BYTES`], or a value Graphite
/// cannot store.
pub fn write_point(
    point: &PointRef<'_>,
    routing_key: &mut Vec<u8>,
    body: &mut Vec<u8>,
) -> Result<(), Unrepresentable> {
    let (key_start, body_start) = (routing_key.len(), body.len());
    let result = write_point_inner(point, key_start, routing_key, body);
    if result.is_err() {
        routing_key.truncate(key_start);
        body.truncate(body_start);
    }
    result
}

fn write_point_inner(
    point: &PointRef<'_>,
    key_start: usize,
    routing_key: &mut Vec<u8>,
    body: &mut Vec<u8>,
) -> Result<(), Unrepresentable> {
    write_graphite_name(point, routing_key)?;
    if routing_key.len() - key_start > MAX_ROUTING_KEY_BYTES {
        return Err(Unrepresentable::NameTooLong);
    }
    write_value_and_seconds(point, body)
}

/// A `value timestamp` line named by the routing key. `Ok(false)`: blank.
fn parse_value_line(name: &str, line: &[u8], out: &mut Batch) -> Result<bool, Reason> {
    let mut fields = split_fields(line);
    let Some(value) = fields.next() else {
        return Ok(false);
    };
    let (Some(timestamp), None) = (fields.next(), fields.next()) else {
        return Err(Reason::FieldCount);
    };
    if name.is_empty() {
        return Err(Reason::EmptyName);
    }
    push_point(name, value, timestamp, out)
}

/// A plaintext `metric value timestamp` line. `Ok(false)`: blank.
fn parse_named_line(line: &[u8], out: &mut Batch) -> Result<bool, Reason> {
    let mut fields = split_fields(line);
    let Some(name) = fields.next() else {
        return Ok(false);
    };
    let (Some(value), Some(timestamp), None) = (fields.next(), fields.next(), fields.next()) else {
        return Err(Reason::FieldCount);
    };
    let name = std::str::from_utf8(name).map_err(|_| Reason::InvalidUtf8)?;
    push_point(name, value, timestamp, out)
}

/// Python's `line.strip().split()` over ASCII whitespace.
fn split_fields(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    line.split(|b| is_separator(*b))
        .filter(|field| !field.is_empty())
}

fn push_point(name: &str, value: &[u8], timestamp: &[u8], out: &mut Batch) -> Result<bool, Reason> {
    if !value.is_ascii() || !timestamp.is_ascii() {
        return Err(Reason::InvalidUtf8);
    }
    let value = parse_python_float(value).ok_or(Reason::BadValue)?;
    let timestamp = parse_seconds(timestamp)?;
    if value.is_nan() {
        return Err(Reason::NanValue);
    }
    push_graphite_point(out, name, timestamp, Value::F64(value));
    Ok(true)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::model::{Point, Timestamp};

    fn parse(routing_key: &str, body: &[u8], name_in: NameIn) -> (Vec<Point>, Rejects) {
        let mut batch = Batch::new();
        let mut rejects = Rejects::default();
        parse_message(routing_key, body, name_in, &mut batch, &mut rejects);
        (batch.to_points(), rejects)
    }

    fn summary(points: &[Point]) -> Vec<(&str, usize, i64, Option<f64>)> {
        points
            .iter()
            .map(|p| {
                (
                    p.name.as_str(),
                    p.tags.len(),
                    p.timestamp.as_millis(),
                    p.value.as_f64(),
                )
            })
            .collect()
    }

    fn write(point: &Point) -> Result<(String, String), Unrepresentable> {
        let batch: Batch = std::iter::once(point.clone()).collect();
        let (mut key, mut body) = (b"old".to_vec(), b"old".to_vec());
        let point = batch.get(0).expect("point");
        write_point(&point, &mut key, &mut body).map(|()| {
            (
                String::from_utf8(key[3..].to_vec()).expect("utf-8"),
                String::from_utf8(body[3..].to_vec()).expect("utf-8"),
            )
        })
    }

    #[test]
    fn protocols_md_3_5_examples() {
        let (points, rejects) = parse("servers.web01.load", b"0.42 1700000000", NameIn::RoutingKey);
        assert_eq!(
            summary(&points),
            vec![("servers.web01.load", 0, 1_700_000_000_000, Some(0.42))]
        );
        assert_eq!(rejects.total(), 0);

        let (points, _) = parse(
            "servers.web01.load",
            b"1 1700000000\n2 1700000060\n",
            NameIn::RoutingKey,
        );
        assert_eq!(points.len(), 2);
        assert_eq!(points[1].timestamp.as_millis(), 1_700_000_060_000);

        let (points, _) = parse(
            "ignored",
            b"a.b 1 1700000000\nc.d 2 1700000000",
            NameIn::Body,
        );
        let names: Vec<_> = points.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, vec!["a.b", "c.d"]);

        let (points, rejects) = parse("a.b", b"nan 1700000000", NameIn::RoutingKey);
        assert!(points.is_empty());
        assert_eq!(rejects.count(Reason::NanValue), 1);

        // No "now" rule on AMQP: -1 is stored as -1 s.
        let (points, _) = parse("a.b", b"5 -1", NameIn::RoutingKey);
        assert_eq!(summary(&points), vec![("a.b", 0, -1000, Some(5.0))]);
    }

    #[test]
    fn bad_and_blank_lines() {
        let body = b"  1 1700000000.5 \r\n\n \t \nx 1700000000\n1 2 3\n1\n1 inf\n1 N\n\xff 1\n";
        let (points, rejects) = parse("k.tagged;dc=eu", body, NameIn::RoutingKey);
        assert_eq!(
            summary(&points),
            vec![("k.tagged", 1, 1_700_000_000_500, Some(1.0))]
        );
        assert_eq!(rejects.count(Reason::BadValue), 1);
        assert_eq!(rejects.count(Reason::FieldCount), 2);
        assert_eq!(rejects.count(Reason::NonFiniteTimestamp), 1);
        assert_eq!(rejects.count(Reason::BadTimestamp), 1);
        assert_eq!(rejects.count(Reason::InvalidUtf8), 1);
        assert_eq!(rejects.total(), 6);

        let (points, rejects) = parse("", b"1 1700000000\n\n", NameIn::RoutingKey);
        assert!(points.is_empty());
        assert_eq!(rejects.count(Reason::EmptyName), 1);

        let body = b"a 1 1700000000\n\nbad line\nb\xff 1 2\nc;x=y 2 1700000001 \n";
        let (points, rejects) = parse("", body, NameIn::Body);
        assert_eq!(
            summary(&points),
            vec![
                ("a", 0, 1_700_000_000_000, Some(1.0)),
                ("c", 1, 1_700_000_001_000, Some(2.0)),
            ]
        );
        assert_eq!(rejects.count(Reason::FieldCount), 1);
        assert_eq!(rejects.count(Reason::InvalidUtf8), 1);
        assert_eq!(rejects.samples()[0].record, "bad line");
    }

    #[test]
    fn points_are_written_as_carbon_messages() {
        let at = Timestamp::from_millis(1_700_000_000_700);
        assert_eq!(
            write(&Point::new("a.b", at, Value::F64(2.5))),
            Ok(("a.b".to_owned(), "2.5 1700000000\n".to_owned()))
        );
        assert_eq!(
            write(
                &Point::new("t", at, Value::I64(-3))
                    .with_tag("z", "1")
                    .with_tag("a", "2")
            ),
            Ok(("t;a=2;z=1".to_owned(), "-3 1700000000\n".to_owned()))
        );
        assert_eq!(
            write(&Point::new("x".repeat(256), at, Value::F64(1.0))),
            Err(Unrepresentable::NameTooLong)
        );
        assert!(write(&Point::new("x".repeat(255), at, Value::F64(1.0))).is_ok());
        assert_eq!(
            write(&Point::new("a b", at, Value::F64(1.0))),
            Err(Unrepresentable::InvalidName)
        );
        assert_eq!(
            write(&Point::new("a.b", at, Value::F64(f64::NAN))),
            Err(Unrepresentable::NonFiniteValue)
        );
    }

    proptest! {
        #[test]
        fn written_points_parse_back(
            name in "[a-zA-Z0-9_.\\-]{1,40}".prop_filter("no leading ~", |s| !s.starts_with('~')),
            secs in -1_000_000_000i64..4_000_000_000,
            value in proptest::num::f64::NORMAL | proptest::num::f64::ZERO,
        ) {
            let point = Point::new(name, Timestamp::from_secs(secs), Value::F64(value));
            let (key, body) = write(&point).expect("writable");
            let (points, rejects) = parse(&key, body.as_bytes(), NameIn::RoutingKey);
            prop_assert_eq!(rejects.total(), 0);
            prop_assert_eq!(points, vec![point]);
        }

        #[test]
        fn arbitrary_bodies_never_panic(
            key in ".{0,20}",
            body in proptest::collection::vec(any::<u8>(), 0..256),
            in_body in any::<bool>(),
        ) {
            let name_in = if in_body { NameIn::Body } else { NameIn::RoutingKey };
            let (points, rejects) = parse(&key, &body, name_in);
            let lines = body.iter().filter(|b| **b == b'\n').count() as u64 + 1;
            prop_assert!(points.len() as u64 + rejects.total() <= lines);
        }
    }
}
