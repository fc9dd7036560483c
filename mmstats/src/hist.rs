//! Log-linear bucket layout and histogram snapshots.
//!
//! A layout has two parameters: `precision` bits `p` and `max_bits` `m`.
//! Values below `2^(p+1)` get a bucket each. Above that, every power-of-two range
//! `[2^h, 2^(h+1))` is cut into `2^p` equal buckets of width `2^(h-p)`, so a
//! bucket's width is at most `2^-p` of its lower bound. Values of `2^m` and
//! more are counted in the last bucket. With `s = max(0, floor(log2 v) - p)`:
//!
//! ```text
//! index(v) = (s << p) + (v >> s)          bucket count = (m - p + 1) << p
//! ```
//!
//! `format-spec.md` gives worked examples.

use std::fmt;
use std::sync::{Arc, OnceLock};

/// Default precision bits for timers and histograms: buckets at most
/// 1/64 = 1.56% wide, so a reported quantile (a bucket midpoint) is within
/// 0.79% of the exact one.
pub const DEFAULT_PRECISION: u8 = 6;
/// Default range of a timer: values below 2^42 ns (73 minutes).
pub const DEFAULT_TIMER_MAX_BITS: u8 = 42;
/// Default range of a histogram: the whole `u64` range.
pub const DEFAULT_HISTOGRAM_MAX_BITS: u8 = 64;
/// Largest precision a layout may have (buckets of 1/4096 relative width).
pub const MAX_PRECISION: u8 = 12;

/// The bucket layout of one histogram field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Layout {
    precision: u8,
    max_bits: u8,
}

/// Why a layout is not valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayoutError {
    /// Precision bits asked for.
    pub precision: u64,
    /// Maximum bits asked for.
    pub max_bits: u64,
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid histogram layout precision={} max_bits={}: need 1 <= precision <= {} and precision < max_bits <= 64",
            self.precision, self.max_bits, MAX_PRECISION
        )
    }
}

impl std::error::Error for LayoutError {}

impl Layout {
    /// A layout with `precision` bits (1..=12) covering values below
    /// `2^max_bits` (`precision < max_bits <= 64`).
    pub const fn new(precision: u8, max_bits: u8) -> Result<Layout, LayoutError> {
        if precision == 0 || precision > MAX_PRECISION || max_bits <= precision || max_bits > 64 {
            return Err(LayoutError {
                precision: precision as u64,
                max_bits: max_bits as u64,
            });
        }
        Ok(Layout {
            precision,
            max_bits,
        })
    }

    /// The layout for parameters read from a file.
    pub fn from_params(precision: u64, max_bits: u64) -> Result<Layout, LayoutError> {
        let err = LayoutError {
            precision,
            max_bits,
        };
        let p = u8::try_from(precision).map_err(|_| err)?;
        let m = u8::try_from(max_bits).map_err(|_| err)?;
        Layout::new(p, m).map_err(|_| err)
    }

    /// Default layout of a timer: nanoseconds up to 73 minutes, 1.56% buckets.
    pub const fn timer() -> Layout {
        Layout {
            precision: DEFAULT_PRECISION,
            max_bits: DEFAULT_TIMER_MAX_BITS,
        }
    }

    /// Default layout of a histogram: any `u64`, 1.56% buckets.
    pub const fn histogram() -> Layout {
        Layout {
            precision: DEFAULT_PRECISION,
            max_bits: DEFAULT_HISTOGRAM_MAX_BITS,
        }
    }

    /// Precision bits `p`.
    pub const fn precision(self) -> u8 {
        self.precision
    }

    /// Range bits `m`: values of `2^m` and more land in the last bucket.
    pub const fn max_bits(self) -> u8 {
        self.max_bits
    }

    /// Number of buckets.
    pub const fn buckets(self) -> usize {
        ((self.max_bits - self.precision + 1) as usize) << self.precision
    }

    /// Largest relative width of a bucket: `2^-p`.
    pub fn relative_error(self) -> f64 {
        1.0 / (1u64 << self.precision) as f64
    }

    /// Largest value with a bucket of its own range.
    pub const fn max_value(self) -> u64 {
        if self.max_bits == 64 {
            u64::MAX
        } else {
            (1u64 << self.max_bits) - 1
        }
    }

    /// The bucket `v` is counted in.
    #[inline(always)]
    pub fn index(self, v: u64) -> usize {
        index_of(v, self.max_value(), self.precision.into())
    }

