//! The only module with `unsafe`: shared memory as atomic words, the
//! writer's backing store, the reader's guarded mapping, and the two raw
//! system calls std does not wrap.
//!
//! Memory another process writes is never seen through `&[u8]` or `&T` of a
//! plain type: every access is an atomic load or store of an aligned `u64`
//! through a raw pointer, as the format (one writer, 8-byte words) allows.

use std::cell::Cell;
use std::fs::File;
use std::io;
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Once};

use memmap2::{MmapOptions, MmapRaw};

// ------------------------------------------------------------- writer side --

/// A writable shared mapping of a stats file. Its descriptor is closed as
/// soon as it is mapped: a mapping stays valid without it, and a process
/// with thousands of writer threads must not spend a descriptor on each.
pub(crate) struct FileMap {
    map: MmapRaw,
}

impl FileMap {
    /// Maps the first `len` bytes of `file` (opened read-write, already
    /// `len` long) shared and writable. `file` may be closed afterwards.
    pub(crate) fn new(file: &File, len: usize) -> io::Result<FileMap> {
        assert!(len.is_multiple_of(8) && len > 0);
        let map = MmapOptions::new().len(len).map_raw(file)?;
        Ok(FileMap { map })
    }

    fn base(&self) -> (NonNull<AtomicU64>, usize) {
        // mmap returns page-aligned, non-null memory.
        let ptr = NonNull::new(self.map.as_mut_ptr().cast::<AtomicU64>()).expect("mmap");
        (ptr, self.map.len() / 8)
    }

    /// The word at byte offset `off`. Panics if `off` is out of range or
    /// unaligned: offsets come from the writer's own layout.
    pub(crate) fn word(&self, off: usize) -> &AtomicU64 {
        word_at(self, self.base(), off)
    }

    /// Mapped length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

impl std::fmt::Debug for FileMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileMap")
            .field("len", &self.map.len())
            .finish_non_exhaustive()
    }
}

/// The word at byte offset `off` of the memory `base` describes, borrowed
/// as long as `_owner`, which keeps that memory alive.
fn word_at<T: ?Sized>(
    _owner: &T,
    (ptr, len): (NonNull<AtomicU64>, usize),
    off: usize,
) -> &AtomicU64 {
    assert!(
        off.is_multiple_of(8) && off / 8 < len,
        "word offset {off} out of range"
    );
    // SAFETY:
    // - `ptr` points at `len` contiguous, 8-aligned `AtomicU64`s owned by
    //   `_owner`, and `off / 8 < len`.
    // - Other processes only ever access this memory as aligned 8-byte atomics.
    // - The result borrows `_owner`, which owns the memory (the mapping or
    //   the boxed slice), so it cannot outlive it.
    unsafe { &*ptr.as_ptr().add(off / 8) }
}

/// Where a writer's values live: a shared mapping of its stats file, or
/// process-private memory when the file could not be created.
enum Memory {
    File(Arc<FileMap>),
    Private(Box<[AtomicU64]>),
}

/// What happens to a file's mapping when its last handle goes, after the
/// exited store: the writer parks it for reuse or forgets it.
pub(crate) type OnClose = Box<dyn FnOnce(Arc<FileMap>) + Send + Sync>;

/// The memory behind a writer's handles, shared by all of them through an
/// `Arc`; it marks the file exited when the last handle goes.
pub(crate) struct Backing {
    mem: Memory,
    /// Word index of the writer state word, stored on drop.
    state_word: usize,
    exited_code: u64,
    /// The process that made this backing. A child made by `fork` shares
    /// the mapping but must not declare the parent's file exited.
    pid: u32,
    on_close: Option<OnClose>,
}

impl Backing {
    /// The backing of a mapped file; `on_close` gets the mapping once the
    /// last handle is gone and the file is marked exited.
    pub(crate) fn file(
        map: Arc<FileMap>,
        state_off: usize,
        exited_code: u64,
        on_close: OnClose,
    ) -> Backing {
        assert!(state_off.is_multiple_of(8) && state_off < map.len());
        Backing {
            mem: Memory::File(map),
            state_word: state_off / 8,
            exited_code,
            pid: std::process::id(),
            on_close: Some(on_close),
        }
    }

    /// Process-private memory holding a copy of `image`.
    pub(crate) fn private(image: &[u8], state_off: usize, exited_code: u64) -> Backing {
        assert!(image.len().is_multiple_of(8));
        let words = image
            .chunks_exact(8)
            .map(|c| AtomicU64::new(u64::from_le_bytes(c.try_into().expect("8 bytes"))))
            .collect();
        Backing {
            mem: Memory::Private(words),
            state_word: state_off / 8,
            exited_code,
            pid: std::process::id(),
            on_close: None,
        }
    }

