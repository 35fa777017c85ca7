//! xenstore permissions: who may read, write and re-permission which nodes.

use hv::env::{Perm, PermKind, Store, StoreError, XBT_NIL};
use hv::store::{domain_path, StoreConnection, XenStore};

fn perm(domid: u16, kind: PermKind) -> Perm {
    Perm { domid, kind }
}

/// A store with guests 1 and 2 introduced, and connections for Dom0, 1 and 2.
fn setup() -> (XenStore, StoreConnection, StoreConnection, StoreConnection) {
    let xs = XenStore::new();
    xs.introduce_domain(1).unwrap();
    xs.introduce_domain(2).unwrap();
    let (d0, g1, g2) = (xs.connect(0), xs.connect(1), xs.connect(2));
    (xs, d0, g1, g2)
}

#[test]
fn introduced_home_is_owned_by_the_domain_and_private() {
    let (_xs, d0, g1, g2) = setup();
    assert_eq!(domain_path(1), "/local/domain/1");
    assert_eq!(
        d0.get_perms(XBT_NIL, "/local/domain/1").unwrap(),
        [perm(1, PermKind::None)]
    );
    g1.write(XBT_NIL, "/local/domain/1/name", b"guest1")
        .unwrap();
    assert_eq!(d0.read(XBT_NIL, "/local/domain/1/name").unwrap(), b"guest1");
    assert_eq!(
        g2.read(XBT_NIL, "/local/domain/1/name"),
        Err(StoreError::PermissionDenied)
    );
    assert_eq!(
        g2.directory(XBT_NIL, "/local/domain/1"),
        Err(StoreError::PermissionDenied)
    );
    assert_eq!(
        g1.directory(XBT_NIL, "/local/domain"),
        Err(StoreError::PermissionDenied)
    );
    assert_eq!(
        d0.directory(XBT_NIL, "/local/domain").unwrap(),
        ["1".to_owned(), "2".to_owned()]
    );
}

#[test]
fn guest_cannot_write_another_domains_nodes() {
    let (_xs, d0, g1, g2) = setup();
    g2.write(XBT_NIL, "/local/domain/2/x", b"mine").unwrap();
    assert_eq!(
        g1.write(XBT_NIL, "/local/domain/2/x", b"evil"),
        Err(StoreError::PermissionDenied)
    );
    assert_eq!(
        g1.write(XBT_NIL, "/local/domain/2/new", b"evil"),
        Err(StoreError::PermissionDenied)
    );
    assert_eq!(
        g1.mkdir(XBT_NIL, "/local/domain/2/dir"),
        Err(StoreError::PermissionDenied)
    );
    assert_eq!(
        g1.rm(XBT_NIL, "/local/domain/2/x"),
        Err(StoreError::PermissionDenied)
    );
    assert_eq!(
        g1.write(XBT_NIL, "/tool/x", b"evil"),
        Err(StoreError::PermissionDenied)
    );
    assert_eq!(
        g1.write(XBT_NIL, "/local/domain/1/../x", b"v"),
        Err(StoreError::Invalid)
    );
    assert_eq!(d0.read(XBT_NIL, "/local/domain/2/x").unwrap(), b"mine");
    assert_eq!(
        d0.read(XBT_NIL, "/local/domain/2/new"),
        Err(StoreError::NotFound)
    );
    assert_eq!(d0.read(XBT_NIL, "/tool/x"), Err(StoreError::NotFound));
}

#[test]
fn guest_cannot_read_or_probe_dom0_private_nodes() {
    let (_xs, d0, g1, _g2) = setup();
    d0.write(XBT_NIL, "/tool/secret", b"k").unwrap();
    assert_eq!(
        g1.read(XBT_NIL, "/tool/secret"),
        Err(StoreError::PermissionDenied)
    );
    assert_eq!(
        g1.get_perms(XBT_NIL, "/tool/secret"),
        Err(StoreError::PermissionDenied)
    );
    // A missing node under an unreadable parent must not reveal that it is missing.
    assert_eq!(
        g1.read(XBT_NIL, "/tool/nothing"),
        Err(StoreError::PermissionDenied)
    );
    // Under its own home the guest learns the truth.
    assert_eq!(
        g1.read(XBT_NIL, "/local/domain/1/nothing"),
        Err(StoreError::NotFound)
    );
    assert_eq!(d0.read(XBT_NIL, "/tool/nothing"), Err(StoreError::NotFound));
}

