//! Host → guest: what the kernel sends to the vif is read from TAP queue *i* and
//! queued for the guest on vif queue *i* (the kernel already steered each flow to one
//! TAP queue, so flows stay in order).
//!
//! By default netback's RX thread of that queue reads the TAP itself
//! ([`source`], a [`RxSource`]): when it has nothing left for the guest it drains the
//! TAP in batches (`read_batch`: `readv` until `EAGAIN`), and when the TAP is empty it
//! sleeps in `epoll_wait`. While the guest has no room it does not read, so frames
//! wait in the kernel's TAP queue, which drops beyond its `txqueuelen` (Linux's
//! netback likewise stops the vif's queue and leaves the rest to the qdisc).
//!
//! With `TapPortConfig::reader_threads` one thread per TAP queue reads instead
//! ([`run`]) and hands frames over through the inbound queue. While that queue is
//! above the high-water mark the thread stops reading for a bounded time, leaving
//! frames in the kernel's queue; if the guest still does not catch up, frames are
//! read and dropped (counted).
//!
//! Either way each frame is made valid for this guest first ([`rx_action`]): blank
//! checksums it cannot take are completed, super-frames of a GSO type it did not
//! negotiate are segmented. Nothing here grows without bound.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::policy::{canonical_tcp_zero, rx_action, GuestRxCaps, RxAction, RxDropReason};
use super::{TapVif, VifStats};
use crate::frame::{Frame, OffloadMeta};
use crate::offload::{complete_partial_checksum, TcpSegmenter};
use crate::port::{RxSource, VifLink};
use crate::tap::{Epoll, Events, Interest, RxBatch, MAX_FRAME_LEN};

/// Longest sleep in `epoll_wait` before the stop flag is looked at again (the stop
/// eventfd normally wakes the thread at once).
const IDLE_WAIT: Duration = Duration::from_millis(500);
/// How long to hold off reading while the guest's queue is above the high-water mark.
const BACKPRESSURE_WAIT: Duration = Duration::from_millis(2);
/// Step of that wait.
const BACKPRESSURE_STEP: Duration = Duration::from_micros(50);
/// Room for the segments of one super-frame cut in software, flushed when full.
const SEGMENT_BUF: usize = 2 * MAX_FRAME_LEN;
/// Most segments queued per flush.
const SEGMENTS_PER_FLUSH: usize = 64;
/// Frames at least this long reach the guest's queue by buffer exchange, not copy.
const EXCHANGE_MIN: usize = 2048;
const TOKEN_TAP: u64 = 0;
const TOKEN_STOP: u64 = 1;

/// An `eventfd` the port writes to stop the reader threads of a vif.
#[derive(Debug)]
pub(super) struct StopFd(OwnedFd);

