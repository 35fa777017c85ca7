//! The crossbeam peer: each frame copied into a fresh `Vec<u8>` and sent through a
//! bounded `crossbeam::channel` to a second thread, which verifies and frees it.
//!
//! This is what a straightforward Rust program does: one allocation, one copy and one
//! (cross-thread) free per frame, and a channel that parks the receiver on a futex when
//! it runs dry. The channel is bounded at [`NETIF_RING_SLOTS`] frames, like a netif ring,
//! so the sender is throttled instead of filling memory.

use std::sync::Barrier;

use super::ringbuf_peer::Received;
use super::{join, Backoff};
use crate::cell::CellConfig;
use crate::control::Control;
use crate::cpu::CpuStopwatch;
use crate::frame::{check, FramePool, NETIF_RING_SLOTS};
use crate::measurement::Measurement;
use crate::workload::{Axes, Role, Workload, WorkloadError};

/// See the module documentation.
pub struct CrossbeamPeer;

impl Workload for CrossbeamPeer {
    fn name(&self) -> &str {
        super::CROSSBEAM
    }

    fn describe(&self) -> &str {
        "channel peer: a fresh Vec<u8> per frame through a bounded(256) crossbeam channel"
    }

    fn role(&self) -> Role {
        Role::Peer
    }

    fn axes(&self) -> Axes {
        Axes::SizesOnly
    }

    fn run(&self, cell: &CellConfig, ctl: &Control) -> Result<Measurement, WorkloadError> {
        let size = cell.frame_size as usize;
        let (tx, rx) = crossbeam::channel::bounded::<Vec<u8>>(NETIF_RING_SLOTS);
        let barrier = Barrier::new(2);

        let (sent, received) = std::thread::scope(|s| {
            let producer = s.spawn(|| {
                let mut pool = FramePool::for_size(cell.frame_size);
                barrier.wait();
                ctl.begin();
                let cpu = CpuStopwatch::start();
                let mut seq = 0u64;
                while !ctl.should_stop() {
                    // The receiver hung up (it found a bad frame): stop sending.
                    if tx.send(pool.stamped(seq).to_vec()).is_err() {
                        break;
                    }
                    seq += 1;
                }
                // Dropping the sender ends the receiver's loop once it has drained.
                drop(tx);
                (seq, cpu.stop())
            });
            let consumer = s.spawn(|| -> Result<Received, WorkloadError> {
                // Owned by this thread so that leaving early (a bad frame) drops the
                // receiver and unblocks a sender waiting on a full channel.
                let rx = rx;
                barrier.wait();
                let start = ctl.begin();
                let cpu = CpuStopwatch::start();
                let mut expected = 0u64;
                let mut backoff = Backoff::default();
                loop {
                    match rx.recv_timeout(std::time::Duration::from_millis(100)) {
                        Ok(frame) => {
                            check(&frame, size, expected).map_err(|f| WorkloadError::Verify {
                                expected,
                                detail: f.to_string(),
                            })?;
                            expected += 1;
                        }
                        Err(crossbeam::channel::RecvTimeoutError::Disconnected) => break,
                        Err(crossbeam::channel::RecvTimeoutError::Timeout) => {
                            // The timeout only bounds a hung sender; it is never hit
                            // while frames flow.
                            backoff.snooze();
                            if ctl.overdue() {
                                return Err(WorkloadError::Stalled {
                                    side: "crossbeam consumer",
                                    grace_s: ctl.duration().as_secs_f64(),
                                });
                            }
                        }
                    }
                }
                Ok(Received {
                    frames: expected,
                    elapsed: start.elapsed(),
                    cpu: cpu.stop(),
                })
            });
            let received = join(consumer, "crossbeam consumer");
            let sent = join(producer, "crossbeam producer");
            (sent, received)
        });
        let rx = received??;
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
