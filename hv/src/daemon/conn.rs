//! One connection: a guest domain's or the toolstack's.
//!
//! The connection thread reads requests and answers each in order; a second thread
//! per connection pushes the connection's fired watches (`XS_WATCH_EVENT`) as they
//! come, as xenstored does. A malformed message gets an error reply and the
//! connection goes on; end of file ends the connection and tears its domain down.

use std::collections::BTreeSet;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use event_channel::EventFd;

use crate::embedded::{DomainConfig, HvError, DOM0};
use crate::env::{DomId, Port, Store, StoreError, WatchEvent};
use crate::store::{domain_path, StoreConnection};
use crate::toolstack::{add_vif, VifConfig};
use crate::wire::socket::{PeerCred, SeqPacket};
use crate::wire::{self, CreateDomain, DomainCreated, Message, Request, WireError, XS_OK};

use super::notify::{GuestKick, SleepBits};
use super::{admin, lock, Shared};

/// What the connection has become.
enum Role {
    /// Nothing yet: it must create a domain or attach as the toolstack.
    New,
    Guest(Guest),
    Toolstack {
        store: Arc<StoreConnection>,
        _watches: WatchPump,
    },
}

struct Guest {
    domid: DomId,
    store: Arc<StoreConnection>,
    sleep: Arc<SleepBits>,
    ports: BTreeSet<Port>,
    watches: WatchPump,
}

/// A reply: the message and the descriptors that go with it.
struct Reply {
    msg: Message,
    fds: Vec<OwnedFd>,
}

/// An error for the client: the errno name and, for pvnet operations, a sentence.
pub(crate) struct OpError {
    errno: &'static str,
    message: String,
}

impl OpError {
    pub(crate) fn new(errno: &'static str, message: impl Into<String>) -> Self {
        Self {
            errno,
            message: message.into(),
        }
    }
    pub(crate) fn store(e: StoreError) -> Self {
        Self {
            errno: wire::store_errno(&e),
            message: e.to_string(),
        }
    }
    fn hv(e: HvError) -> Self {
        let errno = match &e {
            HvError::NoSuchDomain(_) => "ESRCH",
            HvError::NoDomid => "ENOSPC",
            HvError::Config(_) => "EINVAL",
            HvError::Memory(_) => "ENOMEM",
            HvError::Evtchn(ev) => evtchn_errno_name(ev.errno()),
            HvError::Store(s) => wire::store_errno(s),
        };
        Self {
            errno,
            message: e.to_string(),
        }
    }
    fn evtchn(e: event_channel::EvtchnError) -> Self {
        Self {
            errno: evtchn_errno_name(e.errno()),
            message: format!("event channel: {e}"),
        }
    }
    fn io(what: &str, e: std::io::Error) -> Self {
        Self {
            errno: "EIO",
            message: format!("{what}: {e}"),
        }
    }
}

fn evtchn_errno_name(errno: i32) -> &'static str {
    match errno {
        libc::ESRCH => "ESRCH",
        libc::ENOSPC => "ENOSPC",
        libc::EPERM => "EPERM",
        libc::EINVAL => "EINVAL",
        _ => "EIO",
    }
}

/// A successful reply's payload and descriptors.
type Answer = (Vec<u8>, Vec<OwnedFd>);
type OpResult = Result<Answer, OpError>;

fn ok_payload(p: Vec<u8>) -> OpResult {
    Ok((p, Vec::new()))
}

