//! Guest RX: take frames waiting for this queue (read from the port's source, e.g. a
//! TAP queue, when nothing else waits; or from a generator port), consume
//! the guest's posted buffers, grant-copy every frame of the batch in one call, and
//! answer each request in its own slot with the fragment size and `NETRXF_*` flags,
//! the GSO extra right after a packet's first response.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use event_channel::{PollBudget, WaitOutcome};

use hv::abi::netif::{
    NetifExtraGso, NetifExtraInfo, NetifRxResponse, RxBackRing, NETIF_RSP_ERROR, NETRXF_CSUM_BLANK,
    NETRXF_DATA_VALIDATED, NETRXF_EXTRA_INFO, NETRXF_MORE_DATA,
};
use hv::abi::ring::{RingError, RingIdx, RING_PAGE_SIZE};
use hv::env::{BackendEnv, CopyDir, CopySeg, DomId, EventChannel};

use super::{park_for_frames, poll_requests, ConnShared, CopyBatch, QueueShared, IDLE_WAIT};
use crate::counters::BatchCount;
use crate::error::FatalError;
use crate::frame::{GsoType, OwnedFrame};
use crate::frontend::FrontFeatures;
use crate::port::{RxEmitter, RxSource};
use crate::validate::rx_slots_needed;

/// Frames taken from the inbound queue (or a generator) per pass. Responses are
/// pushed after every pass, so with a quarter ring per pass the guest consumes and
/// reposts one part while the next is being copied (both sides work at once instead
/// of taking turns over whole rings).
const RX_BATCH: usize = 64;

/// A data response already written to the ring, kept until the batch's copy is done
/// in case its segment fails and the response must become `NETIF_RSP_ERROR`.
#[derive(Debug, Clone, Copy)]
struct WrittenRsp {
    /// Ring index the response was written at.
    idx: RingIdx,
    rsp: NetifRxResponse,
}

pub(crate) struct RxWorker<E: BackendEnv> {
    env: Arc<E>,
    conn: Arc<ConnShared>,
    qid: u16,
    q: Arc<QueueShared>,
    ring: RxBackRing,
    chan: Arc<E::Channel>,
    split: bool,
    /// Frames taken from the inbound queue (recycled into its pool once copied).
    pending: VecDeque<OwnedFrame>,
    /// Frames from a generator port (dropped once copied: they share the port's
    /// buffers, so there is nothing to give back to the inbound pool).
    generated: VecDeque<OwnedFrame>,
    done: Vec<OwnedFrame>,
    segs: CopyBatch,
    /// One entry per segment of `segs`: the response that segment decides.
    written: Vec<WrittenRsp>,
    /// How long to poll for posted buffers before sleeping, adapted to the guest's
    /// pace.
    poll: PollBudget,
    /// How long to poll the inbound queue for the port's next frames before parking.
    frames_poll: PollBudget,
    /// Frames this thread reads itself when it has nothing left to deliver (e.g. the
    /// vif's TAP queue), if the port offers a source.
    source: Option<Box<dyn RxSource>>,
    /// How many times to try the source again (yielding in between) before sleeping
    /// on it, adapted to how soon its frames come.
    source_poll: PollBudget,
    // Declared last: the ring above points into this mapping.
    _map: E::Mapping,
}

