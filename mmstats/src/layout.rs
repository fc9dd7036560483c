//! Laying a file out: the header, field table, string table and zero
//! values, written once into an image that becomes the file or its
//! private stand-in (`lay_out`); [`Plan`] writes fields and strings into
//! an image, for the writer's appended fields and the readers' fold,
//! which writes archives (`mmstats-read`).

use std::collections::HashSet;
use std::time::{SystemTime, UNIX_EPOCH};

use zerocopy::IntoBytes;

use crate::error::Error;
use crate::format::raw::{self, Header, Record, StrRef};
use crate::format::{self, WriterState};
use crate::options::Options;
use crate::procfs::process_start_ticks;
use crate::schema::{FieldDef, Schema};
use crate::sys;

/// A file laid out: its whole image, and what appending fields later needs.
pub(crate) struct Laid {
    /// The file's bytes: header, field table, strings, zero values.
    pub(crate) image: Vec<u8>,
    pub(crate) header: Header,
    pub(crate) strings_used: usize,
    pub(crate) values_used: usize,
    /// Every label in the file.
    pub(crate) labels: HashSet<String>,
    /// The fields to bind, in schema order.
    pub(crate) slots: Vec<SlotPlan>,
}

/// A field waiting to be bound: its definition and where its value lives.
pub(crate) struct SlotPlan {
    pub(crate) def: FieldDef,
    pub(crate) off: usize,
    pub(crate) len: usize,
}

/// Lays the file for `schema` out (header, field table, string table, zero
/// values), with the options' prefix, command and reserve.
pub(crate) fn lay_out<M>(schema: &Schema, options: &Options<M>) -> Result<Laid, Error> {
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
        lock_token: 0.into(),
        fallbacks: 0.into(),
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
    Ok(Laid {
        image,
        header,
        strings_used,
        values_used,
        labels,
        slots: fields
            .into_iter()
            .zip(offsets.into_iter().zip(value_lens))
            .map(|(def, (off, len))| SlotPlan { def, off, len })
            .collect(),
    })
}

/// Writes metadata (strings and field records) into a file image and keeps
/// the fill levels of its string table and value area.
#[derive(Debug)]
pub struct Plan<'a> {
    /// The image: at least up to the end of the string table.
    pub image: &'a mut Vec<u8>,
    /// The header the image is laid out by (its offsets and lengths).
    pub header: Header,
    /// String table bytes used so far.
    pub strings_used: usize,
    /// Value area bytes used so far.
    pub values_used: usize,
}

impl Plan<'_> {
    /// Appends `s` to the string table and returns where it is.
    pub fn push_string(&mut self, s: &str) -> StrRef {
        let off = self.header.strings_off.get() as usize + self.strings_used;
        self.image[off..off + s.len()].copy_from_slice(s.as_bytes());
        self.strings_used += s.len();
        StrRef::new(off as u32, s.len() as u32)
    }

    /// Writes record `index` for `f` and its strings; returns the value offset.
    pub fn write_field(&mut self, index: usize, f: &FieldDef, value_len: usize) -> usize {
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
