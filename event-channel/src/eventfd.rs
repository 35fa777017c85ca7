//! Linux eventfd as the wire for event-channel kicks (std only).
//!
//! An eventfd plays the part of the event-channel interrupt: `signal` raises it,
//! the receiver `poll`s for it and `drain`s it. Because it is a file descriptor it
//! crosses process boundaries over `SCM_RIGHTS`, so a guest process can sleep on
//! kicks the hypervisor process sends.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::port::Notifier;

/// A non-blocking, close-on-exec eventfd (`eventfd2(0, EFD_NONBLOCK | EFD_CLOEXEC)`).
#[derive(Debug)]
pub struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    /// A fresh eventfd with a zero counter.
    pub fn new() -> io::Result<Self> {
        // SAFETY: eventfd takes no pointers; the result is checked below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a descriptor the kernel just created for us; nothing else
        // owns it.
        Ok(Self {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Adopt an eventfd received from elsewhere (e.g. over `SCM_RIGHTS`). It is
    /// switched to non-blocking mode, which `signal` and `drain` rely on.
    pub fn from_owned_fd(fd: OwnedFd) -> io::Result<Self> {
        let raw = fd.as_raw_fd();
        // SAFETY: fcntl on a descriptor we own; no pointers involved.
        let flags = unsafe { libc::fcntl(raw, libc::F_GETFL) };
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        if flags & libc::O_NONBLOCK == 0 {
            // SAFETY: as above.
            if unsafe { libc::fcntl(raw, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(Self { fd })
    }

    /// A second descriptor for the same eventfd, to hand to another process.
    pub fn try_clone_fd(&self) -> io::Result<OwnedFd> {
        self.fd.try_clone()
    }

    /// Raise the event: add 1 to the counter. A saturated counter (`EAGAIN`) is
    /// already readable, so that counts as success.
    pub fn signal(&self) -> io::Result<()> {
        let one: u64 = 1;
        loop {
            // SAFETY: writes 8 bytes from a live local u64 to a descriptor we own.
            let n = unsafe {
                libc::write(
                    self.fd.as_raw_fd(),
                    (&one as *const u64).cast::<libc::c_void>(),
                    8,
                )
            };
            if n == 8 {
                return Ok(());
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return Ok(()),
                _ => return Err(err),
            }
        }
    }

    /// Consume every signal so far: returns the counter (0 if none was pending).
    pub fn drain(&self) -> io::Result<u64> {
        let mut count: u64 = 0;
        loop {
            // SAFETY: reads 8 bytes into a live local u64 from a descriptor we own.
            let n = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    (&mut count as *mut u64).cast::<libc::c_void>(),
                    8,
                )
            };
            if n == 8 {
                return Ok(count);
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return Ok(0),
                _ => return Err(err),
            }
        }
    }

    /// Sleep in `ppoll(2)` until the eventfd is readable or `timeout` passes
    /// (`None`: no limit). Returns whether it became readable. Does not drain.
    pub fn wait_readable(&self, timeout: Option<Duration>) -> io::Result<bool> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        loop {
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ts = match (timeout, deadline) {
                (None, _) | (Some(_), None) => None,
                (Some(_), Some(d)) => {
                    let left = d.saturating_duration_since(Instant::now());
                    Some(libc::timespec {
                        tv_sec: libc::time_t::try_from(left.as_secs()).unwrap_or(libc::time_t::MAX),
                        // subsec_nanos() < 1e9 fits every c_long.
                        tv_nsec: left.subsec_nanos() as libc::c_long,
                    })
                }
            };
            let ts_ptr = ts
                .as_ref()
                .map_or(core::ptr::null(), |t| t as *const libc::timespec);
            // SAFETY: `pfd` and `ts` are live locals for the duration of the call;
            // a null sigmask leaves the signal mask unchanged.
            let n = unsafe { libc::ppoll(&mut pfd, 1, ts_ptr, core::ptr::null()) };
            if n > 0 {
                return Ok(true);
            }
            if n == 0 {
                return Ok(false);
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }
}

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for EventFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl IntoRawFd for EventFd {
    fn into_raw_fd(self) -> RawFd {
        self.fd.into_raw_fd()
    }
}

impl From<EventFd> for OwnedFd {
    fn from(e: EventFd) -> Self {
        e.fd
    }
}

/// A [`Notifier`] that signals an eventfd on every kick: the plain transport, for
/// a receiver that always sleeps in `poll` (or sits in another process's event
/// loop). See [`WaiterNotifier`](crate::WaiterNotifier) for the one that skips the
/// write while the receiver is polling.
#[derive(Debug)]
pub struct EventFdNotifier {
    fd: EventFd,
    writes: AtomicU64,
}

impl EventFdNotifier {
    /// Kicks signal `fd`.
    pub fn new(fd: EventFd) -> Self {
        Self {
            fd,
            writes: AtomicU64::new(0),
        }
    }

    /// The eventfd this notifier signals.
    pub fn eventfd(&self) -> &EventFd {
        &self.fd
    }

    /// Eventfd writes issued so far (one per kick).
    pub fn eventfd_writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }
}

impl Notifier for EventFdNotifier {
    fn kick(&self) {
        // A failed write (EBADF after the receiver went away) is not the
        // sender's problem: the pending bit is set either way.
        let _ = self.fd.signal();
        self.writes.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_then_drain_counts() {
        let e = EventFd::new().expect("eventfd");
        assert_eq!(e.drain().expect("drain"), 0);
        e.signal().expect("signal");
        e.signal().expect("signal");
        assert!(e.wait_readable(Some(Duration::ZERO)).expect("poll"));
        assert_eq!(e.drain().expect("drain"), 2);
        assert!(!e
            .wait_readable(Some(Duration::from_millis(1)))
            .expect("poll"));
    }

    #[test]
    fn is_nonblocking_and_cloexec() {
        let e = EventFd::new().expect("eventfd");
        // SAFETY: fcntl queries on a descriptor we own.
        let fl = unsafe { libc::fcntl(e.as_raw_fd(), libc::F_GETFL) };
        // SAFETY: as above.
        let fdfl = unsafe { libc::fcntl(e.as_raw_fd(), libc::F_GETFD) };
        assert_ne!(fl & libc::O_NONBLOCK, 0);
        assert_ne!(fdfl & libc::FD_CLOEXEC, 0);
    }

    #[test]
    fn adopted_fd_is_made_nonblocking_and_shares_the_counter() {
        // SAFETY: eventfd takes no pointers; the result is checked.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        assert!(raw >= 0);
        // SAFETY: `raw` is a fresh descriptor owned by nobody else.
        let owned = unsafe { OwnedFd::from_raw_fd(raw) };
        let a = EventFd::from_owned_fd(owned).expect("adopt");
        // Would block forever if it were still blocking.
        assert_eq!(a.drain().expect("drain"), 0);
        let b = EventFd::from_owned_fd(a.try_clone_fd().expect("dup")).expect("adopt dup");
        b.signal().expect("signal");
        assert_eq!(a.drain().expect("drain"), 1);
    }

    #[test]
    fn wait_readable_wakes_on_signal_from_another_thread() {
        let e = std::sync::Arc::new(EventFd::new().expect("eventfd"));
        let e2 = e.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            e2.signal().expect("signal");
        });
        let start = Instant::now();
        assert!(e
            .wait_readable(Some(Duration::from_secs(10)))
            .expect("poll"));
        assert!(start.elapsed() < Duration::from_secs(10));
        t.join().expect("join");
    }

    #[test]
    fn notifier_counts_writes() {
        let n = EventFdNotifier::new(EventFd::new().expect("eventfd"));
        n.kick();
        n.kick();
        assert_eq!(n.eventfd_writes(), 2);
        assert_eq!(n.eventfd().drain().expect("drain"), 2);
    }
}
