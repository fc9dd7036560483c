//! `slurpstats`: dump every metric of every mmstats file, as aligned text or
//! as one JSON array.
//!
//! Files are found with [`mmstats::discover`] and read with
//! [`mmstats::Reader`]; a file that cannot be read is reported on stderr
//! and the others are still printed. Exit status: 0 if everything was read,
//! 1 if a path or file failed, 2 for a usage error. A closed stdout (as in
//! `slurpstats | head -1`) ends the program quietly with status 0.
#![forbid(unsafe_code)]

mod human;
mod json;
mod text;

use std::ffi::OsString;
use std::fmt::Display;
use std::io::{self, BufWriter, Write};
use std::process::ExitCode;

use clap::Parser;

const ABOUT: &str = "Dump every metric of every mmstats file, as text or JSON.";

const LONG_ABOUT: &str = "\
Dump every metric of every mmstats file, as text or JSON.

Each PATH may be a stats file, a directory (its *.mmstats files, not hidden \
ones, not recursing) or a glob pattern (quote it so the shell leaves it \
alone). With no PATH, the default directories are read: $MMSTATS_DIR if it is \
set, else every /dev/shm/mmstats-* directory (one per user).

Text output: per file, a line with its path, writer pid and tid, command, \
model, whether the writer is alive (or dead: exited, or crashed without \
closing the file), the file's age and format version; then its fields as \
`label  value` lines sorted by label. Text is quoted; timers show count, mean, \
p50, p99, p99.9 and max in ns/µs/ms/s; histograms the same in their own unit.

A file that cannot be read, or a path that matches nothing, is reported on \
stderr as `slurpstats: ...` and the rest are still printed. Exit status: 0 if \
everything was read, 1 if any path or file failed, 2 for a usage error.";

const JSON_HELP: &str = "\
JSON output (--json): one array, one object per file, in the order files were found:
  {\"file\": path, \"pid\": u32, \"tid\": u32, \"command\": str, \"model\": str,
   \"alive\": bool, \"state\": \"active\"|\"exited\"|\"unknown\",
   \"created_unix_ns\": u64, \"version\": \"MAJOR.MINOR\", \"skipped_fields\": int,
   \"stats\":  {label: value},
   \"fields\": {label: {\"kind\", \"unit\", \"help\", \"static_labels\": {key: value}}}}
Values: counter u64 (exact), gauge i64, gauge_f64 number (null if not finite),
text and constant strings, unavailable null; histogram and timer objects
  {\"count\", \"sum\", \"mean\", \"min\", \"max\", \"p50\", \"p75\", \"p90\", \"p95\", \"p99\", \"p999\",
   \"buckets\": [[lower, upper, count], ...]}
in the field's unit (nanoseconds for timers), non-empty buckets only; an empty
one has count 0, sum 0, null statistics and no buckets. \"kind\" is one of
counter, gauge, gauge_f64, text, constant, histogram, timer.";

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
}

fn main() -> ExitCode {
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

/// Prints every file; `Ok(false)` if some path or file failed. An `Err` is
/// a failure to install the SIGBUS guard or to write the output.
fn run(args: &Args) -> io::Result<bool> {
    mmstats::install_sigbus_guard()?;
    let (files, problems) = mmstats::discover(&args.paths);
    let mut out = BufWriter::new(io::stdout().lock());
    let mut all_read = problems.is_empty();
    for p in &problems {
        warn(&mut out, p)?;
    }
    if files.is_empty() && args.paths.is_empty() && problems.is_empty() {
        warn(
            &mut out,
            "no stats files found in the default directories ($MMSTATS_DIR, or /dev/shm/mmstats-*)",
        )?;
    }
    if args.json {
        out.write_all(b"[")?;
    }
    let mut first = true;
    for path in &files {
        let snap = match mmstats::Reader::open(path).and_then(|r| r.snapshot()) {
            Ok(snap) => snap,
            Err(e) => {
                all_read = false;
                warn(&mut out, e)?;
                continue;
            }
        };
        if args.json {
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
    out.flush()?;
    Ok(all_read)
}

/// Reports a problem on stderr after what was printed before it.
fn warn(out: &mut impl Write, msg: impl Display) -> io::Result<()> {
    out.flush()?;
    // Nowhere left to report a failure to write to stderr.
    let _ = writeln!(io::stderr().lock(), "slurpstats: {msg}");
    Ok(())
}
