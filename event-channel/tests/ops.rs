//! Every hub operation, its success path and each error Xen would return.

mod common;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use common::{connect, count_kicks, hub3};
use event_channel::{
    errno, EventChannels, EvtchnBitmapPage, EvtchnBits, EvtchnError, PortState, DOMID_SELF,
    EVTCHNSTAT_CLOSED, EVTCHNSTAT_INTERDOMAIN, EVTCHNSTAT_UNBOUND, EVTCHN_2L_NR_CHANNELS,
};

fn errno_of<T: std::fmt::Debug>(r: Result<T, EvtchnError>) -> i32 {
    r.expect_err("expected an error").errno()
}

#[test]
fn hub_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<EventChannels>();
    assert_send_sync::<EvtchnBits>();
}

// ---- domains ----

#[test]
fn add_domain_checks() {
    let hub = EventChannels::new();
    hub.add_domain(1, 8).expect("add");
    assert!(hub.has_domain(1));
    assert_eq!(hub.max_port(1), Ok(8));
    assert_eq!(
        hub.add_domain(1, 8),
        Err(EvtchnError::DomainExists(1)),
        "duplicate domid is EEXIST"
    );
    assert_eq!(errno_of(hub.add_domain(1, 8)), errno::EEXIST);
    assert_eq!(
        hub.add_domain(DOMID_SELF, 8),
        Err(EvtchnError::ReservedDomId(DOMID_SELF))
    );
    assert_eq!(
        hub.add_domain(0xFFFF, 8),
        Err(EvtchnError::ReservedDomId(0xFFFF))
    );
    assert_eq!(hub.add_domain(2, 0), Err(EvtchnError::BadPortCount(0)));
    let too_many = EVTCHN_2L_NR_CHANNELS as u32;
    assert_eq!(
        hub.add_domain(2, too_many),
        Err(EvtchnError::BadPortCount(too_many))
    );
    // The largest 2-level domain: ports 1..=4095.
    hub.add_domain(2, too_many - 1).expect("max size");
    assert_eq!(hub.max_port(2), Ok(4095));
    assert_eq!(hub.domains(), vec![1, 2]);
    assert_eq!(hub.max_port(7), Err(EvtchnError::NoSuchDomain(7)));
    assert_eq!(errno_of(hub.bits(7)), errno::ESRCH);
}

#[test]
fn add_domain_with_bits_needs_room_for_every_port() {
    let hub = EventChannels::new();
    // 8 ports need 9 bits (port 0 included).
    let small = Arc::new(EvtchnBits::new(8));
    assert_eq!(
        hub.add_domain_with_bits(1, 8, small),
        Err(EvtchnError::BadPortCount(8))
    );
    assert!(!hub.has_domain(1));
    hub.add_domain_with_bits(1, 8, Arc::new(EvtchnBits::new(9)))
        .expect("exact fit");
}

#[test]
fn bitmaps_can_live_in_caller_memory() {
    let page = Box::new(EvtchnBitmapPage {
        evtchn_pending: [const { AtomicU64::new(0) }; 64],
        evtchn_mask: [const { AtomicU64::new(0) }; 64],
    });
    // SAFETY: `page` outlives the hub (dropped after it at the end of the test).
    let bits = unsafe { EvtchnBits::from_page(std::ptr::NonNull::from(&*page), 4096) };
    let hub = EventChannels::new();
    hub.add_domain_with_bits(1, 100, Arc::new(bits))
        .expect("add");
    hub.add_domain(2, 100).expect("add");
    let (p1, p2) = connect(&hub, 1, 2);
    hub.send(2, p2).expect("send");
    // The "guest" sees its pending bit in the raw page, without the hub.
    let word = page.evtchn_pending[p1 as usize / 64].load(std::sync::atomic::Ordering::SeqCst);
    assert_ne!(word & (1 << (p1 % 64)), 0);
    // And a mask the guest sets in the page is honoured by the hub.
    let kicks = count_kicks(&hub, 1, p1);
    assert!(hub.test_and_clear_pending(1, p1).expect("consume"));
    page.evtchn_mask[0].fetch_or(1 << p1, std::sync::atomic::Ordering::SeqCst);
    hub.send(2, p2).expect("send");
    assert_eq!(kicks.get(), 0, "masked in shared memory: no kick");
    drop(hub);
    drop(page);
}

