//! Per-vif counters: plain relaxed atomics, bumped once per batch by the data-path
//! threads, read at any time with [`VifCounters::snapshot`].

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of one direction, on their own cache line so the TX and RX threads of a
/// queue never bounce a line between cores.
#[derive(Debug, Default)]
#[repr(align(64))]
struct DirCounters {
    packets: AtomicU64,
    bytes: AtomicU64,
    drops: AtomicU64,
    errors: AtomicU64,
    notify_sent: AtomicU64,
    notify_suppressed: AtomicU64,
}

/// Live counters of one vif (all its queues). "tx" is guest→backend (the guest's TX
/// ring), "rx" is backend→guest, as in Linux's netback statistics.
#[derive(Debug, Default)]
pub struct VifCounters {
    tx: DirCounters,
    rx: DirCounters,
}

/// What happened in one batch, added to the counters in one go.
#[derive(Debug, Default, Clone, Copy)]
pub struct BatchCount {
    pub packets: u64,
    pub bytes: u64,
    pub drops: u64,
    pub errors: u64,
    pub notify_sent: u64,
    pub notify_suppressed: u64,
}

/// A consistent-enough copy of a vif's counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CountersSnapshot {
    /// Packets the guest sent that were delivered to the port.
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Guest packets answered with `NETIF_RSP_ERROR` (non-fatal validation failures).
    pub tx_drops: u64,
    /// Fatal errors on the TX ring.
    pub tx_errors: u64,
    /// Packets copied into the guest's RX buffers.
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Frames for the guest dropped (queue full, too large for the frontend's features).
    pub rx_drops: u64,
    /// RX slots answered with `NETIF_RSP_ERROR` (failed copy) and fatal RX-ring errors.
    pub rx_errors: u64,
    /// Event-channel notifications sent to the guest.
    pub notify_sent: u64,
    /// Batches pushed without a notification because the guest had not asked for one
    /// (`rsp_event` not crossed).
    pub notify_suppressed: u64,
}

impl DirCounters {
    fn add(&self, c: &BatchCount) {
        let r = Ordering::Relaxed;
        if c.packets != 0 {
            self.packets.fetch_add(c.packets, r);
            self.bytes.fetch_add(c.bytes, r);
        }
        if c.drops != 0 {
            self.drops.fetch_add(c.drops, r);
        }
        if c.errors != 0 {
            self.errors.fetch_add(c.errors, r);
        }
        if c.notify_sent != 0 {
            self.notify_sent.fetch_add(c.notify_sent, r);
        }
        if c.notify_suppressed != 0 {
            self.notify_suppressed.fetch_add(c.notify_suppressed, r);
        }
    }
}

impl VifCounters {
    /// Add a TX (guest→backend) batch.
    pub fn add_tx(&self, c: &BatchCount) {
        self.tx.add(c);
    }

    /// Add an RX (backend→guest) batch.
    pub fn add_rx(&self, c: &BatchCount) {
        self.rx.add(c);
    }

    /// Count `n` frames for the guest dropped before they reached its ring.
    pub fn add_rx_drops(&self, n: u64) {
        self.rx.drops.fetch_add(n, Ordering::Relaxed);
    }

    /// Copy the counters out.
    pub fn snapshot(&self) -> CountersSnapshot {
        let r = Ordering::Relaxed;
        CountersSnapshot {
            tx_packets: self.tx.packets.load(r),
            tx_bytes: self.tx.bytes.load(r),
            tx_drops: self.tx.drops.load(r),
            tx_errors: self.tx.errors.load(r),
            rx_packets: self.rx.packets.load(r),
            rx_bytes: self.rx.bytes.load(r),
            rx_drops: self.rx.drops.load(r),
            rx_errors: self.rx.errors.load(r),
            notify_sent: self.tx.notify_sent.load(r) + self.rx.notify_sent.load(r),
            notify_suppressed: self.tx.notify_suppressed.load(r)
                + self.rx.notify_suppressed.load(r),
        }
    }
}
