//! A tiny hand-written backend for netfront's end-to-end tests: it maps the rings with
//! `BackendEnv`, grant-copies frames out of TX and into RX, and either echoes them back
//! to the same vif or cross-connects two vifs. It validates nothing beyond what it needs
//! (the real, validating netback lives in the netback crate).
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use hv::abi::netif::*;
use hv::abi::xenbus::XenbusState;
use hv::embedded::{DomainConfig, EmbeddedBackendEnv, Hypervisor};
use hv::env::{BackendEnv, CopyDir, CopySeg, DomId, EventChannel, Store, XBT_NIL};
use hv::toolstack::{add_vif, backend_path, frontend_path, VifConfig};
use hv::xenbus::{path_join, read_u32, xenbus_read_state, xenbus_switch_state};

pub type Chan = <EmbeddedBackendEnv as BackendEnv>::Channel;
pub type Map = <EmbeddedBackendEnv as BackendEnv>::Mapping;

/// What the test backend offers.
#[derive(Clone, Debug)]
pub struct BackOpts {
    pub split: bool,
    pub max_queues: u32,
    pub sg: bool,
    pub gso: bool,
    pub ipv6_csum: bool,
}

impl Default for BackOpts {
    fn default() -> Self {
        BackOpts {
            split: true,
            max_queues: 4,
            sg: true,
            gso: true,
            ipv6_csum: true,
        }
    }
}

/// A hypervisor with `n` guests, each with vif 0 (MAC 00:16:3e:00:00:<domid>).
pub fn setup(n: usize) -> (Hypervisor, Vec<DomId>) {
    let hv = Hypervisor::new().expect("hypervisor");
    let dom0 = hv.store(0).expect("dom0 store");
    let mut doms = Vec::new();
    for i in 0..n {
        let cfg = DomainConfig {
            name: format!("guest{i}"),
            ..Default::default()
        };
        let d = hv.create_domain(&cfg).expect("domain");
        add_vif(
            &dom0,
            &VifConfig {
                frontend: d,
                backend: 0,
                devid: 0,
                mac: [0, 0x16, 0x3e, 0, 0, d as u8],
                rate: None,
            },
        )
        .expect("add_vif");
        doms.push(d);
    }
    (hv, doms)
}

/// Write the backend's features and go to InitWait (what netback's probe does).
pub fn announce(store: &dyn Store, be: &str, o: &BackOpts) {
    let w = |k: &str, v: &str| {
        store
            .write(XBT_NIL, &path_join(be, k), v.as_bytes())
            .expect("write")
    };
    let b = |x: bool| if x { "1" } else { "0" };
    w("feature-rx-copy", "1");
    w("feature-sg", b(o.sg));
    w("feature-gso-tcpv4", b(o.gso));
    w("feature-gso-tcpv6", b(o.gso));
    w("feature-ipv6-csum-offload", b(o.ipv6_csum));
    w("feature-split-event-channels", b(o.split));
    w("multi-queue-max-queues", &o.max_queues.to_string());
    xenbus_switch_state(store, be, XenbusState::InitWait).expect("InitWait");
}

pub fn wait_state(
    store: &dyn Store,
    dev: &str,
    pred: impl Fn(XenbusState) -> bool,
    t: Duration,
) -> XenbusState {
    let end = Instant::now() + t;
    loop {
        let s = xenbus_read_state(store, dev).unwrap_or(XenbusState::Unknown);
        if pred(s) {
            return s;
        }
        assert!(
            Instant::now() < end,
            "timed out waiting on {dev}: state {s:?}"
        );
        thread::sleep(Duration::from_millis(1));
    }
}

pub struct TxBack {
    pub ring: TxBackRing,
    _map: Map,
    pub chan: Arc<Chan>,
}

pub struct RxBack {
    pub ring: RxBackRing,
    _map: Map,
    pub chan: Arc<Chan>,
}

/// One mapped queue of a vif.
pub struct QueueBack {
    pub tx: TxBack,
    pub rx: RxBack,
}

/// A connected vif seen from the test backend.
pub struct VifBack {
    pub frontend: DomId,
    pub be: String,
    pub fe: String,
    pub queues: Vec<QueueBack>,
}

