//! The RX ring of one queue (Linux netfront's `xennet_alloc_rx_buffers` and
//! `xennet_poll`), in `feature-rx-copy` mode.
//!
//! Buffer `i` is a pre-granted writable page, always posted in ring slot `i`: the
//! request at ring index `idx` carries id `idx % RING_SIZE` and that page. The backend
//! grant-copies a frame into the buffers and answers in the same slots, so the page
//! of every response is known from its position; the echoed id is checked against it.
//! Consumed slots are reposted in batches (`RING_PUSH_REQUESTS_AND_CHECK_NOTIFY`,
//! `feature-rx-notify`), so the ring stays full.

use alloc::sync::Arc;
use alloc::vec::Vec;

use hv::abi::netif::{NetifRxRequest, RxFrontRing, NET_RX_RING_SIZE};
use hv::env::{EventChannel, GrantedPage};

use crate::counters::QueueCounters;
use crate::meta::RxMeta;
use crate::rxparse::{self, ParseOutcome, RxFrame, RxSeg};

/// A received frame, borrowed in place from the granted buffer pages.
pub struct RxFrameRef<'a> {
    pages: &'a [GrantedPage],
    frame: &'a RxFrame,
}

impl<'a> RxFrameRef<'a> {
    /// Frame length in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.frame.len
    }

    /// True for an empty frame (never delivered: runts are dropped).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.frame.len == 0
    }

    /// The frame's fragments in order (one per ring slot).
    #[inline]
    pub fn segments(&self) -> impl Iterator<Item = &'a [u8]> + Clone + 'a {
        let pages = self.pages;
        self.frame.segs().iter().map(move |s| {
            // SAFETY: rxparse checked offset + len <= 4096 and slot < RING_SIZE (the
            // pages vector holds one page per slot). The backend finished writing
            // before publishing the response (Acquire on rsp_prod) and writes this
            // page again only after it is reposted, which needs `&mut` on the queue.
            unsafe {
                core::slice::from_raw_parts(
                    pages[usize::from(s.slot)]
                        .ptr
                        .as_ptr()
                        .add(usize::from(s.offset)) as *const u8,
                    usize::from(s.len),
                )
            }
        })
    }

    /// The whole frame as one slice, if it sits in one page (zero copy).
    #[inline]
    pub fn contiguous(&self) -> Option<&'a [u8]> {
        if self.frame.segs().len() == 1 {
            self.segments().next()
        } else {
            None
        }
    }

    /// Copy the frame into `buf`; returns the bytes copied (`min(len, buf.len())`).
    #[inline]
    pub fn copy_to(&self, buf: &mut [u8]) -> usize {
        let mut off = 0;
        for seg in self.segments() {
            let n = seg.len().min(buf.len() - off);
            buf[off..off + n].copy_from_slice(&seg[..n]);
            off += n;
            if off == buf.len() {
                break;
            }
        }
        off
    }
}

/// One queue's RX ring and its buffer pages.
pub struct RxQueue<C> {
    ring: RxFrontRing,
    ring_page: GrantedPage,
    pages: Vec<GrantedPage>,
    refill_batch: u32,
    chan: Arc<C>,
    counters: Arc<QueueCounters>,
    broken: bool,
    /// Whether `frame` holds a frame found by `peek` and not consumed yet.
    peeked: bool,
    /// Where the next frame is parsed (in place: never built elsewhere and moved).
    frame: RxFrame,
    /// Contiguous staging for multi-page frames handed to a contiguous-buffer API.
    scratch: Vec<u8>,
    /// The environment put every buffer page in one mapping
    /// (`GuestEnv::granted_pages_share_one_mapping`): a frame in adjacent pages can be
    /// handed over in place.
    one_mapping: bool,
}

