//! Graphite 1.1 tagged names: `name;tag1=value1;tag2=value2`.
//!
//! Parsing follows carbon's `TaggedSeries.parse_carbon`: the name before the
//! first `;` loses its leading `~`, a user `name` tag is dropped, a repeated
//! tag keeps its last value, and a name whose tags break carbon's rules is
//! kept whole as an untagged path (carbon stores such names un-normalised).
//! Writing puts tags in carbon's normalised order: the `;k=v` strings sorted
//! as whole strings, which differs from a key sort when one key is a prefix
//! of another (`a-b` sorts before `a`).

use smallvec::SmallVec;

use super::Unrepresentable;
use crate::model::{write_carbon_name, Batch, PointRef, Timestamp, Value};

type TagList<'a> = SmallVec<[(&'a str, &'a str); 8]>;

/// Appends a point whose Graphite name may carry `;tags`.
pub fn push_graphite_point(out: &mut Batch, raw_name: &str, timestamp: Timestamp, value: Value) {
    let tagged = memchr::memchr(b';', raw_name.as_bytes()).is_some();
    match tagged.then(|| parse_tagged(raw_name)).flatten() {
        Some((name, tags)) => out.push(name, tags, timestamp, value, None),
        None => out.push(raw_name, [], timestamp, value, None),
    }
}

/// Splits `name;k=v;...` by carbon's rules; `None` when carbon would reject
/// the tags (the caller then keeps the whole string as the path).
fn parse_tagged(raw_name: &str) -> Option<(&str, TagList<'_>)> {
    let mut segments = raw_name.split(';');
    let metric = segments.next().filter(|m| !m.is_empty())?;
    let mut tags = TagList::new();
    for segment in segments {
        let (key, value) = segment.split_once('=')?;
        if !is_valid_tag_key(key) || value.is_empty() || value.starts_with('~') {
            return None;
        }
        if key != "name" {
            tags.push((key, value));
        }
    }
    let name = metric.trim_start_matches('~');
    if name.is_empty() {
        return None;
    }
    Some((name, tags))
}

fn is_valid_tag_key(key: &str) -> bool {
    !key.is_empty() && !key.contains([';', '!', '^', '='])
}

/// Writes the point's name with its tags in carbon's normalised order.
///
/// # Errors
/// [`Unrepresentable::InvalidName`] when the name or a tag cannot be written
/// on a whitespace-separated line or would not parse back as the same tags.
pub fn write_graphite_name(point: &PointRef<'_>, out: &mut Vec<u8>) -> Result<(), Unrepresentable> {
    let name = point.name();
    if name.is_empty() || !is_line_safe(name) {
        return Err(Unrepresentable::InvalidName);
    }
    if !point.has_tags() {
        out.extend_from_slice(name.as_bytes());
        return Ok(());
    }
    for (key, value) in point.tags() {
        let valid = is_valid_tag_key(key)
            && key != "name"
            && is_line_safe(key)
            && !value.is_empty()
            && !value.starts_with('~')
            && !value.contains(';')
            && is_line_safe(value);
        if !valid {
            return Err(Unrepresentable::InvalidName);
        }
    }
    if name.starts_with('~') || name.contains(';') {
        return Err(Unrepresentable::InvalidName);
    }
    write_carbon_name(name, point.tags(), out);
    Ok(())
}

/// True when the text holds no whitespace or control byte (it can sit in
/// one field of a Graphite line).
pub fn is_line_safe(text: &str) -> bool {
    text.bytes().all(|b| b > b' ' && b != 0x7f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> (String, Vec<(String, String)>) {
        let mut batch = Batch::new();
        push_graphite_point(&mut batch, raw, Timestamp::from_millis(0), Value::F64(1.0));
        let point = batch.to_points().remove(0);
        (point.name, point.tags)
    }

    fn written(raw: &str) -> String {
        let mut batch = Batch::new();
        push_graphite_point(&mut batch, raw, Timestamp::from_millis(0), Value::F64(1.0));
        let mut out = Vec::new();
        write_graphite_name(&batch.get(0).expect("point"), &mut out).expect("writable");
        String::from_utf8(out).expect("utf-8")
    }

    fn tags(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn carbon_normalisation_examples() {
        // protocols.md 1.6 and 1.9 example 6.
        assert_eq!(
            written("disk.used;rack=a1;dc=dc1"),
            "disk.used;dc=dc1;rack=a1"
        );
        assert_eq!(written("p.tag2;a=1;a-b=2"), "p.tag2;a-b=2;a=1");
        assert_eq!(written("p.dup;k=1;k=2"), "p.dup;k=2");
        assert_eq!(written("p.nm;name=foo;z=1"), "p.nm;z=1");
        assert_eq!(written("~p.tilde;x=y"), "p.tilde;x=y");
        assert_eq!(written("plain.path"), "plain.path");
    }

    #[test]
    fn tags_are_parsed_into_the_model() {
        assert_eq!(
            parse("cpu;host=a;dc=x"),
            ("cpu".to_owned(), tags(&[("dc", "x"), ("host", "a")]))
        );
        assert_eq!(
            parse("a=b;k=v=w"),
            ("a=b".to_owned(), tags(&[("k", "v=w")]))
        );
    }

    #[test]
    fn invalid_tag_syntax_keeps_the_raw_name() {
        for raw in [
            "p.tagbad;a=",
            ";a=b",
            "m;novalue",
            "m;=v",
            "m;a=~x",
            "~~~;a=b",
            "m;a!=b",
        ] {
            assert_eq!(parse(raw), (raw.to_owned(), Vec::new()), "{raw}");
            assert_eq!(written(raw), raw);
        }
    }

    #[test]
    fn names_that_cannot_sit_on_a_line_are_refused() {
        let mut batch = Batch::new();
        batch.push(
            "has space",
            [],
            Timestamp::from_millis(0),
            Value::F64(1.0),
            None,
        );
        batch.push(
            "m",
            [("k", "v w")],
            Timestamp::from_millis(0),
            Value::F64(1.0),
            None,
        );
        batch.push(
            "m",
            [("k", "")],
            Timestamp::from_millis(0),
            Value::F64(1.0),
            None,
        );
        batch.push("", [], Timestamp::from_millis(0), Value::F64(1.0), None);
        for point in batch.iter() {
            let mut out = Vec::new();
            assert_eq!(
                write_graphite_name(&point, &mut out),
                Err(Unrepresentable::InvalidName)
            );
        }
    }
}
