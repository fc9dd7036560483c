//! mmstats is "/proc for your application": stats that other programs read
//! from memory-mapped files, at the cost of a plain memory store.
//!
//! An application declares a *stats model*, a struct of metric handles, and
//! derives [`Stats`] for it. Each writer thread opens its own instance, which
//! lays the struct out in its own file (by default under `/dev/shm`) and
//! updates it with relaxed atomic stores: no lock, no syscall and no
//! allocation on the hot path. Separate programs (`slurpstats`, and this
//! crate's [reader API](Reader)) find those files and read them without
//! disturbing the writers.
//!
//! # Overview
//!
//! - Metric handles: [`Counter`] (`u64` up only), [`Gauge`] (`i64`),
//!   [`GaugeF64`], [`Text`] (fixed-capacity UTF-8), [`Constant`] (written
//!   once), [`Timer`] and [`Histogram`] (log-linear buckets, mergeable).
//! - Opening: [`Stats::open`], [`Stats::builder`] for the directory, file name
//!   template and label prefix, and [`Stats::open_or_private`], which never
//!   fails: it falls back to process-private memory and says why.
//! - Per-thread access from anywhere: [`per_thread!`] declares a
//!   [`PerThread`] static; it also gives timer guards that may cross
//!   `.await` points, and a future adapter that records wall and busy time.
//! - Reading: [`install_sigbus_guard`], called once at program start,
//!   lets readers survive files truncated under them; [`discover`] (or
//!   [`scan`]) finds files, [`Reader`] maps one read-only and takes
//!   [`Snapshot`]s (or, polling, [`Reader::snapshot_shared`], which reads
//!   again only what changed); [`HistogramSnapshot`] gives quantiles,
//!   merges files and subtracts snapshots to get a window.
//! - Many files, one view: [`aggregate`] keeps readers open over a
//!   watched set of files and turns two samples into per-series rates,
//!   gauges and latency windows (what `pollstats` shows).
//! - Bounded directories: [`retire::fold`] folds the files of dead writers
//!   into one archive per command and model and removes them, while every
//!   reader of this crate keeps each total exact and never decreasing
//!   ([`retire::read_all`] for one-shot readers).
//!
//! # Reading files other users own
//!
//! Readers may run as root over `/dev/shm/mmstats-*` directories that any
//! user can create and fill, so every file is treated as hostile:
//!
//! - Entries are examined with `lstat` and opened with `O_NOFOLLOW |
//!   O_NONBLOCK | O_NOCTTY`: a symbolic link, device, FIFO or socket under
//!   a stats name is skipped, never opened, and the type is checked again
//!   with `fstat` before the file is mapped. Error messages never quote a
//!   file's bytes, nor the size of a file not known to be a stats file.
//! - A *default scan* ([`scan`] with no paths) reads a directory only if it
//!   is not a symbolic link and not writable by group or others, and only
//!   the files in it owned by the directory's owner ([`Found::open`] checks
//!   that again on the opened file). Problems in other users' directories
//!   are marked [`DiscoverError::foreign`] (and [`Found::foreign`]), for a
//!   tool to count rather than report one by one.
//! - `**` in a pattern never follows a symbolic link and never visits a
//!   directory twice.
//! - [`ReadLimits`] bound what one file can cost (mapped length, text
//!   capacity read, field count, bytes decoded per snapshot); pass them to
//!   [`Reader::open_with`] or [`Found::open`].
//! - Run-time schemas: [`StatsFile`] with [`Schema`] and [`FieldDef`], for
//!   fields only known at run time or appended to a live file.
//!
//! # Architecture
//!
//! One file per writer thread, and readers never write. A model is `Send`
//! but not `Sync`, so the compiler keeps one writer per file. Each 8-byte
//! value is one relaxed atomic word; text is double-buffered under a
//! sequence counter, so readers copy the last complete string while the
//! writer fills the other buffer, and never see it torn. A file is written whole under a temporary name
//! and linked into place, so a reader never sees it half-made. Each writer
//! process holds one exclusive `flock` on one lock file per directory, which
//! every file of the process names: that is how readers tell live writers
//! from dead ones. A thread's file is parked when its model is dropped and
//! taken over by the next thread of the process that opens the same model. The byte layout is public and specified
//! in `format-spec.md` at the root of the repository; [`format`](mod@format) holds every
//! offset. The memory-ordering protocols (text, histograms, appended
//! fields) live in one internal module, and `./test.sh` checks them with
//! `loom` models, which run those same functions over every interleaving
//! and every value the memory model allows a load to return.
//!
//! A child made by `fork()` gets files of its own for everything its parent
//! had open, mapped at the same addresses, so inherited handles count into
//! the child's files; a file that another process truncates under a live
//! writer is replaced at the next stats open instead of killing it
//! (`format-spec.md` §6.7, §6.9).
//!
//! # Which module holds what
//!
//! ```text
//! format/       the file format's vocabulary: Kind (one table: code, name,
//!   mod.rs      shape, value length), Unit, WriterState, limits
//!   raw.rs      (hidden) header and record as #[repr(C)] little-endian
//!               structs; every byte offset
//! protocol.rs   the memory-ordering protocols, once, for writer and reader
//!               (checked by loom)
//! hist.rs       histogram layout, snapshots, quantiles, merge and windows
//!
//! writer side
//!   schema.rs   FieldDef, Schema: what a model is made of
//!   options.rs  Options / Builder, file name templates
//!   layout.rs   laying a schema out into a file image
//!   publish.rs  directory checks, publication under the final name
//!   file.rs     StatsFile, Slot: a live file and its fields
//!   registry.rs per-process pool of files for reuse, lock files, exit
//!               marking, fallback counts, re-homing files after fork()
//!               and after truncation
//!   metrics.rs  the handles: Counter, Gauge, Text, Timer, ...
//!   per_thread.rs  per_thread!, timer guards across threads, futures
//!   procfs.rs   /proc parsing (command name, process start)
//!   sys.rs      (unsafe) shared writer memory as atomic words
//!
//! shared by both
//!   dirs.rs     directory policy: MMSTATS_DIR, default and fallback dirs
//!   liveness.rs is a file's writer alive: lock file or file lock
//!   error.rs    Error (writers), ReadError (readers)
//!
//! reader side
//!   discover.rs finding files safely: lstat, owner policy, own globbing
//!   reader.rs   Reader, Snapshot, ReadLimits: validate and copy out
//!   sigbus.rs   (unsafe) the SIGBUS guard and its registry of reader and
//!               writer mappings
//!   json.rs     the JSON contract as Serialize types
//!   aggregate/  many files, one view: watched sources, samples, deltas
//!   retire.rs   folding dead writers into archives, and the readers'
//!               rule that counts each of them once
//! ```
//!
//! # Example
//!
//! ```
//! use mmstats::{Counter, Gauge, Stats, Text};
//!
//! /// Request statistics of the web front end.
//! #[derive(Stats)]
//! #[stats(prefix = "web.")]
//! struct WebStats {
//!     /// Responses with a 2xx status.
//!     #[stat(label = "status.2xx")]
//!     ok: Counter,
//!     /// Requests being served right now.
//!     in_flight: Gauge,
//!     /// What this thread is doing.
//!     state: Text<64>,
//! }
//!
//! # let dir = tempfile::tempdir().unwrap();
//! let stats = WebStats::builder().dir(dir.path()).open()?;
//! stats.ok.incr();
//! stats.in_flight.set(3);
//! stats.state.set("reading request");
//!
//! // Any other process can now read the file (once, at its start, it
//! // installs the guard that turns a truncated file into an error).
//! mmstats::install_sigbus_guard()?;
//! let (files, _problems) = mmstats::discover(&[dir.path()]);
//! let snap = mmstats::read_file(&files[0])?;
//! assert_eq!(snap.field("web.status.2xx").unwrap().value, mmstats::Value::Counter(1));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs, missing_debug_implementations)]

