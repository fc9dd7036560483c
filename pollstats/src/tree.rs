//! `--tree`: the span timers of `mmstats-tracing` as a tree per command and
//! model, for each interval ([`mmstats_read::tree::Trees::between`]).
//!
//! On a terminal the screen is cleared and the tree drawn again in place
//! each interval, as `watch` does; otherwise each tree follows a header
//! line with its time and interval, so the output can be piped and read.

use std::io::{self, Write};
use std::time::{Duration, UNIX_EPOCH};

use mmstats_read::aggregate::Sample;
use mmstats_read::tree::json::TreesJson;
use mmstats_read::tree::Trees;
use serde::Serialize;

use crate::human;

/// ANSI: cursor to the top left, then clear the screen.
const CLEAR: &str = "\x1b[H\x1b[2J";

/// Nodes per line of `--tree --json` at most; past it, `truncated` is true.
pub const MAX_JSON_NODES: usize = 100_000;

/// The trees between `prev` and `sample`, with their problems (timers
/// that could not be merged, that went backwards).
pub fn trees(prev: Option<&Sample>, sample: &Sample) -> Trees {
    Trees::between(prev, sample, false)
}

/// Prints one interval's trees: after a header line
/// (`--- 2026-11-22T04:35:38.123Z, interval 1s ---`), or on a cleared
/// screen when `tty`.
pub fn write(
    out: &mut impl Write,
    trees: &Trees,
    sample: &Sample,
    interval: Option<Duration>,
    tty: bool,
) -> io::Result<()> {
    if tty {
        out.write_all(CLEAR.as_bytes())?;
    }
    let nanos = sample
        .time
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let span = match interval {
        Some(i) => format!("interval {}", human::duration_ns(i.as_nanos() as f64)),
        None => "since each file started".to_owned(),
    };
    writeln!(out, "--- {} {span} ---", human::rfc3339(nanos))?;
    if trees.is_empty() {
        writeln!(
            out,
            "(no span timers: span.busy{{path=...}} timers are written by the mmstats-tracing layer)"
        )?;
    }
    trees.write_text(out, human::duration_ns)
}

/// One interval's trees as one JSON line (`--tree --json`): the time,
/// the interval in seconds (`null` for the first, which covers each
/// file's whole life), then mmash's `/api/v1/tree` object.
pub fn write_json(
    out: &mut impl Write,
    trees: &Trees,
    sample: &Sample,
    interval: Option<Duration>,
) -> io::Result<()> {
    #[derive(Serialize)]
    struct Line<'a> {
        time: String,
        interval_s: Option<f64>,
        #[serde(flatten)]
        trees: TreesJson<'a>,
    }
    let nanos = sample
        .time
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let line = Line {
        time: human::rfc3339(nanos),
        interval_s: interval.map(|i| i.as_secs_f64()),
        trees: TreesJson::new(trees, MAX_JSON_NODES),
    };
    serde_json::to_writer(&mut *out, &line).map_err(io::Error::from)?;
    writeln!(out)
}
