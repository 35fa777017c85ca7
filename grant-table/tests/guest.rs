//! The granting guest's side: grant / end / query, the order of the entry writes,
//! and the reference allocator.

mod common;

use std::collections::HashSet;

use common::*;
use grant_table::*;
use proptest::prelude::*;

const BACKEND: DomId = 0;
const GUEST: DomId = 1;

#[test]
fn grant_writes_domid_frame_and_flags() {
    let w = TestWorld::new();
    let g = w.dom(GUEST);
    let r = g
        .guest
        .grant_foreign_access(BACKEND, 0x1234_5678, false)
        .unwrap();
    assert!(r >= GNTTAB_NR_RESERVED_ENTRIES);
    assert_eq!(
        g.guest.table().read(r),
        Some(GrantEntryV1 {
            flags: GTF_PERMIT_ACCESS,
            domid: BACKEND,
            frame: 0x1234_5678
        })
    );
    let ro = g.guest.grant_foreign_access(7, 3, true).unwrap();
    assert_ne!(ro, r);
    assert_eq!(
        g.guest.table().read(ro),
        Some(GrantEntryV1 {
            flags: GTF_PERMIT_ACCESS | GTF_READONLY,
            domid: 7,
            frame: 3
        })
    );
}

#[test]
fn end_access_revokes_and_frees_the_ref() {
    let w = TestWorld::new();
    let g = w.dom(GUEST);
    let before = g.guest.free_count();
    let r = g.guest.grant_foreign_access(BACKEND, 1, false).unwrap();
    assert_eq!(g.guest.free_count(), before - 1);
    assert_eq!(g.guest.query_foreign_access(r), Ok(0));
    assert_eq!(g.guest.end_foreign_access(r), Ok(()));
    assert_eq!(g.flags(r) & GTF_TYPE_MASK, GTF_INVALID);
    assert_eq!(g.guest.free_count(), before);
    // Ending it again: the ref is no longer ours.
    assert_eq!(g.guest.end_foreign_access(r), Err(GrantError::BadRef(r)));
}

#[test]
fn end_access_is_refused_while_mapped_then_succeeds_after_unmap() {
    let w = TestWorld::new();
    let g = w.dom(GUEST);
    let r = g.guest.grant_foreign_access(BACKEND, 1, false).unwrap();
    g.active.map_grant_ref(r, BACKEND, false).unwrap();
    assert_eq!(
        g.guest.query_foreign_access(r),
        Ok(GTF_READING | GTF_WRITING)
    );
    assert_eq!(g.guest.end_foreign_access(r), Err(GrantError::InUse(r)));
    assert_eq!(g.guest.end_foreign_access_ref(r), Err(GrantError::InUse(r)));
    assert_eq!(
        g.flags(r),
        GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING,
        "refusal changes nothing"
    );
    // Still allocated and still granted: the backend can keep using it.
    assert_eq!(g.guest.free_ref(r), Err(GrantError::StillGranted(r)));
    g.active.unmap_grant_ref(r, false).unwrap();
    assert_eq!(g.guest.end_foreign_access(r), Ok(()));
}

#[test]
fn ref_apis_refuse_foreign_reserved_and_out_of_range_refs() {
    let w = TestWorld::new();
    let g = w.dom(GUEST);
    for r in [0, 7, 20, NR_ENTRIES, u32::MAX] {
        assert_eq!(g.guest.end_foreign_access(r), Err(GrantError::BadRef(r)));
        assert_eq!(
            g.guest.grant_foreign_access_ref(r, BACKEND, 1, false),
            Err(GrantError::BadRef(r))
        );
        assert_eq!(g.guest.free_ref(r), Err(GrantError::BadRef(r)));
    }
    assert_eq!(
        g.guest.query_foreign_access(NR_ENTRIES),
        Err(GrantError::BadRef(NR_ENTRIES))
    );
}

