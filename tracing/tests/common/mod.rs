//! What the layer's tests share.

use std::path::{Path, PathBuf};

use mmstats_read::Snapshot;
use mmstats_tracing::MmstatsLayer;
use tracing_subscriber::layer::SubscriberExt;

/// Runs `f` on a new thread under a subscriber with `layer`, and reads the
/// one file it made in `dir`.
pub fn run(layer: MmstatsLayer, dir: &Path, f: impl FnOnce() + Send) -> Snapshot {
    std::thread::scope(|s| {
        s.spawn(|| {
            let subscriber = tracing_subscriber::registry().with(layer);
            tracing::subscriber::with_default(subscriber, f);
        })
        .join()
        .unwrap();
    });
    let files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "mmstats"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    mmstats::install_sigbus_guard().unwrap();
    mmstats_read::read_file(&files[0]).unwrap()
}
