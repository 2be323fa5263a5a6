//! Log-linear histograms with circllhist semantics (protocols.md section 8).
//!
//! A bucket `(val, exp)` holds two significant decimal digits and a power of
//! ten: for `10 <= val <= 99` it is `[val/10 * 10^exp, (val+1)/10 * 10^exp)`
//! and negative buckets mirror it (`(-(|val|+1)/10 * 10^exp, val/10 * 10^exp]`).
//! `(0, 0)` holds zero and every `|x| < 1e-128`; `(-1, 0)` is the NaN bucket
//! for NaN, infinities and `|x| >= 1e128`. The arithmetic reproduces
//! libcircllhist (`double_to_hist_bucket`, `hist_bucket_midpoint`,
//! `hist_approx_*`) so that tsrelay picks the same bucket and derives the
//! same summary values as the C library IRONdb and reconnoiter use.
//!
//! The statistics are approximations from bucket bounds, as in the C library;
//! they exist to turn a histogram into plain numeric series (Graphite).

use std::cmp::Ordering;

/// One histogram bin: the bucket `(val, exp)` and how many samples fell in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Bin {
    /// Two significant digits with sign (10..=99, -99..=-10, 0 for zero, -1 for NaN).
    pub val: i8,
    /// Power-of-ten exponent.
    pub exp: i8,
    /// Number of samples in the bin.
    pub count: u64,
}

/// A histogram: its bins and whether it is cumulative (IRONdb `H2`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Histogram {
    /// The bins, in the order they were read.
    pub bins: Vec<Bin>,
    /// True for cumulative histograms.
    pub cumulative: bool,
}

/// `10^exp` indexed by `exp as u8`: `1e0..1e127` at 0..=127 and
/// `1e-128..1e-1` at 128..=255. Decimal literals, not `powi`, because the
/// bucket choice depends on the exact doubles libcircllhist's table holds.
const POWER_OF_TEN: [f64; 256] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22, 1e23, 1e24, 1e25, 1e26, 1e27, 1e28, 1e29, 1e30, 1e31, 1e32,
    1e33, 1e34, 1e35, 1e36, 1e37, 1e38, 1e39, 1e40, 1e41, 1e42, 1e43, 1e44, 1e45, 1e46, 1e47, 1e48,
    1e49, 1e50, 1e51, 1e52, 1e53, 1e54, 1e55, 1e56, 1e57, 1e58, 1e59, 1e60, 1e61, 1e62, 1e63, 1e64,
    1e65, 1e66, 1e67, 1e68, 1e69, 1e70, 1e71, 1e72, 1e73, 1e74, 1e75, 1e76, 1e77, 1e78, 1e79, 1e80,
    1e81, 1e82, 1e83, 1e84, 1e85, 1e86, 1e87, 1e88, 1e89, 1e90, 1e91, 1e92, 1e93, 1e94, 1e95, 1e96,
    1e97, 1e98, 1e99, 1e100, 1e101, 1e102, 1e103, 1e104, 1e105, 1e106, 1e107, 1e108, 1e109, 1e110,
    1e111, 1e112, 1e113, 1e114, 1e115, 1e116, 1e117, 1e118, 1e119, 1e120, 1e121, 1e122, 1e123,
    1e124, 1e125, 1e126, 1e127, 1e-128, 1e-127, 1e-126, 1e-125, 1e-124, 1e-123, 1e-122, 1e-121,
    1e-120, 1e-119, 1e-118, 1e-117, 1e-116, 1e-115, 1e-114, 1e-113, 1e-112, 1e-111, 1e-110, 1e-109,
    1e-108, 1e-107, 1e-106, 1e-105, 1e-104, 1e-103, 1e-102, 1e-101, 1e-100, 1e-99, 1e-98, 1e-97,
    1e-96, 1e-95, 1e-94, 1e-93, 1e-92, 1e-91, 1e-90, 1e-89, 1e-88, 1e-87, 1e-86, 1e-85, 1e-84,
    1e-83, 1e-82, 1e-81, 1e-80, 1e-79, 1e-78, 1e-77, 1e-76, 1e-75, 1e-74, 1e-73, 1e-72, 1e-71,
    1e-70, 1e-69, 1e-68, 1e-67, 1e-66, 1e-65, 1e-64, 1e-63, 1e-62, 1e-61, 1e-60, 1e-59, 1e-58,
    1e-57, 1e-56, 1e-55, 1e-54, 1e-53, 1e-52, 1e-51, 1e-50, 1e-49, 1e-48, 1e-47, 1e-46, 1e-45,
    1e-44, 1e-43, 1e-42, 1e-41, 1e-40, 1e-39, 1e-38, 1e-37, 1e-36, 1e-35, 1e-34, 1e-33, 1e-32,
    1e-31, 1e-30, 1e-29, 1e-28, 1e-27, 1e-26, 1e-25, 1e-24, 1e-23, 1e-22, 1e-21, 1e-20, 1e-19,
    1e-18, 1e-17, 1e-16, 1e-15, 1e-14, 1e-13, 1e-12, 1e-11, 1e-10, 1e-9, 1e-8, 1e-7, 1e-6, 1e-5,
    1e-4, 1e-3, 1e-2, 1e-1,
];

