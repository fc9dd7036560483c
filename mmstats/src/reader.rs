//! The reader side: find stats files, map them read-only, validate every
//! length and offset, and copy out consistent snapshots.
//!
//! A reader treats every file as hostile. Whatever is on disk, it returns a
//! [`ReadError`] naming the file rather than panicking, and a file that
//! shrinks while mapped reads as [`ReadError::Truncated`], not SIGBUS.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::ReadError;
use crate::format::raw::{self, Header, Record, StrRef};
use crate::format::{self, Kind, Unit, WriterState};
use crate::hist::{HistogramSnapshot, Layout};
use crate::sigbus::{self, ReadMap};
use crate::writer::DIR_ENV;

/// How many times a text value is re-read while its writer is mid-update
/// before the reader reports it [`Value::Unavailable`].
pub(crate) const TEXT_RETRIES: usize = 1000;

/// Facts about one stats file and its writer.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct FileInfo {
    /// The file read.
    pub path: PathBuf,
    /// Format version, major and minor.
    pub version: (u16, u16),
    /// Writer's process id.
    pub pid: u32,
    /// Writer's kernel thread id.
    pub tid: u32,
    /// Writer's process start time, clock ticks since boot (0 if unknown).
    pub process_start: u64,
    /// When the file was created.
    pub created: SystemTime,
    /// Writer's command name.
    pub command: String,
    /// Stats model name.
    pub model: String,
    /// Whether a writer holds the file's lock right now.
    pub alive: bool,
    /// What the writer last said of itself. `Active` with `alive == false`
    /// means the writer died without closing the file.
    pub state: WriterState,
}

impl FileInfo {
    /// Time since the file was created (zero if its clock is in the future).
    pub fn age(&self) -> Duration {
        SystemTime::now()
            .duration_since(self.created)
            .unwrap_or_default()
    }
}

/// A field's value as read.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Value {
    /// A counter.
    Counter(u64),
    /// A gauge.
    Gauge(i64),
    /// A floating-point gauge.
    GaugeF64(f64),
    /// A text field.
    Text(String),
    /// A constant; empty if the writer never set it.
    Constant(String),
    /// A histogram or a timer (see [`Field::kind`]).
    Histogram(HistogramSnapshot),
    /// A text value that could not be read consistently (its writer kept
    /// rewriting it) or that holds invalid data.
    Unavailable(String),
}

/// One field of a snapshot.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Field {
    /// Label, e.g. `web.status.2xx`.
    pub label: String,
    /// Kind.
    pub kind: Kind,
    /// Unit code.
    pub unit: Unit,
    /// Unit as the writer spelled it (may be empty).
    pub unit_text: String,
    /// Help text (may be empty).
    pub help: String,
    /// Static labels, `(key, value)`.
    pub static_labels: Vec<(String, String)>,
    /// The value.
    pub value: Value,
}

/// Everything read from one file at one moment.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Snapshot {
    /// The file and its writer.
    pub info: FileInfo,
    /// The fields, in the file's order.
    pub fields: Vec<Field>,
    /// Fields of kinds this reader does not know (from a newer minor
    /// version), skipped.
    pub skipped: usize,
}

impl Field {
    /// A field with no unit, help or static labels, for programs and tests
    /// that build snapshots themselves; set the public fields for more.
    pub fn new(label: impl Into<String>, kind: Kind, value: Value) -> Field {
        Field {
            label: label.into(),
            kind,
            unit: Unit::Other,
            unit_text: String::new(),
            help: String::new(),
            static_labels: Vec::new(),
            value,
        }
    }
}

impl Snapshot {
    /// The field with `label`, if any.
    pub fn field(&self, label: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.label == label)
    }
}

/// An open, read-only, mapped stats file. Take as many snapshots as you
/// like; each re-reads the live values and any appended fields.
///
/// Readers need the process-wide SIGBUS guard, so that a file truncated
/// while mapped reads as [`ReadError::Truncated`] instead of killing the
/// process: call [`install_sigbus_guard`](crate::install_sigbus_guard) once
/// at program start, or [`Reader::open`] fails with
/// [`ReadError::NoSigbusGuard`]. At most [`MAX_MAPPINGS`](crate::MAX_MAPPINGS)
/// files can be open at once in one process.
pub struct Reader {
    path: PathBuf,
    file: File,
    map: ReadMap,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader").field("path", &self.path).finish()
    }
}

