//! Random sequences of operations across three domains, checked step by step
//! against a plain reference model of Xen's rules, plus the invariants:
//! - a bound pair always points at each other;
//! - a pending bit is only ever set on a bound port, or on an unbound port that
//!   was bound before (its peer closed or died);
//! - closed ports are free and not pending;
//! - kicks happen exactly when a port newly becomes pending while unmasked.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::Counter;
use event_channel::{errno, DomId, EventChannels, EvtchnError, Port, PortState, DOMID_SELF};
use proptest::prelude::*;

const DOMS: [DomId; 3] = [0, 1, 2];
const MAX_PORT: Port = 5;
/// Names a domain that does not exist.
const GHOST: DomId = 3;

#[derive(Debug, Clone)]
enum Op {
    Alloc(DomId, DomId),
    Bind(DomId, DomId, Port),
    Send(DomId, Port),
    Close(DomId, Port),
    Mask(DomId, Port),
    Unmask(DomId, Port),
    Consume(DomId, Port),
    /// `remove_domain` then `add_domain` again (the domain count stays 3).
    Recreate(DomId),
}

fn dom() -> impl Strategy<Value = DomId> {
    prop_oneof![8 => 0u16..3, 1 => Just(GHOST)]
}

fn remote() -> impl Strategy<Value = DomId> {
    prop_oneof![8 => 0u16..3, 1 => Just(GHOST), 1 => Just(DOMID_SELF)]
}

fn port() -> impl Strategy<Value = Port> {
    // 0 and MAX_PORT + 1 are invalid on purpose.
    0..=MAX_PORT + 1
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (dom(), remote()).prop_map(|(d, r)| Op::Alloc(d, r)),
        3 => (dom(), remote(), port()).prop_map(|(d, r, p)| Op::Bind(d, r, p)),
        4 => (dom(), port()).prop_map(|(d, p)| Op::Send(d, p)),
        2 => (dom(), port()).prop_map(|(d, p)| Op::Close(d, p)),
        1 => (dom(), port()).prop_map(|(d, p)| Op::Mask(d, p)),
        1 => (dom(), port()).prop_map(|(d, p)| Op::Unmask(d, p)),
        2 => (dom(), port()).prop_map(|(d, p)| Op::Consume(d, p)),
        1 => (0u16..3).prop_map(Op::Recreate),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    state: PortState,
    pending: bool,
    masked: bool,
    /// Has this port been interdomain since it was last allocated?
    was_bound: bool,
    kicks: usize,
}

impl Default for Slot {
    fn default() -> Self {
        Self {
            state: PortState::Free,
            pending: false,
            masked: false,
            was_bound: false,
            kicks: 0,
        }
    }
}

/// The reference model: Xen's rules written as plainly as possible.
#[derive(Default)]
struct Model {
    slots: HashMap<(DomId, Port), Slot>,
}

impl Model {
    fn slot(&mut self, d: DomId, p: Port) -> &mut Slot {
        self.slots.entry((d, p)).or_default()
    }
    fn get(&self, d: DomId, p: Port) -> Slot {
        self.slots.get(&(d, p)).copied().unwrap_or_default()
    }
    fn exists(d: DomId) -> bool {
        DOMS.contains(&d)
    }
    fn valid(p: Port) -> bool {
        (1..=MAX_PORT).contains(&p)
    }
    fn first_free(&self, d: DomId) -> Option<Port> {
        (1..=MAX_PORT).find(|&p| self.get(d, p).state == PortState::Free)
    }
    fn set_pending(&mut self, d: DomId, p: Port) {
        let s = self.slot(d, p);
        if !s.pending && !s.masked {
            s.kicks += 1;
        }
        s.pending = true;
    }
    fn free(&mut self, d: DomId, p: Port) {
        let s = self.slot(d, p);
        s.state = PortState::Free;
        s.pending = false;
        s.was_bound = false;
    }

