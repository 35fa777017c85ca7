//! A hand-written minimal frontend for netback's end-to-end tests, on the embedded
//! hypervisor. It does what Linux's xen-netfront does on the wire, nothing more, and
//! exposes the raw rings so tests can also play a malicious frontend.
#![allow(dead_code)]

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hv::abi::netif::*;
use hv::abi::ring::RING_PAGE_SIZE;
use hv::abi::xenbus::XenbusState;
use hv::embedded::{DomainConfig, EmbeddedChannel, EmbeddedGuestEnv, Hypervisor};
use hv::env::{DomId, EventChannel, GrantedPage, GuestEnv, XBT_NIL};
use hv::store::StoreConnection;
use hv::toolstack::{add_vif, backend_path, frontend_path, VifConfig};
use hv::xenbus::{path_join, xenbus_read_state, Transaction, XenbusError};
use netback::port::{Port, VifId, VifLink};
use netback::{FrameBatch, Netback, NetbackConfig, OffloadMeta, VifInfo};

pub const WAIT: Duration = Duration::from_secs(5);

/// The hypervisor, a running netback and the toolstack's Dom0 store connection.
pub struct World {
    pub hv: Hypervisor,
    pub netback: Netback,
    pub dom0: StoreConnection,
}

impl World {
    pub fn new(port: Arc<dyn Port>) -> World {
        Self::with_config(|c| c, port)
    }

    pub fn with_config(
        f: impl FnOnce(NetbackConfig) -> NetbackConfig,
        port: Arc<dyn Port>,
    ) -> World {
        let _ = env_logger_init();
        let hv = Hypervisor::new().expect("hypervisor");
        let mut cfg = NetbackConfig::new(port);
        // Test frontends do not answer a backend Closing: don't wait long at teardown.
        cfg.close_timeout = Duration::from_millis(200);
        let cfg = f(cfg);
        let netback = Netback::start(hv.backend_env().expect("dom0 env"), cfg).expect("netback");
        let dom0 = hv.store(0).expect("dom0 store");
        World { hv, netback, dom0 }
    }

    /// Create a guest with a vif `devid` (toolstack side only).
    pub fn add_guest(&self, devid: u32, mac: [u8; 6]) -> (DomId, EmbeddedGuestEnv) {
        let domid = self
            .hv
            .create_domain(&DomainConfig {
                name: "guest".into(),
                memory_frames: 2048,
                ..DomainConfig::default()
            })
            .expect("create domain");
        add_vif(
            &self.dom0,
            &VifConfig {
                frontend: domid,
                backend: 0,
                devid,
                mac,
                rate: None,
            },
        )
        .expect("add_vif");
        (domid, self.hv.guest_env(domid).expect("guest env"))
    }

    pub fn be_state(&self, domid: DomId, devid: u32) -> XenbusState {
        xenbus_read_state(&self.dom0, &backend_path(0, domid, devid)).expect("backend state")
    }

    pub fn wait_be_state(&self, domid: DomId, devid: u32, want: XenbusState) {
        let deadline = Instant::now() + WAIT;
        while self.be_state(domid, devid) != want {
            assert!(
                Instant::now() < deadline,
                "backend never reached {want:?}: {:?}",
                self.be_state(domid, devid)
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    pub fn wait_vif(&self, id: VifId, what: &str, pred: impl Fn(&VifInfo) -> bool) -> VifInfo {
        match self.netback.wait_vif(id, WAIT, pred) {
            Some(i) => i,
            None => panic!("vif {id} never got {what}: {:?}", self.netback.vif(id)),
        }
    }
}

fn env_logger_init() -> Option<()> {
    None
}

/// How the test frontend connects.
#[derive(Debug, Clone, Copy)]
pub struct FrontOpts {
    pub queues: u32,
    pub split: bool,
    pub sg: bool,
    pub gso: bool,
    /// Write Initialised (true) or, like Linux netfront, go straight to Connected.
    pub initialised: bool,
    /// RX buffers posted per queue at connect.
    pub rx_buffers: usize,
}

impl Default for FrontOpts {
    fn default() -> Self {
        Self {
            queues: 1,
            split: false,
            sg: true,
            gso: true,
            initialised: false,
            rx_buffers: 64,
        }
    }
}

/// One queue of the test frontend.
pub struct FrontQueue {
    pub tx: TxFrontRing,
    pub rx: RxFrontRing,
    pub tx_page: GrantedPage,
    pub rx_page: GrantedPage,
    pub tx_chan: EmbeddedChannel,
    pub rx_chan: Option<EmbeddedChannel>,
    /// Pages granted read-only for TX data, one per slot in flight.
    pub tx_bufs: Vec<GrantedPage>,
    /// Pages granted writable for RX, indexed by request id.
    pub rx_bufs: Vec<GrantedPage>,
    /// Ids of posted RX requests, in ring order.
    pub posted: std::collections::VecDeque<u16>,
}

impl FrontQueue {
    fn rx_chan(&self) -> &EmbeddedChannel {
        self.rx_chan.as_ref().unwrap_or(&self.tx_chan)
    }
}

/// A received frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RxFrame {
    pub data: Vec<u8>,
    pub flags: u16,
    pub gso: Option<NetifExtraGso>,
    pub statuses: Vec<i16>,
}

pub struct TestFront {
    // Declared (so dropped) before `env`: closing a channel touches the domain's
    // event-channel page, which the environment keeps alive.
    pub queues: Vec<FrontQueue>,
    pub env: EmbeddedGuestEnv,
    pub domid: DomId,
    pub devid: u32,
    pub fe: String,
    pub be: String,
    pub opts: FrontOpts,
}

fn page_read(p: &GrantedPage) -> &[u8] {
    // SAFETY: a granted page is 4 KiB of this domain's memory, valid while granted; RX
    // pages are read only after the backend answered, so no access races its copy.
    unsafe { std::slice::from_raw_parts(p.ptr.as_ptr(), RING_PAGE_SIZE) }
}

fn page_write(p: &GrantedPage, off: usize, data: &[u8]) {
    assert!(off + data.len() <= RING_PAGE_SIZE);
    // SAFETY: in bounds (checked above) of a 4 KiB page of this domain's memory; the
    // test writes TX pages and ring slots before publishing them.
    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), p.ptr.as_ptr().add(off), data.len()) }
}

