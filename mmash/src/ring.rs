//! The dashboard's history: a bounded ring of the aggregated series, so
//! that a page opened now shows the last minutes at once
//! (`GET /api/v1/history`).
//!
//! A sampler thread (`keep_sampling` in `main.rs`) takes a fresh reading
//! every `--sample-every` or every [`MAX_INTERVAL`] (2 s), whichever is
//! shorter, whether or not a browser is open, and [`Ring::record`]s it;
//! the ring keeps one entry per [`interval`] (that, but at least
//! [`MIN_INTERVAL`] apart). Each label is one series, summed over every group
//! and owner as the dashboard shows it (the `/metrics` series of the label
//! add up to it): a counter's cumulative total, a gauge's value, and for a
//! timer or histogram its cumulative count with the p50 and p99 of just the
//! values recorded since the previous entry.
//!
//! **Bounds.** Entries are kept for [`RETENTION`] (15 minutes): at most
//! `RETENTION / interval + 1` of them, 901 at the 1 s floor. At most
//! [`MAX_SERIES`] labels are kept, the first ones seen (labels in byte
//! order within one reading); the others are counted in `series_dropped`
//! and a kept label that has had no value for the whole retention frees its
//! place. A point is 24 bytes (three `f64`), so the points take at most
//! `MAX_SERIES` x 901 x 24 bytes, about 22 MB; each timer or histogram
//! label also keeps its previous cumulative distribution (its non-empty
//! buckets, shared with the collector's until the next reading). However
//! many labels the files hold, the ring does not grow past that.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant, UNIX_EPOCH};

use mmstats::HistogramSnapshot;
use serde_json::{json, Value as Json};

use crate::collect::Current;
use crate::prom::{Family, FamilyKind, SeriesValue};

/// How long entries are kept.
pub const RETENTION: Duration = Duration::from_secs(15 * 60);
/// Longest time between entries.
pub const MAX_INTERVAL: Duration = Duration::from_secs(2);
/// Shortest time between entries.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Most labels kept.
pub const MAX_SERIES: usize = 1000;

/// The time between entries for `--sample-every`: the shorter of it and
/// [`MAX_INTERVAL`], at least [`MIN_INTERVAL`].
pub fn interval(sample_every: Duration) -> Duration {
    sample_every.clamp(MIN_INTERVAL, MAX_INTERVAL)
}

/// One value of a series at one entry; `NaN` where there is none.
#[derive(Clone, Copy, Debug)]
struct Point {
    /// Counter total, gauge value, or a distribution's cumulative count.
    v: f64,
    /// Timers and histograms: the p50 of the values since the last entry.
    p50: f64,
    /// Timers and histograms: the p99 of the values since the last entry.
    p99: f64,
}

const NONE: Point = Point {
    v: f64::NAN,
    p50: f64::NAN,
    p99: f64::NAN,
};

#[derive(Debug)]
struct Track {
    kind: FamilyKind,
    points: VecDeque<Point>,
    /// Timers and histograms: the distribution at the previous entry.
    prev: Option<HistogramSnapshot>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Wall-clock time of each entry, in ms since the epoch.
    times: VecDeque<u64>,
    series: BTreeMap<String, Track>,
    /// Labels of the last entry that were not kept.
    dropped: usize,
    /// The reading of the last entry.
    last: Option<Instant>,
}

/// The ring; see the module doc for its bounds.
#[derive(Debug)]
pub struct Ring {
    interval: Duration,
    capacity: usize,
    max_series: usize,
    inner: Mutex<Inner>,
}

/// A label's value over every group: a sum, or a merged distribution.
enum Total {
    Num(f64),
    Hist(HistogramSnapshot),
}

fn total(fam: &Family) -> Option<Total> {
    let mut num: Option<f64> = None;
    let mut hist: Option<HistogramSnapshot> = None;
    for s in &fam.series {
        match &s.value {
            SeriesValue::Int(n) => *num.get_or_insert(0.0) += *n as f64,
            SeriesValue::Float(x) => *num.get_or_insert(0.0) += x,
            SeriesValue::Histogram(h) => match &mut hist {
                None => hist = Some(h.clone()),
                Some(t) => {
                    // A layout clash between groups: that group left out.
                    let _ = t.merge(h);
                }
            },
        }
    }
    hist.map(Total::Hist).or(num.map(Total::Num))
}

