//! TCP over smoltcp between two embedded guests, each running the real netfront,
//! joined by the real netback's learning switch: 100 MB in each direction at once,
//! byte-exact (SHA-256 of what each sender generated equals SHA-256 of what the other
//! end received). Beside the bytes, the frames: a tap between smoltcp and netfront logs
//! the TCP header of every frame each guest sends and receives, and what one guest
//! received must be what the other sent, in order, nothing invented or duplicated,
//! with any gap accounted for by a drop counter.
//!
//! The receive windows are 65535 bytes (no window scaling): smoltcp 0.12 rounds a
//! scaled window down to its granularity, so its advertised right edge can move back
//! by a few bytes, and a sender that fills the earlier edge makes the receiver panic in
//! `last_scaled_window` ("attempt to subtract sequence numbers with underflow", smoltcp
//! issue #1048; 0.13 rejects such bytes). It shows only when the receiver falls behind,
//! e.g. on a loaded machine.

mod cross_common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use cross_common::*;
use netback::Switch;
use netfront::{CounterSnapshot, NetfrontConfig, Queue};
use sha2::{Digest, Sha256};
use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::phy::{self, Device, DeviceCapabilities};
use smoltcp::socket::tcp;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, Ipv4Address};

const PORT: u16 = 5001;
/// Wall-clock bound of one transfer.
const LIMIT: Duration = Duration::from_secs(90);
/// Bound on the poll loop's iterations (a busy loop that never waits would hit it).
const MAX_POLLS: u64 = 200_000_000;

/// A reproducible byte stream: word `i` is splitmix64(seed + i), little endian.
struct Stream {
    seed: u64,
    pos: u64,
}

impl Stream {
    fn word(&self, i: u64) -> [u8; 8] {
        let mut z = self
            .seed
            .wrapping_add(i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)).to_le_bytes()
    }

    /// The next `buf.len()` bytes of the stream.
    fn fill(&mut self, buf: &mut [u8]) {
        let mut off = 0;
        while off < buf.len() {
            let w = self.word(self.pos / 8);
            let k = (self.pos % 8) as usize;
            let n = (8 - k).min(buf.len() - off);
            buf[off..off + n].copy_from_slice(&w[k..k + n]);
            off += n;
            self.pos += n as u64;
        }
    }
}

/// The TCP header fields of one frame, as the tap saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seg {
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    payload: usize,
    flags: u8,
    window: u16,
}

/// The TCP header of an Ethernet/IPv4/TCP frame (`None` for anything else: ARP).
fn parse_seg(b: &[u8]) -> Option<Seg> {
    if b.get(12..14)? != [0x08, 0x00] || *b.get(23)? != 6 {
        return None;
    }
    let ihl = usize::from(b.get(14)? & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([*b.get(16)?, *b.get(17)?]));
    let t = b.get(14 + ihl..14 + ihl + 20)?;
    let doff = usize::from(t[12] >> 4) * 4;
    Some(Seg {
        sport: u16::from_be_bytes([t[0], t[1]]),
        dport: u16::from_be_bytes([t[2], t[3]]),
        seq: u32::from_be_bytes([t[4], t[5], t[6], t[7]]),
        ack: u32::from_be_bytes([t[8], t[9], t[10], t[11]]),
        payload: total.checked_sub(ihl + doff)?,
        flags: t[13],
        window: u16::from_be_bytes([t[14], t[15]]),
    })
}

/// A smoltcp device: netfront's queue plus a log of every TCP frame passing through.
struct Tap<'q> {
    q: &'q mut Queue<Chan>,
    sent: Vec<Seg>,
    received: Vec<Seg>,
}

struct TapRx<'a, R> {
    inner: R,
    log: &'a mut Vec<Seg>,
}

struct TapTx<'a, T> {
    inner: T,
    log: &'a mut Vec<Seg>,
}

