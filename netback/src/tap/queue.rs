//! One TAP queue (one fd): framed I/O with the vnet header, batched until `EAGAIN`, and
//! counters.
//!
//! A TAP moves exactly one frame per `read`/`write` call, so batching means "call again
//! until the kernel says `EAGAIN`", not one syscall for many frames. Each call uses
//! `readv`/`writev` so the 12-byte vnet header and the frame's segments are handed to the
//! kernel where they lie, without first copying them into one buffer.
//!
//! Backpressure: `EAGAIN` on write means the TAP's socket send buffer is full. Nothing is
//! queued here; [`TapQueue::write_batch`] either stops and tells the caller how far it got
//! ([`Backpressure::Stop`]) or counts the rest as dropped ([`Backpressure::Drop`]).

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::{sys, TapError};
use crate::virtio_net_hdr::{VirtioNetHdr, VNET_HDR_LEN};

/// Largest frame a TAP can hand over: a 65535-byte IP datagram (a TSO super-frame), an
/// Ethernet header and one VLAN tag the kernel may insert from hardware-accelerated
/// tagging. Size receive buffers with this when TSO is enabled.
pub const MAX_FRAME_LEN: usize = 65535 + 14 + 4;

/// Most segments one frame may be written from (plus the header iovec).
pub const MAX_TX_SEGMENTS: usize = 64;

/// Most segments one frame may be read into.
const MAX_RX_SEGMENTS: usize = 16;

/// Counters of one queue. "rx" is frames read from the TAP (kernel → netback), "tx"
/// frames written to it (netback → kernel).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Frames read.
    pub rx_frames: u64,
    /// Bytes read (frames only, without vnet header).
    pub rx_bytes: u64,
    /// Frames read that did not fit the buffer and were discarded.
    pub rx_truncated: u64,
    /// Frames written.
    pub tx_frames: u64,
    /// Bytes written (frames only, without vnet header).
    pub tx_bytes: u64,
    /// Frames dropped because the TAP pushed back (`EAGAIN`) under [`Backpressure::Drop`].
    pub tx_dropped: u64,
    /// Frames the kernel rejected as malformed (`EINVAL`, e.g. a bogus vnet header).
    pub tx_errors: u64,
}

#[derive(Debug, Default)]
pub(super) struct AtomicStats {
    rx_frames: AtomicU64,
    rx_bytes: AtomicU64,
    rx_truncated: AtomicU64,
    tx_frames: AtomicU64,
    tx_bytes: AtomicU64,
    tx_dropped: AtomicU64,
    tx_errors: AtomicU64,
}

impl AtomicStats {
    /// Adds a batch's local counts (one atomic add per counter per batch, not per frame).
    pub(super) fn add(&self, d: &QueueStats) {
        let add = |c: &AtomicU64, v: u64| {
            if v != 0 {
                c.fetch_add(v, Ordering::Relaxed);
            }
        };
        add(&self.rx_frames, d.rx_frames);
        add(&self.rx_bytes, d.rx_bytes);
        add(&self.rx_truncated, d.rx_truncated);
        add(&self.tx_frames, d.tx_frames);
        add(&self.tx_bytes, d.tx_bytes);
        add(&self.tx_dropped, d.tx_dropped);
        add(&self.tx_errors, d.tx_errors);
    }

    fn snapshot(&self) -> QueueStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        QueueStats {
            rx_frames: g(&self.rx_frames),
            rx_bytes: g(&self.rx_bytes),
            rx_truncated: g(&self.rx_truncated),
            tx_frames: g(&self.tx_frames),
            tx_bytes: g(&self.tx_bytes),
            tx_dropped: g(&self.tx_dropped),
            tx_errors: g(&self.tx_errors),
        }
    }
}

/// Result of one read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOutcome {
    /// A frame of this many bytes (after the header) was read.
    Frame(usize),
    /// A frame did not fit the buffers and was discarded. The value is a lower bound of
    /// its length (the TAP does not report the full length of a cut frame).
    Truncated(usize),
    /// No frame is waiting (`EAGAIN`).
    WouldBlock,
}

/// Result of one write.
#[derive(Debug)]
pub enum WriteOutcome {
    /// The frame (this many bytes, header excluded) was accepted.
    Written(usize),
    /// The TAP pushed back (`EAGAIN`); nothing was written.
    WouldBlock,
    /// The kernel rejected this frame as malformed (`EINVAL`); later frames may still go.
    Rejected(std::io::Error),
}

/// A frame to write: its vnet header and the segments that make up the frame.
#[derive(Debug, Clone, Copy)]
pub struct TxFrame<'a> {
    /// The vnet header.
    pub hdr: VirtioNetHdr,
    /// Frame bytes, in order (up to [`MAX_TX_SEGMENTS`]).
    pub segs: &'a [&'a [u8]],
}

