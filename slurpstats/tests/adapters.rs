//! The built `slurpstats` reads what the adapter crates write: counts and
//! labels recorded through the `metrics` facade.

use std::process::Command;

use serde_json::{json, Value as Json};

const BIN: &str = env!("CARGO_BIN_EXE_slurpstats");

fn slurp_json(dir: &std::path::Path) -> Vec<Json> {
    let out = Command::new(BIN)
        .arg("--json")
        .arg(dir)
        .env_remove("MMSTATS_DIR")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    match serde_json::from_slice(&out.stdout) {
        Ok(Json::Array(files)) => files,
        other => panic!("not a JSON array: {other:?}"),
    }
}

#[test]
fn metrics_counts_and_labels_in_json() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = mmstats_metrics::Builder::new().dir(dir.path()).build();
    std::thread::scope(|s| {
        s.spawn(|| {
            metrics::with_local_recorder(&recorder, || {
                metrics::describe_counter!("http.requests", "Requests served");
                for _ in 0..123 {
                    metrics::counter!("http.requests", "route" => "/a").increment(1);
                }
                metrics::counter!("http.requests", "route" => "/b").increment(7);
            })
        });
    });
    let files = slurp_json(dir.path());
    assert_eq!(files.len(), 1);
    let f = &files[0];
    assert_eq!(f["model"], json!("metrics"));
    assert_eq!(f["stats"]["http.requests{route=/a}"], json!(123));
    assert_eq!(f["stats"]["http.requests{route=/b}"], json!(7));
    let a = &f["fields"]["http.requests{route=/a}"];
    assert_eq!(a["static_labels"], json!({"route": "/a"}));
    assert_eq!(a["help"], json!("Requests served"));
    assert_eq!(f["stats"]["mmstats_metrics.dropped"], json!(0));
}

/// Writes span timers as `mmstats-tracing` names them, with exact values
/// (precision 12: every value below 4096 ns has a bucket of its own), into
/// a file of command `svc`, model `tracing`.
fn span_file(dir: &std::path::Path, name: &str, spans: &[(&str, u64, u64)]) -> mmstats::StatsFile {
    use mmstats::{FieldDef, Layout, Options, Schema, StatsFile, Timer};
    let mut schema = Schema::new("tracing");
    for (path, _, _) in spans {
        for kind in ["busy", "idle"] {
            let label = format!("span.{kind}{{path={path}}}");
            schema.push(FieldDef::timer(&label, Layout::timer()).layout(12, 42));
        }
    }
    let options = Options::new()
        .dir(dir)
        .command("svc")
        .template(&format!("{name}.{{pid}}.{{tid}}.mmstats"));
    let mut file = StatsFile::create(&schema, &options).unwrap();
    for (path, calls, ns) in spans {
        let busy: Timer = file.take(&format!("span.busy{{path={path}}}")).unwrap();
        let idle: Timer = file.take(&format!("span.idle{{path={path}}}")).unwrap();
        for _ in 0..*calls {
            busy.record_ns(*ns);
            // Idle time is not part of the tree.
            idle.record_ns(4000);
        }
    }
    file
}

fn slurp_tree(dir: &std::path::Path) -> String {
    let out = Command::new(BIN)
        .arg("--tree")
        .arg(dir)
        .env_remove("MMSTATS_DIR")
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn tree_matches_a_hand_computed_tree() {
    let dir = tempfile::tempdir().unwrap();
    // Two files of one command and model: request's calls are split over
    // both, request/db has two values (100 ns and 300 ns, ten each).
    let _a = span_file(
        dir.path(),
        "a",
        &[
            ("request", 5, 1000),
            ("request/db", 10, 100),
            ("request/auth", 5, 400),
            ("request/auth/db", 5, 100),
        ],
    );
    let _b = span_file(
        dir.path(),
        "b",
        &[
            ("request", 5, 1000),
            ("request/db", 10, 300),
            ("health", 10, 500),
        ],
    );
    // Total: request 10000 + health 5000 = 15000 ns.
    // request: 10000 (66.7 %), self 10000 - 4000 - 2000 = 4000 (26.7 %);
    // request/db: 4000 (26.7 %); request/auth: 2000 (13.3 %), self 1500
    // (10.0 %); request/auth/db: 500 (3.3 %); health: 5000 (33.3 %).
    let want = "\
== command \"svc\" model \"tracing\" (2 files)
 66.7% (26.7%) | request
    50th 1µs, 75th 1µs, 95th 1µs, 99th 1µs, 99.9th 1µs
    10 calls
     26.7% (26.7%) | db
        50th 100ns, 75th 300ns, 95th 300ns, 99th 300ns, 99.9th 300ns
        20 calls
     13.3% (10.0%) | auth
        50th 400ns, 75th 400ns, 95th 400ns, 99th 400ns, 99.9th 400ns
        5 calls
          3.3% ( 3.3%) | db
            50th 100ns, 75th 100ns, 95th 100ns, 99th 100ns, 99.9th 100ns
            5 calls
 33.3% (33.3%) | health
    50th 500ns, 75th 500ns, 95th 500ns, 99th 500ns, 99.9th 500ns
    10 calls
";
    assert_eq!(slurp_tree(dir.path()), want);
}

#[test]
fn tree_of_spans_recorded_by_the_tracing_layer() {
    use tracing_subscriber::layer::SubscriberExt;
    let dir = tempfile::tempdir().unwrap();
    let layer = mmstats_tracing::Builder::new().dir(dir.path()).build();
    std::thread::scope(|s| {
        s.spawn(|| {
            let subscriber = tracing_subscriber::registry().with(layer);
            tracing::subscriber::with_default(subscriber, || {
                for _ in 0..3 {
                    let _r = tracing::info_span!("request").entered();
                    let _q = tracing::info_span!("db_query").entered();
                }
            });
        });
    });
    let tree = slurp_tree(dir.path());
    let lines: Vec<&str> = tree.lines().collect();
    assert!(lines[0].ends_with("model \"tracing\" (1 file)"), "{tree}");
    assert!(
        lines[1].starts_with("100.0% (") && lines[1].ends_with("| request"),
        "{tree}"
    );
    assert_eq!(lines[3], "    3 calls", "{tree}");
    assert!(lines[4].ends_with("| db_query"), "{tree}");
    assert_eq!(lines[6], "        3 calls", "{tree}");
    assert_eq!(lines.len(), 7, "{tree}");
}
