//! `/check/LABEL` against real writer processes: the stock `check_http`
//! plugin's exit codes, every range form at its edges, rates over a
//! window, and bad input.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{stats_dir, Mmash, Writer};

#[test]
fn writer_child() {
    common::writer_main();
}

/// The stock plugin from Debian's monitoring-plugins-basic. Missing is a
/// failure, not a skip: CI installs it.
fn check_http() -> PathBuf {
    let p = PathBuf::from("/usr/lib/nagios/plugins/check_http");
    assert!(
        p.is_file(),
        "{} is missing: `apt-get install -y monitoring-plugins-basic` (.ci/run does)",
        p.display()
    );
    p
}

/// Runs `check_http` on `m` for `url`: exit code and output.
fn run_check_http(m: &Mmash, url: &str) -> (i32, String) {
    let out = Command::new(check_http())
        .args([
            "-H",
            "127.0.0.1",
            "-p",
            &m.addr.port().to_string(),
            "-t",
            "20",
        ])
        .args(["-u", url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.code().unwrap(), text)
}

/// The value in the perfdata of a plugin line.
fn perf_value(line: &str) -> f64 {
    let perf = line.split(" | ").nth(1).unwrap_or_else(|| panic!("{line}"));
    let value = perf.split('=').nth(1).unwrap().split(';').next().unwrap();
    value
        .trim_end_matches(|c: char| c.is_ascii_alphabetic())
        .parse()
        .unwrap_or_else(|e| panic!("{line}: {e}"))
}

#[test]
fn stock_check_http_exits_0_1_2_at_the_thresholds() {
    let dir = stats_dir();
    let mut w = Writer::start(dir.path());
    w.send("add 10");
    let m = Mmash::on(dir.path(), &[]);
    // The counter's total is 10.
    for (query, code, state) in [
        ("warn=20&crit=30", 0, "OK"),
        ("warn=10&crit=30", 0, "OK"), // 10 is inside 0..10
        ("warn=9.5&crit=30", 1, "WARNING"),
        ("warn=5&crit=10", 1, "WARNING"),
        ("warn=5&crit=9", 2, "CRITICAL"),
        ("warn=5&crit=@10:20", 2, "CRITICAL"),
    ] {
        let (got, out) = run_check_http(&m, &format!("/check/web.status.2xx?{query}"));
        assert_eq!(got, code, "{query}: {out}");
        // check_http prints the status line, whose reason phrase is the
        // plugin's status text.
        assert!(
            out.contains(&format!("MMSTATS {state} - web.status.2xx total 10")),
            "{query}: {out}"
        );
    }
    // UNKNOWN is a 4xx, which check_http reports as WARNING: never OK.
    for (url, why) in [
        ("/check/web.nope?crit=1", "no stats file has the label"),
        ("/check/web.status.2xx?crit=abc", "bad range"),
    ] {
        let (got, out) = run_check_http(&m, url);
        assert_eq!(got, 1, "{url}: {out}");
        assert!(
            out.contains("MMSTATS UNKNOWN - ") && out.contains(why),
            "{url}: {out}"
        );
    }
    // The body is the plugin line with perfdata.
    let r = m.get("/check/web.status.2xx?warn=5&crit=9");
    assert_eq!(r.status, 503);
    assert_eq!(
        r.body,
        "MMSTATS CRITICAL - web.status.2xx total 10 (crit 9) | 'web.status.2xx'=10c;5;9;0;\n"
    );
    assert_eq!(m.get("/check/web.status.2xx?warn=5").status, 409);
    assert_eq!(m.get("/check/web.status.2xx?warn=50").status, 200);
}

#[test]
fn every_range_form_at_its_edges() {
    let dir = stats_dir();
    let mut w = Writer::start(dir.path());
    w.send("gauge 10");
    let m = Mmash::on(dir.path(), &[]);
    // (range, whether 10 alerts)
    for (range, alerts) in [
        ("10", false),
        ("9.99", true),
        ("10:", false),
        ("10.01:", true),
        ("~:10", false),
        ("~:9", true),
        ("10:20", false),
        ("0:10", false),
        ("10.5:20", true),
        ("-5:9", true),
        ("@10:20", true),
        ("@0:10", true),
        ("@10.01:20", false),
        ("@0:9.99", false),
        ("@~:10", true),
        ("@10", true),
        ("@11:", false),
    ] {
        let enc = range.replace('@', "%40").replace('~', "%7E");
        let crit = m.get(&format!("/check/web.in_flight?crit={enc}"));
        assert_eq!(
            crit.status,
            if alerts { 503 } else { 200 },
            "crit={range}: {}",
            crit.body
        );
        let warn = m.get(&format!("/check/web.in_flight?warn={enc}"));
        assert_eq!(
            warn.status,
            if alerts { 409 } else { 200 },
            "warn={range}: {}",
            warn.body
        );
        // The range is echoed in perfdata (in its shortest form).
        let shown = range.parse::<check_mmash::Range>().unwrap().to_string();
        assert!(
            crit.body.contains(&format!("=10;;{shown};;")),
            "{}",
            crit.body
        );
    }
}

#[test]
fn rate_over_a_window_is_close_and_never_negative_when_writers_die() {
    let dir = stats_dir();
    let mut a = Writer::start(dir.path());
    let mut b = Writer::start(dir.path());
    a.send("add 5000");
    let m = Mmash::on(dir.path(), &[]);
    // The first check asks for a window, so mmash starts keeping
    // readings; with no earlier reading, and files far younger than a
    // quarter of the hour asked, there is nothing to judge yet.
    let first = m.get("/check/web.status.2xx?rate=1h");
    assert_eq!(first.status, 422, "{}", first.body);
    assert!(
        first
            .body
            .contains("no earlier reading covers a quarter of the 1h asked"),
        "{}",
        first.body
    );
    // 1000 per second for 12 s, paced by the writer on its own clock.
    b.send("pace 10 10 12000");
    let r = m.get("/check/web.status.2xx?rate=10s&warn=900:1100");
    eprintln!("paced at 1000/s: {}", r.body.trim_end());
    let rate = perf_value(&r.body);
    // Tolerance: 10% (scheduling on a busy machine; the rate is over the
    // readings' own times, so it is not off by the sampling spacing).
    assert!((900.0..=1100.0).contains(&rate), "{}", r.body);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("over the last 1"), "{}", r.body);
    // A writer dies and its file goes: its 5000 stay counted. A total
    // taken from the files alone would drop by 5000, so the rate over the
    // next window would come out at half (or below zero, clamped to 0).
    let path = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains(&format!(".{}.", a.pid)))
        .unwrap();
    a.kill();
    std::fs::remove_file(&path).unwrap();
    b.send("pace 10 10 3000");
    let r = m.get("/check/web.status.2xx?rate=10s&warn=900:1100");
    eprintln!("after a writer died: {}", r.body.trim_end());
    let rate = perf_value(&r.body);
    assert!((900.0..=1100.0).contains(&rate), "{}", r.body);
    assert_eq!(r.status, 200, "{}", r.body);
    // And when the last writer dies too, the rate falls towards 0, never
    // below.
    b.kill();
    for _ in 0..3 {
        let r = m.get("/check/web.status.2xx?rate=10s&crit=0:");
        let rate = perf_value(&r.body);
        assert!((0.0..=1100.0).contains(&rate), "{}", r.body);
        assert_eq!(r.status, 200, "{}", r.body);
    }
}

