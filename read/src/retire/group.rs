//! Folding one `(command, model)` of a directory into its archive: the
//! writer's half of the protocol of format-spec.md §2.8.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use zerocopy::IntoBytes;

use mmstats::format::raw::{self, Header, StrRef};
use mmstats::format::{self, Kind, WriterState};
use mmstats::hist::HistogramSnapshot;
use mmstats::layout::Plan;
use mmstats::FieldDef;

use super::{abort_at, now_ns, read, FoldReport, FoldStep, RetireOptions};
use crate::archive::{archive_path, archive_stem, nanos, SourceId};
use crate::reader::{Snapshot, Value};

/// One `(command, model)` of a directory: the protocol of spec §2.8.
#[allow(clippy::too_many_arguments)]
pub(super) fn fold_group(
    dir: &Path,
    euid: u32,
    command: &str,
    model: &str,
    paths: &[PathBuf],
    opts: &RetireOptions,
    report: &mut FoldReport,
) -> Result<(), String> {
    let stem = archive_stem(command, model);
    let archive_path = archive_path(dir, command, model);
    let tmp_path = dir.join(format!(".{stem}.fold-tmp"));
    let lock_path = dir.join(format!(".{stem}.fold-lock"));
    let show = |p: &Path, e: io::Error| format!("{}: {e}", p.display());

    // 1. The fold lock: one folder per (directory, command, model) at a
    //    time; the kernel releases it if the folder dies.
    let lock = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&lock_path)
        .map_err(|e| show(&lock_path, e))?;
    if !lock.metadata().is_ok_and(|m| m.is_file()) {
        return Err(format!("{}: not a regular file", lock_path.display()));
    }
    lock.lock().map_err(|e| show(&lock_path, e))?;
    abort_at(opts, FoldStep::Locked);

    // 2. The current archive, read under the lock: only folders replace it.
    let current = match fs::symlink_metadata(&archive_path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(show(&archive_path, e)),
        Ok(_) => {
            let snap = read(&archive_path, euid)?;
            if !snap.info.is_archive() || snap.info.command != command || snap.info.model != model {
                return Err(format!(
                    "{} is not the archive of command {command:?}, model {model:?}; not folding into it",
                    archive_path.display()
                ));
            }
            Some(snap)
        }
    };
    let held: HashMap<SourceId, Option<SystemTime>> = current
        .as_ref()
        .and_then(|s| s.info.archive.as_ref())
        .map(|a| a.ids.iter().copied().collect())
        .unwrap_or_default();

    // 3. The writer files, read again under the lock: a folder that held
    //    it before may have folded and removed some.
    let mut present = HashSet::new();
    let mut leftovers = Vec::new();
    let mut sources: Vec<(PathBuf, Snapshot)> = Vec::new();
    for path in paths {
        if *path == archive_path {
            continue;
        }
        let snap = match read(path, euid) {
            Ok(s) => s,
            Err(_) if fs::symlink_metadata(path).is_err() => continue,
            Err(e) => {
                report.skipped.push((path.clone(), e));
                continue;
            }
        };
        if snap.info.is_archive() || snap.info.command != command || snap.info.model != model {
            continue;
        }
        let id = snap.info.source_id();
        present.insert(id);
        if held.contains_key(&id) {
            // Folded by a fold that died before removing it.
            leftovers.push(path.clone());
        } else if snap.info.age() >= opts.min_age {
            if let Some(hook) = opts.after_read {
                hook(path);
            }
            if crate::liveness::probe_path(path) != Some(false) {
                continue;
            }
            // Read again now that the writer is proven dead: the read
            // above may predate its last stores, which would be lost once
            // the file is removed.
            match read(path, euid) {
                Ok(s) if s.info.source_id() == id && !s.info.is_archive() => {
                    sources.push((path.clone(), s))
                }
                Ok(_) => report
                    .skipped
                    .push((path.clone(), "replaced while being folded".into())),
                Err(e) => report.skipped.push((path.clone(), e)),
            }
        }
    }
    let scanned_ns = now_ns();

    // 4. The new identity set: marks of files found gone, and pruning.
    let mut ids: Vec<(SourceId, u64)> = Vec::new();
    let mut marked = false;
    let mut pruned = 0;
    let prune_after = opts.prune_after.max(opts.prune_floor);
    if let Some(a) = current.as_ref().and_then(|s| s.info.archive.as_ref()) {
        for (id, absent) in &a.ids {
            let absent_ns = absent.map_or(0, nanos);
            if present.contains(id) {
                ids.push((*id, 0));
            } else if absent_ns == 0 {
                marked = true;
                ids.push((*id, scanned_ns));
            } else if Duration::from_nanos(scanned_ns.saturating_sub(absent_ns)) > prune_after {
                pruned += 1;
            } else {
                ids.push((*id, absent_ns));
            }
        }
    }

    // 5. The new archive's values.
    sources.sort_by_key(|(_, s)| nanos(s.info.created));
    let mut acc = Archive::default();
    if let Some(snap) = &current {
        for f in &snap.fields {
            let _ = acc.add(f);
        }
    }
    let mut folded = Vec::new();
    for (path, snap) in sources {
        let mut trial = acc.clone();
        match snap.fields.iter().try_for_each(|f| trial.add(f)) {
            Ok(()) => {
                acc = trial;
                ids.push((snap.info.source_id(), 0));
                folded.push((path, snap.info));
            }
            Err(e) => report.skipped.push((path, e)),
        }
    }

    if !folded.is_empty() || marked || pruned > 0 {
        let info = current.as_ref().and_then(|s| s.info.archive.as_ref());
        let mut since = info.map_or(u64::MAX, |a| nanos(a.since));
        for (_, i) in &folded {
            since = since.min(nanos(i.created));
        }
        let ext = Extension {
            writers: info.map_or(0, |a| a.writers) + folded.len() as u64,
            since_ns: if since == u64::MAX { 0 } else { since },
            folded_ns: now_ns(),
            folds: info.map_or(0, |a| a.folds) + 1,
            ids,
        };
        let image = acc.image(command, model, &ext)?;
        // 6. The new archive, whole, under a temporary name.
        match fs::remove_file(&tmp_path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(show(&tmp_path, e)),
            _ => {}
        }
        let written = write_new(&tmp_path, &image);
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp_path);
            return Err(show(&tmp_path, e));
        }
        // Never publish an archive that readers (and the next fold) would
        // refuse under the default limits: its counts would vanish from
        // every total. The union of the sources' fields can exceed a limit
        // that each source met; then the sources stay as they are.
        if let Err(e) = read(&tmp_path, euid) {
            let _ = fs::remove_file(&tmp_path);
            return Err(format!(
                "{}: not folding, the new archive would not be readable: {e}",
                archive_path.display()
            ));
        }
        abort_at(opts, FoldStep::TempWritten);
        // 7. Published in one step: readers see the old archive or the new.
        let published = if current.is_some() {
            fs::rename(&tmp_path, &archive_path)
        } else {
            // Never over a file that appeared meanwhile.
            fs::hard_link(&tmp_path, &archive_path).and_then(|()| fs::remove_file(&tmp_path))
        };
        if let Err(e) = published {
            let _ = fs::remove_file(&tmp_path);
            return Err(show(&archive_path, e));
        }
        abort_at(opts, FoldStep::Published);
        report.archives_written += 1;
        report.folded += folded.len();
        report.pruned += pruned;
    }

    // 8. Only now the files the new archive holds.
    let mut first = true;
    for path in folded.iter().map(|(p, _)| p).chain(&leftovers) {
        match fs::remove_file(path) {
            Ok(()) => report.removed += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => report.skipped.push((path.clone(), e.to_string())),
        }
        if first {
            abort_at(opts, FoldStep::HalfRemoved);
            first = false;
        }
    }
    drop(lock);
    Ok(())
}

