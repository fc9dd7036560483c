//! Telling waiting from being ready: a waker wrapper that notes when a
//! future is woken, so the time between two polls splits into the time
//! spent waiting for the awaited thing (*external*) and the time spent
//! ready but not yet polled (*scheduled*, because the executor was busy).
//!
//! [`Instrumented`](crate::Instrumented) uses it for
//! [`external`](crate::Instrumented::external) and
//! [`scheduled`](crate::Instrumented::scheduled); it is public so that any
//! future adapter (a tracing layer's spans over futures, say) can split its
//! idle time the same way.
//!
//! # How it works
//!
//! A [`WakeClock`] is made once per future and holds one `Arc`: the only
//! allocation, ever. Each poll hands the inner future the clock's own
//! [`Waker`] instead of the executor's; the executor's waker is kept (a
//! clone only when it changed, as `Waker::will_wake` tells) and woken in
//! turn. On a wake the clock stores the time, unless a wake since the last
//! poll already did: the first wake counts. At the start of the next poll
//! the gap since the end of the previous one splits at that instant.
//!
//! # Compared with tokio-metrics
//!
//! `tokio-metrics`' task monitors wrap the waker the same way (an `Arc`
//! per instrumented task holding the wake instant, the first wake winning,
//! the executor's waker kept in an `AtomicWaker`). What differs:
//!
//! - They add every idle, scheduled and poll duration into totals shared by
//!   every task of a monitor, with sequentially consistent `fetch_add`s from
//!   every worker thread, and report totals, counts and means (plus counts
//!   over a "long delay" and "slow poll" threshold) to an in-process
//!   reader. Here a future sums its own waits and records one sample per
//!   future into a per-thread histogram of the thread that completes it,
//!   with relaxed single-writer stores, so other processes read
//!   percentiles, merged over threads and processes, without the
//!   application's help.
//! - A poll that comes without a wake (a `join!` or `select!` polling all
//!   its branches when one was woken) is counted by them as neither idle
//!   nor scheduled; here that whole gap is external time, so for a
//!   finished future `wall = busy + external + scheduled` exactly.
//! - A wake that arrives while the future is being polled is clamped to
//!   the end of that poll here, so the wait after it is all scheduled
//!   delay; they count the scheduled time from the wake itself, which
//!   then overlaps the poll.
//! - They also time the first poll's delay after `instrument` and split
//!   polls and delays at a threshold (50 µs by default for both); here
//!   the wall time starts at the first poll, and only slow polls have a
//!   threshold (1 ms by default), since the histograms give the rest.
//! - Their clock is tokio's `Instant` (pausable in tests); this one is
//!   `std::time::Instant`, so it works under any executor.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Wake, Waker};
use std::time::{Duration, Instant};

/// How the time between the end of one poll and the start of the next
/// splits; see [`WakeClock::poll_start`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Gap {
    /// From the end of the previous poll to the first wake since it, or to
    /// this poll if no wake came: the time spent waiting for something
    /// outside the future.
    pub external: Duration,
    /// From that wake to the start of this poll: the time the future was
    /// ready but the executor was busy elsewhere.
    pub scheduled: Duration,
    /// Whether a wake came (if not, `scheduled` is zero).
    pub woken: bool,
    /// When the first wake since the previous poll came, as it was noted:
    /// not moved to the end of that poll when it came during it. For an
    /// adapter that splits gaps of its own (a span's, from its exit inside
    /// the poll), which must clamp it into them itself.
    pub woke_at: Option<Instant>,
}

