//! Guest RX: take frames waiting for this queue (or from a generator port), consume
//! the guest's posted buffers, grant-copy every frame of the batch in one call, and
//! answer each request in its own slot with the fragment size and `NETRXF_*` flags,
//! the GSO extra right after a packet's first response.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use hv::abi::netif::{
    NetifExtraGso, NetifExtraInfo, NetifRxResponse, RxBackRing, NETIF_RSP_ERROR, NETRXF_CSUM_BLANK,
    NETRXF_DATA_VALIDATED, NETRXF_EXTRA_INFO, NETRXF_MORE_DATA,
};
use hv::abi::ring::{RingError, RING_PAGE_SIZE};
use hv::env::{BackendEnv, CopyDir, CopySeg, EventChannel};

use super::{park_for_frames, poll_requests, ConnShared, CopyBatch, QueueShared, IDLE_WAIT};
use crate::counters::BatchCount;
use crate::error::FatalError;
use crate::frame::{GsoType, OwnedFrame};
use crate::port::RxEmitter;
use crate::validate::rx_slots_needed;

/// Frames taken from the inbound queue (or a generator) per pass. Responses are
/// pushed after every pass, so with a quarter ring per pass the guest consumes and
/// reposts one part while the next is being copied (both sides work at once instead
/// of taking turns over whole rings).
const RX_BATCH: usize = 256;

/// A response to write once the batch's copy is done.
#[derive(Debug, Clone, Copy)]
struct PendingRsp {
    rsp: NetifRxResponse,
    /// The copy segment whose status decides this data slot (`None` for an extra).
    seg: Option<usize>,
}

pub(crate) struct RxWorker<E: BackendEnv> {
    env: Arc<E>,
    conn: Arc<ConnShared>,
    qid: u16,
    q: Arc<QueueShared>,
    ring: RxBackRing,
    chan: Arc<E::Channel>,
    split: bool,
    pending: VecDeque<OwnedFrame>,
    done: Vec<OwnedFrame>,
    segs: CopyBatch,
    rsps: Vec<PendingRsp>,
    // Declared last: the ring above points into this mapping.
    _map: E::Mapping,
}

