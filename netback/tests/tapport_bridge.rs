//! The TAP port against the Linux stack, as root, in a namespace the test creates: a
//! guest running the real netfront under smoltcp, netback bridging its vif to a TAP
//! enslaved to a Linux bridge that carries the host's address.
//!
//! - the kernel pings the guest (smoltcp answers echo requests by itself) and the guest
//!   pings the kernel (a smoltcp ICMP socket); ARP resolves both ways, which the pcap
//!   capture of the vif proves (requests and replies in both directions), and tshark
//!   finds no bad checksum and no malformed frame in it;
//! - two guests on two vifs of the same bridge reach each other through it;
//! - the TAP follows the vif: named `vif<domid>.<devid>`, one queue per vif queue,
//!   offloads from the guest's features, removed when the vif disconnects.

mod tapport_common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use netback::pcap::PcapWriter;
use netback::tap::Offloads;
use smoltcp::iface::SocketSet;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::socket::icmp;
use smoltcp::wire::{Icmpv4Packet, Icmpv4Repr, IpAddress};
use tapport_common::*;

const IDENT: u16 = 0x7e57;
const PAYLOAD: &[u8] = b"pvnet guest ping";

/// Runs guest `n`'s stack on queue 0 until `stop` (or `limit`); if `ping` is given,
/// also pings that address with an ICMP socket until a reply arrives, then sets
/// `replied_flag`. Returns whether a reply arrived.
fn guest_loop(
    nf: &mut Front,
    n: u8,
    ping: Option<[u8; 4]>,
    replied_flag: &AtomicBool,
    stop: &AtomicBool,
    limit: Duration,
) -> bool {
    let start = Instant::now();
    let q = nf.queue(0).expect("queue 0");
    let mut iface = iface_for(q, n, start);
    let mut sockets = SocketSet::new(vec![]);
    let mk = || icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 8], vec![0u8; 4096]);
    let mut sock = icmp::Socket::new(mk(), mk());
    sock.bind(icmp::Endpoint::Ident(IDENT)).expect("bind");
    let h = sockets.add(sock);
    let mut replied = false;
    let mut seq = 0u16;
    let mut last_sent: Option<Instant> = None;
    while !stop.load(Ordering::Relaxed) && start.elapsed() < limit {
        step(&mut iface, q, &mut sockets, start, Duration::from_millis(5));
        let Some(target) = ping else { continue };
        let sock = sockets.get_mut::<icmp::Socket>(h);
        while sock.can_recv() {
            let mut buf = [0u8; 512];
            let Ok((len, from)) = sock.recv_slice(&mut buf) else {
                break;
            };
            let caps = ChecksumCapabilities::default();
            let Ok(pkt) = Icmpv4Packet::new_checked(&buf[..len]) else {
                continue;
            };
            if let Ok(Icmpv4Repr::EchoReply { ident, data, .. }) = Icmpv4Repr::parse(&pkt, &caps) {
                if ident == IDENT
                    && data == PAYLOAD
                    && from == IpAddress::v4(target[0], target[1], target[2], target[3])
                {
                    replied = true;
                    replied_flag.store(true, Ordering::Relaxed);
                }
            }
        }
        let due = last_sent.is_none_or(|t| t.elapsed() > Duration::from_millis(200));
        if !replied && due && sock.can_send() {
            seq = seq.wrapping_add(1);
            let repr = Icmpv4Repr::EchoRequest {
                ident: IDENT,
                seq_no: seq,
                data: PAYLOAD,
            };
            let mut buf = vec![0u8; repr.buffer_len()];
            repr.emit(
                &mut Icmpv4Packet::new_unchecked(&mut buf[..]),
                &ChecksumCapabilities::default(),
            );
            let dst = IpAddress::v4(target[0], target[1], target[2], target[3]);
            sock.send_slice(&buf, dst).expect("icmp send");
            last_sent = Some(Instant::now());
        }
    }
    replied
}

