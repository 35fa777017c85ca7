//! xenstore transactions: isolation, read-your-writes, abort, conflict detection
//! (`EAGAIN`) and concurrent commits.

use std::sync::{Arc, Barrier};
use std::thread;

use hv::env::{Store, StoreError, WatchEvent, XBT_NIL};
use hv::store::XenStore;
use hv::xenbus::{Transaction, XenbusError};

fn drain(c: &dyn Store) -> Vec<WatchEvent> {
    std::iter::from_fn(|| c.next_watch_event(None)).collect()
}

#[test]
fn reads_its_own_writes_and_hides_them_until_commit() {
    let xs = XenStore::new();
    let d0 = xs.connect(0);
    let other = xs.connect(0);
    d0.write(XBT_NIL, "/a", b"old").unwrap();
    let tx = d0.transaction_start().unwrap();
    assert_ne!(tx, XBT_NIL);
    d0.write(tx, "/a", b"new").unwrap();
    d0.write(tx, "/b/c", b"created").unwrap();
    d0.rm(tx, "/a").unwrap();
    d0.write(tx, "/a", b"newer").unwrap();
    assert_eq!(d0.read(tx, "/a").unwrap(), b"newer");
    assert_eq!(d0.read(tx, "/b/c").unwrap(), b"created");
    assert_eq!(
        d0.directory(tx, "/").unwrap(),
        ["a".to_owned(), "b".to_owned()]
    );
    // Outside the transaction nothing happened yet.
    assert_eq!(other.read(XBT_NIL, "/a").unwrap(), b"old");
    assert_eq!(other.read(XBT_NIL, "/b/c"), Err(StoreError::NotFound));
    assert_eq!(d0.read(XBT_NIL, "/a").unwrap(), b"old");
    d0.transaction_end(tx, true).unwrap();
    assert_eq!(other.read(XBT_NIL, "/a").unwrap(), b"newer");
    assert_eq!(other.read(XBT_NIL, "/b/c").unwrap(), b"created");
    assert_eq!(
        d0.transaction_end(tx, true),
        Err(StoreError::NotFound),
        "ended already"
    );
}

#[test]
fn abort_discards_everything() {
    let xs = XenStore::new();
    let d0 = xs.connect(0);
    d0.write(XBT_NIL, "/keep", b"1").unwrap();
    let before = xs.nodes_owned_by(0);
    let tx = d0.transaction_start().unwrap();
    d0.write(tx, "/keep", b"2").unwrap();
    d0.write(tx, "/gone/deep/node", b"x").unwrap();
    d0.rm(tx, "/keep").unwrap();
    d0.transaction_end(tx, false).unwrap();
    assert_eq!(d0.read(XBT_NIL, "/keep").unwrap(), b"1");
    assert_eq!(d0.read(XBT_NIL, "/gone"), Err(StoreError::NotFound));
    assert_eq!(xs.nodes_owned_by(0), before);
}

#[test]
fn watches_fire_only_at_commit() {
    let xs = XenStore::new();
    let d0 = xs.connect(0);
    let w = xs.connect(0);
    w.watch("/t", "tok").unwrap();
    drain(&w);
    let tx = d0.transaction_start().unwrap();
    d0.write(tx, "/t/a", b"1").unwrap();
    d0.write(tx, "/t/b", b"2").unwrap();
    assert_eq!(drain(&w), [], "nothing before commit");
    d0.transaction_end(tx, true).unwrap();
    let paths: Vec<_> = drain(&w).into_iter().map(|e| e.path).collect();
    assert_eq!(paths, ["/t/a", "/t/b"]);
    let tx = d0.transaction_start().unwrap();
    d0.write(tx, "/t/c", b"3").unwrap();
    d0.transaction_end(tx, false).unwrap();
    assert_eq!(drain(&w), [], "an aborted transaction fires nothing");
}

