//! Retiring dead writers from mmash: the periodic fold behind
//! `--retire-after`, the one-shot `mmash retire` for cron, and the
//! `mmash_files` / `mmash_retire_*` series on `/metrics`.
//!
//! The fold itself is [`mmstats_read::retire::fold`]; this module only decides
//! which directories and when. A directory is folded only as its owner:
//! the periodic fold of an mmash running as root folds another user's
//! directory by running `mmash retire` as that user; a one-shot `mmash
//! retire` folds its own user's directories only.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clap::Parser;
use mmstats_read::aggregate::Sample;
use mmstats_read::retire::{fold, FoldReport, FoldStep, RetireOptions};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Default `--retire-after`: see README, "Operating it".
pub const DEFAULT_RETIRE_AFTER: &str = "5m";

/// What the periodic fold did since mmash started.
struct Counters {
    runs: AtomicU64,
    archives_written: AtomicU64,
    folded: AtomicU64,
    removed: AtomicU64,
    pruned: AtomicU64,
    errors: AtomicU64,
    deadline: AtomicU64,
    failed: AtomicU64,
}

static COUNTERS: Counters = Counters {
    runs: AtomicU64::new(0),
    archives_written: AtomicU64::new(0),
    folded: AtomicU64::new(0),
    removed: AtomicU64::new(0),
    pruned: AtomicU64::new(0),
    errors: AtomicU64::new(0),
    deadline: AtomicU64::new(0),
    failed: AtomicU64::new(0),
};

/// Parses `300`, `300s`, `500ms`, `5m`, `2h`, `1d`, or `off`/`0` (`None`).
pub fn parse_duration(s: &str) -> Result<Option<Duration>, String> {
    let t = s.trim();
    if t == "off" {
        return Ok(None);
    }
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 90s, 5m, 1h, off)"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (ms, s, m, h, d)")),
    };
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        return Err(format!("{s:?} is out of range"));
    }
    Ok((secs > 0.0).then(|| Duration::from_secs_f64(secs)))
}

/// The directories of `paths` (directories themselves, or the default
/// ones) that this process's user owns, and so may fold.
fn own_dirs(paths: &[OsString]) -> Vec<PathBuf> {
    candidate_dirs(paths)
        .into_iter()
        .filter(|d| mmstats_read::retire::foldable(d).is_ok())
        .collect()
}

/// The directories of `paths` (directories themselves, or the default
/// ones), whoever owns them.
fn candidate_dirs(paths: &[OsString]) -> Vec<PathBuf> {
    if paths.is_empty() {
        mmstats_read::default_dirs()
    } else {
        paths
            .iter()
            .map(PathBuf::from)
            .filter(|p| p.is_dir())
            .collect()
    }
}

/// This process's effective uid: the owner of its `/proc` directory.
fn euid() -> Option<u32> {
    fs::metadata("/proc/self").ok().map(|m| m.uid())
}

/// For an mmash running as root: the directories of `paths` that another
/// user owns (a real directory, not writable by group or others), with
/// that user's uid and the directory's gid. Root folds them by running
/// `mmash retire` as their owner, never as root: the archive must be the
/// owner's for readers to trust it, and a fold as the owner can touch
/// nothing the owner could not.
fn foreign_dirs(paths: &[OsString]) -> Vec<(PathBuf, u32, u32)> {
    if euid() != Some(0) {
        return Vec::new();
    }
    candidate_dirs(paths)
        .into_iter()
        .filter_map(|d| {
            let m = fs::symlink_metadata(&d).ok()?;
            (m.is_dir() && m.uid() != 0 && m.mode() & 0o022 == 0).then(|| (d, m.uid(), m.gid()))
        })
        .collect()
}

/// How long one owner's `mmash retire` child may run before it is killed
/// (SIGKILL, then reaped) and that owner is counted as not folded this time
/// (`mmash_retire_failures_total{reason="deadline"}`). A fold reads and
/// rewrites a few files; 30 s is far beyond what an honest one takes, even
/// with thousands of files, and short next to the fold interval's usual
/// minutes. Owners are folded independently: a child at its deadline
/// delays no other owner's fold.
pub const FOLD_DEADLINE: Duration = Duration::from_secs(30);

/// The most bytes kept of a fold child's stdout, and of its stderr; the
/// rest is read and thrown away, so a child (which its owner controls)
/// that writes without end costs mmash no more than this per stream. An
/// honest child prints one report line on stdout.
pub const CHILD_OUTPUT_KEPT: usize = 64 * 1024;

