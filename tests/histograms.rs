//! Timers and histograms end to end: values recorded by a writer into a real
//! stats file, read back through the reader API, and checked against the
//! exact statistics of the same values.

use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::time::Duration;

use mmstats::{
    CombineError, Histogram, HistogramSnapshot, Kind, Layout, Stats, Timer, Unit, WriterState,
};
use mmstats_read::{Reader, Snapshot, Value};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Latencies of a pretend database client.
#[derive(Stats)]
struct Latency {
    /// Time per query.
    query: Timer,
    /// Rows per result, in coarse buckets.
    #[stat(precision = 3, max_bits = 20)]
    rows: Histogram,
}

/// Quantiles checked, in thousandths: `q = PER_MILLE / 1000`.
const PER_MILLE: [u64; 8] = [0, 500, 750, 900, 950, 990, 999, 1000];

/// The single stats file in `dir`.
fn only_file(dir: &Path) -> PathBuf {
    let (files, problems) = mmstats_read::discover(&[dir]);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(files.len(), 1, "expected one file in {dir:?}: {files:?}");
    files.into_iter().next().unwrap()
}

/// The histogram or timer labelled `label` in `snap`.
fn histogram(snap: &Snapshot, label: &str) -> HistogramSnapshot {
    let field = snap
        .field(label)
        .unwrap_or_else(|| panic!("no field {label} in {:?}", snap.info.path));
    match &field.value {
        Value::Histogram(h) => h.clone(),
        other => panic!("{label} is not a histogram: {other:?}"),
    }
}

/// A histogram built in memory from `values`, as a writer would record them.
fn in_memory(layout: Layout, values: &[u64]) -> HistogramSnapshot {
    let mut h = HistogramSnapshot::new(layout);
    for &v in values {
        h.record(v);
    }
    h
}

/// The exact quantile: the value of rank `ceil(q * n)` (clamped to `1..=n`)
/// among the sorted values, with `q = per_mille / 1000` in integers.
fn exact_quantile(sorted: &[u64], per_mille: u64) -> u64 {
    let n = sorted.len() as u64;
    let rank = (per_mille * n).div_ceil(1000).clamp(1, n);
    sorted[rank as usize - 1]
}

/// Checks `h` against the exact statistics of `values` and returns the worst
/// relative error of a quantile.
fn check_against_exact(h: &HistogramSnapshot, values: &[u64], what: &str) -> f64 {
    let layout = h.layout();
    let rel = layout.relative_error();
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let n = sorted.len() as u64;
    assert!(
        sorted[sorted.len() - 1] <= layout.max_value(),
        "{what}: test values must fit the layout"
    );

    assert_eq!(h.count(), n, "{what}: count");
    assert_eq!(
        h.buckets().map(|(_, _, c)| c).sum::<u64>(),
        n,
        "{what}: bucket counts"
    );
    assert_eq!(h.sum(), values.iter().sum::<u64>(), "{what}: sum");
    // Integers below 2^53 add up exactly in f64.
    let exact_mean = values.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
    let mean = h.mean().unwrap();
    assert!(
        (mean - exact_mean).abs() <= 1e-9 * exact_mean,
        "{what}: mean {mean} vs exact {exact_mean}"
    );

    let (lo, hi) = (sorted[0], sorted[sorted.len() - 1]);
    let (min, max) = (h.min().unwrap(), h.max().unwrap());
    assert!(
        min <= lo && (lo - min) as f64 <= rel * lo as f64,
        "{what}: min bound {min} vs exact min {lo}"
    );
    assert!(
        max >= hi && (max - hi) as f64 <= rel * hi as f64,
        "{what}: max bound {max} vs exact max {hi}"
    );

    let mut worst = 0f64;
    for per_mille in PER_MILLE {
        let q = per_mille as f64 / 1000.0;
        let exact = exact_quantile(&sorted, per_mille);
        let got = h.quantile(q).unwrap();
        assert_eq!(
            layout.index(got),
            layout.index(exact),
            "{what} q={q}: reported {got} is not in the bucket of the exact quantile {exact}"
        );
        let err = (got as f64 - exact as f64).abs() / exact as f64;
        assert!(
            err <= rel / 2.0,
            "{what} q={q}: reported {got}, exact {exact}: relative error {err} over {}",
            rel / 2.0
        );
        worst = worst.max(err);
    }
    worst
}

