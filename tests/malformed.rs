//! Hostile files: every way a stats file can be damaged, truncated, swapped
//! or replaced by something that is not a file, and the reader's answer to
//! each. The reader must never panic, never die of SIGBUS, never hang, and
//! always return an error that names the file and the offending values.
//!
//! Each case starts from a real file made by the library and patches its
//! bytes with the offsets in `mmstats::format`.

use std::fs;
use std::os::unix::fs::{symlink, OpenOptionsExt, PermissionsExt};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use mmstats::format::raw::{
    get_u32, get_u64, put_u16, put_u32, put_u64, HEADER_LEN, H_BOM, H_COMMAND, H_CREATED_NS,
    H_FIELD_CAPACITY, H_FIELD_COUNT, H_FIELD_TABLE_OFF, H_FILE_LEN, H_HEADER_LEN, H_MAGIC, H_MAJOR,
    H_MINOR, H_MODEL, H_PID, H_PROC_START, H_RECORD_LEN, H_RESERVED, H_STATE, H_STRINGS_LEN,
    H_STRINGS_OFF, H_TID, H_VALUES_LEN, H_VALUES_OFF, RECORD_LEN, R_FLAGS, R_HELP, R_KIND, R_LABEL,
    R_PARAM0, R_PARAM1, R_STATIC_LABELS, R_UNIT, R_UNIT_TEXT, R_VALUE_LEN, R_VALUE_OFF,
    TEXT_BUF_BYTES, TEXT_BUF_LEN, TEXT_SEQ,
};
use mmstats::format::{self, raw};
use mmstats::{
    Constant, Counter, FieldDef, Gauge, GaugeF64, Histogram, Kind, Layout, Options, Schema,
    StatsFile, Text, Timer, Unit, WriterState,
};
use mmstats_read::{ReadError, Reader, Snapshot, Value};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tempfile::TempDir;

// ------------------------------------------------------------ base files --

/// Record slots of the base file's fields, in schema order.
const REQUESTS: usize = 0;
const QUEUE: usize = 1;
const STATE: usize = 2;
const LATENCY: usize = 3;

/// A valid file made by the library, kept as bytes, and a directory to
/// write damaged copies of it into.
struct Base {
    dir: TempDir,
    bytes: Vec<u8>,
}

impl Base {
    /// Counter `requests` = 7, gauge `queue` = -3, text(16) `state` =
    /// "idle", timer `latency` with one value of 1250 ns.
    fn new() -> Base {
        Base::build(0, Options::new())
    }

    /// The base schema plus `extra_timers` empty timers, made with
    /// `options` (plus this test's directory and command).
    fn build(extra_timers: usize, options: Options) -> Base {
        let dir = tempfile::tempdir().unwrap();
        let mut schema = Schema::new("Base");
        schema.push(FieldDef::counter("requests").help("Requests served."));
        schema.push(FieldDef::gauge("queue"));
        schema.push(FieldDef::text("state", 16));
        schema.push(FieldDef::timer("latency", Layout::timer()));
        for i in 0..extra_timers {
            schema.push(FieldDef::timer(&format!("t{i}"), Layout::timer()));
        }
        let options = options.dir(dir.path()).command("golden-ish");
        let mut file = StatsFile::create(&schema, &options).unwrap();
        let requests: Counter = file.take("requests").unwrap();
        let queue: Gauge = file.take("queue").unwrap();
        let state: Text<16> = file.take("state").unwrap();
        let latency: Timer = file.take("latency").unwrap();
        requests.add(7);
        queue.set(-3);
        state.set("idle");
        latency.record_ns(1_250);
        let path = file.path().unwrap().to_owned();
        drop((requests, queue, state, latency, file));
        let bytes = fs::read(&path).unwrap();
        fs::remove_file(&path).unwrap();
        Base { dir, bytes }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.mmstats"))
    }

    /// Writes `bytes` as `name.mmstats` in the base directory.
    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.path(name);
        fs::write(&path, bytes).unwrap();
        path
    }

    /// Writes a copy of the base file changed by `patch`.
    fn patched(&self, name: &str, patch: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
        let mut bytes = self.bytes.clone();
        patch(&mut bytes);
        self.write(name, &bytes)
    }

    fn u32_at(&self, off: usize) -> u32 {
        get_u32(&self.bytes, off)
    }

    fn u64_at(&self, off: usize) -> u64 {
        get_u64(&self.bytes, off)
    }

    /// Offset of field record `i`.
    fn rec(&self, i: usize) -> usize {
        record_at(&self.bytes, i)
    }

    /// Offset of field `i`'s value.
    fn value(&self, i: usize) -> usize {
        self.u32_at(self.rec(i) + R_VALUE_OFF) as usize
    }

    fn file_len(&self) -> u64 {
        self.u64_at(H_FILE_LEN)
    }

    fn strings(&self) -> (u32, u32) {
        (self.u32_at(H_STRINGS_OFF), self.u32_at(H_STRINGS_LEN))
    }

    fn values(&self) -> (u32, u32) {
        (self.u32_at(H_VALUES_OFF), self.u32_at(H_VALUES_LEN))
    }
}

/// Offset of field record `i` in `bytes`, per its header.
fn record_at(bytes: &[u8], i: usize) -> usize {
    get_u32(bytes, H_FIELD_TABLE_OFF) as usize + i * get_u32(bytes, H_RECORD_LEN) as usize
}

/// End of the used part of the string table: past every string referenced.
fn strings_used_end(bytes: &[u8]) -> usize {
    let mut refs = vec![H_COMMAND, H_MODEL];
    for i in 0..get_u64(bytes, H_FIELD_COUNT) as usize {
        let r = record_at(bytes, i);
        refs.extend([R_LABEL, R_HELP, R_UNIT_TEXT, R_STATIC_LABELS].map(|f| r + f));
    }
    refs.into_iter()
        .map(|at| (get_u32(bytes, at) + get_u32(bytes, at + 4)) as usize)
        .max()
        .unwrap()
}

/// End of the used part of the value area.
fn values_used_end(bytes: &[u8]) -> usize {
    (0..get_u64(bytes, H_FIELD_COUNT) as usize)
        .map(|i| {
            let r = record_at(bytes, i);
            (get_u32(bytes, r + R_VALUE_OFF) + get_u32(bytes, r + R_VALUE_LEN)) as usize
        })
        .max()
        .unwrap()
}

// ------------------------------------------------------------ assertions --

/// Reads `path` and expects `Malformed` with a message that names the file
/// and contains every one of `needles`. Returns the message.
#[track_caller]
fn expect_malformed(path: &Path, needles: &[&str]) -> String {
    mmstats::install_sigbus_guard().unwrap();
    match mmstats_read::read_file(path) {
        Err(e @ ReadError::Malformed { .. }) => check_message(&e, path, needles),
        other => panic!(
            "{}: expected a Malformed error, got {other:?}",
            path.display()
        ),
    }
}

