//! Bulk TCP through the whole path, as root in a namespace the test creates:
//! kernel socket ⇄ bridge ⇄ TAP ⇄ netback ⇄ netfront ⇄ smoltcp, both directions,
//! byte-exact (SHA-256 of what arrived equals that of what was sent).
//!
//! Three configurations:
//! - offloads on: the guest takes checksum offload and GSO, the TAP hands over
//!   checksum-partial TCP super-frames (one read each) and the guest's blank checksums
//!   go to the kernel as `NEEDS_CSUM`, its consecutive segments merged into GSO
//!   super-frames by the TAP port;
//! - offloads off (netfront `csum_offload`/GSO off): the TAP gets no offloads, the
//!   kernel finishes everything;
//! - software fallback: the guest takes no offloads but the TAP is forced to hand over
//!   partial and GSO frames, so netback must complete checksums and segment.
//!
//! A pcap capture of the start of each direction is checked by tshark: no bad IPv4 or
//! TCP checksum, no malformed frame. Throughput is printed (`--nocapture`).
//!
//! Size: `PVNET_TAP_TCP_BYTES` (default 1 GB each way for the first two
//! configurations, a quarter of it for the fallback).

mod tapport_common;

use std::sync::Arc;

use netback::pcap::{PcapOptions, PcapWriter};
use netback::port::OffloadPolicy;
use netback::tap::Offloads;
use tapport_common::tcp::*;
use tapport_common::*;

/// Bytes of the start of each direction captured for tshark.
const CAPTURE_BYTES: u64 = 24 << 20;

fn bytes_each_way() -> u64 {
    std::env::var("PVNET_TAP_TCP_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000_000)
}

struct Outcome {
    to_guest: Transfer,
    to_kernel: Transfer,
    port: netback::port::TapVifStats,
    front: netfront::CounterSnapshot,
}

fn capture(dom0: &Dom0, domid: u16, path: &TempPath) -> Arc<PcapWriter> {
    let opts = PcapOptions {
        limit_bytes: Some(CAPTURE_BYTES),
        ..PcapOptions::default()
    };
    let w = Arc::new(PcapWriter::create_with(&path.0, opts).expect("pcap"));
    dom0.port.set_capture(vif(domid), Some(w.clone()));
    w
}

fn check_capture(label: &str, w: Arc<PcapWriter>, path: &TempPath, expect_gso: Option<bool>) {
    w.flush().expect("flush");
    let stats = w.stats();
    drop(w);
    let report = tshark_check(&path.0);
    note(format!(
        "{label}: capture {} frames ({} MB), tshark saw {}, flagged {}",
        stats.packets,
        stats.bytes >> 20,
        report.frames,
        report.flagged.len()
    ));
    assert!(
        report.frames as u64 == stats.packets && report.frames > 200,
        "{label}: {report:?} {stats:?}"
    );
    assert!(
        report.flagged.is_empty(),
        "{label}: tshark flagged {} frames, first: {:?}",
        report.flagged.len(),
        &report.flagged[..report.flagged.len().min(5)]
    );
    let tcp = tshark_count(&path.0, "tcp.len > 0");
    assert!(tcp > 200, "{label}: only {tcp} TCP data frames captured");
    if let Some(gso) = expect_gso {
        let big = tshark_count(&path.0, "frame.len > 1514");
        assert_eq!(big > 0, gso, "{label}: {big} frames above 1514 bytes");
    }
}

/// How the TAP port does its I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PortIo {
    /// The defaults: guest → host batches go through the TAP queue's io_uring, and
    /// netback's RX thread reads the TAP itself.
    Default,
    /// The other paths: `writev` frame by frame (the fallback where io_uring is
    /// missing) and a reader thread per TAP queue (`reader_threads`).
    Plain,
}

fn run(
    label: &str,
    guest_offloads: bool,
    policy: OffloadPolicy,
    io: PortIo,
    total: u64,
) -> Outcome {
    let t0 = std::time::Instant::now();
    let stage = |what: &str| {
        note(format!(
            "{label}: [{:.1}s] {what}",
            t0.elapsed().as_secs_f64()
        ))
    };
    let host = HostNs::new("tcp");
    let dom0 = Dom0::new(&host, |c| {
        c.offloads = policy;
        c.tx_io_uring = io == PortIo::Default;
        c.reader_threads = io == PortIo::Plain;
    });
    let pcap_in = TempPath::new("to-guest.pcap");
    let pcap_out = TempPath::new("to-kernel.pcap");
    // dom1 is the first guest of a fresh hypervisor: capture it from the start.
    let w = capture(&dom0, 1, &pcap_in);
    let (domid, mut nf) = dom0.guest(0, front_cfg(guest_offloads));
    assert_eq!(domid, 1);
    let pattern = Pattern::new(0x7ab0 + u64::from(guest_offloads));
    let want = pattern.digest(total);
    stage("guest connected");

    let to_guest = kernel_to_guest(&host, &mut nf, 0, 5001, total, &pattern);
    note(format!(
        "{label}: kernel → guest {} MB in {:.2}s = {:.2} Gbit/s",
        to_guest.bytes / 1_000_000,
        to_guest.secs,
        to_guest.gbps()
    ));
    stage("kernel → guest transferred");
    assert_eq!(to_guest.bytes, total, "{label}: kernel → guest byte count");
    assert!(
        to_guest.digest == want,
        "{label}: kernel → guest stream differs (SHA-256)"
    );
    let expect_gso = match policy {
        OffloadPolicy::Negotiated => Some(guest_offloads),
        OffloadPolicy::Fixed(_) => None,
    };
    check_capture(&format!("{label} kernel → guest"), w, &pcap_in, expect_gso);

    stage("kernel → guest checked");
    let w = capture(&dom0, domid, &pcap_out);
    let to_kernel = guest_to_kernel(&host, &mut nf, 0, 5002, total, &pattern);
    note(format!(
        "{label}: guest → kernel {} MB in {:.2}s = {:.2} Gbit/s",
        to_kernel.bytes / 1_000_000,
        to_kernel.secs,
        to_kernel.gbps()
    ));
    stage("guest → kernel transferred");
    assert_eq!(to_kernel.bytes, total, "{label}: guest → kernel byte count");
    assert!(
        to_kernel.digest == want,
        "{label}: guest → kernel stream differs (SHA-256)"
    );
    check_capture(&format!("{label} guest → kernel"), w, &pcap_out, None);

    stage("guest → kernel checked");
    let port = dom0.port.stats(vif(domid)).expect("port stats");
    let front = nf.stats();
    note(format!("{label}: {port:?}"));
    drop(nf);
    drop(dom0);
    stage("torn down");
    Outcome {
        to_guest,
        to_kernel,
        port,
        front,
    }
}

