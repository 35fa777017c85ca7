//! The ringbuf peer: a lock-free single-producer single-consumer **byte** ring (crate
//! `ringbuf`) between two threads, each frame a 4-byte length prefix and its bytes.
//!
//! Why a byte ring and not a ring of fixed slots: a netif ring does not move buffers, it
//! moves bytes — the sender's frame is copied into shared memory (the granted page) and
//! the receiver copies it out (netback's grant copy, or netfront out of its RX page). A
//! byte ring makes the peer pay the same two copies per frame, allocate nothing per
//! frame, and hold any mix of sizes. A ring of `Vec<u8>` slots would hand buffers over by
//! pointer (no copy at all, and a return path to recycle them) — a different job. The
//! ring holds [`NETIF_RING_BYTES`], the bytes one netif ring's 256 page-sized slots hold.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;

use ringbuf::traits::{Consumer, Observer, Producer, Split};
use ringbuf::HeapRb;

use super::{join, Backoff, SetOnDrop};
use crate::cell::CellConfig;
use crate::control::Control;
use crate::cpu::{CpuStopwatch, CpuTime};
use crate::frame::{check, FramePool, NETIF_RING_BYTES};
use crate::measurement::Measurement;
use crate::workload::{Axes, Role, Workload, WorkloadError};

/// Bytes of the length prefix in front of every frame.
const PREFIX: usize = 4;

/// See the module documentation.
pub struct RingbufPeer;

impl Workload for RingbufPeer {
    fn name(&self) -> &str {
        super::RINGBUF
    }

    fn describe(&self) -> &str {
        "SPSC peer: length-prefixed frames copied into and out of a 1 MiB ringbuf byte ring by two threads"
    }

    fn role(&self) -> Role {
        Role::Peer
    }

    fn axes(&self) -> Axes {
        Axes::SizesOnly
    }

    fn run(&self, cell: &CellConfig, ctl: &Control) -> Result<Measurement, WorkloadError> {
        let size = cell.frame_size as usize;
        let capacity = NETIF_RING_BYTES.max(2 * (PREFIX + size));
        let (mut prod, mut cons) = HeapRb::<u8>::new(capacity).split();
        let prefix = cell.frame_size.to_le_bytes();
        let barrier = Barrier::new(2);
        let producer_done = AtomicBool::new(false);

        let (sent, rx) = std::thread::scope(|s| {
            let producer = s.spawn(|| {
                let _done = SetOnDrop(&producer_done);
                let mut pool = FramePool::for_size(cell.frame_size);
                barrier.wait();
                ctl.begin();
                let cpu = CpuStopwatch::start();
                let mut backoff = Backoff::default();
                let mut seq = 0u64;
                while !ctl.should_stop() {
                    if prod.vacant_len() < PREFIX + size {
                        backoff.snooze();
                        continue;
                    }
                    backoff.reset();
                    prod.push_slice(&prefix);
                    prod.push_slice(pool.stamped(seq));
                    seq += 1;
                }
                (seq, cpu.stop())
            });
            let consumer = s.spawn(|| -> Result<Received, WorkloadError> {
                let mut pool = FramePool::for_size(cell.frame_size);
                barrier.wait();
                let start = ctl.begin();
                let cpu = CpuStopwatch::start();
                let mut backoff = Backoff::default();
                let mut expected = 0u64;
                let mut head = [0u8; PREFIX];
                loop {
                    let avail = cons.occupied_len();
                    if avail >= PREFIX {
                        cons.peek_slice(&mut head);
                        let len = u32::from_le_bytes(head) as usize;
                        if len != size {
                            return Err(WorkloadError::Verify {
                                expected,
                                detail: format!("length prefix {len}, expected {size}"),
                            });
                        }
                        if avail >= PREFIX + len {
                            cons.skip(PREFIX);
                            let dst = pool.frame_mut(expected);
                            let got = cons.pop_slice(dst);
                            check(&dst[..got], size, expected).map_err(|f| {
                                WorkloadError::Verify {
                                    expected,
                                    detail: f.to_string(),
                                }
                            })?;
                            expected += 1;
                            backoff.reset();
                            continue;
                        }
                    }
                    // The producer's Release store of `done` follows its last push, so
                    // once it is seen an empty ring means everything was drained.
                    if producer_done.load(Ordering::Acquire) && cons.occupied_len() == 0 {
                        break;
                    }
                    if backoff.snooze() && ctl.overdue() {
                        return Err(WorkloadError::Stalled {
                            side: "ringbuf consumer",
                            grace_s: ctl.duration().as_secs_f64(),
                        });
                    }
                }
                Ok(Received {
                    frames: expected,
                    elapsed: start.elapsed(),
                    cpu: cpu.stop(),
                })
            });
            let rx = join(consumer, "ringbuf consumer");
            let sent = join(producer, "ringbuf producer");
            (sent, rx)
        });
        let rx = rx??;
        let (sent, tx_cpu) = sent?;
        if sent != rx.frames {
            return Err(WorkloadError::Count {
                sent,
                received: rx.frames,
            });
        }
        let mut m = Measurement::frames(rx.frames, cell.frame_size, rx.elapsed);
        m.add_cpu("producer", tx_cpu);
        m.add_cpu("consumer", rx.cpu);
        Ok(m)
    }
}

/// What a receiving thread verified.
pub(crate) struct Received {
    pub(crate) frames: u64,
    pub(crate) elapsed: std::time::Duration,
    pub(crate) cpu: CpuTime,
}
