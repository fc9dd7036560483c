//! A [`tracing_subscriber::Layer`] that times every span into mmstats
//! timers named by the span's **path**, so that instrumented code reads as
//! a tree (`slurpstats --tree`).
//!
//! # Overview
//!
//! - [`layer`] makes the layer with the defaults; [`Builder`] sets the
//!   files' [`mmstats::Options`] ([`Builder::files`]: directory, command,
//!   template, label prefix), the path cap and the timer precision.
//! - A span's path is the names of its ancestors and its own, from the
//!   root, joined by [`SEPARATOR`] (`/`): `request/db_query`. A `\` or `/`
//!   inside a name is escaped with a backslash ([`push_segment`],
//!   [`split_path`]). A function called under two parents gives two paths.
//! - Each thread that closes spans gets a stats file of model `tracing`.
//!   Each path has two timers, in nanoseconds:
//!   - `span.busy{path=<path>}`: per span, the time it was entered (summed over
//!     its entries when it is entered several times, as a future's span is);
//!   - `span.idle{path=<path>}`: per span, the time from its creation to its
//!     close that it was not entered.
//!
//!   Both are recorded when the span closes, on the closing thread; the
//!   busy timer's count is the number of calls. Each field also has the
//!   static label `path=<path>`, and its label is a keyed label
//!   ([`mmstats::keyed_label`]: `\`, `,`, `}` and `=` in the path escaped
//!   with a backslash), so mmash exports one family per timer kind, with
//!   the path as a label: `span_busy_seconds{path="request/db_query",…}`.
//! - Three more timers per path are made on first use:
//!   - `span.slow{path=<path>}` ([`SLOW`]): each entry that lasted at
//!     least [`Builder::slow_threshold`] (default 1 ms), recorded at its
//!     exit. A span over a future is entered once per poll, so for it these
//!     are the **slow polls**: its count is their number.
//!   - `span.external{path=<path>}` and `span.scheduled{path=<path>}`: for spans
//!     entered inside a future wrapped with [`TimeWaits::time_waits`], the
//!     idle time that ended in a wake, split at the wake into **external
//!     time** (waiting for what was awaited) and **scheduled delay** (ready,
//!     waiting for the executor). Recorded per span at its close, like idle.
//!
//! # Waiting or working: how this compares with `tokio-metrics`
//!
//! `tokio-metrics`' task monitors wrap each task's waker in the same way to
//! learn wake times, and keep totals and counts per monitor (total
//! scheduled duration, slow poll count and duration, and so on), read by
//! sampling the monitor in the application. Here the times are per span
//! path, recorded into histograms in the thread's stats file, so the
//! readers show percentiles, merged over threads and processes, with no
//! code in the application to report them. The wake time is the task's:
//! a span inside a `join` is split at the wake of the whole task.
//!
//! # The cap
//!
//! A thread makes fields for at most [`DEFAULT_MAX_PATHS`] (100) distinct
//! paths ([`Builder::max_paths`]). Past that, a new path's spans are timed
//! into the node `<parent path>/other` ([`OTHER`]; `other` for a root),
//! and each such span is counted in the thread's `mmstats_tracing.overflow`
//! counter. The `other` nodes do not count against the cap (there is at
//! most one per path); a span that is itself named `other` is taken for
//! one. A span under a folded span is counted in the overflow counter but
//! not timed: its time is already in the `other` node its folded ancestor
//! went to, and timing it there too would count that time twice. Which
//! paths get fields goes by the order this thread first creates them. A
//! span whose field does not fit into the file's reserved room is counted
//! the same way, never lost silently, and so is each slow, external or
//! scheduled timing of a path whose timer for it did not fit.
//!
//! # Cost
//!
//! Per span: a lookup of (parent path, name) in the thread's own table,
//! and one uncontended lock of one of 16 shards of the table of open spans
//! at creation, entry, exit and close. No allocation once the path is known
//! and the tables have grown to the number of spans open at once.
//! [`TimeWaits`] adds one allocation per wrapped future (its waker) and,
//! per poll, an uncontended lock of that waker's mutex.
//!
//! # Example
//!
//! ```
//! use tracing_subscriber::layer::SubscriberExt;
//! # let dir = tempfile::tempdir().unwrap();
//! let subscriber = tracing_subscriber::registry()
//!     .with(mmstats_tracing::Builder::new().dir(dir.path()).build());
//! tracing::subscriber::with_default(subscriber, || {
//!     let _request = tracing::info_span!("request").entered();
//!     let _db = tracing::info_span!("db_query").entered();
//! });
//! ```
#![deny(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations)]

mod config;
mod local;
mod paths;
mod waits;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tracing::span::{Attributes, Id};
use tracing::Subscriber;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

pub use local::OVERFLOW_LABEL;
pub use paths::{push_segment, split_path, OTHER, SEPARATOR};

