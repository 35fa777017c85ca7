//! Checksum and segmentation offload helpers: pure functions over Ethernet frames, no I/O.
//!
//! Netback sits between a guest's netif rings and a TAP. Both sides can hand over frames
//! whose TCP/UDP checksum is not finished yet (netif `NETTXF_csum_blank`, virtio
//! `VIRTIO_NET_HDR_F_NEEDS_CSUM`) or that are larger than the wire MTU (netif GSO extra
//! info, virtio `gso_type`). When the receiving side did not negotiate the matching
//! offload, netback must finish the work in software. This module provides:
//! - [`parse_frame`]: L2/L3/L4 offsets (802.1Q/802.1ad tags, IPv4 with options, IPv6 with
//!   hop-by-hop, routing, fragment, destination-options and AH extension headers);
//! - [`csum_offsets`]: `csum_start` / `csum_offset` for TCP and UDP;
//! - [`fill_l4_checksum`], [`write_pseudo_header_csum`], [`complete_partial_checksum`],
//!   [`verify_l4_checksum`] and the IPv4 header checksum helpers;
//! - [`TcpSegmenter`]: software TSO into caller-provided buffers;
//! - the netif ⇄ virtio flag translation ([`vnet_hdr_from_netif_tx`],
//!   [`netif_rx_from_vnet_hdr`]).
//!
//! Every input is treated as hostile: lengths are checked against the buffer before any
//! access, and malformed frames give an [`OffloadError`], never a panic.

use crate::virtio_net_hdr::{
    VirtioNetHdr, VIRTIO_NET_HDR_F_DATA_VALID, VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_NONE, VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6,
};
use thiserror::Error;

/// Length of an Ethernet II header (`ETH_HLEN`).
pub const ETH_HLEN: usize = 14;
/// `ETH_P_IP`.
pub const ETH_P_IP: u16 = 0x0800;
/// `ETH_P_IPV6`.
pub const ETH_P_IPV6: u16 = 0x86dd;
/// `ETH_P_8021Q`: a customer VLAN tag.
pub const ETH_P_8021Q: u16 = 0x8100;
/// `ETH_P_8021AD`: a service (outer, QinQ) VLAN tag.
pub const ETH_P_8021AD: u16 = 0x88a8;
/// `IPPROTO_TCP`.
pub const IPPROTO_TCP: u8 = 6;
/// `IPPROTO_UDP`.
pub const IPPROTO_UDP: u8 = 17;

/// How many VLAN tags we look through (QinQ = 2), as Linux's flow dissector does by default.
const MAX_VLAN_TAGS: usize = 2;
/// How many IPv6 extension headers we walk before giving up (bounds the loop on hostile input).
const MAX_IPV6_EXT_HEADERS: usize = 8;
/// Offset of the checksum field inside a TCP header.
const TCP_CSUM_OFFSET: u16 = 16;
/// Offset of the checksum field inside a UDP header.
const UDP_CSUM_OFFSET: u16 = 6;
const TCP_FLAG_FIN: u8 = 0x01;
const TCP_FLAG_PSH: u8 = 0x08;
const TCP_FLAG_CWR: u8 = 0x80;

/// Why a frame could not be parsed, checksummed or segmented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum OffloadError {
    /// The frame ends inside a header.
    #[error("frame truncated in the {what}: need {need} bytes, have {have}")]
    Truncated {
        /// Which header.
        what: &'static str,
        /// Bytes needed from the start of the frame.
        need: usize,
        /// Bytes present.
        have: usize,
    },
    /// A header field is inconsistent (bad version, length smaller than the header, ...).
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// The frame is neither IPv4 nor IPv6.
    #[error("not an IP frame (ethertype {0:#06x})")]
    NotIp(u16),
    /// The L4 protocol is not one this operation handles.
    #[error("unsupported L4 protocol {0} (only TCP and UDP have offloads)")]
    UnsupportedL4(u8),
    /// The IP packet is a fragment, so the L4 header/payload is not all here.
    #[error("IP fragment: checksum/segmentation offload does not apply")]
    Fragment,
    /// Segmentation was asked for with an MSS of 0.
    #[error("GSO size (MSS) must be at least 1")]
    ZeroMss,
    /// A caller-provided output buffer is too small.
    #[error("output buffer too small: need {need} bytes, have {have}")]
    BufferTooSmall {
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// `csum_start`/`csum_offset` point outside the frame.
    #[error("checksum position {csum_start}+{csum_offset} is outside a {len}-byte frame")]
    CsumOutOfRange {
        /// `csum_start`.
        csum_start: usize,
        /// `csum_offset`.
        csum_offset: usize,
        /// Frame length.
        len: usize,
    },
    /// A GSO type netif or this module cannot express.
    #[error("unsupported GSO type {0}")]
    UnsupportedGso(u8),
    /// The GSO type does not match the frame (e.g. TCPV4 on an IPv6 frame).
    #[error("GSO type {gso_type} does not match the frame's protocols")]
    GsoMismatch {
        /// The GSO type given.
        gso_type: u8,
    },
}

