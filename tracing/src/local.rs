//! Each thread's state: its file (one per layer), the timers of each path
//! on this thread, the cap, and a cache of path ids.

use std::cell::RefCell;
use std::collections::HashMap;

use mmstats::{Counter, FieldDef, Layout, Schema, StatsFile, Timer};

use crate::config::{lock, Shared, SpanState, BUSY, EXTERNAL, IDLE, SCHEDULED, SLOW};
use crate::paths::{OTHER, SEPARATOR};

/// The label of the counter of spans timed into an `other` node (or not at
/// all, when a field did not fit).
pub const OVERFLOW_LABEL: &str = "mmstats_tracing.overflow";

/// What a path writes on one thread.
enum Entry {
    Unbound,
    Own {
        busy: Timer,
        idle: Timer,
        /// Made on first use: most paths never need them.
        extra: Box<[ExtraSlot; 3]>,
    },
    /// Past the cap: timed into the `other` node with this path id.
    Folded(u32),
    /// Past the cap, under a folded path: its time is already in the
    /// `other` node its folded ancestor is timed into, so it is counted as
    /// overflow only (timing it there too would count that time twice).
    Nested,
    /// No field could be made: counted as overflow only.
    Lost,
}

/// One of a path's timers made on first use.
#[derive(Default)]
enum ExtraSlot {
    #[default]
    Unmade,
    Made(Timer),
    /// It could not be made (no room): not tried again.
    Failed,
}

struct LayerLocal {
    layer: u64,
    file: Option<(StatsFile, Counter)>,
    entries: Vec<Entry>,
    /// Paths with fields of their own (not counting `other` nodes).
    distinct: usize,
    /// (parent path, name address, name length) to path id.
    ids: HashMap<(u32, usize, usize), u32>,
}

thread_local! {
    static LOCAL: RefCell<Vec<LayerLocal>> = const { RefCell::new(Vec::new()) };
}

fn with_local<R>(shared: &Shared, f: impl FnOnce(&mut LayerLocal) -> R) -> Option<R> {
    LOCAL
        .try_with(|l| {
            let mut l = l.borrow_mut();
            let i = match l.iter().position(|x| x.layer == shared.id) {
                Some(i) => i,
                None => {
                    l.push(LayerLocal {
                        layer: shared.id,
                        file: None,
                        entries: Vec::new(),
                        distinct: 0,
                        ids: HashMap::new(),
                    });
                    l.len() - 1
                }
            };
            f(&mut l[i])
        })
        .ok()
}

/// The id of path `parent` / `name`: from this thread's cache, else from
/// the layer's table. A path new to this thread gets its fields (or its
/// place past the cap) now, so that the cap goes by order of creation.
pub(crate) fn path_id(shared: &Shared, parent: u32, name: &'static str) -> u32 {
    let key = (parent, name.as_ptr() as usize, name.len());
    let cached = with_local(shared, |l| {
        if let Some(id) = l.ids.get(&key) {
            return *id;
        }
        let id = lock(&shared.paths).id(parent, name);
        l.ids.insert(key, id);
        l.ensure(shared, id);
        id
    });
    cached.unwrap_or_else(|| lock(&shared.paths).id(parent, name))
}

/// The timers a path has besides busy and idle, made on first use.
#[derive(Clone, Copy)]
pub(crate) enum Extra {
    Slow = 0,
    External = 1,
    Scheduled = 2,
}

impl Extra {
    fn prefix(self) -> (&'static str, &'static str) {
        match self {
            Extra::Slow => (SLOW, "Entries of spans of this path that took at least the slow threshold (for a span over a future: slow polls)"),
            Extra::External => (EXTERNAL, "Time spans of this path waited from their exit to the wake that ended the wait"),
            Extra::Scheduled => (SCHEDULED, "Time spans of this path waited from their wake to their next entry"),
        }
    }
}

/// Records a closed span of path `path` on this thread.
pub(crate) fn record(shared: &Shared, path: u32, s: &SpanState) {
    with_local(shared, |l| {
        let (target, folded) = l.target(shared, path);
        match &l.entries[target as usize] {
            Entry::Own { busy, idle, .. } => {
                busy.record_ns(s.busy_ns);
                idle.record_ns(s.idle_ns);
                if folded {
                    l.overflow();
                }
            }
            // Nested or lost: the span is counted, its time is not kept.
            _ => return l.overflow(),
        }
        if s.split {
            l.record_extra(shared, target, Extra::External, s.external_ns);
            l.record_extra(shared, target, Extra::Scheduled, s.scheduled_ns);
        }
    });
}

/// Records one slow entry of a span of path `path` on this thread (none
/// for a nested or lost path: the span's close counts it as overflow).
pub(crate) fn record_slow(shared: &Shared, path: u32, ns: u64) {
    with_local(shared, |l| {
        let (target, _) = l.target(shared, path);
        l.record_extra(shared, target, Extra::Slow, ns);
    });
}

impl LayerLocal {
    /// Where `path`'s times go on this thread, and whether that is not its
    /// own node (folded past the cap).
    fn target(&mut self, shared: &Shared, path: u32) -> (u32, bool) {
        self.ensure(shared, path);
        match self.entries[path as usize] {
            Entry::Folded(other) => (other, true),
            _ => (path, false),
        }
    }

