//! The client's end of the socket: requests matched to replies by `req_id`, watch
//! events queued as they arrive (what Linux's xenbus driver does for
//! `/dev/xen/xenbus` users), descriptors taken from the reply they came with.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::env::{StoreError, WatchEvent};
use crate::wire::socket::SeqPacket;
use crate::wire::{self, Message, Request};

use super::ClientError;

/// How long a request waits for its reply before the daemon is declared hung.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Watch events kept for a reader that does not collect them (oldest dropped beyond).
const WATCH_QUEUE_MAX: usize = 4096;

/// A reply and its descriptors.
pub(crate) struct RawReply {
    pub(crate) msg: Message,
    pub(crate) fds: Vec<OwnedFd>,
}

/// Why a call failed.
#[derive(Debug)]
pub(crate) enum CallError {
    /// The daemon answered `XS_ERROR`.
    Xs(StoreError),
    /// The daemon answered `HV_ERROR`.
    Hv { errno: String, message: String },
    /// The connection is gone or the reply did not come.
    Transport(String),
}

impl From<CallError> for StoreError {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Xs(s) => s,
            CallError::Hv { errno, message } => StoreError::Io(format!("{message} ({errno})")),
            CallError::Transport(t) => StoreError::Io(t),
        }
    }
}

impl From<CallError> for ClientError {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Xs(s) => ClientError::Store(s),
            CallError::Hv { errno, message } => ClientError::Refused { errno, message },
            CallError::Transport(t) => ClientError::Disconnected(t),
        }
    }
}

#[derive(Default)]
struct Calls {
    /// `req_id` → the reply once it came.
    waiting: HashMap<u32, Option<RawReply>>,
    closed: bool,
}

#[derive(Default)]
struct Watches {
    events: VecDeque<WatchEvent>,
    closed: bool,
}

