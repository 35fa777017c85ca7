//! The xenstore: an in-process store with the semantics of Xen's xenstored
//! (cxenstored/oxenstored) — a tree of nodes with per-node `xs_permissions`, watches,
//! generation-checked transactions and per-domain quotas.
//!
//! A [`XenStore`] is shared by the hypervisor and every domain; each domain talks to it
//! through a [`StoreConnection`] (from [`XenStore::connect`]) that implements
//! [`crate::env::Store`]. All state sits behind one lock: xenstore traffic is control
//! plane only (a few hundred operations per device handshake), never per packet.
//!
//! Semantics in brief:
//! - Dom0 may do anything. A guest needs read/write rights from the node's permission
//!   list (owner first; the first entry's rights apply to unlisted domains). A missing
//!   node reports `ENOENT` only to a caller with the right on its nearest existing
//!   ancestor, `EACCES` otherwise.
//! - New nodes inherit their parent's permissions; a guest owns what it creates.
//! - Watches fire once on registration, then at commit of each write, mkdir, rm and
//!   set_perms at or below the watched path, only to watchers allowed to read the node
//!   (or its parent). Each connection's event queue holds at most
//!   [`Quotas::max_pending_events`]; beyond that the oldest is dropped with a warning.
//! - Transactions see their own writes over a snapshot; commit fails with `EAGAIN` if
//!   any node they read or wrote (a directory listing reads the parent) changed since
//!   they started. Watches fire only at commit.

mod ops;
mod path;
mod perms;
mod tree;
mod txn;
mod watch;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::env::{DomId, Perm, PermKind, Store, StoreError, TxId, WatchEvent, XBT_NIL};

pub use path::{XENSTORE_ABS_PATH_MAX, XENSTORE_PAYLOAD_MAX, XENSTORE_REL_PATH_MAX};
pub use perms::DOMID_PRIVILEGED;

use perms::is_privileged;
use tree::Tree;
use txn::{Txn, View};
use watch::{ConnId, EventQueue, Fire, WatchReg, Watches};

/// `@introduceDomain`: special watch path fired when a domain is introduced.
pub const XS_INTRODUCE_DOMAIN: &str = "@introduceDomain";
/// `@releaseDomain`: special watch path fired when a domain is released.
pub const XS_RELEASE_DOMAIN: &str = "@releaseDomain";

/// Limits applied to unprivileged domains (Dom0 is exempt, as in xenstored), named
/// after xenstored's `quota_*` settings and defaulting to its defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    /// `quota_nb_entry_per_domain`: nodes a guest may own.
    pub max_nodes: usize,
    /// `quota_max_entry_size`: bytes in one node's value.
    pub max_value_size: usize,
    /// `quota_nb_watch_per_domain`: watches a guest may hold.
    pub max_watches: usize,
    /// `quota_max_transaction`: open transactions per guest connection.
    pub max_transactions: usize,
    /// `quota_nb_perms_per_node`: entries in a permission list a guest sets.
    pub max_perms_per_node: usize,
    /// Watch events queued per connection (any domain) before the oldest is dropped.
    pub max_pending_events: usize,
}

impl Default for Quotas {
    fn default() -> Quotas {
        Quotas {
            max_nodes: 1000,
            max_value_size: 2048,
            max_watches: 128,
            max_transactions: 10,
            max_perms_per_node: 5,
            max_pending_events: 1024,
        }
    }
}

/// Per-connection bookkeeping.
struct ConnState {
    domid: DomId,
    next_tx: TxId,
    queue: Arc<EventQueue>,
    /// The domain was released: every further operation fails.
    released: bool,
}

/// Everything behind the store lock.
struct State {
    tree: Tree,
    /// Permissions of the special watch nodes.
    special_perms: HashMap<&'static str, Vec<Perm>>,
    watches: Watches,
    conns: HashMap<ConnId, ConnState>,
    /// Open transactions, by connection and per-connection id.
    txns: HashMap<(ConnId, TxId), Txn>,
}

impl State {
    fn deliver(&self, fires: &[Fire], bound: usize) {
        for fire in fires {
            self.watches
                .deliver(fire, &self.tree, &self.special_perms, bound);
        }
    }

