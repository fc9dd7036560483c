//! The `check_mmash` binary against a real `mmash` process and real stats
//! files: exit codes 0/1/2/3, perfdata by the Monitoring Plugins grammar,
//! the token, malformed answers, the timeout, and `--dir`.
//!
//! The stats files are written by this test process itself through the
//! mmstats writer (a live writer). `mmash` is the binary built next to
//! `check_mmash` in the same target directory (`cargo test --workspace`
//! builds both; after `cargo test -p check_mmash` alone, build it with
//! `cargo build -p mmash`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use mmstats::{Counter, Gauge, Stats, Timer};

const BIN: &str = env!("CARGO_BIN_EXE_check_mmash");

#[derive(Stats)]
#[stats(prefix = "web.", model = "web")]
struct Web {
    #[stat(label = "status.2xx")]
    ok: Counter,
    in_flight: Gauge,
    request: Timer,
}

fn mmash_bin() -> PathBuf {
    let p = Path::new(BIN).with_file_name("mmash");
    assert!(
        p.is_file(),
        "{} is missing: build it with `cargo build -p mmash` (cargo test --workspace does)",
        p.display()
    );
    p
}

struct Mmash {
    child: Child,
    addr: SocketAddr,
}

impl Mmash {
    fn start(dir: &Path, extra: &[&str]) -> Mmash {
        let mut child = Command::new(mmash_bin())
            .args(["--listen", "127.0.0.1:0"])
            .arg(dir)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let addr = loop {
            let mut line = String::new();
            assert!(err.read_line(&mut line).unwrap() > 0, "mmash exited");
            if let Some(rest) = line.trim().strip_prefix("mmash: listening on http://") {
                break rest.trim_end_matches('/').parse().unwrap();
            }
        };
        // Keep draining its log so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in err.lines() {});
        Mmash { child, addr }
    }

    fn port(&self) -> String {
        self.addr.port().to_string()
    }
}

impl Drop for Mmash {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(args: &[&str]) -> (i32, String, Output) {
    let out = Command::new(BIN).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.code().unwrap(), stdout, out)
}

/// One perfdata item, as the Monitoring Plugins guidelines define it.
#[derive(Debug, PartialEq)]
struct Perf {
    label: String,
    value: f64,
    uom: String,
    warn: String,
    crit: String,
    min: Option<f64>,
    max: Option<f64>,
}

fn is_range(s: &str) -> bool {
    // [@][start:]end, start may be ~, end may be empty after a colon.
    let s = s.strip_prefix('@').unwrap_or(s);
    let num = |x: &str| x.parse::<f64>().is_ok_and(f64::is_finite);
    match s.split_once(':') {
        None => num(s),
        Some((a, b)) => (a == "~" || num(a)) && (b.is_empty() || num(b)),
    }
}

/// Parses the perfdata part of a plugin line by the guidelines' grammar:
/// `'label'=value[UOM];[warn];[crit];[min];[max]`, space separated, label
/// quoted with `''` for a quote, value `[-0-9.]`, UOM one of the
/// guidelines' units.
fn parse_perfdata(perf: &str) -> Result<Vec<Perf>, String> {
    let mut out = Vec::new();
    let mut rest = perf.trim();
    while !rest.is_empty() {
        let (label, after) = if let Some(r) = rest.strip_prefix('\'') {
            let mut label = String::new();
            let mut chars = r.char_indices();
            let end = loop {
                match chars.next() {
                    None => return Err(format!("unterminated label in {perf:?}")),
                    Some((i, '\'')) => {
                        if r[i + 1..].starts_with('\'') {
                            label.push('\'');
                            chars.next();
                        } else {
                            break i + 1;
                        }
                    }
                    Some((_, '=')) => return Err(format!("'=' in a label: {perf:?}")),
                    Some((_, c)) => label.push(c),
                }
            };
            (label, &r[end..])
        } else {
            let end = rest.find('=').ok_or(format!("no '=' in {rest:?}"))?;
            let label = &rest[..end];
            if label.contains([' ', '\'']) {
                return Err(format!("unquoted label with space or quote: {label:?}"));
            }
            (label.to_owned(), &rest[end..])
        };
        let after = after
            .strip_prefix('=')
            .ok_or(format!("no '=' after label {label:?}"))?;
        let item_end = after.find(' ').unwrap_or(after.len());
        let item = &after[..item_end];
        rest = after[item_end..].trim_start();
        let fields: Vec<&str> = item.split(';').collect();
        if fields.len() > 5 {
            return Err(format!("more than 5 fields: {item:?}"));
        }
        let v = fields[0];
        let num_end = v
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-'))
            .unwrap_or(v.len());
        let (num, uom) = v.split_at(num_end);
        if !num.starts_with(|c: char| c.is_ascii_digit() || c == '-') {
            return Err(format!("value {v:?} does not start with [-0-9]"));
        }
        let value: f64 = num.parse().map_err(|_| format!("value {num:?}"))?;
        if !["", "s", "ms", "us", "%", "B", "KB", "MB", "TB", "c"].contains(&uom) {
            return Err(format!("unit {uom:?} is not one of the guidelines'"));
        }
        let get = |i: usize| fields.get(i).copied().unwrap_or("");
        for (what, r) in [("warn", get(1)), ("crit", get(2))] {
            if !r.is_empty() && !is_range(r) {
                return Err(format!("{what} {r:?} is not a range"));
            }
        }
        let opt = |i: usize| -> Result<Option<f64>, String> {
            let s = get(i);
            if s.is_empty() {
                return Ok(None);
            }
            s.parse().map(Some).map_err(|_| format!("min/max {s:?}"))
        };
        out.push(Perf {
            label,
            value,
            uom: uom.to_owned(),
            warn: get(1).to_owned(),
            crit: get(2).to_owned(),
            min: opt(3)?,
            max: opt(4)?,
        });
    }
    Ok(out)
}

