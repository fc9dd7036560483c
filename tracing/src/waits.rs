//! [`TimeWaits`]: a future wrapper that tells the layer when its task was
//! woken, so that a span's idle time splits into external time (waiting
//! for what it awaited) and scheduled delay (ready, waiting for a thread).

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

thread_local! {
    /// While a [`WaitTimed`] polls its future: when that task was last
    /// woken, if it was since its previous poll.
    static WOKE_AT: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// The wake time of the task being polled on this thread, if a
/// [`WaitTimed`] knows it (read by the layer when a span is entered).
pub(crate) fn woke_at() -> Option<Instant> {
    WOKE_AT.try_with(Cell::get).ok().flatten()
}

/// The origin of wake times, so that one fits in an atomic `u64`.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// The waker a [`WaitTimed`] polls its future with: notes the first wake
/// since the last poll, then wakes the task's own waker.
#[derive(Debug)]
struct Clock {
    /// Nanoseconds since [`epoch`] plus one of the first wake since the
    /// last poll; 0 for none.
    woke: AtomicU64,
    /// The waker of the task, as of its last poll.
    task: Mutex<Option<Waker>>,
}

impl Wake for Clock {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let now = epoch().elapsed().as_nanos() as u64 + 1;
        // Relaxed: the time is a value of its own; the wake itself is
        // handed over by the task's waker, under the mutex below. Failing
        // means an earlier wake is already noted, and the first counts.
        let _ = self
            .woke
            .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(w) = task {
            w.wake();
        }
    }
}

pin_project_lite::pin_project! {
    /// A future that tells the layer when its task is woken; see
    /// [`TimeWaits`].
    #[must_use = "futures do nothing unless polled"]
    #[derive(Debug)]
    pub struct WaitTimed<F> {
        #[pin]
        future: F,
        clock: Option<(Arc<Clock>, Waker)>,
    }
}

/// Splits the idle time of the spans entered inside a future into
/// **external time** and **scheduled delay**.
///
/// `future.time_waits()` polls `future` with a waker of its own that notes
/// when the task is woken. Each time a span is entered during such a poll,
/// after an exit, the gap since the exit is split at that wake:
///
/// - `span.external/<path>`: from the exit (the `Pending` of an await) to
///   the wake: time waiting for what was awaited (I/O, a timer, a lock);
/// - `span.scheduled/<path>`: from the wake to the entry: time the task was
///   ready but not polled, because the executor's threads were busy
///   elsewhere. A wake during the poll itself (a task that yields) makes
///   the whole gap scheduled delay.
///
/// Both are summed per span and recorded when it closes, next to its busy
/// and idle times, for spans that were woken at least once. Put
/// `time_waits` outermost, around the future whose spans you want split:
/// `handler().instrument(span).time_waits()`, or around a
/// `#[tracing::instrument]` async fn's future.
///
/// Cost: one allocation per wrapped future (its waker, at the first poll),
/// and per poll a lock of that waker's own mutex to keep the task's waker.
/// The wake time is of the **task**: a span inside a `join` of futures is
/// split at the wake of the whole task, which may have been for a sibling.
pub trait TimeWaits: Future + Sized {
    /// Wraps `self`; see [`TimeWaits`].
    fn time_waits(self) -> WaitTimed<Self> {
        WaitTimed {
            future: self,
            clock: None,
        }
    }
}

impl<F: Future> TimeWaits for F {}

impl<F: Future> Future for WaitTimed<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let (clock, waker) = this.clock.get_or_insert_with(|| {
            let clock = Arc::new(Clock {
                woke: AtomicU64::new(0),
                task: Mutex::new(None),
            });
            let waker = Waker::from(Arc::clone(&clock));
            (clock, waker)
        });
        {
            let mut task = clock.task.lock().unwrap_or_else(|e| e.into_inner());
            if !task.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *task = Some(cx.waker().clone());
            }
        }
        // Relaxed: see `Clock::wake_by_ref`; taking it resets it, so the
        // next wake is the first after this poll.
        let woke = match clock.woke.swap(0, Ordering::Relaxed) {
            0 => None,
            n => Some(epoch() + Duration::from_nanos(n - 1)),
        };
        let outer = WOKE_AT.with(|w| w.replace(woke));
        let out = this.future.poll(&mut Context::from_waker(waker));
        WOKE_AT.with(|w| w.set(outer));
        out
    }
}
