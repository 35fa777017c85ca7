//! GNTTABOP_copy: every status the copy path can return, data movement, the
//! per-batch pin cache, and a property test that no input panics, leaks a pin or gets
//! a status other than the one Xen's rules give.

mod common;

use common::*;
use grant_table::*;
use proptest::prelude::*;

const BACKEND: DomId = 0;
const GUEST: DomId = 1;
const OTHER: DomId = 2;

fn run(w: &TestWorld, ops: &mut [GnttabCopy]) -> Vec<i16> {
    gnttab_copy(w, BACKEND, ops);
    ops.iter().map(|o| o.status).collect()
}

#[test]
fn copy_from_grant_into_local_frame() {
    let w = TestWorld::new();
    let g = w.dom(GUEST);
    let pattern: Vec<u8> = (0..200u8).collect();
    g.write(3, 1000, &pattern);
    let r = g.guest.grant_foreign_access(BACKEND, 3, true).unwrap();
    let mut ops = [copy_from_grant(GUEST, r, 1000, 7, 50, 200)];
    assert_eq!(run(&w, &mut ops), [GNTST_OKAY]);
    assert_eq!(w.dom(BACKEND).read(7, 50, 200), pattern);
    assert_quiescent(&w);
}

#[test]
fn copy_from_local_frame_into_grant() {
    let w = TestWorld::new();
    let g = w.dom(GUEST);
    w.dom(BACKEND).write(2, 0, &[0xAB; 64]);
    let r = g.guest.grant_foreign_access(BACKEND, 9, false).unwrap();
    let mut ops = [copy_to_grant(2, 0, GUEST, r, 4032, 64)];
    assert_eq!(run(&w, &mut ops), [GNTST_OKAY]);
    assert_eq!(g.read(9, 4032, 64), vec![0xAB; 64]);
    assert_eq!(g.read(9, 3968, 64), vec![0; 64]);
    assert_quiescent(&w);
}

#[test]
fn copy_between_two_grants_of_two_domains() {
    let w = TestWorld::new();
    w.dom(GUEST).write(1, 0, b"guest one");
    let src = w
        .dom(GUEST)
        .guest
        .grant_foreign_access(BACKEND, 1, true)
        .unwrap();
    let dst = w
        .dom(OTHER)
        .guest
        .grant_foreign_access(BACKEND, 4, false)
        .unwrap();
    let mut ops = [GnttabCopy {
        source: GnttabCopyPtr::from_gref(src, GUEST, 0),
        dest: GnttabCopyPtr::from_gref(dst, OTHER, 10),
        len: 9,
        flags: GNTCOPY_SOURCE_GREF | GNTCOPY_DEST_GREF,
        status: 1,
    }];
    assert_eq!(run(&w, &mut ops), [GNTST_OKAY]);
    assert_eq!(w.dom(OTHER).read(4, 10, 9), b"guest one");
    assert_quiescent(&w);
}

#[test]
fn local_frame_named_by_numeric_domid_is_permission_denied() {
    let w = TestWorld::new();
    let r = w
        .dom(GUEST)
        .guest
        .grant_foreign_access(BACKEND, 1, false)
        .unwrap();
    // Even the caller's own domid: only DOMID_SELF may name a frame (Xen).
    let mut a = copy_from_grant(GUEST, r, 0, 1, 0, 8);
    a.dest.domid = BACKEND;
    let mut b = copy_to_grant(1, 0, GUEST, r, 0, 8);
    b.source.domid = GUEST;
    let mut ops = [a, b];
    assert_eq!(
        run(&w, &mut ops),
        [GNTST_PERMISSION_DENIED, GNTST_PERMISSION_DENIED]
    );
    assert_quiescent(&w);
}

