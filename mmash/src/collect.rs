//! The collector: one [`Sources`] for the daemon's life, sampled when a
//! request needs fresh data, and the cumulative series behind `/metrics`.
//!
//! Counters and histograms are monotonic by construction: a series' value is
//! its total at mmash's first sample plus the sum of the aggregation layer's
//! per-interval increases, which are never negative. A file that vanishes
//! keeps what it counted (its increases were added already), a file that
//! appears adds its whole count, and a writer restarted under the same pid
//! is a new file. Gauges are the layer's current value, live writers only.
//!
//! Grouping by several file facts at once (`--by command,model`) splits each
//! sample into one sub-sample per group and takes the layer's delta of each:
//! a file's command, model, pid and path never change, so a file stays in
//! its group from one sample to the next.
//!
//! Help texts and static labels are taken from fields met for the first
//! time (in a new file, or appended to a file read before), and kept while
//! their series is. Static labels are kept per series (label and group),
//! from the first file in the group that has the field: mmash always groups
//! by owner, so another user's file never changes the labels of a series.
//! A field whose static labels are over the bounds of
//! [`crate::prom::labels`] is exported without them, and logged once per
//! owner.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mmstats::{HistogramSnapshot, Kind};
use mmstats_read::aggregate::{GroupBy, Sample, SeriesValue as LayerValue, Sources, View, Warning};

use crate::prom::{labels, Collision, Family, FamilyKind, Series, SeriesValue};

/// How long a counter or histogram series is kept (on `/metrics`, and in
/// memory) once no file has its label: then it is dropped. Should a file
/// with it appear later, its series starts again from that file's total (a
/// file counted before, remembered by its identity, from what it adds
/// from then on), which Prometheus takes as a counter reset. Prometheus itself marks a
/// series stale 5 minutes after it leaves a scrape.
pub const SERIES_TTL: Duration = Duration::from_secs(15 * 60);

/// A series' static labels, as exported: `(name, value)`.
type StaticLabels = Vec<(String, String)>;

/// How many distinct warnings are remembered so that each is logged once.
const WARNINGS_REMEMBERED: usize = 10_000;

/// What one reading gave: the sample itself and the series built from it.
#[derive(Debug)]
pub struct Current {
    /// The files as read.
    pub sample: Sample,
    /// Every counter, gauge, histogram and timer, grouped, counters and
    /// histograms cumulative.
    pub families: Vec<Family>,
    /// Files that could not be read this time (their last reading is kept).
    pub unreadable: usize,
    /// When it was taken.
    pub taken: Instant,
}

/// Cumulative value of one counter or histogram series.
#[derive(Debug)]
enum Total {
    Counter(i128),
    Histogram(HistogramSnapshot),
}

#[derive(Debug)]
struct Inner {
    sources: Sources,
    totals: BTreeMap<(String, Vec<String>), (FamilyKind, Total)>,
    help: HashMap<String, String>,
    /// Each series' static labels, as exported.
    statics: HashMap<(String, Vec<String>), StaticLabels>,
    /// Owners whose static labels over the bounds were logged.
    oversized_logged: HashSet<u32>,
    /// Owners whose files disagreeing on a series' static labels were
    /// logged.
    disagreed_logged: HashSet<u32>,
    logged: HashSet<String>,
    /// When each series last had a file.
    seen: HashMap<(String, Vec<String>), Instant>,
    /// Problems with other users' files since the last summary, by owner.
    foreign: BTreeMap<u32, usize>,
    /// When the last summary of other users' problems was logged.
    foreign_logged: Option<Instant>,
    current: Option<Arc<Current>>,
}

/// Shared by every request; sampling is serialised, and requests that
/// waited for a sample taken after they arrived share it.
#[derive(Debug)]
pub struct Collector {
    by: Vec<GroupBy>,
    /// [`SERIES_TTL`], or shorter in tests.
    pub series_ttl: Duration,
    inner: Mutex<Inner>,
    collisions: Mutex<HashSet<String>>,
}

