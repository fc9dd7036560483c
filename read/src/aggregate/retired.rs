//! Deltas across a fold: what an archive's readings are measured against.
//!
//! A fold publishes a new archive (a new file, a new [`FileId`]) that holds
//! the old archive plus the writer files it folded, some of which the
//! previous sample counted on their own. Measured against nothing, the new
//! archive would add everything it holds again: a spike. Measured against
//! the old archive alone, it would add the folded files' whole counts,
//! which earlier deltas already counted. So its baseline is the old
//! archive *plus* the previous readings of the files it newly holds; its
//! increase is then exactly what those files counted since, plus files
//! that lived and died between the two samples.

use std::collections::HashMap;

use super::identity::FileId;
use super::sample::Sample;
use crate::reader::{Snapshot, Value};

/// For each archive of `next` that is not the same file as in `prev`, the
/// snapshot to subtract from it.
pub(crate) fn baselines(prev: &Sample, next: &Sample) -> HashMap<FileId, Snapshot> {
    let mut out = HashMap::new();
    for file in next.files.iter().filter(|f| f.snapshot.info.is_archive()) {
        if prev.file(&file.id).is_some() {
            continue;
        }
        let info = &file.snapshot.info;
        let Some(archive) = &info.archive else {
            continue;
        };
        let old = prev
            .files
            .iter()
            .find(|f| f.id.path == file.id.path && f.snapshot.info.is_archive())
            .map(|f| &*f.snapshot);
        let mut base = match old {
            Some(s) => s.clone(),
            None => Snapshot {
                info: info.clone(),
                fields: Vec::new(),
                skipped: 0,
                duplicates: Vec::new(),
                layout: None,
            },
        };
        let old_holds = |id| {
            old.and_then(|s| s.info.archive.as_ref())
                .is_some_and(|a| a.holds(&id))
        };
        let dir = file.id.path.parent();
        for s in &prev.files {
            let i = &s.snapshot.info;
            if i.is_archive()
                || s.id.path.parent() != dir
                || (i.owner, &i.command, &i.model) != (info.owner, &info.command, &info.model)
            {
                continue;
            }
            let id = i.source_id();
            if archive.holds(&id) && !old_holds(id) {
                add(&mut base, &s.snapshot);
            }
        }
        out.insert(file.id.clone(), base);
    }
    out
}

/// Adds `s`'s counters and histograms to `base`, field by field.
fn add(base: &mut Snapshot, s: &Snapshot) {
    for f in &s.fields {
        match base.fields.iter_mut().find(|b| b.label == f.label) {
            Some(b) => match (&mut b.value, &f.value) {
                (Value::Counter(a), Value::Counter(n)) => *a = a.saturating_add(*n),
                (Value::Histogram(a), Value::Histogram(h)) => {
                    let _ = a.merge(h);
                }
                _ => {}
            },
            None => {
                if matches!(f.value, Value::Counter(_) | Value::Histogram(_)) {
                    base.fields.push(f.clone());
                }
            }
        }
    }
}
