//! A field's static labels as Prometheus labels, for files of any writer.
//!
//! - **Family name.** A series that exports static labels is named after
//!   its field's label without a trailing `{...}` part, when the label has
//!   one (from its first `{`, not at the start, to a final `}`): the
//!   mmstats-metrics convention, where `counter!("http.requests", "route"
//!   => "/a")` is the field `http.requests{route=/a}` with the static label
//!   `route=/a`. Otherwise, and for a series that exports none, the whole
//!   label names it, as before. Then [`super::metric_name`] applies.
//! - **Keys.** Each key is sanitised to `[a-zA-Z_][a-zA-Z0-9_]*` (every
//!   other character becomes `_`, a leading digit or an empty key gets a
//!   `_` before it). A key that comes out as a label mmash sets itself
//!   ([`OWN_LABELS`]) or that starts with `__` (Prometheus' reserved names)
//!   gets `exported_` in front, as Prometheus does when a target's label
//!   clashes with its own. A key that comes out the same as an earlier one
//!   of the field is dropped (the first, in the file's order, is kept).
//! - **Values** are exported as they are, escaped by the exposition format
//!   (`\`, `"` and newline). A label with an empty value is left out:
//!   Prometheus takes `k=""` for no label `k` at all.
//! - **Bounds.** A field with more than [`MAX_STATIC_LABELS`] static labels
//!   (of non-empty value), or one whose key or value is longer than
//!   [`MAX_STATIC_LABEL_LEN`] bytes, exports none of them: its series is
//!   named after the whole label, like a field without static labels, and
//!   mmash logs it once per owner. Its counts are never dropped.
//!
//! The exported labels are sorted by name, so one set is always written the
//! same way.

use std::fmt;

/// The most static labels one series exports.
pub const MAX_STATIC_LABELS: usize = 16;

/// The longest static label key or value exported, in bytes.
pub const MAX_STATIC_LABEL_LEN: usize = 1024;

/// Labels mmash sets on series itself: the owner, the `--by` keys (all of
/// them, whatever `--by` says, so a series' label names never depend on
/// mmash's flags), the label that tells families apart, and the histogram
/// bucket bound. A static label key equal to one of these gets `exported_`
/// in front.
pub const OWN_LABELS: [&str; 8] = [
    "user",
    "command",
    "model",
    "pid",
    "file",
    "label",
    "mmstats_label",
    "le",
];

/// Why a field's static labels are not exported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Oversized {
    /// More than [`MAX_STATIC_LABELS`] labels with a value.
    TooMany(usize),
    /// A key or value longer than [`MAX_STATIC_LABEL_LEN`] bytes: the
    /// key (at most its first 64 bytes) and the length.
    TooLong(String, usize),
}

impl fmt::Display for Oversized {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Oversized::TooMany(n) => write!(
                f,
                "{n} static labels, more than the {MAX_STATIC_LABELS} exported"
            ),
            Oversized::TooLong(key, len) => write!(
                f,
                "static label {key:?} has a key or value of {len} bytes, more than the {MAX_STATIC_LABEL_LEN} exported"
            ),
        }
    }
}

/// The Prometheus labels of a field's static labels, sorted by name (see
/// the [module](self) docs); an error if the field is over the bounds.
pub fn export(static_labels: &[(String, String)]) -> Result<Vec<(String, String)>, Oversized> {
    let with_value = || static_labels.iter().filter(|(_, v)| !v.is_empty());
    let n = with_value().count();
    if n > MAX_STATIC_LABELS {
        return Err(Oversized::TooMany(n));
    }
    let mut out: Vec<(String, String)> = Vec::with_capacity(n);
    for (k, v) in with_value() {
        let len = k.len().max(v.len());
        if len > MAX_STATIC_LABEL_LEN {
            return Err(Oversized::TooLong(prefix(k, 64).to_owned(), len));
        }
        let name = label_name(k);
        if out.iter().all(|(n, _)| *n != name) {
            out.push((name, v.clone()));
        }
    }
    out.sort();
    Ok(out)
}

/// The Prometheus label name of a static label key.
pub fn label_name(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 1);
    if key.is_empty() || key.starts_with(|c: char| c.is_ascii_digit()) {
        out.push('_');
    }
    out.extend(key.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '_' {
            c
        } else {
            '_'
        }
    }));
    if out.starts_with("__") || OWN_LABELS.contains(&out.as_str()) {
        out.insert_str(0, "exported_");
    }
    out
}

