//! Races between the granting guest and the hypervisor, on real threads.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::SeqCst};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use common::*;
use grant_table::*;

/// Sets its flag when dropped, so a failing assertion on one thread also stops the
/// threads that loop until that flag is set (instead of hanging the test).
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, SeqCst);
    }
}

const BACKEND: DomId = 0;
const GUEST: DomId = 1;
const OTHER: DomId = 2;

/// The guest revokes while backend threads map and unmap the same grant.
/// Invariants: end access never succeeds while a mapping is live; once it has
/// succeeded, maps fail; a successful map always sees the frame of the current grant.
#[test]
fn end_access_races_map_unmap() {
    const MIN_ROUNDS: u32 = 5_000;
    let w = TestWorld::new();
    let g = w.dom(GUEST);
    let r = g.guest.alloc_ref().unwrap();
    let live = AtomicU32::new(0); // mappings currently live
    let frame_now = AtomicU32::new(0);
    let stop = AtomicBool::new(false);
    let maps_ok = AtomicU64::new(0);
    let start = Barrier::new(3);

    std::thread::scope(|s| {
        for t in 0..2 {
            let (w, live, frame_now, stop, maps_ok, start) =
                (&w, &live, &frame_now, &stop, &maps_ok, &start);
            s.spawn(move || {
                let g = w.dom(GUEST);
                start.wait();
                let mut i = 0u32;
                while !stop.load(SeqCst) {
                    let readonly = (i + t) & 1 == 0;
                    i += 1;
                    match g.active.map_grant_ref(r, BACKEND, readonly) {
                        Ok(frame) => {
                            live.fetch_add(1, SeqCst);
                            assert_eq!(frame, frame_now.load(SeqCst), "map saw a stale frame");
                            maps_ok.fetch_add(1, SeqCst);
                            std::hint::spin_loop();
                            live.fetch_sub(1, SeqCst);
                            g.active.unmap_grant_ref(r, readonly).unwrap();
                        }
                        Err(e) => assert_eq!(e, GNTST_GENERAL_ERROR),
                    }
                }
            });
        }

        let _stop_backends = SetOnDrop(&stop);
        start.wait();
        let deadline = Instant::now() + Duration::from_secs(30);
        let (mut rounds, mut refused) = (0u32, 0u64);
        while rounds < MIN_ROUNDS || refused == 0 || maps_ok.load(SeqCst) == 0 {
            assert!(
                Instant::now() < deadline,
                "race never interleaved: {rounds} rounds, {refused} refusals"
            );
            let frame = rounds % NR_FRAMES as u32;
            frame_now.store(frame, SeqCst);
            g.guest
                .grant_foreign_access_ref(r, BACKEND, frame, false)
                .unwrap();
            // Give the backend a moment to map this grant.
            for _ in 0..(rounds % 64) {
                std::hint::spin_loop();
            }
            loop {
                match g.guest.end_foreign_access_ref(r) {
                    Ok(()) => break,
                    Err(GrantError::InUse(_)) => {
                        refused += 1;
                        std::thread::yield_now();
                    }
                    Err(e) => panic!("unexpected {e}"),
                }
            }
            assert_eq!(
                live.load(SeqCst),
                0,
                "end access succeeded while a mapping was live"
            );
            assert_eq!(
                g.active.map_grant_ref(r, BACKEND, true),
                Err(GNTST_GENERAL_ERROR)
            );
            assert_eq!(
                g.active.map_grant_ref(r, BACKEND, false),
                Err(GNTST_GENERAL_ERROR)
            );
            rounds += 1;
        }
    });
    assert_quiescent(&w);
    assert!(maps_ok.load(SeqCst) > 0);
}

