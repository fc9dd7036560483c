//! [`Sources`]: the open readers of every stats file a view reads, kept up
//! to date by file system events and a periodic full rescan.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use notify::{EventKind, RecursiveMode, Watcher};

use super::Warning;
use crate::archive::{archive_path, parent};
use crate::dirs::default_dirs;
use crate::discover::{is_stats_name, pattern_matches, scan};
use crate::reader::{LivenessMemo, ReadLimits, Reader, Snapshot};

/// How often [`Sources`] lists every source again by default, to catch
/// what file system events missed.
pub const DEFAULT_RESCAN: Duration = Duration::from_secs(10);

/// Who a stats file is: its path, and the inode and creation time of the
/// file at that path. A new file under an old name is a new `FileId`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileId {
    /// The path it was found at.
    pub path: PathBuf,
    /// Device of the file system holding it.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// Creation time from the file's header, nanoseconds since the epoch.
    pub created_ns: u64,
}

/// One file in a [`Sample`].
#[derive(Clone, Debug)]
pub struct FileSample {
    /// Which file.
    pub id: FileId,
    /// What was read.
    pub snapshot: Arc<Snapshot>,
    /// `false` if this sample could not read the file, which is still
    /// there: `snapshot` is then the last good reading, kept so that the
    /// next good one is measured against it. Stale files add nothing.
    pub fresh: bool,
}

/// One reading of every source file.
#[derive(Clone, Debug)]
pub struct Sample {
    /// Wall-clock time of the reading.
    pub time: SystemTime,
    /// Monotonic time of the reading; intervals are measured with it.
    pub instant: Instant,
    /// The files, sorted by [`FileId`].
    pub files: Vec<FileSample>,
    /// Problems met since the previous sample: paths that match nothing,
    /// files that cannot be read. Each is reported once, until it changes.
    pub warnings: Vec<Warning>,
    /// Files and entries skipped in other users' directories of a default
    /// scan (unreadable, foreign-owned, not regular files): counted here
    /// rather than reported one by one.
    pub foreign_skipped: usize,
}

impl Sample {
    /// The file with `id`, if this sample has it.
    pub fn file(&self, id: &FileId) -> Option<&FileSample> {
        self.files
            .binary_search_by(|f| f.id.cmp(id))
            .ok()
            .map(|i| &self.files[i])
    }

    /// Freshly read files whose writer is alive.
    pub fn alive(&self) -> usize {
        self.files
            .iter()
            .filter(|f| f.fresh && f.snapshot.info.writing())
            .count()
    }

    /// Freshly read files whose writer is gone (archives not counted).
    pub fn dead(&self) -> usize {
        self.files
            .iter()
            .filter(|f| f.fresh && !f.snapshot.info.writing() && !f.snapshot.info.is_archive())
            .count()
    }

    /// Archives of folded dead writers read (format-spec.md §2.8).
    pub fn archives(&self) -> usize {
        self.files
            .iter()
            .filter(|f| f.snapshot.info.is_archive())
            .count()
    }

    /// Every label in the sample, sorted, once each.
    pub fn labels(&self) -> Vec<&str> {
        let mut labels: Vec<&str> = self
            .files
            .iter()
            .flat_map(|f| f.snapshot.fields.iter().map(|x| x.label.as_str()))
            .collect();
        labels.sort_unstable();
        labels.dedup();
        labels
    }
}

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
    last: Arc<Snapshot>,
    /// Read when opened, not yet handed out in a sample.
    unsent: bool,
    /// The last read error reported for this file.
    error: Option<String>,
}

struct Watch {
    watcher: notify::RecommendedWatcher,
    events: Receiver<notify::Result<notify::Event>>,
    dirs: HashSet<PathBuf>,
}

