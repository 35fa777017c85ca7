//! `io/netif.h`: the slots, flags and status codes of the vif TX and RX rings.
//!
//! All multi-byte fields are in the byte order of the machine (the ABI is
//! host-endian: both ends run on the same CPU).

use super::ring::{const_ring_size, BackRing, FrontRing, RingEntry, SharedRing, RING_PAGE_SIZE};
use core::mem::size_of;

/// `XEN_NETIF_NR_SLOTS_MIN`: the fewest slots a backend must accept for one packet
/// (a frontend may use up to this many without negotiation).
pub const XEN_NETIF_NR_SLOTS_MIN: usize = 18;

/// `XEN_NETIF_MAX_TX_SIZE`: the largest packet a TX request chain may describe (the
/// first slot's `size` holds the whole packet length).
pub const XEN_NETIF_MAX_TX_SIZE: usize = 0xFFFF;

// ---------------------------------------------------------------------------------
// TX request flags (`netif_tx_request.flags`).

/// `_NETTXF_csum_blank`
pub const NETTXF_CSUM_BLANK_BIT: u16 = 0;
/// `NETTXF_csum_blank`: the protocol checksum field is blank (to be filled by offload).
pub const NETTXF_CSUM_BLANK: u16 = 1 << NETTXF_CSUM_BLANK_BIT;
/// `_NETTXF_data_validated`
pub const NETTXF_DATA_VALIDATED_BIT: u16 = 1;
/// `NETTXF_data_validated`: the packet data has been validated against its checksum.
pub const NETTXF_DATA_VALIDATED: u16 = 1 << NETTXF_DATA_VALIDATED_BIT;
/// `_NETTXF_more_data`
pub const NETTXF_MORE_DATA_BIT: u16 = 2;
/// `NETTXF_more_data`: the packet continues in the next request.
pub const NETTXF_MORE_DATA: u16 = 1 << NETTXF_MORE_DATA_BIT;
/// `_NETTXF_extra_info`
pub const NETTXF_EXTRA_INFO_BIT: u16 = 3;
/// `NETTXF_extra_info`: a `netif_extra_info` slot follows this request.
pub const NETTXF_EXTRA_INFO: u16 = 1 << NETTXF_EXTRA_INFO_BIT;

// ---------------------------------------------------------------------------------
// RX response flags (`netif_rx_response.flags`). The checksum bits are swapped
// relative to TX.

/// `_NETRXF_data_validated`
pub const NETRXF_DATA_VALIDATED_BIT: u16 = 0;
/// `NETRXF_data_validated`: the packet data has been validated against its checksum.
pub const NETRXF_DATA_VALIDATED: u16 = 1 << NETRXF_DATA_VALIDATED_BIT;
/// `_NETRXF_csum_blank`
pub const NETRXF_CSUM_BLANK_BIT: u16 = 1;
/// `NETRXF_csum_blank`: the protocol checksum field is blank.
pub const NETRXF_CSUM_BLANK: u16 = 1 << NETRXF_CSUM_BLANK_BIT;
/// `_NETRXF_more_data`
pub const NETRXF_MORE_DATA_BIT: u16 = 2;
/// `NETRXF_more_data`: the packet continues in the next response.
pub const NETRXF_MORE_DATA: u16 = 1 << NETRXF_MORE_DATA_BIT;
/// `_NETRXF_extra_info`
pub const NETRXF_EXTRA_INFO_BIT: u16 = 3;
/// `NETRXF_extra_info`: a `netif_extra_info` slot follows this response.
pub const NETRXF_EXTRA_INFO: u16 = 1 << NETRXF_EXTRA_INFO_BIT;
/// `_NETRXF_gso_prefix`
pub const NETRXF_GSO_PREFIX_BIT: u16 = 4;
/// `NETRXF_gso_prefix`: this slot carries only GSO metadata ahead of the packet.
pub const NETRXF_GSO_PREFIX: u16 = 1 << NETRXF_GSO_PREFIX_BIT;

// ---------------------------------------------------------------------------------
// Extra-info types and flags.

