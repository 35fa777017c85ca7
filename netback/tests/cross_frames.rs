//! Frame-level cross tests, the real netfront against the real netback: guest→Sink
//! (64-byte and 64 KiB GSO frames), Source→guest, Reflector round trips that keep the
//! offload metadata, multi-slot scatter-gather frames up to 65535 bytes, and the
//! notification counters of both ends under load.
//!
//! Every test prints its rate (run with `--nocapture` to see it):
//! `cargo test -p netback --release --test cross_frames -- --nocapture --test-threads=1`

mod cross_common;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use cross_common::*;
use netback::{OffloadMeta, Reflector, Sink, Source};
use netfront::{Gso, GsoType, Queue, RxMeta, TxError, TxMeta};

/// Wall-clock bound of one load loop.
const LIMIT: Duration = Duration::from_secs(60);

const GSO4: Gso = Gso {
    ty: GsoType::TcpV4,
    size: 1448,
};

/// Send `n` copies of `frame` as fast as the TX ring allows, then wait until every
/// request was answered. Returns the seconds from the first send to the last answer.
fn blast(q: &mut Queue<Chan>, frame: &[u8], meta: TxMeta, n: u64) -> f64 {
    let start = Instant::now();
    let mut sent = 0u64;
    let mut rounds = 0u64;
    while sent < n {
        rounds += 1;
        assert!(
            start.elapsed() < LIMIT && rounds < 100 * n + 1000,
            "stalled after {sent} of {n} frames"
        );
        match q.send(frame, meta) {
            Ok(()) => sent += 1,
            Err(TxError::Busy) => {
                q.wait_tx(Some(Duration::from_millis(5)));
            }
            Err(e) => panic!("send: {e}"),
        }
    }
    q.flush();
    drain_tx(q);
    start.elapsed().as_secs_f64()
}

/// Wait (bounded) until the backend answered every TX request.
fn drain_tx(q: &mut Queue<Chan>) {
    let start = Instant::now();
    while q.tx_in_flight() > 0 {
        assert!(
            start.elapsed() < LIMIT,
            "{} TX slots never answered",
            q.tx_in_flight()
        );
        q.reclaim();
        if q.tx_in_flight() > 0 {
            q.wait_tx(Some(Duration::from_millis(5)));
        }
    }
}

/// Receive one frame (bounded wait), as bytes and metadata.
fn recv_one(q: &mut Queue<Chan>) -> (Vec<u8>, RxMeta) {
    let start = Instant::now();
    loop {
        if let Some(r) = q.recv_with(|f, meta| {
            assert!(f.segments().all(|s| s.len() <= 4096));
            (f.segments().flatten().copied().collect::<Vec<u8>>(), meta)
        }) {
            return r;
        }
        assert!(start.elapsed() < WAIT, "no frame came back");
        q.wait_rx(Some(Duration::from_millis(5)));
    }
}

/// `frame` as the reflector returns it: MAC addresses swapped.
fn swapped(frame: &[u8]) -> Vec<u8> {
    let mut f = frame.to_vec();
    f[0..6].copy_from_slice(&frame[6..12]);
    f[6..12].copy_from_slice(&frame[0..6]);
    f
}

fn mbit(bytes: u64, secs: f64) -> f64 {
    bytes as f64 * 8.0 / secs / 1e6
}

// ---- guest → Sink ------------------------------------------------------------------

