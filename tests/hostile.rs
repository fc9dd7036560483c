//! The reader against files planted by another local user, as a reader
//! running as root meets them (format-spec.md §7.1, §7.4, §7.6): real users
//! (made with `useradd`, entered with `setpriv`), real links, FIFOs and
//! devices. These tests must run as root, and fail if they do not.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{symlink, FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use mmstats::format::raw::{self, Header, Record};
use mmstats::{Counter, FieldDef, Options, Schema, StatsFile};
use mmstats_read::{Found, Value};
use mmstats_read::{ReadError, ReadLimits, Reader};

const USER: &str = "mmstats-test-hostile";
const SECRET: &[u8] = b"TOPSECRET-do-not-print-me";

fn require_root() {
    assert_eq!(
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() },
        0,
        "tests/hostile.rs must run as root: it makes a user with useradd and plants files as that user (CI and ./test.sh run as root)"
    );
}

/// The test user's (uid, gid), made if missing.
fn test_user() -> (u32, u32) {
    require_root();
    let id = |flag: &str| {
        Command::new("id")
            .args([flag, USER])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .trim()
                    .parse::<u32>()
                    .unwrap()
            })
    };
    if id("-u").is_none() {
        let out = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                USER,
            ])
            .output()
            .expect("run useradd (package passwd)");
        // Another test may have made it at the same moment.
        assert!(
            out.status.success() || id("-u").is_some(),
            "useradd {USER}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    (id("-u").unwrap(), id("-g").unwrap())
}

/// Runs `sh -c script` as the test user.
fn as_user(user: (u32, u32), script: &str) {
    let out = Command::new("setpriv")
        .arg(format!("--reuid={}", user.0))
        .arg(format!("--regid={}", user.1))
        .args(["--clear-groups", "sh", "-c", script])
        .output()
        .expect("run setpriv (package util-linux)");
    assert!(
        out.status.success(),
        "as {USER}: {script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn q(p: &Path) -> String {
    format!("'{}'", p.display())
}

/// A temporary directory that other users can enter.
fn open_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// A root-only secret file, `len` bytes starting with [`SECRET`].
fn secret(dir: &Path, len: usize) -> PathBuf {
    let path = dir.join(format!("secret-{len}"));
    let mut bytes = SECRET.to_vec();
    bytes.resize(len, b'#');
    fs::write(&path, bytes).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// A valid stats file (one counter `n` = 5) at `path`, made by root.
fn stats_file(path: &Path) {
    let stage = tempfile::tempdir().unwrap();
    let mut schema = Schema::new("Planted");
    schema.push(FieldDef::counter("n"));
    let mut file = StatsFile::create(&schema, &Options::new().dir(stage.path())).unwrap();
    let n: Counter = file.take("n").unwrap();
    n.add(5);
    let made = file.path().unwrap().to_owned();
    drop((n, file));
    fs::copy(made, path).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o644)).unwrap();
}

/// Asserts that `text` holds no byte of the secret and not its size.
fn assert_no_leak(text: &str, len: usize) {
    for needle in ["TOPSECRET", "544f50", "54, 4f", "84, 79", "do-not-print"] {
        assert!(!text.contains(needle), "leaked {needle:?}: {text}");
    }
    assert!(
        !text.contains(&len.to_string()),
        "leaked the size {len}: {text}"
    );
}

