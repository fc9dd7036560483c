//! `pollstats --tree` against span timers written by this test: by the
//! mmstats writer API (a tree computed by hand) and by the real
//! `mmstats-tracing` layer. The test steps the writers and then sends a
//! line to `pollstats --tick-on-stdin`, so each interval holds exactly the
//! spans made in it.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc;

use mmstats::{FieldDef, Layout, Options, Schema, StatsFile, Timer};

const BIN: &str = env!("CARGO_BIN_EXE_pollstats");

/// A file of command `svc`, model `tracing` with a busy timer per path
/// (precision 12: values below 4096 ns are exact), and an idle timer that
/// the tree leaves out.
fn span_file(dir: &Path, name: &str, paths: &[&str]) -> (StatsFile, Vec<Timer>) {
    let mut schema = Schema::new("tracing");
    for p in paths {
        for kind in ["busy", "idle"] {
            let label = format!("span.{kind}{{path={p}}}");
            schema.push(FieldDef::timer(&label, Layout::timer()).layout(12, 42));
        }
    }
    let options = Options::new()
        .dir(dir)
        .command("svc")
        .template(&format!("{name}.{{pid}}.{{tid}}.mmstats"));
    let mut file = StatsFile::create(&schema, &options).unwrap();
    let mut timers = Vec::new();
    for p in paths {
        timers.push(file.take(&format!("span.busy{{path={p}}}")).unwrap());
        let idle: Timer = file.take(&format!("span.idle{{path={p}}}")).unwrap();
        idle.record_ns(3000);
    }
    (file, timers)
}

fn record(t: &Timer, calls: u64, ns: u64) {
    for _ in 0..calls {
        t.record_ns(ns);
    }
}

/// `pollstats --tree --tick-on-stdin` and what it prints.
struct Poll {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Poll {
    fn start(args: &[&str], dir: &Path) -> Poll {
        let mut child = Command::new(BIN)
            .arg("--tree")
            .args(args)
            .arg(dir)
            .env_remove("MMSTATS_DIR")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Poll {
            stdin: child.stdin.take(),
            stdout: BufReader::new(child.stdout.take().unwrap()),
            child,
        }
    }

    /// The header line of the next tree.
    fn header(&mut self) -> String {
        let mut line = String::new();
        assert!(self.stdout.read_line(&mut line).unwrap() > 0, "no tree");
        assert!(line.starts_with("--- "), "not a header: {line:?}");
        line
    }

    /// Takes the next sample; returns the tree before it (whose end is the
    /// next tree's header).
    fn tick(&mut self) -> String {
        writeln!(self.stdin.as_mut().unwrap()).unwrap();
        self.tree()
    }

    /// Everything up to the next header (which is read), or to the end
    /// (once the count is reached).
    fn tree(&mut self) -> String {
        let mut out = String::new();
        loop {
            let mut line = String::new();
            if self.stdout.read_line(&mut line).unwrap() == 0 || line.starts_with("--- ") {
                return out;
            }
            out.push_str(&line);
        }
    }

    /// Waits for the exit, which must be a success with nothing on stderr.
    fn finish(mut self) {
        self.stdin = None;
        let mut err = String::new();
        let mut stderr = self.child.stderr.take().unwrap();
        stderr.read_to_string(&mut err).unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success() && err.is_empty(), "{status}: {err}");
    }
}

#[test]
fn the_second_tree_holds_exactly_the_interval_hand_computed() {
    let dir = tempfile::tempdir().unwrap();
    let (_a, a) = span_file(dir.path(), "a", &["request", "request/db"]);
    let (_b, b) = span_file(dir.path(), "b", &["request", "health"]);
    // Before pollstats starts: in the first tree, not in the second.
    record(&a[0], 50, 3000);
    record(&a[1], 50, 2000);
    record(&b[1], 9, 100);
    let mut poll = Poll::start(&["--tick-on-stdin", "-c", "2"], dir.path());
    let first = poll.header();
    assert!(first.ends_with("since each file started ---\n"), "{first}");
    // The interval: request 4 calls (2 in each file), its db 10 calls,
    // health 2 calls; and a file that appears counts from its start.
    record(&a[0], 2, 1000);
    record(&b[0], 2, 1000);
    record(&a[1], 10, 100);
    record(&b[1], 2, 500);
    let (_c, c) = span_file(dir.path(), "c", &["request/db"]);
    record(&c[0], 5, 200);
    let whole = poll.tick();
    assert!(whole.contains("\n    50 calls\n"), "{whole}");
    let second = poll.tree();
    // Total: request 4000 + health 1000 = 5000 ns. request/db: 1000 +
    // 1000 = 2000 (40 %); request self 2000 (40 %); health 1000 (20 %).
    let want = "\
== command \"svc\" model \"tracing\" (3 files)
 80.0% (40.0%) | request
    50th 1µs, 75th 1µs, 95th 1µs, 99th 1µs, 99.9th 1µs
    4 calls
     40.0% (40.0%) | db
        50th 100ns, 75th 200ns, 95th 200ns, 99th 200ns, 99.9th 200ns
        15 calls
 20.0% (20.0%) | health
    50th 500ns, 75th 500ns, 95th 500ns, 99th 500ns, 99.9th 500ns
    2 calls
";
    assert_eq!(second, want);
    // -c 2: it ends by itself after the second tree.
    poll.finish();
}

