//! What format-spec.md says and slurpstats does, one test per point that a
//! reader written from the spec alone had to guess (issue 17 §2; the
//! spec's changelog lists them): the files the JSON lists and how an added
//! archive's path is spelled (§7.7), byte-wise order and distinct
//! spellings (§7.6), the check of an archive opened by name (§2.8), the
//! fold's "first file", empty text and kind clashes (§2.8), the JSON layout
//! (§7.7) and the `--help` summary.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mmstats::{Counter, FieldDef, Gauge, GaugeF64, Schema, StatsFile, Text};
use mmstats_read::retire::{fold, FoldReport, RetireOptions};
use serde_json::{json, Value as Json};

const BIN: &str = env!("CARGO_BIN_EXE_slurpstats");

/// Runs slurpstats in `cwd` (the test's own if `None`).
fn slurp_in<S: AsRef<OsStr>>(cwd: Option<&Path>, args: &[S]) -> Output {
    let mut c = Command::new(BIN);
    c.args(args).env_remove("MMSTATS_DIR");
    if let Some(d) = cwd {
        c.current_dir(d);
    }
    c.output().unwrap()
}

fn json_in<S: AsRef<OsStr>>(cwd: Option<&Path>, args: &[S]) -> Vec<Json> {
    let mut all: Vec<&OsStr> = vec![OsStr::new("--json")];
    all.extend(args.iter().map(|a| a.as_ref()));
    let out = slurp_in(cwd, &all);
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

fn files_of(objects: &[Json]) -> Vec<String> {
    objects
        .iter()
        .map(|o| o["file"].as_str().unwrap().to_owned())
        .collect()
}

/// Creates `NAME.mmstats` in `dir` from `schema` (a live writer until
/// dropped).
fn make(dir: &Path, name: &str, schema: &Schema) -> StatsFile {
    let options = mmstats::Options::new()
        .dir(dir)
        .template(&format!("{name}.pending-{{pid}}-{{tid}}.mmstats"));
    let file = StatsFile::create(schema, &options).unwrap();
    let made = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("{name}.pending-"))
        })
        .unwrap();
    fs::rename(made, dir.join(format!("{name}.mmstats"))).unwrap();
    file
}

/// Closes `file` and makes its writer provably dead: the lock file its
/// header names does not exist (spec §2.4).
fn dead(dir: &Path, name: &str, file: StatsFile) {
    drop(file);
    let path = dir.join(format!("{name}.mmstats"));
    let mut bytes = fs::read(&path).unwrap();
    mmstats::format::raw::put_u64(&mut bytes, mmstats::format::raw::H_LOCK_TOKEN, 1);
    fs::write(&path, bytes).unwrap();
}

fn fold_now(dir: &Path) -> FoldReport {
    let mut opts = RetireOptions::default();
    opts.min_age = std::time::Duration::ZERO;
    fold(dir, &opts).unwrap()
}

fn schema(model: &str, fields: Vec<FieldDef>) -> Schema {
    let mut s = Schema::new(model);
    for f in fields {
        s.push(f);
    }
    s
}

/// The one archive in `dir`.
fn archive_in(dir: &Path) -> PathBuf {
    let found: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.contains(".archive") && name.ends_with(".mmstats") && !name.starts_with('.')
        })
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    found[0].clone()
}

/// §7.7: the array holds what a total counts (§2.8): not a writer file an
/// archive holds, and the archive of every writer file read, opened by
/// name, spelled as the writer file's path up to its last `/`, then the
/// archive's name.
#[test]
fn json_lists_what_is_counted_and_spells_an_added_archive_beside_its_writer() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let s = schema("m1", vec![FieldDef::counter("c")]);
    let mut one = make(dir, "one", &s);
    one.take::<Counter>("c").unwrap().add(1);
    dead(dir, "one", one);
    let bytes = fs::read(dir.join("one.mmstats")).unwrap();
    assert_eq!(fold_now(dir).folded, 1);
    // A leftover of a folder killed before removing it: its identity is in
    // the archive, so it is not listed.
    fs::write(dir.join("one.mmstats"), bytes).unwrap();
    let _live = make(dir, "live", &s);
    let archive = archive_in(dir);
    let name = archive.file_name().unwrap().to_str().unwrap().to_owned();
    let all = json_in(None, &[dir]);
    let d_ = dir.display();
    assert_eq!(
        files_of(&all),
        vec![format!("{d_}/live.mmstats"), format!("{d_}/{name}")]
    );
    assert_eq!(all[1]["stats"]["c"], json!(1));
    // Only the writer file given: its archive is added, spelled beside it.
    for (cwd, arg, want) in [
        (None, format!("{d_}/live.mmstats"), format!("{d_}/{name}")),
        (None, format!("{d_}//live.mmstats"), format!("{d_}//{name}")),
        (Some(dir), "live.mmstats".to_owned(), name.clone()),
        (Some(dir), "./live.mmstats".to_owned(), format!("./{name}")),
    ] {
        let got = files_of(&json_in(cwd, &[&arg]));
        assert!(got.contains(&want), "{arg}: {got:?}");
        assert_eq!(got.len(), 2, "{arg}: {got:?}");
    }
}

