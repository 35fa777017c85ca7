//! TCP throughput through the whole path, kernel ⇄ bridge ⇄ TAP ⇄ netback ⇄ netfront ⇄
//! smoltcp, both directions with offloads, next to kernel TCP over a veth pair between
//! two namespaces (the same sender, receiver and byte-exact check on both).
//!
//! Run as root: `cargo run --release -p netback --example tap_tcp [-- BYTES]`
//! (default 1 GB each way). `PVNET_GUEST_OFFLOADS=0` turns the guest's offloads off;
//! `PVNET_MTU=N` sets the TAP/bridge MTU and the guest's MTU (jumbo frames);
//! `PVNET_VERIFY=0` skips the receivers' SHA-256 (pure throughput, as iperf3 measures;
//! the tests always verify); `PVNET_ONLY=to-guest|from-guest|veth` runs one leg;
//! `PVNET_IO_URING=0` makes the TAP port write frame by frame;
//! `PVNET_TAP_READER_THREADS=1` reads the TAP in a thread per queue instead of in
//! netback's RX thread; `PVNET_CC=cubic|bbr|reno` sets the kernel senders' congestion
//! control (default: the kernel's); `PVNET_BUSY_POLL` / `PVNET_GUEST_BUSY_POLL` set
//! netback's / the guest's most poll rounds. Each leg also prints what it cost the
//! machine in busy CPU seconds per GB.

#[path = "../tests/tapport_common/mod.rs"]
mod tapport_common;

use tapport_common::tcp::*;
use tapport_common::*;

fn env_u64(k: &str) -> Option<u64> {
    std::env::var(k).ok().and_then(|v| v.parse().ok())
}

/// Runs one leg and prints its rate and what it cost the machine (busy CPU seconds,
/// all CPUs, per GB moved; setup included, so short runs read a little high).
fn measure(label: &str, want: Option<&[u8; 32]>, total: u64, run: impl FnOnce() -> Transfer) {
    let before = machine_busy_secs();
    let t = run();
    let cpu = match (before, machine_busy_secs()) {
        (Some(a), Some(b)) => format!("{:.2} CPU-s/GB", (b - a) / (t.bytes as f64 / 1e9)),
        _ => String::new(),
    };
    show(label, &t, want, total, &cpu);
}

fn show(label: &str, t: &Transfer, want: Option<&[u8; 32]>, total: u64, cpu: &str) {
    let verified = want.is_some();
    let ok = t.bytes == total && want.is_none_or(|w| &t.digest == w);
    println!(
        "  {label:<34} {:>6} MB in {:>6.2}s = {:>6.2} Gbit/s  {:<13} {cpu}",
        t.bytes / 1_000_000,
        t.secs,
        t.gbps(),
        match (ok, verified) {
            (true, true) => "byte-exact",
            (true, false) => "(not hashed)",
            (false, _) => "MISMATCH",
        }
    );
    assert!(ok, "{label}: stream differs");
}

fn main() {
    if !root_or_skip("tap_tcp example") {
        return;
    }
    let total = std::env::args()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000_000u64);
    let offloads = env_u64("PVNET_GUEST_OFFLOADS") != Some(0);
    let mtu = env_u64("PVNET_MTU").map(|m| m as u32);
    let mut pattern = Pattern::new(0xbeef);
    pattern.verify = env_u64("PVNET_VERIFY") != Some(0);
    // The kernel senders' congestion control (e.g. cubic, Linux's stock default).
    let cc = std::env::var("PVNET_CC").ok();
    pattern.sender_cc = cc.map(|c| &*Box::leak(c.into_boxed_str()));
    let digest = if pattern.verify {
        pattern.digest(total)
    } else {
        [0; 32]
    };
    let want = pattern.verify.then_some(&digest);
    println!(
        "TCP, {} MB each way, guest offloads {}, MTU {}",
        total / 1_000_000,
        if offloads { "on" } else { "off" },
        mtu.unwrap_or(1500)
    );

    let host = HostNs::new("tcpbench");
    if let Some(m) = mtu {
        host.ip(&["link", "set", BRIDGE, "mtu", &m.to_string()]);
    }
    let io_uring = env_u64("PVNET_IO_URING") != Some(0);
    let dom0 = Dom0::new(&host, |c| {
        c.mtu = mtu;
        c.tx_io_uring = io_uring;
    });
    let mut cfg = front_cfg(offloads);
    if let Some(m) = mtu {
        cfg.mtu = m as usize + 14;
    }
    let (domid, mut nf) = dom0.guest(0, cfg);
    // PVNET_ONLY=to-guest|from-guest|veth runs one leg (for profiling).
    let only = std::env::var("PVNET_ONLY").ok();
    let leg = |name: &str| only.as_deref().is_none_or(|o| o == name);
    if leg("to-guest") {
        measure("kernel → TAP → netback → guest", want, total, || {
            kernel_to_guest(&host, &mut nf, 0, 5001, total, &pattern)
        });
    }
    if leg("from-guest") {
        measure("guest → netback → TAP → kernel", want, total, || {
            guest_to_kernel(&host, &mut nf, 0, 5002, total, &pattern)
        });
    }
    if let Some(st) = dom0.port.stats(vif(domid)) {
        println!(
            "  TAP: {} frames read ({} B avg), {} written ({} B avg), offloads {:?}",
            st.from_host_frames,
            st.from_host_bytes / st.from_host_frames.max(1),
            st.to_host_frames,
            st.to_host_bytes / st.to_host_frames.max(1),
            st.offloads
        );
    }
    let g = nf.stats();
    println!(
        "  guest: {} frames received, {} multi-page ones staged (not in place), {} checksums verified, {} bad",
        g.rx_packets, g.rx_staged, g.rx_csum_verified, g.rx_csum_bad
    );
    drop(nf);
    drop(dom0);
    drop(host);
    if leg("veth") {
        measure("kernel → veth → kernel (baseline)", want, total, || {
            veth(total, &pattern)
        });
    }
}
