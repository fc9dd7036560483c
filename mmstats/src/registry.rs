//! What a writer process keeps about all its stats files at once: one lock
//! file per directory (liveness, spec §2.4), the pool of parked files that
//! new threads reuse (§2.7), every live mapping (to mark it exited at a
//! normal exit, §6.6), and the count of instances that fell back to private
//! memory.
//!
//! All of it sits behind one mutex, taken only on the cold paths: opening,
//! closing, falling back, forking and exiting. The hot path never sees it.
//!
//! Each mapping keeps its [`Home`]: where its file lives and everything of
//! it but the values, so the file can be made again at the same address
//! ("re-homed"): in a child made by `fork`, which must not write into its
//! parent's files (§6.7), and after another process truncated the file,
//! which put private memory over it (§6.9).

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::hash::{BuildHasher, RandomState};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, Once};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::Error;
use crate::format::lock_file_name;
use crate::format::raw::{self, Header, Record};
use crate::format::{Kind, WriterState};
use crate::options::render_template_for;
use crate::publish::publish_with;
use crate::sys::held::HeldAcrossFork;
use crate::sys::FileMap;

/// A parked file's identity: its directory and everything of its image
/// that does not depend on the thread that made it (see [`pool_key`]).
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct PoolKey {
    dir: PathBuf,
    identity: Vec<u8>,
}

/// The key under which a file laid out as `image` (header, field table,
/// string table; values are ignored) with file name `template` is parked:
/// the metadata with the per-thread header words (pid, tid, process start,
/// creation time, lock token, fallback count) zeroed.
pub(crate) fn pool_key(dir: &Path, template: &str, image: &[u8]) -> PoolKey {
    let values_off = raw::get_u32(image, raw::H_VALUES_OFF) as usize;
    let mut identity = image[..values_off.min(image.len())].to_vec();
    identity[raw::H_PID..raw::H_COMMAND].fill(0);
    identity[raw::H_LOCK_TOKEN..raw::HEADER_LEN].fill(0);
    identity.extend_from_slice(template.as_bytes());
    PoolKey {
        dir: dir.to_owned(),
        identity,
    }
}

/// A closed file waiting for a new thread with the same model.
pub(crate) struct Parked {
    pub(crate) map: Arc<FileMap>,
    pub(crate) home: Home,
}

/// Where a mapped file lives, and all of it but its values: enough to make
/// it again at the same address.
pub(crate) struct Home {
    pub(crate) dir: PathBuf,
    pub(crate) path: PathBuf,
    pub(crate) template: String,
    pub(crate) command: String,
    pub(crate) model: String,
    /// Header, field table and strings as last written (the file's first
    /// `values_off` bytes).
    pub(crate) meta: Vec<u8>,
    /// The thread that uses the file, for a new file's name and header.
    pub(crate) tid: u32,
    /// Device and inode of the file at `path`, to tell it from another
    /// file put there since.
    pub(crate) id: (u64, u64),
}

impl Home {
    /// The home of the file just published at `path`.
    pub(crate) fn new(
        dir: &Path,
        path: &Path,
        template: &str,
        command: &str,
        model: &str,
        meta: &[u8],
    ) -> Home {
        Home {
            dir: dir.to_owned(),
            path: path.to_owned(),
            template: template.to_owned(),
            command: command.to_owned(),
            model: model.to_owned(),
            meta: meta.to_owned(),
            tid: crate::sys::gettid(),
            id: file_id(path),
        }
    }
}

fn file_id(path: &Path) -> (u64, u64) {
    fs::symlink_metadata(path).map_or((0, 0), |m| (m.dev(), m.ino()))
}

/// A mapped file that some handle still uses.
struct Live {
    map: Arc<FileMap>,
    home: Home,
    /// Private memory now (a forked child could not make its own file):
    /// never parked, never re-homed.
    private: bool,
    /// Its truncation was counted as a fallback; cleared once re-homed.
    noted_dark: bool,
}

/// This process's lock on one stats directory.
struct DirLock {
    token: u64,
    path: PathBuf,
    /// The one descriptor, holding `flock(LOCK_EX)` for the process's life.
    _file: File,
}

#[derive(Default)]
struct Registry {
    /// The process these entries belong to. A child made by `fork` takes
    /// them over in its fork handler ([`after_fork_in_child`]); one made
    /// without the handlers (raw `clone`) finds its parent's here and
    /// starts afresh: its own lock file, no parked file of the parent's.
    pid: u32,
    locks: HashMap<PathBuf, DirLock>,
    pool: HashMap<PoolKey, Vec<Parked>>,
    /// Every mapped file of the process that a handle still uses, by address.
    live: HashMap<usize, Live>,
    last_error: Option<String>,
    /// The `guard::dark_events` count up to which every dark mapping was
    /// re-homed.
    dark_seen: u64,
}

