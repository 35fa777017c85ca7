//! `hv::xen::XenbusStore` end to end over a socket: the client speaks xs_wire to a
//! small daemon (this file) that decodes with the same codec and executes on the
//! embedded xenstore. Replies are written in odd-sized pieces so the client's
//! reassembly is exercised, and watch events interleave with replies.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use hv::env::{Perm, PermKind, Store, StoreError, WatchEvent, XBT_NIL};
use hv::store::{StoreConnection, XenStore};
use hv::xen::xs_wire::*;
use hv::xen::XenbusStore;

const WAIT: Duration = Duration::from_secs(5);

/// Execute one request on the embedded store: (reply type, payload) or the error.
fn execute(c: &StoreConnection, req: XsRequest, tx: u32) -> Result<(XsType, Vec<u8>), StoreError> {
    let ok = |t| Ok((t, XS_OK.to_vec()));
    match req {
        XsRequest::Read { path } => Ok((XsType::Read, c.read(tx, &path)?)),
        XsRequest::Write { path, value } => c.write(tx, &path, &value).and(ok(XsType::Write)),
        XsRequest::Mkdir { path } => c.mkdir(tx, &path).and(ok(XsType::Mkdir)),
        XsRequest::Rm { path } => c.rm(tx, &path).and(ok(XsType::Rm)),
        XsRequest::Directory { path } => {
            // Reverse order on the wire: the client must sort.
            let mut names = c.directory(tx, &path)?;
            names.reverse();
            let mut p = Vec::new();
            for n in names {
                p.extend_from_slice(n.as_bytes());
                p.push(0);
            }
            Ok((XsType::Directory, p))
        }
        XsRequest::GetPerms { path } => {
            Ok((XsType::GetPerms, format_perms(&c.get_perms(tx, &path)?)))
        }
        XsRequest::SetPerms { path, perms } => {
            c.set_perms(tx, &path, &perms).and(ok(XsType::SetPerms))
        }
        XsRequest::Watch { path, token } => c.watch(&path, &token).and(ok(XsType::Watch)),
        XsRequest::Unwatch { path, token } => c.unwatch(&path, &token).and(ok(XsType::Unwatch)),
        XsRequest::TransactionStart => {
            let id = c.transaction_start()?;
            Ok((XsType::TransactionStart, format!("{id}\0").into_bytes()))
        }
        XsRequest::TransactionEnd { commit } => c
            .transaction_end(tx, commit)
            .and(ok(XsType::TransactionEnd)),
    }
}

/// Write a message in two pieces (split inside the header when possible).
fn send(sock: &mut UnixStream, msg: XsMsg) {
    let bytes = msg.encode().unwrap();
    let cut = (msg.req_id as usize % 13 + 1).min(bytes.len());
    let _ = sock.write_all(&bytes[..cut]);
    let _ = sock.flush();
    let _ = sock.write_all(&bytes[cut..]);
}

struct Daemon {
    stop: Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<()>>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// A client for `domid` connected to a fake xenstored on `xs`. With `mute`, the daemon
/// reads requests but never answers.
fn connect(xs: &XenStore, domid: u16, mute: bool) -> (XenbusStore, Daemon) {
    let (client, mut server) = UnixStream::pair().unwrap();
    let conn = xs.connect(domid);
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    let handle = thread::spawn(move || {
        server
            .set_read_timeout(Some(Duration::from_millis(5)))
            .unwrap();
        let mut dec = Decoder::new();
        let mut buf = [0u8; 1000];
        while !st.load(Ordering::SeqCst) {
            while let Some(ev) = conn.next_watch_event(None) {
                let payload = watch_event_payload(&ev).unwrap();
                send(
                    &mut server,
                    XsMsg {
                        ty: XsType::WatchEvent as u32,
                        req_id: 0,
                        tx_id: 0,
                        payload,
                    },
                );
            }
            match server.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => dec.push(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    continue
                }
                Err(_) => return,
            }
            while let Some(msg) = dec.next_msg().unwrap() {
                if mute {
                    continue;
                }
                let result = XsRequest::from_msg(&msg)
                    .map_err(|_| StoreError::Invalid)
                    .and_then(|req| execute(&conn, req, msg.tx_id));
                let (ty, payload) = match result {
                    Ok(r) => r,
                    Err(e) => (XsType::Error, format!("{}\0", error_name(&e)).into_bytes()),
                };
                send(
                    &mut server,
                    XsMsg {
                        ty: ty as u32,
                        req_id: msg.req_id,
                        tx_id: msg.tx_id,
                        payload,
                    },
                );
            }
        }
    });
    let store = XenbusStore::from_fd(OwnedFd::from(client)).unwrap();
    (
        store,
        Daemon {
            stop,
            handle: Some(handle),
        },
    )
}