// ---- alloc_unbound ----

#[test]
fn alloc_unbound_hands_out_lowest_free_port_from_1() {
    let hub = hub3(4);
    assert_eq!(hub.alloc_unbound(1, 0), Ok(1));
    assert_eq!(hub.alloc_unbound(1, 0), Ok(2));
    assert_eq!(hub.alloc_unbound(1, 2), Ok(3));
    assert_eq!(hub.status(1, 3), Ok(PortState::Unbound { remote_domid: 2 }));
    hub.close(1, 2).expect("close");
    assert_eq!(
        hub.alloc_unbound(1, 0),
        Ok(2),
        "freed port reused, lowest first"
    );
    assert_eq!(hub.alloc_unbound(1, 0), Ok(4));
    assert_eq!(hub.alloc_unbound(1, 0), Err(EvtchnError::NoFreePort(1)));
    assert_eq!(errno_of(hub.alloc_unbound(1, 0)), errno::ENOSPC);
    // Port 0 was never handed out.
    assert_eq!(errno_of(hub.status(1, 0)), errno::EINVAL);
}

#[test]
fn alloc_unbound_resolves_domid_self_and_allows_absent_remote() {
    let hub = hub3(4);
    let p = hub.alloc_unbound(2, DOMID_SELF).expect("alloc");
    assert_eq!(hub.status(2, p), Ok(PortState::Unbound { remote_domid: 2 }));
    // Xen does not require the remote domain to exist yet.
    let q = hub.alloc_unbound(2, 42).expect("alloc");
    assert_eq!(
        hub.status(2, q),
        Ok(PortState::Unbound { remote_domid: 42 })
    );
    assert_eq!(hub.alloc_unbound(9, 0), Err(EvtchnError::NoSuchDomain(9)));
    assert_eq!(errno_of(hub.alloc_unbound(9, 0)), errno::ESRCH);
}

#[test]
fn alloc_unbound_for_another_domain_needs_privilege() {
    let hub = hub3(4);
    // Dom0 (the toolstack) pre-allocates a port in dom1 for dom2.
    let p = hub.alloc_unbound_for(0, 1, 2).expect("privileged alloc");
    assert_eq!(hub.status(1, p), Ok(PortState::Unbound { remote_domid: 2 }));
    // remote DOMID_SELF means the caller, as in Xen.
    let q = hub.alloc_unbound_for(0, 1, DOMID_SELF).expect("alloc");
    assert_eq!(hub.status(1, q), Ok(PortState::Unbound { remote_domid: 0 }));
    // dom2 may not allocate in dom1.
    assert_eq!(
        hub.alloc_unbound_for(2, 1, 0),
        Err(EvtchnError::PermissionDenied {
            caller: 2,
            target: 1
        })
    );
    assert_eq!(errno_of(hub.alloc_unbound_for(2, 1, 0)), errno::EPERM);
    // ... but in itself, by id or DOMID_SELF.
    assert!(hub.alloc_unbound_for(2, 2, 0).is_ok());
    assert!(hub.alloc_unbound_for(2, DOMID_SELF, 0).is_ok());
    // Unknown caller / unknown target.
    assert_eq!(
        hub.alloc_unbound_for(5, 1, 0),
        Err(EvtchnError::NoSuchDomain(5))
    );
    assert_eq!(
        hub.alloc_unbound_for(0, 5, 1),
        Err(EvtchnError::NoSuchDomain(5))
    );
}

// ---- bind_interdomain ----

