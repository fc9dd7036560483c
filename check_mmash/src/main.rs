//! `check_mmash`: a Nagios / Icinga plugin for mmstats. Asks `mmash`'s
//! `/check/` endpoint (`-H`), or reads the stats files itself (`--dir`),
//! and judges one aggregated value against `-w` and `-c`.
//!
//! It follows the Monitoring Plugins development guidelines: exit 0 OK, 1
//! WARNING, 2 CRITICAL, 3 UNKNOWN (also for bad arguments and timeouts);
//! one line of output with performance data.
#![forbid(unsafe_code)]

mod http;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use check_mmash::check::{self, measure, report, unknown, Measure, Spec};
use check_mmash::{State, Uom};
use clap::{CommandFactory, Parser};
use serde_json::Value as Json;

const EXAMPLES: &str = "\
Examples:
  # CRITICAL if the 5xx rate over the last minute is above 5/s:
  check_mmash -H 127.0.0.1 -p 8787 -l web.status.5xx --rate 60s -w 1 -c 5

  # WARNING if p99 of web.request over 5 minutes is above 300 ms:
  check_mmash -H 127.0.0.1 -p 8787 -l web.request --quantile 0.99 --window 5m -w 0.3 -c 1 -t 10

  # CRITICAL if no live writer has the label (reads the files, no daemon):
  check_mmash --dir /dev/shm/mmstats-1000 -l jobs.alive --aggr count -c 1:

Ranges (-w, -c) alert when the value is outside them:
  10      < 0 or > 10          10:     < 10
  ~:10    > 10                 10:20   < 10 or > 20 (10 and 20 are fine)
  @10:20  >= 10 and <= 20

Values: counters are the total over every file (perfdata unit c), or with
--rate a per-second rate; gauges the sum over live writers; timers in
seconds (s), byte fields in B. --aggr count counts live writers with the
label. With --dir, a --rate or --window is measured by reading the files
twice, the window apart, so it must be shorter than the timeout.

Exit: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (mmash unreachable, label
unknown, malformed answer, token refused, timeout, bad arguments).";

/// Nagios / Icinga plugin: thresholds on any aggregated mmstats value.
#[derive(Parser, Debug)]
#[command(
    name = "check_mmash",
    version,
    about,
    after_help = EXAMPLES
)]
struct Args {
    /// Host mmash runs on
    #[arg(
        short = 'H',
        long = "hostname",
        value_name = "HOST",
        required_unless_present = "dir"
    )]
    host: Option<String>,

    /// mmash's port
    #[arg(short = 'p', long, default_value_t = 8787)]
    port: u16,

    /// File holding mmash's bearer token
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,

    /// Read the stats files in DIR (file, directory or glob) instead of asking mmash
    #[arg(long, value_name = "DIR", conflicts_with_all = ["host", "token_file"])]
    dir: Option<PathBuf>,

    /// The stats label, exactly
    #[arg(short = 'l', long)]
    label: String,

    /// How files are combined: sum, avg, min, max, one, nonzero-min,
    /// nonzero-avg, count
    #[arg(short = 'a', long, value_name = "AGGR")]
    aggr: Option<String>,

    /// A counter's per-second rate over this window (10s, 5m, 1h)
    #[arg(short = 'r', long, value_name = "WINDOW", allow_hyphen_values = true)]
    rate: Option<String>,

    /// A quantile of a timer or histogram (0.99 for p99)
    #[arg(short = 'q', long, value_name = "Q", allow_hyphen_values = true)]
    quantile: Option<String>,

    /// A statistic of a timer or histogram: mean, count, max, min
    #[arg(short = 's', long, value_name = "STAT")]
    stat: Option<String>,

    /// Only the files of this owner (a user name or uid): scope every
    /// check you alert on to the user it is about, so that other users'
    /// files can neither add to it nor satisfy it
    #[arg(long, value_name = "USER")]
    user: Option<String>,

    /// Only the files of this writer command
    #[arg(long, value_name = "COMMAND")]
    command: Option<String>,

    /// Only the files of this stats model
    #[arg(long, value_name = "MODEL")]
    model: Option<String>,

    /// The window of --quantile or --stat (default: everything recorded)
    #[arg(long, value_name = "WINDOW", allow_hyphen_values = true)]
    window: Option<String>,

    /// Warning range (empty: none)
    #[arg(
        short = 'w',
        long = "warning",
        value_name = "RANGE",
        allow_hyphen_values = true
    )]
    warn: Option<String>,

    /// Critical range (empty: none)
    #[arg(
        short = 'c',
        long = "critical",
        value_name = "RANGE",
        allow_hyphen_values = true
    )]
    crit: Option<String>,

    /// Seconds before giving up with UNKNOWN
    #[arg(short = 't', long, default_value_t = 10.0, value_name = "SECONDS")]
    timeout: f64,
}

