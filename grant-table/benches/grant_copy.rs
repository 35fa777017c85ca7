//! Batched `GNTTABOP_copy` throughput, the netback hot path: batches of 64 ops, each
//! from a distinct grant of a guest into a local frame of the backend (guest TX), for
//! 64-byte and 4096-byte copies.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::hint::black_box;
use std::ptr::NonNull;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use grant_table::*;

const NR_ENTRIES: u32 = 256;
const NR_FRAMES: u64 = 128;
const BATCH: usize = 64;
const BACKEND: DomId = 0;
const GUEST: DomId = 1;

struct Buf(NonNull<u8>, Layout);

impl Buf {
    fn new(len: usize) -> Self {
        let layout = Layout::from_size_align(len, PAGE_SIZE).expect("layout");
        // SAFETY: non-zero size.
        let p = unsafe { alloc_zeroed(layout) };
        Buf(NonNull::new(p).expect("out of memory"), layout)
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.0.as_ptr(), self.1) }
    }
}

struct Dom {
    guest: GuestGrantTable,
    active: ActiveGrantTable,
    mem: Buf,
    _table: Buf,
}

impl Dom {
    fn new() -> Self {
        let table = Buf::new(NR_ENTRIES as usize * 8);
        // SAFETY: `table` outlives both views (field order) and is only used through them.
        let guest =
            unsafe { GuestGrantTable::from_raw(table.0.cast(), NR_ENTRIES) }.expect("aligned");
        // SAFETY: as above.
        let active =
            unsafe { ActiveGrantTable::from_raw(table.0.cast(), NR_ENTRIES) }.expect("aligned");
        Dom {
            guest,
            active,
            mem: Buf::new(NR_FRAMES as usize * PAGE_SIZE),
            _table: table,
        }
    }
}

// SAFETY: frames point into `mem`, which lives as long as the domain.
unsafe impl GrantDomain for Dom {
    fn active_grant_table(&self) -> &ActiveGrantTable {
        &self.active
    }
    fn frame_ptr(&self, gfn: u64) -> Option<NonNull<u8>> {
        // SAFETY: gfn < NR_FRAMES keeps the offset inside `mem`.
        (gfn < NR_FRAMES).then(|| unsafe { self.mem.0.add(gfn as usize * PAGE_SIZE) })
    }
}

struct World([Dom; 2]);

impl GrantWorld for World {
    type Domain<'a> = &'a Dom;
    fn domain(&self, domid: DomId) -> Option<&Dom> {
        self.0.get(usize::from(domid))
    }
}

fn bench(c: &mut Criterion) {
    let world = World([Dom::new(), Dom::new()]);
    let grefs: Vec<GrantRef> = (0..BATCH as u32)
        .map(|i| {
            world.0[1]
                .guest
                .grant_foreign_access(BACKEND, i, true)
                .expect("grant")
        })
        .collect();
    let mut g = c.benchmark_group("gnttab_copy_batch64");
    for len in [64u16, 4096] {
        let ops: Vec<GnttabCopy> = grefs
            .iter()
            .enumerate()
            .map(|(i, &r)| GnttabCopy {
                source: GnttabCopyPtr::from_gref(r, GUEST, 0),
                dest: GnttabCopyPtr::from_gmfn(64 + i as u64, DOMID_SELF, 0),
                len,
                flags: GNTCOPY_SOURCE_GREF,
                status: 1,
            })
            .collect();
        let mut batch = ops.clone();
        g.throughput(Throughput::Bytes(u64::from(len) * BATCH as u64));
        g.bench_with_input(BenchmarkId::new("bytes", len), &len, |b, _| {
            b.iter(|| {
                gnttab_copy(&world, BACKEND, black_box(&mut batch));
                debug_assert!(batch.iter().all(|o| o.status == GNTST_OKAY));
            })
        });
        gnttab_copy(&world, BACKEND, &mut batch);
        assert!(batch.iter().all(|o| o.status == GNTST_OKAY));
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
