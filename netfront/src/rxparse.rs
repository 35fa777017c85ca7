//! Turning RX responses into frames (Linux netfront's `xennet_get_responses` and
//! `xennet_get_extras`), as a pure function over the responses so every malformed
//! sequence can be tested without a ring.
//!
//! A frame is a chain: the first response (data, flags for the whole frame), then the
//! extra-info slots if it has `NETRXF_extra_info` (each `XEN_NETIF_EXTRA_FLAG_MORE`
//! announces another), then further data responses while the previous data response
//! has `NETRXF_more_data`. Each data response must sit in the slot of the request that
//! posted its buffer (the frontend posts buffer `idx % RING_SIZE` at ring index `idx`,
//! so the echoed `id` must equal the slot), and its `offset + status` must stay in the
//! page. The backend is trusted to move frames but checked anyway: anything malformed
//! makes the whole chain a [`Parsed::Bad`] that is consumed and counted, never a panic
//! and never an out-of-page read.

use hv::abi::netif::{
    NetifExtraInfo, NetifRxResponse, NETRXF_CSUM_BLANK, NETRXF_DATA_VALIDATED, NETRXF_EXTRA_INFO,
    NETRXF_GSO_PREFIX, NETRXF_MORE_DATA, NET_RX_RING_SIZE, XEN_NETIF_EXTRA_TYPE_GSO,
    XEN_NETIF_EXTRA_TYPE_MAX, XEN_NETIF_EXTRA_TYPE_NONE, XEN_NETIF_NR_SLOTS_MIN,
};
use hv::abi::ring::RingIdx;

use crate::meta::{Gso, GsoType, RxMeta};
use crate::{ETH_HLEN, PAGE_SIZE};

/// The most data slots accepted for one frame (`XEN_NETIF_NR_SLOTS_MIN`, Linux's
/// `MAX_SKB_FRAGS + 1` with 4 KiB pages): enough for a 64 KiB GSO frame.
pub const RX_MAX_SLOTS: usize = XEN_NETIF_NR_SLOTS_MIN;

/// The most extra-info slots accepted for one frame: one of each defined type.
pub const RX_MAX_EXTRAS: usize = (XEN_NETIF_EXTRA_TYPE_MAX - 1) as usize;

/// One fragment of a received frame: `len` bytes at `offset` in the buffer page of
/// ring slot `slot`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RxSeg {
    /// Ring slot (= buffer id = page index).
    pub slot: u16,
    /// Offset of the data in the page.
    pub offset: u16,
    /// Bytes of data.
    pub len: u16,
}

/// A well-formed frame found in the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxFrame {
    segs: [RxSeg; RX_MAX_SLOTS],
    nsegs: usize,
    /// Total bytes.
    pub len: usize,
    /// Flags and GSO extra.
    pub meta: RxMeta,
    /// Ring slots the chain occupies (data and extras).
    pub consumed: u32,
}

impl RxFrame {
    /// No fragments (the starting point of a parse).
    pub const EMPTY: RxFrame = RxFrame {
        segs: [RxSeg {
            slot: 0,
            offset: 0,
            len: 0,
        }; RX_MAX_SLOTS],
        nsegs: 0,
        len: 0,
        meta: RxMeta {
            csum_blank: false,
            data_validated: false,
            gso: None,
            slots: 0,
        },
        consumed: 0,
    };

    /// The data fragments in order.
    #[inline(always)]
    pub fn segs(&self) -> &[RxSeg] {
        &self.segs[..self.nsegs]
    }
}

/// Why a chain was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxBad {
    /// The backend reported `NETIF_RSP_ERROR` / `NETIF_RSP_DROPPED` (or another
    /// negative status) for a fragment: a drop, not a protocol error.
    BackendStatus(i16),
    /// A data response's `id` is not its slot.
    BadId {
        /// The slot the response sits in.
        slot: u16,
        /// The id it carries.
        id: u16,
    },
    /// `offset + size` runs past the 4 KiB page.
    PastPage {
        /// `offset`
        offset: u16,
        /// `status` (the size)
        size: i16,
    },
    /// More than [`RX_MAX_SLOTS`] data slots or [`RX_MAX_EXTRAS`] extras.
    TooManySlots,
    /// An extra of type `XEN_NETIF_EXTRA_TYPE_NONE` or beyond `_MAX`.
    BadExtraType(u8),
    /// A GSO extra with an unknown type or size 0.
    BadGso,
    /// `NETRXF_gso_prefix`, which this frontend never asks for.
    UnexpectedGsoPrefix,
    /// Shorter than an Ethernet header.
    Runt(usize),
    /// The chain continues past every response the backend can still produce.
    NeverCompletes,
}

