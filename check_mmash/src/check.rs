//! One check: what to measure ([`Spec`]), the measured value ([`Measure`])
//! and the plugin output for it ([`report`]).
//!
//! The same [`Spec`] is the query string of `mmash`'s `/check/LABEL` and
//! the command line of `check_mmash`, so both parse, measure and report
//! alike:
//!
//! | query | value |
//! | --- | --- |
//! | (none) | counters: the total over every file, live or dead; gauges: the sum over live writers |
//! | `aggr=A` | combined by aggregator `A` instead of summed (`count`: live writers that have the label); not with a rate or a timer statistic |
//! | `rate=D` | a counter's increase per second over the last `D` |
//! | `quantile=Q`, `stat=mean\|count\|max\|min` | of a timer or histogram, over `window=D` (default: everything recorded) |
//! | `warn=R`, `crit=R` | thresholds in the [`range`](crate::range) syntax |
//! | `user=U`, `command=C`, `model=M` | only the files of that owner, command or model ([`Scope`]) |
//!
//! Timers are reported in seconds (`s`), fields with a time unit are
//! converted to seconds, byte fields are `B`, counter totals `c`.

use std::fmt;
use std::time::Duration;

use mmstats::{HistogramSnapshot, Kind, Unit};

pub use crate::scope::Scope;
use mmstats_read::aggregate::{Aggregator, Sample, Selector, SeriesValue, View};

use crate::plugin::{number, status_line, Perfdata, State, Uom};
use crate::range::Range;

/// Longest window accepted: a week.
pub const MAX_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);

/// A rate or window is never judged over less than `1 / MIN_COVER_DIVISOR`
/// of the window asked (a quarter): two checks a few milliseconds apart
/// would otherwise measure a rate over those milliseconds, and a counter
/// that failed at 46/s could read `0/s`, OK. See [`min_cover`].
pub const MIN_COVER_DIVISOR: u32 = 4;

/// The shortest span a value over `asked` is judged over: a quarter of it.
pub fn min_cover(asked: Duration) -> Duration {
    asked / MIN_COVER_DIVISOR
}

/// The UNKNOWN (nothing to judge yet) for a value over `asked` that only
/// `covered` of readings can measure: `files_age` says whether `covered`
/// is the age of the oldest file (no earlier reading) or the time between
/// two readings.
pub fn too_short(label: &str, asked: Duration, covered: Duration, files_age: bool) -> Unmeasurable {
    let min = min_cover(asked);
    let seen = if files_age {
        format!(
            "the oldest file is {} old and no earlier reading covers a quarter of the {} asked",
            say_duration(covered),
            say_duration(asked)
        )
    } else {
        format!(
            "the readings are {} apart, less than a quarter of the {} asked",
            say_duration(covered),
            say_duration(asked)
        )
    };
    fail(
        Why::NoValue,
        format!(
            "{label}: {seen}; nothing is judged over less than {}, ask again in {}",
            say_duration(min),
            say_duration(min.saturating_sub(covered).max(Duration::from_millis(1)))
        ),
    )
}

/// A statistic of a timer or histogram.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Stat {
    /// The `q` quantile, `0 <= q <= 1`: the midpoint of its bucket.
    Quantile(f64),
    /// The mean.
    Mean,
    /// How many values were recorded.
    Count,
    /// The upper edge of the largest value's bucket.
    Max,
    /// The lower edge of the smallest value's bucket.
    Min,
}

impl Stat {
    /// The name in perfdata labels and the status text: `p99`, `mean`...
    pub fn name(self) -> String {
        match self {
            Stat::Quantile(q) => format!("p{}", number(q * 100.0)),
            Stat::Mean => "mean".into(),
            Stat::Count => "count".into(),
            Stat::Max => "max".into(),
            Stat::Min => "min".into(),
        }
    }
}

