//! The Prometheus text exposition format (version 0.0.4), from a small
//! series type that the collector fills.
//!
//! Naming: an mmstats label becomes a metric name by replacing every
//! character outside `[a-zA-Z0-9_]` with `_` (colons too: Prometheus keeps
//! them for recording rules and `promtool` warns about them), prefixing `_`
//! if it starts with a digit, and adding the namespace (`NS_`) and a suffix:
//! `_total` for counters, `_seconds` for timers. A name in mmash's own
//! namespace (`mmash_...`) gets `mmstats_` in front. Families of one kind
//! that map to one name are all exported under it, told apart by an
//! `mmstats_label` label holding the original label; families of other
//! kinds that claim the same name (including a histogram's `_bucket`,
//! `_count` and `_sum`) are a [`Collision`]: the first, in label order, is
//! exported, the others are not, and mmash logs it.
//!
//! Static labels: a field's static labels are exported as Prometheus labels
//! of its series, and a series that has some is named after its label
//! without a trailing `{...}` (`http.requests{route=/a}` with `route=/a` is
//! `http_requests_total{route="/a"}`); [`labels`] has the rule, its bounds
//! and the renaming of keys that clash with mmash's own labels. Series of
//! one name then differ by their static labels, and `mmstats_label` is
//! added only where one owner has two labels with the same static labels
//! under one name.
//!
//! Histograms export a bounded set of `le` boundaries, each the upper edge
//! of one of the file's buckets, so every cumulative count is exact; the
//! `_sum` of a timer is the exact nanosecond sum printed in seconds.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use mmstats::{HistogramSnapshot, Layout};

pub mod labels;

/// What a family is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FamilyKind {
    /// Monotonic.
    Counter,
    /// Goes up and down.
    Gauge,
    /// A histogram in the field's own unit.
    Histogram,
    /// A histogram of nanoseconds, exported in seconds.
    Timer,
}

/// What the collector keeps of one mmstats label, over every group. Its
/// series are exported under one Prometheus family, or under two when some
/// export static labels and some do not ([`render`]).
#[derive(Clone, Debug)]
pub struct Family {
    /// The mmstats label, e.g. `web.status.2xx`.
    pub label: String,
    /// What it is.
    pub kind: FamilyKind,
    /// The field's help text (may be empty).
    pub help: String,
    /// The series, one per group.
    pub series: Vec<Series>,
}

/// One series of a family.
#[derive(Clone, Debug)]
pub struct Series {
    /// Prometheus labels, e.g. `[("command", "web"), ("model", "Web")]`.
    pub labels: Vec<(&'static str, String)>,
    /// The field's static labels as exported ([`labels::export`]: names
    /// sanitised, sorted, never one of mmash's own); empty without.
    pub static_labels: Vec<(String, String)>,
    /// The value.
    pub value: SeriesValue,
}

/// A series' value.
#[derive(Clone, Debug)]
pub enum SeriesValue {
    /// A counter total or an integer gauge.
    Int(i128),
    /// A floating-point gauge.
    Float(f64),
    /// A histogram or timer's cumulative distribution.
    Histogram(HistogramSnapshot),
}

/// Two or more mmstats labels that map to one metric name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Collision {
    /// The metric name claimed twice.
    pub name: String,
    /// The label that was exported.
    pub kept: String,
    /// The label that was not.
    pub dropped: String,
}

impl std::fmt::Display for Collision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "labels {:?} and {:?} both map to the metric name {}; only {:?} is exported",
            self.kept, self.dropped, self.name, self.kept
        )
    }
}

/// The metric name of `label` (without suffix): sanitised and prefixed.
pub fn base_name(namespace: &str, label: &str) -> String {
    let mut out = String::with_capacity(namespace.len() + label.len() + 8);
    if !namespace.is_empty() {
        push_sanitised(&mut out, namespace);
        out.push('_');
    }
    push_sanitised(&mut out, label);
    out
}

