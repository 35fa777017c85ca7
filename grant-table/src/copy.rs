//! `GNTTABOP_copy` and the world-level map/unmap: operations that need more than one
//! domain's grant table, namely the frames behind the grants.
//!
//! The hypervisor (the `hv` crate) implements [`GrantWorld`]; a batch is served by a
//! [`GrantCopier`], which keeps — like Xen's pair of `struct gnttab_copy_buf` — the
//! domains and pins of the previous op and reuses them when the next op names the
//! same domain and grant, so a batch touching one ring page or buffer pays for one
//! pin, not one per op. Everything still held is released when the copier drops.

use alloc::sync::Arc;
use core::ptr::NonNull;

use crate::abi::{
    DomId, GnttabCopy, GnttabCopyPtr, GrantRef, DOMID_SELF, GNTCOPY_DEST_GREF, GNTCOPY_SOURCE_GREF,
    GNTMAP_DEVICE_MAP, GNTMAP_HOST_MAP, GNTMAP_READONLY, GNTST_BAD_COPY_ARG, GNTST_BAD_DOMAIN,
    GNTST_BAD_GNTREF, GNTST_BAD_PAGE, GNTST_OKAY, GNTST_PERMISSION_DENIED, PAGE_SIZE,
};
use crate::active::ActiveGrantTable;

/// A live domain as the grant code sees it: its active grant table and its memory.
/// A handle keeps the domain alive, as Xen's `rcu_lock_domain` does.
///
/// # Safety
/// Implementors promise that a pointer returned by [`GrantDomain::frame_ptr`] is valid
/// for reads and writes of [`PAGE_SIZE`] bytes for as long as the handle it came from
/// lives. Other domains may access that memory concurrently (it is guest memory); the
/// grant code treats its contents as untrusted bytes.
pub unsafe trait GrantDomain {
    /// The domain's active grant table (over its shared grant table).
    fn active_grant_table(&self) -> &ActiveGrantTable;
    /// The 4 KiB frame `gfn` of the domain's memory, or `None` if it has no such frame
    /// (`get_paged_frame` failing: `GNTST_bad_page`).
    fn frame_ptr(&self, gfn: u64) -> Option<NonNull<u8>>;
}

// SAFETY: forwards to `T`, whose guarantees hold for as long as the borrow does.
unsafe impl<T: GrantDomain + ?Sized> GrantDomain for &T {
    fn active_grant_table(&self) -> &ActiveGrantTable {
        (**self).active_grant_table()
    }
    fn frame_ptr(&self, gfn: u64) -> Option<NonNull<u8>> {
        (**self).frame_ptr(gfn)
    }
}

// SAFETY: forwards to `T`; the Arc keeps `T` (and so its memory) alive.
unsafe impl<T: GrantDomain + ?Sized> GrantDomain for Arc<T> {
    fn active_grant_table(&self) -> &ActiveGrantTable {
        (**self).active_grant_table()
    }
    fn frame_ptr(&self, gfn: u64) -> Option<NonNull<u8>> {
        (**self).frame_ptr(gfn)
    }
}

/// The set of domains, implemented by the hypervisor.
pub trait GrantWorld {
    /// A handle on a live domain (e.g. `&Domain` or `Arc<Domain>`).
    type Domain<'a>: GrantDomain
    where
        Self: 'a;
    /// `rcu_lock_domain_by_id`: the domain `domid`, if it exists. Never called with
    /// `DOMID_SELF`: callers resolve it to the caller first where Xen allows it.
    fn domain(&self, domid: DomId) -> Option<Self::Domain<'_>>;
}

/// What one side of a copy currently holds.
#[derive(Debug, Clone, Copy)]
struct Claim {
    /// `Some(gref)` when a grant is pinned; `None` for a local gmfn.
    gref: Option<GrantRef>,
    /// The gmfn, for a local frame.
    gmfn: u64,
    /// The frame's first byte.
    ptr: NonNull<u8>,
}

/// One side's cached state (`struct gnttab_copy_buf`).
struct CopyBuf<D> {
    /// The domid as the op named it (possibly `DOMID_SELF`) and the domain handle.
    dom: Option<(DomId, D)>,
    claim: Option<Claim>,
    /// Source sides pin read-only, destination sides writable.
    readonly: bool,
}