/// The bucket of NaN, infinities and values too large for an `i8` exponent.
const NAN_BUCKET: (i8, i8) = (-1, 0);

/// The bucket of zero and of values too small for an `i8` exponent.
const ZERO_BUCKET: (i8, i8) = (0, 0);

/// libcircllhist's margin against `x / 10^e * 10` landing just below an
/// integer: without it 0.11 would fall in bucket 10 instead of 11.
const BOUNDARY_FUDGE: f64 = 1e-13;

// === impl Bin ===

impl Bin {
    /// The bucket `(val, exp)` a value falls in (libcircllhist `double_to_hist_bucket`).
    pub fn bucket_of(x: f64) -> (i8, i8) {
        if !x.is_finite() {
            return NAN_BUCKET;
        }
        if x == 0.0 {
            return ZERO_BUCKET;
        }
        let magnitude = x.abs();
        // Finite and non-zero, so log10 is within about -324..=309.
        let big_exp = magnitude.log10().floor() as i32;
        let Ok(exp) = i8::try_from(big_exp) else {
            return if big_exp >= 0 {
                NAN_BUCKET
            } else {
                ZERO_BUCKET
            };
        };
        let digits = (magnitude / power_of_ten(exp) * 10.0 + BOUNDARY_FUDGE).floor();
        // Two digits after scaling; rounding can reach 100 (next decade) or,
        // in theory, fall below 10, which the C library maps to NaN.
        let (digits, exp) = if digits == 100.0 {
            match exp.checked_add(1) {
                Some(next) => (10.0, next),
                None => return NAN_BUCKET,
            }
        } else {
            (digits, exp)
        };
        if digits < 1.0 {
            return ZERO_BUCKET;
        }
        if !(10.0..100.0).contains(&digits) {
            return NAN_BUCKET;
        }
        let val = digits as i8;
        (if x < 0.0 { -val } else { val }, exp)
    }

    /// A bin of `count` samples in the bucket of `x`.
    pub fn of_value(x: f64, count: u64) -> Bin {
        let (val, exp) = Self::bucket_of(x);
        Bin { val, exp, count }
    }

    /// True for buckets libcircllhist accepts: two-digit values, zero and
    /// the one NaN bucket `(-1, 0)`. A zero bucket with another exponent is
    /// valid too (the C library ignores the exponent of zero).
    pub fn is_valid(&self) -> bool {
        self.is_real() || (self.val, self.exp) == NAN_BUCKET
    }

    /// True for the NaN bucket and for invalid buckets: bins that hold no
    /// real number and that every statistic leaves out.
    pub fn is_nan(&self) -> bool {
        !self.is_real()
    }

    /// True for the zero bucket.
    pub fn is_zero(&self) -> bool {
        self.val == 0
    }

    /// The lowest value of the bucket on the real line (closed for positive
    /// buckets, open for negative ones); NaN for the NaN bucket.
    pub fn lower(&self) -> f64 {
        let edge = self.edge();
        if edge < 0.0 {
            edge - self.width()
        } else {
            edge
        }
    }

    /// The highest value of the bucket on the real line; NaN for the NaN bucket.
    pub fn upper(&self) -> f64 {
        let edge = self.edge();
        if edge > 0.0 {
            edge + self.width()
        } else {
            edge
        }
    }

