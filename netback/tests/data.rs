//! Frames through netback: a hand-written frontend sends to a capturing port, a sink,
//! a reflector, a switch, and receives from a generator.

mod common;

use std::sync::Arc;

use common::*;
use hv::abi::netif::*;
use netback::{Gso, GsoType, OffloadMeta, Reflector, Sink, Source, Switch};

const GSO4: NetifExtraGso = NetifExtraGso {
    size: 1448,
    ty: XEN_NETIF_GSO_TYPE_TCPV4,
    pad: 0,
    features: 0,
};

#[test]
fn single_and_multi_slot_frames_reach_the_port_intact() {
    let cap = Capture::new();
    let w = World::new(cap.clone());
    let (_, env) = w.add_guest(0, MAC_A);
    let mut f = TestFront::connect(&w, env, 0, FrontOpts::default());

    // 1 slot, checksum flags.
    let small = eth_frame(MAC_B, MAC_A, 64, 1);
    assert_eq!(
        f.send(
            0,
            &small,
            4096,
            NETTXF_CSUM_BLANK | NETTXF_DATA_VALIDATED,
            None
        ),
        1
    );
    let r = f.tx_responses(0, 1);
    assert_eq!((r[0].id, r[0].status), (0, NETIF_RSP_OKAY));

    // 64 KiB - 1 over 17 data slots (the most netfront may use) + a GSO extra.
    let big = eth_frame(MAC_B, MAC_A, 65535, 2);
    let n = f.send(0, &big, 3855, NETTXF_CSUM_BLANK, Some(GSO4));
    assert_eq!(n, 18);
    let r = f.tx_responses(0, n);
    assert_eq!(r.len(), n);
    assert_eq!(r[0].status, NETIF_RSP_OKAY);
    assert_eq!(
        r[1].status, NETIF_RSP_NULL,
        "the extra is answered with NETIF_RSP_NULL"
    );
    assert!(r[2..].iter().all(|x| x.status == NETIF_RSP_OKAY));
    // Data responses echo the data slots' ids 0..17 in order.
    let ids: Vec<u16> = r
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 1)
        .map(|(_, x)| x.id)
        .collect();
    assert_eq!(ids, (0..17).collect::<Vec<u16>>());

    // Odd fragment sizes with offsets inside the page don't matter to the port.
    let odd = eth_frame(MAC_B, MAC_A, 3000, 3);
    assert_eq!(f.send(0, &odd, 700, NETTXF_DATA_VALIDATED, None), 5);
    f.tx_responses(0, 5);

    let got = cap.wait_frames(3);
    assert_eq!(got[0].1, small);
    assert_eq!(
        got[0].2,
        OffloadMeta {
            csum_blank: true,
            data_validated: true,
            gso: None
        }
    );
    assert_eq!(got[1].1, big);
    assert_eq!(
        got[1].2.gso,
        Some(Gso {
            ty: GsoType::TcpV4,
            size: 1448
        })
    );
    assert!(got[1].2.csum_blank);
    assert_eq!(got[2].1, odd);
    assert!(got[2].2.data_validated && !got[2].2.csum_blank);
    let info = w.wait_vif(f.id(), "counters", |i| i.counters.tx_packets == 3);
    assert_eq!(info.counters.tx_bytes, (64 + 65535 + 3000) as u64);
    assert_eq!(info.counters.tx_drops, 0);
}

#[test]
fn sink_counts_a_stream() {
    let sink = Sink::new();
    let w = World::new(sink.clone());
    let (_, env) = w.add_guest(0, MAC_A);
    let mut f = TestFront::connect(&w, env, 0, FrontOpts::default());
    let frame = eth_frame(MAC_B, MAC_A, 64, 0);
    for round in 0..20 {
        // Publish 10 packets at once so the backend sees a batch.
        let reqs: Vec<NetifTxRequest> = (0..10)
            .map(|i| NetifTxRequest {
                gref: f.queues[0].tx_bufs[0].gref,
                offset: 0,
                flags: 0,
                id: i,
                size: 64,
            })
            .collect();
        if round == 0 {
            f.send(0, &frame, 4096, 0, None);
            f.tx_responses(0, 1);
        }
        f.send_raw(0, &reqs);
        let r = f.tx_responses(0, 10);
        assert!(r.iter().all(|x| x.status == NETIF_RSP_OKAY));
    }
    w.wait_vif(f.id(), "all packets", |i| i.counters.tx_packets == 201);
    assert_eq!(sink.packets(), 201);
    assert_eq!(sink.bytes(), 201 * 64);
}

