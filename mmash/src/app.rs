//! What every handler shares: [`App`], and the request limits the routes
//! and `/check/` both apply. Its own module, so that the routes (`http`)
//! and the checks (`check`) both import it and neither imports the other.

use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::collect::Collector;
use crate::history::History;

/// Longest query string accepted, in bytes.
pub const MAX_QUERY: usize = 4096;

/// Most large responses (`/metrics`, `/api/v1/snapshot`, `/api/v1/summary`,
/// `/stats/`, `/files/`, `/api/v1/history`, `/api/v1/tree`) being made or sent at once; more wait for a turn.
/// A response holds its body until the client has taken all but the last
/// 64 KiB of it, so this bounds their memory at 8 bodies: 72 MB when a
/// snapshot is 9 MB, however many clients ask and however slowly they read.
pub const BODIES_IN_FLIGHT: usize = 8;

/// What every handler shares.
#[derive(Debug)]
pub struct App {
    /// The files and series.
    pub collector: Collector,
    /// `--namespace`.
    pub namespace: String,
    /// The expected `Authorization` header value, `Bearer <token>`.
    pub auth: Option<Vec<u8>>,
    /// `--log-requests`.
    pub log_requests: bool,
    /// The PATH arguments (none: the default directories).
    pub paths: Vec<OsString>,
    /// Turns to make and send a large body: [`BODIES_IN_FLIGHT`].
    pub bodies: Arc<Semaphore>,
    /// Past readings, for `/check/` windows.
    pub history: History,
    /// The dashboard's history of every label: `/api/v1/history`.
    pub ring: crate::ring::Ring,
    /// Recent span timers: `/api/v1/tree?window=`.
    pub trees: crate::treewin::TreeWindows,
}

/// A stats directory as `/healthz` reports it.
#[derive(Debug)]
pub struct DirState {
    /// The directory.
    pub path: PathBuf,
    /// Its owner, if it could be looked at.
    pub owner: Option<u32>,
    /// Why it cannot be read, if it cannot.
    pub error: Option<String>,
    /// Whether mmash's health depends on it: a directory named on the
    /// command line or by `$MMSTATS_DIR`, or one of the default scan's
    /// that this user owns. Another user's `/dev/shm/mmstats-*` entry (a
    /// loop of links, a file, a directory it cannot read) is its owner's
    /// business: reported, never failing the check for everyone.
    pub counts: bool,
}

/// The stats directories as they are now: each directory argument, the
/// directory of each file or pattern, or the default directories (listed
/// again at every call, so that a directory that appeared or went away
/// since the start is seen as it is).
pub fn dir_states(paths: &[OsString]) -> Vec<DirState> {
    let default_scan =
        paths.is_empty() && std::env::var_os("MMSTATS_DIR").is_none_or(|d| d.is_empty());
    let me = std::fs::metadata("/proc/self").ok().map(|m| m.uid());
    stats_dirs(paths)
        .into_iter()
        .map(|path| {
            let owner = std::fs::symlink_metadata(&path).ok().map(|m| m.uid());
            let error = std::fs::read_dir(&path).err().map(|e| e.to_string());
            DirState {
                counts: !default_scan || (owner.is_some() && owner == me),
                path,
                owner,
                error,
            }
        })
        .collect()
}

/// The directories the sources live in: each directory argument, the
/// directory of each file or pattern, or the default directories.
pub fn stats_dirs(paths: &[OsString]) -> Vec<PathBuf> {
    if paths.is_empty() {
        return mmstats_read::default_dirs();
    }
    let mut dirs: Vec<PathBuf> = paths
        .iter()
        .map(|p| {
            let p = Path::new(p);
            if p.is_dir() {
                return p.to_owned();
            }
            // The part of a pattern before its first wildcard, then its dir.
            let s = p.to_string_lossy();
            let fixed = &s[..s.find(['*', '?', '[']).unwrap_or(s.len())];
            match Path::new(fixed).parent() {
                Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
                _ => PathBuf::from("."),
            }
        })
        .collect();
    dirs.sort();
    dirs.dedup();
    dirs
}
