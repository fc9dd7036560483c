//! [`View::delta`]: from two samples to one value per series.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::identity::FileId;
use super::sample::{FileSample, Sample};
use super::select::{Aggregator, GroupBy, Selector};
use super::Warning;
use crate::reader::{Field, FieldLayout, Snapshot, Value};
use mmstats::format::Kind;
use mmstats::hist::HistogramSnapshot;

/// What to show and how to combine files; see the [module](super) docs.
#[derive(Clone, Debug, Default)]
pub struct View {
    /// Which fields.
    pub selector: Selector,
    /// Series per label, or per label and command, model, pid or file.
    pub group_by: GroupBy,
    /// `None`: each kind's default (counters, gauges: sum; histograms:
    /// merge; text: distinct values).
    pub aggregator: Option<Aggregator>,
    /// Count gauges of dead writers too. Gauges of dead writers are left
    /// out by default, and counted when an aggregator is given.
    pub include_dead: bool,
}

/// A series: a label, and the group when the view groups by more.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeriesKey {
    /// The field's label.
    pub label: String,
    /// `(what, value)`, e.g. `("pid", "4242")`, with [`GroupBy`] other
    /// than [`GroupBy::Label`].
    pub group: Option<(&'static str, String)>,
}

impl fmt::Display for SeriesKey {
    /// `label`, or `label{pid=4242}` when grouped.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.group {
            None => f.write_str(&self.label),
            Some((what, value)) => write!(f, "{}{{{what}={value}}}", self.label),
        }
    }
}

/// The combined value of one series over an interval.
#[derive(Clone, Debug, PartialEq)]
pub enum SeriesValue {
    /// A whole number: a counter's increase, an integer gauge, a count.
    /// Wide enough that no sum of `u64` or `i64` values overflows.
    Int(i128),
    /// An average, or anything over a floating-point gauge.
    Float(f64),
    /// The distribution recorded in the interval.
    Histogram(HistogramSnapshot),
    /// Distinct text values, sorted; or one with [`Aggregator::One`].
    Text(Vec<String>),
    /// No file gave a value: only dead writers' gauges, or only zeros for
    /// a `nonzero-` aggregator.
    Missing,
}

/// One series of a [`Delta`].
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// The kind of the field (the first file's, if files disagree).
    pub kind: Kind,
    /// The unit as the first file spelled it.
    pub unit: String,
    /// Files that have the field.
    pub files: usize,
    /// The combined value.
    pub value: SeriesValue,
}

/// What happened between two samples, per series.
#[derive(Clone, Debug)]
pub struct Delta {
    /// Time of the later sample.
    pub time: SystemTime,
    /// Time between the samples; without an earlier sample, the age of the
    /// oldest file (counters then hold each file's whole count).
    pub interval: Duration,
    /// Whether there was no earlier sample.
    pub first: bool,
    /// Files read whose writer is alive.
    pub alive: usize,
    /// Files read whose writer is gone.
    pub dead: usize,
    /// The series, sorted by key.
    pub series: BTreeMap<SeriesKey, Series>,
    /// Problems with single files: a counter that went down, a field whose
    /// kind disagrees with other files'. The rest is still counted.
    pub warnings: Vec<Warning>,
}

impl Delta {
    /// The series of `label` (and `group` value, when grouped).
    pub fn get(&self, label: &str, group: Option<&str>) -> Option<&Series> {
        self.series
            .iter()
            .find(|(k, _)| k.label == label && k.group.as_ref().map(|g| g.1.as_str()) == group)
            .map(|(_, s)| s)
    }
}

/// The broad class of a kind: what can be combined with what.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Class {
    Counter,
    Gauge,
    Histogram(Kind),
    Text,
}

fn class(kind: Kind) -> Class {
    match kind {
        Kind::Counter => Class::Counter,
        Kind::Gauge | Kind::GaugeF64 => Class::Gauge,
        Kind::Histogram | Kind::Timer => Class::Histogram(kind),
        Kind::Text | Kind::Constant => Class::Text,
    }
}