#[test]
fn gmfn_after_gref_of_same_foreign_domid_is_still_permission_denied() {
    // The first op caches domain 1 for the source side; the second must not get to
    // domain 1's frame 1 just because the domid matches the cache.
    let w = TestWorld::new();
    w.dom(GUEST).write(1, 0, b"secret");
    let r = w
        .dom(GUEST)
        .guest
        .grant_foreign_access(BACKEND, 2, true)
        .unwrap();
    let ok = copy_from_grant(GUEST, r, 0, 3, 0, 6);
    let mut sneaky = copy_from_grant(GUEST, 0, 0, 3, 0, 6);
    sneaky.flags = 0;
    sneaky.source = GnttabCopyPtr::from_gmfn(1, GUEST, 0);
    let mut ops = [ok, sneaky];
    assert_eq!(run(&w, &mut ops), [GNTST_OKAY, GNTST_PERMISSION_DENIED]);
    assert_eq!(w.dom(BACKEND).read(3, 0, 6), vec![0; 6]);
}

#[test]
fn unknown_domain_is_bad_domain() {
    let w = TestWorld::new();
    let mut ops = [
        copy_from_grant(9, 8, 0, 1, 0, 8),
        copy_to_grant(1, 0, 9, 8, 0, 8),
    ];
    assert_eq!(run(&w, &mut ops), [GNTST_BAD_DOMAIN, GNTST_BAD_DOMAIN]);
}

#[test]
fn ref_past_table_is_bad_gntref() {
    let w = TestWorld::new();
    let mut ops = [
        copy_from_grant(GUEST, NR_ENTRIES, 0, 1, 0, 8),
        copy_to_grant(1, 0, GUEST, u32::MAX, 0, 8),
    ];
    assert_eq!(run(&w, &mut ops), [GNTST_BAD_GNTREF, GNTST_BAD_GNTREF]);
}

#[test]
fn bad_grants_are_general_error() {
    let w = TestWorld::new();
    let g = w.dom(GUEST);
    let ro = g.guest.grant_foreign_access(BACKEND, 1, true).unwrap();
    let for_other = g.guest.grant_foreign_access(OTHER, 2, false).unwrap();
    let mut ops = [
        copy_to_grant(1, 0, GUEST, ro, 0, 8), // read-only grant as destination
        copy_from_grant(GUEST, for_other, 0, 1, 0, 8), // granted to another domain
        copy_from_grant(GUEST, 20, 0, 1, 0, 8), // never granted
    ];
    assert_eq!(run(&w, &mut ops), [GNTST_GENERAL_ERROR; 3]);
    assert_quiescent(&w);
}

#[test]
fn missing_frames_are_bad_page() {
    let w = TestWorld::new();
    let r = w
        .dom(GUEST)
        .guest
        .grant_foreign_access(BACKEND, NR_FRAMES as u32, true)
        .unwrap();
    let ok = w
        .dom(GUEST)
        .guest
        .grant_foreign_access(BACKEND, 0, true)
        .unwrap();
    let mut ops = [
        copy_from_grant(GUEST, r, 0, 1, 0, 8), // granted frame does not exist
        copy_from_grant(GUEST, ok, 0, NR_FRAMES, 0, 8), // local frame does not exist
    ];
    assert_eq!(run(&w, &mut ops), [GNTST_BAD_PAGE, GNTST_BAD_PAGE]);
    assert_quiescent(&w);
}

#[test]
fn crossing_the_page_end_is_bad_copy_arg() {
    let w = TestWorld::new();
    let r = w
        .dom(GUEST)
        .guest
        .grant_foreign_access(BACKEND, 1, false)
        .unwrap();
    let mut ops = [
        copy_from_grant(GUEST, r, 4000, 1, 0, 97), // source 4000 + 97 > 4096
        copy_from_grant(GUEST, r, 0, 1, 4095, 2),  // dest 4095 + 2 > 4096
        copy_from_grant(GUEST, r, 4000, 1, 0, 96), // exactly to the end: fine
        copy_from_grant(GUEST, r, u16::MAX, 1, u16::MAX, u16::MAX),
        copy_from_grant(GUEST, r, 4096, 1, 4096, 0), // empty copy at the end: fine
    ];
    assert_eq!(
        run(&w, &mut ops),
        [
            GNTST_BAD_COPY_ARG,
            GNTST_BAD_COPY_ARG,
            GNTST_OKAY,
            GNTST_BAD_COPY_ARG,
            GNTST_OKAY
        ]
    );
    assert_quiescent(&w);
}

