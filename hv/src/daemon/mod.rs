//! The `hv` daemon: the embedded [`Hypervisor`] served over a unix socket, so guests
//! run as separate processes.
//!
//! A guest process connects ([`crate::client::connect`]) and asks for a domain; it
//! receives, with `SCM_RIGHTS`, the memfds of *its own* RAM, grant table and
//! event-channel page — never anything else — and per event-channel port a kick
//! eventfd (the daemon wakes it) and a send eventfd (its `EVTCHNOP_send`, see
//! the `notify` module). It grants pages by writing its own grant table, which the hypervisor
//! reads in place; xenstore requests travel over the socket as `xs_wire` messages
//! ([`crate::wire`]). Dom0's backends (netback) run inside the daemon on
//! [`Hypervisor::backend_env`] and reach guest memory only through grants the
//! hypervisor validates.
//!
//! The connection *is* the domain's life: when it ends — the process exited, was
//! killed, or `hv destroy` shut it — the domain is destroyed as Xen destroys a dead
//! guest (event channels closed, watches dropped, `/local/domain/<id>` and its vif
//! backend directories removed, so netback closes the vifs). Other guests are not
//! affected.
//!
//! Netback cannot be a dependency of `hv` (it depends on `hv`), so the daemon takes
//! Dom0's backend as a [`Dom0Backend`] trait object: the binary that links netback
//! supplies it (see [`cli::main`] with a [`BackendFactory`]).

mod admin;
#[cfg(feature = "cli")]
pub mod cli;
mod conn;
mod notify;

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use event_channel::EventFd;

use crate::embedded::{EmbeddedBackendEnv, HvError, Hypervisor};
use crate::env::DomId;
use crate::wire::socket::{poll_readable, Listener, SeqPacket};
pub use crate::wire::VifStatus;

use notify::SendPump;

/// Dom0's device backends as the daemon runs them (netback, supplied by the binary
/// that links it). The daemon asks it for vif details and to close vifs; the backend
/// finds vifs itself by watching the xenstore, as it does embedded.
pub trait Dom0Backend: Send + Sync {
    /// Every vif the backend serves, with counters, for `hv network-list`.
    fn vifs(&self) -> Vec<(DomId, VifStatus)>;
    /// Close one vif from the backend side (`hv network-detach`): Closing, then
    /// Closed once the frontend follows.
    fn close_vif(&self, domid: DomId, devid: u32);
    /// Close every vif (Closing → Closed, so guests see it) and stop. Called once,
    /// on daemon shutdown, before guests are disconnected.
    fn shutdown(self: Box<Self>);
}

/// Options of Dom0's backend, from `hv serve`'s command line.
#[derive(Debug, Clone, Default)]
pub struct BackendOptions {
    /// Linux bridge every vif's TAP joins (`--bridge`).
    pub bridge: Option<String>,
    /// Name prefix of the TAP devices (`--tap-prefix`); TAPs are made only if set or
    /// if a bridge is given.
    pub tap_prefix: Option<String>,
    /// Write guest → host frames to the TAPs one `writev` each instead of in io_uring
    /// batches (`--no-io-uring`; for kernels or sandboxes without io_uring, which are
    /// also detected and fall back by themselves).
    pub no_io_uring: bool,
    /// Read each TAP queue in a thread of its own instead of in netback's RX thread
    /// of the vif queue (`--tap-reader-threads`).
    pub tap_reader_threads: bool,
}

/// Starts Dom0's backend on the daemon's hypervisor.
pub trait BackendFactory {
    /// Start serving vifs on `env` (Dom0's backend environment).
    fn start(
        &self,
        env: EmbeddedBackendEnv,
        opts: &BackendOptions,
    ) -> Result<Box<dyn Dom0Backend>, String>;
}

/// Limits on what a guest process may ask for.
#[derive(Debug, Clone, Copy)]
pub struct DomainLimits {
    /// Most RAM frames per domain.
    pub max_memory_frames: u32,
    /// Most grant-table frames per domain (Xen's `max_grant_frames` default is 64).
    pub max_grant_frames: u32,
    /// Highest event-channel port (below `EVTCHN_2L_NR_CHANNELS`).
    pub max_ports: u32,
    /// Most guest domains at once.
    pub max_guests: usize,
}

impl Default for DomainLimits {
    fn default() -> Self {
        Self {
            max_memory_frames: 256 * 1024,
            max_grant_frames: 64,
            max_ports: 4095,
            max_guests: 256,
        }
    }
}

/// How the daemon serves.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The unix socket guests and the CLI connect to.
    pub socket: PathBuf,
    /// File mode of the socket (connect needs write permission on it).
    pub socket_mode: u32,
    /// Limits on guests.
    pub limits: DomainLimits,
}

impl ServerConfig {
    /// Serve at `socket` with mode 0660 and default limits.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
            socket_mode: 0o660,
            limits: DomainLimits::default(),
        }
    }
}