impl<D: GrantDomain> CopyBuf<D> {
    fn new(readonly: bool) -> Self {
        CopyBuf {
            dom: None,
            claim: None,
            readonly,
        }
    }

    /// `gnttab_copy_release_buf`: drop the pin, if any.
    fn release(&mut self) {
        if let (Some(claim), Some((_, d))) = (self.claim.take(), self.dom.as_ref()) {
            if let Some(gref) = claim.gref {
                // Cannot fail: this side holds exactly that pin.
                let _ = d
                    .active_grant_table()
                    .release_after_copy(gref, self.readonly);
            }
        }
    }

    /// `gnttab_copy_claim_buf`, reusing the current claim when it is the same grant or
    /// frame (`gnttab_copy_buf_valid`). Returns the frame's first byte.
    fn claim(
        &mut self,
        caller: DomId,
        is_gref: bool,
        u: &GnttabCopyPtr,
    ) -> Result<NonNull<u8>, i16> {
        let want_gref = if is_gref { Some(u.gref()) } else { None };
        if let Some(c) = self.claim {
            if c.gref == want_gref && (is_gref || c.gmfn == u.gmfn()) {
                return Ok(c.ptr);
            }
        }
        self.release();
        let d = match self.dom.as_ref() {
            Some((_, d)) => d,
            None => return Err(GNTST_BAD_DOMAIN),
        };
        let claim = match want_gref {
            Some(gref) => {
                let table = d.active_grant_table();
                let frame = table.acquire_for_copy(gref, caller, self.readonly)?;
                match d.frame_ptr(u64::from(frame)) {
                    Some(ptr) => Claim {
                        gref: Some(gref),
                        gmfn: 0,
                        ptr,
                    },
                    None => {
                        // Cannot fail: we just took this pin.
                        let _ = table.release_after_copy(gref, self.readonly);
                        return Err(GNTST_BAD_PAGE);
                    }
                }
            }
            None => {
                let ptr = d.frame_ptr(u.gmfn()).ok_or(GNTST_BAD_PAGE)?;
                Claim {
                    gref: None,
                    gmfn: u.gmfn(),
                    ptr,
                }
            }
        };
        self.claim = Some(claim);
        Ok(claim.ptr)
    }
}

/// `gnttab_copy_lock_domain`: only `DOMID_SELF` may name a frame directly (a numeric
/// domid, even the caller's own, is refused as Xen does); then find the domain unless
/// this side already holds it. Unlike Xen, the `DOMID_SELF` rule is checked on every
/// op, not only when the cached domain changes, so a gmfn op that follows a grant op
/// of the same foreign domid cannot reach that domain's memory.
fn lock_domain<'w, W: GrantWorld + ?Sized>(
    buf: &mut CopyBuf<W::Domain<'w>>,
    world: &'w W,
    caller: DomId,
    domid: DomId,
    is_gref: bool,
) -> Result<(), i16> {
    if !is_gref && domid != DOMID_SELF {
        return Err(GNTST_PERMISSION_DENIED);
    }
    if matches!(buf.dom, Some((cached, _)) if cached == domid) {
        return Ok(());
    }
    buf.release();
    buf.dom = None;
    let real = if domid == DOMID_SELF { caller } else { domid };
    let d = world.domain(real).ok_or(GNTST_BAD_DOMAIN)?;
    buf.dom = Some((domid, d));
    Ok(())
}

/// Serves a batch of grant copies for `caller`; see the module doc. Drop it to
/// release the pins it still holds (do so before reporting the batch done).
pub struct GrantCopier<'w, W: GrantWorld + ?Sized + 'w> {
    world: &'w W,
    caller: DomId,
    src: CopyBuf<W::Domain<'w>>,
    dest: CopyBuf<W::Domain<'w>>,
}