/// Checks that `e` is about `path`, and that its message names the file and
/// contains every one of `needles`. Returns the message.
#[track_caller]
fn check_message(e: &ReadError, path: &Path, needles: &[&str]) -> String {
    let msg = e.to_string();
    assert_eq!(e.path(), path, "{msg}");
    assert!(
        msg.contains(&path.display().to_string()),
        "message does not name the file {}: {msg}",
        path.display()
    );
    for needle in needles {
        assert!(msg.contains(needle), "message lacks {needle:?}: {msg}");
    }
    msg
}

/// Reads `path`, which must succeed.
#[track_caller]
fn expect_ok(path: &Path) -> Snapshot {
    mmstats::install_sigbus_guard().unwrap();
    mmstats_read::read_file(path).unwrap_or_else(|e| panic!("expected a good read, got: {e}"))
}

fn value_of<'a>(snap: &'a Snapshot, label: &str) -> &'a Value {
    &snap
        .field(label)
        .unwrap_or_else(|| panic!("no field {label}: {snap:?}"))
        .value
}

/// The base file's values other than `state`, which some cases damage.
#[track_caller]
fn assert_other_values_intact(snap: &Snapshot) {
    assert_eq!(value_of(snap, "requests"), &Value::Counter(7));
    assert_eq!(value_of(snap, "queue"), &Value::Gauge(-3));
    match value_of(snap, "latency") {
        Value::Histogram(h) => assert_eq!((h.count(), h.sum()), (1, 1_250)),
        other => panic!("latency: {other:?}"),
    }
}

/// The reason of an unavailable value; panics on any other value.
#[track_caller]
fn unavailable(v: &Value) -> &str {
    match v {
        Value::Unavailable(reason) => reason,
        other => panic!("expected Value::Unavailable, got {other:?}"),
    }
}

/// Runs `f` on another thread and waits up to 10 s for it. `None` if it did
/// not finish by then (the thread is left behind, blocked).
fn within_10s<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(10)).ok()
}

// ------------------------------------------------------ size and header --

#[test]
fn the_base_file_reads_back() {
    let base = Base::new();
    let path = base.write("good", &base.bytes);
    let snap = expect_ok(&path);
    assert_other_values_intact(&snap);
    assert_eq!(value_of(&snap, "state"), &Value::Text("idle".into()));
    assert_eq!(snap.info.command, "golden-ish");
    assert_eq!(snap.info.model, "Base");
    assert_eq!(snap.info.state, WriterState::Exited);
    // The copy names this process's lock file, which is held.
    assert!(snap.info.alive);
    assert_eq!(snap.skipped, 0);
}

#[test]
fn files_shorter_than_a_header_are_refused() {
    let base = Base::new();
    let empty = base.write("empty", &[]);
    // The size of a file not known to be a stats file is never given.
    expect_malformed(&empty, &["shorter than the 128-byte header"]);
    let short = base.write("short", &base.bytes[..100]);
    let err = expect_malformed(&short, &["shorter than the 128-byte header"]);
    assert!(!err.contains("100"), "{err}");
    let almost = base.write("almost", &base.bytes[..HEADER_LEN - 1]);
    let err = expect_malformed(&almost, &["shorter than the 128-byte header"]);
    assert!(!err.contains("127"), "{err}");
}

#[test]
fn random_garbage_is_refused() {
    let base = Base::new();
    let mut rng = StdRng::seed_from_u64(0x6a7b_a6e5);
    for len in [0, 1, 7, 8, 127, 128, 129, 4095, 4096, 4104, 65_536] {
        let mut bytes = vec![0u8; len];
        rng.fill(&mut bytes[..]);
        let path = base.write(&format!("garbage-{len}"), &bytes);
        if len < HEADER_LEN {
            expect_malformed(&path, &["shorter than the 128-byte header"]);
        } else {
            expect_malformed(&path, &["bad magic"]);
        }
    }
}

#[test]
fn files_over_one_gib_are_refused() {
    let base = Base::new();
    let path = base.write("huge", &base.bytes);
    let len = format::MAX_FILE_LEN + 8;
    // Sparse: no disk space is used.
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len)
        .unwrap();
    // The size of a file not known to be a stats file is never given.
    let err = expect_malformed(&path, &["over the limit"]);
    assert!(!err.contains(&len.to_string()), "{err}");
}

#[test]
fn bad_magic_is_refused() {
    let base = Base::new();
    let path = base.patched("magic", |b| {
        b[H_MAGIC..H_MAGIC + 8].copy_from_slice(b"NOTSTATS")
    });
    // The message never echoes the bytes found: the file may be a link to
    // someone's secret ("NO" would be 4e 4f).
    let err = expect_malformed(&path, &["bad magic"]);
    assert!(!err.contains("4e") && !err.contains("NOT"), "{err}");
}

#[test]
fn wrong_byte_order_is_refused() {
    let base = Base::new();
    // What a big-endian writer that forgot to swap would store.
    let path = base.patched("big-endian", |b| {
        put_u32(b, H_BOM, format::BYTE_ORDER_MARK.swap_bytes())
    });
    // The mark found is not quoted: the file is not known to be ours.
    let err = expect_malformed(&path, &["bad byte-order mark"]);
    assert!(!err.contains("0d0c0b0a"), "{err}");
    let path = base.patched("bom-zero", |b| put_u32(b, H_BOM, 0));
    expect_malformed(&path, &["bad byte-order mark"]);
}

#[test]
fn unknown_major_versions_are_refused() {
    mmstats::install_sigbus_guard().unwrap();
    let base = Base::new();
    for (major, minor) in [(2, 0), (2, 5), (0, 9), (u16::MAX, 0)] {
        let path = base.patched(&format!("v{major}.{minor}"), |b| {
            put_u16(b, H_MAJOR, major);
            put_u16(b, H_MINOR, minor);
        });
        match mmstats_read::read_file(&path) {
            Err(
                e @ ReadError::UnsupportedVersion {
                    major: m, minor: n, ..
                },
            ) => {
                assert_eq!((m, n), (major, minor));
                check_message(&e, &path, &[&format!("{major}.{minor}")]);
            }
            other => panic!("{major}.{minor}: expected UnsupportedVersion, got {other:?}"),
        }
    }
}