// Values are 8-byte atomic words, and readers rely on 8-byte relaxed loads
// of read-only memory being plain loads: both need a 64-bit target.
#[cfg(not(all(target_pointer_width = "64", target_has_atomic = "64")))]
compile_error!("mmstats needs a 64-bit target with 64-bit atomics");

pub mod aggregate;
mod dirs;
mod discover;
mod error;
mod file;
pub mod format;
pub mod hist;
pub mod json;
mod layout;
mod liveness;
mod metrics;
mod options;
mod per_thread;
mod procfs;
mod protocol;
mod publish;
mod reader;
mod registry;
pub mod retire;
mod schema;
#[allow(unsafe_code)]
mod sigbus;
#[allow(unsafe_code)]
mod sys;

pub use dirs::{default_dir, default_dirs, DIR_ENV};
pub use discover::{discover, scan, DiscoverError, Found};
pub use error::{Error, ReadError};
pub use file::StatsFile;
pub use format::{Kind, Unit, WriterState};
pub use hist::{CombineError, HistogramSnapshot, Layout, LayoutError};
pub use metrics::{Constant, Counter, Gauge, GaugeF64, Histogram, Text, Timer, TimerGuard};
pub use options::{Builder, Options, DEFAULT_TEMPLATE};
pub use per_thread::{Instrumented, PerThread, PerThreadTimerGuard};
pub use reader::{
    probe_alive, read_file, Field, FileInfo, LivenessMemo, ReadLimits, Reader, Snapshot, Value,
};
pub use registry::{fallbacks, Fallbacks};
pub use schema::{FieldDef, Schema};
pub use sigbus::{install_sigbus_guard, MAX_MAPPINGS};

