//! The guest side of the `hv` daemon: [`connect`] gives a [`RemoteGuestEnv`], a
//! [`GuestEnv`] for a guest running as its own process, so netfront runs unchanged
//! embedded or against the daemon. [`Toolstack`] is the client of the `hv` CLI.
//!
//! What a guest process holds after [`connect`]: its RAM, grant table and
//! event-channel page mapped from the memfds the daemon sent, its own frame allocator
//! and grant-reference allocator (granting is writing its own grant table, as on Xen:
//! no message to the daemon), and the socket for xenstore and event-channel set-up.
//! When the process exits — or the [`RemoteGuestEnv`] is dropped — the socket closes
//! and the daemon destroys the domain.

mod conn;
mod evtchn;
mod store;

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use event_channel::EventFd;
use grant_table::{GrantEntryV1, GrantError, GuestGrantTable, SharedGrantTable};

use crate::env::{DomId, EnvError, GrantedPage, GuestEnv, Port, Store, StoreError};
use crate::memory::{FrameAllocator, FrameRegion, PAGE_SIZE};
use crate::wire::{self, CreateDomain, DomainCreated, DomainSummary, Request, VifStatus};

use conn::{CallError, Conn};
use evtchn::EvtchnPage;
pub use evtchn::RemoteChannel;
pub use store::RemoteStore;

/// Errors of the daemon's clients, each saying what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No socket at the path.
    #[error("cannot connect to the hv daemon: no socket at {p}. Is `hv serve` running? Start it with `hv serve --socket {p}` (or point --socket / HV_SOCKET at the right path)", p = path.display())]
    NoDaemon { path: PathBuf },
    /// A socket nobody listens on.
    #[error("nobody listens on {p} (a daemon died and left its socket behind): start `hv serve --socket {p}`, which removes the stale socket", p = path.display())]
    Stale { path: PathBuf },
    /// Not allowed to connect.
    #[error("permission denied connecting to {}: run as root or as a user with write access to the socket", path.display())]
    Denied { path: PathBuf },
    /// Any other connect failure.
    #[error("cannot connect to the hv daemon at {}: {source}", path.display())]
    Connect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The daemon refused the request.
    #[error("{message} ({errno})")]
    Refused { errno: String, message: String },
    /// A xenstore operation failed.
    #[error("xenstore: {0}")]
    Store(#[from] StoreError),
    /// The connection ended.
    #[error("{0}")]
    Disconnected(String),
    /// The daemon's reply did not make sense.
    #[error("protocol error talking to the hv daemon: {0}")]
    Protocol(String),
    /// Mapping memory the daemon sent failed.
    #[error("mapping the domain's memory failed: {0}")]
    Map(io::Error),
}

/// The socket path used when none is given: `$HV_SOCKET`, else
/// `/run/pvnet/hv.sock` for root, else `$XDG_RUNTIME_DIR/pvnet/hv.sock`, else
/// `/tmp/pvnet-<uid>/hv.sock`.
pub fn default_socket_path() -> PathBuf {
    if let Some(p) = std::env::var_os("HV_SOCKET").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    // SAFETY: geteuid cannot fail.
    let uid = unsafe { libc::geteuid() };
    if uid == 0 {
        return PathBuf::from("/run/pvnet/hv.sock");
    }
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|p| !p.is_empty()) {
        return Path::new(&dir).join("pvnet/hv.sock");
    }
    PathBuf::from(format!("/tmp/pvnet-{uid}/hv.sock"))
}

/// What a guest asks the daemon for.
#[derive(Debug, Clone)]
pub struct GuestConfig {
    /// Name shown by `hv list` (printable ASCII, no spaces, at most 64 bytes).
    pub name: String,
    /// RAM in 4 KiB frames.
    pub memory_frames: u32,
    /// Grant-table frames (512 refs each).
    pub grant_frames: u32,
    /// Highest event-channel port.
    pub max_ports: u32,
    /// Vifs the toolstack creates for the guest (devids `0..vifs`), as `vif = [...]`
    /// in an xl config.
    pub vifs: u32,
}

