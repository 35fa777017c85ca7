//! The xenbus handshake against a hand-written frontend on the embedded hypervisor.

mod common;

use std::time::Duration;

use common::*;
use hv::abi::xenbus::XenbusState;
use hv::env::{GuestEnv, Store, XBT_NIL};
use hv::xenbus::path_join;
use netback::{DisableReason, Sink};

fn read(w: &World, path: &str) -> String {
    String::from_utf8(w.dom0.read(XBT_NIL, path).unwrap_or_default()).unwrap()
}

#[test]
fn probe_advertises_features_and_waits() {
    let w = World::new(Sink::new());
    let (domid, _env) = w.add_guest(0, MAC_A);
    w.wait_be_state(domid, 0, XenbusState::InitWait);
    let be = hv::toolstack::backend_path(0, domid, 0);
    for k in [
        "feature-rx-copy",
        "feature-sg",
        "feature-gso-tcpv4",
        "feature-gso-tcpv6",
        "feature-ipv6-csum-offload",
        "feature-split-event-channels",
    ] {
        assert_eq!(read(&w, &path_join(&be, k)), "1", "{k}");
    }
    assert_eq!(read(&w, &path_join(&be, "multi-queue-max-queues")), "2");
    assert_eq!(read(&w, &path_join(&be, "hotplug-status")), "connected");
}

fn connect_and_check(queues: u32, split: bool, initialised: bool) {
    let sink = Sink::new();
    let w = World::new(sink.clone());
    let (_, env) = w.add_guest(0, MAC_A);
    let mut f = TestFront::connect(
        &w,
        env,
        0,
        FrontOpts {
            queues,
            split,
            initialised,
            ..Default::default()
        },
    );
    let info = w.wait_vif(f.id(), "Connected", |i| i.state == XenbusState::Connected);
    assert_eq!(info.num_queues, queues);
    assert_eq!(info.split_event_channels, split);
    assert_eq!(info.mac, Some(MAC_A));
    assert!(info.features.sg && info.features.gso_tcpv4 && info.features.rx_notify);
    // Every queue carries traffic.
    for q in 0..queues as usize {
        f.send(q, &eth_frame(MAC_B, MAC_A, 60, q as u8), 4096, 0, None);
        assert_eq!(
            f.tx_responses(q, 1)[0].status,
            hv::abi::netif::NETIF_RSP_OKAY
        );
    }
    w.wait_vif(f.id(), "tx packets", |i| {
        i.counters.tx_packets == u64::from(queues)
    });
    assert_eq!(sink.packets(), u64::from(queues));
}

#[test]
fn connects_one_queue_single_channel() {
    connect_and_check(1, false, false);
}

#[test]
fn connects_one_queue_split_channels_via_initialised() {
    connect_and_check(1, true, true);
}

#[test]
fn connects_two_queues_split_channels() {
    connect_and_check(2, true, false);
}

#[test]
fn connects_two_queues_single_channel() {
    connect_and_check(2, false, true);
}

#[test]
fn too_many_queues_is_refused() {
    let w = World::new(Sink::new());
    let (domid, env) = w.add_guest(0, MAC_A);
    let f = TestFront::setup(
        env,
        0,
        FrontOpts {
            queues: 3,
            ..Default::default()
        },
    );
    w.wait_be_state(domid, 0, XenbusState::Closing);
    let info = w.wait_vif(f.id(), "disabled", |i| i.disabled.is_some());
    assert!(
        matches!(info.disabled, Some(DisableReason::Connect(ref m)) if m.contains("3 queues")),
        "{info:?}"
    );
}

