//! Retiring dead writers: folding their files into an archive, so that a
//! host of short-lived processes keeps a bounded number of files while
//! every total stays exact and never goes backwards (format-spec.md §2.8).
//!
//! - [`fold`] folds the proven-dead writer files of one directory into one
//!   *archive* per `(command, model)`: an ordinary stats file in state
//!   [`WriterState::Archive`] that holds the sums of their counters and
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
//! use mmstats::retire::{fold, RetireOptions};
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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use zerocopy::IntoBytes;

use crate::format::raw::{self, Header, StrRef};
use crate::format::{self, Kind, WriterState};
use crate::hist::HistogramSnapshot;
use crate::layout::Plan;
use crate::reader::{FileInfo, ReadLimits, Reader, Snapshot, Value};
use crate::schema::FieldDef;
use crate::sigbus::{self, ReadMap};

/// Who a writer file is, as an archive records it (spec §2.8): stable once
/// its writer is dead, unique over time, and not its inode (inodes are
/// reused). Two files with the same identity are the same file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourceId {
    /// The writer process's lock token (0 for a 1.0 file).
    pub lock_token: u64,
    /// The file's creation time, ns since the epoch.
    pub created_ns: u64,
    /// The writer process's start time, clock ticks since boot.
    pub proc_start: u64,
    /// The writer's process id.
    pub pid: u32,
    /// FNV-1a (32-bit) of the file's name (the last path component).
    pub name_hash: u32,
}

impl SourceId {
    /// The identity of the file `info` describes.
    pub(crate) fn of(info: &FileInfo) -> SourceId {
        let name = info
            .path
            .file_name()
            .map(|n| n.as_encoded_bytes())
            .unwrap_or_default();
        SourceId {
            lock_token: info.lock_token,
            created_ns: nanos(info.created),
            proc_start: info.process_start,
            pid: info.pid,
            name_hash: fnv1a32(name),
        }
    }

    fn encode(&self, absent_ns: u64, out: &mut [u8]) {
        raw::put_u64(out, raw::ID_LOCK_TOKEN, self.lock_token);
        raw::put_u64(out, raw::ID_CREATED_NS, self.created_ns);
        raw::put_u64(out, raw::ID_PROC_START, self.proc_start);
        raw::put_u32(out, raw::ID_PID, self.pid);
        raw::put_u32(out, raw::ID_NAME_HASH, self.name_hash);
        raw::put_u64(out, raw::ID_ABSENT_NS, absent_ns);
    }

    fn decode(b: &[u8]) -> (SourceId, u64) {
        (
            SourceId {
                lock_token: raw::get_u64(b, raw::ID_LOCK_TOKEN),
                created_ns: raw::get_u64(b, raw::ID_CREATED_NS),
                proc_start: raw::get_u64(b, raw::ID_PROC_START),
                pid: raw::get_u32(b, raw::ID_PID),
                name_hash: raw::get_u32(b, raw::ID_NAME_HASH),
            },
            raw::get_u64(b, raw::ID_ABSENT_NS),
        )
    }
}

/// 32-bit FNV-1a of `bytes` (offset basis 0x811c9dc5, prime 0x01000193).
pub fn fnv1a32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// 64-bit FNV-1a of `bytes`, for archive names (spec §2.8).
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// What an archive's header extension says (spec §2.8).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ArchiveInfo {
    /// How many writer files were ever folded into it.
    pub writers: u64,
    /// Creation time of the oldest writer file folded in.
    pub since: SystemTime,
    /// When the fold that wrote it ran.
    pub folded: SystemTime,
    /// How many folds have written this archive.
    pub folds: u64,
    /// The identities of the files folded in and not yet pruned, each with
    /// the time a fold found the file gone (`None`: it may still exist).
    pub ids: Vec<(SourceId, Option<SystemTime>)>,
    set: HashSet<SourceId>,
}

impl ArchiveInfo {
    /// Whether the file with identity `id` is folded into this archive.
    pub fn holds(&self, id: &SourceId) -> bool {
        self.set.contains(id)
    }

