//! An open `/dev/xen/*` node and the raw system calls made on it.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use super::XenError;

/// One open device node.
#[derive(Debug)]
pub(crate) struct Device {
    fd: OwnedFd,
}

impl Device {
    /// Open `path` read-write, close-on-exec (non-blocking if asked). A missing node is
    /// reported with `hint`, which tells the user what to load or mount.
    pub(crate) fn open(
        path: &'static str,
        hint: &'static str,
        nonblocking: bool,
    ) -> Result<Device, XenError> {
        let cpath = CString::new(path).map_err(|_| XenError::Missing { path, hint })?;
        let mut flags = libc::O_RDWR | libc::O_CLOEXEC;
        if nonblocking {
            flags |= libc::O_NONBLOCK;
        }
        // SAFETY: cpath is a valid NUL-terminated string; open has no other inputs.
        let fd = unsafe { libc::open(cpath.as_ptr(), flags) };
        if fd < 0 {
            let err = io::Error::last_os_error();
            return Err(match err.raw_os_error() {
                Some(libc::ENOENT) | Some(libc::ENODEV) | Some(libc::ENXIO) => {
                    XenError::Missing { path, hint }
                }
                _ => XenError::Open { path, source: err },
            });
        }
        // SAFETY: open returned a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Device { fd })
    }

    pub(crate) fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub(crate) fn into_fd(self) -> OwnedFd {
        self.fd
    }

    /// `ioctl(fd, request, arg)`; returns the ioctl's non-negative result.
    ///
    /// # Safety
    /// `T` must be the argument structure the driver expects for `request`, with any
    /// pointers it contains valid for the driver's accesses.
    pub(crate) unsafe fn ioctl<T>(&self, request: libc::c_ulong, arg: &mut T) -> io::Result<i32> {
        loop {
            // SAFETY: forwarded to the caller: arg has the layout `request` expects.
            let rc = unsafe { libc::ioctl(self.raw(), request as _, arg as *mut T) };
            if rc >= 0 {
                return Ok(rc);
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }
}

/// `poll()` one or more descriptors for input; returns which were readable.
/// `None` waits forever. EINTR counts as "nothing ready".
pub(crate) fn poll_in(fds: &[RawFd], timeout: Option<Duration>) -> io::Result<Vec<bool>> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let ms = match timeout {
        None => -1,
        // Round up so a short timeout does not become a busy poll of 0 ms.
        Some(d) => d.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32,
    };
    // SAFETY: pfds is a valid array of pfds.len() pollfd structures.
    let rc = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
    if rc < 0 {
        let err = io::Error::last_os_error();
        if err.kind() == io::ErrorKind::Interrupted {
            return Ok(vec![false; fds.len()]);
        }
        return Err(err);
    }
    Ok(pfds
        .iter()
        .map(|p| p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0)
        .collect())
}

/// A Linux eventfd used to wake a thread blocked in [`poll_in`].
#[derive(Debug)]
pub(crate) struct Kick(OwnedFd);

impl Kick {
    pub(crate) fn new() -> Result<Kick, XenError> {
        // SAFETY: eventfd takes no pointers.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(XenError::Io {
                op: "eventfd",
                source: io::Error::last_os_error(),
            });
        }
        // SAFETY: a fresh descriptor owned by nobody else.
        Ok(Kick(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    pub(crate) fn raw(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    /// Make the eventfd readable.
    pub(crate) fn kick(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64. A full counter (EAGAIN) is still readable,
        // so the result does not matter.
        let _ = unsafe { libc::write(self.raw(), (&one as *const u64).cast(), 8) };
    }

    /// Reset the eventfd to not readable.
    pub(crate) fn clear(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64; EAGAIN (already clear) is fine.
        let _ = unsafe { libc::read(self.raw(), (&mut v as *mut u64).cast(), 8) };
    }
}