/// The part of a field's label that names its family: without a trailing
/// `{...}` when the series exports static labels.
pub fn family_part(label: &str, exports_static: bool) -> &str {
    if exports_static && label.ends_with('}') {
        if let Some(i) = label.find('{').filter(|&i| i > 0) {
            return &label[..i];
        }
    }
    label
}

/// The first `max` bytes of `s`, cut at a character boundary.
fn prefix(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn family_part_strips_the_metrics_convention_only_with_labels() {
        assert_eq!(
            family_part("http.requests{route=/a}", true),
            "http.requests"
        );
        assert_eq!(
            family_part("http.requests{route=/a}", false),
            "http.requests{route=/a}"
        );
        // A value holding `{`: the label part starts at the first one.
        assert_eq!(family_part("x{k={y}", true), "x");
        // No trailing `}`, or nothing before the `{`: the whole label.
        assert_eq!(family_part("span.busy/a", true), "span.busy/a");
        assert_eq!(family_part("a{b}c", true), "a{b}c");
        assert_eq!(family_part("{k=v}", true), "{k=v}");
    }

    #[test]
    fn keys_are_sanitised_and_own_labels_renamed() {
        assert_eq!(label_name("route"), "route");
        assert_eq!(label_name("http.method"), "http_method");
        assert_eq!(label_name("2xx"), "_2xx");
        assert_eq!(label_name(""), "_");
        assert_eq!(label_name("é-x"), "exported___x");
        for own in OWN_LABELS {
            assert_eq!(label_name(own), format!("exported_{own}"));
        }
        assert_eq!(label_name("__name__"), "exported___name__");
        assert_eq!(label_name("--x"), "exported___x");
        assert_eq!(label_name("_x"), "_x");
        assert_eq!(label_name("users"), "users");
        for k in ["a", "a.b", "2", "", "__x", "user", "ü"] {
            let n = label_name(k);
            let mut c = n.chars();
            let first = c.next().unwrap();
            assert!(first.is_ascii_alphabetic() || first == '_', "{n}");
            assert!(c.all(|c| c.is_ascii_alphanumeric() || c == '_'), "{n}");
            assert!(!n.starts_with("__"), "{n}");
        }
    }

    #[test]
    fn export_sorts_drops_empty_values_and_keeps_the_first_of_a_name() {
        assert_eq!(
            export(&pairs(&[
                ("route", "/a"),
                ("method", "GET"),
                ("empty", ""),
                ("a.b", "first"),
                ("a-b", "second"),
                ("user", "root"),
            ]))
            .unwrap(),
            pairs(&[
                ("a_b", "first"),
                ("exported_user", "root"),
                ("method", "GET"),
                ("route", "/a"),
            ])
        );
        assert_eq!(export(&[]).unwrap(), vec![]);
    }

    #[test]
    fn export_is_bounded() {
        let many: Vec<(String, String)> = (0..MAX_STATIC_LABELS)
            .map(|i| (format!("k{i}"), "v".to_owned()))
            .collect();
        assert_eq!(export(&many).unwrap().len(), MAX_STATIC_LABELS);
        // Empty values do not count.
        let mut with_empty = many.clone();
        with_empty.push(("e".into(), String::new()));
        assert_eq!(export(&with_empty).unwrap().len(), MAX_STATIC_LABELS);
        let mut too_many = many.clone();
        too_many.push(("one_more".into(), "v".into()));
        assert_eq!(
            export(&too_many),
            Err(Oversized::TooMany(MAX_STATIC_LABELS + 1))
        );
        let long = "x".repeat(MAX_STATIC_LABEL_LEN);
        assert!(export(&pairs(&[("k", &long)])).is_ok());
        assert!(export(&pairs(&[(&long, "v")])).is_ok());
        let longer = "é".repeat(MAX_STATIC_LABEL_LEN / 2 + 1);
        let e = export(&pairs(&[("k", &longer)])).unwrap_err();
        assert_eq!(e, Oversized::TooLong("k".into(), MAX_STATIC_LABEL_LEN + 2));
        let e = export(&pairs(&[(&longer, "v")])).unwrap_err();
        let Oversized::TooLong(key, _) = &e else {
            panic!("{e:?}")
        };
        assert_eq!(key.len(), 64, "cut at a character boundary: {key:?}");
        assert!(e.to_string().contains("1024"), "{e}");
    }
}
