//! What a recorder is configured with ([`Builder`]), and the state its
//! threads share: descriptions, the key table, the first error.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use metrics::Unit;
use mmstats::hist::{DEFAULT_HISTOGRAM_MAX_BITS, DEFAULT_TIMER_MAX_BITS};
use mmstats::{FieldDef, Layout, Options};

/// Fields a thread's file has room for by default, beyond its own two.
pub const DEFAULT_RESERVE_FIELDS: usize = 512;
/// Bytes of strings, and bytes of values, reserved by default (512 KiB
/// each). A counter or gauge takes 8 value bytes; a histogram at the
/// default precision about 8 KiB.
pub const DEFAULT_RESERVE_BYTES: usize = 512 * 1024;
/// Default histogram precision: 4 bits, values kept within 2^-4 (6.25 %).
pub const DEFAULT_PRECISION: u8 = 4;
/// The default model name of the recorder's files.
pub const DEFAULT_MODEL: &str = "metrics";
/// The label of the counter of updates that found no field (see the crate
/// documentation, "Room").
pub const DROPPED_LABEL: &str = "mmstats_metrics.dropped";
/// The label of the counter of histogram values clamped into range.
pub const CLAMPED_LABEL: &str = "mmstats_metrics.clamped";

/// Configures a recorder: directory, prefix, model name, histogram
/// precision and scales, and the room reserved for fields.
#[derive(Clone, Debug)]
pub struct Builder {
    /// Where and how files are made; its reserve is replaced by ours.
    pub(crate) files: Options,
    pub(crate) model: String,
    pub(crate) precision: u8,
    pub(crate) reserve_fields: usize,
    pub(crate) reserve_bytes: usize,
    pub(crate) scales: HashMap<String, (f64, String)>,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            files: Options::new(),
            model: DEFAULT_MODEL.to_owned(),
            precision: DEFAULT_PRECISION,
            reserve_fields: DEFAULT_RESERVE_FIELDS,
            reserve_bytes: DEFAULT_RESERVE_BYTES,
            scales: HashMap::new(),
        }
    }
}

impl Builder {
    /// The defaults: mmstats' default directory, no prefix, model
    /// [`DEFAULT_MODEL`], precision [`DEFAULT_PRECISION`], room for
    /// [`DEFAULT_RESERVE_FIELDS`] fields.
    pub fn new() -> Builder {
        Builder::default()
    }

    /// Where and how each thread's file is made: directory, file name
    /// template, command name and label prefix, as for any mmstats file.
    /// Their reserved room is [`Builder::reserve`]'s, not theirs.
    #[must_use]
    pub fn files(mut self, options: Options) -> Self {
        self.files = options;
        self
    }

    /// The directory of the files (default: [`mmstats::default_dir`]); a
    /// shortcut for [`Options::dir`] through [`Builder::files`].
    #[must_use]
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.files = self.files.dir(dir);
        self
    }

    /// A prefix put before every field label; a shortcut for
    /// [`Options::prefix`] through [`Builder::files`].
    #[must_use]
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.files = self.files.prefix(prefix);
        self
    }

    /// The model name of the files (default [`DEFAULT_MODEL`]). Two
    /// recorders used on one thread need two names: each makes its own file.
    #[must_use]
    pub fn model(mut self, model: &str) -> Self {
        self.model = model.to_owned();
        self
    }

    /// Histogram and timer precision in bits: values are kept within a
    /// relative error of `2^-precision`; each bit doubles a histogram's
    /// size. Checked when a file is made (at most
    /// [`mmstats::hist::MAX_PRECISION`]).
    #[must_use]
    pub fn histogram_precision(mut self, precision: u8) -> Self {
        self.precision = precision;
        self
    }

    /// Records histogram `name` as `value * scale`, rounded to the nearest
    /// integer, in a histogram whose unit is `unit`: for example
    /// `histogram_scale("ratio", 1000.0, "per-mille")`. Overrides the unit
    /// given by `describe_histogram`.
    #[must_use]
    pub fn histogram_scale(mut self, name: &str, scale: f64, unit: &str) -> Self {
        self.scales
            .insert(name.to_owned(), (scale, unit.to_owned()));
        self
    }

    /// Room in each thread's file for `fields` more fields, with `bytes` of
    /// strings and `bytes` of values (see the crate documentation, "Room").
    #[must_use]
    pub fn reserve(mut self, fields: usize, bytes: usize) -> Self {
        self.reserve_fields = fields;
        self.reserve_bytes = bytes;
        self
    }

    pub(crate) fn options(&self) -> Options {
        self.files
            .clone()
            .reserve(self.reserve_fields, self.reserve_bytes)
    }

    /// How a histogram named `name`, described with `unit`, stores its
    /// values: the field and the factor each `f64` is multiplied by.
    pub(crate) fn histogram_def(&self, label: &str, name: &str, unit: Option<Unit>) -> HistDef {
        if let Some((scale, unit)) = self.scales.get(name) {
            let def = FieldDef::histogram(label, Layout::histogram())
                .layout(self.precision, DEFAULT_HISTOGRAM_MAX_BITS)
                .unit(unit);
            return HistDef { def, scale: *scale };
        }
        let timer_scale = match unit {
            Some(Unit::Seconds) => Some(1e9),
            Some(Unit::Milliseconds) => Some(1e6),
            Some(Unit::Microseconds) => Some(1e3),
            Some(Unit::Nanoseconds) => Some(1.0),
            _ => None,
        };
        if let Some(scale) = timer_scale {
            let def = FieldDef::timer(label, Layout::timer())
                .layout(self.precision, DEFAULT_TIMER_MAX_BITS);
            return HistDef { def, scale };
        }
        let mut def = FieldDef::histogram(label, Layout::histogram())
            .layout(self.precision, DEFAULT_HISTOGRAM_MAX_BITS);
        if let Some(unit) = unit {
            def = def.unit(unit.as_str());
        }
        HistDef { def, scale: 1.0 }
    }
}

