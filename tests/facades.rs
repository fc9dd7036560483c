//! Exact counts through both facades (issue 19): a writer process that
//! counts through the `metrics` facade into `mmstats_metrics::install()`'s
//! recorder and times spans through `tracing` into `mmstats_tracing::layer()`,
//! read by the real `slurpstats --json` and by a real `mmash` on
//! 127.0.0.1:0 (`/metrics`, with the keys' labels as Prometheus labels,
//! checked by `promtool check metrics`). Every figure is an exact count the
//! writer made; nothing is timed.
//!
//! The readers are built by this test with cargo (as `no_syscalls.rs`
//! builds its example), in this test's profile. The writer is this test
//! binary itself, started again to run [`writer_child`].

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value as Json};

/// Set in the writer child's environment.
const WRITER_ENV: &str = "MMSTATS_FACADES_WRITER";

/// `counter!("http.requests", "route" => "/a")` increments.
const N_A: u64 = 1234;
/// `counter!("http.requests", "route" => "/b")` increments.
const N_B: u64 = 567;
/// Values recorded into the `payload.size` histogram: each of
/// [`PAYLOADS`], this many times.
const N_PAYLOAD: u64 = 25;
const PAYLOADS: [f64; 3] = [100.0, 200.0, 300.0];
/// `request` spans, each with [`DB_PER_REQUEST`] `db_query` spans inside.
const N_REQUEST: u64 = 40;
const DB_PER_REQUEST: u64 = 3;

/// The writer: records everything on its main thread, prints `ready`, and
/// keeps its files open until its stdin closes.
#[test]
fn writer_child() {
    if std::env::var_os(WRITER_ENV).is_none() {
        return;
    }
    use tracing_subscriber::layer::SubscriberExt;
    // Both write to $MMSTATS_DIR, which the test sets.
    mmstats_metrics::install().expect("install the metrics recorder");
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry().with(mmstats_tracing::layer()),
    )
    .expect("install the tracing subscriber");

    metrics::describe_counter!("http.requests", "Requests served");
    metrics::describe_histogram!("payload.size", metrics::Unit::Bytes, "Request body sizes");
    for _ in 0..N_A {
        metrics::counter!("http.requests", "route" => "/a").increment(1);
    }
    for _ in 0..N_B {
        metrics::counter!("http.requests", "route" => "/b").increment(1);
    }
    metrics::gauge!("queue.depth", "queue" => "in").set(42.0);
    let sizes = metrics::histogram!("payload.size", "kind" => "json");
    for _ in 0..N_PAYLOAD {
        for v in PAYLOADS {
            sizes.record(v);
        }
    }
    for _ in 0..N_REQUEST {
        let _request = tracing::info_span!("request").entered();
        for _ in 0..DB_PER_REQUEST {
            let _db = tracing::info_span!("db_query").entered();
        }
    }
    let mut out = std::io::stdout();
    writeln!(out, "ready").unwrap();
    out.flush().unwrap();
    let mut rest = String::new();
    let _ = std::io::stdin().read_to_string(&mut rest);
    std::process::exit(0);
}

