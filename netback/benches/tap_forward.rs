//! The TAP bridge in one run: the raw TAP write loop (the kernel's limit for this path),
//! netback → TAP forwarding at 64 B and 1514 B, and TCP through the whole path with
//! offloads next to kernel TCP over a veth pair.
//!
//! Run as root: `cargo bench -p netback --bench tap_forward`. Every namespace, bridge,
//! TAP and veth it uses is created here and removed on exit.
//!
//! Forwarding, in a fresh namespace without a bridge:
//! 1. raw: a plain loop writes frames to a TAP queue, one `writev` per frame (what
//!    `benches/tap.rs` measures; the reference);
//! 2. raw io_uring: the same loop submitting 64 writes per `io_uring_enter`, the way
//!    netback's TAP port writes (the stricter reference: the kernel's limit once the
//!    per-frame syscall is gone);
//! 3. via netback: an embedded guest's netfront sends the same frames as fast as its
//!    TX ring takes them; netback validates, grant-copies and hands each batch to the
//!    TAP port, which writes it to the vif's TAP.
//!
//! The frames go to a MAC nobody has, so the namespace's kernel drops every one after
//! receiving it: both numbers are the TAP write path, the second with netback in front.
//! The two alternate in short rounds and the summary is the median of the per-round
//! ratios: on a small shared machine the rate drifts by tens of percent within seconds,
//! and measuring the pair back to back is what makes the ratio mean something.
//!
//! TCP: a kernel socket on the namespace's bridge ⇄ TAP ⇄ netback ⇄ netfront ⇄ smoltcp,
//! MTU 1500, offloads on, each way; then kernel TCP over a veth pair between two fresh
//! namespaces with the same sender and receiver. Receivers do not hash here (as iperf3;
//! the `tapport_tcp` tests do). Kernel → guest and the veth pair run twice when the
//! kernel's default congestion control is not cubic: once with the default (bbr on
//! this machine: it keeps about twice the bandwidth × minimum RTT in flight, and the
//! minimum RTT of an idle path, ~40 µs, is far below the path's RTT under load, so it
//! is the more latency-bound sender) and once with cubic, Linux's stock default.
//! Path and veth legs alternate for `PVNET_TCP_ROUNDS` rounds; each row gives the
//! median, min and max, and what the transfer cost the whole machine in busy CPU
//! seconds per GB.
//!
//! Knobs: `PVNET_SIZES` (default `64,1514`), `PVNET_ROUNDS` (default 7), `PVNET_ROUND_MS` (default 1000),
//! `PVNET_TCP_BYTES` (default 2 GB; 0 skips TCP), `PVNET_TCP_ROUNDS` (default 5). Without `--bench` (e.g.
//! `cargo test --benches`) it does a short smoke run.

#[path = "../tests/tapport_common/mod.rs"]
mod tapport_common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use netback::tap::{Backpressure, Tap, TapBuilder, TxFrame, TxRing};
use netback::virtio_net_hdr::VirtioNetHdr;
use netfront::TxMeta;
use tapport_common::tcp::*;
use tapport_common::*;

const BATCH: usize = 64;
const SIZES: [usize; 2] = [64, 1514];

fn env_u64(k: &str) -> Option<u64> {
    std::env::var(k).ok().and_then(|v| v.parse().ok())
}

fn frame(size: usize, src: [u8; 6]) -> Vec<u8> {
    let mut f = vec![0u8; size];
    f[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x99]);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f
}

/// frames/s of a plain write loop on a TAP queue: one `writev` per frame, or (`ring`)
/// the same frames through an io_uring, 64 per syscall (what netback's TAP port does).
fn raw_rate(tap: &Tap, size: usize, run_for: Duration, ring: Option<&mut TxRing>) -> f64 {
    let q = &tap.queues()[0];
    let f = frame(size, [0x02, 0, 0, 0, 0, 0x02]);
    let segs: [&[u8]; 1] = [&f];
    let batch: Vec<TxFrame<'_>> = (0..BATCH)
        .map(|_| TxFrame {
            hdr: VirtioNetHdr::NONE,
            segs: &segs,
        })
        .collect();
    let before = q.stats().tx_frames;
    let start = Instant::now();
    match ring {
        None => {
            while start.elapsed() < run_for {
                q.write_batch(&batch, Backpressure::Drop).expect("write");
            }
        }
        Some(ring) => {
            while start.elapsed() < run_for {
                q.write_batch_ring(ring, &batch).expect("write");
            }
        }
    }
    (q.stats().tx_frames - before) as f64 / start.elapsed().as_secs_f64()
}

/// CPU seconds a thread of this process has used so far, found by its name (`comm`).
fn thread_cpu_secs(comm: &str) -> Option<f64> {
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let dir = task.ok()?.path();
        let name = std::fs::read_to_string(dir.join("comm")).ok()?;
        if name.trim_end() != comm {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
        // Fields after the ")" that closes comm: state is field 3, utime 14, stime 15.
        let rest = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split(' ').collect();
        let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        return Some(ticks as f64 / hz);
    }
    None
}

