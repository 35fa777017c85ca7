//! Which granted TX page (and where in it) each TX data slot uses.
//!
//! The queue's TX pages are granted once, read-only, at connect. A frame of several
//! pages takes whole pages. A frame that fits one page is packed behind the previous
//! small frames in the current "pack page", at a 64-byte (cache-line) aligned offset:
//! netif lets several requests name the same grant at different offsets (`offset` +
//! `size` within the page), so a burst of 64-byte frames fills one page instead of
//! touching 64. The guest writes one page's cache lines and TLB entry instead of 64,
//! and the backend pins that one grant once for the whole run of copies (Xen's
//! `gnttab_copy` reuses a claimed grant for consecutive ops on it).
//!
//! Each page counts the data slots in flight on it; it is free again once the last
//! is answered. The pack page, once all its frames are answered, is reused in place
//! from offset 0 (it is still warm in cache).

use alloc::vec::Vec;

use crate::PAGE_SIZE;

/// Small frames start on a cache-line boundary (no two frames share a line, so the
/// backend's copy of one never waits on the guest writing the next).
pub const PACK_ALIGN: usize = 64;

/// Where one data slot's bytes are: page index in the pool and offset in the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SlotPlace {
    /// Index of the page in the queue's TX page pool.
    pub page: u16,
    /// Offset of the slot's bytes in the page.
    pub offset: u16,
}

/// The TX page pool of one queue (page indices `0..n`).
#[derive(Debug)]
pub struct TxPagePool {
    /// Pages with nothing in flight and not the pack page (a stack: recently freed
    /// pages are warm).
    free: Vec<u16>,
    /// Data slots in flight per page.
    refs: Vec<u16>,
    /// The page small frames are packed into, and the next free offset in it.
    pack: Option<u16>,
    pack_off: usize,
}

impl TxPagePool {
    /// A pool of `n` free pages (`n` at most 65536).
    pub fn new(n: usize) -> Self {
        let n = n.min(1 << 16);
        TxPagePool {
            // Pop order 0, 1, 2, ...
            free: (0..n).rev().map(|i| i as u16).collect(),
            refs: alloc::vec![0; n],
            pack: None,
            pack_off: 0,
        }
    }

    /// Pages in the pool.
    pub fn capacity(&self) -> usize {
        self.refs.len()
    }

    /// The pack page if nothing in flight uses it (it can be restarted or handed out).
    #[inline(always)]
    fn idle_pack(&self) -> Option<u16> {
        self.pack
            .filter(|&p| self.refs.get(usize::from(p)).is_some_and(|&r| r == 0))
    }

    /// Whole pages that could be taken now.
    #[inline]
    pub fn whole_available(&self) -> usize {
        self.free.len() + usize::from(self.idle_pack().is_some())
    }

    /// True if a one-page frame of `len` bytes can be placed now.
    #[inline(always)]
    pub fn fits_small(&self, len: usize) -> bool {
        match self.pack {
            Some(p) if self.refs[usize::from(p)] == 0 || self.pack_off + len <= PAGE_SIZE => true,
            _ => !self.free.is_empty(),
        }
    }

    /// How many one-page frames of `len` bytes can be placed now.
    pub fn small_available(&self, len: usize) -> usize {
        let len = len.clamp(1, PAGE_SIZE);
        // Each frame but the last of a page also takes its alignment padding.
        let step = len.next_multiple_of(PACK_ALIGN);
        let per_page = (PAGE_SIZE - len) / step + 1;
        let in_pack = match self.pack {
            Some(p) if self.refs[usize::from(p)] == 0 => per_page,
            Some(_) if self.pack_off + len <= PAGE_SIZE => {
                (PAGE_SIZE - len - self.pack_off) / step + 1
            }
            _ => 0,
        };
        in_pack + self.free.len() * per_page
    }

    /// Place a one-page frame of `len` (1..=4096) bytes: behind the previous small
    /// frames in the pack page, or at the start of a fresh pack page.
    #[inline]
    pub fn alloc_small(&mut self, len: usize) -> Option<SlotPlace> {
        if let Some(p) = self.pack {
            let pi = usize::from(p);
            if self.refs[pi] == 0 {
                // Every frame packed here was answered: start over in place.
                self.pack_off = 0;
            }
            if self.pack_off + len <= PAGE_SIZE {
                return Some(self.place_in_pack(p, len));
            }
            // Full: retire it. It is freed when its last frame is answered.
            self.pack = None;
            if self.refs[pi] == 0 {
                self.free.push(p);
            }
        }
        let p = self.free.pop()?;
        self.pack = Some(p);
        self.pack_off = 0;
        Some(self.place_in_pack(p, len))
    }

    #[inline(always)]
    fn place_in_pack(&mut self, p: u16, len: usize) -> SlotPlace {
        let offset = self.pack_off;
        self.pack_off = (offset + len).next_multiple_of(PACK_ALIGN);
        self.refs[usize::from(p)] += 1;
        SlotPlace {
            page: p,
            // offset < PAGE_SIZE.
            offset: offset as u16,
        }
    }