#[test]
fn planted_links_devices_and_fifos_are_never_followed_or_opened() {
    mmstats::install_sigbus_guard().unwrap();
    let user = test_user();
    let top = open_tempdir();
    let (short, long) = (secret(top.path(), 113), secret(top.path(), 1237));
    let dir = top.path().join("planted");
    fs::create_dir(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(user.0), Some(user.1)).unwrap();
    as_user(
        user,
        &format!(
            "cd {} && ln -s {} short.mmstats && ln -s {} long.mmstats && ln -s /dev/zero zero.mmstats && mkfifo pipe.mmstats",
            q(&dir),
            q(&short),
            q(&long)
        ),
    );
    // As root: a real character device (/dev/null's numbers) under a stats name.
    let dev = dir.join("null.mmstats");
    let made = Command::new("mknod")
        .arg(&dev)
        .args(["c", "1", "3"])
        .status()
        .unwrap();
    assert!(made.success());

    let (files, problems) = mmstats_read::scan(&[&dir]);
    assert!(files.is_empty(), "{files:?}");
    let all: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    let text = all.join("\n");
    for (name, what) in [
        ("short.mmstats", "symbolic link"),
        ("long.mmstats", "symbolic link"),
        ("zero.mmstats", "symbolic link"),
        ("pipe.mmstats", "FIFO"),
        ("null.mmstats", "character device"),
    ] {
        assert!(
            all.iter().any(|p| p.contains(name) && p.contains(what)),
            "no problem says {name} is a {what}: {text}"
        );
    }
    assert!(text.contains("no stats files in this directory"), "{text}");
    assert!(problems.iter().all(|p| !p.foreign), "{problems:?}");
    assert_no_leak(&text, 113);
    assert_no_leak(&text, 1237);

    // Opened directly: a link is not followed, a device is refused unopened.
    match Reader::open(dir.join("long.mmstats")) {
        Err(e @ ReadError::Io { .. }) => {
            assert!(e.to_string().contains("symbolic link"), "{e}");
            assert_no_leak(&e.to_string(), 1237);
        }
        other => panic!("expected an Io error for a link, got {other:?}"),
    }
    for path in [&dev, &dir.join("pipe.mmstats")] {
        match Reader::open(path) {
            Err(e @ ReadError::Malformed { .. }) => {
                assert!(e.to_string().contains("not a regular file"), "{e}")
            }
            other => panic!("expected not a regular file, got {other:?}"),
        }
    }
    // A hard link (where the kernel allows one) reads as bad magic or too
    // short, without a byte or the size.
    for (secret, len, name) in [(&short, 113, "short"), (&long, 1237, "long")] {
        let link = top.path().join(format!("hard-{name}.mmstats"));
        fs::hard_link(secret, &link).unwrap();
        let err = mmstats_read::read_file(&link).unwrap_err().to_string();
        assert!(
            err.contains("bad magic") || err.contains("shorter than the"),
            "{err}"
        );
        assert_no_leak(&err, len);
    }
}

#[test]
fn default_scan_checks_directories_and_owners_and_marks_foreign_problems() {
    mmstats::install_sigbus_guard().unwrap();
    let user = test_user();
    let root = open_tempdir();
    // Our own directory (root's), with one good file and one bad one.
    let own = root.path().join("mmstats-0");
    fs::create_dir(&own).unwrap();
    stats_file(&own.join("mine.mmstats"));
    fs::write(own.join("junk.mmstats"), vec![b'x'; 4096]).unwrap();
    // The user's directory: a good file of theirs, junk, a link, a file
    // they do not own.
    let theirs = root.path().join(format!("mmstats-{}", user.0));
    fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(user.0), Some(user.1)).unwrap();
    let stage = root.path().join("stage.mmstats");
    stats_file(&stage);
    as_user(
        user,
        &format!(
            "cd {} && cp {} good.mmstats && head -c 5000 /dev/zero > junk.mmstats && ln -s /etc/passwd link.mmstats",
            q(&theirs),
            q(&stage)
        ),
    );
    stats_file(&theirs.join("rootowned.mmstats"));
    // Directories that a default scan refuses: group-writable, and a link.
    let writable = root.path().join("mmstats-writable");
    fs::create_dir(&writable).unwrap();
    std::os::unix::fs::chown(&writable, Some(user.0), Some(user.1)).unwrap();
    fs::set_permissions(&writable, fs::Permissions::from_mode(0o775)).unwrap();
    stats_file(&writable.join("w.mmstats"));
    // A link the user planted (root's test directory is not theirs to
    // write, so root makes it and gives it to them).
    let link = root.path().join("mmstats-link");
    symlink(&theirs, &link).unwrap();
    std::os::unix::fs::lchown(&link, Some(user.0), Some(user.1)).unwrap();

    // The only test in this binary that reads these variables.
    std::env::remove_var(mmstats::DIR_ENV);
    std::env::set_var("MMSTATS_SCAN_ROOT", root.path());
    let (files, problems) = mmstats_read::scan::<&OsStr>(&[]);
    std::env::remove_var("MMSTATS_SCAN_ROOT");

    let paths: Vec<&Path> = files.iter().map(|f| f.path.as_path()).collect();
    assert_eq!(
        paths,
        [
            own.join("junk.mmstats"),
            own.join("mine.mmstats"),
            theirs.join("good.mmstats"),
            theirs.join("junk.mmstats"),
        ],
        "{problems:?}"
    );
    assert!(!files[0].foreign && !files[1].foreign);
    assert!(files[2].foreign && files[3].foreign);
    assert_eq!(files[1].owner, Some(0));
    assert_eq!(files[2].owner, Some(user.0));
    // Every listing problem here is in the user's directories.
    assert!(problems.iter().all(|p| p.foreign), "{problems:?}");
    let foreign: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    for needle in [
        "link.mmstats: a symbolic link",
        "rootowned.mmstats: owned by uid 0",
        "mmstats-writable: writable by group or others",
        "mmstats-link: is a symbolic link",
    ] {
        assert!(
            foreign.iter().any(|p| p.contains(needle)),
            "no foreign problem {needle:?}: {foreign:?}"
        );
    }
    assert_eq!(foreign.len(), 4, "{foreign:?}");

    // The user's file reads; junk (theirs or ours) is found and fails.
    let limits = ReadLimits::default();
    let good = files[2].open(&limits).unwrap().snapshot().unwrap();
    assert_eq!(good.field("n").unwrap().value, Value::Counter(5));
    assert!(files[0].open(&limits).and_then(|r| r.snapshot()).is_err());
    assert!(files[3].open(&limits).and_then(|r| r.snapshot()).is_err());

    // Replaced after it was listed by a file its directory's owner could
    // not have written: refused on the descriptor.
    fs::rename(
        theirs.join("rootowned.mmstats"),
        theirs.join("good.mmstats"),
    )
    .unwrap();
    match files[2].open(&limits) {
        Err(e @ ReadError::NotOwned { .. }) => {
            assert!(
                e.to_string().contains("not by its directory's owner"),
                "{e}"
            )
        }
        other => panic!("expected NotOwned, got {other:?}"),
    }
    // Named explicitly, the same file is read: the owner rule is the
    // default scan's.
    let found: Vec<Found> = mmstats_read::scan(&[theirs.join("good.mmstats")]).0;
    assert_eq!(found[0].owner, None);
    assert!(found[0].open(&ReadLimits::default()).is_ok());
}

