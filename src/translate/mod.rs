//! Per-upstream translation: reshapes points into what the target protocol
//! wants before encoding (design.md section 4). Graphite paths gain tags
//! from templates, static `add_tags` and a default tag for tag-requiring
//! targets; tagged points bound for Graphite keep their tags (carbon 1.1
//! form), lose them, or have them flattened into the path.
//!
//! Pure: no I/O, no clock.

mod histogram;
mod template;

pub use histogram::{default_stats, HistogramPolicy, Stat};
pub use template::{Template, TemplateError};

use crate::model::{Batch, PointRef};

/// What a Graphite upstream does with tags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum GraphiteTags {
    /// Write `name;k=v` (carbon's normalised order).
    #[default]
    Keep,
    /// Write the path alone.
    Drop,
    /// Put tag values into the path: `name.v1.v2` (values in key order), or
    /// a pattern with `{name}` and `{key}` placeholders.
    Flatten(Option<String>),
}

/// One upstream's translation settings.
#[derive(Debug, Clone, Default)]
pub struct Translation {
    /// Graphite templates, first match wins.
    pub templates: Vec<Template>,
    /// Static tags added when absent.
    pub add_tags: Vec<(String, String)>,
    /// A tag given to points that still have none.
    pub default_tag: Option<(String, String)>,
    /// Tag handling for Graphite targets.
    pub graphite_tags: GraphiteTags,
    /// What becomes of histograms (targets without them).
    pub histograms: HistogramPolicy,
}

impl Translation {
    /// True when points other than histograms pass unchanged.
    pub fn is_identity(&self) -> bool {
        self.templates.is_empty()
            && self.add_tags.is_empty()
            && self.default_tag.is_none()
            && self.graphite_tags == GraphiteTags::Keep
    }

    /// True when these points pass unchanged, so the chunk can be encoded
    /// without a copy.
    pub fn passes<'a>(&self, mut points: impl Iterator<Item = PointRef<'a>>) -> bool {
        self.is_identity() && !points.any(|point| self.histograms.expands(&point))
    }

    /// Appends the translated form of `point` to `out`.
    pub fn apply(&self, point: &PointRef<'_>, out: &mut Batch) {
        let templated = self.templates.iter().find_map(|t| t.apply(point.name()));
        let (name, mut tags): (String, Vec<(String, String)>) = match templated {
            Some((name, mut lifted)) => {
                // The point's own tags win over lifted ones.
                for (k, v) in point.tags() {
                    lifted.retain(|(key, _)| key != k);
                    lifted.push((k.to_owned(), v.to_owned()));
                }
                (name, lifted)
            }
            None => (
                point.name().to_owned(),
                point
                    .tags()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
            ),
        };
        for (key, value) in &self.add_tags {
            if !tags.iter().any(|(k, _)| k == key) {
                tags.push((key.clone(), value.clone()));
            }
        }
        if tags.is_empty() {
            if let Some((key, value)) = &self.default_tag {
                tags.push((key.clone(), value.clone()));
            }
        }
        let name = match &self.graphite_tags {
            GraphiteTags::Keep => name,
            GraphiteTags::Drop => {
                tags.clear();
                name
            }
            GraphiteTags::Flatten(pattern) => {
                tags.sort();
                let flat = flatten(&name, &tags, pattern.as_deref());
                tags.clear();
                flat
            }
        };
        let tag_refs: smallvec::SmallVec<[(&str, &str); 8]> =
            tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        if self.histograms.expand(point, &name, &tag_refs, out) {
            return;
        }
        out.push(
            &name,
            tag_refs.iter().copied(),
            point.timestamp(),
            point.value().clone(),
            point.source().cloned(),
        );
        out.set_last_ttl(point.ttl().unwrap_or(0));
    }
}

/// `name.v1.v2`, or the pattern with `{name}` and `{key}` replaced (a tag
/// the point lacks leaves an empty segment, which is collapsed).
fn flatten(name: &str, tags: &[(String, String)], pattern: Option<&str>) -> String {
    let Some(pattern) = pattern else {
        let mut out = name.to_owned();
        for (_, value) in tags {
            out.push('.');
            out.push_str(value);
        }
        return out;
    };
    let mut out = pattern.replace("{name}", name);
    for (key, value) in tags {
        out = out.replace(&format!("{{{key}}}"), value);
    }
    while let (Some(start), Some(end)) = (out.find('{'), out.find('}')) {
        if end < start {
            break;
        }
        out.replace_range(start..=end, "");
    }
    out.split('.')
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Timestamp, Value};

    fn translate(
        translation: &Translation,
        name: &str,
        tags: &[(&str, &str)],
    ) -> (String, Vec<(String, String)>) {
        let mut input = Batch::new();
        input.push(
            name,
            tags.iter().copied(),
            Timestamp::from_millis(1),
            Value::F64(1.0),
            None,
        );
        let mut out = Batch::new();
        translation.apply(&input.get(0).expect("point"), &mut out);
        let point = out.to_points().remove(0);
        (point.name, point.tags)
    }

    #[test]
    fn templates_add_tags_and_default_tag() {
        let translation = Translation {
            templates: vec![Template::parse("servers.host.measurement*").expect("valid")],
            add_tags: vec![("source".into(), "graphite".into())],
            default_tag: Some(("add".into(), "tag".into())),
            graphite_tags: GraphiteTags::Keep,
            histograms: HistogramPolicy::Keep,
        };
        let (name, tags) = translate(&translation, "servers.web01.cpu.load", &[]);
        assert_eq!(name, "cpu.load");
        assert_eq!(
            tags,
            vec![
                ("host".into(), "web01".into()),
                ("source".into(), "graphite".into())
            ]
        );
        let (name, tags) = translate(&translation, "other.metric", &[("host", "x")]);
        assert_eq!((name.as_str(), tags.len()), ("other.metric", 2));
        let bare = Translation {
            default_tag: Some(("add".into(), "tag".into())),
            ..Translation::default()
        };
        assert_eq!(
            translate(&bare, "m", &[]).1,
            vec![("add".into(), "tag".into())]
        );
    }

    #[test]
    fn graphite_tag_modes() {
        let tags = [("host", "a"), ("dc", "eu")];
        let drop = Translation {
            graphite_tags: GraphiteTags::Drop,
            ..Translation::default()
        };
        assert_eq!(translate(&drop, "cpu", &tags), ("cpu".to_owned(), vec![]));
        let flat = Translation {
            graphite_tags: GraphiteTags::Flatten(None),
            ..Translation::default()
        };
        assert_eq!(translate(&flat, "cpu", &tags).0, "cpu.eu.a");
        let pattern = Translation {
            graphite_tags: GraphiteTags::Flatten(Some("servers.{host}.{rack}.{name}".into())),
            ..Translation::default()
        };
        assert_eq!(translate(&pattern, "cpu", &tags).0, "servers.a.cpu");
    }
}
