//! Who a writer file is, and what an archive says (format-spec.md §2.8):
//! [`SourceId`], the identity an archive records for every file folded
//! into it (and that readers key a file's contribution by), [`ArchiveInfo`],
//! an archive's header extension, and the archive's name.
//!
//! This module reads nothing itself: [`Reader`](crate::Reader) uses it to
//! decode an archive's header, and [`retire`](crate::retire) to write one.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mmstats::format::raw::{self, Header};
use mmstats::guard::ReadMap;

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
    /// The identity of a file named `name` (its last path component)
    /// whose header says `lock_token`, `created`, `proc_start` and `pid`.
    pub fn new(
        lock_token: u64,
        created: SystemTime,
        proc_start: u64,
        pid: u32,
        name: &[u8],
    ) -> SourceId {
        SourceId {
            lock_token,
            created_ns: nanos(created),
            proc_start,
            pid,
            name_hash: fnv1a32(name),
        }
    }

    pub(crate) fn encode(&self, absent_ns: u64, out: &mut [u8]) {
        raw::put_u64(out, raw::ID_LOCK_TOKEN, self.lock_token);
        raw::put_u64(out, raw::ID_CREATED_NS, self.created_ns);
        raw::put_u64(out, raw::ID_PROC_START, self.proc_start);
        raw::put_u32(out, raw::ID_PID, self.pid);
        raw::put_u32(out, raw::ID_NAME_HASH, self.name_hash);
        raw::put_u64(out, raw::ID_ABSENT_NS, absent_ns);
    }

    pub(crate) fn decode(b: &[u8]) -> (SourceId, u64) {
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
pub(crate) fn fnv1a64(bytes: &[u8]) -> u64 {
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
    pub(crate) set: HashSet<SourceId>,
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

pub(crate) fn time(ns: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns)
}

pub(crate) fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The directory of `p` (`.` for a bare file name).
pub fn parent(p: &Path) -> &Path {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// The path of the archive of `(command, model)` in `dir`.
pub fn archive_path(dir: &Path, command: &str, model: &str) -> PathBuf {
    dir.join(format!("{}.mmstats", archive_stem(command, model)))
}

/// The archive of `(command, model)` beside the writer file `path`, spelled
/// as spec §7.7 says: the bytes of `path` up to and including its last
/// `/`, then the archive's name (a bare file name gives a bare name), so
/// `w1//X` gives `w1//NAME` and `X` gives `NAME`.
pub fn archive_beside(path: &Path, command: &str, model: &str) -> PathBuf {
    let name = format!("{}.mmstats", archive_stem(command, model));
    beside(path, std::ffi::OsStr::new(&name))
}

/// `path` with the bytes after its last `/` (all of it, if none) replaced
/// by `name`.
pub fn beside(path: &Path, name: &std::ffi::OsStr) -> PathBuf {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let bytes = path.as_os_str().as_bytes();
    let cut = bytes.iter().rposition(|&b| b == b'/').map_or(0, |i| i + 1);
    let mut out = bytes[..cut].to_vec();
    out.extend_from_slice(name.as_bytes());
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// The archive's file name stem for `(command, model)` (spec §2.8):
/// `{cmd}.{model}.archive`, or `{cmd}.{model}.archive-{16 hex}` with the
/// FNV-1a 64 of `command NUL model` when sanitising changed either name, so
/// two pairs never share an archive.
pub fn archive_stem(command: &str, model: &str) -> String {
    let (c, m) = (mmstats::sanitize(command), mmstats::sanitize(model));
    if c == command && m == model {
        format!("{c}.{m}.archive")
    } else {
        let mut key = command.as_bytes().to_vec();
        key.push(0);
        key.extend_from_slice(model.as_bytes());
        format!("{c}.{m}.archive-{:016x}", fnv1a64(&key))
    }
}
