//! The reader's SIGBUS guard: explicit installation, faults outside reader
//! mappings handed on exactly as before (checked in child processes, since
//! they kill or take over the process), and more mappings than one
//! registry chunk.

use std::fs::File;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use mmstats::{Counter, Stats};
use mmstats_read::{ReadError, Reader, Value};

#[derive(Stats)]
struct Probe {
    hits: Counter,
}

/// Which child case to run, for `child`.
const CASE_ENV: &str = "MMSTATS_SIGBUS_CASE";
/// Exit codes of the child's own handlers.
const SIGINFO_OK: i32 = 42;
const PLAIN_OK: i32 = 45;
const BAD_MASK: i32 = 43;
const BAD_ADDR: i32 = 44;

/// A stats file with `hits` = 7 in a fresh directory, written and closed.
fn stats_file(dir: &Path) -> PathBuf {
    let stats = Probe::builder().dir(dir).open().unwrap();
    stats.hits.add(7);
    drop(stats);
    let (files, problems) = mmstats_read::discover(&[dir]);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(files.len(), 1);
    files[0].clone()
}

/// Runs this test binary as `child` with `case`, and returns what it did.
fn run_child(case: &str) -> Output {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CASE_ENV, case)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn describe(status: ExitStatus, out: &Output) -> String {
    format!(
        "child {status}\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn assert_killed_by_sigbus(case: &str) -> Output {
    let out = run_child(case);
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGBUS),
        "{case}: expected death by SIGBUS; {}",
        describe(out.status, &out)
    );
    out
}

fn assert_exit_code(case: &str, code: i32) {
    let out = run_child(case);
    assert_eq!(
        out.status.code(),
        Some(code),
        "{case}: expected exit code {code}; {}",
        describe(out.status, &out)
    );
}

/// The Rust runtime's own SIGBUS handler (for stack overflows) is the
/// previous one here: it puts back the default action and returns.
#[test]
fn a_fault_outside_reader_mappings_still_kills_by_sigbus() {
    assert_killed_by_sigbus("fault-outside");
}

/// With the default action as the previous one.
#[test]
fn a_fault_outside_reader_mappings_still_kills_by_sigbus_under_sig_dfl() {
    assert_killed_by_sigbus("fault-outside-dfl");
}

/// A sent SIGBUS has no address to repair: it is sent again under the
/// default action.
#[test]
fn a_sigbus_sent_by_kill_still_kills_by_sigbus_under_sig_dfl() {
    assert_killed_by_sigbus("raise-dfl");
}

#[test]
fn a_previous_siginfo_handler_gets_faults_outside_reader_mappings() {
    assert_exit_code("siginfo-handler", SIGINFO_OK);
}

#[test]
fn a_previous_plain_handler_gets_faults_outside_reader_mappings() {
    assert_exit_code("plain-handler", PLAIN_OK);
}

#[test]
fn a_previous_one_shot_handler_runs_once_then_the_default_kills() {
    let out = assert_killed_by_sigbus("resethand-handler");
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        said.matches("one-shot handler ran").count(),
        1,
        "the SA_RESETHAND handler runs exactly once; {}",
        describe(out.status, &out)
    );
}

#[test]
fn opening_a_reader_without_the_guard_says_what_to_call() {
    let out = run_child("no-guard");
    assert!(
        out.status.success(),
        "the no-guard checks failed; {}",
        describe(out.status, &out)
    );
}