fn to_sink(frame: Vec<u8>, meta: TxMeta, n: u64, what: &str) {
    let sink = Sink::new();
    let w = World::new(sink.clone());
    let (d, mut nf) = w.connect_guest(mac(1), front_cfg(1, true));
    let q = nf.queue(0).expect("queue");
    let secs = blast(q, &frame, meta, n);
    let len = frame.len() as u64;
    let nb = wait_counters(&w, vif(d), "every frame", |c| c.tx_packets == n);
    let st = nf.stats();
    // Both ends and the port agree: every frame, every byte, nothing lost.
    assert_eq!((st.tx_packets, st.tx_bytes), (n, n * len));
    assert_eq!((nb.tx_packets, nb.tx_bytes), (n, n * len));
    assert_eq!((sink.packets(), sink.bytes()), (n, n * len));
    assert_eq!(st.tx_dropped + st.tx_errors, 0, "{st:?}");
    assert_eq!(nb.tx_drops + nb.tx_errors, 0, "{nb:?}");
    // Batching: one notify decision per push, far fewer pushes than frames.
    assert!(
        st.tx_notify_sent >= 1,
        "the idle backend must be woken once: {st:?}"
    );
    assert!(st.tx_notify_sent + st.tx_notify_suppressed <= n);
    assert!(nb.notify_sent + nb.notify_suppressed <= n);
    // The guest was woken no more often than netback notified it.
    assert!(st.wakeups <= nb.notify_sent, "{st:?} {nb:?}");
    eprintln!(
        "guest→Sink {what}: {n} frames in {secs:.3} s = {:.2} Mframes/s, {:.1} Gbit/s; \
         netfront notify sent/suppressed {}/{}, netback {}/{}",
        n as f64 / secs / 1e6,
        mbit(n * len, secs) / 1e3,
        st.notify_sent(),
        st.notify_suppressed(),
        nb.notify_sent,
        nb.notify_suppressed
    );
}

#[test]
fn guest_to_sink_64_byte_frames() {
    to_sink(
        eth_frame(mac(0xee), mac(1), 64, 1),
        TxMeta::default(),
        scaled(2_000_000),
        "64 B",
    );
}

#[test]
fn guest_to_sink_64k_gso_frames() {
    let meta = TxMeta {
        gso: Some(GSO4),
        ..TxMeta::default()
    };
    to_sink(
        tcp4_frame(mac(0xee), mac(1), 65535, 4000, 2),
        meta,
        scaled(40_000),
        "64 KiB GSO",
    );
}

// ---- Source → guest ----------------------------------------------------------------

fn from_source(frame: Vec<u8>, meta: OffloadMeta, n: u64, expect: RxMeta, what: &str) {
    let src = Source::new(vec![(frame.clone(), meta)], Some(n));
    let w = World::new(src.clone());
    let (d, mut nf) = w.connect_guest(mac(1), front_cfg(1, true));
    let start = Instant::now();
    let q = nf.queue(0).expect("queue");
    let (mut got, mut bad, mut rounds) = (0u64, 0u64, 0u64);
    while got < n {
        rounds += 1;
        assert!(
            start.elapsed() < LIMIT && rounds < 100 * n + 1000,
            "stalled after {got} of {n} frames"
        );
        let mut any = false;
        while let Some(ok) = q.recv_with(|f, m| {
            let mut off = 0;
            let same = f.len() == frame.len()
                && f.segments().all(|s| {
                    let eq = frame.get(off..off + s.len()) == Some(s);
                    off += s.len();
                    eq
                });
            same && m == expect
        }) {
            got += 1;
            bad += u64::from(!ok);
            any = true;
        }
        if !any {
            q.wait_rx(Some(Duration::from_millis(5)));
        }
    }
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(bad, 0, "frames differ from the template or its metadata");
    let len = frame.len() as u64;
    let nb = wait_counters(&w, vif(d), "rx counters", |c| c.rx_packets == n);
    let st = q.stats();
    assert_eq!(src.generated(), n);
    assert_eq!((nb.rx_packets, nb.rx_bytes), (n, n * len));
    assert_eq!((st.rx_packets, st.rx_bytes), (n, n * len));
    assert_eq!(nb.rx_drops + nb.rx_errors, 0, "{nb:?}");
    assert_eq!(st.rx_dropped + st.rx_errors, 0, "{st:?}");
    assert!(st.rx_notify_sent + st.rx_notify_suppressed <= n + 1);
    assert!(st.wakeups <= nb.notify_sent, "{st:?} {nb:?}");
    // Nothing extra arrives.
    std::thread::sleep(Duration::from_millis(20));
    assert!(
        q.recv_with(|_, _| ()).is_none(),
        "more frames than the limit"
    );
    eprintln!(
        "Source→guest {what}: {n} frames in {secs:.3} s = {:.2} Mframes/s, {:.1} Gbit/s; \
         netback notify sent/suppressed {}/{}, netfront {}/{}",
        n as f64 / secs / 1e6,
        mbit(n * len, secs) / 1e3,
        nb.notify_sent,
        nb.notify_suppressed,
        st.notify_sent(),
        st.notify_suppressed()
    );
}

