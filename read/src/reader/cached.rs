//! [`Reader::snapshot_shared`]: snapshots that keep what did not change.
//!
//! A full snapshot decodes every label, help and unit string and copies
//! every histogram bucket. A reader that polls the same file again and
//! again (the aggregation layer, `mmash`) mostly finds the same table and
//! the same values. So the reader keeps its last full reading with, for
//! every field, the validated offset of its value and a *signature*: the
//! words that change whenever the value does. The next snapshot then reads
//!
//! 1. the header words: any change but none (a grown `field_count`, a new
//!    state, a reused file, or bytes a hostile writer changed) means a full,
//!    validated read again;
//! 2. the signature of each field, at the offsets the full read validated;
//!    only values whose signature changed are read again.
//!
//! If nothing changed, the same `Arc<Snapshot>` is returned, so a caller can
//! tell with `Arc::ptr_eq` that a file was idle.
//!
//! Signatures (format-spec.md §6): a counter or gauge is its own word. A
//! text value's sequence word goes up by two with every write, so an equal
//! one means no write started since the last reading. A histogram records
//! `v` by adding 1 to a bucket and then `v` to the sum (§6.4): every record
//! of `v > 0` changes the sum and every record of 0 changes bucket 0, so an
//! equal sum and bucket 0 mean nothing was recorded, unless the values
//! recorded in between add up to a multiple of 2^64 exactly. To bound even
//! that, every [`FULL_EVERY`]th snapshot of a file reads every value again.
//!
//! Safety against hostile files is that of the full read: the fast path
//! only loads words at offsets the full read checked against the mapping
//! (a writer that rewrites a published record or string after that, which
//! format-spec.md §6.5 forbids, is not noticed until the header changes,
//! but it cannot make the reader load anything outside the value area it
//! validated), and
//! it checks for truncation after every snapshot, as [`Reader::snapshot`]
//! does.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;

use super::{Reader, Snapshot, Value};
use crate::error::ReadError;
use crate::liveness;
use mmstats::format::{lock_file_name, raw, Kind};
use mmstats::guard::ReadMap;
use mmstats::hist::{HistogramSnapshot, Layout};
use mmstats::protocol;

/// Every this many snapshots of a file, every value is read again whatever
/// its signature says (see the module docs).
pub(crate) const FULL_EVERY: u32 = 64;

const HEADER_WORDS: usize = raw::HEADER_LEN / 8;
const _: () = assert!(raw::HEADER_LEN.is_multiple_of(8));

/// How to read one kept field's value, and what it was last time.
#[derive(Clone, Debug)]
pub(crate) struct Slot {
    /// Byte offset of the value, validated against the value area.
    pub(crate) off: usize,
    pub(crate) kind: Kind,
    /// Text capacity, or the histogram layout's precision.
    pub(crate) param0: u64,
    /// The histogram layout's max bits.
    pub(crate) param1: u64,
    /// The words that change with the value (see the module docs).
    pub(crate) sig: [u64; 2],
    /// The last reading was not a value (text being rewritten): read again.
    pub(crate) retry: bool,
}

impl Slot {
    pub(crate) fn new(off: usize, kind: Kind, param0: u64, param1: u64) -> Slot {
        Slot {
            off,
            kind,
            param0,
            param1,
            sig: [0; 2],
            retry: true,
        }
    }

    /// The current signature, read without reading the whole value.
    fn signature(&self, map: &ReadMap) -> [u64; 2] {
        match self.kind {
            // Relaxed: one aligned word, as in `Reader::value`.
            Kind::Counter | Kind::Gauge | Kind::GaugeF64 => [map.load(self.off), 0],
            // Relaxed: compared only; `text_read` orders its own loads.
            Kind::Text | Kind::Constant => [map.load(self.off + raw::TEXT_SEQ), 0],
            Kind::Histogram | Kind::Timer => {
                let sum = map.load(self.off + raw::HIST_SUM);
                // Acquire fence after the sum, as in `histogram_read`: the
                // bucket read next includes every value in this sum.
                fence(Ordering::Acquire);
                [sum, map.load(self.off + raw::HIST_BUCKETS)]
            }
        }
    }

