//! The hot path makes no system calls: `examples/incr_loop.rs` run under
//! `strace -f -c` makes no more system calls for ten million increments
//! than for ten.
//!
//! The same holds for `metrics::counter!` through mmstats-metrics
//! (`incr_loop --metrics`): after the key's first use, the macro path makes
//! no system call either.
//!
//! Needs a working `strace`. Without one the test prints a note and passes,
//! unless `MMSTATS_REQUIRE_STRACE=1` is set (CI sets it), which turns a
//! missing or unusable `strace` into a failure.

use std::path::Path;

use mmstats_read::Value;

mod common;

use common::{build_example, strace_counted, strace_or_skip, total_calls};

#[test]
fn a_million_fold_more_increments_make_no_more_syscalls() {
    million_fold(false);
}

#[test]
fn a_million_fold_more_metrics_counter_increments_make_no_more_syscalls() {
    million_fold(true);
}

fn million_fold(through_metrics: bool) {
    if !strace_or_skip("the no-syscalls check") {
        return;
    }
    let exe = build_example("incr_loop");
    let tmp = tempfile::tempdir().expect("create temporary directory");

    let m = through_metrics;
    let small = traced_run(&exe, tmp.path(), "small", 10, false, m);
    let large = traced_run(&exe, tmp.path(), "large", 10_000_000, false, m);
    // Control: one getpid per increment must show up, or the tracing above
    // proves nothing.
    let control = traced_run(&exe, tmp.path(), "control", 1000, true, m);
    eprintln!(
        "syscalls: {small} for 10 increments, {large} for 10000000, \
         {control} for 1000 with a getpid each"
    );

    assert!(small > 0, "strace counted no system calls at all");
    assert!(
        control >= small + 1000,
        "a getpid per increment should add at least 1000 system calls to the {small} \
         of the 10-increment run, but the control run made {control}: strace is not \
         seeing the loop"
    );
    // Exact: the program does the same thing before and after the loop
    // whatever N is, so any extra call comes from the loop.
    assert!(
        large <= small,
        "10000000 increments made {large} system calls, 10 increments made {small}: \
         the increment loop makes system calls"
    );
}

/// Runs the example for `n` increments under `strace -f -c`, with its stats
/// in a fresh directory under `tmp`, checks what it printed and what its
/// file holds, and returns the total number of system calls it made.
fn traced_run(
    exe: &Path,
    tmp: &Path,
    name: &str,
    n: u64,
    getpid_each: bool,
    through_metrics: bool,
) -> u64 {
    mmstats::install_sigbus_guard().unwrap();
    let stats_dir = tmp.join(name);
    let summary_path = tmp.join(format!("{name}.strace"));
    let mut args = vec![n.to_string()];
    if getpid_each {
        args.push("--getpid-each".into());
    }
    if through_metrics {
        args.push("--metrics".into());
    }
    let (stdout, calls) = strace_counted(exe, &args, &stats_dir, &summary_path);
    assert_eq!(
        stdout.trim(),
        n.to_string(),
        "incr_loop {n} printed the wrong final value"
    );

    // The increments went to a real file in $MMSTATS_DIR, not to private
    // memory.
    let (files, problems) = mmstats_read::discover(&[&stats_dir]);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(files.len(), 1, "one stats file in {}", stats_dir.display());
    let snap = mmstats_read::read_file(&files[0]).expect("read the stats file");
    assert_eq!(
        snap.field("incr_loop.count").map(|f| &f.value),
        Some(&Value::Counter(n)),
        "the counter in {}",
        files[0].display()
    );

    calls
}

#[test]
fn strace_summaries_parse() {
    // strace 6: every cell of the total row filled, some errors blank.
    let v6 = "\
% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 31.51    0.000046          15         3           mprotect
 30.14    0.000044           5         8           mmap
  0.00    0.000000           0         1         1 access
------ ----------- ----------- --------- --------- ----------------
100.00    0.000146           5        12         1 total
";
    assert_eq!(total_calls(v6), Ok(12));
    // strace 4: no usecs/call in the total row.
    let v4 = "\
% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 60.00    0.000006           1         9           mmap
 40.00    0.000004           1         4         2 open
------ ----------- ----------- --------- --------- ----------------
100.00    0.000010                    13         2 total
";
    assert_eq!(total_calls(v4), Ok(13));
    // Two personalities: two tables, totals added.
    let two = format!("{v6}System call usage summary for 32 bit mode:\n{v4}");
    assert_eq!(total_calls(&two), Ok(25));
    // A total that disagrees with its rows, or none at all, is an error.
    assert!(total_calls(&v6.replace("12         1 total", "13         1 total")).is_err());
    assert!(total_calls("strace: exec: No such file or directory\n").is_err());
}
