//! The SIGBUS guard: read-only mappings of files that another process may
//! shrink, the registry of their address ranges and of writers' mappings,
//! and the signal handler that turns a fault inside a reader mapping into a
//! read of zeros, and one inside a writer mapping into stores to private
//! memory (see [`WriterRange`]).
//!
//! A load from a mapped page past the end of a file raises SIGBUS. The guard
//! ([`install_sigbus_guard`]) installs a handler that looks the faulting
//! address up in a registry of reader mappings. Inside one, it maps a zero
//! page over the faulting page, marks that mapping faulted and returns, so
//! the load is retried and reads zero; the reader then discards its snapshot
//! ([`ReadError::Truncated`](crate::ReadError::Truncated)). Any other fault
//! goes on to the handler that was installed before the guard, or to the
//! default action, which kills the process as it would have without us.
//!
//! The registry holds up to [`MAX_MAPPINGS`] mappings: `MAX_CHUNKS` chunks
//! of `CHUNK_SLOTS` slots, each chunk allocated when first needed and
//! never freed. The handler takes no lock and allocates nothing: it scans
//! the published chunks with atomic loads. Slots are handed out under a
//! mutex (never taken by the handler) from a free list, so opening a file
//! costs O(1) however many are open.

use std::fs::File;
use std::io;
use std::path::Path;
use std::ptr;
use std::sync::atomic::{
    fence, AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering,
};
use std::sync::Mutex;

use memmap2::{MmapOptions, MmapRaw};

use crate::error::ReadError;
use crate::protocol::{self, DARK, HEALTHY};

/// Slots per registry chunk.
const CHUNK_SLOTS: usize = 1024;
/// Chunks the registry can grow to.
const MAX_CHUNKS: usize = 64;
/// The most files one process can have mapped by readers at once
/// (64 chunks of 1024 slots: 65,536). Opening one more [`Reader`]
/// fails with [`ReadError::TooManyMappings`] until one is dropped.
///
/// [`Reader`]: crate::Reader
pub const MAX_MAPPINGS: usize = MAX_CHUNKS * CHUNK_SLOTS;

/// Installs the process-wide SIGBUS handler that readers need, so that a
/// stats file truncated while mapped reads as
/// [`ReadError::Truncated`](crate::ReadError::Truncated) instead of killing
/// the process.
///
/// Call it once at the start of any program that reads stats files, before
/// [`Reader::open`](crate::Reader::open) or [`read_file`](crate::read_file),
/// which fail with [`ReadError::NoSigbusGuard`] until it has been called.
/// Calling it again, from any thread, does nothing. A writer calls it
/// itself when it maps its first stats file: the guard also keeps a writer
/// alive when another process truncates its file (spec §6.9).
///
/// The handler only handles faults inside reader and writer mappings. Any other SIGBUS
/// goes to the action that was installed before: a handler function is
/// called with its own flags (`SA_SIGINFO` or not, `SA_NODEFER`,
/// `SA_RESETHAND`) and with its `sa_mask` blocked; the default action still
/// kills the process by SIGBUS. A handler that other code installs *after*
/// this call replaces the guard, so it must pass on the faults it does not
/// handle, or readers and writers lose their protection.
///
/// # Errors
///
/// The error of `sigaction(2)`, should the system refuse to read or set the
/// action for SIGBUS.
pub fn install_sigbus_guard() -> io::Result<()> {
    static LOCK: Mutex<()> = Mutex::new(());
    // Acquire: pairs with the Release below, so a caller that sees the guard
    // installed also sees everything the installation wrote.
    if INSTALLED.load(Ordering::Acquire) {
        return Ok(());
    }
    let _lock = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    // Relaxed: the lock orders this against the installing thread.
    if INSTALLED.load(Ordering::Relaxed) {
        return Ok(());
    }
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if page > 0 {
        // Relaxed: published to the handler by the Release store of PREVIOUS.
        PAGE_SIZE.store(page as usize, Ordering::Relaxed);
    }

    // Save the action in place first, then publish it, then install ours:
    // the handler must never run before it knows where to pass faults on.
    // SAFETY: all-zero bytes are a valid `sigaction` (SIG_DFL, no flags).
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a null `act` only reads the current action into `old`, a
    // valid, writable `sigaction`.
    if unsafe { libc::sigaction(libc::SIGBUS, ptr::null(), &mut old) } != 0 {
        return Err(sigaction_error("read"));
    }
    // Never freed: the handler may read it at any time from now on. (Only a
    // failed installation below, then retried, leaks a previous copy.)
    let old = Box::into_raw(Box::new(old));
    // Release: the handler Acquire-loads this pointer, so it sees the saved
    // action and the page size, before the handler can be installed below.
    PREVIOUS.store(old, Ordering::Release);

    // SAFETY: all-zero bytes are a valid `sigaction`; the fields used are set.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = on_sigbus as *const () as libc::sighandler_t;
    action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
    // SAFETY:
    // - `action.sa_mask` is a valid `sigset_t` to initialise.
    // - `action` is fully initialised, and `on_sigbus` has the signature
    //   SA_SIGINFO requires; a null `oldact` is allowed.
    let res = unsafe {
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGBUS, &action, ptr::null_mut())
    };
    if res != 0 {
        return Err(sigaction_error("set"));
    }
    // Release: pairs with the Acquire in `guard_installed`.
    INSTALLED.store(true, Ordering::Release);
    Ok(())
}

