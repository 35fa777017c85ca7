//! Test frames: a pool of buffers and a stamp that lets the receiver verify each frame.
//!
//! Every frame carries its sequence number in its first 8 bytes and, mixed with
//! [`TAIL_MAGIC`], in its last 8 bytes. Checking both ends catches lost, duplicated,
//! reordered and truncated frames at the cost of two loads — a full checksum would cost
//! as much as the copy being measured and hide the path's own cost at large sizes.

use std::fmt;

/// The smallest frame loadtest can stamp (head and tail stamp must not overlap).
pub const MIN_FRAME: u32 = 16;

/// The largest frame loadtest accepts (4 MiB: far above a 64 KiB GSO frame, small
/// enough that the pools stay a few tens of MiB).
pub const MAX_FRAME: u32 = 4 << 20;

/// `NET_TX_RING_SIZE` × `XEN_PAGE_SIZE`: the most bytes one netif ring can hold in flight
/// (256 slots of one 4 KiB page each). Pools and rings of the limit and the peers are
/// sized to this so they have the same working set as one pvnet queue.
pub const NETIF_RING_BYTES: usize = 256 * 4096;

/// `NET_TX_RING_SIZE`: slots in one netif ring (4 KiB ring page, 12-byte
/// `netif_tx_request` entries after the 64-byte header, rounded down to a power of two).
pub const NETIF_RING_SLOTS: usize = 256;

/// Mixed into the tail stamp so a frame of all-equal words cannot pass by accident.
pub const TAIL_MAGIC: u64 = 0x7076_6e65_745f_7461; // "pvnet_ta"

/// How many distinct frame buffers the limit and the peers cycle through: one per ring
/// slot, but no more bytes than one netif ring holds, and at least 16 so large frames
/// still rotate through several buffers.
pub fn pool_frames(frame_size: u32) -> usize {
    let size = (frame_size as usize).max(1);
    (NETIF_RING_BYTES / size).clamp(16, NETIF_RING_SLOTS)
}

/// Writes `seq` into the head and tail stamps of `frame` (at least [`MIN_FRAME`] bytes;
/// shorter frames are left unstamped and will fail [`check`]).
#[inline]
pub fn stamp(frame: &mut [u8], seq: u64) {
    let n = frame.len();
    if n < MIN_FRAME as usize {
        return;
    }
    frame[..8].copy_from_slice(&seq.to_le_bytes());
    frame[n - 8..].copy_from_slice(&(seq ^ TAIL_MAGIC).to_le_bytes());
}

/// Why a received frame is not the expected one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameFault {
    /// Length received.
    pub len: usize,
    /// Sequence number in the head stamp.
    pub head: u64,
    /// Sequence number recovered from the tail stamp.
    pub tail: u64,
}

impl fmt::Display for FrameFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} bytes, head stamp {}, tail stamp {}",
            self.len, self.head, self.tail
        )
    }
}

/// Checks that `frame` is `expected_len` bytes long and stamped with `seq` at both ends.
#[inline]
pub fn check(frame: &[u8], expected_len: usize, seq: u64) -> Result<(), FrameFault> {
    let n = frame.len();
    let word = |at: usize| {
        frame
            .get(at..at + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_le_bytes)
    };
    let head = word(0);
    let tail = n.checked_sub(8).and_then(word).map(|t| t ^ TAIL_MAGIC);
    if n == expected_len && head == Some(seq) && tail == Some(seq) {
        return Ok(());
    }
    Err(FrameFault {
        len: n,
        head: head.unwrap_or(u64::MAX),
        tail: tail.unwrap_or(u64::MAX),
    })
}

/// A pool of equally sized frames in one allocation, filled with a non-zero pattern so
/// no page is left as shared zero pages.
pub struct FramePool {
    buf: Vec<u8>,
    size: usize,
    count: usize,
}

impl FramePool {
    /// A pool of [`pool_frames`]`(frame_size)` frames.
    pub fn for_size(frame_size: u32) -> Self {
        Self::new(frame_size as usize, pool_frames(frame_size))
    }

    /// A pool of `count` frames of `size` bytes.
    pub fn new(size: usize, count: usize) -> Self {
        let count = count.max(1);
        let buf = (0..size * count).map(|i| (i % 251) as u8 | 1).collect();
        FramePool { buf, size, count }
    }

    /// Number of frames.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Frame size in bytes.
    pub fn frame_size(&self) -> usize {
        self.size
    }

    /// The frame used for sequence number `seq` (the pool is cycled).
    #[inline]
    pub fn frame(&self, seq: u64) -> &[u8] {
        let i = (seq % self.count as u64) as usize;
        &self.buf[i * self.size..(i + 1) * self.size]
    }

    /// Mutable access to the frame used for `seq`.
    #[inline]
    pub fn frame_mut(&mut self, seq: u64) -> &mut [u8] {
        let i = (seq % self.count as u64) as usize;
        &mut self.buf[i * self.size..(i + 1) * self.size]
    }

    /// Stamps the frame for `seq` and returns it.
    #[inline]
    pub fn stamped(&mut self, seq: u64) -> &[u8] {
        let f = self.frame_mut(seq);
        stamp(f, seq);
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_matches_one_netif_ring() {
        assert_eq!(pool_frames(64), 256);
        assert_eq!(pool_frames(9014), NETIF_RING_BYTES / 9014);
        assert_eq!(pool_frames(65536), 16);
        assert_eq!(pool_frames(4 << 20), 16);
    }

    #[test]
    fn check_accepts_the_stamped_frame_only() {
        let mut p = FramePool::new(64, 4);
        let f = p.stamped(9).to_vec();
        assert_eq!(check(&f, 64, 9), Ok(()));
        assert!(check(&f, 64, 10).is_err(), "wrong sequence");
        assert!(check(&f[..63], 64, 9).is_err(), "truncated");
        let mut torn = f.clone();
        torn[60] ^= 1;
        assert!(check(&torn, 64, 9).is_err(), "torn tail");
        assert!(check(&f[..4], 4, 9).is_err(), "too short to carry stamps");
    }

    #[test]
    fn pool_cycles_through_distinct_frames() {
        let mut p = FramePool::new(32, 3);
        assert_eq!(p.count(), 3);
        p.stamped(0);
        p.stamped(1);
        assert_eq!(check(p.frame(3), 32, 0), Ok(()), "seq 3 reuses frame 0");
        assert_eq!(check(p.frame(1), 32, 1), Ok(()));
    }
}
