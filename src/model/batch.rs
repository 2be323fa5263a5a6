//! A batch of points whose strings share one arena.
//!
//! Decoding appends names and tags to the arena with a `memcpy`, so a read
//! buffer of thousands of lines costs a handful of allocations instead of
//! one or more per point. Batches are shared between upstreams with `Arc`.

use std::ops::Range;
use std::sync::Arc;

use super::{Point, Source, Timestamp, Value};

/// Points plus the string arena that holds their names and tags.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    arena: String,
    entries: Vec<Entry>,
    tags: Vec<TagSpan>,
}

/// A borrowed view of one point in a batch.
#[derive(Clone, Copy, Debug)]
pub struct PointRef<'a> {
    batch: &'a Batch,
    entry: &'a Entry,
}

/// Iterator over a point's tags as `(key, value)`, in key order.
#[derive(Clone, Debug)]
pub struct TagIter<'a> {
    arena: &'a str,
    spans: std::slice::Iter<'a, TagSpan>,
}

#[derive(Clone, Debug)]
struct Entry {
    name: Range<usize>,
    tags: Range<usize>,
    timestamp: Timestamp,
    value: Value,
    source: Option<Arc<Source>>,
    /// Time to live in seconds requested by the sender (KairosDB); 0 = none.
    ttl: u32,
}

#[derive(Clone, Debug)]
struct TagSpan {
    key: Range<usize>,
    value: Range<usize>,
}

// === impl Batch ===

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty batch with room for `n_points` points and `arena_bytes` of names.
    pub fn with_capacity(n_points: usize, arena_bytes: usize) -> Self {
        Self {
            arena: String::with_capacity(arena_bytes),
            entries: Vec::with_capacity(n_points),
            tags: Vec::new(),
        }
    }

    /// Number of points.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the batch holds no point.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Memory held by the batch, for byte-bounded queues: allocated
    /// capacity, not length, since that is what a queued batch keeps.
    pub fn size_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.arena.capacity()
            + self.entries.capacity() * std::mem::size_of::<Entry>()
            + self.tags.capacity() * std::mem::size_of::<TagSpan>()
    }

    /// The point at `index`.
    pub fn get(&self, index: usize) -> Option<PointRef<'_>> {
        self.entries
            .get(index)
            .map(|entry| PointRef { batch: self, entry })
    }

    /// Iterates over the points in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = PointRef<'_>> + '_ {
        self.entries
            .iter()
            .map(move |entry| PointRef { batch: self, entry })
    }

    /// Appends a point from its parts. Tags may come in any order; they are
    /// sorted by key and a repeated key keeps its last value.
    pub fn push<'t>(
        &mut self,
        name: &str,
        tags: impl IntoIterator<Item = (&'t str, &'t str)>,
        timestamp: Timestamp,
        value: Value,
        source: Option<Arc<Source>>,
    ) {
        let name = self.intern(name);
        let tags_start = self.tags.len();
        for (key, tag_value) in tags {
            let key = self.intern(key);
            let value = self.intern(tag_value);
            self.tags.push(TagSpan { key, value });
        }
        self.canonicalise_tags(tags_start);
        self.entries.push(Entry {
            name,
            tags: tags_start..self.tags.len(),
            timestamp,
            value,
            source,
            ttl: 0,
        });
    }

    /// Sets the time to live (seconds) of the last point pushed.
    pub fn set_last_ttl(&mut self, ttl_seconds: u32) {
        if let Some(entry) = self.entries.last_mut() {
            entry.ttl = ttl_seconds;
        }
    }

    /// Appends a copy of a point from another (or this) batch.
    pub fn push_ref(&mut self, point: PointRef<'_>) {
        self.push(
            point.name(),
            point.tags(),
            point.timestamp(),
            point.value().clone(),
            point.source().cloned(),
        );
        self.set_last_ttl(point.ttl().unwrap_or(0));
    }

    /// Appends an owned point.
    pub fn push_point(&mut self, point: &Point) {
        self.push(
            &point.name,
            point.tags.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            point.timestamp,
            point.value.clone(),
            point.source.clone(),
        );
    }

    /// Keeps the first `n` points (their strings stay in the arena).
    pub fn truncate(&mut self, n: usize) {
        self.entries.truncate(n);
    }

    /// Copies the points into owned [`Point`]s.
    pub fn to_points(&self) -> Vec<Point> {
        self.iter().map(|point| point.to_point()).collect()
    }

    fn intern(&mut self, text: &str) -> Range<usize> {
        let start = self.arena.len();
        self.arena.push_str(text);
        start..self.arena.len()
    }

    /// Sorts the tags pushed since `start` by key and keeps the last value
    /// of a repeated key (stable sort, so the later duplicate stays later).
    fn canonicalise_tags(&mut self, start: usize) {
        let arena = &self.arena;
        let new_tags = &mut self.tags[start..];
        if new_tags.len() < 2 {
            return;
        }
        new_tags.sort_by(|a, b| arena[a.key.clone()].cmp(&arena[b.key.clone()]));
        let mut write = start;
        for read in start..self.tags.len() {
            let is_last_of_key = read + 1 == self.tags.len()
                || arena[self.tags[read].key.clone()] != arena[self.tags[read + 1].key.clone()];
            if is_last_of_key {
                self.tags.swap(write, read);
                write += 1;
            }
        }
        self.tags.truncate(write);
    }
}

