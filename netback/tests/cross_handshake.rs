//! The real netfront against the real netback on the embedded hypervisor: the xenbus
//! handshake (1 and 2 queues, split and shared event channels), orderly close from
//! either end and reconnect, netback shutdown and restart, and a guest destroyed in
//! the middle of traffic while the others keep talking.

mod cross_common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use cross_common::*;
use hv::abi::xenbus::XenbusState;
use netback::{Reflector, Switch};
use netfront::{LinkEvent, TxError, TxMeta};

/// Send `per_queue` TCP/IPv4 frames (one flow each) on every queue through the
/// reflector and receive every one back with the MACs swapped, byte for byte.
/// Returns how many came back on each queue.
fn echo_check(nf: &mut Front, per_queue: u16) -> Vec<usize> {
    let me = nf.mac();
    let peer = mac(0xee);
    let nq = nf.num_queues();
    let mut expected = Vec::new();
    for qi in 0..nq {
        let q = nf.queue(qi).expect("queue");
        for k in 0..per_queue {
            let sport = 1000 + qi as u16 * 100 + k;
            let len = 60 + usize::from(k) * 97;
            let f = tcp4_frame(peer, me, len, sport, u32::from(sport));
            q.send(&f, TxMeta::default()).expect("send");
            let mut back = f.clone();
            back[0..6].copy_from_slice(&me);
            back[6..12].copy_from_slice(&peer);
            expected.push(back);
        }
        q.flush();
    }
    let mut got_per_queue = vec![0usize; nq];
    let mut got: Vec<Vec<u8>> = Vec::new();
    let mut buf = vec![0u8; 65536];
    let deadline = Instant::now() + WAIT;
    while got.len() < expected.len() {
        assert!(
            Instant::now() < deadline,
            "only {} of {} frames came back",
            got.len(),
            expected.len()
        );
        let mut any = false;
        for (qi, n) in got_per_queue.iter_mut().enumerate() {
            let q = nf.queue(qi).expect("queue");
            while let Some((len, _meta)) = q.recv(&mut buf) {
                got.push(buf[..len].to_vec());
                *n += 1;
                any = true;
            }
        }
        if !any {
            nf.queue(0)
                .expect("queue")
                .wait(Some(Duration::from_millis(2)));
        }
    }
    got.sort();
    expected.sort();
    assert!(
        got == expected,
        "reflected frames differ from what was sent"
    );
    got_per_queue
}

fn connect_and_talk(queues: u16, split: bool) {
    let refl = Reflector::new();
    let w = World::new(refl.clone());
    let (d, mut nf) = w.connect_guest(mac(1), front_cfg(queues, split));
    assert_eq!(nf.state(), XenbusState::Connected);
    assert_eq!(nf.num_queues(), usize::from(queues));
    w.check_connected_keys(d, u32::from(queues), split);
    let info = w.nb().vif(vif(d)).expect("vif known");
    assert_eq!(info.state, XenbusState::Connected);
    assert_eq!(info.num_queues, u32::from(queues));
    assert_eq!(info.split_event_channels, split);
    assert_eq!(info.mac, Some(mac(1)));
    assert!(info.features.sg && info.features.gso_tcpv4 && info.features.rx_notify);
    for qi in 0..usize::from(queues) {
        assert_eq!(
            nf.queue(qi).expect("queue").split_event_channels(),
            split,
            "queue {qi}"
        );
    }

    let per_queue = echo_check(&mut nf, 16);
    // Every queue carried frames both ways (the flows hash onto both RX queues).
    assert!(per_queue.iter().all(|&n| n > 0), "{per_queue:?}");
    let total = 16 * u64::from(queues);
    let info = w.wait_vif(vif(d), "counters", |i| {
        i.counters.tx_packets == total && i.counters.rx_packets == total
    });
    let st = nf.stats();
    assert_eq!(st.tx_packets, total);
    assert_eq!(st.rx_packets, total);
    assert_eq!(st.tx_bytes, info.counters.tx_bytes);
    assert_eq!(st.rx_bytes, info.counters.rx_bytes);
    assert_eq!(refl.reflected(), total);
    assert_eq!(
        info.counters.tx_drops + info.counters.rx_drops + info.counters.tx_errors,
        0
    );
}

