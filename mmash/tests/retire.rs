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
use mmstats::aggregate::{SeriesValue, Sources, View};
use mmstats::{ReadLimits, Value};

#[test]
fn writer_child() {
    writer_main();
}

/// What a one-shot reader (slurpstats' way) counts: the sum of the
/// counter over every file, each dead writer once; and the timer count.
fn totals(dir: &Path) -> (u64, u64, usize, usize) {
    mmstats::install_sigbus_guard().unwrap();
    let (files, _) = mmstats::scan(&[dir]);
    let (mut sum, mut timed, mut writers, mut archives) = (0, 0, 0, 0);
    for (_, snap) in mmstats::retire::read_all(&files, &ReadLimits::default()) {
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
    let (files, _) = mmstats::scan(&[dir.path()]);
    let read = mmstats::retire::read_all(&files, &ReadLimits::default());
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
            let mut sources = Sources::new(&[&dir]);
            let view = View::default();
            let (mut cumulative, mut last_oneshot, mut samples) = (0i128, 0u64, 0);
            let mut prev = None;
            loop {
                let done = stop.load(Ordering::SeqCst);
                let next = sources.sample();
                let delta = view.delta(prev.as_ref(), &next);
                if let Some(s) = delta.get("web.status.2xx", None) {
                    let SeriesValue::Int(n) = s.value else {
                        panic!("{s:?}")
                    };
                    assert!(n >= 0);
                    cumulative += n;
                }
                assert!(delta.warnings.is_empty(), "{:?}", delta.warnings);
                // The sample's own total, not only the delta.
                let total: u64 = next
                    .files
                    .iter()
                    .filter_map(|f| match f.snapshot.field("web.status.2xx")?.value {
                        Value::Counter(n) => Some(n),
                        _ => None,
                    })
                    .sum();
                assert_eq!(total as i128, cumulative, "sample {samples}");
                let (oneshot, ..) = totals(&dir);
                assert!(oneshot >= last_oneshot, "one-shot total went down");
                last_oneshot = oneshot;
                prev = Some(next);
                samples += 1;
                if done {
                    return (cumulative, oneshot, samples);
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
    for round in 0..10 {
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