impl Reader {
    /// Opens and maps `path` read-only.
    pub fn open(path: impl AsRef<Path>) -> Result<Reader, ReadError> {
        let path = path.as_ref().to_owned();
        sigbus::check_guard(&path)?;
        let io = |source| ReadError::Io {
            path: path.clone(),
            source,
        };
        let file = open_read_only(&path).map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        if !meta.is_file() {
            return Err(malformed(&path, "not a regular file".into()));
        }
        let len = meta.len();
        if len < raw::HEADER_LEN as u64 {
            return Err(malformed(
                &path,
                format!(
                    "file is {len} bytes, shorter than the {}-byte header",
                    raw::HEADER_LEN
                ),
            ));
        }
        if len > format::MAX_FILE_LEN {
            return Err(malformed(
                &path,
                format!(
                    "file is {len} bytes, over the limit of {}",
                    format::MAX_FILE_LEN
                ),
            ));
        }
        let map = ReadMap::new(&file, (len & !7) as usize).map_err(|e| e.into_read_error(&path))?;
        Ok(Reader { path, file, map })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the file: header, fields and values.
    pub fn snapshot(&self) -> Result<Snapshot, ReadError> {
        let snap = self.read();
        // A shrink past a page boundary faults (and reads zero); one inside
        // the last page reads zeros silently, so the size is checked too.
        // Either way, what was read may mix old values with zeros.
        let shrunk = self
            .file
            .metadata()
            .map_or(true, |m| m.len() < self.map.len() as u64);
        if self.map.faulted() || shrunk {
            return Err(ReadError::Truncated {
                path: self.path.clone(),
            });
        }
        snap
    }

    fn read(&self) -> Result<Snapshot, ReadError> {
        let bad = |reason: String| malformed(&self.path, reason);
        let mut hb = Vec::with_capacity(raw::HEADER_LEN);
        self.map.copy(0, raw::HEADER_LEN, &mut hb);
        let h = Header::decode(&hb);
        if h.magic != format::MAGIC {
            // The bytes are not printed: the file may be anything (a planted
            // link to a secret), and a reader must not echo its contents.
            return Err(bad("bad magic: not an mmstats file".into()));
        }
        if h.bom.get() != format::BYTE_ORDER_MARK {
            return Err(bad(format!(
                "byte-order mark is {:#010x}, expected {:#010x} (not little-endian?)",
                h.bom.get(),
                format::BYTE_ORDER_MARK
            )));
        }
        if h.major.get() != format::VERSION_MAJOR {
            return Err(ReadError::UnsupportedVersion {
                path: self.path.clone(),
                major: h.major.get(),
                minor: h.minor.get(),
            });
        }
        let regions = Regions::check(&h, self.map.len()).map_err(bad)?;
        let count = self.map.load(raw::H_FIELD_COUNT);
        // Acquire fence after the relaxed load: pairs with the writer's
        // Release store when it appends a field, so every record and string
        // counted here is complete.
        fence(Ordering::Acquire);
        if count > u64::from(h.field_capacity.get()) {
            return Err(bad(format!(
                "field count {count} is over the table's capacity {}",
                h.field_capacity.get()
            )));
        }
        let state = WriterState::from_word(self.map.load(raw::H_STATE));
        // Acquire fence: pairs with the writer's Release store of "exited",
        // so values read after this are final when the state says so.
        fence(Ordering::Acquire);
        // A well-formed file decodes each string and value byte once, so a
        // file whose records point at the same bytes over and over cannot
        // make a reader allocate or work more than this.
        let mut budget = Budget {
            bytes: h.file_len.get(),
        };
        let info = FileInfo {
            path: self.path.clone(),
            version: (h.major.get(), h.minor.get()),
            pid: h.pid.get(),
            tid: h.tid.get(),
            process_start: h.proc_start.get(),
            created: UNIX_EPOCH + Duration::from_nanos(h.created_ns.get()),
            command: self
                .string(&regions, h.command, &mut budget)
                .map_err(|e| bad(format!("command: {e}")))?,
            model: self
                .string(&regions, h.model, &mut budget)
                .map_err(|e| bad(format!("model: {e}")))?,
            alive: is_locked(&self.file) == Some(true),
            state,
        };
        let record_len = h.record_len.get() as usize;
        let table = h.field_table_off.get() as usize;
        // Grown as fields are read: `count` comes from the file.
        let mut fields = Vec::new();
        let mut skipped = 0;
        let mut rec_bytes = Vec::with_capacity(raw::RECORD_LEN);
        for i in 0..count as usize {
            rec_bytes.clear();
            self.map
                .copy(table + i * record_len, raw::RECORD_LEN, &mut rec_bytes);
            let rec = Record::decode(&rec_bytes);
            let mut text = |r: StrRef, what: &str| {
                self.string(&regions, r, &mut budget)
                    .map_err(|e| format!("{what}: {e}"))
            };
            let label = text(rec.label, "label").map_err(|e| bad(format!("field {i}: {e}")))?;
            let at = |e: String| bad(format!("field {i} ({label}): {e}"));
            let Some(kind) = Kind::from_code(rec.kind.get()) else {
                skipped += 1;
                continue;
            };
            let unit_text = text(rec.unit_text, "unit").map_err(at)?;
            let help = text(rec.help, "help").map_err(at)?;
            let static_labels = text(rec.static_labels, "static labels").map_err(at)?;
            let value_at = regions.value(&rec, kind).map_err(at)?;
            budget.spend(rec.value_len.get().into()).map_err(at)?;
            fields.push(Field {
                kind,
                unit: Unit::from_code(rec.unit.get()),
                unit_text,
                help,
                static_labels: parse_static_labels(&static_labels),
                value: self.value(kind, &rec, value_at),
                label,
            });
        }
        Ok(Snapshot {
            info,
            fields,
            skipped,
        })
    }

    /// Reads a string reference, checked against the string table.
    fn string(&self, regions: &Regions, r: StrRef, budget: &mut Budget) -> Result<String, String> {
        let (off, len) = (r.off.get(), r.len.get());
        if len == 0 {
            return Ok(String::new());
        }
        let start = off as usize;
        let end = start + len as usize;
        if start < regions.strings.start || end > regions.strings.end {
            return Err(format!(
                "string at {start}..{end} is outside the string table {:?}",
                regions.strings
            ));
        }
        budget.spend(len.into())?;
        // The table is 8-aligned, so the words around the string are in it.
        let first = start & !7;
        let mut bytes = Vec::with_capacity(raw::align8(end) - first);
        self.map.copy(first, raw::align8(end) - first, &mut bytes);
        bytes.drain(..start - first);
        bytes.truncate(end - start);
        String::from_utf8(bytes).map_err(|e| format!("invalid UTF-8 at {start}: {e}"))
    }

    /// Reads one value whose range was validated.
    fn value(&self, kind: Kind, rec: &Record, off: usize) -> Value {
        // Relaxed for the scalars: each is one aligned word written with
        // one store; no other value has to agree with it.
        match kind {
            Kind::Counter => Value::Counter(self.map.load(off)),
            Kind::Gauge => Value::Gauge(self.map.load(off) as i64),
            Kind::GaugeF64 => Value::GaugeF64(f64::from_bits(self.map.load(off))),
            Kind::Text => match self.text(off, rec.param0.get() as usize) {
                Ok(s) => Value::Text(s),
                Err(e) => Value::Unavailable(e),
            },
            Kind::Constant => match self.text(off, rec.param0.get() as usize) {
                Ok(s) => Value::Constant(s),
                Err(e) => Value::Unavailable(e),
            },
            Kind::Histogram | Kind::Timer => {
                let layout =
                    Layout::from_params(rec.param0.get(), rec.param1.get()).expect("validated");
                let sum = self.map.load(off + raw::HIST_SUM);
                // Acquire fence after the sum: pairs with the writer's
                // Release store of it, so the buckets read next include
                // every value in this sum.
                fence(Ordering::Acquire);
                let counts = (0..layout.buckets())
                    .map(|i| self.map.load(off + raw::HIST_BUCKETS + 8 * i))
                    .collect();
                Value::Histogram(
                    HistogramSnapshot::from_parts(layout, sum, counts).expect("bucket count"),
                )
            }
        }
    }

    /// Reads a text value: the buffer of the last complete write, checked
    /// afterwards against the sequence word.
    fn text(&self, off: usize, capacity: usize) -> Result<String, String> {
        let mut bytes = Vec::with_capacity(raw::align8(capacity));
        for attempt in 0..TEXT_RETRIES {
            let s1 = self.map.load(off + raw::TEXT_SEQ);
            // Acquire fence: pairs with the writer's Release store that
            // completed write `w`, so its buffer's data is visible below.
            fence(Ordering::Acquire);
            // Writes up to `w` are complete (write w + 1 may be under way
            // in the other buffer, whether `s1` is even or odd).
            let w = s1 / 2;
            let buffer = off + raw::text_buffer(capacity, (w % 2) as usize);
            // Relaxed: checked as a whole by the sequence re-read below.
            let len = self.map.load(buffer + raw::TEXT_BUF_LEN);
            let n = (len as usize).min(capacity);
            bytes.clear();
            self.map
                .copy(buffer + raw::TEXT_BUF_BYTES, raw::align8(n), &mut bytes);
            // Acquire fence: the loads above happen before the re-read of
            // the sequence word, so a write into this buffer that overlapped
            // them shows up in it.
            fence(Ordering::Acquire);
            let s2 = self.map.load(off + raw::TEXT_SEQ);
            if !buffer_was_stable(s1, s2) {
                backoff(attempt);
                continue;
            }
            if len as usize > capacity {
                return Err(format!("length {len} is over the capacity {capacity}"));
            }
            bytes.truncate(n);
            return String::from_utf8(std::mem::take(&mut bytes))
                .map_err(|e| format!("invalid UTF-8: {e}"));
        }
        Err(format!(
            "still being rewritten after {TEXT_RETRIES} attempts"
        ))
    }
}

/// Whether a text buffer read between sequence readings `s1` and `s2` held
/// one write throughout. The buffer holds write `w = s1 / 2`; write `w + 2`,
/// the next into the same buffer, starts by making the sequence `2w + 3`.
fn buffer_was_stable(s1: u64, s2: u64) -> bool {
    s1 <= s2 && s2 < (s1 | 1).saturating_add(2)
}

/// What one snapshot may still spend on a file's contents.
struct Budget {
    /// String and value bytes left to decode.
    bytes: u64,
}

impl Budget {
    fn spend(&mut self, bytes: u64) -> Result<(), String> {
        self.bytes = self.bytes.checked_sub(bytes).ok_or_else(|| {
            "strings and values add up to more than the file holds (records share bytes?)"
                .to_string()
        })?;
        Ok(())
    }
}

fn backoff(attempt: usize) {
    if attempt % 64 == 63 {
        std::thread::yield_now();
    } else {
        // A varying pause, so the reader does not fall into lock-step with
        // a writer that rewrites the value in a tight loop.
        for _ in 0..attempt % 16 {
            std::hint::spin_loop();
        }
    }
}

fn malformed(path: &Path, reason: String) -> ReadError {
    ReadError::Malformed {
        path: path.to_owned(),
        reason,
    }
}

/// The checked regions of a file.
struct Regions {
    strings: Range<usize>,
    values: Range<usize>,
}

impl Regions {
    /// Checks the header's lengths and offsets against each other and the
    /// mapped length.
    fn check(h: &Header, mapped: usize) -> Result<Regions, String> {
        let file_len = h.file_len.get();
        if file_len > mapped as u64 {
            return Err(format!(
                "header says the file is {file_len} bytes but only {mapped} are there (truncated?)"
            ));
        }
        if (h.header_len.get() as usize) < raw::HEADER_LEN
            || u64::from(h.header_len.get()) > file_len
        {
            return Err(format!("header length {} out of range", h.header_len.get()));
        }
        if (h.record_len.get() as usize) < raw::RECORD_LEN || !h.record_len.get().is_multiple_of(8)
        {
            return Err(format!(
                "record length {} is not a multiple of 8 of at least {}",
                h.record_len.get(),
                raw::RECORD_LEN
            ));
        }
        let range = |off: u32, len: u64, what: &str| -> Result<Range<usize>, String> {
            let end = u64::from(off) + len;
            if !off.is_multiple_of(8)
                || !end.is_multiple_of(8)
                || u64::from(off) < u64::from(h.header_len.get())
                || end > file_len
            {
                return Err(format!(
                    "{what} at {off}..{end} is unaligned or outside the file (header {}, length {file_len})",
                    h.header_len.get()
                ));
            }
            Ok(off as usize..end as usize)
        };
        range(
            h.field_table_off.get(),
            u64::from(h.field_capacity.get()) * u64::from(h.record_len.get()),
            "field table",
        )?;
        let strings = range(
            h.strings_off.get(),
            h.strings_len.get().into(),
            "string table",
        )?;
        let values = range(h.values_off.get(), h.values_len.get().into(), "value area")?;
        Ok(Regions { strings, values })
    }

