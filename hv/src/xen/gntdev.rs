//! Foreign grants on `/dev/xen/gntdev`: mapping (`IOCTL_GNTDEV_MAP_GRANT_REF` then
//! `mmap` of the returned offset) and batched copies (`IOCTL_GNTDEV_GRANT_COPY`).

use std::io;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, PoisonError};

use grant_table::{
    GNTCOPY_DEST_GREF, GNTCOPY_SOURCE_GREF, GNTST_BAD_COPY_ARG, GNTST_GENERAL_ERROR, GNTST_OKAY,
};

use super::device::Device;
use super::sys::*;
use super::XenError;
use crate::env::{CopyDir, CopySeg, DomId, EnvError, GrantRef, MappedPage};

/// Where the gntdev device lives.
pub const GNTDEV_PATH: &str = "/dev/xen/gntdev";
/// Segments per `IOCTL_GNTDEV_GRANT_COPY` call: large enough to amortise the system
/// call over a NAPI-sized batch of packets, small enough to stay cache resident.
pub const GRANT_COPY_BATCH: usize = 128;

/// `/dev/xen/gntdev`.
#[derive(Debug)]
pub struct Gntdev {
    dev: Device,
    /// Reused segment array, so a copy allocates nothing after the first batch.
    scratch: Mutex<Scratch>,
}

#[derive(Debug, Default)]
struct Scratch {
    segs: Vec<IoctlGntdevGrantCopySegment>,
    /// `segs[i]` is the caller's segment `slot[i]`.
    slot: Vec<usize>,
}

// SAFETY: the raw pointers in the scratch segments are only meaningful during one
// grant_copy call, made under the scratch lock; between calls they are stale and unused.
unsafe impl Send for Gntdev {}
// SAFETY: see above; all shared state is behind the Mutex.
unsafe impl Sync for Gntdev {}

impl Gntdev {
    /// Open `/dev/xen/gntdev`.
    pub fn open() -> Result<Arc<Gntdev>, XenError> {
        let dev = Device::open(
            GNTDEV_PATH,
            "not running in a Xen domain, or modprobe xen-gntdev",
            false,
        )?;
        Ok(Arc::new(Gntdev {
            dev,
            scratch: Mutex::new(Scratch::default()),
        }))
    }

    /// Map one page `domid` granted (`GNTTABOP_map_grant_ref` through the driver).
    pub fn map_grant(
        self: &Arc<Self>,
        domid: DomId,
        gref: GrantRef,
        readonly: bool,
    ) -> Result<GntdevMapping, EnvError> {
        let mut arg = IoctlGntdevMapGrantRef {
            count: 1,
            pad: 0,
            index: 0,
            refs: [IoctlGntdevGrantRef {
                domid: domid.into(),
                gref,
            }],
        };
        // SAFETY: the argument is an ioctl_gntdev_map_grant_ref with count = 1 and one ref.
        unsafe { self.dev.ioctl(IOCTL_GNTDEV_MAP_GRANT_REF, &mut arg) }
            .map_err(|e| EnvError::Transport(format!("IOCTL_GNTDEV_MAP_GRANT_REF: {e}")))?;
        let prot = if readonly {
            libc::PROT_READ
        } else {
            libc::PROT_READ | libc::PROT_WRITE
        };
        // The hypercall happens here: gntdev maps the grant into this VMA (read-only
        // when PROT_WRITE is absent).
        // SAFETY: maps a fresh shared region of one page; the kernel picks the address.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                XEN_PAGE_SIZE,
                prot,
                libc::MAP_SHARED,
                self.dev.raw(),
                arg.index as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            let err = io::Error::last_os_error();
            self.unmap_index(arg.index);
            log::warn!("gntdev: mapping grant {gref} of domain {domid} failed: {err}");
            // The driver does not say which GNTST_* the hypervisor returned.
            return Err(EnvError::Grant(GNTST_GENERAL_ERROR));
        }
        let ptr = NonNull::new(p.cast::<u8>())
            .ok_or_else(|| EnvError::Transport("gntdev mmap returned NULL".into()))?;
        Ok(GntdevMapping {
            dev: self.clone(),
            ptr,
            index: arg.index,
        })
    }

    fn unmap_index(&self, index: u64) {
        let mut arg = IoctlGntdevUnmapGrantRef {
            index,
            count: 1,
            pad: 0,
        };
        // SAFETY: the argument is the ioctl_gntdev_unmap_grant_ref this request takes.
        if let Err(e) = unsafe { self.dev.ioctl(IOCTL_GNTDEV_UNMAP_GRANT_REF, &mut arg) } {
            log::warn!("IOCTL_GNTDEV_UNMAP_GRANT_REF at {index:#x}: {e}");
        }
    }

    /// `GNTTABOP_copy` of a batch: every segment gets its own status. Segments Xen
    /// would refuse as arguments are answered `GNTST_bad_copy_arg` here (the driver
    /// would fail the whole call for one of them); if the driver still fails a batch,
    /// its segments are retried one by one so the others are not lost.
    pub fn grant_copy(&self, segs: &mut [CopySeg]) {
        let mut scratch = self.scratch.lock().unwrap_or_else(PoisonError::into_inner);
        let scratch = &mut *scratch;
        let mut start = 0;
        while start < segs.len() {
            scratch.segs.clear();
            scratch.slot.clear();
            let mut i = start;
            while i < segs.len() && scratch.segs.len() < GRANT_COPY_BATCH {
                let seg = &mut segs[i];
                match to_ioctl_segment(seg) {
                    Some(s) => {
                        scratch.segs.push(s);
                        scratch.slot.push(i);
                    }
                    None => seg.status = GNTST_BAD_COPY_ARG,
                }
                i += 1;
            }
            start = i;
            if scratch.segs.is_empty() {
                continue;
            }
            match self.copy_ioctl(&mut scratch.segs) {
                Ok(()) => {
                    for (s, &slot) in scratch.segs.iter().zip(&scratch.slot) {
                        segs[slot].status = s.status;
                    }
                }
                Err(e) => {
                    log::debug!("grant copy batch failed ({e}); retrying segment by segment");
                    for (s, &slot) in scratch.segs.iter().zip(&scratch.slot) {
                        let mut one = [*s];
                        segs[slot].status = match self.copy_ioctl(&mut one) {
                            Ok(()) => one[0].status,
                            Err(_) => GNTST_GENERAL_ERROR,
                        };
                    }
                }
            }
        }
    }

    fn copy_ioctl(&self, segs: &mut [IoctlGntdevGrantCopySegment]) -> io::Result<()> {
        let mut arg = IoctlGntdevGrantCopy {
            count: segs.len() as libc::c_uint,
            segments: segs.as_mut_ptr(),
        };
        // SAFETY: `segments` points at `count` initialised segments that live for the
        // call; each local `virt` was supplied by the caller as valid for `len` bytes.
        unsafe { self.dev.ioctl(IOCTL_GNTDEV_GRANT_COPY, &mut arg) }.map(|_| ())
    }
}