    /// The bucket's width: `10^exp / 10`, 0 for zero, NaN for the NaN bucket.
    pub fn width(&self) -> f64 {
        if self.is_nan() {
            return f64::NAN;
        }
        if self.val == 0 {
            return 0.0;
        }
        power_of_ten(self.exp) / 10.0
    }

    /// libcircllhist's `hist_bucket_midpoint`: the edge nearest zero plus
    /// half a width away from zero (the arithmetic middle of the bucket).
    pub fn midpoint(&self) -> f64 {
        let edge = self.edge();
        if edge == 0.0 || edge.is_nan() {
            return edge;
        }
        let half = self.width() / 2.0;
        if edge < 0.0 {
            edge - half
        } else {
            edge + half
        }
    }

    /// Compares the buckets (not the counts) on the real line with NaN
    /// (and invalid buckets) first: libcircllhist's `hist_bucket_cmp` order.
    pub fn cmp_bucket(&self, other: &Bin) -> Ordering {
        self.order_key().cmp(&other.order_key())
    }

    /// Two-digit values and zero: the buckets that stand for real numbers.
    fn is_real(&self) -> bool {
        let magnitude = self.val.unsigned_abs();
        magnitude == 0 || (10..=99).contains(&magnitude)
    }

    /// libcircllhist's `hist_bucket_to_double`: `val/10 * 10^exp`, the edge
    /// of the bucket nearest zero.
    fn edge(&self) -> f64 {
        if self.is_nan() {
            return f64::NAN;
        }
        if self.val == 0 {
            return 0.0;
        }
        (f64::from(self.val) / 10.0) * power_of_ten(self.exp)
    }

    /// A key whose order is the real-line order: NaN-like first, then
    /// negatives from the most negative, zero, positives ascending.
    fn order_key(&self) -> (u8, i16, i16) {
        let (val, exp) = (i16::from(self.val), i16::from(self.exp));
        if self.is_nan() {
            (0, val, exp)
        } else if val < 0 {
            // A larger exponent is further from zero, so more negative.
            (1, -exp, val)
        } else if val == 0 {
            (2, 0, 0)
        } else {
            (3, exp, val)
        }
    }
}

// === impl Histogram ===

impl Histogram {
    /// Total number of samples across all bins (the NaN bucket included,
    /// as libcircllhist's `hist_sample_count`), saturating.
    pub fn count(&self) -> u64 {
        self.bins
            .iter()
            .fold(0u64, |sum, bin| sum.saturating_add(bin.count))
    }

    /// A normalised, non-cumulative histogram of the given samples.
    pub fn from_values(values: impl IntoIterator<Item = f64>) -> Self {
        let mut histogram = Histogram {
            bins: values.into_iter().map(|x| Bin::of_value(x, 1)).collect(),
            cumulative: false,
        };
        histogram.normalise();
        histogram
    }

    /// Puts the bins in canonical form: zero counts and invalid buckets
    /// dropped, the zero bucket's exponent set to 0, bins sorted NaN first
    /// then ascending on the real line, and repeated buckets merged with a
    /// saturating add. This is the order libcircllhist keeps internally and
    /// the only order its readers handle correctly.
    pub fn normalise(&mut self) {
        if self.is_normalised() {
            return;
        }
        self.bins.retain_mut(|bin| {
            if bin.val == 0 {
                bin.exp = 0;
            }
            bin.count != 0 && bin.is_valid()
        });
        self.bins.sort_by_key(Bin::order_key);
        self.bins.dedup_by(|later, kept| {
            let same = (later.val, later.exp) == (kept.val, kept.exp);
            if same {
                kept.count = kept.count.saturating_add(later.count);
            }
            same
        });
    }

    /// True when [`Histogram::normalise`] would change nothing.
    pub fn is_normalised(&self) -> bool {
        let bins_ok = self
            .bins
            .iter()
            .all(|bin| bin.count != 0 && bin.is_valid() && (bin.val != 0 || bin.exp == 0));
        bins_ok
            && self
                .bins
                .windows(2)
                .all(|pair| pair[0].order_key() < pair[1].order_key())
    }

    /// libcircllhist's `hist_approx_sum`: each bin's midpoint times its
    /// count, NaN bucket left out; 0 for an empty histogram.
    pub fn sum(&self) -> f64 {
        self.real_bins()
            .map(|bin| bin.midpoint() * bin.count as f64)
            .sum()
    }

