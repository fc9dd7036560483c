//! Unit tests of the check module: durations, specs, report lines.

use super::*;

fn spec(q: &str) -> Result<Spec, SpecError> {
    let pairs: Vec<(String, String)> = form_urlencoded::parse(q.as_bytes()).into_owned().collect();
    Spec::from_params("x", pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

#[test]
fn durations() {
    assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
    assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    assert_eq!(parse_duration("1.5m"), Ok(Duration::from_secs(90)));
    assert_eq!(parse_duration("60"), Ok(Duration::from_secs(60)));
    assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
    for bad in [
        "-10s", "0", "0s", "s", "", "10x", "1e3s", "NaN", "8d", "--1s",
    ] {
        assert!(parse_duration(bad).is_err(), "{bad}");
    }
    assert!(parse_duration("-10s").unwrap_err().contains("more than 0"));
    assert_eq!(say_duration(Duration::from_secs(300)), "5m");
    assert_eq!(say_duration(Duration::from_secs(60)), "60s");
    assert_eq!(say_duration(Duration::from_secs(3600)), "1h");
    assert_eq!(say_duration(Duration::from_millis(1234)), "1.23s");
    assert_eq!(say_duration(Duration::from_micros(4600)), "5ms");
}

#[test]
fn specs_parse_and_refuse_what_does_not_fit() {
    let s = spec("aggr=sum&rate=60s&warn=1&crit=5").unwrap();
    assert_eq!(s.rate, Some(Duration::from_secs(60)));
    assert_eq!(s.crit, Some("5".parse().unwrap()));
    let s = spec("quantile=0.99&window=5m&warn=0.3&crit=1").unwrap();
    assert_eq!(s.stat, Some(Stat::Quantile(0.99)));
    assert_eq!(s.stat.unwrap().name(), "p99");
    assert_eq!(Stat::Quantile(0.999).name(), "p99.9");
    // Round trip through the query form.
    let back: Vec<(&str, String)> = s.params();
    assert_eq!(
        Spec::from_params("x", back.iter().map(|(k, v)| (*k, v.as_str()))).unwrap(),
        s
    );
    for (q, needle) in [
        ("warn=abc", "bad range"),
        ("crit=10:5", "start is greater"),
        ("rate=-10s", "more than 0"),
        ("quantile=1.5", "between 0 and 1"),
        ("quantile=p99", "not a number"),
        ("stat=median", "unknown stat"),
        ("aggr=median", "unknown aggregator"),
        ("rate=10s&quantile=0.5", "not both"),
        ("window=10s", "goes with quantile"),
        ("aggr=max&rate=10s", "does not apply"),
        ("aggr=max&stat=mean", "merged distribution"),
        ("aggr=avg&quantile=0.9&window=1m", "merged distribution"),
        ("aggr=count&stat=max", "takes no"),
        ("foo=1", "unknown parameter"),
        ("warn=1&warn=2", "twice"),
        ("stat=max&quantile=0.5", "not both"),
    ] {
        let e = spec(q).unwrap_err().to_string();
        assert!(e.contains(needle), "{q}: {e}");
    }
}

#[test]
fn report_line_and_perfdata() {
    let m = Measure {
        label: "web.status.5xx".into(),
        what: "rate".into(),
        value: 7.2,
        uom: Uom::None,
        min: Some(0.0),
        note: window_note(Duration::from_secs(60), Duration::from_secs(60)),
    };
    let w: Range = "1".parse().unwrap();
    let c: Range = "5".parse().unwrap();
    let (state, line) = report(&m, Some(&w), Some(&c));
    assert_eq!(state, State::Critical);
    assert_eq!(
        line,
        "MMSTATS CRITICAL - web.status.5xx rate 7.2/s over the last 60s (crit 5) | 'web.status.5xx_rate'=7.2;1;5;0;"
    );
    let short = window_note(Duration::from_secs(60), Duration::from_secs(12));
    assert_eq!(short, "over 12s, all that was seen of the 60s asked");
}

#[test]
fn nothing_is_judged_over_less_than_a_quarter_of_the_window() {
    assert_eq!(min_cover(Duration::from_secs(60)), Duration::from_secs(15));
    let e = too_short(
        "x",
        Duration::from_secs(60),
        Duration::from_millis(4),
        false,
    );
    assert_eq!(e.why, Why::NoValue);
    assert_eq!(
        e.message,
        "x: the readings are 4ms apart, less than a quarter of the 60s asked; \
         nothing is judged over less than 15s, ask again in 15s"
    );
    let e = too_short("x", Duration::from_secs(3600), Duration::from_secs(3), true);
    assert!(
        e.message
            .contains("the oldest file is 3s old and no earlier reading covers"),
        "{}",
        e.message
    );
}
