//! [`Net`] over smoltcp TCP sockets: the iperf3 engine inside a pvnet guest.
//!
//! [`SmolNet`] owns a smoltcp `Interface` and `SocketSet` and borrows the guest's
//! device (a `netfront::Queue`, which implements `smoltcp::phy::Device`). One thread
//! drives everything: the engine moves bytes in and out of socket buffers, and
//! [`Net::wait`] polls the interface (frames in and out of the rings) and sleeps on
//! the device's event channel when there is nothing to do.
//!
//! smoltcp has no listen backlog: a listening socket becomes the connection. A
//! [`SmolListener`] therefore keeps a small pool of sockets listening on its port and
//! replaces each one that completes a handshake.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::Device;
use smoltcp::socket::tcp;
use smoltcp::wire::{HardwareAddress, IpCidr, IpEndpoint};

use super::net::Net;

/// A smoltcp device the engine can sleep on.
pub trait PollDevice: Device {
    /// Blocks until a frame may have arrived or `timeout` passed.
    fn wait_frames(&mut self, timeout: Duration);
}

impl<C: hv::env::EventChannel> PollDevice for netfront::Queue<C> {
    fn wait_frames(&mut self, timeout: Duration) {
        self.wait(Some(timeout));
    }
}

impl PollDevice for smoltcp::phy::Loopback {
    fn wait_frames(&mut self, _timeout: Duration) {
        // Frames are looped back within `poll`: nothing to wait for.
    }
}

/// Socket sizing of a [`SmolNet`].
#[derive(Clone, Copy, Debug)]
pub struct SmolConfig {
    /// Receive buffer per TCP socket (the advertised window).
    pub rx_buffer: usize,
    /// Send buffer per TCP socket.
    pub tx_buffer: usize,
    /// Sockets kept listening per listener (connections that may be mid-handshake
    /// at once; iperf3 opens its streams one after the other).
    pub backlog: usize,
    /// How long a closed socket may take to finish its FIN exchange before it is
    /// aborted and its buffers freed.
    pub close_linger: Duration,
}

impl Default for SmolConfig {
    fn default() -> Self {
        SmolConfig {
            rx_buffer: 256 * 1024,
            tx_buffer: 256 * 1024,
            backlog: 4,
            close_linger: Duration::from_secs(5),
        }
    }
}

/// A listening port of a [`SmolNet`].
#[derive(Debug)]
pub struct SmolListener {
    port: u16,
}

/// A TCP connection of a [`SmolNet`].
#[derive(Debug)]
pub struct SmolConn {
    handle: SocketHandle,
}

/// The smoltcp stack of one interface.
pub struct SmolNet<'d, D: PollDevice + ?Sized> {
    dev: &'d mut D,
    iface: Interface,
    sockets: SocketSet<'static>,
    epoch: Instant,
    cfg: SmolConfig,
    pools: HashMap<u16, Vec<SocketHandle>>,
    closing: Vec<(SocketHandle, Instant)>,
    next_port: u16,
}

const EPHEMERAL_FIRST: u16 = 49152;

impl<'d, D: PollDevice + ?Sized> SmolNet<'d, D> {
    /// An interface on `dev` with hardware address `hw` and the addresses `addrs`.
    pub fn new(dev: &'d mut D, hw: HardwareAddress, addrs: &[IpCidr], cfg: SmolConfig) -> Self {
        let epoch = Instant::now();
        let iface = Interface::new(Config::new(hw), dev, smoltcp::time::Instant::ZERO);
        let mut net = Self::with_interface(dev, iface, cfg);
        net.epoch = epoch;
        net.iface.update_ip_addrs(|a| {
            for c in addrs {
                // Capacity is smoltcp's IFACE_MAX_ADDR_COUNT; extra addresses are ignored.
                let _ = a.push(*c);
            }
        });
        net
    }

    /// A stack over an interface the caller configured (routes, addresses).
    pub fn with_interface(dev: &'d mut D, iface: Interface, cfg: SmolConfig) -> Self {
        SmolNet {
            dev,
            iface,
            sockets: SocketSet::new(Vec::new()),
            epoch: Instant::now(),
            cfg,
            pools: HashMap::new(),
            closing: Vec::new(),
            next_port: EPHEMERAL_FIRST,
        }
    }

    /// The interface (to add routes or addresses).
    pub fn iface(&mut self) -> &mut Interface {
        &mut self.iface
    }