#[derive(Clone, Copy, Debug)]
enum Num {
    I(i128),
    F(f64),
}

impl Num {
    fn f(self) -> f64 {
        match self {
            Num::I(i) => i as f64,
            Num::F(f) => f,
        }
    }

    fn is_zero(self) -> bool {
        match self {
            Num::I(i) => i == 0,
            Num::F(f) => f == 0.0,
        }
    }

    fn add(self, o: Num) -> Num {
        match (self, o) {
            (Num::I(a), Num::I(b)) => Num::I(a.saturating_add(b)),
            (a, b) => Num::F(a.f() + b.f()),
        }
    }

    fn less(self, o: Num) -> bool {
        match (self, o) {
            (Num::I(a), Num::I(b)) => a < b,
            (a, b) => a.f() < b.f(),
        }
    }

    fn value(self) -> SeriesValue {
        match self {
            Num::I(i) => SeriesValue::Int(i),
            Num::F(f) => SeriesValue::Float(f),
        }
    }
}

/// A series being combined.
struct Acc {
    kind: Kind,
    class: Class,
    unit: String,
    files: usize,
    values: usize,
    sum: Num,
    min: Option<Num>,
    max: Option<Num>,
    first: Option<Num>,
    nonzero: usize,
    nonzero_sum: Num,
    nonzero_min: Option<Num>,
    hist: Option<HistogramSnapshot>,
    texts: BTreeSet<String>,
    first_text: Option<String>,
}

impl Acc {
    fn new(f: &Field) -> Acc {
        Acc {
            kind: f.kind,
            class: class(f.kind),
            unit: f.unit_text.clone(),
            files: 0,
            values: 0,
            sum: Num::I(0),
            min: None,
            max: None,
            first: None,
            nonzero: 0,
            nonzero_sum: Num::I(0),
            nonzero_min: None,
            hist: None,
            texts: BTreeSet::new(),
            first_text: None,
        }
    }

    /// `number(Num::I(0))`, `times` times: what idle files' counters
    /// add. (Only `first` would depend on where they come in the file
    /// order; the caller does not batch for `one`.)
    fn zeros(&mut self, times: usize) {
        if times == 0 {
            return;
        }
        let z = Num::I(0);
        self.values += times;
        if self.min.is_none_or(|m| z.less(m)) {
            self.min = Some(z);
        }
        if self.max.is_none_or(|m| m.less(z)) {
            self.max = Some(z);
        }
        self.first.get_or_insert(z);
    }

    fn number(&mut self, n: Num) {
        self.values += 1;
        self.sum = self.sum.add(n);
        if self.min.is_none_or(|m| n.less(m)) {
            self.min = Some(n);
        }
        if self.max.is_none_or(|m| m.less(n)) {
            self.max = Some(n);
        }
        self.first.get_or_insert(n);
        if !n.is_zero() {
            self.nonzero += 1;
            self.nonzero_sum = self.nonzero_sum.add(n);
            if self.nonzero_min.is_none_or(|m| n.less(m)) {
                self.nonzero_min = Some(n);
            }
        }
    }

