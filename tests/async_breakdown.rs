//! `examples/async_breakdown.rs` end to end: the real server and load
//! generator run for a few seconds, writing their stats file into a
//! temporary `MMSTATS_DIR`, and the file, read back with `mmstats-read`,
//! must tell the waiting endpoint from the working one and show that the
//! working one blocks the waiting one.
//!
//! Only relations between the two endpoints' measures are asserted, with
//! wide margins, plus the few that the example's design forces (a 20 ms
//! burn without a yield is one slow poll).

use std::path::Path;
use std::process::Command;

mod common;

use common::build_example;
use mmstats::HistogramSnapshot;
use mmstats_read::{Snapshot, Value};

/// How long the example runs.
const SECONDS: &str = "4";
/// `/burn`'s spin, as the example sets it.
const BURN_NS: u64 = 20_000_000;

#[test]
fn the_waiting_endpoint_waits_and_the_burning_one_blocks_it() {
    let exe = build_example("async_breakdown");
    let dir = tempfile::tempdir().expect("create temporary directory");
    let out = Command::new(&exe)
        .args(["--seconds", SECONDS])
        .env("MMSTATS_DIR", dir.path())
        .output()
        .expect("run async_breakdown");
    assert!(
        out.status.success(),
        "async_breakdown failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let snap = read_only_file(dir.path());
    let up = Endpoint::read(&snap, "upstream");
    let burn = Endpoint::read(&snap, "burn");
    eprintln!("upstream: {up:#?}\nburn: {burn:#?}");

    // Both were served, many times.
    assert!(up.requests >= 20, "{} /upstream requests", up.requests);
    assert!(burn.requests >= 10, "{} /burn requests", burn.requests);

    // /upstream waits: its external time dwarfs its time in polls, and
    // burn's, which awaits nothing slow.
    let up_external = p(&up.external, 0.5);
    assert!(
        up_external > 10 * p(&up.busy, 0.5),
        "upstream external p50 {up_external} ns vs busy p50 {} ns",
        p(&up.busy, 0.5)
    );
    assert!(up_external > 10 * p(&burn.external, 0.5).max(1));

    // /burn works: each request is a slow poll, its CPU time is most of
    // its busy time, and far more than /upstream's.
    assert!(
        burn.slow_polls * 2 >= burn.requests,
        "{} slow polls for {} /burn requests",
        burn.slow_polls,
        burn.requests
    );
    // /upstream's polls are short: a slow one is a preemption of the
    // machine, not its work, so its share of slow polls is well under
    // /burn's (a rate compared with a rate, not with a fixed fraction: a
    // loaded machine raises both).
    assert!(
        up.slow_polls * burn.requests * 2 < burn.slow_polls * up.requests,
        "{} slow polls for {} /upstream requests, {} for {} /burn requests",
        up.slow_polls,
        up.requests,
        burn.slow_polls,
        burn.requests
    );
    assert_eq!(burn.slow_poll_time.count(), burn.slow_polls);
    assert!(p(&burn.cpu, 0.5) > 10 * p(&up.cpu, 0.5));

    // /burn blocks /upstream: a woken /upstream handler waits for the loop
    // as long as a burn has left to run, up to its 20 ms. Burns hold the
    // loop about half the time, so about a third of the wakes land in one
    // with more than 5 ms left, and the p99 is at least a quarter of a
    // burn. /burn itself is never kept waiting that long.
    let up_sched = p(&up.scheduled, 0.99);
    assert!(
        up_sched >= BURN_NS / 4,
        "upstream scheduled p99 {up_sched} ns < a quarter of the {BURN_NS} ns burn"
    );
    assert!(up_sched > 4 * p(&burn.scheduled, 0.99).max(1));

    // The request guard: /upstream responds before its audit log is
    // written, so its response time is below its duration.
    assert_eq!(up.response.count(), up.duration.count());
    assert!(
        up.response.sum() < up.duration.sum(),
        "upstream response sum {} >= duration sum {}",
        up.response.sum(),
        up.duration.sum()
    );
}

/// The measures of one endpoint.
#[derive(Debug)]
struct Endpoint {
    requests: u64,
    response: HistogramSnapshot,
    duration: HistogramSnapshot,
    busy: HistogramSnapshot,
    external: HistogramSnapshot,
    scheduled: HistogramSnapshot,
    slow_polls: u64,
    slow_poll_time: HistogramSnapshot,
    cpu: HistogramSnapshot,
}

impl Endpoint {
    fn read(snap: &Snapshot, name: &str) -> Endpoint {
        let h = |m: &str| histogram(snap, &format!("{name}.{m}"));
        let c = |m: &str| counter(snap, &format!("{name}.{m}"));
        Endpoint {
            requests: c("requests"),
            response: h("response"),
            duration: h("duration"),
            busy: h("busy"),
            external: h("external"),
            scheduled: h("scheduled"),
            slow_polls: c("slow_polls"),
            slow_poll_time: h("slow_poll_time"),
            cpu: h("cpu"),
        }
    }
}

/// The quantile `q` of `h`, in nanoseconds (0 when empty).
fn p(h: &HistogramSnapshot, q: f64) -> u64 {
    h.quantile(q).unwrap_or(0)
}

fn histogram(snap: &Snapshot, label: &str) -> HistogramSnapshot {
    match &snap
        .field(label)
        .unwrap_or_else(|| panic!("no field {label}"))
        .value
    {
        Value::Histogram(h) => h.clone(),
        other => panic!("{label} is not a histogram: {other:?}"),
    }
}

fn counter(snap: &Snapshot, label: &str) -> u64 {
    match &snap
        .field(label)
        .unwrap_or_else(|| panic!("no field {label}"))
        .value
    {
        Value::Counter(n) => *n,
        other => panic!("{label} is not a counter: {other:?}"),
    }
}

/// The one stats file the example wrote (its server runs on one thread).
fn read_only_file(dir: &Path) -> Snapshot {
    mmstats::install_sigbus_guard().expect("install the SIGBUS guard");
    let (files, problems) = mmstats_read::discover(&[dir]);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(files.len(), 1, "expected one stats file: {files:?}");
    mmstats_read::read_file(&files[0]).expect("read the stats file")
}
