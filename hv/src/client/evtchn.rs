//! Event channels of a guest process.
//!
//! Pending bits live in the domain's event-channel page, which the guest has mapped:
//! consuming an event is an atomic test-and-clear, no system call. Notifying the
//! remote end is one `write(2)` on the port's send eventfd (the daemon turns it into
//! `EVTCHNOP_send`); waiting spins on the pending bit, then sets the port's bit in the
//! page's `sleeping[]` bitmap, re-checks, and sleeps on the kick eventfd the daemon
//! writes only while that bit is set (see `daemon::notify` for the handshake).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use event_channel::{EventFd, EvtchnBits, SharedBits, DEFAULT_SPIN};

use crate::env::{EventChannel, Port};
use crate::memory::FrameRegion;
use crate::wire::Request;

use super::conn::Conn;

/// The guest's mapping of its event-channel page.
pub(crate) struct EvtchnPage {
    // Views first: they point into `_region` and must go before it.
    pub(crate) bits: EvtchnBits,
    pub(crate) sleeping: SharedBits,
    _region: FrameRegion,
}

impl EvtchnPage {
    /// Views onto the mapped page for ports `0..nports` (at most 4096).
    pub(crate) fn new(region: FrameRegion, nports: usize) -> Self {
        let base = region.base();
        // SAFETY: the region is one page-aligned 4 KiB page that this value owns and
        // keeps mapped for as long as the views live; the bitmaps lie within it
        // (pending + mask: bytes 0..1024, sleeping: 1024..1536) and are only accessed
        // atomically, here and in the daemon.
        let (bits, sleeping) = unsafe {
            let bits = EvtchnBits::from_page(base.cast(), nports);
            let sp = base.add(crate::wire::EVTCHN_SLEEP_BITMAP_OFFSET).cast();
            (
                bits,
                SharedBits::from_raw(sp, nports.min(event_channel::EVTCHN_2L_NR_CHANNELS)),
            )
        };
        Self {
            bits,
            sleeping,
            _region: region,
        }
    }
}

/// A bound port of a guest process. Dropping it closes the port (`EVTCHNOP_close`).
pub struct RemoteChannel {
    conn: Arc<Conn>,
    page: Arc<EvtchnPage>,
    port: Port,
    kick: EventFd,
    send: EventFd,
    /// Held by the one thread that may sleep on `kick` (the handshake needs one).
    sleeper: Mutex<()>,
}

impl RemoteChannel {
    pub(crate) fn new(
        conn: Arc<Conn>,
        page: Arc<EvtchnPage>,
        port: Port,
        kick: EventFd,
        send: EventFd,
    ) -> Self {
        Self {
            conn,
            page,
            port,
            kick,
            send,
            sleeper: Mutex::new(()),
        }
    }

    fn spin_until(&self, until: Instant) -> bool {
        loop {
            for _ in 0..16 {
                if self.try_consume() {
                    return true;
                }
                core::hint::spin_loop();
            }
            if Instant::now() >= until {
                return false;
            }
        }
    }

    /// Announce we sleep, re-check, sleep on the kick eventfd for up to `left`.
    fn sleep_once(&self, left: Option<Duration>) -> bool {
        let p = self.port as usize;
        self.page.sleeping.test_and_set(p);
        if self.try_consume() {
            self.page.sleeping.test_and_clear(p);
            return true;
        }
        let polled = self.kick.wait_readable(left);
        self.page.sleeping.test_and_clear(p);
        // Drain even on timeout: a stale count would make the next sleep return at once.
        let _ = self.kick.drain();
        if self.try_consume() {
            return true;
        }
        if polled.is_err() {
            std::thread::yield_now();
        }
        false
    }
}

impl EventChannel for RemoteChannel {
    fn port(&self) -> Port {
        self.port
    }

    fn notify(&self) {
        // One write(2); the daemon sends on our behalf. A daemon that is gone makes
        // this a no-op; the driver notices through the xenstore.
        let _ = self.send.signal();
    }

    fn try_consume(&self) -> bool {
        self.page.bits.pending.test_and_clear(self.port as usize)
    }

    fn wait(&self, timeout: Option<Duration>) -> bool {
        if self.try_consume() {
            return true;
        }
        let start = Instant::now();
        let deadline = timeout.and_then(|t| start.checked_add(t));
        let spin = timeout.map_or(DEFAULT_SPIN, |t| t.min(DEFAULT_SPIN));
        if self.spin_until(start + spin) {
            return true;
        }
        let Ok(_sleeper) = self.sleeper.try_lock() else {
            // Another thread sleeps on this port: poll instead of queueing behind it.
            loop {
                if self.try_consume() {
                    return true;
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return false;
                }
                std::thread::sleep(Duration::from_micros(50));
            }
        };
        loop {
            let left = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return self.try_consume();
                    }
                    Some(left)
                }
                None => None,
            };
            // Sleep in chunks so a waiter without timeout still notices a daemon
            // that went away (nothing would kick it again).
            let chunk = left.map_or(Duration::from_secs(1), |l| l.min(Duration::from_secs(1)));
            if self.sleep_once(Some(chunk)) {
                return true;
            }
            if self.conn.is_closed() && !self.try_consume() {
                // The hypervisor is gone: nothing will ever kick us again.
                return false;
            }
        }
    }
}

impl Drop for RemoteChannel {
    fn drop(&mut self) {
        self.conn
            .send_oneway(&Request::EvtchnClose { port: self.port });
    }
}