    /// libcircllhist's `hist_approx_mean`; `None` without real samples.
    pub fn mean(&self) -> Option<f64> {
        let (sum, n) = self.real_bins().fold((0.0, 0.0), |(sum, n), bin| {
            let count = bin.count as f64;
            (sum + bin.midpoint() * count, n + count)
        });
        (n > 0.0).then(|| sum / n)
    }

    /// The lower bound of the lowest bin holding samples (NaN bucket left
    /// out); `None` without real samples.
    pub fn min(&self) -> Option<f64> {
        self.real_bins().map(|bin| bin.lower()).reduce(f64::min)
    }

    /// The upper bound of the highest bin holding samples (NaN bucket left
    /// out); `None` without real samples.
    pub fn max(&self) -> Option<f64> {
        self.real_bins().map(|bin| bin.upper()).reduce(f64::max)
    }

    /// libcircllhist's `hist_approx_quantile` for one `q` in `[0, 1]`:
    /// the bin holding the `q * n`-th sample is found walking up from the
    /// lowest, and the value interpolated linearly across its width (a bin
    /// boundary gives the boundary, the zero bucket gives 0). `None` when
    /// `q` is outside `[0, 1]` or NaN, or without real samples. An
    /// unnormalised histogram is normalised into a copy first.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if !(0.0..=1.0).contains(&q) {
            return None;
        }
        if !self.is_normalised() {
            let mut copy = self.clone();
            copy.normalise();
            return copy.quantile(q);
        }
        let total: f64 = self.real_bins().map(|bin| bin.count as f64).sum();
        if total == 0.0 {
            return None;
        }
        let target = total * q;
        let (mut lower_count, mut upper_count) = (0.0, 0.0);
        let mut found = None;
        for bin in self.real_bins() {
            lower_count = upper_count;
            upper_count = lower_count + bin.count as f64;
            found = Some(bin);
            if upper_count >= target {
                break;
            }
        }
        let bin = found?;
        let (left, width) = (bin.lower(), bin.width());
        Some(if lower_count == target {
            left
        } else if upper_count == target {
            left + width
        } else if width == 0.0 {
            left
        } else {
            left + (target - lower_count) / (upper_count - lower_count) * width
        })
    }

    /// Bins that hold real samples, in stored order.
    fn real_bins(&self) -> impl Iterator<Item = &Bin> + Clone + '_ {
        self.bins
            .iter()
            .filter(|bin| bin.count != 0 && !bin.is_nan())
    }
}

