//! Internet checksums (RFC 1071) for the checksum-offload edges of the driver:
//! completing a blank TCP/UDP checksum in software when the backend cannot, writing
//! the pseudo-header sum a blank checksum must carry (Linux's `CHECKSUM_PARTIAL`
//! convention, which netback relies on), and filling in a blank checksum on receive
//! for a stack that verifies checksums (smoltcp).
//!
//! Only what those jobs need is parsed: Ethernet (one optional 802.1Q tag), IPv4
//! without fragmentation, IPv6 whose next header is TCP or UDP. Anything else is
//! reported as unparsable and left alone.

/// IP protocol number of TCP.
const IPPROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
const IPPROTO_UDP: u8 = 17;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86DD;
const ETHERTYPE_VLAN: u16 = 0x8100;

/// The IP version of a frame's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpVersion {
    /// IPv4
    V4,
    /// IPv6
    V6,
}

/// Where a frame's TCP/UDP checksum lives and what covers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L4Info {
    /// IP version.
    pub ip: IpVersion,
    /// `IPPROTO_TCP` or `IPPROTO_UDP`.
    pub proto: u8,
    /// Offset of the L4 header in the frame.
    pub l4_off: usize,
    /// L4 length (header + payload) from the IP header.
    pub l4_len: usize,
    /// Offset of the checksum field in the frame.
    pub csum_off: usize,
    /// The unfolded pseudo-header sum.
    pub pseudo: u32,
}

#[inline(always)]
fn be16(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(off)?, *b.get(off + 1)?]))
}

/// The IP version of an Ethernet frame, from its (possibly VLAN-tagged) EtherType.
pub fn ip_version(frame: &[u8]) -> Option<IpVersion> {
    let mut et = be16(frame, 12)?;
    if et == ETHERTYPE_VLAN {
        et = be16(frame, 16)?;
    }
    match et {
        ETHERTYPE_IPV4 => Some(IpVersion::V4),
        ETHERTYPE_IPV6 => Some(IpVersion::V6),
        _ => None,
    }
}

/// Locate the TCP/UDP checksum of an Ethernet frame. `head` must hold at least the
/// Ethernet, IP and L4 headers (the first page of a frame always does); `frame_len`
/// bounds the L4 length the IP header claims.
pub fn parse_l4(head: &[u8], frame_len: usize) -> Option<L4Info> {
    let mut l3 = 14;
    let mut et = be16(head, 12)?;
    if et == ETHERTYPE_VLAN {
        et = be16(head, 16)?;
        l3 = 18;
    }
    let (ip, proto, l4_off, l4_len, pseudo) = match et {
        ETHERTYPE_IPV4 => {
            let vihl = *head.get(l3)?;
            if vihl >> 4 != 4 {
                return None;
            }
            let ihl = usize::from(vihl & 0xf) * 4;
            if ihl < 20 {
                return None;
            }
            let total = usize::from(be16(head, l3 + 2)?);
            let frag = be16(head, l3 + 6)?;
            // More-fragments or a fragment offset: the L4 header is not all here.
            if frag & 0x3fff != 0 {
                return None;
            }
            let proto = *head.get(l3 + 9)?;
            let l4_len = total.checked_sub(ihl)?;
            let src = head.get(l3 + 12..l3 + 20)?;
            let mut pseudo = sum_bytes(src, 0);
            pseudo += u32::from(proto) + l4_len as u32;
            (IpVersion::V4, proto, l3 + ihl, l4_len, pseudo)
        }
        ETHERTYPE_IPV6 => {
            if *head.get(l3)? >> 4 != 6 {
                return None;
            }
            let l4_len = usize::from(be16(head, l3 + 4)?);
            let proto = *head.get(l3 + 6)?;
            let addrs = head.get(l3 + 8..l3 + 40)?;
            let mut pseudo = sum_bytes(addrs, 0);
            pseudo += u32::from(proto) + l4_len as u32;
            (IpVersion::V6, proto, l3 + 40, l4_len, pseudo)
        }
        _ => return None,
    };
    let csum_field = match proto {
        IPPROTO_TCP => 16,
        IPPROTO_UDP => 6,
        _ => return None,
    };
    let min_hdr = if proto == IPPROTO_TCP { 20 } else { 8 };
    if l4_len < min_hdr || l4_off + l4_len > frame_len || l4_off + min_hdr > head.len() {
        return None;
    }
    Some(L4Info {
        ip,
        proto,
        l4_off,
        l4_len,
        csum_off: l4_off + csum_field,
        pseudo,
    })
}