impl StopFd {
    pub(super) fn new() -> io::Result<Self> {
        // SAFETY: eventfd takes an initial value and flags and returns a new fd or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the fd was just created and nothing else owns it.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Makes the eventfd readable (for good: it is never read, so every waiter wakes).
    pub(super) fn signal(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live local buffer to an eventfd we own.
        let r = unsafe { libc::write(self.0.as_raw_fd(), one.as_ptr().cast(), one.len()) };
        if r < 0 {
            log::warn!("tap: stopping readers: {}", io::Error::last_os_error());
        }
    }
}

impl AsRawFd for StopFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// Reader settings taken from the port's configuration.
#[derive(Debug, Clone, Copy)]
pub(super) struct ReaderConfig {
    pub batch: usize,
    pub high_water: usize,
}

/// Per-thread state of one TAP queue's reader.
struct Reader {
    vif: Arc<TapVif>,
    link: Arc<VifLink>,
    queue: usize,
    caps: GuestRxCaps,
    cfg: ReaderConfig,
    batch: RxBatch,
    actions: Vec<RxAction>,
    metas: Vec<OffloadMeta>,
    seg_buf: Box<[u8]>,
    seg_lens: Vec<(usize, usize)>,
}

/// Runs the reader of TAP queue `queue` in a thread of its own until the vif's stop
/// eventfd fires (`TapPortConfig::reader_threads`).
pub(super) fn run(vif: Arc<TapVif>, link: Arc<VifLink>, queue: usize, cfg: ReaderConfig) {
    let mut r = Reader::new(vif, link, queue, cfg);
    if let Err(e) = r.run() {
        log::error!("{}: TAP queue {queue} reader stopped: {e}", r.vif.id);
    }
}

/// The reader of TAP queue `queue` as a source netback's RX thread of the same vif
/// queue reads itself (the default). `None` if the queue or its epoll set cannot be
/// had (the RX thread then waits on its inbound queue, which nothing fills: the vif
/// gets no host traffic, as with a failed TAP).
pub(super) fn source(
    vif: Arc<TapVif>,
    link: Arc<VifLink>,
    queue: usize,
    cfg: ReaderConfig,
) -> Option<Box<dyn RxSource>> {
    let ep = match Epoll::new() {
        Ok(ep) => ep,
        Err(e) => {
            log::error!("{}: TAP queue {queue}: no epoll set: {e}", vif.id);
            return None;
        }
    };
    let q = vif.tap.queue(queue)?;
    let added = ep
        .add(q, TOKEN_TAP, Interest::READABLE)
        .and_then(|()| ep.add(&vif.stop_fd, TOKEN_STOP, Interest::READABLE));
    if let Err(e) = added {
        log::error!("{}: TAP queue {queue}: epoll: {e}", vif.id);
        return None;
    }
    Some(Box::new(PulledReader {
        r: Reader::new(vif, link, queue, cfg),
        ep,
        events: Events::with_capacity(2),
    }))
}

/// A TAP queue read from netback's RX thread, as Linux's guest-rx kthread takes the
/// frames the stack queued for the vif: one thread per vif queue instead of two, so a
/// frame from the host costs one wake-up fewer on its way to the guest. Measured
/// kernel → guest TCP with this kernel's BBR sender (whose window follows the path's
/// latency), 14 A/B pairs: faster in 11, median +8 % and +14 % in two sets; with a
/// cubic sender, the same within noise. Backpressure is the kernel's: while the guest
/// has no room the RX thread does not read, frames wait in the TAP's queue and the
/// kernel drops beyond its `txqueuelen` (counted in the TAP's `tx_dropped`).
struct PulledReader {
    r: Reader,
    ep: Epoll,
    events: Events,
}

impl RxSource for PulledReader {
    fn pull(&mut self) -> usize {
        let r = &mut self.r;
        let read = match r.vif.tap.queue(r.queue) {
            Some(q) => q.read_batch(&mut r.batch),
            None => return 0,
        };
        match read {
            Ok(0) => 0,
            Ok(n) => {
                r.deliver();
                n
            }
            Err(e) => {
                log::warn!("{}: TAP queue {} read: {e}", r.vif.id, r.queue);
                r.vif.stats.add(&r.vif.stats.read_errors, 1);
                0
            }
        }
    }

    fn wait(&mut self, timeout: Duration) -> bool {
        // The stop eventfd stays readable once fired: sleep instead of spinning on
        // it until netback stops this thread.
        if self.r.vif.stopping() {
            std::thread::sleep(timeout);
            return false;
        }
        match self.ep.wait(&mut self.events, Some(timeout)) {
            Ok(n) => n > 0,
            Err(e) => {
                log::warn!("{}: TAP queue {} epoll: {e}", self.r.vif.id, self.r.queue);
                std::thread::sleep(timeout);
                false
            }
        }
    }
}

impl Reader {
    fn new(vif: Arc<TapVif>, link: Arc<VifLink>, queue: usize, cfg: ReaderConfig) -> Self {
        Reader {
            caps: GuestRxCaps::from_features(&link.features()),
            vif,
            link,
            queue,
            cfg,
            batch: RxBatch::new(cfg.batch.max(1), MAX_FRAME_LEN),
            actions: Vec::with_capacity(cfg.batch),
            metas: Vec::with_capacity(cfg.batch),
            seg_buf: vec![0u8; SEGMENT_BUF].into_boxed_slice(),
            seg_lens: Vec::with_capacity(SEGMENTS_PER_FLUSH),
        }
    }

