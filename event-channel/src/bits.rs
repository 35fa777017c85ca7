//! Pending and mask bitmaps of the 2-level event-channel ABI.
//!
//! In Xen these are `shared_info.evtchn_pending[]` and `shared_info.evtchn_mask[]`:
//! arrays of machine words the guest reads and writes directly, bit `p` of the
//! array standing for port `p`. [`SharedBits`] is that array, either owned on the
//! heap or a view onto memory someone else provides (a page shared with a guest
//! process), so a guest can test its pending bits with a plain load and no
//! system call.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering};

/// `BITS_PER_EVTCHN_WORD`: bits in one `xen_ulong_t` word of the bitmaps (64-bit ABI).
pub const BITS_PER_EVTCHN_WORD: usize = 64;
/// `EVTCHN_2L_NR_CHANNELS`: ports the 2-level ABI can address (64 × 64 on 64-bit).
pub const EVTCHN_2L_NR_CHANNELS: usize = BITS_PER_EVTCHN_WORD * BITS_PER_EVTCHN_WORD;

/// Where a bitmap's words live.
enum Backing {
    /// Owned by this value.
    Heap(Box<[AtomicU64]>),
    /// Provided by the caller of [`SharedBits::from_raw`], who keeps it alive.
    Foreign {
        ptr: NonNull<AtomicU64>,
        words: usize,
    },
}

/// A bitmap of atomic 64-bit words, one bit per port (layout of Xen's
/// `evtchn_pending[]` / `evtchn_mask[]`: bit `p % 64` of word `p / 64`).
///
/// Every access is atomic and sequentially consistent: the waiter's
/// "announce sleep, then re-check pending" handshake relies on it. Bits outside
/// the bitmap read as clear and cannot be set (no panic).
pub struct SharedBits {
    backing: Backing,
    nbits: usize,
}

// SAFETY: the words are atomics, so shared access from many threads is sound; the
// foreign variant's pointer is valid for the value's lifetime by the contract of
// `from_raw`.
unsafe impl Send for SharedBits {}
// SAFETY: see above; all access goes through `&AtomicU64`.
unsafe impl Sync for SharedBits {}

impl SharedBits {
    /// A zeroed heap-backed bitmap of at least `nbits` bits.
    pub fn new(nbits: usize) -> Self {
        let words = nbits.div_ceil(BITS_PER_EVTCHN_WORD);
        let v: Vec<AtomicU64> = (0..words).map(|_| AtomicU64::new(0)).collect();
        Self {
            backing: Backing::Heap(v.into_boxed_slice()),
            nbits,
        }
    }

    /// A view onto `nbits` bits of caller-provided memory (e.g. a page shared
    /// with a guest process). The current contents are kept.
    ///
    /// # Safety
    /// `ptr` must be 8-byte aligned, valid for reads and writes of
    /// `nbits.div_ceil(64)` `u64` words, and stay mapped for as long as the
    /// returned value (and anything holding it) lives. Other parties may only
    /// touch that memory with atomic operations.
    pub unsafe fn from_raw(ptr: NonNull<AtomicU64>, nbits: usize) -> Self {
        Self {
            backing: Backing::Foreign {
                ptr,
                words: nbits.div_ceil(BITS_PER_EVTCHN_WORD),
            },
            nbits,
        }
    }

    /// Number of bits (ports) the bitmap covers.
    pub fn len(&self) -> usize {
        self.nbits
    }

    /// True if the bitmap covers no bit at all.
    pub fn is_empty(&self) -> bool {
        self.nbits == 0
    }

    fn words(&self) -> &[AtomicU64] {
        match &self.backing {
            Backing::Heap(b) => b,
            // SAFETY: `from_raw`'s contract: `ptr` is aligned and valid for `words`
            // atomics for as long as `self` lives.
            Backing::Foreign { ptr, words } => unsafe {
                core::slice::from_raw_parts(ptr.as_ptr(), *words)
            },
        }
    }

    /// The word holding `bit` and the bit's mask in it, or None if out of range.
    fn locate(&self, bit: usize) -> Option<(&AtomicU64, u64)> {
        if bit >= self.nbits {
            return None;
        }
        let word = self.words().get(bit / BITS_PER_EVTCHN_WORD)?;
        Some((word, 1u64 << (bit % BITS_PER_EVTCHN_WORD)))
    }

    /// `test_bit`: is `bit` set?
    pub fn test(&self, bit: usize) -> bool {
        self.locate(bit)
            .is_some_and(|(w, m)| w.load(Ordering::SeqCst) & m != 0)
    }

    /// `test_and_set_bit`: set `bit`, returning whether it was already set.
    /// Out of range: returns false and changes nothing.
    pub fn test_and_set(&self, bit: usize) -> bool {
        self.locate(bit)
            .is_some_and(|(w, m)| w.fetch_or(m, Ordering::SeqCst) & m != 0)
    }

    /// `test_and_clear_bit`: clear `bit`, returning whether it was set.
    ///
    /// Loads first and only writes when the bit is set, so a poller spinning on a
    /// clear bit keeps the cache line shared instead of bouncing it to the sender.
    pub fn test_and_clear(&self, bit: usize) -> bool {
        self.locate(bit).is_some_and(|(w, m)| {
            w.load(Ordering::SeqCst) & m != 0 && w.fetch_and(!m, Ordering::SeqCst) & m != 0
        })
    }
}

impl core::fmt::Debug for SharedBits {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let set: Vec<usize> = (0..self.nbits).filter(|&b| self.test(b)).collect();
        f.debug_struct("SharedBits")
            .field("nbits", &self.nbits)
            .field("set", &set)
            .finish()
    }
}

