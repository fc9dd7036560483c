//! A live stats file: [`StatsFile`], and the [`Slot`]s its fields' handles
//! are bound from.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::error::Error;
use crate::format::raw::{self, Header, Record};
use crate::format::{Kind, WriterState};
use crate::hist::Layout;
use crate::layout::{lay_out, Laid, Plan, SlotPlan};
use crate::options::{render_template, Options, DEFAULT_TEMPLATE};
use crate::publish::{publish, usable_dir};
use crate::registry::{self, Home, PoolKey};
use crate::schema::{check_handle_type, FieldDef, Schema};
use crate::sys::{Backing, FileMap, Words};

/// The bound fields of a new file, handed to [`Stats::bind`](crate::Stats::bind)
/// in schema order.
#[derive(Debug)]
pub struct Slots(pub(crate) std::vec::IntoIter<Slot>);

impl Slots {
    /// The next field's slot. Generated code calls this once per field.
    #[doc(hidden)]
    pub fn next_slot(&mut self) -> Slot {
        self.0.next().expect("one slot per schema field")
    }
}

/// One field's value words in a live file, with its kind and parameters
/// (text capacity or bucket layout): all a handle keeps of its definition.
/// Turned into a typed handle by [`StatField::bind`](crate::StatField::bind).
pub struct Slot {
    pub(crate) words: Words,
    pub(crate) kind: Kind,
    param0: u64,
    param1: u64,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No pointers: the words are where the value lives, not what it is.
        f.debug_struct("Slot")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl Slot {
    fn new(words: Words, def: &FieldDef) -> Slot {
        Slot {
            words,
            kind: def.kind,
            param0: def.param0,
            param1: def.param1,
        }
    }

    pub(crate) fn layout(&self) -> Layout {
        Layout::from_params(self.param0, self.param1).expect("validated at creation")
    }

    pub(crate) fn capacity(&self) -> usize {
        self.param0 as usize
    }
}

/// A live stats file (or its private stand-in) that fields can be
/// appended to.
///
/// Most users never see this type: `#[derive(Stats)]` models open their
/// file through [`Stats::open`](crate::Stats::open). It is for programs
/// whose fields are only known at run time.
pub struct StatsFile {
    pub(crate) backing: Arc<Backing>,
    pub(crate) path: Option<PathBuf>,
    /// Copy of the header, field table and string table as written.
    pub(crate) image: Vec<u8>,
    pub(crate) header: Header,
    pub(crate) strings_used: usize,
    pub(crate) values_used: usize,
    pub(crate) prefix: String,
    /// Every label in the file, to refuse a duplicate on `add`.
    pub(crate) labels: HashSet<String>,
    pub(crate) slots: Vec<SlotPlan>,
}

impl std::fmt::Debug for StatsFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatsFile")
            .field("path", &self.path)
            .field("fields", &self.header.field_count.get())
            .finish_non_exhaustive()
    }
}

impl StatsFile {
    /// Creates and publishes this thread's stats file for `schema`.
    ///
    /// The file is never reused for another thread: fields may be appended
    /// to it with [`add`](StatsFile::add). (Models opened with
    /// [`Stats::open`](crate::Stats::open) reuse the files of threads that
    /// ended; see [`Options::open`].)
    pub fn create<M>(schema: &Schema, options: &Options<M>) -> Result<StatsFile, Error> {
        StatsFile::create_file(schema, options, false)
    }