/// The network-layer protocol of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L3 {
    /// IPv4.
    Ipv4,
    /// IPv6.
    Ipv6,
}

/// Offsets found by [`parse_frame`]. All offsets are from the start of the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameInfo {
    /// Number of VLAN tags skipped (0..=2).
    pub vlan_tags: usize,
    /// Start of the IP header.
    pub l3_offset: usize,
    /// IPv4 or IPv6.
    pub l3: L3,
    /// Start of the L4 header (after IPv4 options / IPv6 extension headers).
    pub l4_offset: usize,
    /// The L4 protocol number (`IPPROTO_*`).
    pub l4_proto: u8,
    /// End of the IP datagram as its length field says; bytes after it are Ethernet padding.
    pub ip_end: usize,
    /// True if the packet is an IP fragment (L4 header or payload not all present).
    pub is_fragment: bool,
}

impl FrameInfo {
    /// Bytes of L4 header + payload.
    pub fn l4_len(&self) -> usize {
        self.ip_end - self.l4_offset
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn need(frame: &[u8], what: &'static str, end: usize) -> Result<(), OffloadError> {
    if frame.len() < end {
        Err(OffloadError::Truncated {
            what,
            need: end,
            have: frame.len(),
        })
    } else {
        Ok(())
    }
}

/// Finds the L3 and L4 headers of an Ethernet frame.
pub fn parse_frame(frame: &[u8]) -> Result<FrameInfo, OffloadError> {
    need(frame, "Ethernet header", ETH_HLEN)?;
    let mut ethertype = be16(frame, 12);
    let mut off = ETH_HLEN;
    let mut vlan_tags = 0;
    while (ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD) && vlan_tags < MAX_VLAN_TAGS {
        need(frame, "VLAN tag", off + 4)?;
        ethertype = be16(frame, off + 2);
        off += 4;
        vlan_tags += 1;
    }
    match ethertype {
        ETH_P_IP => parse_ipv4(frame, off, vlan_tags),
        ETH_P_IPV6 => parse_ipv6(frame, off, vlan_tags),
        other => Err(OffloadError::NotIp(other)),
    }
}

fn parse_ipv4(frame: &[u8], l3: usize, vlan_tags: usize) -> Result<FrameInfo, OffloadError> {
    need(frame, "IPv4 header", l3 + 20)?;
    if frame[l3] >> 4 != 4 {
        return Err(OffloadError::Malformed("IPv4 header (version is not 4)"));
    }
    let ihl = usize::from(frame[l3] & 0x0f) * 4;
    if ihl < 20 {
        return Err(OffloadError::Malformed("IPv4 header (IHL below 5)"));
    }
    need(frame, "IPv4 options", l3 + ihl)?;
    let total = usize::from(be16(frame, l3 + 2));
    if total < ihl {
        return Err(OffloadError::Malformed(
            "IPv4 header (total length below header length)",
        ));
    }
    need(frame, "IPv4 datagram (total length)", l3 + total)?;
    let frag = be16(frame, l3 + 6);
    Ok(FrameInfo {
        vlan_tags,
        l3_offset: l3,
        l3: L3::Ipv4,
        l4_offset: l3 + ihl,
        l4_proto: frame[l3 + 9],
        ip_end: l3 + total,
        // MF set or a non-zero fragment offset.
        is_fragment: frag & 0x3fff != 0,
    })
}

fn parse_ipv6(frame: &[u8], l3: usize, vlan_tags: usize) -> Result<FrameInfo, OffloadError> {
    need(frame, "IPv6 header", l3 + 40)?;
    if frame[l3] >> 4 != 6 {
        return Err(OffloadError::Malformed("IPv6 header (version is not 6)"));
    }
    let payload = usize::from(be16(frame, l3 + 4));
    if payload == 0 {
        // Either an empty packet or a jumbogram (hop-by-hop jumbo option); neither has
        // an L4 header we can offload.
        return Err(OffloadError::Malformed(
            "IPv6 header (zero payload length / jumbogram)",
        ));
    }
    let ip_end = l3 + 40 + payload;
    need(frame, "IPv6 datagram (payload length)", ip_end)?;
    let mut next = frame[l3 + 6];
    let mut off = l3 + 40;
    let mut is_fragment = false;
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        let len = match next {
            // Hop-by-hop, routing, destination options: (hdr ext len + 1) * 8.
            0 | 43 | 60 => {
                if ip_end < off + 2 {
                    return Err(OffloadError::Truncated {
                        what: "IPv6 extension header",
                        need: off + 2,
                        have: ip_end,
                    });
                }
                (usize::from(frame[off + 1]) + 1) * 8
            }
            // Fragment header: fixed 8 bytes.
            44 => {
                if ip_end < off + 8 {
                    return Err(OffloadError::Truncated {
                        what: "IPv6 fragment header",
                        need: off + 8,
                        have: ip_end,
                    });
                }
                // Offset or M flag set.
                if be16(frame, off + 2) & 0xfff9 != 0 {
                    is_fragment = true;
                }
                8
            }
            // Authentication header: (payload len + 2) * 4.
            51 => {
                if ip_end < off + 2 {
                    return Err(OffloadError::Truncated {
                        what: "IPv6 authentication header",
                        need: off + 2,
                        have: ip_end,
                    });
                }
                (usize::from(frame[off + 1]) + 2) * 4
            }
            _ => {
                return Ok(FrameInfo {
                    vlan_tags,
                    l3_offset: l3,
                    l3: L3::Ipv6,
                    l4_offset: off,
                    l4_proto: next,
                    ip_end,
                    is_fragment,
                });
            }
        };
        if ip_end < off + len {
            return Err(OffloadError::Truncated {
                what: "IPv6 extension header",
                need: off + len,
                have: ip_end,
            });
        }
        next = frame[off];
        off += len;
    }
    Err(OffloadError::Malformed(
        "IPv6 packet (too many extension headers)",
    ))
}

/// Length of the TCP header (data offset × 4), checked against the datagram.
pub fn tcp_header_len(frame: &[u8], info: &FrameInfo) -> Result<usize, OffloadError> {
    if info.l4_proto != IPPROTO_TCP {
        return Err(OffloadError::UnsupportedL4(info.l4_proto));
    }
    if info.is_fragment {
        return Err(OffloadError::Fragment);
    }
    let l4 = info.l4_offset;
    if info.ip_end < l4 + 20 {
        return Err(OffloadError::Truncated {
            what: "TCP header",
            need: l4 + 20,
            have: info.ip_end,
        });
    }
    let len = usize::from(frame[l4 + 12] >> 4) * 4;
    if len < 20 {
        return Err(OffloadError::Malformed("TCP header (data offset below 5)"));
    }
    if info.ip_end < l4 + len {
        return Err(OffloadError::Truncated {
            what: "TCP options",
            need: l4 + len,
            have: info.ip_end,
        });
    }
    Ok(len)
}

/// Length of the L4 header that must be present for checksumming (TCP incl. options, UDP 8).
fn l4_header_len(frame: &[u8], info: &FrameInfo) -> Result<usize, OffloadError> {
    match info.l4_proto {
        IPPROTO_TCP => tcp_header_len(frame, info),
        IPPROTO_UDP => {
            if info.is_fragment {
                return Err(OffloadError::Fragment);
            }
            if info.ip_end < info.l4_offset + 8 {
                return Err(OffloadError::Truncated {
                    what: "UDP header",
                    need: info.l4_offset + 8,
                    have: info.ip_end,
                });
            }
            Ok(8)
        }
        other => Err(OffloadError::UnsupportedL4(other)),
    }
}

/// `csum_start` and `csum_offset` (as in `struct virtio_net_hdr` and Linux's
/// `skb->csum_start`/`csum_offset`) for a TCP or UDP frame.
pub fn csum_offsets(frame: &[u8]) -> Result<(u16, u16), OffloadError> {
    let info = parse_frame(frame)?;
    l4_header_len(frame, &info)?;
    let off = if info.l4_proto == IPPROTO_TCP {
        TCP_CSUM_OFFSET
    } else {
        UDP_CSUM_OFFSET
    };
    let start = u16::try_from(info.l4_offset)
        .map_err(|_| OffloadError::Malformed("L4 offset above 64 KiB"))?;
    Ok((start, off))
}

// ---- Internet checksum (RFC 1071) -------------------------------------------------------

/// Adds `data` as big-endian 16-bit words to a running one's-complement sum. Summing
/// 32-bit words into a 64-bit accumulator and folding later gives the same result.
fn sum_words(data: &[u8], mut acc: u64) -> u64 {
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        acc += u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
    }
    let rest = chunks.remainder();
    let mut i = 0;
    while i + 1 < rest.len() {
        acc += u64::from(u16::from_be_bytes([rest[i], rest[i + 1]]));
        i += 2;
    }
    if i < rest.len() {
        acc += u64::from(rest[i]) << 8;
    }
    acc
}

