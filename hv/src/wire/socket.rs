//! `AF_UNIX` / `SOCK_SEQPACKET` sockets carrying one [`super::Message`] per packet,
//! with file descriptors passed as `SCM_RIGHTS` ancillary data.
//!
//! Every send uses `MSG_NOSIGNAL` (a peer that died must not kill the daemon with
//! `SIGPIPE`); every receive uses `MSG_CMSG_CLOEXEC` and takes ownership of whatever
//! descriptors arrived, so none can leak even when the message is then refused.

use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::{Message, MAX_FDS, PACKET_MAX};

/// A connected seqpacket socket.
#[derive(Debug)]
pub struct SeqPacket {
    fd: OwnedFd,
}

/// What one `recvmsg` delivered.
#[derive(Debug)]
pub struct Received {
    /// The packet bytes.
    pub data: Vec<u8>,
    /// Descriptors that came with it (now owned by the caller).
    pub fds: Vec<OwnedFd>,
    /// The packet or its ancillary data did not fit (`MSG_TRUNC` / `MSG_CTRUNC`).
    pub truncated: bool,
}

/// `SO_PEERCRED` of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn new_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes no pointers; the result is checked and owned below.
    let fd =
        cvt(unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn sockaddr(path: &Path) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    // SAFETY: sockaddr_un is plain old data; all-zero is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    // Leave room for the terminating NUL.
    if bytes.is_empty() || bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "socket path {} must be 1-{} bytes without NUL",
                path.display(),
                addr.sun_path.len() - 1
            ),
        ));
    }
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    let len = size_of::<libc::sa_family_t>() + bytes.len() + 1;
    Ok((addr, len as libc::socklen_t))
}

/// Space for `MAX_FDS` descriptors of ancillary data, aligned for `cmsghdr`.
#[repr(C)]
struct CmsgBuf {
    _align: [libc::cmsghdr; 0],
    buf: [u8; 64],
}