    /// Checks a field's value range and kind parameters; returns its offset.
    fn value(&self, rec: &Record, kind: Kind) -> Result<usize, String> {
        let need = kind.value_len(rec.param0.get(), rec.param1.get())?;
        let start = rec.value_off.get() as usize;
        let end = start + rec.value_len.get() as usize;
        if !start.is_multiple_of(8)
            || !end.is_multiple_of(8)
            || (rec.value_len.get() as usize) < need
            || start < self.values.start
            || end > self.values.end
        {
            return Err(format!(
                "{kind} value at {start}..{end} (needs {need} bytes) is unaligned, too short, or outside the value area {:?}",
                self.values
            ));
        }
        Ok(start)
    }
}

/// Splits `key=value` lines.
fn parse_static_labels(s: &str) -> Vec<(String, String)> {
    s.lines()
        .filter(|l| !l.is_empty())
        .map(|l| match l.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (l.to_owned(), String::new()),
        })
        .collect()
}

/// Whether some process holds an exclusive lock on `file`: a live writer.
/// `None` if the probe itself failed.
fn is_locked(file: &File) -> Option<bool> {
    match file.try_lock_shared() {
        Ok(()) => {
            let _ = file.unlock();
            Some(false)
        }
        Err(fs::TryLockError::WouldBlock) => Some(true),
        Err(fs::TryLockError::Error(_)) => None,
    }
}

