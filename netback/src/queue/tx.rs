//! Guest TX: drain every published request in batches, validate, grant-copy the data
//! into netback's own buffer (one `grant_copy` per cache-sized chunk), hand the frames
//! to the port, answer every slot, push once per batch and notify only if the guest
//! asked.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use event_channel::{PollBudget, WaitOutcome};

use hv::abi::netif::{
    NetifTxRequest, NetifTxResponse, TxBackRing, NETIF_RSP_ERROR, NETIF_RSP_NULL, NETIF_RSP_OKAY,
};
use hv::abi::ring::RingError;
use hv::env::{BackendEnv, CopyDir, CopySeg, EventChannel};

use super::{poll_requests, ConnShared, CopyBatch, QueueShared, IDLE_WAIT};
use crate::counters::BatchCount;
use crate::error::FatalError;
use crate::frame::{FrameBatch, FrameDesc, MAX_FRAME_LEN};
use crate::validate::{parse_tx_packet, TxVerdict};

/// Packet bytes grant-copied and handed to the port at a time. A batch of a whole ring
/// of 1514-byte frames is ~380 KiB; copying and handing it over in chunks keeps each
/// chunk in cache between the copy and the port's write and lets the responses go out
/// per chunk (see `copy_and_transmit`). Measured into a TAP at 1514 B (A/B, 3 runs
/// each): the same frames/s within noise, but event-channel notifications to a guest
/// waiting on a full ring fell from ~5 to ~0.1 per 1000 frames, and the arena shrank
/// from ~1 MiB to ~112 KiB per queue.
const CHUNK_BYTES: usize = 48 << 10;

/// Bytes of packet buffer per queue: one chunk plus the largest packet that can start
/// just below the chunk limit.
const ARENA_SIZE: usize = CHUNK_BYTES + MAX_FRAME_LEN;

/// Batches processed before the thread looks at its stop flag again.
const MAX_BATCHES_PER_PASS: usize = 64;

/// Slots consumed per batch (a soft limit: the packet that crosses it is finished):
/// one ring's worth. Smaller batches push responses sooner, which a busy-polling
/// frontend does not need (measured: same rate at 64, 128, 256) and which costs a
/// frontend that sleeps while its ring is full one wake-up per push (a third of the
/// rate at 64).
const TX_BATCH_SLOTS: u32 = 256;

pub(crate) struct TxWorker<E: BackendEnv> {
    env: Arc<E>,
    conn: Arc<ConnShared>,
    qid: u16,
    q: Arc<QueueShared>,
    ring: TxBackRing,
    chan: Arc<E::Channel>,
    /// One event channel for both rings: this thread waits on it for the RX thread too.
    shared_channel: bool,
    slots: Vec<NetifTxRequest>,
    segs: CopyBatch,
    descs: Vec<FrameDesc>,
    arena: Box<[u8]>,
    /// How long to poll the ring before sleeping, adapted to the guest's pace.
    poll: PollBudget,
    // Declared last: the ring above points into this mapping.
    _map: E::Mapping,
}

