//! The memory-ordering protocols of format-spec.md §6 and §7.3 (and the
//! SIGBUS handler's claim on a truncated writer range, §6.9), written
//! once and generic over the memory they run on.
//!
//! The writer's handles and the reader call these functions on the real
//! memory (std atomics in a mapping, through [`Word`] and [`Load`]); built
//! with `--cfg loom`, the models at the end of this file run the very same
//! functions on `loom`'s atomics, which explore every interleaving and every
//! value the C++/Rust memory model lets a Relaxed load return. That is what
//! x86 hides: there every load acquires and every store releases, so a
//! missing Release passes any hammer test there.
//!
//! ```text
//! RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
//!     cargo test -p mmstats --lib --release protocol::
//! ```
//!
//! The models also show that each ordering is needed: with it weakened to
//! Relaxed, or its fence dropped, the model must fail (`mutants_fail`). In a
//! normal build those switches are constant `false` and cost nothing.
//!
//! Everything here is `#[inline]` and monomorphic in a normal build: the
//! hot path compiles to the same loads and stores as if written in place.

use std::sync::atomic::Ordering;

use crate::format::raw;

/// Whether the ordering named `$name` is weakened, which only a loom model
/// asks for (see `mutants_fail` in the models), to show that it needs it. In a
/// normal build, `false`.
#[cfg(not(loom))]
macro_rules! mutated {
    ($name:literal) => {
        false
    };
}

#[cfg(loom)]
macro_rules! mutated {
    ($name:literal) => {
        MUTANT.with(|m| m.get() == Some($name))
    };
}

// The ordering weakened for this thread's loom models (loom runs a model's
// threads on the thread that calls it).
#[cfg(loom)]
thread_local! {
    static MUTANT: std::cell::Cell<Option<&'static str>> = const { std::cell::Cell::new(None) };
}

/// `$order`, or Relaxed when the model weakens `$name`.
macro_rules! relaxed_if {
    ($name:literal, $order:expr) => {
        if mutated!($name) {
            Ordering::Relaxed
        } else {
            $order
        }
    };
}

/// Runs `$fence`, unless the model drops `$name`.
macro_rules! fence_unless {
    ($name:literal, $fence:expr) => {
        if !mutated!($name) {
            $fence;
        }
    };
}

/// One 8-byte word of shared memory as its single writer sees it.
pub trait Word {
    /// A Relaxed load: the writer reads back its own last store.
    fn load_relaxed(&self) -> u64;
    /// A store with ordering `order`.
    fn store(&self, v: u64, order: Ordering);
    /// A Release fence of the memory model these words live in.
    fn fence_release();
}

impl Word for std::sync::atomic::AtomicU64 {
    #[inline(always)]
    fn load_relaxed(&self) -> u64 {
        // Relaxed: callers only read back their own thread's stores.
        self.load(Ordering::Relaxed)
    }

    #[inline(always)]
    fn store(&self, v: u64, order: Ordering) {
        std::sync::atomic::AtomicU64::store(self, v, order);
    }

    #[inline(always)]
    fn fence_release() {
        std::sync::atomic::fence(Ordering::Release);
    }
}

/// Shared memory as a reader sees it: Relaxed loads of words at byte
/// offsets, and Acquire fences to order them (a reader's mapping is
/// read-only, where only Relaxed loads are defined; format-spec.md §6.1).
pub trait Load {
    /// A Relaxed load of the word at byte offset `off`.
    fn load(&self, off: usize) -> u64;
    /// An Acquire fence of the memory model this memory lives in.
    fn fence_acquire(&self);
}

/// "Acquire-load" of format-spec.md §6.1: a Relaxed load, then an Acquire
/// fence, so that the load synchronises with the Release store it read.
#[inline]
pub fn acquire_load<M: Load>(mem: &M, off: usize) -> u64 {
    let v = mem.load(off);
    fence_unless!("acquire_load_no_fence", mem.fence_acquire());
    v
}

// ------------------------------------------------------ appended fields --

/// §6.5 step 4: publishes `count` field records, whose words and strings
/// the writer stored (Relaxed) before calling this.
#[inline]
pub(crate) fn publish_field_count<W: Word>(count_word: &W, count: u64) {
    // Release: a reader that Acquire-loads the new count sees the record and
    // strings stored before it.
    count_word.store(count, relaxed_if!("field_count_relaxed", Ordering::Release));
}

// ------------------------------------------------------------ histogram --

/// §6.4: counts `v` in `bucket` and adds it to `sum`.
#[inline]
pub(crate) fn histogram_record<W: Word>(sum: &W, bucket: &W, v: u64) {
    // Relaxed: single writer; a bucket is one word on its own.
    bucket.store(bucket.load_relaxed().wrapping_add(1), Ordering::Relaxed);
    // Release on the sum: a reader that acquires the sum first sees at
    // least the bucket counts of every value the sum includes, so the mean
    // it computes is never inflated. Free on x86.
    sum.store(
        sum.load_relaxed().wrapping_add(v),
        relaxed_if!("hist_sum_relaxed", Ordering::Release),
    );
}

