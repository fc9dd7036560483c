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
