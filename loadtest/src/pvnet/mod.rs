//! The pvnet scenarios: the real netfront ⇄ netback data path on the embedded
//! hypervisor, measured in the same run and with the same frame sizes as the limit and
//! the peers.
//!
//! Each cell builds its own world ([`testbed`]): an embedded hypervisor, Dom0's netback
//! started on a port, and one or two guests whose netfront connects through the full
//! xenbus handshake (rings, grants, event channels, `multi-queue-num-queues`). Then:
//!
//! * [`throughput::PvnetThroughput`] (series `pvnet`) — every frame size × direction ×
//!   queue-pair count: guest→dom0 into a verifying sink, dom0→guest from a sequenced
//!   generator, both at once, and guest⇄guest through netback's learning switch
//!   (details in [`throughput`]);
//! * [`latency::PvnetLatency`] (series `pvnet-evtchn` and `pvnet-poll`) — a one-frame
//!   ping-pong through netback's reflector, with the guest sleeping on its event
//!   channel or busy-polling its RX ring.
//!
//! Every frame is stamped with its flow and sequence number ([`wire`]) and verified by
//! the receiver; frames the path drops must show up in netback's or netfront's drop
//! counters, or the cell fails. CPU time is reported per side: the guest threads
//! (loadtest's own) and Dom0 (netback's threads, read by thread id, see [`threads`]).

pub mod guest;
pub mod latency;
pub mod port;
pub mod testbed;
pub mod threads;
pub mod throughput;
pub mod wire;

use std::time::Duration;

use crate::latency::WaitMode;
use crate::workload::Registry;

/// Series name of the pvnet throughput cells.
pub const PVNET: &str = "pvnet";
/// Series name of the event-driven pvnet round trip.
pub const PVNET_EVTCHN: &str = "pvnet-evtchn";
/// Series name of the polling pvnet round trip.
pub const PVNET_POLL: &str = "pvnet-poll";

/// Time a pvnet cell spends outside its window (hypervisor, netback, handshakes, drain,
/// orderly close), for sizing the run: measured at 20–60 ms on the 2-core development
/// machine, rounded up.
pub const SETUP_COST: Duration = Duration::from_millis(80);

/// Registers the pvnet workloads.
pub fn register(registry: &mut Registry) {
    // The names are pvnet's own: they cannot clash with the references.
    let _ = registry.register(Box::new(throughput::PvnetThroughput));
    let _ = registry.register(Box::new(latency::PvnetLatency::new(WaitMode::EventDriven)));
    let _ = registry.register(Box::new(latency::PvnetLatency::new(WaitMode::Polling)));
}
