//! Which offloads cross between a guest and its TAP, and what netback must do itself
//! where one side cannot take what the other hands over. Pure functions, no I/O.
//!
//! Direction matters:
//! - Guest → host (the guest's TX ring, written to the TAP): a TAP accepts
//!   checksum-partial and GSO frames from its writer whatever `TUNSETOFFLOAD` says, and
//!   the kernel finishes them (checksums, segmentation) if its own output needs that.
//!   So netback only translates the netif metadata into a `virtio_net_hdr`
//!   ([`tx_vnet_hdr`]).
//! - Host → guest (read from the TAP, copied into the guest's RX ring):
//!   `TUNSETOFFLOAD` tells the kernel what the *reader* accepts. It is chosen from the
//!   guest's `feature-*` keys ([`GuestRxCaps::tun_offloads`]) the way Linux's
//!   `xenvif_fix_features` derives the backend netdev's features, so the kernel hands
//!   over only what the guest can take. Should a frame still not fit (a fixed
//!   [`super::OffloadPolicy`], a kernel that ignores a bit), [`rx_action`] says which
//!   software fallback makes it valid for the guest: complete the checksum, or cut the
//!   super-frame into MSS-sized segments.

use crate::frame::{Gso, GsoType, OffloadMeta};
use crate::frontend::FrontFeatures;
use crate::offload::{csum_offsets, parse_frame, tcp_header_len, OffloadError, IPPROTO_TCP, L3};
use crate::tap::Offloads;
use crate::virtio_net_hdr::{
    VirtioNetHdr, VIRTIO_NET_HDR_F_DATA_VALID, VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_NONE, VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6,
};

/// What a guest can receive, from the features its frontend wrote (Linux's
/// `xenvif_fix_features` + `netdev_fix_features`: TSO needs scatter-gather and the
/// matching checksum offload).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GuestRxCaps {
    /// Takes IPv4 TCP/UDP frames with a blank checksum (no `feature-no-csum-offload`).
    pub csum_v4: bool,
    /// Takes IPv6 frames with a blank checksum (`feature-ipv6-csum-offload`).
    pub csum_v6: bool,
    /// Takes multi-slot frames (`feature-sg`).
    pub sg: bool,
    /// Takes TCPv4 super-frames (`feature-gso-tcpv4`, with `sg` and `csum_v4`).
    pub tso4: bool,
    /// Takes TCPv6 super-frames (`feature-gso-tcpv6`, with `sg` and `csum_v6`).
    pub tso6: bool,
}

impl GuestRxCaps {
    /// From the frontend's features.
    pub fn from_features(f: &FrontFeatures) -> Self {
        let csum_v4 = !f.no_csum_offload;
        let csum_v6 = f.ipv6_csum_offload;
        Self {
            csum_v4,
            csum_v6,
            sg: f.sg,
            tso4: f.gso_tcpv4 && f.sg && csum_v4,
            tso6: f.gso_tcpv6 && f.sg && csum_v6,
        }
    }

    /// The `TUN_F_*` set to give `TUNSETOFFLOAD`. `TUN_F_CSUM` covers IPv4 and IPv6
    /// alike, so it is on if the guest takes either; the other family is completed in
    /// software. `TUN_F_TSO_ECN` stays off: netif has no ECN bit (Linux's netback does
    /// not offer `NETIF_F_TSO_ECN` either), so the kernel segments ECN super-frames.
    pub fn tun_offloads(&self) -> Offloads {
        let mut o = Offloads::NONE;
        if self.csum_v4 || self.csum_v6 {
            o |= Offloads::CSUM;
            if self.tso4 {
                o |= Offloads::TSO4;
            }
            if self.tso6 {
                o |= Offloads::TSO6;
            }
        }
        o
    }
}

/// Why a frame read from the TAP cannot go to the guest at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxDropReason {
    /// A GSO type netif cannot carry and netback cannot segment (UDP/USO).
    UnsupportedGso(u8),
    /// GSO with `gso_size` 0.
    ZeroMss,
    /// `csum_start`/`csum_offset` point outside the frame, so the checksum cannot be
    /// completed.
    BadChecksumOffsets,
}