/// A standard normal variate (Box–Muller).
fn normal(rng: &mut StdRng) -> f64 {
    let u1 = 1.0 - rng.gen::<f64>(); // (0, 1]: ln is finite
    let u2 = rng.gen::<f64>();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// A log-normal variate with the given median and sigma, rounded, at least 1.
fn log_normal(rng: &mut StdRng, median: f64, sigma: f64) -> u64 {
    (median * (sigma * normal(rng)).exp()).round().max(1.0) as u64
}

fn uniform_samples(seed: u64, n: usize) -> Vec<u64> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.gen_range(1..=1_000_000)).collect()
}

/// Nanosecond latencies with a median of 1 ms and a wide spread.
fn log_normal_samples(seed: u64, n: usize) -> Vec<u64> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n).map(|_| log_normal(&mut rng, 1e6, 1.5)).collect()
}

/// Cache hits around 100 µs (70%) and misses around 50 ms (30%).
fn bimodal_samples(seed: u64, n: usize) -> Vec<u64> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            if rng.gen_bool(0.7) {
                log_normal(&mut rng, 1e5, 0.3)
            } else {
                log_normal(&mut rng, 5e7, 0.4)
            }
        })
        .collect()
}

/// Records `samples` into a timer in a real file, alternating the two
/// recording methods, reads the file back and checks it.
fn timer_accuracy(samples: &[u64], what: &str) {
    mmstats::install_sigbus_guard().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stats = Latency::builder().dir(dir.path()).open().unwrap();
    for (i, &v) in samples.iter().enumerate() {
        if i % 2 == 0 {
            stats.query.record(Duration::from_nanos(v));
        } else {
            stats.query.record_ns(v);
        }
    }
    let snap = mmstats_read::read_file(only_file(dir.path())).unwrap();
    let field = snap.field("query").unwrap();
    assert_eq!(field.kind, Kind::Timer);
    assert_eq!(field.unit, Unit::Nanoseconds);
    let h = histogram(&snap, "query");
    assert_eq!(h.layout(), Layout::timer());
    assert_eq!(histogram(&snap, "rows").count(), 0, "other field untouched");
    let worst = check_against_exact(&h, samples, what);
    eprintln!(
        "{what}: {} samples, worst quantile relative error {worst:.5} (bound {:.5})",
        samples.len(),
        h.layout().relative_error() / 2.0
    );
}

const SAMPLES: usize = 200_000;

#[test]
fn timer_quantiles_of_uniform_values_are_within_half_a_bucket() {
    timer_accuracy(&uniform_samples(1, SAMPLES), "uniform");
}

#[test]
fn timer_quantiles_of_log_normal_latencies_are_within_half_a_bucket() {
    timer_accuracy(&log_normal_samples(2, SAMPLES), "log-normal");
}

#[test]
fn timer_quantiles_of_bimodal_latencies_are_within_half_a_bucket() {
    timer_accuracy(&bimodal_samples(3, SAMPLES), "bimodal");
}

