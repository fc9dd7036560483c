//! `pollstats`: the vmstat of mmstats. Once an interval, one row of rates,
//! gauges and latencies aggregated over every stats file, from
//! [`mmstats_read::aggregate`].
//!
//! Exit status: 0 when the count is reached, on Ctrl-C or when the reader
//! of the output goes away; 1 when nothing can be shown (no files, a
//! pattern that matches no label); 2 for a usage error.
#![forbid(unsafe_code)]

mod compat;
mod human;
mod json;
mod text;
mod tree;

use std::ffi::OsString;
use std::io::{self, BufRead, IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{CommandFactory, Parser};
use mmstats::Kind;
use mmstats_read::aggregate::{Aggregator, GroupBy, Sample, Selector, Sources, View};

use compat::Filter;

const ABOUT: &str =
    "Rates, gauges and latencies of every mmstats file, once an interval (like vmstat).";

const LONG_ABOUT: &str = "\
Rates, gauges and latencies of every mmstats file, once an interval (like vmstat).

Each row is one interval. Counters are shown as a rate per second (--delta: \
the increase over the interval); gauges as their current value, summed over \
live writers; timers and histograms as count per second, p50 and p99 of the \
values recorded in that interval. The first row covers each file's whole \
life, as vmstat's first row does. Times are UTC.

Arguments are label patterns or sources. A source is an argument that names \
an existing path, contains a '/' or ends in .mmstats: a stats file, a \
directory (its *.mmstats files) or a glob pattern, as slurpstats takes. \
With no source, $MMSTATS_DIR is read if set, else every /dev/shm/mmstats-* \
directory. Any other argument is a label (web.request), a label prefix \
(web.status.) or a glob over labels ('web.*.5xx'); with none, every counter, \
gauge, timer and histogram is shown. A label argument may hold several \
labels separated by commas (2xx,5xx), and -p/--prefix is joined to the \
front of each, as mmstats 0.8's pollstats did: -p web.status. 2xx,5xx.

Files appearing, exiting and vanishing while pollstats runs are followed: \
a file that vanished adds nothing to the interval, a new one adds everything \
it counted. A file that cannot be read is a warning on stderr naming it.

Tree output (--tree): the span timers written by the mmstats-tracing layer \
(labels span.busy{path=PATH}), of what was recorded in each interval, merged over \
every file of one command and model: the same view as slurpstats --tree. \
Each node shows its percentage of the tree's total time in the interval, in \
parentheses its self percentage (its time minus its children's), its p50, \
p75, p95, p99 and p99.9, and its calls in the interval; children are \
indented under their parent and sorted by total time. On a terminal the \
screen is cleared and the tree drawn again each interval, as watch does; \
otherwise each tree follows a line `--- TIME interval DURATION ---`. The \
first tree covers each file's whole life. -i, -c, -f, --tick-on-stdin and \
sources apply; label arguments do not. With --json, each interval is one \
line: {\"time\": RFC 3339, \"interval_s\": f64 or null for the first, \
\"trees\": [...], \"nodes\": n, \"truncated\": bool}, the trees as mmash's \
/api/v1/tree gives them (at most 100000 nodes a line).";

const EXAMPLES: &str = "\
Examples:
  pollstats                             every counter, gauge and timer, once a second
  pollstats web.status. web.request     labels and label prefixes
  pollstats 'web.*.5xx'                 a glob over labels
  pollstats -i 500ms -c 10              ten rows, half a second apart
  pollstats --by pid web.requests       one column per writer process
  pollstats --aggr max web.in_flight    the largest value of any writer
  pollstats --json | jq .series         one JSON object per interval
  pollstats /dev/shm/mmstats-1000 ./app.mmstats 'run/*.mmstats'
  pollstats -p web.status. 2xx,4xx,5xx -n 20   mmstats 0.8's form: prefix, list, header every 20 rows
  pollstats -f role=db -f batch.       only files whose role is db, or that have batch.* labels
  pollstats --tree -i 5s                the tracing spans of each 5 s as a tree, in place
  pollstats --tree --json -c 2 | tail -1   the spans of one second, as JSON

JSON Lines (--json), one object per interval:
  {\"time\": RFC 3339, \"interval_s\": f64, \"files\": {\"alive\": n, \"dead\": n},
   \"series\": {label or label{group=value}: value}}
Counters: rate per second (float), or with --delta the exact increase
(integer). Gauges: integer or float. Timers and histograms: slurpstats'
histogram object of the interval's values. Text: array of distinct values.
No value: null. The first object covers each file's whole life; its
interval_s is the age of the oldest file.";

/// Rates, gauges and latencies of every mmstats file, once an interval.
#[derive(Parser, Debug)]
#[command(
    name = "pollstats",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = EXAMPLES
)]
struct Args {
    /// Label patterns (label, prefix or glob) and sources (files,
    /// directories, globs of files)
    #[arg(value_name = "LABEL|SOURCE")]
    args: Vec<OsString>,