fn quantile(h: &HistogramSnapshot, q: f64) -> f64 {
    h.quantile(q).map_or(f64::NAN, |v| v as f64)
}

impl Ring {
    /// An empty ring with entries every `interval`, keeping at most
    /// `max_series` labels.
    pub fn new(interval: Duration, max_series: usize) -> Ring {
        let capacity = (RETENTION.as_millis() / interval.as_millis().max(1)) as usize + 1;
        Ring {
            interval,
            capacity,
            max_series,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Adds `cur` as the newest entry (once per reading), dropping entries
    /// past the retention.
    pub fn record(&self, cur: &Current) {
        let t = cur
            .sample
            .time
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        // Poisoning: the ring is only pushed to and trimmed; whatever
        // panicked, its lengths are checked again below.
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        // Once per reading; readings closer together than the interval (a
        // --sample-every under a second) are left out until it has passed.
        if inner
            .last
            .is_some_and(|l| cur.taken < l + self.interval.mul_f64(0.9))
        {
            return;
        }
        inner.last = Some(cur.taken);
        let n = inner.times.len();
        inner.times.push_back(t);
        let mut dropped = 0;
        let mut seen = std::collections::HashSet::new();
        for fam in &cur.families {
            let Some(value) = total(fam) else { continue };
            if !inner.series.contains_key(&fam.label) {
                if inner.series.len() >= self.max_series {
                    dropped += 1;
                    continue;
                }
                let mut points = VecDeque::with_capacity(n + 1);
                points.resize(n, NONE);
                inner.series.insert(
                    fam.label.clone(),
                    Track {
                        kind: fam.kind,
                        points,
                        prev: None,
                    },
                );
            }
            let track = inner.series.get_mut(&fam.label).expect("inserted above");
            let point = match value {
                Total::Num(v) => Point { v, ..NONE },
                Total::Hist(h) => {
                    let window = track.prev.as_ref().and_then(|p| h.since(p).ok());
                    let point = Point {
                        v: h.count() as f64,
                        p50: window.as_ref().map_or(f64::NAN, |w| quantile(w, 0.5)),
                        p99: window.as_ref().map_or(f64::NAN, |w| quantile(w, 0.99)),
                    };
                    track.prev = Some(h);
                    point
                }
            };
            track.kind = fam.kind;
            track.points.push_back(point);
            seen.insert(fam.label.as_str());
        }
        for (label, track) in inner.series.iter_mut() {
            if !seen.contains(label.as_str()) {
                track.points.push_back(NONE);
                track.prev = None;
            }
        }
        inner.dropped = dropped;
        while inner.times.len() > self.capacity {
            inner.times.pop_front();
            for track in inner.series.values_mut() {
                track.points.pop_front();
            }
        }
        // A label with no value for the whole retention frees its place.
        inner
            .series
            .retain(|_, t| t.points.iter().any(|p| !p.v.is_nan()));
    }

    /// The entries of the last `window` newer than `since_ms`, as
    /// `GET /api/v1/history` answers them.
    pub fn json(&self, window: Duration, since_ms: Option<u64>) -> Vec<u8> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let newest = inner.times.back().copied().unwrap_or(0);
        let from = newest.saturating_sub(window.as_millis() as u64);
        let start = inner
            .times
            .iter()
            .position(|&t| t >= from && since_ms.is_none_or(|s| t > s))
            .unwrap_or(inner.times.len());
        let times: Vec<u64> = inner.times.iter().skip(start).copied().collect();
        let num = |x: f64| -> Json {
            if !x.is_finite() {
                Json::Null
            } else if x.fract() == 0.0 && x.abs() < 9.0e15 {
                json!(x as i64)
            } else {
                json!(x)
            }
        };
        let mut series = serde_json::Map::new();
        for (label, track) in &inner.series {
            let pts = track.points.iter().skip(start);
            let s = match track.kind {
                FamilyKind::Counter | FamilyKind::Gauge => json!({
                    "kind": if track.kind == FamilyKind::Counter { "counter" } else { "gauge" },
                    "values": pts.map(|p| num(p.v)).collect::<Vec<_>>(),
                }),
                FamilyKind::Timer | FamilyKind::Histogram => {
                    let pts: Vec<&Point> = pts.collect();
                    json!({
                        "kind": if track.kind == FamilyKind::Timer { "timer" } else { "histogram" },
                        "count": pts.iter().map(|p| num(p.v)).collect::<Vec<_>>(),
                        "p50": pts.iter().map(|p| num(p.p50)).collect::<Vec<_>>(),
                        "p99": pts.iter().map(|p| num(p.p99)).collect::<Vec<_>>(),
                    })
                }
            };
            series.insert(label.clone(), s);
        }
        let body = json!({
            "interval_ms": self.interval.as_millis() as u64,
            "window_s": window.as_secs(),
            "retention_s": RETENTION.as_secs(),
            "max_series": self.max_series,
            "series_dropped": inner.dropped,
            "times_ms": times,
            "series": series,
        });
        serde_json::to_vec(&body).expect("JSON of plain data")
    }

    /// Entries and labels held (tests).
    #[cfg(test)]
    fn sizes(&self) -> (usize, usize) {
        let inner = self.inner.lock().unwrap();
        (inner.times.len(), inner.series.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prom::Series;
    use mmstats_read::aggregate::Sample;
    use std::time::SystemTime;

    fn reading(at_ms: u64, labels: &[(&str, i128)]) -> Current {
        Current {
            sample: Sample {
                time: SystemTime::UNIX_EPOCH + Duration::from_millis(at_ms),
                instant: Instant::now(),
                files: Vec::new(),
                warnings: Vec::new(),
                foreign_skipped: 0,
            },
            families: labels
                .iter()
                .map(|&(l, v)| Family {
                    label: l.to_owned(),
                    kind: FamilyKind::Counter,
                    help: String::new(),
                    series: vec![
                        Series {
                            labels: vec![("user", "a".into())],
                            static_labels: Vec::new(),
                            value: SeriesValue::Int(v),
                        },
                        Series {
                            labels: vec![("user", "b".into())],
                            static_labels: Vec::new(),
                            value: SeriesValue::Int(1),
                        },
                    ],
                })
                .collect(),
            unreadable: 0,
            taken: Instant::now() + Duration::from_millis(at_ms),
        }
    }

    fn parse(ring: &Ring, window: Duration) -> Json {
        serde_json::from_slice(&ring.json(window, None)).unwrap()
    }

    #[test]
    fn entries_stop_at_the_retention() {
        let ring = Ring::new(MAX_INTERVAL, 10);
        for i in 0..1000u64 {
            ring.record(&reading(i * 2000, &[("a", i as i128)]));
        }
        assert_eq!(ring.sizes(), (451, 1));
        let j = parse(&ring, Duration::from_secs(60));
        assert_eq!(j["times_ms"].as_array().unwrap().len(), 31);
        assert_eq!(
            j["series"]["a"]["values"][30],
            999 + 1,
            "summed over groups"
        );
    }

    #[test]
    fn labels_past_the_cap_are_counted_not_kept() {
        let ring = Ring::new(MAX_INTERVAL, 3);
        let names: Vec<String> = (0..100).map(|i| format!("l{i:03}")).collect();
        let labels: Vec<(&str, i128)> = names.iter().map(|n| (n.as_str(), 5)).collect();
        ring.record(&reading(1000, &labels));
        assert_eq!(ring.sizes(), (1, 3));
        let j = parse(&ring, RETENTION);
        assert_eq!(j["series_dropped"], 97);
        let kept: Vec<&String> = j["series"].as_object().unwrap().keys().collect();
        assert_eq!(kept, ["l000", "l001", "l002"]);
    }

    #[test]
    fn a_label_gone_for_the_whole_retention_frees_its_place() {
        let ring = Ring::new(MAX_INTERVAL, 1);
        ring.record(&reading(0, &[("old", 1)]));
        for i in 1..=452u64 {
            ring.record(&reading(i * 2000, &[("new", 1)]));
        }
        let j = parse(&ring, RETENTION);
        assert!(j["series"].get("old").is_none(), "{j}");
        assert!(j["series"].get("new").is_some(), "{j}");
    }
}
