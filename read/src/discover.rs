//! Finding stats files (format-spec.md §2.1 and §7.6) safely: readers run
//! as root in daemons, over directories that other users own, where any
//! entry may be planted.
//!
//! - Entries and pattern matches are examined with `lstat`, never followed:
//!   only regular files are candidates; a symbolic link, device, FIFO,
//!   socket or directory under a stats name is skipped with a problem.
//! - A default scan (no paths) reads a directory only if it is a real
//!   directory (not a symbolic link) not writable by group or others, and
//!   only the files in it that the directory's owner owns. Problems in other
//!   users' directories are marked [`DiscoverError::foreign`], so a tool can
//!   count them instead of reporting each.
//! - `**` in a pattern never follows a symbolic link and never visits a
//!   directory twice.
//! - Paths are returned sorted by their bytes, each once, spelled as found.
//!
//! Patterns are expanded here rather than by a glob crate: the `glob` crate
//! follows symbolic links (so one planted `up -> ..` link made `**` loop),
//! and the matcher needed is small: `*`, `?`, `[...]` and `[!...]` within
//! one path component, and `**` as a whole component.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::{self, Metadata};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::dirs::{by_bytes, default_dirs};
use crate::error::ReadError;
use crate::reader::{ReadLimits, Reader};

/// A problem met while discovering files: a path that does not exist, a
/// directory that cannot be listed or is unsafe to scan, an entry that is
/// not a regular file, a bad pattern, a path that yields no stats file.
#[derive(Debug)]
#[non_exhaustive]
pub struct DiscoverError {
    /// The path or pattern.
    pub path: String,
    /// What went wrong.
    pub reason: String,
    /// The problem is inside another user's directory in a default scan (a
    /// directory not owned by this process's effective uid). Such problems
    /// are anyone's to plant: tools count them and report one summary line
    /// rather than each, and they do not fail the run (format-spec.md §7.6).
    pub foreign: bool,
}

impl std::fmt::Display for DiscoverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

impl std::error::Error for DiscoverError {}

/// A stats file found by [`scan`], with what reading it safely needs.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Found {
    /// The path, spelled as discovered (never canonicalised).
    pub path: PathBuf,
    /// It is in another user's directory of a default scan: a failure to
    /// read it is to be counted, not reported (see [`DiscoverError::foreign`]).
    pub foreign: bool,
    /// In a default scan, the uid that must own the file: its directory's
    /// owner. [`Found::open`] checks it again on the opened descriptor.
    pub owner: Option<u32>,
}

impl Found {
    /// Opens the file as [`Reader::open_with`] does, and in a default scan
    /// refuses it ([`ReadError::NotOwned`]) unless the opened file is owned
    /// by [`Found::owner`]: the entry may have been replaced since it was
    /// listed.
    pub fn open(&self, limits: &ReadLimits) -> Result<Reader, ReadError> {
        Reader::open_owned(&self.path, limits, self.owner)
    }
}

/// Finds stats files; the paths of [`scan`].
///
/// A program that runs a default scan (no arguments) with privileges
/// should use [`scan`] and [`Found::open`] instead, which check each file's
/// owner again on the opened descriptor and say which problems are in
/// other users' directories.
pub fn discover<S: AsRef<OsStr>>(args: &[S]) -> (Vec<PathBuf>, Vec<DiscoverError>) {
    let (files, problems) = scan(args);
    (files.into_iter().map(|f| f.path).collect(), problems)
}

/// Finds stats files. Each argument may be a file (taken as given,
/// whatever its name), a directory (its `*.mmstats` entries, not hidden
/// ones, not recursing) or a glob pattern (only if no such path exists).
/// With no arguments, runs a default scan of [`default_dirs`]: each
/// directory is read only if it is not a symbolic link and not writable by
/// group or others, and of its files only those its owner owns.
///
/// Returns the files sorted by their bytes, each once, and the problems
/// met. An explicit directory or pattern that yields no stats file is a
/// problem.
pub fn scan<S: AsRef<OsStr>>(args: &[S]) -> (Vec<Found>, Vec<DiscoverError>) {
    let mut s = Scan::default();
    if args.is_empty() {
        let euid = mmstats::geteuid();
        for dir in default_dirs() {
            s.default_dir(&dir, euid);
        }
    }
    for arg in args {
        s.arg(arg.as_ref());
    }
    let Scan {
        mut files,
        problems,
    } = s;
    files.sort_by(|a, b| by_bytes(&a.path, &b.path));
    files.dedup_by(|a, b| a.path.as_os_str().as_bytes() == b.path.as_os_str().as_bytes());
    (files, problems)
}