/// Many threads of the backend copy from one read-only grant at once.
#[test]
fn many_copiers_on_one_grant() {
    const THREADS: u64 = 4;
    const BATCHES: usize = 500;
    let w = TestWorld::new();
    let g = w.dom(GUEST);
    let pattern: Vec<u8> = (0..PAGE_SIZE).map(|i| (i * 7 % 251) as u8).collect();
    g.write(1, 0, &pattern);
    let src = g.guest.grant_foreign_access(BACKEND, 1, true).unwrap();
    // Each copier also writes into its own writable grant of domain 2.
    let dests: Vec<GrantRef> = (0..THREADS)
        .map(|t| {
            w.dom(OTHER)
                .guest
                .grant_foreign_access(BACKEND, t as u32, false)
                .unwrap()
        })
        .collect();

    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (w, dest) = (&w, dests[t as usize]);
            s.spawn(move || {
                for b in 0..BATCHES {
                    let mut ops: Vec<GnttabCopy> = (0..64u16)
                        .map(|i| {
                            let off = (i * 64) % 4096;
                            if (b + i as usize) & 1 == 0 {
                                copy_from_grant(GUEST, src, off, t, off, 64)
                            } else {
                                GnttabCopy {
                                    source: GnttabCopyPtr::from_gref(src, GUEST, off),
                                    dest: GnttabCopyPtr::from_gref(dest, OTHER, off),
                                    len: 64,
                                    flags: GNTCOPY_SOURCE_GREF | GNTCOPY_DEST_GREF,
                                    status: 1,
                                }
                            }
                        })
                        .collect();
                    gnttab_copy(w, BACKEND, &mut ops);
                    assert!(
                        ops.iter().all(|o| o.status == GNTST_OKAY),
                        "batch {b}: {:?}",
                        ops[0].status
                    );
                }
            });
        }
    });
    for t in 0..THREADS {
        assert_eq!(w.dom(BACKEND).read(t, 0, PAGE_SIZE), pattern);
        assert_eq!(w.dom(OTHER).read(t, 0, PAGE_SIZE), pattern);
    }
    assert_quiescent(&w);
    assert_eq!(g.guest.end_foreign_access(src), Ok(()));
}

/// The guest revokes a grant while copiers use it: each batch issued after the
/// revoke was seen to succeed fails every op with GNTST_general_error, and no op ever
/// gets any other error.
#[test]
fn revoke_while_copiers_run() {
    let w = TestWorld::new();
    let g = w.dom(GUEST);
    let src = g.guest.grant_foreign_access(BACKEND, 1, true).unwrap();
    let revoked = AtomicBool::new(false);
    let batches_ok = AtomicU64::new(0);
    let abort = AtomicBool::new(false);
    let start = Barrier::new(3);

    std::thread::scope(|s| {
        for t in 0..2u64 {
            let (w, revoked, batches_ok, start, abort) =
                (&w, &revoked, &batches_ok, &start, &abort);
            s.spawn(move || {
                start.wait();
                let mut seen_after = 0;
                while seen_after < 50 && !abort.load(SeqCst) {
                    let was_revoked = revoked.load(SeqCst);
                    let mut ops: Vec<GnttabCopy> = (0..64u16)
                        .map(|i| copy_from_grant(GUEST, src, i * 64, t, i * 64, 64))
                        .collect();
                    gnttab_copy(w, BACKEND, &mut ops);
                    for o in &ops {
                        assert!(o.status == GNTST_OKAY || o.status == GNTST_GENERAL_ERROR);
                        if was_revoked {
                            assert_eq!(
                                o.status, GNTST_GENERAL_ERROR,
                                "copy went through after revoke"
                            );
                        }
                    }
                    if was_revoked {
                        seen_after += 1;
                    } else if ops.iter().all(|o| o.status == GNTST_OKAY) {
                        batches_ok.fetch_add(1, SeqCst);
                    }
                }
            });
        }
        let _abort_copiers = SetOnDrop(&abort);
        start.wait();
        // Let the copiers get going, then revoke (retrying while a copy holds a pin).
        let deadline = Instant::now() + Duration::from_secs(30);
        while batches_ok.load(SeqCst) < 20 {
            assert!(Instant::now() < deadline, "copiers made no progress");
            std::thread::yield_now();
        }
        loop {
            match g.guest.end_foreign_access(src) {
                Ok(()) => break,
                Err(GrantError::InUse(_)) => std::thread::yield_now(),
                Err(e) => panic!("unexpected {e}"),
            }
            assert!(Instant::now() < deadline, "revoke never got through");
        }
        revoked.store(true, SeqCst);
        // Keep the copiers running until each has seen the revoke 50 times.
        std::mem::forget(_abort_copiers);
    });
    assert_quiescent(&w);
}
