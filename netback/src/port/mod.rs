//! Where netback delivers a guest's frames and where frames for a guest come from.
//!
//! A [`Port`] is told when a vif connects and disconnects (with a [`VifLink`] it can
//! use to send frames into that guest), receives every TX batch a guest sends, and may
//! act as a generator that fills a guest's RX buffers as fast as the guest posts them.
//! The in-process ports live here: [`Sink`], [`Reflector`], [`Switch`], [`Source`];
//! the TAP port builds on the same trait.

mod reflector;
mod sink;
mod source;
mod switch;
pub mod tap;

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use hv::env::DomId;

use crate::counters::VifCounters;
use crate::frame::{Frame, FrameBatch, OffloadMeta, OwnedFrame};
use crate::frontend::FrontFeatures;
use crate::inbound::Inbound;

pub use reflector::Reflector;
pub use sink::Sink;
pub use source::Source;
pub use switch::Switch;
pub use tap::{OffloadPolicy, TapPort, TapPortConfig, TapVifStats};

/// A vif: the guest's domid and the device index (`vif<domid>.<devid>` in Linux).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VifId {
    pub domid: DomId,
    pub devid: u32,
}

impl fmt::Display for VifId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "vif{}.{}", self.domid, self.devid)
    }
}

/// A connected vif as a port sees it: its identity and a way to queue frames for the
/// guest. Frames are copied into the queue's recycled buffers; a full queue drops
/// (counted in the vif's `rx_drops`).
pub struct VifLink {
    id: VifId,
    mac: [u8; 6],
    queues: Vec<Arc<Inbound>>,
    counters: Arc<VifCounters>,
    features: FrontFeatures,
}

impl VifLink {
    pub(crate) fn new(
        id: VifId,
        mac: [u8; 6],
        queues: Vec<Arc<Inbound>>,
        counters: Arc<VifCounters>,
    ) -> Self {
        Self {
            id,
            mac,
            queues,
            counters,
            features: FrontFeatures::default(),
        }
    }

    /// Record the features the frontend negotiated (set once, at connect).
    pub(crate) fn with_features(mut self, features: FrontFeatures) -> Self {
        self.features = features;
        self
    }

    /// The frontend's `feature-*` keys of this connection: which offloads the guest
    /// takes, so a port can hand it only frames it can use.
    pub fn features(&self) -> FrontFeatures {
        self.features
    }

    /// Which vif.
    pub fn id(&self) -> VifId {
        self.id
    }

    /// The guest's MAC address (the backend's `mac` key).
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Number of queues.
    pub fn num_queues(&self) -> usize {
        self.queues.len()
    }

    /// The vif's counters.
    pub fn counters(&self) -> &VifCounters {
        &self.counters
    }

    /// Frames waiting for the guest, all queues.
    pub fn pending(&self) -> usize {
        self.queues.iter().map(|q| q.len()).sum()
    }

    fn queue_for(&self, data: &[u8]) -> Option<&Arc<Inbound>> {
        match self.queues.len() {
            0 => None,
            1 => self.queues.first(),
            n => self.queues.get(flow_hash(data) as usize % n),
        }
    }

    /// Queue one frame for the guest; false if it was dropped.
    pub fn send(&self, frame: Frame<'_>) -> bool {
        self.send_with(frame, |_| {})
    }

    /// Queue a copy of `frame` after `fixup` edits the copy.
    pub fn send_with(&self, frame: Frame<'_>, fixup: impl FnMut(&mut [u8])) -> bool {
        match self.queue_for(frame.data) {
            Some(q) => q.push_batch([frame], fixup) == 1,
            None => false,
        }
    }

    /// Queue copies of many frames (one lock per batch on a single-queue vif).
    pub fn send_batch<'a>(
        &self,
        frames: impl IntoIterator<Item = Frame<'a>>,
        mut fixup: impl FnMut(&mut [u8]),
    ) -> usize {
        if self.queues.len() == 1 {
            return self.queues[0].push_batch(frames, fixup);
        }
        frames
            .into_iter()
            .filter(|f| self.send_with(*f, &mut fixup))
            .count()
    }

    /// Frames waiting for the guest on queue `queue` (0 if there is no such queue).
    pub fn queue_len(&self, queue: usize) -> usize {
        self.queues.get(queue).map_or(0, |q| q.len())
    }

    /// Queue copies of many frames on one given queue (e.g. the TAP queue they were
    /// read from, which the kernel already chose per flow). Returns how many were
    /// queued; the rest are dropped and counted in the vif's `rx_drops`.
    pub fn send_batch_on<'a>(
        &self,
        queue: usize,
        frames: impl IntoIterator<Item = Frame<'a>>,
        fixup: impl FnMut(&mut [u8]),
    ) -> usize {
        match self.queues.get(queue).or(self.queues.first()) {
            Some(q) => q.push_batch(frames, fixup),
            None => 0,
        }
    }

    /// Queue `count` frames on queue `queue` by exchanging buffers instead of copying
    /// (see [`crate::inbound::Inbound::push_exchanging`]). Returns how many were queued.
    pub fn send_exchanging_on(
        &self,
        queue: usize,
        count: usize,
        fill: impl FnMut(usize, &mut OwnedFrame) -> bool,
    ) -> usize {
        match self.queues.get(queue).or(self.queues.first()) {
            Some(q) => q.push_exchanging(count, fill),
            None => 0,
        }
    }

    /// Queue a shared frame without copying it.
    pub fn send_shared(&self, data: Arc<[u8]>, meta: OffloadMeta) -> bool {
        match self.queue_for(&data) {
            Some(q) => q.push_owned(OwnedFrame::shared(data, meta)),
            None => false,
        }
    }
}

