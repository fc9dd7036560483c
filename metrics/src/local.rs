//! Each thread's state: its files (one per recorder), the table from a
//! handle's id to the field it writes on this thread, and the cache from a
//! key to its handle that makes the macro path lock-free.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use metrics::{CounterFn, GaugeFn, HistogramFn, Key};
use mmstats::{Counter, FieldDef, GaugeF64, Histogram, Kind, Schema, StatsFile, Timer};

use crate::config::{field_label, Shared, CLAMPED_LABEL, DROPPED_LABEL};

/// Which of the three facade kinds a handle is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MetricKind {
    Counter = 0,
    Gauge = 1,
    Histogram = 2,
}

/// A registered key: what `register_*` hands out inside the facade's
/// handle. Its id indexes every thread's table of fields.
#[derive(Debug)]
pub(crate) struct Handle {
    id: usize,
    kind: MetricKind,
    key: Key,
    shared: Arc<Shared>,
}

/// Ids of handles, unique in the process over all recorders.
static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

impl Handle {
    pub(crate) fn new(kind: MetricKind, key: Key, shared: Arc<Shared>) -> Handle {
        Handle {
            // Relaxed: only uniqueness matters, no other memory is published.
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            kind,
            key,
            shared,
        }
    }

    /// Runs `f` on this thread's field of the handle, making the field on
    /// the first use. The steady state is one thread-local access, a
    /// `RefCell` flag and an index into a vector.
    #[inline]
    fn with(&self, f: impl FnOnce(&Entry, &[ThreadFile])) {
        // At thread teardown, after this thread's state is gone, the update
        // has nowhere to go (nor does this thread have a file any more).
        let _ = LOCAL.try_with(|local| {
            {
                let l = local.borrow();
                if let Some(e) = l.entries.get(self.id) {
                    if !matches!(e, Entry::Unbound) {
                        return f(e, &l.files);
                    }
                }
            }
            let mut l = local.borrow_mut();
            l.bind(self);
            f(&l.entries[self.id], &l.files)
        });
    }
}

/// A no-op hasher: a `metrics::Key` hashes as its precomputed hash.
#[derive(Default)]
pub(crate) struct KeyHash(u64);