    /// Expected result: Ok(value) or Err(errno). The value is the port for
    /// alloc/bind, the old bit for mask/consume, 0 otherwise.
    fn apply(&mut self, op: &Op) -> Result<u32, i32> {
        match *op {
            Op::Alloc(d, r) => {
                if !Self::exists(d) {
                    return Err(errno::ESRCH);
                }
                let r = if r == DOMID_SELF { d } else { r };
                let p = self.first_free(d).ok_or(errno::ENOSPC)?;
                let s = self.slot(d, p);
                s.state = PortState::Unbound { remote_domid: r };
                Ok(p)
            }
            Op::Bind(d, r, rp) => {
                let r = if r == DOMID_SELF { d } else { r };
                if !Self::exists(d) || !Self::exists(r) {
                    return Err(errno::ESRCH);
                }
                let lp = self.first_free(d).ok_or(errno::ENOSPC)?;
                if !Self::valid(rp)
                    || self.get(r, rp).state != (PortState::Unbound { remote_domid: d })
                {
                    return Err(errno::EINVAL);
                }
                let l = self.slot(d, lp);
                l.state = PortState::Interdomain {
                    remote_dom: r,
                    remote_port: rp,
                };
                l.was_bound = true;
                let rs = self.slot(r, rp);
                rs.state = PortState::Interdomain {
                    remote_dom: d,
                    remote_port: lp,
                };
                rs.was_bound = true;
                // No notifier is installed yet on a fresh port: pending, no kick.
                self.slot(d, lp).pending = true;
                Ok(lp)
            }
            Op::Send(d, p) => {
                if !Self::exists(d) {
                    return Err(errno::ESRCH);
                }
                if !Self::valid(p) {
                    return Err(errno::EINVAL);
                }
                match self.get(d, p).state {
                    PortState::Free => Err(errno::EINVAL),
                    PortState::Unbound { .. } => Ok(0),
                    PortState::Interdomain {
                        remote_dom,
                        remote_port,
                    } => {
                        self.set_pending(remote_dom, remote_port);
                        Ok(0)
                    }
                }
            }
            Op::Close(d, p) => {
                if !Self::exists(d) {
                    return Err(errno::ESRCH);
                }
                if !Self::valid(p) {
                    return Err(errno::EINVAL);
                }
                match self.get(d, p).state {
                    PortState::Free => return Err(errno::EINVAL),
                    PortState::Unbound { .. } => {}
                    PortState::Interdomain {
                        remote_dom,
                        remote_port,
                    } => {
                        self.slot(remote_dom, remote_port).state =
                            PortState::Unbound { remote_domid: d };
                    }
                }
                self.free(d, p);
                Ok(0)
            }
            Op::Mask(d, p) | Op::Unmask(d, p) | Op::Consume(d, p) => {
                if !Self::exists(d) {
                    return Err(errno::ESRCH);
                }
                if !Self::valid(p) {
                    return Err(errno::EINVAL);
                }
                let s = self.slot(d, p);
                match op {
                    Op::Mask(..) => {
                        let was = s.masked;
                        s.masked = true;
                        Ok(was as u32)
                    }
                    Op::Unmask(..) => {
                        if s.masked && s.pending {
                            s.kicks += 1;
                        }
                        s.masked = false;
                        Ok(0)
                    }
                    _ => {
                        let was = s.pending;
                        s.pending = false;
                        Ok(was as u32)
                    }
                }
            }
            Op::Recreate(d) => {
                for p in 1..=MAX_PORT {
                    if let PortState::Interdomain {
                        remote_dom,
                        remote_port,
                    } = self.get(d, p).state
                    {
                        if remote_dom != d {
                            self.slot(remote_dom, remote_port).state =
                                PortState::Unbound { remote_domid: d };
                            self.set_pending(remote_dom, remote_port);
                        }
                    }
                }
                // The new incarnation has fresh bitmaps and fresh notifiers.
                for p in 1..=MAX_PORT {
                    *self.slot(d, p) = Slot::default();
                }
                Ok(0)
            }
        }
    }
}

/// The system under test plus one counting notifier per port, (re)installed
/// whenever a port is allocated.
struct Sut {
    hub: EventChannels,
    counters: HashMap<(DomId, Port), Arc<Counter>>,
    /// Kicks counted by notifiers that have since been dropped, per port.
    retired: HashMap<(DomId, Port), usize>,
}

