//! [`Sources`]: the open readers of every stats file a view reads, kept up
//! to date by file system events and a periodic full rescan.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use notify::{EventKind, RecursiveMode, Watcher};

use super::budget::{Budgets, OwnerBudget};
use super::identity::FileId;
use super::matcher::Matcher;
use super::sample::{dedup, FileSample, Ghosts, Sample};
use super::Warning;
use crate::archive::{archive_path, parent};
use crate::discover::scan;
use crate::reader::{LivenessMemo, ReadLimits, Reader, Snapshot};

/// How often [`Sources`] lists every source again by default, to catch
/// what file system events missed.
pub const DEFAULT_RESCAN: Duration = Duration::from_secs(10);

/// The stats files named by some paths, each kept open as a [`Reader`].
///
/// The paths are those [`discover`](crate::discover) takes: files,
/// directories and glob patterns, or none for the default directories.
/// `Sources` watches the directories involved for created, deleted and
/// renamed files, and so only looks at the names an event was about; every
/// [`rescan interval`](Sources::set_rescan_interval) it lists everything
/// again, in case events were lost. If the watch cannot be set up (inotify
/// limits), it lists everything on every sample, and says so in a warning.
pub struct Sources {
    args: Vec<OsString>,
    matcher: Matcher,
    watch: Option<Watch>,
    rescan_interval: Duration,
    next_rescan: Instant,
    files: BTreeMap<PathBuf, Tracked>,
    /// Paths that could not be opened, with the last reason reported.
    failed: HashMap<PathBuf, String>,
    /// Discovery problems already reported.
    reported: HashSet<String>,
    warnings: Vec<Warning>,
    /// The owner each listed file must have (default scans), by path.
    owners: HashMap<PathBuf, Option<u32>>,
    /// Problems in other users' directories at the last rescan.
    foreign_skipped: usize,
    limits: ReadLimits,
    /// Writers' lock files, kept open between samples.
    liveness: LivenessMemo,
    /// The archive path of every (directory, command, model) of a writer
    /// file opened since the last rescan: looked up by name at every
    /// sample, whether a listing or an event named it or not (§2.8).
    group_archives: BTreeSet<PathBuf>,
    /// The path each tracked inode is read under: a second name of one
    /// inode (a hard link) is not opened again.
    inodes: HashMap<(u64, u64), PathBuf>,
    /// Writer files no longer found, and identities of ones counted.
    ghosts: Ghosts,
    /// Other names of tracked inodes skipped at the last rescan.
    aliases_skipped: usize,
    /// What each owner's files cost, and may.
    budgets: Budgets,
}

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sources")
            .field("args", &self.args)
            .field("files", &self.files.len())
            .field("watching", &self.watch.is_some())
            .finish()
    }
}

struct Tracked {
    id: FileId,
    reader: Reader,
    /// The reading its owner's budget was charged by.
    charged: Arc<Snapshot>,
    last: Arc<Snapshot>,
    /// Read when opened, not yet handed out in a sample.
    unsent: bool,
    /// A file counted before whose last reading was dropped: its first
    /// reading is only a baseline.
    baseline_only: bool,
    /// The last read error reported for this file.
    error: Option<String>,
}

struct Watch {
    watcher: notify::RecommendedWatcher,
    events: Receiver<notify::Result<notify::Event>>,
    dirs: HashSet<PathBuf>,
    /// Directories watched for a directory of interest to appear in them:
    /// `/dev/shm` for new `mmstats-*` (a default scan), the nearest
    /// existing ancestor of a directory that does not exist yet.
    parents: HashSet<PathBuf>,
}

impl Sources {
    /// Finds the files named by `args` and opens them; starts watching.
    /// Problems are reported with the first [`sample`](Sources::sample).
    pub fn new<S: AsRef<OsStr>>(args: &[S]) -> Sources {
        Sources::with_budget(args, OwnerBudget::default())
    }