impl Default for GuestConfig {
    /// 64 MiB, 32 grant frames, 1023 ports, one vif; named after the process id.
    fn default() -> Self {
        Self {
            name: format!("guest-{}", std::process::id()),
            memory_frames: 16 * 1024,
            grant_frames: 32,
            max_ports: 1023,
            vifs: 1,
        }
    }
}

/// Connect to the daemon at `path` as a new guest with [`GuestConfig::default`].
pub fn connect(path: impl AsRef<Path>) -> Result<RemoteGuestEnv, ClientError> {
    connect_with(path, &GuestConfig::default())
}

/// Connect to the daemon at `path` as a new guest configured by `cfg`.
pub fn connect_with(
    path: impl AsRef<Path>,
    cfg: &GuestConfig,
) -> Result<RemoteGuestEnv, ClientError> {
    let conn = Conn::open(path.as_ref())?;
    let req = Request::CreateDomain(CreateDomain {
        name: cfg.name.clone(),
        memory_frames: cfg.memory_frames,
        grant_frames: cfg.grant_frames,
        max_ports: cfg.max_ports,
        vifs: cfg.vifs,
    });
    let reply = conn.call(&req, 0)?;
    let info = DomainCreated::decode(&reply.msg.payload)
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
    let [ram, gnttab, evtchn]: [OwnedFd; 3] = reply.fds.try_into().map_err(|v: Vec<OwnedFd>| {
        ClientError::Protocol(format!(
            "expected 3 memfds with the domain, got {}",
            v.len()
        ))
    })?;
    RemoteGuestEnv::build(conn, info, ram, gnttab, evtchn)
}

/// Map `frames` frames of `fd`, after checking the memfd is that large (mapping past
/// its end would fault on access).
fn map_region(fd: OwnedFd, frames: usize) -> Result<FrameRegion, ClientError> {
    // SAFETY: stat is plain old data; fstat fills it for a descriptor we own.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: see above.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } < 0 {
        return Err(ClientError::Map(io::Error::last_os_error()));
    }
    let need = frames
        .checked_mul(PAGE_SIZE)
        .ok_or_else(|| ClientError::Protocol("memory size overflows".into()))?;
    if frames == 0 || (st.st_size as u64) < need as u64 {
        return Err(ClientError::Protocol(format!(
            "memfd holds {} bytes, {need} announced",
            st.st_size
        )));
    }
    FrameRegion::map(fd, frames).map_err(ClientError::Map)
}

/// A guest domain running in this process, served by the `hv` daemon.
pub struct RemoteGuestEnv {
    // Views into shared memory are declared before the regions they point into, so
    // they are dropped first.
    gnttab: GuestGrantTable,
    _gnttab_mem: FrameRegion,
    frames: FrameAllocator,
    ram: FrameRegion,
    evtchn: Arc<EvtchnPage>,
    store: RemoteStore,
    conn: Arc<Conn>,
    info: DomainCreated,
}

impl RemoteGuestEnv {
    fn build(
        conn: Arc<Conn>,
        info: DomainCreated,
        ram: OwnedFd,
        gnttab: OwnedFd,
        evtchn: OwnedFd,
    ) -> Result<Self, ClientError> {
        let entries_per_frame = (PAGE_SIZE / core::mem::size_of::<GrantEntryV1>()) as u64;
        if u64::from(info.nr_grant_entries) > u64::from(info.grant_frames) * entries_per_frame {
            return Err(ClientError::Protocol(
                "more grant entries than grant frames hold".into(),
            ));
        }
        if info.max_ports as usize >= event_channel::EVTCHN_2L_NR_CHANNELS {
            return Err(ClientError::Protocol(
                "max_ports beyond the 2-level ABI".into(),
            ));
        }
        let ram = map_region(ram, info.memory_frames as usize)?;
        let gnttab_mem = map_region(gnttab, info.grant_frames as usize)?;
        let evtchn_mem = map_region(evtchn, 1)?;
        // SAFETY: the region is page aligned and holds nr_grant_entries 8-byte entries
        // (checked above); `_gnttab_mem` keeps it mapped for the table's life (it is
        // dropped after `gnttab`); the daemon accesses it only atomically too.
        let table =
            unsafe { SharedGrantTable::from_raw(gnttab_mem.base().cast(), info.nr_grant_entries) }
                .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let frames = FrameAllocator::new(0, info.memory_frames as usize);
        Ok(Self {
            gnttab: GuestGrantTable::new(table),
            _gnttab_mem: gnttab_mem,
            frames,
            ram,
            evtchn: Arc::new(EvtchnPage::new(evtchn_mem, info.max_ports as usize + 1)),
            store: RemoteStore::new(conn.clone()),
            conn,
            info,
        })
    }

