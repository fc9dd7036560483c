//! What a writer process keeps about all its stats files at once: one lock
//! file per directory (liveness, spec §2.4), the pool of parked files that
//! new threads reuse (§2.7), every live mapping (to mark it exited at a
//! normal exit, §6.6), and the count of instances that fell back to private
//! memory.
//!
//! All of it sits behind one mutex, taken only on the cold paths: opening,
//! closing, falling back and exiting. The hot path never sees it.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::hash::{BuildHasher, RandomState};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, Once};

use crate::error::Error;
use crate::format::raw;
use crate::format::WriterState;
use crate::liveness::lock_file_name;
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
    pub(crate) path: PathBuf,
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
    /// The process these entries belong to. A child made by `fork` finds
    /// its parent's here and starts afresh: its own lock file, no parked
    /// file of the parent's (the parent may reuse those itself).
    pid: u32,
    locks: HashMap<PathBuf, DirLock>,
    pool: HashMap<PoolKey, Vec<Parked>>,
    /// Every mapped file of the process that a handle still uses, by address.
    live: HashMap<usize, Arc<FileMap>>,
    last_error: Option<String>,
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
    reg
}

/// The token of this process's lock file in `dir`, made and locked on the
/// first call for that directory. The lock file is
/// `DIR/.lock.TOKEN.mmstats-lock` (a dot name, so discovery skips it), and
/// its descriptor is the only one the writer keeps per directory.
pub(crate) fn lock_token(dir: &Path) -> Result<u64, Error> {
    let mut reg = registry();
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

/// Takes a parked file for `key`, if one is waiting.
pub(crate) fn take_parked(key: &PoolKey) -> Option<Parked> {
    let mut reg = registry();
    let parked = reg.pool.get_mut(key)?.pop()?;
    reg.live.insert(
        parked.map.word(0) as *const _ as usize,
        Arc::clone(&parked.map),
    );
    Some(parked)
}

/// Records a newly mapped file as live.
pub(crate) fn add_live(map: &Arc<FileMap>) {
    registry()
        .live
        .insert(map.word(0) as *const _ as usize, Arc::clone(map));
}

/// Called when a file's last handle is gone (and the file is marked
/// exited): parks it under `key` for the next thread of the same model,
/// or, without a key, just forgets it.
pub(crate) fn close(map: Arc<FileMap>, parking: Option<(PoolKey, PathBuf)>) {
    let mut reg = registry();
    reg.live.remove(&(map.word(0) as *const _ as usize));
    if let Some((key, path)) = parking {
        reg.pool.entry(key).or_default().push(Parked { map, path });
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
/// [`per_thread!`](crate::per_thread)), and why the last one did. The count
/// is also published in every stats file of the process, so readers see
/// that stats are missing.
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
    let mut reg = registry();
    // Relaxed: the mutex orders the count with the error text.
    let count = FALLBACKS.fetch_add(1, Ordering::Relaxed) + 1;
    reg.last_error = Some(err.to_string());
    let parked = reg.pool.values().flatten().map(|p| &p.map);
    for map in reg.live.values().chain(parked) {
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
    let Some(reg) = reg else { return };
    for map in reg.live.values() {
        // Release: as at a normal close, the values stored before are final
        // for a reader that sees "exited".
        map.word(raw::H_STATE)
            .store(WriterState::EXITED, Ordering::Release);
    }
    for lock in reg.locks.values() {
        let _ = fs::remove_file(&lock.path);
    }
}
