//! IRONdb metric names with stream tags: `name|ST[cat:val,...]` (protocols.md 6.4).
//!
//! ```text
//! canonical   = metric-name *( "|ST[" tagset "]" / "|MT{" tagset "}" )
//! tagset      = [ tag *( "," tag ) ]
//! tag         = category [ ":" value ]
//! ```
//!
//! Categories and values outside IRONdb's plain character sets are written
//! as `b"<standard base64>"`. Reading is lenient where IRONdb's grammar is
//! unambiguous: any character other than the delimiters (`,` `]`, and `:`
//! in a category) is accepted unencoded, and `b"..."` may omit its padding.
//!
//! IRONdb allows a category to repeat with different values (`env:a,env:b`)
//! while tsrelay's point model keeps one value per key (a
//! [`crate::model::Batch`] keeps the last value pushed for a key).
//! [`parse_name`] returns tags in IRONdb's canonical order (category, then
//! value), so a repeated category keeps its greatest value whatever order the
//! sender used. [`write_name`] writes what it is given, repeats included.
//!
//! Length limits count bytes as written (after base64 encoding): IRONdb is
//! C and counts bytes, and bytes are never fewer than characters.
//!
//! This module is pure: no I/O, no logging, no clock.

use std::borrow::Cow;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use smallvec::SmallVec;

/// Why a name's stream tags could not be read or written.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StreamTagError {
    /// A `|ST[` without its `]` or a `|MT{` without its `}`.
    #[error("stream tag section is not closed")]
    Unclosed,
    /// Text after a section that does not start another section.
    #[error("text after a stream tag section")]
    TextAfterSection,
    /// A tag whose category is empty (`:v`, `a,,b`, `b""`).
    #[error("tag with an empty category")]
    EmptyCategory,
    /// A `b"..."` part that is not base64.
    #[error("b\"...\" tag part is not valid base64")]
    BadBase64,
    /// A `b"..."` part whose bytes are not UTF-8.
    #[error("b\"...\" tag part is not UTF-8")]
    NotUtf8,
    /// A NUL byte, which IRONdb names never contain.
    #[error("name contains a NUL byte")]
    ContainsNul,
    /// A name to write that contains `|ST[` or `|MT{`.
    #[error("name contains |ST[ or |MT{{")]
    ReservedSequence,
    /// An empty name to write.
    #[error("empty metric name")]
    EmptyName,
    /// A tag longer than IRONdb's limit.
    #[error("tag of {len} bytes exceeds {MAX_TAG_BYTES}")]
    TagTooLong {
        /// Bytes of category plus value as written.
        len: usize,
    },
    /// A name with tags at or over IRONdb's limit.
    #[error("name of {len} bytes is not under {MAX_NAME_BYTES}")]
    NameTooLong {
        /// Bytes of the whole canonical name.
        len: usize,
    },
}

/// The longest tag (category plus value, as written) IRONdb accepts.
pub const MAX_TAG_BYTES: usize = 256;
/// A canonical name must be shorter than this.
pub const MAX_NAME_BYTES: usize = 4095;

const STREAM_TAGS_OPEN: &str = "|ST[";
const MEASUREMENT_TAGS_OPEN: &str = "|MT{";
const BASE64_OPEN: &str = "b\"";

/// Standard alphabet that reads `b"..."` with or without padding.
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Splits `full` into its base name (returned, borrowed) and its stream tags (appended to `tags`, which the caller clears and reuses). Several |ST[..] sections are merged, |MT{..} sections dropped, b"base64" categories/values decoded, category-only tags get an empty value.
///
/// The appended tags are sorted by category then value with exact
/// duplicates removed (IRONdb's canonical order). The base name may be
/// empty; the caller decides whether that is acceptable.
///
/// # Errors
/// A [`StreamTagError`] for a malformed section, `b"..."` part or a NUL
/// byte; `tags` is then left as it was.
pub fn parse_name<'a>(
    full: &'a str,
    tags: &mut Vec<(Cow<'a, str>, Cow<'a, str>)>,
) -> Result<&'a str, StreamTagError> {
    if memchr::memchr(0, full.as_bytes()).is_some() {
        return Err(StreamTagError::ContainsNul);
    }
    let Some(base_end) = find_section(full) else {
        return Ok(full);
    };
    let start = tags.len();
    if let Err(error) = parse_sections(&full[base_end..], tags) {
        tags.truncate(start);
        return Err(error);
    }
    canonicalise(tags, start);
    Ok(&full[..base_end])
}