/// `XEN_NETIF_EXTRA_TYPE_NONE`: never used (invalid).
pub const XEN_NETIF_EXTRA_TYPE_NONE: u8 = 0;
/// `XEN_NETIF_EXTRA_TYPE_GSO`: `u.gso`.
pub const XEN_NETIF_EXTRA_TYPE_GSO: u8 = 1;
/// `XEN_NETIF_EXTRA_TYPE_MCAST_ADD`: `u.mcast`.
pub const XEN_NETIF_EXTRA_TYPE_MCAST_ADD: u8 = 2;
/// `XEN_NETIF_EXTRA_TYPE_MCAST_DEL`: `u.mcast`.
pub const XEN_NETIF_EXTRA_TYPE_MCAST_DEL: u8 = 3;
/// `XEN_NETIF_EXTRA_TYPE_HASH`: `u.hash`.
pub const XEN_NETIF_EXTRA_TYPE_HASH: u8 = 4;
/// `XEN_NETIF_EXTRA_TYPE_XDP`: `u.xdp` (added after Xen 4.17's header, where
/// `XEN_NETIF_EXTRA_TYPE_MAX` was 5).
pub const XEN_NETIF_EXTRA_TYPE_XDP: u8 = 5;
/// `XEN_NETIF_EXTRA_TYPE_MAX`: one past the last type.
pub const XEN_NETIF_EXTRA_TYPE_MAX: u8 = 6;

/// `_XEN_NETIF_EXTRA_FLAG_MORE`
pub const XEN_NETIF_EXTRA_FLAG_MORE_BIT: u8 = 0;
/// `XEN_NETIF_EXTRA_FLAG_MORE`: another extra-info slot follows.
pub const XEN_NETIF_EXTRA_FLAG_MORE: u8 = 1 << XEN_NETIF_EXTRA_FLAG_MORE_BIT;

/// `XEN_NETIF_GSO_TYPE_NONE`
pub const XEN_NETIF_GSO_TYPE_NONE: u8 = 0;
/// `XEN_NETIF_GSO_TYPE_TCPV4`
pub const XEN_NETIF_GSO_TYPE_TCPV4: u8 = 1;
/// `XEN_NETIF_GSO_TYPE_TCPV6`
pub const XEN_NETIF_GSO_TYPE_TCPV6: u8 = 2;

// ---------------------------------------------------------------------------------
// Response status codes.

/// `NETIF_RSP_DROPPED`: the packet was dropped.
pub const NETIF_RSP_DROPPED: i16 = -2;
/// `NETIF_RSP_ERROR`: the request was malformed or could not be served.
pub const NETIF_RSP_ERROR: i16 = -1;
/// `NETIF_RSP_OKAY`
pub const NETIF_RSP_OKAY: i16 = 0;
/// `NETIF_RSP_NULL`: the response to an extra-info slot (no packet data).
pub const NETIF_RSP_NULL: i16 = 1;

// ---------------------------------------------------------------------------------
// Slot layouts.

/// `struct netif_tx_request`: one TX slot, a fragment of a packet in a granted page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct NetifTxRequest {
    /// `gref`: grant reference of the page holding the fragment.
    pub gref: u32,
    /// `offset`: offset of the fragment within the page.
    pub offset: u16,
    /// `flags`: `NETTXF_*`.
    pub flags: u16,
    /// `id`: echoed in the response.
    pub id: u16,
    /// `size`: fragment size; in a packet's first slot, the whole packet's size.
    pub size: u16,
}

/// `struct netif_tx_response`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct NetifTxResponse {
    /// `id`: the request's `id`.
    pub id: u16,
    /// `status`: `NETIF_RSP_*`.
    pub status: i16,
}

/// `struct netif_rx_request`: an empty buffer the frontend offers to the backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct NetifRxRequest {
    /// `id`: echoed in the response.
    pub id: u16,
    /// `pad`
    pub pad: u16,
    /// `gref`: grant reference of the buffer page.
    pub gref: u32,
}

/// `struct netif_rx_response`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct NetifRxResponse {
    /// `id`: the request's `id`.
    pub id: u16,
    /// `offset`: where the data starts in the buffer page.
    pub offset: u16,
    /// `flags`: `NETRXF_*`.
    pub flags: u16,
    /// `status`: `NETIF_RSP_*` if negative, else this fragment's size in bytes.
    pub status: i16,
}

/// `struct netif_extra_info`: metadata that occupies a TX-request or RX-response slot
/// after a packet's first slot (flagged by `NETTXF_extra_info` / `NETRXF_extra_info`).
///
/// The C union `u` is kept as its 6 raw bytes; the typed accessors below read and
/// write each variant without any unsafe union read. `align(2)` keeps the C
/// alignment the union's `uint16_t` members give it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[repr(C, align(2))]
pub struct NetifExtraInfo {
    /// `type`: `XEN_NETIF_EXTRA_TYPE_*`.
    pub ty: u8,
    /// `flags`: `XEN_NETIF_EXTRA_FLAG_*`.
    pub flags: u8,
    /// `u`: the variant selected by `type`.
    pub u: [u8; 6],
}

