//! The writer side: field definitions, schemas, the builder, and the
//! creation of a stats file (or its private-memory stand-in).

use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::marker::PhantomData;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::dirs::default_dir;
use crate::error::Error;
use zerocopy::IntoBytes;

use crate::format::raw::{self, Header, Record, StrRef};
use crate::format::{self, Kind, Unit, WriterState};
use crate::hist::Layout;
use crate::sys::{self, Backing, Words};

/// The default file name template.
pub const DEFAULT_TEMPLATE: &str = "{cmd}.{model}.{pid}.{tid}.mmstats";

/// One field of a schema: label, help, kind, unit and layout.
///
/// Made by the field types' [`StatField::def`](crate::StatField::def) and
/// refined with the builder-style methods.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldDef {
    label: String,
    help: String,
    kind: Kind,
    unit: Unit,
    unit_text: String,
    static_labels: Vec<(String, String)>,
    param0: u64,
    param1: u64,
    /// A builder call that does not fit the kind, reported by `validate`.
    misuse: Option<String>,
}

impl FieldDef {
    fn new(kind: Kind, label: &str) -> FieldDef {
        FieldDef {
            label: label.to_owned(),
            help: String::new(),
            kind,
            unit: Unit::Other,
            unit_text: String::new(),
            static_labels: Vec::new(),
            param0: 0,
            param1: 0,
            misuse: None,
        }
    }

    /// A `u64` counter.
    pub fn counter(label: &str) -> FieldDef {
        FieldDef::new(Kind::Counter, label)
    }

    /// An `i64` gauge.
    pub fn gauge(label: &str) -> FieldDef {
        FieldDef::new(Kind::Gauge, label)
    }

    /// An `f64` gauge.
    pub fn gauge_f64(label: &str) -> FieldDef {
        FieldDef::new(Kind::GaugeF64, label)
    }

    /// A text field of `capacity` bytes.
    pub fn text(label: &str, capacity: usize) -> FieldDef {
        let mut d = FieldDef::new(Kind::Text, label);
        d.param0 = capacity as u64;
        d
    }

    /// A constant (write-once text) of `capacity` bytes.
    pub fn constant(label: &str, capacity: usize) -> FieldDef {
        let mut d = FieldDef::new(Kind::Constant, label);
        d.param0 = capacity as u64;
        d
    }

    /// A histogram of `u64` values.
    pub fn histogram(label: &str, layout: Layout) -> FieldDef {
        let mut d = FieldDef::new(Kind::Histogram, label);
        d.param0 = layout.precision().into();
        d.param1 = layout.max_bits().into();
        d
    }

    /// A timer: a histogram of nanoseconds.
    pub fn timer(label: &str, layout: Layout) -> FieldDef {
        let mut d = FieldDef::new(Kind::Timer, label);
        d.param0 = layout.precision().into();
        d.param1 = layout.max_bits().into();
        d.unit = Unit::Nanoseconds;
        d.unit_text = "ns".into();
        d
    }

    /// Sets the help text.
    #[must_use]
    pub fn help(mut self, help: &str) -> FieldDef {
        self.help = help.trim().to_owned();
        self
    }

    /// Sets the unit, e.g. `"bytes"`, `"ms"` or `"rows"`. A timer's unit is
    /// always nanoseconds; giving it another makes the file fail.
    #[must_use]
    pub fn unit(mut self, unit: &str) -> FieldDef {
        if self.kind == Kind::Timer && Unit::from_text(unit) != Unit::Nanoseconds {
            self.misuse = Some(format!(
                "a timer records nanoseconds; unit {unit:?} would mislabel them (use a histogram)"
            ));
        }
        self.unit = Unit::from_text(unit);
        self.unit_text = unit.to_owned();
        self
    }