impl Collector {
    /// Opens the sources named by `args` (as `slurpstats` takes them).
    pub fn new(args: &[OsString], by: Vec<GroupBy>, rescan: Duration) -> Collector {
        let mut sources = Sources::new(args);
        sources.set_rescan_interval(rescan);
        Collector {
            by,
            series_ttl: SERIES_TTL,
            inner: Mutex::new(Inner {
                sources,
                totals: BTreeMap::new(),
                help: HashMap::new(),
                statics: HashMap::new(),
                oversized_logged: HashSet::new(),
                disagreed_logged: HashSet::new(),
                logged: HashSet::new(),
                seen: HashMap::new(),
                foreign: BTreeMap::new(),
                foreign_logged: None,
                current: None,
            }),
            collisions: Mutex::new(HashSet::new()),
        }
    }

    /// Logs each name collision once for the daemon's life.
    pub fn report_collisions(&self, collisions: &[Collision]) {
        // Poisoning: a set of strings is consistent whatever panicked.
        let mut seen = self.collisions.lock().unwrap_or_else(|e| e.into_inner());
        for c in collisions {
            let line = c.to_string();
            if seen.len() < WARNINGS_REMEMBERED && seen.insert(line.clone()) {
                eprintln!("mmash: /metrics: {line}");
            }
        }
    }

    /// A reading taken after `asked`: the latest one if it is, else a new
    /// one. Blocking; call from a blocking thread.
    pub fn current(&self, asked: Instant) -> Arc<Current> {
        // A poisoned lock means a panic while sampling; the state is still
        // consistent (totals are only added to), so go on with it.
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = &inner.current {
            if c.taken >= asked {
                return Arc::clone(c);
            }
        }
        let c = Arc::new(self.take(&mut inner));
        inner.current = Some(Arc::clone(&c));
        c
    }

