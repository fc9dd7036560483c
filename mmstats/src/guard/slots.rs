//! The registry of mapped ranges that the SIGBUS handler scans: fixed
//! chunks of slots, each range under a sequence lock, handed out under a
//! mutex the handler never takes.

use std::ptr;
use std::sync::atomic::{
    fence, AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering,
};
use std::sync::Mutex;

use super::MAX_MAPPINGS;
use crate::protocol::HEALTHY;
use crate::sys::held::HeldAcrossFork;

/// Slots per registry chunk.
pub(super) const CHUNK_SLOTS: usize = 1024;
/// Chunks the registry can grow to.
pub(super) const MAX_CHUNKS: usize = 64;

/// How many writer ranges went dark since the process started. A caller
/// that sees a count sees every range it counts dark (`protocol::darken`).
pub(crate) fn dark_events() -> u64 {
    // Acquire: pairs with the handler's Release increment, made after it
    // stored DARK.
    DARK_EVENTS.load(Ordering::Acquire)
}

/// The allocation lock, held by the forking thread across `fork`.
static ALLOC_HELD: HeldAcrossFork<Alloc> = HeldAcrossFork::new(alloc_lock);

fn alloc_lock() -> &'static Mutex<Alloc> {
    &ALLOC
}

/// Takes the registry's allocation lock before `fork`, so that the child
/// never inherits it held by a thread that does not exist there.
pub(crate) fn hold_alloc_for_fork() {
    ALLOC_HELD.hold();
}

/// Releases what [`hold_alloc_for_fork`] took, in the parent.
pub(crate) fn release_alloc_after_fork() {
    ALLOC_HELD.release();
}

/// Releases what [`hold_alloc_for_fork`] took, in the child.
pub(crate) fn release_alloc_after_fork_in_child() {
    drop(ALLOC_HELD.take_in_child());
}

// --------------------------------------------------------------- registry --

/// One registered mapping. `start` and `len` sit under a sequence lock:
/// `seq` is odd while they change, so the handler can tell a consistent
/// pair from one torn by a slot being reused, and skip the latter.
///
/// Skipping is safe: the slot of the mapping that faulted is never being
/// changed while it faults, since it is published before the mapping's
/// first load and retracted only when the mapping is dropped, after its
/// last load.
pub(super) struct Slot {
    pub(super) seq: AtomicU64,
    /// Address of the first byte, 0 while the slot is free.
    pub(super) start: AtomicUsize,
    pub(super) len: AtomicUsize,
    /// Whether the range is a writer's mapping (under the sequence lock).
    pub(super) writer: AtomicBool,
    pub(super) faulted: AtomicBool,
    /// A writer range's repair state: `HEALTHY`, `DARKENING` while the
    /// handler maps private memory over it, `DARK` after (see
    /// `protocol::darken`).
    pub(super) dark: AtomicU32,
}

/// How many writer ranges went dark since the process started: bumped by
/// the handler, read by the writer's cold paths to find them.
pub(super) static DARK_EVENTS: AtomicU64 = AtomicU64::new(0);

impl Slot {
    #[allow(clippy::declare_interior_mutable_const)]
    pub(super) const EMPTY: Slot = Slot {
        seq: AtomicU64::new(0),
        start: AtomicUsize::new(0),
        len: AtomicUsize::new(0),
        writer: AtomicBool::new(false),
        faulted: AtomicBool::new(false),
        dark: AtomicU32::new(HEALTHY),
    };

    /// Sets the range; only the thread that claimed the slot calls this.
    pub(super) fn publish(&self, start: usize, len: usize, writer: bool) {
        self.write(|| {
            // Relaxed: the `faulted` flag is not under the sequence lock; the
            // Release store ending `write` publishes the reset with the range.
            self.faulted.store(false, Ordering::Relaxed);
            // Relaxed: as `faulted`; no handler looks at a new slot's state
            // before it sees the range, published by the Release below.
            self.dark.store(HEALTHY, Ordering::Relaxed);
            // Relaxed: ordered by the sequence lock around them.
            self.writer.store(writer, Ordering::Relaxed);
            // Relaxed: ordered by the sequence lock around them.
            self.len.store(len, Ordering::Relaxed);
            // Relaxed: ordered by the sequence lock around them.
            self.start.store(start, Ordering::Relaxed);
        });
    }