#[test]
fn one_queue_shared_event_channel() {
    connect_and_talk(1, false);
}

#[test]
fn one_queue_split_event_channels() {
    connect_and_talk(1, true);
}

#[test]
fn two_queues_shared_event_channel() {
    connect_and_talk(2, false);
}

#[test]
fn two_queues_split_event_channels() {
    connect_and_talk(2, true);
}

#[test]
fn close_from_the_frontend_then_reconnect() {
    let w = World::new(Reflector::new());
    let (d, env) = w.add_guest(mac(1));
    let free_before = w.hv.domain(d).expect("domain").free_grant_refs();
    let mut nf = netfront::Netfront::connect(env, front_cfg(2, true)).expect("connect");
    w.wait_vif(vif(d), "Connected", |i| i.state == XenbusState::Connected);
    echo_check(&mut nf, 4);
    // A frame left in flight is dropped by the close.
    nf.queue(0)
        .expect("queue")
        .send(&eth_frame(mac(2), mac(1), 100, 9), TxMeta::default())
        .expect("send");

    nf.close().expect("orderly close");
    assert_eq!(nf.state(), XenbusState::Closed);
    assert_eq!(nf.num_queues(), 0);
    assert_eq!(w.fe_state(d), XenbusState::Closed);
    let info = w.wait_vif(vif(d), "Closed", |i| i.state == XenbusState::Closed);
    assert_eq!(info.frontend_state, XenbusState::Closed);
    assert_eq!(w.be_state(d), XenbusState::Closed);
    // netback unmapped everything, so every grant could be ended.
    assert_eq!(nf.unreleased_grants(), 0);
    assert_eq!(
        w.hv.domain(d).expect("domain").free_grant_refs(),
        free_before
    );

    nf.reconnect().expect("reconnect");
    let info = w.wait_vif(vif(d), "second connect", |i| {
        i.connects == 2 && i.state == XenbusState::Connected
    });
    assert_eq!(info.num_queues, 2);
    w.check_connected_keys(d, 2, true);
    echo_check(&mut nf, 8);

    // And a second full cycle.
    nf.close().expect("second close");
    w.wait_vif(vif(d), "Closed again", |i| i.state == XenbusState::Closed);
    nf.reconnect().expect("second reconnect");
    w.wait_vif(vif(d), "third connect", |i| {
        i.connects == 3 && i.state == XenbusState::Connected
    });
    echo_check(&mut nf, 8);
}