impl Hasher for KeyHash {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

pub(crate) type KeyMap<V> = HashMap<Key, V, BuildHasherDefault<KeyHash>>;

/// What a handle writes on one thread.
enum Entry {
    /// Not used on this thread yet.
    Unbound,
    Counter(Counter),
    Gauge(GaugeF64),
    Histogram {
        hist: Histogram,
        scale: f64,
        file: usize,
    },
    Timer {
        timer: Timer,
        scale: f64,
        file: usize,
    },
    /// No field (the file was full, or the key could not be a field):
    /// updates are counted in the file's dropped counter.
    Dropped {
        file: usize,
    },
}

/// This thread's file of one recorder, with its two own counters.
struct ThreadFile {
    recorder: u64,
    file: StatsFile,
    dropped: Counter,
    clamped: Counter,
}

struct Local {
    entries: Vec<Entry>,
    files: Vec<ThreadFile>,
    /// Per recorder id: key to handle, one map per [`MetricKind`].
    caches: Vec<(u64, [KeyMap<Arc<Handle>>; 3])>,
}

thread_local! {
    // Const-initialised: the hot path skips the lazy-initialisation check.
    static LOCAL: RefCell<Local> = const {
        RefCell::new(Local {
            entries: Vec::new(),
            files: Vec::new(),
            caches: Vec::new(),
        })
    };
}

/// The handle of `key` for this thread: from the thread's cache, else made
/// by `make` (the recorder's shared table, under its lock) and cached.
pub(crate) fn cached_handle(
    recorder: u64,
    kind: MetricKind,
    key: &Key,
    make: impl FnOnce() -> Arc<Handle>,
) -> Arc<Handle> {
    let cached = LOCAL.try_with(|local| {
        let mut l = local.borrow_mut();
        let i = match l.caches.iter().position(|(r, _)| *r == recorder) {
            Some(i) => i,
            None => {
                l.caches.push((recorder, Default::default()));
                l.caches.len() - 1
            }
        };
        let map = &mut l.caches[i].1[kind as usize];
        if let Some(h) = map.get(key) {
            return Arc::clone(h);
        }
        let h = make();
        map.insert(key.clone(), Arc::clone(&h));
        h
    });
    cached.unwrap_or_else(|_| make_uncached(kind, key))
}

/// A handle at thread teardown: it will record nothing on this thread.
#[cold]
fn make_uncached(kind: MetricKind, key: &Key) -> Arc<Handle> {
    let shared = Arc::new(Shared {
        id: u64::MAX,
        config: crate::Builder::new(),
        descriptions: Default::default(),
        first_error: Default::default(),
    });
    Arc::new(Handle::new(kind, key.clone(), shared))
}

/// Makes the calling thread's file of `shared`'s recorder now, so that an
/// unusable directory is reported by `install`.
pub(crate) fn open_thread_file(shared: &Shared) -> Result<(), mmstats::Error> {
    LOCAL.with(|local| {
        let mut l = local.borrow_mut();
        if l.files.iter().any(|f| f.recorder == shared.id) {
            return Ok(());
        }
        let f = ThreadFile::create(shared)?;
        l.files.push(f);
        Ok(())
    })
}

impl ThreadFile {
    fn create(shared: &Shared) -> Result<ThreadFile, mmstats::Error> {
        let mut schema = Schema::new(&shared.config.model);
        schema.push(FieldDef::counter(DROPPED_LABEL).help(
            "Updates not recorded: their key got no field (the reserved room ran out, or the key is not a valid field); see mmstats-metrics",
        ));
        schema.push(FieldDef::counter(CLAMPED_LABEL).help(
            "Histogram values that were negative, NaN or past the largest bucket, recorded as 0 or the largest value",
        ));
        let mut file = StatsFile::create(&schema, &shared.config.options())?;
        Ok(ThreadFile {
            recorder: shared.id,
            dropped: file.take(DROPPED_LABEL)?,
            clamped: file.take(CLAMPED_LABEL)?,
            file,
        })
    }

    /// This thread's file in private memory, when the real one cannot be
    /// made: the program runs on, and the recorder's `error` says why.
    fn private(shared: &Shared) -> ThreadFile {
        let mut schema = Schema::new(&shared.config.model);
        schema.push(FieldDef::counter(DROPPED_LABEL));
        schema.push(FieldDef::counter(CLAMPED_LABEL));
        let mut file = StatsFile::private(&schema, &shared.config.options())
            .expect("two counters always lay out");
        ThreadFile {
            recorder: shared.id,
            dropped: file.take(DROPPED_LABEL).expect("in the schema"),
            clamped: file.take(CLAMPED_LABEL).expect("in the schema"),
            file,
        }
    }
}

impl Local {
    /// Binds `h` on this thread: makes its field in this thread's file.
    #[cold]
    fn bind(&mut self, h: &Handle) {
        if self.entries.len() <= h.id {
            self.entries.resize_with(h.id + 1, || Entry::Unbound);
        }
        let shared = &h.shared;
        let file = match self.files.iter().position(|f| f.recorder == shared.id) {
            Some(i) => i,
            None => {
                let f = ThreadFile::create(shared).unwrap_or_else(|e| {
                    shared.note_error(e.to_string());
                    ThreadFile::private(shared)
                });
                self.files.push(f);
                self.files.len() - 1
            }
        };
        let entry = make_entry(h, &mut self.files[file].file, file).unwrap_or_else(|e| {
            shared.note_error(e.to_string());
            Entry::Dropped { file }
        });
        self.entries[h.id] = entry;
    }
}

/// Appends the field of `h` to `file`.
fn make_entry(h: &Handle, file: &mut StatsFile, index: usize) -> Result<Entry, mmstats::Error> {
    let name = h.key.name();
    let pairs: Vec<(&str, &str)> = h.key.labels().map(|l| (l.key(), l.value())).collect();
    let label = field_label(name, &pairs);
    let desc = h.shared.description(name);
    let described = |mut def: FieldDef| {
        def = def.help(&desc.help);
        for (k, v) in &pairs {
            def = def.static_label(k, v);
        }
        def
    };
    let unit = |def: FieldDef| match desc.unit {
        Some(u) => def.unit(u.as_str()),
        None => def,
    };
    Ok(match h.kind {
        MetricKind::Counter => {
            Entry::Counter(file.add(described(unit(FieldDef::counter(&label))))?)
        }
        MetricKind::Gauge => Entry::Gauge(file.add(described(unit(FieldDef::gauge_f64(&label))))?),
        MetricKind::Histogram => {
            let hd = h.shared.config.histogram_def(&label, name, desc.unit);
            let scale = hd.scale;
            let def = described(hd.def);
            if def.kind() == Kind::Timer {
                Entry::Timer {
                    timer: file.add(def)?,
                    scale,
                    file: index,
                }
            } else {
                Entry::Histogram {
                    hist: file.add(def)?,
                    scale,
                    file: index,
                }
            }
        }
    })
}

/// `v * scale` as a bucket value no greater than `max`, and whether it had
/// to be clamped.
#[inline]
fn scaled(v: f64, scale: f64, max: u64) -> (u64, bool) {
    let x = (v * scale).round();
    if x.is_nan() || x < 0.0 {
        (0, true)
    } else if x > max as f64 {
        (max, true)
    } else {
        (x as u64, false)
    }
}

impl CounterFn for Handle {
    #[inline]
    fn increment(&self, value: u64) {
        self.with(|e, files| match e {
            Entry::Counter(c) => c.add(value),
            Entry::Dropped { file } => files[*file].dropped.incr(),
            _ => unreachable!("a counter handle binds a counter"),
        });
    }