/// §7.6: sorted by the path's bytes, not by its components, and paths
/// that differ in their bytes are distinct even if they name one file.
#[test]
fn paths_sort_byte_wise_and_distinct_spellings_stay_distinct() {
    let root = tempfile::tempdir().unwrap();
    let s = schema("m", vec![FieldDef::counter("c")]);
    let mut keep = Vec::new();
    for sub in ["a", "a-b"] {
        let dir = root.path().join(sub);
        fs::create_dir(&dir).unwrap();
        keep.push(make(&dir, "x", &s));
    }
    let r = root.path().display();
    // '-' (0x2D) sorts before '/' (0x2F): o/a-b/... comes first.
    let got = files_of(&json_in(
        None,
        &[root.path().join("a"), root.path().join("a-b")],
    ));
    assert_eq!(
        got,
        vec![format!("{r}/a-b/x.mmstats"), format!("{r}/a/x.mmstats")]
    );
    let got = files_of(&json_in(
        None,
        &[format!("{r}/a/x.mmstats"), format!("{r}/a//x.mmstats")],
    ));
    assert_eq!(
        got,
        vec![format!("{r}/a//x.mmstats"), format!("{r}/a/x.mmstats")]
    );
}

/// §2.8 "Reading", step 3: an archive opened by name (not listed) is read
/// only if it is the archive that name is for, by its header's command and
/// model; a listed one is shown as what it is.
#[test]
fn an_archive_opened_by_name_must_be_the_one_its_name_is_for() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let mut old = make(dir, "old", &schema("other", vec![FieldDef::counter("c")]));
    old.take::<Counter>("c").unwrap().add(5);
    dead(dir, "old", old);
    assert_eq!(fold_now(dir).folded, 1);
    let real = archive_in(dir);
    let name = real.file_name().unwrap().to_str().unwrap();
    assert!(name.contains(".other.archive"), "{name}");
    // Under the name model m1's archive would have.
    let forged = dir.join(name.replace(".other.archive", ".m1.archive"));
    fs::rename(&real, &forged).unwrap();
    let _live = make(dir, "live", &schema("m1", vec![FieldDef::counter("c")]));
    let live = dir.join("live.mmstats");
    assert_eq!(
        files_of(&json_in(None, &[&live])),
        vec![live.display().to_string()]
    );
    let listed = json_in(None, &[dir]);
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[1]["model"], json!("other"));
}

/// §2.8 "The archive": help, unit and static labels come from the archive
/// itself, else the earliest created source with the label (not the first
/// by path); a text keeps the value of the latest created source, even an
/// empty one.
#[test]
fn the_fold_takes_metadata_from_the_earliest_and_text_from_the_latest() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let fields = |help: &str| {
        vec![
            FieldDef::counter("c").help(help),
            FieldDef::text("t", 16).help(help),
        ]
    };
    // Created first, named last.
    let mut early = make(dir, "z-early", &schema("m", fields("early")));
    early.take::<Text<16>>("t").unwrap().set("busy");
    dead(dir, "z-early", early);
    // Created later, its text never set: empty.
    let late = make(dir, "a-late", &schema("m", fields("late")));
    dead(dir, "a-late", late);
    assert_eq!(fold_now(dir).folded, 2);
    let a = &json_in(None, &[archive_in(dir)])[0];
    assert_eq!(a["fields"]["c"]["help"], json!("early"), "{a}");
    assert_eq!(a["stats"]["t"], json!(""), "{a}");
    // A later fold keeps the archive's own metadata.
    let next = make(dir, "b-next", &schema("m", fields("next")));
    dead(dir, "b-next", next);
    assert_eq!(fold_now(dir).folded, 1);
    let a = &json_in(None, &[archive_in(dir)])[0];
    assert_eq!(a["fields"]["c"]["help"], json!("early"), "{a}");
    assert_eq!(a["archive"]["writers"], json!(3));
}