    fn conn(&self, id: ConnId) -> Result<&ConnState, StoreError> {
        match self.conns.get(&id) {
            Some(c) if !c.released => Ok(c),
            _ => Err(StoreError::Io(
                "xenstore connection closed: domain released".into(),
            )),
        }
    }

    /// Run one operation outside any transaction and commit it at once.
    fn run_nil<R>(
        &mut self,
        domid: DomId,
        quotas: &Quotas,
        op: impl FnOnce(&mut View<'_>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let mut txn = Txn::new(domid, &self.tree);
        let result = op(&mut View::new(&self.tree, &mut txn))?;
        let fires = self.tree.commit(txn, quotas, false)?;
        self.deliver(&fires, quotas.max_pending_events);
        Ok(result)
    }
}

struct Inner {
    state: Mutex<State>,
    quotas: Quotas,
    next_conn: AtomicU64,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Operations check before they mutate, so state behind a poisoned lock is
        // still consistent; refusing service forever would be worse.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The shared xenstore daemon state. Cheap to clone (an `Arc` inside).
#[derive(Clone)]
pub struct XenStore {
    inner: Arc<Inner>,
}

impl Default for XenStore {
    fn default() -> Self {
        XenStore::new()
    }
}

impl core::fmt::Debug for XenStore {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("XenStore")
            .field("quotas", &self.inner.quotas)
            .finish()
    }
}

/// `xs_get_domain_path`: a domain's home, `/local/domain/<domid>`.
pub fn domain_path(domid: DomId) -> String {
    format!("/local/domain/{domid}")
}

impl XenStore {
    /// An empty store (only `/`) with xenstored's default quotas.
    pub fn new() -> XenStore {
        XenStore::with_quotas(Quotas::default())
    }

    /// An empty store with the given quotas.
    pub fn with_quotas(quotas: Quotas) -> XenStore {
        let mut special_perms = HashMap::new();
        special_perms.insert(XS_INTRODUCE_DOMAIN, ops::default_special_perms());
        special_perms.insert(XS_RELEASE_DOMAIN, ops::default_special_perms());
        let state = State {
            tree: Tree::new(),
            special_perms,
            watches: Watches::default(),
            conns: HashMap::new(),
            txns: HashMap::new(),
        };
        XenStore {
            inner: Arc::new(Inner {
                state: Mutex::new(state),
                quotas,
                next_conn: AtomicU64::new(1),
            }),
        }
    }

    /// The quotas in force.
    pub fn quotas(&self) -> Quotas {
        self.inner.quotas
    }

    /// Open a connection for `domid` (the ring or socket that domain talks over).
    pub fn connect(&self, domid: DomId) -> StoreConnection {
        let id = self.inner.next_conn.fetch_add(1, Ordering::Relaxed);
        let queue = Arc::new(EventQueue::default());
        self.inner.lock().conns.insert(
            id,
            ConnState {
                domid,
                next_tx: 1,
                queue: queue.clone(),
                released: false,
            },
        );
        StoreConnection {
            inner: self.inner.clone(),
            id,
            domid,
            queue,
        }
    }

    /// `XS_INTRODUCE` as the toolstack does it: create `/local/domain/<domid>` owned by
    /// the domain (private to it and Dom0) unless it exists, then fire
    /// `@introduceDomain`.
    pub fn introduce_domain(&self, domid: DomId) -> Result<(), StoreError> {
        let quotas = self.inner.quotas;
        let mut st = self.inner.lock();
        let home = domain_path(domid);
        st.run_nil(DOMID_PRIVILEGED, &quotas, |view| {
            if view.exists(&home) {
                return Ok(());
            }
            ops::mkdir(view, &home, &quotas)?;
            let perms = [Perm {
                domid,
                kind: PermKind::None,
            }];
            ops::set_perms(view, &home, &perms, &quotas)
        })?;
        st.deliver(
            &[Fire::Special {
                name: XS_INTRODUCE_DOMAIN,
            }],
            quotas.max_pending_events,
        );
        Ok(())
    }