fn sigaction_error(what: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(
        e.kind(),
        format!(
            "cannot install the SIGBUS guard: sigaction failed to {what} the SIGBUS action: {e}"
        ),
    )
}

/// Fails with [`ReadError::NoSigbusGuard`] for `path` unless
/// [`install_sigbus_guard`] has been called.
pub(crate) fn check_guard(path: &Path) -> Result<(), ReadError> {
    if guard_installed() {
        Ok(())
    } else {
        Err(ReadError::NoSigbusGuard {
            path: path.to_owned(),
        })
    }
}

fn guard_installed() -> bool {
    // Acquire: pairs with the Release in `install_sigbus_guard`.
    INSTALLED.load(Ordering::Acquire)
}

/// Whether the guard has been installed.
static INSTALLED: AtomicBool = AtomicBool::new(false);
/// The SIGBUS action from before the guard: written once, before the
/// handler is installed, and never freed.
static PREVIOUS: AtomicPtr<libc::sigaction> = AtomicPtr::new(ptr::null_mut());
/// Set the first time a previous `SA_RESETHAND` handler is called: from
/// then on, faults not ours get the default action, as they would have.
static RESET_FIRED: AtomicBool = AtomicBool::new(false);
static PAGE_SIZE: AtomicUsize = AtomicUsize::new(4096);

// ---------------------------------------------------------------- mapping --

/// Why a file could not be mapped for reading.
#[derive(Debug)]
pub(crate) enum MapError {
    /// [`install_sigbus_guard`] was not called.
    NoGuard,
    /// [`MAX_MAPPINGS`] files are mapped already.
    Full,
    /// mmap failed.
    Io(io::Error),
}

impl MapError {
    /// The reader's error for `path`.
    pub(crate) fn into_read_error(self, path: &Path) -> ReadError {
        let path = path.to_owned();
        match self {
            MapError::NoGuard => ReadError::NoSigbusGuard { path },
            MapError::Full => ReadError::TooManyMappings {
                path,
                limit: MAX_MAPPINGS,
            },
            MapError::Io(source) => ReadError::Io { path, source },
        }
    }
}

/// A read-only mapping of a file that another process may shrink at any
/// moment. Loads that would raise SIGBUS read zero instead, and the mapping
/// remembers that it faulted (see [`ReadMap::faulted`]).
pub(crate) struct ReadMap {
    map: MmapRaw,
    slot: &'static Slot,
    index: usize,
}

