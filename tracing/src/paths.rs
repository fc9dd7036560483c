//! Span paths: their labels (separator and escaping) and the table that
//! gives each distinct path an id, shared by the threads of one layer.

use std::collections::HashMap;

/// The separator between the span names of a path.
pub const SEPARATOR: char = '/';
/// The name of the node that paths past the cap fold into.
pub const OTHER: &str = "other";

/// Appends span name `name` to `out`, escaping `\` and `/` with a
/// backslash so that a name containing the separator stays one segment.
pub fn push_segment(out: &mut String, name: &str) {
    for c in name.chars() {
        if c == '\\' || c == SEPARATOR {
            out.push('\\');
        }
        out.push(c);
    }
}

/// Splits a path label into its span names, undoing [`push_segment`].
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
            SEPARATOR => out.push(String::new()),
            c => out.last_mut().expect("never empty").push(c),
        }
    }
    out
}

/// No parent: a root span.
pub(crate) const ROOT: u32 = u32::MAX;

/// Every distinct path seen by one layer, on any thread.
#[derive(Debug, Default)]
pub(crate) struct Paths {
    ids: HashMap<(u32, &'static str), u32>,
    /// Per id: the path label and the parent's id.
    pub(crate) nodes: Vec<(String, u32)>,
}

impl Paths {
    /// The id of the path `parent` / `name`, made on first sight.
    pub(crate) fn id(&mut self, parent: u32, name: &'static str) -> u32 {
        if let Some(id) = self.ids.get(&(parent, name)) {
            return *id;
        }
        let mut label = match parent {
            ROOT => String::new(),
            p => format!("{}{SEPARATOR}", self.nodes[p as usize].0),
        };
        push_segment(&mut label, name);
        let id = self.nodes.len() as u32;
        self.nodes.push((label, parent));
        self.ids.insert((parent, name), id);
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_escape_the_separator() {
        let mut p = Paths::default();
        let a = p.id(ROOT, "req/uest");
        let b = p.id(a, "db\\q");
        assert_eq!(p.nodes[b as usize].0, "req\\/uest/db\\\\q");
        assert_eq!(split_path(&p.nodes[b as usize].0), ["req/uest", "db\\q"]);
        assert_eq!(p.id(ROOT, "req/uest"), a);
        assert_ne!(p.id(b, "x"), p.id(a, "x"), "two parents, two nodes");
    }
}
