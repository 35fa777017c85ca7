//! A xenstore client speaking `xs_wire.h` over a byte stream: `/dev/xen/xenbus` (the
//! kernel forwards each message to xenstored and queues replies and watch events for
//! this descriptor) or xenstored's unix socket (`/run/xenstored/socket`, dom0 only).
//!
//! A reader thread owns the receiving side: it reassembles messages, hands each reply
//! to the request with the same `req_id`, and queues `XS_WATCH_EVENT`s. Requests may be
//! issued from any thread; each carries its own `req_id`.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::device::{poll_in, Device, Kick};
use super::xs_wire::{self, Decoder, XsMsg, XsRequest, XsType, XSD_SOCKMSG_SIZE};
use super::XenError;
use crate::env::{DomId, Perm, Store, StoreError, TxId, WatchEvent, XBT_NIL};
use crate::store::XENSTORE_PAYLOAD_MAX;

/// The xenbus device of a Linux domain.
pub const XENBUS_PATH: &str = "/dev/xen/xenbus";
/// The same device through xenfs (older setups mount xenfs on /proc/xen).
pub const XENBUS_PROC_PATH: &str = "/proc/xen/xenbus";
/// How long a request waits for its reply by default.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Watch events kept for a consumer that does not collect them; beyond this the
/// oldest are dropped (as xenstored drops events for a slow connection).
const MAX_QUEUED_EVENTS: usize = 4096;

#[derive(Default)]
struct Incoming {
    replies: HashMap<u32, XsMsg>,
    events: VecDeque<WatchEvent>,
    /// Set when the reader stopped: the connection is unusable.
    dead: Option<String>,
}

struct Shared {
    fd: OwnedFd,
    incoming: Mutex<Incoming>,
    cond: Condvar,
    /// Serialises writers so two messages never interleave on the stream.
    write_lock: Mutex<()>,
    next_req_id: AtomicU32,
    stop: Kick,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Incoming> {
        self.incoming.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A xenstore connection implementing [`Store`].
pub struct XenbusStore {
    shared: Arc<Shared>,
    reader: Option<JoinHandle<()>>,
    timeout: Duration,
}

impl core::fmt::Debug for XenbusStore {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("XenbusStore")
            .field("fd", &self.shared.fd.as_raw_fd())
            .finish()
    }
}

impl XenbusStore {
    /// Open `/dev/xen/xenbus` (or `/proc/xen/xenbus`).
    pub fn open() -> Result<XenbusStore, XenError> {
        const HINT: &str = "not running in a Xen domain (the kernel's xenbus driver creates it)";
        let dev = match Device::open(XENBUS_PATH, HINT, false) {
            Err(XenError::Missing { .. }) => {
                Device::open(XENBUS_PROC_PATH, HINT, false).map_err(|_| XenError::Missing {
                    path: XENBUS_PATH,
                    hint: HINT,
                })?
            }
            other => other?,
        };
        Self::from_fd(dev.into_fd())
    }

    /// Connect to xenstored's unix socket (dom0 only), e.g. `/run/xenstored/socket`.
    pub fn connect_socket(path: &str) -> Result<XenbusStore, XenError> {
        let s = std::os::unix::net::UnixStream::connect(path).map_err(|source| XenError::Io {
            op: "connect to the xenstored socket",
            source,
        })?;
        Self::from_fd(OwnedFd::from(s))
    }

    /// A client over any stream descriptor that speaks `xs_wire.h` (a socket to a
    /// xenstored, or a test's fake daemon).
    pub fn from_fd(fd: OwnedFd) -> Result<XenbusStore, XenError> {
        let shared = Arc::new(Shared {
            fd,
            incoming: Mutex::new(Incoming::default()),
            cond: Condvar::new(),
            write_lock: Mutex::new(()),
            next_req_id: AtomicU32::new(1),
            stop: Kick::new()?,
        });
        let s = shared.clone();
        let reader = std::thread::Builder::new()
            .name("xenbus-reader".into())
            .spawn(move || reader_loop(&s))
            .map_err(|source| XenError::Io {
                op: "spawn the xenbus reader thread",
                source,
            })?;
        Ok(XenbusStore {
            shared,
            reader: Some(reader),
            timeout: DEFAULT_REQUEST_TIMEOUT,
        })
    }