impl Device for Tap<'_> {
    type RxToken<'a>
        = TapRx<'a, <Queue<Chan> as Device>::RxToken<'a>>
    where
        Self: 'a;
    type TxToken<'a>
        = TapTx<'a, <Queue<Chan> as Device>::TxToken<'a>>
    where
        Self: 'a;

    fn receive(
        &mut self,
        ts: smoltcp::time::Instant,
    ) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let (rx, tx) = self.q.receive(ts)?;
        let rx = TapRx {
            inner: rx,
            log: &mut self.received,
        };
        let tx = TapTx {
            inner: tx,
            log: &mut self.sent,
        };
        Some((rx, tx))
    }

    fn transmit(&mut self, ts: smoltcp::time::Instant) -> Option<Self::TxToken<'_>> {
        let tx = self.q.transmit(ts)?;
        Some(TapTx {
            inner: tx,
            log: &mut self.sent,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        self.q.capabilities()
    }
}

impl<R: phy::RxToken> phy::RxToken for TapRx<'_, R> {
    fn consume<T, F: FnOnce(&[u8]) -> T>(self, f: F) -> T {
        let log = self.log;
        self.inner.consume(|b| {
            log.extend(parse_seg(b));
            f(b)
        })
    }
}

impl<T: phy::TxToken> phy::TxToken for TapTx<'_, T> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let log = self.log;
        self.inner.consume(len, |b| {
            let r = f(b);
            log.extend(parse_seg(b));
            r
        })
    }
}

/// What one guest saw of the transfer.
struct Outcome {
    sent_hash: [u8; 32],
    recv_hash: [u8; 32],
    received: u64,
    stats: CounterSnapshot,
    segs_sent: Vec<Seg>,
    segs_received: Vec<Seg>,
}

/// `got` must be `sent` with at most `lost` frames missing: same order, nothing
/// invented, nothing twice. Returns how many were missing before the last one
/// received (frames after it may still have been in flight at the end).
fn check_frames(dir: &str, sent: &[Seg], got: &[Seg], lost: u64) -> u64 {
    let mut it = sent.iter();
    let mut missing = 0u64;
    for (i, g) in got.iter().enumerate() {
        loop {
            match it.next() {
                Some(s) if s == g => break,
                Some(_) => missing += 1,
                None => panic!("{dir}: frame {i} ({g:?}) was never sent, or not in this order"),
            }
        }
    }
    assert!(
        missing <= lost,
        "{dir}: {missing} frames vanished, only {lost} counted as dropped"
    );
    missing
}
fn iface_for(q: &mut Tap<'_>, mac: [u8; 6], ip: [u8; 4], now: smoltcp::time::Instant) -> Interface {
    let mut cfg = Config::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
    cfg.random_seed = u64::from(mac[5]);
    let mut iface = Interface::new(cfg, q, now);
    iface.update_ip_addrs(|a| {
        a.push(IpCidr::new(IpAddress::v4(ip[0], ip[1], ip[2], ip[3]), 24))
            .expect("address");
    });
    iface
}

