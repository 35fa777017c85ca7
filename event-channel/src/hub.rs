//! [`EventChannels`]: the hypervisor's side of event channels, the
//! `EVTCHNOP_*` hypercalls over every domain's port table.
//!
//! Locking, mirroring Xen's `event_lock` discipline:
//! 1. the domain map (`RwLock`): read-held for the whole of every operation,
//!    write-held only by `add_domain` / `remove_domain`, so a domain cannot vanish
//!    under an operation;
//! 2. port tables (one `Mutex` per domain): when an operation needs two, it takes
//!    them in domid order (Xen's `double_evtchn_lock` orders by address);
//! 3. notifier slots: leaf locks, held for a clone at most.
//!
//! Notifiers are kicked after every lock is released: a kick may be a system call.

use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec::Vec;
use spin::{MutexGuard, RwLock};

use crate::bits::{EvtchnBits, EVTCHN_2L_NR_CHANNELS};
use crate::domain::Domain;
use crate::error::EvtchnError;
use crate::port::{Notifier, PortState};
use crate::{DomId, Port, CONTROL_DOMID, DOMID_FIRST_RESERVED, DOMID_SELF};

type Domains = BTreeMap<DomId, Arc<Domain>>;

/// Every domain's event channels. Owned by the hypervisor; all methods take
/// `&self` and may be called from any thread.
///
/// Methods take the acting domain first (`dom`): in Xen that is `current->domain`,
/// the caller of the hypercall.
pub struct EventChannels {
    domains: RwLock<Domains>,
}

fn lookup(doms: &Domains, dom: DomId) -> Result<&Arc<Domain>, EvtchnError> {
    doms.get(&dom).ok_or(EvtchnError::NoSuchDomain(dom))
}

fn state(table: &[PortState], port: usize) -> PortState {
    table.get(port).copied().unwrap_or(PortState::Free)
}

fn put(table: &mut [PortState], port: usize, s: PortState) {
    if let Some(slot) = table.get_mut(port) {
        *slot = s;
    }
}

/// The port tables of two domains locked in domid order (one lock if they are
/// the same domain, as for a loopback channel).
struct Pair<'a> {
    a: MutexGuard<'a, Vec<PortState>>,
    b: Option<MutexGuard<'a, Vec<PortState>>>,
}

impl<'a> Pair<'a> {
    fn lock(a: &'a Domain, b: &'a Domain) -> Self {
        if a.id == b.id {
            Self {
                a: a.table.lock(),
                b: None,
            }
        } else if a.id < b.id {
            let ga = a.table.lock();
            let gb = b.table.lock();
            Self { a: ga, b: Some(gb) }
        } else {
            let gb = b.table.lock();
            let ga = a.table.lock();
            Self { a: ga, b: Some(gb) }
        }
    }

    fn a(&mut self) -> &mut [PortState] {
        &mut self.a
    }

    fn b(&mut self) -> &mut [PortState] {
        match &mut self.b {
            Some(g) => g,
            None => &mut self.a,
        }
    }
}

impl Default for EventChannels {
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Debug for EventChannels {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("EventChannels")
            .field("domains", &self.domains())
            .finish()
    }
}

impl EventChannels {
    /// No domains yet.
    pub fn new() -> Self {
        Self {
            domains: RwLock::new(BTreeMap::new()),
        }
    }

    /// Register `domid` with ports `1..=max_ports` and heap-backed bitmaps.
    /// `max_ports` must be in `1..EVTCHN_2L_NR_CHANNELS` (port 0 takes a slot).
    pub fn add_domain(&self, domid: DomId, max_ports: u32) -> Result<(), EvtchnError> {
        let nports = Self::check_max_ports(max_ports)?;
        self.add_domain_with_bits(domid, max_ports, Arc::new(EvtchnBits::new(nports)))
    }

    /// As [`add_domain`](Self::add_domain), with bitmaps the caller placed (e.g. in
    /// memory shared with the guest's process). They must cover ports
    /// `0..=max_ports`; their current contents are kept.
    pub fn add_domain_with_bits(
        &self,
        domid: DomId,
        max_ports: u32,
        bits: Arc<EvtchnBits>,
    ) -> Result<(), EvtchnError> {
        if domid >= DOMID_FIRST_RESERVED {
            return Err(EvtchnError::ReservedDomId(domid));
        }
        let nports = Self::check_max_ports(max_ports)?;
        if bits.nports() < nports {
            return Err(EvtchnError::BadPortCount(max_ports));
        }
        let mut doms = self.domains.write();
        if doms.contains_key(&domid) {
            return Err(EvtchnError::DomainExists(domid));
        }
        doms.insert(domid, Arc::new(Domain::new(domid, max_ports, bits)));
        Ok(())
    }

