//! Helpers the root package's tests share: building an example with the
//! test's own profile, and counting system calls with strace.
// Each test crate uses some of these; what one does not use is not dead.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Set to `1` to fail, rather than skip, when strace is missing or cannot
/// trace in this environment.
pub const REQUIRE_ENV: &str = "MMSTATS_REQUIRE_STRACE";

/// Whether strace can be used for `check`: if not, fails when
/// [`REQUIRE_ENV`] is `1`, else says on stderr that `check` is skipped and
/// why, and returns false.
pub fn strace_or_skip(check: &str) -> bool {
    let required = std::env::var_os(REQUIRE_ENV).is_some_and(|v| v == "1");
    match strace_usable() {
        Ok(()) => true,
        Err(why) => {
            assert!(!required, "{REQUIRE_ENV}=1 but {why}");
            // Straight to stderr, not through `eprintln!`, which the test
            // harness captures: a skipped check should show in every log.
            let _ = writeln!(
                std::io::stderr(),
                "note: skipping {check}: {why} (set {REQUIRE_ENV}=1 to fail instead)"
            );
            false
        }
    }
}

/// Ok if `strace` is installed and can trace a child here (ptrace may be
/// forbidden in containers); otherwise why not.
pub fn strace_usable() -> Result<(), String> {
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

/// Builds example `name` of the root package with this test's profile (debug, or
/// release under `cargo test --release`) and returns the executable's path,
/// as cargo reports it, so the target directory, however configured, is
/// right.
pub fn build_example(name: &str) -> PathBuf {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR")).args([
        "build",
        "--example",
        name,
        "--message-format=json-render-diagnostics",
    ]);
    if built_in_release() {
        cmd.arg("--release");
    }
    let out = cmd.output().expect("run cargo build");
    assert!(
        out.status.success(),
        "cargo build --example {name} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|msg| {
            msg["reason"] == "compiler-artifact"
                && msg["target"]["name"] == name
                && msg["target"]["kind"]
                    .as_array()
                    .is_some_and(|k| k.iter().any(|k| k == "example"))
        })
        .find_map(|msg| msg["executable"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| panic!("cargo named no {name} executable; its output:\n{stdout}"))
}

/// Whether this test binary is in a `release` profile directory
/// (`<target>/release/deps/<test>`).
pub fn built_in_release() -> bool {
    let me = std::env::current_exe().expect("path of the test binary");
    me.parent()
        .and_then(Path::parent)
        .and_then(Path::file_name)
        .is_some_and(|d| d == "release")
}

/// The total number of calls in the summary table(s) of `strace -c`,
/// checked against the sum of the per-syscall rows.
///
/// Columns are right-aligned under their headings, so the calls of a row
/// are the number that ends where the heading `calls` ends. That holds
/// whether or not a row has blank cells (errors; usecs/call in the total
/// row of older straces). A tracee of mixed personalities gets one table
/// per personality; their totals are added.
pub fn total_calls(summary: &str) -> Result<u64, String> {
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

/// Runs `exe ARGS` under `strace -f -c` with `$MMSTATS_DIR` set to
/// `stats_dir`, its summary written to `summary`; asserts that it
/// succeeded and returns what it printed and its total of system calls.
pub fn strace_counted(
    exe: &Path,
    args: &[String],
    stats_dir: &Path,
    summary: &Path,
) -> (String, u64) {
    let out = Command::new("strace")
        .args(["-f", "-c", "-o"])
        .arg(summary)
        .arg("--")
        .arg(exe)
        .args(args)
        .env(mmstats::DIR_ENV, stats_dir)
        .output()
        .expect("run strace");
    assert!(
        out.status.success(),
        "strace {} {args:?} failed ({}):\n{}",
        exe.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(summary).expect("read strace summary");
    let calls = total_calls(&text).unwrap_or_else(|e| panic!("{e}; the summary:\n{text}"));
    (String::from_utf8_lossy(&out.stdout).into_owned(), calls)
}
