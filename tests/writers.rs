//! Writers and readers together: real files, real threads, a real child
//! process, and readers hammering values that writers rewrite at full speed.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mmstats::{
    Constant, Counter, FieldDef, Gauge, GaugeF64, Kind, Options, Schema, Stats, StatsFile, Text,
    WriterState,
};
use mmstats_read::{Reader, Snapshot, Value};

/// Request statistics of the web front end.
#[derive(Stats)]
#[stats(prefix = "web.")]
struct WebStats {
    /// Responses with a 2xx status.
    #[stat(label = "status.2xx")]
    ok: Counter,
    /// Requests being served right now.
    in_flight: Gauge,
    /// Load average.
    load: GaugeF64,
    /// What this thread is doing.
    state: Text<64>,
    /// The version.
    version: Constant<16>,
}

#[derive(Stats)]
struct DbStats {
    queries: Counter,
}

/// What the child writer prints once its file exists.
const READY: &str = "MMSTATS-CHILD-READY";

/// The calling thread's kernel thread id, from `/proc/thread-self`.
fn thread_tid() -> u32 {
    let link = std::fs::read_link("/proc/thread-self").unwrap();
    link.file_name().unwrap().to_str().unwrap().parse().unwrap()
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let (files, errors) = mmstats_read::discover(&[dir]);
    assert!(errors.is_empty(), "{errors:?}");
    files
}

fn only_file(dir: &Path) -> PathBuf {
    let files = files_in(dir);
    assert_eq!(files.len(), 1, "{files:?}");
    files.into_iter().next().unwrap()
}

fn value<'a>(snap: &'a Snapshot, label: &str) -> &'a Value {
    &snap
        .field(label)
        .unwrap_or_else(|| panic!("no field {label} in {:?}", snap.info.path))
        .value
}

#[test]
fn the_issue_surface_round_trips_through_a_file() {
    mmstats::install_sigbus_guard().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stats = WebStats::builder().dir(dir.path()).open().unwrap();
    stats.ok.incr();
    stats.ok.add(5);
    stats.in_flight.set(3);
    stats.in_flight.incr();
    stats.in_flight.decr();
    stats.in_flight.add(-10);
    stats.load.set(0.75);
    stats.state.set("reading request");
    assert!(stats.version.set("1.2.3"));
    assert!(!stats.version.set("9.9.9"), "a constant is written once");

    let path = only_file(dir.path());
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let pid = std::process::id().to_string();
    assert!(name.contains(".WebStats.") && name.contains(&pid) && name.ends_with(".mmstats"));

    let snap = mmstats_read::read_file(&path).unwrap();
    assert_eq!(value(&snap, "web.status.2xx"), &Value::Counter(6));
    assert_eq!(value(&snap, "web.in_flight"), &Value::Gauge(-7));
    assert_eq!(value(&snap, "web.load"), &Value::GaugeF64(0.75));
    assert_eq!(
        value(&snap, "web.state"),
        &Value::Text("reading request".into())
    );
    assert_eq!(
        value(&snap, "web.version"),
        &Value::Constant("1.2.3".into())
    );
    let ok = snap.field("web.status.2xx").unwrap();
    assert_eq!(ok.help, "Responses with a 2xx status.");
    assert_eq!(ok.kind, Kind::Counter);
    assert_eq!(snap.info.pid, std::process::id());
    assert_eq!(snap.info.model, "WebStats");
    assert!(snap.info.alive);
    assert_eq!(snap.info.state, WriterState::Active);
    assert!(snap.info.process_start > 0);

    drop(stats);
    let snap = mmstats_read::read_file(&path).unwrap();
    // Closed; the process, which holds the lock, lives on.
    assert!(snap.info.alive);
    assert_eq!(snap.info.state, WriterState::Exited);
    assert_eq!(
        value(&snap, "web.status.2xx"),
        &Value::Counter(6),
        "values outlive the writer"
    );
}

