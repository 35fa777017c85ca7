//! The TX ring of one queue (Linux netfront's `xennet_start_xmit` and
//! `xennet_tx_buf_gc`).
//!
//! The data lives in a pool of pre-granted, read-only pages (granted once at connect,
//! never per packet; [`crate::txpool`] says which page and offset each slot uses:
//! small frames are packed several to a page, larger ones take whole pages). Sending
//! copies the frame into the places of freshly popped ids (or lets the caller build it
//! in place), writes the requests, and publishes them once per batch with
//! `RING_PUSH_REQUESTS_AND_CHECK_NOTIFY`, notifying only when the backend asked to be
//! woken. Responses come back in any order; each returns its id (and its share of the
//! page) to the free lists. Extra-info slots have no id and are answered with
//! `NETIF_RSP_NULL`, which is skipped.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::ptr::NonNull;

use hv::abi::netif::{
    NetifTxRequest, TxFrontRing, NETIF_RSP_DROPPED, NETIF_RSP_NULL, NETIF_RSP_OKAY,
};
use hv::env::{EventChannel, GrantedPage};

use crate::counters::QueueCounters;
use crate::csum::{self, IpVersion};
use crate::error::TxError;
use crate::idlist::IdFreeList;
use crate::meta::TxMeta;
use crate::txlayout::{self, TxCaps, TX_MAX_DATA_SLOTS};
use crate::txpool::{SlotPlace, TxPagePool};
use crate::PAGE_SIZE;

/// What to do about the TCP/UDP checksum of a frame being sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CsumMode {
    /// Leave the frame alone, no checksum flags.
    AsIs,
    /// The caller left it blank: offload (or complete in software); error if the frame
    /// is not TCP/UDP.
    Blank,
    /// Blank it if the frame is TCP/UDP (smoltcp left the field zero), else as is.
    #[cfg_attr(not(feature = "smoltcp"), allow(dead_code))]
    Auto,
}

/// One queue's TX ring, its page pool and request ids.
pub struct TxQueue<C> {
    ring: TxFrontRing,
    ring_page: GrantedPage,
    pages: Vec<GrantedPage>,
    /// Which page (and offset) each data slot in flight uses.
    pool: TxPagePool,
    /// `places[id]`: where the bytes of the slot with request id `id` are.
    places: Vec<SlotPlace>,
    ids: IdFreeList,
    /// `first[id]`: the id is a packet's first data slot (its status is the packet's).
    first: Vec<bool>,
    caps: TxCaps,
    batch: u32,
    unpushed: u32,
    chan: Arc<C>,
    counters: Arc<QueueCounters>,
    broken: bool,
    /// Contiguous staging for frames built in place that do not fit one page.
    scratch: Vec<u8>,
}

impl<C: EventChannel> TxQueue<C> {
    /// A TX queue over an initialised ring page and one granted page per ring slot.
    ///
    /// # Safety
    /// `ring_page.ptr` must be a 4 KiB page granted to the backend and already
    /// initialised with `SHARED_RING_INIT`; each of `pages` a 4 KiB page granted to
    /// the backend; all must stay valid until [`TxQueue::into_pages`].
    pub(crate) unsafe fn new(
        ring_page: GrantedPage,
        pages: Vec<GrantedPage>,
        caps: TxCaps,
        batch: u32,
        chan: Arc<C>,
        counters: Arc<QueueCounters>,
    ) -> Self {
        // SAFETY: forwarded contract (valid, initialised ring page for our lifetime).
        let ring = unsafe { TxFrontRing::attach(ring_page.ptr, 0) };
        let n = pages.len().min(TxFrontRing::SIZE as usize);
        TxQueue {
            ring,
            ring_page,
            ids: IdFreeList::new(n),
            first: alloc::vec![false; n],
            pool: TxPagePool::new(pages.len()),
            places: alloc::vec![SlotPlace::default(); n],
            pages,
            caps,
            batch: batch.max(1),
            unpushed: 0,
            chan,
            counters,
            broken: false,
            scratch: Vec::new(),
        }
    }