impl TestFront {
    /// Grant rings, write keys in one transaction, switch state, wait for Connected.
    pub fn connect(w: &World, env: EmbeddedGuestEnv, devid: u32, opts: FrontOpts) -> TestFront {
        let f = Self::setup(env, devid, opts);
        w.wait_be_state(f.domid, devid, XenbusState::Connected);
        f
    }

    /// As [`connect`] without waiting.
    pub fn setup(env: EmbeddedGuestEnv, devid: u32, opts: FrontOpts) -> TestFront {
        let domid = env.domid();
        let fe = frontend_path(domid, devid);
        let be = backend_path(0, domid, devid);
        let mut queues = Vec::new();
        for _ in 0..opts.queues {
            let mut rings = env.grant_pages(0, 2, false).expect("ring pages");
            let rx_page = rings.pop().expect("rx page");
            let tx_page = rings.pop().expect("tx page");
            // SAFETY: freshly granted, zeroed, page-aligned pages owned by this queue.
            let tx = unsafe { TxFrontRing::init(tx_page.ptr) };
            // SAFETY: as above.
            let rx = unsafe { RxFrontRing::init(rx_page.ptr) };
            let tx_chan = env.alloc_unbound(0).expect("evtchn");
            let rx_chan = opts.split.then(|| env.alloc_unbound(0).expect("evtchn"));
            let tx_bufs = env.grant_pages(0, 32, true).expect("tx bufs");
            let rx_bufs = env.grant_pages(0, opts.rx_buffers, false).expect("rx bufs");
            queues.push(FrontQueue {
                tx,
                rx,
                tx_page,
                rx_page,
                tx_chan,
                rx_chan,
                tx_bufs,
                rx_bufs,
                posted: Default::default(),
            });
        }
        let mut f = TestFront {
            env,
            domid,
            devid,
            fe,
            be,
            queues,
            opts,
        };
        f.write_keys();
        for q in 0..f.queues.len() {
            let n = f.opts.rx_buffers;
            f.post_rx(q, n);
        }
        let state = if opts.initialised {
            XenbusState::Initialised
        } else {
            XenbusState::Connected
        };
        f.set_state(state);
        f
    }

    fn write_keys(&self) {
        let store = self.env.store();
        let fe = &self.fe;
        Transaction::run(store, |t| -> Result<(), XenbusError> {
            let w = |k: &str, v: String| t.write(&path_join(fe, k), v.as_bytes());
            let nq = self.queues.len();
            for (i, q) in self.queues.iter().enumerate() {
                let dir = if nq == 1 {
                    fe.clone()
                } else {
                    path_join(fe, &format!("queue-{i}"))
                };
                let wq = |k: &str, v: String| t.write(&path_join(&dir, k), v.as_bytes());
                wq("tx-ring-ref", q.tx_page.gref.to_string())?;
                wq("rx-ring-ref", q.rx_page.gref.to_string())?;
                match &q.rx_chan {
                    None => wq("event-channel", q.tx_chan.port().to_string())?,
                    Some(rx) => {
                        wq("event-channel-tx", q.tx_chan.port().to_string())?;
                        wq("event-channel-rx", rx.port().to_string())?;
                    }
                }
            }
            if nq > 1 {
                w("multi-queue-num-queues", nq.to_string())?;
            }
            w("request-rx-copy", "1".into())?;
            w("feature-rx-notify", "1".into())?;
            w("feature-sg", u8::from(self.opts.sg).to_string())?;
            w("feature-gso-tcpv4", u8::from(self.opts.gso).to_string())?;
            w("feature-gso-tcpv6", u8::from(self.opts.gso).to_string())?;
            w("feature-ipv6-csum-offload", "1".into())?;
            Ok(())
        })
        .expect("write frontend keys");
    }