/// Whether a live writer holds the file at `path`: `None` if it cannot be
/// opened or probed.
pub fn probe_alive(path: &Path) -> Option<bool> {
    open_read_only(path).ok().and_then(|f| is_locked(&f))
}

/// Opens `path` for reading without blocking: a FIFO or device planted
/// under a stats name must not hang the reader (the caller then refuses
/// anything that is not a regular file).
fn open_read_only(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
}

/// The directories searched when a reader is given no paths: `$MMSTATS_DIR`
/// if set, else every `/dev/shm/mmstats-*` directory (one per user).
pub fn default_dirs() -> Vec<PathBuf> {
    if let Some(dir) = std::env::var_os(DIR_ENV).filter(|d| !d.is_empty()) {
        return vec![PathBuf::from(dir)];
    }
    let mut dirs: Vec<PathBuf> = fs::read_dir("/dev/shm")
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("mmstats-"))
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs
}

/// A problem met while discovering files: a path that does not exist, a
/// directory that cannot be listed, a bad glob.
#[derive(Debug)]
#[non_exhaustive]
pub struct DiscoverError {
    /// The path or pattern.
    pub path: String,
    /// What went wrong.
    pub reason: String,
}

impl std::fmt::Display for DiscoverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

impl std::error::Error for DiscoverError {}

