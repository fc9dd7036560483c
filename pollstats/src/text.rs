//! The text output, vmstat style: a two-line header, then one row per
//! interval with one right-aligned column per series. When the columns do
//! not fit the terminal, one line per series per interval instead.

use std::collections::BTreeSet;
use std::io::{self, Write};
use std::time::UNIX_EPOCH;

use mmstats::{HistogramSnapshot, Kind};
use mmstats_read::aggregate::{Delta, Series, SeriesKey, SeriesValue};

use crate::human;
use crate::Mode;

/// Longest column name; longer labels are cut from the left.
const MAX_NAME: usize = 16;
/// Narrowest value column.
const MIN_WIDTH: usize = 6;
/// Between columns.
const GAP: &str = "  ";

/// One series' column: a single value, or `/s p50 p99` for a histogram.
struct Column {
    key: SeriesKey,
    name: String,
    histogram: bool,
    /// Width of each sub-column.
    width: usize,
}

impl Column {
    fn span(&self) -> usize {
        if self.histogram {
            3 * self.width + 2 * GAP.len()
        } else {
            self.width
        }
    }
}

/// The table: its columns, and when to print the header again.
pub struct Table {
    mode: Mode,
    keys: BTreeSet<SeriesKey>,
    prefix: String,
    columns: Vec<Column>,
    rows_since_header: usize,
    /// `-n/--headers`: print the header again every this many rows.
    header_every: Option<u64>,
    /// Printing one line per series because the columns do not fit.
    long: bool,
    /// The note about `long` has been printed.
    told: bool,
}

/// The time and files columns.
const TIME_W: usize = 8;
const FILES_W: usize = 9;

impl Table {
    /// A table with no columns yet; they come from the deltas.
    pub fn new(mode: Mode) -> Table {
        Table {
            mode,
            keys: BTreeSet::new(),
            prefix: String::new(),
            columns: Vec::new(),
            rows_since_header: 0,
            header_every: None,
            long: false,
            told: false,
        }
    }

    /// Prints the header again every `n` rows (`-n/--headers`), as well as
    /// once a screen on a terminal.
    pub fn set_header_every(&mut self, n: Option<u64>) {
        self.header_every = n;
    }

    /// Width of one row.
    fn width(&self) -> usize {
        TIME_W
            + GAP.len()
            + FILES_W
            + self
                .columns
                .iter()
                .map(|c| GAP.len() + c.span())
                .sum::<usize>()
    }

    /// Adds columns for series not seen before; returns whether any were.
    fn update_columns(&mut self, delta: &Delta) -> bool {
        let before = self.keys.len();
        self.keys.extend(delta.series.keys().cloned());
        if self.keys.len() == before && !self.columns.is_empty() {
            return false;
        }
        self.prefix = common_prefix(self.keys.iter().map(|k| k.label.as_str()));
        self.columns = self
            .keys
            .iter()
            .map(|key| {
                let mut name = key.label[self.prefix.len()..].to_owned();
                if name.is_empty() {
                    name = key.label.clone();
                }
                if let Some((_, v)) = &key.group {
                    name = format!("{name}[{v}]");
                }
                let name = cut_left(&name, MAX_NAME);
                let histogram = delta
                    .series
                    .get(key)
                    .is_some_and(|s| matches!(s.kind, Kind::Histogram | Kind::Timer));
                let len = name.chars().count();
                let width = if histogram {
                    // The name spans the three sub-columns.
                    MIN_WIDTH.max(len.saturating_sub(2 * GAP.len()).div_ceil(3))
                } else {
                    MIN_WIDTH.max(len)
                };
                Column {
                    key: key.clone(),
                    name,
                    histogram,
                    width,
                }
            })
            .collect();
        true
    }