static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(Mutex::default);
/// The process whose files the registry holds: a child made by `fork`
/// inherits the registry but must not close its parent's files at exit.
static OWNER_PID: AtomicU32 = AtomicU32::new(0);
/// How many instances of this process fell back to private memory.
static FALLBACKS: AtomicU64 = AtomicU64::new(0);

fn registry() -> MutexGuard<'static, Registry> {
    // A panic while holding the lock leaves the maps consistent (every
    // update is a single insert or remove), so a poisoned lock is used as is.
    let mut reg = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    let pid = std::process::id();
    if reg.pid != pid {
        // First use, or the first in a forked child: dropping the parent's
        // entries closes the child's copy of the lock descriptors and
        // unmaps the child's copies of parked files.
        *reg = Registry {
            pid,
            ..Registry::default()
        };
    }
    rehome_dark(&mut reg);
    reg
}

/// The token of this process's lock file in `dir`, made and locked on the
/// first call for that directory. The lock file is
/// `DIR/.lock.TOKEN.mmstats-lock` (a dot name, so discovery skips it), and
/// its descriptor is the only one the writer keeps per directory.
pub(crate) fn lock_token(dir: &Path) -> Result<u64, Error> {
    lock_token_in(&mut registry(), dir)
}

fn lock_token_in(reg: &mut Registry, dir: &Path) -> Result<u64, Error> {
    if let Some(lock) = reg.locks.get(dir) {
        return Ok(lock.token);
    }
    install_exit_handler();
    let seed = RandomState::new();
    for attempt in 0u64.. {
        let token = seed.hash_one((std::process::id(), attempt)) | 1;
        let path = dir.join(lock_file_name(token));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true) // O_EXCL: our own new inode, never a planted one
            .custom_flags(libc::O_NOFOLLOW) // std adds O_CLOEXEC
            .mode(0o644)
            .open(&path);
        let file = match file {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 16 => continue,
            Err(source) => return Err(Error::Create { path, source }),
        };
        if let Err(e) = file.try_lock() {
            let _ = fs::remove_file(&path);
            return Err(Error::Create {
                path,
                source: io::Error::from(e),
            });
        }
        reg.locks.insert(
            dir.to_owned(),
            DirLock {
                token,
                path,
                _file: file,
            },
        );
        return Ok(token);
    }
    unreachable!("the loop returns")
}

fn addr(map: &FileMap) -> usize {
    map.word(0) as *const _ as usize
}

/// Takes a parked file for `key`, if one is waiting, for the calling
/// thread; returns it and its path. A parked file that was truncated
/// meanwhile is dropped (the truncation destroyed it).
pub(crate) fn take_parked(key: &PoolKey) -> Option<(Arc<FileMap>, PathBuf)> {
    let mut reg = registry();
    let parked = loop {
        let parked = reg.pool.get_mut(key)?.pop()?;
        if !parked.map.is_dark() {
            break parked;
        }
    };
    let Parked { map, mut home } = parked;
    home.tid = crate::sys::gettid();
    let path = home.path.clone();
    reg.live.insert(
        addr(&map),
        Live {
            map: Arc::clone(&map),
            home,
            private: false,
            noted_dark: false,
        },
    );
    Some((map, path))
}

/// Records a newly mapped file as live.
pub(crate) fn add_live(map: &Arc<FileMap>, home: Home) {
    install_fork_handlers();
    registry().live.insert(
        addr(map),
        Live {
            map: Arc::clone(map),
            home,
            private: false,
            noted_dark: false,
        },
    );
}

/// Records the metadata of a live file after a field was appended.
pub(crate) fn update_meta(map: &FileMap, meta: &[u8]) {
    if let Some(live) = registry().live.get_mut(&addr(map)) {
        live.home.meta.clear();
        live.home.meta.extend_from_slice(meta);
    }
}

/// Called when a file's last handle is gone (and the file is marked
/// exited): parks it under `key` for the next thread of the same model,
/// or, without a key, just forgets it. A file that is private memory now
/// is forgotten too.
pub(crate) fn close(map: Arc<FileMap>, key: Option<PoolKey>) {
    let mut reg = registry();
    let Some(live) = reg.live.remove(&addr(&map)) else {
        return;
    };
    if let Some(key) = key {
        if !live.private && !map.is_dark() {
            let home = live.home;
            reg.pool.entry(key).or_default().push(Parked { map, home });
        }
    }
}

