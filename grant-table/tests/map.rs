//! GNTTABOP_map_grant_ref / unmap: every status the map path can return, and the
//! GTF_reading / GTF_writing bookkeeping in the shared entry.

mod common;

use std::sync::atomic::Ordering;

use common::*;
use grant_table::*;

const BACKEND: DomId = 0;
const GUEST: DomId = 1;

#[test]
fn map_returns_frame_and_sets_reading_writing() {
    let w = TestWorld::new();
    let g = w.dom(GUEST);
    let r = g.guest.grant_foreign_access(BACKEND, 5, false).unwrap();
    assert_eq!(g.flags(r), GTF_PERMIT_ACCESS);

    assert_eq!(g.active.map_grant_ref(r, BACKEND, true), Ok(5));
    assert_eq!(g.flags(r), GTF_PERMIT_ACCESS | GTF_READING);
    assert_eq!(g.active.map_grant_ref(r, BACKEND, false), Ok(5));
    assert_eq!(g.flags(r), GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING);
    let a = g.active.active_entry(r).unwrap();
    assert_eq!((a.readers, a.writers, a.domid, a.frame), (1, 1, BACKEND, 5));

    // Last writer goes: GTF_writing cleared, GTF_reading kept for the reader.
    assert_eq!(g.active.unmap_grant_ref(r, false), Ok(()));
    assert_eq!(g.flags(r), GTF_PERMIT_ACCESS | GTF_READING);
    assert_eq!(g.guest.query_foreign_access(r), Ok(GTF_READING));
    // Last pin goes: everything cleared.
    assert_eq!(g.active.unmap_grant_ref(r, true), Ok(()));
    assert_eq!(g.flags(r), GTF_PERMIT_ACCESS);
    assert_eq!(g.guest.query_foreign_access(r), Ok(0));
    assert_quiescent(&w);
}

#[test]
fn map_of_ref_past_table_is_bad_gntref() {
    let w = TestWorld::new();
    let g = w.dom(GUEST);
    assert_eq!(
        g.active.map_grant_ref(NR_ENTRIES, BACKEND, true),
        Err(GNTST_BAD_GNTREF)
    );
    assert_eq!(
        g.active.map_grant_ref(u32::MAX, BACKEND, false),
        Err(GNTST_BAD_GNTREF)
    );
    assert_eq!(
        gnttab_map_grant_ref(&w, BACKEND, GUEST, NR_ENTRIES, GNTMAP_HOST_MAP).map(|_| ()),
        Err(GNTST_BAD_GNTREF)
    );
}

#[test]
fn map_without_host_or_device_flag_is_bad_gntref() {
    let w = TestWorld::new();
    let g = w.dom(GUEST);
    let r = g.guest.grant_foreign_access(BACKEND, 1, false).unwrap();
    assert_eq!(
        gnttab_map_grant_ref(&w, BACKEND, GUEST, r, GNTMAP_READONLY).map(|_| ()),
        Err(GNTST_BAD_GNTREF)
    );
    assert_quiescent(&w);
}

#[test]
fn map_of_unknown_domain_or_domid_self_is_bad_domain() {
    let w = TestWorld::new();
    assert_eq!(
        gnttab_map_grant_ref(&w, BACKEND, 9, 8, GNTMAP_HOST_MAP).map(|_| ()),
        Err(GNTST_BAD_DOMAIN)
    );
    // Xen's map looks the domain up by id only: DOMID_SELF is not a domain there.
    assert_eq!(
        gnttab_map_grant_ref(&w, BACKEND, DOMID_SELF, 8, GNTMAP_HOST_MAP).map(|_| ()),
        Err(GNTST_BAD_DOMAIN)
    );
}

#[test]
fn map_of_invalid_entry_is_general_error() {
    let w = TestWorld::new();
    let g = w.dom(GUEST);
    // Ref 9 was never granted: GTF_invalid.
    assert_eq!(
        g.active.map_grant_ref(9, BACKEND, true),
        Err(GNTST_GENERAL_ERROR)
    );
    assert_eq!(g.flags(9), GTF_INVALID);
}

#[test]
fn map_by_a_domain_other_than_the_grantee_is_general_error() {
    let w = TestWorld::new();
    let g = w.dom(GUEST);
    let r = g.guest.grant_foreign_access(BACKEND, 1, false).unwrap();
    assert_eq!(g.active.map_grant_ref(r, 2, true), Err(GNTST_GENERAL_ERROR));
    assert_eq!(
        g.flags(r),
        GTF_PERMIT_ACCESS,
        "a refused map leaves no bit behind"
    );
    assert_quiescent(&w);
}

