//! Slow entries, and idle time split at the wake into external time and
//! scheduled delay, read back from the real files. Only lower bounds that
//! sleeps guarantee are asserted.

mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use common::run;
use mmstats_read::{Snapshot, Value};
use mmstats_tracing::{Builder, TimeWaits};
use tracing::Instrument;

/// (count, sum in ns) of a timer; `None` if there is no such field.
fn timer(snap: &Snapshot, label: &str) -> Option<(u64, u64)> {
    match &snap.field(label)?.value {
        Value::Histogram(h) => Some((h.count(), h.sum())),
        v => panic!("{label}: {v:?}"),
    }
}

fn spin(d: Duration) {
    let t = Instant::now();
    while t.elapsed() < d {}
}

#[test]
fn entries_past_the_threshold_are_slow() {
    let dir = tempfile::tempdir().unwrap();
    let layer = Builder::new()
        .dir(dir.path())
        .slow_threshold(Duration::from_millis(2))
        .build();
    let snap = run(layer, dir.path(), || {
        for _ in 0..3 {
            let _s = tracing::info_span!("heavy").entered();
            spin(Duration::from_millis(5));
        }
        let light = tracing::info_span!("light");
        for _ in 0..3 {
            let _e = light.enter();
        }
    });
    let (count, sum) = timer(&snap, "span.slow{path=heavy}").expect("slow timer");
    assert!(count >= 3, "three 5 ms entries are slow: {count}");
    assert!(sum >= 15_000_000, "each took 5 ms or more: {sum} ns");
    assert_eq!(timer(&snap, "span.busy{path=heavy}").unwrap().0, 3);
    // Made only on first use: a path with no slow entry has no such field
    // (unless the machine stalled an empty entry for 2 ms).
    if let Some((n, _)) = timer(&snap, "span.slow{path=light}") {
        assert!(n <= 3);
    }
}

#[test]
fn no_threshold_no_slow_fields() {
    let dir = tempfile::tempdir().unwrap();
    let layer = Builder::new()
        .dir(dir.path())
        .slow_threshold(Duration::MAX)
        .build();
    let snap = run(layer, dir.path(), || {
        let _s = tracing::info_span!("heavy").entered();
        spin(Duration::from_millis(3));
    });
    assert!(timer(&snap, "span.slow{path=heavy}").is_none());
    assert_eq!(timer(&snap, "span.busy{path=heavy}").unwrap().0, 1);
}

/// A future that is ready once another thread has signalled it.
#[derive(Clone, Default)]
struct Signal(Arc<Mutex<(bool, Option<Waker>)>>);

impl Signal {
    fn fire(&self) {
        let mut s = self.0.lock().unwrap();
        s.0 = true;
        if let Some(w) = s.1.take() {
            w.wake();
        }
    }
}

impl Future for Signal {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut s = self.0.lock().unwrap();
        if s.0 {
            Poll::Ready(())
        } else {
            s.1 = Some(cx.waker().clone());
            Poll::Pending
        }
    }
}

/// The executor's waker: a flag.
#[derive(Default)]
struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        // SeqCst: a test's flag; the simplest order to reason about.
        self.0.store(true, Ordering::SeqCst);
    }
}

#[test]
fn idle_time_splits_at_the_wake() {
    const EXTERNAL: Duration = Duration::from_millis(20);
    const BUSY_ELSEWHERE: Duration = Duration::from_millis(30);
    let dir = tempfile::tempdir().unwrap();
    let snap = run(Builder::new().dir(dir.path()).build(), dir.path(), || {
        let signal = Signal::default();
        let task = signal
            .clone()
            .instrument(tracing::info_span!("handler"))
            .time_waits();
        let mut task = std::pin::pin!(task);
        let flag = Arc::new(Flag::default());
        let waker = Waker::from(Arc::clone(&flag));
        let mut cx = Context::from_waker(&waker);
        assert!(task.as_mut().poll(&mut cx).is_pending());
        // The awaited thing answers after EXTERNAL...
        let upstream = std::thread::spawn(move || {
            std::thread::sleep(EXTERNAL);
            signal.fire();
        });
        // ...and this "executor" sees the wake, then is busy elsewhere
        // for BUSY_ELSEWHERE before it polls again.
        // SeqCst: see `Flag`.
        while !flag.0.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        std::thread::sleep(BUSY_ELSEWHERE);
        assert!(task.as_mut().poll(&mut cx).is_ready());
        upstream.join().unwrap();
    });
    let (n, external) = timer(&snap, "span.external{path=handler}").expect("external timer");
    assert_eq!(n, 1, "one span");
    let (_, scheduled) = timer(&snap, "span.scheduled{path=handler}").expect("scheduled timer");
    let (_, idle) = timer(&snap, "span.idle{path=handler}").unwrap();
    assert!(
        external >= EXTERNAL.as_nanos() as u64,
        "external {external} ns"
    );
    assert!(
        scheduled >= BUSY_ELSEWHERE.as_nanos() as u64,
        "scheduled {scheduled} ns"
    );
    // Both are parts of the idle time (which also has the time before the
    // first entry and after the last exit). Timers keep values within
    // 2^-4, so allow for that rounding.
    assert!(
        (external + scheduled) as f64 <= idle as f64 * 1.07,
        "{external} + {scheduled} within idle {idle}"
    );
}