/// Serve one connection until it ends, then tear down what it owned.
pub(crate) fn serve(shared: &Arc<Shared>, sock: Arc<SeqPacket>) {
    let cred = sock.peer_cred().unwrap_or(PeerCred {
        pid: 0,
        uid: u32::MAX,
        gid: u32::MAX,
    });
    let mut role = Role::New;
    loop {
        let rx = match sock.recv(false) {
            Ok(Some(r)) => r,
            Ok(None) => break,
            Err(e) => {
                log::debug!("hv daemon: connection of pid {} failed: {e}", cred.pid);
                break;
            }
        };
        let reply = if rx.truncated {
            // Oversized packet, or descriptors a client has no business sending (the
            // kernel already closed them).
            shared.malformed.fetch_add(1, Ordering::Relaxed);
            let req_id = Message::decode(&rx.data[..rx.data.len().min(wire::HEADER_LEN)])
                .map_or(0, |m| m.req_id);
            let ty = header_type(&rx.data);
            error_reply(
                ty,
                req_id,
                &OpError::new("EINVAL", "message too large or carrying file descriptors"),
            )
        } else {
            match Message::decode(&rx.data) {
                Ok(msg) => handle(shared, &sock, cred, &mut role, msg),
                Err(e) => {
                    shared.malformed.fetch_add(1, Ordering::Relaxed);
                    let req_id = header_word(&rx.data, 1).unwrap_or(0);
                    error_reply(
                        header_type(&rx.data),
                        req_id,
                        &OpError::new("EINVAL", e.to_string()),
                    )
                }
            }
        };
        let fds: Vec<BorrowedFd<'_>> = reply.fds.iter().map(|f| f.as_fd()).collect();
        if let Err(e) = sock.send_msg(&reply.msg, &fds) {
            log::debug!("hv daemon: reply to pid {} failed: {e}", cred.pid);
            break;
        }
        // Our copies of descriptors handed over are closed here (reply dropped).
    }
    teardown(shared, role);
}