/// Where a listed directory came from, and so what its entries must pass.
#[derive(Clone, Copy)]
struct Origin {
    /// Another user's directory in a default scan.
    foreign: bool,
    /// In a default scan, the directory's owner, who must own each file.
    owner: Option<u32>,
}

const EXPLICIT: Origin = Origin {
    foreign: false,
    owner: None,
};

#[derive(Default)]
struct Scan {
    files: Vec<Found>,
    problems: Vec<DiscoverError>,
}

impl Scan {
    fn problem(&mut self, path: impl AsRef<OsStr>, reason: impl ToString, foreign: bool) {
        self.problems.push(DiscoverError {
            path: Path::new(path.as_ref()).display().to_string(),
            reason: reason.to_string(),
            foreign,
        });
    }

    /// One directory of the default scan.
    fn default_dir(&mut self, dir: &Path, euid: u32) {
        let meta = match fs::symlink_metadata(dir) {
            Ok(m) => m,
            Err(e) => return self.problem(dir, e, false),
        };
        let foreign = meta.uid() != euid;
        if meta.file_type().is_symlink() {
            return self.problem(
                dir,
                "is a symbolic link; a default scan does not follow it",
                foreign,
            );
        }
        if !meta.is_dir() {
            return self.problem(dir, "not a directory", foreign);
        }
        if meta.mode() & 0o022 != 0 {
            return self.problem(
                dir,
                format!(
                    "writable by group or others (mode {:o}); a default scan skips it",
                    meta.mode() & 0o7777
                ),
                foreign,
            );
        }
        // A name that says another uid than its owner's: squatted (its
        // files are read as the owner's, never as the named uid's).
        if let Some(named) = named_uid(dir).filter(|&n| n != meta.uid()) {
            self.problem(
                dir,
                format!(
                    "named for uid {named} but owned by uid {}: read as uid {}'s (squatted?)",
                    meta.uid(),
                    meta.uid()
                ),
                true,
            );
        }
        self.list_dir(
            dir,
            Origin {
                foreign,
                owner: Some(meta.uid()),
            },
        );
    }

    /// One explicit argument.
    fn arg(&mut self, arg: &OsStr) {
        let path = Path::new(arg);
        match fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => self.explicit_dir(path),
            Ok(m) if m.is_file() => self.files.push(Found {
                path: path.to_owned(),
                foreign: false,
                owner: None,
            }),
            // A link to a directory names a directory of the path, which is
            // followed; a link in place of a file is not (§2.1).
            Ok(m) if m.file_type().is_symlink() => match fs::metadata(path) {
                Ok(target) if target.is_dir() => self.explicit_dir(path),
                _ => self.problem(
                    path,
                    "is a symbolic link, which readers do not follow (give its target instead)",
                    false,
                ),
            },
            Ok(m) => self.problem(
                path,
                format!("{}, not a stats file or directory", type_name(&m)),
                false,
            ),
            Err(_) if arg.as_bytes().iter().any(|b| b"*?[".contains(b)) => self.pattern(arg),
            Err(e) => self.problem(path, e, false),
        }
    }

    fn explicit_dir(&mut self, dir: &Path) {
        if self.list_dir(dir, EXPLICIT) == 0 {
            self.problem(dir, "no stats files in this directory", false);
        }
    }

    /// Adds the stats files in `dir`; returns how many.
    fn list_dir(&mut self, dir: &Path, origin: Origin) -> usize {
        let entries = match fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) => {
                self.problem(dir, e, origin.foreign);
                return 0;
            }
        };
        let mut found = 0;
        for entry in entries {
            match entry {
                Ok(entry) if is_stats_name(&entry.file_name()) => {
                    found += usize::from(self.entry(dir.join(entry.file_name()), origin));
                }
                Ok(_) => {}
                Err(e) => self.problem(dir, e, origin.foreign),
            }
        }
        found
    }

    /// Examines an entry with a stats name, without following it; true if
    /// it was taken.
    fn entry(&mut self, path: PathBuf, origin: Origin) -> bool {
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) => {
                self.problem(&path, e, origin.foreign);
                return false;
            }
        };
        if !meta.is_file() {
            self.problem(
                &path,
                format!("{} under a stats name; skipped", type_name(&meta)),
                origin.foreign,
            );
            return false;
        }
        if let Some(owner) = origin.owner.filter(|&o| o != meta.uid()) {
            self.problem(
                &path,
                format!(
                    "owned by uid {}, not by its directory's owner (uid {owner}); skipped",
                    meta.uid()
                ),
                origin.foreign,
            );
            return false;
        }
        self.files.push(Found {
            path,
            foreign: origin.foreign,
            owner: origin.owner,
        });
        true
    }

    /// Expands a glob pattern (§2.1): a matched directory is listed, a
    /// matched stats name is examined as a directory entry is, other
    /// matches are ignored.
    fn pattern(&mut self, arg: &OsStr) {
        let shown = arg.to_string_lossy().into_owned();
        let pattern = match Pattern::parse(&shown) {
            Ok(p) => p,
            Err(e) => return self.problem(arg, format!("bad pattern: {e}"), false),
        };
        let mut walk = Walk {
            pattern: &pattern,
            visited: HashSet::new(),
            matches: Vec::new(),
            problems: Vec::new(),
        };
        walk.component(pattern.root.clone(), 0);
        let Walk {
            mut matches,
            problems,
            ..
        } = walk;
        for (path, reason) in problems {
            self.problem(path, reason, false);
        }
        matches.sort_by(|a, b| by_bytes(a, b));
        let mut found = 0;
        for m in matches {
            let Ok(meta) = fs::symlink_metadata(&m) else {
                continue;
            };
            if meta.is_dir() {
                found += self.list_dir(&m, EXPLICIT);
            } else if m.file_name().is_some_and(is_stats_name) {
                found += usize::from(self.entry(m, EXPLICIT));
            }
        }
        if found == 0 {
            self.problem(arg, "no stats files match this pattern", false);
        }
    }
}

