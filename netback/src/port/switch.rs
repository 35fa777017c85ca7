//! A learning L2 switch joining the vifs of one netback, so guests talk to each other
//! without a TAP or root. Like a Linux bridge: it learns which vif each unicast source
//! MAC lives behind, forwards known unicast to that vif only, floods broadcast,
//! multicast and unknown unicast to every other vif, and forgets entries not refreshed
//! within the ageing time (default 300 s, the bridge's `ageing_time`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::{Port, VifId, VifLink};
use crate::frame::FrameBatch;

/// The bridge default `ageing_time`.
pub const DEFAULT_AGEING: Duration = Duration::from_secs(300);

/// Entries beyond which a learning pass sweeps aged entries out (bounds the table
/// against a guest spraying random source MACs).
const FDB_SWEEP_AT: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct FdbEntry {
    vif: VifId,
    seen: Instant,
}

#[derive(Default)]
struct State {
    links: HashMap<VifId, Arc<VifLink>>,
    fdb: HashMap<[u8; 6], FdbEntry>,
}

/// Switch statistics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SwitchStats {
    /// Frames sent to exactly one learned vif.
    pub forwarded: u64,
    /// Frames flooded (broadcast, multicast, unknown unicast).
    pub flooded: u64,
    /// Frames not sent anywhere (destination behind the sender, or no other vif).
    pub filtered: u64,
}

/// The learning switch.
pub struct Switch {
    state: Mutex<State>,
    ageing: Duration,
    forwarded: AtomicU64,
    flooded: AtomicU64,
    filtered: AtomicU64,
}

impl Switch {
    /// A switch with the default ageing time.
    pub fn new() -> Arc<Self> {
        Self::with_ageing(DEFAULT_AGEING)
    }

    /// A switch that forgets a MAC after `ageing` without traffic from it.
    pub fn with_ageing(ageing: Duration) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State::default()),
            ageing,
            forwarded: AtomicU64::new(0),
            flooded: AtomicU64::new(0),
            filtered: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The forwarding database: learned MAC → vif (aged entries excluded).
    pub fn fdb(&self) -> Vec<([u8; 6], VifId)> {
        let now = Instant::now();
        let st = self.lock();
        let mut v: Vec<_> = st
            .fdb
            .iter()
            .filter(|(_, e)| now.duration_since(e.seen) < self.ageing)
            .map(|(m, e)| (*m, e.vif))
            .collect();
        v.sort();
        v
    }

    /// Counters so far.
    pub fn stats(&self) -> SwitchStats {
        SwitchStats {
            forwarded: self.forwarded.load(Ordering::Relaxed),
            flooded: self.flooded.load(Ordering::Relaxed),
            filtered: self.filtered.load(Ordering::Relaxed),
        }
    }
}

fn is_multicast(mac: &[u8]) -> bool {
    mac.first().is_some_and(|b| b & 1 != 0)
}

impl Port for Switch {
    fn vif_connected(&self, vif: &Arc<VifLink>) {
        self.lock().links.insert(vif.id(), vif.clone());
    }

    fn vif_disconnected(&self, vif: VifId) {
        let mut st = self.lock();
        st.links.remove(&vif);
        st.fdb.retain(|_, e| e.vif != vif);
    }

    fn transmit(&self, from: &Arc<VifLink>, _queue: u16, frames: &FrameBatch<'_>) {
        let now = Instant::now();
        let (mut fwd, mut flood, mut filt) = (0u64, 0u64, 0u64);
        let mut st = self.lock();
        if st.fdb.len() > FDB_SWEEP_AT {
            let ageing = self.ageing;
            st.fdb.retain(|_, e| now.duration_since(e.seen) < ageing);
        }
        for frame in frames.iter() {
            let (Some(dst), Some(src)) = (frame.data.get(0..6), frame.data.get(6..12)) else {
                filt += 1;
                continue;
            };
            if !is_multicast(src) {
                if let Ok(src) = <[u8; 6]>::try_from(src) {
                    st.fdb.insert(
                        src,
                        FdbEntry {
                            vif: from.id(),
                            seen: now,
                        },
                    );
                }
            }
            let known = if is_multicast(dst) {
                None
            } else {
                <[u8; 6]>::try_from(dst)
                    .ok()
                    .and_then(|d| st.fdb.get(&d).copied())
                    .filter(|e| now.duration_since(e.seen) < self.ageing)
            };
            match known {
                Some(e) if e.vif == from.id() => filt += 1,
                Some(e) => match st.links.get(&e.vif) {
                    Some(link) => {
                        link.send(frame);
                        fwd += 1;
                    }
                    None => filt += 1,
                },
                None => {
                    let mut any = false;
                    for (id, link) in st.links.iter() {
                        if *id != from.id() {
                            link.send(frame);
                            any = true;
                        }
                    }
                    if any {
                        flood += 1;
                    } else {
                        filt += 1;
                    }
                }
            }
        }
        drop(st);
        self.forwarded.fetch_add(fwd, Ordering::Relaxed);
        self.flooded.fetch_add(flood, Ordering::Relaxed);
        self.filtered.fetch_add(filt, Ordering::Relaxed);
    }
}
