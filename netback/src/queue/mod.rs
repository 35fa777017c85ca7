//! The data path of one connected vif: per queue a TX thread (the guest's TX ring →
//! port, Linux's NAPI poll) and an RX thread (frames for the guest → its RX ring,
//! Linux's `xenvif_kthread_guest_rx`), sharing a [`ConnShared`].
//!
//! Each thread owns its ring mapping, so the ring page is unmapped when the thread
//! ends. With one event channel for both rings only the TX thread waits on it and wakes
//! the RX thread when the guest signals; with split channels each waits on its own.

mod rx;
mod tx;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use event_channel::{PollBudget, WaitOutcome};

use hv::abi::netif::{RxBackRing, TxBackRing};
use hv::env::{BackendEnv, CopySeg, DomId, MappedPage};

use crate::counters::VifCounters;
use crate::error::{DisableReason, FatalError, NetbackError};
use crate::frontend::FrontFeatures;
use crate::inbound::Inbound;
use crate::port::{Port, VifId, VifLink};
use crate::validate::TxLimits;

/// How long a data-path thread sleeps at most before it looks at its stop flag again.
pub(crate) const IDLE_WAIT: Duration = Duration::from_millis(10);

/// Default [`crate::NetbackConfig::busy_poll`]: at most a few tens of microseconds,
/// longer than the frontend takes to fill a batch, so a busy frontend never pays for
/// waking a sleeping backend (nor the backend for its notifications).
pub const DEFAULT_BUSY_POLL: u32 = 2048;

/// Poll until the frontend published requests past `req_cons` (or `rounds` pass).
/// Reads the shared producer index only.
fn poll_requests(
    req_prod: impl Fn() -> u32,
    req_cons: u32,
    rounds: u32,
    stop: &AtomicBool,
) -> bool {
    poll_until(|| req_prod() != req_cons, rounds, stop)
}

/// Poll until `ready` holds (or `rounds` pass, or `stop` is set), yielding the CPU
/// every 64 rounds.
fn poll_until(ready: impl Fn() -> bool, rounds: u32, stop: &AtomicBool) -> bool {
    for i in 0..rounds {
        if ready() {
            return true;
        }
        if i % 64 == 63 {
            if stop.load(Ordering::Relaxed) {
                return false;
            }
            // If the peer's thread shares this CPU, let it run: polling only pays
            // while both sides are on CPUs at once.
            std::thread::yield_now();
        }
        std::hint::spin_loop();
    }
    false
}

/// Per-queue state shared by its two threads and the port side.
pub(crate) struct QueueShared {
    pub inbound: Arc<Inbound>,
    /// The RX thread sleeps until the guest posts buffers (single event channel: the
    /// TX thread, which owns the channel wait, must wake it).
    pub rx_waiting_guest: AtomicBool,
    pub rx_thread: OnceLock<Thread>,
}

impl QueueShared {
    fn wake_rx(&self) {
        if let Some(t) = self.rx_thread.get() {
            t.unpark();
        }
    }
}

/// State shared by every data-path thread of one connected vif.
pub(crate) struct ConnShared {
    pub id: VifId,
    pub frontend: DomId,
    pub counters: Arc<VifCounters>,
    pub stop: AtomicBool,
    /// Why the vif is disabled; shared with the vif's registry record.
    pub disabled: Arc<Mutex<Option<DisableReason>>>,
    /// Set once a fatal error disabled the vif (the backend thread then closes it).
    pub fatal: AtomicBool,
    pub link: Arc<VifLink>,
    pub port: Arc<dyn Port>,
    pub queues: Vec<Arc<QueueShared>>,
    pub front: FrontFeatures,
    pub limits: TxLimits,
    /// Poll rounds before an idle worker sleeps ([`crate::NetbackConfig::busy_poll`]).
    pub busy_poll: u32,
}

impl ConnShared {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// `xenvif_fatal_tx_err`: log, record the reason (the first one wins), stop every
    /// queue of this vif. The backend thread moves the vif to Closing.
    pub(crate) fn fatal(&self, err: FatalError) {
        log::error!("{}: fatal error; disabling device: {err}", self.id);
        {
            let mut d = self.disabled.lock().unwrap_or_else(PoisonError::into_inner);
            if d.is_none() {
                *d = Some(DisableReason::Fatal(err));
            }
        }
        self.fatal.store(true, Ordering::Release);
        self.stop_all();
    }

