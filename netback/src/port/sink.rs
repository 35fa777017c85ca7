//! A port that counts and discards everything (the guest→Dom0 load target).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::{Port, VifLink};
use crate::frame::FrameBatch;

/// Counts frames and bytes, keeps nothing.
#[derive(Debug, Default)]
pub struct Sink {
    packets: AtomicU64,
    bytes: AtomicU64,
}

impl Sink {
    /// A new sink, shareable as a port.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Frames received.
    pub fn packets(&self) -> u64 {
        self.packets.load(Ordering::Relaxed)
    }

    /// Bytes received.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

impl Port for Sink {
    fn transmit(&self, _from: &Arc<VifLink>, _queue: u16, frames: &FrameBatch<'_>) {
        self.packets
            .fetch_add(frames.len() as u64, Ordering::Relaxed);
        self.bytes.fetch_add(frames.bytes(), Ordering::Relaxed);
    }
}