#[test]
fn bind_connects_both_ends_and_marks_local_pending() {
    let hub = hub3(8);
    let pa = hub.alloc_unbound(1, 0).expect("alloc");
    let pb = hub.bind_interdomain(0, 1, pa).expect("bind");
    assert_eq!(
        hub.status(1, pa),
        Ok(PortState::Interdomain {
            remote_dom: 0,
            remote_port: pb
        })
    );
    assert_eq!(
        hub.status(0, pb),
        Ok(PortState::Interdomain {
            remote_dom: 1,
            remote_port: pa
        })
    );
    assert_eq!(
        hub.status(0, pb).map(|s| s.status_code()),
        Ok(EVTCHNSTAT_INTERDOMAIN)
    );
    // Xen sets the new local port pending: events sent while unbound were lost.
    assert_eq!(hub.is_pending(0, pb), Ok(true));
    assert_eq!(hub.is_pending(1, pa), Ok(false));
}

#[test]
fn bind_errors() {
    let hub = hub3(2);
    let offered_to_0 = hub.alloc_unbound(1, 0).expect("alloc");
    // Unknown local or remote domain.
    assert_eq!(
        hub.bind_interdomain(7, 1, offered_to_0),
        Err(EvtchnError::NoSuchDomain(7))
    );
    assert_eq!(
        hub.bind_interdomain(0, 7, offered_to_0),
        Err(EvtchnError::NoSuchDomain(7))
    );
    // Remote port 0 or beyond the remote domain's last port.
    assert_eq!(
        hub.bind_interdomain(0, 1, 0),
        Err(EvtchnError::InvalidPort { dom: 1, port: 0 })
    );
    assert_eq!(errno_of(hub.bind_interdomain(0, 1, 3)), errno::EINVAL);
    assert_eq!(
        errno_of(hub.bind_interdomain(0, 1, u32::MAX)),
        errno::EINVAL
    );
    // Remote port free.
    assert_eq!(
        hub.bind_interdomain(0, 1, 2),
        Err(EvtchnError::WrongState { dom: 1, port: 2 })
    );
    // Remote port offered to dom0, not dom2.
    assert_eq!(
        hub.bind_interdomain(2, 1, offered_to_0),
        Err(EvtchnError::WrongState {
            dom: 1,
            port: offered_to_0
        })
    );
    // None of the failures consumed a port of the binder.
    assert_eq!(hub.status(0, 1), Ok(PortState::Free));
    assert_eq!(hub.status(2, 1), Ok(PortState::Free));
    // Bind once, then the second bind of the same remote port fails.
    let lp = hub.bind_interdomain(0, 1, offered_to_0).expect("bind");
    assert_eq!(
        errno_of(hub.bind_interdomain(0, 1, offered_to_0)),
        errno::EINVAL
    );
    assert_eq!(
        hub.status(0, 2),
        Ok(PortState::Free),
        "failed bind left no trace"
    );
    assert_eq!(lp, 1);
    // A domain cannot bind its own port that it offered to another domain.
    let p2 = hub.alloc_unbound(2, 0).expect("alloc");
    assert_eq!(
        hub.bind_interdomain(2, DOMID_SELF, p2),
        Err(EvtchnError::WrongState { dom: 2, port: p2 })
    );
}

#[test]
fn bind_with_no_free_local_port_is_enospc_before_remote_checks() {
    let hub = hub3(1);
    hub.alloc_unbound(0, 2).expect("fill dom0");
    let offered = hub.alloc_unbound(1, 0).expect("alloc");
    assert_eq!(
        hub.bind_interdomain(0, 1, offered),
        Err(EvtchnError::NoFreePort(0))
    );
    // Xen checks for a free local port first, so even a bad remote port says ENOSPC.
    assert_eq!(errno_of(hub.bind_interdomain(0, 1, 0)), errno::ENOSPC);
    assert_eq!(
        hub.status(1, offered),
        Ok(PortState::Unbound { remote_domid: 0 })
    );
}

#[test]
fn loopback_channel_within_one_domain() {
    let hub = hub3(4);
    let a = hub.alloc_unbound(1, DOMID_SELF).expect("alloc");
    let b = hub.bind_interdomain(1, DOMID_SELF, a).expect("bind");
    assert_ne!(a, b);
    assert_eq!(
        hub.status(1, a),
        Ok(PortState::Interdomain {
            remote_dom: 1,
            remote_port: b
        })
    );
    hub.test_and_clear_pending(1, b).expect("clear");
    hub.send(1, a).expect("send");
    assert_eq!(hub.is_pending(1, b), Ok(true));
    assert_eq!(hub.is_pending(1, a), Ok(false));
    hub.close(1, b).expect("close");
    assert_eq!(hub.status(1, a), Ok(PortState::Unbound { remote_domid: 1 }));
    assert_eq!(hub.status(1, b), Ok(PortState::Free));
}