/// Finds stats files. Each argument may be a file (taken as given), a
/// directory (its `*.mmstats` files, not hidden ones, not recursing) or a
/// glob pattern. With no arguments, searches [`default_dirs`]. Returns the
/// files sorted and without duplicates, and the problems met.
pub fn discover<S: AsRef<OsStr>>(args: &[S]) -> (Vec<PathBuf>, Vec<DiscoverError>) {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    if args.is_empty() {
        for dir in default_dirs() {
            list_dir(&dir, &mut files, &mut errors);
        }
    }
    for arg in args {
        let arg = arg.as_ref();
        let path = Path::new(arg);
        match fs::metadata(path) {
            Ok(m) if m.is_dir() => list_dir(path, &mut files, &mut errors),
            Ok(m) if m.is_file() => files.push(path.to_owned()),
            Ok(_) => errors.push(DiscoverError {
                path: path.display().to_string(),
                reason: "not a file or directory".into(),
            }),
            Err(e) => {
                let s = arg.to_string_lossy();
                if !s.contains(['*', '?', '[']) {
                    errors.push(DiscoverError {
                        path: s.into_owned(),
                        reason: e.to_string(),
                    });
                    continue;
                }
                match glob::glob(&s) {
                    Ok(paths) => {
                        let before = files.len();
                        for p in paths {
                            match p {
                                Ok(p) if p.is_dir() => list_dir(&p, &mut files, &mut errors),
                                // A pattern picks stats files, as a directory does.
                                Ok(p) if is_stats_name(&p) => files.push(p),
                                Ok(_) => {}
                                Err(e) => errors.push(DiscoverError {
                                    path: e.path().display().to_string(),
                                    reason: e.error().to_string(),
                                }),
                            }
                        }
                        if files.len() == before {
                            errors.push(DiscoverError {
                                path: s.into_owned(),
                                reason: "pattern matches no file".into(),
                            });
                        }
                    }
                    Err(e) => errors.push(DiscoverError {
                        path: s.into_owned(),
                        reason: format!("bad pattern: {e}"),
                    }),
                }
            }
        }
    }
    files.sort();
    files.dedup();
    (files, errors)
}