/// A stats file's name: ends in `.mmstats` and is not hidden (writers'
/// temporary files start with a dot).
pub(crate) fn is_stats_name(name: &OsStr) -> bool {
    let name = name.as_bytes();
    !name.starts_with(b".") && name.ends_with(b".mmstats")
}

/// What an entry that is not a regular file is, for messages.
fn type_name(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_symlink() {
        "a symbolic link"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// A parsed glob pattern: where the walk starts, then one matcher per
/// path component.
struct Pattern {
    /// `/` for an absolute pattern, else empty (the current directory,
    /// spelled without `./`, as the `glob` crate spells its matches).
    root: PathBuf,
    parts: Vec<Part>,
}

enum Part {
    /// A component without wildcards: joined as is, and followed if it is
    /// a link (the user wrote it).
    Literal(String),
    /// A component with `*`, `?` or `[...]`.
    Wild(Vec<char>),
    /// `**`: zero or more directories.
    Recurse,
}

impl Pattern {
    fn parse(s: &str) -> Result<Pattern, String> {
        let root = if s.starts_with('/') {
            PathBuf::from("/")
        } else {
            PathBuf::new()
        };
        let mut parts = Vec::new();
        for c in s.split('/').filter(|c| !c.is_empty()) {
            if c == "**" {
                parts.push(Part::Recurse);
            } else if c.contains("**") {
                return Err(format!(
                    "`**` must be a whole path component, not part of {c:?}"
                ));
            } else if c.contains(['*', '?', '[']) {
                let chars: Vec<char> = c.chars().collect();
                check_classes(&chars).map_err(|e| format!("{e} in {c:?}"))?;
                parts.push(Part::Wild(chars));
            } else {
                parts.push(Part::Literal(c.to_owned()));
            }
        }
        Ok(Pattern { root, parts })
    }
}

/// A wildcard pattern over one string (`*`, `?`, `[...]`, `[!...]`; `*`
/// matches any characters, `/` included): the same syntax as one path
/// component of a discovery pattern, for label globs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Wildcard(Vec<char>);

impl Wildcard {
    /// Parses `s`; an unclosed `[` is an error.
    pub(crate) fn new(s: &str) -> Result<Wildcard, String> {
        let chars: Vec<char> = s.chars().collect();
        check_classes(&chars)?;
        Ok(Wildcard(chars))
    }

    /// Whether `text` matches.
    pub(crate) fn matches(&self, text: &str) -> bool {
        let t: Vec<char> = text.chars().collect();
        wild_match(&self.0, &t)
    }
}

/// Whether `path` is one that the discovery pattern `pattern` matches,
/// component by component (`**` is any number of directories), without
/// touching the file system: for telling whether a file named by a file
/// system event belongs to a pattern argument.
pub(crate) fn pattern_matches(pattern: &str, path: &Path) -> bool {
    let Ok(p) = Pattern::parse(pattern) else {
        return false;
    };
    if path.is_absolute() != (p.root == Path::new("/")) {
        return false;
    }
    let names: Vec<Vec<char>> = path
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(n) => Some(n.to_string_lossy().chars().collect()),
            _ => None,
        })
        .collect();
    fn go(parts: &[Part], names: &[Vec<char>]) -> bool {
        match parts.first() {
            None => names.is_empty(),
            Some(Part::Recurse) => (0..=names.len()).any(|skip| go(&parts[1..], &names[skip..])),
            Some(part) => {
                let Some(name) = names.first() else {
                    return false;
                };
                let ok = match part {
                    Part::Literal(l) => l.chars().eq(name.iter().copied()),
                    Part::Wild(w) => wild_match(w, name),
                    Part::Recurse => unreachable!("handled above"),
                };
                ok && go(&parts[1..], &names[1..])
            }
        }
    }
    go(&p.parts, &names)
}