/// Creates `path` anew (never through a planted link) and writes `image`.
fn write_new(path: &Path, image: &[u8]) -> io::Result<()> {
    let mut f: File = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    f.write_all(image)?;
    f.set_permissions(fs::Permissions::from_mode(0o644))?;
    Ok(())
}

/// The archive header extension to write.
struct Extension {
    writers: u64,
    since_ns: u64,
    folded_ns: u64,
    folds: u64,
    ids: Vec<(SourceId, u64)>,
}

/// A field's folded value.
#[derive(Clone, Debug)]
enum Folded {
    Counter(u64),
    Histogram(HistogramSnapshot),
    /// Text or constant: the newest writer's last value.
    Text(String),
}

/// The folded fields, in the order first seen.
#[derive(Clone, Debug, Default)]
struct Archive {
    fields: Vec<(FieldDef, Folded)>,
    index: HashMap<String, usize>,
}

impl Archive {
    /// Folds one field in: counters add, histograms merge, texts keep the
    /// last value, gauges are dropped. A field whose kind or layout does
    /// not match the archive's field of that label is an error.
    fn add(&mut self, f: &crate::reader::Field) -> Result<(), String> {
        let conflict = |what: &str| format!("field {}: {what} differs from the archive's", f.label);
        match (&f.value, self.index.get(&f.label)) {
            (Value::Gauge(_) | Value::GaugeF64(_), _) => Ok(()),
            (Value::Unavailable(_), _) => Ok(()),
            (value, Some(&i)) => {
                let (def, have) = &mut self.fields[i];
                if def.kind() != f.kind {
                    return Err(conflict("kind"));
                }
                match (have, value) {
                    (Folded::Counter(a), Value::Counter(b)) => *a = a.saturating_add(*b),
                    (Folded::Histogram(a), Value::Histogram(b)) => {
                        a.merge(b).map_err(|_| conflict("bucket layout"))?
                    }
                    (Folded::Text(a), Value::Text(b) | Value::Constant(b)) => {
                        def.grow_capacity(b.len());
                        *a = b.clone();
                    }
                    _ => return Err(conflict("kind")),
                }
                Ok(())
            }
            (value, None) => {
                let (def, folded) = match value {
                    Value::Counter(n) => (FieldDef::counter(&f.label), Folded::Counter(*n)),
                    Value::Histogram(h) if f.kind == Kind::Timer => (
                        FieldDef::timer(&f.label, h.layout()),
                        Folded::Histogram(h.clone()),
                    ),
                    Value::Histogram(h) => (
                        FieldDef::histogram(&f.label, h.layout()),
                        Folded::Histogram(h.clone()),
                    ),
                    Value::Text(s) => (FieldDef::text(&f.label, s.len()), Folded::Text(s.clone())),
                    Value::Constant(s) => (
                        FieldDef::constant(&f.label, s.len()),
                        Folded::Text(s.clone()),
                    ),
                    _ => return Ok(()),
                };
                let def = def.with_metadata(&f.help, f.unit, &f.unit_text, &f.static_labels);
                self.index.insert(f.label.clone(), self.fields.len());
                self.fields.push((def, folded));
                Ok(())
            }
        }
    }

