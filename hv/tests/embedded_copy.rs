//! The embedded hypervisor's batched grant copy: runs of segments on one grant.

use hv::embedded::{DomainConfig, Hypervisor, DOM0};
use hv::env::{BackendEnv, CopyDir, CopySeg, GuestEnv};

fn small() -> DomainConfig {
    DomainConfig {
        name: "t".into(),
        memory_frames: 64,
        grant_frames: 1,
        max_ports: 31,
    }
}

fn seg(dir: CopyDir, domid: u16, gref: u32, offset: u16, len: u16, local: *mut u8) -> CopySeg {
    CopySeg {
        dir,
        domid,
        gref,
        offset,
        len,
        local,
        status: 99,
    }
}

/// Segments naming the same grant back to back (small frames packed in one page) are
/// copied under one pin of it; each keeps its own argument check and status, other
/// grants and domains interleaved in the batch are served as before, and nothing is
/// left pinned afterwards.
/// After a copy, no grant of `pages` is still pinned for reading or writing.
fn assert_nothing_pinned(hv: &Hypervisor, d: u16, pages: &[hv::env::GrantedPage]) {
    let dom = hv.domain(d).expect("dom");
    for p in pages {
        let a = dom.active_grants().active_entry(p.gref).expect("entry");
        assert_eq!(
            (a.readers, a.writers),
            (0, 0),
            "ref {} still pinned",
            p.gref
        );
    }
}

#[test]
fn grant_copy_runs_on_one_grant_keep_per_segment_status() {
    let hv = Hypervisor::new().expect("hv");
    let d = hv.create_domain(&small()).expect("domain");
    let guest = hv.guest_env(d).expect("guest env");
    let back = hv.backend_env().expect("backend env");
    let pages = guest.grant_pages(DOM0, 2, true).expect("grant");
    for (i, p) in pages.iter().enumerate() {
        for k in 0..64u16 {
            let b = [(i as u8) * 100 + k as u8; 64];
            // SAFETY: the page is ours and 4 KiB long; 64 * 64 = 4096.
            unsafe {
                p.ptr
                    .as_ptr()
                    .add(usize::from(k) * 64)
                    .copy_from(b.as_ptr(), 64)
            };
        }
    }
    let mut local = vec![0u8; 70 * 64];
    let base = local.as_mut_ptr();
    let mut segs = Vec::new();
    // 64 frames of page 0, one of page 1, a bad offset on page 1, then page 0 again.
    for k in 0..64u16 {
        // SAFETY: k * 64 + 64 <= 70 * 64.
        let l = unsafe { base.add(usize::from(k) * 64) };
        segs.push(seg(CopyDir::FromForeign, d, pages[0].gref, k * 64, 64, l));
    }
    // SAFETY: in bounds of `local` (frames 64..68).
    let (l64, l65, l66, l67) = unsafe {
        (
            base.add(64 * 64),
            base.add(65 * 64),
            base.add(66 * 64),
            base.add(67 * 64),
        )
    };
    segs.push(seg(CopyDir::FromForeign, d, pages[1].gref, 64, 64, l64));
    segs.push(seg(CopyDir::FromForeign, d, pages[1].gref, 4090, 64, l65));
    segs.push(seg(CopyDir::FromForeign, 77, pages[1].gref, 0, 64, l66));
    segs.push(seg(CopyDir::FromForeign, d, pages[0].gref, 128, 64, l67));
    back.grant_copy(&mut segs);
    let st: Vec<i16> = segs.iter().map(|s| s.status).collect();
    assert!(
        st[..64].iter().all(|&s| s == grant_table::GNTST_OKAY),
        "{st:?}"
    );
    assert_eq!(st[64], grant_table::GNTST_OKAY);
    assert_eq!(st[65], grant_table::GNTST_BAD_COPY_ARG);
    assert_eq!(st[66], grant_table::GNTST_BAD_DOMAIN);
    assert_eq!(st[67], grant_table::GNTST_OKAY);
    for k in 0..64 {
        assert!(
            local[k * 64..k * 64 + 64].iter().all(|&b| b == k as u8),
            "frame {k}"
        );
    }
    assert!(local[64 * 64..65 * 64].iter().all(|&b| b == 101));
    assert!(
        local[65 * 64..67 * 64].iter().all(|&b| b == 0),
        "failed segments copy nothing"
    );
    assert!(local[67 * 64..68 * 64].iter().all(|&b| b == 2));
    assert_nothing_pinned(&hv, d, &pages);
    // A run on a revoked grant fails as a whole, with the grant's status.
    let gone = pages[1].gref;
    guest.end_grants(pages).expect("not in use");
    let mut segs: Vec<CopySeg> = (0..3u16)
        // SAFETY: k * 64 + 64 <= 70 * 64.
        .map(|k| {
            seg(CopyDir::FromForeign, d, gone, k * 64, 64, unsafe {
                base.add(usize::from(k) * 64)
            })
        })
        .collect();
    back.grant_copy(&mut segs);
    assert!(
        segs.iter()
            .all(|s| s.status == grant_table::GNTST_GENERAL_ERROR),
        "{:?}",
        segs.iter().map(|s| s.status).collect::<Vec<_>>()
    );
}

/// A batch longer than the copier's pin-then-copy chunk, cycling over several grants
/// (runs of one segment each, as netback's RX copies into one posted page per frame)
/// with a bad grant in the middle: every segment still gets its own status and data,
/// the bad one fails alone, and no pin outlives the call.
#[test]
fn long_batch_of_distinct_grants_copies_each_and_leaves_nothing_pinned() {
    let hv = Hypervisor::new().expect("hv");
    let d = hv.create_domain(&small()).expect("domain");
    let guest = hv.guest_env(d).expect("guest env");
    let back = hv.backend_env().expect("backend env");
    let pages = guest.grant_pages(DOM0, 5, false).expect("grant");
    const N: usize = 150;
    const BAD: usize = 97;
    let mut local: Vec<u8> = (0..N * 8).map(|i| (i / 8) as u8).collect();
    let base = local.as_mut_ptr();
    let segs_for = |base: *mut u8| -> Vec<CopySeg> {
        (0..N)
            .map(|i| {
                let gref = if i == BAD {
                    9999
                } else {
                    pages[i % pages.len()].gref
                };
                // Page i % 5 gets segment i at offset (i / 5) * 8: 30 segments per page.
                let offset = ((i / pages.len()) * 8) as u16;
                // SAFETY: i * 8 + 8 <= N * 8.
                seg(CopyDir::ToForeign, d, gref, offset, 8, unsafe {
                    base.add(i * 8)
                })
            })
            .collect()
    };
    let mut segs = segs_for(base);
    back.grant_copy(&mut segs);
    for (i, s) in segs.iter().enumerate() {
        let want = if i == BAD {
            grant_table::GNTST_BAD_GNTREF
        } else {
            grant_table::GNTST_OKAY
        };
        assert_eq!(s.status, want, "segment {i}");
    }
    for i in (0..N).filter(|&i| i != BAD) {
        let p = &pages[i % pages.len()];
        let off = (i / pages.len()) * 8;
        // SAFETY: the page is ours and 4 KiB long; off + 8 <= 4096.
        let got = unsafe { core::slice::from_raw_parts(p.ptr.as_ptr().add(off), 8) };
        assert!(got.iter().all(|&b| b == i as u8), "segment {i}: {got:?}");
    }
    assert_nothing_pinned(&hv, d, &pages);
    // Nothing pinned, so the guest can revoke every grant.
    guest.end_grants(pages).expect("not in use");
}
