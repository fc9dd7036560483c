//! A writer's contribution is keyed by who wrote the file, not by where a
//! sample found it: a file moved away and back, seen under two names, or
//! copied within its owner's directory is counted once; and readers keep
//! no descriptor per file.

use std::fs;
use std::path::Path;
use std::process::Command;

use mmstats::{Counter, Stats};
use mmstats_read::aggregate::{Sample, SeriesValue, Sources, View};

#[derive(Stats)]
struct Work {
    done: Counter,
}

/// The sum of `done` over the deltas of consecutive samples.
fn counted(samples: &[Sample]) -> i128 {
    let view = View::default();
    let mut total = 0;
    let mut prev = None;
    for s in samples {
        let delta = view.delta(prev, s);
        if let Some(series) = delta.get("done", None) {
            match series.value {
                SeriesValue::Int(n) => total += n,
                ref other => panic!("done is {other:?}"),
            }
        }
        prev = Some(s);
    }
    total
}

#[test]
fn a_file_moved_away_and_back_is_counted_once() {
    mmstats::install_sigbus_guard().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let away = tempfile::tempdir().unwrap();
    let work = Work::builder().dir(dir.path()).open().unwrap();
    let mut sources = Sources::new(&[dir.path()]);
    sources.set_rescan_interval(std::time::Duration::ZERO);
    let mut samples = Vec::new();
    work.done.add(100);
    samples.push(sources.sample());
    let name = only_file(dir.path());
    // Moved away for two samples, counting all the while.
    fs::rename(dir.path().join(&name), away.path().join(&name)).unwrap();
    work.done.add(10);
    samples.push(sources.sample());
    assert_eq!(sources.ghosts(), 1, "its last reading is kept");
    work.done.add(10);
    samples.push(sources.sample());
    fs::rename(away.path().join(&name), dir.path().join(&name)).unwrap();
    work.done.add(5);
    samples.push(sources.sample());
    work.done.add(5);
    samples.push(sources.sample());
    assert_eq!(counted(&samples), 130, "written 130");
    assert_eq!(sources.ghosts(), 0);
}

#[test]
fn hard_links_and_copies_of_one_file_count_once() {
    mmstats::install_sigbus_guard().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let work = Work::builder().dir(dir.path()).open().unwrap();
    work.done.add(7);
    let name = only_file(dir.path());
    for i in 0..3000 {
        fs::hard_link(
            dir.path().join(&name),
            dir.path().join(format!("link{i}.mmstats")),
        )
        .unwrap();
    }
    // A copy: another inode, the same writer.
    fs::copy(dir.path().join(&name), dir.path().join("copy.mmstats")).unwrap();
    let mut sources = Sources::new(&[dir.path()]);
    assert!(
        sources.len() <= 2,
        "{} readers for one inode and a copy",
        sources.len()
    );
    let first = sources.sample();
    work.done.add(3);
    let second = sources.sample();
    assert_eq!(first.files.iter().filter(|f| f.fresh).count(), 1);
    assert_eq!(counted(&[first, second]), 10);
}

/// Run by `many_files_need_no_descriptor_each` under a low descriptor limit.
#[test]
fn child_reads_many_files() {
    let Some(dir) = std::env::var_os("MMSTATS_IDENTITY_DIR") else {
        return; // Only as the child of the test below.
    };
    mmstats::install_sigbus_guard().unwrap();
    let mut sources = Sources::new(&[Path::new(&dir)]);
    let sample = sources.sample();
    let fresh = sample.files.iter().filter(|f| f.fresh).count();
    let warnings: Vec<String> = sample.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(fresh, 1000, "{warnings:?}");
    assert_eq!(counted(&[sample]), 1000);
}

#[test]
fn many_files_need_no_descriptor_each() {
    mmstats::install_sigbus_guard().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // 1000 files of dead writers (each made by its own thread, then closed).
    for _ in 0..1000 {
        let d = dir.path().to_owned();
        std::thread::spawn(move || {
            let w = mmstats::StatsFile::create(
                &{
                    let mut s = mmstats::Schema::new("Work");
                    s.push(mmstats::FieldDef::counter("done"));
                    s
                },
                &mmstats::Options::new().dir(&d),
            )
            .unwrap();
            let mut w = w;
            let done: Counter = w.take("done").unwrap();
            done.incr();
        })
        .join()
        .unwrap();
    }
    let exe = std::env::current_exe().unwrap();
    let status = Command::new("bash")
        .arg("-c")
        .arg("ulimit -n 64 && exec \"$0\" --exact child_reads_many_files --test-threads=1")
        .arg(&exe)
        .env("MMSTATS_IDENTITY_DIR", dir.path())
        .status()
        .unwrap();
    assert!(
        status.success(),
        "1000 files under a limit of 64 descriptors: {status}"
    );
}

