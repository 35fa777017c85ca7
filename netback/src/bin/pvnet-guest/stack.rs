//! The guest's IP stack: a smoltcp interface on one netfront queue, the TCP echo
//! (port 7, RFC 862) and discard (port 9, RFC 863) services, TCP transfers to a peer
//! and an ICMP echo client. ICMP echo requests to the guest are answered by smoltcp
//! itself.
//!
//! Everything runs in the caller's thread: [`Stack::step`] moves frames between the
//! queue and the sockets and advances every service and client once. Results are
//! printed as `key value ...` lines (see the binary's docs) the moment they are known.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{ChecksumCapabilities, Device};
use smoltcp::socket::{icmp, tcp};
use smoltcp::wire::{
    EthernetAddress, HardwareAddress, Icmpv4Packet, Icmpv4Repr, Icmpv6Packet, Icmpv6Repr,
    IpAddress, IpCidr, IpEndpoint, Ipv4Address, Ipv6Address,
};

use crate::pattern::{PatternStream, StreamHash};

/// TCP echo (RFC 862).
pub const ECHO_PORT: u16 = 7;
/// TCP discard (RFC 863).
pub const DISCARD_PORT: u16 = 9;
/// Sockets kept listening per service (connections that may be mid-handshake at once).
const BACKLOG: usize = 4;
/// Receive buffer of every TCP socket: the window the guest advertises (scaled).
/// Needs smoltcp >= 0.13: 0.12 could move a scaled window's right edge back and then
/// panic when the peer filled the old edge (issue #1048, seen in `daemon_kill` under
/// load); 0.13 trims such bytes to the advertised window instead.
const RX_BUFFER: usize = 256 * 1024;
/// Send buffer of senders and the echo service.
const TX_BUFFER: usize = 256 * 1024;
/// A service connection whose peer went silent (e.g. killed) is probed this often...
const KEEP_ALIVE: Duration = Duration::from_secs(2);
/// ...and dropped after this long without an answer.
const TCP_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes of each ICMP echo request's payload.
const PING_PAYLOAD: usize = 56;
/// First local port of outgoing connections.
const EPHEMERAL_FIRST: u16 = 49152;

/// Counters of the services and clients, printed on exit.
#[derive(Debug, Default, Clone, Copy)]
pub struct ServiceStats {
    pub echo_conns: u64,
    pub echo_bytes: u64,
    pub discard_conns: u64,
    pub discard_bytes: u64,
    pub transfers_ok: u64,
    pub transfers_failed: u64,
    pub sent_bytes: u64,
    pub pings_sent: u64,
    pub pings_received: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Service {
    Echo,
    Discard,
}

impl Service {
    fn port(self) -> u16 {
        match self {
            Service::Echo => ECHO_PORT,
            Service::Discard => DISCARD_PORT,
        }
    }
}

struct Listener {
    service: Service,
    pool: Vec<SocketHandle>,
}

/// An accepted connection of a service.
struct ServiceConn {
    h: SocketHandle,
    service: Service,
    peer: String,
    hash: StreamHash,
}

/// One transfer of `--send-to`.
pub struct TransferSpec {
    pub to: SocketAddr,
    pub bytes: u64,
    pub seed: u64,
}

struct Transfer {
    h: SocketHandle,
    spec: TransferSpec,
    gen: PatternStream,
    sent: StreamHash,
    /// What came back, when the peer is an echo service.
    echoed: Option<StreamHash>,
    started: Instant,
    closed: bool,
}

/// The `--ping` client.
pub struct PingSpec {
    pub target: IpAddr,
    pub count: u16,
    pub interval: Duration,
}

struct Pinger {
    h: SocketHandle,
    spec: PingSpec,
    ident: u16,
    seq: u16,
    next_at: Instant,
    sent_at: Vec<Option<Instant>>,
    received: u16,
    /// When the last request went out: replies are waited for up to a second longer.
    last_sent: Option<Instant>,
}

/// The interface, its sockets and what runs on them.
pub struct Stack {
    iface: Interface,
    sockets: SocketSet<'static>,
    epoch: Instant,
    listeners: Vec<Listener>,
    conns: Vec<ServiceConn>,
    /// Transfers still to start, in order.
    queued: Vec<TransferSpec>,
    transfer: Option<Transfer>,
    pinger: Option<Pinger>,
    /// Closed sockets finishing their FIN exchange.
    closing: Vec<(SocketHandle, Instant)>,
    next_port: u16,
    pub stats: ServiceStats,
}

fn fmt_endpoint(e: Option<IpEndpoint>) -> String {
    e.map_or_else(
        || "?".into(),
        |e| SocketAddr::new(e.addr.into(), e.port).to_string(),
    )
}

/// `fe80::/64` with the modified EUI-64 of `mac` (RFC 4291 appendix A).
pub fn link_local(mac: [u8; 6]) -> IpCidr {
    let a = Ipv6Address::new(
        0xfe80,
        0,
        0,
        0,
        u16::from_be_bytes([mac[0] ^ 0x02, mac[1]]),
        u16::from_be_bytes([mac[2], 0xff]),
        u16::from_be_bytes([0xfe, mac[3]]),
        u16::from_be_bytes([mac[4], mac[5]]),
    );
    IpCidr::new(IpAddress::Ipv6(a), 64)
}

/// Where this process starts numbering its outgoing connections: spread over the
/// ephemeral range (as real stacks do), so a guest that restarts with the same
/// address does not reuse the 4-tuple of a connection the peer may still hold.
fn first_ephemeral_port() -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mix = (std::process::id() ^ nanos).wrapping_mul(0x9e37_79b1);
    EPHEMERAL_FIRST + (mix >> 18) as u16 % (u16::MAX - EPHEMERAL_FIRST)
}

