//! Archives (format-spec.md §2.8) against damaged and forged files: a
//! malformed identity list is an error for that file, never a panic; a
//! forged archive hides only files of its own directory, owner, command
//! and model; a writer's file under an archive's name is never replaced.
//! Writers are made dead by pointing their lock token at a lock file that
//! does not exist, as a dead process's would (spec §2.4).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mmstats::format::raw;
use mmstats::{Counter, Stats};
use mmstats_read::retire::{fold, read_all, RetireOptions};
use mmstats_read::{ReadError, ReadLimits, Reader, Value};

#[derive(Stats)]
#[stats(model = "job")]
struct Job {
    done: Counter,
}

/// A dead writer's file `NAME.mmstats` in `dir` that counted `n`.
fn dead(dir: &Path, name: &str, n: u64) -> PathBuf {
    let job = Job::builder()
        .dir(dir)
        .command("worker")
        .template(&format!("{name}.{{pid}}.{{tid}}.mmstats"))
        .open()
        .unwrap();
    job.done.add(n);
    drop(job);
    let made = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("{name}."))
        })
        .unwrap();
    let path = dir.join(format!("{name}.mmstats"));
    let mut bytes = fs::read(&made).unwrap();
    raw::put_u64(&mut bytes, raw::H_LOCK_TOKEN, 1);
    fs::remove_file(&made).unwrap();
    fs::write(&path, bytes).unwrap();
    path
}

fn now() -> RetireOptions {
    let mut o = RetireOptions::default();
    o.min_age = Duration::ZERO;
    o
}

/// The `done` total over `args`, read as the protocol says.
fn total<P: AsRef<Path>>(args: &[P]) -> u64 {
    mmstats::install_sigbus_guard().unwrap();
    let args: Vec<&Path> = args.iter().map(|p| p.as_ref()).collect();
    let (files, _) = mmstats_read::scan(&args);
    read_all(&files, &ReadLimits::default())
        .into_iter()
        .filter_map(|(_, s)| match s.ok()?.field("done")?.value {
            Value::Counter(n) => Some(n),
            _ => None,
        })
        .sum()
}

#[test]
fn a_malformed_identity_list_is_an_error_for_that_file() {
    mmstats::install_sigbus_guard().unwrap();
    let dir = tempfile::tempdir().unwrap();
    dead(dir.path(), "a", 3);
    fold(dir.path(), &now()).unwrap();
    let archive = dir.path().join("worker.job.archive.mmstats");
    let good = fs::read(&archive).unwrap();
    assert_eq!(
        raw::get_u32(&good, raw::H_HEADER_LEN) as usize,
        raw::A_IDS + raw::ID_LEN
    );
    for (what, off, value) in [
        ("more ids than the header holds", raw::A_ID_COUNT, 2u64),
        ("a count that overflows", raw::A_ID_COUNT, u64::MAX),
    ] {
        let mut bytes = good.clone();
        raw::put_u64(&mut bytes, off, value);
        fs::write(&archive, &bytes).unwrap();
        match Reader::open(&archive).unwrap().snapshot() {
            Err(ReadError::Malformed { reason, .. }) => {
                assert!(
                    reason.contains("archive") && reason.contains("do not fit"),
                    "{what}: {reason}"
                )
            }
            other => panic!("{what}: {other:?}"),
        }
    }
    // A header too short for the extension.
    let mut bytes = good.clone();
    raw::put_u32(&mut bytes, raw::H_HEADER_LEN, 128);
    fs::write(&archive, &bytes).unwrap();
    let err = Reader::open(&archive).unwrap().snapshot().unwrap_err();
    assert!(
        err.to_string().contains("shorter than an archive's"),
        "{err}"
    );
}

#[test]
fn a_forged_archive_hides_nothing_outside_its_directory_owner_and_model() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let s = dead(a.path(), "s", 5);
    // The same file in another directory: the same identity (its name and
    // header), but not the same file.
    let again = b.path().join("s.mmstats");
    fs::copy(&s, &again).unwrap();
    fold(a.path(), &now()).unwrap();
    assert!(!s.exists());
    assert_eq!(
        total(&[a.path(), b.path()]),
        10,
        "an archive hides nothing in another directory"
    );
    // An archive with that identity moved next to it, but owned by another
    // user: not trusted to hide the file.
    let forged = b.path().join("worker.job.archive.mmstats");
    fs::copy(a.path().join("worker.job.archive.mmstats"), &forged).unwrap();
    std::os::unix::fs::chown(&forged, Some(65534), None).unwrap();
    assert_eq!(
        total(&[&forged, &again]),
        10,
        "another owner's archive hides nothing"
    );
    // Same owner, same directory: it does hide it (its owner could delete it).
    std::os::unix::fs::chown(
        &forged,
        Some(std::os::unix::fs::MetadataExt::uid(
            &fs::metadata(&again).unwrap(),
        )),
        None,
    )
    .unwrap();
    assert_eq!(total(&[b.path()]), 5);
}