    /// Adds a static label, such as `method="GET"` in Prometheus terms.
    #[must_use]
    pub fn static_label(mut self, key: &str, value: &str) -> FieldDef {
        self.static_labels.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Sets a histogram or timer's bucket layout: `precision` bits (relative
    /// error `2^-precision`) and values up to `2^max_bits`. Checked when the
    /// file is made; on any other kind, making the file fails.
    #[must_use]
    pub fn layout(mut self, precision: u8, max_bits: u8) -> FieldDef {
        if matches!(self.kind, Kind::Histogram | Kind::Timer) {
            self.param0 = precision.into();
            self.param1 = max_bits.into();
        } else {
            self.misuse = Some(format!("a {} has no bucket layout", self.kind));
        }
        self
    }

    /// The histogram range bits this definition has (its kind's default
    /// until [`layout`](FieldDef::layout) changes it).
    pub fn default_max_bits(&self) -> u8 {
        self.param1 as u8
    }

    /// The label.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The kind.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    fn with_prefix(&self, prefix: &str) -> FieldDef {
        let mut d = self.clone();
        d.label = format!("{prefix}{}", self.label);
        d
    }

    /// Checks the definition and returns the length of its value in bytes.
    fn validate(&self) -> Result<usize, Error> {
        let bad = |reason: String| Error::Field {
            label: self.label.clone(),
            reason,
        };
        if self.label.is_empty() {
            return Err(bad("empty label".into()));
        }
        if let Some(misuse) = &self.misuse {
            return Err(bad(misuse.clone()));
        }
        if self.label.chars().any(char::is_control) {
            return Err(bad("label contains a control character".into()));
        }
        for (k, v) in &self.static_labels {
            if k.is_empty() || k.contains(['=', '\n']) || v.contains('\n') {
                return Err(bad(format!(
                    "static label {k:?}={v:?}: keys must be non-empty without '=' or newline, values without newline"
                )));
            }
        }
        self.kind.value_len(self.param0, self.param1).map_err(bad)
    }

    /// Bytes this field puts in the string table.
    fn string_bytes(&self) -> usize {
        self.label.len()
            + self.help.len()
            + self.unit_text.len()
            + self.encode_static_labels().len()
    }

    fn encode_static_labels(&self) -> String {
        let pairs: Vec<String> = self
            .static_labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        pairs.join("\n")
    }
}

/// The fields of a stats model, in order, with the model's name.
#[derive(Clone, Debug, PartialEq)]
pub struct Schema {
    model: String,
    fields: Vec<FieldDef>,
}

impl Schema {
    /// An empty schema for the model called `model`.
    pub fn new(model: &str) -> Schema {
        Schema {
            model: model.to_owned(),
            fields: Vec::new(),
        }
    }

    /// Appends a field.
    pub fn push(&mut self, field: FieldDef) {
        self.fields.push(field);
    }

    /// The model name.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The fields, in order.
    pub fn fields(&self) -> &[FieldDef] {
        &self.fields
    }
}

/// Where and how a stats file is made: directory, file name template,
/// command name, label prefix and reserved room.
///
/// `Options` (with no model type) is what [`StatsFile::create`] takes.
/// [`Builder<T>`], what [`Stats::builder`](crate::Stats::builder) returns, is
/// the same type bound to the model `T`, which adds `open` and
/// `open_or_private`: one set of setters serves both.
pub struct Options<M = ()> {
    dir: Option<PathBuf>,
    template: Option<String>,
    command: Option<String>,
    prefix: String,
    reserve_fields: usize,
    reserve_bytes: usize,
    _model: PhantomData<fn() -> M>,
}

/// Opens a stats model with options. Made by
/// [`Stats::builder`](crate::Stats::builder); the setters are [`Options`]'.
pub type Builder<T> = Options<T>;

impl Options {
    /// Default options: the default directory and template, no prefix, no
    /// room reserved for appended fields.
    pub fn new() -> Options {
        Options::default()
    }
}

