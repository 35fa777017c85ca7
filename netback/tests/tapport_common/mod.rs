//! Helpers of the TAP port tests: a throw-away network namespace with a Linux bridge
//! (the "host"), the embedded hypervisor with netback serving vifs through a
//! [`TapPort`] whose TAPs live in that namespace, and guests running the real netfront
//! under smoltcp.
//!
//! Everything the tests create is owned by a guard whose `Drop` removes it, so a
//! failing assertion cleans up too: the namespace goes with `ip netns del` (taking the
//! bridge and any leftover device with it), netback shuts down before the hypervisor.
//! Traffic stays inside the namespace (10.77.0.0/24 exists nowhere else). Every wait
//! and loop is bounded.
#![allow(dead_code)]

pub mod tcp;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hv::abi::xenbus::XenbusState;
use hv::embedded::{DomainConfig, EmbeddedGuestEnv, Hypervisor};
use hv::env::DomId;
use hv::store::StoreConnection;
use hv::toolstack::{add_vif, VifConfig};
use netback::port::{TapPort, TapPortConfig, VifId};
use netback::tap::netns_path;
use netback::{Netback, NetbackConfig};
use netfront::{Netfront, NetfrontConfig, Queue};
use smoltcp::iface::{Config, Interface, PollResult, SocketSet};
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, Ipv4Address};

/// Shortest sleep of a guest loop that made no progress.
pub const MIN_WAIT: Duration = Duration::from_micros(200);
/// Bound of every control-plane wait.
pub const WAIT: Duration = Duration::from_secs(10);
/// The host (bridge) address; guest `n` is 10.77.0.(10+n).
pub const HOST_IP: [u8; 4] = [10, 77, 0, 1];
pub const BRIDGE: &str = "pvbr0";

pub type Front = Netfront<EmbeddedGuestEnv>;
pub type Chan = hv::embedded::EmbeddedChannel;

/// True if the test may run; panics with an explanation when not root, unless
/// `PVNET_SKIP_ROOT_TESTS=1` asks to skip (then it says so and returns false).
pub fn root_or_skip(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("PVNET_SKIP_ROOT_TESTS").as_deref() == Ok("1") {
        eprintln!("{test}: not run: needs root and PVNET_SKIP_ROOT_TESTS=1 is set");
        return false;
    }
    panic!(
        "{test} needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) to create a network namespace, \
         a bridge and TAPs: run the tests as root, or set PVNET_SKIP_ROOT_TESTS=1"
    );
}

/// Runs a command, panics with its stderr if it fails; returns stdout.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A fresh named network namespace with a bridge [`BRIDGE`] at [`HOST_IP`]/24;
/// deleted on drop.
pub struct HostNs {
    pub name: String,
}

