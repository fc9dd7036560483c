//! A writer that forks, and a writer whose file another process truncates
//! (project issue 7, findings 4 and 5), with real processes.
//!
//! Each case runs this binary again as a child (an `#[ignore]`d test that
//! does nothing unless its environment variable is set), which is the
//! process that forks or whose file is truncated: the test harness's own
//! threads stay out of it.

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use mmstats::{Counter, Gauge, Stats, Text, Timer, WriterState};
use mmstats_read::{Snapshot, Value};

/// The model of these tests.
#[derive(Stats)]
struct Worker {
    /// Counted by each process.
    hits: Counter,
    /// Set before the fork.
    level: Gauge,
    /// Set before the fork.
    note: Text<16>,
    /// Recorded before and after the fork.
    lat: Timer,
}

mmstats::per_thread!(static PER: Worker);

/// Where a child test finds its task.
const CHILD_ENV: &str = "MMSTATS_FORK_CHILD";
/// Increments per process after the fork.
const N: u64 = 1_000_000;

fn snapshots(dir: &Path) -> Vec<Snapshot> {
    let (files, errors) = mmstats_read::discover(&[dir]);
    assert!(errors.is_empty(), "{errors:?}");
    files
        .iter()
        .map(|f| mmstats_read::read_file(f).unwrap())
        .collect()
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

fn text(snap: &Snapshot, label: &str) -> String {
    match snap.field(label).map(|f| &f.value) {
        Some(Value::Text(s)) => s.clone(),
        other => panic!("{label}: {other:?}"),
    }
}

fn timer_count(snap: &Snapshot, label: &str) -> u64 {
    match snap.field(label).map(|f| &f.value) {
        Some(Value::Histogram(h)) => h.count(),
        other => panic!("{label}: {other:?}"),
    }
}

/// Starts the ignored test `name` of this binary as a child process with
/// `MMSTATS_DIR=dir` and task `task`, stdin and stdout piped.
fn spawn_child(name: &str, dir: &Path, task: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            name,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("MMSTATS_DIR", dir)
        .env(CHILD_ENV, task)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Reads `key=value` lines from `out` until one for `key`.
fn wait_for(out: &mut BufReader<ChildStdout>, key: &str) -> String {
    let prefix = format!("{key}=");
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "the child ended without saying {key}"
        );
        if let Some(v) = line.trim_end().strip_prefix(&prefix) {
            return v.to_owned();
        }
    }
}

/// Reads `key=value` lines from `out` until one for each of `keys`,
/// whatever their order; returns the values in the order of `keys`.
fn wait_for_all(out: &mut BufReader<ChildStdout>, keys: &[&str]) -> Vec<String> {
    let mut found = vec![None; keys.len()];
    let mut line = String::new();
    while found.iter().any(Option::is_none) {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "the child ended without saying all of {keys:?}: {found:?}"
        );
        if let Some((k, v)) = line.trim_end().split_once('=') {
            if let Some(i) = keys.iter().position(|&key| key == k) {
                found[i] = Some(v.to_owned());
            }
        }
    }
    found.into_iter().map(Option::unwrap).collect()
}

fn say(key: &str, value: impl std::fmt::Display) {
    // The harness printed "test NAME ... " before us, unterminated.
    println!("\n{key}={value}");
    std::io::stdout().flush().unwrap();
}

fn fork() -> libc::pid_t {
    // SAFETY: the child only runs Rust code of this test (the fork
    // handlers made it safe to use the stats again) and then exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    pid
}

/// Runs the rest of a forked child, then exits: 0 if `f` returned, 101 if
/// it panicked. (The child has only the forking thread; a panic must not
/// unwind into a test harness whose other threads are not there.)
fn in_forked_child(f: impl FnOnce()) -> ! {
    let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_ok();
    // A normal exit: the child's exit handler closes its files.
    std::process::exit(if ok { 0 } else { 101 })
}

