//! Bulk TCP between a kernel socket in the host namespace and a smoltcp socket in a
//! guest, byte-exact: the receiver's SHA-256 of the stream must equal the digest of
//! the stream the sender generated (computed up front, so the sender does not hash).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use smoltcp::iface::SocketSet;
use smoltcp::socket::tcp;
use smoltcp::wire::Ipv4Address;

use super::*;

/// Wall-clock bound of one transfer (1 GB at 100 Mbit/s would still fit).
pub const LIMIT: Duration = Duration::from_secs(180);
/// smoltcp socket buffers (the receive buffer is the window it advertises).
const SOCK_BUF: usize = 4 << 20;

/// A reproducible stream: a pseudo-random block of prime length repeated, so a chunk
/// delivered at a wrong offset (anything but a multiple of ~1 MB) changes the digest.
#[derive(Clone)]
pub struct Pattern {
    block: Arc<Vec<u8>>,
    /// Receivers hash what they get (tests); off for throughput runs, where the hash
    /// would be the bottleneck (benchmarks only: tests always verify).
    pub verify: bool,
    /// Congestion control of the kernel sockets that send it (`TCP_CONGESTION`);
    /// `None`: the namespace's default (on this machine's kernel, bbr).
    pub sender_cc: Option<&'static str>,
}

impl Pattern {
    pub fn new(seed: u64) -> Self {
        const LEN: usize = 1_000_003;
        let mut x = seed | 1;
        let block = (0..LEN)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        Self {
            block: Arc::new(block),
            verify: true,
            sender_cc: None,
        }
    }

    /// Bytes `pos..pos + buf.len()` of the stream.
    pub fn fill(&self, pos: u64, buf: &mut [u8]) {
        let len = self.block.len();
        let mut at = (pos % len as u64) as usize;
        let mut off = 0;
        while off < buf.len() {
            let n = (len - at).min(buf.len() - off);
            buf[off..off + n].copy_from_slice(&self.block[at..at + n]);
            off += n;
            at = 0;
        }
    }

    /// SHA-256 of the first `total` bytes.
    pub fn digest(&self, total: u64) -> [u8; 32] {
        let mut h = Sha256::new();
        let mut pos = 0u64;
        let len = self.block.len() as u64;
        while pos < total {
            let at = (pos % len) as usize;
            let n = (len - at as u64).min(total - pos) as usize;
            h.update(&self.block[at..at + n]);
            pos += n as u64;
        }
        h.finalize().into()
    }
}

/// What a receiver measured.
#[derive(Debug, Clone, Copy)]
pub struct Transfer {
    pub bytes: u64,
    /// First byte to last byte at the receiver.
    pub secs: f64,
    pub digest: [u8; 32],
}

impl Transfer {
    pub fn gbps(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.secs.max(1e-9) / 1e9
    }
}

/// Busy CPU time of the whole machine so far (all CPUs, from `/proc/stat`: every
/// state but idle and iowait), to report what a transfer cost next to its rate.
pub fn machine_busy_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu = stat.lines().next()?.strip_prefix("cpu ")?;
    let ticks: Vec<u64> = cpu
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let busy: u64 = ticks
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != 3 && i != 4)
        .map(|(_, t)| t)
        .sum();
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| busy as f64 / hz as f64)
}

fn host_addr(port: u16) -> SocketAddr {
    SocketAddr::from((HOST_IP, port))
}