impl ReadMap {
    /// Maps the first `len` bytes of `file` read-only and registers the
    /// mapping with the SIGBUS guard, which must be installed. `len` must be
    /// a multiple of 8 and not zero.
    pub(crate) fn new(file: &File, len: usize) -> Result<ReadMap, MapError> {
        assert!(len > 0 && len.is_multiple_of(8));
        if !guard_installed() {
            return Err(MapError::NoGuard);
        }
        let map = MmapOptions::new()
            .len(len)
            .map_raw_read_only(file)
            .map_err(MapError::Io)?;
        let index = claim().ok_or(MapError::Full)?;
        let slot = slot(index);
        slot.publish(map.as_ptr() as usize, map.len(), false);
        Ok(ReadMap { map, slot, index })
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
        // - If the file shrank, the access raises SIGBUS, which the guard
        //   (installed, or `new` would have failed) turns into a read of a
        //   zero page and records in this map's slot.
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
        // Acquire: pairs with the handler's Release store, after our loads.
        self.slot.faulted.load(Ordering::Acquire)
    }
}

impl Drop for ReadMap {
    fn drop(&mut self) {
        // The slot stops matching before the mapping goes (the `map` field
        // is dropped, unmapping it, after this body).
        self.slot.retract();
        release(self.index);
    }
}

// ----------------------------------------------------------- writer side --

/// A writer's shared mapping registered with the guard, so that a store
/// into it after another process truncated its file lands in private
/// memory instead of killing the writer (spec §6.9).
///
/// On such a fault the handler maps private anonymous memory over the whole
/// range (all zeros: what the file held is gone with the truncation),
/// marks the range dark and returns, so the store is retried and lands
/// there. The writer's cold paths find dark ranges through
/// [`dark_events`] and give them a new file.
pub(crate) struct WriterRange {
    slot: &'static Slot,
    index: usize,
}

impl WriterRange {
    /// Registers the mapping at `start..start + len`, installing the guard
    /// first if it is not installed yet.
    pub(crate) fn new(start: usize, len: usize) -> io::Result<WriterRange> {
        install_sigbus_guard()?;
        let index = claim().ok_or_else(|| {
            io::Error::other(format!(
                "{MAX_MAPPINGS} files mapped already; cannot guard one more against truncation"
            ))
        })?;
        let slot = slot(index);
        slot.publish(start, len, true);
        Ok(WriterRange { slot, index })
    }

    /// Whether the range is private memory because its file was truncated.
    pub(crate) fn is_dark(&self) -> bool {
        // Acquire: pairs with the handler's Release store of DARK.
        self.slot.dark.load(Ordering::Acquire) == DARK
    }

    /// Marks the range backed by a file again, after it was mapped over.
    pub(crate) fn healed(&self) {
        // Release: a handler that sees HEALTHY again sees the new mapping
        // (a fault from then on is a truncation of the new file).
        self.slot.dark.store(HEALTHY, Ordering::Release);
    }
}

impl Drop for WriterRange {
    fn drop(&mut self) {
        self.slot.retract();
        release(self.index);
    }
}

/// How many writer ranges went dark since the process started.
pub(crate) fn dark_events() -> u64 {
    // Relaxed: a hint to look; the ranges' own states are acquired.
    DARK_EVENTS.load(Ordering::Relaxed)
}

thread_local! {
    /// The allocation lock, held by the forking thread across `fork`.
    static ALLOC_HELD: std::cell::RefCell<Option<std::sync::MutexGuard<'static, Alloc>>> =
        const { std::cell::RefCell::new(None) };
}

/// Takes the registry's allocation lock before `fork`, so that the child
/// never inherits it held by a thread that does not exist there.
pub(crate) fn hold_alloc_for_fork() {
    let guard = ALLOC.lock().unwrap_or_else(|e| e.into_inner());
    let _ = ALLOC_HELD.try_with(|h| *h.borrow_mut() = Some(guard));
}