/// Folds a 64-bit sum to 16 bits (one's complement addition of the carries).
fn fold(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The one's-complement checksum (RFC 1071) of `data`, already inverted.
pub fn internet_checksum(data: &[u8]) -> u16 {
    !fold(sum_words(data, 0))
}

/// Unfolded pseudo-header sum for the L4 segment of `info` with length `l4_len`.
fn pseudo_header_sum(frame: &[u8], info: &FrameInfo, l4_len: usize) -> u64 {
    let l3 = info.l3_offset;
    match info.l3 {
        L3::Ipv4 => {
            let acc = sum_words(&frame[l3 + 12..l3 + 20], 0);
            acc + u64::from(info.l4_proto) + l4_len as u64
        }
        L3::Ipv6 => {
            // A routing header would change the final destination; Linux uses the
            // header's destination too (the routing header is already processed by the
            // time the checksum is computed at the sender).
            let acc = sum_words(&frame[l3 + 8..l3 + 40], 0);
            acc + u64::from(info.l4_proto) + l4_len as u64
        }
    }
}

fn csum_field(info: &FrameInfo) -> usize {
    info.l4_offset
        + usize::from(if info.l4_proto == IPPROTO_TCP {
            TCP_CSUM_OFFSET
        } else {
            UDP_CSUM_OFFSET
        })
}

/// Computes and stores the full TCP/UDP checksum (pseudo-header included) of an IPv4 or
/// IPv6 frame, ignoring whatever the checksum field held (blank or partial).
pub fn fill_l4_checksum(frame: &mut [u8]) -> Result<(), OffloadError> {
    let info = parse_frame(frame)?;
    l4_header_len(frame, &info)?;
    let field = csum_field(&info);
    frame[field..field + 2].copy_from_slice(&[0, 0]);
    let acc = pseudo_header_sum(frame, &info, info.l4_len());
    let mut csum = !fold(sum_words(&frame[info.l4_offset..info.ip_end], acc));
    if csum == 0 && info.l4_proto == IPPROTO_UDP {
        // RFC 768: a computed 0 is sent as all ones (0 means "no checksum" on IPv4).
        csum = 0xffff;
    }
    frame[field..field + 2].copy_from_slice(&csum.to_be_bytes());
    Ok(())
}

/// Stores the folded (not inverted) pseudo-header sum in the checksum field: the
/// "partial" form that `VIRTIO_NET_HDR_F_NEEDS_CSUM` / Linux `CHECKSUM_PARTIAL` expect.
/// This is what Linux netback's `skb_checksum_setup(.., recalculate_partial_csum)` does
/// for frontends whose partial checksum cannot be trusted.
pub fn write_pseudo_header_csum(frame: &mut [u8]) -> Result<(), OffloadError> {
    let info = parse_frame(frame)?;
    l4_header_len(frame, &info)?;
    let field = csum_field(&info);
    let partial = fold(pseudo_header_sum(frame, &info, info.l4_len()));
    frame[field..field + 2].copy_from_slice(&partial.to_be_bytes());
    Ok(())
}

/// Finishes a partial checksum the virtio way: sums `frame[csum_start..end]` (the field
/// already holds the pseudo-header sum) and stores the inverted result at
/// `csum_start + csum_offset`. `end` is the IP datagram's end when the frame parses as
/// IP (so Ethernet padding is excluded), else the frame's end. Like Linux's
/// `skb_checksum_help`, a result of 0 is stored as 0xffff.
pub fn complete_partial_checksum(
    frame: &mut [u8],
    csum_start: u16,
    csum_offset: u16,
) -> Result<(), OffloadError> {
    let start = usize::from(csum_start);
    let field = start + usize::from(csum_offset);
    let end = parse_frame(frame).map_or(frame.len(), |i| i.ip_end);
    if field + 2 > end {
        return Err(OffloadError::CsumOutOfRange {
            csum_start: start,
            csum_offset: usize::from(csum_offset),
            len: end,
        });
    }
    let mut csum = !fold(sum_words(&frame[start..end], 0));
    if csum == 0 {
        csum = 0xffff;
    }
    frame[field..field + 2].copy_from_slice(&csum.to_be_bytes());
    Ok(())
}

/// Checks the TCP/UDP checksum of a frame. An IPv4 UDP checksum of 0 ("none") counts as valid.
pub fn verify_l4_checksum(frame: &[u8]) -> Result<bool, OffloadError> {
    let info = parse_frame(frame)?;
    l4_header_len(frame, &info)?;
    let field = csum_field(&info);
    if info.l4_proto == IPPROTO_UDP && info.l3 == L3::Ipv4 && be16(frame, field) == 0 {
        return Ok(true);
    }
    let acc = pseudo_header_sum(frame, &info, info.l4_len());
    Ok(fold(sum_words(&frame[info.l4_offset..info.ip_end], acc)) == 0xffff)
}

/// Recomputes the IPv4 header checksum in place.
pub fn fill_ipv4_header_checksum(frame: &mut [u8]) -> Result<(), OffloadError> {
    let info = parse_frame(frame)?;
    if info.l3 != L3::Ipv4 {
        return Err(OffloadError::NotIp(ETH_P_IPV6));
    }
    let (l3, l4) = (info.l3_offset, info.l4_offset);
    frame[l3 + 10..l3 + 12].copy_from_slice(&[0, 0]);
    let csum = internet_checksum(&frame[l3..l4]);
    frame[l3 + 10..l3 + 12].copy_from_slice(&csum.to_be_bytes());
    Ok(())
}

/// Checks the IPv4 header checksum.
pub fn verify_ipv4_header_checksum(frame: &[u8]) -> Result<bool, OffloadError> {
    let info = parse_frame(frame)?;
    if info.l3 != L3::Ipv4 {
        return Err(OffloadError::NotIp(ETH_P_IPV6));
    }
    Ok(fold(sum_words(&frame[info.l3_offset..info.l4_offset], 0)) == 0xffff)
}

// ---- Software TCP segmentation -------------------------------------------------------

/// Cuts a large TCPv4/TCPv6 frame into MSS-sized frames, as Linux's `tcp_gso_segment` /
/// `inet_gso_segment` / `ipv6_gso_segment` would: every segment gets the same Ethernet,
/// VLAN, IP (with options / extension headers) and TCP headers, then
/// - IPv4 total length, an incremented IP id, and a fresh header checksum;
///   IPv6 payload length;
/// - TCP sequence number advanced by the payload already sent; FIN and PSH only on the
///   last segment, CWR only on the first; a full TCP checksum.
///
/// Output goes into caller-provided buffers ([`TcpSegmenter::next_into`]); nothing is
/// allocated.
#[derive(Debug, Clone)]
pub struct TcpSegmenter<'a> {
    frame: &'a [u8],
    info: FrameInfo,
    /// End of the headers copied into every segment.
    hdr_end: usize,
    payload_len: usize,
    mss: usize,
    /// Payload bytes already emitted.
    done: usize,
    index: usize,
    count: usize,
}

