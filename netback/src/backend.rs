//! The xenbus side of netback: watches `/local/domain/<own>/backend/vif` for vifs the
//! toolstack creates and runs Linux xen-netback's state machine for each
//! (`netback_probe`, `frontend_changed`, `set_backend_state`, `connect`,
//! `backend_disconnect`) in one control thread.
//!
//! Every watch event triggers a rescan of all vifs: read the frontend's state and move
//! the backend along. The handling is idempotent, so lost, merged or spurious events
//! cannot confuse it, and our own state writes (which fire the watch again) settle.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hv::abi::xenbus::XenbusState;
use hv::env::{BackendEnv, DomId, Store, StoreError, XBT_NIL};
use hv::toolstack::parse_mac;
use hv::xenbus::{
    path_join, read_str, xenbus_read_state, xenbus_switch_state, Transaction, XenbusError,
};

use crate::counters::{CountersSnapshot, VifCounters};
use crate::error::{DisableReason, NetbackError};
use crate::frontend::{read_frontend, FrontFeatures};
use crate::port::{Port, VifId};
use crate::validate::{TxLimits, FATAL_SKB_SLOTS_DEFAULT};
use crate::vif::{ConnectParams, Connection};

/// How often the control thread wakes without a watch event (fatal errors, commands,
/// shutdown are noticed at this pace).
const TICK: Duration = Duration::from_millis(10);
/// A full rescan at least this often, in case a watch event was dropped.
const RESCAN_EVERY: Duration = Duration::from_millis(500);
/// Watch token for the backend directory.
const ROOT_TOKEN: &str = "netback/root";

/// How netback runs.
#[derive(Clone)]
pub struct NetbackConfig {
    /// Where frames go (and come from).
    pub port: Arc<dyn Port>,
    /// `multi-queue-max-queues` advertised to frontends.
    pub max_queues: u32,
    /// Frames waiting per queue for a guest before new ones are dropped.
    pub inbound_capacity: usize,
    /// `fatal_skb_slots` (Linux's module parameter, default 20).
    pub fatal_skb_slots: u32,
    /// How long `shutdown` waits for frontends to acknowledge Closing.
    pub close_timeout: Duration,
    /// Most rounds an idle data-path thread polls (its ring for the frontend's next
    /// requests, or its inbound queue for the port's next frames) before it arms the
    /// event channel and sleeps (as Linux's `busy_poll`): a poll round costs
    /// nanoseconds, waking a sleeping thread tens of microseconds. The rounds actually
    /// polled adapt between 0 and this, per thread ([`event_channel::PollBudget`]):
    /// they grow while the peer answers soon after a poll gave up and shrink while it
    /// stays quiet, so an idle vif does not poll. 0 sleeps at once.
    pub busy_poll: u32,
}

impl NetbackConfig {
    /// Defaults: 2 queues, 1024 frames per inbound queue, Linux's slot limits.
    pub fn new(port: Arc<dyn Port>) -> Self {
        Self {
            port,
            max_queues: 2,
            inbound_capacity: 1024,
            fatal_skb_slots: FATAL_SKB_SLOTS_DEFAULT,
            close_timeout: Duration::from_secs(2),
            busy_poll: crate::queue::DEFAULT_BUSY_POLL,
        }
    }
}

/// A snapshot of one vif.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VifInfo {
    pub id: VifId,
    /// The `mac` key of the backend directory.
    pub mac: Option<[u8; 6]>,
    /// The backend's xenbus state.
    pub state: XenbusState,
    /// The frontend's xenbus state, as last read.
    pub frontend_state: XenbusState,
    /// Queues of the current (or last) connection.
    pub num_queues: u32,
    /// Whether the frontend uses `event-channel-tx` / `-rx`.
    pub split_event_channels: bool,
    /// The frontend's features at the last connect.
    pub features: FrontFeatures,
    /// Why the vif is disabled, if it is.
    pub disabled: Option<DisableReason>,
    /// Completed connects (a reconnect increments it).
    pub connects: u32,
    pub counters: CountersSnapshot,
}

