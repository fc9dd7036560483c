//! The writer's lifecycle with real threads and processes: thread churn,
//! file reuse, descriptors, liveness of 1.0 and 1.1 files, exit and
//! fallbacks (project issue 7).
//!
//! Tests that need a process of their own (a `per_thread!` static reads
//! `MMSTATS_DIR`, a resource limit, an exit) run this binary again as a
//! child: an `#[ignore]`d test that does nothing unless its environment
//! variable is set.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Barrier};

use mmstats::format::{self, raw};
use mmstats::{Counter, Gauge, Stats, Text, WriterState};
use mmstats_read::{Snapshot, Value};

/// The model of these tests.
#[derive(Stats)]
struct Churn {
    /// One per thread that touched it.
    hits: Counter,
    /// Set by each thread.
    level: Gauge,
    /// What the thread is.
    note: Text<16>,
}

mmstats::per_thread!(static CHURN: Churn);

/// Where a child test finds its task.
const CHILD_ENV: &str = "MMSTATS_LIFECYCLE_CHILD";

fn stats_files(dir: &Path) -> Vec<PathBuf> {
    let (files, errors) = mmstats_read::discover(&[dir]);
    assert!(errors.is_empty(), "{errors:?}");
    files
}

fn lock_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".mmstats-lock"))
        .collect();
    v.sort();
    v
}

fn counter(snap: &Snapshot, label: &str) -> u64 {
    match snap.field(label).map(|f| &f.value) {
        Some(Value::Counter(n)) => *n,
        other => panic!("{label}: {other:?}"),
    }
}

fn gauge(snap: &Snapshot, label: &str) -> i64 {
    match snap.field(label).map(|f| &f.value) {
        Some(Value::Gauge(n)) => *n,
        other => panic!("{label}: {other:?}"),
    }
}

fn thread_tid() -> u32 {
    let link = fs::read_link("/proc/thread-self").unwrap();
    link.file_name().unwrap().to_str().unwrap().parse().unwrap()
}

/// Runs the ignored test `name` of this binary as a child process with
/// `MMSTATS_DIR=dir` and task `task`, and returns its output.
fn run_child(name: &str, dir: &Path, task: &str) -> Output {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            name,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("MMSTATS_DIR", dir)
        .env(CHILD_ENV, task)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "child {name} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The `key=value` the child printed.
fn child_said(out: &Output, key: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let prefix = format!("{key}=");
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("the child did not say {key}: {stdout}"))
        .to_owned()
}

fn say(key: &str, value: impl std::fmt::Display) {
    // The harness printed "test NAME ... " before us, unterminated.
    println!("\n{key}={value}");
    std::io::stdout().flush().unwrap();
}

/// Thread churn: `THREADS` short-lived threads, `WAVE` alive at a time,
/// each incrementing once through `per_thread!`.
const THREADS: usize = 40_000;
const WAVE: usize = 4;

#[test]
#[ignore = "run as a child process by thread_churn_loses_no_count_and_keeps_files_bounded"]
fn child_churn() {
    mmstats::install_sigbus_guard().unwrap();
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    for _ in 0..THREADS / WAVE {
        let wave: Vec<_> = (0..WAVE)
            .map(|_| std::thread::spawn(|| CHURN.with(|s| s.hits.incr())))
            .collect();
        for t in wave {
            t.join().unwrap();
        }
    }
    say("fallbacks", mmstats::fallbacks().count);
}

#[test]
fn thread_churn_loses_no_count_and_keeps_files_bounded() {
    mmstats::install_sigbus_guard().unwrap();
    // More threads than pid_max on many machines (32768): thread ids wrap,
    // and a file named after a dead thread must never be replaced.
    let dir = tempfile::tempdir().unwrap();
    let out = run_child("child_churn", dir.path(), "churn");
    assert_eq!(child_said(&out, "fallbacks"), "0");
    let files = stats_files(dir.path());
    assert!(
        files.len() <= WAVE,
        "{} files for at most {WAVE} threads alive at once",
        files.len()
    );
    let total: u64 = files
        .iter()
        .map(|f| {
            let snap = mmstats_read::read_file(f).unwrap();
            assert_eq!(snap.info.state, WriterState::Exited, "{f:?}");
            counter(&snap, "hits")
        })
        .sum();
    assert_eq!(total, THREADS as u64);
    // The process exited normally: its lock file is gone.
    assert_eq!(lock_files(dir.path()), Vec::<PathBuf>::new());
}