impl<E: BackendEnv> TxWorker<E> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        env: Arc<E>,
        conn: Arc<ConnShared>,
        qid: u16,
        q: Arc<QueueShared>,
        map: E::Mapping,
        ring: TxBackRing,
        chan: Arc<E::Channel>,
        split: bool,
    ) -> Self {
        let size = TxBackRing::SIZE as usize;
        let poll = PollBudget::new(conn.busy_poll);
        Self {
            env,
            conn,
            qid,
            q,
            ring,
            chan,
            shared_channel: !split,
            slots: Vec::with_capacity(size),
            segs: CopyBatch(Vec::with_capacity(size)),
            descs: Vec::with_capacity(size),
            arena: vec![0u8; ARENA_SIZE].into_boxed_slice(),
            poll,
            _map: map,
        }
    }

    pub(crate) fn run(mut self) {
        loop {
            if self.conn.stopped() {
                break;
            }
            match self.tx_pass() {
                Err(e) => {
                    self.conn.counters.add_tx(&BatchCount {
                        errors: 1,
                        ..Default::default()
                    });
                    self.conn.fatal(e);
                    break;
                }
                Ok(true) => {
                    self.forward_rx_event(false);
                    continue;
                }
                Ok(false) => {}
            }
            self.forward_rx_event(false);
            let ring = &self.ring;
            if poll_requests(
                || ring.req_prod(),
                ring.req_cons(),
                self.poll.rounds(),
                &self.conn.stop,
            ) {
                continue;
            }
            if self.ring.final_check_for_requests() {
                continue;
            }
            let slept = Instant::now();
            let got = self.chan.wait(Some(IDLE_WAIT));
            self.poll
                .after_sleep(WaitOutcome::of(got, Some(slept.elapsed())));
            self.forward_rx_event(got);
        }
    }

    /// With a shared channel, an event may be the guest posting RX buffers the RX
    /// thread is waiting for: wake it.
    fn forward_rx_event(&self, got_event: bool) {
        if !self.shared_channel || !self.q.rx_waiting_guest.load(Ordering::SeqCst) {
            return;
        }
        if got_event || self.chan.try_consume() {
            self.q.wake_rx();
        }
    }

    /// Requests published and not consumed, after checking the producer index
    /// (`RING_REQUEST_PROD_OVERFLOW`, "Impossible number of requests").
    fn available(&self) -> Result<u32, FatalError> {
        let prod = self.ring.req_prod();
        self.ring
            .check_request_prod(prod)
            .map_err(FatalError::TxRing)?;
        let pvt = self.ring.rsp_prod_pvt();
        let cons = self.ring.req_cons();
        if prod.wrapping_sub(pvt) < cons.wrapping_sub(pvt) {
            return Err(FatalError::TxRing(RingError::RequestProdRegressed {
                prod,
                cons,
            }));
        }
        Ok(prod.wrapping_sub(cons))
    }

    /// Process batches until the ring is empty. `Ok(true)` if anything was consumed.
    fn tx_pass(&mut self) -> Result<bool, FatalError> {
        let mut any = false;
        for _ in 0..MAX_BATCHES_PER_PASS {
            let work = self.available()?;
            if work == 0 {
                break;
            }
            self.tx_batch(work)?;
            any = true;
        }
        Ok(any)
    }

    /// One batch: parse as many packets as are published (up to [`TX_BATCH_SLOTS`]),
    /// grant-copy them and hand them to the port chunk by chunk ([`CHUNK_BYTES`]), push
    /// the responses once.
    ///
    /// Each packet's responses are written into the ring as soon as it is parsed (the
    /// slots were copied out already, so answering in place is what the ring is for);
    /// the frontend sees none of them before the push, which comes after the copy.
    #[inline(never)]
    fn tx_batch(&mut self, work: u32) -> Result<(), FatalError> {
        self.slots.clear();
        self.segs.0.clear();
        self.descs.clear();
        let mut count = BatchCount::default();
        let cons0 = self.ring.req_cons();
        let domid = self.conn.frontend;
        let mut used = 0u32;
        let mut arena_off = 0usize;
        let limit = work.min(TX_BATCH_SLOTS);
        while used < limit {
            if arena_off >= CHUNK_BYTES {
                self.copy_and_transmit(arena_off, &mut count)?;
                arena_off = 0;
            }
            self.slots.clear();
            let base = cons0.wrapping_add(used);
            let ring = &self.ring;
            let parsed = parse_tx_packet(
                |i| ring.copy_request(base.wrapping_add(i)),
                work - used,
                &self.conn.limits,
                &mut self.slots,
            )?;
            used += parsed.nslots;
            self.ring.set_req_cons(cons0.wrapping_add(used));
            let status = match parsed.verdict {
                TxVerdict::Packet {
                    len,
                    first_size,
                    meta,
                } => {
                    let data_start = 1 + parsed.extra_count as usize;
                    let first = self.slots[0];
                    let mut off = arena_off;
                    let frags = std::iter::once((first.gref, first.offset, first_size)).chain(
                        self.slots[data_start..]
                            .iter()
                            .map(|s| (s.gref, s.offset, s.size)),
                    );
                    for (gref, offset, size) in frags {
                        if size == 0 {
                            continue;
                        }
                        self.segs.0.push(CopySeg {
                            dir: CopyDir::FromForeign,
                            domid,
                            gref,
                            offset,
                            len: size,
                            local: self.arena[off..].as_mut_ptr(),
                            status: 0,
                        });
                        off += usize::from(size);
                    }
                    // validate guarantees the fragments add up to `len`.
                    let len = usize::from(len).min(off - arena_off);
                    self.descs.push(FrameDesc {
                        off: arena_off,
                        len,
                        meta,
                    });
                    arena_off += len;
                    count.packets += 1;
                    count.bytes += len as u64;
                    NETIF_RSP_OKAY
                }
                TxVerdict::Mcast { .. } => NETIF_RSP_OKAY,
                TxVerdict::Drop(reason) => {
                    log::debug!("{}: dropping TX packet: {reason}", self.conn.id);
                    count.drops += 1;
                    NETIF_RSP_ERROR
                }
            };
            // make_tx_response: every slot answered in order; extras get NETIF_RSP_NULL.
            for (k, slot) in self.slots.iter().enumerate() {
                let status = if k >= 1 && k <= parsed.extra_count as usize {
                    NETIF_RSP_NULL
                } else {
                    status
                };
                // Cannot fail: every slot answered was consumed just above.
                let _ = self.ring.produce_response(NetifTxResponse {
                    id: slot.id,
                    status,
                });
            }
        }

        self.copy_and_transmit(arena_off, &mut count)?;
        self.conn.counters.add_tx(&count);
        Ok(())
    }

    /// Grant-copies the packets parsed since the last call into the arena (`len` bytes
    /// of it) in one call, pushes their responses, and hands them to the port; the
    /// arena is free again after.
    ///
    /// The push comes as soon as the data is netback's: the guest's buffers are free
    /// from then on, so a guest that waits on a full ring refills it while the port
    /// writes, instead of sleeping until the whole batch is out.
    fn copy_and_transmit(&mut self, len: usize, count: &mut BatchCount) -> Result<(), FatalError> {
        if !self.segs.0.is_empty() {
            self.env.grant_copy(&mut self.segs.0);
            if let Some(bad) = self.segs.0.iter().find(|s| s.status != 0) {
                return Err(FatalError::GrantCopy {
                    gref: bad.gref,
                    status: bad.status,
                });
            }
            self.segs.0.clear();
        }
        if self.ring.push_responses_and_check_notify() {
            self.chan.notify();
            count.notify_sent += 1;
        } else {
            count.notify_suppressed += 1;
        }
        if !self.descs.is_empty() {
            let batch = FrameBatch {
                buf: &self.arena[..len],
                descs: &self.descs,
            };
            self.conn.port.transmit(&self.conn.link, self.qid, &batch);
            self.descs.clear();
        }
        Ok(())
    }
}
