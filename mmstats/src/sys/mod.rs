//! The writer's `unsafe`: shared memory as atomic words, the writer's
//! backing store, the raw system calls std does not wrap, and the thread's
//! CPU clock (`cpu.rs`). (The reader's guarded mapping is in `sigbus`, the
//! only other module with `unsafe`.)
//!
//! Memory another process writes is never seen through `&[u8]` or `&T` of a
//! plain type: every access is an atomic load or store of an aligned `u64`
//! through a raw pointer, as the format (one writer, 8-byte words) allows.

use std::cell::Cell;
use std::fs::File;
use std::io;
use std::marker::PhantomData;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use memmap2::{MmapOptions, MmapRaw};

use crate::guard::WriterRange;

mod cpu;
pub(crate) mod held;

pub use cpu::thread_cpu_time;

// ------------------------------------------------------------- writer side --

/// A writable shared mapping of a stats file. Its descriptor is closed as
/// soon as it is mapped: a mapping stays valid without it, and a process
/// with thousands of writer threads must not spend a descriptor on each.
///
/// The address range never changes while the map lives, but what backs it
/// may: a new file after a `fork` (the child's own) or after the file was
/// truncated, or private memory (see `guard::WriterRange`).
pub(crate) struct FileMap {
    /// Dropped first: the guard forgets the range before it is unmapped.
    range: WriterRange,
    map: MmapRaw,
    /// The process whose file backs the range (a forked child inherits the
    /// map; it becomes the child's once re-homed).
    owner: AtomicU32,
}

impl FileMap {
    /// Maps the first `len` bytes of `file` (opened read-write, already
    /// `len` long) shared and writable, guarded against the file being
    /// truncated. `file` may be closed afterwards.
    pub(crate) fn new(file: &File, len: usize) -> io::Result<FileMap> {
        assert!(len.is_multiple_of(8) && len > 0);
        let map = MmapOptions::new().len(len).map_raw(file)?;
        let range = WriterRange::new(map.as_ptr() as usize, map.len())?;
        Ok(FileMap {
            range,
            map,
            owner: AtomicU32::new(std::process::id()),
        })
    }

    /// Maps `file` (read-write, at least as long as the map) shared over
    /// this map's range, in place: every handle stores into `file` from now
    /// on. Values stored into the old backing after the caller copied them
    /// are lost, so the caller copies them with no other writer running
    /// (a forked child) or accepts that loss (a truncated file).
    pub(crate) fn remap_shared(&self, file: &File) -> io::Result<()> {
        // `file` is open read-write and at least as long as the map.
        self.map_over(libc::MAP_SHARED, file.as_raw_fd())?;
        self.range.healed();
        Ok(())
    }