impl<'a> TcpSegmenter<'a> {
    /// Prepares to segment `frame` (a TCP over IPv4/IPv6 frame) into `mss`-byte payloads.
    pub fn new(frame: &'a [u8], mss: u16) -> Result<Self, OffloadError> {
        if mss == 0 {
            return Err(OffloadError::ZeroMss);
        }
        let info = parse_frame(frame)?;
        let tcp_len = tcp_header_len(frame, &info)?;
        let hdr_end = info.l4_offset + tcp_len;
        let payload_len = info.ip_end - hdr_end;
        let mss = usize::from(mss);
        let count = payload_len.div_ceil(mss).max(1);
        Ok(Self {
            frame,
            info,
            hdr_end,
            payload_len,
            mss,
            done: 0,
            index: 0,
            count,
        })
    }

    /// The parsed offsets of the input frame.
    pub fn info(&self) -> &FrameInfo {
        &self.info
    }

    /// Length of the headers repeated in each segment (Ethernet..TCP options).
    pub fn header_len(&self) -> usize {
        self.hdr_end
    }

    /// Total payload bytes of the input frame.
    pub fn payload_len(&self) -> usize {
        self.payload_len
    }

    /// Number of segments the frame is cut into (at least 1).
    pub fn segment_count(&self) -> usize {
        self.count
    }

