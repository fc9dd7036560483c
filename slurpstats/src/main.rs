//! `slurpstats`: dump every metric of every mmstats file, as aligned text or
//! as one JSON array.
//!
//! Files are found with [`mmstats_read::scan`] and read with
//! [`mmstats_read::Found::open`]; a file that cannot be read is reported on
//! stderr and the others are still printed. In a default scan (no paths),
//! problems in other users' directories are counted in one summary line
//! and do not fail the run. Exit status: 0 if everything was read, 1 if an
//! explicit path or a file in our own directory failed, 2 for a usage
//! error. A closed stdout (as in
//! `slurpstats | head -1`) ends the program quietly with status 0.
#![forbid(unsafe_code)]

mod human;
mod json;
mod text;

use std::ffi::OsString;
use std::fmt::Display;
use std::io::{self, BufWriter, Write};
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use mmstats_read::{ReadError, ReadLimits};

const ABOUT: &str = "Dump every metric of every mmstats file, as text or JSON.";

const LONG_ABOUT: &str = "\
Dump every metric of every mmstats file, as text or JSON.

Each PATH may be a stats file, a directory (its *.mmstats files, not hidden \
ones, not recursing) or a glob pattern (quote it so the shell leaves it \
alone; `**` matches any depth of directories and never follows a symbolic \
link). With no PATH, the default directories are read: $MMSTATS_DIR if it is \
set, else every /dev/shm/mmstats-* directory (one per user).

Files other users own are treated as hostile. Entries are examined without \
following them: a symbolic link, device, FIFO or socket under a stats name is \
skipped with a warning, never opened, and a path given as a symbolic link to a \
file is refused (give its target). With no PATH (the default scan), a \
directory is read only if it is not a symbolic link and not writable by group \
or others, and only the files in it owned by the directory's owner. Problems \
in other users' directories are not reported one by one: one line on stderr \
counts them, and they do not change the exit status (name the directory to \
see them).

