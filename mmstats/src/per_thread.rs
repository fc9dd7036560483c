//! Per-thread access from anywhere: a static that gives each thread its own
//! instance of a stats model, opened on first use in that thread.

use std::cell::OnceCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::thread::LocalKey;
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::metrics::Timer;
use crate::options::Builder;
use crate::Stats;

/// A stats model per thread, reachable from any code through a static.
///
/// Declare one with [`per_thread!`](crate::per_thread). Each thread that
/// touches it gets its own instance and file, opened lazily with
/// [`Builder::open_or_private`]: if the file cannot be made, the thread's
/// stats live in private memory and [`PerThread::error`] says why.
///
/// ```no_run
/// use mmstats::{Counter, Stats};
///
/// #[derive(Stats)]
/// struct Jobs {
///     done: Counter,
/// }
///
/// mmstats::per_thread!(static JOBS: Jobs);
///
/// std::thread::spawn(|| JOBS.with(|s| s.done.incr())).join().unwrap();
/// JOBS.with(|s| s.done.incr()); // another thread, another file
/// ```
pub struct PerThread<T: Stats> {
    slot: &'static LocalKey<OnceCell<T>>,
    builder: fn() -> Builder<T>,
    error: OnceLock<Error>,
}

impl<T: Stats> std::fmt::Debug for PerThread<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PerThread")
            .field("model", &std::any::type_name::<T>())
            .field("error", &self.error.get())
            .finish()
    }
}

impl<T: Stats> PerThread<T> {
    /// Used by [`per_thread!`](crate::per_thread); call that instead.
    #[doc(hidden)]
    pub const fn new(slot: &'static LocalKey<OnceCell<T>>, builder: fn() -> Builder<T>) -> Self {
        PerThread {
            slot,
            builder,
            error: OnceLock::new(),
        }
    }

    /// Runs `f` with this thread's instance, opening it on first use.
    ///
    /// Panics if called while the thread is being torn down, after its
    /// instance was dropped (as `thread_local!` does).
    #[inline]
    pub fn with<R>(&'static self, f: impl FnOnce(&T) -> R) -> R {
        self.slot.with(|cell| f(cell.get_or_init(|| self.open())))
    }

    #[cold]
    fn open(&self) -> T {
        let (stats, err) = (self.builder)().open_or_private();
        if let Some(err) = err {
            // The first failure is kept; later ones are almost always the same.
            let _ = self.error.set(err);
        }
        stats
    }

    /// Why some thread's instance fell back to private memory, if one did.
    /// Set once, by the first failure.
    pub fn error(&'static self) -> Option<&'static Error> {
        self.error.get()
    }

    /// Starts timing with a guard that may move between threads (across
    /// `.await` in a multi-threaded runtime). When dropped, it records into
    /// the `timer` of the instance of whichever thread drops it.
    pub fn start(&'static self, timer: fn(&T) -> &Timer) -> PerThreadTimerGuard<T> {
        PerThreadTimerGuard {
            stats: self,
            timer,
            start: Instant::now(),
        }
    }

    /// Wraps `future` to time it: `wall` gets the time from first poll to
    /// completion, `busy` the time spent inside `poll`. Their difference is
    /// time spent waiting. Both are recorded on the thread that completes
    /// the future.
    pub fn instrument<F: Future>(
        &'static self,
        future: F,
        wall: fn(&T) -> &Timer,
        busy: fn(&T) -> &Timer,
    ) -> Instrumented<F, T> {
        Instrumented {
            future,
            stats: self,
            wall,
            busy,
            first_poll: None,
            busy_time: Duration::ZERO,
        }
    }
}

/// Declares a [`PerThread`] static.
///
/// ```no_run
/// # use mmstats::{Counter, Stats};
/// # #[derive(Stats)] struct Web { ok: Counter }
/// mmstats::per_thread!(static WEB: Web);
/// // With builder options:
/// mmstats::per_thread!(static WEB2: Web = || Web::builder().prefix("front."));
/// ```
#[macro_export]
macro_rules! per_thread {
    ($(#[$attr:meta])* $vis:vis static $name:ident : $ty:ty) => {
        $crate::per_thread!($(#[$attr])* $vis static $name: $ty = <$ty as $crate::Stats>::builder);
    };
    ($(#[$attr:meta])* $vis:vis static $name:ident : $ty:ty = $builder:expr) => {
        $(#[$attr])*
        $vis static $name: $crate::PerThread<$ty> = {
            ::std::thread_local! {
                static SLOT: ::std::cell::OnceCell<$ty> = const { ::std::cell::OnceCell::new() };
            }
            $crate::PerThread::new(&SLOT, $builder)
        };
    };
}

/// A timer guard that may cross threads; see [`PerThread::start`].
#[must_use = "the time is recorded when the guard is dropped"]
pub struct PerThreadTimerGuard<T: Stats> {
    stats: &'static PerThread<T>,
    timer: fn(&T) -> &Timer,
    start: Instant,
}

impl<T: Stats> PerThreadTimerGuard<T> {
    /// Time elapsed so far.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }
}

impl<T: Stats> Drop for PerThreadTimerGuard<T> {
    fn drop(&mut self) {
        let elapsed = self.start.elapsed();
        let (stats, timer) = (self.stats, self.timer);
        // `try_with`: a guard dropped while its thread is torn down loses
        // its sample rather than panicking in a destructor.
        let _ = stats
            .slot
            .try_with(|cell| timer(cell.get_or_init(|| stats.open())).record(elapsed));
    }
}

impl<T: Stats> std::fmt::Debug for PerThreadTimerGuard<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PerThreadTimerGuard")
            .field("elapsed", &self.start.elapsed())
            .finish()
    }
}

pin_project_lite::pin_project! {
    /// A future timed by [`PerThread::instrument`].
    #[must_use = "futures do nothing unless polled"]
    pub struct Instrumented<F, T: Stats> {
        #[pin]
        future: F,
        stats: &'static PerThread<T>,
        wall: fn(&T) -> &Timer,
        busy: fn(&T) -> &Timer,
        first_poll: Option<Instant>,
        busy_time: Duration,
    }
}

impl<F, T: Stats> std::fmt::Debug for Instrumented<F, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instrumented")
            .field("model", &std::any::type_name::<T>())
            .field("busy_time", &self.busy_time)
            .finish_non_exhaustive()
    }
}

impl<F: Future, T: Stats> Future for Instrumented<F, T> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let start = Instant::now();
        let first = *this.first_poll.get_or_insert(start);
        let out = this.future.poll(cx);
        let end = Instant::now();
        *this.busy_time += end - start;
        if out.is_ready() {
            let (wall, busy, busy_time) = (*this.wall, *this.busy, *this.busy_time);
            this.stats.with(|s| {
                wall(s).record(end - first);
                busy(s).record(busy_time);
            });
        }
        out
    }
}
