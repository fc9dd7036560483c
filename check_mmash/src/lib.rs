//! Nagios / Icinga checks on mmstats: the Monitoring Plugins threshold
//! [`range`] syntax and the [`plugin`] output (states, status line,
//! performance data), shared by the `check_mmash` plugin and the `/check/`
//! endpoint of `mmash`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod plugin;
pub mod range;

pub use plugin::{status_line, Perfdata, State, Uom};
pub use range::{Range, RangeError};