/// Appends the canonical IRONdb name: `name` then, if any tag, `|ST[cat:val,...]` sorted by category then value with exact duplicates removed, each category/value written as b"base64" when it has characters outside IRONdb's allowed sets (category: A-Z a-z 0-9 and ` + ! @ # $ % ^ & " ' / ? . _ - ; values additionally : and =), a tag with an empty value written as category only. Errors (and leaves `out` as it was) when a tag exceeds 256 characters or the whole name would be 4095 characters or more, or the name contains NUL, `|ST[` or `|MT{`.
///
/// A text that starts with `b"` is base64-encoded too, so that it cannot be
/// read back as an encoded part.
///
/// # Errors
/// [`StreamTagError::TagTooLong`], [`StreamTagError::NameTooLong`],
/// [`StreamTagError::ContainsNul`], [`StreamTagError::ReservedSequence`],
/// [`StreamTagError::EmptyName`] or [`StreamTagError::EmptyCategory`].
pub fn write_name<'t>(
    name: &str,
    tags: impl IntoIterator<Item = (&'t str, &'t str)>,
    out: &mut String,
) -> Result<(), StreamTagError> {
    if name.is_empty() {
        return Err(StreamTagError::EmptyName);
    }
    if memchr::memchr(0, name.as_bytes()).is_some() {
        return Err(StreamTagError::ContainsNul);
    }
    if find_section(name).is_some() {
        return Err(StreamTagError::ReservedSequence);
    }
    let mut sorted: SmallVec<[(&str, &str); 8]> = tags.into_iter().collect();
    sorted.sort_unstable();
    sorted.dedup();
    let start = out.len();
    let result = write_tags(name, &sorted, out).and_then(|()| {
        let len = out.len() - start;
        if len >= MAX_NAME_BYTES {
            Err(StreamTagError::NameTooLong { len })
        } else {
            Ok(())
        }
    });
    if result.is_err() {
        out.truncate(start);
    }
    result
}

/// Where the first `|ST[` or `|MT{` starts.
fn find_section(text: &str) -> Option<usize> {
    memchr::memchr_iter(b'|', text.as_bytes()).find(|&at| {
        let rest = &text[at..];
        rest.starts_with(STREAM_TAGS_OPEN) || rest.starts_with(MEASUREMENT_TAGS_OPEN)
    })
}

/// Reads the sections that follow the base name, appending stream tags.
fn parse_sections<'a>(
    mut rest: &'a str,
    tags: &mut Vec<(Cow<'a, str>, Cow<'a, str>)>,
) -> Result<(), StreamTagError> {
    while !rest.is_empty() {
        if let Some(body) = rest.strip_prefix(STREAM_TAGS_OPEN) {
            // `]` is in no plain character set and not in base64.
            let close = body.find(']').ok_or(StreamTagError::Unclosed)?;
            parse_tagset(&body[..close], tags)?;
            rest = &body[close + 1..];
        } else if let Some(body) = rest.strip_prefix(MEASUREMENT_TAGS_OPEN) {
            // Measurement tags are not stored by IRONdb: skip them.
            let close = body.find('}').ok_or(StreamTagError::Unclosed)?;
            rest = &body[close + 1..];
        } else {
            return Err(StreamTagError::TextAfterSection);
        }
    }
    Ok(())
}

