//! Frames waiting to be copied into one queue of a guest: a bounded FIFO of recycled
//! buffers. A port copies a frame in (taking a free buffer), the queue's RX thread
//! drains a batch out and hands the buffers back after the grant copy. When the FIFO
//! is full new frames are dropped and counted, as Linux's netback stops its queue at
//! `rx_queue_max`; memory never grows past `capacity` buffers of the largest frame seen.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::Thread;

use crate::frame::{Frame, OwnedFrame, MAX_FRAME_LEN};

struct Fifo {
    ready: VecDeque<OwnedFrame>,
    free: Vec<OwnedFrame>,
}

/// The inbound queue of one vif queue.
pub struct Inbound {
    fifo: Mutex<Fifo>,
    capacity: usize,
    /// Frames in `ready` (readable without the lock, for the RX thread's idle check).
    queued: AtomicUsize,
    /// Frames dropped because the FIFO was full or the frame too large.
    dropped: AtomicUsize,
    /// The RX thread to wake when frames arrive.
    waker: OnceLock<Thread>,
    /// Set while the RX thread sleeps waiting for frames.
    sleeping: AtomicBool,
    /// No more frames accepted (the queue is disconnecting).
    closed: AtomicBool,
}

impl Inbound {
    /// An empty queue holding at most `capacity` frames.
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            fifo: Mutex::new(Fifo {
                ready: VecDeque::with_capacity(capacity),
                free: Vec::with_capacity(capacity),
            }),
            capacity,
            queued: AtomicUsize::new(0),
            dropped: AtomicUsize::new(0),
            waker: OnceLock::new(),
            sleeping: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Fifo> {
        // A panic elsewhere while holding the lock cannot leave the FIFO inconsistent
        // (every update is a single push/pop), so keep going with the data.
        self.fifo.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Register the thread that drains this queue.
    pub(crate) fn set_waker(&self, t: Thread) {
        let _ = self.waker.set(t);
    }

    /// Copy `frames` in, applying `fixup` to each copy (e.g. a MAC swap). Returns how
    /// many were queued; the rest are dropped and counted.
    pub fn push_batch<'a>(
        &self,
        frames: impl IntoIterator<Item = Frame<'a>>,
        mut fixup: impl FnMut(&mut [u8]),
    ) -> usize {
        if self.closed.load(Ordering::Relaxed) {
            return 0;
        }
        let mut queued = 0;
        let mut dropped = 0;
        {
            let mut fifo = self.lock();
            for f in frames {
                if fifo.ready.len() >= self.capacity
                    || f.data.is_empty()
                    || f.data.len() > MAX_FRAME_LEN
                {
                    dropped += 1;
                    continue;
                }
                let mut buf = fifo.free.pop().unwrap_or_default();
                buf.set_copy(f.data, f.meta);
                fixup(buf.data_mut());
                fifo.ready.push_back(buf);
                queued += 1;
            }
            self.queued.store(fifo.ready.len(), Ordering::Release);
        }
        self.pushed(queued, dropped)
    }

    /// Queue `count` frames without copying them: for frame `j`, `fill(j, frame)` moves
    /// the bytes into a recycled frame (typically with [`OwnedFrame::exchange_buffer`],
    /// handing the producer the recycled allocation in return) and says whether it did.
    /// Frames beyond the capacity are not offered to `fill`; they count as dropped.
    /// Returns how many were queued.
    pub fn push_exchanging(
        &self,
        count: usize,
        mut fill: impl FnMut(usize, &mut OwnedFrame) -> bool,
    ) -> usize {
        if self.closed.load(Ordering::Relaxed) {
            return 0;
        }
        let mut queued = 0;
        let mut dropped = 0;
        {
            let mut fifo = self.lock();
            for j in 0..count {
                if fifo.ready.len() >= self.capacity {
                    dropped += count - j;
                    break;
                }
                let mut frame = fifo.free.pop().unwrap_or_default();
                if fill(j, &mut frame) && !frame.is_empty() && frame.len() <= MAX_FRAME_LEN {
                    fifo.ready.push_back(frame);
                    queued += 1;
                } else {
                    dropped += 1;
                    fifo.free.push(frame);
                }
            }
            self.queued.store(fifo.ready.len(), Ordering::Release);
        }
        self.pushed(queued, dropped)
    }

    /// After a push: count the drops, wake the consumer if anything was queued.
    fn pushed(&self, queued: usize, dropped: usize) -> usize {
        if dropped != 0 {
            self.dropped.fetch_add(dropped, Ordering::Relaxed);
        }
        if queued != 0 {
            self.wake();
        }
        queued
    }

    /// Queue one owned frame (e.g. a shared generator frame) without copying.
    pub fn push_owned(&self, frame: OwnedFrame) -> bool {
        if self.closed.load(Ordering::Relaxed) {
            return false;
        }
        let ok = {
            let mut fifo = self.lock();
            if fifo.ready.len() >= self.capacity {
                false
            } else {
                fifo.ready.push_back(frame);
                self.queued.store(fifo.ready.len(), Ordering::Release);
                true
            }
        };
        if ok {
            self.wake();
        } else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    fn wake(&self) {
        // Pairs with the SeqCst store of `sleeping` in the RX thread: either it sees
        // `queued` non-zero before parking, or we see it sleeping and unpark it.
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::Relaxed) {
            if let Some(t) = self.waker.get() {
                t.unpark();
            }
        }
    }

