//! `/api/v1/tree` and the dashboard's tree, against a real mmash reading
//! span-timer files written by this test (labels as `mmstats-tracing`
//! writes them), the dashboard driven in headless Chromium: rows, calls,
//! and a click that folds a node.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use common::{stats_dir, tool, Mmash};
use mmstats::{FieldDef, Layout, Options, Schema, StatsFile, Timer};
use serde_json::{json, Value as Json};

/// A file of model `tracing` and command `command` with a busy timer per
/// path, each recording `calls` values of `ns` (precision 12: values below
/// 4096 ns are exact).
fn span_file(dir: &Path, name: &str, command: &str, spans: &[(&str, u64, u64)]) -> StatsFile {
    let mut schema = Schema::new("tracing");
    for (p, _, _) in spans {
        for kind in ["busy", "idle"] {
            let label = format!("span.{kind}{{path={p}}}");
            schema.push(FieldDef::timer(&label, Layout::timer()).layout(12, 42));
        }
    }
    let options = Options::new()
        .dir(dir)
        .command(command)
        .template(&format!("{name}.{{pid}}.{{tid}}.mmstats"));
    let mut file = StatsFile::create(&schema, &options).unwrap();
    for (p, calls, ns) in spans {
        let busy: Timer = file.take(&format!("span.busy{{path={p}}}")).unwrap();
        for _ in 0..*calls {
            busy.record_ns(*ns);
        }
    }
    file
}

/// `request` 10 calls of 1 µs over two files, `request/db` 20 of 100 ns,
/// `request/auth` 5 of 400 ns, `health` 10 of 500 ns; and a file of
/// another command.
fn files(dir: &Path) -> Vec<StatsFile> {
    vec![
        span_file(
            dir,
            "a",
            "svc",
            &[
                ("request", 5, 1000),
                ("request/db", 10, 100),
                ("request/auth", 5, 400),
            ],
        ),
        span_file(
            dir,
            "b",
            "svc",
            &[
                ("request", 5, 1000),
                ("request/db", 10, 100),
                ("health", 10, 500),
            ],
        ),
        span_file(dir, "c", "batch", &[("job", 3, 2000)]),
    ]
}

fn me() -> String {
    mmstats_read::owners::user_name(mmstats::geteuid())
}