impl SeqPacket {
    /// Connect to the daemon's socket at `path`.
    pub fn connect(path: &Path) -> io::Result<Self> {
        let fd = new_socket()?;
        let (addr, len) = sockaddr(path)?;
        loop {
            // SAFETY: `addr` is a valid sockaddr_un of `len` bytes, alive for the call.
            let r = unsafe {
                libc::connect(
                    fd.as_raw_fd(),
                    (&addr as *const libc::sockaddr_un).cast(),
                    len,
                )
            };
            if r == 0 {
                return Ok(Self { fd });
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// A connected pair (tests, in-process peers).
    pub fn pair() -> io::Result<(Self, Self)> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: socketpair writes two descriptors into the live array.
        cvt(unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        })?;
        // SAFETY: both descriptors are fresh and owned by nobody else.
        Ok(unsafe {
            (
                Self {
                    fd: OwnedFd::from_raw_fd(fds[0]),
                },
                Self {
                    fd: OwnedFd::from_raw_fd(fds[1]),
                },
            )
        })
    }

    /// Adopt a connected seqpacket descriptor.
    pub fn from_fd(fd: OwnedFd) -> Self {
        Self { fd }
    }

    /// The descriptor.
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Send one packet with `fds` attached (at most [`MAX_FDS`]).
    pub fn send(&self, data: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        if fds.len() > MAX_FDS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "too many descriptors for one message",
            ));
        }
        let mut iov = libc::iovec {
            iov_base: data.as_ptr() as *mut libc::c_void,
            iov_len: data.len(),
        };
        // SAFETY: msghdr is plain old data; zero is a valid starting value.
        let mut msg: libc::msghdr = unsafe { zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        let mut cbuf = CmsgBuf {
            _align: [],
            buf: [0; 64],
        };
        if !fds.is_empty() {
            let payload = (fds.len() * size_of::<RawFd>()) as libc::c_uint;
            // SAFETY: CMSG_SPACE is a pure size computation.
            let space = unsafe { libc::CMSG_SPACE(payload) } as usize;
            msg.msg_control = cbuf.buf.as_mut_ptr().cast();
            msg.msg_controllen = space as _;
            // SAFETY: the control buffer is 64 bytes, aligned for cmsghdr, and `space`
            // for at most 3 fds (32 bytes) fits, so CMSG_FIRSTHDR is non-null and
            // CMSG_DATA points inside it with room for the descriptors.
            unsafe {
                let c = libc::CMSG_FIRSTHDR(&msg);
                (*c).cmsg_level = libc::SOL_SOCKET;
                (*c).cmsg_type = libc::SCM_RIGHTS;
                (*c).cmsg_len = libc::CMSG_LEN(payload) as _;
                let data = libc::CMSG_DATA(c).cast::<RawFd>();
                for (i, fd) in fds.iter().enumerate() {
                    data.add(i).write_unaligned(fd.as_raw_fd());
                }
            }
        }
        loop {
            // SAFETY: `msg` points at live locals (iov, data, cbuf) for the call.
            let n = unsafe { libc::sendmsg(self.fd.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
            if n >= 0 {
                return if n as usize == data.len() {
                    Ok(())
                } else {
                    Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "short seqpacket send",
                    ))
                };
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// Send a message.
    pub fn send_msg(&self, m: &Message, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        self.send(&m.encode(), fds)
    }

    /// Receive one packet (blocking). `Ok(None)` is end of file: the peer closed.
    /// Descriptors are accepted only if `accept_fds`; otherwise the kernel discards
    /// any that were sent (and `truncated` is set).
    pub fn recv(&self, accept_fds: bool) -> io::Result<Option<Received>> {
        let mut data = vec![0u8; PACKET_MAX + 1];
        let mut iov = libc::iovec {
            iov_base: data.as_mut_ptr().cast(),
            iov_len: data.len(),
        };
        // SAFETY: msghdr is plain old data.
        let mut msg: libc::msghdr = unsafe { zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        let mut cbuf = CmsgBuf {
            _align: [],
            buf: [0; 64],
        };
        if accept_fds {
            msg.msg_control = cbuf.buf.as_mut_ptr().cast();
            msg.msg_controllen = cbuf.buf.len() as _;
        }
        let n = loop {
            // SAFETY: `msg` points at live buffers of the stated sizes.
            let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
            if n >= 0 {
                break n as usize;
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        };
        let mut fds = Vec::new();
        if accept_fds && msg.msg_controllen > 0 {
            // SAFETY: the kernel filled `msg_controllen` bytes of our buffer with
            // well-formed cmsghdrs; CMSG_FIRSTHDR/NXTHDR stay within it.
            unsafe {
                let mut c = libc::CMSG_FIRSTHDR(&msg);
                while !c.is_null() {
                    if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                        let bytes = (*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                        let p = libc::CMSG_DATA(c).cast::<RawFd>();
                        for i in 0..bytes / size_of::<RawFd>() {
                            // Each received descriptor is new in this process and
                            // owned by nobody else yet.
                            fds.push(OwnedFd::from_raw_fd(p.add(i).read_unaligned()));
                        }
                    }
                    c = libc::CMSG_NXTHDR(&msg, c);
                }
            }
        }
        let truncated = msg.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 || n > PACKET_MAX;
        // A zero-length read is either end of file or an empty packet (which a
        // seqpacket socket can carry). Only a hung-up socket is end of file; an empty
        // packet is returned for the caller to refuse.
        if n == 0 && fds.is_empty() && self.peer_hung_up() {
            return Ok(None);
        }
        data.truncate(n.min(PACKET_MAX));
        Ok(Some(Received {
            data,
            fds,
            truncated,
        }))
    }

    /// True once the peer closed (or we shut the socket down): `POLLHUP`/`POLLRDHUP`.
    fn peer_hung_up(&self) -> bool {
        let mut p = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: one live pollfd, no waiting.
        let r = unsafe { libc::poll(&mut p, 1, 0) };
        // If poll itself fails, treat the socket as dead rather than spin on it.
        r < 0 || p.revents & (libc::POLLHUP | libc::POLLRDHUP | libc::POLLERR) != 0
    }

    /// `SO_PEERCRED`: who is on the other end.
    pub fn peer_cred(&self) -> io::Result<PeerCred> {
        // SAFETY: ucred is plain old data.
        let mut c: libc::ucred = unsafe { zeroed() };
        let mut len = size_of::<libc::ucred>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into the live `c`.
        cvt(unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERCRED,
                (&mut c as *mut libc::ucred).cast(),
                &mut len,
            )
        })?;
        Ok(PeerCred {
            pid: c.pid as u32,
            uid: c.uid,
            gid: c.gid,
        })
    }

    /// `shutdown(SHUT_RDWR)`: wakes a thread blocked in [`recv`](Self::recv) on
    /// either end with end-of-file.
    pub fn shutdown(&self) {
        // SAFETY: shutdown on our own descriptor; failure (already shut) is harmless.
        unsafe { libc::shutdown(self.fd.as_raw_fd(), libc::SHUT_RDWR) };
    }
}

/// A listening seqpacket socket bound to a path.
#[derive(Debug)]
pub struct Listener {
    fd: OwnedFd,
}

impl Listener {
    /// Bind and listen at `path` (which must not exist).
    pub fn bind(path: &Path) -> io::Result<Self> {
        let fd = new_socket()?;
        let (addr, len) = sockaddr(path)?;
        // SAFETY: `addr` is a valid sockaddr_un of `len` bytes.
        cvt(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_un).cast(),
                len,
            )
        })?;
        // SAFETY: listen on our own bound socket.
        cvt(unsafe { libc::listen(fd.as_raw_fd(), 128) })?;
        Ok(Self { fd })
    }

    /// The descriptor (for `poll`).
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Accept one connection (blocking).
    pub fn accept(&self) -> io::Result<SeqPacket> {
        loop {
            // SAFETY: accept4 with null address pointers only returns the new fd.
            let r = unsafe {
                libc::accept4(
                    self.fd.as_raw_fd(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_CLOEXEC,
                )
            };
            if r >= 0 {
                // SAFETY: a fresh descriptor owned by nobody else.
                return Ok(SeqPacket {
                    fd: unsafe { OwnedFd::from_raw_fd(r) },
                });
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

/// Wait until one of `fds` is readable or `timeout_ms` passes (-1: forever).
/// Returns the readiness of each (`revents != 0`).
pub fn poll_readable(fds: &[RawFd], timeout_ms: i32) -> io::Result<Vec<bool>> {
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    loop {
        // SAFETY: `p` is a live array of `p.len()` pollfds.
        let r = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, timeout_ms) };
        if r >= 0 {
            return Ok(p.iter().map(|x| x.revents != 0).collect());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn fds_cross_and_boundaries_hold() {
        let (a, b) = SeqPacket::pair().expect("pair");
        let e = event_channel::EventFd::new().expect("eventfd");
        a.send(b"hello", &[e.as_fd()]).expect("send");
        a.send(b"world", &[]).expect("send");
        let r = b.recv(true).expect("recv").expect("data");
        assert_eq!(r.data, b"hello");
        assert_eq!(r.fds.len(), 1);
        // The received descriptor is the same eventfd.
        let got = event_channel::EventFd::from_owned_fd(r.fds.into_iter().next().expect("fd"))
            .expect("adopt");
        got.signal().expect("signal");
        assert_eq!(e.drain().expect("drain"), 1);
        let r = b.recv(false).expect("recv").expect("data");
        assert_eq!(r.data, b"world");
        drop(a);
        assert!(b.recv(true).expect("recv").is_none(), "EOF after close");
    }

    #[test]
    fn refused_fds_are_discarded_by_the_kernel() {
        let (a, b) = SeqPacket::pair().expect("pair");
        let e = event_channel::EventFd::new().expect("eventfd");
        a.send(b"x", &[e.as_fd()]).expect("send");
        let r = b.recv(false).expect("recv").expect("data");
        assert!(r.fds.is_empty());
        assert!(r.truncated, "MSG_CTRUNC reports the dropped descriptor");
    }
}