/// Why an owner's directory was not folded.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Failure {
    /// The child ran past [`FOLD_DEADLINE`] and was killed.
    Deadline,
    /// The child could not be started, or exited with an error.
    Failed,
}

/// Reads `r` to its end, keeping its first `keep` bytes; gives them and
/// how many bytes were read in all.
async fn read_bounded<R: AsyncRead + Unpin>(r: Option<R>, keep: usize) -> (Vec<u8>, u64) {
    let mut kept = Vec::new();
    let mut total = 0u64;
    let Some(mut r) = r else {
        return (kept, total);
    };
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                total += n as u64;
                let room = keep.saturating_sub(kept.len()).min(n);
                kept.extend_from_slice(&buf[..room]);
            }
        }
    }
    (kept, total)
}

/// Text its owner chose, fit for one log line: escaped, and cut.
fn quoted(s: &str) -> String {
    let mut q = format!("{s:?}");
    if q.len() > 300 {
        let mut end = 300;
        while !q.is_char_boundary(end) {
            end -= 1;
        }
        q.truncate(end);
        q.push_str("...\"");
    }
    q
}

/// Folds `dir` by running `mmash retire` as `uid`/`gid` (the standard
/// library drops root's supplementary groups with the uid), with a clean
/// environment, for at most `deadline`; returns what the child folded.
async fn fold_as_owner(
    dir: &Path,
    uid: u32,
    gid: u32,
    retire_after: Duration,
    deadline: Duration,
) -> Result<FoldCounts, (Failure, String)> {
    let exe = std::env::current_exe().map_err(|e| {
        (
            Failure::Failed,
            format!("cannot find mmash to fold with: {e}"),
        )
    })?;
    let mut cmd = Command::new(&exe);
    cmd.arg("retire")
        .arg("--retire-after")
        .arg(format!("{}ms", retire_after.as_millis()))
        .arg("--")
        .arg(dir)
        .uid(uid)
        .gid(gid)
        .env_clear()
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut cmd = tokio::process::Command::from(cmd);
    // Whatever happens to this task, the child does not outlive it.
    cmd.kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| {
        (
            Failure::Failed,
            format!("cannot run {} as the owner: {e}", exe.display()),
        )
    })?;
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let run = async {
        tokio::join!(
            read_bounded(stdout, CHILD_OUTPUT_KEPT),
            read_bounded(stderr, CHILD_OUTPUT_KEPT),
            child.wait()
        )
    };
    let finished = tokio::time::timeout(deadline, run).await;
    let ((out, _), (err, _), status) = match finished {
        Ok(r) => r,
        Err(_) => {
            // SIGKILL, which also ends a stopped child, then reap it.
            let _ = child.kill().await;
            return Err((
                Failure::Deadline,
                format!("the fold did not finish within {deadline:?}; killed"),
            ));
        }
    };
    let status = status.map_err(|e| (Failure::Failed, format!("waiting for the fold: {e}")))?;
    let stdout = String::from_utf8_lossy(&out);
    let counts =
        stdout
            .lines()
            .filter_map(FoldCounts::parse)
            .fold(FoldCounts::default(), |a, b| FoldCounts {
                folded: a.folded + b.folded,
                removed: a.removed + b.removed,
                archives_written: a.archives_written + b.archives_written,
                pruned: a.pruned + b.pruned,
            });
    if status.success() {
        Ok(counts)
    } else {
        let err = String::from_utf8_lossy(&err);
        Err((
            Failure::Failed,
            format!(
                "the fold failed ({status}): {}",
                quoted(err.trim().lines().next().unwrap_or("no message"))
            ),
        ))
    }
}

/// What one `mmash retire` report line says it did.
#[derive(Debug, Default, PartialEq)]
struct FoldCounts {
    folded: usize,
    removed: usize,
    archives_written: usize,
    pruned: usize,
}

impl From<&FoldReport> for FoldCounts {
    fn from(r: &FoldReport) -> FoldCounts {
        FoldCounts {
            folded: r.folded,
            removed: r.removed,
            archives_written: r.archives_written,
            pruned: r.pruned,
        }
    }
}