#[test]
fn trees_of_spans_from_the_tracing_layer_count_each_interval() {
    use tracing_subscriber::layer::SubscriberExt;
    let dir = tempfile::tempdir().unwrap();
    let layer = mmstats_tracing::Builder::new().dir(dir.path()).build();
    // A thread that makes `n` request spans, each with a db_query inside,
    // for each number it is sent, and says when it is done.
    let (steps, todo) = mpsc::channel::<u64>();
    let (done, finished) = mpsc::channel::<()>();
    let spans = std::thread::spawn(move || {
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            for n in todo {
                for _ in 0..n {
                    let _r = tracing::info_span!("request").entered();
                    let _q = tracing::info_span!("db_query").entered();
                }
                done.send(()).unwrap();
            }
        });
    });
    let step = |n: u64| {
        steps.send(n).unwrap();
        finished.recv().unwrap();
    };
    step(3);
    let mut poll = Poll::start(&["--tick-on-stdin", "-c", "3"], dir.path());
    poll.header();
    step(7);
    let first = poll.tick();
    assert!(first.contains("\n    3 calls\n"), "{first}");
    step(0);
    let after_7 = poll.tick();
    let after_0 = poll.tree();
    for (n, tree, text) in [(7u64, 1, after_7), (0, 2, after_0)] {
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].ends_with("model \"tracing\" (1 file)"), "{text}");
        assert!(lines[1].ends_with("| request"), "tree {tree}: {text}");
        let calls = format!("{n} calls");
        assert_eq!(lines[2 + usize::from(n > 0)].trim(), calls, "{text}");
        assert!(text.contains("| db_query"), "{text}");
        assert_eq!(
            text.lines().filter(|l| l.trim() == calls).count(),
            2,
            "request and db_query: {calls} each in tree {tree}: {text}\nfirst: {first}"
        );
    }
    poll.finish();
    drop(steps);
    spans.join().unwrap();
}

#[test]
fn timed_trees_stop_at_the_count_and_label_arguments_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_a, a) = span_file(dir.path(), "a", &["request"]);
    record(&a[0], 4, 1000);
    let out = Command::new(BIN)
        .args(["--tree", "-i", "50ms", "-c", "2"])
        .arg(dir.path())
        .env_remove("MMSTATS_DIR")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let headers: Vec<&str> = text.lines().filter(|l| l.starts_with("--- ")).collect();
    assert_eq!(headers.len(), 2, "{text}");
    assert!(headers[1].contains(" interval "), "{text}");
    // Nothing was recorded in the second interval: the node, with 0 calls.
    let second = text.split(headers[1]).nth(1).unwrap();
    assert!(second.contains("| request\n    0 calls\n"), "{text}");
    assert!(!text.contains('\x1b'), "escape codes in a pipe: {text:?}");

    let out = Command::new(BIN)
        .args(["--tree", "web.", "-c", "1"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("\"web.\"") && err.contains("--tree"), "{err}");
}

#[test]
fn tree_json_gives_one_line_per_interval_with_exact_calls() {
    let dir = tempfile::tempdir().unwrap();
    let (_a, a) = span_file(dir.path(), "a", &["request", "request/db"]);
    record(&a[0], 7, 1000);
    let mut poll = Poll::start(&["--json", "--tick-on-stdin", "-c", "2"], dir.path());
    let mut line = String::new();
    poll.stdout.read_line(&mut line).unwrap();
    let first: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(first["interval_s"], serde_json::Value::Null, "{first}");
    assert_eq!(first["trees"][0]["nodes"][0]["calls"], 7, "{first}");
    record(&a[0], 3, 1000);
    record(&a[1], 4, 200);
    writeln!(poll.stdin.as_mut().unwrap()).unwrap();
    line.clear();
    poll.stdout.read_line(&mut line).unwrap();
    let second: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert!(second["interval_s"].as_f64().unwrap() > 0.0, "{second}");
    assert_eq!(second["truncated"], false);
    assert_eq!(second["nodes"], 2);
    let tree = &second["trees"][0];
    assert_eq!(
        (tree["command"].as_str(), tree["model"].as_str()),
        (Some("svc"), Some("tracing"))
    );
    let request = &tree["nodes"][0];
    assert_eq!(request["name"], "request");
    assert_eq!(request["calls"], 3, "only the interval's calls: {second}");
    assert_eq!(request["total_ns"], 3000);
    assert_eq!(request["children"][0]["path"], "request/db");
    assert_eq!(request["children"][0]["calls"], 4);
    assert_eq!(request["self_ns"], 3000 - 800);
    poll.finish();
}