#[test]
fn the_tree_api_serves_each_command_scoped_and_bounded() {
    let dir = stats_dir();
    let _files = files(dir.path());
    let m = Mmash::on(dir.path(), &[]);
    let t = m.json("/api/v1/tree");
    assert_eq!(t["truncated"], json!(false), "{t}");
    assert_eq!(t["max_nodes"], json!(10_000), "{t}");
    assert_eq!(t["nodes"], json!(5), "{t}");
    let trees = t["trees"].as_array().unwrap();
    assert_eq!(trees.len(), 2, "{t}");
    // Sorted by owner, command, model, prefix: batch before svc.
    assert_eq!(trees[0]["command"], json!("batch"));
    let svc = &trees[1];
    assert_eq!(svc["user"], json!(me()), "{svc}");
    assert_eq!(svc["model"], json!("tracing"));
    assert_eq!(svc["files"], json!(2));
    // Total: request 10000 + health 5000.
    assert_eq!(svc["total_ns"], json!(15_000));
    let request = &svc["nodes"][0];
    assert_eq!(request["name"], json!("request"));
    assert_eq!(request["calls"], json!(10));
    assert_eq!(request["total_ns"], json!(10_000));
    // Self: 10000 - 2000 (db) - 2000 (auth).
    assert_eq!(request["self_ns"], json!(6000));
    assert!((request["share"].as_f64().unwrap() - 10.0 / 15.0).abs() < 1e-9);
    assert!((request["self_share"].as_f64().unwrap() - 0.4).abs() < 1e-9);
    assert_eq!(request["p50_ns"], json!(1000));
    assert_eq!(request["p999_ns"], json!(1000));
    // Children by total, then name: auth (2000) and db (2000) tie.
    let kids: Vec<(&str, &str, u64)> = request["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap(),
                c["path"].as_str().unwrap(),
                c["calls"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kids,
        [("auth", "request/auth", 5), ("db", "request/db", 20)]
    );
    assert_eq!(svc["nodes"][1]["name"], json!("health"));

    // Scoped as /check/ is, and by file name as /api/v1/snapshot is.
    let t = m.json("/api/v1/tree?command=batch");
    assert_eq!(t["trees"].as_array().unwrap().len(), 1, "{t}");
    assert_eq!(t["trees"][0]["nodes"][0]["calls"], json!(3), "{t}");
    let t = m.json(&format!(
        "/api/v1/tree?user={}&model=tracing&glob=a.*",
        me()
    ));
    assert_eq!(t["trees"][0]["files"], json!(1), "{t}");
    assert_eq!(t["trees"][0]["nodes"][0]["calls"], json!(5), "{t}");
    let t = m.json("/api/v1/tree?model=web");
    assert_eq!(t["trees"], json!([]), "{t}");
    for (q, says) in [
        ("user=no-such-user-mmash-test", "no such user"),
        ("since=60", "unknown query parameter"),
        ("window=600", "window="),
        ("glob=../x", ".."),
    ] {
        let r = m.get(&format!("/api/v1/tree?{q}"));
        assert_eq!(r.status, 400, "{q}: {}", r.body);
        assert!(r.body.contains(says), "{q}: {}", r.body);
    }
}

/// A headless Chromium driven over the DevTools protocol on a pipe
/// (`--remote-debugging-pipe`: commands on fd 3, answers on fd 4, each a
/// JSON text ended by a NUL), with one page attached.
struct Browser {
    child: Child,
    to: ChildStdin,
    from: BufReader<ChildStdout>,
    next: u64,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn open(url: &str) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        // The shell gives Chromium our pipes as fds 3 and 4.
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(r#"exec "$0" "$@" 3<&0 4>&1 </dev/null >/dev/null"#)
            .arg(tool("chromium"))
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-pipe",
                "--window-size=1200,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut b = Browser {
            to: child.stdin.take().unwrap(),
            from: BufReader::new(child.stdout.take().unwrap()),
            child,
            next: 0,
            session: String::new(),
            _profile: profile,
        };
        let target = b.call("Target.createTarget", json!({ "url": "about:blank" }));
        let target = target["targetId"].clone();
        let attached = b.call(
            "Target.attachToTarget",
            json!({ "targetId": target, "flatten": true }),
        );
        b.session = attached["sessionId"].as_str().unwrap().to_owned();
        b.call("Page.enable", json!({}));
        b.call("Page.navigate", json!({ "url": url }));
        while b.read()["method"] != json!("Page.loadEventFired") {}
        b
    }

    /// The next message: an answer or an event.
    fn read(&mut self) -> Json {
        let mut buf = Vec::new();
        assert!(
            self.from.read_until(0, &mut buf).unwrap() > 0,
            "chromium closed its pipe"
        );
        buf.pop();
        serde_json::from_slice(&buf).unwrap()
    }

    /// Sends one command (to the page once attached) and returns its
    /// result, skipping events.
    fn call(&mut self, method: &str, params: Json) -> Json {
        self.next += 1;
        let mut msg = json!({ "id": self.next, "method": method, "params": params });
        if !self.session.is_empty() {
            msg["sessionId"] = json!(self.session);
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        self.to.write_all(&bytes).unwrap();
        self.to.flush().unwrap();
        loop {
            let answer = self.read();
            if answer["id"] == json!(self.next) {
                assert!(answer["error"].is_null(), "{method}: {answer}");
                return answer["result"].clone();
            }
        }
    }

    /// The value of a JavaScript expression in the page (promises
    /// awaited); a thrown error fails the test with its text.
    fn eval(&mut self, expression: &str) -> Json {
        let r = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "awaitPromise": true, "returnByValue": true }),
        );
        assert!(r["exceptionDetails"].is_null(), "{expression}: {r}");
        r["result"]["value"].clone()
    }

    /// A left click at the middle of the first element `selector` picks,
    /// as a mouse gives it.
    fn click(&mut self, selector: &str) {
        let at = self.eval(&format!(
            "(() => {{ const e = document.querySelector({sel}); e.scrollIntoView({{block: 'center'}}); \
             const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }})()",
            sel = json!(selector)
        ));
        let (x, y) = (at[0].as_f64().unwrap(), at[1].as_f64().unwrap());
        for kind in ["mouseMoved", "mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({ "type": kind, "x": x, "y": y, "button": "left", "clickCount": 1 }),
            );
        }
    }

    /// The tree's rows: (span path, calls, hidden), in page order.
    fn rows(&mut self) -> Vec<(String, u64, bool)> {
        let v = self.eval(
            "new Promise((ok, no) => { const t0 = Date.now(); (function poll() { \
               const rows = document.querySelectorAll('#tree tr.tnode'); \
               if (rows.length) ok([...rows].map(r => [r.dataset.path, +r.dataset.calls, r.hidden])); \
               else if (Date.now() - t0 > 20000) no(new Error('no tree rows; status: ' + document.getElementById('status').textContent)); \
               else setTimeout(poll, 100); })(); })",
        );
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r[0].as_str().unwrap().to_owned(),
                    r[1].as_u64().unwrap(),
                    r[2].as_bool().unwrap(),
                )
            })
            .collect()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn row(rows: &[(String, u64, bool)], path: &str) -> (u64, bool) {
    rows.iter()
        .find(|r| r.0 == path)
        .map(|r| (r.1, r.2))
        .unwrap_or_else(|| panic!("no row {path}: {rows:?}"))
}

