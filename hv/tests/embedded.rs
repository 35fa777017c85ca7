//! The embedded hypervisor end to end: grants, copies, event channels, teardown.

use std::time::Duration;

use hv::embedded::{DomainConfig, Hypervisor, DOM0};
use hv::env::{
    BackendEnv, CopyDir, CopySeg, EnvError, EventChannel, GuestEnv, MappedPage, Store, XBT_NIL,
};

fn small() -> DomainConfig {
    DomainConfig {
        name: "t".into(),
        memory_frames: 64,
        grant_frames: 1,
        max_ports: 31,
    }
}

fn seg(dir: CopyDir, domid: u16, gref: u32, offset: u16, len: u16, local: *mut u8) -> CopySeg {
    CopySeg {
        dir,
        domid,
        gref,
        offset,
        len,
        local,
        status: 99,
    }
}

#[test]
fn grant_map_copy_and_end_access() {
    let hv = Hypervisor::new().expect("hv");
    let d = hv.create_domain(&small()).expect("domain");
    let guest = hv.guest_env(d).expect("guest env");
    let back = hv.backend_env().expect("backend env");

    let pages = guest.grant_pages(DOM0, 2, false).expect("grant");
    // SAFETY: the page is ours and 4 KiB long.
    unsafe {
        pages[0]
            .ptr
            .as_ptr()
            .add(100)
            .copy_from(b"hello".as_ptr(), 5)
    };

    // Copy from the guest, then into the guest.
    let mut buf = [0u8; 5];
    let mut out = *b"world";
    let mut segs = [
        seg(
            CopyDir::FromForeign,
            d,
            pages[0].gref,
            100,
            5,
            buf.as_mut_ptr(),
        ),
        seg(
            CopyDir::ToForeign,
            d,
            pages[1].gref,
            4091,
            5,
            out.as_mut_ptr(),
        ),
        seg(
            CopyDir::ToForeign,
            d,
            pages[1].gref,
            4092,
            5,
            out.as_mut_ptr(),
        ),
        seg(CopyDir::FromForeign, d, 9999, 0, 5, buf.as_mut_ptr()),
        seg(
            CopyDir::FromForeign,
            77,
            pages[0].gref,
            0,
            5,
            buf.as_mut_ptr(),
        ),
    ];
    back.grant_copy(&mut segs);
    assert_eq!(&buf, b"hello");
    let st: Vec<i16> = segs.iter().map(|s| s.status).collect();
    assert_eq!(st[0], grant_table::GNTST_OKAY);
    assert_eq!(st[1], grant_table::GNTST_OKAY);
    assert_eq!(
        st[2],
        grant_table::GNTST_BAD_COPY_ARG,
        "crossing the page end"
    );
    assert_eq!(st[3], grant_table::GNTST_BAD_GNTREF);
    assert_eq!(st[4], grant_table::GNTST_BAD_DOMAIN);
    // SAFETY: guest page 1, bytes 4091..4096.
    let got = unsafe { std::slice::from_raw_parts(pages[1].ptr.as_ptr().add(4091), 5) };
    assert_eq!(got, b"world");

    // A read-only grant cannot be written.
    let ro = guest.grant_pages(DOM0, 1, true).expect("grant ro");
    let mut s = [seg(
        CopyDir::ToForeign,
        d,
        ro[0].gref,
        0,
        5,
        out.as_mut_ptr(),
    )];
    back.grant_copy(&mut s);
    // Xen's _set_status_v1: "Attempt to write-pin a r/o grant entry" is GNTST_general_error.
    assert_eq!(s[0].status, grant_table::GNTST_GENERAL_ERROR);

    // While mapped, end access is refused; after unmap it succeeds and the frame is free.
    let free_before = hv.domain(d).expect("dom").free_frames();
    let map = back.map_grant(d, pages[0].gref, false).expect("map");
    // SAFETY: the mapping is 4 KiB long.
    assert_eq!(unsafe { *map.ptr().as_ptr().add(100) }, b'h');
    let err = guest.end_grants(pages).expect_err("mapped");
    assert!(matches!(err.0, EnvError::GrantInUse(_)));
    let pages = err.1;
    drop(map);
    guest.end_grants(pages).expect("unmapped now");
    assert_eq!(hv.domain(d).expect("dom").free_frames(), free_before + 2);
    // The old ref no longer maps.
    assert!(back.map_grant(d, 0, false).is_err());
}

