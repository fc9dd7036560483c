//! The JSON contract of the readers, as types.
//!
//! `slurpstats --json` prints one [`FileJson`] per file; `pollstats` and
//! `mmash` use the same [`ValueJson`] and [`HistogramJson`] for values, so
//! the shape documented in README.md is defined once, here, and a new kind
//! cannot be printed as `null` by accident: [`ValueJson::new`] matches every
//! [`Value`] exhaustively.
//!
//! The types borrow from a [`Snapshot`] and implement `serde::Serialize`;
//! serialise them with `serde_json` (or any serde format).
//!
//! ```
//! # use mmstats::{HistogramSnapshot, Layout};
//! let mut h = HistogramSnapshot::new(Layout::timer());
//! h.record(1_000);
//! let j = mmstats_read::json::HistogramJson::new(&h);
//! assert_eq!(j.count, 1);
//! assert_eq!(j.buckets.len(), 1);
//! ```

use std::borrow::Cow;
use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::time::UNIX_EPOCH;

use serde::Serialize;

use crate::{Field, Snapshot, Value};
use mmstats::{HistogramSnapshot, WriterState};

/// One file: its facts, its values under `"stats"` and its field
/// descriptions under `"fields"`, both keyed by label.
#[derive(Debug, Serialize)]
#[non_exhaustive]
pub struct FileJson<'a> {
    /// The path as discovered, not canonicalised.
    pub file: Cow<'a, str>,
    /// Writer's process id.
    pub pid: u32,
    /// Writer's kernel thread id.
    pub tid: u32,
    /// Writer's command name.
    pub command: &'a str,
    /// Model name.
    pub model: &'a str,
    /// Whether the lock probe proved a live writer.
    pub alive: bool,
    /// `"active"`, `"exited"`, `"archive"` or `"unknown"`.
    pub state: &'static str,
    /// For an archive only: how many writers it holds and since when.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive: Option<ArchiveJson>,
    /// Creation time, nanoseconds since the Unix epoch.
    pub created_unix_ns: u64,
    /// `"MAJOR.MINOR"`.
    pub version: String,
    /// Fields of kinds this reader does not know, skipped.
    pub skipped_fields: usize,
    /// How many stats instances of the writer's process fell back to
    /// private memory (0 for a 1.0 file).
    pub fallbacks: u64,
    /// Values by label. A label that appears twice keeps its first field.
    pub stats: BTreeMap<&'a str, ValueJson<'a>>,
    /// Field descriptions by label.
    pub fields: BTreeMap<&'a str, FieldJson<'a>>,
}

impl<'a> FileJson<'a> {
    /// The object for one snapshot.
    pub fn new(snap: &'a Snapshot) -> FileJson<'a> {
        let info = &snap.info;
        let mut stats = BTreeMap::new();
        let mut fields = BTreeMap::new();
        for f in &snap.fields {
            // The first field with a label wins (spec: duplicate labels).
            if let Entry::Vacant(e) = stats.entry(f.label.as_str()) {
                e.insert(ValueJson::new(&f.value));
                fields.insert(f.label.as_str(), FieldJson::new(f));
            }
        }
        // `created` is UNIX_EPOCH plus a u64 of nanoseconds, so this fits.
        let created_unix_ns = info
            .created
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        FileJson {
            file: info.path.to_string_lossy(),
            pid: info.pid,
            tid: info.tid,
            command: &info.command,
            model: &info.model,
            alive: info.alive,
            state: state_name(info.state),
            archive: info.archive.as_deref().map(ArchiveJson::new),
            created_unix_ns,
            version: format!("{}.{}", info.version.0, info.version.1),
            skipped_fields: snap.skipped,
            fallbacks: info.fallbacks,
            stats,
            fields,
        }
    }
}

/// What an archive holds (format-spec.md §2.8), under `"archive"`.
#[derive(Debug, Serialize)]
#[non_exhaustive]
pub struct ArchiveJson {
    /// How many writer files were folded into it, ever.
    pub writers: u64,
    /// Creation time of the oldest of them, ns since the Unix epoch.
    pub since_unix_ns: u64,
    /// When the last fold ran, ns since the Unix epoch.
    pub folded_unix_ns: u64,
    /// How many folds have written it.
    pub folds: u64,
    /// Identities of folded files it still lists.
    pub ids: usize,
}

impl ArchiveJson {
    /// The object for one archive.
    pub fn new(a: &crate::archive::ArchiveInfo) -> ArchiveJson {
        let ns = |t: std::time::SystemTime| {
            t.duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        };
        ArchiveJson {
            writers: a.writers,
            since_unix_ns: ns(a.since),
            folded_unix_ns: ns(a.folded),
            folds: a.folds,
            ids: a.ids.len(),
        }
    }
}

/// The JSON name of a writer state: `"active"`, `"exited"`, `"archive"` or
/// `"unknown"`.
pub fn state_name(state: WriterState) -> &'static str {
    match state {
        WriterState::Active => "active",
        WriterState::Exited => "exited",
        WriterState::Archive => "archive",
        WriterState::Unknown(_) => "unknown",
    }
}

