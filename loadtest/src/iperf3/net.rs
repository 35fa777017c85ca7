//! The byte-stream network the iperf3 engine runs on, and its kernel-TCP implementation.
//!
//! The engine never blocks on a socket: it asks [`Net`] to move what can be moved now
//! and, when nothing could, calls [`Net::wait`]. That is what a smoltcp stack in a
//! guest needs (one thread polls one interface, no thread per socket) and it is how the
//! kernel's non-blocking sockets work too, so one engine serves both:
//! * [`StdNet`]: `std::net` sockets, non-blocking, waited on with `poll(2)`;
//! * [`super::smol::SmolNet`]: smoltcp TCP sockets on any `smoltcp::phy::Device`
//!   (a netfront queue in a pvnet guest).
//!
//! `recv`/`send` follow `std::io` conventions: `Err(WouldBlock)` means "not now",
//! `Ok(0)` from `recv` into a non-empty buffer means the peer closed its side.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

/// A TCP/IP stack seen as listeners and byte streams, driven by polling.
pub trait Net {
    /// A listening socket.
    type Listener;
    /// One TCP connection.
    type Conn;

    /// Listens on `port` of every local address.
    fn listen(&mut self, port: u16) -> io::Result<Self::Listener>;
    /// A connection that completed its handshake on `l`, if any.
    fn accept(&mut self, l: &mut Self::Listener) -> io::Result<Option<Self::Conn>>;
    /// Starts connecting to `to`. The connection may still be opening: sends return
    /// `WouldBlock` until it is established, and an error if it failed.
    fn connect(&mut self, to: SocketAddr) -> io::Result<Self::Conn>;
    /// Reads what has arrived (see the module docs for the conventions).
    fn recv(&mut self, c: &mut Self::Conn, buf: &mut [u8]) -> io::Result<usize>;
    /// Queues what fits of `buf` for sending.
    fn send(&mut self, c: &mut Self::Conn, buf: &[u8]) -> io::Result<usize>;
    /// Closes a connection gracefully: what was queued is still delivered, then FIN.
    fn close(&mut self, c: Self::Conn);
    /// Stops listening.
    fn close_listener(&mut self, l: Self::Listener);
    /// The port a listener is bound to (the one picked when asked for port 0).
    fn listener_port(&self, l: &Self::Listener) -> Option<u16>;
    /// Our address of a connection.
    fn local_addr(&self, c: &Self::Conn) -> Option<SocketAddr>;
    /// The peer's address of a connection.
    fn peer_addr(&self, c: &Self::Conn) -> Option<SocketAddr>;
    /// Moves packets and waits until some socket may have become ready, at most
    /// `timeout` (zero: move what can be moved, do not wait).
    fn wait(&mut self, timeout: Duration);
}

/// A kernel TCP connection of [`StdNet`].
#[derive(Debug)]
pub struct StdConn {
    stream: TcpStream,
    fd: RawFd,
}

/// A kernel TCP listener of [`StdNet`].
#[derive(Debug)]
pub struct StdListener {
    listener: TcpListener,
    fd: RawFd,
}

/// [`Net`] over the kernel's TCP (`std::net`, non-blocking, `poll(2)`).
#[derive(Debug)]
pub struct StdNet {
    /// Address listeners bind to.
    bind: std::net::IpAddr,
    /// Every open socket and whether it waits to become writable (its last send
    /// could not queue everything).
    fds: HashMap<RawFd, bool>,
    connect_timeout: Duration,
}

impl Default for StdNet {
    fn default() -> Self {
        Self::new()
    }
}

impl StdNet {
    /// Listeners bind to every IPv4 address (`0.0.0.0`).
    pub fn new() -> Self {
        Self::bound_to(Ipv4Addr::UNSPECIFIED.into())
    }