#[test]
fn a_writer_file_under_the_archive_name_is_never_replaced() {
    mmstats::install_sigbus_guard().unwrap();
    let dir = tempfile::tempdir().unwrap();
    dead(dir.path(), "s", 2);
    // Someone's (dead) writer file named like the archive.
    let squatter = dead(dir.path(), "worker.job.archive", 40);
    let before = fs::read(&squatter).unwrap();
    let report = fold(dir.path(), &now()).unwrap();
    assert_eq!(report.folded, 0, "{report:?}");
    assert!(
        report
            .skipped
            .iter()
            .any(|(_, why)| why.contains("is not the archive")),
        "{report:?}"
    );
    assert_eq!(fs::read(&squatter).unwrap(), before);
    assert_eq!(total(&[dir.path()]), 42);
}

#[test]
fn a_field_that_does_not_fit_the_archive_is_left_unfolded() {
    #[derive(Stats)]
    #[stats(model = "job")]
    struct JobV2 {
        done: mmstats::Timer,
    }
    let dir = tempfile::tempdir().unwrap();
    dead(dir.path(), "old", 4);
    fold(dir.path(), &now()).unwrap();
    let v2 = JobV2::builder()
        .dir(dir.path())
        .command("worker")
        .open()
        .unwrap();
    v2.done.record_ns(9);
    drop(v2);
    let made: Vec<PathBuf> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.to_string_lossy().ends_with(".mmstats") && !p.to_string_lossy().contains("archive")
        })
        .collect();
    assert_eq!(made.len(), 1);
    let mut bytes = fs::read(&made[0]).unwrap();
    raw::put_u64(&mut bytes, raw::H_LOCK_TOKEN, 1);
    fs::write(&made[0], bytes).unwrap();
    let report = fold(dir.path(), &now()).unwrap();
    assert_eq!(report.folded, 0);
    assert!(
        report
            .skipped
            .iter()
            .any(|(p, why)| *p == made[0] && why.contains("kind differs")),
        "{report:?}"
    );
    assert!(made[0].exists());
}

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/golden.mmstats");
const GOLDEN_ARCHIVE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/golden-archive.mmstats"
);
/// The fold time written into the golden archive (its only varying words).
const GOLDEN_FOLDED_NS: u64 = 1_700_000_100_000_000_000;

/// The archive a fold makes today of `golden.mmstats` (a dead writer's
/// file: its lock file does not exist), with the fold time fixed.
fn fold_golden() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    fs::copy(GOLDEN, dir.path().join("golden.mmstats")).unwrap();
    let report = fold(dir.path(), &RetireOptions::default()).unwrap();
    assert_eq!(report.folded, 1, "{report:?}");
    let mut bytes = fs::read(dir.path().join("golden.Golden.archive.mmstats")).unwrap();
    raw::put_u64(&mut bytes, raw::H_CREATED_NS, GOLDEN_FOLDED_NS);
    raw::put_u64(&mut bytes, raw::A_FOLDED_NS, GOLDEN_FOLDED_NS);
    bytes
}

/// The committed archive of the golden file is what the reader reads and
/// what the fold writes today: a change to the archive format cannot pass
/// unnoticed. `MMSTATS_REGENERATE_GOLDEN=1` rewrites it (review
/// format-spec.md §2.8 and the version in the same commit).
#[test]
fn the_golden_archive_reads_as_expected_and_is_what_a_fold_writes() {
    mmstats::install_sigbus_guard().unwrap();
    let today = fold_golden();
    if std::env::var_os("MMSTATS_REGENERATE_GOLDEN").is_some() {
        fs::write(GOLDEN_ARCHIVE, &today).unwrap();
    }
    let committed = fs::read(GOLDEN_ARCHIVE).unwrap();
    let first = today.iter().zip(&committed).position(|(a, b)| a != b);
    assert!(
        today == committed,
        "the fold no longer writes tests/data/golden-archive.mmstats: {} bytes today, {} committed, \
         first difference at {first:?}; if the change is intended, regenerate with \
         MMSTATS_REGENERATE_GOLDEN=1 cargo test --test retire and update format-spec.md §2.8",
        today.len(),
        committed.len()
    );
    let snap = Reader::open(GOLDEN_ARCHIVE).unwrap().snapshot().unwrap();
    let source = Reader::open(GOLDEN).unwrap().snapshot().unwrap();
    assert_eq!(snap.info.version, (1, 2));
    assert_eq!((snap.info.pid, snap.info.alive), (0, false));
    let a = snap.info.archive.as_ref().unwrap();
    assert_eq!((a.writers, a.folds, a.ids.len()), (1, 1, 1));
    assert_eq!(a.since, source.info.created);
    let mut id = source.info.source_id();
    // The identity names the file as it was folded: `golden.mmstats`.
    id.name_hash = mmstats_read::retire::fnv1a32(b"golden.mmstats");
    assert!(a.holds(&id));
    // Every field but the gauges, with the source's values.
    for f in &source.fields {
        let folded = snap.field(&f.label);
        match &f.value {
            Value::Gauge(_) | Value::GaugeF64(_) => assert!(folded.is_none(), "{}", f.label),
            v => assert_eq!(folded.map(|x| &x.value), Some(v), "{}", f.label),
        }
    }
}

