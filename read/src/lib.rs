//! Readers for mmstats files: find them, read them safely whoever wrote
//! them, turn many of them into one view, and fold the files of dead
//! writers into archives without a count going backwards.
//!
//! Applications that only write stats depend on `mmstats`; this crate sits
//! one layer above it, for the programs that read (`slurpstats`,
//! `pollstats`, `mmash`, `check_mmash` are thin binaries over it).
//!
//! # Overview
//!
//! - [`install_sigbus_guard`], called once at program start, lets readers
//!   survive files truncated under them.
//! - [`discover`] (or [`scan`]) finds files; [`Reader`] maps one read-only
//!   and takes [`Snapshot`]s (or, polling, [`Reader::snapshot_shared`],
//!   which reads again only what changed); [`read_file`] does both once.
//! - [`aggregate`]: many files, one view. [`aggregate::Sources`] keeps
//!   readers over a watched set of files and turns two samples into
//!   per-series rates, gauges and latency windows (what `pollstats` and
//!   `mmash` show).
//! - [`retire`]: [`retire::fold`] folds the files of dead writers into one
//!   archive per command and model and removes them, while every reader of
//!   this crate keeps each total exact and never decreasing
//!   ([`retire::read_all`] for one-shot readers).
//! - [`tree`]: the span timers of `mmstats-tracing` as trees, over
//!   files or over one interval, as text or JSON.
//! - [`json`]: the JSON contract of format-spec.md §7.7 as `Serialize` types.
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
//!
//! # Which module holds what
//!
//! The arrows run one way, down this list: a module imports only modules
//! listed below it, and `mmstats` (the format and the SIGBUS guard).
//!
//! ```text
//! tree/         span timers as trees (slurpstats/pollstats --tree, mmash
//!               /api/v1/tree): model, interval trees, JSON form
//! aggregate/    many files, one view: watched sources (sources.rs, the
//!               event matcher in matcher.rs), samples and ghosts
//!               (sample.rs), identities (identity.rs), per-owner budgets
//!               (budget.rs), deltas (view.rs)
//! retire/       folding dead writers into archives (mod.rs, group.rs),
//!               and the readers' rule that counts each of them once
//!               (count.rs)
//! discover.rs   finding files safely: lstat, owner policy, own globbing
//! dirs.rs       the directories a default scan searches
//! json.rs       the JSON contract as Serialize types
//! reader.rs     Reader, Snapshot, ReadLimits: validate and copy out;
//!   reader/     cached.rs: incremental snapshots; layout.rs: interned
//!               field layouts
//! archive.rs    SourceId (who a writer file is), ArchiveInfo, archive names
//! owners.rs     user names of owners' uids
//! liveness.rs   is a file's writer alive: lock file or file lock
//! error.rs      ReadError
//! ```
//!
//! # Example
//!
//! ```
//! use mmstats::{Counter, Stats};
//!
//! #[derive(Stats)]
//! struct Jobs {
//!     done: Counter,
//! }
//!
//! # let dir = tempfile::tempdir().unwrap();
//! let jobs = Jobs::builder().dir(dir.path()).open()?;
//! jobs.done.add(3);
//!
//! mmstats_read::install_sigbus_guard()?;
//! let (files, _problems) = mmstats_read::discover(&[dir.path()]);
//! let snap = mmstats_read::read_file(&files[0])?;
//! assert_eq!(snap.field("done").unwrap().value, mmstats_read::Value::Counter(3));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations)]

pub mod aggregate;
mod archive;
mod dirs;
mod discover;
mod error;
pub mod json;
mod liveness;
pub mod owners;
mod reader;
pub mod retire;
pub mod tree;

pub use dirs::default_dirs;
pub use discover::{discover, scan, DiscoverError, Found};
pub use error::ReadError;
pub use reader::{
    probe_alive, read_file, Field, FileInfo, LivenessMemo, ReadLimits, Reader, Snapshot, Value,
    MAX_HELP_LEN, MAX_LABEL_LEN, MAX_NAME_LEN, MAX_OPEN_LOCKS, MAX_STATIC_LABELS_LEN,
};

// What every reader needs of the format, so that a reading program can
// name it all from this crate.
pub use mmstats::{
    format, hist, install_sigbus_guard, CombineError, HistogramSnapshot, Kind, Layout, LayoutError,
    Unit, WriterState, DIR_ENV, MAX_MAPPINGS,
};