fn only_file(dir: &Path) -> String {
    let names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".mmstats"))
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    names.into_iter().next().unwrap()
}

#[test]
fn long_help_is_cut_and_long_labels_are_skipped() {
    mmstats::install_sigbus_guard().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut schema = mmstats::Schema::new("Long");
    let help = "é".repeat(1 << 19); // 1 MiB of two-byte characters
    schema.push(mmstats::FieldDef::counter("short").help(&help));
    // The writer refuses a label over the readers' cap: write one at the
    // cap, then make its reference one byte longer, as another writer
    // could (the byte after it is in the string table: field 2's label).
    schema.push(mmstats::FieldDef::counter(
        &"x".repeat(mmstats_read::MAX_LABEL_LEN),
    ));
    schema.push(mmstats::FieldDef::counter("after"));
    let file =
        mmstats::StatsFile::create(&schema, &mmstats::Options::new().dir(dir.path())).unwrap();
    let path = file.path().unwrap().to_owned();
    drop(file);
    let mut bytes = std::fs::read(&path).unwrap();
    use mmstats::format::raw::{get_u32, put_u32, H_FIELD_TABLE_OFF, H_RECORD_LEN, R_LABEL};
    let rec = get_u32(&bytes, H_FIELD_TABLE_OFF) as usize + get_u32(&bytes, H_RECORD_LEN) as usize;
    let len = rec + R_LABEL + 4;
    assert_eq!(get_u32(&bytes, len) as usize, mmstats_read::MAX_LABEL_LEN);
    put_u32(&mut bytes, len, mmstats_read::MAX_LABEL_LEN as u32 + 1);
    std::fs::write(&path, &bytes).unwrap();
    let snap = mmstats_read::read_file(&path).unwrap();
    assert_eq!(
        snap.fields.len(),
        2,
        "{:?}",
        snap.fields.iter().map(|f| &f.label).collect::<Vec<_>>()
    );
    assert_eq!(snap.skipped, 1);
    let kept = &snap.fields[0].help;
    assert!(
        kept.len() <= mmstats_read::MAX_HELP_LEN && kept.len() >= mmstats_read::MAX_HELP_LEN - 1
    );
    assert!(kept.chars().all(|c| c == 'é'));
}

#[test]
fn an_owner_over_budget_is_cut_off_alone() {
    use std::os::unix::fs::chown;
    mmstats::install_sigbus_guard().unwrap();
    assert_eq!(mmstats::geteuid(), 0, "chown needs root (CI runs as root)");
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for i in 0..6 {
        let mut s = mmstats::Schema::new("Budget");
        s.push(mmstats::FieldDef::counter("done"));
        let f = mmstats::StatsFile::create(&s, &mmstats::Options::new().dir(dir.path())).unwrap();
        if i >= 2 {
            chown(f.path().unwrap(), Some(4242), None).unwrap();
        }
        files.push(f);
    }
    let budget = mmstats_read::aggregate::OwnerBudget {
        files: 2,
        ..Default::default()
    };
    let mut sources = Sources::with_budget(&[dir.path()], budget);
    let sample = sources.sample();
    let by_owner = |uid: u32| {
        sample
            .files
            .iter()
            .filter(|f| f.fresh && f.snapshot.info.owner == uid)
            .count()
    };
    assert_eq!((by_owner(0), by_owner(4242)), (2, 2));
    assert_eq!(sources.over_budget().get(&4242), Some(&2));
    assert_eq!(sources.over_budget().get(&0), None);
    sources.rescan();
    let warned: Vec<String> = sources
        .sample()
        .warnings
        .iter()
        .map(ToString::to_string)
        .filter(|w| w.contains("budget"))
        .collect();
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(warned[0].contains("uid 4242"), "{warned:?}");
}

#[test]
fn an_owner_is_cut_off_at_its_decoded_bytes_too() {
    mmstats::install_sigbus_guard().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for _ in 0..4 {
        let mut s = mmstats::Schema::new("Decoded");
        s.push(mmstats::FieldDef::counter("done").help(&"h".repeat(3000)));
        files.push(
            mmstats::StatsFile::create(&s, &mmstats::Options::new().dir(dir.path())).unwrap(),
        );
    }
    // Each file decodes a little over 3,000 bytes: room for two.
    let budget = mmstats_read::aggregate::OwnerBudget {
        decoded_bytes: 7_000,
        ..Default::default()
    };
    let mut sources = Sources::with_budget(&[dir.path()], budget);
    let sample = sources.sample();
    assert_eq!(sample.files.iter().filter(|f| f.fresh).count(), 2);
    assert_eq!(sources.over_budget().values().sum::<usize>(), 2);
}