    /// What the daemon created.
    pub fn info(&self) -> DomainCreated {
        self.info
    }

    /// The socket this guest is served on.
    pub fn socket_path(&self) -> &Path {
        self.conn.path()
    }

    /// False once the daemon ended the connection (it stopped, or `hv destroy`).
    pub fn is_connected(&self) -> bool {
        !self.conn.is_closed()
    }

    /// Wait until the daemon ends the connection; true if it did within `timeout`.
    pub fn wait_disconnected(&self, timeout: Duration) -> bool {
        self.conn.wait_closed(timeout)
    }

    /// `EVTCHNOP_bind_interdomain`: connect a new local port to `remote_port` of
    /// `remote` (which must have offered it to this domain with alloc_unbound).
    pub fn bind_interdomain(
        &self,
        remote: DomId,
        remote_port: Port,
    ) -> Result<RemoteChannel, EnvError> {
        self.channel(&Request::EvtchnBindInterdomain {
            remote,
            remote_port,
        })
    }

    fn channel(&self, req: &Request) -> Result<RemoteChannel, EnvError> {
        let reply = self.conn.call(req, 0).map_err(env_error)?;
        let port =
            wire::parse_port(&reply.msg.payload).map_err(|e| EnvError::Transport(e.to_string()))?;
        let channel = (|| {
            let [kick, send]: [OwnedFd; 2] = reply.fds.try_into().map_err(|_| {
                EnvError::Transport("expected a kick and a send eventfd with the port".into())
            })?;
            let ev =
                |fd| EventFd::from_owned_fd(fd).map_err(|e| EnvError::Transport(e.to_string()));
            Ok(RemoteChannel::new(
                self.conn.clone(),
                self.evtchn.clone(),
                port,
                ev(kick)?,
                ev(send)?,
            ))
        })();
        if channel.is_err() {
            self.conn.send_oneway(&Request::EvtchnClose { port });
        }
        channel
    }

    fn grant_error(e: GrantError) -> EnvError {
        match e {
            GrantError::NoSpace => EnvError::Exhausted("grant references"),
            GrantError::InUse(r) => EnvError::GrantInUse(r),
            GrantError::BadRef(_) => EnvError::Grant(grant_table::GNTST_BAD_GNTREF),
            GrantError::StillGranted(_) => EnvError::Grant(grant_table::GNTST_GENERAL_ERROR),
        }
    }
}

fn env_error(e: CallError) -> EnvError {
    match e {
        CallError::Hv { errno, message } => match errno.as_str() {
            "ESRCH" | "EINVAL" | "ENOSPC" | "EPERM" => EnvError::Evtchn(errno_value(&errno)),
            _ => EnvError::Transport(format!("{message} ({errno})")),
        },
        CallError::Xs(s) => EnvError::Store(s),
        CallError::Transport(t) => EnvError::Transport(t),
    }
}

fn errno_value(name: &str) -> i32 {
    match name {
        "ESRCH" => libc::ESRCH,
        "ENOSPC" => libc::ENOSPC,
        "EPERM" => libc::EPERM,
        _ => libc::EINVAL,
    }
}

impl GuestEnv for RemoteGuestEnv {
    type Channel = RemoteChannel;

    fn domid(&self) -> DomId {
        self.info.domid
    }

    /// Granted pages are frames of the guest's RAM, one mapping.
    fn granted_pages_share_one_mapping(&self) -> bool {
        true
    }

