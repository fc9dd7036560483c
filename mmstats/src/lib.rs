//! mmstats is "/proc for your application": stats that other programs read
//! from memory-mapped files, at the cost of a plain memory store.
//!
//! An application declares a *stats model*, a struct of metric handles, and
//! derives [`Stats`] for it. Each writer thread opens its own instance, which
//! lays the struct out in its own file (by default under `/dev/shm`) and
//! updates it with relaxed atomic stores: no lock, no syscall and no
//! allocation on the hot path. Separate programs (`slurpstats`, `pollstats`,
//! `mmash`, and the `mmstats-read` crate they are built on) find those files
//! and read them without disturbing the writers.
//!
//! This is the crate applications depend on: the file format and the
//! writer, with lean dependencies (`libc`, `memmap2`, `zerocopy`, the
//! derive). Reading, discovery, aggregation and the fold of dead writers
//! live one layer up, in `mmstats-read`.
//!
//! # Overview
//!
//! - Metric handles: [`Counter`] (`u64` up only), [`Gauge`] (`i64`),
//!   [`GaugeF64`], [`Text`] (fixed-capacity UTF-8), [`Constant`] (written
//!   once), [`Timer`] and [`Histogram`] (log-linear buckets, mergeable).
//! - Opening: [`Stats::open`], [`Stats::builder`] for the directory, file name
//!   template and label prefix, and [`Stats::open_or_private`], which never
//!   fails: it falls back to process-private memory and says why
//!   ([`fallbacks`] counts those).
//! - Per-thread access from anywhere: [`per_thread!`] declares a
//!   [`PerThread`] static; it also gives timer guards that may cross
//!   `.await` points, a request guard that records response time and
//!   duration ([`PerThread::start_request`]), and a future adapter
//!   ([`PerThread::instrument`]) that records wall and busy time and, when
//!   asked, tells waiting from working: external time, scheduled delay
//!   (through a [`WakeClock`], reusable by other adapters), slow polls and
//!   thread CPU time. [`Timer::start_cpu`] times a thread's CPU use.
//! - Run-time schemas: [`StatsFile`] with [`Schema`] and [`FieldDef`], for
//!   fields only known at run time or appended to a live file.
//! - The format itself, for readers and for writers in other languages:
//!   [`format`](mod@format) (every byte offset), [`hist`] (histogram layout, snapshots
//!   and quantiles), [`protocol`] (the memory-ordering protocols of both
//!   sides), [`layout::Plan`] (writing an image), and [`guard`], the SIGBUS
//!   guard that readers map files through.
//!
//! # Architecture
//!
//! One file per writer thread, and readers never write. A model is `Send`
//! but not `Sync`, so the compiler keeps one writer per file. Each 8-byte
//! value is one relaxed atomic word; text is double-buffered under a
//! sequence counter, so readers copy the last complete string while the
//! writer fills the other buffer, and never see it torn. A file is written
//! whole under a temporary name and linked into place, so a reader never
//! sees it half-made. Each writer process holds one exclusive `flock` on one
//! lock file per directory, which every file of the process names: that is
//! how readers tell live writers from dead ones. A thread's file is parked
//! when its model is dropped and taken over by the next thread of the
//! process that opens the same model. The byte layout is public and
//! specified in `format-spec.md` at the root of the repository;
//! [`format`](mod@format) holds every offset. The memory-ordering protocols
//! (text, histograms, appended fields) live in one module, [`protocol`],
//! and `./test.sh` checks them with `loom` models, which run those same
//! functions over every interleaving and every value the memory model
//! allows a load to return.
//!
//! A child made by `fork()` gets files of its own for everything its parent
//! had open, mapped at the same addresses, so inherited handles count into
//! the child's files; a file that another process truncates under a live
//! writer is replaced at the next stats open instead of killing it
//! (`format-spec.md` §6.7, §6.9).
//!
//! # Which module holds what
//!
//! The arrows run one way, down this list: a module imports only modules
//! listed below it (the crate root's re-exports aside).
//!
//! ```text
//! the writer
//!   per_thread/ per_thread!, timer and request guards across threads;
//!               instrument.rs: futures timed as they run
//!   wake_clock.rs  a waker wrapper splitting waits at the wake
//!   metrics.rs  the handles: Counter, Gauge, Text, Timer, ...
//!   file.rs     StatsFile, Slot, Options::open: a live file and its fields
//!   registry.rs per-process pool of files for reuse, lock files, exit
//!               marking, fallback counts, re-homing files after fork()
//!               and after truncation
//!   layout.rs   laying a schema out into a file image; Plan
//!   publish.rs  directory checks, publication under the final name
//!   options.rs  Options / Builder, file name templates
//!   schema.rs   FieldDef, Schema: what a model is made of
//!   dirs.rs     directory policy: MMSTATS_DIR, default and fallback dirs
//!   procfs.rs   /proc parsing (command name, process start)
//!   sys/        (unsafe) shared writer memory as atomic words; held.rs: a
//!               lock held across fork(); cpu.rs: the thread's CPU clock
//!   guard/      (unsafe) the SIGBUS guard: its registry of reader and
//!               writer mappings, ReadMap for readers, writer repair
//!   error.rs    Error
//!
//! the format (no I/O)
//!   protocol/   the memory-ordering protocols, once, for writer and reader
//!               (checked by loom in protocol/models.rs)
//!   hist.rs     histogram layout, snapshots, quantiles, merge and windows
//!   format/     Kind, Unit, WriterState, limits, lock file names;
//!               raw.rs: header and record as #[repr(C)] little-endian
//!               structs, every byte offset
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
//! // Any other process can now read the file: `slurpstats DIR`, or the
//! // `mmstats-read` crate's `discover` and `read_file`.
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs, missing_debug_implementations)]

// Values are 8-byte atomic words, and readers rely on 8-byte relaxed loads
// of read-only memory being plain loads: both need a 64-bit target.
#[cfg(not(all(target_pointer_width = "64", target_has_atomic = "64")))]
compile_error!("mmstats needs a 64-bit target with 64-bit atomics");

mod dirs;
mod error;
mod file;
pub mod format;
#[allow(unsafe_code)]
pub mod guard;
pub mod hist;
pub mod layout;
mod metrics;
mod options;
mod per_thread;
mod procfs;
pub mod protocol;
mod publish;
mod registry;
mod schema;
#[allow(unsafe_code)]
mod sys;
pub mod wake_clock;

pub use dirs::{default_dir, fallback_dir, shm_root, DIR_ENV, SCAN_ROOT_ENV, SHM};
pub use error::Error;
pub use file::StatsFile;
pub use format::{Kind, Unit, WriterState};
pub use guard::{install_sigbus_guard, MAX_MAPPINGS};
pub use hist::{CombineError, HistogramSnapshot, Layout, LayoutError};
pub use metrics::{
    Constant, Counter, CpuTimerGuard, Gauge, GaugeF64, Histogram, Text, Timer, TimerGuard,
};
pub use options::{sanitize, Builder, Options, DEFAULT_TEMPLATE};
pub use per_thread::{
    Instrumented, PerThread, PerThreadTimerGuard, RequestGuard, DEFAULT_SLOW_POLL_THRESHOLD,
};
pub use registry::{fallbacks, Fallbacks};
pub use schema::{keyed_label, FieldDef, Schema};
pub use sys::{geteuid, thread_cpu_time};
pub use wake_clock::WakeClock;

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
