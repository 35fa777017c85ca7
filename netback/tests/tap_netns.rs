//! Real TAP devices, as root, each test in its own fresh network namespace.
//!
//! The test plays the guest: it writes Ethernet frames into the TAP fd and reads what the
//! kernel of the namespace sends back. All addresses (10.213.x.0/24) exist only inside
//! the test's namespace, every loop is bounded in time and count, and a guard deletes the
//! namespace (and with it everything inside) even when an assertion fails.
//!
//! Not root: the tests fail with an explanation, unless PVNET_SKIP_ROOT_TESTS=1.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use netback::offload::*;
use netback::tap::*;
use netback::virtio_net_hdr::*;

const DEADLINE: Duration = Duration::from_secs(10);
const MAX_FRAMES: usize = 5000;
const GUEST_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x02];

fn root_or_skip(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("PVNET_SKIP_ROOT_TESTS").as_deref() == Ok("1") {
        eprintln!("{test}: not run: needs root and PVNET_SKIP_ROOT_TESTS=1 is set");
        return false;
    }
    panic!(
        "{test} needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) to create a network namespace \
         and a TAP: run the tests as root, or set PVNET_SKIP_ROOT_TESTS=1 to skip them"
    );
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {cmd}: {e} (is iproute2 installed?)"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A fresh named network namespace, deleted on drop (which also destroys every device
/// still inside it).
struct TestNs {
    name: String,
}

impl TestNs {
    fn new(tag: &str) -> Self {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "pvnet-test-{tag}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        run("ip", &["netns", "add", &name]);
        let ns = Self { name };
        // No IPv6 chatter (router solicitations, MLD) on the TAPs: only what we cause.
        ns.exec(&["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"]);
        ns.exec(&["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    fn path(&self) -> PathBuf {
        netns_path(&self.name)
    }

    fn ip(&self, args: &[&str]) -> String {
        let mut a = vec!["-n", self.name.as_str()];
        a.extend_from_slice(args);
        run("ip", &a)
    }

    fn exec(&self, args: &[&str]) -> String {
        let mut a = vec!["netns", "exec", self.name.as_str()];
        a.extend_from_slice(args);
        run("ip", &a)
    }

    /// Whether `path` exists in this namespace's view of /sys (`ip netns exec` mounts it).
    fn sys_exists(&self, path: &str) -> bool {
        Command::new("ip")
            .args(["netns", "exec", &self.name, "test", "-e", path])
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// Waits (bounded) until `path` is gone: the kernel finishes unregistering a device
    /// shortly after its last fd closes, once the device's last references drop.
    fn gone(&self, path: &str) -> bool {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if !self.sys_exists(path) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn sys_read(&self, path: &str) -> String {
        self.exec(&["cat", path]).trim().to_owned()
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

// ---- frames the "guest" writes ----------------------------------------------------

fn eth(dst: [u8; 6], ethertype: u16) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&GUEST_MAC);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

fn ipv4(f: &mut Vec<u8>, proto: u8, src: Ipv4Addr, dst: Ipv4Addr, l4_len: usize) {
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&((20 + l4_len) as u16).to_be_bytes());
    f.extend_from_slice(&[0x12, 0x34, 0x40, 0, 64, proto, 0, 0]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
}

fn icmp_echo_request(
    host_mac: MacAddr,
    guest: Ipv4Addr,
    host: Ipv4Addr,
    id: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut f = eth(host_mac.0, ETH_P_IP);
    ipv4(&mut f, 1, guest, host, 8 + payload.len());
    let start = f.len();
    f.extend_from_slice(&[8, 0, 0, 0]);
    f.extend_from_slice(&id.to_be_bytes());
    f.extend_from_slice(&1u16.to_be_bytes());
    f.extend_from_slice(payload);
    let c = internet_checksum(&f[start..]);
    f[start + 2..start + 4].copy_from_slice(&c.to_be_bytes());
    fill_ipv4_header_checksum(&mut f).unwrap();
    f
}

fn arp_reply(to_mac: [u8; 6], guest: Ipv4Addr, to_ip: [u8; 4]) -> Vec<u8> {
    let mut f = eth(to_mac, 0x0806);
    f.extend_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 2]);
    f.extend_from_slice(&GUEST_MAC);
    f.extend_from_slice(&guest.octets());
    f.extend_from_slice(&to_mac);
    f.extend_from_slice(&to_ip);
    f
}

/// If `f` is an ARP request for `ip`, returns the asker's (MAC, IP).
fn arp_request_for(f: &[u8], ip: Ipv4Addr) -> Option<([u8; 6], [u8; 4])> {
    if f.len() >= 42 && f[12..14] == [0x08, 0x06] && f[20..22] == [0, 1] && f[38..42] == ip.octets()
    {
        Some((f[22..28].try_into().ok()?, f[28..32].try_into().ok()?))
    } else {
        None
    }
}

/// Reads frames from any of `queues` until `pick` returns Some, answering ARP for
/// `guest` on the way. Bounded by DEADLINE and MAX_FRAMES.
fn read_until<T>(
    queues: &[TapQueue],
    guest: Ipv4Addr,
    mut pick: impl FnMut(usize, &VirtioNetHdr, &[u8]) -> Option<T>,
) -> T {
    let ep = Epoll::new().unwrap();
    for q in queues {
        ep.add(q, q.index() as u64, Interest::READABLE).unwrap();
    }
    let mut events = Events::with_capacity(8);
    let mut batch = RxBatch::new(16, MAX_FRAME_LEN);
    let start = Instant::now();
    let mut seen = 0;
    while start.elapsed() < DEADLINE && seen < MAX_FRAMES {
        ep.wait(&mut events, Some(Duration::from_millis(200)))
            .unwrap();
        for q in queues {
            q.read_batch(&mut batch).unwrap();
            for (hdr, frame) in batch.iter() {
                seen += 1;
                if let Some((mac, ip)) = arp_request_for(frame, guest) {
                    let reply = arp_reply(mac, guest, ip);
                    let r = q.write_frame(&VirtioNetHdr::NONE, &[&reply]).unwrap();
                    assert!(matches!(r, WriteOutcome::Written(42)), "{r:?}");
                    continue;
                }
                if let Some(t) = pick(q.index(), hdr, frame) {
                    return t;
                }
            }
        }
    }
    panic!("expected frame did not arrive within {DEADLINE:?} / {seen} frames");
}

fn echo_reply_check(
    frame: &[u8],
    host: Ipv4Addr,
    guest: Ipv4Addr,
    id: u16,
    payload: &[u8],
) -> bool {
    let Ok(info) = parse_frame(frame) else {
        return false;
    };
    let l3 = info.l3_offset;
    if info.l4_proto != 1
        || frame[l3 + 12..l3 + 16] != host.octets()
        || frame[l3 + 16..l3 + 20] != guest.octets()
    {
        return false;
    }
    let icmp = &frame[info.l4_offset..info.ip_end];
    if icmp[0] != 0 || icmp[4..6] != id.to_be_bytes() {
        return false;
    }
    assert_eq!(&frame[..6], &GUEST_MAC, "reply is addressed to the guest");
    assert!(
        verify_ipv4_header_checksum(frame).unwrap(),
        "kernel's IPv4 header checksum"
    );
    assert_eq!(
        internet_checksum(icmp),
        0,
        "kernel's ICMP checksum must verify"
    );
    assert_eq!(&icmp[8..], payload);
    true
}

#[test]
fn tap_config_ping_and_truncation() {
    if !root_or_skip("tap_config_ping_and_truncation") {
        return;
    }
    let ns = TestNs::new("ping");
    let mut tap = TapBuilder::new("pvtap0")
        .mtu(Some(1400))
        .create_in_netns(&ns.path())
        .unwrap();
    assert_eq!(tap.name(), "pvtap0");
    assert!(tap.ifindex() > 0);
    // Configured as asked, inside the namespace only.
    assert_eq!(
        ns.sys_read("/sys/class/net/pvtap0/address"),
        "fe:ff:ff:ff:ff:ff"
    );
    assert_eq!(ns.sys_read("/sys/class/net/pvtap0/mtu"), "1400");
    let flags = u32::from_str_radix(
        ns.sys_read("/sys/class/net/pvtap0/flags")
            .trim_start_matches("0x"),
        16,
    )
    .unwrap();
    assert_eq!(
        flags & libc::IFF_UP as u32,
        libc::IFF_UP as u32,
        "link is up"
    );
    let tun_flags = u32::from_str_radix(
        ns.sys_read("/sys/class/net/pvtap0/tun_flags")
            .trim_start_matches("0x"),
        16,
    )
    .unwrap();
    let want = (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as u32;
    assert_eq!(tun_flags & want, want, "tun_flags {tun_flags:#x}");
    assert!(
        !std::path::Path::new("/sys/class/net/pvtap0").exists(),
        "must not appear outside the namespace"
    );

    // Offloads can change at run time; invalid sets are refused before the kernel.
    tap.set_offloads(Offloads::CSUM | Offloads::TSO6).unwrap();
    assert!(matches!(
        tap.set_offloads(Offloads::TSO4),
        Err(TapError::InvalidOffloads(_))
    ));
    assert_eq!(tap.offloads(), Offloads::CSUM | Offloads::TSO6);
    tap.set_offloads(Offloads::NONE).unwrap();

    let host = Ipv4Addr::new(10, 213, 1, 1);
    let guest = Ipv4Addr::new(10, 213, 1, 2);
    ns.ip(&["addr", "add", "10.213.1.1/24", "dev", "pvtap0"]);
    let payload: Vec<u8> = (0..56u8).collect();
    let req = icmp_echo_request(tap.mac(), guest, host, 0x1234, &payload);
    // Gathered from two segments: Ethernet header and the rest.
    let q = &tap.queues()[0];
    let r = q
        .write_frame(&VirtioNetHdr::NONE, &[&req[..14], &req[14..]])
        .unwrap();
    assert!(
        matches!(r, WriteOutcome::Written(n) if n == req.len()),
        "{r:?}"
    );
    let hdr = read_until(tap.queues(), guest, |_, h, f| {
        echo_reply_check(f, host, guest, 0x1234, &payload).then_some(*h)
    });
    assert!(!hdr.is_gso(), "{hdr:?}");
    assert!(
        !hdr.needs_csum(),
        "no CSUM offload: the kernel completes checksums"
    );
    assert_eq!(hdr.num_buffers, 0);

    // A frame larger than the buffer is reported as truncated and counted, not returned.
    let big: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
    let req = icmp_echo_request(tap.mac(), guest, host, 0x4321, &big);
    assert!(matches!(
        q.write_frame(&VirtioNetHdr::NONE, &[&req]).unwrap(),
        WriteOutcome::Written(_)
    ));
    let before = q.stats().rx_truncated;
    let ep = Epoll::new().unwrap();
    ep.add(q, 0, Interest::READABLE).unwrap();
    let mut ev = Events::with_capacity(1);
    let start = Instant::now();
    let mut small = [0u8; 100];
    let mut h = VirtioNetHdr::NONE;
    let truncated_len = loop {
        assert!(start.elapsed() < DEADLINE, "big echo reply never arrived");
        ep.wait(&mut ev, Some(Duration::from_millis(200))).unwrap();
        match q.read_frame(&mut h, &mut small).unwrap() {
            ReadOutcome::Truncated(n) => break n,
            ReadOutcome::Frame(_) | ReadOutcome::WouldBlock => {}
        }
    };
    assert!(truncated_len > small.len(), "{truncated_len}");
    assert_eq!(q.stats().rx_truncated, before + 1);
    let s = q.stats();
    assert!(s.tx_frames >= 2 && s.rx_frames >= 1, "{s:?}");

    drop(tap);
    assert!(ns.gone("/sys/class/net/pvtap0"), "TAP removed when dropped");
}

#[test]
fn tap_gso_tcpv4_super_frame_from_kernel_socket() {
    if !root_or_skip("tap_gso_tcpv4_super_frame_from_kernel_socket") {
        return;
    }
    let ns = TestNs::new("gso");
    let tap = TapBuilder::new("pvtap1")
        .offloads(Offloads::CSUM | Offloads::TSO4)
        .create_in_netns(&ns.path())
        .unwrap();
    let host = Ipv4Addr::new(10, 213, 2, 1);
    let guest = Ipv4Addr::new(10, 213, 2, 2);
    ns.ip(&["addr", "add", "10.213.2.1/24", "dev", "pvtap1"]);
    ns.ip(&[
        "neigh",
        "replace",
        "10.213.2.2",
        "lladdr",
        "02:00:00:00:00:02",
        "dev",
        "pvtap1",
        "nud",
        "permanent",
    ]);

    // A kernel TCP client in the namespace connects to the "guest" and sends data.
    const DATA: usize = 60_000;
    let pattern: Vec<u8> = (0..DATA).map(|i| (i % 251) as u8).collect();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let (sent_tx, sent_rx) = mpsc::channel::<std::io::Result<usize>>();
    let path = ns.path();
    let data = pattern.clone();
    let client = std::thread::spawn(move || {
        run_in_netns(&path, move || {
            use std::io::Write;
            let addr = SocketAddr::from((Ipv4Addr::new(10, 213, 2, 2), 8080));
            let r = TcpStream::connect_timeout(&addr, Duration::from_secs(8)).and_then(|mut s| {
                s.set_nonblocking(true)?;
                let n = s.write(&data)?;
                Ok((s, n))
            });
            match r {
                Ok((s, n)) => {
                    let _ = sent_tx.send(Ok(n));
                    let _ = done_rx.recv_timeout(Duration::from_secs(15));
                    drop(s);
                }
                Err(e) => {
                    let _ = sent_tx.send(Err(e));
                }
            }
        })
    });

    const OUR_ISN: u32 = 5000;
    let mut client_isn = None;
    let q = &tap.queues()[0];
    let (hdr, mut frame) = read_until(tap.queues(), guest, |_, h, f| {
        let info = parse_frame(f).ok()?;
        if info.l4_proto != IPPROTO_TCP {
            return None;
        }
        let l4 = info.l4_offset;
        let flags = f[l4 + 13];
        if flags & 0x02 != 0 {
            // SYN: answer SYN-ACK with MSS 1460 and a 64 KiB window.
            let isn = u32::from_be_bytes(f[l4 + 4..l4 + 8].try_into().ok()?);
            client_isn = Some(isn);
            let mut r = eth(tap.mac().0, ETH_P_IP);
            ipv4(&mut r, IPPROTO_TCP, guest, host, 24);
            r.extend_from_slice(&f[l4 + 2..l4 + 4]); // our port
            r.extend_from_slice(&f[l4..l4 + 2]); // their port
            r.extend_from_slice(&OUR_ISN.to_be_bytes());
            r.extend_from_slice(&isn.wrapping_add(1).to_be_bytes());
            r.extend_from_slice(&[0x60, 0x12, 0xff, 0xff, 0, 0, 0, 0, 2, 4, 0x05, 0xb4]);
            fill_ipv4_header_checksum(&mut r).unwrap();
            fill_l4_checksum(&mut r).unwrap();
            let w = q.write_frame(&VirtioNetHdr::NONE, &[&r]).unwrap();
            assert!(matches!(w, WriteOutcome::Written(_)), "{w:?}");
            return None;
        }
        h.is_gso().then(|| (*h, f.to_vec()))
    });

    let sent = sent_rx
        .recv_timeout(DEADLINE)
        .expect("client thread reports")
        .expect("client connected and wrote");
    assert!(sent > 0);
    // What the TAP delivered: a TCPv4 super-frame with a partial checksum.
    assert_eq!(hdr.gso_kind(), VIRTIO_NET_HDR_GSO_TCPV4, "{hdr:?}");
    assert!(hdr.gso_size > 0 && hdr.gso_size <= 1460, "{hdr:?}");
    assert!(hdr.needs_csum(), "{hdr:?}");
    assert_eq!((hdr.csum_start, hdr.csum_offset), (34, 16));
    let info = parse_frame(&frame).unwrap();
    let payload_off = info.l4_offset + tcp_header_len(&frame, &info).unwrap();
    let payload_len = info.ip_end - payload_off;
    assert!(
        payload_len > usize::from(hdr.gso_size),
        "super-frame carries more than one MSS: {payload_len}"
    );
    assert!(usize::from(hdr.hdr_len) >= payload_off && usize::from(hdr.hdr_len) <= frame.len());

    // Our offload code agrees with the kernel: finishing the partial checksum verifies,
    // and software segmentation gives valid MSS-sized segments carrying the client's bytes.
    complete_partial_checksum(&mut frame, hdr.csum_start, hdr.csum_offset).unwrap();
    assert!(
        verify_l4_checksum(&frame).unwrap(),
        "kernel's partial checksum completed by offload.rs"
    );
    let seq = u32::from_be_bytes(
        frame[info.l4_offset + 4..info.l4_offset + 8]
            .try_into()
            .unwrap(),
    );
    let stream_off = seq.wrapping_sub(client_isn.unwrap().wrapping_add(1)) as usize;
    let mut seg = TcpSegmenter::new(&frame, hdr.gso_size).unwrap();
    let mut out = vec![0u8; seg.max_segment_len()];
    let mut reassembled = Vec::new();
    while let Some(r) = seg.next_into(&mut out) {
        let n = r.unwrap();
        assert!(n <= 14 + 20 + 20 + usize::from(hdr.gso_size) + 40);
        assert!(verify_l4_checksum(&out[..n]).unwrap());
        assert!(verify_ipv4_header_checksum(&out[..n]).unwrap());
        reassembled.extend_from_slice(&out[seg.header_len()..n]);
    }
    assert_eq!(reassembled, pattern[stream_off..stream_off + payload_len]);

    let _ = done_tx.send(());
    client
        .join()
        .expect("client thread")
        .expect("entered the namespace");
}

#[test]
fn tap_multiqueue_two_fds_both_work() {
    if !root_or_skip("tap_multiqueue_two_fds_both_work") {
        return;
    }
    let ns = TestNs::new("mq");
    let tap = TapBuilder::new("pvtap2")
        .queues(2)
        .create_in_netns(&ns.path())
        .unwrap();
    assert_eq!(tap.queues().len(), 2);
    assert!(tap.queue(2).is_none());
    let tun_flags = u32::from_str_radix(
        ns.sys_read("/sys/class/net/pvtap2/tun_flags")
            .trim_start_matches("0x"),
        16,
    )
    .unwrap();
    assert_ne!(
        tun_flags & libc::IFF_MULTI_QUEUE as u32,
        0,
        "tun_flags {tun_flags:#x}"
    );
    let queues = ns.exec(&["ls", "/sys/class/net/pvtap2/queues"]);
    assert!(
        queues.contains("tx-0") && queues.contains("tx-1") && !queues.contains("tx-2"),
        "{queues}"
    );

    let host = Ipv4Addr::new(10, 213, 3, 1);
    let guest = Ipv4Addr::new(10, 213, 3, 2);
    ns.ip(&["addr", "add", "10.213.3.1/24", "dev", "pvtap2"]);
    ns.ip(&[
        "neigh",
        "replace",
        "10.213.3.2",
        "lladdr",
        "02:00:00:00:00:02",
        "dev",
        "pvtap2",
        "nud",
        "permanent",
    ]);
    let payload = [0xabu8; 32];
    for q in tap.queues() {
        let req = icmp_echo_request(tap.mac(), guest, host, 0xa0 + q.index() as u16, &payload);
        assert!(matches!(
            q.write_frame(&VirtioNetHdr::NONE, &[&req]).unwrap(),
            WriteOutcome::Written(_)
        ));
        assert_eq!(q.stats().tx_frames, 1, "queue {} wrote", q.index());
    }
    // Collect both replies across both queues with one epoll.
    let mut got = [false; 2];
    read_until(tap.queues(), guest, |_, _, f| {
        for (i, g) in got.iter_mut().enumerate() {
            if echo_reply_check(f, host, guest, 0xa0 + i as u16, &payload) {
                *g = true;
            }
        }
        (got == [true, true]).then_some(())
    });
    let rx: u64 = tap.queues().iter().map(|q| q.stats().rx_frames).sum();
    assert!(rx >= 2);

    // Reads on both fds. Which queue the kernel picks for a flow is its choice, so make
    // it deterministic by detaching the other queue (TUNSETQUEUE), then provoke a reply:
    // a TCP SYN to a closed port, answered with a RST that must come out of the one
    // attached queue.
    for (active, idle) in [(0usize, 1usize), (1, 0)] {
        tap.queues()[idle].set_enabled(false).unwrap();
        tap.queues()[active].set_enabled(true).unwrap();
        let sport = 40000 + active as u16;
        let mut syn = eth(tap.mac().0, ETH_P_IP);
        ipv4(&mut syn, IPPROTO_TCP, guest, host, 20);
        syn.extend_from_slice(&sport.to_be_bytes());
        syn.extend_from_slice(&9u16.to_be_bytes());
        syn.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
        fill_ipv4_header_checksum(&mut syn).unwrap();
        fill_l4_checksum(&mut syn).unwrap();
        let q = &tap.queues()[active];
        assert!(matches!(
            q.write_frame(&VirtioNetHdr::NONE, &[&syn]).unwrap(),
            WriteOutcome::Written(_)
        ));
        let qi = read_until(tap.queues(), guest, |qi, _, f| {
            let info = parse_frame(f).ok()?;
            let l4 = info.l4_offset;
            let rst = info.l4_proto == IPPROTO_TCP && f[l4 + 13] & 0x04 != 0;
            (rst && f[l4 + 2..l4 + 4] == sport.to_be_bytes()).then(|| {
                assert!(verify_l4_checksum(f).unwrap(), "kernel RST checksum");
                qi
            })
        });
        assert_eq!(qi, active, "reply must come out of the only attached queue");
    }
    tap.queues()[0].set_enabled(true).unwrap();
    assert!(tap.queues().iter().all(|q| q.is_enabled()));

    // Writes on either fd reached the one device.
    let rx_kernel: u64 = ns
        .sys_read("/sys/class/net/pvtap2/statistics/rx_packets")
        .parse()
        .unwrap();
    assert!(rx_kernel >= 2, "kernel received {rx_kernel}");
    drop(tap);
    assert!(ns.gone("/sys/class/net/pvtap2"));
}

#[test]
fn tap_bridge_enslave_errors_and_cleanup() {
    if !root_or_skip("tap_bridge_enslave_errors_and_cleanup") {
        return;
    }
    let ns = TestNs::new("br");
    ns.ip(&["link", "add", "pvbr0", "type", "bridge"]);
    let tap = TapBuilder::new("pvtap3")
        .bridge(Some("pvbr0".into()))
        .create_in_netns(&ns.path())
        .unwrap();
    assert_eq!(tap.bridge(), Some("pvbr0"));
    assert!(
        ns.sys_exists("/sys/class/net/pvtap3/brport"),
        "TAP is a bridge port"
    );
    assert!(ns.sys_exists("/sys/class/net/pvbr0/brif/pvtap3"));
    // Why Xen uses fe:ff:ff:ff:ff:ff: a bridge takes the lowest port MAC, so with an
    // uplink port present it never adopts the vif's address.
    ns.ip(&[
        "link",
        "add",
        "pvup0",
        "address",
        "02:00:00:00:00:10",
        "type",
        "veth",
        "peer",
        "name",
        "pvup1",
    ]);
    ns.ip(&["link", "set", "pvup0", "master", "pvbr0"]);
    assert_eq!(
        ns.sys_read("/sys/class/net/pvbr0/address"),
        "02:00:00:00:00:10"
    );
    drop(tap);
    assert!(ns.gone("/sys/class/net/pvtap3"), "TAP removed on drop");
    assert!(
        !ns.sys_exists("/sys/class/net/pvbr0/brif/pvtap3"),
        "and detached from the bridge"
    );
    assert!(
        ns.sys_exists("/sys/class/net/pvbr0"),
        "the bridge itself stays"
    );

    // Missing bridge: typed error with the fix, and no TAP left behind.
    let err = TapBuilder::new("pvtap4")
        .bridge(Some("nosuchbr".into()))
        .create_in_netns(&ns.path())
        .unwrap_err();
    assert!(
        matches!(&err, TapError::BridgeNotFound { bridge } if bridge == "nosuchbr"),
        "{err}"
    );
    assert!(
        err.to_string().contains("ip link add nosuchbr type bridge"),
        "{err}"
    );
    assert!(
        ns.gone("/sys/class/net/pvtap4"),
        "failed create leaves nothing"
    );

    // Not a bridge.
    let err = TapBuilder::new("pvtap4")
        .bridge(Some("lo".into()))
        .create_in_netns(&ns.path())
        .unwrap_err();
    assert!(matches!(err, TapError::NotABridge { .. }), "{err}");
    assert!(ns.gone("/sys/class/net/pvtap4"));

    // Name clashes: with our own TAP (IFF_TUN_EXCL) and with another device type.
    let first = TapBuilder::new("pvtap5")
        .create_in_netns(&ns.path())
        .unwrap();
    let err = TapBuilder::new("pvtap5")
        .create_in_netns(&ns.path())
        .unwrap_err();
    assert!(matches!(err, TapError::NameInUse { .. }), "{err}");
    let err = TapBuilder::new("pvbr0")
        .create_in_netns(&ns.path())
        .unwrap_err();
    assert!(matches!(err, TapError::NameInUse { .. }), "{err}");
    assert!(
        ns.sys_exists("/sys/class/net/pvtap5"),
        "the clash did not hurt the first TAP"
    );
    drop(first);
    assert!(ns.gone("/sys/class/net/pvtap5"));

    // A namespace that does not exist.
    let err = TapBuilder::new("pvtap6")
        .create_in_netns(&netns_path("pvnet-test-missing-ns"))
        .unwrap_err();
    assert!(matches!(err, TapError::Netns { .. }), "{err}");
}