    /// Give back the granted pages (ring page first) for release.
    pub(crate) fn into_pages(self) -> Vec<GrantedPage> {
        let mut v = self.pages;
        v.insert(0, self.ring_page);
        v
    }

    /// The negotiated TX capabilities.
    pub fn caps(&self) -> &TxCaps {
        &self.caps
    }

    /// True once the backend broke the ring protocol; the queue sends nothing more.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Requests in flight (sent and not yet answered), in data slots.
    pub fn in_flight(&self) -> usize {
        self.ids.capacity() - self.ids.available()
    }

    /// How many frames of `len` bytes could be queued right now without reclaiming.
    #[inline]
    pub fn free_frames(&self, len: usize, gso: bool) -> usize {
        let data = len.div_ceil(PAGE_SIZE).max(1);
        let ring = self.ring.free_requests() as usize / (data + usize::from(gso));
        let pages = if data == 1 {
            self.pool.small_available(len)
        } else {
            self.pool.whole_available() / data
        };
        ring.min(self.ids.available() / data).min(pages)
    }

    /// Free ring slots.
    #[inline]
    pub fn free_slots(&self) -> usize {
        (self.ring.free_requests() as usize).min(self.ids.available())
    }

    /// Where the bytes of data slot `id` start.
    #[inline(always)]
    fn slot_ptr(&self, id: u16) -> NonNull<u8> {
        let place = self.places[usize::from(id)];
        let page = self.pages[usize::from(place.page)].ptr;
        // SAFETY: the pool hands out offsets below PAGE_SIZE, inside the 4 KiB page.
        unsafe { page.add(usize::from(place.offset)) }
    }

    /// Copy a frame into the ring (queued; published at the batch size or [`flush`]).
    ///
    /// [`flush`]: TxQueue::flush
    #[inline]
    pub fn send(&mut self, frame: &[u8], meta: &TxMeta) -> Result<(), TxError> {
        let mode = mode_of(meta);
        self.send_frame(frame.len(), meta, mode, |off, seg| {
            seg.copy_from_slice(&frame[off..off + seg.len()])
        })
    }

    /// Build a frame of `len` bytes in place: `fill(offset, segment)` is called for
    /// each page-sized segment in order and writes the frame's bytes
    /// `offset..offset + segment.len()` straight into the granted pages.
    #[inline]
    pub fn send_with(
        &mut self,
        len: usize,
        meta: &TxMeta,
        fill: impl FnMut(usize, &mut [u8]),
    ) -> Result<(), TxError> {
        self.send_frame(len, meta, mode_of(meta), fill)
    }

    /// Build a frame in one contiguous buffer (what smoltcp's `TxToken` needs):
    /// straight in the granted page when it fits one, else in a staging buffer that
    /// is then copied into the pages. `f` always runs (a token must produce its
    /// result); if the frame cannot be sent it runs on the staging buffer and the
    /// error is returned beside its result.
    pub(crate) fn send_contiguous<R>(
        &mut self,
        len: usize,
        meta: &TxMeta,
        mode: CsumMode,
        f: impl FnOnce(&mut [u8]) -> R,
    ) -> (R, Result<(), TxError>) {
        let ready = if self.broken {
            Err(TxError::NotConnected)
        } else {
            txlayout::plan(len, meta, &self.caps)
                .and_then(|p| self.reserve(p.ring_slots(), p.data_slots, len))
        };
        if let Err(e) = ready {
            let mut scratch = self.take_scratch(len);
            let r = f(&mut scratch[..len]);
            self.scratch = scratch;
            return (r, Err(e));
        }
        if len <= PAGE_SIZE {
            let mut f = Some(f);
            let mut out = None;
            let res = self.send_frame(len, meta, mode, |_, seg| {
                if let Some(f) = f.take() {
                    out = Some(f(seg));
                }
            });
            return match (out, f) {
                (Some(r), _) => (r, res),
                (None, Some(f)) => {
                    let mut scratch = self.take_scratch(len);
                    let r = f(&mut scratch[..len]);
                    self.scratch = scratch;
                    (r, res)
                }
                // One of the two always holds the closure or its result.
                (None, None) => unreachable!("closure neither ran nor was kept"),
            };
        }
        let mut scratch = self.take_scratch(len);
        let r = f(&mut scratch[..len]);
        let res = self.send_frame(len, meta, mode, |off, seg| {
            seg.copy_from_slice(&scratch[off..off + seg.len()])
        });
        self.scratch = scratch;
        (r, res)
    }