#[test]
fn recursive_patterns_do_not_follow_links_or_loop() {
    mmstats::install_sigbus_guard().unwrap();
    let top = open_tempdir();
    let a = top.path().join("a");
    let elsewhere = top.path().join("elsewhere");
    fs::create_dir_all(a.join("b")).unwrap();
    fs::create_dir(&elsewhere).unwrap();
    stats_file(&a.join("x.mmstats"));
    stats_file(&a.join("b").join("y.mmstats"));
    stats_file(&elsewhere.join("z.mmstats"));
    symlink("..", a.join("up")).unwrap();
    symlink("../..", a.join("b").join("upup")).unwrap();
    symlink(&elsewhere, a.join("away")).unwrap();
    let pattern = top.path().join("a/**/*.mmstats");
    let (files, problems) = mmstats_read::discover(&[&pattern]);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(files, [a.join("b/y.mmstats"), a.join("x.mmstats")]);
    // Two overlapping recursions still give each file once.
    let twice = top.path().join("**/a/**/*.mmstats");
    assert_eq!(mmstats_read::discover(&[&twice]).0.len(), 2);
}

#[test]
fn paths_are_sorted_by_their_bytes() {
    mmstats::install_sigbus_guard().unwrap();
    let top = tempfile::tempdir().unwrap();
    // By components, "d/a" sorts before "d/a.b"; by bytes '.' < '/'.
    for sub in ["a", "a.b"] {
        fs::create_dir(top.path().join(sub)).unwrap();
        stats_file(&top.path().join(sub).join("x.mmstats"));
    }
    let (files, _) = mmstats_read::discover(&[top.path().join("a"), top.path().join("a.b")]);
    assert_eq!(
        files,
        [
            top.path().join("a.b/x.mmstats"),
            top.path().join("a/x.mmstats")
        ]
    );
}

/// A valid, sparse file of `fields` text fields of `capacity` bytes each,
/// every buffer claiming to hold `capacity` bytes (zeros: valid UTF-8).
fn text_bomb(path: &Path, fields: usize, capacity: usize) {
    let stage = tempfile::tempdir().unwrap();
    let mut schema = Schema::new("Bomb");
    for i in 0..fields {
        schema.push(FieldDef::text(&format!("t{i}"), capacity));
    }
    let file = StatsFile::create(&schema, &Options::new().dir(stage.path())).unwrap();
    let made = fs::read(file.path().unwrap()).unwrap();
    drop(file);
    // What an attacker plants: the same bytes up to the value area, and
    // the rest a hole, which costs nothing.
    let h = Header::decode(&made[..raw::HEADER_LEN]);
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .unwrap();
    f.write_all_at(&made[..h.values_off.get() as usize], 0)
        .unwrap();
    f.set_len(made.len() as u64).unwrap();
    drop(made);
    for i in 0..fields {
        let mut rec = vec![0; raw::RECORD_LEN];
        let at = u64::from(h.field_table_off.get()) + (i * h.record_len.get() as usize) as u64;
        f.read_exact_at(&mut rec, at).unwrap();
        let r = Record::decode(&rec);
        let len_at = r.value_off.get() as usize + raw::text_buffer(capacity, 0) + raw::TEXT_BUF_LEN;
        f.write_all_at(&(capacity as u64).to_le_bytes(), len_at as u64)
            .unwrap();
    }
}

