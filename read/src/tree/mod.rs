//! The span timers of `mmstats-tracing` as trees: the view `slurpstats
//! --tree`, `pollstats --tree` and mmash's `/api/v1/tree` all show.
//!
//! The tracing layer writes one timer per span path, labelled
//! `span.busy{path=<path>}` (after any label prefix the application gave; a
//! keyed label, `mmstats::keyed_label`): the busy time of every span whose names from the root are `<path>`, names
//! separated by `/`, a `/` or `\` inside a name escaped with `\`
//! ([`split_path`], [`join_path`]). [`Trees`] turns those timers into one
//! tree per command, model and label prefix (and owner, when asked),
//! merging the timers of one path over every file:
//!
//! - [`Trees::add`] adds a file's timers as they are (their whole life);
//! - [`Trees::between`] builds the trees of what two samples of
//!   [`aggregate::Sources`](crate::aggregate::Sources) differ by: the
//!   spans of one interval, with [`View::delta`](crate::aggregate::View::delta)'s
//!   rules for files that appear, go or are folded into archives.
//!
//! Each [`Node`] has its merged timer: its total (the timer's exact sum of
//! nanoseconds), calls (the timer's count) and quantiles. A node's self
//! time is its total less its children's, never below zero; shares are
//! taken of the tree's total, the sum of its top-level nodes' totals.
//! Children are sorted by total, largest first, then by name
//! ([`Node::sorted`]). [`Trees::write_text`] prints the text form and
//! [`json::TreesJson`] is the JSON form.
//!
//! ```
//! use mmstats::{FieldDef, Layout, Options, Schema, StatsFile, Timer};
//! # let dir = tempfile::tempdir().unwrap();
//! let mut schema = Schema::new("tracing");
//! schema.push(FieldDef::timer("span.busy{path=request}", Layout::timer()));
//! schema.push(FieldDef::timer("span.busy{path=request/db}", Layout::timer()));
//! let mut file = StatsFile::create(&schema, &Options::new().dir(dir.path()))?;
//! let request: Timer = file.take("span.busy{path=request}")?;
//! let db: Timer = file.take("span.busy{path=request/db}")?;
//! request.record_ns(1000);
//! db.record_ns(250);
//!
//! mmstats_read::install_sigbus_guard()?;
//! let (files, _) = mmstats_read::discover(&[dir.path()]);
//! let mut trees = mmstats_read::tree::Trees::new();
//! trees.add(&mmstats_read::read_file(&files[0])?);
//! let tree = trees.groups.values().next().unwrap();
//! let request = &tree.root.children["request"];
//! assert_eq!((request.total(), request.self_ns(), request.calls()), (1000, 750, 1));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod interval;
pub mod json;

pub use interval::spans_only;

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};

use crate::owners::user_name;
use crate::{HistogramSnapshot, Kind, Snapshot, Value};

/// The label part before a span's path, as `mmstats-tracing` writes its
/// busy timers (after any label prefix): `span.busy{path=<path>}`, a keyed
/// label (`mmstats::keyed_label`) whose one key is `path`.
pub const BUSY: &str = "span.busy{path=";

/// The deepest a tree goes. A span deeper than this (only a hostile or
/// broken file has one: a label holds at most 16 KiB) is counted in the
/// node at this depth whose name is the rest of its path, so that nothing
/// recursing over a tree can run out of stack.
pub const MAX_DEPTH: usize = 64;

/// The quantiles each node shows: p50, p75, p95, p99 and p99.9.
pub const QUANTILES: [f64; 5] = [0.5, 0.75, 0.95, 0.99, 0.999];

/// Which tree a timer belongs to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupKey {
    /// The files' owner, as a user name; `None` unless the trees are
    /// [`Trees::by_user`].
    pub user: Option<String>,
    /// The writer's command.
    pub command: String,
    /// The stats model.
    pub model: String,
    /// What comes before `span.busy{path=` in the labels (empty by default).
    pub prefix: String,
}

/// One node: its merged timer, and its children by name.
#[derive(Clone, Debug, Default)]
pub struct Node {
    /// The timer of this path merged over files; `None` for a node that
    /// only has children (no file had a timer for its own path).
    pub hist: Option<HistogramSnapshot>,
    /// The children, by name.
    pub children: BTreeMap<String, Node>,
}

impl Node {
    /// Total busy time, in nanoseconds (the timer's exact sum; 0 without a
    /// timer or values).
    pub fn total(&self) -> u64 {
        self.hist
            .as_ref()
            .filter(|h| h.count() > 0)
            .map_or(0, HistogramSnapshot::sum)
    }