/// The driver's segment for one [`CopySeg`], or `None` for arguments Xen refuses
/// (`GNTST_bad_copy_arg`): a foreign range past the page end or no local buffer.
fn to_ioctl_segment(seg: &CopySeg) -> Option<IoctlGntdevGrantCopySegment> {
    if usize::from(seg.offset) + usize::from(seg.len) > XEN_PAGE_SIZE
        || (seg.local.is_null() && seg.len > 0)
    {
        return None;
    }
    let foreign = GntdevCopyPtr {
        foreign: GntdevCopyForeign {
            gref: seg.gref,
            offset: seg.offset,
            domid: seg.domid,
        },
    };
    let local = GntdevCopyPtr {
        virt: seg.local.cast(),
    };
    let (source, dest, flags) = match seg.dir {
        CopyDir::FromForeign => (foreign, local, GNTCOPY_SOURCE_GREF),
        CopyDir::ToForeign => (local, foreign, GNTCOPY_DEST_GREF),
    };
    Some(IoctlGntdevGrantCopySegment {
        source,
        dest,
        len: seg.len,
        flags,
        status: GNTST_OKAY,
    })
}

/// A foreign page mapped through gntdev; unmapped (`munmap` then
/// `IOCTL_GNTDEV_UNMAP_GRANT_REF`) on drop.
#[derive(Debug)]
pub struct GntdevMapping {
    dev: Arc<Gntdev>,
    ptr: NonNull<u8>,
    index: u64,
}

// SAFETY: the mapping is plain shared memory; access discipline is the ring protocol's.
unsafe impl Send for GntdevMapping {}
// SAFETY: see above.
unsafe impl Sync for GntdevMapping {}

impl MappedPage for GntdevMapping {
    fn ptr(&self) -> NonNull<u8> {
        self.ptr
    }
}

impl Drop for GntdevMapping {
    fn drop(&mut self) {
        // SAFETY: ptr is the start of the one-page mapping made in map_grant and not
        // unmapped elsewhere; nothing borrows it past the mapping's lifetime.
        if unsafe { libc::munmap(self.ptr.as_ptr().cast(), XEN_PAGE_SIZE) } != 0 {
            log::warn!("munmap of a gntdev page: {}", io::Error::last_os_error());
        }
        self.dev.unmap_index(self.index);
    }
}
