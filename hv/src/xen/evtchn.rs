//! Event channels on `/dev/xen/evtchn`.
//!
//! One descriptor serves every channel of an environment, as in libxenevtchn: the
//! driver hands out pending ports by `read()` (4 bytes each; a delivered port stays
//! masked) and re-enables them when the port is written back. [`PortDemux`] turns that
//! stream into per-port pending flags: whichever waiter finds no event for itself
//! becomes the one reader polling the descriptor, records every port it reads, and
//! wakes the others.

use std::collections::HashSet;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::device::{poll_in, Device, Kick};
use super::sys::*;
use super::XenError;
use crate::env::{DomId, EnvError, EventChannel, Port};

/// How often a waiter re-checks its port before it sleeps (each check is one
/// non-blocking `read()`): a peer on another core usually answers within this.
const SPIN_CHECKS: u32 = 32;
/// Ports read per `read()` call.
const READ_BATCH: usize = 64;

struct DemuxState {
    /// Ports whose events belong to this demultiplexer.
    bound: HashSet<Port>,
    /// Ports with an event not yet consumed.
    pending: HashSet<Port>,
    /// A waiter is blocked in `poll()` on the descriptor.
    reader_active: bool,
}

/// Per-port pending state over a descriptor that speaks the evtchn device's read/write
/// protocol (`/dev/xen/evtchn`, or a socket in tests).
pub struct PortDemux {
    fd: RawFd,
    /// Keeps `fd` open when the demux owns it (see [`PortDemux::new`]).
    _owned: Option<OwnedFd>,
    state: Mutex<DemuxState>,
    cond: Condvar,
    /// Wakes the polling reader when another thread consumed the descriptor's data.
    kick: Kick,
}

impl core::fmt::Debug for PortDemux {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PortDemux").field("fd", &self.fd).finish()
    }
}

impl PortDemux {
    /// A demultiplexer reading pending ports from `fd` (which must be non-blocking) and
    /// writing them back to unmask.
    pub fn new(fd: OwnedFd) -> Result<PortDemux, XenError> {
        let raw = fd.as_raw_fd();
        Self::with_raw(raw, Some(fd))
    }

    fn with_raw(fd: RawFd, owned: Option<OwnedFd>) -> Result<PortDemux, XenError> {
        Ok(PortDemux {
            fd,
            _owned: owned,
            state: Mutex::new(DemuxState {
                bound: HashSet::new(),
                pending: HashSet::new(),
                reader_active: false,
            }),
            cond: Condvar::new(),
            kick: Kick::new()?,
        })
    }

    fn lock(&self) -> MutexGuard<'_, DemuxState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Start delivering events of `port`.
    pub fn register(&self, port: Port) {
        let mut st = self.lock();
        st.bound.insert(port);
        st.pending.remove(&port);
    }

    /// Stop delivering events of `port` (its pending event is dropped).
    pub fn unregister(&self, port: Port) {
        let mut st = self.lock();
        st.bound.remove(&port);
        st.pending.remove(&port);
    }

    /// Read every port the descriptor has ready, mark the bound ones pending and write
    /// all of them back to unmask. Returns how many ports were read.
    fn drain(&self, st: &mut DemuxState) -> usize {
        let mut total = 0;
        loop {
            let mut buf = [0u32; READ_BATCH];
            // SAFETY: reads at most size_of_val(&buf) bytes into a live local array.
            let n = unsafe {
                libc::read(
                    self.fd,
                    buf.as_mut_ptr().cast(),
                    core::mem::size_of_val(&buf),
                )
            };
            if n <= 0 {
                if n < 0 {
                    let err = io::Error::last_os_error();
                    if err.kind() != io::ErrorKind::WouldBlock
                        && err.kind() != io::ErrorKind::Interrupted
                    {
                        log::warn!("evtchn read failed: {err}");
                    }
                }
                return total;
            }
            // The driver returns whole ports; a partial one would be a driver bug.
            let ports = &buf[..n as usize / 4];
            for &p in ports {
                if st.bound.contains(&p) {
                    st.pending.insert(p);
                }
            }
            total += ports.len();
            // Unmask: the events are recorded, so the ports may fire again.
            // SAFETY: writes the ports just read from a live local array.
            let w = unsafe {
                libc::write(
                    self.fd,
                    ports.as_ptr().cast(),
                    core::mem::size_of_val(ports),
                )
            };
            if w < 0 {
                log::warn!("evtchn unmask write failed: {}", io::Error::last_os_error());
            }
            if ports.len() < READ_BATCH {
                return total;
            }
        }
    }

    /// Consume `port`'s pending event without blocking.
    pub fn try_consume(&self, port: Port) -> bool {
        let mut st = self.lock();
        if st.pending.remove(&port) {
            return true;
        }
        if self.drain(&mut st) > 0 {
            if st.reader_active {
                // The reader's poll() no longer sees this data: wake it to re-check.
                self.kick.kick();
            }
            self.cond.notify_all();
        }
        st.pending.remove(&port)
    }