    fn base(&self) -> (NonNull<AtomicU64>, usize) {
        match &self.mem {
            Memory::File(map) => map.base(),
            Memory::Private(words) => {
                // From the whole slice, so the pointer may reach every word.
                let ptr = NonNull::new(words.as_ptr().cast_mut()).expect("non-empty");
                (ptr, words.len())
            }
        }
    }

    /// The word at byte offset `off`. Panics if `off` is out of range or
    /// unaligned: offsets come from the writer's own layout.
    pub(crate) fn word(&self, off: usize) -> &AtomicU64 {
        word_at(self, self.base(), off)
    }

    /// A handle on `n` words starting at byte offset `off`.
    pub(crate) fn words(self: &Arc<Self>, off: usize, n: usize) -> Words {
        let (ptr, len) = self.base();
        assert!(
            n > 0 && off.is_multiple_of(8) && off / 8 + n <= len,
            "words {off}+{n} out of range"
        );
        // SAFETY: in bounds of the allocation, checked just above.
        let first = unsafe { ptr.as_ptr().add(off / 8) };
        Words {
            ptr: NonNull::new(first).expect("non-null"),
            len: n,
            _owner: Arc::clone(self),
            _not_sync: PhantomData,
        }
    }
}

impl Drop for Backing {
    fn drop(&mut self) {
        if std::process::id() != self.pid {
            // A forked child dropping its copy: the file is the parent's.
            return;
        }
        // Release: a reader that sees "exited" (and fences) sees every value
        // the writer stored before, so it knows the values are final.
        self.word(self.state_word * 8)
            .store(self.exited_code, Ordering::Release);
        if let (Memory::File(map), Some(on_close)) = (&self.mem, self.on_close.take()) {
            on_close(Arc::clone(map));
        }
    }
}

/// A run of value words owned by one writer: what every metric handle holds.
///
/// `Send` so a stats model can move to another thread, never `Sync`, so two
/// threads can never store to one file.
pub(crate) struct Words {
    ptr: NonNull<AtomicU64>,
    len: usize,
    _owner: Arc<Backing>,
    _not_sync: PhantomData<Cell<()>>,
}

// SAFETY: `Words` is a pointer into memory kept alive by the `Arc<Backing>`
// it carries; moving it to another thread moves that ownership with it. It is
// deliberately not `Sync`, which is what keeps one writer per word.
unsafe impl Send for Words {}

impl Words {
    /// Word `i` of the run. Panics if `i` is out of range.
    #[inline(always)]
    pub(crate) fn at(&self, i: usize) -> &AtomicU64 {
        assert!(i < self.len);
        // SAFETY:
        // - `i < self.len`, and the run was checked to lie inside the backing
        //   memory when it was made; `_owner` keeps that memory alive.
        // - The memory is only accessed as aligned atomic words.
        unsafe { &*self.ptr.as_ptr().add(i) }
    }

    /// The first word of the run (every run has one).
    #[inline(always)]
    pub(crate) fn first(&self) -> &AtomicU64 {
        // SAFETY: runs are never empty (checked in `Backing::words`); the
        // rest as for `at`.
        unsafe { &*self.ptr.as_ptr() }
    }

    /// Number of words in the run.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

/// The effective user id of this process.
pub(crate) fn geteuid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The calling thread's kernel thread id.
pub(crate) fn gettid() -> u32 {
    // SAFETY: gettid has no preconditions and cannot fail.
    let tid = unsafe { libc::gettid() };
    tid as u32
}

// ------------------------------------------------------------- reader side --

/// A read-only mapping of a file that another process may shrink at any
/// moment. Loads that would raise SIGBUS read zero instead, and the mapping
/// remembers that it faulted (see [`ReadMap::faulted`]).
pub(crate) struct ReadMap {
    map: MmapRaw,
    slot: usize,
}

impl ReadMap {
    /// Maps the first `len` bytes of `file` read-only. `len` must be a
    /// multiple of 8 and not zero.
    pub(crate) fn new(file: &File, len: usize) -> io::Result<ReadMap> {
        assert!(len > 0 && len.is_multiple_of(8));
        install_sigbus_handler();
        let map = MmapOptions::new().len(len).map_raw_read_only(file)?;
        let slot = register(map.as_ptr() as usize, map.len()).ok_or_else(|| {
            io::Error::other(format!(
                "too many files mapped at once by this reader process (limit {SLOT_COUNT})"
            ))
        })?;
        Ok(ReadMap { map, slot })
    }

