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
//! Histograms export a bounded set of `le` boundaries, each the upper edge
//! of one of the file's buckets, so every cumulative count is exact; the
//! `_sum` of a timer is the exact nanosecond sum printed in seconds.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use mmstats::{HistogramSnapshot, Layout};

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

/// One metric family: one mmstats label, over every group.
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

fn push_labels(out: &mut String, labels: &[(&str, String)], le: Option<&str>) {
    if labels.is_empty() && le.is_none() {
        return;
    }
    out.push('{');
    let mut first = true;
    for (k, v) in labels {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(k);
        out.push_str("=\"");
        escape_value(v, out);
        out.push('"');
    }
    if let Some(le) = le {
        if !first {
            out.push(',');
        }
        out.push_str("le=\"");
        out.push_str(le);
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

/// Renders `families` (sorted by label for a stable page) into `out` and
/// returns the name collisions met.
///
/// Families of one kind whose labels map to one metric name (`web.status.2xx`
/// and `web-status-2xx`) are both exported under that name, each series with
/// its original label as `mmstats_label="..."`, so none hides another. A
/// family whose name another family of a different kind took (or whose
/// sample names, such as a histogram's `_count`, it took) cannot be
/// exported under it: that is a [`Collision`], which the caller logs.
pub fn render(namespace: &str, families: &[Family], out: &mut String) -> Vec<Collision> {
    let mut by_name: BTreeMap<String, Vec<&Family>> = BTreeMap::new();
    let mut order: Vec<&Family> = families.iter().collect();
    order.sort_by(|a, b| a.label.cmp(&b.label));
    for fam in order {
        by_name
            .entry(metric_name(namespace, &fam.label, fam.kind))
            .or_default()
            .push(fam);
    }
    let mut owners: BTreeMap<String, &str> = BTreeMap::new();
    let mut collisions = Vec::new();
    for (name, fams) in &by_name {
        let kind = fams[0].kind;
        let (same, other): (Vec<&Family>, Vec<&Family>) = fams.iter().partition(|f| f.kind == kind);
        for f in other {
            collisions.push(Collision {
                name: name.clone(),
                kept: fams[0].label.clone(),
                dropped: f.label.clone(),
            });
        }
        let names = claimed(name, kind);
        if let Some(owner) = names.iter().find_map(|n| owners.get(n)) {
            for f in &same {
                collisions.push(Collision {
                    name: name.clone(),
                    kept: (*owner).to_owned(),
                    dropped: f.label.clone(),
                });
            }
            continue;
        }
        for n in names {
            owners.insert(n, &fams[0].label);
        }
        if same.len() == 1 {
            render_family(name, same[0], out);
        } else {
            let merged = Family {
                label: same[0].label.clone(),
                kind,
                help: same
                    .iter()
                    .map(|f| f.help.as_str())
                    .find(|h| !h.trim().is_empty())
                    .unwrap_or_default()
                    .to_owned(),
                series: same
                    .iter()
                    .flat_map(|f| {
                        f.series.iter().map(|s| {
                            // Told apart by the original label only where
                            // the same owner has two labels of this name:
                            // another user's label never renames a series.
                            let mut labels = s.labels.clone();
                            let owner = user_of(s);
                            let shared = same.iter().any(|g| {
                                g.label != f.label && g.series.iter().any(|t| user_of(t) == owner)
                            });
                            if shared {
                                labels.push(("mmstats_label", f.label.clone()));
                            }
                            Series {
                                labels,
                                value: s.value.clone(),
                            }
                        })
                    })
                    .collect(),
            };
            render_family(name, &merged, out);
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

fn render_family(name: &str, fam: &Family, out: &mut String) {
    out.push_str("# HELP ");
    out.push_str(name);
    out.push(' ');
    if fam.help.trim().is_empty() {
        let what = match fam.kind {
            FamilyKind::Counter => "counter",
            FamilyKind::Gauge => "gauge",
            FamilyKind::Histogram => "histogram",
            FamilyKind::Timer => "timer",
        };
        out.push_str("mmstats ");
        out.push_str(what);
        out.push(' ');
        escape_help(&fam.label, out);
    } else {
        escape_help(&fam.help, out);
    }
    out.push('\n');
    let ty = match fam.kind {
        FamilyKind::Counter => "counter",
        FamilyKind::Gauge => "gauge",
        FamilyKind::Histogram | FamilyKind::Timer => "histogram",
    };
    let _ = writeln!(out, "# TYPE {name} {ty}");
    for s in &fam.series {
        match &s.value {
            SeriesValue::Int(n) => {
                out.push_str(name);
                push_labels(out, &s.labels, None);
                let _ = writeln!(out, " {n}");
            }
            SeriesValue::Float(x) => {
                out.push_str(name);
                push_labels(out, &s.labels, None);
                out.push(' ');
                push_float(out, *x);
                out.push('\n');
            }
            SeriesValue::Histogram(h) => render_histogram(name, fam.kind, &s.labels, h, out),
        }
    }
}

fn render_histogram(
    name: &str,
    kind: FamilyKind,
    labels: &[(&str, String)],
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
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_rules() {
        assert_eq!(
            metric_name("", "web.status.2xx", FamilyKind::Counter),
            "web_status_2xx_total"
        );
        assert_eq!(
            metric_name("", "requests_total", FamilyKind::Counter),
            "requests_total"
        );
        assert_eq!(
            metric_name("app", "web.request", FamilyKind::Timer),
            "app_web_request_seconds"
        );
        assert_eq!(metric_name("", "2xx:é-x", FamilyKind::Gauge), "_2xx___x");
    }

    #[test]
    fn seconds_are_exact_decimals() {
        assert_eq!(seconds(0), "0");
        assert_eq!(seconds(1_000_000_000), "1");
        assert_eq!(seconds(1_234_567_891), "1.234567891");
        assert_eq!(seconds(1023), "0.000001023");
        assert_eq!(seconds(1_500_000_000), "1.5");
    }

    #[test]
    fn boundaries_are_bounded_and_bucket_edges() {
        for (layout, timer) in [
            (Layout::timer(), true),
            (Layout::histogram(), false),
            (Layout::new(2, 10).unwrap(), false),
            (Layout::new(4, 20).unwrap(), true),
        ] {
            let ks = boundaries(layout, timer);
            assert!(!ks.is_empty() && ks.len() <= 30, "{layout:?}: {}", ks.len());
            for &k in &ks {
                let edge = (1u64 << k) - 1;
                let i = layout.index(edge);
                assert_eq!(layout.bounds(i).1, edge, "{layout:?} k={k}");
                assert!(edge < layout.max_value());
            }
        }
        assert_eq!(boundaries(Layout::timer(), true).len(), 27);
    }

    #[test]
    fn cumulative_counts_are_exact() {
        let mut h = HistogramSnapshot::new(Layout::timer());
        let values = [0u64, 1000, 1023, 1024, 5_000, 1_000_000, 70_000_000_000];
        for v in values {
            h.record(v);
        }
        let ks = boundaries(Layout::timer(), true);
        let counts = cumulative(&h, &ks);
        for (&k, &n) in ks.iter().zip(&counts) {
            let edge = (1u64 << k) - 1;
            let exact = values.iter().filter(|&&v| v <= edge).count() as u64;
            assert_eq!(n, exact, "le {edge}");
        }
    }

    #[test]
    fn same_kind_labels_of_one_name_are_all_exported_and_other_kinds_collide() {
        let fam = |label: &str, kind| Family {
            label: label.into(),
            kind,
            help: String::new(),
            series: vec![Series {
                labels: vec![("user", "u".into())],
                value: SeriesValue::Int(1),
            }],
        };
        let mut out = String::new();
        let c = render(
            "",
            &[
                fam("a_b", FamilyKind::Gauge),
                fam("a.b", FamilyKind::Gauge),
                fam("t_count", FamilyKind::Gauge),
                Family {
                    label: "t".into(),
                    kind: FamilyKind::Histogram,
                    help: "h".into(),
                    series: vec![],
                },
            ],
            &mut out,
        );
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!(c[0].kept, "t");
        assert_eq!(c[0].dropped, "t_count");
        assert_eq!(out.matches("# TYPE a_b gauge").count(), 1, "{out}");
        assert!(
            out.contains("a_b{user=\"u\",mmstats_label=\"a.b\"} 1"),
            "{out}"
        );
        assert!(
            out.contains("a_b{user=\"u\",mmstats_label=\"a_b\"} 1"),
            "{out}"
        );
    }

    #[test]
    fn another_users_label_never_renames_a_series() {
        let fam = |label: &str, user: &str| Family {
            label: label.into(),
            kind: FamilyKind::Counter,
            help: String::new(),
            series: vec![Series {
                labels: vec![("user", user.into())],
                value: SeriesValue::Int(1),
            }],
        };
        let mut out = String::new();
        let c = render("", &[fam("web.ok", "a"), fam("web-ok", "b")], &mut out);
        assert!(c.is_empty(), "{c:?}");
        assert!(out.contains("web_ok_total{user=\"a\"} 1"), "{out}");
        assert!(out.contains("web_ok_total{user=\"b\"} 1"), "{out}");
        assert!(!out.contains("mmstats_label"), "{out}");
    }

    #[test]
    fn file_labels_never_make_mmash_names() {
        assert_eq!(
            metric_name("", "mmash.retire.runs", FamilyKind::Counter),
            "mmstats_mmash_retire_runs_total"
        );
        assert_eq!(
            metric_name("", "web.ok", FamilyKind::Counter),
            "web_ok_total"
        );
    }

    #[test]
    fn help_and_label_values_are_escaped() {
        let mut out = String::new();
        render(
            "",
            &[Family {
                label: "x".into(),
                kind: FamilyKind::Gauge,
                help: "back\\slash\nnew \"line\"".into(),
                series: vec![Series {
                    labels: vec![("command", "a\"b\\c\nd".into())],
                    value: SeriesValue::Float(f64::NAN),
                }],
            }],
            &mut out,
        );
        assert_eq!(
            out,
            "# HELP x back\\\\slash\\nnew \"line\"\n# TYPE x gauge\nx{command=\"a\\\"b\\\\c\\nd\"} NaN\n"
        );
    }
}