/// What generated code needs and users do not: the bound slots a model is
/// made from. Not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::file::{Slot, Slots};
}

mod sealed {
    /// Keeps [`StatField`](super::StatField) implemented only by this
    /// crate's handle types: the file layout of each is part of the format.
    pub trait Sealed {}
}

/// Derives [`Stats`] for a struct of metric handles.
///
/// - `#[stat(label = "...")]` on a field sets its label (default: the field
///   name); `#[stat(unit = "...")]` its unit; `#[stat(precision = P,
///   max_bits = M)]` a histogram or timer's bucket layout.
/// - `#[stats(prefix = "...")]` on the struct prefixes every label;
///   `#[stats(model = "...")]` names the model (default: the struct name).
/// - Doc comments become the help text stored in the file.
pub use mmstats_derive::Stats;

/// A stats model: a struct of metric handles laid out in one file.
///
/// Derive it with `#[derive(Stats)]`; the methods here then open it.
pub trait Stats: Sized + 'static {
    /// The model's fields, in declaration order. Generated by the derive.
    #[doc(hidden)]
    fn schema() -> Schema;

    /// Builds the model from the bound slots, one per schema field, in order.
    /// Called by the opening methods; generated by the derive.
    #[doc(hidden)]
    fn bind(slots: &mut __private::Slots) -> Self;

    /// Opens this thread's stats file in the default directory.
    fn open() -> Result<Self, Error> {
        Self::builder().open()
    }

    /// A builder to choose the directory, file name template or prefix.
    fn builder() -> Builder<Self> {
        Builder::default()
    }

    /// Opens this thread's stats file, or, if it cannot be created,
    /// process-private memory; the error, if any, says why.
    fn open_or_private() -> (Self, Option<Error>) {
        Self::builder().open_or_private()
    }
}

/// A metric handle type that can be a field of a stats model: the types of
/// this crate ([`Counter`], [`Gauge`], ...). Sealed: a new kind of field is
/// a change to the file format, not something a user implements.
pub trait StatField: Sized + sealed::Sealed {
    /// The field definition for a field of this type labelled `label`.
    fn def(label: &str) -> FieldDef;

    /// The handle for a slot laid out from [`StatField::def`].
    #[doc(hidden)]
    fn bind(slot: __private::Slot) -> Self;
}
