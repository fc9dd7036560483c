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
//! Prints the final value of the counter.

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
    for arg in std::env::args().skip(1) {
        if arg == "--getpid-each" {
            getpid_each = true;
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
            eprintln!("usage: incr_loop N [DIR] [--getpid-each]");
            return ExitCode::from(2);
        }
    }
    let Some(n) = n else {
        eprintln!("usage: incr_loop N [DIR] [--getpid-each]  (DIR defaults to $MMSTATS_DIR)");
        return ExitCode::from(2);
    };
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
