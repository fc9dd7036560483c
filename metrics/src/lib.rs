//! A [`metrics`] recorder that writes into mmstats files: code instrumented
//! with `counter!`, `gauge!` and `histogram!` becomes per-thread stats that
//! `slurpstats`, `pollstats` and `mmash` read, without rewriting it.
//!
//! # Overview
//!
//! - [`install`] installs the recorder with the defaults; [`Builder`] sets
//!   the files' [`mmstats::Options`] ([`Builder::files`]: command, template),
//!   the directory, label prefix, model name, histogram precision and
//!   scales and the reserved room, then [`Builder::install`] or
//!   [`Builder::build`] (a [`MmstatsRecorder`] for
//!   `metrics::with_local_recorder`).
//! - Each thread that records gets its own stats file of model
//!   [`DEFAULT_MODEL`] (`metrics`), made on its first update, like any
//!   mmstats writer's.
//! - A key's first use on a thread appends a field to that thread's live
//!   file ([`mmstats::StatsFile::add`]). Counters are counters, gauges
//!   `f64` gauges, histograms mmstats histograms or timers (below).
//!
//! # Labels
//!
//! A key's labels become the field's static labels, so `slurpstats --json`
//! shows them under `"static_labels"` and mmash's `/metrics` exports them as
//! Prometheus labels: `counter!("http.requests", "route" => "/a")` is
//! `http_requests_total{...,route="/a"}` (the README's "`/metrics` names"
//! has the rule). Labels in a file are unique, so the
//! field's label is the name followed by the labels in order,
//! `name{k=v,k2=v2}` ([`field_label`]: `\`, `,`, `}` and `=` inside keys and
//! values are escaped with a backslash, a newline is written `\n`, another
//! control character `\xHH`). A key
//! without labels is labelled with its name alone.
//!
//! # Descriptions and units
//!
//! `describe_counter!`, `describe_gauge!` and `describe_histogram!` give the
//! help text and unit of every field made for that name afterwards. Fields
//! are written once: a description that comes after a thread made its field
//! applies only to fields made later, on other threads. Describe at start-up.
//!
//! # Histograms: from `f64` to buckets
//!
//! mmstats histograms count `u64` values. A value `v` of histogram `name` is
//! recorded as `round(v * scale)`:
//!
//! - with [`Builder::histogram_scale`]`(name, scale, unit)`: that scale and
//!   unit, in a histogram;
//! - else, described in seconds, milliseconds, microseconds or nanoseconds:
//!   a timer (nanoseconds), scale 1e9, 1e6, 1e3 or 1;
//! - else: a histogram with scale 1 (integers: sizes, counts), unit as
//!   described.
//!
//! A value that is negative or NaN is recorded as 0, one past the largest
//! bucket as the largest; each is counted in the thread's
//! `mmstats_metrics.clamped` counter. The precision ([`Builder::histogram_precision`],
//! default [`DEFAULT_PRECISION`] bits) bounds the relative error of a value's
//! bucket at `2^-precision`.
//!
//! # Room
//!
//! Each file is made with room for [`DEFAULT_RESERVE_FIELDS`] fields (512),
//! [`DEFAULT_RESERVE_BYTES`] of strings and as much of values (512 KiB
//! each: 65 536 counters, or about 60 histograms at precision 4); change it
//! with [`Builder::reserve`]. When a key does not fit, or cannot be a field
//! (a label the format refuses, or a name used as two kinds), nothing
//! panics: its updates on that thread (calls, and each value of a
//! `record_many`, not the amounts) are counted in the file's
//! `mmstats_metrics.dropped` counter, and [`MmstatsRecorder::error`] says
//! which key and why. So no update is lost silently: it is either in its
//! field or in `dropped`.
//!
//! # Cost
//!
//! - A handle from `register_*` (as `let c = counter!("x");` kept by the
//!   application): one thread-local access, a `RefCell` flag, an index by
//!   the handle's id, then the relaxed load and store of
//!   [`mmstats::Counter::incr`].
//! - The macro path (`counter!("x").increment(1)`) first looks the key up
//!   in the thread's own map (hashed by the key's precomputed hash) and
//!   clones the handle's `Arc`, as the facade requires.
//! - Neither takes a lock, allocates or makes a system call once the key
//!   has been used on the thread; the first use takes the recorder's lock
//!   and appends the field.
//!
//! Gauges are per thread like every mmstats value: a gauge set on two
//! threads has two values, one per file.
//!
//! # Example
//!
//! ```
//! # let dir = tempfile::tempdir().unwrap();
//! mmstats_metrics::Builder::new().dir(dir.path()).install()?;
//! metrics::describe_counter!("http.requests", "Requests served");
//! metrics::counter!("http.requests", "route" => "/a").increment(1);
//! metrics::histogram!("http.latency").record(0.25);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations)]

mod config;
mod local;
mod recorder;

pub use config::{
    field_label, Builder, CLAMPED_LABEL, DEFAULT_MODEL, DEFAULT_PRECISION, DEFAULT_RESERVE_BYTES,
    DEFAULT_RESERVE_FIELDS, DROPPED_LABEL,
};
pub use recorder::MmstatsRecorder;

/// Installs the recorder with the defaults ([`Builder::new`]).
pub fn install() -> Result<(), InstallError> {
    Builder::new().install()
}

/// Why [`install`] failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum InstallError {
    /// The calling thread's stats file could not be made (directory
    /// missing or not writable, bad precision): fix the directory or the
    /// builder's settings.
    File(mmstats::Error),
    /// Another recorder is installed already; `metrics` allows one per
    /// process.
    AlreadySet,
}

impl std::fmt::Display for InstallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InstallError::File(e) => write!(f, "cannot make the thread's stats file: {e}"),
            InstallError::AlreadySet => write!(f, "a metrics recorder is installed already"),
        }
    }
}

impl std::error::Error for InstallError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            InstallError::File(e) => Some(e),
            InstallError::AlreadySet => None,
        }
    }
}
