//! smoltcp TCP between two netfront devices (two guests), their rings cross-connected
//! by the test backend: 10 MB must arrive byte-exact.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use hv::env::BackendEnv;
use hv::toolstack::backend_path;
use netfront::{Netfront, NetfrontConfig};
use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::phy::Device;
use smoltcp::socket::tcp;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, Ipv4Address};

const TOTAL: usize = 10 * 1024 * 1024;
const PORT: u16 = 5001;

/// Byte `i` of the stream.
fn byte_at(i: usize) -> u8 {
    (i.wrapping_mul(31) ^ (i >> 11)) as u8
}

fn run(
    cfg_a: NetfrontConfig,
    cfg_b: NetfrontConfig,
) -> (netfront::CounterSnapshot, netfront::CounterSnapshot) {
    let (hv, doms) = setup(2);
    let (da, db) = (doms[0], doms[1]);
    let benv = Arc::new(hv.backend_env().unwrap());
    for d in [da, db] {
        announce(benv.store(), &backend_path(0, d, 0), &BackOpts::default());
    }
    let acc = {
        let benv = benv.clone();
        thread::spawn(move || (accept(&benv, da, 0), accept(&benv, db, 0)))
    };
    let (mut nfa, mut nfb) = thread::scope(|s| {
        let a = s.spawn(|| Netfront::connect(hv.guest_env(da).unwrap(), cfg_a).expect("connect a"));
        let b = s.spawn(|| Netfront::connect(hv.guest_env(db).unwrap(), cfg_b).expect("connect b"));
        (a.join().unwrap(), b.join().unwrap())
    });
    let (mut va, mut vb) = acc.join().unwrap();
    let (qa, qb) = (va.queues.remove(0), vb.queues.remove(0));
    let stop = Arc::new(AtomicBool::new(false));
    let pumps = [
        {
            let (e, st) = (benv.clone(), stop.clone());
            thread::spawn(move || drop(pump(&e, qa.tx, da, qb.rx, db, st)))
        },
        {
            let (e, st) = (benv.clone(), stop.clone());
            thread::spawn(move || drop(pump(&e, qb.tx, db, qa.rx, da, st)))
        },
    ];

    let start = Instant::now();
    let now = move || smoltcp::time::Instant::from_micros(start.elapsed().as_micros() as i64);
    let (mac_a, mac_b) = (nfa.mac(), nfb.mac());
    let deadline = Duration::from_secs(120);
    thread::scope(|s| {
        // Server on B: receive and check every byte.
        let qb = nfb.queue(0).unwrap();
        s.spawn(move || {
            let mut iface = iface_for(qb, mac_b, [10, 0, 0, 2], now());
            let mut sockets = SocketSet::new(vec![]);
            let mut sock = tcp::Socket::new(
                tcp::SocketBuffer::new(vec![0; 1 << 20]),
                tcp::SocketBuffer::new(vec![0; 1 << 16]),
            );
            sock.listen(PORT).unwrap();
            let h = sockets.add(sock);
            let mut got = 0usize;
            while got < TOTAL {
                assert!(start.elapsed() < deadline, "server stalled at {got} bytes");
                iface.poll(now(), qb, &mut sockets);
                let sock = sockets.get_mut::<tcp::Socket>(h);
                while sock.can_recv() {
                    let n = sock
                        .recv(|buf| {
                            for (k, &b) in buf.iter().enumerate() {
                                assert_eq!(b, byte_at(got + k), "byte {} differs", got + k);
                            }
                            (buf.len(), buf.len())
                        })
                        .unwrap();
                    got += n;
                }
                if got < TOTAL {
                    let d = iface
                        .poll_delay(now(), &sockets)
                        .map(|d| d.into())
                        .unwrap_or(Duration::from_millis(5));
                    qb.wait(Some(d.min(Duration::from_millis(5))));
                }
            }
            assert_eq!(got, TOTAL);
            // Let the final ACKs out.
            for _ in 0..50 {
                iface.poll(now(), qb, &mut sockets);
                qb.wait(Some(Duration::from_millis(1)));
            }
        });
        // Client on A: send the stream.
        let qa = nfa.queue(0).unwrap();
        s.spawn(move || {
            let mut iface = iface_for(qa, mac_a, [10, 0, 0, 1], now());
            let mut sockets = SocketSet::new(vec![]);
            let sock = tcp::Socket::new(
                tcp::SocketBuffer::new(vec![0; 1 << 16]),
                tcp::SocketBuffer::new(vec![0; 1 << 20]),
            );
            let h = sockets.add(sock);
            sockets
                .get_mut::<tcp::Socket>(h)
                .connect(
                    iface.context(),
                    (Ipv4Address::new(10, 0, 0, 2), PORT),
                    49152,
                )
                .unwrap();
            let mut sent = 0usize;
            loop {
                assert!(start.elapsed() < deadline, "client stalled at {sent} bytes");
                iface.poll(now(), qa, &mut sockets);
                let sock = sockets.get_mut::<tcp::Socket>(h);
                while sent < TOTAL && sock.can_send() {
                    let n = sock
                        .send(|buf| {
                            let n = buf.len().min(TOTAL - sent);
                            for (k, b) in buf[..n].iter_mut().enumerate() {
                                *b = byte_at(sent + k);
                            }
                            (n, n)
                        })
                        .unwrap();
                    sent += n;
                }
                if sent == TOTAL && sock.send_queue() == 0 {
                    break;
                }
                let d = iface
                    .poll_delay(now(), &sockets)
                    .map(|d| d.into())
                    .unwrap_or(Duration::from_millis(5));
                qa.wait(Some(d.min(Duration::from_millis(5))));
            }
        });
    });
    stop.store(true, Ordering::Relaxed);
    pumps.into_iter().for_each(|p| p.join().unwrap());
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "10 MB over smoltcp TCP in {secs:.2}s ({:.1} Mbit/s)",
        TOTAL as f64 * 8.0 / secs / 1e6
    );
    (nfa.stats(), nfb.stats())
}

