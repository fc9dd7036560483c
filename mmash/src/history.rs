//! A short ring of past readings, so that `/check/` can answer over a
//! window: a counter's rate over the last minute, a timer's p99 over the
//! last five.
//!
//! Each entry holds the collector's cumulative series at one moment: the
//! total of each counter that a check asked a rate of (summed over the
//! `--by` groups; totals never go down, so a rate never goes negative when
//! writers die), and the cumulative distribution of the timers and
//! histograms that checks asked for. A value over a window is the newest
//! entry minus the newest entry at least that old. A label is kept from the
//! first check that asks for it, so that check is answered over the life
//! of the files, and the next ones over the window (or the part of it
//! seen since) once that part is at least a quarter of the window
//! ([`min_cover`](check_mmash::check::min_cover)); until then over the
//! life of the files again, never over the milliseconds between two
//! checks.
//!
//! **Bounds.** Entries are kept for the longest window any check asked for
//! (at most [`MAX_RETENTION`]), taken about every 1/20 of the shortest
//! window (between [`MIN_SPACING`] and [`MAX_SPACING`]), and never more
//! than [`MAX_ENTRIES`]: when the ring is full, the entry whose removal
//! leaves the smallest gap for its age goes, so recent entries stay dense
//! and old ones thin out geometrically. A window of any length then starts
//! within a few percent of its age of an entry (for 100 entries over a day,
//! within about 15%; a 10 s window next to a 1 h one, within a second).
//! At most [`MAX_WATCHED_COUNTERS`] counter labels and [`MAX_WATCHED`]
//! timer and histogram labels are kept (the least recently asked one is
//! dropped), only labels the files have, histograms as their non-empty
//! buckets only. So memory does not grow with the number of labels in the
//! files: at most `MAX_ENTRIES` x (`MAX_WATCHED_COUNTERS` integers +
//! `MAX_WATCHED` x non-empty buckets): for 16 timers with 200 non-empty
//! buckets each, about 7 MB; at worst (16 histograms with all 3776 buckets
//! filled) about 100 MB.
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
use check_mmash::scope::Scope;

/// Most entries kept.
pub const MAX_ENTRIES: usize = 100;
/// Longest span kept, whatever the windows asked.
pub const MAX_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// Most timer and histogram labels kept.
pub const MAX_WATCHED: usize = 16;
/// Most counter labels kept.
pub const MAX_WATCHED_COUNTERS: usize = 256;
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
    /// Counter labels asked a rate of, with when.
    counters: Vec<(String, Instant)>,
}

