//! Numbers that keep their column: at most six characters, SI suffixes
//! (`12.3k`, `4.56M`) and time units (`4.5ms`), three significant digits.

/// Duration units, smallest first, with their size in nanoseconds.
const DURATION_UNITS: [(&str, f64); 4] = [("ns", 1.0), ("µs", 1e3), ("ms", 1e6), ("s", 1e9)];

/// SI prefixes from kilo up.
const SI: [&str; 6] = ["k", "M", "G", "T", "P", "E"];

/// A duration in nanoseconds in the largest unit (up to seconds) that keeps
/// it at 1 or more, with three significant digits: `1.25ms`, `125ms`,
/// `999ns`. (The same rule as slurpstats.)
pub fn duration_ns(ns: f64) -> String {
    if !ns.is_finite() || ns < 0.0 {
        return format!("{ns}ns");
    }
    for (i, &(name, scale)) in DURATION_UNITS.iter().enumerate() {
        let text = significant(ns / scale);
        // Rounding may carry into the next unit (999.6ns is "1000").
        let last = i + 1 == DURATION_UNITS.len();
        if last || text.parse::<f64>().is_ok_and(|v| v < 1000.0) {
            return format!("{text}{name}");
        }
    }
    unreachable!("the last unit always returns")
}

/// A number in at most six characters: whole numbers below 100000 exactly,
/// others with three significant digits and an SI suffix: `0.5`, `12.5`,
/// `99999`, `123k`, `4.56M`, `-1.2k`.
pub fn number(x: f64) -> String {
    if !x.is_finite() {
        return format!("{x}");
    }
    let sign = if x < 0.0 { "-" } else { "" };
    let a = x.abs();
    if a.fract() == 0.0 && a < 100_000.0 {
        return format!("{sign}{a}");
    }
    if a < 1000.0 {
        let s = significant(a);
        // 999.6 rounds to "1000": say it as "1k".
        if s != "1000" {
            return format!("{sign}{s}");
        }
    }
    let mut v = a;
    for p in SI {
        v /= 1000.0;
        let s = significant(v);
        if s.parse::<f64>().is_ok_and(|n| n < 1000.0) {
            return format!("{sign}{s}{p}");
        }
    }
    format!("{sign}{}E", significant(a / 1e18))
}

/// `x` (not negative) with three significant digits, or as a whole number
/// from 100 up; trailing zeros dropped.
fn significant(x: f64) -> String {
    let decimals = if x >= 99.95 {
        0
    } else if x >= 9.995 {
        1
    } else if x >= 0.9995 || x == 0.0 {
        2
    } else {
        3
    };
    trim_zeros(format!("{x:.decimals$}"))
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

/// `HH:MM:SS` (UTC) of a time in seconds since the epoch.
pub fn clock(unix_secs: u64) -> String {
    let s = unix_secs % 86_400;
    format!("{:02}:{:02}:{:02}", s / 3600, s % 3600 / 60, s % 60)
}

/// RFC 3339 in UTC with milliseconds: `2026-11-22T04:35:38.123Z`.
pub fn rfc3339(unix_nanos: u128) -> String {
    let secs = (unix_nanos / 1_000_000_000) as u64;
    let millis = (unix_nanos / 1_000_000 % 1000) as u64;
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    format!("{y:04}-{m:02}-{d:02}T{}.{millis:03}Z", clock(secs))
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_fit_six_characters() {
        let cases: &[(f64, &str)] = &[
            (0.0, "0"),
            (7.0, "7"),
            (0.5, "0.5"),
            (0.123456, "0.123"),
            (12.34, "12.3"),
            (999.0, "999"),
            (999.96, "1k"),
            (12_345.0, "12345"),
            (99_999.0, "99999"),
            (100_000.0, "100k"),
            (12_345.6, "12.3k"),
            (4_560_000.0, "4.56M"),
            (-1234.5, "-1.23k"),
            (1.8e19, "18E"),
        ];
        for &(x, want) in cases {
            assert_eq!(number(x), want, "{x}");
            assert!(number(x).chars().count() <= 6, "{x}");
        }
    }

    #[test]
    fn durations_and_times() {
        assert_eq!(duration_ns(4_500_000.0), "4.5ms");
        assert_eq!(duration_ns(999.6), "1µs");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339(1_795_321_338_123_000_000),
            "2026-11-22T04:22:18.123Z"
        );
        assert_eq!(rfc3339(951_782_400_000_000_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(clock(3600 * 13 + 61), "13:01:01");
    }
}