#[test]
fn a_higher_minor_version_with_an_unknown_kind_reads_and_skips_it() {
    let base = Base::build(0, Options::new().reserve(1, 64));
    let label = b"future.kind";
    let path = base.patched("v1.7", |b| {
        put_u16(b, H_MINOR, 7);
        let count = get_u64(b, H_FIELD_COUNT) as usize;
        assert!(count < get_u32(b, H_FIELD_CAPACITY) as usize);
        // A record as a 1.7 writer could append it: label in the string
        // table's reserve, value in the value area's reserve.
        let s = strings_used_end(b);
        b[s..s + label.len()].copy_from_slice(label);
        let v = values_used_end(b);
        let r = record_at(b, count);
        put_u32(b, r + R_LABEL, s as u32);
        put_u32(b, r + R_LABEL + 4, label.len() as u32);
        for f in [R_HELP, R_UNIT_TEXT, R_STATIC_LABELS] {
            put_u32(b, r + f, (s + label.len()) as u32);
        }
        put_u16(b, r + R_KIND, 4242);
        put_u16(b, r + R_UNIT, 77);
        put_u32(b, r + R_VALUE_OFF, v as u32);
        put_u32(b, r + R_VALUE_LEN, 16);
        put_u64(b, r + R_PARAM0, 0xdead_beef);
        put_u64(b, r + R_PARAM1, u64::MAX);
        put_u64(b, H_FIELD_COUNT, count as u64 + 1);
    });
    let snap = expect_ok(&path);
    assert_eq!(snap.info.version, (1, 7));
    assert_eq!(snap.skipped, 1);
    assert_eq!(snap.fields.len(), 4);
    assert!(snap.field("future.kind").is_none());
    assert_other_values_intact(&snap);
    assert_eq!(value_of(&snap, "state"), &Value::Text("idle".into()));
}

#[test]
fn longer_headers_and_records_of_a_later_minor_version_are_stepped_over() {
    let base = Base::new();
    let path = base.patched("v1.3-longer", |b| {
        // Move the field table to the end of the file with 72-byte records
        // (8 bytes a 1.3 writer might add, filled with junk) and claim a
        // 136-byte header: bytes 128..136 (the old table's start) are then
        // the "new header bytes" a 1.0 reader ignores.
        let cap = get_u32(b, H_FIELD_CAPACITY) as usize;
        let old = record_at(b, 0);
        let new_off = raw::align8(b.len());
        b.resize(new_off, 0);
        for i in 0..cap {
            let rec = b[old + i * RECORD_LEN..old + (i + 1) * RECORD_LEN].to_vec();
            b.extend_from_slice(&rec);
            b.extend_from_slice(&[0xEE; 8]);
        }
        put_u16(b, H_MINOR, 3);
        put_u32(b, H_HEADER_LEN, HEADER_LEN as u32 + 8);
        put_u32(b, H_RECORD_LEN, RECORD_LEN as u32 + 8);
        put_u32(b, H_FIELD_TABLE_OFF, new_off as u32);
        let len = b.len() as u64;
        put_u64(b, H_FILE_LEN, len);
        // The old table is dead space now: make it garbage to be sure it
        // is not read.
        b[old + 8..old + cap * RECORD_LEN].fill(0xFF);
    });
    let snap = expect_ok(&path);
    assert_eq!(snap.info.version, (1, 3));
    assert_eq!(snap.skipped, 0);
    assert_other_values_intact(&snap);
    assert_eq!(value_of(&snap, "state"), &Value::Text("idle".into()));
}

#[test]
fn header_and_record_lengths_are_checked() {
    let base = Base::new();
    for bad in [0, 64, 127] {
        let path = base.patched(&format!("header-len-{bad}"), |b| {
            put_u32(b, H_HEADER_LEN, bad)
        });
        expect_malformed(&path, &[&format!("header length {bad} out of range")]);
    }
    let past = base.file_len() as u32 + 8;
    let path = base.patched("header-len-past-end", |b| put_u32(b, H_HEADER_LEN, past));
    expect_malformed(&path, &[&format!("header length {past} out of range")]);

    for bad in [0, 8, 32, 63, 68, 65] {
        let path = base.patched(&format!("record-len-{bad}"), |b| {
            put_u32(b, H_RECORD_LEN, bad)
        });
        expect_malformed(&path, &[&format!("record length {bad}"), "at least 64"]);
    }
}

#[test]
fn a_file_shorter_than_its_header_says_is_truncated() {
    let base = Base::new();
    let len = base.file_len();
    // Cut short on disk.
    let cut = 1000;
    let path = base.write("cut", &base.bytes[..cut]);
    expect_truncated(&path);
    // Or a header that claims more than is there.
    let claimed = len + 8;
    let path = base.patched("claims-more", |b| put_u64(b, H_FILE_LEN, claimed));
    expect_truncated(&path);
    let path = base.patched("claims-max", |b| put_u64(b, H_FILE_LEN, u64::MAX));
    expect_truncated(&path);
}

#[test]
fn field_count_over_capacity_is_refused() {
    let base = Base::new();
    let cap = base.u32_at(H_FIELD_CAPACITY);
    for count in [u64::from(cap) + 1, u64::from(u32::MAX), u64::MAX] {
        let path = base.patched(&format!("count-{count}"), |b| {
            put_u64(b, H_FIELD_COUNT, count)
        });
        expect_malformed(
            &path,
            &[&format!("field count {count}"), &format!("capacity {cap}")],
        );
    }
}

#[test]
fn region_offsets_are_checked() {
    let base = Base::new();
    let file_len = base.file_len() as u32;
    let t = base.u32_at(H_FIELD_TABLE_OFF);
    let (s_off, s_len) = base.strings();
    let (v_off, v_len) = base.values();
    // Sets header `field` to `value`; the message names the region `what`
    // and shows where it claims to start, `shown`.
    let bad = |field: usize, value: u32, what: &str, shown: u32| {
        let path = base.patched(&format!("region-{field}-{value}"), |b| {
            put_u32(b, field, value)
        });
        let msg = expect_malformed(&path, &[what, &format!("at {shown}..")]);
        assert!(msg.contains("unaligned or outside the file"), "{msg}");
    };
    bad(H_FIELD_TABLE_OFF, t + 4, "field table", t + 4);
    bad(H_FIELD_TABLE_OFF, 64, "field table", 64);
    bad(H_FIELD_TABLE_OFF, file_len, "field table", file_len);
    bad(H_FIELD_TABLE_OFF, u32::MAX - 7, "field table", u32::MAX - 7);
    bad(H_FIELD_CAPACITY, u32::MAX, "field table", t);
    bad(H_STRINGS_OFF, s_off + 4, "string table", s_off + 4);
    bad(H_STRINGS_OFF, 0, "string table", 0);
    bad(H_STRINGS_LEN, s_len + 1, "string table", s_off);
    bad(H_STRINGS_LEN, u32::MAX, "string table", s_off);
    bad(H_VALUES_OFF, v_off + 2, "value area", v_off + 2);
    bad(H_VALUES_OFF, 120, "value area", 120);
    bad(H_VALUES_OFF, file_len, "value area", file_len);
    bad(H_VALUES_LEN, v_len + 8, "value area", v_off);
    bad(H_VALUES_LEN, u32::MAX, "value area", v_off);
}