fn push_sanitised(out: &mut String, s: &str) {
    if s.starts_with(|c: char| c.is_ascii_digit()) || s.is_empty() {
        out.push('_');
    }
    out.extend(s.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '_' {
            c
        } else {
            '_'
        }
    }));
}

/// The prefix of mmash's own series (`mmash_files`, `mmash_retire_*`),
/// which no file's label may produce.
pub const RESERVED_PREFIX: &str = "mmash_";

/// The full metric name of a family. A name that would start with
/// [`RESERVED_PREFIX`] gets `mmstats_` in front: a file cannot make a
/// series in mmash's own namespace.
pub fn metric_name(namespace: &str, label: &str, kind: FamilyKind) -> String {
    let mut name = base_name(namespace, label);
    if name.starts_with(RESERVED_PREFIX) {
        name.insert_str(0, "mmstats_");
    }
    let suffix = match kind {
        FamilyKind::Counter => "_total",
        FamilyKind::Timer => "_seconds",
        FamilyKind::Gauge | FamilyKind::Histogram => "",
    };
    if !name.ends_with(suffix) {
        name.push_str(suffix);
    }
    name
}

/// The sample names a family writes.
fn claimed(name: &str, kind: FamilyKind) -> Vec<String> {
    match kind {
        FamilyKind::Counter | FamilyKind::Gauge => vec![name.to_owned()],
        FamilyKind::Histogram | FamilyKind::Timer => vec![
            name.to_owned(),
            format!("{name}_bucket"),
            format!("{name}_count"),
            format!("{name}_sum"),
        ],
    }
}

/// The `le` boundaries of a layout: indices `k` such that `2^k - 1` is
/// exported. Timers: 2^10 ns (1 µs) to 2^36 ns (69 s), one per power of
/// two. Other histograms: from 1 up to the layout's range, at most about
/// 28 powers of two, evenly spaced. Every boundary is below `2^max_bits`, so
/// no clamped value is counted under a finite boundary.
pub fn boundaries(layout: Layout, timer: bool) -> Vec<u32> {
    let m = u32::from(layout.max_bits());
    if timer {
        (10..=36).filter(|&k| k < m).collect()
    } else {
        let step = m.div_ceil(28).max(1);
        (1..m).step_by(step as usize).collect()
    }
}

/// Cumulative counts of `h` at each boundary `2^k - 1`, in order.
///
/// Each boundary is the upper edge of a bucket, so each bucket is wholly
/// below or wholly above it: the counts are exact.
pub fn cumulative(h: &HistogramSnapshot, ks: &[u32]) -> Vec<u64> {
    let mut out = Vec::with_capacity(ks.len());
    let mut buckets = h.buckets().peekable();
    let mut acc = 0u64;
    for &k in ks {
        let edge = (1u64 << k) - 1;
        while let Some(&(_, hi, n)) = buckets.peek() {
            if hi > edge {
                break;
            }
            acc += n;
            buckets.next();
        }
        out.push(acc);
    }
    out
}

/// `ns` nanoseconds as an exact decimal number of seconds.
pub fn seconds(ns: u128) -> String {
    let (s, frac) = (ns / 1_000_000_000, ns % 1_000_000_000);
    if frac == 0 {
        return s.to_string();
    }
    let mut out = format!("{s}.{frac:09}");
    while out.ends_with('0') {
        out.pop();
    }
    out
}

