//! A port that sends every frame back to the vif it came from, with source and
//! destination MAC swapped (so the guest's stack accepts it as addressed to it).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::{Port, VifLink};
use crate::frame::FrameBatch;

/// Echoes frames back to their sender.
#[derive(Debug, Default)]
pub struct Reflector {
    reflected: AtomicU64,
    dropped: AtomicU64,
}

impl Reflector {
    /// A new reflector, shareable as a port.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Frames queued back to their sender.
    pub fn reflected(&self) -> u64 {
        self.reflected.load(Ordering::Relaxed)
    }

    /// Frames the sender's inbound queue had no room for.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Swap the destination (bytes 0..6) and source (6..12) MAC addresses.
pub(crate) fn swap_macs(d: &mut [u8]) {
    if d.len() >= 12 {
        let (dst, rest) = d.split_at_mut(6);
        dst.swap_with_slice(&mut rest[..6]);
    }
}

impl Port for Reflector {
    fn transmit(&self, from: &Arc<VifLink>, _queue: u16, frames: &FrameBatch<'_>) {
        let sent = from.send_batch(frames.iter(), swap_macs) as u64;
        self.reflected.fetch_add(sent, Ordering::Relaxed);
        self.dropped
            .fetch_add(frames.len() as u64 - sent, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn swap() {
        let mut d: Vec<u8> = (0..14).collect();
        super::swap_macs(&mut d);
        assert_eq!(&d[..12], &[6, 7, 8, 9, 10, 11, 0, 1, 2, 3, 4, 5]);
        assert_eq!(&d[12..], &[12, 13]);
    }
}
