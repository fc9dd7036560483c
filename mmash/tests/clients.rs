//! Real clients: a Prometheus server scraping mmash on loopback, and
//! headless Chromium running the dashboard.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{free_port, request, stats_dir, tool, Mmash, Writer};

#[test]
fn writer_child() {
    common::writer_main();
}

fn query(port: u16, q: &str, at: f64) -> serde_json::Value {
    let r = query_raw(port, q, at);
    assert_eq!(r.status, 200, "{q}: {}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["status"], "success", "{v}");
    v["data"]["result"].clone()
}

fn query_raw(port: u16, q: &str, at: f64) -> common::Response {
    let enc: String = form_urlencoded::byte_serialize(q.as_bytes()).collect();
    request(
        ([127, 0, 0, 1], port).into(),
        &format!("GET /api/v1/query?query={enc}&time={at} HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n"),
    )
}

/// Whether Prometheus answers a query with 200 yet: false for a refused
/// connection, one closed without a reply, or any other status.
fn query_answers(port: u16, q: &str, at: f64) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let enc: String = form_urlencoded::byte_serialize(q.as_bytes()).collect();
    let req = format!(
        "GET /api/v1/query?query={enc}&time={at} HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n"
    );
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    buf.starts_with(b"HTTP/1.1 200")
}

fn scalar(result: &serde_json::Value) -> Option<f64> {
    result.as_array()?.first()?["value"][1]
        .as_str()?
        .parse()
        .ok()
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
fn a_prometheus_server_scrapes_mmash_and_rate_matches_the_writers() {
    let dir = stats_dir();
    let mut w = Writer::start(dir.path());
    w.send("add 500");
    let m = Mmash::on(dir.path(), &[]);
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = data.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: mmash\n    static_configs:\n      - targets: ['{}']\n",
            m.addr
        ),
    )
    .unwrap();
    let prom = Command::new(tool("prometheus"))
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            data.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let prom = Kill(prom);
    // Wait (bounded) until the first scrape has landed.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        assert!(Instant::now() < deadline, "Prometheus never scraped mmash");
        // Starting up: refused connections, connections closed without an
        // answer, then 503 until ready.
        let ready = query_answers(port, "web_status_2xx_total", now());
        if ready && scalar(&query(port, "web_status_2xx_total", now())) == Some(500.0) {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    // 50 every 50 ms for 6 s: 1000 per second.
    let start = now();
    let total = w.send("pace 50 50 6000");
    let end = now();
    // Let two more scrapes land.
    std::thread::sleep(Duration::from_millis(2500));
    let at = now();
    let last = scalar(&query(port, "web_status_2xx_total", at)).unwrap();
    assert_eq!(
        last, total as f64,
        "the stored counter is what the writer counted"
    );
    let resets = scalar(&query(port, "resets(web_status_2xx_total[1m])", at)).unwrap();
    assert_eq!(resets, 0.0);
    // rate() over the writer's busy seconds, against what it did in them.
    let mid = (start + end) / 2.0;
    let rate = scalar(&query(port, "rate(web_status_2xx_total[4s])", mid + 2.0)).unwrap();
    let did = (total - 500) as f64 / (end - start);
    assert!(
        (rate - did).abs() <= did * 0.25,
        "rate() {rate}/s, the writer did {did}/s"
    );
    let up = scalar(&query(port, "up{job=\"mmash\"}", at)).unwrap();
    assert_eq!(up, 1.0);
    drop(prom);
}

/// The chart of `label` in a dashboard DOM: its card's markup.
fn card<'a>(dom: &'a str, label: &str) -> &'a str {
    let start = dom
        .find(&format!("<div class=\"card\" data-label=\"{label}\""))
        .unwrap_or_else(|| panic!("no chart for {label}: {dom}"));
    let card = &dom[start..];
    &card[..card.find("</svg>").unwrap_or(card.len())]
}

/// The number of points a chart drew (its `data-points`).
fn points(card: &str) -> usize {
    card.split("data-points=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no data-points: {card}"))
}