#[test]
fn an_ended_threads_file_is_taken_over_with_its_counts() {
    mmstats::install_sigbus_guard().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let builder = || Churn::builder().dir(dir.path());
    let (first_path, first_tid) = std::thread::scope(|s| {
        s.spawn(|| {
            let stats = builder().open().unwrap();
            stats.hits.add(5);
            stats.level.set(7);
            stats.note.set("first");
            (
                mmstats_read::read_file(stats_files(dir.path())[0].clone())
                    .unwrap()
                    .info
                    .path,
                thread_tid(),
            )
        })
        .join()
        .unwrap()
    });
    let parked = mmstats_read::read_file(&first_path).unwrap();
    assert_eq!(parked.info.state, WriterState::Exited);
    assert_eq!(parked.info.tid, first_tid);
    std::thread::scope(|s| {
        s.spawn(|| {
            let stats = builder().open().unwrap();
            let snap = mmstats_read::read_file(&first_path).unwrap();
            assert_eq!(
                stats_files(dir.path()),
                std::slice::from_ref(&first_path),
                "reused, not a new file"
            );
            assert_eq!(snap.info.state, WriterState::Active);
            assert_eq!(snap.info.tid, thread_tid(), "the new writer's tid");
            assert_eq!(counter(&snap, "hits"), 5, "counters continue");
            assert_eq!(gauge(&snap, "level"), 0, "gauges restart");
            assert_eq!(
                snap.field("note").unwrap().value,
                Value::Text("first".into())
            );
            stats.hits.incr();
            assert_eq!(
                counter(&mmstats_read::read_file(&first_path).unwrap(), "hits"),
                6
            );
            // A second model alive at once needs a file of its own.
            let other = builder().open().unwrap();
            other.hits.incr();
            assert_eq!(stats_files(dir.path()).len(), 2);
        });
    });
}

#[test]
fn a_dead_writers_file_with_our_name_is_never_replaced() {
    mmstats::install_sigbus_guard().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let template = "squat-{pid}-{tid}.mmstats";
    // A dead writer's file, with counts, under the name we are about to use
    // (as after thread id reuse): made by another process, then copied.
    let src = tempfile::tempdir().unwrap();
    run_child("child_exit_with_live_models", src.path(), "count");
    let dead = stats_files(src.path())[0].clone();
    let dead_hits = counter(&mmstats_read::read_file(&dead).unwrap(), "hits");
    let ours = dir.path().join(format!(
        "squat-{}-{}.mmstats",
        std::process::id(),
        thread_tid()
    ));
    fs::copy(&dead, &ours).unwrap();
    let before = fs::read(&ours).unwrap();
    let stats = Churn::builder()
        .dir(dir.path())
        .template(template)
        .open()
        .unwrap();
    stats.hits.incr();
    assert_eq!(
        fs::read(&ours).unwrap(),
        before,
        "the dead file is untouched"
    );
    let next = dir.path().join(format!(
        "squat-{}-{}.2.mmstats",
        std::process::id(),
        thread_tid()
    ));
    assert_eq!(counter(&mmstats_read::read_file(&next).unwrap(), "hits"), 1);
    assert_eq!(
        counter(&mmstats_read::read_file(&ours).unwrap(), "hits"),
        dead_hits
    );
}

/// Threads alive at once in `child_many_threads`, over a descriptor limit
/// far below that.
const ALIVE: usize = 300;
const FD_LIMIT: u64 = 64;

