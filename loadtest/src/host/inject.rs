//! Host → guest traffic: an `AF_PACKET` socket bound to the namespace's bridge sends
//! stamped frames addressed to the guest's MAC. The bridge forwards them (or floods
//! them, before it learned the MAC) to the guest's TAP, netback's TAP reader takes them
//! from there to the guest. A frame the TAP's queue has no room for is dropped by the
//! kernel, which is why the guest's count, not this one, is the measurement.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use crate::control::Control;
use crate::pvnet::wire;

use super::{signal, HostError};

/// An `AF_PACKET` raw socket bound to one interface, send-only (protocol 0: the
/// kernel queues nothing to it).
struct PacketSocket {
    fd: OwnedFd,
}

impl PacketSocket {
    fn bind(dev: &str) -> io::Result<PacketSocket> {
        let name = CString::new(dev).map_err(|_| io::ErrorKind::InvalidInput)?;
        // SAFETY: if_nametoindex reads a NUL-terminated string that outlives the call.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: plain socket(2); the result is checked and owned right away.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: a zeroed sockaddr_ll is valid; the fields set below describe the
        // interface to bind to.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: pointer and length describe `sll`, a live local.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(PacketSocket { fd })
    }

    /// Sends one complete Ethernet frame.
    fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: the buffer is live and of the given length.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Source MAC of injected frames (locally administered, distinct from loadtest's
/// Dom0 MAC so the two directions never look alike).
pub const HOST_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x4c, 0x54, 0x48];

/// Sends frames of `len` bytes to `guest` through `bridge` in the namespace at
/// `netns` until `ctl` stops (or Ctrl-C); returns how many the socket took.
pub fn run(
    netns: &Path,
    bridge: &str,
    len: usize,
    guest: [u8; 6],
    ctl: &Control,
) -> Result<u64, HostError> {
    let mut frame = wire::template(&wire::FrameSpec {
        len,
        dst: guest,
        src: HOST_MAC,
        flow: 0,
        spread_over: 1,
    })
    .ok_or_else(|| HostError::Invalid(format!("no test frame of {len} bytes")))?;
    let inner = netback::tap::run_in_netns(netns, || -> io::Result<u64> {
        let sock = PacketSocket::bind(bridge)?;
        let mut seq = 0u64;
        while !ctl.should_stop() && !signal::interrupted() {
            wire::stamp(&mut frame, 0, seq);
            match sock.send(&frame) {
                Ok(()) => seq += 1,
                // The device queue is full for a moment: try again (the window bounds
                // the loop).
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => std::thread::yield_now(),
                Err(e) => return Err(e),
            }
        }
        Ok(seq)
    })
    .map_err(|e| HostError::Setup(format!("entering the namespace: {e}")))?;
    inner.map_err(|e| HostError::Setup(format!("AF_PACKET socket on {bridge}: {e}")))
}