/// Add `data` as big-endian 16-bit words to `acc` (an odd final byte is padded with
/// zero, as RFC 1071 says).
///
/// Fast path (RFC 1071 §2: the one's-complement sum does not depend on byte order,
/// and 2^16 ≡ 1 modulo 2^16 − 1): the bulk is summed as native-endian 32-bit words
/// into a 64-bit accumulator, which the compiler vectorises, then folded to 16 bits
/// and byte-swapped into network order. About ten times the speed of a 16-bit loop;
/// this runs over every byte of every received frame with a blank checksum.
#[inline]
pub fn sum_bytes(data: &[u8], acc: u32) -> u32 {
    let mut chunks = data.chunks_exact(4);
    let mut wide: u64 = 0;
    // 2^32 words of at most 2^32 − 1 each cannot overflow a u64; frames are far smaller.
    for c in &mut chunks {
        wide += u64::from(u32::from_ne_bytes([c[0], c[1], c[2], c[3]]));
    }
    let native = fold64(wide);
    let mut be = u32::from(if cfg!(target_endian = "little") {
        native.swap_bytes()
    } else {
        native
    });
    let rest = chunks.remainder();
    let mut pairs = rest.chunks_exact(2);
    for c in &mut pairs {
        be += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = pairs.remainder() {
        be += u32::from(*last) << 8;
    }
    // `acc` may be near u32::MAX (callers chain sums): fold both before adding.
    u32::from(fold(acc)) + u32::from(fold(be))
}

/// Fold a 64-bit one's-complement accumulator to 16 bits (end-around carries).
#[inline]
fn fold64(mut s: u64) -> u16 {
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// Fold a sum to 16 bits (not complemented).
#[inline]
pub fn fold(mut acc: u32) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// Sums bytes that arrive in pieces (the pages of a multi-slot frame), keeping track
/// of an odd byte left over at the end of a piece.
#[derive(Debug, Default)]
pub struct Summer {
    acc: u32,
    odd: Option<u8>,
}

impl Summer {
    /// Start from `acc` (e.g. a pseudo-header sum).
    pub fn new(acc: u32) -> Self {
        Summer { acc, odd: None }
    }

    /// Add the next piece.
    pub fn add(&mut self, mut data: &[u8]) {
        if let Some(hi) = self.odd.take() {
            match data.split_first() {
                Some((&lo, rest)) => {
                    self.acc = sum_bytes(&[hi, lo], self.acc);
                    data = rest;
                }
                None => {
                    self.odd = Some(hi);
                    return;
                }
            }
        }
        let even = data.len() & !1;
        self.acc = sum_bytes(&data[..even], self.acc);
        if even < data.len() {
            self.odd = Some(data[even]);
        }
    }

    /// The folded sum.
    pub fn finish(self) -> u16 {
        let acc = match self.odd {
            Some(hi) => sum_bytes(&[hi], self.acc),
            None => self.acc,
        };
        fold(acc)
    }
}

/// The checksum field value for an L4 segment summing (with the field zeroed) to
/// `folded`: complemented, and UDP's 0 sent as 0xffff (0 means "no checksum").
pub fn finish_l4(info: &L4Info, folded: u16) -> u16 {
    let c = !folded;
    if c == 0 && info.proto == IPPROTO_UDP {
        0xffff
    } else {
        c
    }
}

/// Compute the full TCP/UDP checksum of a frame given as consecutive pieces (the first
/// holding every header). Returns where to write it and its value, the current field
/// content being ignored.
pub fn compute_l4_pieces<'a>(
    pieces: impl IntoIterator<Item = &'a [u8]> + Clone,
    frame_len: usize,
) -> Option<(usize, u16)> {
    let head = pieces.clone().into_iter().next()?;
    let info = parse_l4(head, frame_len)?;
    let mut s = Summer::new(info.pseudo);
    let (start, end) = (info.l4_off, info.l4_off + info.l4_len);
    let mut pos = 0usize;
    for p in pieces {
        let (lo, hi) = (pos, pos + p.len());
        pos = hi;
        let a = start.max(lo);
        let b = end.min(hi);
        if a >= b {
            continue;
        }
        let piece = &p[a - lo..b - lo];
        // Skip the checksum field itself (count it as zero); it is 2-aligned from the
        // L4 start, so skipping keeps the word alignment of everything after it.
        let (f0, f1) = (info.csum_off, info.csum_off + 2);
        if f1 <= a || f0 >= b {
            s.add(piece);
        } else {
            let cut0 = f0.max(a) - a;
            let cut1 = f1.min(b) - a;
            s.add(&piece[..cut0]);
            // Zero bytes keep the running alignment right.
            s.add(&[0u8, 0u8][..cut1 - cut0]);
            s.add(&piece[cut1..]);
        }
    }
    Some((info.csum_off, finish_l4(&info, s.finish())))
}

/// Fill in the TCP/UDP checksum of a contiguous frame from scratch. False if the
/// frame is not TCP/UDP over IPv4/IPv6 (left unchanged).
pub fn fill_checksum(frame: &mut [u8]) -> bool {
    let len = frame.len();
    match compute_l4_pieces([&frame[..]], len) {
        Some((off, v)) => {
            frame[off..off + 2].copy_from_slice(&v.to_be_bytes());
            true
        }
        None => false,
    }
}

/// Write the folded pseudo-header sum into the TCP/UDP checksum field (the state of a
/// `CHECKSUM_PARTIAL` frame, which `NETTXF_csum_blank` announces). Returns the frame's
/// info, `None` if it is not TCP/UDP over IPv4/IPv6 (left unchanged). `head` holds the
/// frame's headers (its first page), `frame_len` is the whole frame's length.
pub fn write_partial(head: &mut [u8], frame_len: usize) -> Option<L4Info> {
    let info = parse_l4(head, frame_len)?;
    let v = fold(info.pseudo);
    head[info.csum_off..info.csum_off + 2].copy_from_slice(&v.to_be_bytes());
    Some(info)
}

/// True if the frame's TCP/UDP checksum verifies (UDP's 0 counts as valid).
pub fn verify(frame: &[u8]) -> Option<bool> {
    verify_pieces([frame], frame.len())
}

/// [`verify`] for a frame given as consecutive pieces, the first holding every header.
/// `None`: not TCP/UDP over IPv4/IPv6, or the headers are not all in the first piece.
pub fn verify_pieces<'a>(
    pieces: impl IntoIterator<Item = &'a [u8]> + Clone,
    frame_len: usize,
) -> Option<bool> {
    let head = pieces.clone().into_iter().next()?;
    let info = parse_l4(head, frame_len)?;
    let stored = be16(head, info.csum_off)?;
    if info.proto == IPPROTO_UDP && stored == 0 && info.ip == IpVersion::V4 {
        return Some(true);
    }
    let (_, v) = compute_l4_pieces(pieces, frame_len)?;
    // 0x0000 and 0xffff are the two one's-complement zeros: a TCP sender whose sum
    // comes to "negative zero" may send either (Linux sends 0xffff where `!fold`
    // gives 0). UDP has no such choice: 0 means "no checksum", so 0xffff is sent.
    let zero = |x: u16| if x == 0xffff { 0 } else { x };
    Some(if info.proto == IPPROTO_TCP {
        zero(v) == zero(stored)
    } else {
        v == stored
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    /// RFC 1071 the slow, obvious way: big-endian 16-bit words, end-around carry.
    fn naive_sum(data: &[u8], acc: u32) -> u16 {
        let mut s = u64::from(acc);
        for c in data.chunks(2) {
            let hi = u64::from(c[0]) << 8;
            s += hi | c.get(1).map_or(0, |&lo| u64::from(lo));
        }
        while s >> 16 != 0 {
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    }

    #[test]
    fn fast_sum_equals_the_rfc1071_definition() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let data: Vec<u8> = (0..70_000).map(|_| next() as u8).collect();
        let ones = [0xffu8; 4096];
        for len in (0..300).chain([1499, 1500, 4095, 4096, 9001, 65_535, 70_000]) {
            for start in [0usize, 1, 3] {
                let start = start.min(data.len() - len.min(data.len()));
                let d = &data[start..start + len.min(data.len() - start)];
                for acc in [0u32, 1, 0xffff, 0x1_0000, u32::MAX, next() as u32] {
                    assert_eq!(
                        fold(sum_bytes(d, acc)),
                        naive_sum(d, acc),
                        "len {len} start {start} acc {acc:#x}"
                    );
                }
            }
        }
        // All-ones data: the sum is 0xffff (negative zero), never 0.
        for len in [2usize, 4, 6, 8, 64, 4096] {
            assert_eq!(fold(sum_bytes(&ones[..len], 0)), 0xffff);
            assert_eq!(naive_sum(&ones[..len], 0), 0xffff);
        }
        assert_eq!(fold(sum_bytes(&[], 0)), 0);
    }

    /// An Ethernet + IPv4 + TCP frame with `payload`, checksum field `csum`.
    pub(crate) fn tcp4(payload: &[u8], csum: u16) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00]);
        let total = (20 + 20 + payload.len()) as u16;
        f.extend_from_slice(&[
            0x45,
            0,
            (total >> 8) as u8,
            total as u8,
            0,
            1,
            0x40,
            0,
            64,
            6,
            0,
            0,
        ]);
        f.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
        f.extend_from_slice(&[
            0x30, 0x39, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x10, 0xff, 0xff,
        ]);
        f.extend_from_slice(&csum.to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(payload);
        f
    }

    /// A straightforward reference: sum pseudo header + segment with field zeroed.
    fn reference(frame: &[u8]) -> u16 {
        let info = parse_l4(frame, frame.len()).unwrap();
        let mut seg = frame[info.l4_off..info.l4_off + info.l4_len].to_vec();
        let f = info.csum_off - info.l4_off;
        seg[f] = 0;
        seg[f + 1] = 0;
        let mut acc = info.pseudo as u64;
        for c in seg.chunks(2) {
            let w = if c.len() == 2 {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from(c[0]) << 8
            };
            acc += u64::from(w);
        }
        while acc >> 16 != 0 {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        !(acc as u16)
    }

    #[test]
    fn fill_matches_reference_and_verifies() {
        for n in [0usize, 1, 2, 3, 100, 1459, 4000, 9001] {
            let payload: Vec<u8> = (0..n).map(|i| (i * 7 + 3) as u8).collect();
            let mut f = tcp4(&payload, 0xdead);
            assert_eq!(verify(&f), Some(false));
            assert!(fill_checksum(&mut f));
            let stored = u16::from_be_bytes([f[50], f[51]]);
            assert_eq!(stored, reference(&f), "len {n}");
            assert_eq!(verify(&f), Some(true));
        }
    }

    #[test]
    fn pieces_at_odd_boundaries_give_the_same_sum() {
        let payload: Vec<u8> = (0..6000).map(|i| (i * 13 + 1) as u8).collect();
        let f = tcp4(&payload, 0);
        let whole = compute_l4_pieces([&f[..]], f.len()).unwrap();
        for cut1 in [60usize, 61, 4095, 4096] {
            for cut2 in [cut1 + 1, cut1 + 2, cut1 + 999] {
                let p = [&f[..cut1], &f[cut1..cut2], &f[cut2..]];
                assert_eq!(
                    compute_l4_pieces(p.iter().copied(), f.len()),
                    Some(whole),
                    "{cut1} {cut2}"
                );
            }
        }
        // The first piece must hold every header: cut right after the TCP header
        // works, a cut inside the headers is refused rather than misread.
        let p = [&f[..54], &f[54..]];
        assert_eq!(compute_l4_pieces(p.iter().copied(), f.len()), Some(whole));
        let p = [&f[..51], &f[51..]];
        assert_eq!(compute_l4_pieces(p.iter().copied(), f.len()), None);
    }

    #[test]
    fn partial_then_complete_equals_full() {
        // Completing a partial checksum (sum over the segment with the pseudo sum in
        // the field) gives the same value as computing from scratch.
        let mut f = tcp4(b"hello, xen", 0);
        let len = f.len();
        let info = write_partial(&mut f, len).unwrap();
        let seg = &f[info.l4_off..info.l4_off + info.l4_len];
        let completed = !fold(sum_bytes(seg, 0));
        assert!(fill_checksum(&mut f));
        assert_eq!(u16::from_be_bytes([f[50], f[51]]), completed);
    }

    /// A segment whose checksum computes to 0x0000 verifies when the sender wrote the
    /// other one's-complement zero, 0xffff (seen from Linux over a TAP).
    #[test]
    fn both_zeros_verify_for_tcp() {
        let mut f = tcp4(&[0x11; 64], 0);
        // Tune one payload word until the checksum comes out as 0x0000.
        let at = f.len() - 2;
        let mut found = false;
        for w in 0..=u16::MAX {
            f[at..].copy_from_slice(&w.to_be_bytes());
            if let Some((off, 0)) = compute_l4_pieces([&f[..]], f.len()) {
                f[off..off + 2].copy_from_slice(&0u16.to_be_bytes());
                assert_eq!(verify(&f), Some(true));
                f[off..off + 2].copy_from_slice(&0xffffu16.to_be_bytes());
                assert_eq!(verify(&f), Some(true), "0xffff is the same zero");
                f[off..off + 2].copy_from_slice(&0xfffeu16.to_be_bytes());
                assert_eq!(verify(&f), Some(false));
                found = true;
                break;
            }
        }
        assert!(found, "some payload word gives a zero checksum");
    }

    #[test]
    fn unparsable_frames_are_left_alone() {
        let mut arp = alloc::vec![0u8; 60];
        arp[12] = 0x08;
        arp[13] = 0x06;
        assert!(!fill_checksum(&mut arp));
        assert!(arp[14..].iter().all(|&b| b == 0));
        let mut f = tcp4(b"x", 0);
        f[20] = 0x20; // more-fragments
        assert!(parse_l4(&f, f.len()).is_none());
        let mut f = tcp4(b"x", 0);
        f[16] = 0xff; // IPv4 total length beyond the frame
        assert!(parse_l4(&f, f.len()).is_none());
        assert!(parse_l4(&f[..20], 20).is_none());
    }
}