    /// Change how long a request waits for its reply.
    pub fn set_request_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// This connection's domain id: the `domid` node under the domain's home
    /// (`/local/domain/<id>/domid`, read by its relative path).
    pub fn domid(&self) -> Result<DomId, StoreError> {
        let v = self.read(XBT_NIL, "domid")?;
        core::str::from_utf8(&v)
            .ok()
            .and_then(|s| s.trim_end_matches('\0').trim().parse().ok())
            .ok_or(StoreError::Invalid)
    }

    /// Send `req` and wait for its reply; an `XS_ERROR` reply becomes the matching
    /// [`StoreError`].
    pub fn request(&self, req: &XsRequest, tx: TxId) -> Result<XsMsg, StoreError> {
        let req_id = self.shared.next_req_id.fetch_add(1, Ordering::Relaxed);
        let bytes = req.to_msg(req_id, tx)?.encode()?;
        {
            let _w = self
                .shared
                .write_lock
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            write_all(self.shared.fd.as_raw_fd(), &bytes)
                .map_err(|e| StoreError::Io(format!("xenstore write: {e}")))?;
        }
        let deadline = Instant::now() + self.timeout;
        let mut inc = self.shared.lock();
        loop {
            if let Some(msg) = inc.replies.remove(&req_id) {
                return check_reply(msg, req.xs_type());
            }
            if let Some(why) = &inc.dead {
                return Err(StoreError::Io(why.clone()));
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return Err(StoreError::Io(format!(
                    "no xenstore reply to {:?} within {:?}",
                    req.xs_type(),
                    self.timeout
                )));
            };
            inc = self
                .shared
                .cond
                .wait_timeout(inc, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    fn expect_ok(&self, req: XsRequest, tx: TxId) -> Result<(), StoreError> {
        self.request(&req, tx).map(|_| ())
    }
}

/// An `XS_ERROR` reply is the request's error; any other type must echo the request's.
fn check_reply(msg: XsMsg, sent: XsType) -> Result<XsMsg, StoreError> {
    if msg.ty == XsType::Error as u32 {
        return Err(xs_wire::error_from_payload(&msg.payload));
    }
    if msg.ty != sent as u32 {
        return Err(StoreError::Io(format!(
            "xenstore replied type {} to {:?}",
            msg.ty, sent
        )));
    }
    Ok(msg)
}

fn write_all(fd: RawFd, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        // SAFETY: writes from a live slice of bytes.len() bytes.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "xenstore closed"));
        }
        bytes = &bytes[n as usize..];
    }
    Ok(())
}

/// Receive side: read, reassemble, dispatch, until stopped or the stream fails.
fn reader_loop(s: &Shared) {
    let fd = s.fd.as_raw_fd();
    let mut decoder = Decoder::new();
    let mut buf = vec![0u8; XSD_SOCKMSG_SIZE + XENSTORE_PAYLOAD_MAX];
    let why = loop {
        match poll_in(&[fd, s.stop.raw()], None) {
            Ok(ready) if ready[1] => return,
            Ok(ready) if !ready[0] => continue,
            Ok(_) => {}
            Err(e) => break format!("xenstore poll: {e}"),
        }
        // SAFETY: reads at most buf.len() bytes into a live buffer.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if matches!(
                err.kind(),
                io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
            ) {
                continue;
            }
            break format!("xenstore read: {err}");
        }
        if n == 0 {
            break "xenstore connection closed".to_string();
        }
        decoder.push(&buf[..n as usize]);
        let mut got = false;
        let failed = loop {
            match decoder.next_msg() {
                Ok(Some(msg)) => {
                    got = true;
                    dispatch(s, msg);
                }
                Ok(None) => break None,
                Err(e) => break Some(format!("xenstore protocol error: {e}")),
            }
        };
        if got {
            s.cond.notify_all();
        }
        if let Some(why) = failed {
            break why;
        }
    };
    log::warn!("{why}");
    s.lock().dead = Some(why);
    s.cond.notify_all();
}

