//! The metric handles a stats model is made of.
//!
//! Every update is a few relaxed loads and stores of 8-byte words that only
//! this thread writes: no locked instruction, no syscall, no allocation.

use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::file::Slot;
use crate::format::raw;
use crate::hist::{self, Layout};
use crate::protocol;
use crate::schema::FieldDef;
use crate::sys::thread_cpu_time;
use crate::{Kind, StatField};

macro_rules! debug_without_pointers {
    ($ty:ident $(<$n:ident>)?, $get:ident) => {
        impl$(<const $n: usize>)? fmt::Debug for $ty$(<$n>)? {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_tuple(stringify!($ty)).field(&self.$get()).finish()
            }
        }
    };
}

/// A `u64` that only goes up: requests served, bytes sent.
#[must_use]
pub struct Counter {
    slot: Slot,
}

impl Counter {
    /// Adds one.
    #[inline]
    pub fn incr(&self) {
        self.add(1);
    }

    /// Adds `n` (wrapping at 2^64).
    #[inline]
    pub fn add(&self, n: u64) {
        let w = self.slot.words.first();
        // Relaxed load: this thread is the only writer, so it reads its own
        // last store. Relaxed store: one aligned word, atomic on its own;
        // readers need no other value to be ordered with it.
        w.store(w.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        // Relaxed: reads this thread's own last store.
        self.slot.words.first().load(Ordering::Relaxed)
    }
}

debug_without_pointers!(Counter, get);

impl crate::sealed::Sealed for Counter {}

impl StatField for Counter {
    fn def(label: &str) -> FieldDef {
        FieldDef::counter(label)
    }

    fn bind(slot: Slot) -> Self {
        assert_eq!(slot.kind, Kind::Counter);
        Counter { slot }
    }
}

/// An `i64` that goes up and down: requests in flight, queue length.
#[must_use]
pub struct Gauge {
    slot: Slot,
}

impl Gauge {
    /// Sets the value.
    #[inline]
    pub fn set(&self, v: i64) {
        // Relaxed: one aligned word, atomic on its own; single writer.
        self.slot.words.first().store(v as u64, Ordering::Relaxed);
    }

    /// Adds `n` (may be negative; wraps).
    #[inline]
    pub fn add(&self, n: i64) {
        let w = self.slot.words.first();
        // Relaxed: single writer reads its own store; see `Counter::add`.
        let v = w.load(Ordering::Relaxed) as i64;
        w.store(v.wrapping_add(n) as u64, Ordering::Relaxed);
    }

    /// Adds one.
    #[inline]
    pub fn incr(&self) {
        self.add(1);
    }

    /// Subtracts one.
    #[inline]
    pub fn decr(&self) {
        self.add(-1);
    }

    /// The current value.
    pub fn get(&self) -> i64 {
        // Relaxed: reads this thread's own last store.
        self.slot.words.first().load(Ordering::Relaxed) as i64
    }
}

debug_without_pointers!(Gauge, get);

impl crate::sealed::Sealed for Gauge {}

impl StatField for Gauge {
    fn def(label: &str) -> FieldDef {
        FieldDef::gauge(label)
    }