#[test]
fn text_is_truncated_on_a_character_boundary() {
    mmstats::install_sigbus_guard().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stats = WebStats::builder().dir(dir.path()).open().unwrap();
    let long = "é".repeat(40); // 80 bytes, capacity 64
    assert_eq!(stats.state.set(&long), 64);
    stats.version.set("日本語のバージョン"); // 27 bytes, capacity 16
    let snap = mmstats_read::read_file(only_file(dir.path())).unwrap();
    assert_eq!(value(&snap, "web.state"), &Value::Text("é".repeat(32)));
    assert_eq!(
        value(&snap, "web.version"),
        &Value::Constant("日本語のバ".into())
    );
}

#[test]
fn builder_options_dir_template_prefix() {
    mmstats::install_sigbus_guard().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("made/for/us");
    let stats = DbStats::builder()
        .dir(&nested)
        .template("svc-{cmd}-{model}-{pid}-{tid}.mmstats")
        .prefix("svc.")
        .command("worker 7")
        .open()
        .unwrap();
    stats.queries.add(2);
    let path = only_file(&nested);
    assert_eq!(
        path.file_name().unwrap().to_string_lossy(),
        format!(
            "svc-worker_7-DbStats-{}-{}.mmstats",
            std::process::id(),
            thread_tid()
        )
    );
    let snap = mmstats_read::read_file(&path).unwrap();
    assert_eq!(value(&snap, "svc.queries"), &Value::Counter(2));
    assert_eq!(snap.info.command, "worker 7");

    // A second instance with the same name gets its own file.
    let again = DbStats::builder()
        .dir(&nested)
        .template("svc-{cmd}-{model}-{pid}-{tid}.mmstats")
        .command("worker 7")
        .open()
        .unwrap();
    again.queries.incr();
    assert_eq!(files_in(&nested).len(), 2);

    let err = DbStats::builder()
        .dir(&nested)
        .template("{nope}.mmstats")
        .open()
        .err()
        .unwrap();
    assert!(err.to_string().contains("{nope}"), "{err}");
}

#[test]
fn file_mode_is_0644_and_directory_not_shared() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let _stats = DbStats::builder().dir(dir.path()).open().unwrap();
    let mode = std::fs::metadata(only_file(dir.path()))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o644);

    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = DbStats::builder().dir(&shared).open().err().unwrap();
    assert!(matches!(err, mmstats::Error::UnsafeDir { .. }), "{err}");
    assert!(err.to_string().contains("shared"), "{err}");
}

#[test]
fn a_stale_entry_with_our_name_is_kept_never_written_through() {
    mmstats::install_sigbus_guard().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stem = format!("stale-{}-{}", std::process::id(), thread_tid());
    let name = format!("{stem}.mmstats");
    // A leftover with our name (a symlink trap): never followed, never
    // replaced (a dead writer's file may hold counts); we take the next name.
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"do not touch").unwrap();
    std::os::unix::fs::symlink(&victim, dir.path().join(&name)).unwrap();
    let stats = DbStats::builder()
        .dir(dir.path())
        .template("stale-{pid}-{tid}.mmstats")
        .open()
        .unwrap();
    stats.queries.incr();
    assert_eq!(std::fs::read(&victim).unwrap(), b"do not touch");
    // The probe of a name opens it with O_NOFOLLOW (format-spec.md §2.4,
    // §7.1): a link there has unknown liveness, so the writer leaves it
    // and takes the next name.
    assert!(std::fs::symlink_metadata(dir.path().join(&name))
        .unwrap()
        .file_type()
        .is_symlink());
    let snap = mmstats_read::read_file(dir.path().join(format!("{stem}.2.mmstats"))).unwrap();
    assert_eq!(value(&snap, "queries"), &Value::Counter(1));
}

#[test]
fn four_threads_write_four_files() {
    mmstats::install_sigbus_guard().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let handles: Vec<_> = (0..4u64)
        .map(|i| {
            let dir = dir.path().to_owned();
            std::thread::spawn(move || {
                let stats = DbStats::builder().dir(dir).open().unwrap();
                for _ in 0..(i + 1) * 100_000 {
                    stats.queries.incr();
                }
                // Keep the file open until all four are read.
                stats
            })
        })
        .collect();
    let models: Vec<DbStats> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let files = files_in(dir.path());
    assert_eq!(files.len(), 4);
    let mut got: Vec<(u32, u64)> = files
        .iter()
        .map(|f| {
            let snap = mmstats_read::read_file(f).unwrap();
            assert!(snap.info.alive);
            let Value::Counter(n) = value(&snap, "queries") else {
                panic!("not a counter")
            };
            (snap.info.tid, *n)
        })
        .collect();
    got.sort_by_key(|&(_, n)| n);
    assert_eq!(
        got.iter().map(|&(_, n)| n).collect::<Vec<_>>(),
        [100_000, 200_000, 300_000, 400_000]
    );
    let mut tids: Vec<u32> = got.iter().map(|&(t, _)| t).collect();
    tids.dedup();
    assert_eq!(tids.len(), 4, "one file per thread");
    drop(models);
}