#[test]
fn conflict_on_a_node_read_then_changed() {
    let xs = XenStore::new();
    let d0 = xs.connect(0);
    let other = xs.connect(0);
    d0.write(XBT_NIL, "/n", b"1").unwrap();
    let tx = d0.transaction_start().unwrap();
    assert_eq!(d0.read(tx, "/n").unwrap(), b"1");
    other.write(XBT_NIL, "/n", b"2").unwrap();
    d0.write(tx, "/elsewhere", b"x").unwrap();
    assert_eq!(d0.transaction_end(tx, true), Err(StoreError::Again));
    assert_eq!(
        d0.read(XBT_NIL, "/elsewhere"),
        Err(StoreError::NotFound),
        "nothing applied"
    );
}

#[test]
fn conflict_on_a_node_changed_before_first_read() {
    // The transaction did not touch /n before the change, but reading it afterwards
    // would mix states from two points in time: xenstored fails it too.
    let xs = XenStore::new();
    let d0 = xs.connect(0);
    let other = xs.connect(0);
    d0.write(XBT_NIL, "/n", b"1").unwrap();
    let tx = d0.transaction_start().unwrap();
    other.write(XBT_NIL, "/n", b"2").unwrap();
    assert_eq!(d0.read(tx, "/n").unwrap(), b"2");
    assert_eq!(d0.transaction_end(tx, true), Err(StoreError::Again));
}

#[test]
fn conflict_on_directory_listing_and_on_absent_nodes() {
    let xs = XenStore::new();
    let d0 = xs.connect(0);
    let other = xs.connect(0);
    d0.mkdir(XBT_NIL, "/dir").unwrap();

    let tx = d0.transaction_start().unwrap();
    assert_eq!(d0.directory(tx, "/dir").unwrap(), Vec::<String>::new());
    other.write(XBT_NIL, "/dir/new", b"").unwrap();
    assert_eq!(
        d0.transaction_end(tx, true),
        Err(StoreError::Again),
        "listing changed"
    );

    let tx = d0.transaction_start().unwrap();
    assert_eq!(d0.read(tx, "/absent"), Err(StoreError::NotFound));
    other.write(XBT_NIL, "/absent", b"now here").unwrap();
    assert_eq!(
        d0.transaction_end(tx, true),
        Err(StoreError::Again),
        "absent node created"
    );

    // Removed after start, then seen as missing.
    other.write(XBT_NIL, "/dir/victim", b"").unwrap();
    let tx = d0.transaction_start().unwrap();
    other.rm(XBT_NIL, "/dir/victim").unwrap();
    assert_eq!(d0.read(tx, "/dir/victim"), Err(StoreError::NotFound));
    assert_eq!(
        d0.transaction_end(tx, true),
        Err(StoreError::Again),
        "node removed"
    );
}

#[test]
fn unrelated_changes_do_not_conflict() {
    let xs = XenStore::new();
    let d0 = xs.connect(0);
    let other = xs.connect(0);
    d0.write(XBT_NIL, "/mine", b"1").unwrap();
    d0.write(XBT_NIL, "/theirs", b"1").unwrap();
    let tx = d0.transaction_start().unwrap();
    assert_eq!(d0.read(tx, "/mine").unwrap(), b"1");
    other.write(XBT_NIL, "/theirs", b"2").unwrap();
    other.write(XBT_NIL, "/brand/new", b"2").unwrap();
    d0.write(tx, "/mine", b"2").unwrap();
    d0.transaction_end(tx, true).unwrap();
    assert_eq!(other.read(XBT_NIL, "/mine").unwrap(), b"2");
}

#[test]
fn transaction_ids_belong_to_their_connection() {
    let xs = XenStore::new();
    let a = xs.connect(0);
    let b = xs.connect(0);
    let ta = a.transaction_start().unwrap();
    let tb = b.transaction_start().unwrap();
    assert_eq!(ta, tb, "ids are per connection");
    a.write(ta, "/from-a", b"").unwrap();
    assert_eq!(
        b.read(tb, "/from-a"),
        Err(StoreError::NotFound),
        "b's transaction is its own"
    );
    assert_eq!(
        b.read(ta + 7, "/"),
        Err(StoreError::NotFound),
        "unknown id: ENOENT"
    );
    b.transaction_end(tb, true).unwrap();
    a.transaction_end(ta, true).unwrap();
    assert_eq!(b.read(XBT_NIL, "/from-a").unwrap(), b"");
}