/// §2.8 "The archive": a gauge is dropped before any kind is compared, so
/// a gauge with the label of an archive's counter does not stop its file
/// from being folded; a text with that label does.
#[test]
fn a_gauge_never_clashes_but_another_kind_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let mut c = make(dir, "c", &schema("m", vec![FieldDef::counter("x")]));
    c.take::<Counter>("x").unwrap().add(5);
    dead(dir, "c", c);
    assert_eq!(fold_now(dir).folded, 1);
    let mut g = make(
        dir,
        "g",
        &schema("m", vec![FieldDef::gauge("x"), FieldDef::counter("n")]),
    );
    g.take::<Gauge>("x").unwrap().set(3);
    g.take::<Counter>("n").unwrap().add(1);
    dead(dir, "g", g);
    let t = make(dir, "t", &schema("m", vec![FieldDef::text("x", 8)]));
    dead(dir, "t", t);
    let report = fold_now(dir);
    assert_eq!(report.folded, 1, "{report:?}");
    assert_eq!(report.skipped.len(), 1, "{report:?}");
    assert!(report.skipped[0].0.ends_with("t.mmstats"), "{report:?}");
    assert!(report.skipped[0].1.contains("kind"), "{report:?}");
    let a = &json_in(None, &[archive_in(dir)])[0];
    assert_eq!(a["stats"]["x"], json!(5), "{a}");
    assert_eq!(a["fields"]["x"]["kind"], json!("counter"), "{a}");
    assert_eq!(a["stats"]["n"], json!(1), "{a}");
}

/// §7.7 "Layout": members in the order of the table, labels and static
/// label keys sorted by their bytes, integers as digits, other numbers as
/// the shortest round-trip decimal.
#[test]
fn the_json_layout_is_the_specified_one() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let values = [
        ("f.a", 2.0),
        ("f.b", -0.0),
        ("f.c", 1e300),
        ("f.d", 0.1),
        ("f.e", 1.5e-7),
        ("f.f", 1e16),
        ("f.g", 123456.789),
        ("f.h", -2.5e-300),
        ("f.i", 0.00001),
        ("f.j", 1e-6),
        ("f.k", 1e15),
    ];
    let mut defs: Vec<FieldDef> = values.iter().map(|(l, _)| FieldDef::gauge_f64(l)).collect();
    defs.push(
        FieldDef::counter("c")
            .static_label("zone", "b")
            .static_label("Zed", "c")
            .static_label("app", "a"),
    );
    defs.push(FieldDef::text("t", 32));
    let mut file = make(dir, "x", &schema("m", defs));
    for (label, v) in values {
        file.take::<GaugeF64>(label).unwrap().set(v);
    }
    file.take::<Text<32>>("t")
        .unwrap()
        .set("a/b\u{1}\u{1f}\u{7f}é\"\\\n\t");
    let out = slurp_in(None, &[OsStr::new("--json"), dir.as_os_str()]);
    let text = String::from_utf8(out.stdout).unwrap();
    // One object per line between "[" and "]".
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!((lines[0], lines[2]), ("[", "]"), "{text}");
    let obj = lines[1];
    let keys = [
        "\"file\":",
        "\"pid\":",
        "\"tid\":",
        "\"command\":",
        "\"model\":",
        "\"alive\":",
        "\"state\":",
        "\"created_unix_ns\":",
        "\"version\":",
        "\"skipped_fields\":",
        "\"fallbacks\":",
        "\"stats\":",
        "\"fields\":",
    ];
    let at: Vec<usize> = keys
        .iter()
        .map(|k| obj.find(k).unwrap_or_else(|| panic!("{k} in {obj}")))
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{obj}");
    assert!(obj.starts_with("{\"file\":"), "{obj}");
    for want in [
        "\"stats\":{\"c\":0,\"f.a\":2.0,\"f.b\":-0.0,\"f.c\":1e+300,\"f.d\":0.1,\
         \"f.e\":1.5e-7,\"f.f\":1e+16,\"f.g\":123456.789,\"f.h\":-2.5e-300,\"f.i\":0.00001,\"f.j\":1e-6,\
         \"f.k\":1000000000000000.0,\"t\":",
        "\"static_labels\":{\"Zed\":\"c\",\"app\":\"a\",\"zone\":\"b\"}",
        "\"skipped_fields\":0,\"fallbacks\":0,",
        "\"t\":\"a/b\\u0001\\u001f\u{7f}é\\\"\\\\\\n\\t\"",
        "\"version\":\"1.2\",",
    ] {
        assert!(obj.contains(want), "{want} not in {obj}");
    }
    drop(file);
}

/// The `--help` summary of the JSON names every member, "archive"
/// included.
#[test]
fn help_summarises_the_archive_member() {
    let out = slurp_in(None, &["--help"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("\"state\": \"active\"|\"exited\"|\"archive\"|\"unknown\""),
        "{text}"
    );
    assert!(
        text.contains(
            "\"archive\": {\"writers\", \"since_unix_ns\", \"folded_unix_ns\", \"folds\", \"ids\"}"
        ),
        "{text}"
    );
}
