//! mmash's HTTP side among clients and neighbours that do not play fair:
//! clients that ask and never read, links planted to probe what root can
//! see, another user's junk in `/dev/shm`, and a low descriptor limit.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::unix::fs::symlink;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{writer_main, Mmash, Writer, BIN};

#[test]
fn writer_child() {
    writer_main();
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within 90 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How many sockets process `pid` has open.
fn sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|l| l.to_string_lossy().starts_with("socket:"))
        .count()
}

/// Clients that pipeline a thousand snapshot requests each and never read
/// a byte are dropped at the write timeout; meanwhile others are served
/// and mmash's memory stays bounded by the bodies in flight.
#[test]
fn clients_that_never_read_are_dropped_and_pin_no_memory() {
    let dir = common::stats_dir();
    let mut ws = Vec::new();
    for i in 0..10 {
        let mut w = Writer::start(dir.path());
        w.send(&format!("add {}", i + 1));
        ws.push(w);
    }
    let m = Mmash::on(dir.path(), &["--client-timeout", "1"]);
    let pid = m.child.id();
    let one = m.get("/api/v1/snapshot").body.len();
    let fds = sockets(pid);
    let rss = m.rss_kib();
    let reqs = "GET /api/v1/snapshot HTTP/1.1\r\nHost: t\r\n\r\n".repeat(1000);
    let mut stalled = Vec::new();
    for _ in 0..30 {
        let mut s = TcpStream::connect(m.addr).unwrap();
        s.write_all(reqs.as_bytes()).unwrap();
        stalled.push(s);
    }
    // 30 clients asked for 30,000 bodies of `one` bytes and read none.
    let mut peak = rss;
    wait_for("the stalled clients dropped", || {
        peak = peak.max(m.rss_kib());
        assert_eq!(m.get("/healthz").status, 200, "others are still served");
        sockets(pid) <= fds
    });
    let asked_kib = (30 * 1000 * one / 1024) as u64;
    assert!(
        peak < rss + 64 * 1024,
        "RSS went from {rss} to {peak} KiB for {asked_kib} KiB asked and never read"
    );
    assert_eq!(m.get("/metrics").status, 200);
    drop(stalled);
}

/// `/files/GLOB` is answered from the names of the files read, never by
/// looking on disk: behind a planted link to a directory only root can
/// read, a link and a plain file there answer alike.
#[test]
fn files_answers_alike_for_every_path_it_will_not_serve() {
    let dir = common::stats_dir();
    let mut w = Writer::start(dir.path());
    w.send("add 1");
    let secret = tempfile::tempdir().unwrap();
    symlink("/etc/passwd", secret.path().join("link")).unwrap();
    std::fs::write(secret.path().join("plain"), "x").unwrap();
    symlink(secret.path(), dir.path().join("d")).unwrap();
    symlink("/etc/passwd", dir.path().join("evil.mmstats")).unwrap();
    let m = Mmash::on(dir.path(), &[]);
    let answers: Vec<(u16, String)> = [
        "d/link",
        "d/plain",
        "d/none",
        "evil.mmstats",
        "nothing.mmstats",
    ]
    .iter()
    .map(|p| {
        let r = m.get(&format!("/files/{p}"));
        (r.status, r.body)
    })
    .collect();
    for a in &answers {
        assert_eq!(a, &answers[0], "{answers:?}");
    }
    assert_eq!(answers[0], (200, r#"{"files":[]}"#.to_owned()));
}

/// mmash over the default directories (no PATH, no `$MMSTATS_DIR`).
fn default_mmash() -> Mmash {
    let saved = std::env::var_os("MMSTATS_DIR");
    std::env::remove_var("MMSTATS_DIR");
    let m = Mmash::start(&["--retire-after", "off"]);
    if let Some(v) = saved {
        std::env::set_var("MMSTATS_DIR", v);
    }
    m
}

/// A self-looping link `/dev/shm/mmstats-*`: another user's fails nobody's
/// health; this user's fails it only while it is there.
#[test]
fn healthz_follows_the_directories_as_they_are_now() {
    let uid = {
        let name = "mmtest-junk";
        let id = || {
            let out = Command::new("id").args(["-u", name]).output().unwrap();
            String::from_utf8(out.stdout)
                .unwrap()
                .trim()
                .parse::<u32>()
                .ok()
        };
        if id().is_none() {
            let _ = Command::new("useradd")
                .args(["--system", "--no-create-home", name])
                .status();
        }
        id().expect("useradd mmtest-junk")
    };
    let theirs = format!("/dev/shm/mmstats-junk-{}", std::process::id());
    let mine = format!("/dev/shm/mmstats-loop-{}", std::process::id());
    symlink(&theirs, &theirs).unwrap();
    std::os::unix::fs::lchown(&theirs, Some(uid), Some(uid)).unwrap();
    symlink(&mine, &mine).unwrap();
    let m = default_mmash();
    let r = m.get("/healthz");
    assert_eq!(r.status, 503, "this user's own loop: {}", r.body);
    assert!(r.body.contains(&mine), "{}", r.body);
    std::fs::remove_file(&mine).unwrap();
    let r = m.get("/healthz");
    assert_eq!(r.status, 200, "{}", r.body);
    let h: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let junk = h["dirs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["path"] == theirs.as_str())
        .unwrap_or_else(|| panic!("{theirs} not listed: {h}"));
    assert_eq!(junk["readable"], false, "{h}");
    assert_eq!(junk["counts"], false, "{h}");
    assert_eq!(junk["owner"], uid, "{h}");
    std::fs::remove_file(&theirs).unwrap();
}

/// The soft descriptor limit is raised to the hard one at start, and said.
#[test]
fn the_open_files_limit_is_raised_and_logged() {
    let dir = common::stats_dir();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("ulimit -Sn 200 && exec \"$0\" \"$@\"")
        .arg(BIN)
        .args(["--listen", "127.0.0.1:0"])
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut said = String::new();
    while !said.contains("listening on") {
        assert!(
            err.read_line(&mut said).unwrap() > 0,
            "mmash exited: {said}"
        );
    }
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let nums: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(nums[0], nums[1], "soft is the hard limit: {line}");
    assert!(
        said.contains(&format!("open files limit raised from 200 to {}", nums[1])),
        "{said}"
    );
}
