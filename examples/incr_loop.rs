//! Opens a one-counter stats file and increments the counter N times, so a
//! tracer can check that the increments make no system calls: the run with
//! a large N must make exactly as many as the run with a small one.
//!
//! ```text
//! MMSTATS_DIR=/tmp/stats cargo run --example incr_loop -- 10000000
//! cargo run --example incr_loop -- 10000000 /tmp/stats
//! ```
//!
//! `--getpid-each` makes a `getpid` system call per increment as well: a
//! control run that shows the tracer does see syscalls made in the loop.
//!
//! `--metrics` counts through the `metrics` facade instead, with
//! `metrics::counter!("incr_loop.count").increment(1)` each time (the macro
//! path: registration and increment) into the mmstats-metrics recorder.
//!
//! Prints the final value of the counter (with `--metrics`, the number of
//! increments made; the file holds the count).

use std::hint::black_box;
use std::process::ExitCode;

use mmstats::{Counter, Stats};

/// The one counter.
#[derive(Stats)]
#[stats(prefix = "incr_loop.")]
struct Loop {
    /// Increments made so far.
    count: Counter,
}

fn main() -> ExitCode {
    let mut n = None;
    let mut dir = None;
    let mut getpid_each = false;
    let mut through_metrics = false;
    for arg in std::env::args().skip(1) {
        if arg == "--getpid-each" {
            getpid_each = true;
        } else if arg == "--metrics" {
            through_metrics = true;
        } else if n.is_none() {
            match arg.parse::<u64>() {
                Ok(v) => n = Some(v),
                Err(e) => {
                    eprintln!("incr_loop: N must be a whole number, got {arg:?}: {e}");
                    return ExitCode::from(2);
                }
            }
        } else if dir.is_none() {
            dir = Some(arg);
        } else {
            eprintln!("usage: incr_loop N [DIR] [--getpid-each] [--metrics]");
            return ExitCode::from(2);
        }
    }
    let Some(n) = n else {
        eprintln!(
            "usage: incr_loop N [DIR] [--getpid-each] [--metrics]  (DIR defaults to $MMSTATS_DIR)"
        );
        return ExitCode::from(2);
    };
    if through_metrics {
        return metrics_loop(n, dir, getpid_each);
    }
    let builder = Loop::builder();
    let builder = match dir {
        Some(dir) => builder.dir(dir),
        None => builder,
    };
    // A real file, never the private fallback: the point is to trace
    // stores to a shared mapping.
    let stats = match builder.open() {
        Ok(stats) => stats,
        Err(e) => {
            eprintln!("incr_loop: {e}");
            return ExitCode::FAILURE;
        }
    };

    // The loop under test. `black_box` keeps the count and the handle
    // opaque, so the compiler can neither fold the loop into one add nor
    // drop it.
    let count = &stats.count;
    for _ in 0..black_box(n) {
        black_box(count).incr();
        if getpid_each {
            black_box(std::process::id());
        }
    }

    println!("{}", count.get());
    ExitCode::SUCCESS
}

/// The loop through the `metrics` facade and mmstats-metrics.
fn metrics_loop(n: u64, dir: Option<String>, getpid_each: bool) -> ExitCode {
    let builder = mmstats_metrics::Builder::new();
    let builder = match dir {
        Some(dir) => builder.dir(dir),
        None => builder,
    };
    // Opens this thread's file now, so a bad directory fails here.
    if let Err(e) = builder.install() {
        eprintln!("incr_loop: {e}");
        return ExitCode::FAILURE;
    }
    for _ in 0..black_box(n) {
        metrics::counter!("incr_loop.count").increment(black_box(1));
        if getpid_each {
            black_box(std::process::id());
        }
    }
    println!("{n}");
    ExitCode::SUCCESS
}