    fn run(&mut self) -> io::Result<()> {
        let vif = self.vif.clone();
        let Some(q) = vif.tap.queue(self.queue) else {
            return Ok(());
        };
        let ep = Epoll::new()?;
        ep.add(q, TOKEN_TAP, Interest::READABLE)?;
        ep.add(&self.vif.stop_fd, TOKEN_STOP, Interest::READABLE)?;
        let mut events = Events::with_capacity(2);
        while !self.vif.stopping() {
            self.hold_off_while_guest_is_full();
            match q.read_batch(&mut self.batch) {
                Ok(0) => {
                    ep.wait(&mut events, Some(IDLE_WAIT))?;
                }
                Ok(_) => self.deliver(),
                Err(e) => {
                    // A TAP that errors keeps erroring: report it and wait instead of
                    // spinning on it.
                    log::warn!("{}: TAP queue {} read: {e}", self.vif.id, self.queue);
                    self.vif.stats.add(&self.vif.stats.read_errors, 1);
                    ep.wait(&mut events, Some(Duration::from_millis(100)))?;
                }
            }
        }
        Ok(())
    }

    /// Leave frames in the kernel while the guest's queue is above the high-water mark,
    /// for a bounded time.
    fn hold_off_while_guest_is_full(&self) {
        if self.link.queue_len(self.queue) < self.cfg.high_water {
            return;
        }
        self.vif.stats.add(&self.vif.stats.backpressure_waits, 1);
        let start = Instant::now();
        while self.link.queue_len(self.queue) >= self.cfg.high_water
            && start.elapsed() < BACKPRESSURE_WAIT
            && !self.vif.stopping()
        {
            std::thread::sleep(BACKPRESSURE_STEP);
        }
    }

    /// Makes every frame of the batch valid for the guest and queues it, in order.
    fn deliver(&mut self) {
        let stats = &self.vif.stats;
        let n = self.batch.len();
        self.actions.clear();
        self.metas.clear();
        // Pass 1, in place: decide, and finish checksums the guest cannot take.
        for i in 0..n {
            let Some((hdr, data)) = self.batch.get_mut(i) else {
                break;
            };
            let mut action = rx_action(hdr, data, &self.caps);
            let mut meta = OffloadMeta::default();
            match action {
                RxAction::Deliver(m) => meta = m,
                RxAction::CompleteChecksum {
                    csum_start,
                    csum_offset,
                } => {
                    if complete_partial_checksum(data, csum_start, csum_offset).is_ok() {
                        canonical_tcp_zero(data, csum_start, csum_offset);
                        stats.add(&stats.to_guest_csum_filled, 1);
                    } else {
                        action = RxAction::Drop(RxDropReason::BadChecksumOffsets);
                        stats.add(&stats.to_guest_bad, 1);
                    }
                }
                RxAction::Segment { .. } => {}
                RxAction::Drop(why) => {
                    log::debug!("{}: dropping a frame from the TAP: {why:?}", self.vif.id);
                    stats.add(&stats.to_guest_bad, 1);
                }
            }
            self.actions.push(action);
            self.metas.push(meta);
        }
        // Pass 2: runs of plain frames go in one batch; a super-frame to segment or a
        // dropped frame ends a run.
        let mut run_start = 0;
        for i in 0..self.actions.len() {
            match self.actions[i] {
                RxAction::Deliver(_) | RxAction::CompleteChecksum { .. } => {}
                RxAction::Segment { mss } => {
                    self.flush_run(run_start, i);
                    self.segment(i, mss);
                    run_start = i + 1;
                }
                RxAction::Drop(_) => {
                    self.flush_run(run_start, i);
                    run_start = i + 1;
                }
            }
        }
        self.flush_run(run_start, self.actions.len());
    }