#[test]
fn timer_quantiles_and_stats_over_a_window() {
    let dir = stats_dir();
    let mut w = Writer::start(dir.path());
    for _ in 0..99 {
        w.send("time 1000000"); // 1 ms
    }
    w.send("time 2000000000"); // 2 s
    let m = Mmash::on(dir.path(), &[]);
    // Files younger than a quarter of the 5m asked: nothing to judge.
    let r = m.get("/check/web.request?quantile=0.5&window=5m&warn=0.0009:0.0011");
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("ask again in"), "{}", r.body);
    // Whole life, no window: judged at once.
    let r = m.get("/check/web.request?quantile=0.5&warn=0.0009:0.0011");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("'web.request_p50'="), "{}", r.body);
    assert!(r.body.contains("s;0.0009:0.0011;;0;"), "{}", r.body);
    // Whole life without a window: 100 values, the largest 2 s.
    let r = m.get("/check/web.request?stat=count");
    assert_eq!(perf_value(&r.body), 100.0, "{}", r.body);
    let r = m.get("/check/web.request?stat=max&crit=1");
    assert_eq!(r.status, 503, "{}", r.body);
    // From the first windowed check on, readings are kept: once they
    // cover a quarter of the window, a window sees only what came after
    // its start.
    w.send("time 3000000"); // 3 ms
    std::thread::sleep(Duration::from_millis(1100));
    let r = m.get("/check/web.request?stat=count&window=4s");
    assert_eq!(perf_value(&r.body), 1.0, "{}", r.body);
    let r = m.get("/check/web.request?quantile=0.99&window=4s&format=json");
    let j: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let p99 = j["measure"]["value"].as_f64().unwrap();
    assert!((p99 - 0.003).abs() < 0.003 * 0.02, "{}", r.body);
    assert_eq!(j["measure"]["uom"], "s");
}

