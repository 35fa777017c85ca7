//! Granting this domain's pages on `/dev/xen/gntalloc`: `IOCTL_GNTALLOC_ALLOC_GREF`
//! allocates a zeroed page and grants it, `mmap` of the returned offset maps it here,
//! `IOCTL_GNTALLOC_DEALLOC_GREF` ends the grant.
//!
//! One page per ioctl, so each page can be ended on its own. Ending is lazy in the
//! driver: if the remote domain still maps the page, Linux keeps the page and the
//! reference until the remote unmaps (`gnttab_end_foreign_access` deferral), so the
//! page is never reused under the peer. [`Gntalloc::end_grants`] therefore never
//! reports `GrantInUse`.

use std::collections::HashMap;
use std::io;
use std::ptr::NonNull;
use std::sync::{Mutex, PoisonError};

use super::device::Device;
use super::sys::*;
use super::XenError;
use crate::env::{DomId, EnvError, GrantRef, GrantedPage};

/// Where the gntalloc device lives.
pub const GNTALLOC_PATH: &str = "/dev/xen/gntalloc";

/// `/dev/xen/gntalloc` and the pages granted through it.
#[derive(Debug)]
pub struct Gntalloc {
    dev: Device,
    /// Grant ref → (mmap offset, local mapping) of every live page.
    pages: Mutex<HashMap<GrantRef, (u64, usize)>>,
}

impl Gntalloc {
    /// Open `/dev/xen/gntalloc`.
    pub fn open() -> Result<Gntalloc, XenError> {
        let dev = Device::open(
            GNTALLOC_PATH,
            "not running in a Xen domain, or modprobe xen-gntalloc",
            false,
        )?;
        Ok(Gntalloc {
            dev,
            pages: Mutex::new(HashMap::new()),
        })
    }

    /// Grant `remote` access to `count` fresh zeroed pages. All or nothing.
    pub fn grant_pages(
        &self,
        remote: DomId,
        count: usize,
        readonly: bool,
    ) -> Result<Vec<GrantedPage>, EnvError> {
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            match self.grant_one(remote, readonly) {
                Ok(p) => out.push(p),
                Err(e) => {
                    // Undo this call's pages; nobody has seen their refs yet.
                    if let Err((e2, _)) = self.end_grants(out) {
                        log::warn!("gntalloc: rollback failed: {e2}");
                    }
                    return Err(e);
                }
            }
        }
        Ok(out)
    }

    fn grant_one(&self, remote: DomId, readonly: bool) -> Result<GrantedPage, EnvError> {
        let mut arg = IoctlGntallocAllocGref {
            domid: remote,
            flags: if readonly { 0 } else { GNTALLOC_FLAG_WRITABLE },
            count: 1,
            index: 0,
            gref_ids: [0],
        };
        // SAFETY: the argument is an ioctl_gntalloc_alloc_gref with count = 1 and room
        // for one gref_id.
        unsafe { self.dev.ioctl(IOCTL_GNTALLOC_ALLOC_GREF, &mut arg) }.map_err(|e| {
            match e.raw_os_error() {
                Some(libc::ENOSPC) | Some(libc::ENOMEM) => EnvError::Exhausted("grant references"),
                _ => EnvError::Transport(format!("IOCTL_GNTALLOC_ALLOC_GREF: {e}")),
            }
        })?;
        let gref = arg.gref_ids[0];
        // SAFETY: maps the one page the driver just allocated at `index`, shared so
        // that the remote domain sees our writes.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                XEN_PAGE_SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                self.dev.raw(),
                arg.index as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            let err = io::Error::last_os_error();
            self.dealloc(arg.index);
            return Err(EnvError::Transport(format!("mmap of gntalloc page: {err}")));
        }
        let Some(ptr) = NonNull::new(p.cast::<u8>()) else {
            self.dealloc(arg.index);
            return Err(EnvError::Transport("gntalloc mmap returned NULL".into()));
        };
        self.pages
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(gref, (arg.index, ptr.as_ptr() as usize));
        Ok(GrantedPage { gref, ptr })
    }

    fn dealloc(&self, index: u64) {
        let mut arg = IoctlGntallocDeallocGref { index, count: 1 };
        // SAFETY: the argument is the ioctl_gntalloc_dealloc_gref this request takes.
        if let Err(e) = unsafe { self.dev.ioctl(IOCTL_GNTALLOC_DEALLOC_GREF, &mut arg) } {
            log::warn!("IOCTL_GNTALLOC_DEALLOC_GREF at {index:#x}: {e}");
        }
    }

    /// End the grants and unmap the pages. Pages this device did not grant are
    /// returned with `EnvError::Grant(GNTST_bad_gntref)`.
    pub fn end_grants(&self, pages: Vec<GrantedPage>) -> Result<(), (EnvError, Vec<GrantedPage>)> {
        let mut unknown = Vec::new();
        for page in pages {
            let entry = self
                .pages
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&page.gref);
            match entry {
                Some((index, addr)) if addr == page.ptr.as_ptr() as usize => {
                    // SAFETY: addr is the one-page mapping made in grant_one; the caller
                    // gave up the GrantedPage, so nothing uses it any more.
                    if unsafe { libc::munmap(addr as *mut libc::c_void, XEN_PAGE_SIZE) } != 0 {
                        log::warn!("munmap of a gntalloc page: {}", io::Error::last_os_error());
                    }
                    self.dealloc(index);
                }
                Some(entry) => {
                    // Same ref, different page: not ours to end. Put it back.
                    self.pages
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(page.gref, entry);
                    unknown.push(page);
                }
                None => unknown.push(page),
            }
        }
        if unknown.is_empty() {
            Ok(())
        } else {
            Err((EnvError::Grant(grant_table::GNTST_BAD_GNTREF), unknown))
        }
    }
}

impl Drop for Gntalloc {
    fn drop(&mut self) {
        // End every grant still live but keep the local mappings: a GrantedPage may
        // outlive the environment by mistake, and its pointer must stay valid. The driver
        // frees each page when its mapping goes away (at the latest, at process exit).
        let pages = std::mem::take(&mut *self.pages.lock().unwrap_or_else(PoisonError::into_inner));
        for (_, (index, _addr)) in pages {
            self.dealloc(index);
        }
    }
}