#[test]
fn source_to_guest_64_byte_frames() {
    from_source(
        eth_frame(mac(1), mac(0xee), 64, 3),
        OffloadMeta::default(),
        scaled(2_000_000),
        RxMeta {
            slots: 1,
            ..RxMeta::default()
        },
        "64 B",
    );
}

#[test]
fn source_to_guest_64k_gso_frames() {
    let mut frame = tcp4_frame(mac(1), mac(0xee), 65535, 4001, 4);
    // A CHECKSUM_PARTIAL frame as Dom0 would hand it over.
    let len = frame.len();
    assert!(netfront::csum::write_partial(&mut frame, len).is_some());
    let meta = OffloadMeta {
        csum_blank: true,
        data_validated: false,
        gso: Some(netback::Gso {
            ty: netback::GsoType::TcpV4,
            size: 1448,
        }),
    };
    from_source(
        frame,
        meta,
        scaled(40_000),
        RxMeta {
            csum_blank: true,
            data_validated: true,
            gso: Some(GSO4),
            slots: 16,
        },
        "64 KiB GSO",
    );
}

// ---- Reflector round trips ---------------------------------------------------------

/// `(NETRXF_csum_blank, NETRXF_data_validated, GSO extra)` of a received frame.
type RxFlags = (bool, bool, Option<Gso>);

