//! The ioctl ABI of Linux's Xen devices, as its public headers define it
//! (`xen/sys/gntdev.h`, `xen/sys/gntalloc.h`, `xen/sys/evtchn.h`, shipped by
//! libxen-dev). Layouts are checked against those headers by `hv/tests/xen_sys_c_headers.rs`.

use core::ffi::{c_uint, c_ulong, c_void};

/// `_IOC(_IOC_NONE, type, nr, size)` from `asm-generic/ioctl.h`: every Xen device ioctl
/// is declared with direction `_IOC_NONE` (the driver copies in and out itself).
pub const fn ioc_none(ty: u8, nr: u8, size: usize) -> c_ulong {
    // _IOC_NRSHIFT 0, _IOC_TYPESHIFT 8, _IOC_SIZESHIFT 16, _IOC_DIRSHIFT 30, _IOC_NONE 0.
    ((size as c_ulong) << 16) | ((ty as c_ulong) << 8) | nr as c_ulong
}

// ---- /dev/xen/gntdev -------------------------------------------------------------

/// `struct ioctl_gntdev_grant_ref`: one grant to map.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct IoctlGntdevGrantRef {
    /// `domid`: the granting domain.
    pub domid: u32,
    /// `ref`: its grant reference.
    pub gref: u32,
}

/// `struct ioctl_gntdev_map_grant_ref` with room for exactly one ref (the header's
/// `refs[1]`); pvnet maps one page per call, so no variable-length tail is needed.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct IoctlGntdevMapGrantRef {
    /// `count`: grants in `refs`.
    pub count: u32,
    /// `pad`
    pub pad: u32,
    /// `index` (out): the offset to pass to `mmap()`.
    pub index: u64,
    /// `refs[1]`
    pub refs: [IoctlGntdevGrantRef; 1],
}

/// `struct ioctl_gntdev_unmap_grant_ref`
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct IoctlGntdevUnmapGrantRef {
    /// `index`: as returned by the map ioctl.
    pub index: u64,
    /// `count`: pages to unmap.
    pub count: u32,
    /// `pad`
    pub pad: u32,
}

/// The anonymous `foreign` struct of `ioctl_gntdev_grant_copy_segment`'s unions.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct GntdevCopyForeign {
    /// `ref`
    pub gref: u32,
    /// `offset` within the granted page.
    pub offset: u16,
    /// `domid` of the granting domain.
    pub domid: u16,
}

/// The `source` / `dest` union of `ioctl_gntdev_grant_copy_segment`: a local virtual
/// address or a foreign grant, chosen by `GNTCOPY_source_gref` / `GNTCOPY_dest_gref`.
#[repr(C)]
#[derive(Clone, Copy)]
pub union GntdevCopyPtr {
    /// `virt`
    pub virt: *mut c_void,
    /// `foreign`
    pub foreign: GntdevCopyForeign,
}

impl core::fmt::Debug for GntdevCopyPtr {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("GntdevCopyPtr { .. }")
    }
}

/// `struct ioctl_gntdev_grant_copy_segment`
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct IoctlGntdevGrantCopySegment {
    /// `source`
    pub source: GntdevCopyPtr,
    /// `dest`
    pub dest: GntdevCopyPtr,
    /// `len` in bytes.
    pub len: u16,
    /// `flags`: `GNTCOPY_source_gref` and/or `GNTCOPY_dest_gref`.
    pub flags: u16,
    /// `status` (out): `GNTST_*`.
    pub status: i16,
}

/// `struct ioctl_gntdev_grant_copy`
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct IoctlGntdevGrantCopy {
    /// `count`: segments in the array.
    pub count: c_uint,
    /// `segments`
    pub segments: *mut IoctlGntdevGrantCopySegment,
}

/// `IOCTL_GNTDEV_MAP_GRANT_REF`
pub const IOCTL_GNTDEV_MAP_GRANT_REF: c_ulong =
    ioc_none(b'G', 0, core::mem::size_of::<IoctlGntdevMapGrantRef>());