    /// Reads the extension of an archive whose header `h` was validated;
    /// `spend` charges the identities to the snapshot's byte budget.
    pub(crate) fn read(
        map: &ReadMap,
        h: &Header,
        mut spend: impl FnMut(u64) -> Result<(), String>,
    ) -> Result<ArchiveInfo, String> {
        let header_len = u64::from(h.header_len.get());
        if header_len < raw::A_IDS as u64 {
            return Err(format!(
                "header length {header_len} is shorter than an archive's {}",
                raw::A_IDS
            ));
        }
        let count = map.load(raw::A_ID_COUNT);
        let room = (header_len - raw::A_IDS as u64) / raw::ID_LEN as u64;
        if count > room {
            return Err(format!(
                "{count} source identities do not fit in the header (room for {room})"
            ));
        }
        spend(count * raw::ID_LEN as u64)?;
        let mut bytes = Vec::new();
        map.copy(raw::A_IDS, count as usize * raw::ID_LEN, &mut bytes);
        let ids: Vec<(SourceId, Option<SystemTime>)> = bytes
            .chunks_exact(raw::ID_LEN)
            .map(|b| {
                let (id, absent) = SourceId::decode(b);
                (id, (absent != 0).then(|| time(absent)))
            })
            .collect();
        Ok(ArchiveInfo {
            writers: map.load(raw::A_WRITERS),
            since: time(map.load(raw::A_SINCE_NS)),
            folded: time(map.load(raw::A_FOLDED_NS)),
            folds: map.load(raw::A_FOLDS),
            set: ids.iter().map(|(id, _)| *id).collect(),
            ids,
        })
    }
}

fn time(ns: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns)
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Which of `snaps` an archive among them already holds (spec §2.8, "Reading"):
/// `true` at the index of a writer file that must not be counted, because an
/// archive counts it.
///
/// A reader MUST read every writer file first, leave out those it finds
/// [unlinked](Reader::unlinked), and read the archives last; then each dead
/// writer is counted exactly once. An archive drops only files in its own
/// directory, of its own owner, command and model: a forged archive can
/// hide nothing its owner could not delete anyway.
pub fn folded(snaps: &[&Snapshot]) -> Vec<bool> {
    let mut archives: HashMap<(&Path, u32, &str, &str), Vec<&ArchiveInfo>> = HashMap::new();
    for s in snaps {
        if let Some(a) = &s.info.archive {
            archives.entry(key(&s.info)).or_default().push(a.as_ref());
        }
    }
    snaps
        .iter()
        .map(|s| {
            if archives.is_empty() || s.info.is_archive() {
                return false;
            }
            archives.get(&key(&s.info)).is_some_and(|list| {
                let id = s.info.source_id();
                list.iter().any(|a| a.holds(&id))
            })
        })
        .collect()
}

fn key(info: &FileInfo) -> (&Path, u32, &str, &str) {
    (
        parent(&info.path),
        info.owner,
        info.command.as_str(),
        info.model.as_str(),
    )
}