impl fmt::Debug for VifLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VifLink")
            .field("id", &self.id)
            .field("queues", &self.queues.len())
            .finish()
    }
}

/// A flow hash over the addresses and ports of IPv4/IPv6 TCP/UDP frames (0 for
/// anything else), so one flow always uses one queue and stays in order.
fn flow_hash(d: &[u8]) -> u32 {
    let ethertype = match d.get(12..14) {
        Some(t) => u16::from_be_bytes([t[0], t[1]]),
        None => return 0,
    };
    let (addrs, l4) = match ethertype {
        0x0800 => {
            let ihl = d.get(14).map_or(20, |b| usize::from(b & 0x0f) * 4);
            (d.get(26..34), d.get(14 + ihl..14 + ihl + 4))
        }
        0x86dd => (d.get(22..54), d.get(54..58)),
        _ => return 0,
    };
    // FNV-1a: cheap and good enough to spread flows.
    let mut h: u32 = 0x811c_9dc5;
    for b in addrs.into_iter().chain(l4).flatten() {
        h = (h ^ u32::from(*b)).wrapping_mul(0x0100_0193);
    }
    h
}

/// Room a generator may fill during one RX pass.
pub struct RxEmitter<'a> {
    out: &'a mut VecDeque<OwnedFrame>,
    budget: usize,
}

impl<'a> RxEmitter<'a> {
    pub(crate) fn new(out: &'a mut VecDeque<OwnedFrame>, budget: usize) -> Self {
        Self { out, budget }
    }

    /// Frames that may still be emitted in this pass.
    pub fn budget(&self) -> usize {
        self.budget
    }

    /// Emit a shared frame (no copy). False once the budget is used up.
    #[inline]
    pub fn push_shared(&mut self, data: Arc<[u8]>, meta: OffloadMeta) -> bool {
        if self.budget == 0 || data.is_empty() || data.len() > crate::frame::MAX_FRAME_LEN {
            return false;
        }
        self.out.push_back(OwnedFrame::shared(data, meta));
        self.budget -= 1;
        true
    }
}

/// A backend port.
pub trait Port: Send + Sync + 'static {
    /// A vif finished connecting; `vif` stays valid until [`Port::vif_disconnected`].
    fn vif_connected(&self, _vif: &Arc<VifLink>) {}

    /// A vif is going away (its queues stop accepting frames).
    fn vif_disconnected(&self, _vif: VifId) {}

    /// A batch of frames the guest behind `from` sent on queue `queue`. The frames
    /// live in netback's buffers only for the call: copy what you keep.
    fn transmit(&self, from: &Arc<VifLink>, queue: u16, frames: &FrameBatch<'_>);

    /// Whether [`Port::generate`] produces frames (then a guest's RX ring is filled
    /// whenever it has buffers posted).
    fn generates(&self) -> bool {
        false
    }

    /// Fill `out` with frames for queue `queue` of `to`. Called from that queue's RX
    /// thread when the guest has buffers and nothing else is waiting.
    fn generate(&self, _to: &VifLink, _queue: u16, _out: &mut RxEmitter<'_>) {}

    /// A source of frames for queue `queue` of `vif` that the queue's RX thread reads
    /// itself whenever it has nothing left to deliver (e.g. a TAP queue), instead of
    /// a thread of the port's pushing frames into the inbound queue. Asked once, when
    /// the queue's RX thread starts (after [`Port::vif_connected`]). `None` (the
    /// default): frames arrive through the inbound queue only.
    fn rx_source(&self, _vif: &Arc<VifLink>, _queue: u16) -> Option<Box<dyn RxSource>> {
        None
    }
}

/// Frames a queue's RX thread pulls itself ([`Port::rx_source`]).
pub trait RxSource: Send {
    /// Read what is ready, without blocking, and queue it on the vif queue's inbound
    /// queue (e.g. with [`VifLink::send_exchanging_on`]). Returns the frames read (0:
    /// nothing was ready).
    fn pull(&mut self) -> usize;

    /// Sleep until frames may be ready, at most `timeout` (the RX thread looks at its
    /// stop flag in between). True if readiness ended the sleep, false on timeout (the
    /// RX thread polls the source longer or shorter accordingly).
    fn wait(&mut self, timeout: std::time::Duration) -> bool;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_hash_stable_per_flow() {
        let mut a = vec![0u8; 64];
        a[12] = 0x08;
        a[14] = 0x45;
        a[26..34].copy_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
        a[34..38].copy_from_slice(&[0, 80, 4, 0]);
        let mut b = a.clone();
        b[18] = 77; // IP id differs: same flow
        assert_eq!(flow_hash(&a), flow_hash(&b));
        b[37] = 1; // port differs
        assert_ne!(flow_hash(&a), flow_hash(&b));
        assert_eq!(flow_hash(&[0u8; 5]), 0);
    }
}
