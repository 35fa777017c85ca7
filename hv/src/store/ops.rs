//! The node operations of `xs_wire.h` (`XS_READ`, `XS_WRITE`, `XS_MKDIR`, `XS_RM`,
//! `XS_DIRECTORY`, `XS_GET_PERMS`, `XS_SET_PERMS`) on one transaction's view, with
//! xenstored's permission, quota and error rules. Each operation checks everything
//! before it changes anything, so a failed operation leaves its transaction untouched.

use std::collections::HashMap;

use crate::env::{Perm, PermKind, StoreError};

use super::path;
use super::perms::{access_for, is_privileged, owner, Access};
use super::tree::Node;
use super::txn::View;
use super::watch::Fire;
use super::Quotas;

/// `get_node` + `errno_from_parents`: `Ok` if the node exists and the caller has `need`
/// on it; `EACCES` if it exists without that right; for a missing node `ENOENT` only if
/// the caller has `need` on the nearest existing ancestor (otherwise `EACCES`, so a
/// guest cannot probe for nodes it may not see).
fn check(view: &mut View<'_>, p: &str, need: Access) -> Result<(), StoreError> {
    let domid = view.domid();
    if let Some(node) = view.get(p) {
        return if access_for(domid, &node.perms).allows(need) {
            Ok(())
        } else {
            Err(StoreError::PermissionDenied)
        };
    }
    for ancestor in path::self_and_ancestors(p).skip(1) {
        if let Some(node) = view.get(ancestor) {
            return if access_for(domid, &node.perms).allows(need) {
                Err(StoreError::NotFound)
            } else {
                Err(StoreError::PermissionDenied)
            };
        }
    }
    // The root always exists; reaching here means a corrupt tree.
    Err(StoreError::Io("xenstore root missing".into()))
}

/// The node at `p` after a successful [`check`].
fn node<'v>(view: &'v mut View<'_>, p: &str) -> Result<&'v Node, StoreError> {
    view.get(p).ok_or(StoreError::NotFound)
}

/// `XS_READ`
pub fn read(view: &mut View<'_>, p: &str) -> Result<Vec<u8>, StoreError> {
    path::validate(p)?;
    check(view, p, Access::READ)?;
    Ok(node(view, p)?.value.clone())
}

/// `XS_DIRECTORY`
pub fn directory(view: &mut View<'_>, p: &str) -> Result<Vec<String>, StoreError> {
    path::validate(p)?;
    check(view, p, Access::READ)?;
    Ok(node(view, p)?.children.iter().cloned().collect())
}

/// `XS_GET_PERMS` on a node.
pub fn get_perms(view: &mut View<'_>, p: &str) -> Result<Vec<Perm>, StoreError> {
    path::validate(p)?;
    check(view, p, Access::READ)?;
    Ok(node(view, p)?.perms.clone())
}

/// Size checks of `XS_WRITE`: the wire's payload limit for everyone, and the per-node
/// value quota (`quota_max_entry_size`) for guests.
fn check_value_size(
    view: &View<'_>,
    p: &str,
    value: &[u8],
    quotas: &Quotas,
) -> Result<(), StoreError> {
    if p.len() + 1 + value.len() > path::XENSTORE_PAYLOAD_MAX {
        return Err(StoreError::TooBig);
    }
    if !is_privileged(view.domid()) && value.len() > quotas.max_value_size {
        return Err(StoreError::TooBig);
    }
    Ok(())
}

/// `XS_WRITE`: replace an existing node's value (write permission on the node) or create
/// it and any missing parents (write permission on the nearest existing ancestor).
pub fn write(
    view: &mut View<'_>,
    p: &str,
    value: &[u8],
    quotas: &Quotas,
) -> Result<(), StoreError> {
    path::validate(p)?;
    check_value_size(view, p, value, quotas)?;
    match check(view, p, Access::WRITE) {
        Ok(()) => {
            let mut updated = node(view, p)?.clone();
            updated.value = value.to_vec();
            let perms = updated.perms.clone();
            view.put(p, updated);
            view.fire(Fire::Changed {
                path: p.to_owned(),
                perms,
                old_perms: None,
            });
            Ok(())
        }
        Err(StoreError::NotFound) => create(view, p, value, quotas),
        Err(e) => Err(e),
    }
}

/// `XS_MKDIR`: create an empty node (and missing parents); an existing node is left as
/// it is, but still needs write permission, as in xenstored.
pub fn mkdir(view: &mut View<'_>, p: &str, quotas: &Quotas) -> Result<(), StoreError> {
    path::validate(p)?;
    match check(view, p, Access::WRITE) {
        Ok(()) => Ok(()),
        Err(StoreError::NotFound) => create(view, p, &[], quotas),
        Err(e) => Err(e),
    }
}