impl<M> Default for Options<M> {
    fn default() -> Self {
        Options {
            dir: None,
            template: None,
            command: None,
            prefix: String::new(),
            reserve_fields: 0,
            reserve_bytes: 0,
            _model: PhantomData,
        }
    }
}

impl<M> Clone for Options<M> {
    fn clone(&self) -> Self {
        Options {
            dir: self.dir.clone(),
            template: self.template.clone(),
            command: self.command.clone(),
            prefix: self.prefix.clone(),
            reserve_fields: self.reserve_fields,
            reserve_bytes: self.reserve_bytes,
            _model: PhantomData,
        }
    }
}

impl<M> std::fmt::Debug for Options<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("model", &std::any::type_name::<M>())
            .field("dir", &self.dir)
            .field("template", &self.template)
            .field("command", &self.command)
            .field("prefix", &self.prefix)
            .field("reserve_fields", &self.reserve_fields)
            .field("reserve_bytes", &self.reserve_bytes)
            .finish()
    }
}

impl<M> Options<M> {
    /// The directory for the file (default: [`default_dir`]).
    #[must_use]
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// The file name template (default: [`DEFAULT_TEMPLATE`]). Placeholders:
    /// `{cmd}`, `{model}`, `{pid}`, `{tid}`. It must end in `.mmstats`.
    #[must_use]
    pub fn template(mut self, template: &str) -> Self {
        self.template = Some(template.to_owned());
        self
    }

    /// The command name stored in the file and used for `{cmd}` (default:
    /// the base name of `argv[0]`). For workers whose `argv[0]` says little,
    /// such as pre-forked children or embedded interpreters.
    #[must_use]
    pub fn command(mut self, command: &str) -> Self {
        self.command = Some(command.to_owned());
        self
    }

    /// A prefix put before every label (before the model's own prefix).
    #[must_use]
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.prefix = prefix.to_owned();
        self
    }

    /// Room for `fields` more fields using up to `bytes` of strings and
    /// `bytes` of values, for [`StatsFile::add`] on the live file.
    #[must_use]
    pub fn reserve(mut self, fields: usize, bytes: usize) -> Self {
        self.reserve_fields = fields;
        self.reserve_bytes = bytes;
        self
    }

    fn resolved_dir(&self) -> PathBuf {
        self.dir.clone().unwrap_or_else(default_dir)
    }

    fn resolved_command(&self) -> String {
        self.command.clone().unwrap_or_else(command_name)
    }
}

impl<T: crate::Stats> Options<T> {
    /// Creates this thread's stats file and returns the model bound to it.
    /// A model needs at least one field: its handles are what keep the
    /// file open.
    pub fn open(self) -> Result<T, Error> {
        let mut file = StatsFile::create(&model_schema::<T>()?, &self)?;
        Ok(T::bind(&mut Slots(file.take_slots().into_iter())))
    }

    /// Like [`open`](Options::open), but never fails: if the file cannot
    /// be made, the model lives in process-private memory (the application
    /// runs the same, nobody can read its stats) and the reason is returned
    /// beside it. A definition error in the model itself still panics,
    /// since it is a bug in the program.
    pub fn open_or_private(self) -> (T, Option<Error>) {
        let schema = model_schema::<T>().unwrap_or_else(|e| panic!("invalid stats model: {e}"));
        let (mut file, err) = match StatsFile::create(&schema, &self) {
            Ok(file) => (file, None),
            Err(err @ Error::Field { .. }) => panic!("invalid stats model: {err}"),
            Err(err) => {
                let file = StatsFile::private(&schema, &self)
                    .unwrap_or_else(|e| panic!("invalid stats model: {e}"));
                (file, Some(err))
            }
        };
        (T::bind(&mut Slots(file.take_slots().into_iter())), err)
    }
}

