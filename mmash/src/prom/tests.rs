//! Unit tests of the exposition: names, numbers, collisions, escaping
//! and static labels.

use super::*;

#[test]
fn names_follow_the_rules() {
    assert_eq!(
        metric_name("", "web.status.2xx", FamilyKind::Counter),
        "web_status_2xx_total"
    );
    assert_eq!(
        metric_name("", "requests_total", FamilyKind::Counter),
        "requests_total"
    );
    assert_eq!(
        metric_name("app", "web.request", FamilyKind::Timer),
        "app_web_request_seconds"
    );
    assert_eq!(metric_name("", "2xx:é-x", FamilyKind::Gauge), "_2xx___x");
}

#[test]
fn seconds_are_exact_decimals() {
    assert_eq!(seconds(0), "0");
    assert_eq!(seconds(1_000_000_000), "1");
    assert_eq!(seconds(1_234_567_891), "1.234567891");
    assert_eq!(seconds(1023), "0.000001023");
    assert_eq!(seconds(1_500_000_000), "1.5");
}

#[test]
fn boundaries_are_bounded_and_bucket_edges() {
    for (layout, timer) in [
        (Layout::timer(), true),
        (Layout::histogram(), false),
        (Layout::new(2, 10).unwrap(), false),
        (Layout::new(4, 20).unwrap(), true),
    ] {
        let ks = boundaries(layout, timer);
        assert!(!ks.is_empty() && ks.len() <= 30, "{layout:?}: {}", ks.len());
        for &k in &ks {
            let edge = (1u64 << k) - 1;
            let i = layout.index(edge);
            assert_eq!(layout.bounds(i).1, edge, "{layout:?} k={k}");
            assert!(edge < layout.max_value());
        }
    }
    assert_eq!(boundaries(Layout::timer(), true).len(), 27);
}

#[test]
fn cumulative_counts_are_exact() {
    let mut h = HistogramSnapshot::new(Layout::timer());
    let values = [0u64, 1000, 1023, 1024, 5_000, 1_000_000, 70_000_000_000];
    for v in values {
        h.record(v);
    }
    let ks = boundaries(Layout::timer(), true);
    let counts = cumulative(&h, &ks);
    for (&k, &n) in ks.iter().zip(&counts) {
        let edge = (1u64 << k) - 1;
        let exact = values.iter().filter(|&&v| v <= edge).count() as u64;
        assert_eq!(n, exact, "le {edge}");
    }
}

#[test]
fn same_kind_labels_of_one_name_are_all_exported_and_other_kinds_collide() {
    let fam = |label: &str, kind| Family {
        label: label.into(),
        kind,
        help: String::new(),
        series: vec![Series {
            labels: vec![("user", "u".into())],
            static_labels: Vec::new(),
            value: SeriesValue::Int(1),
        }],
    };
    let mut out = String::new();
    let c = render(
        "",
        &[
            fam("a_b", FamilyKind::Gauge),
            fam("a.b", FamilyKind::Gauge),
            fam("t_count", FamilyKind::Gauge),
            Family {
                label: "t".into(),
                kind: FamilyKind::Histogram,
                help: "h".into(),
                series: vec![],
            },
        ],
        &mut out,
    );
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!(c[0].kept, "t");
    assert_eq!(c[0].dropped, "t_count");
    assert_eq!(out.matches("# TYPE a_b gauge").count(), 1, "{out}");
    assert!(
        out.contains("a_b{user=\"u\",mmstats_label=\"a.b\"} 1"),
        "{out}"
    );
    assert!(
        out.contains("a_b{user=\"u\",mmstats_label=\"a_b\"} 1"),
        "{out}"
    );
}

#[test]
fn another_users_label_never_renames_a_series() {
    let fam = |label: &str, user: &str| Family {
        label: label.into(),
        kind: FamilyKind::Counter,
        help: String::new(),
        series: vec![Series {
            labels: vec![("user", user.into())],
            static_labels: Vec::new(),
            value: SeriesValue::Int(1),
        }],
    };
    let mut out = String::new();
    let c = render("", &[fam("web.ok", "a"), fam("web-ok", "b")], &mut out);
    assert!(c.is_empty(), "{c:?}");
    assert!(out.contains("web_ok_total{user=\"a\"} 1"), "{out}");
    assert!(out.contains("web_ok_total{user=\"b\"} 1"), "{out}");
    assert!(!out.contains("mmstats_label"), "{out}");
}

#[test]
fn file_labels_never_make_mmash_names() {
    assert_eq!(
        metric_name("", "mmash.retire.runs", FamilyKind::Counter),
        "mmstats_mmash_retire_runs_total"
    );
    assert_eq!(
        metric_name("", "web.ok", FamilyKind::Counter),
        "web_ok_total"
    );
}

#[test]
fn help_and_label_values_are_escaped() {
    let mut out = String::new();
    render(
        "",
        &[Family {
            label: "x".into(),
            kind: FamilyKind::Gauge,
            help: "back\\slash\nnew \"line\"".into(),
            series: vec![Series {
                labels: vec![("command", "a\"b\\c\nd".into())],
                static_labels: Vec::new(),
                value: SeriesValue::Float(f64::NAN),
            }],
        }],
        &mut out,
    );
    assert_eq!(
        out,
        "# HELP x back\\\\slash\\nnew \"line\"\n# TYPE x gauge\nx{command=\"a\\\"b\\\\c\\nd\"} NaN\n"
    );
}

