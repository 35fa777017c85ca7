//! netfront data-path cost against a trivial consumer on the embedded hypervisor.
//!
//! - `tx/send64+reclaim`: 64-byte frames, batches of 64, answered inline by a consumer
//!   that only writes responses (no copy): the frontend's own per-frame cost.
//! - `tx/send64k_gso+reclaim`: 64 KiB GSO frames copied into the granted pages.
//! - `tx/threaded_64`: a consumer thread answers while the frontend sends (pps).
//! - `rx/recv64`: 64-byte frames posted inline by a consumer (responses only), consumed
//!   with `recv_with` and the buffers reposted.

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hv::abi::netif::{NetifRxResponse, NetifTxResponse, NETIF_RSP_OKAY};
use hv::env::{BackendEnv, EventChannel};
use hv::toolstack::backend_path;
use netfront::{Gso, GsoType, Netfront, NetfrontConfig, TxMeta};

fn connect() -> (
    hv::embedded::Hypervisor,
    Netfront<hv::embedded::EmbeddedGuestEnv>,
    VifBack,
) {
    let (hv, doms) = setup(1);
    let d = doms[0];
    let benv = hv.backend_env().unwrap();
    announce(benv.store(), &backend_path(0, d, 0), &BackOpts::default());
    let back = thread::spawn(move || accept(&benv, d, 0));
    let nf = Netfront::connect(
        hv.guest_env(d).unwrap(),
        NetfrontConfig {
            tx_batch: 64,
            ..Default::default()
        },
    )
    .unwrap();
    (hv, nf, back.join().unwrap())
}

/// Answer every pending TX request OKAY without touching its data.
fn answer_all(tx: &mut TxBack) {
    let n = tx
        .ring
        .take_requests()
        .map(|r| r.map(|q| q.id).collect::<Vec<_>>())
        .unwrap_or_default();
    for id in n {
        let _ = tx.ring.produce_response(NetifTxResponse {
            id,
            status: NETIF_RSP_OKAY,
        });
    }
    tx.push();
}

fn tcp4(len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[12] = 0x08;
    let ip_total = (len - 14) as u16;
    f[14..34].copy_from_slice(&[
        0x45,
        0,
        (ip_total >> 8) as u8,
        ip_total as u8,
        0,
        1,
        0x40,
        0,
        64,
        6,
        0,
        0,
        10,
        0,
        0,
        1,
        10,
        0,
        0,
        2,
    ]);
    f[46] = 0x50;
    f
}

fn bench_tx(c: &mut Criterion) {
    let (_hv, mut nf, mut vif) = connect();
    let mut g = c.benchmark_group("tx");
    let frame = [0x5au8; 64];
    g.throughput(Throughput::Elements(64));
    g.bench_function("send64+reclaim", |b| {
        let q = nf.queue(0).unwrap();
        let tx = &mut vif.queues[0].tx;
        b.iter(|| {
            for _ in 0..64 {
                q.send(black_box(&frame), TxMeta::default()).unwrap();
            }
            q.flush();
            answer_all(tx);
            q.reclaim();
        })
    });
    let big = tcp4(65535);
    let gso = TxMeta {
        gso: Some(Gso {
            ty: GsoType::TcpV4,
            size: 1448,
        }),
        ..Default::default()
    };
    g.throughput(Throughput::Bytes(65535 * 8));
    g.bench_function("send64k_gso+reclaim", |b| {
        let q = nf.queue(0).unwrap();
        let tx = &mut vif.queues[0].tx;
        b.iter(|| {
            for _ in 0..8 {
                q.send(black_box(&big), gso).unwrap();
            }
            q.flush();
            answer_all(tx);
            q.reclaim();
        })
    });

    // A consumer thread: answers requests as they come, sleeping when idle.
    let q0 = vif.queues.remove(0);
    let mut txb = q0.tx;
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    let consumer = thread::spawn(move || {
        while !st.load(Ordering::Relaxed) {
            answer_all(&mut txb);
            if !txb.ring.final_check_for_requests() {
                txb.chan.wait(Some(Duration::from_millis(1)));
            }
        }
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("threaded_64", |b| {
        let q = nf.queue(0).unwrap();
        b.iter_custom(|iters| {
            let t = Instant::now();
            let mut n = 0;
            while n < iters {
                match q.send(&frame, TxMeta::default()) {
                    Ok(()) => n += 1,
                    Err(_) => {
                        q.wait_tx(Some(Duration::from_millis(1)));
                    }
                }
            }
            q.flush();
            t.elapsed()
        })
    });
    g.finish();
    stop.store(true, Ordering::Relaxed);
    consumer.join().unwrap();
    let st = nf.stats();
    eprintln!(
        "tx notifications: {} sent, {} suppressed; busy {}",
        st.tx_notify_sent, st.tx_notify_suppressed, st.tx_busy
    );
    let _ = q0.rx.chan.port();
}

fn bench_rx(c: &mut Criterion) {
    let (_hv, mut nf, mut vif) = connect();
    let mut g = c.benchmark_group("rx");
    g.throughput(Throughput::Elements(64));
    g.bench_function("recv64", |b| {
        let q = nf.queue(0).unwrap();
        let rx = &mut vif.queues[0].rx;
        b.iter(|| {
            // Consumer: fill 64 posted buffers (responses only; the data is whatever
            // the page holds), then the frontend takes them and reposts.
            for _ in 0..64 {
                let cons = rx.ring.req_cons();
                let req = rx.ring.copy_request(cons);
                rx.ring.set_req_cons(cons.wrapping_add(1));
                let _ = rx.ring.produce_response(NetifRxResponse {
                    id: req.id,
                    offset: 0,
                    flags: 0,
                    status: 64,
                });
            }
            rx.push();
            let mut sum = 0usize;
            while let Some(n) =
                q.recv_with(|f, _| f.contiguous().map_or(0, |s| s[0] as usize + s.len()))
            {
                sum += n;
            }
            black_box(sum);
        })
    });
    g.finish();
}

criterion_group!(benches, bench_tx, bench_rx);
criterion_main!(benches);