#[test]
fn checks_come_in_xen_order() {
    let w = TestWorld::new();
    // Domain before ref, ref before offsets.
    let mut ops = [
        copy_from_grant(9, NR_ENTRIES, 5000, 1, 0, 8),
        copy_from_grant(GUEST, NR_ENTRIES, 5000, 1, 0, 8),
    ];
    assert_eq!(run(&w, &mut ops), [GNTST_BAD_DOMAIN, GNTST_BAD_GNTREF]);
    // Source permission before dest domain.
    let mut a = copy_to_grant(1, 0, 9, 8, 0, 8);
    a.source.domid = BACKEND;
    let mut ops = [a];
    assert_eq!(run(&w, &mut ops), [GNTST_PERMISSION_DENIED]);
}

#[test]
fn a_failed_op_does_not_stop_the_batch() {
    let w = TestWorld::new();
    let g = w.dom(GUEST);
    g.write(1, 0, &[7; 16]);
    let r = g.guest.grant_foreign_access(BACKEND, 1, true).unwrap();
    let mut ops = [
        copy_from_grant(GUEST, r, 0, 2, 0, 16),
        copy_from_grant(9, r, 0, 2, 16, 16),
        copy_from_grant(GUEST, r, 0, 2, 32, 16),
    ];
    assert_eq!(
        run(&w, &mut ops),
        [GNTST_OKAY, GNTST_BAD_DOMAIN, GNTST_OKAY]
    );
    assert_eq!(
        w.dom(BACKEND).read(2, 0, 48),
        [vec![7; 16], vec![0; 16], vec![7; 16]].concat()
    );
    assert_quiescent(&w);
}

#[test]
fn overlapping_copy_within_one_frame_behaves_like_memmove() {
    let w = TestWorld::new();
    let b = w.dom(BACKEND);
    let data: Vec<u8> = (0..100u8).collect();
    b.write(5, 0, &data);
    let mut op = copy_from_grant(0, 0, 0, 5, 10, 100);
    op.flags = 0;
    op.source = GnttabCopyPtr::from_gmfn(5, DOMID_SELF, 0);
    let mut ops = [op];
    assert_eq!(run(&w, &mut ops), [GNTST_OKAY]);
    assert_eq!(b.read(5, 10, 100), data);
    assert_eq!(b.read(5, 0, 10), (0..10u8).collect::<Vec<_>>());
}

#[test]
fn copier_reuses_a_pin_across_ops_and_drops_it_at_the_end() {
    let w = TestWorld::new();
    let g = w.dom(GUEST);
    let r1 = g.guest.grant_foreign_access(BACKEND, 1, true).unwrap();
    let r2 = g.guest.grant_foreign_access(BACKEND, 2, true).unwrap();
    let mut c = GrantCopier::new(&w, BACKEND);
    assert_eq!(c.copy(&copy_from_grant(GUEST, r1, 0, 1, 0, 8)), GNTST_OKAY);
    assert_eq!(g.active.active_entry(r1).unwrap().readers, 1);
    assert_eq!(c.copy(&copy_from_grant(GUEST, r1, 8, 1, 8, 8)), GNTST_OKAY);
    assert_eq!(
        g.active.active_entry(r1).unwrap().readers,
        1,
        "same grant: same pin"
    );
    // While the copier holds the pin the guest cannot revoke.
    assert_eq!(g.guest.end_foreign_access(r1), Err(GrantError::InUse(r1)));
    assert_eq!(c.copy(&copy_from_grant(GUEST, r2, 0, 1, 0, 8)), GNTST_OKAY);
    assert_eq!(
        g.active.active_entry(r1).unwrap().readers,
        0,
        "moved on: old pin dropped"
    );
    assert_eq!(g.active.active_entry(r2).unwrap().readers, 1);
    // A failed op drops what the copier held.
    assert_eq!(
        c.copy(&copy_from_grant(GUEST, r2, 4000, 1, 0, 200)),
        GNTST_BAD_COPY_ARG
    );
    assert_eq!(g.active.active_entry(r2).unwrap().readers, 0);
    assert_eq!(c.copy(&copy_from_grant(GUEST, r2, 0, 1, 0, 8)), GNTST_OKAY);
    drop(c);
    assert_quiescent(&w);
    assert_eq!(g.guest.end_foreign_access(r1), Ok(()));
    assert_eq!(g.guest.end_foreign_access(r2), Ok(()));
}

