//! netback → TAP forwarding rate, against the raw TAP write loop.
//!
//! Run as root: `cargo bench -p netback --bench tap_forward`. In a fresh network
//! namespace:
//! 1. raw: a plain loop writes 64 B / 1514 B frames to a TAP queue in batches of 64
//!    (what `benches/tap.rs` measures);
//! 2. forwarding: an embedded guest's netfront sends the same frames as fast as its
//!    TX ring takes them; netback validates, grant-copies and hands each batch to the
//!    TAP port, which writes it to the vif's TAP.
//!
//! The frames go to a MAC nobody has, so the namespace's kernel drops every one after
//! receiving it: both numbers are the TAP write path, the second with netback in
//! front. Without `--bench` (e.g. `cargo test --benches`) it does a short smoke run.

#[path = "../tests/tapport_common/mod.rs"]
mod tapport_common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use netback::tap::{Backpressure, TapBuilder, TxFrame};
use netback::virtio_net_hdr::VirtioNetHdr;
use netfront::TxMeta;
use tapport_common::*;

const BATCH: usize = 64;
const SIZES: [usize; 2] = [64, 1514];

fn frame(size: usize, src: [u8; 6]) -> Vec<u8> {
    let mut f = vec![0u8; size];
    f[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x99]);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f
}

/// frames/s of a plain write loop on a TAP queue.
fn raw_rate(host: &HostNs, size: usize, run_for: Duration) -> f64 {
    let tap = TapBuilder::new("pvraw0")
        .create_in_netns(&host.path())
        .expect("raw tap");
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
    while start.elapsed() < run_for {
        q.write_batch(&batch, Backpressure::Drop).expect("write");
    }
    (q.stats().tx_frames - before) as f64 / start.elapsed().as_secs_f64()
}

/// frames/s reaching the TAP when a guest sends through netback.
fn forward_rate(
    dom0: &Dom0,
    nf: &mut Front,
    domid: u16,
    size: usize,
    run_for: Duration,
) -> (f64, u64) {
    let f = frame(size, guest_mac(0));
    let frames: Vec<&[u8]> = (0..BATCH).map(|_| &f[..]).collect();
    let stop = AtomicBool::new(false);
    let stats = || dom0.port.stats(vif(domid)).expect("stats");
    let q = nf.queue(0).expect("queue");
    thread::scope(|s| {
        let sender = s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                if q.send_batch(&frames, TxMeta::default()) == 0 {
                    q.flush();
                    if q.reclaim() == 0 {
                        q.wait_tx(Some(Duration::from_millis(1)));
                    }
                }
            }
            q.flush();
        });
        // Warm up, then measure what the TAP accepted.
        thread::sleep(run_for / 5);
        let before = stats();
        let start = Instant::now();
        thread::sleep(run_for);
        let after = stats();
        let secs = start.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        sender.join().expect("sender");
        (
            (after.to_host_frames - before.to_host_frames) as f64 / secs,
            after.to_host_dropped - before.to_host_dropped,
        )
    })
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    if !root_or_skip("tap_forward bench") {
        return;
    }
    let run_for = if full {
        Duration::from_secs(3)
    } else {
        Duration::from_millis(200)
    };
    let host = HostNs::new("fwd");
    let dom0 = Dom0::new(&host, |c| c.bridge = None);
    let (domid, mut nf) = dom0.guest(0, front_cfg(true));
    println!("netback → TAP forwarding vs a raw TAP write loop, one queue, {run_for:?} per size");
    for size in SIZES {
        let raw = raw_rate(&host, size, run_for);
        let (fwd, dropped) = forward_rate(&dom0, &mut nf, domid, size, run_for);
        println!(
            "  {size:>5} B: raw {:>9.0} frames/s ({:>6.2} Gbit/s)   via netback {:>9.0} frames/s ({:>6.2} Gbit/s)   ratio {:.2}   (dropped at the TAP: {dropped})",
            raw,
            raw * size as f64 * 8.0 / 1e9,
            fwd,
            fwd * size as f64 * 8.0 / 1e9,
            fwd / raw
        );
    }
}
