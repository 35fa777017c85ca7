//! The grant-table ABI of Xen's `xen/include/public/grant_table.h`, byte for byte.
//!
//! Only version 1 entries (`grant_entry_v1_t`) are modelled. Every item names the Xen
//! identifier it mirrors so a reader can grep for either spelling.

/// `domid_t`: a domain identifier.
pub type DomId = u16;

/// `grant_ref_t`: an index into the granting domain's grant table.
pub type GrantRef = u32;

/// `PAGE_SIZE` on x86: grant copies and mappings work on 4 KiB frames.
pub const PAGE_SIZE: usize = 4096;

/// `DOMID_SELF`: "the calling domain" in hypercall arguments.
pub const DOMID_SELF: DomId = 0x7FF0;

/// `GNTTAB_NR_RESERVED_ENTRIES`: refs 0..8 belong to the toolstack (console, xenstore)
/// and are never handed out by a guest's allocator.
pub const GNTTAB_NR_RESERVED_ENTRIES: u32 = 8;

/// `grant_entry_v1_t`: one entry of a version-1 shared grant table (8 bytes).
///
/// The granting guest writes it; the hypervisor only ever sets and clears
/// `GTF_reading` / `GTF_writing` in `flags`. In this crate the entry is never read or
/// written through this struct in shared memory (see [`crate::SharedGrantTable`],
/// which uses atomics); the struct exists to pin the layout and for snapshots.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GrantEntryV1 {
    /// `flags`: `GTF_*` type and permission bits.
    pub flags: u16,
    /// `domid`: the domain allowed to access the frame.
    pub domid: DomId,
    /// `frame`: the granted frame number (a gfn of the granting domain).
    pub frame: u32,
}

/// `GTF_invalid`: the entry grants nothing.
pub const GTF_INVALID: u16 = 0;
/// `GTF_permit_access`: `domid` may map or copy `frame`.
pub const GTF_PERMIT_ACCESS: u16 = 1;
/// `GTF_accept_transfer`: `domid` may transfer a page into this slot (not supported here).
pub const GTF_ACCEPT_TRANSFER: u16 = 2;
/// `GTF_type_mask`: the bits holding the entry type.
pub const GTF_TYPE_MASK: u16 = 3;
/// `GTF_readonly`: the grantee may only read the frame.
pub const GTF_READONLY: u16 = 1 << 2;
/// `GTF_reading`: set by the hypervisor while the frame is pinned for any access.
pub const GTF_READING: u16 = 1 << 3;
/// `GTF_writing`: set by the hypervisor while the frame is pinned for writing.
pub const GTF_WRITING: u16 = 1 << 4;
/// `GTF_sub_page`: a sub-page grant (meaningful in v2 only; maps of such entries are refused).
pub const GTF_SUB_PAGE: u16 = 1 << 8;

/// `GNTMAP_device_map`: map for device (DMA) access.
pub const GNTMAP_DEVICE_MAP: u32 = 1 << 0;
/// `GNTMAP_host_map`: map into the caller's address space.
pub const GNTMAP_HOST_MAP: u32 = 1 << 1;
/// `GNTMAP_readonly`: the mapping is read-only.
pub const GNTMAP_READONLY: u32 = 1 << 2;

/// `GNTCOPY_source_gref`: `gnttab_copy.source` names a grant ref (else a local gmfn).
pub const GNTCOPY_SOURCE_GREF: u16 = 1 << 0;
/// `GNTCOPY_dest_gref`: `gnttab_copy.dest` names a grant ref (else a local gmfn).
pub const GNTCOPY_DEST_GREF: u16 = 1 << 1;

/// `GNTST_okay`
pub const GNTST_OKAY: i16 = 0;
/// `GNTST_general_error`
pub const GNTST_GENERAL_ERROR: i16 = -1;
/// `GNTST_bad_domain`
pub const GNTST_BAD_DOMAIN: i16 = -2;
/// `GNTST_bad_gntref`
pub const GNTST_BAD_GNTREF: i16 = -3;
/// `GNTST_bad_handle`
pub const GNTST_BAD_HANDLE: i16 = -4;
/// `GNTST_bad_virt_addr`
pub const GNTST_BAD_VIRT_ADDR: i16 = -5;
/// `GNTST_bad_dev_addr`
pub const GNTST_BAD_DEV_ADDR: i16 = -6;
/// `GNTST_no_device_space`
pub const GNTST_NO_DEVICE_SPACE: i16 = -7;
/// `GNTST_permission_denied`
pub const GNTST_PERMISSION_DENIED: i16 = -8;
/// `GNTST_bad_page`
pub const GNTST_BAD_PAGE: i16 = -9;
/// `GNTST_bad_copy_arg`
pub const GNTST_BAD_COPY_ARG: i16 = -10;
/// `GNTST_address_too_big`
pub const GNTST_ADDRESS_TOO_BIG: i16 = -11;
/// `GNTST_eagain`
pub const GNTST_EAGAIN: i16 = -12;
/// `GNTST_no_space`
pub const GNTST_NO_SPACE: i16 = -13;