    /// `XS_RELEASE`: close every connection of `domid` (their watches and open
    /// transactions go away, blocked waiters return) and fire `@releaseDomain`. The
    /// domain's nodes stay until the toolstack removes them
    /// ([`XenStore::remove_domain_tree`]).
    pub fn release_domain(&self, domid: DomId) {
        let mut st = self.inner.lock();
        let ids: Vec<ConnId> = st
            .conns
            .iter()
            .filter(|(_, c)| c.domid == domid)
            .map(|(&id, _)| id)
            .collect();
        for id in ids {
            st.watches.remove_conn(id);
            st.txns.retain(|(conn, _), _| *conn != id);
            if let Some(c) = st.conns.get_mut(&id) {
                c.released = true;
                c.queue.close();
            }
        }
        st.deliver(
            &[Fire::Special {
                name: XS_RELEASE_DOMAIN,
            }],
            self.inner.quotas.max_pending_events,
        );
    }

    /// The toolstack's clean-up after a domain is gone: remove `/local/domain/<domid>`
    /// as Dom0 (a missing home is not an error).
    pub fn remove_domain_tree(&self, domid: DomId) -> Result<(), StoreError> {
        let quotas = self.inner.quotas;
        let home = domain_path(domid);
        self.inner
            .lock()
            .run_nil(DOMID_PRIVILEGED, &quotas, |view| ops::rm(view, &home))
    }

    /// Nodes owned by `domid` (what its node quota counts).
    pub fn nodes_owned_by(&self, domid: DomId) -> usize {
        self.inner.lock().tree.owned_by(domid)
    }
}

/// One domain's connection to the store; implements [`Store`]. Dropping it removes its
/// watches and aborts its transactions.
pub struct StoreConnection {
    inner: Arc<Inner>,
    id: ConnId,
    domid: DomId,
    queue: Arc<EventQueue>,
}

impl core::fmt::Debug for StoreConnection {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("StoreConnection")
            .field("id", &self.id)
            .field("domid", &self.domid)
            .finish()
    }
}

impl StoreConnection {
    /// The domain this connection speaks for.
    pub fn domid(&self) -> DomId {
        self.domid
    }

    /// Watch events waiting on this connection.
    pub fn pending_events(&self) -> usize {
        self.queue.len()
    }

    /// Watch events dropped because this connection's queue was full.
    pub fn dropped_events(&self) -> u64 {
        self.queue.dropped()
    }

    /// Run `op` in transaction `tx` (or alone, committed at once, for `XBT_NIL`).
    fn with_view<R>(
        &self,
        tx: TxId,
        op: impl FnOnce(&mut View<'_>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let quotas = self.inner.quotas;
        let mut st = self.inner.lock();
        st.conn(self.id)?;
        if tx == XBT_NIL {
            return st.run_nil(self.domid, &quotas, op);
        }
        let State { tree, txns, .. } = &mut *st;
        // xenstored answers an unknown transaction id with ENOENT.
        let txn = txns.get_mut(&(self.id, tx)).ok_or(StoreError::NotFound)?;
        op(&mut View::new(tree, txn))
    }
}

impl Drop for StoreConnection {
    fn drop(&mut self) {
        let mut st = self.inner.lock();
        st.watches.remove_conn(self.id);
        st.txns.retain(|(conn, _), _| *conn != self.id);
        st.conns.remove(&self.id);
    }
}

impl Store for StoreConnection {
    fn read(&self, tx: TxId, path: &str) -> Result<Vec<u8>, StoreError> {
        self.with_view(tx, |v| ops::read(v, path))
    }

    fn write(&self, tx: TxId, path: &str, value: &[u8]) -> Result<(), StoreError> {
        let quotas = self.inner.quotas;
        self.with_view(tx, |v| ops::write(v, path, value, &quotas))
    }

    fn mkdir(&self, tx: TxId, path: &str) -> Result<(), StoreError> {
        let quotas = self.inner.quotas;
        self.with_view(tx, |v| ops::mkdir(v, path, &quotas))
    }

    fn rm(&self, tx: TxId, path: &str) -> Result<(), StoreError> {
        self.with_view(tx, |v| ops::rm(v, path))
    }

