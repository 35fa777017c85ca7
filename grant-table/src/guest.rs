//! The granting guest's side: allocate grant refs, grant a frame to another domain,
//! revoke the grant. Mirrors Linux's `gnttab_grant_foreign_access*` and
//! `gnttab_end_foreign_access*` for v1 tables.

use core::ptr::NonNull;
use core::sync::atomic::{fence, Ordering};

use spin::Mutex;

use crate::abi::{
    DomId, GrantEntryV1, GrantRef, GTF_INVALID, GTF_PERMIT_ACCESS, GTF_READING, GTF_READONLY,
    GTF_TYPE_MASK, GTF_WRITING,
};
use crate::freelist::FreeList;
use crate::shared::{combo, combo_domid, combo_flags, SharedGrantTable, TableError};

/// Why a guest-side grant operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    /// Every non-reserved ref is in use (Xen's `GNTST_no_space`, Linux's `-ENOSPC`).
    #[error("no free grant reference (GNTST_no_space): end some grants first")]
    NoSpace,
    /// The ref is out of range, reserved, or not allocated by this table.
    #[error("grant ref {0} is out of range, reserved, or not allocated here")]
    BadRef(GrantRef),
    /// The remote domain has the frame mapped or a copy in flight (`GTF_reading` or
    /// `GTF_writing` set): the grant cannot be revoked yet.
    #[error("grant ref {0} is still in use by the remote domain (GTF_reading/GTF_writing); retry after it unmaps")]
    InUse(GrantRef),
    /// The entry still grants access; end it before re-granting or freeing the ref.
    #[error("grant ref {0} still grants access: end the grant first")]
    StillGranted(GrantRef),
}

/// A guest's own grant table plus its reference allocator.
///
/// All methods take `&self`: the allocator sits behind a spin lock held for a few
/// instructions, and the entries are written with atomics, so one table can be shared
/// by every queue of a driver.
#[derive(Debug)]
pub struct GuestGrantTable {
    table: SharedGrantTable,
    free: Mutex<FreeList>,
}

impl GuestGrantTable {
    /// Manage `table`. Every non-reserved ref is taken to be free (the table should be
    /// all `GTF_invalid`, as a fresh one is).
    pub fn new(table: SharedGrantTable) -> Self {
        let free = Mutex::new(FreeList::new(table.nr_entries()));
        GuestGrantTable { table, free }
    }

    /// Build on `nr_entries` entries at `base`.
    ///
    /// # Safety
    /// As [`SharedGrantTable::from_raw`].
    pub unsafe fn from_raw(
        base: NonNull<GrantEntryV1>,
        nr_entries: u32,
    ) -> Result<Self, TableError> {
        // SAFETY: forwarded caller contract.
        let table = unsafe { SharedGrantTable::from_raw(base, nr_entries) }?;
        Ok(Self::new(table))
    }

    /// The shared table this guest writes.
    pub fn table(&self) -> &SharedGrantTable {
        &self.table
    }

    /// How many refs the allocator can still hand out.
    pub fn free_count(&self) -> u32 {
        self.free.lock().free_count()
    }

    /// `gnttab_claim_grant_reference`: take a free ref (never a reserved one).
    pub fn alloc_ref(&self) -> Result<GrantRef, GrantError> {
        self.free.lock().alloc().ok_or(GrantError::NoSpace)
    }

    /// `gnttab_free_grant_reference`: give back a ref whose grant has ended.
    pub fn free_ref(&self, gref: GrantRef) -> Result<(), GrantError> {
        let raw = self
            .table
            .header(gref)
            .ok_or(GrantError::BadRef(gref))?
            .load(Ordering::Acquire);
        if combo_flags(raw) & (GTF_TYPE_MASK | GTF_READING | GTF_WRITING) != 0 {
            return Err(GrantError::StillGranted(gref));
        }
        if self.free.lock().free(gref) {
            Ok(())
        } else {
            Err(GrantError::BadRef(gref))
        }
    }