#[test]
fn more_readers_than_one_registry_chunk_and_one_of_them_truncated() {
    mmstats::install_sigbus_guard().unwrap();
    // Every Reader keeps its file open (to probe the writer's lock).
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    let want = 3_200;
    if lim.rlim_cur < want {
        lim.rlim_cur = lim.rlim_max.min(want);
        // SAFETY: `lim` is a valid rlimit with cur <= max.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
    }
    assert!(
        lim.rlim_cur >= 1_500,
        "this test needs 1,500 open files (more than one registry chunk of 1024 readers); \
         the hard limit is {}: raise it with ulimit -Hn",
        lim.rlim_max
    );
    let readers = (lim.rlim_cur.min(want) - 150) as usize;

    let dir = tempfile::tempdir().unwrap();
    let shared = stats_file(dir.path());
    let doomed = dir.path().join("doomed.mmstats");
    std::fs::copy(&shared, &doomed).unwrap();

    let mut open: Vec<Reader> = (0..readers / 2)
        .map(|_| Reader::open(&shared).unwrap())
        .collect();
    // In the middle, so its slot is neither the first nor the last.
    let victim = Reader::open(&doomed).unwrap();
    open.extend((readers / 2..readers).map(|_| Reader::open(&shared).unwrap()));
    assert!(victim.snapshot().is_ok());

    File::options()
        .write(true)
        .open(&doomed)
        .unwrap()
        .set_len(0)
        .unwrap();
    match victim.snapshot() {
        Err(ReadError::Truncated { path }) => assert_eq!(path, doomed),
        other => panic!("expected Truncated for {}, got {other:?}", doomed.display()),
    }
    for (i, r) in open.iter().enumerate() {
        let snap = r
            .snapshot()
            .unwrap_or_else(|e| panic!("reader {i} of {readers}: {e}"));
        assert_eq!(snap.field("hits").unwrap().value, Value::Counter(7));
    }
    // Slots come back: as many again after dropping them all.
    drop(open);
    drop(victim);
    let again: Vec<Reader> = (0..readers)
        .map(|_| Reader::open(&shared).unwrap())
        .collect();
    assert_eq!(again.len(), readers);
}

// ------------------------------------------------------------- the child --

/// The child half of the tests above: runs the case named in
/// `MMSTATS_SIGBUS_CASE`. Cases that fault end the process from a signal
/// handler or by the signal; returning means the fault was swallowed.
#[test]
#[ignore = "run as a child process by the other tests in this file"]
fn child() {
    let Ok(case) = std::env::var(CASE_ENV) else {
        return;
    };
    // A SIGBUS death must not leave a core file behind.
    let no_core = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `no_core` is a valid rlimit.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_CORE, &no_core) }, 0);
    let dir = tempfile::tempdir().unwrap();
    match case.as_str() {
        "fault-outside" => {
            mmstats::install_sigbus_guard().unwrap();
            let _reader = open_a_reader(dir.path());
            fault_outside_readers(dir.path());
        }
        "fault-outside-dfl" => {
            install_own_handler(libc::SIG_DFL, 0);
            mmstats::install_sigbus_guard().unwrap();
            let _reader = open_a_reader(dir.path());
            fault_outside_readers(dir.path());
        }
        "raise-dfl" => {
            install_own_handler(libc::SIG_DFL, 0);
            mmstats::install_sigbus_guard().unwrap();
            let _reader = open_a_reader(dir.path());
            // SAFETY: raise has no preconditions.
            unsafe { libc::raise(libc::SIGBUS) };
        }
        "siginfo-handler" => {
            install_own_handler(on_bus_siginfo as *const () as usize, libc::SA_SIGINFO);
            mmstats::install_sigbus_guard().unwrap();
            let _reader = open_a_reader(dir.path());
            fault_outside_readers(dir.path());
        }
        "plain-handler" => {
            install_own_handler(on_bus_plain as *const () as usize, 0);
            mmstats::install_sigbus_guard().unwrap();
            let _reader = open_a_reader(dir.path());
            fault_outside_readers(dir.path());
        }
        "resethand-handler" => {
            install_own_handler(on_bus_once as *const () as usize, libc::SA_RESETHAND);
            mmstats::install_sigbus_guard().unwrap();
            let _reader = open_a_reader(dir.path());
            fault_outside_readers(dir.path());
        }
        "no-guard" => {
            // Not made by this process's writer: opening one installs the
            // guard (checked at the end).
            let path = dir.path().join("golden.mmstats");
            let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/golden.mmstats");
            std::fs::copy(golden, &path).unwrap();
            for err in [
                Reader::open(&path).unwrap_err(),
                mmstats_read::read_file(&path).unwrap_err(),
            ] {
                assert!(
                    matches!(&err, ReadError::NoSigbusGuard { path: p } if *p == path),
                    "{err:?}"
                );
                let msg = err.to_string();
                assert!(
                    msg.contains("call mmstats::install_sigbus_guard()"),
                    "{msg}"
                );
                assert!(msg.contains(&path.display().to_string()), "{msg}");
            }
            // A writer's first file installs the guard, which it needs too.
            let own = dir.path().join("own");
            std::fs::create_dir(&own).unwrap();
            let own = stats_file(&own);
            assert!(mmstats_read::read_file(&own).is_ok());
            assert!(mmstats_read::read_file(&path).is_ok());
            mmstats::install_sigbus_guard().unwrap();
            return;
        }
        other => panic!("unknown {CASE_ENV} {other:?}"),
    }
    panic!("case {case}: the fault was swallowed");
}