struct Forwarded {
    rate: f64,
    dropped: u64,
    /// Share of one CPU netback's TX thread used (1.0 = never idle).
    tx_busy: Option<f64>,
    /// Event-channel notifications netback sent per 1000 frames.
    notifies_per_k: f64,
}

/// frames/s reaching the TAP when a guest sends through netback.
fn forward_rate(
    dom0: &Dom0,
    nf: &mut Front,
    domid: u16,
    size: usize,
    run_for: Duration,
) -> Forwarded {
    let f = frame(size, guest_mac(0));
    let frames: Vec<&[u8]> = (0..BATCH).map(|_| &f[..]).collect();
    let stop = AtomicBool::new(false);
    let stats = || dom0.port.stats(vif(domid)).expect("stats");
    let tx_thread = format!("vif{domid}.0-q0-tx");
    let q = nf.queue(0).expect("queue");
    thread::scope(|s| {
        let sender = thread::Builder::new()
            .name("guest-tx".into())
            .spawn_scoped(s, || {
                while !stop.load(Ordering::Relaxed) {
                    if q.send_batch(&frames, TxMeta::default()) == 0 {
                        q.flush();
                        if q.reclaim() == 0 {
                            q.wait_tx(Some(Duration::from_millis(1)));
                        }
                    }
                }
                q.flush();
            })
            .expect("spawn the guest's sender");
        // Warm up, then measure what the TAP accepted.
        thread::sleep(run_for / 5);
        let before = stats();
        let notified = || {
            dom0.nb()
                .vif(vif(domid))
                .map_or(0, |i| i.counters.notify_sent)
        };
        let notified_before = notified();
        let cpu_before = thread_cpu_secs(&tx_thread);
        let start = Instant::now();
        thread::sleep(run_for);
        let after = stats();
        let notified_after = notified();
        let cpu_after = thread_cpu_secs(&tx_thread);
        let secs = start.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        sender.join().expect("sender");
        let frames = after.to_host_frames - before.to_host_frames;
        Forwarded {
            rate: frames as f64 / secs,
            notifies_per_k: (notified_after - notified_before) as f64 * 1000.0
                / frames.max(1) as f64,
            dropped: after.to_host_dropped - before.to_host_dropped,
            tx_busy: cpu_before.zip(cpu_after).map(|(b, a)| (a - b) / secs),
        }
    })
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn spread(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)))
}

fn forwarding(rounds: usize, run_for: Duration) {
    let host = HostNs::new("fwd");
    let dom0 = Dom0::new(&host, |c| c.bridge = None);
    let (domid, mut nf) = dom0.guest(0, front_cfg(true));
    let raw_tap = TapBuilder::new("pvraw0")
        .create_in_netns(&host.path())
        .expect("raw tap");
    let mut ring = match TxRing::new(&raw_tap.queues()[0]) {
        Ok(r) => Some(r),
        Err(e) => {
            println!("  (no io_uring here: {e}; netback writes frame by frame too)");
            None
        }
    };
    println!(
        "forwarding, one queue: {rounds} rounds of {run_for:?} per size, raw loops and netback back to back"
    );
    let sizes: Vec<usize> = match std::env::var("PVNET_SIZES") {
        Ok(v) => v.split(',').filter_map(|x| x.trim().parse().ok()).collect(),
        Err(_) => SIZES.to_vec(),
    };
    for size in sizes {
        assert!(
            (60..=9000).contains(&size),
            "PVNET_SIZES: frame sizes are 60-9000 B"
        );
        let (mut raws, mut fwds, mut ratios, mut busy) = (vec![], vec![], vec![], vec![]);
        let (mut uring_raws, mut uring_ratios) = (vec![], vec![]);
        let mut notifies = vec![];
        let mut dropped = 0;
        for _ in 0..rounds {
            let raw = raw_rate(&raw_tap, size, run_for, None);
            let fwd = forward_rate(&dom0, &mut nf, domid, size, run_for);
            if let Some(r) = ring.as_mut() {
                let u = raw_rate(&raw_tap, size, run_for, Some(r));
                uring_ratios.push(fwd.rate / u);
                uring_raws.push(u);
            }
            ratios.push(fwd.rate / raw);
            raws.push(raw);
            fwds.push(fwd.rate);
            dropped += fwd.dropped;
            busy.extend(fwd.tx_busy);
            notifies.push(fwd.notifies_per_k);
        }
        let (rlo, rhi) = spread(&ratios);
        let gbit = |r: f64| r * size as f64 * 8.0 / 1e9;
        let (raw, fwd) = (median(&mut raws), median(&mut fwds));
        println!(
            "  {size:>5} B: raw {raw:>8.0} frames/s ({:>5.2} Gbit/s)  via netback {fwd:>8.0} frames/s ({:>5.2} Gbit/s)  ratio {:.2} (rounds {rlo:.2}–{rhi:.2})  netback TX thread busy {}  notifies/1000 frames {:.1}  dropped at the TAP {dropped}",
            gbit(raw),
            gbit(fwd),
            median(&mut ratios),
            if busy.is_empty() {
                "?".to_string()
            } else {
                format!("{:.0}%", median(&mut busy) * 100.0)
            },
            median(&mut notifies),
        );
        if !uring_raws.is_empty() {
            let (ulo, uhi) = spread(&uring_ratios);
            let u = median(&mut uring_raws);
            println!(
                "  {size:>5} B: raw io_uring loop {u:>8.0} frames/s ({:>5.2} Gbit/s)  netback / that {:.2} (rounds {ulo:.2}–{uhi:.2})",
                gbit(u),
                median(&mut uring_ratios),
            );
        }
    }
}

