//! Polls one instrumented future N times, so a tracer can check that the
//! async measures make no system calls per poll: the run with a large N
//! must make exactly as many as the run with a small one.
//!
//! ```text
//! MMSTATS_DIR=/tmp/stats cargo run --example poll_loop -- 1000000
//! ```
//!
//! The future wakes itself through the waker it is given and returns
//! `Pending` N times, then is ready; it runs in `PerThread::instrument`
//! with `external`, `scheduled` and `slow_polls` on (the waker wrapper's
//! whole path: its lock, its clock, its wake). `--cpu` adds `cpu`, whose
//! clock reads are system calls: a control run that shows the tracer sees
//! the loop.
//!
//! Prints the number of polls made (N + 1). The stats file must be a real
//! one in `$MMSTATS_DIR`; private memory is an error.

use std::future::Future;
use std::pin::{pin, Pin};
use std::process::ExitCode;
use std::task::{Context, Poll, Waker};

use mmstats::{Counter, Stats, Timer};

/// The measures of the one future.
#[derive(Stats)]
#[stats(prefix = "poll_loop.")]
struct PollLoop {
    /// First poll to completion.
    wall: Timer,
    /// Time in polls.
    busy: Timer,
    /// Time from a poll's end to the wake after it.
    external: Timer,
    /// Time from a wake to the next poll.
    scheduled: Timer,
    /// Polls of 1 ms or more.
    slow_polls: Counter,
    /// Each slow poll's duration.
    slow_poll_time: Timer,
    /// Thread CPU time in polls (with --cpu).
    cpu: Timer,
}

mmstats::per_thread!(static STATS: PollLoop);

/// Pending `left` more times, waking itself each time.
struct SelfWaking {
    left: u64,
}

impl Future for SelfWaking {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.left == 0 {
            return Poll::Ready(());
        }
        self.left -= 1;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

fn main() -> ExitCode {
    let mut n = None;
    let mut cpu = false;
    for arg in std::env::args().skip(1) {
        if arg == "--cpu" {
            cpu = true;
        } else if n.is_none() {
            match arg.parse::<u64>() {
                Ok(v) => n = Some(v),
                Err(e) => {
                    eprintln!("poll_loop: N must be a whole number, got {arg:?}: {e}");
                    return ExitCode::from(2);
                }
            }
        } else {
            eprintln!("usage: poll_loop N [--cpu]  (stats in $MMSTATS_DIR)");
            return ExitCode::from(2);
        }
    }
    let Some(n) = n else {
        eprintln!("usage: poll_loop N [--cpu]  (stats in $MMSTATS_DIR)");
        return ExitCode::from(2);
    };
    // Open the file before the loop, and insist on a real one.
    STATS.with(|_| ());
    if let Some(e) = STATS.error() {
        eprintln!("poll_loop: {e}");
        return ExitCode::FAILURE;
    }
    let fut = STATS
        .instrument(SelfWaking { left: n }, |s| &s.wall, |s| &s.busy)
        .external(|s| &s.external)
        .scheduled(|s| &s.scheduled)
        .slow_polls(|s| &s.slow_polls, |s| &s.slow_poll_time);
    let mut fut = if cpu {
        pin!(fut.cpu(|s| &s.cpu))
    } else {
        pin!(fut)
    };
    let mut cx = Context::from_waker(Waker::noop());
    let mut polls = 1u64;
    while fut.as_mut().poll(&mut cx).is_pending() {
        polls += 1;
    }
    println!("{polls}");
    ExitCode::SUCCESS
}