    /// `gnttab_grant_foreign_access_ref`: grant `domid` access to `frame` through the
    /// already allocated `gref`.
    ///
    /// Writes domid and frame first, then a write barrier, then the flags: the
    /// hypervisor acts on an entry as soon as it sees `GTF_permit_access`, so the rest
    /// must be visible by then.
    pub fn grant_foreign_access_ref(
        &self,
        gref: GrantRef,
        domid: DomId,
        frame: u32,
        readonly: bool,
    ) -> Result<(), GrantError> {
        if !self.free.lock().is_allocated(gref) {
            return Err(GrantError::BadRef(gref));
        }
        let (hdr, fr) = match (self.table.header(gref), self.table.frame(gref)) {
            (Some(h), Some(f)) => (h, f),
            _ => return Err(GrantError::BadRef(gref)),
        };
        let cur = hdr.load(Ordering::Acquire);
        if combo_flags(cur) & (GTF_TYPE_MASK | GTF_READING | GTF_WRITING) != 0 {
            return Err(GrantError::StillGranted(gref));
        }
        // While the type is GTF_invalid and nothing is pinned, the hypervisor never
        // writes this entry, so plain stores cannot lose one of its updates.
        hdr.store(combo(GTF_INVALID, domid), Ordering::Relaxed);
        fr.store(frame, Ordering::Relaxed);
        // wmb(): domid and frame before the flags that make them live.
        fence(Ordering::Release);
        let flags = GTF_PERMIT_ACCESS | if readonly { GTF_READONLY } else { 0 };
        hdr.store(combo(flags, domid), Ordering::Relaxed);
        Ok(())
    }

    /// `gnttab_grant_foreign_access`: allocate a ref and grant `domid` access to
    /// `frame` through it.
    pub fn grant_foreign_access(
        &self,
        domid: DomId,
        frame: u32,
        readonly: bool,
    ) -> Result<GrantRef, GrantError> {
        let gref = self.alloc_ref()?;
        if let Err(e) = self.grant_foreign_access_ref(gref, domid, frame, readonly) {
            // A fresh ref is invalid, so this cannot happen unless the table was
            // handed over dirty; give the ref back rather than leak it.
            let _ = self.free.lock().free(gref);
            return Err(e);
        }
        Ok(gref)
    }

    /// `gnttab_end_foreign_access_ref`: revoke the grant unless the remote domain is
    /// using it. The flags are cleared only by a compare-exchange that fails if the
    /// hypervisor set `GTF_reading`/`GTF_writing` in the meantime, so a revoke and a
    /// map can never both succeed. The ref stays allocated.
    pub fn end_foreign_access_ref(&self, gref: GrantRef) -> Result<(), GrantError> {
        if !self.free.lock().is_allocated(gref) {
            return Err(GrantError::BadRef(gref));
        }
        let hdr = self.table.header(gref).ok_or(GrantError::BadRef(gref))?;
        let mut cur = hdr.load(Ordering::Acquire);
        loop {
            if combo_flags(cur) & (GTF_READING | GTF_WRITING) != 0 {
                return Err(GrantError::InUse(gref));
            }
            let new = combo(GTF_INVALID, combo_domid(cur));
            match hdr.compare_exchange_weak(cur, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Ok(()),
                Err(now) => cur = now,
            }
        }
    }

    /// `gnttab_end_foreign_access` (without Linux's deferred retry): revoke the grant
    /// and free the ref. Refuses with [`GrantError::InUse`] while mapped or copied.
    pub fn end_foreign_access(&self, gref: GrantRef) -> Result<(), GrantError> {
        self.end_foreign_access_ref(gref)?;
        if self.free.lock().free(gref) {
            Ok(())
        } else {
            // Another thread ended and freed the same ref concurrently.
            Err(GrantError::BadRef(gref))
        }
    }

    /// `gnttab_query_foreign_access`: the `GTF_reading | GTF_writing` bits currently
    /// set (0 means the remote domain holds no pin).
    pub fn query_foreign_access(&self, gref: GrantRef) -> Result<u16, GrantError> {
        let hdr = self.table.header(gref).ok_or(GrantError::BadRef(gref))?;
        Ok(combo_flags(hdr.load(Ordering::Acquire)) & (GTF_READING | GTF_WRITING))
    }
}