#[test]
fn a_wake_during_the_poll_is_all_scheduled_delay() {
    let dir = tempfile::tempdir().unwrap();
    let snap = run(Builder::new().dir(dir.path()).build(), dir.path(), || {
        // Wakes itself and returns Pending once, as `yield_now` does.
        let mut yielded = false;
        let task = std::future::poll_fn(move |cx| {
            if yielded {
                Poll::Ready(())
            } else {
                yielded = true;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        })
        .instrument(tracing::info_span!("yielder"))
        .time_waits();
        let mut task = std::pin::pin!(task);
        let waker = Waker::from(Arc::new(Flag::default()));
        let mut cx = Context::from_waker(&waker);
        assert!(task.as_mut().poll(&mut cx).is_pending());
        std::thread::sleep(Duration::from_millis(10));
        assert!(task.as_mut().poll(&mut cx).is_ready());
    });
    let (_, external) = timer(&snap, "span.external{path=yielder}").expect("external timer");
    let (_, scheduled) = timer(&snap, "span.scheduled{path=yielder}").unwrap();
    assert_eq!(external, 0, "woken before it even returned Pending");
    assert!(scheduled >= 10_000_000, "scheduled {scheduled} ns");
}

#[test]
fn spans_without_time_waits_have_no_split() {
    let dir = tempfile::tempdir().unwrap();
    let snap = run(Builder::new().dir(dir.path()).build(), dir.path(), || {
        let span = tracing::info_span!("plain");
        drop(span.enter());
        std::thread::sleep(Duration::from_millis(2));
        drop(span.enter());
    });
    assert!(timer(&snap, "span.external{path=plain}").is_none());
    assert!(timer(&snap, "span.scheduled{path=plain}").is_none());
    assert!(timer(&snap, "span.idle{path=plain}").unwrap().1 >= 2_000_000);
}

#[test]
fn a_span_made_and_ended_within_one_poll_is_not_split() {
    let dir = tempfile::tempdir().unwrap();
    let snap = run(Builder::new().dir(dir.path()).build(), dir.path(), || {
        let signal = Signal::default();
        let fired = signal.clone();
        let inner_then_wait = async move {
            // A span made and entered twice within the second poll: its
            // gap is work of this poll, not a suspension.
            let mut polls = 0;
            std::future::poll_fn(|cx| {
                polls += 1;
                if polls == 1 {
                    fired.fire();
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                let inner = tracing::info_span!("cache_get");
                drop(inner.enter());
                spin(Duration::from_millis(2));
                drop(inner.enter());
                Poll::Ready(())
            })
            .await;
            signal.await
        };
        let task = inner_then_wait
            .instrument(tracing::info_span!("outer"))
            .time_waits();
        let mut task = std::pin::pin!(task);
        let waker = Waker::from(Arc::new(Flag::default()));
        let mut cx = Context::from_waker(&waker);
        while task.as_mut().poll(&mut cx).is_pending() {}
    });
    assert!(timer(&snap, "span.idle{path=outer/cache_get}").unwrap().1 >= 2_000_000);
    assert!(timer(&snap, "span.external{path=outer/cache_get}").is_none());
    assert!(timer(&snap, "span.scheduled{path=outer/cache_get}").is_none());
    // The outer span was suspended once, between the two polls.
    assert_eq!(timer(&snap, "span.external{path=outer}").unwrap().0, 1);
}
