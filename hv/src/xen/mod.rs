//! Real Xen: the environment traits on Linux's `/dev/xen/*` devices.
//!
//! The same netfront and netback that run on the embedded hypervisor run on a real Xen
//! host through these types:
//! - [`XenBackendEnv`] (dom0 or a driver domain): grants are mapped with
//!   `/dev/xen/gntdev` (`IOCTL_GNTDEV_MAP_GRANT_REF` + `mmap`) and copied with batched
//!   `IOCTL_GNTDEV_GRANT_COPY`; channels bound with `IOCTL_EVTCHN_BIND_INTERDOMAIN`.
//! - [`XenGuestEnv`] (a domU): pages granted with `/dev/xen/gntalloc`
//!   (`IOCTL_GNTALLOC_ALLOC_GREF`), channels allocated with
//!   `IOCTL_EVTCHN_BIND_UNBOUND_PORT`.
//! - Both reach the xenstore through `/dev/xen/xenbus` speaking `xs_wire.h`
//!   ([`xs_wire`] is the pure codec, [`xenbus`] the client), and share one
//!   `/dev/xen/evtchn` descriptor among their channels ([`evtchn`]).
//!
//! Everything here needs root in a Xen domain with the `xen-gntdev`, `xen-gntalloc` and
//! `xen-evtchn` modules loaded; `open()` says which piece is missing.

mod device;
pub mod env;
pub mod evtchn;
pub mod gntalloc;
pub mod gntdev;
pub mod sys;
pub mod xenbus;
pub mod xs_wire;

pub use env::{XenBackendEnv, XenGuestEnv};
pub use evtchn::{Evtchn, PortDemux, XenChannel};
pub use gntalloc::Gntalloc;
pub use gntdev::{Gntdev, GntdevMapping};
pub use xenbus::XenbusStore;

use crate::env::{EnvError, StoreError};
use alloc::string::ToString;

/// Why a Xen device could not be used.
#[derive(Debug, thiserror::Error)]
pub enum XenError {
    /// The device node does not exist.
    #[error("no {path}: {hint}")]
    Missing {
        path: &'static str,
        hint: &'static str,
    },
    /// The device exists but could not be opened (e.g. not root).
    #[error("cannot open {path}: {source} (the Xen devices need root)")]
    Open {
        path: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// A system call on an open device failed.
    #[error("{op} failed: {source}")]
    Io {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The xenstore refused or failed a request made while opening.
    #[error("xenstore: {0}")]
    Store(#[from] StoreError),
}

impl From<XenError> for EnvError {
    fn from(e: XenError) -> EnvError {
        match e {
            XenError::Store(s) => EnvError::Store(s),
            other => EnvError::Transport(other.to_string()),
        }
    }
}