/// The kernel sends `total` bytes of `pattern` to guest `n` (smoltcp listening on
/// `port`, served on queue 0 of `nf` by this thread).
pub fn kernel_to_guest(
    host: &HostNs,
    nf: &mut Front,
    n: u8,
    port: u16,
    total: u64,
    pattern: &Pattern,
) -> Transfer {
    let start = Instant::now();
    let q = nf.queue(0).expect("queue 0");
    let mut iface = iface_for(q, n, start);
    let mut sockets = SocketSet::new(vec![]);
    let mut sock = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; SOCK_BUF]),
        tcp::SocketBuffer::new(vec![0; 1 << 16]),
    );
    sock.listen(port).expect("listen");
    let h = sockets.add(sock);
    let dst = SocketAddr::from((guest_ip(n), port));
    thread::scope(|s| {
        let sender = s.spawn(|| {
            host.within(|| {
                let deadline = Instant::now() + WAIT;
                let mut st = loop {
                    match TcpStream::connect_timeout(&dst, Duration::from_secs(1)) {
                        Ok(st) => break st,
                        Err(e) if Instant::now() < deadline => {
                            let _ = e;
                            thread::sleep(Duration::from_millis(50));
                        }
                        Err(e) => panic!("kernel could not connect to the guest: {e}"),
                    }
                };
                st.set_write_timeout(Some(Duration::from_secs(30)))
                    .expect("write timeout");
                kernel_send(&mut st, pattern, total);
                st.shutdown(std::net::Shutdown::Write).expect("shutdown");
                // Keep the socket until the guest has everything.
                let mut rest = [0u8; 16];
                let _ = st.set_read_timeout(Some(Duration::from_secs(30)));
                let _ = st.read(&mut rest);
            })
        });
        let mut hash = Sha256::new();
        let mut got = 0u64;
        let mut first: Option<Instant> = None;
        let mut last = Instant::now();
        while got < total {
            // One clock read per pass (smoltcp's time, the limits, the timestamps).
            let t = Instant::now();
            let ts = smoltcp::time::Instant::from_micros((t - start).as_micros() as i64);
            assert!(
                t - start < LIMIT,
                "guest received only {got} of {total} bytes"
            );
            assert!(
                !(sender.is_finished() && first.is_some() && t - last > WAIT),
                "sender gone, guest stuck at {got}"
            );
            let mut progressed = pump(&mut iface, q, &mut sockets, ts);
            let sock = sockets.get_mut::<tcp::Socket>(h);
            while sock.can_recv() {
                let k = sock
                    .recv(|buf| {
                        if pattern.verify {
                            hash.update(&*buf);
                        }
                        (buf.len(), buf.len())
                    })
                    .expect("recv");
                if k == 0 {
                    break;
                }
                first.get_or_insert(t);
                got += k as u64;
                last = t;
                progressed = true;
            }
            if !progressed {
                idle(&mut iface, q, &sockets, ts, Duration::from_millis(1));
            }
        }
        // The last pass's clock read is a little early: take the end now.
        last = Instant::now();
        let secs = last.duration_since(first.unwrap_or(last)).as_secs_f64();
        // Let the last ACKs and the FIN exchange out, then close.
        sockets.get_mut::<tcp::Socket>(h).close();
        let deadline = Instant::now() + WAIT;
        while !sender.is_finished() && Instant::now() < deadline {
            step(&mut iface, q, &mut sockets, start, Duration::from_millis(1));
        }
        sender.join().expect("kernel sender");
        Transfer {
            bytes: got,
            secs,
            digest: hash.finalize().into(),
        }
    })
}

/// Guest `n` sends `total` bytes of `pattern` to a kernel socket listening on
/// `port` in the host namespace.
pub fn guest_to_kernel(
    host: &HostNs,
    nf: &mut Front,
    n: u8,
    port: u16,
    total: u64,
    pattern: &Pattern,
) -> Transfer {
    let listener = host
        .within(|| TcpListener::bind(host_addr(port)))
        .expect("kernel listen");
    listener.set_nonblocking(true).expect("nonblocking");
    let start = Instant::now();
    let q = nf.queue(0).expect("queue 0");
    let mut iface = iface_for(q, n, start);
    let mut sockets = SocketSet::new(vec![]);
    let sock = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; 1 << 16]),
        tcp::SocketBuffer::new(vec![0; SOCK_BUF]),
    );
    let h = sockets.add(sock);
    let hip = HOST_IP;
    sockets
        .get_mut::<tcp::Socket>(h)
        .connect(
            iface.context(),
            (Ipv4Address::new(hip[0], hip[1], hip[2], hip[3]), port),
            49152 + u16::from(n),
        )
        .expect("connect");
    thread::scope(|s| {
        let receiver = s.spawn(|| {
            let deadline = Instant::now() + WAIT;
            let mut st = loop {
                match listener.accept() {
                    Ok((st, _)) => break st,
                    Err(e)
                        if e.kind() == std::io::ErrorKind::WouldBlock
                            && Instant::now() < deadline =>
                    {
                        thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => panic!("kernel accept: {e}"),
                }
            };
            st.set_nonblocking(false).expect("blocking");
            st.set_read_timeout(Some(Duration::from_secs(30)))
                .expect("read timeout");
            kernel_receive(&mut st, pattern)
        });
        let mut sent = 0u64;
        let mut closed = false;
        loop {
            let t = Instant::now();
            let ts = smoltcp::time::Instant::from_micros((t - start).as_micros() as i64);
            assert!(t - start < LIMIT, "guest sent only {sent} of {total} bytes");
            let mut progressed = pump(&mut iface, q, &mut sockets, ts);
            let sock = sockets.get_mut::<tcp::Socket>(h);
            while sent < total && sock.can_send() {
                let k = sock
                    .send(|buf| {
                        let k = (total - sent).min(buf.len() as u64) as usize;
                        pattern.fill(sent, &mut buf[..k]);
                        (k, k)
                    })
                    .expect("send");
                if k == 0 {
                    break;
                }
                sent += k as u64;
                progressed = true;
            }
            if sent == total && !closed {
                sock.close();
                closed = true;
            }
            if closed && receiver.is_finished() {
                break;
            }
            if progressed {
                // Hand the new data to the device right away.
                continue;
            }
            idle(&mut iface, q, &sockets, ts, Duration::from_millis(1));
        }
        receiver.join().expect("kernel receiver")
    })
}