#[test]
fn histogram_with_custom_layout_keeps_its_coarser_bound() {
    mmstats::install_sigbus_guard().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stats = Latency::builder().dir(dir.path()).open().unwrap();
    let layout = Layout::new(3, 20).unwrap();
    assert_eq!(stats.rows.layout(), layout);
    assert_eq!(layout.relative_error(), 0.125);

    let samples = uniform_samples(4, SAMPLES);
    for &v in &samples {
        stats.rows.record(v);
    }
    let path = only_file(dir.path());
    let snap = mmstats_read::read_file(&path).unwrap();
    assert_eq!(snap.field("rows").unwrap().kind, Kind::Histogram);
    let h = histogram(&snap, "rows");
    assert_eq!(
        h.layout(),
        layout,
        "the file carries the field's own layout"
    );
    assert_eq!(h.counts().len(), layout.buckets());
    let worst = check_against_exact(&h, &samples, "uniform, precision 3");
    eprintln!(
        "uniform, precision 3: worst quantile relative error {worst:.5} (bound {:.5})",
        layout.relative_error() / 2.0
    );

    // A value past 2^max_bits lands in the last bucket; the sum stays exact.
    let last = layout.buckets() - 1;
    let before = h.counts()[last];
    stats.rows.record(5_000_000);
    let h = histogram(&mmstats_read::read_file(&path).unwrap(), "rows");
    assert_eq!(h.count(), SAMPLES as u64 + 1);
    assert_eq!(h.max(), Some(layout.max_value()));
    assert_eq!(h.counts()[last], before + 1);
    assert_eq!(h.sum(), samples.iter().sum::<u64>() + 5_000_000);
}

#[test]
fn files_of_many_threads_merge_into_one_histogram_of_all_values() {
    mmstats::install_sigbus_guard().unwrap();
    const THREADS: usize = 4;
    const PER_THREAD: usize = 50_000;
    let dir = tempfile::tempdir().unwrap();
    // Each thread's latencies centre on a different decade.
    let sets: Vec<Vec<u64>> = (0..THREADS)
        .map(|t| {
            let mut rng = StdRng::seed_from_u64(100 + t as u64);
            let median = 10f64.powi(3 + t as i32);
            (0..PER_THREAD)
                .map(|_| log_normal(&mut rng, median, 1.0))
                .collect()
        })
        .collect();

    // Every thread opens its file before any thread finishes, so no thread
    // id can be reused and take over a finished thread's file name.
    let all_open = Barrier::new(THREADS);
    std::thread::scope(|s| {
        for set in &sets {
            let (dir, all_open) = (dir.path(), &all_open);
            s.spawn(move || {
                let stats = Latency::builder().dir(dir).open().unwrap();
                all_open.wait();
                for &v in set {
                    stats.query.record_ns(v);
                }
            });
        }
    });

    let (files, problems) = mmstats_read::discover(&[dir.path()]);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(files.len(), THREADS, "{files:?}");
    let snaps: Vec<Snapshot> = files
        .iter()
        .map(|f| mmstats_read::read_file(f).unwrap())
        .collect();
    let mut tids: Vec<u32> = snaps.iter().map(|s| s.info.tid).collect();
    tids.sort_unstable();
    tids.dedup();
    assert_eq!(tids.len(), THREADS, "one file per writer thread");

    // Each file holds exactly one thread's values.
    let per_set: Vec<HistogramSnapshot> = sets
        .iter()
        .map(|set| in_memory(Layout::timer(), set))
        .collect();
    let mut matched = [false; THREADS];
    for snap in &snaps {
        assert_eq!(snap.info.state, WriterState::Exited);
        let h = histogram(snap, "query");
        let i = per_set
            .iter()
            .position(|e| *e == h)
            .unwrap_or_else(|| panic!("{:?} matches no thread's values", snap.info.path));
        assert!(!matched[i], "two files hold thread {i}'s values");
        matched[i] = true;
    }

    let mut merged = HistogramSnapshot::new(Layout::timer());
    for snap in &snaps {
        merged.merge(&histogram(snap, "query")).unwrap();
    }
    let all: Vec<u64> = sets.concat();
    let expected = in_memory(Layout::timer(), &all);
    assert_eq!(merged.count(), (THREADS * PER_THREAD) as u64);
    assert_eq!(merged.sum(), expected.sum());
    assert_eq!(merged.counts(), expected.counts());
    for per_mille in PER_MILLE {
        let q = per_mille as f64 / 1000.0;
        assert_eq!(merged.quantile(q), expected.quantile(q), "q={q}");
    }
    assert_eq!(merged, expected);
    let worst = check_against_exact(&merged, &all, "merged");
    eprintln!("merged {THREADS} files: worst quantile relative error {worst:.5}");

    // A histogram of another layout does not merge, and changes nothing.
    let rows = histogram(&snaps[0], "rows");
    assert_eq!(
        merged.merge(&rows),
        Err(CombineError::LayoutMismatch {
            left: Layout::timer(),
            right: Layout::new(3, 20).unwrap(),
        })
    );
    // Same precision, different range: still a different layout.
    assert!(matches!(
        merged.merge(&HistogramSnapshot::new(Layout::histogram())),
        Err(CombineError::LayoutMismatch { .. })
    ));
    assert_eq!(merged, expected);
}

