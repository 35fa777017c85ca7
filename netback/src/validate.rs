//! The checks Linux's netback applies to a guest's TX requests
//! (`xenvif_tx_build_gops`, `xenvif_get_extras`, `xenvif_count_requests`,
//! `xenvif_set_skb_gso`), as pure functions over requests already copied out of the
//! ring. Each slot is fetched exactly once through the caller's closure (which does the
//! `RING_COPY_REQUEST`); nothing here reads shared memory, so the frontend cannot change
//! a value between its check and its use.

use hv::abi::netif::{
    NetifExtraInfo, NetifTxRequest, NETTXF_CSUM_BLANK, NETTXF_DATA_VALIDATED, NETTXF_EXTRA_INFO,
    NETTXF_MORE_DATA, XEN_NETIF_EXTRA_TYPE_GSO, XEN_NETIF_EXTRA_TYPE_MAX,
    XEN_NETIF_EXTRA_TYPE_MCAST_ADD, XEN_NETIF_EXTRA_TYPE_MCAST_DEL, XEN_NETIF_NR_SLOTS_MIN,
};
use hv::abi::ring::RING_PAGE_SIZE;

use crate::error::{DropReason, FatalError};
use crate::frame::{Gso, GsoType, OffloadMeta, ETH_HLEN};

/// `XEN_NETBK_LEGACY_SLOTS_MAX`: once a packet has used this many slots after its first
/// one and still says `NETTXF_more_data`, it is dropped (not fatal). Linux sets it to
/// `XEN_NETIF_NR_SLOTS_MIN`.
pub const XEN_NETBK_LEGACY_SLOTS_MAX: u32 = XEN_NETIF_NR_SLOTS_MIN as u32;

/// `FATAL_SKB_SLOTS_DEFAULT`: Linux's default `fatal_skb_slots` module parameter. A
/// packet still asking for more slots after this many following slots is treated as
/// an attack and disables the vif.
pub const FATAL_SKB_SLOTS_DEFAULT: u32 = 20;

/// Types of extra-info slot (`XEN_NETIF_EXTRA_TYPE_MAX - 1` of them).
const EXTRA_TYPES: usize = XEN_NETIF_EXTRA_TYPE_MAX as usize - 1;

/// Limits applied to TX packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxLimits {
    /// `fatal_skb_slots`; never below [`XEN_NETBK_LEGACY_SLOTS_MAX`] in effect.
    pub fatal_skb_slots: u32,
}

impl Default for TxLimits {
    fn default() -> Self {
        Self {
            fatal_skb_slots: FATAL_SKB_SLOTS_DEFAULT,
        }
    }
}

/// What to do with one parsed TX packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxVerdict {
    /// A valid packet: `len` bytes in total, `first_size` of them in the first slot,
    /// the rest in the data slots that follow the extras.
    Packet {
        len: u16,
        first_size: u16,
        meta: OffloadMeta,
    },
    /// A multicast filter update (`XEN_NETIF_EXTRA_TYPE_MCAST_ADD/DEL`): no data;
    /// answered with `NETIF_RSP_OKAY`.
    Mcast { add: bool, addr: [u8; 6] },
    /// Malformed but not hostile: every slot gets `NETIF_RSP_ERROR`.
    Drop(DropReason),
}

/// One packet's worth of slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxParsed {
    /// Slots consumed: the first, its extras, the following data slots.
    pub nslots: u32,
    /// Extra-info slots right after the first (answered with `NETIF_RSP_NULL`).
    pub extra_count: u32,
    pub verdict: TxVerdict,
}