/// The line's state word, text and perfdata; asserts one line.
fn split(out: &str) -> (String, Vec<Perf>) {
    assert_eq!(out.lines().count(), 1, "one line: {out:?}");
    let line = out.trim_end();
    let (text, perf) = line.split_once(" | ").unwrap_or((line, ""));
    assert!(!text.contains('|'), "{line}");
    (
        text.to_owned(),
        parse_perfdata(perf).unwrap_or_else(|e| panic!("{e}: {line}")),
    )
}

#[test]
fn the_perfdata_parser_refuses_what_the_grammar_does() {
    assert!(parse_perfdata("'a b'=1c;2;3;0;").is_ok());
    assert!(parse_perfdata("x=1;@10:20;~:5;;").is_ok());
    assert!(parse_perfdata("'it''s'=1").is_ok());
    for bad in [
        "a b=1",
        "'x'=1xyz",
        "'x'=abc",
        "'x'=1;abc",
        "'x=1",
        "'x'=1;;;;;;",
    ] {
        assert!(parse_perfdata(bad).is_err(), "{bad}");
    }
}

#[test]
fn exit_codes_and_perfdata_over_mmash() {
    let dir = tempfile::tempdir().unwrap();
    let w = Web::builder()
        .dir(dir.path())
        .command("webw")
        .open()
        .unwrap();
    w.ok.add(10);
    w.in_flight.set(3);
    w.request.record(Duration::from_millis(250));
    let m = Mmash::start(dir.path(), &[]);
    let p = m.port();
    let base = ["-H", "127.0.0.1", "-p", p.as_str()];
    let check = |extra: &[&str]| {
        let mut args: Vec<&str> = base.to_vec();
        args.extend_from_slice(extra);
        run(&args)
    };
    for (w_, c_, code, word) in [
        ("20", "30", 0, "OK"),
        ("5", "30", 1, "WARNING"),
        ("5", "9", 2, "CRITICAL"),
        ("@10:20", "~:100", 1, "WARNING"),
    ] {
        let (got, out, _) = check(&["-l", "web.status.2xx", "-w", w_, "-c", c_]);
        assert_eq!(got, code, "{out}");
        let (text, perf) = split(&out);
        assert_eq!(
            text,
            format!(
                "MMSTATS {word} - web.status.2xx total 10{}",
                match word {
                    "WARNING" => format!(" (warn {w_})"),
                    "CRITICAL" => format!(" (crit {c_})"),
                    _ => String::new(),
                }
            )
        );
        assert_eq!(
            perf,
            vec![Perf {
                label: "web.status.2xx".into(),
                value: 10.0,
                uom: "c".into(),
                warn: w_.into(),
                crit: c_.into(),
                min: Some(0.0),
                max: None,
            }]
        );
    }
    // A timer in seconds, a gauge with no unit.
    let (got, out, _) = check(&["-l", "web.request", "--stat", "max", "-w", "0.2"]);
    assert_eq!(got, 1, "{out}");
    let (_, perf) = split(&out);
    assert_eq!(
        (perf[0].label.as_str(), perf[0].uom.as_str()),
        ("web.request_max", "s")
    );
    assert!((perf[0].value - 0.25).abs() < 0.25 * 0.02, "{out}");
    let (got, out, _) = check(&["-l", "web.in_flight", "-c", "2"]);
    assert_eq!(got, 2, "{out}");
    assert_eq!(split(&out).1[0].value, 3.0);
    // A rate: never judged over less than a quarter of the window, so the
    // first answer, over the file's age of seconds, is UNKNOWN for an hour.
    let (got, out, _) = check(&["-l", "web.status.2xx", "--rate", "1h", "-c", "0:"]);
    assert_eq!(got, 3, "{out}");
    assert!(
        out.contains("no earlier reading covers a quarter of the 1h asked"),
        "{out}"
    );

    // UNKNOWN, with a reason, and no perfdata.
    let unknown = |args: &[&str], needle: &str| {
        let (got, out, _) = run(args);
        assert_eq!(got, 3, "{args:?}: {out}");
        assert!(
            out.starts_with("MMSTATS UNKNOWN - ") && out.contains(needle),
            "{args:?}: {out}"
        );
        assert_eq!(out.lines().count(), 1, "{out}");
    };
    let mut args = base.to_vec();
    args.extend(["-l", "web.nope"]);
    unknown(&args, "no stats file has the label \"web.nope\"");
    let mut args = base.to_vec();
    args.extend(["-l", "web.request", "-w", "abc"]);
    unknown(&args, "bad range \"abc\"");
    let mut args = base.to_vec();
    args.extend(["-l", "web.request", "--window", "-5m", "--quantile", "0.9"]);
    unknown(&args, "must be more than 0");
    let mut args = base.to_vec();
    args.extend(["-l", "web.request", "--quantile", "2"]);
    unknown(&args, "between 0 and 1");
    // Unreachable: a port nothing listens on.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    unknown(
        &["-H", "127.0.0.1", "-p", &closed, "-l", "x"],
        "cannot reach mmash",
    );
    // A proxy in the environment is not used: the check goes to -H.
    let out = Command::new(BIN)
        .args(base)
        .args(["-l", "web.status.2xx", "-w", "20"])
        .env("ALL_PROXY", format!("http://127.0.0.1:{closed}"))
        .env("http_proxy", format!("http://127.0.0.1:{closed}"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    // Bad arguments are UNKNOWN too, not clap's 2.
    unknown(&["-l", "x", "--no-such-flag"], "bad arguments");
    unknown(&["-l", "x"], "bad arguments");
}

#[test]
fn token_malformed_answers_and_timeout_are_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let w = Web::builder()
        .dir(dir.path())
        .command("webw")
        .open()
        .unwrap();
    w.ok.add(1);
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "nope").unwrap();
    let m = Mmash::start(dir.path(), &["--token-file", token.to_str().unwrap()]);
    let p = m.port();
    let ask = |extra: &[&str]| {
        let mut args = vec!["-H", "127.0.0.1", "-p", p.as_str(), "-l", "web.status.2xx"];
        args.extend_from_slice(extra);
        run(&args)
    };
    let (got, out, _) = ask(&["--token-file", token.to_str().unwrap()]);
    assert_eq!(got, 0, "{out}");
    let (got, out, _) = ask(&[]);
    assert_eq!(got, 3, "{out}");
    assert!(
        out.contains("refused the token (HTTP 401); give it with --token-file"),
        "{out}"
    );
    let (got, out, _) = ask(&["--token-file", wrong.to_str().unwrap()]);
    assert_eq!(got, 3, "{out}");
    assert!(out.contains("refused the token (HTTP 401)"), "{out}");

    // A server that answers garbage, and one that never answers.
    let fake = |answer: Option<String>| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { break };
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                match answer {
                    Some(ref a) => {
                        let _ = s.write_all(a.as_bytes());
                    }
                    // Hold the connection open, say nothing.
                    None => std::thread::sleep(Duration::from_secs(30)),
                }
            }
        });
        port.to_string()
    };
    // A good answer in chunks is read whole.
    let measure =
        r#"{"measure":{"label":"x","what":"total","value":5,"uom":"c","min":0,"note":""}}"#;
    let (a, b) = measure.split_at(20);
    let chunked = format!(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x};ext=1\r\n{b}\r\n0\r\n\r\n",
        a.len(),
        b.len()
    );
    let port = fake(Some(chunked));
    let (got, out, _) = run(&["-H", "127.0.0.1", "-p", &port, "-l", "x", "-w", "4"]);
    assert_eq!(got, 1, "{out}");
    assert_eq!(split(&out).1[0].value, 5.0, "{out}");
    // A value for another label, or not the rate asked, is never judged.
    let plain = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{measure}",
        measure.len()
    );
    for args in [&["-l", "xy"][..], &["-l", "x", "--rate", "1m"]] {
        let port = fake(Some(plain.clone()));
        let mut all = vec!["-H", "127.0.0.1", "-p", &port, "-c", "100"];
        all.extend_from_slice(args);
        let (got, out, _) = run(&all);
        assert_eq!(got, 3, "{out}");
        assert!(out.contains("answered with \"x\" total"), "{out}");
    }
    let n = 2 << 20;
    let huge = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {n}\r\n\r\n{}",
        " ".repeat(n)
    );
    for (answer, needle) in [
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n{nope".to_owned(),
            "malformed JSON",
        ),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 90\r\n\r\n{}".to_owned(),
            "reading the response",
        ),
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_owned(),
            "reading the response",
        ),
        ("HTTP/1.1 999 x\r\n\r\n".to_owned(), "not an HTTP response"),
        (huge, "over 1048576 bytes"),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}".to_owned(),
            "no measure and no error",
        ),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 29\r\n\r\n{\"measure\":{\"label\":\"x\"}}    "
                .to_owned(),
            "the measure lacks a field",
        ),
        ("SSH-2.0-OpenSSH_9.2\r\n".to_owned(), "not an HTTP response"),
    ] {
        let port = fake(Some(answer));
        let (got, out, _) = run(&["-H", "127.0.0.1", "-p", &port, "-l", "x"]);
        assert_eq!(got, 3, "{out}");
        assert!(
            out.starts_with("MMSTATS UNKNOWN - ") && out.contains(needle),
            "{out}"
        );
    }
    let port = fake(None);
    let (got, out, _) = run(&["-H", "127.0.0.1", "-p", &port, "-l", "x", "-t", "1"]);
    assert_eq!(got, 3, "{out}");
    assert!(out.contains("timed out"), "{out}");
}

