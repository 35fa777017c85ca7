//! The frames the pvnet cells move, and how a receiver verifies them.
//!
//! Every frame is a real IPv4 frame, so the learning switch forwards it by MAC, netback's
//! flow hash spreads flows over a guest's queues, and a GSO super-frame carries the TCP
//! headers netfront needs to leave its checksum blank (`NETTXF_csum_blank`):
//!
//! * up to [`cell::MAX_NON_GSO_FRAME`](crate::cell::MAX_NON_GSO_FRAME) bytes: Ethernet,
//!   IPv4, UDP (checksum 0, "none", as IPv4 allows), payload;
//! * larger (GSO): Ethernet, IPv4, TCP, payload, sent with a `XEN_NETIF_GSO_TYPE_TCPV4`
//!   extra of MSS [`GSO_MSS`].
//!
//! The stamp sits in the payload, not at byte 0 like the peers' frames
//! ([`crate::frame`]): the reflector swaps the MAC addresses and the switch forwards by
//! them, so the first 12 bytes are not ours. The head stamp is `flow << 48 | seq` at the
//! payload's start; the tail stamp is the head stamp xor [`TAIL_MAGIC`] in the last 8
//! bytes. Checking both catches lost, duplicated, reordered, truncated and torn frames
//! at the cost of two loads, as in the peers.

use std::fmt;

use crate::frame::TAIL_MAGIC;

/// `ETH_HLEN`
pub const ETH_HLEN: usize = 14;
/// IPv4 header without options.
const IPV4_HLEN: usize = 20;
/// UDP header.
const UDP_HLEN: usize = 8;
/// TCP header without options.
const TCP_HLEN: usize = 20;
/// `ETH_P_IP`
const ETH_P_IP: u16 = 0x0800;
/// `IPPROTO_UDP`
const IPPROTO_UDP: u8 = 17;
/// `IPPROTO_TCP`
const IPPROTO_TCP: u8 = 6;

/// `ETH_ZLEN`: the shortest Ethernet frame (without FCS). Shorter cells are refused.
pub const MIN_PVNET_FRAME: usize = 60;

/// `XEN_NETIF_MAX_TX_SIZE`: the largest frame one netif packet carries (the first TX
/// slot's `size` is a `uint16_t`).
pub const MAX_PVNET_FRAME: usize = hv::abi::netif::XEN_NETIF_MAX_TX_SIZE;

/// The MSS of GSO super-frames: a 1500-byte MTU minus IPv4 and TCP headers with the
/// timestamp option, what Linux uses on such a link.
pub const GSO_MSS: u16 = 1448;

/// Flows a cell may use (one per sending queue); the flow id lives in the stamp's top
/// 16 bits.
pub const MAX_FLOWS: usize = 64;

/// Bits of the head stamp holding the sequence number.
const SEQ_BITS: u32 = 48;
const SEQ_MASK: u64 = (1 << SEQ_BITS) - 1;

/// `00:16:3e` is Xen's OUI, used for guest MACs as libxl does.
pub fn guest_mac(index: usize) -> [u8; 6] {
    [0x00, 0x16, 0x3e, 0x4c, 0x54, (index as u8).wrapping_add(1)]
}

/// Dom0's side of the link (locally administered): the destination of guest→Dom0
/// frames and the source of Dom0→guest ones.
pub const DOM0_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x4c, 0x54, 0x00];

/// What a test frame looks like, apart from its stamps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameSpec {
    /// Frame length, Ethernet header included.
    pub len: usize,
    /// Destination MAC.
    pub dst: [u8; 6],
    /// Source MAC.
    pub src: [u8; 6],
    /// Which flow (sending queue) the frame belongs to.
    pub flow: u16,
    /// Destination queue count the flow's ports are chosen for (see [`flow_ports`]).
    pub spread_over: u16,
}

impl FrameSpec {
    /// True if the frame is a TCP GSO super-frame.
    pub fn gso(&self) -> bool {
        crate::cell::is_gso(self.len as u32)
    }
}

