//! xenstore watches: initial firing, scope, rm, permissions, special events, many
//! concurrent waiters, queue bound and release.

use std::collections::BTreeSet;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use hv::env::{Perm, PermKind, Store, StoreError, WatchEvent, XBT_NIL};
use hv::store::{Quotas, XenStore};

const WAIT: Duration = Duration::from_secs(5);

fn ev(path: &str, token: &str) -> WatchEvent {
    WatchEvent {
        path: path.into(),
        token: token.into(),
    }
}

/// Every event pending right now.
fn drain(c: &dyn Store) -> Vec<WatchEvent> {
    std::iter::from_fn(|| c.next_watch_event(None)).collect()
}

#[test]
fn fires_once_on_register_with_token_echoed() {
    let xs = XenStore::new();
    let d0 = xs.connect(0);
    d0.watch("/not/yet/there", "my-token").unwrap();
    assert_eq!(
        d0.next_watch_event(None),
        Some(ev("/not/yet/there", "my-token"))
    );
    assert_eq!(d0.next_watch_event(None), None, "only one initial event");
    assert_eq!(
        d0.watch("/not/yet/there", "my-token"),
        Err(StoreError::Exists)
    );
    d0.watch("/not/yet/there", "second").unwrap();
    assert_eq!(drain(&d0), [ev("/not/yet/there", "second")]);
}

#[test]
fn fires_on_changes_at_or_below_only() {
    let xs = XenStore::new();
    let d0 = xs.connect(0);
    let w = xs.connect(0);
    w.watch("/a/b", "t").unwrap();
    drain(&w);
    d0.write(XBT_NIL, "/a/b/c/d", b"1").unwrap(); // creates /a/b too: one event
    d0.write(XBT_NIL, "/a/b", b"2").unwrap();
    d0.write(XBT_NIL, "/a/bc", b"sibling with a common prefix")
        .unwrap();
    d0.write(XBT_NIL, "/a", b"parent").unwrap();
    d0.mkdir(XBT_NIL, "/a/b/e").unwrap();
    d0.mkdir(XBT_NIL, "/a/b/e").unwrap(); // exists: no change, no event
    d0.set_perms(
        XBT_NIL,
        "/a/b/e",
        &[Perm {
            domid: 0,
            kind: PermKind::Read,
        }],
    )
    .unwrap();
    assert_eq!(
        drain(&w),
        [
            ev("/a/b/c/d", "t"),
            ev("/a/b", "t"),
            ev("/a/b/e", "t"),
            ev("/a/b/e", "t")
        ]
    );
}

#[test]
fn rm_fires_removed_path_above_and_watched_path_below() {
    let xs = XenStore::new();
    let d0 = xs.connect(0);
    d0.write(XBT_NIL, "/a/b/c", b"").unwrap();
    let w = xs.connect(0);
    for (path, token) in [
        ("/", "root"),
        ("/a", "a"),
        ("/a/b/c", "c"),
        ("/a/b/c/x", "x"),
        ("/z", "z"),
    ] {
        w.watch(path, token).unwrap();
    }
    drain(&w);
    d0.rm(XBT_NIL, "/a/b").unwrap();
    let got: BTreeSet<_> = drain(&w).into_iter().map(|e| (e.path, e.token)).collect();
    let want: BTreeSet<_> = [
        ("/a/b", "root"),
        ("/a/b", "a"),
        ("/a/b/c", "c"),
        ("/a/b/c/x", "x"),
    ]
    .into_iter()
    .map(|(p, t)| (p.to_owned(), t.to_owned()))
    .collect();
    assert_eq!(got, want);
    // Removing something already gone changes nothing and fires nothing.
    d0.rm(XBT_NIL, "/a/b").unwrap();
    assert_eq!(drain(&w), []);
}

#[test]
fn overlapping_watchers_each_get_their_own_tokens() {
    let xs = XenStore::new();
    let d0 = xs.connect(0);
    let conns: Vec<_> = (0..3).map(|_| xs.connect(0)).collect();
    let paths = ["/", "/x", "/x/y"];
    for (c, path) in conns.iter().zip(paths) {
        c.watch(path, &format!("{path}#1")).unwrap();
        c.watch(path, &format!("{path}#2")).unwrap();
        // A second path on the same connection that the write does not touch.
        c.watch("/other", &format!("{path}#other")).unwrap();
        drain(c);
    }
    d0.write(XBT_NIL, "/x/y/z", b"v").unwrap();
    for (c, path) in conns.iter().zip(paths) {
        let got: BTreeSet<_> = drain(c).into_iter().map(|e| (e.path, e.token)).collect();
        let want: BTreeSet<_> = [1, 2]
            .into_iter()
            .map(|i| ("/x/y/z".to_owned(), format!("{path}#{i}")))
            .collect();
        assert_eq!(got, want, "watcher of {path}");
    }
}