#[test]
fn regranting_a_live_ref_is_refused() {
    let w = TestWorld::new();
    let g = w.dom(GUEST);
    let r = g.guest.alloc_ref().unwrap();
    g.guest
        .grant_foreign_access_ref(r, BACKEND, 1, false)
        .unwrap();
    assert_eq!(
        g.guest.grant_foreign_access_ref(r, 2, 9, false),
        Err(GrantError::StillGranted(r))
    );
    assert_eq!(g.guest.table().read(r).unwrap().domid, BACKEND);
    g.guest.end_foreign_access_ref(r).unwrap();
    g.guest.grant_foreign_access_ref(r, 2, 9, true).unwrap();
    assert_eq!(g.guest.table().read(r).unwrap().frame, 9);
    g.guest.end_foreign_access(r).unwrap();
}

#[test]
fn allocator_runs_dry_with_no_space_and_never_hands_out_reserved_refs() {
    let w = TestWorld::new();
    let g = w.dom(GUEST);
    let mut got = HashSet::new();
    while let Ok(r) = g.guest.grant_foreign_access(BACKEND, 1, true) {
        assert!((GNTTAB_NR_RESERVED_ENTRIES..NR_ENTRIES).contains(&r));
        assert!(got.insert(r), "ref {r} handed out twice");
    }
    assert_eq!(got.len() as u32, NR_ENTRIES - GNTTAB_NR_RESERVED_ENTRIES);
    assert_eq!(g.guest.alloc_ref(), Err(GrantError::NoSpace));
    assert_eq!(g.guest.free_count(), 0);
}

#[test]
fn a_table_no_bigger_than_the_reserved_area_has_no_refs() {
    let buf = AlignedBuf::new(8 * 8);
    // SAFETY: `buf` outlives the view and is only accessed through it.
    let t =
        unsafe { GuestGrantTable::from_raw(buf.ptr().cast(), GNTTAB_NR_RESERVED_ENTRIES) }.unwrap();
    assert_eq!(t.free_count(), 0);
    assert_eq!(t.alloc_ref(), Err(GrantError::NoSpace));
    drop(t);
}

#[derive(Debug, Clone)]
enum Op {
    Alloc,
    Free(usize),
    FreeRaw(u32),
}

proptest! {
    #[test]
    fn allocator_never_double_hands_a_ref(ops in prop::collection::vec(
        prop_oneof![3 => Just(Op::Alloc), 2 => (0usize..64).prop_map(Op::Free), 1 => (0u32..40).prop_map(Op::FreeRaw)],
        1..300,
    )) {
        let buf = AlignedBuf::new(NR_ENTRIES as usize * 8);
        // SAFETY: `buf` outlives the view and is only accessed through it.
        let t = unsafe { GuestGrantTable::from_raw(buf.ptr().cast(), NR_ENTRIES) }.unwrap();
        let mut held: Vec<GrantRef> = Vec::new();
        for op in ops {
            match op {
                Op::Alloc => match t.alloc_ref() {
                    Ok(r) => {
                        prop_assert!((GNTTAB_NR_RESERVED_ENTRIES..NR_ENTRIES).contains(&r));
                        prop_assert!(!held.contains(&r), "ref {} handed out twice", r);
                        held.push(r);
                    }
                    Err(e) => {
                        prop_assert_eq!(e, GrantError::NoSpace);
                        prop_assert_eq!(held.len() as u32, NR_ENTRIES - GNTTAB_NR_RESERVED_ENTRIES);
                    }
                },
                Op::Free(i) if !held.is_empty() => {
                    let r = held.swap_remove(i % held.len());
                    prop_assert_eq!(t.free_ref(r), Ok(()));
                }
                Op::Free(_) => {}
                Op::FreeRaw(r) => {
                    // Freeing what is not held must be refused and change nothing.
                    if let Some(pos) = held.iter().position(|&h| h == r) {
                        held.swap_remove(pos);
                        prop_assert_eq!(t.free_ref(r), Ok(()));
                    } else {
                        prop_assert_eq!(t.free_ref(r), Err(GrantError::BadRef(r)));
                    }
                }
            }
            prop_assert_eq!(t.free_count() as usize, (NR_ENTRIES - GNTTAB_NR_RESERVED_ENTRIES) as usize - held.len());
        }
        drop(t);
    }
}