/// What one check measures, and its thresholds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Spec {
    /// The exact label.
    pub label: String,
    /// How files are combined; `None`: summed.
    pub aggr: Option<Aggregator>,
    /// Per-second rate of a counter over this window.
    pub rate: Option<Duration>,
    /// A statistic of a timer or histogram.
    pub stat: Option<Stat>,
    /// The window of `stat`; `None`: everything recorded.
    pub window: Option<Duration>,
    /// Warning threshold.
    pub warn: Option<Range>,
    /// Critical threshold.
    pub crit: Option<Range>,
    /// Only the files of this owner, command and model.
    pub scope: Scope,
}

/// The query parameters `/check/LABEL` takes.
pub const PARAMS: [&str; 10] = [
    "aggr", "rate", "quantile", "stat", "window", "warn", "crit", "user", "command", "model",
];

/// A bad parameter: names it, its value and what is valid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecError(pub String);

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SpecError {}

/// Parses a window: a number with `ms`, `s`, `m`, `h` or `d`, or bare
/// seconds: `250ms`, `10s`, `1.5m`, `60`. More than 0, at most
/// [`MAX_WINDOW`].
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let scale = match unit {
        "ms" => 1e-3,
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        _ => {
            return Err(format!(
                "window {text:?}: unknown unit {unit:?} (expected ms, s, m, h or d, e.g. 60s, 5m)"
            ))
        }
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("window {text:?} is not a number with a unit (e.g. 60s, 5m)"))?;
    let secs = n * scale;
    if secs.is_nan() || secs <= 0.0 {
        return Err(format!("window {text:?} must be more than 0"));
    }
    if secs > MAX_WINDOW.as_secs_f64() {
        return Err(format!("window {text:?} is longer than the limit of 7d"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A duration as the status text says it: `60s`, `1.5s`, `5m`.
pub fn say_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 3600.0 && s % 3600.0 == 0.0 {
        format!("{}h", number(s / 3600.0))
    } else if s >= 120.0 && s % 60.0 == 0.0 {
        format!("{}m", number(s / 60.0))
    } else if s < 1.0 {
        format!("{}ms", number((s * 1000.0).round()))
    } else if s >= 10.0 {
        format!("{}s", number(s.round()))
    } else {
        format!("{}s", number((s * 100.0).round() / 100.0))
    }
}

fn parse_quantile(v: &str) -> Result<f64, SpecError> {
    let q: f64 = v.trim().parse().map_err(|_| {
        SpecError(format!(
            "quantile {v:?} is not a number (expected 0 to 1, e.g. 0.99)"
        ))
    })?;
    if !(0.0..=1.0).contains(&q) {
        return Err(SpecError(format!(
            "quantile {v:?} is not between 0 and 1 (e.g. 0.99 for p99)"
        )));
    }
    Ok(q)
}

impl Spec {
    /// A spec from the query parameters of `/check/LABEL` (each at most
    /// once; unknown ones refused), checked for consistency.
    pub fn from_params<'a>(
        label: &str,
        params: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Spec, SpecError> {
        let mut spec = Spec {
            label: label.to_owned(),
            ..Spec::default()
        };
        let mut seen: Vec<&str> = Vec::new();
        for (k, v) in params {
            if seen.contains(&k) {
                return Err(SpecError(format!("parameter {k:?} given twice")));
            }
            seen.push(k);
            let range = |v: &str| {
                v.parse::<Range>()
                    .map(Some)
                    .map_err(|e| SpecError(format!("{k}: {e}")))
            };
            let window = |v: &str| {
                parse_duration(v)
                    .map(Some)
                    .map_err(|e| SpecError(format!("{k}: {e}")))
            };
            match k {
                "aggr" => spec.aggr = Some(v.parse().map_err(|e| SpecError(format!("aggr: {e}")))?),
                "rate" => spec.rate = window(v)?,
                "window" => spec.window = window(v)?,
                "quantile" => spec.stat_once(Stat::Quantile(parse_quantile(v)?))?,
                "stat" => {
                    let s = match v {
                        "mean" => Stat::Mean,
                        "count" => Stat::Count,
                        "max" => Stat::Max,
                        "min" => Stat::Min,
                        _ => {
                            return Err(SpecError(format!(
                            "unknown stat {v:?}: expected mean, count, max or min (or quantile=Q)"
                        )))
                        }
                    };
                    spec.stat_once(s)?
                }
                "warn" => spec.warn = range(v)?,
                "crit" => spec.crit = range(v)?,
                "user" | "command" | "model" => spec.scope.set(k, v).map_err(SpecError)?,
                _ => {
                    return Err(SpecError(format!(
                        "unknown parameter {k:?}: expected {}",
                        PARAMS.join(", ")
                    )))
                }
            }
        }
        spec.validate()?;
        Ok(spec)
    }

    fn stat_once(&mut self, s: Stat) -> Result<(), SpecError> {
        if self.stat.is_some() {
            return Err(SpecError(
                "give one of quantile= and stat=, not both".into(),
            ));
        }
        self.stat = Some(s);
        Ok(())
    }

    /// Checks that the parts fit together.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.label.is_empty() {
            return Err(SpecError("no label given".into()));
        }
        if self.rate.is_some() && self.stat.is_some() {
            return Err(SpecError(
                "rate= is for counters, quantile=/stat= for timers and histograms: not both".into(),
            ));
        }
        if self.window.is_some() && self.stat.is_none() {
            return Err(SpecError(
                "window= goes with quantile= or stat= (for a counter's rate, use rate=DURATION)"
                    .into(),
            ));
        }
        match self.aggr {
            None | Some(Aggregator::Sum) => {}
            Some(Aggregator::Count) if self.rate.is_some() || self.stat.is_some() => {
                return Err(SpecError(
                    "aggr=count counts live writers: it takes no rate=, quantile= or stat=".into(),
                ))
            }
            Some(a) if self.rate.is_some() => {
                return Err(SpecError(format!(
                    "rate= sums the increases of every file: aggr={a} does not apply"
                )))
            }
            Some(a) if self.stat.is_some() => {
                return Err(SpecError(format!(
                    "quantile= and stat= are of the files' merged distribution: \
                     aggr={a} does not apply"
                )))
            }
            Some(_) => {}
        }
        Ok(())
    }

    /// The longest history this spec needs.
    pub fn history(&self) -> Option<Duration> {
        self.rate.or(self.window)
    }

    /// The query parameters, in the order [`PARAMS`] lists them.
    pub fn params(&self) -> Vec<(&'static str, String)> {
        let secs = |d: Duration| format!("{}s", number(d.as_secs_f64()));
        let mut out = Vec::new();
        if let Some(a) = self.aggr {
            out.push(("aggr", a.name().to_owned()));
        }
        if let Some(r) = self.rate {
            out.push(("rate", secs(r)));
        }
        match self.stat {
            Some(Stat::Quantile(q)) => out.push(("quantile", format!("{q}"))),
            Some(s) => out.push(("stat", s.name())),
            None => {}
        }
        if let Some(w) = self.window {
            out.push(("window", secs(w)));
        }
        if let Some(w) = &self.warn {
            out.push(("warn", w.to_string()));
        }
        if let Some(c) = &self.crit {
            out.push(("crit", c.to_string()));
        }
        out.extend(self.scope.params());
        out
    }
}

