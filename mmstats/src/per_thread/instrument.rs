//! Futures timed as they run: wall and busy time always, and, when asked
//! for, the split of the waiting into external time and scheduled delay
//! (through a [`WakeClock`]), slow polls and thread CPU time.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::PerThread;
use crate::metrics::{Counter, Timer};
use crate::sys::thread_cpu_time;
use crate::wake_clock::WakeClock;
use crate::Stats;

/// The threshold over which [`Instrumented::slow_polls`] counts a poll
/// unless [`Instrumented::slow_threshold`] sets another: 1 ms.
pub const DEFAULT_SLOW_POLL_THRESHOLD: Duration = Duration::from_millis(1);

/// Picks a timer of the model `T`.
type TimerOf<T> = fn(&T) -> &Timer;
/// Picks a counter of the model `T`.
type CounterOf<T> = fn(&T) -> &Counter;

/// The opt-in measures of an [`Instrumented`], chosen by its builder
/// methods.
struct Measures<T> {
    external: Option<TimerOf<T>>,
    scheduled: Option<TimerOf<T>>,
    slow: Option<(CounterOf<T>, TimerOf<T>)>,
    slow_threshold: Duration,
    cpu: Option<TimerOf<T>>,
}

impl<T> Measures<T> {
    fn wants_clock(&self) -> bool {
        self.external.is_some() || self.scheduled.is_some()
    }
}

/// Sums over the future's polls so far, recorded when it completes.
#[derive(Default, Debug)]
struct Sums {
    busy: Duration,
    external: Duration,
    scheduled: Duration,
    cpu: Duration,
}

pin_project_lite::pin_project! {
    /// A future timed by [`PerThread::instrument`].
    ///
    /// Always recorded, on the thread that completes the future: `wall`,
    /// from the first poll to completion, and `busy`, the time inside
    /// `poll`. The builder methods add, each into a field of the model
    /// chosen by a function like `wall` and `busy`:
    ///
    /// - [`external`](Self::external): time waiting for what the future
    ///   awaits, from the end of a poll that returned `Pending` to the
    ///   first wake after it;
    /// - [`scheduled`](Self::scheduled): time from that wake to the next
    ///   poll, when the future was ready but the executor was busy
    ///   elsewhere (on a single-threaded runtime, some other task's long
    ///   poll);
    /// - [`slow_polls`](Self::slow_polls): each poll that takes
    ///   [`slow_threshold`](Self::slow_threshold) (default
    ///   [`DEFAULT_SLOW_POLL_THRESHOLD`], 1 ms) or longer is counted and
    ///   timed, on the thread that polled;
    /// - [`cpu`](Self::cpu): the thread CPU time used inside `poll`, each
    ///   poll measured on its own thread.
    ///
    /// `external`, `busy`, `scheduled` and `cpu` are sums over the future's
    /// polls, one sample per completed future, so their percentiles compare
    /// with `wall`'s: for a completed future, `wall = busy + external +
    /// scheduled` (a poll that came without a wake, as `join!` and
    /// `select!` poll every branch when one is woken, counts its whole gap
    /// as external). A future dropped before completing records only its
    /// slow polls.
    ///
    /// ```no_run
    /// use mmstats::{Counter, Stats, Timer};
    ///
    /// #[derive(Stats)]
    /// struct Handler {
    ///     wall: Timer,
    ///     busy: Timer,
    ///     external: Timer,
    ///     scheduled: Timer,
    ///     slow_polls: Counter,
    ///     slow_poll_time: Timer,
    /// }
    ///
    /// mmstats::per_thread!(static HANDLER: Handler);
    ///
    /// # async fn handle() {}
    /// # async fn serve() {
    /// HANDLER
    ///     .instrument(handle(), |s| &s.wall, |s| &s.busy)
    ///     .external(|s| &s.external)
    ///     .scheduled(|s| &s.scheduled)
    ///     .slow_polls(|s| &s.slow_polls, |s| &s.slow_poll_time)
    ///     .await;
    /// # }
    /// ```
    ///
    /// # Cost
    ///
    /// Without any builder method, two `Instant::now()` per poll, as
    /// before. `slow_polls` adds a comparison per poll and two stores per
    /// slow poll. `external` or `scheduled` (either or both) make one
    /// [`WakeClock`] at the first poll, the future's only allocation (one
    /// `Arc`), and per poll an uncontended lock to keep the executor's
    /// waker and an atomic swap; the wrapper waker is used only by futures
    /// that ask for it. `cpu` reads the thread's CPU clock twice per poll,
    /// which may be a system call: opt-in only.
    #[must_use = "futures do nothing unless polled"]
    pub struct Instrumented<F, T: Stats> {
        #[pin]
        future: F,
        stats: &'static PerThread<T>,
        wall: fn(&T) -> &Timer,
        busy: fn(&T) -> &Timer,
        measures: Measures<T>,
        first_poll: Option<Instant>,
        clock: Option<WakeClock>,
        sums: Sums,
    }
}