    fn take(&self, inner: &mut Inner) -> Current {
        let taken = Instant::now();
        let sample = inner.sources.sample();
        // Problems with other users' files are counted per owner and
        // logged as one line per owner and interval: their names are the
        // owners' choice, and there may be thousands.
        let me = mmstats::geteuid();
        for w in &sample.warnings {
            match owner_of(&w.path).filter(|&o| o != me) {
                Some(owner) => *inner.foreign.entry(owner).or_default() += 1,
                None => log_once(&mut inner.logged, w),
            }
        }
        if !inner.foreign.is_empty()
            && inner
                .foreign_logged
                .is_none_or(|t| t.elapsed() >= FOREIGN_SUMMARY_EVERY)
        {
            for (owner, n) in std::mem::take(&mut inner.foreign) {
                eprintln!(
                    "mmash: {n} problems with files of user {} (not listed one by one)",
                    mmstats_read::owners::user_name(owner)
                );
            }
            inner.foreign_logged = Some(Instant::now());
        }
        // Help texts and static labels, from fields not in the previous
        // sample: in files not seen then, or appended since (fields are
        // only ever appended). Both samples are sorted by file: walked side
        // by side. The previous sample is the one in the current reading.
        let prev = inner.current.clone();
        let prev = prev.as_ref().map(|c| &c.sample);
        let seen: &[mmstats_read::aggregate::FileSample] = prev.map_or(&[], |p| &p.files);
        let mut j = 0;
        for f in &sample.files {
            while seen.get(j).is_some_and(|p| p.id < f.id) {
                j += 1;
            }
            let known = seen
                .get(j)
                .filter(|p| p.id == f.id)
                .map_or(0, |p| p.snapshot.fields.len());
            let fields = f.snapshot.fields.get(known..).unwrap_or_default();
            if fields.is_empty() {
                continue;
            }
            let group: Vec<String> = self
                .by
                .iter()
                .map(|g| g.group_of(&f.snapshot.info).unwrap_or_default())
                .collect();
            for field in fields {
                if family_kind(field.kind).is_none() {
                    continue;
                }
                if !field.help.is_empty() && !inner.help.contains_key(&field.label) {
                    inner.help.insert(field.label.clone(), field.help.clone());
                }
                let at = (field.label.clone(), group.clone());
                if inner.statics.get(&at).is_some_and(Vec::is_empty) {
                    continue;
                }
                let exported = labels::export(&field.static_labels).unwrap_or_else(|e| {
                    let owner = f.snapshot.info.owner;
                    if inner.oversized_logged.insert(owner) {
                        eprintln!(
                            "mmash: /metrics: field {:?} of {} (user {}): {e}; exported without its static labels, under its whole label (logged once per user)",
                            field.label,
                            f.snapshot.info.path.display(),
                            mmstats_read::owners::user_name(owner)
                        );
                    }
                    Vec::new()
                });
                match inner.statics.get(&at) {
                    None => {
                        inner.statics.insert(at, exported);
                    }
                    Some(first) if *first == exported => {}
                    Some(_) => {
                        // Files of one series that disagree on its static
                        // labels: their sum belongs to none of them, so
                        // the series is exported without any.
                        let owner = f.snapshot.info.owner;
                        if inner.disagreed_logged.insert(owner) {
                            eprintln!(
                                "mmash: /metrics: field {:?} has other static labels in {} (user {}) than in an earlier file of its series; the series is exported without static labels, under its whole label (logged once per user)",
                                field.label,
                                f.snapshot.info.path.display(),
                                mmstats_read::owners::user_name(owner)
                            );
                        }
                        inner.statics.insert(at, Vec::new());
                    }
                }
            }
        }
        let view = View::default();
        let next_parts = partition(&self.by, &sample);
        let prev_parts = prev.map(|p| partition(&self.by, p));
        let mut gauges: BTreeMap<(String, Vec<String>), SeriesValue> = BTreeMap::new();
        for (group, next) in &next_parts {
            let empty;
            let prev = match &prev_parts {
                None => None,
                Some(parts) => match parts.get(group) {
                    Some(p) => Some(&**p),
                    None => {
                        empty = Sample {
                            time: next.time,
                            instant: next.instant,
                            files: Vec::new(),
                            warnings: Vec::new(),
                            foreign_skipped: 0,
                        };
                        Some(&empty)
                    }
                },
            };
            let delta = view.delta(prev, next);
            for w in &delta.warnings {
                log_once(&mut inner.logged, w);
            }
            for (key, series) in delta.series {
                let Some(kind) = family_kind(series.kind) else {
                    continue;
                };
                let at = (key.label, group.clone());
                inner.seen.insert(at.clone(), taken);
                match (kind, series.value) {
                    (FamilyKind::Gauge, LayerValue::Int(n)) => {
                        gauges.insert(at, SeriesValue::Int(n));
                    }
                    (FamilyKind::Gauge, LayerValue::Float(x)) => {
                        gauges.insert(at, SeriesValue::Float(x));
                    }
                    (FamilyKind::Counter, LayerValue::Int(inc)) => {
                        let entry = inner.totals.entry(at).or_insert((kind, Total::Counter(0)));
                        if let Total::Counter(n) = &mut entry.1 {
                            // Increases from the layer are never negative.
                            *n += inc.max(0);
                        }
                    }
                    (FamilyKind::Histogram | FamilyKind::Timer, LayerValue::Histogram(h)) => {
                        match inner.totals.get_mut(&at) {
                            Some((_, Total::Histogram(total))) => {
                                if let Err(e) = total.merge(&h) {
                                    let w = Warning {
                                        path: "(merge)".into(),
                                        reason: format!("{}: {e}; interval left out", at.0),
                                    };
                                    log_once(&mut inner.logged, &w);
                                }
                            }
                            Some(_) => {}
                            None => {
                                inner.totals.insert(at, (kind, Total::Histogram(h)));
                            }
                        }
                    }
                    // Missing (only dead writers' gauges), or a value whose
                    // class disagrees with the first file's kind.
                    _ => {}
                }
            }
        }
        // A counter or histogram series no file has had for SERIES_TTL is
        // dropped, with its help text: what is kept for gone files is
        // bounded by what came and went in that time.
        let Inner {
            seen,
            totals,
            help,
            statics,
            ..
        } = inner;
        let ttl = self.series_ttl;
        seen.retain(|_, at| taken.saturating_duration_since(*at) < ttl);
        totals.retain(|k, _| seen.contains_key(k));
        statics.retain(|k, _| seen.contains_key(k));
        let labels: HashSet<&String> = seen.keys().map(|(l, _)| l).collect();
        help.retain(|l, _| labels.contains(l));
        let families = self.families(inner, gauges);
        let unreadable = sample.files.iter().filter(|f| !f.fresh && !f.gone).count();
        Current {
            sample,
            families,
            unreadable,
            taken,
        }
    }