    /// Reads the value, and records its signature.
    pub(crate) fn read(&mut self, reader: &Reader) -> Value {
        let map = &reader.map;
        self.retry = false;
        match self.kind {
            // Relaxed for the scalars: each is one aligned word written with
            // one store; no other value has to agree with it.
            Kind::Counter | Kind::Gauge | Kind::GaugeF64 => {
                let w = map.load(self.off);
                self.sig = [w, 0];
                match self.kind {
                    Kind::Counter => Value::Counter(w),
                    Kind::Gauge => Value::Gauge(w as i64),
                    _ => Value::GaugeF64(f64::from_bits(w)),
                }
            }
            Kind::Text | Kind::Constant => {
                // Relaxed: the sequence word before the read; if it is the
                // same next time, no write started in between.
                self.sig = [map.load(self.off + raw::TEXT_SEQ), 0];
                match reader.limited_text(self.off, self.param0) {
                    Ok(s) if self.kind == Kind::Text => Value::Text(s),
                    Ok(s) => Value::Constant(s),
                    Err(e) => {
                        self.retry = true;
                        Value::Unavailable(e)
                    }
                }
            }
            Kind::Histogram | Kind::Timer => {
                let layout = Layout::from_params(self.param0, self.param1).expect("validated");
                let (sum, used) = protocol::histogram_read(map, self.off, layout.buckets());
                let zero = used
                    .first()
                    .filter(|&&(i, _)| i == 0)
                    .map_or(0, |&(_, c)| c);
                self.sig = [sum, zero];
                Value::Histogram(HistogramSnapshot::from_sorted_used(layout, sum, used))
            }
        }
    }
}

/// The last full reading of a file and how to refresh it.
pub(crate) struct Cache {
    header: [u64; HEADER_WORDS],
    snap: Arc<Snapshot>,
    /// One per field of `snap`, in its order.
    slots: Vec<Slot>,
    /// Snapshots since every value was last read.
    since_full: u32,
}

impl Cache {
    fn new(header: [u64; HEADER_WORDS], snap: Snapshot, slots: Vec<Slot>) -> Cache {
        // Files opened together would all re-read every value on the same
        // pass: each starts at its own point of the cycle instead (by its
        // path), so a pass over many files re-reads 1/64th of them.
        let since_full = snap
            .info
            .path
            .as_os_str()
            .as_bytes()
            .iter()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            })
            % u64::from(FULL_EVERY);
        Cache {
            header,
            snap: Arc::new(snap),
            slots,
            since_full: since_full as u32,
        }
    }
}

/// The header's words, each loaded once (Relaxed; the caller fences).
pub(crate) fn header_words(map: &ReadMap) -> [u64; HEADER_WORDS] {
    let mut h = [0u64; HEADER_WORDS];
    for (i, w) in h.iter_mut().enumerate() {
        *w = map.load(8 * i);
    }
    h
}

/// Liveness probes of one pass over many files, and the lock files kept
/// open between passes. Files of one writer process share its lock file
/// (format 1.1): it is opened once and probed once per pass, instead of
/// opened and probed for every file every time. Call
/// [`next_pass`](LivenessMemo::next_pass) between passes, since a writer
/// can die in between.
///
/// A lock file kept open still tells the truth: its writer holds its lock
/// for as long as it lives, and one that exited removed the name and let
/// go of the lock, which the open descriptor sees.
///
/// At most [`MAX_OPEN_LOCKS`] lock files are kept open; past that, a lock
/// file is opened, probed and closed again in each pass, so a host of many
/// writer processes never costs a descriptor each.
#[derive(Debug, Default)]
pub struct LivenessMemo {
    /// By lock token: one entry per stats directory.
    locks: HashMap<u64, Vec<Lock>>,
    /// Lock files held open now.
    open: usize,
}