impl RxBad {
    /// True for backend-reported drops (counted as drops, not errors).
    pub fn is_drop(&self) -> bool {
        matches!(self, RxBad::BackendStatus(_))
    }
}

/// The result of looking at the responses from `rsp_cons` on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// No complete chain yet: consume nothing and look again later.
    Incomplete,
    /// A frame to deliver.
    Frame(RxFrame),
    /// A malformed chain of `consumed` slots to skip.
    Bad {
        /// Slots to consume.
        consumed: u32,
        /// The first problem found.
        why: RxBad,
    },
}

const SLOT_MASK: u32 = NET_RX_RING_SIZE - 1;

struct Walker<F> {
    get: F,
    cons: RingIdx,
    avail: u32,
    can_grow: bool,
    taken: u32,
}

/// Why a chain walk stopped before the chain ended.
#[derive(Clone, Copy)]
enum Stop {
    /// More responses may still come.
    Incomplete,
    /// None can: the `avail` responses form an endless chain.
    Never(u32),
}

impl<F: Fn(RingIdx) -> NetifRxResponse> Walker<F> {
    /// The next response of the chain, or why there is none.
    #[inline(always)]
    fn next(&mut self) -> Result<(u16, NetifRxResponse), Stop> {
        if self.taken == self.avail {
            return Err(if self.can_grow {
                Stop::Incomplete
            } else {
                Stop::Never(self.avail)
            });
        }
        let idx = self.cons.wrapping_add(self.taken);
        self.taken += 1;
        Ok(((idx & SLOT_MASK) as u16, (self.get)(idx)))
    }
}

/// What [`parse_into`] found; the frame itself is left in the caller's [`RxFrame`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseOutcome {
    /// No complete chain yet: consume nothing and look again later.
    Incomplete,
    /// The caller's frame holds a frame to deliver.
    Frame,
    /// A malformed chain of `consumed` slots to skip (the frame's contents are
    /// meaningless).
    Bad {
        /// Slots to consume.
        consumed: u32,
        /// The first problem found.
        why: RxBad,
    },
}

impl From<Stop> for ParseOutcome {
    fn from(s: Stop) -> ParseOutcome {
        match s {
            Stop::Incomplete => ParseOutcome::Incomplete,
            Stop::Never(consumed) => ParseOutcome::Bad {
                consumed,
                why: RxBad::NeverCompletes,
            },
        }
    }
}

/// Parse the chain starting at ring index `cons`. `avail` responses are published
/// (`rsp_prod - rsp_cons`); `can_grow` says whether the backend can still publish more
/// (requests are outstanding beyond them). `get(idx)` copies out response `idx`.
#[inline]
pub fn parse(
    cons: RingIdx,
    avail: u32,
    can_grow: bool,
    get: impl Fn(RingIdx) -> NetifRxResponse,
) -> Parsed {
    let mut frame = RxFrame::EMPTY;
    match parse_into(&mut frame, cons, avail, can_grow, get) {
        ParseOutcome::Incomplete => Parsed::Incomplete,
        ParseOutcome::Frame => Parsed::Frame(frame),
        ParseOutcome::Bad { consumed, why } => Parsed::Bad { consumed, why },
    }
}

