//! Errors of the TAP module. Each message says what went wrong and what to do about it.

use std::io;
use thiserror::Error;

use super::Offloads;

/// Why a TAP could not be created, configured or used.
#[derive(Debug, Error)]
pub enum TapError {
    /// EPERM / EACCES from an operation that needs CAP_NET_ADMIN.
    #[error("{op} on {dev} needs CAP_NET_ADMIN: run as root (or give the binary cap_net_admin)")]
    PermissionDenied {
        /// What was being done.
        op: &'static str,
        /// The device name.
        dev: String,
    },
    /// `/dev/net/tun` is missing.
    #[error("/dev/net/tun does not exist: load the TUN/TAP driver (`modprobe tun`) or create the node (`mknod /dev/net/tun c 10 200`)")]
    TunMissing,
    /// The interface name is empty, too long or contains forbidden characters.
    #[error("invalid interface name {name:?}: use 1 to 15 bytes without '/', ':' or whitespace")]
    InvalidName {
        /// The rejected name.
        name: String,
    },
    /// A device with this name exists already.
    #[error("a network device named {name} already exists: remove it (`ip link del {name}`) or choose another name")]
    NameInUse {
        /// The name.
        name: String,
    },
    /// The kernel's TUN driver lacks a feature we need.
    #[error("the kernel's TUN driver does not support {feature}: use a newer kernel (Linux >= 3.8) or do without it")]
    FeatureMissing {
        /// The missing `IFF_*` feature.
        feature: &'static str,
    },
    /// Zero queues, or more than the driver allows.
    #[error("{requested} queues requested: a TAP supports 1 to {max}")]
    BadQueueCount {
        /// Queues asked for.
        requested: usize,
        /// The driver's limit (`MAX_TAP_QUEUES`).
        max: usize,
    },
    /// The offload combination is invalid (e.g. TSO without checksum offload).
    #[error(
        "invalid offload set {0:?}: TSO4/TSO6/TSO_ECN need CSUM, and TSO_ECN needs TSO4 or TSO6"
    )]
    InvalidOffloads(Offloads),
    /// The kernel rejected `TUNSETOFFLOAD`.
    #[error(
        "the kernel rejected offloads {offloads:?} on {dev}: {source}; request fewer offloads"
    )]
    OffloadRejected {
        /// The requested set.
        offloads: Offloads,
        /// The device.
        dev: String,
        /// The kernel's error.
        source: io::Error,
    },
    /// The MTU is out of range for the device.
    #[error("MTU {mtu} rejected for {dev}: {source}; use 68..=65521 for a TAP")]
    InvalidMtu {
        /// The MTU asked for.
        mtu: u32,
        /// The device.
        dev: String,
        /// The kernel's error.
        source: io::Error,
    },
    /// The MAC address is not a valid unicast Ethernet address.
    #[error("MAC {0} is not a unicast Ethernet address: clear the multicast bit (lowest bit of the first byte)")]
    InvalidMac(super::MacAddr),
    /// The named bridge does not exist.
    #[error("bridge {bridge} does not exist: create it with `ip link add {bridge} type bridge && ip link set {bridge} up`")]
    BridgeNotFound {
        /// The bridge name.
        bridge: String,
    },
    /// The named device exists but is not a Linux bridge.
    #[error("{bridge} is not a Linux bridge (enslaving {dev} failed: {source}); name a device created with `type bridge`")]
    NotABridge {
        /// The device named as bridge.
        bridge: String,
        /// The TAP.
        dev: String,
        /// The kernel's error.
        source: io::Error,
    },
    /// Entering a network namespace failed.
    #[error(
        "cannot enter network namespace {path}: {source} (does it exist? see `ip netns list`)"
    )]
    Netns {
        /// The namespace file.
        path: String,
        /// The error.
        source: io::Error,
    },
    /// Any other system call failure.
    #[error("{op} on {dev} failed: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The device name (or "-" when there is none).
        dev: String,
        /// The error.
        source: io::Error,
    },
}

impl TapError {
    /// Wraps an OS error, turning EPERM/EACCES into [`TapError::PermissionDenied`].
    pub(crate) fn os(op: &'static str, dev: &str, source: io::Error) -> Self {
        match source.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => TapError::PermissionDenied {
                op,
                dev: dev.to_owned(),
            },
            _ => TapError::Io {
                op,
                dev: dev.to_owned(),
                source,
            },
        }
    }
}