/// Two threads run a transaction on `path_a` / `path_b` at the same time, both reading
/// and writing before either commits. Returns both commit results.
fn race(
    path_a: &'static str,
    path_b: &'static str,
) -> (Result<(), StoreError>, Result<(), StoreError>) {
    let xs = XenStore::new();
    let d0 = xs.connect(0);
    for p in [path_a, path_b] {
        d0.write(XBT_NIL, p, b"0").unwrap();
    }
    let barrier = Arc::new(Barrier::new(2));
    let run = |path: &'static str| {
        let conn = xs.connect(0);
        let barrier = barrier.clone();
        thread::spawn(move || {
            let tx = conn.transaction_start().unwrap();
            let v: u32 = String::from_utf8(conn.read(tx, path).unwrap())
                .unwrap()
                .parse()
                .unwrap();
            conn.write(tx, path, (v + 1).to_string().as_bytes())
                .unwrap();
            barrier.wait(); // both have read and written
            let r = conn.transaction_end(tx, true);
            barrier.wait(); // both have committed (or failed)
            r
        })
    };
    let (ha, hb) = (run(path_a), run(path_b));
    (ha.join().unwrap(), hb.join().unwrap())
}

#[test]
fn concurrent_transactions_on_the_same_node_exactly_one_commits() {
    let (a, b) = race("/counter", "/counter");
    let oks = [&a, &b].iter().filter(|r| r.is_ok()).count();
    assert_eq!(oks, 1, "{a:?} {b:?}");
    assert!(a == Err(StoreError::Again) || b == Err(StoreError::Again));
}

#[test]
fn concurrent_transactions_on_disjoint_nodes_both_commit() {
    let (a, b) = race("/left/x", "/right/y");
    assert_eq!((a, b), (Ok(()), Ok(())));
}

#[test]
fn retried_increments_from_many_threads_are_serialisable() {
    const THREADS: usize = 4;
    const PER_THREAD: u32 = 50;
    let xs = XenStore::new();
    xs.connect(0).write(XBT_NIL, "/count", b"0").unwrap();
    let handles: Vec<_> = (0..THREADS)
        .map(|_| {
            let conn = xs.connect(0);
            thread::spawn(move || {
                for _ in 0..PER_THREAD {
                    Transaction::run_with_retries(&conn, 1000, |t| -> Result<(), XenbusError> {
                        let v = t.read_u32("/count")?;
                        t.write_fmt("/count", format_args!("{}", v + 1))
                    })
                    .unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let total = xs.connect(0).read(XBT_NIL, "/count").unwrap();
    assert_eq!(total, (THREADS as u32 * PER_THREAD).to_string().as_bytes());
}

#[test]
fn a_failed_operation_inside_a_transaction_leaves_it_intact() {
    let xs = XenStore::new();
    xs.introduce_domain(1).unwrap();
    let g1 = xs.connect(1);
    let tx = g1.transaction_start().unwrap();
    g1.write(tx, "/local/domain/1/ok", b"1").unwrap();
    assert_eq!(
        g1.write(tx, "/tool/denied", b"1"),
        Err(StoreError::PermissionDenied)
    );
    assert_eq!(
        g1.write(tx, "/local/domain/1/big", &[b'x'; 4000]),
        Err(StoreError::TooBig)
    );
    g1.transaction_end(tx, true).unwrap();
    let d0 = xs.connect(0);
    assert_eq!(d0.read(XBT_NIL, "/local/domain/1/ok").unwrap(), b"1");
    assert_eq!(
        d0.read(XBT_NIL, "/local/domain/1/big"),
        Err(StoreError::NotFound)
    );
}