    fn now(&self) -> smoltcp::time::Instant {
        smoltcp::time::Instant::from_micros(self.epoch.elapsed().as_micros() as i64)
    }

    fn new_socket(&self) -> tcp::Socket<'static> {
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; self.cfg.rx_buffer]),
            tcp::SocketBuffer::new(vec![0; self.cfg.tx_buffer]),
        );
        // Small control messages must not wait for Nagle (iperf3 sets TCP_NODELAY).
        s.set_nagle_enabled(false);
        s
    }

    fn listening_socket(&mut self, port: u16) -> io::Result<SocketHandle> {
        let mut s = self.new_socket();
        s.listen(port)
            .map_err(|e| io::Error::new(io::ErrorKind::AddrInUse, format!("listen {port}: {e}")))?;
        Ok(self.sockets.add(s))
    }

    fn sock(&mut self, h: SocketHandle) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(h)
    }

    fn poll(&mut self) {
        let now = self.now();
        self.iface.poll(now, &mut *self.dev, &mut self.sockets);
        self.reap(Instant::now());
    }

    /// Frees closed sockets; aborts those that overstayed their linger time.
    fn reap(&mut self, now: Instant) {
        let linger = self.cfg.close_linger;
        let mut i = 0;
        while i < self.closing.len() {
            let (h, since) = self.closing[i];
            let state = self.sockets.get::<tcp::Socket>(h).state();
            let done = matches!(state, tcp::State::Closed | tcp::State::TimeWait);
            if done || now.duration_since(since) > linger {
                if !done {
                    self.sock(h).abort();
                }
                self.sockets.remove(h);
                self.closing.swap_remove(i);
            } else {
                i += 1;
            }
        }
    }
}

fn endpoint(e: Option<IpEndpoint>) -> Option<SocketAddr> {
    e.map(|e| SocketAddr::new(e.addr.into(), e.port))
}

