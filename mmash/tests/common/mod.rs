//! Shared by mmash's integration tests: the daemon as a child process on
//! 127.0.0.1:0, writer child processes, and a small HTTP/1.1 client.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mmstats::{Counter, Gauge, Stats, Text, Timer};

pub const BIN: &str = env!("CARGO_BIN_EXE_mmash");

/// The model every writer child writes.
#[derive(Stats)]
#[stats(prefix = "web.", model = "web")]
pub struct Web {
    /// Responses with a 2xx status.
    #[stat(label = "status.2xx")]
    pub ok: Counter,
    /// Requests being served right now.
    pub in_flight: Gauge,
    /// Time spent serving a request.
    pub request: Timer,
    /// What the writer is doing.
    pub state: Text<32>,
}

/// Runs a writer if this test process was started as one: call at the top
/// of a `#[test] fn writer_child()`. Reads commands from stdin, one a line:
/// `add N`, `gauge N`, `time NS`, `pace N PER_MS MS` (add N every PER_MS
/// milliseconds for MS milliseconds); answers each with `ok COUNT`. Exits
/// (closing the file) at end of input.
pub fn writer_main() {
    let Ok(dir) = std::env::var("MMASH_TEST_WRITER") else {
        return;
    };
    let command = std::env::var("MMASH_TEST_COMMAND").unwrap_or_else(|_| "webw".into());
    let w = Web::builder()
        .dir(&dir)
        .command(&command)
        .open()
        .expect("open writer");
    w.state.set("running");
    let mut total = 0u64;
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    writeln!(out, "ready {}", std::process::id()).unwrap();
    out.flush().unwrap();
    for line in stdin.lock().lines() {
        let line = line.unwrap();
        let parts: Vec<&str> = line.split_whitespace().collect();
        match parts.as_slice() {
            ["add", n] => {
                let n: u64 = n.parse().unwrap();
                w.ok.add(n);
                total += n;
            }
            ["gauge", n] => w.in_flight.set(n.parse().unwrap()),
            ["time", ns] => w.request.record(Duration::from_nanos(ns.parse().unwrap())),
            ["pace", n, per, ms] => {
                let (n, per, ms): (u64, u64, u64) = (
                    n.parse().unwrap(),
                    per.parse().unwrap(),
                    ms.parse().unwrap(),
                );
                let start = std::time::Instant::now();
                let mut k = 1;
                while start.elapsed() < Duration::from_millis(ms) {
                    let due = start + Duration::from_millis(per * k);
                    if let Some(d) = due.checked_duration_since(std::time::Instant::now()) {
                        std::thread::sleep(d);
                    }
                    w.ok.add(n);
                    total += n;
                    k += 1;
                }
            }
            _ => panic!("unknown writer command {line:?}"),
        }
        writeln!(out, "ok {total}").unwrap();
        out.flush().unwrap();
    }
    drop(w);
    std::process::exit(0);
}

