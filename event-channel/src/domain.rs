//! One domain's event-channel state: its port table (`d->evtchn`), its bitmaps
//! and the notifier bound to each port.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use spin::{Mutex, RwLock};

use crate::bits::EvtchnBits;
use crate::error::EvtchnError;
use crate::port::{Notifier, PortState};
use crate::{DomId, Port};

/// A notifier slot. Its lock is a leaf: nothing else is locked while it is held,
/// so a sender may read the peer's slot while holding its own port table lock.
type NotifierSlot = RwLock<Option<Arc<dyn Notifier>>>;

pub(crate) struct Domain {
    pub(crate) id: DomId,
    /// Highest usable port; ports are `1..=max_port` (Xen's `max_evtchn_port`).
    pub(crate) max_port: Port,
    /// Index = port; entry 0 stays `Free` and is never handed out (`ECS_RESERVED`).
    /// Plays the role of Xen's per-domain `event_lock`.
    pub(crate) table: Mutex<Vec<PortState>>,
    notifiers: Box<[NotifierSlot]>,
    pub(crate) bits: Arc<EvtchnBits>,
}

impl Domain {
    /// `bits` must cover ports `0..=max_port`; the caller checked that.
    pub(crate) fn new(id: DomId, max_port: Port, bits: Arc<EvtchnBits>) -> Self {
        let n = max_port as usize + 1;
        Self {
            id,
            max_port,
            table: Mutex::new(vec![PortState::Free; n]),
            notifiers: (0..n).map(|_| RwLock::new(None)).collect(),
            bits,
        }
    }

    /// `port_is_valid`, minus port 0 which is reserved here: the table index of a
    /// usable port, or `EINVAL`.
    pub(crate) fn check_port(&self, port: Port) -> Result<usize, EvtchnError> {
        if port == 0 || port > self.max_port {
            return Err(EvtchnError::InvalidPort { dom: self.id, port });
        }
        Ok(port as usize)
    }

    /// `get_free_port`: the lowest free port, as Xen scans from the bottom.
    pub(crate) fn first_free(table: &[PortState]) -> Option<Port> {
        table
            .iter()
            .enumerate()
            .skip(1)
            .find(|(_, s)| !s.is_allocated())
            .and_then(|(i, _)| Port::try_from(i).ok())
    }

    pub(crate) fn notifier(&self, port: usize) -> Option<Arc<dyn Notifier>> {
        self.notifiers
            .get(port)
            .and_then(|slot| slot.read().clone())
    }

    pub(crate) fn set_notifier(&self, port: usize, n: Option<Arc<dyn Notifier>>) {
        if let Some(slot) = self.notifiers.get(port) {
            *slot.write() = n;
        }
    }

    /// `evtchn_2l_set_pending`: mark `port` pending; if it was not already pending
    /// and is not masked, return the notifier to kick (the caller kicks after
    /// dropping its locks, since a kick may be a system call).
    pub(crate) fn set_pending(&self, port: usize) -> Option<Arc<dyn Notifier>> {
        if self.bits.pending.test_and_set(port) || self.bits.mask.test(port) {
            return None;
        }
        self.notifier(port)
    }

    /// `evtchn_free`: clear the pending bit so a re-bind starts clean, forget the
    /// notifier, and mark the port `ECS_FREE`. The mask bit belongs to the guest
    /// and is left alone, as in Xen.
    pub(crate) fn free_port(&self, table: &mut [PortState], port: usize) {
        self.bits.pending.test_and_clear(port);
        self.set_notifier(port, None);
        if let Some(s) = table.get_mut(port) {
            *s = PortState::Free;
        }
    }
}