    fn bind(slot: Slot) -> Self {
        assert_eq!(slot.kind, Kind::Gauge);
        Gauge { slot }
    }
}

/// An `f64` gauge: load average, ratio, temperature.
#[must_use]
pub struct GaugeF64 {
    slot: Slot,
}

impl GaugeF64 {
    /// Sets the value.
    #[inline]
    pub fn set(&self, v: f64) {
        // Relaxed: the f64's bits are one aligned word, so a reader sees the
        // old or the new value, never a mix.
        self.slot
            .words
            .first()
            .store(v.to_bits(), Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> f64 {
        // Relaxed: reads this thread's own last store.
        f64::from_bits(self.slot.words.first().load(Ordering::Relaxed))
    }
}

debug_without_pointers!(GaugeF64, get);

impl crate::sealed::Sealed for GaugeF64 {}

impl StatField for GaugeF64 {
    fn def(label: &str) -> FieldDef {
        FieldDef::gauge_f64(label)
    }

    fn bind(slot: Slot) -> Self {
        assert_eq!(slot.kind, Kind::GaugeF64);
        GaugeF64 { slot }
    }
}

/// Stores `s` (cut to `capacity` bytes on a character boundary) into a text
/// value: into the buffer readers are not reading, under the sequence word
/// (the protocol is [`protocol::text_store`]). Returns the stored length.
#[inline]
fn store_text(slot: &Slot, s: &str) -> usize {
    let capacity = slot.capacity();
    let s = truncate_utf8(s, capacity);
    protocol::text_store(|i| slot.words.at(i), capacity, s.as_bytes());
    s.len()
}

/// Reads back the last text this thread wrote (no concurrency to handle).
fn load_text(slot: &Slot) -> String {
    let capacity = slot.capacity();
    let words = &slot.words;
    // Relaxed: this thread's own stores.
    let written = words.at(raw::TEXT_SEQ / 8).load(Ordering::Relaxed) / 2;
    let buffer = raw::text_buffer(capacity, written as usize % 2) / 8;
    let len = (words
        .at(buffer + raw::TEXT_BUF_LEN / 8)
        .load(Ordering::Relaxed) as usize)
        .min(capacity);
    let mut bytes = Vec::with_capacity(raw::align8(len));
    for i in 0..raw::align8(len) / 8 {
        let w = words
            .at(buffer + raw::TEXT_BUF_BYTES / 8 + i)
            .load(Ordering::Relaxed);
        bytes.extend_from_slice(&w.to_le_bytes());
    }
    bytes.truncate(len);
    String::from_utf8(bytes).unwrap_or_default()
}

/// The longest prefix of `s` of at most `max` bytes that ends on a
/// character boundary.
pub(crate) fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// UTF-8 text of at most `N` bytes: what a thread is doing, the last error.
///
/// Longer strings are cut on a character boundary. Readers never see a
/// half-written string: each update goes to the buffer readers are not
/// reading, under a sequence word that tells them which buffer is stable.
#[must_use]
pub struct Text<const N: usize> {
    slot: Slot,
}

impl<const N: usize> Text<N> {
    /// Sets the text, cut to `N` bytes. Returns how many bytes were stored.
    #[inline]
    pub fn set(&self, s: &str) -> usize {
        store_text(&self.slot, s)
    }

    /// The current text (allocates; for tests and debugging).
    pub fn get(&self) -> String {
        load_text(&self.slot)
    }
}

debug_without_pointers!(Text<N>, get);

impl<const N: usize> crate::sealed::Sealed for Text<N> {}

impl<const N: usize> StatField for Text<N> {
    fn def(label: &str) -> FieldDef {
        FieldDef::text(label, N)
    }

    fn bind(slot: Slot) -> Self {
        assert_eq!(slot.kind, Kind::Text);
        Text { slot }
    }
}

/// Text written once, such as the application's version. Up to `N` bytes.
#[must_use]
pub struct Constant<const N: usize = 64> {
    slot: Slot,
}

impl<const N: usize> Constant<N> {
    /// Sets the value if it was never set. Returns `false` (and changes
    /// nothing) if it was.
    pub fn set(&self, s: &str) -> bool {
        // Relaxed: this thread is the only writer of the sequence word.
        if self
            .slot
            .words
            .at(raw::TEXT_SEQ / 8)
            .load(Ordering::Relaxed)
            != 0
        {
            return false;
        }
        store_text(&self.slot, s);
        true
    }

    /// The value, empty if never set.
    pub fn get(&self) -> String {
        load_text(&self.slot)
    }
}

debug_without_pointers!(Constant<N>, get);

impl<const N: usize> crate::sealed::Sealed for Constant<N> {}

impl<const N: usize> StatField for Constant<N> {
    fn def(label: &str) -> FieldDef {
        FieldDef::constant(label, N)
    }

    fn bind(slot: Slot) -> Self {
        assert_eq!(slot.kind, Kind::Constant);
        Constant { slot }
    }
}

/// A log-linear histogram of `u64` values: sizes, counts, latencies in your
/// own unit. Readers compute quantiles, merge files and subtract snapshots.
#[must_use]
pub struct Histogram {
    slot: Slot,
    layout: Layout,
    /// `layout.max_value()` and `layout.precision()`, kept ready for `record`.
    max_value: u64,
    precision: u32,
}

impl Histogram {
    /// Counts one value.
    #[inline]
    pub fn record(&self, v: u64) {
        let words = &self.slot.words;
        let i = hist::index_of(v, self.max_value, self.precision);
        protocol::histogram_record(words.first(), words.at(raw::HIST_BUCKETS / 8 + i), v);
    }

    /// The bucket layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The number of values recorded (sums the buckets; not for hot paths).
    pub fn count(&self) -> u64 {
        let words = &self.slot.words;
        // Relaxed: this thread's own stores.
        (raw::HIST_BUCKETS / 8..words.len())
            .map(|i| words.at(i).load(Ordering::Relaxed))
            .fold(0u64, u64::saturating_add)
    }

    /// The exact sum of the values recorded (wrapping).
    pub fn sum(&self) -> u64 {
        // Relaxed: this thread's own stores.
        self.slot.words.first().load(Ordering::Relaxed)
    }

    fn bind_kind(slot: Slot, kind: Kind) -> Histogram {
        assert_eq!(slot.kind, kind);
        let layout = slot.layout();
        Histogram {
            slot,
            layout,
            max_value: layout.max_value(),
            precision: layout.precision().into(),
        }
    }
}

impl fmt::Debug for Histogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Histogram")
            .field("count", &self.count())
            .field("sum", &self.sum())
            .field("layout", &self.layout)
            .finish()
    }
}

impl crate::sealed::Sealed for Histogram {}

impl StatField for Histogram {
    fn def(label: &str) -> FieldDef {
        FieldDef::histogram(label, Layout::histogram())
    }

