//! `ActiveGrantTable::with_copy_pin`: acquire_grant_for_copy + copy +
//! release_grant_for_copy under one hold of the active entry. While the closure runs
//! the grant is pinned exactly as by `acquire_for_copy` (GTF_reading / GTF_writing set,
//! the guest cannot revoke); afterwards nothing is left pinned. Refusals are the same
//! statuses `acquire_for_copy` returns, and the closure does not run.

mod common;

use common::*;
use grant_table::*;

const BACKEND: DomId = 0;
const GUEST: DomId = 1;
const OTHER: DomId = 2;

#[test]
fn pins_for_the_closure_only() {
    let w = TestWorld::new();
    let g = w.dom(GUEST);
    let r = g.guest.grant_foreign_access(BACKEND, 7, false).unwrap();

    let frame = g
        .active
        .with_copy_pin(r, BACKEND, true, |frame| {
            // Pinned read-only: GTF_reading set, the guest cannot end access.
            assert_eq!(g.flags(r), GTF_PERMIT_ACCESS | GTF_READING);
            assert!(g.guest.end_foreign_access(r).is_err());
            frame
        })
        .unwrap();
    assert_eq!(frame, 7);
    assert_eq!(g.flags(r), GTF_PERMIT_ACCESS);

    g.active
        .with_copy_pin(r, BACKEND, false, |_| {
            // (The closure must not call into the table: the entry's lock is held.)
            assert_eq!(g.flags(r), GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING);
        })
        .unwrap_or_else(|st| panic!("status {st}"));
    assert_eq!(g.flags(r), GTF_PERMIT_ACCESS);
    assert_quiescent(&w);
    // Nothing pinned: the guest can revoke now.
    g.guest.end_foreign_access(r).unwrap();
}

#[test]
fn keeps_a_concurrent_map_pin_and_its_bits() {
    let w = TestWorld::new();
    let g = w.dom(GUEST);
    let r = g.guest.grant_foreign_access(BACKEND, 3, false).unwrap();
    assert_eq!(g.active.map_grant_ref(r, BACKEND, true), Ok(3));
    // A writable copy pin on an entry mapped read-only sets GTF_writing for its
    // duration only; GTF_reading stays for the map.
    g.active
        .with_copy_pin(r, BACKEND, false, |_| {
            assert_eq!(g.flags(r), GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING);
        })
        .unwrap();
    assert_eq!(g.flags(r), GTF_PERMIT_ACCESS | GTF_READING);
    let a = g.active.active_entry(r).unwrap();
    assert_eq!((a.readers, a.writers), (1, 0));
    g.active.unmap_grant_ref(r, true).unwrap();
    assert_quiescent(&w);
}

#[test]
fn refusals_match_acquire_for_copy_and_skip_the_closure() {
    let w = TestWorld::new();
    let g = w.dom(GUEST);
    let ro = g.guest.grant_foreign_access(BACKEND, 1, true).unwrap();
    let other = g.guest.grant_foreign_access(OTHER, 2, false).unwrap();
    let cases = [
        (NR_ENTRIES, BACKEND, true),
        (u32::MAX, BACKEND, false),
        // Writing a read-only grant.
        (ro, BACKEND, false),
        // Granted to another domain.
        (other, BACKEND, true),
        // Never granted.
        (NR_ENTRIES - 1, BACKEND, true),
    ];
    for (gref, caller, readonly) in cases {
        let want = g.active.acquire_for_copy(gref, caller, readonly);
        assert!(want.is_err(), "{gref}: acquire succeeded");
        let got = g.active.with_copy_pin(gref, caller, readonly, |_| {
            panic!("closure ran for refused ref {gref}")
        });
        assert_eq!(got, want.map(|_| ()), "ref {gref} readonly {readonly}");
    }
    // Pins of another domain refuse too.
    let shared = g.guest.grant_foreign_access(BACKEND, 4, false).unwrap();
    assert_eq!(g.active.map_grant_ref(shared, BACKEND, true), Ok(4));
    assert_eq!(
        g.active.with_copy_pin(shared, OTHER, true, |_| ()),
        Err(GNTST_GENERAL_ERROR)
    );
    g.active.unmap_grant_ref(shared, true).unwrap();
    assert_quiescent(&w);
}
