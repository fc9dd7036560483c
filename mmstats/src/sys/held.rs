//! A lock held across `fork()` by the forking thread, so that a child
//! never inherits it held by a thread it does not have.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use super::gettid;

/// A lock that the thread calling `fork` holds across it: taken by the
/// prepare handler ([`hold`](Self::hold)), released by the parent and
/// child handlers ([`release`](Self::release), [`take_in_child`](Self::take_in_child)),
/// which run on that same thread (in the child, on its copy). The guard
/// sits in this static, not in a thread local: a thread may fork while its
/// thread locals are being destroyed, and the child must then still get
/// the lock, not a copy of it held by a thread that does not exist there.
pub(crate) struct HeldAcrossFork<T: 'static> {
    lock: fn() -> &'static Mutex<T>,
    guard: UnsafeCell<Option<MutexGuard<'static, T>>>,
    /// The process and thread that hold the guard (0 while nobody does).
    holder: AtomicU64,
}

// SAFETY: `guard` is only touched by `hold`, `release` and `take_in_child`.
// `hold` writes it while holding `lock`; `release` only by the thread that
// holds it (checked against `holder`); `take_in_child` only in a forked
// child, whose only thread is the copy of the holder. So no two threads
// ever touch `guard` at once, and a guard is dropped by the thread (or the
// copy of the thread) that locked it.
unsafe impl<T> Sync for HeldAcrossFork<T> {}

impl<T> HeldAcrossFork<T> {
    /// Holds the lock that `lock` returns.
    pub(crate) const fn new(lock: fn() -> &'static Mutex<T>) -> Self {
        HeldAcrossFork {
            lock,
            guard: UnsafeCell::new(None),
            holder: AtomicU64::new(0),
        }
    }

    fn me() -> u64 {
        (u64::from(std::process::id()) << 32) | u64::from(gettid())
    }

    /// Before `fork`: locks and keeps the guard.
    pub(crate) fn hold(&self) {
        let g = (self.lock)().lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: we hold `lock`, so no other thread is in `hold`, and
        // `holder` is 0 (or another process's), so none is in `release`.
        unsafe { *self.guard.get() = Some(g) };
        // Relaxed: only read back by this thread (or its copy in the child).
        self.holder.store(Self::me(), Ordering::Relaxed);
    }

    /// After `fork`, in the parent: unlocks, if this thread holds it.
    pub(crate) fn release(&self) {
        // Relaxed: a thread only matches its own store.
        if self.holder.load(Ordering::Relaxed) != Self::me() {
            return;
        }
        // Relaxed: as above.
        self.holder.store(0, Ordering::Relaxed);
        // SAFETY: this thread holds `lock`, so it alone touches `guard`.
        drop(unsafe { (*self.guard.get()).take() });
    }

    /// After `fork`, in the child: the guard its forking thread held (or
    /// `None` in any other process, where this thread did not fork).
    pub(crate) fn take_in_child(&self) -> Option<MutexGuard<'static, T>> {
        // Relaxed: the copy of the forking thread's own store.
        let holder = self.holder.load(Ordering::Relaxed);
        if holder == 0 || holder >> 32 == u64::from(std::process::id()) {
            return None;
        }
        // Relaxed: as above.
        self.holder.store(0, Ordering::Relaxed);
        // SAFETY: another process's thread held `lock` when this memory was
        // copied, so this is a child made by `fork` from inside `hold`'s
        // hold, whose only thread is the copy of that holder.
        unsafe { (*self.guard.get()).take() }
    }
}
