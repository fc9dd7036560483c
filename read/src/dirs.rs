//! The directories a reader given no paths searches (format-spec.md §2.1):
//! the writers' policy ([`mmstats::default_dir`]) seen from the other side.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use mmstats::{fallback_dir, DIR_ENV, SHM};

/// For tests only: the directory a default scan lists for `mmstats-*`
/// directories instead of `/dev/shm`, so that tests of the default scan do
/// not touch the machine's real one. Writers ignore it.
pub(crate) const SCAN_ROOT_ENV: &str = "MMSTATS_SCAN_ROOT";

/// The directories searched when a reader is given no paths: `$MMSTATS_DIR`
/// if set and not empty, else every `/dev/shm/mmstats-*` entry (one per
/// user), sorted byte-wise, then the writers' fallback directory
/// `$XDG_RUNTIME_DIR/mmstats` if it exists. These are only the candidates: `discover`
/// (`mmstats-read`) reads one only if it passes the default scan's checks (not a symbolic
/// link, not writable by group or others), and only the files in it that
/// its owner owns.
///
/// (Tests may set `MMSTATS_SCAN_ROOT` to list another directory instead of
/// `/dev/shm`; it is not meant for anything else.)
///
pub fn default_dirs() -> Vec<PathBuf> {
    if let Some(dir) = std::env::var_os(DIR_ENV).filter(|d| !d.is_empty()) {
        return vec![PathBuf::from(dir)];
    }
    let root = std::env::var_os(SCAN_ROOT_ENV)
        .filter(|d| !d.is_empty())
        .map_or_else(|| PathBuf::from(SHM), PathBuf::from);
    let mut dirs: Vec<PathBuf> = fs::read_dir(&root)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.file_name().as_bytes().starts_with(b"mmstats-"))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    dirs.sort_by(|a, b| by_bytes(a, b));
    // Writers whose /dev/shm directory was squatted write here instead.
    if let Some(fallback) = fallback_dir().filter(|d| d.is_dir()) {
        if !dirs.contains(&fallback) {
            dirs.push(fallback);
        }
    }
    dirs
}

/// Orders paths by their bytes (format-spec.md §2.1), not by components.
pub(crate) fn by_bytes(a: &Path, b: &Path) -> std::cmp::Ordering {
    a.as_os_str().as_bytes().cmp(b.as_os_str().as_bytes())
}