/// Escapes HELP text: backslash and newline.
fn escape_help(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Escapes a label value: backslash, double quote and newline.
fn escape_value(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn push_labels(out: &mut String, labels: &[(&str, &str)], le: Option<&str>) {
    if labels.is_empty() && le.is_none() {
        return;
    }
    out.push('{');
    let mut first = true;
    for (k, v) in labels.iter().copied().chain(le.map(|le| ("le", le))) {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(k);
        out.push_str("=\"");
        escape_value(v, out);
        out.push('"');
    }
    out.push('}');
}

fn push_float(out: &mut String, x: f64) {
    if x.is_nan() {
        out.push_str("NaN");
    } else if x.is_infinite() {
        out.push_str(if x > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(out, "{x}");
    }
}

/// The families and series that one metric name gathers.
#[derive(Default)]
struct Named<'a> {
    /// The label part that named it, from its first family.
    part: &'a str,
    /// Families with a series (or, without series, themselves) under the
    /// name, in label order, each once.
    fams: Vec<&'a Family>,
    /// Their series under the name.
    series: Vec<(&'a Family, &'a Series)>,
}

/// Renders `families` (sorted by label for a stable page) into `out` and
/// returns the name collisions met.
///
/// Each series is named after its family's label, without a trailing
/// `{...}` when it exports static labels ([`labels`]). Series of one kind
/// that get one name are one family on the page (one `# HELP` and `# TYPE`,
/// the first help text in label order). Where the same owner has series of
/// two labels under one name with the same static labels
/// (`web.status.2xx` and `web-status-2xx`), each such series carries its
/// original label as `mmstats_label="..."`, so none hides another. A
/// family whose name another family of a different kind took (or whose
/// sample names, such as a histogram's `_count`, it took) cannot be
/// exported under it: that is a [`Collision`], which the caller logs.
pub fn render(namespace: &str, families: &[Family], out: &mut String) -> Vec<Collision> {
    let mut order: Vec<&Family> = families.iter().collect();
    order.sort_by(|a, b| a.label.cmp(&b.label));
    let mut by_name: BTreeMap<String, Named> = BTreeMap::new();
    for fam in order {
        let names: Vec<(&str, Option<&Series>)> = if fam.series.is_empty() {
            vec![(fam.label.as_str(), None)]
        } else {
            fam.series
                .iter()
                .map(|s| {
                    let part = labels::family_part(&fam.label, !s.static_labels.is_empty());
                    (part, Some(s))
                })
                .collect()
        };
        for (part, s) in names {
            let named = by_name
                .entry(metric_name(namespace, part, fam.kind))
                .or_default();
            if named.fams.is_empty() {
                named.part = part;
            }
            if !named.fams.last().is_some_and(|f| std::ptr::eq(*f, fam)) {
                named.fams.push(fam);
            }
            if let Some(s) = s {
                named.series.push((fam, s));
            }
        }
    }
    let mut owners: BTreeMap<String, &str> = BTreeMap::new();
    let mut collisions = Vec::new();
    for (name, named) in &by_name {
        let first = named.fams[0];
        let kind = first.kind;
        for f in named.fams.iter().filter(|f| f.kind != kind) {
            collisions.push(Collision {
                name: name.clone(),
                kept: first.label.clone(),
                dropped: f.label.clone(),
            });
        }
        let names = claimed(name, kind);
        if let Some(owner) = names.iter().find_map(|n| owners.get(n)) {
            for f in named.fams.iter().filter(|f| f.kind == kind) {
                collisions.push(Collision {
                    name: name.clone(),
                    kept: (*owner).to_owned(),
                    dropped: f.label.clone(),
                });
            }
            continue;
        }
        for n in names {
            owners.insert(n, &first.label);
        }
        let help = named
            .fams
            .iter()
            .filter(|f| f.kind == kind)
            .map(|f| f.help.as_str())
            .find(|h| !h.trim().is_empty());
        push_header(name, kind, help, named.part, out);
        let series: Vec<(&Family, &Series)> = named
            .series
            .iter()
            .filter(|(f, _)| f.kind == kind)
            .copied()
            .collect();
        // Which owners' label sets have series of more than one label:
        // those are told apart by the label. Only the same owner's series
        // count, so another user's label never renames a series.
        // (owner, static labels) -> (first label, whether another label
        // has series of that set too)
        let mut sets: HashMap<_, (&str, bool)> = HashMap::new();
        for (f, s) in &series {
            sets.entry((user_of(s), &s.static_labels[..]))
                .and_modify(|(label, shared)| *shared |= *label != f.label)
                .or_insert((&f.label, false));
        }
        let mut labels: Vec<(&str, &str)> = Vec::new();
        for (f, s) in series {
            labels.clear();
            labels.extend(s.labels.iter().map(|(k, v)| (*k, v.as_str())));
            labels.extend(
                s.static_labels
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str())),
            );
            if sets[&(user_of(s), &s.static_labels[..])].1 {
                labels.push(("mmstats_label", &f.label));
            }
            render_series(name, kind, &labels, &s.value, out);
        }
    }
    collisions
}

