//! The axes of the measurement matrix and the configuration of one cell.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The frame sizes measured by default, in bytes of Ethernet frame (header included, no
/// FCS): minimum frame, standard MTU frame, jumbo frame, and the largest GSO
/// super-frame one netif packet can carry. The last is 65535, not 65536: the first TX
/// slot's `netif_tx_request.size` is a `uint16_t` (`XEN_NETIF_MAX_TX_SIZE` = 0xFFFF),
/// so a full 64 KiB frame cannot cross the ring. The limit and the peers use the same
/// sizes so every ratio compares like with like.
pub const DEFAULT_SIZES: [u32; 4] = [64, 1514, 9014, 65535];

/// The queue-pair counts measured by default (`multi-queue-num-queues` of the vif).
pub const DEFAULT_QUEUES: [u16; 2] = [1, 2];

/// The largest frame that still fits one jumbo MTU (9000-byte payload, 14-byte header,
/// 4-byte VLAN tag). Anything larger can only cross as a GSO super-frame that the far
/// side segments, so such cells are labelled GSO.
pub const MAX_NON_GSO_FRAME: u32 = 9018;

/// Which way frames move between the guest's netfront and Dom0's netback.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// Guest transmits (netfront TX ring), Dom0 receives.
    #[value(name = "g2d", alias = "guest-to-dom0")]
    GuestToDom0,
    /// Dom0 transmits, the guest receives (netfront RX ring).
    #[value(name = "d2g", alias = "dom0-to-guest")]
    Dom0ToGuest,
    /// Both at once, one stream each way.
    #[value(name = "bidir", alias = "bidirectional")]
    Bidirectional,
    /// Guest to guest through Dom0 (TX of one vif, RX of another).
    #[value(name = "g2g", alias = "guest-to-guest")]
    GuestToGuest,
}

impl Direction {
    /// Every direction, in report order.
    pub const ALL: [Direction; 4] = [
        Direction::GuestToDom0,
        Direction::Dom0ToGuest,
        Direction::Bidirectional,
        Direction::GuestToGuest,
    ];

    /// The label used in tables, plots and cell names.
    pub fn label(self) -> &'static str {
        match self {
            Direction::GuestToDom0 => "guest→dom0",
            Direction::Dom0ToGuest => "dom0→guest",
            Direction::Bidirectional => "guest⇄dom0",
            Direction::GuestToGuest => "guest⇄guest",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// True if a frame of `size` bytes can only cross as a GSO super-frame.
pub fn is_gso(size: u32) -> bool {
    size > MAX_NON_GSO_FRAME
}

/// The axes a run covers. Workloads pick the subset they vary over (see
/// [`crate::workload::Axes`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatrixSpec {
    /// Frame sizes in bytes.
    pub sizes: Vec<u32>,
    /// Directions, for workloads that have them.
    pub directions: Vec<Direction>,
    /// Queue-pair counts, for workloads that have them.
    pub queues: Vec<u16>,
}

impl Default for MatrixSpec {
    fn default() -> Self {
        MatrixSpec {
            sizes: DEFAULT_SIZES.to_vec(),
            directions: Direction::ALL.to_vec(),
            queues: DEFAULT_QUEUES.to_vec(),
        }
    }
}

/// One cell of the matrix: what a [`crate::Workload`] is asked to measure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CellConfig {
    /// Bytes per frame (Ethernet header included).
    pub frame_size: u32,
    /// `None` for workloads without a direction (the limit and the peers move frames
    /// one way between two threads).
    pub direction: Option<Direction>,
    /// Queue pairs; 1 for workloads without queues.
    pub queues: u16,
    /// How long the measurement window lasts once the workload calls
    /// [`crate::Control::begin`].
    pub duration: Duration,
}

impl CellConfig {
    /// True if this cell's frames are GSO super-frames.
    pub fn gso(&self) -> bool {
        is_gso(self.frame_size)
    }

    /// A short human label: `"64B guest→dom0 1q"`, or `"64B"` without topology.
    pub fn label(&self) -> String {
        let gso = if self.gso() { " GSO" } else { "" };
        match self.direction {
            Some(d) => format!("{}B{gso} {d} {}q", self.frame_size, self.queues),
            None => format!("{}B{gso}", self.frame_size),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gso_only_above_jumbo() {
        assert!(!is_gso(64));
        assert!(!is_gso(9014));
        assert!(!is_gso(MAX_NON_GSO_FRAME));
        assert!(is_gso(65536));
    }

    #[test]
    fn labels_name_size_direction_and_queues() {
        let mut c = CellConfig {
            frame_size: 65536,
            direction: Some(Direction::GuestToDom0),
            queues: 2,
            duration: Duration::from_millis(1),
        };
        assert_eq!(c.label(), "65536B GSO guest→dom0 2q");
        c.direction = None;
        c.frame_size = 64;
        assert_eq!(c.label(), "64B");
    }
}