    /// Bitmap size (ports including the reserved port 0) for `max_ports`.
    fn check_max_ports(max_ports: u32) -> Result<usize, EvtchnError> {
        let n = max_ports as usize;
        if n == 0 || n >= EVTCHN_2L_NR_CHANNELS {
            return Err(EvtchnError::BadPortCount(max_ports));
        }
        Ok(n + 1)
    }

    /// Destroy `domid`'s event channels (`evtchn_destroy`): every port is closed;
    /// each interdomain peer falls back to `ECS_UNBOUND` for `domid`, as on
    /// `EVTCHNOP_close`, and is additionally marked pending and kicked so the
    /// driver on the other end wakes up and notices its peer is gone.
    pub fn remove_domain(&self, domid: DomId) -> Result<(), EvtchnError> {
        let kicks = {
            // The write lock excludes every other operation, so locking the dying
            // domain's table and then each peer's cannot deadlock.
            let mut doms = self.domains.write();
            let dying = doms
                .remove(&domid)
                .ok_or(EvtchnError::NoSuchDomain(domid))?;
            let mut table = dying.table.lock();
            let mut kicks: Vec<Arc<dyn Notifier>> = Vec::new();
            for p in 1..table.len() {
                let s = state(&table, p);
                if let PortState::Interdomain {
                    remote_dom,
                    remote_port,
                } = s
                {
                    if let Some(peer) = doms.get(&remote_dom) {
                        if let Ok(rp) = peer.check_port(remote_port) {
                            put(
                                &mut peer.table.lock(),
                                rp,
                                PortState::Unbound {
                                    remote_domid: domid,
                                },
                            );
                            kicks.extend(peer.set_pending(rp));
                        }
                    }
                }
                if s.is_allocated() {
                    dying.free_port(&mut table, p);
                }
            }
            kicks
        };
        for k in kicks {
            k.kick();
        }
        Ok(())
    }

    /// Is `domid` registered?
    pub fn has_domain(&self, domid: DomId) -> bool {
        self.domains.read().contains_key(&domid)
    }

    /// Registered domains, ascending.
    pub fn domains(&self) -> Vec<DomId> {
        self.domains.read().keys().copied().collect()
    }

    /// The highest usable port of `dom` (Xen's `max_evtchn_port`).
    pub fn max_port(&self, dom: DomId) -> Result<Port, EvtchnError> {
        Ok(lookup(&self.domains.read(), dom)?.max_port)
    }

    /// `dom`'s pending and mask bitmaps, for a guest-side poller
    /// ([`Waiter`](crate::Waiter)) that reads them without going through the hub.
    pub fn bits(&self, dom: DomId) -> Result<Arc<EvtchnBits>, EvtchnError> {
        Ok(lookup(&self.domains.read(), dom)?.bits.clone())
    }

    /// `EVTCHNOP_alloc_unbound` by `dom` for itself: a fresh port of `dom` that
    /// only `remote_dom` may bind (`DOMID_SELF` means `dom`: loopback). The remote
    /// domain need not exist yet, as in Xen.
    pub fn alloc_unbound(&self, dom: DomId, remote_dom: DomId) -> Result<Port, EvtchnError> {
        self.alloc_unbound_for(dom, DOMID_SELF, remote_dom)
    }

    /// `EVTCHNOP_alloc_unbound` issued by `caller` with `alloc.dom = dom`: only
    /// the domain itself (`DOMID_SELF` or its own id) or the control domain may
    /// allocate, otherwise `EPERM` — how the toolstack pre-allocates a new
    /// guest's xenstore or console channel. `remote_dom == DOMID_SELF` means the
    /// caller.
    pub fn alloc_unbound_for(
        &self,
        caller: DomId,
        dom: DomId,
        remote_dom: DomId,
    ) -> Result<Port, EvtchnError> {
        let target = if dom == DOMID_SELF { caller } else { dom };
        let remote = if remote_dom == DOMID_SELF {
            caller
        } else {
            remote_dom
        };
        let doms = self.domains.read();
        lookup(&doms, caller)?;
        if target != caller && caller != CONTROL_DOMID {
            return Err(EvtchnError::PermissionDenied { caller, target });
        }
        let d = lookup(&doms, target)?;
        let mut table = d.table.lock();
        let port = Domain::first_free(&table).ok_or(EvtchnError::NoFreePort(target))?;
        put(
            &mut table,
            port as usize,
            PortState::Unbound {
                remote_domid: remote,
            },
        );
        Ok(port)
    }