/// `create_node`/`construct_node`: make `p` and its missing ancestors. Each new node
/// inherits its parent's permissions, but a guest owns what it creates.
fn create(view: &mut View<'_>, p: &str, value: &[u8], quotas: &Quotas) -> Result<(), StoreError> {
    let domid = view.domid();
    // Missing nodes, deepest first; `base` is the nearest existing ancestor.
    let mut missing = Vec::new();
    let mut base = p;
    while !view.exists(base) {
        missing.push(base);
        base = path::parent(base).ok_or_else(|| StoreError::Io("xenstore root missing".into()))?;
    }
    let mut parent = node(view, base)?.clone();
    let mut perms = parent.perms.clone();
    if !is_privileged(domid) {
        if let Some(first) = perms.first_mut() {
            first.domid = domid;
        }
    }
    let new_owner = owner(&perms);
    let added = missing.len() as i64;
    if !is_privileged(domid) && view.owned_by(new_owner) + added > quotas.max_nodes as i64 {
        return Err(StoreError::TooBig);
    }

    parent
        .children
        .insert(path::basename(missing[missing.len() - 1]).to_owned());
    view.put(base, parent);
    for (depth, &node_path) in missing.iter().enumerate().rev() {
        let mut created = Node::empty(perms.clone());
        if depth == 0 {
            created.value = value.to_vec();
        } else {
            created
                .children
                .insert(path::basename(missing[depth - 1]).to_owned());
        }
        view.put(node_path, created);
    }
    view.adjust_owned(new_owner, added);
    view.fire(Fire::Changed {
        path: p.to_owned(),
        perms,
        old_perms: None,
    });
    Ok(())
}

/// `XS_RM`: remove `p` and everything below it (write permission on `p`). Removing a
/// missing node succeeds if its parent exists, as in xenstored.
pub fn rm(view: &mut View<'_>, p: &str) -> Result<(), StoreError> {
    path::validate(p)?;
    let parent_path = path::parent(p).ok_or(StoreError::Invalid)?;
    match check(view, p, Access::WRITE) {
        Ok(()) => {}
        Err(StoreError::NotFound) if view.exists(parent_path) => return Ok(()),
        Err(e) => return Err(e),
    }
    // Collect the subtree with each node's permissions, for watch permission checks.
    let mut removed: HashMap<String, Vec<Perm>> = HashMap::new();
    let mut stack = vec![p.to_owned()];
    while let Some(current) = stack.pop() {
        let Some(n) = view.get(&current) else {
            continue;
        };
        let children: Vec<String> = n
            .children
            .iter()
            .map(|c| path::child(&current, c))
            .collect();
        let perms = n.perms.clone();
        view.adjust_owned(owner(&perms), -1);
        removed.insert(current.clone(), perms);
        view.remove(&current);
        stack.extend(children);
    }
    let mut parent = node(view, parent_path)?.clone();
    parent.children.remove(path::basename(p));
    view.put(parent_path, parent);
    view.fire(Fire::Removed {
        path: p.to_owned(),
        removed,
    });
    Ok(())
}

/// Bytes `perms` take on the wire: one letter, the decimal domid and a NUL each.
fn perms_wire_len(perms: &[Perm]) -> usize {
    perms.iter().map(|p| 2 + p.domid.to_string().len()).sum()
}

/// Checks on a new permission list shared by nodes and special nodes.
pub fn check_new_perms(
    p: &str,
    perms: &[Perm],
    guest: bool,
    quotas: &Quotas,
) -> Result<(), StoreError> {
    if perms.is_empty() {
        return Err(StoreError::Invalid);
    }
    if p.len() + 1 + perms_wire_len(perms) > path::XENSTORE_PAYLOAD_MAX {
        return Err(StoreError::TooBig);
    }
    if guest && perms.len() > quotas.max_perms_per_node {
        return Err(StoreError::TooBig);
    }
    Ok(())
}

/// `XS_SET_PERMS` on a node: only its owner or Dom0, and a guest may not hand the node
/// to another owner (xenstored answers `EPERM`, reported here as `EACCES`).
pub fn set_perms(
    view: &mut View<'_>,
    p: &str,
    perms: &[Perm],
    quotas: &Quotas,
) -> Result<(), StoreError> {
    path::validate(p)?;
    let domid = view.domid();
    let guest = !is_privileged(domid);
    check_new_perms(p, perms, guest, quotas)?;
    check(view, p, Access::WRITE.with(Access::OWNER))?;
    let mut updated = node(view, p)?.clone();
    let old_owner = owner(&updated.perms);
    let new_owner = owner(perms);
    if guest && old_owner != new_owner {
        return Err(StoreError::PermissionDenied);
    }
    let old_perms = std::mem::replace(&mut updated.perms, perms.to_vec());
    view.put(p, updated);
    if old_owner != new_owner {
        view.adjust_owned(old_owner, -1);
        view.adjust_owned(new_owner, 1);
    }
    view.fire(Fire::Changed {
        path: p.to_owned(),
        perms: perms.to_vec(),
        old_perms: Some(old_perms),
    });
    Ok(())
}

/// The default permissions of a special node (`@introduceDomain`, `@releaseDomain`):
/// owned by Dom0 and unreadable to guests until Dom0 says otherwise.
pub fn default_special_perms() -> Vec<Perm> {
    vec![Perm {
        domid: super::perms::DOMID_PRIVILEGED,
        kind: PermKind::None,
    }]
}
