//! What a reading returns: [`Snapshot`] (a file's [`FileInfo`] and its
//! [`Field`]s with their [`Value`]s), and the [`ReadLimits`] that bound
//! what one file may cost.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use mmstats::format::{self, Kind, Unit, WriterState};
use mmstats::hist::HistogramSnapshot;

use super::layout::FieldLayout;

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
    /// Whether the writer's lock is held right now: for a 1.1 file, the
    /// writing process's lock file; for a 1.0 file, the file's own lock. A
    /// file whose thread ended while its process lives on (parked for
    /// reuse, spec §2.7) reads `alive` with state `Exited`: see
    /// [`FileInfo::writing`].
    pub alive: bool,
    /// What the writer last said of itself. `Active` with `alive == false`
    /// means the writer died without closing the file.
    pub state: WriterState,
    /// How many stats instances of the writer's process fell back to
    /// private memory (their stats are missing); 0 in a 1.0 file.
    pub fallbacks: u64,
    /// The token of the writing process's lock file (spec §2.4); 0 in a 1.0
    /// file and in an archive.
    pub lock_token: u64,
    /// The file's owner (uid), as `fstat` gave it when it was opened.
    pub owner: u32,
    /// What an archive holds (state [`WriterState::Archive`], spec §2.8);
    /// `None` for a writer's file.
    pub archive: Option<std::sync::Arc<crate::archive::ArchiveInfo>>,
}

impl FileInfo {
    /// Whether a live writer is writing the file now: its lock is held and
    /// it has not marked the file exited. What readers count as a live
    /// writer (gauges of other files are a dead writer's last word).
    pub fn writing(&self) -> bool {
        self.alive && self.state != WriterState::Exited && self.state != WriterState::Archive
    }

    /// Whether this is an archive of folded writers (spec §2.8).
    pub fn is_archive(&self) -> bool {
        self.archive.is_some()
    }

    /// The identity of this file as a fold records it (spec §2.8): stable
    /// once its writer is dead, and unique over time.
    pub fn source_id(&self) -> crate::archive::SourceId {
        crate::archive::SourceId::new(
            self.lock_token,
            self.created,
            self.process_start,
            self.pid,
            self.path
                .file_name()
                .map(|n| n.as_encoded_bytes())
                .unwrap_or_default(),
        )
    }

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
#[derive(Debug)]
#[non_exhaustive]
pub struct Snapshot {
    /// The file and its writer.
    pub info: FileInfo,
    /// The fields, in the file's order.
    pub fields: Vec<Field>,
    /// Fields of kinds this reader does not know (from a newer minor
    /// version), skipped.
    pub skipped: usize,
    /// Labels of the fields ignored because an earlier field had the same
    /// label (the first one wins), one entry per ignored field. Writers
    /// never make such files; a reader should warn about them.
    pub duplicates: Vec<String>,
    /// The labels and kinds of `fields` as read, for the aggregation
    /// layer; a clone has none (its fields may be changed).
    pub(crate) layout: Option<FieldLayout>,
}

impl Clone for Snapshot {
    fn clone(&self) -> Snapshot {
        Snapshot {
            info: self.info.clone(),
            fields: self.fields.clone(),
            skipped: self.skipped,
            duplicates: self.duplicates.clone(),
            layout: None,
        }
    }
}

impl PartialEq for Snapshot {
    /// Equal when what was read is equal.
    fn eq(&self, other: &Snapshot) -> bool {
        self.info == other.info
            && self.fields == other.fields
            && self.skipped == other.skipped
            && self.duplicates == other.duplicates
    }
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

/// What one stats file may cost a reader (format-spec.md §7.4, "Reader
/// limits"). A local user can plant a valid but huge sparse file that costs
/// its owner nothing; these bound what reading it costs. The format's own
/// limits apply whatever these are set to.
///
/// ```
/// let mut limits = mmstats_read::ReadLimits::default();
/// limits.max_text_capacity = 1 << 20; // read texts of up to 1 MiB
/// # let _ = limits;
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReadLimits {
    /// Largest file mapped, in bytes; a larger one is an error for the file
    /// ([`ReadError::Limit`](crate::ReadError::Limit)). Default and maximum: 2^30 (1 GiB), the
    /// format's own limit.
    pub max_file_len: u64,
    /// Largest capacity of a text or constant value that is read, in bytes;
    /// a larger one reads as [`Value::Unavailable`], and the rest of the
    /// file is read. Default: 64 KiB (2^16). (The format allows 2^20.)
    pub max_text_capacity: u64,
    /// Most fields (`field_count`) in one file; more is an error for the
    /// file. Default: 100 000.
    pub max_fields: u64,
    /// Most bytes of strings and values decoded per snapshot; more is an
    /// error for the file. Default: 64 MiB (2^26). A file's own length
    /// bounds this too.
    pub max_decoded: u64,
}

impl Default for ReadLimits {
    fn default() -> ReadLimits {
        ReadLimits {
            max_file_len: format::MAX_FILE_LEN,
            max_text_capacity: 1 << 16,
            max_fields: 100_000,
            max_decoded: 1 << 26,
        }
    }
}