    /// `EVTCHNOP_bind_interdomain` by `dom`: connect a fresh local port to
    /// `remote_port` of `remote_dom` (`DOMID_SELF`: `dom`), which must be
    /// `ECS_UNBOUND` and offered to `dom`. Like Xen, the new local port is marked
    /// pending straight away, since events sent to the unbound remote end were
    /// dropped.
    pub fn bind_interdomain(
        &self,
        dom: DomId,
        remote_dom: DomId,
        remote_port: Port,
    ) -> Result<Port, EvtchnError> {
        let rdom = if remote_dom == DOMID_SELF {
            dom
        } else {
            remote_dom
        };
        let kick = {
            let doms = self.domains.read();
            let ld = lookup(&doms, dom)?;
            let rd = lookup(&doms, rdom)?;
            let mut pair = Pair::lock(ld, rd);
            // Xen looks for a free local port before it looks at the remote one.
            let lport = Domain::first_free(pair.a()).ok_or(EvtchnError::NoFreePort(dom))?;
            let rp = rd.check_port(remote_port)?;
            match state(pair.b(), rp) {
                PortState::Unbound { remote_domid } if remote_domid == dom => {}
                _ => {
                    return Err(EvtchnError::WrongState {
                        dom: rdom,
                        port: remote_port,
                    })
                }
            }
            put(
                pair.a(),
                lport as usize,
                PortState::Interdomain {
                    remote_dom: rdom,
                    remote_port,
                },
            );
            put(
                pair.b(),
                rp,
                PortState::Interdomain {
                    remote_dom: dom,
                    remote_port: lport,
                },
            );
            (lport, ld.set_pending(lport as usize))
        };
        if let Some(n) = kick.1 {
            n.kick();
        }
        Ok(kick.0)
    }

    /// `EVTCHNOP_send` on `dom`'s `port`: mark the peer's port pending and, if it
    /// was not pending already and is not masked, kick the peer's notifier. On an
    /// `ECS_UNBOUND` port the event is dropped silently (success), as in Xen; on a
    /// free port it is `EINVAL`.
    pub fn send(&self, dom: DomId, port: Port) -> Result<(), EvtchnError> {
        let kick = {
            let doms = self.domains.read();
            let ld = lookup(&doms, dom)?;
            let p = ld.check_port(port)?;
            // Held while the peer's bit is set, so the peer port cannot be closed
            // and reused in between (closing it needs this lock too).
            let table = ld.table.lock();
            match state(&table, p) {
                PortState::Free => return Err(EvtchnError::WrongState { dom, port }),
                PortState::Unbound { .. } => None,
                PortState::Interdomain {
                    remote_dom,
                    remote_port,
                } => {
                    let rd = lookup(&doms, remote_dom)?;
                    rd.set_pending(rd.check_port(remote_port)?)
                }
            }
        };
        if let Some(n) = kick {
            n.kick();
        }
        Ok(())
    }

    /// `EVTCHNOP_close` on `dom`'s `port`: the port becomes `ECS_FREE` (its pending
    /// bit and notifier cleared); an interdomain peer falls back to `ECS_UNBOUND`
    /// for `dom`, so `dom` could bind it again.
    pub fn close(&self, dom: DomId, port: Port) -> Result<(), EvtchnError> {
        let doms = self.domains.read();
        let ld = lookup(&doms, dom)?;
        let p = ld.check_port(port)?;
        loop {
            let (seen, remote_dom, remote_port) = {
                let mut table = ld.table.lock();
                match state(&table, p) {
                    PortState::Free => return Err(EvtchnError::WrongState { dom, port }),
                    PortState::Unbound { .. } => {
                        ld.free_port(&mut table, p);
                        return Ok(());
                    }
                    s @ PortState::Interdomain {
                        remote_dom,
                        remote_port,
                    } => (s, remote_dom, remote_port),
                }
            };
            let rd = lookup(&doms, remote_dom)?;
            let rp = rd.check_port(remote_port)?;
            let mut pair = Pair::lock(ld, rd);
            // The port may have changed while no lock was held (Xen re-checks the
            // same way after taking both locks).
            if state(pair.a(), p) != seen {
                continue;
            }
            put(pair.b(), rp, PortState::Unbound { remote_domid: dom });
            ld.free_port(pair.a(), p);
            return Ok(());
        }
    }

