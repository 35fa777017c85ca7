//! A view of a version-1 grant table living in memory shared between the granting
//! guest and the hypervisor (a memfd mapped by several processes).
//!
//! Every access goes through atomics: the guest and the hypervisor write the same
//! words concurrently. `flags` and `domid` are treated as one 32-bit word, Xen's
//! `union grant_combo`, so the hypervisor can check the type and domid and set
//! `GTF_reading`/`GTF_writing` in a single compare-exchange, and the guest can revoke
//! with a compare-exchange that fails if the hypervisor pinned the entry meanwhile.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicU32, Ordering};

use crate::abi::{DomId, GrantEntryV1, GrantRef};

/// `union grant_combo` packing: the 32-bit word at offset 0 of a `grant_entry_v1`,
/// `flags` in the first two bytes and `domid` in the next two (low/high half on
/// little-endian machines).
#[inline]
pub const fn combo(flags: u16, domid: DomId) -> u32 {
    #[cfg(target_endian = "little")]
    {
        (flags as u32) | ((domid as u32) << 16)
    }
    #[cfg(target_endian = "big")]
    {
        ((flags as u32) << 16) | (domid as u32)
    }
}

/// The `flags` half of a `grant_combo` word.
#[inline]
pub const fn combo_flags(raw: u32) -> u16 {
    #[cfg(target_endian = "little")]
    {
        raw as u16
    }
    #[cfg(target_endian = "big")]
    {
        (raw >> 16) as u16
    }
}

/// The `domid` half of a `grant_combo` word.
#[inline]
pub const fn combo_domid(raw: u32) -> DomId {
    #[cfg(target_endian = "little")]
    {
        (raw >> 16) as u16
    }
    #[cfg(target_endian = "big")]
    {
        raw as u16
    }
}

/// Error building a [`SharedGrantTable`] view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    /// The table must be 4-byte aligned for its atomic words.
    #[error("grant table memory is not 4-byte aligned")]
    Misaligned,
}

/// `grant_entry_v1_t shared[nr_entries]` in shared memory, accessed only atomically.
#[derive(Debug)]
pub struct SharedGrantTable {
    base: NonNull<GrantEntryV1>,
    nr_entries: u32,
}

// SAFETY: the view only ever touches the table through atomic operations, and the
// constructor's contract makes the memory outlive the view; any thread may use it.
unsafe impl Send for SharedGrantTable {}
// SAFETY: as above, all accesses are atomic, so concurrent `&self` use is sound.
unsafe impl Sync for SharedGrantTable {}

impl SharedGrantTable {
    /// View `nr_entries` entries starting at `base`.
    ///
    /// # Safety
    /// `base` must point to `nr_entries * 8` bytes that stay mapped, readable and
    /// writable for the whole life of the view, and that nobody accesses except through
    /// atomic operations of 32 bits at offsets 0 and 4 of each entry (other processes
    /// sharing the memory included).
    pub unsafe fn from_raw(
        base: NonNull<GrantEntryV1>,
        nr_entries: u32,
    ) -> Result<Self, TableError> {
        if !base.as_ptr().cast::<AtomicU32>().is_aligned() {
            return Err(TableError::Misaligned);
        }
        Ok(SharedGrantTable { base, nr_entries })
    }

    /// `nr_grant_entries()`: the number of entries in the table.
    #[inline]
    pub fn nr_entries(&self) -> u32 {
        self.nr_entries
    }

    #[inline]
    fn entry(&self, gref: GrantRef) -> Option<NonNull<GrantEntryV1>> {
        if gref >= self.nr_entries {
            return None;
        }
        // SAFETY: gref < nr_entries, so the offset stays inside the table the
        // constructor's caller vouched for.
        Some(unsafe { self.base.add(gref as usize) })
    }

    /// The `flags`+`domid` word (`grant_combo.raw`) of entry `gref`.
    #[inline]
    pub fn header(&self, gref: GrantRef) -> Option<&AtomicU32> {
        let e = self.entry(gref)?;
        // SAFETY: the entry is in bounds and 4-aligned (checked at construction,
        // entries are 8 bytes); the memory outlives `self` and is only accessed
        // atomically, so an `&AtomicU32` to it is valid for `&self`'s lifetime.
        Some(unsafe { AtomicU32::from_ptr(e.as_ptr().cast::<u32>()) })
    }

    /// The `frame` word of entry `gref`.
    #[inline]
    pub fn frame(&self, gref: GrantRef) -> Option<&AtomicU32> {
        let e = self.entry(gref)?;
        // SAFETY: as in `header`; `frame` sits at offset 4 of the 8-byte entry.
        Some(unsafe { AtomicU32::from_ptr(e.as_ptr().cast::<u32>().add(1)) })
    }

    /// A snapshot of entry `gref` (flags and domid read together, frame after them).
    pub fn read(&self, gref: GrantRef) -> Option<GrantEntryV1> {
        let raw = self.header(gref)?.load(Ordering::Acquire);
        let frame = self.frame(gref)?.load(Ordering::Relaxed);
        Some(GrantEntryV1 {
            flags: combo_flags(raw),
            domid: combo_domid(raw),
            frame,
        })
    }

    /// `gnttab_clear_flags()`: atomically clear `mask` in entry `gref`'s flags.
    #[inline]
    pub(crate) fn clear_flags(&self, gref: GrantRef, mask: u16) {
        if let Some(h) = self.header(gref) {
            h.fetch_and(!combo(mask, 0), Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::*;

    #[test]
    fn combo_matches_struct_layout() {
        let mut e = [GrantEntryV1 {
            flags: GTF_PERMIT_ACCESS | GTF_READONLY,
            domid: 0x1234,
            frame: 77,
        }];
        let base = NonNull::new(e.as_mut_ptr()).unwrap();
        // SAFETY: `e` outlives the view and is accessed only through it below.
        let t = unsafe { SharedGrantTable::from_raw(base, 1) }.unwrap();
        let raw = t.header(0).unwrap().load(Ordering::Relaxed);
        assert_eq!(raw, combo(GTF_PERMIT_ACCESS | GTF_READONLY, 0x1234));
        assert_eq!(combo_flags(raw), GTF_PERMIT_ACCESS | GTF_READONLY);
        assert_eq!(combo_domid(raw), 0x1234);
        assert_eq!(t.read(0).unwrap(), e[0]);
        assert!(t.header(1).is_none());
        assert!(t.frame(1).is_none());
        t.header(0)
            .unwrap()
            .fetch_or(combo(GTF_READING, 0), Ordering::Relaxed);
        t.clear_flags(0, GTF_READING);
        assert_eq!(t.read(0).unwrap().flags, GTF_PERMIT_ACCESS | GTF_READONLY);
    }

    #[test]
    fn misaligned_base_is_refused() {
        let mut buf = [0u64; 4];
        let p = (buf.as_mut_ptr() as *mut u8).wrapping_add(2) as *mut GrantEntryV1;
        // SAFETY: the constructor refuses before any access is made.
        let r = unsafe { SharedGrantTable::from_raw(NonNull::new(p).unwrap(), 1) };
        assert_eq!(r.err(), Some(TableError::Misaligned));
    }
}
