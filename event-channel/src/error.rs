//! The errors event-channel operations return, each tied to the errno Xen's
//! `EVTCHNOP_*` hypercalls give back in the same situation.

use crate::{DomId, Port};

/// Xen's errno values (`xen/include/public/errno.h`), positive as in
/// [`EvtchnError::errno`]. A hypercall returns their negation.
pub mod errno {
    /// `EPERM`: operation not permitted.
    pub const EPERM: i32 = 1;
    /// `ESRCH`: no such domain.
    pub const ESRCH: i32 = 3;
    /// `EEXIST`: the domain already exists.
    pub const EEXIST: i32 = 17;
    /// `EINVAL`: bad port, or a port in the wrong state.
    pub const EINVAL: i32 = 22;
    /// `ENOSPC`: no free port left.
    pub const ENOSPC: i32 = 28;
}

/// Why an event-channel operation was refused. Each variant names the Xen errno
/// the matching hypercall returns ([`EvtchnError::errno`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EvtchnError {
    /// The port is 0 (reserved, Xen's `ECS_RESERVED`) or beyond the domain's
    /// last port (`!port_is_valid(d, port)` → `EINVAL`).
    #[error("port {port} is not a valid port of domain {dom} (EINVAL)")]
    InvalidPort {
        /// Domain whose port was named.
        dom: DomId,
        /// The offending port.
        port: Port,
    },
    /// The port exists but its state does not allow the operation, e.g. closing
    /// or sending on an `ECS_FREE` port, or binding to a remote port that is not
    /// `ECS_UNBOUND` for the caller (`EINVAL`).
    #[error("port {port} of domain {dom} is in the wrong state for this operation (EINVAL)")]
    WrongState {
        /// Domain owning the port.
        dom: DomId,
        /// The port in the wrong state.
        port: Port,
    },
    /// The domain does not exist (`rcu_lock_domain_by_id` failed → `ESRCH`).
    #[error("domain {0} does not exist (ESRCH)")]
    NoSuchDomain(DomId),
    /// Every port of the domain is in use (`get_free_port` → `ENOSPC`).
    #[error("domain {0} has no free event-channel port (ENOSPC)")]
    NoFreePort(DomId),
    /// The caller may not act on another domain's ports (XSM `XSM_TARGET`
    /// check → `EPERM`): only the domain itself or the control domain may.
    #[error("domain {caller} may not operate on the ports of domain {target} (EPERM)")]
    PermissionDenied {
        /// The domain issuing the call.
        caller: DomId,
        /// The domain whose ports it tried to touch.
        target: DomId,
    },
    /// A domain with this id is already registered (`domain_create` → `EEXIST`).
    #[error("domain {0} already exists (EEXIST)")]
    DomainExists(DomId),
    /// The domid is reserved (`>= DOMID_FIRST_RESERVED`) and cannot name a domain.
    #[error("domain id {0:#x} is reserved (EINVAL)")]
    ReservedDomId(DomId),
    /// The requested port count is 0, above the 2-level ABI limit, or larger
    /// than the bitmap memory supplied for it (`EINVAL`).
    #[error("cannot give a domain {0} event-channel ports (EINVAL)")]
    BadPortCount(u32),
    /// A host OS call behind the transport (eventfd, poll) failed with this errno.
    #[error("host OS call failed (errno {0})")]
    Os(i32),
}

impl EvtchnError {
    /// The positive Xen errno for this error (the hypercall returns `-errno`).
    pub fn errno(&self) -> i32 {
        match self {
            Self::InvalidPort { .. }
            | Self::WrongState { .. }
            | Self::ReservedDomId(_)
            | Self::BadPortCount(_) => errno::EINVAL,
            Self::NoSuchDomain(_) => errno::ESRCH,
            Self::NoFreePort(_) => errno::ENOSPC,
            Self::PermissionDenied { .. } => errno::EPERM,
            Self::DomainExists(_) => errno::EEXIST,
            Self::Os(e) => *e,
        }
    }
}

#[cfg(feature = "std")]
impl From<std::io::Error> for EvtchnError {
    fn from(e: std::io::Error) -> Self {
        // An io::Error built from a kind has no raw errno; EIO is the honest fallback.
        Self::Os(e.raw_os_error().unwrap_or(libc::EIO))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_values_match_xen() {
        let cases = [
            (EvtchnError::InvalidPort { dom: 1, port: 0 }, 22),
            (EvtchnError::WrongState { dom: 1, port: 3 }, 22),
            (EvtchnError::NoSuchDomain(9), 3),
            (EvtchnError::NoFreePort(1), 28),
            (
                EvtchnError::PermissionDenied {
                    caller: 2,
                    target: 3,
                },
                1,
            ),
            (EvtchnError::DomainExists(1), 17),
            (EvtchnError::ReservedDomId(0x7FF0), 22),
            (EvtchnError::BadPortCount(0), 22),
            (EvtchnError::Os(9), 9),
        ];
        for (err, want) in cases {
            assert_eq!(err.errno(), want, "{err}");
        }
    }
}