    fn finish(self, aggr: Option<Aggregator>) -> Series {
        let avg = |sum: Num, n: usize| {
            if n == 0 {
                SeriesValue::Missing
            } else {
                SeriesValue::Float(sum.f() / n as f64)
            }
        };
        let or_missing = |n: Option<Num>| n.map_or(SeriesValue::Missing, Num::value);
        let value = match (self.class, aggr.unwrap_or(Aggregator::Sum)) {
            (_, Aggregator::Count) => SeriesValue::Int(self.files as i128),
            (Class::Histogram(_), _) => self
                .hist
                .map_or(SeriesValue::Missing, SeriesValue::Histogram),
            (Class::Text, Aggregator::One) => self
                .first_text
                .map_or(SeriesValue::Missing, |t| SeriesValue::Text(vec![t])),
            (Class::Text, _) if self.values == 0 => SeriesValue::Missing,
            (Class::Text, _) => SeriesValue::Text(self.texts.into_iter().collect()),
            (_, _) if self.values == 0 => SeriesValue::Missing,
            (_, Aggregator::Sum) => self.sum.value(),
            (_, Aggregator::Avg) => avg(self.sum, self.values),
            (_, Aggregator::Min) => or_missing(self.min),
            (_, Aggregator::Max) => or_missing(self.max),
            (_, Aggregator::One) => or_missing(self.first),
            (_, Aggregator::NonzeroMin) => or_missing(self.nonzero_min),
            (_, Aggregator::NonzeroAvg) => avg(self.nonzero_sum, self.nonzero),
        };
        Series {
            kind: self.kind,
            unit: self.unit,
            files: self.files,
            value,
        }
    }
}

/// What `View::delta` learned of one field layout in one group.
struct Known<'a> {
    layout: &'a FieldLayout,
    group: usize,
    /// The series of each field; `None` if the view leaves it out.
    series: Vec<Option<usize>>,
    /// Which fields are counters of a series.
    counters: Vec<bool>,
    /// Whether idle files' counters may be counted all at once.
    batchable: bool,
    /// Idle files of this layout whose counters are still to be counted.
    idle_files: usize,
}

/// The file `id` in `prev`, looked for from `cursor` on (files of both
/// samples are sorted by id, and mostly the same), then anywhere.
fn same_file<'a>(prev: &'a Sample, cursor: &mut usize, id: &FileId) -> Option<&'a FileSample> {
    if let Some(f) = prev.files.get(*cursor) {
        if f.id == *id {
            *cursor += 1;
            return Some(f);
        }
    }
    let i = prev.files.binary_search_by(|f| f.id.cmp(id)).ok()?;
    *cursor = i + 1;
    Some(&prev.files[i])
}

/// The same field in an earlier snapshot of the same file: usually at the
/// same index, since fields are only ever appended.
fn earlier<'a>(prev: &'a Snapshot, i: usize, label: &str) -> Option<&'a Field> {
    match prev.fields.get(i) {
        Some(f) if f.label == label => Some(f),
        _ => prev.field(label),
    }
}

impl View {
    /// A view of every counter, gauge and timer, summed over every file.
    pub fn new() -> View {
        View::default()
    }

