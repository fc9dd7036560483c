//! The two kinds of mapping the guard knows: a reader's read-only
//! [`ReadMap`] and a writer's [`WriterRange`].

use std::fmt;
use std::fs::File;
use std::io;
use std::sync::atomic::{fence, AtomicU64, Ordering};

use memmap2::{MmapOptions, MmapRaw};

use super::slots::{claim, release, slot, Slot};
use super::{guard_installed, install_sigbus_guard, MAX_MAPPINGS};
use crate::protocol::{self, DARK, DARKENING, HEALTHY};

// ---------------------------------------------------------------- mapping --

/// Why a file could not be mapped for reading. A reader names the file
/// when it reports one (`mmstats-read` turns each into its `ReadError`).
#[derive(Debug)]
#[non_exhaustive]
pub enum MapError {
    /// [`install_sigbus_guard`] was not called: call it once at program
    /// start, before mapping any file.
    NoGuard,
    /// [`MAX_MAPPINGS`] files are mapped already: drop a [`ReadMap`] first.
    Full,
    /// `mmap(2)` failed.
    Io(io::Error),
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MapError::NoGuard => f.write_str(
                "the SIGBUS guard is not installed; call mmstats::install_sigbus_guard() at program start",
            ),
            MapError::Full => write!(
                f,
                "{MAX_MAPPINGS} files mapped already; drop a reader before opening another"
            ),
            MapError::Io(e) => write!(f, "cannot map the file: {e}"),
        }
    }
}

impl std::error::Error for MapError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            MapError::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// A read-only mapping of a file that another process may shrink at any
/// moment. Loads that would raise SIGBUS read zero instead, and the mapping
/// remembers that it faulted (see [`ReadMap::faulted`]).
///
/// This is how a reader maps a stats file: every access is an aligned
/// 8-byte relaxed atomic load through a raw pointer, never a `&[u8]` over
/// memory another process writes.
pub struct ReadMap {
    map: MmapRaw,
    slot: &'static Slot,
    index: usize,
}

impl ReadMap {
    /// Maps the first `len` bytes of `file` read-only and registers the
    /// mapping with the SIGBUS guard, which must be installed. `len` must be
    /// a multiple of 8 and not zero.
    ///
    /// # Errors
    ///
    /// [`MapError`] says why: no guard, a full registry, or `mmap` failed.
    ///
    /// # Panics
    ///
    /// If `len` is zero or not a multiple of 8.
    pub fn new(file: &File, len: usize) -> Result<ReadMap, MapError> {
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
    #[allow(clippy::len_without_is_empty)] // never empty: `new` refuses 0
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Loads the word at byte offset `off` (8-aligned, in range).
    ///
    /// Always a relaxed load: the mapping is read-only, and Rust only
    /// defines relaxed atomic loads of at most 8 bytes on read-only memory
    /// (see "Atomic accesses to read-only memory" in `std::sync::atomic`).
    /// Callers that need acquire ordering put a `fence(Acquire)` after it.
    #[inline]
    pub fn load(&self, off: usize) -> u64 {
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
    pub fn copy(&self, off: usize, len: usize, out: &mut Vec<u8>) {
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
    pub fn faulted(&self) -> bool {
        // Acquire: pairs with the handler's Release store, after our loads.
        self.slot.faulted.load(Ordering::Acquire)
    }
}

impl fmt::Debug for ReadMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the address: Debug output must not leak pointers.
        f.debug_struct("ReadMap")
            .field("len", &self.len())
            .field("faulted", &self.faulted())
            .finish()
    }
}

impl protocol::Load for ReadMap {
    #[inline(always)]
    fn load(&self, off: usize) -> u64 {
        ReadMap::load(self, off)
    }

    #[inline(always)]
    fn fence_acquire(&self) {
        fence(Ordering::Acquire);
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

    /// In a child made by `fork`, whose only thread runs this: a range the
    /// parent's SIGBUS handler was darkening on another thread (a thread
    /// the child does not have) is marked healthy again, so a fault in it
    /// darkens it here, instead of waiting forever for that thread.
    /// Whichever memory is over the range, that is right: the truncated
    /// file faults and is darkened; private memory never faults.
    pub(crate) fn reset_in_child(&self) {
        // Relaxed: the only thread of the process.
        if self.slot.dark.load(Ordering::Relaxed) == DARKENING {
            // Relaxed: as above.
            self.slot.dark.store(HEALTHY, Ordering::Relaxed);
        }
    }

    /// Sets the range's state, as a handler on another thread would.
    #[cfg(test)]
    pub(crate) fn set_state(&self, state: u32) {
        // Relaxed: a test, on one thread.
        self.slot.dark.store(state, Ordering::Relaxed);
    }
}

impl Drop for WriterRange {
    fn drop(&mut self) {
        self.slot.retract();
        release(self.index);
    }
}
