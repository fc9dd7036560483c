//! A short ring of past readings, so that `/check/` can answer over a
//! window: a counter's rate over the last minute, a timer's p99 over the
//! last five.
//!
//! Each entry holds the collector's cumulative series at one moment: every
//! counter's total (summed over the `--by` groups; totals never go down,
//! so a rate never goes negative when writers die), and the cumulative
//! distribution of the timers and histograms that checks asked for. A
//! value over a window is the newest entry minus the newest entry at least
//! that old.
//!
//! **Bounds.** Entries are kept for the longest window any check asked for
//! (at most [`MAX_RETENTION`]), taken about every 1/20 of the shortest
//! window (between [`MIN_SPACING`] and [`MAX_SPACING`]), and never more
//! than [`MAX_ENTRIES`]: when the ring is full, the entry whose removal
//! leaves the smallest gap for its age goes, so recent entries stay dense
//! and old ones thin out geometrically. A window of any length then starts
//! within a few percent of its age of an entry (for 100 entries over a day,
//! within about 15%; a 10 s window next to a 1 h one, within a second).
//! At most [`MAX_WATCHED`] timer and histogram labels
//! are kept (the least recently asked one is dropped), each as its
//! non-empty buckets only. So memory is at most `MAX_ENTRIES` x (one
//! integer per counter label + `MAX_WATCHED` x non-empty buckets): for 1000
//! counter labels and 16 timers with 200 non-empty buckets each, about 10
//! MB; at worst (16 histograms with all 3776 buckets filled) about 100 MB.
//!
//! A sampler task ([`crate::check`]) reads the files every [`spacing`] once
//! a check asked for a window; until then nothing is kept and nothing runs.
//! Rates are over the actual time between the two readings, so where the
//! window starts changes what span a value covers (the text says it), not
//! its accuracy.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mmstats::HistogramSnapshot;

use crate::collect::Current;
use crate::prom::{FamilyKind, SeriesValue};

/// Most entries kept.
pub const MAX_ENTRIES: usize = 100;
/// Longest span kept, whatever the windows asked.
pub const MAX_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// Most timer and histogram labels kept.
pub const MAX_WATCHED: usize = 16;
/// Shortest time between entries.
pub const MIN_SPACING: Duration = Duration::from_secs(1);
/// Longest time between readings of the sampler.
pub const MAX_SPACING: Duration = Duration::from_secs(60);

/// A histogram kept by its non-empty buckets.
#[derive(Clone, Debug)]
struct Sparse {
    layout: mmstats::Layout,
    sum: u64,
    buckets: Vec<(u32, u64)>,
}

impl Sparse {
    fn new(h: &HistogramSnapshot) -> Sparse {
        Sparse {
            layout: h.layout(),
            sum: h.sum(),
            buckets: h
                .counts()
                .iter()
                .enumerate()
                .filter(|(_, &c)| c > 0)
                .map(|(i, &c)| (i as u32, c))
                .collect(),
        }
    }

    fn dense(&self) -> Option<HistogramSnapshot> {
        let mut counts = vec![0u64; self.layout.buckets()];
        for &(i, c) in &self.buckets {
            *counts.get_mut(i as usize)? = c;
        }
        HistogramSnapshot::from_parts(self.layout, self.sum, counts)
    }
}

#[derive(Debug)]
struct Entry {
    at: Instant,
    counters: HashMap<String, i128>,
    hists: HashMap<String, Sparse>,
}

#[derive(Debug, Default)]
struct Ring {
    entries: VecDeque<Entry>,
    /// The longest window asked for.
    retention: Duration,
    /// The shortest window asked for.
    shortest: Option<Duration>,
    /// Timer and histogram labels asked for, with when.
    watched: Vec<(String, Instant)>,
}

/// The ring; shared by every request.
#[derive(Debug, Default)]
pub struct History {
    ring: Mutex<Ring>,
}

/// The time between readings for the shortest window asked: about 1/20
/// of it, between [`MIN_SPACING`] and [`MAX_SPACING`].
pub fn spacing(shortest: Duration) -> Duration {
    (shortest / 20).clamp(MIN_SPACING, MAX_SPACING)
}

/// A value at the start of a window, and how long ago that was.
#[derive(Debug)]
pub struct Baseline<T> {
    /// The value then.
    pub value: T,
    /// The time from then to the reading asked about.
    pub covered: Duration,
}