/// Where a frame's payload (and so its head stamp) starts.
pub fn payload_offset(len: usize) -> usize {
    if crate::cell::is_gso(len as u32) {
        ETH_HLEN + IPV4_HLEN + TCP_HLEN
    } else {
        ETH_HLEN + IPV4_HLEN + UDP_HLEN
    }
}

/// Source and destination addresses of every test frame: 10.76.84.1 → 10.76.84.2.
const IP_SRC: [u8; 4] = [10, 76, 84, 1];
const IP_DST: [u8; 4] = [10, 76, 84, 2];
/// Destination port of every flow; the source port varies per flow.
const DST_PORT: u16 = 5201;
const FIRST_SRC_PORT: u16 = 40000;

/// The hash netback uses to pick a guest's RX queue for a frame a port forwards
/// (FNV-1a over the IPv4 addresses and the first 4 bytes of the L4 header). It is
/// private to netback; it is mirrored here only to *choose* source ports so that flow
/// `i` lands on queue `i mod n` of a receiving guest. If netback's hash changes, frames
/// still arrive and verify (receivers accept any flow on any queue); only the spread
/// over queues may become uneven.
fn fnv1a(addrs: &[u8], l4: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in addrs.iter().chain(l4) {
        h = (h ^ u32::from(*b)).wrapping_mul(0x0100_0193);
    }
    h
}

/// The UDP/TCP source and destination ports of `flow`: the first source port (from
/// [`FIRST_SRC_PORT`] upward, distinct per flow) whose hash puts the flow on queue
/// `flow mod spread_over`.
pub fn flow_ports(flow: u16, spread_over: u16) -> (u16, u16) {
    let n = u32::from(spread_over.max(1));
    let want = u32::from(flow) % n;
    let mut addrs = [0u8; 8];
    addrs[..4].copy_from_slice(&IP_SRC);
    addrs[4..].copy_from_slice(&IP_DST);
    // Flows take disjoint port ranges so two flows never share a port pair.
    let base = FIRST_SRC_PORT.wrapping_add(flow.wrapping_mul(64));
    for k in 0..64u16 {
        let sport = base.wrapping_add(k);
        let mut l4 = [0u8; 4];
        l4[..2].copy_from_slice(&sport.to_be_bytes());
        l4[2..].copy_from_slice(&DST_PORT.to_be_bytes());
        if fnv1a(&addrs, &l4) % n == want {
            return (sport, DST_PORT);
        }
    }
    (base, DST_PORT)
}