Tree output (--tree): the span timers written by the mmstats-tracing layer (labels span.busy{path=PATH}), merged over every file of one command and model. Each node shows its percentage of the tree's total time (the sum of its top-level spans' busy time), in parentheses its self percentage (its time minus its children's), its p50, p75, p95, p99 and p99.9, and its calls; children are indented under their parent and sorted by total time. Other fields are not printed.

Text output: per file, a line with its path, writer pid and tid, command, \
model, whether the writer is alive (or dead: exited, or did not close \
the file), the file's age and format version; then its fields as \
`label  value` lines sorted by label. Text is quoted; timers show count, mean, \
p50, p99, p99.9 and max in ns/µs/ms/s; histograms the same in their own unit. \
Files come sorted by path.

Limits: one file may cost at most --max-fields fields and --max-decoded-bytes \
of strings and values (else it is reported and skipped), and a text longer \
than --max-text-bytes shows as unavailable. Raise them to read bigger files. \
Sizes take an optional K, M or G suffix (powers of 1024).

A file that cannot be read, or a path that matches nothing, is reported on \
stderr as `slurpstats: ...` and the rest are still printed. An explicit \
directory or pattern with no stats files is reported too. Exit status: 0 if \
everything was read, 1 if any explicit path, or any file in your own \
directory, failed, 2 for a usage error.";

const JSON_HELP: &str = "\
JSON output (--json): one array, one object per file counted, sorted by path
(byte-wise): the writer files read, less those an archive already holds, and
the archive of each writer file read (format-spec.md 7.7), members in this order:
  {\"file\": path as found, \"pid\": u32, \"tid\": u32, \"command\": str, \"model\": str,
   \"alive\": bool, \"state\": \"active\"|\"exited\"|\"archive\"|\"unknown\",
   \"archive\": {\"writers\", \"since_unix_ns\", \"folded_unix_ns\", \"folds\", \"ids\"} (archives only),
   \"created_unix_ns\": u64, \"version\": \"MAJOR.MINOR\", \"skipped_fields\": int,
   \"fallbacks\": u64,
   \"stats\":  {label: value},
   \"fields\": {label: {\"kind\", \"unit\", \"help\", \"static_labels\": {key: value}}}}
Values: counter u64 (exact), gauge i64, gauge_f64 number (null if not finite),
text and constant strings, unavailable null; histogram and timer objects
  {\"count\", \"sum\", \"mean\", \"min\", \"max\", \"p50\", \"p75\", \"p90\", \"p95\", \"p99\", \"p999\",
   \"buckets\": [[lower, upper, count], ...]}
in the field's unit (nanoseconds for timers), non-empty buckets only; an empty
one has count 0, sum 0, null statistics and no buckets. \"kind\" is one of
counter, gauge, gauge_f64, text, constant, histogram, timer. Labels and static
label keys are sorted byte-wise; one object per line.";

/// The format's own limit on a text or constant capacity.
const FORMAT_MAX_TEXT: u64 = 1 << 20;

/// Dump every metric of every mmstats file.
#[derive(Parser, Debug)]
#[command(
    name = "slurpstats",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_long_help = JSON_HELP
)]
struct Args {
    /// Stats files, directories or glob patterns [default: $MMSTATS_DIR, or
    /// every /dev/shm/mmstats-* directory]
    #[arg(value_name = "PATH")]
    paths: Vec<OsString>,

    /// Print one JSON array with one object per file (shape in --help)
    #[arg(long)]
    json: bool,

    /// Print the span timers of mmstats-tracing as a tree per command and
    /// model, merged over files (see --help)
    #[arg(long, conflicts_with = "json")]
    tree: bool,

    /// Show text values of up to this capacity; larger ones show as
    /// unavailable [default: 64K; at most 1M, the format's limit]
    #[arg(long, value_name = "BYTES", value_parser = parse_text_bytes)]
    max_text_bytes: Option<u64>,

    /// Read files of at most this many fields [default: 100000]
    #[arg(long, value_name = "N", value_parser = parse_count)]
    max_fields: Option<u64>,

    /// Decode at most this many bytes of strings and values per file
    /// [default: 64M]
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    max_decoded_bytes: Option<u64>,
}

impl Args {
    fn limits(&self) -> ReadLimits {
        let mut limits = ReadLimits::default();
        if let Some(n) = self.max_text_bytes {
            limits.max_text_capacity = n;
        }
        if let Some(n) = self.max_fields {
            limits.max_fields = n;
        }
        if let Some(n) = self.max_decoded_bytes {
            limits.max_decoded = n;
        }
        limits
    }
}

/// `N`, `NK`, `NM` or `NG` (powers of 1024).
fn parse_size(s: &str) -> Result<u64, String> {
    let (digits, unit) = match s.as_bytes().last() {
        Some(b'k' | b'K') => (&s[..s.len() - 1], 1u64 << 10),
        Some(b'm' | b'M') => (&s[..s.len() - 1], 1 << 20),
        Some(b'g' | b'G') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .ok_or_else(|| format!("{s:?} is not a size in bytes (e.g. 65536, 64K, 1M)"))
}

fn parse_text_bytes(s: &str) -> Result<u64, String> {
    let n = parse_size(s)?;
    if n > FORMAT_MAX_TEXT {
        return Err(format!(
            "{n} is over {FORMAT_MAX_TEXT} (1M), the largest text capacity the format allows"
        ));
    }
    Ok(n)
}

fn parse_count(s: &str) -> Result<u64, String> {
    s.parse::<u64>()
        .map_err(|_| format!("{s:?} is not a whole number"))
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
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(io::stderr(), "slurpstats: writing the output: {e}");
            ExitCode::from(1)
        }
    }
}