/// Every `[` opens a class that a `]` closes.
fn check_classes(p: &[char]) -> Result<(), String> {
    let mut i = 0;
    while i < p.len() {
        if p[i] == '[' {
            i = class_end(p, i).ok_or("unclosed `[`")?;
        }
        i += 1;
    }
    Ok(())
}

/// The index of the `]` closing the class that opens at `p[open]`. A `]`
/// right after `[` or `[!` is a member, not the end.
fn class_end(p: &[char], open: usize) -> Option<usize> {
    let mut i = open + 1;
    if p.get(i) == Some(&'!') {
        i += 1;
    }
    if p.get(i) == Some(&']') {
        i += 1;
    }
    while i < p.len() {
        if p[i] == ']' {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// Whether class `p[open..=end]` matches `c`.
fn class_matches(p: &[char], open: usize, end: usize, c: char) -> bool {
    let mut i = open + 1;
    let negated = p[i] == '!';
    if negated {
        i += 1;
    }
    let mut hit = false;
    let mut first = true;
    while i < end {
        if p[i] == ']' && !first {
            break;
        }
        first = false;
        if i + 2 < end && p[i + 1] == '-' {
            hit |= p[i] <= c && c <= p[i + 2];
            i += 3;
        } else {
            hit |= p[i] == c;
            i += 1;
        }
    }
    hit != negated
}

/// Whether one path component `name` matches `p` (`*`, `?`, `[...]`,
/// `[!...]`; classes were checked to be closed). Iterative, backtracking
/// only to the last `*`, so it is linear-ish and never recurses.
pub(crate) fn wild_match(p: &[char], name: &[char]) -> bool {
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < name.len() {
        let step = match p.get(pi) {
            Some('*') => {
                star = Some((pi, ni));
                pi += 1;
                continue;
            }
            Some('?') => Some(pi + 1),
            Some('[') => {
                let end = class_end(p, pi).expect("classes were checked");
                class_matches(p, pi, end, name[ni]).then_some(end + 1)
            }
            Some(&c) => (c == name[ni]).then_some(pi + 1),
            None => None,
        };
        match (step, star) {
            (Some(next), _) => {
                pi = next;
                ni += 1;
            }
            (None, Some((sp, sn))) => {
                pi = sp + 1;
                ni = sn + 1;
                star = Some((sp, sn + 1));
            }
            (None, None) => return false,
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// The walk of one pattern.
struct Walk<'a> {
    pattern: &'a Pattern,
    /// (device, inode, part index) of each directory expanded for a `**`,
    /// so that none is walked twice (bind mounts can make loops too).
    visited: HashSet<(u64, u64, usize)>,
    matches: Vec<PathBuf>,
    problems: Vec<(PathBuf, String)>,
}

impl Walk<'_> {
    /// Matches part `i` onwards inside `base` (a directory, or the start).
    fn component(&mut self, base: PathBuf, i: usize) {
        let Some(part) = self.pattern.parts.get(i) else {
            self.matches.push(base);
            return;
        };
        let last = i + 1 == self.pattern.parts.len();
        match part {
            Part::Literal(name) => {
                let next = base.join(name);
                if last {
                    self.matches.push(next);
                } else {
                    self.component(next, i + 1);
                }
            }
            Part::Wild(p) => {
                for (name, is_dir) in self.entries(&base) {
                    let chars: Vec<char> = name.to_string_lossy().chars().collect();
                    if !wild_match(p, &chars) {
                        continue;
                    }
                    if last {
                        self.matches.push(base.join(&name));
                    } else if is_dir {
                        self.component(base.join(&name), i + 1);
                    }
                }
            }
            Part::Recurse => {
                let dir = if base.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    &base
                };
                let Ok(meta) = fs::metadata(dir) else {
                    return;
                };
                if !self.visited.insert((meta.dev(), meta.ino(), i)) {
                    return;
                }
                // Zero directories, then one more.
                self.component(base.clone(), i + 1);
                for (name, is_dir) in self.entries(&base) {
                    if is_dir {
                        self.component(base.join(&name), i);
                    }
                }
            }
        }
    }

    /// The entries of directory `base` (the current directory if empty):
    /// name, and whether it is a directory itself (`lstat`: a symbolic link
    /// to one is not). A directory that does not exist has none; one that
    /// cannot be read is a problem.
    fn entries(&mut self, base: &Path) -> Vec<(std::ffi::OsString, bool)> {
        let dir = if base.as_os_str().is_empty() {
            Path::new(".")
        } else {
            base
        };
        let rd = match fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) => {
                let gone = matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR));
                if !gone {
                    self.problems.push((dir.to_owned(), e.to_string()));
                }
                return Vec::new();
            }
        };
        let mut out: Vec<_> = rd
            .filter_map(Result::ok)
            .map(|e| {
                let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
                (e.file_name(), is_dir)
            })
            .collect();
        out.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        out
    }
}

