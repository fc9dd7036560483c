//! The cost of one update on the hot path, next to its floor and to the
//! usual alternatives, all in one run:
//!
//! - `counter/incr` against `counter/raw_load_store` (the same relaxed load
//!   and store on a word of a shared file mapping made here with `mmap`),
//!   `counter/fetch_add` (a locked add on such a word) and
//!   `counter/prometheus_inc`.
//! - `gauge/set`.
//! - `timer/record` (a `Duration`) and `histogram/record` (a `u64`) against
//!   `histogram/hdrhistogram_record` and `histogram/prometheus_observe`, all
//!   fed the same latencies, from nanoseconds to milliseconds, so that
//!   different buckets are hit.
//!
//! - `cpu_timer/start_cpu` (a `Timer::start_cpu` guard made and dropped:
//!   two reads of `CLOCK_THREAD_CPUTIME_ID` and a record) against
//!   `cpu_timer/start` (the same with `Timer::start`, two `Instant::now()`),
//!   and each clock read alone (`cpu_timer/thread_cpu_time`,
//!   `cpu_timer/instant_now`).
//! - `instrument/*`: one poll of a future that stays pending, bare and
//!   through `PerThread::instrument` with the default measures, with
//!   `external` and `scheduled` (the waker wrapper) and with `cpu`.
//!
//! Every mmstats handle belongs to a real stats file in a temporary
//! directory on `/dev/shm` (where writers put their files by default), and
//! the floor's mapping is a file next to it.
//!
//! ```text
//! cargo bench --bench hot_path
//! ```

use std::fs::File;
use std::hint::black_box;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use mmstats::{Counter, Gauge, Histogram, Stats, Timer};

/// The stats model under test.
#[derive(Stats)]
#[stats(prefix = "bench.")]
struct HotPath {
    /// Counted by `counter/incr`.
    count: Counter,
    /// Set by `gauge/set`.
    level: Gauge,
    /// Recorded by `timer/record`.
    latency: Timer,
    /// Recorded by `histogram/record`.
    sizes: Histogram,
}

/// What `instrument/*` records into, one file per thread.
#[derive(Stats)]
#[stats(prefix = "bench.async.")]
struct AsyncPath {
    /// First poll to completion (never: the future stays pending).
    wall: Timer,
    /// Time in polls.
    busy: Timer,
    /// Waiting for a wake.
    external: Timer,
    /// Woken, not yet polled.
    scheduled: Timer,
    /// Thread CPU time in polls.
    cpu: Timer,
}

static ASYNC_DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

mmstats::per_thread!(static ASYNC: AsyncPath = || {
    AsyncPath::builder().dir(ASYNC_DIR.get().expect("benches set ASYNC_DIR first"))
});

/// A future that is never ready.
struct Pending;

impl Future for Pending {
    type Output = ();
    fn poll(self: std::pin::Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        Poll::Pending
    }
}

/// Latencies fed to every timer and histogram, cycled through in order.
/// Eight entries, so the next index is a mask away.
const LATENCIES: [Duration; 8] = [
    Duration::from_nanos(17),
    Duration::from_nanos(850),
    Duration::from_nanos(3_200),
    Duration::from_nanos(42_000),
    Duration::from_nanos(731_000),
    Duration::from_nanos(123_456),
    Duration::from_millis(2),
    Duration::from_millis(15),
];

/// One page of a file mapped shared and writable with `mmap`: the same kind
/// of memory a stats file's values live in.
struct SharedPage {
    ptr: NonNull<AtomicU64>,
    _file: File,
}

impl SharedPage {
    const LEN: usize = 4096;

    fn new(dir: &Path) -> SharedPage {
        let file = tempfile::tempfile_in(dir).expect("create file to map");
        file.set_len(Self::LEN as u64).expect("size file to map");
        // SAFETY:
        // - A fresh mapping (null hint, no MAP_FIXED) replaces no memory.
        // - `file` is open read-write and `LEN` long, so every mapped byte is
        //   backed by the file and no access can raise SIGBUS.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                Self::LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                std::os::fd::AsRawFd::as_raw_fd(&file),
                0,
            )
        };
        assert_ne!(
            ptr,
            libc::MAP_FAILED,
            "mmap: {}",
            std::io::Error::last_os_error()
        );
        SharedPage {
            ptr: NonNull::new(ptr.cast()).expect("mmap returned null"),
            _file: file,
        }
    }

    /// Word `i` of the page.
    fn word(&self, i: usize) -> &AtomicU64 {
        assert!(i < Self::LEN / 8, "word {i} out of the page");
        // SAFETY:
        // - The mapping is page-aligned and `i < LEN / 8`, so the pointer is
        //   8-aligned and inside it; it lives until `self` is dropped.
        // - Nothing else in this process maps the file, and it is only
        //   accessed as atomic words.
        unsafe { &*self.ptr.as_ptr().add(i) }
    }
}

impl Drop for SharedPage {
    fn drop(&mut self) {
        // SAFETY: `ptr` is the start of a `LEN`-byte mapping made in `new`,
        // and no reference from `word` outlives `self`.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), Self::LEN) };
    }
}

/// A temporary directory on `/dev/shm` if there is one, else in the
/// system's temporary directory.
fn temp_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::tempdir_in(shm) {
            return dir;
        }
    }
    tempfile::tempdir().expect("create temporary directory")
}