    /// The staging buffer, at least `len` bytes (grown once, then reused).
    fn take_scratch(&mut self, len: usize) -> Vec<u8> {
        let mut scratch = core::mem::take(&mut self.scratch);
        if scratch.len() < len {
            scratch.resize(self.caps.max_frame_len().max(len), 0);
        }
        scratch
    }

    /// Make room for a frame of `len` bytes on `ring_slots` / `data_slots`,
    /// reclaiming answered requests if needed.
    #[inline(always)]
    fn reserve(&mut self, ring_slots: usize, data_slots: usize, len: usize) -> Result<(), TxError> {
        let fits = |q: &Self| {
            q.ring.free_requests() as usize >= ring_slots
                && q.ids.available() >= data_slots
                && if data_slots == 1 {
                    q.pool.fits_small(len)
                } else {
                    q.pool.whole_available() >= data_slots
                }
        };
        if fits(self) {
            return Ok(());
        }
        // Requests not yet pushed can never be answered: publish them first.
        self.flush();
        self.reclaim();
        if fits(self) {
            Ok(())
        } else {
            self.counters.tx_busy.add(1);
            Err(TxError::Busy)
        }
    }

    #[inline]
    fn send_frame(
        &mut self,
        len: usize,
        meta: &TxMeta,
        mode: CsumMode,
        mut fill: impl FnMut(usize, &mut [u8]),
    ) -> Result<(), TxError> {
        if self.broken {
            return Err(TxError::NotConnected);
        }
        let plan = txlayout::plan(len, meta, &self.caps)?;
        self.reserve(plan.ring_slots(), plan.data_slots, len)?;

        if plan.data_slots == 1 {
            // The common small frame: no per-slot arrays to set up.
            // reserve() checked that an id and page room are free.
            let (Some(place), Some(id)) = (self.pool.alloc_small(len), self.ids.pop()) else {
                return Err(self.busy_after_reserve());
            };
            self.places[usize::from(id)] = place;
            let gref = self.pages[usize::from(place.page)].gref;
            // SAFETY: as for the multi-slot case below; len <= 4096 for one slot.
            let seg = unsafe { core::slice::from_raw_parts_mut(self.slot_ptr(id).as_ptr(), len) };
            fill(0, seg);
            return self.publish(&plan, meta, mode, &[id], &[(gref, place.offset)]);
        }

        let mut ids = [0u16; TX_MAX_DATA_SLOTS];
        let mut slots = [(0u32, 0u16); TX_MAX_DATA_SLOTS];
        for i in 0..plan.data_slots {
            // reserve() checked that enough ids and whole pages are free.
            let place = self.pool.alloc_whole();
            let (Some(place), Some(id)) = (place, self.ids.pop()) else {
                if let Some(place) = place {
                    self.pool.release(place.page);
                }
                self.undo(&ids[..i]);
                return Err(self.busy_after_reserve());
            };
            ids[i] = id;
            self.places[usize::from(id)] = place;
            slots[i] = (self.pages[usize::from(place.page)].gref, place.offset);
            let seg_len = plan.seg_len(i);
            // SAFETY: the place of a popped id is ours: the backend only reads it while
            // the id is in flight, and the pool gave this range to no other slot in
            // flight. offset + seg_len <= 4096 (the pool packs within the page, whole
            // pages start at 0); no other reference to the range exists.
            let seg =
                unsafe { core::slice::from_raw_parts_mut(self.slot_ptr(id).as_ptr(), seg_len) };
            fill(i * PAGE_SIZE, seg);
        }
        let n = plan.data_slots;
        self.publish(&plan, meta, mode, &ids[..n], &slots[..n])
    }

