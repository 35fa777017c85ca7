//! A small `epoll(7)` wrapper to wait on many queue fds (and event channels) at once.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// What to wait for on an fd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Interest {
    /// Wake when readable (`EPOLLIN`).
    pub readable: bool,
    /// Wake when writable (`EPOLLOUT`), e.g. after write backpressure.
    pub writable: bool,
    /// Edge-triggered (`EPOLLET`): wake only on new readiness; the caller must drain
    /// until `EAGAIN`, which the batch calls do.
    pub edge: bool,
}

impl Interest {
    /// Level-triggered readability.
    pub const READABLE: Self = Self {
        readable: true,
        writable: false,
        edge: false,
    };
    /// Level-triggered writability.
    pub const WRITABLE: Self = Self {
        readable: false,
        writable: true,
        edge: false,
    };

    fn bits(self) -> u32 {
        let mut b = 0;
        if self.readable {
            b |= libc::EPOLLIN as u32;
        }
        if self.writable {
            b |= libc::EPOLLOUT as u32;
        }
        if self.edge {
            b |= libc::EPOLLET as u32;
        }
        b
    }
}

/// One ready fd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    /// The token given when the fd was added.
    pub token: u64,
    /// `EPOLLIN`.
    pub readable: bool,
    /// `EPOLLOUT`.
    pub writable: bool,
    /// `EPOLLERR` or `EPOLLHUP`: the fd needs attention (read it to get the error).
    pub error: bool,
}

/// Preallocated event buffer for [`Epoll::wait`].
#[derive(Debug)]
pub struct Events {
    buf: Vec<libc::epoll_event>,
    len: usize,
}

impl Events {
    /// Room for up to `n` events per wait (at least 1).
    pub fn with_capacity(n: usize) -> Self {
        Self {
            buf: vec![libc::epoll_event { events: 0, u64: 0 }; n.max(1)],
            len: 0,
        }
    }

    /// Number of events from the last wait.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if the last wait returned no event.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The events from the last wait.
    pub fn iter(&self) -> impl Iterator<Item = Event> + '_ {
        self.buf[..self.len].iter().map(|e| {
            let bits = e.events;
            Event {
                token: e.u64,
                readable: bits & libc::EPOLLIN as u32 != 0,
                writable: bits & libc::EPOLLOUT as u32 != 0,
                error: bits & (libc::EPOLLERR | libc::EPOLLHUP) as u32 != 0,
            }
        })
    }
}

/// An epoll instance.
#[derive(Debug)]
pub struct Epoll {
    fd: OwnedFd,
}

impl Epoll {
    /// Creates an epoll instance (close-on-exec).
    pub fn new() -> io::Result<Self> {
        // SAFETY: epoll_create1 takes a flag and returns a new descriptor or -1.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the descriptor was just created and is owned by nobody else.
        Ok(Self {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    fn ctl(
        &self,
        op: libc::c_int,
        fd: &impl AsRawFd,
        token: u64,
        interest: Interest,
    ) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: interest.bits(),
            u64: token,
        };
        // SAFETY: `ev` is a valid epoll_event for the call (ignored by EPOLL_CTL_DEL).
        let r = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd.as_raw_fd(), &mut ev) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Starts watching `fd`; events carry `token`.
    pub fn add(&self, fd: &impl AsRawFd, token: u64, interest: Interest) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, token, interest)
    }

    /// Changes the token or interest of a watched fd.
    pub fn modify(&self, fd: &impl AsRawFd, token: u64, interest: Interest) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, token, interest)
    }

    /// Stops watching `fd`.
    pub fn delete(&self, fd: &impl AsRawFd) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0, Interest::default())
    }

    /// Waits until at least one fd is ready or `timeout` passes (`None` = forever).
    /// Sub-millisecond timeouts round up to 1 ms so a short wait does not spin.
    /// Returns the number of events (0 on timeout or signal).
    pub fn wait(&self, events: &mut Events, timeout: Option<Duration>) -> io::Result<usize> {
        let ms = match timeout {
            None => -1,
            Some(t) => {
                let ms = t.as_millis() + u128::from(t.subsec_nanos() % 1_000_000 != 0);
                libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX)
            }
        };
        let cap = libc::c_int::try_from(events.buf.len()).unwrap_or(libc::c_int::MAX);
        // SAFETY: the buffer holds `cap` writable epoll_event entries for the call.
        let n = unsafe { libc::epoll_wait(self.fd.as_raw_fd(), events.buf.as_mut_ptr(), cap, ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            events.len = 0;
            if e.raw_os_error() == Some(libc::EINTR) {
                return Ok(0);
            }
            return Err(e);
        }
        events.len = n as usize;
        Ok(events.len)
    }
}
