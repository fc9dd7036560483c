//! The span trees of `/api/v1/tree`: over each file's whole life, or of a
//! recent window (`?window=SECONDS`).
//!
//! The sampling thread adds each reading, cut down to its span timers
//! ([`spans_only`]), and readings older than [`MAX_WINDOW`] are dropped. A
//! window's tree is [`Trees::between`] the kept reading closest to (at or
//! before) `now - window` and the current one: what the spans recorded in
//! between, with the aggregation's rules for files that come and go.
//! Kept readings take at most [`MAX_KEPT_BYTES`] in all (labels and bucket
//! counts, estimated); past that the oldest go first, and the answer's
//! `window_s` says how far back it really reaches.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mmstats_read::aggregate::{FileSample, Sample};
use mmstats_read::tree::json::TreesJson;
use mmstats_read::tree::{spans_only, Trees};
use serde::Serialize;

/// Most nodes `/api/v1/tree` gives, over all its trees; past it the answer
/// says `"truncated": true`.
pub const MAX_TREE_NODES: usize = 10_000;

/// Most problems (timers that could not be merged) it lists.
const MAX_TREE_PROBLEMS: usize = 20;

/// The longest window served.
pub const MAX_WINDOW: Duration = Duration::from_secs(300);

/// Bytes the kept readings take at most, as [`bytes`] estimates them:
/// what a window can cost in memory is bounded, whatever the files hold.
pub const MAX_KEPT_BYTES: usize = 256 << 20;

/// Recent readings, span timers only.
#[derive(Debug)]
pub struct TreeWindows {
    kept: Mutex<Kept>,
    max_bytes: usize,
}

impl Default for TreeWindows {
    fn default() -> Self {
        TreeWindows::with_max_bytes(MAX_KEPT_BYTES)
    }
}

#[derive(Debug, Default)]
struct Kept {
    samples: VecDeque<(Arc<Sample>, usize)>,
    bytes: usize,
}

/// About what a spans-only reading takes: per field its label and its
/// bucket counts, and a fixed part per field and per file.
fn bytes(s: &Sample) -> usize {
    s.files
        .iter()
        .map(|f| {
            let fields: usize = f
                .snapshot
                .fields
                .iter()
                .map(|x| {
                    let buckets = match &x.value {
                        mmstats_read::Value::Histogram(h) => h.counts().len() * 8,
                        _ => 0,
                    };
                    x.label.len() + buckets + 128
                })
                .sum();
            fields + 512
        })
        .sum()
}

impl TreeWindows {
    /// Keeping at most `max_bytes` ([`MAX_KEPT_BYTES`] by default).
    pub fn with_max_bytes(max_bytes: usize) -> TreeWindows {
        TreeWindows {
            kept: Mutex::default(),
            max_bytes,
        }
    }

    /// Keeps `sample`'s span timers; drops what is past [`MAX_WINDOW`] or
    /// over [`MAX_KEPT_BYTES`] (but never the newest).
    pub fn record(&self, sample: &Sample) {
        let spans = spans_only(sample);
        let n = bytes(&spans);
        // Poisoning: the deque and its count are updated together below,
        // with nothing that can panic in between.
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        if kept
            .samples
            .back()
            .is_some_and(|(last, _)| last.instant >= spans.instant)
        {
            return;
        }
        kept.samples.push_back((Arc::new(spans), n));
        kept.bytes += n;
        let now = sample.instant;
        while let Some((oldest, n)) = kept.samples.front() {
            let (oldest, n) = (oldest.instant, *n);
            let old = now.saturating_duration_since(oldest) > MAX_WINDOW;
            if !(old || kept.bytes > self.max_bytes) || kept.samples.len() == 1 {
                break;
            }
            kept.bytes -= n;
            kept.samples.pop_front();
        }
    }

    /// The kept reading closest to `window` before `now`, at or before
    /// it, else the oldest kept; `None` if nothing is kept yet.
    pub fn before(&self, now: Instant, window: Duration) -> Option<Arc<Sample>> {
        let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        let want = now.checked_sub(window);
        let at_or_before = want.and_then(|want| {
            kept.samples
                .iter()
                .rev()
                .find(|(s, _)| s.instant <= want)
                .map(|(s, _)| Arc::clone(s))
        });
        at_or_before.or_else(|| kept.samples.front().map(|(s, _)| Arc::clone(s)))
    }
}