#[test]
fn dir_reads_the_files_without_a_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let (got, out, _) = run(&["--dir", d, "-l", "web.status.2xx"]);
    assert_eq!(got, 3, "{out}");
    assert!(out.contains("no stats files in"), "{out}");
    let w = Web::builder()
        .dir(dir.path())
        .command("webw")
        .open()
        .unwrap();
    w.ok.add(7);
    let (got, out, _) = run(&["--dir", d, "-l", "web.status.2xx", "-w", "5"]);
    assert_eq!(got, 1, "{out}");
    assert_eq!(split(&out).1[0].value, 7.0);
    // An empty -w or -c, as a Nagios command template passes it, is none.
    let (got, out, _) = run(&["--dir", d, "-l", "web.status.2xx", "-w", "", "-c", "5"]);
    assert_eq!(got, 2, "{out}");
    assert!(out.ends_with("=7c;;5;0;\n"), "{out}");
    let (got, out, _) = run(&["--dir", d, "-l", "web.status.2xx", "-w", "5", "-c", ""]);
    assert_eq!(got, 1, "{out}");
    // A glob, as --help says, is read too; one matching nothing is UNKNOWN.
    let all = format!("{d}/*");
    let (got, out, _) = run(&["--dir", &all, "-l", "web.status.2xx", "-w", "5"]);
    assert_eq!(got, 1, "{out}");
    assert_eq!(split(&out).1[0].value, 7.0);
    let none = format!("{d}/nothing-*");
    let (got, out, _) = run(&["--dir", &none, "-l", "web.status.2xx"]);
    assert_eq!(got, 3, "{out}");
    assert!(out.contains("no stats files in"), "{out}");
    // One live writer has the label: `-c 1:` is fine; none has another.
    let (got, out, _) = run(&[
        "--dir",
        d,
        "-l",
        "web.status.2xx",
        "--aggr",
        "count",
        "-c",
        "1:",
    ]);
    assert_eq!(got, 0, "{out}");
    let (got, out, _) = run(&[
        "--dir",
        d,
        "-l",
        "jobs.alive",
        "--aggr",
        "count",
        "-c",
        "1:",
    ]);
    assert_eq!(got, 2, "{out}");
    assert_eq!(split(&out).1[0].value, 0.0);
    // A rate over a window shorter than the timeout: read twice. The
    // writer adds 100 every 10 ms (10000/s) meanwhile.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = std::sync::Arc::clone(&stop);
    let adder = std::thread::spawn(move || {
        let start = std::time::Instant::now();
        let mut k = 1;
        // Relaxed: a stop flag, nothing published through it.
        while !s2.load(std::sync::atomic::Ordering::Relaxed) {
            if let Some(d) = (start + Duration::from_millis(10 * k))
                .checked_duration_since(std::time::Instant::now())
            {
                std::thread::sleep(d);
            }
            w.ok.add(100);
            k += 1;
        }
    });
    let (got, out, _) = run(&[
        "--dir",
        d,
        "-l",
        "web.status.2xx",
        "--rate",
        "1s",
        "-t",
        "5",
    ]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    adder.join().unwrap();
    assert_eq!(got, 0, "{out}");
    let rate = split(&out).1[0].value;
    // Tolerance 25%: a paced thread on a shared 2-core machine.
    assert!((7500.0..=12500.0).contains(&rate), "{out}");
    // A window the timeout cannot wait for.
    let (got, out, _) = run(&["--dir", d, "-l", "web.status.2xx", "--rate", "5m"]);
    assert_eq!(got, 3, "{out}");
    assert!(out.contains("not shorter than the -t timeout"), "{out}");
}