#[test]
fn the_dashboard_tree_shows_spans_and_folds_on_a_click_in_chromium() {
    let dir = stats_dir();
    let _files = files(dir.path());
    let m = Mmash::on(dir.path(), &[]);
    let mut b = Browser::open(&format!("http://{}/", m.addr));
    let rows = b.rows();
    let paths: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(
        paths,
        ["job", "request", "request/auth", "request/db", "health"],
        "{rows:?}"
    );
    assert_eq!(row(&rows, "request"), (10, false));
    assert_eq!(row(&rows, "request/db"), (20, false));
    assert_eq!(row(&rows, "health"), (10, false));
    assert_eq!(row(&rows, "job"), (3, false));
    let text = b.eval("document.getElementById('tree').innerText");
    let text = text.as_str().unwrap();
    assert!(text.contains("66.7%") && text.contains("(40.0%)"), "{text}");

    // A click on request folds it: its children are hidden, the rest not.
    b.click("#tree tr.tnode[data-path='request'] .sname");
    let rows = b.rows();
    assert_eq!(row(&rows, "request"), (10, false));
    assert_eq!(row(&rows, "request/db"), (20, true), "{rows:?}");
    assert_eq!(row(&rows, "request/auth"), (5, true), "{rows:?}");
    assert_eq!(row(&rows, "health"), (10, false));
    // It stays folded when the page refreshes its data.
    b.eval("tick()");
    let rows = b.rows();
    assert_eq!(row(&rows, "request/db"), (20, true), "{rows:?}");
    // A second click unfolds it.
    b.click("#tree tr.tnode[data-path='request'] .sname");
    let rows = b.rows();
    assert_eq!(row(&rows, "request/db"), (20, false), "{rows:?}");
    assert_eq!(row(&rows, "request/auth"), (5, false), "{rows:?}");

    // "last 5 min": the files made no span since mmash started, so every
    // node is there with no calls, and the legend says how far back.
    b.click("#treewin button[data-s='300']");
    let calls = b.eval(
        "new Promise((ok, no) => { const t0 = Date.now(); (function poll() { \
           const r = document.querySelector(\"#tree tr.tnode[data-path='request']\"); \
           const span = document.getElementById('treespan').textContent; \
           if (r && span.includes('the last')) ok([+r.dataset.calls, span]); \
           else if (Date.now() - t0 > 20000) no(new Error('no window tree')); \
           else setTimeout(poll, 100); })(); })",
    );
    assert_eq!(calls[0], json!(0), "{calls}");
    assert_eq!(
        b.eval("document.querySelector('#treewin button.on').dataset.s"),
        json!("300")
    );
    // Back to the whole life.
    b.click("#treewin button[data-s='0']");
    b.eval("tick()");
    assert_eq!(row(&b.rows(), "request"), (10, false));
}