    pub fn set_state(&self, s: XenbusState) {
        self.env
            .store()
            .write(
                XBT_NIL,
                &path_join(&self.fe, "state"),
                (s as u32).to_string().as_bytes(),
            )
            .expect("write state");
    }

    pub fn id(&self) -> VifId {
        VifId {
            domid: self.domid,
            devid: self.devid,
        }
    }

    /// Post `n` RX buffers (ids 0..n) on queue `q`.
    pub fn post_rx(&mut self, q: usize, n: usize) {
        let fq = &mut self.queues[q];
        let ids: Vec<u16> = (0..n.min(fq.rx_bufs.len()) as u16).collect();
        self.refill_rx(q, ids);
    }

    /// Send one frame on queue `q` using as many slots as `chunk` dictates, with
    /// optional GSO extra and TX flags. Returns the number of slots used.
    pub fn send(
        &mut self,
        q: usize,
        data: &[u8],
        chunk: usize,
        flags: u16,
        gso: Option<NetifExtraGso>,
    ) -> usize {
        let fq = &mut self.queues[q];
        let chunks: Vec<&[u8]> = if data.is_empty() {
            vec![data]
        } else {
            data.chunks(chunk).collect()
        };
        assert!(chunks.len() <= fq.tx_bufs.len());
        let mut reqs = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            let page = &fq.tx_bufs[i];
            page_write(page, 0, c);
            let mut f = if i == 0 { flags } else { 0 };
            if i + 1 < chunks.len() {
                f |= NETTXF_MORE_DATA;
            }
            let size = if i == 0 {
                data.len() as u16
            } else {
                c.len() as u16
            };
            if i == 0 && gso.is_some() {
                f |= NETTXF_EXTRA_INFO;
            }
            reqs.push(NetifTxRequest {
                gref: page.gref,
                offset: 0,
                flags: f,
                id: i as u16,
                size,
            });
            if i == 0 {
                if let Some(g) = gso {
                    reqs.push(NetifExtraInfo::new_gso(g, 0).to_tx_slot());
                }
            }
        }
        let n = reqs.len();
        self.send_raw(q, &reqs);
        n
    }

    /// Publish raw TX requests and notify.
    pub fn send_raw(&mut self, q: usize, reqs: &[NetifTxRequest]) {
        let fq = &mut self.queues[q];
        for r in reqs {
            fq.tx.produce_request(*r).expect("tx ring has room");
        }
        if fq.tx.push_requests_and_check_notify() {
            fq.tx_chan.notify();
        }
    }

    /// Overwrite the shared TX ring's `req_prod` directly (a hostile frontend).
    pub fn poke_tx_req_prod(&self, q: usize, v: u32) {
        poke_u32(self.queues[q].tx_page.ptr, 0, v);
        self.queues[q].tx_chan.notify();
    }

    /// Overwrite the shared RX ring's `req_prod` directly.
    pub fn poke_rx_req_prod(&self, q: usize, v: u32) {
        poke_u32(self.queues[q].rx_page.ptr, 0, v);
        self.queues[q].rx_chan().notify();
    }

    /// Write raw bytes into TX slot `idx` (a hostile frontend).
    pub fn poke_tx_slot(&self, q: usize, idx: u32, bytes: [u8; 12]) {
        let off = 64 + (idx as usize % 256) * 12;
        page_write(&self.queues[q].tx_page, off, &bytes);
    }

    /// Wait for `n` TX responses on queue `q`.
    pub fn tx_responses(&mut self, q: usize, n: usize) -> Vec<NetifTxResponse> {
        let fq = &mut self.queues[q];
        let mut out = Vec::new();
        let deadline = Instant::now() + WAIT;
        while out.len() < n {
            out.extend(fq.tx.take_responses().expect("sane rsp_prod"));
            if out.len() >= n {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {n} TX responses: {out:?}",
                out.len()
            );
            if !fq.tx.final_check_for_responses() {
                fq.tx_chan.wait(Some(Duration::from_millis(5)));
            }
        }
        out
    }

    /// Receive one frame on queue `q` (reposting the buffers it used).
    pub fn recv(&mut self, q: usize) -> RxFrame {
        self.try_recv(q, WAIT).expect("no frame received in time")
    }

    pub fn try_recv(&mut self, q: usize, timeout: Duration) -> Option<RxFrame> {
        let deadline = Instant::now() + timeout;
        let fq = &mut self.queues[q];
        let mut frame = RxFrame {
            data: Vec::new(),
            flags: 0,
            gso: None,
            statuses: Vec::new(),
        };
        let mut first = true;
        let mut expect_extra = false;
        let mut used_ids = Vec::new();
        loop {
            let rsp = loop {
                // Take one response; the rest stay for the next call.
                let got = fq.rx.take_responses().expect("sane rx rsp_prod").next();
                if let Some(r) = got {
                    break r;
                }
                if Instant::now() >= deadline {
                    return None;
                }
                if !fq.rx.final_check_for_responses() {
                    let ch = fq.rx_chan.as_ref().unwrap_or(&fq.tx_chan);
                    ch.wait(Some(Duration::from_millis(5)));
                }
            };
            let slot_id = fq
                .posted
                .pop_front()
                .expect("response without a posted request");
            used_ids.push(slot_id);
            if expect_extra {
                let e = NetifExtraInfo::from_rx_slot(rsp);
                assert_eq!(
                    e.ty, XEN_NETIF_EXTRA_TYPE_GSO,
                    "extra after the first response is GSO"
                );
                frame.gso = Some(e.gso());
                expect_extra = false;
                continue;
            }
            assert_eq!(rsp.id, slot_id, "RX response not in its request's slot");
            frame.statuses.push(rsp.status);
            if first {
                frame.flags = rsp.flags;
            }
            if rsp.status > 0 {
                let page = &fq.rx_bufs[rsp.id as usize];
                let off = rsp.offset as usize;
                frame
                    .data
                    .extend_from_slice(&page_read(page)[off..off + rsp.status as usize]);
            }
            if first && rsp.flags & NETRXF_EXTRA_INFO != 0 {
                expect_extra = true;
            }
            first = false;
            if rsp.flags & NETRXF_MORE_DATA == 0 && !expect_extra {
                break;
            }
        }
        self.refill_rx(q, used_ids);
        Some(frame)
    }

    /// Repost every RX buffer whose request was answered (keeps ring full).
    pub fn refill_rx(&mut self, q: usize, ids: impl IntoIterator<Item = u16>) {
        let fq = &mut self.queues[q];
        for id in ids {
            let req = NetifRxRequest {
                id,
                pad: 0,
                gref: fq.rx_bufs[id as usize].gref,
            };
            fq.rx.produce_request(req).expect("room");
            fq.posted.push_back(id);
        }
        if fq.rx.push_requests_and_check_notify() {
            fq.rx_chan().notify();
        }
    }
}