    /// Take a whole page (for one slot of a multi-page frame).
    #[inline]
    pub fn alloc_whole(&mut self) -> Option<SlotPlace> {
        let p = match self.free.pop() {
            Some(p) => p,
            None => {
                let p = self.idle_pack()?;
                self.pack = None;
                p
            }
        };
        self.refs[usize::from(p)] = 1;
        Some(SlotPlace { page: p, offset: 0 })
    }

    /// One data slot on page `page` is done (answered, or never sent).
    #[inline(always)]
    pub fn release(&mut self, page: u16) {
        let Some(r) = self.refs.get_mut(usize::from(page)) else {
            return;
        };
        // Callers release only places they were given, once each.
        debug_assert!(*r > 0, "page {page} released more often than placed");
        *r = r.saturating_sub(1);
        if *r == 0 && self.pack != Some(page) {
            self.free.push(page);
        }
    }

    /// Everything is free again (the backend is gone).
    pub fn reset(&mut self) {
        let n = self.refs.len();
        self.free.clear();
        self.free.extend((0..n).rev().map(|i| i as u16));
        self.refs.iter_mut().for_each(|r| *r = 0);
        self.pack = None;
        self.pack_off = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_frames_pack_into_one_page_at_aligned_offsets() {
        let mut p = TxPagePool::new(4);
        let places: Vec<SlotPlace> = (0..64).map(|_| p.alloc_small(60).unwrap()).collect();
        assert!(places.iter().all(|s| s.page == places[0].page));
        for (i, s) in places.iter().enumerate() {
            assert_eq!(usize::from(s.offset), i * PACK_ALIGN);
        }
        // The 65th does not fit: a new page.
        let next = p.alloc_small(60).unwrap();
        assert_ne!(next.page, places[0].page);
        assert_eq!(next.offset, 0);
        assert_eq!(p.whole_available(), 2);
        // The first page is free once all 64 are answered (not before).
        for s in &places[..63] {
            p.release(s.page);
        }
        assert_eq!(p.whole_available(), 2);
        p.release(places[63].page);
        assert_eq!(p.whole_available(), 3);
    }

    #[test]
    fn answered_pack_page_restarts_in_place() {
        let mut p = TxPagePool::new(2);
        let a = p.alloc_small(1000).unwrap();
        let b = p.alloc_small(1000).unwrap();
        assert_eq!((a.offset, b.offset), (0, 1024));
        p.release(a.page);
        p.release(b.page);
        let c = p.alloc_small(3000).unwrap();
        assert_eq!((c.page, c.offset), (a.page, 0));
    }

    #[test]
    fn frames_never_overlap_or_cross_the_page() {
        let mut p = TxPagePool::new(8);
        let mut live: Vec<(SlotPlace, usize)> = Vec::new();
        let lens = [60, 1500, 4096, 64, 65, 2048, 2049, 1, 4000];
        for round in 0..200 {
            let len = lens[round % lens.len()];
            if !p.fits_small(len) {
                assert!(p.alloc_small(len).is_none());
                let (s, _) = live.remove(0);
                p.release(s.page);
                continue;
            }
            let s = p.alloc_small(len).unwrap();
            assert!(usize::from(s.offset) + len <= PAGE_SIZE);
            for (o, olen) in &live {
                if o.page == s.page {
                    let (a0, a1) = (usize::from(s.offset), usize::from(s.offset) + len);
                    let (b0, b1) = (usize::from(o.offset), usize::from(o.offset) + olen);
                    assert!(a1 <= b0 || b1 <= a0, "{s:?}+{len} overlaps {o:?}+{olen}");
                }
            }
            live.push((s, len));
        }
    }

    #[test]
    fn whole_pages_and_idle_pack_page_are_all_usable() {
        let mut p = TxPagePool::new(3);
        let s = p.alloc_small(64).unwrap();
        let w1 = p.alloc_whole().unwrap();
        let w2 = p.alloc_whole().unwrap();
        assert_eq!(p.alloc_whole(), None, "pack page still holds a frame");
        p.release(s.page);
        // The idle pack page is handed out whole.
        let w3 = p.alloc_whole().unwrap();
        assert_eq!(w3.page, s.page);
        let mut pages = [w1.page, w2.page, w3.page];
        pages.sort_unstable();
        assert_eq!(pages, [0, 1, 2]);
        assert!(!p.fits_small(64));
        assert_eq!(p.small_available(64), 0);
        p.release(w2.page);
        assert!(p.fits_small(64));
        p.reset();
        assert_eq!(p.whole_available(), 3);
    }

    #[test]
    fn small_available_counts_what_alloc_small_gives() {
        for len in [1, 60, 64, 65, 1500, 2048, 2049, 4096] {
            let mut p = TxPagePool::new(3);
            let _held = p.alloc_small(100).unwrap();
            let n = p.small_available(len);
            for i in 0..n {
                assert!(p.alloc_small(len).is_some(), "len {len}: {i} of {n}");
            }
            assert!(p.alloc_small(len).is_none(), "len {len}: more than {n}");
        }
    }
}
