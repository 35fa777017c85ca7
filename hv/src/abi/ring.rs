//! `io/ring.h`: Xen's generic shared I/O ring over one 4 KiB page.
//!
//! One page holds a 64-byte header (`req_prod`, `req_event`, `rsp_prod`, `rsp_event`,
//! then padding) followed by an array of slots, each a union of a request and a
//! response. The frontend produces requests and consumes responses ([`FrontRing`]);
//! the backend consumes requests and produces responses in the same slots
//! ([`BackRing`]). All four indices are free-running `u32`s (`RING_IDX`) that wrap at
//! `u32::MAX`, so every piece of index arithmetic here is wrapping, exactly as the C
//! macros rely on unsigned overflow.
//!
//! The peer may be another domain that does not follow the protocol. Slots are
//! therefore only ever copied out with one volatile read (`RING_COPY_REQUEST`: no
//! double fetch), peer indices are checked before use (`RING_REQUEST_PROD_OVERFLOW`)
//! and a slot index is always masked with `RING_SIZE - 1`, so nothing a peer writes
//! can make this code touch memory outside the page.
//!
//! Memory ordering follows ring.h: a producer index is published with a Release
//! store (`xen_wmb()` then the store), the peer's producer index is read with an
//! Acquire load (the read then `xen_rmb()`), and the notify / final-check logic puts
//! a full `SeqCst` fence (`xen_mb()`) between publishing one index and reading the
//! peer's event index. A Release store alone would let the event-index read pass the
//! producer store and lose a wake-up.

use core::marker::PhantomData;
use core::mem::{align_of, offset_of, size_of};
use core::ptr::{self, addr_of, NonNull};
use core::sync::atomic::{fence, AtomicU32, Ordering};

/// `RING_IDX`: a free-running ring index; only `idx & (RING_SIZE - 1)` names a slot.
pub type RingIdx = u32;

/// The page size a ring occupies (`XEN_PAGE_SIZE`, the `__size` every netif ring is
/// set up with).
pub const RING_PAGE_SIZE: usize = 4096;

/// Byte offset of the slot array in a shared ring page:
/// `offsetof(struct __name##_sring, ring)` (4 indices, `pvt`, `__pad[44]`).
pub const SRING_HEADER_SIZE: usize = 64;

/// A type that may sit in a ring slot.
///
/// # Safety
/// Every bit pattern of `size_of::<Self>()` bytes must be a valid value (plain old
/// data: integers and arrays or `repr(C)` structs of them, no padding-dependent
/// invariants, no references, `bool`s or enums), because a peer domain can write any
/// bytes into a slot and the slot is read back as `Self`.
pub unsafe trait RingEntry: Copy {}

macro_rules! ring_entry_for_ints {
    ($($t:ty),*) => { $(
        // SAFETY: every bit pattern is a valid integer.
        unsafe impl RingEntry for $t {}
    )* };
}
ring_entry_for_ints!(u8, u16, u32, u64, i8, i16, i32, i64);

// SAFETY: an array of types valid for every bit pattern is valid for every bit pattern.
unsafe impl<T: RingEntry, const N: usize> RingEntry for [T; N] {}

/// `__RD32(n)`: the largest power of two not above `n` (0 for 0).
#[inline]
pub const fn round_down_pow2(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        1 << (usize::BITS - 1 - n.leading_zeros())
    }
}

/// `__RING_SIZE` for a page of `page_size` bytes and slots of `entry_size` bytes:
/// the largest power of two of slots that fit after the 64-byte header.
#[inline]
pub const fn ring_size_for(page_size: usize, entry_size: usize) -> u32 {
    if entry_size == 0 || page_size <= SRING_HEADER_SIZE {
        return 0;
    }
    let slots = round_down_pow2((page_size - SRING_HEADER_SIZE) / entry_size);
    if slots > u32::MAX as usize {
        // A power of two above u32::MAX cannot be a RING_IDX count; no ring page is
        // anywhere near this large.
        1 << 31
    } else {
        slots as u32
    }
}

/// `__CONST_RING_SIZE(name, page_size)`: the slot count of a ring of `Req`/`Rsp`
/// on a page of `page_size` bytes.
#[inline]
pub const fn const_ring_size<Req: Copy, Rsp: Copy>(page_size: usize) -> u32 {
    ring_size_for(page_size, size_of::<SringEntry<Req, Rsp>>())
}

/// `union __name##_sring_entry`: one slot, holding a request or a response.
///
/// Its size is the larger of the two. The fields are never read through the union;
/// the ring code reads a slot as `Req` or `Rsp` by a pointer cast (both sit at offset 0).
#[repr(C)]
pub union SringEntry<Req: Copy, Rsp: Copy> {
    /// `req`
    pub req: Req,
    /// `rsp`
    pub rsp: Rsp,
}

