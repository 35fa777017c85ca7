//! `--guest daemon`: the guest is a separate OS process served by the hv daemon, as
//! `hv serve --bridge` and `pvnet-guest` run it.
//!
//! loadtest runs the daemon's [`Server`] in-process with netback on its Dom0 backend
//! environment and a [`TapPort`] in host mode's namespace (what `hv serve --bridge`
//! attaches), then re-executes itself as `loadtest __host-guest` ([`super::guest_proc`]).
//! That process connects to the daemon's socket, receives its own memory, grant table
//! and event channels, connects netfront, and runs the same sender and receiver as the
//! embedded guest thread on loadtest's commands ([`super::proto`]). Counts read
//! mid-window come from the shared [`Board`]; guest→host is still counted at the TAP,
//! in loadtest.
//!
//! Everything lives in a private directory (`$TMPDIR/pvnet-lt-<pid>`: the socket and
//! the board), removed with the session. Field order of [`DaemonSession`] is the
//! teardown order on every path: the guest process is stopped (killed if it must be)
//! and reaped, netback stops, the daemon stops and removes its socket, the TAP goes,
//! the directory goes.

use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hv::daemon::{Server, ServerConfig};
use hv::embedded::Hypervisor;
use netback::{Netback, NetbackConfig, TapPort, VifId};

use super::board::Board;
use super::child::GuestChild;
use super::netns::{self, Netns};
use super::proto::{self, Command as GuestCommand, Done};
use super::{check_interrupt, inject, settle, signal, vif};
use super::{GuestKind, HostCell, HostDirection, HostError, HostSession, SETUP_WAIT, TICK};
use crate::control::Control;
use crate::measurement::Measurement;

/// How long the guest process may take to connect (daemon socket, domain, xenbus
/// handshake: each netfront step has its own 5 s bound).
const READY_WAIT: Duration = Duration::from_secs(20);
/// How long an orderly `quit` (vif closed, process gone) may take.
const QUIT_WAIT: Duration = Duration::from_secs(3);

/// The run's private directory; removed (with what is left in it) on drop.
struct RunDir {
    path: PathBuf,
}

impl RunDir {
    fn create() -> Result<RunDir, HostError> {
        let path = run_dir(std::process::id());
        // Left behind by a killed run that had our pid: nothing in it is live.
        let _ = std::fs::remove_dir_all(&path);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|e| HostError::Setup(format!("creating {}: {e}", path.display())))?;
        Ok(RunDir { path })
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            log::warn!("loadtest host: removing {}: {e}", self.path.display());
        }
    }
}

/// The private directory daemon mode uses for loadtest process `pid` (for tests and
/// the leak check).
pub fn run_dir(pid: u32) -> PathBuf {
    std::env::temp_dir().join(format!("pvnet-lt-{pid}"))
}

fn setup(what: &str, e: impl std::fmt::Display) -> HostError {
    HostError::Setup(format!("{what}: {e}"))
}

fn guest_reply(what: &str, e: String) -> HostError {
    HostError::Guest(format!("unreadable {what} reply: {e}"))
}

/// One guest process behind the daemon and a TAP. See the module documentation for
/// the drop order.
pub struct DaemonSession {
    child: Option<GuestChild>,
    netback: Option<Netback>,
    server: Option<Server>,
    board: Board,
    port: Arc<TapPort>,
    _dir: RunDir,
    vif: VifId,
    mac: [u8; 6],
    tap: String,
    netns: PathBuf,
}

impl DaemonSession {
    /// Starts the daemon with netback and a TAP in `ns`, and the guest process.
    pub fn start(ns: &Netns) -> Result<DaemonSession, HostError> {
        let dir = RunDir::create()?;
        let board_path = dir.path.join("board");
        let board = Board::create(&board_path).map_err(|e| setup("board", e))?;
        let hv = Hypervisor::new().map_err(|e| setup("hypervisor", e))?;
        let mut cfg = ServerConfig::new(dir.path.join("hv.sock"));
        cfg.socket_mode = 0o600;
        let server = Server::start(hv, cfg).map_err(|e| setup("hv daemon", e))?;
        let port = Arc::new(vif::tap_port(ns));
        // As in embedded mode (and as `hv serve` does, with the same port): one queue
        // pair, a short close timeout.
        let mut nb = NetbackConfig::new(port.clone());
        nb.max_queues = 1;
        nb.close_timeout = Duration::from_millis(500);
        let env = server
            .hypervisor()
            .backend_env()
            .map_err(|e| setup("Dom0 environment", e))?;
        let netback = Netback::start(env, nb).map_err(|e| setup("netback", e))?;
        let mut s = DaemonSession {
            child: None,
            netback: Some(netback),
            server: Some(server),
            board,
            port,
            _dir: dir,
            vif: VifId { domid: 0, devid: 0 },
            mac: [0; 6],
            tap: String::new(),
            netns: ns.path(),
        };
        let socket = s
            .server
            .as_ref()
            .map(|sv| sv.socket_path().to_path_buf())
            .ok_or_else(|| HostError::Setup("no daemon".into()))?;
        let child = s.child.insert(spawn_guest(&socket, &board_path)?);
        let ready = child.expect("ready", READY_WAIT)?;
        let (domid, mac) = proto::parse_ready(&ready).map_err(|e| guest_reply("ready", e))?;
        s.vif = VifId { domid, devid: 0 };
        s.mac = mac;
        s.tap = vif::wait_tap(&s.port, s.vif)?;
        Ok(s)
    }

