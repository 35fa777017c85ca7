//! netfront end to end on the embedded hypervisor, against the small test backend in
//! `common` (echo / cross-connect).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use hv::abi::xenbus::XenbusState;
use hv::env::{BackendEnv, Store, XBT_NIL};
use hv::toolstack::{backend_path, frontend_path};
use hv::xenbus::{xenbus_read_state, xenbus_switch_state};
use netfront::{Gso, GsoType, LinkEvent, Netfront, NetfrontConfig, TxError, TxMeta};

fn read(store: &dyn Store, p: &str) -> Option<String> {
    store
        .read(XBT_NIL, p)
        .ok()
        .map(|v| String::from_utf8(v).unwrap())
}

/// Connect guest `dom`'s vif 0 while a thread plays the backend's handshake half.
fn connect(
    hv: &hv::embedded::Hypervisor,
    dom: u16,
    cfg: NetfrontConfig,
    opts: BackOpts,
) -> (Netfront<hv::embedded::EmbeddedGuestEnv>, VifBack) {
    let benv = hv.backend_env().unwrap();
    let be = backend_path(0, dom, 0);
    announce(benv.store(), &be, &opts);
    let back = thread::spawn(move || accept(&benv, dom, 0));
    let nf = Netfront::connect(hv.guest_env(dom).unwrap(), cfg).expect("connect");
    (nf, back.join().unwrap())
}

#[test]
fn handshake_writes_every_key_in_one_go_and_both_reach_connected() {
    let (hv, doms) = setup(1);
    let d = doms[0];
    let (nf, _vif) = connect(&hv, d, NetfrontConfig::default(), BackOpts::default());
    let s = hv.store(0).unwrap();
    let fe = frontend_path(d, 0);
    let be = backend_path(0, d, 0);
    assert_eq!(nf.state(), XenbusState::Connected);
    assert_eq!(xenbus_read_state(&s, &fe).unwrap(), XenbusState::Connected);
    assert_eq!(xenbus_read_state(&s, &be).unwrap(), XenbusState::Connected);
    assert_eq!(nf.mac(), [0, 0x16, 0x3e, 0, 0, d as u8]);
    assert_eq!(nf.num_queues(), 1);
    for (k, v) in [
        ("request-rx-copy", "1"),
        ("feature-rx-notify", "1"),
        ("feature-sg", "1"),
        ("feature-gso-tcpv4", "1"),
        ("feature-gso-tcpv6", "1"),
        ("feature-ipv6-csum-offload", "1"),
    ] {
        assert_eq!(read(&s, &format!("{fe}/{k}")).as_deref(), Some(v), "{k}");
    }
    for k in [
        "tx-ring-ref",
        "rx-ring-ref",
        "event-channel-tx",
        "event-channel-rx",
    ] {
        let v = read(&s, &format!("{fe}/{k}")).unwrap_or_else(|| panic!("{k} missing"));
        v.parse::<u32>().unwrap();
    }
    assert_eq!(read(&s, &format!("{fe}/event-channel")), None);
    assert_eq!(read(&s, &format!("{fe}/multi-queue-num-queues")), None);
    assert_eq!(read(&s, &format!("{fe}/feature-no-csum-offload")), None);
}