/// `10^exp` from the table, indexed by the exponent's byte as in C.
fn power_of_ten(exp: i8) -> f64 {
    POWER_OF_TEN[usize::from(exp as u8)]
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn bin(val: i8, exp: i8, count: u64) -> Bin {
        Bin { val, exp, count }
    }

    fn buckets(histogram: &Histogram) -> Vec<(i8, i8, u64)> {
        histogram
            .bins
            .iter()
            .map(|b| (b.val, b.exp, b.count))
            .collect()
    }

    #[test]
    fn the_table_holds_every_power_of_ten() {
        for exp in i8::MIN..=i8::MAX {
            let expected: f64 = format!("1e{exp}").parse().expect("a float");
            assert_eq!(power_of_ten(exp).to_bits(), expected.to_bits(), "1e{exp}");
        }
    }

    #[test]
    fn edge_values_land_in_the_c_library_buckets() {
        let cases: &[(f64, (i8, i8))] = &[
            (0.11, (11, -1)),
            (99.999, (99, 1)),
            (1e-130, (0, 0)),
            (1e130, (-1, 0)),
            (-100.0, (-10, 2)),
            (0.08, (80, -2)),
            (1.0, (10, 0)),
            (2.5, (25, 0)),
            (250.0, (25, 2)),
            (-0.5, (-50, -1)),
            (0.0, (0, 0)),
            (-0.0, (0, 0)),
            (f64::NAN, (-1, 0)),
            (f64::INFINITY, (-1, 0)),
            (f64::NEG_INFINITY, (-1, 0)),
            (1e127, (10, 127)),
            (9.99e127, (99, 127)),
            (1e-128, (10, -128)),
            (f64::MIN_POSITIVE, (0, 0)),
            (f64::MAX, (-1, 0)),
        ];
        for (x, expected) in cases {
            assert_eq!(Bin::bucket_of(*x), *expected, "{x}");
        }
    }

    #[test]
    fn bounds_width_and_midpoint_follow_the_c_library() {
        // Bounds as the fixture file lists them (computed by libcircllhist).
        let positive = bin(11, -1, 1);
        assert_eq!(positive.lower(), 0.11000000000000001);
        assert_eq!(positive.upper(), 0.12000000000000001);
        assert_eq!(positive.width(), 0.01);
        let negative = bin(-10, 2, 1);
        assert_eq!((negative.lower(), negative.upper()), (-110.0, -100.0));
        assert_eq!(negative.midpoint(), -105.0);
        assert_eq!(bin(10, 0, 1).midpoint(), 1.05);
        assert_eq!(bin(99, 1, 1).upper(), 100.0);
        let zero = bin(0, 0, 1);
        assert_eq!((zero.lower(), zero.upper(), zero.width()), (0.0, 0.0, 0.0));
        assert_eq!(zero.midpoint(), 0.0);
        let nan = bin(-1, 0, 1);
        assert!(nan.lower().is_nan() && nan.upper().is_nan() && nan.midpoint().is_nan());
        assert!(nan.is_valid() && nan.is_nan());
    }

    #[test]
    fn validity_matches_the_c_library() {
        let valid = [
            (10, 0),
            (99, 5),
            (-10, -3),
            (-99, 127),
            (0, 0),
            (0, 7),
            (-1, 0),
        ];
        for (val, exp) in valid {
            assert!(bin(val, exp, 1).is_valid(), "({val}, {exp})");
        }
        let invalid = [
            (1, 0),
            (9, 0),
            (-9, 0),
            (-2, 0),
            (100, 0),
            (-100, 0),
            (-1, 1),
        ];
        for (val, exp) in invalid {
            assert!(!bin(val, exp, 1).is_valid(), "({val}, {exp})");
        }
    }

    #[test]
    fn normalise_sorts_nan_first_then_the_real_line_and_merges() {
        let mut histogram = Histogram {
            bins: vec![
                bin(25, 2, 1),
                bin(10, 0, 1),
                bin(0, 3, 1),
                bin(-50, -1, 1),
                bin(-1, 0, 1),
                bin(-99, 1, 1),
                bin(-10, 2, 1),
                bin(10, 0, 1),
                bin(25, 0, 1),
                bin(5, 0, 9),
                bin(30, 0, 0),
                bin(99, -1, 1),
                bin(25, 0, u64::MAX),
                bin(0, 0, 2),
            ],
            cumulative: true,
        };
        assert!(!histogram.is_normalised());
        histogram.normalise();
        assert_eq!(
            buckets(&histogram),
            vec![
                (-1, 0, 1),
                (-10, 2, 1),
                (-99, 1, 1),
                (-50, -1, 1),
                (0, 0, 3),
                (99, -1, 1),
                (10, 0, 2),
                (25, 0, u64::MAX),
                (25, 2, 1),
            ]
        );
        assert!(histogram.cumulative);
        assert!(histogram.is_normalised());
        let before = histogram.clone();
        histogram.normalise();
        assert_eq!(histogram, before);
    }

    #[test]
    fn sorting_by_bucket_agrees_with_the_real_line() {
        let values = [
            -1e5, -120.0, -100.0, -99.0, -0.5, -1e-100, 0.0, 1e-100, 0.5, 99.0, 100.0, 1e5,
        ];
        for pair in values.windows(2) {
            let (a, b) = (Bin::of_value(pair[0], 1), Bin::of_value(pair[1], 1));
            assert_eq!(
                a.cmp_bucket(&b),
                Ordering::Less,
                "{} < {}",
                pair[0],
                pair[1]
            );
            assert!(a.upper() <= b.lower(), "{} and {}", pair[0], pair[1]);
        }
        let nan = Bin::of_value(f64::NAN, 1);
        assert_eq!(nan.cmp_bucket(&Bin::of_value(-1e100, 1)), Ordering::Less);
    }

    #[test]
    fn from_values_builds_the_fixture_histogram() {
        let histogram = Histogram::from_values([1.0, 1.0, 2.5, 250.0, -0.5, 0.0, f64::NAN]);
        assert_eq!(
            buckets(&histogram),
            vec![
                (-1, 0, 1),
                (-50, -1, 1),
                (0, 0, 1),
                (10, 0, 2),
                (25, 0, 1),
                (25, 2, 1)
            ]
        );
        assert_eq!(histogram.count(), 7);
    }

    #[test]
    fn statistics_follow_the_c_library() {
        let histogram = Histogram::from_values([1.0, 1.0, 2.5, 250.0, -0.5, 0.0, f64::NAN]);
        let sum = 1.05 * 2.0 + 2.55 + 255.0 - 0.505;
        assert!((histogram.sum() - sum).abs() < 1e-9);
        assert!((histogram.mean().expect("samples") - sum / 6.0).abs() < 1e-9);
        assert_eq!(histogram.min(), Some(-0.51));
        assert_eq!(histogram.max(), Some(260.0));
        assert_eq!(histogram.quantile(0.0), Some(-0.51));
        assert_eq!(histogram.quantile(1.0), Some(260.0));
        // 6 real samples: the 2nd ends the zero bucket; the 3rd is halfway
        // through [1.0, 1.1), which holds samples 3 and 4.
        assert_eq!(histogram.quantile(2.0 / 6.0), Some(0.0));
        let q = histogram.quantile(0.5).expect("samples");
        assert!((q - 1.05).abs() < 1e-12, "{q}");
        // The 4th sample ends [1.0, 1.1).
        let q = histogram.quantile(4.0 / 6.0).expect("samples");
        assert!((q - 1.1).abs() < 1e-12, "{q}");
        assert_eq!(histogram.quantile(1.5), None);
        assert_eq!(histogram.quantile(f64::NAN), None);
    }

    #[test]
    fn quantiles_interpolate_inside_a_bin() {
        let histogram = Histogram {
            bins: vec![bin(10, 0, 4)],
            cumulative: false,
        };
        let q = histogram.quantile(0.25).expect("samples");
        assert!((q - 1.025).abs() < 1e-12, "{q}");
        assert_eq!(histogram.quantile(0.0), Some(1.0));
        assert_eq!(histogram.quantile(1.0), Some(1.1));
        // Unnormalised input is normalised into a copy first.
        let unsorted = Histogram {
            bins: vec![bin(20, 0, 1), bin(10, 0, 1)],
            cumulative: false,
        };
        assert_eq!(unsorted.quantile(0.0), Some(1.0));
        assert_eq!(unsorted.quantile(1.0), Some(2.1));
    }

    #[test]
    fn empty_and_nan_only_histograms_have_no_statistics() {
        for histogram in [Histogram::default(), Histogram::from_values([f64::NAN])] {
            assert_eq!(histogram.sum(), 0.0);
            assert_eq!(histogram.mean(), None);
            assert_eq!(histogram.min(), None);
            assert_eq!(histogram.max(), None);
            assert_eq!(histogram.quantile(0.5), None);
        }
    }

    proptest! {
        #[test]
        fn every_value_lies_in_its_bucket(mantissa in 1.0f64..10.0, exp in -127i32..127, negative in any::<bool>()) {
            let magnitude = mantissa * 10f64.powi(exp);
            let x = if negative { -magnitude } else { magnitude };
            let bin = Bin::of_value(x, 1);
            prop_assert!(bin.is_valid() && !bin.is_nan() && !bin.is_zero(), "{x:e}: {bin:?}");
            // The 1e-13 fudge may move a value a hair below a boundary up.
            let slack = magnitude * 1e-12;
            prop_assert!(bin.lower() - slack <= x && x <= bin.upper() + slack, "{x:e}: {bin:?}");
        }

        #[test]
        fn normalise_is_idempotent_and_keeps_counts(
            raw in proptest::collection::vec((any::<i8>(), any::<i8>(), 0u64..1000), 0..50),
        ) {
            let mut histogram = Histogram {
                bins: raw.iter().map(|&(val, exp, count)| bin(val, exp, count)).collect(),
                cumulative: false,
            };
            let valid_count: u64 = histogram.bins.iter().filter(|b| b.is_valid()).map(|b| b.count).sum();
            histogram.normalise();
            prop_assert!(histogram.is_normalised());
            prop_assert_eq!(histogram.count(), valid_count);
            let before = histogram.clone();
            histogram.normalise();
            prop_assert_eq!(histogram, before);
        }
    }
}
