//! Per-thread timers in a multi-threaded tokio runtime: guards and
//! instrumented futures that move between worker threads record every
//! sample exactly once, into the file of the thread that finishes them.
//!
//! Each test has its own model, `per_thread!` static and directory, since
//! the statics are process-global and tests run in parallel.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use mmstats::{HistogramSnapshot, Stats, Timer, WriterState};
use mmstats_read::{Snapshot, Value};

const WORKERS: usize = 4;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .enable_time()
        .build()
        .unwrap()
}

/// The kernel id of the calling thread, as stats files record it.
fn tid() -> u32 {
    // "/proc/thread-self" links to "PID/task/TID".
    let link = std::fs::read_link("/proc/thread-self").unwrap();
    let tid = link.file_name().unwrap().to_str().unwrap();
    tid.parse().unwrap()
}

/// Snapshots of every stats file in `dir`, whose writers must all have
/// exited and closed their files. (Their process, this one, still holds
/// its lock file, so `alive` is true: liveness is per process since 1.1.)
fn read_exited(dir: &Path) -> Vec<Snapshot> {
    mmstats::install_sigbus_guard().unwrap();
    let (files, problems) = mmstats_read::discover(&[dir]);
    assert!(problems.is_empty(), "{problems:?}");
    assert!(!files.is_empty(), "no stats file in {dir:?}");
    files
        .iter()
        .map(|f| {
            let snap = mmstats_read::read_file(f).unwrap();
            assert_eq!(snap.info.state, WriterState::Exited, "{f:?}");
            snap
        })
        .collect()
}

fn histogram(snap: &Snapshot, label: &str) -> HistogramSnapshot {
    match &snap.field(label).unwrap().value {
        Value::Histogram(h) => h.clone(),
        other => panic!("{label} is not a histogram: {other:?}"),
    }
}

/// The upper bound of the lowest non-empty bucket: at least the smallest
/// value recorded.
fn lowest_upper_bound(h: &HistogramSnapshot) -> Option<u64> {
    h.buckets().next().map(|(_, upper, _)| upper)
}

/// Database client stats, one file per runtime worker.
#[derive(Stats)]
struct DbStats {
    /// Time from taking a guard to dropping it.
    query: Timer,
}

static DB_DIR: OnceLock<PathBuf> = OnceLock::new();

mmstats::per_thread!(static DB: DbStats = || {
    DbStats::builder().dir(DB_DIR.get().expect("the test sets DB_DIR first"))
});

#[test]
fn guards_record_once_on_the_thread_that_drops_them() {
    const TASKS: usize = 2000;
    /// Tasks whose guard is started on the test thread, outside the runtime.
    const STARTED_OUTSIDE: usize = 100;
    let dir = tempfile::tempdir().unwrap();
    DB_DIR.set(dir.path().to_owned()).unwrap();
    let test_tid = tid();

    let rt = runtime();
    let tasks: Vec<_> = (0..TASKS)
        .map(|i| {
            let outside = (i < STARTED_OUTSIDE).then(|| DB.start(|s| &s.query));
            let nap = Duration::from_micros(100 + 200 * (i % 5) as u64);
            let task = rt.spawn(async move {
                let start_tid = tid();
                let guard = outside.unwrap_or_else(|| DB.start(|s| &s.query));
                for round in 0..4 {
                    tokio::task::yield_now().await;
                    if round % 2 == 1 {
                        tokio::time::sleep(nap).await;
                    }
                }
                // No `.await` between reading the thread id and the drop.
                let drop_tid = tid();
                drop(guard);
                (start_tid, drop_tid)
            });
            (task, nap)
        })
        .collect();
    let (tids, slept): (Vec<(u32, u32)>, Vec<Duration>) = rt.block_on(async {
        let mut out = Vec::new();
        for (task, nap) in tasks {
            out.push((task.await.unwrap(), 2 * nap));
        }
        out.into_iter().unzip()
    });
    // Joins the workers: their instances are dropped and files closed.
    drop(rt);
    assert!(DB.error().is_none(), "{:?}", DB.error());

    let mut drops: HashMap<u32, u64> = HashMap::new();
    for &(_, drop_tid) in &tids {
        *drops.entry(drop_tid).or_default() += 1;
    }
    let hops = tids.iter().filter(|(a, b)| a != b).count();

    let snaps = read_exited(dir.path());
    let mut per_file: HashMap<u32, u64> = HashMap::new();
    let mut total_ns = 0u64;
    for snap in &snaps {
        let h = histogram(snap, "query");
        total_ns += h.sum();
        let dup = per_file.insert(snap.info.tid, h.count());
        assert!(dup.is_none(), "two files for thread {}", snap.info.tid);
    }
    eprintln!(
        "guards: {TASKS} tasks, {hops} changed threads, samples per thread {:?}",
        per_file.values().collect::<Vec<_>>()
    );

    // Every sample counted once, in the file of the thread that dropped it.
    assert_eq!(per_file.values().sum::<u64>(), TASKS as u64);
    assert_eq!(per_file, drops);
    assert!(
        !per_file.contains_key(&test_tid),
        "a guard started on the test thread recorded there"
    );
    assert!(per_file.len() <= WORKERS, "{per_file:?}");
    // Every guard lived at least as long as its task slept.
    let slept_ns: u128 = slept.iter().map(Duration::as_nanos).sum();
    assert!(
        u128::from(total_ns) >= slept_ns,
        "timed {total_ns} ns in all, slept {slept_ns}"
    );
}

