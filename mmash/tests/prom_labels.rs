//! Static labels on `/metrics`: a real writer's fields with static labels,
//! read by a real mmash on 127.0.0.1:0, checked line by line and by
//! `promtool check metrics`. Covers the family name without the `{...}`
//! part, keys that clash with mmash's own labels, escaping, the bounds
//! (logged once per owner), and a field appended to a file mmash had read
//! already.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use common::{promtool_clean, stats_dir, Mmash};
use mmstats::{Counter, FieldDef, Options, Schema, StatsFile};

/// The writer: see [`writer_child`].
const WRITER_ENV: &str = "MMASH_PROM_LABELS_WRITER";

fn counter(label: &str, statics: &[(&str, &str)]) -> FieldDef {
    statics
        .iter()
        .fold(FieldDef::counter(label), |d, (k, v)| d.static_label(k, v))
}

/// Runs as the writer when started with [`WRITER_ENV`]: makes the fields,
/// counts, prints `ready`; on the line `late` appends a field and counts
/// it, prints `ok`; exits at end of input.
#[test]
fn writer_child() {
    let Ok(dir) = std::env::var(WRITER_ENV) else {
        return;
    };
    let many: Vec<(String, String)> = (0..17).map(|i| (format!("k{i}"), "v".into())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (&**k, &**v)).collect();
    let long = "x".repeat(2000);
    let mut schema = Schema::new("labelled");
    schema.push(counter("req{route=/a}", &[("route", "/a")]).help("Requests served"));
    schema.push(counter("req{route=/b}", &[("route", "/b")]));
    schema.push(counter(
        "clash",
        &[
            ("user", "evil"),
            ("__name__", "spoof"),
            ("le", "1"),
            ("a.b", "q\"\\"),
        ],
    ));
    schema.push(counter("many{k=v}", &many));
    schema.push(counter("long{k=x}", &[("k", &long)]));
    let mut file = StatsFile::create(
        &schema,
        &Options::new().dir(&dir).command("labelw").reserve(4, 4096),
    )
    .expect("make the file");
    for (label, n) in [
        ("req{route=/a}", 3),
        ("req{route=/b}", 5),
        ("clash", 1),
        ("many{k=v}", 2),
        ("long{k=x}", 4),
    ] {
        file.take::<Counter>(label).unwrap().add(n);
    }
    let mut out = std::io::stdout();
    writeln!(out, "ready").unwrap();
    out.flush().unwrap();
    for line in std::io::stdin().lock().lines() {
        assert_eq!(line.unwrap(), "late");
        let late: Counter = file
            .add(counter("late{route=/c}", &[("route", "/c")]).help("Added late"))
            .unwrap();
        late.add(7);
        writeln!(out, "ok").unwrap();
        out.flush().unwrap();
    }
    drop(file);
    std::process::exit(0);
}

/// The one sample line of `name` whose labels contain every one of
/// `labels`; panics unless there is exactly one.
fn sample<'a>(page: &'a str, name: &str, labels: &[&str]) -> &'a str {
    let found: Vec<&str> = page
        .lines()
        .filter(|l| l.strip_prefix(name).is_some_and(|r| r.starts_with('{')))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .collect();
    assert_eq!(found.len(), 1, "{name} {labels:?}: {found:?} in\n{page}");
    found[0]
}

#[test]
fn static_labels_are_exported_bounded_and_promtool_clean() {
    let dir = stats_dir();
    let mut w = Command::new(std::env::current_exe().unwrap())
        .args(["writer_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(WRITER_ENV, dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut to_w = w.stdin.take().unwrap();
    let mut from_w = BufReader::new(w.stdout.take().unwrap());
    let mut wait_for = |what: &str| loop {
        let mut line = String::new();
        assert!(from_w.read_line(&mut line).unwrap() > 0, "writer died");
        // libtest may print "test writer_child ... " before it.
        if line.trim().ends_with(what) {
            break;
        }
    };
    wait_for("ready");
    let m = Mmash::on(dir.path(), &[]);
    let page = m.get("/metrics").body;
    promtool_clean(&page);

    // One family, the series told apart by their static label.
    assert_eq!(page.matches("# TYPE req_total counter\n").count(), 1);
    assert!(
        page.contains("# HELP req_total Requests served\n"),
        "{page}"
    );
    assert!(sample(&page, "req_total", &["route=\"/a\""]).ends_with("} 3"));
    assert!(sample(&page, "req_total", &["route=\"/b\""]).ends_with("} 5"));
    assert!(!page.contains("mmstats_label"), "{page}");
    // Keys that clash with mmash's own labels or Prometheus' reserved ones
    // are renamed; mmash's own user label is the file's owner's.
    let me = mmstats_read::owners::user_name(mmstats::geteuid());
    let clash = sample(
        &page,
        "clash_total",
        &[
            &format!("user=\"{me}\""),
            "exported_user=\"evil\"",
            "exported___name__=\"spoof\"",
            "exported_le=\"1\"",
            "a_b=\"q\\\"\\\\\"",
        ],
    );
    assert!(clash.ends_with("} 1"), "{clash}");
    // Over the bounds: no static labels, named after the whole label,
    // counted all the same; logged once for the owner.
    let many = sample(&page, "many_k_v__total", &[]);
    assert!(many.ends_with("} 2") && !many.contains("k0="), "{many}");
    let long = sample(&page, "long_k_x__total", &[]);
    assert!(long.ends_with("} 4") && !long.contains("k="), "{long}");

    // A field appended to a file mmash has read gets its labels and help.
    writeln!(to_w, "late").unwrap();
    wait_for("ok");
    let page = m.get("/metrics").body;
    promtool_clean(&page);
    assert!(page.contains("# HELP late_total Added late\n"), "{page}");
    assert!(sample(&page, "late_total", &["route=\"/c\""]).ends_with("} 7"));
    assert!(sample(&page, "req_total", &["route=\"/a\""]).ends_with("} 3"));

    let log = m.log.lock().unwrap().clone();
    assert_eq!(
        log.matches("exported without its static labels").count(),
        1,
        "once per owner:\n{log}"
    );
    assert!(log.contains("many{k=v}"), "names the field:\n{log}");
    drop(to_w);
    assert!(w.wait().unwrap().success());
}

#[test]
fn files_that_disagree_on_a_series_static_labels_export_none() {
    let dir = stats_dir();
    let mut files = Vec::new();
    for (name, shard, n) in [("one", "1", 3), ("two", "2", 4)] {
        let mut schema = Schema::new("sharded");
        schema.push(counter("requests", &[("shard", shard)]));
        let options = Options::new()
            .dir(dir.path())
            .command("shards")
            .template(&format!("{name}.{{pid}}.{{tid}}.mmstats"));
        let mut file = StatsFile::create(&schema, &options).unwrap();
        let c: Counter = file.take("requests").unwrap();
        c.add(n);
        files.push((file, c));
    }
    let m = Mmash::on(dir.path(), &[]);
    let page = m.get("/metrics").body;
    promtool_clean(&page);
    // The sum of both files, labelled as neither.
    assert_eq!(
        sample(&page, "requests_total", &["command=\"shards\""]),
        "requests_total{user=\"root\",command=\"shards\",model=\"sharded\"} 7"
            .replace("root", &mmstats_read::owners::user_name(mmstats::geteuid())),
        "{page}"
    );
    assert!(!page.contains("shard="), "{page}");
    let log = m.log.lock().unwrap().clone();
    assert_eq!(
        log.matches("other static labels").count(),
        1,
        "once per owner:\n{log}"
    );
}