    /// Calls: the timer's count.
    pub fn calls(&self) -> u64 {
        self.hist.as_ref().map_or(0, HistogramSnapshot::count)
    }

    /// The sum of the children's totals.
    pub fn children_total(&self) -> u64 {
        self.children
            .values()
            .fold(0u64, |a, c| a.saturating_add(c.total()))
    }

    /// Self time: the total less the children's, never below zero.
    pub fn self_ns(&self) -> u64 {
        self.total().saturating_sub(self.children_total())
    }

    /// p50, p75, p95, p99 and p99.9 in nanoseconds ([`QUANTILES`]), or
    /// `None` without values.
    pub fn quantiles(&self) -> Option<[u64; 5]> {
        let h = self.hist.as_ref().filter(|h| h.count() > 0)?;
        Some(QUANTILES.map(|q| h.quantile(q).unwrap_or(0)))
    }

    /// The children sorted as every reader shows them: by total, largest
    /// first, then by name.
    pub fn sorted(&self) -> Vec<(&String, &Node)> {
        let mut v: Vec<_> = self.children.iter().collect();
        v.sort_by(|a, b| b.1.total().cmp(&a.1.total()).then(a.0.cmp(b.0)));
        v
    }

    /// How many nodes are below this one, at any depth.
    pub fn descendants(&self) -> usize {
        self.children.values().map(|c| 1 + c.descendants()).sum()
    }

    fn merge_at(&mut self, mut names: Vec<String>, h: &HistogramSnapshot) -> Result<(), String> {
        if names.len() > MAX_DEPTH {
            let rest = join_path(&names[MAX_DEPTH - 1..]);
            names.truncate(MAX_DEPTH - 1);
            names.push(rest);
        }
        let mut node = self;
        for name in names {
            node = node.children.entry(name).or_default();
        }
        match &mut node.hist {
            None => {
                node.hist = Some(h.clone());
                Ok(())
            }
            Some(mine) => mine.merge(h).map_err(|e| e.to_string()),
        }
    }
}

/// One tree: its root (which has no timer of its own) and how many files
/// gave it timers.
#[derive(Clone, Debug, Default)]
pub struct Tree {
    /// Files whose span timers it holds.
    pub files: usize,
    /// The top-level spans are the root's children.
    pub root: Node,
}

impl Tree {
    /// The tree's total time: the sum of its top-level nodes' totals. The
    /// shares of every node are taken of it.
    pub fn total(&self) -> u64 {
        self.root.children_total()
    }
}

/// The trees of every command, model and label prefix (and owner, if
/// [`Trees::by_user`]), merged over files.
#[derive(Clone, Debug, Default)]
pub struct Trees {
    /// The trees, sorted by key.
    pub groups: BTreeMap<GroupKey, Tree>,
    /// Timers that could not be merged (another bucket layout), each
    /// naming the file and the label.
    pub problems: Vec<String>,
    by_user: bool,
}

impl Trees {
    /// No trees yet; files of every owner share a tree.
    pub fn new() -> Trees {
        Trees::default()
    }

    /// No trees yet; one tree per owner too, so that files of different
    /// users never add up (as mmash keeps them apart).
    pub fn by_user() -> Trees {
        Trees {
            by_user: true,
            ..Trees::default()
        }
    }

    fn key(&self, snap: &Snapshot, user: &Option<String>, prefix: &str) -> GroupKey {
        GroupKey {
            user: user.clone(),
            command: snap.info.command.clone(),
            model: snap.info.model.clone(),
            prefix: prefix.to_owned(),
        }
    }

    /// Adds the span timers of one file, as they are (everything each
    /// recorded since the file was made).
    pub fn add(&mut self, snap: &Snapshot) {
        let mut touched = BTreeSet::new();
        let user = self.by_user.then(|| user_name(snap.info.owner));
        for f in &snap.fields {
            let (Kind::Timer, Value::Histogram(h)) = (f.kind, &f.value) else {
                continue;
            };
            let Some((prefix, path)) = span_path(&f.label) else {
                continue;
            };
            let key = self.key(snap, &user, prefix);
            touched.insert(key.clone());
            self.merge(
                key,
                &path,
                h,
                || snap.info.path.display().to_string(),
                &f.label,
            );
        }
        for key in touched {
            self.groups.get_mut(&key).expect("added above").files += 1;
        }
    }