#[test]
fn the_dashboard_shows_history_at_once_gauges_and_windows_in_chromium() {
    let dir = stats_dir();
    let mut w = Writer::start(dir.path());
    w.send("add 41");
    w.send("gauge 7");
    w.send("time 250000");
    let m = Mmash::on(dir.path(), &["--sample-every", "1s"]);
    // Keep the counter and the timer moving while mmash samples.
    w.send("pace 7 100 1500");
    w.send("time 900000");
    w.send("pace 7 100 1500");
    w.send("time 300000");
    w.send("pace 7 100 1500");
    // mmash sampled the files by itself: no page was open.
    let deadline = Instant::now() + Duration::from_secs(30);
    while m.json("/api/v1/history")["times_ms"]
        .as_array()
        .unwrap()
        .len()
        < 5
    {
        assert!(Instant::now() < deadline, "mmash keeps no history");
        std::thread::sleep(Duration::from_millis(200));
    }
    let dom = chromium_dom(&format!("http://{}/", m.addr));
    assert!(dom.contains("1 alive, 0 dead"), "{dom}");
    assert!(dom.contains("webw"), "files table: {dom}");
    assert!(dom.contains("\"running\""), "text value: {dom}");
    // A page just opened charts what mmash kept: several points per chart,
    // a rate line for the counter, a line for the gauge (its value now
    // written), a p50 line in a p50-p99 band for the timer, a time axis.
    let counter = card(&dom, "web.status.2xx");
    assert!(points(counter) > 1, "one point only: {counter}");
    assert!(counter.contains("<path class=\"rate\""), "{counter}");
    assert!(counter.contains("/s"), "no rate now: {counter}");
    let gauge = card(&dom, "web.in_flight");
    assert!(points(gauge) > 1, "one point only: {gauge}");
    assert!(gauge.contains("<path class=\"gauge\""), "{gauge}");
    assert!(gauge.contains("<span class=\"now\">7</span>"), "{gauge}");
    let timer = card(&dom, "web.request");
    assert!(timer.contains("<path class=\"p50\""), "{timer}");
    assert!(
        timer.contains("<polygon class=\"band\""),
        "no band: {timer}"
    );
    assert!(timer.contains("p50 "), "{timer}");
    // Time axis: clock labels hh:mm (5 minutes: one a minute).
    assert!(
        counter.contains("text-anchor=\"middle\">") && counter.contains(':'),
        "{counter}"
    );
    assert!(counter.contains("data-window-s=\"300\""), "{counter}");
    assert!(
        dom.contains("<button data-s=\"300\" class=\"on\">"),
        "{dom}"
    );

    // The window selector: 1 minute, ticks every 15 s with seconds.
    let dom = chromium_dom(&format!("http://{}/#window=1m", m.addr));
    assert!(dom.contains("<button data-s=\"60\" class=\"on\">"), "{dom}");
    let counter = card(&dom, "web.status.2xx");
    assert!(counter.contains("data-window-s=\"60\""), "{counter}");
    assert!(points(counter) > 1, "{counter}");

    // A label per process and per file, as a click on its name opens it.
    let dom = chromium_dom(&format!(
        "http://{}/#label=web.status.2xx&per=process",
        m.addr
    ));
    let detail = dom
        .split("<div id=\"detail\">")
        .nth(1)
        .expect("no detail shown");
    assert!(detail.contains("per process"), "{detail}");
    assert!(
        detail.contains(&format!("pid {} (webw)", w.pid)),
        "{detail}"
    );
    let dom = chromium_dom(&format!("http://{}/#label=web.in_flight", m.addr));
    let detail = dom
        .split("<div id=\"detail\">")
        .nth(1)
        .expect("no detail shown");
    let file = m.json("/files/")["files"][0].as_str().unwrap().to_owned();
    assert!(detail.contains(&format!("<code>{file}</code>")), "{detail}");
    assert!(detail.contains("<td class=\"num\">7</td>"), "{detail}");
    w.quit();
}

/// The DOM of `url` in headless Chromium after its scripts ran for five
/// seconds of virtual time.
fn chromium_dom(url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(tool("chromium"))
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// With `--token-file`, the dashboard takes the token from the URL
/// fragment and shows live values; without it, it asks for one and shows
/// none.
#[test]
fn the_dashboard_sends_the_token_from_the_url_fragment() {
    let dir = stats_dir();
    let token = dir.path().join("token");
    std::fs::write(&token, "dash-s3cret\n").unwrap();
    let mut w = Writer::start(dir.path());
    w.send("add 41");
    let m = Mmash::on(dir.path(), &["--token-file", token.to_str().unwrap()]);

    let dom = chromium_dom(&format!("http://{}/#token=dash-s3cret", m.addr));
    assert!(dom.contains("1 alive, 0 dead"), "{dom}");
    assert!(dom.contains("web.status.2xx"), "{dom}");
    assert!(
        dom.contains("<form id=\"tokenform\" hidden=\"\""),
        "form shown: {dom}"
    );

    let dom = chromium_dom(&format!("http://{}/", m.addr));
    assert!(
        dom.contains("no data from mmash: a token is needed"),
        "{dom}"
    );
    assert!(
        dom.contains("<form id=\"tokenform\">"),
        "form hidden: {dom}"
    );
    assert!(
        !dom.contains("web.status.2xx"),
        "data without a token: {dom}"
    );

    let dom = chromium_dom(&format!("http://{}/#token=wrong", m.addr));
    assert!(dom.contains("the token was refused"), "{dom}");
    assert!(
        !dom.contains("web.status.2xx"),
        "data with a wrong token: {dom}"
    );
    w.quit();
}