impl HostNs {
    pub fn new(tag: &str) -> Self {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "pvnet-tp-{tag}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        run("ip", &["netns", "add", &name]);
        let ns = Self { name };
        // Only the traffic the test causes: no IPv6 autoconfiguration chatter.
        ns.exec(&["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"]);
        ns.exec(&["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
        ns.ip(&["link", "set", "lo", "up"]);
        ns.ip(&["link", "add", BRIDGE, "type", "bridge"]);
        // Forward at once (no STP, no forwarding delay).
        ns.ip(&[
            "link",
            "set",
            BRIDGE,
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
        ]);
        let ip = format!("{}/24", ipv4(HOST_IP));
        ns.ip(&["addr", "add", &ip, "dev", BRIDGE]);
        ns.ip(&["link", "set", BRIDGE, "up"]);
        ns
    }

    pub fn path(&self) -> PathBuf {
        netns_path(&self.name)
    }

    pub fn ip(&self, args: &[&str]) -> String {
        let mut a = vec!["-n", self.name.as_str()];
        a.extend_from_slice(args);
        run("ip", &a)
    }

    pub fn exec(&self, args: &[&str]) -> String {
        let mut a = vec!["netns", "exec", self.name.as_str()];
        a.extend_from_slice(args);
        run("ip", &a)
    }

    /// Runs `f` on a thread inside the namespace (sockets it opens stay there).
    pub fn within<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        netback::tap::run_in_netns(&self.path(), f).expect("entering the test namespace")
    }

    /// Whether interface `dev` exists in the namespace.
    pub fn has_link(&self, dev: &str) -> bool {
        Command::new("ip")
            .args(["-n", &self.name, "link", "show", "dev", dev])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    /// Waits (bounded) until `dev` is gone.
    pub fn wait_link_gone(&self, dev: &str) -> bool {
        wait_until(Duration::from_secs(5), || !self.has_link(dev))
    }
}

impl Drop for HostNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

pub fn ipv4(a: [u8; 4]) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::from(a)
}

/// Guest `n`'s address.
pub fn guest_ip(n: u8) -> [u8; 4] {
    [10, 77, 0, 10 + n]
}

/// Guest `n`'s MAC (Xen's OUI).
pub fn guest_mac(n: u8) -> [u8; 6] {
    [0x00, 0x16, 0x3e, 0x77, 0x00, n]
}

/// Poll `cond` until it holds; false after `timeout`.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The hypervisor with netback bridging every vif to a TAP in the host namespace.
/// Field order is drop order: netback stops (removing the TAPs) before the rest.
pub struct Dom0 {
    pub netback: Option<Netback>,
    pub port: Arc<TapPort>,
    pub store: StoreConnection,
    pub hv: Hypervisor,
}

impl Dom0 {
    /// netback with a TAP port in `host`'s namespace, joined to its bridge.
    pub fn new(host: &HostNs, tweak: impl FnOnce(&mut TapPortConfig)) -> Self {
        let mut cfg = TapPortConfig {
            bridge: Some(BRIDGE.into()),
            netns: Some(host.path()),
            ..TapPortConfig::default()
        };
        tweak(&mut cfg);
        // Benchmarks and examples may try other read batches, and reader threads.
        if let Some(b) = std::env::var("PVNET_READ_BATCH")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            cfg.read_batch = b;
        }
        if std::env::var_os("PVNET_TAP_READER_THREADS").is_some_and(|v| v == "1") {
            cfg.reader_threads = true;
        }
        let port = Arc::new(TapPort::new(cfg));
        let hv = Hypervisor::new().expect("hypervisor");
        let mut nb_cfg = NetbackConfig::new(port.clone());
        // Benchmarks and examples may try other polling budgets.
        if let Some(p) = std::env::var("PVNET_BUSY_POLL")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            nb_cfg.busy_poll = p;
        }
        let netback = Netback::start(hv.backend_env().expect("dom0 env"), nb_cfg).expect("netback");
        let store = hv.store(0).expect("dom0 store");
        Self {
            netback: Some(netback),
            port,
            store,
            hv,
        }
    }

    pub fn nb(&self) -> &Netback {
        self.netback.as_ref().expect("netback running")
    }

    /// Creates guest `n` with vif 0 and connects its netfront with `cfg`; returns once
    /// netback has the vif Connected and its TAP exists.
    pub fn guest(&self, n: u8, cfg: NetfrontConfig) -> (DomId, Front) {
        let domid = self
            .hv
            .create_domain(&DomainConfig {
                name: format!("tapguest{n}"),
                ..DomainConfig::default()
            })
            .expect("create domain");
        add_vif(
            &self.store,
            &VifConfig {
                frontend: domid,
                backend: 0,
                devid: 0,
                mac: guest_mac(n),
                rate: None,
            },
        )
        .expect("add_vif");
        let env = self.hv.guest_env(domid).expect("guest env");
        let nf = Netfront::connect(env, cfg).expect("netfront connect");
        let id = vif(domid);
        let ok = self
            .nb()
            .wait_vif(id, WAIT, |i| i.state == XenbusState::Connected)
            .is_some();
        assert!(ok, "{id} never Connected: {:?}", self.nb().vif(id));
        assert!(
            wait_until(WAIT, || self.port.tap_name(id).is_some()),
            "{id} has no TAP: {:?}",
            self.port.failure(id)
        );
        (domid, nf)
    }
}

impl Drop for Dom0 {
    fn drop(&mut self) {
        if let Some(nb) = self.netback.take() {
            nb.shutdown();
        }
    }
}

/// vif 0 of `domid`.
pub fn vif(domid: DomId) -> VifId {
    VifId { domid, devid: 0 }
}

/// A frontend configuration: offloads on or off, everything else default.
pub fn front_cfg(offloads: bool) -> NetfrontConfig {
    NetfrontConfig {
        csum_offload: offloads,
        ipv6_csum_offload: offloads,
        gso_tcpv4: offloads,
        gso_tcpv6: offloads,
        timeout: WAIT,
        // Benchmarks and examples may try other polling budgets.
        busy_poll: std::env::var("PVNET_GUEST_BUSY_POLL")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(NetfrontConfig::default().busy_poll),
        ..NetfrontConfig::default()
    }
}

