//! Span paths, calls and the cap, read back from the real files.

mod common;

use common::run;
use mmstats_read::{Kind, Snapshot, Value};
use mmstats_tracing::{Builder, OVERFLOW_LABEL};

/// The calls of a path: its busy timer's count; `None` if no such field.
fn calls(snap: &Snapshot, path: &str) -> Option<u64> {
    let f = snap.field(&format!("span.busy{{path={path}}}"))?;
    assert_eq!(f.kind, Kind::Timer);
    assert_eq!(f.static_labels, vec![("path".into(), path.into())]);
    match &f.value {
        Value::Histogram(h) => Some(h.count()),
        v => panic!("{v:?}"),
    }
}

fn paths(snap: &Snapshot) -> Vec<&str> {
    let mut p: Vec<&str> = snap
        .fields
        .iter()
        .filter(|f| f.label.starts_with("span.busy{"))
        .map(|f| {
            let path = f.static_labels[0].1.as_str();
            assert_eq!(
                f.label,
                mmstats::keyed_label("span.busy", &[("path", path)])
            );
            path
        })
        .collect();
    p.sort();
    p
}

#[test]
fn nested_spans_and_two_parents_give_paths() {
    let dir = tempfile::tempdir().unwrap();
    let snap = run(Builder::new().dir(dir.path()).build(), dir.path(), || {
        for _ in 0..3 {
            let _r = tracing::info_span!("request").entered();
            for _ in 0..2 {
                let _q = tracing::info_span!("db_query").entered();
            }
            let _a = tracing::info_span!("auth").entered();
            let _q = tracing::info_span!("db_query").entered();
        }
        let _odd = tracing::info_span!("a/b").entered();
    });
    assert_eq!(
        paths(&snap),
        [
            "a\\/b",
            "request",
            "request/auth",
            "request/auth/db_query",
            "request/db_query"
        ]
    );
    assert_eq!(calls(&snap, "request"), Some(3));
    assert_eq!(calls(&snap, "request/db_query"), Some(6));
    assert_eq!(calls(&snap, "request/auth/db_query"), Some(3));
    let idle = snap.field("span.idle{path=request}").unwrap();
    let Value::Histogram(h) = &idle.value else {
        panic!()
    };
    assert_eq!(h.count(), 3, "one idle time per call");
}

#[test]
fn a_reentered_span_is_one_call_with_busy_and_idle_time() {
    let dir = tempfile::tempdir().unwrap();
    let snap = run(Builder::new().dir(dir.path()).build(), dir.path(), || {
        let outer = tracing::info_span!("task");
        for _ in 0..4 {
            let _e = outer.enter();
            let _inner = tracing::info_span!("step").entered();
            // Spin a little, so busy time is surely above zero.
            let t = std::time::Instant::now();
            while t.elapsed().as_micros() < 50 {}
        }
        // Not entered: idle.
        let t = std::time::Instant::now();
        while t.elapsed().as_micros() < 200 {}
        drop(outer);
    });
    assert_eq!(
        calls(&snap, "task"),
        Some(1),
        "entered four times, one call"
    );
    assert_eq!(calls(&snap, "task/step"), Some(4));
    let sum = |label: &str| match &snap.field(label).unwrap().value {
        Value::Histogram(h) => h.sum(),
        v => panic!("{v:?}"),
    };
    assert!(
        sum("span.busy{path=task}") >= 4 * 50_000,
        "busy covers the entries"
    );
    assert!(
        sum("span.idle{path=task}") >= 200_000,
        "idle covers the wait"
    );
    // The parent's busy time contains its children's.
    assert!(sum("span.busy{path=task}") >= sum("span.busy{path=task/step}"));
}

#[test]
fn past_the_cap_paths_fold_into_other_and_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let layer = Builder::new().dir(dir.path()).max_paths(3).build();
    let names = ["a", "b", "c", "d", "e"];
    let snap = run(layer.clone(), dir.path(), || {
        let _root = tracing::info_span!("root").entered();
        for (i, name) in names.iter().enumerate() {
            // Dynamic names need a callsite each: one per arm.
            for _ in 0..=i {
                let _s = match *name {
                    "a" => tracing::info_span!("a").entered(),
                    "b" => tracing::info_span!("b").entered(),
                    "c" => tracing::info_span!("c").entered(),
                    "d" => tracing::info_span!("d").entered(),
                    _ => tracing::info_span!("e").entered(),
                };
                // Under a folded path: counted, not timed again.
                let _child = tracing::info_span!("child").entered();
            }
        }
    });
    // root, root/a, root/a/child are the three under the cap; everything
    // else lands in root/other and root/a/other.
    assert_eq!(
        paths(&snap),
        ["root", "root/a", "root/a/child", "root/other"]
    );
    // b: 2, c: 3, d: 4, e: 5 calls; their children are inside them, so
    // they are counted as overflow but not timed into other again.
    assert_eq!(calls(&snap, "root/other"), Some(14));
    // So other's time is within its parent's, as every node's is.
    let sum = |path: &str| match &snap
        .field(&format!("span.busy{{path={path}}}"))
        .unwrap()
        .value
    {
        Value::Histogram(h) => h.sum(),
        v => panic!("{v:?}"),
    };
    assert!(sum("root/other") <= sum("root"));
    match snap.field(OVERFLOW_LABEL).unwrap().value {
        Value::Counter(n) => assert_eq!(n, 28),
        ref v => panic!("{v:?}"),
    }
    assert_eq!(layer.error(), None);
}

#[test]
fn file_options_set_command_and_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let files = mmstats::Options::new()
        .dir(dir.path())
        .command("jobs")
        .prefix("app.");
    let snap = run(Builder::new().files(files).build(), dir.path(), || {
        let _r = tracing::info_span!("request").entered();
    });
    assert_eq!(snap.info.command, "jobs");
    assert!(snap
        .info
        .path
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("jobs."));
    assert!(
        snap.field("app.span.busy{path=request}").is_some(),
        "{:?}",
        snap.fields
    );
}
