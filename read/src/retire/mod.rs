//! Retiring dead writers: folding their files into an archive, so that a
//! host of short-lived processes keeps a bounded number of files while
//! every total stays exact and never goes backwards (format-spec.md §2.8).
//!
//! - [`fold`] folds the proven-dead writer files of one directory into one
//!   *archive* per `(command, model)`: an ordinary stats file in state
//!   [`WriterState::Archive`](mmstats::WriterState::Archive) that holds the sums of their counters and
//!   histograms, the last value of their texts (no gauges), and the
//!   [`SourceId`]s of the files folded in. It then removes those files.
//! - [`folded`] is the reader's half of the protocol: given snapshots of
//!   every writer file read *before* the archives, it says which ones an
//!   archive already holds, so that they are counted once.
//!
//! Both [`Sources`](crate::aggregate::Sources) and `slurpstats` apply it;
//! `mmash` folds periodically (`--retire-after`) and once (`mmash retire`).
//!
//! ```
//! use mmstats_read::retire::{fold, RetireOptions};
//! use mmstats::{Counter, Stats};
//! use std::time::Duration;
//!
//! #[derive(Stats)]
//! struct Jobs {
//!     done: Counter,
//! }
//!
//! # let dir = tempfile::tempdir().unwrap();
//! let jobs = Jobs::builder().dir(dir.path()).open()?;
//! jobs.done.add(3);
//! drop(jobs); // this thread's writer is done, but its process lives on
//!
//! let mut opts = RetireOptions::default();
//! opts.min_age = Duration::ZERO;
//! let report = fold(dir.path(), &opts)?;
//! // Only files whose writer *process* is proven dead are folded.
//! assert_eq!((report.folded, report.files, report.archives), (0, 1, 0));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use crate::archive::nanos;
use crate::reader::{ReadLimits, Reader, Snapshot};

mod count;
mod group;

pub use crate::archive::{archive_stem, fnv1a32, ArchiveInfo, SourceId};
pub use count::{folded, read_all};
use group::fold_group;

/// A step of [`fold`], for fault injection: a folder told to abort at a
/// step calls `std::process::abort()` right after it.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FoldStep {
    /// The fold lock is held; nothing written yet.
    Locked,
    /// The new archive is complete under its temporary name.
    TempWritten,
    /// The new archive is in place; no source removed yet.
    Published,
    /// The first source file is removed; others remain.
    HalfRemoved,
}

impl FromStr for FoldStep {
    type Err = String;
    fn from_str(s: &str) -> Result<FoldStep, String> {
        Ok(match s {
            "locked" => FoldStep::Locked,
            "temp-written" => FoldStep::TempWritten,
            "published" => FoldStep::Published,
            "half-removed" => FoldStep::HalfRemoved,
            _ => {
                return Err(format!(
                    "unknown fold step {s:?} (locked, temp-written, published, half-removed)"
                ))
            }
        })
    }
}

/// How [`fold`] picks and keeps files.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RetireOptions {
    /// A dead writer's file is folded only once it is at least this old
    /// (since its creation), so that short-lived work stays visible file by
    /// file for a while. Default: 5 minutes.
    pub min_age: Duration,
    /// An identity is kept in the archive until a fold found its file gone
    /// at least this long ago (spec §2.8, "Pruning"). It bounds how long a
    /// reader may take between reading writer files and reading archives;
    /// the Rust reader retakes a sample that took longer than a quarter of
    /// the default. Default: 10 minutes; never below 1 minute.
    pub prune_after: Duration,
    /// Abort the process after this step (fault-injection tests).
    #[doc(hidden)]
    pub abort_at: Option<FoldStep>,
    /// Called between a fold's first read of a candidate file and its
    /// liveness probe (race tests).
    #[doc(hidden)]
    pub after_read: Option<fn(&Path)>,
    /// The floor of `prune_after`: [`MIN_PRUNE_AFTER`], lowered only by
    /// tests that prove pruning, with no reader running.
    #[doc(hidden)]
    pub prune_floor: Duration,
}

