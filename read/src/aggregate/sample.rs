//! One reading of every source file: [`Sample`], and each file in it,
//! [`FileSample`]; the ghosts of files gone that samples carry, and the
//! one-file-per-identity rule.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use super::identity::{
    FileId, Key, GHOSTS_PER_OWNER, GHOST_TTL, TOMBSTONES_PER_OWNER, TOMBSTONE_TTL,
};
use super::Warning;
use crate::reader::Snapshot;

/// One file in a [`Sample`].
#[derive(Clone, Debug)]
pub struct FileSample {
    /// Which file.
    pub id: FileId,
    /// What was read.
    pub snapshot: Arc<Snapshot>,
    /// `false` if this sample could not read the file, which is still
    /// there, or if it is [`gone`](FileSample::gone): `snapshot` is then
    /// the last good reading, kept so that the next good one is measured
    /// against it. Stale files add nothing.
    pub fresh: bool,
    /// The file is no longer found under any name; its last reading is
    /// kept for [`GHOST_TTL`] in case it comes back.
    pub gone: bool,
}

/// One reading of every source file.
#[derive(Clone, Debug)]
pub struct Sample {
    /// Wall-clock time of the reading.
    pub time: SystemTime,
    /// Monotonic time of the reading; intervals are measured with it.
    pub instant: Instant,
    /// The files, sorted by [`FileId`]: those read, and the
    /// [`gone`](FileSample::gone) ones whose last readings are kept in case
    /// they come back (never [`fresh`](FileSample::fresh): a sum over what a
    /// sample holds now leaves them out).
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
    /// The same reading with only the files `keep` takes (no warnings):
    /// a narrower view that deltas and trees can be taken of.
    pub fn only(&self, keep: impl Fn(&FileSample) -> bool) -> Sample {
        Sample {
            time: self.time,
            instant: self.instant,
            files: self.files.iter().filter(|f| keep(f)).cloned().collect(),
            warnings: Vec::new(),
            foreign_skipped: 0,
        }
    }

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

/// Writer files no longer found, with their last reading and when they
/// went; and, once that reading is dropped, their identities.
#[derive(Debug, Default)]
pub(super) struct Ghosts {
    ghosts: HashMap<Key, (FileSample, Instant)>,
    tombstones: HashMap<Key, Instant>,
}

impl Ghosts {
    /// Keeps the last reading of a file no longer found.
    pub(super) fn bury(&mut self, ghost: FileSample, at: Instant) {
        self.ghosts.insert(ghost.id.key.clone(), (ghost, at));
    }

    /// A file found again: no longer a ghost.
    pub(super) fn found(&mut self, key: &Key) {
        self.ghosts.remove(key);
    }

    /// A file opened again whose reading was dropped: `true` if it was
    /// counted before (its first reading is then only a baseline).
    pub(super) fn revive(&mut self, key: &Key) -> bool {
        self.tombstones.remove(key).is_some()
    }

    /// The ghosts, as stale samples.
    pub(super) fn samples(&self) -> impl Iterator<Item = FileSample> + '_ {
        self.ghosts.values().map(|(g, _)| g.clone())
    }

    /// How many ghosts there are.
    pub(super) fn len(&self) -> usize {
        self.ghosts.len()
    }

    /// Drops ghosts older than [`GHOST_TTL`] (keeping their identities as
    /// tombstones) and tombstones older than [`TOMBSTONE_TTL`] or over the
    /// owner's [`TOMBSTONES_PER_OWNER`].
    pub(super) fn expire(&mut self, now: Instant) {
        let expired: Vec<Key> = self
            .ghosts
            .iter()
            .filter(|(_, (_, at))| now.saturating_duration_since(*at) >= GHOST_TTL)
            .map(|(k, _)| k.clone())
            .collect();
        for k in expired {
            self.ghosts.remove(&k);
            self.tombstones.insert(k, now);
        }
        // One owner's churn keeps at most GHOSTS_PER_OWNER readings: the
        // oldest become tombstones first.
        if self.ghosts.len() > GHOSTS_PER_OWNER {
            let mut per_owner: HashMap<u32, Vec<(Instant, Key)>> = HashMap::new();
            for (k, (_, at)) in &self.ghosts {
                per_owner
                    .entry(k.owner())
                    .or_default()
                    .push((*at, k.clone()));
            }
            for (_, mut list) in per_owner {
                if list.len() > GHOSTS_PER_OWNER {
                    list.sort();
                    for (_, k) in &list[..list.len() - GHOSTS_PER_OWNER] {
                        self.ghosts.remove(k);
                        self.tombstones.insert(k.clone(), now);
                    }
                }
            }
        }
        self.tombstones
            .retain(|_, at| now.saturating_duration_since(*at) < TOMBSTONE_TTL);
        let mut per_owner: HashMap<u32, Vec<(Instant, Key)>> = HashMap::new();
        for (k, at) in &self.tombstones {
            per_owner
                .entry(k.owner())
                .or_default()
                .push((*at, k.clone()));
        }
        for (_, mut list) in per_owner {
            if list.len() > TOMBSTONES_PER_OWNER {
                list.sort();
                for (_, k) in &list[..list.len() - TOMBSTONES_PER_OWNER] {
                    self.tombstones.remove(k);
                }
            }
        }
    }
}

/// Leaves one file per identity in `files`.
pub(super) fn dedup(files: &mut Vec<FileSample>) {
    // One writer seen under two names (a copy of the same owner, a
    // second name) is one file. The copy that has counted the most is
    // kept (a copy is a picture of the file's past, so the live file
    // has counted at least as much), then the smallest path: the kept
    // reading never goes backwards, so deltas stay exact whichever
    // copy is kept in which sample.
    files.sort_by_cached_key(|f| {
        (
            f.id.clone(),
            std::cmp::Reverse(counted(&f.snapshot)),
            f.id.path.clone(),
        )
    });
    files.dedup_by(|b, a| a.id == b.id);
}

/// The sum of a snapshot's counters: how much a file has counted.
fn counted(snap: &Snapshot) -> u128 {
    snap.fields
        .iter()
        .map(|f| match f.value {
            crate::Value::Counter(n) => u128::from(n),
            crate::Value::Histogram(ref h) => u128::from(h.count()),
            _ => 0,
        })
        .sum()
}