/// Parse the packet that starts at the ring's `req_cons`.
///
/// `fetch(i)` must return a copy of request `req_cons + i`; it is called once per slot,
/// in order, and only for `i < work_to_do` (the requests published). Every fetched slot
/// is appended to `slots` (first, extras, data slots) so the caller can answer each
/// with its own id. `Err` is fatal for the vif.
#[inline(always)]
pub fn parse_tx_packet(
    mut fetch: impl FnMut(u32) -> NetifTxRequest,
    work_to_do: u32,
    limits: &TxLimits,
    slots: &mut Vec<NetifTxRequest>,
) -> Result<TxParsed, FatalError> {
    if work_to_do == 0 {
        return Err(FatalError::IncompletePacket { asked: 1 });
    }
    let first = fetch(0);
    slots.push(first);

    // The common small frame: one slot, no extras. The general walk below reduces to
    // exactly these checks for it; answering here skips its bookkeeping.
    if first.flags & (NETTXF_EXTRA_INFO | NETTXF_MORE_DATA) == 0 {
        let size = first.size;
        let verdict = if usize::from(size) < ETH_HLEN {
            TxVerdict::Drop(DropReason::ShortFrame(size))
        } else if usize::from(first.offset) + usize::from(size) > RING_PAGE_SIZE {
            return Err(FatalError::CrossPage {
                offset: first.offset,
                size: u32::from(size),
            });
        } else {
            TxVerdict::Packet {
                len: size,
                first_size: size,
                meta: OffloadMeta {
                    csum_blank: first.flags & NETTXF_CSUM_BLANK != 0,
                    data_validated: first.flags & NETTXF_DATA_VALIDATED != 0,
                    gso: None,
                },
            }
        };
        return Ok(TxParsed {
            nslots: 1,
            extra_count: 0,
            verdict,
        });
    }
    parse_tx_chain(first, fetch, work_to_do, limits, slots)
}

/// [`parse_tx_packet`] for a packet with extras or more than one slot (`first` is
/// already fetched and in `slots`).
#[inline(never)]
fn parse_tx_chain(
    first: NetifTxRequest,
    mut fetch: impl FnMut(u32) -> NetifTxRequest,
    work_to_do: u32,
    limits: &TxLimits,
    slots: &mut Vec<NetifTxRequest>,
) -> Result<TxParsed, FatalError> {
    let mut used: u32 = 1;

    // xenvif_get_extras: a chain of extra-info slots, each naming its type.
    let mut extras: [Option<NetifExtraInfo>; EXTRA_TYPES] = [None; EXTRA_TYPES];
    let mut extra_count = 0u32;
    if first.flags & NETTXF_EXTRA_INFO != 0 {
        loop {
            if used >= work_to_do {
                return Err(FatalError::MissingExtraInfo);
            }
            let raw = fetch(used);
            slots.push(raw);
            used += 1;
            extra_count += 1;
            let extra = NetifExtraInfo::from_tx_slot(raw);
            if extra.ty == 0 || extra.ty >= XEN_NETIF_EXTRA_TYPE_MAX {
                return Err(FatalError::InvalidExtraType(extra.ty));
            }
            extras[usize::from(extra.ty - 1)] = Some(extra);
            if !extra.has_more() {
                break;
            }
        }
    }

    // A multicast control request carries no data: answer it and move on.
    for (ty, add) in [
        (XEN_NETIF_EXTRA_TYPE_MCAST_ADD, true),
        (XEN_NETIF_EXTRA_TYPE_MCAST_DEL, false),
    ] {
        if let Some(e) = extras[usize::from(ty - 1)] {
            return Ok(TxParsed {
                nslots: used,
                extra_count,
                verdict: TxVerdict::Mcast {
                    add,
                    addr: e.mcast_addr(),
                },
            });
        }
    }

    // xenvif_count_requests: walk the data slots. The first slot's size is the whole
    // packet; each following slot's size is taken off it, so what is left at the end is
    // the first fragment's own size.
    let mut remaining = first.size;
    let mut following = 0u32;
    let mut drop: Option<DropReason> = None;
    let mut more = first.flags & NETTXF_MORE_DATA != 0;
    let fatal_threshold = limits.fatal_skb_slots.max(XEN_NETBK_LEGACY_SLOTS_MAX);
    while more {
        if used >= work_to_do {
            return Err(FatalError::IncompletePacket { asked: used + 1 });
        }
        if following >= fatal_threshold {
            return Err(FatalError::TooManySlots {
                slots: following + 2,
                threshold: fatal_threshold + 1,
            });
        }
        if drop.is_none() && following >= XEN_NETBK_LEGACY_SLOTS_MAX {
            drop = Some(DropReason::TooManySlots {
                slots: following + 2,
                limit: XEN_NETBK_LEGACY_SLOTS_MAX + 1,
            });
        }
        let txp = fetch(used);
        slots.push(txp);
        used += 1;
        if drop.is_none() && txp.size > remaining {
            drop = Some(DropReason::FragTooLarge {
                size: txp.size,
                remaining,
            });
        }
        remaining = remaining.wrapping_sub(txp.size);
        following += 1;
        if usize::from(txp.offset) + usize::from(txp.size) > RING_PAGE_SIZE {
            return Err(FatalError::CrossPage {
                offset: txp.offset,
                size: u32::from(txp.size),
            });
        }
        more = txp.flags & NETTXF_MORE_DATA != 0;
    }
    let dropped = |reason| TxParsed {
        nslots: used,
        extra_count,
        verdict: TxVerdict::Drop(reason),
    };
    if let Some(reason) = drop {
        return Ok(dropped(reason));
    }
    let first_size = remaining;
    if usize::from(first_size) < ETH_HLEN {
        return Ok(dropped(DropReason::ShortFrame(first_size)));
    }
    // No crossing a page: the payload of a slot must sit in its granted page.
    if usize::from(first.offset) + usize::from(first_size) > RING_PAGE_SIZE {
        return Err(FatalError::CrossPage {
            offset: first.offset,
            size: u32::from(first_size),
        });
    }
    let gso = match extras[usize::from(XEN_NETIF_EXTRA_TYPE_GSO - 1)] {
        None => None,
        Some(e) => Some(parse_gso(&e)?),
    };
    let meta = OffloadMeta {
        csum_blank: first.flags & NETTXF_CSUM_BLANK != 0,
        data_validated: first.flags & NETTXF_DATA_VALIDATED != 0,
        gso,
    };
    Ok(TxParsed {
        nslots: used,
        extra_count,
        verdict: TxVerdict::Packet {
            len: first.size,
            first_size,
            meta,
        },
    })
}