/// §7.3: reads the histogram value at byte offset `off` with `buckets`
/// buckets: its sum, then counts that include every value in that sum, as
/// `(bucket, count)` for the buckets that are not empty, in bucket order.
#[inline]
pub fn histogram_read<M: Load>(mem: &M, off: usize, buckets: usize) -> (u64, Vec<(u32, u64)>) {
    let sum = mem.load(off + raw::HIST_SUM);
    // Acquire fence after the sum: pairs with the writer's Release store of
    // it, so the buckets read next include every value in this sum.
    fence_unless!("hist_no_fence", mem.fence_acquire());
    let mut used = Vec::new();
    for i in 0..buckets {
        // Relaxed (in `load`): ordered after the sum by the fence.
        let c = mem.load(off + raw::HIST_BUCKETS + 8 * i);
        if c != 0 {
            used.push((i as u32, c));
        }
    }
    (sum, used)
}

// ----------------------------------------------------------------- text --

/// §6.3: stores `s` (at most `capacity` bytes) into the text value whose
/// word `i` is `word(i)`: into the buffer readers are not reading, under the
/// sequence word.
#[inline]
pub(crate) fn text_store<'a, W: Word + 'a>(
    word: impl Fn(usize) -> &'a W,
    capacity: usize,
    s: &[u8],
) {
    debug_assert!(s.len() <= capacity);
    let seq = word(raw::TEXT_SEQ / 8);
    let start = seq.load_relaxed();
    // This is write `w + 1` where `start == 2w`; it goes to buffer (w+1) % 2.
    let buffer = raw::text_buffer(capacity, (start / 2 + 1) as usize % 2) / 8;
    // Odd: write w + 1 is under way. Release, because a reader that sees
    // this value goes on to copy write w from the other buffer, so write w
    // must be visible to it (a relaxed store here would not carry that).
    seq.store(
        start.wrapping_add(1),
        relaxed_if!("text_begin_relaxed", Ordering::Release),
    );
    // Release fence: a reader that sees any of the data stores below also
    // sees this sequence number (or a later one), so it can tell that the
    // buffer it read was being overwritten.
    fence_unless!("text_no_release_fence", W::fence_release());
    // Relaxed: the data words are ordered by the fence and the final store.
    word(buffer + raw::TEXT_BUF_LEN / 8).store(s.len() as u64, Ordering::Relaxed);
    for (i, chunk) in s.chunks(8).enumerate() {
        let mut b = [0u8; 8];
        b[..chunk.len()].copy_from_slice(chunk);
        // Relaxed: as the length word above.
        word(buffer + raw::TEXT_BUF_BYTES / 8 + i).store(u64::from_le_bytes(b), Ordering::Relaxed);
    }
    // Release: a reader that sees this even number (and fences) sees all
    // the data of this write.
    seq.store(
        start.wrapping_add(2),
        relaxed_if!("text_end_relaxed", Ordering::Release),
    );
}

/// §7.3: reads the text value of `capacity` bytes at byte offset `off`: the
/// buffer of the last complete write, checked afterwards against the
/// sequence word. Makes at most `attempts` attempts, calling `backoff(n)`
/// after failed attempt `n`.
#[inline]
pub fn text_read<M: Load>(
    mem: &M,
    off: usize,
    capacity: usize,
    attempts: usize,
    mut backoff: impl FnMut(usize),
) -> Result<String, String> {
    let mut bytes = Vec::with_capacity(raw::align8(capacity));
    for attempt in 0..attempts {
        let s1 = mem.load(off + raw::TEXT_SEQ);
        // Acquire fence: pairs with the writer's Release store that
        // completed write `w`, so its buffer's data is visible below.
        fence_unless!("text_no_first_fence", mem.fence_acquire());
        // Writes up to `w` are complete (write w + 1 may be under way in
        // the other buffer, whether `s1` is even or odd).
        let w = s1 / 2;
        let buffer = off + raw::text_buffer(capacity, (w % 2) as usize);
        // Relaxed (every load here): checked as a whole by the sequence
        // re-read below.
        let len = mem.load(buffer + raw::TEXT_BUF_LEN);
        let n = (len as usize).min(capacity);
        bytes.clear();
        for o in (0..raw::align8(n)).step_by(8) {
            let word = mem.load(buffer + raw::TEXT_BUF_BYTES + o);
            bytes.extend_from_slice(&word.to_le_bytes());
        }
        // Acquire fence: the loads above happen before the re-read of the
        // sequence word, so a write into this buffer that overlapped them
        // shows up in it.
        fence_unless!("text_no_second_fence", mem.fence_acquire());
        let s2 = mem.load(off + raw::TEXT_SEQ);
        if !buffer_was_stable(s1, s2) {
            backoff(attempt);
            continue;
        }
        if len as usize > capacity {
            return Err(format!("length {len} is over the capacity {capacity}"));
        }
        bytes.truncate(n);
        return String::from_utf8(bytes).map_err(|e| format!("invalid UTF-8: {e}"));
    }
    Err(format!("still being rewritten after {attempts} attempts"))
}