/// The span a check line says its value covers: `4ms` in `rate 0/s over
/// 4ms, all that...`.
fn span(line: &str) -> &str {
    let after = line
        .split(" over ")
        .nth(1)
        .unwrap_or_else(|| panic!("no span in {line}"));
    after
        .trim_start_matches("the last ")
        .split([',', ' '])
        .next()
        .unwrap()
}

/// Issue 17 §6: two checks of a label close together, while mmash had no
/// earlier reading of it, measured the second over the milliseconds
/// between them: a counter failing at 46/s read `0/s over 4ms`, OK
/// against crit=5.
#[test]
fn two_checks_in_the_same_second_of_a_fresh_label_never_read_ok() {
    let dir = stats_dir();
    let mut w = Writer::start(dir.path());
    // A low-rate counter failing: 1 every 25 ms, 40/s, for longer than
    // the test runs (the writer is killed at the end).
    w.begin("pace 1 25 60000");
    let m = Mmash::on(dir.path(), &[]);
    // Wait (not a timed assertion) until the files are a quarter of the
    // 4s window old, so the first answer is over their age.
    std::thread::sleep(Duration::from_millis(1100));
    let url = "/check/web.status.2xx?rate=4s&crit=5";
    let first = m.get(url);
    // Right after, through the stock plugin as Nagios runs it.
    let (code, second) = run_check_http(&m, url);
    let third = m.get(url);
    eprintln!("{}{second}{}", first.body, third.body);
    assert_eq!(first.status, 503, "{}", first.body);
    assert!(
        first.body.contains("age of the oldest file"),
        "{}",
        first.body
    );
    assert_eq!(code, 2, "{second}");
    assert_eq!(third.status, 503, "{}", third.body);
    for line in [&first.body, &second, &third.body] {
        assert!(!span(line).ends_with("ms"), "{line}");
    }
    // A window whose quarter neither the readings nor the files cover
    // (they are seconds old, an hour asked) is UNKNOWN, never OK.
    let r = m.get("/check/web.status.2xx?rate=1h&crit=5");
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(
        r.body.contains("nothing is judged over less than 15m"),
        "{}",
        r.body
    );
}

#[test]
fn bad_input_is_unknown_with_a_message() {
    let dir = stats_dir();
    let mut w = Writer::start(dir.path());
    w.send("add 1");
    w.send("time 1000");
    let mut m = Mmash::on(dir.path(), &[]);
    for (url, status, needle) in [
        ("/check/web.status.2xx?crit=abc", 400, "bad range \"abc\""),
        ("/check/web.status.2xx?crit=20:10", 400, "start is greater"),
        ("/check/web.status.2xx?warn=", 400, "bad range"),
        (
            "/check/web.status.2xx?rate=-10s",
            400,
            "must be more than 0",
        ),
        ("/check/web.status.2xx?rate=10parsecs", 400, "unknown unit"),
        ("/check/web.request?quantile=1.5", 400, "between 0 and 1"),
        ("/check/web.request?quantile=p99", 400, "not a number"),
        ("/check/web.request?stat=median", 400, "unknown stat"),
        ("/check/web.request?window=5m", 400, "window= goes with"),
        (
            "/check/web.status.2xx?aggr=median",
            400,
            "unknown aggregator",
        ),
        ("/check/web.status.2xx?bogus=1", 400, "unknown parameter"),
        (
            "/check/web.status.2xx?format=xml",
            400,
            "expected text or json",
        ),
        ("/check/web.status.2xx?quantile=0.9", 400, "need a timer"),
        ("/check/web.in_flight?rate=10s", 400, "needs a counter"),
        ("/check/web.state", 400, "is text"),
        ("/check/web.request", 400, "give quantile"),
        (
            "/check/web.nope",
            404,
            "no stats file has the label \"web.nope\"",
        ),
    ] {
        let r = m.get(url);
        assert_eq!(r.status, status, "{url}: {}", r.body);
        assert!(
            r.body.starts_with("MMSTATS UNKNOWN - "),
            "{url}: {}",
            r.body
        );
        assert!(r.body.contains(needle), "{url}: {}", r.body);
        assert!(!r.body.contains('|'), "no perfdata for UNKNOWN: {}", r.body);
    }
    // A timer window with nothing recorded in it: UNKNOWN, not a p99 of 0.
    // (Readings must cover a quarter of the window first: wait for it.)
    m.get("/check/web.request?quantile=0.99&window=4s");
    std::thread::sleep(Duration::from_millis(1100));
    let r = m.get("/check/web.request?quantile=0.99&window=4s");
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("no values recorded"), "{}", r.body);
    // count of a label no live writer has is 0, so `crit=1:` fires.
    let r = m.get("/check/jobs.alive?aggr=count&crit=1:");
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(m.running());
}

