//! Per-thread access from anywhere: a static that gives each thread its own
//! instance of a stats model, opened on first use in that thread, with
//! timer guards that may cross threads and futures timed as they run
//! (`instrument.rs`).

use std::cell::OnceCell;
use std::future::Future;
use std::sync::OnceLock;
use std::thread::LocalKey;
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::metrics::Timer;
use crate::options::Builder;
use crate::Stats;

mod instrument;

pub use instrument::{Instrumented, DEFAULT_SLOW_POLL_THRESHOLD};

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

    /// Starts timing a request with a guard that may move between threads,
    /// like [`PerThread::start`], for handlers that finish work after the
    /// response is sent: [`RequestGuard::responded`] records the `response`
    /// time, and dropping the guard records the `duration`, each on the
    /// thread that does it. A guard dropped without `responded` having been
    /// called records its duration as the response time too (the response
    /// went out when the handler finished, or never: either way nothing
    /// earlier can be claimed), so both timers count every request.
    ///
    /// ```no_run
    /// # use mmstats::{Stats, Timer};
    /// # #[derive(Stats)] struct Web { response: Timer, duration: Timer }
    /// # mmstats::per_thread!(static WEB: Web);
    /// # async fn send_response() {}
    /// # async fn write_audit_log() {}
    /// async fn handle() {
    ///     let mut req = WEB.start_request(|s| &s.response, |s| &s.duration);
    ///     send_response().await;
    ///     req.responded();
    ///     write_audit_log().await;
    /// } // `duration` recorded here
    /// ```
    pub fn start_request(
        &'static self,
        response: fn(&T) -> &Timer,
        duration: fn(&T) -> &Timer,
    ) -> RequestGuard<T> {
        RequestGuard {
            stats: self,
            response,
            duration,
            start: Instant::now(),
            responded: None,
        }
    }

    /// Wraps `future` to time it: `wall` gets the time from first poll to
    /// completion, `busy` the time spent inside `poll`. Their difference is
    /// time spent waiting. Both are recorded on the thread that completes
    /// the future; a future dropped before it completes records nothing.
    ///
    /// The returned [`Instrumented`] has builder methods for the other
    /// async measures, each opt-in: [`external`](Instrumented::external)
    /// and [`scheduled`](Instrumented::scheduled) split the waiting,
    /// [`slow_polls`](Instrumented::slow_polls) counts and times long polls,
    /// [`cpu`](Instrumented::cpu) adds the thread CPU time.
    pub fn instrument<F: Future>(
        &'static self,
        future: F,
        wall: fn(&T) -> &Timer,
        busy: fn(&T) -> &Timer,
    ) -> Instrumented<F, T> {
        Instrumented::new(future, self, wall, busy)
    }

    /// Records `d` into `timer` of the calling thread's instance; nothing
    /// if the thread is being torn down (a guard dropped in a thread-local
    /// destructor loses its sample rather than panicking).
    fn record_here(&'static self, timer: fn(&T) -> &Timer, d: Duration) {
        let _ = self
            .slot
            .try_with(|cell| timer(cell.get_or_init(|| self.open())).record(d));
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
        self.stats.record_here(self.timer, self.start.elapsed());
    }
}

impl<T: Stats> std::fmt::Debug for PerThreadTimerGuard<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PerThreadTimerGuard")
            .field("elapsed", &self.start.elapsed())
            .finish()
    }
}

/// Times a request's response and duration; see [`PerThread::start_request`].
#[must_use = "the duration is recorded when the guard is dropped"]
pub struct RequestGuard<T: Stats> {
    stats: &'static PerThread<T>,
    response: fn(&T) -> &Timer,
    duration: fn(&T) -> &Timer,
    start: Instant,
    /// The response time, once recorded.
    responded: Option<Duration>,
}

impl<T: Stats> RequestGuard<T> {
    /// Marks the response sent: records the time since the guard was made
    /// into the response timer of the calling thread, and returns it. Only
    /// the first call records; later ones return the first one's time.
    pub fn responded(&mut self) -> Duration {
        if let Some(d) = self.responded {
            return d;
        }
        let d = self.start.elapsed();
        self.stats.record_here(self.response, d);
        self.responded = Some(d);
        d
    }

    /// Time elapsed so far.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }
}

impl<T: Stats> Drop for RequestGuard<T> {
    fn drop(&mut self) {
        let d = self.start.elapsed();
        if self.responded.is_none() {
            self.stats.record_here(self.response, d);
        }
        self.stats.record_here(self.duration, d);
    }
}

impl<T: Stats> std::fmt::Debug for RequestGuard<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestGuard")
            .field("elapsed", &self.start.elapsed())
            .field("responded", &self.responded)
            .finish()
    }
}
