//! [`TimeWaits`]: a future wrapper that tells the layer when its task was
//! woken, so that a span's idle time splits into external time (waiting
//! for what it awaited) and scheduled delay (ready, waiting for a thread).

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use mmstats::WakeClock;

/// What the layer learns of the poll a [`WaitTimed`] is running on this
/// thread (its second or later: a first poll ends no suspension).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Resumed {
    /// When this poll started: a span whose last exit came before it was
    /// suspended in between.
    pub(crate) start: Instant,
    /// The first wake since the previous poll, as noted (`None`: polled
    /// without a wake, as `join!` polls every branch).
    pub(crate) woke_at: Option<Instant>,
}

thread_local! {
    static RESUMED: Cell<Option<Resumed>> = const { Cell::new(None) };
}

/// The poll of a [`WaitTimed`] running on this thread, if one is and it is
/// not its first (read by the layer when a span is entered).
pub(crate) fn resumed() -> Option<Resumed> {
    RESUMED.try_with(Cell::get).ok().flatten()
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
///   the whole gap scheduled delay; a poll that came without a wake (as
///   `join!` polls every branch) makes it all external time.
///
/// Only gaps that span a suspension are split: from an exit in one poll
/// to an entry in a later one. A span created, exited and entered again
/// within one poll keeps that time as idle only.
///
/// Both are summed per span and recorded when it closes, next to its busy
/// and idle times, for spans that had at least one such gap. Put
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
        let start = Instant::now();
        // The raw wake, not the clock's split: a span's own gap starts at
        // its exit, inside the previous poll, and the layer clamps the
        // wake into that gap itself.
        let resumed = this.clock.poll_start(start, cx.waker()).map(|gap| Resumed {
            start,
            woke_at: gap.woke_at,
        });
        let outer = RESUMED.with(|r| r.replace(resumed));
        let out = this
            .future
            .poll(&mut Context::from_waker(this.clock.waker()));
        this.clock.poll_end(Instant::now());
        RESUMED.with(|r| r.set(outer));
        out
    }
}
