//! The writer's error ([`Error`]). Readers have their own, in `mmstats-read`.

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
    /// neither can the fallback, a private `/dev/shm/mmstats-EUID-*`
    /// directory ([`fallback_dir`](crate::fallback_dir)). Fix: set
    /// `MMSTATS_DIR` (or the builder's `dir`) to a directory you own.
    NoUsableDir {
        /// Why the default directory was refused.
        default: Box<Error>,
        /// The fallback directory tried and why it was refused.
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
                    None => write!(f, "no fallback directory")?,
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
