//! `--json`: one object per interval, one line each (JSON Lines):
//!
//! ```text
//! {"time": RFC 3339, "interval_s": f64, "files": {"alive": n, "dead": n},
//!  "series": {label or label{group=value}: value}}
//! ```

use std::time::UNIX_EPOCH;

use mmstats::HistogramSnapshot;
use mmstats_read::aggregate::{Delta, SeriesValue};
use mmstats_read::json::HistogramJson;
use serde::Serialize;
use serde_json::{json, Map, Value as Json};

use crate::human;
use crate::Mode;

/// The object of one interval.
fn interval_line(delta: &Delta, mode: Mode) -> Line {
    let secs = delta.interval.as_secs_f64();
    let series: Map<String, Json> = delta
        .series
        .iter()
        .map(|(key, s)| {
            let v = match &s.value {
                SeriesValue::Histogram(h) => histogram(h),
                SeriesValue::Text(t) => json!(t),
                SeriesValue::Missing => Json::Null,
                SeriesValue::Int(n) if mode.is_rate(s.kind) => rate(*n as f64, secs),
                SeriesValue::Float(x) if mode.is_rate(s.kind) => rate(*x, secs),
                SeriesValue::Int(n) => int(*n),
                // From<f64> gives null for NaN and infinities.
                SeriesValue::Float(x) => Json::from(*x),
            };
            (key.to_string(), v)
        })
        .collect();
    let nanos = delta
        .time
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    Line {
        time: human::rfc3339(nanos),
        interval_s: secs,
        files: Files {
            alive: delta.alive,
            dead: delta.dead,
        },
        series,
    }
}

/// The object of one interval, with its keys in the documented order.
#[derive(Serialize)]
struct Line {
    time: String,
    interval_s: f64,
    files: Files,
    series: Map<String, Json>,
}

#[derive(Serialize)]
struct Files {
    alive: usize,
    dead: usize,
}

/// A per-second rate; `null` over an empty interval.
fn rate(x: f64, secs: f64) -> Json {
    if secs > 0.0 {
        Json::from(x / secs)
    } else {
        Json::Null
    }
}

/// An exact integer when it fits JSON's integers, else a float.
fn int(n: i128) -> Json {
    if let Ok(u) = u64::try_from(n) {
        Json::from(u)
    } else if let Ok(i) = i64::try_from(n) {
        Json::from(i)
    } else {
        Json::from(n as f64)
    }
}

/// A histogram or timer: exactly the object slurpstats prints (the
/// library's [`HistogramJson`]).
pub fn histogram(h: &HistogramSnapshot) -> Json {
    serde_json::to_value(HistogramJson::new(h)).expect("a histogram serialises")
}

/// Writes the line of one interval, keys in the documented order.
pub fn write(out: &mut impl std::io::Write, delta: &Delta, mode: Mode) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, &interval_line(delta, mode)).map_err(std::io::Error::from)?;
    writeln!(out)
}
