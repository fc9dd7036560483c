//! One aggregation pass of `pollstats` over many files: `Sources::sample`
//! (read every mapped file) plus `View::delta` against the previous sample,
//! with every file open and warm. Criterion reports it per file
//! (`aggregate/sample_delta`, throughput in files).
//!
//! Each file has 10 fields: 6 counters, 2 gauges, a timer and a text.
//! The number of files is `MMSTATS_BENCH_FILES` (default 200, under the
//! reader's current limit of 256 mapped files; the goal is measured at
//! 5000):
//!
//! ```text
//! MMSTATS_BENCH_FILES=5000 cargo bench --bench aggregate
//! ```

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mmstats::aggregate::{Sources, View};
use mmstats::{Counter, Gauge, Stats, Text, Timer};

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
    g.bench_function("sample_delta", |b| {
        let mut k = 0u64;
        b.iter(|| {
            k += 1;
            let w = &writers[k as usize % n];
            w.requests.incr();
            w.latency.record_ns(k);
            let next = sources.sample();
            let delta = view.delta(Some(&prev), &next);
            black_box(&delta);
            prev = next;
        })
    });
    g.finish();
}

criterion_group!(benches, aggregate);
criterion_main!(benches);
