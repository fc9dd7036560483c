//! [`Trees::between`]: the trees of one interval, from two samples.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{span_path, GroupKey, Trees};
use crate::aggregate::{FileSample, Sample, Selector, SeriesValue, View};
use crate::owners::user_name;
use crate::{Field, Kind, Snapshot};

/// Which files are read together: an archive holds the files of one
/// command and model (and one owner), so files are split by those before
/// their deltas are taken.
type Part = (Option<String>, String, String);

/// `sample` with only what [`Trees::between`] reads: the files that have
/// span timers, each with only those, without their help text, unit text
/// and static labels. Cheap to keep for a window: a reader that serves
/// "the last minute" keeps these, not whole samples. Take the trees
/// between two such samples (not one such and one whole): a file's
/// fields are then at the same places in both, which the delta's lookup
/// by place relies on to stay linear.
pub fn spans_only(sample: &Sample) -> Sample {
    let files = sample
        .files
        .iter()
        .filter_map(|f| {
            let fields: Vec<_> = f
                .snapshot
                .fields
                .iter()
                .filter(|x| x.kind == Kind::Timer && span_path(&x.label).is_some())
                .map(|x| Field {
                    label: x.label.clone(),
                    kind: x.kind,
                    unit: x.unit,
                    unit_text: String::new(),
                    help: String::new(),
                    static_labels: Vec::new(),
                    value: x.value.clone(),
                })
                .collect();
            if fields.is_empty() {
                return None;
            }
            let snapshot = Snapshot {
                info: f.snapshot.info.clone(),
                fields,
                skipped: 0,
                duplicates: Vec::new(),
                layout: None,
            };
            Some(FileSample {
                id: f.id.clone(),
                snapshot: Arc::new(snapshot),
                fresh: f.fresh,
                gone: f.gone,
            })
        })
        .collect();
    Sample {
        time: sample.time,
        instant: sample.instant,
        files,
        warnings: Vec::new(),
        foreign_skipped: 0,
    }
}

impl Trees {
    /// The trees of what was recorded between `prev` and `next`, two
    /// samples of one [`Sources`](crate::aggregate::Sources) in time order
    /// (with `prev` `None`, everything each file recorded).
    ///
    /// Each timer counts what it recorded in the interval, with the rules
    /// of [`View::delta`]: a file that appeared counts from its first
    /// reading, a file that went adds nothing (never less than nothing),
    /// an archive that folded files in is measured against what it
    /// replaced. With `by_user`, files of different owners get their own
    /// trees. A timer that went backwards or cannot be merged is one of
    /// [`Trees::problems`], and counts nothing.
    pub fn between(prev: Option<&Sample>, next: &Sample, by_user: bool) -> Trees {
        let mut trees = if by_user {
            Trees::by_user()
        } else {
            Trees::new()
        };
        let part = |f: &FileSample| -> Part {
            let i = &f.snapshot.info;
            (
                by_user.then(|| user_name(i.owner)),
                i.command.clone(),
                i.model.clone(),
            )
        };
        // Both samples sorted by FileId: each part's files stay sorted.
        let mut parts: BTreeMap<Part, (Vec<FileSample>, Vec<FileSample>)> = BTreeMap::new();
        for f in &next.files {
            parts.entry(part(f)).or_default().1.push(f.clone());
        }
        if let Some(p) = prev {
            for f in &p.files {
                // A part no longer in `next` adds nothing to the interval.
                if let Some(e) = parts.get_mut(&part(f)) {
                    e.0.push(f.clone());
                }
            }
        }
        let view = View {
            selector: Selector::new(&[format!("*{}*", super::BUSY)])
                .expect("a valid glob: no class"),
            ..View::default()
        };
        let sample = |of: &Sample, files: Vec<FileSample>| Sample {
            time: of.time,
            instant: of.instant,
            files,
            warnings: Vec::new(),
            foreign_skipped: 0,
        };
        for ((user, command, model), (before, after)) in parts {
            let before = prev.map(|p| sample(p, before));
            let after = sample(next, after);
            let delta = view.delta(before.as_ref(), &after);
            trees
                .problems
                .extend(delta.warnings.iter().map(ToString::to_string));
            let key = |prefix: &str| GroupKey {
                user: user.clone(),
                command: command.clone(),
                model: model.clone(),
                prefix: prefix.to_owned(),
            };
            for (series, value) in &delta.series {
                let (Kind::Timer, SeriesValue::Histogram(h)) = (value.kind, &value.value) else {
                    continue;
                };
                let Some((prefix, path)) = span_path(&series.label) else {
                    continue;
                };
                let whence = || format!("command {command:?} model {model:?}");
                trees.merge(key(prefix), &path, h, whence, &series.label);
            }
            // Files per tree: those read now that have its timers.
            for f in after.files.iter().filter(|f| f.fresh) {
                let mut prefixes: Vec<&str> = f
                    .snapshot
                    .fields
                    .iter()
                    .filter(|x| x.kind == Kind::Timer)
                    .filter_map(|x| span_path(&x.label).map(|(p, _)| p))
                    .collect();
                prefixes.sort_unstable();
                prefixes.dedup();
                for p in prefixes {
                    if let Some(t) = trees.groups.get_mut(&key(p)) {
                        t.files += 1;
                    }
                }
            }
        }
        trees
    }
}