impl<D: PollDevice + ?Sized> Net for SmolNet<'_, D> {
    type Listener = SmolListener;
    type Conn = SmolConn;

    fn listen(&mut self, port: u16) -> io::Result<SmolListener> {
        if self.pools.contains_key(&port) {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("port {port} is already listening"),
            ));
        }
        let mut pool = Vec::with_capacity(self.cfg.backlog);
        for _ in 0..self.cfg.backlog.max(1) {
            pool.push(self.listening_socket(port)?);
        }
        self.pools.insert(port, pool);
        Ok(SmolListener { port })
    }

    fn accept(&mut self, l: &mut SmolListener) -> io::Result<Option<SmolConn>> {
        let Some(pool) = self.pools.get(&l.port).cloned() else {
            return Err(io::Error::new(io::ErrorKind::NotConnected, "not listening"));
        };
        for (i, h) in pool.iter().copied().enumerate() {
            let state = self.sockets.get::<tcp::Socket>(h).state();
            match state {
                tcp::State::Listen | tcp::State::SynReceived => continue,
                tcp::State::Closed => {
                    // A handshake that was reset: listen again on this slot.
                    self.sock(h)
                        .listen(l.port)
                        .map_err(|e| io::Error::other(format!("re-listen: {e}")))?;
                }
                _ => {
                    let fresh = self.listening_socket(l.port)?;
                    if let Some(p) = self.pools.get_mut(&l.port) {
                        p[i] = fresh;
                    }
                    return Ok(Some(SmolConn { handle: h }));
                }
            }
        }
        Ok(None)
    }

    fn connect(&mut self, to: SocketAddr) -> io::Result<SmolConn> {
        let port = self.next_port;
        self.next_port = if port == u16::MAX {
            EPHEMERAL_FIRST
        } else {
            port + 1
        };
        let mut s = self.new_socket();
        s.connect(self.iface.context(), IpEndpoint::from(to), port)
            .map_err(|e| io::Error::other(format!("connect {to}: {e}")))?;
        let handle = self.sockets.add(s);
        self.poll();
        Ok(SmolConn { handle })
    }

    fn recv(&mut self, c: &mut SmolConn, buf: &mut [u8]) -> io::Result<usize> {
        let s = self.sock(c.handle);
        if s.can_recv() {
            return s
                .recv_slice(buf)
                .map_err(|e| io::Error::other(format!("recv: {e}")));
        }
        use tcp::State::*;
        match s.state() {
            Listen | SynSent | SynReceived | Established | FinWait1 | FinWait2 => {
                Err(io::ErrorKind::WouldBlock.into())
            }
            CloseWait | LastAck | Closing | TimeWait | Closed => Ok(0),
        }
    }

    fn send(&mut self, c: &mut SmolConn, buf: &[u8]) -> io::Result<usize> {
        let s = self.sock(c.handle);
        use tcp::State::*;
        match s.state() {
            Listen | SynSent | SynReceived => Err(io::ErrorKind::WouldBlock.into()),
            Established | CloseWait => {
                if !s.can_send() {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                match s.send_slice(buf) {
                    Ok(0) => Err(io::ErrorKind::WouldBlock.into()),
                    Ok(n) => Ok(n),
                    Err(e) => Err(io::Error::other(format!("send: {e}"))),
                }
            }
            Closed => Err(io::ErrorKind::ConnectionReset.into()),
            FinWait1 | FinWait2 | Closing | TimeWait | LastAck => {
                Err(io::ErrorKind::BrokenPipe.into())
            }
        }
    }

    fn close(&mut self, c: SmolConn) {
        self.sock(c.handle).close();
        self.closing.push((c.handle, Instant::now()));
    }

    fn close_listener(&mut self, l: SmolListener) {
        for h in self.pools.remove(&l.port).unwrap_or_default() {
            self.sock(h).abort();
            self.closing.push((h, Instant::now()));
        }
    }

    fn listener_port(&self, l: &SmolListener) -> Option<u16> {
        Some(l.port)
    }

    fn local_addr(&self, c: &SmolConn) -> Option<SocketAddr> {
        endpoint(self.sockets.get::<tcp::Socket>(c.handle).local_endpoint())
    }

    fn peer_addr(&self, c: &SmolConn) -> Option<SocketAddr> {
        endpoint(self.sockets.get::<tcp::Socket>(c.handle).remote_endpoint())
    }

    fn wait(&mut self, timeout: Duration) {
        self.poll();
        if timeout.is_zero() {
            return;
        }
        let now = self.now();
        let d = match self.iface.poll_delay(now, &self.sockets) {
            Some(d) => Duration::from(d).min(timeout),
            None => timeout,
        };
        if !d.is_zero() {
            self.dev.wait_frames(d);
        }
        self.poll();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::phy::{Loopback, Medium};
    use smoltcp::wire::{EthernetAddress, IpAddress};

    #[test]
    fn loopback_connect_accept_echo_close() {
        let mut dev = Loopback::new(Medium::Ethernet);
        let hw = HardwareAddress::Ethernet(EthernetAddress([2, 0, 0, 0, 0, 1]));
        let mut net = SmolNet::new(
            &mut dev,
            hw,
            &[IpCidr::new(IpAddress::v4(127, 0, 0, 1), 8)],
            SmolConfig::default(),
        );
        let mut l = net.listen(7000).expect("listen");
        let mut c = net
            .connect("127.0.0.1:7000".parse().expect("addr"))
            .expect("connect");
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut s = loop {
            assert!(Instant::now() < deadline, "no connection");
            net.wait(Duration::from_millis(1));
            if let Some(s) = net.accept(&mut l).expect("accept") {
                break s;
            }
        };
        let mut sent = 0;
        while sent < 5 {
            assert!(Instant::now() < deadline);
            sent += net.send(&mut c, &b"hello"[sent..]).unwrap_or(0);
            net.wait(Duration::from_millis(1));
        }
        let mut got = Vec::new();
        let mut buf = [0u8; 16];
        while got.len() < 5 {
            assert!(Instant::now() < deadline, "no data");
            if let Ok(n) = net.recv(&mut s, &mut buf) {
                got.extend_from_slice(&buf[..n]);
            }
            net.wait(Duration::from_millis(1));
        }
        assert_eq!(got, b"hello");
        assert_eq!(
            net.peer_addr(&s).map(|a| a.port()),
            net.local_addr(&c).map(|a| a.port())
        );
        net.close(c);
        loop {
            assert!(Instant::now() < deadline, "no FIN");
            net.wait(Duration::from_millis(1));
            match net.recv(&mut s, &mut buf) {
                Ok(0) => break,
                Ok(_) => panic!("unexpected data"),
                Err(e) => assert_eq!(e.kind(), io::ErrorKind::WouldBlock),
            }
        }
        net.close(s);
        net.close_listener(l);
    }
}