/// The RFC 1071 checksum of an IPv4 header.
fn ipv4_checksum(h: &[u8]) -> u16 {
    let mut sum: u32 = h
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The frame `spec` describes, unstamped: headers filled in, payload a non-zero
/// pattern. `None` if the length is outside
/// [`MIN_PVNET_FRAME`]..=[`MAX_PVNET_FRAME`].
pub fn template(spec: &FrameSpec) -> Option<Vec<u8>> {
    let len = spec.len;
    if !(MIN_PVNET_FRAME..=MAX_PVNET_FRAME).contains(&len) {
        return None;
    }
    let mut f: Vec<u8> = (0..len).map(|i| (i % 251) as u8 | 1).collect();
    f[0..6].copy_from_slice(&spec.dst);
    f[6..12].copy_from_slice(&spec.src);
    f[12..14].copy_from_slice(&ETH_P_IP.to_be_bytes());
    let gso = spec.gso();
    let ip_len = u16::try_from(len - ETH_HLEN).ok()?;
    let ip = &mut f[ETH_HLEN..ETH_HLEN + IPV4_HLEN];
    ip[0] = 0x45;
    ip[1] = 0;
    ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
    ip[4..6].copy_from_slice(&spec.flow.to_be_bytes());
    ip[6..8].copy_from_slice(&0x4000u16.to_be_bytes()); // DF
    ip[8] = 64;
    ip[9] = if gso { IPPROTO_TCP } else { IPPROTO_UDP };
    ip[10..12].copy_from_slice(&[0, 0]);
    ip[12..16].copy_from_slice(&IP_SRC);
    ip[16..20].copy_from_slice(&IP_DST);
    let csum = ipv4_checksum(ip);
    ip[10..12].copy_from_slice(&csum.to_be_bytes());
    let (sport, dport) = flow_ports(spec.flow, spec.spread_over);
    let l4 = &mut f[ETH_HLEN + IPV4_HLEN..];
    l4[0..2].copy_from_slice(&sport.to_be_bytes());
    l4[2..4].copy_from_slice(&dport.to_be_bytes());
    if gso {
        // seq, ack, data offset 5 words, ACK|PSH, window; the checksum is left for
        // netfront to seed with the pseudo-header sum (CHECKSUM_PARTIAL).
        l4[4..8].copy_from_slice(&1u32.to_be_bytes());
        l4[8..12].copy_from_slice(&1u32.to_be_bytes());
        l4[12] = 0x50;
        l4[13] = 0x18;
        l4[14..16].copy_from_slice(&0xffffu16.to_be_bytes());
        l4[16..20].copy_from_slice(&[0, 0, 0, 0]);
    } else {
        let udp_len = u16::try_from(len - ETH_HLEN - IPV4_HLEN).ok()?;
        l4[4..6].copy_from_slice(&udp_len.to_be_bytes());
        l4[6..8].copy_from_slice(&[0, 0]);
    }
    Some(f)
}

/// The head stamp of `seq` in `flow`.
#[inline]
pub fn head_stamp(flow: u16, seq: u64) -> u64 {
    (u64::from(flow) << SEQ_BITS) | (seq & SEQ_MASK)
}

/// The two stamps of a frame of `len` bytes as (offset, 8 bytes) pairs.
#[inline]
pub fn stamps(len: usize, flow: u16, seq: u64) -> [(usize, [u8; 8]); 2] {
    let head = head_stamp(flow, seq);
    [
        (payload_offset(len), head.to_le_bytes()),
        (len - 8, (head ^ TAIL_MAGIC).to_le_bytes()),
    ]
}

/// Writes the part of `template` and of the stamps of (`flow`, `seq`) that falls in
/// `seg`, which holds the frame's bytes `off..off + seg.len()`. Called once per page
/// by netfront's `send_with`, so the frame is built straight in the granted pages.
#[inline]
pub fn fill_segment(template: &[u8], flow: u16, seq: u64, off: usize, seg: &mut [u8]) {
    let end = off + seg.len();
    seg.copy_from_slice(&template[off..end]);
    for (at, bytes) in stamps(template.len(), flow, seq) {
        let (a, b) = (at.max(off), (at + 8).min(end));
        if a < b {
            seg[a - off..b - off].copy_from_slice(&bytes[a - at..b - at]);
        }
    }
}

/// Stamps a whole frame in place.
#[inline]
pub fn stamp(frame: &mut [u8], flow: u16, seq: u64) {
    let len = frame.len();
    for (at, bytes) in stamps(len, flow, seq) {
        frame[at..at + 8].copy_from_slice(&bytes);
    }
}

/// Reads 8 bytes at `at` from a frame given as its segments in order.
fn read_word<'a>(segs: impl Iterator<Item = &'a [u8]>, at: usize) -> Option<u64> {
    let mut out = [0u8; 8];
    let mut got = 0usize;
    let mut off = 0usize;
    for s in segs {
        let end = off + s.len();
        let want = at + got;
        if want < end && got < 8 {
            let n = (end - want).min(8 - got);
            out[got..got + n].copy_from_slice(&s[want - off..want - off + n]);
            got += n;
        }
        if got == 8 {
            return Some(u64::from_le_bytes(out));
        }
        off = end;
    }
    None
}

