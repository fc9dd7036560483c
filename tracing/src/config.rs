//! The layer's configuration ([`Builder`]) and the state its threads
//! share: the path table and the table of open spans.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mmstats::Options;

use tracing::span::Id;

use crate::paths::Paths;

/// Distinct paths per thread with fields of their own, by default.
pub const DEFAULT_MAX_PATHS: usize = 100;
/// Timer precision by default: 4 bits, within 2^-4 (6.25 %).
pub const DEFAULT_PRECISION: u8 = 4;
/// The name of busy timers: a path's is labelled `span.busy{path=<path>}`
/// ([`mmstats::keyed_label`], with the path as its one static label).
pub const BUSY: &str = "span.busy";
/// The name of idle timers.
pub const IDLE: &str = "span.idle";
/// The name of slow-entry timers.
pub const SLOW: &str = "span.slow";
/// The name of external-time timers.
pub const EXTERNAL: &str = "span.external";
/// The name of scheduled-delay timers.
pub const SCHEDULED: &str = "span.scheduled";
/// An entry at least this long is slow, by default: 1 ms.
pub const DEFAULT_SLOW_THRESHOLD: Duration = Duration::from_millis(1);

/// Configures the layer.
#[derive(Clone, Debug)]
pub struct Builder {
    /// Where and how files are made; its reserve is replaced by one that
    /// fits `max_paths`.
    pub(crate) files: Options,
    pub(crate) max_paths: usize,
    pub(crate) precision: u8,
    pub(crate) slow_ns: u64,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            files: Options::new(),
            max_paths: DEFAULT_MAX_PATHS,
            precision: DEFAULT_PRECISION,
            slow_ns: DEFAULT_SLOW_THRESHOLD.as_nanos() as u64,
        }
    }
}

impl Builder {
    /// The defaults: mmstats' default directory, no prefix,
    /// [`DEFAULT_MAX_PATHS`], [`DEFAULT_PRECISION`].
    pub fn new() -> Builder {
        Builder::default()
    }

    /// Where and how each thread's file is made: directory, file name
    /// template, command name and label prefix, as for any mmstats file.
    /// The room reserved in it follows [`Builder::max_paths`], not theirs.
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

    /// Distinct paths per thread that get fields of their own (see the
    /// crate documentation, "The cap").
    #[must_use]
    pub fn max_paths(mut self, n: usize) -> Self {
        self.max_paths = n;
        self
    }

    /// Timer precision in bits (relative error `2^-precision`).
    #[must_use]
    pub fn precision(mut self, precision: u8) -> Self {
        self.precision = precision;
        self
    }

    /// How long an entry must last to be slow (default
    /// [`DEFAULT_SLOW_THRESHOLD`], 1 ms): each slow entry is recorded in
    /// the path's `span.slow{path=...}` timer. A span over a future is entered once
    /// per poll, so for it these are the slow polls. `Duration::MAX`
    /// records none.
    #[must_use]
    pub fn slow_threshold(mut self, threshold: Duration) -> Self {
        self.slow_ns = u64::try_from(threshold.as_nanos()).unwrap_or(u64::MAX);
        self
    }
}

pub(crate) const SHARDS: usize = 16;

/// One open span's timing.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SpanState {
    pub(crate) path: u32,
    pub(crate) busy_ns: u64,
    pub(crate) idle_ns: u64,
    /// The parts of `idle_ns` spent suspended inside a
    /// [`crate::TimeWaits`] future, split at its wakes: before the wake
    /// (external) and after it (scheduled).
    pub(crate) external_ns: u64,
    pub(crate) scheduled_ns: u64,
    /// Whether any gap was split so.
    pub(crate) split: bool,
    /// The last creation, entry or exit.
    pub(crate) last: Instant,
    /// How many entries are open (a span may be entered while entered).
    pub(crate) depth: u32,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) id: u64,
    pub(crate) config: Builder,
    pub(crate) paths: Mutex<Paths>,
    pub(crate) spans: Vec<Mutex<HashMap<u64, SpanState>>>,
    pub(crate) first_error: Mutex<Option<String>>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub(crate) fn shard(&self, id: &Id) -> std::sync::MutexGuard<'_, HashMap<u64, SpanState>> {
        lock(&self.spans[id.into_u64() as usize % SHARDS])
    }
}
