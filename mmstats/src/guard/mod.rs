//! The SIGBUS guard: read-only mappings of files that another process may
//! shrink, the registry of their address ranges and of writers' mappings,
//! and the signal handler that turns a fault inside a reader mapping into a
//! read of zeros, and one inside a writer mapping into stores to private
//! memory (see `WriterRange`).
//!
//! A load from a mapped page past the end of a file raises SIGBUS. The guard
//! ([`install_sigbus_guard`]) installs a handler that looks the faulting
//! address up in a registry of reader mappings. Inside one, it maps a zero
//! page over the faulting page, marks that mapping faulted and returns, so
//! the load is retried and reads zero; the reader then discards its snapshot
//! (`mmstats-read` reports `ReadError::Truncated`). Any other fault
//! goes on to the handler that was installed before the guard, or to the
//! default action, which kills the process as it would have without us.
//!
//! The registry holds up to [`MAX_MAPPINGS`] mappings: `MAX_CHUNKS` chunks
//! of `CHUNK_SLOTS` slots, each chunk allocated when first needed and
//! never freed. The handler takes no lock and allocates nothing: it scans
//! the published chunks with atomic loads. Slots are handed out under a
//! mutex (never taken by the handler) from a free list, so opening a file
//! costs O(1) however many are open.
//!
//! The guard lives in the writer's crate because writers need it too (a
//! truncated writer mapping is repaired here, spec §6.9); readers register
//! their mappings through [`ReadMap`], the one interface this module gives
//! them.
//!
//! ```text
//! mod.rs    install_sigbus_guard, the handler and what it does with a fault
//! slots.rs  the registry of mapped ranges the handler scans (lock-free)
//! maps.rs   ReadMap (a reader's mapping) and WriterRange (a writer's)
//! ```
//! Arrows: mod.rs -> slots.rs <- maps.rs; nothing here imports a module
//! above the format's `protocol`.

use std::io;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::protocol;

mod maps;
mod slots;
#[cfg(test)]
pub(crate) mod tests;

pub(crate) use maps::WriterRange;
pub use maps::{MapError, ReadMap};
pub(crate) use slots::{
    dark_events, hold_alloc_for_fork, release_alloc_after_fork, release_alloc_after_fork_in_child,
};
use slots::{Slot, CHUNKS, DARK_EVENTS};

/// The most files one process can have mapped by readers at once
/// (64 chunks of 1024 slots: 65,536). Mapping one more fails with
/// [`MapError::Full`] (a reader's `ReadError::TooManyMappings`) until one
/// is dropped.
pub const MAX_MAPPINGS: usize = slots::MAX_CHUNKS * slots::CHUNK_SLOTS;

/// Installs the process-wide SIGBUS handler that readers need, so that a
/// stats file truncated while mapped reads as
/// `ReadError::Truncated` instead of killing
/// the process.
///
/// Call it once at the start of any program that reads stats files, before
/// mapping any file with [`ReadMap::new`] (as `mmstats-read`'s readers do),
/// which fails with [`MapError::NoGuard`] until it has been called.
/// Calling it again, from any thread, does nothing. A writer calls it
/// itself when it maps its first stats file: the guard also keeps a writer
/// alive when another process truncates its file (spec §6.9).
///
/// The handler only handles faults inside reader and writer mappings. Any other SIGBUS
/// goes to the action that was installed before: a handler function is
/// called with its own flags (`SA_SIGINFO` or not, `SA_NODEFER`,
/// `SA_RESETHAND`) and with its `sa_mask` blocked; the default action still
/// kills the process by SIGBUS. A handler that other code installs *after*
/// this call replaces the guard, so it must pass on the faults it does not
/// handle, or readers and writers lose their protection.
///
/// # Errors
///
/// The error of `sigaction(2)`, should the system refuse to read or set the
/// action for SIGBUS.
pub fn install_sigbus_guard() -> io::Result<()> {
    static LOCK: Mutex<()> = Mutex::new(());
    // Acquire: pairs with the Release below, so a caller that sees the guard
    // installed also sees everything the installation wrote.
    if INSTALLED.load(Ordering::Acquire) {
        return Ok(());
    }
    let _lock = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    // Relaxed: the lock orders this against the installing thread.
    if INSTALLED.load(Ordering::Relaxed) {
        return Ok(());
    }
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if page > 0 {
        // Relaxed: published to the handler by the Release store of PREVIOUS.
        PAGE_SIZE.store(page as usize, Ordering::Relaxed);
    }

    // Save the action in place first, then publish it, then install ours:
    // the handler must never run before it knows where to pass faults on.
    // SAFETY: all-zero bytes are a valid `sigaction` (SIG_DFL, no flags).
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a null `act` only reads the current action into `old`, a
    // valid, writable `sigaction`.
    if unsafe { libc::sigaction(libc::SIGBUS, ptr::null(), &mut old) } != 0 {
        return Err(sigaction_error("read"));
    }
    // Never freed: the handler may read it at any time from now on. (Only a
    // failed installation below, then retried, leaks a previous copy.)
    let old = Box::into_raw(Box::new(old));
    // Release: the handler Acquire-loads this pointer, so it sees the saved
    // action and the page size, before the handler can be installed below.
    PREVIOUS.store(old, Ordering::Release);

    // SAFETY: all-zero bytes are a valid `sigaction`; the fields used are set.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = on_sigbus as *const () as libc::sighandler_t;
    action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
    // SAFETY:
    // - `action.sa_mask` is a valid `sigset_t` to initialise.
    // - `action` is fully initialised, and `on_sigbus` has the signature
    //   SA_SIGINFO requires; a null `oldact` is allowed.
    let res = unsafe {
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGBUS, &action, ptr::null_mut())
    };
    if res != 0 {
        return Err(sigaction_error("set"));
    }
    // Release: pairs with the Acquire in `guard_installed`.
    INSTALLED.store(true, Ordering::Release);
    Ok(())
}

