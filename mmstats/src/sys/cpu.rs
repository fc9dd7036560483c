//! The calling thread's CPU time, from `clock_gettime(CLOCK_THREAD_CPUTIME_ID)`.

use std::time::Duration;

/// CPU time the calling thread has used since it started (user and system),
/// as the kernel accounts it.
///
/// This is a `clock_gettime(CLOCK_THREAD_CPUTIME_ID)` call. Unlike the
/// monotonic clock that [`Instant::now`](std::time::Instant::now) reads, the
/// vDSO may not serve it, so it can be a real system call (a few hundred
/// nanoseconds): keep it off hot paths that do not ask for it. The README's
/// section "Async: waiting or working" gives the cost measured by
/// `cargo bench --bench hot_path -- cpu_timer`.
///
/// Only differences between two readings on the same thread mean anything.
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY:
    // - `ts` is a valid, writable `timespec` that lives across the call.
    // - CLOCK_THREAD_CPUTIME_ID is a clock every Linux kernel we run on
    //   (2.6.12 and later) supports, for the calling thread.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    // It can only fail with EINVAL (an unsupported clock) or EFAULT (a bad
    // pointer), neither of which can happen here; zero keeps differences 0.
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn busy_time_counts_and_sleep_does_not() {
        let start = thread_cpu_time();
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(30) {
            std::hint::black_box(t);
        }
        let busy = thread_cpu_time() - start;
        let start = thread_cpu_time();
        std::thread::sleep(Duration::from_millis(30));
        let slept = thread_cpu_time() - start;
        assert!(busy > slept, "busy {busy:?} <= slept {slept:?}");
        assert!(busy > Duration::ZERO);
    }
}