/// Errors starting the daemon.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Another daemon answers on the socket.
    #[error("another hv daemon is already serving {}: stop it first (`kill -TERM` its pid) or choose another --socket", .0.display())]
    AlreadyRunning(PathBuf),
    /// The path exists and is not a socket.
    #[error("{} exists and is not a socket: remove it or choose another --socket", .0.display())]
    NotASocket(PathBuf),
    /// Creating, binding or inspecting the socket failed.
    #[error("cannot serve on {}: {source}", path.display())]
    Socket {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The hypervisor refused.
    #[error(transparent)]
    Hv(#[from] HvError),
    /// Dom0's backend failed to start.
    #[error("starting Dom0's backend (netback) failed: {0}")]
    Backend(String),
    /// A thread or descriptor could not be created.
    #[error("daemon start-up failed: {0}")]
    Io(#[from] io::Error),
}

/// Counters for tests and `hv serve`'s log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ServerStats {
    /// Connections being served.
    pub connections: usize,
    /// Guest domains with a live connection.
    pub guests: usize,
    /// Ports whose send eventfd the daemon polls.
    pub watched_ports: usize,
    /// `EVTCHNOP_send`s performed for guests' send eventfds.
    pub evtchn_sends: u64,
    /// Messages refused as malformed.
    pub malformed: u64,
    /// Domains torn down after their connection ended.
    pub teardowns: u64,
}

/// A guest domain's live connection.
struct GuestEntry {
    sock: Arc<SeqPacket>,
    pid: u32,
    watches: Arc<conn::PumpCtl>,
}

pub(crate) struct Shared {
    hv: Hypervisor,
    cfg: ServerConfig,
    pump: SendPump,
    stop: EventFd,
    stopping: AtomicBool,
    guests: Mutex<HashMap<DomId, GuestEntry>>,
    /// Live connections by id, so shutdown can end them all.
    conns: Mutex<HashMap<u64, Arc<SeqPacket>>>,
    conns_done: Condvar,
    next_conn: AtomicU64,
    backend: Mutex<Option<Box<dyn Dom0Backend>>>,
    malformed: AtomicU64,
    teardowns: AtomicU64,
    daemon_uid: u32,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running daemon. Dropping it shuts it down like [`Server::shutdown`].
pub struct Server {
    shared: Arc<Shared>,
    _listener: Arc<Listener>,
    accept: Option<JoinHandle<()>>,
    /// (dev, ino) of the socket we bound, so we only ever unlink our own.
    socket_id: (u64, u64),
}

impl Server {
    /// Bind the socket (removing a stale one left by a dead daemon) and start serving
    /// `hv`'s domains.
    pub fn start(hv: Hypervisor, cfg: ServerConfig) -> Result<Self, DaemonError> {
        let path = cfg.socket.clone();
        let sock_err = |source| DaemonError::Socket {
            path: path.clone(),
            source,
        };
        prepare_socket_path(&path)?;
        let listener = Listener::bind(&path).map_err(sock_err)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(cfg.socket_mode))
            .map_err(sock_err)?;
        let meta = std::fs::symlink_metadata(&path).map_err(sock_err)?;
        let pump = SendPump::start(hv.event_channels().clone())?;
        let shared = Arc::new(Shared {
            hv,
            cfg,
            pump,
            stop: EventFd::new()?,
            stopping: AtomicBool::new(false),
            guests: Mutex::new(HashMap::new()),
            conns: Mutex::new(HashMap::new()),
            conns_done: Condvar::new(),
            next_conn: AtomicU64::new(1),
            backend: Mutex::new(None),
            malformed: AtomicU64::new(0),
            teardowns: AtomicU64::new(0),
            // SAFETY: geteuid cannot fail and takes no arguments.
            daemon_uid: unsafe { libc::geteuid() },
        });
        let listener = Arc::new(listener);
        let (s, l) = (shared.clone(), listener.clone());
        let accept = std::thread::Builder::new()
            .name("hv-accept".into())
            .spawn(move || accept_loop(&s, &l))?;
        log::info!("hv daemon: serving {}", path.display());
        Ok(Self {
            shared,
            _listener: listener,
            accept: Some(accept),
            socket_id: (meta.dev(), meta.ino()),
        })
    }

    /// Hand Dom0's backend to the daemon (for `network-list`, `network-detach` and an
    /// orderly shutdown).
    pub fn set_backend(&self, backend: Box<dyn Dom0Backend>) {
        *lock(&self.shared.backend) = Some(backend);
    }

    /// The hypervisor served.
    pub fn hypervisor(&self) -> &Hypervisor {
        &self.shared.hv
    }

    /// The socket path.
    pub fn socket_path(&self) -> &Path {
        &self.shared.cfg.socket
    }

    /// Guest domains with a live connection.
    pub fn guests(&self) -> Vec<DomId> {
        let mut v: Vec<DomId> = lock(&self.shared.guests).keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// Counters.
    pub fn stats(&self) -> ServerStats {
        ServerStats {
            connections: lock(&self.shared.conns).len(),
            guests: lock(&self.shared.guests).len(),
            watched_ports: self.shared.pump.watched(),
            evtchn_sends: self.shared.pump.sends(),
            malformed: self.shared.malformed.load(Ordering::Relaxed),
            teardowns: self.shared.teardowns.load(Ordering::Relaxed),
        }
    }

    /// Wait until `pred` holds for the stats (or `timeout` passes); the last stats.
    pub fn wait_stats(
        &self,
        timeout: Duration,
        pred: impl Fn(&ServerStats) -> bool,
    ) -> ServerStats {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.stats();
            if pred(&s) || Instant::now() >= deadline {
                return s;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Orderly shutdown (what `SIGTERM` does): Dom0's backend closes every vif
    /// (Closing → Closed, so guests see it), then every connection is ended and its
    /// domain torn down, and the socket is removed. A new daemon can then start on
    /// the same path.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let Some(accept) = self.accept.take() else {
            return;
        };
        self.shared.stopping.store(true, Ordering::Release);
        let _ = self.shared.stop.signal();
        let _ = accept.join();
        if let Some(b) = lock(&self.shared.backend).take() {
            b.shutdown();
        }
        // Let the guests receive the watch events of their vifs closing before
        // their connections end.
        let pumps: Vec<_> = lock(&self.shared.guests)
            .values()
            .map(|g| g.watches.clone())
            .collect();
        for p in pumps {
            p.flush(Duration::from_millis(500));
        }
        // End every connection; each handler tears its domain down.
        let socks: Vec<Arc<SeqPacket>> = lock(&self.shared.conns).values().cloned().collect();
        for s in &socks {
            s.shutdown();
        }
        drop(socks);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut conns = lock(&self.shared.conns);
        while !conns.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                log::warn!("hv daemon: {} connections did not end in time", conns.len());
                break;
            }
            conns = self
                .shared
                .conns_done
                .wait_timeout(conns, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        drop(conns);
        self.shared.pump.stop();
        remove_own_socket(&self.shared.cfg.socket, self.socket_id);
        log::info!("hv daemon: stopped");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Make `path` bindable: create its directory, refuse a non-socket or a live daemon,
/// remove a stale socket (one nobody listens on).
fn prepare_socket_path(path: &Path) -> Result<(), DaemonError> {
    let sock_err = |source| DaemonError::Socket {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(sock_err)?;
            }
            Ok(())
        }
        Err(e) => Err(sock_err(e)),
        Ok(m) if !m.file_type().is_socket() => Err(DaemonError::NotASocket(path.to_path_buf())),
        Ok(_) => match SeqPacket::connect(path) {
            Ok(_) => Err(DaemonError::AlreadyRunning(path.to_path_buf())),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                log::info!(
                    "hv daemon: removing stale socket {} (no daemon listens on it)",
                    path.display()
                );
                std::fs::remove_file(path).map_err(sock_err)
            }
            Err(e) => Err(sock_err(e)),
        },
    }
}

/// Unlink the socket only if it is still the one we bound (a newer daemon may have
/// replaced it).
fn remove_own_socket(path: &Path, id: (u64, u64)) {
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if (m.dev(), m.ino()) == id {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn accept_loop(shared: &Arc<Shared>, listener: &Listener) {
    while !shared.stopping.load(Ordering::Acquire) {
        let ready = match poll_readable(&[listener.raw_fd(), shared.stop_fd()], -1) {
            Ok(r) => r,
            Err(e) => {
                log::error!("hv daemon: poll on the listening socket failed: {e}");
                return;
            }
        };
        if ready.get(1).copied().unwrap_or(false) || shared.stopping.load(Ordering::Acquire) {
            return;
        }
        if !ready.first().copied().unwrap_or(false) {
            continue;
        }
        let sock = match listener.accept() {
            Ok(s) => Arc::new(s),
            Err(e) => {
                // EMFILE and friends: back off instead of spinning on a ready socket.
                log::warn!("hv daemon: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
        lock(&shared.conns).insert(id, sock.clone());
        let s = shared.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("hv-conn-{id}"))
            .spawn(move || {
                conn::serve(&s, sock);
                s.conn_ended(id);
            });
        if let Err(e) = spawned {
            log::error!("hv daemon: cannot start a connection thread: {e}");
            shared.conn_ended(id);
        }
    }
}

impl Shared {
    fn stop_fd(&self) -> i32 {
        use std::os::fd::AsRawFd;
        self.stop.as_raw_fd()
    }

    fn conn_ended(&self, id: u64) {
        let mut conns = lock(&self.conns);
        conns.remove(&id);
        drop(conns);
        self.conns_done.notify_all();
    }
}