/// Starts the writer with its files in `dir` and waits until it is ready.
fn start_writer(dir: &Path) -> Child {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["writer_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(WRITER_ENV, "1")
        .env("MMSTATS_DIR", dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the writer");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    loop {
        let mut line = String::new();
        assert!(out.read_line(&mut line).unwrap() > 0, "the writer died");
        // libtest may print "test writer_child ... " before it.
        if line.trim().ends_with("ready") {
            break;
        }
    }
    child
}

/// Builds `packages` with this test's profile and returns their
/// executables by name, as cargo reports them.
fn build_bins(packages: &[&str]) -> HashMap<String, PathBuf> {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR")).args([
        "build",
        "--bins",
        "--message-format=json-render-diagnostics",
    ]);
    for p in packages {
        cmd.args(["-p", p]);
    }
    let me = std::env::current_exe().unwrap();
    let release = me
        .parent()
        .and_then(Path::parent)
        .and_then(Path::file_name)
        .is_some_and(|d| d == "release");
    if release {
        cmd.arg("--release");
    }
    let out = cmd.output().expect("run cargo build");
    assert!(
        out.status.success(),
        "cargo build {packages:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let bins: HashMap<String, PathBuf> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Json>(line).ok())
        .filter(|msg| {
            msg["reason"] == "compiler-artifact"
                && msg["target"]["kind"]
                    .as_array()
                    .is_some_and(|k| k.iter().any(|k| k == "bin"))
        })
        .filter_map(|msg| {
            let name = msg["target"]["name"].as_str()?.to_owned();
            Some((name, PathBuf::from(msg["executable"].as_str()?)))
        })
        .collect();
    for p in packages {
        assert!(bins.contains_key(*p), "cargo named no {p} executable");
    }
    bins
}

fn slurpstats_json(bin: &Path, dir: &Path) -> Vec<Json> {
    let out = Command::new(bin)
        .arg("--json")
        .arg(dir)
        .env_remove("MMSTATS_DIR")
        .output()
        .expect("run slurpstats");
    assert!(
        out.status.success(),
        "slurpstats --json failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    match serde_json::from_slice(&out.stdout) {
        Ok(Json::Array(files)) => files,
        other => panic!("slurpstats --json gave no array: {other:?}"),
    }
}

/// The one file of model `model`.
fn file_of<'a>(files: &'a [Json], model: &str) -> &'a Json {
    let of: Vec<&Json> = files.iter().filter(|f| f["model"] == model).collect();
    assert_eq!(of.len(), 1, "files of model {model}: {files:#?}");
    of[0]
}

/// mmash on 127.0.0.1:0 reading `dir`; killed on drop.
struct Mmash(Child, std::net::SocketAddr);

impl Mmash {
    fn start(bin: &Path, dir: &Path) -> Mmash {
        let mut child = Command::new(bin)
            .args(["--listen", "127.0.0.1:0"])
            .arg(dir)
            .env_remove("MMSTATS_DIR")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start mmash");
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut said = String::new();
        let addr = loop {
            let mut line = String::new();
            assert!(
                err.read_line(&mut line).unwrap() > 0,
                "mmash exited: {said}"
            );
            if let Some(rest) = line.trim().strip_prefix("mmash: listening on http://") {
                break rest.trim_end_matches('/').parse().unwrap();
            }
            said.push_str(&line);
        };
        // Keep draining its log so that it never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
        Mmash(child, addr)
    }

    /// The body of `GET path`, asserting a 200.
    fn get(&self, path: &str) -> String {
        let mut s = TcpStream::connect(self.1).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut buf = String::new();
        s.read_to_string(&mut buf).unwrap();
        let (head, body) = buf.split_once("\r\n\r\n").expect("an HTTP response");
        assert!(head.starts_with("HTTP/1.1 200"), "{path}: {head}\n{body}");
        body.to_owned()
    }
}

