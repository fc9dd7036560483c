//! The text output: one header line of facts per file, then its fields as
//! `label  value` lines sorted by label, values aligned in one column.

use std::borrow::Cow;
use std::io::{self, Write};

use mmstats::{HistogramSnapshot, Kind, WriterState};
use mmstats_read::{Field, FileInfo, Snapshot, Value};

use crate::human;

/// Writes one file's block; `first` is false for every file after the first,
/// which is set apart by a blank line.
pub fn write_file(out: &mut impl Write, snap: &Snapshot, first: bool) -> io::Result<()> {
    if !first {
        writeln!(out)?;
    }
    writeln!(out, "{}", header(snap))?;
    let mut fields: Vec<&Field> = snap.fields.iter().collect();
    fields.sort_by(|a, b| a.label.cmp(&b.label));
    let names: Vec<String> = fields.iter().map(|f| display_label(f)).collect();
    let width = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
    for (field, name) in fields.iter().zip(&names) {
        writeln!(out, "  {name:<width$}  {}", value(field))?;
    }
    Ok(())
}

/// `PATH: pid P, tid T, command "C", model "M", alive, age 3.2s, version 1.0`.
fn header(snap: &Snapshot) -> String {
    let i = &snap.info;
    let mut line = format!(
        "{}: pid {}, tid {}, command {:?}, model {:?}, {}, age {}, version {}.{}",
        i.path.display(),
        i.pid,
        i.tid,
        i.command,
        i.model,
        liveness(i),
        human::age(i.age()),
        i.version.0,
        i.version.1
    );
    if i.fallbacks > 0 {
        line += &format!(
            ", {} stats instance(s) of this process went to private memory (missing here)",
            i.fallbacks
        );
    }
    if snap.skipped > 0 {
        line += &format!(
            ", {} field(s) of kinds unknown to this reader skipped",
            snap.skipped
        );
    }
    line
}

/// `alive` while the writer writes the file; `exited (process alive)` for
/// a file whose thread ended while its process lives on (parked for reuse,
/// spec §2.7); `dead (exited)` when the writer closed the file and its
/// process is gone; `dead (did not close)` when its process is gone and
/// never marked it exited (killed, or an exit that ran no handlers: the
/// reader cannot tell a crash from that, so it does not say "crashed").
pub fn liveness(info: &FileInfo) -> String {
    if let Some(a) = &info.archive {
        return format!(
            "archive of {} writer{} since {} ago, folded {} ago",
            a.writers,
            if a.writers == 1 { "" } else { "s" },
            human::age(a.since.elapsed().unwrap_or_default()),
            human::age(a.folded.elapsed().unwrap_or_default()),
        );
    }
    match (info.alive, info.state) {
        (true, WriterState::Active) => "alive".into(),
        (true, WriterState::Exited) => "exited (process alive)".into(),
        (true, WriterState::Unknown(w)) => format!("alive (state word {w})"),
        (false, WriterState::Exited) => "dead (exited)".into(),
        (false, WriterState::Active) => "dead (did not close)".into(),
        (false, WriterState::Unknown(w)) => format!("dead (state word {w})"),
        (alive, other) => format!("{} ({other:?})", if alive { "alive" } else { "dead" }),
    }
}

/// The label, with static labels as `{key="value",...}` if it has any.
fn display_label(f: &Field) -> String {
    let mut s = printable(&f.label).into_owned();
    if !f.static_labels.is_empty() {
        let pairs: Vec<String> = f
            .static_labels
            .iter()
            .map(|(k, v)| format!("{}={v:?}", printable(k)))
            .collect();
        s += &format!("{{{}}}", pairs.join(","));
    }
    s
}

/// `s` with control characters escaped, so a hostile label cannot break
/// the one-line-per-field layout.
fn printable(s: &str) -> Cow<'_, str> {
    if s.chars().any(char::is_control) {
        Cow::Owned(
            s.chars()
                .map(|c| {
                    if c.is_control() {
                        c.escape_default().to_string()
                    } else {
                        c.to_string()
                    }
                })
                .collect(),
        )
    } else {
        Cow::Borrowed(s)
    }
}

/// A field's value as shown: numbers plain (with the unit, if any), text
/// quoted and escaped, histograms and timers summarised.
pub fn value(f: &Field) -> String {
    let unit = |v: String| {
        if f.unit_text.is_empty() {
            v
        } else {
            format!("{v} {}", printable(&f.unit_text))
        }
    };
    match &f.value {
        Value::Counter(n) => unit(n.to_string()),
        Value::Gauge(n) => unit(n.to_string()),
        Value::GaugeF64(x) => unit(x.to_string()),
        Value::Text(s) | Value::Constant(s) => format!("{s:?}"),
        Value::Unavailable(reason) => format!("<unavailable: {}>", printable(reason)),
        Value::Histogram(h) if f.kind == Kind::Timer => summary(h, human::duration_ns),
        Value::Histogram(h) => {
            let s = summary(h, human::decimal);
            if h.count() == 0 {
                s
            } else {
                unit(s)
            }
        }
        other => format!("<value this slurpstats cannot show: {other:?}>"),
    }
}

/// `count=N mean=M p50=A p99=B p99.9=C max=D`, or `count=0` when empty.
fn summary(h: &HistogramSnapshot, show: impl Fn(f64) -> String) -> String {
    let n = h.count();
    let (Some(mean), Some(max)) = (h.mean(), h.max()) else {
        return format!("count={n}");
    };
    let q = |q: f64| h.quantile(q).map_or_else(|| "-".into(), |v| show(v as f64));
    format!(
        "count={n} mean={} p50={} p99={} p99.9={} max={}",
        show(mean),
        q(0.5),
        q(0.99),
        q(0.999),
        show(max as f64)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use mmstats::{Layout, Unit};

    fn field(kind: Kind, unit_text: &str, value: Value) -> Field {
        let mut f = Field::new("x", kind, value);
        f.unit = Unit::from_text(unit_text);
        f.unit_text = unit_text.into();
        f
    }

    #[test]
    fn timers_scale_and_histograms_keep_their_unit() {
        let mut h = HistogramSnapshot::new(Layout::timer());
        for v in 1..=100 {
            h.record(v);
        }
        assert_eq!(
            value(&field(Kind::Timer, "ns", Value::Histogram(h.clone()))),
            "count=100 mean=50.5ns p50=50ns p99=99ns p99.9=100ns max=100ns"
        );
        assert_eq!(
            value(&field(Kind::Histogram, "rows", Value::Histogram(h))),
            "count=100 mean=50.5 p50=50 p99=99 p99.9=100 max=100 rows"
        );
        let empty = HistogramSnapshot::new(Layout::histogram());
        assert_eq!(
            value(&field(Kind::Histogram, "rows", Value::Histogram(empty))),
            "count=0"
        );
    }

    #[test]
    fn text_is_quoted_and_escaped() {
        let f = field(Kind::Text, "", Value::Text("two\nlines \"q\"".into()));
        assert_eq!(value(&f), r#""two\nlines \"q\"""#);
        let f = field(Kind::Text, "", Value::Unavailable("bad\nthing".into()));
        assert_eq!(value(&f), r"<unavailable: bad\nthing>");
    }

    #[test]
    fn static_labels_follow_the_label() {
        let mut f = field(Kind::Counter, "", Value::Counter(1));
        f.label = "req\ttotal".into();
        f.static_labels = vec![("method".into(), "GET".into())];
        assert_eq!(display_label(&f), r#"req\ttotal{method="GET"}"#);
    }
}
