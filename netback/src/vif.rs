//! One connected vif: its mapped rings, bound channels and data-path threads
//! (Linux's `xenvif_connect_data` / `xenvif_disconnect_data`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use hv::env::{BackendEnv, DomId};

use crate::counters::VifCounters;
use crate::error::{DisableReason, NetbackError};
use crate::frontend::{EvtchnKeys, FrontendConfig};
use crate::inbound::Inbound;
use crate::port::{Port, VifId, VifLink};
use crate::queue::{spawn_queue, ConnShared, QueueResources, QueueShared};
use crate::validate::TxLimits;

/// What a connect needs besides the frontend's keys.
pub(crate) struct ConnectParams {
    pub id: VifId,
    pub frontend: DomId,
    pub mac: [u8; 6],
    pub port: Arc<dyn Port>,
    pub counters: Arc<VifCounters>,
    pub disabled: Arc<Mutex<Option<DisableReason>>>,
    pub limits: TxLimits,
    pub inbound_capacity: usize,
    pub busy_poll: u32,
}

/// A running vif.
pub(crate) struct Connection {
    shared: Arc<ConnShared>,
    threads: Vec<JoinHandle<()>>,
    pub split: bool,
}

impl Connection {
    /// Map every queue's rings, bind its channels, tell the port, start the threads.
    /// On failure everything acquired so far is released (mappings unmapped and
    /// channels closed on drop).
    pub(crate) fn connect<E: BackendEnv + 'static>(
        env: &Arc<E>,
        p: ConnectParams,
        cfg: &FrontendConfig,
    ) -> Result<Connection, NetbackError> {
        let fe = p.frontend;
        let mut resources = Vec::with_capacity(cfg.queues.len());
        let mut split = false;
        for qk in &cfg.queues {
            let tx_map = env.map_grant(fe, qk.tx_ring_ref, false)?;
            let rx_map = env.map_grant(fe, qk.rx_ring_ref, false)?;
            let (tx_chan, rx_chan, is_split) = match qk.evtchn {
                EvtchnKeys::Single(port) => {
                    let c = Arc::new(env.bind_interdomain(fe, port)?);
                    (c.clone(), c, false)
                }
                EvtchnKeys::Split { tx, rx } => {
                    let t = Arc::new(env.bind_interdomain(fe, tx)?);
                    let r = Arc::new(env.bind_interdomain(fe, rx)?);
                    (t, r, true)
                }
            };
            split |= is_split;
            resources.push(QueueResources::<E> {
                tx_map,
                rx_map,
                tx_chan,
                rx_chan,
                split: is_split,
            });
        }
        let queues: Vec<Arc<QueueShared>> = (0..resources.len())
            .map(|_| {
                Arc::new(QueueShared {
                    inbound: Arc::new(Inbound::new(p.inbound_capacity)),
                    rx_waiting_guest: AtomicBool::new(false),
                    rx_thread: Default::default(),
                })
            })
            .collect();
        let link = Arc::new(
            VifLink::new(
                p.id,
                p.mac,
                queues.iter().map(|q| q.inbound.clone()).collect(),
                p.counters.clone(),
            )
            .with_features(cfg.features),
        );
        let shared = Arc::new(ConnShared {
            id: p.id,
            frontend: fe,
            counters: p.counters,
            stop: AtomicBool::new(false),
            disabled: p.disabled,
            fatal: AtomicBool::new(false),
            link: link.clone(),
            port: p.port.clone(),
            queues,
            front: cfg.features,
            limits: p.limits,
            busy_poll: p.busy_poll,
        });
        p.port.vif_connected(&link);
        let mut conn = Connection {
            shared: shared.clone(),
            threads: Vec::new(),
            split,
        };
        for (qid, res) in resources.into_iter().enumerate() {
            match spawn_queue(env, &shared, qid as u16, res) {
                Ok((tx, rx)) => {
                    conn.threads.push(tx);
                    conn.threads.push(rx);
                }
                Err(e) => {
                    conn.disconnect();
                    return Err(e);
                }
            }
        }
        Ok(conn)
    }

    /// A fatal error disabled this vif.
    pub(crate) fn is_fatal(&self) -> bool {
        self.shared.fatal.load(Ordering::Acquire)
    }

    /// Number of queues.
    pub(crate) fn num_queues(&self) -> usize {
        self.shared.queues.len()
    }

    /// Stop and join every thread (which unmaps the rings and closes the channels),
    /// then tell the port the vif is gone.
    pub(crate) fn disconnect(&mut self) {
        self.shared.stop_all();
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                log::error!("{}: a data-path thread panicked", self.shared.id);
            }
        }
        self.shared.port.vif_disconnected(self.shared.id);
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.disconnect();
        }
    }
}