    /// The archive file's bytes (spec §2.8, "Layout").
    fn image(&self, command: &str, model: &str, ext: &Extension) -> Result<Vec<u8>, String> {
        let mut value_lens = Vec::with_capacity(self.fields.len());
        let mut string_bytes = (command.len() + model.len()) as u64;
        for (def, _) in &self.fields {
            value_lens.push(def.validate().map_err(|e| e.to_string())?);
            string_bytes += def.string_bytes() as u64;
        }
        let header_len = (raw::A_IDS + ext.ids.len() * raw::ID_LEN) as u64;
        let table_off = header_len;
        let strings_off = table_off + (self.fields.len() * raw::RECORD_LEN) as u64;
        let strings_len = (string_bytes + 7) & !7;
        let values_off = strings_off + strings_len;
        let values_len = value_lens.iter().map(|&l| l as u64).sum::<u64>();
        let file_len = values_off + values_len;
        if file_len > format::MAX_FILE_LEN {
            return Err(format!(
                "the archive would be {file_len} bytes, over the limit of {}",
                format::MAX_FILE_LEN
            ));
        }
        let n = self.fields.len() as u64;
        let header = Header {
            magic: format::MAGIC,
            major: format::VERSION_MAJOR.into(),
            minor: format::VERSION_MINOR.into(),
            bom: format::BYTE_ORDER_MARK.into(),
            header_len: (header_len as u32).into(),
            record_len: (raw::RECORD_LEN as u32).into(),
            file_len: file_len.into(),
            state: WriterState::ARCHIVE.into(),
            field_count: n.into(),
            field_capacity: (n as u32).into(),
            field_table_off: (table_off as u32).into(),
            strings_off: (strings_off as u32).into(),
            strings_len: (strings_len as u32).into(),
            values_off: (values_off as u32).into(),
            values_len: (values_len as u32).into(),
            // No writer: 0, so that every archive of a (command, model)
            // falls in one group when a reader groups by pid.
            pid: 0.into(),
            tid: 0.into(),
            proc_start: 0.into(),
            created_ns: ext.folded_ns.into(),
            command: StrRef::default(),
            model: StrRef::default(),
            lock_token: 0.into(),
            fallbacks: 0.into(),
        };
        let mut image = vec![0u8; file_len as usize];
        let mut plan = Plan {
            image: &mut image,
            header,
            strings_used: 0,
            values_used: 0,
        };
        plan.header.command = plan.push_string(command);
        plan.header.model = plan.push_string(model);
        let mut offsets = Vec::with_capacity(self.fields.len());
        for (i, ((def, _), &len)) in self.fields.iter().zip(&value_lens).enumerate() {
            offsets.push(plan.write_field(i, def, len));
        }
        let header = plan.header.clone();
        image[..raw::HEADER_LEN].copy_from_slice(header.as_bytes());
        raw::put_u64(&mut image, raw::A_WRITERS, ext.writers);
        raw::put_u64(&mut image, raw::A_SINCE_NS, ext.since_ns);
        raw::put_u64(&mut image, raw::A_FOLDED_NS, ext.folded_ns);
        raw::put_u64(&mut image, raw::A_FOLDS, ext.folds);
        raw::put_u64(&mut image, raw::A_ID_COUNT, ext.ids.len() as u64);
        for (i, (id, absent)) in ext.ids.iter().enumerate() {
            let at = raw::A_IDS + i * raw::ID_LEN;
            id.encode(*absent, &mut image[at..at + raw::ID_LEN]);
        }
        for ((def, value), off) in self.fields.iter().zip(offsets) {
            match value {
                Folded::Counter(n) => raw::put_u64(&mut image, off, *n),
                Folded::Histogram(h) => {
                    raw::put_u64(&mut image, off + raw::HIST_SUM, h.sum());
                    for (i, c) in h.counts().iter().enumerate() {
                        raw::put_u64(&mut image, off + raw::HIST_BUCKETS + 8 * i, *c);
                    }
                }
                Folded::Text(s) if s.is_empty() => {}
                Folded::Text(s) => {
                    // Write 1 complete, in buffer 1 (spec §6.3).
                    let cap = def.capacity();
                    let buf = off + raw::text_buffer(cap, 1);
                    raw::put_u64(&mut image, off + raw::TEXT_SEQ, 2);
                    raw::put_u64(&mut image, buf + raw::TEXT_BUF_LEN, s.len() as u64);
                    let b = buf + raw::TEXT_BUF_BYTES;
                    image[b..b + s.len()].copy_from_slice(s.as_bytes());
                }
            }
        }
        Ok(image)
    }
}