#[test]
fn kernel_and_guest_ping_each_other_and_arp_both_ways() {
    if !root_or_skip("kernel_and_guest_ping_each_other_and_arp_both_ways") {
        return;
    }
    let host = HostNs::new("ping");
    let pcap = TempPath::new("ping.pcap");
    let dom0 = Dom0::new(&host, |_| {});
    // Capture before the guest exists: the setting waits for the vif.
    let writer = Arc::new(PcapWriter::create(&pcap.0).expect("pcap file"));
    dom0.port.set_capture(vif(1), Some(writer.clone()));
    let (domid, mut nf) = dom0.guest(0, front_cfg(true));
    assert_eq!(domid, 1, "the capture was set up for dom1");
    let tap = dom0.port.tap_name(vif(domid)).expect("tap");
    assert_eq!(tap, "vif1.0");
    // The TAP is a port of the bridge.
    let master = host.ip(&["-o", "link", "show", "dev", &tap]);
    assert!(master.contains(&format!("master {BRIDGE}")), "{master}");

    let stop = AtomicBool::new(false);
    let replied = AtomicBool::new(false);
    let (guest_got_reply, kernel_ok) = thread::scope(|s| {
        let g = s.spawn(|| {
            guest_loop(
                &mut nf,
                0,
                Some(HOST_IP),
                &replied,
                &stop,
                Duration::from_secs(30),
            )
        });
        // The guest pings first, so it has to ARP for the host (smoltcp would
        // otherwise learn the host's MAC from the kernel's own ARP request).
        wait_until(WAIT, || replied.load(Ordering::Relaxed));
        // The kernel learnt the guest's MAC from that request: forget it, so its ping
        // needs an ARP of its own.
        host.ip(&["neigh", "flush", "dev", BRIDGE]);
        let kernel_ok = kernel_ping(&host, guest_ip(0), 3, Duration::from_secs(2)) == 3;
        stop.store(true, Ordering::Relaxed);
        (g.join().expect("guest thread"), kernel_ok)
    });
    assert!(
        kernel_ok,
        "the kernel's pings to the guest were not all answered"
    );
    assert!(
        guest_got_reply,
        "the guest's ping to the kernel got no reply"
    );

    // The kernel learnt the guest's MAC by ARP, and its neighbour entry says so.
    let neigh = host.ip(&["neigh", "show", &ipv4(guest_ip(0)).to_string()]);
    let mac = guest_mac(0)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    assert!(neigh.contains(&mac), "kernel neighbour entry: {neigh:?}");

    let st = dom0.port.stats(vif(domid)).expect("stats");
    assert!(st.to_host_frames >= 4 && st.to_guest_frames >= 4, "{st:?}");
    assert_eq!(
        st.to_host_dropped + st.to_guest_dropped + st.to_guest_bad,
        0,
        "{st:?}"
    );
    drop(dom0);
    writer.flush().expect("flush");
    drop(writer);

    // ARP both ways: the kernel asked for the guest and the guest answered; the guest
    // asked for the host and the kernel answered.
    let g = ipv4(guest_ip(0)).to_string();
    let h = ipv4(HOST_IP).to_string();
    let arp = |op: u8, sender: &str, target: &str| {
        let f = format!("arp.opcode == {op} && arp.src.proto_ipv4 == {sender} && arp.dst.proto_ipv4 == {target}");
        tshark_count(&pcap.0, &f)
    };
    assert!(
        arp(1, &h, &g) >= 1,
        "no ARP request from the kernel for the guest"
    );
    assert!(arp(2, &g, &h) >= 1, "no ARP reply from the guest");
    assert!(
        arp(1, &g, &h) >= 1,
        "no ARP request from the guest for the kernel"
    );
    assert!(arp(2, &h, &g) >= 1, "no ARP reply from the kernel");
    let echo =
        |ty: u8, src: &str| tshark_count(&pcap.0, &format!("icmp.type == {ty} && ip.src == {src}"));
    assert!(echo(8, &h) >= 3 && echo(0, &g) >= 3, "kernel → guest pings");
    assert!(echo(8, &g) >= 1 && echo(0, &h) >= 1, "guest → kernel ping");
    let report = tshark_check(&pcap.0);
    // 4 ARP, 3 + 3 kernel echoes, 1 + 1 guest echoes (plus whatever IGMP the bridge sent).
    assert!(report.frames >= 12, "{report:?}");
    assert!(
        report.flagged.is_empty(),
        "tshark flagged: {:?}",
        report.flagged
    );
}

#[test]
fn two_guests_reach_each_other_through_the_kernel_bridge() {
    if !root_or_skip("two_guests_reach_each_other_through_the_kernel_bridge") {
        return;
    }
    let host = HostNs::new("two");
    let dom0 = Dom0::new(&host, |_| {});
    let (da, mut nfa) = dom0.guest(0, front_cfg(true));
    let (db, mut nfb) = dom0.guest(1, front_cfg(false));
    let (ta, tb) = (
        dom0.port.tap_name(vif(da)).expect("tap a"),
        dom0.port.tap_name(vif(db)).expect("tap b"),
    );
    assert_ne!(ta, tb);
    let stop = AtomicBool::new(false);
    let (ra, rb) = (AtomicBool::new(false), AtomicBool::new(false));
    let limit = Duration::from_secs(30);
    let (a_ok, b_ok) = thread::scope(|s| {
        let a = s.spawn(|| guest_loop(&mut nfa, 0, Some(guest_ip(1)), &ra, &stop, limit));
        let b = s.spawn(|| guest_loop(&mut nfb, 1, Some(guest_ip(0)), &rb, &stop, limit));
        wait_until(WAIT, || {
            ra.load(Ordering::Relaxed) && rb.load(Ordering::Relaxed)
        });
        stop.store(true, Ordering::Relaxed);
        (a.join().expect("guest a"), b.join().expect("guest b"))
    });
    assert!(a_ok, "guest 0 got no echo reply from guest 1");
    assert!(b_ok, "guest 1 got no echo reply from guest 0");
    // The bridge switched it: it learnt each guest's MAC on that guest's TAP.
    let fdb = host.exec(&["bridge", "fdb", "show", "br", BRIDGE]);
    for (n, tap) in [(0u8, &ta), (1u8, &tb)] {
        let m = guest_mac(n)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        assert!(
            fdb.lines()
                .any(|l| l.starts_with(&m) && l.contains(&format!("dev {tap}"))),
            "bridge did not learn guest {n} on {tap}: {fdb}"
        );
    }
    for d in [da, db] {
        let st = dom0.port.stats(vif(d)).expect("stats");
        assert!(st.to_host_frames >= 2 && st.to_guest_frames >= 2, "{st:?}");
    }
}