#[test]
#[ignore = "run as a child process by many_threads_need_one_descriptor"]
fn child_many_threads() {
    mmstats::install_sigbus_guard().unwrap();
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let limit = libc::rlimit {
        rlim_cur: FD_LIMIT,
        rlim_max: FD_LIMIT,
    };
    // SAFETY: setrlimit reads a valid rlimit; this is our own process.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
    let all_open = Arc::new(Barrier::new(ALIVE + 1));
    let done = Arc::new(Barrier::new(ALIVE + 1));
    let threads: Vec<_> = (0..ALIVE)
        .map(|_| {
            let (all_open, done) = (Arc::clone(&all_open), Arc::clone(&done));
            std::thread::spawn(move || {
                CHURN.with(|s| s.hits.incr());
                all_open.wait();
                done.wait();
            })
        })
        .collect();
    all_open.wait();
    say("fds", fs::read_dir("/proc/self/fd").unwrap().count());
    say("fallbacks", mmstats::fallbacks().count);
    done.wait();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn many_threads_need_one_descriptor() {
    mmstats::install_sigbus_guard().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = run_child("child_many_threads", dir.path(), "fds");
    assert_eq!(child_said(&out, "fallbacks"), "0", "no thread went dark");
    let fds: u64 = child_said(&out, "fds").parse().unwrap();
    assert!(fds < FD_LIMIT, "{fds} descriptors open");
    let files = stats_files(dir.path());
    assert_eq!(files.len(), ALIVE);
    let total: u64 = files
        .iter()
        .map(|f| counter(&mmstats_read::read_file(f).unwrap(), "hits"))
        .sum();
    assert_eq!(total, ALIVE as u64);
}

#[test]
#[ignore = "run as a child process by a_normal_exit_closes_every_file"]
fn child_exit_with_live_models() {
    mmstats::install_sigbus_guard().unwrap();
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    // A model that is never dropped, and a thread still running at exit.
    let kept = Churn::open().unwrap();
    kept.hits.add(3);
    std::mem::forget(kept);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        CHURN.with(|s| s.hits.incr());
        tx.send(()).unwrap();
        loop {
            std::thread::park();
        }
    });
    rx.recv().unwrap();
    std::process::exit(0);
}

#[test]
fn a_normal_exit_closes_every_file() {
    mmstats::install_sigbus_guard().unwrap();
    let dir = tempfile::tempdir().unwrap();
    run_child("child_exit_with_live_models", dir.path(), "exit");
    let files = stats_files(dir.path());
    assert_eq!(files.len(), 2);
    for f in &files {
        let snap = mmstats_read::read_file(f).unwrap();
        assert_eq!(snap.info.state, WriterState::Exited, "{f:?}");
        assert!(!snap.info.alive, "{f:?}");
    }
    assert_eq!(lock_files(dir.path()), Vec::<PathBuf>::new());
}

#[test]
fn one_lock_file_per_process_names_every_file() {
    mmstats::install_sigbus_guard().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let models: Vec<Churn> = (0..3)
        .map(|_| Churn::builder().dir(dir.path()).open().unwrap())
        .collect();
    let locks = lock_files(dir.path());
    assert_eq!(locks.len(), 1, "{locks:?}");
    for f in stats_files(dir.path()) {
        let bytes = fs::read(&f).unwrap();
        assert_eq!(raw::get_u16(&bytes, raw::H_MINOR), format::VERSION_MINOR);
        let token = raw::get_u64(&bytes, raw::H_LOCK_TOKEN);
        assert_eq!(
            locks[0].file_name().unwrap().to_string_lossy(),
            format!(".lock.{token:016x}.mmstats-lock")
        );
        assert_eq!(mmstats_read::probe_alive(&f), Some(true));
    }
    drop(models);
}

/// Starts `child_wait_forever` writing into `dir` and waits until its
/// file is made.
fn waiting_child(dir: &Path) -> std::process::Child {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_wait_forever",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("MMSTATS_DIR", dir)
        .env(CHILD_ENV, "wait")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    while !line.contains("ready=1") {
        line.clear();
        assert!(std::io::BufRead::read_line(&mut out, &mut line).unwrap() > 0);
    }
    child
}