// ---- send, mask, unmask ----

#[test]
fn send_sets_peer_pending_and_kicks_once_until_consumed() {
    let hub = hub3(8);
    let (p1, p2) = connect(&hub, 1, 2);
    let kicks = count_kicks(&hub, 2, p2);
    hub.send(1, p1).expect("send");
    assert_eq!(hub.is_pending(2, p2), Ok(true));
    assert_eq!(
        hub.is_pending(1, p1),
        Ok(false),
        "sender's own bit untouched"
    );
    assert_eq!(kicks.get(), 1);
    hub.send(1, p1).expect("send");
    assert_eq!(kicks.get(), 1, "already pending: no second kick");
    assert_eq!(hub.test_and_clear_pending(2, p2), Ok(true));
    assert_eq!(hub.test_and_clear_pending(2, p2), Ok(false));
    hub.send(1, p1).expect("send");
    assert_eq!(kicks.get(), 2);
    // The other direction.
    let back = count_kicks(&hub, 1, p1);
    hub.send(2, p2).expect("send");
    assert_eq!(back.get(), 1);
    assert_eq!(hub.is_pending(1, p1), Ok(true));
}

#[test]
fn send_on_unbound_is_dropped_and_on_free_is_einval() {
    let hub = hub3(4);
    let p = hub.alloc_unbound(1, 2).expect("alloc");
    assert_eq!(hub.send(1, p), Ok(()));
    assert_eq!(hub.is_pending(1, p), Ok(false));
    for d in 0..3 {
        for q in 1..=4 {
            if (d, q) != (1, p) {
                assert_eq!(
                    hub.is_pending(d, q),
                    Ok(false),
                    "dropped send set ({d},{q})"
                );
            }
        }
    }
    assert_eq!(
        hub.send(1, 2),
        Err(EvtchnError::WrongState { dom: 1, port: 2 })
    );
    assert_eq!(
        hub.send(1, 0),
        Err(EvtchnError::InvalidPort { dom: 1, port: 0 })
    );
    assert_eq!(
        hub.send(1, 5),
        Err(EvtchnError::InvalidPort { dom: 1, port: 5 })
    );
    assert_eq!(hub.send(9, 1), Err(EvtchnError::NoSuchDomain(9)));
}

#[test]
fn masked_port_goes_pending_silently_and_unmask_rekicks() {
    let hub = hub3(8);
    let (p1, p2) = connect(&hub, 1, 2);
    let kicks = count_kicks(&hub, 2, p2);
    assert_eq!(hub.mask(2, p2), Ok(false));
    assert_eq!(
        hub.mask(2, p2),
        Ok(true),
        "mask reports it was already masked"
    );
    assert_eq!(hub.is_masked(2, p2), Ok(true));
    hub.send(1, p1).expect("send");
    assert_eq!(
        hub.is_pending(2, p2),
        Ok(true),
        "masked ports still go pending"
    );
    assert_eq!(kicks.get(), 0);
    hub.unmask(2, p2).expect("unmask");
    assert_eq!(
        kicks.get(),
        1,
        "unmask delivers the event that arrived while masked"
    );
    assert_eq!(hub.is_masked(2, p2), Ok(false));
    // Unmasking an unmasked pending port does not kick again (Xen only re-kicks
    // when the mask bit was set).
    hub.unmask(2, p2).expect("unmask");
    assert_eq!(kicks.get(), 1);
    // Masked, not pending: unmask does not kick.
    assert_eq!(hub.test_and_clear_pending(2, p2), Ok(true));
    hub.mask(2, p2).expect("mask");
    hub.unmask(2, p2).expect("unmask");
    assert_eq!(kicks.get(), 1);
}