/// `netif_extra_info.u.gso`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct NetifExtraGso {
    /// `size`: the GSO segment size (MSS).
    pub size: u16,
    /// `type`: `XEN_NETIF_GSO_TYPE_*`.
    pub ty: u8,
    /// `pad`
    pub pad: u8,
    /// `features`: `XEN_NETIF_GSO_FEAT_*` (none defined; must be 0).
    pub features: u16,
}

/// `netif_extra_info.u.hash`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct NetifExtraHash {
    /// `type`: `_XEN_NETIF_CTRL_HASH_TYPE_*` the hash was computed over.
    pub ty: u8,
    /// `algorithm`: `XEN_NETIF_CTRL_HASH_ALGORITHM_*`.
    pub algorithm: u8,
    /// `value`: the hash, in the byte order the header gives it.
    pub value: [u8; 4],
}

/// `netif_extra_info.u.xdp`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct NetifExtraXdp {
    /// `headroom`: bytes the frontend reserves ahead of each RX packet.
    pub headroom: u16,
}

impl NetifExtraInfo {
    /// Size in bytes (8): fits both a TX-request and an RX-response slot.
    pub const SIZE: usize = 8;

    /// `u.gso`
    #[inline]
    pub fn gso(&self) -> NetifExtraGso {
        let u = &self.u;
        NetifExtraGso {
            size: u16::from_ne_bytes([u[0], u[1]]),
            ty: u[2],
            pad: u[3],
            features: u16::from_ne_bytes([u[4], u[5]]),
        }
    }

    /// Sets `u.gso` (leaves `type` alone).
    #[inline]
    pub fn set_gso(&mut self, gso: NetifExtraGso) {
        let [s0, s1] = gso.size.to_ne_bytes();
        let [f0, f1] = gso.features.to_ne_bytes();
        self.u = [s0, s1, gso.ty, gso.pad, f0, f1];
    }

    /// An `XEN_NETIF_EXTRA_TYPE_GSO` extra with `flags`.
    #[inline]
    pub fn new_gso(gso: NetifExtraGso, flags: u8) -> Self {
        let mut e = Self {
            ty: XEN_NETIF_EXTRA_TYPE_GSO,
            flags,
            u: [0; 6],
        };
        e.set_gso(gso);
        e
    }

    /// `u.mcast.addr`
    #[inline]
    pub fn mcast_addr(&self) -> [u8; 6] {
        self.u
    }

    /// Sets `u.mcast.addr` (leaves `type` alone).
    #[inline]
    pub fn set_mcast_addr(&mut self, addr: [u8; 6]) {
        self.u = addr;
    }

    /// An `XEN_NETIF_EXTRA_TYPE_MCAST_ADD` (`add`) or `_MCAST_DEL` extra with `flags`.
    #[inline]
    pub fn new_mcast(add: bool, addr: [u8; 6], flags: u8) -> Self {
        Self {
            ty: if add {
                XEN_NETIF_EXTRA_TYPE_MCAST_ADD
            } else {
                XEN_NETIF_EXTRA_TYPE_MCAST_DEL
            },
            flags,
            u: addr,
        }
    }

    /// `u.hash`
    #[inline]
    pub fn hash(&self) -> NetifExtraHash {
        let u = &self.u;
        NetifExtraHash {
            ty: u[0],
            algorithm: u[1],
            value: [u[2], u[3], u[4], u[5]],
        }
    }

    /// Sets `u.hash` (leaves `type` alone).
    #[inline]
    pub fn set_hash(&mut self, hash: NetifExtraHash) {
        let v = hash.value;
        self.u = [hash.ty, hash.algorithm, v[0], v[1], v[2], v[3]];
    }

    /// An `XEN_NETIF_EXTRA_TYPE_HASH` extra with `flags`.
    #[inline]
    pub fn new_hash(hash: NetifExtraHash, flags: u8) -> Self {
        let mut e = Self {
            ty: XEN_NETIF_EXTRA_TYPE_HASH,
            flags,
            u: [0; 6],
        };
        e.set_hash(hash);
        e
    }

    /// `u.xdp`
    #[inline]
    pub fn xdp(&self) -> NetifExtraXdp {
        NetifExtraXdp {
            headroom: u16::from_ne_bytes([self.u[0], self.u[1]]),
        }
    }

    /// Sets `u.xdp` (its padding zeroed; leaves `type` alone).
    #[inline]
    pub fn set_xdp(&mut self, xdp: NetifExtraXdp) {
        let [h0, h1] = xdp.headroom.to_ne_bytes();
        self.u = [h0, h1, 0, 0, 0, 0];
    }