    /// Time between rows: 1s, 500ms, 2 (seconds), 1.5s, 250us
    #[arg(short, long, default_value = "1s", value_parser = parse_interval, allow_hyphen_values = true)]
    interval: Duration,

    /// Stop after this many rows, or trees with --tree (the first included)
    #[arg(short, long, value_name = "N")]
    count: Option<u64>,

    /// Joined, as given, to the front of every label argument (mmstats
    /// 0.8's -p): -p web.status. 2xx,5xx
    #[arg(short, long, value_name = "PREFIX")]
    prefix: Option<String>,

    /// Print the header again every N rows [default: once; on a terminal,
    /// once a screen]
    #[arg(short = 'n', long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    headers: Option<u64>,

    /// Keep only files that have a label starting with KEY, or whose field
    /// KEY equals VALUE (text exactly, numbers as numbers); repeated, a
    /// file passing any one is kept
    #[arg(short, long, value_name = "KEY[=VALUE]", value_parser = compat::parse_filter)]
    filter: Vec<Filter>,

    /// mmstats 0.8's delay in whole seconds: refused, pointing to -i
    #[arg(short = 'd', long = "delay", hide = true, num_args = 0..=1,
          default_missing_value = "", allow_hyphen_values = true)]
    delay: Option<String>,

    /// Counters as the increase per interval instead of a rate per second
    #[arg(long)]
    delta: bool,

    /// One series per label and command, model, pid or file
    #[arg(long, value_name = "GROUP", value_parser = parse_group)]
    by: Option<GroupBy>,

    /// Combine files with sum, avg, min, max, one, nonzero-min,
    /// nonzero-avg or count [default: counters and gauges sum, histograms
    /// merge, text lists distinct values]
    #[arg(long, value_name = "AGGR", value_parser = parse_aggregator)]
    aggr: Option<Aggregator>,

    /// Count gauges of dead writers too (by default only live ones)
    #[arg(long)]
    include_dead: bool,

    /// One JSON object per interval, one per line (shape below)
    #[arg(long)]
    json: bool,

    /// Show the span timers of mmstats-tracing as a tree per command and
    /// model, of each interval (see --help); refreshed in place on a
    /// terminal
    #[arg(long, conflicts_with_all = ["delta", "by", "aggr", "include_dead", "headers"])]
    tree: bool,

    /// Take a sample each time a line arrives on standard input, instead
    /// of on a timer, and list every source before each (for tests and
    /// scripts that step writers); ends at end of input
    #[arg(long)]
    tick_on_stdin: bool,
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let scale = match unit {
        "" | "s" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "m" => 60.0,
        _ => {
            return Err(format!(
                "{s:?} is not an interval: use a number of seconds, or one with s, ms, us or m (500ms, 2s)"
            ))
        }
    };
    let n: f64 = num.parse().map_err(|_| {
        format!("{s:?} is not an interval: use a number of seconds, or one with s, ms, us or m (500ms, 2s)")
    })?;
    let secs = n * scale;
    if !secs.is_finite() || secs <= 0.0 {
        return Err(format!("interval {s:?} must be more than zero"));
    }
    if secs > 86_400.0 * 365.0 {
        return Err(format!("interval {s:?} is over a year"));
    }
    let d = Duration::from_secs_f64(secs);
    if d < Duration::from_micros(1) {
        return Err(format!("interval {s:?} is under a microsecond"));
    }
    Ok(d)
}

fn parse_group(s: &str) -> Result<GroupBy, String> {
    match s.parse::<GroupBy>() {
        Ok(GroupBy::Label) => Err(format!(
            "{s:?} is the default grouping; --by takes command, model, pid or file"
        )),
        Ok(g) => Ok(g),
        Err(e) => Err(e.to_string()),
    }
}

fn parse_aggregator(s: &str) -> Result<Aggregator, String> {
    s.parse()
        .map_err(|e: mmstats_read::aggregate::ParseError| e.to_string())
}

/// How values are shown, shared by the text and JSON outputs.
#[derive(Clone, Copy, Debug)]
pub struct Mode {
    /// Increases instead of rates.
    pub delta: bool,
    /// The aggregator given, if any.
    pub aggregator: Option<Aggregator>,
}

impl Mode {
    /// Whether a series of `kind` is shown as a rate per second.
    pub fn is_rate(self, kind: Kind) -> bool {
        !self.delta && kind == Kind::Counter && self.aggregator != Some(Aggregator::Count)
    }
}