    /// reserve() said yes but an id or page was missing after all (cannot happen):
    /// report the queue busy rather than panic.
    #[cold]
    fn busy_after_reserve(&mut self) -> TxError {
        self.counters.tx_busy.add(1);
        TxError::Busy
    }

    /// The frame's bytes are in the places of `ids` (`slots[i]`: grant and offset of
    /// data slot `i`): apply the checksum mode, write the requests, count, and push
    /// once the batch is full.
    #[inline(always)]
    fn publish(
        &mut self,
        plan: &txlayout::TxPlan,
        meta: &TxMeta,
        mode: CsumMode,
        ids: &[u16],
        slots: &[(u32, u16)],
    ) -> Result<(), TxError> {
        // Frames sent as they are (no GSO, no blank checksum) need no header parsing.
        let offloaded = if mode == CsumMode::AsIs && plan.extra.is_none() {
            false
        } else {
            match self.checksum(plan, ids, mode) {
                Ok(o) => o,
                Err(e) => {
                    self.undo(ids);
                    return Err(e);
                }
            }
        };
        let flags = txlayout::first_flags(plan, meta, offloaded);
        let ring = &mut self.ring;
        txlayout::requests(
            plan,
            flags,
            |i| (ids[i], slots[i].0, slots[i].1),
            |req: NetifTxRequest| {
                let r = ring.produce_request(req);
                debug_assert!(r.is_ok(), "reserve() guaranteed ring space");
            },
        );
        self.first[usize::from(ids[0])] = true;
        self.counters.tx_packets.add(1);
        self.counters.tx_bytes.add(plan.len as u64);
        self.unpushed += 1;
        if self.unpushed >= self.batch {
            self.flush();
        }
        Ok(())
    }

    /// Return ids (and their page room) popped for a frame that is not sent after all.
    fn undo(&mut self, ids: &[u16]) {
        for &id in ids {
            if self.ids.free(id).is_ok() {
                self.pool.release(self.places[usize::from(id)].page);
            }
        }
    }

    /// Apply `mode` to the frame in the pages of `ids`; true if the backend is to
    /// complete the checksum (`NETTXF_csum_blank`).
    fn checksum(
        &mut self,
        plan: &txlayout::TxPlan,
        ids: &[u16],
        mode: CsumMode,
    ) -> Result<bool, TxError> {
        let mode = if plan.extra.is_some() {
            // A GSO frame is always CHECKSUM_PARTIAL.
            CsumMode::Blank
        } else {
            mode
        };
        if mode == CsumMode::AsIs {
            return Ok(false);
        }
        let head_len = plan.seg_len(0);
        // SAFETY: as in send_frame: the first place belongs to an id we popped.
        let head =
            unsafe { core::slice::from_raw_parts_mut(self.slot_ptr(ids[0]).as_ptr(), head_len) };
        let Some(info) = csum::write_partial(head, plan.len) else {
            return match mode {
                CsumMode::Auto => Ok(false),
                _ => Err(TxError::ChecksumUnparsable),
            };
        };
        let offload = match info.ip {
            IpVersion::V4 => self.caps.csum_ipv4,
            IpVersion::V6 => self.caps.csum_ipv6,
        };
        if offload || plan.extra.is_some() {
            return Ok(true);
        }
        // The backend cannot complete it: do it here over the pages.
        let this = &*self;
        let pieces = (0..plan.data_slots).map(|i| {
            // SAFETY: places of popped ids, read only here; lengths within the page.
            unsafe {
                core::slice::from_raw_parts(
                    this.slot_ptr(ids[i]).as_ptr() as *const u8,
                    plan.seg_len(i),
                )
            }
        });
        let (off, v) =
            csum::compute_l4_pieces(pieces, plan.len).ok_or(TxError::ChecksumUnparsable)?;
        // The checksum field is within the headers, in the first page (parse_l4).
        let head =
            // SAFETY: as above; the shared borrows of `pieces` ended.
            unsafe { core::slice::from_raw_parts_mut(self.slot_ptr(ids[0]).as_ptr(), head_len) };
        head[off..off + 2].copy_from_slice(&v.to_be_bytes());
        self.counters.tx_csum_sw.add(1);
        Ok(false)
    }

