//! An owned point, for tests, tools and the rare paths that need one.

use std::sync::Arc;

use super::{Timestamp, Value};

/// Where a point came from, when its protocol carries it (IRONdb check identity).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Source {
    /// IRONdb account id.
    pub account_id: Option<i32>,
    /// Check UUID, lower-case text form.
    pub check_uuid: Option<String>,
    /// Check name.
    pub check_name: Option<String>,
    /// Check target (host).
    pub target: Option<String>,
    /// Check module.
    pub module: Option<String>,
}

/// A self-contained data point. The hot path uses [`super::Batch`] instead.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    /// Metric name (Graphite path without `;tags`, Kairos name, IRONdb name without `|ST[..]`).
    pub name: String,
    /// Tags sorted by key, keys unique.
    pub tags: Vec<(String, String)>,
    /// When the value was measured.
    pub timestamp: Timestamp,
    /// The measured value.
    pub value: Value,
    /// The check identity the input carried, if any.
    pub source: Option<Arc<Source>>,
}

impl Point {
    /// A point with no tags and no source.
    pub fn new(name: impl Into<String>, timestamp: Timestamp, value: Value) -> Self {
        Self {
            name: name.into(),
            tags: Vec::new(),
            timestamp,
            value,
            source: None,
        }
    }

    /// Adds a tag (the tag list is put in canonical order when the point enters a batch).
    pub fn with_tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.push((key.into(), value.into()));
        self
    }
}
