//! xenstore path validation (`is_valid_nodename`) on every operation.

use hv::env::{Perm, PermKind, Store, StoreError, XBT_NIL};
use hv::store::{XenStore, XENSTORE_ABS_PATH_MAX, XENSTORE_REL_PATH_MAX};

const BAD: &[&str] = &[
    "",
    "relative/path",
    "/trailing/",
    "/double//slash",
    "/space here",
    "/dot.name",
    "/nul\0byte",
    "/ünicode",
    "/semi;colon",
];

#[test]
fn every_operation_rejects_malformed_paths() {
    let xs = XenStore::new();
    let d0 = xs.connect(0);
    let perms = [Perm {
        domid: 0,
        kind: PermKind::None,
    }];
    for &p in BAD {
        assert_eq!(d0.read(XBT_NIL, p), Err(StoreError::Invalid), "read {p:?}");
        assert_eq!(
            d0.write(XBT_NIL, p, b"v"),
            Err(StoreError::Invalid),
            "write {p:?}"
        );
        assert_eq!(
            d0.mkdir(XBT_NIL, p),
            Err(StoreError::Invalid),
            "mkdir {p:?}"
        );
        assert_eq!(d0.rm(XBT_NIL, p), Err(StoreError::Invalid), "rm {p:?}");
        assert_eq!(
            d0.directory(XBT_NIL, p),
            Err(StoreError::Invalid),
            "directory {p:?}"
        );
        assert_eq!(
            d0.get_perms(XBT_NIL, p),
            Err(StoreError::Invalid),
            "get_perms {p:?}"
        );
        assert_eq!(
            d0.set_perms(XBT_NIL, p, &perms),
            Err(StoreError::Invalid),
            "set_perms {p:?}"
        );
        assert_eq!(d0.watch(p, "t"), Err(StoreError::Invalid), "watch {p:?}");
    }
    // Nothing was created by any of them.
    assert_eq!(d0.directory(XBT_NIL, "/").unwrap(), Vec::<String>::new());
}

#[test]
fn allowed_characters_and_root() {
    let xs = XenStore::new();
    let d0 = xs.connect(0);
    d0.write(XBT_NIL, "/Az09-_@", b"ok").unwrap();
    assert_eq!(d0.read(XBT_NIL, "/Az09-_@").unwrap(), b"ok");
    assert_eq!(d0.directory(XBT_NIL, "/").unwrap(), ["Az09-_@".to_owned()]);
    assert_eq!(
        d0.rm(XBT_NIL, "/"),
        Err(StoreError::Invalid),
        "the root cannot go"
    );
    d0.watch("@introduceDomain", "t").unwrap();
    assert_eq!(d0.watch("@", "t"), Err(StoreError::Invalid));
}

#[test]
fn length_limits_follow_xs_wire() {
    let xs = XenStore::new();
    let d0 = xs.connect(0);
    xs.introduce_domain(3).unwrap();
    // Below a domain's home the relative part may be XENSTORE_REL_PATH_MAX long.
    let home = "/local/domain/3/";
    let rel_ok = format!("{home}{}", "a".repeat(XENSTORE_REL_PATH_MAX));
    d0.write(XBT_NIL, &rel_ok, b"").unwrap();
    let rel_bad = format!("{home}{}", "a".repeat(XENSTORE_REL_PATH_MAX + 1));
    assert_eq!(d0.write(XBT_NIL, &rel_bad, b""), Err(StoreError::Invalid));
    // Elsewhere the relative limit applies to the whole name, and nothing may pass
    // XENSTORE_ABS_PATH_MAX.
    let abs_ok = format!("/{}", "b".repeat(XENSTORE_REL_PATH_MAX - 1));
    d0.write(XBT_NIL, &abs_ok, b"").unwrap();
    let abs_bad = format!("/{}", "b".repeat(XENSTORE_ABS_PATH_MAX));
    assert_eq!(d0.write(XBT_NIL, &abs_bad, b""), Err(StoreError::Invalid));
    let components = format!("/{}", vec!["c"; XENSTORE_ABS_PATH_MAX / 2 + 1].join("/"));
    assert!(components.len() > XENSTORE_ABS_PATH_MAX);
    assert_eq!(d0.mkdir(XBT_NIL, &components), Err(StoreError::Invalid));
}
