//! Log-linear histograms with circllhist semantics (protocols.md section 8).

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

impl Histogram {
    /// Total number of samples across all bins.
    pub fn count(&self) -> u64 {
        self.bins
            .iter()
            .fold(0u64, |sum, bin| sum.saturating_add(bin.count))
    }
}
