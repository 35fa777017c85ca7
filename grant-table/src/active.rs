//! The hypervisor's side of one granting domain's table: Xen's "active grant
//! entries" (`struct active_grant_entry`), kept in hypervisor-private memory, and the
//! pin / unpin protocol of `xen/common/grant_table.c` (`_set_status_v1`,
//! `map_grant_ref`, `unmap_common_complete`, `acquire_grant_for_copy`,
//! `release_grant_for_copy`).
//!
//! The shared entry only says *whether* the frame is in use (`GTF_reading`,
//! `GTF_writing`); the active entry counts *how many* pins of each kind exist, which
//! domain holds them and which frame was latched when the first pin was taken. The
//! guest cannot touch the active entry, so a guest rewriting its shared entry while
//! it is pinned changes nothing the hypervisor relies on.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU32, Ordering};

use spin::Mutex;

use crate::abi::{
    DomId, GrantEntryV1, GrantRef, GNTST_BAD_GNTREF, GNTST_BAD_HANDLE, GNTST_GENERAL_ERROR,
    GTF_PERMIT_ACCESS, GTF_READING, GTF_READONLY, GTF_SUB_PAGE, GTF_TYPE_MASK, GTF_WRITING,
};
use crate::shared::{combo, combo_domid, combo_flags, SharedGrantTable, TableError};

/// `GNTPIN_hstw_inc`: one writable host pin (map or copy destination).
pub const GNTPIN_HSTW_INC: u32 = 1;
/// `GNTPIN_hstw_mask`
pub const GNTPIN_HSTW_MASK: u32 = 0xFF;
/// `GNTPIN_hstr_inc`: one read-only host pin (map or copy source).
pub const GNTPIN_HSTR_INC: u32 = 1 << 8;
/// `GNTPIN_hstr_mask`
pub const GNTPIN_HSTR_MASK: u32 = 0xFF << 8;
/// `GNTPIN_devw_mask`: writable device pins (never taken here: no IOMMU; kept so the
/// checks read as Xen's).
pub const GNTPIN_DEVW_MASK: u32 = 0xFF << 16;
/// The bit of each 8-bit pin counter Xen refuses to reach (`0x80808080U`): at most
/// 127 pins of one kind, so a counter can never wrap.
const PIN_OVERFLOW: u32 = 0x8080_8080;
/// `_set_status_v1` gives up after this many lost compare-exchanges (a guest hammering
/// its own entry must not livelock the hypervisor).
const SET_STATUS_RETRIES: u32 = 4;

/// `struct active_grant_entry` (the parts v1 needs).
#[derive(Debug, Clone, Copy, Default)]
struct ActiveEntry {
    /// `pin`: packed `GNTPIN_*` counters.
    pin: u32,
    /// `domid`: the domain holding the pins.
    domid: DomId,
    /// `frame`: the granted frame, latched at the first pin.
    frame: u32,
}

/// A snapshot of one active entry, for inspection and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActiveEntryInfo {
    /// Read-only pins held (maps + copy sources).
    pub readers: u32,
    /// Writable pins held (maps + copy destinations).
    pub writers: u32,
    /// The pinning domain (meaningful while any pin is held).
    pub domid: DomId,
    /// The latched frame (meaningful while any pin is held).
    pub frame: u32,
}

/// One granting domain's active grant table, next to a view of its shared table.
#[derive(Debug)]
pub struct ActiveGrantTable {
    shared: SharedGrantTable,
    active: Box<[Mutex<ActiveEntry>]>,
}

impl ActiveGrantTable {
    /// Track `shared` (the granting domain's table); no entry starts pinned.
    pub fn new(shared: SharedGrantTable) -> Self {
        let mut v = Vec::with_capacity(shared.nr_entries() as usize);
        v.resize_with(shared.nr_entries() as usize, || {
            Mutex::new(ActiveEntry::default())
        });
        ActiveGrantTable {
            shared,
            active: v.into_boxed_slice(),
        }
    }

    /// Track `nr_entries` shared entries at `base`.
    ///
    /// # Safety
    /// As [`SharedGrantTable::from_raw`].
    pub unsafe fn from_raw(
        base: NonNull<GrantEntryV1>,
        nr_entries: u32,
    ) -> Result<Self, TableError> {
        // SAFETY: forwarded caller contract.
        let shared = unsafe { SharedGrantTable::from_raw(base, nr_entries) }?;
        Ok(Self::new(shared))
    }

    /// The granting domain's shared table.
    pub fn shared(&self) -> &SharedGrantTable {
        &self.shared
    }

    /// `nr_grant_entries()`
    pub fn nr_entries(&self) -> u32 {
        self.shared.nr_entries()
    }

