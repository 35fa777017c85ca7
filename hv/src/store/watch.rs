//! Watches: the registry of `XS_WATCH` registrations, the per-connection event queues
//! and the delivery rules of xenstored's `fire_watches` / `watch_permitted`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::env::{DomId, Perm, WatchEvent};

use super::path;
use super::perms::{access_for, is_privileged, Access};
use super::tree::Tree;

/// Identifies one connection to the store.
pub type ConnId = u64;

/// A change that watches may fire on, recorded by an operation and delivered when its
/// transaction commits.
#[derive(Debug, Clone)]
pub enum Fire {
    /// `XS_WRITE`, `XS_MKDIR` or `XS_SET_PERMS` at `path`: watches at or above it fire.
    Changed {
        path: String,
        /// The node's permissions after the change.
        perms: Vec<Perm>,
        /// Before `XS_SET_PERMS`: a domain that just lost access still hears of it.
        old_perms: Option<Vec<Perm>>,
    },
    /// `XS_RM` of `path`: watches at or above it fire with `path`; watches below it fire
    /// with their own path, as oxenstored does for a removed subtree.
    Removed {
        path: String,
        /// Every removed node with the permissions it had.
        removed: HashMap<String, Vec<Perm>>,
    },
    /// A special event (`@introduceDomain`, `@releaseDomain`).
    Special { name: &'static str },
}

/// A connection's queue of fired watches, bounded so a guest that never reads its
/// events cannot grow the daemon without limit (the role of xenstored's per-domain
/// outstanding-output quota). Beyond the bound the oldest event is dropped.
#[derive(Debug, Default)]
pub struct EventQueue {
    state: Mutex<QueueState>,
    ready: Condvar,
}

#[derive(Debug, Default)]
struct QueueState {
    events: VecDeque<WatchEvent>,
    /// Set when the connection's domain is released: waiters return at once.
    closed: bool,
    dropped: u64,
}

impl EventQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queue `event`, dropping the oldest beyond `bound` pending events.
    pub fn push(&self, event: WatchEvent, bound: usize) {
        let mut st = self.lock();
        if st.closed {
            return;
        }
        while st.events.len() >= bound.max(1) {
            st.events.pop_front();
            st.dropped += 1;
            // Warn on the 1st, 2nd, 4th, 8th... drop: visible without flooding the log.
            if st.dropped.is_power_of_two() {
                log::warn!(
                    "xenstore: watch event queue full ({bound} pending), {} events dropped so far",
                    st.dropped
                );
            }
        }
        st.events.push_back(event);
        drop(st);
        self.ready.notify_all();
    }

    /// Next event, waiting up to `timeout` (`None`: don't wait).
    pub fn pop(&self, timeout: Option<Duration>) -> Option<WatchEvent> {
        let mut st = self.lock();
        let deadline = timeout.map(|t| Instant::now().checked_add(t));
        loop {
            if let Some(ev) = st.events.pop_front() {
                return Some(ev);
            }
            if st.closed {
                return None;
            }
            let wait = match deadline {
                None => return None,
                // A timeout too large for `Instant` means "wait for ever".
                Some(None) => Duration::from_secs(3600),
                Some(Some(d)) => {
                    let now = Instant::now();
                    if now >= d {
                        return None;
                    }
                    d - now
                }
            };
            st = self
                .ready
                .wait_timeout(st, wait)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Close the queue: drop pending events and wake every waiter.
    pub fn close(&self) {
        let mut st = self.lock();
        st.closed = true;
        st.events.clear();
        drop(st);
        self.ready.notify_all();
    }

    /// Events dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.lock().events.len()
    }
}

/// One `XS_WATCH` registration.
#[derive(Debug, Clone)]
pub struct WatchReg {
    pub conn: ConnId,
    pub domid: DomId,
    pub token: String,
    pub queue: std::sync::Arc<EventQueue>,
}

/// Every registered watch, keyed by watched path so the watches at or above a changed
/// node are found by walking its ancestors, and those below it by a range scan.
#[derive(Debug, Default)]
pub struct Watches {
    by_path: BTreeMap<String, Vec<WatchReg>>,
}

impl Watches {
    /// Whether `conn` already watches `path` with `token`.
    pub fn contains(&self, conn: ConnId, path: &str, token: &str) -> bool {
        self.by_path
            .get(path)
            .is_some_and(|v| v.iter().any(|w| w.conn == conn && w.token == token))
    }