fn wait_pid(pid: libc::pid_t) -> i32 {
    let mut status = 0;
    // SAFETY: `status` is a valid out-pointer; `pid` is our child.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(r, pid, "waitpid: {}", std::io::Error::last_os_error());
    status
}

/// The model and the `per_thread!` instance, used before the fork.
fn open_and_touch() -> Worker {
    let w = Worker::open().unwrap();
    w.hits.add(5);
    w.level.set(42);
    w.note.set("before");
    w.lat.record(Duration::from_micros(3));
    PER.with(|s| {
        s.hits.add(7);
        s.lat.record(Duration::from_micros(4));
    });
    w
}

/// Both processes increment the inherited model and `per_thread!`
/// instance `N` times each.
fn count_after_fork(w: &Worker) {
    for _ in 0..N {
        w.hits.incr();
        PER.with(|s| s.hits.incr());
    }
    w.lat.record(Duration::from_micros(5));
}

#[test]
#[ignore = "run as a child process by the tests of this file"]
fn child() {
    let Some(task) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    mmstats::install_sigbus_guard().unwrap();
    match task.to_str().unwrap() {
        "fork-counts" => {
            let w = open_and_touch();
            let pid = fork();
            if pid == 0 {
                in_forked_child(|| count_after_fork(&w));
            }
            count_after_fork(&w);
            assert_eq!(wait_pid(pid), 0, "the forked child failed");
            say("parent", std::process::id());
            say("child", pid);
        }
        "fork-no-dir" => {
            let w = Worker::open().unwrap();
            w.hits.add(5);
            // The directory goes away (moved aside, with the parent's file
            // in it): the child cannot make its file there.
            let dir = PathBuf::from(std::env::var_os("MMSTATS_DIR").unwrap());
            fs::rename(&dir, dir.with_extension("moved")).unwrap();
            let pid = fork();
            if pid == 0 {
                in_forked_child(|| {
                    for _ in 0..N {
                        w.hits.incr();
                    }
                    let fb = mmstats::fallbacks();
                    assert_eq!(fb.count, 1, "{fb:?}");
                    let err = fb.last_error.unwrap();
                    assert!(err.contains(&dir.display().to_string()), "{err}");
                    // Private memory, with the counter started at 0 as in
                    // a file of the child's own.
                    assert_eq!(w.hits.get(), N);
                });
            }
            for _ in 0..N {
                w.hits.incr();
            }
            assert_eq!(wait_pid(pid), 0, "the forked child failed");
            say("parent", std::process::id());
        }
        "orphan" => {
            let w = open_and_touch();
            let pid = fork();
            if pid == 0 {
                in_forked_child(|| {
                    w.hits.add(11);
                    PER.with(|s| s.hits.add(11));
                    say("forked", std::process::id());
                    // Stay alive until the test closes our stdin.
                    let mut line = String::new();
                    let _ = std::io::stdin().read_line(&mut line);
                });
            }
            say("parent", std::process::id());
            // Die without any cleanup, as a crash would: only the child's
            // inherited descriptors could still make our files look alive.
            // SAFETY: _exit has no preconditions.
            unsafe { libc::_exit(0) };
        }
        "truncate-exit" => {
            let w = Worker::open().unwrap();
            w.hits.add(100);
            say("path", w_path(std::process::id()).display());
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).unwrap();
            for _ in 0..1000 {
                w.hits.incr();
            }
            // No other stats call: the exit re-homes the file.
            std::process::exit(0);
        }
        "truncate" => {
            let w = Worker::open().unwrap();
            w.hits.add(100);
            w.note.set("before");
            say("path", w_path(std::process::id()).display());
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).unwrap();
            assert_eq!(line.trim(), "go");
            // The file is empty now: these land in private memory.
            for _ in 0..1000 {
                w.hits.incr();
            }
            let dark = mmstats::fallbacks();
            say("fallbacks", dark.count);
            say("error", dark.last_error.unwrap_or_default());
            // The next open in the process gives the file a new home.
            let other = std::thread::spawn(|| PER.with(|s| s.hits.incr()));
            other.join().unwrap();
            for _ in 0..10 {
                w.hits.incr();
            }
            w.note.set("after");
            say("done", 1);
        }
        "fork-twice" => {
            let w = Worker::open().unwrap();
            w.hits.add(5);
            let dir = PathBuf::from(std::env::var_os("MMSTATS_DIR").unwrap());
            let moved = dir.with_extension("moved");
            fs::rename(&dir, &moved).unwrap();
            let pid = fork();
            if pid == 0 {
                in_forked_child(|| {
                    // No directory: private memory.
                    assert_eq!(mmstats::fallbacks().count, 1);
                    fs::rename(&moved, &dir).unwrap();
                    let pid = fork();
                    if pid == 0 {
                        in_forked_child(|| {
                            // The grandchild has a file of its own again;
                            // it is a file like any other when truncated.
                            w.hits.add(3);
                            let path = w_path(std::process::id());
                            fs::OpenOptions::new()
                                .write(true)
                                .open(&path)
                                .unwrap()
                                .set_len(0)
                                .unwrap();
                            w.hits.add(4);
                            let fb = mmstats::fallbacks();
                            assert_eq!(fb.count, 1, "{fb:?}");
                            w.hits.add(2);
                            let snap = mmstats_read::read_file(&path).unwrap();
                            assert_eq!(counter(&snap, "hits"), 6);
                            say("grandchild", std::process::id());
                        });
                    }
                    assert_eq!(wait_pid(pid), 0, "the grandchild failed");
                });
            }
            assert_eq!(wait_pid(pid), 0, "the forked child failed");
        }
        "fork-in-tls-dtor" => {
            let w = Worker::open().unwrap();
            w.hits.add(5);
            std::thread::spawn(move || {
                // Registered first, so destroyed last: after the thread
                // locals the library's fork handlers use were destroyed.
                LAST.with(|l| *l.borrow_mut() = Some(ForkOnDrop(w)));
                // A first fork on this thread, so the library's fork
                // handlers have touched whatever per-thread state they use.
                let pid = fork();
                if pid == 0 {
                    // SAFETY: _exit has no preconditions.
                    unsafe { libc::_exit(0) };
                }
                assert_eq!(wait_pid(pid), 0);
            })
            .join()
            .unwrap();
            say("parent", std::process::id());
        }
        other => panic!("unknown task {other}"),
    }
}