    /// An `XEN_NETIF_EXTRA_TYPE_XDP` extra with `flags`.
    #[inline]
    pub fn new_xdp(xdp: NetifExtraXdp, flags: u8) -> Self {
        let mut e = Self {
            ty: XEN_NETIF_EXTRA_TYPE_XDP,
            flags,
            u: [0; 6],
        };
        e.set_xdp(xdp);
        e
    }

    /// `true` if `XEN_NETIF_EXTRA_FLAG_MORE` is set: another extra slot follows.
    #[inline]
    pub fn has_more(&self) -> bool {
        self.flags & XEN_NETIF_EXTRA_FLAG_MORE != 0
    }

    /// The 8 bytes this extra occupies at the start of a slot.
    #[inline]
    pub fn to_bytes(self) -> [u8; 8] {
        let u = self.u;
        [self.ty, self.flags, u[0], u[1], u[2], u[3], u[4], u[5]]
    }

    /// The extra stored in the first 8 bytes of a slot.
    #[inline]
    pub fn from_bytes(b: [u8; 8]) -> Self {
        Self {
            ty: b[0],
            flags: b[1],
            u: [b[2], b[3], b[4], b[5], b[6], b[7]],
        }
    }

    /// Reads the extra a frontend put in a TX slot (a `netif_tx_request` whose
    /// predecessor carried `NETTXF_extra_info`). It overlays `gref`, `offset` and
    /// `flags`; `id` and `size` are not part of it.
    #[inline]
    pub fn from_tx_slot(slot: NetifTxRequest) -> Self {
        let b = slot.to_bytes();
        Self::from_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
    }

    /// The TX slot carrying this extra (the trailing `id` and `size` bytes zero).
    #[inline]
    pub fn to_tx_slot(self) -> NetifTxRequest {
        let e = self.to_bytes();
        NetifTxRequest::from_bytes([e[0], e[1], e[2], e[3], e[4], e[5], e[6], e[7], 0, 0, 0, 0])
    }

    /// Reads the extra a backend put in an RX slot (a `netif_rx_response` whose
    /// predecessor carried `NETRXF_extra_info`); it covers the whole 8-byte slot.
    #[inline]
    pub fn from_rx_slot(slot: NetifRxResponse) -> Self {
        Self::from_bytes(slot.to_bytes())
    }

    /// The RX slot carrying this extra.
    #[inline]
    pub fn to_rx_slot(self) -> NetifRxResponse {
        NetifRxResponse::from_bytes(self.to_bytes())
    }
}

impl NetifTxRequest {
    /// The slot's bytes in memory order.
    #[inline]
    pub fn to_bytes(self) -> [u8; 12] {
        let g = self.gref.to_ne_bytes();
        let o = self.offset.to_ne_bytes();
        let f = self.flags.to_ne_bytes();
        let i = self.id.to_ne_bytes();
        let s = self.size.to_ne_bytes();
        [
            g[0], g[1], g[2], g[3], o[0], o[1], f[0], f[1], i[0], i[1], s[0], s[1],
        ]
    }

    /// A slot from its bytes in memory order.
    #[inline]
    pub fn from_bytes(b: [u8; 12]) -> Self {
        Self {
            gref: u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
            offset: u16::from_ne_bytes([b[4], b[5]]),
            flags: u16::from_ne_bytes([b[6], b[7]]),
            id: u16::from_ne_bytes([b[8], b[9]]),
            size: u16::from_ne_bytes([b[10], b[11]]),
        }
    }
}

impl NetifRxResponse {
    /// The slot's bytes in memory order.
    #[inline]
    pub fn to_bytes(self) -> [u8; 8] {
        let i = self.id.to_ne_bytes();
        let o = self.offset.to_ne_bytes();
        let f = self.flags.to_ne_bytes();
        let s = self.status.to_ne_bytes();
        [i[0], i[1], o[0], o[1], f[0], f[1], s[0], s[1]]
    }

    /// A slot from its bytes in memory order.
    #[inline]
    pub fn from_bytes(b: [u8; 8]) -> Self {
        Self {
            id: u16::from_ne_bytes([b[0], b[1]]),
            offset: u16::from_ne_bytes([b[2], b[3]]),
            flags: u16::from_ne_bytes([b[4], b[5]]),
            status: i16::from_ne_bytes([b[6], b[7]]),
        }
    }
}

// SAFETY (all four): repr(C) structs of integers without padding; every bit pattern
// is a valid value.
unsafe impl RingEntry for NetifTxRequest {}
// SAFETY: see above.
unsafe impl RingEntry for NetifTxResponse {}
// SAFETY: see above.
unsafe impl RingEntry for NetifRxRequest {}
// SAFETY: see above.
unsafe impl RingEntry for NetifRxResponse {}
// SAFETY: repr(C) struct of u8s and a byte array; every bit pattern is valid.
unsafe impl RingEntry for NetifExtraInfo {}