    /// Creates this thread's file, or with `reusable`, takes the parked file
    /// of an ended thread of this process with the same layout, directory
    /// and template, and parks the file again when its last handle goes.
    pub(crate) fn create_file<M>(
        schema: &Schema,
        options: &Options<M>,
        reusable: bool,
    ) -> Result<StatsFile, Error> {
        StatsFile::layout(schema, options, |image| {
            let dir = usable_dir(options.dir.as_deref())?;
            let template = options.template.as_deref().unwrap_or(DEFAULT_TEMPLATE);
            let command = options.resolved_command();
            let name = render_template(template, &command, schema.model())?;
            let key = reusable.then(|| registry::pool_key(&dir, template, image));
            if let Some((map, path)) = key.as_ref().and_then(registry::take_parked) {
                reuse(&map, image);
                return Ok((file_backing(map, key), Some(path)));
            }
            let token = registry::lock_token(&dir)?;
            image[raw::H_LOCK_TOKEN..raw::H_LOCK_TOKEN + 8].copy_from_slice(&token.to_le_bytes());
            let fallbacks = registry::fallback_count();
            image[raw::H_FALLBACKS..raw::H_FALLBACKS + 8].copy_from_slice(&fallbacks.to_le_bytes());
            let (map, path) = publish(&dir, &name, image)?;
            let map = Arc::new(map);
            let values_off = raw::get_u32(image, raw::H_VALUES_OFF) as usize;
            let meta = &image[..values_off];
            let home = Home::new(&dir, &path, template, &command, schema.model(), meta);
            registry::add_live(&map, home);
            Ok((file_backing(map, key), Some(path)))
        })
    }

    /// Lays `schema` out in process-private memory: the same handles, no
    /// file. Only definition errors are possible.
    pub fn private<M>(schema: &Schema, options: &Options<M>) -> Result<StatsFile, Error> {
        StatsFile::layout(schema, options, |image| {
            let backing = Backing::private(image, raw::H_STATE, WriterState::EXITED);
            Ok((backing, None))
        })
    }

    /// The file's path, `None` for private memory.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Takes the handle of the schema field labelled `label` (as given in
    /// the schema, before any prefix). Each handle can be taken once.
    pub fn take<F: crate::StatField>(&mut self, label: &str) -> Result<F, Error> {
        let full = format!("{}{label}", self.prefix);
        let Some(i) = self.slots.iter().position(|s| s.def.label == full) else {
            return Err(Error::Field {
                label: full,
                reason: "no such field in the schema, or its handle was already taken".into(),
            });
        };
        check_handle_type::<F>(&self.slots[i].def, "taken").map_err(|reason| Error::Field {
            label: full,
            reason,
        })?;
        let p = self.slots.remove(i);
        Ok(F::bind(Slot::new(
            self.backing.words(p.off, p.len / 8),
            &p.def,
        )))
    }

    /// Appends a field to the live file and returns its handle. Readers
    /// see it from their next snapshot. Needs room reserved with
    /// [`Options::reserve`].
    pub fn add<F: crate::StatField>(&mut self, def: FieldDef) -> Result<F, Error> {
        check_handle_type::<F>(&def, "added").map_err(|reason| Error::Field {
            label: def.label.clone(),
            reason,
        })?;
        let def = def.with_prefix(&self.prefix);
        if self.labels.contains(&def.label) {
            return Err(Error::Field {
                label: def.label,
                reason: "label used twice in one file".into(),
            });
        }
        let h = &self.header;
        let capacity = h.field_capacity.get();
        if self.header.field_count.get() >= capacity.into() {
            return Err(Error::NoRoom {
                label: def.label,
                detail: format!("all {capacity} field records are used"),
            });
        }
        let value_len = def.validate()?;
        let string_bytes = def.string_bytes();
        let (strings_len, values_len) = (h.strings_len.get() as usize, h.values_len.get() as usize);
        if self.strings_used + string_bytes > strings_len
            || self.values_used + value_len > values_len
        {
            return Err(Error::NoRoom {
                detail: format!(
                    "it needs {string_bytes} string and {value_len} value bytes; {} and {} are left",
                    strings_len - self.strings_used,
                    values_len - self.values_used
                ),
                label: def.label,
            });
        }
        let first_string = self.strings_used;
        let index = self.header.field_count.get() as usize;
        let mut plan = self.plan();
        let value_off = plan.write_field(index, &def, value_len);
        let (strings_used, values_used) = (plan.strings_used, plan.values_used);
        self.strings_used = strings_used;
        self.values_used = values_used;
        // The values are zero already; the strings and record words are
        // stored before the count that makes them visible.
        let strings_start = self.header.strings_off.get() as usize + first_string;
        self.store_image(strings_start, self.strings_used - first_string);
        let rec = self.header.field_table_off.get() as usize + index * raw::RECORD_LEN;
        self.store_image(rec, raw::RECORD_LEN);
        let count = self.header.field_count.get() + 1;
        self.header.field_count = count.into();
        self.labels.insert(def.label.clone());
        // Publishes the record and strings stored above (a Release store).
        crate::protocol::publish_field_count(self.backing.word(raw::H_FIELD_COUNT), count);
        if let Some(map) = self.backing.file_map() {
            // So that a new file made for this one (after a fork or a
            // truncation) has the field too.
            self.image[raw::H_FIELD_COUNT..raw::H_FIELD_COUNT + 8]
                .copy_from_slice(&count.to_le_bytes());
            registry::update_meta(map, &self.image);
        }
        Ok(F::bind(Slot::new(
            self.backing.words(value_off, value_len / 8),
            &def,
        )))
    }

