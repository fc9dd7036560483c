//! `Reader::snapshot_shared`: the reading kept between snapshots gives the
//! same values as a full snapshot, shares an idle file's snapshot, sees
//! every kind of change (including a histogram value of 0, which leaves
//! the sum alone), and still treats the file as hostile.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mmstats::{Counter, FieldDef, Gauge, Histogram, Kind, Stats, Text};
use mmstats_read::{ReadError, Reader, Value};

#[derive(Stats)]
struct Shared {
    /// Requests.
    requests: Counter,
    /// Busy workers.
    busy: Gauge,
    /// Queue lengths.
    queue: Histogram,
    /// What it does.
    doing: Text<16>,
}

fn only_file(dir: &Path) -> PathBuf {
    let (files, problems) = mmstats_read::discover(&[dir]);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(files.len(), 1);
    files.into_iter().next().unwrap()
}

fn value<'a>(snap: &'a mmstats_read::Snapshot, label: &str) -> &'a Value {
    &snap
        .field(label)
        .unwrap_or_else(|| panic!("no {label}"))
        .value
}

#[test]
fn idle_files_share_and_every_change_is_seen() {
    mmstats::install_sigbus_guard().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let s = Shared::builder().dir(dir.path()).open().unwrap();
    s.requests.add(3);
    s.queue.record(5);
    s.doing.set("idle");
    let path = only_file(dir.path());
    let mut reader = Reader::open(&path).unwrap();

    let a = reader.snapshot_shared().unwrap();
    assert_eq!(*a, reader.snapshot().unwrap(), "same as a full snapshot");
    let b = reader.snapshot_shared().unwrap();
    assert!(Arc::ptr_eq(&a, &b), "nothing changed: the same snapshot");

    s.requests.incr();
    let c = reader.snapshot_shared().unwrap();
    assert!(!Arc::ptr_eq(&b, &c));
    assert_eq!(value(&c, "requests"), &Value::Counter(4));

    // A 0 adds nothing to the sum: bucket 0 tells.
    s.queue.record(0);
    let d = reader.snapshot_shared().unwrap();
    let Value::Histogram(h) = value(&d, "queue") else {
        panic!("not a histogram")
    };
    assert_eq!((h.count(), h.sum()), (2, 5));

    s.busy.set(-2);
    s.doing.set("working");
    let e = reader.snapshot_shared().unwrap();
    assert_eq!(value(&e, "busy"), &Value::Gauge(-2));
    assert_eq!(value(&e, "doing"), &Value::Text("working".into()));
    assert_eq!(*e, reader.snapshot().unwrap());

    // Many idle snapshots in a row stay the same one, across the periodic
    // full reads too (which give an equal, new one).
    let mut last = e;
    for _ in 0..200 {
        let next = reader.snapshot_shared().unwrap();
        assert_eq!(*next, *last);
        last = next;
    }
}

#[test]
fn appended_fields_are_seen() {
    mmstats::install_sigbus_guard().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut schema = mmstats::Schema::new("grow");
    schema.push(FieldDef::counter("first"));
    let mut file = mmstats::StatsFile::create(
        &schema,
        &mmstats::Options::new().dir(dir.path()).reserve(4, 4096),
    )
    .unwrap();
    let path = only_file(dir.path());
    let mut reader = Reader::open(&path).unwrap();
    assert_eq!(reader.snapshot_shared().unwrap().fields.len(), 1);
    let later: Counter = file.add(FieldDef::counter("later")).unwrap();
    later.add(7);
    let snap = reader.snapshot_shared().unwrap();
    assert_eq!(snap.fields.len(), 2);
    assert_eq!(value(&snap, "later"), &Value::Counter(7));
    assert_eq!(snap.field("later").unwrap().kind, Kind::Counter);
}

#[test]
fn damage_after_the_first_reading_is_an_error_not_a_stale_reading() {
    mmstats::install_sigbus_guard().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let s = Shared::builder().dir(dir.path()).open().unwrap();
    s.requests.add(1);
    // A copy, which no writer maps: the damage below would crash one.
    let copies = tempfile::tempdir().unwrap();
    let path = copies.path().join("copy.mmstats");
    std::fs::copy(only_file(dir.path()), &path).unwrap();
    let mut reader = Reader::open(&path).unwrap();
    reader.snapshot_shared().unwrap();
    reader.snapshot_shared().unwrap();

    // A hostile writer rewrites the magic: a full read, which refuses it.
    let raw = OpenOptions::new().write(true).open(&path).unwrap();
    raw.write_all_at(b"garbage!", 0).unwrap();
    match reader.snapshot_shared() {
        Err(ReadError::Malformed { reason, .. }) => assert!(reason.contains("magic"), "{reason}"),
        other => panic!("expected a malformed file, got {other:?}"),
    }

    // Truncated to nothing: an error, not the kept reading.
    raw.set_len(0).unwrap();
    match reader.snapshot_shared() {
        Err(ReadError::Truncated { .. }) => {}
        other => panic!("expected a truncated file, got {other:?}"),
    }
}