/// Kernel TCP over a veth pair between two fresh namespaces: `total` bytes, SHA-256
/// checked, timed at the receiver.
pub fn veth(total: u64, pattern: &Pattern) -> Transfer {
    let a = HostNs::new("veth-a");
    let b = HostNs::new("veth-b");
    a.ip(&[
        "link", "add", "pva", "type", "veth", "peer", "name", "pvb", "netns", &b.name,
    ]);
    a.ip(&["addr", "add", "10.78.0.1/24", "dev", "pva"]);
    b.ip(&["addr", "add", "10.78.0.2/24", "dev", "pvb"]);
    a.ip(&["link", "set", "pva", "up"]);
    b.ip(&["link", "set", "pvb", "up"]);
    let addr = SocketAddr::from(([10, 78, 0, 2], 5003));
    let listener = b.within(|| TcpListener::bind(addr)).expect("listen");
    thread::scope(|s| {
        let rx = s.spawn(|| {
            let (mut st, _) = listener.accept().expect("accept");
            kernel_receive(&mut st, pattern)
        });
        a.within(|| {
            let mut st =
                TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
            kernel_send(&mut st, pattern, total);
        });
        rx.join().expect("receiver")
    })
}

/// A kernel socket sends `total` bytes of `pattern` (with the pattern's congestion
/// control, if it names one).
fn kernel_send(st: &mut TcpStream, pattern: &Pattern, total: u64) {
    if let Some(cc) = pattern.sender_cc {
        set_congestion_control(st, cc);
    }
    let mut buf = vec![0u8; 256 << 10];
    let mut pos = 0u64;
    while pos < total {
        let k = (total - pos).min(buf.len() as u64) as usize;
        pattern.fill(pos, &mut buf[..k]);
        st.write_all(&buf[..k]).expect("kernel send");
        pos += k as u64;
    }
}

/// A kernel socket reads until EOF, hashing if the pattern says so; timed from the
/// first byte to the last.
fn kernel_receive(st: &mut TcpStream, pattern: &Pattern) -> Transfer {
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let (mut got, mut first, mut last) = (0u64, None, Instant::now());
    loop {
        let k = st.read(&mut buf).expect("kernel recv");
        if k == 0 {
            break;
        }
        first.get_or_insert_with(Instant::now);
        if pattern.verify {
            hash.update(&buf[..k]);
        }
        got += k as u64;
        last = Instant::now();
    }
    Transfer {
        bytes: got,
        secs: last.duration_since(first.unwrap_or(last)).as_secs_f64(),
        digest: hash.finalize().into(),
    }
}

/// `TCP_CONGESTION` on a kernel socket (root may pick any available algorithm).
pub fn set_congestion_control(st: &TcpStream, cc: &str) {
    use std::os::fd::AsRawFd;
    // SAFETY: setsockopt reads `cc.len()` bytes from a valid buffer.
    let rc = unsafe {
        libc::setsockopt(
            st.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_CONGESTION,
            cc.as_ptr().cast(),
            cc.len() as libc::socklen_t,
        )
    };
    assert_eq!(
        rc,
        0,
        "TCP_CONGESTION {cc}: {}",
        std::io::Error::last_os_error()
    );
}
