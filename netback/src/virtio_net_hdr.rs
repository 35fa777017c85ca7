//! The virtio-net packet header that a Linux TAP opened with `IFF_VNET_HDR` puts in front
//! of every frame it hands out and expects in front of every frame it is given.
//!
//! Netback uses the 12-byte layout that Linux calls `struct virtio_net_hdr_mrg_rxbuf`
//! and virtio 1.0 calls `struct virtio_net_hdr_v1`: the 10-byte legacy
//! `struct virtio_net_hdr` followed by `num_buffers`. Why 12 and not 10:
//! - it is the only header a virtio 1.0 (`VIRTIO_F_VERSION_1`) device uses, so frames
//!   can be handed on to vhost/virtio peers without re-framing;
//! - with 12 bytes, `num_buffers` exists in every frame we read, so a consumer that merges
//!   receive buffers has a field for it. The kernel's TAP never writes `num_buffers` (it
//!   skips those two bytes), which is why the reader zeroes the header buffer before
//!   each read.
//!
//! All multi-byte fields are little-endian (virtio 1.0); the TAP is switched to
//! little-endian headers with `TUNSETVNETLE` so this holds on big-endian hosts too.
//! Parsing and serialising are plain byte shuffles: no `unsafe`, no transmutes.

use thiserror::Error;

/// Size in bytes of the header netback exchanges with the TAP
/// (`sizeof(struct virtio_net_hdr_mrg_rxbuf)` / `sizeof(struct virtio_net_hdr_v1)`).
pub const VNET_HDR_LEN: usize = 12;

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the L4 checksum is partial; whoever transmits must
/// finish it over `csum_start..` and store it at `csum_start + csum_offset`. The field
/// already holds the folded pseudo-header sum.
pub const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_F_DATA_VALID`: the checksum was already verified, the receiver may skip it.
pub const VIRTIO_NET_HDR_F_DATA_VALID: u8 = 2;

/// `VIRTIO_NET_HDR_GSO_NONE`: an ordinary frame, no segmentation needed.
pub const VIRTIO_NET_HDR_GSO_NONE: u8 = 0;
/// `VIRTIO_NET_HDR_GSO_TCPV4`: a TCP over IPv4 super-frame to cut into `gso_size` segments.
pub const VIRTIO_NET_HDR_GSO_TCPV4: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_UDP`: UDP fragmentation offload (UFO, deprecated in Linux).
pub const VIRTIO_NET_HDR_GSO_UDP: u8 = 3;
/// `VIRTIO_NET_HDR_GSO_TCPV6`: a TCP over IPv6 super-frame.
pub const VIRTIO_NET_HDR_GSO_TCPV6: u8 = 4;
/// `VIRTIO_NET_HDR_GSO_ECN`: modifier bit: the TCP stream uses ECN, so CWR must stay on
/// the first segment only.
pub const VIRTIO_NET_HDR_GSO_ECN: u8 = 0x80;

/// Errors from parsing a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum VnetHdrError {
    /// Fewer bytes than a header.
    #[error("virtio-net header needs {VNET_HDR_LEN} bytes, got {0}")]
    Truncated(usize),
}

/// `struct virtio_net_hdr_v1` (a.k.a. `virtio_net_hdr_mrg_rxbuf`), in host byte order.
///
/// The in-memory `#[repr(C)]` layout matches the C struct (12 bytes, no padding), but
/// the wire form is always produced by [`VirtioNetHdr::to_bytes`], which writes
/// little-endian regardless of the host.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct VirtioNetHdr {
    /// `flags`: `VIRTIO_NET_HDR_F_*`.
    pub flags: u8,
    /// `gso_type`: `VIRTIO_NET_HDR_GSO_*`, optionally or-ed with `VIRTIO_NET_HDR_GSO_ECN`.
    pub gso_type: u8,
    /// `hdr_len`: length of the Ethernet + IP + L4 headers (a hint for GSO frames).
    pub hdr_len: u16,
    /// `gso_size`: payload bytes per segment (the MSS) when `gso_type` is not NONE.
    pub gso_size: u16,
    /// `csum_start`: offset from the start of the frame where checksumming begins.
    pub csum_start: u16,
    /// `csum_offset`: where, relative to `csum_start`, the checksum is stored.
    pub csum_offset: u16,
    /// `num_buffers`: receive buffers merged into this frame (`VIRTIO_NET_F_MRG_RXBUF`).
    pub num_buffers: u16,
}