    /// Maps new memory (`flags`, `fd` as `mmap` takes them) over this map's
    /// range, in place, with the same length and protection.
    fn map_over(&self, flags: libc::c_int, fd: libc::c_int) -> io::Result<()> {
        let (ptr, len) = (self.map.as_mut_ptr(), self.map.len());
        // SAFETY:
        // - `ptr..ptr + len` is this map's own mapping, page-aligned, and
        //   stays mapped (MAP_FIXED replaces it atomically, never leaving a
        //   hole another thread could fault on).
        // - The callers give a file open read-write and at least `len`
        //   long, or anonymous memory (`fd` -1), so the new mapping is
        //   valid memory of the same size and protection.
        // - Handles only access it as aligned atomic words, as before.
        let res = unsafe {
            libc::mmap(
                ptr.cast(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags | libc::MAP_FIXED,
                fd,
                0,
            )
        };
        if res == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Puts process-private memory holding the current values over this
    /// map's range, so no store reaches the file again. Only for a forked
    /// child, where no other thread stores meanwhile.
    pub(crate) fn remap_private(&self) -> io::Result<()> {
        let words: Vec<u64> = (0..self.map.len() / 8)
            // Relaxed: the only thread of the process reads its own words.
            .map(|i| self.word(i * 8).load(Ordering::Relaxed))
            .collect();
        self.map_over(libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1)?;
        for (i, w) in words.into_iter().enumerate() {
            // Relaxed: private memory of the only thread.
            self.word(i * 8).store(w, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Whether the range is private memory because its file was truncated.
    pub(crate) fn is_dark(&self) -> bool {
        self.range.is_dark()
    }

    /// See `WriterRange::reset_in_child`.
    pub(crate) fn reset_in_child(&self) {
        self.range.reset_in_child();
    }

    /// See `WriterRange::set_state`.
    #[cfg(test)]
    pub(crate) fn set_dark_state(&self, state: u32) {
        self.range.set_state(state);
    }

    /// The process whose file backs the range.
    pub(crate) fn owner(&self) -> u32 {
        // Relaxed: written only in a forked child's single thread, before
        // any other thread of the child exists.
        self.owner.load(Ordering::Relaxed)
    }

    /// Makes the calling process the owner, once the range is its own.
    pub(crate) fn set_owner(&self, pid: u32) {
        // Relaxed: see `owner`.
        self.owner.store(pid, Ordering::Relaxed);
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
    /// The process that made this backing (private memory; a file's owner
    /// is its map's).
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

    /// The file mapping behind this backing, `None` for private memory.
    pub(crate) fn file_map(&self) -> Option<&FileMap> {
        match &self.mem {
            Memory::File(map) => Some(map),
            Memory::Private(_) => None,
        }
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
        let owner = match &self.mem {
            Memory::File(map) => map.owner(),
            Memory::Private(_) => self.pid,
        };
        if std::process::id() != owner {
            // A child made by `fork` dropping a copy it never made its own
            // (raw `clone` or `vfork` bypass the fork handlers): the file
            // is the parent's.
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

/// Registers `f` to run at a normal process exit (`exit`, a return from
/// `main`), as `atexit(3)` does. `f` must not unwind: an `extern "C" fn`
/// that panics aborts the process instead.
pub(crate) fn at_exit(f: extern "C" fn()) {
    // SAFETY: `f` is a plain `extern "C" fn()` with no arguments, which is
    // what atexit takes; a panic inside it cannot unwind across the
    // boundary (Rust aborts on unwinding out of an `extern "C"` function).
    // A failure (no room for more handlers) only loses the clean marking.
    unsafe {
        libc::atexit(f);
    }
}

/// Registers fork handlers, as `pthread_atfork(3)` does: `prepare` runs in
/// the forking thread before `fork`, `parent` and `child` after it in each
/// process. They must not unwind (see [`at_exit`]).
pub(crate) fn at_fork(prepare: extern "C" fn(), parent: extern "C" fn(), child: extern "C" fn()) {
    // SAFETY: three plain `extern "C" fn()`s, which is what pthread_atfork
    // takes; they cannot unwind across the boundary. A failure (ENOMEM)
    // only loses the fork handling: the child then behaves as before it.
    unsafe {
        libc::pthread_atfork(Some(prepare), Some(parent), Some(child));
    }
}

/// The effective user id of this process.
pub fn geteuid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The calling thread's kernel thread id.
pub(crate) fn gettid() -> u32 {
    // SAFETY: gettid has no preconditions and cannot fail.
    let tid = unsafe { libc::gettid() };
    tid as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Counter, FieldDef, Options, Schema, StatsFile};
    use std::io::Write;

    #[test]
    fn only_the_creating_process_marks_a_file_exited() {
        use std::io::{Read, Seek};
        let _m = crate::guard::tests::mapping();
        let state_off = 8;
        for (pid_delta, expected) in [(0u32, 2u64), (1, 0)] {
            let mut f = tempfile::tempfile().unwrap();
            f.write_all(&[0; 16]).unwrap();
            let map = Arc::new(FileMap::new(&f, 16).unwrap());
            // As if a forked child (another pid) dropped its inherited copy.
            map.set_owner(map.owner() + pid_delta);
            drop(Backing::file(map, state_off, 2, Box::new(drop)));
            let mut bytes = [0u8; 16];
            f.rewind().unwrap();
            f.read_exact(&mut bytes).unwrap();
            let state = u64::from_le_bytes(bytes[8..16].try_into().unwrap());
            assert_eq!(state, expected, "pid delta {pid_delta}");
        }
    }

    /// A fork while another thread's SIGBUS handler is darkening a
    /// truncated range (claimed, not yet mapped over): the child, which
    /// does not have that thread, faults in the range as it makes its own
    /// file, darkens it itself and goes on, instead of waiting forever.
    #[test]
    fn a_fork_during_a_darkening_does_not_hang_the_child() {
        let _m = crate::guard::tests::mapping();
        crate::install_sigbus_guard().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut schema = Schema::new("ForkDarkening");
        schema.push(FieldDef::counter("a"));
        let options = Options::new().dir(dir.path());
        let mut file = StatsFile::create(&schema, &options).unwrap();
        let a: Counter = file.take("a").unwrap();
        a.add(3);
        let path = file.path().unwrap().to_owned();
        crate::registry::tests::truncate(&path);
        // What a handler on another thread leaves between its claim and
        // its mapping: DARKENING over the still-shared, truncated file.
        let map = crate::registry::live_map(&path).unwrap();
        map.set_dark_state(crate::protocol::DARKENING);
        // SAFETY: the child only exits (after the fork handlers ran).
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // SAFETY: _exit has no preconditions.
            unsafe { libc::_exit(0) };
        }
        // A hung child would hang this test: a watchdog ends it instead
        // (not a timing assertion: the child takes milliseconds).
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watchdog = {
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                for _ in 0..200 {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                    // Relaxed: a flag; at worst one more round.
                    if done.load(Ordering::Relaxed) {
                        return;
                    }
                }
                // SAFETY: kill has no memory preconditions; `pid` is our
                // child, not reaped yet (`done` is set once it is).
                unsafe { libc::kill(pid, libc::SIGKILL) };
            })
        };
        let mut status = 0;
        // SAFETY: `status` is a valid out-pointer; `pid` is our child.
        let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
        // Relaxed: see the watchdog.
        done.store(true, Ordering::Relaxed);
        watchdog.join().unwrap();
        // The parent's own range, before anything can store to it (also
        // the drops of a failing assertion): its next store darkens it.
        map.set_dark_state(crate::protocol::HEALTHY);
        assert_eq!(waited, pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "the child hung in fork() (status {status})"
        );
        a.incr();
        let _ = crate::fallbacks();
    }

    #[test]
    fn words_are_send() {
        // Not Sync: proven by the compile-fail tests in tests/ui.

        fn send<T: Send>() {}
        send::<Words>();
    }
}
