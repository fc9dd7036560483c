//! Runs the built `slurpstats` against real stats files written with the
//! mmstats library in temporary directories.

use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use mmstats::{Constant, Counter, FieldDef, Gauge, GaugeF64, Histogram, Stats, Text, Timer};
use serde_json::{json, Value as Json};
use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_slurpstats");

/// A model whose fields are declared out of label order.
#[derive(Stats)]
#[stats(model = "mixed")]
struct Mixed {
    /// Zeta counter.
    zeta: Counter,
    /// A gauge with a long label.
    #[stat(label = "a.much.longer.label")]
    long: Gauge,
    /// Load estimate.
    load: GaugeF64,
    /// What the thread does.
    state: Text<32>,
    /// Version of the writer.
    version: Constant,
    /// A counter at its largest value.
    big: Counter,
    /// Time per request.
    request: Timer,
    /// Response sizes.
    #[stat(unit = "bytes")]
    size: Histogram,
    /// Never recorded.
    idle: Histogram,
}

/// Values that need care: non-finite floats, text that will be damaged.
#[derive(Stats)]
#[stats(model = "odd")]
struct Odd {
    nan: GaugeF64,
    inf: GaugeF64,
    broken: Text<32>,
}

/// A temporary stats directory (mode 0700, as the writer requires).
fn stats_dir() -> TempDir {
    tempfile::tempdir().unwrap()
}

/// A template for a file that `settle_name` then renames to `NAME.mmstats`
/// (templates must name the pid and thread; tests want fixed names).
fn temp_template(name: &str) -> String {
    format!("{name}.pending-{{pid}}-{{tid}}.mmstats")
}

/// Renames the file made with `temp_template(name)` to `NAME.mmstats`. A
/// live stats file may be renamed: its writer's lock is on the inode.
fn settle_name(dir: &Path, name: &str) {
    let prefix = format!("{name}.pending-");
    let made: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&prefix)
        })
        .collect();
    assert_eq!(made.len(), 1, "{made:?}");
    fs::rename(&made[0], dir.join(format!("{name}.mmstats"))).unwrap();
}

/// Opens a `Mixed` as `NAME.mmstats` in `dir` and sets known values.
fn mixed(dir: &Path, name: &str) -> Mixed {
    let m = Mixed::builder()
        .dir(dir)
        .template(&temp_template(name))
        .open()
        .unwrap();
    settle_name(dir, name);
    m.zeta.add(7);
    m.long.set(-42);
    m.load.set(2.5);
    m.state.set("serving \"x\"");
    m.version.set("1.2.3");
    m.big.add(u64::MAX);
    for ns in 1..=100 {
        m.request.record_ns(ns);
    }
    for _ in 0..3 {
        m.size.record(1000);
    }
    assert_eq!(m.idle.count(), 0);
    m
}