/// Reads `tag,tag,...` (possibly empty) into `tags`.
fn parse_tagset<'a>(
    tagset: &'a str,
    tags: &mut Vec<(Cow<'a, str>, Cow<'a, str>)>,
) -> Result<(), StreamTagError> {
    if tagset.is_empty() {
        return Ok(());
    }
    for tag in tagset.split(',') {
        // A category never holds `:` (plain or base64), a value may.
        let (category, value) = tag.split_once(':').unwrap_or((tag, ""));
        let category = decode_part(category)?;
        if category.is_empty() {
            return Err(StreamTagError::EmptyCategory);
        }
        tags.push((category, decode_part(value)?));
    }
    Ok(())
}

/// A category or value: `b"<base64>"` decoded, anything else borrowed.
fn decode_part(text: &str) -> Result<Cow<'_, str>, StreamTagError> {
    let Some(encoded) = text
        .strip_prefix(BASE64_OPEN)
        .and_then(|inner| inner.strip_suffix('"'))
    else {
        return Ok(Cow::Borrowed(text));
    };
    let bytes = LENIENT_BASE64
        .decode(encoded)
        .map_err(|_| StreamTagError::BadBase64)?;
    let decoded = String::from_utf8(bytes).map_err(|_| StreamTagError::NotUtf8)?;
    if decoded.contains('\0') {
        return Err(StreamTagError::ContainsNul);
    }
    Ok(Cow::Owned(decoded))
}

/// Sorts the tags appended since `start` and drops exact duplicates.
fn canonicalise(tags: &mut Vec<(Cow<'_, str>, Cow<'_, str>)>, start: usize) {
    tags[start..].sort_unstable();
    let mut write = start;
    for read in start..tags.len() {
        if write == start || tags[read] != tags[write - 1] {
            tags.swap(write, read);
            write += 1;
        }
    }
    tags.truncate(write);
}

/// Writes `name|ST[...]` for sorted, de-duplicated tags (just `name` without tags).
fn write_tags(name: &str, tags: &[(&str, &str)], out: &mut String) -> Result<(), StreamTagError> {
    out.push_str(name);
    if tags.is_empty() {
        return Ok(());
    }
    out.push_str(STREAM_TAGS_OPEN);
    for (index, &(category, value)) in tags.iter().enumerate() {
        if category.is_empty() {
            return Err(StreamTagError::EmptyCategory);
        }
        if category.contains('\0') || value.contains('\0') {
            return Err(StreamTagError::ContainsNul);
        }
        if index > 0 {
            out.push(',');
        }
        let mut len = write_part(category, is_category_byte, out);
        if !value.is_empty() {
            out.push(':');
            len += write_part(value, is_value_byte, out);
        }
        if len > MAX_TAG_BYTES {
            return Err(StreamTagError::TagTooLong { len });
        }
    }
    out.push(']');
    Ok(())
}

/// Writes a category or value plainly or as `b"<base64>"`; returns the bytes written.
fn write_part(text: &str, allowed: fn(u8) -> bool, out: &mut String) -> usize {
    let start = out.len();
    if text.starts_with(BASE64_OPEN) || !text.bytes().all(allowed) {
        out.push_str(BASE64_OPEN);
        STANDARD.encode_string(text, out);
        out.push('"');
    } else {
        out.push_str(text);
    }
    out.len() - start
}

/// IRONdb's plain category characters.
fn is_category_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"`+!@#$%^&\"'/?._-".contains(&byte)
}

