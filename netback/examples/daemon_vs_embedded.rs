//! What running the guest as its own process costs: the same netfront sender blasting
//! frames at a netback [`Sink`], once embedded (guest thread, netback and hypervisor in
//! one process) and once through the `hv` daemon (the guest a separate process that
//! reached its memory, grant table and event channels over the daemon's socket).
//!
//! ```text
//! cargo run --release -p netback --example daemon_vs_embedded -- [--secs S] [--runs R] [tx64] [tx64k]
//! ```
//! `tx64`: 64-byte frames (packets per second); `tx64k`: 64 KiB TCPv4 GSO frames
//! (throughput). Default: both, best of `--runs` (default 3) runs of `--secs` (2) each,
//! since the machine may be shared. Prints both modes and daemon/embedded.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hv::client::{connect_with, GuestConfig};
use hv::daemon::{Server, ServerConfig};
use hv::embedded::{DomainConfig, Hypervisor};
use hv::env::{EventChannel, GuestEnv, Store};
use hv::toolstack::{add_vif, VifConfig};
use netback::{Netback, NetbackConfig, Sink};
use netfront::{Netfront, NetfrontConfig, Queue, TxError, TxMeta};

const MSS: u16 = 1448;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Tx64,
    Tx64k,
}

impl Scenario {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "tx64" => Some(Self::Tx64),
            "tx64k" => Some(Self::Tx64k),
            _ => None,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Self::Tx64 => "tx64",
            Self::Tx64k => "tx64k",
        }
    }
    fn len(self) -> usize {
        match self {
            Self::Tx64 => 64,
            Self::Tx64k => 65535,
        }
    }
    fn meta(self) -> TxMeta {
        match self {
            Self::Tx64 => TxMeta::default(),
            Self::Tx64k => TxMeta {
                csum_blank: true,
                gso: Some(netfront::Gso {
                    ty: netfront::GsoType::TcpV4,
                    size: MSS,
                }),
                ..TxMeta::default()
            },
        }
    }
}

/// Ethernet + IPv4 + TCP, `len` bytes, to Dom0's MAC.
fn frame(len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[0..6].copy_from_slice(&[0xfe, 0xff, 0xff, 0xff, 0xff, 0xff]);
    f[6..12].copy_from_slice(&[0x00, 0x16, 0x3e, 0, 0, 1]);
    f[12] = 0x08;
    let ip_len = (len - 14).min(65535) as u16;
    let [hi, lo] = ip_len.to_be_bytes();
    f[14..34].copy_from_slice(&[
        0x45, 0, hi, lo, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
    ]);
    f[34..38].copy_from_slice(&[0x30, 0x39, 0x00, 0x09]);
    f[46] = 0x50;
    f
}

/// The sender both modes run: frames for `secs`, then wait until netback answered
/// every request. Frames sent and the seconds that took.
fn blast<C: EventChannel>(q: &mut Queue<C>, sc: Scenario, secs: f64) -> (u64, f64) {
    let f = frame(sc.len());
    let meta = sc.meta();
    let stop = Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < stop {
        for _ in 0..256 {
            match q.send_with(f.len(), meta, |off, seg| {
                seg.copy_from_slice(&f[off..off + seg.len()])
            }) {
                Ok(()) => sent += 1,
                Err(TxError::Busy) => {
                    q.wait_tx(Some(Duration::from_millis(10)));
                }
                Err(e) => {
                    eprintln!("send failed: {e}");
                    return (sent, start.elapsed().as_secs_f64());
                }
            }
        }
    }
    q.flush();
    let drain = Instant::now();
    while q.tx_in_flight() > 0 && drain.elapsed() < Duration::from_secs(10) {
        q.wait_tx(Some(Duration::from_millis(1)));
    }
    (sent, start.elapsed().as_secs_f64())
}

fn nf_cfg() -> NetfrontConfig {
    NetfrontConfig {
        tx_batch: 64,
        ..NetfrontConfig::default()
    }
}

struct Run {
    pps: f64,
    gbit: f64,
}

fn result(sink: &Sink, sent: u64, secs: f64) -> Run {
    // Every frame sent must have reached the sink.
    let deadline = Instant::now() + Duration::from_secs(5);
    while sink.packets() < sent && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(sink.packets(), sent, "the sink lost frames");
    Run {
        pps: sent as f64 / secs,
        gbit: sink.bytes() as f64 * 8.0 / secs / 1e9,
    }
}