/// What to do when the TAP pushes back in the middle of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backpressure {
    /// Stop; the caller keeps `frames[result.consumed()..]` and retries later.
    Stop,
    /// Count the rest as dropped (`tx_dropped`) and return.
    Drop,
}

/// Result of [`TapQueue::write_batch`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TxBatchResult {
    /// Frames written.
    pub sent: usize,
    /// Frames the kernel rejected as malformed (skipped).
    pub rejected: usize,
    /// Frames dropped under [`Backpressure::Drop`].
    pub dropped: usize,
    /// True if the batch ended on `EAGAIN`.
    pub blocked: bool,
}

impl TxBatchResult {
    /// Frames dealt with (sent, rejected or dropped); the rest are still the caller's.
    pub fn consumed(&self) -> usize {
        self.sent + self.rejected + self.dropped
    }
}

/// Preallocated receive buffers for [`TapQueue::read_batch`]: no allocation per frame.
#[derive(Debug)]
pub struct RxBatch {
    /// One buffer per frame slot; each `Vec`'s length is always `frame_capacity`.
    bufs: Vec<Vec<u8>>,
    hdrs: Vec<VirtioNetHdr>,
    lens: Vec<usize>,
    len: usize,
    frame_capacity: usize,
}

impl RxBatch {
    /// Room for `frames` frames of up to `frame_capacity` bytes each.
    pub fn new(frames: usize, frame_capacity: usize) -> Self {
        Self {
            bufs: (0..frames).map(|_| vec![0u8; frame_capacity]).collect(),
            hdrs: vec![VirtioNetHdr::NONE; frames],
            lens: vec![0; frames],
            len: 0,
            frame_capacity,
        }
    }

    /// Lends frame `i`'s buffer to `f` together with the frame's length, so the frame
    /// can be moved out without copying: `f` may exchange the `Vec` for another one
    /// (e.g. a recycled buffer of the consumer's pool). Frame `i` is empty afterwards.
    /// Whatever buffer is left in the slot is grown back to the frame capacity by the
    /// next [`TapQueue::read_batch`], which allocates only while a pool warms up.
    pub fn lend_frame<R>(
        &mut self,
        i: usize,
        f: impl FnOnce(&mut Vec<u8>, usize) -> R,
    ) -> Option<R> {
        if i >= self.len {
            return None;
        }
        let len = std::mem::replace(&mut self.lens[i], 0);
        Some(f(&mut self.bufs[i], len))
    }

    /// Frames held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if no frame is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Maximum frames per batch.
    pub fn capacity(&self) -> usize {
        self.bufs.len()
    }

    /// Forgets the frames (buffers are kept).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Frame `i`: its header and bytes.
    pub fn get(&self, i: usize) -> Option<(&VirtioNetHdr, &[u8])> {
        if i >= self.len {
            return None;
        }
        Some((&self.hdrs[i], self.bufs[i].get(..self.lens[i])?))
    }

    /// Frame `i`, mutable (e.g. to finish a checksum in place).
    pub fn get_mut(&mut self, i: usize) -> Option<(&mut VirtioNetHdr, &mut [u8])> {
        if i >= self.len {
            return None;
        }
        Some((&mut self.hdrs[i], self.bufs[i].get_mut(..self.lens[i])?))
    }

    /// The frames held, in arrival order.
    pub fn iter(&self) -> impl Iterator<Item = (&VirtioNetHdr, &[u8])> {
        (0..self.len).filter_map(move |i| self.get(i))
    }
}

/// One queue of a TAP: a non-blocking fd carrying one frame per read/write, each
/// preceded by a 12-byte vnet header. `Send + Sync`: different threads may read and write
/// the same queue (the kernel serialises per call); counters are atomic.
#[derive(Debug)]
pub struct TapQueue {
    fd: OwnedFd,
    index: usize,
    pub(super) stats: AtomicStats,
    enabled: AtomicBool,
}

impl TapQueue {
    /// Wraps an already-configured queue fd: a non-blocking TAP fd with a 12-byte vnet
    /// header (e.g. one received over `SCM_RIGHTS`), or any fd that keeps message
    /// boundaries the same way (a `SOCK_SEQPACKET` socket, used by tests).
    pub fn from_fd(fd: OwnedFd, index: usize) -> Self {
        Self {
            fd,
            index,
            stats: AtomicStats::default(),
            enabled: AtomicBool::new(true),
        }
    }

