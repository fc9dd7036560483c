//! The reader side: map stats files read-only, validate every length and
//! offset, and copy out consistent snapshots. (Finding the files is in
//! `discover.rs`.)
//!
//! A reader treats every file as hostile. Whatever is on disk, it returns a
//! [`ReadError`] naming the file rather than panicking, a file that shrinks
//! while mapped reads as [`ReadError::Truncated`], not SIGBUS, and what one
//! file can cost is bounded by [`ReadLimits`].

use std::collections::HashSet;
use std::fs::{self, File};
use std::io;
use std::ops::Range;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use crate::error::ReadError;
use mmstats::format::raw::{self, Header, Record, StrRef};
use mmstats::format::{self, Kind, Unit, WriterState};
use mmstats::guard::{self, ReadMap};
use mmstats::protocol;

mod cached;
mod layout;
mod snapshot;

pub(crate) use layout::FieldLayout;

use cached::Slot;
pub use cached::{LivenessMemo, MAX_OPEN_LOCKS};
pub use snapshot::{Field, FileInfo, ReadLimits, Snapshot, Value};

/// Longest field label read, in bytes: a field with a longer one is
/// skipped (counted in [`Snapshot::skipped`]). The writer refuses longer.
pub use mmstats::format::MAX_LABEL_LEN;
/// Longest help text or unit text kept, in bytes: a longer one is cut at
/// the last whole character before it, and only that much is read.
pub const MAX_HELP_LEN: usize = 4096;
/// Longest encoded static labels of a field, in bytes: a field with longer
/// ones is skipped. The writer refuses longer.
pub use mmstats::format::MAX_STATIC_LABELS_LEN;
/// Longest command or model name, in bytes: a file with a longer one is
/// refused as malformed.
pub const MAX_NAME_LEN: usize = 1024;

/// How many times a text value is re-read while its writer is mid-update
/// before the reader reports it [`Value::Unavailable`].
pub(crate) const TEXT_RETRIES: usize = 1000;

/// An open, read-only, mapped stats file. Take as many snapshots as you
/// like; each re-reads the live values and any appended fields.
///
/// Readers need the process-wide SIGBUS guard, so that a file truncated
/// while mapped reads as [`ReadError::Truncated`] instead of killing the
/// process: call [`install_sigbus_guard`](mmstats::install_sigbus_guard) once
/// at program start, or [`Reader::open`] fails with
/// [`ReadError::NoSigbusGuard`]. At most [`MAX_MAPPINGS`](mmstats::MAX_MAPPINGS)
/// files can be open at once in one process.
pub struct Reader {
    path: PathBuf,
    /// Device and inode of the file mapped: the name still names it while
    /// `lstat` of the path gives these. No descriptor is kept open (the
    /// mapping outlives it), so a reader of many files needs no
    /// descriptor per file.
    dev: u64,
    ino: u64,
    map: ReadMap,
    /// The size `fstat` gave at open; the header's `file_len` must not
    /// exceed it (H4).
    size: u64,
    /// The owner `fstat` gave at open.
    owner: u32,
    /// The link count the last snapshot's closing `fstat` gave; `u64::MAX`
    /// before any.
    nlink: std::sync::atomic::AtomicU64,
    limits: ReadLimits,
    /// The last reading of [`Reader::snapshot_shared`].
    cache: Option<Box<cached::Cache>>,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader").field("path", &self.path).finish()
    }
}

impl Reader {
    /// Opens and maps `path` read-only, with the default [`ReadLimits`].
    ///
    /// The last component of `path` is never followed: a symbolic link
    /// there is an error ([`ReadError::Io`]). Anything but a regular file is
    /// refused before it is opened, and again on the opened descriptor, so
    /// a device or FIFO planted under a stats name is never read.
    pub fn open(path: impl AsRef<Path>) -> Result<Reader, ReadError> {
        Reader::open_with(path, &ReadLimits::default())
    }

    /// Opens and maps `path` read-only, with the given limits.
    pub fn open_with(path: impl AsRef<Path>, limits: &ReadLimits) -> Result<Reader, ReadError> {
        Reader::open_owned(path.as_ref(), limits, None)
    }

