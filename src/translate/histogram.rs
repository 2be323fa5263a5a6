//! Histograms for targets without them: summary series (count, sum,
//! mean, min, max, quantiles) or a counted drop at the encoder.

use crate::model::{Batch, Histogram, PointRef, Value};

/// One summary series written for a histogram.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stat {
    /// Number of samples (`.count`).
    Count,
    /// Approximate sum (`.sum`).
    Sum,
    /// Approximate mean (`.mean`).
    Mean,
    /// Lower bound of the lowest bin (`.min`).
    Min,
    /// Upper bound of the highest bin (`.max`).
    Max,
    /// An approximate quantile in 0..=1 (`.p50`, `.p99_9`).
    Quantile(f64),
}

impl Stat {
    /// Parses `count`, `sum`, `mean`, `min` or `max`.
    pub fn parse(text: &str) -> Option<Stat> {
        Some(match text {
            "count" => Stat::Count,
            "sum" => Stat::Sum,
            "mean" => Stat::Mean,
            "min" => Stat::Min,
            "max" => Stat::Max,
            _ => return None,
        })
    }

    /// The suffix appended to the metric name, without the dot.
    pub fn suffix(self) -> String {
        match self {
            Stat::Count => "count".to_owned(),
            Stat::Sum => "sum".to_owned(),
            Stat::Mean => "mean".to_owned(),
            Stat::Min => "min".to_owned(),
            Stat::Max => "max".to_owned(),
            Stat::Quantile(q) => {
                // 0.5 -> p50, 0.999 -> p99_9: the percentile with `_` for
                // the decimal point, since `.` separates Graphite nodes.
                let percent = format!("{}", (q * 100_000.0).round() / 1000.0);
                format!("p{}", percent.replace('.', "_"))
            }
        }
    }

    fn value(self, histogram: &Histogram) -> Option<Value> {
        let count = histogram.count();
        if count == 0 && self != Stat::Count {
            return None;
        }
        let value = match self {
            Stat::Count => return Some(Value::U64(count)),
            Stat::Sum => Some(histogram.sum()),
            Stat::Mean => histogram.mean(),
            Stat::Min => histogram.min(),
            Stat::Max => histogram.max(),
            Stat::Quantile(q) => histogram.quantile(q),
        };
        value.filter(|v| v.is_finite()).map(Value::F64)
    }
}

/// What a Graphite or KairosDB upstream does with histograms.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum HistogramPolicy {
    /// Histograms pass unchanged (targets that carry them: IRONdb).
    #[default]
    Keep,
    /// Histograms are left to the encoder, which drops and counts them.
    Drop,
    /// Each histogram becomes one point per summary series.
    Summary(Vec<Stat>),
}

/// The summary series written when an upstream configures none.
pub fn default_stats() -> Vec<Stat> {
    vec![
        Stat::Count,
        Stat::Sum,
        Stat::Min,
        Stat::Max,
        Stat::Quantile(0.5),
        Stat::Quantile(0.9),
        Stat::Quantile(0.99),
    ]
}

impl HistogramPolicy {
    /// True when `point` is a histogram this policy turns into series.
    pub fn expands(&self, point: &PointRef<'_>) -> bool {
        matches!(self, HistogramPolicy::Summary(_)) && matches!(point.value(), Value::Histogram(_))
    }

    /// Appends the summary series of a histogram point under `name` and
    /// `tags`; returns false (appending nothing) when it is not one.
    pub fn expand<'t>(
        &self,
        point: &PointRef<'_>,
        name: &str,
        tags: &[(&'t str, &'t str)],
        out: &mut Batch,
    ) -> bool {
        let (HistogramPolicy::Summary(stats), Value::Histogram(histogram)) = (self, point.value())
        else {
            return false;
        };
        let mut series = String::with_capacity(name.len() + 8);
        for stat in stats {
            let Some(value) = stat.value(histogram) else {
                continue;
            };
            series.clear();
            series.push_str(name);
            series.push('.');
            series.push_str(&stat.suffix());
            out.push(
                &series,
                tags.iter().copied(),
                point.timestamp(),
                value,
                point.source().cloned(),
            );
            out.set_last_ttl(point.ttl().unwrap_or(0));
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::model::Timestamp;

    #[test]
    fn histograms_become_summary_series_with_their_tags() {
        let histogram = Histogram::from_values([1.0, 1.0, 2.5]);
        let mut input = Batch::new();
        input.push(
            "latency",
            [("host", "a")],
            Timestamp::from_millis(5_000),
            Value::Histogram(std::sync::Arc::new(histogram)),
            None,
        );
        let policy =
            HistogramPolicy::Summary(vec![Stat::Count, Stat::Min, Stat::Max, Stat::Quantile(0.5)]);
        let point = input.get(0).expect("point");
        assert!(policy.expands(&point));
        let mut out = Batch::new();
        assert!(policy.expand(&point, "latency", &[("host", "a")], &mut out));
        let got: Vec<(String, Value)> = out
            .iter()
            .map(|p| {
                assert_eq!(p.tags().collect::<Vec<_>>(), vec![("host", "a")]);
                assert_eq!(p.timestamp().as_millis(), 5_000);
                (p.name().to_owned(), p.value().clone())
            })
            .collect();
        assert_eq!(got[0], ("latency.count".to_owned(), Value::U64(3)));
        assert_eq!(got[1], ("latency.min".to_owned(), Value::F64(1.0)));
        assert_eq!(got[2], ("latency.max".to_owned(), Value::F64(2.6)));
        assert_eq!(got[3].0, "latency.p50");
        let Value::F64(median) = got[3].1 else {
            panic!("median is a double")
        };
        assert!((1.0..1.1).contains(&median), "{median}");
        // Keep and Drop leave histograms to the encoder.
        assert!(!HistogramPolicy::Keep.expands(&point));
        assert!(!HistogramPolicy::Drop.expand(&point, "latency", &[], &mut out));
    }

    #[test]
    fn an_empty_histogram_has_only_a_count() {
        let mut input = Batch::new();
        input.push(
            "empty",
            [],
            Timestamp::from_millis(0),
            Value::Histogram(std::sync::Arc::new(Histogram::default())),
            None,
        );
        let mut out = Batch::new();
        let policy = HistogramPolicy::Summary(default_stats());
        assert!(policy.expand(&input.get(0).expect("point"), "empty", &[], &mut out));
        assert_eq!(out.len(), 1);
        assert_eq!(out.get(0).expect("count").value(), &Value::U64(0));
    }

    #[test]
    fn quantile_suffixes_avoid_dots() {
        assert_eq!(Stat::Quantile(0.5).suffix(), "p50");
        assert_eq!(Stat::Quantile(0.99).suffix(), "p99");
        assert_eq!(Stat::Quantile(0.999).suffix(), "p99_9");
        assert_eq!(Stat::Quantile(1.0).suffix(), "p100");
        assert_eq!(Stat::Count.suffix(), "count");
    }
}
