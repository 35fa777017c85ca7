//! Errors: what disables a vif (the reasons Linux's netback logs before
//! `xenvif_fatal_tx_err`), what only drops a packet, and what the API returns.

use hv::abi::ring::RingError;
use hv::env::{EnvError, GrantRef};
use hv::xenbus::XenbusError;

/// A frontend broke the protocol: the vif is disabled (its queues stop, its backend
/// state goes to Closing) and every other vif keeps running. Each variant carries what
/// Linux's netback prints for the same fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FatalError {
    /// "Impossible number of requests": `req_prod` ran more than `RING_SIZE` ahead
    /// (`RING_REQUEST_PROD_OVERFLOW`) or moved backwards.
    #[error("TX ring: impossible number of requests ({0})")]
    TxRing(RingError),
    /// The same on the RX ring.
    #[error("RX ring: impossible number of requests ({0})")]
    RxRing(RingError),
    /// "Missing extra info": `NETTXF_extra_info` / `XEN_NETIF_EXTRA_FLAG_MORE` with no
    /// slot published after it.
    #[error("missing extra info")]
    MissingExtraInfo,
    /// "Invalid extra type: %d": type 0 or ≥ `XEN_NETIF_EXTRA_TYPE_MAX`.
    #[error("invalid extra type: {0}")]
    InvalidExtraType(u8),
    /// "Asked for %d slots but exceeds this limit": `NETTXF_more_data` on the last
    /// published slot (a packet cut short).
    #[error("asked for {asked} slots but exceeds this limit (packet not fully published)")]
    IncompletePacket { asked: u32 },
    /// "Malicious frontend using %d slots, threshold %u" (`fatal_skb_slots`).
    #[error("malicious frontend using {slots} slots, threshold {threshold}")]
    TooManySlots { slots: u32, threshold: u32 },
    /// "Cross page boundary, txp->offset: %u, size: %u".
    #[error("cross page boundary, offset: {offset}, size: {size}")]
    CrossPage { offset: u16, size: u32 },
    /// "GSO size must not be zero."
    #[error("GSO size must not be zero")]
    GsoSizeZero,
    /// "Bad GSO type %d."
    #[error("bad GSO type {0}")]
    BadGsoType(u8),
    /// A grant copy of guest TX data failed (bad, foreign-owned or revoked grant):
    /// `GNTST_*` status.
    #[error("grant copy of TX gref {gref} failed with GNTST {status}")]
    GrantCopy { gref: GrantRef, status: i16 },
}

/// A malformed packet that is answered with `NETIF_RSP_ERROR` on every slot and
/// dropped; the vif keeps running (Linux's `xenvif_tx_err`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DropReason {
    /// "Bad packet size": the first fragment is shorter than an Ethernet header.
    #[error("packet of {0} bytes in its first slot is shorter than ETH_HLEN")]
    ShortFrame(u16),
    /// "Invalid tx request, slot size %u > remaining size %u".
    #[error("slot size {size} > remaining size {remaining}")]
    FragTooLarge { size: u16, remaining: u16 },
    /// "Too many slots (%d) exceeding limit (%d), dropping packet".
    #[error("too many slots ({slots}) exceeding limit ({limit})")]
    TooManySlots { slots: u32, limit: u32 },
}

/// Why a vif is disabled (reported by [`crate::VifInfo::disabled`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DisableReason {
    /// The frontend broke the ring protocol.
    #[error("fatal error; disabling device: {0}")]
    Fatal(#[from] FatalError),
    /// Connecting failed (bad xenstore keys, grant or event channel); like
    /// `xenbus_dev_fatal` in `connect()`.
    #[error("connect failed: {0}")]
    Connect(String),
}

/// Errors of the netback API and of connecting a vif.
#[derive(Debug, thiserror::Error)]
pub enum NetbackError {
    #[error(transparent)]
    Xenbus(#[from] XenbusError),
    #[error(transparent)]
    Env(#[from] EnvError),
    #[error("invalid configuration: {0}")]
    Config(&'static str),
    /// A frontend key is missing or out of range.
    #[error("frontend {path}: {what}")]
    Frontend { path: String, what: String },
    #[error("could not start a thread: {0}")]
    Thread(#[from] std::io::Error),
}

impl From<hv::env::StoreError> for NetbackError {
    fn from(e: hv::env::StoreError) -> Self {
        NetbackError::Xenbus(XenbusError::Store(e))
    }
}