    /// The smallest and largest value counted in bucket `i`.
    ///
    /// Panics if `i >= self.buckets()`.
    pub fn bounds(self, i: usize) -> (u64, u64) {
        assert!(
            i < self.buckets(),
            "bucket {i} of {} buckets",
            self.buckets()
        );
        let p = self.precision as u32;
        let sub = 1usize << p;
        if i < 2 * sub {
            return (i as u64, i as u64);
        }
        let s = (i >> p) as u32 - 1;
        let lower = ((sub + (i & (sub - 1))) as u64) << s;
        (lower, lower + ((1u64 << s) - 1))
    }
}

/// [`Layout::index`] with the layout's values precomputed, for the writer's
/// hot path.
#[inline(always)]
pub(crate) fn index_of(v: u64, max_value: u64, precision: u32) -> usize {
    let v = v.min(max_value);
    // floor(log2(v)) for v > 0; `| 1` maps 0 to 0 without a branch.
    let h = 63 - (v | 1).leading_zeros();
    let s = h.saturating_sub(precision);
    ((s as usize) << precision) + (v >> s) as usize
}

/// A histogram read from a file (or several, merged): bucket counts and sum.
///
/// The count is the sum of the buckets, so it always agrees with them.
///
/// Only the buckets that are not empty are stored (a timer has 2,368
/// buckets, of which a few dozen are usually used), and they are shared
/// between clones: cloning, merging and taking windows cost what the used
/// buckets cost, not what the layout has.
#[derive(Clone)]
pub struct HistogramSnapshot {
    layout: Layout,
    sum: u64,
    /// `(bucket, count)` of every non-empty bucket, by bucket.
    used: Arc<Vec<(u32, u64)>>,
    /// Every bucket, made when [`counts`](HistogramSnapshot::counts) is
    /// first asked for.
    dense: OnceLock<Box<[u64]>>,
}

impl PartialEq for HistogramSnapshot {
    fn eq(&self, other: &HistogramSnapshot) -> bool {
        self.layout == other.layout && self.sum == other.sum && self.used == other.used
    }
}

impl Eq for HistogramSnapshot {}

impl fmt::Debug for HistogramSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HistogramSnapshot")
            .field("layout", &self.layout)
            .field("sum", &self.sum)
            .field("used_buckets", &self.used)
            .finish()
    }
}

/// Why two histogram snapshots cannot be combined.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CombineError {
    /// The snapshots have different bucket layouts.
    LayoutMismatch {
        /// Layout of the left-hand snapshot.
        left: Layout,
        /// Layout of the right-hand snapshot.
        right: Layout,
    },
    /// A bucket of the later snapshot is lower than in the earlier one, so
    /// they are not two readings of one file in time order.
    NotLater {
        /// The bucket that went down.
        bucket: usize,
    },
}

impl fmt::Display for CombineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CombineError::LayoutMismatch { left, right } => write!(
                f,
                "histogram layouts differ: precision {} max_bits {} vs precision {} max_bits {}",
                left.precision, left.max_bits, right.precision, right.max_bits
            ),
            CombineError::NotLater { bucket } => write!(
                f,
                "bucket {bucket} went down: the snapshots are not earlier and later readings of the same files"
            ),
        }
    }
}

impl std::error::Error for CombineError {}

impl HistogramSnapshot {
    fn from_used(layout: Layout, sum: u64, used: Vec<(u32, u64)>) -> HistogramSnapshot {
        HistogramSnapshot {
            layout,
            sum,
            used: Arc::new(used),
            dense: OnceLock::new(),
        }
    }

    /// An empty snapshot with `layout`.
    pub fn new(layout: Layout) -> HistogramSnapshot {
        HistogramSnapshot::from_used(layout, 0, Vec::new())
    }

    /// A snapshot from bucket counts (one per bucket of `layout`) and a sum.
    /// Returns `None` if the number of counts is wrong.
    pub fn from_parts(layout: Layout, sum: u64, counts: Vec<u64>) -> Option<HistogramSnapshot> {
        (counts.len() == layout.buckets()).then(|| {
            let used = counts
                .iter()
                .enumerate()
                .filter(|(_, &c)| c > 0)
                .map(|(i, &c)| (i as u32, c))
                .collect();
            HistogramSnapshot::from_used(layout, sum, used)
        })
    }

    /// A snapshot from `(bucket, count)` pairs in bucket order, for the
    /// reader, which finds them in that order.
    pub fn from_sorted_used(layout: Layout, sum: u64, used: Vec<(u32, u64)>) -> HistogramSnapshot {
        debug_assert!(used.windows(2).all(|w| w[0].0 < w[1].0));
        debug_assert!(used
            .iter()
            .all(|&(i, c)| c > 0 && (i as usize) < layout.buckets()));
        HistogramSnapshot::from_used(layout, sum, used)
    }