#[test]
fn reflector_round_trip_keeps_offload_metadata() {
    let refl = Reflector::new();
    let w = World::new(refl.clone());
    let (d, mut nf) = w.connect_guest(mac(1), front_cfg(1, true));
    let (me, peer) = (mac(1), mac(0xee));
    let blank = TxMeta {
        csum_blank: true,
        ..TxMeta::default()
    };
    let validated = TxMeta {
        data_validated: true,
        ..TxMeta::default()
    };
    let gso = |ty, size| TxMeta {
        gso: Some(Gso { ty, size }),
        ..TxMeta::default()
    };
    let rx = |csum_blank, data_validated, gso| (csum_blank, data_validated, gso);
    // (frame, what the guest asks for, (NETRXF_csum_blank, NETRXF_data_validated, GSO)
    // expected back). Linux netback: CHECKSUM_PARTIAL → csum_blank|data_validated,
    // CHECKSUM_UNNECESSARY → data_validated, GSO extra kept.
    let cases: Vec<(Vec<u8>, TxMeta, RxFlags)> = vec![
        (
            eth_frame(peer, me, 60, 1),
            TxMeta::default(),
            rx(false, false, None),
        ),
        (
            eth_frame(peer, me, 1514, 2),
            validated,
            rx(false, true, None),
        ),
        (
            tcp4_frame(peer, me, 1514, 7, 3),
            blank,
            rx(true, true, None),
        ),
        (
            tcp6_frame(peer, me, 1514, 7, 4),
            blank,
            rx(true, true, None),
        ),
        (
            tcp4_frame(peer, me, 9000, 7, 5),
            TxMeta {
                csum_blank: true,
                data_validated: true,
                gso: None,
            },
            rx(true, true, None),
        ),
        (
            tcp4_frame(peer, me, 65535, 7, 6),
            gso(GsoType::TcpV4, 1448),
            rx(true, true, Some(GSO4)),
        ),
        (
            tcp6_frame(peer, me, 30001, 7, 7),
            gso(GsoType::TcpV6, 1428),
            rx(
                true,
                true,
                Some(Gso {
                    ty: GsoType::TcpV6,
                    size: 1428,
                }),
            ),
        ),
    ];
    let q = nf.queue(0).expect("queue");
    let mut bytes = 0u64;
    for (frame, meta, (cb, dv, g)) in &cases {
        bytes += 2 * frame.len() as u64;
        // What goes on the wire: with a blank checksum (asked for, or implied by
        // GSO) netfront put the pseudo-header sum in the TCP checksum field.
        let mut wire = frame.clone();
        if meta.csum_blank || meta.gso.is_some() {
            let len = wire.len();
            assert!(netfront::csum::write_partial(&mut wire, len).is_some());
        }
        let want = swapped(&wire);

        // 1: raw, in place: bytes exactly as sent, flags as Linux sets them.
        q.send(frame, *meta).expect("send");
        q.flush();
        let (got, m) = recv_one(q);
        assert!(got == want, "{} bytes: payload differs", frame.len());
        assert_eq!(
            (m.csum_blank, m.data_validated, m.gso),
            (*cb, *dv, *g),
            "{} bytes sent with {meta:?}",
            frame.len()
        );
        assert_eq!(usize::from(m.slots), frame.len().div_ceil(4096));

        // 2: contiguous with the blank checksum filled in by the driver: a frame
        // smoltcp (or any stack) would accept.
        q.send(frame, *meta).expect("send");
        q.flush();
        let start = Instant::now();
        let (filled, m2) = loop {
            if let Some(r) = q.recv_contiguous(true, |b, m| (b.to_vec(), m)) {
                break r;
            }
            assert!(start.elapsed() < WAIT, "no frame came back");
            q.wait_rx(Some(Duration::from_millis(5)));
        };
        assert_eq!(m2.csum_blank, *cb);
        if *cb {
            assert_eq!(netfront::csum::verify(&filled), Some(true));
            let mut fixed = want.clone();
            assert!(netfront::csum::fill_checksum(&mut fixed));
            assert!(filled == fixed, "filled-in frame differs");
        } else {
            assert!(filled == want);
        }
    }
    let n = 2 * cases.len() as u64;
    let nb = wait_counters(&w, vif(d), "counters", |c| {
        c.tx_packets == n && c.rx_packets == n
    });
    assert_eq!(nb.tx_bytes, bytes);
    assert_eq!(nb.rx_bytes, bytes);
    assert_eq!(refl.reflected(), n);
    let st = nf.stats();
    assert_eq!((st.tx_packets, st.rx_packets), (n, n));
    // The IPv4 and IPv6 offloads were negotiated: nothing computed in software on TX.
    assert_eq!(st.tx_csum_sw, 0);
    assert_eq!(
        st.tx_errors + st.rx_errors + st.rx_dropped + st.tx_dropped,
        0
    );
}