    fn absolute(&self, value: u64) {
        self.with(|e, files| match e {
            // This thread's count becomes `value`.
            Entry::Counter(c) => c.add(value.wrapping_sub(c.get())),
            Entry::Dropped { file } => files[*file].dropped.incr(),
            _ => unreachable!("a counter handle binds a counter"),
        });
    }
}

impl Handle {
    #[inline]
    fn gauge(&self, f: impl FnOnce(f64) -> f64) {
        self.with(|e, files| match e {
            Entry::Gauge(g) => g.set(f(g.get())),
            Entry::Dropped { file } => files[*file].dropped.incr(),
            _ => unreachable!("a gauge handle binds a gauge"),
        });
    }
}

impl GaugeFn for Handle {
    #[inline]
    fn increment(&self, value: f64) {
        self.gauge(|g| g + value);
    }

    #[inline]
    fn decrement(&self, value: f64) {
        self.gauge(|g| g - value);
    }

    #[inline]
    fn set(&self, value: f64) {
        self.gauge(|_| value);
    }
}

impl HistogramFn for Handle {
    #[inline]
    fn record(&self, value: f64) {
        self.record_many(value, 1);
    }

    fn record_many(&self, value: f64, count: usize) {
        self.with(|e, files| match e {
            Entry::Histogram { hist, scale, file } => {
                let (v, clamped) = scaled(value, *scale, hist.layout().max_value());
                if clamped {
                    files[*file].clamped.add(count as u64);
                }
                for _ in 0..count {
                    hist.record(v);
                }
            }
            Entry::Timer { timer, scale, file } => {
                let max = timer.histogram().layout().max_value();
                let (v, clamped) = scaled(value, *scale, max);
                if clamped {
                    files[*file].clamped.add(count as u64);
                }
                for _ in 0..count {
                    timer.record_ns(v);
                }
            }
            Entry::Dropped { file } => files[*file].dropped.add(count as u64),
            _ => unreachable!("a histogram handle binds a histogram"),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaling_clamps_and_rounds() {
        assert_eq!(scaled(1.5e-3, 1e9, 1 << 42), (1_500_000, false));
        assert_eq!(scaled(2.4, 1.0, 100), (2, false));
        assert_eq!(scaled(-1.0, 1.0, 100), (0, true));
        assert_eq!(scaled(f64::NAN, 1.0, 100), (0, true));
        assert_eq!(scaled(1e300, 1.0, 100), (100, true));
    }
}
