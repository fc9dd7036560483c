//! Golden files: a small committed stats file and its expected reading, so a
//! format change cannot pass unnoticed.
//!
//! - `golden_file_reads_as_expected`: the reader still reads the committed
//!   `tests/data/golden.mmstats` exactly as `tests/data/golden.expected.txt`
//!   says (the reader side of the format).
//! - `writer_still_produces_the_golden_bytes`: the writer, run today with the
//!   same schema and values, still produces those bytes (the writer side).
//!
//! With `MMSTATS_REGENERATE_GOLDEN=1` both tests rewrite the two files
//! instead of comparing. A regeneration is a format change: format-spec.md
//! and the version constants must be reviewed in the same commit.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::sync::Once;
use std::time::{Duration, UNIX_EPOCH};

use mmstats::format::raw::{
    get_u32, HEADER_LEN, H_CREATED_NS, H_FALLBACKS, H_FIELD_CAPACITY, H_FIELD_TABLE_OFF,
    H_LOCK_TOKEN, H_PID, H_PROC_START, H_RECORD_LEN, H_STATE, H_STRINGS_LEN, H_STRINGS_OFF, H_TID,
    H_VALUES_LEN, H_VALUES_OFF,
};
use mmstats::format::{self, raw};
use mmstats::{
    Constant, Counter, FieldDef, Gauge, GaugeF64, Histogram, Layout, Options, Schema, StatsFile,
    Text, Timer, WriterState,
};
use mmstats_read::{Snapshot, Value};

/// The committed golden stats file.
const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/golden.mmstats");
/// Its expected reading, in the format of [`reading`].
const EXPECTED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/golden.expected.txt"
);
/// Set to `1` to rewrite both files instead of comparing.
const REGENERATE_ENV: &str = "MMSTATS_REGENERATE_GOLDEN";

/// The process-dependent header fields, fixed so the file is reproducible.
const PID: u32 = 4242;
const TID: u32 = 4243;
const PROC_START: u64 = 1000;
const CREATED_NS: u64 = 1_700_000_000_000_000_000;
/// A lock token whose lock file does not exist: the writer is long gone.
const LOCK_TOKEN: u64 = 0x0123_4567_89ab_cdef;

/// The golden model: every kind, help texts, units, static labels.
fn golden_schema() -> Schema {
    let mut s = Schema::new("Golden");
    s.push(FieldDef::counter("requests").help("Requests served."));
    s.push(
        FieldDef::gauge("drift")
            .unit("bytes")
            .help("  Bytes over budget.\n"),
    );
    s.push(FieldDef::gauge_f64("cpu").unit("s"));
    s.push(FieldDef::text("state", 16).help("What the thread is doing."));
    s.push(FieldDef::constant("version", 16));
    s.push(
        FieldDef::histogram("rows", Layout::new(3, 20).unwrap())
            .unit("rows")
            .help("Rows per query."),
    );
    s.push(
        FieldDef::timer("latency", Layout::timer())
            .help("Time per request.")
            .static_label("method", "GET")
            .static_label("route", "/v1/items?id=7"),
    );
    s
}

/// Writes the golden file with the library in a temporary directory, sets
/// its values, closes it, and returns its bytes with the process-dependent
/// header fields fixed.
fn golden_bytes() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let options = Options::new()
        .dir(dir.path())
        .command("golden")
        .template("golden.{pid}.{tid}.mmstats");
    let mut file = StatsFile::create(&golden_schema(), &options).unwrap();
    let requests: Counter = file.take("requests").unwrap();
    let drift: Gauge = file.take("drift").unwrap();
    let cpu: GaugeF64 = file.take("cpu").unwrap();
    let state: Text<16> = file.take("state").unwrap();
    let version: Constant<16> = file.take("version").unwrap();
    let rows: Histogram = file.take("rows").unwrap();
    let latency: Timer = file.take("latency").unwrap();

    // Exact at the top of the range.
    requests.add(u64::MAX - 1);
    drift.set(-42);
    cpu.set(1234.5678);
    state.set("hello, wörld");
    assert!(version.set("v1.2.3"));
    // 5_000_000 is past 2^20: counted in the last bucket.
    for v in [0, 7, 100, 1000, 1000, 65_535, 5_000_000] {
        rows.record(v);
    }
    latency.record_ns(1_250);
    latency.record(Duration::from_millis(1));
    latency.record(Duration::from_secs(2));

    let path = file.path().unwrap().to_owned();
    // Closing marks the file exited.
    drop((requests, drift, cpu, state, version, rows, latency, file));
    let mut bytes = fs::read(&path).unwrap();
    raw::put_u32(&mut bytes, H_PID, PID);
    raw::put_u32(&mut bytes, H_TID, TID);
    raw::put_u64(&mut bytes, H_PROC_START, PROC_START);
    raw::put_u64(&mut bytes, H_CREATED_NS, CREATED_NS);
    raw::put_u64(&mut bytes, H_STATE, WriterState::EXITED);
    raw::put_u64(&mut bytes, H_LOCK_TOKEN, LOCK_TOKEN);
    raw::put_u64(&mut bytes, H_FALLBACKS, 0);
    bytes
}