/// The most lock files a [`LivenessMemo`] keeps open between passes (one
/// per writer process and directory).
pub const MAX_OPEN_LOCKS: usize = 256;

#[derive(Debug)]
struct Lock {
    /// The directory's path, as bytes.
    dir: Vec<u8>,
    file: Option<File>,
    /// This pass's answer, once probed.
    alive: Option<Option<bool>>,
    /// The lock file was missing: its process exited for good (a lock file
    /// is made before any stats file names it), so it is not looked for
    /// again.
    gone: bool,
    /// Used in this pass or the one before (else dropped).
    used: bool,
}

impl LivenessMemo {
    /// An empty memo.
    pub fn new() -> LivenessMemo {
        LivenessMemo::default()
    }

    /// Starts a new pass: forgets this pass's answers, and closes lock files
    /// no file asked about in the pass that ended.
    pub fn next_pass(&mut self) {
        self.locks.retain(|_, v| {
            v.retain(|l| l.used);
            !v.is_empty()
        });
        self.open = self
            .locks
            .values()
            .flatten()
            .filter(|l| l.file.is_some())
            .count();
        for l in self.locks.values_mut().flatten() {
            if !l.gone {
                l.alive = None;
            }
            l.used = false;
        }
    }

    pub(crate) fn probe(&mut self, reader: &Reader, minor: u16, token: u64) -> Option<bool> {
        if minor < 1 || token == 0 {
            // A 1.0 file: its own lock.
            return liveness::probe(&reader.path, reader.dev_ino(), minor, token);
        }
        // The directory as the bytes before the last `/`: cheaper than
        // `Path::parent`, which parses components, and only a key here
        // (two spellings of one directory just probe twice).
        let bytes = reader.path.as_os_str().as_bytes();
        let dir = &bytes[..bytes.iter().rposition(|&b| b == b'/').unwrap_or(0)];
        let known = self.locks.entry(token).or_default();
        let lock = match known.iter().position(|l| l.dir.as_slice() == dir) {
            Some(i) => &mut known[i],
            None => {
                known.push(Lock {
                    dir: dir.to_vec(),
                    file: None,
                    alive: None,
                    gone: false,
                    used: true,
                });
                known.last_mut().expect("pushed")
            }
        };
        lock.used = true;
        if let Some(alive) = lock.alive {
            return alive;
        }
        if lock.file.is_none() {
            if self.open >= MAX_OPEN_LOCKS {
                // Over the cap: probed on a descriptor closed right after.
                let dir = Path::new(OsStr::from_bytes(dir));
                let alive = liveness::probe_lock_file(&dir.join(lock_file_name(token)));
                lock.alive = Some(alive);
                return alive;
            }
            match liveness::open_lock_file(&reader.path, token) {
                Ok(Some(f)) => {
                    lock.file = Some(f);
                    self.open += 1;
                }
                // Missing: the process exited.
                Ok(None) => {
                    lock.alive = Some(Some(false));
                    lock.gone = true;
                    return Some(false);
                }
                Err(()) => {
                    lock.alive = Some(None);
                    return None;
                }
            }
        }
        let alive = liveness::is_locked(lock.file.as_ref().expect("opened"));
        lock.alive = Some(alive);
        alive
    }
}

impl Reader {
    /// Like [`snapshot`](Reader::snapshot), but keeps the reading and
    /// shares what did not change since the last call: the same
    /// `Arc<Snapshot>` when nothing changed (compare with `Arc::ptr_eq`),
    /// and otherwise a new one in which only the changed values were read
    /// again. Any change to the header (new fields, a new state, a reused
    /// file, damage) makes it a full, validated read, as `snapshot` does.
    ///
    /// Every 64th call reads every value again, whatever its signature
    /// says. What it does not see: a hostile writer that rewrites a
    /// published label or help string without touching the header
    /// (format-spec.md §6.5 forbids it) keeps its old strings until the
    /// header changes; no read ever leaves the regions the last full read
    /// checked.
    pub fn snapshot_shared(&mut self) -> Result<Arc<Snapshot>, ReadError> {
        self.snapshot_shared_with(&mut LivenessMemo::new())
    }