fn sigaction_error(what: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(
        e.kind(),
        format!(
            "cannot install the SIGBUS guard: sigaction failed to {what} the SIGBUS action: {e}"
        ),
    )
}

/// Whether [`install_sigbus_guard`] has been called (and succeeded) in this
/// process. Readers refuse to map a file until it has.
pub fn guard_installed() -> bool {
    // Acquire: pairs with the Release in `install_sigbus_guard`.
    INSTALLED.load(Ordering::Acquire)
}

/// Whether the guard has been installed.
static INSTALLED: AtomicBool = AtomicBool::new(false);
/// The SIGBUS action from before the guard: written once, before the
/// handler is installed, and never freed.
static PREVIOUS: AtomicPtr<libc::sigaction> = AtomicPtr::new(ptr::null_mut());
/// Set the first time a previous `SA_RESETHAND` handler is called: from
/// then on, faults not ours get the default action, as they would have.
static RESET_FIRED: AtomicBool = AtomicBool::new(false);
static PAGE_SIZE: AtomicUsize = AtomicUsize::new(4096);

// ---------------------------------------------------------------- handler --

/// SIGBUS handler: saves errno, handles the fault, restores errno.
extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: __errno_location has no preconditions; it returns this
    // thread's errno, valid for as long as the thread lives.
    let errno = unsafe { libc::__errno_location() };
    // SAFETY: `errno` is valid and only this thread uses it.
    let saved = unsafe { *errno };
    handle(sig, info, ctx);
    // SAFETY: as above.
    unsafe { *errno = saved };
}

/// For a fault inside a registered reader mapping (the file shrank under
/// it), maps a zero page over the faulting page and records the fault, so
/// the load is retried and reads zero. Anything else goes to the action
/// that was installed before the guard.
fn handle(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo to SA_SIGINFO handlers;
    // `si_addr` is only meaningful (and only used) for kernel faults.
    let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    // BUS_ADRERR is what a load past the end of a mapped file raises; a
    // SIGBUS sent by kill(2) (code <= 0) has no address to repair.
    if code == libc::BUS_ADRERR && repair(addr) {
        return;
    }
    forward(sig, info, ctx, code > 0);
}

/// Maps a zero page over `addr` if it lies in a reader mapping, and marks
/// that mapping faulted. Lock-free: atomic loads only.
fn repair(addr: usize) -> bool {
    // Relaxed: published by the Release store of PREVIOUS, which the
    // handler could only be installed after.
    let page_size = PAGE_SIZE.load(Ordering::Relaxed);
    for chunk in &CHUNKS {
        // Acquire: pairs with the Release in `claim`.
        let chunk = chunk.load(Ordering::Acquire);
        if chunk.is_null() {
            break;
        }
        // SAFETY: as in `slot`: a leaked, initialised, immortal chunk.
        let chunk = unsafe { &*chunk };
        for slot in chunk {
            let Some((start, len, writer)) = slot.range() else {
                continue;
            };
            if addr < start || addr - start >= len {
                continue;
            }
            if writer {
                return darken(slot, start, len);
            }
            let page = addr & !(page_size - 1);
            // SAFETY:
            // - `page` is page-aligned and lies inside a live read-only
            //   mapping made for a reader: live mappings do not overlap, and
            //   the faulting one stays mapped until its loads are done.
            // - Replacing that page with zeros changes only what that reader
            //   sees, and the reader discards what it read once it sees
            //   `faulted`.
            // - mmap is a plain system call, safe to make in a handler.
            let res = unsafe {
                libc::mmap(
                    page as *mut libc::c_void,
                    page_size,
                    libc::PROT_READ,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                    -1,
                    0,
                )
            };
            if res == libc::MAP_FAILED {
                return false;
            }
            // Release: the reader acquires this after its loads.
            slot.faulted.store(true, Ordering::Release);
            return true;
        }
    }
    false
}