    /// Queues frames `from..to` of the batch for the guest. Frames of at least
    /// [`EXCHANGE_MIN`] bytes move by exchanging buffers with the guest queue's pool
    /// (no copy); smaller ones are copied, which costs less than growing a small pooled
    /// buffer to the TAP's maximum frame size.
    fn flush_run(&mut self, from: usize, to: usize) {
        if from >= to {
            return;
        }
        if let Some(cap) = self.vif.capture() {
            let batch = &self.batch;
            cap.write_frames((from..to).filter_map(|j| {
                let (_, data) = batch.get(j)?;
                Some(Frame {
                    data,
                    meta: self.metas[j],
                })
            }));
        }
        let (batch, metas) = (&mut self.batch, &self.metas);
        let queued = self
            .link
            .send_exchanging_on(self.queue, to - from, |k, frame| {
                let j = from + k;
                let meta = metas[j];
                match batch.get(j) {
                    Some((_, data)) if data.len() < EXCHANGE_MIN => {
                        frame.set_copy(data, meta);
                        true
                    }
                    Some(_) => batch
                        .lend_frame(j, |buf, len| frame.exchange_buffer(buf, len, meta))
                        .unwrap_or(false),
                    None => false,
                }
            });
        self.count_queued(&self.vif.stats, to - from, queued);
    }

    fn count_queued(&self, stats: &VifStats, offered: usize, queued: usize) {
        stats.add(&stats.to_guest_frames, queued as u64);
        stats.add(&stats.to_guest_dropped, (offered - queued) as u64);
    }

    /// Cuts frame `i` into `mss`-byte segments and queues them.
    fn segment(&mut self, i: usize, mss: u16) {
        let stats = &self.vif.stats;
        let Some((_, data)) = self.batch.get(i) else {
            return;
        };
        let mut seg = match TcpSegmenter::new(data, mss) {
            Ok(s) => s,
            Err(e) => {
                log::debug!("{}: cannot segment a TAP super-frame: {e}", self.vif.id);
                stats.add(&stats.to_guest_bad, 1);
                return;
            }
        };
        stats.add(&stats.to_guest_segmented, 1);
        let max = seg.max_segment_len();
        let mut used = 0;
        self.seg_lens.clear();
        loop {
            if used + max > self.seg_buf.len() || self.seg_lens.len() == SEGMENTS_PER_FLUSH {
                Self::flush_segments(
                    &self.vif,
                    &self.link,
                    self.queue,
                    &self.seg_buf,
                    &self.seg_lens,
                );
                self.seg_lens.clear();
                used = 0;
            }
            match seg.next_into(&mut self.seg_buf[used..]) {
                None => break,
                Some(Ok(len)) => {
                    self.seg_lens.push((used, len));
                    used += len;
                }
                Some(Err(e)) => {
                    log::debug!("{}: segmenting: {e}", self.vif.id);
                    stats.add(&stats.to_guest_bad, 1);
                    break;
                }
            }
        }
        Self::flush_segments(
            &self.vif,
            &self.link,
            self.queue,
            &self.seg_buf,
            &self.seg_lens,
        );
        self.seg_lens.clear();
    }

    fn flush_segments(
        vif: &TapVif,
        link: &VifLink,
        queue: usize,
        buf: &[u8],
        lens: &[(usize, usize)],
    ) {
        if lens.is_empty() {
            return;
        }
        // Each segment carries a full, freshly computed checksum.
        let frames = lens.iter().map(|&(off, len)| Frame {
            data: &buf[off..off + len],
            meta: OffloadMeta::default(),
        });
        if let Some(cap) = vif.capture() {
            cap.write_frames(frames.clone());
        }
        let queued = link.send_batch_on(queue, frames, |_| {});
        let stats = &vif.stats;
        stats.add(&stats.to_guest_segments, lens.len() as u64);
        stats.add(&stats.to_guest_frames, queued as u64);
        stats.add(&stats.to_guest_dropped, (lens.len() - queued) as u64);
    }
}
