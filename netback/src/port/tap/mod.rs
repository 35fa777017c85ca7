//! [`TapPort`]: every vif bridged to the host through its own Linux TAP, as Xen's
//! `vif-bridge` hotplug script does with xen-netback's `vif<domid>.<devid>` netdev.
//!
//! When a vif connects, the port creates the TAP `vif<domid>.<devid>` with
//! `IFF_VNET_HDR` and one queue (fd) per vif queue (`IFF_MULTI_QUEUE` for more than
//! one), enables the offloads the guest can receive (`TUNSETOFFLOAD`, see
//! [`policy`]), sets its MAC and MTU, brings it up and optionally enslaves it to a
//! bridge. When the vif disconnects, the TAP is removed (detached from the bridge, fds
//! closed). A reconnect creates it again with the new connection's features.
//!
//! Guest → host ([`tx`]): each TX batch is written to the TAP queue of the vif queue
//! it came from, in netback's TX thread. Host → guest ([`rx`]): netback's RX thread of
//! each vif queue reads its TAP queue itself, sleeping in `epoll_wait` while it is
//! empty ([`crate::port::Port::rx_source`]), or, with
//! [`TapPortConfig::reader_threads`], one epoll-driven thread per TAP queue reads and
//! hands frames over. Both directions can be captured to a pcap file
//! ([`TapPort::set_capture`]).

mod coalesce;
pub mod policy;
mod rx;
mod tx;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::frame::FrameBatch;
use crate::pcap::PcapWriter;
use crate::port::{Port, RxSource, VifId, VifLink};
use crate::tap::{Offloads, QueueStats, Tap, TapBuilder, TapError};

use policy::GuestRxCaps;

/// How often, and how long between tries, a TAP whose name is still held by a just
/// removed device is created again (the kernel releases the name shortly after the
/// last fd closes).
const CREATE_RETRIES: u32 = 50;
const CREATE_RETRY_WAIT: Duration = Duration::from_millis(20);

/// Which offloads a TAP's reader (netback) accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OffloadPolicy {
    /// From the guest's features ([`GuestRxCaps::tun_offloads`]): the kernel hands over
    /// only what the guest can take. The default.
    #[default]
    Negotiated,
    /// Exactly these, whatever the guest negotiated; netback finishes in software what
    /// the guest cannot take (checksums, segmentation).
    Fixed(Offloads),
}

/// How the TAP port sets up each vif's TAP.
#[derive(Debug, Clone)]
pub struct TapPortConfig {
    /// Linux bridge to enslave every TAP to (must exist), like `vif-bridge`'s `bridge=`.
    pub bridge: Option<String>,
    /// Name TAPs `<prefix><domid>.<devid>` instead of Xen's `vif<domid>.<devid>`
    /// (`hv serve --tap-prefix`); the name must still fit `IFNAMSIZ`.
    pub name_prefix: Option<String>,
    /// MTU of the TAPs (`None`: the kernel's default, 1500).
    pub mtu: Option<u32>,
    /// Create the TAPs in this network namespace (e.g. `/run/netns/NAME`) instead of
    /// the caller's.
    pub netns: Option<PathBuf>,
    /// Offloads accepted from the kernel.
    pub offloads: OffloadPolicy,
    /// Frames read per batch (each buffer holds a 64 KiB super-frame).
    pub read_batch: usize,
    /// Frames waiting for the guest (per queue) above which a reader thread stops
    /// reading for a moment; keep it below netback's `inbound_capacity`. Only with
    /// `reader_threads`.
    pub rx_high_water: usize,
    /// Read each TAP queue in a thread of its own that hands frames to netback's RX
    /// thread, instead of letting netback's RX thread read the queue itself (the
    /// default, one wake-up fewer per frame; see `rx`). With reader threads, a guest
    /// that falls behind costs drops counted here (`to_guest_dropped`); without, the
    /// frames wait in the kernel's TAP queue and it drops them (the TAP's
    /// `tx_dropped`).
    pub reader_threads: bool,
    /// Write guest → host batches through an io_uring per TAP queue (one syscall per
    /// 64 frames instead of one per frame; falls back to `writev` where io_uring is
    /// unavailable). `hv serve --no-io-uring` turns it off.
    pub tx_io_uring: bool,
}

impl Default for TapPortConfig {
    fn default() -> Self {
        Self {
            bridge: None,
            name_prefix: None,
            mtu: None,
            netns: None,
            offloads: OffloadPolicy::Negotiated,
            read_batch: 32,
            rx_high_water: 768,
            reader_threads: false,
            tx_io_uring: true,
        }
    }
}