    /// As [`new`](Sources::new), with what one owner's files may cost.
    pub fn with_budget<S: AsRef<OsStr>>(args: &[S], budget: OwnerBudget) -> Sources {
        let args: Vec<OsString> = args.iter().map(|a| a.as_ref().to_owned()).collect();
        let mut warnings = Vec::new();
        let (tx, rx) = mpsc::channel();
        let watch = match notify::recommended_watcher(tx) {
            Ok(watcher) => Some(Watch {
                watcher,
                events: rx,
                dirs: HashSet::new(),
                parents: HashSet::new(),
            }),
            Err(e) => {
                warnings.push(Warning {
                    path: PathBuf::from("(file watch)"),
                    reason: format!(
                        "cannot watch for new files ({e}); listing every source on every sample"
                    ),
                });
                None
            }
        };
        let mut sources = Sources {
            matcher: Matcher::new(&args),
            args,
            watch,
            rescan_interval: DEFAULT_RESCAN,
            next_rescan: Instant::now(),
            files: BTreeMap::new(),
            failed: HashMap::new(),
            reported: HashSet::new(),
            warnings,
            owners: HashMap::new(),
            foreign_skipped: 0,
            limits: ReadLimits::default(),
            liveness: LivenessMemo::new(),
            group_archives: BTreeSet::new(),
            inodes: HashMap::new(),
            ghosts: Ghosts::default(),
            aliases_skipped: 0,
            budgets: Budgets::default(),
        };
        sources.budgets.budget = budget;
        sources.rescan();
        sources
    }

    /// Sets how often every source is listed again (default
    /// [`DEFAULT_RESCAN`]); zero lists them on every sample.
    pub fn set_rescan_interval(&mut self, every: Duration) {
        self.rescan_interval = every;
        self.next_rescan = Instant::now() + every;
    }

    /// Sets what one owner's files may cost (default
    /// [`OwnerBudget::default`]); applies to files opened from now on.
    pub fn set_budget(&mut self, budget: OwnerBudget) {
        self.budgets.budget = budget;
    }

    /// Files not read at the last rescan (and since) because their owner
    /// was over its budget, by owner uid.
    pub fn over_budget(&self) -> &BTreeMap<u32, usize> {
        &self.budgets.over
    }

    /// Whether file system events are being watched.
    pub fn is_watching(&self) -> bool {
        self.watch.is_some()
    }