    /// `EVTCHNOP_status` of `dom`'s `port` (`ECS_FREE` reads as `EVTCHNSTAT_closed`).
    pub fn status(&self, dom: DomId, port: Port) -> Result<PortState, EvtchnError> {
        let doms = self.domains.read();
        let d = lookup(&doms, dom)?;
        let p = d.check_port(port)?;
        let table = d.table.lock();
        Ok(state(&table, p))
    }

    /// Set `port`'s bit in `evtchn_mask[]` (a guest does this with a plain atomic
    /// write; there is no hypercall). Returns whether it was already masked.
    pub fn mask(&self, dom: DomId, port: Port) -> Result<bool, EvtchnError> {
        let doms = self.domains.read();
        let d = lookup(&doms, dom)?;
        Ok(d.bits.mask.test_and_set(d.check_port(port)?))
    }

    /// `EVTCHNOP_unmask` (`evtchn_unmask`): clear the mask bit and, if the port was
    /// masked and is pending, kick its notifier — the event that arrived while
    /// masked is delivered now.
    pub fn unmask(&self, dom: DomId, port: Port) -> Result<(), EvtchnError> {
        let kick = {
            let doms = self.domains.read();
            let d = lookup(&doms, dom)?;
            let p = d.check_port(port)?;
            if d.bits.mask.test_and_clear(p) && d.bits.pending.test(p) {
                d.notifier(p)
            } else {
                None
            }
        };
        if let Some(n) = kick {
            n.kick();
        }
        Ok(())
    }

    /// Is `port` masked?
    pub fn is_masked(&self, dom: DomId, port: Port) -> Result<bool, EvtchnError> {
        let doms = self.domains.read();
        let d = lookup(&doms, dom)?;
        Ok(d.bits.mask.test(d.check_port(port)?))
    }

    /// Is `port` pending?
    pub fn is_pending(&self, dom: DomId, port: Port) -> Result<bool, EvtchnError> {
        let doms = self.domains.read();
        let d = lookup(&doms, dom)?;
        Ok(d.bits.pending.test(d.check_port(port)?))
    }

    /// Consume an event: clear `port`'s pending bit, returning whether it was set
    /// (what a guest's upcall handler does with `test_and_clear_bit`).
    pub fn test_and_clear_pending(&self, dom: DomId, port: Port) -> Result<bool, EvtchnError> {
        let doms = self.domains.read();
        let d = lookup(&doms, dom)?;
        Ok(d.bits.pending.test_and_clear(d.check_port(port)?))
    }

    /// Bind the transport that wakes `dom` when `port` becomes pending (the role of
    /// binding an IRQ to the port in a guest kernel). The port must be allocated;
    /// closing it drops the notifier. Replaces any earlier one.
    pub fn set_notifier(
        &self,
        dom: DomId,
        port: Port,
        notifier: Arc<dyn Notifier>,
    ) -> Result<(), EvtchnError> {
        let doms = self.domains.read();
        let d = lookup(&doms, dom)?;
        let p = d.check_port(port)?;
        // Under the table lock so a concurrent close cannot leave a stale notifier
        // on a freed port.
        let table = d.table.lock();
        if !state(&table, p).is_allocated() {
            return Err(EvtchnError::WrongState { dom, port });
        }
        d.set_notifier(p, Some(notifier));
        Ok(())
    }

    /// Remove `port`'s notifier, if any.
    pub fn clear_notifier(&self, dom: DomId, port: Port) -> Result<(), EvtchnError> {
        let doms = self.domains.read();
        let d = lookup(&doms, dom)?;
        let p = d.check_port(port)?;
        let _table = d.table.lock();
        d.set_notifier(p, None);
        Ok(())
    }
}
