//! The environment the split drivers are written against.
//!
//! netfront talks to a [`GuestEnv`], netback to a [`BackendEnv`]. The embedded
//! (in-process) hypervisor is the first implementation; the `hv` daemon client and
//! Linux's `/dev/xen/*` devices stand behind the same traits, chosen at start-up.
//! The traits are `no_std` + `alloc` so netfront can be embedded in a PV kernel.

use alloc::string::String;
use alloc::vec::Vec;
use core::ptr::NonNull;
use core::time::Duration;

/// `domid_t`: a domain identifier.
pub type DomId = u16;
/// `grant_ref_t`: an index into a domain's grant table.
pub type GrantRef = u32;
/// `evtchn_port_t`: an event-channel port number, local to a domain.
pub type Port = u32;

/// Errors an environment reports. Each maps onto the Xen error the real
/// hypercall / device would return.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    /// No grant reference, port or page is free (`ENOSPC` / `GNTST_no_space`).
    #[error("out of {0}: free some or raise the domain's limit")]
    Exhausted(&'static str),
    /// The grant is still mapped or being copied by the peer (`end_foreign_access` refused).
    #[error("grant {0} is still in use by the remote domain; retry after it unmaps")]
    GrantInUse(GrantRef),
    /// A grant operation failed with a `GNTST_*` status (negative Xen value).
    #[error("grant operation failed with GNTST {0}")]
    Grant(i16),
    /// The domain does not exist (`ESRCH`).
    #[error("domain {0} does not exist")]
    NoSuchDomain(DomId),
    /// An event-channel operation failed (Xen errno, positive).
    #[error("event channel operation failed (errno {0})")]
    Evtchn(i32),
    /// A xenstore operation failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Transport to the hypervisor (socket, device) failed.
    #[error("hypervisor transport failed: {0}")]
    Transport(String),
}

/// Xenstore errors, named after the errno strings of Xen's `xs_wire.h`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// `ENOENT`: the node does not exist.
    #[error("xenstore node not found (ENOENT)")]
    NotFound,
    /// `EACCES`: the caller may not read or write this node.
    #[error("xenstore permission denied (EACCES)")]
    PermissionDenied,
    /// `EAGAIN`: the transaction conflicted with another change; retry it.
    #[error("xenstore transaction conflict (EAGAIN): retry the transaction")]
    Again,
    /// `EINVAL`: malformed path or argument.
    #[error("invalid xenstore path or argument (EINVAL)")]
    Invalid,
    /// `EEXIST`: e.g. a watch with the same path and token already exists.
    #[error("xenstore entry already exists (EEXIST)")]
    Exists,
    /// `E2BIG` / `ENOSPC`: value or quota too large.
    #[error("xenstore quota or size limit exceeded")]
    TooBig,
    /// `EIO` / transport failure.
    #[error("xenstore I/O error: {0}")]
    Io(String),
}

/// A xenstore transaction id (`XBT_NIL` is 0).
pub type TxId = u32;
/// `XBT_NIL`: operate outside any transaction.
pub const XBT_NIL: TxId = 0;

/// Per-node permission (`XS_PERM_*`): the first entry of a node's list names the owner
/// and the rights of every domain not listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PermKind {
    /// `XS_PERM_NONE` ('n')
    None,
    /// `XS_PERM_READ` ('r')
    Read,
    /// `XS_PERM_WRITE` ('w')
    Write,
    /// `XS_PERM_READ | XS_PERM_WRITE` ('b')
    Both,
}

/// One `xs_permissions` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Perm {
    pub domid: DomId,
    pub kind: PermKind,
}

/// A fired watch: the path that changed and the token given at `watch` time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    pub path: String,
    pub token: String,
}

/// One domain's connection to the xenstore, with the operations of `xs_wire.h`.
/// Paths are absolute (`/local/domain/1/device/vif/0/state`).
pub trait Store: Send + Sync {
    /// `XS_READ`
    fn read(&self, tx: TxId, path: &str) -> Result<Vec<u8>, StoreError>;
    /// `XS_WRITE` (creates missing parents, as xenstored does)
    fn write(&self, tx: TxId, path: &str, value: &[u8]) -> Result<(), StoreError>;
    /// `XS_MKDIR`
    fn mkdir(&self, tx: TxId, path: &str) -> Result<(), StoreError>;
    /// `XS_RM` (removes the whole subtree)
    fn rm(&self, tx: TxId, path: &str) -> Result<(), StoreError>;
    /// `XS_DIRECTORY`: child names, sorted.
    fn directory(&self, tx: TxId, path: &str) -> Result<Vec<String>, StoreError>;
    /// `XS_GET_PERMS`
    fn get_perms(&self, tx: TxId, path: &str) -> Result<Vec<Perm>, StoreError>;
    /// `XS_SET_PERMS` (owner or Dom0 only)
    fn set_perms(&self, tx: TxId, path: &str, perms: &[Perm]) -> Result<(), StoreError>;
    /// `XS_TRANSACTION_START`
    fn transaction_start(&self) -> Result<TxId, StoreError>;
    /// `XS_TRANSACTION_END`; `commit == false` aborts. A conflict returns [`StoreError::Again`].
    fn transaction_end(&self, tx: TxId, commit: bool) -> Result<(), StoreError>;
    /// `XS_WATCH`: fires once at registration (as xenstored does) and on every change
    /// at or below `path`.
    fn watch(&self, path: &str, token: &str) -> Result<(), StoreError>;
    /// `XS_UNWATCH`
    fn unwatch(&self, path: &str, token: &str) -> Result<(), StoreError>;
    /// Next fired watch of this connection; waits up to `timeout` (`None`: don't wait).
    fn next_watch_event(&self, timeout: Option<Duration>) -> Option<WatchEvent>;
}

