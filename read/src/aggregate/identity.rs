//! Who a stats file is, for the aggregation: [`FileId`], which compares by
//! the writer's identity, not by path, and how long a gone file is
//! remembered.

use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

/// Who a stats file is. Two `FileId`s are equal when they are the same
/// writer's file, wherever it was found: a writer file is its owner and
/// its writer's identity (format-spec.md §2.6: lock token, creation time,
/// process start and pid), not its path, so a file moved away and back, or
/// seen under two names (a hard link, a copy), is one file and counted
/// once. An archive is the file itself (path, inode and creation time): a
/// fold publishes a new one under the same name.
#[derive(Clone, Debug)]
pub struct FileId {
    /// The path it was found at (the smallest, byte-wise, of the paths it
    /// was seen under in one sample).
    pub path: PathBuf,
    /// Device of the file system holding it.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// Creation time from the file's header, nanoseconds since the epoch.
    pub created_ns: u64,
    /// What equality, order and hashing go by.
    pub(crate) key: Key,
}

/// The identity a [`FileId`] compares by.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Key {
    /// A writer file: who wrote it.
    Writer {
        owner: u32,
        created_ns: u64,
        lock_token: u64,
        process_start: u64,
        pid: u32,
    },
    /// An archive: this very file.
    File {
        owner: u32,
        dev: u64,
        ino: u64,
        created_ns: u64,
        path: PathBuf,
    },
}

impl Key {
    pub(super) fn owner(&self) -> u32 {
        match self {
            Key::Writer { owner, .. } | Key::File { owner, .. } => *owner,
        }
    }
}

impl FileId {
    /// The id of the file read as `info`, found at `path` with `dev` and
    /// `ino`.
    pub fn new(path: &Path, dev: u64, ino: u64, info: &crate::FileInfo) -> FileId {
        let created_ns = info
            .created
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        let key = if info.is_archive() {
            Key::File {
                owner: info.owner,
                dev,
                ino,
                created_ns,
                path: path.to_owned(),
            }
        } else {
            Key::Writer {
                owner: info.owner,
                created_ns,
                lock_token: info.lock_token,
                process_start: info.process_start,
                pid: info.pid,
            }
        };
        FileId {
            path: path.to_owned(),
            dev,
            ino,
            created_ns,
            key,
        }
    }
}

impl PartialEq for FileId {
    fn eq(&self, other: &FileId) -> bool {
        self.key == other.key
    }
}

impl Eq for FileId {}

impl PartialOrd for FileId {
    fn partial_cmp(&self, other: &FileId) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for FileId {
    fn cmp(&self, other: &FileId) -> std::cmp::Ordering {
        self.key.cmp(&other.key)
    }
}

impl std::hash::Hash for FileId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key.hash(state);
    }
}

/// How long [`Sources`](super::Sources) keeps the last reading of a writer file that is no
/// longer found (moved away, deleted, unreadable under every name), so that
/// if it comes back it resumes from there instead of adding its whole
/// count again: the default prune delay of an archive's identities
/// (format-spec.md §2.8, step 4), the time after which a fold, too, stops
/// expecting a file to come back.
pub const GHOST_TTL: Duration = Duration::from_secs(600);

/// The most gone files' readings kept per owner (see [`GHOST_TTL`]); past
/// that the oldest are kept as identities only, so one owner's churn
/// cannot grow a reader's memory.
pub const GHOSTS_PER_OWNER: usize = 10_000;

/// How long, past [`GHOST_TTL`], [`Sources`](super::Sources) remembers that a writer file
/// was counted (its identity only, 64 bytes, no values). One that comes
/// back after its reading was dropped resumes from its value then: what it
/// counted while away is not counted, but nothing is counted twice.
pub const TOMBSTONE_TTL: Duration = Duration::from_secs(24 * 3600);

/// The most identities remembered per owner past [`GHOST_TTL`]; the oldest
/// go first, and one owner's churn never evicts another's.
pub const TOMBSTONES_PER_OWNER: usize = 20_000;