fn main() -> ExitCode {
    // Hidden: `--generate-docs DIR` writes the man page and completions.
    if let Some(dir) = mmstats_docgen::requested(&std::env::args_os().collect::<Vec<_>>()) {
        return mmstats_docgen::run(&dir, &[Args::command()], Args::command());
    }
    // A panic is UNKNOWN (3) with one line, not Rust's 101, which Nagios
    // reports as out of bounds.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        // Someone printing already ends the process with their line.
        if let Ok(_printing) = PRINTED.try_lock() {
            print_line(&unknown(&format!("internal error: {info}")));
        }
        std::process::exit(State::Unknown.code().into());
    }));
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            if !e.use_stderr() {
                // --help, --version.
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            // Usage errors are UNKNOWN (3), not clap's 2 (CRITICAL).
            // The first paragraph of clap's message, on one line.
            let text = e.to_string();
            let para: Vec<&str> = text
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            let joined = para.join(" ");
            let msg = joined.strip_prefix("error: ").unwrap_or(&joined);
            // Not println!, which panics when stdout fails.
            print_line(&unknown(&format!("bad arguments: {msg} (see --help)")));
            return ExitCode::from(State::Unknown.code());
        }
    };
    let (state, line) = run(&args);
    // Whoever takes this first prints the one line: the answer, or the
    // watchdog's timeout.
    let _printing = PRINTED.lock().unwrap_or_else(|e| e.into_inner());
    print_line(&line);
    // Exit while holding the lock, so the watchdog cannot print a second
    // line between main's return and the end of the process.
    std::process::exit(state.code().into())
}

/// Prints the status line; a stdout that fails (closed, full) changes
/// nothing: the exit code is the state.
fn print_line(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Held while the one status line is printed, until the process exits.
static PRINTED: Mutex<()> = Mutex::new(());

fn run(args: &Args) -> (State, String) {
    if !args.timeout.is_finite() || args.timeout <= 0.0 || args.timeout > 3600.0 {
        let msg = format!(
            "-t {}: expected seconds, more than 0, at most 3600",
            args.timeout
        );
        return (State::Unknown, unknown(&msg));
    }
    let timeout = Duration::from_secs_f64(args.timeout);
    let spec = match spec(args) {
        Ok(s) => s,
        Err(e) => return (State::Unknown, unknown(&e)),
    };
    watchdog(timeout);
    let deadline = Instant::now() + timeout;
    let measured = match &args.dir {
        Some(dir) => {
            // The files are read here: the user is this host's.
            let mut spec = spec.clone();
            match spec.scope.resolve() {
                Ok(()) => from_dir(dir, &spec, timeout),
                Err(e) => Err(e),
            }
        }
        None => from_mmash(args, &spec, deadline),
    };
    match measured {
        Ok(m) => report(&m, spec.warn.as_ref(), spec.crit.as_ref()),
        Err(e) => (State::Unknown, unknown(&e)),
    }
}

/// The spec from the flags, checked as mmash checks its query.
fn spec(args: &Args) -> Result<Spec, String> {
    let flags = [
        ("aggr", &args.aggr),
        ("rate", &args.rate),
        ("quantile", &args.quantile),
        ("stat", &args.stat),
        ("window", &args.window),
        ("warn", &args.warn),
        ("crit", &args.crit),
        ("user", &args.user),
        ("command", &args.command),
        ("model", &args.model),
    ];
    // An empty -w or -c is no threshold: command templates pass `-w
    // '$ARG2$'` whether or not the service gives one.
    let params = flags
        .iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (*k, v)))
        .filter(|(k, v)| !(matches!(*k, "warn" | "crit") && v.is_empty()));
    Spec::from_params(&args.label, params).map_err(|e| e.0)
}

/// Ends the process with UNKNOWN when the timeout passes.
fn watchdog(timeout: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(timeout);
        let line = unknown(&format!(
            "timed out after {} (-t)",
            check::say_duration(timeout)
        ));
        // Never released: the process ends here, or main is printing and
        // ends first.
        let _printing = PRINTED.lock().unwrap_or_else(|e| e.into_inner());
        print_line(&line);
        std::process::exit(State::Unknown.code().into());
    });
}

