//! Guest → host: a guest's TX batch written to its TAP queue, each frame preceded by the
//! `virtio_net_hdr` that carries its netif offload metadata (`NETTXF_csum_blank` →
//! `VIRTIO_NET_HDR_F_NEEDS_CSUM`, the GSO extra → `gso_type`/`gso_size`/`hdr_len`,
//! `NETTXF_data_validated` → `VIRTIO_NET_HDR_F_DATA_VALID`). Frames go out straight from
//! netback's TX buffer (`writev`, no copy); a 64 KiB GSO frame is one write.

use std::sync::{Mutex, PoisonError};

use super::coalesce::{Coalescer, Offer};
use super::policy::tx_vnet_hdr;
use super::{TapVif, VifStats};
use crate::frame::{Frame, FrameBatch, OffloadMeta};
use crate::offload::{vnet_hdr_from_netif_tx, NetifGso, NETTXF_CSUM_BLANK, NETTXF_DATA_VALIDATED};
use crate::tap::{Backpressure, TapError, TapQueue, TxBatchResult, TxFrame, TxRing};
use crate::virtio_net_hdr::VirtioNetHdr;

/// Frames per `write_batch` call (bounded stack arrays, no allocation).
const CHUNK: usize = 64;

/// Per-queue state of the TX path: room to fix up a frame on a copy (rare: GSO from a
/// frontend that did not mark it checksum-blank; grows once to the largest such frame),
/// the segment coalescer, and the io_uring batches go through.
pub(super) struct TxScratch {
    fixup: Mutex<Vec<u8>>,
    coalescer: Mutex<Coalescer>,
    ring: Mutex<RingSlot>,
}

/// The queue's io_uring, made on first use.
enum RingSlot {
    Untried,
    Ready(Box<TxRing>),
    /// Turned off by configuration, or unavailable here (why): plain `writev`.
    Off(Option<String>),
}

impl TxScratch {
    pub(super) fn new(io_uring: bool) -> Self {
        Self {
            fixup: Mutex::default(),
            coalescer: Mutex::default(),
            ring: Mutex::new(if io_uring {
                RingSlot::Untried
            } else {
                RingSlot::Off(None)
            }),
        }
    }

    /// True if this queue writes through its io_uring.
    pub(super) fn has_ring(&self) -> bool {
        matches!(
            *self.ring.lock().unwrap_or_else(PoisonError::into_inner),
            RingSlot::Ready(_)
        )
    }

    /// Why this queue writes frame by frame although io_uring was asked for.
    pub(super) fn ring_unavailable(&self) -> Option<String> {
        match &*self.ring.lock().unwrap_or_else(PoisonError::into_inner) {
            RingSlot::Off(why) => why.clone(),
            _ => None,
        }
    }