/// A snapshot as text: one line per header fact, then one line per field
/// (`field LABEL KIND unit=UNIT(CODE) unit_text=TEXT VALUE`) followed by
/// its help and static labels, indented. Strings are quoted with Rust's
/// `{:?}`, so whitespace and control characters show. A histogram's value
/// is its layout, count, sum, p50, p99 and non-empty buckets as
/// `lower..upper:count`.
fn reading(snap: &Snapshot) -> String {
    let info = &snap.info;
    let created = info.created.duration_since(UNIX_EPOCH).unwrap().as_nanos();
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(format!("version {}.{}", info.version.0, info.version.1));
    line(format!("pid {}", info.pid));
    line(format!("tid {}", info.tid));
    line(format!("process_start {}", info.process_start));
    line(format!("created_ns {created}"));
    line(format!("command {:?}", info.command));
    line(format!("model {:?}", info.model));
    line(format!("state {:?}", info.state));
    line(format!("alive {}", info.alive));
    line(format!("fallbacks {}", info.fallbacks));
    line(format!(
        "fields {} skipped {}",
        snap.fields.len(),
        snap.skipped
    ));
    for f in &snap.fields {
        let value = match &f.value {
            Value::Counter(v) => v.to_string(),
            Value::Gauge(v) => v.to_string(),
            Value::GaugeF64(v) => format!("{v:?} (bits {:#018x})", v.to_bits()),
            Value::Text(s) | Value::Constant(s) => format!("{s:?}"),
            Value::Histogram(h) => {
                let q = |q: f64| h.quantile(q).map_or("none".into(), |v| v.to_string());
                let mut s = format!(
                    "layout {}/{} count {} sum {} p50 {} p99 {} buckets",
                    h.layout().precision(),
                    h.layout().max_bits(),
                    h.count(),
                    h.sum(),
                    q(0.5),
                    q(0.99),
                );
                for (lo, hi, c) in h.buckets() {
                    write!(s, " {lo}..{hi}:{c}").unwrap();
                }
                s
            }
            Value::Unavailable(reason) => format!("unavailable {reason:?}"),
            other => format!("{other:?}"),
        };
        line(format!(
            "field {:?} {} unit={:?}({}) unit_text={:?} {value}",
            f.label,
            f.kind,
            f.unit,
            f.unit.code(),
            f.unit_text
        ));
        line(format!("  help {:?}", f.help));
        for (k, v) in &f.static_labels {
            line(format!("  static_label {k:?}={v:?}"));
        }
    }
    out
}

/// Whether this run regenerates the golden files. The first test to ask
/// does it, once, so the two tests never see a half-written file.
fn regenerate_if_asked() -> bool {
    mmstats::install_sigbus_guard().unwrap();
    if std::env::var_os(REGENERATE_ENV).is_none_or(|v| v != "1") {
        return false;
    }
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let bytes = golden_bytes();
        fs::create_dir_all(Path::new(GOLDEN).parent().unwrap()).unwrap();
        fs::write(GOLDEN, &bytes).unwrap();
        let snap = mmstats_read::read_file(GOLDEN).unwrap();
        fs::write(EXPECTED, reading(&snap)).unwrap();
        eprintln!(
            "{REGENERATE_ENV}=1: wrote {GOLDEN} ({} bytes) and {EXPECTED}. \
             Review format-spec.md and the version constants with this change.",
            bytes.len()
        );
    });
    true
}

/// What to do when a golden comparison fails.
const HOW_TO_FIX: &str = "If the format changed on purpose, regenerate with \
    MMSTATS_REGENERATE_GOLDEN=1 cargo test --test golden, and update format-spec.md \
    and the version constants in the same commit (see tests/data/README.md).";

#[test]
fn golden_file_reads_as_expected() {
    mmstats::install_sigbus_guard().unwrap();
    if regenerate_if_asked() {
        eprintln!("golden_file_reads_as_expected: regenerated, not compared");
        return;
    }
    let snap = mmstats_read::read_file(GOLDEN).unwrap_or_else(|e| panic!("{e}\n{HOW_TO_FIX}"));
    let actual = reading(&snap);
    let expected = fs::read_to_string(EXPECTED).unwrap();
    if actual == expected {
        return;
    }
    let (a, e): (Vec<_>, Vec<_>) = (actual.lines().collect(), expected.lines().collect());
    let mut diff = String::new();
    for i in 0..a.len().max(e.len()) {
        let (got, want) = (a.get(i), e.get(i));
        if got != want {
            writeln!(diff, "line {}:", i + 1).unwrap();
            writeln!(diff, "  - {}", want.unwrap_or(&"<missing>")).unwrap();
            writeln!(diff, "  + {}", got.unwrap_or(&"<missing>")).unwrap();
        }
    }
    panic!(
        "{GOLDEN} no longer reads as {EXPECTED} (- expected, + read):\n{diff}\n\
         full reading:\n{actual}\n{HOW_TO_FIX}"
    );
}