    /// Opens `path`; with `owner`, refuses a file that uid does not own
    /// (checked before the open and again on the descriptor).
    pub(crate) fn open_owned(
        path: &Path,
        limits: &ReadLimits,
        owner: Option<u32>,
    ) -> Result<Reader, ReadError> {
        let path = path.to_owned();
        if !guard::guard_installed() {
            return Err(ReadError::NoSigbusGuard { path });
        }
        let io = |source| ReadError::Io {
            path: path.clone(),
            source,
        };
        let not_owned = |uid: u32, dir_owner: u32| ReadError::NotOwned {
            path: path.clone(),
            owner: uid,
            dir_owner,
        };
        // Look before opening: opening a device can have side effects.
        let before = fs::symlink_metadata(&path).map_err(io)?;
        if before.file_type().is_symlink() {
            return Err(io(io::Error::new(
                io::ErrorKind::InvalidInput,
                "is a symbolic link, which readers do not follow (give its target instead)",
            )));
        }
        if !before.is_file() {
            return Err(malformed(&path, "not a regular file".into()));
        }
        if let Some(dir_owner) = owner.filter(|&o| o != before.uid()) {
            return Err(not_owned(before.uid(), dir_owner));
        }
        let file = open_read_only(&path).map_err(io)?;
        // Again on the descriptor: the entry may have been replaced since.
        let meta = file.metadata().map_err(io)?;
        if !meta.is_file() {
            return Err(malformed(&path, "not a regular file".into()));
        }
        if let Some(dir_owner) = owner.filter(|&o| o != meta.uid()) {
            return Err(not_owned(meta.uid(), dir_owner));
        }
        // The file may be anything (a planted link to a secret): its size
        // is not given until it is known to be a stats file.
        let size = meta.len();
        if size < raw::HEADER_LEN as u64 {
            return Err(malformed(
                &path,
                format!("file is shorter than the {}-byte header", raw::HEADER_LEN),
            ));
        }
        if size > format::MAX_FILE_LEN {
            return Err(malformed(
                &path,
                format!("file is over the limit of {} bytes", format::MAX_FILE_LEN),
            ));
        }
        if size > limits.max_file_len {
            return Err(ReadError::Limit {
                path,
                limit: "max_file_len",
                value: limits.max_file_len,
            });
        }
        let map =
            ReadMap::new(&file, (size & !7) as usize).map_err(|e| ReadError::from_map(e, &path))?;
        // The descriptor is closed here: the mapping does not need it.
        drop(file);
        Ok(Reader {
            path,
            dev: meta.dev(),
            ino: meta.ino(),
            map,
            size,
            owner: meta.uid(),
            nlink: std::sync::atomic::AtomicU64::new(u64::MAX),
            limits: limits.clone(),
            cache: None,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file is no longer under its name: removed from its
    /// directory since it was opened, replaced by another file, or it
    /// cannot be checked. A fold removes a writer's file only after
    /// publishing the archive that holds it (spec §2.8), so a reader that
    /// finds a file unlinked leaves it out.
    ///
    /// Told by `lstat` of the path (same device and inode, and a link
    /// count above 0), since no descriptor is kept. After a
    /// [`snapshot`](Reader::snapshot), this is what the `lstat` that
    /// closed it saw (no extra system call): a file still under its name
    /// then was there after everything that snapshot read, which is what
    /// the protocol needs.
    pub fn unlinked(&self) -> bool {
        // Relaxed: the word is this reader's own record of its last lstat;
        // no other memory is published with it.
        match self.nlink.load(Ordering::Relaxed) {
            u64::MAX => self.by_name().is_none_or(|m| m.nlink() == 0),
            n => n == 0,
        }
    }

    /// `lstat` of the path, if it still names the file mapped.
    fn by_name(&self) -> Option<fs::Metadata> {
        fs::symlink_metadata(&self.path)
            .ok()
            .filter(|m| (m.dev(), m.ino()) == (self.dev, self.ino))
    }

    /// The file's size when it was opened, in bytes: what the mapping
    /// spans (rounded down to whole words).
    pub fn mapped_len(&self) -> u64 {
        self.size
    }

    /// Device and inode of the file mapped.
    pub fn dev_ino(&self) -> (u64, u64) {
        (self.dev, self.ino)
    }

    /// Reads the file: header, fields and values.
    pub fn snapshot(&self) -> Result<Snapshot, ReadError> {
        self.snapshot_into(None, None)
    }

    /// A full snapshot; with `slots`, also how to read each kept field's
    /// value again ([`Reader::snapshot_shared`]).
    fn snapshot_into(
        &self,
        slots: Option<&mut Vec<Slot>>,
        memo: Option<&mut LivenessMemo>,
    ) -> Result<Snapshot, ReadError> {
        let mut budget = Budget {
            bytes: 0,
            reader_limit: false,
            exceeded: false,
        };
        let mut file_len = None;
        let mut scratch = Vec::new();
        let snap = self.read(
            &mut budget,
            &mut file_len,
            slots.unwrap_or(&mut scratch),
            memo,
        );
        self.check_truncation(file_len)?;
        match snap {
            // The budget ran out, and it was this reader's limit, not the
            // file's length, that set it.
            Err(ReadError::Malformed { .. }) if budget.reader_limit && budget.exceeded => {
                Err(ReadError::Limit {
                    path: self.path.clone(),
                    limit: "max_decoded",
                    value: self.limits.max_decoded,
                })
            }
            other => other,
        }
    }

    /// Fails if the file shrank under what was just read from it.
    fn check_truncation(&self, file_len: Option<u64>) -> Result<(), ReadError> {
        // A shrink past a page boundary faults (and reads zero); one inside
        // the last page reads zeros silently, so the size is checked too,
        // against the length the snapshot relied on. Either way, what was
        // read may mix old values with zeros.
        let shrunk = file_len.is_some_and(|len| match self.by_name() {
            Some(m) => {
                // Relaxed: see `unlinked`.
                self.nlink.store(m.nlink(), Ordering::Relaxed);
                m.len() < len
            }
            // No longer under its name: unlinked, and left out by every
            // reader of this crate; a shrink across a page still shows
            // as a fault.
            None => {
                // Relaxed: see `unlinked`.
                self.nlink.store(0, Ordering::Relaxed);
                false
            }
        });
        if self.map.faulted() || shrunk {
            return Err(ReadError::Truncated {
                path: self.path.clone(),
            });
        }
        Ok(())
    }

    fn read(
        &self,
        budget: &mut Budget,
        file_len: &mut Option<u64>,
        slots: &mut Vec<Slot>,
        memo: Option<&mut LivenessMemo>,
    ) -> Result<Snapshot, ReadError> {
        let bad = |reason: String| malformed(&self.path, reason);
        let mut hb = Vec::with_capacity(raw::HEADER_LEN);
        self.map.copy(0, raw::HEADER_LEN, &mut hb);
        let h = Header::decode(&hb);
        // Neither the bytes nor the size are printed until the file is known
        // to be a stats file: it may be a planted link to a secret.
        if h.magic != format::MAGIC {
            return Err(bad("bad magic: not an mmstats file".into()));
        }
        if h.bom.get() != format::BYTE_ORDER_MARK {
            return Err(bad(
                "bad byte-order mark (written on a big-endian machine, or not an mmstats file)"
                    .into(),
            ));
        }
        if h.major.get() != format::VERSION_MAJOR {
            return Err(ReadError::UnsupportedVersion {
                path: self.path.clone(),
                major: h.major.get(),
                minor: h.minor.get(),
            });
        }
        // H4: a header that claims more than the file held at open (and so
        // more than was mapped).
        if h.file_len.get() > self.size || h.file_len.get() & !7 > self.map.len() as u64 {
            return Err(ReadError::Truncated {
                path: self.path.clone(),
            });
        }
        *file_len = Some(h.file_len.get());
        let regions = Regions::check(&h).map_err(bad)?;
        // Acquire-load: pairs with the writer's Release store when it
        // appends a field, so every record and string counted is complete.
        let count = protocol::acquire_load(&self.map, raw::H_FIELD_COUNT);
        if count > u64::from(h.field_capacity.get()) {
            return Err(bad(format!(
                "field count {count} is over the table's capacity {}",
                h.field_capacity.get()
            )));
        }
        if count > self.limits.max_fields {
            return Err(ReadError::Limit {
                path: self.path.clone(),
                limit: "max_fields",
                value: self.limits.max_fields,
            });
        }
        let state = WriterState::from_word(self.map.load(raw::H_STATE));
        // Acquire fence: pairs with the writer's Release store of "exited",
        // so values read after this are final when the state says so.
        fence(Ordering::Acquire);
        // A well-formed file decodes each string and value byte once, so a
        // file whose records point at the same bytes over and over cannot
        // make a reader allocate or work more than this (L1).
        budget.reader_limit = self.limits.max_decoded < h.file_len.get();
        budget.bytes = h.file_len.get().min(self.limits.max_decoded);
        let info = FileInfo {
            path: self.path.clone(),
            version: (h.major.get(), h.minor.get()),
            pid: h.pid.get(),
            tid: h.tid.get(),
            process_start: h.proc_start.get(),
            created: UNIX_EPOCH + Duration::from_nanos(h.created_ns.get()),
            command: self
                .name(&regions, h.command, budget)
                .map_err(|e| bad(format!("command: {e}")))?,
            model: self
                .name(&regions, h.model, budget)
                .map_err(|e| bad(format!("model: {e}")))?,
            alive: match memo {
                Some(memo) => memo.probe(self, h.minor.get(), h.lock_token.get()),
                None => crate::liveness::probe(
                    &self.path,
                    (self.dev, self.ino),
                    h.minor.get(),
                    h.lock_token.get(),
                ),
            } == Some(true),
            fallbacks: if h.minor.get() >= 1 {
                h.fallbacks.get()
            } else {
                0
            },
            lock_token: if h.minor.get() >= 1 {
                h.lock_token.get()
            } else {
                0
            },
            owner: self.owner,
            archive: None,
            state,
        };
        let mut info = info;
        if state == WriterState::Archive {
            let archive = crate::archive::ArchiveInfo::read(&self.map, &h, |n| budget.spend(n))
                .map_err(|e| bad(format!("archive: {e}")))?;
            info.archive = Some(std::sync::Arc::new(archive));
        }
        let record_len = h.record_len.get() as usize;
        let table = h.field_table_off.get() as usize;
        // Grown as fields are read: `count` comes from the file.
        let mut fields = Vec::new();
        let mut labels = HashSet::new();
        let mut duplicates = Vec::new();
        let mut skipped = 0;
        let mut rec_bytes = Vec::with_capacity(raw::RECORD_LEN);
        for i in 0..count as usize {
            rec_bytes.clear();
            self.map
                .copy(table + i * record_len, raw::RECORD_LEN, &mut rec_bytes);
            let rec = Record::decode(&rec_bytes);
            let mut text = |r: StrRef, what: &str, cap: usize| {
                self.string(&regions, r, budget, cap)
                    .map_err(|e| format!("{what}: {e}"))
            };
            // A label or static labels over their cap: the field is
            // skipped (a cut label could pass for another field's).
            if rec.label.len.get() as usize > MAX_LABEL_LEN
                || rec.static_labels.len.get() as usize > MAX_STATIC_LABELS_LEN
            {
                skipped += 1;
                continue;
            }
            let label = text(rec.label, "label", MAX_LABEL_LEN)
                .map_err(|e| bad(format!("field {i}: {e}")))?;
            let at = |e: String| bad(format!("field {i} ({label}): {e}"));
            let Some(kind) = Kind::from_code(rec.kind.get()) else {
                skipped += 1;
                continue;
            };
            let unit_text = text(rec.unit_text, "unit", MAX_HELP_LEN).map_err(at)?;
            let help = text(rec.help, "help", MAX_HELP_LEN).map_err(at)?;
            let static_labels =
                text(rec.static_labels, "static labels", MAX_STATIC_LABELS_LEN).map_err(at)?;
            let value_at = regions.value(&rec, kind).map_err(at)?;
            budget.spend(rec.value_len.get().into()).map_err(at)?;
            // The first field with a label wins; later ones are checked
            // like any record, then ignored.
            if labels.contains(&label) {
                duplicates.push(label);
                continue;
            }
            labels.insert(label.clone());
            let mut slot = Slot::new(value_at, kind, rec.param0.get(), rec.param1.get());
            fields.push(Field {
                kind,
                unit: Unit::from_code(rec.unit.get()),
                unit_text,
                help,
                static_labels: parse_static_labels(&static_labels),
                value: slot.read(self),
                label,
            });
            slots.push(slot);
        }
        Ok(Snapshot {
            info,
            layout: Some(FieldLayout::of(&fields)),
            fields,
            skipped,
            duplicates,
        })
    }

    /// Reads a string reference, checked against the string table.
    /// Reads a string of the string table, at most `cap` bytes of it: a
    /// longer one is cut at the last whole character before `cap`.
    fn string(
        &self,
        regions: &Regions,
        r: StrRef,
        budget: &mut Budget,
        cap: usize,
    ) -> Result<String, String> {
        let (off, len) = (r.off.get(), r.len.get());
        if len == 0 {
            return Ok(String::new());
        }
        let start = off as usize;
        let full_end = start + len as usize;
        if start < regions.strings.start || full_end > regions.strings.end {
            return Err(format!(
                "string at {start}..{full_end} is outside the string table {:?}",
                regions.strings
            ));
        }
        let cut = (len as usize) > cap;
        let end = start + (len as usize).min(cap);
        budget.spend((end - start) as u64)?;
        // The table is 8-aligned, so the words around the string are in it.
        let first = start & !7;
        let mut bytes = Vec::with_capacity(raw::align8(end) - first);
        self.map.copy(first, raw::align8(end) - first, &mut bytes);
        bytes.drain(..start - first);
        bytes.truncate(end - start);
        match String::from_utf8(bytes) {
            Ok(s) => Ok(s),
            // Cut inside a character: keep the whole ones before it.
            Err(e) if cut && e.utf8_error().error_len().is_none() => {
                let valid = e.utf8_error().valid_up_to();
                let mut bytes = e.into_bytes();
                bytes.truncate(valid);
                Ok(String::from_utf8(bytes).expect("valid up to here"))
            }
            Err(e) => Err(format!("invalid UTF-8 at {start}: {e}")),
        }
    }

    /// Reads the command or model name: refused over [`MAX_NAME_LEN`].
    fn name(&self, regions: &Regions, r: StrRef, budget: &mut Budget) -> Result<String, String> {
        let len = r.len.get() as usize;
        if len > MAX_NAME_LEN {
            // Out of the table is said first (nothing is read).
            self.string(regions, r, budget, 0)?;
            return Err(format!(
                "{len} bytes long, over the readers' limit of {MAX_NAME_LEN}"
            ));
        }
        self.string(regions, r, budget, MAX_NAME_LEN)
    }

    /// Reads a text value unless its capacity is over the reader's limit
    /// (V4); the capacity was checked against the format's limit (R3).
    fn limited_text(&self, off: usize, capacity: u64) -> Result<String, String> {
        if capacity > self.limits.max_text_capacity {
            return Err(format!(
                "capacity {capacity} is over this reader's limit max_text_capacity = {}",
                self.limits.max_text_capacity
            ));
        }
        self.text(off, capacity as usize)
    }

    /// Reads a text value: the buffer of the last complete write, checked
    /// afterwards against the sequence word ([`protocol::text_read`]).
    fn text(&self, off: usize, capacity: usize) -> Result<String, String> {
        protocol::text_read(&self.map, off, capacity, TEXT_RETRIES, backoff)
    }
}

/// What one snapshot may still spend on a file's contents (L1).
struct Budget {
    /// String and value bytes left to decode.
    bytes: u64,
    /// Whether the reader's `max_decoded`, not the file's length, set it.
    reader_limit: bool,
    /// Whether a charge went over it (the snapshot then fails).
    exceeded: bool,
}

impl Budget {
    fn spend(&mut self, bytes: u64) -> Result<(), String> {
        match self.bytes.checked_sub(bytes) {
            Some(left) => {
                self.bytes = left;
                Ok(())
            }
            None => {
                // `snapshot` tells a reader limit from a malformed file by
                // this and `reader_limit`.
                self.exceeded = true;
                Err(if self.reader_limit {
                    "strings and values reach this reader's limit max_decoded".to_string()
                } else {
                    "strings and values add up to more than the file holds (records share bytes?)"
                        .to_string()
                })
            }
        }
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
    /// Checks the header's lengths and offsets against each other and
    /// `file_len`, which the caller checked against the size at open (H4).
    /// Every region ends at a multiple of 8 at most `file_len`, so inside
    /// the mapping of `size & !7` bytes.
    fn check(h: &Header) -> Result<Regions, String> {
        let file_len = h.file_len.get();
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

/// Splits `key=value` lines (format-spec.md §3.2): lines end at `\n` only
/// (a `\r` is data), empty lines are skipped, each line splits at its
/// first `=`, and the first of duplicate keys wins.
fn parse_static_labels(s: &str) -> Vec<(String, String)> {
    let mut seen = HashSet::new();
    s.split('\n')
        .filter(|l| !l.is_empty())
        .map(|l| l.split_once('=').unwrap_or((l, "")))
        .filter(|(k, _)| seen.insert(*k))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Whether a live writer holds the file at `path`: `None` if it cannot be
/// opened or probed, or is not a regular file (a symbolic link there is
/// not followed).
pub fn probe_alive(path: &Path) -> Option<bool> {
    crate::liveness::probe_path(path)
}

/// Opens `path` for reading (format-spec.md §7.1): without blocking, so a
/// FIFO planted under a stats name cannot hang the reader; without
/// following a symbolic link in the last component, so a planted link
/// cannot send a reader running as root to another file; and without
/// taking a terminal. The caller then refuses anything that is not a
/// regular file, by `fstat` on the descriptor.
fn open_read_only(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
}

/// Opens and snapshots one file.
pub fn read_file(path: impl AsRef<Path>) -> Result<Snapshot, ReadError> {
    Reader::open(path)?.snapshot()
}

#[cfg(test)]
mod tests {
    use super::*;

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
        // `\n` only ends a line; the first of a repeated key wins.
        assert_eq!(
            parse_static_labels("a=b\r\nc=d\n\na=again"),
            vec![("a".into(), "b\r".into()), ("c".into(), "d".into())]
        );
    }
}