    /// The queue number.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Attaches (`true`) or detaches (`false`) this queue from its multi-queue TAP
    /// (`TUNSETQUEUE` with `IFF_ATTACH_QUEUE` / `IFF_DETACH_QUEUE`). A detached queue keeps
    /// its fd but the kernel steers no traffic to it; netback uses this when a guest
    /// connects with fewer queues than the TAP was built with.
    /// Asking for the state the queue is already in is a no-op (the kernel would say
    /// `EINVAL`).
    pub fn set_enabled(&self, enabled: bool) -> Result<(), TapError> {
        if self.enabled.load(Ordering::Acquire) == enabled {
            return Ok(());
        }
        let mut ifr = sys::ifreq_named("");
        ifr.ifr_ifru.ifru_flags = if enabled {
            libc::IFF_ATTACH_QUEUE
        } else {
            libc::IFF_DETACH_QUEUE
        } as libc::c_short;
        sys::ioctl_ifreq(&self.fd, libc::TUNSETQUEUE, &mut ifr).map_err(|e| {
            TapError::os(
                "TUNSETQUEUE (attach/detach queue)",
                &format!("queue {}", self.index),
                e,
            )
        })?;
        self.enabled.store(enabled, Ordering::Release);
        Ok(())
    }

    /// Whether the queue is attached (see [`TapQueue::set_enabled`]).
    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Acquire)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> QueueStats {
        self.stats.snapshot()
    }

    /// Reads one frame into `buf`; its header into `hdr`.
    pub fn read_frame(
        &self,
        hdr: &mut VirtioNetHdr,
        buf: &mut [u8],
    ) -> Result<ReadOutcome, TapError> {
        let mut d = QueueStats::default();
        let r = self.read_one(hdr, &mut [IoSliceMut::new(buf)], &mut d);
        self.stats.add(&d);
        r
    }

    /// Reads one frame scattered over `bufs` (up to 16), header into `hdr`. Returns the
    /// frame length; the frame fills `bufs` in order.
    pub fn read_frame_vectored(
        &self,
        hdr: &mut VirtioNetHdr,
        bufs: &mut [&mut [u8]],
    ) -> Result<ReadOutcome, TapError> {
        if bufs.len() > MAX_RX_SEGMENTS {
            return Err(TapError::Io {
                op: "reading a frame",
                dev: format!("queue {}", self.index),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "more than 16 receive segments",
                ),
            });
        }
        let count = bufs.len();
        let mut iov: [IoSliceMut<'_>; MAX_RX_SEGMENTS] =
            std::array::from_fn(|_| IoSliceMut::new(&mut []));
        for (slot, b) in iov.iter_mut().zip(bufs.iter_mut()) {
            *slot = IoSliceMut::new(b);
        }
        let mut d = QueueStats::default();
        let r = self.read_one(hdr, &mut iov[..count], &mut d);
        self.stats.add(&d);
        r
    }

    fn read_one(
        &self,
        hdr: &mut VirtioNetHdr,
        bufs: &mut [IoSliceMut<'_>],
        d: &mut QueueStats,
    ) -> Result<ReadOutcome, TapError> {
        // Zeroed each time: the kernel does not write num_buffers (bytes 10..12).
        let mut hbuf = [0u8; VNET_HDR_LEN];
        // The TAP silently truncates a frame that does not fit and returns the bytes it
        // copied, so a frame exactly as long as the buffers and a cut one look alike. One
        // spare byte after the caller's buffers tells them apart.
        let mut spare = [0u8; 1];
        let capacity: usize = bufs.iter().map(|b| b.len()).sum();
        let mut iov: [IoSliceMut<'_>; MAX_RX_SEGMENTS + 2] =
            std::array::from_fn(|_| IoSliceMut::new(&mut []));
        iov[0] = IoSliceMut::new(&mut hbuf);
        let n_iov = bufs.len() + 2;
        for (slot, b) in iov[1..].iter_mut().zip(bufs.iter_mut()) {
            *slot = IoSliceMut::new(b);
        }
        iov[n_iov - 1] = IoSliceMut::new(&mut spare);
        let n = match sys::readv(self.fd.as_raw_fd(), &mut iov[..n_iov]) {
            Ok(Some(n)) => n,
            Ok(None) => return Ok(ReadOutcome::WouldBlock),
            Err(e) => {
                return Err(TapError::os(
                    "reading a frame",
                    &format!("queue {}", self.index),
                    e,
                ))
            }
        };
        if n < VNET_HDR_LEN {
            // Not even a header: cannot be a TAP frame; discard it.
            d.rx_truncated += 1;
            return Ok(ReadOutcome::Truncated(n));
        }
        let len = n - VNET_HDR_LEN;
        if len > capacity {
            d.rx_truncated += 1;
            return Ok(ReadOutcome::Truncated(len));
        }
        *hdr = VirtioNetHdr::from_array(&hbuf);
        d.rx_frames += 1;
        d.rx_bytes += len as u64;
        Ok(ReadOutcome::Frame(len))
    }

    /// Reads frames into `batch` (after clearing it) until `EAGAIN` or the batch is full.
    /// Truncated frames are counted and skipped. Returns the number of frames read.
    pub fn read_batch(&self, batch: &mut RxBatch) -> Result<usize, TapError> {
        batch.len = 0;
        let mut d = QueueStats::default();
        let mut result = Ok(());
        while batch.len < batch.bufs.len() {
            let i = batch.len;
            // A buffer lent away by `lend_frame` may have come back shorter.
            if batch.bufs[i].len() < batch.frame_capacity {
                batch.bufs[i].resize(batch.frame_capacity, 0);
            }
            let mut hdr = VirtioNetHdr::NONE;
            match self.read_one(&mut hdr, &mut [IoSliceMut::new(&mut batch.bufs[i])], &mut d) {
                Ok(ReadOutcome::Frame(n)) => {
                    batch.hdrs[i] = hdr;
                    batch.lens[i] = n;
                    batch.len += 1;
                }
                Ok(ReadOutcome::Truncated(_)) => {}
                Ok(ReadOutcome::WouldBlock) => break,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        self.stats.add(&d);
        // Deliver what was read before an error; a persistent error shows up again on
        // the next call, which then reads nothing and returns it.
        match result {
            Err(e) if batch.len == 0 => Err(e),
            _ => Ok(batch.len),
        }
    }

    /// Writes one frame: `hdr` followed by `segs` (up to [`MAX_TX_SEGMENTS`]).
    pub fn write_frame(
        &self,
        hdr: &VirtioNetHdr,
        segs: &[&[u8]],
    ) -> Result<WriteOutcome, TapError> {
        let mut d = QueueStats::default();
        let r = self.write_one(hdr, segs, &mut d);
        self.stats.add(&d);
        r
    }

    fn write_one(
        &self,
        hdr: &VirtioNetHdr,
        segs: &[&[u8]],
        d: &mut QueueStats,
    ) -> Result<WriteOutcome, TapError> {
        if segs.len() > MAX_TX_SEGMENTS {
            d.tx_errors += 1;
            return Ok(WriteOutcome::Rejected(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "frame has more than 64 segments",
            )));
        }
        let hbuf = hdr.to_bytes();
        let mut iov = [IoSlice::new(&[]); MAX_TX_SEGMENTS + 1];
        iov[0] = IoSlice::new(&hbuf);
        for (slot, s) in iov[1..].iter_mut().zip(segs) {
            *slot = IoSlice::new(s);
        }
        let len: usize = segs.iter().map(|s| s.len()).sum();
        match sys::writev(self.fd.as_raw_fd(), &iov[..segs.len() + 1]) {
            Ok(Some(_)) => {
                d.tx_frames += 1;
                d.tx_bytes += len as u64;
                Ok(WriteOutcome::Written(len))
            }
            Ok(None) => Ok(WriteOutcome::WouldBlock),
            // EINVAL: malformed header/frame; EMSGSIZE/EFAULT: bad size/segments. The
            // frame is lost but the queue is fine.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINVAL) | Some(libc::EMSGSIZE) | Some(libc::EFAULT)
                ) =>
            {
                d.tx_errors += 1;
                Ok(WriteOutcome::Rejected(e))
            }
            Err(e) => Err(TapError::os(
                "writing a frame",
                &format!("queue {}", self.index),
                e,
            )),
        }
    }

    /// Writes `frames` in order until done or the TAP pushes back. Malformed frames are
    /// counted (`tx_errors`) and skipped. See [`Backpressure`] for what happens on `EAGAIN`.
    pub fn write_batch(
        &self,
        frames: &[TxFrame<'_>],
        on_full: Backpressure,
    ) -> Result<TxBatchResult, TapError> {
        let mut d = QueueStats::default();
        let mut res = TxBatchResult::default();
        let mut outcome = Ok(());
        for f in frames {
            match self.write_one(&f.hdr, f.segs, &mut d) {
                Ok(WriteOutcome::Written(_)) => res.sent += 1,
                Ok(WriteOutcome::Rejected(_)) => res.rejected += 1,
                Ok(WriteOutcome::WouldBlock) => {
                    res.blocked = true;
                    if on_full == Backpressure::Drop {
                        res.dropped = frames.len() - res.sent - res.rejected;
                        d.tx_dropped += res.dropped as u64;
                    }
                    break;
                }
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            }
        }
        self.stats.add(&d);
        outcome.map(|()| res)
    }
}

impl AsFd for TapQueue {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for TapQueue {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