    /// Number of files open.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether no file is open.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Lists every source now: opens new files, drops vanished ones and
    /// re-opens replaced ones.
    pub fn rescan(&mut self) {
        self.next_rescan = Instant::now() + self.rescan_interval;
        self.aliases_skipped = 0;
        let reports = self.budgets.report();
        self.warnings.extend(reports);
        self.matcher = Matcher::new(&self.args);
        // Rebuilt from the files still tracked, so groups that are gone
        // do not accumulate.
        self.group_archives = self
            .files
            .iter()
            .filter(|(_, t)| !t.last.info.is_archive())
            .map(|(p, t)| archive_path_of(p, &t.last))
            .collect();
        // Watched before listing: a file made in a new directory between
        // the listing and the watch would wait for the next rescan.
        let mut first: Vec<PathBuf> = self.matcher.dirs.iter().cloned().collect();
        first.extend(self.matcher.file_dirs.iter().cloned());
        self.watch_dirs(first);
        self.watch_parents();
        let (found, problems) = scan(&self.args);
        let paths: Vec<PathBuf> = found.iter().map(|f| f.path.clone()).collect();
        self.owners = found.into_iter().map(|f| (f.path, f.owner)).collect();
        let mut seen = HashSet::new();
        self.foreign_skipped = problems.iter().filter(|p| p.foreign).count();
        // Other users' junk in a default scan is counted, not reported file
        // by file (see `Sample::foreign_skipped`).
        for p in problems.into_iter().filter(|p| !p.foreign) {
            let key = p.to_string();
            if self.reported.insert(key.clone()) {
                self.warnings.push(Warning {
                    path: PathBuf::from(p.path),
                    reason: p.reason,
                });
            }
            seen.insert(key);
        }
        // A problem that went away may be reported again if it comes back.
        self.reported.retain(|k| seen.contains(k));
        let wanted: HashSet<&PathBuf> = paths.iter().collect();
        let gone: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|p| !wanted.contains(p))
            .cloned()
            .collect();
        // A listing is not a snapshot: one taken while a fold renames a new
        // archive over the old can miss the name, though the name never
        // stops existing. An archive missing from a listing that still
        // covers its directory is looked up by name before it is dropped.
        let listed_dirs: HashSet<&Path> = paths.iter().map(|p| parent(p)).collect();
        for p in gone {
            let archive = self.files.get(&p).is_some_and(|t| t.last.info.is_archive());
            if archive && listed_dirs.contains(parent(&p)) {
                self.check(&p);
            } else if let Some(t) = self.forget(&p) {
                self.check_archive_of(&t);
            }
        }
        self.failed.retain(|p, _| wanted.contains(p));
        for p in &paths {
            self.check(p);
        }
        let mut dirs: Vec<PathBuf> = self.matcher.dirs.iter().cloned().collect();
        dirs.extend(self.matcher.file_dirs.iter().cloned());
        dirs.extend(
            paths
                .iter()
                .map(|p| parent(p).to_owned())
                .collect::<HashSet<_>>(),
        );
        self.watch_dirs(dirs);
    }

    /// Watches where the directories of interest will appear: the parent
    /// of the per-user directories for a default scan, and the nearest
    /// existing ancestor of each directory source that does not exist.
    fn watch_parents(&mut self) {
        let mut wanted: HashSet<PathBuf> = HashSet::new();
        if self.args.is_empty() && std::env::var_os(mmstats::DIR_ENV).is_none_or(|d| d.is_empty()) {
            wanted.insert(mmstats::shm_root());
        }
        for dir in self.matcher.dirs.iter().chain(&self.matcher.file_dirs) {
            if dir.is_dir() {
                continue;
            }
            let mut p = dir.parent();
            while let Some(a) = p {
                let a = if a.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    a
                };
                if a.is_dir() {
                    wanted.insert(a.to_owned());
                    break;
                }
                p = a.parent();
            }
        }
        let Some(watch) = &mut self.watch else { return };
        watch.parents.retain(|p| {
            let keep = wanted.contains(p);
            if !keep {
                let _ = watch.watcher.unwatch(p);
            }
            keep
        });
        for p in wanted {
            if watch.parents.contains(&p) || watch.dirs.contains(&p) {
                continue;
            }
            if watch.watcher.watch(&p, RecursiveMode::NonRecursive).is_ok() {
                watch.parents.insert(p);
            }
        }
    }

    /// Whether an event about `p` may be a directory of interest
    /// appearing (or its ancestor): then every source is listed again.
    fn is_new_source_dir(&self, p: &Path) -> bool {
        let Some(watch) = &self.watch else {
            return false;
        };
        if !watch.parents.contains(parent(p)) {
            return false;
        }
        if self.args.is_empty()
            && parent(p) == mmstats::shm_root()
            && p.file_name()
                .is_some_and(|n| n.as_encoded_bytes().starts_with(b"mmstats-"))
        {
            return true;
        }
        self.matcher
            .dirs
            .iter()
            .chain(&self.matcher.file_dirs)
            .any(|d| d.starts_with(p))
    }

    fn watch_dirs(&mut self, dirs: Vec<PathBuf>) {
        let Some(watch) = &mut self.watch else { return };
        // The kernel drops the watch of a directory that was removed; one
        // made again under the same name is watched anew.
        watch.dirs.retain(|d| d.is_dir());
        for d in dirs {
            if watch.dirs.contains(&d) {
                continue;
            }
            match watch.watcher.watch(&d, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    watch.dirs.insert(d);
                }
                Err(e) => {
                    // Still found by the periodic rescan.
                    let key = format!("watch {}: {e}", d.display());
                    if self.reported.insert(key) {
                        self.warnings.push(Warning {
                            path: d,
                            reason: format!("cannot watch ({e}); new files are found by the periodic rescan only"),
                        });
                    }
                }
            }
        }
    }

    /// Brings one path up to date: drops it if gone, opens it if new or
    /// replaced.
    fn check(&mut self, path: &Path) {
        let meta = match fs::metadata(path) {
            Ok(m) => m,
            Err(_) => {
                if let Some(gone) = self.forget(path) {
                    self.check_archive_of(&gone);
                }
                self.failed.remove(path);
                return;
            }
        };
        if let Some(t) = self.files.get(path) {
            if (t.id.dev, t.id.ino) == (meta.dev(), meta.ino()) {
                return;
            }
        }
        // New, or a new file under the old name: the old one has vanished.
        self.forget(path);
        // Another name of an inode already read (a hard link): one file.
        if let Some(other) = self.inodes.get(&(meta.dev(), meta.ino())) {
            let still = fs::symlink_metadata(other)
                .is_ok_and(|m| (m.dev(), m.ino()) == (meta.dev(), meta.ino()));
            if other != path && still && self.files.contains_key(other) {
                self.aliases_skipped += 1;
                return;
            }
        }
        // In a default scan, only files owned by their directory's owner
        // (as `scan` decides; for a file an event named, the same rule).
        let owner = match self.owners.get(path) {
            Some(owner) => *owner,
            None if self.args.is_empty() => {
                fs::symlink_metadata(parent(path)).ok().map(|m| m.uid())
            }
            None => None,
        };
        // An owner at its budget: not even opened.
        if self.budgets.full(meta.uid(), meta.len()) {
            return;
        }
        match open(path, &self.limits, owner) {
            Ok((id, reader, snap)) => {
                self.failed.remove(path);
                if !self.budgets.charge(&reader, &snap) {
                    return;
                }
                if !snap.info.is_archive() {
                    self.group_archives.insert(archive_path_of(path, &snap));
                }
                // Back from elsewhere: measured against its last reading
                // (the ghost stays in samples while it is not fresh), or,
                // if that was dropped, against its first reading now.
                let baseline_only = self.ghosts.revive(&id.key);
                self.inodes.insert((id.dev, id.ino), path.to_owned());
                self.files.insert(
                    path.to_owned(),
                    Tracked {
                        id,
                        reader,
                        charged: Arc::clone(&snap),
                        last: snap,
                        unsent: !baseline_only,
                        baseline_only,
                        error: None,
                    },
                );
            }
            Err(reason) => {
                if self.failed.get(path) != Some(&reason) {
                    self.warnings.push(Warning {
                        path: path.to_owned(),
                        reason: reason.clone(),
                    });
                    self.failed.insert(path.to_owned(), reason);
                }
            }
        }
    }

    /// Stops reading `path`; a writer file's last reading becomes a ghost.
    fn forget(&mut self, path: &Path) -> Option<Tracked> {
        let t = self.files.remove(path)?;
        self.budgets.refund(&t.reader, &t.charged);
        if self.inodes.get(&(t.id.dev, t.id.ino)).map(PathBuf::as_path) == Some(path) {
            self.inodes.remove(&(t.id.dev, t.id.ino));
        }
        if !t.last.info.is_archive() {
            let ghost = FileSample {
                id: t.id.clone(),
                snapshot: Arc::clone(&t.last),
                fresh: false,
                gone: true,
            };
            self.ghosts.bury(ghost, Instant::now());
        }
        Some(t)
    }

    /// Writer files remembered as gone (see [`GHOST_TTL`](super::GHOST_TTL)).
    pub fn ghosts(&self) -> usize {
        self.ghosts.len()
    }

    /// A writer file that vanished may have been folded (spec §2.8): its
    /// archive is opened now, even if no event or listing named it yet, so
    /// that its counts are not missing from the next sample.
    fn check_archive_of(&mut self, gone: &Tracked) {
        let info = &gone.last.info;
        if info.is_archive() {
            return;
        }
        let archive = archive_path_of(&gone.id.path, &gone.last);
        if archive != gone.id.path && self.matcher.canonical(&archive).is_some() {
            self.check(&archive);
        }
    }

    /// Applies the file system events received since the last call;
    /// returns whether a full rescan is needed.
    fn apply_events(&mut self) -> bool {
        let Some(watch) = &mut self.watch else {
            return true;
        };
        let mut dirty = Vec::new();
        let mut rescan = false;
        loop {
            match watch.events.try_recv() {
                Ok(Ok(event)) => {
                    if event.need_rescan() {
                        rescan = true;
                    }
                    if matches!(
                        event.kind,
                        EventKind::Create(_)
                            | EventKind::Remove(_)
                            | EventKind::Modify(notify::event::ModifyKind::Name(_))
                            | EventKind::Modify(notify::event::ModifyKind::Any)
                            | EventKind::Any
                            | EventKind::Other
                    ) {
                        dirty.extend(event.paths);
                    }
                }
                // The watcher's own error (e.g. the event queue overflowed).
                Ok(Err(_)) => rescan = true,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    self.watch = None;
                    self.warnings.push(Warning {
                        path: PathBuf::from("(file watch)"),
                        reason: "the file watch stopped; listing every source on every sample"
                            .into(),
                    });
                    return true;
                }
            }
        }
        if rescan {
            return true;
        }
        dirty.sort();
        dirty.dedup();
        if dirty.iter().any(|p| self.is_new_source_dir(p)) {
            return true;
        }
        for p in dirty {
            // A watched directory that went away: the rescan sorts it out.
            if watch_dir_gone(&p, self.watch.as_ref()) {
                return true;
            }
            if let Some(path) = self.matcher.canonical(&p) {
                self.check(&path);
            }
        }
        false
    }

    /// Reads every file. Applies file system events first, and lists every
    /// source again if the rescan interval has passed.
    pub fn sample(&mut self) -> Sample {
        // A snapshot taken when a file was opened is handed out only by the
        // sample whose rescan opened it: one opened earlier (by `new`, or a
        // `rescan` long before) is stale, and would show old values at
        // this sample's time (a rate of 0 over the files' age).
        for t in self.files.values_mut() {
            t.unsent = false;
        }
        let rescan = self.apply_events();
        if rescan || Instant::now() >= self.next_rescan {
            self.rescan();
        }
        // Writer files first, archives last, then what archives hold is
        // left out: each dead writer counted once (spec §2.8, "Reading").
        // A read that took longer than a fold may wait before pruning an
        // identity is taken again.
        let mut tries = 0;
        let (time, instant, mut files) = loop {
            let time = SystemTime::now();
            let instant = Instant::now();
            let files = self.read_files();
            tries += 1;
            if instant.elapsed() <= crate::retire::MAX_READ_SPAN || tries == 3 {
                break (time, instant, files);
            }
        };
        let snaps: Vec<&Snapshot> = files.iter().map(|f| &*f.snapshot).collect();
        let folded = crate::retire::folded(&snaps);
        let mut folded = folded.into_iter();
        files.retain(|_| !folded.next().unwrap_or(false));
        dedup(&mut files);
        // A file found again is no longer a ghost; the others stay in the
        // sample, stale, so that one coming back is measured against them.
        let now = Instant::now();
        for f in &files {
            self.ghosts.found(&f.id.key);
        }
        self.ghosts.expire(now);
        if self.ghosts.len() > 0 {
            files.extend(self.ghosts.samples());
            files.sort_by(|a, b| a.id.cmp(&b.id));
        }
        Sample {
            time,
            instant,
            files,
            warnings: std::mem::take(&mut self.warnings),
            foreign_skipped: self.foreign_skipped,
        }
    }

    /// Reads every writer file, leaves out those removed since they were
    /// opened, then brings the archives up to date (an archive never
    /// changes: a fold publishes a new file under its name).
    fn read_files(&mut self) -> Vec<FileSample> {
        let mut files = Vec::with_capacity(self.files.len());
        let mut unlinked = Vec::new();
        let mut archives = Vec::new();
        // Files of one writer process share its lock file: probed once.
        self.liveness.next_pass();
        for (path, t) in self.files.iter_mut() {
            if t.last.info.is_archive() {
                archives.push(path.clone());
                continue;
            }
            let fresh = if std::mem::take(&mut t.baseline_only) {
                false
            } else if std::mem::take(&mut t.unsent) {
                true
            } else {
                // Shared: an idle file gives the very snapshot it gave last
                // time, which `View::delta` then skips over cheaply.
                match t.reader.snapshot_shared_with(&mut self.liveness) {
                    Ok(snap) => {
                        t.last = snap;
                        t.error = None;
                        true
                    }
                    Err(e) => {
                        let reason = strip_path(&e.to_string(), &t.id.path);
                        if t.error.as_ref() != Some(&reason) {
                            self.warnings.push(Warning {
                                path: t.id.path.clone(),
                                reason: reason.clone(),
                            });
                            t.error = Some(reason);
                        }
                        false
                    }
                }
            };
            // Removed (folded, or deleted): what it counted is in an
            // archive read below, or gone.
            if t.reader.unlinked() {
                unlinked.push(path.clone());
                // The archive that may hold it, even if no event named it yet.
                archives.push(archive_path_of(path, &t.last));
                continue;
            }
            files.push(FileSample {
                id: t.id.clone(),
                snapshot: Arc::clone(&t.last),
                fresh,
                gone: false,
            });
        }
        for p in unlinked {
            self.forget(&p);
        }
        archives.extend(self.group_archives.iter().cloned());
        archives.sort();
        archives.dedup();
        for p in archives {
            if !self.files.contains_key(&p) && self.matcher.canonical(&p).is_none() {
                continue;
            }
            // Re-opened if a fold replaced it since it was read.
            self.check(&p);
            if self
                .files
                .get(&p)
                .is_some_and(|t| !t.last.info.is_archive())
            {
                continue;
            }
            if let Some(t) = self.files.get_mut(&p) {
                t.unsent = false;
                files.push(FileSample {
                    id: t.id.clone(),
                    snapshot: Arc::clone(&t.last),
                    fresh: true,
                    gone: false,
                });
            }
        }
        files
    }
}