/// A watching reader through a fold and the pruning of the folded files'
/// identities: its totals and deltas stay exact, no dip, no spike.
#[test]
fn a_watching_reader_sees_no_dip_or_spike_through_fold_and_prune() {
    use mmstats_read::aggregate::{SeriesValue, Sources, View};
    mmstats::install_sigbus_guard().unwrap();
    let dir = tempfile::tempdir().unwrap();
    dead(dir.path(), "a", 3);
    dead(dir.path(), "b", 4);
    let mut sources = Sources::new(&[dir.path()]);
    let view = View::default();
    // The files a sample still has (gone files' last readings are carried,
    // marked gone, in case they come back).
    let sum = |s: &mmstats_read::aggregate::Sample| -> u64 {
        s.files
            .iter()
            .filter(|f| !f.gone)
            .filter_map(|f| match f.snapshot.field("done")?.value {
                Value::Counter(n) => Some(n),
                _ => None,
            })
            .sum()
    };
    let increase = |d: &mmstats_read::aggregate::Delta| match d.get("done", None).map(|s| &s.value)
    {
        Some(SeriesValue::Int(n)) => *n,
        other => panic!("{other:?}"),
    };
    let first = sources.sample();
    assert_eq!(sum(&first), 7);
    let mut opts = now();
    opts.prune_after = Duration::ZERO;
    opts.prune_floor = Duration::ZERO;
    fold(dir.path(), &opts).unwrap();
    let second = sources.sample();
    assert_eq!((sum(&second), second.archives(), second.dead()), (7, 1, 0));
    let d = view.delta(Some(&first), &second);
    assert_eq!(increase(&d), 0, "{:?}", d.warnings);
    // Marked gone, then pruned: the archive is rewritten twice.
    fold(dir.path(), &opts).unwrap();
    let report = fold(dir.path(), &opts).unwrap();
    assert_eq!(report.pruned, 2);
    let third = sources.sample();
    assert_eq!(sum(&third), 7);
    assert_eq!(increase(&view.delta(Some(&second), &third)), 0);
    // A new dead writer, folded: exactly its count.
    dead(dir.path(), "c", 5);
    // Events reach `Sources` asynchronously: list, so that `c` is seen now.
    sources.rescan();
    let fourth = sources.sample();
    fold(dir.path(), &opts).unwrap();
    let fifth = sources.sample();
    assert_eq!((sum(&fourth), sum(&fifth)), (12, 12));
    assert_eq!(increase(&view.delta(Some(&third), &fourth)), 5);
    assert_eq!(increase(&view.delta(Some(&fourth), &fifth)), 0);
}

/// The lock file the writer of `a.mmstats` in the race test below holds
/// until it "dies" between the folder's first read and its probe.
static HELD: std::sync::Mutex<Option<fs::File>> = std::sync::Mutex::new(None);

const RACE_TOKEN: u64 = 0x5eed_0000_0000_0001;

/// The writer of `a.mmstats` records 2 more and dies: its lock is released.
fn die_after_counting_two_more(path: &Path) {
    if path.file_name().is_none_or(|n| n != "a.mmstats") {
        return;
    }
    let mut bytes = fs::read(path).unwrap();
    let rec = raw::get_u32(&bytes, raw::H_FIELD_TABLE_OFF) as usize;
    let off = raw::get_u32(&bytes, rec + raw::R_VALUE_OFF) as usize;
    let n = raw::get_u64(&bytes, off);
    raw::put_u64(&mut bytes, off, n + 2);
    // In place, as the writer's stores through its mapping would be.
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, &bytes))
        .unwrap();
    HELD.lock().unwrap().take();
}