/// Notes that `label` was asked for now; when `list` already holds `max`
/// labels, drops the least recently asked one, from `list` and from every
/// entry (through `forget`).
fn watch(
    list: &mut Vec<(String, Instant)>,
    entries: &mut VecDeque<Entry>,
    label: &str,
    max: usize,
    forget: fn(&mut Entry, &str),
) {
    let now = Instant::now();
    if let Some(e) = list.iter_mut().find(|(x, _)| x == label) {
        e.1 = now;
        return;
    }
    if list.len() >= max {
        if let Some(i) = list
            .iter()
            .enumerate()
            .min_by_key(|(_, (_, t))| *t)
            .map(|(i, _)| i)
        {
            let (gone, _) = list.swap_remove(i);
            for e in entries.iter_mut() {
                forget(e, &gone);
            }
        }
    }
    list.push((label.to_owned(), now));
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
            let Ring {
                watched, entries, ..
            } = &mut *ring;
            watch(watched, entries, l, MAX_WATCHED, |e, l| {
                e.hists.remove(l);
            });
        }
        ring.shortest.map(spacing)
    }

    /// Notes that a check asks a rate of the counter `label` (one the files
    /// have), so that its total is kept from the next [`History::record`]
    /// on.
    pub fn want_counter(&self, label: &str) {
        let mut ring = self.lock();
        let Ring {
            counters, entries, ..
        } = &mut *ring;
        watch(counters, entries, label, MAX_WATCHED_COUNTERS, |e, l| {
            e.counters.remove(l);
        });
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
            // A watched distribution the files no longer have is not new:
            // it would make every request a reading.
            let new_label = ring.watched.iter().any(|(l, _)| {
                !last.hists.contains_key(l)
                    && cur.families.iter().any(|f| {
                        f.label == Scope::split_key(l).0
                            && matches!(f.kind, FamilyKind::Histogram | FamilyKind::Timer)
                    })
            }) || ring
                .counters
                .iter()
                .any(|(l, _)| !last.counters.contains_key(l));
            if !new_label && at.duration_since(last.at) < gap {
                return;
            }
        }
        // A watched counter the files no longer have totals 0 now.
        let mut counters: HashMap<String, i128> =
            ring.counters.iter().map(|(l, _)| (l.clone(), 0)).collect();
        let mut hists: HashMap<String, HistogramSnapshot> = HashMap::new();
        // A kept key is a label and a check's scope (`Scope::key`): each
        // sums the label's series in that scope.
        let family = |label: &str| cur.families.iter().find(|f| f.label == label);
        for (key, total) in counters.iter_mut() {
            let (label, scope) = Scope::split_key(key);
            let Some(fam) = family(label).filter(|f| f.kind == FamilyKind::Counter) else {
                continue;
            };
            for s in &fam.series {
                if scope.matches_labels(&s.labels) != Some(false) {
                    if let SeriesValue::Int(n) = s.value {
                        *total = total.saturating_add(n);
                    }
                }
            }
        }
        for (key, _) in &ring.watched {
            let (label, scope) = Scope::split_key(key);
            let Some(fam) = family(label)
                .filter(|f| matches!(f.kind, FamilyKind::Histogram | FamilyKind::Timer))
            else {
                continue;
            };
            for s in &fam.series {
                if scope.matches_labels(&s.labels) == Some(false) {
                    continue;
                }
                if let SeriesValue::Histogram(h) = &s.value {
                    match hists.get_mut(key) {
                        None => {
                            hists.insert(key.clone(), h.clone());
                        }
                        Some(t) => {
                            // Groups of one label share a layout; one
                            // that does not is left out.
                            let _ = t.merge(h);
                        }
                    }
                }
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
    /// `now`, or the oldest entry that kept it if none is that old. `None`
    /// if no entry before `now` kept it.
    pub fn counter_baseline(
        &self,
        label: &str,
        window: Duration,
        now: Instant,
    ) -> Option<Baseline<i128>> {
        let ring = self.lock();
        let e = pick(&ring.entries, window, now, |e| {
            e.counters.contains_key(label)
        })?;
        Some(Baseline {
            value: *e.counters.get(label)?,
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
    use mmstats_read::aggregate::Sample;
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
                        static_labels: Vec::new(),
                        value: SeriesValue::Int(total),
                    },
                    Series {
                        labels: Vec::new(),
                        static_labels: Vec::new(),
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
        h.want_counter("req");
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
        // A label no check asked for is not kept.
        assert!(h
            .counter_baseline("nope", Duration::from_secs(1), now)
            .is_none());
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
        h.want_counter("req");
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
    fn many_labels_in_the_files_cost_only_the_asked_ones() {
        let h = History::default();
        h.want(Some(Duration::from_secs(60)), None);
        let t0 = Instant::now();
        let mut cur = current(t0, 0);
        let template = cur.families[0].clone();
        for i in 0..5000 {
            let mut f = template.clone();
            f.label = format!("hostile.{i}");
            cur.families.push(f);
        }
        h.record(&cur);
        assert!(h.lock().entries.iter().all(|e| e.counters.is_empty()));
        // Asked for: kept from the next reading on, 0 when it goes.
        h.want_counter("hostile.7");
        cur.sample.instant = t0 + Duration::from_secs(1);
        h.record(&cur);
        cur.families.clear();
        cur.sample.instant = t0 + Duration::from_secs(5);
        h.record(&cur);
        let ring = h.lock();
        let kept: Vec<Vec<(&String, &i128)>> = ring
            .entries
            .iter()
            .map(|e| e.counters.iter().collect())
            .collect();
        let label = "hostile.7".to_owned();
        assert_eq!(kept, vec![vec![], vec![(&label, &1)], vec![(&label, &0)]]);
        drop(ring);
        // Before it was asked for there is no baseline, after there is.
        let b = h
            .counter_baseline(
                "hostile.7",
                Duration::from_secs(60),
                t0 + Duration::from_secs(5),
            )
            .unwrap();
        assert_eq!((b.value, b.covered), (1, Duration::from_secs(4)));
        // Counter labels asked for are bounded too.
        for i in 0..1000 {
            h.want_counter(&format!("c{i}"));
        }
        assert_eq!(h.lock().counters.len(), MAX_WATCHED_COUNTERS);
    }

    #[test]
    fn a_watched_label_the_files_lost_does_not_make_every_request_a_reading() {
        let h = History::default();
        h.want(Some(Duration::from_secs(60)), Some("gone"));
        let t0 = Instant::now();
        for ms in 0..500u64 {
            h.record(&current(t0 + Duration::from_millis(ms), 0));
        }
        assert_eq!(h.len(), 1);
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