impl Sources {
    /// Finds the files named by `args` and opens them; starts watching.
    /// Problems are reported with the first [`sample`](Sources::sample).
    pub fn new<S: AsRef<OsStr>>(args: &[S]) -> Sources {
        let args: Vec<OsString> = args.iter().map(|a| a.as_ref().to_owned()).collect();
        let mut warnings = Vec::new();
        let (tx, rx) = mpsc::channel();
        let watch = match notify::recommended_watcher(tx) {
            Ok(watcher) => Some(Watch {
                watcher,
                events: rx,
                dirs: HashSet::new(),
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
        };
        sources.rescan();
        sources
    }

    /// Sets how often every source is listed again (default
    /// [`DEFAULT_RESCAN`]); zero lists them on every sample.
    pub fn set_rescan_interval(&mut self, every: Duration) {
        self.rescan_interval = every;
        self.next_rescan = Instant::now() + every;
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
        self.matcher = Matcher::new(&self.args);
        // Rebuilt from the files still tracked, so groups that are gone
        // do not accumulate.
        self.group_archives = self
            .files
            .iter()
            .filter(|(_, t)| !t.last.info.is_archive())
            .map(|(p, t)| archive_path_of(p, &t.last))
            .collect();
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
            } else if let Some(t) = self.files.remove(&p) {
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
                if let Some(gone) = self.files.remove(path) {
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
        self.files.remove(path);
        // In a default scan, only files owned by their directory's owner
        // (as `scan` decides; for a file an event named, the same rule).
        let owner = match self.owners.get(path) {
            Some(owner) => *owner,
            None if self.args.is_empty() => {
                fs::symlink_metadata(parent(path)).ok().map(|m| m.uid())
            }
            None => None,
        };
        match open(path, &self.limits, owner) {
            Ok((id, reader, snap)) => {
                self.failed.remove(path);
                if !snap.info.is_archive() {
                    self.group_archives.insert(archive_path_of(path, &snap));
                }
                self.files.insert(
                    path.to_owned(),
                    Tracked {
                        id,
                        reader,
                        last: snap,
                        unsent: true,
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
        files.sort_by(|a, b| a.id.cmp(&b.id));
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
            let fresh = if std::mem::take(&mut t.unsent) {
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
            });
        }
        for p in unlinked {
            self.files.remove(&p);
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
        let created_ns = snap
            .info
            .created
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        let id = FileId {
            path: path.to_owned(),
            dev: after.dev(),
            ino: after.ino(),
            created_ns,
        };
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

/// Which paths an event may be about, and under what name `discover`
/// knows them.
#[derive(Default)]
struct Matcher {
    /// Directories whose stats files are sources.
    dirs: HashSet<PathBuf>,
    /// Directories holding file arguments: watched, but their other files
    /// are not sources.
    file_dirs: HashSet<PathBuf>,
    /// Files named as arguments: (directory, file name) to the argument.
    files: HashMap<(PathBuf, OsString), PathBuf>,
    /// Glob arguments.
    globs: Vec<String>,
}

impl Matcher {
    fn new(args: &[OsString]) -> Matcher {
        let mut m = Matcher::default();
        if args.is_empty() {
            m.dirs.extend(default_dirs());
        }
        for arg in args {
            let path = Path::new(arg);
            match fs::metadata(path) {
                Ok(meta) if meta.is_dir() => {
                    m.dirs.insert(path.to_owned());
                }
                Ok(_) => m.add_file(path),
                Err(_) => {
                    let s = arg.to_string_lossy();
                    if !s.contains(['*', '?', '[']) {
                        // A file that does not exist yet.
                        m.add_file(path);
                        continue;
                    }
                    // The directories holding its matches are watched once a
                    // rescan has found them; new directories that come to
                    // match are found by the periodic rescan.
                    m.globs.push(s.into_owned());
                }
            }
        }
        m
    }

    fn add_file(&mut self, path: &Path) {
        if let Some(name) = path.file_name() {
            let dir = parent(path).to_owned();
            self.file_dirs.insert(dir.clone());
            self.files.insert((dir, name.to_owned()), path.to_owned());
        }
    }

    /// The path under which `discover` lists the file an event named, if
    /// it is a source.
    fn canonical(&self, event_path: &Path) -> Option<PathBuf> {
        let dir = parent(event_path);
        if let Some(name) = event_path.file_name() {
            if let Some(arg) = self.files.get(&(dir.to_owned(), name.to_owned())) {
                return Some(arg.clone());
            }
        }
        if !event_path.file_name().is_some_and(is_stats_name) {
            return None;
        }
        if self.dirs.contains(dir) || self.globs.iter().any(|g| pattern_matches(g, event_path)) {
            return Some(event_path.to_owned());
        }
        None
    }
}