#[test]
fn help_and_version() {
    let (got, out, _) = run(&["-h"]);
    assert_eq!(got, 0);
    assert!(
        out.contains("Examples:") && out.contains("--quantile 0.99"),
        "{out}"
    );
    let (got, out, _) = run(&["-V"]);
    assert_eq!(got, 0);
    assert!(out.starts_with("check_mmash "), "{out}");
}

#[test]
fn a_failing_stdout_keeps_the_exit_code() {
    // /dev/full refuses every write: the state is still the exit code, for
    // bad arguments (3), for a value (2) and for --help (0).
    let full = || {
        std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let w = Web::builder()
        .dir(dir.path())
        .command("webw")
        .open()
        .unwrap();
    w.ok.add(7);
    let d = dir.path().to_str().unwrap();
    for (args, code) in [
        (&["-l", "x", "--no-such-flag"][..], 3),
        (&["--dir", d, "-l", "web.status.2xx", "-c", "5"], 2),
        (&["--help"], 0),
    ] {
        let status = Command::new(BIN)
            .args(args)
            .stdout(full())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(code), "{args:?}");
    }
}

/// `--user`, `--command`: only that owner's or command's files count, over
/// the files and over mmash alike; a user is resolved where the files are
/// read (mmash's host for a daemon), and an unknown one is UNKNOWN.
#[test]
fn scoped_checks_count_only_their_owners_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let w = Web::builder()
        .dir(dir.path())
        .command("webw")
        .open()
        .unwrap();
    w.ok.add(7);
    let me = mmstats::geteuid().to_string();
    let m = Mmash::start(dir.path(), &[]);
    let p = m.port();
    for source in [vec!["--dir", d], vec!["-H", "127.0.0.1", "-p", p.as_str()]] {
        let check = |extra: &[&str]| {
            let mut args: Vec<&str> = source.clone();
            args.extend_from_slice(&["-l", "web.status.2xx", "--aggr", "count", "-c", "1:"]);
            args.extend_from_slice(extra);
            run(&args)
        };
        let (got, out, _) = check(&["--user", &me]);
        assert_eq!(got, 0, "{source:?}: {out}");
        let (got, out, _) = check(&["--user", "4243"]);
        assert_eq!(got, 2, "{source:?}: {out}");
        let (got, out, _) = check(&["--user", &me, "--command", "other"]);
        assert_eq!(got, 2, "{source:?}: {out}");
        let (got, out, _) = check(&["--user", "no-such-user-here"]);
        assert_eq!(got, 3, "{source:?}: {out}");
        assert!(out.contains("no such user"), "{source:?}: {out}");
    }
    drop(w);
}
