//! Which paths a file system event may be about, and under what name
//! `discover` knows them.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use crate::archive::parent;
use crate::dirs::default_dirs;
use crate::discover::{is_stats_name, pattern_matches};

/// Which paths an event may be about, and under what name `discover`
/// knows them.
#[derive(Default)]
pub(super) struct Matcher {
    /// Directories whose stats files are sources.
    pub(super) dirs: HashSet<PathBuf>,
    /// Directories holding file arguments: watched, but their other files
    /// are not sources.
    pub(super) file_dirs: HashSet<PathBuf>,
    /// Files named as arguments: (directory, file name) to the argument.
    files: HashMap<(PathBuf, OsString), PathBuf>,
    /// Glob arguments.
    globs: Vec<String>,
}

impl Matcher {
    pub(super) fn new(args: &[OsString]) -> Matcher {
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
    pub(super) fn canonical(&self, event_path: &Path) -> Option<PathBuf> {
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
