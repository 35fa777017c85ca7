//! pvnet's netfront in the user space of a real Xen PV domU, facing Linux's kernel
//! xen-netback in dom0.
//!
//! The toolstack (`xl network-attach` in dom0) creates the vif's frontend directory
//! `device/vif/<devid>` (`backend`, `backend-id`, `mac`, `state = 1`); this program
//! then plays the frontend Linux's xen-netfront would: pages granted through
//! `/dev/xen/gntalloc`, event channels through `/dev/xen/evtchn`, the keys written
//! through `/dev/xen/xenbus` (all via `hv::xen::XenGuestEnv`), state Connected. The
//! kernel's own xen-netfront must not probe that vif (unload it, or turn off
//! `/sys/bus/xen/drivers_autoprobe` before the vif appears).
//!
//! On top of the vif runs smoltcp with one IPv4 address:
//! - it answers ARP and ICMP echo (smoltcp does), and pings `--ping ADDR` itself;
//! - TCP port `--rx-port` takes one connection, reads to EOF and prints the byte count
//!   and SHA-256 of what arrived;
//! - TCP port `--tx-port` takes one connection and sends `--tx-bytes` bytes of a
//!   reproducible pseudo-random stream, printing their count and SHA-256, then closes.
//!
//! With `--exit-when-done` it closes the vif (Closing → Closed, as xen-netfront's
//! remove does) once the pings and both transfers are done. Every result is one
//! `pvnet-guest: ...` line on stdout.
//!
//! ```text
//! xen_guest --devid 1 --ip 10.99.0.3/24 [--ping 10.99.0.1] [--rx-port 5001]
//!           [--tx-port 5002 --tx-bytes N] [--wait-frontend SECS] [--timeout SECS]
//!           [--exit-when-done] [--no-offloads] [--verbose]
//! ```
//!
//! Build: `cargo build --release -p netfront --example xen_guest`.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use hv::env::{GuestEnv, StoreError, XBT_NIL};
use hv::xen::XenGuestEnv;
use netfront::{Netfront, NetfrontConfig, Queue};
use sha2::{Digest, Sha256};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::socket::{icmp, tcp};
use smoltcp::wire::{
    EthernetAddress, HardwareAddress, Icmpv4Packet, Icmpv4Repr, IpAddress, IpCidr, Ipv4Address,
};

const USAGE: &str = "usage: xen_guest --devid N --ip A.B.C.D/LEN [--ping A.B.C.D] \
[--rx-port P] [--tx-port P --tx-bytes N] [--wait-frontend SECS] [--timeout SECS] \
[--exit-when-done] [--no-offloads] [--verbose]";

/// TCP socket buffers. 65535 bytes keeps window scaling off: smoltcp 0.12 can move a
/// scaled window's right edge back and then panic when a slow receiver's peer fills
/// the old edge (smoltcp issue #1048), and under TCG this receiver is slow.
const TCP_BUFFER: usize = 65535;
/// ICMP identifier of our echo requests.
const PING_IDENT: u16 = 0x7076;
/// Echo replies wanted before the ping is reported done.
const PING_REPLIES: u16 = 3;
/// Echo requests sent before the ping is reported failed.
const PING_TRIES: u16 = 20;
/// Longest sleep on the event channel between polls.
const MAX_SLEEP: Duration = Duration::from_millis(50);
/// Time left for the last FIN/ACKs after both transfers before the vif is closed.
const LINGER: Duration = Duration::from_secs(2);

// ---- options -------------------------------------------------------------------------

struct Options {
    devid: u32,
    ip: IpCidr,
    ping: Option<Ipv4Address>,
    rx_port: Option<u16>,
    tx_port: Option<u16>,
    tx_bytes: u64,
    wait_frontend: Duration,
    timeout: Duration,
    exit_when_done: bool,
    offloads: bool,
    verbose: bool,
}