/// Why a received frame failed verification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Wrong length.
    Length { got: usize },
    /// The tail stamp does not match the head (torn or truncated).
    Torn { head: u64, tail: u64 },
    /// A flow id no sender uses.
    UnknownFlow(u16),
    /// The sequence number went backwards or repeated (duplicate or reordered).
    Backwards { flow: u16, seq: u64 },
    /// A GSO frame arrived without its GSO metadata (or a plain frame with some).
    Offload { gso: bool },
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Length { got } => write!(f, "{got} bytes"),
            Fault::Torn { head, tail } => {
                write!(f, "head stamp {head:#x}, tail stamp {tail:#x}")
            }
            Fault::UnknownFlow(fl) => write!(f, "unknown flow {fl}"),
            Fault::Backwards { flow, seq } => {
                write!(f, "flow {flow} went back to sequence number {seq}")
            }
            Fault::Offload { gso } => {
                write!(f, "GSO metadata present: {gso}, expected the opposite")
            }
        }
    }
}

/// A receiver's view of the flows it sees: the next sequence number expected per flow,
/// frames verified and sequence numbers skipped (frames the path lost).
#[derive(Clone, Debug)]
pub struct FlowCheck {
    len: usize,
    expected: Vec<u64>,
    /// Frames verified.
    pub frames: u64,
    /// Sequence numbers skipped over (lost frames), all flows.
    pub skipped: u64,
}

/// A verification failure with the sequence number that was expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// Next sequence number the flow expected (0 if the flow is unknown).
    pub expected: u64,
    /// What was wrong.
    pub fault: Fault,
}

impl FlowCheck {
    /// Checks frames of `len` bytes from `flows` flows.
    pub fn new(len: usize, flows: usize) -> Self {
        FlowCheck {
            len,
            expected: vec![0; flows.min(MAX_FLOWS)],
            frames: 0,
            skipped: 0,
        }
    }

    /// Makes `seq` the next sequence number `flow` expects (a sender that jumps ahead
    /// on purpose, e.g. the latency harness after its warm-up).
    pub fn expect(&mut self, flow: u16, seq: u64) {
        if let Some(e) = self.expected.get_mut(usize::from(flow)) {
            *e = seq;
        }
    }

    /// Verifies a contiguous frame.
    #[inline]
    pub fn check(&mut self, frame: &[u8], gso: bool) -> Result<(), Failure> {
        self.check_segments(frame.len(), std::iter::once(frame), gso)
    }

