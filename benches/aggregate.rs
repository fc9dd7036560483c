//! One aggregation pass of `pollstats` over many files: `Sources::sample`
//! (read every mapped file) plus `View::delta` against the previous sample,
//! with every file open and warm. Criterion reports it per file
//! (throughput in files).
//!
//! Each file has 10 fields: 6 counters, 2 gauges, a timer and a text.
//! The number of files is `MMSTATS_BENCH_FILES` (default 200; the goal is
//! measured at 5000):
//!
//! ```text
//! MMSTATS_BENCH_FILES=5000 cargo bench --bench aggregate
//! ```
//!
//! - `aggregate/idle`: nothing changed between the two samples.
//! - `aggregate/busy`: before each sample, every file's six counters and
//!   its timer changed (the writes are inside the timed loop; they are a
//!   few nanoseconds each).
//! - `aggregate/raw_read`: the same-run baseline, reading every file's
//!   bytes (all of them, as a naive reader would) into one buffer with
//!   `pread`.

use std::hint::black_box;
use std::os::unix::fs::FileExt;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mmstats::{Counter, Gauge, Stats, Text, Timer};
use mmstats_read::aggregate::{Sources, View};

/// Ten fields, as a typical small service model.
#[derive(Stats)]
#[stats(prefix = "svc.")]
struct Svc {
    /// Requests.
    requests: Counter,
    /// 2xx responses.
    ok: Counter,
    /// 4xx responses.
    client_errors: Counter,
    /// 5xx responses.
    server_errors: Counter,
    /// Bytes in.
    bytes_in: Counter,
    /// Bytes out.
    bytes_out: Counter,
    /// Requests in flight.
    in_flight: Gauge,
    /// Open connections.
    connections: Gauge,
    /// Request latency.
    latency: Timer,
    /// What the worker does.
    state: Text<32>,
}

fn files() -> usize {
    match std::env::var("MMSTATS_BENCH_FILES") {
        Ok(n) => n
            .parse()
            .unwrap_or_else(|e| panic!("MMSTATS_BENCH_FILES={n:?} is not a number: {e}")),
        Err(_) => 200,
    }
}

fn aggregate(c: &mut Criterion) {
    mmstats::install_sigbus_guard().unwrap();
    let n = files();
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let writers: Vec<Svc> = (0..n)
        .map(|i| {
            let s = Svc::builder()
                .dir(dir.path())
                .template(&format!("svc{i}.{{pid}}.{{tid}}.mmstats"))
                .open()
                .unwrap();
            s.requests.add(i as u64);
            s.ok.add(i as u64);
            s.client_errors.incr();
            s.server_errors.incr();
            s.bytes_in.add(100);
            s.bytes_out.add(1000);
            s.in_flight.set(1);
            s.connections.set(2);
            s.latency.record_ns(1000 + i as u64);
            s.state.set("serving");
            s
        })
        .collect();
    let mut sources = Sources::new(&[dir.path()]);
    assert_eq!(sources.len(), n, "every file open (mapping limit?)");
    let view = View::new();
    let mut prev = sources.sample();
    assert!(prev.warnings.is_empty(), "{:?}", prev.warnings);

    let mut g = c.benchmark_group("aggregate");
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("idle", |b| {
        b.iter(|| {
            let next = sources.sample();
            let delta = view.delta(Some(&prev), &next);
            black_box(&delta);
            prev = next;
        })
    });
    g.bench_function("busy", |b| {
        let mut k = 0u64;
        b.iter(|| {
            k += 1;
            for w in &writers {
                w.requests.incr();
                w.ok.incr();
                w.client_errors.incr();
                w.server_errors.incr();
                w.bytes_in.add(10);
                w.bytes_out.add(100);
                w.latency.record_ns(1000 + k % 5000);
            }
            let next = sources.sample();
            let delta = view.delta(Some(&prev), &next);
            black_box(&delta);
            prev = next;
        })
    });
    // The same-run baseline: the bytes of every file, read once with
    // `pread` from descriptors kept open (no `mmap` here: unsafe stays in
    // the library).
    let files: Vec<(std::fs::File, usize)> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| {
            let f = std::fs::File::open(e.unwrap().path()).unwrap();
            let len = f.metadata().unwrap().len() as usize;
            (f, len)
        })
        .collect();
    let mut buf = vec![0u8; files.iter().map(|f| f.1).max().unwrap_or(0)];
    g.bench_function("raw_read", |b| {
        b.iter(|| {
            for (f, len) in &files {
                f.read_exact_at(&mut buf[..*len], 0).unwrap();
                black_box(&buf);
            }
        })
    });
    g.finish();
}

criterion_group!(benches, aggregate);
criterion_main!(benches);