/// The `GNTST_*` status codes as a type. `Display` gives the Xen name and what it
/// means, in the spirit of Xen's `GNTTABOP_error_msgs`.
#[repr(i16)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum GntSt {
    /// `GNTST_okay`
    #[error("GNTST_okay: success")]
    Okay = GNTST_OKAY,
    /// `GNTST_general_error`
    #[error("GNTST_general_error: unspecified failure (bad entry type, domid or permission)")]
    GeneralError = GNTST_GENERAL_ERROR,
    /// `GNTST_bad_domain`
    #[error("GNTST_bad_domain: no such domain")]
    BadDomain = GNTST_BAD_DOMAIN,
    /// `GNTST_bad_gntref`
    #[error("GNTST_bad_gntref: grant reference out of range")]
    BadGntref = GNTST_BAD_GNTREF,
    /// `GNTST_bad_handle`
    #[error("GNTST_bad_handle: no such mapping")]
    BadHandle = GNTST_BAD_HANDLE,
    /// `GNTST_bad_virt_addr`
    #[error("GNTST_bad_virt_addr: unusable virtual address")]
    BadVirtAddr = GNTST_BAD_VIRT_ADDR,
    /// `GNTST_bad_dev_addr`
    #[error("GNTST_bad_dev_addr: unusable device address")]
    BadDevAddr = GNTST_BAD_DEV_ADDR,
    /// `GNTST_no_device_space`
    #[error("GNTST_no_device_space: out of mapping slots")]
    NoDeviceSpace = GNTST_NO_DEVICE_SPACE,
    /// `GNTST_permission_denied`
    #[error("GNTST_permission_denied: the caller may not do this")]
    PermissionDenied = GNTST_PERMISSION_DENIED,
    /// `GNTST_bad_page`
    #[error("GNTST_bad_page: the frame does not exist")]
    BadPage = GNTST_BAD_PAGE,
    /// `GNTST_bad_copy_arg`
    #[error("GNTST_bad_copy_arg: offset + length runs past the end of the page")]
    BadCopyArg = GNTST_BAD_COPY_ARG,
    /// `GNTST_address_too_big`
    #[error("GNTST_address_too_big: frame address too large")]
    AddressTooBig = GNTST_ADDRESS_TOO_BIG,
    /// `GNTST_eagain`
    #[error("GNTST_eagain: not done, try again")]
    Eagain = GNTST_EAGAIN,
    /// `GNTST_no_space`
    #[error("GNTST_no_space: out of space")]
    NoSpace = GNTST_NO_SPACE,
}

impl GntSt {
    /// The status for a raw `int16_t` value, if it is one Xen defines.
    pub const fn from_i16(v: i16) -> Option<GntSt> {
        Some(match v {
            GNTST_OKAY => GntSt::Okay,
            GNTST_GENERAL_ERROR => GntSt::GeneralError,
            GNTST_BAD_DOMAIN => GntSt::BadDomain,
            GNTST_BAD_GNTREF => GntSt::BadGntref,
            GNTST_BAD_HANDLE => GntSt::BadHandle,
            GNTST_BAD_VIRT_ADDR => GntSt::BadVirtAddr,
            GNTST_BAD_DEV_ADDR => GntSt::BadDevAddr,
            GNTST_NO_DEVICE_SPACE => GntSt::NoDeviceSpace,
            GNTST_PERMISSION_DENIED => GntSt::PermissionDenied,
            GNTST_BAD_PAGE => GntSt::BadPage,
            GNTST_BAD_COPY_ARG => GntSt::BadCopyArg,
            GNTST_ADDRESS_TOO_BIG => GntSt::AddressTooBig,
            GNTST_EAGAIN => GntSt::Eagain,
            GNTST_NO_SPACE => GntSt::NoSpace,
            _ => return None,
        })
    }

    /// The raw `int16_t` value Xen writes into a `status` field.
    pub const fn as_i16(self) -> i16 {
        self as i16
    }
}

impl From<GntSt> for i16 {
    fn from(s: GntSt) -> i16 {
        s.as_i16()
    }
}

impl TryFrom<i16> for GntSt {
    type Error = i16;
    /// Fails with the raw value when Xen defines no such status.
    fn try_from(v: i16) -> Result<GntSt, i16> {
        GntSt::from_i16(v).ok_or(v)
    }
}