/// `struct __name##_sring`: the shared page as laid out by `DEFINE_RING_TYPES`.
///
/// Only ever accessed through raw pointers into a page that the peer writes too:
/// the indices through their atomics, the slots with volatile copies. Never form a
/// `&SharedRing` to the whole page.
#[repr(C)]
pub struct SharedRing<Req: Copy, Rsp: Copy> {
    /// `req_prod`: requests published by the frontend (free-running).
    pub req_prod: AtomicU32,
    /// `req_event`: the backend wants a notification when `req_prod` passes this.
    pub req_event: AtomicU32,
    /// `rsp_prod`: responses published by the backend (free-running).
    pub rsp_prod: AtomicU32,
    /// `rsp_event`: the frontend wants a notification when `rsp_prod` passes this.
    pub rsp_event: AtomicU32,
    /// `pvt.pvt_pad`: per-protocol private bytes (netif's `smartpoll_active`), zeroed.
    pub pvt: [u8; 4],
    /// `__pad`: pads the header to 64 bytes.
    pub pad: [u8; 44],
    /// `ring[]`: the slots (variable length, `RING_SIZE` of them).
    pub ring: [SringEntry<Req, Rsp>; 0],
}

impl<Req: Copy, Rsp: Copy> SharedRing<Req, Rsp> {
    /// `__CONST_RING_SIZE(name, XEN_PAGE_SIZE)`: slots in a 4 KiB ring page.
    pub const SIZE: u32 = const_ring_size::<Req, Rsp>(RING_PAGE_SIZE);

    /// Compile-time checks that this ring type can exist on one page.
    const LAYOUT_OK: () = {
        assert!(Self::SIZE >= 1, "ring slot larger than a page");
        assert!(
            align_of::<SringEntry<Req, Rsp>>() <= SRING_HEADER_SIZE,
            "ring slot alignment above 64 bytes"
        );
        assert!(offset_of!(Self, ring) == SRING_HEADER_SIZE);
    };
}

/// Errors a ring operation reports. The overflow variants mean the peer broke the
/// protocol; Linux's netback disables the vif on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// `RING_REQUEST_PROD_OVERFLOW`: the frontend pushed `req_prod` more than
    /// `RING_SIZE` ahead of the backend's `rsp_prod_pvt`.
    #[error("frontend req_prod {prod} is more than RING_SIZE {size} ahead of rsp_prod_pvt {rsp_prod_pvt}")]
    RequestProdOverflow {
        /// The `req_prod` read from the page.
        prod: RingIdx,
        /// The backend's `rsp_prod_pvt`.
        rsp_prod_pvt: RingIdx,
        /// `RING_SIZE`.
        size: u32,
    },
    /// The frontend moved `req_prod` back behind requests the backend already consumed.
    #[error("frontend req_prod {prod} moved back behind req_cons {cons}")]
    RequestProdRegressed {
        /// The `req_prod` read from the page.
        prod: RingIdx,
        /// The backend's `req_cons`.
        cons: RingIdx,
    },
    /// `RING_RESPONSE_PROD_OVERFLOW` (or more responses than requests outstanding):
    /// the backend pushed `rsp_prod` past what it may answer.
    #[error("backend rsp_prod {prod} is beyond the {outstanding} requests outstanding after rsp_cons {cons}")]
    ResponseProdOverflow {
        /// The `rsp_prod` read from the page.
        prod: RingIdx,
        /// The frontend's `rsp_cons`.
        cons: RingIdx,
        /// Requests produced and not yet answered (`req_prod_pvt - rsp_cons`).
        outstanding: u32,
    },
    /// `RING_FULL`: no free slot for another request.
    #[error("ring full: all RING_SIZE slots await responses")]
    Full,
    /// A response was produced with no consumed request left to answer
    /// (`rsp_prod_pvt == req_cons`): it would overwrite an unread request.
    #[error("no consumed request left to answer")]
    NoRequestToAnswer,
}

/// Pointer to slot `idx & (size - 1)`; the mask keeps any index inside the page.
///
/// # Safety
/// `sring` must point to a valid ring page of this type.
#[inline(always)]
unsafe fn slot_ptr<Req: Copy, Rsp: Copy>(
    sring: NonNull<SharedRing<Req, Rsp>>,
    idx: RingIdx,
) -> *mut SringEntry<Req, Rsp> {
    let mask = SharedRing::<Req, Rsp>::SIZE - 1;
    // SAFETY: `ring` is at offset 64 of a page holding SIZE slots after the header, and
    // the masked index is below SIZE, so the result stays inside the page.
    unsafe {
        sring
            .as_ptr()
            .cast::<u8>()
            .add(SRING_HEADER_SIZE)
            .cast::<SringEntry<Req, Rsp>>()
            .add((idx & mask) as usize)
    }
}

