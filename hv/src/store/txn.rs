//! Transactions: a copy-on-write overlay over the committed tree plus the record of every
//! committed node read, checked by generation at commit like xenstored's
//! `check_transaction`.

use std::collections::HashMap;

use crate::env::DomId;

use super::tree::{Node, Tree};
use super::watch::Fire;

/// One open transaction (xenstored's `struct transaction`). Operations outside any
/// transaction run in a short-lived `Txn` committed at once under the store lock.
#[derive(Debug)]
pub struct Txn {
    domid: DomId,
    /// Tree generation when the transaction started.
    start_gen: u64,
    /// Nodes this transaction wrote: `Some` = new content, `None` = removed.
    overlay: HashMap<String, Option<Node>>,
    /// Committed nodes read, with whether each existed when first read.
    accessed: HashMap<String, bool>,
    /// Watch events to deliver once (and if) the transaction commits.
    events: Vec<Fire>,
    /// Change of each owner's node count.
    owned_delta: HashMap<DomId, i64>,
}

/// The pieces of a finished transaction, consumed by [`Tree::commit`].
pub struct TxnParts {
    pub domid: DomId,
    pub start_gen: u64,
    pub overlay: HashMap<String, Option<Node>>,
    pub accessed: HashMap<String, bool>,
    pub events: Vec<Fire>,
    pub owned_delta: HashMap<DomId, i64>,
}

impl Txn {
    /// A transaction of `domid` starting from `tree`'s current generation.
    pub fn new(domid: DomId, tree: &Tree) -> Txn {
        Txn {
            domid,
            start_gen: tree.generation(),
            overlay: HashMap::new(),
            accessed: HashMap::new(),
            events: Vec::new(),
            owned_delta: HashMap::new(),
        }
    }

    /// Take the transaction apart for commit.
    pub fn into_parts(self) -> TxnParts {
        TxnParts {
            domid: self.domid,
            start_gen: self.start_gen,
            overlay: self.overlay,
            accessed: self.accessed,
            events: self.events,
            owned_delta: self.owned_delta,
        }
    }
}

/// The tree as one transaction sees it: its own writes over the committed nodes.
pub struct View<'a> {
    tree: &'a Tree,
    txn: &'a mut Txn,
}

impl<'a> View<'a> {
    pub fn new(tree: &'a Tree, txn: &'a mut Txn) -> View<'a> {
        View { tree, txn }
    }

    /// The acting domain.
    pub fn domid(&self) -> DomId {
        self.txn.domid
    }

    /// The node at `path` as this transaction sees it. The first read of a committed
    /// node is recorded for the conflict check. A node committed after the transaction
    /// started fails that check even if read before the change, so a transaction that
    /// commits saw one consistent snapshot.
    pub fn get(&mut self, path: &str) -> Option<&Node> {
        if !self.txn.overlay.contains_key(path) && !self.txn.accessed.contains_key(path) {
            let existed = self.tree.get(path).is_some();
            self.txn.accessed.insert(path.to_owned(), existed);
        }
        match self.txn.overlay.get(path) {
            Some(node) => node.as_ref(),
            None => self.tree.get(path),
        }
    }

    /// Whether `path` exists in this view.
    pub fn exists(&mut self, path: &str) -> bool {
        self.get(path).is_some()
    }

    /// Replace or create the node at `path`.
    pub fn put(&mut self, path: &str, node: Node) {
        self.txn.overlay.insert(path.to_owned(), Some(node));
    }

    /// Remove the node at `path` (its parent's child list is the caller's job).
    pub fn remove(&mut self, path: &str) {
        self.txn.overlay.insert(path.to_owned(), None);
    }

    /// Nodes owned by `domid`, counting this transaction's changes.
    pub fn owned_by(&self, domid: DomId) -> i64 {
        self.tree.owned_by(domid) as i64 + self.txn.owned_delta.get(&domid).copied().unwrap_or(0)
    }

    /// Account `delta` nodes to `domid`.
    pub fn adjust_owned(&mut self, domid: DomId, delta: i64) {
        *self.txn.owned_delta.entry(domid).or_insert(0) += delta;
    }

    /// Queue a watch event for delivery at commit.
    pub fn fire(&mut self, event: Fire) {
        self.txn.events.push(event);
    }
}
