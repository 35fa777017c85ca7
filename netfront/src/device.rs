//! [`Netfront`]: one vif of a guest — connect, queues, close, reconnect.

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::time::Duration;

use hv::abi::netif::{NET_RX_RING_SIZE, NET_TX_RING_SIZE};
use hv::abi::ring::shared_ring_init;
use hv::abi::xenbus::XenbusState;
use hv::env::{DomId, EnvError, EventChannel, GrantedPage, GuestEnv};

use crate::clock::{pause, Deadline};
use crate::counters::{CounterSnapshot, QueueCounters};
use crate::error::NetfrontError;
use crate::handshake::{
    self, BackendFeatures, EvtchnKeys, FrontFeatures, FrontendInfo, QueueKeys, WaitVerdict,
};
use crate::queue::Queue;
use crate::rx::RxQueue;
use crate::tx::TxQueue;
use crate::txlayout::TxCaps;

/// How a vif is to be set up. The feature switches say what this frontend is willing
/// to do; what is used is their intersection with the backend's offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetfrontConfig {
    /// The vif's device index (`device/vif/<devid>`).
    pub devid: u32,
    /// Queues wanted; the backend's `multi-queue-max-queues` caps it.
    pub queues: u16,
    /// Use separate TX and RX event channels if the backend offers
    /// `feature-split-event-channels`.
    pub split_event_channels: bool,
    /// `feature-sg`: multi-slot frames both ways.
    pub sg: bool,
    /// `feature-gso-tcpv4`
    pub gso_tcpv4: bool,
    /// `feature-gso-tcpv6`
    pub gso_tcpv6: bool,
    /// Checksum offload: blank TCP/UDP checksums may cross the rings (both ways).
    /// Off: `feature-no-csum-offload = 1` and every checksum is computed in the guest.
    pub csum_offload: bool,
    /// `feature-ipv6-csum-offload` (with `csum_offload`).
    pub ipv6_csum_offload: bool,
    /// TX frames queued before an automatic push.
    pub tx_batch: u32,
    /// Consumed RX buffers collected before they are reposted.
    pub rx_refill_batch: u32,
    /// How long each handshake / close step may wait for the backend.
    pub timeout: Duration,
    /// Largest frame (Ethernet header included) for the smoltcp device; above one
    /// page only with `feature-sg`.
    pub mtu: usize,
    /// Most rounds [`Queue::wait`], [`Queue::wait_tx`] and [`Queue::wait_rx`] poll the
    /// rings for the backend's progress before arming the event channel and sleeping
    /// (as Linux's `busy_poll`). With the backend on another core a poll round costs a
    /// few nanoseconds and a wake-up from sleep tens of microseconds; 0 sleeps at once.
    /// The rounds actually polled adapt between 0 and this
    /// ([`event_channel::PollBudget`]): they grow while the backend answers soon after
    /// a poll gave up and shrink while it stays quiet.
    pub busy_poll: u32,
}

impl Default for NetfrontConfig {
    fn default() -> Self {
        NetfrontConfig {
            devid: 0,
            queues: 1,
            split_event_channels: true,
            sg: true,
            gso_tcpv4: true,
            gso_tcpv6: true,
            csum_offload: true,
            ipv6_csum_offload: true,
            tx_batch: 32,
            rx_refill_batch: 32,
            timeout: Duration::from_secs(10),
            mtu: 1514,
            busy_poll: crate::queue::DEFAULT_BUSY_POLL,
        }
    }
}

/// What [`Netfront::poll_backend`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkEvent {
    /// Connected and healthy.
    Up,
    /// Not connected (closed earlier).
    Down,
    /// The backend moved to Closing/Closed: the frontend closed too, frames in flight
    /// were dropped and the buffers reclaimed. [`Netfront::reconnect`] to come back.
    BackendClosed,
    /// A queue's ring was broken by the backend (protocol violation); the queue is
    /// disabled. Close and reconnect to recover.
    QueueBroken(u16),
}

/// A connected (or closed) vif.
pub struct Netfront<E: GuestEnv> {
    env: E,
    cfg: NetfrontConfig,
    info: FrontendInfo,
    backend: BackendFeatures,
    state: XenbusState,
    queues: Vec<Queue<E::Channel>>,
    /// Grants the backend still had in use at release time; retried later.
    unreleased: Vec<GrantedPage>,
}