pub(crate) struct Conn {
    sock: SeqPacket,
    path: PathBuf,
    next_req: AtomicU32,
    calls: Mutex<Calls>,
    replied: Condvar,
    watches: Mutex<Watches>,
    watched: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Turn a connect failure into advice.
pub(crate) fn connect_error(path: &Path, e: io::Error) -> ClientError {
    let path = path.to_path_buf();
    match e.kind() {
        io::ErrorKind::NotFound => ClientError::NoDaemon { path },
        io::ErrorKind::ConnectionRefused => ClientError::Stale { path },
        io::ErrorKind::PermissionDenied => ClientError::Denied { path },
        _ => ClientError::Connect { path, source: e },
    }
}

impl Conn {
    /// Connect and start the reader thread.
    pub(crate) fn open(path: &Path) -> Result<Arc<Self>, ClientError> {
        let sock = SeqPacket::connect(path).map_err(|e| connect_error(path, e))?;
        let conn = Arc::new(Self {
            sock,
            path: path.to_path_buf(),
            next_req: AtomicU32::new(1),
            calls: Mutex::new(Calls::default()),
            replied: Condvar::new(),
            watches: Mutex::new(Watches::default()),
            watched: Condvar::new(),
        });
        let c = conn.clone();
        std::thread::Builder::new()
            .name("hv-client-rx".into())
            .spawn(move || c.read_loop())
            .map_err(|e| ClientError::Connect {
                path: path.to_path_buf(),
                source: e,
            })?;
        Ok(conn)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn read_loop(&self) {
        loop {
            let rx = match self.sock.recv(true) {
                Ok(Some(rx)) => rx,
                Ok(None) | Err(_) => break,
            };
            let msg = match Message::decode(&rx.data) {
                Ok(m) if !rx.truncated => m,
                // The daemon is trusted, but a bad packet must still not kill us.
                _ => continue,
            };
            if msg.ty == wire::XS_WATCH_EVENT {
                if let Ok([path, token]) = wire::split_strings(&msg.payload).as_deref() {
                    let mut w = lock(&self.watches);
                    if w.events.len() >= WATCH_QUEUE_MAX {
                        w.events.pop_front();
                    }
                    w.events.push_back(WatchEvent {
                        path: (*path).to_string(),
                        token: (*token).to_string(),
                    });
                    drop(w);
                    self.watched.notify_all();
                }
                continue;
            }
            let mut calls = lock(&self.calls);
            if let Some(slot) = calls.waiting.get_mut(&msg.req_id) {
                if slot.is_none() {
                    *slot = Some(RawReply { msg, fds: rx.fds });
                    drop(calls);
                    self.replied.notify_all();
                }
            }
            // Otherwise: the reply to a one-way message (a port close); its
            // descriptors, if any, are closed here.
        }
        lock(&self.calls).closed = true;
        self.replied.notify_all();
        lock(&self.watches).closed = true;
        self.watched.notify_all();
    }

    fn next_id(&self) -> u32 {
        loop {
            // 0 is the req_id of watch events.
            let id = self.next_req.fetch_add(1, Ordering::Relaxed);
            if id != 0 {
                return id;
            }
        }
    }

    /// Send `req` in transaction `tx` and wait for its reply. `XS_ERROR` and
    /// `HV_ERROR` replies become errors.
    pub(crate) fn call(&self, req: &Request, tx: u32) -> Result<RawReply, CallError> {
        let (ty, payload) = req.encode();
        let id = self.next_id();
        {
            let mut calls = lock(&self.calls);
            if calls.closed {
                return Err(CallError::Transport(self.gone()));
            }
            calls.waiting.insert(id, None);
        }
        let msg = Message {
            ty,
            req_id: id,
            tx_id: tx,
            payload,
        };
        if let Err(e) = self.sock.send_msg(&msg, &[]) {
            lock(&self.calls).waiting.remove(&id);
            return Err(CallError::Transport(format!(
                "sending to the hv daemon at {} failed: {e}",
                self.path.display()
            )));
        }
        let deadline = Instant::now() + CALL_TIMEOUT;
        let mut calls = lock(&self.calls);
        let reply = loop {
            if let Some(Some(_)) = calls.waiting.get(&id) {
                break calls.waiting.remove(&id).flatten();
            }
            if calls.closed {
                calls.waiting.remove(&id);
                return Err(CallError::Transport(self.gone()));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                calls.waiting.remove(&id);
                return Err(CallError::Transport(format!(
                    "the hv daemon did not answer within {CALL_TIMEOUT:?}"
                )));
            }
            calls = self
                .replied
                .wait_timeout(calls, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        };
        drop(calls);
        let reply = reply.ok_or_else(|| CallError::Transport("reply lost".into()))?;
        match reply.msg.ty {
            wire::XS_ERROR => Err(CallError::Xs(wire::store_error_from_payload(
                &reply.msg.payload,
            ))),
            wire::HV_ERROR => {
                let (errno, message) = wire::parse_hv_error(&reply.msg.payload);
                Err(CallError::Hv { errno, message })
            }
            t if t == ty => Ok(reply),
            t => Err(CallError::Transport(format!(
                "reply of type {t:#x} to a request of type {ty:#x}"
            ))),
        }
    }

    /// Send without waiting for the reply (used from `Drop`).
    pub(crate) fn send_oneway(&self, req: &Request) {
        let (ty, payload) = req.encode();
        let _ = self
            .sock
            .send_msg(&Message::new(ty, self.next_id(), payload), &[]);
    }

    /// Next watch event, waiting up to `timeout` (`None`: don't wait).
    pub(crate) fn next_watch(&self, timeout: Option<Duration>) -> Option<WatchEvent> {
        let deadline = timeout.map(|t| Instant::now().checked_add(t));
        let mut w = lock(&self.watches);
        loop {
            if let Some(ev) = w.events.pop_front() {
                return Some(ev);
            }
            if w.closed {
                return None;
            }
            let left = match deadline {
                None => return None,
                Some(None) => Duration::from_secs(3600),
                Some(Some(d)) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return None;
                    }
                    left
                }
            };
            w = self
                .watched
                .wait_timeout(w, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// End the connection (the daemon tears the domain down).
    pub(crate) fn close(&self) {
        self.sock.shutdown();
    }

    pub(crate) fn is_closed(&self) -> bool {
        lock(&self.calls).closed
    }

    /// Wait until the daemon ends the connection; true if it did within `timeout`.
    pub(crate) fn wait_closed(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut calls = lock(&self.calls);
        while !calls.closed {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            calls = self
                .replied
                .wait_timeout(calls, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }

    fn gone(&self) -> String {
        format!(
            "the hv daemon at {} closed the connection (stopped, or the domain was destroyed)",
            self.path.display()
        )
    }
}