fn series(user: &str, statics: &[(&str, &str)], n: i128) -> Series {
    Series {
        labels: vec![("user", user.into())],
        static_labels: statics
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        value: SeriesValue::Int(n),
    }
}

fn counter(label: &str, help: &str, series: Vec<Series>) -> Family {
    Family {
        label: label.into(),
        kind: FamilyKind::Counter,
        help: help.into(),
        series,
    }
}

#[test]
fn static_labels_are_labels_of_one_family() {
    let mut out = String::new();
    let c = render(
        "",
        &[
            counter(
                "http.requests{route=/b}",
                "",
                vec![series("u", &[("route", "/b")], 5)],
            ),
            counter(
                "http.requests{route=/a}",
                "Requests served",
                vec![series("u", &[("route", "/a")], 3)],
            ),
        ],
        &mut out,
    );
    assert!(c.is_empty(), "{c:?}");
    assert_eq!(
        out,
        "# HELP http_requests_total Requests served\n\
         # TYPE http_requests_total counter\n\
         http_requests_total{user=\"u\",route=\"/a\"} 3\n\
         http_requests_total{user=\"u\",route=\"/b\"} 5\n"
    );
}

#[test]
fn without_static_labels_the_whole_label_names_the_series() {
    let mut out = String::new();
    // One group's file exported static labels, another's did not (over
    // the bounds): two names, each with its own HELP and TYPE.
    render(
        "",
        &[counter(
            "x{k=v}",
            "",
            vec![series("a", &[("k", "v")], 1), series("b", &[], 2)],
        )],
        &mut out,
    );
    assert_eq!(
        out,
        "# HELP x_k_v__total mmstats counter x{k=v}\n\
         # TYPE x_k_v__total counter\n\
         x_k_v__total{user=\"b\"} 2\n\
         # HELP x_total mmstats counter x\n\
         # TYPE x_total counter\n\
         x_total{user=\"a\",k=\"v\"} 1\n"
    );
}

#[test]
fn one_owners_same_label_set_is_told_apart_by_the_label() {
    let mut out = String::new();
    let c = render(
        "",
        &[
            counter("req{a=1}", "", vec![series("u", &[("a", "1")], 1)]),
            // Same name and label set as above (its key was `a.`).
            counter("req{a.=1}", "", vec![series("u", &[("a", "1")], 2)]),
            // Another owner's identical set renames nothing of u's.
            counter("req{a\\=1}", "", vec![series("v", &[("a", "1")], 3)]),
            // Another set of u's.
            counter("req{a=2}", "", vec![series("u", &[("a", "2")], 4)]),
        ],
        &mut out,
    );
    assert!(c.is_empty(), "{c:?}");
    assert!(
        out.contains("req_total{user=\"u\",a=\"1\",mmstats_label=\"req{a.=1}\"} 2\n"),
        "{out}"
    );
    assert!(
        out.contains("req_total{user=\"u\",a=\"1\",mmstats_label=\"req{a=1}\"} 1\n"),
        "{out}"
    );
    assert!(out.contains("req_total{user=\"v\",a=\"1\"} 3\n"), "{out}");
    assert!(out.contains("req_total{user=\"u\",a=\"2\"} 4\n"), "{out}");
    assert_eq!(out.matches("# TYPE req_total counter").count(), 1, "{out}");
}

#[test]
fn a_stripped_name_of_another_kind_is_a_collision() {
    let mut out = String::new();
    let gauge = Family {
        label: "x_total".into(),
        kind: FamilyKind::Gauge,
        help: String::new(),
        series: vec![series("u", &[], 7)],
    };
    let c = render(
        "",
        &[
            counter("x{k=v}", "", vec![series("u", &[("k", "v")], 1)]),
            gauge,
        ],
        &mut out,
    );
    assert_eq!(
        c,
        vec![Collision {
            name: "x_total".into(),
            kept: "x_total".into(),
            dropped: "x{k=v}".into(),
        }]
    );
    assert_eq!(
        out,
        "# HELP x_total mmstats gauge x_total\n# TYPE x_total gauge\nx_total{user=\"u\"} 7\n"
    );
}

#[test]
fn histograms_put_static_labels_before_le_and_values_are_escaped() {
    let mut h = HistogramSnapshot::new(Layout::histogram());
    h.record(1);
    let fam = Family {
        label: "size{q=a\"b\\c}".into(),
        kind: FamilyKind::Histogram,
        help: String::new(),
        series: vec![Series {
            labels: vec![("user", "u".into())],
            static_labels: vec![("q".into(), "a\"b\\c\nd".into())],
            value: SeriesValue::Histogram(h),
        }],
    };
    let mut out = String::new();
    render("", &[fam], &mut out);
    let labels = "user=\"u\",q=\"a\\\"b\\\\c\\nd\"";
    assert!(out.starts_with("# HELP size mmstats histogram size\n# TYPE size histogram\n"));
    assert!(
        out.contains(&format!("size_bucket{{{labels},le=\"1\"}} 1\n")),
        "{out}"
    );
    assert!(
        out.contains(&format!("size_bucket{{{labels},le=\"+Inf\"}} 1\n")),
        "{out}"
    );
    assert!(
        out.contains(&format!("size_count{{{labels}}} 1\n")),
        "{out}"
    );
    assert!(out.contains(&format!("size_sum{{{labels}}} 1\n")), "{out}");
}