impl<E: GuestEnv> Netfront<E> {
    /// Connect vif `cfg.devid` of this guest to its backend: the full xenbus
    /// handshake. Returns once the backend is `Connected`.
    pub fn connect(env: E, cfg: NetfrontConfig) -> Result<Self, NetfrontError> {
        if cfg.queues == 0 {
            return Err(NetfrontError::Config("queues must be at least 1"));
        }
        let info = handshake::read_frontend(env.store(), env.domid(), cfg.devid)?;
        let mut nf = Netfront {
            env,
            cfg,
            info,
            backend: BackendFeatures::default(),
            state: XenbusState::Unknown,
            queues: Vec::new(),
            unreleased: Vec::new(),
        };
        nf.state = handshake::frontend_state(nf.env.store(), &nf.info.fe_path)?;
        if nf.state != XenbusState::Initialising {
            nf.switch(XenbusState::Initialising)?;
        }
        nf.establish()?;
        Ok(nf)
    }

    fn switch(&mut self, state: XenbusState) -> Result<(), NetfrontError> {
        handshake::switch_state(self.env.store(), &self.info.fe_path, state)?;
        self.state = state;
        Ok(())
    }

    /// From `Initialising`: wait for the backend's `InitWait`, set up the queues,
    /// publish the keys, go `Connected`, wait for the backend to follow.
    fn establish(&mut self) -> Result<(), NetfrontError> {
        let be = self.info.be_path.clone();
        handshake::wait_backend(self.env.store(), &be, self.cfg.timeout, |s| match s {
            XenbusState::InitWait => WaitVerdict::Done,
            _ => WaitVerdict::Continue,
        })?;
        self.backend = handshake::read_backend_features(self.env.store(), &be)?;
        if !self.backend.rx_copy {
            return Err(NetfrontError::NoRxCopy(be));
        }
        let nq = u32::from(self.cfg.queues).min(self.backend.max_queues) as u16;
        let split = self.cfg.split_event_channels && self.backend.split_event_channels;
        let caps = self.tx_caps();

        let mut keys = Vec::with_capacity(usize::from(nq));
        for i in 0..nq {
            match self.setup_queue(i, split, caps) {
                Ok((q, k)) => {
                    self.queues.push(q);
                    keys.push(k);
                }
                Err(e) => {
                    self.fail_setup();
                    return Err(e);
                }
            }
        }
        let features = FrontFeatures {
            sg: self.cfg.sg,
            gso_tcpv4: self.cfg.gso_tcpv4 && self.cfg.sg,
            gso_tcpv6: self.cfg.gso_tcpv6 && self.cfg.sg,
            ipv6_csum_offload: self.cfg.ipv6_csum_offload,
            csum_offload: self.cfg.csum_offload,
        };
        let store = self.env.store();
        let res = handshake::write_connect_keys(store, &self.info.fe_path, &keys, &features)
            .and_then(|()| {
                handshake::switch_state(store, &self.info.fe_path, XenbusState::Connected)
            });
        if let Err(e) = res {
            self.fail_setup();
            return Err(e);
        }
        self.state = XenbusState::Connected;
        let r = handshake::wait_backend(self.env.store(), &be, self.cfg.timeout, |s| match s {
            XenbusState::Connected => WaitVerdict::Done,
            XenbusState::Closing | XenbusState::Closed => WaitVerdict::Abort,
            _ => WaitVerdict::Continue,
        });
        if let Err(e) = r {
            self.fail_setup();
            return Err(e);
        }
        log::info!(
            "netfront: {} connected to {} ({} queue(s), {} event channels)",
            self.info.fe_path,
            be,
            nq,
            if split { "split" } else { "shared" }
        );
        Ok(())
    }

    /// A failed handshake: tell the backend, give back what was set up.
    fn fail_setup(&mut self) {
        if let Err(e) = self.switch(XenbusState::Closed) {
            log::warn!(
                "netfront: {}: could not switch to Closed: {e}",
                self.info.fe_path
            );
        }
        let deadline = Deadline::after(self.cfg.timeout);
        self.release_queues(deadline);
    }