    /// The series between `prev` and `next`, two samples of the same
    /// [`Sources`](super::Sources) in time order; with `prev` `None`, since
    /// each file started.
    pub fn delta(&self, prev: Option<&Sample>, next: &Sample) -> Delta {
        let mut warnings = Vec::new();
        let interval = match prev {
            Some(p) => next.instant.saturating_duration_since(p.instant),
            None => next
                .files
                .iter()
                .filter(|f| f.fresh)
                .map(|f| f.snapshot.info.created)
                .min()
                .and_then(|c| next.time.duration_since(c).ok())
                .unwrap_or_default(),
        };
        let with_dead = self.include_dead || self.aggregator.is_some();
        let baselines = prev
            .map(|p| super::retired::baselines(p, next))
            .unwrap_or_default();
        // Keyed by borrowed label and group index while combining, so a
        // pass allocates per series, not per field.
        let mut groups: Vec<Option<String>> = Vec::new();
        let mut group_ix: HashMap<Option<String>, usize> = HashMap::new();
        let mut accs: Vec<Acc> = Vec::new();
        let mut keys: Vec<(&str, usize)> = Vec::new();
        let mut index: HashMap<(&str, usize), usize> = HashMap::new();
        // The series of each field of the file before: files mostly share
        // their layout, so a label equal to the one at the same position
        // needs no hashing.
        let mut layout: Vec<Option<(&str, usize, usize)>> = Vec::new();
        // The series of each field, by the files' interned layout and group
        // (a few layouts at most, usually one): no label is even looked at.
        let mut by_layout: Vec<Known> = Vec::new();
        // Idle files' counters add 0 each: counted per layout at the end,
        // so an idle file's counter fields are not even looked at. (Not for
        // `one`, which takes the first file's value.)
        let batch = self.aggregator != Some(Aggregator::One);
        // Both samples are sorted by FileId: walked side by side.
        let mut cursor = 0;
        let mut ungrouped = None;
        for file in next.files.iter().filter(|f| f.fresh) {
            let snap = &*file.snapshot;
            // An archive replaced by a fold is measured against what it
            // replaced (see `retired.rs`).
            let baseline = baselines.get(&file.id);
            let was = match baseline {
                Some(_) => None,
                None => prev.and_then(|p| same_file(p, &mut cursor, &file.id)),
            };
            // The reader gave the very same snapshot: nothing changed, so
            // every counter's increase is 0 and every window empty.
            let idle = was.is_some_and(|f| Arc::ptr_eq(&f.snapshot, &file.snapshot));
            let before = baseline.or_else(|| was.map(|f| &*f.snapshot));
            let group = self.group_by.group_of(&snap.info);
            let g = match (&group, ungrouped) {
                // Ungrouped views need no hashing per file.
                (None, Some(g)) => g,
                _ => {
                    let none = group.is_none();
                    let g = match group_ix.get(&group) {
                        Some(&g) => g,
                        None => {
                            groups.push(group.clone());
                            group_ix.insert(group, groups.len() - 1);
                            groups.len() - 1
                        }
                    };
                    if none {
                        ungrouped = Some(g);
                    }
                    g
                }
            };
            let alive = snap.info.writing();
            if layout.len() < snap.fields.len() {
                layout.resize(snap.fields.len(), None);
            }
            // An idle file's snapshot is shared by both samples, so nobody
            // changed its fields since its layout was checked: only the
            // count is.
            let tag = snap.layout.as_ref().filter(|t| {
                if idle {
                    t.len() == snap.fields.len()
                } else {
                    t.fits(&snap.fields)
                }
            });
            let known = tag.and_then(|t| {
                by_layout
                    .iter()
                    .position(|k| k.group == g && k.layout.same(t))
            });
            let batched = match known {
                Some(k) if idle && batch && by_layout[k].batchable => {
                    by_layout[k].idle_files += 1;
                    Some(k)
                }
                _ => None,
            };
            let mut learned = Vec::new();
            let mut mismatch = false;
            for (i, field) in snap.fields.iter().enumerate() {
                // (A reference: the field itself is not read if skipped.)
                if batched.is_some_and(|k| by_layout[k].counters[i]) {
                    continue;
                }
                let ix = if let Some(k) = known {
                    match by_layout[k].series[i] {
                        Some(ix) => ix,
                        None => continue,
                    }
                } else {
                    if !self.selector.matches(&field.label, field.kind) {
                        learned.push(None);
                        continue;
                    }
                    let label = field.label.as_str();
                    let ix = match layout[i] {
                        Some((l, lg, ix)) if lg == g && l == label => ix,
                        _ => {
                            let ix = *index.entry((label, g)).or_insert_with(|| {
                                accs.push(Acc::new(field));
                                keys.push((label, g));
                                accs.len() - 1
                            });
                            layout[i] = Some((label, g, ix));
                            ix
                        }
                    };
                    learned.push(Some(ix));
                    ix
                };
                let acc = &mut accs[ix];
                if acc.class != class(field.kind) {
                    mismatch = true;
                    warnings.push(Warning {
                        path: file.id.path.clone(),
                        reason: format!(
                            "{} is a {} here but a {} in other files; left out",
                            field.label, field.kind, acc.kind
                        ),
                    });
                    continue;
                }
                let old = if idle {
                    Some(field)
                } else {
                    before.and_then(|b| earlier(b, i, &field.label))
                };
                match &field.value {
                    Value::Counter(n) => {
                        acc.files += 1;
                        let inc = match old.map(|o| &o.value) {
                            Some(Value::Counter(m)) if n < m => {
                                warnings.push(Warning {
                                    path: file.id.path.clone(),
                                    reason: format!(
                                        "counter {} went down from {m} to {n}; counted as no increase",
                                        field.label
                                    ),
                                });
                                0
                            }
                            Some(Value::Counter(m)) => n - m,
                            _ => *n,
                        };
                        acc.number(Num::I(inc.into()));
                    }
                    Value::Gauge(_) | Value::GaugeF64(_) => {
                        if !alive && !with_dead {
                            continue;
                        }
                        acc.files += 1;
                        acc.number(match field.value {
                            Value::Gauge(v) => Num::I(v.into()),
                            Value::GaugeF64(v) => Num::F(v),
                            _ => unreachable!("matched above"),
                        });
                    }
                    Value::Histogram(h) => {
                        acc.files += 1;
                        // Merged straight into the series, without making
                        // each file's window.
                        if let (Some(sum), Some(Value::Histogram(o))) =
                            (&mut acc.hist, old.map(|o| &o.value))
                        {
                            if o.layout() == h.layout() && sum.layout() == h.layout() {
                                if let Err(e) = sum.merge_since(h, o) {
                                    warnings.push(Warning {
                                        path: file.id.path.clone(),
                                        reason: format!(
                                            "{}: {e}; counted as no change",
                                            field.label
                                        ),
                                    });
                                }
                                continue;
                            }
                        }
                        let window = match old.map(|o| &o.value) {
                            Some(Value::Histogram(o)) => match h.since(o) {
                                Ok(w) => w,
                                Err(e) => {
                                    warnings.push(Warning {
                                        path: file.id.path.clone(),
                                        reason: format!(
                                            "{}: {e}; counted as no change",
                                            field.label
                                        ),
                                    });
                                    continue;
                                }
                            },
                            _ => h.clone(),
                        };
                        match &mut acc.hist {
                            None => acc.hist = Some(window),
                            Some(sum) => {
                                if let Err(e) = sum.merge(&window) {
                                    warnings.push(Warning {
                                        path: file.id.path.clone(),
                                        reason: format!("{}: {e}; left out", field.label),
                                    });
                                }
                            }
                        }
                    }
                    Value::Text(s) | Value::Constant(s) => {
                        acc.files += 1;
                        acc.values += 1;
                        acc.first_text.get_or_insert_with(|| s.clone());
                        if !acc.texts.contains(s) {
                            acc.texts.insert(s.clone());
                        }
                    }
                    // Being rewritten, or damaged: has the field, no value.
                    _ => acc.files += 1,
                }
            }
            if let (Some(t), None) = (tag, known) {
                let counters = snap
                    .fields
                    .iter()
                    .zip(&learned)
                    .map(|(f, ix)| ix.is_some() && f.kind == Kind::Counter)
                    .collect();
                by_layout.push(Known {
                    layout: t,
                    group: g,
                    series: learned,
                    counters,
                    // A field left out of its series warns for every file.
                    batchable: !mismatch,
                    idle_files: 0,
                });
            }
        }
        for k in by_layout.iter().filter(|k| k.idle_files > 0) {
            for (ix, _) in k.series.iter().zip(&k.counters).filter(|(_, &c)| c) {
                let acc = &mut accs[ix.expect("a counter of the series")];
                acc.files += k.idle_files;
                acc.zeros(k.idle_files);
            }
        }
        let series = keys
            .into_iter()
            .zip(accs)
            .map(|((label, g), acc)| {
                let key = SeriesKey {
                    label: label.to_owned(),
                    group: groups[g].clone().map(|v| (self.group_by.name(), v)),
                };
                (key, acc.finish(self.aggregator))
            })
            .collect();
        Delta {
            time: next.time,
            interval,
            first: prev.is_none(),
            alive: next.alive(),
            dead: next.dead(),
            series,
            warnings,
        }
    }
}

#[cfg(test)]
mod tests;