/// IRONdb's plain value characters: a category's plus `:` and `=`.
fn is_value_byte(byte: u8) -> bool {
    is_category_byte(byte) || byte == b':' || byte == b'='
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    type Tags = Vec<(String, String)>;
    type TagRefs<'a> = &'a [(&'a str, &'a str)];

    fn parse(full: &str) -> Result<(&str, Tags), StreamTagError> {
        let mut tags = Vec::new();
        let name = parse_name(full, &mut tags)?;
        let owned = tags
            .into_iter()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        Ok((name, owned))
    }

    fn owned(tags: &[(&str, &str)]) -> Tags {
        tags.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn write(name: &str, tags: &[(&str, &str)]) -> Result<String, StreamTagError> {
        let mut out = String::new();
        write_name(name, tags.iter().copied(), &mut out)?;
        Ok(out)
    }

    #[test]
    fn sections_merge_and_measurement_tags_drop() {
        let (name, tags) =
            parse("my_metric_name|MT{}|ST[env:prod]|MT{foo}|ST[color:blue]").expect("valid");
        assert_eq!(name, "my_metric_name");
        assert_eq!(tags, owned(&[("color", "blue"), ("env", "prod")]));
        assert_eq!(
            write(name, &[("env", "prod"), ("color", "blue")]).expect("valid"),
            "my_metric_name|ST[color:blue,env:prod]"
        );
    }

    #[test]
    fn base64_parts_are_decoded_and_written_back() {
        let full = r#"foo|ST[b"fihjYXRlZ29yeSk=":b"PHZhbHVlPg=="]"#;
        let (name, tags) = parse(full).expect("valid");
        assert_eq!((name, tags), ("foo", owned(&[("~(category)", "<value>")])));
        assert_eq!(
            write("foo", &[("~(category)", "<value>")]).expect("valid"),
            full
        );
        // Padding may be left out; an encoded plain text reads as itself.
        let (_, tags) = parse(r#"foo|ST[b"ZW52":b"cHJvZA"]"#).expect("valid");
        assert_eq!(tags, owned(&[("env", "prod")]));
    }

    #[test]
    fn names_without_sections_and_empty_tagsets() {
        let cases: &[(&str, &str, TagRefs<'_>)] = &[
            ("plain.name", "plain.name", &[]),
            ("a|b[c]", "a|b[c]", &[]),
            ("", "", &[]),
            ("foo|ST[]", "foo", &[]),
            ("|ST[a:b]", "", &[("a", "b")]),
            ("foo|ST[flag]", "foo", &[("flag", "")]),
            ("foo|ST[flag:]", "foo", &[("flag", "")]),
            (
                "foo|ST[url:http://x:80/?a=b]",
                "foo",
                &[("url", "http://x:80/?a=b")],
            ),
            (
                "foo|ST[b:2,a:9,b:1,a:9]",
                "foo",
                &[("a", "9"), ("b", "1"), ("b", "2")],
            ),
            ("foo|ST[a:1]|ST[a:1,c]", "foo", &[("a", "1"), ("c", "")]),
            ("foo|ST[b\":x]", "foo", &[("b\"", "x")]),
        ];
        for (full, name, tags) in cases {
            assert_eq!(parse(full), Ok((*name, owned(tags))), "{full}");
        }
    }

    #[test]
    fn malformed_names_are_errors_and_leave_tags_alone() {
        use StreamTagError::*;
        let cases: &[(&str, StreamTagError)] = &[
            ("foo|ST[a:b", Unclosed),
            ("foo|ST[a:b]|MT{x", Unclosed),
            ("foo|ST[a:b]x", TextAfterSection),
            ("foo|ST[a:b] ", TextAfterSection),
            ("foo|MT{}|", TextAfterSection),
            ("foo|ST[:b]", EmptyCategory),
            ("foo|ST[a,,b]", EmptyCategory),
            ("foo|ST[a,]", EmptyCategory),
            ("foo|ST[b\"\":x]", EmptyCategory),
            ("foo|ST[b\"!!!!\":x]", BadBase64),
            ("foo|ST[a:b\"A\"]", BadBase64),
            ("foo|ST[a:b\"/w==\"]", NotUtf8),
            ("foo|ST[a:b\"AA==\"]", ContainsNul),
            ("f\0o", ContainsNul),
        ];
        for (full, error) in cases {
            let mut tags = vec![(Cow::Borrowed("kept"), Cow::Borrowed("1"))];
            assert_eq!(parse_name(full, &mut tags).as_ref(), Err(error), "{full:?}");
            assert_eq!(tags.len(), 1, "{full:?}");
        }
    }

    #[test]
    fn parse_appends_after_existing_tags() {
        let mut tags = vec![(Cow::Borrowed("z"), Cow::Borrowed("1"))];
        parse_name("m|ST[b:1,a:1]", &mut tags).expect("valid");
        let keys: Vec<_> = tags.iter().map(|(k, _)| k.as_ref()).collect();
        assert_eq!(keys, vec!["z", "a", "b"]);
    }

    #[test]
    fn write_sorts_dedups_and_encodes_what_is_not_plain() {
        let tags = [
            ("zone", "eu west"),
            ("env", "prod"),
            ("env", "prod"),
            ("env", "dev"),
            ("flag", ""),
            ("k", "a:b=c"),
            ("odd:cat", "v"),
            ("b\"x\"", "b\"y"),
            ("é", "ü"),
        ];
        let written = write("m", &tags).expect("valid");
        assert_eq!(
            written,
            "m|ST[b\"YiJ4Ig==\":b\"YiJ5\",env:dev,env:prod,flag,k:a:b=c,\
             b\"b2RkOmNhdA==\":v,zone:b\"ZXUgd2VzdA==\",b\"w6k=\":b\"w7w=\"]"
        );
        let (name, parsed) = parse(&written).expect("valid");
        let mut expected = owned(&tags);
        expected.sort();
        expected.dedup();
        assert_eq!((name, parsed), ("m", expected));
        assert_eq!(write("m", &[]).expect("valid"), "m");
    }

    #[test]
    fn write_errors_leave_out_unchanged() {
        use StreamTagError::*;
        let long_value = "v".repeat(MAX_TAG_BYTES);
        let long_name = "n".repeat(MAX_NAME_BYTES);
        let cases: &[(&str, TagRefs<'_>, StreamTagError)] = &[
            ("", &[], EmptyName),
            ("a\0b", &[], ContainsNul),
            ("a|ST[b", &[], ReservedSequence),
            ("a|MT{b", &[], ReservedSequence),
            ("m", &[("", "v")], EmptyCategory),
            ("m", &[("k", "a\0")], ContainsNul),
            ("m", &[("k", long_value.as_str())], TagTooLong { len: 257 }),
            (long_name.as_str(), &[], NameTooLong { len: 4095 }),
            (
                &long_name[2..],
                &[("k", "v")],
                NameTooLong { len: 4093 + 8 },
            ),
        ];
        for (name, tags, error) in cases {
            let mut out = String::from("before");
            let result = write_name(name, tags.iter().copied(), &mut out);
            assert_eq!(result.as_ref(), Err(error), "{name:.20} {tags:?}");
            assert_eq!(out, "before");
        }
        // The limits themselves are accepted.
        let value = "v".repeat(MAX_TAG_BYTES - 1);
        assert!(write("m", &[("k", value.as_str())]).is_ok());
        assert!(write(&long_name[1..], &[]).is_ok());
        // Encoded parts count as written: 200 bytes become 3 + 268.
        let encoded = "é".repeat(100);
        let result = write("m", &[("k", encoded.as_str())]);
        assert_eq!(result, Err(TagTooLong { len: 1 + 3 + 268 }));
    }

    fn arb_text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-zA-Z0-9_.\\-]{1,12}",
            "[a-z:=,\\[\\]|{}\" é\"b]{1,12}",
            "\\PC{1,8}".prop_filter("no NUL", |s| !s.contains('\0')),
        ]
    }

    proptest! {
        #[test]
        fn write_then_parse_round_trips(
            name in "[a-z.]{1,20}",
            tags in proptest::collection::vec(
                (arb_text(), prop_oneof![Just(String::new()), arb_text()]),
                0..6,
            ),
        ) {
            let refs: Vec<(&str, &str)> = tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let written = write(&name, &refs).expect("writable");
            let (parsed_name, parsed) = parse(&written).expect("own output");
            let mut expected = tags.clone();
            expected.sort();
            expected.dedup();
            prop_assert_eq!(parsed_name, name.as_str());
            prop_assert_eq!(parsed, expected);
        }

        #[test]
        fn arbitrary_names_never_panic(full in "\\PC{0,40}|[a|ST\\[\\]MT{}:,b\"=]{0,40}") {
            let mut tags = Vec::new();
            if let Ok(name) = parse_name(&full, &mut tags) {
                prop_assert!(full.starts_with(name));
            }
        }
    }
}