/// The shared header's atomics, borrowed without covering the non-atomic bytes.
macro_rules! sring_field {
    ($sring:expr, $field:ident) => {
        // SAFETY: the ring's constructor contract keeps the page mapped, aligned and
        // valid for the ring's lifetime; the field is an atomic, so shared access
        // with the peer is sound, and only that field is borrowed.
        unsafe { &*addr_of!((*$sring.as_ptr()).$field) }
    };
}

/// `SHARED_RING_INIT`: zero both producers, set both event indices to 1, clear the
/// private and padding bytes.
///
/// # Safety
/// `page` must be valid for writes of [`RING_PAGE_SIZE`] bytes, aligned to at least 64
/// bytes, and no ring may be using it concurrently.
pub unsafe fn shared_ring_init(page: NonNull<u8>) {
    // SAFETY: forwarded contract.
    unsafe { shared_ring_init_at(page, 0) }
}

/// `SHARED_RING_INIT` generalised to a starting index: producers at `start`, event
/// indices at `start + 1`. Xen always starts at 0; other starts exercise index wrap
/// (pair with [`FrontRing::attach`] / [`BackRing::attach`] at the same index).
///
/// # Safety
/// As [`shared_ring_init`].
pub unsafe fn shared_ring_init_at(page: NonNull<u8>, start: RingIdx) {
    let p = page.as_ptr();
    // SAFETY: the caller guarantees 64 writable, 64-byte aligned bytes at `page` and
    // no concurrent users; the header is four u32s followed by 48 bytes of padding.
    unsafe {
        let idx = p.cast::<u32>();
        idx.add(0).write_volatile(start);
        idx.add(1).write_volatile(start.wrapping_add(1));
        idx.add(2).write_volatile(start);
        idx.add(3).write_volatile(start.wrapping_add(1));
        ptr::write_bytes(p.add(16), 0, SRING_HEADER_SIZE - 16);
    }
}

/// `struct __name##_front_ring`: the frontend's private view of a ring.
///
/// The frontend writes requests into slots, publishes them by pushing `req_prod`,
/// then reads responses up to the backend's `rsp_prod`.
pub struct FrontRing<Req: Copy, Rsp: Copy> {
    /// `req_prod_pvt`: requests written but perhaps not yet pushed.
    req_prod_pvt: RingIdx,
    /// `rsp_cons`: responses consumed.
    rsp_cons: RingIdx,
    /// `sring`
    sring: NonNull<SharedRing<Req, Rsp>>,
    _marker: PhantomData<(Req, Rsp)>,
}

// SAFETY: the ring owns no thread-bound state; the shared page is accessed only through
// atomics and volatile copies of `Copy` data, and `&mut self` serialises this side.
unsafe impl<Req: Copy + Send, Rsp: Copy + Send> Send for FrontRing<Req, Rsp> {}

impl<Req: RingEntry, Rsp: RingEntry> FrontRing<Req, Rsp> {
    /// `RING_SIZE`, known at compile time for a 4 KiB page.
    pub const SIZE: u32 = SharedRing::<Req, Rsp>::SIZE;

    /// `XEN_FRONT_RING_INIT`: `SHARED_RING_INIT` on the page, then `FRONT_RING_INIT`.
    ///
    /// # Safety
    /// `page` must be valid for reads and writes of [`RING_PAGE_SIZE`] bytes, aligned to
    /// at least 64 bytes, and stay so for the life of the returned ring. Only this
    /// frontend (and one backend, possibly in another domain) may use the page.
    pub unsafe fn init(page: NonNull<u8>) -> Self {
        // SAFETY: forwarded contract.
        unsafe {
            shared_ring_init(page);
            Self::attach(page, 0)
        }
    }

    /// `FRONT_RING_ATTACH`: a front view of an already initialised page, with
    /// `req_prod_pvt = rsp_cons = start`.
    ///
    /// # Safety
    /// As [`FrontRing::init`].
    pub unsafe fn attach(page: NonNull<u8>, start: RingIdx) -> Self {
        #[allow(clippy::let_unit_value)]
        let () = SharedRing::<Req, Rsp>::LAYOUT_OK;
        Self {
            req_prod_pvt: start,
            rsp_cons: start,
            sring: page.cast(),
            _marker: PhantomData,
        }
    }

    /// The shared page this ring views.
    #[inline]
    pub fn page(&self) -> NonNull<u8> {
        self.sring.cast()
    }

