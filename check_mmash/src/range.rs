//! Threshold ranges in the Monitoring Plugins syntax.
//!
//! | range | alert when the value is |
//! | --- | --- |
//! | `10` | `< 0` or `> 10` |
//! | `10:` | `< 10` |
//! | `~:10` | `> 10` |
//! | `10:20` | `< 10` or `> 20` |
//! | `@10:20` | `>= 10` and `<= 20` |
//!
//! Both ends are inclusive: 10 is inside `10:20`, so it does not alert, and
//! it does alert for `@10:20`. `~` is minus infinity; an empty end is plus
//! infinity. A start greater than the end is an error.

use std::fmt;
use std::str::FromStr;

/// A parsed threshold range.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Range {
    start: f64,
    end: f64,
    /// `@`: alert inside the range instead of outside it.
    inside: bool,
}

/// Why a range did not parse; names the text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeError {
    /// The text given.
    pub text: String,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for RangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bad range {:?}: {} (expected N, N:, ~:N, N:M or @N:M)",
            self.text, self.reason
        )
    }
}

impl std::error::Error for RangeError {}

impl Range {
    /// Whether `value` is outside the acceptable range, so it alerts.
    pub fn alerts(&self, value: f64) -> bool {
        let within = value >= self.start && value <= self.end;
        if value.is_nan() {
            // A value that is not a number is never acceptable.
            return true;
        }
        within == self.inside
    }

    /// The range as the plugin guidelines write it in perfdata.
    pub fn to_perfdata(&self) -> String {
        self.to_string()
    }
}

fn number(text: &str, part: &str, what: &str) -> Result<f64, RangeError> {
    let bad = |reason: String| RangeError {
        text: text.to_owned(),
        reason,
    };
    let v: f64 = part
        .trim()
        .parse()
        .map_err(|_| bad(format!("{what} {part:?} is not a number")))?;
    if !v.is_finite() {
        return Err(bad(format!("{what} {part:?} is not a finite number")));
    }
    Ok(v)
}

impl FromStr for Range {
    type Err = RangeError;

    fn from_str(text: &str) -> Result<Range, RangeError> {
        let bad = |reason: &str| RangeError {
            text: text.to_owned(),
            reason: reason.to_owned(),
        };
        let (inside, body) = match text.strip_prefix('@') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        if body.is_empty() {
            return Err(bad("empty"));
        }
        let (start, end) = match body.split_once(':') {
            None => (0.0, number(text, body, "end")?),
            Some((s, e)) => {
                let start = match s {
                    "~" => f64::NEG_INFINITY,
                    "" => 0.0,
                    s => number(text, s, "start")?,
                };
                let end = if e.is_empty() {
                    f64::INFINITY
                } else {
                    number(text, e, "end")?
                };
                (start, end)
            }
        };
        if start > end {
            return Err(bad("the start is greater than the end"));
        }
        Ok(Range { start, end, inside })
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.inside {
            f.write_str("@")?;
        }
        if self.start == f64::NEG_INFINITY {
            f.write_str("~:")?;
        } else if self.start != 0.0 || self.end == f64::INFINITY {
            write!(f, "{}:", self.start)?;
        }
        if self.end != f64::INFINITY {
            write!(f, "{}", self.end)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Range {
        s.parse().unwrap()
    }

    #[test]
    fn every_form_and_its_edges() {
        // 10: alert below 0 or above 10.
        let x = r("10");
        assert!(x.alerts(-0.5) && x.alerts(10.5));
        assert!(!x.alerts(0.0) && !x.alerts(5.0) && !x.alerts(10.0));
        // 10: alert below 10.
        let x = r("10:");
        assert!(x.alerts(9.99) && !x.alerts(10.0) && !x.alerts(1e12));
        // ~:10 alert above 10.
        let x = r("~:10");
        assert!(!x.alerts(-1e12) && !x.alerts(10.0) && x.alerts(10.01));
        // 10:20 alert outside, inclusive ends.
        let x = r("10:20");
        assert!(x.alerts(9.0) && x.alerts(21.0));
        assert!(!x.alerts(10.0) && !x.alerts(15.0) && !x.alerts(20.0));
        // @10:20 alert inside, inclusive ends.
        let x = r("@10:20");
        assert!(x.alerts(10.0) && x.alerts(15.0) && x.alerts(20.0));
        assert!(!x.alerts(9.99) && !x.alerts(20.01));
        // Decimals and negative starts.
        let x = r("-5.5:0.25");
        assert!(!x.alerts(-5.5) && !x.alerts(0.25) && x.alerts(0.3));
        // Not a number always alerts.
        assert!(r("10").alerts(f64::NAN) && r("@10:20").alerts(f64::NAN));
    }

    #[test]
    fn garbage_is_refused_with_the_text() {
        for bad in ["", "@", "abc", "10:5", "1:x", "~", "inf", "1e999", "NaN:"] {
            let err = bad.parse::<Range>().unwrap_err();
            assert_eq!(err.text, bad);
            assert!(err.to_string().contains("bad range"), "{err}");
        }
    }

    #[test]
    fn perfdata_form_round_trips() {
        for s in ["10", "10:", "~:10", "10:20", "@10:20", "0.5", "@~:3"] {
            assert_eq!(r(s).to_string(), s);
            assert_eq!(r(&r(s).to_string()), r(s));
        }
    }
}