    /// Segments not yet produced.
    pub fn remaining(&self) -> usize {
        self.count - self.index
    }

    /// Largest segment length: the size each output buffer must have.
    pub fn max_segment_len(&self) -> usize {
        self.hdr_end + self.mss.min(self.payload_len)
    }

    /// Writes the next segment into `out` and returns its length, or `None` when done.
    /// A too-small `out` gives `BufferTooSmall` and does not consume the segment.
    pub fn next_into(&mut self, out: &mut [u8]) -> Option<Result<usize, OffloadError>> {
        if self.index >= self.count {
            return None;
        }
        let chunk = self.mss.min(self.payload_len - self.done);
        let len = self.hdr_end + chunk;
        if out.len() < len {
            return Some(Err(OffloadError::BufferTooSmall {
                need: len,
                have: out.len(),
            }));
        }
        let out = &mut out[..len];
        out[..self.hdr_end].copy_from_slice(&self.frame[..self.hdr_end]);
        let src = self.hdr_end + self.done;
        out[self.hdr_end..].copy_from_slice(&self.frame[src..src + chunk]);

        let first = self.index == 0;
        let last = self.index + 1 == self.count;
        let l3 = self.info.l3_offset;
        let l4 = self.info.l4_offset;
        // IP lengths and id. `len - l3` fits in u16: it is at most the input's IP length.
        let ip_len = (len - l3) as u16;
        match self.info.l3 {
            L3::Ipv4 => {
                out[l3 + 2..l3 + 4].copy_from_slice(&ip_len.to_be_bytes());
                let id = be16(self.frame, l3 + 4).wrapping_add(self.index as u16);
                out[l3 + 4..l3 + 6].copy_from_slice(&id.to_be_bytes());
                out[l3 + 10..l3 + 12].copy_from_slice(&[0, 0]);
                let csum = internet_checksum(&out[l3..l4]);
                out[l3 + 10..l3 + 12].copy_from_slice(&csum.to_be_bytes());
            }
            L3::Ipv6 => {
                out[l3 + 4..l3 + 6].copy_from_slice(&(ip_len - 40).to_be_bytes());
            }
        }
        // TCP sequence number and flags.
        let seq = be32(self.frame, l4 + 4).wrapping_add(self.done as u32);
        out[l4 + 4..l4 + 8].copy_from_slice(&seq.to_be_bytes());
        let mut flags = out[l4 + 13];
        if !last {
            flags &= !(TCP_FLAG_FIN | TCP_FLAG_PSH);
        }
        if !first {
            flags &= !TCP_FLAG_CWR;
        }
        out[l4 + 13] = flags;
        // Full checksum over the new segment.
        out[l4 + 16..l4 + 18].copy_from_slice(&[0, 0]);
        let acc = pseudo_header_sum(out, &self.info, len - l4);
        let csum = !fold(sum_words(&out[l4..], acc));
        out[l4 + 16..l4 + 18].copy_from_slice(&csum.to_be_bytes());

        self.done += chunk;
        self.index += 1;
        Some(Ok(len))
    }
}

