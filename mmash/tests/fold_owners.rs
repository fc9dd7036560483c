//! Root's periodic fold among owners who fight it: real users made with
//! `useradd`, a real `mmash retire` child stopped with SIGSTOP by the test
//! (as its owner may do), and 100 MiB written into that child's stdout
//! through `/proc/PID/fd/1` (as its owner may also do). Another owner's
//! dead writers are folded all the same, mmash's memory stays flat, and the
//! stopped child is killed at its deadline, counted and logged once.

mod common;

use std::io::Write;
use std::os::unix::fs::{chown, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{writer_main, Writer, BIN};

#[test]
fn writer_child() {
    writer_main();
}

/// The uid and gid of `name`, made with `useradd` if it does not exist.
fn user(name: &str) -> (u32, u32) {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, name]).output().ok()?;
        String::from_utf8(out.stdout).ok()?.trim().parse().ok()
    };
    if id("-u").is_none() {
        let st = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
            ])
            .arg(name)
            .status()
            .expect("run useradd");
        assert!(st.success() || id("-u").is_some(), "useradd {name}: {st}");
    }
    (id("-u").unwrap(), id("-g").unwrap())
}

/// Dead writers made by root in a directory of their own, handed to
/// `uid`, then moved into `dir` at once.
fn dead_writers_of(dir: &Path, uid: u32, gid: u32, n: usize) {
    let stage = tempfile::tempdir_in(dir.parent().unwrap()).unwrap();
    let mut ws = Vec::new();
    for i in 0..n {
        let mut w = Writer::start(stage.path());
        w.send(&format!("add {}", i + 1));
        ws.push(w);
    }
    ws.into_iter().for_each(Writer::kill);
    for e in std::fs::read_dir(stage.path()).unwrap() {
        let p = e.unwrap().path();
        chown(&p, Some(uid), Some(gid)).unwrap();
        std::fs::rename(&p, dir.join(p.file_name().unwrap())).unwrap();
    }
}

/// (writers' files, archives) in `dir`.
fn files(dir: &Path) -> (usize, usize) {
    let names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".mmstats"))
        .collect();
    let archives = names
        .iter()
        .filter(|n| n.ends_with(".archive.mmstats"))
        .count();
    (names.len() - archives, archives)
}

/// The state letter of process `pid` (`T` when stopped), if it exists.
fn state(pid: u32) -> Option<char> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s[s.rfind(')')? + 1..].trim_start().chars().next()
}

/// The children of `parent` whose command line holds `needle`.
fn children(parent: u32, needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let ppid = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if ppid == Some(parent) && String::from_utf8_lossy(&cmdline).contains(needle) {
            out.push(pid);
        }
    }
    out
}

/// Waits up to 90 s for `cond`, saying `what` and mmash's log if it never holds.
fn wait_for(m: &common::Mmash, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "{what}: not within 90 s; mmash said:\n{}",
            m.log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn deadline_failures(m: &common::Mmash) -> f64 {
    let page = m.get("/metrics").body;
    page.lines()
        .find_map(|l| l.strip_prefix("mmash_retire_failures_total{reason=\"deadline\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no deadline failures series:\n{page}"))
}

#[test]
fn a_stopped_fold_child_delays_no_other_owner_and_is_killed_at_its_deadline() {
    let me = std::fs::metadata("/proc/self").unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&me),
        0,
        "this test checks what mmash does as root among other users: run it as root, as CI does"
    );
    let (ua, ga) = user("mmtest-stall");
    let (ub, gb) = user("mmtest-fold");
    let base = tempfile::tempdir().unwrap();
    std::fs::set_permissions(base.path(), PermissionsExt::from_mode(0o755)).unwrap();
    let (dir_a, dir_b): (PathBuf, PathBuf) = (base.path().join("a"), base.path().join("b"));
    for (d, u, g) in [(&dir_a, ua, ga), (&dir_b, ub, gb)] {
        std::fs::create_dir(d).unwrap();
        std::fs::set_permissions(d, PermissionsExt::from_mode(0o700)).unwrap();
        chown(d, Some(u), Some(g)).unwrap();
    }
    dead_writers_of(&dir_a, ua, ga, 2);
    // mmash where its children, which run as those users, can run it.
    let bin = base.path().join("mmash");
    std::fs::copy(BIN, &bin).unwrap();
    std::fs::set_permissions(&bin, PermissionsExt::from_mode(0o755)).unwrap();
    let m = common::Mmash::start_bin(
        &bin,
        &[
            dir_a.to_str().unwrap(),
            dir_b.to_str().unwrap(),
            "--retire-after",
            "1s",
            "--test-fold-deadline",
            "30s",
        ],
    );
    let mmash_pid = m.child.id();

    // Catch a fold child of A's and stop it, as user A may.
    let needle = dir_a.to_str().unwrap().to_owned();
    let mut stopped = None;
    wait_for(&m, "a fold child of A's to stop", || {
        for pid in children(mmash_pid, &needle) {
            let st = Command::new("kill")
                .args(["-STOP", &pid.to_string()])
                .stderr(std::process::Stdio::null())
                .status()
                .unwrap();
            if st.success() && state(pid) == Some('T') {
                stopped = Some(pid);
                return true;
            }
        }
        false
    });
    let stalled = stopped.unwrap();

    // A floods the stopped child's stdout: mmash keeps only its bound.
    let rss_before = m.rss_kib();
    let mut pipe = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/{stalled}/fd/1"))
        .unwrap();
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..100 {
        pipe.write_all(&chunk).unwrap();
    }
    drop(pipe);
    let rss_after = m.rss_kib();
    assert!(
        rss_after < rss_before + 16 * 1024,
        "100 MiB written to a fold child's stdout grew mmash from {rss_before} to {rss_after} KiB"
    );

    // B's writers die while A's child is stopped: they are folded anyway.
    dead_writers_of(&dir_b, ub, gb, 3);
    wait_for(&m, "B's dead writers folded", || files(&dir_b) == (0, 1));
    assert_eq!(
        state(stalled),
        Some('T'),
        "A's fold child was stopped all along"
    );

    // At its deadline the stopped child is killed and reaped, counted and
    // logged once; A is folded again afterwards.
    wait_for(&m, "the stopped child killed and reaped", || {
        state(stalled).is_none()
    });
    wait_for(&m, "the deadline counted", || deadline_failures(&m) >= 1.0);
    let line_of_a = |l: &&str| l.contains(&needle) && l.contains("did not finish within");
    wait_for(&m, "the deadline logged", || {
        m.log.lock().unwrap().lines().any(|l| line_of_a(&l))
    });
    dead_writers_of(&dir_a, ua, ga, 2);
    wait_for(&m, "A's dead writers folded after the kill", || {
        files(&dir_a) == (0, 1)
    });
    assert_eq!(deadline_failures(&m), 1.0);
    let log = m.log.lock().unwrap().clone();
    assert_eq!(log.lines().filter(|l| line_of_a(l)).count(), 1, "{log}");
    assert!(!log.contains("xxxx"), "the flood reached the log: {log}");
}