fn poke_u32(page: NonNull<u8>, off: usize, v: u32) {
    // SAFETY: offsets 0..16 of a ring page are its u32 indices, naturally aligned;
    // AtomicU32 matches the backend's atomic access.
    let a = unsafe { &*page.as_ptr().add(off).cast::<AtomicU32>() };
    a.store(v, Ordering::Release);
}

/// A port that keeps every frame (with metadata) it receives.
#[derive(Default)]
pub struct Capture {
    pub frames: Mutex<Vec<(VifId, Vec<u8>, OffloadMeta)>>,
}

impl Capture {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn wait_frames(&self, n: usize) -> Vec<(VifId, Vec<u8>, OffloadMeta)> {
        let deadline = Instant::now() + WAIT;
        loop {
            let f = self.frames.lock().unwrap().clone();
            if f.len() >= n {
                return f;
            }
            assert!(
                Instant::now() < deadline,
                "captured only {} of {n} frames",
                f.len()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Port for Capture {
    fn transmit(&self, from: &Arc<VifLink>, _queue: u16, frames: &FrameBatch<'_>) {
        let mut v = self.frames.lock().unwrap();
        for f in frames.iter() {
            v.push((from.id(), f.data.to_vec(), f.meta));
        }
    }
}

/// An Ethernet frame of `len` bytes from `src` to `dst` with a recognisable payload.
pub fn eth_frame(dst: [u8; 6], src: [u8; 6], len: usize, seed: u8) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12] = 0x88;
    f[13] = 0xb5; // local experimental ethertype
    for (i, b) in f.iter_mut().enumerate().skip(14) {
        *b = (i as u8).wrapping_mul(31).wrapping_add(seed);
    }
    f
}

pub const MAC_A: [u8; 6] = [0x00, 0x16, 0x3e, 0, 0, 0x0a];
pub const MAC_B: [u8; 6] = [0x00, 0x16, 0x3e, 0, 0, 0x0b];
pub const MAC_DOM0: [u8; 6] = [0x00, 0x16, 0x3e, 0, 0, 0xd0];