    /// Listeners bind to `addr` only (`127.0.0.1` in tests).
    pub fn bound_to(addr: std::net::IpAddr) -> Self {
        StdNet {
            bind: addr,
            fds: HashMap::new(),
            connect_timeout: Duration::from_secs(10),
        }
    }

    fn register(&mut self, fd: RawFd) {
        self.fds.insert(fd, false);
    }
}

impl Net for StdNet {
    type Listener = StdListener;
    type Conn = StdConn;

    fn listen(&mut self, port: u16) -> io::Result<StdListener> {
        let listener = TcpListener::bind(SocketAddr::new(self.bind, port))?;
        listener.set_nonblocking(true)?;
        let fd = listener.as_raw_fd();
        self.register(fd);
        Ok(StdListener { listener, fd })
    }

    fn accept(&mut self, l: &mut StdListener) -> io::Result<Option<StdConn>> {
        match l.listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(true)?;
                // iperf3 sets TCP_NODELAY on the control connection; small state bytes
                // must not wait for Nagle. Data streams send full blocks anyway.
                stream.set_nodelay(true)?;
                let fd = stream.as_raw_fd();
                self.register(fd);
                Ok(Some(StdConn { stream, fd }))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn connect(&mut self, to: SocketAddr) -> io::Result<StdConn> {
        // The kernel's handshake is quick (and iperf3 itself connects blocking); only
        // the data phase has to be non-blocking.
        let stream = TcpStream::connect_timeout(&to, self.connect_timeout)?;
        stream.set_nonblocking(true)?;
        stream.set_nodelay(true)?;
        let fd = stream.as_raw_fd();
        self.register(fd);
        Ok(StdConn { stream, fd })
    }

    fn recv(&mut self, c: &mut StdConn, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match c.stream.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return r,
            }
        }
    }

    fn send(&mut self, c: &mut StdConn, buf: &[u8]) -> io::Result<usize> {
        let r = loop {
            match c.stream.write(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => break r,
            }
        };
        let blocked = match &r {
            Ok(n) => *n < buf.len(),
            Err(e) => e.kind() == io::ErrorKind::WouldBlock,
        };
        if let Some(w) = self.fds.get_mut(&c.fd) {
            *w = blocked;
        }
        r
    }

    fn close(&mut self, c: StdConn) {
        self.fds.remove(&c.fd);
        // Dropping the stream closes it; the kernel still delivers what was queued.
        let _ = c.stream.shutdown(Shutdown::Write);
    }

    fn close_listener(&mut self, l: StdListener) {
        self.fds.remove(&l.fd);
    }

    fn listener_port(&self, l: &StdListener) -> Option<u16> {
        l.listener.local_addr().ok().map(|a| a.port())
    }

    fn local_addr(&self, c: &StdConn) -> Option<SocketAddr> {
        c.stream.local_addr().ok()
    }

    fn peer_addr(&self, c: &StdConn) -> Option<SocketAddr> {
        c.stream.peer_addr().ok()
    }

    fn wait(&mut self, timeout: Duration) {
        if timeout.is_zero() {
            return;
        }
        let mut pfds: Vec<libc::pollfd> = self
            .fds
            .iter()
            .map(|(&fd, &want_write)| libc::pollfd {
                fd,
                events: libc::POLLIN | if want_write { libc::POLLOUT } else { 0 },
                revents: 0,
            })
            .collect();
        let ms = timeout.as_millis().clamp(1, 1000) as libc::c_int;
        // SAFETY: `pfds` is a live, initialised array of `pfds.len()` pollfd structs
        // that poll only reads and writes `revents` of; the fds are ours and open.
        let rc = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
        if rc < 0 {
            // EINTR or a transient failure: the caller's loop simply comes back.
            return;
        }
        for p in &pfds {
            // An end-of-stream or error condition stays readable forever: the engine
            // reads it and closes the socket, so nothing here busy-loops for long.
            if p.revents & libc::POLLNVAL != 0 {
                self.fds.remove(&p.fd);
            }
        }
    }
}