impl FromIterator<Point> for Batch {
    fn from_iter<I: IntoIterator<Item = Point>>(iter: I) -> Self {
        let mut batch = Batch::new();
        for point in iter {
            batch.push_point(&point);
        }
        batch
    }
}

// === impl PointRef ===

impl<'a> PointRef<'a> {
    /// The metric name.
    pub fn name(&self) -> &'a str {
        &self.batch.arena[self.entry.name.clone()]
    }

    /// The tags, sorted by key.
    pub fn tags(&self) -> TagIter<'a> {
        TagIter {
            arena: &self.batch.arena,
            spans: self.batch.tags[self.entry.tags.clone()].iter(),
        }
    }

    /// True when the point has at least one tag.
    pub fn has_tags(&self) -> bool {
        !self.entry.tags.is_empty()
    }

    /// When the value was measured.
    pub fn timestamp(&self) -> Timestamp {
        self.entry.timestamp
    }

    /// The value.
    pub fn value(&self) -> &'a Value {
        &self.entry.value
    }

    /// The source identity, if the input carried one.
    pub fn source(&self) -> Option<&'a Arc<Source>> {
        self.entry.source.as_ref()
    }

    /// The time to live in seconds the sender asked for, if any.
    pub fn ttl(&self) -> Option<u32> {
        (self.entry.ttl > 0).then_some(self.entry.ttl)
    }

    /// An owned copy of the point.
    pub fn to_point(&self) -> Point {
        Point {
            name: self.name().to_owned(),
            tags: self
                .tags()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            timestamp: self.timestamp(),
            value: self.value().clone(),
            source: self.source().cloned(),
        }
    }
}

// === impl TagIter ===

impl<'a> Iterator for TagIter<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        self.spans.next().map(|span| {
            (
                &self.arena[span.key.clone()],
                &self.arena[span.value.clone()],
            )
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.spans.size_hint()
    }
}

impl ExactSizeIterator for TagIter<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_sorted_and_last_duplicate_wins() {
        let mut batch = Batch::new();
        batch.push(
            "m",
            [("z", "1"), ("a", "2"), ("k", "first"), ("k", "second")],
            Timestamp::from_millis(5),
            Value::F64(1.0),
            None,
        );
        let point = batch.get(0).expect("one point");
        let tags: Vec<_> = point.tags().collect();
        assert_eq!(tags, vec![("a", "2"), ("k", "second"), ("z", "1")]);
        assert_eq!(point.name(), "m");
    }

    #[test]
    fn points_keep_their_own_tags() {
        let mut batch = Batch::new();
        batch.push(
            "a",
            [("x", "1")],
            Timestamp::from_millis(1),
            Value::F64(1.0),
            None,
        );
        batch.push("b", [], Timestamp::from_millis(2), Value::I64(2), None);
        batch.push(
            "c",
            [("y", "3"), ("w", "4")],
            Timestamp::from_millis(3),
            Value::U32(3),
            None,
        );
        let points = batch.to_points();
        assert_eq!(points[0].tags, vec![("x".to_owned(), "1".to_owned())]);
        assert!(points[1].tags.is_empty());
        assert_eq!(points[2].tags[0].0, "w");
        assert_eq!(points[2].value, Value::U32(3));
        let copied: Batch = points.clone().into_iter().collect();
        assert_eq!(copied.to_points(), points);
    }
}