    /// Counts one value, as a writer would. For tests and tools that build
    /// snapshots in memory.
    pub fn record(&mut self, v: u64) {
        let i = self.layout.index(v) as u32;
        let used = Arc::make_mut(&mut self.used);
        match used.binary_search_by_key(&i, |&(b, _)| b) {
            Ok(k) => used[k].1 = used[k].1.saturating_add(1),
            Err(k) => used.insert(k, (i, 1)),
        }
        self.dense = OnceLock::new();
        self.sum = self.sum.wrapping_add(v);
    }

    /// The bucket layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Number of values: the sum of the bucket counts (saturating, should
    /// a damaged file hold absurd counts).
    pub fn count(&self) -> u64 {
        self.used
            .iter()
            .fold(0u64, |a, &(_, c)| a.saturating_add(c))
    }

    /// Exact sum of the values (wrapping at 2^64).
    pub fn sum(&self) -> u64 {
        self.sum
    }

    /// The count of every bucket, indexed as [`Layout::index`]. Made on
    /// first use (snapshots store only the buckets in use).
    pub fn counts(&self) -> &[u64] {
        self.dense.get_or_init(|| {
            let mut d = vec![0; self.layout.buckets()].into_boxed_slice();
            for &(i, c) in self.used.iter() {
                d[i as usize] = c;
            }
            d
        })
    }

    /// Mean value, `None` when empty.
    pub fn mean(&self) -> Option<f64> {
        let n = self.count();
        (n > 0).then(|| self.sum as f64 / n as f64)
    }

    /// Lower bound of the smallest value, `None` when empty.
    pub fn min(&self) -> Option<u64> {
        let &(i, _) = self.used.first()?;
        Some(self.layout.bounds(i as usize).0)
    }

    /// Upper bound of the largest value, `None` when empty.
    pub fn max(&self) -> Option<u64> {
        let &(i, _) = self.used.last()?;
        Some(self.layout.bounds(i as usize).1)
    }

    /// The `q` quantile (`0.0..=1.0`): the midpoint of the bucket holding the
    /// value of rank `ceil(q * count)`. Within half a bucket, so within
    /// `relative_error() / 2` of the exact quantile. `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let q = if q.is_nan() { 0.0 } else { q.clamp(0.0, 1.0) };
        let rank = ((q * n as f64).ceil() as u64).clamp(1, n);
        let mut seen = 0u64;
        for &(i, c) in self.used.iter() {
            seen = seen.saturating_add(c);
            if seen >= rank {
                let (lo, hi) = self.layout.bounds(i as usize);
                return Some(lo + (hi - lo) / 2);
            }
        }
        None
    }

    /// Non-empty buckets as `(lower, upper, count)`.
    pub fn buckets(&self) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
        self.used.iter().map(|&(i, c)| {
            let (lo, hi) = self.layout.bounds(i as usize);
            (lo, hi, c)
        })
    }

    /// Adds `other`'s buckets and sum into this one: the distribution of
    /// both sets of values together.
    pub fn merge(&mut self, other: &HistogramSnapshot) -> Result<(), CombineError> {
        if self.layout != other.layout {
            return Err(CombineError::LayoutMismatch {
                left: self.layout,
                right: other.layout,
            });
        }
        if !other.used.is_empty() {
            let merged = join(&self.used, &other.used, |a, b| Some(a.saturating_add(b)))
                .expect("adding never fails");
            self.used = Arc::new(merged);
            self.dense = OnceLock::new();
        }
        self.sum = self.sum.wrapping_add(other.sum);
        Ok(())
    }

    /// Whether the two share their buckets (one is a clone of the other
    /// and neither one's buckets changed since), so their counts are equal.
    pub(crate) fn shares_counts(&self, other: &HistogramSnapshot) -> bool {
        Arc::ptr_eq(&self.used, &other.used)
    }

    /// Adds `now.since(then)` into this one: the same result as
    /// `self.merge(&now.since(then)?)`, and on error this one is unchanged.
    pub fn merge_since(
        &mut self,
        now: &HistogramSnapshot,
        then: &HistogramSnapshot,
    ) -> Result<(), CombineError> {
        if now.shares_counts(then) && now.layout == then.layout && self.layout == now.layout {
            self.sum = self.sum.wrapping_add(now.sum.wrapping_sub(then.sum));
            return Ok(());
        }
        let window = now.since(then)?;
        self.merge(&window)
    }

    /// The distribution of just the values recorded between `earlier` and
    /// this snapshot of the same files.
    pub fn since(&self, earlier: &HistogramSnapshot) -> Result<HistogramSnapshot, CombineError> {
        if self.layout != earlier.layout {
            return Err(CombineError::LayoutMismatch {
                left: self.layout,
                right: earlier.layout,
            });
        }
        let used = if self.shares_counts(earlier) {
            Vec::new()
        } else {
            // A bucket of `earlier` that `self` lacks reads as 0 - c below.
            join(&self.used, &earlier.used, |now, then| now.checked_sub(then)).map_err(
                |bucket| CombineError::NotLater {
                    bucket: bucket as usize,
                },
            )?
        };
        Ok(HistogramSnapshot::from_used(
            self.layout,
            self.sum.wrapping_sub(earlier.sum),
            used,
        ))
    }
}