/// Why a value could not be measured: the check is UNKNOWN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unmeasurable {
    /// What kind of reason.
    pub why: Why,
    /// The reason, naming the label.
    pub message: String,
}

/// The kinds of [`Unmeasurable`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    /// No stats file has the label.
    NoLabel,
    /// The label's kind does not fit the check (a rate of a gauge, a
    /// quantile of a counter, text).
    Mismatch,
    /// Nothing to judge yet: no value recorded in the window, no earlier
    /// reading for a rate, only dead writers.
    NoValue,
}

impl fmt::Display for Unmeasurable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Unmeasurable {}

fn fail(why: Why, message: String) -> Unmeasurable {
    Unmeasurable { why, message }
}

/// A measured value, ready to be judged against the thresholds.
#[derive(Clone, Debug, PartialEq)]
pub struct Measure {
    /// The label.
    pub label: String,
    /// What the value is: `total`, `rate`, `p99`, `max`, `count`...
    pub what: String,
    /// The value (seconds for times).
    pub value: f64,
    /// Its perfdata unit.
    pub uom: Uom,
    /// Smallest possible value, if known (0 for counts, rates, times).
    pub min: Option<f64>,
    /// Said after the value: the window it covers, and whether that is
    /// shorter than asked.
    pub note: String,
}