/// Whether a text buffer read between sequence readings `s1` and `s2` held
/// one write throughout. The buffer holds write `w = s1 / 2`; write `w + 2`,
/// the next into the same buffer, starts by making the sequence `2w + 3`.
pub fn buffer_was_stable(s1: u64, s2: u64) -> bool {
    s1 <= s2 && s2 < (s1 | 1).saturating_add(2)
}

// ------------------------------------------------ a writer's dark range --

/// A writer range backed by its file (format-spec.md §6.9).
pub const HEALTHY: u32 = 0;
/// The SIGBUS handler of one thread is putting private memory over it.
pub const DARKENING: u32 = 1;
/// Private memory is over it: its file was truncated.
pub const DARK: u32 = 2;

/// The state word of a writer range, as the SIGBUS handler uses it.
pub(crate) trait State {
    /// A compare-and-exchange with Acquire ordering on success and failure.
    fn claim(&self, current: u32, new: u32) -> Result<u32, u32>;
    /// A load with ordering `order`.
    fn load(&self, order: Ordering) -> u32;
    /// A store with ordering `order`.
    fn store(&self, v: u32, order: Ordering);
}

impl State for std::sync::atomic::AtomicU32 {
    #[inline]
    fn claim(&self, current: u32, new: u32) -> Result<u32, u32> {
        // Acquire (both): see `darken`.
        self.compare_exchange(current, new, Ordering::Acquire, Ordering::Acquire)
    }

    #[inline]
    fn load(&self, order: Ordering) -> u32 {
        std::sync::atomic::AtomicU32::load(self, order)
    }

    #[inline]
    fn store(&self, v: u32, order: Ordering) {
        std::sync::atomic::AtomicU32::store(self, v, order);
    }
}

/// The process-wide count of writer ranges that went dark, which the
/// writer's cold paths compare with the count they last handled.
pub(crate) trait Events {
    /// Adds one, with ordering `order`.
    fn bump(&self, order: Ordering);
}

impl Events for std::sync::atomic::AtomicU64 {
    #[inline]
    fn bump(&self, order: Ordering) {
        self.fetch_add(1, order);
    }
}

/// A fault in a writer range whose file was truncated: the first thread to
/// get here calls `map` (which puts private memory over the whole range;
/// `false` if it could not), marks the range dark and then counts it in
/// `events`; any other waits, calling `pause`, until the range is dark.
/// Returns whether the faulting access can be retried: the range is
/// private memory now (or healthy again, mapped to a new file).
///
/// The count comes after the DARK store, so a cold path that
/// Acquire-loads the new count also sees the range dark: counted first, a
/// cold path could take the count as handled while the range was still
/// DARKENING, and the range would stay dark, uncounted, for good.
#[inline]
pub(crate) fn darken<S: State, E: Events>(
    state: &S,
    events: &E,
    map: impl FnOnce() -> bool,
    pause: impl Fn(),
) -> bool {
    match state.claim(HEALTHY, DARKENING) {
        Ok(_) => {
            if mutated!("dark_counted_early") {
                // Relaxed: the mutant under test (never in a normal build).
                events.bump(Ordering::Relaxed);
            }
            if !map() {
                // Release: undo the claim; the fault goes on as before us.
                state.store(HEALTHY, Ordering::Release);
                return false;
            }
            // Release: a thread that Acquire-loads DARK retries its access
            // after the mapping made before this store.
            state.store(DARK, relaxed_if!("dark_relaxed", Ordering::Release));
            if !mutated!("dark_counted_early") {
                // Release: pairs with the cold path's Acquire load of the
                // count, which then sees DARK stored above.
                events.bump(relaxed_if!("dark_count_relaxed", Ordering::Release));
            }
            true
        }
        Err(_) => {
            // Acquire: pairs with the Release store of DARK above.
            while state.load(relaxed_if!("dark_wait_relaxed", Ordering::Acquire)) == DARKENING {
                pause();
            }
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::buffer_was_stable;

    #[test]
    fn text_buffers_are_stable_until_their_next_write_starts() {
        // Read at 2w = 4 (write 2 complete, in buffer 0).
        assert!(buffer_was_stable(4, 4));
        assert!(buffer_was_stable(4, 5)); // write 3 began, in buffer 1
        assert!(buffer_was_stable(4, 6)); // write 3 done
        assert!(!buffer_was_stable(4, 7)); // write 4 began, in buffer 0

        // Read at 2w + 1 = 5 (write 3 under way in buffer 1; read buffer 0).
        assert!(buffer_was_stable(5, 6));
        assert!(!buffer_was_stable(5, 7));
        // A sequence that goes backwards is no single writer's.
        assert!(!buffer_was_stable(6, 4));
        assert!(!buffer_was_stable(u64::MAX, u64::MAX));
    }
}

#[cfg(all(test, loom))]
#[allow(unsafe_code)] // loom's unsync_load, in the models only
mod models;