/// Releases what [`hold_alloc_for_fork`] took, in the parent and the child.
pub(crate) fn release_alloc_after_fork() {
    let _ = ALLOC_HELD.try_with(|h| drop(h.borrow_mut().take()));
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
struct Slot {
    seq: AtomicU64,
    /// Address of the first byte, 0 while the slot is free.
    start: AtomicUsize,
    len: AtomicUsize,
    /// Whether the range is a writer's mapping (under the sequence lock).
    writer: AtomicBool,
    faulted: AtomicBool,
    /// A writer range's repair state: `HEALTHY`, `DARKENING` while the
    /// handler maps private memory over it, `DARK` after (see
    /// `protocol::darken`).
    dark: AtomicU32,
}

/// How many writer ranges went dark since the process started: bumped by
/// the handler, read by the writer's cold paths to find them.
static DARK_EVENTS: AtomicU64 = AtomicU64::new(0);

impl Slot {
    #[allow(clippy::declare_interior_mutable_const)]
    const EMPTY: Slot = Slot {
        seq: AtomicU64::new(0),
        start: AtomicUsize::new(0),
        len: AtomicUsize::new(0),
        writer: AtomicBool::new(false),
        faulted: AtomicBool::new(false),
        dark: AtomicU32::new(HEALTHY),
    };

    /// Sets the range; only the thread that claimed the slot calls this.
    fn publish(&self, start: usize, len: usize, writer: bool) {
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
    fn retract(&self) {
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
    fn range(&self) -> Option<(usize, usize, bool)> {
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

type Chunk = [Slot; CHUNK_SLOTS];

/// Registry chunks, allocated in order and never freed; null past the last.
static CHUNKS: [AtomicPtr<Chunk>; MAX_CHUNKS] =
    [const { AtomicPtr::new(ptr::null_mut()) }; MAX_CHUNKS];

/// Which slots are free. Never touched by the signal handler.
struct Alloc {
    /// Released slots, reused first.
    free: Vec<usize>,
    /// Slots below this have been handed out at least once.
    used: usize,
}

static ALLOC: Mutex<Alloc> = Mutex::new(Alloc {
    free: Vec::new(),
    used: 0,
});

/// Claims a free slot, allocating a chunk if needed; `None` when all
/// [`MAX_MAPPINGS`] are taken.
fn claim() -> Option<usize> {
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

fn release(i: usize) {
    let mut alloc = ALLOC.lock().unwrap_or_else(|e| e.into_inner());
    alloc.free.push(i);
}

/// Slot `i`, which `claim` has handed out, so its chunk exists.
fn slot(i: usize) -> &'static Slot {
    // Acquire: pairs with the Release that published the chunk.
    let chunk = CHUNKS[i / CHUNK_SLOTS].load(Ordering::Acquire);
    assert!(!chunk.is_null(), "slot {i} has no chunk");
    // SAFETY: a non-null chunk pointer comes from `Box::leak` in `claim`,
    // so it points at an initialised chunk that lives forever and is only
    // accessed through shared references (its fields are atomics).
    unsafe { &(*chunk)[i % CHUNK_SLOTS] }
}

// ---------------------------------------------------------------- handler --

/// SIGBUS handler: saves errno, handles the fault, restores errno.
extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: __errno_location has no preconditions; it returns this
    // thread's errno, valid for as long as the thread lives.
    let errno = unsafe { libc::__errno_location() };
    // SAFETY: `errno` is valid and only this thread uses it.
    let saved = unsafe { *errno };
    handle(sig, info, ctx);
    // SAFETY: as above.
    unsafe { *errno = saved };
}

/// For a fault inside a registered reader mapping (the file shrank under
/// it), maps a zero page over the faulting page and records the fault, so
/// the load is retried and reads zero. Anything else goes to the action
/// that was installed before the guard.
fn handle(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo to SA_SIGINFO handlers;
    // `si_addr` is only meaningful (and only used) for kernel faults.
    let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    // BUS_ADRERR is what a load past the end of a mapped file raises; a
    // SIGBUS sent by kill(2) (code <= 0) has no address to repair.
    if code == libc::BUS_ADRERR && repair(addr) {
        return;
    }
    forward(sig, info, ctx, code > 0);
}

/// Maps a zero page over `addr` if it lies in a reader mapping, and marks
/// that mapping faulted. Lock-free: atomic loads only.
fn repair(addr: usize) -> bool {
    // Relaxed: published by the Release store of PREVIOUS, which the
    // handler could only be installed after.
    let page_size = PAGE_SIZE.load(Ordering::Relaxed);
    for chunk in &CHUNKS {
        // Acquire: pairs with the Release in `claim`.
        let chunk = chunk.load(Ordering::Acquire);
        if chunk.is_null() {
            break;
        }
        // SAFETY: as in `slot`: a leaked, initialised, immortal chunk.
        let chunk = unsafe { &*chunk };
        for slot in chunk {
            let Some((start, len, writer)) = slot.range() else {
                continue;
            };
            if addr < start || addr - start >= len {
                continue;
            }
            if writer {
                return darken(slot, start, len);
            }
            let page = addr & !(page_size - 1);
            // SAFETY:
            // - `page` is page-aligned and lies inside a live read-only
            //   mapping made for a reader: live mappings do not overlap, and
            //   the faulting one stays mapped until its loads are done.
            // - Replacing that page with zeros changes only what that reader
            //   sees, and the reader discards what it read once it sees
            //   `faulted`.
            // - mmap is a plain system call, safe to make in a handler.
            let res = unsafe {
                libc::mmap(
                    page as *mut libc::c_void,
                    page_size,
                    libc::PROT_READ,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                    -1,
                    0,
                )
            };
            if res == libc::MAP_FAILED {
                return false;
            }
            // Release: the reader acquires this after its loads.
            slot.faulted.store(true, Ordering::Release);
            return true;
        }
    }
    false
}

/// A fault inside the writer range `start..start + len`: its file was
/// truncated. The first thread to fault maps private zeroed memory over the
/// whole range and marks it dark; others wait for that, then retry
/// (`protocol::darken`, modelled with loom). Lock-free but for that wait,
/// which is one system call long.
fn darken(slot: &Slot, start: usize, len: usize) -> bool {
    let map = || {
        // SAFETY:
        // - `start..start + len` is a live writer mapping made by this
        //   process (registered until it is unmapped), page-aligned.
        // - Replacing it with private memory of the same size keeps every
        //   handle's pointer valid; only this process's stores land there
        //   from now on, which is the point.
        // - mmap is a plain system call, safe to make in a handler.
        let res = unsafe {
            libc::mmap(
                start as *mut libc::c_void,
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if res == libc::MAP_FAILED {
            return false;
        }
        // Relaxed: a counter; the Release store of DARK publishes it.
        DARK_EVENTS.fetch_add(1, Ordering::Relaxed);
        true
    };
    // SAFETY: sched_yield has no preconditions and is a plain system call.
    let pause = || unsafe {
        libc::sched_yield();
    };
    protocol::darken(&slot.dark, map, pause)
}

/// Hands a fault that is not ours to the action from before the guard.
/// `from_kernel`: the fault came from an instruction, which faults again
/// when the handler returns; otherwise someone sent the signal.
fn forward(
    sig: libc::c_int,
    info: *mut libc::siginfo_t,
    ctx: *mut libc::c_void,
    from_kernel: bool,
) {
    // Acquire: pairs with the Release in `install_sigbus_guard`.
    let prev = PREVIOUS.load(Ordering::Acquire);
    // SAFETY: PREVIOUS is set before the handler is installed, to a leaked
    // `sigaction` that is never written again; null cannot happen, but is
    // handled as SIG_DFL.
    let prev = unsafe { prev.as_ref() };
    let handler = prev.map_or(libc::SIG_DFL, |p| p.sa_sigaction);
    let flags = prev.map_or(0, |p| p.sa_flags);

    if handler == libc::SIG_IGN {
        if from_kernel {
            // Back to SIG_IGN: the kernel does not ignore a fault, it kills
            // the process, as it would have without us.
            restore(prev);
        }
        return;
    }
    let one_shot_spent = flags & libc::SA_RESETHAND != 0
        // Relaxed: only this flag is exchanged; first caller wins.
        && RESET_FIRED.swap(true, Ordering::Relaxed);
    if handler == libc::SIG_DFL || one_shot_spent {
        // The default action: put it back and let the fault happen again,
        // or, for a sent signal, send it again (it stays blocked, hence
        // pending, until this handler returns).
        restore(None);
        if !from_kernel {
            // SAFETY: raise is async-signal-safe.
            unsafe { libc::raise(sig) };
        }
        return;
    }
    // A handler function implies a saved action (no panic in a handler).
    if let Some(prev) = prev {
        call_previous(prev, sig, info, ctx);
    }
}

/// Installs `action`, or SIG_DFL if `None`, for SIGBUS.
fn restore(action: Option<&libc::sigaction>) {
    // SAFETY: all-zero bytes are a valid `sigaction`: SIG_DFL, no flags,
    // an empty mask.
    let dfl: libc::sigaction = unsafe { std::mem::zeroed() };
    let action = action.unwrap_or(&dfl);
    // SAFETY: `action` is a valid `sigaction`; sigaction is
    // async-signal-safe.
    unsafe { libc::sigaction(libc::SIGBUS, action, ptr::null_mut()) };
}

/// Calls the previous handler function as the kernel would have: with its
/// `sa_mask` blocked, SIGBUS itself unblocked if it asked for SA_NODEFER,
/// and with one or three arguments as SA_SIGINFO says.
fn call_previous(
    prev: &libc::sigaction,
    sig: libc::c_int,
    info: *mut libc::siginfo_t,
    ctx: *mut libc::c_void,
) {
    // SAFETY: all-zero bytes are a valid `sigset_t`, overwritten below.
    let mut saved: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY:
    // - `prev.sa_mask` is a valid signal set from the kernel; `saved` is a
    //   valid, writable one. pthread_sigmask is a thin wrapper around the
    //   rt_sigprocmask system call, safe in a handler.
    // - SIGBUS is blocked while this handler runs (it was installed without
    //   SA_NODEFER); with SA_NODEFER the previous handler expects it not to
    //   be, unless its own mask blocks it.
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, &prev.sa_mask, &mut saved);
        if prev.sa_flags & libc::SA_NODEFER != 0 && libc::sigismember(&prev.sa_mask, sig) != 1 {
            let mut only = std::mem::zeroed();
            libc::sigemptyset(&mut only);
            libc::sigaddset(&mut only, sig);
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &only, ptr::null_mut());
        }
    }
    let handler = prev.sa_sigaction;
    if prev.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: a handler installed with SA_SIGINFO has this signature,
        // and gets the arguments the kernel gave us.
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { std::mem::transmute(handler) };
        f(sig, info, ctx);
    } else {
        // SAFETY: a handler installed without SA_SIGINFO has this signature.
        let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(handler) };
        f(sig);
    }
    // SAFETY: `saved` is the mask from before, as filled in above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &saved, ptr::null_mut()) };
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    /// Held by tests that map files (readers' or writers'), so
    /// `a_full_registry_refuses_more` does not starve them.
    static MAPPING: Mutex<()> = Mutex::new(());

    pub(crate) fn mapping() -> std::sync::MutexGuard<'static, ()> {
        MAPPING.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[test]
    fn shrinking_file_reads_zero_and_reports_fault() {
        let _m = mapping();
        install_sigbus_guard().unwrap();
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
    fn slots_are_reused() {
        let _m = mapping();
        install_sigbus_guard().unwrap();
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&[1; 8]).unwrap();
        let used = || ALLOC.lock().unwrap().used;
        let before = used();
        for _ in 0..3 * CHUNK_SLOTS {
            let map = ReadMap::new(&f, 8).unwrap();
            assert_eq!(map.load(0), 0x0101_0101_0101_0101);
        }
        assert!(used() <= before + 1, "{before} slots used, then {}", used());
    }

    #[test]
    fn a_full_registry_refuses_more() {
        let _m = mapping();
        install_sigbus_guard().unwrap();
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&[1; 8]).unwrap();
        let taken: Vec<usize> = std::iter::from_fn(claim).collect();
        let held = ALLOC.lock().unwrap().used;
        assert_eq!(held, MAX_MAPPINGS);
        assert!(matches!(ReadMap::new(&f, 8), Err(MapError::Full)));
        let e = MapError::Full.into_read_error(Path::new("x.mmstats"));
        assert!(e.to_string().contains("65536 files mapped"), "{e}");
        for i in taken {
            release(i);
        }
        assert!(ReadMap::new(&f, 8).is_ok());
    }

    #[test]
    fn a_slot_reads_back_what_was_published() {
        let slot = Slot::EMPTY;
        assert_eq!(slot.range(), None);
        slot.publish(0x1000, 24, false);
        assert_eq!(slot.range(), Some((0x1000, 24, false)));
        slot.retract();
        assert_eq!(slot.range(), None);
        assert_eq!(slot.seq.load(Ordering::Relaxed), 4);
    }
}
