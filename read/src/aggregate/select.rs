//! Which fields a view shows, how it groups them and how it combines files.

use crate::discover::Wildcard;
use std::fmt;
use std::str::FromStr;

use crate::reader::FileInfo;
use mmstats::format::Kind;

/// A bad aggregator, group or pattern: names the value and what is valid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// What was being parsed: `aggregator`, `group`, `pattern`.
    pub what: &'static str,
    /// The value given.
    pub value: String,
    /// The valid values, or why the value is not valid.
    pub expected: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown {} {:?}: expected {}",
            self.what, self.value, self.expected
        )
    }
}

impl std::error::Error for ParseError {}

/// How the values of one series are combined across files.
///
/// These are the aggregators of the original `mmash`, plus `count`. On
/// counters they combine the per-file increases; on gauges the current
/// values. On histograms and timers every aggregator but `count` merges
/// the buckets; on text, `one` takes the first value, `count` counts, and
/// the others list the distinct values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Aggregator {
    /// The sum (the default for counters and gauges).
    Sum,
    /// The mean over the files that have the field.
    Avg,
    /// The smallest value.
    Min,
    /// The largest value.
    Max,
    /// The value of the first file (in path order) that has the field.
    One,
    /// The smallest value that is not zero.
    NonzeroMin,
    /// The mean over the files whose value is not zero.
    NonzeroAvg,
    /// How many files have the field.
    Count,
}

impl Aggregator {
    /// Every aggregator, in the order the documentation lists them.
    pub const ALL: [Aggregator; 8] = [
        Aggregator::Sum,
        Aggregator::Avg,
        Aggregator::Min,
        Aggregator::Max,
        Aggregator::One,
        Aggregator::NonzeroMin,
        Aggregator::NonzeroAvg,
        Aggregator::Count,
    ];

    /// The name used on command lines: `sum`, `nonzero-avg`, ...
    pub fn name(self) -> &'static str {
        match self {
            Aggregator::Sum => "sum",
            Aggregator::Avg => "avg",
            Aggregator::Min => "min",
            Aggregator::Max => "max",
            Aggregator::One => "one",
            Aggregator::NonzeroMin => "nonzero-min",
            Aggregator::NonzeroAvg => "nonzero-avg",
            Aggregator::Count => "count",
        }
    }
}

impl fmt::Display for Aggregator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Aggregator {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Aggregator, ParseError> {
        Aggregator::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| ParseError {
                what: "aggregator",
                value: s.to_owned(),
                expected: names(Aggregator::ALL.map(Aggregator::name)),
            })
    }
}

/// What series are split by besides their label.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum GroupBy {
    /// One series per label, over every file.
    #[default]
    Label,
    /// One per label and writer command.
    Command,
    /// One per label and stats model.
    Model,
    /// One per label and writer process.
    Pid,
    /// One per label and file.
    File,
    /// One per label and owner (the files' uid, spelled as a user name).
    User,
}

impl GroupBy {
    const ALL: [GroupBy; 6] = [
        GroupBy::Label,
        GroupBy::Command,
        GroupBy::Model,
        GroupBy::Pid,
        GroupBy::File,
        GroupBy::User,
    ];

    /// The name used on command lines and in series keys: `pid`, ...
    pub fn name(self) -> &'static str {
        match self {
            GroupBy::Label => "label",
            GroupBy::Command => "command",
            GroupBy::Model => "model",
            GroupBy::Pid => "pid",
            GroupBy::File => "file",
            GroupBy::User => "user",
        }
    }

    /// The group a file belongs to; `None` for [`GroupBy::Label`].
    pub fn group_of(self, info: &FileInfo) -> Option<String> {
        match self {
            GroupBy::Label => None,
            GroupBy::Command => Some(info.command.clone()),
            GroupBy::Model => Some(info.model.clone()),
            GroupBy::Pid => Some(info.pid.to_string()),
            GroupBy::File => Some(info.path.display().to_string()),
            GroupBy::User => Some(crate::owners::user_name(info.owner)),
        }
    }
}

impl fmt::Display for GroupBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for GroupBy {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<GroupBy, ParseError> {
        GroupBy::ALL
            .into_iter()
            .find(|g| g.name() == s)
            .ok_or_else(|| ParseError {
                what: "group",
                value: s.to_owned(),
                expected: names(GroupBy::ALL.map(GroupBy::name)),
            })
    }
}

fn names<const N: usize>(names: [&str; N]) -> String {
    format!("one of {}", names.join(", "))
}

