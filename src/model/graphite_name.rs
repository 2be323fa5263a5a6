//! Carbon's normalised form of a tagged name: `name;k1=v1;k2=v2` with the
//! `;k=v` strings sorted as whole strings (carbon's `TaggedSeries.format`).
//! Shared by the Graphite codecs and by hash routing, which must hash the
//! same text carbon hashes.

use std::cmp::Ordering;
use std::iter::once;

/// Orders two tags as carbon sorts the strings `;key=value`.
pub fn carbon_tag_order(a: &(&str, &str), b: &(&str, &str)) -> Ordering {
    let left = a.0.bytes().chain(once(b'=')).chain(a.1.bytes());
    let right = b.0.bytes().chain(once(b'=')).chain(b.1.bytes());
    left.cmp(right)
}

/// Appends `name` and its tags in carbon's order to `out`. The tags may
/// come in any order; nothing is validated.
pub fn write_carbon_name<'a>(
    name: &str,
    tags: impl Iterator<Item = (&'a str, &'a str)>,
    out: &mut Vec<u8>,
) {
    let mut tags: smallvec::SmallVec<[(&str, &str); 8]> = tags.collect();
    // Tags usually arrive sorted by key, which is carbon's order unless a
    // key is a prefix of another: check before sorting.
    if !tags
        .windows(2)
        .all(|w| carbon_tag_order(&w[0], &w[1]) != Ordering::Greater)
    {
        tags.sort_by(carbon_tag_order);
    }
    out.extend_from_slice(name.as_bytes());
    for (key, value) in tags {
        out.push(b';');
        out.extend_from_slice(key.as_bytes());
        out.push(b'=');
        out.extend_from_slice(value.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_the_formatted_strings_not_the_keys() {
        let mut out = Vec::new();
        write_carbon_name(
            "p",
            [("a", "1"), ("a-b", "2"), ("c", "3")].into_iter(),
            &mut out,
        );
        assert_eq!(out, b"p;a-b=2;a=1;c=3");
    }
}
