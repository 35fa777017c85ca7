//! A malicious frontend against netback: every validation rule, answered as Linux's
//! netback answers it, while a healthy vif on the same backend keeps passing traffic.

mod common;

use std::time::{Duration, Instant};

use common::*;
use hv::abi::netif::*;
use hv::abi::ring::RingError;
use hv::abi::xenbus::XenbusState;
use hv::env::GuestEnv;
use netback::{DisableReason, FatalError, Sink};
use proptest::prelude::*;

struct Bench {
    // Dropped before the hypervisor (see TestFront).
    healthy: TestFront,
    w: World,
    sent: u64,
}

impl Bench {
    fn new() -> Bench {
        let w = World::new(Sink::new());
        let (_, env) = w.add_guest(0, MAC_A);
        let healthy = TestFront::connect(&w, env, 0, FrontOpts::default());
        Bench {
            healthy,
            w,
            sent: 0,
        }
    }

    fn hostile(&self) -> TestFront {
        let (_, env) = self.w.add_guest(0, MAC_B);
        TestFront::connect(&self.w, env, 0, FrontOpts::default())
    }

    /// The healthy vif still passes a frame end to end.
    fn healthy_ok(&mut self) {
        let frame = eth_frame(MAC_B, MAC_A, 200, 0);
        self.healthy.send(0, &frame, 4096, 0, None);
        assert_eq!(self.healthy.tx_responses(0, 1)[0].status, NETIF_RSP_OKAY);
        self.sent += 1;
        let want = self.sent;
        self.w.wait_vif(self.healthy.id(), "healthy traffic", |i| {
            i.counters.tx_packets == want
        });
    }

    /// Expect `f`'s vif disabled for `check`, Closing, then tear the guest down.
    fn expect_fatal(&mut self, f: TestFront, what: &str, check: impl Fn(&FatalError) -> bool) {
        let info = self.w.wait_vif(
            f.id(),
            what,
            |i| matches!(&i.disabled, Some(DisableReason::Fatal(e)) if check(e)),
        );
        self.w.wait_be_state(f.domid, 0, XenbusState::Closing);
        assert!(info.counters.tx_errors + info.counters.rx_errors >= 1);
        self.healthy_ok();
        self.w.hv.destroy_domain(f.domid).unwrap();
    }
}

fn req(gref: u32, offset: u16, flags: u16, id: u16, size: u16) -> NetifTxRequest {
    NetifTxRequest {
        gref,
        offset,
        flags,
        id,
        size,
    }
}