impl VirtioNetHdr {
    /// A header saying "plain frame, checksum already complete".
    pub const NONE: Self = Self {
        flags: 0,
        gso_type: VIRTIO_NET_HDR_GSO_NONE,
        hdr_len: 0,
        gso_size: 0,
        csum_start: 0,
        csum_offset: 0,
        num_buffers: 0,
    };

    /// Parses the first [`VNET_HDR_LEN`] bytes of `bytes` (little-endian).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, VnetHdrError> {
        let b: &[u8; VNET_HDR_LEN] = bytes
            .get(..VNET_HDR_LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or(VnetHdrError::Truncated(bytes.len()))?;
        Ok(Self::from_array(b))
    }

    /// Parses an exact 12-byte header (cannot fail).
    pub fn from_array(b: &[u8; VNET_HDR_LEN]) -> Self {
        let le = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Self {
            flags: b[0],
            gso_type: b[1],
            hdr_len: le(2),
            gso_size: le(4),
            csum_start: le(6),
            csum_offset: le(8),
            num_buffers: le(10),
        }
    }

    /// Serialises the header (little-endian).
    pub fn to_bytes(&self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b[10..12].copy_from_slice(&self.num_buffers.to_le_bytes());
        b
    }

    /// True when `VIRTIO_NET_HDR_F_NEEDS_CSUM` is set.
    pub fn needs_csum(&self) -> bool {
        self.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0
    }

    /// True when `VIRTIO_NET_HDR_F_DATA_VALID` is set.
    pub fn data_valid(&self) -> bool {
        self.flags & VIRTIO_NET_HDR_F_DATA_VALID != 0
    }

    /// The GSO type without the `VIRTIO_NET_HDR_GSO_ECN` modifier bit.
    pub fn gso_kind(&self) -> u8 {
        self.gso_type & !VIRTIO_NET_HDR_GSO_ECN
    }

    /// True when the frame is a GSO super-frame.
    pub fn is_gso(&self) -> bool {
        self.gso_kind() != VIRTIO_NET_HDR_GSO_NONE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_twelve_bytes_without_padding() {
        assert_eq!(core::mem::size_of::<VirtioNetHdr>(), VNET_HDR_LEN);
        assert_eq!(core::mem::align_of::<VirtioNetHdr>(), 2);
    }

    #[test]
    fn wire_form_is_little_endian_in_c_field_order() {
        let h = VirtioNetHdr {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            gso_type: VIRTIO_NET_HDR_GSO_TCPV4 | VIRTIO_NET_HDR_GSO_ECN,
            hdr_len: 0x0102,
            gso_size: 0x0304,
            csum_start: 0x0506,
            csum_offset: 0x0708,
            num_buffers: 0x090a,
        };
        let b = h.to_bytes();
        assert_eq!(
            b,
            [1, 0x81, 0x02, 0x01, 0x04, 0x03, 0x06, 0x05, 0x08, 0x07, 0x0a, 0x09]
        );
        assert_eq!(VirtioNetHdr::from_bytes(&b), Ok(h));
        assert!(h.needs_csum() && !h.data_valid() && h.is_gso());
        assert_eq!(h.gso_kind(), VIRTIO_NET_HDR_GSO_TCPV4);
    }

    #[test]
    fn short_input_is_an_error_not_a_panic() {
        for n in 0..VNET_HDR_LEN {
            assert_eq!(
                VirtioNetHdr::from_bytes(&[0u8; 16][..n]),
                Err(VnetHdrError::Truncated(n))
            );
        }
        // Longer input: only the first 12 bytes count.
        let mut long = [0xffu8; 20];
        long[..12].copy_from_slice(&VirtioNetHdr::NONE.to_bytes());
        assert_eq!(VirtioNetHdr::from_bytes(&long), Ok(VirtioNetHdr::NONE));
    }

    #[test]
    fn every_byte_pattern_round_trips() {
        // Each byte position independently, all values: from_bytes is a bijection.
        for pos in 0..VNET_HDR_LEN {
            for v in 0..=255u8 {
                let mut b = [0u8; VNET_HDR_LEN];
                b[pos] = v;
                assert_eq!(VirtioNetHdr::from_array(&b).to_bytes(), b);
            }
        }
    }
}