    /// Merges `h`, the timer of span path `path`, into the tree of `key`.
    fn merge(
        &mut self,
        key: GroupKey,
        path: &str,
        h: &HistogramSnapshot,
        whence: impl FnOnce() -> String,
        label: &str,
    ) {
        let tree = self.groups.entry(key).or_default();
        if let Err(e) = tree.root.merge_at(split_path(path), h) {
            self.problems
                .push(format!("{}: timer {label:?} not merged: {e}", whence()));
        }
    }

    /// Whether no file had span timers.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Prints every tree as text: a header line per tree
    /// (`== command "svc" model "tracing" (2 files)`), then per node its
    /// share of the tree's total and in parentheses its self share, its
    /// name, a line of quantiles and a line of calls, children indented by
    /// four spaces. `duration` spells nanoseconds for people.
    pub fn write_text(
        &self,
        out: &mut impl Write,
        duration: impl Fn(f64) -> String,
    ) -> io::Result<()> {
        for (i, (key, tree)) in self.groups.iter().enumerate() {
            if i > 0 {
                writeln!(out)?;
            }
            let GroupKey {
                user,
                command,
                model,
                prefix,
            } = key;
            let files = tree.files;
            let s = if files == 1 { "" } else { "s" };
            let user = user
                .as_ref()
                .map_or(String::new(), |u| format!(" user {u:?}"));
            let prefix = if prefix.is_empty() {
                String::new()
            } else {
                format!(" prefix {prefix:?}")
            };
            writeln!(
                out,
                "== command {command:?} model {model:?}{user}{prefix} ({files} file{s})"
            )?;
            write_children(out, &tree.root, tree.total(), 0, &duration)?;
        }
        Ok(())
    }
}

/// `part * 100 / total`, 0 when the total is.
pub fn percent(part: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        part as f64 * 100.0 / total as f64
    }
}

fn write_children(
    out: &mut impl Write,
    node: &Node,
    total: u64,
    depth: usize,
    duration: &impl Fn(f64) -> String,
) -> io::Result<()> {
    let pad = "    ".repeat(depth);
    for (name, child) in node.sorted() {
        writeln!(
            out,
            "{pad}{:5.1}% ({:4.1}%) | {name}",
            percent(child.total(), total),
            percent(child.self_ns(), total)
        )?;
        match child.quantiles() {
            Some(q) => {
                let d = |i: usize| duration(q[i] as f64);
                writeln!(
                    out,
                    "{pad}    50th {}, 75th {}, 95th {}, 99th {}, 99.9th {}",
                    d(0),
                    d(1),
                    d(2),
                    d(3),
                    d(4)
                )?;
                writeln!(out, "{pad}    {} calls", child.calls())?;
            }
            None => writeln!(out, "{pad}    0 calls")?,
        }
        write_children(out, child, total, depth + 1, duration)?;
    }
    Ok(())
}

/// The label prefix and span path of a busy timer's label, if it is one:
/// `PREFIXspan.busy{path=PATH}`, with the keyed label's escapes in PATH
/// undone (`\n` is a newline, `\xHH` that character, `\` before any other
/// character keeps it).
pub fn span_path(label: &str) -> Option<(&str, Cow<'_, str>)> {
    let at = label.find(BUSY)?;
    let escaped = label[at + BUSY.len()..].strip_suffix('}')?;
    if !escaped.contains('\\') {
        return Some((&label[..at], Cow::Borrowed(escaped)));
    }
    let mut path = String::with_capacity(escaped.len());
    let mut chars = escaped.chars();
    while let Some(c) = chars.next() {
        match (c, c == '\\') {
            (_, true) => match chars.next() {
                Some('n') => path.push('\n'),
                Some('x') => {
                    let hex: String = chars.by_ref().take(2).collect();
                    let code = u32::from_str_radix(&hex, 16).ok()?;
                    path.push(char::from_u32(code)?);
                }
                Some(n) => path.push(n),
                None => return None,
            },
            (c, false) => path.push(c),
        }
    }
    Some((&label[..at], Cow::Owned(path)))
}

/// Splits a span path into names: `/` separates them, `\` escapes the next
/// character (the rule of `mmstats-tracing`).
pub fn split_path(path: &str) -> Vec<String> {
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

/// The span path of `names`: the inverse of [`split_path`].
pub fn join_path<S: AsRef<str>>(names: &[S]) -> String {
    let mut out = String::new();
    for (i, name) in names.iter().enumerate() {
        if i > 0 {
            out.push('/');
        }
        for c in name.as_ref().chars() {
            if matches!(c, '/' | '\\') {
                out.push('\\');
            }
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests;