fn ev(path: &str, token: &str) -> WatchEvent {
    WatchEvent {
        path: path.into(),
        token: token.into(),
    }
}

#[test]
fn read_write_mkdir_rm_directory() {
    let xs = XenStore::new();
    let (c, _d) = connect(&xs, 0, false);
    assert_eq!(c.read(XBT_NIL, "/a/b"), Err(StoreError::NotFound));
    // A value may hold NULs: it is the rest of the payload, not a C string.
    c.write(XBT_NIL, "/a/b", b"x\0y").unwrap();
    assert_eq!(c.read(XBT_NIL, "/a/b").unwrap(), b"x\0y");
    c.write(XBT_NIL, "/a/c", b"").unwrap();
    c.mkdir(XBT_NIL, "/a/0").unwrap();
    assert_eq!(c.directory(XBT_NIL, "/a").unwrap(), vec!["0", "b", "c"]);
    c.rm(XBT_NIL, "/a").unwrap();
    assert_eq!(c.directory(XBT_NIL, "/a"), Err(StoreError::NotFound));
    // Too big is refused before anything is sent; the connection stays usable.
    assert_eq!(
        c.write(XBT_NIL, "/big", &[0u8; 5000]),
        Err(StoreError::TooBig)
    );
    c.write(XBT_NIL, "/after", b"1").unwrap();
}

#[test]
fn permissions_cross_the_wire() {
    let xs = XenStore::new();
    xs.introduce_domain(5).unwrap();
    let (d0, _a) = connect(&xs, 0, false);
    let (guest, _b) = connect(&xs, 5, false);
    d0.write(XBT_NIL, "/private", b"secret").unwrap();
    let perms = [Perm {
        domid: 0,
        kind: PermKind::None,
    }];
    d0.set_perms(XBT_NIL, "/private", &perms).unwrap();
    assert_eq!(d0.get_perms(XBT_NIL, "/private").unwrap(), perms);
    assert_eq!(
        guest.read(XBT_NIL, "/private"),
        Err(StoreError::PermissionDenied)
    );
    let shared = [
        Perm {
            domid: 0,
            kind: PermKind::None,
        },
        Perm {
            domid: 5,
            kind: PermKind::Read,
        },
    ];
    d0.set_perms(XBT_NIL, "/private", &shared).unwrap();
    assert_eq!(guest.read(XBT_NIL, "/private").unwrap(), b"secret");
    assert_eq!(
        guest.write(XBT_NIL, "/private", b"no"),
        Err(StoreError::PermissionDenied)
    );
}