#[test]
fn a_file_of_more_spans_than_the_cap_gives_a_truncated_tree() {
    let dir = stats_dir();
    // 10 001 top-level spans, with small timers (a few buckets each).
    let mut schema = Schema::new("tracing");
    for i in 0..10_001 {
        schema.push(
            FieldDef::timer(&format!("span.busy{{path=s{i:05}}}"), Layout::timer()).layout(1, 8),
        );
    }
    let options = Options::new().dir(dir.path()).command("many");
    let mut file = StatsFile::create(&schema, &options).unwrap();
    let first: Timer = file.take("span.busy{path=s00000}").unwrap();
    first.record_ns(100);
    let m = Mmash::on(dir.path(), &[]);
    let t = m.json("/api/v1/tree");
    assert_eq!(t["truncated"], json!(true));
    assert_eq!(t["nodes"], json!(10_000));
    let nodes = t["trees"][0]["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 10_000);
    // The largest first; the one left out is the last by name.
    assert_eq!(nodes[0]["name"], json!("s00000"));
    assert_eq!(nodes[9_999]["name"], json!("s09999"));
}

/// The calls of top-level node `name` in an answer's tree of command `svc`.
fn svc_calls(t: &Json, name: &str) -> Option<u64> {
    let svc = t["trees"]
        .as_array()?
        .iter()
        .find(|x| x["command"] == json!("svc"))?;
    svc["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["name"] == json!(name))?["calls"]
        .as_u64()
}

/// Asks `path` until `done` holds for the answer (at most about 20 s:
/// mmash takes a reading when asked, and keeps one every 100 ms here).
fn until(m: &Mmash, path: &str, done: impl Fn(&Json) -> bool) -> Json {
    for _ in 0..200 {
        let t = m.json(path);
        if done(&t) {
            return t;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("{path}: never as wanted: {}", m.json(path));
}

#[test]
fn a_window_tree_holds_only_the_calls_since_the_window_began() {
    let dir = stats_dir();
    let mut schema = Schema::new("tracing");
    schema.push(FieldDef::timer("span.busy{path=request}", Layout::timer()).layout(12, 42));
    let options = Options::new().dir(dir.path()).command("svc");
    let mut file = StatsFile::create(&schema, &options).unwrap();
    let request: Timer = file.take("span.busy{path=request}").unwrap();
    for _ in 0..5 {
        request.record_ns(1000);
    }
    let m = Mmash::on(dir.path(), &["--sample-every", "100ms"]);
    // Once a reading is kept before the current one (window_s above 0;
    // until then the window is empty), the longest window starts at the
    // first kept one, taken after the first five calls: none is in it.
    let t = until(&m, "/api/v1/tree?window=300", |t| {
        t["window_s"].as_f64().is_some_and(|w| w > 0.0)
    });
    assert_eq!(svc_calls(&t, "request"), Some(0), "{t}");
    for _ in 0..3 {
        request.record_ns(2000);
    }
    let t = until(&m, "/api/v1/tree?window=300", |t| {
        svc_calls(t, "request") == Some(3)
    });
    let svc = &t["trees"][0];
    assert_eq!(svc["nodes"][0]["total_ns"], json!(6000), "{t}");
    // The whole life still has all eight.
    assert_eq!(svc_calls(&m.json("/api/v1/tree"), "request"), Some(8));
    assert!(m.json("/api/v1/tree").get("window_s").is_none());
    // Scoped like the rest: another command's window is empty.
    let other = m.json("/api/v1/tree?window=300&command=nope");
    assert_eq!(other["trees"], json!([]), "{other}");
    for bad in ["0", "301", "1.5", "5m", ""] {
        let r = m.get(&format!("/api/v1/tree?window={bad}"));
        assert_eq!(r.status, 400, "window={bad}: {}", r.body);
        assert!(r.body.contains("window="), "{}", r.body);
    }
}