/// What to do with one frame read from the TAP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxAction {
    /// Hand it over as it is, with this metadata.
    Deliver(OffloadMeta),
    /// Finish the partial checksum at `csum_start`/`csum_offset` in place, then hand it
    /// over as a plain frame: the guest cannot take a blank checksum for this family.
    CompleteChecksum { csum_start: u16, csum_offset: u16 },
    /// Cut the super-frame into `mss`-byte TCP segments with full checksums: the guest
    /// did not negotiate this GSO type.
    Segment { mss: u16 },
    /// Drop it (counted).
    Drop(RxDropReason),
}

/// Decides how a frame the kernel handed over (`hdr` + `frame`) reaches a guest with
/// `caps`, following Linux netback's mapping (`CHECKSUM_PARTIAL` →
/// `NETRXF_csum_blank | NETRXF_data_validated`, `CHECKSUM_UNNECESSARY` →
/// `NETRXF_data_validated`, GSO → the GSO extra).
pub fn rx_action(hdr: &VirtioNetHdr, frame: &[u8], caps: &GuestRxCaps) -> RxAction {
    let gso_ty = match hdr.gso_kind() {
        VIRTIO_NET_HDR_GSO_NONE => None,
        VIRTIO_NET_HDR_GSO_TCPV4 => Some(GsoType::TcpV4),
        VIRTIO_NET_HDR_GSO_TCPV6 => Some(GsoType::TcpV6),
        other => return RxAction::Drop(RxDropReason::UnsupportedGso(other)),
    };
    if let Some(ty) = gso_ty {
        if hdr.gso_size == 0 {
            return RxAction::Drop(RxDropReason::ZeroMss);
        }
        let ok = match ty {
            GsoType::TcpV4 => caps.tso4,
            GsoType::TcpV6 => caps.tso6,
        };
        if !ok {
            return RxAction::Segment { mss: hdr.gso_size };
        }
        // A super-frame is always checksum-partial for the guest.
        return RxAction::Deliver(OffloadMeta {
            csum_blank: true,
            data_validated: true,
            gso: Some(Gso {
                ty,
                size: hdr.gso_size,
            }),
        });
    }
    if hdr.needs_csum() {
        let partial_ok = match parse_frame(frame).map(|i| i.l3) {
            Ok(L3::Ipv4) => caps.csum_v4,
            Ok(L3::Ipv6) => caps.csum_v6,
            // Not IP (or unparsable): the guest could not locate the field itself.
            Err(_) => false,
        };
        if partial_ok {
            return RxAction::Deliver(OffloadMeta {
                csum_blank: true,
                data_validated: true,
                gso: None,
            });
        }
        return RxAction::CompleteChecksum {
            csum_start: hdr.csum_start,
            csum_offset: hdr.csum_offset,
        };
    }
    RxAction::Deliver(OffloadMeta {
        data_validated: hdr.data_valid(),
        ..OffloadMeta::default()
    })
}

/// After a partial checksum was completed at `csum_start + csum_offset`: a TCP
/// checksum that came out as `0xffff` (Linux's `skb_checksum_help` stores a computed
/// zero that way, `CSUM_MANGLED_0`, which UDP needs) is rewritten as `0x0000`. Both
/// verify, but for TCP only `0x0000` is what the checksum computation yields (RFC 1624
/// §5), and analysers such as Wireshark flag `0xffff`. UDP keeps `0xffff` (RFC 768: a
/// zero means "no checksum").
pub fn canonical_tcp_zero(frame: &mut [u8], csum_start: u16, csum_offset: u16) {
    let field = usize::from(csum_start) + usize::from(csum_offset);
    let Some(f) = frame.get(field..field + 2) else {
        return;
    };
    if f != [0xff, 0xff] {
        return;
    }
    let is_tcp = parse_frame(frame)
        .is_ok_and(|i| i.l4_proto == IPPROTO_TCP && i.l4_offset == usize::from(csum_start));
    if is_tcp {
        frame[field..field + 2].copy_from_slice(&[0, 0]);
    }
}

