//! `pvnet-guest`: a ready guest for the `hv` daemon, and the example of embedding
//! netfront in a program.
//!
//! It connects to `hv serve` as a new domain (the daemon's toolstack creates its vifs),
//! connects vif `--devid` with netfront, and runs smoltcp on it with static addresses:
//! it answers ping (IPv4 and IPv6), serves TCP echo (port 7) and discard (port 9), and
//! optionally sends `--bytes` to a peer (`--send-to`) or pings one (`--ping`). On
//! SIGTERM / SIGINT, `--duration` or `--exit-when-done` it prints its counters,
//! closes the vif (Closing → Closed) and exits; the daemon then destroys the domain.
//!
//! ```text
//! hv serve &
//! pvnet-guest --name a --ip 10.0.0.1/24 &
//! pvnet-guest --name b --ip 10.0.0.2/24 --ping 10.0.0.1 --send-to 10.0.0.1:9 --bytes 100M --exit-when-done
//! ```
//!
//! Output is one event per line, `key value ...`, made to be read by people and
//! scripts alike: `domid`, `vif`, `ip`, `ready`, `pong`, `ping-done`, `sent` (bytes
//! and SHA-256 of a transfer), `discard` / `echo` (bytes and SHA-256 a service
//! received on one connection), `echo-check`, `link`, `counters`, `exit`.
//!
//! The embedding itself is the first half of [`run`]: `hv::client::connect_with` gives
//! a `GuestEnv`, `netfront::Netfront::connect` does the xenbus handshake on it, and a
//! `netfront::Queue` is a `smoltcp::phy::Device`.

mod pattern;
mod stack;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use hv::client::{connect_with, default_socket_path, GuestConfig, RemoteGuestEnv};
use hv::env::GuestEnv;
use netfront::{LinkEvent, Netfront, NetfrontConfig};
use smoltcp::wire::{IpAddress, IpCidr};

use stack::{PingSpec, Stack, TransferSpec};

/// A pvnet guest: netfront + smoltcp with ping, TCP echo (7) and discard (9).
#[derive(Debug, Parser)]
#[command(name = "pvnet-guest", version)]
struct Args {
    /// The daemon's socket [default: $HV_SOCKET, /run/pvnet/hv.sock as root, else
    /// $XDG_RUNTIME_DIR/pvnet/hv.sock]
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Domain name shown by `hv list` [default: pvnet-guest-<pid>]
    #[arg(long)]
    name: Option<String>,
    /// The vif to use; the daemon creates vifs 0..=devid for the domain.
    #[arg(long, default_value_t = 0)]
    devid: u32,
    /// Guest RAM in MiB (grants, rings and buffers come out of it).
    #[arg(long, default_value_t = 32)]
    memory_mib: u32,
    /// An address with its prefix, IPv4 or IPv6 (at most two). Without an IPv6
    /// address the guest takes its link-local fe80::/64 address.
    #[arg(long = "ip", value_name = "CIDR")]
    ips: Vec<String>,
    /// Default gateway (IPv4 or IPv6; repeat for both).
    #[arg(long = "gateway", value_name = "IP")]
    gateways: Vec<IpAddr>,
    /// IP MTU (frames are 14 bytes longer; above 4082 needs the backend's feature-sg).
    #[arg(long, default_value_t = 1500)]
    mtu: usize,
    /// Do not listen on the echo and discard ports.
    #[arg(long)]
    no_services: bool,
    /// Send `--bytes` to this address (port 9: discard; port 7: echo, and the data
    /// coming back is checked).
    #[arg(long, value_name = "ADDR:PORT")]
    send_to: Option<SocketAddr>,
    /// Bytes per transfer (suffixes K, M, G: powers of 1024).
    #[arg(long, default_value = "1M", value_parser = parse_size)]
    bytes: u64,
    /// Transfers, one after the other (transfer i uses seed + i).
    #[arg(long, default_value_t = 1)]
    repeat: u32,
    /// Seed of the transmitted byte stream.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Ping this address (ICMP echo).
    #[arg(long, value_name = "IP")]
    ping: Option<IpAddr>,
    /// Pings to send.
    #[arg(long, default_value_t = 4)]
    count: u16,
    /// Milliseconds between pings.
    #[arg(long, default_value_t = 200)]
    interval_ms: u64,
    /// Exit once the transfers and pings are finished.
    #[arg(long)]
    exit_when_done: bool,
    /// Exit after this many seconds.
    #[arg(long)]
    duration: Option<f64>,
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, 'K' | 'k')) => (&s[..i], 1u64 << 10),
        Some((i, 'M' | 'm')) => (&s[..i], 1 << 20),
        Some((i, 'G' | 'g')) => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("{s:?} is not a size (e.g. 4096, 64K, 100M, 2G)"))
}