/// `IOCTL_GNTDEV_UNMAP_GRANT_REF`
pub const IOCTL_GNTDEV_UNMAP_GRANT_REF: c_ulong =
    ioc_none(b'G', 1, core::mem::size_of::<IoctlGntdevUnmapGrantRef>());
/// `IOCTL_GNTDEV_GRANT_COPY`
pub const IOCTL_GNTDEV_GRANT_COPY: c_ulong =
    ioc_none(b'G', 8, core::mem::size_of::<IoctlGntdevGrantCopy>());

// ---- /dev/xen/gntalloc -----------------------------------------------------------

/// `struct ioctl_gntalloc_alloc_gref` with room for one grant (`gref_ids[1]`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct IoctlGntallocAllocGref {
    /// `domid`: the domain given access.
    pub domid: u16,
    /// `flags`: `GNTALLOC_FLAG_WRITABLE` or 0.
    pub flags: u16,
    /// `count`: pages to allocate.
    pub count: u32,
    /// `index` (out): the offset to pass to `mmap()`.
    pub index: u64,
    /// `gref_ids[1]` (out)
    pub gref_ids: [u32; 1],
}

/// `struct ioctl_gntalloc_dealloc_gref`
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct IoctlGntallocDeallocGref {
    /// `index`: as returned by the alloc ioctl.
    pub index: u64,
    /// `count`
    pub count: u32,
}

/// `GNTALLOC_FLAG_WRITABLE`: the remote domain may write the page.
pub const GNTALLOC_FLAG_WRITABLE: u16 = 1;
/// `IOCTL_GNTALLOC_ALLOC_GREF`
pub const IOCTL_GNTALLOC_ALLOC_GREF: c_ulong =
    ioc_none(b'G', 5, core::mem::size_of::<IoctlGntallocAllocGref>());
/// `IOCTL_GNTALLOC_DEALLOC_GREF`
pub const IOCTL_GNTALLOC_DEALLOC_GREF: c_ulong =
    ioc_none(b'G', 6, core::mem::size_of::<IoctlGntallocDeallocGref>());

// ---- /dev/xen/evtchn -------------------------------------------------------------

/// `struct ioctl_evtchn_bind_interdomain`
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct IoctlEvtchnBindInterdomain {
    /// `remote_domain`
    pub remote_domain: c_uint,
    /// `remote_port`
    pub remote_port: c_uint,
}

/// `struct ioctl_evtchn_bind_unbound_port`
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct IoctlEvtchnBindUnboundPort {
    /// `remote_domain`
    pub remote_domain: c_uint,
}

/// `struct ioctl_evtchn_unbind`
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct IoctlEvtchnUnbind {
    /// `port`
    pub port: c_uint,
}

/// `struct ioctl_evtchn_notify`
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct IoctlEvtchnNotify {
    /// `port`
    pub port: c_uint,
}

/// `IOCTL_EVTCHN_BIND_INTERDOMAIN`: returns the new local port.
pub const IOCTL_EVTCHN_BIND_INTERDOMAIN: c_ulong =
    ioc_none(b'E', 1, core::mem::size_of::<IoctlEvtchnBindInterdomain>());
/// `IOCTL_EVTCHN_BIND_UNBOUND_PORT`: returns the new local port.
pub const IOCTL_EVTCHN_BIND_UNBOUND_PORT: c_ulong =
    ioc_none(b'E', 2, core::mem::size_of::<IoctlEvtchnBindUnboundPort>());
/// `IOCTL_EVTCHN_UNBIND`
pub const IOCTL_EVTCHN_UNBIND: c_ulong =
    ioc_none(b'E', 3, core::mem::size_of::<IoctlEvtchnUnbind>());
/// `IOCTL_EVTCHN_NOTIFY`
pub const IOCTL_EVTCHN_NOTIFY: c_ulong =
    ioc_none(b'E', 4, core::mem::size_of::<IoctlEvtchnNotify>());

/// `XEN_PAGE_SIZE`: grants are always 4 KiB pages.
pub const XEN_PAGE_SIZE: usize = 4096;