#[test]
fn fatal_rules_disable_only_the_offending_vif() {
    let mut b = Bench::new();
    b.healthy_ok();

    // Producer overrun on TX and on RX.
    let f = b.hostile();
    f.poke_tx_req_prod(0, 300);
    b.expect_fatal(f, "TX overrun", |e| {
        matches!(e, FatalError::TxRing(RingError::RequestProdOverflow { .. }))
    });
    let f = b.hostile();
    f.poke_rx_req_prod(0, 64 + 1000);
    b.expect_fatal(f, "RX overrun", |e| {
        matches!(e, FatalError::RxRing(RingError::RequestProdOverflow { .. }))
    });

    // Too many slots: 22 data slots.
    let mut f = b.hostile();
    let g = f.queues[0].tx_bufs[0].gref;
    let reqs: Vec<_> = (0..22)
        .map(|i| {
            req(
                g,
                0,
                if i < 21 { NETTXF_MORE_DATA } else { 0 },
                i,
                if i == 0 { 2200 } else { 100 },
            )
        })
        .collect();
    f.send_raw(0, &reqs);
    b.expect_fatal(f, "too many slots", |e| {
        matches!(e, FatalError::TooManySlots { .. })
    });

    // Offset + size past the page, in the first and in a following slot.
    let mut f = b.hostile();
    let g = f.queues[0].tx_bufs[0].gref;
    f.send_raw(0, &[req(g, 4000, 0, 0, 200)]);
    b.expect_fatal(f, "cross page", |e| {
        *e == FatalError::CrossPage {
            offset: 4000,
            size: 200,
        }
    });
    let mut f = b.hostile();
    let g = f.queues[0].tx_bufs[0].gref;
    f.send_raw(
        0,
        &[req(g, 0, NETTXF_MORE_DATA, 0, 300), req(g, 4095, 0, 1, 2)],
    );
    b.expect_fatal(f, "cross page 2", |e| {
        *e == FatalError::CrossPage {
            offset: 4095,
            size: 2,
        }
    });

    // Extra-info rules.
    let mut f = b.hostile();
    let g = f.queues[0].tx_bufs[0].gref;
    f.send_raw(0, &[req(g, 0, NETTXF_EXTRA_INFO, 0, 60)]);
    b.expect_fatal(f, "missing extra", |e| *e == FatalError::MissingExtraInfo);
    for ty in [0u8, XEN_NETIF_EXTRA_TYPE_MAX, 0xff] {
        let mut f = b.hostile();
        let g = f.queues[0].tx_bufs[0].gref;
        let extra = NetifExtraInfo {
            ty,
            flags: 0,
            u: [0; 6],
        }
        .to_tx_slot();
        f.send_raw(0, &[req(g, 0, NETTXF_EXTRA_INFO, 0, 60), extra]);
        b.expect_fatal(f, "bad extra type", |e| {
            *e == FatalError::InvalidExtraType(ty)
        });
    }
    let gso = |size, ty| {
        NetifExtraInfo::new_gso(
            NetifExtraGso {
                size,
                ty,
                pad: 0,
                features: 0,
            },
            0,
        )
        .to_tx_slot()
    };
    let mut f = b.hostile();
    let g = f.queues[0].tx_bufs[0].gref;
    f.send_raw(
        0,
        &[
            req(g, 0, NETTXF_EXTRA_INFO, 0, 60),
            gso(0, XEN_NETIF_GSO_TYPE_TCPV4),
        ],
    );
    b.expect_fatal(f, "gso size 0", |e| *e == FatalError::GsoSizeZero);
    let mut f = b.hostile();
    let g = f.queues[0].tx_bufs[0].gref;
    f.send_raw(0, &[req(g, 0, NETTXF_EXTRA_INFO, 0, 60), gso(1448, 9)]);
    b.expect_fatal(f, "bad gso type", |e| *e == FatalError::BadGsoType(9));

    // A packet whose last published slot says more_data.
    let mut f = b.hostile();
    let g = f.queues[0].tx_bufs[0].gref;
    f.send_raw(0, &[req(g, 0, NETTXF_MORE_DATA, 0, 600)]);
    b.expect_fatal(f, "incomplete", |e| {
        matches!(e, FatalError::IncompletePacket { .. })
    });

    // Grants: never granted, revoked, granted to someone else.
    let mut f = b.hostile();
    f.send_raw(0, &[req(9999, 0, 0, 0, 60)]);
    b.expect_fatal(f, "bad gref", |e| {
        matches!(e, FatalError::GrantCopy { gref: 9999, .. })
    });
    // A bad gref far into one published batch, past the first copy chunk (~48 KiB):
    // the packets before it are copied and answered, then the vif is disabled.
    let mut f = b.hostile();
    let g = f.queues[0].tx_bufs[0].gref;
    let mut reqs: Vec<_> = (0..40).map(|i| req(g, 0, 0, i, 1500)).collect();
    reqs.push(req(9999, 0, 0, 40, 1500));
    f.send_raw(0, &reqs);
    let r = f.tx_responses(0, 32);
    assert!(r.iter().all(|x| x.status == NETIF_RSP_OKAY), "{r:?}");
    b.expect_fatal(f, "bad gref in a later chunk", |e| {
        matches!(e, FatalError::GrantCopy { gref: 9999, .. })
    });
    let mut f = b.hostile();
    let pages = f.env.grant_pages(0, 1, true).unwrap();
    let revoked = pages[0].gref;
    f.env.end_grants(pages).map_err(|(e, _)| e).unwrap();
    f.send_raw(0, &[req(revoked, 0, 0, 0, 60)]);
    b.expect_fatal(
        f,
        "revoked gref",
        |e| matches!(e, FatalError::GrantCopy { gref, .. } if *gref == revoked),
    );
    let mut f = b.hostile();
    let other = f.env.grant_pages(b.healthy.domid, 1, true).unwrap();
    let foreign = other[0].gref;
    f.send_raw(0, &[req(foreign, 0, 0, 0, 60)]);
    b.expect_fatal(
        f,
        "gref granted to another domain",
        |e| matches!(e, FatalError::GrantCopy { gref, .. } if *gref == foreign),
    );
    std::mem::forget(other);
}