#[test]
fn two_models_in_one_thread_get_two_files() {
    mmstats::install_sigbus_guard().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let web = WebStats::builder().dir(dir.path()).open().unwrap();
    let db = DbStats::builder().dir(dir.path()).open().unwrap();
    web.ok.incr();
    db.queries.add(7);
    let snaps: Vec<Snapshot> = files_in(dir.path())
        .iter()
        .map(|f| mmstats_read::read_file(f).unwrap())
        .collect();
    assert_eq!(snaps.len(), 2);
    let models: Vec<&str> = snaps.iter().map(|s| s.info.model.as_str()).collect();
    assert!(models.contains(&"WebStats") && models.contains(&"DbStats"));
    for s in &snaps {
        assert_eq!(s.info.tid, snaps[0].info.tid);
    }
}

mmstats::per_thread!(static PER_THREAD: DbStats = per_thread_builder);

fn per_thread_dir() -> &'static Path {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().unwrap()).path()
}

fn per_thread_builder() -> mmstats::Builder<DbStats> {
    DbStats::builder().dir(per_thread_dir())
}

#[test]
fn per_thread_static_gives_each_thread_its_own_file() {
    mmstats::install_sigbus_guard().unwrap();
    // All three alive at once: a thread that starts after another ended
    // would take over the ended one's file (tests/lifecycle.rs).
    let all_open = std::sync::Arc::new(std::sync::Barrier::new(3));
    let threads: Vec<_> = (0..3)
        .map(|i| {
            let all_open = std::sync::Arc::clone(&all_open);
            std::thread::spawn(move || {
                for _ in 0..=i {
                    PER_THREAD.with(|s| s.queries.incr());
                }
                all_open.wait();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(PER_THREAD.error().is_none());
    let mut counts: Vec<u64> = files_in(per_thread_dir())
        .iter()
        .map(|f| {
            let snap = mmstats_read::read_file(f).unwrap();
            // The threads have ended: their instances were dropped (the
            // process lives on, so its lock still says alive).
            assert_eq!(snap.info.state, WriterState::Exited);
            assert!(snap.info.alive);
            match value(&snap, "queries") {
                Value::Counter(n) => *n,
                v => panic!("{v:?}"),
            }
        })
        .collect();
    counts.sort();
    assert_eq!(counts, [1, 2, 3]);
}

#[test]
fn unwritable_directory_falls_back_to_private_memory() {
    let dir = tempfile::tempdir().unwrap();
    // A path under a regular file can never be created, even by root.
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, b"").unwrap();
    let bad = blocker.join("stats");
    let err = DbStats::builder().dir(&bad).open().err().unwrap();
    assert!(err.to_string().contains("not-a-dir"), "{err}");

    let (stats, err) = DbStats::builder().dir(&bad).open_or_private();
    let err = err.expect("the reason is reported");
    assert!(matches!(err, mmstats::Error::Dir { .. }), "{err}");
    // The same code keeps working, in private memory.
    stats.queries.add(41);
    stats.queries.incr();
    assert_eq!(stats.queries.get(), 42);
}

#[test]
fn fields_appended_to_a_live_file_show_up_in_the_next_snapshot() {
    mmstats::install_sigbus_guard().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut schema = Schema::new("dynamic");
    schema.push(FieldDef::counter("first").help("The first."));
    let mut file =
        StatsFile::create(&schema, &Options::new().dir(dir.path()).reserve(4, 4096)).unwrap();
    let reader = Reader::open(file.path().unwrap()).unwrap();
    assert_eq!(reader.snapshot().unwrap().fields.len(), 1);

    let late: Counter = file
        .add(FieldDef::counter("late").help("Added while live."))
        .unwrap();
    late.add(9);
    let label: Text<32> = file.add(FieldDef::text("late.text", 32)).unwrap();
    label.set("hello");
    let snap = reader.snapshot().unwrap();
    assert_eq!(snap.fields.len(), 3);
    assert_eq!(value(&snap, "late"), &Value::Counter(9));
    assert_eq!(snap.field("late").unwrap().help, "Added while live.");
    assert_eq!(value(&snap, "late.text"), &Value::Text("hello".into()));

    let wrong = file.add::<Counter>(FieldDef::gauge("g"));
    assert!(wrong.unwrap_err().to_string().contains("added as counter"));
    for i in 0..2 {
        let _: Gauge = file.add(FieldDef::gauge(&format!("g{i}"))).unwrap();
    }
    let twice = file.add::<Gauge>(FieldDef::gauge("g0"));
    assert!(twice.unwrap_err().to_string().contains("used twice"));
    let full = file.add::<Gauge>(FieldDef::gauge("one.too.many"));
    assert!(matches!(full, Err(mmstats::Error::NoRoom { .. })));
}

#[test]
fn run_time_schemas_hand_out_their_handles_once() {
    mmstats::install_sigbus_guard().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut schema = Schema::new("runtime");
    schema.push(FieldDef::counter("hits"));
    schema.push(FieldDef::text("mood", 8));
    let mut file =
        StatsFile::create(&schema, &Options::new().dir(dir.path()).prefix("rt.")).unwrap();
    let hits: Counter = file.take("hits").unwrap();
    let mood: Text<8> = file.take("mood").unwrap();
    hits.add(3);
    mood.set("calm");
    assert!(file.take::<Counter>("hits").is_err(), "taken twice");
    assert!(file
        .take::<Counter>("nope")
        .unwrap_err()
        .to_string()
        .contains("rt.nope"));
    let snap = mmstats_read::read_file(file.path().unwrap()).unwrap();
    assert_eq!(value(&snap, "rt.hits"), &Value::Counter(3));
    assert_eq!(value(&snap, "rt.mood"), &Value::Text("calm".into()));

    let mut schema = Schema::new("kinds");
    schema.push(FieldDef::gauge("g"));
    let mut file = StatsFile::private(&schema, &Options::new()).unwrap();
    let err = file.take::<Counter>("g").unwrap_err();
    assert!(err.to_string().contains("taken as counter"), "{err}");
}

#[test]
fn a_fifo_named_like_a_stats_file_does_not_hang_the_reader() {
    mmstats::install_sigbus_guard().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("trap.mmstats");
    let status = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(status.success());
    // Listed, it is skipped with a problem naming it, never opened.
    let (files, problems) = mmstats_read::discover(&[dir.path()]);
    assert!(files.is_empty(), "{files:?}");
    assert!(
        problems[0].to_string().contains("trap.mmstats"),
        "{problems:?}"
    );
    // Opening a FIFO for reading blocks until a writer comes, unless the
    // reader asks not to; run it on a thread so a regression fails, not hangs.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(mmstats_read::read_file(&fifo).map(|_| ())).unwrap());
    let err = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("reader hung on a FIFO")
        .unwrap_err();
    assert!(err.to_string().contains("not a regular file"), "{err}");
}

#[test]
fn a_planted_symlink_in_place_of_the_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("elsewhere");
    std::fs::create_dir(&target).unwrap();
    let link = dir.path().join("stats");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    // Our own link is fine.
    DbStats::builder().dir(&link).open().unwrap();
    // Someone else's is not (needs root to make one owned by another user).
    if std::os::unix::fs::lchown(&link, Some(4242), None).is_err() {
        eprintln!("cannot chown here (not root): skipping the foreign half");
        return;
    }
    let err = DbStats::builder().dir(&link).open().err().unwrap();
    assert!(
        matches!(err, mmstats::Error::ForeignDir { owner: 4242, .. }),
        "{err}"
    );
}

#[test]
fn a_directory_owned_by_someone_else_is_refused() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let theirs = dir.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    let me = std::fs::metadata(&theirs).unwrap().uid();
    let other = if me == 0 { 4242 } else { 0 };
    if std::os::unix::fs::chown(&theirs, Some(other), None).is_err() {
        eprintln!("cannot chown here (not root): skipping");
        return;
    }
    let err = DbStats::builder().dir(&theirs).open().err().unwrap();
    assert!(matches!(err, mmstats::Error::ForeignDir { .. }), "{err}");
    assert!(err.to_string().contains("theirs"), "{err}");
}

#[test]
fn handles_must_match_their_definition() {
    let mut schema = Schema::new("caps");
    schema.push(FieldDef::text("t", 64));
    let mut file = StatsFile::private(&schema, &Options::new()).unwrap();
    let err = file.take::<Text<8>>("t").unwrap_err();
    assert!(err.to_string().contains("capacity is 64"), "{err}");
    let _: Text<64> = file.take("t").unwrap();
}

#[test]
fn absurd_reservations_are_errors_not_overflows() {
    let schema = Schema::new("huge");
    for options in [
        Options::new().reserve(usize::MAX, 0),
        Options::new().reserve(0, usize::MAX),
    ] {
        let err = StatsFile::private(&schema, &options).unwrap_err();
        assert!(err.to_string().contains("too large"), "{err}");
    }
}

#[derive(Stats)]
struct Empty {}

#[test]
fn a_model_without_fields_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let err = Empty::builder().dir(dir.path()).open().err().unwrap();
    assert!(err.to_string().contains("at least one field"), "{err}");
}