    /// Move up to `max` frames into `out`.
    pub(crate) fn drain_into(&self, out: &mut VecDeque<OwnedFrame>, max: usize) -> usize {
        if self.queued.load(Ordering::Acquire) == 0 {
            return 0;
        }
        let mut fifo = self.lock();
        let n = fifo.ready.len().min(max);
        out.extend(fifo.ready.drain(..n));
        self.queued.store(fifo.ready.len(), Ordering::Release);
        n
    }

    /// Give used buffers back for reuse.
    pub(crate) fn recycle(&self, used: &mut Vec<OwnedFrame>) {
        if used.is_empty() {
            return;
        }
        let mut fifo = self.lock();
        for mut f in used.drain(..) {
            f.release_shared();
            if fifo.free.len() < self.capacity {
                fifo.free.push(f);
            }
        }
    }

    /// Frames waiting.
    pub fn len(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// Nothing waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Frames dropped so far (and reset the count).
    pub(crate) fn take_dropped(&self) -> usize {
        self.dropped.swap(0, Ordering::Relaxed)
    }

    pub(crate) fn set_sleeping(&self, s: bool) {
        self.sleeping.store(s, Ordering::SeqCst);
    }

    /// Refuse further frames and wake the RX thread (disconnect).
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        if let Some(t) = self.waker.get() {
            t.unpark();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::OffloadMeta;

    fn f(data: &[u8]) -> Frame<'_> {
        Frame {
            data,
            meta: OffloadMeta::default(),
        }
    }

    #[test]
    fn bounded_fifo_drops_and_recycles() {
        let q = Inbound::new(2);
        let a = [1u8; 60];
        let b = [2u8; 70];
        let c = [3u8; 80];
        assert_eq!(q.push_batch([f(&a), f(&b), f(&c)], |_| {}), 2);
        assert_eq!(q.take_dropped(), 1);
        let mut out = VecDeque::new();
        assert_eq!(q.drain_into(&mut out, 10), 2);
        assert_eq!(out[0].data(), &a[..]);
        assert_eq!(out[1].data(), &b[..]);
        let mut used: Vec<_> = out.drain(..).collect();
        q.recycle(&mut used);
        // Recycled buffers are reused and fixups apply to the copy.
        assert_eq!(q.push_batch([f(&c)], |d| d[0] = 9), 1);
        q.drain_into(&mut out, 10);
        assert_eq!(out[0].data()[0], 9);
        assert_eq!(&out[0].data()[1..], &c[1..]);
        assert_eq!(
            q.push_batch([f(&[])], |_| {}),
            0,
            "empty frames are refused"
        );
    }

    #[test]
    fn exchanging_moves_buffers_without_copying_and_respects_capacity() {
        let q = Inbound::new(2);
        let mut bufs = [vec![7u8; 4096], vec![8u8; 4096], vec![9u8; 4096]];
        let ptrs: Vec<*const u8> = bufs.iter().map(|b| b.as_ptr()).collect();
        let queued = q.push_exchanging(3, |j, frame| {
            frame.exchange_buffer(&mut bufs[j], 100 + j, OffloadMeta::default())
        });
        assert_eq!(queued, 2, "capacity 2");
        assert_eq!(q.take_dropped(), 1);
        assert_eq!(bufs[2].len(), 4096, "the third frame was never offered");
        let mut out = VecDeque::new();
        q.drain_into(&mut out, 10);
        // The queued frames are the producer's allocations, not copies.
        assert_eq!(out[0].data().as_ptr(), ptrs[0]);
        assert_eq!(out[0].data(), &[7u8; 100][..]);
        assert_eq!(out[1].data().as_ptr(), ptrs[1]);
        assert_eq!(out[1].len(), 101);
        // The producer got the pool's (empty, fresh) buffers back in exchange.
        assert!(bufs[0].is_empty() && bufs[1].is_empty());
        // Recycled buffers go round: the next exchange hands one back.
        let mut used: Vec<_> = out.drain(..).collect();
        q.recycle(&mut used);
        let mut b = vec![1u8; 64];
        assert_eq!(
            q.push_exchanging(1, |_, f| f.exchange_buffer(
                &mut b,
                64,
                OffloadMeta::default()
            )),
            1
        );
        assert!(b.len() == 4096 && (b.as_ptr() == ptrs[0] || b.as_ptr() == ptrs[1]));
        // A fill that declines, or an empty or oversized frame, is dropped, not queued.
        q.drain_into(&mut out, 10);
        assert_eq!(q.push_exchanging(1, |_, _| false), 0);
        let mut empty = vec![0u8; 8];
        assert_eq!(
            q.push_exchanging(1, |_, f| f.exchange_buffer(
                &mut empty,
                0,
                OffloadMeta::default()
            )),
            0
        );
        let mut short = vec![0u8; 8];
        assert_eq!(
            q.push_exchanging(1, |_, f| f.exchange_buffer(
                &mut short,
                9,
                OffloadMeta::default()
            )),
            0,
            "a length past the buffer is refused"
        );
        assert_eq!(q.take_dropped(), 3);
    }
}