pub use config::{
    Builder, BUSY, DEFAULT_MAX_PATHS, DEFAULT_PRECISION, DEFAULT_SLOW_THRESHOLD, EXTERNAL, IDLE,
    SCHEDULED, SLOW,
};
pub use waits::{TimeWaits, WaitTimed};

use config::{lock, Shared, SpanState, SHARDS};
use paths::ROOT;

static NEXT_LAYER: AtomicU64 = AtomicU64::new(0);

/// The layer with the defaults ([`Builder::new`]).
pub fn layer() -> MmstatsLayer {
    Builder::new().build()
}

impl Builder {
    /// Makes the layer.
    pub fn build(self) -> MmstatsLayer {
        MmstatsLayer {
            shared: Arc::new(Shared {
                // Relaxed: only uniqueness matters.
                id: NEXT_LAYER.fetch_add(1, Ordering::Relaxed),
                config: self,
                paths: Mutex::default(),
                spans: (0..SHARDS).map(|_| Mutex::default()).collect(),
                first_error: Mutex::default(),
            }),
        }
    }
}

/// The layer: made by [`layer`] or [`Builder::build`]; add it to a
/// `tracing_subscriber::registry()`.
#[derive(Clone, Debug)]
pub struct MmstatsLayer {
    shared: Arc<Shared>,
}

impl MmstatsLayer {
    /// The first error met making a thread's file or a field (its spans
    /// are then counted in the overflow counter); `None` if all went well.
    pub fn error(&self) -> Option<String> {
        lock(&self.shared.first_error).clone()
    }
}

fn nanos(d: std::time::Duration) -> u64 {
    d.as_secs()
        .saturating_mul(1_000_000_000)
        .saturating_add(d.subsec_nanos().into())
}

impl<S> tracing_subscriber::Layer<S> for MmstatsLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let parent = if attrs.is_root() {
            None
        } else if let Some(p) = attrs.parent() {
            Some(p.clone())
        } else if attrs.is_contextual() {
            ctx.current_span().id().cloned()
        } else {
            None
        };
        let parent_path = parent
            .and_then(|p| self.shared.shard(&p).get(&p.into_u64()).map(|s| s.path))
            .unwrap_or(ROOT);
        let path = local::path_id(&self.shared, parent_path, attrs.metadata().name());
        let state = SpanState {
            path,
            busy_ns: 0,
            idle_ns: 0,
            external_ns: 0,
            scheduled_ns: 0,
            split: false,
            last: Instant::now(),
            depth: 0,
        };
        self.shared.shard(id).insert(id.into_u64(), state);
    }

    fn on_enter(&self, id: &Id, _ctx: Context<'_, S>) {
        let now = Instant::now();
        if let Some(s) = self.shared.shard(id).get_mut(&id.into_u64()) {
            if s.depth == 0 {
                s.idle_ns += nanos(now.saturating_duration_since(s.last));
                // Split only a gap that spans a suspension of a
                // `TimeWaits` future: from an exit before this poll.
                if let Some(r) = waits::resumed().filter(|r| s.last < r.start) {
                    // A wake before the exit leaves no external time: the
                    // whole gap was scheduling. No wake: all external.
                    // (`last` may be later than `now` if another thread
                    // exited the span meanwhile: never a panic for that.)
                    let last = s.last.min(now);
                    let woke = r.woke_at.map_or(now, |w| w.clamp(last, now));
                    s.external_ns += nanos(woke.saturating_duration_since(last));
                    s.scheduled_ns += nanos(now.saturating_duration_since(woke));
                    s.split = true;
                }
                s.last = now;
            }
            s.depth += 1;
        }
    }

    fn on_exit(&self, id: &Id, _ctx: Context<'_, S>) {
        let now = Instant::now();
        let mut slow = None;
        if let Some(s) = self.shared.shard(id).get_mut(&id.into_u64()) {
            s.depth = s.depth.saturating_sub(1);
            if s.depth == 0 {
                let entry = nanos(now.saturating_duration_since(s.last));
                s.busy_ns += entry;
                s.last = now;
                if entry >= self.shared.config.slow_ns {
                    slow = Some((s.path, entry));
                }
            }
        }
        // Outside the shard's lock: this may make a field.
        if let Some((path, ns)) = slow {
            local::record_slow(&self.shared, path, ns);
        }
    }

    fn on_close(&self, id: Id, _ctx: Context<'_, S>) {
        let now = Instant::now();
        let Some(mut s) = self.shared.shard(&id).remove(&id.into_u64()) else {
            return;
        };
        if s.depth == 0 {
            s.idle_ns += nanos(now.saturating_duration_since(s.last));
        } else {
            s.busy_ns += nanos(now.saturating_duration_since(s.last));
        }
        local::record(&self.shared, s.path, &s);
    }
}
