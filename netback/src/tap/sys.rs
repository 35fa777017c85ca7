//! Raw ioctls on `/dev/net/tun` and on a control socket. Every `unsafe` of the TAP
//! module lives here; the rest of the module calls these safe wrappers.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Socket ioctl numbers as `libc::Ioctl`, the request type of `libc::ioctl` (`c_ulong` on
/// glibc, `c_int` on musl; `libc` declares the `SIOC*` numbers as `c_ulong`).
#[allow(clippy::unnecessary_cast)] // a no-op on glibc, needed on musl
pub mod req {
    /// `SIOCGIFINDEX`: interface name → index.
    pub const SIOCGIFINDEX: libc::Ioctl = libc::SIOCGIFINDEX as libc::Ioctl;
    /// `SIOCGIFFLAGS`: read interface flags.
    pub const SIOCGIFFLAGS: libc::Ioctl = libc::SIOCGIFFLAGS as libc::Ioctl;
    /// `SIOCSIFFLAGS`: write interface flags (IFF_UP).
    pub const SIOCSIFFLAGS: libc::Ioctl = libc::SIOCSIFFLAGS as libc::Ioctl;
    /// `SIOCSIFMTU`: set the MTU.
    pub const SIOCSIFMTU: libc::Ioctl = libc::SIOCSIFMTU as libc::Ioctl;
    /// `SIOCSIFHWADDR`: set the MAC address.
    pub const SIOCSIFHWADDR: libc::Ioctl = libc::SIOCSIFHWADDR as libc::Ioctl;
    /// `SIOCBRADDIF` (linux/sockios.h): add interface `ifr_ifindex` to bridge `ifr_name`.
    /// Not exported by the `libc` crate for glibc targets.
    pub const SIOCBRADDIF: libc::Ioctl = 0x89a2;
    /// `SIOCBRDELIF` (linux/sockios.h): remove interface `ifr_ifindex` from bridge `ifr_name`.
    pub const SIOCBRDELIF: libc::Ioctl = 0x89a3;
}

/// Interface names are at most `IFNAMSIZ - 1` bytes (the last byte is the NUL).
pub const IFNAME_MAX: usize = libc::IFNAMSIZ - 1;

/// A zeroed `struct ifreq` whose `ifr_name` is `name`. The caller has checked that
/// `name` is a valid interface name (see `tap::validate_ifname`).
pub fn ifreq_named(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain old data (a name array and a union of integers, sockaddrs
    // and a pointer); all-zero bytes are a valid value for every member.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(name.bytes().take(IFNAME_MAX)) {
        *dst = src as libc::c_char;
    }
    ifr
}

/// The interface name stored in an ifreq (the kernel may pick one from a `%d` pattern).
pub fn ifreq_name(ifr: &libc::ifreq) -> String {
    let bytes: Vec<u8> = ifr
        .ifr_name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Opens `path` read-write, non-blocking and close-on-exec.
pub fn open_rw_nonblock(path: &CStr) -> io::Result<OwnedFd> {
    // SAFETY: `path` is a valid NUL-terminated string; open has no other preconditions.
    let fd = cvt(unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: open just returned this descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// An `AF_INET` datagram socket used only as a handle for interface ioctls. Its network
/// namespace (the one of the calling thread) decides which devices the ioctls reach.
pub fn control_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call with constant arguments.
    let fd = cvt(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: socket just returned this descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// An ioctl whose argument is a `struct ifreq` (read and/or written by the kernel).
pub fn ioctl_ifreq(
    fd: &impl AsRawFd,
    request: libc::Ioctl,
    ifr: &mut libc::ifreq,
) -> io::Result<()> {
    // SAFETY: `ifr` is a valid, exclusively borrowed ifreq for the duration of the call;
    // every request passed here (TUNSETIFF, SIOC[GS]IF*, SIOCBR*IF) reads/writes at most
    // one struct ifreq.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), request, ifr as *mut libc::ifreq) })?;
    Ok(())
}

/// An ioctl that reads an `int`/`unsigned int` from user memory (TUNSETVNETHDRSZ, TUNSETVNETLE).
pub fn ioctl_set_int(
    fd: &impl AsRawFd,
    request: libc::Ioctl,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: the kernel reads one int through the pointer, which is valid for the call.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), request, &value as *const libc::c_int) })?;
    Ok(())
}

/// An ioctl that takes an `unsigned long` by value (TUNSETOFFLOAD).
pub fn ioctl_value(
    fd: &impl AsRawFd,
    request: libc::Ioctl,
    value: libc::c_ulong,
) -> io::Result<()> {
    // SAFETY: the argument is passed by value; no memory is shared with the kernel.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), request, value) })?;
    Ok(())
}

/// An ioctl that writes an `unsigned int` (TUNGETFEATURES, TUNGETVNETHDRSZ).
pub fn ioctl_get_uint(fd: &impl AsRawFd, request: libc::Ioctl) -> io::Result<libc::c_uint> {
    let mut value: libc::c_uint = 0;
    // SAFETY: the kernel writes one unsigned int through the pointer, valid for the call.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), request, &mut value as *mut libc::c_uint) })?;
    Ok(value)
}

/// `readv(2)`; `Ok(None)` on `EAGAIN`, retries `EINTR`.
pub fn readv(fd: RawFd, iov: &mut [std::io::IoSliceMut<'_>]) -> io::Result<Option<usize>> {
    loop {
        let cnt = libc::c_int::try_from(iov.len())
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: IoSliceMut is ABI-compatible with struct iovec (guaranteed by std on
        // Unix); each slice is valid for writes of its length for the call's duration.
        let n = unsafe { libc::readv(fd, iov.as_mut_ptr() as *const libc::iovec, cnt) };
        if n >= 0 {
            return Ok(Some(n as usize));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) => return Ok(None),
            _ => return Err(e),
        }
    }
}

/// `writev(2)`; `Ok(None)` on `EAGAIN`, retries `EINTR`.
pub fn writev(fd: RawFd, iov: &[std::io::IoSlice<'_>]) -> io::Result<Option<usize>> {
    loop {
        let cnt = libc::c_int::try_from(iov.len())
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: IoSlice is ABI-compatible with struct iovec; each slice is valid for
        // reads of its length for the call's duration.
        let n = unsafe { libc::writev(fd, iov.as_ptr() as *const libc::iovec, cnt) };
        if n >= 0 {
            return Ok(Some(n as usize));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) => return Ok(None),
            _ => return Err(e),
        }
    }
}

/// Reads `ifr_flags` after a SIOCGIFFLAGS.
pub fn ifreq_flags(ifr: &libc::ifreq) -> libc::c_short {
    // SAFETY: every bit pattern is a valid c_short; the kernel filled this member.
    unsafe { ifr.ifr_ifru.ifru_flags }
}

/// Reads `ifr_ifindex` after a SIOCGIFINDEX.
pub fn ifreq_ifindex(ifr: &libc::ifreq) -> libc::c_int {
    // SAFETY: every bit pattern is a valid c_int; the kernel filled this member.
    unsafe { ifr.ifr_ifru.ifru_ifindex }
}

/// Moves the calling thread into the network namespace `ns_fd` refers to (`setns(2)`
/// with `CLONE_NEWNET`). Only this thread changes namespace.
pub fn setns_net(ns_fd: &impl AsRawFd) -> io::Result<()> {
    // SAFETY: setns takes a descriptor and a flag; it touches no memory of ours.
    cvt(unsafe { libc::setns(ns_fd.as_raw_fd(), libc::CLONE_NEWNET) })?;
    Ok(())
}
