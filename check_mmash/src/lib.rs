//! Nagios / Icinga checks on mmstats: the Monitoring Plugins threshold
//! [`range`] syntax, the [`plugin`] output (states, status line,
//! performance data) and the [`check`] itself (what to measure, measured
//! from samples of the stats files), shared by the `check_mmash` plugin and
//! the `/check/` endpoint of `mmash`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod check;
pub mod plugin;
pub mod range;
pub mod scope;

pub use check::{Measure, Spec, Stat, Unmeasurable, Why};
pub use plugin::{status_line, Perfdata, State, Uom};
pub use range::{Range, RangeError};