fn main() -> ExitCode {
    // Hidden: `--generate-docs DIR` writes the man page and completions.
    if let Some(dir) = mmstats_docgen::requested(&std::env::args_os().collect::<Vec<_>>()) {
        return mmstats_docgen::run(&dir, &[Args::command()], Args::command());
    }
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) => {
            // --help and --version land here too, with status 0.
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    if let Some(d) = &args.delay {
        let _ = writeln!(
            io::stderr(),
            "pollstats: -d/--delay (mmstats 0.8's delay in whole seconds) is not accepted: \
             use -i/--interval, which takes seconds too: -i {} or -i 500ms",
            if d.is_empty() { "2" } else { d }
        );
        return ExitCode::from(2);
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(io::stderr(), "pollstats: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Whether an argument names a source rather than a label pattern.
fn is_source(arg: &OsString) -> bool {
    let s = arg.to_string_lossy();
    s.contains('/') || s.ends_with(".mmstats") || Path::new(arg).exists()
}

enum Event {
    Tick,
    Stop,
}

fn run(args: &Args) -> anyhow::Result<()> {
    mmstats::install_sigbus_guard()?;
    let (paths, patterns): (Vec<OsString>, Vec<OsString>) =
        args.args.iter().cloned().partition(is_source);
    let patterns: Vec<String> = patterns
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let patterns = compat::label_patterns(&patterns, args.prefix.as_deref());
    if args.tree {
        if let Some(p) = patterns.first() {
            bail!("--tree shows every span timer: {p:?} is not a source (a file, a directory, or a pattern with a '/'), and label patterns do not apply");
        }
    }
    let view = View {
        selector: Selector::new(&patterns)?,
        group_by: args.by.unwrap_or_default(),
        aggregator: args.aggr,
        include_dead: args.include_dead,
    };
    let mode = Mode {
        delta: args.delta,
        aggregator: args.aggr,
    };

    let (tx, rx) = mpsc::channel();
    let stop = tx.clone();
    // Ctrl-C ends the run quietly, as the count would.
    ctrlc::set_handler(move || {
        let _ = stop.send(Event::Stop);
    })
    .context("cannot handle Ctrl-C")?;

    let mut sources = Sources::new(&paths);
    if args.tick_on_stdin {
        // A stepped run must see every change made before its line.
        sources.set_rescan_interval(Duration::ZERO);
        std::thread::spawn(move || {
            for line in io::stdin().lock().lines() {
                if line.is_err() || tx.send(Event::Tick).is_err() {
                    break;
                }
            }
            let _ = tx.send(Event::Stop);
        });
    }

    let tty = io::stdout().is_terminal() && !args.json;
    let mut out = io::stdout().lock();
    let mut table = text::Table::new(mode);
    table.set_header_every(args.headers);
    let mut prev: Option<Sample> = None;
    let start = Instant::now();
    let mut tick: u64 = 0;
    let mut rows: u64 = 0;
    loop {
        let mut sample = sources.sample();
        compat::apply(&args.filter, &mut sample);
        for w in &sample.warnings {
            warn(&mut out, w)?;
        }
        if args.tree {
            if prev.is_none() {
                check_selection(&view.selector, &sample, &paths, &args.filter)?;
            }
            let trees = tree::trees(prev.as_ref(), &sample);
            for p in &trees.problems {
                warn(&mut out, p)?;
            }
            let interval = prev
                .as_ref()
                .map(|p| sample.instant.saturating_duration_since(p.instant));
            if args.json {
                tree::write_json(&mut out, &trees, &sample, interval)?;
            } else {
                tree::write(&mut out, &trees, &sample, interval, tty)?;
            }
        } else {
            let delta = view.delta(prev.as_ref(), &sample);
            for w in &delta.warnings {
                warn(&mut out, w)?;
            }
            if prev.is_none() {
                check_selection(&view.selector, &sample, &paths, &args.filter)?;
            }
            if args.json {
                json::write(&mut out, &delta, mode)?;
            } else {
                let screen = if tty { screen_size() } else { None };
                table.write(&mut out, &delta, screen)?;
            }
        }
        out.flush()?;
        rows += 1;
        if args.count.is_some_and(|c| rows >= c) {
            return Ok(());
        }
        prev = Some(sample);
        let event = if args.tick_on_stdin {
            rx.recv().unwrap_or(Event::Stop)
        } else {
            // Row i is due at start + i * interval; a slow sample skips
            // the ticks it missed instead of falling behind.
            let now = start.elapsed();
            tick = (tick + 1).max(div_ceil(now, args.interval));
            let due_ns = args.interval.as_nanos().saturating_mul(u128::from(tick));
            let due = Duration::from_nanos(u64::try_from(due_ns).unwrap_or(u64::MAX));
            match rx.recv_timeout(due.saturating_sub(now)) {
                Ok(e) => e,
                Err(RecvTimeoutError::Timeout) => Event::Tick,
                Err(RecvTimeoutError::Disconnected) => Event::Stop,
            }
        };
        match event {
            Event::Tick => {}
            Event::Stop => return Ok(()),
        }
    }
}

/// How many intervals fit in `elapsed`, rounded up.
fn div_ceil(elapsed: Duration, interval: Duration) -> u64 {
    let n = elapsed.as_nanos().div_ceil(interval.as_nanos().max(1));
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// Fails when there is nothing to show: no file at all, or a pattern that
/// matches no label (naming the nearest labels there are).
fn check_selection(
    selector: &Selector,
    sample: &Sample,
    paths: &[OsString],
    filters: &[Filter],
) -> anyhow::Result<()> {
    if sample.files.is_empty() {
        if !filters.is_empty() {
            bail!(
                "no stats file passes -f/--filter {}",
                compat::describe(filters)
            );
        }
        if paths.is_empty() {
            bail!("no stats files found in the default directories ($MMSTATS_DIR, or /dev/shm/mmstats-*)");
        }
        bail!("no stats files found");
    }
    let labels = sample.labels();
    let unmatched = selector.unmatched(labels.iter().copied());
    if let Some(p) = unmatched.first() {
        let near = nearest(p, &labels, 5);
        bail!(
            "{p:?} matches no label; the nearest are: {}",
            if near.is_empty() {
                "(no labels)".to_string()
            } else {
                near.join(", ")
            }
        );
    }
    Ok(())
}

/// The `n` labels closest to `pattern`: by edit distance to the label, or
/// to its start for a label longer than the pattern.
fn nearest<'a>(pattern: &str, labels: &[&'a str], n: usize) -> Vec<&'a str> {
    let p: Vec<char> = pattern.chars().filter(|c| !"*?[]".contains(*c)).collect();
    let mut scored: Vec<(usize, &str)> = labels
        .iter()
        .map(|l| {
            let l_chars: Vec<char> = l.chars().collect();
            let whole = edit_distance(&p, &l_chars);
            let start = edit_distance(&p, &l_chars[..l_chars.len().min(p.len())]);
            (whole.min(start + 1), *l)
        })
        .collect();
    scored.sort();
    scored.into_iter().take(n).map(|(_, l)| l).collect()
}

fn edit_distance(a: &[char], b: &[char]) -> usize {
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let up = row[j + 1];
            row[j + 1] = (diag + usize::from(ca != cb)).min(up + 1).min(row[j] + 1);
            diag = up;
        }
    }
    row[b.len()]
}