/// Set by SIGTERM / SIGINT; the main loop checks it at least every 10 ms.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_sig: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    STOP.store(true, Ordering::Relaxed);
}

fn install_signal_handlers() -> Result<(), String> {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: sigaction is plain old data, zeroed then filled; the handler only
        // stores to an atomic, which is async-signal-safe.
        let rc = unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_stop_signal as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(format!(
                "installing a signal handler failed: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

fn fmt_mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The interface's addresses: `--ip`, plus the link-local IPv6 address if no IPv6
/// address was given.
fn addresses(args: &Args, mac: [u8; 6]) -> Result<Vec<IpCidr>, String> {
    let mut out = Vec::new();
    for s in &args.ips {
        let (ip, len) = s
            .split_once('/')
            .ok_or_else(|| format!("--ip {s}: give a prefix length, e.g. 10.0.0.1/24"))?;
        let ip: IpAddr = ip.parse().map_err(|e| format!("--ip {s}: {e}"))?;
        let len: u8 = len.parse().map_err(|e| format!("--ip {s}: {e}"))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        if len > max {
            return Err(format!("--ip {s}: prefix longer than {max}"));
        }
        out.push(IpCidr::new(IpAddress::from(ip), len));
    }
    if !out
        .iter()
        .any(|c| matches!(c.address(), IpAddress::Ipv6(_)))
    {
        out.push(stack::link_local(mac));
    }
    Ok(out)
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("pvnet-guest: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Run the guest; `Ok(false)` if a transfer or the ping failed.
fn run(args: &Args) -> Result<bool, String> {
    install_signal_handlers()?;
    let socket = args.socket.clone().unwrap_or_else(default_socket_path);
    let cfg = GuestConfig {
        name: args
            .name
            .clone()
            .unwrap_or_else(|| format!("pvnet-guest-{}", std::process::id())),
        memory_frames: args.memory_mib.saturating_mul(256),
        vifs: args.devid + 1,
        ..GuestConfig::default()
    };
    // 1. Become a domain of the daemon.
    let env: RemoteGuestEnv = connect_with(&socket, &cfg).map_err(|e| e.to_string())?;
    println!("domid {} name {}", env.domid(), cfg.name);
    // 2. Connect the vif: the xenbus handshake with netback.
    let nf_cfg = NetfrontConfig {
        devid: args.devid,
        queues: 1,
        mtu: args.mtu + netfront::ETH_HLEN,
        ..NetfrontConfig::default()
    };
    let mut nf = Netfront::connect(env, nf_cfg.clone()).map_err(|e| e.to_string())?;
    let mac = nf.mac();
    println!(
        "vif {} mac {} backend {}",
        args.devid,
        fmt_mac(mac),
        nf.backend_path()
    );
    // 3. smoltcp on queue 0.
    let addrs = addresses(args, mac)?;
    let gw4 = args.gateways.iter().find_map(|g| match g {
        IpAddr::V4(a) => Some(*a),
        IpAddr::V6(_) => None,
    });
    let gw6 = args.gateways.iter().find_map(|g| match g {
        IpAddr::V6(a) => Some(*a),
        IpAddr::V4(_) => None,
    });
    let q = nf.queue(0).ok_or("netfront connected without a queue")?;
    let mut net = Stack::new(q, mac, &addrs, gw4, gw6, !args.no_services)?;
    for a in &addrs {
        println!("ip {a}");
    }
    if let Some(to) = args.send_to {
        net.queue_transfers(
            (0..args.repeat)
                .map(|i| TransferSpec {
                    to,
                    bytes: args.bytes,
                    seed: args.seed.wrapping_add(u64::from(i)),
                })
                .collect(),
        );
    }
    if let Some(target) = args.ping {
        net.start_ping(PingSpec {
            target,
            count: args.count,
            interval: Duration::from_millis(args.interval_ms),
        });
    }
    println!("ready");
    let why = event_loop(args, &mut nf, &mut net);
    println!("exit {why}");
    print_counters(&nf, &net);
    // An orderly close lets netback unmap before the grants are ended.
    if nf.env().is_connected() {
        if let Err(e) = nf.close() {
            eprintln!("pvnet-guest: closing the vif: {e}");
        }
    }
    let s = net.stats;
    let ping_ok = args.ping.is_none() || s.pings_received > 0;
    Ok(s.transfers_failed == 0 && ping_ok)
}

/// Run until told to stop; why it stopped.
fn event_loop(args: &Args, nf: &mut Netfront<RemoteGuestEnv>, net: &mut Stack) -> &'static str {
    const LINK_CHECK: Duration = Duration::from_millis(100);
    const RECONNECT_EVERY: Duration = Duration::from_secs(1);
    let deadline = args
        .duration
        .map(|s| Instant::now() + Duration::from_secs_f64(s.max(0.0)));
    let mut last_check = Instant::now();
    let mut last_reconnect = Instant::now();
    loop {
        if STOP.load(Ordering::Relaxed) {
            return "signal";
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return "duration";
        }
        if args.exit_when_done && net.clients_done() {
            return "done";
        }
        if last_check.elapsed() >= LINK_CHECK {
            last_check = Instant::now();
            if !nf.env().is_connected() {
                return "daemon-gone";
            }
            match nf.poll_backend() {
                Ok(LinkEvent::Up) | Ok(LinkEvent::Down) => {}
                Ok(LinkEvent::BackendClosed) => println!("link down backend-closed"),
                Ok(LinkEvent::QueueBroken(i)) => {
                    println!("link down queue-{i}-broken");
                    let _ = nf.close();
                }
                Err(e) => eprintln!("pvnet-guest: checking the backend: {e}"),
            }
        }
        let Some(q) = nf.queue(0) else {
            // Link down: try to come back now and then (netback may serve the vif
            // again, e.g. after `hv network-detach` and a new attach).
            if last_reconnect.elapsed() >= RECONNECT_EVERY {
                last_reconnect = Instant::now();
                if nf.reconnect().is_ok() {
                    println!("link up");
                }
            }
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        if !net.step(q) {
            let d = net.poll_delay(Duration::from_millis(10));
            if !d.is_zero() {
                q.wait(Some(d));
            }
        }
    }
}

fn print_counters(nf: &Netfront<RemoteGuestEnv>, net: &Stack) {
    let c = nf.stats();
    let s = net.stats;
    println!(
        "counters tx_packets {} tx_bytes {} tx_dropped {} tx_errors {} rx_packets {} rx_bytes {} rx_dropped {} rx_errors {} \
         echo_conns {} echo_bytes {} discard_conns {} discard_bytes {} transfers_ok {} transfers_failed {} sent_bytes {} \
         pings_sent {} pings_received {}",
        c.tx_packets,
        c.tx_bytes,
        c.tx_dropped,
        c.tx_errors,
        c.rx_packets,
        c.rx_bytes,
        c.rx_dropped,
        c.rx_errors,
        s.echo_conns,
        s.echo_bytes,
        s.discard_conns,
        s.discard_bytes,
        s.transfers_ok,
        s.transfers_failed,
        s.sent_bytes,
        s.pings_sent,
        s.pings_received
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("100M"), Ok(100 << 20));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        assert!(parse_size("x").is_err());
        assert!(parse_size("99999999999G").is_err());
    }

    #[test]
    fn the_link_local_address_is_the_modified_eui64_of_the_mac() {
        let c = stack::link_local([0x00, 0x16, 0x3e, 0x00, 0x05, 0x00]);
        assert_eq!(c.to_string(), "fe80::216:3eff:fe00:500/64");
    }
}