/// `xenvif_set_skb_gso`: a GSO extra must name a size and a known type.
pub fn parse_gso(extra: &NetifExtraInfo) -> Result<Gso, FatalError> {
    let g = extra.gso();
    if g.size == 0 {
        return Err(FatalError::GsoSizeZero);
    }
    let ty = GsoType::from_xen(g.ty).ok_or(FatalError::BadGsoType(g.ty))?;
    Ok(Gso { ty, size: g.size })
}

/// RX slots a frame of `len` bytes needs in a frontend's ring: one per 4 KiB page of
/// data (Linux packs guest RX buffers full, `xenvif_rx_skb`), plus one for the GSO
/// extra.
pub fn rx_slots_needed(len: usize, gso: bool) -> u32 {
    let data = len.div_ceil(RING_PAGE_SIZE).max(1);
    (data + usize::from(gso)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use hv::abi::netif::{
        NetifExtraGso, XEN_NETIF_EXTRA_FLAG_MORE, XEN_NETIF_EXTRA_TYPE_HASH,
        XEN_NETIF_GSO_TYPE_TCPV4,
    };

    fn req(gref: u32, offset: u16, flags: u16, id: u16, size: u16) -> NetifTxRequest {
        NetifTxRequest {
            gref,
            offset,
            flags,
            id,
            size,
        }
    }

    fn gso_slot(size: u16, ty: u8, flags: u8) -> NetifTxRequest {
        NetifExtraInfo::new_gso(
            NetifExtraGso {
                size,
                ty,
                pad: 0,
                features: 0,
            },
            flags,
        )
        .to_tx_slot()
    }

    /// Parse `ring` (all published) and check each slot was fetched once, in order.
    fn parse(ring: &[NetifTxRequest]) -> (Result<TxParsed, FatalError>, Vec<NetifTxRequest>) {
        let mut slots = Vec::new();
        let mut next = 0u32;
        let r = parse_tx_packet(
            |i| {
                assert_eq!(i, next, "slot fetched out of order or twice");
                assert!((i as usize) < ring.len(), "fetched past work_to_do");
                next += 1;
                ring[i as usize]
            },
            ring.len() as u32,
            &TxLimits::default(),
            &mut slots,
        );
        (r, slots)
    }

    /// A packet of `n` data slots, 100 bytes each.
    fn chain(n: usize) -> Vec<NetifTxRequest> {
        (0..n)
            .map(|i| {
                let more = if i + 1 < n { NETTXF_MORE_DATA } else { 0 };
                let size = if i == 0 { (100 * n) as u16 } else { 100 };
                req(i as u32, 0, more, i as u16, size)
            })
            .collect()
    }

    #[test]
    fn single_slot_packet() {
        let (r, slots) = parse(&[req(7, 100, NETTXF_CSUM_BLANK, 3, 60)]);
        let p = r.unwrap();
        assert_eq!(p.nslots, 1);
        assert_eq!(slots.len(), 1);
        match p.verdict {
            TxVerdict::Packet {
                len,
                first_size,
                meta,
            } => {
                assert_eq!((len, first_size), (60, 60));
                assert!(meta.csum_blank && !meta.data_validated && meta.gso.is_none());
            }
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn multi_slot_with_gso_extra() {
        let mut ring = vec![req(1, 0, NETTXF_MORE_DATA | NETTXF_EXTRA_INFO, 1, 9000)];
        ring.push(gso_slot(1448, XEN_NETIF_GSO_TYPE_TCPV4, 0));
        ring.push(req(2, 0, NETTXF_MORE_DATA, 2, 4096));
        ring.push(req(3, 0, 0, 3, 4000));
        let (r, slots) = parse(&ring);
        let p = r.unwrap();
        assert_eq!((p.nslots, p.extra_count), (4, 1));
        assert_eq!(slots, ring);
        match p.verdict {
            TxVerdict::Packet {
                len,
                first_size,
                meta,
            } => {
                assert_eq!((len, first_size), (9000, 904));
                assert_eq!(
                    meta.gso,
                    Some(Gso {
                        ty: GsoType::TcpV4,
                        size: 1448
                    })
                );
            }
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn up_to_nineteen_slots_pass_twenty_drop_twenty_two_fatal() {
        for n in [18, 19] {
            assert!(
                matches!(
                    parse(&chain(n)).0.unwrap().verdict,
                    TxVerdict::Packet { .. }
                ),
                "{n}"
            );
        }
        for n in [20, 21] {
            let p = parse(&chain(n)).0.unwrap();
            assert_eq!(
                p.nslots, n as u32,
                "every slot of a dropped packet is consumed"
            );
            assert!(
                matches!(p.verdict, TxVerdict::Drop(DropReason::TooManySlots { .. })),
                "{n}"
            );
        }
        assert!(matches!(
            parse(&chain(22)).0,
            Err(FatalError::TooManySlots { .. })
        ));
    }

    #[test]
    fn incomplete_packet_is_fatal() {
        let ring = [req(1, 0, NETTXF_MORE_DATA, 1, 200)];
        assert!(matches!(
            parse(&ring).0,
            Err(FatalError::IncompletePacket { .. })
        ));
    }

    #[test]
    fn cross_page_fatal_in_first_and_following() {
        assert_eq!(
            parse(&[req(1, 4000, 0, 1, 200)]).0,
            Err(FatalError::CrossPage {
                offset: 4000,
                size: 200
            })
        );
        let ring = [req(1, 0, NETTXF_MORE_DATA, 1, 300), req(2, 4090, 0, 2, 100)];
        assert_eq!(
            parse(&ring).0,
            Err(FatalError::CrossPage {
                offset: 4090,
                size: 100
            })
        );
    }

    #[test]
    fn extras_rules() {
        // Missing extra.
        assert_eq!(
            parse(&[req(1, 0, NETTXF_EXTRA_INFO, 1, 60)]).0,
            Err(FatalError::MissingExtraInfo)
        );
        // Type 0 and >= MAX.
        for ty in [0u8, XEN_NETIF_EXTRA_TYPE_MAX, 200] {
            let extra = NetifExtraInfo {
                ty,
                flags: 0,
                u: [0; 6],
            }
            .to_tx_slot();
            let ring = [req(1, 0, NETTXF_EXTRA_INFO, 1, 60), extra];
            assert_eq!(parse(&ring).0, Err(FatalError::InvalidExtraType(ty)));
        }
        // MORE flag with nothing after.
        let ring = [
            req(1, 0, NETTXF_EXTRA_INFO, 1, 60),
            gso_slot(1000, 1, XEN_NETIF_EXTRA_FLAG_MORE),
        ];
        assert_eq!(parse(&ring).0, Err(FatalError::MissingExtraInfo));
        // A HASH extra is accepted and ignored.
        let hash = NetifExtraInfo {
            ty: XEN_NETIF_EXTRA_TYPE_HASH,
            flags: 0,
            u: [0; 6],
        }
        .to_tx_slot();
        let p = parse(&[req(1, 0, NETTXF_EXTRA_INFO, 1, 60), hash])
            .0
            .unwrap();
        assert!(matches!(p.verdict, TxVerdict::Packet { .. }));
    }

    #[test]
    fn gso_rules() {
        let head = req(1, 0, NETTXF_EXTRA_INFO, 1, 60);
        assert_eq!(
            parse(&[head, gso_slot(0, 1, 0)]).0,
            Err(FatalError::GsoSizeZero)
        );
        for ty in [0u8, 3, 255] {
            assert_eq!(
                parse(&[head, gso_slot(1448, ty, 0)]).0,
                Err(FatalError::BadGsoType(ty))
            );
        }
    }

    #[test]
    fn short_frame_and_oversized_fragment_drop() {
        let p = parse(&[req(1, 0, 0, 1, 13)]).0.unwrap();
        assert_eq!(p.verdict, TxVerdict::Drop(DropReason::ShortFrame(13)));
        // Total 200 but the second slot claims 300.
        let ring = [req(1, 0, NETTXF_MORE_DATA, 1, 200), req(2, 0, 0, 2, 300)];
        let p = parse(&ring).0.unwrap();
        assert_eq!(p.nslots, 2);
        assert_eq!(
            p.verdict,
            TxVerdict::Drop(DropReason::FragTooLarge {
                size: 300,
                remaining: 200
            })
        );
        // The first fragment ends up shorter than a header: dropped.
        let ring = [req(1, 0, NETTXF_MORE_DATA, 1, 200), req(2, 0, 0, 2, 190)];
        assert_eq!(
            parse(&ring).0.unwrap().verdict,
            TxVerdict::Drop(DropReason::ShortFrame(10))
        );
    }

    #[test]
    fn mcast_is_control() {
        let m = NetifExtraInfo::new_mcast(true, [1, 0, 0x5e, 0, 0, 1], 0).to_tx_slot();
        let p = parse(&[req(1, 0, NETTXF_EXTRA_INFO, 1, 0), m]).0.unwrap();
        assert_eq!(p.nslots, 2);
        assert_eq!(
            p.verdict,
            TxVerdict::Mcast {
                add: true,
                addr: [1, 0, 0x5e, 0, 0, 1]
            }
        );
    }

    #[test]
    fn rx_slots() {
        assert_eq!(rx_slots_needed(0, false), 1);
        assert_eq!(rx_slots_needed(60, false), 1);
        assert_eq!(rx_slots_needed(4096, false), 1);
        assert_eq!(rx_slots_needed(4097, true), 3);
        assert_eq!(rx_slots_needed(65535, true), 17);
    }
}