fn parse_args(args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut o = Options {
        devid: 0,
        ip: IpCidr::new(IpAddress::v4(10, 99, 0, 3), 24),
        ping: None,
        rx_port: None,
        tx_port: None,
        tx_bytes: 64 << 20,
        wait_frontend: Duration::from_secs(60),
        timeout: Duration::from_secs(600),
        exit_when_done: false,
        offloads: true,
        verbose: false,
    };
    let mut args = args.peekable();
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or(format!("{a} needs a value"));
        let bad = |v: &str| format!("{a}: cannot parse '{v}'");
        match a.as_str() {
            "--devid" => {
                let v = value()?;
                o.devid = v.parse().map_err(|_| bad(&v))?;
            }
            "--ip" => {
                let v = value()?;
                o.ip = v.parse().map_err(|_| bad(&v))?;
            }
            "--ping" => {
                let v = value()?;
                o.ping = Some(v.parse().map_err(|_| bad(&v))?);
            }
            "--rx-port" => {
                let v = value()?;
                o.rx_port = Some(v.parse().map_err(|_| bad(&v))?);
            }
            "--tx-port" => {
                let v = value()?;
                o.tx_port = Some(v.parse().map_err(|_| bad(&v))?);
            }
            "--tx-bytes" => {
                let v = value()?;
                o.tx_bytes = v.parse().map_err(|_| bad(&v))?;
            }
            "--wait-frontend" => {
                let v = value()?;
                o.wait_frontend = Duration::from_secs(v.parse().map_err(|_| bad(&v))?);
            }
            "--timeout" => {
                let v = value()?;
                o.timeout = Duration::from_secs(v.parse().map_err(|_| bad(&v))?);
            }
            "--exit-when-done" => o.exit_when_done = true,
            "--no-offloads" => o.offloads = false,
            "--verbose" | "-v" => o.verbose = true,
            "--help" | "-h" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument '{other}'\n{USAGE}")),
        }
    }
    Ok(o)
}

/// Print one result line and flush (stdout is the domU console, read by dom0).
macro_rules! say {
    ($($t:tt)*) => {{
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "pvnet-guest: {}", format_args!($($t)*));
        let _ = out.flush();
    }};
}

/// A `log` backend writing to stderr.
struct StderrLogger;

impl log::Log for StderrLogger {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::max_level()
    }
    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) {
            let _ = writeln!(std::io::stderr(), "{:<5} {}", r.level(), r.args());
        }
    }
    fn flush(&self) {}
}

static LOGGER: StderrLogger = StderrLogger;

// ---- the byte stream -----------------------------------------------------------------

/// A reproducible pseudo-random byte stream (splitmix64 words, little endian), cheap
/// enough that the sender is never the bottleneck.
struct Stream {
    state: u64,
    word: [u8; 8],
    used: usize,
}

impl Stream {
    fn new(seed: u64) -> Self {
        Stream {
            state: seed,
            word: [0; 8],
            used: 8,
        }
    }

    fn next_word(&mut self) -> [u8; 8] {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)).to_le_bytes()
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            if self.used == 8 {
                self.word = self.next_word();
                self.used = 0;
            }
            *b = self.word[self.used];
            self.used += 1;
        }
    }
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

// ---- the transfers -------------------------------------------------------------------

/// Where a transfer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Listening,
    Running,
    Done,
}

/// One TCP transfer: receive to EOF, or send a fixed amount.
struct Transfer {
    port: u16,
    handle: SocketHandle,
    /// `Some(remaining)` for a sender.
    to_send: Option<u64>,
    stream: Stream,
    sha: Sha256,
    bytes: u64,
    started: Option<Instant>,
    phase: Phase,
}

