//! A polling ping-pong transport: two cache-line-padded atomic words, each side spinning
//! on the other's. The floor for any shared-memory round trip between two cores.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crossbeam::utils::CachePadded;

use super::{PingPong, FIRST_TIMED_SEQ};
use crate::cpu::{CpuStopwatch, CpuTime};
use crate::workload::WorkloadError;

/// Written into `ping` to make the echo return.
const QUIT: u64 = u64::MAX;

/// Spins before yielding the core once: a peer descheduled on a shared 2-core machine
/// would otherwise cost a whole time slice of pointless spinning.
const SPINS_BEFORE_YIELD: u32 = 1 << 10;

/// The shared words.
#[derive(Default)]
pub struct SpinLink {
    ping: CachePadded<AtomicU64>,
    pong: CachePadded<AtomicU64>,
    echo_gone: AtomicBool,
}

impl SpinLink {
    /// A fresh link (both words 0).
    pub fn new() -> Self {
        SpinLink::default()
    }

    /// The echo side: answers every new `ping` value in `pong` until the client's
    /// [`SpinClient`] is dropped. Returns its CPU time from the first timed round trip
    /// ([`FIRST_TIMED_SEQ`]) on.
    pub fn echo(&self) -> CpuTime {
        let _gone = crate::peers::SetOnDrop(&self.echo_gone);
        let mut cpu = None;
        let mut last = 0u64;
        let mut spins = 0u32;
        loop {
            let v = self.ping.load(Ordering::Acquire);
            if v == last {
                spin_wait(&mut spins);
                continue;
            }
            spins = 0;
            if v == QUIT {
                return cpu.map(CpuStopwatch::stop).unwrap_or_default();
            }
            if v == FIRST_TIMED_SEQ {
                cpu = Some(CpuStopwatch::start());
            }
            self.pong.store(v, Ordering::Release);
            last = v;
        }
    }

    /// The client side; dropping it stops the echo.
    pub fn client(&self) -> SpinClient<'_> {
        SpinClient { link: self }
    }
}

/// The client half of a [`SpinLink`].
pub struct SpinClient<'a> {
    link: &'a SpinLink,
}

impl PingPong for SpinClient<'_> {
    fn round_trip(&mut self, seq: u64) -> Result<u64, WorkloadError> {
        self.link.ping.store(seq, Ordering::Release);
        let mut spins = 0u32;
        loop {
            let v = self.link.pong.load(Ordering::Acquire);
            if v == seq {
                return Ok(v);
            }
            if self.link.echo_gone.load(Ordering::Acquire) {
                return Err(WorkloadError::WorkerPanicked("spin echo"));
            }
            spin_wait(&mut spins);
        }
    }
}

impl Drop for SpinClient<'_> {
    fn drop(&mut self) {
        self.link.ping.store(QUIT, Ordering::Release);
    }
}

#[inline]
fn spin_wait(spins: &mut u32) {
    *spins += 1;
    if *spins >= SPINS_BEFORE_YIELD {
        *spins = 0;
        std::thread::yield_now();
    } else {
        std::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_answers_each_sequence_and_quits_on_drop() {
        let link = SpinLink::new();
        std::thread::scope(|s| {
            let echo = s.spawn(|| link.echo());
            let mut c = link.client();
            for seq in 1..=100 {
                assert_eq!(c.round_trip(seq).expect("echo alive"), seq);
            }
            drop(c);
            echo.join().expect("echo returns after QUIT");
        });
    }
}