/// The shortest [`RetireOptions::prune_after`] a fold accepts.
pub const MIN_PRUNE_AFTER: Duration = Duration::from_secs(60);

/// The longest a reader may take between checking writer files and reading
/// archives (a quarter of [`MIN_PRUNE_AFTER`]); [`Sources`](crate::aggregate::Sources)
/// retakes a sample that took longer.
pub const MAX_READ_SPAN: Duration = Duration::from_secs(15);

impl Default for RetireOptions {
    fn default() -> RetireOptions {
        RetireOptions {
            min_age: Duration::from_secs(300),
            prune_after: Duration::from_secs(600),
            abort_at: None,
            after_read: None,
            prune_floor: MIN_PRUNE_AFTER,
        }
    }
}

/// What one [`fold`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FoldReport {
    /// Writer files folded into an archive.
    pub folded: usize,
    /// Files removed: those folded, leftovers of an interrupted fold that
    /// an archive already held, and lock files of dead processes that no
    /// file names any more ([`LOCK_FILE_MIN_AGE`]).
    pub removed: usize,
    /// Archives written.
    pub archives_written: usize,
    /// Identities pruned from archives.
    pub pruned: usize,
    /// Archives in the directory after the fold.
    pub archives: usize,
    /// Writer files in the directory after the fold.
    pub files: usize,
    /// Files left as they are, with why (unreadable, a field that does not
    /// fit the archive, ...).
    pub skipped: Vec<(PathBuf, String)>,
}

/// Why a fold of a directory failed as a whole.
#[derive(Debug)]
#[non_exhaustive]
pub enum RetireError {
    /// The directory is not one this process may fold: not a directory, a
    /// symbolic link, writable by others, or owned by another user. Fold as
    /// the directory's owner.
    Dir {
        /// The directory.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A file system call failed on `path`.
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

impl fmt::Display for RetireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RetireError::Dir { path, reason } => {
                write!(f, "{}: cannot fold here: {reason}", path.display())
            }
            RetireError::Io { path, source } => write!(f, "{}: {source}", path.display()),
        }
    }
}

impl std::error::Error for RetireError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RetireError::Io { source, .. } => Some(source),
            RetireError::Dir { .. } => None,
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> RetireError + '_ {
    move |source| RetireError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Whether this process may fold `dir`: a directory, not a symbolic link,
/// owned by this process's effective uid and not writable by group or
/// others. Returns that uid.
pub fn foldable(dir: &Path) -> Result<u32, RetireError> {
    let euid = mmstats::geteuid();
    let meta = fs::symlink_metadata(dir).map_err(io_err(dir))?;
    let bad = |reason: String| RetireError::Dir {
        path: dir.to_owned(),
        reason,
    };
    if !meta.is_dir() {
        return Err(bad("not a directory (or a symbolic link)".into()));
    }
    if meta.uid() != euid {
        return Err(bad(format!(
            "owned by uid {}, not by this process's uid {euid}; fold as the directory's owner",
            meta.uid()
        )));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(bad(format!(
            "writable by group or others (mode {:o})",
            meta.mode() & 0o7777
        )));
    }
    Ok(euid)
}