    fn families(
        &self,
        inner: &Inner,
        gauges: BTreeMap<(String, Vec<String>), SeriesValue>,
    ) -> Vec<Family> {
        let mut out: BTreeMap<String, Family> = BTreeMap::new();
        let names: Vec<&'static str> = self.by.iter().map(|g| g.name()).collect();
        let labels = |group: &[String]| -> Vec<(&'static str, String)> {
            names.iter().copied().zip(group.iter().cloned()).collect()
        };
        let mut push = |label: &str, kind: FamilyKind, group: &[String], value: SeriesValue| {
            let static_labels = inner
                .statics
                .get(&(label.to_owned(), group.to_vec()))
                .cloned()
                .unwrap_or_default();
            let fam = out.entry(label.to_owned()).or_insert_with(|| Family {
                label: label.to_owned(),
                kind,
                help: inner.help.get(label).cloned().unwrap_or_default(),
                series: Vec::new(),
            });
            if fam.kind == kind {
                fam.series.push(Series {
                    labels: labels(group),
                    static_labels,
                    value,
                });
            }
        };
        for ((label, group), (kind, total)) in &inner.totals {
            let value = match total {
                Total::Counter(n) => SeriesValue::Int(*n),
                Total::Histogram(h) => SeriesValue::Histogram(h.clone()),
            };
            push(label, *kind, group, value);
        }
        for ((label, group), value) in gauges {
            push(&label, FamilyKind::Gauge, &group, value);
        }
        out.into_values().collect()
    }
}

/// The Prometheus family kind of an mmstats kind; `None` for text.
pub fn family_kind(kind: Kind) -> Option<FamilyKind> {
    match kind {
        Kind::Counter => Some(FamilyKind::Counter),
        Kind::Gauge | Kind::GaugeF64 => Some(FamilyKind::Gauge),
        Kind::Histogram => Some(FamilyKind::Histogram),
        Kind::Timer => Some(FamilyKind::Timer),
        _ => None,
    }
}

/// Splits a sample into one sample per group (files keep their order);
/// without grouping, the sample itself.
fn partition<'a>(by: &[GroupBy], sample: &'a Sample) -> BTreeMap<Vec<String>, Cow<'a, Sample>> {
    let mut parts: BTreeMap<Vec<String>, Cow<'a, Sample>> = BTreeMap::new();
    if by.is_empty() {
        parts.insert(Vec::new(), Cow::Borrowed(sample));
        return parts;
    }
    for f in &sample.files {
        let group: Vec<String> = by
            .iter()
            .map(|g| g.group_of(&f.snapshot.info).unwrap_or_default())
            .collect();
        parts
            .entry(group)
            .or_insert_with(|| {
                Cow::Owned(Sample {
                    time: sample.time,
                    instant: sample.instant,
                    files: Vec::new(),
                    warnings: Vec::new(),
                    foreign_skipped: 0,
                })
            })
            .to_mut()
            .files
            .push(f.clone());
    }
    parts
}

/// How often problems with other users' files are summarised in the log.
const FOREIGN_SUMMARY_EVERY: Duration = Duration::from_secs(60);

/// The owner of the file or directory a warning is about: the file's, or,
/// if it cannot be examined, its directory's. `None` for warnings about no
/// path on disk (`(merge)`, `(file watch)`).
fn owner_of(path: &std::path::Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path)
        .ok()
        .or_else(|| std::fs::symlink_metadata(path.parent()?).ok())
        .map(|m| m.uid())
}

fn log_once(logged: &mut HashSet<String>, w: &Warning) {
    let line = w.to_string();
    if logged.len() >= WARNINGS_REMEMBERED {
        logged.clear();
    }
    if logged.insert(line.clone()) {
        eprintln!("mmash: {line}");
    }
}