/// Which fields a view shows: labels, label prefixes or glob patterns.
///
/// A pattern without `*`, `?` or `[` matches every label that starts with
/// it (as `mmash` did): `web.status.` matches `web.status.2xx`, and
/// `web.request` matches `web.request` and `web.requests`. A pattern with
/// them is a glob over the whole label: `web.*.5xx`. With no pattern, the
/// selector takes every counter, gauge, timer and histogram, and leaves out
/// text and constants; named patterns take fields of any kind.
#[derive(Clone, Debug, Default)]
pub struct Selector {
    patterns: Vec<Pattern>,
}

#[derive(Clone, Debug)]
enum Pattern {
    Prefix(String),
    Glob(Wildcard, String),
}

impl Pattern {
    fn text(&self) -> &str {
        match self {
            Pattern::Prefix(s) | Pattern::Glob(_, s) => s,
        }
    }

    fn matches(&self, label: &str) -> bool {
        match self {
            Pattern::Prefix(p) => label.starts_with(p.as_str()),
            Pattern::Glob(g, _) => g.matches(label),
        }
    }
}

impl Selector {
    /// Every counter, gauge, timer and histogram.
    pub fn all() -> Selector {
        Selector::default()
    }

    /// A selector of the given labels, prefixes or globs; none is
    /// [`Selector::all`]. Fails on a pattern that is not a valid glob.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Selector, ParseError> {
        let patterns = patterns
            .iter()
            .map(|p| {
                let p = p.as_ref();
                if p.contains(['*', '?', '[']) {
                    Wildcard::new(p)
                        .map(|g| Pattern::Glob(g, p.to_owned()))
                        .map_err(|e| ParseError {
                            what: "pattern",
                            value: p.to_owned(),
                            expected: format!("a valid glob ({e})"),
                        })
                } else {
                    Ok(Pattern::Prefix(p.to_owned()))
                }
            })
            .collect::<Result<_, _>>()?;
        Ok(Selector { patterns })
    }

    /// Whether no pattern was given.
    pub fn is_all(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The patterns, as given.
    pub fn patterns(&self) -> impl Iterator<Item = &str> {
        self.patterns.iter().map(Pattern::text)
    }

    /// Whether a field with `label` and `kind` is selected.
    pub fn matches(&self, label: &str, kind: Kind) -> bool {
        if self.patterns.is_empty() {
            return !matches!(kind, Kind::Text | Kind::Constant);
        }
        self.patterns.iter().any(|p| p.matches(label))
    }

    /// The patterns that match none of `labels`.
    pub fn unmatched<'a, 'l>(&'a self, labels: impl IntoIterator<Item = &'l str>) -> Vec<&'a str> {
        let labels: Vec<&str> = labels.into_iter().collect();
        self.patterns
            .iter()
            .filter(|p| !labels.iter().any(|l| p.matches(l)))
            .map(Pattern::text)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregators_parse_and_name_the_valid_ones() {
        for a in Aggregator::ALL {
            assert_eq!(a.name().parse::<Aggregator>(), Ok(a));
        }
        let e = "median".parse::<Aggregator>().unwrap_err().to_string();
        assert_eq!(
            e,
            "unknown aggregator \"median\": expected one of sum, avg, min, max, one, nonzero-min, nonzero-avg, count"
        );
        assert!("host"
            .parse::<GroupBy>()
            .unwrap_err()
            .to_string()
            .contains("command, model, pid, file"));
    }

    #[test]
    fn prefixes_and_globs_select_labels() {
        let s = Selector::new(&["web.status.", "db.*.errors"]).unwrap();
        assert!(s.matches("web.status.2xx", Kind::Counter));
        assert!(s.matches("db.primary.errors", Kind::Counter));
        assert!(!s.matches("web.request", Kind::Timer));
        assert!(!s.matches("db.primary.errors.total", Kind::Counter));
        assert_eq!(
            s.unmatched(["web.status.2xx", "web.request"]),
            vec!["db.*.errors"]
        );
        assert!(Selector::new(&["a[b"]).is_err());
    }

    #[test]
    fn all_leaves_out_text() {
        let s = Selector::all();
        assert!(s.matches("x", Kind::Gauge));
        assert!(s.matches("x", Kind::Timer));
        assert!(!s.matches("x", Kind::Text));
        assert!(!s.matches("x", Kind::Constant));
        assert!(Selector::new(&["x"]).unwrap().matches("x", Kind::Text));
    }
}
