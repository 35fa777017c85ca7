//! netback: the Dom0 half of Xen's paravirtual network driver.
//!
//! [`Netback::start`] watches the backend directory of its domain, runs Linux
//! xen-netback's xenbus state machine for every vif the toolstack creates, maps each
//! queue's TX and RX rings and moves frames between the guest and a [`port::Port`]
//! (a sink, a reflector, a learning switch, a generator, or a TAP), validating every
//! request as Linux's netback does. A frontend that breaks the protocol has its vif
//! disabled with a logged reason; every other vif keeps running.

pub mod backend;
pub mod counters;
pub mod daemon_backend;
pub mod error;
pub mod frame;
pub mod frontend;
pub mod inbound;
pub mod port;
mod queue;
pub mod validate;
mod vif;

pub use backend::{Netback, NetbackConfig, VifInfo};
pub use counters::CountersSnapshot;
pub use error::{DisableReason, DropReason, FatalError, NetbackError};
pub use frame::{Frame, FrameBatch, Gso, GsoType, OffloadMeta};
pub use port::{Port, Reflector, Sink, Source, Switch, VifId, VifLink};
pub use port::{TapPort, TapPortConfig};

// The TAP port and its virtio-net header / offload helpers (owned by the tap work).
pub mod offload;
pub mod pcap;
pub mod tap;
pub mod virtio_net_hdr;