    /// Lays the file out and hands the finished image to `make_backing`,
    /// which publishes it or copies it into private memory.
    fn layout<M>(
        schema: &Schema,
        options: &Options<M>,
        make_backing: impl FnOnce(&mut [u8]) -> Result<(Backing, Option<PathBuf>), Error>,
    ) -> Result<StatsFile, Error> {
        let Laid {
            mut image,
            header,
            strings_used,
            values_used,
            labels,
            slots,
        } = lay_out(schema, options)?;
        let (backing, path) = make_backing(&mut image)?;
        // Only the metadata is kept, for appending fields later.
        image.truncate(header.values_off.get() as usize);
        Ok(StatsFile {
            backing: Arc::new(backing),
            path,
            image,
            header,
            strings_used,
            values_used,
            prefix: options.prefix.clone(),
            labels,
            slots,
        })
    }

    /// Stores `len` bytes of the local image at `off` into the backing
    /// memory, as whole words (neighbouring bytes are stored unchanged).
    fn store_image(&self, off: usize, len: usize) {
        if len == 0 {
            return;
        }
        let start = off & !7;
        let end = raw::align8(off + len);
        for o in (start..end).step_by(8) {
            let v = u64::from_le_bytes(self.image[o..o + 8].try_into().expect("8 bytes"));
            // Relaxed: these words are not yet reachable by readers; the
            // Release store of the field count publishes them.
            self.backing.word(o).store(v, Ordering::Relaxed);
        }
    }

    /// Hands out the fields' slots, bound to the current backing. Once.
    pub(crate) fn take_slots(&mut self) -> Vec<Slot> {
        std::mem::take(&mut self.slots)
            .into_iter()
            .map(|p| Slot::new(self.backing.words(p.off, p.len / 8), &p.def))
            .collect()
    }

    fn plan(&mut self) -> Plan<'_> {
        Plan {
            image: &mut self.image,
            header: self.header.clone(),
            strings_used: self.strings_used,
            values_used: self.values_used,
        }
    }
}

impl<T: crate::Stats> Options<T> {
    /// Creates this thread's stats file and returns the model bound to it.
    /// A model needs at least one field: its handles are what keep the
    /// file open.
    ///
    /// When the model is dropped (a `per_thread!` instance when its thread
    /// ends), its file is marked exited and parked; the next open of the
    /// same model, with the same options, in this process takes it over
    /// instead of making a new file. Its counters and histograms continue
    /// from where they were, so sums over files stay exact; gauges restart
    /// at zero; text and constants keep their last value until set again.
    /// Files per process are thus bounded by the instances alive at once.
    pub fn open(self) -> Result<T, Error> {
        let mut file = StatsFile::create_file(&model_schema::<T>()?, &self, true)?;
        Ok(T::bind(&mut Slots(file.take_slots().into_iter())))
    }

    /// Like [`open`](Options::open), but never fails: if the file cannot
    /// be made, the model lives in process-private memory (the application
    /// runs the same, nobody can read its stats) and the reason is returned
    /// beside it. A definition error in the model itself still panics,
    /// since it is a bug in the program.
    pub fn open_or_private(self) -> (T, Option<Error>) {
        let schema = model_schema::<T>().unwrap_or_else(|e| panic!("invalid stats model: {e}"));
        let (mut file, err) = match StatsFile::create_file(&schema, &self, true) {
            Ok(file) => (file, None),
            Err(err @ Error::Field { .. }) => panic!("invalid stats model: {err}"),
            Err(err) => {
                registry::note_fallback(&err);
                let file = StatsFile::private(&schema, &self)
                    .unwrap_or_else(|e| panic!("invalid stats model: {e}"));
                (file, Some(err))
            }
        };
        (T::bind(&mut Slots(file.take_slots().into_iter())), err)
    }
}

