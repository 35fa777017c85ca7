//! The state of one port, as `struct evtchn`'s `state` and `u` union in Xen.

use crate::{DomId, Port};

/// `EVTCHNSTAT_closed`: status code of a free port.
pub const EVTCHNSTAT_CLOSED: u32 = 0;
/// `EVTCHNSTAT_unbound`: status code of a port waiting for a remote bind.
pub const EVTCHNSTAT_UNBOUND: u32 = 1;
/// `EVTCHNSTAT_interdomain`: status code of a connected port.
pub const EVTCHNSTAT_INTERDOMAIN: u32 = 2;

/// What a port is doing. Only the interdomain kinds of channel exist here (no
/// VIRQ, PIRQ or IPI ports): they are all a split driver needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PortState {
    /// `ECS_FREE`: not allocated.
    Free,
    /// `ECS_UNBOUND`: allocated by `EVTCHNOP_alloc_unbound`; `remote_domid`
    /// (`u.unbound.remote_domid`) is the only domain allowed to bind to it. A
    /// port also returns here when its interdomain peer closes.
    Unbound {
        /// The domain allowed to bind.
        remote_domid: DomId,
    },
    /// `ECS_INTERDOMAIN`: connected to `remote_port` of `remote_dom`
    /// (`u.interdomain.remote_dom` / `remote_port`), which points back here.
    Interdomain {
        /// The peer domain.
        remote_dom: DomId,
        /// The peer's port.
        remote_port: Port,
    },
}

impl PortState {
    /// The `EVTCHNSTAT_*` code `EVTCHNOP_status` reports for this state.
    pub fn status_code(&self) -> u32 {
        match self {
            Self::Free => EVTCHNSTAT_CLOSED,
            Self::Unbound { .. } => EVTCHNSTAT_UNBOUND,
            Self::Interdomain { .. } => EVTCHNSTAT_INTERDOMAIN,
        }
    }

    /// True unless the port is `ECS_FREE`.
    pub fn is_allocated(&self) -> bool {
        !matches!(self, Self::Free)
    }
}

/// The transport that wakes a domain when one of its ports becomes pending.
///
/// Stands where Xen marks the vCPU's `evtchn_upcall_pending` and sends it an
/// interrupt (`vcpu_mark_events_pending`). Implementations must not block for
/// long and must tolerate spurious kicks: a kick says "look at your pending
/// bits", never "exactly one event arrived".
pub trait Notifier: Send + Sync {
    /// Wake the receiver.
    fn kick(&self);
}