/// Combines two sparse bucket lists bucket by bucket with `f(a, b)` (a
/// bucket missing from one list counts 0 there), dropping zero results;
/// `Err(bucket)` at the first bucket where `f` gives `None`.
fn join(
    a: &[(u32, u64)],
    b: &[(u32, u64)],
    f: impl Fn(u64, u64) -> Option<u64>,
) -> Result<Vec<(u32, u64)>, u32> {
    let mut out = Vec::with_capacity(a.len().max(b.len()));
    let (mut i, mut j) = (0, 0);
    loop {
        let (bucket, x, y) = match (a.get(i), b.get(j)) {
            (None, None) => return Ok(out),
            (Some(&(ia, ca)), Some(&(ib, cb))) if ia == ib => {
                i += 1;
                j += 1;
                (ia, ca, cb)
            }
            (Some(&(ia, ca)), Some(&(ib, _))) if ia < ib => {
                i += 1;
                (ia, ca, 0)
            }
            (Some(&(ia, ca)), None) => {
                i += 1;
                (ia, ca, 0)
            }
            (_, Some(&(ib, cb))) => {
                j += 1;
                (ib, 0, cb)
            }
        };
        let c = f(x, y).ok_or(bucket)?;
        if c > 0 {
            out.push((bucket, c));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_lies_in_its_bucket() {
        for layout in [
            Layout::new(1, 8).unwrap(),
            Layout::new(3, 20).unwrap(),
            Layout::timer(),
            Layout::histogram(),
        ] {
            let mut probes = vec![0u64, 1, 2, 3, u64::MAX, layout.max_value()];
            for h in 0..64 {
                let b = 1u64 << h;
                probes.extend([b - 1, b, b + 1, b + b / 3]);
            }
            for v in probes {
                let i = layout.index(v);
                assert!(i < layout.buckets(), "{layout:?} {v} -> {i}");
                let (lo, hi) = layout.bounds(i);
                let clamped = v.min(layout.max_value());
                assert!(
                    lo <= clamped && clamped <= hi,
                    "{layout:?} {v} -> {i} [{lo},{hi}]"
                );
            }
        }
    }

    #[test]
    fn buckets_tile_the_range_without_gaps() {
        let layout = Layout::new(3, 16).unwrap();
        let mut next = 0u64;
        for i in 0..layout.buckets() {
            let (lo, hi) = layout.bounds(i);
            assert_eq!(lo, next, "bucket {i}");
            assert!(hi >= lo);
            assert_eq!(layout.index(lo), i);
            assert_eq!(layout.index(hi), i);
            next = hi + 1;
        }
        assert_eq!(next, 1 << 16);
    }

    #[test]
    fn relative_width_is_bounded() {
        let layout = Layout::timer();
        for i in 0..layout.buckets() {
            let (lo, hi) = layout.bounds(i);
            let width = (hi - lo + 1) as f64;
            assert!(
                lo == hi || width / lo as f64 <= layout.relative_error(),
                "bucket {i}"
            );
        }
    }

    #[test]
    fn worked_examples_from_the_spec() {
        // p = 6, m = 42: the timer default.
        let l = Layout::timer();
        assert_eq!(l.buckets(), 2368);
        assert_eq!(l.index(100), 100);
        assert_eq!(l.bounds(100), (100, 100));
        assert_eq!(l.index(1_000), 317);
        assert_eq!(l.bounds(317), (1000, 1007));
        assert_eq!(l.index(1_250), 334);
        assert_eq!(l.bounds(334), (1248, 1263));
        assert_eq!(l.index(1_000_000_000), 1591);
        assert_eq!(l.bounds(1591), (998_244_352, 1_006_632_959));
        assert_eq!(l.index(u64::MAX), l.buckets() - 1);
    }

    #[test]
    fn layouts_are_validated() {
        assert!(Layout::new(0, 10).is_err());
        assert!(Layout::new(10, 10).is_err());
        assert!(Layout::new(13, 64).is_err());
        assert!(Layout::new(6, 65).is_err());
        assert!(Layout::from_params(6, 1 << 40).is_err());
        assert_eq!(Layout::from_params(6, 42).unwrap(), Layout::timer());
    }

    #[test]
    fn quantiles_of_small_exact_values() {
        let mut h = HistogramSnapshot::new(Layout::timer());
        assert_eq!(h.quantile(0.5), None);
        assert_eq!(h.mean(), None);
        for v in 1..=100 {
            h.record(v);
        }
        assert_eq!(h.count(), 100);
        assert_eq!(h.sum(), 5050);
        assert_eq!(h.quantile(0.5), Some(50));
        assert_eq!(h.quantile(0.99), Some(99));
        assert_eq!(h.quantile(1.0), Some(100));
        assert_eq!(h.quantile(0.0), Some(1));
        assert_eq!(h.min(), Some(1));
        assert_eq!(h.max(), Some(100));
        assert_eq!(h.mean(), Some(50.5));
    }

    #[test]
    fn absurd_counts_saturate_instead_of_overflowing() {
        let l = Layout::new(1, 4).unwrap();
        let mut counts = vec![0; l.buckets()];
        counts[1] = u64::MAX;
        counts[2] = 2;
        let h = HistogramSnapshot::from_parts(l, 0, counts).unwrap();
        assert_eq!(h.count(), u64::MAX);
        // Saturated: every rank lands in the huge bucket, and nothing panics.
        assert_eq!(h.quantile(1.0), Some(1));
    }

    #[test]
    fn merge_and_since() {
        let l = Layout::new(4, 32).unwrap();
        let mut a = HistogramSnapshot::new(l);
        let mut b = HistogramSnapshot::new(l);
        a.record(5);
        b.record(500);
        let early = a.clone();
        a.record(7);
        let window = a.since(&early).unwrap();
        assert_eq!(window.count(), 1);
        assert_eq!(window.sum(), 7);
        a.merge(&b).unwrap();
        assert_eq!(a.count(), 3);
        assert_eq!(a.sum(), 512);
        assert_eq!(early.since(&a), Err(CombineError::NotLater { bucket: 7 }));
        let other = HistogramSnapshot::new(Layout::timer());
        assert!(matches!(
            a.merge(&other),
            Err(CombineError::LayoutMismatch { .. })
        ));
    }

    /// The sparse buckets give what dense arithmetic gives, bucket by
    /// bucket, and a window reports the first bucket that went down.
    #[test]
    fn sparse_merge_and_since_match_dense_arithmetic() {
        let l = Layout::new(3, 12).unwrap();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..200 {
            let mut a = HistogramSnapshot::new(l);
            let mut b = HistogramSnapshot::new(l);
            for _ in 0..next() % 20 {
                a.record(next() % 5000);
            }
            let early = a.clone();
            for _ in 0..next() % 20 {
                a.record(next() % 5000);
                b.record(next() % 5000);
            }
            let dense = |h: &HistogramSnapshot| h.counts().to_vec();
            let w = a.since(&early).unwrap();
            let want: Vec<u64> = dense(&a)
                .iter()
                .zip(dense(&early))
                .map(|(n, t)| n - t)
                .collect();
            assert_eq!(dense(&w), want);
            assert_eq!(w.count(), a.count() - early.count());
            let mut m = b.clone();
            m.merge(&w).unwrap();
            let want: Vec<u64> = dense(&b).iter().zip(&want).map(|(x, y)| x + y).collect();
            assert_eq!(dense(&m), want);
            let mut fused = b.clone();
            fused.merge_since(&a, &early).unwrap();
            assert_eq!(fused, m);
            if let Some(first) = dense(&early)
                .iter()
                .zip(dense(&b))
                .position(|(e, b)| e > &b)
            {
                assert_eq!(
                    b.since(&early),
                    Err(CombineError::NotLater { bucket: first })
                );
                let before = m.clone();
                assert!(m.merge_since(&b, &early).is_err());
                assert_eq!(m, before, "unchanged on error");
            }
        }
    }
}