/// What this process's stats lost to private memory: see [`fallbacks`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Fallbacks {
    /// How many stats instances fell back to process-private memory since
    /// the process started (each is one thread's model nobody can read).
    pub count: u64,
    /// The error of the latest fallback, if there was one.
    pub last_error: Option<String>,
}

/// How many of this process's stats instances fell back to private memory
/// (with [`Stats::open_or_private`](crate::Stats::open_or_private) or
/// [`per_thread!`](crate::per_thread), or because another process
/// truncated a live file), and why the last one did. The count is also
/// published in every stats file of the process, so readers see that
/// stats are missing.
///
/// Like every stats open, a call first gives each file that was truncated
/// since a new file under its name (spec §6.9).
pub fn fallbacks() -> Fallbacks {
    let reg = registry();
    Fallbacks {
        // Relaxed: the mutex orders it with `last_error`.
        count: FALLBACKS.load(Ordering::Relaxed),
        last_error: reg.last_error.clone(),
    }
}

/// The fallback count to write into a new file's header.
pub(crate) fn fallback_count() -> u64 {
    // Relaxed: a count, published with fetch_max, not a synchronisation point.
    FALLBACKS.load(Ordering::Relaxed)
}

/// Counts a fallback to private memory caused by `err`, and publishes the
/// new count in every file of the process.
pub(crate) fn note_fallback(err: &Error) {
    note_fallback_in(&mut registry(), err);
}

fn note_fallback_in(reg: &mut Registry, err: &Error) {
    // Relaxed: the mutex orders the count with the error text.
    let count = FALLBACKS.fetch_add(1, Ordering::Relaxed) + 1;
    reg.last_error = Some(err.to_string());
    let parked = reg.pool.values().flatten().map(|p| &p.map);
    for map in reg.live.values().map(|l| &l.map).chain(parked) {
        // Relaxed: an independent word; fetch_max so it never goes back,
        // whichever thread stores it.
        map.word(raw::H_FALLBACKS)
            .fetch_max(count, Ordering::Relaxed);
    }
}

/// Registers, once, the handler that closes every live file at a normal
/// process exit.
fn install_exit_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Relaxed: read only by this process's exit handler, after this.
        OWNER_PID.store(std::process::id(), Ordering::Relaxed);
        crate::sys::at_exit(mark_all_exited);
    });
}

/// At a normal exit (`exit`, a return from `main`): marks every live file
/// of the process exited and removes the process's lock files, so readers
/// see a clean exit instead of a writer that did not close. A thread still
/// running may store a last value after this; its file is closed anyway.
extern "C" fn mark_all_exited() {
    // Relaxed: stored once before the handler was registered.
    if OWNER_PID.load(Ordering::Relaxed) != std::process::id() {
        return;
    }
    // Never block an exit on a thread that holds the registry: give up
    // after a while and leave the files "did not close".
    let mut reg = None;
    for _ in 0..1000 {
        match REGISTRY.try_lock() {
            Ok(g) => {
                reg = Some(g);
                break;
            }
            Err(std::sync::TryLockError::Poisoned(e)) => {
                reg = Some(e.into_inner());
                break;
            }
            Err(std::sync::TryLockError::WouldBlock) => std::thread::yield_now(),
        }
    }
    let Some(mut reg) = reg else { return };
    // A file truncated since the last open gets its successor now, so the
    // counts stored since are not lost with the process.
    rehome_dark(&mut reg);
    for map in reg.live.values().map(|l| &l.map) {
        // Release: as at a normal close, the values stored before are final
        // for a reader that sees "exited".
        map.word(raw::H_STATE)
            .store(WriterState::EXITED, Ordering::Release);
    }
    for lock in reg.locks.values() {
        let _ = fs::remove_file(&lock.path);
    }
}

/// The mapping of the live file at `path`, for tests.
#[cfg(test)]
pub(crate) fn live_map(path: &Path) -> Option<Arc<FileMap>> {
    let reg = registry();
    let live = reg.live.values().find(|l| l.home.path == path)?;
    Some(Arc::clone(&live.map))
}

// ------------------------------------------------------------- re-homing --

/// Why a mapping is made again: which values the new file starts with.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Rehome {
    /// In a child made by `fork`: counters, histograms and timers start at
    /// zero (their counts are the parent's), gauges and text keep the value
    /// the child inherited.
    Fork,
    /// After a truncation: every value as stored since (into private
    /// memory that started at zero).
    Truncated,
}