/// The rates and costs of one TCP leg over the rounds.
struct Leg {
    label: String,
    gbps: Vec<f64>,
    /// Busy CPU seconds of the whole machine per GB moved.
    cpu_per_gb: Vec<f64>,
}

impl Leg {
    fn new(label: String) -> Self {
        Self {
            label,
            gbps: Vec::new(),
            cpu_per_gb: Vec::new(),
        }
    }

    /// Runs `transfer` once and records its rate and cost.
    fn run(&mut self, total: u64, transfer: impl FnOnce() -> Transfer) {
        let before = machine_busy_secs();
        let t = transfer();
        let after = machine_busy_secs();
        assert_eq!(t.bytes, total, "{}: short transfer", self.label);
        self.gbps.push(t.gbps());
        if let (Some(b), Some(a)) = (before, after) {
            self.cpu_per_gb.push((a - b) / (t.bytes as f64 / 1e9));
        }
    }

    fn median_gbps(&self) -> f64 {
        median(&mut self.gbps.clone())
    }

    fn print(&self, peer: &Leg) {
        let (lo, hi) = spread(&self.gbps);
        let cpu = if self.cpu_per_gb.is_empty() {
            String::new()
        } else {
            format!("{:.2} CPU-s/GB", median(&mut self.cpu_per_gb.clone()))
        };
        println!(
            "  {:<40} {:>6.2} Gbit/s ({:>5.2}–{:>5.2}), {:.2}× the veth pair, {cpu}",
            self.label,
            self.median_gbps(),
            lo,
            hi,
            self.median_gbps() / peer.median_gbps(),
        );
    }
}

fn tcp(total: u64, rounds: usize) {
    let default_cc = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_congestion_control")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into());
    println!(
        "TCP, MTU 1500, guest offloads on, {} MB per transfer (receivers do not hash), {rounds} rounds, median (min–max); kernel senders with this kernel's default congestion control ({default_cc}) and with cubic (Linux's stock default); CPU: busy seconds of the whole machine per GB",
        total / 1_000_000
    );
    let ccs: &[Option<&'static str>] = if default_cc == "cubic" {
        &[None]
    } else {
        &[None, Some("cubic")]
    };
    for &cc in ccs {
        let mut pattern = Pattern::new(0xbeef);
        pattern.verify = false;
        pattern.sender_cc = cc;
        let name = cc.unwrap_or(&default_cc);
        let mut to_guest = Leg::new(format!("kernel → TAP → netback → guest ({name})"));
        let mut from_guest = Leg::new("guest → netback → TAP → kernel".to_string());
        let mut peer = Leg::new(format!("kernel → veth → kernel ({name}, peer)"));
        let host = HostNs::new("tcpbench");
        let dom0 = Dom0::new(&host, |_| {});
        let (_, mut nf) = dom0.guest(0, front_cfg(true));
        // The path and the veth pair alternate, so a slow spell of the machine hits
        // both sides of the comparison.
        for r in 0..rounds {
            let port = 5100 + 2 * r as u16;
            to_guest.run(total, || {
                kernel_to_guest(&host, &mut nf, 0, port, total, &pattern)
            });
            // The guest sends with smoltcp: the kernel's congestion control does not
            // apply; measured with the default only.
            if cc.is_none() {
                from_guest.run(total, || {
                    guest_to_kernel(&host, &mut nf, 0, port + 1, total, &pattern)
                });
            }
            peer.run(total, || veth(total, &pattern));
        }
        to_guest.print(&peer);
        if !from_guest.gbps.is_empty() {
            from_guest.print(&peer);
        }
        peer.print(&peer);
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    if !root_or_skip("tap_forward bench") {
        return;
    }
    let rounds = env_u64("PVNET_ROUNDS")
        .unwrap_or(if full { 7 } else { 1 })
        .max(1) as usize;
    let run_for =
        Duration::from_millis(env_u64("PVNET_ROUND_MS").unwrap_or(if full { 1000 } else { 100 }));
    let tcp_bytes =
        env_u64("PVNET_TCP_BYTES").unwrap_or(if full { 2_000_000_000 } else { 20_000_000 });
    forwarding(rounds, run_for);
    let tcp_rounds = env_u64("PVNET_TCP_ROUNDS")
        .unwrap_or(if full { 5 } else { 1 })
        .max(1) as usize;
    if tcp_bytes > 0 {
        tcp(tcp_bytes, tcp_rounds);
    }
}