    /// `GNTTABOP_map_grant_ref` (host map) of `gref` by `mapping_domid`: pin the entry
    /// and return the granted frame.
    ///
    /// Statuses, as Xen returns them: `GNTST_bad_gntref` for a ref past the table;
    /// `GNTST_general_error` if the entry is not `GTF_permit_access` for
    /// `mapping_domid` (or is `GTF_sub_page`), if a writable map is asked of a
    /// `GTF_readonly` grant, if another domain holds pins, if a pin counter would
    /// overflow, or if the guest keeps changing the entry under us.
    pub fn map_grant_ref(
        &self,
        gref: GrantRef,
        mapping_domid: DomId,
        readonly: bool,
    ) -> Result<u32, i16> {
        self.pin(gref, mapping_domid, readonly, true)
    }

    /// Drop one host pin of `gref` taken by [`Self::map_grant_ref`]
    /// (`unmap_common_complete`): `GTF_writing` is cleared when the last writable pin
    /// goes, `GTF_reading` when the last pin of any kind goes. `GNTST_bad_handle` if no
    /// such pin is held (Xen's answer to unmapping what is not mapped).
    pub fn unmap_grant_ref(&self, gref: GrantRef, readonly: bool) -> Result<(), i16> {
        self.unpin(gref, readonly)
    }

    /// `acquire_grant_for_copy()`: pin `gref` for one copy by `caller` and return the
    /// frame. Same checks as a map, except that `GTF_sub_page` is not refused.
    pub fn acquire_for_copy(
        &self,
        gref: GrantRef,
        caller: DomId,
        readonly: bool,
    ) -> Result<u32, i16> {
        self.pin(gref, caller, readonly, false)
    }

    /// `release_grant_for_copy()`: drop the pin [`Self::acquire_for_copy`] took.
    pub fn release_after_copy(&self, gref: GrantRef, readonly: bool) -> Result<(), i16> {
        self.unpin(gref, readonly)
    }

    /// The active state of `gref`, if in range.
    pub fn active_entry(&self, gref: GrantRef) -> Option<ActiveEntryInfo> {
        let a = *self.active.get(gref as usize)?.lock();
        Some(ActiveEntryInfo {
            readers: (a.pin & GNTPIN_HSTR_MASK) >> 8,
            writers: a.pin & GNTPIN_HSTW_MASK,
            domid: a.domid,
            frame: a.frame,
        })
    }

    /// Drop every pin `domid` holds in this table and clear the shared in-use bits
    /// (`gnttab_release_mappings` when the mapping domain dies). Returns how many
    /// entries were released. The caller must ensure `domid` runs no copy and has
    /// forgotten its mappings.
    pub fn release_all_pins_of(&self, domid: DomId) -> u32 {
        let mut released = 0;
        for (gref, act) in (0u32..).zip(self.active.iter()) {
            let mut a = act.lock();
            if a.pin != 0 && a.domid == domid {
                a.pin = 0;
                self.shared.clear_flags(gref, GTF_READING | GTF_WRITING);
                released += 1;
            }
        }
        released
    }

    /// Take one host pin (read-only or writable) of `gref` for `ldom`.
    fn pin(&self, gref: GrantRef, ldom: DomId, readonly: bool, mapflag: bool) -> Result<u32, i16> {
        let (act, hdr, frame) = self.lookup(gref)?;
        let mut act = act.lock();
        pin_locked(&mut act, hdr, frame, ldom, readonly, mapflag)
    }

    /// Drop one host pin of `gref`, clearing the shared bits that no longer hold.
    fn unpin(&self, gref: GrantRef, readonly: bool) -> Result<(), i16> {
        let act = self.active.get(gref as usize).ok_or(GNTST_BAD_HANDLE)?;
        let mut act = act.lock();
        self.unpin_locked(&mut act, gref, readonly)
    }

    /// `acquire_grant_for_copy()`, `copy(frame)`, `release_grant_for_copy()` with one
    /// hold of the active entry's lock: the pin and the shared `GTF_reading` /
    /// `GTF_writing` bits are exactly what [`Self::acquire_for_copy`] and
    /// [`Self::release_after_copy`] around `copy` produce, for one lock round trip
    /// instead of two (the batched copy's hot path). `copy` may run several copies
    /// from / to the frame (consecutive ops of one batch naming the same grant, as
    /// Xen's `gnttab_copy_buf_valid` reuses a claimed buffer). It must not touch this
    /// table: the entry's lock is held while it runs.
    #[inline]
    pub fn with_copy_pin<R>(
        &self,
        gref: GrantRef,
        caller: DomId,
        readonly: bool,
        copy: impl FnOnce(u32) -> R,
    ) -> Result<R, i16> {
        let (act, hdr, frame) = self.lookup(gref)?;
        let mut act = act.lock();
        let frame = pin_locked(&mut act, hdr, frame, caller, readonly, false)?;
        let r = copy(frame);
        // Cannot fail: the pin was taken just above, under the same lock hold.
        let _ = self.unpin_locked(&mut act, gref, readonly);
        Ok(r)
    }