    /// Verifies a frame of `len` bytes given as its segments in order; `gso` says
    /// whether it came with GSO metadata.
    pub fn check_segments<'a>(
        &mut self,
        len: usize,
        segs: impl Iterator<Item = &'a [u8]> + Clone,
        gso: bool,
    ) -> Result<(), Failure> {
        let fail = |expected, fault| Err(Failure { expected, fault });
        if len != self.len {
            return fail(0, Fault::Length { got: len });
        }
        let (Some(head), Some(tail)) = (
            read_word(segs.clone(), payload_offset(len)),
            read_word(segs, len - 8),
        ) else {
            return fail(0, Fault::Length { got: len });
        };
        if tail ^ TAIL_MAGIC != head {
            return fail(0, Fault::Torn { head, tail });
        }
        let flow = (head >> SEQ_BITS) as u16;
        let seq = head & SEQ_MASK;
        let Some(next) = self.expected.get_mut(usize::from(flow)) else {
            return fail(0, Fault::UnknownFlow(flow));
        };
        if seq < *next {
            let expected = *next;
            return fail(expected, Fault::Backwards { flow, seq });
        }
        if gso != crate::cell::is_gso(len as u32) {
            return fail(*next, Fault::Offload { gso });
        }
        self.skipped += seq - *next;
        *next = seq + 1;
        self.frames += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(len: usize, flow: u16) -> FrameSpec {
        FrameSpec {
            len,
            dst: DOM0_MAC,
            src: guest_mac(0),
            flow,
            spread_over: 2,
        }
    }

    #[test]
    fn templates_are_valid_ipv4_frames() {
        let f = template(&spec(64, 0)).expect("64 fits");
        assert_eq!(&f[12..14], &[0x08, 0x00]);
        assert_eq!(f[14], 0x45);
        assert_eq!(u16::from_be_bytes([f[16], f[17]]), 50);
        assert_eq!(f[23], IPPROTO_UDP);
        assert_eq!(ipv4_checksum(&f[14..34]), 0, "header checksum verifies");
        assert_eq!(u16::from_be_bytes([f[38], f[39]]), 30, "UDP length");
        let g = template(&spec(65535, 1)).expect("65535 fits");
        assert_eq!(g[23], IPPROTO_TCP);
        assert_eq!(g[46], 0x50);
        assert_eq!(u16::from_be_bytes([g[16], g[17]]), 65521);
        assert!(template(&spec(59, 0)).is_none());
        assert!(template(&spec(65536, 0)).is_none());
    }

    #[test]
    fn flows_spread_over_queues_by_netbacks_hash() {
        for n in 1..=4u16 {
            for flow in 0..8u16 {
                let (s, d) = flow_ports(flow, n);
                let mut addrs = [0u8; 8];
                addrs[..4].copy_from_slice(&IP_SRC);
                addrs[4..].copy_from_slice(&IP_DST);
                let mut l4 = [0u8; 4];
                l4[..2].copy_from_slice(&s.to_be_bytes());
                l4[2..].copy_from_slice(&d.to_be_bytes());
                assert_eq!(fnv1a(&addrs, &l4) % u32::from(n), u32::from(flow % n));
            }
        }
        assert_ne!(flow_ports(0, 2), flow_ports(1, 2));
    }

    #[test]
    fn segmented_fill_equals_whole_stamp_for_straddling_tails() {
        // 4096 + 4 bytes: the tail stamp straddles the page boundary.
        for len in [64usize, 4100, 9014, 65535] {
            let t = template(&spec(len, 1)).expect("size fits");
            let mut whole = t.clone();
            stamp(&mut whole, 1, 77);
            let mut paged = vec![0u8; len];
            for (i, seg) in paged.chunks_mut(4096).enumerate() {
                fill_segment(&t, 1, 77, i * 4096, seg);
            }
            assert_eq!(paged, whole, "{len}");
            let mut c = FlowCheck::new(len, 2);
            c.check_segments(len, paged.chunks(4096), len > 9018)
                .expect("verifies");
            assert_eq!((c.frames, c.skipped), (1, 77));
        }
    }

    #[test]
    fn checker_catches_every_kind_of_damage() {
        let t = template(&spec(64, 0)).expect("fits");
        let frame = |flow, seq| {
            let mut f = t.clone();
            stamp(&mut f, flow, seq);
            f
        };
        let mut c = FlowCheck::new(64, 2);
        assert!(c.check(&frame(0, 0), false).is_ok());
        assert!(
            c.check(&frame(1, 0), false).is_ok(),
            "flows are independent"
        );
        assert!(
            c.check(&frame(0, 3), false).is_ok(),
            "a gap is a loss, not a fault"
        );
        assert_eq!(c.skipped, 2);
        let f = c.check(&frame(0, 3), false).expect_err("duplicate");
        assert_eq!(f.expected, 4);
        assert!(matches!(f.fault, Fault::Backwards { flow: 0, seq: 3 }));
        assert!(matches!(
            c.check(&frame(2, 0), false).map_err(|f| f.fault),
            Err(Fault::UnknownFlow(2))
        ));
        let mut torn = frame(0, 9);
        torn[60] ^= 1;
        assert!(matches!(
            c.check(&torn, false).map_err(|f| f.fault),
            Err(Fault::Torn { .. })
        ));
        assert!(matches!(
            c.check(&frame(0, 9)[..63], false).map_err(|f| f.fault),
            Err(Fault::Length { got: 63 })
        ));
        assert!(matches!(
            c.check(&frame(0, 9), true).map_err(|f| f.fault),
            Err(Fault::Offload { gso: true })
        ));
        assert_eq!(c.frames, 3);
    }
}
