//! The guest's grant-reference allocator: an O(1) free list threaded through an
//! array, as Linux's `gnttab_list` / `gnttab_free_head` are.

use alloc::vec::Vec;

use crate::abi::{GrantRef, GNTTAB_NR_RESERVED_ENTRIES};

/// Marks a ref that is currently handed out (not on the free list).
const IN_USE: u32 = u32::MAX;
/// Ends the free list.
const END: u32 = u32::MAX - 1;

/// Free list of grant refs `GNTTAB_NR_RESERVED_ENTRIES..nr_entries`.
///
/// `next[r]` is the next free ref after `r` while `r` is free, and `IN_USE` while it
/// is handed out, so one array answers both "what is free" and "is this ref mine".
#[derive(Debug)]
pub(crate) struct FreeList {
    next: Vec<u32>,
    head: u32,
    free: u32,
}

impl FreeList {
    /// All non-reserved refs of a table with `nr_entries` entries start free.
    pub(crate) fn new(nr_entries: u32) -> Self {
        // Refs at or above END cannot be represented in the list; such tables (4 G
        // entries) do not exist, cap rather than overflow.
        let nr = nr_entries.min(END);
        let first = GNTTAB_NR_RESERVED_ENTRIES.min(nr);
        let mut next = Vec::with_capacity(nr as usize);
        next.extend((0..nr).map(|r| {
            if r < first {
                IN_USE // reserved refs are never on the list
            } else if r + 1 < nr {
                r + 1
            } else {
                END
            }
        }));
        FreeList {
            next,
            head: if first < nr { first } else { END },
            free: nr - first,
        }
    }

    /// Take a free ref, or `None` when all are handed out.
    pub(crate) fn alloc(&mut self) -> Option<GrantRef> {
        let r = self.head;
        let slot = self.next.get_mut(r as usize)?;
        self.head = *slot;
        *slot = IN_USE;
        self.free -= 1;
        Some(r)
    }

    /// Return `r`; false (and nothing changes) if `r` was not handed out or is reserved.
    pub(crate) fn free(&mut self, r: GrantRef) -> bool {
        if r < GNTTAB_NR_RESERVED_ENTRIES || !self.is_allocated(r) {
            return false;
        }
        if let Some(slot) = self.next.get_mut(r as usize) {
            *slot = self.head;
            self.head = r;
            self.free += 1;
            true
        } else {
            false
        }
    }

    /// Whether `r` is a non-reserved ref that is currently handed out.
    pub(crate) fn is_allocated(&self, r: GrantRef) -> bool {
        r >= GNTTAB_NR_RESERVED_ENTRIES && self.next.get(r as usize) == Some(&IN_USE)
    }

    /// How many refs are free.
    pub(crate) fn free_count(&self) -> u32 {
        self.free
    }
}
