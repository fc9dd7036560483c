//! The guard's own tests: faults read as zeros, slots are reused, a full
//! registry refuses more.

use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::Mutex;

use super::maps::{MapError, ReadMap};
use super::slots::{claim, release, Slot, ALLOC, CHUNK_SLOTS};
use super::{install_sigbus_guard, MAX_MAPPINGS};

/// Held by tests that map files (readers' or writers'), so
/// `a_full_registry_refuses_more` does not starve them.
static MAPPING: Mutex<()> = Mutex::new(());

pub(crate) fn mapping() -> std::sync::MutexGuard<'static, ()> {
    MAPPING.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn shrinking_file_reads_zero_and_reports_fault() {
    let _m = mapping();
    install_sigbus_guard().unwrap();
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(&[0xAB; 3 * 4096]).unwrap();
    let map = ReadMap::new(&f, 3 * 4096).unwrap();
    assert_eq!(map.load(4096), 0xABAB_ABAB_ABAB_ABAB);
    assert!(!map.faulted());
    f.set_len(100).unwrap();
    // Past the new end of file: would be SIGBUS, reads zero instead.
    assert_eq!(map.load(2 * 4096), 0);
    assert!(map.faulted());
}

#[test]
fn slots_are_reused() {
    let _m = mapping();
    install_sigbus_guard().unwrap();
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(&[1; 8]).unwrap();
    let used = || ALLOC.lock().unwrap().used;
    let before = used();
    for _ in 0..3 * CHUNK_SLOTS {
        let map = ReadMap::new(&f, 8).unwrap();
        assert_eq!(map.load(0), 0x0101_0101_0101_0101);
    }
    assert!(used() <= before + 1, "{before} slots used, then {}", used());
}

#[test]
fn a_full_registry_refuses_more() {
    let _m = mapping();
    install_sigbus_guard().unwrap();
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(&[1; 8]).unwrap();
    let taken: Vec<usize> = std::iter::from_fn(claim).collect();
    let held = ALLOC.lock().unwrap().used;
    assert_eq!(held, MAX_MAPPINGS);
    assert!(matches!(ReadMap::new(&f, 8), Err(MapError::Full)));
    let e = MapError::Full;
    assert!(e.to_string().contains("65536 files mapped"), "{e}");
    for i in taken {
        release(i);
    }
    assert!(ReadMap::new(&f, 8).is_ok());
}

#[test]
fn a_slot_reads_back_what_was_published() {
    let slot = Slot::EMPTY;
    assert_eq!(slot.range(), None);
    slot.publish(0x1000, 24, false);
    assert_eq!(slot.range(), Some((0x1000, 24, false)));
    slot.retract();
    assert_eq!(slot.range(), None);
    assert_eq!(slot.seq.load(Ordering::Relaxed), 4);
}
