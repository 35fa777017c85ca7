//! Guest → host: consecutive TCP segments of one flow in a guest's TX batch, written to
//! the TAP as one GSO super-frame (what Linux's GRO does on receive).
//!
//! A guest stack without TSO (smoltcp) sends MSS-sized segments. Each one written to
//! the TAP costs a `writev` and a trip through the bridge and the kernel's receive path;
//! merged, a whole run costs one. The merged frame is what a TSO-capable guest would
//! have sent: the first segment's headers, the payloads back to back,
//! `VIRTIO_NET_HDR_GSO_TCPV4` with `gso_size` = the segments' MSS and a partial
//! checksum (`VIRTIO_NET_HDR_F_NEEDS_CSUM`), so the kernel delivers it locally in one
//! piece or re-segments it exactly into the original segments when it forwards it.
//!
//! Only what re-segments exactly is merged (Linux's `tcp_gro_receive` rules, simplified):
//! IPv4 without options or fragmentation (DF set), TCP with only ACK/PSH set, the
//! guest asked for checksum offload (`NETTXF_csum_blank`) and no GSO of its own, the
//! same Ethernet header, addresses, TOS, TTL, ports, ACK number and TCP options,
//! sequence numbers back to back, and every segment but the last exactly `gso_size`
//! long. Anything else ends the run and goes out unchanged, in order.

use crate::frame::Frame;
use crate::offload::{fill_ipv4_header_checksum, write_pseudo_header_csum};
use crate::virtio_net_hdr::{VirtioNetHdr, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4};

/// Ethernet header length (no VLAN tag: tagged frames are not merged).
const ETH: usize = 14;
/// IPv4 header without options.
const IPV4: usize = 20;
/// Offset of the TCP header.
const L4: usize = ETH + IPV4;
/// Largest merged IPv4 datagram (the 16-bit total length).
const MAX_DATAGRAM: usize = 65_535;
/// Most segments in one super-frame (Linux caps GSO segments at 64 by default).
const MAX_SEGMENTS: u16 = 64;
const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_PSH: u8 = 0x08;
const TCP_ACK: u8 = 0x10;

/// What makes a segment mergeable, read from its headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Segment {
    /// TCP header length (with options).
    tcp_len: usize,
    seq: u32,
    payload: usize,
}

/// Parse `f` as a mergeable TCPv4 segment, or `None`.
fn segment(f: &Frame<'_>) -> Option<Segment> {
    let d = f.data;
    if !f.meta.csum_blank || f.meta.gso.is_some() || d.len() < L4 + 20 {
        return None;
    }
    // EtherType IPv4, version 4 / IHL 5, protocol TCP.
    if d[12..14] != [0x08, 0x00] || d[ETH] != 0x45 || d[ETH + 9] != 6 {
        return None;
    }
    // DF only: no MF, no fragment offset.
    if u16::from_be_bytes([d[ETH + 6], d[ETH + 7]]) != 0x4000 {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([d[ETH + 2], d[ETH + 3]]));
    let tcp_len = usize::from(d[L4 + 12] >> 4) * 4;
    let flags = d[L4 + 13];
    if tcp_len < 20
        || total < IPV4 + tcp_len
        || ETH + total > d.len()
        || flags & (TCP_FIN | TCP_SYN | TCP_RST) != 0
        || flags & !(TCP_ACK | TCP_PSH) != 0
        || flags & TCP_ACK == 0
        || d[L4 + 13 - 1] & 0x0f != 0
    {
        return None;
    }
    let payload = total - IPV4 - tcp_len;
    if payload == 0 {
        return None;
    }
    let seq = u32::from_be_bytes([d[L4 + 4], d[L4 + 5], d[L4 + 6], d[L4 + 7]]);
    Some(Segment {
        tcp_len,
        seq,
        payload,
    })
}

/// The run being merged.
#[derive(Debug)]
struct Run {
    first: Segment,
    next_seq: u32,
    /// Payload bytes of every segment but possibly the last.
    mss: usize,
    segments: u16,
    /// The last segment added was shorter than `mss`: nothing may follow it.
    closed: bool,
}

/// Builds super-frames from runs of segments. One per TAP queue writer; its buffer is
/// allocated once (the largest datagram plus the Ethernet header).
#[derive(Debug, Default)]
pub(super) struct Coalescer {
    buf: Vec<u8>,
    run: Option<Run>,
    /// The `VirtioNetHdr` the single segment of a one-segment run goes out with.
    single: VirtioNetHdr,
}

/// What [`Coalescer::offer`] did with a frame.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Offer {
    /// Taken into the current run.
    Merged,
    /// Not taken: the caller writes the run held (if any) and then the frame itself.
    Refused,
}