    /// Mapped length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Loads the word at byte offset `off` (8-aligned, in range).
    ///
    /// Always a relaxed load: the mapping is read-only, and Rust only
    /// defines relaxed atomic loads of at most 8 bytes on read-only memory
    /// (see "Atomic accesses to read-only memory" in `std::sync::atomic`).
    /// Callers that need acquire ordering put a `fence(Acquire)` after it.
    #[inline]
    pub(crate) fn load(&self, off: usize) -> u64 {
        assert!(
            off.is_multiple_of(8) && off + 8 <= self.map.len(),
            "load at {off} out of range"
        );
        // SAFETY:
        // - `off` is 8-aligned and `off + 8 <= len`, and the mapping is
        //   page-aligned, so the pointer is aligned and inside the mapping.
        // - The memory is shared with writers that only use aligned atomic
        //   words, so an atomic load is the right access.
        // - The mapping is read-only: allowed because the only access is a
        //   relaxed load of 8 bytes, which is lock-free on the 64-bit
        //   targets this crate builds for (the read-only exception of
        //   `std::sync::atomic`).
        // - If the file shrank, the access raises SIGBUS, which our handler
        //   turns into a read of a zero page and records in this map's slot.
        let word = unsafe { AtomicU64::from_ptr(self.map.as_ptr().add(off) as *mut u64) };
        word.load(Ordering::Relaxed)
    }

    /// Copies `len` bytes starting at `off` (both 8-aligned) word by word
    /// with relaxed loads, appending them to `out` in file (little-endian)
    /// byte order.
    pub(crate) fn copy(&self, off: usize, len: usize, out: &mut Vec<u8>) {
        assert!(off.is_multiple_of(8) && len.is_multiple_of(8));
        out.reserve(len);
        for o in (off..off + len).step_by(8) {
            // Relaxed (as every load here): each word is a value on its own;
            // whoever needs words to agree with each other fences around it.
            out.extend_from_slice(&self.load(o).to_le_bytes());
        }
    }

    /// Whether any load so far touched memory past the end of the file.
    /// If so, every value read from this map is suspect.
    pub(crate) fn faulted(&self) -> bool {
        SLOTS[self.slot].faulted.load(Ordering::Acquire)
    }
}

impl Drop for ReadMap {
    fn drop(&mut self) {
        unregister(self.slot);
    }
}

struct Slot {
    claimed: AtomicBool,
    start: AtomicUsize,
    len: AtomicUsize,
    faulted: AtomicBool,
}

const SLOT_COUNT: usize = 256;

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY_SLOT: Slot = Slot {
    claimed: AtomicBool::new(false),
    start: AtomicUsize::new(0),
    len: AtomicUsize::new(0),
    faulted: AtomicBool::new(false),
};

/// Mappings the SIGBUS handler may repair. A fixed table of atomics, so the
/// handler can search it without locks or allocation.
static SLOTS: [Slot; SLOT_COUNT] = [EMPTY_SLOT; SLOT_COUNT];
static PAGE_SIZE: AtomicUsize = AtomicUsize::new(4096);

fn register(start: usize, len: usize) -> Option<usize> {
    for (i, slot) in SLOTS.iter().enumerate() {
        // Acquire/Relaxed: claiming a slot orders nothing else; `start`
        // below is what publishes it to the handler.
        if slot
            .claimed
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            slot.len.store(len, Ordering::Relaxed);
            slot.faulted.store(false, Ordering::Relaxed);
            // Release: the handler that sees `start` also sees `len` and `faulted`.
            slot.start.store(start, Ordering::Release);
            return Some(i);
        }
    }
    None
}

fn unregister(i: usize) {
    // Release: the slot stops matching before it can be claimed again.
    SLOTS[i].start.store(0, Ordering::Release);
    SLOTS[i].claimed.store(false, Ordering::Release);
}

static mut PREVIOUS_SIGBUS: std::mem::MaybeUninit<libc::sigaction> =
    std::mem::MaybeUninit::zeroed();

