//! `GET /api/v1/history`: the dashboard's ring of every label, sampled by
//! mmash itself whether a page is open or not.

mod common;

use std::time::{Duration, Instant};

use common::{stats_dir, Mmash, Writer};
use serde_json::Value;

#[test]
fn writer_child() {
    common::writer_main();
}

/// The history once it holds at least `n` entries (waited for, bounded).
fn history_with(m: &Mmash, path: &str, n: usize) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let h = m.json(path);
        if h["times_ms"].as_array().unwrap().len() >= n {
            return h;
        }
        assert!(Instant::now() < deadline, "never {n} entries: {h}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The sum of every `/metrics` series of `name`.
fn metric_sum(page: &str, name: &str) -> f64 {
    page.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    k.sort_unstable();
    k
}

#[test]
fn history_has_every_label_with_the_values_of_metrics() {
    let dir = stats_dir();
    let mut w = Writer::start(dir.path());
    w.send("add 41");
    w.send("gauge 7");
    w.send("time 250000");
    w.send("time 900000");
    let m = Mmash::on(dir.path(), &["--sample-every", "1s"]);
    let h = history_with(&m, "/api/v1/history?window=1m", 3);
    assert_eq!(
        keys(&h),
        [
            "interval_ms",
            "max_series",
            "retention_s",
            "series",
            "series_dropped",
            "times_ms",
            "window_s"
        ]
    );
    assert_eq!(
        h["interval_ms"], 1000,
        "--sample-every 1s: an entry a second"
    );
    assert_eq!(h["window_s"], 60);
    assert_eq!(h["retention_s"], 900);
    assert_eq!(h["max_series"], 1000);
    assert_eq!(h["series_dropped"], 0);
    let times: Vec<u64> = h["times_ms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap())
        .collect();
    assert!(times.windows(2).all(|p| p[0] < p[1]), "{times:?}");
    let n = times.len();
    // Text is not charted; the three numeric labels are.
    assert_eq!(
        keys(&h["series"]),
        ["web.in_flight", "web.request", "web.status.2xx"]
    );
    let c = &h["series"]["web.status.2xx"];
    assert_eq!(keys(c), ["kind", "values"]);
    assert_eq!(c["kind"], "counter");
    assert_eq!(c["values"], Value::from(vec![41; n]));
    let g = &h["series"]["web.in_flight"];
    assert_eq!(g["kind"], "gauge");
    assert_eq!(g["values"], Value::from(vec![7; n]));
    let t = &h["series"]["web.request"];
    assert_eq!(keys(t), ["count", "kind", "p50", "p99"]);
    assert_eq!(t["kind"], "timer");
    assert_eq!(t["count"], Value::from(vec![2; n]));
    // Nothing recorded between entries: no quantiles of an interval.
    assert!(
        t["p50"].as_array().unwrap().iter().all(Value::is_null),
        "{t}"
    );

    // The same values as /metrics (the writer is idle).
    let metrics = m.get("/metrics").body;
    assert_eq!(metric_sum(&metrics, "web_status_2xx_total"), 41.0);
    assert_eq!(metric_sum(&metrics, "web_in_flight"), 7.0);
    assert_eq!(metric_sum(&metrics, "web_request_seconds_count"), 2.0);

    // Only entries newer than `since`; a value recorded now shows as the
    // quantiles of the interval it fell in.
    let last = times[n - 1];
    w.send("time 300000");
    w.send("add 9");
    let h = history_with(&m, &format!("/api/v1/history?since={last}"), 1);
    assert_eq!(h["window_s"], 300, "5m unless asked");
    let newest: Vec<u64> = h["times_ms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap())
        .collect();
    assert!(newest.iter().all(|&t| t > last), "{newest:?} after {last}");
    let t = &h["series"]["web.request"];
    assert_eq!(t["count"].as_array().unwrap().len(), newest.len());
    assert_eq!(t["count"][newest.len() - 1], 3);
    let p50 = t["p50"][0].as_f64().expect("the new value's interval");
    assert_eq!(t["p99"][0].as_f64(), Some(p50), "one value: p50 = p99");
    assert!((p50 - 300_000.0).abs() / 300_000.0 < 0.05, "p50 {p50}");
    let c = &h["series"]["web.status.2xx"]["values"];
    assert_eq!(c[newest.len() - 1], 50);
    let metrics = m.get("/metrics").body;
    assert_eq!(metric_sum(&metrics, "web_status_2xx_total"), 50.0);
    w.quit();
}

#[test]
fn history_keeps_at_most_the_cap_of_labels_and_counts_the_rest() {
    let dir = stats_dir();
    let mut w = Writer::start(dir.path());
    w.send("add 1");
    let m = Mmash::on(
        dir.path(),
        &["--sample-every", "1s", "--test-history-series", "2"],
    );
    let h = history_with(&m, "/api/v1/history", 2);
    assert_eq!(h["max_series"], 2);
    // The first labels in byte order are kept, the third counted.
    assert_eq!(keys(&h["series"]), ["web.in_flight", "web.request"]);
    assert_eq!(h["series_dropped"], 1);
    w.quit();
}

#[test]
fn history_refuses_bad_windows_and_wants_the_token() {
    let dir = stats_dir();
    let token = dir.path().join("token");
    std::fs::write(&token, "h1st\n").unwrap();
    let m = Mmash::on(dir.path(), &["--token-file", token.to_str().unwrap()]);
    let r = m.get("/api/v1/history");
    assert_eq!(r.status, 401, "{}", r.body);
    let get = |path: &str| {
        common::request(
            m.addr,
            &format!(
                "GET {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer h1st\r\nConnection: close\r\n\r\n"
            ),
        )
    };
    let r = get("/api/v1/history?window=15m");
    assert_eq!(r.status, 200, "{}", r.body);
    for (q, says) in [
        ("window=16m", "at most 15m"),
        ("window=soon", "\\\"window\\\""),
        ("window=0s", "above 0"),
        ("since=yesterday", "milliseconds since the epoch"),
        ("glob=x", "unknown query parameter"),
    ] {
        let r = get(&format!("/api/v1/history?{q}"));
        assert_eq!(r.status, 400, "{q}: {}", r.body);
        assert!(r.body.contains(says), "{q}: {}", r.body);
    }
}