impl TreeWindows {
    /// The `/api/v1/tree` answer over the files of `sample` that `keep`
    /// takes: over each file's whole life, or of about the last `window`.
    pub fn answer(
        &self,
        sample: &Sample,
        keep: impl Fn(&FileSample) -> bool,
        window: Option<Duration>,
    ) -> Vec<u8> {
        let (trees, window_s) = match window {
            None => {
                let mut trees = Trees::by_user();
                for f in sample.files.iter().filter(|f| f.fresh && keep(f)) {
                    trees.add(&f.snapshot);
                }
                (trees, None)
            }
            Some(w) => {
                // Spans only, as the kept readings are: each file's fields
                // at the same places in both, so the delta stays linear.
                let next = spans_only(&sample.only(&keep));
                // Nothing kept yet (mmash just started), or only readings
                // newer than this one: a window of nothing, never the
                // whole life passed off as a window.
                let prev = self
                    .before(sample.instant, w)
                    .filter(|p| p.instant <= sample.instant)
                    .map_or_else(|| next.clone(), |p| p.only(&keep));
                let since = sample.instant.saturating_duration_since(prev.instant);
                let trees = Trees::between(Some(&prev), &next, true);
                (trees, Some(since.as_secs_f64()))
            }
        };
        #[derive(Serialize)]
        struct Answer<'a> {
            time_ms: u64,
            /// With `window=`: how far back the tree really reaches (less
            /// than asked while mmash is younger than the window, or when
            /// it had to drop readings to stay within its memory bound).
            #[serde(skip_serializing_if = "Option::is_none")]
            window_s: Option<f64>,
            max_nodes: usize,
            #[serde(flatten)]
            trees: TreesJson<'a>,
            problems: &'a [String],
        }
        let answer = Answer {
            time_ms: sample
                .time
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            window_s,
            max_nodes: MAX_TREE_NODES,
            trees: TreesJson::new(&trees, MAX_TREE_NODES),
            problems: &trees.problems[..trees.problems.len().min(MAX_TREE_PROBLEMS)],
        };
        // Plain data with string keys: serialising cannot fail.
        serde_json::to_vec(&answer).expect("JSON of plain data")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at: Instant) -> Sample {
        Sample {
            time: std::time::SystemTime::now(),
            instant: at,
            files: Vec::new(),
            warnings: Vec::new(),
            foreign_skipped: 0,
        }
    }

    #[test]
    fn the_reading_at_or_before_the_window_start_is_chosen() {
        let w = TreeWindows::default();
        let t0 = Instant::now();
        assert!(w.before(t0, Duration::from_secs(10)).is_none());
        for s in 0..30 {
            w.record(&sample(t0 + Duration::from_secs(2 * s)));
        }
        let now = t0 + Duration::from_secs(58);
        let got = w.before(now, Duration::from_secs(10)).unwrap();
        assert_eq!(got.instant, t0 + Duration::from_secs(48));
        let got = w.before(now, Duration::from_secs(11)).unwrap();
        assert_eq!(got.instant, t0 + Duration::from_secs(46));
        // Longer than what is kept: the oldest.
        let got = w.before(now, Duration::from_secs(3600)).unwrap();
        assert_eq!(got.instant, t0);
    }

    #[test]
    fn readings_over_the_byte_bound_are_dropped_oldest_first() {
        use mmstats::{FieldDef, Layout, Options, Schema, StatsFile, Timer};
        mmstats::install_sigbus_guard().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut schema = Schema::new("tracing");
        schema.push(FieldDef::timer("span.busy{path=a}", Layout::timer()));
        schema.push(FieldDef::counter("not.a.span"));
        let mut file = StatsFile::create(&schema, &Options::new().dir(dir.path())).unwrap();
        let t: Timer = file.take("span.busy{path=a}").unwrap();
        t.record_ns(5);
        let mut sources = mmstats_read::aggregate::Sources::new(&[dir.path()]);
        let first = sources.sample();
        let one = bytes(&spans_only(&first));
        assert!(one > 512, "{one}");
        // Room for three readings.
        let w = TreeWindows::with_max_bytes(3 * one);
        w.record(&first);
        for _ in 0..5 {
            std::thread::sleep(Duration::from_millis(2));
            w.record(&sources.sample());
        }
        let kept = w.kept.lock().unwrap();
        assert_eq!(kept.samples.len(), 3);
        assert_eq!(kept.bytes, 3 * one);
        // Only the span timer is kept, without its help.
        let f = &kept.samples[0].0.files[0].snapshot.fields;
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].label, "span.busy{path=a}");
    }

    #[test]
    fn readings_past_the_longest_window_are_dropped() {
        let w = TreeWindows::default();
        let t0 = Instant::now();
        for s in 0..200 {
            w.record(&sample(t0 + Duration::from_secs(2 * s)));
        }
        let kept = w.kept.lock().unwrap();
        let oldest = kept.samples.front().unwrap().0.instant;
        assert_eq!(oldest, t0 + Duration::from_secs(398 - 300));
        // The same reading twice is kept once.
        drop(kept);
        w.record(&sample(t0 + Duration::from_secs(398)));
        assert_eq!(w.kept.lock().unwrap().samples.len(), 151);
    }
}