    /// Wait until `port` has an event or `timeout` passes; consumes it.
    pub fn wait(&self, port: Port, timeout: Option<Duration>) -> bool {
        let deadline = timeout.map(|t| Instant::now() + t);
        for _ in 0..SPIN_CHECKS {
            if self.try_consume(port) {
                return true;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return false;
            }
            core::hint::spin_loop();
        }
        let mut st = self.lock();
        loop {
            if st.pending.remove(&port) {
                return true;
            }
            let remaining = match deadline {
                None => None,
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(r) if !r.is_zero() => Some(r),
                    _ => return false,
                },
            };
            if st.reader_active {
                st = match remaining {
                    None => self.cond.wait(st).unwrap_or_else(PoisonError::into_inner),
                    Some(r) => {
                        self.cond
                            .wait_timeout(st, r)
                            .unwrap_or_else(PoisonError::into_inner)
                            .0
                    }
                };
                continue;
            }
            // Become the reader: poll without the lock so others can consume meanwhile.
            st.reader_active = true;
            drop(st);
            let polled = poll_in(&[self.fd, self.kick.raw()], remaining);
            st = self.lock();
            st.reader_active = false;
            self.kick.clear();
            if let Err(e) = polled {
                log::warn!("evtchn poll failed: {e}");
            }
            self.drain(&mut st);
            // Wake the others: some may have events now, or one must become the reader.
            self.cond.notify_all();
        }
    }
}

/// `/dev/xen/evtchn`: binds channels and owns the shared descriptor.
#[derive(Debug)]
pub struct Evtchn {
    inner: Arc<EvtchnInner>,
}

#[derive(Debug)]
struct EvtchnInner {
    dev: Device,
    demux: PortDemux,
}

/// Where the evtchn device lives.
pub const EVTCHN_PATH: &str = "/dev/xen/evtchn";

impl Evtchn {
    /// Open `/dev/xen/evtchn`.
    pub fn open() -> Result<Evtchn, XenError> {
        let dev = Device::open(
            EVTCHN_PATH,
            "not running in a Xen domain, or modprobe xen-evtchn",
            true,
        )?;
        let demux = PortDemux::with_raw(dev.raw(), None)?;
        Ok(Evtchn {
            inner: Arc::new(EvtchnInner { dev, demux }),
        })
    }

    fn channel(&self, port: Port) -> XenChannel {
        self.inner.demux.register(port);
        XenChannel {
            inner: self.inner.clone(),
            port,
        }
    }

    /// `IOCTL_EVTCHN_BIND_INTERDOMAIN` (`EVTCHNOP_bind_interdomain`).
    pub fn bind_interdomain(
        &self,
        remote: DomId,
        remote_port: Port,
    ) -> Result<XenChannel, EnvError> {
        let mut arg = IoctlEvtchnBindInterdomain {
            remote_domain: remote.into(),
            remote_port,
        };
        // SAFETY: the argument is the ioctl_evtchn_bind_interdomain this request takes.
        let port = unsafe {
            self.inner
                .dev
                .ioctl(IOCTL_EVTCHN_BIND_INTERDOMAIN, &mut arg)
        }
        .map_err(|e| evtchn_error(e, remote))?;
        Ok(self.channel(port as Port))
    }

    /// `IOCTL_EVTCHN_BIND_UNBOUND_PORT` (`EVTCHNOP_alloc_unbound`).
    pub fn bind_unbound_port(&self, remote: DomId) -> Result<XenChannel, EnvError> {
        let mut arg = IoctlEvtchnBindUnboundPort {
            remote_domain: remote.into(),
        };
        // SAFETY: the argument is the ioctl_evtchn_bind_unbound_port this request takes.
        let port = unsafe {
            self.inner
                .dev
                .ioctl(IOCTL_EVTCHN_BIND_UNBOUND_PORT, &mut arg)
        }
        .map_err(|e| evtchn_error(e, remote))?;
        Ok(self.channel(port as Port))
    }
}

fn evtchn_error(e: io::Error, remote: DomId) -> EnvError {
    match e.raw_os_error() {
        Some(libc::ESRCH) => EnvError::NoSuchDomain(remote),
        Some(libc::ENOSPC) | Some(libc::EMFILE) => EnvError::Exhausted("event-channel ports"),
        Some(errno) => EnvError::Evtchn(errno),
        None => EnvError::Transport(e.to_string()),
    }
}

/// A bound port on `/dev/xen/evtchn`; unbound on drop (`IOCTL_EVTCHN_UNBIND`).
#[derive(Debug)]
pub struct XenChannel {
    inner: Arc<EvtchnInner>,
    port: Port,
}

impl EventChannel for XenChannel {
    fn port(&self) -> Port {
        self.port
    }

    fn notify(&self) {
        let mut arg = IoctlEvtchnNotify { port: self.port };
        // SAFETY: the argument is the ioctl_evtchn_notify this request takes.
        if let Err(e) = unsafe { self.inner.dev.ioctl(IOCTL_EVTCHN_NOTIFY, &mut arg) } {
            log::warn!("evtchn notify of port {} failed: {e}", self.port);
        }
    }

    fn try_consume(&self) -> bool {
        self.inner.demux.try_consume(self.port)
    }

    fn wait(&self, timeout: Option<Duration>) -> bool {
        self.inner.demux.wait(self.port, timeout)
    }
}

impl Drop for XenChannel {
    fn drop(&mut self) {
        self.inner.demux.unregister(self.port);
        let mut arg = IoctlEvtchnUnbind { port: self.port };
        // SAFETY: the argument is the ioctl_evtchn_unbind this request takes.
        if let Err(e) = unsafe { self.inner.dev.ioctl(IOCTL_EVTCHN_UNBIND, &mut arg) } {
            log::warn!("evtchn unbind of port {} failed: {e}", self.port);
        }
    }
}
