//! One queue: a TX ring and an RX ring with their event channel(s). A queue is driven
//! by one thread at a time (`&mut`); different queues run on different threads.

use alloc::sync::Arc;
use core::time::Duration;

use event_channel::{PollBudget, WaitOutcome};
use hv::env::EventChannel;

use crate::counters::{CounterSnapshot, QueueCounters};
use crate::error::TxError;
use crate::meta::{RxMeta, TxMeta};
use crate::rx::{RxFrameRef, RxQueue};
use crate::tx::TxQueue;

/// How long [`Queue::wait`] sleeps on one channel of a split pair before looking at
/// the other.
const SPLIT_WAIT_SLICE: Duration = Duration::from_millis(1);

/// Default [`crate::NetfrontConfig::busy_poll`]: a few tens of microseconds of polling,
/// longer than the backend takes for one batch, shorter than a scheduler tick.
pub const DEFAULT_BUSY_POLL: u32 = 2048;

/// One TX/RX ring pair of a vif (`struct netfront_queue`).
pub struct Queue<C> {
    index: u16,
    pub(crate) tx: TxQueue<C>,
    pub(crate) rx: RxQueue<C>,
    tx_chan: Arc<C>,
    /// The same channel as `tx_chan` unless event channels are split.
    rx_chan: Arc<C>,
    split: bool,
    counters: Arc<QueueCounters>,
    mtu: usize,
    /// Rounds to poll before sleeping, adapted to how soon the backend answers.
    poll: PollBudget,
}

impl<C: EventChannel> Queue<C> {
    pub(crate) fn new(
        index: u16,
        tx: TxQueue<C>,
        rx: RxQueue<C>,
        tx_chan: Arc<C>,
        rx_chan: Arc<C>,
        split: bool,
        counters: Arc<QueueCounters>,
    ) -> Self {
        Queue {
            index,
            tx,
            rx,
            tx_chan,
            rx_chan,
            split,
            counters,
            mtu: 1514,
            poll: PollBudget::new(DEFAULT_BUSY_POLL),
        }
    }

    /// Most poll rounds before the waits sleep (see
    /// [`crate::NetfrontConfig::busy_poll`]; the budget starts small and adapts).
    pub fn set_busy_poll(&mut self, rounds: u32) {
        self.poll = PollBudget::new(rounds);
    }

    /// Poll `ready` up to the poll budget's rounds; true as soon as it holds. Only
    /// reads of the shared ring indices: the backend's cache line is not written while
    /// polling.
    #[inline]
    fn poll(&self, timeout: Option<Duration>, ready: impl Fn(&Self) -> bool) -> bool {
        if timeout == Some(Duration::ZERO) {
            return false;
        }
        for _i in 0..self.poll.rounds() {
            if ready(self) {
                return true;
            }
            // If the backend's thread shares this CPU, let it run: polling only pays
            // while both sides are on CPUs at once.
            #[cfg(feature = "std")]
            if _i % 64 == 63 {
                std::thread::yield_now();
            }
            core::hint::spin_loop();
        }
        false
    }

    /// The largest frame the smoltcp device sends and expects (Ethernet header
    /// included).
    pub fn mtu(&self) -> usize {
        self.mtu
    }

    /// Set the MTU (clamped to what the negotiated features allow).
    pub fn set_mtu(&mut self, mtu: usize) {
        self.mtu = mtu.clamp(crate::ETH_HLEN + 46, self.tx.caps().max_frame_len());
    }

    pub(crate) fn into_parts(self) -> (TxQueue<C>, RxQueue<C>) {
        (self.tx, self.rx)
    }

    /// The queue's index (`queue-<index>` in the xenstore).
    pub fn index(&self) -> u16 {
        self.index
    }

    /// True if this queue has separate TX and RX event channels.
    pub fn split_event_channels(&self) -> bool {
        self.split
    }