#[test]
fn check_http_with_the_token_header() {
    let dir = stats_dir();
    let mut w = Writer::start(dir.path());
    w.send("add 3");
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let m = Mmash::on(dir.path(), &["--token-file", token.to_str().unwrap()]);
    let port = m.addr.port().to_string();
    let run = |extra: &[&str]| {
        let out = Command::new(check_http())
            .args(["-H", "127.0.0.1", "-p", &port, "-t", "20"])
            .args(["-u", "/check/web.status.2xx?crit=2"])
            .args(extra)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.code().unwrap(), text)
    };
    // Without the header: 401, which check_http reports as WARNING.
    let (code, out) = run(&[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("401"), "{out}");
    let (code, out) = run(&["-k", "Authorization: Bearer s3cret"]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("MMSTATS CRITICAL - web.status.2xx total 3 (crit 2)"),
        "{out}"
    );
}

#[test]
fn dead_writers_gauges_do_not_count_and_no_live_worker_is_critical() {
    let dir = stats_dir();
    let mut a = Writer::start(dir.path());
    let mut b = Writer::start(dir.path());
    a.send("gauge 10");
    b.send("gauge 5");
    let m = Mmash::on(dir.path(), &[]);
    let sum = m.get("/check/web.in_flight?crit=12");
    assert_eq!(sum.status, 503, "{}", sum.body);
    assert_eq!(perf_value(&sum.body), 15.0, "{}", sum.body);
    let alive = "/check/web.in_flight?aggr=count&crit=1:";
    assert_eq!(perf_value(&m.get(alive).body), 2.0);
    // One killed (its file stays, last gauge 10), one ended cleanly: the
    // dead writers' last gauges are not summed.
    a.kill();
    let r = m.get("/check/web.in_flight?crit=12");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(perf_value(&r.body), 5.0, "{}", r.body);
    assert_eq!(perf_value(&m.get(alive).body), 1.0);
    b.quit();
    // No live writer: the sum is UNKNOWN (never an OK 0), the count 0 and
    // CRITICAL.
    let r = m.get("/check/web.in_flight?crit=12");
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("no live writer has it"), "{}", r.body);
    let r = m.get(alive);
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(perf_value(&r.body), 0.0, "{}", r.body);
}

/// A check scoped to an owner counts only that owner's files: another
/// user's live writer with the same label cannot keep a "workers alive"
/// check OK while the owner's own workers are down.
#[test]
fn a_scoped_check_is_satisfied_only_by_its_owners_files() {
    let dir = stats_dir();
    // Root's writer; the check below is about uid 4243, which has none.
    let mut w = Writer::start(dir.path());
    w.send("add 1");
    let m = Mmash::on(dir.path(), &[]);
    let me = mmstats_read::owners::user_name(mmstats::geteuid());
    for (query, status) in [
        ("aggr=count&crit=1:".to_owned(), 200),
        ("aggr=count&crit=1:&user=4243".to_owned(), 503),
        (format!("aggr=count&crit=1:&user={me}"), 200),
        ("crit=0&user=4243&command=nope".to_owned(), 404),
        (format!("crit=0&user={me}"), 503),
        ("aggr=count&user=no-such-user-here".to_owned(), 400),
    ] {
        let r = m.get(&format!("/check/web.status.2xx?{query}"));
        assert_eq!(r.status, status, "{query}: {}", r.body);
    }
    // The scope is said in the output.
    let r = m.get("/check/web.status.2xx?aggr=count&crit=1:&user=4243");
    assert!(r.body.contains("(user=4243)"), "{}", r.body);
}