#[test]
fn tap_follows_the_vif_queues_features_and_lifecycle() {
    if !root_or_skip("tap_follows_the_vif_queues_features_and_lifecycle") {
        return;
    }
    let host = HostNs::new("life");
    let dom0 = Dom0::new(&host, |c| c.mtu = Some(9000));
    let cfg = netfront::NetfrontConfig {
        queues: 2,
        ..front_cfg(true)
    };
    let (da, nfa) = dom0.guest(0, cfg);
    let (db, nfb) = dom0.guest(1, front_cfg(false));
    let sa = dom0.port.stats(vif(da)).expect("a");
    let sb = dom0.port.stats(vif(db)).expect("b");
    assert_eq!((sa.tap.as_str(), sa.queues), ("vif1.0", 2));
    assert_eq!((sb.tap.as_str(), sb.queues), ("vif2.0", 1));
    // Offloads follow the guest: all of them for the first, none for the second.
    assert_eq!(
        sa.offloads,
        Offloads::CSUM | Offloads::TSO4 | Offloads::TSO6
    );
    assert_eq!(sb.offloads, Offloads::NONE);
    // The kernel's view: TAP with vnet headers, multi-queue only for the 2-queue vif,
    // MTU and bridge as configured.
    let flags = |t: &str| {
        let v = host.exec(&["cat", &format!("/sys/class/net/{t}/tun_flags")]);
        u32::from_str_radix(v.trim().trim_start_matches("0x"), 16).expect("tun_flags")
    };
    let (fa, fb) = (flags("vif1.0"), flags("vif2.0"));
    let (tap, vnet, mq) = (
        libc::IFF_TAP as u32,
        libc::IFF_VNET_HDR as u32,
        libc::IFF_MULTI_QUEUE as u32,
    );
    assert_eq!(fa & (tap | vnet | mq), tap | vnet | mq, "{fa:#x}");
    assert_eq!(fb & (tap | vnet | mq), tap | vnet, "{fb:#x}");
    for t in ["vif1.0", "vif2.0"] {
        let l = host.ip(&["-o", "link", "show", "dev", t]);
        assert!(
            l.contains("mtu 9000") && l.contains(&format!("master {BRIDGE}")) && l.contains("UP"),
            "{l}"
        );
    }
    // Disconnect from the backend side: the TAP goes, the other stays.
    dom0.nb().close_vif(vif(da));
    assert!(
        host.wait_link_gone("vif1.0"),
        "vif1.0 still exists after close"
    );
    assert!(dom0.port.tap_name(vif(da)).is_none());
    assert!(host.has_link("vif2.0"));
    drop(nfa);
    drop(nfb);
    // netback shutdown disconnects everything: no TAP is left behind.
    drop(dom0);
    assert!(
        host.wait_link_gone("vif2.0"),
        "vif2.0 still exists after shutdown"
    );
}

#[test]
fn a_tap_that_cannot_be_set_up_is_reported_and_its_frames_counted() {
    if !root_or_skip("a_tap_that_cannot_be_set_up_is_reported_and_its_frames_counted") {
        return;
    }
    let host = HostNs::new("nobr");
    let dom0 = Dom0::new(&host, |c| c.bridge = Some("pvnobridge".into()));
    // Connect by hand: Dom0::guest waits for a TAP that will never exist.
    let domid = dom0
        .hv
        .create_domain(&hv::embedded::DomainConfig {
            name: "nobr".into(),
            ..hv::embedded::DomainConfig::default()
        })
        .expect("domain");
    hv::toolstack::add_vif(
        &dom0.store,
        &hv::toolstack::VifConfig {
            frontend: domid,
            backend: 0,
            devid: 0,
            mac: guest_mac(0),
            rate: None,
        },
    )
    .expect("add_vif");
    let mut nf =
        netfront::Netfront::connect(dom0.hv.guest_env(domid).expect("env"), front_cfg(true))
            .expect("connect");
    let failed = wait_until(WAIT, || dom0.port.failure(vif(domid)).is_some());
    assert!(failed, "no failure recorded");
    let why = dom0.port.failure(vif(domid)).unwrap_or_default();
    assert!(why.contains("pvnobridge"), "{why}");
    assert!(dom0.port.tap_name(vif(domid)).is_none());
    // Nothing half-made is left in the namespace.
    assert!(host.wait_link_gone("vif1.0"));
    // The guest still runs; what it sends is dropped and counted.
    let q = nf.queue(0).expect("queue");
    let frame = [0xffu8; 60];
    for _ in 0..5 {
        q.send(&frame, netfront::TxMeta::default()).expect("send");
    }
    q.flush();
    assert!(wait_until(WAIT, || dom0.port.unattached_drops() == 5));
}