#[test]
fn transactions_commit_and_conflict() {
    let xs = XenStore::new();
    let (a, _da) = connect(&xs, 0, false);
    let (b, _db) = connect(&xs, 0, false);
    a.write(XBT_NIL, "/t/x", b"0").unwrap();
    let tx = a.transaction_start().unwrap();
    assert_ne!(tx, XBT_NIL);
    a.write(tx, "/t/x", b"1").unwrap();
    assert_eq!(a.read(tx, "/t/x").unwrap(), b"1");
    assert_eq!(
        b.read(XBT_NIL, "/t/x").unwrap(),
        b"0",
        "not visible before commit"
    );
    a.transaction_end(tx, true).unwrap();
    assert_eq!(b.read(XBT_NIL, "/t/x").unwrap(), b"1");

    let tx = a.transaction_start().unwrap();
    assert_eq!(a.read(tx, "/t/x").unwrap(), b"1");
    b.write(XBT_NIL, "/t/x", b"2").unwrap();
    a.write(tx, "/t/y", b"3").unwrap();
    assert_eq!(a.transaction_end(tx, true), Err(StoreError::Again));
    assert_eq!(b.read(XBT_NIL, "/t/y"), Err(StoreError::NotFound));

    let tx = a.transaction_start().unwrap();
    a.write(tx, "/t/z", b"4").unwrap();
    a.transaction_end(tx, false).unwrap();
    assert_eq!(
        a.read(XBT_NIL, "/t/z"),
        Err(StoreError::NotFound),
        "aborted"
    );
}

#[test]
fn watch_events_arrive_between_replies() {
    let xs = XenStore::new();
    let (c, _d) = connect(&xs, 0, false);
    let (other, _o) = connect(&xs, 0, false);
    c.watch("/w", "tok").unwrap();
    assert_eq!(
        c.next_watch_event(Some(WAIT)),
        Some(ev("/w", "tok")),
        "fires at registration"
    );
    other.write(XBT_NIL, "/w/k", b"v").unwrap();
    assert_eq!(c.next_watch_event(Some(WAIT)), Some(ev("/w/k", "tok")));
    // Requests keep working while events are queued.
    other.write(XBT_NIL, "/w/k2", b"v").unwrap();
    assert_eq!(c.read(XBT_NIL, "/w/k").unwrap(), b"v");
    assert_eq!(c.next_watch_event(Some(WAIT)), Some(ev("/w/k2", "tok")));
    assert_eq!(c.next_watch_event(None), None, "no wait without a timeout");
    c.unwatch("/w", "tok").unwrap();
    other.write(XBT_NIL, "/w/k3", b"v").unwrap();
    assert_eq!(c.next_watch_event(Some(Duration::from_millis(200))), None);
    assert_eq!(c.unwatch("/w", "tok"), Err(StoreError::NotFound));
}

#[test]
fn concurrent_requests_get_their_own_replies() {
    let xs = XenStore::new();
    let (c, _d) = connect(&xs, 0, false);
    let c = Arc::new(c);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let c = c.clone();
            thread::spawn(move || {
                for i in 0..100 {
                    let path = format!("/conc/{t}/{i}");
                    let value = format!("{t}-{i}");
                    c.write(XBT_NIL, &path, value.as_bytes()).unwrap();
                    assert_eq!(c.read(XBT_NIL, &path).unwrap(), value.as_bytes());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    for t in 0..4 {
        assert_eq!(
            c.directory(XBT_NIL, &format!("/conc/{t}")).unwrap().len(),
            100
        );
    }
}

#[test]
fn silent_daemon_times_out_and_closed_daemon_fails_fast() {
    let xs = XenStore::new();
    let (mut c, d) = connect(&xs, 0, true);
    c.set_request_timeout(Duration::from_millis(300));
    let t0 = Instant::now();
    match c.read(XBT_NIL, "/x") {
        Err(StoreError::Io(msg)) => assert!(msg.contains("no xenstore reply"), "{msg}"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(t0.elapsed() < Duration::from_secs(3));
    drop(d); // the daemon thread ends and closes its end
    c.set_request_timeout(WAIT);
    let t0 = Instant::now();
    assert!(matches!(c.read(XBT_NIL, "/x"), Err(StoreError::Io(_))));
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "a closed connection must not wait out the timeout"
    );
    assert_eq!(c.next_watch_event(Some(WAIT)), None);
}

#[test]
fn domid_reads_the_relative_domid_node() {
    // The fake daemon does not resolve relative paths; a real xenstored answers
    // "domid" from /local/domain/<id>/domid. Here the node is missing.
    let xs = XenStore::new();
    let (c, _d) = connect(&xs, 0, false);
    assert!(c.domid().is_err());
}
