//! A writer whose `/dev/shm/mmstats-EUID` another user made first falls
//! back to a private `mmstats-EUID-*` directory of its own, which root's
//! default scan reads and attributes to its owner. Real users: made with
//! `useradd`, entered with `setpriv`.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use mmstats::{Counter, Stats};

#[derive(Stats)]
struct Squat {
    done: Counter,
}

const USER: &str = "mmstats-squat";

/// Run as the victim by `a_squatted_default_dir_falls_back_to_one_the_scan_reads`.
#[test]
fn child_writes_as_victim() {
    if std::env::var_os("MMSTATS_SQUAT_CHILD").is_none() {
        return; // Only as the child of the test below.
    }
    let (stats, err) = Squat::open_or_private();
    assert!(err.is_none(), "no file: {err:?}");
    stats.done.add(42);
    // Exits with the file left behind, marked exited.
}

fn uid_of(user: &str) -> u32 {
    let out = Command::new("id").args(["-u", user]).output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn a_squatted_default_dir_falls_back_to_one_the_scan_reads() {
    assert_eq!(
        mmstats::geteuid(),
        0,
        "this test makes a user: run it as root (CI does)"
    );
    let _ = Command::new("useradd")
        .args(["--system", "--no-create-home", USER])
        .status();
    let uid = uid_of(USER);
    // A stand-in for /dev/shm: sticky and writable by all, as it is.
    let shm = tempfile::tempdir().unwrap();
    fs::set_permissions(shm.path(), fs::Permissions::from_mode(0o1777)).unwrap();
    // The parents of the temporary directory must let the victim in.
    let mut p = shm.path().parent();
    while let Some(dir) = p {
        let mode = fs::metadata(dir).unwrap().mode();
        assert!(
            mode & 0o001 != 0,
            "{} is not searchable by others",
            dir.display()
        );
        p = dir.parent();
    }
    // Squatted by root before the victim's first writer.
    let squatted = shm.path().join(format!("mmstats-{uid}"));
    fs::create_dir(&squatted).unwrap();
    fs::write(squatted.join("planted.mmstats"), b"not the victim's").unwrap();
    let exe = std::env::current_exe().unwrap();
    let status = Command::new("setpriv")
        .args([
            &format!("--reuid={uid}"),
            &format!("--regid={uid}"),
            "--clear-groups",
        ])
        .arg(&exe)
        .args(["--exact", "child_writes_as_victim", "--test-threads=1"])
        .env_clear()
        .env("MMSTATS_SQUAT_CHILD", "1")
        .env(mmstats::SCAN_ROOT_ENV, shm.path())
        .status()
        .unwrap();
    assert!(status.success(), "the victim's writer: {status}");
    let fallback: Vec<_> = fs::read_dir(shm.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("mmstats-{uid}-"))
        })
        .collect();
    assert_eq!(fallback.len(), 1, "{fallback:?}");
    let meta = fs::symlink_metadata(&fallback[0]).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o777), (uid, 0o700));
    // Root's default scan finds the victim's counts there, as the victim's.
    std::env::set_var(mmstats::SCAN_ROOT_ENV, shm.path());
    mmstats_read::install_sigbus_guard().unwrap();
    let no_paths: [&Path; 0] = [];
    let (found, problems) = mmstats_read::scan(&no_paths);
    // The squatted name is said, as another user's problem (counted, not
    // listed by slurpstats).
    let said: Vec<_> = problems
        .iter()
        .filter(|p| {
            p.reason
                .contains(&format!("named for uid {uid} but owned by uid 0"))
        })
        .collect();
    assert_eq!(said.len(), 1, "{problems:?}");
    assert!(said[0].foreign);
    let mine: Vec<_> = found
        .iter()
        .filter(|f| f.path.starts_with(&fallback[0]))
        .collect();
    assert_eq!(mine.len(), 1, "{found:?}");
    let snap = mine[0]
        .open(&mmstats_read::ReadLimits::default())
        .unwrap()
        .snapshot()
        .unwrap();
    assert_eq!(snap.info.owner, uid);
    assert_eq!(
        snap.field("done").unwrap().value,
        mmstats_read::Value::Counter(42)
    );
    // What the squatter planted under the victim's name is the squatter's.
    for f in found.iter().filter(|f| f.path.starts_with(&squatted)) {
        assert_eq!(f.owner, Some(0), "{f:?}");
    }
}
