//! The cost of a writer's life outside the hot path:
//!
//! - `open/first`: opening a model whose file must be made (a new file in a
//!   directory with no parked file).
//! - `open/reuse`: opening a model, then dropping it, in one thread: after
//!   the first round every open takes over the file the last drop parked.
//! - `churn/threads_with_stats` against `churn/threads_without_stats`:
//!   starting and joining a thread that records once through `per_thread!`,
//!   or that does one plain atomic add instead (threads per second).
//!
//! ```text
//! cargo bench --bench lifecycle
//! ```

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mmstats::{Counter, Gauge, Stats, Timer};

/// A small model with a timer, as a request handler's might be.
#[derive(Stats)]
struct Worker {
    /// Requests handled.
    requests: Counter,
    /// Requests in flight.
    in_flight: Gauge,
    /// Time per request.
    latency: Timer,
}

mmstats::per_thread!(static WORKER: Worker);

/// Files made per fresh directory in `open/first`, so a long run does not
/// fill `/dev/shm`.
const FIRST_CHUNK: u64 = 256;

fn open(c: &mut Criterion) {
    let mut g = c.benchmark_group("open");
    g.throughput(Throughput::Elements(1));
    g.bench_function("first", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(FIRST_CHUNK);
                let dir = tempfile::tempdir_in("/dev/shm").unwrap();
                let mut kept = Vec::with_capacity(n as usize);
                let start = Instant::now();
                for _ in 0..n {
                    // Kept alive, so each open makes a new file.
                    kept.push(Worker::builder().dir(dir.path()).open().unwrap());
                }
                spent += start.elapsed();
                drop(kept);
                left -= n;
            }
            spent
        });
    });
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    g.bench_function("reuse", |b| {
        b.iter(|| {
            let w = Worker::builder().dir(dir.path()).open().unwrap();
            w.requests.incr();
            w.in_flight.set(1);
            w.latency.record(Duration::from_nanos(100));
        });
    });
    g.finish();
}

fn churn(c: &mut Criterion) {
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    // Before any thread of ours reads it: per_thread! opens in $MMSTATS_DIR.
    std::env::set_var(mmstats::DIR_ENV, dir.path());
    let mut g = c.benchmark_group("churn");
    g.throughput(Throughput::Elements(1));
    g.bench_function("threads_with_stats", |b| {
        b.iter(|| {
            std::thread::spawn(|| WORKER.with(|s| s.requests.incr()))
                .join()
                .unwrap();
        });
    });
    static PLAIN: AtomicU64 = AtomicU64::new(0);
    g.bench_function("threads_without_stats", |b| {
        b.iter(|| {
            std::thread::spawn(|| {
                // Relaxed: a count nobody synchronises on.
                black_box(PLAIN.fetch_add(1, Ordering::Relaxed));
            })
            .join()
            .unwrap();
        });
    });
    g.finish();
    assert!(WORKER.error().is_none(), "{:?}", mmstats::fallbacks());
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = open, churn
}
criterion_main!(benches);
