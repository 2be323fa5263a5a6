//! Graphite templates that lift path segments into tags, in the style
//! operators know from InfluxDB/Telegraf: `[filter] template [k=v,...]`.
//!
//! Template parts, one per path segment: `measurement` (or `field`) joins
//! the segment into the name, `measurement*` takes every remaining segment,
//! an empty part or `_` skips the segment, a part equal to the segment is a
//! literal (so `servers.host.measurement*` maps `servers.web01.cpu.load` to
//! name `cpu.load` with `host=web01`, as design.md describes), and any
//! other part names a tag. A template fits a path only when the filter glob
//! matches the leading segments and the segment counts agree (or a `*`
//! part takes the rest).

use regex::Regex;

/// One compiled template.
#[derive(Debug, Clone)]
pub struct Template {
    text: String,
    filter: Option<Regex>,
    parts: Vec<Part>,
    tags: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Name,
    NameRest,
    Skip,
    Word(String),
}

/// Why a template string is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("template {template:?}: {reason}")]
pub struct TemplateError {
    template: String,
    reason: String,
}

impl Template {
    /// Parses `template`, `filter template`, `template k=v,k2=v2` or
    /// `filter template k=v`.
    ///
    /// # Errors
    /// [`TemplateError`] for a malformed template.
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let error = |reason: &str| TemplateError {
            template: text.to_owned(),
            reason: reason.to_owned(),
        };
        let words: Vec<&str> = text.split_whitespace().collect();
        let (filter, template, tags) = match words.as_slice() {
            [template] => (None, *template, None),
            [first, second] if second.contains('=') => (None, *first, Some(*second)),
            [filter, template] => (Some(*filter), *template, None),
            [filter, template, tags] => (Some(*filter), *template, Some(*tags)),
            _ => return Err(error("expected [filter] template [k=v,...]")),
        };
        let parts: Vec<Part> = template
            .split('.')
            .map(|part| match part {
                "measurement" | "field" => Part::Name,
                "measurement*" | "field*" => Part::NameRest,
                "" | "_" => Part::Skip,
                word => Part::Word(word.to_owned()),
            })
            .collect();
        if let Some(position) = parts.iter().position(|p| *p == Part::NameRest) {
            if position + 1 != parts.len() {
                return Err(error("measurement* must be the last part"));
            }
        }
        let tags = match tags {
            None => Vec::new(),
            Some(tags) => tags
                .split(',')
                .map(|pair| match pair.split_once('=') {
                    Some((k, v)) if !k.is_empty() && !v.is_empty() => {
                        Ok((k.to_owned(), v.to_owned()))
                    }
                    _ => Err(error("extra tags must be k=v,k2=v2")),
                })
                .collect::<Result<_, _>>()?,
        };
        // As in InfluxDB, a filter matches the leading segments of a path:
        // `servers.*` takes `servers.web01.cpu.load`.
        let filter = filter
            .map(|glob| {
                let anchored = crate::config::glob_to_regex(glob);
                let prefix = format!("{}(?:\\.|$)", anchored.trim_end_matches('$'));
                Regex::new(&prefix).map_err(|e| error(&e.to_string()))
            })
            .transpose()?;
        Ok(Self {
            text: text.to_owned(),
            filter,
            parts,
            tags,
        })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Applies the template to `path`: the new name and the lifted tags
    /// (with the template's extra tags), or `None` when it does not fit.
    pub fn apply<'p>(&self, path: &'p str) -> Option<(String, Vec<(String, String)>)> {
        if self
            .filter
            .as_ref()
            .is_some_and(|filter| !filter.is_match(path))
        {
            return None;
        }
        let segments: Vec<&'p str> = path.split('.').collect();
        let has_rest = self.parts.last() == Some(&Part::NameRest);
        let fits = if has_rest {
            segments.len() >= self.parts.len()
        } else {
            segments.len() == self.parts.len()
        };
        if !fits {
            return None;
        }
        let mut name: Vec<&str> = Vec::new();
        let mut tags: Vec<(String, String)> = Vec::new();
        for (index, part) in self.parts.iter().enumerate() {
            let segment = segments[index];
            match part {
                Part::Name => name.push(segment),
                Part::NameRest => name.extend_from_slice(&segments[index..]),
                Part::Skip => {}
                Part::Word(word) if word == segment => {}
                Part::Word(tag) => tags.push((tag.clone(), segment.to_owned())),
            }
        }
        if name.is_empty()
            || name.iter().any(|s| s.is_empty())
            || tags.iter().any(|(_, v)| v.is_empty())
        {
            return None;
        }
        for (key, value) in &self.tags {
            if !tags.iter().any(|(k, _)| k == key) {
                tags.push((key.clone(), value.clone()));
            }
        }
        Some((name.join("."), tags))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(template: &str, path: &str) -> Option<(String, Vec<(String, String)>)> {
        Template::parse(template)
            .expect("valid template")
            .apply(path)
    }

    fn tags(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn design_md_example() {
        assert_eq!(
            apply("servers.host.measurement*", "servers.web01.cpu.load"),
            Some(("cpu.load".to_owned(), tags(&[("host", "web01")])))
        );
        assert_eq!(apply("servers.host.measurement*", "servers.web01"), None);
    }

    #[test]
    fn influx_style_forms() {
        assert_eq!(
            apply(
                "servers.* .host.measurement* dc=eu",
                "servers.web01.cpu.load"
            ),
            Some((
                "cpu.load".to_owned(),
                tags(&[("host", "web01"), ("dc", "eu")])
            ))
        );
        assert_eq!(
            apply("servers.* .host.measurement*", "apps.web01.cpu"),
            None
        );
        assert_eq!(
            apply("region.host.measurement.field", "eu.web01.cpu.idle"),
            Some((
                "cpu.idle".to_owned(),
                tags(&[("region", "eu"), ("host", "web01")])
            ))
        );
        assert_eq!(
            apply("region.host.measurement", "eu.web01.cpu.idle"),
            None,
            "segment counts must agree"
        );
        assert_eq!(
            apply("_.host.measurement region=us", "x.h.m"),
            Some(("m".to_owned(), tags(&[("host", "h"), ("region", "us")])))
        );
    }

    #[test]
    fn malformed_templates_are_refused() {
        assert!(Template::parse("measurement*.host").is_err());
        assert!(Template::parse("a b c d").is_err());
        assert!(Template::parse("host.measurement k=").is_err());
    }
}
