//! mmstats 0.8's pollstats command lines, run through the built binary
//! against stats files this test writes: `-p/--prefix` with
//! comma-separated labels, `-f/--filter`, `-n/--headers`, and `-d` refused.

use std::path::Path;
use std::process::{Command, Output};

use mmstats::{Counter, Stats, Text};
use serde_json::Value as Json;
use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_pollstats");

/// What the original's example application counted.
#[derive(Stats)]
#[stats(model = "web")]
struct WebStats {
    #[stat(label = "web.status.2xx")]
    ok: Counter,
    #[stat(label = "web.status.4xx")]
    client: Counter,
    #[stat(label = "web.status.5xx")]
    server: Counter,
    #[stat(label = "web.other")]
    other: Counter,
}

/// A worker with a role, to filter on.
#[derive(Stats)]
#[stats(model = "worker")]
struct WorkerStats {
    role: Text<16>,
    jobs: Counter,
}

/// A batch process: no role, but `batch.` labels.
#[derive(Stats)]
#[stats(model = "batch")]
struct BatchStats {
    #[stat(label = "batch.rows")]
    rows: Counter,
    jobs: Counter,
}

fn pollstats(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg(dir)
        .args(args)
        .env_remove("MMSTATS_DIR")
        .output()
        .unwrap()
}

/// The one JSON line of `--json -c 1`, its series.
fn series(out: &Output) -> serde_json::Map<String, Json> {
    assert!(
        out.status.success(),
        "pollstats failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    let row: Json = serde_json::from_str(lines[0]).unwrap();
    row["series"].as_object().unwrap().clone()
}

#[test]
fn prefix_is_joined_to_each_comma_separated_label() {
    let dir = TempDir::new().unwrap();
    let web = WebStats::builder().dir(dir.path()).open().unwrap();
    web.ok.add(3);
    web.client.add(1);
    web.server.add(2);
    web.other.add(9);

    let got = series(&pollstats(
        dir.path(),
        &[
            "-p",
            "web.status.",
            "2xx,5xx",
            "--json",
            "--delta",
            "-c",
            "1",
        ],
    ));
    let keys: Vec<&str> = got.keys().map(String::as_str).collect();
    assert_eq!(keys, ["web.status.2xx", "web.status.5xx"]);
    assert_eq!(got["web.status.2xx"], 3);
    assert_eq!(got["web.status.5xx"], 2);

    // The long forms, two label arguments, one of them a list.
    let got = series(&pollstats(
        dir.path(),
        &[
            "--prefix=web.",
            "status.4xx",
            "other,status.2xx",
            "--json",
            "--delta",
            "--count=1",
        ],
    ));
    let keys: Vec<&str> = got.keys().map(String::as_str).collect();
    assert_eq!(keys, ["web.other", "web.status.2xx", "web.status.4xx"]);

    // A piece of the list that matches nothing is named, prefix joined.
    let out = pollstats(dir.path(), &["-p", "web.status.", "2xx,3xx", "-c", "1"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("\"web.status.3xx\" matches no label"), "{err}");
}

#[test]
fn filters_keep_files_with_the_key_or_the_value() {
    let dir = TempDir::new().unwrap();
    let db = WorkerStats::builder()
        .dir(dir.path())
        .template("db.{pid}.{tid}.mmstats")
        .open()
        .unwrap();
    db.role.set("db");
    db.jobs.add(5);
    let web = WorkerStats::builder()
        .dir(dir.path())
        .template("web.{pid}.{tid}.mmstats")
        .open()
        .unwrap();
    web.role.set("web");
    web.jobs.add(7);
    let batch = BatchStats::builder().dir(dir.path()).open().unwrap();
    batch.rows.add(100);
    batch.jobs.add(11);
    let jobs = |args: &[&str]| {
        let mut all = vec!["jobs", "--json", "--delta", "-c", "1"];
        all.extend_from_slice(args);
        series(&pollstats(dir.path(), &all))["jobs"].clone()
    };

    assert_eq!(jobs(&[]), 23);
    assert_eq!(jobs(&["-f", "role=db"]), 5);
    assert_eq!(jobs(&["--filter", "role=web"]), 7);
    // A key alone: files having a label that starts with it.
    assert_eq!(jobs(&["-f", "role"]), 12);
    assert_eq!(jobs(&["-f", "batch."]), 11);
    // Several: a file passing any one is kept.
    assert_eq!(jobs(&["-f", "role=db", "-f", "batch."]), 16);
    // Numbers compare as numbers.
    assert_eq!(jobs(&["-f", "jobs=7.0"]), 7);

    let out = pollstats(dir.path(), &["jobs", "-f", "role=cache", "-c", "1"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no stats file passes -f/--filter role=cache"),
        "{err}"
    );

    let out = pollstats(dir.path(), &["-f", "=db"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no key"));
}

#[test]
fn headers_repeat_every_n_rows() {
    let dir = TempDir::new().unwrap();
    let web = WebStats::builder().dir(dir.path()).open().unwrap();
    web.ok.add(1);
    let headers = |args: &[&str]| {
        let mut all = vec!["web.status.2xx", "-i", "1ms", "-c", "5"];
        all.extend_from_slice(args);
        let out = pollstats(dir.path(), &all);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let header = text
            .lines()
            .filter(|l| l.trim_start().starts_with("time"))
            .count();
        let rows = text
            .lines()
            .filter(|l| l.contains(':') && !l.contains("first row"))
            .count();
        (header, rows)
    };
    // Not a terminal: one header, unless -n says otherwise.
    assert_eq!(headers(&[]), (1, 5));
    assert_eq!(headers(&["-n", "2"]), (3, 5));
    assert_eq!(headers(&["--headers", "1"]), (5, 5));

    let out = pollstats(dir.path(), &["-n", "0"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn delay_in_seconds_is_refused_pointing_to_interval() {
    let dir = TempDir::new().unwrap();
    for args in [&["-d", "2"][..], &["--delay", "2"], &["-d"]] {
        let out = pollstats(dir.path(), args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("-d/--delay"), "{err}");
        assert!(err.contains("use -i/--interval"), "{err}");
        assert!(out.stdout.is_empty());
    }
    let out = pollstats(dir.path(), &["-d", "3"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("-i 3 "));
}
