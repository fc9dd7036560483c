//! The writer's `unsafe`: shared memory as atomic words, the writer's
//! backing store, and the two raw system calls std does not wrap. (The
//! reader's guarded mapping is in `sigbus`, the only other module with
//! `unsafe`.)
//!
//! Memory another process writes is never seen through `&[u8]` or `&T` of a
//! plain type: every access is an atomic load or store of an aligned `u64`
//! through a raw pointer, as the format (one writer, 8-byte words) allows.

use std::cell::Cell;
use std::fs::File;
use std::io;
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use memmap2::{MmapOptions, MmapRaw};

/// Where a writer's values live: a shared mapping of its stats file, or
/// process-private memory when the file could not be created.
enum Memory {
    File {
        map: MmapRaw,
        /// Kept open so the writer's `flock` lives as long as the mapping.
        _file: File,
    },
    Private(Box<[AtomicU64]>),
}

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
}

impl Backing {
    /// Maps `len` bytes of `file` (opened read-write, already `len` long)
    /// shared and writable.
    pub(crate) fn map_file(
        file: File,
        len: usize,
        state_off: usize,
        exited_code: u64,
    ) -> io::Result<Backing> {
        assert!(len.is_multiple_of(8) && state_off.is_multiple_of(8) && state_off < len);
        let map = MmapOptions::new().len(len).map_raw(&file)?;
        Ok(Backing {
            mem: Memory::File { map, _file: file },
            state_word: state_off / 8,
            exited_code,
            pid: std::process::id(),
        })
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
        }
    }

    fn base(&self) -> (NonNull<AtomicU64>, usize) {
        match &self.mem {
            Memory::File { map, .. } => {
                // mmap returns page-aligned, non-null memory.
                let ptr = NonNull::new(map.as_mut_ptr().cast::<AtomicU64>()).expect("mmap");
                (ptr, map.len() / 8)
            }
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
        let (ptr, len) = self.base();
        assert!(
            off.is_multiple_of(8) && off / 8 < len,
            "word offset {off} out of range"
        );
        // SAFETY:
        // - `ptr` points at `len` contiguous, 8-aligned `AtomicU64`s that live as
        //   long as `self` (the mapping or the boxed slice), and `off / 8 < len`.
        // - Other processes only ever access this memory as aligned 8-byte atomics.
        unsafe { &*ptr.as_ptr().add(off / 8) }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn only_the_creating_process_marks_a_file_exited() {
        use std::io::{Read, Seek};
        let state_off = 8;
        for (pid_delta, expected) in [(0u32, 2u64), (1, 0)] {
            let mut f = tempfile::tempfile().unwrap();
            f.write_all(&[0; 16]).unwrap();
            let mut backing = Backing::map_file(f.try_clone().unwrap(), 16, state_off, 2).unwrap();
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
    fn words_are_send() {
        // Not Sync: proven by the compile-fail tests in tests/ui.

        fn send<T: Send>() {}
        send::<Words>();
    }
}
