//! The committed node tree, its generation counter and per-owner node accounting.

use std::collections::{BTreeSet, HashMap};

use crate::env::{DomId, Perm, PermKind, StoreError};

use super::perms::{is_privileged, DOMID_PRIVILEGED};
use super::txn::Txn;
use super::watch::Fire;
use super::Quotas;

/// One xenstore node (xenstored's `struct node`): value, permissions, children and the
/// generation of its last change, which transactions compare to detect conflicts.
#[derive(Debug, Clone)]
pub struct Node {
    pub value: Vec<u8>,
    /// `xs_permissions` list; the first entry is the owner and the default access.
    pub perms: Vec<Perm>,
    /// Child names; a `BTreeSet` so `XS_DIRECTORY` answers sorted.
    pub children: BTreeSet<String>,
    /// Generation of the commit that last changed this node.
    pub generation: u64,
}

impl Node {
    /// A node with an empty value and no children.
    pub fn empty(perms: Vec<Perm>) -> Node {
        Node {
            value: Vec::new(),
            perms,
            children: BTreeSet::new(),
            generation: 0,
        }
    }
}

/// The committed tree, keyed by absolute path.
#[derive(Debug)]
pub struct Tree {
    nodes: HashMap<String, Node>,
    /// Generation of the newest commit; a transaction starts at the value it sees here.
    generation: u64,
    /// Nodes per owner domain (`domain_entry`), for the node-count quota.
    owned: HashMap<DomId, usize>,
}

impl Tree {
    /// A tree holding only `/`, owned by Dom0 and closed to everyone else, as xenstored
    /// sets up its root.
    pub fn new() -> Tree {
        let root = Node::empty(vec![Perm {
            domid: DOMID_PRIVILEGED,
            kind: PermKind::None,
        }]);
        let mut nodes = HashMap::new();
        nodes.insert("/".to_owned(), root);
        let mut owned = HashMap::new();
        owned.insert(DOMID_PRIVILEGED, 1);
        Tree {
            nodes,
            generation: 0,
            owned,
        }
    }

    /// The committed node at `path`.
    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path)
    }

    /// Generation of the newest commit.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Nodes currently owned by `domid`.
    pub fn owned_by(&self, domid: DomId) -> usize {
        self.owned.get(&domid).copied().unwrap_or(0)
    }

    /// Apply a transaction (`XS_TRANSACTION_END` with commit, or one implicit
    /// single-operation transaction). With `check_conflicts`, fails with `EAGAIN` if any
    /// node it read or wrote changed since it started (xenstored's generation check),
    /// and with `ENOSPC` if concurrent commits pushed an unprivileged owner over its
    /// node quota. On success returns the watch events to deliver.
    pub fn commit(
        &mut self,
        txn: Txn,
        quotas: &Quotas,
        check_conflicts: bool,
    ) -> Result<Vec<Fire>, StoreError> {
        let parts = txn.into_parts();
        if check_conflicts {
            for (path, existed) in &parts.accessed {
                let unchanged = match (self.nodes.get(path), existed) {
                    (Some(node), true) => node.generation <= parts.start_gen,
                    (None, false) => true,
                    _ => false,
                };
                if !unchanged {
                    return Err(StoreError::Again);
                }
            }
            if !is_privileged(parts.domid) {
                for (&domid, &delta) in &parts.owned_delta {
                    let after = self.owned_by(domid) as i64 + delta;
                    if delta > 0 && !is_privileged(domid) && after > quotas.max_nodes as i64 {
                        return Err(StoreError::TooBig);
                    }
                }
            }
        }
        if parts.overlay.is_empty() {
            return Ok(parts.events);
        }
        self.generation += 1;
        for (path, node) in parts.overlay {
            match node {
                Some(mut node) => {
                    node.generation = self.generation;
                    self.nodes.insert(path, node);
                }
                None => {
                    self.nodes.remove(&path);
                }
            }
        }
        for (domid, delta) in parts.owned_delta {
            let count = self.owned.entry(domid).or_insert(0);
            *count = (*count as i64 + delta).max(0) as usize;
        }
        Ok(parts.events)
    }
}
