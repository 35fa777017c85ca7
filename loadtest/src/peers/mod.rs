//! The limit and the peers pvnet is measured against, run in the same process with the
//! same frame sizes, pools and verification as the pvnet cells.
//!
//! * [`memcpy`] — the copy limit: one thread copying frames; nothing that copies each
//!   frame once can beat it on this machine.
//! * [`ringbuf_peer`] — a lock-free SPSC byte ring (crate `ringbuf`) between two threads:
//!   what a tuned shared-memory path does.
//! * [`crossbeam_peer`] — a bounded crossbeam channel of per-frame `Vec<u8>`: what a
//!   straightforward Rust program does.
//! * [`pingpong`] — two latency peers (spinning flag, eventfd) on the
//!   [`crate::latency`] harness.

pub mod crossbeam_peer;
pub mod memcpy;
pub mod pingpong;
pub mod ringbuf_peer;

use std::sync::atomic::{AtomicBool, Ordering};

use crate::workload::{Workload, WorkloadError};

/// Every reference workload, in report order.
pub fn all() -> Vec<Box<dyn Workload>> {
    vec![
        Box::new(memcpy::MemcpyLimit),
        Box::new(ringbuf_peer::RingbufPeer),
        Box::new(crossbeam_peer::CrossbeamPeer),
        Box::new(pingpong::SpinPingPong),
        Box::new(pingpong::EventfdPingPong),
    ]
}

/// Names of the reference series, used by tests and docs.
pub const MEMCPY: &str = "memcpy";
/// See [`ringbuf_peer`].
pub const RINGBUF: &str = "ringbuf";
/// See [`crossbeam_peer`].
pub const CROSSBEAM: &str = "crossbeam";
/// See [`pingpong::SpinPingPong`].
pub const SPIN_PINGPONG: &str = "spin-pingpong";
/// See [`pingpong::EventfdPingPong`].
pub const EVENTFD_PINGPONG: &str = "eventfd-pingpong";

/// Idle waiting of a worker whose ring is empty (or full): spin briefly, then yield the
/// core — on a 2-core machine the peer may need it.
#[derive(Default)]
pub struct Backoff {
    idle: u32,
}

impl Backoff {
    /// Spins before yielding.
    const SPINS: u32 = 64;
    /// How often [`Backoff::snooze`] asks the caller to run its slow checks.
    const CHECK_EVERY: u32 = 1024;

    /// Progress was made: start spinning again next time.
    #[inline]
    pub fn reset(&mut self) {
        self.idle = 0;
    }

    /// Waits a little; returns true every [`Self::CHECK_EVERY`] idle rounds so the
    /// caller can check for a stalled peer without taking locks on every round.
    #[inline]
    pub fn snooze(&mut self) -> bool {
        self.idle = self.idle.wrapping_add(1);
        if self.idle < Self::SPINS {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
        // CHECK_EVERY is a power of two.
        self.idle & (Self::CHECK_EVERY - 1) == 0
    }
}

/// Sets a flag when dropped — also while unwinding from a panic — so the other side of
/// a pair learns its peer is gone instead of waiting for it.
pub struct SetOnDrop<'a>(pub &'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Joins a scoped worker, turning a panic into [`WorkloadError::WorkerPanicked`].
pub fn join<T>(
    h: std::thread::ScopedJoinHandle<'_, T>,
    name: &'static str,
) -> Result<T, WorkloadError> {
    h.join().map_err(|_| WorkloadError::WorkerPanicked(name))
}