/// What one pass took from a frame queue.
#[derive(Default)]
struct Taken {
    /// Frames at the queue's front that were delivered or dropped.
    frames: usize,
    /// Ring slots used.
    slots: u32,
    /// Frames refused by the frontend's features (dropped).
    refused: u64,
    /// The next frame needs more slots than are left (the pass must stop).
    blocked: bool,
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
        let poll = PollBudget::new(conn.busy_poll);
        // No polling at all with `busy_poll` 0.
        let source_poll = PollBudget::new(if conn.busy_poll == 0 {
            0
        } else {
            SOURCE_POLL_TRIES
        });
        Self {
            env,
            conn,
            qid,
            q,
            ring,
            chan,
            split,
            pending: VecDeque::with_capacity(2 * RX_BATCH),
            generated: VecDeque::with_capacity(2 * RX_BATCH),
            done: Vec::with_capacity(RX_BATCH),
            segs: CopyBatch(Vec::with_capacity(size)),
            written: Vec::with_capacity(size),
            poll,
            frames_poll: poll,
            source: None,
            source_poll,
            _map: map,
        }
    }

    pub(crate) fn run(mut self) {
        self.source = self.conn.port.rx_source(&self.conn.link, self.qid);
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
                || !self.generated.is_empty()
                || !self.q.inbound.is_empty()
                || self.conn.port.generates();
            if !have_frames {
                match self.source.as_mut() {
                    Some(src) => pull_or_wait(src.as_mut(), &mut self.source_poll),
                    None => park_for_frames(&self.conn, &self.q, &mut self.frames_poll),
                }
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
                .or(self.generated.front())
                .map_or(1, |f| rx_slots_needed(f.len(), f.meta.gso.is_some()));
            if prod.wrapping_sub(ring.req_cons()) >= needed {
                continue;
            }
            if poll_requests(
                || ring.req_prod(),
                prod,
                self.poll.rounds(),
                &self.conn.stop,
            ) {
                continue;
            }
            let slept = Instant::now();
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
            // Judged by the ring, not by how the wait ended: a park has no "woken" flag,
            // and what counts is whether the guest posted within the budget's reach.
            self.poll.after_sleep(WaitOutcome::of(
                self.ring.req_prod() != prod,
                Some(slept.elapsed()),
            ));
        }
        // Hand every buffer back so a reconnect starts from a full pool.
        self.done.extend(self.pending.drain(..));
        self.q.inbound.recycle(&mut self.done);
        self.generated.clear();
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
        if avail == 0 {
            return Ok(false);
        }
        if self.pending.is_empty() && self.generated.is_empty() && self.conn.port.generates() {
            let mut out = RxEmitter::new(&mut self.generated, (avail as usize).min(RX_BATCH));
            self.conn.port.generate(&self.conn.link, self.qid, &mut out);
        }
        if self.pending.is_empty() && self.generated.is_empty() {
            return Ok(false);
        }

        // Every request consumed in earlier passes was answered in its pass.
        debug_assert_eq!(self.ring.rsp_prod_pvt(), self.ring.req_cons());
        self.segs.0.clear();
        self.written.clear();
        let mut batch = Batch {
            ring: &mut self.ring,
            segs: &mut self.segs.0,
            written: &mut self.written,
            front: &self.conn.front,
            domid: self.conn.frontend,
            left: avail,
            count: BatchCount::default(),
        };
        let from_inbound = batch.take(&self.pending);
        let from_gen = if from_inbound.blocked {
            Taken::default()
        } else {
            batch.take(&self.generated)
        };
        let mut count = batch.count;

        if !self.segs.0.is_empty() {
            self.env.grant_copy(&mut self.segs.0);
        }
        count.errors += answer_failed_copies(&mut self.ring, &self.segs.0, &self.written);
        let refused = from_inbound.refused + from_gen.refused;
        let mut progressed = refused != 0;
        if from_inbound.slots + from_gen.slots != 0 {
            progressed = true;
            if self.ring.push_responses_and_check_notify() {
                self.chan.notify();
                count.notify_sent += 1;
            } else {
                count.notify_suppressed += 1;
            }
        }
        if refused != 0 {
            self.conn.counters.add_rx_drops(refused);
        }
        self.conn.counters.add_rx(&count);
        // The copy is done: the frames' buffers may go.
        if from_inbound.frames != 0 {
            self.done.extend(self.pending.drain(..from_inbound.frames));
            self.q.inbound.recycle(&mut self.done);
        }
        self.generated.drain(..from_gen.frames);
        Ok(progressed)
    }
}