/// The bound fields of a new file, handed to [`Stats::bind`](crate::Stats::bind)
/// in schema order.
#[derive(Debug)]
pub struct Slots(std::vec::IntoIter<Slot>);

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
    backing: Arc<Backing>,
    path: Option<PathBuf>,
    /// Copy of the header, field table and string table as written.
    image: Vec<u8>,
    header: Header,
    strings_used: usize,
    values_used: usize,
    prefix: String,
    /// Every label in the file, to refuse a duplicate on `add`.
    labels: HashSet<String>,
    slots: Vec<SlotPlan>,
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
    /// Creates, publishes and locks this thread's stats file for `schema`.
    pub fn create<M>(schema: &Schema, options: &Options<M>) -> Result<StatsFile, Error> {
        StatsFile::layout(schema, options, |image| {
            let dir = options.resolved_dir();
            ensure_private_dir(&dir)?;
            let template = options.template.as_deref().unwrap_or(DEFAULT_TEMPLATE);
            let name = render_template(template, &options.resolved_command(), schema.model())?;
            let (backing, path) = publish(&dir, &name, image)?;
            Ok((backing, Some(path)))
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
        Ok(F::bind(Slot::new(
            self.backing.words(value_off, value_len / 8),
            &def,
        )))
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

    /// Lays the file out (header, field table, string table, zero values)
    /// and hands the finished image to `make_backing`, which publishes it or
    /// copies it into private memory.
    fn layout<M>(
        schema: &Schema,
        options: &Options<M>,
        make_backing: impl FnOnce(&[u8]) -> Result<(Backing, Option<PathBuf>), Error>,
    ) -> Result<StatsFile, Error> {
        let fields: Vec<FieldDef> = schema
            .fields
            .iter()
            .map(|f| f.with_prefix(&options.prefix))
            .collect();
        let mut value_lens = Vec::with_capacity(fields.len());
        let mut labels = HashSet::new();
        for f in &fields {
            value_lens.push(f.validate()?);
            if !labels.insert(f.label.clone()) {
                return Err(Error::Field {
                    label: f.label.clone(),
                    reason: "label used twice in one model".into(),
                });
            }
        }
        let command = options.resolved_command();
        // Sizes in u64 with saturation: `reserve` takes any usize, and an
        // absurd one must become the error below, not an overflow.
        let capacity = (fields.len() as u64).saturating_add(options.reserve_fields as u64);
        let table_off = raw::HEADER_LEN as u64;
        let strings_off = table_off.saturating_add(capacity.saturating_mul(raw::RECORD_LEN as u64));
        let mut string_bytes = (command.len() + schema.model.len()) as u64;
        string_bytes = string_bytes.saturating_add(options.reserve_bytes as u64);
        for f in &fields {
            string_bytes = string_bytes.saturating_add(f.string_bytes() as u64);
        }
        let strings_len = string_bytes.saturating_add(7) & !7;
        let values_off = strings_off.saturating_add(strings_len);
        let value_bytes = value_lens.iter().map(|&l| l as u64).sum::<u64>();
        let values_len = value_bytes
            .saturating_add(options.reserve_bytes as u64)
            .saturating_add(7)
            & !7;
        let file_len = values_off.saturating_add(values_len);
        if file_len > format::MAX_FILE_LEN {
            return Err(Error::Field {
                label: schema.model.clone(),
                reason: format!(
                    "model too large: the file would be {file_len} bytes, over the limit of {}",
                    format::MAX_FILE_LEN
                ),
            });
        }
        let (capacity, strings_off, strings_len, values_off, values_len, file_len) = (
            capacity as usize,
            strings_off as usize,
            strings_len as usize,
            values_off as usize,
            values_len as usize,
            file_len as usize,
        );
        // Every offset fits in u32: the file is under 1 GiB, checked above.
        let header = Header {
            magic: format::MAGIC,
            major: format::VERSION_MAJOR.into(),
            minor: format::VERSION_MINOR.into(),
            bom: format::BYTE_ORDER_MARK.into(),
            header_len: (raw::HEADER_LEN as u32).into(),
            record_len: (raw::RECORD_LEN as u32).into(),
            file_len: (file_len as u64).into(),
            state: WriterState::ACTIVE.into(),
            field_count: 0.into(),
            field_capacity: (capacity as u32).into(),
            field_table_off: (table_off as u32).into(),
            strings_off: (strings_off as u32).into(),
            strings_len: (strings_len as u32).into(),
            values_off: (values_off as u32).into(),
            values_len: (values_len as u32).into(),
            pid: std::process::id().into(),
            tid: sys::gettid().into(),
            proc_start: process_start_ticks().into(),
            created_ns: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
                .into(),
            command: StrRef::default(),
            model: StrRef::default(),
            reserved: [0; 16],
        };
        let mut image = vec![0u8; file_len];
        let mut plan = Plan {
            image: &mut image,
            header,
            strings_used: 0,
            values_used: 0,
        };
        plan.header.command = plan.push_string(&command);
        plan.header.model = plan.push_string(&schema.model);
        let mut offsets = Vec::with_capacity(fields.len());
        for (i, (f, &len)) in fields.iter().zip(&value_lens).enumerate() {
            offsets.push(plan.write_field(i, f, len));
        }
        plan.header.field_count = (fields.len() as u64).into();
        let Plan {
            header,
            strings_used,
            values_used,
            ..
        } = plan;
        image[..raw::HEADER_LEN].copy_from_slice(header.as_bytes());
        let (backing, path) = make_backing(&image)?;
        // Only the metadata is kept, for appending fields later.
        image.truncate(values_off);
        Ok(StatsFile {
            backing: Arc::new(backing),
            path,
            image,
            header,
            strings_used,
            values_used,
            prefix: options.prefix.clone(),
            labels,
            slots: fields
                .into_iter()
                .zip(offsets.into_iter().zip(value_lens))
                .map(|(def, (off, len))| SlotPlan { def, off, len })
                .collect(),
        })
    }

    /// Hands out the fields' slots, bound to the current backing. Once.
    fn take_slots(&mut self) -> Vec<Slot> {
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

/// A field waiting to be bound: its definition and where its value lives.
struct SlotPlan {
    def: FieldDef,
    off: usize,
    len: usize,
}

/// Writes metadata into a file image and keeps the fill levels.
struct Plan<'a> {
    image: &'a mut Vec<u8>,
    header: Header,
    strings_used: usize,
    values_used: usize,
}

impl Plan<'_> {
    fn push_string(&mut self, s: &str) -> StrRef {
        let off = self.header.strings_off.get() as usize + self.strings_used;
        self.image[off..off + s.len()].copy_from_slice(s.as_bytes());
        self.strings_used += s.len();
        StrRef::new(off as u32, s.len() as u32)
    }

    /// Writes record `index` for `f` and its strings; returns the value offset.
    fn write_field(&mut self, index: usize, f: &FieldDef, value_len: usize) -> usize {
        let value_off = self.header.values_off.get() as usize + self.values_used;
        let rec = Record {
            label: self.push_string(&f.label),
            help: self.push_string(&f.help),
            unit_text: self.push_string(&f.unit_text),
            static_labels: self.push_string(&f.encode_static_labels()),
            kind: f.kind.code().into(),
            unit: f.unit.code().into(),
            flags: 0.into(),
            value_off: (value_off as u32).into(),
            value_len: (value_len as u32).into(),
            param0: f.param0.into(),
            param1: f.param1.into(),
        };
        let at = self.header.field_table_off.get() as usize + index * raw::RECORD_LEN;
        self.image[at..at + raw::RECORD_LEN].copy_from_slice(rec.as_bytes());
        self.values_used += value_len;
        value_off
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

/// Checks that a handle of type `F` fits a field defined as `def`: same kind,
/// and for text the same capacity `N`.
fn check_handle_type<F: crate::StatField>(def: &FieldDef, verb: &str) -> Result<(), String> {
    let want = F::def(&def.label);
    if want.kind != def.kind {
        return Err(format!(
            "defined as {} but {verb} as {}",
            def.kind, want.kind
        ));
    }
    if matches!(def.kind, Kind::Text | Kind::Constant) && want.param0 != def.param0 {
        return Err(format!(
            "capacity is {} bytes but {verb} with a handle of {}",
            def.param0, want.param0
        ));
    }
    Ok(())
}

/// Creates `dir` (mode 0755) if missing and checks that it belongs to us
/// and only we can write to it: otherwise another user could plant or
/// remove files in it.
fn ensure_private_dir(dir: &Path) -> Result<(), Error> {
    let err = |source| Error::Dir {
        path: dir.to_owned(),
        source,
    };
    match fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
    {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(err(e)),
    }
    let euid = sys::geteuid();
    // In a sticky, world-writable parent such as /dev/shm, another user may
    // have planted our directory's name as a link to a place of theirs.
    let link = fs::symlink_metadata(dir).map_err(err)?;
    if link.file_type().is_symlink() && link.uid() != euid && link.uid() != 0 {
        return Err(Error::ForeignDir {
            path: dir.to_owned(),
            owner: link.uid(),
            euid,
        });
    }
    let meta = fs::metadata(dir).map_err(err)?;
    if !meta.is_dir() {
        return Err(err(io::Error::new(
            io::ErrorKind::NotADirectory,
            "not a directory",
        )));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(Error::UnsafeDir {
            path: dir.to_owned(),
            mode: meta.mode(),
        });
    }
    if meta.uid() != euid {
        return Err(Error::ForeignDir {
            path: dir.to_owned(),
            owner: meta.uid(),
            euid,
        });
    }
    Ok(())
}

/// Keeps file names portable and free of separators.
fn sanitize(s: &str) -> String {
    let out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() {
        "_".into()
    } else {
        out
    }
}

/// Fills in a file name template.
fn render_template(template: &str, command: &str, model: &str) -> Result<String, Error> {
    let bad = |reason: &str| Error::Template {
        template: template.to_owned(),
        reason: reason.to_owned(),
    };
    if template.contains('/') || template.contains('\0') {
        return Err(bad("must not contain '/' or NUL"));
    }
    if !template.ends_with(".mmstats") || template.starts_with('.') {
        return Err(bad("must end in \".mmstats\" and not start with '.'"));
    }
    if !template.contains("{pid}") || !template.contains("{tid}") {
        // Without them, two threads or processes would race for one name.
        return Err(bad("must contain {pid} and {tid}"));
    }
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}').ok_or_else(|| bad("unclosed '{'"))?;
        let key = &rest[open + 1..open + close];
        match key {
            "cmd" => out.push_str(&sanitize(command)),
            "model" => out.push_str(&sanitize(model)),
            "pid" => out.push_str(&std::process::id().to_string()),
            "tid" => out.push_str(&sys::gettid().to_string()),
            other => {
                return Err(bad(&format!(
                    "unknown placeholder {{{other}}}; known: {{cmd}} {{model}} {{pid}} {{tid}}"
                )))
            }
        }
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Writes `image` to a new file under a temporary name, locks it, maps it,
/// and links it into place under `name` (or `name` with a `.N` suffix if a
/// live writer holds that name). Returns the backing and final path.
fn publish(dir: &Path, name: &str, image: &[u8]) -> Result<(Backing, PathBuf), Error> {
    let stem = name.strip_suffix(".mmstats").unwrap_or(name);
    let tmp = dir.join(format!(".{stem}.tmp"));
    let create_err = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::Create { path, source }
    };
    // A leftover temporary file of ours (same pid and thread) is from a
    // crash or a reused pid; the name is ours to take.
    let _ = fs::remove_file(&tmp);
    // Mode 0600 until it is locked: nobody else can open it and take the
    // lock first.
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true) // O_EXCL: always a new inode, never a link's target
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(&tmp)
        .map_err(create_err(&tmp))?;
    let result = (|| {
        file.try_lock().map_err(io::Error::from)?;
        // Writing every byte allocates every page now, so a full tmpfs is an
        // error here and never a SIGBUS on a later store.
        file.write_all(image)?;
        // Readers of other users need 0644 (whatever the umask made of it).
        file.set_permissions(fs::Permissions::from_mode(0o644))?;
        Backing::map_file(file, image.len(), raw::H_STATE, WriterState::EXITED)
    })();
    let backing = match result {
        Ok(b) => b,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(Error::Create {
                path: tmp,
                source: e,
            });
        }
    };
    for n in 1..1000 {
        let path = if n == 1 {
            dir.join(name)
        } else {
            dir.join(format!("{stem}.{n}.mmstats"))
        };
        match fs::hard_link(&tmp, &path) {
            Ok(()) => {
                let _ = fs::remove_file(&tmp);
                return Ok((backing, path));
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // Only a file we could probe and found unlocked is dead;
                // if in doubt, take the next name.
                if crate::reader::probe_alive(&path) == Some(false) {
                    // A dead writer's file with our name (the pid was
                    // reused): replace it atomically with ours.
                    match fs::rename(&tmp, &path) {
                        Ok(()) => return Ok((backing, path)),
                        Err(e) => {
                            let _ = fs::remove_file(&tmp);
                            return Err(create_err(&path)(e));
                        }
                    }
                }
            }
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(create_err(&path)(e));
            }
        }
    }
    let _ = fs::remove_file(&tmp);
    Err(Error::Create {
        path: dir.join(name),
        source: io::Error::new(
            io::ErrorKind::AlreadyExists,
            "999 live files with this name",
        ),
    })
}

/// The name of the running program: the base name of `argv[0]`.
fn command_name() -> String {
    std::env::args_os()
        .next()
        .and_then(|a| {
            Path::new(&a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .filter(|n| !n.is_empty())
        .or_else(|| {
            fs::read_to_string("/proc/self/comm")
                .ok()
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Field 22 of `/proc/self/stat`: when this process started, in clock
/// ticks since boot. 0 if unknown.
pub(crate) fn process_start_ticks() -> u64 {
    fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| parse_start_ticks(&s))
        .unwrap_or(0)
}

/// Parses the start time out of a `/proc/PID/stat` line. The command name
/// (field 2) may hold spaces and parentheses, so fields are counted from
/// the last `)`.
pub(crate) fn parse_start_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    // Field 3 is the first after ')', so field 22 is the 20th.
    after.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates() {
        let name = render_template("{cmd}.{model}.{pid}.{tid}.mmstats", "my app", "Web").unwrap();
        assert!(name.starts_with("my_app.Web."), "{name}");
        assert!(name.ends_with(".mmstats"));
        for bad in [
            "{pid}{tid}x.txt",
            "a/{pid}{tid}.mmstats",
            "{nope}{pid}{tid}.mmstats",
            "{cmd.mmstats",
            ".x{pid}{tid}.mmstats",
            "{cmd}.{model}.{pid}.mmstats",
        ] {
            let err = render_template(bad, "c", "m").unwrap_err();
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    #[test]
    fn start_ticks_parse_with_odd_command_names() {
        let line = "123 (a) b (c)) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 4242 19 20";
        assert_eq!(parse_start_ticks(line), Some(4242));
        assert_eq!(parse_start_ticks("garbage"), None);
        assert!(process_start_ticks() > 0);
    }

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

    #[test]
    fn unsafe_directories_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
        let err = ensure_private_dir(dir.path()).unwrap_err();
        assert!(matches!(err, Error::UnsafeDir { .. }));
        assert!(err.to_string().contains(&dir.path().display().to_string()));
        let nested = dir.path().join("a/b");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        ensure_private_dir(&nested).unwrap();
        assert!(nested.is_dir());
    }
}