    /// `RING_SIZE`
    #[inline(always)]
    pub fn size(&self) -> u32 {
        Self::SIZE
    }

    /// `req_prod_pvt`: the index the next request is written at.
    #[inline(always)]
    pub fn req_prod_pvt(&self) -> RingIdx {
        self.req_prod_pvt
    }

    /// `rsp_cons`: the index of the next response to consume.
    #[inline(always)]
    pub fn rsp_cons(&self) -> RingIdx {
        self.rsp_cons
    }

    /// `RING_FREE_REQUESTS`: slots free for new requests.
    #[inline(always)]
    pub fn free_requests(&self) -> u32 {
        Self::SIZE.wrapping_sub(self.req_prod_pvt.wrapping_sub(self.rsp_cons))
    }

    /// `RING_FULL`
    #[inline(always)]
    pub fn is_full(&self) -> bool {
        self.free_requests() == 0
    }

    /// Writes `req` into slot `idx` (`*RING_GET_REQUEST(r, idx) = req`). Does not move
    /// `req_prod_pvt`; use it to fill in a slot reserved earlier.
    #[inline(always)]
    pub fn write_request(&mut self, idx: RingIdx, req: Req) {
        // SAFETY: slot_ptr stays inside the page (masked); Req sits at offset 0 of the
        // slot union; a volatile write because the peer reads the page concurrently.
        unsafe { slot_ptr(self.sring, idx).cast::<Req>().write_volatile(req) }
    }

    /// `RING_GET_REQUEST(r, r->req_prod_pvt++)` then a write: queues `req` in the next
    /// free slot and returns its index. Not visible to the backend until
    /// [`push_requests`](Self::push_requests).
    #[inline(always)]
    pub fn produce_request(&mut self, req: Req) -> Result<RingIdx, RingError> {
        if self.is_full() {
            return Err(RingError::Full);
        }
        let idx = self.req_prod_pvt;
        self.write_request(idx, req);
        self.req_prod_pvt = idx.wrapping_add(1);
        Ok(idx)
    }

    /// `RING_PUSH_REQUESTS`: publish every request up to `req_prod_pvt` (Release store,
    /// the `xen_wmb()` + store of the macro).
    #[inline]
    pub fn push_requests(&mut self) {
        sring_field!(self.sring, req_prod).store(self.req_prod_pvt, Ordering::Release);
    }

    /// `RING_PUSH_REQUESTS_AND_CHECK_NOTIFY`: publish, then report whether the backend
    /// asked to be notified for any of the newly pushed requests
    /// (`new - req_event < new - old`, wrapping).
    #[inline]
    pub fn push_requests_and_check_notify(&mut self) -> bool {
        let req_prod = sring_field!(self.sring, req_prod);
        let old = req_prod.load(Ordering::Relaxed);
        let new = self.req_prod_pvt;
        req_prod.store(new, Ordering::Release);
        // xen_mb(): the backend must see the new req_prod before we read req_event.
        fence(Ordering::SeqCst);
        let event = sring_field!(self.sring, req_event).load(Ordering::Relaxed);
        notify_needed(old, new, event)
    }

    /// The backend's `rsp_prod`, read with Acquire (the read + `xen_rmb()` before
    /// reading response slots).
    #[inline(always)]
    pub fn rsp_prod(&self) -> RingIdx {
        sring_field!(self.sring, rsp_prod).load(Ordering::Acquire)
    }

    /// `XEN_RING_NR_UNCONSUMED_RESPONSES`: `rsp_prod - rsp_cons` (unchecked: a hostile
    /// backend can make this anything; [`take_responses`](Self::take_responses) checks).
    #[inline(always)]
    pub fn unconsumed_responses(&self) -> u32 {
        self.rsp_prod().wrapping_sub(self.rsp_cons)
    }

    /// `RING_HAS_UNCONSUMED_RESPONSES`
    #[inline(always)]
    pub fn has_unconsumed_responses(&self) -> bool {
        self.unconsumed_responses() != 0
    }

    /// `RING_COPY_RESPONSE(r, idx, &rsp)`: one volatile copy of slot `idx` as a
    /// response, so the value cannot change under the caller (no double fetch).
    #[inline(always)]
    pub fn copy_response(&self, idx: RingIdx) -> Rsp {
        // SAFETY: slot_ptr stays inside the page; Rsp is at offset 0 of the union and
        // is valid for any bytes (RingEntry).
        unsafe { slot_ptr(self.sring, idx).cast::<Rsp>().read_volatile() }
    }

    /// Sets `rsp_cons` after the caller consumed responses up to `idx` itself.
    #[inline(always)]
    pub fn set_rsp_cons(&mut self, idx: RingIdx) {
        self.rsp_cons = idx;
    }

