//! Is a stats file's writer alive? (spec §2.4)
//!
//! Since format 1.1 a writer process holds one exclusive `flock` on one
//! lock file per stats directory, `DIR/.lock.TOKEN.mmstats-lock`, and every
//! stats file it makes names that token in its header. A 1.0 file (minor 0,
//! or token 0) carries its own `flock` instead; its descriptor is probed as
//! before.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use mmstats::format::{self, lock_file_name, raw};

/// Whether the writer of the stats file at `path`, open as `file`, is
/// alive: by its lock file if the header (`minor`, `token`) names one,
/// else by the file's own lock. `None` if the probe itself failed.
///
/// A 1.0 file's own lock is probed on a descriptor opened for the probe
/// and closed after it, and only if the path still names the file
/// `dev_ino` says (readers keep no descriptor per file).
pub(crate) fn probe(path: &Path, dev_ino: (u64, u64), minor: u16, token: u64) -> Option<bool> {
    if minor >= 1 && token != 0 {
        let dir = path.parent().unwrap_or(Path::new(""));
        probe_lock_file(&dir.join(lock_file_name(token)))
    } else {
        let file = open_no_follow(path).ok()?;
        let meta = file.metadata().ok()?;
        if (meta.dev(), meta.ino()) != dev_ino {
            return None;
        }
        is_locked(&file)
    }
}

/// Opens the lock file of a 1.1 stats file at `path` with `token`, for
/// probing again and again with [`is_locked`]: `Ok(None)` if it is missing
/// (its process exited, see [`probe_lock_file`]), `Err` if it cannot be
/// opened or is not a regular file.
pub(crate) fn open_lock_file(path: &Path, token: u64) -> Result<Option<File>, ()> {
    let dir = path.parent().unwrap_or(Path::new(""));
    match open_no_follow(&dir.join(lock_file_name(token))) {
        Ok(f) if f.metadata().is_ok_and(|m| m.is_file()) => Ok(Some(f)),
        Ok(_) => Err(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(_) => Err(()),
    }
}

/// Probes a lock file. A missing one is a process that exited (it removes
/// its lock files at a normal exit) or whose lock file was cleaned away
/// once nobody held it: not alive.
pub(crate) fn probe_lock_file(path: &Path) -> Option<bool> {
    match open_no_follow(path) {
        Ok(f) if f.metadata().is_ok_and(|m| m.is_file()) => is_locked(&f),
        Ok(_) => None,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Some(false),
        Err(_) => None,
    }
}

/// Whether some process holds an exclusive lock on `file`. `None` if the
/// probe itself failed.
pub(crate) fn is_locked(file: &File) -> Option<bool> {
    match file.try_lock_shared() {
        Ok(()) => {
            let _ = file.unlock();
            Some(false)
        }
        Err(fs::TryLockError::WouldBlock) => Some(true),
        Err(fs::TryLockError::Error(_)) => None,
    }
}

/// Whether a live writer holds the stats file at `path`: reads its header
/// to find out how to probe. `None` if it cannot be opened or probed.
pub(crate) fn probe_path(path: &Path) -> Option<bool> {
    let file = open_no_follow(path).ok()?;
    let mut header = [0u8; raw::HEADER_LEN];
    if file.read_exact_at(&mut header, 0).is_err() || header[..8] != format::MAGIC {
        return is_locked(&file);
    }
    let minor = raw::get_u16(&header, raw::H_MINOR);
    let token = raw::get_u64(&header, raw::H_LOCK_TOKEN);
    if minor >= 1 && token != 0 {
        let dir = path.parent().unwrap_or(Path::new(""));
        probe_lock_file(&dir.join(lock_file_name(token)))
    } else {
        is_locked(&file)
    }
}

/// Opens `path` read-only, without following a final symlink and without
/// blocking on a FIFO.
fn open_no_follow(path: &Path) -> io::Result<File> {
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
}
