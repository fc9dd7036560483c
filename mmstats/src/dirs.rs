//! Where stats files live: the directory policy that writers and readers
//! share (format-spec.md §2.1).
//!
//! Writers use [`default_dir`], and [`fallback_dir`] when it is not
//! theirs; readers given no paths search `mmstats-read`'s `default_dirs`.
//! Both honour [`DIR_ENV`].

use std::path::PathBuf;

use crate::sys;

/// The environment variable that overrides the default stats directory,
/// for writers and readers alike.
pub const DIR_ENV: &str = "MMSTATS_DIR";

/// The parent of the per-user directories.
pub const SHM: &str = "/dev/shm";

/// The directory writers use and readers search: `$MMSTATS_DIR` if set,
/// else `/dev/shm/mmstats-EUID` (on tmpfs, so stores never wait on disk).
pub fn default_dir() -> PathBuf {
    match std::env::var_os(DIR_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(format!("{SHM}/mmstats-{}", sys::geteuid())),
    }
}

/// The directory writers fall back to when the default one,
/// `/dev/shm/mmstats-EUID`, is not theirs (another user may create it
/// first): `$XDG_RUNTIME_DIR/mmstats`, if `XDG_RUNTIME_DIR` is set to an
/// absolute path. Readers' default scan includes it.
pub fn fallback_dir() -> Option<PathBuf> {
    let runtime = PathBuf::from(std::env::var_os("XDG_RUNTIME_DIR")?);
    runtime.is_absolute().then(|| runtime.join("mmstats"))
}
