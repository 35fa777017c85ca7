//! How one frame is laid out on the TX ring (`xennet_start_xmit` /
//! `xennet_make_txreqs` in Linux), as pure functions so the layout can be tested
//! without a ring.
//!
//! A frame of `len` bytes occupies `ceil(len / 4096)` data slots, each naming a
//! pre-granted page and an offset in it (0 for whole pages; a small frame may sit
//! behind others in a shared page, see [`crate::txpool`]). The first slot's `size` is the whole frame
//! (`netif.h`: the backend derives the first fragment as what the others leave), the
//! later slots carry their own fragment size, and all but the last have
//! `NETTXF_more_data`. A GSO frame puts an extra-info slot right after the first
//! slot and flags the first with `NETTXF_extra_info`. The extra slot has no id and
//! no page; the backend answers it with `NETIF_RSP_NULL`.

use hv::abi::netif::{
    NetifExtraGso, NetifExtraInfo, NetifTxRequest, NETTXF_CSUM_BLANK, NETTXF_DATA_VALIDATED,
    NETTXF_EXTRA_INFO, NETTXF_MORE_DATA, XEN_NETIF_MAX_TX_SIZE, XEN_NETIF_NR_SLOTS_MIN,
};

use crate::error::TxError;
use crate::meta::{GsoType, TxMeta};
use crate::{ETH_HLEN, PAGE_SIZE};

/// The most data slots one frame may use: `XEN_NETIF_NR_SLOTS_MIN`, which every backend
/// accepts without negotiation (a 64 KiB frame needs 16).
pub const TX_MAX_DATA_SLOTS: usize = XEN_NETIF_NR_SLOTS_MIN;

/// What the backend agreed to do for TX frames (negotiated `feature-*` keys, further
/// limited by the frontend's configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TxCaps {
    /// `feature-sg`: frames may span several slots.
    pub sg: bool,
    /// `feature-gso-tcpv4`
    pub gso_tcpv4: bool,
    /// `feature-gso-tcpv6`
    pub gso_tcpv6: bool,
    /// Blank TCP/UDP-over-IPv4 checksums are completed by the backend (netback always
    /// can, unless the frontend wrote `feature-no-csum-offload`).
    pub csum_ipv4: bool,
    /// `feature-ipv6-csum-offload`: the same for IPv6.
    pub csum_ipv6: bool,
}

impl TxCaps {
    /// The largest frame a queue with these caps may send.
    pub fn max_frame_len(&self) -> usize {
        if self.sg {
            XEN_NETIF_MAX_TX_SIZE
        } else {
            PAGE_SIZE
        }
    }
}

/// The slot layout of one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxPlan {
    /// Frame length.
    pub len: usize,
    /// Data slots (one page each).
    pub data_slots: usize,
    /// The GSO extra, if any (occupies the ring slot after the first).
    pub extra: Option<NetifExtraInfo>,
}

impl TxPlan {
    /// Ring slots the frame occupies (data slots plus the extra).
    #[inline(always)]
    pub fn ring_slots(&self) -> usize {
        self.data_slots + usize::from(self.extra.is_some())
    }

    /// Bytes of the frame in data slot `i`.
    #[inline(always)]
    pub fn seg_len(&self, i: usize) -> usize {
        let start = i * PAGE_SIZE;
        self.len.saturating_sub(start).min(PAGE_SIZE)
    }
}

/// Lay out a frame of `len` bytes with offload requests `meta`, or say why it cannot be
/// sent. Checksum handling depends on the frame's bytes and is decided later
/// ([`first_flags`]).
#[inline]
pub fn plan(len: usize, meta: &TxMeta, caps: &TxCaps) -> Result<TxPlan, TxError> {
    if len < ETH_HLEN {
        return Err(TxError::TooShort(len));
    }
    let max = caps.max_frame_len();
    if len > max {
        return Err(TxError::TooLong { len, max });
    }
    let data_slots = len.div_ceil(PAGE_SIZE);
    // 65535 / 4096 rounds up to 16 slots, within TX_MAX_DATA_SLOTS.
    debug_assert!(data_slots <= TX_MAX_DATA_SLOTS);
    let extra = match meta.gso {
        None => None,
        Some(gso) => {
            let allowed = match gso.ty {
                GsoType::TcpV4 => caps.gso_tcpv4,
                GsoType::TcpV6 => caps.gso_tcpv6,
            };
            if !allowed {
                return Err(TxError::GsoUnsupported);
            }
            if gso.size == 0 {
                return Err(TxError::GsoSizeZero);
            }
            Some(NetifExtraInfo::new_gso(
                NetifExtraGso {
                    size: gso.size,
                    ty: gso.ty.to_wire(),
                    pad: 0,
                    features: 0,
                },
                0,
            ))
        }
    };
    Ok(TxPlan {
        len,
        data_slots,
        extra,
    })
}

/// `NETTXF_*` flags of the first slot. `csum_offloaded` says the backend completes a
/// blank checksum (as Linux netfront, a blank checksum is also flagged data_validated).
#[inline(always)]
pub fn first_flags(plan: &TxPlan, meta: &TxMeta, csum_offloaded: bool) -> u16 {
    let mut f = 0;
    if csum_offloaded || plan.extra.is_some() {
        f |= NETTXF_CSUM_BLANK | NETTXF_DATA_VALIDATED;
    } else if meta.data_validated {
        f |= NETTXF_DATA_VALIDATED;
    }
    if plan.extra.is_some() {
        f |= NETTXF_EXTRA_INFO;
    }
    if plan.data_slots > 1 {
        f |= NETTXF_MORE_DATA;
    }
    f
}

