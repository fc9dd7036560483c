//! The `metrics` facade through mmstats-metrics, against the same facade
//! through `metrics-exporter-prometheus`'s recorder and against mmstats'
//! own `Counter::incr`, in one run:
//!
//! - `metrics/macro`: `counter!("bench.requests", "route" => "/a")
//!   .increment(1)` each time (registration and increment);
//! - `metrics/handle`: the same on a `metrics::Counter` registered once and
//!   kept;
//! - each for `mmstats` and `prometheus`, and `metrics/own_counter_incr`,
//!   our handle with no facade;
//! - `metrics/facade_floor`: a kept `metrics::Counter` over a plain atomic
//!   word updated with a relaxed load and store, what any recorder's
//!   stored handle costs at least (the facade's `Arc<dyn CounterFn>` call).
//!
//! - `tracing/no_subscriber`, `tracing/registry` and `tracing/mmstats_layer`:
//!   one span created, entered, exited and closed, under tracing's own
//!   no-op subscriber, under a bare `tracing_subscriber::registry()` and
//!   under the registry with our layer.
//! - `tracing/future_span` and `tracing/future_span_time_waits`: a future
//!   in a span, polled twice (one self-wake between), under our layer,
//!   without and with `TimeWaits` (its waker wrapper, made per future).
//!
//! Every mmstats file is real, in a temporary directory on `/dev/shm` when
//! there is one.
//!
//! ```text
//! cargo bench --bench adapters
//! ```

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use mmstats::{Counter, Stats};

/// Our own handle, the baseline.
#[derive(Stats)]
struct Own {
    /// Counted by `metrics/own_counter_incr`.
    count: Counter,
}

/// The floor: a counter function that is only the store.
struct Floor(AtomicU64);

impl metrics::CounterFn for Floor {
    fn increment(&self, value: u64) {
        // Relaxed, both: one writer in the bench, as in `Counter::add`.
        self.0
            .store(self.0.load(Ordering::Relaxed) + value, Ordering::Relaxed);
    }

    fn absolute(&self, value: u64) {
        // Relaxed: as above.
        self.0.store(value, Ordering::Relaxed);
    }
}

fn stats_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::tempdir_in(shm) {
            return dir;
        }
    }
    tempfile::tempdir().expect("create temporary directory")
}

fn facade(c: &mut Criterion) {
    let dir = stats_dir();
    let ours = mmstats_metrics::Builder::new().dir(dir.path()).build();
    let prom = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let own = Own::builder()
        .dir(dir.path())
        .open()
        .expect("open stats file");

    let mut g = c.benchmark_group("metrics");
    g.bench_function("own_counter_incr", |b| b.iter(|| own.count.incr()));
    let floor = metrics::Counter::from_arc(Arc::new(Floor(AtomicU64::new(0))));
    g.bench_function("facade_floor", |b| b.iter(|| floor.increment(1)));
    metrics::with_local_recorder(&ours, || {
        g.bench_function("mmstats_macro", |b| {
            b.iter(|| metrics::counter!("bench.requests", "route" => "/a").increment(1))
        });
        let handle = metrics::counter!("bench.kept", "route" => "/a");
        g.bench_function("mmstats_handle", |b| b.iter(|| handle.increment(1)));
    });
    metrics::with_local_recorder(&prom, || {
        g.bench_function("prometheus_macro", |b| {
            b.iter(|| metrics::counter!("bench.requests", "route" => "/a").increment(1))
        });
        let handle = metrics::counter!("bench.kept", "route" => "/a");
        g.bench_function("prometheus_handle", |b| b.iter(|| handle.increment(1)));
    });
    g.finish();
    assert_eq!(ours.error(), None);
}

fn spans(c: &mut Criterion) {
    use tracing_subscriber::layer::SubscriberExt;
    let dir = stats_dir();
    let span = || drop(tracing::info_span!("bench_span").entered());
    let mut g = c.benchmark_group("tracing");
    tracing::subscriber::with_default(tracing::subscriber::NoSubscriber::default(), || {
        g.bench_function("no_subscriber", |b| b.iter(span));
    });
    tracing::subscriber::with_default(tracing_subscriber::registry(), || {
        g.bench_function("registry", |b| b.iter(span));
    });
    let layer = mmstats_tracing::Builder::new().dir(dir.path()).build();
    let subscriber = tracing_subscriber::registry().with(layer.clone());
    tracing::subscriber::with_default(subscriber, || {
        let _root = tracing::info_span!("bench_root").entered();
        g.bench_function("mmstats_layer", |b| b.iter(span));
        g.bench_function("future_span", |b| b.iter(|| two_polls(false)));
        g.bench_function("future_span_time_waits", |b| b.iter(|| two_polls(true)));
    });
    g.finish();
    assert_eq!(layer.error(), None);
}

/// A future in a span that wakes itself once: polled twice, with a waker
/// that does nothing.
fn two_polls(time_waits: bool) {
    use mmstats_tracing::TimeWaits;
    use std::future::Future;
    use std::task::{Context, Poll, Waker};
    use tracing::Instrument;
    let mut yielded = false;
    let fut = std::future::poll_fn(move |cx| {
        if std::mem::replace(&mut yielded, true) {
            Poll::Ready(())
        } else {
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .instrument(tracing::info_span!("bench_future"));
    let mut cx = Context::from_waker(Waker::noop());
    if time_waits {
        let mut fut = std::pin::pin!(fut.time_waits());
        while fut.as_mut().poll(&mut cx).is_pending() {}
    } else {
        let mut fut = std::pin::pin!(fut);
        while fut.as_mut().poll(&mut cx).is_pending() {}
    }
}

criterion_group!(benches, facade, spans);
criterion_main!(benches);
