//! The TX request-id free list (Linux netfront's `tx_skb_freelist` /
//! `get_id_from_list` / `add_id_to_list`).
//!
//! Every data slot of a TX packet carries a distinct `id`; the id also names the
//! pre-granted page the slot's bytes sit in, and comes back in the response. The list
//! is a stack (recently freed pages are warm in cache) plus an in-flight bitmap so a
//! response naming an id that is not in flight — a backend bug — is detected instead
//! of corrupting the list.

use alloc::vec::Vec;

/// Why an id could not be returned to the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdError {
    /// The id is not below the pool size.
    OutOfRange(u16),
    /// The id is not in flight (already freed, or never handed out).
    NotInFlight(u16),
}

/// A fixed pool of ids `0..size`.
#[derive(Debug)]
pub struct IdFreeList {
    free: Vec<u16>,
    in_flight: Vec<bool>,
}

impl IdFreeList {
    /// All of `0..size` free (`size` at most 65536).
    pub fn new(size: usize) -> Self {
        let size = size.min(1 << 16);
        // Pop order 0, 1, 2, ...: the last element is popped first.
        let free = (0..size).rev().map(|i| i as u16).collect();
        IdFreeList {
            free,
            in_flight: alloc::vec![false; size],
        }
    }

    /// Ids in the pool.
    pub fn capacity(&self) -> usize {
        self.in_flight.len()
    }

    /// Ids free.
    #[inline(always)]
    pub fn available(&self) -> usize {
        self.free.len()
    }

    /// Take a free id.
    #[inline(always)]
    pub fn pop(&mut self) -> Option<u16> {
        let id = self.free.pop()?;
        if let Some(f) = self.in_flight.get_mut(usize::from(id)) {
            *f = true;
        }
        Some(id)
    }

    /// True if `id` is in flight.
    #[inline(always)]
    pub fn is_in_flight(&self, id: u16) -> bool {
        self.in_flight
            .get(usize::from(id))
            .copied()
            .unwrap_or(false)
    }

    /// Return an id that was in flight.
    #[inline(always)]
    pub fn free(&mut self, id: u16) -> Result<(), IdError> {
        match self.in_flight.get_mut(usize::from(id)) {
            None => Err(IdError::OutOfRange(id)),
            Some(false) => Err(IdError::NotInFlight(id)),
            Some(f) => {
                *f = false;
                // Cannot exceed capacity: each id is pushed only after being popped.
                self.free.push(id);
                Ok(())
            }
        }
    }

    /// Free every id (the backend is gone; nothing in flight will be answered).
    pub fn reset(&mut self) {
        let size = self.in_flight.len();
        self.free.clear();
        self.free.extend((0..size).rev().map(|i| i as u16));
        self.in_flight.iter_mut().for_each(|f| *f = false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_every_id_once_then_runs_dry() {
        let mut l = IdFreeList::new(256);
        let mut seen = [false; 256];
        for _ in 0..256 {
            let id = l.pop().unwrap();
            assert!(!seen[id as usize], "id {id} handed out twice");
            seen[id as usize] = true;
        }
        assert_eq!(l.pop(), None);
        assert_eq!(l.available(), 0);
    }

    #[test]
    fn rejects_double_free_and_out_of_range() {
        let mut l = IdFreeList::new(4);
        let a = l.pop().unwrap();
        assert_eq!(l.free(a), Ok(()));
        assert_eq!(l.free(a), Err(IdError::NotInFlight(a)));
        assert_eq!(l.free(4), Err(IdError::OutOfRange(4)));
        assert_eq!(l.free(3), Err(IdError::NotInFlight(3)));
        assert_eq!(l.available(), 4);
    }

    #[test]
    fn freed_id_is_reused_first_and_reset_restores_all() {
        let mut l = IdFreeList::new(8);
        let ids: Vec<u16> = (0..5).map(|_| l.pop().unwrap()).collect();
        l.free(ids[2]).unwrap();
        assert_eq!(l.pop(), Some(ids[2]));
        l.reset();
        assert_eq!(l.available(), 8);
        assert!(!l.is_in_flight(ids[0]));
    }
}