impl Transfer {
    fn new(sockets: &mut SocketSet<'_>, port: u16, to_send: Option<u64>) -> Result<Self, String> {
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; TCP_BUFFER]),
            tcp::SocketBuffer::new(vec![0; TCP_BUFFER]),
        );
        s.listen(port).map_err(|e| format!("listen {port}: {e}"))?;
        Ok(Transfer {
            port,
            handle: sockets.add(s),
            to_send,
            stream: Stream::new(u64::from(port)),
            sha: Sha256::new(),
            bytes: 0,
            started: None,
            phase: Phase::Listening,
        })
    }

    /// Move bytes between the socket and the hash; true if anything moved.
    fn service(&mut self, sockets: &mut SocketSet<'_>) -> bool {
        let s = sockets.get_mut::<tcp::Socket>(self.handle);
        // Running once the handshake completed: a half-open connection (SynReceived)
        // can neither send nor receive yet, and must not look finished.
        let handshaken = !matches!(
            s.state(),
            tcp::State::Listen | tcp::State::SynReceived | tcp::State::Closed
        );
        if self.phase == Phase::Listening && handshaken {
            self.phase = Phase::Running;
            self.started = Some(Instant::now());
            say!(
                "port {} connection from {}",
                self.port,
                s.remote_endpoint()
                    .map_or_else(|| "?".to_string(), |e| e.to_string())
            );
        }
        if self.phase != Phase::Running {
            return false;
        }
        let mut moved = false;
        match self.to_send.as_mut() {
            None => {
                while s.can_recv() {
                    let sha = &mut self.sha;
                    let n = s
                        .recv(|buf| {
                            sha.update(&*buf);
                            (buf.len(), buf.len())
                        })
                        .unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    self.bytes += n as u64;
                    moved = true;
                }
                // The peer's FIN arrived (or the connection died) and everything
                // before it was read.
                if !s.may_recv() && !s.can_recv() {
                    s.close();
                    self.finish("received");
                }
            }
            Some(remaining) => {
                while *remaining > 0 && s.can_send() {
                    let (stream, sha) = (&mut self.stream, &mut self.sha);
                    let want = *remaining;
                    let n = s
                        .send(|buf| {
                            let n = buf.len().min(usize::try_from(want).unwrap_or(usize::MAX));
                            stream.fill(&mut buf[..n]);
                            sha.update(&buf[..n]);
                            (n, n)
                        })
                        .unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    *remaining -= n as u64;
                    self.bytes += n as u64;
                    moved = true;
                }
                if *remaining == 0 && s.send_queue() == 0 {
                    s.close();
                    self.finish("sent");
                } else if !s.is_active() {
                    say!(
                        "port {} connection lost after {} bytes",
                        self.port,
                        self.bytes
                    );
                    self.phase = Phase::Done;
                }
            }
        }
        moved
    }

    fn finish(&mut self, what: &str) {
        let secs = self
            .started
            .map_or(0.0, |t| t.elapsed().as_secs_f64())
            .max(1e-6);
        let sha = hex(&std::mem::take(&mut self.sha).finalize());
        say!(
            "{what} port={} bytes={} sha256={sha} secs={secs:.1} rate={:.2}MB/s",
            self.port,
            self.bytes,
            self.bytes as f64 / secs / 1e6
        );
        self.phase = Phase::Done;
    }
}

// ---- ping ----------------------------------------------------------------------------

/// Our own echo requests to one address, one a second.
struct Pinger {
    target: Ipv4Address,
    handle: SocketHandle,
    sent: u16,
    replies: u16,
    last_sent: Option<Instant>,
    sent_at: Vec<Instant>,
    done: bool,
}

