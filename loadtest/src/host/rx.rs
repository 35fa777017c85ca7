//! The guest's receive loop of host→guest cells, shared by the embedded guest thread
//! and the guest process of daemon mode so both count exactly the same thing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::cpu::{CpuStopwatch, CpuTime};
use crate::pvnet::{guest, wire};

use super::HostError;

/// Frames received per burst before the count is published.
const BURST: usize = 256;

/// Verifies frames of `len` bytes to `mac` (stamp order per flow), publishing the
/// count in `received`; anything else the kernel sends (none is expected, the
/// namespace has no addresses) is skipped, not counted. Returns the frames verified
/// and the thread's CPU time once `done()` is true, or fails if `give_up` passes first
/// (the side that should say `done` is gone).
pub fn receive<C: hv::env::EventChannel>(
    q: &mut netfront::Queue<C>,
    len: usize,
    mac: [u8; 6],
    received: &AtomicU64,
    done: impl Fn() -> bool,
    give_up: Option<Instant>,
) -> Result<(u64, CpuTime), HostError> {
    let cpu = CpuStopwatch::start();
    let mut check = wire::FlowCheck::new(len, 1);
    loop {
        let mut n = 0;
        while n < BURST {
            let r = q.recv_with(|f, meta| {
                let ours = f.len() == len
                    && f.segments().next().and_then(|s| s.get(..6)) == Some(&mac[..]);
                if !ours {
                    return Ok(false);
                }
                check
                    .check_segments(f.len(), f.segments(), meta.gso.is_some())
                    .map(|()| true)
            });
            match r {
                None => break,
                Some(Ok(true)) => n += 1,
                Some(Ok(false)) => {}
                Some(Err(e)) => {
                    return Err(HostError::Cell(format!(
                        "host→guest frame failed verification (expected seq {}): {}",
                        e.expected, e.fault
                    )))
                }
            }
        }
        if n > 0 {
            received.store(check.frames, Ordering::Release);
            continue;
        }
        if done() {
            return Ok((check.frames, cpu.stop()));
        }
        if give_up.is_some_and(|t| Instant::now() >= t) {
            return Err(HostError::Cell(
                "host→guest: the receiver was never told the cell ended".into(),
            ));
        }
        q.wait_rx(Some(guest::IDLE_WAIT));
    }
}