    /// Stop every queue thread (they notice within [`IDLE_WAIT`]).
    pub(crate) fn stop_all(&self) {
        self.stop.store(true, Ordering::Release);
        for q in &self.queues {
            q.inbound.close();
            q.wake_rx();
        }
    }
}

/// What one queue needs from the backend to run: its mapped rings and channels.
pub(crate) struct QueueResources<E: BackendEnv> {
    pub tx_map: E::Mapping,
    pub rx_map: E::Mapping,
    pub tx_chan: Arc<E::Channel>,
    pub rx_chan: Arc<E::Channel>,
    pub split: bool,
}

/// Start the TX and RX threads of queue `qid`. The rings are attached at index 0 of
/// pages the frontend initialised (`BACK_RING_INIT`).
pub(crate) fn spawn_queue<E: BackendEnv + 'static>(
    env: &Arc<E>,
    conn: &Arc<ConnShared>,
    qid: u16,
    res: QueueResources<E>,
) -> Result<(JoinHandle<()>, JoinHandle<()>), NetbackError> {
    let q = conn
        .queues
        .get(usize::from(qid))
        .cloned()
        .ok_or(NetbackError::Config("queue index out of range"))?;
    // SAFETY: the mapping is a 4 KiB page-aligned foreign page that stays mapped as long
    // as the worker that owns both the mapping and the ring; only this backend queue
    // and the one frontend use it.
    let tx_ring = unsafe { TxBackRing::init(res.tx_map.ptr()) };
    // SAFETY: as above, for the RX ring page.
    let rx_ring = unsafe { RxBackRing::init(res.rx_map.ptr()) };
    let rx = rx::RxWorker::<E>::new(
        env.clone(),
        conn.clone(),
        qid,
        q.clone(),
        res.rx_map,
        rx_ring,
        res.rx_chan,
        res.split,
    );
    let tx = tx::TxWorker::<E>::new(
        env.clone(),
        conn.clone(),
        qid,
        q.clone(),
        res.tx_map,
        tx_ring,
        res.tx_chan,
        res.split,
    );
    let rx_handle = std::thread::Builder::new()
        .name(format!("{}-q{qid}-rx", conn.id))
        .spawn(move || rx.run())?;
    q.rx_thread.set(rx_handle.thread().clone()).ok();
    q.inbound.set_waker(rx_handle.thread().clone());
    let tx_handle = match std::thread::Builder::new()
        .name(format!("{}-q{qid}-tx", conn.id))
        .spawn(move || tx.run())
    {
        Ok(h) => h,
        Err(e) => {
            conn.stop_all();
            let _ = rx_handle.join();
            return Err(e.into());
        }
    };
    Ok((tx_handle, rx_handle))
}

/// Poll-then-park for an RX thread waiting for frames from the port.
fn park_for_frames(conn: &ConnShared, q: &QueueShared, poll: &mut PollBudget) {
    // The same polling as for the guest's requests: the port's thread that produces
    // the frames may need this CPU (two CPUs, five threads in a TAP stream), so the
    // poll yields, and its length follows how soon frames really come.
    if poll_until(|| !q.inbound.is_empty(), poll.rounds(), &conn.stop) {
        return;
    }
    let slept = Instant::now();
    q.inbound.set_sleeping(true);
    if q.inbound.is_empty() && !conn.stopped() {
        std::thread::park_timeout(IDLE_WAIT);
    }
    q.inbound.set_sleeping(false);
    poll.after_sleep(WaitOutcome::of(
        !q.inbound.is_empty(),
        Some(slept.elapsed()),
    ));
}

/// The grant-copy segments of one batch. They point into the worker's own buffers
/// and are cleared at the start of every batch.
pub(crate) struct CopyBatch(pub Vec<CopySeg>);

// SAFETY: the raw pointers in the segments point into buffers owned by the same worker
// (its arena or frames it holds until the copy is done) and are only dereferenced by
// `grant_copy` on that worker's thread; moving the worker to its thread moves them along
// with their targets.
unsafe impl Send for CopyBatch {}