    fn bind(slot: Slot) -> Self {
        Histogram::bind_kind(slot, Kind::Histogram)
    }
}

/// A histogram of durations, in nanoseconds: how long things take.
#[must_use]
pub struct Timer {
    hist: Histogram,
}

impl Timer {
    /// Records a duration (saturating at `u64::MAX` nanoseconds).
    #[inline]
    pub fn record(&self, d: Duration) {
        // 64-bit arithmetic: `as_nanos` would go through u128.
        let ns = d
            .as_secs()
            .saturating_mul(1_000_000_000)
            .saturating_add(d.subsec_nanos().into());
        self.hist.record(ns);
    }

    /// Records a duration given in nanoseconds.
    #[inline]
    pub fn record_ns(&self, ns: u64) {
        self.hist.record(ns);
    }

    /// Runs `f`, records how long it took, and returns its value.
    #[inline]
    pub fn time<R>(&self, f: impl FnOnce() -> R) -> R {
        let start = Instant::now();
        let out = f();
        self.record(start.elapsed());
        out
    }

    /// Starts timing; the duration is recorded when the guard is dropped.
    ///
    /// The guard borrows this timer, so it stays on this thread. For a
    /// guard that may cross `.await` points and threads, use
    /// [`PerThread::start`](crate::PerThread::start).
    #[inline]
    pub fn start(&self) -> TimerGuard<'_> {
        TimerGuard {
            timer: self,
            start: Instant::now(),
        }
    }

    /// Starts timing the calling thread's CPU time (user and system, from
    /// `CLOCK_THREAD_CPUTIME_ID`); it is recorded when the guard is dropped.
    ///
    /// Opt-in, and never on the default path: each end reads the thread's
    /// CPU clock, which the vDSO may not serve, so it can be a system call
    /// (see [`thread_cpu_time`](crate::thread_cpu_time) and the README for
    /// the measured cost). The guard is not `Send`: the CPU clock is the
    /// thread's own. For a future's CPU time summed over polls on any
    /// thread, see [`Instrumented::cpu`](crate::Instrumented::cpu).
    #[inline]
    pub fn start_cpu(&self) -> CpuTimerGuard<'_> {
        CpuTimerGuard {
            timer: self,
            start: thread_cpu_time(),
            _not_send: PhantomData,
        }
    }

    /// The underlying histogram of nanoseconds.
    pub fn histogram(&self) -> &Histogram {
        &self.hist
    }
}

impl fmt::Debug for Timer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timer")
            .field("count", &self.hist.count())
            .field("sum_ns", &self.hist.sum())
            .finish()
    }
}

impl crate::sealed::Sealed for Timer {}

impl StatField for Timer {
    fn def(label: &str) -> FieldDef {
        FieldDef::timer(label, Layout::timer())
    }

    fn bind(slot: Slot) -> Self {
        Timer {
            hist: Histogram::bind_kind(slot, Kind::Timer),
        }
    }
}

/// Records the time since [`Timer::start`] when dropped.
#[must_use = "the time is recorded when the guard is dropped"]
pub struct TimerGuard<'a> {
    timer: &'a Timer,
    start: Instant,
}

impl TimerGuard<'_> {
    /// Time elapsed so far.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }
}

impl Drop for TimerGuard<'_> {
    fn drop(&mut self) {
        self.timer.record(self.start.elapsed());
    }
}

impl fmt::Debug for TimerGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimerGuard")
            .field("elapsed", &self.elapsed())
            .finish()
    }
}

/// Records the calling thread's CPU time since [`Timer::start_cpu`] when
/// dropped.
#[must_use = "the time is recorded when the guard is dropped"]
pub struct CpuTimerGuard<'a> {
    timer: &'a Timer,
    start: Duration,
    /// The CPU clock read at the start is this thread's: never move the
    /// guard to another one.
    _not_send: PhantomData<*const ()>,
}

impl CpuTimerGuard<'_> {
    /// CPU time this thread has used since the guard was made.
    pub fn elapsed(&self) -> Duration {
        thread_cpu_time().saturating_sub(self.start)
    }
}

impl Drop for CpuTimerGuard<'_> {
    fn drop(&mut self) {
        self.timer.record(self.elapsed());
    }
}

impl fmt::Debug for CpuTimerGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CpuTimerGuard")
            .field("elapsed", &self.elapsed())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_characters_whole() {
        assert_eq!(truncate_utf8("hello", 10), "hello");
        assert_eq!(truncate_utf8("hello", 3), "hel");
        // 'é' is two bytes: cutting at 2 would split it.
        assert_eq!(truncate_utf8("aé", 2), "a");
        assert_eq!(truncate_utf8("日本", 5), "日");
        assert_eq!(truncate_utf8("日本", 0), "");
    }
}