/// Notes when a future is woken; see the [module docs](self).
///
/// Use it from a future adapter's `poll`:
///
/// ```
/// use std::future::Future;
/// use std::pin::Pin;
/// use std::task::{Context, Poll};
/// use std::time::{Duration, Instant};
/// use mmstats::WakeClock;
///
/// struct Split<F> {
///     inner: Pin<Box<F>>,
///     clock: WakeClock,
///     external: Duration,
///     scheduled: Duration,
/// }
///
/// impl<F: Future> Future for Split<F> {
///     type Output = F::Output;
///     fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
///         let this = &mut *self;
///         if let Some(gap) = this.clock.poll_start(Instant::now(), cx.waker()) {
///             this.external += gap.external;
///             this.scheduled += gap.scheduled;
///         }
///         let out = this.inner.as_mut().poll(&mut Context::from_waker(this.clock.waker()));
///         this.clock.poll_end(Instant::now());
///         out
///     }
/// }
/// ```
pub struct WakeClock {
    shared: Arc<Shared>,
    /// A waker over `shared`, made once: polling through it costs no
    /// reference count.
    waker: Waker,
    /// When the previous poll ended; `None` before the first poll.
    last_end: Option<Instant>,
}

/// What the clock's waker reaches, from whichever thread wakes it.
struct Shared {
    origin: Instant,
    /// Nanoseconds from `origin` to the first wake since the last poll
    /// started, plus one; zero while there was none.
    woke_at: AtomicU64,
    /// The executor's waker from the latest poll, woken by ours.
    inner: Mutex<Option<Waker>>,
}

impl Wake for Shared {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let ns = nanos(self.origin.elapsed()).saturating_add(1);
        // Relaxed: the word is the only data it carries. The store is
        // sequenced before the executor's wake below, and the executor's
        // own hand-off (its queue) orders that before the poll that reads
        // it. A wake racing a poll is counted at this poll or the next;
        // either is right. A failed exchange means an earlier wake counts.
        let _ = self
            .woke_at
            .compare_exchange(0, ns, Ordering::Relaxed, Ordering::Relaxed);
        // Clone out, then wake without the lock held: an executor that
        // polls from inside `wake` must not find the lock taken.
        let inner = self.lock().clone();
        if let Some(w) = inner {
            w.wake();
        }
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Waker>> {
        // A panic while holding the lock leaves a valid `Option<Waker>`.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for WakeClock {
    fn default() -> Self {
        WakeClock::new()
    }
}

impl WakeClock {
    /// A clock for one future. Allocates one `Arc`; nothing else it does
    /// allocates.
    pub fn new() -> WakeClock {
        let shared = Arc::new(Shared {
            origin: Instant::now(),
            woke_at: AtomicU64::new(0),
            inner: Mutex::new(None),
        });
        WakeClock {
            waker: Waker::from(Arc::clone(&shared)),
            shared,
            last_end: None,
        }
    }

    /// Call at the start of each poll, `now` being its start, with the
    /// executor's waker (from the `Context` the poll got). Returns how the
    /// time since the previous poll ended splits, or `None` at the first
    /// poll.
    ///
    /// Then poll the inner future with [`WakeClock::waker`], and call
    /// [`WakeClock::poll_end`] after.
    pub fn poll_start(&mut self, now: Instant, executor: &Waker) -> Option<Gap> {
        {
            let mut inner = self.shared.lock();
            if !inner.as_ref().is_some_and(|w| w.will_wake(executor)) {
                *inner = Some(executor.clone());
            }
        }
        // Relaxed: see `wake_by_ref`. Taking the value re-arms the clock:
        // the first wake after this poll starts counts for the next gap.
        let woke = self.shared.woke_at.swap(0, Ordering::Relaxed);
        let end = self.last_end?;
        let now = now.max(end);
        if woke == 0 {
            return Some(Gap {
                external: now - end,
                scheduled: Duration::ZERO,
                woken: false,
                woke_at: None,
            });
        }
        let raw = self.shared.origin + Duration::from_nanos(woke - 1);
        // A wake during the previous poll (before `end`) could not get the
        // future polled any sooner: all the wait after it is scheduled.
        let woke = raw.clamp(end, now);
        Some(Gap {
            external: woke - end,
            scheduled: now - woke,
            woken: true,
            woke_at: Some(raw),
        })
    }

    /// The waker to poll the inner future with: it notes the wake, then
    /// wakes the executor's.
    pub fn waker(&self) -> &Waker {
        &self.waker
    }

