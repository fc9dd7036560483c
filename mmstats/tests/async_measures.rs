//! The async measures of `PerThread::instrument` and `start_request`, and
//! `Timer::start_cpu`, driven by a hand-made executor: each test polls and
//! wakes a future itself, sleeping in between, and checks the recorded
//! times against those sleeps with relations, not tight bounds.
//!
//! Every test body runs on a fresh thread (`fresh`) and reads what its
//! thread's `per_thread!` instance recorded since a [`Base`] it took: a
//! thread may take over the file (and its sums) a finished one parked.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::sleep;
use std::time::{Duration, Instant};

use mmstats::{Counter, Stats, Timer};

/// Every timer and counter the tests record into.
#[derive(Stats)]
#[stats(prefix = "test.")]
struct Tasks {
    wall: Timer,
    busy: Timer,
    external: Timer,
    scheduled: Timer,
    slow: Counter,
    slow_time: Timer,
    cpu: Timer,
    response: Timer,
    duration: Timer,
}

/// One directory for the whole test process (tests run in parallel and
/// share the static). A static is never dropped, so it is made under
/// cargo's scratch directory for tests, inside the target directory,
/// rather than in the system's temporary directory.
static DIR: LazyLock<tempfile::TempDir> = LazyLock::new(|| {
    tempfile::Builder::new()
        .prefix("async_measures")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("create a directory under CARGO_TARGET_TMPDIR")
});

mmstats::per_thread!(static TASKS: Tasks = || Tasks::builder().dir(DIR.path()));

/// Runs `f` on a new thread and returns its value.
fn fresh<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    std::thread::spawn(f).join().expect("test thread panicked")
}

/// Every timer of the model.
const TIMERS: [fn(&Tasks) -> &Timer; 8] = [
    |s| &s.wall,
    |s| &s.busy,
    |s| &s.external,
    |s| &s.scheduled,
    |s| &s.slow_time,
    |s| &s.cpu,
    |s| &s.response,
    |s| &s.duration,
];

/// The sums and counts of this thread's timers (by address) and its slow
/// poll counter at some point.
struct Base {
    timers: HashMap<usize, (u64, u64)>,
    slow: u64,
}

impl Base {
    fn now() -> Base {
        TASKS.with(|s| Base {
            timers: TIMERS
                .iter()
                .map(|t| {
                    let h = t(s).histogram();
                    (addr(t(s)), (h.sum(), h.count()))
                })
                .collect(),
            slow: s.slow.get(),
        })
    }

    /// What `timer` of this thread's instance added up since.
    fn sum(&self, timer: fn(&Tasks) -> &Timer) -> Duration {
        TASKS.with(|s| {
            let t = timer(s);
            Duration::from_nanos(t.histogram().sum() - self.timers[&addr(t)].0)
        })
    }

    /// How many samples `timer` of this thread's instance took since.
    fn count(&self, timer: fn(&Tasks) -> &Timer) -> u64 {
        TASKS.with(|s| {
            let t = timer(s);
            t.histogram().count() - self.timers[&addr(t)].1
        })
    }

    /// Slow polls counted since.
    fn slow(&self) -> u64 {
        TASKS.with(|s| s.slow.get()) - self.slow
    }
}

fn addr(t: &Timer) -> usize {
    t as *const Timer as usize
}

/// An executor's waker that counts its wakes.
struct Wakes(AtomicUsize);