#[test]
fn later_since_earlier_is_the_window_between_them() {
    mmstats::install_sigbus_guard().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stats = Latency::builder().dir(dir.path()).open().unwrap();
    let reader = Reader::open(only_file(dir.path())).unwrap();
    let first = log_normal_samples(10, 50_000);
    let second = bimodal_samples(11, 50_000);

    for &v in &first {
        stats.query.record_ns(v);
    }
    let earlier = histogram(&reader.snapshot().unwrap(), "query");
    for &v in &second {
        stats.query.record_ns(v);
    }
    let later = histogram(&reader.snapshot().unwrap(), "query");
    assert_eq!(earlier, in_memory(Layout::timer(), &first));

    let window = later.since(&earlier).unwrap();
    let expected = in_memory(Layout::timer(), &second);
    assert_eq!(window, expected);
    for per_mille in PER_MILLE {
        let q = per_mille as f64 / 1000.0;
        assert_eq!(window.quantile(q), expected.quantile(q), "q={q}");
    }
    check_against_exact(&window, &second, "window");

    // The window and the earlier reading add back up to the later one.
    let mut sum = earlier.clone();
    sum.merge(&window).unwrap();
    assert_eq!(sum, later);
    // Nothing happened between a snapshot and itself.
    let empty = later.since(&later).unwrap();
    assert_eq!(
        (empty.count(), empty.sum(), empty.quantile(0.5)),
        (0, 0, None)
    );

    // Backwards in time is an error, not a wrapped-around histogram.
    assert!(matches!(
        earlier.since(&later),
        Err(CombineError::NotLater { .. })
    ));
    assert!(matches!(
        later.since(&HistogramSnapshot::new(Layout::new(3, 20).unwrap())),
        Err(CombineError::LayoutMismatch { .. })
    ));
}

/// Sizes written by one thread while another reads them.
#[derive(Stats)]
struct Race {
    /// Sizes; a small layout keeps each snapshot cheap.
    #[stat(precision = 4, max_bits = 24)]
    size: Histogram,
}

