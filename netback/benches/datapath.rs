//! Data-path throughput on the embedded hypervisor, one queue pair: a guest thread
//! (the test frontend, tests/common) drives netback as fast as it can.
//! `cargo bench -p netback --bench datapath` prints Mpps / Gbit/s per scenario.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use hv::abi::netif::*;
use hv::env::EventChannel;
use netback::{OffloadMeta, Sink, Source};

const RUN: Duration = Duration::from_secs(2);

/// Guest → Dom0 sink: keep the TX ring full of packets of `data_slots` slots.
fn tx_to_sink(len: usize, gso: bool) {
    let sink = Sink::new();
    let w = World::new(sink.clone());
    let (_, env) = w.add_guest(0, MAC_A);
    let mut f = TestFront::connect(
        &w,
        env,
        0,
        FrontOpts {
            split: true,
            ..Default::default()
        },
    );
    let frame = eth_frame(MAC_B, MAC_A, len, 1);
    // Build one packet's requests once (pages written once, reused).
    let chunks: Vec<&[u8]> = frame.chunks(4096).collect();
    let mut pkt = Vec::new();
    for (i, c) in chunks.iter().enumerate() {
        let page = &f.queues[0].tx_bufs[i];
        // SAFETY: the page is ours, granted read-only to Dom0, not yet published.
        unsafe { std::ptr::copy_nonoverlapping(c.as_ptr(), page.ptr.as_ptr(), c.len()) };
        let mut fl = if i + 1 < chunks.len() {
            NETTXF_MORE_DATA
        } else {
            0
        };
        if i == 0 && gso {
            fl |= NETTXF_EXTRA_INFO | NETTXF_CSUM_BLANK;
        }
        let size = if i == 0 { len as u16 } else { c.len() as u16 };
        pkt.push(NetifTxRequest {
            gref: page.gref,
            offset: 0,
            flags: fl,
            id: i as u16,
            size,
        });
        if i == 0 && gso {
            let g = NetifExtraGso {
                size: 1448,
                ty: XEN_NETIF_GSO_TYPE_TCPV4,
                pad: 0,
                features: 0,
            };
            pkt.push(NetifExtraInfo::new_gso(g, 0).to_tx_slot());
        }
    }
    let q = &mut f.queues[0];
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < RUN {
        let _ = q.tx.take_responses().map(|r| r.count());
        let mut n = 0;
        while q.tx.free_requests() as usize >= pkt.len() {
            for r in &pkt {
                let _ = q.tx.produce_request(*r);
            }
            n += 1;
        }
        sent += n;
        if n > 0 && q.tx.push_requests_and_check_notify() {
            q.tx_chan.notify();
        }
        if n == 0 && !q.tx.final_check_for_responses() {
            q.tx_chan.wait(Some(Duration::from_millis(1)));
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let got = sink.packets();
    println!(
        "guest->sink {len:>5} B{}: {:.2} Mpps, {:.2} Gbit/s (published {sent}, delivered {got})",
        if gso { " GSO" } else { "" },
        got as f64 / secs / 1e6,
        sink.bytes() as f64 * 8.0 / secs / 1e9
    );
}

/// Dom0 generator → guest: keep the RX ring full of posted buffers.
fn source_to_guest(len: usize, gso: bool) {
    let meta = OffloadMeta {
        csum_blank: gso,
        data_validated: gso,
        gso: gso.then_some(netback::Gso {
            ty: netback::GsoType::TcpV4,
            size: 1448,
        }),
    };
    let src = Source::new(vec![(eth_frame(MAC_A, MAC_DOM0, len, 2), meta)], None);
    let w = World::new(src.clone() as Arc<dyn netback::Port>);
    let (_, env) = w.add_guest(0, MAC_A);
    let mut f = TestFront::connect(
        &w,
        env,
        0,
        FrontOpts {
            split: true,
            rx_buffers: 256,
            ..Default::default()
        },
    );
    let bufs = 256.min(f.queues[0].rx_bufs.len());
    let q = &mut f.queues[0];
    let grefs: Vec<u32> = q.rx_bufs.iter().map(|p| p.gref).collect();
    // Connect posted ids 0..256 in ring order; request k always carries id k % 256, so
    // a response frees the buffer to repost as the next id in sequence.
    let mut next = bufs;
    let post = |q: &mut FrontQueue, k: usize, next: &mut usize| {
        for _ in 0..k {
            let id = (*next % bufs) as u16;
            let _ = q.rx.produce_request(NetifRxRequest {
                id,
                pad: 0,
                gref: grefs[id as usize],
            });
            *next += 1;
        }
    };
    let start = Instant::now();
    let (mut pkts, mut bytes) = (0u64, 0u64);
    let mut extra_next = false;
    while start.elapsed() < RUN {
        let mut consumed = 0;
        if let Ok(rs) = q.rx.take_responses() {
            for r in rs {
                consumed += 1;
                if extra_next {
                    extra_next = false;
                    continue;
                }
                if r.status > 0 {
                    bytes += r.status as u64;
                }
                if r.flags & NETRXF_EXTRA_INFO != 0 {
                    extra_next = true;
                }
                if r.flags & NETRXF_MORE_DATA == 0 && !extra_next {
                    pkts += 1;
                }
            }
        }
        if consumed > 0 {
            post(q, consumed, &mut next);
            if q.rx.push_requests_and_check_notify() {
                q.rx_chan.as_ref().unwrap().notify();
            }
        } else if !q.rx.final_check_for_responses() {
            q.rx_chan
                .as_ref()
                .unwrap()
                .wait(Some(Duration::from_millis(1)));
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "source->guest {len:>5} B{}: {:.2} Mpps, {:.2} Gbit/s",
        if gso { " GSO" } else { "" },
        pkts as f64 / secs / 1e6,
        bytes as f64 * 8.0 / secs / 1e9
    );
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument filters nothing here.
    tx_to_sink(64, false);
    tx_to_sink(65535, true);
    source_to_guest(64, false);
    source_to_guest(65535, true);
}