    /// The active entry, shared header word and frame word of `gref`.
    #[inline(always)]
    fn lookup(&self, gref: GrantRef) -> Result<(&Mutex<ActiveEntry>, &AtomicU32, &AtomicU32), i16> {
        match (
            self.active.get(gref as usize),
            self.shared.header(gref),
            self.shared.frame(gref),
        ) {
            (Some(a), Some(h), Some(f)) => Ok((a, h, f)),
            _ => Err(GNTST_BAD_GNTREF),
        }
    }

    /// `unpin` with the active entry already locked.
    #[inline(always)]
    fn unpin_locked(
        &self,
        act: &mut ActiveEntry,
        gref: GrantRef,
        readonly: bool,
    ) -> Result<(), i16> {
        let (inc, mask) = if readonly {
            (GNTPIN_HSTR_INC, GNTPIN_HSTR_MASK)
        } else {
            (GNTPIN_HSTW_INC, GNTPIN_HSTW_MASK)
        };
        if act.pin & mask == 0 {
            return Err(GNTST_BAD_HANDLE);
        }
        act.pin -= inc;
        let mut clear = 0;
        if !readonly && act.pin & (GNTPIN_HSTW_MASK | GNTPIN_DEVW_MASK) == 0 {
            clear |= GTF_WRITING;
        }
        if act.pin == 0 {
            clear |= GTF_READING;
        }
        if clear != 0 {
            // Cleared under the active-entry lock, so a concurrent first pin cannot
            // set the bits before we clear them.
            self.shared.clear_flags(gref, clear);
        }
        Ok(())
    }
}

/// `pin` with the active entry already locked: check, set the shared status bits on
/// the first (writable) pin, latch the frame, count the pin.
#[inline(always)]
fn pin_locked(
    act: &mut ActiveEntry,
    hdr: &AtomicU32,
    frame: &AtomicU32,
    ldom: DomId,
    readonly: bool,
    mapflag: bool,
) -> Result<u32, i16> {
    // Already pinned: only by the same domain, and never past 127 pins of a kind.
    if act.pin != 0 && (act.domid != ldom || act.pin & PIN_OVERFLOW != 0) {
        return Err(GNTST_GENERAL_ERROR);
    }
    // The shared flags only need touching for the first pin, or for the first
    // writable pin of an entry pinned read-only so far.
    if act.pin == 0 || (!readonly && act.pin & (GNTPIN_HSTW_MASK | GNTPIN_DEVW_MASK) == 0) {
        set_status_v1(hdr, act.pin != 0, readonly, mapflag, ldom)?;
        if act.pin == 0 {
            // The Acquire compare-exchange that saw GTF_permit_access orders this
            // load after the guest's frame store (which preceded its barrier).
            act.frame = frame.load(Ordering::Relaxed);
            act.domid = ldom;
        }
    }
    act.pin += if readonly {
        GNTPIN_HSTR_INC
    } else {
        GNTPIN_HSTW_INC
    };
    Ok(act.frame)
}

/// `_set_status_v1`: check the shared entry (type, domid — unless already pinned —
/// and read-only-ness) and set `GTF_reading` (and `GTF_writing`) with one
/// compare-exchange on the flags+domid word, so the guest cannot revoke or retarget
/// the grant between our check and our update.
#[inline(always)]
fn set_status_v1(
    hdr: &AtomicU32,
    pinned: bool,
    readonly: bool,
    mapflag: bool,
    ldom: DomId,
) -> Result<(), i16> {
    let mask = GTF_TYPE_MASK | if mapflag { GTF_SUB_PAGE } else { 0 };
    let mut cur = hdr.load(Ordering::Acquire);
    let mut retries = 0;
    loop {
        let flags = combo_flags(cur);
        if !pinned && (flags & mask != GTF_PERMIT_ACCESS || combo_domid(cur) != ldom) {
            return Err(GNTST_GENERAL_ERROR);
        }
        let mut new = flags | GTF_READING;
        if !readonly {
            if flags & GTF_READONLY != 0 {
                return Err(GNTST_GENERAL_ERROR);
            }
            new |= GTF_WRITING;
        }
        match hdr.compare_exchange(
            cur,
            combo(new, combo_domid(cur)),
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => return Ok(()),
            Err(prev) => {
                if retries == SET_STATUS_RETRIES {
                    return Err(GNTST_GENERAL_ERROR);
                }
                retries += 1;
                cur = prev;
            }
        }
    }
}