fn dispatch(s: &Shared, msg: XsMsg) {
    let mut inc = s.lock();
    if msg.ty == XsType::WatchEvent as u32 {
        match xs_wire::parse_watch_event(&msg.payload) {
            Ok(ev) => {
                if inc.events.len() >= MAX_QUEUED_EVENTS {
                    inc.events.pop_front();
                    log::warn!("xenstore: watch event queue full, dropped the oldest");
                }
                inc.events.push_back(ev);
            }
            Err(e) => log::warn!("xenstore: ignoring {e}"),
        }
    } else {
        inc.replies.insert(msg.req_id, msg);
    }
}

impl Drop for XenbusStore {
    fn drop(&mut self) {
        self.shared.stop.kick();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

impl Store for XenbusStore {
    fn read(&self, tx: TxId, path: &str) -> Result<Vec<u8>, StoreError> {
        let req = XsRequest::Read { path: path.into() };
        Ok(self.request(&req, tx)?.payload)
    }

    fn write(&self, tx: TxId, path: &str, value: &[u8]) -> Result<(), StoreError> {
        self.expect_ok(
            XsRequest::Write {
                path: path.into(),
                value: value.to_vec(),
            },
            tx,
        )
    }

    fn mkdir(&self, tx: TxId, path: &str) -> Result<(), StoreError> {
        self.expect_ok(XsRequest::Mkdir { path: path.into() }, tx)
    }

    fn rm(&self, tx: TxId, path: &str) -> Result<(), StoreError> {
        self.expect_ok(XsRequest::Rm { path: path.into() }, tx)
    }

    fn directory(&self, tx: TxId, path: &str) -> Result<Vec<String>, StoreError> {
        let req = XsRequest::Directory { path: path.into() };
        Ok(xs_wire::parse_directory(&self.request(&req, tx)?.payload))
    }

    fn get_perms(&self, tx: TxId, path: &str) -> Result<Vec<Perm>, StoreError> {
        let req = XsRequest::GetPerms { path: path.into() };
        Ok(xs_wire::parse_perms(&self.request(&req, tx)?.payload)?)
    }

    fn set_perms(&self, tx: TxId, path: &str, perms: &[Perm]) -> Result<(), StoreError> {
        self.expect_ok(
            XsRequest::SetPerms {
                path: path.into(),
                perms: perms.to_vec(),
            },
            tx,
        )
    }

    fn transaction_start(&self) -> Result<TxId, StoreError> {
        let reply = self.request(&XsRequest::TransactionStart, XBT_NIL)?;
        Ok(xs_wire::parse_tx_id(&reply.payload)?)
    }

    fn transaction_end(&self, tx: TxId, commit: bool) -> Result<(), StoreError> {
        self.expect_ok(XsRequest::TransactionEnd { commit }, tx)
    }

    fn watch(&self, path: &str, token: &str) -> Result<(), StoreError> {
        self.expect_ok(
            XsRequest::Watch {
                path: path.into(),
                token: token.into(),
            },
            XBT_NIL,
        )
    }

    fn unwatch(&self, path: &str, token: &str) -> Result<(), StoreError> {
        self.expect_ok(
            XsRequest::Unwatch {
                path: path.into(),
                token: token.into(),
            },
            XBT_NIL,
        )
    }

    fn next_watch_event(&self, timeout: Option<Duration>) -> Option<WatchEvent> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut inc = self.shared.lock();
        loop {
            if let Some(ev) = inc.events.pop_front() {
                return Some(ev);
            }
            if inc.dead.is_some() {
                return None;
            }
            let left = deadline?.checked_duration_since(Instant::now())?;
            inc = self
                .shared
                .cond
                .wait_timeout(inc, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}