#[test]
fn copy_local_moves_bytes_both_ways() {
    let w = TestWorld::new();
    let g = w.dom(GUEST);
    let r = g.guest.grant_foreign_access(BACKEND, 4, false).unwrap();
    let ro = g.guest.grant_foreign_access(BACKEND, 5, true).unwrap();
    let mut buf = *b"netback buffer!!";
    let mut c = GrantCopier::new(&w, BACKEND);
    // SAFETY: `buf` is valid for 16 bytes for each call.
    unsafe {
        assert_eq!(
            c.copy_local(GUEST, r, 100, 16, buf.as_mut_ptr(), true),
            GNTST_OKAY
        );
        assert_eq!(
            c.copy_local(GUEST, ro, 0, 16, buf.as_mut_ptr(), true),
            GNTST_GENERAL_ERROR
        );
        assert_eq!(
            c.copy_local(GUEST, r, 4090, 16, buf.as_mut_ptr(), true),
            GNTST_BAD_COPY_ARG
        );
        assert_eq!(
            c.copy_local(9, r, 0, 16, buf.as_mut_ptr(), false),
            GNTST_BAD_DOMAIN
        );
        assert_eq!(
            c.copy_local(GUEST, 99, 0, 16, buf.as_mut_ptr(), false),
            GNTST_BAD_GNTREF
        );
    }
    assert_eq!(g.read(4, 100, 16), b"netback buffer!!");
    g.write(4, 0, b"from the guest..");
    // SAFETY: as above.
    unsafe {
        assert_eq!(
            c.copy_local(GUEST, r, 0, 16, buf.as_mut_ptr(), false),
            GNTST_OKAY
        )
    };
    assert_eq!(&buf, b"from the guest..");
    drop(c);
    assert_quiescent(&w);
}

#[test]
fn end_access_is_refused_while_a_copy_holds_the_pin() {
    let w = TestWorld::new();
    let g = w.dom(GUEST);
    let r = g.guest.grant_foreign_access(BACKEND, 1, false).unwrap();
    assert_eq!(g.active.acquire_for_copy(r, BACKEND, false), Ok(1));
    assert_eq!(g.flags(r), GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING);
    assert_eq!(g.guest.end_foreign_access(r), Err(GrantError::InUse(r)));
    assert_eq!(g.active.release_after_copy(r, false), Ok(()));
    assert_eq!(g.active.release_after_copy(r, false), Err(GNTST_BAD_HANDLE));
    assert_eq!(g.guest.end_foreign_access(r), Ok(()));
}

// ---- property test against an independent statement of Xen's rules ----

/// Grants set up by `prop_world`: (granter, ref) -> (grantee, frame, readonly).
fn grant_of(dom: DomId, r: GrantRef) -> Option<(DomId, u32, bool)> {
    match (dom, r) {
        (GUEST, 8) => Some((BACKEND, 1, false)),
        (GUEST, 9) => Some((BACKEND, 2, true)),
        (GUEST, 10) => Some((OTHER, 3, false)),
        (GUEST, 11) => Some((BACKEND, 99, false)),
        (OTHER, 8) => Some((BACKEND, 4, false)),
        _ => None,
    }
}

fn prop_world() -> TestWorld {
    let w = TestWorld::new();
    for dom in [GUEST, OTHER] {
        for r in 8..12 {
            if let Some((to, frame, ro)) = grant_of(dom, r) {
                let got = w.dom(dom).guest.alloc_ref().unwrap();
                assert_eq!(got, r);
                w.dom(dom)
                    .guest
                    .grant_foreign_access_ref(got, to, frame, ro)
                    .unwrap();
            }
        }
    }
    w
}