fn header_word(data: &[u8], i: usize) -> Option<u32> {
    let b = data.get(i * 4..i * 4 + 4)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn header_type(data: &[u8]) -> u32 {
    header_word(data, 0).unwrap_or(wire::XS_ERROR)
}

/// Error reply in the style of the request's family: `XS_ERROR` with the errno name
/// for xenstore types, `HV_ERROR` with errno and sentence for pvnet's.
fn error_reply(ty: u32, req_id: u32, e: &OpError) -> Reply {
    let msg = if ty >= wire::HV_OP_BASE {
        Message::new(
            wire::HV_ERROR,
            req_id,
            wire::hv_error_payload(e.errno, &e.message),
        )
    } else {
        Message::new(wire::XS_ERROR, req_id, wire::strings_payload(&[e.errno]))
    };
    Reply {
        msg,
        fds: Vec::new(),
    }
}

fn handle(
    shared: &Arc<Shared>,
    sock: &Arc<SeqPacket>,
    cred: PeerCred,
    role: &mut Role,
    msg: Message,
) -> Reply {
    let result = match Request::decode(msg.ty, &msg.payload) {
        Ok(req) => dispatch(shared, sock, cred, role, msg.tx_id, req),
        Err(e) => {
            shared.malformed.fetch_add(1, Ordering::Relaxed);
            let errno = if matches!(e, WireError::UnknownType(_)) {
                "ENOSYS"
            } else {
                "EINVAL"
            };
            Err(OpError::new(errno, e.to_string()))
        }
    };
    match result {
        Ok((payload, fds)) if payload.len() <= wire::WIRE_PAYLOAD_MAX => Reply {
            msg: Message {
                ty: msg.ty,
                req_id: msg.req_id,
                tx_id: msg.tx_id,
                payload,
            },
            fds,
        },
        Ok(_) => error_reply(
            msg.ty,
            msg.req_id,
            &OpError::new("E2BIG", "reply too large"),
        ),
        Err(e) => error_reply(msg.ty, msg.req_id, &e),
    }
}

fn is_xenstore(req: &Request) -> bool {
    matches!(
        req,
        Request::Read { .. }
            | Request::Write { .. }
            | Request::Mkdir { .. }
            | Request::Rm { .. }
            | Request::Directory { .. }
            | Request::GetPerms { .. }
            | Request::SetPerms { .. }
            | Request::Watch { .. }
            | Request::Unwatch { .. }
            | Request::TransactionStart
            | Request::TransactionEnd { .. }
            | Request::GetDomainPath { .. }
    )
}

fn dispatch(
    shared: &Arc<Shared>,
    sock: &Arc<SeqPacket>,
    cred: PeerCred,
    role: &mut Role,
    tx: u32,
    req: Request,
) -> OpResult {
    match role {
        Role::New => match req {
            Request::CreateDomain(c) => {
                let guest = create_domain(shared, sock, cred, &c)?;
                let reply = guest.0;
                *role = Role::Guest(guest.1);
                Ok(reply)
            }
            Request::AttachToolstack => {
                if cred.uid != 0 && cred.uid != shared.daemon_uid {
                    return Err(OpError::new(
                        "EPERM",
                        format!(
                            "uid {} may not use the toolstack commands: run them as root or as the daemon's user (uid {})",
                            cred.uid, shared.daemon_uid
                        ),
                    ));
                }
                let store = Arc::new(shared.hv.store(DOM0).map_err(OpError::hv)?);
                let watches = WatchPump::start(store.clone(), sock.clone());
                *role = Role::Toolstack {
                    store,
                    _watches: watches,
                };
                ok_payload(Vec::new())
            }
            _ => Err(OpError::new(
                "EACCES",
                "create a domain or attach as the toolstack first",
            )),
        },
        Role::Guest(g) => match req {
            r if is_xenstore(&r) => xenstore(&*g.store, tx, r),
            Request::EvtchnAllocUnbound { remote } => {
                let port = shared
                    .hv
                    .event_channels()
                    .alloc_unbound(g.domid, remote)
                    .map_err(OpError::evtchn)?;
                bind_port(shared, g, port)
            }
            Request::EvtchnBindInterdomain {
                remote,
                remote_port,
            } => {
                let port = shared
                    .hv
                    .event_channels()
                    .bind_interdomain(g.domid, remote, remote_port)
                    .map_err(OpError::evtchn)?;
                bind_port(shared, g, port)
            }
            Request::EvtchnClose { port } => {
                if !g.ports.remove(&port) {
                    return Err(OpError::new(
                        "EINVAL",
                        format!("port {port} is not an open port of this domain"),
                    ));
                }
                shared.pump.unregister(g.domid, port);
                shared
                    .hv
                    .event_channels()
                    .close(g.domid, port)
                    .map_err(OpError::evtchn)?;
                ok_payload(Vec::new())
            }
            Request::CreateDomain(_) | Request::AttachToolstack => Err(OpError::new(
                "EISCONN",
                format!("this connection already is domain {}", g.domid),
            )),
            _ => Err(OpError::new(
                "EPERM",
                "toolstack commands are for the toolstack, not for guests",
            )),
        },
        Role::Toolstack { store, .. } => match req {
            r if is_xenstore(&r) => xenstore(&**store, tx, r),
            Request::ListDomains => {
                ok_payload(wire::encode_domains(&admin::list_domains(shared, &**store)))
            }
            Request::DestroyDomain { domid } => {
                admin::destroy(shared, domid).map(|()| (Vec::new(), Vec::new()))
            }
            Request::NetworkList { domid } => admin::network_list(shared, &**store, domid)
                .map(|v| (wire::encode_vifs(&v), Vec::new())),
            Request::NetworkDetach { domid, devid } => {
                admin::network_detach(shared, &**store, domid, devid)
                    .map(|()| (Vec::new(), Vec::new()))
            }
            Request::CreateDomain(_) | Request::AttachToolstack => Err(OpError::new(
                "EISCONN",
                "this connection is already the toolstack's",
            )),
            _ => Err(OpError::new(
                "EINVAL",
                "the toolstack connection has no event channels",
            )),
        },
    }
}

/// Answer one xenstore request as `xs_wire` does.
fn xenstore(store: &dyn Store, tx: u32, req: Request) -> OpResult {
    let r = match req {
        Request::Read { path } => store.read(tx, &path),
        Request::Write { path, value } => store.write(tx, &path, &value).map(|()| XS_OK.to_vec()),
        Request::Mkdir { path } => store.mkdir(tx, &path).map(|()| XS_OK.to_vec()),
        Request::Rm { path } => store.rm(tx, &path).map(|()| XS_OK.to_vec()),
        Request::Directory { path } => store
            .directory(tx, &path)
            .map(|names| wire::strings_payload(&names)),
        Request::GetPerms { path } => store.get_perms(tx, &path).map(|perms| {
            wire::strings_payload(&perms.iter().map(wire::perm_to_string).collect::<Vec<_>>())
        }),
        Request::SetPerms { path, perms } => {
            store.set_perms(tx, &path, &perms).map(|()| XS_OK.to_vec())
        }
        Request::Watch { path, token } => store.watch(&path, &token).map(|()| XS_OK.to_vec()),
        Request::Unwatch { path, token } => store.unwatch(&path, &token).map(|()| XS_OK.to_vec()),
        Request::TransactionStart => store
            .transaction_start()
            .map(|id| wire::strings_payload(&[id.to_string()])),
        Request::TransactionEnd { commit } => {
            store.transaction_end(tx, commit).map(|()| XS_OK.to_vec())
        }
        Request::GetDomainPath { domid } => Ok(wire::strings_payload(&[domain_path(domid)])),
        _ => Err(StoreError::Invalid),
    };
    r.map(|p| (p, Vec::new())).map_err(OpError::store)
}

/// `00:16:3e` (Xen's OUI) + domid + devid, as libxl picks when the config has none.
fn default_mac(domid: DomId, devid: u32) -> [u8; 6] {
    [
        0x00,
        0x16,
        0x3e,
        ((domid >> 8) & 0x7f) as u8,
        domid as u8,
        devid as u8,
    ]
}

fn create_domain(
    shared: &Arc<Shared>,
    sock: &Arc<SeqPacket>,
    cred: PeerCred,
    c: &CreateDomain,
) -> Result<(Answer, Guest), OpError> {
    let lim = shared.cfg.limits;
    if c.memory_frames == 0 || c.memory_frames > lim.max_memory_frames {
        return Err(OpError::new(
            "EINVAL",
            format!("memory must be 1..={} frames", lim.max_memory_frames),
        ));
    }
    if c.grant_frames == 0 || c.grant_frames > lim.max_grant_frames {
        return Err(OpError::new(
            "EINVAL",
            format!("grant frames must be 1..={}", lim.max_grant_frames),
        ));
    }
    if c.max_ports == 0
        || c.max_ports
            > lim
                .max_ports
                .min(event_channel::EVTCHN_2L_NR_CHANNELS as u32 - 1)
    {
        return Err(OpError::new(
            "EINVAL",
            format!("max ports must be 1..={}", lim.max_ports),
        ));
    }
    if lock(&shared.guests).len() >= lim.max_guests {
        return Err(OpError::new(
            "ENOSPC",
            format!(
                "the daemon already runs {} guests (its limit)",
                lim.max_guests
            ),
        ));
    }
    let hv = &shared.hv;
    let cfg = DomainConfig {
        name: c.name.clone(),
        memory_frames: c.memory_frames as usize,
        grant_frames: c.grant_frames,
        max_ports: c.max_ports,
    };
    let domid = hv.create_domain(&cfg).map_err(OpError::hv)?;
    let built = (|| {
        let dom = hv
            .domain(domid)
            .ok_or_else(|| OpError::hv(HvError::NoSuchDomain(domid)))?;
        let store = Arc::new(hv.store(domid).map_err(OpError::hv)?);
        // The toolstack's part of `xl create`: the vif directories netback serves.
        let dom0 = hv.store(DOM0).map_err(OpError::hv)?;
        for devid in 0..c.vifs {
            let vif = VifConfig {
                frontend: domid,
                backend: DOM0,
                devid,
                mac: default_mac(domid, devid),
                rate: None,
            };
            add_vif(&dom0, &vif).map_err(OpError::store)?;
        }
        let fds = [
            dom.ram().fd(),
            dom.gnttab_region().fd(),
            dom.evtchn_region().fd(),
        ]
        .iter()
        .map(|f| f.try_clone())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| OpError::io("duplicating the domain's memfds", e))?;
        let info = DomainCreated {
            domid,
            memory_frames: c.memory_frames,
            grant_frames: c.grant_frames,
            nr_grant_entries: dom.active_grants().nr_entries(),
            max_ports: c.max_ports,
        };
        let sleep = Arc::new(SleepBits::new(dom, c.max_ports as usize + 1));
        let watches = WatchPump::start(store.clone(), sock.clone());
        Ok((
            (info.encode(), fds),
            Guest {
                domid,
                store,
                sleep,
                ports: BTreeSet::new(),
                watches,
            },
        ))
    })();
    match built {
        Ok(r) => {
            let watches = r.1.watches.ctl();
            lock(&shared.guests).insert(
                domid,
                super::GuestEntry {
                    sock: sock.clone(),
                    pid: cred.pid,
                    watches,
                },
            );
            log::info!(
                "hv daemon: domain {domid} ({}) created for pid {}",
                c.name,
                cred.pid
            );
            Ok(r)
        }
        Err(e) => {
            let _ = hv.destroy_domain(domid);
            Err(e)
        }
    }
}

