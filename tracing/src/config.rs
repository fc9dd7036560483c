//! The layer's configuration ([`Builder`]) and the state its threads
//! share: the path table and the table of open spans.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

use mmstats::Options;

use tracing::span::Id;

use crate::paths::Paths;

/// Distinct paths per thread with fields of their own, by default.
pub const DEFAULT_MAX_PATHS: usize = 100;
/// Timer precision by default: 4 bits, within 2^-4 (6.25 %).
pub const DEFAULT_PRECISION: u8 = 4;
/// The label prefix of busy timers, before the path.
pub const BUSY_PREFIX: &str = "span.busy/";
/// The label prefix of idle timers, before the path.
pub const IDLE_PREFIX: &str = "span.idle/";

/// Configures the layer.
#[derive(Clone, Debug)]
pub struct Builder {
    /// Where and how files are made; its reserve is replaced by one that
    /// fits `max_paths`.
    pub(crate) files: Options,
    pub(crate) max_paths: usize,
    pub(crate) precision: u8,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            files: Options::new(),
            max_paths: DEFAULT_MAX_PATHS,
            precision: DEFAULT_PRECISION,
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
}

pub(crate) const SHARDS: usize = 16;

/// One open span's timing.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SpanState {
    pub(crate) path: u32,
    pub(crate) busy_ns: u64,
    pub(crate) idle_ns: u64,
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