#[test]
fn string_references_are_checked() {
    let base = Base::new();
    let (s_off, s_len) = base.strings();
    let end = s_off + s_len;
    let r0 = base.rec(REQUESTS);
    let r1 = base.rec(QUEUE);
    // Points the reference at `at` to `off`, `len`; the message says `what`
    // and shows the range.
    let bad = |at: usize, off: u32, len: u32, what: &str| {
        let path = base.patched(&format!("strref-{at}-{off}-{len}"), |b| {
            put_u32(b, at, off);
            put_u32(b, at + 4, len);
        });
        let shown = format!("{off}..{}", u64::from(off) + u64::from(len));
        expect_malformed(&path, &[what, &shown, "outside the string table"]);
    };
    bad(H_COMMAND, end, 4, "command: string at");
    bad(H_MODEL, s_off, u32::MAX, "model: string at");
    bad(r0 + R_LABEL, end - 2, 4, "field 0: label: string at");
    // Inside the file (the magic is valid UTF-8), but not in the table.
    bad(r0 + R_LABEL, 0, 8, "field 0: label: string at 0..8");
    bad(r0 + R_LABEL, u32::MAX, 1, "field 0: label: string at");
    bad(r1 + R_HELP, end, 1, "field 1 (queue): help: string at");
    bad(
        r1 + R_UNIT_TEXT,
        s_off - 8,
        8,
        "field 1 (queue): unit: string at",
    );
    bad(
        r1 + R_STATIC_LABELS,
        end,
        3,
        "field 1 (queue): static labels: string at",
    );
}

#[test]
fn invalid_utf8_in_strings_is_refused() {
    let base = Base::new();
    let label_at = base.u32_at(base.rec(REQUESTS) + R_LABEL);
    let path = base.patched("utf8-label", |b| b[label_at as usize] = 0xFF);
    expect_malformed(
        &path,
        &["field 0: label", &format!("invalid UTF-8 at {label_at}")],
    );
    let model_at = base.u32_at(H_MODEL);
    let path = base.patched("utf8-model", |b| {
        // A lone continuation byte.
        b[model_at as usize + 1] = 0x80;
    });
    expect_malformed(&path, &["model", &format!("invalid UTF-8 at {model_at}")]);
}

#[test]
fn value_ranges_are_checked() {
    let base = Base::new();
    let (v_off, v_len) = base.values();
    let v_end = v_off + v_len;
    let counter = base.rec(REQUESTS);
    let text = base.rec(STATE);
    let timer = base.rec(LATENCY);
    let c_off = base.value(REQUESTS) as u32;
    let t_off = base.value(STATE) as u32;
    let l_off = base.value(LATENCY) as u32;
    let l_len = base.u32_at(timer + R_VALUE_LEN);
    let t_len = raw::text_value_len(16) as u32;
    assert_eq!(base.u32_at(text + R_VALUE_LEN), t_len);
    // Sets record `rec`'s value range to `off`, `len`; the message says
    // `what` and shows the range.
    let bad = |rec: usize, off: u32, len: u32, what: &str| {
        let path = base.patched(&format!("value-{rec}-{off}-{len}"), |b| {
            put_u32(b, rec + R_VALUE_OFF, off);
            put_u32(b, rec + R_VALUE_LEN, len);
        });
        let shown = format!("at {off}..{}", u64::from(off) + u64::from(len));
        expect_malformed(&path, &[what, &shown]);
    };
    bad(counter, v_end, 8, "field 0 (requests): counter value at");
    bad(counter, v_end - 8, 16, "counter value at");
    bad(counter, c_off + 4, 8, "counter value at");
    bad(counter, v_off - 8, 8, "counter value at");
    bad(counter, c_off, 4, "(needs 8 bytes)");
    bad(counter, c_off, 0, "(needs 8 bytes)");
    bad(counter, c_off, u32::MAX - 7, "counter value at");
    bad(counter, u32::MAX - 7, 8, "counter value at");
    bad(text, t_off, 16, "field 2 (state): text value at");
    bad(text, t_off, t_len - 8, &format!("(needs {t_len} bytes)"));
    bad(timer, l_off, l_len - 8, "field 3 (latency): timer value at");
    bad(timer, l_off, 8, "(needs 18952 bytes)");
}

#[test]
fn text_capacity_over_one_mib_is_refused() {
    let base = Base::new();
    let text = base.rec(STATE);
    for cap in [
        format::MAX_TEXT_CAPACITY + 1,
        u64::from(u32::MAX) + 1,
        u64::MAX,
    ] {
        let path = base.patched(&format!("capacity-{cap}"), |b| {
            put_u64(b, text + R_PARAM0, cap)
        });
        expect_malformed(&path, &["field 2 (state)", &format!("text capacity {cap}")]);
    }
    // Within the limit but larger than the value: too short.
    let cap = format::MAX_TEXT_CAPACITY;
    let path = base.patched("capacity-1mib", |b| put_u64(b, text + R_PARAM0, cap));
    expect_malformed(
        &path,
        &[
            "field 2 (state)",
            &format!("needs {} bytes", raw::text_value_len(cap as usize)),
        ],
    );
}

#[test]
fn histogram_layouts_are_checked() {
    let base = Base::new();
    let timer = base.rec(LATENCY);
    for (p, m) in [
        (0, 42),
        (13, 42),
        (6, 65),
        (6, 6),
        (6, 5),
        (12, 12),
        (u64::MAX, 42),
        (6, u64::MAX),
        // Would be 6 and 42 if narrowed to u8 before the check.
        (256 + 6, 42),
        (6, 256 + 42),
    ] {
        let path = base.patched(&format!("layout-{p}-{m}"), |b| {
            put_u64(b, timer + R_PARAM0, p);
            put_u64(b, timer + R_PARAM1, m);
        });
        expect_malformed(
            &path,
            &[
                "field 3 (latency)",
                &format!("invalid histogram layout precision={p} max_bits={m}"),
            ],
        );
    }
    // A valid layout with more buckets than the value has room for.
    let path = base.patched("layout-6-43", |b| put_u64(b, timer + R_PARAM1, 43));
    expect_malformed(&path, &["field 3 (latency)", "needs 19464 bytes"]);
}

// ------------------------------------------------------------------ text --