/// The directory of `p` (`.` for a bare file name).
pub(crate) fn parent(p: &Path) -> &Path {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// The path of the archive of `(command, model)` in `dir`.
pub(crate) fn archive_path(dir: &Path, command: &str, model: &str) -> PathBuf {
    dir.join(format!("{}.mmstats", archive_stem(command, model)))
}

/// The archive's file name stem for `(command, model)` (spec §2.8):
/// `{cmd}.{model}.archive`, or `{cmd}.{model}.archive-{16 hex}` with the
/// FNV-1a 64 of `command NUL model` when sanitising changed either name, so
/// two pairs never share an archive.
pub fn archive_stem(command: &str, model: &str) -> String {
    let (c, m) = (
        crate::options::sanitize(command),
        crate::options::sanitize(model),
    );
    if c == command && m == model {
        format!("{c}.{m}.archive")
    } else {
        let mut key = command.as_bytes().to_vec();
        key.push(0);
        key.extend_from_slice(model.as_bytes());
        format!("{c}.{m}.archive-{:016x}", fnv1a64(&key))
    }
}

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
    let euid = crate::sys::geteuid();
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
    sigbus::install_sigbus_guard().map_err(io_err(dir))?;
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

/// One `(command, model)` of a directory: the protocol of spec §2.8.
#[allow(clippy::too_many_arguments)]
fn fold_group(
    dir: &Path,
    euid: u32,
    command: &str,
    model: &str,
    paths: &[PathBuf],
    opts: &RetireOptions,
    report: &mut FoldReport,
) -> Result<(), String> {
    let stem = archive_stem(command, model);
    let archive_path = archive_path(dir, command, model);
    let tmp_path = dir.join(format!(".{stem}.fold-tmp"));
    let lock_path = dir.join(format!(".{stem}.fold-lock"));
    let show = |p: &Path, e: io::Error| format!("{}: {e}", p.display());

    // 1. The fold lock: one folder per (directory, command, model) at a
    //    time; the kernel releases it if the folder dies.
    let lock = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&lock_path)
        .map_err(|e| show(&lock_path, e))?;
    if !lock.metadata().is_ok_and(|m| m.is_file()) {
        return Err(format!("{}: not a regular file", lock_path.display()));
    }
    lock.lock().map_err(|e| show(&lock_path, e))?;
    abort_at(opts, FoldStep::Locked);

    // 2. The current archive, read under the lock: only folders replace it.
    let current = match fs::symlink_metadata(&archive_path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(show(&archive_path, e)),
        Ok(_) => {
            let snap = read(&archive_path, euid)?;
            if !snap.info.is_archive() || snap.info.command != command || snap.info.model != model {
                return Err(format!(
                    "{} is not the archive of command {command:?}, model {model:?}; not folding into it",
                    archive_path.display()
                ));
            }
            Some(snap)
        }
    };
    let held: HashMap<SourceId, Option<SystemTime>> = current
        .as_ref()
        .and_then(|s| s.info.archive.as_ref())
        .map(|a| a.ids.iter().copied().collect())
        .unwrap_or_default();

    // 3. The writer files, read again under the lock: a folder that held
    //    it before may have folded and removed some.
    let mut present = HashSet::new();
    let mut leftovers = Vec::new();
    let mut sources: Vec<(PathBuf, Snapshot)> = Vec::new();
    for path in paths {
        if *path == archive_path {
            continue;
        }
        let snap = match read(path, euid) {
            Ok(s) => s,
            Err(_) if fs::symlink_metadata(path).is_err() => continue,
            Err(e) => {
                report.skipped.push((path.clone(), e));
                continue;
            }
        };
        if snap.info.is_archive() || snap.info.command != command || snap.info.model != model {
            continue;
        }
        let id = snap.info.source_id();
        present.insert(id);
        if held.contains_key(&id) {
            // Folded by a fold that died before removing it.
            leftovers.push(path.clone());
        } else if snap.info.age() >= opts.min_age {
            if let Some(hook) = opts.after_read {
                hook(path);
            }
            if crate::liveness::probe_path(path) != Some(false) {
                continue;
            }
            // Read again now that the writer is proven dead: the read
            // above may predate its last stores, which would be lost once
            // the file is removed.
            match read(path, euid) {
                Ok(s) if s.info.source_id() == id && !s.info.is_archive() => {
                    sources.push((path.clone(), s))
                }
                Ok(_) => report
                    .skipped
                    .push((path.clone(), "replaced while being folded".into())),
                Err(e) => report.skipped.push((path.clone(), e)),
            }
        }
    }
    let scanned_ns = now_ns();

    // 4. The new identity set: marks of files found gone, and pruning.
    let mut ids: Vec<(SourceId, u64)> = Vec::new();
    let mut marked = false;
    let mut pruned = 0;
    let prune_after = opts.prune_after.max(opts.prune_floor);
    if let Some(a) = current.as_ref().and_then(|s| s.info.archive.as_ref()) {
        for (id, absent) in &a.ids {
            let absent_ns = absent.map_or(0, nanos);
            if present.contains(id) {
                ids.push((*id, 0));
            } else if absent_ns == 0 {
                marked = true;
                ids.push((*id, scanned_ns));
            } else if Duration::from_nanos(scanned_ns.saturating_sub(absent_ns)) > prune_after {
                pruned += 1;
            } else {
                ids.push((*id, absent_ns));
            }
        }
    }

    // 5. The new archive's values.
    sources.sort_by_key(|(_, s)| nanos(s.info.created));
    let mut acc = Archive::default();
    if let Some(snap) = &current {
        for f in &snap.fields {
            let _ = acc.add(f);
        }
    }
    let mut folded = Vec::new();
    for (path, snap) in sources {
        let mut trial = acc.clone();
        match snap.fields.iter().try_for_each(|f| trial.add(f)) {
            Ok(()) => {
                acc = trial;
                ids.push((snap.info.source_id(), 0));
                folded.push((path, snap.info));
            }
            Err(e) => report.skipped.push((path, e)),
        }
    }

    if !folded.is_empty() || marked || pruned > 0 {
        let info = current.as_ref().and_then(|s| s.info.archive.as_ref());
        let mut since = info.map_or(u64::MAX, |a| nanos(a.since));
        for (_, i) in &folded {
            since = since.min(nanos(i.created));
        }
        let ext = Extension {
            writers: info.map_or(0, |a| a.writers) + folded.len() as u64,
            since_ns: if since == u64::MAX { 0 } else { since },
            folded_ns: now_ns(),
            folds: info.map_or(0, |a| a.folds) + 1,
            ids,
        };
        let image = acc.image(command, model, &ext)?;
        // 6. The new archive, whole, under a temporary name.
        match fs::remove_file(&tmp_path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(show(&tmp_path, e)),
            _ => {}
        }
        let written = write_new(&tmp_path, &image);
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp_path);
            return Err(show(&tmp_path, e));
        }
        // Never publish an archive that readers (and the next fold) would
        // refuse under the default limits: its counts would vanish from
        // every total. The union of the sources' fields can exceed a limit
        // that each source met; then the sources stay as they are.
        if let Err(e) = read(&tmp_path, euid) {
            let _ = fs::remove_file(&tmp_path);
            return Err(format!(
                "{}: not folding, the new archive would not be readable: {e}",
                archive_path.display()
            ));
        }
        abort_at(opts, FoldStep::TempWritten);
        // 7. Published in one step: readers see the old archive or the new.
        let published = if current.is_some() {
            fs::rename(&tmp_path, &archive_path)
        } else {
            // Never over a file that appeared meanwhile.
            fs::hard_link(&tmp_path, &archive_path).and_then(|()| fs::remove_file(&tmp_path))
        };
        if let Err(e) = published {
            let _ = fs::remove_file(&tmp_path);
            return Err(show(&archive_path, e));
        }
        abort_at(opts, FoldStep::Published);
        report.archives_written += 1;
        report.folded += folded.len();
        report.pruned += pruned;
    }

    // 8. Only now the files the new archive holds.
    let mut first = true;
    for path in folded.iter().map(|(p, _)| p).chain(&leftovers) {
        match fs::remove_file(path) {
            Ok(()) => report.removed += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => report.skipped.push((path.clone(), e.to_string())),
        }
        if first {
            abort_at(opts, FoldStep::HalfRemoved);
            first = false;
        }
    }
    drop(lock);
    Ok(())
}