/// Map the rings and bind the channels the frontend published, then go Connected.
pub fn accept(env: &EmbeddedBackendEnv, frontend: DomId, devid: u32) -> VifBack {
    let store = env.store();
    let be = backend_path(0, frontend, devid);
    let fe = frontend_path(frontend, devid);
    wait_state(
        store,
        &fe,
        |s| matches!(s, XenbusState::Connected | XenbusState::Initialised),
        Duration::from_secs(10),
    );
    let nq = read_u32(store, XBT_NIL, &path_join(&fe, "multi-queue-num-queues")).unwrap_or(1);
    let mut queues = Vec::new();
    for i in 0..nq {
        let dir = if nq == 1 {
            fe.clone()
        } else {
            format!("{fe}/queue-{i}")
        };
        let r = |k: &str| read_u32(store, XBT_NIL, &path_join(&dir, k)).expect(k);
        let txm = env
            .map_grant(frontend, r("tx-ring-ref"), false)
            .expect("map tx");
        let rxm = env
            .map_grant(frontend, r("rx-ring-ref"), false)
            .expect("map rx");
        let (tc, rc) = match read_u32(store, XBT_NIL, &path_join(&dir, "event-channel")) {
            Ok(p) => {
                let c = Arc::new(env.bind_interdomain(frontend, p).expect("bind"));
                (c.clone(), c)
            }
            Err(_) => (
                Arc::new(
                    env.bind_interdomain(frontend, r("event-channel-tx"))
                        .expect("bind tx"),
                ),
                Arc::new(
                    env.bind_interdomain(frontend, r("event-channel-rx"))
                        .expect("bind rx"),
                ),
            ),
        };
        use hv::env::MappedPage;
        // SAFETY: the mappings are 4 KiB pages the frontend initialised as rings; they
        // live in the same struct as the ring views.
        let (txr, rxr) = unsafe { (TxBackRing::init(txm.ptr()), RxBackRing::init(rxm.ptr())) };
        queues.push(QueueBack {
            tx: TxBack {
                ring: txr,
                _map: txm,
                chan: tc,
            },
            rx: RxBack {
                ring: rxr,
                _map: rxm,
                chan: rc,
            },
        });
    }
    xenbus_switch_state(store, &be, XenbusState::Connected).expect("Connected");
    VifBack {
        frontend,
        be,
        fe,
        queues,
    }
}

/// A frame read from a TX ring.
#[derive(Debug, Clone, Default)]
pub struct Frame {
    pub data: Vec<u8>,
    pub csum_blank: bool,
    pub data_validated: bool,
    pub gso: Option<(u8, u16)>,
}

/// Status the test backend answers TX requests with (to exercise error counting).
pub static TX_STATUS: AtomicU32 = AtomicU32::new(0);

impl TxBack {
    /// Read one whole packet (if all its requests are there), copy its bytes out with
    /// one batched grant copy, answer every slot.
    pub fn take(&mut self, env: &EmbeddedBackendEnv, dom: DomId, out: &mut Frame) -> bool {
        let avail = self.ring.unconsumed_requests();
        if avail == 0 {
            return false;
        }
        let cons = self.ring.req_cons();
        let first = self.ring.copy_request(cons);
        let mut reqs = vec![(cons, first)];
        let mut i = 1u32;
        let mut gso = None;
        if first.flags & NETTXF_EXTRA_INFO != 0 {
            if i >= avail {
                return false;
            }
            let e = NetifExtraInfo::from_tx_slot(self.ring.copy_request(cons.wrapping_add(i)));
            gso = Some((e.gso().ty, e.gso().size));
            i += 1;
        }
        let mut more = first.flags & NETTXF_MORE_DATA != 0;
        while more {
            if i >= avail {
                return false;
            }
            let r = self.ring.copy_request(cons.wrapping_add(i));
            reqs.push((cons.wrapping_add(i), r));
            more = r.flags & NETTXF_MORE_DATA != 0;
            i += 1;
        }
        let total = first.size as usize;
        let rest: usize = reqs[1..].iter().map(|(_, r)| r.size as usize).sum();
        let first_len = total - rest;
        out.data.clear();
        out.data.resize(total, 0);
        let mut segs = Vec::with_capacity(reqs.len());
        let mut off = 0usize;
        for (k, (_, r)) in reqs.iter().enumerate() {
            let len = if k == 0 { first_len } else { r.size as usize };
            segs.push(CopySeg {
                dir: CopyDir::FromForeign,
                domid: dom,
                gref: r.gref,
                offset: r.offset,
                len: len as u16,
                local: out.data[off..].as_mut_ptr(),
                status: 0,
            });
            off += len;
        }
        env.grant_copy(&mut segs);
        assert!(
            segs.iter().all(|s| s.status == 0),
            "grant copy failed: {:?}",
            segs.iter().map(|s| s.status).collect::<Vec<_>>()
        );
        out.csum_blank = first.flags & NETTXF_CSUM_BLANK != 0;
        out.data_validated = first.flags & NETTXF_DATA_VALIDATED != 0;
        out.gso = gso;
        // Consume and answer every slot (NULL for the extra).
        let status = TX_STATUS.load(Ordering::Relaxed) as i16;
        for k in 0..i {
            let idx = cons.wrapping_add(k);
            let req = self.ring.copy_request(idx);
            let is_extra = first.flags & NETTXF_EXTRA_INFO != 0 && k == 1;
            self.ring.set_req_cons(idx.wrapping_add(1));
            let rsp = if is_extra {
                NetifTxResponse {
                    id: 0,
                    status: NETIF_RSP_NULL,
                }
            } else {
                NetifTxResponse { id: req.id, status }
            };
            self.ring.produce_response(rsp).expect("respond");
        }
        true
    }