impl Wake for Wakes {
    fn wake(self: Arc<Self>) {
        // Relaxed: read on the polling thread after the waking one joined
        // or on the same thread.
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

fn executor_waker() -> (Arc<Wakes>, Waker) {
    let w = Arc::new(Wakes(AtomicUsize::new(0)));
    (Arc::clone(&w), Waker::from(w))
}

/// A future that returns `Pending` `waits` times, leaving the waker it was
/// polled with in `parked` for the test to wake, then is ready. Each poll
/// spins for `spin` first.
struct Parks {
    waits: usize,
    spin: Duration,
    parked: Arc<Mutex<Option<Waker>>>,
}

impl Future for Parks {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let t = Instant::now();
        while t.elapsed() < self.spin {
            std::hint::black_box(t);
        }
        if self.waits == 0 {
            return Poll::Ready(());
        }
        self.waits -= 1;
        *self.parked.lock().unwrap() = Some(cx.waker().clone());
        Poll::Pending
    }
}

fn parks(waits: usize, spin: Duration) -> (Parks, Arc<Mutex<Option<Waker>>>) {
    let parked = Arc::new(Mutex::new(None));
    let fut = Parks {
        waits,
        spin,
        parked: Arc::clone(&parked),
    };
    (fut, parked)
}

/// Polls `fut` once with `waker`.
fn poll_once<F: Future>(fut: Pin<&mut F>, waker: &Waker) -> Poll<F::Output> {
    fut.poll(&mut Context::from_waker(waker))
}

/// Wakes the waker the future parked, from another thread.
fn wake_from_another_thread(parked: &Arc<Mutex<Option<Waker>>>) {
    let w = parked
        .lock()
        .unwrap()
        .clone()
        .expect("the future parked a waker");
    std::thread::spawn(move || w.wake()).join().unwrap();
}

#[test]
fn external_time_ends_at_the_wake_and_scheduled_delay_at_the_poll() {
    let (ext, sched, wall, busy, wakes) = fresh(|| {
        let base = Base::now();
        let (executor, waker) = executor_waker();
        let (fut, parked) = parks(1, Duration::ZERO);
        let mut fut = std::pin::pin!(TASKS
            .instrument(fut, |s| &s.wall, |s| &s.busy)
            .external(|s| &s.external)
            .scheduled(|s| &s.scheduled));
        assert!(poll_once(fut.as_mut(), &waker).is_pending());
        sleep(Duration::from_millis(40)); // waiting for the "I/O"
        wake_from_another_thread(&parked);
        sleep(Duration::from_millis(80)); // ready, but the "executor" is busy
        assert!(poll_once(fut.as_mut(), &waker).is_ready());
        // Relaxed: the waking thread was joined.
        let wakes = executor.0.load(Ordering::Relaxed);
        (
            base.sum(|s| &s.external),
            base.sum(|s| &s.scheduled),
            base.sum(|s| &s.wall),
            base.sum(|s| &s.busy),
            wakes,
        )
    });
    assert_eq!(wakes, 1, "the wrapper passes the wake on to the executor");
    assert!(ext >= Duration::from_millis(40), "external {ext:?}");
    assert!(sched >= Duration::from_millis(80), "scheduled {sched:?}");
    // The 80 ms after the wake were not counted as external time.
    assert!(sched > ext, "scheduled {sched:?} <= external {ext:?}");
    // wall = busy + external + scheduled, to the nanosecond rounding of
    // four samples.
    let parts = busy + ext + sched;
    let diff = wall.abs_diff(parts);
    assert!(
        diff < Duration::from_micros(1),
        "wall {wall:?} vs {parts:?}"
    );
}

#[test]
fn the_first_of_several_wakes_ends_the_external_time() {
    let (ext, sched) = fresh(|| {
        let base = Base::now();
        let (_, waker) = executor_waker();
        let (fut, parked) = parks(1, Duration::ZERO);
        let mut fut = std::pin::pin!(TASKS
            .instrument(fut, |s| &s.wall, |s| &s.busy)
            .external(|s| &s.external)
            .scheduled(|s| &s.scheduled));
        assert!(poll_once(fut.as_mut(), &waker).is_pending());
        wake_from_another_thread(&parked); // at once
        sleep(Duration::from_millis(50));
        wake_from_another_thread(&parked); // again, 50 ms later
        sleep(Duration::from_millis(10));
        assert!(poll_once(fut.as_mut(), &waker).is_ready());
        (base.sum(|s| &s.external), base.sum(|s| &s.scheduled))
    });
    assert!(sched >= Duration::from_millis(60), "scheduled {sched:?}");
    assert!(ext < sched / 2, "external {ext:?}, scheduled {sched:?}");
}

#[test]
fn slow_polls_are_counted_over_the_threshold_only() {
    fn run(threshold: Duration) -> (u64, u64, Duration) {
        fresh(move || {
            let base = Base::now();
            let (_, waker) = executor_waker();
            // Three polls of 5 ms each.
            let (fut, parked) = parks(2, Duration::from_millis(5));
            let mut fut = std::pin::pin!(TASKS
                .instrument(fut, |s| &s.wall, |s| &s.busy)
                .slow_polls(|s| &s.slow, |s| &s.slow_time)
                .slow_threshold(threshold));
            while poll_once(fut.as_mut(), &waker).is_pending() {
                wake_from_another_thread(&parked);
            }
            (
                base.slow(),
                base.count(|s| &s.slow_time),
                base.sum(|s| &s.slow_time),
            )
        })
    }
    let (low, low_timed, low_time) = run(Duration::from_micros(100));
    assert_eq!((low, low_timed), (3, 3), "a 100 µs threshold");
    assert!(low_time >= Duration::from_millis(15), "{low_time:?}");
    let (high, high_timed, _) = run(Duration::from_secs(10));
    assert_eq!((high, high_timed), (0, 0), "a 10 s threshold");
}

#[test]
fn only_futures_that_ask_for_wait_times_get_the_wrapper_waker() {
    /// Ready at once; notes whether it was polled with the executor's waker.
    struct Sees(Waker, Arc<Mutex<Option<bool>>>);
    impl Future for Sees {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            *self.1.lock().unwrap() = Some(cx.waker().will_wake(&self.0));
            Poll::Ready(())
        }
    }
    let executors_own = |ask: bool| {
        fresh(move || {
            let (_, waker) = executor_waker();
            let seen = Arc::new(Mutex::new(None));
            let fut = TASKS.instrument(
                Sees(waker.clone(), Arc::clone(&seen)),
                |s| &s.wall,
                |s| &s.busy,
            );
            let fut = fut.slow_polls(|s| &s.slow, |s| &s.slow_time);
            let out = if ask {
                poll_once(std::pin::pin!(fut.scheduled(|s| &s.scheduled)), &waker)
            } else {
                poll_once(std::pin::pin!(fut), &waker)
            };
            assert!(out.is_ready());
            let seen = seen.lock().unwrap().expect("polled");
            seen
        })
    };
    assert!(
        executors_own(false),
        "no wrapper without external/scheduled"
    );
    assert!(!executors_own(true), "the wrapper with scheduled");
}

