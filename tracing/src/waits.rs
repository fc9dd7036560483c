//! [`TimeWaits`]: a future wrapper that tells the layer when its task was
//! woken, so that a span's idle time splits into external time (waiting
//! for what it awaited) and scheduled delay (ready, waiting for a thread).

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use mmstats::WakeClock;

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

pin_project_lite::pin_project! {
    /// A future that tells the layer when its task is woken; see
    /// [`TimeWaits`].
    #[must_use = "futures do nothing unless polled"]
    #[derive(Debug)]
    pub struct WaitTimed<F> {
        #[pin]
        future: F,
        clock: WakeClock,
    }
}

/// Splits the idle time of the spans entered inside a future into
/// **external time** and **scheduled delay**.
///
/// `future.time_waits()` polls `future` with a waker of its own that notes
/// when the task is woken. Each time a span is entered during such a poll,
/// after an exit, the gap since the exit is split at that wake:
///
/// - `span.external{path=<path>}`: from the exit (the `Pending` of an await) to
///   the wake: time waiting for what was awaited (I/O, a timer, a lock);
/// - `span.scheduled{path=<path>}`: from the wake to the entry: time the task was
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
/// Cost: one allocation per wrapped future (its [`mmstats::WakeClock`]),
/// and per poll an uncontended lock of the clock's own mutex to keep the
/// task's waker.
/// The wake time is of the **task**: a span inside a `join` of futures is
/// split at the wake of the whole task, which may have been for a sibling.
pub trait TimeWaits: Future + Sized {
    /// Wraps `self`; see [`TimeWaits`].
    fn time_waits(self) -> WaitTimed<Self> {
        WaitTimed {
            future: self,
            clock: WakeClock::new(),
        }
    }
}

impl<F: Future> TimeWaits for F {}

impl<F: Future> Future for WaitTimed<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let now = Instant::now();
        // The clock clamps the wake into the gap since its previous poll;
        // the layer clamps it again into each span's own gap.
        let woke = this
            .clock
            .poll_start(now, cx.waker())
            .filter(|gap| gap.woken)
            .map(|gap| now - gap.scheduled);
        let outer = WOKE_AT.with(|w| w.replace(woke));
        let out = this
            .future
            .poll(&mut Context::from_waker(this.clock.waker()));
        this.clock.poll_end(Instant::now());
        WOKE_AT.with(|w| w.set(outer));
        out
    }
}