/// Creates `path` anew (never through a planted link) and writes `image`.
fn write_new(path: &Path, image: &[u8]) -> io::Result<()> {
    let mut f: File = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    f.write_all(image)?;
    f.set_permissions(fs::Permissions::from_mode(0o644))?;
    Ok(())
}

/// The archive header extension to write.
struct Extension {
    writers: u64,
    since_ns: u64,
    folded_ns: u64,
    folds: u64,
    ids: Vec<(SourceId, u64)>,
}

/// A field's folded value.
#[derive(Clone, Debug)]
enum Folded {
    Counter(u64),
    Histogram(HistogramSnapshot),
    /// Text or constant: the newest writer's last value.
    Text(String),
}

/// The folded fields, in the order first seen.
#[derive(Clone, Debug, Default)]
struct Archive {
    fields: Vec<(FieldDef, Folded)>,
    index: HashMap<String, usize>,
}

impl Archive {
    /// Folds one field in: counters add, histograms merge, texts keep the
    /// last value, gauges are dropped. A field whose kind or layout does
    /// not match the archive's field of that label is an error.
    fn add(&mut self, f: &crate::reader::Field) -> Result<(), String> {
        let conflict = |what: &str| format!("field {}: {what} differs from the archive's", f.label);
        match (&f.value, self.index.get(&f.label)) {
            (Value::Gauge(_) | Value::GaugeF64(_), _) => Ok(()),
            (Value::Unavailable(_), _) => Ok(()),
            (value, Some(&i)) => {
                let (def, have) = &mut self.fields[i];
                if def.kind != f.kind {
                    return Err(conflict("kind"));
                }
                match (have, value) {
                    (Folded::Counter(a), Value::Counter(b)) => *a = a.saturating_add(*b),
                    (Folded::Histogram(a), Value::Histogram(b)) => {
                        a.merge(b).map_err(|_| conflict("bucket layout"))?
                    }
                    (Folded::Text(a), Value::Text(b) | Value::Constant(b)) => {
                        def.param0 = def.param0.max(b.len() as u64);
                        *a = b.clone();
                    }
                    _ => return Err(conflict("kind")),
                }
                Ok(())
            }
            (value, None) => {
                let (mut def, folded) = match value {
                    Value::Counter(n) => (FieldDef::counter(&f.label), Folded::Counter(*n)),
                    Value::Histogram(h) if f.kind == Kind::Timer => (
                        FieldDef::timer(&f.label, h.layout()),
                        Folded::Histogram(h.clone()),
                    ),
                    Value::Histogram(h) => (
                        FieldDef::histogram(&f.label, h.layout()),
                        Folded::Histogram(h.clone()),
                    ),
                    Value::Text(s) => (FieldDef::text(&f.label, s.len()), Folded::Text(s.clone())),
                    Value::Constant(s) => (
                        FieldDef::constant(&f.label, s.len()),
                        Folded::Text(s.clone()),
                    ),
                    _ => return Ok(()),
                };
                def.help = f.help.clone();
                def.unit = f.unit;
                def.unit_text = f.unit_text.clone();
                def.static_labels = f.static_labels.clone();
                self.index.insert(f.label.clone(), self.fields.len());
                self.fields.push((def, folded));
                Ok(())
            }
        }
    }