/// Counters of one vif's TAP. "to_host" is guest → TAP, "from_host"/"to_guest" is
/// TAP → guest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TapVifStats {
    /// The TAP's name.
    pub tap: String,
    /// Offloads enabled with `TUNSETOFFLOAD`.
    pub offloads: Offloads,
    /// TAP queues.
    pub queues: usize,
    /// TAP queues whose guest → host writes go through an io_uring (the others, if
    /// any, write frame by frame: io_uring off, unavailable, or not used yet).
    pub io_uring_queues: usize,
    /// Why io_uring is not in use although it was asked for (the first queue's
    /// reason), e.g. the kernel refused it.
    pub io_uring_unavailable: Option<String>,
    /// Guest frames written to the TAP.
    pub to_host_frames: u64,
    /// Their bytes (vnet header excluded).
    pub to_host_bytes: u64,
    /// Guest frames dropped because the TAP pushed back or failed.
    pub to_host_dropped: u64,
    /// Guest frames the kernel refused (`EINVAL`).
    pub to_host_rejected: u64,
    /// Guest TCP segments that went out merged into GSO super-frames (each is also
    /// counted in `to_host_frames`).
    pub to_host_coalesced: u64,
    /// Guest frames whose offload metadata could not be translated (dropped, as Linux
    /// netback drops a packet whose checksum cannot be set up).
    pub to_host_bad_offload: u64,
    /// Frames read from the TAP.
    pub from_host_frames: u64,
    /// Their bytes.
    pub from_host_bytes: u64,
    /// Frames read that did not fit a buffer (discarded by the TAP).
    pub from_host_truncated: u64,
    /// Frames queued for the guest (segments counted one by one).
    pub to_guest_frames: u64,
    /// Frames for the guest dropped because its queue was full.
    pub to_guest_dropped: u64,
    /// Blank checksums completed in software because the guest cannot take them.
    pub to_guest_csum_filled: u64,
    /// Super-frames segmented in software because the guest did not negotiate GSO.
    pub to_guest_segmented: u64,
    /// Segments those produced.
    pub to_guest_segments: u64,
    /// Frames from the TAP dropped as unusable (unknown GSO type, bad offsets).
    pub to_guest_bad: u64,
    /// Times the reader held off because the guest's queue was full.
    pub backpressure_waits: u64,
    /// Failed reads.
    pub read_errors: u64,
}

/// Live counters of a vif's TAP, bumped per batch.
#[derive(Debug, Default)]
pub(crate) struct VifStats {
    to_host_frames: AtomicU64,
    to_host_dropped: AtomicU64,
    to_host_rejected: AtomicU64,
    to_host_coalesced: AtomicU64,
    to_host_bad_offload: AtomicU64,
    to_guest_frames: AtomicU64,
    to_guest_dropped: AtomicU64,
    to_guest_csum_filled: AtomicU64,
    to_guest_segmented: AtomicU64,
    to_guest_segments: AtomicU64,
    to_guest_bad: AtomicU64,
    backpressure_waits: AtomicU64,
    read_errors: AtomicU64,
}

impl VifStats {
    fn add(&self, c: &AtomicU64, v: u64) {
        if v != 0 {
            c.fetch_add(v, Ordering::Relaxed);
        }
    }
}

/// One vif's TAP and the threads reading it.
pub(crate) struct TapVif {
    id: VifId,
    tap: Tap,
    stats: VifStats,
    capture: RwLock<Option<Arc<PcapWriter>>>,
    stop: AtomicBool,
    stop_fd: rx::StopFd,
    scratch: Vec<tx::TxScratch>,
    readers: Mutex<Vec<JoinHandle<()>>>,
}

impl TapVif {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    fn capture(&self) -> Option<Arc<PcapWriter>> {
        self.capture
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Stops and joins the readers. The TAP itself goes when the last `Arc` drops.
    fn stop_readers(&self) {
        self.stop.store(true, Ordering::Release);
        self.stop_fd.signal();
        let readers = std::mem::take(&mut *lock(&self.readers));
        for r in readers {
            if r.join().is_err() {
                log::error!("{}: a TAP reader thread panicked", self.id);
            }
        }
    }