/// Folds the dead writers of `dir` into one archive per `(command, model)`
/// and removes their files (spec §2.8, "The fold"). Safe to run from
/// several processes at once and to kill at any point: the next fold
/// finishes the work and no total is counted twice or lost.
///
/// Only the directory's owner folds it: files of other users in it are
/// left alone, and a directory this process's user does not own is an
/// error. A file is folded when its writer is proven dead (its lock probe
/// says not alive, spec §2.4) and it is at least [`RetireOptions::min_age`]
/// old.
pub fn fold(dir: &Path, opts: &RetireOptions) -> Result<FoldReport, RetireError> {
    mmstats::install_sigbus_guard().map_err(io_err(dir))?;
    let euid = foldable(dir)?;
    let mut report = FoldReport::default();
    // Every stats file of the directory, grouped by (command, model).
    let mut groups: BTreeMap<(String, String), Vec<PathBuf>> = BTreeMap::new();
    let mut worth = HashSet::new();
    for (path, snap) in list(dir, euid, &mut report)? {
        // Only groups with an archive or a writer that may be dead.
        if snap.info.is_archive() || !snap.info.alive {
            worth.insert((snap.info.command.clone(), snap.info.model.clone()));
        }
        groups
            .entry((snap.info.command.clone(), snap.info.model.clone()))
            .or_default()
            .push(path);
    }
    for ((command, model), paths) in groups {
        if !worth.contains(&(command.clone(), model.clone())) {
            continue;
        }
        if let Err(e) = fold_group(dir, euid, &command, &model, &paths, opts, &mut report) {
            report
                .skipped
                .push((dir.join(archive_stem(&command, &model)), e));
        }
    }
    // What is left, for the caller's metrics.
    let mut after = FoldReport::default();
    let mut tokens = HashSet::new();
    for (_, snap) in list(dir, euid, &mut after)? {
        if snap.info.is_archive() {
            report.archives += 1;
        } else {
            report.files += 1;
            tokens.insert(snap.info.lock_token);
        }
    }
    report.removed += remove_dead_lock_files(dir, euid, &tokens);
    Ok(report)
}

/// How old an unlocked lock file must be before a fold removes it: a
/// writer locks its lock file right after creating it (spec §2.4), so one
/// unlocked this long after its creation belongs to a dead process.
pub const LOCK_FILE_MIN_AGE: Duration = Duration::from_secs(60);

/// Removes the lock files (spec §2.4) of dead processes that no stats file
/// names any more: a process killed without its exit handler leaves its
/// lock file behind, one per process. Returns how many were removed.
fn remove_dead_lock_files(dir: &Path, euid: u32, tokens: &HashSet<u64>) -> usize {
    let mut removed = 0;
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let Some(token) = name
            .to_str()
            .and_then(|n| n.strip_prefix(".lock.")?.strip_suffix(".mmstats-lock"))
            .and_then(|t| u64::from_str_radix(t, 16).ok())
        else {
            continue;
        };
        if tokens.contains(&token) {
            continue;
        }
        let path = dir.join(&name);
        let Ok(file) = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(&path)
        else {
            continue;
        };
        let old = file.metadata().is_ok_and(|m| {
            m.is_file()
                && m.uid() == euid
                && m.modified()
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age >= LOCK_FILE_MIN_AGE)
        });
        if old && crate::liveness::is_locked(&file) == Some(false) && fs::remove_file(&path).is_ok()
        {
            removed += 1;
        }
    }
    removed
}

/// Opens and reads every stats file of `dir` owned by `euid`.
fn list(
    dir: &Path,
    euid: u32,
    report: &mut FoldReport,
) -> Result<Vec<(PathBuf, Snapshot)>, RetireError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        if !crate::discover::is_stats_name(&name) {
            continue;
        }
        let path = dir.join(&name);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_file() && m.uid() == euid => {}
            _ => continue,
        }
        match read(&path, euid) {
            Ok(snap) => out.push((path, snap)),
            Err(e) if e.contains("No such file") => {}
            Err(e) => report.skipped.push((path, e)),
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn read(path: &Path, euid: u32) -> Result<Snapshot, String> {
    let reader =
        Reader::open_owned(path, &ReadLimits::default(), Some(euid)).map_err(|e| e.to_string())?;
    reader.snapshot().map_err(|e| e.to_string())
}

fn abort_at(opts: &RetireOptions, step: FoldStep) {
    if opts.abort_at == Some(step) {
        std::process::abort();
    }
}

fn now_ns() -> u64 {
    nanos(SystemTime::now())
}
