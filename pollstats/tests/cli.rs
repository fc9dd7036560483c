//! Runs the built `pollstats` against writer processes stepped by the
//! test: each step is a line to the writer, answered once it is done, then
//! a line to `pollstats --tick-on-stdin`, which takes one sample per line.
//! So every interval holds exactly the step before it, without sleeps.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use mmstats::{Counter, Gauge, Stats, Timer};
use serde_json::Value as Json;
use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_pollstats");
const READY: &str = "child-writer-ready";

/// What the child writer writes.
#[derive(Stats)]
#[stats(prefix = "step.", model = "step")]
struct StepStats {
    /// Incremented by `add N ...`.
    requests: Counter,
    /// Set by `busy N`.
    busy: Gauge,
    /// `add N K V` records K values of V ns.
    latency: Timer,
}

/// The child half: a writer that obeys lines on stdin and acks each.
///
/// - `add N K V`: requests += N, and K values of V ns into the timer;
/// - `busy N`: sets the gauge;
/// - `mv NAME`: renames its own file to NAME in its directory;
/// - `exit`: drops its stats (the file stays, dead) and exits.
#[test]
#[ignore = "run as a child process by the tests below"]
fn child_writer() {
    let Ok(dir) = std::env::var("POLLSTATS_TEST_DIR") else {
        return;
    };
    let dir = PathBuf::from(dir);
    let name = std::env::var("POLLSTATS_TEST_NAME").unwrap();
    let stats = StepStats::builder()
        .dir(&dir)
        .template(&format!("{name}.{{pid}}.{{tid}}.mmstats"))
        .open()
        .unwrap();
    let mut path = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("{name}.{}.", std::process::id()))
        })
        .unwrap();
    // The harness prints "test child_writer ... " before this, unterminated.
    println!("\n{READY}");
    std::io::stdout().flush().unwrap();
    for line in std::io::stdin().lock().lines() {
        let line = line.unwrap();
        let words: Vec<&str> = line.split_whitespace().collect();
        let num = |i: usize| words[i].parse::<u64>().unwrap();
        match words[0] {
            "add" => {
                stats.requests.add(num(1));
                for _ in 0..num(2) {
                    stats.latency.record_ns(num(3));
                }
            }
            "busy" => stats.busy.set(num(1) as i64),
            "mv" => {
                let to = dir.join(words[1]);
                fs::rename(&path, &to).unwrap();
                path = to;
            }
            "exit" => {
                drop(stats);
                println!("ack");
                return;
            }
            other => panic!("unknown command {other}"),
        }
        println!("ack");
        std::io::stdout().flush().unwrap();
    }
}

/// A writer process started from this test binary.
struct Writer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// What it counted while its file was visible.
    total: u64,
}

impl Writer {
    fn start(dir: &Path, name: &str) -> Writer {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "child_writer",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("POLLSTATS_TEST_DIR", dir)
            .env("POLLSTATS_TEST_NAME", name)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        while !line.contains(READY) {
            line.clear();
            assert!(
                stdout.read_line(&mut line).unwrap() > 0,
                "writer exited early"
            );
        }
        Writer {
            child,
            stdin,
            stdout,
            total: 0,
        }
    }

    /// Sends one command and waits for its ack.
    fn cmd(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap();
        let mut reply = String::new();
        loop {
            reply.clear();
            assert!(
                self.stdout.read_line(&mut reply).unwrap() > 0,
                "writer died on {line:?}"
            );
            if reply.trim() == "ack" {
                return;
            }
        }
    }

    fn add(&mut self, n: u64) {
        self.cmd(&format!("add {n} 0 0"));
        self.total += n;
    }