#[test]
fn queues_are_capped_by_the_backend_and_shared_channel_without_split() {
    let (hv, doms) = setup(1);
    let d = doms[0];
    let cfg = NetfrontConfig {
        queues: 4,
        csum_offload: false,
        ..Default::default()
    };
    let opts = BackOpts {
        max_queues: 2,
        split: false,
        ..Default::default()
    };
    let (mut nf, vif) = connect(&hv, d, cfg, opts);
    let s = hv.store(0).unwrap();
    let fe = frontend_path(d, 0);
    assert_eq!(nf.num_queues(), 2);
    assert_eq!(vif.queues.len(), 2);
    assert_eq!(
        read(&s, &format!("{fe}/multi-queue-num-queues")).as_deref(),
        Some("2")
    );
    assert_eq!(read(&s, &format!("{fe}/tx-ring-ref")), None);
    assert_eq!(
        read(&s, &format!("{fe}/feature-no-csum-offload")).as_deref(),
        Some("1")
    );
    for i in 0..2 {
        for k in ["tx-ring-ref", "rx-ring-ref", "event-channel"] {
            assert!(
                read(&s, &format!("{fe}/queue-{i}/{k}")).is_some(),
                "queue-{i}/{k}"
            );
        }
        assert_eq!(read(&s, &format!("{fe}/queue-{i}/event-channel-tx")), None);
        assert!(!nf.queue(i).unwrap().split_event_channels());
    }
    // Each queue works on its own: echo through both, concurrently.
    let stop = Arc::new(AtomicBool::new(false));
    let benv = Arc::new(hv.backend_env().unwrap());
    let hs = spawn_echo(benv, vif, stop.clone());
    thread::scope(|sc| {
        for q in nf.queues_mut() {
            sc.spawn(move || {
                let tag = q.index() as u8;
                for n in 0..500u32 {
                    let mut f = vec![tag; 60 + (n as usize % 1400)];
                    f[14..18].copy_from_slice(&n.to_be_bytes());
                    while q.send(&f, TxMeta::default()) == Err(TxError::Busy) {
                        q.wait_tx(Some(Duration::from_millis(10)));
                    }
                    q.flush();
                    let mut buf = vec![0u8; 2000];
                    let t0 = Instant::now();
                    let got = loop {
                        if let Some((len, _)) = q.recv(&mut buf) {
                            break len;
                        }
                        assert!(t0.elapsed() < Duration::from_secs(10), "no echo");
                        q.wait(Some(Duration::from_millis(10)));
                    };
                    assert_eq!(&buf[..got], &f[..]);
                }
            });
        }
    });
    stop.store(true, Ordering::Relaxed);
    hs.into_iter().for_each(|h| h.join().unwrap());
    let st = nf.stats();
    assert_eq!((st.tx_packets, st.rx_packets), (1000, 1000));
}

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2654435761).max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

