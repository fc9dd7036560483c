//! The async measures make no system call per poll: the waker wrapper of
//! `external` and `scheduled` (its lock, clock and wake) and `slow_polls`.
//! `examples/poll_loop.rs` polls one instrumented future 10 and 1000000
//! times under `strace -f -c`; the second run must make no more system
//! calls than the first. The control run adds `cpu`, whose two reads of
//! the thread CPU clock per poll are system calls, and must show them.
//!
//! Needs a working `strace`; without one the test prints a note and passes,
//! unless `MMSTATS_REQUIRE_STRACE=1` is set (CI sets it), as
//! `tests/no_syscalls.rs` does. The strace helpers are that test's.

use std::path::Path;

use mmstats_read::Value;

mod common;

use common::{build_example, strace_counted, strace_or_skip};

#[test]
fn a_hundred_thousand_fold_more_instrumented_polls_make_no_more_syscalls() {
    if !strace_or_skip("the no-syscalls-per-poll check") {
        return;
    }
    let exe = build_example("poll_loop");
    let tmp = tempfile::tempdir().expect("create temporary directory");
    let small = traced_run(&exe, tmp.path(), "small", 10, false);
    let large = traced_run(&exe, tmp.path(), "large", 1_000_000, false);
    let control = traced_run(&exe, tmp.path(), "control", 1000, true);
    eprintln!(
        "syscalls: {small} for 10 polls, {large} for 1000000, \
         {control} for 1000 with cpu"
    );
    assert!(small > 0, "strace counted no system calls at all");
    assert!(
        control >= small + 2000,
        "cpu reads the thread CPU clock twice a poll, which should add 2000 system \
         calls to the {small} of the 10-poll run, but the control run made {control}: \
         strace is not seeing the loop (or the clock is served without one)"
    );
    assert!(
        large <= small,
        "1000000 polls made {large} system calls, 10 polls made {small}: instrumented \
         polls make system calls"
    );
}

/// Runs the example for `n` polls under `strace -f -c`, with its stats in a
/// fresh directory under `tmp`, checks what it printed and that its file
/// recorded the future, and returns the total number of system calls.
fn traced_run(exe: &Path, tmp: &Path, name: &str, n: u64, cpu: bool) -> u64 {
    mmstats::install_sigbus_guard().unwrap();
    let stats_dir = tmp.join(name);
    let summary_path = tmp.join(format!("{name}.strace"));
    let mut args = vec![n.to_string()];
    if cpu {
        args.push("--cpu".into());
    }
    let (stdout, calls) = strace_counted(exe, &args, &stats_dir, &summary_path);
    assert_eq!(
        stdout.trim(),
        (n + 1).to_string(),
        "poll_loop {n} printed the wrong number of polls"
    );

    // The future was recorded, once, in a real file in $MMSTATS_DIR.
    let (files, problems) = mmstats_read::discover(&[&stats_dir]);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(files.len(), 1, "one stats file in {}", stats_dir.display());
    let snap = mmstats_read::read_file(&files[0]).expect("read the stats file");
    for label in ["poll_loop.wall", "poll_loop.scheduled"] {
        match snap.field(label).map(|f| &f.value) {
            Some(Value::Histogram(h)) => assert_eq!(h.count(), 1, "{label}"),
            other => panic!("{label}: {other:?}"),
        }
    }

    calls
}