impl Coalescer {
    /// Offer the next frame of the batch. `single` is the header the frame would be
    /// written with on its own (kept in case the run ends with only this frame).
    pub(super) fn offer(&mut self, f: &Frame<'_>, single: VirtioNetHdr) -> Offer {
        let Some(seg) = segment(f) else {
            return Offer::Refused;
        };
        if let Some(run) = &self.run {
            if self.continues(run, &seg, f.data) {
                let d = f.data;
                let start = L4 + seg.tcp_len;
                self.buf.extend_from_slice(&d[start..start + seg.payload]);
                // The last segment's window and PSH are the ones that count.
                self.buf[L4 + 13] |= d[L4 + 13] & TCP_PSH;
                self.buf[L4 + 14..L4 + 16].copy_from_slice(&d[L4 + 14..L4 + 16]);
                if let Some(run) = &mut self.run {
                    run.next_seq = seg.seq.wrapping_add(seg.payload as u32);
                    run.segments += 1;
                    run.closed = seg.payload < run.mss;
                }
                return Offer::Merged;
            }
            return Offer::Refused;
        }
        self.start(seg, f.data, single);
        Offer::Merged
    }

    /// Segments in the run held (0: none).
    pub(super) fn segments(&self) -> u16 {
        self.run.as_ref().map_or(0, |r| r.segments)
    }

    /// Whether a run is held.
    pub(super) fn is_empty(&self) -> bool {
        self.run.is_none()
    }

    /// Start a new run with `seg`. Call only when no run is held.
    fn start(&mut self, seg_frame_ok: Segment, d: &[u8], single: VirtioNetHdr) {
        let end = L4 + seg_frame_ok.tcp_len + seg_frame_ok.payload;
        self.buf.clear();
        self.buf.extend_from_slice(&d[..end]);
        self.single = single;
        self.run = Some(Run {
            first: seg_frame_ok,
            next_seq: seg_frame_ok.seq.wrapping_add(seg_frame_ok.payload as u32),
            mss: seg_frame_ok.payload,
            segments: 1,
            closed: false,
        });
    }

    fn continues(&self, run: &Run, seg: &Segment, d: &[u8]) -> bool {
        let b = &self.buf;
        !run.closed
            && run.segments < MAX_SEGMENTS
            && seg.seq == run.next_seq
            && seg.payload <= run.mss
            && seg.tcp_len == run.first.tcp_len
            && b.len() + seg.payload <= ETH + MAX_DATAGRAM
            // Ethernet header; TOS; TTL + protocol; addresses.
            && b[..ETH] == d[..ETH]
            && b[ETH + 1] == d[ETH + 1]
            && b[ETH + 8..ETH + 10] == d[ETH + 8..ETH + 10]
            && b[ETH + 12..ETH + 20] == d[ETH + 12..ETH + 20]
            // Ports; ACK number; flags other than PSH; options.
            && b[L4..L4 + 4] == d[L4..L4 + 4]
            && b[L4 + 8..L4 + 12] == d[L4 + 8..L4 + 12]
            && b[L4 + 13] & !TCP_PSH == d[L4 + 13] & !TCP_PSH
            && b[L4 + 20..L4 + seg.tcp_len] == d[L4 + 20..L4 + seg.tcp_len]
    }