impl FoldCounts {
    /// Adds these to the `mmash_retire_*` counters.
    fn count(&self) {
        for (counter, n) in [
            (&COUNTERS.folded, self.folded),
            (&COUNTERS.removed, self.removed),
            (&COUNTERS.archives_written, self.archives_written),
            (&COUNTERS.pruned, self.pruned),
        ] {
            // Relaxed: independent statistics, read only for /metrics.
            counter.fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    /// Parses `DIR: folded N file(s), removed N, wrote N archive(s), pruned
    /// N id(s); ...`, the line `main` prints.
    fn parse(line: &str) -> Option<FoldCounts> {
        let rest = &line[line.rfind(": folded ")? + ": folded ".len()..];
        let mut nums = rest
            .split(|c: char| !c.is_ascii_digit())
            .filter(|w| !w.is_empty())
            .map(|w| w.parse::<usize>().ok());
        Some(FoldCounts {
            folded: nums.next()??,
            removed: nums.next()??,
            archives_written: nums.next()??,
            pruned: nums.next()??,
        })
    }
}

/// Folds every own directory of `paths` once; returns the reports and the
/// errors, each naming its directory.
fn run_once(paths: &[OsString], opts: &RetireOptions) -> (Vec<(PathBuf, FoldReport)>, Vec<String>) {
    let mut reports = Vec::new();
    let mut errors = Vec::new();
    for dir in own_dirs(paths) {
        match fold(&dir, opts) {
            Ok(r) => reports.push((dir, r)),
            Err(e) => errors.push(e.to_string()),
        }
    }
    (reports, errors)
}

/// Starts the periodic fold: every `min(retire_after / 2, 60 s)` (at least
/// every second), the files dead and older than `retire_after`. Each other
/// owner's directory is folded by a child of its own, started at every
/// tick unless that owner's previous one is still running, and killed at
/// `deadline`: a stalled or slow owner delays nobody else.
pub fn spawn(paths: Vec<OsString>, retire_after: Duration, deadline: Duration) {
    let spawned = std::thread::Builder::new()
        .name("mmash-retire".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!(
                        "mmash: cannot start the retire runtime: {e}; dead writers are not folded"
                    );
                    return;
                }
            };
            rt.block_on(periodic(paths, retire_after, deadline));
        });
    if let Err(e) = spawned {
        eprintln!("mmash: cannot start the retire thread: {e}; dead writers are not folded");
    }
}

async fn periodic(paths: Vec<OsString>, retire_after: Duration, deadline: Duration) {
    let mut opts = RetireOptions::default();
    opts.min_age = retire_after;
    let every = (retire_after / 2).clamp(Duration::from_secs(1), Duration::from_secs(60));
    let mut logged = std::collections::HashSet::new();
    let mut running: HashMap<PathBuf, tokio::task::JoinHandle<()>> = HashMap::new();
    loop {
        tokio::time::sleep(every).await;
        running.retain(|_, h| !h.is_finished());
        for (dir, uid, gid) in foreign_dirs(&paths) {
            if running.contains_key(&dir) {
                // Still within its deadline: one child per owner at a time.
                continue;
            }
            let d = dir.clone();
            let task = tokio::spawn(async move {
                match fold_as_owner(&d, uid, gid, retire_after, deadline).await {
                    Ok(c) => c.count(),
                    Err((why, msg)) => {
                        let counter = match why {
                            Failure::Deadline => &COUNTERS.deadline,
                            Failure::Failed => &COUNTERS.failed,
                        };
                        // Relaxed: independent statistics, read only for /metrics.
                        counter.fetch_add(1, Ordering::Relaxed);
                        // Relaxed: as above.
                        COUNTERS.errors.fetch_add(1, Ordering::Relaxed);
                        // One line per owner and fold run, at most.
                        eprintln!(
                            "mmash: retire: {} (uid {uid}): not folded: {msg}",
                            quoted(&d.display().to_string())
                        );
                    }
                }
            });
            running.insert(dir, task);
        }
        // This user's own directories, in this process; the owners'
        // children go on meanwhile.
        let (paths2, opts2) = (paths.clone(), opts.clone());
        let Ok((reports, errors)) =
            tokio::task::spawn_blocking(move || run_once(&paths2, &opts2)).await
        else {
            continue;
        };
        for (_, r) in &reports {
            FoldCounts::from(r).count();
        }
        // Relaxed: independent statistics, read only for /metrics.
        COUNTERS.runs.fetch_add(1, Ordering::Relaxed);
        for (dir, r) in &reports {
            for (path, why) in &r.skipped {
                let line = format!("{}: not folded: {why}", path.display());
                if logged.len() < 10_000 && logged.insert(line.clone()) {
                    eprintln!("mmash: retire in {}: {line}", dir.display());
                }
            }
        }
        // Relaxed: as above.
        COUNTERS
            .errors
            .fetch_add(errors.len() as u64, Ordering::Relaxed);
        for e in errors {
            if logged.len() < 10_000 && logged.insert(e.clone()) {
                eprintln!("mmash: retire: {e}");
            }
        }
    }
}

