//! Numbers for people: durations scaled to ns, µs, ms or s with three
//! significant digits, ages in s/m/h/d, plain decimals without noise.

use std::time::Duration;

/// Duration units, smallest first, with their size in nanoseconds.
const DURATION_UNITS: [(&str, f64); 4] = [("ns", 1.0), ("µs", 1e3), ("ms", 1e6), ("s", 1e9)];

/// A duration given in nanoseconds, in the largest unit (up to seconds)
/// that keeps it at 1 or more, with three significant digits:
/// `1.25ms`, `10.2ms`, `125ms`, `999ns`, `1µs`, `4398s`.
pub fn duration_ns(ns: f64) -> String {
    if !ns.is_finite() || ns < 0.0 {
        return format!("{ns}ns");
    }
    for (i, &(name, scale)) in DURATION_UNITS.iter().enumerate() {
        let text = significant(ns / scale);
        // Rounding may carry into the next unit (999.6ns is "1000"): then
        // the next unit says it better ("1µs").
        let last = i + 1 == DURATION_UNITS.len();
        if last || text.parse::<f64>().is_ok_and(|v| v < 1000.0) {
            return format!("{text}{name}");
        }
    }
    unreachable!("the last unit always returns")
}

/// `x` (not negative) with three significant digits, or as a whole number
/// from 100 up; trailing zeros dropped.
fn significant(x: f64) -> String {
    let decimals = if x >= 99.95 {
        0
    } else if x >= 9.995 {
        1
    } else {
        2
    };
    trim_zeros(format!("{x:.decimals$}"))
}

/// `x` with at most two decimals, trailing zeros dropped: `2559.5`, `3`,
/// `0.33`. Non-finite values as Rust prints them.
pub fn decimal(x: f64) -> String {
    if !x.is_finite() {
        return format!("{x}");
    }
    trim_zeros(format!("{x:.2}"))
}

fn trim_zeros(s: String) -> String {
    if s.contains('.') {
        let t = s.trim_end_matches('0').trim_end_matches('.');
        if t == "-0" {
            "0".to_owned()
        } else {
            t.to_owned()
        }
    } else {
        s
    }
}

/// An age: `0.5s`, `42s`, `5m12s`, `3h07m`, `12d04h`.
pub fn age(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0..60 => format!("{}s", significant(d.as_secs_f64())),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        3600..86400 => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d{:02}h", secs / 86400, secs % 86400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_pick_the_unit_that_reads_best() {
        let cases: &[(f64, &str)] = &[
            (0.0, "0ns"),
            (1.0, "1ns"),
            (999.0, "999ns"),
            (512.5, "512ns"), // round half to even
            (999.6, "1µs"),   // carries into the next unit
            (1_000.0, "1µs"),
            (1_250.0, "1.25µs"),
            (12_345.0, "12.3µs"),
            (999_999.0, "1ms"),
            (1_020_000.0, "1.02ms"),
            (1_250_000.0, "1.25ms"),
            (4_100_000.0, "4.1ms"),
            (9_800_000.0, "9.8ms"),
            (10_200_000.0, "10.2ms"),
            (125_000_000.0, "125ms"),
            (999_999_999.0, "1s"),
            (1_500_000_000.0, "1.5s"),
            (4_398_046_511_103.0, "4398s"),
        ];
        for &(ns, want) in cases {
            assert_eq!(duration_ns(ns), want, "{ns} ns");
        }
    }

    #[test]
    fn odd_durations_are_still_printed() {
        assert_eq!(duration_ns(f64::NAN), "NaNns");
        assert_eq!(duration_ns(-5.0), "-5ns");
    }

    #[test]
    fn decimals_drop_trailing_zeros() {
        assert_eq!(decimal(3.0), "3");
        assert_eq!(decimal(2559.5), "2559.5");
        assert_eq!(decimal(1.0 / 3.0), "0.33");
        assert_eq!(decimal(100.0), "100");
        assert_eq!(decimal(-0.001), "0");
        assert_eq!(decimal(f64::INFINITY), "inf");
    }

    #[test]
    fn ages_read_like_a_clock() {
        assert_eq!(age(Duration::from_millis(500)), "0.5s");
        assert_eq!(age(Duration::from_secs(42)), "42s");
        assert_eq!(age(Duration::from_secs(5 * 60 + 12)), "5m12s");
        assert_eq!(age(Duration::from_secs(3 * 3600 + 7 * 60 + 59)), "3h07m");
        assert_eq!(age(Duration::from_secs(12 * 86400 + 4 * 3600)), "12d04h");
    }
}
