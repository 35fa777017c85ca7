//! What a guest thread does with one netfront queue: send stamped frames as fast as
//! the TX ring takes them, receive and verify frames as fast as they arrive, or both.
//!
//! Frames are built straight in the granted TX pages (`Queue::send_with`: the template
//! copied and stamped page by page — the one copy a sender makes, as the peers' senders
//! copy into their rings) and verified in place in the RX pages (`Queue::recv_with`,
//! zero copy: netback's grant copy was the receive-side copy). netfront pushes every
//! [`super::testbed::TX_BATCH`] frames and notifies netback only when it asked; an idle
//! thread sleeps on the event channel (spin briefly, then block) until netback answers.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::Duration;

use hv::env::EventChannel;
use netfront::{Gso, GsoType, Queue, TxError, TxMeta};

use super::wire::{self, FlowCheck, GSO_MSS};
use crate::control::Control;
use crate::cpu::{CpuStopwatch, CpuTime};
use crate::workload::WorkloadError;

/// Longest sleep on the event channel before the thread looks at its flags again.
pub const IDLE_WAIT: Duration = Duration::from_millis(1);
/// Frames sent per burst before a bidirectional thread looks at its RX ring.
const TX_BURST: usize = 128;
/// Frames received per burst before the count is published.
const RX_BURST: usize = 256;

/// Flags and counts a worker shares with the thread that runs the cell.
#[derive(Default)]
pub struct Shared {
    /// Opened when the window opens (workers wait at it after their set-up).
    gate: Mutex<bool>,
    opened: Condvar,
    /// Raised by the cell once everything sent was received or accounted as lost (or a
    /// worker failed): receivers exit.
    pub done: AtomicBool,
    /// Raised by a worker that failed, so the cell stops waiting for the drain.
    pub failed: AtomicBool,
}

impl Shared {
    /// Lets every worker through [`Shared::wait_start`].
    pub fn start(&self) {
        *self.gate.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.opened.notify_all();
    }

    /// Waits until the cell starts (or failed before it could).
    pub fn wait_start(&self) {
        let mut open = self.gate.lock().unwrap_or_else(PoisonError::into_inner);
        while !*open && !self.failed.load(Ordering::Acquire) {
            open = self
                .opened
                .wait_timeout(open, IDLE_WAIT)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// A worker failed: stop everyone.
    pub fn fail(&self, ctl: &Control) {
        self.failed.store(true, Ordering::Release);
        self.done.store(true, Ordering::Release);
        ctl.request_stop();
    }
}

/// One worker's published counts.
#[derive(Default)]
pub struct Progress {
    /// Frames sent (final once `sent_final` is set).
    pub sent: AtomicU64,
    /// Set when the worker has stopped sending and `sent` is final.
    pub sent_final: AtomicBool,
    /// Frames received and verified.
    pub received: AtomicU64,
}

/// What a guest queue sends.
pub struct TxPlan<'a> {
    /// The unstamped frame.
    pub template: &'a [u8],
    /// The flow id stamped into every frame (the sending queue's index).
    pub flow: u16,
}

impl TxPlan<'_> {
    fn meta(&self) -> TxMeta {
        let gso = crate::cell::is_gso(self.template.len() as u32);
        TxMeta {
            gso: gso.then_some(Gso {
                ty: GsoType::TcpV4,
                size: GSO_MSS,
            }),
            ..TxMeta::default()
        }
    }
}

/// What a guest queue's worker did in the window.
pub struct WorkerResult {
    /// Frames sent.
    pub sent: u64,
    /// Frames received and verified.
    pub received: u64,
    /// Sequence numbers the receiver saw skipped.
    pub skipped: u64,
    /// The worker thread's CPU time.
    pub cpu: CpuTime,
}

fn send_error(e: TxError) -> WorkloadError {
    WorkloadError::Setup(format!("netfront refused a test frame: {e}"))
}

fn verify_error(e: wire::Failure) -> WorkloadError {
    WorkloadError::Verify {
        expected: e.expected,
        detail: e.fault.to_string(),
    }
}

/// Queues up to `max` frames; returns how many the ring took.
fn send_burst<C: EventChannel>(
    q: &mut Queue<C>,
    plan: &TxPlan<'_>,
    meta: TxMeta,
    seq: &mut u64,
    max: usize,
) -> Result<usize, WorkloadError> {
    let len = plan.template.len();
    let mut n = 0;
    while n < max {
        let s = *seq;
        match q.send_with(len, meta, |off, seg| {
            wire::fill_segment(plan.template, plan.flow, s, off, seg)
        }) {
            Ok(()) => {
                *seq += 1;
                n += 1;
            }
            Err(TxError::Busy) => break,
            Err(e) => return Err(send_error(e)),
        }
    }
    Ok(n)
}

