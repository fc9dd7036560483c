//! `--tree`: the span timers of `mmstats-tracing` (`span.busy/<path>`),
//! merged over files per command and model, printed as a tree.
//!
//! Each node: its share of the tree's total time (the sum of its top-level
//! nodes' busy time), in parentheses its self share (its time minus its
//! children's, not below zero), its p50, p75, p95, p99 and p99.9, and its
//! calls (the timer's count). Children are indented by four spaces under
//! their parent and sorted by total time, largest first (then by name).

use std::collections::BTreeMap;
use std::io::{self, Write};

use mmstats_read::{HistogramSnapshot, Kind, Snapshot, Value};

use crate::human::duration_ns;

/// The label part before a span's path (as `mmstats-tracing` writes it,
/// after any label prefix).
const BUSY: &str = "span.busy/";

/// One node: its merged timer, and its children by name.
#[derive(Default)]
struct Node {
    hist: Option<HistogramSnapshot>,
    children: BTreeMap<String, Node>,
}

impl Node {
    fn total(&self) -> u64 {
        self.hist.as_ref().map_or(0, HistogramSnapshot::sum)
    }
}

/// The trees of every (command, model, label prefix), merged over files.
#[derive(Default)]
pub struct Trees {
    groups: BTreeMap<(String, String, String), (usize, Node)>,
    /// Timers that could not be merged (another bucket layout).
    pub problems: Vec<String>,
}

impl Trees {
    /// Adds the span timers of one file.
    pub fn add(&mut self, snap: &Snapshot) {
        let mut touched = std::collections::BTreeSet::new();
        for f in &snap.fields {
            let Some(at) = f.label.find(BUSY) else {
                continue;
            };
            let (Kind::Timer, Value::Histogram(h)) = (f.kind, &f.value) else {
                continue;
            };
            let prefix = f.label[..at].to_owned();
            let key = (snap.info.command.clone(), snap.info.model.clone(), prefix);
            touched.insert(key.clone());
            let entry = self.groups.entry(key).or_default();
            let mut node = &mut entry.1;
            for name in split_path(&f.label[at + BUSY.len()..]) {
                node = node.children.entry(name).or_default();
            }
            match &mut node.hist {
                None => node.hist = Some(h.clone()),
                Some(mine) => {
                    if let Err(e) = mine.merge(h) {
                        self.problems.push(format!(
                            "{}: timer {:?} not merged: {e}",
                            snap.info.path.display(),
                            f.label
                        ));
                    }
                }
            }
        }
        for key in touched {
            self.groups.get_mut(&key).expect("added above").0 += 1;
        }
    }

    /// Whether no file had span timers.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Prints every tree.
    pub fn write(&self, out: &mut impl Write) -> io::Result<()> {
        for (i, ((command, model, prefix), (files, root))) in self.groups.iter().enumerate() {
            if i > 0 {
                writeln!(out)?;
            }
            let s = if *files == 1 { "" } else { "s" };
            let prefix = if prefix.is_empty() {
                String::new()
            } else {
                format!(" prefix {prefix:?}")
            };
            writeln!(
                out,
                "== command {command:?} model {model:?}{prefix} ({files} file{s})"
            )?;
            let total: u64 = root.children.values().map(Node::total).sum();
            write_children(out, root, total, 0)?;
        }
        Ok(())
    }
}

fn sorted(node: &Node) -> Vec<(&String, &Node)> {
    let mut v: Vec<_> = node.children.iter().collect();
    v.sort_by(|a, b| b.1.total().cmp(&a.1.total()).then(a.0.cmp(b.0)));
    v
}

fn percent(part: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        part as f64 * 100.0 / total as f64
    }
}

fn write_children(out: &mut impl Write, node: &Node, total: u64, depth: usize) -> io::Result<()> {
    let pad = "    ".repeat(depth);
    for (name, child) in sorted(node) {
        let mine = child.total();
        let kids: u64 = child.children.values().map(Node::total).sum();
        let own = mine.saturating_sub(kids);
        writeln!(
            out,
            "{pad}{:5.1}% ({:4.1}%) | {name}",
            percent(mine, total),
            percent(own, total)
        )?;
        match &child.hist {
            Some(h) if h.count() > 0 => {
                let q = |q: f64| duration_ns(h.quantile(q).unwrap_or(0) as f64);
                writeln!(
                    out,
                    "{pad}    50th {}, 75th {}, 95th {}, 99th {}, 99.9th {}",
                    q(0.5),
                    q(0.75),
                    q(0.95),
                    q(0.99),
                    q(0.999)
                )?;
                writeln!(out, "{pad}    {} calls", h.count())?;
            }
            _ => writeln!(out, "{pad}    0 calls")?,
        }
        write_children(out, child, total, depth + 1)?;
    }
    Ok(())
}

/// Splits a span path into names: `/` separates them, `\` escapes the next
/// character (the rule of `mmstats-tracing`).
fn split_path(path: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = path.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    out.last_mut().expect("never empty").push(n);
                }
            }
            '/' => out.push(String::new()),
            c => out.last_mut().expect("never empty").push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_on_unescaped_slashes() {
        assert_eq!(split_path("a/b\\/c/d\\\\"), ["a", "b/c", "d\\"]);
    }
}
