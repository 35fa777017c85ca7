//! A tiny hypervisor for the tests: a few domains, each with a grant table and some
//! frames in heap memory standing in for the shared memfd.
#![allow(dead_code)]

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::ptr::NonNull;

use grant_table::*;

/// A zeroed, page-aligned heap buffer standing in for shared memory.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    layout: Layout,
}

// SAFETY: the buffer is plain bytes; all concurrent access in the tests goes through
// the crate's atomics or its copy routines, as it would for real shared memory.
unsafe impl Send for AlignedBuf {}
// SAFETY: as above.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    pub fn new(len: usize) -> Self {
        let layout = Layout::from_size_align(len.max(1), PAGE_SIZE).expect("layout");
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { alloc_zeroed(layout) };
        AlignedBuf {
            ptr: NonNull::new(p).expect("out of memory"),
            layout,
        }
    }
    pub fn ptr(&self) -> NonNull<u8> {
        self.ptr
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

pub const NR_ENTRIES: u32 = 32;
pub const NR_FRAMES: u64 = 16;

/// One domain: its grant table (guest view + hypervisor active table over the same
/// memory) and its frames. Declared so the views drop before the memory.
pub struct TestDomain {
    pub domid: DomId,
    pub guest: GuestGrantTable,
    pub active: ActiveGrantTable,
    mem: AlignedBuf,
    _table_mem: AlignedBuf,
}

impl TestDomain {
    pub fn new(domid: DomId) -> Self {
        let table_mem = AlignedBuf::new(NR_ENTRIES as usize * 8);
        let mem = AlignedBuf::new(NR_FRAMES as usize * PAGE_SIZE);
        let base = table_mem.ptr().cast::<GrantEntryV1>();
        // SAFETY: table_mem outlives both views (field order) and is only accessed
        // through them.
        let guest = unsafe { GuestGrantTable::from_raw(base, NR_ENTRIES) }.expect("aligned");
        // SAFETY: as above.
        let active = unsafe { ActiveGrantTable::from_raw(base, NR_ENTRIES) }.expect("aligned");
        TestDomain {
            domid,
            guest,
            active,
            mem,
            _table_mem: table_mem,
        }
    }

    /// Write `data` into frame `gfn` at `off`.
    pub fn write(&self, gfn: u64, off: usize, data: &[u8]) {
        assert!(gfn < NR_FRAMES && off + data.len() <= PAGE_SIZE);
        // SAFETY: in bounds of `mem` (checked above).
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                self.mem.ptr().as_ptr().add(gfn as usize * PAGE_SIZE + off),
                data.len(),
            )
        }
    }

    /// Read `len` bytes of frame `gfn` at `off`.
    pub fn read(&self, gfn: u64, off: usize, len: usize) -> Vec<u8> {
        assert!(gfn < NR_FRAMES && off + len <= PAGE_SIZE);
        let mut v = vec![0u8; len];
        // SAFETY: in bounds of `mem` (checked above).
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.mem.ptr().as_ptr().add(gfn as usize * PAGE_SIZE + off),
                v.as_mut_ptr(),
                len,
            )
        }
        v
    }

    /// The shared entry's flags.
    pub fn flags(&self, gref: GrantRef) -> u16 {
        self.guest.table().read(gref).expect("in range").flags
    }
}

// SAFETY: frame pointers point into `mem`, which lives as long as the domain.
unsafe impl GrantDomain for TestDomain {
    fn active_grant_table(&self) -> &ActiveGrantTable {
        &self.active
    }
    fn frame_ptr(&self, gfn: u64) -> Option<NonNull<u8>> {
        if gfn < NR_FRAMES {
            // SAFETY: gfn < NR_FRAMES keeps the offset inside `mem`.
            Some(unsafe { self.mem.ptr().add(gfn as usize * PAGE_SIZE) })
        } else {
            None
        }
    }
}

/// Domains 0 (the backend), 1 and 2 (guests).
pub struct TestWorld {
    pub domains: Vec<TestDomain>,
}

impl TestWorld {
    pub fn new() -> Self {
        TestWorld {
            domains: vec![TestDomain::new(0), TestDomain::new(1), TestDomain::new(2)],
        }
    }
    pub fn dom(&self, id: DomId) -> &TestDomain {
        self.domains
            .iter()
            .find(|d| d.domid == id)
            .expect("test domain")
    }
}

impl GrantWorld for TestWorld {
    type Domain<'a> = &'a TestDomain;
    fn domain(&self, domid: DomId) -> Option<&TestDomain> {
        self.domains.iter().find(|d| d.domid == domid)
    }
}

/// A copy op from grant `gref` of `granter` (at `soff`) into local frame `gfn` (at
/// `doff`) of the caller.
pub fn copy_from_grant(
    granter: DomId,
    gref: GrantRef,
    soff: u16,
    gfn: u64,
    doff: u16,
    len: u16,
) -> GnttabCopy {
    GnttabCopy {
        source: GnttabCopyPtr::from_gref(gref, granter, soff),
        dest: GnttabCopyPtr::from_gmfn(gfn, DOMID_SELF, doff),
        len,
        flags: GNTCOPY_SOURCE_GREF,
        status: 1,
    }
}

/// A copy op from local frame `gfn` of the caller into grant `gref` of `granter`.
pub fn copy_to_grant(
    gfn: u64,
    soff: u16,
    granter: DomId,
    gref: GrantRef,
    doff: u16,
    len: u16,
) -> GnttabCopy {
    GnttabCopy {
        source: GnttabCopyPtr::from_gmfn(gfn, DOMID_SELF, soff),
        dest: GnttabCopyPtr::from_gref(gref, granter, doff),
        len,
        flags: GNTCOPY_DEST_GREF,
        status: 1,
    }
}

/// No pin held anywhere and no GTF_reading/GTF_writing left set.
pub fn assert_quiescent(w: &TestWorld) {
    for d in &w.domains {
        for r in 0..NR_ENTRIES {
            let a = d.active.active_entry(r).expect("in range");
            assert_eq!(
                (a.readers, a.writers),
                (0, 0),
                "d{} ref {} still pinned",
                d.domid,
                r
            );
            assert_eq!(
                d.flags(r) & (GTF_READING | GTF_WRITING),
                0,
                "d{} ref {} in-use bits left",
                d.domid,
                r
            );
        }
    }
}