/// Give a freshly allocated or bound `port` its kick and send eventfds.
fn bind_port(shared: &Arc<Shared>, g: &mut Guest, port: Port) -> OpResult {
    let hub = shared.hv.event_channels();
    let setup = || -> Result<Vec<OwnedFd>, OpError> {
        let eventfd = |what| EventFd::new().map_err(|e| OpError::io(what, e));
        let kick = eventfd("kick eventfd")?;
        let send = eventfd("send eventfd")?;
        let dup = |e: &EventFd| {
            e.try_clone_fd()
                .map_err(|e| OpError::io("duplicating an eventfd", e))
        };
        let fds = vec![dup(&kick)?, dup(&send)?];
        hub.set_notifier(
            g.domid,
            port,
            Arc::new(GuestKick::new(g.sleep.clone(), port, kick)),
        )
        .map_err(OpError::evtchn)?;
        shared
            .pump
            .register(g.domid, port, send)
            .map_err(|e| OpError::io("watching the send eventfd", e))?;
        Ok(fds)
    };
    match setup() {
        Ok(fds) => {
            g.ports.insert(port);
            Ok((wire::port_payload(port), fds))
        }
        Err(e) => {
            shared.pump.unregister(g.domid, port);
            let _ = hub.close(g.domid, port);
            Err(e)
        }
    }
}

