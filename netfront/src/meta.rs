//! Offload metadata attached to a frame on TX and reported on RX.

use hv::abi::netif::{XEN_NETIF_GSO_TYPE_TCPV4, XEN_NETIF_GSO_TYPE_TCPV6};

/// `XEN_NETIF_GSO_TYPE_*`: what kind of segmentation a large frame needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GsoType {
    /// `XEN_NETIF_GSO_TYPE_TCPV4`
    TcpV4,
    /// `XEN_NETIF_GSO_TYPE_TCPV6`
    TcpV6,
}

impl GsoType {
    /// The wire value (`XEN_NETIF_GSO_TYPE_*`).
    pub fn to_wire(self) -> u8 {
        match self {
            GsoType::TcpV4 => XEN_NETIF_GSO_TYPE_TCPV4,
            GsoType::TcpV6 => XEN_NETIF_GSO_TYPE_TCPV6,
        }
    }

    /// The type for a wire value; `None` for `XEN_NETIF_GSO_TYPE_NONE` and unknown values.
    pub fn from_wire(v: u8) -> Option<Self> {
        match v {
            XEN_NETIF_GSO_TYPE_TCPV4 => Some(GsoType::TcpV4),
            XEN_NETIF_GSO_TYPE_TCPV6 => Some(GsoType::TcpV6),
            _ => None,
        }
    }
}

/// `netif_extra_info.u.gso`, as far as a frame needs it: segment type and size (MSS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Gso {
    /// `gso.type`
    pub ty: GsoType,
    /// `gso.size`: the MSS the backend segments to.
    pub size: u16,
}

/// Per-frame TX offload requests (the `NETTXF_*` flags and the GSO extra).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct TxMeta {
    /// `NETTXF_csum_blank`: the TCP/UDP checksum field holds only the pseudo-header
    /// sum (Linux's `CHECKSUM_PARTIAL` convention, see [`crate::csum::write_partial`]);
    /// the backend completes it. If the backend cannot (IPv6 without
    /// `feature-ipv6-csum-offload`, or offload disabled), the driver completes it in
    /// software before sending.
    pub csum_blank: bool,
    /// `NETTXF_data_validated`: the data is known good (e.g. forwarded from a source
    /// that checked it).
    pub data_validated: bool,
    /// A `XEN_NETIF_EXTRA_TYPE_GSO` extra: the backend segments the frame. Implies a
    /// blank checksum.
    pub gso: Option<Gso>,
}

/// Per-frame RX metadata (the `NETRXF_*` flags and the GSO extra).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct RxMeta {
    /// `NETRXF_csum_blank`: the L4 checksum is not filled in (the sender offloaded it).
    pub csum_blank: bool,
    /// `NETRXF_data_validated`: the backend vouches for the data.
    pub data_validated: bool,
    /// The GSO extra, for a frame larger than one segment.
    pub gso: Option<Gso>,
    /// Ring slots the frame's data occupied (1 for a frame that fits one page).
    pub slots: u8,
}