impl Measure {
    /// The perfdata label: `LABEL` for a total or sum, else `LABEL_WHAT`.
    pub fn perf_label(&self) -> String {
        if self.what == "total" || self.what == "sum" {
            self.label.clone()
        } else {
            format!("{}_{}", self.label, self.what.replace(' ', "_"))
        }
    }
}

/// What the text says of the window: `over the last 60s`, or, when less
/// was seen, `over 12s, all that was seen of the 60s asked`.
pub fn window_note(asked: Duration, covered: Duration) -> String {
    // Samples are taken on a schedule, so a baseline sits a little before
    // the window's start; up to 5% short still counts as the whole window.
    if covered.as_secs_f64() >= asked.as_secs_f64() * 0.95 {
        format!("over the last {}", say_duration(covered))
    } else {
        format!(
            "over {}, all that was seen of the {} asked",
            say_duration(covered),
            say_duration(asked)
        )
    }
}

/// The plugin output for a measure: the state and the whole line.
pub fn report(m: &Measure, warn: Option<&Range>, crit: Option<&Range>) -> (State, String) {
    if !m.value.is_finite() {
        // A gauge can hold NaN or infinity: nothing to judge or graph.
        let text = format!(
            "{} {} is {}, not a number to check",
            m.label, m.what, m.value
        );
        return (State::Unknown, unknown(&text));
    }
    let state = State::of(m.value, warn, crit);
    let unit = match m.uom {
        Uom::Seconds => " s",
        Uom::Bytes => " B",
        _ if m.what == "rate" => "/s",
        _ => "",
    };
    let mut text = format!("{} {} {}{unit}", m.label, m.what, number(m.value));
    if !m.note.is_empty() {
        text.push(' ');
        text.push_str(&m.note);
    }
    match state {
        State::Critical => text.push_str(&format!(
            " (crit {})",
            crit.map(|c| c.to_string()).unwrap_or_default()
        )),
        State::Warning => text.push_str(&format!(
            " (warn {})",
            warn.map(|w| w.to_string()).unwrap_or_default()
        )),
        _ => {}
    }
    let perf = Perfdata {
        label: m.perf_label(),
        value: m.value,
        uom: m.uom,
        warn: warn.copied(),
        crit: crit.copied(),
        min: m.min,
        max: None,
    };
    (state, status_line(state, &text, &[perf]))
}

/// The UNKNOWN line for a check that could not be made.
pub fn unknown(reason: &str) -> String {
    status_line(State::Unknown, reason, &[])
}

/// The kind and unit of `label` in a sample: from the first fresh file
/// that has it.
pub fn kind_of(sample: &Sample, label: &str) -> Option<(Kind, String)> {
    sample
        .files
        .iter()
        .filter(|f| f.fresh)
        .flat_map(|f| f.snapshot.fields.iter())
        .find(|x| x.label == label)
        .map(|x| (x.kind, x.unit_text.clone()))
}

/// How a value in `unit` is reported: a factor to seconds, or bytes.
fn scale(kind: Kind, unit: &str) -> (f64, Uom) {
    if kind == Kind::Timer {
        return (1e-9, Uom::Seconds);
    }
    match Unit::from_text(unit) {
        Unit::Nanoseconds => (1e-9, Uom::Seconds),
        Unit::Microseconds => (1e-6, Uom::Seconds),
        Unit::Milliseconds => (1e-3, Uom::Seconds),
        Unit::Seconds => (1.0, Uom::Seconds),
        Unit::Bytes => (1.0, Uom::Bytes),
        _ => (1.0, Uom::None),
    }
}