    fn grant_pages(
        &self,
        remote: DomId,
        count: usize,
        readonly: bool,
    ) -> Result<Vec<GrantedPage>, EnvError> {
        let frames = self
            .frames
            .alloc(count)
            .map_err(|_| EnvError::Exhausted("guest memory frames"))?;
        let mut pages = Vec::with_capacity(count);
        for (i, &gfn) in frames.iter().enumerate() {
            let granted = self
                .ram
                .frame_ptr(gfn)
                .ok_or(EnvError::Exhausted("guest memory frames"))
                .and_then(|ptr| {
                    // SAFETY: the frame was just allocated to us and lies inside our RAM.
                    unsafe { std::ptr::write_bytes(ptr.as_ptr(), 0, PAGE_SIZE) };
                    let frame = u32::try_from(gfn)
                        .map_err(|_| EnvError::Exhausted("guest memory frames"))?;
                    self.gnttab
                        .grant_foreign_access(remote, frame, readonly)
                        .map(|gref| GrantedPage { gref, ptr })
                        .map_err(Self::grant_error)
                });
            match granted {
                Ok(p) => pages.push(p),
                Err(e) => {
                    for p in pages.drain(..) {
                        let _ = self.gnttab.end_foreign_access(p.gref);
                    }
                    self.frames.free(
                        frames
                            .iter()
                            .copied()
                            .skip(i)
                            .chain(frames.iter().copied().take(i)),
                    );
                    return Err(e);
                }
            }
        }
        Ok(pages)
    }

    fn end_grants(&self, pages: Vec<GrantedPage>) -> Result<(), (EnvError, Vec<GrantedPage>)> {
        let mut iter = pages.into_iter();
        while let Some(page) = iter.next() {
            let gfn = self
                .gnttab
                .table()
                .read(page.gref)
                .map(|e| u64::from(e.frame));
            match self.gnttab.end_foreign_access(page.gref) {
                Ok(()) => {
                    if let Some(gfn) = gfn {
                        self.frames.free([gfn]);
                    }
                }
                Err(e) => {
                    let mut rest = vec![page];
                    rest.extend(iter);
                    return Err((Self::grant_error(e), rest));
                }
            }
        }
        Ok(())
    }

    fn alloc_unbound(&self, remote: DomId) -> Result<RemoteChannel, EnvError> {
        self.channel(&Request::EvtchnAllocUnbound { remote })
    }

    fn store(&self) -> &dyn Store {
        &self.store
    }
}

impl Drop for RemoteGuestEnv {
    fn drop(&mut self) {
        // The daemon destroys the domain when the connection ends.
        self.conn.close();
    }
}

/// The toolstack's connection (what `xl` and the xenstore tools use): Dom0's view of
/// the xenstore and the domain-management commands. Needs root or the daemon's uid.
pub struct Toolstack {
    store: RemoteStore,
    conn: Arc<Conn>,
}

impl Toolstack {
    /// Connect to the daemon at `path` as the toolstack.
    pub fn connect(path: impl AsRef<Path>) -> Result<Self, ClientError> {
        let conn = Conn::open(path.as_ref())?;
        conn.call(&Request::AttachToolstack, 0)?;
        Ok(Self {
            store: RemoteStore::new(conn.clone()),
            conn,
        })
    }

    /// Dom0's xenstore connection.
    pub fn store(&self) -> &dyn Store {
        &self.store
    }

    /// `xl list`.
    pub fn list(&self) -> Result<Vec<DomainSummary>, ClientError> {
        let r = self.conn.call(&Request::ListDomains, 0)?;
        wire::decode_domains(&r.msg.payload).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// `xl destroy`: returns once the domain is gone.
    pub fn destroy(&self, domid: DomId) -> Result<(), ClientError> {
        self.conn.call(&Request::DestroyDomain { domid }, 0)?;
        Ok(())
    }

    /// `xl network-list`.
    pub fn network_list(&self, domid: DomId) -> Result<Vec<VifStatus>, ClientError> {
        let r = self.conn.call(&Request::NetworkList { domid }, 0)?;
        wire::decode_vifs(&r.msg.payload).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// `xl network-detach`.
    pub fn network_detach(&self, domid: DomId, devid: u32) -> Result<(), ClientError> {
        self.conn
            .call(&Request::NetworkDetach { domid, devid }, 0)?;
        Ok(())
    }
}

impl Drop for Toolstack {
    fn drop(&mut self) {
        self.conn.close();
    }
}
