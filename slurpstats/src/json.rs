//! The JSON output: one array, one object per file. The shape is the
//! contract documented in `--help` (see `JSON_HELP` in `main.rs`).

use std::time::UNIX_EPOCH;

use mmstats::{Field, HistogramSnapshot, Snapshot, Value, WriterState};
use serde_json::{json, Map, Value as Json};

/// The object for one file.
pub fn file(snap: &Snapshot) -> Json {
    let info = &snap.info;
    let mut fields: Vec<&Field> = snap.fields.iter().collect();
    fields.sort_by(|a, b| a.label.cmp(&b.label));
    let mut stats = Map::new();
    let mut meta = Map::new();
    for f in fields {
        stats.insert(f.label.clone(), value(f));
        let static_labels: Map<String, Json> = f
            .static_labels
            .iter()
            .map(|(k, v)| (k.clone(), Json::from(v.as_str())))
            .collect();
        meta.insert(
            f.label.clone(),
            json!({
                "kind": f.kind.name(),
                "unit": f.unit_text,
                "help": f.help,
                "static_labels": static_labels,
            }),
        );
    }
    // `created` is UNIX_EPOCH plus a u64 of nanoseconds, so this fits.
    let created_ns = info
        .created
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    json!({
        "file": info.path.to_string_lossy(),
        "pid": info.pid,
        "tid": info.tid,
        "command": info.command,
        "model": info.model,
        "alive": info.alive,
        "state": match info.state {
            WriterState::Active => "active",
            WriterState::Exited => "exited",
            WriterState::Unknown(_) => "unknown",
        },
        "created_unix_ns": created_ns,
        "version": format!("{}.{}", info.version.0, info.version.1),
        "skipped_fields": snap.skipped,
        "stats": stats,
        "fields": meta,
    })
}

/// One field's value: counters exact `u64`, gauges `i64`, non-finite
/// floats and unavailable values `null`, text as strings, histograms and
/// timers as [`histogram`] objects.
fn value(f: &Field) -> Json {
    match &f.value {
        Value::Counter(n) => Json::from(*n),
        Value::Gauge(n) => Json::from(*n),
        // From<f64> gives null for NaN and infinities.
        Value::GaugeF64(x) => Json::from(*x),
        Value::Text(s) | Value::Constant(s) => Json::from(s.as_str()),
        Value::Histogram(h) => histogram(h),
        // Unavailable values, and any kind of value added to the library
        // after this was written.
        _ => Json::Null,
    }
}

/// `{count, sum, mean, min, max, p50, p75, p90, p95, p99, p999, buckets}`
/// in the field's unit; `buckets` holds `[lower, upper, count]` for each
/// non-empty bucket. Empty: count and sum 0, the rest null, buckets `[]`.
fn histogram(h: &HistogramSnapshot) -> Json {
    let q = |q: f64| h.quantile(q).map_or(Json::Null, Json::from);
    let buckets: Vec<Json> = h.buckets().map(|(lo, hi, n)| json!([lo, hi, n])).collect();
    json!({
        "count": h.count(),
        "sum": h.sum(),
        "mean": h.mean().map_or(Json::Null, Json::from),
        "min": h.min().map_or(Json::Null, Json::from),
        "max": h.max().map_or(Json::Null, Json::from),
        "p50": q(0.5),
        "p75": q(0.75),
        "p90": q(0.9),
        "p95": q(0.95),
        "p99": q(0.99),
        "p999": q(0.999),
        "buckets": buckets,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mmstats::Layout;

    #[test]
    fn empty_histogram_has_nulls_and_no_buckets() {
        let h = histogram(&HistogramSnapshot::new(Layout::timer()));
        assert_eq!(
            h,
            json!({
                "count": 0, "sum": 0, "mean": null, "min": null, "max": null,
                "p50": null, "p75": null, "p90": null, "p95": null, "p99": null,
                "p999": null, "buckets": [],
            })
        );
    }

    #[test]
    fn big_sums_stay_exact() {
        let mut h = HistogramSnapshot::new(Layout::histogram());
        h.record(u64::MAX - 1);
        let j = histogram(&h);
        assert_eq!(j["sum"].as_u64(), Some(u64::MAX - 1));
        assert_eq!(j["max"].as_u64(), Some(u64::MAX));
    }
}