    /// Take the run held: the frame to write and its header, or `None`. A run of one
    /// segment goes out as it came; a longer one as a super-frame with fixed-up IPv4
    /// length and checksum and the partial TCP checksum GSO expects.
    pub(super) fn take(&mut self) -> Option<(&[u8], VirtioNetHdr)> {
        let run = self.run.take()?;
        if run.segments == 1 {
            return Some((&self.buf[..], self.single));
        }
        let total = self.buf.len() - ETH;
        let Ok(total16) = u16::try_from(total) else {
            return None;
        };
        self.buf[ETH + 2..ETH + 4].copy_from_slice(&total16.to_be_bytes());
        if fill_ipv4_header_checksum(&mut self.buf).is_err()
            || write_pseudo_header_csum(&mut self.buf).is_err()
        {
            return None;
        }
        let hdr_len = L4 + run.first.tcp_len;
        let hdr = VirtioNetHdr {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            gso_type: VIRTIO_NET_HDR_GSO_TCPV4,
            hdr_len: hdr_len as u16,
            gso_size: run.mss as u16,
            csum_start: L4 as u16,
            csum_offset: 16,
            num_buffers: 0,
        };
        Some((&self.buf[..], hdr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::OffloadMeta;
    use crate::offload::{verify_ipv4_header_checksum, write_pseudo_header_csum};

    const MSS: usize = 1448;

    /// An Ethernet + IPv4 (DF) + TCP (ACK, 12 bytes of options) segment with a partial
    /// checksum, as a TSO-less guest with checksum offload sends it.
    fn seg(seq: u32, payload: &[u8], flags: u8, dport: u16, ack: u32) -> Vec<u8> {
        let tcp_len = 32;
        let total = (IPV4 + tcp_len + payload.len()) as u16;
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
        f.extend_from_slice(&[0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0]);
        f[ETH + 2..ETH + 4].copy_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&[10, 0, 0, 2, 10, 0, 0, 1]);
        f.extend_from_slice(&49152u16.to_be_bytes());
        f.extend_from_slice(&dport.to_be_bytes());
        f.extend_from_slice(&seq.to_be_bytes());
        f.extend_from_slice(&ack.to_be_bytes());
        f.extend_from_slice(&[0x80, flags, 0x10, 0x00, 0, 0, 0, 0]);
        f.extend_from_slice(&[1, 1, 8, 10, 0, 0, 0, 7, 0, 0, 0, 9]);
        f.extend_from_slice(payload);
        fill_ipv4_header_checksum(&mut f).unwrap();
        write_pseudo_header_csum(&mut f).unwrap();
        f
    }

    fn blank(data: &[u8]) -> Frame<'_> {
        Frame {
            data,
            meta: OffloadMeta {
                csum_blank: true,
                ..OffloadMeta::default()
            },
        }
    }

    fn single() -> VirtioNetHdr {
        VirtioNetHdr {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            csum_start: L4 as u16,
            csum_offset: 16,
            ..VirtioNetHdr::NONE
        }
    }

    #[test]
    fn a_run_of_segments_becomes_one_gso_frame_with_the_same_bytes() {
        let stream: Vec<u8> = (0..5 * MSS + 100).map(|i| (i * 7 % 251) as u8).collect();
        let segs: Vec<Vec<u8>> = stream
            .chunks(MSS)
            .enumerate()
            .map(|(i, p)| {
                let flags = if i == 5 { 0x18 } else { 0x10 };
                seg(1000 + (i * MSS) as u32, p, flags, 80, 77)
            })
            .collect();
        let mut c = Coalescer::default();
        for s in &segs {
            assert_eq!(c.offer(&blank(s), single()), Offer::Merged);
        }
        assert_eq!(c.segments(), 6);
        let (frame, hdr) = c.take().unwrap();
        assert_eq!(hdr.gso_type, VIRTIO_NET_HDR_GSO_TCPV4);
        assert_eq!(usize::from(hdr.gso_size), MSS);
        assert_eq!(usize::from(hdr.hdr_len), L4 + 32);
        assert_eq!(
            (hdr.flags, hdr.csum_start, hdr.csum_offset),
            (1, L4 as u16, 16)
        );
        assert_eq!(&frame[L4 + 32..], &stream[..], "payloads back to back");
        let total = usize::from(u16::from_be_bytes([frame[ETH + 2], frame[ETH + 3]]));
        assert_eq!(ETH + total, frame.len());
        assert!(verify_ipv4_header_checksum(frame).unwrap());
        assert_eq!(&frame[L4 + 4..L4 + 8], &1000u32.to_be_bytes(), "first seq");
        assert_eq!(frame[L4 + 13], 0x18, "the last segment's PSH is kept");
        // The checksum field holds the pseudo-header sum of the merged segment.
        let mut expect = frame.to_vec();
        write_pseudo_header_csum(&mut expect).unwrap();
        assert_eq!(frame[L4 + 16..L4 + 18], expect[L4 + 16..L4 + 18]);
        assert!(c.is_empty() && c.take().is_none());
    }

    #[test]
    fn a_run_of_one_goes_out_unchanged() {
        let s = seg(5, &[1; 100], 0x10, 80, 1);
        let mut c = Coalescer::default();
        assert_eq!(c.offer(&blank(&s), single()), Offer::Merged);
        let (frame, hdr) = c.take().unwrap();
        assert_eq!(frame, &s[..]);
        assert_eq!(hdr, single());
    }

    #[test]
    fn what_would_not_resegment_exactly_ends_the_run() {
        let p = vec![3u8; MSS];
        let first = seg(0, &p, 0x10, 80, 1);
        let refused = [
            ("sequence gap", seg(MSS as u32 + 1, &p, 0x10, 80, 1)),
            ("other flow", seg(MSS as u32, &p, 0x10, 81, 1)),
            ("other ACK number", seg(MSS as u32, &p, 0x10, 80, 2)),
            ("FIN", seg(MSS as u32, &p, 0x11, 80, 1)),
            (
                "longer than the MSS",
                seg(MSS as u32, &[3; MSS + 1], 0x10, 80, 1),
            ),
        ];
        for (why, s) in &refused {
            let mut c = Coalescer::default();
            assert_eq!(c.offer(&blank(&first), single()), Offer::Merged);
            assert_eq!(c.offer(&blank(s), single()), Offer::Refused, "{why}");
            assert_eq!(c.segments(), 1, "{why}");
        }
        // After a short segment nothing may follow (every segment but the last is MSS).
        let mut c = Coalescer::default();
        assert_eq!(c.offer(&blank(&first), single()), Offer::Merged);
        let short = seg(MSS as u32, &[3; 10], 0x10, 80, 1);
        assert_eq!(c.offer(&blank(&short), single()), Offer::Merged);
        let after = seg(MSS as u32 + 10, &p, 0x10, 80, 1);
        assert_eq!(c.offer(&blank(&after), single()), Offer::Refused);
        // Frames that are not plain csum-blank TCPv4 data segments never start a run.
        let mut c = Coalescer::default();
        let full_csum = Frame {
            data: &first,
            meta: OffloadMeta::default(),
        };
        assert_eq!(c.offer(&full_csum, single()), Offer::Refused);
        let syn = seg(0, &p, 0x12, 80, 1);
        assert_eq!(c.offer(&blank(&syn), single()), Offer::Refused);
        let empty = seg(0, &[], 0x10, 80, 1);
        assert_eq!(c.offer(&blank(&empty), single()), Offer::Refused);
        let mut fragment = first.clone();
        fragment[ETH + 6] = 0x20; // MF
        assert_eq!(c.offer(&blank(&fragment), single()), Offer::Refused);
        let mut truncated = first.clone();
        truncated.truncate(L4 + 40);
        assert_eq!(c.offer(&blank(&truncated), single()), Offer::Refused);
        assert!(c.is_empty());
    }

    #[test]
    fn runs_stop_below_the_largest_datagram() {
        let p = vec![5u8; MSS];
        let mut c = Coalescer::default();
        let mut seq = 0u32;
        let mut merged = 0;
        while c.offer(&blank(&seg(seq, &p, 0x10, 80, 1)), single()) == Offer::Merged {
            seq += MSS as u32;
            merged += 1;
            assert!(merged <= 64);
        }
        let (frame, _) = c.take().unwrap();
        assert!(frame.len() - ETH <= MAX_DATAGRAM);
        assert_eq!(merged, (MAX_DATAGRAM - IPV4 - 32) / MSS);
    }

    proptest::proptest! {
        /// Whatever a guest writes: runs of valid segments with random bytes flipped,
        /// cut short or padded never make the coalescer panic, and what it hands out
        /// stays within one datagram and starts with the first merged frame's headers.
        #[test]
        fn hostile_segments_never_panic(
            edits in proptest::collection::vec(
                (0usize..8, 0usize..1600, proptest::num::u8::ANY, 0usize..1600, proptest::bool::ANY),
                1..24,
            ),
            blank_meta in proptest::bool::ANY,
        ) {
            let p = vec![9u8; MSS];
            let mut c = Coalescer::default();
            for (i, &(n, at, byte, cut, pad)) in edits.iter().enumerate() {
                let mut f = seg((i * MSS) as u32, &p, 0x10, 80, 1);
                if n > 0 {
                    let at = at % f.len();
                    f[at] = byte;
                }
                if n > 5 {
                    f.truncate(cut.min(f.len()));
                }
                if pad {
                    f.extend_from_slice(&[0u8; 7]);
                }
                let frame = Frame {
                    data: &f,
                    meta: OffloadMeta { csum_blank: blank_meta, ..OffloadMeta::default() },
                };
                if c.offer(&frame, single()) == Offer::Refused && !c.is_empty() {
                    let (out, _) = c.take().unwrap();
                    proptest::prop_assert!(out.len() <= ETH + MAX_DATAGRAM);
                    proptest::prop_assert!(out.len() >= L4 + 20);
                    let _ = c.offer(&frame, single());
                }
            }
            if let Some((out, hdr)) = c.take() {
                proptest::prop_assert!(out.len() <= ETH + MAX_DATAGRAM);
                if hdr.gso_type == VIRTIO_NET_HDR_GSO_TCPV4 {
                    proptest::prop_assert!(hdr.gso_size > 0);
                    proptest::prop_assert!(usize::from(hdr.hdr_len) < out.len());
                }
            }
        }
    }
}
