//! Frames as netback hands them to a port and takes them from one: the bytes of an
//! Ethernet frame plus the offload metadata the netif protocol carries beside it
//! (`NETTXF_csum_blank` / `NETTXF_data_validated`, the GSO extra), so a TAP port can
//! turn it into a `virtio_net_hdr` without looking at the packet.

use std::sync::Arc;

/// `ETH_HLEN`: the shortest frame netback accepts from a guest (an Ethernet header).
pub const ETH_HLEN: usize = 14;

/// The largest frame that fits a netif packet (`XEN_NETIF_MAX_TX_SIZE`, the first
/// slot's `size` is a `u16`).
pub const MAX_FRAME_LEN: usize = hv::abi::netif::XEN_NETIF_MAX_TX_SIZE;

/// Segmentation offload kind (`XEN_NETIF_GSO_TYPE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GsoType {
    /// `XEN_NETIF_GSO_TYPE_TCPV4`
    TcpV4,
    /// `XEN_NETIF_GSO_TYPE_TCPV6`
    TcpV6,
}

impl GsoType {
    /// The `XEN_NETIF_GSO_TYPE_*` value.
    pub fn to_xen(self) -> u8 {
        match self {
            GsoType::TcpV4 => hv::abi::netif::XEN_NETIF_GSO_TYPE_TCPV4,
            GsoType::TcpV6 => hv::abi::netif::XEN_NETIF_GSO_TYPE_TCPV6,
        }
    }

    /// From a `XEN_NETIF_GSO_TYPE_*` value; `None` for `NONE` and unknown types.
    pub fn from_xen(ty: u8) -> Option<Self> {
        match ty {
            hv::abi::netif::XEN_NETIF_GSO_TYPE_TCPV4 => Some(GsoType::TcpV4),
            hv::abi::netif::XEN_NETIF_GSO_TYPE_TCPV6 => Some(GsoType::TcpV6),
            _ => None,
        }
    }
}

/// A GSO super-frame's segmentation request (`netif_extra_info.u.gso`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Gso {
    pub ty: GsoType,
    /// `gso_size`: the MSS, never 0.
    pub size: u16,
}

/// Offload metadata travelling with a frame.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct OffloadMeta {
    /// The L4 checksum is blank (partial): whoever transmits must fill it
    /// (`NETTXF_csum_blank` / `NETRXF_csum_blank`, `CHECKSUM_PARTIAL`).
    pub csum_blank: bool,
    /// The checksum is known good (`NETTXF_data_validated` / `NETRXF_data_validated`,
    /// `CHECKSUM_UNNECESSARY`).
    pub data_validated: bool,
    /// Segmentation offload, if this is a GSO super-frame.
    pub gso: Option<Gso>,
}

/// A borrowed frame: valid for one call into a port.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    pub data: &'a [u8],
    pub meta: OffloadMeta,
}

/// Where one frame of a [`FrameBatch`] lies in the batch's buffer.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct FrameDesc {
    pub off: usize,
    pub len: usize,
    pub meta: OffloadMeta,
}

/// The frames of one guest TX batch, all in netback's own preallocated buffer: the
/// port reads them during [`crate::port::Port::transmit`] and copies what it keeps.
pub struct FrameBatch<'a> {
    pub(crate) buf: &'a [u8],
    pub(crate) descs: &'a [FrameDesc],
}

impl<'a> FrameBatch<'a> {
    /// Number of frames.
    pub fn len(&self) -> usize {
        self.descs.len()
    }

    /// No frames.
    pub fn is_empty(&self) -> bool {
        self.descs.is_empty()
    }

    /// Frame `i`, if it exists.
    pub fn get(&self, i: usize) -> Option<Frame<'a>> {
        let d = self.descs.get(i)?;
        let data = self.buf.get(d.off..d.off.checked_add(d.len)?)?;
        Some(Frame { data, meta: d.meta })
    }

    /// The frames in order.
    pub fn iter(&self) -> impl Iterator<Item = Frame<'a>> + '_ {
        (0..self.descs.len()).filter_map(move |i| self.get(i))
    }

    /// Total payload bytes.
    pub fn bytes(&self) -> u64 {
        self.descs.iter().map(|d| d.len as u64).sum()
    }
}

/// A frame owned by netback on its way to a guest: either a recycled buffer that holds
/// a copy, or a shared immutable buffer (a generator's template, sent without copying).
#[derive(Debug, Default)]
pub struct OwnedFrame {
    buf: Vec<u8>,
    shared: Option<Arc<[u8]>>,
    len: usize,
    pub meta: OffloadMeta,
}

impl OwnedFrame {
    /// A frame that shares `data` (no copy).
    pub fn shared(data: Arc<[u8]>, meta: OffloadMeta) -> Self {
        let len = data.len();
        Self {
            buf: Vec::new(),
            shared: Some(data),
            len,
            meta,
        }
    }

    /// Overwrite this (recycled) frame with a copy of `data`. The buffer only grows,
    /// so after warm-up no copy allocates.
    pub fn set_copy(&mut self, data: &[u8], meta: OffloadMeta) {
        self.shared = None;
        // The Vec's length only grows (the frame is its first `len` bytes), so a buffer
        // handed on by `exchange_buffer` never needs zero-filling again.
        if self.buf.len() < data.len() {
            self.buf.resize(data.len(), 0);
        }
        self.buf[..data.len()].copy_from_slice(data);
        self.len = data.len();
        self.meta = meta;
    }

    /// Make this (recycled) frame hold the first `len` bytes of `*buf` without copying:
    /// the two buffers are exchanged, so `*buf` comes back holding this frame's old
    /// allocation for the caller to reuse. False (nothing exchanged) if `len` exceeds
    /// `buf`.
    pub fn exchange_buffer(&mut self, buf: &mut Vec<u8>, len: usize, meta: OffloadMeta) -> bool {
        if len > buf.len() {
            return false;
        }
        self.shared = None;
        std::mem::swap(&mut self.buf, buf);
        self.len = len;
        self.meta = meta;
        true
    }

    /// The frame's bytes.
    pub fn data(&self) -> &[u8] {
        match &self.shared {
            Some(s) => s,
            None => self.buf.get(..self.len).unwrap_or(&[]),
        }
    }

    /// The frame's bytes, mutable (copies a shared frame first).
    pub fn data_mut(&mut self) -> &mut [u8] {
        if let Some(s) = self.shared.take() {
            if self.buf.len() < s.len() {
                self.buf.resize(s.len(), 0);
            }
            self.buf[..s.len()].copy_from_slice(&s);
            self.len = s.len();
        }
        let len = self.len.min(self.buf.len());
        &mut self.buf[..len]
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Zero length.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Drop a shared buffer before recycling (keeps the owned allocation).
    pub(crate) fn release_shared(&mut self) {
        self.shared = None;
        self.len = 0;
    }

    /// As a borrowed [`Frame`].
    pub fn as_frame(&self) -> Frame<'_> {
        Frame {
            data: self.data(),
            meta: self.meta,
        }
    }
}