    /// Writes one interval. `screen` is the terminal's (columns, rows), or
    /// `None` when not writing to a terminal (no width limit, one header).
    pub fn write(
        &mut self,
        out: &mut impl Write,
        delta: &Delta,
        screen: Option<(usize, usize)>,
    ) -> io::Result<()> {
        let changed = self.update_columns(delta);
        let fits = screen.is_none_or(|(cols, _)| self.width() <= cols);
        if !fits && !self.told {
            self.told = true;
            let (cols, _) = screen.unwrap_or_default();
            // Nowhere left to report a failure to write to stderr.
            let _ = writeln!(
                io::stderr(),
                "pollstats: {} series need {} columns, the terminal has {cols}: \
                 showing one line per series (name fewer labels to narrow the selection, \
                 e.g. pollstats {})",
                self.keys.len(),
                self.width(),
                self.keys.first().map_or("LABEL", |k| k.label.as_str()),
            );
        }
        self.long = !fits;
        if self.long {
            return self.write_long(out, delta, screen.map(|(c, _)| c));
        }
        let page = screen.map_or(usize::MAX, |(_, rows)| rows.saturating_sub(2).max(1));
        let page = self
            .header_every
            .map_or(page, |n| usize::try_from(n).unwrap_or(usize::MAX).min(page));
        if changed || self.rows_since_header >= page {
            if delta.first {
                writeln!(
                    out,
                    "{}first row: since each file started; times UTC",
                    if self.prefix.is_empty() {
                        String::new()
                    } else {
                        format!("labels {}*; ", self.prefix)
                    }
                )?;
            }
            self.header(out)?;
            self.rows_since_header = 0;
        }
        let mut line = format!(
            "{:>TIME_W$}{GAP}{:>FILES_W$}",
            clock(delta),
            format!("{}/{}", delta.alive, delta.dead)
        );
        for c in &self.columns {
            line += GAP;
            let cells = match delta.series.get(&c.key) {
                Some(s) => self.cells(delta, s),
                None => vec!["-".to_string(); if c.histogram { 3 } else { 1 }],
            };
            let w = c.width;
            if c.histogram && cells.len() == 3 {
                line += &format!("{:>w$}{GAP}{:>w$}{GAP}{:>w$}", cells[0], cells[1], cells[2]);
            } else {
                let text = cells.join(" ");
                line += &format!("{:>w$}", cut_left(&text, c.span()), w = c.span());
            }
        }
        writeln!(out, "{}", line.trim_end())?;
        self.rows_since_header += 1;
        Ok(())
    }

    /// The two header lines: histogram names over their sub-columns, then
    /// every column's name.
    fn header(&self, out: &mut impl Write) -> io::Result<()> {
        let mut top = format!("{:TIME_W$}{GAP}{:FILES_W$}", "", "");
        let mut names = format!("{:>TIME_W$}{GAP}{:>FILES_W$}", "time", "live/dead");
        for c in &self.columns {
            top += GAP;
            names += GAP;
            let w = c.width;
            if c.histogram {
                top += &dashed(&c.name, c.span());
                let unit = if self.mode.delta { "n" } else { "/s" };
                names += &format!("{unit:>w$}{GAP}{:>w$}{GAP}{:>w$}", "p50", "p99");
            } else {
                top += &" ".repeat(c.span());
                names += &format!("{:>w$}", c.name);
            }
        }
        writeln!(out, "{}", top.trim_end())?;
        writeln!(out, "{}", names.trim_end())
    }

    /// The cells of one series: one value, or count (or rate), p50, p99.
    fn cells(&self, delta: &Delta, s: &Series) -> Vec<String> {
        let secs = delta.interval.as_secs_f64();
        let rate = |x: f64| {
            if secs > 0.0 {
                human::number(x / secs)
            } else {
                "-".into()
            }
        };
        match &s.value {
            SeriesValue::Histogram(h) => {
                let n = h.count() as f64;
                let count = if self.mode.delta {
                    human::number(n)
                } else {
                    rate(n)
                };
                vec![count, quantile(h, s.kind, 0.5), quantile(h, s.kind, 0.99)]
            }
            SeriesValue::Int(n) if self.mode.is_rate(s.kind) => vec![rate(*n as f64)],
            SeriesValue::Float(x) if self.mode.is_rate(s.kind) => vec![rate(*x)],
            SeriesValue::Int(n) => vec![human::number(*n as f64)],
            SeriesValue::Float(x) => vec![human::number(*x)],
            SeriesValue::Text(t) => vec![printable(&t.join(","))],
            SeriesValue::Missing => vec!["-".into()],
        }
    }