/// Most times an idle RX thread tries its source again, yielding the CPU in between,
/// before it sleeps on it. Each try is a system call (a `readv` that finds the TAP
/// empty), hence far fewer than the ring polls' rounds: ~30 µs here. The frames of a
/// paced sender arrive tens of microseconds apart, and a thread woken for each one
/// may wait for a CPU first. Measured kernel → guest TCP through a TAP with a bbr
/// sender, A/B pairs against sleeping at once: while the machine ran slow, 8 of 8
/// faster, median 15.9 against 11.0 Gbit/s and 0.94 against 1.12 CPU-s/GB; later,
/// with both at ~17 Gbit/s, no difference (16 pairs). 128 tries: the same as 32.
const SOURCE_POLL_TRIES: u32 = 32;

/// Read the source; if it had nothing, try again up to the budget's rounds (yielding
/// in between), then sleep on it and adapt the budget to how soon it woke.
fn pull_or_wait(src: &mut dyn RxSource, poll: &mut PollBudget) {
    if src.pull() > 0 {
        return;
    }
    for _ in 0..poll.rounds() {
        std::thread::yield_now();
        if src.pull() > 0 {
            return;
        }
    }
    let slept = Instant::now();
    let woken = src.wait(IDLE_WAIT);
    poll.after_sleep(WaitOutcome::of(woken, Some(slept.elapsed())));
}

/// Responses are written before the batch's copy runs (they are published only after
/// it); rewrite the response of every failed segment as `NETIF_RSP_ERROR` (id and
/// flags kept, as Linux's `xenvif_rx_copy_flush` does). `written[i]` is the response
/// `segs[i]` decides. Returns how many failed.
fn answer_failed_copies(ring: &mut RxBackRing, segs: &[CopySeg], written: &[WrittenRsp]) -> u64 {
    let mut failed = 0;
    for (seg, w) in segs.iter().zip(written) {
        if seg.status != 0 {
            ring.write_response(
                w.idx,
                NetifRxResponse {
                    status: NETIF_RSP_ERROR,
                    ..w.rsp
                },
            );
            failed += 1;
        }
    }
    failed
}

/// The ring-facing half of one pass: consumes requests, queues the grant copies and
/// writes each request's response in its slot (published after the copy).
struct Batch<'a> {
    ring: &'a mut RxBackRing,
    segs: &'a mut Vec<CopySeg>,
    written: &'a mut Vec<WrittenRsp>,
    front: &'a FrontFeatures,
    domid: DomId,
    /// Posted requests not consumed yet.
    left: u32,
    count: BatchCount,
}

