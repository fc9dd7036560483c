//! Counts recorded through the `metrics` macros, read back from the real
//! files with `mmstats_read`.

use std::path::{Path, PathBuf};

use metrics::Unit;
use mmstats_metrics::{Builder, MmstatsRecorder, CLAMPED_LABEL, DROPPED_LABEL};
use mmstats_read::{Kind, Snapshot, Value};

/// Runs `f` on a new thread with `recorder` as its local recorder, and
/// returns the path of that thread's one file in `dir`.
fn on_thread(recorder: &MmstatsRecorder, dir: &Path, f: impl FnOnce() + Send) -> PathBuf {
    let before = files(dir);
    std::thread::scope(|s| {
        s.spawn(|| metrics::with_local_recorder(recorder, f))
            .join()
            .unwrap();
    });
    let new: Vec<_> = files(dir)
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    assert_eq!(new.len(), 1, "one new file in {}: {new:?}", dir.display());
    new.into_iter().next().unwrap()
}

fn files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "mmstats"))
        .collect()
}

fn read(path: &Path) -> Snapshot {
    mmstats::install_sigbus_guard().unwrap();
    mmstats_read::read_file(path).unwrap()
}

fn value<'a>(snap: &'a Snapshot, label: &str) -> &'a Value {
    let labels: Vec<_> = snap.fields.iter().map(|f| &f.label).collect();
    &snap
        .field(label)
        .unwrap_or_else(|| panic!("no field {label:?}; fields: {labels:?}"))
        .value
}

#[test]
fn exact_counts_labels_help_and_units() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = Builder::new().dir(dir.path()).prefix("app.").build();
    let path = on_thread(&recorder, dir.path(), || {
        metrics::describe_counter!("http.requests", Unit::Count, "Requests served");
        metrics::describe_histogram!("http.latency", Unit::Seconds, "Time to respond");
        metrics::describe_histogram!("body", Unit::Bytes, "Body sizes");
        for _ in 0..1000 {
            metrics::counter!("http.requests", "route" => "/a").increment(1);
        }
        let b = metrics::counter!("http.requests", "route" => "/b", "method" => "GET");
        b.increment(5);
        b.increment(2);
        metrics::gauge!("queue").set(3.5);
        metrics::gauge!("queue").increment(1.0);
        metrics::gauge!("queue").decrement(0.25);
        for ms in [1.0, 2.0, 250.0] {
            metrics::histogram!("http.latency").record(ms / 1000.0);
        }
        metrics::histogram!("body").record(1500.0);
        metrics::histogram!("body").record(-3.0);
    });
    let snap = read(&path);
    assert_eq!(snap.info.model, "metrics");
    let a = snap.field("app.http.requests{route=/a}").unwrap();
    assert_eq!(a.value, Value::Counter(1000));
    assert_eq!(a.help, "Requests served");
    assert_eq!(a.unit_text, "count");
    assert_eq!(a.static_labels, vec![("route".into(), "/a".into())]);
    let b = snap
        .field("app.http.requests{route=/b,method=GET}")
        .unwrap();
    assert_eq!(b.value, Value::Counter(7));
    assert_eq!(
        b.static_labels,
        vec![
            ("route".into(), "/b".into()),
            ("method".into(), "GET".into())
        ]
    );
    assert_eq!(value(&snap, "app.queue"), &Value::GaugeF64(4.25));
    let lat = snap.field("app.http.latency").unwrap();
    assert_eq!(lat.kind, Kind::Timer, "seconds become a timer of ns");
    let Value::Histogram(h) = &lat.value else {
        panic!("{lat:?}")
    };
    assert_eq!(h.count(), 3);
    assert_eq!(h.sum(), 1_000_000 + 2_000_000 + 250_000_000, "exact ns sum");
    let body = snap.field("app.body").unwrap();
    assert_eq!(
        (body.kind, body.unit_text.as_str()),
        (Kind::Histogram, "bytes")
    );
    let Value::Histogram(h) = &body.value else {
        panic!("{body:?}")
    };
    assert_eq!((h.count(), h.sum()), (2, 1500), "-3 is recorded as 0");
    assert_eq!(
        value(&snap, &format!("app.{CLAMPED_LABEL}")),
        &Value::Counter(1)
    );
    assert_eq!(
        value(&snap, &format!("app.{DROPPED_LABEL}")),
        &Value::Counter(0)
    );
    assert_eq!(recorder.error(), None);
}

#[test]
fn each_thread_writes_its_own_file() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = Builder::new().dir(dir.path()).build();
    // A handle registered on one thread counts into the file of the thread
    // that uses it.
    let handle = metrics::with_local_recorder(&recorder, || metrics::counter!("jobs"));
    let one = on_thread(&recorder, dir.path(), || handle.increment(3));
    let two = on_thread(&recorder, dir.path(), || {
        handle.increment(4);
        metrics::counter!("jobs").increment(1);
    });
    assert_eq!(value(&read(&one), "jobs"), &Value::Counter(3));
    assert_eq!(value(&read(&two), "jobs"), &Value::Counter(5));
}

#[test]
fn past_the_reserve_updates_are_counted_as_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = Builder::new().dir(dir.path()).reserve(2, 4096).build();
    let path = on_thread(&recorder, dir.path(), || {
        for i in 0..5 {
            metrics::counter!("c", "i" => i.to_string()).increment(10);
        }
        // A name used as a second kind cannot be a second field of that label.
        metrics::gauge!("c", "i" => "0").set(1.0);
    });
    let snap = read(&path);
    assert_eq!(value(&snap, "c{i=0}"), &Value::Counter(10));
    assert_eq!(value(&snap, "c{i=1}"), &Value::Counter(10));
    assert!(snap.field("c{i=2}").is_none());
    // Updates, not their values: three increments that found no room,
    // and the gauge set.
    assert_eq!(value(&snap, DROPPED_LABEL), &Value::Counter(4));
    let err = recorder.error().expect("the first failure is kept");
    assert!(err.contains("c{i=2}") && err.contains("no room"), "{err}");
}

#[test]
fn an_unusable_directory_fails_install_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    // A directory that cannot be made: its parent is a plain file.
    let file = dir.path().join("plain");
    std::fs::write(&file, "x").unwrap();
    let err = Builder::new().dir(file.join("sub")).install().unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("plain/sub"), "{msg}");
    assert!(std::error::Error::source(&err).is_some());
}

#[test]
fn file_options_set_command_template_and_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let files = mmstats::Options::new()
        .dir(dir.path())
        .command("jobs")
        .template("{cmd}-{model}-{pid}-{tid}.mmstats")
        .prefix("app.");
    let recorder = Builder::new().files(files).reserve(8, 4096).build();
    let path = on_thread(&recorder, dir.path(), || {
        metrics::counter!("done").increment(3)
    });
    let name = path.file_name().unwrap().to_str().unwrap();
    assert!(name.starts_with("jobs-metrics-"), "{name}");
    let snap = read(&path);
    assert_eq!(snap.info.command, "jobs");
    assert!(matches!(value(&snap, "app.done"), Value::Counter(3)));
}