// ---------------------------------------------------------------------------------
// Ring types: `DEFINE_RING_TYPES(netif_tx, ...)` and `DEFINE_RING_TYPES(netif_rx, ...)`.

/// `netif_tx_sring_t`
pub type TxSharedRing = SharedRing<NetifTxRequest, NetifTxResponse>;
/// `netif_tx_front_ring_t`
pub type TxFrontRing = FrontRing<NetifTxRequest, NetifTxResponse>;
/// `netif_tx_back_ring_t`
pub type TxBackRing = BackRing<NetifTxRequest, NetifTxResponse>;
/// `netif_rx_sring_t`
pub type RxSharedRing = SharedRing<NetifRxRequest, NetifRxResponse>;
/// `netif_rx_front_ring_t`
pub type RxFrontRing = FrontRing<NetifRxRequest, NetifRxResponse>;
/// `netif_rx_back_ring_t`
pub type RxBackRing = BackRing<NetifRxRequest, NetifRxResponse>;

/// `NET_TX_RING_SIZE`: `__CONST_RING_SIZE(netif_tx, XEN_PAGE_SIZE)`.
pub const NET_TX_RING_SIZE: u32 =
    const_ring_size::<NetifTxRequest, NetifTxResponse>(RING_PAGE_SIZE);
/// `NET_RX_RING_SIZE`: `__CONST_RING_SIZE(netif_rx, XEN_PAGE_SIZE)`.
pub const NET_RX_RING_SIZE: u32 =
    const_ring_size::<NetifRxRequest, NetifRxResponse>(RING_PAGE_SIZE);

const _: () = {
    assert!(NET_TX_RING_SIZE == 256);
    assert!(NET_RX_RING_SIZE == 256);
    assert!(size_of::<NetifTxRequest>() == 12);
    assert!(size_of::<NetifTxResponse>() == 4);
    assert!(size_of::<NetifRxRequest>() == 8);
    assert!(size_of::<NetifRxResponse>() == 8);
    assert!(size_of::<NetifExtraInfo>() == NetifExtraInfo::SIZE);
    assert!(core::mem::align_of::<NetifExtraInfo>() == 2);
    // The extra must fit both slots it can occupy.
    assert!(size_of::<NetifExtraInfo>() <= size_of::<NetifTxRequest>());
    assert!(size_of::<NetifExtraInfo>() <= size_of::<NetifRxResponse>());
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_gso_roundtrip_through_tx_slot() {
        let gso = NetifExtraGso {
            size: 1448,
            ty: XEN_NETIF_GSO_TYPE_TCPV6,
            pad: 0,
            features: 0,
        };
        let e = NetifExtraInfo::new_gso(gso, XEN_NETIF_EXTRA_FLAG_MORE);
        let slot = e.to_tx_slot();
        assert_eq!(slot.id, 0);
        assert_eq!(slot.size, 0);
        let back = NetifExtraInfo::from_tx_slot(slot);
        assert_eq!(back, e);
        assert_eq!(back.gso(), gso);
        assert!(back.has_more());
    }

    #[test]
    fn extra_roundtrip_through_rx_slot() {
        let h = NetifExtraHash {
            ty: 1,
            algorithm: 1,
            value: [1, 2, 3, 4],
        };
        let e = NetifExtraInfo::new_hash(h, 0);
        let back = NetifExtraInfo::from_rx_slot(e.to_rx_slot());
        assert_eq!(back.hash(), h);
        assert_eq!(back.ty, XEN_NETIF_EXTRA_TYPE_HASH);
        let m = NetifExtraInfo::new_mcast(false, [1, 0, 0x5e, 0, 0, 1], 0);
        assert_eq!(m.ty, XEN_NETIF_EXTRA_TYPE_MCAST_DEL);
        assert_eq!(
            NetifExtraInfo::from_rx_slot(m.to_rx_slot()).mcast_addr(),
            [1, 0, 0x5e, 0, 0, 1]
        );
        let x = NetifExtraInfo::new_xdp(NetifExtraXdp { headroom: 256 }, 0);
        assert_eq!(x.xdp().headroom, 256);
    }

    #[test]
    fn tx_request_bytes_roundtrip() {
        let r = NetifTxRequest {
            gref: 0x0102_0304,
            offset: 0x0506,
            flags: 0x0708,
            id: 0x090a,
            size: 0x0b0c,
        };
        assert_eq!(NetifTxRequest::from_bytes(r.to_bytes()), r);
    }
}