/// Request stats for instrumented futures.
#[derive(Stats)]
struct ReqStats {
    /// First poll to completion.
    wall: Timer,
    /// Time inside `poll`.
    busy: Timer,
}

static REQ_DIR: OnceLock<PathBuf> = OnceLock::new();

mmstats::per_thread!(static REQ: ReqStats = || {
    ReqStats::builder().dir(REQ_DIR.get().expect("the test sets REQ_DIR first"))
});

/// Keeps the thread busy for `d`.
fn spin(d: Duration) {
    let start = Instant::now();
    while start.elapsed() < d {
        std::hint::spin_loop();
    }
}

#[test]
fn instrumented_futures_record_wall_and_busy_time_once() {
    const FUTURES: usize = 64;
    const NAPS: u32 = 4;
    const NAP: Duration = Duration::from_millis(5);
    const SPIN: Duration = Duration::from_micros(50);
    let dir = tempfile::tempdir().unwrap();
    REQ_DIR.set(dir.path().to_owned()).unwrap();

    let rt = runtime();
    let tasks: Vec<_> = (0..FUTURES)
        .map(|i| {
            let work = async move {
                for _ in 0..NAPS {
                    spin(SPIN);
                    tokio::time::sleep(NAP).await;
                }
                spin(SPIN);
                i
            };
            rt.spawn(REQ.instrument(work, |s| &s.wall, |s| &s.busy))
        })
        .collect();
    let outputs: Vec<usize> = rt.block_on(async {
        let mut out = Vec::new();
        for task in tasks {
            out.push(task.await.unwrap());
        }
        out
    });
    drop(rt);
    assert!(REQ.error().is_none(), "{:?}", REQ.error());
    assert_eq!(outputs, (0..FUTURES).collect::<Vec<_>>());

    let (mut walls, mut busies) = (0u64, 0u64);
    let (mut wall_ns, mut busy_ns) = (0u64, 0u64);
    for snap in read_exited(dir.path()) {
        let (wall, busy) = (histogram(&snap, "wall"), histogram(&snap, "busy"));
        // Both are recorded together, by the thread that completes a future.
        assert_eq!(wall.count(), busy.count(), "{:?}", snap.info.path);
        assert!(wall.sum() >= busy.sum(), "{:?}", snap.info.path);
        walls += wall.count();
        busies += busy.count();
        wall_ns += wall.sum();
        busy_ns += busy.sum();
        let least = u64::try_from((NAP * NAPS).as_nanos()).unwrap();
        if let Some(upper) = lowest_upper_bound(&wall) {
            assert!(upper >= least, "a future took under {least} ns: {upper}");
        }
        let least = u64::try_from((SPIN * (NAPS + 1)).as_nanos()).unwrap();
        if let Some(upper) = lowest_upper_bound(&busy) {
            assert!(
                upper >= least,
                "a future was busy under {least} ns: {upper}"
            );
        }
    }
    eprintln!("instrument: wall {wall_ns} ns, busy {busy_ns} ns in all");
    assert_eq!((walls, busies), (FUTURES as u64, FUTURES as u64));
    assert!(wall_ns >= busy_ns);
    assert!(u128::from(wall_ns) >= (NAP * NAPS).as_nanos() * FUTURES as u128);
}
