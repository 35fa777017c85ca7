//! Backpressure from a guest that stops receiving, as root in a namespace the test
//! creates: the kernel floods the guest with UDP while the guest does not read.
//! - Default (netback's RX thread reads the TAP): it stops reading while the guest
//!   has no room, the frames wait in the kernel's TAP queue, and the kernel drops the
//!   rest (the TAP's `tx_dropped`).
//! - `reader_threads`: the TAP reader holds off while the guest's queue is above its
//!   high-water mark, then drops and counts.
//!
//! Either way netback holds no more than its bounds, and once the guest reads again
//! new traffic gets through.

mod tapport_common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use netback::offload::{parse_frame, IPPROTO_UDP};
use tapport_common::*;

#[test]
fn a_guest_that_stops_reading_leaves_the_drops_to_the_kernel() {
    if !root_or_skip("a_guest_that_stops_reading_leaves_the_drops_to_the_kernel") {
        return;
    }
    flood_a_guest_that_does_not_read(false);
}

#[test]
fn with_reader_threads_a_guest_that_stops_reading_costs_counted_drops_not_memory() {
    if !root_or_skip("with_reader_threads_a_guest_that_stops_reading_costs_counted_drops") {
        return;
    }
    flood_a_guest_that_does_not_read(true);
}

/// The TAP's `tx_dropped` (frames the kernel could not queue for its reader).
fn kernel_tap_drops(host: &HostNs, tap: &str) -> u64 {
    let out = host.ip(&["-s", "-o", "link", "show", "dev", tap]);
    // "... TX: bytes packets errors dropped carrier collsns \    <values>"
    let fields: Vec<&str> = out.split_whitespace().collect();
    let tx = fields
        .iter()
        .rposition(|f| *f == "TX:")
        .expect("ip -s output has TX statistics");
    let values: Vec<u64> = fields[tx..].iter().filter_map(|f| f.parse().ok()).collect();
    // bytes, packets, errors, dropped, ...
    *values.get(3).expect("TX dropped value")
}

fn flood_a_guest_that_does_not_read(reader_threads: bool) {
    let host = HostNs::new(if reader_threads { "bpt" } else { "bp" });
    let dom0 = Dom0::new(&host, |c| {
        c.rx_high_water = 256;
        c.reader_threads = reader_threads;
    });
    let (domid, mut nf) = dom0.guest(0, front_cfg(true));
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
    let dst = SocketAddr::from((guest_ip(0), 7000));
    let sock = host
        .within(|| UdpSocket::bind(SocketAddr::from((HOST_IP, 7001))))
        .expect("bind");

    // Flood while the guest reads nothing.
    let flood = 20_000u32;
    for i in 0..flood {
        let _ = sock.send_to(&i.to_be_bytes().repeat(250), dst);
    }
    let tap = dom0.port.stats(vif(domid)).expect("stats").tap;
    let settled = wait_until(WAIT, || {
        let st = dom0.port.stats(vif(domid)).expect("stats");
        if reader_threads {
            st.backpressure_waits > 0 && st.to_guest_dropped > 0
        } else {
            kernel_tap_drops(&host, &tap) > 0
        }
    });
    let st = dom0.port.stats(vif(domid)).expect("stats");
    assert!(
        settled,
        "no backpressure/drops under a flood: {st:?}, kernel TAP drops {}",
        kernel_tap_drops(&host, &tap)
    );
    if reader_threads {
        // netback adds the drops to the vif's counters on its RX thread's next pass.
        let counted = wait_until(WAIT, || {
            dom0.nb()
                .vif(vif(domid))
                .is_some_and(|i| i.counters.rx_drops > 0)
        });
        assert!(
            counted,
            "netback did not count the drops: {:?}",
            dom0.nb().vif(vif(domid))
        );
    } else {
        // Nothing was read only to be thrown away.
        assert_eq!(st.backpressure_waits, 0, "{st:?}");
        assert_eq!(st.to_guest_dropped, 0, "{st:?}");
    }
    // What was kept is bounded: the guest's 256 posted RX buffers, one RX batch in
    // netback's RX thread (256) and the vif queue's inbound FIFO (1024, netback's
    // default `inbound_capacity`). The rest was dropped and counted here, or stayed in
    // (and was dropped by) the kernel's TAP queue.
    let kept = st.to_guest_frames;
    assert!(kept < u64::from(flood), "{st:?}");
    assert!(
        kept <= 256 + 256 + 1024,
        "more frames queued than the bounds allow: {st:?}"
    );
    // Every frame read was either queued or counted as dropped (once the reader is
    // done with its last batch).
    let accounted = wait_until(WAIT, || {
        let st = dom0.port.stats(vif(domid)).expect("stats");
        st.from_host_frames == st.to_guest_frames + st.to_guest_dropped
    });
    assert!(accounted, "{:?}", dom0.port.stats(vif(domid)));

    // The guest reads again: drain, then new datagrams arrive.
    let mut buf = vec![0u8; 70000];
    let q = nf.queue(0).expect("queue");
    let deadline = Instant::now() + WAIT;
    let mut drained = 0u64;
    while Instant::now() < deadline {
        match q.recv(&mut buf) {
            Some(_) => drained += 1,
            None => {
                if !q.wait_rx(Some(Duration::from_millis(50))) {
                    break;
                }
            }
        }
    }
    assert!(drained > 0);
    let marker = 0xfeed_f00du32.to_be_bytes().repeat(10);
    let mut got = 0;
    for _ in 0..10 {
        sock.send_to(&marker, dst).expect("send");
    }
    let deadline = Instant::now() + WAIT;
    while got < 10 && Instant::now() < deadline {
        if let Some((len, _)) = q.recv(&mut buf) {
            let f = &buf[..len];
            if let Ok(info) = parse_frame(f) {
                if info.l4_proto == IPPROTO_UDP && f[info.l4_offset + 8..info.ip_end] == marker[..]
                {
                    got += 1;
                }
            }
        } else {
            q.wait_rx(Some(Duration::from_millis(5)));
        }
    }
    assert_eq!(
        got, 10,
        "traffic did not resume after the guest drained its queue"
    );
}
