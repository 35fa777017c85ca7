//! Xen event channels, in user space.
//!
//! # The model, for someone who knows Xen
//!
//! An event channel is a pair of ports in two domains (or two ports of one
//! domain, loopback). Each port has a state as in `struct evtchn`:
//! [`PortState::Free`] (`ECS_FREE`), [`PortState::Unbound`] (`ECS_UNBOUND`,
//! offered to one remote domid) and [`PortState::Interdomain`]
//! (`ECS_INTERDOMAIN`, pointing at the peer port, which points back). VIRQ, PIRQ
//! and IPI ports are not modelled: a split driver needs none.
//!
//! [`EventChannels`] is the hypervisor. Its methods are the hypercalls, called
//! on behalf of the acting domain (Xen's `current->domain`):
//!
//! | here | Xen |
//! |---|---|
//! | [`EventChannels::alloc_unbound`], [`alloc_unbound_for`](EventChannels::alloc_unbound_for) | `EVTCHNOP_alloc_unbound` |
//! | [`EventChannels::bind_interdomain`] | `EVTCHNOP_bind_interdomain` |
//! | [`EventChannels::send`] | `EVTCHNOP_send` |
//! | [`EventChannels::close`] | `EVTCHNOP_close` |
//! | [`EventChannels::status`] | `EVTCHNOP_status` |
//! | [`EventChannels::unmask`] | `EVTCHNOP_unmask` |
//! | [`EventChannels::mask`], [`test_and_clear_pending`](EventChannels::test_and_clear_pending) | the guest's own bit operations on `shared_info` |
//! | [`EventChannels::add_domain`] / [`remove_domain`](EventChannels::remove_domain) | `evtchn_init` / `evtchn_destroy` |
//!
//! The same checks are made and the same errno returned ([`EvtchnError::errno`]):
//! `ESRCH` for an unknown domain, `EINVAL` for a bad port or a port in the wrong
//! state (binding to a port not offered to you, binding twice, sending on or
//! closing a free port), `ENOSPC` when no port is free, `EPERM` when an
//! unprivileged domain allocates in another. Ports are handed out lowest first
//! from 1; port 0 is reserved as in Xen and is rejected with `EINVAL` here. As in
//! Xen, a send on an unbound port is dropped silently, a bind conservatively marks
//! the new local port pending, closing one end returns the peer to `ECS_UNBOUND`
//! for the closer, and freeing a port clears its pending bit.
//!
//! ## Pending and mask bits: the 2-level ABI
//!
//! Each domain has `evtchn_pending[]` and `evtchn_mask[]` bitmaps of 64-bit words
//! ([`EvtchnBits`], [`SharedBits`]), laid out as in `shared_info`
//! ([`EvtchnBitmapPage`]). A send sets the peer port's pending bit; if it was not
//! already pending and the port is not masked, the hub kicks the [`Notifier`]
//! bound to that port — where Xen would set `evtchn_pending_sel` and
//! `evtchn_upcall_pending` and interrupt the vCPU. Unmasking a pending port kicks
//! again, as `evtchn_unmask` does. The bitmaps can live in memory shared with a
//! guest process ([`SharedBits::from_raw`], [`EvtchnBits::from_page`],
//! [`EventChannels::add_domain_with_bits`]), so the guest checks for events with a
//! load, not a system call. The hub never trusts the bitmaps for port state: a
//! guest scribbling on them can only confuse itself.
//!
//! ## Transport (feature `std`)
//!
//! [`EventFd`] is the interrupt line; [`EventFdNotifier`] signals it on every
//! kick. [`Waiter`] spins on one port's pending bit for a few microseconds, then
//! announces it sleeps and sleeps in `poll`; its [`WaiterNotifier`] writes the
//! eventfd only while the waiter sleeps, so notifying a polling peer costs no
//! system call. [`Waiter`] explains why no wake-up is lost.
//!
//! ## `no_std`
//!
//! Without the default `std` feature the crate is `no_std` + `alloc`: the port
//! logic and bitmaps only, for embedding in a PV kernel. Locks are `spin`'s.

#![cfg_attr(not(feature = "std"), no_std)]
#![warn(missing_docs)]

extern crate alloc;

mod bits;
mod domain;
mod error;
mod hub;
pub mod poll;
mod port;

#[cfg(feature = "std")]
mod eventfd;
#[cfg(feature = "std")]
mod waiter;

pub use bits::{
    EvtchnBitmapPage, EvtchnBits, SharedBits, BITS_PER_EVTCHN_WORD, EVTCHN_2L_NR_CHANNELS,
};
pub use error::{errno, EvtchnError};
pub use hub::EventChannels;
pub use poll::{PollBudget, WaitOutcome, DEFAULT_POLL_WORTH, POLL_GROW_START};
pub use port::{
    Notifier, PortState, EVTCHNSTAT_CLOSED, EVTCHNSTAT_INTERDOMAIN, EVTCHNSTAT_UNBOUND,
};

#[cfg(feature = "std")]
pub use eventfd::{EventFd, EventFdNotifier};
#[cfg(feature = "std")]
pub use waiter::{Waiter, WaiterNotifier, WakeStats, DEFAULT_SPIN};

/// `evtchn_port_t`: an event-channel port number, local to a domain.
pub type Port = u32;
/// `domid_t`: a domain identifier.
pub type DomId = u16;

/// `DOMID_SELF`: "the calling domain" in hypercall arguments.
pub const DOMID_SELF: DomId = 0x7FF0;
/// `DOMID_FIRST_RESERVED`: domids from here up are special values, never domains.
pub const DOMID_FIRST_RESERVED: DomId = 0x7FF0;
/// Domain 0, the control domain (`is_control_domain`): the one domain that may
/// allocate ports in other domains.
pub const CONTROL_DOMID: DomId = 0;