/// (lock status, claim status) of one side as Xen decides them.
fn side_rule(p: &GnttabCopyPtr, is_gref: bool, readonly: bool) -> (i16, i16) {
    if !is_gref {
        if p.domid != DOMID_SELF {
            return (GNTST_PERMISSION_DENIED, 0);
        }
        return (
            0,
            if p.gmfn() < NR_FRAMES {
                0
            } else {
                GNTST_BAD_PAGE
            },
        );
    }
    let dom = if p.domid == DOMID_SELF {
        BACKEND
    } else {
        p.domid
    };
    if dom > 2 {
        return (GNTST_BAD_DOMAIN, 0);
    }
    if p.gref() >= NR_ENTRIES {
        return (0, GNTST_BAD_GNTREF);
    }
    match grant_of(dom, p.gref()) {
        Some((to, frame, ro)) if to == BACKEND && (readonly || !ro) => (
            0,
            if u64::from(frame) < NR_FRAMES {
                0
            } else {
                GNTST_BAD_PAGE
            },
        ),
        _ => (0, GNTST_GENERAL_ERROR),
    }
}

fn expected(op: &GnttabCopy) -> i16 {
    let (sl, sc) = side_rule(&op.source, op.flags & GNTCOPY_SOURCE_GREF != 0, true);
    let (dl, dc) = side_rule(&op.dest, op.flags & GNTCOPY_DEST_GREF != 0, false);
    for s in [sl, dl, sc, dc] {
        if s != 0 {
            return s;
        }
    }
    let len = u32::from(op.len);
    if u32::from(op.source.offset) + len > 4096 || u32::from(op.dest.offset) + len > 4096 {
        return GNTST_BAD_COPY_ARG;
    }
    GNTST_OKAY
}

fn arb_ptr() -> impl Strategy<Value = GnttabCopyPtr> {
    let domid = prop_oneof![Just(0u16), Just(1), Just(2), Just(9), Just(DOMID_SELF)];
    let offset = prop_oneof![0u16..64, 4000u16..4200, any::<u16>()];
    (domid, 0u64..40, offset, any::<u32>()).prop_map(|(domid, u, offset, junk)| {
        // Junk in the union's upper half must not change the ref.
        let high = if junk % 2 == 1 {
            u64::from(junk) << 32
        } else {
            0
        };
        GnttabCopyPtr::from_gmfn(u | high, domid, offset)
    })
}

fn arb_op() -> impl Strategy<Value = GnttabCopy> {
    (
        arb_ptr(),
        arb_ptr(),
        prop_oneof![0u16..128, 3900u16..4200, any::<u16>()],
        0u16..4,
    )
        .prop_map(|(source, dest, len, flags)| GnttabCopy {
            source,
            dest,
            len,
            flags,
            status: 1,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn any_batch_gets_xens_statuses_and_leaks_no_pin(ops in prop::collection::vec(arb_op(), 1..40)) {
        let w = prop_world();
        let mut batch = ops.clone();
        gnttab_copy(&w, BACKEND, &mut batch);
        for (op, done) in ops.iter().zip(&batch) {
            // gmfn ops read the whole u64; gref ops only its first four bytes.
            let mut canon = *op;
            if op.flags & GNTCOPY_SOURCE_GREF != 0 {
                canon.source = GnttabCopyPtr::from_gref(op.source.gref(), op.source.domid, op.source.offset);
            }
            if op.flags & GNTCOPY_DEST_GREF != 0 {
                canon.dest = GnttabCopyPtr::from_gref(op.dest.gref(), op.dest.domid, op.dest.offset);
            }
            prop_assert_eq!(done.status, expected(&canon), "op {:?}", op);
        }
        assert_quiescent(&w);
        // Every grant can still be revoked: nothing was left pinned.
        for dom in [GUEST, OTHER] {
            for r in 8..12 {
                if grant_of(dom, r).is_some() {
                    prop_assert_eq!(w.dom(dom).guest.end_foreign_access(r), Ok(()));
                }
            }
        }
    }
}