fn slurp<S: AsRef<OsStr>>(args: &[S]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("MMSTATS_DIR")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

fn json_of(o: &Output) -> Vec<Json> {
    match serde_json::from_slice(&o.stdout) {
        Ok(Json::Array(files)) => files,
        other => panic!("not a JSON array: {other:?}\n{}", stdout(o)),
    }
}

fn path_of(dir: &TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

/// This thread's kernel id, as the writer records it.
fn this_tid() -> u32 {
    let link = fs::read_link("/proc/thread-self").unwrap();
    link.file_name().unwrap().to_str().unwrap().parse().unwrap()
}

/// The command name the writer records: our argv[0]'s file name.
fn this_command() -> String {
    let arg0 = std::env::args_os().next().unwrap();
    Path::new(&arg0)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// Field lines of the text output of a single file: (label, value).
fn field_lines(text: &str) -> Vec<&str> {
    text.lines().skip(1).collect()
}

#[test]
fn text_lists_fields_sorted_and_aligned() {
    let dir = stats_dir();
    let _m = mixed(dir.path(), "a");
    let out = slurp(&[dir.path()]);
    assert_eq!(stderr(&out), "");
    assert!(out.status.success());
    let text = stdout(&out);
    let path = path_of(&dir, "a.mmstats");
    let header = text.lines().next().unwrap();
    assert!(
        header.starts_with(&format!(
            "{}: pid {}, tid {}, command {:?}, model \"mixed\", alive, age ",
            path.display(),
            std::process::id(),
            this_tid(),
            this_command()
        )),
        "{header}"
    );
    assert!(header.ends_with(", version 1.2"), "{header}");
    assert_eq!(
        field_lines(&text),
        [
            "  a.much.longer.label  -42",
            "  big                  18446744073709551615",
            "  idle                 count=0",
            "  load                 2.5",
            "  request              count=100 mean=50.5ns p50=50ns p99=99ns p99.9=100ns max=100ns",
            "  size                 count=3 mean=1000 p50=1003 p99=1003 p99.9=1003 max=1007 bytes",
            "  state                \"serving \\\"x\\\"\"",
            "  version              \"1.2.3\"",
            "  zeta                 7",
        ]
    );
}

#[test]
fn text_scales_timers_to_human_units() {
    /// One timer.
    #[derive(Stats)]
    struct Slow {
        t: Timer,
    }
    let dir = stats_dir();
    let s = Slow::builder()
        .dir(dir.path())
        .template(&temp_template("slow"))
        .open()
        .unwrap();
    settle_name(dir.path(), "slow");
    // 98 values of 1µs, one of 2ms, one of 3s: p50 in µs, p99 in ms,
    // p99.9 and max in s; each shown as its bucket's midpoint or bound.
    for _ in 0..98 {
        s.t.record_ns(1_000);
    }
    s.t.record_ns(2_000_000);
    s.t.record_ns(3_000_000_000);
    let out = slurp(&[dir.path()]);
    assert_eq!(
        field_lines(&stdout(&out)),
        ["  t  count=100 mean=30ms p50=1µs p99=2.01ms p99.9=3s max=3.02s"]
    );
}

#[test]
fn text_shows_liveness_alive_exited_and_did_not_close() {
    let dir = stats_dir();
    let live = mixed(dir.path(), "live");
    // A copy of a live file: marked active, but nobody holds its lock, as
    // when a writer is killed without closing.
    fs::copy(
        path_of(&dir, "live.mmstats"),
        path_of(&dir, "crashed.mmstats"),
    )
    .unwrap();
    drop(mixed(dir.path(), "gone"));
    // Both name a lock file that does not exist, as a dead process's would
    // (this process's own lock is held, spec §2.4).
    for name in ["crashed.mmstats", "gone.mmstats"] {
        let path = path_of(&dir, name);
        let mut bytes = fs::read(&path).unwrap();
        mmstats::format::raw::put_u64(&mut bytes, mmstats::format::raw::H_LOCK_TOKEN, 1);
        fs::write(&path, bytes).unwrap();
    }
    let out = slurp(&[dir.path()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let header = |name: &str| {
        let prefix = format!("{}: ", path_of(&dir, name).display());
        text.lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no header for {name} in\n{text}"))
            .to_owned()
    };
    assert!(header("live.mmstats").contains(", alive, "));
    assert!(header("gone.mmstats").contains(", dead (exited), "));
    assert!(header("crashed.mmstats").contains(", dead (did not close), "));
    // Files come in discover() order, set apart by blank lines.
    let headers: Vec<&str> = text.lines().filter(|l| l.contains(": pid ")).collect();
    assert_eq!(headers.len(), 3);
    assert!(headers[0].contains("crashed.mmstats"));
    assert!(headers[1].contains("gone.mmstats"));
    assert!(headers[2].contains("live.mmstats"));
    assert_eq!(text.matches("\n\n").count(), 2);

    let out = slurp(&[OsStr::new("--json"), dir.path().as_os_str()]);
    let files = json_of(&out);
    let by_name = |name: &str| {
        let p = path_of(&dir, name).display().to_string();
        files
            .iter()
            .find(|f| f["file"] == json!(p))
            .unwrap()
            .clone()
    };
    assert_eq!(by_name("live.mmstats")["alive"], json!(true));
    assert_eq!(by_name("live.mmstats")["state"], json!("active"));
    assert_eq!(by_name("gone.mmstats")["alive"], json!(false));
    assert_eq!(by_name("gone.mmstats")["state"], json!("exited"));
    assert_eq!(by_name("crashed.mmstats")["alive"], json!(false));
    assert_eq!(by_name("crashed.mmstats")["state"], json!("active"));
    drop(live);
}

#[test]
fn json_has_file_facts_and_exact_values() {
    let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let dir = stats_dir();
    let _m = mixed(dir.path(), "a");
    let after = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let out = slurp(&[OsStr::new("--json"), dir.path().as_os_str()]);
    assert_eq!(stderr(&out), "");
    assert!(out.status.success());
    // The u64 survives exactly in the raw text, never through an f64.
    assert!(stdout(&out).contains(r#""big":18446744073709551615"#));
    let files = json_of(&out);
    assert_eq!(files.len(), 1);
    let f = &files[0];
    assert_eq!(
        f["file"],
        json!(path_of(&dir, "a.mmstats").display().to_string())
    );
    assert_eq!(f["pid"], json!(std::process::id()));
    assert_eq!(f["tid"], json!(this_tid()));
    assert_eq!(f["command"], json!(this_command()));
    assert_eq!(f["model"], json!("mixed"));
    assert_eq!(f["alive"], json!(true));
    assert_eq!(f["state"], json!("active"));
    assert_eq!(f["version"], json!("1.2"));
    assert_eq!(f["fallbacks"], json!(0));
    let created = u128::from(f["created_unix_ns"].as_u64().unwrap());
    assert!(before.as_nanos() <= created && created <= after.as_nanos());

    let stats = f["stats"].as_object().unwrap();
    assert_eq!(stats["big"].as_u64(), Some(u64::MAX));
    assert_eq!(stats["zeta"], json!(7));
    assert_eq!(stats["a.much.longer.label"], json!(-42));
    assert_eq!(stats["load"], json!(2.5));
    assert_eq!(stats["state"], json!("serving \"x\""));
    assert_eq!(stats["version"], json!("1.2.3"));
    let labels: Vec<&String> = stats.keys().collect();
    let mut sorted = labels.clone();
    sorted.sort();
    assert_eq!(labels, sorted);
    assert_eq!(labels.len(), 9);

    let meta = &f["fields"];
    assert_eq!(
        meta["request"],
        json!({"kind": "timer", "unit": "ns", "help": "Time per request.", "static_labels": {}})
    );
    assert_eq!(
        meta["size"],
        json!({"kind": "histogram", "unit": "bytes", "help": "Response sizes.", "static_labels": {}})
    );
    assert_eq!(meta["zeta"]["kind"], json!("counter"));
    assert_eq!(meta["a.much.longer.label"]["kind"], json!("gauge"));
    assert_eq!(meta["load"]["kind"], json!("gauge_f64"));
    assert_eq!(meta["state"]["kind"], json!("text"));
    assert_eq!(meta["version"]["kind"], json!("constant"));
}

#[test]
fn json_histograms_have_exactly_the_specified_keys() {
    let dir = stats_dir();
    let _m = mixed(dir.path(), "a");
    let out = slurp(&[OsStr::new("--json"), dir.path().as_os_str()]);
    let files = json_of(&out);
    let stats = &files[0]["stats"];
    let keys = [
        "buckets", "count", "max", "mean", "min", "p50", "p75", "p90", "p95", "p99", "p999", "sum",
    ];
    for label in ["request", "size", "idle"] {
        let mut got: Vec<&str> = stats[label]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        got.sort();
        assert_eq!(got, keys, "{label}");
    }
    // Values 1..=100 ns: each in a bucket of its own, so exact.
    let buckets: Vec<Json> = (1..=100u64).map(|v| json!([v, v, 1])).collect();
    assert_eq!(
        stats["request"],
        json!({
            "count": 100, "sum": 5050, "mean": 50.5, "min": 1, "max": 100,
            "p50": 50, "p75": 75, "p90": 90, "p95": 95, "p99": 99, "p999": 100,
            "buckets": buckets,
        })
    );
    // 1000 three times: bucket [1000, 1007], quantiles at its midpoint.
    assert_eq!(
        stats["size"],
        json!({
            "count": 3, "sum": 3000, "mean": 1000.0, "min": 1000, "max": 1007,
            "p50": 1003, "p75": 1003, "p90": 1003, "p95": 1003, "p99": 1003, "p999": 1003,
            "buckets": [[1000, 1007, 3]],
        })
    );
    assert_eq!(
        stats["idle"],
        json!({
            "count": 0, "sum": 0, "mean": null, "min": null, "max": null,
            "p50": null, "p75": null, "p90": null, "p95": null, "p99": null, "p999": null,
            "buckets": [],
        })
    );
}

#[test]
fn non_finite_and_unavailable_values() {
    let dir = stats_dir();
    let o = Odd::builder()
        .dir(dir.path())
        .template(&temp_template("odd"))
        .open()
        .unwrap();
    settle_name(dir.path(), "odd");
    o.nan.set(f64::NAN);
    o.inf.set(f64::INFINITY);
    o.broken.set("MARKER-FOR-BROKEN-TEXT");
    // Damage the text's bytes in a copy: invalid UTF-8 reads as unavailable.
    let mut bytes = fs::read(path_of(&dir, "odd.mmstats")).unwrap();
    let marker = b"MARKER-FOR-BROKEN-TEXT";
    let at: Vec<usize> = bytes
        .windows(marker.len())
        .enumerate()
        .filter(|(_, w)| w == marker)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(at.len(), 1);
    bytes[at[0]] = 0xff;
    let damaged = stats_dir();
    fs::write(path_of(&damaged, "odd.mmstats"), bytes).unwrap();

    let out = slurp(&[damaged.path()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = field_lines(&stdout(&out)).join("\n");
    assert!(
        lines.contains("  broken  <unavailable: invalid UTF-8"),
        "{lines}"
    );
    assert!(lines.contains("  inf     inf\n"), "{lines}");
    assert!(lines.contains("  nan     NaN"), "{lines}");

    let out = slurp(&[OsStr::new("--json"), damaged.path().as_os_str()]);
    let stats = &json_of(&out)[0]["stats"];
    assert_eq!(stats["broken"], Json::Null);
    assert_eq!(stats["nan"], Json::Null);
    assert_eq!(stats["inf"], Json::Null);
    assert_eq!(stats.as_object().unwrap().len(), 3);
}

#[test]
fn bad_files_warn_and_the_rest_is_printed() {
    let dir = stats_dir();
    let _m = mixed(dir.path(), "good");
    // Longer than a header, so it is the magic number that gives it away.
    fs::write(path_of(&dir, "x.mmstats"), "not a stats file ".repeat(256)).unwrap();
    fs::write(path_of(&dir, "y.mmstats"), b"").unwrap();
    let garbage = path_of(&dir, "x.mmstats").display().to_string();
    let empty = path_of(&dir, "y.mmstats").display().to_string();

    let out = slurp(&[dir.path()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let warnings: Vec<&str> = err.lines().collect();
    assert_eq!(warnings.len(), 2, "{err}");
    assert!(
        warnings[0].starts_with(&format!(
            "slurpstats: {garbage}: not a valid stats file: bad magic"
        )),
        "{err}"
    );
    assert!(
        warnings[1].starts_with(&format!(
            "slurpstats: {empty}: not a valid stats file: file is shorter than the"
        )),
        "{err}"
    );
    let text = stdout(&out);
    assert!(text.starts_with(&format!(
        "{}: pid ",
        path_of(&dir, "good.mmstats").display()
    )));
    assert!(text.contains("  zeta                 7\n"));

    let out = slurp(&[OsStr::new("--json"), dir.path().as_os_str()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out).lines().count(), 2);
    let files = json_of(&out);
    assert_eq!(files.len(), 1);
    assert_eq!(files[0]["stats"]["zeta"], json!(7));
}

#[test]
fn missing_path_warns_and_exits_1() {
    let dir = stats_dir();
    let _m = mixed(dir.path(), "a");
    let missing = path_of(&dir, "nope.mmstats");
    let out = slurp(&[dir.path(), &missing]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!("slurpstats: {}: ", missing.display())),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1);
    assert!(stdout(&out).contains("  zeta  "));
}

#[test]
fn glob_selects_files() {
    let dir = stats_dir();
    let _a = mixed(dir.path(), "alpha");
    let _b = mixed(dir.path(), "beta");
    let pattern = dir.path().join("al*.mmstats");
    let out = slurp(&[OsStr::new("--json"), pattern.as_os_str()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let files = json_of(&out);
    assert_eq!(files.len(), 1);
    assert_eq!(
        files[0]["file"],
        json!(path_of(&dir, "alpha.mmstats").display().to_string())
    );
    // A pattern that matches nothing is a failed path.
    let out = slurp(&[dir.path().join("zz*.mmstats")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("zz*.mmstats"));
}

#[test]
fn default_directory_comes_from_mmstats_dir() {
    let dir = stats_dir();
    let _a = mixed(dir.path(), "a");
    let _b = mixed(dir.path(), "b");
    let out = Command::new(BIN)
        .arg("--json")
        .env("MMSTATS_DIR", dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stderr(&out), "");
    let files: Vec<Json> = json_of(&out).iter().map(|f| f["file"].clone()).collect();
    assert_eq!(
        files,
        [
            json!(path_of(&dir, "a.mmstats").display().to_string()),
            json!(path_of(&dir, "b.mmstats").display().to_string()),
        ]
    );

    // An empty default directory: nothing to print, a hint, still success.
    let empty = stats_dir();
    let out = Command::new(BIN)
        .arg("--json")
        .env("MMSTATS_DIR", empty.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(stdout(&out), "[]\n");
    assert!(stderr(&out).contains("no stats files"));
}

/// A file whose text output is far bigger than any pipe buffer (1 MiB is
/// the largest Linux allows an unprivileged process by default).
fn wide_file(dir: &Path) -> mmstats::StatsFile {
    let mut schema = mmstats::Schema::new("wide");
    for i in 0..40_000 {
        schema.push(FieldDef::counter(&format!("wide.counter.number.{i:06}")));
    }
    let options = mmstats::Options::new()
        .dir(dir)
        .template(&temp_template("wide"));
    let file = mmstats::StatsFile::create(&schema, &options).unwrap();
    settle_name(dir, "wide");
    file
}

#[test]
fn closed_stdout_exits_quietly() {
    let dir = stats_dir();
    let _wide = wide_file(dir.path());
    // The whole output really is bigger than a pipe can hold.
    let full = slurp(&[dir.path()]);
    assert!(full.status.success());
    assert!(full.stdout.len() > 1 << 20, "{}", full.stdout.len());

    for json in [false, true] {
        let mut cmd = Command::new(BIN);
        if json {
            cmd.arg("--json");
        }
        let mut child = cmd
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut start = [0u8; 64];
        child.stdout.take().unwrap().read_exact(&mut start).unwrap();
        // The read end is closed here, with most of the output unwritten.
        let out = child.wait_with_output().unwrap();
        assert_eq!(stderr(&out), "", "json={json}");
        assert_eq!(out.status.code(), Some(0), "json={json}");
    }
}

#[test]
fn piped_into_head_exits_quietly() {
    let dir = stats_dir();
    let _wide = wide_file(dir.path());
    let err_file = path_of(&dir, "stderr.txt");
    let status_file = path_of(&dir, "status.txt");
    let out = Command::new("sh")
        .arg("-c")
        .arg(r#"{ "$0" "$1" 2>"$2"; echo $? >"$3"; } | head -1"#)
        .arg(BIN)
        .arg(dir.path())
        .arg(&err_file)
        .arg(&status_file)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(stdout(&out).lines().count(), 1);
    assert!(stdout(&out).contains("wide.mmstats: pid "));
    assert_eq!(fs::read_to_string(&err_file).unwrap(), "");
    assert_eq!(fs::read_to_string(&status_file).unwrap(), "0\n");
}

#[test]
fn help_explains_paths_default_dirs_and_json() {
    let out = slurp(&["--help"]);
    assert!(out.status.success());
    let help = stdout(&out);
    for needle in [
        "MMSTATS_DIR",
        "/dev/shm/mmstats-*",
        "glob",
        "--json",
        "\"stats\"",
        "\"fields\"",
        "\"p999\"",
        "\"buckets\"",
    ] {
        assert!(help.contains(needle), "--help lacks {needle:?}:\n{help}");
    }
}

#[test]
fn usage_error_exits_2() {
    let out = slurp(&["--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--no-such-flag"));
    assert!(out.stdout.is_empty());
}

// ------------------------------------------- files other users planted --
//
// These run slurpstats as root over directories another (real) user owns,
// as a monitoring daemon would. They must run as root, and fail otherwise.

const USER: &str = "mmstats-test-hostile";
const SECRET: &[u8] = b"TOPSECRET-do-not-print-me";

fn test_user() -> (u32, u32) {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "these tests must run as root: they make a user with useradd and run slurpstats as root over that user's files (CI and ./test.sh run as root)"
    );
    let id = |flag: &str| {
        Command::new("id")
            .args([flag, USER])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .trim()
                    .parse::<u32>()
                    .unwrap()
            })
    };
    if id("-u").is_none() {
        let out = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                USER,
            ])
            .output()
            .expect("run useradd (package passwd)");
        assert!(
            out.status.success() || id("-u").is_some(),
            "useradd {USER}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    (id("-u").unwrap(), id("-g").unwrap())
}

fn as_user(user: (u32, u32), script: &str) {
    let out = Command::new("setpriv")
        .arg(format!("--reuid={}", user.0))
        .arg(format!("--regid={}", user.1))
        .args(["--clear-groups", "sh", "-c", script])
        .output()
        .expect("run setpriv (package util-linux)");
    assert!(out.status.success(), "{script}: {}", stderr(&out));
}

fn quoted(p: &Path) -> String {
    format!("'{}'", p.display())
}

/// A scan root (what /dev/shm is to a default scan) with our own
/// directory and one of the test user's, which holds a good stats file of
/// theirs and the junk they planted: links to root-only secrets of 113 and
/// 1237 bytes, a link to /dev/zero, a FIFO, garbage, and a stats file they
/// do not own. Returns (root, their directory, secrets' directory).
fn planted(user: (u32, u32)) -> (TempDir, PathBuf, TempDir) {
    let root = stats_dir();
    fs::set_permissions(root.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let secrets = stats_dir();
    fs::set_permissions(secrets.path(), fs::Permissions::from_mode(0o755)).unwrap();
    for len in [113, 1237] {
        let mut bytes = SECRET.to_vec();
        bytes.resize(len, b'#');
        let path = secrets.path().join(format!("s{len}"));
        fs::write(&path, bytes).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    }
    let own = root.path().join("mmstats-0");
    fs::create_dir(&own).unwrap();
    let theirs = root.path().join(format!("mmstats-{}", user.0));
    fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(user.0), Some(user.1)).unwrap();
    let stage = stats_dir();
    fs::set_permissions(stage.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let m = mixed(stage.path(), "good");
    let rootowned = theirs.join("rootowned.mmstats");
    fs::copy(stage.path().join("good.mmstats"), &rootowned).unwrap();
    fs::set_permissions(&rootowned, fs::Permissions::from_mode(0o644)).unwrap();
    as_user(
        user,
        &format!(
            "cd {} && cp {} good.mmstats && ln -s {}/s113 short.mmstats && ln -s {}/s1237 long.mmstats \
             && ln -s /dev/zero zero.mmstats && mkfifo pipe.mmstats && echo garbage > junk.mmstats",
            quoted(&theirs),
            quoted(&stage.path().join("good.mmstats")),
            quoted(secrets.path()),
            quoted(secrets.path()),
        ),
    );
    drop(m);
    (root, theirs, secrets)
}

fn assert_no_leak(o: &Output) {
    let all = format!("{}{}", stdout(o), stderr(o));
    for needle in [
        "TOPSECRET",
        "do-not-print",
        "544f50",
        "54, 4f",
        "84, 79",
        "113",
        "1237",
    ] {
        assert!(!all.contains(needle), "output leaks {needle:?}:\n{all}");
    }
}

fn default_scan(root: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("MMSTATS_DIR")
        .env("MMSTATS_SCAN_ROOT", root)
        .output()
        .unwrap()
}

#[test]
fn default_scan_as_root_summarises_other_users_junk_and_leaks_nothing() {
    let user = test_user();
    let (root, theirs, _secrets) = planted(user);
    let out = default_scan(root.path(), &["--json"]);
    assert_no_leak(&out);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // Six planted entries: two secret links, /dev/zero, the FIFO, garbage,
    // and the file the directory's owner does not own.
    assert_eq!(
        stderr(&out),
        "slurpstats: skipped 6 unreadable or foreign files in other users' directories (run with a path to see them)\n"
    );
    let files: Vec<Json> = json_of(&out).iter().map(|f| f["file"].clone()).collect();
    assert_eq!(
        files,
        [json!(theirs.join("good.mmstats").display().to_string())]
    );

    // Named explicitly, each problem is a warning naming it, and exit 1;
    // the file root owns is read (the owner rule is the default scan's).
    let out = slurp(&[&theirs]);
    assert_no_leak(&out);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    for name in ["short", "long", "zero", "pipe", "junk"] {
        assert!(err.contains(&format!("{name}.mmstats")), "{name}: {err}");
    }
    assert_eq!(err.lines().count(), 5, "{err}");
    assert!(stdout(&out).contains("rootowned.mmstats: pid "));
}

#[test]
fn problems_in_our_own_directory_are_warnings() {
    let user = test_user();
    let (root, _theirs, _secrets) = planted(user);
    let own = root.path().join("mmstats-0");
    fs::write(own.join("mine.mmstats"), "x".repeat(500)).unwrap();
    symlink("/dev/zero", own.join("z.mmstats")).unwrap();
    let out = default_scan(root.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 3, "{err}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("mine.mmstats") && l.contains("bad magic")),
        "{err}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("z.mmstats") && l.contains("symbolic link")),
        "{err}"
    );
    assert!(lines[2].contains("skipped 6 "), "{err}");
}

#[test]
fn a_planted_fifo_or_device_is_never_opened() {
    let user = test_user();
    let (root, theirs, _secrets) = planted(user);
    let dev = theirs.join("null.mmstats");
    assert!(Command::new("mknod")
        .arg(&dev)
        .args(["c", "1", "3"])
        .status()
        .unwrap()
        .success());
    // A writer blocked opening the FIFO: any open by a reader wakes it,
    // and it then leaves a mark.
    let mark = root.path().join("opened");
    let mut writer = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "exec 3> {} && touch {}",
            quoted(&theirs.join("pipe.mmstats")),
            quoted(&mark)
        ))
        .spawn()
        .unwrap();
    for args in [vec![], vec![theirs.as_os_str()]] {
        let out = Command::new(BIN)
            .args(&args)
            .env_remove("MMSTATS_DIR")
            .env("MMSTATS_SCAN_ROOT", root.path())
            .output()
            .unwrap();
        assert_no_leak(&out);
        if !args.is_empty() {
            assert!(
                stderr(&out).contains("null.mmstats: a character device"),
                "{}",
                stderr(&out)
            );
            assert!(
                stderr(&out).contains("pipe.mmstats: a FIFO"),
                "{}",
                stderr(&out)
            );
        }
    }
    // Grace for a woken writer to leave its mark.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let opened = mark.exists();
    writer.kill().unwrap();
    writer.wait().unwrap();
    assert!(!opened, "slurpstats opened the planted FIFO");
}

#[test]
fn an_explicit_directory_without_stats_files_warns() {
    let dir = stats_dir();
    fs::write(dir.path().join("notes.txt"), "x").unwrap();
    let out = slurp(&[dir.path()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!(
            "slurpstats: {}: no stats files in this directory\n",
            dir.path().display()
        )
    );
}

#[test]
fn a_recursive_pattern_over_a_symlink_loop_ends_without_duplicates() {
    let dir = stats_dir();
    let sub = dir.path().join("a");
    fs::create_dir(&sub).unwrap();
    let _m = mixed(&sub, "x");
    symlink("..", sub.join("up")).unwrap();
    symlink(".", dir.path().join("self")).unwrap();
    let pattern = dir.path().join("**/*.mmstats");
    let out = slurp(&[OsStr::new("--json"), pattern.as_os_str()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let files: Vec<Json> = json_of(&out).iter().map(|f| f["file"].clone()).collect();
    assert_eq!(files, [json!(sub.join("x.mmstats").display().to_string())]);
}

/// Runs slurpstats on `args`; returns (status, output bytes, max RSS in KiB).
/// The child is reaped by `wait4`, which std cannot see.
#[allow(clippy::zombie_processes)]
fn measured(args: &[&OsStr]) -> (i32, usize, i64) {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(BIN);
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    // A child made with vfork (as posix_spawn does) inherits this test
    // process's peak RSS in its own ru_maxrss; a pre_exec hook makes std
    // fork instead, so the child starts from this process's current RSS,
    // which is small.
    // SAFETY: the hook does nothing, so it is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| Ok(()));
    }
    let mut child = cmd.spawn().unwrap();
    let count = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut n = 0;
            let mut buf = vec![0; 1 << 16];
            while let Ok(k) = r.read(&mut buf) {
                if k == 0 {
                    break;
                }
                n += k;
            }
            n
        })
    };
    let out = count(Box::new(child.stdout.take().unwrap()));
    let err = count(Box::new(child.stderr.take().unwrap()));
    let mut status = 0;
    // SAFETY: all-zero is a valid rusage.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: the pid is our child's, not yet waited for; both pointers
    // are to live locals.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32);
    let bytes = out.join().unwrap() + err.join().unwrap();
    (libc::WEXITSTATUS(status), bytes, usage.ru_maxrss)
}

#[test]
fn a_huge_sparse_file_costs_little_memory_and_output() {
    // 500 text fields claiming 1 MiB each: ~1 GiB of file, almost all hole.
    let dir = stats_dir();
    let stage = stats_dir();
    let mut schema = mmstats::Schema::new("bomb");
    for i in 0..500 {
        schema.push(FieldDef::text(&format!("t{i}"), 1 << 20));
    }
    let file =
        mmstats::StatsFile::create(&schema, &mmstats::Options::new().dir(stage.path())).unwrap();
    use mmstats::format::raw::{self, Header, Record};
    use std::os::unix::fs::FileExt;
    // Only the part before the value area is copied (the rest is zeros),
    // and this process never holds the whole file.
    let source = fs::File::open(file.path().unwrap()).unwrap();
    let mut head = vec![0; raw::HEADER_LEN];
    source.read_exact_at(&mut head, 0).unwrap();
    let h = Header::decode(&head);
    let mut made = vec![0; h.values_off.get() as usize];
    source.read_exact_at(&mut made, 0).unwrap();
    drop((source, file));
    let bomb = dir.path().join("bomb.mmstats");
    let f = fs::File::create_new(&bomb).unwrap();
    f.write_all_at(&made, 0).unwrap();
    f.set_len(h.file_len.get()).unwrap();
    for i in 0..500 {
        let at = h.field_table_off.get() as usize + i * h.record_len.get() as usize;
        let r = Record::decode(&made[at..at + raw::RECORD_LEN]);
        let len_at = r.value_off.get() as usize + raw::text_buffer(1 << 20, 0) + raw::TEXT_BUF_LEN;
        f.write_all_at(&(1u64 << 20).to_le_bytes(), len_at as u64)
            .unwrap();
    }
    drop((f, made));

    let (status, bytes, rss_kib) = measured(&[bomb.as_os_str()]);
    assert_eq!(status, 1, "the file is over the decode budget: an error");
    assert!(bytes < 4096, "{bytes} bytes of output");
    assert!(rss_kib < 200 * 1024, "slurpstats used {rss_kib} KiB");
    let out = slurp(&[&bomb]);
    assert!(
        stderr(&out).contains("--max-decoded-bytes"),
        "{}",
        stderr(&out)
    );

    // With the budget raised, the texts are over the text limit: shown as
    // unavailable, not copied.
    let args = [
        OsStr::new("--max-decoded-bytes"),
        OsStr::new("1G"),
        bomb.as_os_str(),
    ];
    let (status, bytes, rss_kib) = measured(&args);
    assert_eq!(status, 0);
    assert!(bytes < 200 * 1024, "{bytes} bytes of output");
    assert!(rss_kib < 200 * 1024, "slurpstats used {rss_kib} KiB");
}

#[test]
fn bad_limit_values_name_the_flag() {
    for (flag, value) in [
        ("--max-text-bytes", "2M"),
        ("--max-text-bytes", "lots"),
        ("--max-fields", "1.5"),
        ("--max-decoded-bytes", "1T"),
    ] {
        let out = slurp(&[flag, value]);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}");
        assert!(
            stderr(&out).contains(flag),
            "{flag} {value}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn archives_show_how_many_writers_they_hold_and_replace_their_files() {
    let dir = stats_dir();
    for name in ["one", "two"] {
        drop(mixed(dir.path(), name));
        // Dead: the lock file named does not exist (spec §2.4).
        let path = path_of(&dir, &format!("{name}.mmstats"));
        let mut bytes = fs::read(&path).unwrap();
        mmstats::format::raw::put_u64(&mut bytes, mmstats::format::raw::H_LOCK_TOKEN, 1);
        fs::write(&path, bytes).unwrap();
    }
    let live = mixed(dir.path(), "live");
    let mut opts = mmstats_read::retire::RetireOptions::default();
    opts.min_age = std::time::Duration::ZERO;
    let report = mmstats_read::retire::fold(dir.path(), &opts).unwrap();
    assert_eq!((report.folded, report.files, report.archives), (2, 1, 1));

    let out = slurp(&[dir.path()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let headers: Vec<&str> = text.lines().filter(|l| l.contains(": pid ")).collect();
    assert_eq!(headers.len(), 2, "{text}");
    let archive = headers
        .iter()
        .find(|h| h.contains("mixed.archive.mmstats: "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        archive.contains(", archive of 2 writers since ") && archive.contains(" ago, folded "),
        "{archive}"
    );

    let files = json_of(&slurp(&[OsStr::new("--json"), dir.path().as_os_str()]));
    assert_eq!(files.len(), 2);
    let a = files
        .iter()
        .find(|f| f["state"] == json!("archive"))
        .unwrap();
    assert_eq!(a["alive"], json!(false));
    assert_eq!(a["version"], json!("1.2"));
    assert_eq!(a["archive"]["writers"], json!(2));
    assert_eq!(a["archive"]["folds"], json!(1));
    assert_eq!(a["archive"]["ids"], json!(2));
    assert!(a["archive"]["since_unix_ns"].as_u64().unwrap() > 0);
    // Counters add (saturating), histograms merge, text and constants keep
    // the last value, gauges are gone.
    assert_eq!(a["stats"]["zeta"], json!(14));
    assert_eq!(a["stats"]["big"], json!(u64::MAX));
    assert_eq!(a["stats"]["request"]["count"], json!(200));
    assert_eq!(a["stats"]["size"]["count"], json!(6));
    assert_eq!(a["stats"]["state"], json!("serving \"x\""));
    assert_eq!(a["stats"]["version"], json!("1.2.3"));
    assert!(a["stats"].get("load").is_none() && a["stats"].get("a.much.longer.label").is_none());
    assert_eq!(a["fields"]["size"]["unit"], json!("bytes"));
    // The live file is untouched; no other file is left.
    assert!(files
        .iter()
        .any(|f| f["file"] == json!(path_of(&dir, "live.mmstats").display().to_string())));
    drop(live);
}