    fn tx_caps(&self) -> TxCaps {
        let sg = self.cfg.sg && self.backend.sg;
        TxCaps {
            sg,
            gso_tcpv4: sg && self.cfg.gso_tcpv4 && self.backend.gso_tcpv4,
            gso_tcpv6: sg && self.cfg.gso_tcpv6 && self.backend.gso_tcpv6,
            csum_ipv4: self.cfg.csum_offload,
            csum_ipv6: self.cfg.csum_offload
                && self.cfg.ipv6_csum_offload
                && self.backend.ipv6_csum_offload,
        }
    }

    /// Grant the pages of queue `index`, initialise its rings, allocate its channels.
    fn setup_queue(
        &mut self,
        index: u16,
        split: bool,
        caps: TxCaps,
    ) -> Result<(Queue<E::Channel>, QueueKeys), NetfrontError> {
        let be = self.info.backend_id;
        let timeout = self.cfg.timeout;
        let deadline = || Deadline::after(timeout);
        // Each step gives back what the earlier ones granted if it fails.
        let mut rings = self.grant(be, 2, false)?;
        let tx_pages = match self.grant(be, NET_TX_RING_SIZE as usize, true) {
            Ok(p) => p,
            Err(e) => {
                self.release_pages(rings, deadline());
                return Err(e);
            }
        };
        let rx_pages = match self.grant(be, NET_RX_RING_SIZE as usize, false) {
            Ok(p) => p,
            Err(e) => {
                rings.extend(tx_pages);
                self.release_pages(rings, deadline());
                return Err(e);
            }
        };
        let chans = (|| {
            let tx_chan = Arc::new(self.env.alloc_unbound(be)?);
            let rx_chan = if split {
                Arc::new(self.env.alloc_unbound(be)?)
            } else {
                tx_chan.clone()
            };
            Ok::<_, NetfrontError>((tx_chan, rx_chan))
        })();
        let (tx_chan, rx_chan) = match chans {
            Ok(c) => c,
            Err(e) => {
                rings.extend(tx_pages);
                rings.extend(rx_pages);
                self.release_pages(rings, deadline());
                return Err(e);
            }
        };
        {
            let rx_ring = rings.pop();
            let tx_ring = rings.pop();
            let (Some(tx_ring), Some(rx_ring)) = (tx_ring, rx_ring) else {
                return Err(EnvError::Exhausted("ring pages").into());
            };
            // SAFETY: fresh 4 KiB pages from the environment, page aligned, used by
            // no ring yet.
            unsafe {
                shared_ring_init(tx_ring.ptr);
                shared_ring_init(rx_ring.ptr);
            }
            let keys = QueueKeys {
                tx_ring_ref: tx_ring.gref,
                rx_ring_ref: rx_ring.gref,
                evtchn: if split {
                    EvtchnKeys::Split {
                        tx: tx_chan.port(),
                        rx: rx_chan.port(),
                    }
                } else {
                    EvtchnKeys::Single(tx_chan.port())
                },
            };
            let counters = Arc::new(QueueCounters::default());
            // SAFETY: the ring pages were just initialised; all pages are granted to
            // the backend and stay valid until released through into_pages().
            let tx = unsafe {
                TxQueue::new(
                    tx_ring,
                    tx_pages,
                    caps,
                    self.cfg.tx_batch,
                    tx_chan.clone(),
                    counters.clone(),
                )
            };
            // SAFETY: as above; exactly NET_RX_RING_SIZE writable pages, from one
            // grant_pages call, so the environment's one-mapping answer covers them.
            let mut rx = unsafe {
                RxQueue::new(
                    rx_ring,
                    rx_pages,
                    self.cfg.rx_refill_batch,
                    rx_chan.clone(),
                    counters.clone(),
                    self.env.granted_pages_share_one_mapping(),
                )
            };
            rx.refill();
            let mut q = Queue::new(index, tx, rx, tx_chan, rx_chan, split, counters);
            q.set_mtu(self.cfg.mtu);
            q.set_busy_poll(self.cfg.busy_poll);
            Ok((q, keys))
        }
    }