/// Receives and verifies up to `max` frames; returns how many.
fn recv_burst<C: EventChannel>(
    q: &mut Queue<C>,
    check: &mut FlowCheck,
    max: usize,
) -> Result<usize, WorkloadError> {
    let mut n = 0;
    while n < max {
        let r =
            q.recv_with(|f, meta| check.check_segments(f.len(), f.segments(), meta.gso.is_some()));
        match r {
            None => break,
            Some(Ok(())) => n += 1,
            Some(Err(e)) => return Err(verify_error(e)),
        }
    }
    Ok(n)
}

/// Sends until the window closes.
pub fn sender<C: EventChannel>(
    q: &mut Queue<C>,
    plan: &TxPlan<'_>,
    ctl: &Control,
    shared: &Shared,
    progress: &Progress,
) -> Result<WorkerResult, WorkloadError> {
    let cpu = CpuStopwatch::start();
    let meta = plan.meta();
    let mut seq = 0u64;
    let r = (|| {
        // At least one burst even if the window closed before this thread got a CPU
        // (a tiny window on a loaded machine), so every cell moves some frames.
        while !ctl.should_stop() || seq == 0 {
            if send_burst(q, plan, meta, &mut seq, TX_BURST)? == 0 {
                // Ring full: publish, then sleep until netback answers.
                q.wait_tx(Some(IDLE_WAIT));
                if ctl.overdue() {
                    return Err(WorkloadError::Stalled {
                        side: "guest sender",
                        grace_s: ctl.duration().as_secs_f64(),
                    });
                }
            }
        }
        q.flush();
        Ok(())
    })();
    progress.sent.store(seq, Ordering::Release);
    progress.sent_final.store(true, Ordering::Release);
    if r.is_err() {
        shared.fail(ctl);
    }
    r.map(|()| WorkerResult {
        sent: seq,
        received: 0,
        skipped: 0,
        cpu: cpu.stop(),
    })
}

/// Receives and verifies frames of `len` bytes from `flows` flows until the cell says
/// everything arrived.
pub fn receiver<C: EventChannel>(
    q: &mut Queue<C>,
    len: usize,
    flows: usize,
    ctl: &Control,
    shared: &Shared,
    progress: &Progress,
) -> Result<WorkerResult, WorkloadError> {
    let cpu = CpuStopwatch::start();
    let mut check = FlowCheck::new(len, flows);
    let r = (|| loop {
        let n = recv_burst(q, &mut check, RX_BURST)?;
        if n > 0 {
            progress.received.store(check.frames, Ordering::Release);
            continue;
        }
        if shared.done.load(Ordering::Acquire) {
            return Ok(());
        }
        q.wait_rx(Some(IDLE_WAIT));
    })();
    if r.is_err() {
        shared.fail(ctl);
    }
    r.map(|()| WorkerResult {
        sent: 0,
        received: check.frames,
        skipped: check.skipped,
        cpu: cpu.stop(),
    })
}

/// Sends until the window closes while receiving and verifying, on one queue, until
/// the cell says everything arrived.
pub fn both<C: EventChannel>(
    q: &mut Queue<C>,
    plan: &TxPlan<'_>,
    flows: usize,
    ctl: &Control,
    shared: &Shared,
    progress: &Progress,
) -> Result<WorkerResult, WorkloadError> {
    let cpu = CpuStopwatch::start();
    let meta = plan.meta();
    let mut check = FlowCheck::new(plan.template.len(), flows);
    let mut seq = 0u64;
    let mut sending = true;
    let r = (|| {
        loop {
            let mut work = 0;
            if sending {
                if ctl.should_stop() && seq > 0 {
                    q.flush();
                    sending = false;
                    progress.sent.store(seq, Ordering::Release);
                    progress.sent_final.store(true, Ordering::Release);
                } else {
                    work += send_burst(q, plan, meta, &mut seq, TX_BURST)?;
                }
            }
            let n = recv_burst(q, &mut check, RX_BURST)?;
            if n > 0 {
                progress.received.store(check.frames, Ordering::Release);
            }
            work += n;
            if work > 0 {
                continue;
            }
            if !sending && shared.done.load(Ordering::Acquire) {
                return Ok(());
            }
            // Nothing to send (ring full) and nothing received: sleep until either.
            q.wait(Some(IDLE_WAIT));
        }
    })();
    if sending {
        progress.sent.store(seq, Ordering::Release);
        progress.sent_final.store(true, Ordering::Release);
    }
    if r.is_err() {
        shared.fail(ctl);
    }
    r.map(|()| WorkerResult {
        sent: seq,
        received: check.frames,
        skipped: check.skipped,
        cpu: cpu.stop(),
    })
}
