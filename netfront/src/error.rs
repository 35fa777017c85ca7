//! Typed errors of the frontend.

use alloc::string::String;
use hv::abi::xenbus::XenbusState;
use hv::env::{EnvError, StoreError};
use hv::xenbus::XenbusError;

/// Why a frame could not be queued for transmission. Nothing was written to the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    /// Shorter than `ETH_HLEN`: netback would answer `NETIF_RSP_ERROR`.
    #[error("frame of {0} bytes is shorter than an Ethernet header (14)")]
    TooShort(usize),
    /// Longer than `XEN_NETIF_MAX_TX_SIZE`, or than one page without `feature-sg`.
    #[error("frame of {len} bytes exceeds the {max}-byte limit negotiated with the backend")]
    TooLong {
        /// The frame's length.
        len: usize,
        /// The largest frame this queue may send.
        max: usize,
    },
    /// GSO requested but the backend did not offer `feature-gso-tcpv4`/`-tcpv6`
    /// (or GSO was disabled in the configuration).
    #[error("the backend does not accept this GSO type")]
    GsoUnsupported,
    /// GSO size 0: netback treats it as fatal for the whole vif.
    #[error("GSO segment size must not be 0")]
    GsoSizeZero,
    /// A checksum offload fallback needed headers this driver cannot parse.
    #[error(
        "checksum left blank but the frame is not TCP/UDP over IPv4/IPv6 without extension headers"
    )]
    ChecksumUnparsable,
    /// Every TX slot or request id is in flight; reclaim or wait, then retry.
    #[error("TX ring full: wait for the backend to answer and retry")]
    Busy,
    /// The queue is not connected (closed, or the backend broke the ring protocol).
    #[error("queue is not connected")]
    NotConnected,
}

/// Why the receive path gave up on a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RxError {
    /// The backend published more responses than requests were outstanding.
    #[error("backend broke the RX ring protocol (rsp_prod overflow)")]
    RingOverflow,
}

/// Errors of the control plane: connect, close, reconnect.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetfrontError {
    /// A xenstore operation failed.
    #[error("xenstore: {0}")]
    Store(#[from] StoreError),
    /// A xenbus helper failed (parse error, timeout).
    #[error("xenbus: {0}")]
    Xenbus(#[from] XenbusError),
    /// The environment refused a grant or event-channel operation.
    #[error("environment: {0}")]
    Env(#[from] EnvError),
    /// A key the toolstack should have written is missing or malformed.
    #[error("frontend node {path} is missing or malformed: {why}")]
    BadFrontendNode {
        /// The node.
        path: String,
        /// What was wrong.
        why: &'static str,
    },
    /// The backend does not offer `feature-rx-copy` (the only RX mode implemented,
    /// as in current Linux).
    #[error("backend {0} does not offer feature-rx-copy")]
    NoRxCopy(String),
    /// The backend did not reach the awaited state in time.
    #[error("timed out waiting for backend {path}: last state {}", last.name())]
    Timeout {
        /// The backend directory.
        path: String,
        /// The last state read.
        last: XenbusState,
    },
    /// The backend went away (Closing / Closed) during the handshake.
    #[error("backend {path} moved to {} during the handshake", state.name())]
    BackendClosed {
        /// The backend directory.
        path: String,
        /// The state it moved to.
        state: XenbusState,
    },
    /// The operation needs another state (e.g. `reconnect` while connected).
    #[error("operation needs the frontend {needed}, but it is {}", actual.name())]
    WrongState {
        /// What the operation needed.
        needed: &'static str,
        /// The frontend's current state.
        actual: XenbusState,
    },
    /// Invalid configuration (e.g. zero queues).
    #[error("invalid configuration: {0}")]
    Config(&'static str),
}
