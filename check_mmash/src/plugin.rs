//! Monitoring Plugins output: the four states, the status line and its
//! performance data.

use std::fmt;

use crate::range::Range;

/// A plugin's state; its exit code is the discriminant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    /// Exit 0.
    Ok = 0,
    /// Exit 1.
    Warning = 1,
    /// Exit 2.
    Critical = 2,
    /// Exit 3: the check itself could not be made.
    Unknown = 3,
}

impl State {
    /// The word in the status line.
    pub fn word(self) -> &'static str {
        match self {
            State::Ok => "OK",
            State::Warning => "WARNING",
            State::Critical => "CRITICAL",
            State::Unknown => "UNKNOWN",
        }
    }

    /// The process exit code.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The state for a value: critical if it alerts for `crit`, else
    /// warning if it alerts for `warn`, else ok.
    pub fn of(value: f64, warn: Option<&Range>, crit: Option<&Range>) -> State {
        if crit.is_some_and(|c| c.alerts(value)) {
            State::Critical
        } else if warn.is_some_and(|w| w.alerts(value)) {
            State::Warning
        } else {
            State::Ok
        }
    }
}

/// Units of measure the guidelines define for perfdata.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Uom {
    /// A plain number.
    None,
    /// Seconds.
    Seconds,
    /// Bytes.
    Bytes,
    /// A continuous counter (graphers show its rate).
    Counter,
}

impl Uom {
    /// The unit as perfdata writes it: ``, `s`, `B` or `c`.
    pub fn as_str(self) -> &'static str {
        match self {
            Uom::None => "",
            Uom::Seconds => "s",
            Uom::Bytes => "B",
            Uom::Counter => "c",
        }
    }

    /// The unit [`Uom::as_str`] writes, back; `None` for any other text.
    pub fn parse(s: &str) -> Option<Uom> {
        [Uom::None, Uom::Seconds, Uom::Bytes, Uom::Counter]
            .into_iter()
            .find(|u| u.as_str() == s)
    }
}

/// One performance data item: `'label'=value[UOM];warn;crit;min;max`.
#[derive(Clone, Debug, PartialEq)]
pub struct Perfdata {
    /// The label.
    pub label: String,
    /// The value.
    pub value: f64,
    /// Its unit.
    pub uom: Uom,
    /// Warning range, if any.
    pub warn: Option<Range>,
    /// Critical range, if any.
    pub crit: Option<Range>,
    /// Smallest possible value, if known.
    pub min: Option<f64>,
    /// Largest possible value, if known.
    pub max: Option<f64>,
}

impl fmt::Display for Perfdata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Quoted, with a quote doubled, so spaces are safe. The guidelines
        // allow no '=' in a label even quoted (parsers split at the first
        // '='), a '|' would end the perfdata for some, and a control
        // character could break the one line: all become '_'.
        let label: String = self
            .label
            .chars()
            .map(|c| {
                if c == '=' || c == '|' || c.is_control() {
                    '_'
                } else {
                    c
                }
            })
            .collect();
        let label = label.replace('\'', "''");
        let opt = |x: Option<f64>| x.map(number).unwrap_or_default();
        let range = |r: Option<&Range>| r.map(Range::to_perfdata).unwrap_or_default();
        write!(
            f,
            "'{label}'={}{};{};{};{};{}",
            number(self.value),
            self.uom.as_str(),
            range(self.warn.as_ref()),
            range(self.crit.as_ref()),
            opt(self.min),
            opt(self.max)
        )?;
        Ok(())
    }
}

/// A number as perfdata wants it: plain decimal, no exponent, no trailing
/// zeros; six decimals, or six significant digits for a smaller number (a
/// 300 ns latency is `0.0000003` s, not `0`).
pub fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        return format!("{}", v as i64);
    }
    let magnitude = v.abs().log10().floor();
    let decimals = if magnitude.is_finite() {
        (5.0 - magnitude).clamp(6.0, 17.0) as usize
    } else {
        6
    };
    let s = format!("{v:.decimals$}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0" } else { s }.to_owned()
}

/// The whole plugin output: `MMSTATS STATE - text | perfdata`, one line.
pub fn status_line(state: State, text: &str, perf: &[Perfdata]) -> String {
    // The status text must stay on one line and must not contain '|',
    // which starts the perfdata.
    let text: String = text
        .chars()
        .map(|c| if c == '|' || c.is_control() { ' ' } else { c })
        .collect();
    let mut line = format!("MMSTATS {} - {text}", state.word());
    if !perf.is_empty() {
        line.push_str(" |");
        for p in perf {
            line.push(' ');
            line.push_str(&p.to_string());
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn critical_wins_over_warning() {
        let w: Range = "1".parse().unwrap();
        let c: Range = "5".parse().unwrap();
        assert_eq!(State::of(0.5, Some(&w), Some(&c)), State::Ok);
        assert_eq!(State::of(1.0, Some(&w), Some(&c)), State::Ok);
        assert_eq!(State::of(3.0, Some(&w), Some(&c)), State::Warning);
        assert_eq!(State::of(7.2, Some(&w), Some(&c)), State::Critical);
        assert_eq!(State::of(7.2, None, None), State::Ok);
    }

    #[test]
    fn status_line_with_perfdata() {
        let p = Perfdata {
            label: "web.status.5xx_rate".into(),
            value: 7.2,
            uom: Uom::None,
            warn: Some("1".parse().unwrap()),
            crit: Some("5".parse().unwrap()),
            min: Some(0.0),
            max: None,
        };
        assert_eq!(
            status_line(State::Critical, "web.status.5xx rate 7.2/s (crit 5)", &[p]),
            "MMSTATS CRITICAL - web.status.5xx rate 7.2/s (crit 5) | 'web.status.5xx_rate'=7.2;1;5;0;"
        );
        let c = Perfdata {
            label: "it's".into(),
            value: 12.0,
            uom: Uom::Counter,
            warn: None,
            crit: None,
            min: Some(0.0),
            max: None,
        };
        assert_eq!(c.to_string(), "'it''s'=12c;;;0;");
        let odd = Perfdata {
            label: "http.code=500|x y\nz".into(),
            ..c
        };
        assert_eq!(odd.to_string(), "'http.code_500_x y_z'=12c;;;0;");
        assert_eq!(
            status_line(State::Unknown, "a|b\nc", &[]),
            "MMSTATS UNKNOWN - a b c"
        );
    }

    #[test]
    fn numbers_have_no_exponent() {
        assert_eq!(number(0.000_001_5), "0.0000015");
        assert_eq!(number(3e-7), "0.0000003");
        assert_eq!(number(1.234_567_89e-9), "0.00000000123457");
        assert_eq!(number(-1e-30), "0");
        assert_eq!(number(7.2), "7.2");
        assert_eq!(number(1_234.567_891), "1234.567891");
        assert_eq!(number(1e20), "100000000000000000000");
        assert_eq!(number(-3.0), "-3");
        assert_eq!(number(0.25), "0.25");
    }
}