    /// True once the backend broke a ring's protocol (the queue is disabled).
    pub fn is_broken(&self) -> bool {
        self.tx.is_broken() || self.rx.is_broken()
    }

    // ---- TX -------------------------------------------------------------------

    /// Queue a copy of `frame`. Published when the batch fills or on [`flush`].
    ///
    /// [`flush`]: Queue::flush
    #[inline]
    pub fn send(&mut self, frame: &[u8], meta: TxMeta) -> Result<(), TxError> {
        self.tx.send(frame, &meta)
    }

    /// Build a frame of `len` bytes straight into the granted TX pages:
    /// `fill(offset, segment)` writes bytes `offset..offset + segment.len()`.
    #[inline]
    pub fn send_with(
        &mut self,
        len: usize,
        meta: TxMeta,
        fill: impl FnMut(usize, &mut [u8]),
    ) -> Result<(), TxError> {
        self.tx.send_with(len, &meta, fill)
    }

    /// Build a frame of `len` bytes in one contiguous buffer: straight in the granted
    /// page when `len` fits one page (zero copy), else in a staging buffer copied into
    /// the pages. `f` always runs; the result says whether the frame was queued.
    #[inline]
    pub fn send_in_place<R>(
        &mut self,
        len: usize,
        meta: TxMeta,
        f: impl FnOnce(&mut [u8]) -> R,
    ) -> (R, Result<(), TxError>) {
        self.tx
            .send_contiguous(len, &meta, crate::tx::mode_of(&meta), f)
    }

    /// Queue several frames and publish them with one push; returns how many were
    /// queued.
    pub fn send_batch(&mut self, frames: &[&[u8]], meta: TxMeta) -> usize {
        self.tx.send_batch(frames, &meta)
    }

    /// Publish queued frames, notifying the backend only if it asked.
    #[inline]
    pub fn flush(&mut self) {
        self.tx.flush()
    }

    /// Collect TX responses (free pages and ids); returns how many were consumed.
    #[inline]
    pub fn reclaim(&mut self) -> usize {
        self.tx.reclaim()
    }

    /// Frames of `len` bytes that fit the TX ring now.
    pub fn tx_free_frames(&self, len: usize) -> usize {
        self.tx.free_frames(len, false)
    }

    /// Free TX slots (ring slots with a free page).
    pub fn tx_free_slots(&self) -> usize {
        self.tx.free_slots()
    }

    /// TX data slots in flight.
    pub fn tx_in_flight(&self) -> usize {
        self.tx.in_flight()
    }

    // ---- RX -------------------------------------------------------------------

    /// Copy the next frame into `buf`. Returns the frame's full length (more than
    /// `buf.len()` means it was truncated) and its metadata.
    #[inline]
    pub fn recv(&mut self, buf: &mut [u8]) -> Option<(usize, RxMeta)> {
        self.rx.recv_with(|f, meta| {
            f.copy_to(buf);
            (f.len(), meta)
        })
    }

