//! netfront: the Xen paravirtual network frontend (Linux's `xen-netfront`), written
//! against [`hv::env::GuestEnv`] so the same driver runs embedded in-process, as a
//! client of the `hv` daemon, or inside a PV kernel.
//!
//! Layout, one job per module:
//! - [`handshake`]: the xenbus state machine and the vif keys (`tx-ring-ref`, ...).
//! - [`txlayout`], [`tx`]: planning a frame onto TX slots; the TX ring with its pool
//!   of pre-granted pages ([`txpool`]: small frames packed several to a page) and
//!   request-id free list ([`idlist`]).
//! - [`rxparse`], [`rx`]: turning RX responses into frames (checked, never trusted);
//!   the RX ring kept full of pre-granted pages.
//! - [`queue`]: one TX/RX ring pair and its event channel(s), the per-thread handle.
//! - [`device`]: [`Netfront`], connect / close / reconnect and the queues.
//! - [`phy`] (feature `smoltcp`): `smoltcp::phy::Device` for a queue.
//! - [`csum`]: Internet checksums for the offload fallbacks; [`counters`]: statistics.
//!
//! The core is `no_std` + `alloc`; the `std` feature adds real-time deadlines for the
//! blocking control-plane waits.
#![cfg_attr(not(feature = "std"), no_std)]
#![warn(missing_docs)]
extern crate alloc;

pub mod clock;
pub mod counters;
pub mod csum;
pub mod device;
pub mod error;
pub mod handshake;
pub mod idlist;
pub mod meta;
#[cfg(feature = "smoltcp")]
pub mod phy;
pub mod queue;
pub mod rx;
pub mod rxparse;
pub mod tx;
pub mod txlayout;
pub mod txpool;

pub use counters::{CounterSnapshot, QueueCounters};
pub use device::{LinkEvent, Netfront, NetfrontConfig};
pub use error::{NetfrontError, RxError, TxError};
pub use meta::{Gso, GsoType, RxMeta, TxMeta};
pub use queue::Queue;

/// `XEN_PAGE_SIZE`: every ring, TX buffer and RX buffer is one 4 KiB granted page.
pub const PAGE_SIZE: usize = 4096;

/// `ETH_HLEN`: the shortest frame netback accepts (14 bytes of Ethernet header).
pub const ETH_HLEN: usize = 14;
