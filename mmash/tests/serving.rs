//! mmash under churn and load: counters never go backwards while writers
//! come, die by SIGKILL, exit, and files are truncated and replaced; many
//! kept-alive clients at once; slow clients are cut off.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{counters, stats_dir, KeepAlive, Mmash, Writer};

#[test]
fn writer_child() {
    common::writer_main();
}

#[test]
fn counters_never_go_backwards_while_writers_churn() {
    let dir = stats_dir();
    let m = Mmash::on(dir.path(), &["--rescan", "0.2"]);
    let stop = Arc::new(AtomicBool::new(false));
    // Scrapers: every counter series must be non-decreasing, no 5xx.
    let scrapers: Vec<_> = (0..2)
        .map(|_| {
            let stop = Arc::clone(&stop);
            let addr = m.addr;
            std::thread::spawn(move || {
                let mut c = KeepAlive::connect(addr);
                let mut last: HashMap<String, f64> = HashMap::new();
                let mut scrapes = 0;
                // Relaxed: a stop flag, no data rides on it.
                while !stop.load(Ordering::Relaxed) {
                    let (status, body) = c.get("/metrics");
                    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
                    for (series, v) in counters(&String::from_utf8(body).unwrap()) {
                        if let Some(&before) = last.get(&series) {
                            assert!(v >= before, "{series} went from {before} to {v}");
                        }
                        last.insert(series, v);
                    }
                    scrapes += 1;
                }
                scrapes
            })
        })
        .collect();
    let scrape = || KeepAlive::connect(m.addr).get("/metrics");
    let mut expected = 0u64;
    let mut live: Vec<Writer> = Vec::new();
    for round in 0..12 {
        for _ in 0..3 {
            let mut w = Writer::start(dir.path());
            w.send("add 10");
            w.send("time 5000");
            expected += 10;
            live.push(w);
        }
        for w in &mut live {
            w.send("add 1");
            expected += 1;
        }
        // Every write so far is seen before files go away.
        scrape();
        match round % 3 {
            0 => live.remove(0).kill(),
            1 => live.remove(0).quit(),
            _ => {
                // A dead writer's file truncated, then another replaced.
                let w = live.remove(0);
                let pid = w.pid;
                w.kill();
                let f = file_of(dir.path(), pid);
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&f)
                    .unwrap()
                    .set_len(64)
                    .unwrap();
                scrape();
                std::fs::remove_file(&f).unwrap();
            }
        }
    }
    for w in live.drain(..) {
        w.quit();
    }
    std::thread::sleep(Duration::from_millis(300));
    let (status, page) = scrape();
    assert_eq!(status, 200);
    let page = String::from_utf8(page).unwrap();
    stop.store(true, Ordering::Relaxed);
    for s in scrapers {
        assert!(s.join().unwrap() > 0);
    }
    // Files that vanished keep what they counted.
    let total: f64 = counters(&page)
        .iter()
        .filter(|(s, _)| s.starts_with("web_status_2xx_total"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(total, expected as f64, "{page}");
    let log = m.log.lock().unwrap().clone();
    assert!(!log.contains("-> 5"), "{log}");
}

fn file_of(dir: &std::path::Path, pid: u32) -> std::path::PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains(&format!(".{pid}.")))
        .unwrap()
}

#[test]
fn many_kept_alive_clients_get_answers_and_memory_stays_flat() {
    let dir = stats_dir();
    let mut writers: Vec<Writer> = (0..4).map(|_| Writer::start(dir.path())).collect();
    for w in &mut writers {
        w.send("add 3");
        w.send("time 1000");
    }
    let m = Mmash::on(dir.path(), &[]);
    let warm = Instant::now() + Duration::from_secs(1);
    let end = warm + Duration::from_secs(4);
    let clients: Vec<_> = (0..32)
        .map(|i| {
            let addr = m.addr;
            std::thread::spawn(move || {
                let mut c = KeepAlive::connect(addr);
                let paths = [
                    "/metrics",
                    "/stats/web.status.2xx?aggr=sum",
                    "/api/v1/summary",
                    "/healthz",
                ];
                let mut n = 0;
                while Instant::now() < end {
                    let (status, _) = c.get(paths[(i + n) % paths.len()]);
                    assert_eq!(status, 200);
                    n += 1;
                }
                n
            })
        })
        .collect();
    while Instant::now() < warm {
        std::thread::sleep(Duration::from_millis(50));
    }
    let before = m.rss_kib();
    let requests: usize = clients.into_iter().map(|c| c.join().unwrap()).sum();
    let after = m.rss_kib();
    assert!(requests > 100, "{requests} requests");
    // Flat: no growth with the number of requests served.
    assert!(
        after < before + before / 2 + 4096,
        "RSS {before} KiB -> {after} KiB after {requests} requests"
    );
    assert_eq!(
        m.json("/stats/web.status.2xx?aggr=sum"),
        serde_json::json!({"web.status.2xx": 12})
    );
}

#[test]
fn slow_clients_are_cut_off_and_others_still_served() {
    let dir = stats_dir();
    let m = Mmash::on(dir.path(), &["--client-timeout", "1"]);
    // Slowloris: connections that send a header byte now and then.
    let mut slow: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut s = TcpStream::connect(m.addr).unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\nX-Slow: ").unwrap();
            s
        })
        .collect();
    let idle = TcpStream::connect(m.addr).unwrap();
    assert_eq!(m.get("/healthz").status, 200);
    let started = Instant::now();
    let mut closed = 0;
    while started.elapsed() < Duration::from_secs(4) && closed < slow.len() {
        closed = 0;
        for s in &mut slow {
            if s.write_all(b"a").is_err() {
                closed += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(closed, slow.len(), "slow clients still connected");
    // An idle connection is closed too.
    let mut idle = idle;
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 256];
    let n = idle.read(&mut buf).unwrap_or(0);
    let said = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(n == 0 || said.starts_with("HTTP/1.1 408"), "{said}");
    assert_eq!(m.get("/healthz").status, 200);
}

#[test]
fn sigterm_shuts_down_gracefully() {
    let dir = stats_dir();
    let mut m = Mmash::on(dir.path(), &[]);
    assert_eq!(m.get("/healthz").status, 200);
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &m.child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = m.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(m.log.lock().unwrap().contains("shutting down") || !m.running());
}
