//! Event-channel delivery across processes.
//!
//! Guest → hypervisor (`EVTCHNOP_send`): each port a guest process holds has a *send*
//! eventfd. The guest's notify is one `write(2)` on it; the daemon's [`SendPump`]
//! thread waits on all of them in one `epoll` set and turns each readable one into
//! `EventChannels::send(domid, port)`. No reply, no round trip; back-to-back notifies
//! coalesce in the eventfd counter, as Xen's pending bit coalesces events.
//!
//! Hypervisor → guest (the upcall): the hub sets the port's bit in the guest's
//! `evtchn_pending[]` — in the event-channel page the guest has mapped — and kicks the
//! port's [`GuestKick`], which writes the port's *kick* eventfd only if the guest set
//! the port's bit in the page's `sleeping[]` bitmap
//! ([`crate::wire::EVTCHN_SLEEP_BITMAP_OFFSET`]). A guest that is polling its pending
//! bits therefore costs the hypervisor no system call. This is `event_channel::Waiter`'s
//! handshake with the flag moved into shared memory: the guest sets `sleeping`, then
//! re-checks `pending`; the hub sets `pending`, then tests `sleeping`; all `SeqCst`
//! atomics on the same physical page, so one of the two always sees the other.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use event_channel::{EventChannels, EventFd, Notifier, SharedBits};

use crate::embedded::Domain;
use crate::env::{DomId, Port};
use crate::wire::EVTCHN_SLEEP_BITMAP_OFFSET;

/// The `sleeping[]` bitmap of one domain's event-channel page, kept alive with it.
pub(crate) struct SleepBits {
    // Declared before `_dom` so the view goes before the memory it points into.
    bits: SharedBits,
    _dom: Arc<Domain>,
}

impl SleepBits {
    /// The bitmap inside `dom`'s event-channel page.
    pub(crate) fn new(dom: Arc<Domain>, nports: usize) -> Self {
        let page = dom.evtchn_region().base();
        // SAFETY: the event-channel region is one page-aligned 4 KiB page owned by
        // `dom`, which this value keeps alive; the bitmap's 64 words (512 bytes) start
        // at byte 1024 and end inside the page; every access is atomic.
        let bits = unsafe {
            let p = page
                .as_ptr()
                .add(EVTCHN_SLEEP_BITMAP_OFFSET)
                .cast::<std::sync::atomic::AtomicU64>();
            SharedBits::from_raw(
                NonNull::new_unchecked(p),
                nports.min(event_channel::EVTCHN_2L_NR_CHANNELS),
            )
        };
        Self { bits, _dom: dom }
    }
}

/// The [`Notifier`] bound to a guest process's port: writes the port's kick eventfd
/// when the guest sleeps on it.
pub(crate) struct GuestKick {
    sleep: Arc<SleepBits>,
    port: usize,
    eventfd: EventFd,
    writes: AtomicU64,
}

impl GuestKick {
    pub(crate) fn new(sleep: Arc<SleepBits>, port: Port, eventfd: EventFd) -> Self {
        Self {
            sleep,
            port: port as usize,
            eventfd,
            writes: AtomicU64::new(0),
        }
    }
}