impl Sut {
    fn new() -> Self {
        let hub = EventChannels::new();
        for d in DOMS {
            hub.add_domain(d, MAX_PORT).expect("add");
        }
        Self {
            hub,
            counters: HashMap::new(),
            retired: HashMap::new(),
        }
    }

    fn install(&mut self, d: DomId, p: Port) {
        let c = Arc::new(Counter::default());
        self.hub
            .set_notifier(d, p, c.clone())
            .expect("notifier on fresh port");
        if let Some(old) = self.counters.insert((d, p), c) {
            *self.retired.entry((d, p)).or_default() += old.get();
        }
    }

    fn kicks(&self, d: DomId, p: Port) -> usize {
        self.counters.get(&(d, p)).map_or(0, |c| c.get())
            + self.retired.get(&(d, p)).copied().unwrap_or(0)
    }

    fn apply(&mut self, op: &Op) -> Result<u32, i32> {
        let e = |r: Result<(), EvtchnError>| r.map(|_| 0).map_err(|e| e.errno());
        match *op {
            Op::Alloc(d, r) => {
                let res = self.hub.alloc_unbound(d, r).map_err(|e| e.errno());
                if let Ok(p) = res {
                    self.install(d, p);
                }
                res
            }
            Op::Bind(d, r, rp) => {
                let res = self.hub.bind_interdomain(d, r, rp).map_err(|e| e.errno());
                if let Ok(p) = res {
                    self.install(d, p);
                }
                res
            }
            Op::Send(d, p) => e(self.hub.send(d, p)),
            Op::Close(d, p) => e(self.hub.close(d, p)),
            Op::Mask(d, p) => self.hub.mask(d, p).map(u32::from).map_err(|e| e.errno()),
            Op::Unmask(d, p) => e(self.hub.unmask(d, p)),
            Op::Consume(d, p) => self
                .hub
                .test_and_clear_pending(d, p)
                .map(u32::from)
                .map_err(|e| e.errno()),
            Op::Recreate(d) => {
                self.hub.remove_domain(d).expect("remove");
                self.hub.add_domain(d, MAX_PORT).expect("re-add");
                // Kicks counted so far stay counted; the model resets them, so
                // forget this domain's history here as well.
                for p in 1..=MAX_PORT {
                    self.counters.remove(&(d, p));
                    self.retired.remove(&(d, p));
                }
                Ok(0)
            }
        }
    }
}

fn check(sut: &Sut, model: &Model) -> Result<(), TestCaseError> {
    for d in DOMS {
        for p in 1..=MAX_PORT {
            let state = sut
                .hub
                .status(d, p)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let pending = sut.hub.is_pending(d, p).unwrap_or(false);
            let masked = sut.hub.is_masked(d, p).unwrap_or(false);
            let want = model.get(d, p);
            prop_assert_eq!(state, want.state, "state of ({}, {})", d, p);
            prop_assert_eq!(pending, want.pending, "pending of ({}, {})", d, p);
            prop_assert_eq!(masked, want.masked, "mask of ({}, {})", d, p);
            prop_assert_eq!(sut.kicks(d, p), want.kicks, "kicks of ({}, {})", d, p);

            // Invariants, on what the hub reports.
            match state {
                PortState::Interdomain {
                    remote_dom,
                    remote_port,
                } => {
                    let back = sut.hub.status(remote_dom, remote_port);
                    prop_assert_eq!(
                        back,
                        Ok(PortState::Interdomain {
                            remote_dom: d,
                            remote_port: p
                        }),
                        "peer of ({}, {}) does not point back",
                        d,
                        p
                    );
                }
                PortState::Free => prop_assert!(!pending, "free port ({}, {}) is pending", d, p),
                PortState::Unbound { .. } => prop_assert!(
                    !pending || want.was_bound,
                    "never-bound unbound port ({}, {}) is pending",
                    d,
                    p
                ),
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_operation_sequences_match_the_model(ops in proptest::collection::vec(op(), 1..80)) {
        let mut sut = Sut::new();
        let mut model = Model::default();
        for (i, op) in ops.iter().enumerate() {
            let got = sut.apply(op);
            let want = model.apply(op);
            prop_assert_eq!(got, want, "step {}: {:?}", i, op);
            check(&sut, &model)?;
        }
    }
}