#[test]
fn static_labels_and_units_are_stored() {
    mmstats::install_sigbus_guard().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut schema = Schema::new("labelled");
    schema.push(
        FieldDef::counter("http.requests")
            .static_label("method", "GET")
            .static_label("code", "200")
            .unit("requests"),
    );
    let file = StatsFile::create(&schema, &Options::new().dir(dir.path())).unwrap();
    let snap = mmstats_read::read_file(file.path().unwrap()).unwrap();
    let f = snap.field("http.requests").unwrap();
    assert_eq!(
        f.static_labels,
        vec![
            ("method".into(), "GET".into()),
            ("code".into(), "200".into())
        ]
    );
    assert_eq!(f.unit_text, "requests");
}

/// A reader hammers a text field and an f64 gauge while a writer rewrites
/// them at full speed. Every text read must be one of the strings written,
/// whole; every f64 one of the values written.
#[test]
fn hammered_text_and_f64_are_never_torn() {
    mmstats::install_sigbus_guard().unwrap();
    const WORDS: [&str; 4] = [
        "",
        "short",
        "a much longer string that spans several words of the value",
        "ünïcödé ünïcödé ünïcödé ünïcödé ünïcödé", // 59 bytes: fits in 64
    ];
    // Bit patterns that differ in every byte, so a torn read is not one of them.
    const FLOATS: [f64; 4] = [0.0, -1.5e300, 2.718_281_828_459_045_5e-7, f64::MIN_POSITIVE];

    let dir = tempfile::tempdir().unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let writer = {
        let dir = dir.path().to_owned();
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let stats = WebStats::builder().dir(dir).open().unwrap();
            ready_tx.send(()).unwrap();
            let mut i = 0usize;
            // Relaxed: a stop flag; nothing else is ordered by it.
            while !done.load(Ordering::Relaxed) {
                stats.state.set(WORDS[i % 4]);
                stats.load.set(FLOATS[i % 4]);
                i += 1;
            }
            i
        })
    };
    ready_rx.recv().unwrap();
    let reader = Reader::open(only_file(dir.path())).unwrap();
    let (mut text_reads, mut unavailable, mut seen) = (0u64, 0u64, [false; 4]);
    // Millions of reads against a writer that never pauses.
    let rounds = 2_000_000;
    for _ in 0..rounds {
        let snap = reader.snapshot().unwrap();
        match value(&snap, "web.state") {
            Value::Text(s) => {
                let k = WORDS.iter().position(|w| w == s);
                assert!(k.is_some(), "torn text {s:?}");
                seen[k.unwrap()] = true;
            }
            Value::Unavailable(_) => unavailable += 1,
            v => panic!("{v:?}"),
        }
        match value(&snap, "web.load") {
            Value::GaugeF64(f) => assert!(
                FLOATS.iter().any(|x| x.to_bits() == f.to_bits()),
                "torn f64 {f:?}"
            ),
            v => panic!("{v:?}"),
        }
        text_reads += 1;
    }
    // Relaxed: see the writer's loop.
    done.store(true, Ordering::Relaxed);
    let writes = writer.join().unwrap();
    eprintln!(
        "{text_reads} text and f64 reads each, {unavailable} text reads unavailable, {writes} writes"
    );
    assert!(writes > 1000, "the writer must have been running");
    assert!(
        seen.iter().filter(|&&s| s).count() >= 2,
        "the reader saw the text change: {seen:?}"
    );
    // A reader may give up after TEXT_RETRIES attempts, but with two buffers
    // it has a whole write cycle to copy one, so that should be rare.
    assert!(
        unavailable * 100 < text_reads,
        "{unavailable} of {text_reads} text reads unavailable"
    );
}