/// One guest: a server socket receiving `total` bytes and a client socket sending
/// `total` bytes of stream `seed` to the peer, in one smoltcp interface on queue 0.
/// Runs until both guests are done (`done` counts finished guests).
#[allow(clippy::too_many_arguments)]
fn guest(
    q: &mut Queue<Chan>,
    mac: [u8; 6],
    ip: [u8; 4],
    peer_ip: [u8; 4],
    local_port: u16,
    seed: u64,
    total: u64,
    done: &AtomicUsize,
    start: Instant,
) -> Outcome {
    let now = || smoltcp::time::Instant::from_micros(start.elapsed().as_micros() as i64);
    let mut q = Tap {
        q,
        sent: Vec::new(),
        received: Vec::new(),
    };
    let q = &mut q;
    let mut iface = iface_for(q, mac, ip, now());
    let mut sockets = SocketSet::new(vec![]);
    // 65535: the largest window without scaling (see the module comment).
    let mut srv = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; 65535]),
        tcp::SocketBuffer::new(vec![0; 1 << 12]),
    );
    srv.listen(PORT).expect("listen");
    let srv = sockets.add(srv);
    let cli = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; 1 << 12]),
        tcp::SocketBuffer::new(vec![0; 1 << 20]),
    );
    let cli = sockets.add(cli);
    sockets
        .get_mut::<tcp::Socket>(cli)
        .connect(
            iface.context(),
            (
                Ipv4Address::new(peer_ip[0], peer_ip[1], peer_ip[2], peer_ip[3]),
                PORT,
            ),
            local_port,
        )
        .expect("connect");

    let mut stream = Stream { seed, pos: 0 };
    let mut sent_hash = Sha256::new();
    let mut recv_hash = Sha256::new();
    let (mut sent, mut received) = (0u64, 0u64);
    let mut finished = false;
    let mut polls = 0u64;
    loop {
        polls += 1;
        assert!(
            start.elapsed() < LIMIT && polls < MAX_POLLS,
            "guest {ip:?} stalled: sent {sent}, received {received} of {total} after {polls} polls"
        );
        iface.poll(now(), q, &mut sockets);
        let s = sockets.get_mut::<tcp::Socket>(cli);
        while sent < total && s.can_send() {
            let n = s
                .send(|buf| {
                    let n = buf.len().min((total - sent) as usize);
                    stream.fill(&mut buf[..n]);
                    sent_hash.update(&buf[..n]);
                    (n, n)
                })
                .expect("send");
            sent += n as u64;
        }
        let cli_done = sent == total && s.send_queue() == 0;
        let r = sockets.get_mut::<tcp::Socket>(srv);
        while r.can_recv() {
            let n = r
                .recv(|buf| {
                    recv_hash.update(&*buf);
                    (buf.len(), buf.len())
                })
                .expect("recv");
            received += n as u64;
        }
        assert!(received <= total, "more bytes than were sent");
        if cli_done && received == total && !finished {
            finished = true;
            done.fetch_add(1, Ordering::AcqRel);
        }
        // Keep answering until the peer has everything acknowledged too.
        if done.load(Ordering::Acquire) == 2 {
            break;
        }
        let delay = iface
            .poll_delay(now(), &sockets)
            .map(Duration::from)
            .unwrap_or(Duration::from_millis(2))
            .min(Duration::from_millis(2));
        if !delay.is_zero() {
            q.q.wait(Some(delay));
        }
    }
    // Let the last ACKs out.
    for _ in 0..20 {
        iface.poll(now(), q, &mut sockets);
        q.q.flush();
    }
    Outcome {
        sent_hash: sent_hash.finalize().into(),
        recv_hash: recv_hash.finalize().into(),
        received,
        stats: q.q.stats(),
        segs_sent: std::mem::take(&mut q.sent),
        segs_received: std::mem::take(&mut q.received),
    }
}