#[test]
fn snapshots_taken_while_writing_are_consistent_and_monotone() {
    mmstats::install_sigbus_guard().unwrap();
    // Values in distinct buckets, so each bucket holds one known value.
    const VALUES: [u64; 8] = [1, 3, 40, 777, 5_000, 65_537, 1_000_003, 9_999_999];
    const CYCLES: u64 = 50_000;
    let layout = Layout::new(4, 24).unwrap();
    let mut value_of_bucket = vec![None; layout.buckets()];
    for v in VALUES {
        assert!(value_of_bucket[layout.index(v)].replace(v).is_none());
    }
    // The writer records this 64-value cycle again and again.
    let cycle: Vec<u64> = (0..64).map(|i| VALUES[(i * 5 + i / 8) % 8]).collect();
    let cycle_sum: u64 = cycle.iter().sum();
    let total = CYCLES * cycle.len() as u64;
    // prefix[r] = (sum, per-bucket counts) of the first r values of a cycle.
    let mut prefix = vec![(0u64, vec![0u64; layout.buckets()])];
    for &v in &cycle {
        let (mut sum, mut counts) = prefix.last().unwrap().clone();
        sum += v;
        counts[layout.index(v)] += 1;
        prefix.push((sum, counts));
    }
    let per_cycle = prefix[cycle.len()].1.clone();

    let dir = tempfile::tempdir().unwrap();
    let opened = Barrier::new(2);
    let go = Barrier::new(2);
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let stats = Race::builder().dir(dir.path()).open().unwrap();
            opened.wait();
            go.wait();
            for _ in 0..CYCLES {
                for &v in &cycle {
                    stats.size.record(v);
                }
            }
        });
        opened.wait();
        let reader = Reader::open(only_file(dir.path())).unwrap();
        let mut prev = histogram(&reader.snapshot().unwrap(), "size");
        assert_eq!(prev.layout(), layout);
        assert_eq!(prev.count(), 0);
        go.wait();

        let (mut snapshots, mut mid_write) = (0u64, 0u64);
        let mut check = |h: HistogramSnapshot| {
            let counts = h.counts();
            let count = h.count();
            let sum = h.sum();
            assert_eq!(count, counts.iter().sum::<u64>());
            assert!(count <= total && count >= prev.count(), "count {count}");
            assert!(sum >= prev.sum(), "sum went down: {} -> {sum}", prev.sum());
            let mut implied = 0u64;
            for (b, (&now, &then)) in counts.iter().zip(prev.counts()).enumerate() {
                assert!(now >= then, "bucket {b} went down: {then} -> {now}");
                match value_of_bucket[b] {
                    Some(v) => implied += now * v,
                    None => assert_eq!(now, 0, "bucket {b} holds no recorded value"),
                }
            }
            // The sum never includes a value whose bucket is not counted.
            assert!(sum <= implied, "sum {sum} over the buckets' {implied}");
            assert!(sum <= count * VALUES[7], "sum {sum} count {count}");
            // Stronger: the sum is the sum of the first k values recorded,
            // and the buckets count at least those k values.
            let (full, rest) = (sum / cycle_sum, sum % cycle_sum);
            let r = prefix
                .iter()
                .position(|(s, _)| *s == rest)
                .unwrap_or_else(|| panic!("sum {sum} is no prefix sum of what was recorded"));
            for (b, &now) in counts.iter().enumerate() {
                let least = full * per_cycle[b] + prefix[r].1[b];
                assert!(
                    now >= least,
                    "sum {sum} includes {least} values of bucket {b} but it counts {now}"
                );
            }
            if count > 0 && count < total {
                mid_write += 1;
            }
            snapshots += 1;
            prev = h;
        };
        while !writer.is_finished() {
            check(histogram(&reader.snapshot().unwrap(), "size"));
        }
        writer.join().unwrap();
        let last = reader.snapshot().unwrap();
        assert_eq!(last.info.state, WriterState::Exited);
        let h = histogram(&last, "size");
        check(h.clone());
        eprintln!("race: {snapshots} snapshots, {mid_write} taken mid-write");

        assert_eq!(h.count(), total);
        assert_eq!(h.sum(), CYCLES * cycle_sum);
        let expected: Vec<u64> = per_cycle.iter().map(|&c| c * CYCLES).collect();
        assert_eq!(h.counts(), &expected[..]);
    });
}

#[test]
fn every_way_of_timing_is_counted() {
    mmstats::install_sigbus_guard().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stats = Latency::builder().dir(dir.path()).open().unwrap();
    stats.query.record(Duration::from_micros(3));
    stats.query.record_ns(1_250);
    let out = stats.query.time(|| 42);
    assert_eq!(out, 42);
    {
        let _t = stats.query.start();
    }
    assert_eq!(stats.query.histogram().count(), 4);

    let snap = mmstats_read::read_file(only_file(dir.path())).unwrap();
    let field = snap.field("query").unwrap();
    assert_eq!(field.kind, Kind::Timer);
    assert_eq!(field.unit, Unit::Nanoseconds);
    assert_eq!(field.help, "Time per query.");
    let h = histogram(&snap, "query");
    assert_eq!(h.count(), 4);
    assert_eq!(h.sum(), stats.query.histogram().sum());
    assert!(h.sum() >= 3_000 + 1_250, "sum {}", h.sum());
    let layout = h.layout();
    assert_eq!(layout.bounds(layout.index(1_250)), (1_248, 1_263));
    assert!(h.counts()[layout.index(1_250)] >= 1);
    assert!(h.counts()[layout.index(3_000)] >= 1);
}