#[test]
fn fifty_threads_blocked_on_the_same_path_all_wake() {
    const N: usize = 50;
    let xs = XenStore::new();
    let barrier = Arc::new(Barrier::new(N + 1));
    let handles: Vec<_> = (0..N)
        .map(|i| {
            let conn = xs.connect(0);
            let barrier = barrier.clone();
            thread::spawn(move || {
                let token = format!("w{i}");
                conn.watch("/shared/state", &token).unwrap();
                let initial = conn.next_watch_event(Some(WAIT));
                barrier.wait();
                let fired = conn.next_watch_event(Some(WAIT));
                (token, initial, fired)
            })
        })
        .collect();
    barrier.wait();
    let d0 = xs.connect(0);
    d0.write(XBT_NIL, "/shared/state", b"4").unwrap();
    for h in handles {
        let (token, initial, fired) = h.join().unwrap();
        assert_eq!(initial, Some(ev("/shared/state", &token)));
        assert_eq!(fired, Some(ev("/shared/state", &token)));
    }
}

#[test]
fn events_only_reach_watchers_allowed_to_read() {
    let xs = XenStore::new();
    xs.introduce_domain(1).unwrap();
    xs.introduce_domain(2).unwrap();
    let (d0, g1, g2) = (xs.connect(0), xs.connect(1), xs.connect(2));
    let backend = xs.connect(0);
    g2.watch("/local/domain/1", "spy").unwrap();
    backend.watch("/local/domain/1", "be").unwrap();
    drain(&g2);
    drain(&backend);
    g1.write(XBT_NIL, "/local/domain/1/secret", b"s").unwrap();
    assert_eq!(drain(&g2), [], "guest 2 cannot read guest 1's nodes");
    assert_eq!(drain(&backend), [ev("/local/domain/1/secret", "be")]);
    // Guest 1 shares one node with guest 2: now guest 2 hears of it.
    g1.write(XBT_NIL, "/local/domain/1/shared", b"s").unwrap();
    drain(&backend);
    g1.set_perms(
        XBT_NIL,
        "/local/domain/1/shared",
        &[
            Perm {
                domid: 1,
                kind: PermKind::None,
            },
            Perm {
                domid: 2,
                kind: PermKind::Read,
            },
        ],
    )
    .unwrap();
    assert_eq!(drain(&g2), [ev("/local/domain/1/shared", "spy")]);
    g1.write(XBT_NIL, "/local/domain/1/shared", b"t").unwrap();
    assert_eq!(drain(&g2), [ev("/local/domain/1/shared", "spy")]);
    // Revoking still tells guest 2 once (it could read before), then silence.
    g1.set_perms(
        XBT_NIL,
        "/local/domain/1/shared",
        &[Perm {
            domid: 1,
            kind: PermKind::None,
        }],
    )
    .unwrap();
    assert_eq!(drain(&g2), [ev("/local/domain/1/shared", "spy")]);
    g1.write(XBT_NIL, "/local/domain/1/shared", b"u").unwrap();
    assert_eq!(drain(&g2), []);
    drop(d0);
}

#[test]
fn introduce_and_release_fire_special_watches() {
    let xs = XenStore::new();
    let d0 = xs.connect(0);
    d0.watch("@introduceDomain", "intro").unwrap();
    d0.watch("@releaseDomain", "rel").unwrap();
    xs.introduce_domain(7).unwrap();
    let g7 = xs.connect(7);
    g7.watch("@releaseDomain", "g7").unwrap();
    assert_eq!(
        drain(&g7),
        [ev("@releaseDomain", "g7")],
        "initial event only"
    );
    xs.introduce_domain(8).unwrap();
    xs.release_domain(8);
    assert_eq!(
        drain(&g7),
        [],
        "guests may not see @releaseDomain by default"
    );
    d0.set_perms(
        XBT_NIL,
        "@releaseDomain",
        &[Perm {
            domid: 0,
            kind: PermKind::Read,
        }],
    )
    .unwrap();
    xs.release_domain(9);
    assert_eq!(drain(&g7), [ev("@releaseDomain", "g7")]);
    assert_eq!(
        drain(&d0),
        [
            ev("@introduceDomain", "intro"),
            ev("@releaseDomain", "rel"),
            ev("@introduceDomain", "intro"),
            ev("@introduceDomain", "intro"),
            ev("@releaseDomain", "rel"),
            ev("@releaseDomain", "rel"),
        ]
    );
}