/// A model's schema, refused if it has no field: nothing would hold the
/// file open.
fn model_schema<T: crate::Stats>() -> Result<Schema, Error> {
    let schema = T::schema();
    if schema.fields.is_empty() {
        return Err(Error::Field {
            label: schema.model,
            reason: "a stats model needs at least one field".into(),
        });
    }
    Ok(schema)
}

/// The backing of a live file mapping, which goes back to the registry when
/// its last handle is gone: parked under `key` for reuse, or forgotten.
fn file_backing(map: Arc<FileMap>, key: Option<PoolKey>) -> Backing {
    Backing::file(
        map,
        raw::H_STATE,
        WriterState::EXITED,
        Box::new(move |map| registry::close(map, key)),
    )
}

/// Turns a parked file (of an ended thread of this process, laid out as
/// `image`) into the calling thread's: its thread id, gauges back to zero,
/// the process's fallback count, then "active". Counters and histograms
/// continue, so sums over files stay exact; text and constants keep their
/// last value until the new thread sets them (spec §2.7).
fn reuse(map: &FileMap, image: &[u8]) {
    let h = Header::decode(image);
    let pid_tid = u64::from(std::process::id()) | (u64::from(crate::sys::gettid()) << 32);
    // Relaxed, all: the Release store of "active" below publishes them.
    map.word(raw::H_PID).store(pid_tid, Ordering::Relaxed);
    let table = h.field_table_off.get() as usize;
    for i in 0..h.field_count.get() as usize {
        let rec = Record::decode(&image[table + i * raw::RECORD_LEN..]);
        if matches!(
            Kind::from_code(rec.kind.get()),
            Some(Kind::Gauge | Kind::GaugeF64)
        ) {
            // A dead thread's gauge means nothing for the new one. 0 is
            // also f64 0.0.
            map.word(rec.value_off.get() as usize)
                .store(0, Ordering::Relaxed);
        }
    }
    map.word(raw::H_FALLBACKS)
        .fetch_max(registry::fallback_count(), Ordering::Relaxed);
    // Release: a reader that acquires "active" sees the new tid and gauges.
    map.word(raw::H_STATE)
        .store(WriterState::ACTIVE, Ordering::Release);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_definitions_are_checked() {
        let schema_err = |f: FieldDef| {
            let mut s = Schema::new("m");
            s.push(f);
            StatsFile::private(&s, &Options::new())
                .unwrap_err()
                .to_string()
        };
        assert!(schema_err(FieldDef::counter("")).contains("empty label"));
        assert!(schema_err(FieldDef::text("t", 1 << 21)).contains("capacity"));
        assert!(
            schema_err(FieldDef::timer("t", Layout::timer()).layout(6, 99)).contains("max_bits")
        );
        assert!(
            schema_err(FieldDef::counter("c").static_label("a=b", "c")).contains("static label")
        );
        assert!(schema_err(FieldDef::text("t", 8).layout(6, 42)).contains("no bucket layout"));
        let timer_in_ms = FieldDef::timer("t", Layout::timer()).unit("ms");
        assert!(schema_err(timer_in_ms).contains("nanoseconds"));
        // The right unit for a timer, and any unit for a histogram, are fine.
        let mut ok = Schema::new("m");
        ok.push(FieldDef::timer("t", Layout::timer()).unit("ns"));
        ok.push(FieldDef::histogram("h", Layout::histogram()).unit("ms"));
        StatsFile::private(&ok, &Options::new()).unwrap();
        let mut s = Schema::new("m");
        s.push(FieldDef::counter("x"));
        s.push(FieldDef::gauge("x"));
        let err = StatsFile::private(&s, &Options::new()).unwrap_err();
        assert!(err.to_string().contains("used twice"), "{err}");
    }
}