/// The connection is over: a guest's domain dies with it.
fn teardown(shared: &Arc<Shared>, role: Role) {
    let Role::Guest(g) = role else { return };
    g.watches.stop();
    for &p in &g.ports {
        shared.pump.unregister(g.domid, p);
    }
    match shared.hv.destroy_domain(g.domid) {
        Ok(()) | Err(HvError::NoSuchDomain(_)) => {}
        Err(e) => log::warn!("hv daemon: destroying domain {}: {e}", g.domid),
    }
    // Only now: `hv destroy` and `Server::guests` report the domain gone once it is.
    lock(&shared.guests).remove(&g.domid);
    shared.teardowns.fetch_add(1, Ordering::Relaxed);
    log::info!(
        "hv daemon: domain {} torn down (its connection ended)",
        g.domid
    );
}

/// Pushes a connection's fired watches to its socket.
pub(crate) struct WatchPump {
    ctl: Arc<PumpCtl>,
    thread: Option<JoinHandle<()>>,
}

/// Shared between a watch pump and whoever stops it.
pub(crate) struct PumpCtl {
    stop: AtomicBool,
    store: Arc<StoreConnection>,
}

impl PumpCtl {
    /// Wait (up to `timeout`) until every fired watch of this connection has been
    /// handed to the socket: the daemon's shutdown lets guests see the vifs close
    /// before it disconnects them.
    pub(crate) fn flush(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.store.pending_events() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl WatchPump {
    fn start(store: Arc<StoreConnection>, sock: Arc<SeqPacket>) -> Self {
        let ctl = Arc::new(PumpCtl {
            stop: AtomicBool::new(false),
            store,
        });
        let c = ctl.clone();
        let thread = std::thread::Builder::new()
            .name(format!("hv-watch-d{}", c.store.domid()))
            .spawn(move || {
                while !c.stop.load(Ordering::Acquire) {
                    let started = Instant::now();
                    match c.store.next_watch_event(Some(Duration::from_millis(50))) {
                        Some(WatchEvent { path, token }) => {
                            let m = Message::new(
                                wire::XS_WATCH_EVENT,
                                0,
                                wire::strings_payload(&[path, token]),
                            );
                            if sock.send_msg(&m, &[]).is_err() {
                                return;
                            }
                        }
                        // A released connection returns at once: do not spin on it.
                        None if started.elapsed() < Duration::from_millis(1) => {
                            std::thread::sleep(Duration::from_millis(50));
                        }
                        None => {}
                    }
                }
            })
            .map_err(|e| log::error!("hv daemon: cannot start a watch thread: {e}"))
            .ok();
        Self { ctl, thread }
    }

    pub(crate) fn ctl(&self) -> Arc<PumpCtl> {
        self.ctl.clone()
    }

    fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.ctl.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for WatchPump {
    fn drop(&mut self) {
        self.halt();
    }
}