    /// Clears the range; only the slot's owner calls this.
    pub(super) fn retract(&self) {
        self.write(|| {
            // Relaxed: ordered by the sequence lock around it.
            self.start.store(0, Ordering::Relaxed);
        });
    }

    fn write(&self, f: impl FnOnce()) {
        // Relaxed: the owner is the only thread that writes `seq`.
        let s = self.seq.load(Ordering::Relaxed);
        // Relaxed, then a Release fence: a handler that reads any of the
        // stores below also sees the odd sequence (the seqlock writer).
        self.seq.store(s + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        f();
        // Release: a handler that sees the even sequence sees the new range.
        self.seq.store(s + 2, Ordering::Release);
    }

    /// The registered range, if the slot holds one and it is not changing.
    /// Lock-free and wait-free: called by the signal handler.
    pub(super) fn range(&self) -> Option<(usize, usize, bool)> {
        // Acquire: pairs with the Release store ending `write`.
        let s1 = self.seq.load(Ordering::Acquire);
        if s1 % 2 == 1 {
            return None;
        }
        // Relaxed: checked by the sequence lock below.
        let start = self.start.load(Ordering::Relaxed);
        // Relaxed: checked by the sequence lock below.
        let len = self.len.load(Ordering::Relaxed);
        // Relaxed: checked by the sequence lock below.
        let writer = self.writer.load(Ordering::Relaxed);
        // Acquire fence: the loads above happen before the re-read of `seq`,
        // so a write that overlapped them shows up as a changed sequence.
        fence(Ordering::Acquire);
        // Relaxed: ordered by the fence above.
        let s2 = self.seq.load(Ordering::Relaxed);
        (s1 == s2 && start != 0).then_some((start, len, writer))
    }
}

pub(super) type Chunk = [Slot; CHUNK_SLOTS];

/// Registry chunks, allocated in order and never freed; null past the last.
pub(super) static CHUNKS: [AtomicPtr<Chunk>; MAX_CHUNKS] =
    [const { AtomicPtr::new(ptr::null_mut()) }; MAX_CHUNKS];

/// Which slots are free. Never touched by the signal handler.
pub(super) struct Alloc {
    /// Released slots, reused first.
    free: Vec<usize>,
    /// Slots below this have been handed out at least once.
    pub(super) used: usize,
}

pub(super) static ALLOC: Mutex<Alloc> = Mutex::new(Alloc {
    free: Vec::new(),
    used: 0,
});

/// Claims a free slot, allocating a chunk if needed; `None` when all
/// [`MAX_MAPPINGS`] are taken.
pub(super) fn claim() -> Option<usize> {
    let mut alloc = ALLOC.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(i) = alloc.free.pop() {
        return Some(i);
    }
    let i = alloc.used;
    if i == MAX_MAPPINGS {
        return None;
    }
    if i.is_multiple_of(CHUNK_SLOTS) {
        let chunk: &'static mut Chunk = Box::leak(Box::new([Slot::EMPTY; CHUNK_SLOTS]));
        // Release: the handler Acquire-loads the pointer, so it sees the
        // chunk's initialised slots.
        CHUNKS[i / CHUNK_SLOTS].store(chunk, Ordering::Release);
    }
    alloc.used = i + 1;
    Some(i)
}

pub(super) fn release(i: usize) {
    let mut alloc = ALLOC.lock().unwrap_or_else(|e| e.into_inner());
    alloc.free.push(i);
}

/// Slot `i`, which `claim` has handed out, so its chunk exists.
pub(super) fn slot(i: usize) -> &'static Slot {
    // Acquire: pairs with the Release that published the chunk.
    let chunk = CHUNKS[i / CHUNK_SLOTS].load(Ordering::Acquire);
    assert!(!chunk.is_null(), "slot {i} has no chunk");
    // SAFETY: a non-null chunk pointer comes from `Box::leak` in `claim`,
    // so it points at an initialised chunk that lives forever and is only
    // accessed through shared references (its fields are atomics).
    unsafe { &(*chunk)[i % CHUNK_SLOTS] }
}