#[test]
fn text_longer_than_its_capacity_is_unavailable_alone() {
    let base = Base::new();
    let v = base.value(STATE);
    assert_eq!(base.u64_at(v + TEXT_SEQ), 2, "written once");
    // Write 1 went to buffer 1.
    let buf = v + raw::text_buffer(16, 1);
    for len in [17, 24, u64::from(u32::MAX), u64::MAX] {
        let path = base.patched(&format!("text-len-{len}"), |b| {
            put_u64(b, buf + TEXT_BUF_LEN, len)
        });
        let snap = expect_ok(&path);
        let reason = unavailable(value_of(&snap, "state"));
        assert!(reason.contains(&format!("length {len}")), "{reason}");
        assert!(reason.contains("capacity 16"), "{reason}");
        assert_other_values_intact(&snap);
    }
}

#[test]
fn invalid_utf8_text_is_unavailable_alone() {
    let base = Base::new();
    let buf = base.value(STATE) + raw::text_buffer(16, 1);
    let path = base.patched("text-utf8", |b| b[buf + TEXT_BUF_BYTES + 1] = 0xC3);
    let snap = expect_ok(&path);
    let reason = unavailable(value_of(&snap, "state"));
    assert!(reason.contains("invalid UTF-8"), "{reason}");
    assert_other_values_intact(&snap);
    // Bytes past `len` are leftovers and are not examined.
    let path = base.patched("text-leftovers", |b| b[buf + TEXT_BUF_BYTES + 4] = 0xFF);
    let snap = expect_ok(&path);
    assert_eq!(value_of(&snap, "state"), &Value::Text("idle".into()));
}

#[test]
fn text_stuck_mid_update_reads_the_last_complete_write() {
    let base = Base::new();
    let v = base.value(STATE);
    // seq 1: write 1 (into buffer 1) never finished; write 0 (empty, buffer
    // 0) is the last complete one. seq 3: write 2 (buffer 0) never finished;
    // write 1 ("idle", buffer 1) is.
    for (seq, expected) in [(1, ""), (3, "idle")] {
        let path = base.patched(&format!("text-seq-{seq}"), |b| {
            put_u64(b, v + TEXT_SEQ, seq)
        });
        let snap = expect_ok(&path);
        assert_eq!(value_of(&snap, "state"), &Value::Text(expected.into()));
        assert_other_values_intact(&snap);
    }
}

#[test]
fn text_whose_sequence_cannot_settle_is_unavailable_after_bounded_retries() {
    let base = Base::new();
    let v = base.value(STATE);
    let path = base.patched("text-seq-max", |b| put_u64(b, v + TEXT_SEQ, u64::MAX));
    // That this returns at all shows the retries are bounded.
    let snap = expect_ok(&path);
    let reason = unavailable(value_of(&snap, "state"));
    assert!(
        reason.contains("still being rewritten after") && reason.contains("attempts"),
        "{reason}"
    );
    assert_other_values_intact(&snap);
}

/// Makes a file of `schema` in a fresh directory and returns its bytes and
/// the directory, for tests that patch many records.
fn made(schema: &Schema) -> (TempDir, PathBuf, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let file = StatsFile::create(schema, &Options::new().dir(dir.path())).unwrap();
    let path = file.path().unwrap().to_owned();
    let bytes = fs::read(&path).unwrap();
    drop(file);
    (dir, path, bytes)
}

#[test]
fn records_sharing_one_big_value_cannot_amplify_a_reader() {
    // One timer (about 19 KB of buckets) and many counters; every counter
    // record is rewritten to be a timer over the same buckets. Decoding it
    // all would cost many times the file's size.
    let mut schema = Schema::new("amplifier");
    schema.push(FieldDef::timer("big", Layout::timer()));
    for i in 0..50 {
        schema.push(FieldDef::counter(&format!("c{i}")));
    }
    let (dir, path, mut bytes) = made(&schema);
    let big = record_at(&bytes, 0);
    let (off, len) = (
        get_u32(&bytes, big + R_VALUE_OFF),
        get_u32(&bytes, big + R_VALUE_LEN),
    );
    for i in 1..=50 {
        let r = record_at(&bytes, i);
        put_u16(&mut bytes, r + R_KIND, Kind::Timer.code());
        put_u64(&mut bytes, r + R_PARAM0, 6);
        put_u64(&mut bytes, r + R_PARAM1, 42);
        put_u32(&mut bytes, r + R_VALUE_OFF, off);
        put_u32(&mut bytes, r + R_VALUE_LEN, len);
    }
    let patched = dir.path().join("amplified.mmstats");
    fs::write(&patched, &bytes).unwrap();
    drop(path);
    expect_malformed(&patched, &["more than the file holds"]);
}

// ---------------------------------------------- what a reader must allow --

#[test]
fn what_the_format_leaves_open_is_tolerated() {
    let base = Base::new();
    let counter = base.rec(REQUESTS);
    let queue = base.rec(QUEUE);
    let path = base.patched("tolerated", |b| {
        // Unknown unit code: read as "other", the text kept (R6).
        put_u16(b, queue + R_UNIT, 999);
        // Flags and reserved bytes are ignored.
        put_u32(b, counter + R_FLAGS, u32::MAX);
        b[H_RESERVED..HEADER_LEN].fill(0xAB);
        // An empty string's offset is not examined (S1).
        put_u32(b, counter + R_HELP, u32::MAX);
        put_u32(b, counter + R_HELP + 4, 0);
        // A state code this version does not know.
        put_u64(b, H_STATE, 7);
        // Identity fields are not checked for plausibility.
        put_u32(b, H_PID, u32::MAX);
        put_u32(b, H_TID, 0);
        put_u64(b, H_PROC_START, u64::MAX);
        put_u64(b, H_CREATED_NS, u64::MAX);
    });
    let snap = expect_ok(&path);
    assert_other_values_intact(&snap);
    assert_eq!(snap.field("queue").unwrap().unit, Unit::Other);
    assert_eq!(snap.field("requests").unwrap().help, "");
    assert_eq!(snap.info.state, WriterState::Unknown(7));
    assert_eq!((snap.info.pid, snap.info.tid), (u32::MAX, 0));
    assert_eq!(snap.info.process_start, u64::MAX);
}

#[test]
fn an_unknown_kind_is_skipped_unexamined_but_its_label_is_checked() {
    let base = Base::new();
    let q = base.rec(QUEUE);
    // Nothing but the label of an unknown kind is examined (R1, R2).
    let path = base.patched("unknown-kind", |b| {
        put_u16(b, q + R_KIND, 0);
        put_u32(b, q + R_HELP, u32::MAX);
        put_u32(b, q + R_HELP + 4, u32::MAX);
        put_u32(b, q + R_VALUE_OFF, u32::MAX);
        put_u32(b, q + R_VALUE_LEN, u32::MAX);
        put_u64(b, q + R_PARAM0, u64::MAX);
    });
    let snap = expect_ok(&path);
    assert_eq!(snap.skipped, 1);
    assert!(snap.field("queue").is_none());
    assert_eq!(value_of(&snap, "requests"), &Value::Counter(7));
    // But a bad label fails the file, whatever the kind.
    let path = base.patched("unknown-kind-bad-label", |b| {
        put_u16(b, q + R_KIND, 999);
        put_u32(b, q + R_LABEL, u32::MAX - 3);
    });
    expect_malformed(&path, &["field 1: label: string at 4294967292"]);
}

