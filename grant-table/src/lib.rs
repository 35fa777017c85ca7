//! Xen grant tables, version 1, in shared memory.
//!
//! # The model, for someone who knows Xen
//!
//! Each domain owns a **shared grant table**: an array of `grant_entry_v1_t`
//! ([`GrantEntryV1`]) in memory the domain and the hypervisor both map (here a memfd
//! region; in a PV kernel, the frames from `GNTTABOP_setup_table`). The crate never
//! reads or writes that array as plain structs: [`SharedGrantTable`] exposes the two
//! 32-bit words of each entry as atomics. The first word is Xen's `union grant_combo`
//! (`flags` in the low half, `domid` in the high half on little-endian machines), so
//! type, permission and domid are checked and updated with one compare-exchange,
//! exactly as `_set_status_v1` does.
//!
//! * **Guest side** — [`GuestGrantTable`], what Linux's `gnttab_*` calls do:
//!   allocate a ref from an O(1) free list that never yields one of the
//!   [`GNTTAB_NR_RESERVED_ENTRIES`]; grant by writing `domid` and `frame`, a write
//!   barrier, then `flags = GTF_permit_access [| GTF_readonly]`; revoke only by a
//!   compare-exchange that fails when `GTF_reading`/`GTF_writing` is set, so a revoke
//!   can never slip past a mapping ([`GrantError::InUse`] is the "try again later" of
//!   `gnttab_end_foreign_access_ref`).
//! * **Hypervisor side** — [`ActiveGrantTable`], one per granting domain: Xen's
//!   active grant entries, in memory only the hypervisor sees, with the packed
//!   `GNTPIN_*` pin counters, the pinning domid and the frame latched at the first pin.
//!   `map_grant_ref` / `unmap_grant_ref` and `acquire_for_copy` / `release_after_copy`
//!   follow `xen/common/grant_table.c`: the first pin (or first writable pin) checks
//!   the shared entry and sets `GTF_reading` (`| GTF_writing`); the last pin of a kind
//!   clears its bit; refusals carry the `GNTST_*` code Xen returns for that case.
//! * **Copies** — [`gnttab_copy`] is `GNTTABOP_copy` over a [`GrantWorld`] (the
//!   hypervisor's set of domains: each [`GrantDomain`] has an active table and frames).
//!   A [`GrantCopier`] keeps, like Xen's `gnttab_copy_buf` pair, the last source and
//!   destination pins and reuses them for the next op when it names the same grant,
//!   so a batch costs one pin per distinct grant, not per op, and never allocates.
//!   [`gnttab_map_grant_ref`] / [`gnttab_unmap_grant_ref`] are the world-level map.
//!
//! Status codes are raw `i16` in the hypercall-shaped functions (they land in
//! `status` fields); [`GntSt`] names them. Guest-side errors are typed ([`GrantError`]).
//!
//! # Deliberate differences from Xen
//! * Only v1 tables, host mappings (a device map counts as a host pin: there is no
//!   IOMMU), no transitive grants, no `GNTTABOP_transfer`.
//! * Unmapping is by `(ref, readonly)` rather than by maptrack handle;
//!   [`GrantMapping`] plays the handle's role at the world level.
//! * In `GNTTABOP_copy`, the rule that only `DOMID_SELF` may name a frame is checked
//!   on every op; Xen checks it only when the cached domain changes.
//!
//! `no_std` + `alloc` unless the default `std` feature is on (it adds nothing to the
//! core; locks are `spin`, held for a handful of instructions).
#![cfg_attr(not(feature = "std"), no_std)]
#![deny(unsafe_op_in_unsafe_fn)]
extern crate alloc;

mod abi;
mod active;
mod copy;
mod freelist;
mod guest;
mod shared;

pub use abi::*;
pub use active::{
    ActiveEntryInfo, ActiveGrantTable, GNTPIN_DEVW_MASK, GNTPIN_HSTR_INC, GNTPIN_HSTR_MASK,
    GNTPIN_HSTW_INC, GNTPIN_HSTW_MASK,
};
pub use copy::{
    gnttab_copy, gnttab_map_grant_ref, gnttab_unmap_grant_ref, GrantCopier, GrantDomain,
    GrantMapping, GrantWorld,
};
pub use guest::{GrantError, GuestGrantTable};
pub use shared::{combo, combo_domid, combo_flags, SharedGrantTable, TableError};

#[cfg(test)]
mod tests {
    use super::*;

    /// Xen's values, spelled out so a changed constant fails here.
    #[test]
    fn constants_have_xens_values() {
        assert_eq!(
            [
                GTF_INVALID,
                GTF_PERMIT_ACCESS,
                GTF_ACCEPT_TRANSFER,
                GTF_TYPE_MASK
            ],
            [0, 1, 2, 3]
        );
        assert_eq!(
            [GTF_READONLY, GTF_READING, GTF_WRITING, GTF_SUB_PAGE],
            [0x4, 0x8, 0x10, 0x100]
        );
        assert_eq!(
            [
                GNTST_OKAY,
                GNTST_GENERAL_ERROR,
                GNTST_BAD_DOMAIN,
                GNTST_BAD_GNTREF,
                GNTST_BAD_HANDLE,
                GNTST_BAD_VIRT_ADDR,
                GNTST_BAD_DEV_ADDR,
                GNTST_NO_DEVICE_SPACE,
                GNTST_PERMISSION_DENIED,
                GNTST_BAD_PAGE,
                GNTST_BAD_COPY_ARG,
                GNTST_ADDRESS_TOO_BIG,
                GNTST_EAGAIN,
                GNTST_NO_SPACE
            ],
            [0, -1, -2, -3, -4, -5, -6, -7, -8, -9, -10, -11, -12, -13]
        );
        assert_eq!([GNTCOPY_SOURCE_GREF, GNTCOPY_DEST_GREF], [1, 2]);
        assert_eq!(
            [GNTMAP_DEVICE_MAP, GNTMAP_HOST_MAP, GNTMAP_READONLY],
            [1, 2, 4]
        );
        assert_eq!(GNTTAB_NR_RESERVED_ENTRIES, 8);
        assert_eq!(DOMID_SELF, 0x7FF0);
        assert_eq!(PAGE_SIZE, 4096);
    }
}
