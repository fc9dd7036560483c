//! The command lines of mmstats 0.8's `pollstats`, accepted as well:
//! `-p/--prefix` joined to each label, comma-separated labels in one
//! argument, and `-f/--filter KEY[=VALUE]` to keep only some files.

use mmstats_read::aggregate::Sample;
use mmstats_read::{Snapshot, Value};

/// The label patterns of the label arguments: each argument split at its
/// commas (outside `[...]`, where a comma is part of a glob's class), and
/// `prefix` joined to the front of each piece, as given (no dot added).
/// Empty pieces (`a,,b`, a trailing comma) are dropped. A prefix with no
/// label argument is itself the one pattern.
pub fn label_patterns(args: &[String], prefix: Option<&str>) -> Vec<String> {
    let prefix = prefix.unwrap_or("");
    let mut out = Vec::new();
    for arg in args {
        for piece in split_commas(arg) {
            if !piece.is_empty() {
                out.push(format!("{prefix}{piece}"));
            }
        }
    }
    if out.is_empty() && !prefix.is_empty() {
        out.push(prefix.to_owned());
    }
    out
}

fn split_commas(s: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                pieces.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    pieces.push(&s[start..]);
    pieces
}

/// One `-f/--filter`: a file passes if it has a label starting with `key`
/// (mmstats 0.8 matched the start of the key too), or, with a value, if
/// the field labelled exactly `key` has that value.
#[derive(Clone, Debug, PartialEq)]
pub struct Filter {
    key: String,
    value: Option<String>,
}

/// Parses `KEY` or `KEY=VALUE` (clap's value parser for `--filter`).
pub fn parse_filter(s: &str) -> Result<Filter, String> {
    let (key, value) = match s.split_once('=') {
        Some((k, v)) => (k, Some(v.to_owned())),
        None => (s, None),
    };
    if key.is_empty() {
        return Err(format!(
            "{s:?} has no key: use KEY (files that have a label starting with KEY) or KEY=VALUE"
        ));
    }
    Ok(Filter {
        key: key.to_owned(),
        value,
    })
}

impl Filter {
    /// Whether `snapshot` passes this filter.
    pub fn keeps(&self, snapshot: &Snapshot) -> bool {
        match &self.value {
            None => snapshot
                .fields
                .iter()
                .any(|f| f.label.starts_with(&self.key)),
            Some(want) => snapshot
                .fields
                .iter()
                .any(|f| f.label == self.key && value_is(&f.value, want)),
        }
    }
}

/// Whether `value` reads as `want`: text compared exactly, numbers as
/// numbers (`7`, `7.0` and `+7` all equal a gauge of 7). Histograms and
/// unreadable values never match.
fn value_is(value: &Value, want: &str) -> bool {
    match value {
        Value::Text(s) | Value::Constant(s) => s == want,
        Value::Counter(n) => number_is(*n as f64, Some(i128::from(*n)), want),
        Value::Gauge(n) => number_is(*n as f64, Some(i128::from(*n)), want),
        Value::GaugeF64(x) => number_is(*x, None, want),
        _ => false,
    }
}

fn number_is(x: f64, exact: Option<i128>, want: &str) -> bool {
    let want = want.trim();
    if let (Some(n), Ok(w)) = (exact, want.parse::<i128>()) {
        return n == w;
    }
    want.parse::<f64>().is_ok_and(|w| w == x)
}

/// The filters as given, for messages: `role=db or batch.`.
pub fn describe(filters: &[Filter]) -> String {
    filters
        .iter()
        .map(|f| match &f.value {
            Some(v) => format!("{}={v}", f.key),
            None => f.key.clone(),
        })
        .collect::<Vec<_>>()
        .join(" or ")
}

/// Drops from `sample` the files that pass none of `filters` (no filter
/// keeps every file). Run on every sample, so a file whose text changes
/// joins or leaves the selection as it does.
pub fn apply(filters: &[Filter], sample: &mut Sample) {
    if filters.is_empty() {
        return;
    }
    sample
        .files
        .retain(|f| filters.iter().any(|flt| flt.keeps(&f.snapshot)));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn prefix_is_joined_to_every_comma_separated_label() {
        assert_eq!(
            label_patterns(&s(&["2XX,3XX", "5XX"]), Some("web.status.")),
            ["web.status.2XX", "web.status.3XX", "web.status.5XX"]
        );
        assert_eq!(label_patterns(&s(&["a,,b,"]), None), ["a", "b"]);
        assert_eq!(label_patterns(&[], Some("web.")), ["web."]);
        assert!(label_patterns(&[], None).is_empty());
    }

    #[test]
    fn commas_inside_a_glob_class_stay() {
        assert_eq!(
            label_patterns(&s(&["web.[2,5]xx,db.*"]), None),
            ["web.[2,5]xx", "db.*"]
        );
    }

    #[test]
    fn filters_parse_or_say_why_not() {
        assert_eq!(
            parse_filter("role=db"),
            Ok(Filter {
                key: "role".into(),
                value: Some("db".into())
            })
        );
        assert_eq!(parse_filter("a=b=c").unwrap().value.as_deref(), Some("b=c"));
        assert!(parse_filter("=x").unwrap_err().contains("no key"));
    }

    #[test]
    fn values_compare_as_their_kind() {
        assert!(value_is(&Value::Text("db".into()), "db"));
        assert!(!value_is(&Value::Text("db".into()), "db "));
        assert!(value_is(&Value::Gauge(-7), "-7"));
        assert!(value_is(&Value::Gauge(7), "7.0"));
        assert!(value_is(&Value::Counter(u64::MAX), &u64::MAX.to_string()));
        assert!(!value_is(&Value::Counter(u64::MAX), "18446744073709551614"));
        assert!(value_is(&Value::GaugeF64(0.5), "0.5"));
        assert!(!value_is(&Value::GaugeF64(0.5), "half"));
    }
}