    fn snapshot(&self) -> TapVifStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let s = &self.stats;
        let q = self
            .tap
            .queues()
            .iter()
            .map(|q| q.stats())
            .fold(QueueStats::default(), |a, b| QueueStats {
                rx_frames: a.rx_frames + b.rx_frames,
                rx_bytes: a.rx_bytes + b.rx_bytes,
                rx_truncated: a.rx_truncated + b.rx_truncated,
                tx_frames: a.tx_frames + b.tx_frames,
                tx_bytes: a.tx_bytes + b.tx_bytes,
                tx_dropped: a.tx_dropped + b.tx_dropped,
                tx_errors: a.tx_errors + b.tx_errors,
            });
        TapVifStats {
            tap: self.tap.name().to_owned(),
            offloads: self.tap.offloads(),
            queues: self.tap.queues().len(),
            io_uring_queues: self.scratch.iter().filter(|s| s.has_ring()).count(),
            io_uring_unavailable: self.scratch.iter().find_map(|s| s.ring_unavailable()),
            to_host_frames: g(&s.to_host_frames),
            to_host_bytes: q.tx_bytes,
            to_host_dropped: g(&s.to_host_dropped),
            to_host_rejected: g(&s.to_host_rejected),
            to_host_coalesced: g(&s.to_host_coalesced),
            to_host_bad_offload: g(&s.to_host_bad_offload),
            from_host_frames: q.rx_frames,
            from_host_bytes: q.rx_bytes,
            from_host_truncated: q.rx_truncated,
            to_guest_frames: g(&s.to_guest_frames),
            to_guest_dropped: g(&s.to_guest_dropped),
            to_guest_csum_filled: g(&s.to_guest_csum_filled),
            to_guest_segmented: g(&s.to_guest_segmented),
            to_guest_segments: g(&s.to_guest_segments),
            to_guest_bad: g(&s.to_guest_bad),
            backpressure_waits: g(&s.backpressure_waits),
            read_errors: g(&s.read_errors),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The TAP backend port. See the module docs.
pub struct TapPort {
    cfg: TapPortConfig,
    vifs: RwLock<HashMap<VifId, Arc<TapVif>>>,
    captures: Mutex<HashMap<VifId, Arc<PcapWriter>>>,
    failures: Mutex<HashMap<VifId, String>>,
    /// Guest frames that arrived for a vif without a TAP (its creation failed).
    unattached_drops: AtomicU64,
}

impl TapPort {
    /// A port that creates TAPs as `cfg` says.
    pub fn new(cfg: TapPortConfig) -> Self {
        Self {
            cfg,
            vifs: RwLock::new(HashMap::new()),
            captures: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            unattached_drops: AtomicU64::new(0),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &TapPortConfig {
        &self.cfg
    }

    fn vif(&self, id: VifId) -> Option<Arc<TapVif>> {
        self.vifs
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .cloned()
    }

    /// The vifs that currently have a TAP.
    pub fn vifs(&self) -> Vec<VifId> {
        let mut v: Vec<VifId> = self
            .vifs
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .copied()
            .collect();
        v.sort();
        v
    }

    /// The name of vif `id`'s TAP, if it has one.
    pub fn tap_name(&self, id: VifId) -> Option<String> {
        self.vif(id).map(|v| v.tap.name().to_owned())
    }

    /// Counters of vif `id`'s TAP.
    pub fn stats(&self, id: VifId) -> Option<TapVifStats> {
        self.vif(id).map(|v| v.snapshot())
    }

    /// Why the last TAP creation for vif `id` failed, if it did.
    pub fn failure(&self, id: VifId) -> Option<String> {
        lock(&self.failures).get(&id).cloned()
    }

    /// Guest frames dropped because their vif had no TAP.
    pub fn unattached_drops(&self) -> u64 {
        self.unattached_drops.load(Ordering::Relaxed)
    }

    /// Captures both directions of vif `id` into `writer` (`None` stops capturing).
    /// May be called before the vif connects; the setting survives reconnects.
    pub fn set_capture(&self, id: VifId, writer: Option<Arc<PcapWriter>>) {
        {
            let mut caps = lock(&self.captures);
            match &writer {
                Some(w) => caps.insert(id, w.clone()),
                None => caps.remove(&id),
            };
        }
        if let Some(v) = self.vif(id) {
            *v.capture.write().unwrap_or_else(PoisonError::into_inner) = writer;
        }
    }

    fn build_tap(&self, link: &VifLink) -> Result<Tap, TapError> {
        let id = link.id();
        let caps = GuestRxCaps::from_features(&link.features());
        let offloads = match self.cfg.offloads {
            OffloadPolicy::Negotiated => caps.tun_offloads(),
            OffloadPolicy::Fixed(o) => o,
        };
        let builder = match &self.cfg.name_prefix {
            // `create` checks the name fits an interface name.
            Some(prefix) => TapBuilder::new(format!("{prefix}{}.{}", id.domid, id.devid)),
            None => TapBuilder::for_vif(id.domid, id.devid)?,
        }
        .queues(link.num_queues().max(1))
        .offloads(offloads)
        .mtu(self.cfg.mtu)
        .bridge(self.cfg.bridge.clone());
        let mut tries = 0;
        loop {
            let b = builder.clone();
            let r = match &self.cfg.netns {
                Some(ns) => b.create_in_netns(ns),
                None => b.create(),
            };
            match r {
                Err(TapError::NameInUse { .. }) if tries < CREATE_RETRIES => {
                    tries += 1;
                    std::thread::sleep(CREATE_RETRY_WAIT);
                }
                r => return r,
            }
        }
    }

    fn reader_config(&self) -> rx::ReaderConfig {
        rx::ReaderConfig {
            batch: self.cfg.read_batch,
            high_water: self.cfg.rx_high_water,
        }
    }

    fn start(&self, link: &Arc<VifLink>) -> Result<Arc<TapVif>, TapError> {
        let tap = self.build_tap(link)?;
        let nq = tap.queues().len();
        let stop_fd = rx::StopFd::new().map_err(|e| TapError::Io {
            op: "creating an eventfd",
            dev: tap.name().to_owned(),
            source: e,
        })?;
        let vif = Arc::new(TapVif {
            id: link.id(),
            tap,
            stats: VifStats::default(),
            capture: RwLock::new(lock(&self.captures).get(&link.id()).cloned()),
            stop: AtomicBool::new(false),
            stop_fd,
            scratch: (0..nq)
                .map(|_| tx::TxScratch::new(self.cfg.tx_io_uring))
                .collect(),
            readers: Mutex::new(Vec::with_capacity(nq)),
        });
        if !self.cfg.reader_threads {
            // netback's RX threads read the queues (`rx_source`).
            return Ok(vif);
        }
        let cfg = self.reader_config();
        for q in 0..nq {
            let (v, l) = (vif.clone(), link.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("{}-tap-q{q}", link.id()))
                .spawn(move || rx::run(v, l, q, cfg));
            match spawned {
                Ok(h) => lock(&vif.readers).push(h),
                Err(e) => {
                    vif.stop_readers();
                    return Err(TapError::Io {
                        op: "spawning a TAP reader thread",
                        dev: vif.tap.name().to_owned(),
                        source: e,
                    });
                }
            }
        }
        Ok(vif)
    }
}

impl Port for TapPort {
    fn rx_source(&self, link: &Arc<VifLink>, queue: u16) -> Option<Box<dyn RxSource>> {
        if self.cfg.reader_threads {
            return None;
        }
        let vif = self
            .vifs
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&link.id())?
            .clone();
        rx::source(vif, link.clone(), usize::from(queue), self.reader_config())
    }

    fn vif_connected(&self, link: &Arc<VifLink>) {
        let id = link.id();
        // A connect without a disconnect in between: drop the stale TAP first.
        self.vif_disconnected(id);
        match self.start(link) {
            Ok(vif) => {
                lock(&self.failures).remove(&id);
                log::info!(
                    "{id}: TAP {} up, {} queue(s), offloads {:?}",
                    vif.tap.name(),
                    vif.tap.queues().len(),
                    vif.tap.offloads()
                );
                self.vifs
                    .write()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(id, vif);
            }
            Err(e) => {
                log::error!("{id}: no TAP, its frames are dropped: {e}");
                lock(&self.failures).insert(id, e.to_string());
            }
        }
    }

    fn vif_disconnected(&self, id: VifId) {
        let vif = self
            .vifs
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
        if let Some(vif) = vif {
            vif.stop_readers();
            if let Some(cap) = vif.capture() {
                if let Err(e) = cap.flush() {
                    log::warn!("{id}: flushing the capture: {e}");
                }
            }
            log::info!("{id}: TAP {} removed", vif.tap.name());
            // Dropping the last reference detaches the TAP and closes its fds.
        }
    }

    fn transmit(&self, from: &Arc<VifLink>, queue: u16, frames: &FrameBatch<'_>) {
        let Some(vif) = self.vif(from.id()) else {
            self.unattached_drops
                .fetch_add(frames.len() as u64, Ordering::Relaxed);
            return;
        };
        let nq = vif.tap.queues().len();
        let qi = usize::from(queue) % nq.max(1);
        if let (Some(q), Some(s)) = (vif.tap.queue(qi), vif.scratch.get(qi)) {
            tx::transmit(&vif, q, s, frames);
        }
    }
}

impl Drop for TapPort {
    fn drop(&mut self) {
        let vifs: Vec<Arc<TapVif>> = self
            .vifs
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .map(|(_, v)| v)
            .collect();
        for v in vifs {
            v.stop_readers();
        }
    }
}