impl<'w, W: GrantWorld + ?Sized + 'w> GrantCopier<'w, W> {
    /// A copier acting for domain `caller` (the domain that issued `GNTTABOP_copy`).
    pub fn new(world: &'w W, caller: DomId) -> Self {
        GrantCopier {
            world,
            caller,
            src: CopyBuf::new(true),
            dest: CopyBuf::new(false),
        }
    }

    /// `gnttab_copy_one`: perform one op and return its `GNTST_*` status.
    ///
    /// Checks, in Xen's order: a side naming a frame must say `DOMID_SELF`
    /// (`GNTST_permission_denied`); each domain must exist (`GNTST_bad_domain`); each
    /// grant is pinned as by [`ActiveGrantTable::acquire_for_copy`] (`GNTST_bad_gntref`,
    /// or `GNTST_general_error`, e.g. for a read-only grant used as destination) and
    /// its frame must exist (`GNTST_bad_page`); finally `offset + len` must fit in one page on
    /// both sides (`GNTST_bad_copy_arg`). A failed op drops both sides' pins.
    pub fn copy(&mut self, op: &GnttabCopy) -> i16 {
        match self.try_copy(op) {
            Ok(()) => GNTST_OKAY,
            Err(rc) => {
                self.src.release();
                self.dest.release();
                rc
            }
        }
    }

    fn try_copy(&mut self, op: &GnttabCopy) -> Result<(), i16> {
        let src_gref = op.flags & GNTCOPY_SOURCE_GREF != 0;
        let dst_gref = op.flags & GNTCOPY_DEST_GREF != 0;
        lock_domain(
            &mut self.src,
            self.world,
            self.caller,
            op.source.domid,
            src_gref,
        )?;
        lock_domain(
            &mut self.dest,
            self.world,
            self.caller,
            op.dest.domid,
            dst_gref,
        )?;
        let src = self.src.claim(self.caller, src_gref, &op.source)?;
        let dst = self.dest.claim(self.caller, dst_gref, &op.dest)?;
        let len = usize::from(op.len);
        let (so, dof) = (usize::from(op.source.offset), usize::from(op.dest.offset));
        if so + len > PAGE_SIZE || dof + len > PAGE_SIZE {
            return Err(GNTST_BAD_COPY_ARG);
        }
        // SAFETY: both frames are PAGE_SIZE bytes valid while their domain handles
        // (held in self) live (GrantDomain contract), and the ranges were just checked
        // to lie inside them.
        unsafe { copy_bytes(src.as_ptr().add(so), dst.as_ptr().add(dof), len) };
        Ok(())
    }

    /// One copy between grant `gref` of `domid` and a buffer of the caller that is not
    /// in domain memory (netback's own buffers): `to_foreign` copies `local` into the
    /// granted page (pinned writable), otherwise the granted page (pinned read-only)
    /// into `local`. Same statuses as [`Self::copy`] for the grant side.
    ///
    /// # Safety
    /// `local` must be valid for reads (`to_foreign`) or writes (otherwise) of `len`
    /// bytes for the duration of the call.
    pub unsafe fn copy_local(
        &mut self,
        domid: DomId,
        gref: GrantRef,
        offset: u16,
        len: u16,
        local: *mut u8,
        to_foreign: bool,
    ) -> i16 {
        let (world, caller) = (self.world, self.caller);
        let side = if to_foreign {
            &mut self.dest
        } else {
            &mut self.src
        };
        let r = (|| {
            lock_domain(side, world, caller, domid, true)?;
            let page = side.claim(caller, true, &GnttabCopyPtr::from_gref(gref, domid, offset))?;
            let (off, len) = (usize::from(offset), usize::from(len));
            if off + len > PAGE_SIZE {
                return Err(GNTST_BAD_COPY_ARG);
            }
            // SAFETY: the page is valid for PAGE_SIZE bytes while the handle lives and
            // off + len fits; `local` is valid for len bytes by the caller's contract.
            unsafe {
                let foreign = page.as_ptr().add(off);
                if to_foreign {
                    copy_bytes(local, foreign, len);
                } else {
                    copy_bytes(foreign, local, len);
                }
            }
            Ok(())
        })();
        match r {
            Ok(()) => GNTST_OKAY,
            Err(rc) => {
                side.release();
                rc
            }
        }
    }
}

impl<'w, W: GrantWorld + ?Sized + 'w> Drop for GrantCopier<'w, W> {
    fn drop(&mut self) {
        self.src.release();
        self.dest.release();
    }
}