/// A field's description.
#[derive(Debug, Serialize)]
#[non_exhaustive]
pub struct FieldJson<'a> {
    /// [`Kind::name`](mmstats::Kind::name).
    pub kind: &'static str,
    /// The unit text, or the unit code's canonical text if that is empty.
    pub unit: &'a str,
    /// Help text.
    pub help: &'a str,
    /// Static labels; the first of a repeated key wins.
    pub static_labels: BTreeMap<&'a str, &'a str>,
}

impl<'a> FieldJson<'a> {
    /// The description of `f`.
    pub fn new(f: &'a Field) -> FieldJson<'a> {
        let mut static_labels = BTreeMap::new();
        for (k, v) in &f.static_labels {
            static_labels.entry(k.as_str()).or_insert(v.as_str());
        }
        FieldJson {
            kind: f.kind.name(),
            unit: if f.unit_text.is_empty() {
                f.unit.text()
            } else {
                &f.unit_text
            },
            help: &f.help,
            static_labels,
        }
    }
}

/// A value: counters exact `u64`, gauges `i64`, floats (`null` if not
/// finite), text as strings, unavailable values `null`, histograms and
/// timers as [`HistogramJson`].
#[derive(Debug, Serialize)]
#[serde(untagged)]
#[non_exhaustive]
pub enum ValueJson<'a> {
    /// A counter.
    Counter(u64),
    /// A gauge.
    Gauge(i64),
    /// A floating-point gauge; `None` (null) when not finite.
    Float(Option<f64>),
    /// Text or a constant.
    Text(&'a str),
    /// A histogram or timer.
    Histogram(HistogramJson),
    /// A value that could not be read.
    Null,
}

impl<'a> ValueJson<'a> {
    /// The JSON form of `value`.
    pub fn new(value: &'a Value) -> ValueJson<'a> {
        match value {
            Value::Counter(n) => ValueJson::Counter(*n),
            Value::Gauge(n) => ValueJson::Gauge(*n),
            Value::GaugeF64(x) => ValueJson::Float(Some(*x).filter(|x| x.is_finite())),
            Value::Text(s) | Value::Constant(s) => ValueJson::Text(s),
            Value::Histogram(h) => ValueJson::Histogram(HistogramJson::new(h)),
            Value::Unavailable(_) => ValueJson::Null,
        }
    }
}

/// `{count, sum, mean, min, max, p50, p75, p90, p95, p99, p999, buckets}`
/// in the field's unit; `buckets` holds `[lower, upper, count]` for each
/// non-empty bucket. Empty: count and sum 0, the rest null, no buckets.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct HistogramJson {
    /// Number of values.
    pub count: u64,
    /// Exact sum of the values (wrapping at 2^64).
    pub sum: u64,
    /// Mean, `None` when empty.
    pub mean: Option<f64>,
    /// Lower bound of the lowest non-empty bucket.
    pub min: Option<u64>,
    /// Upper bound of the highest non-empty bucket.
    pub max: Option<u64>,
    /// Median.
    pub p50: Option<u64>,
    /// 75th percentile.
    pub p75: Option<u64>,
    /// 90th percentile.
    pub p90: Option<u64>,
    /// 95th percentile.
    pub p95: Option<u64>,
    /// 99th percentile.
    pub p99: Option<u64>,
    /// 99.9th percentile.
    pub p999: Option<u64>,
    /// `[lower, upper, count]` of each non-empty bucket, in order.
    pub buckets: Vec<[u64; 3]>,
}

impl HistogramJson {
    /// The JSON form of `h`.
    pub fn new(h: &HistogramSnapshot) -> HistogramJson {
        let count = h.count();
        let q = |q: f64| h.quantile(q);
        HistogramJson {
            count,
            // An empty histogram's stored sum is ignored (spec §5.4).
            sum: if count == 0 { 0 } else { h.sum() },
            mean: h.mean(),
            min: h.min(),
            max: h.max(),
            p50: q(0.5),
            p75: q(0.75),
            p90: q(0.9),
            p95: q(0.95),
            p99: q(0.99),
            p999: q(0.999),
            buckets: h.buckets().map(|(lo, hi, n)| [lo, hi, n]).collect(),
        }
    }
}