    /// The archive file's bytes (spec §2.8, "Layout").
    fn image(&self, command: &str, model: &str, ext: &Extension) -> Result<Vec<u8>, String> {
        let mut value_lens = Vec::with_capacity(self.fields.len());
        let mut string_bytes = (command.len() + model.len()) as u64;
        for (def, _) in &self.fields {
            value_lens.push(def.validate().map_err(|e| e.to_string())?);
            string_bytes += def.string_bytes() as u64;
        }
        let header_len = (raw::A_IDS + ext.ids.len() * raw::ID_LEN) as u64;
        let table_off = header_len;
        let strings_off = table_off + (self.fields.len() * raw::RECORD_LEN) as u64;
        let strings_len = (string_bytes + 7) & !7;
        let values_off = strings_off + strings_len;
        let values_len = value_lens.iter().map(|&l| l as u64).sum::<u64>();
        let file_len = values_off + values_len;
        if file_len > format::MAX_FILE_LEN {
            return Err(format!(
                "the archive would be {file_len} bytes, over the limit of {}",
                format::MAX_FILE_LEN
            ));
        }
        let n = self.fields.len() as u64;
        let header = Header {
            magic: format::MAGIC,
            major: format::VERSION_MAJOR.into(),
            minor: format::VERSION_MINOR.into(),
            bom: format::BYTE_ORDER_MARK.into(),
            header_len: (header_len as u32).into(),
            record_len: (raw::RECORD_LEN as u32).into(),
            file_len: file_len.into(),
            state: WriterState::ARCHIVE.into(),
            field_count: n.into(),
            field_capacity: (n as u32).into(),
            field_table_off: (table_off as u32).into(),
            strings_off: (strings_off as u32).into(),
            strings_len: (strings_len as u32).into(),
            values_off: (values_off as u32).into(),
            values_len: (values_len as u32).into(),
            // No writer: 0, so that every archive of a (command, model)
            // falls in one group when a reader groups by pid.
            pid: 0.into(),
            tid: 0.into(),
            proc_start: 0.into(),
            created_ns: ext.folded_ns.into(),
            command: StrRef::default(),
            model: StrRef::default(),
            lock_token: 0.into(),
            fallbacks: 0.into(),
        };
        let mut image = vec![0u8; file_len as usize];
        let mut plan = Plan {
            image: &mut image,
            header,
            strings_used: 0,
            values_used: 0,
        };
        plan.header.command = plan.push_string(command);
        plan.header.model = plan.push_string(model);
        let mut offsets = Vec::with_capacity(self.fields.len());
        for (i, ((def, _), &len)) in self.fields.iter().zip(&value_lens).enumerate() {
            offsets.push(plan.write_field(i, def, len));
        }
        let header = plan.header.clone();
        image[..raw::HEADER_LEN].copy_from_slice(header.as_bytes());
        raw::put_u64(&mut image, raw::A_WRITERS, ext.writers);
        raw::put_u64(&mut image, raw::A_SINCE_NS, ext.since_ns);
        raw::put_u64(&mut image, raw::A_FOLDED_NS, ext.folded_ns);
        raw::put_u64(&mut image, raw::A_FOLDS, ext.folds);
        raw::put_u64(&mut image, raw::A_ID_COUNT, ext.ids.len() as u64);
        for (i, (id, absent)) in ext.ids.iter().enumerate() {
            let at = raw::A_IDS + i * raw::ID_LEN;
            id.encode(*absent, &mut image[at..at + raw::ID_LEN]);
        }
        for ((def, value), off) in self.fields.iter().zip(offsets) {
            match value {
                Folded::Counter(n) => raw::put_u64(&mut image, off, *n),
                Folded::Histogram(h) => {
                    raw::put_u64(&mut image, off + raw::HIST_SUM, h.sum());
                    for (i, c) in h.counts().iter().enumerate() {
                        raw::put_u64(&mut image, off + raw::HIST_BUCKETS + 8 * i, *c);
                    }
                }
                Folded::Text(s) if s.is_empty() => {}
                Folded::Text(s) => {
                    // Write 1 complete, in buffer 1 (spec §6.3).
                    let cap = def.param0 as usize;
                    let buf = off + raw::text_buffer(cap, 1);
                    raw::put_u64(&mut image, off + raw::TEXT_SEQ, 2);
                    raw::put_u64(&mut image, buf + raw::TEXT_BUF_LEN, s.len() as u64);
                    let b = buf + raw::TEXT_BUF_BYTES;
                    image[b..b + s.len()].copy_from_slice(s.as_bytes());
                }
            }
        }
        Ok(image)
    }
}