// ----------------------------------------------------------------- fuzz --

/// How the reads of a batch of hostile files came out.
#[derive(Default, Debug)]
struct Tally {
    ok: usize,
    err: usize,
}

/// Reads one hostile file: whatever it holds, the reader returns a good
/// snapshot or an error naming the file, and does not panic. A panic is
/// reported with the case and the directory holding the file.
fn read_hostile(path: &Path, bytes: &[u8], case: &str, tally: &mut Tally) {
    mmstats::install_sigbus_guard().unwrap();
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        match Reader::open(path).and_then(|r| r.snapshot()) {
            Ok(snap) => {
                assert_well_formed(&snap, path, bytes);
                true
            }
            Err(e) => {
                check_message(&e, path, &[]);
                false
            }
        }
    }));
    match outcome {
        Ok(true) => tally.ok += 1,
        Ok(false) => tally.err += 1,
        Err(_) => {
            let keep = std::env::temp_dir().join(format!("mmstats-hostile-{case}.mmstats"));
            let _ = fs::write(&keep, bytes);
            panic!("{case}: reading a hostile file panicked; the file is kept as {keep:?}");
        }
    }
}

/// Checks a snapshot of a hostile file that the reader accepted.
fn assert_well_formed(snap: &Snapshot, path: &Path, bytes: &[u8]) {
    assert_eq!(snap.info.path, path);
    assert_eq!(snap.info.version.0, format::VERSION_MAJOR);
    let count = get_u64(bytes, H_FIELD_COUNT);
    assert!(count <= u64::from(get_u32(bytes, H_FIELD_CAPACITY)));
    assert_eq!((snap.fields.len() + snap.skipped) as u64, count);
    for f in &snap.fields {
        match (&f.value, f.kind) {
            (Value::Counter(_), Kind::Counter)
            | (Value::Gauge(_), Kind::Gauge)
            | (Value::GaugeF64(_), Kind::GaugeF64) => {}
            (Value::Text(s), Kind::Text) | (Value::Constant(s), Kind::Constant) => {
                assert!(s.len() as u64 <= format::MAX_TEXT_CAPACITY, "{}", f.label);
            }
            (Value::Unavailable(reason), Kind::Text | Kind::Constant) => {
                assert!(!reason.is_empty());
            }
            (Value::Histogram(h), Kind::Histogram | Kind::Timer) => {
                let l = h.layout();
                assert!((1..=12).contains(&l.precision()), "{l:?}");
                assert!(l.precision() < l.max_bits() && l.max_bits() <= 64, "{l:?}");
                assert_eq!(h.counts().len(), l.buckets());
                let total = h.counts().iter().fold(0u64, |a, &c| a.saturating_add(c));
                assert_eq!(h.count(), total);
                assert_eq!(
                    h.buckets().count(),
                    h.counts().iter().filter(|&&c| c > 0).count()
                );
                if total == 0 {
                    assert_eq!((h.min(), h.max(), h.quantile(0.5)), (None, None, None));
                } else {
                    let (min, max) = (h.min().unwrap(), h.max().unwrap());
                    assert!(min <= max);
                    for q in [0.0, 0.5, 0.99, 1.0, f64::NAN] {
                        let v = h.quantile(q).unwrap();
                        assert!(min <= v && v <= max, "q {q}: {v} not in {min}..={max}");
                    }
                    assert!(h.mean().is_some());
                }
            }
            (v, k) => panic!("field {}: kind {k} with value {v:?}", f.label),
        }
    }
}

/// A value worth trying in a field of the header or a record.
fn interesting(rng: &mut StdRng, file_len: u64) -> u64 {
    match rng.gen_range(0..14) {
        0 => 0,
        1 => 1,
        2 => u64::from(u32::MAX),
        3 => u64::MAX,
        4 => file_len,
        5 => file_len + 1,
        6 => file_len + 8,
        7 => file_len.saturating_sub(8),
        8 => format::MAX_TEXT_CAPACITY,
        9 => format::MAX_TEXT_CAPACITY + 1,
        10 => rng.gen_range(0..70),
        11 => rng.gen_range(0..file_len + 64),
        12 => 1u64 << rng.gen_range(0..64u32),
        _ => rng.gen(),
    }
}

/// Header fields as (offset, width in bytes).
const HEADER_FIELDS: [(usize, usize); 22] = [
    (H_MAJOR, 2),
    (H_MINOR, 2),
    (H_BOM, 4),
    (H_HEADER_LEN, 4),
    (H_RECORD_LEN, 4),
    (H_FILE_LEN, 8),
    (H_STATE, 8),
    (H_FIELD_COUNT, 8),
    (H_FIELD_CAPACITY, 4),
    (H_FIELD_TABLE_OFF, 4),
    (H_STRINGS_OFF, 4),
    (H_STRINGS_LEN, 4),
    (H_VALUES_OFF, 4),
    (H_VALUES_LEN, 4),
    (H_PID, 4),
    (H_TID, 4),
    (H_PROC_START, 8),
    (H_CREATED_NS, 8),
    (H_COMMAND, 4),
    (H_COMMAND + 4, 4),
    (H_MODEL, 4),
    (H_MODEL + 4, 4),
];

/// Record fields as (offset, width in bytes).
const RECORD_FIELDS: [(usize, usize); 15] = [
    (R_LABEL, 4),
    (R_LABEL + 4, 4),
    (R_HELP, 4),
    (R_HELP + 4, 4),
    (R_UNIT_TEXT, 4),
    (R_UNIT_TEXT + 4, 4),
    (R_STATIC_LABELS, 4),
    (R_STATIC_LABELS + 4, 4),
    (R_KIND, 2),
    (R_UNIT, 2),
    (R_FLAGS, 4),
    (R_VALUE_OFF, 4),
    (R_VALUE_LEN, 4),
    (R_PARAM0, 8),
    (R_PARAM1, 8),
];

fn put_width(b: &mut [u8], off: usize, width: usize, v: u64) {
    b[off..off + width].copy_from_slice(&v.to_le_bytes()[..width]);
}

