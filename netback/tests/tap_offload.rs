//! Property and hostile-input tests of `netback::offload` (no root needed).

use netback::offload::*;
use netback::virtio_net_hdr::*;
use proptest::prelude::*;

/// Everything a test frame can vary.
#[derive(Debug, Clone)]
struct Spec {
    v6: bool,
    vlan: bool,
    /// IPv4 option words (NOPs).
    ip_opt_words: usize,
    /// IPv6: add a hop-by-hop and a destination-options header.
    v6_ext: bool,
    udp: bool,
    /// TCP option words (NOPs).
    tcp_opt_words: usize,
    tcp_flags: u8,
    seq: u32,
    ip_id: u16,
    payload: Vec<u8>,
    /// Ethernet padding bytes after the IP datagram.
    pad: usize,
}

fn build(s: &Spec) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02];
    if s.vlan {
        f.extend_from_slice(&ETH_P_8021Q.to_be_bytes());
        f.extend_from_slice(&0x0064u16.to_be_bytes());
    }
    let proto = if s.udp { IPPROTO_UDP } else { IPPROTO_TCP };
    let l4_hdr = if s.udp { 8 } else { 20 + 4 * s.tcp_opt_words };
    let l4_len = l4_hdr + s.payload.len();
    if s.v6 {
        f.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
        let ext = if s.v6_ext { 16 } else { 0 };
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f.extend_from_slice(&((ext + l4_len) as u16).to_be_bytes());
        f.push(if s.v6_ext { 0 } else { proto });
        f.push(64);
        f.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        f.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        if s.v6_ext {
            // Hop-by-hop (next: dest opts), 8 bytes with a PadN option.
            f.extend_from_slice(&[60, 0, 1, 4, 0, 0, 0, 0]);
            // Destination options (next: L4), 8 bytes.
            f.extend_from_slice(&[proto, 0, 1, 4, 0, 0, 0, 0]);
        }
    } else {
        f.extend_from_slice(&ETH_P_IP.to_be_bytes());
        let ihl = 5 + s.ip_opt_words;
        let total = (ihl * 4 + l4_len) as u16;
        f.push(0x40 | ihl as u8);
        f.push(0);
        f.extend_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&s.ip_id.to_be_bytes());
        f.extend_from_slice(&0x4000u16.to_be_bytes());
        f.extend_from_slice(&[64, proto, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
        f.extend(std::iter::repeat_n(1u8, 4 * s.ip_opt_words));
    }
    if s.udp {
        f.extend_from_slice(&[0x30, 0x39, 0x00, 0x35]);
        f.extend_from_slice(&(l4_len as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
    } else {
        f.extend_from_slice(&[0x30, 0x39, 0x00, 0x50]);
        f.extend_from_slice(&s.seq.to_be_bytes());
        f.extend_from_slice(&7u32.to_be_bytes());
        f.push(((5 + s.tcp_opt_words) as u8) << 4);
        f.push(s.tcp_flags);
        f.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
        f.extend(std::iter::repeat_n(1u8, 4 * s.tcp_opt_words));
    }
    f.extend_from_slice(&s.payload);
    f.extend(std::iter::repeat_n(0xee, s.pad));
    if !s.v6 {
        fill_ipv4_header_checksum(&mut f).unwrap();
    }
    f
}

/// Independent, naive 16-bit-at-a-time checksum used to cross-check the module.
fn naive_l4_ok(frame: &[u8]) -> bool {
    let info = parse_frame(frame).unwrap();
    let mut words: Vec<u16> = Vec::new();
    let push_bytes = |w: &mut Vec<u16>, b: &[u8]| {
        for c in b.chunks(2) {
            w.push(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
    };
    let l3 = info.l3_offset;
    let l4 = &frame[info.l4_offset..info.ip_end];
    match info.l3 {
        L3::Ipv4 => push_bytes(&mut words, &frame[l3 + 12..l3 + 20]),
        L3::Ipv6 => push_bytes(&mut words, &frame[l3 + 8..l3 + 40]),
    }
    words.push(u16::from(info.l4_proto));
    words.push((l4.len() >> 16) as u16);
    words.push(l4.len() as u16);
    push_bytes(&mut words, l4);
    let mut sum: u32 = 0;
    for w in words {
        sum += u32::from(w);
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum == 0xffff
}

fn spec_strategy() -> impl Strategy<Value = Spec> {
    (
        any::<bool>(),
        any::<bool>(),
        0usize..=10,
        any::<bool>(),
        0usize..=10,
        any::<u8>(),
        any::<u32>(),
        any::<u16>(),
        prop::collection::vec(any::<u8>(), 0..4000),
        0usize..8,
        any::<bool>(),
    )
        .prop_map(
            |(
                v6,
                vlan,
                ip_opt_words,
                v6_ext,
                tcp_opt_words,
                tcp_flags,
                seq,
                ip_id,
                payload,
                pad,
                udp,
            )| Spec {
                v6,
                vlan,
                ip_opt_words,
                v6_ext,
                udp,
                tcp_opt_words,
                tcp_flags,
                seq,
                ip_id,
                payload,
                pad,
            },
        )
}

proptest! {
    #[test]
    fn parse_finds_the_offsets_we_built(s in spec_strategy()) {
        let f = build(&s);
        let info = parse_frame(&f).unwrap();
        let l3 = if s.vlan { 18 } else { 14 };
        prop_assert_eq!(info.l3_offset, l3);
        prop_assert_eq!(info.vlan_tags, usize::from(s.vlan));
        let l3_len = if s.v6 { 40 + if s.v6_ext { 16 } else { 0 } } else { 20 + 4 * s.ip_opt_words };
        prop_assert_eq!(info.l4_offset, l3 + l3_len);
        prop_assert_eq!(info.ip_end, f.len() - s.pad);
        prop_assert_eq!(info.l4_proto, if s.udp { IPPROTO_UDP } else { IPPROTO_TCP });
        prop_assert!(!info.is_fragment);
        let (start, off) = csum_offsets(&f).unwrap();
        prop_assert_eq!(usize::from(start), info.l4_offset);
        prop_assert_eq!(off, if s.udp { 6 } else { 16 });
    }

    #[test]
    fn filled_checksums_verify_and_catch_corruption(s in spec_strategy(), flip in any::<prop::sample::Index>(), mask in 1u8..=255) {
        let mut f = build(&s);
        fill_l4_checksum(&mut f).unwrap();
        prop_assert!(verify_l4_checksum(&f).unwrap());
        prop_assert!(naive_l4_ok(&f));
        // Corrupt one byte of the L4 segment (header or payload): must be detected.
        let info = parse_frame(&f).unwrap();
        let at = info.l4_offset + flip.index(info.l4_len());
        f[at] ^= mask;
        // A flip inside the UDP checksum field can turn it into 0 ("no checksum") on IPv4.
        let udp_v4_zero = s.udp && !s.v6 && f[info.l4_offset + 6] == 0 && f[info.l4_offset + 7] == 0;
        // A flip in a header length field (TCP data offset, UDP length) can make the
        // segment unparsable: refusing it (Err) detects the corruption as well as a bad sum.
        if !udp_v4_zero {
            prop_assert!(!matches!(verify_l4_checksum(&f), Ok(true)));
        }
        // Ethernet padding is not part of the checksum.
        let mut g = build(&s);
        fill_l4_checksum(&mut g).unwrap();
        let n = g.len();
        if s.pad > 0 {
            g[n - 1] ^= 0xff;
            prop_assert!(verify_l4_checksum(&g).unwrap());
        }
    }

    #[test]
    fn partial_then_complete_equals_full(s in spec_strategy()) {
        let mut full = build(&s);
        fill_l4_checksum(&mut full).unwrap();
        let mut partial = build(&s);
        write_pseudo_header_csum(&mut partial).unwrap();
        let (start, off) = csum_offsets(&partial).unwrap();
        complete_partial_checksum(&mut partial, start, off).unwrap();
        prop_assert!(verify_l4_checksum(&partial).unwrap());
        // Identical except that 0x0000 and 0xffff are the same one's-complement value.
        let at = usize::from(start) + usize::from(off);
        let a = u16::from_be_bytes([full[at], full[at + 1]]);
        let b = u16::from_be_bytes([partial[at], partial[at + 1]]);
        prop_assert!(a == b || (a | b == 0xffff && a & b == 0), "{a:#x} vs {b:#x}");
    }

    #[test]
    fn segment_then_reassemble(mut s in spec_strategy(), mss in 1u16..=1600) {
        s.udp = false;
        let f = build(&s);
        let mut seg = TcpSegmenter::new(&f, mss).unwrap();
        let hdr_len = seg.header_len();
        let expect = s.payload.len().div_ceil(usize::from(mss)).max(1);
        prop_assert_eq!(seg.segment_count(), expect);
        let mut buf = vec![0u8; seg.max_segment_len()];
        let mut payload = Vec::new();
        let mut i = 0usize;
        let orig_flags = s.tcp_flags;
        while let Some(r) = seg.next_into(&mut buf) {
            let len = r.unwrap();
            let out = &buf[..len];
            let info = parse_frame(out).unwrap();
            prop_assert_eq!(info.ip_end, len);
            prop_assert!(verify_l4_checksum(out).unwrap(), "segment {} checksum", i);
            prop_assert!(naive_l4_ok(out));
            if !s.v6 {
                prop_assert!(verify_ipv4_header_checksum(out).unwrap());
                let id = u16::from_be_bytes([out[info.l3_offset + 4], out[info.l3_offset + 5]]);
                prop_assert_eq!(id, s.ip_id.wrapping_add(i as u16));
            }
            let l4 = info.l4_offset;
            let seq = u32::from_be_bytes([out[l4 + 4], out[l4 + 5], out[l4 + 6], out[l4 + 7]]);
            prop_assert_eq!(seq, s.seq.wrapping_add(payload.len() as u32));
            let flags = out[l4 + 13];
            let last = i + 1 == expect;
            let first = i == 0;
            prop_assert_eq!(flags & 0x01 != 0, last && orig_flags & 0x01 != 0, "FIN");
            prop_assert_eq!(flags & 0x08 != 0, last && orig_flags & 0x08 != 0, "PSH");
            prop_assert_eq!(flags & 0x80 != 0, first && orig_flags & 0x80 != 0, "CWR");
            prop_assert_eq!(flags & 0x76, orig_flags & 0x76, "other flags kept");
            let chunk = &out[hdr_len..];
            if !last {
                prop_assert_eq!(chunk.len(), usize::from(mss));
            }
            prop_assert!(chunk.len() <= usize::from(mss));
            payload.extend_from_slice(chunk);
            i += 1;
        }
        prop_assert_eq!(i, expect);
        prop_assert_eq!(payload, s.payload);
        prop_assert_eq!(seg.remaining(), 0);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200), mss in 0u16..100, flags in 0u16..4, gt in 0u8..4) {
        let mut f = bytes.clone();
        let _ = parse_frame(&f);
        let _ = csum_offsets(&f);
        let _ = verify_l4_checksum(&f);
        let _ = verify_ipv4_header_checksum(&f);
        let _ = fill_l4_checksum(&mut f);
        let _ = write_pseudo_header_csum(&mut f);
        let _ = complete_partial_checksum(&mut f, mss, mss / 3);
        let _ = fill_ipv4_header_checksum(&mut f);
        let gso = (gt != 0).then_some(NetifGso { gso_type: gt, gso_size: mss });
        let _ = vnet_hdr_from_netif_tx(&mut f, flags, gso);
        if let Ok(mut seg) = TcpSegmenter::new(&bytes, mss) {
            let mut out = vec![0u8; seg.max_segment_len()];
            while let Some(r) = seg.next_into(&mut out) { r.unwrap(); }
        }
    }

    #[test]
    fn mangled_valid_frames_never_panic(s in spec_strategy(), cut in any::<prop::sample::Index>(), at in any::<prop::sample::Index>(), v in any::<u8>(), mss in 0u16..3000) {
        let mut f = build(&s);
        let n = f.len();
        // Mutate one header byte (lengths, IHL, data offset, ext header lengths, ...).
        let hdr_end = n.min(120);
        f[at.index(hdr_end)] = v;
        f.truncate(cut.index(n + 1));
        let _ = parse_frame(&f);
        let _ = csum_offsets(&f);
        let _ = verify_l4_checksum(&f);
        let mut g = f.clone();
        let _ = fill_l4_checksum(&mut g);
        let _ = vnet_hdr_from_netif_tx(&mut g, NETTXF_CSUM_BLANK, Some(NetifGso { gso_type: XEN_NETIF_GSO_TYPE_TCPV4, gso_size: mss }));
        if let Ok(mut seg) = TcpSegmenter::new(&f, mss) {
            let mut out = vec![0u8; seg.max_segment_len()];
            let mut count = 0;
            while let Some(r) = seg.next_into(&mut out) {
                let len = r.unwrap();
                prop_assert!(verify_l4_checksum(&out[..len]).unwrap());
                count += 1;
            }
            prop_assert_eq!(count, seg.segment_count());
        }
    }
}

fn tcp4(payload: usize) -> Vec<u8> {
    build(&Spec {
        v6: false,
        vlan: false,
        ip_opt_words: 0,
        v6_ext: false,
        udp: false,
        tcp_opt_words: 0,
        tcp_flags: 0x18,
        seq: 1000,
        ip_id: 1,
        payload: vec![7; payload],
        pad: 0,
    })
}

#[test]
fn truncation_at_every_length_is_a_typed_error() {
    let f = tcp4(100);
    for n in 0..f.len() {
        let cut = &f[..n];
        match parse_frame(cut) {
            Err(OffloadError::Truncated { have, .. }) => assert_eq!(have, n),
            Err(e) => panic!("len {n}: unexpected {e}"),
            Ok(_) => panic!("len {n}: truncated IPv4 datagram accepted"),
        }
        assert!(TcpSegmenter::new(cut, 10).is_err());
        assert!(fill_l4_checksum(&mut cut.to_vec()).is_err());
    }
}

#[test]
fn bogus_lengths_are_rejected() {
    // IPv4 total length larger than the frame.
    let mut f = tcp4(10);
    f[16..18].copy_from_slice(&5000u16.to_be_bytes());
    assert!(matches!(
        parse_frame(&f),
        Err(OffloadError::Truncated { .. })
    ));
    // Total length smaller than the header.
    f[16..18].copy_from_slice(&10u16.to_be_bytes());
    assert!(matches!(parse_frame(&f), Err(OffloadError::Malformed(_))));
    // IHL < 5.
    let mut f = tcp4(10);
    f[14] = 0x44;
    assert!(matches!(parse_frame(&f), Err(OffloadError::Malformed(_))));
    // TCP data offset < 5, and beyond the datagram.
    let mut f = tcp4(10);
    f[14 + 20 + 12] = 0x40;
    assert!(matches!(
        TcpSegmenter::new(&f, 100),
        Err(OffloadError::Malformed(_))
    ));
    f[14 + 20 + 12] = 0xf0;
    assert!(matches!(
        TcpSegmenter::new(&f, 100),
        Err(OffloadError::Truncated { .. })
    ));
    // Fragments are not segmentable.
    let mut f = tcp4(10);
    f[20] |= 0x20; // MF
    assert_eq!(
        TcpSegmenter::new(&f, 100).err(),
        Some(OffloadError::Fragment)
    );
    // Not IP.
    let mut f = tcp4(10);
    f[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    assert_eq!(parse_frame(&f).err(), Some(OffloadError::NotIp(0x0806)));
    // MSS 0.
    assert_eq!(
        TcpSegmenter::new(&tcp4(10), 0).err(),
        Some(OffloadError::ZeroMss)
    );
    // Output buffer too small: error, and the segment is not consumed.
    let f = tcp4(100);
    let mut seg = TcpSegmenter::new(&f, 60).unwrap();
    let mut small = [0u8; 50];
    assert!(matches!(
        seg.next_into(&mut small),
        Some(Err(OffloadError::BufferTooSmall {
            need: 114,
            have: 50
        }))
    ));
    assert_eq!(seg.remaining(), 2);
    // Checksum position outside the frame.
    let mut f = tcp4(0);
    assert!(matches!(
        complete_partial_checksum(&mut f, 50, 10),
        Err(OffloadError::CsumOutOfRange { .. })
    ));
}

#[test]
fn ipv6_fragment_and_long_ext_chains() {
    let mut s = Spec {
        v6: true,
        vlan: true,
        ip_opt_words: 0,
        v6_ext: true,
        udp: false,
        tcp_opt_words: 0,
        tcp_flags: 0x10,
        seq: 1,
        ip_id: 0,
        payload: vec![1; 30],
        pad: 0,
    };
    let f = build(&s);
    let info = parse_frame(&f).unwrap();
    assert_eq!((info.vlan_tags, info.l4_offset), (1, 18 + 40 + 16));
    // Turn the destination-options header into a fragment header with offset 8.
    let mut g = f.clone();
    g[18 + 6] = 0; // hop-by-hop first
    g[18 + 40] = 44; // hop-by-hop's next = fragment
    g[18 + 48 + 2..18 + 48 + 4].copy_from_slice(&8u16.to_be_bytes());
    assert!(parse_frame(&g).unwrap().is_fragment);
    assert_eq!(fill_l4_checksum(&mut g).err(), Some(OffloadError::Fragment));
    // An extension header claiming more bytes than the datagram has.
    let mut g = f.clone();
    g[18 + 41] = 200;
    assert!(matches!(
        parse_frame(&g),
        Err(OffloadError::Truncated { .. })
    ));
    // A loop of 9 hop-by-hop-like headers exceeds the walk bound.
    s.payload = vec![0; 80];
    let mut g = build(&s);
    let base = 18 + 40;
    g[18 + 6] = 60;
    for k in 0..10 {
        g[base + 8 * k] = 60;
        g[base + 8 * k + 1] = 0;
    }
    assert!(matches!(parse_frame(&g), Err(OffloadError::Malformed(_))));
}

#[test]
fn netif_tx_csum_blank_becomes_needs_csum_with_pseudo_header() {
    for v6 in [false, true] {
        let mut f = build(&Spec {
            v6,
            vlan: false,
            ip_opt_words: 1,
            v6_ext: false,
            udp: true,
            tcp_opt_words: 0,
            tcp_flags: 0,
            seq: 0,
            ip_id: 0,
            payload: vec![9; 333],
            pad: 0,
        });
        // The guest left the field zero; netback must still produce a correct result.
        let h = vnet_hdr_from_netif_tx(&mut f, NETTXF_CSUM_BLANK, None).unwrap();
        assert_eq!(h.flags, VIRTIO_NET_HDR_F_NEEDS_CSUM);
        assert_eq!(h.gso_type, VIRTIO_NET_HDR_GSO_NONE);
        let l4 = if v6 { 14 + 40 } else { 14 + 24 };
        assert_eq!((usize::from(h.csum_start), h.csum_offset), (l4, 6));
        complete_partial_checksum(&mut f, h.csum_start, h.csum_offset).unwrap();
        assert!(verify_l4_checksum(&f).unwrap());

        let mut f2 = f.clone();
        let h = vnet_hdr_from_netif_tx(&mut f2, NETTXF_DATA_VALIDATED, None).unwrap();
        assert_eq!(
            h,
            VirtioNetHdr {
                flags: VIRTIO_NET_HDR_F_DATA_VALID,
                ..VirtioNetHdr::NONE
            }
        );
        assert_eq!(f2, f, "data_validated must not touch the frame");
    }
}

#[test]
fn netif_tx_gso_maps_type_size_and_header_length() {
    let mut f = tcp4(3000);
    let h = vnet_hdr_from_netif_tx(
        &mut f,
        0,
        Some(NetifGso {
            gso_type: XEN_NETIF_GSO_TYPE_TCPV4,
            gso_size: 1448,
        }),
    )
    .unwrap();
    assert_eq!(h.gso_type, VIRTIO_NET_HDR_GSO_TCPV4);
    assert_eq!(h.gso_size, 1448);
    assert_eq!(h.hdr_len, 14 + 20 + 20);
    assert!(h.needs_csum(), "GSO implies a partial checksum");
    assert_eq!((h.csum_start, h.csum_offset), (34, 16));
    // Wrong family, unknown type, zero size, not TCP.
    let g6 = Some(NetifGso {
        gso_type: XEN_NETIF_GSO_TYPE_TCPV6,
        gso_size: 1448,
    });
    assert_eq!(
        vnet_hdr_from_netif_tx(&mut f, 0, g6).err(),
        Some(OffloadError::GsoMismatch { gso_type: 2 })
    );
    let bad = Some(NetifGso {
        gso_type: 9,
        gso_size: 1448,
    });
    assert_eq!(
        vnet_hdr_from_netif_tx(&mut f, 0, bad).err(),
        Some(OffloadError::UnsupportedGso(9))
    );
    let zero = Some(NetifGso {
        gso_type: XEN_NETIF_GSO_TYPE_TCPV4,
        gso_size: 0,
    });
    assert_eq!(
        vnet_hdr_from_netif_tx(&mut f, 0, zero).err(),
        Some(OffloadError::ZeroMss)
    );
    // Round trip through the RX mapping.
    let meta = netif_rx_from_vnet_hdr(&h).unwrap();
    assert_eq!(
        meta.gso,
        Some(NetifGso {
            gso_type: XEN_NETIF_GSO_TYPE_TCPV4,
            gso_size: 1448
        })
    );
    assert_eq!(meta.flags, NETRXF_CSUM_BLANK | NETRXF_DATA_VALIDATED);
    // The frame after mapping + software segmentation is valid on the wire.
    let mut seg = TcpSegmenter::new(&f, h.gso_size).unwrap();
    let mut out = vec![0u8; seg.max_segment_len()];
    assert_eq!(seg.segment_count(), 3);
    while let Some(r) = seg.next_into(&mut out) {
        assert!(verify_l4_checksum(&out[..r.unwrap()]).unwrap());
    }
}

#[test]
fn flag_constants_match_xen_netif_h() {
    // xen/include/public/io/netif.h: _NETTXF_csum_blank 0, _NETTXF_data_validated 1,
    // _NETRXF_data_validated 0, _NETRXF_csum_blank 1; XEN_NETIF_GSO_TYPE_TCPV4 1, TCPV6 2.
    assert_eq!((NETTXF_CSUM_BLANK, NETTXF_DATA_VALIDATED), (1, 2));
    assert_eq!((NETRXF_DATA_VALIDATED, NETRXF_CSUM_BLANK), (1, 2));
    assert_eq!(
        (
            XEN_NETIF_GSO_TYPE_NONE,
            XEN_NETIF_GSO_TYPE_TCPV4,
            XEN_NETIF_GSO_TYPE_TCPV6
        ),
        (0, 1, 2)
    );
}