/// The child half of `child_process_writes_while_parent_reads`: counts to
/// the number in `MMSTATS_CHILD_COUNT`, says "done", then waits for stdin
/// to close.
#[test]
#[ignore = "run as a child process by child_process_writes_while_parent_reads"]
fn child_writer() {
    let Ok(count) = std::env::var("MMSTATS_CHILD_COUNT") else {
        return;
    };
    let count: u64 = count.parse().unwrap();
    let stats = WebStats::open().unwrap();
    // The harness prints "test child_writer ... " before this, unterminated.
    println!("\n{READY}");
    std::io::stdout().flush().unwrap();
    for i in 1..=count {
        stats.ok.incr();
        stats.in_flight.set(i as i64);
    }
    stats.state.set("done");
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

/// Starts this test binary as `child_writer` counting to `count` in `dir`,
/// and waits until its stats file exists.
fn spawn_child_writer(dir: &Path, count: u64) -> std::process::Child {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_writer",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("MMSTATS_DIR", dir)
        .env("MMSTATS_CHILD_COUNT", count.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains(READY) {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "child exited early");
    }
    // Keep draining, so the child's last words do not hit a closed pipe.
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    child
}

#[test]
fn child_process_writes_while_parent_reads() {
    mmstats::install_sigbus_guard().unwrap();
    const COUNT: u64 = 5_000_000;
    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn_child_writer(dir.path(), COUNT);
    let path = only_file(dir.path());
    let reader = Reader::open(&path).unwrap();
    let mut last = 0u64;
    loop {
        let snap = reader.snapshot().unwrap();
        assert_eq!(snap.info.pid, child.id());
        assert!(snap.info.alive, "the child holds its lock while running");
        let Value::Counter(n) = *value(&snap, "web.status.2xx") else {
            panic!()
        };
        let Value::Gauge(g) = *value(&snap, "web.in_flight") else {
            panic!()
        };
        assert!(n >= last, "counter went backwards: {last} -> {n}");
        assert!(n <= COUNT);
        // The gauge is stored after the counter, but a reader may load them
        // in either order; both only go up here.
        assert!(g >= 0 && g as u64 <= COUNT);
        last = n;
        if value(&snap, "web.state") == &Value::Text("done".into()) {
            assert_eq!(n, COUNT, "exact once the child says done");
            assert_eq!(g as u64, COUNT);
            break;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    let snap = reader.snapshot().unwrap();
    assert!(!snap.info.alive, "a dead writer's lock is gone");
    assert_eq!(snap.info.state, WriterState::Exited);
    assert_eq!(value(&snap, "web.status.2xx"), &Value::Counter(COUNT));
}

#[test]
fn killed_writer_reads_as_dead_but_active() {
    mmstats::install_sigbus_guard().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn_child_writer(dir.path(), 10);
    let path = only_file(dir.path());
    assert_eq!(mmstats_read::probe_alive(&path), Some(true));
    child.kill().unwrap();
    child.wait().unwrap();
    let snap = mmstats_read::read_file(&path).unwrap();
    assert!(!snap.info.alive);
    assert_eq!(
        snap.info.state,
        WriterState::Active,
        "it never said goodbye"
    );
    assert_eq!(mmstats_read::probe_alive(&path), Some(false));
}