#[test]
fn tcp_both_ways_with_offloads() {
    if !root_or_skip("tcp_both_ways_with_offloads") {
        return;
    }
    let o = run(
        "offloads on",
        true,
        OffloadPolicy::Negotiated,
        PortIo::Default,
        bytes_each_way(),
    );
    assert_eq!(
        o.port.offloads,
        Offloads::CSUM | Offloads::TSO4 | Offloads::TSO6
    );
    // Super-frames crossed the TAP whole: the average frame read is far above the MTU.
    let avg = o.port.from_host_bytes / o.port.from_host_frames.max(1);
    assert!(
        avg > 8000,
        "average frame from the TAP {avg} bytes: no GSO? {:?}",
        o.port
    );
    // ... and reached the guest as GSO (netfront's average frame is as large).
    assert!(
        o.front.rx_bytes / o.front.rx_packets.max(1) > 8000,
        "{:?}",
        o.front
    );
    // Nothing had to be done in software, nothing was lost on the TAP.
    assert_eq!(
        o.port.to_guest_segmented + o.port.to_guest_csum_filled,
        0,
        "{:?}",
        o.port
    );
    assert_eq!(
        o.port.to_host_dropped + o.port.to_host_rejected + o.port.to_host_bad_offload,
        0
    );
    assert_eq!(o.port.to_guest_bad, 0);
    // The kernel's segments arrived checksum-blank (TSO over the TAP) and the guest
    // took them as they are, no pass over the data; the stream is still byte-exact.
    assert_eq!(o.front.rx_csum_bad, 0, "{:?}", o.front);
    // The guest's MSS-sized segments reached the kernel merged into GSO super-frames
    // (and still byte-exact, checked above).
    assert!(o.port.to_host_coalesced > 0, "{:?}", o.port);
    // Guest → host batches went through the TAP queue's io_uring, unless this kernel
    // refused it (then the port says why and wrote frame by frame).
    assert!(
        o.port.io_uring_queues > 0 || o.port.io_uring_unavailable.is_some(),
        "{:?}",
        o.port
    );
    let _ = (o.to_guest, o.to_kernel);
}

#[test]
fn tcp_both_ways_without_offloads() {
    if !root_or_skip("tcp_both_ways_without_offloads") {
        return;
    }
    let o = run(
        "offloads off",
        false,
        OffloadPolicy::Negotiated,
        // This run covers the TAP port's plain-writev path (io_uring off) and its
        // reader threads.
        PortIo::Plain,
        bytes_each_way(),
    );
    assert_eq!(o.port.offloads, Offloads::NONE);
    // io_uring was turned off for this run: no ring, and no complaint about it.
    assert_eq!(
        (o.port.io_uring_queues, &o.port.io_uring_unavailable),
        (0, &None)
    );
    // No frame above the MTU, none with a blank checksum for the guest.
    let avg = o.port.from_host_bytes / o.port.from_host_frames.max(1);
    assert!(avg <= 1514, "{:?}", o.port);
    assert_eq!(o.front.rx_csum_sw, 0, "{:?}", o.front);
    assert_eq!(o.front.rx_csum_bad, 0, "{:?}", o.front);
    assert_eq!(
        o.port.to_guest_segmented + o.port.to_guest_csum_filled,
        0,
        "{:?}",
        o.port
    );
    assert_eq!(
        o.port.to_host_dropped + o.port.to_host_rejected + o.port.to_host_bad_offload,
        0
    );
}

#[test]
fn tcp_software_fallback_when_the_guest_lacks_offloads() {
    if !root_or_skip("tcp_software_fallback_when_the_guest_lacks_offloads") {
        return;
    }
    let forced = Offloads::CSUM | Offloads::TSO4 | Offloads::TSO6;
    let o = run(
        "fallback",
        false,
        OffloadPolicy::Fixed(forced),
        PortIo::Default,
        bytes_each_way() / 4,
    );
    assert_eq!(o.port.offloads, forced);
    // The kernel handed over super-frames; netback cut them for the guest, which saw
    // only MTU-sized frames with complete checksums.
    assert!(
        o.port.to_guest_segmented > 0 && o.port.to_guest_segments > o.port.to_guest_segmented,
        "{:?}",
        o.port
    );
    assert!(
        o.front.rx_bytes / o.front.rx_packets.max(1) <= 1514,
        "{:?}",
        o.front
    );
    assert_eq!(
        o.front.rx_csum_sw, 0,
        "the guest got a blank checksum: {:?}",
        o.front
    );
    assert_eq!(o.port.to_guest_bad, 0);
}