/// The two bitmaps exactly as they sit in Xen's `struct shared_info`
/// (`xen_ulong_t evtchn_pending[64]; xen_ulong_t evtchn_mask[64];` on 64-bit):
/// 1 KiB that a hypervisor can place at the start of a page shared with a guest.
#[repr(C)]
pub struct EvtchnBitmapPage {
    /// `shared_info.evtchn_pending`
    pub evtchn_pending: [AtomicU64; BITS_PER_EVTCHN_WORD],
    /// `shared_info.evtchn_mask`
    pub evtchn_mask: [AtomicU64; BITS_PER_EVTCHN_WORD],
}

/// One domain's pending and mask bitmaps.
#[derive(Debug)]
pub struct EvtchnBits {
    /// `evtchn_pending[]`: set by the sender (the hypervisor on `EVTCHNOP_send`),
    /// cleared by the receiving guest when it consumes the event.
    pub pending: SharedBits,
    /// `evtchn_mask[]`: owned by the guest; a masked port still becomes pending
    /// but its notifier is not kicked until `EVTCHNOP_unmask`.
    pub mask: SharedBits,
}

impl EvtchnBits {
    /// Heap-backed, all clear, covering ports `0..nports`.
    pub fn new(nports: usize) -> Self {
        Self {
            pending: SharedBits::new(nports),
            mask: SharedBits::new(nports),
        }
    }

    /// Views onto a caller-provided [`EvtchnBitmapPage`] covering ports
    /// `0..nports` (at most [`EVTCHN_2L_NR_CHANNELS`]; larger values are clamped).
    ///
    /// # Safety
    /// `page` must point to a valid, 8-byte-aligned `EvtchnBitmapPage` that stays
    /// mapped for as long as the returned value lives, and that other parties only
    /// access atomically.
    pub unsafe fn from_page(page: NonNull<EvtchnBitmapPage>, nports: usize) -> Self {
        let nports = nports.min(EVTCHN_2L_NR_CHANNELS);
        let base = page.as_ptr();
        // SAFETY: `page` is valid per the caller's contract, so projecting to its
        // fields yields in-bounds, aligned, non-null pointers; each array holds
        // 64 words, enough for `nports <= 4096` bits.
        unsafe {
            let pending = NonNull::new_unchecked(core::ptr::addr_of_mut!((*base).evtchn_pending))
                .cast::<AtomicU64>();
            let mask = NonNull::new_unchecked(core::ptr::addr_of_mut!((*base).evtchn_mask))
                .cast::<AtomicU64>();
            Self {
                pending: SharedBits::from_raw(pending, nports),
                mask: SharedBits::from_raw(mask, nports),
            }
        }
    }

    /// Ports covered (the shorter of the two bitmaps).
    pub fn nports(&self) -> usize {
        self.pending.len().min(self.mask.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_test_clear_and_word_layout() {
        let b = SharedBits::new(130);
        assert_eq!(b.len(), 130);
        assert!(!b.test(65));
        assert!(!b.test_and_set(65));
        assert!(b.test_and_set(65));
        assert!(b.test(65));
        // Bit 65 is bit 1 of word 1, as in Xen's evtchn_pending[].
        assert_eq!(b.words()[1].load(Ordering::SeqCst), 0b10);
        assert!(b.test_and_clear(65));
        assert!(!b.test_and_clear(65));
        assert!(!b.test(65));
    }

    #[test]
    fn out_of_range_is_clear_and_unsettable() {
        let b = SharedBits::new(10);
        assert!(!b.test_and_set(10));
        assert!(!b.test(10));
        assert!(!b.test_and_set(usize::MAX));
        assert!(!b.test_and_clear(usize::MAX));
        // Bits 10..64 exist in the word but are outside the bitmap.
        assert_eq!(b.words()[0].load(Ordering::SeqCst), 0);
    }

    #[test]
    fn foreign_memory_view_sees_external_writes() {
        let page = Box::new(EvtchnBitmapPage {
            evtchn_pending: [const { AtomicU64::new(0) }; 64],
            evtchn_mask: [const { AtomicU64::new(0) }; 64],
        });
        let ptr = NonNull::from(&*page);
        // SAFETY: `page` outlives `bits` (dropped at the end of this test after it).
        let bits = unsafe { EvtchnBits::from_page(ptr, 4096) };
        assert_eq!(bits.nports(), 4096);
        // Another party (the "guest") sets port 200 pending in the raw page.
        page.evtchn_pending[200 / 64].fetch_or(1 << (200 % 64), Ordering::SeqCst);
        assert!(bits.pending.test(200));
        bits.mask.test_and_set(4095);
        assert_eq!(page.evtchn_mask[63].load(Ordering::SeqCst), 1 << 63);
        drop(bits);
        drop(page);
    }

    #[test]
    fn from_page_clamps_to_the_2l_limit() {
        let page = Box::new(EvtchnBitmapPage {
            evtchn_pending: [const { AtomicU64::new(0) }; 64],
            evtchn_mask: [const { AtomicU64::new(0) }; 64],
        });
        // SAFETY: `page` outlives `bits`.
        let bits = unsafe { EvtchnBits::from_page(NonNull::from(&*page), 100_000) };
        assert_eq!(bits.nports(), EVTCHN_2L_NR_CHANNELS);
        assert!(!bits.pending.test_and_set(EVTCHN_2L_NR_CHANNELS));
    }
}