/// The `virtio_net_hdr` for a frame the guest sent with `meta`, read-only: the
/// checksum field is trusted to hold the pseudo-header sum the frontend wrote (as Linux
/// netback trusts it unless it has to fix up a GSO frame). `Ok(None)` means the frame is
/// GSO without `NETTXF_csum_blank` (a buggy frontend): the pseudo-header sum must be
/// written into a copy first (`offload::vnet_hdr_from_netif_tx`).
pub fn tx_vnet_hdr(frame: &[u8], meta: &OffloadMeta) -> Result<Option<VirtioNetHdr>, OffloadError> {
    let mut hdr = VirtioNetHdr::NONE;
    if let Some(g) = meta.gso {
        let info = parse_frame(frame)?;
        let (vtype, l3) = match g.ty {
            GsoType::TcpV4 => (VIRTIO_NET_HDR_GSO_TCPV4, L3::Ipv4),
            GsoType::TcpV6 => (VIRTIO_NET_HDR_GSO_TCPV6, L3::Ipv6),
        };
        if info.l3 != l3 || info.l4_proto != IPPROTO_TCP {
            return Err(OffloadError::GsoMismatch {
                gso_type: g.ty.to_xen(),
            });
        }
        if g.size == 0 {
            return Err(OffloadError::ZeroMss);
        }
        if !meta.csum_blank {
            return Ok(None);
        }
        let tcp_len = tcp_header_len(frame, &info)?;
        hdr.gso_type = vtype;
        hdr.gso_size = g.size;
        hdr.hdr_len = u16::try_from(info.l4_offset + tcp_len)
            .map_err(|_| OffloadError::Malformed("headers above 64 KiB"))?;
    }
    if meta.csum_blank {
        let (start, off) = csum_offsets(frame)?;
        hdr.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
        hdr.csum_start = start;
        hdr.csum_offset = off;
        if hdr.hdr_len == 0 {
            hdr.hdr_len = start + off + 2;
        }
    } else if meta.data_validated {
        hdr.flags = VIRTIO_NET_HDR_F_DATA_VALID;
    }
    Ok(Some(hdr))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offload::{
        vnet_hdr_from_netif_tx, write_pseudo_header_csum, NetifGso, NETTXF_CSUM_BLANK,
        NETTXF_DATA_VALIDATED,
    };
    use crate::virtio_net_hdr::VIRTIO_NET_HDR_GSO_UDP;

    fn all() -> FrontFeatures {
        FrontFeatures {
            sg: true,
            gso_tcpv4: true,
            gso_tcpv6: true,
            no_csum_offload: false,
            ipv6_csum_offload: true,
            rx_notify: true,
        }
    }

    /// Ethernet + IPv4/IPv6 + TCP with `payload` bytes.
    fn tcp(v6: bool, payload: usize) -> Vec<u8> {
        let mut f = vec![0u8; 14];
        if v6 {
            f[12..14].copy_from_slice(&[0x86, 0xdd]);
            let mut ip = vec![0u8; 40];
            ip[0] = 0x60;
            ip[4..6].copy_from_slice(&((20 + payload) as u16).to_be_bytes());
            ip[6] = 6;
            ip[7] = 64;
            ip[23] = 1;
            ip[39] = 2;
            f.extend_from_slice(&ip);
        } else {
            f[12..14].copy_from_slice(&[0x08, 0x00]);
            let mut ip = vec![0u8; 20];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&((40 + payload) as u16).to_be_bytes());
            ip[8] = 64;
            ip[9] = 6;
            ip[12..16].copy_from_slice(&[10, 0, 0, 1]);
            ip[16..20].copy_from_slice(&[10, 0, 0, 2]);
            f.extend_from_slice(&ip);
        }
        let mut t = vec![0u8; 20];
        t[12] = 5 << 4;
        t[13] = 0x18;
        f.extend_from_slice(&t);
        f.extend((0..payload).map(|i| i as u8));
        f
    }

    #[test]
    fn tun_offloads_follow_xenvif_fix_features() {
        let c = GuestRxCaps::from_features(&all());
        assert_eq!(
            c.tun_offloads(),
            Offloads::CSUM | Offloads::TSO4 | Offloads::TSO6
        );
        // No scatter-gather: no TSO (a super-frame needs many slots).
        let c = GuestRxCaps::from_features(&FrontFeatures { sg: false, ..all() });
        assert_eq!(c.tun_offloads(), Offloads::CSUM);
        // No IPv4 checksum offload: no TSO4, but IPv6 partial frames are still taken.
        let f = FrontFeatures {
            no_csum_offload: true,
            ..all()
        };
        let c = GuestRxCaps::from_features(&f);
        assert_eq!(c.tun_offloads(), Offloads::CSUM | Offloads::TSO6);
        assert!(!c.csum_v4 && c.csum_v6);
        // Nothing: the kernel finishes everything.
        let f = FrontFeatures {
            no_csum_offload: true,
            ipv6_csum_offload: false,
            ..all()
        };
        assert_eq!(
            GuestRxCaps::from_features(&f).tun_offloads(),
            Offloads::NONE
        );
        // Every choice is one the kernel honours.
        for bits in 0..64u8 {
            let f = FrontFeatures {
                sg: bits & 1 != 0,
                gso_tcpv4: bits & 2 != 0,
                gso_tcpv6: bits & 4 != 0,
                no_csum_offload: bits & 8 != 0,
                ipv6_csum_offload: bits & 16 != 0,
                rx_notify: true,
            };
            assert!(GuestRxCaps::from_features(&f).tun_offloads().is_valid());
        }
    }

    #[test]
    fn rx_actions() {
        let full = GuestRxCaps::from_features(&all());
        let none = GuestRxCaps::default();
        let f4 = tcp(false, 3000);
        let f6 = tcp(true, 3000);
        let mut gso = VirtioNetHdr {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            gso_type: VIRTIO_NET_HDR_GSO_TCPV4,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
            ..VirtioNetHdr::NONE
        };
        assert_eq!(
            rx_action(&gso, &f4, &full),
            RxAction::Deliver(OffloadMeta {
                csum_blank: true,
                data_validated: true,
                gso: Some(Gso {
                    ty: GsoType::TcpV4,
                    size: 1448
                })
            })
        );
        assert_eq!(rx_action(&gso, &f4, &none), RxAction::Segment { mss: 1448 });
        gso.gso_size = 0;
        assert_eq!(
            rx_action(&gso, &f4, &full),
            RxAction::Drop(RxDropReason::ZeroMss)
        );
        gso.gso_type = VIRTIO_NET_HDR_GSO_UDP;
        assert_eq!(
            rx_action(&gso, &f4, &full),
            RxAction::Drop(RxDropReason::UnsupportedGso(VIRTIO_NET_HDR_GSO_UDP))
        );

        let partial = VirtioNetHdr {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            csum_start: 54,
            csum_offset: 16,
            ..VirtioNetHdr::NONE
        };
        let v6_only = GuestRxCaps {
            csum_v6: true,
            ..none
        };
        assert!(matches!(
            rx_action(&partial, &f6, &v6_only),
            RxAction::Deliver(m) if m.csum_blank && m.data_validated
        ));
        assert_eq!(
            rx_action(&partial, &f4, &v6_only),
            RxAction::CompleteChecksum {
                csum_start: 54,
                csum_offset: 16
            }
        );
        // Unparsable partial frame: completed by offsets, never handed over blank.
        assert!(matches!(
            rx_action(&partial, &[0u8; 20], &full),
            RxAction::CompleteChecksum { .. }
        ));
        let valid = VirtioNetHdr {
            flags: VIRTIO_NET_HDR_F_DATA_VALID,
            ..VirtioNetHdr::NONE
        };
        assert_eq!(
            rx_action(&valid, &f4, &none),
            RxAction::Deliver(OffloadMeta {
                data_validated: true,
                ..Default::default()
            })
        );
        assert_eq!(
            rx_action(&VirtioNetHdr::NONE, &f4, &full),
            RxAction::Deliver(OffloadMeta::default())
        );
    }

    #[test]
    fn a_completed_tcp_zero_is_0x0000_and_udp_keeps_0xffff() {
        use crate::offload::{complete_partial_checksum, verify_l4_checksum};
        // Find a TCP frame whose checksum computes to zero by varying one payload byte.
        let mut found = false;
        for v in 0..=255u8 {
            let mut f = tcp(false, 8);
            f[54] = v;
            for w in 0..=255u8 {
                f[55] = w;
                write_pseudo_header_csum(&mut f).unwrap();
                complete_partial_checksum(&mut f, 34, 16).unwrap();
                if f[50..52] == [0xff, 0xff] {
                    canonical_tcp_zero(&mut f, 34, 16);
                    assert_eq!(f[50..52], [0, 0]);
                    assert!(verify_l4_checksum(&f).unwrap());
                    found = true;
                    break;
                }
            }
            if found {
                break;
            }
        }
        assert!(found, "no zero-checksum TCP frame in the search space");
        // Anything else is left alone, including a UDP 0xffff.
        let mut f = tcp(false, 8);
        f[23] = crate::offload::IPPROTO_UDP;
        f[40..42].copy_from_slice(&[0xff, 0xff]);
        let before = f.clone();
        canonical_tcp_zero(&mut f, 34, 6);
        assert_eq!(f, before);
        canonical_tcp_zero(&mut f, 60000, 16);
        assert_eq!(f, before);
    }

    #[test]
    fn tx_header_matches_the_copying_translation() {
        for v6 in [false, true] {
            let mut f = tcp(v6, 5000);
            write_pseudo_header_csum(&mut f).unwrap();
            let ty = if v6 { GsoType::TcpV6 } else { GsoType::TcpV4 };
            let meta = OffloadMeta {
                csum_blank: true,
                data_validated: false,
                gso: Some(Gso { ty, size: 1400 }),
            };
            let h = tx_vnet_hdr(&f, &meta).unwrap().unwrap();
            let mut copy = f.clone();
            let reference = vnet_hdr_from_netif_tx(
                &mut copy,
                NETTXF_CSUM_BLANK,
                Some(NetifGso {
                    gso_type: ty.to_xen(),
                    gso_size: 1400,
                }),
            )
            .unwrap();
            assert_eq!(h, reference);
            assert_eq!(
                copy, f,
                "the frontend's pseudo-header sum was already right"
            );
        }
        let f = tcp(false, 100);
        let plain = OffloadMeta::default();
        assert_eq!(tx_vnet_hdr(&f, &plain), Ok(Some(VirtioNetHdr::NONE)));
        let validated = OffloadMeta {
            data_validated: true,
            ..plain
        };
        let h = tx_vnet_hdr(&f, &validated).unwrap().unwrap();
        assert_eq!(
            h,
            vnet_hdr_from_netif_tx(&mut f.clone(), NETTXF_DATA_VALIDATED, None).unwrap()
        );
        // GSO without csum_blank: needs the fix-up on a copy.
        let buggy = OffloadMeta {
            gso: Some(Gso {
                ty: GsoType::TcpV4,
                size: 1000,
            }),
            ..plain
        };
        assert_eq!(tx_vnet_hdr(&f, &buggy), Ok(None));
        // Wrong family or MSS 0: an error, never a header the kernel would reject.
        let v6gso = OffloadMeta {
            csum_blank: true,
            gso: Some(Gso {
                ty: GsoType::TcpV6,
                size: 1000,
            }),
            ..plain
        };
        assert!(tx_vnet_hdr(&f, &v6gso).is_err());
        let zero = OffloadMeta {
            csum_blank: true,
            gso: Some(Gso {
                ty: GsoType::TcpV4,
                size: 0,
            }),
            ..plain
        };
        assert_eq!(tx_vnet_hdr(&f, &zero), Err(OffloadError::ZeroMss));
        // Blank checksum on a non-IP frame cannot be translated.
        let blank = OffloadMeta {
            csum_blank: true,
            ..plain
        };
        assert!(tx_vnet_hdr(&[0u8; 60], &blank).is_err());
    }
}