#[test]
fn a_writer_that_dies_between_the_folders_read_and_probe_loses_nothing() {
    mmstats::install_sigbus_guard().unwrap();
    let dir = tempfile::tempdir().unwrap();
    dead(dir.path(), "b", 1);
    // `a` is alive: its lock token names a lock file this test holds.
    let a = dead(dir.path(), "a", 3);
    let mut bytes = fs::read(&a).unwrap();
    raw::put_u64(&mut bytes, raw::H_LOCK_TOKEN, RACE_TOKEN);
    fs::write(&a, bytes).unwrap();
    let lock = fs::File::create(
        dir.path()
            .join(format!(".lock.{RACE_TOKEN:016x}.mmstats-lock")),
    )
    .unwrap();
    lock.lock().unwrap();
    *HELD.lock().unwrap() = Some(lock);
    assert_eq!(total(&[dir.path()]), 4);

    let mut opts = now();
    opts.after_read = Some(die_after_counting_two_more);
    let report = fold(dir.path(), &opts).unwrap();
    assert_eq!(report.folded, 2, "{report:?}");
    assert!(!a.exists());
    // Everything `a` recorded before it died is in the archive.
    assert_eq!(total(&[dir.path()]), 6);
}

#[test]
fn a_listing_that_missed_the_archive_still_counts_it() {
    mmstats::install_sigbus_guard().unwrap();
    let dir = tempfile::tempdir().unwrap();
    dead(dir.path(), "a", 3);
    fold(dir.path(), &now()).unwrap();
    // A live writer of the same command and model.
    let live = Job::builder()
        .dir(dir.path())
        .command("worker")
        .open()
        .unwrap();
    live.done.add(1);
    assert_eq!(total(&[dir.path()]), 4);
    // A listing made while a fold renamed the archive over the old one may
    // miss its name: the archive's counts must not vanish from the total.
    let (files, _) = mmstats_read::scan(&[dir.path()]);
    let missed: Vec<_> = files
        .into_iter()
        .filter(|f| !f.path.to_string_lossy().contains(".archive"))
        .collect();
    assert_eq!(missed.len(), 1);
    let sum: u64 = read_all(&missed, &ReadLimits::default())
        .into_iter()
        .filter_map(|(_, s)| match s.ok()?.field("done")?.value {
            Value::Counter(n) => Some(n),
            _ => None,
        })
        .sum();
    assert_eq!(sum, 4);
    drop(live);
}

/// A dead writer's file with `n` counters `{prefix}0`, `{prefix}1`, ...
fn dead_wide(dir: &Path, name: &str, prefix: &str, n: usize) {
    use mmstats::{FieldDef, Schema};
    let mut schema = Schema::new("job");
    for i in 0..n {
        schema.push(FieldDef::counter(&format!("{prefix}{i}")));
    }
    let options = mmstats::Options::new()
        .dir(dir)
        .command("worker")
        .template(&format!("{name}.{{pid}}.{{tid}}.mmstats"));
    let file = mmstats::StatsFile::create(&schema, &options).unwrap();
    drop(file);
    let made = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            n.starts_with(&format!("{name}.")) && n.matches('.').count() > 2
        })
        .unwrap();
    let mut bytes = fs::read(&made).unwrap();
    raw::put_u64(&mut bytes, raw::H_LOCK_TOKEN, 1);
    fs::remove_file(&made).unwrap();
    fs::write(dir.join(format!("{name}.mmstats")), bytes).unwrap();
}

#[test]
fn an_archive_readers_would_refuse_is_never_published() {
    mmstats::install_sigbus_guard().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Each file is within the readers' field limit; their union is not.
    let half = ReadLimits::default().max_fields as usize / 2 + 1;
    dead_wide(dir.path(), "x", "x", half);
    dead_wide(dir.path(), "y", "y", half);
    dead(dir.path(), "a", 3);
    assert_eq!(total(&[dir.path()]), 3);
    let report = fold(dir.path(), &now()).unwrap();
    assert_eq!(report.archives_written, 0, "{report:?}");
    assert!(
        report
            .skipped
            .iter()
            .any(|(_, e)| e.contains("not be readable")),
        "{report:?}"
    );
    // Nothing vanished from the total, and nothing is left half done.
    assert_eq!(total(&[dir.path()]), 3);
    assert!(!dir.path().join("worker.job.archive.mmstats").exists());
    assert!(!dir.path().join(".worker.job.archive.fold-tmp").exists());
}