#[test]
fn unwatch_stops_events() {
    let xs = XenStore::new();
    let d0 = xs.connect(0);
    let w = xs.connect(0);
    w.watch("/p", "t").unwrap();
    drain(&w);
    w.unwatch("/p", "t").unwrap();
    assert_eq!(w.unwatch("/p", "t"), Err(StoreError::NotFound));
    d0.write(XBT_NIL, "/p", b"1").unwrap();
    assert_eq!(drain(&w), []);
}

#[test]
fn dropping_a_connection_removes_its_watches() {
    let xs = XenStore::new();
    let d0 = xs.connect(0);
    d0.write(XBT_NIL, "/p", b"0").unwrap();
    d0.set_perms(
        XBT_NIL,
        "/p",
        &[Perm {
            domid: 0,
            kind: PermKind::Read,
        }],
    )
    .unwrap();
    let w = xs.connect(7);
    w.watch("/p", "t").unwrap();
    drop(w);
    // The guest's watch quota is free again: a new connection of domain 7 can register
    // as many watches as the quota allows.
    let w2 = xs.connect(7);
    for i in 0..xs.quotas().max_watches {
        w2.watch("/p", &format!("t{i}")).unwrap();
    }
    d0.write(XBT_NIL, "/p", b"1").unwrap();
    assert_eq!(w2.pending_events(), 2 * xs.quotas().max_watches);
}

#[test]
fn event_queue_is_bounded_and_drops_the_oldest() {
    let xs = XenStore::with_quotas(Quotas {
        max_pending_events: 4,
        ..Quotas::default()
    });
    let d0 = xs.connect(0);
    let w = xs.connect(0);
    w.watch("/q", "t").unwrap(); // the initial event is the oldest
    for i in 0..10 {
        d0.write(XBT_NIL, &format!("/q/{i}"), b"").unwrap();
    }
    assert_eq!(w.pending_events(), 4);
    assert_eq!(w.dropped_events(), 7);
    let paths: Vec<_> = drain(&w).into_iter().map(|e| e.path).collect();
    assert_eq!(paths, ["/q/6", "/q/7", "/q/8", "/q/9"]);
}

#[test]
fn release_wakes_a_blocked_waiter_and_removes_its_watches() {
    let xs = XenStore::new();
    xs.introduce_domain(3).unwrap();
    let g3 = xs.connect(3);
    g3.watch("/local/domain/3", "t").unwrap();
    drain(&g3);
    let waiter = thread::spawn(move || {
        let start = Instant::now();
        let got = g3.next_watch_event(Some(Duration::from_secs(30)));
        (got, start.elapsed())
    });
    thread::sleep(Duration::from_millis(50));
    xs.release_domain(3);
    let (got, waited) = waiter.join().unwrap();
    assert_eq!(got, None);
    assert!(waited < Duration::from_secs(10), "waited {waited:?}");
}

#[test]
fn next_watch_event_times_out() {
    let xs = XenStore::new();
    let w = xs.connect(0);
    let start = Instant::now();
    assert_eq!(w.next_watch_event(Some(Duration::from_millis(30))), None);
    assert!(start.elapsed() >= Duration::from_millis(30));
}

#[test]
fn guest_watch_quota() {
    let xs = XenStore::with_quotas(Quotas {
        max_watches: 3,
        ..Quotas::default()
    });
    let g = xs.connect(4);
    let g_other = xs.connect(4);
    for i in 0..3 {
        g.watch("/w", &i.to_string()).unwrap();
    }
    assert_eq!(
        g_other.watch("/w", "x"),
        Err(StoreError::TooBig),
        "the quota is per domain"
    );
    let d0 = xs.connect(0);
    for i in 0..10 {
        d0.watch("/w", &i.to_string()).unwrap();
    }
}