    /// `count` pages granted to the backend, all or nothing.
    fn grant(
        &mut self,
        be: DomId,
        count: usize,
        readonly: bool,
    ) -> Result<Vec<GrantedPage>, NetfrontError> {
        let pages = self.env.grant_pages(be, count, readonly)?;
        if pages.len() != count {
            self.release_pages(pages, Deadline::after(self.cfg.timeout));
            return Err(EnvError::Exhausted("granted pages").into());
        }
        Ok(pages)
    }

    /// End the grants of every queue (dropping the channels closes the ports). Pages
    /// the backend still uses are retried until `deadline`, then kept for later.
    fn release_queues(&mut self, deadline: Deadline) {
        let mut pages = Vec::new();
        for q in self.queues.drain(..) {
            let (tx, rx) = q.into_parts();
            pages.extend(tx.into_pages());
            pages.extend(rx.into_pages());
        }
        pages.append(&mut self.unreleased);
        self.release_pages(pages, deadline);
    }

    fn release_pages(&mut self, mut pages: Vec<GrantedPage>, deadline: Deadline) {
        while !pages.is_empty() {
            match self.env.end_grants(pages) {
                Ok(()) => return,
                Err((EnvError::GrantInUse(gref), rest)) => {
                    pages = rest;
                    if deadline.expired() {
                        log::warn!(
                            "netfront: {}: {} grants (e.g. {gref}) still in use by the backend; kept for a later retry",
                            self.info.fe_path,
                            pages.len()
                        );
                        self.unreleased.append(&mut pages);
                        return;
                    }
                    pause(Duration::from_millis(1));
                }
                Err((e, rest)) => {
                    log::error!(
                        "netfront: {}: ending {} grants failed: {e}",
                        self.info.fe_path,
                        rest.len()
                    );
                    self.unreleased.extend(rest);
                    return;
                }
            }
        }
    }

    /// Orderly close initiated by the frontend (`xennet_bus_close`): `Closing`, wait
    /// for the backend to follow, `Closed`, wait for it to close, then end every grant.
    /// Frames in flight are dropped.
    pub fn close(&mut self) -> Result<(), NetfrontError> {
        if self.state == XenbusState::Closed && self.queues.is_empty() {
            return Ok(());
        }
        let be = self.info.be_path.clone();
        let gone = |s| matches!(s, XenbusState::Closed | XenbusState::Unknown);
        let mut result = Ok(());
        if !gone(handshake::backend_state(self.env.store(), &be)?) {
            self.switch(XenbusState::Closing)?;
            if let Err(e) = handshake::wait_backend(self.env.store(), &be, self.cfg.timeout, |s| {
                if matches!(s, XenbusState::Closing) || gone(s) {
                    WaitVerdict::Done
                } else {
                    WaitVerdict::Continue
                }
            }) {
                log::warn!(
                    "netfront: {}: backend did not follow to Closing: {e}",
                    self.info.fe_path
                );
                result = Err(e);
            }
        }
        self.switch(XenbusState::Closed)?;
        if let Err(e) = handshake::wait_backend(self.env.store(), &be, self.cfg.timeout, |s| {
            // netback may already be back in InitWait, ready for a reconnect.
            if gone(s) || s == XenbusState::InitWait {
                WaitVerdict::Done
            } else {
                WaitVerdict::Continue
            }
        }) {
            log::warn!(
                "netfront: {}: backend did not close: {e}",
                self.info.fe_path
            );
            result = result.and(Err(e));
        }
        self.release_queues(Deadline::after(self.cfg.timeout));
        result
    }

    /// Check the backend's state and the queues' health (call from the control
    /// thread now and then). When the backend is closing, the frontend closes too
    /// (`xenbus_frontend_closed`), dropping frames in flight and reclaiming every
    /// buffer.
    pub fn poll_backend(&mut self) -> Result<LinkEvent, NetfrontError> {
        if self.state != XenbusState::Connected {
            return Ok(LinkEvent::Down);
        }
        let s = handshake::backend_state(self.env.store(), &self.info.be_path)?;
        if matches!(
            s,
            XenbusState::Closing | XenbusState::Closed | XenbusState::Unknown
        ) {
            log::info!(
                "netfront: {}: backend is {}; closing",
                self.info.fe_path,
                s.name()
            );
            self.switch(XenbusState::Closed)?;
            self.release_queues(Deadline::after(self.cfg.timeout));
            return Ok(LinkEvent::BackendClosed);
        }
        if let Some(q) = self.queues.iter().find(|q| q.is_broken()) {
            return Ok(LinkEvent::QueueBroken(q.index()));
        }
        Ok(LinkEvent::Up)
    }