#[test]
fn a_killed_process_reads_as_did_not_close() {
    mmstats::install_sigbus_guard().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut child = waiting_child(dir.path());
    let path = stats_files(dir.path())[0].clone();
    assert_eq!(mmstats_read::probe_alive(&path), Some(true));
    child.kill().unwrap();
    child.wait().unwrap();
    let snap = mmstats_read::read_file(&path).unwrap();
    assert!(!snap.info.alive);
    assert_eq!(snap.info.state, WriterState::Active);
}

/// `Sources` keeps a writer's lock file open between samples and probes it
/// once per sample: a writer killed in between reads as dead at the next
/// sample, and so it does once its lock file is cleaned away.
#[test]
fn sources_see_a_killed_writer_die() {
    mmstats::install_sigbus_guard().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut child = waiting_child(dir.path());
    let mut sources = mmstats_read::aggregate::Sources::new(&[dir.path()]);
    let s = sources.sample();
    assert_eq!((s.alive(), s.dead()), (1, 0));
    let s = sources.sample();
    assert_eq!(
        (s.alive(), s.dead()),
        (1, 0),
        "still alive on the kept lock file"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let s = sources.sample();
    assert_eq!(
        (s.alive(), s.dead()),
        (0, 1),
        "the kept descriptor sees the lock go"
    );
    for lock in fs::read_dir(dir.path()).unwrap() {
        let lock = lock.unwrap().path();
        if lock.to_string_lossy().ends_with(".mmstats-lock") {
            fs::remove_file(lock).unwrap();
        }
    }
    let s = sources.sample();
    assert_eq!((s.alive(), s.dead()), (0, 1));
}

#[test]
#[ignore = "run as a child process by a_killed_process_reads_as_did_not_close and sources_see_a_killed_writer_die"]
fn child_wait_forever() {
    mmstats::install_sigbus_guard().unwrap();
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let stats = Churn::open().unwrap();
    stats.hits.incr();
    say("ready", 1);
    loop {
        std::thread::park();
    }
}

#[test]
fn a_1_0_file_is_probed_by_its_own_lock() {
    mmstats::install_sigbus_guard().unwrap();
    let golden = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/golden-1.0.mmstats");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.mmstats");
    fs::copy(golden, &path).unwrap();
    let snap = mmstats_read::read_file(&path).unwrap();
    assert_eq!(snap.info.version, (1, 0));
    assert_eq!(snap.info.fallbacks, 0);
    assert!(!snap.info.alive);
    // A 1.0 writer holds an exclusive flock on the file itself.
    let held = fs::File::open(&path).unwrap();
    held.lock().unwrap();
    assert!(mmstats_read::read_file(&path).unwrap().info.alive);
    assert_eq!(mmstats_read::probe_alive(&path), Some(true));
    held.unlock().unwrap();
    assert_eq!(mmstats_read::probe_alive(&path), Some(false));
}

#[test]
fn fallbacks_are_counted_and_published_in_every_file() {
    mmstats::install_sigbus_guard().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let good = Churn::builder().dir(dir.path()).open().unwrap();
    let blocker = dir.path().join("not-a-dir");
    fs::write(&blocker, b"").unwrap();
    let bad = blocker.join("stats");
    let before = mmstats::fallbacks().count;
    for _ in 0..3 {
        let (_private, err) = Churn::builder().dir(&bad).open_or_private();
        assert!(err.is_some());
    }
    let after = mmstats::fallbacks();
    assert!(after.count >= before + 3, "{after:?}");
    assert!(
        after
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains(&bad.display().to_string())),
        "{after:?}"
    );
    let snap = mmstats_read::read_file(stats_files(dir.path())[0].clone()).unwrap();
    assert!(snap.info.fallbacks >= before + 3, "{:?}", snap.info);
    good.hits.incr();
}