/// Appends mmash's own series: files by state in the current sample, and
/// what the periodic fold did.
pub fn render(sample: &Sample, out: &mut String) {
    let (mut alive, mut dead, mut archives) = (0, 0, 0);
    for f in sample.files.iter().filter(|f| f.fresh) {
        if f.snapshot.info.is_archive() {
            archives += 1;
        } else if f.snapshot.info.writing() {
            alive += 1;
        } else {
            dead += 1;
        }
    }
    out.push_str(
        "# HELP mmash_files Stats files read, by writer state (archive: folded dead writers).\n\
         # TYPE mmash_files gauge\n",
    );
    for (state, n) in [("alive", alive), ("dead", dead), ("archive", archives)] {
        let _ = writeln!(out, "mmash_files{{state=\"{state}\"}} {n}");
    }
    let rows: [(&str, &str, &AtomicU64); 6] = [
        ("runs", "Periodic fold runs.", &COUNTERS.runs),
        (
            "archives_written",
            "Archives written by folds.",
            &COUNTERS.archives_written,
        ),
        (
            "files_folded",
            "Dead writers' files folded into archives.",
            &COUNTERS.folded,
        ),
        (
            "files_removed",
            "Files removed after being folded.",
            &COUNTERS.removed,
        ),
        (
            "ids_pruned",
            "Identities of long-gone files pruned from archives.",
            &COUNTERS.pruned,
        ),
        (
            "errors",
            "Directories a fold run could not fold.",
            &COUNTERS.errors,
        ),
    ];
    out.push_str(
        "# HELP mmash_retire_failures_total Other owners' directories not folded, by reason \
         (deadline: the fold as the owner was killed at its deadline; failed: it could not \
         start or exited with an error).\n\
         # TYPE mmash_retire_failures_total counter\n",
    );
    for (reason, c) in [
        ("deadline", &COUNTERS.deadline),
        ("failed", &COUNTERS.failed),
    ] {
        // Relaxed: a statistic; any recent value will do.
        let n = c.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "mmash_retire_failures_total{{reason=\"{reason}\"}} {n}"
        );
    }
    for (name, help, c) in rows {
        let _ = writeln!(
            out,
            "# HELP mmash_retire_{name}_total {help}\n# TYPE mmash_retire_{name}_total counter\n\
             mmash_retire_{name}_total {}",
            // Relaxed: a statistic; any recent value will do.
            c.load(Ordering::Relaxed)
        );
    }
}

const RETIRE_ABOUT: &str = "\
Fold the dead writers of stats directories into archives, once (for cron).

Each DIR is a stats directory; with none, the default directories \
($MMSTATS_DIR if set, else /dev/shm/mmstats-*) that this user owns. A \
directory is folded only by its owner. A file is folded when its writer \
process is proven dead and the file is older than --retire-after; its \
counters and histograms are added into {command}.{model}.archive.mmstats, \
its texts kept as last values, its gauges dropped, and the file removed. \
Readers (slurpstats, pollstats, mmash) count every dead writer exactly once \
throughout, and totals never go backwards (format-spec.md §2.8).

Exit status: 0 if every directory was folded, 1 if one could not be.";

#[derive(Parser, Debug)]
#[command(
    name = "mmash retire",
    bin_name = "mmash retire",
    long_about = RETIRE_ABOUT,
    args_override_self = true
)]
struct RetireArgs {
    /// Stats directories.
    #[arg(value_name = "DIR")]
    paths: Vec<OsString>,

    /// Fold files at least this old (since creation) whose writer is dead:
    /// e.g. 90s, 5m, 1h; 0 folds every dead writer now.
    #[arg(long, default_value = DEFAULT_RETIRE_AFTER, value_name = "DURATION")]
    retire_after: String,

    /// Keep the identity of a folded file in its archive until the file has
    /// been gone this long (at least 1m).
    #[arg(long, default_value = "10m", value_name = "DURATION")]
    prune_after: String,

    /// Fault injection for tests: abort after this step of each fold.
    #[arg(long, hide = true)]
    abort_at: Option<String>,

    /// Tests of pruning only: a prune delay below 1m (readers running at
    /// the same time may then count a folded file twice).
    #[arg(long, hide = true, value_name = "DURATION")]
    test_prune_after: Option<String>,
}

/// `mmash retire ARGS`: `args` starts with the program name.
/// The clap definition of `mmash retire`, for its man page.
pub fn command() -> clap::Command {
    <RetireArgs as clap::CommandFactory>::command()
}