impl Batch<'_> {
    /// Whether the frontend can take a frame with this GSO type and length.
    #[inline(always)]
    fn acceptable(&self, f: &OwnedFrame, data_slots: u32) -> bool {
        let gso_ok = match f.meta.gso.map(|g| g.ty) {
            None => true,
            Some(GsoType::TcpV4) => self.front.gso_tcpv4,
            Some(GsoType::TcpV6) => self.front.gso_tcpv6,
        };
        gso_ok && (data_slots <= 1 || self.front.sg) && !f.is_empty()
    }

    /// Deliver frames from the front of `frames` while they fit the posted buffers.
    /// The frames stay in the queue: the copy segments point into them.
    fn take(&mut self, frames: &VecDeque<OwnedFrame>) -> Taken {
        let mut t = Taken::default();
        for frame in frames {
            let len = frame.len();
            let gso = frame.meta.gso;
            let needed = rx_slots_needed(len, gso.is_some());
            if !self.acceptable(frame, needed - u32::from(gso.is_some())) {
                t.frames += 1;
                t.refused += 1;
                continue;
            }
            if needed > self.left {
                t.blocked = true;
                break;
            }
            if len <= RING_PAGE_SIZE && gso.is_none() {
                self.one_slot(frame);
            } else {
                self.multi_slot(frame);
            }
            self.left -= needed;
            t.slots += needed;
            t.frames += 1;
            self.count.packets += 1;
            self.count.bytes += len as u64;
        }
        t
    }

    /// `NETRXF_*` flags every response of a frame carries from its metadata.
    #[inline(always)]
    fn base_flags(frame: &OwnedFrame) -> u16 {
        if frame.meta.csum_blank {
            NETRXF_CSUM_BLANK | NETRXF_DATA_VALIDATED
        } else if frame.meta.data_validated {
            NETRXF_DATA_VALIDATED
        } else {
            0
        }
    }

    /// Consume the next request and answer it in its slot with `rsp` (its id set
    /// from the request for a data slot, which is then remembered in case its copy
    /// fails); returns the request's grant.
    #[inline(always)]
    fn consume_and_answer(&mut self, mut rsp: NetifRxResponse, data: bool) -> u32 {
        let cons = self.ring.req_cons();
        let req = self.ring.copy_request(cons);
        self.ring.set_req_cons(cons.wrapping_add(1));
        if data {
            rsp.id = req.id;
            // RX answers in lockstep: the response to request `cons` goes in slot
            // `cons`.
            self.written.push(WrittenRsp { idx: cons, rsp });
        }
        // Cannot be refused: the request just consumed is unanswered.
        let _ = self.ring.produce_response(rsp);
        req.gref
    }

    /// A frame that fits one buffer and has no extra: one request, one segment.
    #[inline(always)]
    fn one_slot(&mut self, frame: &OwnedFrame) {
        let data = frame.data();
        let len = data.len() as u16;
        let gref = self.consume_and_answer(
            NetifRxResponse {
                id: 0,
                offset: 0,
                flags: Self::base_flags(frame),
                status: len as i16,
            },
            true,
        );
        self.push_seg(gref, data.as_ptr(), len);
    }

    /// A frame over several buffers and/or with the GSO extra after its first
    /// response (`NETRXF_extra_info`, `NETRXF_more_data`).
    fn multi_slot(&mut self, frame: &OwnedFrame) {
        let data = frame.data();
        let len = data.len();
        let gso = frame.meta.gso;
        let base_flags = Self::base_flags(frame);
        let mut off = 0usize;
        let mut first = true;
        while first || off < len {
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
            let gref = self.consume_and_answer(
                NetifRxResponse {
                    id: 0,
                    offset: 0,
                    flags,
                    status: chunk as i16,
                },
                true,
            );
            // The copy only reads the local side of a ToForeign segment.
            self.push_seg(gref, data[off..].as_ptr(), chunk as u16);
            if first {
                if let Some(g) = gso {
                    // The GSO extra takes the next request's slot.
                    let extra = NetifExtraInfo::new_gso(
                        NetifExtraGso {
                            size: g.size,
                            ty: g.ty.to_xen(),
                            pad: 0,
                            features: 0,
                        },
                        0,
                    );
                    self.consume_and_answer(extra.to_rx_slot(), false);
                }
            }
            off += chunk;
            first = false;
        }
    }

    #[inline(always)]
    fn push_seg(&mut self, gref: u32, local: *const u8, len: u16) {
        self.segs.push(CopySeg {
            dir: CopyDir::ToForeign,
            domid: self.domid,
            gref,
            offset: 0,
            len,
            // The copy only reads the local side of a ToForeign segment.
            local: local.cast_mut(),
            status: 0,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{Gso, OffloadMeta};
    use hv::abi::netif::{NetifRxRequest, RxFrontRing, XEN_NETIF_EXTRA_TYPE_GSO};
    use std::ptr::NonNull;

    /// A page-aligned ring page owned by the test.
    #[repr(C, align(4096))]
    struct Page([u8; RING_PAGE_SIZE]);

    fn frame(len: usize, seed: u8, meta: OffloadMeta) -> OwnedFrame {
        let data: Vec<u8> = (0..len).map(|i| seed.wrapping_add(i as u8)).collect();
        OwnedFrame::shared(Arc::from(data), meta)
    }

    const FEATURES: FrontFeatures = FrontFeatures {
        sg: true,
        gso_tcpv4: true,
        gso_tcpv6: false,
        no_csum_offload: false,
        ipv6_csum_offload: false,
        rx_notify: true,
    };

    /// One pass over a ring the test plays the frontend of: requests consumed in
    /// order, each answered in its own slot with its id, the GSO extra right after
    /// the first response, a frame refused by the features dropped without a slot, a
    /// frame too big for the buffers left not consumed, and a failed copy turned into
    /// `NETIF_RSP_ERROR` in exactly its slot.
    #[test]
    fn take_answers_in_lockstep_and_failed_copies_become_errors() {
        let mut page = Box::new(Page([0; RING_PAGE_SIZE]));
        let ptr = NonNull::from(&mut page.0).cast::<u8>();
        // SAFETY: the boxed page is 4 KiB, page-aligned and outlives both rings, which
        // are the only users of it (both on this thread).
        let mut front = unsafe { RxFrontRing::init(ptr) };
        // SAFETY: as above; the page was initialised by the front ring.
        let mut back = unsafe { RxBackRing::init(ptr) };
        // Six buffers, ids 100.., grants 500..
        for i in 0..6u16 {
            front
                .produce_request(NetifRxRequest {
                    id: 100 + i,
                    pad: 0,
                    gref: 500 + u32::from(i),
                })
                .expect("room");
        }
        front.push_requests();

        let gso = OffloadMeta {
            csum_blank: true,
            data_validated: true,
            gso: Some(Gso {
                ty: GsoType::TcpV4,
                size: 1448,
            }),
        };
        let v6 = OffloadMeta {
            gso: Some(Gso {
                ty: GsoType::TcpV6,
                size: 1448,
            }),
            ..gso
        };
        let frames: VecDeque<OwnedFrame> = [
            frame(64, 1, OffloadMeta::default()),
            // Refused: the frontend has no feature-gso-tcpv6.
            frame(5000, 2, v6),
            // Two data slots and the extra.
            frame(5000, 3, gso),
            frame(100, 4, OffloadMeta::default()),
            // Needs two slots, only one is left.
            frame(6000, 5, OffloadMeta::default()),
        ]
        .into();

        let mut segs = Vec::new();
        let mut written = Vec::new();
        let mut batch = Batch {
            ring: &mut back,
            segs: &mut segs,
            written: &mut written,
            front: &FEATURES,
            domid: 7,
            left: 6,
            count: BatchCount::default(),
        };
        let t = batch.take(&frames);
        let count = batch.count;
        assert_eq!((t.frames, t.slots, t.refused, t.blocked), (4, 5, 1, true));
        assert_eq!((count.packets, count.bytes), (3, 64 + 5000 + 100));
        assert_eq!(back.req_cons(), 5, "the blocked frame consumed nothing");

        // Segments: one per data slot, on the slots' grants, covering each frame.
        let got: Vec<(u32, u16)> = segs.iter().map(|s| (s.gref, s.len)).collect();
        assert_eq!(got, vec![(500, 64), (501, 4096), (503, 904), (504, 100)]);
        // SAFETY: the segments point into `frames`, alive and unchanged.
        let first = unsafe { std::slice::from_raw_parts(segs[2].local, 904) };
        assert_eq!(first, &frames[2].data()[4096..]);
        assert_eq!(written.len(), segs.len());

        // The copy of the frame in slot 4 fails.
        segs[3].status = -1;
        assert_eq!(answer_failed_copies(&mut back, &segs, &written), 1);
        back.push_responses();

        let rsps: Vec<NetifRxResponse> = front.take_responses().expect("sane").collect();
        assert_eq!(rsps.len(), 5);
        let data: Vec<(u16, u16, i16)> = [0, 1, 3, 4]
            .iter()
            .map(|&i| (rsps[i].id, rsps[i].flags, rsps[i].status))
            .collect();
        assert_eq!(
            data,
            vec![
                (100, 0, 64),
                (
                    101,
                    NETRXF_CSUM_BLANK
                        | NETRXF_DATA_VALIDATED
                        | NETRXF_EXTRA_INFO
                        | NETRXF_MORE_DATA,
                    4096
                ),
                (103, 0, 904),
                (104, 0, NETIF_RSP_ERROR),
            ]
        );
        let extra = NetifExtraInfo::from_rx_slot(rsps[2]);
        assert_eq!(extra.ty, XEN_NETIF_EXTRA_TYPE_GSO);
        assert_eq!(extra.gso().size, 1448);
        assert_eq!(back.req_prod().wrapping_sub(back.req_cons()), 1);
    }
}