#[test]
fn mask_unmask_pending_ops_check_the_port() {
    let hub = hub3(4);
    for port in [0u32, 5, u32::MAX] {
        let want = EvtchnError::InvalidPort { dom: 1, port };
        assert_eq!(hub.mask(1, port), Err(want));
        assert_eq!(hub.unmask(1, port), Err(want));
        assert_eq!(hub.is_masked(1, port), Err(want));
        assert_eq!(hub.is_pending(1, port), Err(want));
        assert_eq!(hub.test_and_clear_pending(1, port), Err(want));
        assert_eq!(hub.status(1, port), Err(want));
        assert_eq!(hub.close(1, port), Err(want));
    }
    assert_eq!(hub.mask(6, 1), Err(EvtchnError::NoSuchDomain(6)));
    assert_eq!(hub.unmask(6, 1), Err(EvtchnError::NoSuchDomain(6)));
    assert_eq!(hub.is_pending(6, 1), Err(EvtchnError::NoSuchDomain(6)));
    assert_eq!(
        hub.test_and_clear_pending(6, 1),
        Err(EvtchnError::NoSuchDomain(6))
    );
    assert_eq!(hub.status(6, 1), Err(EvtchnError::NoSuchDomain(6)));
    assert_eq!(hub.close(6, 1), Err(EvtchnError::NoSuchDomain(6)));
    // Masking works on any valid port, even a free one (it is guest memory).
    assert_eq!(hub.mask(1, 4), Ok(false));
}

// ---- close ----

#[test]
fn close_frees_port_and_returns_peer_to_unbound() {
    let hub = hub3(8);
    let (p1, p2) = connect(&hub, 1, 2);
    hub.send(1, p1).expect("send");
    hub.send(2, p2).expect("send");
    hub.close(1, p1).expect("close");
    assert_eq!(hub.status(1, p1), Ok(PortState::Free));
    assert_eq!(
        hub.status(1, p1).map(|s| s.status_code()),
        Ok(EVTCHNSTAT_CLOSED)
    );
    assert_eq!(
        hub.is_pending(1, p1),
        Ok(false),
        "evtchn_free clears pending"
    );
    assert_eq!(
        hub.status(2, p2),
        Ok(PortState::Unbound { remote_domid: 1 })
    );
    assert_eq!(
        hub.status(2, p2).map(|s| s.status_code()),
        Ok(EVTCHNSTAT_UNBOUND)
    );
    assert_eq!(
        hub.is_pending(2, p2),
        Ok(true),
        "peer's pending bit is left alone"
    );
    // Sending on the now-unbound peer is dropped.
    assert_eq!(hub.send(2, p2), Ok(()));
    // The closer may bind to the peer's port again.
    let again = hub.bind_interdomain(1, 2, p2).expect("re-bind");
    assert_eq!(
        hub.status(2, p2),
        Ok(PortState::Interdomain {
            remote_dom: 1,
            remote_port: again
        })
    );
    // Closing twice, or a free port, is EINVAL.
    hub.close(1, again).expect("close");
    assert_eq!(
        hub.close(1, again),
        Err(EvtchnError::WrongState {
            dom: 1,
            port: again
        })
    );
    // Closing an unbound port frees it.
    hub.close(2, p2).expect("close unbound");
    assert_eq!(hub.status(2, p2), Ok(PortState::Free));
}

#[test]
fn close_drops_notifier_and_keeps_mask() {
    let hub = hub3(8);
    let (p1, p2) = connect(&hub, 1, 2);
    let old = count_kicks(&hub, 2, p2);
    hub.mask(2, p2).expect("mask");
    hub.close(2, p2).expect("close");
    assert_eq!(
        hub.is_masked(2, p2),
        Ok(true),
        "the mask bit belongs to the guest"
    );
    hub.unmask(2, p2).expect("unmask");
    // Re-bind the same port number: the old notifier must not hear about it.
    let q = hub.bind_interdomain(2, 1, p1).expect("re-bind");
    assert_eq!(q, p2);
    hub.test_and_clear_pending(2, q).expect("clear");
    hub.send(1, p1).expect("send");
    assert_eq!(old.get(), 0);
}