impl<C: EventChannel> RxQueue<C> {
    /// An RX queue over an initialised ring page and `NET_RX_RING_SIZE` buffer pages.
    ///
    /// # Safety
    /// `ring_page.ptr` must be a 4 KiB page granted to the backend and already
    /// initialised with `SHARED_RING_INIT`; `pages` must be exactly
    /// `NET_RX_RING_SIZE` 4 KiB pages granted writable to the backend; all must stay
    /// valid until [`RxQueue::into_pages`]. With `one_mapping`, all of `pages` must
    /// lie in one mapping (one allocation).
    pub(crate) unsafe fn new(
        ring_page: GrantedPage,
        pages: Vec<GrantedPage>,
        refill_batch: u32,
        chan: Arc<C>,
        counters: Arc<QueueCounters>,
        one_mapping: bool,
    ) -> Self {
        debug_assert_eq!(pages.len(), NET_RX_RING_SIZE as usize);
        // SAFETY: forwarded contract.
        let ring = unsafe { RxFrontRing::attach(ring_page.ptr, 0) };
        RxQueue {
            ring,
            ring_page,
            pages,
            refill_batch: refill_batch.clamp(1, NET_RX_RING_SIZE),
            chan,
            counters,
            broken: false,
            peeked: false,
            frame: RxFrame::EMPTY,
            scratch: Vec::new(),
            one_mapping,
        }
    }

    /// Give back the granted pages (ring page first) for release.
    pub(crate) fn into_pages(self) -> Vec<GrantedPage> {
        let mut v = self.pages;
        v.insert(0, self.ring_page);
        v
    }

    /// True once the backend broke the ring protocol.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Buffers currently posted to the backend.
    #[inline]
    pub fn posted(&self) -> usize {
        (NET_RX_RING_SIZE - self.ring.free_requests()) as usize
    }

    /// Post every free buffer and publish them, notifying the backend if it asked
    /// (it sets `req_event` when it ran out of buffers).
    pub fn refill(&mut self) {
        let n = self.ring.free_requests();
        if n == 0 || self.pages.len() != NET_RX_RING_SIZE as usize {
            return;
        }
        for _ in 0..n {
            let idx = self.ring.req_prod_pvt();
            let id = (idx & (NET_RX_RING_SIZE - 1)) as u16;
            // The slot's previous request (idx - RING_SIZE) was answered and consumed,
            // since fewer than RING_SIZE requests are outstanding: its page is free.
            let req = NetifRxRequest {
                id,
                pad: 0,
                gref: self.pages[usize::from(id)].gref,
            };
            if self.ring.produce_request(req).is_err() {
                break;
            }
        }
        if self.ring.push_requests_and_check_notify() {
            self.chan.notify();
            self.counters.rx_notify_sent.add(1);
        } else {
            self.counters.rx_notify_suppressed.add(1);
        }
    }

    #[inline(always)]
    fn maybe_refill(&mut self) {
        if self.ring.free_requests() >= self.refill_batch {
            self.refill();
        }
    }

    /// The next well-formed frame, without consuming it. Malformed chains met on the
    /// way are consumed and counted.
    #[inline]
    pub(crate) fn peek(&mut self) -> Option<RxFrame> {
        if self.fill_peeked() {
            Some(self.frame)
        } else {
            None
        }
    }

    /// Peek the next frame for a stack that leaves TCP/UDP checksums to the driver (the
    /// smoltcp device). A frame the backend vouches for passes as it is, as Linux
    /// netfront passes it up: `NETRXF_csum_blank` (its data never crossed a wire: the
    /// checksum is blank, not wrong; `CHECKSUM_PARTIAL`) or `NETRXF_data_validated`
    /// (checked already; `CHECKSUM_UNNECESSARY`). Any other TCP/UDP frame is verified
    /// here, once, with the vectorised sum, and dropped if wrong (`rx_csum_bad`).
    /// Frames that are not TCP/UDP (ARP, ICMP, ...) pass unchecked: their checksums
    /// stay with the stack.
    #[cfg(feature = "smoltcp")]
    pub(crate) fn peek_verified(&mut self) -> Option<RxFrame> {
        loop {
            let frame = self.peek()?;
            if frame.meta.csum_blank || frame.meta.data_validated {
                return Some(frame);
            }
            let view = RxFrameRef {
                pages: &self.pages,
                frame: &frame,
            };
            match crate::csum::verify_pieces(view.segments(), view.len()) {
                Some(true) => {
                    self.counters.rx_csum_verified.add(1);
                    return Some(frame);
                }
                Some(false) => {
                    self.counters.rx_csum_bad.add(1);
                    self.consume_peeked();
                }
                None => return Some(frame),
            }
        }
    }