    /// Writes `frames` to `q`, dropping what meets a full TAP: through the queue's
    /// io_uring when there is one, else frame by frame.
    fn write(&self, q: &TapQueue, frames: &[TxFrame<'_>]) -> Result<TxBatchResult, TapError> {
        let mut slot = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        if let RingSlot::Untried = *slot {
            *slot = match TxRing::new(q) {
                Ok(r) => RingSlot::Ready(Box::new(r)),
                Err(e) => {
                    log::warn!(
                        "tap queue {}: no io_uring ({e}); writing frame by frame",
                        q.index()
                    );
                    RingSlot::Off(Some(e.to_string()))
                }
            };
        }
        match &mut *slot {
            RingSlot::Ready(ring) => {
                let r = q.write_batch_ring(ring, frames);
                if ring.is_broken() {
                    let why = ring.broken_reason().unwrap_or("the ring broke").to_string();
                    log::warn!("tap queue {}: {why}; writing frame by frame", q.index());
                    *slot = RingSlot::Off(Some(why));
                }
                r
            }
            _ => q.write_batch(frames, Backpressure::Drop),
        }
    }
}

/// Frames of one chunk waiting for `write_batch`.
struct Pending<'a> {
    hdrs: [VirtioNetHdr; CHUNK],
    data: [[&'a [u8]; 1]; CHUNK],
    len: usize,
}

impl<'a> Pending<'a> {
    fn new() -> Self {
        Self {
            hdrs: [VirtioNetHdr::NONE; CHUNK],
            data: [[&[][..]]; CHUNK],
            len: 0,
        }
    }

    fn push(&mut self, hdr: VirtioNetHdr, data: &'a [u8]) {
        self.hdrs[self.len] = hdr;
        self.data[self.len] = [data];
        self.len += 1;
    }

    fn full(&self) -> bool {
        self.len == CHUNK
    }

    /// Writes the chunk; never blocks (a full TAP drops and counts).
    fn flush(&mut self, q: &TapQueue, scratch: &TxScratch, stats: &VifStats) {
        if self.len == 0 {
            return;
        }
        let mut frames = [TxFrame {
            hdr: VirtioNetHdr::NONE,
            segs: &[],
        }; CHUNK];
        for (f, (h, d)) in frames
            .iter_mut()
            .zip(self.hdrs.iter().zip(self.data.iter()))
        {
            f.hdr = *h;
            f.segs = &d[..];
        }
        match scratch.write(q, &frames[..self.len]) {
            Ok(r) => stats.count_written(&r),
            Err(e) => {
                // The TAP failed (e.g. EIO while it is down): the chunk is lost.
                log::debug!("tap queue {}: write: {e}", q.index());
                stats.count_write_failed(self.len as u64);
            }
        }
        self.len = 0;
    }
}

/// Writes a guest's TX batch to TAP queue `q`, capturing it first if asked. Runs of
/// consecutive TCP segments of one flow go out as one GSO super-frame
/// ([`super::coalesce`]); everything keeps its order.
pub(super) fn transmit(vif: &TapVif, q: &TapQueue, scratch: &TxScratch, frames: &FrameBatch<'_>) {
    if let Some(cap) = vif.capture() {
        cap.write_frames(frames.iter());
    }
    let stats = &vif.stats;
    let mut pending = Pending::new();
    let mut merge = scratch
        .coalescer
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    for f in frames.iter() {
        match tx_vnet_hdr(f.data, &f.meta) {
            Ok(Some(hdr)) => {
                if merge.offer(&f, hdr) == Offer::Merged {
                    continue;
                }
                if !merge.is_empty() {
                    // The run ends here: what is queued before it, then the run.
                    pending.flush(q, scratch, stats);
                    write_run(q, &mut merge, stats);
                    if merge.offer(&f, hdr) == Offer::Merged {
                        continue;
                    }
                }
                pending.push(hdr, f.data);
                if pending.full() {
                    pending.flush(q, scratch, stats);
                }
            }
            Ok(None) => {
                // Keep the order: what is queued goes first.
                pending.flush(q, scratch, stats);
                write_run(q, &mut merge, stats);
                write_fixed_up(q, scratch, f, stats);
            }
            Err(e) => {
                // Like Linux netback's failing `checksum_setup`: drop the packet.
                log::debug!("{}: guest frame with bad offload metadata: {e}", vif.id);
                stats.add(&stats.to_host_bad_offload, 1);
            }
        }
    }
    pending.flush(q, scratch, stats);
    write_run(q, &mut merge, stats);
}

/// Writes the run the coalescer holds, if any: its segments count as the frames they
/// were (so `to_host_frames` still counts the guest's frames).
fn write_run(q: &TapQueue, merge: &mut Coalescer, stats: &VifStats) {
    let segments = merge.segments();
    let Some((frame, hdr)) = merge.take() else {
        if segments > 0 {
            stats.count_write_failed(u64::from(segments));
        }
        return;
    };
    let frame_segs: [&[u8]; 1] = [frame];
    match q.write_batch(
        &[TxFrame {
            hdr,
            segs: &frame_segs,
        }],
        Backpressure::Drop,
    ) {
        Ok(r) => {
            let n = u64::from(segments);
            stats.add(&stats.to_host_frames, r.sent as u64 * n);
            stats.add(&stats.to_host_dropped, r.dropped as u64 * n);
            stats.add(&stats.to_host_rejected, r.rejected as u64 * n);
            if segments > 1 {
                stats.add(&stats.to_host_coalesced, n);
            }
        }
        Err(_) => stats.count_write_failed(u64::from(segments)),
    }
}

/// GSO without `NETTXF_csum_blank`: write the pseudo-header sum into a copy (Linux
/// netback's fix-up for such frontends), then send the copy.
fn write_fixed_up(q: &TapQueue, scratch: &TxScratch, f: Frame<'_>, stats: &VifStats) {
    let mut buf = scratch.fixup.lock().unwrap_or_else(PoisonError::into_inner);
    buf.clear();
    buf.extend_from_slice(f.data);
    let OffloadMeta {
        data_validated,
        gso,
        ..
    } = f.meta;
    let gso = gso.map(|g| NetifGso {
        gso_type: g.ty.to_xen(),
        gso_size: g.size,
    });
    let flags = NETTXF_CSUM_BLANK
        | if data_validated {
            NETTXF_DATA_VALIDATED
        } else {
            0
        };
    match vnet_hdr_from_netif_tx(&mut buf, flags, gso) {
        Ok(hdr) => match q.write_batch(
            &[TxFrame {
                hdr,
                segs: &[&buf[..]],
            }],
            Backpressure::Drop,
        ) {
            Ok(r) => stats.count_written(&r),
            Err(_) => stats.count_write_failed(1),
        },
        Err(_) => stats.add(&stats.to_host_bad_offload, 1),
    }
}

impl VifStats {
    fn count_written(&self, r: &TxBatchResult) {
        self.add(&self.to_host_frames, r.sent as u64);
        self.add(&self.to_host_dropped, r.dropped as u64);
        self.add(&self.to_host_rejected, r.rejected as u64);
    }

    fn count_write_failed(&self, n: u64) {
        self.add(&self.to_host_dropped, n);
    }
}