impl<E: BackendEnv> RxWorker<E> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        env: Arc<E>,
        conn: Arc<ConnShared>,
        qid: u16,
        q: Arc<QueueShared>,
        map: E::Mapping,
        ring: RxBackRing,
        chan: Arc<E::Channel>,
        split: bool,
    ) -> Self {
        let size = RxBackRing::SIZE as usize;
        Self {
            env,
            conn,
            qid,
            q,
            ring,
            chan,
            split,
            pending: VecDeque::with_capacity(2 * RX_BATCH),
            done: Vec::with_capacity(RX_BATCH),
            segs: CopyBatch(Vec::with_capacity(size)),
            rsps: Vec::with_capacity(size),
            _map: map,
        }
    }

    pub(crate) fn run(mut self) {
        loop {
            if self.conn.stopped() {
                break;
            }
            match self.rx_pass() {
                Err(e) => {
                    self.conn.counters.add_rx(&BatchCount {
                        errors: 1,
                        ..Default::default()
                    });
                    self.conn.fatal(e);
                    break;
                }
                Ok(true) => continue,
                Ok(false) => {}
            }
            let have_frames = !self.pending.is_empty()
                || !self.q.inbound.is_empty()
                || self.conn.port.generates();
            if !have_frames {
                park_for_frames(&self.conn, &self.q);
                continue;
            }
            // Frames wait but the guest has posted fewer buffers than the next frame
            // needs (maybe none): poll for a while (the guest is likely consuming and
            // about to repost), then ask for a notification when it posts more than it
            // has now (`req_event = req_prod + 1`, as Linux's
            // `xenvif_rx_ring_slots_available`) and sleep. Waiting only for "any
            // unconsumed request" would spin while a few buffers too few are posted.
            let ring = &self.ring;
            let prod = ring.req_prod();
            let needed = self
                .pending
                .front()
                .map_or(1, |f| rx_slots_needed(f.len(), f.meta.gso.is_some()));
            if prod.wrapping_sub(ring.req_cons()) >= needed {
                continue;
            }
            if poll_requests(
                || ring.req_prod(),
                prod,
                self.conn.busy_poll,
                &self.conn.stop,
            ) {
                continue;
            }
            if self.split {
                if self.ring.final_check_for_requests_after(prod) {
                    continue;
                }
                self.chan.wait(Some(IDLE_WAIT));
            } else {
                self.q.rx_waiting_guest.store(true, Ordering::SeqCst);
                if !self.ring.final_check_for_requests_after(prod) && !self.conn.stopped() {
                    std::thread::park_timeout(IDLE_WAIT);
                }
                self.q.rx_waiting_guest.store(false, Ordering::SeqCst);
            }
        }
        // Hand every buffer back so a reconnect starts from a full pool.
        self.done.extend(self.pending.drain(..));
        self.q.inbound.recycle(&mut self.done);
    }

    /// Posted buffers not yet consumed, after checking the producer index.
    fn available(&self) -> Result<u32, FatalError> {
        let prod = self.ring.req_prod();
        self.ring
            .check_request_prod(prod)
            .map_err(FatalError::RxRing)?;
        let pvt = self.ring.rsp_prod_pvt();
        let cons = self.ring.req_cons();
        if prod.wrapping_sub(pvt) < cons.wrapping_sub(pvt) {
            return Err(FatalError::RxRing(RingError::RequestProdRegressed {
                prod,
                cons,
            }));
        }
        Ok(prod.wrapping_sub(cons))
    }

    /// Whether the frontend can take a frame with this GSO type and length.
    fn acceptable(&self, f: &OwnedFrame, data_slots: u32) -> bool {
        let front = &self.conn.front;
        let gso_ok = match f.meta.gso.map(|g| g.ty) {
            None => true,
            Some(GsoType::TcpV4) => front.gso_tcpv4,
            Some(GsoType::TcpV6) => front.gso_tcpv6,
        };
        gso_ok && (data_slots <= 1 || front.sg) && !f.is_empty()
    }

    /// One batch. `Ok(true)` if any frame was delivered or dropped.
    #[inline(never)]
    fn rx_pass(&mut self) -> Result<bool, FatalError> {
        let dropped = self.q.inbound.take_dropped();
        if dropped != 0 {
            self.conn.counters.add_rx_drops(dropped as u64);
        }
        if self.pending.len() < RX_BATCH {
            let room = RX_BATCH - self.pending.len();
            self.q.inbound.drain_into(&mut self.pending, room);
        }
        let avail = self.available()?;
        if self.pending.is_empty() && avail > 0 && self.conn.port.generates() {
            let mut out = RxEmitter::new(&mut self.pending, (avail as usize).min(RX_BATCH));
            self.conn.port.generate(&self.conn.link, self.qid, &mut out);
        }
        if self.pending.is_empty() || avail == 0 {
            return Ok(false);
        }

        self.segs.0.clear();
        self.rsps.clear();
        let domid = self.conn.frontend;
        let mut count = BatchCount::default();
        let mut cons = self.ring.req_cons();
        let mut left = avail;
        let mut progressed = false;
        while let Some(frame) = self.pending.front() {
            let len = frame.len();
            let gso = frame.meta.gso;
            let needed = rx_slots_needed(len, gso.is_some());
            if !self.acceptable(frame, needed - u32::from(gso.is_some())) {
                if let Some(f) = self.pending.pop_front() {
                    self.done.push(f);
                }
                self.conn.counters.add_rx_drops(1);
                progressed = true;
                continue;
            }
            if needed > left {
                break;
            }
            let Some(frame) = self.pending.pop_front() else {
                break;
            };
            let data = frame.data();
            let mut base_flags = 0u16;
            if frame.meta.csum_blank {
                base_flags |= NETRXF_CSUM_BLANK | NETRXF_DATA_VALIDATED;
            } else if frame.meta.data_validated {
                base_flags |= NETRXF_DATA_VALIDATED;
            }
            let mut off = 0usize;
            let mut first = true;
            while first || off < len {
                let req = self.ring.copy_request(cons);
                cons = cons.wrapping_add(1);
                let chunk = (len - off).min(RING_PAGE_SIZE);
                let mut flags = 0u16;
                if first {
                    flags |= base_flags;
                    if gso.is_some() {
                        flags |= NETRXF_EXTRA_INFO;
                    }
                }
                if off + chunk < len {
                    flags |= NETRXF_MORE_DATA;
                }
                self.segs.0.push(CopySeg {
                    dir: CopyDir::ToForeign,
                    domid,
                    gref: req.gref,
                    offset: 0,
                    len: chunk as u16,
                    // The copy only reads the local side of a ToForeign segment.
                    local: data[off..].as_ptr().cast_mut(),
                    status: 0,
                });
                self.rsps.push(PendingRsp {
                    rsp: NetifRxResponse {
                        id: req.id,
                        offset: 0,
                        flags,
                        status: chunk as i16,
                    },
                    seg: Some(self.segs.0.len() - 1),
                });
                if first {
                    if let Some(g) = gso {
                        // The GSO extra takes the next request's slot.
                        let _ = self.ring.copy_request(cons);
                        cons = cons.wrapping_add(1);
                        let extra = NetifExtraInfo::new_gso(
                            NetifExtraGso {
                                size: g.size,
                                ty: g.ty.to_xen(),
                                pad: 0,
                                features: 0,
                            },
                            0,
                        );
                        self.rsps.push(PendingRsp {
                            rsp: extra.to_rx_slot(),
                            seg: None,
                        });
                    }
                }
                off += chunk;
                first = false;
            }
            left -= needed;
            count.packets += 1;
            count.bytes += len as u64;
            self.done.push(frame);
        }
        self.ring.set_req_cons(cons);

        if !self.segs.0.is_empty() {
            self.env.grant_copy(&mut self.segs.0);
        }
        for p in &self.rsps {
            let mut rsp = p.rsp;
            if let Some(i) = p.seg {
                if self.segs.0.get(i).is_some_and(|s| s.status != 0) {
                    rsp.status = NETIF_RSP_ERROR;
                    count.errors += 1;
                }
            }
            if self.ring.produce_response(rsp).is_err() {
                break;
            }
        }
        if !self.rsps.is_empty() {
            progressed = true;
            if self.ring.push_responses_and_check_notify() {
                self.chan.notify();
                count.notify_sent += 1;
            } else {
                count.notify_suppressed += 1;
            }
        }
        self.conn.counters.add_rx(&count);
        self.q.inbound.recycle(&mut self.done);
        Ok(progressed)
    }
}