    /// Parse the next well-formed frame into `frame` (unless one is there already);
    /// true if there is one. Malformed chains met on the way are consumed and counted.
    #[inline]
    fn fill_peeked(&mut self) -> bool {
        if self.peeked {
            return true;
        }
        if self.broken {
            return false;
        }
        loop {
            let cons = self.ring.rsp_cons();
            let prod = self.ring.rsp_prod();
            let outstanding = self.ring.req_prod_pvt().wrapping_sub(cons);
            let avail = prod.wrapping_sub(cons);
            if avail > outstanding {
                log::error!(
                    "netfront: RX rsp_prod {prod} beyond {outstanding} outstanding requests; queue disabled"
                );
                self.counters.rx_errors.add(1);
                self.broken = true;
                return false;
            }
            if avail == 0 {
                return false;
            }
            let ring = &self.ring;
            match rxparse::parse_into(&mut self.frame, cons, avail, avail < outstanding, |i| {
                ring.copy_response(i)
            }) {
                ParseOutcome::Incomplete => return false,
                ParseOutcome::Bad { consumed, why } => {
                    log::debug!("netfront: RX chain of {consumed} slots rejected: {why:?}");
                    self.ring.set_rsp_cons(cons.wrapping_add(consumed));
                    if why.is_drop() {
                        self.counters.rx_dropped.add(1);
                    } else {
                        self.counters.rx_errors.add(1);
                    }
                    self.maybe_refill();
                }
                ParseOutcome::Frame => {
                    self.peeked = true;
                    return true;
                }
            }
        }
    }

    /// Consume the peeked frame (its buffers become free for reposting).
    #[inline]
    pub(crate) fn consume_peeked(&mut self) {
        if self.peeked {
            self.peeked = false;
            let cons = self.ring.rsp_cons();
            self.ring
                .set_rsp_cons(cons.wrapping_add(self.frame.consumed));
            self.counters.rx_packets.add(1);
            self.counters.rx_bytes.add(self.frame.len as u64);
            self.maybe_refill();
        }
    }