    /// `RING_RESPONSE_PROD_OVERFLOW`: `Err` if `prod` is more than `RING_SIZE` ahead of
    /// `rsp_cons`, i.e. the backend pushed responses to slots it cannot own.
    #[inline(always)]
    pub fn check_response_prod(&self, prod: RingIdx) -> Result<(), RingError> {
        if prod.wrapping_sub(self.rsp_cons) > Self::SIZE {
            return Err(RingError::ResponseProdOverflow {
                prod,
                cons: self.rsp_cons,
                outstanding: self.req_prod_pvt.wrapping_sub(self.rsp_cons),
            });
        }
        Ok(())
    }

    /// Reads `rsp_prod` once and returns an iterator that copies out every response
    /// up to it, advancing `rsp_cons` as it goes (the usual
    /// `for (cons = rsp_cons; cons != rp; cons++) RING_COPY_RESPONSE(...)` loop).
    ///
    /// Fails if the backend published more responses than there are requests
    /// outstanding (which includes `RING_RESPONSE_PROD_OVERFLOW`).
    #[inline]
    pub fn take_responses(&mut self) -> Result<Responses<'_, Req, Rsp>, RingError> {
        let prod = self.rsp_prod();
        self.check_response_prod(prod)?;
        let outstanding = self.req_prod_pvt.wrapping_sub(self.rsp_cons);
        if prod.wrapping_sub(self.rsp_cons) > outstanding {
            return Err(RingError::ResponseProdOverflow {
                prod,
                cons: self.rsp_cons,
                outstanding,
            });
        }
        Ok(Responses {
            ring: self,
            end: prod,
        })
    }

    /// `RING_FINAL_CHECK_FOR_RESPONSES`: if nothing is pending, ask for a notification
    /// on the next response (`rsp_event = rsp_cons + 1`), full fence, and look again.
    /// `false` means it is safe to sleep until the backend notifies.
    #[inline]
    pub fn final_check_for_responses(&mut self) -> bool {
        if self.has_unconsumed_responses() {
            return true;
        }
        sring_field!(self.sring, rsp_event).store(self.rsp_cons.wrapping_add(1), Ordering::Relaxed);
        // xen_mb(): publish rsp_event before re-reading rsp_prod.
        fence(Ordering::SeqCst);
        self.has_unconsumed_responses()
    }
}

/// Responses copied out of a [`FrontRing`], up to the `rsp_prod` read when it was made.
pub struct Responses<'a, Req: RingEntry, Rsp: RingEntry> {
    ring: &'a mut FrontRing<Req, Rsp>,
    end: RingIdx,
}

impl<Req: RingEntry, Rsp: RingEntry> Responses<'_, Req, Rsp> {
    /// The `rsp_prod` snapshot this batch ends at.
    #[inline]
    pub fn end(&self) -> RingIdx {
        self.end
    }
}

impl<Req: RingEntry, Rsp: RingEntry> Iterator for Responses<'_, Req, Rsp> {
    type Item = Rsp;

    #[inline(always)]
    fn next(&mut self) -> Option<Rsp> {
        let cons = self.ring.rsp_cons;
        if cons == self.end {
            return None;
        }
        let rsp = self.ring.copy_response(cons);
        self.ring.rsp_cons = cons.wrapping_add(1);
        Some(rsp)
    }

    #[inline]
    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.end.wrapping_sub(self.ring.rsp_cons) as usize;
        (n, Some(n))
    }
}

impl<Req: RingEntry, Rsp: RingEntry> ExactSizeIterator for Responses<'_, Req, Rsp> {}

/// `struct __name##_back_ring`: the backend's private view of a ring.
///
/// The backend copies requests out of slots up to the frontend's `req_prod`, writes
/// responses into the same slots and publishes them by pushing `rsp_prod`.
pub struct BackRing<Req: Copy, Rsp: Copy> {
    /// `rsp_prod_pvt`: responses written but perhaps not yet pushed.
    rsp_prod_pvt: RingIdx,
    /// `req_cons`: requests consumed.
    req_cons: RingIdx,
    /// `sring`
    sring: NonNull<SharedRing<Req, Rsp>>,
    _marker: PhantomData<(Req, Rsp)>,
}

// SAFETY: as for FrontRing.
unsafe impl<Req: Copy + Send, Rsp: Copy + Send> Send for BackRing<Req, Rsp> {}

impl<Req: RingEntry, Rsp: RingEntry> BackRing<Req, Rsp> {
    /// `RING_SIZE`, known at compile time for a 4 KiB page.
    pub const SIZE: u32 = SharedRing::<Req, Rsp>::SIZE;

