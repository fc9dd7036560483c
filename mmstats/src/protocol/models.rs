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
        // Acquire: as `guard::dark_events`.
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
