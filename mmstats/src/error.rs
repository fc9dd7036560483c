//! The library's errors: one enum for writers, one for readers.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Why a writer could not create or extend its stats file.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The stats directory could not be created or inspected.
    /// Fix: create it, or point `MMSTATS_DIR` (or the builder's `dir`) elsewhere.
    Dir {
        /// The directory.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// The stats directory may be written by other users, who could then
    /// plant files or links in it. Fix: `chmod go-w` it, or use another.
    UnsafeDir {
        /// The directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The stats file could not be created, sized, locked or mapped
    /// (read-only directory, disk full, ...). Fix: free space, or fix
    /// the directory's permissions.
    Create {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// Another process truncated the live stats file (`truncate`, `: >`, a
    /// cleanup script). Its values from before are gone; the writer's
    /// stores since land in private memory until the file is made again at
    /// the process's next stats open, `fallbacks()` call, close or exit
    /// (spec §6.9). Fix: do not truncate or
    /// clean the files of live writers.
    Truncated {
        /// The file.
        path: PathBuf,
    },
    /// The stats directory belongs to another user, who could then remove
    /// or replace our files. Fix: use another directory (its owner, or
    /// root, can remove it; we cannot in a sticky directory like /dev/shm).
    ForeignDir {
        /// The directory.
        path: PathBuf,
        /// Its owner's uid.
        owner: u32,
        /// Our effective uid.
        euid: u32,
    },
    /// The default stats directory cannot be used (another user made it
    /// first, it is writable by others, or it is not a directory), and
    /// neither can the fallback, `$XDG_RUNTIME_DIR/mmstats`. Fix: set
    /// `MMSTATS_DIR` (or the builder's `dir`) to a directory you own.
    NoUsableDir {
        /// Why the default directory was refused.
        default: Box<Error>,
        /// The fallback directory tried and why it was refused; `None` if
        /// `XDG_RUNTIME_DIR` is not set.
        fallback: Option<(PathBuf, Box<Error>)>,
    },
    /// The file name template is not usable. Fix: the template must end in
    /// `.mmstats`, contain `{pid}` and `{tid}` and no `/`, and use only
    /// known `{placeholders}`.
    Template {
        /// The template.
        template: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A field definition is not valid (empty or duplicate label, a
    /// histogram layout out of range, text capacity too large).
    /// Fix: change the field's attributes.
    Field {
        /// The field's label.
        label: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Appending a field needs more room than the file reserved when it was
    /// created. Fix: reserve more with `Options::reserve`.
    NoRoom {
        /// The field that did not fit.
        label: String,
        /// What it needed and what was left.
        detail: String,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Dir { path, source } => {
                write!(f, "stats directory {}: {source}", path.display())
            }
            Error::UnsafeDir { path, mode } => write!(
                f,
                "stats directory {} is writable by group or other users (mode {:o}); run chmod go-w on it or choose another directory",
                path.display(),
                mode & 0o7777
            ),
            Error::Create { path, source } => {
                write!(f, "cannot create stats file {}: {source}", path.display())
            }
            Error::Truncated { path } => write!(
                f,
                "stats file {} was truncated while its writer was alive; its values since live in private memory until it is made again",
                path.display()
            ),
            Error::ForeignDir { path, owner, euid } => write!(
                f,
                "stats directory {} belongs to uid {owner}, not to us (uid {euid}); choose another directory",
                path.display()
            ),
            Error::NoUsableDir { default, fallback } => {
                write!(f, "{default}; ")?;
                match fallback {
                    Some((path, err)) => {
                        write!(f, "the fallback directory {} failed too: {err}", path.display())?
                    }
                    None => write!(f, "no fallback: XDG_RUNTIME_DIR is not set")?,
                }
                write!(f, "; set MMSTATS_DIR to a directory you own")
            }
            Error::Template { template, reason } => {
                write!(f, "file name template {template:?}: {reason}")
            }
            Error::Field { label, reason } => write!(f, "field {label:?}: {reason}"),
            Error::NoRoom { label, detail } => write!(
                f,
                "no room left in the stats file to append field {label:?} ({detail}); reserve more with Options::reserve"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Dir { source, .. } | Error::Create { source, .. } => Some(source),
            Error::NoUsableDir { default, .. } => Some(default),
            _ => None,
        }
    }
}

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
    /// [`mmstats::install_sigbus_guard()`](crate::install_sigbus_guard)
    /// once at program start, before opening any reader.
    NoSigbusGuard {
        /// The file that was to be opened.
        path: PathBuf,
    },
    /// This process already has as many files mapped by readers as the
    /// SIGBUS guard can track ([`MAX_MAPPINGS`](crate::MAX_MAPPINGS)).
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
                crate::format::VERSION_MAJOR
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
