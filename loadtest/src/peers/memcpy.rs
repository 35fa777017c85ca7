//! The copy limit: one thread copying stamped frames from a pool of source buffers into
//! a pool of destination buffers.
//!
//! Every path that moves a frame from one domain's memory into another's by copying it
//! (netback's grant copy does exactly that) pays at least one such copy per frame, with
//! no second thread to synchronise with. The pools have the working set of one netif ring
//! ([`crate::frame::pool_frames`]), so cache effects match the rings being compared.

use crate::cell::CellConfig;
use crate::control::Control;
use crate::cpu::CpuStopwatch;
use crate::frame::{check, FramePool};
use crate::measurement::Measurement;
use crate::workload::{Axes, Role, Workload, WorkloadError};

/// See the module documentation.
pub struct MemcpyLimit;

impl Workload for MemcpyLimit {
    fn name(&self) -> &str {
        super::MEMCPY
    }

    fn describe(&self) -> &str {
        "copy limit: one thread memcpy()s each frame from a source pool into a destination pool"
    }

    fn role(&self) -> Role {
        Role::Limit
    }

    fn axes(&self) -> Axes {
        Axes::SizesOnly
    }

    fn run(&self, cell: &CellConfig, ctl: &Control) -> Result<Measurement, WorkloadError> {
        let size = cell.frame_size as usize;
        let mut src = FramePool::for_size(cell.frame_size);
        let mut dst = FramePool::for_size(cell.frame_size);

        let start = ctl.begin();
        let cpu = CpuStopwatch::start();
        let mut seq = 0u64;
        while !ctl.should_stop() {
            let s = src.stamped(seq);
            let d = dst.frame_mut(seq);
            d.copy_from_slice(s);
            // Reading the copy back keeps the compiler from eliding it and proves it.
            check(d, size, seq).map_err(|f| WorkloadError::Verify {
                expected: seq,
                detail: f.to_string(),
            })?;
            seq += 1;
        }
        let elapsed = start.elapsed();
        let mut m = Measurement::frames(seq, cell.frame_size, elapsed);
        m.add_cpu("copier", cpu.stop());
        Ok(m)
    }
}