    /// One line per series: `label  value`, after a line with the time and
    /// files.
    fn write_long(
        &self,
        out: &mut impl Write,
        delta: &Delta,
        cols: Option<usize>,
    ) -> io::Result<()> {
        writeln!(
            out,
            "{}  {} live, {} dead{}",
            clock(delta),
            delta.alive,
            delta.dead,
            if delta.first { ", since start" } else { "" }
        )?;
        let width = self
            .keys
            .iter()
            .map(|k| k.to_string().chars().count())
            .max()
            .unwrap_or(0);
        let mut lines = Vec::with_capacity(self.keys.len());
        for key in &self.keys {
            let value = match delta.series.get(key) {
                None => "-".to_string(),
                Some(s) => {
                    let cells = self.cells(delta, s);
                    let per = if self.mode.delta { "" } else { "/s" };
                    match (&s.value, cells.as_slice()) {
                        (SeriesValue::Histogram(_), [n, p50, p99]) => {
                            format!("{n}{per}  p50 {p50}  p99 {p99}")
                        }
                        (_, [v]) if self.mode.is_rate(s.kind) => format!("{v}{per}"),
                        _ => cells.join(" "),
                    }
                }
            };
            lines.push((printable(&key.to_string()), value));
        }
        // Names give way to values when the terminal is narrow.
        let w = lines
            .iter()
            .filter_map(|(_, v)| cols.map(|c| c.saturating_sub(v.chars().count() + 4)))
            .fold(width, usize::min)
            .max(1);
        for (name, value) in lines {
            let name = cut_left(&name, w);
            writeln!(out, "  {name:<w$}  {value}")?;
        }
        Ok(())
    }
}

fn quantile(h: &HistogramSnapshot, kind: Kind, q: f64) -> String {
    match h.quantile(q) {
        None => "-".into(),
        Some(v) if kind == Kind::Timer => human::duration_ns(v as f64),
        Some(v) => human::number(v as f64),
    }
}

fn clock(delta: &Delta) -> String {
    human::clock(
        delta
            .time
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    )
}

/// `name` centred in dashes over `width` columns: `---request---`.
fn dashed(name: &str, width: usize) -> String {
    let name = cut_left(name, width);
    let len = name.chars().count();
    let left = (width - len) / 2;
    format!(
        "{}{name}{}",
        "-".repeat(left),
        "-".repeat(width - len - left)
    )
}

/// `s` in at most `max` characters, cut from the left: `…ng.label`.
fn cut_left(s: &str, max: usize) -> String {
    let n = s.chars().count();
    if n <= max {
        return s.to_owned();
    }
    let keep: String = s.chars().skip(n - (max - 1)).collect();
    format!("…{keep}")
}

/// The longest prefix ending in `.` that every label has (none for a
/// single label, which is shown whole).
fn common_prefix<'a>(mut labels: impl Iterator<Item = &'a str>) -> String {
    let Some(first) = labels.next() else {
        return String::new();
    };
    let mut len = first.len();
    let mut n = 1;
    for l in labels {
        n += 1;
        len = first
            .bytes()
            .zip(l.bytes())
            .take(len)
            .take_while(|(a, b)| a == b)
            .count();
    }
    if n < 2 {
        return String::new();
    }
    match first[..len].rfind('.') {
        Some(i) => first[..=i].to_owned(),
        None => String::new(),
    }
}

/// `s` with control characters escaped, so a hostile label or text value
/// cannot break the layout.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_end_at_a_dot() {
        let p = |l: &[&str]| common_prefix(l.iter().copied());
        assert_eq!(p(&["web.status.2xx", "web.status.5xx"]), "web.status.");
        assert_eq!(p(&["web.status.2xx", "web.request"]), "web.");
        assert_eq!(p(&["web.a", "db.b"]), "");
        assert_eq!(p(&["web.a"]), "");
    }

    #[test]
    fn long_names_are_cut_from_the_left() {
        assert_eq!(cut_left("short", 16), "short");
        assert_eq!(cut_left("a.very.long.label.name", 10), "…abel.name");
        assert_eq!(dashed("request", 20), "------request-------");
    }
}