    /// `BACK_RING_INIT`: a back view starting at index 0 of a page the frontend
    /// initialised.
    ///
    /// # Safety
    /// `page` must be valid for reads and writes of [`RING_PAGE_SIZE`] bytes, aligned to
    /// at least 64 bytes, and stay so for the life of the returned ring. Only this
    /// backend (and one frontend, possibly in another domain) may use the page.
    pub unsafe fn init(page: NonNull<u8>) -> Self {
        // SAFETY: forwarded contract.
        unsafe { Self::attach(page, 0) }
    }

    /// `BACK_RING_ATTACH`: `rsp_prod_pvt = req_cons = start`.
    ///
    /// # Safety
    /// As [`BackRing::init`].
    pub unsafe fn attach(page: NonNull<u8>, start: RingIdx) -> Self {
        #[allow(clippy::let_unit_value)]
        let () = SharedRing::<Req, Rsp>::LAYOUT_OK;
        Self {
            rsp_prod_pvt: start,
            req_cons: start,
            sring: page.cast(),
            _marker: PhantomData,
        }
    }

    /// The shared page this ring views.
    #[inline]
    pub fn page(&self) -> NonNull<u8> {
        self.sring.cast()
    }

    /// `RING_SIZE`
    #[inline(always)]
    pub fn size(&self) -> u32 {
        Self::SIZE
    }

    /// `rsp_prod_pvt`: the index the next response is written at.
    #[inline(always)]
    pub fn rsp_prod_pvt(&self) -> RingIdx {
        self.rsp_prod_pvt
    }

    /// `req_cons`: the index of the next request to consume.
    #[inline(always)]
    pub fn req_cons(&self) -> RingIdx {
        self.req_cons
    }

    /// The frontend's `req_prod`, read with Acquire (the read + `xen_rmb()` before
    /// reading request slots). Unchecked: see [`check_request_prod`](Self::check_request_prod).
    #[inline(always)]
    pub fn req_prod(&self) -> RingIdx {
        sring_field!(self.sring, req_prod).load(Ordering::Acquire)
    }

    /// `XEN_RING_NR_UNCONSUMED_REQUESTS`: `min(req_prod - req_cons,
    /// RING_SIZE - (req_cons - rsp_prod_pvt))`. The second term bounds the count by
    /// the slots the backend has answered, so even a hostile `req_prod` cannot make the
    /// backend read more than `RING_SIZE` slots ahead of its own responses.
    #[inline(always)]
    pub fn unconsumed_requests(&self) -> u32 {
        let req = self.req_prod().wrapping_sub(self.req_cons);
        let rsp = Self::SIZE.wrapping_sub(self.req_cons.wrapping_sub(self.rsp_prod_pvt));
        req.min(rsp)
    }

    /// `RING_HAS_UNCONSUMED_REQUESTS`
    #[inline(always)]
    pub fn has_unconsumed_requests(&self) -> bool {
        self.unconsumed_requests() != 0
    }

    /// `RING_COPY_REQUEST(r, idx, &req)`: one volatile copy of slot `idx` as a
    /// request; validate the copy, never the slot (no double fetch).
    #[inline(always)]
    pub fn copy_request(&self, idx: RingIdx) -> Req {
        // SAFETY: slot_ptr stays inside the page; Req is at offset 0 of the union and
        // is valid for any bytes (RingEntry).
        unsafe { slot_ptr(self.sring, idx).cast::<Req>().read_volatile() }
    }

    /// Sets `req_cons` after the caller consumed requests up to `idx` itself (check it
    /// with [`request_cons_overflow`](Self::request_cons_overflow) first).
    #[inline(always)]
    pub fn set_req_cons(&mut self, idx: RingIdx) {
        self.req_cons = idx;
    }

    /// `RING_REQUEST_CONS_OVERFLOW`: `true` if consuming at `cons` would read a slot
    /// whose response has not been produced yet (`cons - rsp_prod_pvt >= RING_SIZE`).
    #[inline(always)]
    pub fn request_cons_overflow(&self, cons: RingIdx) -> bool {
        cons.wrapping_sub(self.rsp_prod_pvt) >= Self::SIZE
    }

    /// `RING_REQUEST_PROD_OVERFLOW`: `Err` if the frontend's `prod` is more than
    /// `RING_SIZE` ahead of `rsp_prod_pvt` (a frontend bug or attack).
    #[inline(always)]
    pub fn check_request_prod(&self, prod: RingIdx) -> Result<(), RingError> {
        if prod.wrapping_sub(self.rsp_prod_pvt) > Self::SIZE {
            return Err(RingError::RequestProdOverflow {
                prod,
                rsp_prod_pvt: self.rsp_prod_pvt,
                size: Self::SIZE,
            });
        }
        Ok(())
    }

