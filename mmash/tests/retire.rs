//! Retiring dead writers (format-spec.md §2.8), proven with real
//! processes: writers that exit or are killed, `mmash retire` folders that
//! abort at every step of the protocol or run two at once, and readers
//! that sample all the while. The invariant: for every reading, the total
//! of each counter over all files of a (command, model) never decreases,
//! and once everything is folded it equals exactly what the writers
//! recorded.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::{writer_main, Writer, BIN};
use mmstats::Stats;
use mmstats_read::aggregate::{SeriesValue, Sources, View};
use mmstats_read::{ReadLimits, Value};

#[test]
fn writer_child() {
    writer_main();
}

/// What a one-shot reader (slurpstats' way) counts: the sum of the
/// counter over every file, each dead writer once; and the timer count.
fn totals(dir: &Path) -> (u64, u64, usize, usize) {
    mmstats::install_sigbus_guard().unwrap();
    let (files, _) = mmstats_read::scan(&[dir]);
    let (mut sum, mut timed, mut writers, mut archives) = (0, 0, 0, 0);
    for (_, snap) in mmstats_read::retire::read_all(&files, &ReadLimits::default()) {
        let snap = snap.expect("every file reads");
        if snap.info.is_archive() {
            archives += 1;
        } else {
            writers += 1;
        }
        if let Some(Value::Counter(n)) = snap.field("web.status.2xx").map(|f| &f.value) {
            sum += n;
        }
        if let Some(Value::Histogram(h)) = snap.field("web.request").map(|f| &f.value) {
            timed += h.count();
        }
    }
    (sum, timed, writers, archives)
}

/// Starts `n` writers that each add a distinct amount and time one
/// request; ends half cleanly and kills the rest. Returns what they added.
fn dead_writers(dir: &Path, n: usize, seed: u64) -> u64 {
    let mut total = 0;
    let mut ws = Vec::new();
    for i in 0..n {
        let mut w = Writer::start(dir);
        let add = seed * 100 + i as u64 + 1;
        total += w.send(&format!("add {add}"));
        w.send("time 1000");
        w.send("gauge 7");
        ws.push(w);
    }
    for (i, w) in ws.into_iter().enumerate() {
        if i % 2 == 0 {
            w.quit();
        } else {
            w.kill();
        }
    }
    total
}