impl<F, T: Stats> Instrumented<F, T> {
    pub(super) fn new(
        future: F,
        stats: &'static PerThread<T>,
        wall: fn(&T) -> &Timer,
        busy: fn(&T) -> &Timer,
    ) -> Self {
        Instrumented {
            future,
            stats,
            wall,
            busy,
            measures: Measures {
                external: None,
                scheduled: None,
                slow: None,
                slow_threshold: DEFAULT_SLOW_POLL_THRESHOLD,
                cpu: None,
            },
            first_poll: None,
            clock: None,
            sums: Sums::default(),
        }
    }

    /// Also records the external time: the sum, over the future's waits,
    /// of the time from the end of a poll that returned `Pending` to the
    /// first wake after it.
    pub fn external(mut self, timer: fn(&T) -> &Timer) -> Self {
        self.measures.external = Some(timer);
        self
    }

    /// Also records the scheduled delay: the sum, over the future's waits,
    /// of the time from a wake to the poll after it.
    pub fn scheduled(mut self, timer: fn(&T) -> &Timer) -> Self {
        self.measures.scheduled = Some(timer);
        self
    }

    /// Also counts the polls that take the slow threshold or longer into
    /// `count`, and records each one's duration into `time`, on the thread
    /// that polled.
    pub fn slow_polls(mut self, count: fn(&T) -> &Counter, time: fn(&T) -> &Timer) -> Self {
        self.measures.slow = Some((count, time));
        self
    }

    /// Sets the threshold of [`slow_polls`](Self::slow_polls) (default
    /// [`DEFAULT_SLOW_POLL_THRESHOLD`], 1 ms).
    pub fn slow_threshold(mut self, threshold: Duration) -> Self {
        self.measures.slow_threshold = threshold;
        self
    }

    /// Also records the thread CPU time used inside `poll`, summed over
    /// polls (each measured on the thread that runs it) with
    /// `CLOCK_THREAD_CPUTIME_ID`. Two clock reads per poll, which may be
    /// system calls (see [`crate::thread_cpu_time`]).
    pub fn cpu(mut self, timer: fn(&T) -> &Timer) -> Self {
        self.measures.cpu = Some(timer);
        self
    }
}

impl<F, T: Stats> std::fmt::Debug for Instrumented<F, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instrumented")
            .field("model", &std::any::type_name::<T>())
            .field("sums", &self.sums)
            .field("slow_threshold", &self.measures.slow_threshold)
            .finish_non_exhaustive()
    }
}

impl<F: Future, T: Stats> Future for Instrumented<F, T> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let m = &*this.measures;
        let sums = this.sums;
        let start = Instant::now();
        let first = *this.first_poll.get_or_insert(start);
        let cpu_start = m.cpu.map(|_| thread_cpu_time());
        let out = if m.wants_clock() {
            let clock = this.clock.get_or_insert_with(WakeClock::new);
            if let Some(gap) = clock.poll_start(start, cx.waker()) {
                sums.external += gap.external;
                sums.scheduled += gap.scheduled;
            }
            this.future.poll(&mut Context::from_waker(clock.waker()))
        } else {
            this.future.poll(cx)
        };
        let end = Instant::now();
        if let Some(clock) = this.clock {
            clock.poll_end(end);
        }
        if let Some(cpu_start) = cpu_start {
            sums.cpu += thread_cpu_time().saturating_sub(cpu_start);
        }
        let took = end - start;
        sums.busy += took;
        let slow = m.slow.filter(|_| took >= m.slow_threshold);
        if slow.is_none() && out.is_pending() {
            return out;
        }
        let (wall, busy) = (*this.wall, *this.busy);
        this.stats.with(|s| {
            if let Some((count, time)) = slow {
                count(s).incr();
                time(s).record(took);
            }
            if out.is_ready() {
                wall(s).record(end - first);
                busy(s).record(sums.busy);
                if let Some(t) = m.external {
                    t(s).record(sums.external);
                }
                if let Some(t) = m.scheduled {
                    t(s).record(sums.scheduled);
                }
                if let Some(t) = m.cpu {
                    t(s).record(sums.cpu);
                }
            }
        });
        out
    }
}