// ---- netif <-> virtio translation ----------------------------------------------------

/// `NETTXF_csum_blank` (netif.h): the guest left the L4 checksum blank (partial).
pub const NETTXF_CSUM_BLANK: u16 = 1 << 0;
/// `NETTXF_data_validated` (netif.h): the guest already validated the checksum.
pub const NETTXF_DATA_VALIDATED: u16 = 1 << 1;
/// `NETRXF_data_validated` (netif.h): the checksum is known good.
pub const NETRXF_DATA_VALIDATED: u16 = 1 << 0;
/// `NETRXF_csum_blank` (netif.h): the checksum is partial; the guest must not verify it.
pub const NETRXF_CSUM_BLANK: u16 = 1 << 1;
/// `XEN_NETIF_GSO_TYPE_NONE`.
pub const XEN_NETIF_GSO_TYPE_NONE: u8 = 0;
/// `XEN_NETIF_GSO_TYPE_TCPV4`.
pub const XEN_NETIF_GSO_TYPE_TCPV4: u8 = 1;
/// `XEN_NETIF_GSO_TYPE_TCPV6`.
pub const XEN_NETIF_GSO_TYPE_TCPV6: u8 = 2;

/// The GSO part of a netif `XEN_NETIF_EXTRA_TYPE_GSO` extra-info slot
/// (`u.gso.type`, `u.gso.size`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetifGso {
    /// `XEN_NETIF_GSO_TYPE_*`.
    pub gso_type: u8,
    /// MSS.
    pub gso_size: u16,
}