/// A reader on a stats file of its own, so the guard has a mapping that
/// the fault is not in.
fn open_a_reader(dir: &Path) -> Reader {
    let reader = Reader::open(stats_file(dir)).unwrap();
    assert!(reader.snapshot().is_ok());
    reader
}

/// Where the child faults: its handlers check they were told this address.
static FAULT_ADDR: AtomicUsize = AtomicUsize::new(0);

/// Maps a file of our own (not through a reader), truncates it, and loads
/// from it: SIGBUS at an address no reader mapped.
fn fault_outside_readers(dir: &Path) {
    let path = dir.join("not-a-reader");
    let mut f = File::options()
        .create_new(true)
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    f.write_all(&[1; 8192]).unwrap();
    // SAFETY: the mapping is only read below, through a raw pointer.
    let map = unsafe { memmap2::MmapOptions::new().len(8192).map(&f) }.unwrap();
    f.set_len(0).unwrap();
    let addr = map.as_ptr() as usize + 4096;
    // Relaxed: read by a handler on this same thread.
    FAULT_ADDR.store(addr, Ordering::Relaxed);
    // SAFETY: in bounds of the mapping; the load faults, which is the point.
    let v = unsafe { std::ptr::read_volatile(addr as *const u8) };
    println!("read {v} past the end of a truncated file");
}

fn install_own_handler(handler: usize, flags: libc::c_int) {
    // SAFETY: all-zero is a valid sigaction; every field used is set, and
    // `handler` has the signature `flags` says.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler;
        action.sa_flags = flags;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaddset(&mut action.sa_mask, libc::SIGUSR1);
        assert_eq!(
            libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut()),
            0
        );
    }
}

/// Whether SIGUSR1, in the child's handlers' `sa_mask`, is blocked now.
fn usr1_blocked() -> bool {
    // SAFETY: a null `set` only reads the mask into `cur`.
    unsafe {
        let mut cur: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut cur);
        libc::sigismember(&cur, libc::SIGUSR1) == 1
    }
}

extern "C" fn on_bus_siginfo(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: called as an SA_SIGINFO handler, with the kernel's siginfo.
    let addr = unsafe { (*info).si_addr() } as usize;
    // Relaxed: stored by this thread before it faulted.
    let code = if addr != FAULT_ADDR.load(Ordering::Relaxed) {
        BAD_ADDR
    } else if !usr1_blocked() {
        BAD_MASK
    } else {
        SIGINFO_OK
    };
    // SAFETY: _exit is async-signal-safe.
    unsafe { libc::_exit(code) };
}

extern "C" fn on_bus_plain(_: libc::c_int) {
    let code = if usr1_blocked() { PLAIN_OK } else { BAD_MASK };
    // SAFETY: _exit is async-signal-safe.
    unsafe { libc::_exit(code) };
}

extern "C" fn on_bus_once(_: libc::c_int) {
    let msg = b"\none-shot handler ran\n";
    // SAFETY: write is async-signal-safe; `msg` is a valid buffer.
    unsafe { libc::write(1, msg.as_ptr().cast(), msg.len()) };
}