    fn child(&mut self) -> Result<&mut GuestChild, HostError> {
        self.child
            .as_mut()
            .ok_or_else(|| HostError::Setup("no guest process".into()))
    }

    fn raise_stop(&self) {
        self.board.slots().stop.store(1, Ordering::Release);
    }
}

/// Starts `loadtest __host-guest` (this very binary) for the daemon at `socket`.
fn spawn_guest(socket: &Path, board: &Path) -> Result<GuestChild, HostError> {
    let exe = std::env::current_exe()
        .map_err(|e| HostError::GuestStart(format!("finding loadtest's own binary: {e}")))?;
    let mut cmd = Command::new(exe);
    cmd.arg(proto::GUEST_SUBCOMMAND)
        .arg("--socket")
        .arg(socket)
        .arg("--board")
        .arg(board)
        .arg("--parent")
        .arg(std::process::id().to_string());
    GuestChild::spawn(cmd)
}

impl HostSession for DaemonSession {
    fn tap(&self) -> &str {
        &self.tap
    }

    fn guest_to_host(&mut self, len: u32, window: Duration) -> Result<HostCell, HostError> {
        let secs = window.as_secs_f64();
        let child = self.child()?;
        child.send(&GuestCommand::Tx { len, secs }.line())?;
        child.expect("go", SETUP_WAIT)?;
        // The window opens now: the guest's sender is running.
        let t0 = Instant::now();
        let start = vif::ToHostStart::now(&self.port, self.vif);
        let mut failed = Ok(());
        while t0.elapsed() < window {
            if signal::interrupted() {
                break;
            }
            if let Err(e) = self.child()?.poll() {
                failed = Err(e);
                break;
            }
            std::thread::sleep(TICK);
        }
        self.raise_stop();
        let elapsed = t0.elapsed();
        let at_end = self.port.stats(self.vif).unwrap_or_default();
        check_interrupt()?;
        failed?;
        let reply = self
            .child()?
            .expect("tx-done", window.max(Duration::from_secs(2)) + SETUP_WAIT)?;
        let done = Done::parse(&reply).map_err(|e| guest_reply("tx-done", e))?;
        Ok(start.cell(
            &self.port,
            self.vif,
            &at_end,
            len,
            elapsed,
            GuestKind::Daemon,
            done.cpu,
            done.frames,
        ))
    }

    fn host_to_guest(&mut self, len: u32, window: Duration) -> Result<HostCell, HostError> {
        let secs = window.as_secs_f64();
        let child = self.child()?;
        child.send(&GuestCommand::Rx { len, secs }.line())?;
        child.expect("go", SETUP_WAIT)?;
        let ctl = Control::new(window);
        let (mac, path) = (self.mac, self.netns.clone());
        let received = &self.board.slots().received;
        let child = self
            .child
            .as_mut()
            .ok_or_else(|| HostError::Setup("no guest process".into()))?;
        let (sent, failed, elapsed, at_end) = ctl.run_timed(|ctl| {
            std::thread::scope(|s| {
                let t0 = ctl.begin();
                let tx = s.spawn(|| inject::run(&path, netns::BRIDGE, len as usize, mac, ctl));
                let mut failed = Ok(());
                while !ctl.should_stop() {
                    if signal::interrupted() {
                        ctl.request_stop();
                    }
                    if let Err(e) = child.poll() {
                        failed = Err(e);
                        ctl.request_stop();
                    }
                    std::thread::sleep(TICK);
                }
                let elapsed = t0.elapsed();
                let at_end = received.load(Ordering::Acquire);
                let sent = tx
                    .join()
                    .unwrap_or_else(|_| Err(HostError::Cell("the injector panicked".into())));
                // Frames still in the TAP or netback arrive now; they count as
                // delivered (not dropped) but outside the window.
                if failed.is_ok() {
                    settle(|| received.load(Ordering::Acquire));
                }
                (sent, failed, elapsed, at_end)
            })
        });
        self.raise_stop();
        check_interrupt()?;
        failed?;
        let sent = sent?;
        let reply = self.child()?.expect("rx-done", SETUP_WAIT)?;
        let done = Done::parse(&reply).map_err(|e| guest_reply("rx-done", e))?;
        let mut m = Measurement::frames(at_end, len, elapsed);
        m.drops = sent.saturating_sub(done.frames);
        m.add_cpu("guest", done.cpu);
        Ok(HostCell {
            frame_size: len,
            direction: HostDirection::HostToGuest,
            guest: GuestKind::Daemon,
            offered: sent,
            measurement: m,
        })
    }

    /// Orderly teardown: the guest process closes its vif and exits, netback stops
    /// (the TAP goes), the daemon stops (the socket goes).
    fn close(mut self: Box<Self>) {
        if let Some(c) = self.child.take() {
            c.quit(QUIT_WAIT);
        }
        if let Some(nb) = self.netback.take() {
            nb.shutdown();
        }
        if let Some(sv) = self.server.take() {
            sv.shutdown();
        }
    }
}