#[test]
fn cpu_time_of_a_future_counts_spinning_not_waiting() {
    let run = |spin: Duration, wait: Duration| {
        fresh(move || {
            let base = Base::now();
            let (_, waker) = executor_waker();
            let (fut, parked) = parks(1, spin);
            let mut fut = std::pin::pin!(TASKS
                .instrument(fut, |s| &s.wall, |s| &s.busy)
                .cpu(|s| &s.cpu));
            assert!(poll_once(fut.as_mut(), &waker).is_pending());
            sleep(wait);
            wake_from_another_thread(&parked);
            assert!(poll_once(fut.as_mut(), &waker).is_ready());
            (base.sum(|s| &s.cpu), base.sum(|s| &s.wall))
        })
    };
    // Two polls spinning 20 ms each, against two instant polls 40 ms apart.
    let (spin_cpu, _) = run(Duration::from_millis(20), Duration::ZERO);
    let (wait_cpu, wait_wall) = run(Duration::ZERO, Duration::from_millis(40));
    assert!(wait_wall >= Duration::from_millis(40));
    assert!(
        spin_cpu > wait_cpu * 4,
        "spinning {spin_cpu:?}, waiting {wait_cpu:?}"
    );
}

#[test]
fn start_cpu_counts_a_busy_loop_and_not_a_sleep() {
    let (busy, slept) = fresh(|| {
        let base = Base::now();
        TASKS.with(|s| {
            let _g = s.cpu.start_cpu();
            let t = Instant::now();
            while t.elapsed() < Duration::from_millis(30) {
                std::hint::black_box(t);
            }
        });
        let busy = base.sum(|s| &s.cpu);
        TASKS.with(|s| {
            let _g = s.cpu.start_cpu();
            sleep(Duration::from_millis(30));
        });
        assert_eq!(base.count(|s| &s.cpu), 2);
        (busy, base.sum(|s| &s.cpu) - busy)
    });
    assert!(busy > slept * 4, "busy loop {busy:?}, sleep {slept:?}");
}

#[test]
fn a_request_guard_records_where_it_responds_and_where_it_drops() {
    let mut guard = fresh(|| {
        let base = Base::now();
        let g = TASKS.start_request(|s| &s.response, |s| &s.duration);
        // Nothing is recorded where it starts.
        assert_eq!(
            (base.count(|s| &s.response), base.count(|s| &s.duration)),
            (0, 0)
        );
        g
    });
    sleep(Duration::from_millis(5));
    let (guard, responded) = fresh(move || {
        let base = Base::now();
        let d = guard.responded();
        assert_eq!(guard.responded(), d, "only the first call records");
        assert_eq!(
            (base.count(|s| &s.response), base.count(|s| &s.duration)),
            (1, 0)
        );
        (guard, base.sum(|s| &s.response))
    });
    assert!(responded >= Duration::from_millis(5));
    sleep(Duration::from_millis(20));
    let duration = fresh(move || {
        let base = Base::now();
        drop(guard);
        assert_eq!(
            (base.count(|s| &s.response), base.count(|s| &s.duration)),
            (0, 1)
        );
        base.sum(|s| &s.duration)
    });
    assert!(duration >= responded + Duration::from_millis(20));
}

#[test]
fn a_request_never_marked_responded_records_its_duration_as_both() {
    let (response, duration) = fresh(|| {
        let base = Base::now();
        let g = TASKS.start_request(|s| &s.response, |s| &s.duration);
        sleep(Duration::from_millis(5));
        drop(g);
        assert_eq!(
            (base.count(|s| &s.response), base.count(|s| &s.duration)),
            (1, 1)
        );
        (base.sum(|s| &s.response), base.sum(|s| &s.duration))
    });
    assert_eq!(response, duration);
    assert!(duration >= Duration::from_millis(5));
}
