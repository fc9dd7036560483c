//! Every endpoint, with exact values from real writer processes; bad
//! requests; the token; promtool on the /metrics page.

mod common;

use std::process::Command;

use common::{promtool_clean, request, stats_dir, Mmash, Writer};
use serde_json::json;

#[test]
fn writer_child() {
    common::writer_main();
}

#[test]
fn every_endpoint_gives_exact_values() {
    let dir = stats_dir();
    let mut a = Writer::start(dir.path());
    let mut b = Writer::start(dir.path());
    a.send("add 5");
    a.send("gauge 2");
    a.send("time 1000");
    a.send("time 2000");
    b.send("add 7");
    b.send("gauge 3");
    b.send("time 1000000");
    let b_pid = b.pid;
    b.quit(); // dead: its counter stays in sums, its gauge leaves the live total
    let m = Mmash::on(dir.path(), &[]);

    let labels = m.json("/stats/");
    assert_eq!(
        labels,
        json!({"stats": ["web.in_flight", "web.request", "web.state", "web.status.2xx"]})
    );
    // One value per file, in path order (file names hold the pid).
    let mut per_file = m.json("/stats/web.status.2xx");
    let list = per_file["web.status.2xx"].as_array_mut().unwrap();
    list.sort_by_key(|v| v.as_u64());
    assert_eq!(list, &vec![json!(5), json!(7)]);
    assert_eq!(
        m.json("/stats/web.status.2xx?aggr=sum"),
        json!({"web.status.2xx": 12})
    );
    assert_eq!(
        m.json("/stats/web.status.2xx?aggr=max"),
        json!({"web.status.2xx": 7})
    );
    assert_eq!(
        m.json("/stats/web.status.2xx?aggr=count"),
        json!({"web.status.2xx": 2})
    );
    assert_eq!(
        m.json("/stats/web.in_flight?aggr=sum"),
        json!({"web.in_flight": 5})
    );
    assert_eq!(
        m.json("/stats/web.in_flight?aggr=avg"),
        json!({"web.in_flight": 2.5})
    );
    // Prefix match by default, whole label with exact=1.
    assert_eq!(
        m.json("/stats/web.status?aggr=sum"),
        json!({"web.status.2xx": 12})
    );
    assert_eq!(m.json("/stats/web.status?exact=1"), json!({}));
    assert_eq!(m.json("/stats/web.?aggr=one").as_object().unwrap().len(), 4);
    // Timers merge their buckets.
    let t = m.json("/stats/web.request?aggr=sum");
    assert_eq!(t["web.request"]["count"], 3);
    assert_eq!(t["web.request"]["sum"], 1_003_000);
    assert_eq!(t["web.request"]["buckets"].as_array().unwrap().len(), 3);

    // Files, and a glob relative to the stats directory.
    let files = m.json("/files/");
    assert_eq!(files["files"].as_array().unwrap().len(), 2);
    let pattern = format!("/files/*.{b_pid}.*");
    let one = m.json(&pattern);
    assert_eq!(one["files"].as_array().unwrap().len(), 1, "{one}");
    assert!(one["files"][0]
        .as_str()
        .unwrap()
        .contains(&b_pid.to_string()));
    let only_b = m.json(&format!("/stats/web.status.2xx?glob=*.{b_pid}.*"));
    assert_eq!(only_b, json!({"web.status.2xx": [7]}));

    // The snapshot is the slurpstats --json contract.
    let snap = m.json("/api/v1/snapshot");
    let snap = snap.as_array().unwrap();
    assert_eq!(snap.len(), 2);
    let dead = snap.iter().find(|f| f["pid"] == b_pid).unwrap();
    assert_eq!(dead["alive"], false);
    assert_eq!(dead["state"], "exited");
    assert_eq!(dead["command"], "webw");
    assert_eq!(dead["stats"]["web.status.2xx"], 7);
    assert_eq!(dead["fields"]["web.request"]["kind"], "timer");
    let h = m.json("/healthz");
    assert_eq!(h["ok"], true);
    assert_eq!(h["files"], json!({"alive": 1, "dead": 1, "unreadable": 0}));

    // /metrics: cumulative counter over both files, live gauge only,
    // the timer in seconds with an exact sum.
    let r = m.get("/metrics");
    assert_eq!(r.status, 200);
    assert!(
        r.headers.contains("text/plain; version=0.0.4"),
        "{}",
        r.headers
    );
    let page = r.body;
    let grp = format!("user=\"{}\",command=\"webw\",model=\"web\"", me());
    for line in [
        "# HELP web_status_2xx_total Responses with a 2xx status.".to_owned(),
        "# TYPE web_status_2xx_total counter".to_owned(),
        format!("web_status_2xx_total{{{grp}}} 12"),
        "# TYPE web_in_flight gauge".to_owned(),
        format!("web_in_flight{{{grp}}} 2"),
        "# TYPE web_request_seconds histogram".to_owned(),
        format!("web_request_seconds_bucket{{{grp},le=\"0.000001023\"}} 1"),
        format!("web_request_seconds_bucket{{{grp},le=\"0.000002047\"}} 2"),
        format!("web_request_seconds_bucket{{{grp},le=\"0.000524287\"}} 2"),
        format!("web_request_seconds_bucket{{{grp},le=\"0.001048575\"}} 3"),
        format!("web_request_seconds_bucket{{{grp},le=\"+Inf\"}} 3"),
        format!("web_request_seconds_sum{{{grp}}} 0.001003"),
        format!("web_request_seconds_count{{{grp}}} 3"),
    ] {
        assert!(
            page.lines().any(|l| l == line),
            "missing {line:?} in\n{page}"
        );
    }
    assert!(!page.contains("web_state"), "text is not exported");
    let buckets = page.matches("web_request_seconds_bucket{").count();
    assert!((20..=31).contains(&buckets), "{buckets} le boundaries");
    promtool_clean(&page);

    // More counts after a sample keep adding up.
    a.send("add 10");
    let page = m.get("/metrics").body;
    assert!(
        page.contains(&format!("web_status_2xx_total{{{grp}}} 22")),
        "{page}"
    );

    // The dashboard page itself, and its data.
    let d = m.get("/");
    assert_eq!(d.status, 200);
    assert!(d.body.contains("<svg") || d.body.contains("sparkline"));
    let s = m.json("/api/v1/summary");
    assert_eq!(s["labels"]["web.status.2xx"]["value"], 22);
    assert_eq!(s["labels"]["web.state"]["value"], "running");
    assert_eq!(s["files"].as_array().unwrap().len(), 2);
}

