//! Access checks: xenstored's `perm_for_conn` over a node's `xs_permissions` list.

use crate::env::{DomId, Perm, PermKind};

/// Dom0's domid: the privileged toolstack domain (`domain_is_unprivileged` is false).
pub const DOMID_PRIVILEGED: DomId = 0;

/// `XS_PERM_READ` / `XS_PERM_WRITE` / `XS_PERM_OWNER` as a small bit set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access(u8);

impl Access {
    /// `XS_PERM_READ`
    pub const READ: Access = Access(1);
    /// `XS_PERM_WRITE`
    pub const WRITE: Access = Access(2);
    /// `XS_PERM_OWNER`: may change the node's permissions.
    pub const OWNER: Access = Access(4);
    const ALL: Access = Access(7);

    /// Both sets of rights.
    pub const fn with(self, other: Access) -> Access {
        Access(self.0 | other.0)
    }

    /// Whether every right in `need` is present.
    pub fn allows(self, need: Access) -> bool {
        self.0 & need.0 == need.0
    }

    fn from_kind(kind: PermKind) -> Access {
        match kind {
            PermKind::None => Access(0),
            PermKind::Read => Access::READ,
            PermKind::Write => Access::WRITE,
            PermKind::Both => Access(Access::READ.0 | Access::WRITE.0),
        }
    }
}

/// `!domain_is_unprivileged(conn)`: Dom0 bypasses every permission and quota.
pub fn is_privileged(domid: DomId) -> bool {
    domid == DOMID_PRIVILEGED
}

/// `perm_for_conn`: Dom0 and the owner (first entry) get everything; a domain listed in
/// a later entry gets that entry's rights; anyone else gets the first entry's rights.
pub fn access_for(domid: DomId, perms: &[Perm]) -> Access {
    let Some(owner) = perms.first() else {
        // A node always has an owner; an empty list grants nothing but to Dom0.
        return if is_privileged(domid) {
            Access::ALL
        } else {
            Access(0)
        };
    };
    if is_privileged(domid) || owner.domid == domid {
        return Access::ALL;
    }
    let kind = perms[1..]
        .iter()
        .find(|p| p.domid == domid)
        .map_or(owner.kind, |p| p.kind);
    Access::from_kind(kind)
}

/// The owner of a node: the first entry's domain.
pub fn owner(perms: &[Perm]) -> DomId {
    perms.first().map_or(DOMID_PRIVILEGED, |p| p.domid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(domid: DomId, kind: PermKind) -> Perm {
        Perm { domid, kind }
    }

    #[test]
    fn perm_for_conn_rules() {
        let perms = [
            p(5, PermKind::None),
            p(0, PermKind::Read),
            p(7, PermKind::Read),
        ];
        assert!(access_for(0, &perms).allows(Access::WRITE), "dom0 gets all");
        assert!(
            access_for(5, &perms).allows(Access::OWNER),
            "owner gets all"
        );
        let seven = access_for(7, &perms);
        assert!(seven.allows(Access::READ) && !seven.allows(Access::WRITE));
        assert!(!access_for(9, &perms).allows(Access::READ), "default is n");
        let open = [p(5, PermKind::Both)];
        assert!(access_for(9, &open).allows(Access::WRITE));
        assert!(!access_for(9, &open).allows(Access::OWNER));
        let listed_none = [p(5, PermKind::Read), p(9, PermKind::None)];
        assert!(
            !access_for(9, &listed_none).allows(Access::READ),
            "entry wins"
        );
        assert!(access_for(8, &listed_none).allows(Access::READ));
    }
}