#[test]
fn new_nodes_inherit_parent_perms_and_guests_own_what_they_create() {
    let (_xs, d0, g1, g2) = setup();
    // Dom0 (toolstack) creating below a guest's home: perms inherited unchanged.
    d0.write(XBT_NIL, "/local/domain/1/device/vif/0/state", b"1")
        .unwrap();
    for p in [
        "/local/domain/1/device",
        "/local/domain/1/device/vif/0/state",
    ] {
        assert_eq!(
            d0.get_perms(XBT_NIL, p).unwrap(),
            [perm(1, PermKind::None)],
            "{p}"
        );
    }
    // A backend directory Dom0 shares read-only with guest 1.
    d0.mkdir(XBT_NIL, "/local/domain/0/backend/vif/1/0")
        .unwrap();
    d0.set_perms(
        XBT_NIL,
        "/local/domain/0/backend/vif/1/0",
        &[perm(0, PermKind::None), perm(1, PermKind::Read)],
    )
    .unwrap();
    d0.write(
        XBT_NIL,
        "/local/domain/0/backend/vif/1/0/mac",
        b"00:16:3e:00:00:01",
    )
    .unwrap();
    assert_eq!(
        d0.get_perms(XBT_NIL, "/local/domain/0/backend/vif/1/0/mac")
            .unwrap(),
        [perm(0, PermKind::None), perm(1, PermKind::Read)]
    );
    assert_eq!(
        g1.read(XBT_NIL, "/local/domain/0/backend/vif/1/0/mac")
            .unwrap(),
        b"00:16:3e:00:00:01"
    );
    assert_eq!(
        g2.read(XBT_NIL, "/local/domain/0/backend/vif/1/0/mac"),
        Err(StoreError::PermissionDenied)
    );
    assert_eq!(
        g1.write(XBT_NIL, "/local/domain/0/backend/vif/1/0/mac", b"x"),
        Err(StoreError::PermissionDenied)
    );
    // Now grant write: a node guest 1 creates there is owned by guest 1, the rest of
    // the list is inherited.
    d0.set_perms(
        XBT_NIL,
        "/local/domain/0/backend/vif/1/0",
        &[perm(0, PermKind::None), perm(1, PermKind::Both)],
    )
    .unwrap();
    g1.write(
        XBT_NIL,
        "/local/domain/0/backend/vif/1/0/from-guest/x",
        b"1",
    )
    .unwrap();
    for p in [
        "/local/domain/0/backend/vif/1/0/from-guest",
        "/local/domain/0/backend/vif/1/0/from-guest/x",
    ] {
        assert_eq!(
            d0.get_perms(XBT_NIL, p).unwrap(),
            [perm(1, PermKind::None), perm(1, PermKind::Both)],
            "{p}"
        );
    }
}

#[test]
fn set_perms_only_by_owner_or_dom0_and_guests_keep_ownership() {
    let (xs, d0, g1, g2) = setup();
    g1.write(XBT_NIL, "/local/domain/1/shared", b"s").unwrap();
    let share = [perm(1, PermKind::None), perm(2, PermKind::Read)];
    assert_eq!(
        g2.set_perms(XBT_NIL, "/local/domain/1/shared", &share),
        Err(StoreError::PermissionDenied)
    );
    assert_eq!(
        g2.read(XBT_NIL, "/local/domain/1/shared"),
        Err(StoreError::PermissionDenied)
    );
    g1.set_perms(XBT_NIL, "/local/domain/1/shared", &share)
        .unwrap();
    assert_eq!(g2.read(XBT_NIL, "/local/domain/1/shared").unwrap(), b"s");
    // A read grant is not a write grant, nor the right to re-permission.
    assert_eq!(
        g2.write(XBT_NIL, "/local/domain/1/shared", b"x"),
        Err(StoreError::PermissionDenied)
    );
    // A guest may not give its node away.
    assert_eq!(
        g1.set_perms(
            XBT_NIL,
            "/local/domain/1/shared",
            &[perm(2, PermKind::None)]
        ),
        Err(StoreError::PermissionDenied)
    );
    assert_eq!(
        g1.set_perms(XBT_NIL, "/local/domain/1/shared", &[]),
        Err(StoreError::Invalid)
    );
    // Dom0 may, and the node then counts against the new owner.
    let (n1, n2) = (xs.nodes_owned_by(1), xs.nodes_owned_by(2));
    d0.set_perms(
        XBT_NIL,
        "/local/domain/1/shared",
        &[perm(2, PermKind::None)],
    )
    .unwrap();
    assert_eq!(
        (xs.nodes_owned_by(1), xs.nodes_owned_by(2)),
        (n1 - 1, n2 + 1)
    );
    assert_eq!(
        g2.write(XBT_NIL, "/local/domain/1/shared", b"now mine")
            .unwrap(),
        ()
    );
    assert_eq!(
        g1.read(XBT_NIL, "/local/domain/1/shared"),
        Err(StoreError::PermissionDenied)
    );
}