#[test]
fn grouping_namespace_and_name_collisions() {
    let dir = stats_dir();
    let mut a = Writer::start_as(dir.path(), "api");
    let mut b = Writer::start_as(dir.path(), "worker");
    a.send("add 1");
    b.send("add 2");
    let m = Mmash::on(dir.path(), &["--namespace", "acme", "--by", "command"]);
    let page = m.get("/metrics").body;
    assert!(
        page.contains(&format!(
            "acme_web_status_2xx_total{{user=\"{}\",command=\"api\"}} 1",
            me()
        )),
        "{page}"
    );
    assert!(
        page.contains(&format!(
            "acme_web_status_2xx_total{{user=\"{}\",command=\"worker\"}} 2",
            me()
        )),
        "{page}"
    );
    promtool_clean(&page);
    let m = Mmash::on(dir.path(), &["--by", "label"]);
    let page = m.get("/metrics").body;
    assert!(
        page.lines()
            .any(|l| l == format!("web_status_2xx_total{{user=\"{}\"}} 3", me())),
        "{page}"
    );
    drop(m);

    // Two labels that map to one name: one family, both exported, told
    // apart by their original label; nothing dropped, nothing to log.
    let schema_dir = stats_dir();
    let mut schema = mmstats::Schema::new("clash");
    schema.push(mmstats::FieldDef::counter("req.ok"));
    schema.push(mmstats::FieldDef::counter("req_ok"));
    let opts = mmstats::Options::new().dir(schema_dir.path());
    let file = mmstats::StatsFile::create(&schema, &opts).unwrap();
    let m = Mmash::on(schema_dir.path(), &[]);
    for _ in 0..3 {
        let page = m.get("/metrics").body;
        assert_eq!(
            page.matches("# TYPE req_ok_total counter").count(),
            1,
            "{page}"
        );
        for label in ["req.ok", "req_ok"] {
            assert_eq!(
                page.matches(&format!("mmstats_label=\"{label}\"}} 0"))
                    .count(),
                1,
                "{label} in {page}"
            );
        }
        promtool_clean(&page);
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    let log = m.log.lock().unwrap().clone();
    assert!(!log.contains("both map to the metric name"), "{log}");
    drop(file);
}

#[test]
fn bad_requests_get_the_right_4xx_and_the_daemon_stays_up() {
    let dir = stats_dir();
    let mut w = Writer::start(dir.path());
    w.send("add 1");
    // A link planted in the stats directory, pointing out of it.
    std::os::unix::fs::symlink("/etc/passwd", dir.path().join("evil.mmstats")).unwrap();
    let mut m = Mmash::on(dir.path(), &[]);
    let huge = "x".repeat(10_000);
    let cases: Vec<(String, u16, &str)> = vec![
        ("GET /files/../../etc/passwd".into(), 400, "\"..\""),
        ("GET /files/%2e%2e/%2e%2e/etc/passwd".into(), 400, "\"..\""),
        ("GET /stats/web?glob=../../etc/*".into(), 400, "\"..\""),
        ("GET /stats/web?glob=/etc/*".into(), 400, "absolute"),
        ("GET /stats/web?aggr=median".into(), 400, "aggr"),
        ("GET /stats/web?exact=maybe".into(), 400, "exact"),
        ("GET /stats/web?colour=blue".into(), 400, "colour"),
        ("GET /stats/web?exact=1&exact=0".into(), 400, "twice"),
        ("GET /stats/web?glob=[".into(), 400, "glob"),
        (format!("GET /stats/web?glob={huge}"), 400, "limit"),
        (
            "GET /metrics?%ff%fe=%00".into(),
            400,
            "unknown query parameter",
        ),
        ("GET /nope".into(), 404, "no such endpoint"),
        ("GET /api/v2/snapshot".into(), 404, "no such endpoint"),
        ("POST /metrics".into(), 405, "only GET"),
        ("DELETE /stats/web".into(), 405, "only GET"),
    ];
    for (line, status, says) in cases {
        let (method, path) = line.split_once(' ').unwrap();
        let r = request(
            m.addr,
            &format!("{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
        );
        assert_eq!(r.status, status, "{line}: {}", r.body);
        if status != 405 || !r.body.is_empty() {
            let body: serde_json::Value = serde_json::from_str(&r.body)
                .unwrap_or_else(|e| panic!("{line}: not JSON ({e}): {}", r.body));
            let err = body["error"].as_str().unwrap();
            assert!(err.contains(says), "{line}: {err}");
        }
    }
    // A head too large for the server, and plain garbage.
    let r = request(
        m.addr,
        &format!(
            "GET /stats/{} HTTP/1.1\r\nHost: t\r\n\r\n",
            "y".repeat(200_000)
        ),
    );
    assert!((400..500).contains(&r.status), "{}", r.status);
    let r = request(m.addr, "\x16\x03\x01garbage\r\n\r\n");
    assert_eq!(r.status, 400);
    assert!(m.running());
    assert_eq!(
        m.json("/stats/web.status.2xx?aggr=sum"),
        json!({"web.status.2xx": 1})
    );
    // One log line per request error.
    let log = m.log.lock().unwrap().clone();
    assert!(log.contains("GET /nope -> 404"), "{log}");
}

#[test]
fn a_token_is_required_and_compared_whole() {
    let dir = stats_dir();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret-token\n").unwrap();
    let m = Mmash::on(dir.path(), &["--token-file", token.to_str().unwrap()]);
    let get = |auth: Option<&str>| {
        let h = auth
            .map(|a| format!("Authorization: {a}\r\n"))
            .unwrap_or_default();
        request(
            m.addr,
            &format!("GET /healthz HTTP/1.1\r\nHost: t\r\n{h}Connection: close\r\n\r\n"),
        )
    };
    for bad in [
        None,
        Some("Bearer wrong"),
        Some("Bearer s3cret-toke"),
        Some("Bearer s3cret-token2"),
        Some("s3cret-token"),
    ] {
        let r = get(bad);
        assert_eq!(r.status, 401, "{bad:?}");
        assert!(
            r.headers.contains("www-authenticate: Bearer"),
            "{}",
            r.headers
        );
    }
    assert_eq!(get(Some("Bearer s3cret-token")).status, 200);

    // The dashboard's page, a fixed file with no data, is the one thing
    // served without the token (a browser cannot send one for a page);
    // everything its scripts fetch still needs it.
    let plain = |path: &str| {
        request(
            m.addr,
            &format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
        )
    };
    let page = plain("/");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("<title>mmash</title>"));
    for path in [
        "/?x=1",
        "/api/v1/summary",
        "/api/v1/snapshot",
        "/stats/",
        "/metrics",
    ] {
        assert_eq!(plain(path).status, 401, "{path}");
    }
}

#[test]
fn binding_beyond_loopback_without_a_token_warns() {
    let m = Mmash::start(&["--listen", "0.0.0.0:0", "/nonexistent-mmash-test"]);
    let log = m.log.lock().unwrap().clone();
    assert!(log.contains("without --token-file"), "{log}");
    drop(m);
    let out = Command::new(common::BIN)
        .args(["--token-file", "/nonexistent-token"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent-token"));
}

/// The user name every series of this test's files carries.
fn me() -> String {
    mmstats_read::owners::user_name(mmstats::geteuid())
}

/// Thousands of junk files of another user give one summary line per
/// owner, not a line of that user's choosing per file.
#[test]
fn other_users_junk_is_summarised_not_listed() {
    use std::os::unix::fs::chown;
    assert_eq!(mmstats::geteuid(), 0, "chown needs root (CI runs as root)");
    let dir = stats_dir();
    for i in 0..5000 {
        let p = dir.path().join(format!("junk-\u{1b}[31mred-{i}.mmstats"));
        std::fs::write(&p, b"not a stats file").unwrap();
        chown(&p, Some(4244), None).unwrap();
    }
    let m = Mmash::on(dir.path(), &[]);
    assert_eq!(m.get("/metrics").status, 200);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let log = m.log.lock().unwrap().clone();
    assert!(
        log.lines().count() < 20,
        "{} lines:\n{}",
        log.lines().count(),
        &log[..log.len().min(2000)]
    );
    assert!(!log.contains("junk-"), "{}", &log[..log.len().min(2000)]);
    assert!(
        log.contains("5000 problems with files of user 4244"),
        "{log}"
    );
}

/// A series whose files are all gone is dropped after the series' time to
/// live (15 minutes; here 1 s), with what mmash kept for it.
#[test]
fn series_of_gone_files_are_dropped_after_their_time() {
    let dir = stats_dir();
    let mut schema = mmstats::Schema::new("gone");
    schema.push(mmstats::FieldDef::counter("gone.soon").help("Soon gone."));
    let opts = mmstats::Options::new().dir(dir.path());
    let file = mmstats::StatsFile::create(&schema, &opts).unwrap();
    let path = file.path().unwrap().to_owned();
    let m = Mmash::on(dir.path(), &["--test-series-ttl", "1", "--rescan", "0.1"]);
    assert!(m.get("/metrics").body.contains("gone_soon_total"));
    drop(file);
    std::fs::remove_file(&path).unwrap();
    // Still there right after: a file may come back.
    assert!(m.get("/metrics").body.contains("gone_soon_total"));
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let _ = m.get("/metrics");
    let page = m.get("/metrics").body;
    assert!(!page.contains("gone_soon"), "{page}");
}
