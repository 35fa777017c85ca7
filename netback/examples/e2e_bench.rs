//! End-to-end data-path throughput: the REAL netfront (a guest thread) against the
//! REAL netback (its own TX / RX threads) on the embedded hypervisor, one queue pair.
//!
//! ```text
//! cargo run --release -p netback --example e2e_bench -- [SCENARIO...] [--secs S] [--packets N] [--runs R]
//! ```
//! Scenarios: `tx64` (guest `send_with` of 64-byte frames → Dom0 sink), `tx64k`
//! (64 KiB TCPv4 GSO frames → sink), `rx64` (Dom0 source → guest `recv_with`),
//! `rx64k` (64 KiB GSO frames → guest). Default: all four.
//! `--packets N` stops each run after N frames instead of after `--secs` (for
//! instruction counting under `valgrind --tool=callgrind`). `--runs R` repeats each
//! scenario and prints the best run too (the machine is shared: wall-clock is noisy).
//! `--front-poll N` / `--back-poll N` set netfront's and netback's `busy_poll`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hv::embedded::{DomainConfig, Hypervisor};
use hv::env::{DomId, Store};
use hv::store::StoreConnection;
use hv::toolstack::{add_vif, VifConfig};
use netback::{Gso, GsoType, Netback, NetbackConfig, OffloadMeta, Port, Sink, Source};
use netfront::{Netfront, NetfrontConfig, TxError, TxMeta};

const MAC_GUEST: [u8; 6] = [0x00, 0x16, 0x3e, 0x00, 0x00, 0x01];
const MAC_DOM0: [u8; 6] = [0xfe, 0xff, 0xff, 0xff, 0xff, 0xff];
/// TCP MSS of the GSO scenarios.
const MSS: u16 = 1448;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Scenario {
    Tx64,
    Tx64k,
    Rx64,
    Rx64k,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Tx64 => "guest->sink 64 B",
            Scenario::Tx64k => "guest->sink 64 KiB GSO",
            Scenario::Rx64 => "source->guest 64 B",
            Scenario::Rx64k => "source->guest 64 KiB GSO",
        }
    }
    fn len(self) -> usize {
        match self {
            Scenario::Tx64 | Scenario::Rx64 => 64,
            Scenario::Tx64k | Scenario::Rx64k => 65535,
        }
    }
    fn gso(self) -> bool {
        matches!(self, Scenario::Tx64k | Scenario::Rx64k)
    }
}

struct Opts {
    scenarios: Vec<Scenario>,
    secs: f64,
    packets: Option<u64>,
    runs: usize,
    front_poll: Option<u32>,
    back_poll: Option<u32>,
}

fn parse_args() -> Opts {
    let mut o = Opts {
        scenarios: Vec::new(),
        secs: 2.0,
        packets: None,
        runs: 1,
        front_poll: None,
        back_poll: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "tx64" => o.scenarios.push(Scenario::Tx64),
            "tx64k" => o.scenarios.push(Scenario::Tx64k),
            "rx64" => o.scenarios.push(Scenario::Rx64),
            "rx64k" => o.scenarios.push(Scenario::Rx64k),
            "--secs" => o.secs = args.next().and_then(|v| v.parse().ok()).unwrap_or(2.0),
            "--packets" => o.packets = args.next().and_then(|v| v.parse().ok()),
            "--runs" => o.runs = args.next().and_then(|v| v.parse().ok()).unwrap_or(1).max(1),
            "--front-poll" => o.front_poll = args.next().and_then(|v| v.parse().ok()),
            "--back-poll" => o.back_poll = args.next().and_then(|v| v.parse().ok()),
            // `cargo bench`-style flags are ignored.
            _ => {}
        }
    }
    if o.scenarios.is_empty() {
        o.scenarios = vec![
            Scenario::Tx64,
            Scenario::Tx64k,
            Scenario::Rx64,
            Scenario::Rx64k,
        ];
    }
    o
}