#[test]
fn rm_needs_write_and_missing_nodes_follow_xenstored() {
    let (_xs, d0, g1, _g2) = setup();
    g1.write(XBT_NIL, "/local/domain/1/a/b", b"").unwrap();
    // Removing a missing node whose parent exists succeeds; with no parent it is ENOENT.
    g1.rm(XBT_NIL, "/local/domain/1/a/none").unwrap();
    assert_eq!(
        g1.rm(XBT_NIL, "/local/domain/1/none/none"),
        Err(StoreError::NotFound)
    );
    assert_eq!(
        g1.rm(XBT_NIL, "/tool/none"),
        Err(StoreError::PermissionDenied)
    );
    g1.rm(XBT_NIL, "/local/domain/1/a").unwrap();
    assert_eq!(
        d0.read(XBT_NIL, "/local/domain/1/a/b"),
        Err(StoreError::NotFound)
    );
    assert_eq!(
        d0.directory(XBT_NIL, "/local/domain/1").unwrap(),
        Vec::<String>::new()
    );
}

#[test]
fn special_node_perms_are_dom0s() {
    let (_xs, d0, g1, _g2) = setup();
    assert_eq!(
        d0.get_perms(XBT_NIL, "@releaseDomain").unwrap(),
        [perm(0, PermKind::None)]
    );
    assert_eq!(
        g1.set_perms(XBT_NIL, "@releaseDomain", &[perm(0, PermKind::Read)]),
        Err(StoreError::PermissionDenied)
    );
    d0.set_perms(XBT_NIL, "@releaseDomain", &[perm(0, PermKind::Read)])
        .unwrap();
    assert_eq!(
        g1.get_perms(XBT_NIL, "@releaseDomain").unwrap(),
        [perm(0, PermKind::Read)]
    );
    assert_eq!(
        d0.get_perms(XBT_NIL, "@nonsense"),
        Err(StoreError::NotFound)
    );
    assert_eq!(d0.read(XBT_NIL, "@releaseDomain"), Err(StoreError::Invalid));
}

#[test]
fn released_domain_connection_is_closed_but_nodes_stay_until_removed() {
    let (xs, d0, g1, _g2) = setup();
    g1.write(XBT_NIL, "/local/domain/1/x", b"1").unwrap();
    xs.release_domain(1);
    assert!(matches!(
        g1.read(XBT_NIL, "/local/domain/1/x"),
        Err(StoreError::Io(_))
    ));
    assert!(matches!(g1.transaction_start(), Err(StoreError::Io(_))));
    assert_eq!(d0.read(XBT_NIL, "/local/domain/1/x").unwrap(), b"1");
    xs.remove_domain_tree(1).unwrap();
    assert_eq!(
        d0.read(XBT_NIL, "/local/domain/1"),
        Err(StoreError::NotFound)
    );
    assert_eq!(xs.nodes_owned_by(1), 0);
    // A re-introduced domain id gets a fresh home and a working connection.
    xs.introduce_domain(1).unwrap();
    let again = xs.connect(1);
    again.write(XBT_NIL, "/local/domain/1/x", b"2").unwrap();
    assert_eq!(d0.read(XBT_NIL, "/local/domain/1/x").unwrap(), b"2");
}
