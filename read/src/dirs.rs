//! The directories a reader given no paths searches (format-spec.md §2.1):
//! the writers' policy ([`mmstats::default_dir`]) seen from the other side.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use mmstats::{shm_root, DIR_ENV};

/// The directories searched when a reader is given no paths: `$MMSTATS_DIR`
/// if set and not empty, else every `/dev/shm/mmstats-*` entry, sorted
/// byte-wise: one per user, and the private fallback directories
/// (`mmstats-EUID-XXXXXXXX`) of writers whose `mmstats-EUID` another user
/// squatted ([`mmstats::fallback_dir`]). These are only the candidates:
/// `discover` reads one only if it passes the default scan's checks (not a
/// symbolic link, not writable by group or others), and only the files in
/// it that its owner owns: a directory is its owner's, whatever uid its
/// name says.
///
/// (Tests may set `MMSTATS_SCAN_ROOT` to list another directory instead of
/// `/dev/shm`; it is not meant for anything else.)
pub fn default_dirs() -> Vec<PathBuf> {
    if let Some(dir) = std::env::var_os(DIR_ENV).filter(|d| !d.is_empty()) {
        return vec![PathBuf::from(dir)];
    }
    let root = shm_root();
    let mut dirs: Vec<PathBuf> = fs::read_dir(&root)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.file_name().as_bytes().starts_with(b"mmstats-"))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    dirs.sort_by(|a, b| by_bytes(a, b));
    dirs
}

/// Orders paths by their bytes (format-spec.md §2.1), not by components.
pub(crate) fn by_bytes(a: &Path, b: &Path) -> std::cmp::Ordering {
    a.as_os_str().as_bytes().cmp(b.as_os_str().as_bytes())
}