impl Pinger {
    fn new(sockets: &mut SocketSet<'_>, target: Ipv4Address) -> Result<Self, String> {
        let buf = || icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 8], vec![0; 1024]);
        let mut s = icmp::Socket::new(buf(), buf());
        s.bind(icmp::Endpoint::Ident(PING_IDENT))
            .map_err(|e| format!("icmp bind: {e}"))?;
        Ok(Pinger {
            target,
            handle: sockets.add(s),
            sent: 0,
            replies: 0,
            last_sent: None,
            sent_at: Vec::new(),
            done: false,
        })
    }

    fn service(&mut self, sockets: &mut SocketSet<'_>) {
        if self.done {
            return;
        }
        let s = sockets.get_mut::<icmp::Socket>(self.handle);
        while let Ok((data, from)) = s.recv() {
            let Ok(pkt) = Icmpv4Packet::new_checked(data) else {
                continue;
            };
            let Ok(Icmpv4Repr::EchoReply { ident, seq_no, .. }) =
                Icmpv4Repr::parse(&pkt, &ChecksumCapabilities::default())
            else {
                continue;
            };
            if ident != PING_IDENT {
                continue;
            }
            let rtt = self
                .sent_at
                .get(usize::from(seq_no))
                .map_or(0.0, |t| t.elapsed().as_secs_f64() * 1e3);
            self.replies += 1;
            say!("ping reply from {from} seq={seq_no} time={rtt:.1}ms");
        }
        if self.replies >= PING_REPLIES {
            say!(
                "ping {} ok: {} of {} answered",
                self.target,
                self.replies,
                self.sent
            );
            self.done = true;
            return;
        }
        if self.sent >= PING_TRIES {
            say!(
                "ping {} FAILED: {} of {} answered",
                self.target,
                self.replies,
                self.sent
            );
            self.done = true;
            return;
        }
        let due = self
            .last_sent
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
        if due && s.can_send() {
            let repr = Icmpv4Repr::EchoRequest {
                ident: PING_IDENT,
                seq_no: self.sent,
                data: b"pvnet netfront ping",
            };
            if let Ok(buf) = s.send(repr.buffer_len(), self.target.into()) {
                let mut pkt = Icmpv4Packet::new_unchecked(buf);
                repr.emit(&mut pkt, &ChecksumCapabilities::default());
                self.sent_at.push(Instant::now());
                self.sent += 1;
                self.last_sent = Some(Instant::now());
            }
        }
    }
}

// ---- main ----------------------------------------------------------------------------

/// Wait until the toolstack has written the frontend directory (its `backend` key).
fn wait_for_frontend(env: &XenGuestEnv, devid: u32, limit: Duration) -> Result<(), String> {
    let path = format!("/local/domain/{}/device/vif/{devid}/backend", env.domid());
    let deadline = Instant::now() + limit;
    loop {
        match env.store().read(XBT_NIL, &path) {
            Ok(_) => return Ok(()),
            Err(StoreError::NotFound) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(200))
            }
            Err(e) => return Err(format!("{path}: {e}")),
        }
    }
}

fn show_keys(env: &XenGuestEnv, dir: &str) {
    let keys = match env.store().directory(XBT_NIL, dir) {
        Ok(k) => k,
        Err(e) => {
            say!("{dir}: {e}");
            return;
        }
    };
    for k in keys {
        let p = format!("{dir}/{k}");
        if let Ok(v) = env.store().read(XBT_NIL, &p) {
            say!("  {p} = {}", String::from_utf8_lossy(&v));
        }
    }
}

fn run(o: Options) -> Result<(), String> {
    let env = XenGuestEnv::open().map_err(|e| format!("opening /dev/xen: {e}"))?;
    say!("domain {}, waiting for device/vif/{}", env.domid(), o.devid);
    wait_for_frontend(&env, o.devid, o.wait_frontend)?;
    let cfg = NetfrontConfig {
        devid: o.devid,
        queues: 1,
        sg: o.offloads,
        gso_tcpv4: o.offloads,
        gso_tcpv6: o.offloads,
        csum_offload: o.offloads,
        ipv6_csum_offload: o.offloads,
        // The domU's vCPUs are shared with dom0 on one emulated CPU: never spin.
        busy_poll: 0,
        timeout: Duration::from_secs(30),
        ..NetfrontConfig::default()
    };
    let t0 = Instant::now();
    let mut nf = Netfront::connect(env, cfg).map_err(|e| format!("connect: {e}"))?;
    let mac = nf.mac();
    say!(
        "connected {} -> {} in {:.2}s, mac {}, {} queue(s), backend {:?}",
        nf.frontend_path(),
        nf.backend_path(),
        t0.elapsed().as_secs_f64(),
        EthernetAddress(mac),
        nf.num_queues(),
        nf.backend_features()
    );
    let fe = nf.frontend_path().to_string();
    show_keys(nf.env(), &fe);

    let deadline = Instant::now() + o.timeout;
    let outcome = {
        let Some(q) = nf.queue(0) else {
            return Err("no queue 0".into());
        };
        serve(q, mac, &o, deadline)
    };
    say!("netfront counters: {:?}", nf.stats());
    if o.exit_when_done {
        nf.close().map_err(|e| format!("close: {e}"))?;
        say!("closed {}", nf.frontend_path());
    }
    outcome
}