/// Opens `path` and reads it, making sure the inode read is the one the
/// path names afterwards (it may be replaced in between).
fn open(
    path: &Path,
    limits: &ReadLimits,
    owner: Option<u32>,
) -> Result<(FileId, Reader, Arc<Snapshot>), String> {
    let mut last = String::new();
    for _ in 0..3 {
        let before = fs::metadata(path).map_err(|e| e.to_string())?;
        let mut reader = Reader::open_owned(path, limits, owner)
            .map_err(|e| strip_path(&e.to_string(), path))?;
        let snap = reader
            .snapshot_shared()
            .map_err(|e| strip_path(&e.to_string(), path))?;
        let after = fs::metadata(path).map_err(|e| e.to_string())?;
        if (before.dev(), before.ino()) != (after.dev(), after.ino()) {
            last = "replaced while being opened".into();
            continue;
        }
        let id = FileId::new(path, after.dev(), after.ino(), &snap.info);
        return Ok((id, reader, snap));
    }
    Err(last)
}

/// A read error's message without the path in front, since a [`Warning`]
/// carries it already.
fn strip_path(message: &str, path: &Path) -> String {
    let prefix = format!("{}: ", path.display());
    message.strip_prefix(&prefix).unwrap_or(message).to_owned()
}

/// The archive that may hold the counts of the writer file at `path`.
fn archive_path_of(path: &Path, snap: &Snapshot) -> PathBuf {
    archive_path(parent(path), &snap.info.command, &snap.info.model)
}

fn watch_dir_gone(p: &Path, watch: Option<&Watch>) -> bool {
    watch.is_some_and(|w| w.dirs.contains(p)) && !p.is_dir()
}