/// Emit the frame's requests in ring order. `slot(i)` names data slot `i`'s request id,
/// grant reference and offset in the granted page.
#[inline(always)]
pub fn requests(
    plan: &TxPlan,
    first_flags: u16,
    mut slot: impl FnMut(usize) -> (u16, u32, u16),
    mut out: impl FnMut(NetifTxRequest),
) {
    for i in 0..plan.data_slots {
        let (id, gref, offset) = slot(i);
        let last = i + 1 == plan.data_slots;
        let (flags, size) = if i == 0 {
            (first_flags, plan.len)
        } else {
            (if last { 0 } else { NETTXF_MORE_DATA }, plan.seg_len(i))
        };
        out(NetifTxRequest {
            gref,
            offset,
            flags,
            id,
            // len <= XEN_NETIF_MAX_TX_SIZE (0xFFFF), checked by plan().
            size: size as u16,
        });
        if i == 0 {
            if let Some(extra) = plan.extra {
                out(extra.to_tx_slot());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::Gso;
    use alloc::vec::Vec;
    use hv::abi::netif::{XEN_NETIF_EXTRA_TYPE_GSO, XEN_NETIF_GSO_TYPE_TCPV4};

    const ALL: TxCaps = TxCaps {
        sg: true,
        gso_tcpv4: true,
        gso_tcpv6: true,
        csum_ipv4: true,
        csum_ipv6: true,
    };

    fn layout(len: usize, meta: TxMeta) -> Vec<NetifTxRequest> {
        let p = plan(len, &meta, &ALL).unwrap();
        let f = first_flags(&p, &meta, meta.csum_blank);
        let mut v = Vec::new();
        requests(
            &p,
            f,
            |i| (100 + i as u16, 1000 + i as u32, 0),
            |r| v.push(r),
        );
        assert_eq!(v.len(), p.ring_slots());
        v
    }

    #[test]
    fn gso_64k_frame_uses_16_data_slots_and_one_extra() {
        let meta = TxMeta {
            csum_blank: true,
            data_validated: false,
            gso: Some(Gso {
                ty: GsoType::TcpV4,
                size: 1448,
            }),
        };
        let v = layout(65535, meta);
        assert_eq!(v.len(), 17);
        // First slot: whole-packet size, csum + extra + more_data.
        assert_eq!(v[0].size, 65535);
        assert_eq!(
            v[0].flags,
            NETTXF_CSUM_BLANK | NETTXF_DATA_VALIDATED | NETTXF_EXTRA_INFO | NETTXF_MORE_DATA
        );
        assert_eq!((v[0].id, v[0].gref, v[0].offset), (100, 1000, 0));
        // Second slot: the GSO extra.
        let e = NetifExtraInfo::from_tx_slot(v[1]);
        assert_eq!(e.ty, XEN_NETIF_EXTRA_TYPE_GSO);
        assert_eq!(e.flags, 0);
        assert_eq!(e.gso().size, 1448);
        assert_eq!(e.gso().ty, XEN_NETIF_GSO_TYPE_TCPV4);
        // Data slots 1..16: 4096 bytes each except the last, more_data except the last.
        for (k, r) in v[2..].iter().enumerate() {
            let i = k + 1;
            assert_eq!(r.id, 100 + i as u16);
            assert_eq!(r.gref, 1000 + i as u32);
            let last = i == 15;
            assert_eq!(r.size as usize, if last { 65535 - 15 * 4096 } else { 4096 });
            assert_eq!(r.flags, if last { 0 } else { NETTXF_MORE_DATA });
        }
        // Fragment sizes after the first plus the first page add up to the packet.
        let rest: usize = v[2..].iter().map(|r| r.size as usize).sum();
        assert_eq!(rest + 4096, 65535);
    }

    #[test]
    fn small_frames_use_one_slot_and_page_boundaries_are_exact() {
        let v = layout(64, TxMeta::default());
        assert_eq!(v.len(), 1);
        assert_eq!((v[0].size, v[0].flags), (64, 0));
        assert_eq!(layout(4096, TxMeta::default()).len(), 1);
        let v = layout(4097, TxMeta::default());
        assert_eq!(v.len(), 2);
        assert_eq!((v[0].size, v[0].flags), (4097, NETTXF_MORE_DATA));
        assert_eq!((v[1].size, v[1].flags), (1, 0));
        let v = layout(
            100,
            TxMeta {
                data_validated: true,
                ..TxMeta::default()
            },
        );
        assert_eq!(v[0].flags, NETTXF_DATA_VALIDATED);
    }

    #[test]
    fn refuses_what_the_backend_would_reject() {
        let m = TxMeta::default();
        assert_eq!(plan(13, &m, &ALL), Err(TxError::TooShort(13)));
        assert_eq!(
            plan(65536, &m, &ALL),
            Err(TxError::TooLong {
                len: 65536,
                max: 65535
            })
        );
        let no_sg = TxCaps { sg: false, ..ALL };
        assert!(plan(4096, &m, &no_sg).is_ok());
        assert_eq!(
            plan(4097, &m, &no_sg),
            Err(TxError::TooLong {
                len: 4097,
                max: 4096
            })
        );
        let gso6 = TxMeta {
            gso: Some(Gso {
                ty: GsoType::TcpV6,
                size: 1440,
            }),
            ..m
        };
        let no_v6 = TxCaps {
            gso_tcpv6: false,
            ..ALL
        };
        assert_eq!(plan(9000, &gso6, &no_v6), Err(TxError::GsoUnsupported));
        let zero = TxMeta {
            gso: Some(Gso {
                ty: GsoType::TcpV4,
                size: 0,
            }),
            ..m
        };
        assert_eq!(plan(9000, &zero, &ALL), Err(TxError::GsoSizeZero));
    }
}
