//! `mmstats_read::aggregate` over real stats files: the watch finds created,
//! deleted and replaced files without a rescan; hostile files are warnings.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use mmstats::{Counter, Gauge, Stats};
use mmstats_read::aggregate::{Sample, SeriesValue, Sources, View};

#[derive(Stats)]
#[stats(prefix = "agg.")]
struct Agg {
    /// Requests.
    requests: Counter,
    /// Busy workers.
    busy: Gauge,
}

fn open(dir: &Path) -> Agg {
    Agg::builder().dir(dir).open().unwrap()
}

/// Samples until `done` holds, for at most a minute (events arrive from
/// the watcher's thread); fails loudly if it never does.
fn sample_until(sources: &mut Sources, what: &str, done: impl Fn(&Sample) -> bool) -> Sample {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = sources.sample();
        if done(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "never saw {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn requests(view: &View, prev: &Sample, next: &Sample) -> i128 {
    match view
        .delta(Some(prev), next)
        .get("agg.requests", None)
        .map(|s| s.value.clone())
    {
        Some(SeriesValue::Int(n)) => n,
        None => 0,
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_watch_sees_new_deleted_and_replaced_files_without_rescanning() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(dir.path());
    a.requests.add(5);
    mmstats::install_sigbus_guard().unwrap();
    let mut sources = Sources::new(&[dir.path()]);
    assert!(sources.is_watching());
    // Only events can tell it about changes from here on.
    sources.set_rescan_interval(Duration::from_secs(3600));
    let view = View::new();
    let s0 = sources.sample();
    assert_eq!(s0.files.len(), 1);

    let b = open(dir.path());
    b.requests.add(7);
    a.requests.add(1);
    let s1 = sample_until(&mut sources, "the new file", |s| s.files.len() == 2);
    assert_eq!(requests(&view, &s0, &s1), 8);

    // Replace b's file: same name, new inode.
    let b_path = s1
        .files
        .iter()
        .find(|f| {
            f.snapshot.info.pid == std::process::id()
                && f.snapshot.field("agg.requests").unwrap().value
                    == mmstats_read::Value::Counter(7)
        })
        .unwrap()
        .id
        .path
        .clone();
    let sub = tempfile::tempdir_in(dir.path()).unwrap();
    let c = open(sub.path());
    c.requests.add(2);
    // The stats file, not the process's lock file beside it.
    let c_path = fs::read_dir(sub.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "mmstats"))
        .unwrap();
    fs::rename(&c_path, &b_path).unwrap();
    let s2 = sample_until(&mut sources, "the replaced file", |s| {
        s.files.iter().any(|f| {
            f.id.path == b_path
                && f.snapshot.field("agg.requests").unwrap().value
                    == mmstats_read::Value::Counter(2)
        })
    });
    // b vanished (adds nothing), its replacement appeared (adds its 2).
    assert_eq!(requests(&view, &s1, &s2), 2);

    fs::remove_file(&b_path).unwrap();
    // (Gone files' last readings stay in samples for a while, marked gone,
    // in case they come back.)
    let s3 = sample_until(&mut sources, "the deletion", |s| {
        s.files.iter().filter(|f| !f.gone).count() == 1
    });
    a.requests.add(4);
    let s4 = sources.sample();
    assert_eq!(requests(&view, &s2, &s3), 0);
    assert_eq!(requests(&view, &s3, &s4), 4);
    drop((b, c));
}

#[test]
fn gauges_of_dead_writers_leave_the_sum() {
    let dir = tempfile::tempdir().unwrap();
    let live = open(dir.path());
    live.busy.set(2);
    let dead = open(dir.path());
    dead.busy.set(3);
    drop(dead);
    mmstats::install_sigbus_guard().unwrap();
    let mut sources = Sources::new(&[dir.path()]);
    let s = sources.sample();
    assert_eq!((s.alive(), s.dead()), (1, 1));
    let mut view = View::new();
    let busy = |v: &View| {
        v.delta(None, &s)
            .get("agg.busy", None)
            .unwrap()
            .value
            .clone()
    };
    assert_eq!(busy(&view), SeriesValue::Int(2));
    view.include_dead = true;
    assert_eq!(busy(&view), SeriesValue::Int(5));
}

#[test]
fn hostile_files_are_warnings_naming_them_and_the_rest_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let good = open(dir.path());
    good.requests.add(3);
    let garbage = dir.path().join("garbage.mmstats");
    fs::write(&garbage, vec![0xa5; 4096]).unwrap();
    let short = dir.path().join("short.mmstats");
    fs::write(&short, b"MMSTATS").unwrap();
    mmstats::install_sigbus_guard().unwrap();
    let mut sources = Sources::new(&[dir.path()]);
    let s = sources.sample();
    assert_eq!(s.files.len(), 1);
    let warned: Vec<_> = s.warnings.iter().map(|w| w.path.clone()).collect();
    assert!(
        warned.contains(&garbage) && warned.contains(&short),
        "{:?}",
        s.warnings
    );
    // Reported once, not on every sample.
    assert!(sources.sample().warnings.is_empty());
    let d = View::new().delta(None, &s);
    assert_eq!(
        d.get("agg.requests", None).unwrap().value,
        SeriesValue::Int(3)
    );

    // A good file truncated mid-run: a warning, and it adds nothing.
    let path = s.files[0].id.path.clone();
    let f = fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(64).unwrap();
    let s2 = sources.sample();
    assert!(
        s2.warnings
            .iter()
            .any(|w| w.path == path && w.reason.contains("shrank")),
        "{:?}",
        s2.warnings
    );
    assert!(!s2.files[0].fresh);
    let d = View::new().delta(Some(&s), &s2);
    assert!(d.get("agg.requests", None).is_none());
    drop(good);
}
