//! What `/proc` says about this process: its command name and start time.

use std::fs;
use std::path::Path;
use std::sync::Mutex;

/// The name of the running program: the base name of `argv[0]`.
pub(crate) fn command_name() -> String {
    std::env::args_os()
        .next()
        .and_then(|a| {
            Path::new(&a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .filter(|n| !n.is_empty())
        .or_else(|| {
            fs::read_to_string("/proc/self/comm")
                .ok()
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Field 22 of `/proc/self/stat`: when this process started, in clock
/// ticks since boot. 0 if unknown. Read once per process (a forked child
/// reads its own): every open needs it, and reading `/proc` costs more
/// than the rest of a reused open.
pub(crate) fn process_start_ticks() -> u64 {
    let pid = std::process::id();
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if cache.0 != pid {
        let ticks = fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|s| parse_start_ticks(&s))
            .unwrap_or(0);
        *cache = (pid, ticks);
    }
    cache.1
}

static CACHE: Mutex<(u32, u64)> = Mutex::new((0, 0));

/// The cache lock, held by the forking thread across `fork`.
static HELD: crate::sys::held::HeldAcrossFork<(u32, u64)> =
    crate::sys::held::HeldAcrossFork::new(cache_lock);

fn cache_lock() -> &'static Mutex<(u32, u64)> {
    &CACHE
}

/// Takes the cache lock before `fork`, so that the child never inherits
/// it held by a thread that does not exist there.
pub(crate) fn hold_for_fork() {
    HELD.hold();
}

/// Releases what [`hold_for_fork`] took, in the parent.
pub(crate) fn release_after_fork() {
    HELD.release();
}

/// Releases what [`hold_for_fork`] took, in the child.
pub(crate) fn release_after_fork_in_child() {
    drop(HELD.take_in_child());
}

/// Parses the start time out of a `/proc/PID/stat` line. The command name
/// (field 2) may hold spaces and parentheses, so fields are counted from
/// the last `)`.
pub(crate) fn parse_start_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    // Field 3 is the first after ')', so field 22 is the 20th.
    after.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_ticks_parse_with_odd_command_names() {
        let line = "123 (a) b (c)) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 4242 19 20";
        assert_eq!(parse_start_ticks(line), Some(4242));
        assert_eq!(parse_start_ticks("garbage"), None);
        assert!(process_start_ticks() > 0);
    }
}