/// [`parse`] into a frame the caller keeps (the receive path's own slot), so a
/// frame is written once where it is used instead of being built and moved. Only
/// the fragments the chain has are written; the rest of `frame.segs` is left as it
/// was (never read: [`RxFrame::segs`] stops at `nsegs`).
#[inline]
pub fn parse_into(
    frame: &mut RxFrame,
    cons: RingIdx,
    avail: u32,
    can_grow: bool,
    get: impl Fn(RingIdx) -> NetifRxResponse,
) -> ParseOutcome {
    let mut w = Walker {
        get,
        cons,
        avail,
        can_grow,
        taken: 0,
    };
    if avail == 0 {
        return ParseOutcome::Incomplete;
    }
    frame.nsegs = 0;
    frame.len = 0;
    frame.consumed = 0;
    let mut bad: Option<RxBad> = None;
    let (slot, first) = match w.next() {
        Ok(x) => x,
        Err(stop) => return stop.into(),
    };
    frame.meta = RxMeta {
        csum_blank: first.flags & NETRXF_CSUM_BLANK != 0,
        data_validated: first.flags & NETRXF_DATA_VALIDATED != 0,
        gso: None,
        slots: 0,
    };
    if first.flags & NETRXF_GSO_PREFIX != 0 {
        bad = Some(RxBad::UnexpectedGsoPrefix);
    }
    add_data(frame, &mut bad, slot, &first);

    if first.flags & NETRXF_EXTRA_INFO != 0 {
        let mut extras = 0;
        loop {
            let (_, raw) = match w.next() {
                Ok(x) => x,
                Err(stop) => return stop.into(),
            };
            let extra = NetifExtraInfo::from_rx_slot(raw);
            extras += 1;
            if extras > RX_MAX_EXTRAS {
                bad.get_or_insert(RxBad::TooManySlots);
            }
            check_extra(frame, &mut bad, &extra);
            if !extra.has_more() {
                break;
            }
        }
    }

    let mut more = first.flags & NETRXF_MORE_DATA != 0;
    while more {
        let (slot, rsp) = match w.next() {
            Ok(x) => x,
            Err(stop) => return stop.into(),
        };
        add_data(frame, &mut bad, slot, &rsp);
        more = rsp.flags & NETRXF_MORE_DATA != 0;
    }

    if bad.is_none() && frame.len < ETH_HLEN {
        bad = Some(RxBad::Runt(frame.len));
    }
    match bad {
        Some(why) => ParseOutcome::Bad {
            consumed: w.taken,
            why,
        },
        None => {
            frame.consumed = w.taken;
            frame.meta.slots = frame.nsegs as u8;
            ParseOutcome::Frame
        }
    }
}

#[inline(always)]
fn add_data(frame: &mut RxFrame, bad: &mut Option<RxBad>, slot: u16, rsp: &NetifRxResponse) {
    if bad.is_some() {
        return;
    }
    if rsp.id != slot {
        *bad = Some(RxBad::BadId { slot, id: rsp.id });
    } else if rsp.status < 0 {
        *bad = Some(RxBad::BackendStatus(rsp.status));
    } else if usize::from(rsp.offset) + rsp.status as usize > PAGE_SIZE {
        *bad = Some(RxBad::PastPage {
            offset: rsp.offset,
            size: rsp.status,
        });
    } else if frame.nsegs == RX_MAX_SLOTS {
        *bad = Some(RxBad::TooManySlots);
    } else {
        frame.segs[frame.nsegs] = RxSeg {
            slot,
            offset: rsp.offset,
            len: rsp.status as u16,
        };
        frame.nsegs += 1;
        frame.len += rsp.status as usize;
    }
}

