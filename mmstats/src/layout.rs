//! Laying a file out: the header, field table, string table and zero
//! values, written once into an image that becomes the file or its
//! private stand-in.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use zerocopy::IntoBytes;

use crate::error::Error;
use crate::file::{SlotPlan, StatsFile};
use crate::format::raw::{self, Header, Record, StrRef};
use crate::format::{self, WriterState};
use crate::options::Options;
use crate::procfs::process_start_ticks;
use crate::schema::{FieldDef, Schema};
use crate::sys::{self, Backing};

impl StatsFile {
    /// Lays the file out (header, field table, string table, zero values)
    /// and hands the finished image to `make_backing`, which publishes it or
    /// copies it into private memory.
    pub(crate) fn layout<M>(
        schema: &Schema,
        options: &Options<M>,
        make_backing: impl FnOnce(&mut [u8]) -> Result<(Backing, Option<PathBuf>), Error>,
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
        let (backing, path) = make_backing(&mut image)?;
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
}

/// Writes metadata into a file image and keeps the fill levels.
pub(crate) struct Plan<'a> {
    pub(crate) image: &'a mut Vec<u8>,
    pub(crate) header: Header,
    pub(crate) strings_used: usize,
    pub(crate) values_used: usize,
}

impl Plan<'_> {
    pub(crate) fn push_string(&mut self, s: &str) -> StrRef {
        let off = self.header.strings_off.get() as usize + self.strings_used;
        self.image[off..off + s.len()].copy_from_slice(s.as_bytes());
        self.strings_used += s.len();
        StrRef::new(off as u32, s.len() as u32)
    }

    /// Writes record `index` for `f` and its strings; returns the value offset.
    pub(crate) fn write_field(&mut self, index: usize, f: &FieldDef, value_len: usize) -> usize {
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