/// A valid file with every kind and room for two more fields, so patched
/// field counts reach unpublished (zero) slots.
fn every_kind_file(dir: &Path) -> Vec<u8> {
    let mut schema = Schema::new("Every");
    schema.push(FieldDef::counter("c").help("A counter."));
    schema.push(FieldDef::gauge("g").unit("bytes"));
    schema.push(FieldDef::gauge_f64("f"));
    schema.push(FieldDef::text("t", 16).static_label("k", "v"));
    schema.push(FieldDef::constant("k", 16));
    schema.push(FieldDef::histogram("h", Layout::new(3, 20).unwrap()).unit("rows"));
    schema.push(FieldDef::timer("l", Layout::timer()));
    let options = Options::new().dir(dir).command("golden-ish").reserve(2, 64);
    let mut file = StatsFile::create(&schema, &options).unwrap();
    let c: Counter = file.take("c").unwrap();
    let g: Gauge = file.take("g").unwrap();
    let f: GaugeF64 = file.take("f").unwrap();
    let t: Text<16> = file.take("t").unwrap();
    let k: Constant<16> = file.take("k").unwrap();
    let h: Histogram = file.take("h").unwrap();
    let l: Timer = file.take("l").unwrap();
    c.add(3);
    g.set(-9);
    f.set(0.5);
    t.set("hostile");
    k.set("v1");
    for v in [0, 9, 1000, 1 << 30] {
        h.record(v);
    }
    l.record_ns(1_000_000);
    let path = file.path().unwrap().to_owned();
    drop((c, g, f, t, k, h, l, file));
    let bytes = fs::read(&path).unwrap();
    fs::remove_file(&path).unwrap();
    bytes
}

#[test]
fn hostile_files_never_panic_hang_or_kill_the_reader() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hostile.mmstats");
    let mut rng = StdRng::seed_from_u64(0x5eed_f11e);

    // Pure garbage of random lengths.
    let mut garbage = Tally::default();
    for i in 0..2000 {
        let mut bytes = vec![0u8; rng.gen_range(0..8192)];
        rng.fill(&mut bytes[..]);
        fs::write(&path, &bytes).unwrap();
        read_hostile(&path, &bytes, &format!("garbage-{i}"), &mut garbage);
    }
    assert_eq!(garbage.ok, 0, "random bytes read as a stats file");

    // Garbage behind a valid magic, version and byte-order mark, so the
    // length and offset checks see it.
    let mut prefixed = Tally::default();
    for i in 0..1000 {
        let mut bytes = vec![0u8; rng.gen_range(HEADER_LEN..8192)];
        rng.fill(&mut bytes[..]);
        bytes[H_MAGIC..H_MAGIC + 8].copy_from_slice(&format::MAGIC);
        put_u16(&mut bytes, H_MAJOR, format::VERSION_MAJOR);
        put_u32(&mut bytes, H_BOM, format::BYTE_ORDER_MARK);
        if rng.gen_bool(0.5) {
            let len = bytes.len() as u64 & !7;
            put_u64(&mut bytes, H_FILE_LEN, len);
            put_u32(&mut bytes, H_HEADER_LEN, HEADER_LEN as u32);
            put_u32(&mut bytes, H_RECORD_LEN, RECORD_LEN as u32);
        }
        fs::write(&path, &bytes).unwrap();
        read_hostile(&path, &bytes, &format!("prefixed-{i}"), &mut prefixed);
    }

    // Mutations of a valid file: flipped bytes, and header, record and
    // value words set to extreme or nearly right values.
    let valid = every_kind_file(dir.path());
    let file_len = valid.len() as u64;
    let cap = get_u32(&valid, H_FIELD_CAPACITY) as usize;
    let values = get_u32(&valid, H_VALUES_OFF) as usize;
    let mut mutated = Tally::default();
    for i in 0..2000 {
        let mut bytes = valid.clone();
        for _ in 0..rng.gen_range(1..=3) {
            match rng.gen_range(0..5) {
                0 => {
                    let at = rng.gen_range(0..bytes.len());
                    bytes[at] ^= rng.gen_range(1..=255u8);
                }
                1 | 2 => {
                    let (off, width) = HEADER_FIELDS[rng.gen_range(0..HEADER_FIELDS.len())];
                    let v = interesting(&mut rng, file_len);
                    put_width(&mut bytes, off, width, v);
                }
                3 => {
                    let (off, width) = RECORD_FIELDS[rng.gen_range(0..RECORD_FIELDS.len())];
                    let at = record_at(&valid, rng.gen_range(0..cap)) + off;
                    let v = interesting(&mut rng, file_len);
                    put_width(&mut bytes, at, width, v);
                }
                _ => {
                    let at = rng.gen_range(values / 8..bytes.len() / 8) * 8;
                    let v = interesting(&mut rng, file_len);
                    put_u64(&mut bytes, at, v);
                }
            }
        }
        fs::write(&path, &bytes).unwrap();
        read_hostile(&path, &bytes, &format!("mutated-{i}"), &mut mutated);
    }
    eprintln!("garbage {garbage:?}, prefixed {prefixed:?}, mutated {mutated:?}");
    // The mutations must reach past the first checks to mean anything.
    assert!(mutated.ok > 100 && mutated.err > 100, "{mutated:?}");
}

// ------------------------------------------------- files that change under --

/// Reads `path` and expects `Truncated`, with a message naming the file.
fn expect_truncated(path: &Path) {
    match mmstats_read::read_file(path) {
        Err(e @ ReadError::Truncated { .. }) => {
            check_message(&e, path, &["truncated"]);
        }
        other => panic!("{}: expected Truncated, got {other:?}", path.display()),
    }
}

