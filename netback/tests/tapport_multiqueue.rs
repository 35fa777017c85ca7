//! A two-queue vif on a multi-queue TAP, as root in a namespace the test creates: the
//! kernel sends UDP datagrams of many flows to the guest, the TAP steers flows over
//! both of its queues, and each TAP queue's frames reach the guest on the vif queue of
//! the same index, intact; the guest sends on both of its queues and the kernel
//! receives from both. The guest uses netfront's plain frame API here.

mod tapport_common;

use std::collections::HashSet;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use netback::offload::{
    fill_ipv4_header_checksum, fill_l4_checksum, parse_frame, verify_l4_checksum, IPPROTO_UDP,
};
use netfront::TxMeta;
use tapport_common::*;

const FLOWS: u16 = 64;
const PER_FLOW: u16 = 4;
const PAYLOAD: usize = 300;

fn payload(flow: u16, n: u16) -> Vec<u8> {
    (0..PAYLOAD)
        .map(|i| (i as u16).wrapping_mul(13).wrapping_add(flow * 7 + n) as u8)
        .collect()
}

/// An Ethernet/IPv4/UDP frame from the guest to the host with full checksums.
fn udp_to_host(host_mac: [u8; 6], sport: u16, data: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 42];
    f[..6].copy_from_slice(&host_mac);
    f[6..12].copy_from_slice(&guest_mac(0));
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[14] = 0x45;
    f[16..18].copy_from_slice(&((28 + data.len()) as u16).to_be_bytes());
    f[22] = 64;
    f[23] = IPPROTO_UDP;
    f[26..30].copy_from_slice(&guest_ip(0));
    f[30..34].copy_from_slice(&HOST_IP);
    f[34..36].copy_from_slice(&sport.to_be_bytes());
    f[36..38].copy_from_slice(&6000u16.to_be_bytes());
    f[38..40].copy_from_slice(&((8 + data.len()) as u16).to_be_bytes());
    f.extend_from_slice(data);
    fill_ipv4_header_checksum(&mut f).expect("ip csum");
    fill_l4_checksum(&mut f).expect("udp csum");
    f
}

#[test]
fn flows_spread_over_both_queues_each_way() {
    if !root_or_skip("flows_spread_over_both_queues_each_way") {
        return;
    }
    let host = HostNs::new("mq");
    let dom0 = Dom0::new(&host, |_| {});
    let cfg = netfront::NetfrontConfig {
        queues: 2,
        ..front_cfg(true)
    };
    let (domid, mut nf) = dom0.guest(0, cfg);
    assert_eq!(nf.num_queues(), 2);
    assert_eq!(dom0.port.stats(vif(domid)).expect("stats").queues, 2);
    // The kernel needs the guest's MAC without ARP (nobody answers ARP here).
    let mac = guest_mac(0)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    host.ip(&[
        "neigh",
        "replace",
        &ipv4(guest_ip(0)).to_string(),
        "lladdr",
        &mac,
        "dev",
        BRIDGE,
    ]);

    // Kernel → guest: FLOWS source ports, PER_FLOW datagrams each.
    let dst = SocketAddr::from((guest_ip(0), 7000));
    host.within(|| {
        for flow in 0..FLOWS {
            let s = UdpSocket::bind(SocketAddr::from((HOST_IP, 20000 + flow))).expect("bind");
            for n in 0..PER_FLOW {
                s.send_to(&payload(flow, n), dst).expect("send");
            }
        }
    });
    let mut seen = HashSet::new();
    let mut per_queue = [0usize; 2];
    let mut flows_on = [HashSet::new(), HashSet::new()];
    let deadline = Instant::now() + WAIT;
    let mut buf = vec![0u8; 70000];
    while seen.len() < usize::from(FLOWS * PER_FLOW) && Instant::now() < deadline {
        for (qi, q) in nf.queues_mut().iter_mut().enumerate() {
            while let Some((len, meta)) = q.recv(&mut buf) {
                let f = &mut buf[..len];
                let Ok(info) = parse_frame(f) else { continue };
                if info.l4_proto != IPPROTO_UDP {
                    continue;
                }
                let l4 = info.l4_offset;
                let sport = u16::from_be_bytes([f[l4], f[l4 + 1]]);
                let flow = sport.wrapping_sub(20000);
                let data = f[l4 + 8..info.ip_end].to_vec();
                let n = (0..PER_FLOW).find(|&n| payload(flow, n) == data);
                assert!(
                    flow < FLOWS && n.is_some(),
                    "unexpected datagram from port {sport}"
                );
                if meta.csum_blank {
                    fill_l4_checksum(f).expect("complete");
                }
                assert!(
                    verify_l4_checksum(f).expect("udp"),
                    "bad UDP checksum (flow {flow})"
                );
                assert!(seen.insert((flow, n)), "duplicate datagram");
                per_queue[qi] += 1;
                flows_on[qi].insert(flow);
            }
            q.wait_rx(Some(Duration::from_millis(1)));
        }
    }
    assert_eq!(
        seen.len(),
        usize::from(FLOWS * PER_FLOW),
        "per queue {per_queue:?}"
    );
    assert!(
        per_queue[0] > 0 && per_queue[1] > 0,
        "flows not spread: {per_queue:?}"
    );
    // A flow stays on one queue (the kernel's steering is per flow).
    assert!(
        flows_on[0].is_disjoint(&flows_on[1]),
        "a flow used both queues"
    );

    // Guest → kernel on both queues.
    let host_mac_text = host.exec(&["cat", &format!("/sys/class/net/{BRIDGE}/address")]);
    let host_mac: Vec<u8> = host_mac_text
        .trim()
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).expect("mac"))
        .collect();
    let host_mac: [u8; 6] = host_mac.try_into().expect("6 bytes");
    let sock = host
        .within(|| UdpSocket::bind(SocketAddr::from((HOST_IP, 6000))))
        .expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    for (qi, q) in nf.queues_mut().iter_mut().enumerate() {
        let data = payload(1000 + qi as u16, 0);
        q.send(
            &udp_to_host(host_mac, 31000 + qi as u16, &data),
            TxMeta::default(),
        )
        .expect("send");
        q.flush();
    }
    let mut got = HashSet::new();
    let mut rbuf = [0u8; 2048];
    while got.len() < 2 {
        let (n, from) = sock
            .recv_from(&mut rbuf)
            .expect("kernel got the guest's datagrams");
        let qi = from.port() - 31000;
        assert_eq!(&rbuf[..n], &payload(1000 + qi, 0)[..]);
        got.insert(qi);
    }
    // Counters are bumped right after the writes the kernel already saw.
    let counted = wait_until(WAIT, || {
        let st = dom0.port.stats(vif(domid)).expect("stats");
        st.to_host_frames >= 2 && st.to_guest_frames >= u64::from(FLOWS * PER_FLOW)
    });
    assert!(counted, "{:?}", dom0.port.stats(vif(domid)));
}
