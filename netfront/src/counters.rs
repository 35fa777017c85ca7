//! Per-queue statistics (packets, bytes, drops, errors, notifications).
//!
//! Each counter has exactly one writer (the thread driving that half of the queue), so
//! an increment is a relaxed load and store: no locked read-modify-write on the hot
//! path. Any thread may read them through the shared [`QueueCounters`].

use core::sync::atomic::{AtomicU64, Ordering};

/// A single-writer counter readable from any thread.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Add `n`. Only the counter's owner (one thread) may call this.
    #[inline(always)]
    pub(crate) fn add(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    /// Current value.
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// The live counters of one queue, shared with observers.
        #[derive(Debug, Default)]
        pub struct QueueCounters {
            $($(#[$doc])* pub $name: Counter,)*
        }

        /// A copy of counters at one moment (or summed over queues).
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
        pub struct CounterSnapshot {
            $($(#[$doc])* pub $name: u64,)*
        }

        impl QueueCounters {
            /// Read every counter.
            pub fn snapshot(&self) -> CounterSnapshot {
                CounterSnapshot { $($name: self.$name.get(),)* }
            }
        }

        impl core::ops::Add for CounterSnapshot {
            type Output = CounterSnapshot;
            fn add(self, o: CounterSnapshot) -> CounterSnapshot {
                CounterSnapshot { $($name: self.$name.wrapping_add(o.$name),)* }
            }
        }
    };
}

counters! {
    /// Frames queued on the TX ring.
    tx_packets,
    /// Bytes of those frames.
    tx_bytes,
    /// Frames the backend answered `NETIF_RSP_DROPPED`.
    tx_dropped,
    /// Frames the backend answered `NETIF_RSP_ERROR` (or an unknown status), and
    /// responses naming an id not in flight.
    tx_errors,
    /// Sends refused because the ring or the id pool was full.
    tx_busy,
    /// Frames whose blank checksum the driver completed in software.
    tx_csum_sw,
    /// Frames received.
    rx_packets,
    /// Bytes of those frames.
    rx_bytes,
    /// Frames the backend reported dropped or errored (negative status).
    rx_dropped,
    /// Malformed responses: bad id, offset or size past the page, too many slots, bad
    /// extra, runt frame, ring overflow.
    rx_errors,
    /// Received frames whose blank checksum the driver filled in
    /// ([`crate::Queue::recv_contiguous`] with `fill_blank_csum`).
    rx_csum_sw,
    /// Received TCP/UDP frames without `NETRXF_csum_blank`/`NETRXF_data_validated`
    /// whose checksum the driver verified in software (smoltcp path).
    rx_csum_verified,
    /// Received frames dropped because that check failed (smoltcp never saw them).
    rx_csum_bad,
    /// Multi-page frames handed over as one slice through the staging copy (their
    /// pages were not adjacent: ring wrap-around, or an environment with one mapping
    /// per page); the others were handed over in place.
    rx_staged,
    /// Event-channel notifications sent for TX requests.
    tx_notify_sent,
    /// TX pushes that needed no notification (the backend was polling).
    tx_notify_suppressed,
    /// Event-channel notifications sent for posted RX buffers.
    rx_notify_sent,
    /// RX buffer pushes that needed no notification.
    rx_notify_suppressed,
    /// Wake-ups received from the backend in [`crate::Queue::wait`] and friends.
    wakeups,
}

impl CounterSnapshot {
    /// Notifications sent on both rings.
    pub fn notify_sent(&self) -> u64 {
        self.tx_notify_sent + self.rx_notify_sent
    }

    /// Pushes whose notification was suppressed on both rings.
    pub fn notify_suppressed(&self) -> u64 {
        self.tx_notify_suppressed + self.rx_notify_suppressed
    }
}
