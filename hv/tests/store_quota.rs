//! xenstore quotas: guests cannot exhaust the store; Dom0 is exempt.

use hv::env::{Store, StoreError, XBT_NIL};
use hv::store::{Quotas, XenStore, XENSTORE_PAYLOAD_MAX};

fn small(max_nodes: usize) -> XenStore {
    XenStore::with_quotas(Quotas {
        max_nodes,
        ..Quotas::default()
    })
}

#[test]
fn defaults_are_xenstoreds() {
    let q = Quotas::default();
    assert_eq!(
        (
            q.max_nodes,
            q.max_value_size,
            q.max_watches,
            q.max_transactions
        ),
        (1000, 2048, 128, 10)
    );
}

#[test]
fn guest_node_count_is_capped_and_rm_frees_it() {
    let xs = small(10);
    xs.introduce_domain(1).unwrap();
    let g1 = xs.connect(1);
    assert_eq!(xs.nodes_owned_by(1), 1, "the home counts");
    // Bounded, so a broken quota fails the test instead of looping for ever.
    let mut created = 0;
    let mut err = None;
    for i in 0..100 {
        match g1.write(XBT_NIL, &format!("/local/domain/1/n{i}"), b"") {
            Ok(()) => created += 1,
            Err(e) => {
                err = Some(e);
                break;
            }
        }
    }
    assert_eq!(err, Some(StoreError::TooBig));
    assert_eq!(created, 9);
    assert_eq!(xs.nodes_owned_by(1), 10);
    g1.rm(XBT_NIL, "/local/domain/1/n0").unwrap();
    assert_eq!(xs.nodes_owned_by(1), 9);
    g1.write(XBT_NIL, "/local/domain/1/again", b"").unwrap();
}

#[test]
fn a_write_that_would_pass_the_quota_creates_nothing() {
    let xs = small(4);
    xs.introduce_domain(1).unwrap();
    let g1 = xs.connect(1);
    g1.write(XBT_NIL, "/local/domain/1/a", b"").unwrap(); // 2 of 4
                                                          // Needs 3 more nodes (b, b/c, b/c/d): refused as a whole.
    assert_eq!(
        g1.write(XBT_NIL, "/local/domain/1/b/c/d", b""),
        Err(StoreError::TooBig)
    );
    assert_eq!(
        g1.read(XBT_NIL, "/local/domain/1/b"),
        Err(StoreError::NotFound)
    );
    assert_eq!(xs.nodes_owned_by(1), 2);
    g1.write(XBT_NIL, "/local/domain/1/b/c", b"").unwrap(); // exactly 4
}

#[test]
fn dom0_is_not_limited_by_node_quota() {
    let xs = small(5);
    let d0 = xs.connect(0);
    for i in 0..50 {
        d0.write(XBT_NIL, &format!("/tool/n{i}"), b"").unwrap();
    }
    assert_eq!(d0.directory(XBT_NIL, "/tool").unwrap().len(), 50);
}

#[test]
fn value_size_limits() {
    let xs = XenStore::new();
    xs.introduce_domain(1).unwrap();
    let (d0, g1) = (xs.connect(0), xs.connect(1));
    let max = xs.quotas().max_value_size;
    g1.write(XBT_NIL, "/local/domain/1/v", &vec![b'a'; max])
        .unwrap();
    assert_eq!(
        g1.write(XBT_NIL, "/local/domain/1/v", &vec![b'a'; max + 1]),
        Err(StoreError::TooBig)
    );
    assert_eq!(
        g1.read(XBT_NIL, "/local/domain/1/v").unwrap().len(),
        max,
        "old value kept"
    );
    d0.write(XBT_NIL, "/local/domain/1/v", &vec![b'a'; max + 1])
        .unwrap();
    // Nobody exceeds the wire's payload.
    let path = "/tool/huge";
    let fits = XENSTORE_PAYLOAD_MAX - path.len() - 1;
    d0.write(XBT_NIL, path, &vec![b'a'; fits]).unwrap();
    assert_eq!(
        d0.write(XBT_NIL, path, &vec![b'a'; fits + 1]),
        Err(StoreError::TooBig)
    );
}

#[test]
fn guest_transaction_count_is_capped() {
    let xs = XenStore::new();
    let g = xs.connect(3);
    let max = xs.quotas().max_transactions;
    let ids: Vec<_> = (0..max).map(|_| g.transaction_start().unwrap()).collect();
    assert_eq!(g.transaction_start(), Err(StoreError::TooBig));
    g.transaction_end(ids[0], false).unwrap();
    g.transaction_start().unwrap();
    let d0 = xs.connect(0);
    for _ in 0..max * 3 {
        d0.transaction_start().unwrap();
    }
}

#[test]
fn node_quota_is_rechecked_at_commit() {
    let xs = small(6);
    xs.introduce_domain(1).unwrap();
    let g1 = xs.connect(1);
    g1.mkdir(XBT_NIL, "/local/domain/1/a").unwrap();
    g1.mkdir(XBT_NIL, "/local/domain/1/b").unwrap(); // 3 of 6
    let t1 = g1.transaction_start().unwrap();
    let t2 = g1.transaction_start().unwrap();
    g1.write(t1, "/local/domain/1/a/x/y", b"").unwrap(); // +2 → 5
    g1.write(t2, "/local/domain/1/b/x/y", b"").unwrap(); // +2 → 5 on its own
    g1.transaction_end(t1, true).unwrap();
    assert_eq!(g1.transaction_end(t2, true), Err(StoreError::TooBig));
    assert_eq!(xs.nodes_owned_by(1), 5);
    assert_eq!(
        g1.read(XBT_NIL, "/local/domain/1/b/x"),
        Err(StoreError::NotFound)
    );
}

#[test]
fn guest_permission_list_length_is_capped() {
    use hv::env::{Perm, PermKind};
    let xs = XenStore::new();
    xs.introduce_domain(1).unwrap();
    let g1 = xs.connect(1);
    g1.write(XBT_NIL, "/local/domain/1/p", b"").unwrap();
    let mut perms = vec![Perm {
        domid: 1,
        kind: PermKind::None,
    }];
    perms.extend((2..=5).map(|domid| Perm {
        domid,
        kind: PermKind::Read,
    }));
    g1.set_perms(XBT_NIL, "/local/domain/1/p", &perms).unwrap();
    perms.push(Perm {
        domid: 6,
        kind: PermKind::Read,
    });
    assert_eq!(
        g1.set_perms(XBT_NIL, "/local/domain/1/p", &perms),
        Err(StoreError::TooBig)
    );
}