#[inline(always)]
fn check_extra(frame: &mut RxFrame, bad: &mut Option<RxBad>, extra: &NetifExtraInfo) {
    if extra.ty == XEN_NETIF_EXTRA_TYPE_NONE || extra.ty >= XEN_NETIF_EXTRA_TYPE_MAX {
        bad.get_or_insert(RxBad::BadExtraType(extra.ty));
    } else if extra.ty == XEN_NETIF_EXTRA_TYPE_GSO {
        let g = extra.gso();
        match GsoType::from_wire(g.ty) {
            Some(ty) if g.size != 0 => frame.meta.gso = Some(Gso { ty, size: g.size }),
            _ => {
                bad.get_or_insert(RxBad::BadGso);
            }
        }
    }
    // Multicast, hash and XDP extras carry nothing this frontend uses.
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;
    use hv::abi::netif::{
        NetifExtraGso, NETIF_RSP_DROPPED, NETIF_RSP_ERROR, XEN_NETIF_EXTRA_FLAG_MORE,
        XEN_NETIF_EXTRA_TYPE_HASH, XEN_NETIF_GSO_TYPE_TCPV6,
    };

    /// Responses laid out from ring index `start`.
    fn run(start: RingIdx, rsps: &[NetifRxResponse], can_grow: bool) -> Parsed {
        let v: Vec<NetifRxResponse> = rsps.to_vec();
        parse(start, v.len() as u32, can_grow, |idx| {
            v[idx.wrapping_sub(start) as usize]
        })
    }

    fn data(idx: RingIdx, offset: u16, size: i16, flags: u16) -> NetifRxResponse {
        NetifRxResponse {
            id: (idx & SLOT_MASK) as u16,
            offset,
            flags,
            status: size,
        }
    }

    fn gso_extra(ty: u8, size: u16, flags: u8) -> NetifRxResponse {
        NetifExtraInfo::new_gso(
            NetifExtraGso {
                size,
                ty,
                pad: 0,
                features: 0,
            },
            flags,
        )
        .to_rx_slot()
    }

    #[test]
    fn single_slot_frame_with_flags() {
        let p = run(
            7,
            &[data(7, 16, 60, NETRXF_DATA_VALIDATED | NETRXF_CSUM_BLANK)],
            true,
        );
        let Parsed::Frame(f) = p else { panic!("{p:?}") };
        assert_eq!(f.len, 60);
        assert_eq!(f.consumed, 1);
        assert_eq!(
            f.segs(),
            &[RxSeg {
                slot: 7,
                offset: 16,
                len: 60
            }]
        );
        assert!(f.meta.csum_blank && f.meta.data_validated && f.meta.gso.is_none());
        assert_eq!(f.meta.slots, 1);
    }

    #[test]
    fn gso_frame_across_the_ring_wrap_with_extra_after_first() {
        // 65549 bytes (64 KiB + Ethernet header): 17 data slots + 1 extra, starting
        // at index 250 so slots wrap from 255 to 0, and the free-running index wraps.
        let start = u32::MAX - 5;
        let total = 65549usize;
        let mut v = Vec::new();
        let nslots = total.div_ceil(4096);
        let mut idx = start;
        for i in 0..nslots {
            let size = (total - i * 4096).min(4096) as i16;
            let mut flags = if i + 1 < nslots { NETRXF_MORE_DATA } else { 0 };
            if i == 0 {
                flags |= NETRXF_EXTRA_INFO | NETRXF_CSUM_BLANK | NETRXF_DATA_VALIDATED;
            }
            v.push(data(idx, 0, size, flags));
            idx = idx.wrapping_add(1);
            if i == 0 {
                v.push(gso_extra(XEN_NETIF_GSO_TYPE_TCPV6, 1440, 0));
                idx = idx.wrapping_add(1);
            }
        }
        let p = run(start, &v, true);
        let Parsed::Frame(f) = p else { panic!("{p:?}") };
        assert_eq!(f.len, total);
        assert_eq!(f.consumed as usize, nslots + 1);
        assert_eq!(f.segs().len(), nslots);
        assert_eq!(
            f.meta.gso,
            Some(Gso {
                ty: GsoType::TcpV6,
                size: 1440
            })
        );
        // The extra's slot is skipped: data slot 1 is two ring slots after slot 0.
        assert_eq!(f.segs()[0].slot, (start & SLOT_MASK) as u16);
        assert_eq!(f.segs()[1].slot, (start.wrapping_add(2) & SLOT_MASK) as u16);
        // Incomplete chains wait, whatever point they are cut at.
        for cut in 1..v.len() {
            assert_eq!(run(start, &v[..cut], true), Parsed::Incomplete, "cut {cut}");
        }
    }

    #[test]
    fn incomplete_chain_that_cannot_grow_is_consumed_as_bad() {
        let v = [data(0, 0, 4096, NETRXF_MORE_DATA)];
        assert_eq!(run(0, &v, true), Parsed::Incomplete);
        assert_eq!(
            run(0, &v, false),
            Parsed::Bad {
                consumed: 1,
                why: RxBad::NeverCompletes
            }
        );
        assert_eq!(run(0, &[], true), Parsed::Incomplete);
    }

    #[test]
    fn malformed_chains_are_rejected_whole() {
        // Wrong id in the second slot: the whole 3-slot chain goes.
        let mut bad_id = data(11, 0, 100, 0);
        bad_id.id = 3;
        let v = [
            data(10, 0, 4096, NETRXF_MORE_DATA),
            NetifRxResponse {
                flags: NETRXF_MORE_DATA,
                ..bad_id
            },
            data(12, 0, 10, 0),
        ];
        assert_eq!(
            run(10, &v, true),
            Parsed::Bad {
                consumed: 3,
                why: RxBad::BadId { slot: 11, id: 3 }
            }
        );
        // Offset + size past the page.
        assert_eq!(
            run(0, &[data(0, 4000, 200, 0)], true),
            Parsed::Bad {
                consumed: 1,
                why: RxBad::PastPage {
                    offset: 4000,
                    size: 200
                }
            }
        );
        // Backend-reported errors are drops.
        for st in [NETIF_RSP_ERROR, NETIF_RSP_DROPPED, i16::MIN] {
            let p = run(0, &[data(0, 0, st, 0)], true);
            assert_eq!(
                p,
                Parsed::Bad {
                    consumed: 1,
                    why: RxBad::BackendStatus(st)
                }
            );
        }
        // Runt.
        assert_eq!(
            run(0, &[data(0, 0, 13, 0)], true),
            Parsed::Bad {
                consumed: 1,
                why: RxBad::Runt(13)
            }
        );
        // Bad GSO type / size, bad extra type.
        for (e, why) in [
            (gso_extra(9, 1000, 0), RxBad::BadGso),
            (gso_extra(XEN_NETIF_GSO_TYPE_TCPV6, 0, 0), RxBad::BadGso),
            (
                NetifExtraInfo {
                    ty: XEN_NETIF_EXTRA_TYPE_NONE,
                    ..Default::default()
                }
                .to_rx_slot(),
                RxBad::BadExtraType(0),
            ),
            (
                NetifExtraInfo {
                    ty: 200,
                    ..Default::default()
                }
                .to_rx_slot(),
                RxBad::BadExtraType(200),
            ),
        ] {
            let v = [data(0, 0, 100, NETRXF_EXTRA_INFO), e];
            assert_eq!(run(0, &v, true), Parsed::Bad { consumed: 2, why });
        }
        // Gso prefix is never negotiated.
        assert_eq!(
            run(0, &[data(0, 0, 100, NETRXF_GSO_PREFIX)], true),
            Parsed::Bad {
                consumed: 1,
                why: RxBad::UnexpectedGsoPrefix
            }
        );
    }

    #[test]
    fn too_many_slots_and_endless_extras_are_bounded() {
        // 19 data slots of 100 bytes: one more than allowed.
        let v: Vec<_> = (0..19u32)
            .map(|i| data(i, 0, 100, if i < 18 { NETRXF_MORE_DATA } else { 0 }))
            .collect();
        assert_eq!(
            run(0, &v, true),
            Parsed::Bad {
                consumed: 19,
                why: RxBad::TooManySlots
            }
        );
        // Extras chained with FLAG_MORE beyond the limit, ended by one without it.
        let mut v = alloc::vec![data(0, 0, 100, NETRXF_EXTRA_INFO)];
        for i in 0..8 {
            let flags = if i < 7 { XEN_NETIF_EXTRA_FLAG_MORE } else { 0 };
            v.push(
                NetifExtraInfo {
                    ty: XEN_NETIF_EXTRA_TYPE_HASH,
                    flags,
                    u: [0; 6],
                }
                .to_rx_slot(),
            );
        }
        assert_eq!(
            run(0, &v, true),
            Parsed::Bad {
                consumed: 9,
                why: RxBad::TooManySlots
            }
        );
        // A full ring of more_data that can never end.
        let v: Vec<_> = (0..256u32)
            .map(|i| data(i, 0, 100, NETRXF_MORE_DATA))
            .collect();
        assert_eq!(
            run(0, &v, false),
            Parsed::Bad {
                consumed: 256,
                why: RxBad::NeverCompletes
            }
        );
    }

    #[test]
    fn arbitrary_responses_never_panic_and_stay_in_bounds() {
        // A cheap xorshift over many random response sets.
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        for _ in 0..20_000 {
            let n = (rnd() % 24) as usize;
            let start = rnd() as u32;
            let v: Vec<_> = (0..n)
                .map(|_| NetifRxResponse::from_bytes(rnd().to_ne_bytes()))
                .collect();
            match run(start, &v, rnd() % 2 == 0) {
                Parsed::Incomplete => {}
                Parsed::Bad { consumed, .. } => assert!(consumed as usize <= n && consumed > 0),
                Parsed::Frame(f) => {
                    assert!(f.consumed as usize <= n);
                    let sum: usize = f.segs().iter().map(|s| s.len as usize).sum();
                    assert_eq!(sum, f.len);
                    for seg in f.segs() {
                        assert!(seg.offset as usize + seg.len as usize <= PAGE_SIZE);
                        assert!((seg.slot as u32) < NET_RX_RING_SIZE);
                    }
                }
            }
        }
    }
}