struct VifRecord {
    info: Mutex<VifInfo>,
    counters: Arc<VifCounters>,
    disabled: Arc<Mutex<Option<DisableReason>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl VifRecord {
    fn snapshot(&self) -> VifInfo {
        let mut info = lock(&self.info).clone();
        info.disabled = lock(&self.disabled).clone();
        info.counters = self.counters.snapshot();
        info
    }
}

enum Command {
    Close(VifId),
}

struct Control {
    stop: AtomicBool,
    commands: Mutex<Vec<Command>>,
    vifs: Mutex<BTreeMap<VifId, Arc<VifRecord>>>,
}

/// The running backend. Dropping it shuts it down like [`Netback::shutdown`].
pub struct Netback {
    control: Arc<Control>,
    thread: Option<JoinHandle<()>>,
}

impl Netback {
    /// Start serving the vifs of backend domain `env.domid()`: watch its backend
    /// directory and connect every vif the toolstack creates there.
    ///
    /// Use an environment whose xenstore connection nobody else watches on: watch
    /// events of one connection share one queue.
    pub fn start<E: BackendEnv + 'static>(
        env: E,
        cfg: NetbackConfig,
    ) -> Result<Netback, NetbackError> {
        if cfg.max_queues == 0 || cfg.max_queues > 64 {
            return Err(NetbackError::Config("max_queues must be 1..=64"));
        }
        let env = Arc::new(env);
        let root = format!("/local/domain/{}/backend/vif", env.domid());
        env.store().watch(&root, ROOT_TOKEN)?;
        let control = Arc::new(Control {
            stop: AtomicBool::new(false),
            commands: Mutex::new(Vec::new()),
            vifs: Mutex::new(BTreeMap::new()),
        });
        let mut backend = Backend {
            env,
            cfg,
            root,
            control: control.clone(),
            devices: BTreeMap::new(),
        };
        let thread = std::thread::Builder::new()
            .name("netback-xenbus".into())
            .spawn(move || backend.run())?;
        Ok(Netback {
            control,
            thread: Some(thread),
        })
    }

    /// Every vif known to this backend.
    pub fn vifs(&self) -> Vec<VifInfo> {
        lock(&self.control.vifs)
            .values()
            .map(|r| r.snapshot())
            .collect()
    }

    /// One vif.
    pub fn vif(&self, id: VifId) -> Option<VifInfo> {
        lock(&self.control.vifs).get(&id).map(|r| r.snapshot())
    }

    /// Poll until `pred` holds for vif `id` (or `timeout` passes); the last snapshot.
    pub fn wait_vif(
        &self,
        id: VifId,
        timeout: Duration,
        pred: impl Fn(&VifInfo) -> bool,
    ) -> Option<VifInfo> {
        let deadline = Instant::now() + timeout;
        loop {
            let info = self.vif(id);
            if info.as_ref().is_some_and(&pred) || Instant::now() >= deadline {
                return info.filter(|i| pred(i));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Close one vif from the backend side (Closing; Closed once the frontend closes).
    /// The frontend may reconnect afterwards.
    pub fn close_vif(&self, id: VifId) {
        lock(&self.control.commands).push(Command::Close(id));
    }

    /// Close every vif (Closing → Closed, so guests see it) and stop.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.control.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                log::error!("netback: control thread panicked");
            }
        }
    }
}

impl Drop for Netback {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Device {
    id: VifId,
    be: String,
    fe: String,
    state: XenbusState,
    conn: Option<Connection>,
    record: Arc<VifRecord>,
    fe_token: String,
}

struct Backend<E: BackendEnv> {
    env: Arc<E>,
    cfg: NetbackConfig,
    root: String,
    control: Arc<Control>,
    devices: BTreeMap<VifId, Device>,
}

impl<E: BackendEnv + 'static> Backend<E> {
    fn store(&self) -> &dyn Store {
        self.env.store()
    }

    fn run(&mut self) {
        let mut last_scan = Instant::now();
        self.rescan();
        while !self.control.stop.load(Ordering::Acquire) {
            let mut dirty = false;
            if self.store().next_watch_event(Some(TICK)).is_some() {
                dirty = true;
                while self.store().next_watch_event(None).is_some() {}
            }
            let commands: Vec<Command> = std::mem::take(&mut *lock(&self.control.commands));
            for Command::Close(id) in commands {
                self.close_from_backend(id);
                dirty = true;
            }
            if self
                .devices
                .values()
                .any(|d| d.conn.as_ref().is_some_and(Connection::is_fatal))
            {
                dirty = true;
            }
            if dirty || last_scan.elapsed() >= RESCAN_EVERY {
                self.rescan();
                last_scan = Instant::now();
            }
        }
        self.shutdown_all();
        if let Err(e) = self.store().unwatch(&self.root, ROOT_TOKEN) {
            log::debug!("netback: unwatch {}: {e}", self.root);
        }
    }

    /// The vifs present under the backend directory.
    fn present(&self) -> BTreeSet<VifId> {
        let mut out = BTreeSet::new();
        let fes = match self.store().directory(XBT_NIL, &self.root) {
            Ok(v) => v,
            Err(StoreError::NotFound) => return out,
            Err(e) => {
                log::warn!("netback: listing {}: {e}", self.root);
                return self.devices.keys().copied().collect();
            }
        };
        for fe in fes {
            let Ok(domid) = fe.parse::<DomId>() else {
                continue;
            };
            let Ok(devs) = self.store().directory(XBT_NIL, &path_join(&self.root, &fe)) else {
                continue;
            };
            for dev in devs {
                if let Ok(devid) = dev.parse::<u32>() {
                    out.insert(VifId { domid, devid });
                }
            }
        }
        out
    }