/// A histogram's field and the factor its values are multiplied by.
pub(crate) struct HistDef {
    pub(crate) def: FieldDef,
    pub(crate) scale: f64,
}

/// A `describe_*` call: unit and help of a metric name.
#[derive(Clone, Debug, Default)]
pub(crate) struct Description {
    pub(crate) unit: Option<Unit>,
    pub(crate) help: String,
}

/// What every thread of one recorder shares. Only the cold paths (a key's
/// first use on a thread, `describe_*`) lock it.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Tells this recorder's entries in thread-local tables from others'.
    pub(crate) id: u64,
    pub(crate) config: Builder,
    pub(crate) descriptions: Mutex<HashMap<String, Description>>,
    /// The first error met making a thread's file or a field.
    pub(crate) first_error: Mutex<Option<String>>,
}

impl Shared {
    pub(crate) fn description(&self, name: &str) -> Description {
        lock(&self.descriptions)
            .get(name)
            .cloned()
            .unwrap_or_default()
    }

    pub(crate) fn note_error(&self, err: String) {
        lock(&self.first_error).get_or_insert(err);
    }
}

/// Locks `m`, also after a panic elsewhere (the data is plain tables).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The field label of a key: its name, then its labels in order as
/// `{k=v,k2=v2}`, with `\`, `,`, `}` and `=` in keys and values escaped by a
/// backslash, a newline written as `\n` and another control character as
/// `\xHH` ([`mmstats::keyed_label`], the convention every mmstats adapter
/// follows).
pub fn field_label(name: &str, labels: &[(&str, &str)]) -> String {
    mmstats::keyed_label(name, labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped() {
        assert_eq!(field_label("a.b", &[]), "a.b");
        assert_eq!(
            field_label("req", &[("route", "/a"), ("m", "x=y,}\\\n")]),
            "req{route=/a,m=x\\=y\\,\\}\\\\\\n}"
        );
    }

    #[test]
    fn histogram_units_pick_the_scale() {
        let b = Builder::new().histogram_scale("ratio", 1000.0, "per-mille");
        assert_eq!(b.histogram_def("l", "ratio", None).scale, 1000.0);
        let secs = b.histogram_def("l", "lat", Some(Unit::Seconds));
        assert_eq!((secs.def.kind(), secs.scale), (mmstats::Kind::Timer, 1e9));
        let ms = b.histogram_def("l", "lat", Some(Unit::Milliseconds));
        assert_eq!(ms.scale, 1e6);
        let bytes = b.histogram_def("l", "size", Some(Unit::Bytes));
        assert_eq!(
            (bytes.def.kind(), bytes.scale),
            (mmstats::Kind::Histogram, 1.0)
        );
    }
}