/// A fault inside the writer range `start..start + len`: its file was
/// truncated. The first thread to fault maps private zeroed memory over the
/// whole range and marks it dark; others wait for that, then retry
/// (`protocol::darken`, modelled with loom). Lock-free but for that wait,
/// which is one system call long.
fn darken(slot: &Slot, start: usize, len: usize) -> bool {
    let map = || {
        // SAFETY:
        // - `start..start + len` is a live writer mapping made by this
        //   process (registered until it is unmapped), page-aligned.
        // - Replacing it with private memory of the same size keeps every
        //   handle's pointer valid; only this process's stores land there
        //   from now on, which is the point.
        // - mmap is a plain system call, safe to make in a handler.
        let res = unsafe {
            libc::mmap(
                start as *mut libc::c_void,
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        res != libc::MAP_FAILED
    };
    // SAFETY: sched_yield has no preconditions and is a plain system call.
    let pause = || unsafe {
        libc::sched_yield();
    };
    protocol::darken(&slot.dark, &DARK_EVENTS, map, pause)
}

/// Hands a fault that is not ours to the action from before the guard.
/// `from_kernel`: the fault came from an instruction, which faults again
/// when the handler returns; otherwise someone sent the signal.
fn forward(
    sig: libc::c_int,
    info: *mut libc::siginfo_t,
    ctx: *mut libc::c_void,
    from_kernel: bool,
) {
    // Acquire: pairs with the Release in `install_sigbus_guard`.
    let prev = PREVIOUS.load(Ordering::Acquire);
    // SAFETY: PREVIOUS is set before the handler is installed, to a leaked
    // `sigaction` that is never written again; null cannot happen, but is
    // handled as SIG_DFL.
    let prev = unsafe { prev.as_ref() };
    let handler = prev.map_or(libc::SIG_DFL, |p| p.sa_sigaction);
    let flags = prev.map_or(0, |p| p.sa_flags);

    if handler == libc::SIG_IGN {
        if from_kernel {
            // Back to SIG_IGN: the kernel does not ignore a fault, it kills
            // the process, as it would have without us.
            restore(prev);
        }
        return;
    }
    let one_shot_spent = flags & libc::SA_RESETHAND != 0
        // Relaxed: only this flag is exchanged; first caller wins.
        && RESET_FIRED.swap(true, Ordering::Relaxed);
    if handler == libc::SIG_DFL || one_shot_spent {
        // The default action: put it back and let the fault happen again,
        // or, for a sent signal, send it again (it stays blocked, hence
        // pending, until this handler returns).
        restore(None);
        if !from_kernel {
            // SAFETY: raise is async-signal-safe.
            unsafe { libc::raise(sig) };
        }
        return;
    }
    // A handler function implies a saved action (no panic in a handler).
    if let Some(prev) = prev {
        call_previous(prev, sig, info, ctx);
    }
}

/// Installs `action`, or SIG_DFL if `None`, for SIGBUS.
fn restore(action: Option<&libc::sigaction>) {
    // SAFETY: all-zero bytes are a valid `sigaction`: SIG_DFL, no flags,
    // an empty mask.
    let dfl: libc::sigaction = unsafe { std::mem::zeroed() };
    let action = action.unwrap_or(&dfl);
    // SAFETY: `action` is a valid `sigaction`; sigaction is
    // async-signal-safe.
    unsafe { libc::sigaction(libc::SIGBUS, action, ptr::null_mut()) };
}

/// Calls the previous handler function as the kernel would have: with its
/// `sa_mask` blocked, SIGBUS itself unblocked if it asked for SA_NODEFER,
/// and with one or three arguments as SA_SIGINFO says.
fn call_previous(
    prev: &libc::sigaction,
    sig: libc::c_int,
    info: *mut libc::siginfo_t,
    ctx: *mut libc::c_void,
) {
    // SAFETY: all-zero bytes are a valid `sigset_t`, overwritten below.
    let mut saved: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY:
    // - `prev.sa_mask` is a valid signal set from the kernel; `saved` is a
    //   valid, writable one. pthread_sigmask is a thin wrapper around the
    //   rt_sigprocmask system call, safe in a handler.
    // - SIGBUS is blocked while this handler runs (it was installed without
    //   SA_NODEFER); with SA_NODEFER the previous handler expects it not to
    //   be, unless its own mask blocks it.
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, &prev.sa_mask, &mut saved);
        if prev.sa_flags & libc::SA_NODEFER != 0 && libc::sigismember(&prev.sa_mask, sig) != 1 {
            let mut only = std::mem::zeroed();
            libc::sigemptyset(&mut only);
            libc::sigaddset(&mut only, sig);
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &only, ptr::null_mut());
        }
    }
    let handler = prev.sa_sigaction;
    if prev.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: a handler installed with SA_SIGINFO has this signature,
        // and gets the arguments the kernel gave us.
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { std::mem::transmute(handler) };
        f(sig, info, ctx);
    } else {
        // SAFETY: a handler installed without SA_SIGINFO has this signature.
        let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(handler) };
        f(sig);
    }
    // SAFETY: `saved` is the mask from before, as filled in above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &saved, ptr::null_mut()) };
}