/// A writer child process.
pub struct Writer {
    pub child: Child,
    pub pid: u32,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Writer {
    /// Starts a writer in `dir` (it runs this test binary's `writer_child`).
    pub fn start(dir: &Path) -> Writer {
        Writer::start_as(dir, "webw")
    }

    /// Starts a writer with a command name.
    pub fn start_as(dir: &Path, command: &str) -> Writer {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["writer_child", "--exact", "--nocapture", "--test-threads=1"])
            .env("MMASH_TEST_WRITER", dir)
            .env("MMASH_TEST_COMMAND", command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn writer");
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let pid = loop {
            let mut line = String::new();
            assert!(stdout.read_line(&mut line).unwrap() > 0, "writer died");
            // libtest may print "test writer_child ... " before it.
            if let Some((_, p)) = line.trim().split_once("ready ") {
                break p.parse().unwrap();
            }
        };
        Writer {
            child,
            pid,
            stdin,
            stdout,
        }
    }

    /// Sends one command and waits for its answer; returns the total added.
    pub fn send(&mut self, cmd: &str) -> u64 {
        self.begin(cmd);
        self.answer()
    }

    /// Sends one command without waiting for its answer (a `pace` that
    /// runs while the test checks).
    pub fn begin(&mut self, cmd: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{cmd}").unwrap();
        stdin.flush().unwrap();
    }

    /// Waits for the answer to the command sent with [`Writer::begin`];
    /// returns the total added.
    pub fn answer(&mut self) -> u64 {
        loop {
            let mut line = String::new();
            assert!(self.stdout.read_line(&mut line).unwrap() > 0, "writer died");
            if let Some(n) = line.trim().strip_prefix("ok ") {
                return n.parse().unwrap();
            }
        }
    }

    /// Ends the writer cleanly (it marks its file exited).
    pub fn quit(mut self) {
        drop(self.stdin.take());
        assert!(self.child.wait().unwrap().success());
    }

    /// Kills the writer with SIGKILL.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A private stats directory (mode 0700 from tempfile).
pub fn stats_dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// A running mmash.
pub struct Mmash {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: Arc<Mutex<String>>,
}

impl Mmash {
    /// Starts mmash on 127.0.0.1:0 with `args` and waits for its address.
    pub fn start(args: &[&str]) -> Mmash {
        Mmash::start_bin(Path::new(BIN), args)
    }

    /// [`Mmash::start`] with the mmash binary at `bin`.
    pub fn start_bin(bin: &Path, args: &[&str]) -> Mmash {
        let mut child = Command::new(bin)
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mmash");
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut before = String::new();
        let addr = loop {
            let mut line = String::new();
            assert!(
                err.read_line(&mut line).unwrap() > 0,
                "mmash exited: {before}"
            );
            if let Some(rest) = line.trim().strip_prefix("mmash: listening on http://") {
                break rest.trim_end_matches('/').parse().unwrap();
            }
            before.push_str(&line);
        };
        let log = Arc::new(Mutex::new(before));
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in err.lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        Mmash { child, addr, log }
    }

    /// Starts mmash reading `dir`.
    pub fn on(dir: &Path, args: &[&str]) -> Mmash {
        let mut all = vec![dir.to_str().unwrap()];
        all.extend_from_slice(args);
        Mmash::start(&all)
    }

    /// `GET path` on a new connection.
    pub fn get(&self, path: &str) -> Response {
        request(
            self.addr,
            &format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
        )
    }

    /// `GET path` and the JSON body, asserting 200.
    pub fn json(&self, path: &str) -> serde_json::Value {
        let r = self.get(path);
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{path}: {e}: {}", r.body))
    }

    /// Whether the process still runs.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Resident memory in KiB.
    pub fn rss_kib(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        s.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
}

impl Drop for Mmash {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

/// Sends raw request bytes on a new connection and reads to the end.
pub fn request(addr: SocketAddr, raw: &str) -> Response {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(raw.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    parse(&buf)
}

fn parse(buf: &[u8]) -> Response {
    let text = String::from_utf8_lossy(buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"));
    Response {
        status,
        headers: head.to_owned(),
        body: body.to_owned(),
    }
}

/// A kept-alive connection: requests one after another.
pub struct KeepAlive {
    reader: BufReader<TcpStream>,
    stream: TcpStream,
}

impl KeepAlive {
    pub fn connect(addr: SocketAddr) -> KeepAlive {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        KeepAlive {
            reader: BufReader::new(stream.try_clone().unwrap()),
            stream,
        }
    }

    /// `GET path`: status and body.
    pub fn get(&mut self, path: &str) -> (u16, Vec<u8>) {
        write!(self.stream, "GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let mut status = 0;
        let mut len = 0usize;
        let mut first = true;
        loop {
            let mut line = String::new();
            assert!(
                self.reader.read_line(&mut line).unwrap() > 0,
                "connection closed"
            );
            let line = line.trim_end();
            if first {
                status = line.split_whitespace().nth(1).unwrap().parse().unwrap();
                first = false;
            } else if line.is_empty() {
                break;
            } else if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap();
                }
            }
        }
        let mut body = vec![0; len];
        self.reader.read_exact(&mut body).unwrap();
        (status, body)
    }
}

/// Counter samples of a /metrics page: `name{labels}` to value.
pub fn counters(page: &str) -> Vec<(String, f64)> {
    let mut counters = std::collections::HashSet::new();
    for l in page.lines() {
        if let Some(rest) = l.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            let (name, ty) = (it.next().unwrap(), it.next().unwrap());
            if ty == "counter" {
                counters.insert(name.to_owned());
            } else if ty == "histogram" {
                for s in ["_bucket", "_count", "_sum"] {
                    counters.insert(format!("{name}{s}"));
                }
            }
        }
    }
    page.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let name = series.split('{').next()?;
            counters
                .contains(name)
                .then(|| (series.to_owned(), value.parse().unwrap()))
        })
        .collect()
}

/// A free port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Path of a tool that CI installs; panics with how to get it if missing.
pub fn tool(name: &str) -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("{name} is not installed: `apt-get install -y prometheus chromium` (.ci/run does)");
}

/// `promtool check metrics` exits 0 and prints nothing (no lint warnings).
pub fn promtool_clean(page: &str) {
    let mut child = Command::new(tool("promtool"))
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
