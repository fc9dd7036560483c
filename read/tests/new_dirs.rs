//! A directory that appears after a reader started, and its first file,
//! are read at the next sample, without waiting for the periodic rescan:
//! the reader watches where such directories appear.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mmstats::{Counter, Stats};
use mmstats_read::aggregate::Sources;

/// The tests set process-wide environment variables: one at a time.
static ENV: Mutex<()> = Mutex::new(());

#[derive(Stats)]
struct Fresh {
    done: Counter,
}

/// Samples until a fresh file shows up or 5 s pass; returns how many.
fn wait_for_file(sources: &mut Sources) -> usize {
    let start = Instant::now();
    loop {
        let n = sources.sample().files.iter().filter(|f| f.fresh).count();
        if n > 0 || start.elapsed() > Duration::from_secs(5) {
            return n;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_new_user_directory_is_read_before_the_rescan() {
    let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
    mmstats::install_sigbus_guard().unwrap();
    let shm = tempfile::tempdir().unwrap();
    std::env::remove_var(mmstats::DIR_ENV);
    std::env::set_var(mmstats::SCAN_ROOT_ENV, shm.path());
    let no_paths: [&Path; 0] = [];
    let mut sources = Sources::new(&no_paths);
    // A rescan an hour away: only the watch can find the new directory.
    sources.set_rescan_interval(Duration::from_secs(3600));
    assert_eq!(sources.sample().files.len(), 0);
    let dir = shm.path().join("mmstats-4242");
    std::fs::create_dir(&dir).unwrap();
    let w = Fresh::builder().dir(&dir).open().unwrap();
    w.done.add(3);
    assert_eq!(wait_for_file(&mut sources), 1);
    std::env::remove_var(mmstats::SCAN_ROOT_ENV);
}

#[test]
fn a_stats_dir_made_after_the_reader_started_is_read_before_the_rescan() {
    let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
    mmstats::install_sigbus_guard().unwrap();
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("not/there/yet");
    std::env::set_var(mmstats::DIR_ENV, &dir);
    let no_paths: [&Path; 0] = [];
    let mut sources = Sources::new(&no_paths);
    sources.set_rescan_interval(Duration::from_secs(3600));
    assert_eq!(sources.sample().files.len(), 0);
    std::fs::create_dir_all(&dir).unwrap();
    let w = Fresh::builder().dir(&dir).open().unwrap();
    w.done.add(3);
    assert_eq!(wait_for_file(&mut sources), 1);
    std::env::remove_var(mmstats::DIR_ENV);
}
