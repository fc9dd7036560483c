//! The readers' error: [`ReadError`], one per file, always naming it.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use mmstats::guard::MapError;

/// Why a reader could not read one stats file. Every variant names the
/// file; a reader reports it and goes on with the next file.
#[derive(Debug)]
#[non_exhaustive]
pub enum ReadError {
    /// The file could not be opened, inspected or mapped.
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// The file does not follow the format: bad magic, a length or offset
    /// out of range, invalid UTF-8, ... The file is damaged or is not a
    /// stats file.
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the offending values.
        reason: String,
    },
    /// The file has a major version this reader does not read (a newer one,
    /// or a damaged file). Fix: use a reader for that version.
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The file's major version.
        major: u16,
        /// The file's minor version.
        minor: u16,
    },
    /// The file is shorter than its header's `file_len`: it was cut short
    /// before it was opened, or it shrank while it was being read. What was
    /// read is discarded; a `Reader` whose mapping faulted stays broken, so
    /// open the file again. (A file *replaced* by rename is not an error: a
    /// reader keeps reading the inode it opened.)
    Truncated {
        /// The file.
        path: PathBuf,
    },
    /// The program did not install the SIGBUS guard, without which a file
    /// truncated while mapped would kill the process. Fix: call
    /// [`mmstats::install_sigbus_guard()`](mmstats::install_sigbus_guard)
    /// once at program start, before opening any reader.
    NoSigbusGuard {
        /// The file that was to be opened.
        path: PathBuf,
    },
    /// This process already has as many files mapped by readers as the
    /// SIGBUS guard can track ([`MAX_MAPPINGS`](mmstats::MAX_MAPPINGS)).
    /// Fix: drop `Reader`s no longer needed before opening more.
    TooManyMappings {
        /// The file that was to be opened.
        path: PathBuf,
        /// The limit.
        limit: usize,
    },
    /// The file is over one of the reader's limits
    /// ([`ReadLimits`](crate::ReadLimits)): it may be a valid stats file,
    /// but reading it would cost more than this reader allows. Fix: raise
    /// the limit named (in `slurpstats`, with its `--max-...` flag).
    Limit {
        /// The file.
        path: PathBuf,
        /// The limit's name, a field of `ReadLimits` (`max_fields`, ...).
        limit: &'static str,
        /// The limit's value.
        value: u64,
    },
    /// In a default scan, the file is not owned by the owner of its
    /// directory, who therefore cannot have written it (a planted hard
    /// link, say); it is not read. Fix: none needed; name the file
    /// explicitly to read it anyway.
    NotOwned {
        /// The file.
        path: PathBuf,
        /// The file's owner.
        owner: u32,
        /// The directory's owner.
        dir_owner: u32,
    },
}

impl ReadError {
    /// The file the error is about.
    pub fn path(&self) -> &std::path::Path {
        match self {
            ReadError::Io { path, .. }
            | ReadError::Malformed { path, .. }
            | ReadError::UnsupportedVersion { path, .. }
            | ReadError::Truncated { path }
            | ReadError::NoSigbusGuard { path }
            | ReadError::TooManyMappings { path, .. }
            | ReadError::Limit { path, .. }
            | ReadError::NotOwned { path, .. } => path,
        }
    }
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            ReadError::Malformed { path, reason } => {
                write!(f, "{}: not a valid stats file: {reason}", path.display())
            }
            ReadError::UnsupportedVersion { path, major, minor } => write!(
                f,
                "{}: format version {major}.{minor} is not supported by this reader (it reads {}.x); use a reader for that version",
                path.display(),
                mmstats::format::VERSION_MAJOR
            ),
            ReadError::Truncated { path } => write!(
                f,
                "{}: file is shorter than its header says: truncated, or it shrank while being read",
                path.display()
            ),
            ReadError::NoSigbusGuard { path } => write!(
                f,
                "{}: cannot open a reader: the SIGBUS guard is not installed; call mmstats::install_sigbus_guard() at program start",
                path.display()
            ),
            ReadError::TooManyMappings { path, limit } => write!(
                f,
                "{}: cannot open a reader: this process already has {limit} files mapped, the most the SIGBUS guard can track; drop readers no longer needed",
                path.display()
            ),
            ReadError::Limit { path, limit, value } => write!(
                f,
                "{}: over this reader's limit {limit} = {value}; raise the limit to read it",
                path.display()
            ),
            ReadError::NotOwned {
                path,
                owner,
                dir_owner,
            } => write!(
                f,
                "{}: owned by uid {owner}, not by its directory's owner (uid {dir_owner}); not read in a default scan",
                path.display()
            ),
        }
    }
}

impl std::error::Error for ReadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReadError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl ReadError {
    /// The reader's error for a file at `path` that the guard could not map.
    pub(crate) fn from_map(e: MapError, path: &Path) -> ReadError {
        let path = path.to_owned();
        match e {
            MapError::NoGuard => ReadError::NoSigbusGuard { path },
            MapError::Full => ReadError::TooManyMappings {
                path,
                limit: mmstats::MAX_MAPPINGS,
            },
            MapError::Io(source) => ReadError::Io { path, source },
            // `MapError` is non-exhaustive: a new cause reads as I/O.
            other => ReadError::Io {
                path,
                source: io::Error::other(other.to_string()),
            },
        }
    }
}