/// Transfer `total` bytes each way at once between two guests; returns the seconds
/// the transfer took.
fn transfer(total: u64, cfg: NetfrontConfig) -> f64 {
    let switch = Switch::new();
    let w = World::new(switch.clone());
    let (ma, mb) = (mac(1), mac(2));
    let (da, mut nfa) = w.connect_guest(ma, cfg.clone());
    let (db, mut nfb) = w.connect_guest(mb, cfg);
    let mtu = nfa.queue(0).expect("queue").mtu();
    let done = AtomicUsize::new(0);
    let start = Instant::now();
    let (a, b) = thread::scope(|s| {
        let qa = nfa.queue(0).expect("queue");
        let qb = nfb.queue(0).expect("queue");
        let (done, start) = (&done, start);
        let ha = s.spawn(move || {
            guest(
                qa,
                ma,
                [10, 0, 0, 1],
                [10, 0, 0, 2],
                49152,
                0xa,
                total,
                done,
                start,
            )
        });
        let hb = s.spawn(move || {
            guest(
                qb,
                mb,
                [10, 0, 0, 2],
                [10, 0, 0, 1],
                49153,
                0xb,
                total,
                done,
                start,
            )
        });
        (ha.join().expect("guest A"), hb.join().expect("guest B"))
    });
    let secs = start.elapsed().as_secs_f64();

    // Byte-exact both ways: what A generated is what B received and vice versa.
    assert_eq!(a.received, total);
    assert_eq!(b.received, total);
    assert_eq!(a.sent_hash, b.recv_hash, "A→B stream differs");
    assert_eq!(b.sent_hash, a.recv_hash, "B→A stream differs");
    assert_ne!(a.sent_hash, b.sent_hash, "the two streams are distinct");

    // The frames went through netback's switch, unicast once learned.
    let st = switch.stats();
    assert!(st.forwarded > 0, "{st:?}");
    let (ia, ib) = (
        w.nb().vif(vif(da)).expect("vif A"),
        w.nb().vif(vif(db)).expect("vif B"),
    );
    // Frame-exact: B received what A's stack sent, in order, and vice versa; a gap
    // only where a counter says a frame was dropped (netfront TX, or netback's queue
    // for the receiving guest).
    let lost_ab = a.stats.tx_dropped + ib.counters.rx_drops;
    let lost_ba = b.stats.tx_dropped + ia.counters.rx_drops;
    let miss_ab = check_frames("A→B", &a.segs_sent, &b.segs_received, lost_ab);
    let miss_ba = check_frames("B→A", &b.segs_sent, &a.segs_received, lost_ba);
    assert!(a.segs_sent.len() as u64 > total / 65536);
    assert!(b.segs_sent.len() as u64 > total / 65536);
    for (nf, back) in [(&a.stats, &ia.counters), (&b.stats, &ib.counters)] {
        assert_eq!(nf.tx_errors + nf.rx_errors + nf.rx_dropped, 0, "{nf:?}");
        assert_eq!(
            back.tx_drops + back.tx_errors + back.rx_errors,
            0,
            "{back:?}"
        );
        // Every frame the guest queued reached netback's port (counted as it left
        // the ring; the last few may still be in flight).
        assert!(back.tx_packets <= nf.tx_packets && back.tx_packets + 256 >= nf.tx_packets);
        assert!(back.rx_packets >= nf.rx_packets);
        assert!(
            nf.notify_sent() > 0 && back.notify_sent > 0,
            "{nf:?} {back:?}"
        );
    }
    eprintln!(
        "TCP over smoltcp, MTU {mtu}: {} MB each way at once in {secs:.2} s: {:.0} Mbit/s per direction, {:.0} Mbit/s total; \
         guest A tx {} frames, notify sent/suppressed {}/{}; netback vif A notify {}/{}; switch {st:?}",
        total / 1_000_000,
        total as f64 * 8.0 / secs / 1e6,
        2.0 * total as f64 * 8.0 / secs / 1e6,
        a.stats.tx_packets,
        a.stats.notify_sent(),
        a.stats.notify_suppressed(),
        ia.counters.notify_sent,
        ia.counters.notify_suppressed,
    );
    eprintln!(
        "  frames A→B {} sent / {} received ({miss_ab} missing, {lost_ab} dropped), B→A {} / {} ({miss_ba}, {lost_ba})",
        a.segs_sent.len(),
        b.segs_received.len(),
        b.segs_sent.len(),
        a.segs_received.len()
    );
    secs
}

#[test]
fn tcp_100mb_each_way_byte_exact_through_the_switch() {
    transfer(scaled(100_000_000), front_cfg(1, true));
}

#[test]
fn tcp_100mb_each_way_byte_exact_with_jumbo_sg_frames() {
    // 64 KiB frames: TCP segments of up to 16 ring slots both ways (with SG).
    let cfg = NetfrontConfig {
        mtu: 65535,
        ..front_cfg(1, false)
    };
    transfer(scaled(100_000_000), cfg);
}