thread_local! {
    static LAST: std::cell::RefCell<Option<ForkOnDrop>> = const { std::cell::RefCell::new(None) };
}

/// Forks when dropped (at its thread's end); the child counts `N` into
/// the inherited model, the parent waits for it.
struct ForkOnDrop(Worker);

impl Drop for ForkOnDrop {
    fn drop(&mut self) {
        let pid = fork();
        if pid == 0 {
            in_forked_child(|| {
                for _ in 0..N {
                    self.0.hits.incr();
                }
                say("forked", std::process::id());
            });
        }
        assert_eq!(wait_pid(pid), 0, "the forked child failed");
    }
}

/// The one stats file of process `pid` in `MMSTATS_DIR`.
fn w_path(pid: u32) -> PathBuf {
    let dir = PathBuf::from(std::env::var_os("MMSTATS_DIR").unwrap());
    let (files, _) = mmstats_read::discover(&[&dir]);
    let mine: Vec<PathBuf> = files
        .into_iter()
        .filter(|f| mmstats_read::read_file(f).unwrap().info.pid == pid)
        .collect();
    assert_eq!(mine.len(), 1, "{mine:?}");
    mine.into_iter().next().unwrap()
}

/// Splits snapshots by process, then by model instance: the one opened
/// with `open` has `level` 42 set before the fork.
fn by_pid(snaps: Vec<Snapshot>) -> HashMap<u32, Vec<Snapshot>> {
    let mut m: HashMap<u32, Vec<Snapshot>> = HashMap::new();
    for s in snaps {
        m.entry(s.info.pid).or_default().push(s);
    }
    for v in m.values_mut() {
        v.sort_by_key(|s| gauge(s, "level") != 42);
    }
    m
}