// ---- notifiers ----

#[test]
fn set_notifier_checks_and_clear_notifier_stops_kicks() {
    let hub = hub3(4);
    let n = Arc::new(common::Counter::default());
    assert_eq!(
        hub.set_notifier(1, 1, n.clone()),
        Err(EvtchnError::WrongState { dom: 1, port: 1 }),
        "free port"
    );
    assert_eq!(
        hub.set_notifier(1, 0, n.clone()),
        Err(EvtchnError::InvalidPort { dom: 1, port: 0 })
    );
    assert_eq!(
        hub.set_notifier(8, 1, n.clone()),
        Err(EvtchnError::NoSuchDomain(8))
    );
    let (p1, p2) = connect(&hub, 1, 2);
    hub.set_notifier(2, p2, n.clone()).expect("set");
    hub.send(1, p1).expect("send");
    assert_eq!(n.get(), 1);
    hub.test_and_clear_pending(2, p2).expect("consume");
    hub.clear_notifier(2, p2).expect("clear");
    hub.send(1, p1).expect("send");
    assert_eq!(n.get(), 1);
    assert_eq!(hub.is_pending(2, p2), Ok(true));
    // Replacing a notifier.
    hub.test_and_clear_pending(2, p2).expect("consume");
    let m = count_kicks(&hub, 2, p2);
    let m2 = count_kicks(&hub, 2, p2);
    hub.send(1, p1).expect("send");
    assert_eq!((m.get(), m2.get()), (0, 1));
}

// ---- remove_domain ----

#[test]
fn remove_domain_unbinds_and_notifies_peers() {
    let hub = hub3(8);
    let (a1, b1) = connect(&hub, 1, 0); // dom1 <-> dom0
    let (a2, c2) = connect(&hub, 1, 2); // dom1 <-> dom2
    let loop_a = hub.alloc_unbound(1, DOMID_SELF).expect("alloc");
    hub.bind_interdomain(1, DOMID_SELF, loop_a)
        .expect("loopback");
    let offered = hub.alloc_unbound(0, 1).expect("alloc"); // dom0 offers to dom1
    let k0 = count_kicks(&hub, 0, b1);
    let k2 = count_kicks(&hub, 2, c2);
    hub.mask(2, c2).expect("mask");
    let bits1 = hub.bits(1).expect("bits");

    hub.remove_domain(1).expect("remove");
    assert!(!hub.has_domain(1));
    assert_eq!(
        hub.status(0, b1),
        Ok(PortState::Unbound { remote_domid: 1 })
    );
    assert_eq!(
        hub.status(2, c2),
        Ok(PortState::Unbound { remote_domid: 1 })
    );
    assert_eq!(hub.is_pending(0, b1), Ok(true));
    assert_eq!(hub.is_pending(2, c2), Ok(true));
    assert_eq!(k0.get(), 1, "peer woken to notice its peer died");
    assert_eq!(k2.get(), 0, "masked peer: pending but not kicked");
    hub.unmask(2, c2).expect("unmask");
    assert_eq!(k2.get(), 1);
    // A port offered to the dead domain is untouched.
    assert_eq!(
        hub.status(0, offered),
        Ok(PortState::Unbound { remote_domid: 1 })
    );
    // The dead domain's ports were freed (its bitmap no longer shows pending).
    assert!(!bits1.pending.test(a1 as usize) && !bits1.pending.test(a2 as usize));
    // Everything about dom1 now fails with ESRCH.
    assert_eq!(hub.send(1, a1), Err(EvtchnError::NoSuchDomain(1)));
    assert_eq!(hub.remove_domain(1), Err(EvtchnError::NoSuchDomain(1)));
    // Peers can send (dropped) and close their orphaned ports.
    assert_eq!(hub.send(0, b1), Ok(()));
    hub.close(0, b1).expect("close");
    // The domid can come back; it starts empty.
    hub.add_domain(1, 8).expect("re-add");
    for p in 1..=8 {
        assert_eq!(hub.status(1, p), Ok(PortState::Free));
    }
}