#[test]
fn event_channel_round_trip_and_teardown() {
    let hv = Hypervisor::new().expect("hv");
    let d = hv.create_domain(&small()).expect("domain");
    let guest = hv.guest_env(d).expect("guest env");
    let back = hv.backend_env().expect("backend env");
    let g = guest.alloc_unbound(DOM0).expect("alloc");
    let b = back.bind_interdomain(d, g.port()).expect("bind");
    // Xen's bind_interdomain marks the new port pending (events may have been missed).
    assert!(b.try_consume());
    assert!(!b.try_consume());
    g.notify();
    assert!(b.wait(Some(Duration::from_secs(5))));
    assert!(!b.try_consume(), "consumed once");
    // Cross-thread wake-up through the sleeping path.
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        b.notify();
        b
    });
    assert!(g.wait(Some(Duration::from_secs(5))));
    let b = t.join().expect("thread");
    assert!(!g.wait(Some(Duration::from_millis(5))), "no spurious event");

    // Destroying the guest kicks the backend's port and frees the domain.
    let store = hv.store(DOM0).expect("store");
    store
        .write(
            XBT_NIL,
            &format!("/local/domain/0/backend/vif/{d}/0/state"),
            b"1",
        )
        .expect("write");
    hv.destroy_domain(d).expect("destroy");
    assert!(hv.domain(d).is_none());
    assert!(
        b.wait(Some(Duration::from_secs(1))),
        "peer death is signalled"
    );
    assert!(store
        .read(XBT_NIL, &format!("/local/domain/0/backend/vif/{d}"))
        .is_err());
    assert!(hv.destroy_domain(d).is_err());
    assert!(hv.destroy_domain(DOM0).is_err());
}

#[test]
fn guest_store_is_confined_to_its_home() {
    let hv = Hypervisor::new().expect("hv");
    let a = hv.create_domain(&small()).expect("a");
    let b = hv.create_domain(&small()).expect("b");
    let ga = hv.guest_env(a).expect("env");
    ga.store()
        .write(XBT_NIL, &format!("/local/domain/{a}/data/x"), b"1")
        .expect("own home");
    assert!(ga
        .store()
        .write(XBT_NIL, &format!("/local/domain/{b}/data/x"), b"1")
        .is_err());
    assert!(ga
        .store()
        .write(XBT_NIL, "/local/domain/0/x", b"1")
        .is_err());
}

#[test]
fn mapping_keeps_dead_guest_memory_alive() {
    let hv = Hypervisor::new().expect("hv");
    let d = hv.create_domain(&small()).expect("domain");
    let guest = hv.guest_env(d).expect("guest env");
    let back = hv.backend_env().expect("backend env");
    let pages = guest.grant_pages(DOM0, 1, false).expect("grant");
    // SAFETY: our page.
    unsafe { *pages[0].ptr.as_ptr() = 42 };
    let map = back.map_grant(d, pages[0].gref, false).expect("map");
    drop(guest);
    hv.destroy_domain(d).expect("destroy");
    // The backend may still touch its mapping until it unmaps.
    // SAFETY: the mapping holds the dead domain's memory alive.
    assert_eq!(unsafe { *map.ptr().as_ptr() }, 42);
    drop(map);
}

#[test]
fn channels_outliving_the_hypervisor_are_safe() {
    let hv = Hypervisor::new().expect("hv");
    let d = hv.create_domain(&small()).expect("domain");
    let guest = hv.guest_env(d).expect("guest env");
    let back = hv.backend_env().expect("backend env");
    let g = guest.alloc_unbound(DOM0).expect("alloc");
    let b = back.bind_interdomain(d, g.port()).expect("bind");
    drop(back);
    drop(hv);
    drop(guest);
    // Every domain is gone: the channels fail quietly instead of touching freed pages.
    g.notify();
    assert!(!b.try_consume() || !b.try_consume());
    drop(g);
    drop(b);
}