/// Poll the backend from the frontend's control loop until it reports the close.
fn follow_backend_close(nf: &mut Front) {
    let deadline = Instant::now() + WAIT;
    loop {
        match nf.poll_backend().expect("poll_backend") {
            LinkEvent::BackendClosed => return,
            LinkEvent::Up => {}
            other => panic!("unexpected link event {other:?}"),
        }
        assert!(Instant::now() < deadline, "backend close never seen");
        thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn close_from_the_backend_then_reconnect() {
    let w = World::new(Reflector::new());
    let (d, env) = w.add_guest(mac(1));
    let free_before = w.hv.domain(d).expect("domain").free_grant_refs();
    let mut nf = netfront::Netfront::connect(env, front_cfg(1, false)).expect("connect");
    w.wait_vif(vif(d), "Connected", |i| i.state == XenbusState::Connected);
    echo_check(&mut nf, 4);
    assert_eq!(nf.poll_backend().expect("poll"), LinkEvent::Up);

    w.nb().close_vif(vif(d));
    follow_backend_close(&mut nf);
    assert_eq!(nf.state(), XenbusState::Closed);
    assert_eq!(nf.poll_backend().expect("poll"), LinkEvent::Down);
    assert_eq!(w.fe_state(d), XenbusState::Closed);
    w.wait_vif(vif(d), "Closed", |i| i.state == XenbusState::Closed);
    assert_eq!(nf.unreleased_grants(), 0);
    assert_eq!(
        w.hv.domain(d).expect("domain").free_grant_refs(),
        free_before
    );

    nf.reconnect().expect("reconnect");
    w.wait_vif(vif(d), "reconnected", |i| {
        i.connects == 2 && i.state == XenbusState::Connected
    });
    w.check_connected_keys(d, 1, false);
    echo_check(&mut nf, 8);
}

#[test]
fn netback_shutdown_closes_the_guest_and_a_new_netback_serves_it_again() {
    // Give the frontends time to follow the close.
    let mut w = World::with_config(Reflector::new(), |mut c| {
        c.close_timeout = WAIT;
        c
    });
    let (d1, mut nf1) = w.connect_guest(mac(1), front_cfg(1, true));
    let (d2, mut nf2) = w.connect_guest(mac(2), front_cfg(2, false));
    echo_check(&mut nf1, 4);
    echo_check(&mut nf2, 4);

    // shutdown() waits for the frontends to acknowledge Closing; they follow from
    // their control loops meanwhile.
    let nb = w.netback.take().expect("netback");
    let stopper = thread::spawn(move || nb.shutdown());
    follow_backend_close(&mut nf1);
    follow_backend_close(&mut nf2);
    stopper.join().expect("shutdown");
    for d in [d1, d2] {
        assert_eq!(w.be_state(d), XenbusState::Closed);
        assert_eq!(w.fe_state(d), XenbusState::Closed);
    }
    assert_eq!(nf1.unreleased_grants() + nf2.unreleased_grants(), 0);

    w.restart_netback();
    nf1.reconnect().expect("reconnect 1");
    nf2.reconnect().expect("reconnect 2");
    for (d, q, split) in [(d1, 1, true), (d2, 2, false)] {
        w.wait_vif(vif(d), "Connected", |i| i.state == XenbusState::Connected);
        w.check_connected_keys(d, q, split);
    }
    echo_check(&mut nf1, 8);
    echo_check(&mut nf2, 8);
}

// ---- a guest destroyed mid-traffic ----------------------------------------------

/// Payload of frame `seq` from the guest with MAC byte `src`.
fn stream_frame(dst: [u8; 6], src: [u8; 6], seq: u32) -> Vec<u8> {
    let len = 60 + (seq as usize * 37) % 1400;
    let mut f = eth_frame(dst, src, len, seq ^ (u32::from(src[5]) << 24));
    f[14..18].copy_from_slice(&seq.to_be_bytes());
    f
}

/// Per-guest traffic state shared with the test's main thread.
#[derive(Default)]
struct Traffic {
    /// Frames received, by the source's MAC byte 5 (0..8).
    from: [AtomicU64; 8],
    sent: AtomicU64,
    corrupt: AtomicU64,
}

/// Stream frames to `peer` (if any) and receive/verify everything that arrives, until
/// `stop` or `limit` passes.
fn run_guest(
    q: &mut netfront::Queue<Chan>,
    me: [u8; 6],
    peer: Option<[u8; 6]>,
    t: &Traffic,
    stop: &AtomicBool,
    limit: Duration,
) {
    let start = Instant::now();
    let mut seq = 0u32;
    let mut buf = vec![0u8; 2048];
    while !stop.load(Ordering::Relaxed) && start.elapsed() < limit {
        let mut busy = false;
        if let Some(p) = peer {
            for _ in 0..16 {
                match q.send(&stream_frame(p, me, seq), TxMeta::default()) {
                    Ok(()) => {
                        seq += 1;
                        t.sent.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(TxError::Busy) => {
                        busy = true;
                        break;
                    }
                    // The domain is being destroyed under us: nothing more to do.
                    Err(_) => return,
                }
            }
            q.flush();
        }
        let mut any = false;
        while let Some((len, _)) = q.recv(&mut buf) {
            any = true;
            let f = &buf[..len.min(buf.len())];
            let src = f[11];
            let s = u32::from_be_bytes([f[14], f[15], f[16], f[17]]);
            // (Unknown unicast flooded to us before the switch learned is fine, but
            // it must still be intact.)
            let want = stream_frame([0; 6], [0, 0, 0, 0, 0, src], s);
            if len != want.len() || f[12..] != want[12..] {
                t.corrupt.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(c) = t.from.get(usize::from(src)) {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
        if busy || (!any && peer.is_none()) {
            q.wait(Some(Duration::from_millis(1)));
        }
    }
}

#[test]
fn destroying_a_guest_mid_traffic_leaves_the_others_working() {
    let switch = Switch::new();
    let w = World::new(switch.clone());
    let (a, b, c) = (mac(1), mac(2), mac(3));
    let (_da, mut nfa) = w.connect_guest(a, front_cfg(1, true));
    let (db, mut nfb) = w.connect_guest(b, front_cfg(2, false));
    let (dc, mut nfc) = w.connect_guest(c, front_cfg(1, false));
    let (ta, tb, tc) = (Traffic::default(), Traffic::default(), Traffic::default());
    let stop = AtomicBool::new(false);
    let stop_c = AtomicBool::new(false);
    let limit = Duration::from_secs(30);
    let from = |t: &Traffic, m: [u8; 6]| t.from[usize::from(m[5])].load(Ordering::Relaxed);

    thread::scope(|s| {
        // A and C stream to B; B streams to A (on its queue 0, which sees every flow of
        // these non-IP frames) and drains its second queue too.
        let qa = nfa.queue(0).expect("queue");
        s.spawn(|| run_guest(qa, a, Some(b), &ta, &stop, limit));
        let qc = nfc.queue(0).expect("queue");
        s.spawn(|| run_guest(qc, c, Some(b), &tc, &stop_c, limit));
        let [qb0, qb1] = nfb.queues_mut() else {
            panic!("B has two queues");
        };
        s.spawn(|| run_guest(qb0, b, Some(a), &tb, &stop, limit));
        s.spawn(|| run_guest(qb1, b, None, &tb, &stop, limit));

        let ok = wait_until(WAIT, || from(&tb, a) > 1000 && from(&tb, c) > 1000);
        assert!(ok, "B never heard from A and C");
        w.hv.destroy_domain(dc).expect("destroy C");
        // netback notices the backend directory is gone and frees the vif.
        assert!(
            wait_until(WAIT, || w.nb().vif(vif(dc)).is_none()),
            "C's vif was not removed"
        );
        stop_c.store(true, Ordering::Relaxed);
        // A and B keep talking: many more frames both ways after C is gone.
        let (ab, ba, cb) = (from(&tb, a), from(&ta, b), from(&tb, c));
        let ok = wait_until(WAIT, || {
            from(&tb, a) > ab + 5000 && from(&ta, b) > ba + 5000
        });
        stop.store(true, Ordering::Relaxed);
        assert!(
            ok,
            "traffic between A and B stalled after C died: {} {}",
            from(&tb, a) - ab,
            from(&ta, b) - ba
        );
        // Nothing new from C after its vif was freed: at most what was already queued
        // for B (netback's inbound queue and B's posted RX buffers, per B queue).
        let queued = 2 * (netback::NetbackConfig::new(switch.clone()).inbound_capacity + 256);
        assert!(from(&tb, c) <= cb + queued as u64);
    });
    assert_eq!(ta.corrupt.load(Ordering::Relaxed), 0);
    assert_eq!(tb.corrupt.load(Ordering::Relaxed), 0);
    assert_eq!(
        w.nb().vif(vif(db)).expect("B").state,
        XenbusState::Connected
    );
    assert!(w.nb().vifs().iter().all(|i| i.id.domid != dc));
    // The switch forgot C.
    assert!(switch.fdb().iter().all(|(m, _)| *m != c));
    drop(nfc);
}