fn install_sigbus_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if page > 0 {
            PAGE_SIZE.store(page as usize, Ordering::Relaxed);
        }
        // SAFETY:
        // - `action` is fully initialised (zeroed, then the fields we use set).
        // - `PREVIOUS_SIGBUS` is written only here, once, before the handler
        //   that reads it can run (it is installed by this very call).
        // - `on_sigbus` has the signature SA_SIGINFO requires.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_sigbus as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut action.sa_mask);
            let prev = std::ptr::addr_of_mut!(PREVIOUS_SIGBUS).cast::<libc::sigaction>();
            libc::sigaction(libc::SIGBUS, &action, prev);
        }
    });
}

/// SIGBUS handler. For a fault inside a registered reader mapping (the file
/// shrank under it), maps a zero page over the faulting page and records
/// the fault, so the load is retried and reads zero. Any other fault goes to
/// the handler that was installed before ours.
extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let addr = unsafe { (*info).si_addr() } as usize;
    for slot in &SLOTS {
        // Acquire: pairs with the Release in `register`, so `len` is current.
        let start = slot.start.load(Ordering::Acquire);
        let len = slot.len.load(Ordering::Relaxed);
        if start != 0 && addr >= start && addr < start + len {
            let page = addr & !(PAGE_SIZE.load(Ordering::Relaxed) - 1);
            // SAFETY:
            // - `page` is page-aligned and lies inside a mapping this process
            //   made read-only for a reader; replacing it with zeros changes
            //   only what that reader sees, and the reader discards what it
            //   read once it sees `faulted`.
            // - mmap is a plain system call, safe to make in a signal handler.
            let res = unsafe {
                libc::mmap(
                    page as *mut libc::c_void,
                    PAGE_SIZE.load(Ordering::Relaxed),
                    libc::PROT_READ,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                    -1,
                    0,
                )
            };
            if res != libc::MAP_FAILED {
                // Release: the reader acquires this after its loads.
                slot.faulted.store(true, Ordering::Release);
                return;
            }
            break;
        }
    }
    // Not ours (or we could not repair it): hand the signal on.
    // SAFETY:
    // - `PREVIOUS_SIGBUS` was initialised before this handler was installed.
    // - Restoring the previous action and returning makes the faulting
    //   instruction fault again under that action, which is what it would
    //   have done without us; a handler function is called directly instead.
    unsafe {
        let prev = &*std::ptr::addr_of!(PREVIOUS_SIGBUS).cast::<libc::sigaction>();
        let handler = prev.sa_sigaction;
        if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
            libc::sigaction(libc::SIGBUS, prev, std::ptr::null_mut());
        } else if prev.sa_flags & libc::SA_SIGINFO != 0 {
            let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                std::mem::transmute(handler);
            f(sig, info, ctx);
        } else {
            let f: extern "C" fn(libc::c_int) = std::mem::transmute(handler);
            f(sig);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn shrinking_file_reads_zero_and_reports_fault() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&[0xAB; 3 * 4096]).unwrap();
        let map = ReadMap::new(&f, 3 * 4096).unwrap();
        assert_eq!(map.load(4096), 0xABAB_ABAB_ABAB_ABAB);
        assert!(!map.faulted());
        f.set_len(100).unwrap();
        // Past the new end of file: would be SIGBUS, reads zero instead.
        assert_eq!(map.load(2 * 4096), 0);
        assert!(map.faulted());
    }

    #[test]
    fn only_the_creating_process_marks_a_file_exited() {
        use std::io::{Read, Seek};
        let state_off = 8;
        for (pid_delta, expected) in [(0u32, 2u64), (1, 0)] {
            let mut f = tempfile::tempfile().unwrap();
            f.write_all(&[0; 16]).unwrap();
            let map = Arc::new(FileMap::new(&f, 16).unwrap());
            let mut backing = Backing::file(map, state_off, 2, Box::new(drop));
            // As if a forked child (another pid) dropped its inherited copy.
            backing.pid += pid_delta;
            drop(backing);
            let mut bytes = [0u8; 16];
            f.rewind().unwrap();
            f.read_exact(&mut bytes).unwrap();
            let state = u64::from_le_bytes(bytes[8..16].try_into().unwrap());
            assert_eq!(state, expected, "pid delta {pid_delta}");
        }
    }

    #[test]
    fn slots_are_reused() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&[1; 8]).unwrap();
        for _ in 0..2 * SLOT_COUNT {
            let map = ReadMap::new(&f, 8).unwrap();
            assert_eq!(map.load(0), 0x0101_0101_0101_0101);
        }
    }

    #[test]
    fn words_are_send() {
        // Not Sync: proven by the compile-fail tests in tests/ui.

        fn send<T: Send>() {}
        send::<Words>();
    }
}
