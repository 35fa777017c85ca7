//! Raw TAP write rate: frames/s that one queue fd accepts from a plain loop.
//!
//! Run as root: `cargo bench -p netback --bench tap`. The TAP lives in a fresh network
//! namespace and the frames are addressed to a MAC nobody has, so the namespace's kernel
//! receives and drops each one (PACKET_OTHERHOST): the number measures the write path
//! (syscall + skb build + receive), not any forwarding. Without `--bench` (e.g. under
//! `cargo test --benches`) it does a short smoke run.

use std::process::Command;
use std::time::{Duration, Instant};

use netback::tap::{netns_path, Backpressure, TapBuilder, TxFrame};
use netback::virtio_net_hdr::VirtioNetHdr;

const BATCH: usize = 64;

struct Ns(String);

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        if std::env::var("PVNET_SKIP_ROOT_TESTS").as_deref() == Ok("1") {
            eprintln!("tap bench: not run: needs root and PVNET_SKIP_ROOT_TESTS=1 is set");
            return;
        }
        eprintln!("tap bench needs root to create a network namespace and a TAP (or set PVNET_SKIP_ROOT_TESTS=1)");
        std::process::exit(1);
    }
    let ns = Ns(format!("pvnet-test-bench-{}", std::process::id()));
    let ok = Command::new("ip")
        .args(["netns", "add", &ns.0])
        .status()
        .map(|s| s.success());
    if !matches!(ok, Ok(true)) {
        eprintln!("tap bench: `ip netns add {}` failed", ns.0);
        std::process::exit(1);
    }
    let tap = match TapBuilder::new("pvbench0").create_in_netns(&netns_path(&ns.0)) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("tap bench: {e}");
            std::process::exit(1);
        }
    };
    let q = &tap.queues()[0];
    let run_for = if full {
        Duration::from_secs(3)
    } else {
        Duration::from_millis(100)
    };

    println!("tap write rate, one queue, batches of {BATCH}, {run_for:?} per size");
    for size in [64usize, 1514] {
        // dst 02:00:00:00:00:99 (nobody), src 02:00:00:00:00:02, IPv4 ethertype, zero body.
        let mut frame = vec![0u8; size];
        frame[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x99]);
        frame[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x02]);
        frame[12..14].copy_from_slice(&[0x08, 0x00]);
        let segs: [&[u8]; 1] = [&frame];
        let batch: Vec<TxFrame<'_>> = (0..BATCH)
            .map(|_| TxFrame {
                hdr: VirtioNetHdr::NONE,
                segs: &segs,
            })
            .collect();
        let before = q.stats();
        let start = Instant::now();
        while start.elapsed() < run_for {
            if let Err(e) = q.write_batch(&batch, Backpressure::Drop) {
                eprintln!("tap bench: {e}");
                std::process::exit(1);
            }
        }
        let secs = start.elapsed().as_secs_f64();
        let after = q.stats();
        let frames = after.tx_frames - before.tx_frames;
        let bytes = after.tx_bytes - before.tx_bytes;
        println!(
            "  {size:>5} B frames: {:>10.0} frames/s  {:>8.1} MB/s  (dropped by backpressure: {}, rejected: {})",
            frames as f64 / secs,
            bytes as f64 / secs / 1e6,
            after.tx_dropped - before.tx_dropped,
            after.tx_errors - before.tx_errors,
        );
    }
    drop(tap);
}