/// Shrinks the file at `path` to `len` bytes, as a careless tool might.
fn shrink(path: &Path, len: u64) {
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

#[test]
fn a_file_truncated_to_zero_under_an_open_reader_reads_as_truncated() {
    mmstats::install_sigbus_guard().unwrap();
    let base = Base::build(4, Options::new());
    assert!(base.bytes.len() > 16 * 4096, "spans many pages");
    let path = base.write("shrinks", &base.bytes);
    let reader = Reader::open(&path).unwrap();
    assert_other_values_intact(&reader.snapshot().unwrap());
    shrink(&path, 0);
    // Every page is gone: without the SIGBUS guard the process would die.
    for _ in 0..2 {
        match reader.snapshot() {
            Err(e @ ReadError::Truncated { .. }) => {
                check_message(&e, &path, &["shrank"]);
            }
            other => panic!("expected Truncated, got {other:?}"),
        }
    }
    drop(reader);
    expect_malformed(&path, &["shorter than the"]);
}

#[test]
fn a_file_truncated_inside_its_first_page_under_an_open_reader_is_an_error() {
    mmstats::install_sigbus_guard().unwrap();
    let base = Base::build(4, Options::new());
    let path = base.write("shrinks", &base.bytes);
    let reader = Reader::open(&path).unwrap();
    assert_other_values_intact(&reader.snapshot().unwrap());
    // The header survives; the rest of the first page now reads as zeros
    // and the pages after it are gone.
    shrink(&path, 200);
    let result = reader.snapshot();
    match &result {
        Err(e @ (ReadError::Truncated { .. } | ReadError::Malformed { .. })) => {
            check_message(e, &path, &[]);
        }
        other => panic!(
            "a file cut to 200 bytes under an open reader must read as an error, got {other:#?}"
        ),
    }
    drop(reader);
    // Shorter than its header's file_len at open: truncated, not malformed.
    expect_truncated(&path);
}

#[test]
fn a_file_truncated_mid_table_under_an_open_reader_is_an_error() {
    mmstats::install_sigbus_guard().unwrap();
    let base = Base::build(4, Options::new());
    let path = base.write("shrinks", &base.bytes);
    let reader = Reader::open(&path).unwrap();
    // Past the first page, so a value load faults; the error may be
    // Truncated or, if the zeros read fail a check first, Malformed.
    shrink(&path, 2 * 4096 + 8);
    match reader.snapshot() {
        Err(e @ (ReadError::Truncated { .. } | ReadError::Malformed { .. })) => {
            check_message(&e, &path, &[]);
        }
        other => panic!("expected an error, got {other:#?}"),
    }
    drop(reader);
    expect_truncated(&path);
}

#[test]
fn a_file_replaced_under_an_open_reader_keeps_reading_the_old_one() {
    mmstats::install_sigbus_guard().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut schema = Schema::new("Swap");
    schema.push(FieldDef::counter("n"));
    let old_options = Options::new().dir(dir.path()).command("old");
    let mut old = StatsFile::create(&schema, &old_options).unwrap();
    let old_n: Counter = old.take("n").unwrap();
    old_n.add(1);
    let new_options = Options::new().dir(dir.path()).command("new");
    let mut new = StatsFile::create(&schema, &new_options).unwrap();
    let new_n: Counter = new.take("n").unwrap();
    new_n.add(100);
    let old_path = old.path().unwrap().to_owned();

    let reader = Reader::open(&old_path).unwrap();
    fs::rename(new.path().unwrap(), &old_path).unwrap();
    // The old writer goes on writing its (now unnamed) file.
    old_n.add(1);
    let snap = reader.snapshot().unwrap();
    assert_eq!(snap.info.command, "old");
    assert_eq!(value_of(&snap, "n"), &Value::Counter(2));
    assert!(snap.info.alive);
    // A fresh reader sees the new file under the name.
    let fresh = expect_ok(&old_path);
    assert_eq!(fresh.info.command, "new");
    assert_eq!(value_of(&fresh, "n"), &Value::Counter(100));
    drop((old_n, old));
    let snap = reader.snapshot().unwrap();
    assert_eq!(snap.info.state, WriterState::Exited);
    assert_eq!(value_of(&snap, "n"), &Value::Counter(2));
    drop((new_n, new));
}

// ------------------------------------------------ things that are not files --

#[test]
fn a_directory_named_like_a_stats_file_is_refused() {
    mmstats::install_sigbus_guard().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("sub.mmstats");
    fs::create_dir(&sub).unwrap();
    let (files, _) = mmstats_read::discover(&[dir.path()]);
    for file in files {
        let err = mmstats_read::read_file(&file).unwrap_err();
        check_message(&err, &file, &[]);
    }
    expect_malformed(&sub, &["not a regular file"]);
}

#[test]
fn a_symlink_loop_is_an_error_not_a_hang() {
    mmstats::install_sigbus_guard().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.mmstats");
    let b = dir.path().join("b.mmstats");
    symlink(&b, &a).unwrap();
    symlink(&a, &b).unwrap();
    let root = dir.path().to_owned();
    let (a2, b2) = (a.clone(), b.clone());
    let outcome = within_10s(move || {
        let (files, _) = mmstats_read::discover(&[&root]);
        let reads: Vec<_> = files
            .iter()
            .map(|f| (f.clone(), mmstats_read::read_file(f)))
            .collect();
        let direct = mmstats_read::discover(&[&a2]);
        let open_b = Reader::open(&b2).map(|_| ());
        (reads, direct, open_b)
    })
    .expect("discover or Reader::open hangs on a symlink loop");
    let (reads, (files, problems), open_b) = outcome;
    for (file, read) in reads {
        let err = read.expect_err("a symlink loop read as a stats file");
        check_message(&err, &file, &[]);
    }
    assert!(files.is_empty(), "{files:?}");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].to_string().contains("a.mmstats"),
        "{}",
        problems[0]
    );
    match open_b {
        Err(e @ ReadError::Io { .. }) => {
            check_message(&e, &b, &[]);
        }
        other => panic!("expected an Io error, got {other:?}"),
    }
}

#[test]
fn a_fifo_named_like_a_stats_file_is_an_error_not_a_hang() {
    mmstats::install_sigbus_guard().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe.mmstats");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());

    // Named directly, discover refuses it.
    let (files, problems) = mmstats_read::discover(&[&fifo]);
    assert!(files.is_empty(), "{files:?}");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].to_string().contains("pipe.mmstats"));

    // Found in a directory, it must fail promptly when read. Opening a FIFO
    // read-only blocks until a writer comes, so run it on another thread.
    let root = dir.path().to_owned();
    let outcome = within_10s(move || {
        let (files, _) = mmstats_read::discover(&[&root]);
        files
            .into_iter()
            .map(|f| (f.clone(), mmstats_read::read_file(&f)))
            .collect::<Vec<_>>()
    });
    let Some(reads) = outcome else {
        // Unblock the stuck reader so its thread ends, then fail.
        let _writer = fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo);
        panic!(
            "Reader::open of a FIFO found by discover ({}) blocked for 10 s: \
             it must open with O_NONBLOCK (or check the file type first) and refuse it",
            fifo.display()
        );
    };
    for (file, read) in reads {
        let err = read.expect_err("a FIFO read as a stats file");
        check_message(&err, &file, &[]);
    }
}

#[test]
fn a_file_without_read_permission_is_an_io_error() {
    mmstats::install_sigbus_guard().unwrap();
    let base = Base::new();
    let path = base.write("secret", &base.bytes);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o000)).unwrap();
    if fs::File::open(&path).is_ok() {
        eprintln!(
            "note: skipped, this process can read a mode-000 file (running as root or with CAP_DAC_OVERRIDE)"
        );
        return;
    }
    match mmstats_read::read_file(&path) {
        Err(e @ ReadError::Io { .. }) => {
            let ReadError::Io { source, .. } = &e else {
                unreachable!()
            };
            assert_eq!(source.kind(), std::io::ErrorKind::PermissionDenied);
            assert!(std::error::Error::source(&e).is_some());
            check_message(&e, &path, &[]);
        }
        other => panic!("expected an Io error, got {other:?}"),
    }
}