/// The uid a per-user directory's name gives: `mmstats-UID` or a writer's
/// fallback `mmstats-UID-SUFFIX` (format-spec.md §2.1).
fn named_uid(dir: &Path) -> Option<u32> {
    let name = dir.file_name()?.to_str()?;
    let rest = name.strip_prefix("mmstats-")?;
    rest.split('-').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_paths_match_patterns_without_touching_the_disk() {
        assert!(pattern_matches("/d/*.mmstats", Path::new("/d/a.mmstats")));
        assert!(!pattern_matches(
            "/d/*.mmstats",
            Path::new("/d/x/a.mmstats")
        ));
        assert!(pattern_matches(
            "/d/**/*.mmstats",
            Path::new("/d/x/y/a.mmstats")
        ));
        assert!(pattern_matches(
            "/d/**/*.mmstats",
            Path::new("/d/a.mmstats")
        ));
        assert!(!pattern_matches("/d/*.mmstats", Path::new("d/a.mmstats")));
        assert!(pattern_matches("d/a?.mmstats", Path::new("d/ab.mmstats")));
    }

    #[test]
    fn label_wildcards() {
        let w = Wildcard::new("web.*.5xx").unwrap();
        assert!(w.matches("web.status.5xx") && w.matches("web.a.b.5xx"));
        assert!(!w.matches("web.status.4xx"));
        assert!(Wildcard::new("web.[").is_err());
    }

    fn m(p: &str, name: &str) -> bool {
        let p: Vec<char> = p.chars().collect();
        check_classes(&p).unwrap();
        wild_match(&p, &name.chars().collect::<Vec<_>>())
    }

    #[test]
    fn wildcards_match_within_a_component() {
        assert!(m("*.mmstats", "a.mmstats"));
        assert!(m("*.mmstats", ".mmstats"));
        assert!(!m("*.mmstats", "a.mmstats.tmp"));
        assert!(m("a*b*c", "aXXbYYc"));
        assert!(!m("a*b*c", "aXXbYY"));
        assert!(m("?x", "éx"));
        assert!(!m("?x", "x"));
        assert!(m("[ab]1", "b1"));
        assert!(!m("[!ab]1", "b1"));
        assert!(m("[a-c]", "b"));
        assert!(m("[]]", "]"));
        assert!(m("[!]]", "x"));
        assert!(m("***", ""));
        assert!(m("", ""));
        assert!(!m("", "a"));
    }

    #[test]
    fn bad_patterns_are_refused() {
        assert!(Pattern::parse("a/[b").is_err());
        assert!(Pattern::parse("a/x**/y").is_err());
        assert!(Pattern::parse("/a/**/*.mmstats").is_ok());
    }

    #[test]
    fn a_long_pattern_does_not_blow_up() {
        let p = "*a".repeat(50);
        let name = "a".repeat(49);
        // Backtracking to the last `*` only: returns promptly.
        assert!(!m(&p, &name));
        assert!(m(&p, &"a".repeat(50)));
    }
}