#[test]
fn reader_limits_bound_what_a_huge_sparse_file_costs() {
    mmstats::install_sigbus_guard().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bomb = dir.path().join("bomb.mmstats");
    text_bomb(&bomb, 500, 1 << 20);
    let size = fs::metadata(&bomb).unwrap();
    assert!(size.len() > 1 << 29, "{}", size.len());
    assert!(size.blocks() * 512 < 64 << 20, "the bomb is sparse");

    // By default: over the 64 MiB decode budget, an error for the file.
    match mmstats_read::read_file(&bomb) {
        Err(e @ ReadError::Limit { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("max_decoded") && msg.contains("bomb.mmstats"),
                "{msg}"
            );
        }
        other => panic!("expected a max_decoded limit error, got {other:?}"),
    }
    // With the budget raised, every text is over max_text_capacity:
    // unavailable, and nothing of it is copied.
    let mut limits = ReadLimits::default();
    limits.max_decoded = 1 << 30;
    let snap = Reader::open_with(&bomb, &limits)
        .unwrap()
        .snapshot()
        .unwrap();
    assert_eq!(snap.fields.len(), 500);
    for f in &snap.fields {
        match &f.value {
            Value::Unavailable(r) => assert!(r.contains("max_text_capacity"), "{r}"),
            other => panic!("{}: expected unavailable, got {other:?}", f.label),
        }
    }
    // Fewer fields allowed than the file has.
    let mut limits = ReadLimits::default();
    limits.max_fields = 499;
    match Reader::open_with(&bomb, &limits).unwrap().snapshot() {
        Err(ReadError::Limit { limit, value, .. }) => {
            assert_eq!((limit, value), ("max_fields", 499))
        }
        other => panic!("expected max_fields, got {other:?}"),
    }
    // A smaller file limit refuses it at open.
    let mut limits = ReadLimits::default();
    limits.max_file_len = 1 << 20;
    match Reader::open_with(&bomb, &limits) {
        Err(ReadError::Limit { limit, .. }) => assert_eq!(limit, "max_file_len"),
        other => panic!("expected max_file_len, got {other:?}"),
    }
    // Small texts within the limit still read.
    let small = dir.path().join("small.mmstats");
    text_bomb(&small, 3, 1000);
    let snap = mmstats_read::read_file(&small).unwrap();
    assert_eq!(snap.fields[0].value, Value::Text("\0".repeat(1000)));
}

#[test]
fn duplicate_labels_keep_the_first_field_and_are_reported() {
    mmstats::install_sigbus_guard().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut schema = Schema::new("Dup");
    schema.push(FieldDef::counter("a"));
    schema.push(FieldDef::counter("b"));
    let mut file = StatsFile::create(&schema, &Options::new().dir(dir.path())).unwrap();
    let (a, b): (Counter, Counter) = (file.take("a").unwrap(), file.take("b").unwrap());
    a.add(1);
    b.add(2);
    let path = file.path().unwrap().to_owned();
    // Point record 1's label at record 0's: a file with "a" twice.
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let mut head = vec![0; raw::HEADER_LEN];
    f.read_exact_at(&mut head, 0).unwrap();
    let h = Header::decode(&head);
    let table = u64::from(h.field_table_off.get());
    let mut label = [0; 8];
    f.read_exact_at(&mut label, table + raw::R_LABEL as u64)
        .unwrap();
    f.write_all_at(
        &label,
        table + u64::from(h.record_len.get()) + raw::R_LABEL as u64,
    )
    .unwrap();
    let snap = mmstats_read::read_file(&path).unwrap();
    assert_eq!(snap.fields.len(), 1);
    assert_eq!(snap.fields[0].value, Value::Counter(1));
    assert_eq!(snap.duplicates, ["a"]);
    drop((a, b, file));
}
