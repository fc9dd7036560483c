//! Where stats files live: the directory policy that writers and readers
//! share (format-spec.md §2.1).
//!
//! Writers use [`default_dir`], and [`fallback_dir`] when it is not
//! theirs; readers given no paths search `mmstats-read`'s `default_dirs`.
//! Both honour [`DIR_ENV`].

use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::PathBuf;

use crate::sys;

/// The environment variable that overrides the default stats directory,
/// for writers and readers alike.
pub const DIR_ENV: &str = "MMSTATS_DIR";

/// The parent of the per-user directories.
pub const SHM: &str = "/dev/shm";

/// For tests only: a directory that writers and readers take instead of
/// [`SHM`], so that tests of the default directories do not touch the
/// machine's real one.
pub const SCAN_ROOT_ENV: &str = "MMSTATS_SCAN_ROOT";

/// [`SHM`], or `$MMSTATS_SCAN_ROOT` in tests.
pub fn shm_root() -> PathBuf {
    std::env::var_os(SCAN_ROOT_ENV)
        .filter(|d| !d.is_empty())
        .map_or_else(|| PathBuf::from(SHM), PathBuf::from)
}

/// The directory writers use and readers search: `$MMSTATS_DIR` if set,
/// else `/dev/shm/mmstats-EUID` (on tmpfs, so stores never wait on disk).
pub fn default_dir() -> PathBuf {
    match std::env::var_os(DIR_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => shm_root().join(format!("mmstats-{}", sys::geteuid())),
    }
}

/// The directory writers fall back to when the default one,
/// `/dev/shm/mmstats-EUID`, is not theirs (another user may create it
/// first, format-spec.md §2.1): the first entry `/dev/shm/mmstats-EUID-*`,
/// byte-wise, that is a directory (not a link) owned by the effective uid
/// and not writable by group or others; else a new one,
/// `/dev/shm/mmstats-EUID-XXXXXXXX` (8 random characters of `[a-z0-9]`),
/// made with mode 0700 by `mkdir`, which fails if the name exists, so
/// nobody else can have made it. Readers' default scan reads every
/// `/dev/shm/mmstats-*`, so its files are found with no argument, and
/// attributed to the directory's owner, not to the uid in its name.
///
/// # Errors
///
/// Why no such directory could be found or made.
pub fn fallback_dir() -> io::Result<PathBuf> {
    let root = shm_root();
    let prefix = format!("mmstats-{}-", sys::geteuid());
    let euid = sys::geteuid();
    let mut names: Vec<std::ffi::OsString> = fs::read_dir(&root)?
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .filter(|n| n.as_bytes().starts_with(prefix.as_bytes()))
        .collect();
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    for name in names {
        let path = root.join(&name);
        if let Ok(m) = fs::symlink_metadata(&path) {
            if m.is_dir() && m.uid() == euid && m.mode() & 0o022 == 0 {
                return Ok(path);
            }
        }
    }
    let mut last = io::Error::other("no attempt");
    for attempt in 0..16u64 {
        let path = root.join(format!("{prefix}{}", random_suffix(attempt)));
        match fs::DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => return Ok(path),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// 8 characters of `[a-z0-9]`, from std's randomly keyed hasher.
fn random_suffix(attempt: u64) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(attempt);
    h.write_u32(std::process::id());
    let mut n = h.finish();
    let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..8)
        .map(|_| {
            let c = alphabet[(n % 36) as usize] as char;
            n /= 36;
            c
        })
        .collect()
}