/// Prints every file; `Ok(false)` if an explicit path, or a file in our
/// own directory, failed. An `Err` is a failure to install the SIGBUS
/// guard or to write the output.
fn run(args: &Args) -> io::Result<bool> {
    mmstats::install_sigbus_guard()?;
    let limits = args.limits();
    let (files, problems) = mmstats_read::scan(&args.paths);
    let mut out = BufWriter::new(io::stdout().lock());
    let mut all_read = true;
    // Problems in other users' directories of a default scan: anyone can
    // plant them, so they are counted, not reported one by one.
    let mut foreign = 0usize;
    for p in &problems {
        if p.foreign {
            foreign += 1;
        } else {
            all_read = false;
            warn(&mut out, p)?;
        }
    }
    if files.is_empty() && args.paths.is_empty() && all_read {
        warn(
            &mut out,
            "no stats files found in the default directories ($MMSTATS_DIR, or /dev/shm/mmstats-*)",
        )?;
    }
    if args.json {
        out.write_all(b"[")?;
    }
    let mut first = true;
    let mut trees = mmstats_read::tree::Trees::new();
    // Writer files first, archives last, and what an archive holds once
    // (format-spec.md §2.8).
    for (found, read) in mmstats_read::retire::read_all(&files, &limits) {
        let snap = match read {
            Ok(snap) => snap,
            Err(_) if found.foreign => {
                foreign += 1;
                continue;
            }
            Err(e) => {
                all_read = false;
                warn(&mut out, explain(&e))?;
                continue;
            }
        };
        if !snap.duplicates.is_empty() && !found.foreign {
            warn(&mut out, duplicates(&snap))?;
        }
        if args.tree {
            trees.add(&snap);
        } else if args.json {
            out.write_all(if first { b"\n" } else { b",\n" })?;
            json::write_file(&mut out, &snap)?;
        } else {
            text::write_file(&mut out, &snap, first)?;
        }
        first = false;
    }
    if args.json {
        out.write_all(if first { b"]\n" } else { b"\n]\n" })?;
    }
    if args.tree {
        for p in &trees.problems {
            warn(&mut out, p)?;
        }
        if trees.is_empty() && !first {
            warn(&mut out, "no span timers (span.busy{path=...}) in the files read: they are written by the mmstats-tracing layer")?;
        }
        trees.write_text(&mut out, human::duration_ns)?;
    }
    if foreign > 0 {
        let (n, s) = (foreign, if foreign == 1 { "" } else { "s" });
        warn(
            &mut out,
            format!("skipped {n} unreadable or foreign file{s} in other users' directories (run with a path to see them)"),
        )?;
    }
    out.flush()?;
    Ok(all_read)
}

/// A read error, with the flag that raises the limit it names, if any.
fn explain(e: &ReadError) -> String {
    let flag = match e {
        ReadError::Limit { limit, .. } => match *limit {
            "max_text_capacity" => Some("--max-text-bytes"),
            "max_fields" => Some("--max-fields"),
            "max_decoded" => Some("--max-decoded-bytes"),
            _ => None,
        },
        _ => None,
    };
    match flag {
        Some(flag) => format!("{e} (slurpstats: {flag})"),
        None => e.to_string(),
    }
}

/// The warning for fields ignored because their label came earlier in the
/// file; names at most a few labels, so a hostile file cannot flood stderr.
fn duplicates(snap: &mmstats_read::Snapshot) -> String {
    const SHOWN: usize = 5;
    let d = &snap.duplicates;
    let mut labels: Vec<String> = d.iter().take(SHOWN).map(|l| format!("{l:?}")).collect();
    if d.len() > SHOWN {
        labels.push(format!("and {} more", d.len() - SHOWN));
    }
    format!(
        "{}: {} field(s) ignored because an earlier field has the same label: {}",
        snap.info.path.display(),
        d.len(),
        labels.join(", ")
    )
}

/// Reports a problem on stderr after what was printed before it.
fn warn(out: &mut impl Write, msg: impl Display) -> io::Result<()> {
    out.flush()?;
    // Nowhere left to report a failure to write to stderr.
    let _ = writeln!(io::stderr().lock(), "slurpstats: {msg}");
    Ok(())
}