/// One end of a bound event channel, owned by the domain that holds `port`.
/// Dropping it closes the port (`EVTCHNOP_close`).
pub trait EventChannel: Send + Sync {
    /// The local port number.
    fn port(&self) -> Port;
    /// `EVTCHNOP_send`: raise an event on the remote end.
    fn notify(&self);
    /// Consume a pending event without blocking; true if one was pending.
    fn try_consume(&self) -> bool;
    /// Wait (spin briefly, then sleep) until an event is pending or `timeout` passes;
    /// consumes it and returns true if one arrived.
    fn wait(&self, timeout: Option<Duration>) -> bool;
}

/// A page this domain shares with another through a grant.
#[derive(Debug)]
pub struct GrantedPage {
    /// The grant reference the remote domain uses.
    pub gref: GrantRef,
    /// Where the page is mapped in this domain (4 KiB, page aligned).
    pub ptr: NonNull<u8>,
}

// SAFETY: a GrantedPage only names memory owned by the environment for as long as the
// grant exists; synchronisation of its contents is the ring protocol's job.
unsafe impl Send for GrantedPage {}
// SAFETY: see above.
unsafe impl Sync for GrantedPage {}

/// What a guest (netfront) needs from its hypervisor.
pub trait GuestEnv: Send + Sync {
    /// Bound event-channel type.
    type Channel: EventChannel + 'static;
    /// The guest's own domid.
    fn domid(&self) -> DomId;
    /// Allocate `count` zeroed pages and grant `remote` access to each (read-only if
    /// `readonly`). Mirrors `gnttab_grant_foreign_access` on freshly allocated pages, or
    /// `IOCTL_GNTALLOC_ALLOC_GREF` on Linux.
    fn grant_pages(
        &self,
        remote: DomId,
        count: usize,
        readonly: bool,
    ) -> Result<Vec<GrantedPage>, EnvError>;
    /// True if every page [`GuestEnv::grant_pages`] returns lies in one mapping of
    /// this domain's memory (its RAM), so that pages adjacent in memory may be read
    /// through one slice. netfront then hands a multi-page frame that landed in
    /// adjacent pages to its stack in place instead of through a staging copy. False
    /// (the default) where each page is its own mapping (Linux `gntalloc`).
    fn granted_pages_share_one_mapping(&self) -> bool {
        false
    }
    /// End access to granted pages and free them (`gnttab_end_foreign_access`).
    /// Refuses with [`EnvError::GrantInUse`] while the remote domain has one mapped.
    fn end_grants(&self, pages: Vec<GrantedPage>) -> Result<(), (EnvError, Vec<GrantedPage>)>;
    /// `EVTCHNOP_alloc_unbound` for `remote`; the channel is connected once the remote
    /// binds it.
    fn alloc_unbound(&self, remote: DomId) -> Result<Self::Channel, EnvError>;
    /// This domain's xenstore connection.
    fn store(&self) -> &dyn Store;
}

/// A foreign page mapped into the backend (`GNTTABOP_map_grant_ref`); unmapped on drop.
pub trait MappedPage: Send + Sync {
    /// Start of the 4 KiB mapping.
    fn ptr(&self) -> NonNull<u8>;
}

/// Direction of one grant-copy segment, seen from the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyDir {
    /// Foreign granted page → local buffer (guest TX).
    FromForeign,
    /// Local buffer → foreign granted page (guest RX).
    ToForeign,
}

/// One segment of a batched grant copy (`gnttab_copy` / `IOCTL_GNTDEV_GRANT_COPY`
/// segment). The foreign side is a grant ref of `domid`; the local side a backend buffer.
#[derive(Debug, Clone, Copy)]
pub struct CopySeg {
    pub dir: CopyDir,
    pub domid: DomId,
    pub gref: GrantRef,
    /// Offset into the granted page; `offset + len` must stay within 4096.
    pub offset: u16,
    pub len: u16,
    /// Local buffer: valid for `len` bytes for the duration of the copy call.
    pub local: *mut u8,
    /// Filled in by the copy: `GNTST_okay` (0) or a negative `GNTST_*`.
    pub status: i16,
}

/// What a backend (netback in Dom0) needs from its hypervisor.
pub trait BackendEnv: Send + Sync {
    /// Bound event-channel type.
    type Channel: EventChannel + 'static;
    /// Mapped foreign page type.
    type Mapping: MappedPage + 'static;
    /// The backend's own domid (0 for Dom0).
    fn domid(&self) -> DomId;
    /// `GNTTABOP_map_grant_ref` of a page `domid` granted us.
    fn map_grant(
        &self,
        domid: DomId,
        gref: GrantRef,
        readonly: bool,
    ) -> Result<Self::Mapping, EnvError>;
    /// `GNTTABOP_copy` on a batch: every segment gets its own status and the rest of the
    /// batch is still processed after a failure.
    fn grant_copy(&self, segs: &mut [CopySeg]);
    /// `EVTCHNOP_bind_interdomain` to `remote_port` of `remote`.
    fn bind_interdomain(&self, remote: DomId, remote_port: Port)
        -> Result<Self::Channel, EnvError>;
    /// Dom0's xenstore connection.
    fn store(&self) -> &dyn Store;
}