#[test]
fn non_fatal_rules_answer_error_and_drop() {
    let mut b = Bench::new();
    let mut f = b.hostile();
    let g = f.queues[0].tx_bufs[0].gref;

    // Shorter than an Ethernet header.
    f.send_raw(0, &[req(g, 0, 0, 7, 13)]);
    let r = f.tx_responses(0, 1);
    assert_eq!((r[0].id, r[0].status), (7, NETIF_RSP_ERROR));

    // A following slot larger than what is left of the packet: every slot errors.
    f.send_raw(
        0,
        &[req(g, 0, NETTXF_MORE_DATA, 1, 200), req(g, 0, 0, 2, 300)],
    );
    let r = f.tx_responses(0, 2);
    assert_eq!(
        r.iter().map(|x| (x.id, x.status)).collect::<Vec<_>>(),
        vec![(1, NETIF_RSP_ERROR), (2, NETIF_RSP_ERROR)]
    );

    // 20 data slots: over the limit Linux accepts, below the fatal threshold.
    let reqs: Vec<_> = (0..20)
        .map(|i| {
            req(
                g,
                0,
                if i < 19 { NETTXF_MORE_DATA } else { 0 },
                10 + i,
                if i == 0 { 2000 } else { 100 },
            )
        })
        .collect();
    f.send_raw(0, &reqs);
    let r = f.tx_responses(0, 20);
    assert!(r.iter().all(|x| x.status == NETIF_RSP_ERROR), "{r:?}");
    // A GSO packet that is dropped still answers its extra with NETIF_RSP_NULL.
    let gso = NetifExtraInfo::new_gso(
        NetifExtraGso {
            size: 1448,
            ty: 1,
            pad: 0,
            features: 0,
        },
        0,
    )
    .to_tx_slot();
    f.send_raw(0, &[req(g, 0, NETTXF_EXTRA_INFO, 40, 10), gso]);
    let r = f.tx_responses(0, 2);
    assert_eq!(
        (r[0].id, r[0].status, r[1].status),
        (40, NETIF_RSP_ERROR, NETIF_RSP_NULL)
    );

    let info = b.w.wait_vif(f.id(), "drops", |i| i.counters.tx_drops == 4);
    assert_eq!(info.state, XenbusState::Connected);
    assert!(info.disabled.is_none());
    assert_eq!(info.counters.tx_packets, 0);
    // The vif still works.
    let frame = eth_frame(MAC_A, MAC_B, 100, 1);
    f.send(0, &frame, 4096, 0, None);
    assert_eq!(f.tx_responses(0, 1)[0].status, NETIF_RSP_OKAY);
    b.healthy_ok();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    /// Random slot bytes and a random producer index never hurt netback: the hostile
    /// vif is answered or disabled, the healthy one keeps working.
    #[test]
    fn random_ring_contents_never_break_netback(
        slots in proptest::collection::vec(any::<[u8; 12]>(), 1..40),
        prod_mode in 0u8..3,
        prod_raw in any::<u32>(),
    ) {
        let mut b = Bench::new();
        let f = b.hostile();
        for (i, s) in slots.iter().enumerate() {
            f.poke_tx_slot(0, i as u32, *s);
        }
        let prod = match prod_mode {
            0 => slots.len() as u32,
            1 => prod_raw,
            _ => prod_raw % 300,
        };
        f.poke_tx_req_prod(0, prod);
        // Settle: answered everything, or disabled.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let info = b.w.netback.vif(f.id()).expect("vif listed");
            let rsp_prod = f.queues[0].tx.rsp_prod();
            if info.disabled.is_some() || rsp_prod == prod {
                break;
            }
            // Every published request is answered unless the vif was disabled.
            prop_assert!(Instant::now() < deadline, "hostile vif neither answered nor disabled: {info:?} rsp_prod {rsp_prod} prod {prod}");
            std::thread::sleep(Duration::from_millis(2));
        }
        b.healthy_ok();
    }
}