    /// Reads `req_prod` once, checks it (`RING_REQUEST_PROD_OVERFLOW`, and that it did
    /// not move back behind `req_cons`), and returns an iterator that copies out every
    /// request up to it, advancing `req_cons` as it goes. Netback's batch loop.
    #[inline]
    pub fn take_requests(&mut self) -> Result<Requests<'_, Req, Rsp>, RingError> {
        let prod = self.req_prod();
        self.check_request_prod(prod)?;
        // Both distances are now within RING_SIZE of rsp_prod_pvt, so comparing them
        // orders prod against req_cons without wrap ambiguity.
        if prod.wrapping_sub(self.rsp_prod_pvt) < self.req_cons.wrapping_sub(self.rsp_prod_pvt) {
            return Err(RingError::RequestProdRegressed {
                prod,
                cons: self.req_cons,
            });
        }
        Ok(Requests {
            ring: self,
            end: prod,
        })
    }

    /// Writes `rsp` into slot `idx` (`*RING_GET_RESPONSE(r, idx) = rsp`). Does not move
    /// `rsp_prod_pvt`.
    #[inline(always)]
    pub fn write_response(&mut self, idx: RingIdx, rsp: Rsp) {
        // SAFETY: slot_ptr stays inside the page (masked); Rsp sits at offset 0 of the
        // slot union; volatile because the peer reads the page concurrently.
        unsafe { slot_ptr(self.sring, idx).cast::<Rsp>().write_volatile(rsp) }
    }

    /// `RING_GET_RESPONSE(r, r->rsp_prod_pvt++)` then a write: queues `rsp` as the
    /// response in the next slot. Refused if every consumed request is answered
    /// already (it would overwrite an unread request).
    #[inline(always)]
    pub fn produce_response(&mut self, rsp: Rsp) -> Result<RingIdx, RingError> {
        let idx = self.rsp_prod_pvt;
        if idx == self.req_cons {
            return Err(RingError::NoRequestToAnswer);
        }
        self.write_response(idx, rsp);
        self.rsp_prod_pvt = idx.wrapping_add(1);
        Ok(idx)
    }

    /// `RING_PUSH_RESPONSES`: publish every response up to `rsp_prod_pvt` (Release).
    #[inline]
    pub fn push_responses(&mut self) {
        sring_field!(self.sring, rsp_prod).store(self.rsp_prod_pvt, Ordering::Release);
    }

    /// `RING_PUSH_RESPONSES_AND_CHECK_NOTIFY`: publish, full fence, then report whether
    /// the frontend asked to be notified for any of the new responses.
    #[inline]
    pub fn push_responses_and_check_notify(&mut self) -> bool {
        let rsp_prod = sring_field!(self.sring, rsp_prod);
        let old = rsp_prod.load(Ordering::Relaxed);
        let new = self.rsp_prod_pvt;
        rsp_prod.store(new, Ordering::Release);
        // xen_mb(): the frontend must see the new rsp_prod before we read rsp_event.
        fence(Ordering::SeqCst);
        let event = sring_field!(self.sring, rsp_event).load(Ordering::Relaxed);
        notify_needed(old, new, event)
    }

    /// `RING_FINAL_CHECK_FOR_REQUESTS`: if nothing is pending, ask for a notification on
    /// the next request (`req_event = req_cons + 1`), full fence, and look again.
    /// `false` means it is safe to sleep until the frontend notifies.
    #[inline]
    pub fn final_check_for_requests(&mut self) -> bool {
        if self.has_unconsumed_requests() {
            return true;
        }
        sring_field!(self.sring, req_event).store(self.req_cons.wrapping_add(1), Ordering::Relaxed);
        // xen_mb(): publish req_event before re-reading req_prod.
        fence(Ordering::SeqCst);
        self.has_unconsumed_requests()
    }

    /// Ask for a notification once the frontend publishes requests beyond `prod`
    /// (`req_event = prod + 1`), full fence, and report whether it already has. For a
    /// backend that holds unconsumed requests but needs more before it can go on, as
    /// Linux netback's `xenvif_rx_ring_slots_available` does when a packet needs more
    /// RX slots than are posted. `false` means it is safe to sleep until notified.
    #[inline]
    pub fn final_check_for_requests_after(&mut self, prod: RingIdx) -> bool {
        sring_field!(self.sring, req_event).store(prod.wrapping_add(1), Ordering::Relaxed);
        // xen_mb(): publish req_event before re-reading req_prod.
        fence(Ordering::SeqCst);
        self.req_prod() != prod
    }
}

