//! The JSON output: one array, one object per file, each the library's
//! [`mmstats_read::json::FileJson`], so the contract documented in `--help`
//! (see `JSON_HELP` in `main.rs`) and in README.md is one type.

use std::io::{self, Write};

use mmstats_read::json::FileJson;
use mmstats_read::Snapshot;

/// Writes the object for one file.
pub fn write_file(out: &mut impl Write, snap: &Snapshot) -> io::Result<()> {
    serde_json::to_writer(out, &FileJson::new(snap)).map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use mmstats::{HistogramSnapshot, Layout};
    use mmstats_read::json::HistogramJson;
    use serde_json::json;

    #[test]
    fn empty_histogram_has_nulls_and_no_buckets() {
        let h = HistogramJson::new(&HistogramSnapshot::new(Layout::timer()));
        assert_eq!(
            serde_json::to_value(h).unwrap(),
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
        let j = serde_json::to_value(HistogramJson::new(&h)).unwrap();
        assert_eq!(j["sum"].as_u64(), Some(u64::MAX - 1));
        assert_eq!(j["max"].as_u64(), Some(u64::MAX));
    }
}