/// The `user` label of a series (`None` without one).
fn user_of(s: &Series) -> Option<&str> {
    s.labels
        .iter()
        .find(|(k, _)| *k == "user")
        .map(|(_, v)| v.as_str())
}

/// `# HELP` and `# TYPE` of a family: its help text, or `mmstats KIND
/// PART` where `PART` is the label (part) that named it.
fn push_header(name: &str, kind: FamilyKind, help: Option<&str>, part: &str, out: &mut String) {
    out.push_str("# HELP ");
    out.push_str(name);
    out.push(' ');
    match help {
        Some(help) => escape_help(help, out),
        None => {
            let what = match kind {
                FamilyKind::Counter => "counter",
                FamilyKind::Gauge => "gauge",
                FamilyKind::Histogram => "histogram",
                FamilyKind::Timer => "timer",
            };
            out.push_str("mmstats ");
            out.push_str(what);
            out.push(' ');
            escape_help(part, out);
        }
    }
    out.push('\n');
    let ty = match kind {
        FamilyKind::Counter => "counter",
        FamilyKind::Gauge => "gauge",
        FamilyKind::Histogram | FamilyKind::Timer => "histogram",
    };
    let _ = writeln!(out, "# TYPE {name} {ty}");
}

fn render_series(
    name: &str,
    kind: FamilyKind,
    labels: &[(&str, &str)],
    value: &SeriesValue,
    out: &mut String,
) {
    match value {
        SeriesValue::Int(n) => {
            out.push_str(name);
            push_labels(out, labels, None);
            let _ = writeln!(out, " {n}");
        }
        SeriesValue::Float(x) => {
            out.push_str(name);
            push_labels(out, labels, None);
            out.push(' ');
            push_float(out, *x);
            out.push('\n');
        }
        SeriesValue::Histogram(h) => render_histogram(name, kind, labels, h, out),
    }
}

fn render_histogram(
    name: &str,
    kind: FamilyKind,
    labels: &[(&str, &str)],
    h: &HistogramSnapshot,
    out: &mut String,
) {
    let timer = kind == FamilyKind::Timer;
    let ks = boundaries(h.layout(), timer);
    let counts = cumulative(h, &ks);
    let mut le = String::new();
    for (&k, n) in ks.iter().zip(counts) {
        le.clear();
        let edge = (1u64 << k) - 1;
        if timer {
            le.push_str(&seconds(edge.into()));
        } else {
            let _ = write!(le, "{edge}");
        }
        out.push_str(name);
        out.push_str("_bucket");
        push_labels(out, labels, Some(&le));
        let _ = writeln!(out, " {n}");
    }
    let count = h.count();
    out.push_str(name);
    out.push_str("_bucket");
    push_labels(out, labels, Some("+Inf"));
    let _ = writeln!(out, " {count}");
    let sum = if count == 0 { 0 } else { h.sum() };
    out.push_str(name);
    out.push_str("_sum");
    push_labels(out, labels, None);
    if timer {
        let _ = writeln!(out, " {}", seconds(sum.into()));
    } else {
        let _ = writeln!(out, " {sum}");
    }
    out.push_str(name);
    out.push_str("_count");
    push_labels(out, labels, None);
    let _ = writeln!(out, " {count}");
}

#[cfg(test)]
mod tests;
