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

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use mmstats_read::Value;

/// Set to `1` to fail, rather than skip, when strace is missing or cannot
/// trace in this environment.
const REQUIRE_ENV: &str = "MMSTATS_REQUIRE_STRACE";

#[test]
fn a_hundred_thousand_fold_more_instrumented_polls_make_no_more_syscalls() {
    let required = std::env::var_os(REQUIRE_ENV).is_some_and(|v| v == "1");
    if let Err(why) = strace_usable() {
        assert!(!required, "{REQUIRE_ENV}=1 but {why}");
        // Straight to stderr: a skipped check should show in every log.
        let _ = writeln!(
            std::io::stderr(),
            "note: skipping the no-syscalls-per-poll check: {why} (set {REQUIRE_ENV}=1 to fail instead)"
        );
        return;
    }
    let exe = build_example();
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
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-c", "-o"])
        .arg(&summary_path)
        .arg("--")
        .arg(exe)
        .arg(n.to_string())
        .env(mmstats::DIR_ENV, &stats_dir);
    if cpu {
        cmd.arg("--cpu");
    }
    let out = cmd.output().expect("run strace");
    assert!(
        out.status.success(),
        "strace poll_loop {n} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
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

    let summary = std::fs::read_to_string(&summary_path).expect("read strace summary");
    total_calls(&summary).unwrap_or_else(|e| panic!("{e}; the summary:\n{summary}"))
}

/// Builds `examples/poll_loop.rs` with this test's profile and returns the
/// executable's path, as cargo reports it.
fn build_example() -> PathBuf {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR")).args([
        "build",
        "--example",
        "poll_loop",
        "--message-format=json-render-diagnostics",
    ]);
    if built_in_release() {
        cmd.arg("--release");
    }
    let out = cmd.output().expect("run cargo build");
    assert!(
        out.status.success(),
        "cargo build --example poll_loop failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|msg| {
            msg["reason"] == "compiler-artifact"
                && msg["target"]["name"] == "poll_loop"
                && msg["target"]["kind"]
                    .as_array()
                    .is_some_and(|k| k.iter().any(|k| k == "example"))
        })
        .find_map(|msg| msg["executable"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| panic!("cargo named no poll_loop executable:\n{stdout}"))
}

/// Whether this test binary is in a `release` profile directory.
fn built_in_release() -> bool {
    let me = std::env::current_exe().expect("path of the test binary");
    me.parent()
        .and_then(Path::parent)
        .and_then(Path::file_name)
        .is_some_and(|d| d == "release")
}

/// Ok if `strace` is installed and can trace a child here (ptrace may be
/// forbidden in containers); otherwise why not.
fn strace_usable() -> Result<(), String> {
    match Command::new("strace").arg("-V").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => return Err(format!("`strace -V` failed: {}", out.status)),
        Err(e) => return Err(format!("strace is not available: {e}")),
    }
    // Trace something harmless that surely exists: this test binary,
    // listing its tests.
    let me = std::env::current_exe().expect("path of the test binary");
    let out = Command::new("strace")
        .args(["-f", "-c", "-o", "/dev/null", "--"])
        .arg(&me)
        .arg("--list")
        .output()
        .expect("run strace");
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "strace cannot trace here ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The total number of calls in the summary table(s) of `strace -c`,
/// checked against the sum of the per-syscall rows.
///
/// Columns are right-aligned under their headings, so the calls of a row
/// are the number that ends where the heading `calls` ends. That holds
/// whether or not a row has blank cells (errors; usecs/call in the total
/// row of older straces). A tracee of mixed personalities gets one table
/// per personality; their totals are added.
fn total_calls(summary: &str) -> Result<u64, String> {
    let mut calls_end = None;
    let mut total = None;
    let mut rows = 0u64;
    for line in summary.lines() {
        let words = words(line);
        if words.iter().any(|w| w.1 == "calls") && words.iter().any(|w| w.1 == "syscall") {
            calls_end = words
                .iter()
                .find(|w| w.1 == "calls")
                .map(|w| w.0 + w.1.len());
            continue;
        }
        let Some(end) = calls_end else { continue };
        let Some(&(_, name)) = words.last() else {
            continue;
        };
        if name.bytes().all(|b| b == b'-') {
            continue;
        }
        let calls: u64 = words
            .iter()
            .find(|w| w.0 + w.1.len() == end)
            .ok_or_else(|| format!("no number under `calls` in {line:?}"))?
            .1
            .parse()
            .map_err(|e| format!("calls in {line:?}: {e}"))?;
        if name == "total" {
            *total.get_or_insert(0) += calls;
            // The table ends here; what follows is not under its headings.
            calls_end = None;
        } else {
            rows += calls;
        }
    }
    let total = total.ok_or("no `total` row")?;
    if total != rows {
        return Err(format!(
            "the total row says {total} calls, the rows add up to {rows}"
        ));
    }
    Ok(total)
}

/// The whitespace-separated words of `line` with their byte offsets.
fn words(line: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in line.char_indices().chain([(line.len(), ' ')]) {
        match (c.is_whitespace(), start) {
            (false, None) => start = Some(i),
            (true, Some(s)) => {
                out.push((s, &line[s..i]));
                start = None;
            }
            _ => {}
        }
    }
    out
}