/// Names the part of the golden file `off` lies in, from its header.
fn region(bytes: &[u8], off: usize) -> String {
    if off < HEADER_LEN {
        let names = [
            (raw::H_MAGIC, "magic"),
            (raw::H_MAJOR, "major"),
            (raw::H_MINOR, "minor"),
            (raw::H_BOM, "bom"),
            (raw::H_HEADER_LEN, "header_len"),
            (raw::H_RECORD_LEN, "record_len"),
            (raw::H_FILE_LEN, "file_len"),
            (raw::H_STATE, "state"),
            (raw::H_FIELD_COUNT, "field_count"),
            (raw::H_FIELD_CAPACITY, "field_capacity"),
            (raw::H_FIELD_TABLE_OFF, "field_table_off"),
            (raw::H_STRINGS_OFF, "strings_off"),
            (raw::H_STRINGS_LEN, "strings_len"),
            (raw::H_VALUES_OFF, "values_off"),
            (raw::H_VALUES_LEN, "values_len"),
            (raw::H_PID, "pid"),
            (raw::H_TID, "tid"),
            (raw::H_PROC_START, "proc_start"),
            (raw::H_CREATED_NS, "created_ns"),
            (raw::H_COMMAND, "command"),
            (raw::H_MODEL, "model"),
            (raw::H_LOCK_TOKEN, "lock_token"),
            (raw::H_FALLBACKS, "fallbacks"),
        ];
        let (at, name) = names.iter().rev().find(|(at, _)| *at <= off).unwrap();
        return format!("header, field {name} (at {at:#x})");
    }
    let u32_at = |at| get_u32(bytes, at) as usize;
    let table = u32_at(H_FIELD_TABLE_OFF);
    let record_len = u32_at(H_RECORD_LEN);
    let table_end = table + u32_at(H_FIELD_CAPACITY) * record_len;
    let (strings, values) = (u32_at(H_STRINGS_OFF), u32_at(H_VALUES_OFF));
    if (table..table_end).contains(&off) {
        let i = (off - table) / record_len;
        return format!(
            "field table, record {i}, byte {} of the record",
            (off - table) % record_len
        );
    }
    if (strings..strings + u32_at(H_STRINGS_LEN)).contains(&off) {
        return format!("string table, byte {}", off - strings);
    }
    if (values..values + u32_at(H_VALUES_LEN)).contains(&off) {
        return format!("value area, byte {}", off - values);
    }
    "outside every region".into()
}

#[test]
fn writer_still_produces_the_golden_bytes() {
    if regenerate_if_asked() {
        eprintln!("writer_still_produces_the_golden_bytes: regenerated, not compared");
        return;
    }
    let golden = fs::read(GOLDEN).unwrap();
    let today = golden_bytes();
    if today == golden {
        return;
    }
    let first = golden
        .iter()
        .zip(&today)
        .position(|(a, b)| a != b)
        .unwrap_or(golden.len().min(today.len()));
    let show = |b: &[u8]| {
        let end = (first + 8).min(b.len());
        format!("{:02x?}", &b[first.min(end)..end])
    };
    panic!(
        "the writer no longer produces {GOLDEN}: {} bytes today, {} committed; \
         first difference at offset {first} ({first:#x}): {} (regions as the committed \
         header gives them); committed {} vs today {}.\n{HOW_TO_FIX}",
        today.len(),
        golden.len(),
        region(&golden, first),
        show(&golden),
        show(&today),
    );
}

#[test]
fn format_spec_names_the_current_version() {
    // Waits for a regeneration in progress, if any.
    regenerate_if_asked();
    let spec = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/format-spec.md")).unwrap();
    let version = format!("{}.{}", format::VERSION_MAJOR, format::VERSION_MINOR);
    let title = spec.lines().next().unwrap_or_default();
    assert!(
        title.contains(&format!("version {version}")),
        "format-spec.md's title {title:?} does not name version {version}"
    );
    assert!(
        spec.contains(&format!("This document describes **version {version}**")),
        "format-spec.md §8 does not say it describes version {version}"
    );
    // The golden file is of this version too.
    let golden = fs::read(GOLDEN).unwrap();
    let file_version = (
        raw::get_u16(&golden, raw::H_MAJOR),
        raw::get_u16(&golden, raw::H_MINOR),
    );
    assert_eq!(
        file_version,
        (format::VERSION_MAJOR, format::VERSION_MINOR),
        "{GOLDEN} is of another version than the writer: {HOW_TO_FIX}"
    );
}