fn tcp_socket(rx: usize, tx: usize) -> tcp::Socket<'static> {
    let mut s = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; rx]),
        tcp::SocketBuffer::new(vec![0; tx]),
    );
    s.set_nagle_enabled(false);
    s.set_timeout(Some(smoltcp::time::Duration::from_millis(
        TCP_TIMEOUT.as_millis() as u64,
    )));
    s
}

impl Stack {
    /// An interface on `dev` with MAC `mac` and addresses `addrs`, default routes via
    /// `gw4` / `gw6`, and the echo and discard services listening (unless `services`
    /// is false).
    pub fn new<D: Device + ?Sized>(
        dev: &mut D,
        mac: [u8; 6],
        addrs: &[IpCidr],
        gw4: Option<Ipv4Address>,
        gw6: Option<Ipv6Address>,
        services: bool,
    ) -> Result<Self, String> {
        let cfg = Config::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
        let mut iface = Interface::new(cfg, dev, smoltcp::time::Instant::ZERO);
        let mut overflow = None;
        iface.update_ip_addrs(|a| {
            for c in addrs {
                if a.push(*c).is_err() {
                    overflow = Some(*c);
                }
            }
        });
        if let Some(c) = overflow {
            return Err(format!(
                "too many addresses: smoltcp holds 2 per interface, {c} does not fit"
            ));
        }
        if let Some(gw) = gw4 {
            iface
                .routes_mut()
                .add_default_ipv4_route(gw)
                .map_err(|e| format!("default route via {gw}: {e}"))?;
        }
        if let Some(gw) = gw6 {
            iface
                .routes_mut()
                .add_default_ipv6_route(gw)
                .map_err(|e| format!("default route via {gw}: {e}"))?;
        }
        let mut st = Self {
            iface,
            sockets: SocketSet::new(Vec::new()),
            epoch: Instant::now(),
            listeners: Vec::new(),
            conns: Vec::new(),
            queued: Vec::new(),
            transfer: None,
            pinger: None,
            closing: Vec::new(),
            next_port: first_ephemeral_port(),
            stats: ServiceStats::default(),
        };
        if services {
            for service in [Service::Echo, Service::Discard] {
                let pool = (0..BACKLOG)
                    .map(|_| st.listening(service))
                    .collect::<Result<_, _>>()?;
                st.listeners.push(Listener { service, pool });
            }
        }
        Ok(st)
    }

    fn now(&self) -> smoltcp::time::Instant {
        smoltcp::time::Instant::from_micros(self.epoch.elapsed().as_micros() as i64)
    }

    fn listening(&mut self, service: Service) -> Result<SocketHandle, String> {
        let tx = match service {
            Service::Echo => TX_BUFFER,
            Service::Discard => 4096,
        };
        let mut s = tcp_socket(RX_BUFFER, tx);
        s.listen(service.port())
            .map_err(|e| format!("listen on port {}: {e}", service.port()))?;
        s.set_keep_alive(Some(smoltcp::time::Duration::from_millis(
            KEEP_ALIVE.as_millis() as u64,
        )));
        Ok(self.sockets.add(s))
    }

    /// Run these transfers one after the other.
    pub fn queue_transfers(&mut self, specs: Vec<TransferSpec>) {
        self.queued = specs;
        self.queued.reverse();
    }