/// An Ethernet + IPv4 + TCP frame of `len` bytes (checksum left blank for GSO).
fn tcp4_frame(dst: [u8; 6], src: [u8; 6], len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[0..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12] = 0x08;
    let ip_total = (len - 14).min(usize::from(u16::MAX)) as u16;
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
    f[34..38].copy_from_slice(&[0x30, 0x39, 0x00, 0x50]);
    f[46] = 0x50;
    for (i, b) in f.iter_mut().enumerate().skip(54) {
        *b = i as u8;
    }
    f
}

/// The hypervisor, netback on `port`, one guest with vif 0 connected by netfront.
struct World {
    _hv: Hypervisor,
    netback: Netback,
    _dom0: StoreConnection,
    nf: Netfront<hv::embedded::EmbeddedGuestEnv>,
    domid: DomId,
}

fn world(port: Arc<dyn Port>, o: &Opts) -> World {
    let hv = Hypervisor::new().expect("hypervisor");
    let mut cfg = NetbackConfig::new(port);
    if let Some(p) = o.back_poll {
        cfg.busy_poll = p;
    }
    let netback = Netback::start(hv.backend_env().expect("dom0 env"), cfg).expect("netback");
    let dom0 = hv.store(0).expect("dom0 store");
    let domid = hv
        .create_domain(&DomainConfig {
            name: "bench".into(),
            ..DomainConfig::default()
        })
        .expect("create domain");
    add_vif(
        &dom0 as &dyn Store,
        &VifConfig {
            frontend: domid,
            backend: 0,
            devid: 0,
            mac: MAC_GUEST,
            rate: None,
        },
    )
    .expect("add_vif");
    let nf = Netfront::connect(
        hv.guest_env(domid).expect("guest env"),
        NetfrontConfig {
            tx_batch: 64,
            busy_poll: o.front_poll.unwrap_or(NetfrontConfig::default().busy_poll),
            ..NetfrontConfig::default()
        },
    )
    .expect("netfront connect");
    World {
        _hv: hv,
        netback,
        _dom0: dom0,
        nf,
        domid,
    }
}

struct Result1 {
    pps: f64,
    bps: f64,
    extra: String,
}

fn run_tx(sc: Scenario, o: &Opts) -> Result1 {
    let sink = Sink::new();
    let mut w = world(sink.clone(), o);
    let frame = tcp4_frame(MAC_DOM0, MAC_GUEST, sc.len());
    let meta = if sc.gso() {
        TxMeta {
            csum_blank: true,
            gso: Some(netfront::Gso {
                ty: netfront::GsoType::TcpV4,
                size: MSS,
            }),
            ..TxMeta::default()
        }
    } else {
        TxMeta::default()
    };
    let q = w.nf.queue(0).expect("queue 0");
    let deadline = Duration::from_secs_f64(o.secs);
    let limit = o.packets.unwrap_or(u64::MAX);
    let start = Instant::now();
    let mut sent = 0u64;
    let mut busy = 0u64;
    'outer: while sent < limit {
        // Check the clock once per ring's worth of frames.
        for _ in 0..256 {
            match q.send_with(frame.len(), meta, |off, seg| {
                seg.copy_from_slice(&frame[off..off + seg.len()])
            }) {
                Ok(()) => {
                    sent += 1;
                    if sent >= limit {
                        break 'outer;
                    }
                }
                Err(TxError::Busy) => {
                    busy += 1;
                    q.wait_tx(Some(Duration::from_millis(10)));
                }
                Err(e) => panic!("send: {e}"),
            }
        }
        if o.packets.is_none() && start.elapsed() >= deadline {
            break;
        }
    }
    q.flush();
    // Every frame sent must reach the sink.
    let drain = Instant::now();
    while sink.packets() < sent && drain.elapsed() < Duration::from_secs(10) {
        q.wait_tx(Some(Duration::from_millis(1)));
    }
    let secs = start.elapsed().as_secs_f64();
    let got = sink.packets();
    assert_eq!(got, sent, "sink got {got} of {sent} frames");
    let st = q.stats();
    let be = w
        .netback
        .vif(netback::VifId {
            domid: w.domid,
            devid: 0,
        })
        .map(|v| v.counters)
        .unwrap_or_default();
    Result1 {
        pps: got as f64 / secs,
        bps: sink.bytes() as f64 * 8.0 / secs,
        extra: format!(
            "front notify {}/{} suppressed, busy {busy}, wakeups {}; back notify {} sent {} suppressed",
            st.tx_notify_sent, st.tx_notify_suppressed, st.wakeups, be.notify_sent, be.notify_suppressed
        ),
    }
}