/// Reads the files directly: once, or twice a window apart.
fn from_dir(dir: &Path, spec: &Spec, timeout: Duration) -> Result<Measure, String> {
    // A glob names no file itself: the sample says if it matched none.
    let glob = dir.to_string_lossy().contains(['*', '?', '[']);
    if !glob && !dir.exists() {
        return Err(format!(
            "--dir {}: no such file or directory",
            dir.display()
        ));
    }
    if let Some(w) = spec.history() {
        if w >= timeout {
            return Err(format!(
                "--dir measures a {} window by reading the files twice, {} apart; \
                 that is not shorter than the -t timeout of {}",
                check::say_duration(w),
                check::say_duration(w),
                check::say_duration(timeout)
            ));
        }
    }
    mmstats::install_sigbus_guard()
        .map_err(|e| format!("cannot install the SIGBUS guard readers need: {e}"))?;
    let mut sources = mmstats_read::aggregate::Sources::new(&[dir]);
    let first = sources.sample();
    if first.files.is_empty() {
        let why = first
            .warnings
            .first()
            .map(|w| format!(": {w}"))
            .unwrap_or_default();
        return Err(format!("no stats files in {}{why}", dir.display()));
    }
    match spec.history() {
        None => measure(spec, None, &first).map_err(|e| e.message),
        Some(w) => {
            std::thread::sleep(w);
            let second = sources.sample();
            measure(spec, Some(&first), &second).map_err(|e| e.message)
        }
    }
}

/// Asks mmash's `/check/` for the value (thresholds are judged here).
fn from_mmash(args: &Args, spec: &Spec, deadline: Instant) -> Result<Measure, String> {
    let host = args.host.as_deref().unwrap_or("127.0.0.1");
    let token = match &args.token_file {
        None => None,
        Some(p) => Some(read_token(p)?),
    };
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (k, v) in spec.params() {
        if k != "warn" && k != "crit" {
            query.append_pair(k, &v);
        }
    }
    query.append_pair("format", "json");
    let path = format!(
        "/check/{}?{}",
        http::encode_path(&spec.label),
        query.finish()
    );
    let where_ = format!("mmash at {host}:{}", args.port);
    let resp = http::get(host, args.port, &path, token.as_deref(), deadline)
        .map_err(|e| format!("cannot reach {where_}: {e}"))?;
    if resp.status == 401 || resp.status == 403 {
        return Err(format!(
            "{where_} refused the token (HTTP {}){}",
            resp.status,
            if token.is_none() {
                "; give it with --token-file"
            } else {
                ""
            }
        ));
    }
    let body = String::from_utf8_lossy(&resp.body);
    let json: Json = serde_json::from_str(&body).map_err(|e| {
        format!(
            "malformed JSON from {where_} (HTTP {}): {e}: {:?}",
            resp.status,
            body.chars().take(80).collect::<String>()
        )
    })?;
    if let Some(m) = json.get("measure").filter(|m| !m.is_null()) {
        let m = measure_json(m).ok_or_else(|| {
            format!(
                "malformed answer from {where_}: the measure lacks a field: {}",
                m.to_string().chars().take(120).collect::<String>()
            )
        })?;
        // Never judge a value that is not the one asked for.
        let what = match (spec.aggr, spec.rate, spec.stat) {
            (Some(mmstats_read::aggregate::Aggregator::Count), _, _) => Some("count".to_owned()),
            (_, Some(_), _) => Some("rate".to_owned()),
            (_, _, Some(s)) => Some(s.name()),
            _ => None,
        };
        if m.label != spec.label || what.as_ref().is_some_and(|w| *w != m.what) {
            return Err(format!(
                "malformed answer from {where_}: asked for {:?}{}, answered with {:?} {}",
                spec.label,
                what.map(|w| format!(" {w}")).unwrap_or_default(),
                m.label,
                m.what
            ));
        }
        return Ok(m);
    }
    if let Some(e) = json.get("error").and_then(Json::as_str) {
        return Err(format!("{where_}: {e}"));
    }
    Err(format!(
        "malformed answer from {where_} (HTTP {}): no measure and no error",
        resp.status
    ))
}

fn measure_json(m: &Json) -> Option<Measure> {
    let s = |k: &str| m.get(k).and_then(Json::as_str).map(str::to_owned);
    Some(Measure {
        label: s("label")?,
        what: s("what")?,
        value: m.get("value").and_then(Json::as_f64).unwrap_or(f64::NAN),
        uom: Uom::parse(&s("uom")?)?,
        min: m.get("min").and_then(Json::as_f64),
        note: s("note").unwrap_or_default(),
    })
}

fn read_token(p: &Path) -> Result<String, String> {
    let t = std::fs::read_to_string(p).map_err(|e| format!("--token-file {}: {e}", p.display()))?;
    let t = t.trim();
    if t.is_empty() || t.bytes().any(|b| !(0x21..=0x7e).contains(&b)) {
        return Err(format!(
            "--token-file {}: expected one token of printable ASCII",
            p.display()
        ));
    }
    Ok(t.to_owned())
}