    /// Watches held by connections of `domid`.
    pub fn count_for_domain(&self, domid: DomId) -> usize {
        self.by_path
            .values()
            .flatten()
            .filter(|w| w.domid == domid)
            .count()
    }

    pub fn add(&mut self, path: &str, reg: WatchReg) {
        self.by_path.entry(path.to_owned()).or_default().push(reg);
    }

    /// Remove one registration; false if it did not exist.
    pub fn remove(&mut self, conn: ConnId, path: &str, token: &str) -> bool {
        let Some(list) = self.by_path.get_mut(path) else {
            return false;
        };
        let before = list.len();
        list.retain(|w| !(w.conn == conn && w.token == token));
        let removed = list.len() != before;
        if list.is_empty() {
            self.by_path.remove(path);
        }
        removed
    }

    /// Remove every watch of `conn`.
    pub fn remove_conn(&mut self, conn: ConnId) {
        self.by_path.retain(|_, list| {
            list.retain(|w| w.conn != conn);
            !list.is_empty()
        });
    }

    /// Deliver `fire` to every watch it concerns that may see it.
    pub fn deliver(
        &self,
        fire: &Fire,
        tree: &Tree,
        special_perms: &HashMap<&'static str, Vec<Perm>>,
        bound: usize,
    ) {
        match fire {
            Fire::Changed {
                path: changed,
                perms,
                old_perms,
            } => {
                for watched in path::self_and_ancestors(changed) {
                    for w in self.by_path.get(watched).into_iter().flatten() {
                        if permitted(w.domid, changed, perms, old_perms.as_deref(), tree) {
                            push(w, changed, bound);
                        }
                    }
                }
            }
            Fire::Removed {
                path: gone,
                removed,
            } => {
                let Some(top_perms) = removed.get(gone) else {
                    return;
                };
                for watched in path::self_and_ancestors(gone) {
                    for w in self.by_path.get(watched).into_iter().flatten() {
                        if permitted(w.domid, gone, top_perms, None, tree) {
                            push(w, gone, bound);
                        }
                    }
                }
                let prefix = format!("{gone}/");
                let below = self
                    .by_path
                    .range::<str, _>((Bound::Included(prefix.as_str()), Bound::Unbounded))
                    .take_while(|(k, _)| k.starts_with(&prefix));
                for (watched, list) in below {
                    let perms = removed.get(watched).unwrap_or(top_perms);
                    for w in list {
                        if permitted(w.domid, watched, perms, None, tree) {
                            push(w, watched, bound);
                        }
                    }
                }
            }
            Fire::Special { name } => {
                let perms = special_perms.get(name).map(Vec::as_slice).unwrap_or(&[]);
                for w in self.by_path.get(*name).into_iter().flatten() {
                    if access_for(w.domid, perms).allows(Access::READ) {
                        push(w, name, bound);
                    }
                }
            }
        }
    }
}

fn push(w: &WatchReg, path: &str, bound: usize) {
    w.queue.push(
        WatchEvent {
            path: path.to_owned(),
            token: w.token.clone(),
        },
        bound,
    );
}

/// `watch_permitted`: a watcher hears of a change only if it may read the node (with
/// the permissions before or after the change) or, failing that, its current parent.
fn permitted(domid: DomId, p: &str, perms: &[Perm], old: Option<&[Perm]>, tree: &Tree) -> bool {
    if is_privileged(domid) || access_for(domid, perms).allows(Access::READ) {
        return true;
    }
    if old.is_some_and(|o| access_for(domid, o).allows(Access::READ)) {
        return true;
    }
    path::parent(p)
        .and_then(|parent| tree.get(parent))
        .is_some_and(|n| access_for(domid, &n.perms).allows(Access::READ))
}