/// What netback puts in a guest's `netif_rx_response` (flags) and GSO extra slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetifRxMeta {
    /// `NETRXF_*` checksum flags.
    pub flags: u16,
    /// GSO extra info, if the frame is a super-frame.
    pub gso: Option<NetifGso>,
}

/// Guest TX → TAP: builds the vnet header for a frame the guest sent with netif `flags`
/// and optional GSO extra info, as Linux netback's `xenvif_set_skb_gso` +
/// `checksum_setup` would. A GSO frame is always treated as checksum-partial (Linux
/// netback forces this for buggy frontends). For a partial checksum, the pseudo-header sum
/// is recomputed into the frame so a frontend that left the field zero still ends up
/// with a correct checksum.
pub fn vnet_hdr_from_netif_tx(
    frame: &mut [u8],
    flags: u16,
    gso: Option<NetifGso>,
) -> Result<VirtioNetHdr, OffloadError> {
    let mut hdr = VirtioNetHdr::NONE;
    let partial = flags & NETTXF_CSUM_BLANK != 0 || gso.is_some();
    if let Some(g) = gso {
        let info = parse_frame(frame)?;
        let (vtype, l3) = match g.gso_type {
            XEN_NETIF_GSO_TYPE_TCPV4 => (VIRTIO_NET_HDR_GSO_TCPV4, L3::Ipv4),
            XEN_NETIF_GSO_TYPE_TCPV6 => (VIRTIO_NET_HDR_GSO_TCPV6, L3::Ipv6),
            other => return Err(OffloadError::UnsupportedGso(other)),
        };
        if info.l3 != l3 || info.l4_proto != IPPROTO_TCP {
            return Err(OffloadError::GsoMismatch {
                gso_type: g.gso_type,
            });
        }
        if g.gso_size == 0 {
            return Err(OffloadError::ZeroMss);
        }
        let tcp_len = tcp_header_len(frame, &info)?;
        hdr.gso_type = vtype;
        hdr.gso_size = g.gso_size;
        hdr.hdr_len = u16::try_from(info.l4_offset + tcp_len)
            .map_err(|_| OffloadError::Malformed("headers above 64 KiB"))?;
    }
    if partial {
        let (start, off) = csum_offsets(frame)?;
        write_pseudo_header_csum(frame)?;
        hdr.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
        hdr.csum_start = start;
        hdr.csum_offset = off;
        if hdr.hdr_len == 0 {
            hdr.hdr_len = start + off + 2;
        }
    } else if flags & NETTXF_DATA_VALIDATED != 0 {
        hdr.flags = VIRTIO_NET_HDR_F_DATA_VALID;
    }
    Ok(hdr)
}

