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
use crate::sigbus::ReadMap;

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
pub(crate) trait Word {
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
pub(crate) trait Load {
    /// A Relaxed load of the word at byte offset `off`.
    fn load(&self, off: usize) -> u64;
    /// An Acquire fence of the memory model this memory lives in.
    fn fence_acquire(&self);
}

impl Load for ReadMap {
    #[inline(always)]
    fn load(&self, off: usize) -> u64 {
        ReadMap::load(self, off)
    }

    #[inline(always)]
    fn fence_acquire(&self) {
        std::sync::atomic::fence(Ordering::Acquire);
    }
}

/// "Acquire-load" of format-spec.md §6.1: a Relaxed load, then an Acquire
/// fence, so that the load synchronises with the Release store it read.
#[inline]
pub(crate) fn acquire_load<M: Load>(mem: &M, off: usize) -> u64 {
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
pub(crate) fn histogram_read<M: Load>(
    mem: &M,
    off: usize,
    buckets: usize,
) -> (u64, Vec<(u32, u64)>) {
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
pub(crate) fn text_read<M: Load>(
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
        if !crate::reader::buffer_was_stable(s1, s2) {
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

// ------------------------------------------------ a writer's dark range --

/// A writer range backed by its file (format-spec.md §6.9).
pub(crate) const HEALTHY: u32 = 0;
/// The SIGBUS handler of one thread is putting private memory over it.
pub(crate) const DARKENING: u32 = 1;
/// Private memory is over it: its file was truncated.
pub(crate) const DARK: u32 = 2;

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

#[cfg(all(test, loom))]
#[allow(unsafe_code)] // loom's unsync_load, in the models only
mod models {
    //! Writer and reader threads under `loom`. Each model starts from a
    //! state set up before the threads (visible to both), runs one writer
    //! thread through the real writer functions and one reader through the
    //! real reader functions, and checks what the reader got.

    use super::*;
    use loom::sync::atomic::AtomicU64;
    use loom::sync::Arc;
    use loom::thread;

    impl Word for AtomicU64 {
        /// Not a loom `load`: only the writer stores to its words, so it
        /// reads back its own last store, and a loom load here would hide a
        /// reader's earlier load of the word from loom's search (loom keeps
        /// only the last load of each atomic to decide which interleavings
        /// to try; with it, the histogram model explores one).
        fn load_relaxed(&self) -> u64 {
            // SAFETY: every store to a word a writer reads back is its own
            // or made before it was spawned, so all happen before this load
            // (loom checks that).
            unsafe { self.unsync_load() }
        }

        fn store(&self, v: u64, order: Ordering) {
            AtomicU64::store(self, v, order);
        }

        fn fence_release() {
            loom::sync::atomic::fence(Ordering::Release);
        }
    }

    /// Model memory: words, addressed by byte offset as in a file.
    struct Mem(Vec<AtomicU64>);

    impl Mem {
        fn zeroed(words: usize) -> Arc<Mem> {
            Arc::new(Mem((0..words).map(|_| AtomicU64::new(0)).collect()))
        }

        fn word(&self, off: usize) -> &AtomicU64 {
            &self.0[off / 8]
        }
    }

    impl Load for Mem {
        fn load(&self, off: usize) -> u64 {
            // Relaxed: as `ReadMap::load`, the only load a reader makes.
            self.word(off).load(Ordering::Relaxed)
        }

        fn fence_acquire(&self) {
            loom::sync::atomic::fence(Ordering::Acquire);
        }
    }

    /// How a model's checks start their failure messages.
    const BROKEN: &str = "protocol broken";

    /// Explores every execution of `f`: no preemption bound (the text model
    /// takes about 30 000 executions, a few seconds in a release build).
    fn model(f: impl Fn() + Sync + Send + 'static) {
        loom::model(f);
    }

    const TEXT_CAPACITY: usize = 16;
    const TEXT_WORDS: usize = raw::text_value_len(TEXT_CAPACITY) / 8;
    /// Write 0 (stale: the model starts after write 1, so a reader must
    /// never return it), then writes 1, 2 and 3. Different lengths and
    /// different letters in each word, so any mix of two writes, or of a
    /// write's length with another's bytes, is none of these.
    const WRITES: [&str; 4] = [
        "zzzzzzzzzzzzzzz",
        "aaaaaaaaaaaaaaaa",
        "bbbbbbbbb",
        "cccccccccccccccc",
    ];

    /// A text value as it is after writes 0 and 1 (sequence 2), made with
    /// the real writer before the threads start.
    fn text_after_write_1() -> Arc<Mem> {
        let mem = Mem::zeroed(TEXT_WORDS);
        let seq = &mem.0[raw::TEXT_SEQ / 8];
        // Write 0 is put into buffer 0 as write 2 would be (from sequence
        // 2), then the sequence is rewound, and write 1 goes into buffer 1.
        // Relaxed: no other thread yet.
        seq.store(2, Ordering::Relaxed);
        text_store(|i| &mem.0[i], TEXT_CAPACITY, WRITES[0].as_bytes());
        seq.store(0, Ordering::Relaxed);
        text_store(|i| &mem.0[i], TEXT_CAPACITY, WRITES[1].as_bytes());
        assert_eq!(mem.load(0), 2);
        mem
    }

    /// A reader racing writes 2 and 3 returns one complete write, 1, 2 or
    /// 3, and within 3 attempts always returns one: the writer can disturb
    /// at most two of them.
    fn text_read_is_whole() {
        model(|| {
            let mem = text_after_write_1();
            let writer = {
                let mem = mem.clone();
                thread::spawn(move || {
                    for s in &WRITES[2..] {
                        text_store(|i| &mem.0[i], TEXT_CAPACITY, s.as_bytes());
                    }
                })
            };
            let got = text_read(&*mem, 0, TEXT_CAPACITY, 3, |_| {});
            match &got {
                Ok(s) => assert!(
                    WRITES[1..].contains(&s.as_str()),
                    "{BROKEN}: torn or stale read {s:?}"
                ),
                Err(e) => panic!("{BROKEN}: no stable read in 3 attempts against 2 writes: {e}"),
            }
            writer.join().unwrap();
            // After the writer is done, the last write is what is read.
            assert_eq!(
                text_read(&*mem, 0, TEXT_CAPACITY, 1, |_| {}).as_deref(),
                Ok(WRITES[3]),
                "{BROKEN}: the last write, once complete, is not what is read"
            );
        });
    }

    /// A reader makes 1 attempt against writes 2 and 3: it may have to give
    /// up (that is what the retries are for), but what it returns is whole.
    fn text_single_attempt() {
        model(|| {
            let mem = text_after_write_1();
            let writer = {
                let mem = mem.clone();
                thread::spawn(move || {
                    for s in &WRITES[2..] {
                        text_store(|i| &mem.0[i], TEXT_CAPACITY, s.as_bytes());
                    }
                })
            };
            match text_read(&*mem, 0, TEXT_CAPACITY, 1, |_| {}) {
                Ok(s) => assert!(
                    WRITES[1..].contains(&s.as_str()),
                    "{BROKEN}: torn or stale read {s:?}"
                ),
                Err(e) => assert_eq!(
                    e, "still being rewritten after 1 attempts",
                    "{BROKEN}: an error the protocol does not allow"
                ),
            }
            writer.join().unwrap();
        });
    }

    /// Field table words of the model: a count, then two 2-word records.
    const COUNT: usize = 0;
    const RECORD_WORDS: usize = 2;

    fn record_word(record: u64, k: usize) -> u64 {
        // Non-zero and different per record and word.
        0x100 * (record + 1) + k as u64
    }

    /// A reader that Acquire-loads a field count `n` sees the words of
    /// records 0 to n - 1 complete (the writer stores them Relaxed first,
    /// as `StatsFile::add` does, then publishes the count).
    fn field_count() {
        model(|| {
            let mem = Mem::zeroed(1 + 2 * RECORD_WORDS);
            let writer = {
                let mem = mem.clone();
                thread::spawn(move || {
                    for r in 0..2u64 {
                        for k in 0..RECORD_WORDS {
                            let off = 8 * (1 + r as usize * RECORD_WORDS + k);
                            // Relaxed: as `StatsFile::store_image`.
                            mem.word(off).store(record_word(r, k), Ordering::Relaxed);
                        }
                        publish_field_count(mem.word(COUNT), r + 1);
                    }
                })
            };
            let n = acquire_load(&*mem, COUNT);
            for r in 0..n {
                for k in 0..RECORD_WORDS {
                    let off = 8 * (1 + r as usize * RECORD_WORDS + k);
                    assert_eq!(
                        mem.load(off),
                        record_word(r, k),
                        "{BROKEN}: count {n}, record {r} word {k} incomplete"
                    );
                }
            }
            writer.join().unwrap();
        });
    }

    /// A reader's buckets include every value in the sum it read: values
    /// 1, 2, 4 into buckets 0, 1, 0, so each sum says which were recorded.
    fn histogram() {
        const VALUES: [(u64, usize); 3] = [(1, 0), (2, 1), (4, 0)];
        model(|| {
            let mem = Mem::zeroed(3);
            let writer = {
                let mem = mem.clone();
                thread::spawn(move || {
                    for (v, b) in VALUES {
                        histogram_record(
                            mem.word(raw::HIST_SUM),
                            mem.word(raw::HIST_BUCKETS + 8 * b),
                            v,
                        );
                    }
                })
            };
            let (sum, used) = histogram_read(&*mem, 0, 2);
            let mut counts = [0u64; 2];
            for (i, c) in used {
                counts[i as usize] = c;
            }
            let mut need = [0u64; 2];
            for (v, b) in VALUES {
                if sum & v != 0 {
                    need[b] += 1;
                }
            }
            assert!(
                counts[0] >= need[0] && counts[1] >= need[1],
                "{BROKEN}: sum {sum} read with buckets {counts:?}, which miss some of its values"
            );
            writer.join().unwrap();
        });
    }

    impl State for loom::sync::atomic::AtomicU32 {
        fn claim(&self, current: u32, new: u32) -> Result<u32, u32> {
            self.compare_exchange(current, new, Ordering::Acquire, Ordering::Acquire)
        }

        fn load(&self, order: Ordering) -> u32 {
            loom::sync::atomic::AtomicU32::load(self, order)
        }

        fn store(&self, v: u32, order: Ordering) {
            loom::sync::atomic::AtomicU32::store(self, v, order);
        }
    }

    impl Events for AtomicU64 {
        fn bump(&self, order: Ordering) {
            self.fetch_add(1, order);
        }
    }

    /// A fault darkens a writer range while a cold path looks for dark
    /// ranges: if the cold path sees the range counted, it sees it dark
    /// (else it would take the count as handled and never re-home it).
    fn dark_counted() {
        model(|| {
            let state = Arc::new(loom::sync::atomic::AtomicU32::new(HEALTHY));
            let events = Arc::new(AtomicU64::new(0));
            let fault = {
                let (state, events) = (state.clone(), events.clone());
                thread::spawn(move || {
                    assert!(darken(&*state, &*events, || true, thread::yield_now));
                })
            };
            // The cold path (`registry::rehome_dark`).
            // Acquire: as `sigbus::dark_events`.
            let seen = events.load(Ordering::Acquire);
            // Acquire: as `WriterRange::is_dark`.
            let dark = state.load(Ordering::Acquire) == DARK;
            assert!(
                seen == 0 || dark,
                "{BROKEN}: a dark range counted before a cold path could see it dark"
            );
            fault.join().unwrap();
        });
    }

    #[test]
    fn a_counted_dark_range_is_seen_dark() {
        dark_counted();
    }

    /// Two threads fault in one truncated writer range: the range is
    /// mapped over once, and neither retries its access before the
    /// mapping is done (the mapping is modelled as a Relaxed flag that
    /// the mapping thread sets).
    fn dark_range() {
        use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize};
        model(|| {
            let state = Arc::new(AtomicU32::new(HEALTHY));
            let mapped = Arc::new(AtomicBool::new(false));
            let maps = Arc::new(AtomicUsize::new(0));
            let events = Arc::new(AtomicU64::new(0));
            let fault = {
                let (state, mapped, maps, events) =
                    (state.clone(), mapped.clone(), maps.clone(), events.clone());
                move || {
                    let retry = darken(
                        &*state,
                        &*events,
                        || {
                            // Relaxed: a count and a flag, ordered (or not)
                            // by the protocol under test.
                            maps.fetch_add(1, Ordering::Relaxed);
                            mapped.store(true, Ordering::Relaxed);
                            true
                        },
                        thread::yield_now,
                    );
                    assert!(retry, "{BROKEN}: a fault in a writer range not repaired");
                    assert!(
                        // Relaxed: see above.
                        mapped.load(Ordering::Relaxed),
                        "{BROKEN}: an access retried before the range was mapped over"
                    );
                }
            };
            let other = thread::spawn(fault.clone());
            fault();
            other.join().unwrap();
            // Relaxed: both threads are joined.
            assert_eq!(
                maps.load(Ordering::Relaxed),
                1,
                "{BROKEN}: mapped over twice"
            );
            assert_eq!(state.load(Ordering::Relaxed), DARK);
        });
    }

    #[test]
    fn a_dark_range_is_mapped_over_once_before_any_retry() {
        dark_range();
    }

    #[test]
    fn text_reader_returns_only_complete_writes() {
        text_read_is_whole();
    }

    #[test]
    fn text_single_attempt_is_whole_or_retried() {
        text_single_attempt();
    }

    #[test]
    fn field_count_publishes_records() {
        field_count();
    }

    #[test]
    fn histogram_buckets_cover_the_sum() {
        histogram();
    }

    /// Runs `model` with the ordering `name` weakened; it must fail, on one
    /// of its own checks.
    fn must_fail(name: &'static str, model: fn()) {
        MUTANT.with(|m| m.set(Some(name)));
        let outcome = std::panic::catch_unwind(model);
        MUTANT.with(|m| m.set(None));
        let Err(payload) = outcome else {
            panic!("the model passes with `{name}`: that ordering is not needed, or the model cannot see why");
        };
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("(not a string)");
        assert!(
            message.contains(BROKEN),
            "with `{name}` the model failed, but not on one of its checks: {message}"
        );
        eprintln!("`{name}`: {message}");
    }

    /// One test per weakened ordering, each with the model that needs it.
    macro_rules! mutants {
        ($($name:ident => $model:ident,)*) => {
            mod mutants_fail {
                $(
                    #[test]
                    fn $name() {
                        super::must_fail(stringify!($name), super::$model);
                    }
                )*
            }
        };
    }

    mutants! {
        field_count_relaxed => field_count,
        acquire_load_no_fence => field_count,
        hist_sum_relaxed => histogram,
        hist_no_fence => histogram,
        text_begin_relaxed => text_read_is_whole,
        text_no_release_fence => text_read_is_whole,
        text_end_relaxed => text_read_is_whole,
        text_no_first_fence => text_read_is_whole,
        text_no_second_fence => text_read_is_whole,
        dark_relaxed => dark_range,
        dark_wait_relaxed => dark_range,
        dark_counted_early => dark_counted,
        dark_count_relaxed => dark_counted,
    }
}
