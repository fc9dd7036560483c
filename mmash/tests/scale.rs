//! mmash needs no descriptor per file: 2,000 live files of 10 writer
//! processes, counted exactly by an mmash whose descriptor limit is 256
//! (soft and hard). The same holds at 30,000 files under 4096 (measured by
//! hand, see the README's figures).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::{stats_dir, Mmash, BIN};

#[test]
fn writer_child() {
    common::writer_main();
}

/// The `fleet` example, built beside the tests by `cargo test`.
fn fleet() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let path = dir.join("examples/fleet");
    assert!(path.exists(), "{} is not built", path.display());
    path
}

#[test]
fn two_thousand_files_under_a_limit_of_256_descriptors() {
    let (procs, threads) = (10u64, 200u64);
    let dir = stats_dir();
    let mut writers = Command::new(fleet())
        .arg(dir.path())
        .arg(procs.to_string())
        .arg(threads.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(writers.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    let files = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".mmstats")
        })
        .count() as u64;
    assert_eq!(files, procs * threads);
    // mmash under a hard limit of 256 open files.
    let wrapper = dir.path().join("limited.sh");
    std::fs::write(
        &wrapper,
        format!("#!/bin/bash\nulimit -n 256 || exit 1\nexec {BIN} \"$@\"\n"),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let m = Mmash::start_bin(&wrapper, &[dir.path().to_str().unwrap()]);
    let page = m.get("/metrics").body;
    let total: u64 = page
        .lines()
        .filter(|l| l.starts_with("bench_c00_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    // Thread t of each process counted t + 1.
    assert_eq!(
        total,
        procs * threads * (threads + 1) / 2,
        "{}",
        &page[..page.len().min(3000)]
    );
    let files_alive: u64 = page
        .lines()
        .find(|l| l.starts_with("mmash_files{state=\"alive\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0);
    assert_eq!(files_alive, files);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", m.child.id())).unwrap();
    let open = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    assert!(open.split_whitespace().nth(3) == Some("256"), "{open}");
    writers.stdin.take().unwrap().write_all(b"\n").unwrap();
    writers.wait().unwrap();
}

/// A user's first directory, made after mmash started, is read at the next
/// request, not at the next full rescan (an hour away here).
#[test]
fn a_new_user_directory_is_served_at_once() {
    let shm = stats_dir();
    let wrapper = shm.path().join("scan-root.sh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/bash\nunset MMSTATS_DIR\nexport MMSTATS_SCAN_ROOT={}\nexec {BIN} \"$@\"\n",
            shm.path().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let m = Mmash::start_bin(&wrapper, &["--rescan", "3600"]);
    assert!(!m.get("/metrics").body.contains("web_status_2xx_total"));
    let dir = shm.path().join(format!("mmstats-{}", mmstats::geteuid()));
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut w = common::Writer::start(&dir);
    w.send("add 3");
    // Within a second of the file appearing (no timing is asserted: the
    // bound is the rescan an hour away).
    let start = std::time::Instant::now();
    loop {
        let page = m.get("/metrics").body;
        if page
            .lines()
            .any(|l| l.starts_with("web_status_2xx_total{") && l.ends_with(" 3"))
        {
            break;
        }
        assert!(start.elapsed().as_secs() < 30, "never served:\n{page}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