/// smoltcp time since `start`.
pub fn now(start: Instant) -> smoltcp::time::Instant {
    smoltcp::time::Instant::from_micros(start.elapsed().as_micros() as i64)
}

/// A smoltcp interface for guest `n` on queue `q`, default route via the host.
pub fn iface_for(q: &mut Queue<Chan>, n: u8, start: Instant) -> Interface {
    let mut cfg = Config::new(HardwareAddress::Ethernet(EthernetAddress(guest_mac(n))));
    cfg.random_seed = 0x5eed + u64::from(n);
    let mut iface = Interface::new(cfg, q, now(start));
    let ip = guest_ip(n);
    iface.update_ip_addrs(|a| {
        a.push(IpCidr::new(IpAddress::v4(ip[0], ip[1], ip[2], ip[3]), 24))
            .expect("address");
    });
    let h = HOST_IP;
    iface
        .routes_mut()
        .add_default_ipv4_route(Ipv4Address::new(h[0], h[1], h[2], h[3]))
        .expect("route");
    iface
}

/// Most segments sent per clock read: smoltcp's `poll` emits at most one packet per
/// socket, so a sender calls `poll_egress` again while it keeps emitting.
const EGRESS_BURST: usize = 64;

/// Runs smoltcp at time `ts`: every received frame, then egress until nothing more
/// goes out (bounded). True if anything happened.
pub fn pump(
    iface: &mut Interface,
    q: &mut Queue<Chan>,
    sockets: &mut SocketSet<'_>,
    ts: smoltcp::time::Instant,
) -> bool {
    let mut busy = iface.poll(ts, q, sockets) != PollResult::None;
    for _ in 0..EGRESS_BURST {
        if iface.poll_egress(ts, q, sockets) == PollResult::None {
            break;
        }
        busy = true;
    }
    busy
}

/// Sleeps after a pass that did nothing: until the device has work (a frame, TX
/// completions) or smoltcp's next timer, at least [`MIN_WAIT`] (smoltcp says "now"
/// when it is blocked on the device), at most `cap`.
pub fn idle(
    iface: &mut Interface,
    q: &mut Queue<Chan>,
    sockets: &SocketSet<'_>,
    ts: smoltcp::time::Instant,
    cap: Duration,
) {
    let d = iface
        .poll_delay(ts, sockets)
        .map(Duration::from)
        .unwrap_or(cap)
        .clamp(MIN_WAIT, cap.max(MIN_WAIT));
    q.wait(Some(d));
}

/// One step of a guest stack that has nothing else to do: pump, and sleep if idle.
pub fn step(
    iface: &mut Interface,
    q: &mut Queue<Chan>,
    sockets: &mut SocketSet<'_>,
    start: Instant,
    cap: Duration,
) {
    let ts = now(start);
    if !pump(iface, q, sockets, ts) {
        idle(iface, q, sockets, ts, cap);
    }
}

/// Result of a tshark pass over a capture.
#[derive(Debug, Default)]
pub struct TsharkReport {
    /// Frames in the file.
    pub frames: usize,
    /// Frames the filter flagged (bad checksums, malformed), one line each.
    pub flagged: Vec<String>,
}

/// The display filter that flags what must never appear: a bad IPv4 header, TCP or
/// UDP checksum (field `*.checksum.status`, value "Bad", with checksum validation
/// turned on) or a frame a dissector found malformed (`_ws.malformed`).
pub const BAD_FILTER: &str = "ip.checksum.status == \"Bad\" || tcp.checksum.status == \"Bad\" \
     || udp.checksum.status == \"Bad\" || icmp.checksum.status == \"Bad\" || _ws.malformed";

/// tshark options turning checksum validation on (off by default in Wireshark).
const VALIDATE: [&str; 6] = [
    "-o",
    "ip.check_checksum:TRUE",
    "-o",
    "tcp.check_checksum:TRUE",
    "-o",
    "udp.check_checksum:TRUE",
];

/// Runs tshark with `args`, bounded in time (coreutils `timeout`).
fn tshark(args: &[&str]) -> String {
    let mut a = vec!["--kill-after=5", "120", "tshark"];
    a.extend_from_slice(args);
    run("timeout", &a)
}