/// Runs `mmash retire` on `dir`, aborting at `step` if given; returns
/// whether it exited successfully.
fn retire(dir: &Path, step: Option<&str>) -> bool {
    let mut cmd = Command::new(BIN);
    cmd.args(["retire", "--retire-after", "0"]).arg(dir);
    if let Some(s) = step {
        cmd.args(["--abort-at", s]);
    }
    let out = cmd.output().unwrap();
    if step.is_none() {
        assert!(
            out.status.success(),
            "mmash retire failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out.status.success()
}

#[test]
fn a_folder_killed_at_any_step_neither_loses_nor_double_counts() {
    let dir = common::stats_dir();
    let mut expected = 0;
    let mut timed = 0;
    let steps = ["locked", "temp-written", "published", "half-removed"];
    for (round, step) in steps.iter().enumerate() {
        expected += dead_writers(dir.path(), 3, round as u64);
        timed += 3;
        assert_eq!(
            totals(dir.path()).0,
            expected,
            "before the fold of round {round}"
        );
        assert!(
            !retire(dir.path(), Some(step)),
            "the folder aborts at {step}"
        );
        let (sum, t, _, _) = totals(dir.path());
        assert_eq!((sum, t), (expected, timed), "after a folder died at {step}");
    }
    // A live writer is never folded, and stays counted.
    let mut live = Writer::start(dir.path());
    expected += live.send("add 5");
    assert!(retire(dir.path(), None));
    let (sum, t, writers, archives) = totals(dir.path());
    assert_eq!((sum, t), (expected, timed));
    assert_eq!(
        (writers, archives),
        (1, 1),
        "only the live writer and one archive"
    );
    // Leftovers of the aborted folds are gone, and no temporary file stays.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with(".lock.") && !n.ends_with(".fold-lock"))
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(
        names.contains(&"webw.web.archive.mmstats".to_string()),
        "{names:?}"
    );
    // The archive says what it holds; slurpstats-style JSON too.
    let (files, _) = mmstats_read::scan(&[dir.path()]);
    let read = mmstats_read::retire::read_all(&files, &ReadLimits::default());
    let archive = read
        .iter()
        .filter_map(|(_, s)| s.as_ref().ok())
        .find(|s| s.info.is_archive())
        .unwrap();
    let info = archive.info.archive.as_ref().unwrap();
    assert_eq!(info.writers, 12);
    assert!(
        archive.field("web.in_flight").is_none(),
        "gauges are not folded"
    );
    assert_eq!(
        archive.field("web.state").map(|f| &f.value),
        Some(&Value::Text("running".into()))
    );
    live.quit();
}

#[test]
fn two_folders_at_once_count_each_writer_once() {
    let dir = common::stats_dir();
    let mut expected = 0;
    for round in 0..3 {
        expected += dead_writers(dir.path(), 6, round);
        let folders: Vec<_> = (0..3)
            .map(|_| {
                Command::new(BIN)
                    .args(["retire", "--retire-after", "0"])
                    .arg(dir.path())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for mut f in folders {
            assert!(f.wait().unwrap().success());
        }
        let (sum, timed, writers, archives) = totals(dir.path());
        assert_eq!((sum, writers, archives), (expected, 0, 1), "round {round}");
        assert_eq!(timed, 6 * (round + 1));
    }
}

#[test]
fn a_sampling_reader_never_sees_a_total_go_down() {
    let dir = common::stats_dir();
    mmstats::install_sigbus_guard().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (dir, stop) = (dir.path().to_owned(), Arc::clone(&stop));
        std::thread::spawn(move || {
            // One kept up to date by file system events, one that lists
            // the directory on every sample.
            let by_events = Sources::new(&[&dir]);
            let mut by_listing = Sources::new(&[&dir]);
            by_listing.set_rescan_interval(std::time::Duration::ZERO);
            let mut sources = [by_events, by_listing];
            let view = View::default();
            let mut cumulative = [0i128; 2];
            let mut prev = [None, None];
            let (mut last_oneshot, mut samples) = (0u64, 0);
            loop {
                let done = stop.load(Ordering::SeqCst);
                for k in 0..2 {
                    let next = sources[k].sample();
                    let delta = view.delta(prev[k].as_ref(), &next);
                    if let Some(s) = delta.get("web.status.2xx", None) {
                        let SeriesValue::Int(n) = s.value else {
                            panic!("{s:?}")
                        };
                        assert!(n >= 0);
                        cumulative[k] += n;
                    }
                    assert!(delta.warnings.is_empty(), "{:?}", delta.warnings);
                    // The sample's own total, not only the deltas.
                    // (Gone files' last readings are carried for a while
                    // in case they come back; what they counted is in the
                    // archive that folded them, or was counted already.)
                    let total: u64 = next
                        .files
                        .iter()
                        .filter(|f| !f.gone)
                        .filter_map(|f| match f.snapshot.field("web.status.2xx")?.value {
                            Value::Counter(n) => Some(n),
                            _ => None,
                        })
                        .sum();
                    assert_eq!(
                        total as i128, cumulative[k],
                        "sources {k}, sample {samples}"
                    );
                    prev[k] = Some(next);
                }
                let (oneshot, ..) = totals(&dir);
                assert!(oneshot >= last_oneshot, "one-shot total went down");
                last_oneshot = oneshot;
                samples += 1;
                if done {
                    assert_eq!(cumulative[0], cumulative[1]);
                    return (cumulative[0], oneshot, samples);
                }
            }
        })
    };
    let mut expected = 0;
    let steps = [
        None,
        Some("published"),
        Some("half-removed"),
        None,
        Some("temp-written"),
    ];
    for round in 0..20 {
        expected += dead_writers(dir.path(), 3, round);
        retire(dir.path(), steps[round as usize % steps.len()]);
    }
    retire(dir.path(), None);
    stop.store(true, Ordering::SeqCst);
    let (cumulative, oneshot, samples) = reader.join().unwrap();
    assert!(samples > 2);
    assert_eq!(cumulative, expected as i128);
    assert_eq!(oneshot, expected);
}

/// Runs a short-lived writer if this test process was started as one: it
/// adds `MMASH_TEST_ADD` and times one request, then exits normally or
/// aborts (no exit handler, as if killed), as `MMASH_TEST_DIE` says.
#[test]
fn churn_child() {
    let Ok(dir) = std::env::var("MMASH_TEST_CHURN") else {
        return;
    };
    let add: u64 = std::env::var("MMASH_TEST_ADD").unwrap().parse().unwrap();
    let w = common::Web::builder()
        .dir(&dir)
        .command("churn")
        .open()
        .expect("open writer");
    w.ok.add(add);
    w.request.record(std::time::Duration::from_micros(add));
    w.in_flight.set(1);
    if std::env::var("MMASH_TEST_DIE").as_deref() == Ok("abort") {
        std::process::abort();
    }
    drop(w);
    std::process::exit(0);
}

/// The `web_status_2xx` counter series of a /metrics page for command `cmd`.
fn counter_of(page: &str, cmd: &str) -> Option<f64> {
    common::counters(page)
        .into_iter()
        .find(|(s, _)| s.starts_with("web_status_2xx") && s.contains(&format!("\"{cmd}\"")))
        .map(|(_, v)| v)
}

/// Writers are started and die (half of them without closing their file)
/// while mmash serves and folds the directory every second. The CI run
/// uses 2,000 writers (about 9 s on 2 cores); `MMASH_CHURN_WRITERS=10000` runs the full
/// count by hand.
#[test]
fn churn_keeps_the_directory_bounded_and_metrics_monotonic() {
    let n: usize = std::env::var("MMASH_CHURN_WRITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let dir = common::stats_dir();
    let mmash = common::Mmash::on(dir.path(), &["--retire-after", "200ms", "--rescan", "0.5"]);
    let addr = mmash.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let scraper = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut last: std::collections::HashMap<String, f64> = Default::default();
            let mut scrapes = 0;
            while !stop.load(Ordering::SeqCst) {
                let r = common::request(
                    addr,
                    "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                );
                assert_eq!(r.status, 200);
                for (series, v) in common::counters(&r.body) {
                    if let Some(&before) = last.get(&series) {
                        assert!(v >= before, "{series} went down from {before} to {v}");
                    }
                    last.insert(series, v);
                }
                scrapes += 1;
            }
            scrapes
        })
    };
    let exe = std::env::current_exe().unwrap();
    let mut expected = 0u64;
    let batch = 16;
    let started = std::time::Instant::now();
    for b in 0..n.div_ceil(batch) {
        let kids: Vec<_> = (b * batch..((b + 1) * batch).min(n))
            .map(|i| {
                let add = (i % 97) as u64 + 1;
                expected += add;
                Command::new(&exe)
                    .args(["churn_child", "--exact", "--test-threads=1"])
                    .env("MMASH_TEST_CHURN", dir.path())
                    .env("MMASH_TEST_ADD", add.to_string())
                    .env("MMASH_TEST_DIE", if i % 2 == 0 { "exit" } else { "abort" })
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for mut k in kids {
            k.wait().unwrap();
        }
    }
    let churned = started.elapsed();
    // Wait (bounded) until every dead writer is folded and mmash shows it.
    let mut settled = None;
    for _ in 0..600 {
        let files: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".mmstats") && !n.starts_with('.'))
            .collect();
        let page = mmash.get("/metrics").body;
        // The fold's counters are added after its files are gone.
        let counted = page
            .lines()
            .any(|l| l == format!("mmash_retire_files_folded_total {n}"));
        if files.len() == 1 && counter_of(&page, "churn") == Some(expected as f64) && counted {
            settled = Some((files, page));
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    stop.store(true, Ordering::SeqCst);
    let scrapes = scraper.join().unwrap();
    let (files, page) = settled.unwrap_or_else(|| {
        panic!(
            "not folded: {:?}\n{}",
            std::fs::read_dir(dir.path()).unwrap().count(),
            mmash.log.lock().unwrap()
        )
    });
    assert_eq!(files, ["churn.web.archive.mmstats"]);
    let (sum, timed, writers, archives) = totals(dir.path());
    assert_eq!((sum, timed, writers, archives), (expected, n as u64, 0, 1));
    assert!(page.contains("mmash_files{state=\"archive\"} 1"), "{page}");
    let folded = page
        .lines()
        .find_map(|l| l.strip_prefix("mmash_retire_files_folded_total "))
        .unwrap();
    assert_eq!(folded, n.to_string());
    eprintln!(
        "churn: {n} writers in {churned:?}, {scrapes} scrapes of /metrics, all monotonic; \
         the archive is {} bytes",
        std::fs::metadata(dir.path().join(&files[0])).unwrap().len()
    );
}

/// The identities in the archive of `dir`: how many, and how many of
/// those files are known gone.
fn archive_ids(dir: &Path) -> Option<(usize, usize)> {
    mmstats::install_sigbus_guard().unwrap();
    let (files, _) = mmstats_read::scan(&[dir]);
    mmstats_read::retire::read_all(&files, &ReadLimits::default())
        .into_iter()
        .filter_map(|(_, s)| s.ok()?.info.archive.clone())
        .map(|a| {
            (
                a.ids.len(),
                a.ids.iter().filter(|(_, gone)| gone.is_some()).count(),
            )
        })
        .next()
}

/// Runs `mmash retire --retire-after 0` on `dir`, pruning the identities
/// of files gone for `prune`, and asserts that it succeeded.
fn retire_pruning(dir: &Path, prune: &str) {
    let out = Command::new(BIN)
        .args(["retire", "--retire-after", "0", "--test-prune-after", prune])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn identities_are_pruned_only_after_their_files_are_long_gone() {
    let dir = common::stats_dir();
    let expected = dead_writers(dir.path(), 4, 0);
    retire_pruning(dir.path(), "1h");
    assert_eq!(
        archive_ids(dir.path()),
        Some((4, 0)),
        "folded, files just removed"
    );
    retire_pruning(dir.path(), "1h");
    assert_eq!(
        archive_ids(dir.path()),
        Some((4, 4)),
        "found gone, not pruned yet"
    );
    retire_pruning(dir.path(), "1h");
    assert_eq!(
        archive_ids(dir.path()),
        Some((4, 4)),
        "not gone long enough"
    );
    retire_pruning(dir.path(), "0");
    assert_eq!(archive_ids(dir.path()), Some((0, 0)), "pruned");
    // Pruning drops identities, never counts.
    assert_eq!(totals(dir.path()).0, expected);
}

#[test]
fn the_real_default_floor_keeps_identities_a_minute() {
    let dir = common::stats_dir();
    mmstats::install_sigbus_guard().unwrap();
    dead_writers(dir.path(), 2, 0);
    for _ in 0..3 {
        // --prune-after below 1m is refused; the hidden test flag is not used.
        retire(dir.path(), None);
    }
    let (files, _) = mmstats_read::scan(&[dir.path()]);
    let kept = mmstats_read::retire::read_all(&files, &ReadLimits::default())
        .into_iter()
        .filter_map(|(_, s)| s.ok()?.info.archive.clone())
        .map(|a| a.ids.len())
        .sum::<usize>();
    assert_eq!(kept, 2);
    let out = Command::new(BIN)
        .args(["retire", "--prune-after", "5s"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 1m"));
}

#[test]
fn a_directory_others_can_write_or_own_is_not_folded() {
    let dir = common::stats_dir();
    // Owned by another user (CI runs as root, which may give it away).
    let me = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(dir.path()).unwrap());
    std::os::unix::fs::chown(dir.path(), Some(65534), None).unwrap();
    let out = Command::new(BIN)
        .args(["retire"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("owned by uid 65534"), "{err}");
    std::os::unix::fs::chown(dir.path(), Some(me), None).unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["retire"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("writable by group or others"), "{err}");
    assert!(err.contains(&dir.path().display().to_string()), "{err}");
}

/// An mmash running as root folds another user's directory by running
/// `mmash retire` as that user: the writers' files are gone, the archive
/// belongs to that user (as readers require), and every total is exact.
#[test]
fn root_folds_another_users_directory_as_that_user() {
    use std::os::unix::fs::{chown, MetadataExt, PermissionsExt};
    let me = std::fs::metadata("/proc/self").unwrap().uid();
    assert_eq!(
        me, 0,
        "this test checks what mmash does as root: run it as root, as CI does"
    );
    let dir = common::stats_dir();
    let added = dead_writers(dir.path(), 4, 3);
    let (before, timed, writers, archives) = totals(dir.path());
    assert_eq!((before, timed, writers, archives), (added, 4, 4, 0));
    // Hand the directory and everything in it (lock files too) to nobody.
    let nobody = 65534;
    chown(dir.path(), Some(nobody), Some(nobody)).unwrap();
    for e in std::fs::read_dir(dir.path()).unwrap() {
        chown(e.unwrap().path(), Some(nobody), Some(nobody)).unwrap();
    }
    // mmash from a directory any user may read, so that its child, which
    // runs as nobody, can run it wherever the checkout lies.
    let bin_dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(bin_dir.path(), PermissionsExt::from_mode(0o755)).unwrap();
    let bin = bin_dir.path().join("mmash");
    std::fs::copy(BIN, &bin).unwrap();
    std::fs::set_permissions(&bin, PermissionsExt::from_mode(0o755)).unwrap();

    let m = common::Mmash::start_bin(
        &bin,
        &[dir.path().to_str().unwrap(), "--retire-after", "1s"],
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let (sum, timed, writers, archives) = loop {
        let t = totals(dir.path());
        if t.2 == 0 && t.3 == 1 {
            break t;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not folded within 60 s: {t:?}; mmash said: {}",
            m.log.lock().unwrap()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!((sum, timed, writers, archives), (added, 4, 0, 1));
    let archive = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".archive.mmstats"))
        .expect("an archive");
    let meta = std::fs::metadata(&archive).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid()),
        (nobody, nobody),
        "{}",
        archive.display()
    );
    let page = m.get("/metrics").body;
    let folded = page
        .lines()
        .find_map(|l| l.strip_prefix("mmash_retire_files_folded_total "))
        .and_then(|v| v.trim().parse::<f64>().ok());
    assert_eq!(folded, Some(4.0), "{page}");
}

/// Scrapes rarer than the prune delay: a fold, then a prune of the folded
/// identities, both between two scrapes. mmash reads the files on its own
/// in between (`--sample-every`), so the archive is measured against the
/// files it took in and each writer is counted once; without those
/// readings the second scrape would count them twice.
#[test]
fn a_fold_and_a_prune_between_two_scrapes_count_each_writer_once() {
    let dir = common::stats_dir();
    let added = dead_writers(dir.path(), 4, 5) as f64;
    let every = std::env::var("MMASH_TEST_SAMPLE_EVERY").unwrap_or_else(|_| "100ms".into());
    let m = common::Mmash::on(
        dir.path(),
        &["--retire-after", "off", "--sample-every", &every],
    );
    assert_eq!(counter_of(&m.get("/metrics").body, "webw"), Some(added));
    retire_pruning(dir.path(), "1h");
    assert_eq!(totals(dir.path()).2, 0, "folded");
    // Many sampling periods, with no request.
    std::thread::sleep(std::time::Duration::from_secs(2));
    retire_pruning(dir.path(), "0");
    retire_pruning(dir.path(), "0");
    assert_eq!(archive_ids(dir.path()), Some((0, 0)), "pruned");
    assert_eq!(totals(dir.path()).0 as f64, added);
    assert_eq!(counter_of(&m.get("/metrics").body, "webw"), Some(added));
}

/// Starts `n` short-lived writers of command `churn` in batches of 16,
/// `pause` apart; half exit, half abort. Returns what they added.
fn churn(dir: &Path, n: usize, first: usize, pause: std::time::Duration) -> u64 {
    let exe = std::env::current_exe().unwrap();
    let mut added = 0;
    for b in 0..n.div_ceil(16) {
        let kids: Vec<_> = (b * 16..((b + 1) * 16).min(n))
            .map(|i| {
                let add = ((first + i) % 97) as u64 + 1;
                added += add;
                Command::new(&exe)
                    .args(["churn_child", "--exact", "--test-threads=1"])
                    .env("MMASH_TEST_CHURN", dir)
                    .env("MMASH_TEST_ADD", add.to_string())
                    .env("MMASH_TEST_DIE", if i % 2 == 0 { "exit" } else { "abort" })
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for mut k in kids {
            k.wait().unwrap();
        }
        std::thread::sleep(pause);
    }
    added
}

/// A Prometheus instant query; `None` while it starts up (refused
/// connections, connections closed without an answer, 503) or if empty.
fn prom_query(port: u16, q: &str, at: f64) -> Option<f64> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .ok()?;
    let enc: String = form_urlencoded::byte_serialize(q.as_bytes()).collect();
    write!(
        s,
        "GET /api/v1/query?query={enc}&time={at} HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let (head, body) = buf.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.1 200") {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    v["data"]["result"].as_array()?.first()?["value"][1]
        .as_str()?
        .parse()
        .ok()
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A real Prometheus scrapes mmash every second while writers churn and
/// are folded: `increase()` over the churn is what the writers recorded,
/// within its extrapolation, and the counter never resets.
#[test]
fn prometheus_increase_over_a_churn_with_folds_is_what_writers_recorded() {
    let dir = common::stats_dir();
    // The series exists before the churn starts.
    let before = churn(dir.path(), 1, 0, std::time::Duration::ZERO);
    let m = common::Mmash::on(dir.path(), &["--retire-after", "200ms", "--rescan", "0.5"]);
    let data = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let config = data.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: mmash\n    static_configs:\n      - targets: ['{}']\n",
            m.addr
        ),
    )
    .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _prom = Kill(
        Command::new(common::tool("prometheus"))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                data.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let series = "web_status_2xx_total{command=\"churn\"}";
    // Wait (bounded) for two scrapes of the value before the churn.
    let mut seen = 0;
    for _ in 0..120 {
        if prom_query(port, series, unix_now()) == Some(before as f64) {
            seen += 1;
            if seen == 3 {
                break;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert_eq!(seen, 3, "Prometheus never scraped mmash");
    // A few scrapes of the value before, inside the window below.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let start = unix_now();
    let added = churn(dir.path(), 400, 1, std::time::Duration::from_millis(100));
    // Wait (bounded) until the last writer is folded and scraped, and two
    // more scrapes land.
    let mut settled = false;
    for _ in 0..120 {
        if prom_query(port, series, unix_now()) == Some((before + added) as f64) {
            settled = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert!(settled, "the total never reached {}", before + added);
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let end = unix_now();
    let window = (end - start).ceil() + 1.0;
    let q = |e: &str| {
        prom_query(port, e, end)
            .unwrap_or_else(|| panic!("no result for {e}: {}", prom_raw(port, e, end)))
    };
    assert_eq!(q(&format!("resets({series}[{window}s])")), 0.0);
    assert_eq!(
        q(series) - q(&format!("{series} offset {window}s")),
        added as f64
    );
    // increase() extrapolates the samples in the window to its edges: the
    // samples cover at least window - 2 scrape intervals, so it is between
    // the exact increase and that times window / (window - 2 s).
    let increase = q(&format!("increase({series}[{window}s])"));
    let most = added as f64 * window / (window - 2.0);
    assert!(
        increase >= added as f64 - 1e-9 && increase <= most,
        "increase() = {increase}, writers added {added}, window {window} s"
    );
    eprintln!(
        "prometheus: 400 writers added {added}; increase() over {window} s = {increase} \
         (allowed {added}..{most:.1})"
    );
    let page = m.get("/metrics").body;
    assert!(page.contains("mmash_files{state=\"archive\"} 1"), "{page}");
}

fn prom_raw(port: u16, q: &str, at: f64) -> String {
    let enc: String = form_urlencoded::byte_serialize(q.as_bytes()).collect();
    common::request(
        ([127, 0, 0, 1], port).into(),
        &format!("GET /api/v1/query?query={enc}&time={at} HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n"),
    )
    .body
}

#[test]
fn retire_usage_errors_name_the_flag_and_exit_2() {
    let help = Command::new(BIN)
        .args(["retire", "--help"])
        .output()
        .unwrap();
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(
        text.contains("Usage: mmash retire") && text.contains("--retire-after"),
        "{text}"
    );
    for (args, says) in [
        (
            &["retire", "--retire-after", "5 parsecs"][..],
            "--retire-after",
        ),
        (&["retire", "--retire-after", "5x"][..], "unknown unit"),
        (&["retire", "--prune-after", "off"][..], "at least 1m"),
        (&["--retire-after", "soon"][..], "--retire-after"),
        (
            &["--sample-every", "2m"][..],
            "--sample-every \"2m\" must be above 0 and under 1m",
        ),
        (&["--sample-every", "0"][..], "--sample-every"),
        (&["--sample-every", "often"][..], "--sample-every"),
    ] {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let missing = Command::new(BIN)
        .args(["retire", "/nonexistent-stats-dir"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr)
        .contains("/nonexistent-stats-dir: not a directory"));
}