/// Makes a new file for `live` in its directory, holding its metadata and
/// current values (as `why` says), stamped as this process's and thread
/// `live.home.tid`'s, and maps it over the mapping's range in place.
fn rehome(live: &mut Live, token: u64, why: Rehome) -> Result<(), Error> {
    let home = &mut live.home;
    let map = &live.map;
    let values_off = raw::get_u32(&home.meta, raw::H_VALUES_OFF) as usize;
    let mut image = home.meta.clone();
    image.resize(map.len(), 0);
    for off in (values_off..map.len()).step_by(8) {
        // Relaxed: values of this process's own writer (see `remap_shared`
        // for what a concurrent store risks).
        let v = map.word(off).load(Ordering::Relaxed);
        image[off..off + 8].copy_from_slice(&v.to_le_bytes());
    }
    if why == Rehome::Fork {
        zero_cumulative(&mut image);
    }
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    image[raw::H_STATE..raw::H_STATE + 8].copy_from_slice(&WriterState::ACTIVE.to_le_bytes());
    image[raw::H_PID..raw::H_PID + 4].copy_from_slice(&std::process::id().to_le_bytes());
    image[raw::H_TID..raw::H_TID + 4].copy_from_slice(&home.tid.to_le_bytes());
    let start = crate::procfs::process_start_ticks();
    image[raw::H_PROC_START..raw::H_PROC_START + 8].copy_from_slice(&start.to_le_bytes());
    image[raw::H_CREATED_NS..raw::H_CREATED_NS + 8].copy_from_slice(&created.to_le_bytes());
    image[raw::H_LOCK_TOKEN..raw::H_LOCK_TOKEN + 8].copy_from_slice(&token.to_le_bytes());
    let fallbacks = fallback_count();
    image[raw::H_FALLBACKS..raw::H_FALLBACKS + 8].copy_from_slice(&fallbacks.to_le_bytes());
    if why == Rehome::Truncated {
        // A file closed while dark (its exit store went to private memory)
        // stays closed in its successor.
        // Relaxed: this process's own store, as the values above.
        let state = map.word(raw::H_STATE).load(Ordering::Relaxed);
        if state != 0 {
            image[raw::H_STATE..raw::H_STATE + 8].copy_from_slice(&state.to_le_bytes());
        }
    }
    // The directory gets the checks of every first open (§2.1): a
    // directory made writable to others since is not published into. (A
    // missing one is not made again: publishing fails.)
    if fs::symlink_metadata(&home.dir).is_ok() {
        crate::publish::ensure_private_dir(&home.dir)?;
    }
    if why == Rehome::Truncated {
        // The truncated file is ours no more than in name: free the name
        // for its successor, unless someone put another file there.
        let truncated = fs::symlink_metadata(&home.path)
            .is_ok_and(|m| (m.dev(), m.ino()) == home.id && m.len() < map.len() as u64);
        if truncated {
            let _ = fs::remove_file(&home.path);
        }
    }
    let name = render_template_for(&home.template, &home.command, &home.model, home.tid)?;
    let ((), path) = publish_with(&home.dir, &name, &image, |file| map.remap_shared(file))?;
    home.id = file_id(&path);
    home.path = path;
    Ok(())
}

/// Zeroes the values of counters, histograms and timers in `image`.
fn zero_cumulative(image: &mut [u8]) {
    for off in cumulative_words(image) {
        image[off..off + 8].fill(0);
    }
}

/// The offsets of the value words of counters, histograms and timers in a
/// file laid out as `meta` (the header, field table and strings).
fn cumulative_words(meta: &[u8]) -> Vec<usize> {
    let h = Header::decode(meta);
    let table = h.field_table_off.get() as usize;
    let mut words = Vec::new();
    for i in 0..h.field_count.get() as usize {
        let rec = Record::decode(&meta[table + i * raw::RECORD_LEN..]);
        if matches!(
            Kind::from_code(rec.kind.get()),
            Some(Kind::Counter | Kind::Histogram | Kind::Timer)
        ) {
            let off = rec.value_off.get() as usize;
            words.extend((off..off + rec.value_len.get() as usize).step_by(8));
        }
    }
    words
}

/// Gives every mapping that went dark since the last look (its file was
/// truncated, so the SIGBUS guard put private memory over it) a new file,
/// and counts each as a fallback until then. Called on every cold path.
fn rehome_dark(reg: &mut Registry) {
    let events = crate::guard::dark_events();
    if events == reg.dark_seen {
        return;
    }
    let dark: Vec<usize> = reg
        .live
        .iter()
        .filter(|(_, l)| !l.private && l.map.is_dark())
        .map(|(&a, _)| a)
        .collect();
    let mut all_done = true;
    for a in dark {
        let live = reg.live.get_mut(&a).expect("listed above");
        if !live.noted_dark {
            live.noted_dark = true;
            let err = Error::Truncated {
                path: live.home.path.clone(),
            };
            note_fallback_in(reg, &err);
        }
        let dir = reg.live[&a].home.dir.clone();
        let done = lock_token_in(reg, &dir).and_then(|token| {
            let live = reg.live.get_mut(&a).expect("listed above");
            rehome(live, token, Rehome::Truncated)
        });
        match done {
            Ok(()) => reg.live.get_mut(&a).expect("listed above").noted_dark = false,
            // Still dark: tried again on the next cold path.
            Err(_) => all_done = false,
        }
    }
    if all_done {
        reg.dark_seen = events;
    }
}