impl History {
    fn lock(&self) -> std::sync::MutexGuard<'_, Ring> {
        // Poisoning: the ring is consistent after any panic (entries are
        // pushed and popped whole).
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes that a check asks for `window` (and, for a timer or histogram,
    /// that `hist_label` must be kept). Returns the spacing the sampler
    /// should now keep, or `None` if no window was ever asked.
    pub fn want(&self, window: Option<Duration>, hist_label: Option<&str>) -> Option<Duration> {
        let mut ring = self.lock();
        if let Some(w) = window {
            let w = w.min(MAX_RETENTION);
            ring.retention = ring.retention.max(w);
            ring.shortest = Some(ring.shortest.map_or(w, |s| s.min(w)));
        }
        if let Some(l) = hist_label {
            let now = Instant::now();
            match ring.watched.iter_mut().find(|(x, _)| x == l) {
                Some(e) => e.1 = now,
                None => {
                    if ring.watched.len() >= MAX_WATCHED {
                        // Drop the least recently asked.
                        if let Some(i) = ring
                            .watched
                            .iter()
                            .enumerate()
                            .min_by_key(|(_, (_, t))| *t)
                            .map(|(i, _)| i)
                        {
                            let (gone, _) = ring.watched.swap_remove(i);
                            for e in &mut ring.entries {
                                e.hists.remove(&gone);
                            }
                        }
                    }
                    ring.watched.push((l.to_owned(), now));
                }
            }
        }
        ring.shortest.map(spacing)
    }

    /// Keeps `cur` if windows are wanted and the newest entry is at least a
    /// spacing older, or lacks a timer or histogram label a check just
    /// asked for (so that its window starts now, not a spacing later).
    pub fn record(&self, cur: &Current) {
        let mut ring = self.lock();
        let Some(shortest) = ring.shortest else {
            return;
        };
        let gap = spacing(shortest);
        let at = cur.sample.instant;
        if let Some(last) = ring.entries.back() {
            if at <= last.at {
                return;
            }
            let new_label = ring
                .watched
                .iter()
                .any(|(l, _)| !last.hists.contains_key(l));
            if !new_label && at.duration_since(last.at) < gap {
                return;
            }
        }
        let mut counters: HashMap<String, i128> = HashMap::new();
        let mut hists: HashMap<String, HistogramSnapshot> = HashMap::new();
        for fam in &cur.families {
            match fam.kind {
                FamilyKind::Counter => {
                    let total = counters.entry(fam.label.clone()).or_insert(0);
                    for s in &fam.series {
                        if let SeriesValue::Int(n) = s.value {
                            *total = total.saturating_add(n);
                        }
                    }
                }
                FamilyKind::Histogram | FamilyKind::Timer => {
                    if !ring.watched.iter().any(|(l, _)| *l == fam.label) {
                        continue;
                    }
                    for s in &fam.series {
                        if let SeriesValue::Histogram(h) = &s.value {
                            match hists.get_mut(&fam.label) {
                                None => {
                                    hists.insert(fam.label.clone(), h.clone());
                                }
                                Some(t) => {
                                    // Groups of one label share a layout;
                                    // one that does not is left out.
                                    let _ = t.merge(h);
                                }
                            }
                        }
                    }
                }
                FamilyKind::Gauge => {}
            }
        }
        let hists = hists
            .iter()
            .map(|(k, h)| (k.clone(), Sparse::new(h)))
            .collect();
        ring.entries.push_back(Entry {
            at,
            counters,
            hists,
        });
        // Drop what no window needs: keep one entry at or before the
        // longest window's start.
        let keep_from = at.checked_sub(ring.retention);
        while ring.entries.len() > 1 && keep_from.is_some_and(|k| ring.entries[1].at <= k) {
            ring.entries.pop_front();
        }
        while ring.entries.len() > MAX_ENTRIES {
            thin(&mut ring.entries, at);
        }
    }

    /// A counter's total at the newest entry at least `window` before
    /// `now`, or the oldest entry that has any reading if none is that old.
    /// `None` if no entry before `now` exists.
    pub fn counter_baseline(
        &self,
        label: &str,
        window: Duration,
        now: Instant,
    ) -> Option<Baseline<i128>> {
        let ring = self.lock();
        let e = pick(&ring.entries, window, now, |_| true)?;
        Some(Baseline {
            // A label an entry lacks had no files yet then: a total of 0.
            value: e.counters.get(label).copied().unwrap_or(0),
            covered: now.duration_since(e.at),
        })
    }

    /// A histogram's cumulative distribution, as for
    /// [`History::counter_baseline`], from entries that kept it.
    pub fn histogram_baseline(
        &self,
        label: &str,
        window: Duration,
        now: Instant,
    ) -> Option<Baseline<HistogramSnapshot>> {
        let ring = self.lock();
        let e = pick(&ring.entries, window, now, |e| e.hists.contains_key(label))?;
        Some(Baseline {
            value: e.hists.get(label)?.dense()?,
            covered: now.duration_since(e.at),
        })
    }

    /// How many entries are kept (for tests and the bound).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().entries.len()
    }
}