#[test]
fn reflector_sends_frames_back_with_rx_flags_and_gso_extra() {
    let refl = Reflector::new();
    let w = World::new(refl.clone());
    let (_, env) = w.add_guest(0, MAC_A);
    let mut f = TestFront::connect(
        &w,
        env,
        0,
        FrontOpts {
            split: true,
            ..Default::default()
        },
    );

    let small = eth_frame(MAC_DOM0, MAC_A, 60, 9);
    f.send(0, &small, 4096, NETTXF_DATA_VALIDATED, None);
    let back = f.recv(0);
    let mut expect = small.clone();
    expect[..6].copy_from_slice(&MAC_A);
    expect[6..12].copy_from_slice(&MAC_DOM0);
    assert_eq!(back.data, expect);
    assert_eq!(
        back.flags & (NETRXF_DATA_VALIDATED | NETRXF_CSUM_BLANK | NETRXF_MORE_DATA),
        NETRXF_DATA_VALIDATED
    );
    assert_eq!(back.statuses, vec![60]);

    // A 64 KiB GSO frame comes back over 16 pages + the extra right after the first.
    let big = eth_frame(MAC_DOM0, MAC_A, 65535, 4);
    f.send(0, &big, 4096, NETTXF_CSUM_BLANK, Some(GSO4));
    let back = f.recv(0);
    assert_eq!(back.data.len(), 65535);
    assert_eq!(&back.data[12..], &big[12..]);
    assert_eq!(
        back.gso.map(|g| (g.size, g.ty)),
        Some((1448, XEN_NETIF_GSO_TYPE_TCPV4))
    );
    assert_eq!(
        back.flags
            & (NETRXF_CSUM_BLANK | NETRXF_DATA_VALIDATED | NETRXF_EXTRA_INFO | NETRXF_MORE_DATA),
        NETRXF_CSUM_BLANK | NETRXF_DATA_VALIDATED | NETRXF_EXTRA_INFO | NETRXF_MORE_DATA
    );
    assert_eq!(back.statuses.len(), 16);
    assert!(back.statuses[..15].iter().all(|s| *s == 4096));
    assert_eq!(back.statuses[15], (65535 - 15 * 4096) as i16);
    let info = w.wait_vif(f.id(), "rx counters", |i| i.counters.rx_packets == 2);
    assert_eq!(info.counters.rx_bytes, 60 + 65535);
    eventually("reflected count", || refl.reflected() == 2);
}

#[test]
fn frontend_without_sg_or_gso_gets_no_large_frames() {
    let refl = Reflector::new();
    let w = World::new(refl);
    let (_, env) = w.add_guest(0, MAC_A);
    let mut f = TestFront::connect(
        &w,
        env,
        0,
        FrontOpts {
            sg: false,
            gso: false,
            ..Default::default()
        },
    );
    let big = eth_frame(MAC_DOM0, MAC_A, 9000, 4);
    f.send(0, &big, 4096, 0, None);
    w.wait_vif(f.id(), "rx drop", |i| i.counters.rx_drops == 1);
    let small = eth_frame(MAC_DOM0, MAC_A, 1500, 5);
    f.send(0, &small, 4096, 0, None);
    assert_eq!(f.recv(0).data.len(), 1500, "the small frame still arrives");
}

#[test]
fn switch_joins_two_guests() {
    let sw = Switch::new();
    let w = World::new(sw.clone());
    let (_, ea) = w.add_guest(0, MAC_A);
    let (_, eb) = w.add_guest(0, MAC_B);
    let mut a = TestFront::connect(&w, ea, 0, FrontOpts::default());
    let mut b = TestFront::connect(
        &w,
        eb,
        0,
        FrontOpts {
            queues: 2,
            split: true,
            ..Default::default()
        },
    );
    // Broadcast from A floods to B.
    let bcast = eth_frame([0xff; 6], MAC_A, 60, 1);
    a.send(0, &bcast, 4096, 0, None);
    let got = recv_any(&mut b);
    assert_eq!(got.data, bcast);
    // B answers A's (now learned) MAC: forwarded, not flooded.
    let reply = eth_frame(MAC_A, MAC_B, 1000, 2);
    b.send(0, &reply, 4096, 0, None);
    assert_eq!(a.recv(0).data, reply);
    // A → B unicast, multi-slot.
    let uni = eth_frame(MAC_B, MAC_A, 9000, 3);
    a.send(0, &uni, 4096, 0, None);
    assert_eq!(recv_any(&mut b).data, uni);
    // Stats are bumped after the frames are queued: poll.
    eventually("switch stats", || {
        let st = sw.stats();
        (st.flooded, st.forwarded) == (1, 2)
    });
    let fdb = sw.fdb();
    assert!(
        fdb.contains(&(MAC_A, a.id())) && fdb.contains(&(MAC_B, b.id())),
        "{fdb:?}"
    );
}

/// Receive on whichever queue the flow hash picked.
fn recv_any(f: &mut TestFront) -> RxFrame {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        for q in 0..f.queues.len() {
            if let Some(fr) = f.try_recv(q, std::time::Duration::from_millis(5)) {
                return fr;
            }
        }
        assert!(std::time::Instant::now() < deadline, "nothing received");
    }
}

#[test]
fn source_fills_posted_buffers() {
    let tmpl = eth_frame(MAC_A, MAC_DOM0, 128, 7);
    let src = Source::new(vec![(tmpl.clone(), OffloadMeta::default())], Some(100));
    let w = World::new(src.clone() as Arc<dyn netback::Port>);
    let (_, env) = w.add_guest(0, MAC_A);
    let mut f = TestFront::connect(&w, env, 0, FrontOpts::default());
    for _ in 0..100 {
        assert_eq!(f.recv(0).data, tmpl);
    }
    assert_eq!(src.generated(), 100);
    assert!(
        f.try_recv(0, std::time::Duration::from_millis(50))
            .is_none(),
        "limit respected"
    );
}

fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + WAIT;
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}
