//! [`LoadPort`]: Dom0's end of the guest→Dom0 and Dom0→guest cells, plugged into
//! netback as its port.
//!
//! * As a **verifying sink** ([`Port::transmit`], called on the netback TX thread of
//!   the queue the frames came in on) it checks every frame's stamps per flow, like
//!   netback's [`netback::Sink`] counts them but without trusting the count.
//! * As a **sequenced source** ([`Port::generate`], called on the netback RX thread of
//!   the queue whenever the guest has buffers posted) it emits frames stamped with the
//!   queue's own flow and sequence numbers. Like [`netback::Source`] it hands netback
//!   shared buffers (no copy in the port): a pool per queue of `Arc<[u8]>` frames,
//!   each re-stamped in place once netback has let go of it (`Arc::get_mut`), so
//!   nothing is allocated per frame.
//!
//! Per-queue state sits behind its own mutex, taken once per batch by the one netback
//! thread that serves the queue: uncontended.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crossbeam::utils::CachePadded;
use netback::port::RxEmitter;
use netback::{FrameBatch, Gso, GsoType, OffloadMeta, Port, VifLink};

use super::wire::{self, FlowCheck, FrameSpec, GSO_MSS};

/// Bytes of frames one queue's generator pool holds at most (the pool has at least
/// [`MIN_POOL_FRAMES`] frames, so a pool can always cover a full RX ring).
const POOL_BYTES: usize = 8 << 20;
/// Fewest frames in a generator pool: more than one RX batch of netback (256) in flight.
const MIN_POOL_FRAMES: usize = 320;
/// Most frames in a generator pool.
const MAX_POOL_FRAMES: usize = 2048;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One queue's generator.
struct GenQueue {
    pool: Vec<Arc<[u8]>>,
    next_seq: u64,
    /// Pool slots found still in netback's hands (the generator then waits a pass).
    busy: u64,
}

/// One queue's verifier.
struct SinkQueue {
    check: FlowCheck,
    /// First verification failure, with the sequence number expected.
    fault: Option<wire::Failure>,
}

/// See the module documentation.
pub struct LoadPort {
    sink: Vec<CachePadded<Mutex<SinkQueue>>>,
    /// Frames verified by the sink, all queues (for the drain check).
    sunk: AtomicU64,
    /// Set once a queue recorded a verification failure (cheap to poll).
    faulted: AtomicBool,
    gen: Vec<CachePadded<Mutex<GenQueue>>>,
    meta: OffloadMeta,
    /// Ring slots one generated frame needs: data pages plus the GSO extra.
    slots_per_frame: usize,
    /// Raised when the window closes: no frame is generated after it.
    stop: AtomicBool,
}

impl LoadPort {
    /// A port for frames of `frame_len` bytes on a vif of `queues` queues; `generate`
    /// makes it a source too, with frames addressed to `guest`.
    pub fn new(frame_len: usize, queues: u16, generate: bool, guest: [u8; 6]) -> Option<Self> {
        let nq = usize::from(queues);
        let gso = crate::cell::is_gso(frame_len as u32);
        let meta = OffloadMeta {
            csum_blank: gso,
            data_validated: gso,
            gso: gso.then_some(Gso {
                ty: GsoType::TcpV4,
                size: GSO_MSS,
            }),
        };
        let mut gen = Vec::new();
        if generate {
            let frames = (POOL_BYTES / frame_len).clamp(MIN_POOL_FRAMES, MAX_POOL_FRAMES);
            for q in 0..queues {
                let t = wire::template(&FrameSpec {
                    len: frame_len,
                    dst: guest,
                    src: wire::DOM0_MAC,
                    flow: q,
                    spread_over: queues,
                })?;
                let pool = (0..frames).map(|_| Arc::from(t.as_slice())).collect();
                gen.push(CachePadded::new(Mutex::new(GenQueue {
                    pool,
                    next_seq: 0,
                    busy: 0,
                })));
            }
        }
        Some(LoadPort {
            sink: (0..nq)
                .map(|_| {
                    CachePadded::new(Mutex::new(SinkQueue {
                        check: FlowCheck::new(frame_len, nq),
                        fault: None,
                    }))
                })
                .collect(),
            sunk: AtomicU64::new(0),
            faulted: AtomicBool::new(false),
            gen,
            meta,
            slots_per_frame: frame_len.div_ceil(4096) + usize::from(gso),
            stop: AtomicBool::new(false),
        })
    }