    fn rescan(&mut self) {
        let present = self.present();
        let gone: Vec<VifId> = self
            .devices
            .keys()
            .filter(|id| !present.contains(id))
            .copied()
            .collect();
        for id in gone {
            self.remove(id);
        }
        for id in &present {
            if !self.devices.contains_key(id) {
                self.probe(*id);
            }
        }
        let ids: Vec<VifId> = self.devices.keys().copied().collect();
        for id in ids {
            let Some(mut dev) = self.devices.remove(&id) else {
                continue;
            };
            if dev.conn.as_ref().is_some_and(Connection::is_fatal) {
                // xenvif_fatal_tx_err: the queues stopped; release the rings and tell
                // the frontend.
                self.disconnect(&mut dev);
                self.set_state(&mut dev, XenbusState::Closing);
            }
            let fe_state = match xenbus_read_state(self.store(), &dev.fe) {
                Ok(s) => s,
                Err(e) => {
                    log::warn!("{}: frontend state unreadable: {e}", dev.id);
                    XenbusState::Unknown
                }
            };
            lock(&dev.record.info).frontend_state = fe_state;
            self.frontend_changed(&mut dev, fe_state);
            self.devices.insert(id, dev);
        }
    }

    /// `netback_probe`: advertise features, `hotplug-status`, then InitWait.
    fn probe(&mut self, id: VifId) {
        let be = format!("{}/{}/{}", self.root, id.domid, id.devid);
        let fe = match read_str(self.store(), XBT_NIL, &path_join(&be, "frontend")) {
            Ok(fe) => fe,
            Err(e) => {
                log::debug!("{id}: no frontend path yet: {e}");
                return;
            }
        };
        let mac = read_str(self.store(), XBT_NIL, &path_join(&be, "mac"))
            .ok()
            .and_then(|m| parse_mac(&m));
        let max_queues = self.cfg.max_queues.to_string();
        let keys: [(&str, &str); 10] = [
            ("feature-sg", "1"),
            ("feature-gso-tcpv4", "1"),
            ("feature-gso-tcpv6", "1"),
            ("feature-ipv6-csum-offload", "1"),
            ("feature-rx-copy", "1"),
            ("feature-rx-flip", "0"),
            ("feature-split-event-channels", "1"),
            ("multi-queue-max-queues", &max_queues),
            ("hotplug-status", "connected"),
            ("feature-multicast-control", "0"),
        ];
        let store = self.store();
        let written = Transaction::run(store, |t| -> Result<(), XenbusError> {
            for (k, v) in keys {
                t.write(&path_join(&be, k), v.as_bytes())?;
            }
            Ok(())
        });
        if let Err(e) = written {
            log::warn!("{id}: writing backend features: {e}");
            return;
        }
        let fe_token = format!("netback/fe/{}/{}", id.domid, id.devid);
        if let Err(e) = store.watch(&path_join(&fe, "state"), &fe_token) {
            log::warn!("{id}: watching {fe}/state: {e}");
        }
        let record = Arc::new(VifRecord {
            info: Mutex::new(VifInfo {
                id,
                mac,
                state: XenbusState::Initialising,
                frontend_state: XenbusState::Unknown,
                num_queues: 0,
                split_event_channels: false,
                features: FrontFeatures::default(),
                disabled: None,
                connects: 0,
                counters: CountersSnapshot::default(),
            }),
            counters: Arc::new(VifCounters::default()),
            disabled: Arc::new(Mutex::new(None)),
        });
        lock(&self.control.vifs).insert(id, record.clone());
        let mut dev = Device {
            id,
            be,
            fe,
            state: XenbusState::Initialising,
            conn: None,
            record,
            fe_token,
        };
        self.set_state(&mut dev, XenbusState::InitWait);
        log::info!("{id}: probed, frontend {}", dev.fe);
        self.devices.insert(id, dev);
    }

    fn set_state(&self, dev: &mut Device, state: XenbusState) {
        if dev.state == state {
            return;
        }
        match xenbus_switch_state(self.store(), &dev.be, state) {
            Ok(()) => log::debug!(
                "{}: backend {} -> {}",
                dev.id,
                dev.state.name(),
                state.name()
            ),
            Err(e) => log::debug!("{}: switching to {}: {e}", dev.id, state.name()),
        }
        dev.state = state;
        lock(&dev.record.info).state = state;
    }