/// TAP → guest RX: maps the vnet header of a frame read from the TAP to netif RX flags and
/// GSO extra info, as Linux netback's `xenvif_rx_action` does for an skb
/// (`CHECKSUM_PARTIAL` → `csum_blank | data_validated`, `CHECKSUM_UNNECESSARY` →
/// `data_validated`). The ECN modifier has no netif equivalent and is dropped (the guest
/// receives the super-frame whole, nothing re-segments it). A guest that did not
/// negotiate checksum offload must instead get the frame after
/// [`complete_partial_checksum`].
pub fn netif_rx_from_vnet_hdr(hdr: &VirtioNetHdr) -> Result<NetifRxMeta, OffloadError> {
    let flags = if hdr.needs_csum() {
        NETRXF_CSUM_BLANK | NETRXF_DATA_VALIDATED
    } else if hdr.data_valid() {
        NETRXF_DATA_VALIDATED
    } else {
        0
    };
    let gso = match hdr.gso_kind() {
        VIRTIO_NET_HDR_GSO_NONE => None,
        k @ (VIRTIO_NET_HDR_GSO_TCPV4 | VIRTIO_NET_HDR_GSO_TCPV6) => {
            if hdr.gso_size == 0 {
                return Err(OffloadError::ZeroMss);
            }
            Some(NetifGso {
                gso_type: if k == VIRTIO_NET_HDR_GSO_TCPV4 {
                    XEN_NETIF_GSO_TYPE_TCPV4
                } else {
                    XEN_NETIF_GSO_TYPE_TCPV6
                },
                gso_size: hdr.gso_size,
            })
        }
        other => return Err(OffloadError::UnsupportedGso(other)),
    };
    Ok(NetifRxMeta { flags, gso })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_matches_rfc1071_example() {
        // RFC 1071 §3 example words 0001 f203 f4f5 f6f7 sum to ddf2 (before inversion).
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(internet_checksum(&data), !0xddf2);
        // Odd length: last byte is padded with zero on the right.
        assert_eq!(internet_checksum(&[0x12]), !0x1200);
        assert_eq!(
            internet_checksum(&[0x12, 0x34, 0x56]),
            !(0x1234u16 + 0x5600)
        );
    }

    #[test]
    fn known_ipv4_header_checksum() {
        // Classic example header (Wikipedia "IPv4 header checksum"): checksum b861.
        let mut f = vec![0u8; 14];
        f[12..14].copy_from_slice(&ETH_P_IP.to_be_bytes());
        f.extend_from_slice(&[
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ]);
        f.resize(14 + 0x73, 0);
        fill_ipv4_header_checksum(&mut f).unwrap();
        assert_eq!(&f[24..26], &[0xb8, 0x61]);
        assert!(verify_ipv4_header_checksum(&f).unwrap());
        f[20] ^= 1;
        assert!(!verify_ipv4_header_checksum(&f).unwrap());
    }

    #[test]
    fn netif_rx_mapping() {
        let mut h = VirtioNetHdr::NONE;
        assert_eq!(
            netif_rx_from_vnet_hdr(&h),
            Ok(NetifRxMeta {
                flags: 0,
                gso: None
            })
        );
        h.flags = VIRTIO_NET_HDR_F_DATA_VALID;
        assert_eq!(
            netif_rx_from_vnet_hdr(&h).unwrap().flags,
            NETRXF_DATA_VALIDATED
        );
        h.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
        h.gso_type = VIRTIO_NET_HDR_GSO_TCPV6 | crate::virtio_net_hdr::VIRTIO_NET_HDR_GSO_ECN;
        h.gso_size = 1400;
        assert_eq!(
            netif_rx_from_vnet_hdr(&h),
            Ok(NetifRxMeta {
                flags: NETRXF_CSUM_BLANK | NETRXF_DATA_VALIDATED,
                gso: Some(NetifGso {
                    gso_type: XEN_NETIF_GSO_TYPE_TCPV6,
                    gso_size: 1400
                })
            })
        );
        h.gso_size = 0;
        assert_eq!(netif_rx_from_vnet_hdr(&h), Err(OffloadError::ZeroMss));
        h.gso_type = crate::virtio_net_hdr::VIRTIO_NET_HDR_GSO_UDP;
        h.gso_size = 1400;
        assert_eq!(
            netif_rx_from_vnet_hdr(&h),
            Err(OffloadError::UnsupportedGso(3))
        );
    }
}