pub fn main(args: Vec<OsString>) -> ExitCode {
    let args: RetireArgs = match crate::parse_args(args) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let mut opts = RetireOptions::default();
    match parse_duration(&args.retire_after) {
        Ok(d) => opts.min_age = d.unwrap_or_default(),
        Err(e) => return usage(&format!("--retire-after {e}")),
    }
    match parse_duration(&args.prune_after) {
        Ok(Some(d)) if d >= mmstats_read::retire::MIN_PRUNE_AFTER => opts.prune_after = d,
        Ok(_) => return usage("--prune-after must be at least 1m"),
        Err(e) => return usage(&format!("--prune-after {e}")),
    }
    if let Some(p) = &args.test_prune_after {
        match parse_duration(p) {
            Ok(d) => {
                opts.prune_after = d.unwrap_or_default();
                opts.prune_floor = Duration::ZERO;
            }
            Err(e) => return usage(&format!("--test-prune-after {e}")),
        }
    }
    if let Some(step) = &args.abort_at {
        match step.parse::<FoldStep>() {
            Ok(s) => opts.abort_at = Some(s),
            Err(e) => return usage(&e),
        }
    }
    let mut failed = false;
    for p in &args.paths {
        if !Path::new(p).is_dir() {
            eprintln!("mmash retire: {}: not a directory", Path::new(p).display());
            failed = true;
        }
    }
    let (reports, errors) = run_once(&args.paths, &opts);
    for (dir, r) in &reports {
        println!(
            "{}: folded {} file(s), removed {}, wrote {} archive(s), pruned {} id(s); now {} file(s), {} archive(s)",
            dir.display(),
            r.folded,
            r.removed,
            r.archives_written,
            r.pruned,
            r.files,
            r.archives
        );
        for (path, why) in &r.skipped {
            eprintln!("mmash retire: {}: not folded: {why}", path.display());
        }
    }
    for e in &errors {
        eprintln!("mmash retire: {e}");
    }
    for p in &args.paths {
        if let (true, Err(e)) = (
            Path::new(p).is_dir(),
            mmstats_read::retire::foldable(Path::new(p)),
        ) {
            eprintln!("mmash retire: {e}");
            failed = true;
        }
    }
    if failed || !errors.is_empty() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn usage(msg: &str) -> ExitCode {
    eprintln!("mmash retire: {msg}");
    ExitCode::from(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_line_parses() {
        let line = "/dev/shm/mmstats-1000: folded 12 file(s), removed 13, wrote 2 archive(s), \
                    pruned 4 id(s); now 3 file(s), 2 archive(s)";
        assert_eq!(
            FoldCounts::parse(line),
            Some(FoldCounts {
                folded: 12,
                removed: 13,
                archives_written: 2,
                pruned: 4
            })
        );
        assert_eq!(FoldCounts::parse("mmash retire: something else"), None);
    }

    /// A child that writes 100 MiB costs at most the kept bound: the rest
    /// is read (so the child is not blocked) and thrown away.
    #[test]
    fn child_output_is_kept_up_to_the_bound() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let flood = tokio::io::repeat(b'x').take(100 << 20);
        let (kept, total) = rt.block_on(read_bounded(Some(flood), CHILD_OUTPUT_KEPT));
        assert_eq!((kept.len(), total), (CHILD_OUTPUT_KEPT, 100 << 20));
        assert!(
            kept.capacity() <= 2 * CHILD_OUTPUT_KEPT,
            "{}",
            kept.capacity()
        );
        let line: &[u8] = b"d: folded 1 file(s), removed 1, wrote 1 archive(s), pruned 0 id(s)\n";
        let (kept, total) = rt.block_on(read_bounded(Some(line), CHILD_OUTPUT_KEPT));
        assert_eq!((kept.as_slice(), total), (line, line.len() as u64));
        assert_eq!(
            rt.block_on(read_bounded(None::<&[u8]>, 10)),
            (Vec::new(), 0)
        );
    }

    #[test]
    fn owner_chosen_text_is_escaped_and_cut() {
        assert_eq!(quoted("a\nb\x1b[31m"), "\"a\\nb\\u{1b}[31m\"");
        let long = quoted(&"y".repeat(10_000));
        assert!(long.len() < 310 && long.ends_with("...\""), "{long}");
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90"), Ok(Some(Duration::from_secs(90))));
        assert_eq!(parse_duration("5m"), Ok(Some(Duration::from_secs(300))));
        assert_eq!(
            parse_duration("500ms"),
            Ok(Some(Duration::from_millis(500)))
        );
        assert_eq!(parse_duration("1.5h"), Ok(Some(Duration::from_secs(5400))));
        assert_eq!(parse_duration("off"), Ok(None));
        assert_eq!(parse_duration("0"), Ok(None));
        assert!(parse_duration("5x").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("soon").is_err());
    }
}