#[test]
fn parent_and_forked_child_each_count_into_their_own_files() {
    mmstats::install_sigbus_guard().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let child = spawn_child("child", dir.path(), "fork-counts");
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let said = |k: &str| -> u32 {
        let p = format!("{k}=");
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&p))
            .unwrap()
            .parse()
            .unwrap()
    };
    let (parent, forked) = (said("parent"), said("child"));
    let procs = by_pid(snapshots(dir.path()));
    assert_eq!(procs.len(), 2, "files of two processes: {:?}", procs.keys());
    let (p, c) = (&procs[&parent], &procs[&forked]);
    assert_eq!(p.len(), 2, "the model and the per-thread instance");
    assert_eq!(c.len(), 2, "the child's own two files");
    // The parent's files: what it counted before and after the fork, and
    // nothing of the child's.
    assert_eq!(counter(&p[0], "hits"), 5 + N);
    assert_eq!(counter(&p[1], "hits"), 7 + N);
    assert_eq!(timer_count(&p[0], "lat"), 2);
    // The child's files: exactly what it counted; the gauge and text it
    // inherited; its own pid, and closed by its own exit.
    assert_eq!(counter(&c[0], "hits"), N);
    assert_eq!(counter(&c[1], "hits"), N);
    assert_eq!(timer_count(&c[0], "lat"), 1);
    assert_eq!(timer_count(&c[1], "lat"), 0);
    assert_eq!(gauge(&c[0], "level"), 42);
    assert_eq!(text(&c[0], "note"), "before");
    for s in p.iter().chain(c) {
        assert_eq!(s.info.state, WriterState::Exited, "{:?}", s.info.path);
        assert!(!s.info.alive, "{:?}", s.info.path);
        assert_eq!(s.info.fallbacks, 0, "{:?}", s.info.path);
    }
    for s in c {
        assert_ne!(s.info.tid, 0);
        assert!(
            s.info.path.to_string_lossy().contains(&forked.to_string()),
            "{:?}",
            s.info.path
        );
    }
}

#[test]
fn a_child_that_outlives_its_parent_leaves_the_parents_files_dead() {
    mmstats::install_sigbus_guard().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn_child("child", dir.path(), "orphan");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    // Kept open until the end (`wait` would close it), since the forked
    // child waits for its end.
    let stdin = child.stdin.take().unwrap();
    // Two processes print, in either order.
    let said = wait_for_all(&mut out, &["parent", "forked"]);
    let parent: u32 = said[0].parse().unwrap();
    let forked: u32 = said[1].parse().unwrap();
    // The parent _exit()ed; the child runs on, holding every descriptor
    // the parent had.
    assert!(child.wait().unwrap().success());
    let procs = by_pid(snapshots(dir.path()));
    for s in &procs[&parent] {
        // Not closed (no exit handler ran), and not alive.
        assert_eq!(s.info.state, WriterState::Active, "{:?}", s.info.path);
        assert!(!s.info.alive, "the dead parent's {:?}", s.info.path);
    }
    let mine = &procs[&forked];
    assert_eq!(mine.len(), 2);
    for s in mine {
        assert!(s.info.alive, "the live child's {:?}", s.info.path);
        assert_eq!(counter(s, "hits"), 11);
    }
    // Let the child go (EOF on its stdin), and see it close its files.
    drop(stdin);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    for s in &by_pid(snapshots(dir.path()))[&forked] {
        assert_eq!(s.info.state, WriterState::Exited);
        assert!(!s.info.alive);
    }
}

