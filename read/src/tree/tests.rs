use super::json::TreesJson;
use super::*;
use crate::aggregate::Sources;
use mmstats::{FieldDef, Layout, Options, Schema, StatsFile, Timer};

/// A file of command `svc`, model `tracing`, with a busy timer per path
/// (precision 12: values below 4096 ns are exact).
fn span_file(dir: &std::path::Path, name: &str, paths: &[&str]) -> (StatsFile, Vec<Timer>) {
    let mut schema = Schema::new("tracing");
    for p in paths {
        schema.push(
            FieldDef::timer(&format!("span.busy{{path={p}}}"), Layout::timer()).layout(12, 42),
        );
    }
    let options = Options::new()
        .dir(dir)
        .command("svc")
        .template(&format!("{name}.{{pid}}.{{tid}}.mmstats"));
    let mut file = StatsFile::create(&schema, &options).unwrap();
    let timers = paths
        .iter()
        .map(|p| file.take(&format!("span.busy{{path={p}}}")).unwrap())
        .collect();
    (file, timers)
}

fn record(t: &Timer, calls: u64, ns: u64) {
    for _ in 0..calls {
        t.record_ns(ns);
    }
}

fn node<'a>(trees: &'a Trees, path: &[&str]) -> &'a Node {
    assert_eq!(trees.groups.len(), 1, "{trees:?}");
    let mut n = &trees.groups.values().next().unwrap().root;
    for name in path {
        n = &n.children[*name];
    }
    n
}

#[test]
fn paths_split_on_unescaped_slashes_and_join_back() {
    assert_eq!(split_path("a/b\\/c/d\\\\"), ["a", "b/c", "d\\"]);
    assert_eq!(join_path(&split_path("a/b\\/c/d\\\\")), "a/b\\/c/d\\\\");
    assert_eq!(
        span_path("app.span.busy{path=a/b}"),
        Some(("app.", "a/b".into()))
    );
    assert_eq!(span_path("span.idle{path=a}"), None);
    assert_eq!(span_path("span.busy{path=a"), None, "no closing brace");
    // The keyed label's escapes are undone; the path's own stay.
    let label = mmstats::keyed_label("span.busy", &[("path", "a\\/b,c}d=e\nf\tg\u{85}")]);
    assert!(!label.chars().any(char::is_control), "{label:?}");
    assert_eq!(
        span_path(&label),
        Some(("", "a\\/b,c}d=e\nf\tg\u{85}".into()))
    );
}

#[test]
fn a_tree_merges_files_and_computes_self_time() {
    crate::install_sigbus_guard().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (_a, ta) = span_file(dir.path(), "a", &["request", "request/db"]);
    let (_b, tb) = span_file(dir.path(), "b", &["request", "health"]);
    record(&ta[0], 2, 1000);
    record(&ta[1], 4, 100);
    record(&tb[0], 1, 1000);
    record(&tb[1], 3, 500);
    let mut trees = Trees::new();
    let (files, _) = crate::discover(&[dir.path()]);
    for f in &files {
        trees.add(&crate::read_file(f).unwrap());
    }
    let tree = trees.groups.values().next().unwrap();
    assert_eq!((tree.files, tree.total()), (2, 4500));
    let request = node(&trees, &["request"]);
    assert_eq!(
        (request.total(), request.self_ns(), request.calls()),
        (3000, 2600, 3)
    );
    assert_eq!(request.quantiles(), Some([1000; 5]));
    let names: Vec<&str> = tree.root.sorted().iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["request", "health"]);

    let j = TreesJson::new(&trees, 10);
    assert_eq!((j.nodes, j.truncated), (3, false));
    let db = &j.trees[0].nodes[0].children[0];
    assert_eq!(
        (db.path.as_str(), db.total_ns, db.calls),
        ("request/db", 400, 4)
    );
    assert!((j.trees[0].nodes[0].self_share - 2600.0 / 4500.0).abs() < 1e-12);
    // The cap takes nodes depth first and says it cut.
    let j = TreesJson::new(&trees, 2);
    assert_eq!((j.nodes, j.truncated), (2, true));
    assert_eq!(j.trees[0].nodes.len(), 1);
    assert_eq!(j.trees[0].nodes[0].children.len(), 1);
}

#[test]
fn an_interval_tree_counts_what_was_recorded_in_it() {
    crate::install_sigbus_guard().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (_a, ta) = span_file(dir.path(), "a", &["request", "request/db"]);
    let (b, tb) = span_file(dir.path(), "b", &["request"]);
    record(&ta[0], 5, 1000);
    record(&ta[1], 5, 100);
    record(&tb[0], 7, 2000);
    let mut sources = Sources::new(&[dir.path()]);
    // Each sample lists the directory: a new file is seen without waiting
    // for its inotify event.
    sources.set_rescan_interval(std::time::Duration::ZERO);
    let first = sources.sample();
    let whole = Trees::between(None, &first, false);
    assert_eq!(node(&whole, &["request"]).calls(), 12);
    // In the interval: 2 calls in a, 1 in a new file c; b goes away.
    record(&ta[0], 2, 3000);
    record(&ta[1], 3, 200);
    drop((b, tb));
    std::fs::remove_file(only(dir.path(), "b")).unwrap();
    let (_c, tc) = span_file(dir.path(), "c", &["request"]);
    record(&tc[0], 1, 500);
    let second = sources.sample();
    // Kept as spans only (as mmash keeps its window), the same tree.
    let kept = spans_only(&first);
    assert!(kept.files.iter().all(|f| f.snapshot.fields.len() <= 2));
    for trees in [
        Trees::between(Some(&first), &second, false),
        Trees::between(Some(&kept), &spans_only(&second), false),
    ] {
        assert!(trees.problems.is_empty(), "{:?}", trees.problems);
        let request = node(&trees, &["request"]);
        assert_eq!((request.calls(), request.total()), (3, 6500));
        let db = node(&trees, &["request", "db"]);
        assert_eq!((db.calls(), db.total()), (3, 600));
        assert_eq!(trees.groups.values().next().unwrap().files, 2);
    }
    // Nothing happened since: every node is there with no calls.
    let third = sources.sample();
    let idle = Trees::between(Some(&second), &third, false);
    assert_eq!(node(&idle, &["request"]).calls(), 0);
    assert_eq!(node(&idle, &["request"]).quantiles(), None);
}

#[test]
fn a_hostile_depth_is_cut_without_losing_calls() {
    crate::install_sigbus_guard().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let deep = vec!["x"; 3000].join("/");
    let (_a, ta) = span_file(dir.path(), "a", &[&deep]);
    record(&ta[0], 3, 100);
    let (files, _) = crate::discover(&[dir.path()]);
    let mut trees = Trees::new();
    trees.add(&crate::read_file(&files[0]).unwrap());
    let mut n = &trees.groups.values().next().unwrap().root;
    let mut depth = 0;
    while let Some((_, c)) = n.children.iter().next() {
        n = c;
        depth += 1;
    }
    assert_eq!(depth, MAX_DEPTH);
    assert_eq!((n.calls(), n.total()), (3, 300));
    let j = TreesJson::new(&trees, usize::MAX);
    assert_eq!(j.nodes, MAX_DEPTH);
}

fn only(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("{name}."))
        })
        .unwrap()
}
