//! The JSON form of [`Trees`], as mmash's `/api/v1/tree` serves it.
//!
//! ```text
//! {"trees": [{"user": str (only when split by owner), "command": str,
//!             "model": str, "prefix": str, "files": int, "total_ns": u64,
//!             "nodes": [node, ...]}],
//!  "nodes": int, "truncated": bool}
//! node: {"name": str, "path": str, "total_ns": u64, "self_ns": u64,
//!        "share": f64, "self_share": f64, "calls": u64,
//!        "p50_ns", "p75_ns", "p95_ns", "p99_ns", "p999_ns": u64 or null,
//!        "children": [node, ...]}
//! ```
//!
//! `path` is the span path as the timer's label spells it (names joined by
//! `/`, a `/` or `\` in a name escaped with `\`); `share` and `self_share`
//! are fractions (0 to 1) of the tree's `total_ns`. Trees come sorted by
//! key, children by total then name, as in the text form. At most
//! `max_nodes` nodes are given, taken depth first in that order: past it,
//! the remaining nodes are left out and `truncated` is true.

use serde::Serialize;

use super::{join_path, percent, GroupKey, Node, Trees};

/// Every tree.
#[derive(Debug, Serialize)]
#[non_exhaustive]
pub struct TreesJson<'a> {
    /// The trees, sorted by owner, command, model and prefix.
    pub trees: Vec<TreeJson<'a>>,
    /// How many nodes are given, in all trees.
    pub nodes: usize,
    /// Whether nodes were left out to stay within the cap.
    pub truncated: bool,
}

/// One tree.
#[derive(Debug, Serialize)]
#[non_exhaustive]
pub struct TreeJson<'a> {
    /// The files' owner, when the trees are split by owner.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<&'a str>,
    /// The writer's command.
    pub command: &'a str,
    /// The stats model.
    pub model: &'a str,
    /// The label prefix before `span.busy{path=`.
    pub prefix: &'a str,
    /// Files whose timers it holds.
    pub files: usize,
    /// The sum of its top-level nodes' totals, ns.
    pub total_ns: u64,
    /// The top-level nodes.
    pub nodes: Vec<NodeJson<'a>>,
}

/// One node.
#[derive(Debug, Serialize)]
#[non_exhaustive]
pub struct NodeJson<'a> {
    /// The span's name.
    pub name: &'a str,
    /// Its span path from the root, escaped as in the label.
    pub path: String,
    /// Busy time, ns.
    pub total_ns: u64,
    /// Busy time less the children's, not below zero, ns.
    pub self_ns: u64,
    /// `total_ns` over the tree's total (0 to 1).
    pub share: f64,
    /// `self_ns` over the tree's total (0 to 1).
    pub self_share: f64,
    /// The timer's count.
    pub calls: u64,
    /// Median, ns; null without values.
    pub p50_ns: Option<u64>,
    /// 75th percentile, ns.
    pub p75_ns: Option<u64>,
    /// 95th percentile, ns.
    pub p95_ns: Option<u64>,
    /// 99th percentile, ns.
    pub p99_ns: Option<u64>,
    /// 99.9th percentile, ns.
    pub p999_ns: Option<u64>,
    /// The children, sorted by total then name.
    pub children: Vec<NodeJson<'a>>,
}

impl<'a> TreesJson<'a> {
    /// The JSON form of `trees`, with at most `max_nodes` nodes.
    pub fn new(trees: &'a Trees, max_nodes: usize) -> TreesJson<'a> {
        let mut left = max_nodes;
        let mut truncated = false;
        let mut out = Vec::new();
        for (key, tree) in &trees.groups {
            let GroupKey {
                user,
                command,
                model,
                prefix,
            } = key;
            let total = tree.total();
            let mut path = Vec::new();
            let nodes = children(&tree.root, total, &mut path, &mut left, &mut truncated);
            out.push(TreeJson {
                user: user.as_deref(),
                command,
                model,
                prefix,
                files: tree.files,
                total_ns: total,
                nodes,
            });
        }
        TreesJson {
            trees: out,
            nodes: max_nodes - left,
            truncated,
        }
    }
}

fn children<'a>(
    node: &'a Node,
    total: u64,
    path: &mut Vec<&'a str>,
    left: &mut usize,
    truncated: &mut bool,
) -> Vec<NodeJson<'a>> {
    let mut out = Vec::new();
    for (name, child) in node.sorted() {
        if *left == 0 {
            *truncated = true;
            break;
        }
        *left -= 1;
        path.push(name);
        let q = child.quantiles();
        let at = |i: usize| q.map(|q| q[i]);
        let (mine, own) = (child.total(), child.self_ns());
        let node = NodeJson {
            name,
            path: join_path(path),
            total_ns: mine,
            self_ns: own,
            share: percent(mine, total) / 100.0,
            self_share: percent(own, total) / 100.0,
            calls: child.calls(),
            p50_ns: at(0),
            p75_ns: at(1),
            p95_ns: at(2),
            p99_ns: at(3),
            p999_ns: at(4),
            children: children(child, total, path, left, truncated),
        };
        path.pop();
        out.push(node);
    }
    out
}