/// Run smoltcp on the queue until the work is done (or forever without
/// `--exit-when-done`).
fn serve<C: hv::env::EventChannel>(
    q: &mut Queue<C>,
    mac: [u8; 6],
    o: &Options,
    deadline: Instant,
) -> Result<(), String> {
    let epoch = Instant::now();
    let now = || smoltcp::time::Instant::from_micros(epoch.elapsed().as_micros() as i64);
    let hw = HardwareAddress::Ethernet(EthernetAddress(mac));
    let mut iface = Interface::new(Config::new(hw), q, now());
    iface.update_ip_addrs(|a| {
        let _ = a.push(o.ip);
    });
    let mut sockets = SocketSet::new(Vec::new());
    let mut transfers = Vec::new();
    if let Some(p) = o.rx_port {
        transfers.push(Transfer::new(&mut sockets, p, None)?);
    }
    if let Some(p) = o.tx_port {
        transfers.push(Transfer::new(&mut sockets, p, Some(o.tx_bytes))?);
    }
    let mut pinger = match o.ping {
        Some(t) => Some(Pinger::new(&mut sockets, t)?),
        None => None,
    };
    say!(
        "listening on {} (rx port {:?}, tx port {:?}, {} bytes to send)",
        o.ip,
        o.rx_port,
        o.tx_port,
        o.tx_bytes
    );
    let mut done_at: Option<Instant> = None;
    loop {
        if Instant::now() >= deadline {
            return Err(format!("timed out after {}s", o.timeout.as_secs()));
        }
        if q.is_broken() {
            return Err("the backend broke the ring protocol; queue disabled".into());
        }
        iface.poll(now(), q, &mut sockets);
        let mut moved = false;
        for t in transfers.iter_mut() {
            moved |= t.service(&mut sockets);
        }
        if let Some(p) = pinger.as_mut() {
            p.service(&mut sockets);
        }
        let all_done = transfers.iter().all(|t| t.phase == Phase::Done)
            && pinger.as_ref().is_none_or(|p| p.done);
        if all_done && o.exit_when_done {
            let since = *done_at.get_or_insert_with(Instant::now);
            if since.elapsed() >= LINGER {
                let failed = pinger.as_ref().is_some_and(|p| p.replies < PING_REPLIES)
                    || transfers.iter().any(|t| t.to_send.is_some_and(|r| r > 0));
                return if failed {
                    Err("a ping or a transfer failed".into())
                } else {
                    Ok(())
                };
            }
        }
        if moved {
            continue;
        }
        let sleep = iface
            .poll_delay(now(), &sockets)
            .map_or(MAX_SLEEP, |d| Duration::from_micros(d.total_micros()))
            .min(MAX_SLEEP);
        if !sleep.is_zero() {
            q.wait(Some(sleep));
        }
    }
}

fn main() -> ExitCode {
    let o = match parse_args(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(if o.verbose {
            log::LevelFilter::Debug
        } else {
            log::LevelFilter::Info
        });
    }
    match run(o) {
        Ok(()) => {
            say!("done");
            ExitCode::SUCCESS
        }
        Err(e) => {
            say!("FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}