    /// `frontend_changed`.
    fn frontend_changed(&mut self, dev: &mut Device, fe: XenbusState) {
        use XenbusState as S;
        match fe {
            S::Initialising => {
                if dev.state != S::InitWait {
                    self.disconnect(dev);
                    self.set_state(dev, S::InitWait);
                }
            }
            S::Initialised | S::Connected => {
                if matches!(dev.state, S::InitWait | S::Closed) {
                    self.connect(dev);
                }
            }
            S::Closing => {
                if dev.state != S::Closed {
                    self.disconnect(dev);
                    self.set_state(dev, S::Closing);
                }
            }
            S::Closed | S::Unknown => {
                self.disconnect(dev);
                self.set_state(dev, S::Closed);
            }
            // InitWait is a backend-only state; reconfiguration is not supported.
            S::InitWait | S::Reconfiguring | S::Reconfigured => {}
        }
    }

    /// `connect`: read the frontend's keys, map and bind, start the data path.
    fn connect(&mut self, dev: &mut Device) {
        *lock(&dev.record.disabled) = None;
        let result = (|| -> Result<(Connection, FrontFeatures, usize), NetbackError> {
            let cfg = read_frontend(self.store(), &dev.fe, self.cfg.max_queues)?;
            let mac_path = path_join(&dev.be, "mac");
            let mac_text = read_str(self.store(), XBT_NIL, &mac_path)?;
            let mac = parse_mac(&mac_text).ok_or_else(|| NetbackError::Frontend {
                path: mac_path,
                what: "not a MAC address".into(),
            })?;
            let params = ConnectParams {
                id: dev.id,
                frontend: dev.id.domid,
                mac,
                port: self.cfg.port.clone(),
                counters: dev.record.counters.clone(),
                disabled: dev.record.disabled.clone(),
                limits: TxLimits {
                    fatal_skb_slots: self.cfg.fatal_skb_slots,
                },
                inbound_capacity: self.cfg.inbound_capacity,
                busy_poll: self.cfg.busy_poll,
            };
            let n = cfg.queues.len();
            Ok((
                Connection::connect(&self.env, params, &cfg)?,
                cfg.features,
                n,
            ))
        })();
        match result {
            Ok((conn, features, nq)) => {
                {
                    let mut info = lock(&dev.record.info);
                    info.num_queues = nq as u32;
                    info.split_event_channels = conn.split;
                    info.features = features;
                    info.connects += 1;
                }
                log::info!(
                    "{}: connected, {} queue(s), split event channels: {}",
                    dev.id,
                    conn.num_queues(),
                    conn.split
                );
                dev.conn = Some(conn);
                self.set_state(dev, XenbusState::Connected);
            }
            Err(e) => {
                // xenbus_dev_fatal: log, keep the reason, go to Closing.
                log::error!("{}: connect failed: {e}", dev.id);
                *lock(&dev.record.disabled) = Some(DisableReason::Connect(e.to_string()));
                self.set_state(dev, XenbusState::Closing);
            }
        }
    }

    /// `backend_disconnect`.
    fn disconnect(&self, dev: &mut Device) {
        if let Some(mut conn) = dev.conn.take() {
            conn.disconnect();
            log::info!("{}: disconnected", dev.id);
        }
    }

    fn close_from_backend(&mut self, id: VifId) {
        if let Some(mut dev) = self.devices.remove(&id) {
            self.disconnect(&mut dev);
            if dev.state != XenbusState::Closed {
                self.set_state(&mut dev, XenbusState::Closing);
            }
            self.devices.insert(id, dev);
        }
    }

    /// The backend directory is gone (toolstack removed the vif): free everything.
    fn remove(&mut self, id: VifId) {
        if let Some(mut dev) = self.devices.remove(&id) {
            self.disconnect(&mut dev);
            if let Err(e) = self
                .store()
                .unwatch(&path_join(&dev.fe, "state"), &dev.fe_token)
            {
                log::debug!("{id}: unwatch: {e}");
            }
            lock(&self.control.vifs).remove(&id);
            log::info!("{id}: removed");
        }
    }

    /// Close every vif: disconnect, Closing, wait for the frontends, Closed.
    fn shutdown_all(&mut self) {
        let mut devs: Vec<Device> = std::mem::take(&mut self.devices).into_values().collect();
        for dev in devs.iter_mut() {
            self.disconnect(dev);
            if dev.state != XenbusState::Closed {
                self.set_state(dev, XenbusState::Closing);
            }
        }
        let deadline = Instant::now() + self.cfg.close_timeout;
        loop {
            let all_closed = devs.iter().all(|d| {
                d.state == XenbusState::Closed
                    || matches!(
                        xenbus_read_state(self.store(), &d.fe),
                        Ok(XenbusState::Closed | XenbusState::Unknown) | Err(_)
                    )
            });
            if all_closed || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        for dev in devs.iter_mut() {
            self.set_state(dev, XenbusState::Closed);
            let _ = self
                .store()
                .unwatch(&path_join(&dev.fe, "state"), &dev.fe_token);
        }
    }
}
