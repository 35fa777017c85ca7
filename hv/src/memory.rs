//! Domain memory: 4 KiB frames backed by a memfd.
//!
//! A domain's pseudo-physical memory is one memfd mapped `MAP_SHARED`, so the same
//! frames can later be handed to a guest process with SCM_RIGHTS. Frame numbers are the
//! domain's gfns (`xen_pfn_t`): frame `n` starts at byte `n * 4096`.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::Mutex;

/// Xen's `XEN_PAGE_SIZE`: every frame, ring and grant is one 4 KiB page.
pub const PAGE_SIZE: usize = 4096;

/// Errors creating or using domain memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// memfd_create, ftruncate or mmap failed.
    #[error("allocating {frames} frames of domain memory failed: {source}; lower the domain's memory or raise the process's limits")]
    Alloc {
        frames: usize,
        #[source]
        source: std::io::Error,
    },
    /// Every frame is in use.
    #[error("domain memory exhausted ({0} frames): give the domain more memory")]
    Exhausted(usize),
}

/// A memfd-backed, `MAP_SHARED` region of whole frames.
pub struct FrameRegion {
    fd: OwnedFd,
    base: NonNull<u8>,
    frames: usize,
}

// SAFETY: the region is plain shared memory; all concurrent access to its contents goes
// through raw pointers whose synchronisation the ring and grant protocols provide.
unsafe impl Send for FrameRegion {}
// SAFETY: see above.
unsafe impl Sync for FrameRegion {}

impl FrameRegion {
    /// Create a zero-filled region of `frames` frames named `name` (shown in /proc/PID/maps).
    pub fn new(name: &str, frames: usize) -> Result<Self, MemoryError> {
        let err = |source| MemoryError::Alloc { frames, source };
        let cname =
            CString::new(name.replace('\0', "_")).map_err(|e| err(std::io::Error::other(e)))?;
        // Sealable, so the size can be fixed before the fd is handed to a guest.
        // SAFETY: memfd_create with a valid NUL-terminated name; the fd is owned below.
        let raw = unsafe {
            libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)
        };
        if raw < 0 {
            return Err(err(std::io::Error::last_os_error()));
        }
        // SAFETY: raw is a fresh fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let len = frames
            .checked_mul(PAGE_SIZE)
            .ok_or_else(|| err(std::io::Error::other("size overflow")))?;
        // SAFETY: ftruncate on our own memfd.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) } < 0 {
            return Err(err(std::io::Error::last_os_error()));
        }
        // A process given this fd (a guest of the `hv` daemon) must not be able to
        // shrink it: the hypervisor's own mapping would then fault (SIGBUS) on the
        // truncated frames. Growing is refused too; writes stay allowed.
        // SAFETY: fcntl on our own memfd, no pointers.
        if unsafe {
            libc::fcntl(
                fd.as_raw_fd(),
                libc::F_ADD_SEALS,
                libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL,
            )
        } < 0
        {
            return Err(err(std::io::Error::last_os_error()));
        }
        Self::map(fd, frames).map_err(err)
    }

    /// Map an existing memfd of `frames` frames (e.g. one received over a unix socket).
    pub fn map(fd: OwnedFd, frames: usize) -> Result<Self, std::io::Error> {
        let len = frames.max(1) * PAGE_SIZE;
        // SAFETY: mapping a shared fd we own; the kernel picks the address.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let base = NonNull::new(p.cast::<u8>())
            .ok_or_else(|| std::io::Error::other("mmap returned NULL"))?;
        Ok(Self { fd, base, frames })
    }

    /// Number of frames.
    pub fn frames(&self) -> usize {
        self.frames
    }

    /// The backing memfd.
    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// Start of the whole region.
    pub fn base(&self) -> NonNull<u8> {
        self.base
    }

    /// Pointer to frame `gfn`, `None` if out of range (a guest-supplied number).
    #[inline]
    pub fn frame_ptr(&self, gfn: u64) -> Option<NonNull<u8>> {
        if gfn >= self.frames as u64 {
            return None;
        }
        // SAFETY: gfn < frames, so the offset stays inside the mapping.
        Some(unsafe { self.base.add(gfn as usize * PAGE_SIZE) })
    }
}

impl Drop for FrameRegion {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping created in `map`; nothing references it
        // past the region's lifetime (owners hold the region in an Arc).
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.frames.max(1) * PAGE_SIZE);
        }
    }
}

/// A free list of a region's frames (the guest's own page allocator).
pub struct FrameAllocator {
    free: Mutex<Vec<u64>>,
    total: usize,
}

impl FrameAllocator {
    /// All frames in `first..first + count` start free.
    pub fn new(first: u64, count: usize) -> Self {
        let free = (first..first + count as u64).rev().collect();
        Self {
            free: Mutex::new(free),
            total: count,
        }
    }

    /// Take `n` frames, all or none.
    pub fn alloc(&self, n: usize) -> Result<Vec<u64>, MemoryError> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        if free.len() < n {
            return Err(MemoryError::Exhausted(self.total));
        }
        let at = free.len() - n;
        // Ascending: contiguous runs of frames come out as adjacent pages in order,
        // which lets netfront read a frame spread over consecutive RX pages in place.
        // (Allocation is rare: rings and buffers at connect time.)
        let mut out = free.split_off(at);
        out.sort_unstable();
        Ok(out)
    }

    /// Return frames. The caller guarantees each was allocated and is returned once.
    pub fn free(&self, frames: impl IntoIterator<Item = u64>) {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        free.extend(frames);
    }

    /// Frames currently free.
    pub fn available(&self) -> usize {
        self.free.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_is_zeroed_shared_and_bounded() {
        let r = FrameRegion::new("test", 4).expect("memfd");
        let p = r.frame_ptr(3).expect("in range");
        // SAFETY: frame 3 is inside the mapping.
        unsafe { p.as_ptr().write(7) };
        assert!(r.frame_ptr(4).is_none());
        assert!(r.frame_ptr(u64::MAX).is_none());
        // A second mapping of the same memfd sees the write: the memory is shared.
        let dup = r.fd().try_clone().expect("dup");
        let r2 = FrameRegion::map(dup, 4).expect("map");
        // SAFETY: frame 3 inside the second mapping.
        assert_eq!(
            unsafe { r2.frame_ptr(3).expect("in range").as_ptr().read() },
            7
        );
        // SAFETY: frame 0 untouched.
        assert_eq!(
            unsafe { r2.frame_ptr(0).expect("in range").as_ptr().read() },
            0
        );
    }

    #[test]
    fn allocator_is_all_or_nothing_and_never_duplicates() {
        let a = FrameAllocator::new(10, 5);
        let x = a.alloc(3).expect("3 free");
        assert!(a.alloc(3).is_err());
        let y = a.alloc(2).expect("2 free");
        let mut all: Vec<u64> = x.iter().chain(y.iter()).copied().collect();
        all.sort_unstable();
        assert_eq!(all, vec![10, 11, 12, 13, 14]);
        a.free(x);
        assert_eq!(a.available(), 3);
    }

    #[test]
    fn frames_come_out_ascending_fresh_and_after_reuse() {
        let a = FrameAllocator::new(100, 8);
        let x = a.alloc(4).expect("4 free");
        assert_eq!(x, vec![100, 101, 102, 103]);
        a.free(x.iter().rev().copied());
        let y = a.alloc(6).expect("6 free");
        assert!(y.windows(2).all(|w| w[0] < w[1]), "{y:?}");
    }
}