    pub fn push(&mut self) {
        if self.ring.push_responses_and_check_notify() {
            self.chan.notify();
        }
    }
}

impl RxBack {
    /// Deliver a frame into posted buffers, multi-slot with the GSO extra after the first
    /// response. False (nothing consumed) if not enough buffers are posted.
    pub fn deliver(&mut self, env: &EmbeddedBackendEnv, dom: DomId, f: &Frame) -> bool {
        let nslots = f.data.len().div_ceil(4096).max(1);
        let need = nslots + usize::from(f.gso.is_some());
        if (self.ring.unconsumed_requests() as usize) < need {
            return false;
        }
        let mut segs = Vec::with_capacity(nslots);
        let mut rsps = Vec::with_capacity(need);
        let mut cons = self.ring.req_cons();
        for k in 0..nslots {
            let req = self.ring.copy_request(cons);
            cons = cons.wrapping_add(1);
            let off = k * 4096;
            let len = (f.data.len() - off).min(4096);
            segs.push(CopySeg {
                dir: CopyDir::ToForeign,
                domid: dom,
                gref: req.gref,
                offset: 0,
                len: len as u16,
                local: f.data[off..].as_ptr() as *mut u8,
                status: 0,
            });
            let mut flags = if k + 1 < nslots { NETRXF_MORE_DATA } else { 0 };
            if k == 0 {
                if f.csum_blank {
                    flags |= NETRXF_CSUM_BLANK | NETRXF_DATA_VALIDATED;
                } else if f.data_validated {
                    flags |= NETRXF_DATA_VALIDATED;
                }
                if f.gso.is_some() {
                    flags |= NETRXF_EXTRA_INFO;
                }
            }
            rsps.push(NetifRxResponse {
                id: req.id,
                offset: 0,
                flags,
                status: len as i16,
            });
            if k == 0 {
                if let Some((ty, size)) = f.gso {
                    cons = cons.wrapping_add(1);
                    let e = NetifExtraInfo::new_gso(
                        NetifExtraGso {
                            size,
                            ty,
                            pad: 0,
                            features: 0,
                        },
                        0,
                    );
                    rsps.push(e.to_rx_slot());
                }
            }
        }
        env.grant_copy(&mut segs);
        assert!(segs.iter().all(|s| s.status == 0), "rx grant copy failed");
        self.ring.set_req_cons(cons);
        for r in rsps {
            self.ring.produce_response(r).expect("rx respond");
        }
        true
    }

    pub fn push(&mut self) {
        if self.ring.push_responses_and_check_notify() {
            self.chan.notify();
        }
    }
}

/// Move every frame from `tx` (of guest `from`) to `rx` (of guest `to`) until `stop`.
/// Applies backpressure: a frame waits in hand until the receiver posts buffers.
pub fn pump(
    env: &EmbeddedBackendEnv,
    mut tx: TxBack,
    from: DomId,
    mut rx: RxBack,
    to: DomId,
    stop: Arc<AtomicBool>,
) -> (TxBack, RxBack) {
    let mut f = Frame::default();
    let mut held = false;
    while !stop.load(Ordering::Relaxed) {
        let mut moved = 0;
        loop {
            if !held {
                if !tx.take(env, from, &mut f) {
                    break;
                }
                held = true;
            }
            if !rx.deliver(env, to, &f) {
                break;
            }
            held = false;
            moved += 1;
            if moved % 64 == 0 {
                tx.push();
                rx.push();
            }
        }
        tx.push();
        rx.push();
        if moved == 0 {
            if held {
                if !rx.ring.final_check_for_requests() {
                    rx.chan.wait(Some(Duration::from_millis(1)));
                }
            } else if !tx.ring.final_check_for_requests() {
                tx.chan.wait(Some(Duration::from_millis(1)));
            }
        }
    }
    (tx, rx)
}

/// Echo every frame of each queue back to the same queue, one thread per queue.
pub fn spawn_echo(
    env: Arc<EmbeddedBackendEnv>,
    vif: VifBack,
    stop: Arc<AtomicBool>,
) -> Vec<thread::JoinHandle<()>> {
    let dom = vif.frontend;
    vif.queues
        .into_iter()
        .map(|q| {
            let (env, stop) = (env.clone(), stop.clone());
            thread::spawn(move || {
                pump(&env, q.tx, dom, q.rx, dom, stop);
            })
        })
        .collect()
}
