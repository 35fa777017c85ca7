//! One cell's world: an embedded hypervisor, Dom0's netback serving a port, and guests
//! whose netfront connected through the real xenbus handshake.
//!
//! Everything is built fresh per cell (a few milliseconds) so no cell inherits another's
//! rings, counters or learned MACs, and torn down in order: each netfront closes
//! (Closing → Closed, grants ended), then netback shuts down, then the hypervisor goes.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use hv::embedded::{DomainConfig, EmbeddedGuestEnv, Hypervisor};
use hv::env::DomId;
use hv::toolstack::{add_vif, VifConfig};
use netback::{CountersSnapshot, Netback, NetbackConfig, Port, VifId};
use netfront::{CounterSnapshot, Netfront, NetfrontConfig, QueueCounters};

use super::threads;
use super::wire;
use crate::workload::WorkloadError;

/// How long each handshake step may take before the cell fails.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// TX frames netfront queues before it pushes them (and checks whether netback wants a
/// notification): one push per 64 frames, a quarter of the ring.
pub const TX_BATCH: u32 = 64;

/// A guest with its connected vif.
pub struct Guest {
    /// The guest's domid.
    pub domid: DomId,
    /// Its MAC (the `mac` key).
    pub mac: [u8; 6],
    /// Its connected frontend.
    pub nf: Netfront<EmbeddedGuestEnv>,
}

impl Guest {
    /// The live counters of each queue (readable while worker threads drive them).
    pub fn counters(&self) -> Vec<Arc<QueueCounters>> {
        self.nf.queue_counters()
    }
}

/// Sums queue counters.
pub fn sum(counters: &[Arc<QueueCounters>]) -> CounterSnapshot {
    counters
        .iter()
        .fold(CounterSnapshot::default(), |a, c| a + c.snapshot())
}

/// Dom0: the hypervisor and netback, with the threads netback runs for this cell.
pub struct Dom0 {
    // Field order is drop order: netback stops before the hypervisor goes.
    netback: Option<Netback>,
    hv: Hypervisor,
    /// netback's threads serving this cell (for Dom0's CPU time).
    pub threads: Vec<i32>,
}

impl Dom0 {
    /// netback's counters for `domid`'s vif 0.
    pub fn counters(&self, domid: DomId) -> CountersSnapshot {
        self.netback
            .as_ref()
            .and_then(|nb| nb.vif(VifId { domid, devid: 0 }))
            .map(|v| v.counters)
            .unwrap_or_default()
    }

    /// Why netback disabled `domid`'s vif 0, if it did.
    pub fn disabled(&self, domid: DomId) -> Option<String> {
        self.netback
            .as_ref()?
            .vif(VifId { domid, devid: 0 })?
            .disabled
            .map(|d| d.to_string())
    }
}

/// See the module documentation.
pub struct Testbed {
    // Field order is drop order: the guests' grants end while netback still runs.
    /// The guests, in creation order.
    pub guests: Vec<Guest>,
    /// Dom0.
    pub dom0: Dom0,
}

fn setup(what: &str, e: impl std::fmt::Display) -> WorkloadError {
    WorkloadError::Setup(format!("{what}: {e}"))
}

impl Testbed {
    /// Starts netback on `port` and connects `guests` guests with `queues` queue pairs
    /// each.
    pub fn new(port: Arc<dyn Port>, guests: usize, queues: u16) -> Result<Testbed, WorkloadError> {
        let before: BTreeSet<i32> = threads::task_ids();
        let hv = Hypervisor::new().map_err(|e| setup("hypervisor", e))?;
        let mut cfg = NetbackConfig::new(port);
        cfg.max_queues = u32::from(queues.max(1));
        cfg.close_timeout = Duration::from_millis(500);
        let netback = Netback::start(
            hv.backend_env().map_err(|e| setup("Dom0 environment", e))?,
            cfg,
        )
        .map_err(|e| setup("netback", e))?;
        let mut tb = Testbed {
            guests: Vec::with_capacity(guests),
            dom0: Dom0 {
                netback: Some(netback),
                hv,
                threads: Vec::new(),
            },
        };
        let hv = &tb.dom0.hv;
        let store = hv.store(0).map_err(|e| setup("Dom0 xenstore", e))?;
        for i in 0..guests {
            let domid = hv
                .create_domain(&DomainConfig {
                    name: format!("loadtest-guest{i}"),
                    memory_frames: guest_frames(queues),
                    ..DomainConfig::default()
                })
                .map_err(|e| setup("create domain", e))?;
            let mac = wire::guest_mac(i);
            add_vif(
                &store,
                &VifConfig {
                    frontend: domid,
                    backend: 0,
                    devid: 0,
                    mac,
                    rate: None,
                },
            )
            .map_err(|e| setup("add_vif", e))?;
            let env = hv
                .guest_env(domid)
                .map_err(|e| setup("guest environment", e))?;
            let nf = Netfront::connect(
                env,
                NetfrontConfig {
                    queues,
                    tx_batch: TX_BATCH,
                    timeout: HANDSHAKE_TIMEOUT,
                    ..NetfrontConfig::default()
                },
            )
            .map_err(|e| setup("netfront connect", e))?;
            if nf.num_queues() != usize::from(queues) {
                return Err(WorkloadError::Setup(format!(
                    "asked for {queues} queues, the handshake agreed on {}",
                    nf.num_queues()
                )));
            }
            tb.guests.push(Guest { domid, mac, nf });
        }
        let domids: Vec<u16> = tb.guests.iter().map(|g| g.domid).collect();
        tb.dom0.threads = threads::netback_threads(&before, &domids);
        Ok(tb)
    }

    /// Orderly teardown: every guest closes its vif, then netback stops.
    pub fn close(mut self) {
        for g in &mut self.guests {
            if let Err(e) = g.nf.close() {
                log::warn!("loadtest: closing guest {}'s vif: {e}", g.domid);
            }
        }
        self.guests.clear();
        if let Some(nb) = self.dom0.netback.take() {
            nb.shutdown();
        }
    }
}

/// Guest RAM for `queues` queue pairs: per queue 2 ring pages and 2 × 256 buffer pages,
/// plus slack.
fn guest_frames(queues: u16) -> usize {
    usize::from(queues.max(1)) * 600 + 1024
}
