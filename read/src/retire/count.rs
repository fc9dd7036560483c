//! The readers' half of the fold (format-spec.md §2.8, "Reading"): which
//! writer files an archive already counts, and a one-shot reading that
//! counts each dead writer once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::MAX_READ_SPAN;
use crate::archive::{archive_beside, beside, parent, ArchiveInfo};
use crate::reader::{FileInfo, ReadLimits, Snapshot};

/// Which of `snaps` an archive among them already holds (spec §2.8, "Reading"):
/// `true` at the index of a writer file that must not be counted, because an
/// archive counts it.
///
/// A reader MUST read every writer file first, leave out those it finds
/// [unlinked](crate::Reader::unlinked), and read the archives last; then each dead
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

/// Reads `files` as the protocol of spec §2.8 says a one-shot reader must:
/// every writer file first, leaving out those removed since they were
/// listed; then every archive, opened anew (a fold may have replaced it),
/// including the archive of a removed file if the listing missed it; then
/// leaves out the writer files an archive holds. Returns what was read
/// (or why not) in the byte order of the paths, each path once (spec
/// §7.6), an archive opened by name spelled beside its writer file (§7.7).
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// mmstats::install_sigbus_guard()?;
/// let (files, _problems) = mmstats_read::scan(&[dir.path()]);
/// for (found, snap) in mmstats_read::retire::read_all(&files, &mmstats_read::ReadLimits::default()) {
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
    // Keyed by the path's bytes: sorted byte-wise, and `h//x` is not `h/x`
    // (spec §7.6), as a `Path` would have it.
    let bytes = |p: &Path| p.as_os_str().as_bytes().to_vec();
    let mut out: BTreeMap<Vec<u8>, (crate::Found, Result<Snapshot, crate::ReadError>)> =
        BTreeMap::new();
    let mut archives: BTreeMap<Vec<u8>, crate::Found> = BTreeMap::new();
    for found in files {
        let read = found
            .open(limits)
            .and_then(|r| r.snapshot().map(|s| (r, s)));
        match read {
            Ok((_, snap)) if snap.info.is_archive() => {
                archives.insert(bytes(&found.path), found.clone());
            }
            Ok((reader, snap)) if reader.unlinked() => {
                let path = archive_beside(&found.path, &snap.info.command, &snap.info.model);
                archives.entry(bytes(&path)).or_insert(crate::Found {
                    path,
                    foreign: found.foreign,
                    owner: found.owner,
                });
            }
            Ok((_, snap)) => {
                out.insert(bytes(&found.path), (found.clone(), Ok(snap)));
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
                        let path = beside(&found.path, &name);
                        archives.entry(bytes(&path)).or_insert(crate::Found {
                            path,
                            foreign: found.foreign,
                            owner: found.owner,
                        });
                    }
                }
            }
            Err(e) => {
                out.insert(bytes(&found.path), (found.clone(), Err(e)));
            }
        }
    }
    // The archive of every writer file's command and model, opened by name
    // even if the listing missed it: a directory listing is not a snapshot,
    // and one made while a fold replaced the archive may miss it (and so
    // lose the counts of files folded earlier). A fold never removes an
    // archive's name, only replaces the file under it.
    // Spelled beside the group's first writer file (spec §7.7).
    let mut groups: HashMap<(&Path, &str, &str), &crate::Found> = HashMap::new();
    for (found, s) in out
        .values()
        .filter_map(|(f, r)| Some((f, r.as_ref().ok()?)))
    {
        let key = (
            parent(&s.info.path),
            s.info.command.as_str(),
            s.info.model.as_str(),
        );
        groups.entry(key).or_insert(found);
    }
    for ((_, command, model), found) in groups {
        let path = archive_beside(&found.path, command, model);
        archives.entry(bytes(&path)).or_insert(crate::Found {
            path,
            foreign: found.foreign,
            owner: found.owner,
        });
    }
    for (path, found) in archives {
        let listed = files.iter().any(|f| bytes(&f.path) == path);
        match found.open(limits).and_then(|r| r.snapshot()) {
            // One opened by name only must be the archive that name is
            // for: its header's command and model give that name (§2.8).
            Ok(snap)
                if listed
                    || snap.info.is_archive()
                        && bytes(&archive_beside(
                            &found.path,
                            &snap.info.command,
                            &snap.info.model,
                        )) == path =>
            {
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
    let drop: HashSet<Vec<u8>> = folded(&snaps)
        .into_iter()
        .zip(&snaps)
        .filter(|(f, _)| *f)
        .map(|(_, s)| bytes(&s.info.path))
        .collect();
    out.into_iter()
        .filter(|(p, _)| !drop.contains(p))
        .map(|(_, v)| v)
        .collect()
}