/// A stats file's name: ends in `.mmstats` and is not hidden (writers'
/// temporary files start with a dot).
fn is_stats_name(path: &Path) -> bool {
    path.file_name()
        .map(|n| n.to_string_lossy())
        .is_some_and(|n| !n.starts_with('.') && n.ends_with(".mmstats"))
}

fn list_dir(dir: &Path, files: &mut Vec<PathBuf>, errors: &mut Vec<DiscoverError>) {
    match fs::read_dir(dir) {
        Ok(rd) => {
            for entry in rd.filter_map(Result::ok) {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if is_stats_name(Path::new(&*name)) {
                    files.push(entry.path());
                }
            }
        }
        Err(e) => errors.push(DiscoverError {
            path: dir.display().to_string(),
            reason: e.to_string(),
        }),
    }
}

/// Opens and snapshots one file.
pub fn read_file(path: impl AsRef<Path>) -> Result<Snapshot, ReadError> {
    Reader::open(path)?.snapshot()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_buffers_are_stable_until_their_next_write_starts() {
        // Read at 2w = 4 (write 2 complete, in buffer 0).
        assert!(buffer_was_stable(4, 4));
        assert!(buffer_was_stable(4, 5)); // write 3 began, in buffer 1
        assert!(buffer_was_stable(4, 6)); // write 3 done
        assert!(!buffer_was_stable(4, 7)); // write 4 began, in buffer 0

        // Read at 2w + 1 = 5 (write 3 under way in buffer 1; read buffer 0).
        assert!(buffer_was_stable(5, 6));
        assert!(!buffer_was_stable(5, 7));
        // A sequence that goes backwards is no single writer's.
        assert!(!buffer_was_stable(6, 4));
        assert!(!buffer_was_stable(u64::MAX, u64::MAX));
    }

    #[test]
    fn static_labels_parse() {
        assert_eq!(
            parse_static_labels("method=GET\ncode=2=00\nbare"),
            vec![
                ("method".into(), "GET".into()),
                ("code".into(), "2=00".into()),
                ("bare".into(), String::new())
            ]
        );
        assert!(parse_static_labels("").is_empty());
    }
}
