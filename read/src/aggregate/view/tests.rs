//! The view's own tests: rates, gauges, windows and resets from two
//! samples built in memory.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, UNIX_EPOCH};

use super::*;
use crate::aggregate::identity::Key;
use crate::aggregate::{FileId, FileSample};
use crate::reader::FileInfo;
use mmstats::format::{Unit, WriterState};
use mmstats::hist::Layout;

fn file(name: &str, ino: u64, alive: bool, fields: &[(&str, Value)]) -> FileSample {
    let path = PathBuf::from(name);
    let kind = |v: &Value| match v {
        Value::Counter(_) => Kind::Counter,
        Value::Gauge(_) => Kind::Gauge,
        Value::GaugeF64(_) => Kind::GaugeF64,
        Value::Histogram(_) => Kind::Timer,
        _ => Kind::Text,
    };
    FileSample {
        id: FileId {
            path: path.clone(),
            dev: 1,
            ino,
            created_ns: ino,
            key: Key::File {
                owner: 0,
                dev: 1,
                ino,
                created_ns: ino,
                path: path.clone(),
            },
        },
        snapshot: Arc::new(with_layout(
            ino,
            Snapshot {
                info: FileInfo {
                    path,
                    version: (1, 0),
                    pid: ino as u32,
                    tid: ino as u32,
                    process_start: 0,
                    created: UNIX_EPOCH,
                    command: "cmd".into(),
                    model: "m".into(),
                    alive,
                    fallbacks: 0,
                    lock_token: 0,
                    owner: 0,
                    archive: None,
                    state: if alive {
                        WriterState::Active
                    } else {
                        WriterState::Exited
                    },
                },
                fields: fields
                    .iter()
                    .map(|(l, v)| Field {
                        label: (*l).into(),
                        kind: kind(v),
                        unit: Unit::from_text(""),
                        unit_text: String::new(),
                        help: String::new(),
                        static_labels: Vec::new(),
                        value: v.clone(),
                    })
                    .collect(),
                skipped: 0,
                duplicates: Vec::new(),
                layout: None,
            },
        )),
        fresh: true,
        gone: false,
    }
}

/// Odd files carry their layout, as a reader's snapshots do; even ones
/// none, as clones: the delta takes both paths.
fn with_layout(ino: u64, mut snap: Snapshot) -> Snapshot {
    if ino % 2 == 1 {
        snap.layout = Some(FieldLayout::of(&snap.fields));
    }
    snap
}

fn sample(mut files: Vec<FileSample>) -> Sample {
    files.sort_by(|a, b| a.id.cmp(&b.id));
    Sample {
        time: SystemTime::now(),
        instant: Instant::now(),
        files,
        warnings: Vec::new(),
        foreign_skipped: 0,
    }
}

fn int(d: &Delta, label: &str) -> i128 {
    match d.get(label, None).map(|s| &s.value) {
        Some(SeriesValue::Int(n)) => *n,
        other => panic!("{label}: {other:?}"),
    }
}

/// Idle files (the very same snapshot in both samples) have their
/// counters counted all at once; every aggregator gives what it gives
/// for equal but separately read snapshots.
#[test]
fn idle_files_count_the_same_as_files_read_again() {
    let f = |name: &str, ino, req, busy| {
        file(
            name,
            ino,
            true,
            &[("req", Value::Counter(req)), ("busy", Value::Gauge(busy))],
        )
    };
    let s1 = sample(vec![
        f("a", 1, 10, 1),
        f("b", 3, 20, 2),
        f("c", 5, 30, 3),
        f("d", 7, 40, 0),
    ]);
    // a, b and d idle (shared), c counted 5 more.
    let shared = |name: &str| {
        s1.files
            .iter()
            .find(|x| x.id.path == Path::new(name))
            .unwrap()
            .clone()
    };
    let idle = sample(vec![
        shared("a"),
        shared("b"),
        f("c", 5, 35, 3),
        shared("d"),
    ]);
    let again = sample(vec![
        f("a", 1, 10, 1),
        f("b", 3, 20, 2),
        f("c", 5, 35, 3),
        f("d", 7, 40, 0),
    ]);
    for aggregator in [
        None,
        Some(Aggregator::Sum),
        Some(Aggregator::Avg),
        Some(Aggregator::Min),
        Some(Aggregator::Max),
        Some(Aggregator::Count),
        Some(Aggregator::One),
        Some(Aggregator::NonzeroMin),
        Some(Aggregator::NonzeroAvg),
    ] {
        let view = View {
            aggregator,
            ..View::default()
        };
        let a = view.delta(Some(&s1), &idle);
        let b = view.delta(Some(&s1), &again);
        assert_eq!(a.series, b.series, "{aggregator:?}");
    }
    assert_eq!(int(&View::new().delta(Some(&s1), &idle), "req"), 5);
}