    /// [`snapshot_shared`](Reader::snapshot_shared) with liveness probes
    /// shared across the files of one pass.
    pub fn snapshot_shared_with(
        &mut self,
        memo: &mut LivenessMemo,
    ) -> Result<Arc<Snapshot>, ReadError> {
        match self.cache.take() {
            Some(mut cache) => {
                cache.since_full += 1;
                if cache.since_full >= FULL_EVERY {
                    // Every value, whatever its signature says.
                    cache.since_full = 0;
                    cache.slots.iter_mut().for_each(|s| s.retry = true);
                }
                match self.refresh(&mut cache, memo) {
                    Some(result) => {
                        if result.is_ok() {
                            self.cache = Some(cache);
                        }
                        result.map(|()| Arc::clone(&self.cache.as_ref().expect("kept").snap))
                    }
                    None => self.full(memo),
                }
            }
            None => self.full(memo),
        }
    }

    /// A full read that fills the cache.
    fn full(&mut self, memo: &mut LivenessMemo) -> Result<Arc<Snapshot>, ReadError> {
        let mut slots = Vec::new();
        let header = header_words(&self.map);
        let snap = self.snapshot_into(Some(&mut slots), Some(memo))?;
        let cache = Cache::new(header, snap, slots);
        let snap = Arc::clone(&cache.snap);
        self.cache = Some(Box::new(cache));
        Ok(snap)
    }

    /// Brings `cache` up to date; `None` if it needs a full read.
    fn refresh(&self, cache: &mut Cache, memo: &mut LivenessMemo) -> Option<Result<(), ReadError>> {
        let header = header_words(&self.map);
        // Acquire fence after the header's words: pairs with the writer's
        // Release stores of `field_count` and of the state, as the
        // Acquire-load of the full read does.
        fence(Ordering::Acquire);
        // Word by word, not `!=` (a `memcmp` call for 16 words).
        if header.iter().zip(&cache.header).any(|(a, b)| a != b) {
            return None;
        }
        let minor = cache.snap.info.version.1;
        let token = header[raw::H_LOCK_TOKEN / 8];
        let alive = memo.probe(self, minor, token) == Some(true);
        let changed: Vec<usize> = cache
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.retry || s.signature(&self.map) != s.sig)
            .map(|(i, _)| i)
            .collect();
        let mut next = None;
        if !changed.is_empty() || alive != cache.snap.info.alive {
            let mut snap = Snapshot::clone(&cache.snap);
            // Only values change here: the layout is the same.
            snap.layout = cache.snap.layout.clone();
            snap.info.alive = alive;
            for &i in &changed {
                snap.fields[i].value = cache.slots[i].read(self);
            }
            next = Some(snap);
        }
        // The check of every snapshot (§7.5). An unchanged file of a live
        // writer skips its `fstat`: a fault still shows (`faulted`), a
        // shrink inside the last page that changed no signature leaves the
        // kept reading true, and only a dead writer's file can be folded
        // and unlinked (§2.8), which is what the `fstat` also tells
        // `unlinked`.
        if next.is_none() && alive {
            if self.map.faulted() {
                return Some(Err(ReadError::Truncated {
                    path: self.path.clone(),
                }));
            }
        } else if let Err(e) = self.check_truncation(Some(header[raw::H_FILE_LEN / 8])) {
            return Some(Err(e));
        }
        if let Some(snap) = next {
            cache.snap = Arc::new(snap);
        }
        Some(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_words_cover_the_header() {
        // The fast path compares whole words and picks some by index.
        assert_eq!(HEADER_WORDS * 8, raw::HEADER_LEN);
        assert!(raw::H_LOCK_TOKEN.is_multiple_of(8));
        assert!(raw::H_FILE_LEN.is_multiple_of(8));
    }
}