/// Removes the entry (never the oldest or the newest) whose removal leaves
/// the smallest gap relative to its age: a window starting in the gap is
/// off by at most the gap, relative to the age of the gap's newer end.
fn thin(entries: &mut VecDeque<Entry>, now: Instant) {
    let n = entries.len();
    if n < 3 {
        entries.pop_front();
        return;
    }
    let mut best = (f64::INFINITY, 1);
    for i in 1..n - 1 {
        let gap = entries[i + 1]
            .at
            .duration_since(entries[i - 1].at)
            .as_secs_f64();
        let age = now
            .duration_since(entries[i + 1].at)
            .max(MIN_SPACING)
            .as_secs_f64();
        if gap / age < best.0 {
            best = (gap / age, i);
        }
    }
    entries.remove(best.1);
}

fn pick(
    entries: &VecDeque<Entry>,
    window: Duration,
    now: Instant,
    has: impl Fn(&Entry) -> bool,
) -> Option<&Entry> {
    let start = now.checked_sub(window);
    let mut candidates = entries.iter().filter(|e| e.at < now && has(e));
    let oldest = candidates.clone().next()?;
    let newest_old_enough = match start {
        Some(s) => candidates.rfind(|e| e.at <= s),
        None => None,
    };
    Some(newest_old_enough.unwrap_or(oldest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prom::{Family, Series};
    use mmstats::aggregate::Sample;
    use std::time::SystemTime;

    fn current(at: Instant, total: i128) -> Current {
        Current {
            sample: Sample {
                time: SystemTime::now(),
                instant: at,
                files: Vec::new(),
                warnings: Vec::new(),
                foreign_skipped: 0,
            },
            families: vec![Family {
                label: "req".into(),
                kind: FamilyKind::Counter,
                help: String::new(),
                series: vec![
                    Series {
                        labels: Vec::new(),
                        value: SeriesValue::Int(total),
                    },
                    Series {
                        labels: Vec::new(),
                        value: SeriesValue::Int(1),
                    },
                ],
            }],
            unreadable: 0,
            taken: at,
        }
    }

    #[test]
    fn baselines_come_from_the_window_start_and_memory_stays_bounded() {
        let h = History::default();
        let t0 = Instant::now();
        // Nothing is kept before a window is asked.
        h.record(&current(t0, 0));
        assert_eq!(h.len(), 0);
        assert_eq!(
            h.want(Some(Duration::from_secs(10)), None),
            Some(MIN_SPACING)
        );
        for s in 0..=1000u64 {
            // One reading every 100 ms: only one a second is kept.
            let at = t0 + Duration::from_millis(100 * s);
            h.record(&current(at, 10 * s as i128));
        }
        assert!(h.len() <= 12, "{}", h.len());
        let now = t0 + Duration::from_secs(100);
        let b = h
            .counter_baseline("req", Duration::from_secs(10), now)
            .unwrap();
        assert_eq!(b.covered, Duration::from_secs(10));
        // Totals are summed over groups: 10 per 100 ms, plus 1.
        assert_eq!(b.value, 10 * 900 + 1);
        // A window longer than the ring: the oldest entry.
        let b = h
            .counter_baseline("req", Duration::from_secs(60), now)
            .unwrap();
        assert!(b.covered < Duration::from_secs(12));
        // An unknown label had a total of 0.
        assert_eq!(
            h.counter_baseline("nope", Duration::from_secs(1), now)
                .unwrap()
                .value,
            0
        );
        // Nothing before the first entry.
        assert!(h
            .counter_baseline("req", Duration::from_secs(1), t0)
            .is_none());
        // A week-long ask is capped, and the entry count is bounded.
        h.want(Some(Duration::from_secs(7 * 86400)), None);
        for s in 0..1000u64 {
            let at = t0 + Duration::from_secs(101 + 1000 * s);
            h.record(&current(at, 0));
        }
        assert!(h.len() <= MAX_ENTRIES);
    }

    #[test]
    fn short_and_long_windows_both_start_near_an_entry() {
        let h = History::default();
        h.want(Some(Duration::from_secs(3600)), None);
        assert_eq!(
            h.want(Some(Duration::from_secs(10)), None),
            Some(MIN_SPACING)
        );
        let t0 = Instant::now();
        // Two hours of readings, one a second.
        for s in 0..=7200u64 {
            h.record(&current(t0 + Duration::from_secs(s), s as i128));
        }
        assert_eq!(h.len(), MAX_ENTRIES);
        let now = t0 + Duration::from_secs(7200);
        for w in [10u64, 60, 300, 1800, 3600] {
            let b = h
                .counter_baseline("req", Duration::from_secs(w), now)
                .unwrap();
            let c = b.covered.as_secs_f64();
            assert!(
                c >= w as f64 && c <= w as f64 * 1.15 + 1.0,
                "{w}s window covers {c}s"
            );
            // Totals were the second count, plus 1 from the other group.
            assert_eq!(b.value, 7200 - c as i128 + 1);
        }
    }

    #[test]
    fn watched_labels_are_bounded() {
        let h = History::default();
        for i in 0..100 {
            h.want(Some(Duration::from_secs(1)), Some(&format!("t{i}")));
        }
        assert_eq!(h.lock().watched.len(), MAX_WATCHED);
    }
}