    fn exit(mut self) {
        self.cmd("exit");
        assert!(self.child.wait().unwrap().success());
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `pollstats --tick-on-stdin` with some arguments.
struct Poll {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Poll {
    fn start(args: &[&str], dir: &Path) -> Poll {
        let mut child = Command::new(BIN)
            .arg("--tick-on-stdin")
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

    /// The next JSON line (the first is taken at start, the others after
    /// a `tick`).
    fn row(&mut self) -> Json {
        let mut line = String::new();
        assert!(
            self.stdout.read_line(&mut line).unwrap() > 0,
            "pollstats ended: {}",
            self.finish()
        );
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
    }

    fn tick(&mut self) -> Json {
        writeln!(self.stdin.as_mut().unwrap()).unwrap();
        self.row()
    }

    /// Ends the run (end of input) and returns its stderr; it must exit 0.
    fn finish(&mut self) -> String {
        self.stdin = None;
        let mut err = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "pollstats: {status}\n{err}");
        err
    }
}

fn stats_dir() -> TempDir {
    tempfile::tempdir().unwrap()
}

/// A series' value as an exact non-negative integer.
fn count(row: &Json, key: &str) -> u64 {
    row["series"][key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not a non-negative integer in {row}"))
}

fn files(row: &Json) -> (u64, u64) {
    (
        row["files"]["alive"].as_u64().unwrap(),
        row["files"]["dead"].as_u64().unwrap(),
    )
}

#[test]
fn delta_rows_hold_exactly_each_steps_increase_and_latencies() {
    let dir = stats_dir();
    let mut w = Writer::start(dir.path(), "w");
    w.cmd("add 5 3 1000");
    let mut poll = Poll::start(&["--json", "--delta", "step."], dir.path());
    let first = poll.row();
    assert_eq!(count(&first, "step.requests"), 5, "{first}");
    assert_eq!(first["series"]["step.latency"]["count"], 3);
    for k in 1..=6u64 {
        let v = 10_000 * k;
        w.cmd(&format!("add {} {k} {v}", 10 * k));
        w.cmd(&format!("busy {k}"));
        let row = poll.tick();
        assert_eq!(count(&row, "step.requests"), 10 * k, "{row}");
        assert_eq!(count(&row, "step.busy"), k, "{row}");
        let lat = &row["series"]["step.latency"];
        assert_eq!(lat["count"], k, "{row}");
        assert_eq!(lat["sum"], k * v, "{row}");
        // Within half a bucket (1/64 wide) of the value recorded.
        let p50 = lat["p50"].as_u64().unwrap();
        assert!(p50.abs_diff(v) <= v / 128, "p50 {p50} for {v}");
        assert_eq!(files(&row), (1, 0));
    }
    // A step that records nothing is an interval of nothing.
    let row = poll.tick();
    assert_eq!(count(&row, "step.requests"), 0);
    assert_eq!(row["series"]["step.latency"]["count"], 0);
    assert_eq!(row["series"]["step.latency"]["p50"], Json::Null);
    assert_eq!(poll.finish(), "");
}

#[test]
fn churn_never_gives_a_negative_or_inflated_interval() {
    let dir = stats_dir();
    let mut a = Writer::start(dir.path(), "a");
    let mut b = Writer::start(dir.path(), "b");
    b.cmd("mv b.mmstats");
    a.add(10);
    b.add(20);
    let mut poll = Poll::start(&["--json", "--delta", "step.requests"], dir.path());
    let mut seen = 0;
    let mut check = |row: &Json, want: u64| {
        let got = count(row, "step.requests");
        assert_eq!(got, want, "{row}");
        seen += got;
    };
    check(&poll.row(), 30);

    a.add(3);
    b.add(4);
    check(&poll.tick(), 7);

    // a exits: its file stays, dead, and what it counted stays counted.
    let a_total = a.total;
    a.exit();
    b.add(2);
    let row = poll.tick();
    check(&row, 2);
    assert_eq!(files(&row), (1, 1));

    // c appears with counts of its own: all of them are in this interval.
    let mut c = Writer::start(dir.path(), "c");
    c.add(6);
    b.add(1);
    check(&poll.tick(), 7);

    // a's file is deleted: it takes nothing away.
    for f in fs::read_dir(dir.path()).unwrap() {
        let p = f.unwrap().path();
        if p.file_name().unwrap().to_string_lossy().starts_with("a.") {
            fs::remove_file(p).unwrap();
        }
    }
    let row = poll.tick();
    check(&row, 0);
    assert_eq!(files(&row), (2, 0));

    // d replaces b's file (same name, new inode): b vanished, d appeared.
    let mut d = Writer::start(dir.path(), "d");
    d.add(9);
    d.cmd("mv b.mmstats");
    c.add(1);
    check(&poll.tick(), 10);
    c.add(2);
    d.add(5);
    check(&poll.tick(), 7);

    assert_eq!(seen, a_total + b.total + c.total + d.total);
    assert_eq!(poll.finish(), "");
}

#[test]
fn hostile_files_are_warnings_and_the_rest_still_shows() {
    let dir = stats_dir();
    let mut a = Writer::start(dir.path(), "a");
    let mut b = Writer::start(dir.path(), "b");
    b.cmd("mv b.mmstats");
    a.add(1);
    b.add(1);
    fs::write(dir.path().join("garbage.mmstats"), vec![0x5a; 8192]).unwrap();
    fs::write(dir.path().join("short.mmstats"), b"MMSTATS\0").unwrap();
    let mut poll = Poll::start(&["--json", "--delta", "step.requests"], dir.path());
    assert_eq!(count(&poll.row(), "step.requests"), 2);
    a.add(4);
    assert_eq!(count(&poll.tick(), "step.requests"), 4);
    // b's file is replaced by garbage mid-run.
    let junk = dir.path().join(".junk");
    fs::write(&junk, vec![0xff; 4096]).unwrap();
    fs::rename(&junk, dir.path().join("b.mmstats")).unwrap();
    a.add(3);
    b.add(100);
    let row = poll.tick();
    assert_eq!(count(&row, "step.requests"), 3, "{row}");
    let err = poll.finish();
    for name in ["garbage.mmstats", "short.mmstats", "b.mmstats"] {
        assert!(
            err.lines()
                .any(|l| l.starts_with("pollstats: ") && l.contains(name)),
            "no warning naming {name}:\n{err}"
        );
    }
}

#[test]
fn grouping_and_aggregators_split_and_combine_writers() {
    let dir = stats_dir();
    let mut a = Writer::start(dir.path(), "a");
    let mut b = Writer::start(dir.path(), "b");
    a.cmd("busy 2");
    b.cmd("busy 5");
    let row = Poll::start(&["--json", "--aggr", "max", "step.busy"], dir.path()).row();
    assert_eq!(count(&row, "step.busy"), 5);
    let mut poll = Poll::start(
        &["--json", "--delta", "--by", "pid", "step.requests"],
        dir.path(),
    );
    poll.row();
    a.add(3);
    b.add(4);
    let row = poll.tick();
    let key = |w: &Writer| format!("step.requests{{pid={}}}", w.child.id());
    assert_eq!(count(&row, &key(&a)), 3, "{row}");
    assert_eq!(count(&row, &key(&b)), 4, "{row}");
    // b exits: its gauge leaves the default sum.
    b.exit();
    let row = Poll::start(&["--json", "step.busy"], dir.path()).row();
    assert_eq!(count(&row, "step.busy"), 2);
    let row = Poll::start(&["--json", "--include-dead", "step.busy"], dir.path()).row();
    assert_eq!(count(&row, "step.busy"), 7);
}

fn run(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env_remove("MMSTATS_DIR")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn bad_arguments_are_clear_errors() {
    for (interval, needle) in [
        ("0", "more than zero"),
        ("-1s", "more than zero"),
        ("soon", "not an interval"),
    ] {
        let o = run(&["-i", interval]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.contains(needle) && err.contains(interval), "{err}");
    }
    let o = run(&["--aggr", "median"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        err.contains("\"median\"") && err.contains("nonzero-avg"),
        "{err}"
    );

    let dir = stats_dir();
    let _w = Writer::start(dir.path(), "w");
    let o = run(&["step.reqests", dir.path().to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err.contains("\"step.reqests\" matches no label") && err.contains("step.requests"),
        "{err}"
    );

    let help = run(&["--help"]);
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("pollstats --by pid"));
}

#[test]
fn timed_ticks_print_count_rows_and_end() {
    let dir = stats_dir();
    let _w = Writer::start(dir.path(), "w");
    let o = run(&[
        "--json",
        "-i",
        "20ms",
        "-c",
        "4",
        dir.path().to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rows: Vec<Json> = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 4);
    for r in &rows[1..] {
        assert!(r["interval_s"].as_f64().unwrap() > 0.0);
        assert_eq!(r["series"]["step.requests"], 0.0);
    }
}

#[test]
fn a_closed_pipe_and_ctrl_c_end_it_quietly() {
    let dir = stats_dir();
    let _w = Writer::start(dir.path(), "w");
    for how in ["pipe", "SIGINT"] {
        let mut child = Command::new(BIN)
            .args(["-i", "5ms", dir.path().to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert!(!line.is_empty());
        if how == "pipe" {
            drop(out);
        } else {
            let pid = child.id().to_string();
            assert!(Command::new("kill")
                .args(["-INT", &pid])
                .status()
                .unwrap()
                .success());
            std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        }
        let o = child.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{how}: {:?}", o.status);
        assert_eq!(String::from_utf8_lossy(&o.stderr), "", "{how}");
    }
}

// ---- text mode, in a real terminal ----

/// A tmux server of its own, killed on drop.
struct Tmux {
    socket: String,
    sessions: std::cell::Cell<u32>,
}

impl Tmux {
    fn new() -> Tmux {
        let found = Command::new("tmux").arg("-V").output();
        assert!(
            found.is_ok_and(|o| o.status.success()),
            "tmux is needed for the text-mode tests (.ci/run installs it)"
        );
        Tmux {
            socket: format!(
                "pollstats-test-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            )
            .replace(['(', ')'], ""),
            sessions: std::cell::Cell::new(0),
        }
    }

    fn tmux(&self, args: &[&str]) -> String {
        let o = Command::new("tmux")
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    /// Runs `pollstats ARGS` in a `cols` x `rows` terminal and returns the
    /// whole screen and scroll-back once it has finished.
    fn run(&self, cols: u32, rows: u32, args: &[&str]) -> String {
        self.run_capturing(cols, rows, args, &["-S", "-"])
    }

    /// [`Tmux::run`], returning only what the screen shows at the end.
    fn screen(&self, cols: u32, rows: u32, args: &[&str]) -> String {
        self.run_capturing(cols, rows, args, &[])
    }

    fn run_capturing(&self, cols: u32, rows: u32, args: &[&str], history: &[&str]) -> String {
        let cmd = format!(
            "{BIN} {} ; echo pollstats-done; sleep 600",
            args.iter()
                .map(|a| format!("'{a}'"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        // A session per run: killing the last one would stop the server
        // under the next one.
        self.sessions.set(self.sessions.get() + 1);
        let name = format!("t{}", self.sessions.get());
        self.tmux(&[
            "new-session",
            "-d",
            "-s",
            &name,
            "-x",
            &cols.to_string(),
            "-y",
            &rows.to_string(),
            &cmd,
        ]);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut capture = vec!["capture-pane", "-p", "-J", "-t", &name];
            capture.extend_from_slice(history);
            let screen = self.tmux(&capture);
            if screen.contains("pollstats-done") {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "pollstats never finished:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

/// Where each whitespace-separated word of `line` ends.
fn word_ends(line: &str) -> Vec<usize> {
    let chars: Vec<char> = line.chars().collect();
    (0..chars.len())
        .filter(|&i| {
            !chars[i].is_whitespace() && chars.get(i + 1).is_none_or(|c| c.is_whitespace())
        })
        .collect()
}

#[test]
fn text_mode_in_a_terminal_aligns_repeats_its_header_and_falls_back_when_narrow() {
    let tmux = Tmux::new();
    let dir = stats_dir();
    let mut w = Writer::start(dir.path(), "w");
    w.cmd("add 12345 40 2000000");
    w.cmd("busy 3");
    let d = dir.path().to_str().unwrap();
    let screen = tmux.run(100, 12, &["-i", "10ms", "-c", "25", d]);
    let lines: Vec<&str> = screen.lines().collect();
    let headers: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].trim_start().starts_with("time"))
        .collect();
    // 25 rows on a 12-line screen: a header every 10 rows.
    assert_eq!(headers.len(), 3, "{screen}");
    assert!(
        lines[0].contains("labels step.*; first row: since each file started"),
        "{screen}"
    );
    let names = lines[headers[0]];
    assert!(lines[headers[0] - 1].contains("-latency-"), "{screen}");
    for (n, word) in ["time", "live/dead", "busy", "/s", "p50", "p99", "requests"]
        .iter()
        .enumerate()
    {
        assert_eq!(names.split_whitespace().nth(n), Some(*word), "{names}");
    }
    let ends = word_ends(names);
    let rows: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.len() > 2 && l.as_bytes()[2] == b':')
        .collect();
    assert_eq!(rows.len(), 25, "{screen}");
    for row in &rows {
        assert_eq!(word_ends(row), ends, "misaligned:\n{names}\n{row}");
    }
    // The first row holds totals since start; the timer in human units.
    let first: Vec<&str> = rows[0].split_whitespace().collect();
    assert_eq!(first[1], "1/0");
    assert_eq!(first[2], "3");
    assert!(first[4].ends_with("ms"), "{}", rows[0]);
    assert!(
        rows[1].split_whitespace().nth(6) == Some("0"),
        "{}",
        rows[1]
    );

    // Too narrow for the columns: one line per series, and a note why.
    let screen = tmux.run(40, 30, &["-i", "10ms", "-c", "2", d]);
    assert!(screen.contains("one line per series"), "{screen}");
    assert!(screen.contains("  step.requests"), "{screen}");
    assert!(screen.contains("  step.latency"), "{screen}");
    assert!(
        screen
            .lines()
            .filter(|l| !l.starts_with("pollstats:"))
            .all(|l| l.chars().count() <= 40),
        "a line wider than the terminal:\n{screen}"
    );
}

#[test]
fn the_tree_is_drawn_again_in_place_on_a_terminal() {
    let dir = TempDir::new().unwrap();
    let mut schema = mmstats::Schema::new("tracing");
    schema.push(mmstats::FieldDef::timer(
        "span.busy{path=request}",
        mmstats::Layout::timer(),
    ));
    let mut file =
        mmstats::StatsFile::create(&schema, &mmstats::Options::new().dir(dir.path())).unwrap();
    let t: Timer = file.take("span.busy{path=request}").unwrap();
    t.record_ns(1000);
    let tmux = Tmux::new();
    let d = dir.path().to_str().unwrap();
    // Three trees; the screen shows the last one alone, at its top.
    let screen = tmux.screen(100, 30, &["--tree", "-i", "50ms", "-c", "3", d]);
    assert_eq!(screen.matches("== command").count(), 1, "{screen}");
    assert_eq!(screen.matches("--- ").count(), 1, "{screen}");
    assert!(screen.starts_with("--- "), "drawn from the top:\n{screen}");
    assert!(screen.contains("| request"), "{screen}");
    assert!(
        screen.contains("interval"),
        "the last is an interval:\n{screen}"
    );
}