#[test]
fn map_of_accept_transfer_or_sub_page_entry_is_general_error() {
    let w = TestWorld::new();
    let g = w.dom(GUEST);
    let t = g.guest.table();
    t.header(10)
        .unwrap()
        .store(combo(GTF_ACCEPT_TRANSFER, BACKEND), Ordering::Release);
    assert_eq!(
        g.active.map_grant_ref(10, BACKEND, true),
        Err(GNTST_GENERAL_ERROR)
    );
    t.header(11).unwrap().store(
        combo(GTF_PERMIT_ACCESS | GTF_SUB_PAGE, BACKEND),
        Ordering::Release,
    );
    assert_eq!(
        g.active.map_grant_ref(11, BACKEND, true),
        Err(GNTST_GENERAL_ERROR)
    );
    // Copies are not refused for GTF_sub_page (acquire_grant_for_copy's mask).
    assert!(g.active.acquire_for_copy(11, BACKEND, true).is_ok());
    assert_eq!(g.active.release_after_copy(11, true), Ok(()));
    assert_quiescent(&w);
}

#[test]
fn writable_map_of_readonly_grant_is_general_error() {
    let w = TestWorld::new();
    let g = w.dom(GUEST);
    let r = g.guest.grant_foreign_access(BACKEND, 2, true).unwrap();
    assert_eq!(
        g.active.map_grant_ref(r, BACKEND, false),
        Err(GNTST_GENERAL_ERROR)
    );
    assert_eq!(g.flags(r), GTF_PERMIT_ACCESS | GTF_READONLY);
    // Also refused when a read-only pin already exists.
    assert_eq!(g.active.map_grant_ref(r, BACKEND, true), Ok(2));
    assert_eq!(
        g.active.map_grant_ref(r, BACKEND, false),
        Err(GNTST_GENERAL_ERROR)
    );
    assert_eq!(g.flags(r), GTF_PERMIT_ACCESS | GTF_READONLY | GTF_READING);
    assert_eq!(g.active.unmap_grant_ref(r, true), Ok(()));
    assert_quiescent(&w);
}

#[test]
fn pins_of_another_domain_make_map_general_error() {
    let w = TestWorld::new();
    let g = w.dom(GUEST);
    let r = g.guest.grant_foreign_access(BACKEND, 3, false).unwrap();
    assert_eq!(g.active.map_grant_ref(r, BACKEND, true), Ok(3));
    // A misbehaving guest retargets the pinned entry behind the hypervisor's back.
    g.guest
        .table()
        .header(r)
        .unwrap()
        .store(combo(GTF_PERMIT_ACCESS | GTF_READING, 2), Ordering::Release);
    // The active entry still says domain 0 holds it: domain 2 is refused.
    assert_eq!(g.active.map_grant_ref(r, 2, true), Err(GNTST_GENERAL_ERROR));
    assert_eq!(g.active.unmap_grant_ref(r, true), Ok(()));
}

#[test]
fn pin_counter_overflow_is_general_error() {
    let w = TestWorld::new();
    let g = w.dom(GUEST);
    let r = g.guest.grant_foreign_access(BACKEND, 4, false).unwrap();
    for _ in 0..128 {
        assert_eq!(g.active.map_grant_ref(r, BACKEND, true), Ok(4));
    }
    // Counter reached 0x80: Xen refuses any further pin.
    assert_eq!(
        g.active.map_grant_ref(r, BACKEND, true),
        Err(GNTST_GENERAL_ERROR)
    );
    assert_eq!(
        g.active.map_grant_ref(r, BACKEND, false),
        Err(GNTST_GENERAL_ERROR)
    );
    assert_eq!(g.active.active_entry(r).unwrap().readers, 128);
    for _ in 0..128 {
        assert_eq!(g.active.unmap_grant_ref(r, true), Ok(()));
    }
    assert_quiescent(&w);
}