/// Copy `len` bytes, with memmove semantics when the ranges overlap (source and
/// destination may be the same frame).
///
/// # Safety
/// `src` valid for reads and `dst` for writes of `len` bytes.
#[inline]
unsafe fn copy_bytes(src: *const u8, dst: *mut u8, len: usize) {
    let (s, d) = (src as usize, dst as usize);
    if s < d + len && d < s + len {
        // SAFETY: caller's contract; `copy` allows overlap.
        unsafe { core::ptr::copy(src, dst, len) }
    } else {
        // SAFETY: caller's contract; the ranges were just shown disjoint.
        unsafe { core::ptr::copy_nonoverlapping(src, dst, len) }
    }
}

/// `GNTTABOP_copy` issued by `caller`: every op gets its own status, a failed op does
/// not stop the batch, and no input makes it panic. No allocation.
pub fn gnttab_copy<W: GrantWorld + ?Sized>(world: &W, caller: DomId, ops: &mut [GnttabCopy]) {
    let mut copier = GrantCopier::new(world, caller);
    for op in ops.iter_mut() {
        op.status = copier.copy(op);
    }
}

/// A grant mapped by [`gnttab_map_grant_ref`]; hand it back to
/// [`gnttab_unmap_grant_ref`]. It plays the role of Xen's grant handle.
#[derive(Debug)]
pub struct GrantMapping {
    /// The granting domain.
    pub domid: DomId,
    /// The mapped ref.
    pub gref: GrantRef,
    /// Whether the mapping is read-only.
    pub readonly: bool,
    /// The granted frame (a gfn of `domid`).
    pub frame: u32,
    /// The frame's first byte in the hypervisor's view of `domid`'s memory. Valid only
    /// while `domid` lives; the hypervisor must unmap before tearing memory down.
    pub ptr: NonNull<u8>,
}

/// `GNTTABOP_map_grant_ref` by `caller` of grant `gref` of `domid`, with `GNTMAP_*`
/// `flags`. In Xen's order: neither `GNTMAP_host_map` nor `GNTMAP_device_map` →
/// `GNTST_bad_gntref`; no such domain (`DOMID_SELF` included, as Xen's map looks the
/// domain up by id) → `GNTST_bad_domain`; then [`ActiveGrantTable::map_grant_ref`];
/// a frame the domain does not have → `GNTST_bad_page` (the pin is dropped again).
/// Any accepted map counts as one host pin (there is no IOMMU here).
pub fn gnttab_map_grant_ref<W: GrantWorld + ?Sized>(
    world: &W,
    caller: DomId,
    domid: DomId,
    gref: GrantRef,
    flags: u32,
) -> Result<GrantMapping, i16> {
    if flags & (GNTMAP_HOST_MAP | GNTMAP_DEVICE_MAP) == 0 {
        return Err(GNTST_BAD_GNTREF);
    }
    let readonly = flags & GNTMAP_READONLY != 0;
    let d = world.domain(domid).ok_or(GNTST_BAD_DOMAIN)?;
    let table = d.active_grant_table();
    let frame = table.map_grant_ref(gref, caller, readonly)?;
    match d.frame_ptr(u64::from(frame)) {
        Some(ptr) => Ok(GrantMapping {
            domid,
            gref,
            readonly,
            frame,
            ptr,
        }),
        None => {
            // Cannot fail: we just took this pin.
            let _ = table.unmap_grant_ref(gref, readonly);
            Err(GNTST_BAD_PAGE)
        }
    }
}

/// `GNTTABOP_unmap_grant_ref` of a mapping made by [`gnttab_map_grant_ref`].
/// `GNTST_bad_domain` if the granting domain is gone (its table went with it).
pub fn gnttab_unmap_grant_ref<W: GrantWorld + ?Sized>(
    world: &W,
    mapping: GrantMapping,
) -> Result<(), i16> {
    let d = world.domain(mapping.domid).ok_or(GNTST_BAD_DOMAIN)?;
    d.active_grant_table()
        .unmap_grant_ref(mapping.gref, mapping.readonly)
}