/// A statistic of a histogram of `kind` and `unit`; `Err` when it recorded
/// nothing (no quantile, mean or max of nothing).
pub fn measure_histogram(
    spec: &Spec,
    kind: Kind,
    unit: &str,
    h: &HistogramSnapshot,
    note: String,
) -> Result<Measure, Unmeasurable> {
    let Some(stat) = spec.stat else {
        return Err(fail(
            Why::Mismatch,
            format!(
                "{} is a {kind}: give quantile=Q or stat=mean|count|max|min",
                spec.label
            ),
        ));
    };
    let (factor, uom) = scale(kind, unit);
    let raw = match stat {
        Stat::Count => Some(h.count() as f64),
        Stat::Quantile(q) => h.quantile(q).map(|v| v as f64),
        Stat::Mean => h.mean(),
        Stat::Max => h.max().map(|v| v as f64),
        Stat::Min => h.min().map(|v| v as f64),
    };
    let Some(raw) = raw else {
        return Err(fail(
            Why::NoValue,
            format!(
                "{}: no values recorded {}, so no {}",
                spec.label,
                if note.is_empty() { "yet" } else { &note },
                stat.name()
            ),
        ));
    };
    let (value, uom) = if stat == Stat::Count {
        (raw, Uom::None)
    } else {
        (raw * factor, uom)
    };
    Ok(Measure {
        label: spec.label.clone(),
        what: stat.name(),
        value,
        uom,
        min: Some(0.0),
        note,
    })
}

/// A counter's rate from its increase over `covered`, for a window of
/// `asked`.
pub fn measure_rate(
    spec: &Spec,
    increase: i128,
    covered: Duration,
    asked: Duration,
) -> Result<Measure, Unmeasurable> {
    if covered.is_zero() {
        return Err(fail(
            Why::NoValue,
            format!(
                "{}: no earlier reading yet to measure a rate against; ask again in a moment",
                spec.label
            ),
        ));
    }
    Ok(Measure {
        label: spec.label.clone(),
        what: "rate".into(),
        // Increases are never negative; clamp anyway, a rate below 0 is
        // never right.
        value: (increase.max(0) as f64) / covered.as_secs_f64(),
        uom: Uom::None,
        min: Some(0.0),
        note: window_note(asked, covered),
    })
}

/// Keeps the files of live writers only.
pub fn live_only(sample: &Sample) -> Sample {
    crate::scope::filtered(sample, |f| f.snapshot.info.writing())
}