/// Reads `files` as the protocol of spec §2.8 says a one-shot reader must:
/// every writer file first, leaving out those removed since they were
/// listed; then every archive, opened anew (a fold may have replaced it),
/// including the archive of a removed file if the listing missed it; then
/// leaves out the writer files an archive holds. Returns what was read
/// (or why not) in path order, each file once.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// mmstats::install_sigbus_guard()?;
/// let (files, _problems) = mmstats::scan(&[dir.path()]);
/// for (found, snap) in mmstats::retire::read_all(&files, &mmstats::ReadLimits::default()) {
///     let _ = (found.path, snap);
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn read_all(
    files: &[crate::Found],
    limits: &ReadLimits,
) -> Vec<(crate::Found, Result<Snapshot, crate::ReadError>)> {
    // A reading slower than a fold may wait before pruning is taken again.
    for _ in 0..2 {
        let start = std::time::Instant::now();
        let read = read_all_once(files, limits);
        if start.elapsed() <= MAX_READ_SPAN {
            return read;
        }
    }
    read_all_once(files, limits)
}

fn read_all_once(
    files: &[crate::Found],
    limits: &ReadLimits,
) -> Vec<(crate::Found, Result<Snapshot, crate::ReadError>)> {
    let mut out: BTreeMap<PathBuf, (crate::Found, Result<Snapshot, crate::ReadError>)> =
        BTreeMap::new();
    let mut archives: BTreeMap<PathBuf, crate::Found> = BTreeMap::new();
    for found in files {
        let read = found
            .open(limits)
            .and_then(|r| r.snapshot().map(|s| (r, s)));
        match read {
            Ok((_, snap)) if snap.info.is_archive() => {
                archives.insert(found.path.clone(), found.clone());
            }
            Ok((reader, snap)) if reader.unlinked() => {
                let path = archive_path(parent(&found.path), &snap.info.command, &snap.info.model);
                archives.entry(path.clone()).or_insert(crate::Found {
                    path,
                    foreign: found.foreign,
                    owner: found.owner,
                });
            }
            Ok((_, snap)) => {
                out.insert(found.path.clone(), (found.clone(), Ok(snap)));
            }
            // Removed since it was listed: folded, perhaps into an archive
            // the listing did not see yet.
            Err(crate::ReadError::Io { source, .. })
                if source.kind() == io::ErrorKind::NotFound =>
            {
                let dir = parent(&found.path);
                for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
                    let name = entry.file_name();
                    if name.as_encoded_bytes().windows(8).any(|w| w == b".archive")
                        && crate::discover::is_stats_name(&name)
                    {
                        let path = dir.join(&name);
                        archives.entry(path.clone()).or_insert(crate::Found {
                            path,
                            foreign: found.foreign,
                            owner: found.owner,
                        });
                    }
                }
            }
            Err(e) => {
                out.insert(found.path.clone(), (found.clone(), Err(e)));
            }
        }
    }
    // The archive of every writer file's command and model, opened by name
    // even if the listing missed it: a directory listing is not a snapshot,
    // and one made while a fold replaced the archive may miss it (and so
    // lose the counts of files folded earlier). A fold never removes an
    // archive's name, only replaces the file under it.
    let groups: HashSet<(&Path, &str, &str)> = out
        .values()
        .filter_map(|(_, r)| r.as_ref().ok())
        .map(|s| {
            (
                parent(&s.info.path),
                s.info.command.as_str(),
                s.info.model.as_str(),
            )
        })
        .collect();
    for (dir, command, model) in groups {
        let path = archive_path(dir, command, model);
        if let Some(found) = files.iter().find(|f| parent(&f.path) == dir) {
            archives.entry(path.clone()).or_insert(crate::Found {
                path,
                foreign: found.foreign,
                owner: found.owner,
            });
        }
    }
    for (path, found) in archives {
        let listed = files.iter().any(|f| f.path == path);
        match found.open(limits).and_then(|r| r.snapshot()) {
            Ok(snap) if snap.info.is_archive() || listed => {
                out.insert(path, (found, Ok(snap)));
            }
            Ok(_) => {}
            // Gone, and not listed: nothing to report.
            Err(_) if !listed => {}
            Err(e) => {
                out.insert(path, (found, Err(e)));
            }
        }
    }
    let snaps: Vec<&Snapshot> = out.values().filter_map(|(_, r)| r.as_ref().ok()).collect();
    let drop: HashSet<PathBuf> = folded(&snaps)
        .into_iter()
        .zip(&snaps)
        .filter(|(f, _)| *f)
        .map(|(_, s)| s.info.path.clone())
        .collect();
    out.into_iter()
        .filter(|(p, _)| !drop.contains(p))
        .map(|(_, v)| v)
        .collect()
}