fn benches(c: &mut Criterion) {
    let dir = temp_dir();
    let stats = HotPath::builder()
        .dir(dir.path())
        .open()
        .expect("open stats file");
    let page = SharedPage::new(dir.path());
    // Words in different cache lines, so no benchmark leaves another's line
    // in a state the next one pays for.
    let raw = page.word(0);
    let locked = page.word(8);

    let ns: [u64; 8] = LATENCIES.map(|d| d.as_nanos() as u64);
    let secs: [f64; 8] = LATENCIES.map(|d| d.as_secs_f64());

    let mut g = c.benchmark_group("counter");
    g.bench_function("incr", |b| b.iter(|| stats.count.incr()));
    g.bench_function("raw_load_store", |b| {
        b.iter(|| {
            // Relaxed load and store: exactly what `Counter::incr` does.
            raw.store(
                raw.load(Ordering::Relaxed).wrapping_add(1),
                Ordering::Relaxed,
            )
        })
    });
    g.bench_function("fetch_add", |b| {
        // Relaxed: only the locked read-modify-write itself is measured.
        b.iter(|| locked.fetch_add(1, Ordering::Relaxed))
    });
    let prom_counter =
        prometheus::IntCounter::new("bench_count", "Counted by counter/prometheus_inc.")
            .expect("prometheus counter");
    g.bench_function("prometheus_inc", |b| b.iter(|| prom_counter.inc()));
    g.finish();

    let mut g = c.benchmark_group("gauge");
    let level = &stats.level;
    g.bench_function("set", |b| {
        let mut v = 0i64;
        b.iter(move || {
            v = v.wrapping_add(1);
            level.set(black_box(v));
        })
    });
    g.finish();

    // Every timer and histogram benchmark cycles through `LATENCIES` the
    // same way, so the cost of picking the next value is the same in each.
    // The closures own their index (`move`), so it stays in a register
    // instead of making a store and a load per iteration.
    let latency = &stats.latency;
    let sizes = &stats.sizes;
    let mut g = c.benchmark_group("timer");
    g.bench_function("record", |b| {
        let mut i = 0;
        b.iter(move || {
            i = (i + 1) & 7;
            latency.record(black_box(LATENCIES[i]));
        })
    });
    g.finish();

    let mut g = c.benchmark_group("histogram");
    g.bench_function("record", |b| {
        let mut i = 0;
        b.iter(move || {
            i = (i + 1) & 7;
            sizes.record(black_box(ns[i]));
        })
    });
    // One hour in nanoseconds, 2 significant digits: about the range and
    // precision of an mmstats timer.
    let mut hdr = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 2)
        .expect("hdrhistogram bounds");
    g.bench_function("hdrhistogram_record", |b| {
        let hdr = &mut hdr;
        let mut i = 0;
        b.iter(move || {
            i = (i + 1) & 7;
            hdr.record(black_box(ns[i])).expect("value in range");
        })
    });
    let prom_hist = prometheus::Histogram::with_opts(prometheus::HistogramOpts::new(
        "bench_latency_seconds",
        "Observed by histogram/prometheus_observe.",
    ))
    .expect("prometheus histogram");
    let prom_hist = &prom_hist;
    g.bench_function("prometheus_observe", |b| {
        let mut i = 0;
        b.iter(move || {
            i = (i + 1) & 7;
            prom_hist.observe(black_box(secs[i]));
        })
    });
    g.finish();

    let mut g = c.benchmark_group("cpu_timer");
    g.bench_function("start", |b| b.iter(|| drop(black_box(latency.start()))));
    g.bench_function("start_cpu", |b| {
        b.iter(|| drop(black_box(latency.start_cpu())))
    });
    g.bench_function("instant_now", |b| b.iter(Instant::now));
    g.bench_function("thread_cpu_time", |b| b.iter(mmstats::thread_cpu_time));
    g.finish();

    ASYNC_DIR.get_or_init(|| dir.path().to_owned());
    let mut cx = Context::from_waker(Waker::noop());
    let mut g = c.benchmark_group("instrument");
    g.bench_function("bare", |b| {
        let mut fut = pin!(Pending);
        b.iter(|| black_box(fut.as_mut().poll(&mut cx)))
    });
    g.bench_function("wall_busy", |b| {
        let mut fut = pin!(ASYNC.instrument(Pending, |s| &s.wall, |s| &s.busy));
        b.iter(|| black_box(fut.as_mut().poll(&mut cx)))
    });
    g.bench_function("external_scheduled", |b| {
        let mut fut = pin!(ASYNC
            .instrument(Pending, |s| &s.wall, |s| &s.busy)
            .external(|s| &s.external)
            .scheduled(|s| &s.scheduled));
        b.iter(|| black_box(fut.as_mut().poll(&mut cx)))
    });
    g.bench_function("cpu", |b| {
        let mut fut = pin!(ASYNC
            .instrument(Pending, |s| &s.wall, |s| &s.busy)
            .cpu(|s| &s.cpu));
        b.iter(|| black_box(fut.as_mut().poll(&mut cx)))
    });
    g.finish();

    // Keep the file and mapping alive to here, and show that the updates
    // landed in them.
    assert!(stats.count.get() > 0 && raw.load(Ordering::Relaxed) > 0);
    drop(stats);
    drop(page);
}

criterion_group! {
    name = hot_path;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    targets = benches
}
criterion_main!(hot_path);