    /// Call at the end of each poll, `now` being its end.
    pub fn poll_end(&mut self, now: Instant) {
        self.last_end = Some(now);
    }
}

impl std::fmt::Debug for WakeClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Relaxed: a snapshot for debugging.
        let woken = self.shared.woke_at.load(Ordering::Relaxed) != 0;
        f.debug_struct("WakeClock")
            .field("woken", &woken)
            .field("polled", &self.last_end.is_some())
            .finish()
    }
}

/// `d` in nanoseconds, saturating (64-bit arithmetic, not `as_nanos`'s u128).
fn nanos(d: Duration) -> u64 {
    d.as_secs()
        .saturating_mul(1_000_000_000)
        .saturating_add(d.subsec_nanos().into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::thread::sleep;

    /// An executor's waker that counts its wakes.
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            // Relaxed: a counter read after the waking thread is joined.
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn counting() -> (Arc<Count>, Waker) {
        let c = Arc::new(Count(AtomicUsize::new(0)));
        (Arc::clone(&c), Waker::from(c))
    }

    #[test]
    fn the_gap_splits_at_the_first_wake() {
        let (count, executor) = counting();
        let mut clock = WakeClock::new();
        assert_eq!(clock.poll_start(Instant::now(), &executor), None);
        let end = Instant::now();
        clock.poll_end(end);

        sleep(Duration::from_millis(30));
        let w = clock.waker().clone();
        let before = Instant::now();
        let first_done = std::thread::spawn(move || {
            w.wake_by_ref();
            let first_done = Instant::now();
            sleep(Duration::from_millis(5));
            w.wake(); // a second wake does not move the instant
            first_done
        })
        .join()
        .unwrap();
        sleep(Duration::from_millis(20));
        // Relaxed: the waking thread was joined.
        assert_eq!(
            count.0.load(Ordering::Relaxed),
            2,
            "both wakes reach the executor"
        );

        let now = Instant::now();
        let gap = clock.poll_start(now, &executor).unwrap();
        assert!(gap.woken);
        let woke = gap.woke_at.unwrap();
        // The first wake's instant, not the second's, whatever the
        // machine's load made of the sleeps.
        assert!(before <= woke && woke <= first_done, "{gap:?}");
        assert_eq!(gap.external, woke - end, "{gap:?}");
        assert_eq!(gap.scheduled, now - woke, "{gap:?}");
        assert!(gap.external >= Duration::from_millis(30), "{gap:?}");
        assert!(gap.scheduled >= Duration::from_millis(25), "{gap:?}");
    }

    #[test]
    fn without_a_wake_the_gap_is_external() {
        let (_, executor) = counting();
        let mut clock = WakeClock::new();
        clock.poll_start(Instant::now(), &executor);
        clock.poll_end(Instant::now());
        sleep(Duration::from_millis(10));
        let gap = clock.poll_start(Instant::now(), &executor).unwrap();
        assert!(!gap.woken);
        assert_eq!(gap.scheduled, Duration::ZERO);
        assert!(gap.external >= Duration::from_millis(10), "{gap:?}");
    }

    #[test]
    fn a_wake_during_the_poll_makes_the_wait_scheduled() {
        let (_, executor) = counting();
        let mut clock = WakeClock::new();
        clock.poll_start(Instant::now(), &executor);
        clock.waker().wake_by_ref(); // woken while being polled
        clock.poll_end(Instant::now());
        sleep(Duration::from_millis(10));
        let gap = clock.poll_start(Instant::now(), &executor).unwrap();
        assert!(gap.woken);
        assert_eq!(gap.external, Duration::ZERO);
        assert!(gap.scheduled >= Duration::from_millis(10), "{gap:?}");
    }

    #[test]
    fn the_latest_executor_waker_is_woken() {
        let (first, a) = counting();
        let (second, b) = counting();
        let mut clock = WakeClock::new();
        clock.poll_start(Instant::now(), &a);
        clock.poll_end(Instant::now());
        clock.poll_start(Instant::now(), &b);
        clock.poll_end(Instant::now());
        clock.waker().wake_by_ref();
        // Relaxed: same thread.
        assert_eq!(first.0.load(Ordering::Relaxed), 0);
        assert_eq!(second.0.load(Ordering::Relaxed), 1);
    }
}