    /// Send several frames with the same metadata; one push at the end. Returns how
    /// many were queued (stops at the first refusal).
    pub fn send_batch(&mut self, frames: &[&[u8]], meta: &TxMeta) -> usize {
        let mut n = 0;
        for f in frames {
            if self.send(f, meta).is_err() {
                break;
            }
            n += 1;
        }
        self.flush();
        n
    }

    /// Publish queued requests (`RING_PUSH_REQUESTS_AND_CHECK_NOTIFY`) and notify the
    /// backend only if it asked.
    #[inline]
    pub fn flush(&mut self) {
        if self.unpushed == 0 {
            return;
        }
        self.unpushed = 0;
        if self.ring.push_requests_and_check_notify() {
            self.chan.notify();
            self.counters.tx_notify_sent.add(1);
        } else {
            self.counters.tx_notify_suppressed.add(1);
        }
    }

    /// Collect responses: free their ids and pages, count drops and errors. Returns the
    /// number of responses consumed.
    pub fn reclaim(&mut self) -> usize {
        let responses = match self.ring.take_responses() {
            Ok(r) => r,
            Err(e) => {
                log::error!("netfront: TX ring protocol violation, queue disabled: {e}");
                self.counters.tx_errors.add(1);
                self.broken = true;
                return 0;
            }
        };
        let mut n = 0;
        for rsp in responses {
            n += 1;
            if rsp.status == NETIF_RSP_NULL {
                continue;
            }
            match self.ids.free(rsp.id) {
                Ok(()) => {
                    self.pool.release(self.places[usize::from(rsp.id)].page);
                    let first = core::mem::replace(&mut self.first[usize::from(rsp.id)], false);
                    if first && rsp.status != NETIF_RSP_OKAY {
                        if rsp.status == NETIF_RSP_DROPPED {
                            self.counters.tx_dropped.add(1);
                        } else {
                            self.counters.tx_errors.add(1);
                        }
                    }
                }
                Err(e) => {
                    log::warn!("netfront: TX response for an id not in flight: {e:?}");
                    self.counters.tx_errors.add(1);
                }
            }
        }
        n
    }

    /// Responses are waiting to be reclaimed (`RING_HAS_UNCONSUMED_RESPONSES`; a read
    /// of the backend's `rsp_prod`, nothing written).
    #[inline]
    pub(crate) fn has_responses(&self) -> bool {
        self.ring.has_unconsumed_responses()
    }

    /// Ask for a notification on the next response (`RING_FINAL_CHECK_FOR_RESPONSES`);
    /// true if responses are already there.
    pub(crate) fn final_check(&mut self) -> bool {
        self.ring.final_check_for_responses()
    }

    /// Count a frame dropped before it reached the ring (smoltcp path).
    #[cfg_attr(not(feature = "smoltcp"), allow(dead_code))]
    pub(crate) fn count_tx_dropped(&self) {
        self.counters.tx_dropped.add(1);
    }
}

pub(crate) fn mode_of(meta: &TxMeta) -> CsumMode {
    if meta.csum_blank {
        CsumMode::Blank
    } else {
        CsumMode::AsIs
    }
}