#[test]
fn truncating_a_live_writers_file_does_not_kill_it() {
    mmstats::install_sigbus_guard().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn_child("child", dir.path(), "truncate");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let path = PathBuf::from(wait_for(&mut out, "path"));
    // What `truncate -s 0 FILE` does, from another process (this one).
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(0)
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"go\n").unwrap();
    assert_eq!(wait_for(&mut out, "fallbacks"), "1", "went dark, counted");
    let error = wait_for(&mut out, "error");
    assert!(
        error.contains("truncated") && error.contains(&path.display().to_string()),
        "{error}"
    );
    wait_for(&mut out, "done");
    drop(stdin);
    let status = child.wait().unwrap();
    assert!(status.success(), "the writer died: {status:?}");
    // A fresh file under the old name holds every count made since the
    // truncation (the ones before went with the file's bytes).
    let snaps = snapshots(dir.path());
    let model = snaps
        .iter()
        .find(|s| s.info.path == path)
        .expect("the file was made again under its name");
    assert_eq!(counter(model, "hits"), 1010);
    assert_eq!(text(model, "note"), "after");
    assert_eq!(model.info.state, WriterState::Exited);
    assert_eq!(model.info.fallbacks, 1);
    assert_eq!(snaps.len(), 2, "the model and the new thread's instance");
}

#[test]
fn a_child_that_cannot_make_its_file_counts_privately_never_into_the_parents() {
    mmstats::install_sigbus_guard().unwrap();
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("stats");
    fs::create_dir(&dir).unwrap();
    let child = spawn_child("child", &dir, "fork-no-dir");
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let snaps = snapshots(&dir.with_extension("moved"));
    assert_eq!(snaps.len(), 1, "only the parent's file");
    assert_eq!(counter(&snaps[0], "hits"), 5 + N, "nothing of the child's");
    assert_eq!(snaps[0].info.state, WriterState::Exited);
    assert!(!dir.exists(), "the child made no directory");
}

/// A child whose inherited file fell back to private memory (no
/// directory) forks again once the directory is back: the grandchild's
/// file, made at the fork, is re-homed like any other when truncated.
#[test]
fn a_grandchild_of_a_private_fallback_has_a_file_like_any_other() {
    mmstats::install_sigbus_guard().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let child = spawn_child("child", dir.path(), "fork-twice");
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("grandchild="), "{stdout}");
}

/// A thread that forks while its thread locals are being destroyed (from
/// a thread local's destructor) gets a child that counts into a file of
/// its own too, never into the parent's.
#[test]
fn a_fork_during_thread_local_teardown_never_writes_the_parents_file() {
    mmstats::install_sigbus_guard().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let child = spawn_child("child", dir.path(), "fork-in-tls-dtor");
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let said = |k: &str| -> u32 {
        let p = format!("{k}=");
        let line = stdout.lines().find_map(|l| l.strip_prefix(&p));
        line.unwrap_or_else(|| panic!("no {k} in {stdout}"))
            .parse()
            .unwrap()
    };
    let (parent, forked) = (said("parent"), said("forked"));
    let procs = by_pid(snapshots(dir.path()));
    assert_eq!(procs[&parent].len(), 1);
    assert_eq!(
        counter(&procs[&parent][0], "hits"),
        5,
        "nothing of the child's"
    );
    let mine = procs.get(&forked).expect("the child's own file");
    assert_eq!(counter(&mine[0], "hits"), N);
    assert_eq!(mine[0].info.state, WriterState::Exited);
}

#[test]
fn a_file_truncated_before_a_normal_exit_is_made_again_at_the_exit() {
    mmstats::install_sigbus_guard().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn_child("child", dir.path(), "truncate-exit");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let path = PathBuf::from(wait_for(&mut out, "path"));
    // What `: > FILE` does.
    fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"go\n").unwrap();
    drop(stdin);
    let status = child.wait().unwrap();
    assert!(status.success(), "the writer died: {status:?}");
    let snaps = snapshots(dir.path());
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0].info.path, path);
    assert_eq!(counter(&snaps[0], "hits"), 1000);
    assert_eq!(snaps[0].info.state, WriterState::Exited);
    assert_eq!(snaps[0].info.fallbacks, 1);
}
