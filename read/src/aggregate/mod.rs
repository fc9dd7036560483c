//! Many stats files, one view: the layer under `pollstats` and `mmash`.
//!
//! A reader that runs for a long time wants "how many per second, right
//! now, over every writer", not one file at a time. This module gives it
//! in three steps:
//!
//! 1. [`Sources`] keeps a [`Reader`](crate::Reader) open for every stats
//!    file named by the same arguments [`discover`](crate::discover) takes.
//!    It learns of created, deleted and renamed files from file system
//!    events (`notify`, inotify on Linux) instead of listing every
//!    directory every time, and lists them all again now and then anyway,
//!    since inotify can drop events. It also watches where new source
//!    directories appear (`/dev/shm`, the nearest ancestor of a missing
//!    directory), so a new directory is read at the next sample. It keeps
//!    no descriptor per file, opens one inode once however many names it
//!    has, and keeps each owner within an [`OwnerBudget`].
//!    A file is who wrote it ([`FileId`]: owner and writer identity), not
//!    where it was found: one that leaves a sample and comes back resumes
//!    from its last reading, which samples carry as a *ghost* (stale,
//!    [`FileSample::gone`]) for [`GHOST_TTL`].
//! 2. [`Sources::sample`] reads every file once into a [`Sample`]. A file
//!    that cannot be read gives a [`Warning`] naming it; the rest are read.
//! 3. [`View::delta`] turns two samples into one value per series: fields
//!    picked by a [`Selector`] (labels, label prefixes, globs), grouped by
//!    label and optionally by a [`GroupBy`] (command, model, pid, file), and
//!    combined across files by an [`Aggregator`].
//!
//! # What a delta holds
//!
//! - **Counters:** the increase over the interval, by default summed over
//!   every file, live or dead (what a dead writer counted stays counted),
//!   each writer's file counted once whatever names it was found under.
//!   An increase is never negative: a file that vanished contributes
//!   nothing to the interval, a file that appeared contributes everything it
//!   counted, and a replaced file (same name, new inode) is one of each. A
//!   counter that went down in one file is a [`Warning`] naming the file,
//!   and adds nothing.
//! - **Gauges:** the current value, by default summed over live writers
//!   only, so a dead process's last `in_flight = 3` does not haunt the total
//!   ([`View::include_dead`] or an explicit aggregator counts dead ones).
//! - **Histograms and timers:** the distribution of the values recorded in
//!   the interval ([`HistogramSnapshot::since`](mmstats::HistogramSnapshot::since)),
//!   merged over every file.
//! - **Text:** the distinct values.
//!
//! Without a previous sample (the first row of a `vmstat`), counters and
//! histograms cover each file's whole life.
//!
//! # Example
//!
//! ```
//! use mmstats_read::aggregate::{SeriesValue, Sources, View};
//! use mmstats::{Counter, Stats};
//!
//! #[derive(Stats)]
//! struct Web {
//!     requests: Counter,
//! }
//!
//! # let dir = tempfile::tempdir().unwrap();
//! let a = Web::builder().dir(dir.path()).open()?;
//! a.requests.add(5);
//! mmstats::install_sigbus_guard()?;
//! let mut sources = Sources::new(&[dir.path()]);
//! let view = View::default(); // every counter, gauge and timer, summed
//!
//! let first = sources.sample();
//! a.requests.add(3);
//! let second = sources.sample();
//! let delta = view.delta(Some(&first), &second);
//! let requests = delta.get("requests", None).unwrap();
//! assert_eq!(requests.value, SeriesValue::Int(3));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod budget;
mod identity;
mod matcher;
mod retired;
mod sample;
mod select;
mod sources;
mod view;

pub use budget::OwnerBudget;
pub use identity::{FileId, GHOSTS_PER_OWNER, GHOST_TTL, TOMBSTONES_PER_OWNER, TOMBSTONE_TTL};
pub use sample::{FileSample, Sample};
pub use select::{Aggregator, GroupBy, ParseError, Selector};
pub use sources::{Sources, DEFAULT_RESCAN};
pub use view::{Delta, Series, SeriesKey, SeriesValue, View};

use std::fmt;
use std::path::PathBuf;

/// A problem with one file or path; the rest of the view goes on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    /// The file, directory or pattern.
    pub path: PathBuf,
    /// What went wrong.
    pub reason: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.reason)
    }
}