#[test]
fn map_of_frame_the_granter_lacks_is_bad_page_and_leaves_no_pin() {
    let w = TestWorld::new();
    let g = w.dom(GUEST);
    let r = g
        .guest
        .grant_foreign_access(BACKEND, NR_FRAMES as u32 + 3, false)
        .unwrap();
    assert_eq!(
        gnttab_map_grant_ref(&w, BACKEND, GUEST, r, GNTMAP_HOST_MAP).map(|_| ()),
        Err(GNTST_BAD_PAGE)
    );
    assert_quiescent(&w);
    assert_eq!(g.guest.end_foreign_access(r), Ok(()));
}

#[test]
fn world_map_points_at_the_granted_frame() {
    let w = TestWorld::new();
    let g = w.dom(GUEST);
    g.write(6, 100, b"hello backend");
    let r = g.guest.grant_foreign_access(BACKEND, 6, true).unwrap();
    let m = gnttab_map_grant_ref(&w, BACKEND, GUEST, r, GNTMAP_HOST_MAP | GNTMAP_READONLY).unwrap();
    assert_eq!((m.domid, m.gref, m.frame, m.readonly), (GUEST, r, 6, true));
    let mut got = [0u8; 13];
    // SAFETY: the mapping points at a live 4 KiB frame of the test domain.
    unsafe { std::ptr::copy_nonoverlapping(m.ptr.as_ptr().add(100), got.as_mut_ptr(), 13) };
    assert_eq!(&got, b"hello backend");
    assert_eq!(g.guest.end_foreign_access(r), Err(GrantError::InUse(r)));
    assert_eq!(gnttab_unmap_grant_ref(&w, m), Ok(()));
    assert_eq!(g.guest.end_foreign_access(r), Ok(()));
    assert_quiescent(&w);
}

#[test]
fn unmap_of_what_is_not_mapped_is_bad_handle() {
    let w = TestWorld::new();
    let g = w.dom(GUEST);
    let r = g.guest.grant_foreign_access(BACKEND, 1, false).unwrap();
    assert_eq!(g.active.unmap_grant_ref(r, true), Err(GNTST_BAD_HANDLE));
    assert_eq!(
        g.active.unmap_grant_ref(NR_ENTRIES, true),
        Err(GNTST_BAD_HANDLE)
    );
    // A read-only pin cannot be dropped as a writable one, nor the reverse.
    assert_eq!(g.active.map_grant_ref(r, BACKEND, true), Ok(1));
    assert_eq!(g.active.unmap_grant_ref(r, false), Err(GNTST_BAD_HANDLE));
    assert_eq!(g.active.unmap_grant_ref(r, true), Ok(()));
    assert_eq!(g.active.unmap_grant_ref(r, true), Err(GNTST_BAD_HANDLE));
    assert_quiescent(&w);
}

#[test]
fn map_after_end_foreign_access_fails() {
    let w = TestWorld::new();
    let g = w.dom(GUEST);
    let r = g.guest.grant_foreign_access(BACKEND, 1, false).unwrap();
    assert_eq!(g.guest.end_foreign_access_ref(r), Ok(()));
    assert_eq!(
        g.active.map_grant_ref(r, BACKEND, true),
        Err(GNTST_GENERAL_ERROR)
    );
    assert_eq!(
        g.active.acquire_for_copy(r, BACKEND, true),
        Err(GNTST_GENERAL_ERROR)
    );
}

#[test]
fn release_all_pins_of_a_dying_domain() {
    let w = TestWorld::new();
    let g = w.dom(GUEST);
    let a = g.guest.grant_foreign_access(BACKEND, 1, false).unwrap();
    let b = g.guest.grant_foreign_access(BACKEND, 2, true).unwrap();
    let c = g.guest.grant_foreign_access(2, 3, false).unwrap();
    g.active.map_grant_ref(a, BACKEND, false).unwrap();
    g.active.map_grant_ref(a, BACKEND, true).unwrap();
    g.active.map_grant_ref(b, BACKEND, true).unwrap();
    g.active.map_grant_ref(c, 2, true).unwrap();
    assert_eq!(g.active.release_all_pins_of(BACKEND), 2);
    assert_eq!(g.flags(a), GTF_PERMIT_ACCESS);
    assert_eq!(g.flags(b), GTF_PERMIT_ACCESS | GTF_READONLY);
    assert_eq!(
        g.flags(c),
        GTF_PERMIT_ACCESS | GTF_READING,
        "other domains' pins stay"
    );
    assert_eq!(g.guest.end_foreign_access(a), Ok(()));
    assert_eq!(g.guest.end_foreign_access(c), Err(GrantError::InUse(c)));
}