/// Measures `spec` from samples: over `prev` to `next` when `prev` is
/// given (rates and windows), else over each file's whole life (a rate is
/// then over the age of the oldest file). A rate or window whose span is
/// less than [`min_cover`] of the window asked is [`too_short`]: UNKNOWN,
/// never a value from a few milliseconds.
///
/// Counters, histograms and timers count every file, live or dead (what a
/// writer recorded stays recorded); gauges and `aggr=count` only live
/// writers.
pub fn measure(spec: &Spec, prev: Option<&Sample>, next: &Sample) -> Result<Measure, Unmeasurable> {
    if !spec.scope.is_empty() {
        let (prev, next) = (prev.map(|p| spec.scope.filter(p)), spec.scope.filter(next));
        let unscoped = Spec {
            scope: Scope::default(),
            ..spec.clone()
        };
        return measure(&unscoped, prev.as_ref(), &next).map(|mut m| {
            m.note.push_str(&spec.scope.describe());
            m
        });
    }
    let label = spec.label.as_str();
    let live = live_only(next);
    if spec.aggr == Some(Aggregator::Count) {
        let n = live
            .files
            .iter()
            .filter(|f| f.fresh && f.snapshot.field(label).is_some())
            .count();
        return Ok(Measure {
            label: label.to_owned(),
            what: "count".into(),
            value: n as f64,
            uom: Uom::None,
            min: Some(0.0),
            note: "(live writers with the label)".into(),
        });
    }
    let Some((kind, unit)) = kind_of(next, label) else {
        return Err(no_label(label));
    };
    // A label with glob characters would select by pattern: take all and
    // pick the label out exactly.
    let selector = match Selector::new(&[label]) {
        Ok(s) if !label.contains(['*', '?', '[']) => s,
        _ => Selector::all(),
    };
    let view = View {
        selector,
        aggregator: spec.aggr,
        ..View::default()
    };
    let gauge = matches!(kind, Kind::Gauge | Kind::GaugeF64);
    let next_used = if gauge { &live } else { next };
    let prev_used = if spec.rate.is_some() || spec.window.is_some() {
        prev
    } else {
        None
    };
    let delta = view.delta(prev_used, next_used);
    let covered = delta.interval;
    let asked = spec.history();
    let note = match (asked, prev_used) {
        (Some(a), Some(_)) => window_note(a, covered),
        (Some(a), None) => format!(
            "over {}, the age of the oldest file (no earlier reading covers a quarter of the {} asked)",
            say_duration(covered),
            say_duration(a)
        ),
        (None, _) => String::new(),
    };
    check_kind(spec, kind)?;
    if let Some(a) = asked {
        if covered < min_cover(a) {
            return Err(too_short(label, a, covered, prev_used.is_none()));
        }
    }
    let Some(series) = delta.get(label, None) else {
        if gauge {
            return Err(fail(
                Why::NoValue,
                format!("{label}: no live writer has it"),
            ));
        }
        return Err(no_label(label));
    };
    let what = spec.aggr.map_or("sum", Aggregator::name);
    match &series.value {
        SeriesValue::Int(n) if spec.rate.is_some() => {
            let inc = *n;
            let mut m = measure_rate(spec, inc, covered, asked.unwrap_or(covered))?;
            m.note = note;
            Ok(m)
        }
        SeriesValue::Int(_) | SeriesValue::Float(_) => {
            let raw = match series.value {
                SeriesValue::Int(n) => n as f64,
                SeriesValue::Float(x) => x,
                _ => unreachable!("matched above"),
            };
            let counter = kind == Kind::Counter;
            // Counters count events (`c`); gauges keep their unit.
            let (factor, uom) = if counter {
                (1.0, Uom::Counter)
            } else {
                scale(kind, &unit)
            };
            Ok(Measure {
                label: label.to_owned(),
                what: if counter && spec.aggr.is_none() {
                    "total".into()
                } else {
                    what.into()
                },
                value: raw * factor,
                uom,
                min: counter.then_some(0.0),
                note,
            })
        }
        SeriesValue::Histogram(h) => measure_histogram(spec, kind, &unit, h, note),
        SeriesValue::Text(_) => Err(fail(
            Why::Mismatch,
            format!("{label} is text: only numbers can be checked"),
        )),
        SeriesValue::Missing => Err(fail(
            Why::NoValue,
            format!(
                "{label}: no value to check (only dead writers, \
                 or only zeros for a nonzero- aggregator)"
            ),
        )),
    }
}

/// The error for a label that no file has.
pub fn no_label(label: &str) -> Unmeasurable {
    fail(
        Why::NoLabel,
        format!("no stats file has the label {label:?}"),
    )
}

/// Whether `kind` fits the spec: a rate needs a counter, a statistic a
/// timer or histogram, anything a number.
pub fn check_kind(spec: &Spec, kind: Kind) -> Result<(), Unmeasurable> {
    let label = &spec.label;
    if spec.rate.is_some() && kind != Kind::Counter {
        return Err(fail(
            Why::Mismatch,
            format!("rate= needs a counter; {label} is a {kind}"),
        ));
    }
    if spec.stat.is_some() && !matches!(kind, Kind::Histogram | Kind::Timer) {
        return Err(fail(
            Why::Mismatch,
            format!("quantile= and stat= need a timer or histogram; {label} is a {kind}"),
        ));
    }
    if matches!(kind, Kind::Text | Kind::Constant) {
        return Err(fail(
            Why::Mismatch,
            format!("{label} is text: only numbers can be checked"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