    /// Connect again after a close (from either side): `Initialising`, then the same
    /// handshake as [`Netfront::connect`] with fresh rings and buffers.
    pub fn reconnect(&mut self) -> Result<(), NetfrontError> {
        if self.state != XenbusState::Closed || !self.queues.is_empty() {
            return Err(NetfrontError::WrongState {
                needed: "Closed",
                actual: self.state,
            });
        }
        if !self.unreleased.is_empty() {
            let pages = core::mem::take(&mut self.unreleased);
            self.release_pages(pages, Deadline::after(self.cfg.timeout));
        }
        self.switch(XenbusState::Initialising)?;
        self.establish()
    }

    // ---- accessors -------------------------------------------------------------

    /// The MAC address from the frontend's `mac` key.
    pub fn mac(&self) -> [u8; 6] {
        self.info.mac
    }

    /// The frontend's xenstore directory.
    pub fn frontend_path(&self) -> &str {
        &self.info.fe_path
    }

    /// The backend's xenstore directory.
    pub fn backend_path(&self) -> &str {
        &self.info.be_path
    }

    /// The backend's domid.
    pub fn backend_id(&self) -> DomId {
        self.info.backend_id
    }

    /// The frontend's state as last written.
    pub fn state(&self) -> XenbusState {
        self.state
    }

    /// The backend's offers read at the last handshake.
    pub fn backend_features(&self) -> &BackendFeatures {
        &self.backend
    }

    /// The configuration.
    pub fn config(&self) -> &NetfrontConfig {
        &self.cfg
    }

    /// The environment.
    pub fn env(&self) -> &E {
        &self.env
    }

    /// Connected queues.
    pub fn num_queues(&self) -> usize {
        self.queues.len()
    }

    /// Queue `i`, to drive from the current thread.
    pub fn queue(&mut self, i: usize) -> Option<&mut Queue<E::Channel>> {
        self.queues.get_mut(i)
    }

    /// All queues, e.g. to hand one to each thread of a `std::thread::scope`.
    pub fn queues_mut(&mut self) -> &mut [Queue<E::Channel>] {
        &mut self.queues
    }

    /// The live counters of every queue (readable from other threads).
    pub fn queue_counters(&self) -> Vec<Arc<QueueCounters>> {
        self.queues.iter().map(|q| q.counters().clone()).collect()
    }

    /// Counters summed over the queues.
    pub fn stats(&self) -> CounterSnapshot {
        self.queues
            .iter()
            .fold(CounterSnapshot::default(), |a, q| a + q.stats())
    }

    /// Grants the backend has not let go of yet.
    pub fn unreleased_grants(&self) -> usize {
        self.unreleased.len()
    }
}

impl<E: GuestEnv> Drop for Netfront<E> {
    fn drop(&mut self) {
        // Best effort without waiting: a grant the backend still maps stays granted
        // (freeing it would hand the backend memory we reuse).
        let mut pages: Vec<GrantedPage> = Vec::new();
        for q in self.queues.drain(..) {
            let (tx, rx) = q.into_parts();
            pages.extend(tx.into_pages());
            pages.extend(rx.into_pages());
        }
        pages.append(&mut self.unreleased);
        if pages.is_empty() {
            return;
        }
        if let Err((e, rest)) = self.env.end_grants(pages) {
            log::warn!(
                "netfront: {}: dropped while {} grants were still in use ({e}); leaving them granted",
                self.info.fe_path,
                rest.len()
            );
        }
    }
}

/// Path helper re-exported for callers that build their own directories.
pub fn vif_frontend_path(domid: DomId, devid: u32) -> String {
    hv::toolstack::frontend_path(domid, devid)
}