    fn directory(&self, tx: TxId, path: &str) -> Result<Vec<String>, StoreError> {
        self.with_view(tx, |v| ops::directory(v, path))
    }

    fn get_perms(&self, tx: TxId, path: &str) -> Result<Vec<Perm>, StoreError> {
        if path::is_special(path) {
            let st = self.inner.lock();
            st.conn(self.id)?;
            return st
                .special_perms
                .get(path)
                .cloned()
                .ok_or(StoreError::NotFound);
        }
        self.with_view(tx, |v| ops::get_perms(v, path))
    }

    fn set_perms(&self, tx: TxId, path: &str, perms: &[Perm]) -> Result<(), StoreError> {
        let quotas = self.inner.quotas;
        if path::is_special(path) {
            let mut st = self.inner.lock();
            st.conn(self.id)?;
            // Only Dom0 owns the special nodes.
            if !is_privileged(self.domid) {
                return Err(StoreError::PermissionDenied);
            }
            ops::check_new_perms(path, perms, false, &quotas)?;
            return match st.special_perms.get_mut(path) {
                Some(slot) => {
                    *slot = perms.to_vec();
                    Ok(())
                }
                None => Err(StoreError::NotFound),
            };
        }
        self.with_view(tx, |v| ops::set_perms(v, path, perms, &quotas))
    }

    fn transaction_start(&self) -> Result<TxId, StoreError> {
        let quotas = self.inner.quotas;
        let mut st = self.inner.lock();
        st.conn(self.id)?;
        let open = st.txns.keys().filter(|(conn, _)| *conn == self.id).count();
        if !is_privileged(self.domid) && open >= quotas.max_transactions {
            return Err(StoreError::TooBig);
        }
        let State {
            tree, txns, conns, ..
        } = &mut *st;
        let conn = conns
            .get_mut(&self.id)
            .ok_or_else(|| StoreError::Io("xenstore connection closed".into()))?;
        // Ids are per connection, never XBT_NIL, never one still open.
        let mut id = conn.next_tx;
        while id == XBT_NIL || txns.contains_key(&(self.id, id)) {
            id = id.wrapping_add(1);
        }
        conn.next_tx = id.wrapping_add(1);
        txns.insert((self.id, id), Txn::new(self.domid, tree));
        Ok(id)
    }

    fn transaction_end(&self, tx: TxId, commit: bool) -> Result<(), StoreError> {
        let quotas = self.inner.quotas;
        let mut st = self.inner.lock();
        st.conn(self.id)?;
        let txn = st.txns.remove(&(self.id, tx)).ok_or(StoreError::NotFound)?;
        if !commit {
            return Ok(());
        }
        let fires = st.tree.commit(txn, &quotas, true)?;
        st.deliver(&fires, quotas.max_pending_events);
        Ok(())
    }

    fn watch(&self, path: &str, token: &str) -> Result<(), StoreError> {
        path::validate_watch(path)?;
        let quotas = self.inner.quotas;
        let mut st = self.inner.lock();
        st.conn(self.id)?;
        if st.watches.contains(self.id, path, token) {
            return Err(StoreError::Exists);
        }
        if !is_privileged(self.domid)
            && st.watches.count_for_domain(self.domid) >= quotas.max_watches
        {
            return Err(StoreError::TooBig);
        }
        st.watches.add(
            path,
            WatchReg {
                conn: self.id,
                domid: self.domid,
                token: token.to_owned(),
                queue: self.queue.clone(),
            },
        );
        // xenstored fires every new watch once so the client reads the current state.
        self.queue.push(
            WatchEvent {
                path: path.to_owned(),
                token: token.to_owned(),
            },
            quotas.max_pending_events,
        );
        Ok(())
    }

    fn unwatch(&self, path: &str, token: &str) -> Result<(), StoreError> {
        path::validate_watch(path)?;
        let mut st = self.inner.lock();
        st.conn(self.id)?;
        if st.watches.remove(self.id, path, token) {
            Ok(())
        } else {
            Err(StoreError::NotFound)
        }
    }

    fn next_watch_event(&self, timeout: Option<Duration>) -> Option<WatchEvent> {
        self.queue.pop(timeout)
    }
}