    /// Records `ns` in `target`'s `which` timer, made now if this is its
    /// first use. If it cannot be made, that timing is counted as
    /// overflow, now and each time after, and making it is not tried
    /// again. A target without timers of its own (nested, lost) records
    /// nothing: its spans are counted when they close.
    fn record_extra(&mut self, shared: &Shared, target: u32, which: Extra, ns: u64) {
        let i = which as usize;
        match self.entries.get(target as usize) {
            Some(Entry::Own { extra, .. }) => match &extra[i] {
                ExtraSlot::Made(t) => return t.record_ns(ns),
                ExtraSlot::Failed => return self.overflow(),
                ExtraSlot::Unmade => {}
            },
            _ => return,
        }
        let label = lock(&shared.paths).nodes[target as usize].0.clone();
        let (name, help) = which.prefix();
        let made = self
            .file(shared)
            .and_then(|(file, _)| file.add::<Timer>(timer_def(shared, name, help, &label)));
        let slot = match made {
            Ok(t) => {
                t.record_ns(ns);
                ExtraSlot::Made(t)
            }
            Err(e) => {
                lock(&shared.first_error).get_or_insert(e.to_string());
                self.overflow();
                ExtraSlot::Failed
            }
        };
        if let Some(Entry::Own { extra, .. }) = self.entries.get_mut(target as usize) {
            extra[i] = slot;
        }
    }

    fn overflow(&self) {
        if let Some((_, overflow)) = &self.file {
            overflow.incr();
        }
    }

    #[cold]
    fn bind(&mut self, shared: &Shared, path: u32) {
        let (label, parent) = lock(&shared.paths).nodes[path as usize].clone();
        let is_other = label == OTHER || label.ends_with(&format!("{SEPARATOR}{OTHER}"));
        let entry = if is_other || self.distinct < shared.config.max_paths {
            if !is_other {
                self.distinct += 1;
            }
            self.make(shared, &label)
        } else {
            // The other node of the parent's place in the tree; under a
            // folded parent, nothing of its own: the parent's time, which
            // is in an other node already, holds this span's.
            match self.entries.get(parent as usize) {
                Some(Entry::Folded(_) | Entry::Nested) => Entry::Nested,
                _ => {
                    let o = lock(&shared.paths).id(parent, OTHER);
                    self.ensure(shared, o);
                    Entry::Folded(o)
                }
            }
        };
        self.put(path, entry);
    }

    fn ensure(&mut self, shared: &Shared, path: u32) {
        if matches!(self.entries.get(path as usize), None | Some(Entry::Unbound)) {
            self.bind(shared, path);
        }
    }

    fn put(&mut self, path: u32, entry: Entry) {
        let i = path as usize;
        if self.entries.len() <= i {
            self.entries.resize_with(i + 1, || Entry::Unbound);
        }
        self.entries[i] = entry;
    }

    /// The two timers of `label` in this thread's file, made now.
    fn make(&mut self, shared: &Shared, label: &str) -> Entry {
        let made = self.file(shared).and_then(|(file, _)| {
            let def = |prefix, help| timer_def(shared, prefix, help, label);
            let busy = file.add(def(BUSY, "Time spans of this path were entered"))?;
            let idle = file.add(def(
                IDLE,
                "Time spans of this path were open but not entered",
            ))?;
            Ok(Entry::Own {
                busy,
                idle,
                extra: Box::default(),
            })
        });
        made.unwrap_or_else(|e| {
            lock(&shared.first_error).get_or_insert(e.to_string());
            Entry::Lost
        })
    }

    fn file(&mut self, shared: &Shared) -> Result<&mut (StatsFile, Counter), mmstats::Error> {
        if self.file.is_none() {
            let c = &shared.config;
            let mut schema = Schema::new("tracing");
            schema.push(FieldDef::counter(OVERFLOW_LABEL).help(
                "Spans timed into an `other` node past the path cap, or not timed because their field did not fit",
            ));
            // Up to five timers per path (busy, idle and the three made on
            // first use), for the paths under the cap and as many `other`
            // nodes; labels of up to 200 bytes.
            let fields = 10 * c.max_paths + 10;
            // A bad precision is reported when the first timer is added.
            let buckets =
                Layout::new(c.precision, Layout::timer().max_bits()).map_or(0, |l| l.buckets());
            let bytes = fields * (16 + buckets * 8).max(2 * 200);
            let options = c.files.clone().reserve(fields, bytes);
            let mut file = StatsFile::create(&schema, &options)?;
            let overflow = file.take(OVERFLOW_LABEL)?;
            self.file = Some((file, overflow));
        }
        Ok(self.file.as_mut().expect("made above"))
    }
}

/// The timer `name{path=<path>}` of a path, with the path as its static
/// label.
fn timer_def(shared: &Shared, name: &str, help: &str, label: &str) -> FieldDef {
    FieldDef::timer(
        &mmstats::keyed_label(name, &[("path", label)]),
        Layout::timer(),
    )
    .layout(shared.config.precision, Layout::timer().max_bits())
    .help(help)
    .static_label("path", label)
}
