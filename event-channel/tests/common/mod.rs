//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use event_channel::{DomId, EventChannels, Notifier, Port};

/// A notifier that counts its kicks.
#[derive(Default, Debug)]
pub struct Counter(AtomicUsize);

impl Counter {
    pub fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

impl Notifier for Counter {
    fn kick(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A hub with domains 0, 1 and 2, `max_ports` ports each.
pub fn hub3(max_ports: u32) -> EventChannels {
    let hub = EventChannels::new();
    for d in 0..3 {
        hub.add_domain(d, max_ports).expect("add_domain");
    }
    hub
}

/// Connect `a` to `b`: `a` allocates, `b` binds. Returns (a's port, b's port),
/// with the conservative pending bit the bind sets on `b`'s port cleared.
pub fn connect(hub: &EventChannels, a: DomId, b: DomId) -> (Port, Port) {
    let pa = hub.alloc_unbound(a, b).expect("alloc_unbound");
    let pb = hub.bind_interdomain(b, a, pa).expect("bind_interdomain");
    hub.test_and_clear_pending(b, pb).expect("clear");
    (pa, pb)
}

/// Install a fresh counting notifier on `dom`'s `port`.
pub fn count_kicks(hub: &EventChannels, dom: DomId, port: Port) -> Arc<Counter> {
    let c = Arc::new(Counter::default());
    hub.set_notifier(dom, port, c.clone())
        .expect("set_notifier");
    c
}
