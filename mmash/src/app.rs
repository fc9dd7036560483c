//! What every handler shares: [`App`], and the request limits the routes
//! and `/check/` both apply. Its own module, so that the routes (`http`)
//! and the checks (`check`) both import it and neither imports the other.

use std::path::PathBuf;

use crate::collect::Collector;
use crate::history::History;

/// Longest query string accepted, in bytes.
pub const MAX_QUERY: usize = 4096;

/// What every handler shares.
#[derive(Debug)]
pub struct App {
    /// The files and series.
    pub collector: Collector,
    /// `--namespace`.
    pub namespace: String,
    /// The expected `Authorization` header value, `Bearer <token>`.
    pub auth: Option<Vec<u8>>,
    /// `--log-requests`.
    pub log_requests: bool,
    /// The stats directories: where `glob` patterns are relative to.
    pub dirs: Vec<PathBuf>,
    /// Past readings, for `/check/` windows.
    pub history: History,
}