    /// Start pinging.
    pub fn start_ping(&mut self, spec: PingSpec) {
        let mut s = icmp::Socket::new(
            icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 8], vec![0; 2048]),
            icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 8], vec![0; 2048]),
        );
        let ident = (std::process::id() as u16) ^ 0x5056;
        // A fresh socket on a fresh ident cannot fail to bind.
        let _ = s.bind(icmp::Endpoint::Ident(ident));
        let n = usize::from(spec.count);
        self.pinger = Some(Pinger {
            h: self.sockets.add(s),
            spec,
            ident,
            seq: 0,
            next_at: Instant::now(),
            sent_at: vec![None; n],
            received: 0,
            last_sent: None,
        });
    }

    /// True once every transfer and the ping client are finished and every closed
    /// connection has finished its FIN exchange (leaving earlier would leave the peer
    /// retransmitting its FIN to a guest that is gone, holding that 4-tuple).
    pub fn clients_done(&self) -> bool {
        self.queued.is_empty()
            && self.transfer.is_none()
            && self.pinger.is_none()
            && self.closing.is_empty()
    }

    /// How long the caller may sleep before the stack needs polling again.
    pub fn poll_delay(&mut self, max: Duration) -> Duration {
        let now = self.now();
        let mut d = self
            .iface
            .poll_delay(now, &self.sockets)
            .map_or(max, |d| Duration::from_micros(d.total_micros()).min(max));
        if let Some(p) = &self.pinger {
            d = d.min(p.next_at.saturating_duration_since(Instant::now()));
        }
        d
    }

    /// One pass: frames in and out, then every service and client. True if anything
    /// moved (call again at once).
    pub fn step<D: Device + ?Sized>(&mut self, dev: &mut D) -> bool {
        let now = self.now();
        let mut busy =
            self.iface.poll(now, dev, &mut self.sockets) != smoltcp::iface::PollResult::None;
        self.accept();
        busy |= self.serve();
        busy |= self.run_transfer();
        self.run_ping();
        // Send what the services and clients queued without waiting for the next pass.
        let now = self.now();
        busy |= self.iface.poll(now, dev, &mut self.sockets) != smoltcp::iface::PollResult::None;
        busy
    }

    fn accept(&mut self) {
        for li in 0..self.listeners.len() {
            for pi in 0..self.listeners[li].pool.len() {
                let h = self.listeners[li].pool[pi];
                let service = self.listeners[li].service;
                let s = self.sockets.get_mut::<tcp::Socket>(h);
                match s.state() {
                    tcp::State::Listen | tcp::State::SynReceived => {}
                    tcp::State::Closed => {
                        // A handshake that was reset: listen again on this slot.
                        let _ = s.listen(service.port());
                    }
                    _ => {
                        let peer = fmt_endpoint(s.remote_endpoint());
                        match self.listening(service) {
                            Ok(fresh) => self.listeners[li].pool[pi] = fresh,
                            Err(e) => eprintln!("pvnet-guest: {e}"),
                        }
                        match service {
                            Service::Echo => self.stats.echo_conns += 1,
                            Service::Discard => self.stats.discard_conns += 1,
                        }
                        self.conns.push(ServiceConn {
                            h,
                            service,
                            peer,
                            hash: StreamHash::default(),
                        });
                    }
                }
            }
        }
    }

    fn serve(&mut self) -> bool {
        let mut busy = false;
        let mut i = 0;
        let mut scratch = [0u8; 16 * 1024];
        while i < self.conns.len() {
            let c = &mut self.conns[i];
            let s = self.sockets.get_mut::<tcp::Socket>(c.h);
            match c.service {
                Service::Discard => {
                    while s.can_recv() {
                        let hash = &mut c.hash;
                        match s.recv(|buf| {
                            hash.update(buf);
                            (buf.len(), buf.len())
                        }) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                self.stats.discard_bytes += n as u64;
                                busy = true;
                            }
                        }
                    }
                }
                Service::Echo => {
                    while s.can_recv() && s.can_send() {
                        let room = (s.send_capacity() - s.send_queue()).min(scratch.len());
                        let n = match s.recv_slice(&mut scratch[..room]) {
                            Ok(n) if n > 0 => n,
                            _ => break,
                        };
                        // Room was checked: the whole slice fits.
                        let _ = s.send_slice(&scratch[..n]);
                        c.hash.update(&scratch[..n]);
                        self.stats.echo_bytes += n as u64;
                        busy = true;
                    }
                }
            }
            let state = s.state();
            // The peer finished sending and everything it sent was handled.
            let drained = !s.can_recv() && s.send_queue() == 0;
            let finished = match state {
                tcp::State::CloseWait => drained,
                tcp::State::Closed | tcp::State::TimeWait => true,
                _ => false,
            };
            if finished {
                let c = self.conns.swap_remove(i);
                let complete = matches!(state, tcp::State::CloseWait);
                let what = match c.service {
                    Service::Echo => "echo",
                    Service::Discard => "discard",
                };
                let s = self.sockets.get_mut::<tcp::Socket>(c.h);
                if complete {
                    s.close();
                    println!(
                        "{what} {} bytes {} sha256 {}",
                        c.peer,
                        c.hash.bytes(),
                        c.hash.hex()
                    );
                } else {
                    // Reset or timed out (e.g. the peer was killed).
                    println!("{what}-aborted {} bytes {}", c.peer, c.hash.bytes());
                }
                // The socket finishes its FIN exchange on its own; `reap` removes it.
                self.closing.push((c.h, Instant::now()));
                busy = true;
            } else {
                i += 1;
            }
        }
        self.reap();
        busy
    }

    /// Remove closed sockets; abort those still closing after [`TCP_TIMEOUT`].
    fn reap(&mut self) {
        let now = Instant::now();
        let sockets = &mut self.sockets;
        self.closing.retain(|&(h, since)| {
            let s = sockets.get_mut::<tcp::Socket>(h);
            let done = matches!(s.state(), tcp::State::Closed | tcp::State::TimeWait);
            if done || now.duration_since(since) > TCP_TIMEOUT {
                if !done {
                    s.abort();
                }
                sockets.remove(h);
                false
            } else {
                true
            }
        });
    }

    fn start_next_transfer(&mut self) {
        let Some(spec) = self.queued.pop() else {
            return;
        };
        let mut s = tcp_socket(RX_BUFFER, TX_BUFFER);
        let port = self.next_port;
        self.next_port = if port == u16::MAX {
            EPHEMERAL_FIRST
        } else {
            port + 1
        };
        let to = IpEndpoint::new(spec.to.ip().into(), spec.to.port());
        if let Err(e) = s.connect(self.iface.context(), to, port) {
            println!("transfer-failed {} connect: {e}", spec.to);
            self.stats.transfers_failed += 1;
            return;
        }
        let echo = spec.to.port() == ECHO_PORT;
        self.transfer = Some(Transfer {
            h: self.sockets.add(s),
            gen: PatternStream::new(spec.seed),
            spec,
            sent: StreamHash::default(),
            echoed: echo.then(StreamHash::default),
            started: Instant::now(),
            closed: false,
        });
    }

    fn run_transfer(&mut self) -> bool {
        if self.transfer.is_none() {
            self.start_next_transfer();
        }
        let Some(t) = self.transfer.as_mut() else {
            return false;
        };
        let mut busy = false;
        let s = self.sockets.get_mut::<tcp::Socket>(t.h);
        let total = t.spec.bytes;
        while s.can_send() && t.sent.bytes() < total {
            let left = total - t.sent.bytes();
            let (gen, sent) = (&mut t.gen, &mut t.sent);
            let r = s.send(|buf| {
                let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                gen.fill(&mut buf[..n]);
                sent.update(&buf[..n]);
                (n, n)
            });
            match r {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    self.stats.sent_bytes += n as u64;
                    busy = true;
                }
            }
        }
        if let Some(echoed) = t.echoed.as_mut() {
            while s.can_recv() {
                match s.recv(|buf| {
                    echoed.update(buf);
                    (buf.len(), buf.len())
                }) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => busy = true,
                }
            }
        }
        let all_sent = t.sent.bytes() == total && s.send_queue() == 0;
        let all_back = t.echoed.as_ref().is_none_or(|e| e.bytes() == total);
        if all_sent && all_back && !t.closed {
            s.close();
            t.closed = true;
        }
        let state = s.state();
        let done = t.closed
            && matches!(
                state,
                tcp::State::FinWait2 | tcp::State::TimeWait | tcp::State::Closed
            );
        let failed = !t.closed && state == tcp::State::Closed;
        if done || failed {
            let Some(t) = self.transfer.take() else {
                return busy;
            };
            let secs = t.started.elapsed().as_secs_f64();
            let to = t.spec.to;
            if failed {
                self.stats.transfers_failed += 1;
                println!(
                    "transfer-failed {to} after {} of {} bytes (connection reset or timed out)",
                    t.sent.bytes(),
                    t.spec.bytes
                );
                self.sockets.remove(t.h);
            } else {
                self.stats.transfers_ok += 1;
                let bytes = t.sent.bytes();
                let mbit = bytes as f64 * 8.0 / secs.max(1e-9) / 1e6;
                let sent_hex = t.sent.hex();
                println!("sent {to} bytes {bytes} sha256 {sent_hex} secs {secs:.3} mbit {mbit:.1}");
                if let Some(e) = t.echoed {
                    let back = e.hex();
                    let ok = back == sent_hex;
                    println!("echo-check {to} bytes {bytes} sha256 {back} match {ok}");
                    if !ok {
                        self.stats.transfers_failed += 1;
                    }
                }
                self.closing.push((t.h, Instant::now()));
            }
            busy = true;
        }
        busy
    }

    fn run_ping(&mut self) {
        let Some(p) = self.pinger.as_mut() else {
            return;
        };
        let target: IpAddress = p.spec.target.into();
        let src6 = match target {
            IpAddress::Ipv6(dst) => Some(self.iface.get_source_address_ipv6(&dst)),
            IpAddress::Ipv4(_) => None,
        };
        let caps = ChecksumCapabilities::default();
        let s = self.sockets.get_mut::<icmp::Socket>(p.h);
        // Replies.
        while let Ok((data, from)) = s.recv() {
            let reply = match (from, src6) {
                (IpAddress::Ipv4(_), _) => Icmpv4Packet::new_checked(data).ok().and_then(|pkt| {
                    match Icmpv4Repr::parse(&pkt, &caps) {
                        Ok(Icmpv4Repr::EchoReply { ident, seq_no, .. }) => Some((ident, seq_no)),
                        _ => None,
                    }
                }),
                (IpAddress::Ipv6(from6), Some(me)) => Icmpv6Packet::new_checked(data)
                    .ok()
                    .and_then(|pkt| match Icmpv6Repr::parse(&from6, &me, &pkt, &caps) {
                        Ok(Icmpv6Repr::EchoReply { ident, seq_no, .. }) => Some((ident, seq_no)),
                        _ => None,
                    }),
                _ => None,
            };
            let Some((ident, seq)) = reply else { continue };
            if ident != p.ident {
                continue;
            }
            if let Some(sent) = p.sent_at.get_mut(usize::from(seq)).and_then(Option::take) {
                p.received += 1;
                self.stats.pings_received += 1;
                println!(
                    "pong {from} seq {seq} rtt_us {}",
                    sent.elapsed().as_micros()
                );
            }
        }
        // Requests.
        let now = Instant::now();
        if p.seq < p.spec.count && now >= p.next_at && s.can_send() {
            let payload = [0x42u8; PING_PAYLOAD];
            let seq_no = p.seq;
            let sent = match (target, src6) {
                (IpAddress::Ipv4(_), _) => {
                    let repr = Icmpv4Repr::EchoRequest {
                        ident: p.ident,
                        seq_no,
                        data: &payload,
                    };
                    s.send(repr.buffer_len(), target).map(|buf| {
                        repr.emit(&mut Icmpv4Packet::new_unchecked(buf), &caps);
                    })
                }
                (IpAddress::Ipv6(dst), Some(src)) => {
                    let repr = Icmpv6Repr::EchoRequest {
                        ident: p.ident,
                        seq_no,
                        data: &payload,
                    };
                    s.send(repr.buffer_len(), target).map(|buf| {
                        repr.emit(&src, &dst, &mut Icmpv6Packet::new_unchecked(buf), &caps);
                    })
                }
                (IpAddress::Ipv6(_), None) => return,
            };
            if sent.is_ok() {
                if let Some(slot) = p.sent_at.get_mut(usize::from(seq_no)) {
                    *slot = Some(now);
                }
                p.seq += 1;
                p.last_sent = Some(now);
                self.stats.pings_sent += 1;
            }
            p.next_at = now + p.spec.interval;
        }
        let all_back = p.received == p.spec.count;
        let gave_up = p.seq == p.spec.count
            && p.last_sent
                .is_some_and(|t| now.duration_since(t) > Duration::from_secs(1));
        if all_back || gave_up {
            println!(
                "ping-done {} sent {} received {}",
                p.spec.target, p.seq, p.received
            );
            let h = p.h;
            self.pinger = None;
            self.sockets.remove(h);
        }
    }
}