    /// Hand the next frame to `f` in place (zero copy); `None` if none is ready.
    #[inline]
    pub fn recv_with<R>(&mut self, f: impl FnOnce(RxFrameRef<'_>, RxMeta) -> R) -> Option<R> {
        if !self.fill_peeked() {
            return None;
        }
        // Borrowed in place (no copy of the frame's fragment list).
        let frame = &self.frame;
        let r = f(
            RxFrameRef {
                pages: &self.pages,
                frame,
            },
            frame.meta,
        );
        self.consume_peeked();
        Some(r)
    }

    /// Hand the next frame to `f` as one slice: in place for a one-page frame, through
    /// the staging buffer otherwise. With `fill_blank_csum`, a frame flagged
    /// `NETRXF_csum_blank` gets its TCP/UDP checksum filled in first (for stacks that
    /// verify checksums).
    pub fn recv_contiguous<R>(
        &mut self,
        fill_blank_csum: bool,
        f: impl FnOnce(&[u8], RxMeta) -> R,
    ) -> Option<R> {
        let frame = self.peek()?;
        let fill = fill_blank_csum && frame.meta.csum_blank;
        let counters = self.counters.clone();
        let r = if let Some(bytes) = self.peeked_contiguous_mut() {
            if fill && crate::csum::fill_checksum(bytes) {
                counters.rx_csum_sw.add(1);
            }
            f(bytes, frame.meta)
        } else {
            counters.rx_staged.add(1);
            let mut scratch = self.take_scratch();
            let len = RxFrameRef {
                pages: &self.pages,
                frame: &frame,
            }
            .copy_to(&mut scratch);
            if fill && crate::csum::fill_checksum(&mut scratch[..len]) {
                counters.rx_csum_sw.add(1);
            }
            let r = f(&scratch[..len], frame.meta);
            self.scratch = scratch;
            r
        };
        self.consume_peeked();
        Some(r)
    }

    /// The peeked frame's bytes as one mutable slice, in place: a single-page frame,
    /// or (when the pages share one mapping) a frame whose segments follow each other
    /// in memory. `None` otherwise (the caller stages a copy).
    ///
    /// A GSO frame's extra takes the slot after its first data slot, so its data pages
    /// are k, k+2, k+3, ...: the first segment (at most a page) is moved into the
    /// extra's page k+1, which is free and sits right below page k+2, and the frame
    /// is read from there: one page copied instead of the whole frame.
    pub(crate) fn peeked_contiguous_mut(&mut self) -> Option<&mut [u8]> {
        if !self.peeked {
            return None;
        }
        let segs = self.frame.segs();
        let first = *segs.first()?;
        let page = |slot: usize| self.pages[slot].ptr.as_ptr();
        // The page pointer plus an offset rxparse checked to be inside the page.
        let seg_ptr = |s: &RxSeg| page(usize::from(s.slot)).wrapping_add(usize::from(s.offset));
        let mut start = seg_ptr(&first);
        if let Some(second) = segs.get(1) {
            if !self.one_mapping {
                return None;
            }
            let mut end = seg_ptr(second).wrapping_add(usize::from(second.len));
            for s in &segs[2..] {
                if seg_ptr(s) != end {
                    return None;
                }
                end = end.wrapping_add(usize::from(s.len));
            }
            let ring = NET_RX_RING_SIZE as usize;
            let gap = (usize::from(first.slot) + 1) % ring;
            if start.wrapping_add(usize::from(first.len)) == seg_ptr(second) {
                // Adjacent already.
            } else if usize::from(second.slot) == (gap + 1) % ring
                && second.offset == 0
                && page(gap).wrapping_add(crate::PAGE_SIZE) == seg_ptr(second)
            {
                let dst = page(gap).wrapping_add(crate::PAGE_SIZE - usize::from(first.len));
                // SAFETY: the source is the first segment (inside its page, checked by
                // rxparse); the destination is the last `first.len` bytes of the page
                // of slot `gap`, which lies in this frame's chain between two data
                // slots, so it held the extra and its buffer is unused and ours until
                // reposted. Distinct pages: no overlap.
                unsafe { core::ptr::copy_nonoverlapping(start, dst, usize::from(first.len)) };
                start = dst;
            } else {
                return None;
            }
        }
        // SAFETY: every segment lies inside its page and the pages are ours until
        // reposted. With several segments, the checks above established that
        // [start, start + len) is covered exactly by the (possibly moved) first segment
        // and the following segments, each starting where the previous ends, and
        // `one_mapping` (the environment's word) says all pages lie in one mapping, so
        // the range is inside one allocation. `&mut self` makes this the only reference.
        Some(unsafe { core::slice::from_raw_parts_mut(start, self.frame.len) })
    }

    /// The staging buffer, large enough for any frame (grown once, then reused).
    fn take_scratch(&mut self) -> Vec<u8> {
        let mut s = core::mem::take(&mut self.scratch);
        let max = rxparse::RX_MAX_SLOTS * crate::PAGE_SIZE;
        if s.len() < max {
            s.resize(max, 0);
        }
        s
    }

    /// True if a frame (or something to look at) is waiting.
    #[inline]
    pub fn has_pending(&self) -> bool {
        self.peeked || (!self.broken && self.ring.has_unconsumed_responses())
    }

    /// `RING_FINAL_CHECK_FOR_RESPONSES`: ask to be notified of the next response; true
    /// if one is already there.
    pub(crate) fn final_check(&mut self) -> bool {
        self.peeked || self.ring.final_check_for_responses()
    }
}