#[test]
fn echo_frames_of_every_size_with_offload_metadata() {
    let (hv, doms) = setup(1);
    let (mut nf, vif) = connect(&hv, doms[0], NetfrontConfig::default(), BackOpts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let hs = spawn_echo(Arc::new(hv.backend_env().unwrap()), vif, stop.clone());
    let q = nf.queue(0).unwrap();
    let sizes = [
        14usize, 60, 1514, 4095, 4096, 4097, 8192, 9000, 30001, 65535,
    ];
    let mut buf = vec![0u8; 70000];
    for (n, &len) in sizes.iter().enumerate() {
        let frame = pattern(len, n as u32);
        let meta = if len > 9000 {
            TxMeta {
                gso: Some(Gso {
                    ty: GsoType::TcpV4,
                    size: 1448,
                }),
                ..Default::default()
            }
        } else if len == 1514 {
            TxMeta {
                data_validated: true,
                ..Default::default()
            }
        } else {
            TxMeta::default()
        };
        // Random bytes are not TCP: a GSO frame's checksum cannot be prepared, so
        // give GSO frames a TCP/IPv4 header.
        let frame = if meta.gso.is_some() {
            tcp4_frame(len, n as u32)
        } else {
            frame
        };
        q.send(&frame, meta)
            .unwrap_or_else(|e| panic!("send {len}: {e}"));
        q.flush();
        let t0 = Instant::now();
        let (got, rmeta) = loop {
            if let Some(r) = q.recv(&mut buf) {
                break r;
            }
            assert!(t0.elapsed() < Duration::from_secs(10), "no echo of {len}");
            q.wait(Some(Duration::from_millis(10)));
        };
        assert_eq!(got, len);
        // A GSO frame goes out CHECKSUM_PARTIAL: the driver put the pseudo-header sum
        // in the TCP checksum field.
        let mut expect = frame.clone();
        if meta.gso.is_some() {
            assert!(netfront::csum::write_partial(&mut expect, len).is_some());
            assert_ne!(expect, frame);
        }
        assert!(buf[..got] == expect[..], "payload of {len} differs");
        assert_eq!(rmeta.slots as usize, len.div_ceil(4096));
        if let Some(g) = meta.gso {
            assert_eq!(rmeta.gso, Some(g));
            assert!(rmeta.csum_blank && rmeta.data_validated);
        } else {
            assert_eq!(rmeta.gso, None);
            assert!(!rmeta.csum_blank);
            assert_eq!(rmeta.data_validated, meta.data_validated);
        }
    }
    // Zero-copy paths: build in place, receive in place.
    q.send_with(5000, TxMeta::default(), |off, seg| {
        for (i, b) in seg.iter_mut().enumerate() {
            *b = ((off + i) % 251) as u8;
        }
    })
    .unwrap();
    q.flush();
    let t0 = Instant::now();
    let ok = loop {
        if let Some(ok) = q.recv_with(|f, _| {
            f.contiguous().is_none()
                && f.len() == 5000
                && f.segments()
                    .flatten()
                    .enumerate()
                    .all(|(i, &b)| b == (i % 251) as u8)
        }) {
            break ok;
        }
        assert!(t0.elapsed() < Duration::from_secs(10));
        q.wait(Some(Duration::from_millis(10)));
    };
    assert!(ok);
    stop.store(true, Ordering::Relaxed);
    hs.into_iter().for_each(|h| h.join().unwrap());
    let st = nf.stats();
    assert_eq!(st.tx_packets, sizes.len() as u64 + 1);
    assert_eq!(st.rx_packets, sizes.len() as u64 + 1);
    assert_eq!(
        st.rx_errors + st.tx_errors + st.rx_dropped + st.tx_dropped,
        0
    );
}

/// An Ethernet/IPv4/TCP frame of `len` bytes.
fn tcp4_frame(len: usize, seed: u32) -> Vec<u8> {
    let mut f = pattern(len, seed);
    f[12] = 0x08;
    f[13] = 0x00;
    let ip_total = (len - 14) as u16;
    f[14..34].copy_from_slice(&[
        0x45,
        0,
        (ip_total >> 8) as u8,
        ip_total as u8,
        0,
        1,
        0x40,
        0,
        64,
        6,
        0,
        0,
        10,
        0,
        0,
        1,
        10,
        0,
        0,
        2,
    ]);
    f[46] = 0x50; // data offset 5
    f
}

#[test]
fn full_tx_ring_reports_busy_then_recovers_when_the_backend_answers() {
    let (hv, doms) = setup(1);
    let (mut nf, vif) = connect(&hv, doms[0], NetfrontConfig::default(), BackOpts::default());
    let q = nf.queue(0).unwrap();
    let f = [0u8; 60];
    let mut sent = 0;
    while q.send(&f, TxMeta::default()).is_ok() {
        sent += 1;
    }
    assert_eq!(sent, 256, "one slot and one page per 60-byte frame");
    assert_eq!(q.send(&f, TxMeta::default()), Err(TxError::Busy));
    assert_eq!(q.tx_free_slots(), 0);
    // A GSO frame needs an extra slot on top of its data slots: refused too.
    let stop = Arc::new(AtomicBool::new(false));
    let hs = spawn_echo(Arc::new(hv.backend_env().unwrap()), vif, stop.clone());
    let t0 = Instant::now();
    let mut buf = [0u8; 100];
    let mut got = 0;
    while got < 256 {
        if q.recv(&mut buf).is_some() {
            got += 1;
            continue;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "only {got} echoed");
        q.wait(Some(Duration::from_millis(10)));
    }
    q.reclaim();
    assert_eq!(q.tx_in_flight(), 0);
    assert!(q.send(&f, TxMeta::default()).is_ok());
    stop.store(true, Ordering::Relaxed);
    hs.into_iter().for_each(|h| h.join().unwrap());
    let st = nf.stats();
    assert!(st.tx_busy >= 1);
    assert!(st.tx_notify_sent >= 1);
}

#[test]
fn backend_error_and_drop_statuses_are_counted_and_ids_reclaimed() {
    let (hv, doms) = setup(1);
    let (mut nf, mut vif) = connect(&hv, doms[0], NetfrontConfig::default(), BackOpts::default());
    let benv = hv.backend_env().unwrap();
    let q = nf.queue(0).unwrap();
    let mut qb = vif.queues.remove(0);
    let mut frame = Frame::default();
    for (status, n) in [(-1i16, 3), (-2, 2), (0, 1)] {
        TX_STATUS.store(status as u16 as u32, Ordering::Relaxed);
        for _ in 0..n {
            q.send(&[7u8; 5000], TxMeta::default()).unwrap();
        }
        q.flush();
        for _ in 0..n {
            assert!(qb.tx.take(&benv, doms[0], &mut frame));
        }
        qb.tx.push();
    }
    TX_STATUS.store(0, Ordering::Relaxed);
    q.reclaim();
    assert_eq!(q.tx_in_flight(), 0, "every id came back");
    let st = q.stats();
    assert_eq!(st.tx_errors, 3, "one error per packet, not per slot");
    assert_eq!(st.tx_dropped, 2);
}

/// Echo one frame through a freshly accepted vif (backend side driven inline).
fn echo_once(
    hv: &hv::embedded::Hypervisor,
    dom: u16,
    nf: &mut Netfront<hv::embedded::EmbeddedGuestEnv>,
    vif: &mut VifBack,
) {
    let benv = hv.backend_env().unwrap();
    let q = nf.queue(0).unwrap();
    q.send(&pattern(300, 9), TxMeta::default()).unwrap();
    q.flush();
    let qb = &mut vif.queues[0];
    let mut f = Frame::default();
    assert!(qb.tx.take(&benv, dom, &mut f));
    qb.tx.push();
    assert!(qb.rx.deliver(&benv, dom, &f));
    qb.rx.push();
    let mut buf = [0u8; 400];
    assert!(q.wait(Some(Duration::from_secs(5))) || q.recv(&mut buf).is_some());
    let (len, _) = q.recv(&mut buf).expect("echoed frame");
    assert_eq!(&buf[..len], &pattern(300, 9)[..]);
}

#[test]
fn frontend_close_releases_every_grant_and_reconnect_works() {
    let (hv, doms) = setup(1);
    let d = doms[0];
    let free_before = hv.domain(d).unwrap().free_grant_refs();
    let (mut nf, mut vif) = connect(&hv, d, NetfrontConfig::default(), BackOpts::default());
    assert!(hv.domain(d).unwrap().free_grant_refs() < free_before);
    echo_once(&hv, d, &mut nf, &mut vif);
    // Frames left in flight: dropped by the close.
    nf.queue(0)
        .unwrap()
        .send(&[1u8; 100], TxMeta::default())
        .unwrap();
    nf.queue(0).unwrap().flush();

    let benv = hv.backend_env().unwrap();
    let fe = frontend_path(d, 0);
    let be = backend_path(0, d, 0);
    let back = thread::spawn(move || {
        let st = benv.store();
        wait_state(
            st,
            &fe,
            |s| s == XenbusState::Closing,
            Duration::from_secs(10),
        );
        drop(vif); // unmap the rings, unbind the channels
        xenbus_switch_state(st, &be, XenbusState::Closing).unwrap();
        wait_state(
            st,
            &fe,
            |s| s == XenbusState::Closed,
            Duration::from_secs(10),
        );
        xenbus_switch_state(st, &be, XenbusState::Closed).unwrap();
        // netback: a frontend back in Initialising after Closed means reconnect.
        wait_state(
            st,
            &fe,
            |s| s == XenbusState::Initialising,
            Duration::from_secs(10),
        );
        announce(st, &be, &BackOpts::default());
        accept(&benv, d, 0)
    });
    nf.close().expect("close");
    assert_eq!(nf.state(), XenbusState::Closed);
    assert_eq!(nf.num_queues(), 0);
    assert_eq!(nf.unreleased_grants(), 0);
    assert_eq!(
        hv.domain(d).unwrap().free_grant_refs(),
        free_before,
        "every grant ended"
    );
    assert!(nf.queue(0).is_none());
    nf.reconnect().expect("reconnect");
    let mut vif = back.join().unwrap();
    assert_eq!(nf.state(), XenbusState::Connected);
    echo_once(&hv, d, &mut nf, &mut vif);
}

#[test]
fn backend_close_is_followed_in_flight_frames_dropped_and_reconnect_works() {
    let (hv, doms) = setup(1);
    let d = doms[0];
    let free_before = hv.domain(d).unwrap().free_grant_refs();
    let (mut nf, vif) = connect(&hv, d, NetfrontConfig::default(), BackOpts::default());
    assert_eq!(nf.poll_backend().unwrap(), LinkEvent::Up);
    // In flight, never answered.
    for _ in 0..10 {
        nf.queue(0)
            .unwrap()
            .send(&[2u8; 3000], TxMeta::default())
            .unwrap();
    }
    nf.queue(0).unwrap().flush();
    assert_eq!(nf.queue(0).unwrap().tx_in_flight(), 10);

    let benv = hv.backend_env().unwrap();
    let st = benv.store();
    let be = backend_path(0, d, 0);
    let fe = frontend_path(d, 0);
    drop(vif);
    xenbus_switch_state(st, &be, XenbusState::Closing).unwrap();
    assert_eq!(nf.poll_backend().unwrap(), LinkEvent::BackendClosed);
    assert_eq!(nf.state(), XenbusState::Closed);
    assert_eq!(xenbus_read_state(st, &fe).unwrap(), XenbusState::Closed);
    assert_eq!(
        hv.domain(d).unwrap().free_grant_refs(),
        free_before,
        "buffers reclaimed"
    );
    assert_eq!(nf.poll_backend().unwrap(), LinkEvent::Down);
    xenbus_switch_state(st, &be, XenbusState::Closed).unwrap();

    let back = thread::spawn(move || {
        let st = benv.store();
        wait_state(
            st,
            &fe,
            |s| s == XenbusState::Initialising,
            Duration::from_secs(10),
        );
        announce(st, &be, &BackOpts::default());
        accept(&benv, d, 0)
    });
    nf.reconnect().expect("reconnect");
    let mut vif = back.join().unwrap();
    assert_eq!(nf.queue(0).unwrap().tx_in_flight(), 0);
    echo_once(&hv, d, &mut nf, &mut vif);
}

#[test]
fn connect_times_out_without_a_backend_and_gives_everything_back() {
    let (hv, doms) = setup(1);
    let d = doms[0];
    let free_before = hv.domain(d).unwrap().free_grant_refs();
    let cfg = NetfrontConfig {
        timeout: Duration::from_millis(200),
        ..Default::default()
    };
    let err = Netfront::connect(hv.guest_env(d).unwrap(), cfg.clone())
        .err()
        .expect("no backend");
    assert!(
        matches!(err, netfront::NetfrontError::Timeout { .. }),
        "{err}"
    );
    // Backend announces but never connects: rings were granted, then given back.
    let benv = hv.backend_env().unwrap();
    announce(benv.store(), &backend_path(0, d, 0), &BackOpts::default());
    let err = Netfront::connect(hv.guest_env(d).unwrap(), cfg)
        .err()
        .expect("backend never connects");
    assert!(
        matches!(err, netfront::NetfrontError::Timeout { .. }),
        "{err}"
    );
    assert_eq!(hv.domain(d).unwrap().free_grant_refs(), free_before);
}

#[test]
fn malformed_rx_responses_are_counted_never_delivered_and_overflow_disables_the_queue() {
    use hv::abi::netif::NetifRxResponse;
    let (hv, doms) = setup(1);
    let d = doms[0];
    let (mut nf, mut vif) = connect(&hv, d, NetfrontConfig::default(), BackOpts::default());
    let benv = hv.backend_env().unwrap();
    let rx = &mut vif.queues[0].rx;
    let mut respond = |f: &dyn Fn(u16) -> NetifRxResponse| {
        let cons = rx.ring.req_cons();
        let req = rx.ring.copy_request(cons);
        rx.ring.set_req_cons(cons.wrapping_add(1));
        rx.ring.produce_response(f(req.id)).unwrap();
    };
    respond(&|id| NetifRxResponse {
        id: id ^ 1,
        offset: 0,
        flags: 0,
        status: 60,
    }); // wrong id
    respond(&|id| NetifRxResponse {
        id,
        offset: 4000,
        flags: 0,
        status: 200,
    }); // past the page
    respond(&|id| NetifRxResponse {
        id,
        offset: 0,
        flags: 0,
        status: -1,
    }); // backend error
    respond(&|id| NetifRxResponse {
        id,
        offset: 0,
        flags: 0,
        status: 5,
    }); // runt
    rx.push();
    let good = Frame {
        data: pattern(100, 3),
        ..Default::default()
    };
    assert!(rx.deliver(&benv, d, &good));
    rx.push();
    let q = nf.queue(0).unwrap();
    let mut buf = [0u8; 200];
    let (len, _) = q.recv(&mut buf).expect("the good frame");
    assert_eq!(&buf[..len], &good.data[..]);
    assert!(q.recv(&mut buf).is_none());
    let st = q.stats();
    assert_eq!((st.rx_errors, st.rx_dropped, st.rx_packets), (3, 1, 1));
    // Consumed buffers are reposted in batches (32 by default), or before sleeping.
    assert_eq!(q.rx_posted(), 251);
    q.refill();
    assert_eq!(q.rx_posted(), 256, "every buffer reposted");
    assert_eq!(nf.poll_backend().unwrap(), LinkEvent::Up);

    // rsp_prod pushed past every outstanding request: the queue is disabled, no panic.
    let page = vif.queues[0].rx.ring.page();
    // SAFETY: the ring page is mapped for the life of `vif`; rsp_prod is the third u32.
    unsafe {
        let rsp_prod = &*(page.as_ptr().add(8) as *const std::sync::atomic::AtomicU32);
        rsp_prod.fetch_add(1000, Ordering::Release);
    }
    let q = nf.queue(0).unwrap();
    assert!(q.recv(&mut buf).is_none());
    assert!(q.is_broken());
    assert_eq!(nf.poll_backend().unwrap(), LinkEvent::QueueBroken(0));
}

#[test]
fn blank_ipv6_checksum_is_completed_in_software_when_the_backend_cannot() {
    let (hv, doms) = setup(1);
    let opts = BackOpts {
        ipv6_csum: false,
        ..Default::default()
    };
    let (mut nf, vif) = connect(&hv, doms[0], NetfrontConfig::default(), opts);
    let stop = Arc::new(AtomicBool::new(false));
    let hs = spawn_echo(Arc::new(hv.backend_env().unwrap()), vif, stop.clone());
    let q = nf.queue(0).unwrap();
    // Ethernet + IPv6 + TCP, 1000 bytes of payload, checksum field garbage.
    let payload = pattern(1000, 5);
    let mut f = vec![0u8; 14 + 40 + 20];
    f[12] = 0x86;
    f[13] = 0xdd;
    f[14] = 0x60;
    let plen = (20 + payload.len()) as u16;
    f[18..20].copy_from_slice(&plen.to_be_bytes());
    f[20] = 6;
    f[21] = 64;
    f[22..38].copy_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    f[38..54].copy_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    f[54 + 12] = 0x50;
    f[54 + 16] = 0xde;
    f[54 + 17] = 0xad;
    f.extend_from_slice(&payload);
    q.send(
        &f,
        TxMeta {
            csum_blank: true,
            ..Default::default()
        },
    )
    .unwrap();
    // An IPv4 frame with a blank checksum is offloaded instead.
    let f4 = tcp4_frame(600, 1);
    q.send(
        &f4,
        TxMeta {
            csum_blank: true,
            ..Default::default()
        },
    )
    .unwrap();
    // Not TCP/UDP: refused rather than sent with a flag netback would choke on.
    assert_eq!(
        q.send(
            &[0u8; 60],
            TxMeta {
                csum_blank: true,
                ..Default::default()
            }
        ),
        Err(TxError::ChecksumUnparsable)
    );
    q.flush();
    let mut buf = vec![0u8; 2000];
    let mut got = Vec::new();
    let t0 = Instant::now();
    while got.len() < 2 {
        if let Some((len, meta)) = q.recv(&mut buf) {
            got.push((buf[..len].to_vec(), meta));
            continue;
        }
        assert!(t0.elapsed() < Duration::from_secs(10));
        q.wait(Some(Duration::from_millis(10)));
    }
    let (v6, m6) = &got[0];
    assert_eq!(
        netfront::csum::verify(v6),
        Some(true),
        "software checksum is right"
    );
    assert!(!m6.csum_blank);
    let (v4, m4) = &got[1];
    assert!(
        m4.csum_blank && m4.data_validated,
        "offloaded to the backend"
    );
    let mut filled = v4.clone();
    assert!(netfront::csum::fill_checksum(&mut filled));
    assert_eq!(netfront::csum::verify(&filled), Some(true));
    stop.store(true, Ordering::Relaxed);
    hs.into_iter().for_each(|h| h.join().unwrap());
    assert_eq!(nf.stats().tx_csum_sw, 1);
}

/// The smoltcp device takes frames the backend flags (`NETRXF_csum_blank`,
/// `NETRXF_data_validated`) as they are, verifies every other TCP/UDP frame itself and
/// drops a wrong one before smoltcp sees it.
#[test]
fn the_smoltcp_device_verifies_unflagged_checksums_and_trusts_flagged_ones() {
    use smoltcp::phy::{Device, RxToken};
    let (hv, doms) = setup(1);
    let d = doms[0];
    let (mut nf, mut vif) = connect(&hv, d, NetfrontConfig::default(), BackOpts::default());
    let benv = hv.backend_env().unwrap();
    let mut good = tcp4_frame(600, 1);
    assert!(netfront::csum::fill_checksum(&mut good));
    let mut bad = good.clone();
    bad[500] ^= 0x5a;
    // Headers in one page and payload in the next: verified across pages.
    let mut big_good = tcp4_frame(6000, 2);
    assert!(netfront::csum::fill_checksum(&mut big_good));
    let mut big_bad = big_good.clone();
    big_bad[5000] ^= 1;
    let frame = |data: &Vec<u8>, csum_blank, data_validated| Frame {
        data: data.clone(),
        csum_blank,
        data_validated,
        gso: None,
    };
    let rx = &mut vif.queues[0].rx;
    for f in [
        frame(&bad, false, false),
        frame(&bad, false, true),
        frame(&bad, true, false),
        frame(&big_bad, false, false),
        frame(&good, false, false),
        frame(&big_good, false, false),
    ] {
        assert!(rx.deliver(&benv, d, &f));
    }
    rx.push();
    let q = nf.queue(0).unwrap();
    let now = smoltcp::time::Instant::from_millis(0);
    let mut got = Vec::new();
    let t0 = Instant::now();
    while got.len() < 4 && t0.elapsed() < Duration::from_secs(10) {
        match q.receive(now) {
            Some((rx, _tx)) => got.push(rx.consume(|b| b.to_vec())),
            None => {
                q.wait(Some(Duration::from_millis(10)));
            }
        }
    }
    assert_eq!(got.len(), 4, "four frames pass");
    assert_eq!(got[0], bad, "data_validated: taken as it is");
    assert_eq!(got[1], bad, "csum_blank: taken as it is");
    assert_eq!(got[2], good);
    assert_eq!(got[3], big_good);
    assert!(
        q.receive(now).is_none(),
        "the wrong ones never reach the stack"
    );
    let st = q.stats();
    assert_eq!((st.rx_csum_bad, st.rx_csum_verified), (2, 2), "{st:?}");
    assert_eq!(st.rx_csum_sw, 0, "nothing filled in");
}

/// Delivers `n` 3-page frames (every other one GSO if `gso`: one more slot for the
/// extra) and reads them through the contiguous-buffer path; returns what was sent,
/// what was read and how many frames were staged.
fn read_contiguous(n: u32, gso: bool) -> (Vec<Vec<u8>>, Vec<Vec<u8>>, u64) {
    let (hv, doms) = setup(1);
    let d = doms[0];
    let (mut nf, mut vif) = connect(&hv, d, NetfrontConfig::default(), BackOpts::default());
    let benv = hv.backend_env().unwrap();
    let mut got = Vec::new();
    let mut sent = Vec::new();
    for i in 0..n {
        let f = Frame {
            data: pattern(9000, i),
            gso: (gso && i % 2 == 1).then_some((1, 1448)),
            ..Default::default()
        };
        let rx = &mut vif.queues[0].rx;
        let t0 = Instant::now();
        while !rx.deliver(&benv, d, &f) {
            // Let the guest consume and repost.
            rx.push();
            let q = nf.queue(0).unwrap();
            while let Some(b) = q.recv_contiguous(false, |b, _| b.to_vec()) {
                got.push(b);
            }
            q.refill();
            assert!(t0.elapsed() < Duration::from_secs(10), "no buffers");
        }
        rx.push();
        sent.push(f.data);
    }
    let q = nf.queue(0).unwrap();
    let t0 = Instant::now();
    while got.len() < sent.len() && t0.elapsed() < Duration::from_secs(10) {
        match q.recv_contiguous(false, |b, _| b.to_vec()) {
            Some(b) => got.push(b),
            None => {
                q.wait(Some(Duration::from_millis(10)));
            }
        }
    }
    (sent, got, q.stats().rx_staged)
}

/// Frames spread over adjacent RX pages of the guest's memory are handed to a
/// contiguous-buffer consumer (the smoltcp device) in place; only a frame whose pages
/// are not adjacent (it wraps around the ring) goes through the staging copy.
#[test]
fn multi_page_frames_in_adjacent_pages_are_read_in_place() {
    // 85 frames take slots 0-254; the 86th takes 255, 0, 1: staged.
    let (sent, got, staged) = read_contiguous(90, false);
    assert_eq!(got, sent, "every frame, byte-exact, in order");
    assert_eq!(staged, 1, "only the frame across the ring's end is staged");
}

/// A GSO frame's extra sits between its first two data slots: the first segment moves
/// into the extra's page, right below the second, and the frame is read in place; that
/// holds even across the ring's end when the extra lands in slot 0.
#[test]
fn gso_frames_are_read_in_place_through_the_extras_page() {
    // Pairs of 3 + 4 slots: frame 73 (GSO) takes 255, 0 (extra), 1, 2.
    let (sent, got, staged) = read_contiguous(80, true);
    assert_eq!(got, sent, "every frame, byte-exact, in order");
    assert_eq!(staged, 0);
}