fn iface_for(
    q: &mut netfront::Queue<hv::embedded::EmbeddedChannel>,
    mac: [u8; 6],
    ip: [u8; 4],
    now: smoltcp::time::Instant,
) -> Interface {
    let caps = q.capabilities();
    assert_eq!(caps.max_transmission_unit, 1514);
    assert!(caps.max_burst_size.unwrap() >= 1);
    let cfg = Config::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
    let mut iface = Interface::new(cfg, q, now);
    iface.update_ip_addrs(|a| {
        a.push(IpCidr::new(IpAddress::v4(ip[0], ip[1], ip[2], ip[3]), 24))
            .unwrap();
    });
    iface
}

#[test]
fn tcp_10mb_byte_exact_with_checksum_offload() {
    let (a, b) = run(NetfrontConfig::default(), NetfrontConfig::default());
    // The checksums were left to the device on TX and arrived blank, which the
    // receiving driver takes as they are (no pass over the data).
    assert_eq!(
        a.rx_csum_sw + b.rx_csum_sw + a.rx_csum_verified + b.rx_csum_verified,
        0,
        "{a:?} {b:?}"
    );
    assert_eq!(a.tx_errors + b.tx_errors + a.rx_errors + b.rx_errors, 0);
    assert!(a.tx_bytes >= TOTAL as u64 && b.rx_bytes >= TOTAL as u64);
}

#[test]
fn tcp_10mb_byte_exact_without_checksum_offload() {
    let cfg = NetfrontConfig {
        csum_offload: false,
        ..Default::default()
    };
    let (a, b) = run(cfg.clone(), cfg);
    // smoltcp computed every checksum; nothing arrived blank, and the receiving
    // driver verified every segment (none was wrong).
    assert_eq!(a.rx_csum_sw + b.rx_csum_sw, 0);
    assert!(
        a.rx_csum_verified > 0 && b.rx_csum_verified > 0,
        "{a:?} {b:?}"
    );
    assert_eq!(a.rx_csum_bad + b.rx_csum_bad, 0);
    assert_eq!(a.tx_errors + b.tx_errors + a.rx_errors + b.rx_errors, 0);
}