/// The terminal's (columns, rows), if standard output is one.
fn screen_size() -> Option<(usize, usize)> {
    terminal_size::terminal_size()
        .map(|(w, h)| (usize::from(w.0), usize::from(h.0)))
        .filter(|&(w, h)| w > 0 && h > 0)
}

/// Reports a problem on stderr after what was printed before it.
fn warn(out: &mut impl Write, msg: impl std::fmt::Display) -> io::Result<()> {
    out.flush()?;
    // Nowhere left to report a failure to write to stderr.
    let _ = writeln!(io::stderr().lock(), "pollstats: {msg}");
    Ok(())
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
            || c.downcast_ref::<serde_json::Error>()
                .and_then(|e| e.io_error_kind())
                .is_some_and(|k| k == io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_parse_or_say_why_not() {
        assert_eq!(parse_interval("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_interval("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_interval("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_interval("250us"), Ok(Duration::from_micros(250)));
        assert!(parse_interval("0").unwrap_err().contains("more than zero"));
        assert!(parse_interval("-1s")
            .unwrap_err()
            .contains("more than zero"));
        assert!(parse_interval("fast")
            .unwrap_err()
            .contains("not an interval"));
        assert!(parse_interval("1h")
            .unwrap_err()
            .contains("not an interval"));
    }

    #[test]
    fn nearest_labels_come_first() {
        let labels = ["web.request", "web.requests", "db.query", "web.status.2xx"];
        assert_eq!(
            nearest("web.reqest", &labels, 2),
            ["web.request", "web.requests"]
        );
        assert_eq!(nearest("web.stat", &labels, 1), ["web.status.2xx"]);
    }

    #[test]
    fn late_ticks_are_skipped_not_queued() {
        let i = Duration::from_millis(100);
        assert_eq!(div_ceil(Duration::from_millis(250), i), 3);
        assert_eq!(div_ceil(Duration::from_millis(200), i), 2);
    }
}
