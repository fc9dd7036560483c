//! Re-homing a writer's truncated file (format-spec.md §6.9), checked by
//! reading the file again with this crate's reader: the writer's crate
//! cannot read files, so these tests live here.

use mmstats::{Counter, FieldDef, Options, Schema, StatsFile};
use mmstats_read::{read_file, Value};
use std::fs;

/// A truncated file, written to, goes dark (private memory, no SIGBUS);
/// the next cold path publishes a new file under its name holding every
/// field, also one appended after creation, and the values since.
#[test]
fn a_truncated_file_is_made_again_with_its_appended_fields() {
    mmstats::install_sigbus_guard().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut schema = Schema::new("Trunc");
    schema.push(FieldDef::counter("a"));
    let options = Options::new().dir(dir.path()).reserve(2, 256);
    let mut file = StatsFile::create(&schema, &options).unwrap();
    let a: Counter = file.take("a").unwrap();
    let b: Counter = file.add(FieldDef::counter("b")).unwrap();
    a.add(3);
    let path = file.path().unwrap().to_owned();
    let before = mmstats::fallbacks().count;
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(0)
        .unwrap();
    // Faults, and lands in private memory.
    b.add(2);
    a.incr();
    let fb = mmstats::fallbacks();
    assert_eq!(fb.count, before + 1);
    let err = fb.last_error.unwrap();
    assert!(err.contains("truncated"), "{err}");
    // Re-homed by that call: the stores go to the new file.
    b.incr();
    let snap = read_file(&path).unwrap();
    let value = |l: &str| snap.field(l).map(|f| f.value.clone());
    assert_eq!(value("a"), Some(Value::Counter(1)));
    assert_eq!(value("b"), Some(Value::Counter(3)));
    assert!(snap.info.alive);
    assert_eq!(snap.info.fallbacks, before + 1);
    // The old, truncated inode's name was taken over: one file.
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".mmstats"))
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
}

fn truncate(path: &std::path::Path) {
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(0)
        .unwrap();
}

/// A file truncated, then closed (its exit store faults and lands in
/// private memory), is made again by that close as a closed file, not
/// as one still in use.
#[test]
fn a_file_closed_while_dark_is_made_again_closed() {
    mmstats::install_sigbus_guard().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut schema = Schema::new("DarkClose");
    schema.push(FieldDef::counter("a"));
    let options = Options::new().dir(dir.path());
    let mut file = StatsFile::create(&schema, &options).unwrap();
    let a: Counter = file.take("a").unwrap();
    a.add(3);
    let path = file.path().unwrap().to_owned();
    truncate(&path);
    drop(a);
    drop(file);
    let snap = read_file(&path).unwrap();
    assert_eq!(snap.info.state, mmstats::WriterState::Exited);
}

/// Re-homing checks the directory as a first open does: one made
/// writable to others since gets no new file (the mapping stays dark,
/// counted as a fallback).
#[test]
fn a_file_is_not_made_again_in_a_directory_others_can_write() {
    use std::os::unix::fs::PermissionsExt;
    mmstats::install_sigbus_guard().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut schema = Schema::new("DarkDir");
    schema.push(FieldDef::counter("a"));
    let options = Options::new().dir(dir.path());
    let mut file = StatsFile::create(&schema, &options).unwrap();
    let a: Counter = file.take("a").unwrap();
    let path = file.path().unwrap().to_owned();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
    truncate(&path);
    a.add(3);
    let _ = mmstats::fallbacks();
    a.incr();
    assert_eq!(fs::metadata(&path).unwrap().len(), 0, "made again");
    let files = fs::read_dir(dir.path()).unwrap();
    let names: Vec<_> = files
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".mmstats"))
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    // Made again once the directory is safe again.
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let _ = mmstats::fallbacks();
    a.incr();
    let snap = read_file(&path).unwrap();
    assert_eq!(snap.field("a").unwrap().value, Value::Counter(5));
}