#[test]
fn multi_slot_sg_frames_up_to_65535_bytes() {
    let refl = Reflector::new();
    let w = World::new(refl.clone());
    let (d, mut nf) = w.connect_guest(mac(1), front_cfg(1, false));
    let (me, peer) = (mac(1), mac(0xee));
    let q = nf.queue(0).expect("queue");
    // Larger than a netif packet can describe: refused by the driver, never sent.
    assert!(q
        .send(&eth_frame(peer, me, 65536, 0), TxMeta::default())
        .is_err());

    // One by one, every page boundary that matters.
    let sizes = [
        14usize, 15, 60, 1514, 4095, 4096, 4097, 8191, 8192, 8193, 12288, 12289, 30000, 61439,
        61440, 61441, 65534, 65535,
    ];
    for (i, &len) in sizes.iter().enumerate() {
        let frame = eth_frame(peer, me, len, 100 + i as u32);
        q.send(&frame, TxMeta::default()).expect("send");
        q.flush();
        let (got, m) = recv_one(q);
        assert!(got == swapped(&frame), "{len} bytes differ");
        assert_eq!(usize::from(m.slots), len.div_ceil(4096), "{len}");
    }

    // Pipelined: random sizes back to back, each checked in order.
    let count = scaled(3000) as u32;
    let len_of = |i: u32| {
        let mut b = [0u8; 4];
        fill_pattern(&mut b, i + 7);
        14 + (u32::from_le_bytes(b) as usize % (65535 - 13))
    };
    let mut expect: VecDeque<Vec<u8>> = VecDeque::new();
    let (mut next, mut done, mut bytes) = (0u32, 0u32, 0u64);
    let start = Instant::now();
    let mut rounds = 0u64;
    while done < count {
        rounds += 1;
        assert!(
            start.elapsed() < LIMIT && rounds < 10_000_000,
            "stalled: {done} of {count} frames back"
        );
        // At most `window` frames out, so the reflector never finds the guest's
        // inbound queue full (it drops then, as Linux's netback does).
        while next < count && next - done < 64 {
            let frame = eth_frame(peer, me, len_of(next), next);
            match q.send(&frame, TxMeta::default()) {
                Ok(()) => {
                    bytes += frame.len() as u64;
                    expect.push_back(swapped(&frame));
                    next += 1;
                }
                Err(TxError::Busy) => break,
                Err(e) => panic!("send: {e}"),
            }
        }
        q.flush();
        let mut any = false;
        while let Some((ok, slots, len)) = q.recv_with(|f, m| {
            let want = expect.front();
            let mut off = 0;
            let ok = want.is_some_and(|w| {
                w.len() == f.len()
                    && f.segments().all(|s| {
                        let eq = w.get(off..off + s.len()) == Some(s);
                        off += s.len();
                        eq
                    })
            });
            (ok, m.slots, f.len())
        }) {
            assert!(
                ok,
                "frame {done} ({len} bytes, expected {:?}) differs or is out of order: {:?}",
                expect.front().map(Vec::len),
                w.nb().vif(vif(d)).map(|i| i.counters)
            );
            assert_eq!(usize::from(slots), len.div_ceil(4096));
            expect.pop_front();
            done += 1;
            any = true;
        }
        if !any {
            q.wait(Some(Duration::from_millis(5)));
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let n = (sizes.len() as u32 + count) as u64;
    let nb = wait_counters(&w, vif(d), "counters", |c| {
        c.tx_packets == n && c.rx_packets == n
    });
    assert_eq!(nb.tx_drops + nb.rx_drops + nb.tx_errors + nb.rx_errors, 0);
    let st = nf.stats();
    assert_eq!(
        st.tx_errors + st.rx_errors + st.rx_dropped + st.tx_dropped,
        0
    );
    eprintln!(
        "SG round trips: {count} frames of 14..65535 B ({} MB) in {secs:.3} s = {:.0} frames/s, {:.1} Gbit/s each way",
        bytes / 1_000_000,
        f64::from(count) / secs,
        mbit(bytes, secs) / 1e3
    );
}

// ---- notification counters ---------------------------------------------------------

#[test]
fn notifications_are_counted_consistently_on_both_sides() {
    let refl = Reflector::new();
    // Busy polling off on both sides: this test is about the event-channel path
    // (with polling, a fast peer's replies arrive before anyone sleeps).
    let w = World::with_config(refl.clone(), |c| netback::NetbackConfig {
        busy_poll: 0,
        ..c
    });
    let cfg = netfront::NetfrontConfig {
        busy_poll: 0,
        ..front_cfg(1, true)
    };
    let (d, mut nf) = w.connect_guest(mac(1), cfg);
    let (me, peer) = (mac(1), mac(0xee));
    let q = nf.queue(0).expect("queue");
    let frame = eth_frame(peer, me, 64, 9);
    let mut buf = [0u8; 128];

    // Phase 1, streaming: the guest keeps both rings busy, so most pushes on both
    // sides find the peer still polling (suppressed). At most `window` frames are
    // out, so the reflector never finds the guest's inbound queue full (it would drop).
    let stream = scaled(300_000);
    let window = 200u64;
    let (mut sent, mut got, mut rounds) = (0u64, 0u64, 0u64);
    let start = Instant::now();
    while got < stream {
        rounds += 1;
        assert!(
            start.elapsed() < LIMIT && rounds < 100 * stream,
            "stream stalled at {got}"
        );
        while sent < stream && sent - got < window && q.send(&frame, TxMeta::default()).is_ok() {
            sent += 1;
        }
        q.flush();
        let mut any = false;
        while q.recv(&mut buf).is_some() {
            got += 1;
            any = true;
        }
        if !any {
            q.wait(Some(Duration::from_millis(5)));
        }
    }
    let phase1 = q.stats();

    // Phase 2, ping-pong: the guest sleeps (up to 1 s) after every burst, so each
    // reply must come with a notification; lost notifications would cost a second
    // per round and blow the time bound.
    let rounds_pp = 400u32;
    let start = Instant::now();
    for r in 0..rounds_pp {
        for _ in 0..8 {
            q.send(&frame, TxMeta::default()).expect("send");
        }
        q.flush();
        let mut back = 0;
        while back < 8 {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "round {r}: replies not notified"
            );
            while q.recv(&mut buf).is_some() {
                back += 1;
            }
            if back < 8 {
                q.wait(Some(Duration::from_secs(1)));
            }
        }
    }
    let pp_secs = start.elapsed().as_secs_f64();
    drain_tx(q);
    let total = stream + 8 * u64::from(rounds_pp);
    let nb = wait_counters(&w, vif(d), "counters", |c| {
        c.tx_packets == total && c.rx_packets == total
    });
    let st = nf.stats();
    // Non-zero on both sides.
    assert!(st.notify_sent() > 0 && st.notify_suppressed() > 0, "{st:?}");
    assert!(nb.notify_sent > 0 && nb.notify_suppressed > 0, "{nb:?}");
    assert!(
        phase1.notify_suppressed() > 0,
        "streaming suppressed nothing"
    );
    // The ping-pong phase needed notifications both ways: the guest woke on them and
    // kicked the backend for every burst it had gone idle for.
    assert!(st.wakeups > phase1.wakeups, "{st:?}");
    assert!(st.tx_notify_sent > phase1.tx_notify_sent, "{st:?}");
    // Consistent: the guest cannot have been woken more often than netback notified
    // it; each side makes at most one notify decision per push, and pushes carry at
    // least one packet (plus the initial RX ring fill).
    assert!(st.wakeups <= nb.notify_sent, "{st:?} {nb:?}");
    assert!(st.tx_notify_sent + st.tx_notify_suppressed <= st.tx_packets);
    assert!(st.rx_notify_sent + st.rx_notify_suppressed <= st.rx_packets + 1);
    assert!(nb.notify_sent + nb.notify_suppressed <= nb.tx_packets + nb.rx_packets);
    assert_eq!(refl.reflected(), total);
    eprintln!(
        "notifications: netfront sent {} / suppressed {} / wakeups {}; netback sent {} / suppressed {}; \
         ping-pong {rounds_pp} rounds in {pp_secs:.3} s ({:.0} us/round)",
        st.notify_sent(),
        st.notify_suppressed(),
        st.wakeups,
        nb.notify_sent,
        nb.notify_suppressed,
        pp_secs * 1e6 / f64::from(rounds_pp)
    );
}