fn run_rx(sc: Scenario, o: &Opts) -> Result1 {
    let meta = OffloadMeta {
        csum_blank: sc.gso(),
        data_validated: sc.gso(),
        gso: sc.gso().then_some(Gso {
            ty: GsoType::TcpV4,
            size: MSS,
        }),
    };
    let src = Source::new(
        vec![(tcp4_frame(MAC_GUEST, MAC_DOM0, sc.len()), meta)],
        o.packets,
    );
    let mut w = world(src.clone() as Arc<dyn Port>, o);
    let q = w.nf.queue(0).expect("queue 0");
    let deadline = Duration::from_secs_f64(o.secs);
    let limit = o.packets.unwrap_or(u64::MAX);
    let start = Instant::now();
    let (mut pkts, mut bytes, mut sum) = (0u64, 0u64, 0u64);
    while pkts < limit {
        let mut n = 0;
        while let Some(len) = q.recv_with(|f, _| {
            // Touch the frame as a receiver would (first byte of each segment).
            let mut s = 0u64;
            for seg in f.segments() {
                s += u64::from(seg[0]);
            }
            (f.len(), s)
        }) {
            pkts += 1;
            bytes += len.0 as u64;
            sum = sum.wrapping_add(len.1);
            n += 1;
            if n == 256 {
                break;
            }
        }
        if o.packets.is_none() && start.elapsed() >= deadline {
            break;
        }
        if n == 0 {
            q.wait_rx(Some(Duration::from_millis(10)));
        }
    }
    let secs = start.elapsed().as_secs_f64();
    std::hint::black_box(sum);
    let st = q.stats();
    let be = w
        .netback
        .vif(netback::VifId {
            domid: w.domid,
            devid: 0,
        })
        .map(|v| v.counters)
        .unwrap_or_default();
    Result1 {
        pps: pkts as f64 / secs,
        bps: bytes as f64 * 8.0 / secs,
        extra: format!(
            "front rx notify {}/{} suppressed, wakeups {}, rx errors {}; back notify {} sent {} suppressed",
            st.rx_notify_sent, st.rx_notify_suppressed, st.wakeups, st.rx_errors, be.notify_sent, be.notify_suppressed
        ),
    }
}

fn main() {
    let o = parse_args();
    for &sc in &o.scenarios {
        let mut best: Option<(f64, f64)> = None;
        for run in 0..o.runs {
            let r = match sc {
                Scenario::Tx64 | Scenario::Tx64k => run_tx(sc, &o),
                Scenario::Rx64 | Scenario::Rx64k => run_rx(sc, &o),
            };
            println!(
                "{:<26} run {run}: {:>7.2} Mpps {:>8.2} Gbit/s  ({})",
                sc.name(),
                r.pps / 1e6,
                r.bps / 1e9,
                r.extra
            );
            if best.is_none_or(|(p, _)| r.pps > p) {
                best = Some((r.pps, r.bps));
            }
        }
        if let Some((p, b)) = best {
            println!(
                "{:<26} BEST : {:>7.2} Mpps {:>8.2} Gbit/s",
                sc.name(),
                p / 1e6,
                b / 1e9
            );
        }
    }
}