/// Requests copied out of a [`BackRing`], up to the checked `req_prod` read when it
/// was made.
pub struct Requests<'a, Req: RingEntry, Rsp: RingEntry> {
    ring: &'a mut BackRing<Req, Rsp>,
    end: RingIdx,
}

impl<Req: RingEntry, Rsp: RingEntry> Requests<'_, Req, Rsp> {
    /// The `req_prod` snapshot this batch ends at.
    #[inline]
    pub fn end(&self) -> RingIdx {
        self.end
    }

    /// The index of the next request this iterator yields (`req_cons`).
    #[inline]
    pub fn cons(&self) -> RingIdx {
        self.ring.req_cons
    }
}

impl<Req: RingEntry, Rsp: RingEntry> Iterator for Requests<'_, Req, Rsp> {
    type Item = Req;

    #[inline(always)]
    fn next(&mut self) -> Option<Req> {
        let cons = self.ring.req_cons;
        if cons == self.end {
            return None;
        }
        let req = self.ring.copy_request(cons);
        self.ring.req_cons = cons.wrapping_add(1);
        Some(req)
    }

    #[inline]
    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.end.wrapping_sub(self.ring.req_cons) as usize;
        (n, Some(n))
    }
}

impl<Req: RingEntry, Rsp: RingEntry> ExactSizeIterator for Requests<'_, Req, Rsp> {}

/// The notify test of `RING_PUSH_*_AND_CHECK_NOTIFY`: the peer asked to be woken at
/// `event`; notify if `event` lies in `(old, new]`, computed as
/// `(RING_IDX)(new - event) < (RING_IDX)(new - old)`.
#[inline(always)]
pub const fn notify_needed(old: RingIdx, new: RingIdx, event: RingIdx) -> bool {
    new.wrapping_sub(event) < new.wrapping_sub(old)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rd32_matches_power_of_two_floor() {
        assert_eq!(round_down_pow2(0), 0);
        assert_eq!(round_down_pow2(1), 1);
        assert_eq!(round_down_pow2(2), 2);
        assert_eq!(round_down_pow2(3), 2);
        assert_eq!(round_down_pow2(336), 256);
        assert_eq!(round_down_pow2(504), 256);
        assert_eq!(round_down_pow2(512), 512);
    }

    #[test]
    fn ring_sizes() {
        assert_eq!(ring_size_for(4096, 12), 256);
        assert_eq!(ring_size_for(4096, 8), 256);
        assert_eq!(ring_size_for(4096, 4), 512);
        assert_eq!(ring_size_for(4096, 4096), 0);
        assert_eq!(ring_size_for(4096, 0), 0);
        assert_eq!(const_ring_size::<u64, u32>(4096), 256);
        assert_eq!(size_of::<SharedRing<u64, u32>>(), SRING_HEADER_SIZE);
    }

    #[test]
    fn notify_formula() {
        // Peer waits for index 5; pushing 3..6 crosses it, 5..8 does not (5 is old).
        assert!(notify_needed(3, 6, 5));
        assert!(notify_needed(4, 5, 5));
        assert!(!notify_needed(5, 8, 5));
        assert!(!notify_needed(1, 4, 5));
        // Across the wrap.
        assert!(notify_needed(u32::MAX - 1, 2, 0));
        assert!(!notify_needed(u32::MAX - 1, 2, 3));
    }

    #[test]
    fn final_check_after_waits_for_requests_beyond_prod() {
        let layout = alloc::alloc::Layout::from_size_align(4096, 4096).expect("layout");
        // SAFETY: a non-zero-sized layout.
        let raw = unsafe { alloc::alloc::alloc_zeroed(layout) };
        let page = NonNull::new(raw).expect("allocation");
        // SAFETY: a zeroed, 4 KiB-aligned page used by these two ring views only and
        // freed after them.
        let (mut front, mut back) = unsafe {
            (
                FrontRing::<u64, u64>::init(page),
                BackRing::<u64, u64>::attach(page, 0),
            )
        };
        for i in 0..3 {
            front.produce_request(i).expect("room");
        }
        front.push_requests_and_check_notify();
        // Three posted, none consumed: "any request" is already satisfied, but a
        // backend needing more asks for the ones beyond req_prod = 3.
        assert!(back.final_check_for_requests());
        assert!(!back.final_check_for_requests_after(3));
        // The next push crosses req_event = 4, so the frontend notifies.
        front.produce_request(3).expect("room");
        assert!(front.push_requests_and_check_notify());
        assert!(back.final_check_for_requests_after(3));
        // SAFETY: allocated above with this layout; the ring views are unused from here.
        unsafe { alloc::alloc::dealloc(raw, layout) };
    }
}