fn embedded(sc: Scenario, secs: f64) -> Run {
    let hv = Hypervisor::new().expect("hypervisor");
    let sink = Sink::new();
    let netback = Netback::start(
        hv.backend_env().expect("dom0 env"),
        NetbackConfig::new(sink.clone()),
    )
    .expect("netback");
    let dom0 = hv.store(0).expect("dom0 store");
    let domid = hv
        .create_domain(&DomainConfig {
            name: "embedded".into(),
            ..DomainConfig::default()
        })
        .expect("domain");
    add_vif(
        &dom0 as &dyn Store,
        &VifConfig {
            frontend: domid,
            backend: 0,
            devid: 0,
            mac: [0x00, 0x16, 0x3e, 0, 0, 1],
            rate: None,
        },
    )
    .expect("vif");
    let mut nf =
        Netfront::connect(hv.guest_env(domid).expect("guest env"), nf_cfg()).expect("netfront");
    let (sent, t) = blast(nf.queue(0).expect("queue"), sc, secs);
    let r = result(&sink, sent, t);
    drop(nf);
    netback.shutdown();
    r
}

fn daemon(sc: Scenario, secs: f64) -> Run {
    let hv = Hypervisor::new().expect("hypervisor");
    let sink = Sink::new();
    let netback = Netback::start(
        hv.backend_env().expect("dom0 env"),
        NetbackConfig::new(sink.clone()),
    )
    .expect("netback");
    let dir = std::env::temp_dir().join(format!("pvnet-bench-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let server = Server::start(hv, ServerConfig::new(dir.join("hv.sock"))).expect("daemon");
    let mut child = Command::new(std::env::current_exe().expect("exe"))
        .arg("--guest")
        .arg(server.socket_path())
        .arg(sc.name())
        .arg(secs.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .expect("guest process");
    let out = child.stdout.take().expect("stdout");
    let line = BufReader::new(out)
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("result ").map(str::to_string))
        .expect("the guest reports its result");
    let mut w = line.split_whitespace();
    let sent: u64 = w.next().and_then(|v| v.parse().ok()).expect("sent");
    let t: f64 = w.next().and_then(|v| v.parse().ok()).expect("secs");
    let r = result(&sink, sent, t);
    let _ = child.wait();
    netback.shutdown();
    server.shutdown();
    r
}

/// The guest process of the daemon mode.
fn guest_process(socket: &Path, sc: Scenario, secs: f64) {
    let env = connect_with(
        socket,
        &GuestConfig {
            name: "bench".into(),
            ..GuestConfig::default()
        },
    )
    .expect("connect to the daemon");
    let _ = env.domid();
    let mut nf = Netfront::connect(env, nf_cfg()).expect("netfront");
    let (sent, t) = blast(nf.queue(0).expect("queue"), sc, secs);
    println!("result {sent} {t}");
    let _ = nf.close();
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--guest") {
        let (Some(sock), Some(sc), Some(secs)) = (
            args.get(1),
            args.get(2).and_then(|s| Scenario::parse(s)),
            args.get(3).and_then(|s| s.parse().ok()),
        ) else {
            eprintln!("usage: --guest SOCKET SCENARIO SECS");
            std::process::exit(2);
        };
        guest_process(Path::new(sock), sc, secs);
        return;
    }
    let mut secs = 2.0;
    let mut runs = 3;
    let mut scenarios = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--secs" => secs = it.next().and_then(|v| v.parse().ok()).unwrap_or(secs),
            "--runs" => runs = it.next().and_then(|v| v.parse().ok()).unwrap_or(runs),
            s => {
                if let Some(sc) = Scenario::parse(s) {
                    scenarios.push(sc);
                }
            }
        }
    }
    if scenarios.is_empty() {
        scenarios = vec![Scenario::Tx64, Scenario::Tx64k];
    }
    println!(
        "{:<6} {:>14} {:>10} {:>14} {:>10} {:>7}",
        "", "embedded Mpps", "Gbit/s", "daemon Mpps", "Gbit/s", "ratio"
    );
    for sc in scenarios {
        let best = |f: fn(Scenario, f64) -> Run| {
            (0..runs.max(1))
                .map(|_| f(sc, secs))
                .max_by(|a, b| a.pps.total_cmp(&b.pps))
                .expect("at least one run")
        };
        let e = best(embedded);
        let d = best(daemon);
        println!(
            "{:<6} {:>14.3} {:>10.2} {:>14.3} {:>10.2} {:>6.2}x",
            sc.name(),
            e.pps / 1e6,
            e.gbit,
            d.pps / 1e6,
            d.gbit,
            d.pps / e.pps
        );
    }
}