    /// Stops generating; returns the frames generated per queue (final: a generate
    /// pass in progress finishes under the queue's lock first).
    pub fn stop_generating(&self) -> Vec<u64> {
        self.stop.store(true, Ordering::SeqCst);
        self.gen.iter().map(|g| lock(g).next_seq).collect()
    }

    /// Frames generated so far, all queues (frames handed to netback before the
    /// window opened are taken off the cell's count).
    pub fn generated(&self) -> u64 {
        self.gen.iter().map(|g| lock(g).next_seq).sum()
    }

    /// Frames the sink verified so far, all queues.
    pub fn sunk(&self) -> u64 {
        self.sunk.load(Ordering::Acquire)
    }

    /// Frames the sink verified and sequence numbers it saw skipped, all queues.
    pub fn sink_totals(&self) -> (u64, u64) {
        self.sink.iter().fold((0, 0), |(f, s), q| {
            let q = lock(q);
            (f + q.check.frames, s + q.check.skipped)
        })
    }

    /// The first verification failure the sink saw, if any.
    pub fn sink_fault(&self) -> Option<wire::Failure> {
        if !self.faulted.load(Ordering::Acquire) {
            return None;
        }
        self.sink.iter().find_map(|q| lock(q).fault.clone())
    }

    /// Times a generator found every pool frame still in netback's hands.
    pub fn generator_busy(&self) -> u64 {
        self.gen.iter().map(|g| lock(g).busy).sum()
    }
}

impl Port for LoadPort {
    fn transmit(&self, _from: &Arc<VifLink>, queue: u16, frames: &FrameBatch<'_>) {
        let Some(q) = self.sink.get(usize::from(queue)) else {
            return;
        };
        let mut q = lock(q);
        if q.fault.is_some() {
            return;
        }
        let mut ok = 0u64;
        for f in frames.iter() {
            if let Err(e) = q.check.check(f.data, f.meta.gso.is_some()) {
                q.fault = Some(e);
                self.faulted.store(true, Ordering::Release);
                break;
            }
            ok += 1;
        }
        drop(q);
        self.sunk.fetch_add(ok, Ordering::Release);
    }

    fn generates(&self) -> bool {
        // Once stopped, say so: netback's RX thread then parks instead of polling a
        // generator that will not produce anything.
        !self.gen.is_empty() && !self.stop.load(Ordering::Relaxed)
    }

    fn generate(&self, _to: &VifLink, queue: u16, out: &mut RxEmitter<'_>) {
        let Some(g) = self.gen.get(usize::from(queue)) else {
            return;
        };
        let mut g = lock(g);
        // Checked under the lock: once stop_generating() has read next_seq, nothing
        // more is emitted.
        if self.stop.load(Ordering::SeqCst) {
            return;
        }
        // The budget is in ring slots: emit what the posted buffers can take now.
        let frames = (out.budget() / self.slots_per_frame).max(1);
        let n = g.pool.len() as u64;
        for _ in 0..frames {
            let seq = g.next_seq;
            let slot = (seq % n) as usize;
            let Some(buf) = Arc::get_mut(&mut g.pool[slot]) else {
                g.busy += 1;
                break;
            };
            wire::stamp(buf, queue, seq);
            let frame = g.pool[slot].clone();
            if !out.push_shared(frame, self.meta) {
                break;
            }
            g.next_seq += 1;
        }
    }
}