    /// Hand the next frame to `f` in place, without copying.
    #[inline]
    pub fn recv_with<R>(&mut self, f: impl FnOnce(RxFrameRef<'_>, RxMeta) -> R) -> Option<R> {
        self.rx.recv_with(f)
    }

    /// Hand the next frame to `f` as one contiguous slice (in place when it fits one
    /// page). With `fill_blank_csum`, a frame flagged `NETRXF_csum_blank` gets its
    /// TCP/UDP checksum filled in first.
    #[inline]
    pub fn recv_contiguous<R>(
        &mut self,
        fill_blank_csum: bool,
        f: impl FnOnce(&[u8], RxMeta) -> R,
    ) -> Option<R> {
        self.rx.recv_contiguous(fill_blank_csum, f)
    }

    /// Repost every consumed RX buffer now.
    pub fn refill(&mut self) {
        self.rx.refill()
    }

    /// RX buffers posted to the backend.
    pub fn rx_posted(&self) -> usize {
        self.rx.posted()
    }

    // ---- waiting --------------------------------------------------------------

    /// Publish pending work, then sleep until a frame arrives or TX responses come
    /// back (if any are outstanding), or `timeout` passes. True if woken by an event
    /// or work is already there.
    pub fn wait(&mut self, timeout: Option<Duration>) -> bool {
        self.prepare_sleep();
        if self.poll(timeout, |q| {
            q.rx.has_pending() || (q.tx.in_flight() > 0 && q.tx.has_responses())
        }) {
            self.tx.reclaim();
            return true;
        }
        if self.rx.final_check() {
            return true;
        }
        if self.arm_tx() {
            return true;
        }
        self.sleep(|q| {
            if q.split {
                wait_either(&*q.rx_chan, &*q.tx_chan, timeout)
            } else {
                q.rx_chan.wait(timeout)
            }
        })
    }

    /// Sleep until a frame arrives (TX completions do not wake this).
    pub fn wait_rx(&mut self, timeout: Option<Duration>) -> bool {
        self.prepare_sleep();
        if self.poll(timeout, |q| q.rx.has_pending()) {
            return true;
        }
        if self.rx.final_check() {
            return true;
        }
        self.sleep(|q| q.rx_chan.wait(timeout))
    }

    /// Sleep until TX responses come back (e.g. after [`TxError::Busy`]).
    pub fn wait_tx(&mut self, timeout: Option<Duration>) -> bool {
        self.prepare_sleep();
        if self.tx.in_flight() > 0 && self.poll(timeout, |q| q.tx.has_responses()) {
            self.tx.reclaim();
            return true;
        }
        if self.arm_tx() {
            return true;
        }
        if self.tx.in_flight() == 0 {
            return true;
        }
        self.sleep(|q| q.tx_chan.wait(timeout))
    }

    /// Sleep in `wait` (true if an event ended it) after a fruitless poll, count the
    /// wake-up and adapt the poll budget to how soon it came.
    fn sleep(&mut self, wait: impl FnOnce(&Self) -> bool) -> bool {
        #[cfg(feature = "std")]
        let start = std::time::Instant::now();
        let woke = wait(self);
        #[cfg(feature = "std")]
        let slept = Some(start.elapsed());
        #[cfg(not(feature = "std"))]
        let slept = None;
        self.poll.after_sleep(WaitOutcome::of(woke, slept));
        if woke {
            self.counters.wakeups.add(1);
        }
        woke
    }

    fn prepare_sleep(&mut self) {
        self.tx.flush();
        self.rx.refill();
    }

    /// Reclaim TX responses and ask to be told of the next one while requests are in
    /// flight. True if responses raced in (reclaimed: there is room now).
    fn arm_tx(&mut self) -> bool {
        let mut any = self.tx.reclaim() > 0;
        while self.tx.in_flight() > 0 && self.tx.final_check() {
            any |= self.tx.reclaim() > 0;
            if self.tx.is_broken() {
                break;
            }
        }
        any
    }

    // ---- statistics -----------------------------------------------------------

    /// The live counters (shareable with a monitoring thread).
    pub fn counters(&self) -> &Arc<QueueCounters> {
        &self.counters
    }

    /// A snapshot of this queue's counters.
    pub fn stats(&self) -> CounterSnapshot {
        self.counters.snapshot()
    }
}

/// Wait on either of two channels: try both, then sleep on `a` in short slices,
/// looking at `b` between them.
fn wait_either<C: EventChannel>(a: &C, b: &C, timeout: Option<Duration>) -> bool {
    let mut left = timeout;
    loop {
        if b.try_consume() {
            return true;
        }
        let slice = match left {
            Some(l) => l.min(SPLIT_WAIT_SLICE),
            None => SPLIT_WAIT_SLICE,
        };
        if a.wait(Some(slice)) {
            return true;
        }
        if let Some(l) = left.as_mut() {
            *l = l.saturating_sub(slice);
            if l.is_zero() {
                return b.try_consume();
            }
        }
    }
}