// ------------------------------------------------------------------ fork --

/// The registry, held by the forking thread across `fork`.
static FORK_HELD: HeldAcrossFork<Registry> = HeldAcrossFork::new(registry_lock);

fn registry_lock() -> &'static Mutex<Registry> {
    &REGISTRY
}

/// Registers, once, the handlers that give a child made by `fork` files of
/// its own (spec §6.7).
fn install_fork_handlers() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| crate::sys::at_fork(before_fork, after_fork_in_parent, after_fork_in_child));
}

/// Before `fork`: takes every lock the child's handler needs, so none is
/// inherited held by a thread that does not exist in the child. (Held in
/// statics, not thread locals: a thread that forks while its thread locals
/// are being destroyed must get a child that re-homes its files too.)
extern "C" fn before_fork() {
    FORK_HELD.hold();
    crate::guard::hold_alloc_for_fork();
    crate::procfs::hold_for_fork();
}

extern "C" fn after_fork_in_parent() {
    crate::procfs::release_after_fork();
    crate::guard::release_alloc_after_fork();
    FORK_HELD.release();
}

/// In the child, the only thread now: makes every live file of the parent
/// the child's own, mapped at the same address, so that every handle the
/// child inherited stores into the child's file with no check on the hot
/// path. If a file cannot be made, private memory goes over the range
/// instead (counted as a fallback): the parent's file is never touched.
extern "C" fn after_fork_in_child() {
    crate::procfs::release_after_fork_in_child();
    crate::guard::release_alloc_after_fork_in_child();
    let Some(mut reg) = FORK_HELD.take_in_child() else {
        return;
    };
    let pid = std::process::id();
    reg.pid = pid;
    // The parent's parked files stay the parent's; closing the child's copy
    // of a lock descriptor leaves the parent's lock held (a lock belongs to
    // the open file, which the parent still has open).
    reg.pool.clear();
    reg.locks.clear();
    reg.last_error = None;
    // Relaxed: the only thread; the mutex orders it with `last_error`.
    FALLBACKS.store(0, Ordering::Relaxed);
    // Relaxed: the only thread. The exit handler, if registered, is
    // inherited; it now closes the child's files.
    if OWNER_PID.load(Ordering::Relaxed) != 0 {
        OWNER_PID.store(pid, Ordering::Relaxed);
    }
    let tid = crate::sys::gettid();
    for live in reg.live.values() {
        live.map.reset_in_child();
    }
    let addrs: Vec<usize> = reg.live.keys().copied().collect();
    for a in addrs {
        let dir = reg.live[&a].home.dir.clone();
        let done = lock_token_in(&mut reg, &dir).and_then(|token| {
            let live = reg.live.get_mut(&a).expect("listed above");
            live.home.tid = tid;
            rehome(live, token, Rehome::Fork)
        });
        let live = reg.live.get_mut(&a).expect("listed above");
        live.noted_dark = false;
        let Err(err) = done else {
            live.map.set_owner(pid);
            // A file again, though the parent had private memory here (its
            // own fork fallback): parked and re-homed like any file.
            live.private = false;
            continue;
        };
        live.private = true;
        if live.map.remap_private().is_ok() {
            live.map.set_owner(pid);
            // As in a file of the child's own: the parent's counts are not
            // the child's.
            for off in cumulative_words(&live.home.meta) {
                // Relaxed: private memory of the only thread.
                live.map.word(off).store(0, Ordering::Relaxed);
            }
        }
        // Else the system refused even anonymous memory: the child's
        // stores still reach the parent's file (never abort the child for
        // stats), but it will not mark that file exited.
        note_fallback_in(&mut reg, &err);
    }
    reg.dark_seen = crate::guard::dark_events();
}

#[cfg(test)]
pub(crate) mod tests {
    use std::fs;

    pub(crate) fn truncate(path: &std::path::Path) {
        fs::OpenOptions::new()
            .write(true)
            .open(path)
            .unwrap()
            .set_len(0)
            .unwrap();
    }
}