impl Notifier for GuestKick {
    fn kick(&self) {
        // SeqCst load pairs with the guest's SeqCst set of `sleeping` and the hub's
        // SeqCst set of `pending` (module doc).
        if self.sleep.bits.test(self.port) {
            // A failed write cannot be helped: the pending bit is set either way.
            let _ = self.eventfd.signal();
            self.writes.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A watched port: its domain, its number and its send eventfd.
type WatchedPort = (DomId, Port, Arc<EventFd>);

/// The thread that turns guests' send-eventfd writes into `EVTCHNOP_send`.
pub(crate) struct SendPump {
    shared: Arc<PumpShared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

struct PumpShared {
    epoll: OwnedFd,
    stop: EventFd,
    stopping: AtomicBool,
    hub: Arc<EventChannels>,
    /// epoll key → (domain, port, the send eventfd).
    ports: Mutex<HashMap<u64, WatchedPort>>,
    sends: AtomicU64,
}

/// epoll key of the stop eventfd (no port key can be this: keys are `domid << 32 | port`
/// with domid below `DOMID_FIRST_RESERVED`).
const STOP_KEY: u64 = u64::MAX;

fn key(dom: DomId, port: Port) -> u64 {
    (u64::from(dom) << 32) | u64::from(port)
}

impl SendPump {
    pub(crate) fn start(hub: Arc<EventChannels>) -> io::Result<Self> {
        // SAFETY: epoll_create1 takes no pointers; checked below.
        let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if ep < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor nobody else owns.
        let epoll = unsafe { OwnedFd::from_raw_fd(ep) };
        let stop = EventFd::new()?;
        epoll_add(&epoll, stop.as_raw_fd(), STOP_KEY)?;
        let shared = Arc::new(PumpShared {
            epoll,
            stop,
            stopping: AtomicBool::new(false),
            hub,
            ports: Mutex::new(HashMap::new()),
            sends: AtomicU64::new(0),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("hv-evtchn-send".into())
            .spawn(move || s.run())?;
        Ok(Self {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Start turning writes of `send` into sends on `dom`'s `port`.
    pub(crate) fn register(&self, dom: DomId, port: Port, send: EventFd) -> io::Result<()> {
        let k = key(dom, port);
        let send = Arc::new(send);
        let mut ports = self
            .shared
            .ports
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((_, _, old)) = ports.remove(&k) {
            let _ = epoll_del(&self.shared.epoll, old.as_raw_fd());
        }
        epoll_add(&self.shared.epoll, send.as_raw_fd(), k)?;
        ports.insert(k, (dom, port, send));
        Ok(())
    }

    /// Stop watching `dom`'s `port`; its send eventfd is closed.
    ///
    /// A notify the guest wrote before the close (or before its process exited) is
    /// still delivered: on Xen `EVTCHNOP_send` is a synchronous hypercall, so a guest
    /// that notifies and then closes the port (or dies) has already raised the event.
    /// Without this flush the pump could lose that last write when the port goes away
    /// before `epoll_wait` reports it. Call it before the port is closed in the hub.
    pub(crate) fn unregister(&self, dom: DomId, port: Port) {
        let removed = self
            .shared
            .ports
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&key(dom, port));
        if let Some((_, _, fd)) = removed {
            let _ = epoll_del(&self.shared.epoll, fd.as_raw_fd());
            if matches!(fd.drain(), Ok(c) if c > 0) {
                let _ = self.shared.hub.send(dom, port);
                self.shared.sends.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Sends performed so far.
    pub(crate) fn sends(&self) -> u64 {
        self.shared.sends.load(Ordering::Relaxed)
    }

    /// Ports watched.
    pub(crate) fn watched(&self) -> usize {
        self.shared
            .ports
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub(crate) fn stop(&self) {
        self.shared.stopping.store(true, Ordering::Release);
        let _ = self.shared.stop.signal();
        if let Some(t) = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            let _ = t.join();
        }
        self.shared
            .ports
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

impl Drop for SendPump {
    fn drop(&mut self) {
        self.stop();
    }
}

impl PumpShared {
    fn run(&self) {
        const MAX_EVENTS: usize = 64;
        // SAFETY: epoll_event is plain old data.
        let mut events: [libc::epoll_event; MAX_EVENTS] = unsafe { std::mem::zeroed() };
        while !self.stopping.load(Ordering::Acquire) {
            // SAFETY: `events` is a live array of MAX_EVENTS entries.
            let n = unsafe {
                libc::epoll_wait(
                    self.epoll.as_raw_fd(),
                    events.as_mut_ptr(),
                    MAX_EVENTS as i32,
                    -1,
                )
            };
            if n < 0 {
                if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                log::error!(
                    "hv daemon: epoll_wait failed: {}",
                    io::Error::last_os_error()
                );
                return;
            }
            for ev in &events[..n as usize] {
                let k = ev.u64;
                if k == STOP_KEY {
                    continue;
                }
                // Drain and send under the ports lock: once `unregister` has returned,
                // no send for that port is in flight (it would land after the port
                // closed and be lost, while `unregister` found the eventfd drained).
                let ports = self.ports.lock().unwrap_or_else(PoisonError::into_inner);
                // Unregistered since epoll reported it: nothing to do.
                let Some((dom, port, fd)) = ports.get(&k) else {
                    continue;
                };
                // Drain first, then send: a write landing after the drain is seen by
                // the next epoll_wait, so no notify is lost.
                if matches!(fd.drain(), Ok(c) if c > 0) {
                    // A closed peer port makes the send fail; the guest learns of it
                    // through the xenstore, as on Xen.
                    let _ = self.hub.send(*dom, *port);
                    self.sends.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

fn epoll_add(ep: &OwnedFd, fd: i32, key: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: key,
    };
    // SAFETY: `ev` is a live epoll_event; both descriptors are valid.
    if unsafe { libc::epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn epoll_del(ep: &OwnedFd, fd: i32) -> io::Result<()> {
    // SAFETY: DEL ignores the event pointer on modern kernels; a null is allowed.
    if unsafe {
        libc::epoll_ctl(
            ep.as_raw_fd(),
            libc::EPOLL_CTL_DEL,
            fd,
            std::ptr::null_mut(),
        )
    } < 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