#[test]
fn increases_count_appeared_files_whole_and_vanished_ones_not_at_all() {
    let c = |n| Value::Counter(n);
    let s1 = sample(vec![
        file("a", 1, true, &[("req", c(10))]),
        file("b", 2, false, &[("req", c(100))]),
        file("r", 3, true, &[("req", c(50))]),
    ]);
    // b vanished, c appeared, r was replaced (same name, new inode).
    let s2 = sample(vec![
        file("a", 1, true, &[("req", c(15))]),
        file("c", 4, true, &[("req", c(7))]),
        file("r", 5, true, &[("req", c(2))]),
    ]);
    let view = View::new();
    assert_eq!(int(&view.delta(None, &s1), "req"), 160);
    let d = view.delta(Some(&s1), &s2);
    assert_eq!(int(&d, "req"), 5 + 7 + 2);
    assert!(d.warnings.is_empty(), "{:?}", d.warnings);
}

#[test]
fn a_counter_that_goes_down_is_a_warning_not_a_negative_rate() {
    let s1 = sample(vec![
        file("a", 1, true, &[("req", Value::Counter(10))]),
        file("b", 2, true, &[("req", Value::Counter(10))]),
    ]);
    let s2 = sample(vec![
        file("a", 1, true, &[("req", Value::Counter(4))]),
        file("b", 2, true, &[("req", Value::Counter(13))]),
    ]);
    let d = View::new().delta(Some(&s1), &s2);
    assert_eq!(int(&d, "req"), 3);
    assert_eq!(d.warnings.len(), 1);
    assert_eq!(d.warnings[0].path, PathBuf::from("a"));
    assert!(d.warnings[0].reason.contains("went down from 10 to 4"));
}

#[test]
fn gauges_sum_live_writers_unless_told_otherwise() {
    let s = sample(vec![
        file("a", 1, true, &[("busy", Value::Gauge(2))]),
        file("b", 2, false, &[("busy", Value::Gauge(3))]),
        file("c", 3, true, &[("busy", Value::Gauge(0))]),
    ]);
    let mut view = View::new();
    assert_eq!(int(&view.delta(None, &s), "busy"), 2);
    view.include_dead = true;
    assert_eq!(int(&view.delta(None, &s), "busy"), 5);
    view.include_dead = false;
    let with = |a: Aggregator| {
        let v = View {
            aggregator: Some(a),
            ..View::new()
        };
        v.delta(None, &s).get("busy", None).unwrap().value.clone()
    };
    assert_eq!(with(Aggregator::Max), SeriesValue::Int(3));
    assert_eq!(with(Aggregator::Min), SeriesValue::Int(0));
    assert_eq!(with(Aggregator::NonzeroMin), SeriesValue::Int(2));
    assert_eq!(with(Aggregator::Avg), SeriesValue::Float(5.0 / 3.0));
    assert_eq!(with(Aggregator::NonzeroAvg), SeriesValue::Float(2.5));
    assert_eq!(with(Aggregator::One), SeriesValue::Int(2));
    assert_eq!(with(Aggregator::Count), SeriesValue::Int(3));
    assert_eq!(with(Aggregator::Sum), SeriesValue::Int(5));
}

#[test]
fn histograms_give_the_window_merged_over_files() {
    let h = |vals: &[u64]| {
        let mut h = HistogramSnapshot::new(Layout::timer());
        for &v in vals {
            h.record(v);
        }
        Value::Histogram(h)
    };
    let s1 = sample(vec![
        file("a", 1, true, &[("t", h(&[5, 5]))]),
        file("b", 2, true, &[("t", h(&[7]))]),
    ]);
    let s2 = sample(vec![
        file("a", 1, true, &[("t", h(&[5, 5, 1000]))]),
        file("b", 2, true, &[("t", h(&[7, 1000, 1000]))]),
    ]);
    let d = View::new().delta(Some(&s1), &s2);
    let SeriesValue::Histogram(w) = &d.get("t", None).unwrap().value else {
        panic!()
    };
    assert_eq!(w.count(), 3);
    assert_eq!(w.sum(), 3000);
}

#[test]
fn grouping_splits_series_by_process() {
    let s = sample(vec![
        file("a", 1, true, &[("req", Value::Counter(1))]),
        file("b", 2, true, &[("req", Value::Counter(2))]),
    ]);
    let view = View {
        group_by: GroupBy::Pid,
        ..View::new()
    };
    let d = view.delta(None, &s);
    let keys: Vec<String> = d.series.keys().map(|k| k.to_string()).collect();
    assert_eq!(keys, ["req{pid=1}", "req{pid=2}"]);
    assert_eq!(d.get("req", Some("2")).unwrap().value, SeriesValue::Int(2));
}