impl Drop for Mmash {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The one sample line of `name` whose labels include every one of
/// `labels`, and its value; panics unless there is exactly one.
fn sample(page: &str, name: &str, labels: &[&str]) -> String {
    let found: Vec<&str> = page
        .lines()
        .filter(|l| l.strip_prefix(name).is_some_and(|r| r.starts_with('{')))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .collect();
    assert_eq!(found.len(), 1, "{name} {labels:?}: {found:?} in\n{page}");
    found[0].rsplit_once(' ').unwrap().1.to_owned()
}

fn promtool_clean(page: &str) {
    let promtool = std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(|d| Path::new(d).join("promtool"))
        .find(|p| p.is_file())
        .expect("promtool is not installed: scripts/install-deps.sh installs it");
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(page.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool: {said}\n{page}");
    assert!(said.trim().is_empty(), "promtool warnings: {said}\n{page}");
}

#[test]
fn exact_counts_through_both_facades_in_slurpstats_and_mmash() {
    let bins = build_bins(&["slurpstats", "mmash"]);
    let dir = tempfile::tempdir().unwrap();
    let mut writer = start_writer(dir.path());
    let payload_sum = N_PAYLOAD * PAYLOADS.iter().sum::<f64>() as u64;
    let spans = [
        ("request", N_REQUEST),
        ("request/db_query", N_REQUEST * DB_PER_REQUEST),
    ];

    // slurpstats --json: exact values, and the keys' labels as static labels.
    let files = slurpstats_json(&bins["slurpstats"], dir.path());
    assert_eq!(
        files.len(),
        2,
        "one metrics and one tracing file: {files:#?}"
    );
    let m = file_of(&files, "metrics");
    for (route, n) in [("/a", N_A), ("/b", N_B)] {
        let label = format!("http.requests{{route={route}}}");
        assert_eq!(m["stats"][&label], json!(n), "{label}");
        assert_eq!(
            m["fields"][&label]["static_labels"],
            json!({"route": route})
        );
        assert_eq!(m["fields"][&label]["help"], json!("Requests served"));
    }
    assert_eq!(m["stats"]["queue.depth{queue=in}"], json!(42.0));
    assert_eq!(
        m["fields"]["queue.depth{queue=in}"]["static_labels"],
        json!({"queue": "in"})
    );
    let size = &m["stats"]["payload.size{kind=json}"];
    assert_eq!(size["count"], json!(N_PAYLOAD * 3));
    assert_eq!(size["sum"], json!(payload_sum));
    assert_eq!(m["stats"]["mmstats_metrics.dropped"], json!(0));
    let t = file_of(&files, "tracing");
    for (path, calls) in spans {
        for what in ["busy", "idle"] {
            let label = format!("span.{what}{{path={path}}}");
            assert_eq!(t["stats"][&label]["count"], json!(calls), "{label}");
            assert_eq!(t["fields"][&label]["static_labels"], json!({"path": path}));
        }
    }
    assert_eq!(t["stats"]["mmstats_tracing.overflow"], json!(0));

    // mmash /metrics: the same counts, the labels as Prometheus labels.
    let mmash = Mmash::start(&bins["mmash"], dir.path());
    let page = mmash.get("/metrics");
    promtool_clean(&page);
    assert_eq!(
        page.matches("# HELP http_requests_total Requests served\n")
            .count(),
        1,
        "{page}"
    );
    assert_eq!(
        page.matches("# TYPE http_requests_total counter\n").count(),
        1
    );
    let model = "model=\"metrics\"";
    for (route, n) in [("/a", N_A), ("/b", N_B)] {
        let route = format!("route=\"{route}\"");
        assert_eq!(
            sample(&page, "http_requests_total", &[model, &route]),
            n.to_string()
        );
    }
    assert_eq!(sample(&page, "queue_depth", &["queue=\"in\""]), "42");
    assert!(
        page.contains("# HELP payload_size Request body sizes\n"),
        "{page}"
    );
    let kind = "kind=\"json\"";
    assert_eq!(
        sample(&page, "payload_size_count", &[kind]),
        (N_PAYLOAD * 3).to_string()
    );
    assert_eq!(
        sample(&page, "payload_size_sum", &[kind]),
        payload_sum.to_string()
    );
    // One family per timer kind, the path a label of its series.
    for (path, calls) in spans {
        let label = format!("path=\"{path}\"");
        assert_eq!(
            sample(
                &page,
                "span_busy_seconds_count",
                &["model=\"tracing\"", &label]
            ),
            calls.to_string()
        );
    }
    assert_eq!(
        page.matches("# TYPE span_busy_seconds histogram\n").count(),
        1
    );
    assert!(!page.contains("mmstats_label"), "{page}");

    drop(writer.stdin.take());
    assert!(writer.wait().unwrap().success());
}