#[test]
fn close_from_frontend_then_reconnect() {
    let sink = Sink::new();
    let w = World::new(sink.clone());
    let (domid, env) = w.add_guest(0, MAC_A);
    let f = TestFront::connect(&w, env, 0, FrontOpts::default());
    f.set_state(XenbusState::Closing);
    w.wait_be_state(domid, 0, XenbusState::Closing);
    f.set_state(XenbusState::Closed);
    w.wait_be_state(domid, 0, XenbusState::Closed);
    // The backend let go of the rings: the frontend can end its grants.
    let TestFront { env, queues, .. } = f;
    for q in queues {
        env.end_grants(vec![q.tx_page, q.rx_page])
            .map_err(|(e, _)| e)
            .expect("rings unmapped");
    }
    // Reconnect: Initialising, fresh rings, Connected.
    let fe = hv::toolstack::frontend_path(domid, 0);
    env.store()
        .write(XBT_NIL, &path_join(&fe, "state"), b"1")
        .unwrap();
    w.wait_be_state(domid, 0, XenbusState::InitWait);
    let mut f = TestFront::connect(&w, env, 0, FrontOpts::default());
    let info = w.wait_vif(f.id(), "second connect", |i| i.connects == 2);
    assert_eq!(info.state, XenbusState::Connected);
    f.send(0, &eth_frame(MAC_B, MAC_A, 100, 1), 4096, 0, None);
    assert_eq!(f.tx_responses(0, 1)[0].status, 0);
    w.wait_vif(f.id(), "traffic after reconnect", |i| {
        i.counters.tx_packets == 1
    });
}

#[test]
fn close_from_backend_then_reconnect() {
    let w = World::new(Sink::new());
    let (domid, env) = w.add_guest(0, MAC_A);
    let f = TestFront::connect(&w, env, 0, FrontOpts::default());
    w.netback.close_vif(f.id());
    w.wait_be_state(domid, 0, XenbusState::Closing);
    // The frontend acknowledges as Linux's netfront does.
    f.set_state(XenbusState::Closed);
    w.wait_be_state(domid, 0, XenbusState::Closed);
    let TestFront { env, .. } = f;
    let f = TestFront::connect(&w, env, 0, FrontOpts::default());
    w.wait_vif(f.id(), "reconnected", |i| {
        i.connects == 2 && i.state == XenbusState::Connected
    });
}

#[test]
fn shutdown_closes_every_vif() {
    let World { hv, netback, dom0 } = World::new(Sink::new());
    let w2 = World {
        hv: hv.clone(),
        netback,
        dom0,
    };
    let (d1, e1) = w2.add_guest(0, MAC_A);
    let (d2, e2) = w2.add_guest(0, MAC_B);
    let f1 = TestFront::connect(&w2, e1, 0, FrontOpts::default());
    let f2 = TestFront::connect(
        &w2,
        e2,
        0,
        FrontOpts {
            split: true,
            ..Default::default()
        },
    );
    // Frontends answer Closing with Closed, like netfront.
    let acks: Vec<_> = [f1, f2]
        .into_iter()
        .map(|f| {
            let dom0 = hv.store(0).unwrap();
            std::thread::spawn(move || {
                let be = f.be.clone();
                for _ in 0..2000 {
                    if hv::xenbus::xenbus_read_state(&dom0, &be).unwrap() == XenbusState::Closing {
                        f.set_state(XenbusState::Closed);
                        return true;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                false
            })
        })
        .collect();
    let World { netback, dom0, .. } = w2;
    netback.shutdown();
    for a in acks {
        assert!(a.join().unwrap(), "frontend never saw Closing");
    }
    for d in [d1, d2] {
        let s =
            hv::xenbus::xenbus_read_state(&dom0, &hv::toolstack::backend_path(0, d, 0)).unwrap();
        assert_eq!(s, XenbusState::Closed);
    }
}

#[test]
fn removed_vif_is_freed() {
    let w = World::new(Sink::new());
    let (domid, env) = w.add_guest(0, MAC_A);
    let f = TestFront::connect(&w, env, 0, FrontOpts::default());
    assert!(w.netback.vif(f.id()).is_some());
    w.hv.destroy_domain(domid).unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    while w.netback.vif(f.id()).is_some() {
        assert!(std::time::Instant::now() < deadline, "vif not removed");
        std::thread::sleep(Duration::from_millis(2));
    }
}