/// Runs tshark over `pcap` with checksum validation on.
pub fn tshark_check(pcap: &Path) -> TsharkReport {
    let file = pcap.to_str().expect("utf-8 path");
    let count = |filter: Option<&str>| -> Vec<String> {
        let mut args = vec!["-n", "-r", file];
        args.extend_from_slice(&VALIDATE);
        if let Some(f) = filter {
            args.extend_from_slice(&["-Y", f]);
        }
        args.extend_from_slice(&["-T", "fields", "-e", "frame.number", "-e", "_ws.col.Info"]);
        tshark(&args)
            .lines()
            .map(str::to_owned)
            .filter(|l| !l.is_empty())
            .collect()
    };
    TsharkReport {
        frames: count(None).len(),
        flagged: count(Some(BAD_FILTER)),
    }
}

/// Frames of `pcap` matching display filter `filter` (checksum validation on).
pub fn tshark_count(pcap: &Path, filter: &str) -> usize {
    let file = pcap.to_str().expect("utf-8 path");
    let mut args = vec!["-n", "-r", file];
    args.extend_from_slice(&VALIDATE);
    args.extend_from_slice(&["-Y", filter, "-T", "fields", "-e", "frame.number"]);
    tshark(&args).lines().filter(|l| !l.is_empty()).count()
}

/// A temporary file path, removed on drop.
pub struct TempPath(pub PathBuf);

impl TempPath {
    pub fn new(name: &str) -> Self {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        Self(std::env::temp_dir().join(format!(
            "pvnet-{}-{}-{name}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        )))
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if std::env::var("PVNET_KEEP_PCAP").as_deref() == Ok("1") {
            eprintln!("kept {}", self.0.display());
            return;
        }
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Appends a line to stderr right away (test progress in `--nocapture` runs).
pub fn note(msg: impl AsRef<str>) {
    let mut e = std::io::stderr().lock();
    let _ = writeln!(e, "{}", msg.as_ref());
}

/// The kernel pings `target` from a raw ICMP socket opened in `host`'s namespace
/// (no `ping` binary needed): `count` echo requests, each must be answered within
/// `timeout`. Returns how many were answered.
pub fn kernel_ping(host: &HostNs, target: [u8; 4], count: u16, timeout: Duration) -> u16 {
    host.within(move || {
        // SAFETY: plain socket(2) call; the result is checked and owned below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP) };
        assert!(
            fd >= 0,
            "raw ICMP socket: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: fd is a fresh descriptor nobody else owns.
        let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let raw = std::os::fd::AsRawFd::as_raw_fd(&sock);
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 100_000,
        };
        // SAFETY: SO_RCVTIMEO takes a timeval; pointer and size describe `tv`.
        let r = unsafe {
            libc::setsockopt(
                raw,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        assert_eq!(r, 0, "SO_RCVTIMEO");
        let dst = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(target),
            },
            sin_zero: [0; 8],
        };
        let ident = 0x4b50u16;
        let mut answered = 0;
        for seq in 1..=count {
            let mut req = vec![8u8, 0, 0, 0];
            req.extend_from_slice(&ident.to_be_bytes());
            req.extend_from_slice(&seq.to_be_bytes());
            req.extend_from_slice(b"pvnet kernel ping payload");
            let c = netback::offload::internet_checksum(&req);
            req[2..4].copy_from_slice(&c.to_be_bytes());
            // SAFETY: buffer and address are live locals of the given sizes.
            let n = unsafe {
                libc::sendto(
                    raw,
                    req.as_ptr().cast(),
                    req.len(),
                    0,
                    (&dst as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            };
            assert_eq!(
                n,
                req.len() as isize,
                "sendto: {}",
                std::io::Error::last_os_error()
            );
            let deadline = Instant::now() + timeout;
            while Instant::now() < deadline {
                let mut buf = [0u8; 1500];
                // SAFETY: receives into a live local buffer of its length.
                let n = unsafe { libc::recv(raw, buf.as_mut_ptr().cast(), buf.len(), 0) };
                if n <= 0 {
                    continue;
                }
                let pkt = &buf[..n as usize];
                // A raw socket gets the IP header too.
                let ihl = usize::from(pkt[0] & 0x0f) * 4;
                let Some(icmp) = pkt.get(ihl..) else { continue };
                let is_reply = icmp.len() >= 8
                    && icmp[0] == 0
                    && icmp[4..6] == ident.to_be_bytes()
                    && icmp[6..8] == seq.to_be_bytes()
                    && pkt[12..16] == target
                    && netback::offload::internet_checksum(icmp) == 0
                    && icmp[8..] == req[8..];
                if is_reply {
                    answered += 1;
                    break;
                }
            }
        }
        answered
    })
}