/// One side of a `gnttab_copy` (`struct gnttab_copy_ptr`): a grant ref or a gmfn,
/// the domain it belongs to, and a byte offset into the page.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GnttabCopyPtr {
    /// `union { grant_ref_t ref; xen_pfn_t gmfn; } u` (8 bytes on x86_64). Which member
    /// is live depends on the op's `GNTCOPY_*_gref` flag; see [`Self::gref`] and
    /// [`Self::gmfn`].
    pub u: u64,
    /// `domid`: the granting domain (gref) or `DOMID_SELF` (gmfn).
    pub domid: DomId,
    /// `offset`: byte offset into the page.
    pub offset: u16,
}

impl GnttabCopyPtr {
    /// A side naming grant `gref` of `domid` (set `GNTCOPY_*_gref` in the op's flags).
    pub fn from_gref(gref: GrantRef, domid: DomId, offset: u16) -> Self {
        let r = gref.to_ne_bytes();
        // `ref` overlays the first four bytes of the union, whatever the endianness.
        let u = u64::from_ne_bytes([r[0], r[1], r[2], r[3], 0, 0, 0, 0]);
        GnttabCopyPtr { u, domid, offset }
    }

    /// A side naming local frame `gmfn` (the domid must be `DOMID_SELF`).
    pub fn from_gmfn(gmfn: u64, domid: DomId, offset: u16) -> Self {
        GnttabCopyPtr {
            u: gmfn,
            domid,
            offset,
        }
    }

    /// `u.ref`: the union read as a grant ref (its first four bytes).
    pub fn gref(&self) -> GrantRef {
        let b = self.u.to_ne_bytes();
        u32::from_ne_bytes([b[0], b[1], b[2], b[3]])
    }

    /// `u.gmfn`: the union read as a frame number.
    pub fn gmfn(&self) -> u64 {
        self.u
    }
}

/// `struct gnttab_copy` (`GNTTABOP_copy`): copy `len` bytes from `source` to `dest`.
/// The hypervisor writes `status` (a `GNTST_*` value).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GnttabCopy {
    /// `source`
    pub source: GnttabCopyPtr,
    /// `dest`
    pub dest: GnttabCopyPtr,
    /// `len`: bytes to copy; `offset + len` must stay within one page on both sides.
    pub len: u16,
    /// `flags`: `GNTCOPY_source_gref` and/or `GNTCOPY_dest_gref`.
    pub flags: u16,
    /// `status`: output, `GNTST_*`.
    pub status: i16,
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{align_of, offset_of, size_of};

    #[test]
    fn layouts_match_xen_x86_64() {
        assert_eq!(size_of::<GrantEntryV1>(), 8);
        assert_eq!(offset_of!(GrantEntryV1, flags), 0);
        assert_eq!(offset_of!(GrantEntryV1, domid), 2);
        assert_eq!(offset_of!(GrantEntryV1, frame), 4);
        assert_eq!(size_of::<GnttabCopyPtr>(), 16);
        assert_eq!(offset_of!(GnttabCopyPtr, domid), 8);
        assert_eq!(offset_of!(GnttabCopyPtr, offset), 10);
        assert_eq!(size_of::<GnttabCopy>(), 40);
        assert_eq!(align_of::<GnttabCopy>(), 8);
        assert_eq!(offset_of!(GnttabCopy, dest), 16);
        assert_eq!(offset_of!(GnttabCopy, len), 32);
        assert_eq!(offset_of!(GnttabCopy, flags), 34);
        assert_eq!(offset_of!(GnttabCopy, status), 36);
    }

    #[test]
    fn gntst_round_trips_every_value() {
        for v in -13i16..=0 {
            let s = GntSt::from_i16(v).expect("Xen defines -13..=0");
            assert_eq!(i16::from(s), v);
            assert_eq!(GntSt::try_from(v), Ok(s));
        }
        assert_eq!(GntSt::try_from(-14), Err(-14));
        assert_eq!(GntSt::try_from(1), Err(1));
    }

    #[test]
    fn gntst_display_names_the_xen_status() {
        extern crate alloc;
        use alloc::string::ToString;
        assert!(GntSt::BadCopyArg
            .to_string()
            .starts_with("GNTST_bad_copy_arg"));
        assert!(GntSt::Okay.to_string().starts_with("GNTST_okay"));
        assert!(GntSt::NoSpace.to_string().starts_with("GNTST_no_space"));
    }

    #[test]
    fn copy_ptr_union_members() {
        let p = GnttabCopyPtr::from_gref(0xdead_beef, 3, 12);
        assert_eq!(p.gref(), 0xdead_beef);
        let q = GnttabCopyPtr::from_gmfn(0x1_0000_0002, DOMID_SELF, 0);
        assert_eq!(q.gmfn(), 0x1_0000_0002);
    }
}
