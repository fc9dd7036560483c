//! The `metrics::Recorder`: registration goes through the thread's cache of
//! handles; descriptions go to the shared table.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};

use crate::config::{lock, Builder, Description, Shared};
use crate::local::{cached_handle, open_thread_file, Handle, KeyMap, MetricKind};

/// A `metrics` recorder that writes into mmstats files, one per thread.
///
/// Made by [`Builder::build`] (or installed by [`install`](crate::install)
/// and [`Builder::install`]). Cloning shares the recorder.
#[derive(Clone, Debug)]
pub struct MmstatsRecorder {
    shared: Arc<Shared>,
    /// Key to handle, per kind: the cold path of a key's first
    /// registration on a thread.
    handles: Arc<Mutex<[KeyMap<Arc<Handle>>; 3]>>,
}

/// Recorder ids, unique in the process.
static NEXT_RECORDER: AtomicU64 = AtomicU64::new(0);

impl Builder {
    /// Makes the recorder without installing it (for
    /// `metrics::with_local_recorder`, or to install it yourself).
    pub fn build(self) -> MmstatsRecorder {
        MmstatsRecorder {
            shared: Arc::new(Shared {
                // Relaxed: only uniqueness matters.
                id: NEXT_RECORDER.fetch_add(1, Ordering::Relaxed),
                config: self,
                descriptions: Default::default(),
                first_error: Default::default(),
            }),
            handles: Default::default(),
        }
    }

    /// Makes the recorder, opens the calling thread's file (so that an
    /// unusable directory is an error here, not later) and installs the
    /// recorder as the global one.
    pub fn install(self) -> Result<(), crate::InstallError> {
        let recorder = self.build();
        open_thread_file(&recorder.shared).map_err(crate::InstallError::File)?;
        metrics::set_global_recorder(recorder).map_err(|_| crate::InstallError::AlreadySet)
    }
}

impl MmstatsRecorder {
    /// The first error met making a thread's file (that thread's metrics
    /// then live in private memory) or one of its fields (its updates are
    /// then counted as dropped); `None` if all went well.
    pub fn error(&self) -> Option<String> {
        lock(&self.shared.first_error).clone()
    }

    fn handle(&self, kind: MetricKind, key: &Key) -> Arc<Handle> {
        cached_handle(self.shared.id, kind, key, || {
            let mut tables = lock(&self.handles);
            let table = &mut tables[kind as usize];
            if let Some(h) = table.get(key) {
                return Arc::clone(h);
            }
            let h = Arc::new(Handle::new(kind, key.clone(), Arc::clone(&self.shared)));
            table.insert(key.clone(), Arc::clone(&h));
            h
        })
    }

    fn describe(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        lock(&self.shared.descriptions).insert(
            key.as_str().to_owned(),
            Description {
                unit,
                help: description.into_owned(),
            },
        );
    }
}

impl Recorder for MmstatsRecorder {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.describe(key, unit, description);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.describe(key, unit, description);
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.describe(key, unit, description);
    }

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.handle(MetricKind::Counter, key))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.handle(MetricKind::Gauge, key))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(self.handle(MetricKind::Histogram, key))
    }
}
