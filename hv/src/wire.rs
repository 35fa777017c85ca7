//! The `hv` daemon's socket protocol, modelled on Xen's `/dev/xen/xenbus`.
//!
//! Every message is one `SOCK_SEQPACKET` packet: Xen's `struct xsd_sockmsg` header
//! (`type`, `req_id`, `tx_id`, `len`, little-endian `u32`s) followed by `len` payload
//! bytes. The packet boundary is the message boundary, so a peer can never leave the
//! other side half-way through a message, and file descriptors (`SCM_RIGHTS`) travel
//! attached to the one reply they belong to.
//!
//! - Xenstore operations use Xen's `xs_wire.h` types and payloads unchanged
//!   (NUL-separated strings, `"OK\0"` acknowledgements, `XS_ERROR` with an errno name,
//!   `XS_WATCH_EVENT` pushed asynchronously with `req_id` 0).
//! - pvnet's own operations (creating a domain, binding event channels, the toolstack
//!   commands) use types from [`HV_OP_BASE`] up, so they can never collide with a
//!   future `xs_wire.h` type; their errors come back as [`HV_ERROR`] carrying an errno
//!   name and a sentence for the user.
//!
//! A reply carries the type and `req_id` of its request. The decoder here never trusts
//! a length or a count it did not check: [`Message::decode`] and [`Request::decode`]
//! return a [`WireError`] for anything malformed, and never panic.

pub mod socket;

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt::Write as _;

use crate::env::{DomId, Perm, PermKind, Port, StoreError};

/// `sizeof(struct xsd_sockmsg)`.
pub const HEADER_LEN: usize = 16;
/// Largest payload of any message on this socket. Xenstore requests are further held
/// to Xen's `XENSTORE_PAYLOAD_MAX`; only the toolstack's listings need more.
pub const WIRE_PAYLOAD_MAX: usize = 64 * 1024;
/// Largest packet: header plus the largest payload.
pub const PACKET_MAX: usize = HEADER_LEN + WIRE_PAYLOAD_MAX;
/// `XENSTORE_PAYLOAD_MAX`: the limit of a xenstore request's payload.
pub const XENSTORE_PAYLOAD_MAX: usize = 4096;
/// Version spoken by this build; a daemon refuses a client of another version.
pub const PROTOCOL_VERSION: u32 = 1;
/// Most descriptors one message may carry (a domain's three memfds).
pub const MAX_FDS: usize = 3;
/// Longest domain name (`xl`'s names are short; the name appears in listings).
pub const DOMAIN_NAME_MAX: usize = 64;
/// Most vifs a domain may ask for at creation.
pub const VIFS_MAX: u32 = 16;

/// Byte offset, in a domain's event-channel page, of pvnet's `sleeping[]` bitmap: bit
/// `p` set means the guest is (about to be) asleep on port `p`'s kick eventfd, so the
/// hypervisor must write it. It follows Xen's `evtchn_pending[]` and `evtchn_mask[]`
/// (the first 1 KiB, [`event_channel::EvtchnBitmapPage`]). It plays the part of
/// `vcpu_info.evtchn_upcall_mask` inverted: a guest that polls its pending bits gets no
/// system call from the hypervisor. A guest that lies in it only delays its own events.
pub const EVTCHN_SLEEP_BITMAP_OFFSET: usize =
    core::mem::size_of::<event_channel::EvtchnBitmapPage>();

/// `enum xsd_sockmsg_type` (xs_wire.h) and pvnet's extensions.
pub mod op {
    /// `XS_CONTROL` (alias `XS_DEBUG`): not served.
    pub const XS_CONTROL: u32 = 0;
    /// `XS_DIRECTORY`
    pub const XS_DIRECTORY: u32 = 1;
    /// `XS_READ`
    pub const XS_READ: u32 = 2;
    /// `XS_GET_PERMS`
    pub const XS_GET_PERMS: u32 = 3;
    /// `XS_WATCH`
    pub const XS_WATCH: u32 = 4;
    /// `XS_UNWATCH`
    pub const XS_UNWATCH: u32 = 5;
    /// `XS_TRANSACTION_START`
    pub const XS_TRANSACTION_START: u32 = 6;
    /// `XS_TRANSACTION_END`
    pub const XS_TRANSACTION_END: u32 = 7;
    /// `XS_INTRODUCE`: the daemon introduces domains itself; not served.
    pub const XS_INTRODUCE: u32 = 8;
    /// `XS_RELEASE`: not served (closing the socket releases the domain).
    pub const XS_RELEASE: u32 = 9;
    /// `XS_GET_DOMAIN_PATH`
    pub const XS_GET_DOMAIN_PATH: u32 = 10;
    /// `XS_WRITE`
    pub const XS_WRITE: u32 = 11;
    /// `XS_MKDIR`
    pub const XS_MKDIR: u32 = 12;
    /// `XS_RM`
    pub const XS_RM: u32 = 13;
    /// `XS_SET_PERMS`
    pub const XS_SET_PERMS: u32 = 14;
    /// `XS_WATCH_EVENT`: pushed by the daemon, `req_id` 0.
    pub const XS_WATCH_EVENT: u32 = 15;
    /// `XS_ERROR`: payload is the errno name (`"ENOENT\0"`).
    pub const XS_ERROR: u32 = 16;

    /// First pvnet operation ("HV" in the high half).
    pub const HV_OP_BASE: u32 = 0x4856_0000;
    /// Create a domain for this connection and receive its memfds.
    pub const HV_CREATE_DOMAIN: u32 = HV_OP_BASE + 1;
    /// Become the toolstack (Dom0's xenstore view, admin commands).
    pub const HV_ATTACH_TOOLSTACK: u32 = HV_OP_BASE + 2;
    /// `EVTCHNOP_alloc_unbound`; the reply carries the port's kick and send eventfds.
    pub const HV_EVTCHN_ALLOC_UNBOUND: u32 = HV_OP_BASE + 0x10;
    /// `EVTCHNOP_bind_interdomain`; reply as for alloc_unbound.
    pub const HV_EVTCHN_BIND_INTERDOMAIN: u32 = HV_OP_BASE + 0x11;
    /// `EVTCHNOP_close`
    pub const HV_EVTCHN_CLOSE: u32 = HV_OP_BASE + 0x12;
    /// `xl list`
    pub const HV_LIST_DOMAINS: u32 = HV_OP_BASE + 0x20;
    /// `xl destroy`
    pub const HV_DESTROY_DOMAIN: u32 = HV_OP_BASE + 0x21;
    /// `xl network-list`
    pub const HV_NETWORK_LIST: u32 = HV_OP_BASE + 0x22;
    /// `xl network-detach`
    pub const HV_NETWORK_DETACH: u32 = HV_OP_BASE + 0x23;
    /// Error of a pvnet operation: errno name, NUL, message, NUL.
    pub const HV_ERROR: u32 = HV_OP_BASE + 0xFF;
}
pub use op::*;

/// Why a packet or payload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Shorter than the header.
    #[error("message of {0} bytes is shorter than the 16-byte xsd_sockmsg header")]
    Truncated(usize),
    /// `len` disagrees with the packet size.
    #[error("header says {header} payload bytes but the packet holds {actual}")]
    LengthMismatch { header: u32, actual: usize },
    /// Payload over the limit.
    #[error("payload of {0} bytes exceeds the limit")]
    TooBig(usize),
    /// Unknown or unserved message type.
    #[error("unknown message type {0:#x}")]
    UnknownType(u32),
    /// Payload does not have the shape its type requires.
    #[error("malformed payload: {0}")]
    BadPayload(&'static str),
}

/// One message: an `xsd_sockmsg` header and its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// `type`
    pub ty: u32,
    /// `req_id`: echoed in the reply; 0 for watch events.
    pub req_id: u32,
    /// `tx_id`: the xenstore transaction (`XBT_NIL` = 0).
    pub tx_id: u32,
    /// The payload (`len` bytes).
    pub payload: Vec<u8>,
}

impl Message {
    /// A message with an empty transaction id.
    pub fn new(ty: u32, req_id: u32, payload: Vec<u8>) -> Self {
        Self {
            ty,
            req_id,
            tx_id: 0,
            payload,
        }
    }

    /// The packet: header then payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(HEADER_LEN + self.payload.len());
        let len = u32::try_from(self.payload.len()).unwrap_or(u32::MAX);
        for w in [self.ty, self.req_id, self.tx_id, len] {
            v.extend_from_slice(&w.to_le_bytes());
        }
        v.extend_from_slice(&self.payload);
        v
    }

    /// Parse one packet; checks the header against the packet size and the limit.
    pub fn decode(packet: &[u8]) -> Result<Self, WireError> {
        if packet.len() < HEADER_LEN {
            return Err(WireError::Truncated(packet.len()));
        }
        let word = |i: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&packet[i * 4..i * 4 + 4]);
            u32::from_le_bytes(b)
        };
        let (ty, req_id, tx_id, len) = (word(0), word(1), word(2), word(3));
        let actual = packet.len() - HEADER_LEN;
        if len as usize != actual {
            return Err(WireError::LengthMismatch {
                header: len,
                actual,
            });
        }
        if actual > WIRE_PAYLOAD_MAX {
            return Err(WireError::TooBig(actual));
        }
        Ok(Self {
            ty,
            req_id,
            tx_id,
            payload: packet[HEADER_LEN..].to_vec(),
        })
    }
}

/// What a guest asks for when it creates its domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateDomain {
    /// Shown by `hv list`: printable ASCII without spaces, at most [`DOMAIN_NAME_MAX`].
    pub name: String,
    /// RAM in 4 KiB frames.
    pub memory_frames: u32,
    /// Grant-table frames (512 refs each).
    pub grant_frames: u32,
    /// Highest event-channel port.
    pub max_ports: u32,
    /// Vifs the toolstack creates for the domain (devids `0..vifs`).
    pub vifs: u32,
}

/// A client's request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `XS_READ`
    Read { path: String },
    /// `XS_WRITE`
    Write { path: String, value: Vec<u8> },
    /// `XS_MKDIR`
    Mkdir { path: String },
    /// `XS_RM`
    Rm { path: String },
    /// `XS_DIRECTORY`
    Directory { path: String },
    /// `XS_GET_PERMS`
    GetPerms { path: String },
    /// `XS_SET_PERMS`
    SetPerms { path: String, perms: Vec<Perm> },
    /// `XS_WATCH`
    Watch { path: String, token: String },
    /// `XS_UNWATCH`
    Unwatch { path: String, token: String },
    /// `XS_TRANSACTION_START`
    TransactionStart,
    /// `XS_TRANSACTION_END` (`"T"` commits, `"F"` aborts)
    TransactionEnd { commit: bool },
    /// `XS_GET_DOMAIN_PATH`
    GetDomainPath { domid: DomId },
    /// [`HV_CREATE_DOMAIN`]
    CreateDomain(CreateDomain),
    /// [`HV_ATTACH_TOOLSTACK`]
    AttachToolstack,
    /// [`HV_EVTCHN_ALLOC_UNBOUND`]
    EvtchnAllocUnbound { remote: DomId },
    /// [`HV_EVTCHN_BIND_INTERDOMAIN`]
    EvtchnBindInterdomain { remote: DomId, remote_port: Port },
    /// [`HV_EVTCHN_CLOSE`]
    EvtchnClose { port: Port },
    /// [`HV_LIST_DOMAINS`]
    ListDomains,
    /// [`HV_DESTROY_DOMAIN`]
    DestroyDomain { domid: DomId },
    /// [`HV_NETWORK_LIST`]
    NetworkList { domid: DomId },
    /// [`HV_NETWORK_DETACH`]
    NetworkDetach { domid: DomId, devid: u32 },
}

fn push_str0(v: &mut Vec<u8>, s: &str) {
    v.extend_from_slice(s.as_bytes());
    v.push(0);
}

fn u32s(words: &[u32]) -> Vec<u8> {
    let mut v = Vec::with_capacity(words.len() * 4);
    for w in words {
        v.extend_from_slice(&w.to_le_bytes());
    }
    v
}

/// Read `N` little-endian `u32`s; the payload must hold at least that many bytes.
fn read_u32s<const N: usize>(p: &[u8]) -> Result<[u32; N], WireError> {
    if p.len() < N * 4 {
        return Err(WireError::BadPayload("too short for its fixed fields"));
    }
    let mut out = [0u32; N];
    for (i, o) in out.iter_mut().enumerate() {
        let mut b = [0u8; 4];
        b.copy_from_slice(&p[i * 4..i * 4 + 4]);
        *o = u32::from_le_bytes(b);
    }
    Ok(out)
}

fn domid(v: u32) -> Result<DomId, WireError> {
    DomId::try_from(v).map_err(|_| WireError::BadPayload("domid out of range"))
}

/// Split a payload into its NUL-terminated strings; every string must be UTF-8 and
/// the payload must end with a NUL.
pub fn split_strings(p: &[u8]) -> Result<Vec<&str>, WireError> {
    if p.is_empty() {
        return Ok(Vec::new());
    }
    let Some(body) = p.strip_suffix(&[0]) else {
        return Err(WireError::BadPayload("string not NUL-terminated"));
    };
    body.split(|&b| b == 0)
        .map(|s| core::str::from_utf8(s).map_err(|_| WireError::BadPayload("string is not UTF-8")))
        .collect()
}

/// `xs_perm_to_string`: `'n'|'r'|'w'|'b'` followed by the domid.
pub fn perm_to_string(p: &Perm) -> String {
    let c = match p.kind {
        PermKind::None => 'n',
        PermKind::Read => 'r',
        PermKind::Write => 'w',
        PermKind::Both => 'b',
    };
    let mut s = String::new();
    let _ = write!(s, "{c}{}", p.domid);
    s
}

/// `xs_strings_to_perms` for one entry.
pub fn perm_from_str(s: &str) -> Result<Perm, WireError> {
    let mut chars = s.chars();
    let kind = match chars.next() {
        Some('n') => PermKind::None,
        Some('r') => PermKind::Read,
        Some('w') => PermKind::Write,
        Some('b') => PermKind::Both,
        _ => {
            return Err(WireError::BadPayload(
                "permission must start with n, r, w or b",
            ))
        }
    };
    let digits = chars.as_str();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(WireError::BadPayload(
            "permission domid is not a decimal number",
        ));
    }
    let domid: DomId = digits
        .parse()
        .map_err(|_| WireError::BadPayload("permission domid out of range"))?;
    Ok(Perm { domid, kind })
}

/// Is `name` acceptable as a domain name (shown in tab-separated listings)?
pub fn valid_domain_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= DOMAIN_NAME_MAX && name.bytes().all(|b| b.is_ascii_graphic())
}

impl Request {
    /// `(type, payload)` of this request.
    pub fn encode(&self) -> (u32, Vec<u8>) {
        let mut v = Vec::new();
        let ty = match self {
            Self::Read { path } => {
                push_str0(&mut v, path);
                XS_READ
            }
            Self::Write { path, value } => {
                push_str0(&mut v, path);
                v.extend_from_slice(value);
                XS_WRITE
            }
            Self::Mkdir { path } => {
                push_str0(&mut v, path);
                XS_MKDIR
            }
            Self::Rm { path } => {
                push_str0(&mut v, path);
                XS_RM
            }
            Self::Directory { path } => {
                push_str0(&mut v, path);
                XS_DIRECTORY
            }
            Self::GetPerms { path } => {
                push_str0(&mut v, path);
                XS_GET_PERMS
            }
            Self::SetPerms { path, perms } => {
                push_str0(&mut v, path);
                for p in perms {
                    push_str0(&mut v, &perm_to_string(p));
                }
                XS_SET_PERMS
            }
            Self::Watch { path, token } => {
                push_str0(&mut v, path);
                push_str0(&mut v, token);
                XS_WATCH
            }
            Self::Unwatch { path, token } => {
                push_str0(&mut v, path);
                push_str0(&mut v, token);
                XS_UNWATCH
            }
            Self::TransactionStart => {
                v.push(0);
                XS_TRANSACTION_START
            }
            Self::TransactionEnd { commit } => {
                push_str0(&mut v, if *commit { "T" } else { "F" });
                XS_TRANSACTION_END
            }
            Self::GetDomainPath { domid } => {
                push_str0(&mut v, &domid.to_string());
                XS_GET_DOMAIN_PATH
            }
            Self::CreateDomain(c) => {
                v = u32s(&[
                    PROTOCOL_VERSION,
                    c.memory_frames,
                    c.grant_frames,
                    c.max_ports,
                    c.vifs,
                ]);
                v.extend_from_slice(c.name.as_bytes());
                HV_CREATE_DOMAIN
            }
            Self::AttachToolstack => {
                v = u32s(&[PROTOCOL_VERSION]);
                HV_ATTACH_TOOLSTACK
            }
            Self::EvtchnAllocUnbound { remote } => {
                v = u32s(&[u32::from(*remote)]);
                HV_EVTCHN_ALLOC_UNBOUND
            }
            Self::EvtchnBindInterdomain {
                remote,
                remote_port,
            } => {
                v = u32s(&[u32::from(*remote), *remote_port]);
                HV_EVTCHN_BIND_INTERDOMAIN
            }
            Self::EvtchnClose { port } => {
                v = u32s(&[*port]);
                HV_EVTCHN_CLOSE
            }
            Self::ListDomains => HV_LIST_DOMAINS,
            Self::DestroyDomain { domid } => {
                v = u32s(&[u32::from(*domid)]);
                HV_DESTROY_DOMAIN
            }
            Self::NetworkList { domid } => {
                v = u32s(&[u32::from(*domid)]);
                HV_NETWORK_LIST
            }
            Self::NetworkDetach { domid, devid } => {
                v = u32s(&[u32::from(*domid), *devid]);
                HV_NETWORK_DETACH
            }
        };
        (ty, v)
    }

    /// Parse the request of type `ty` from `payload`.
    pub fn decode(ty: u32, payload: &[u8]) -> Result<Self, WireError> {
        let xs = ty < HV_OP_BASE;
        if xs && payload.len() > XENSTORE_PAYLOAD_MAX {
            return Err(WireError::TooBig(payload.len()));
        }
        // One path argument, NUL-terminated, nothing after it.
        let one_path = || -> Result<String, WireError> {
            match split_strings(payload)?.as_slice() {
                [p] => Ok((*p).to_string()),
                _ => Err(WireError::BadPayload(
                    "expected exactly one NUL-terminated path",
                )),
            }
        };
        let path_token = || -> Result<(String, String), WireError> {
            match split_strings(payload)?.as_slice() {
                [p, t] => Ok(((*p).to_string(), (*t).to_string())),
                _ => Err(WireError::BadPayload("expected a path and a token")),
            }
        };
        Ok(match ty {
            XS_READ => Self::Read { path: one_path()? },
            XS_MKDIR => Self::Mkdir { path: one_path()? },
            XS_RM => Self::Rm { path: one_path()? },
            XS_DIRECTORY => Self::Directory { path: one_path()? },
            XS_GET_PERMS => Self::GetPerms { path: one_path()? },
            XS_WRITE => {
                // path NUL value; the value is raw bytes and may hold NULs itself.
                let nul = payload
                    .iter()
                    .position(|&b| b == 0)
                    .ok_or(WireError::BadPayload(
                        "XS_WRITE without a NUL after the path",
                    ))?;
                let path = core::str::from_utf8(&payload[..nul])
                    .map_err(|_| WireError::BadPayload("path is not UTF-8"))?;
                Self::Write {
                    path: path.to_string(),
                    value: payload[nul + 1..].to_vec(),
                }
            }
            XS_SET_PERMS => {
                let parts = split_strings(payload)?;
                let (path, rest) = parts
                    .split_first()
                    .ok_or(WireError::BadPayload("XS_SET_PERMS without a path"))?;
                if rest.is_empty() {
                    return Err(WireError::BadPayload("XS_SET_PERMS without permissions"));
                }
                let perms = rest
                    .iter()
                    .map(|s| perm_from_str(s))
                    .collect::<Result<Vec<_>, _>>()?;
                Self::SetPerms {
                    path: (*path).to_string(),
                    perms,
                }
            }
            XS_WATCH => {
                let (path, token) = path_token()?;
                Self::Watch { path, token }
            }
            XS_UNWATCH => {
                let (path, token) = path_token()?;
                Self::Unwatch { path, token }
            }
            XS_TRANSACTION_START => match payload {
                [] | [0] => Self::TransactionStart,
                _ => {
                    return Err(WireError::BadPayload(
                        "XS_TRANSACTION_START takes an empty string",
                    ))
                }
            },
            XS_TRANSACTION_END => match split_strings(payload)?.as_slice() {
                ["T"] => Self::TransactionEnd { commit: true },
                ["F"] => Self::TransactionEnd { commit: false },
                _ => {
                    return Err(WireError::BadPayload(
                        "XS_TRANSACTION_END takes \"T\" or \"F\"",
                    ))
                }
            },
            XS_GET_DOMAIN_PATH => {
                let s = one_path()?;
                if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(WireError::BadPayload("domid is not a decimal number"));
                }
                let domid = s
                    .parse()
                    .map_err(|_| WireError::BadPayload("domid out of range"))?;
                Self::GetDomainPath { domid }
            }
            HV_CREATE_DOMAIN => {
                let [version, memory_frames, grant_frames, max_ports, vifs] =
                    read_u32s::<5>(payload)?;
                check_version(version)?;
                let name = core::str::from_utf8(&payload[20..])
                    .map_err(|_| WireError::BadPayload("domain name is not UTF-8"))?;
                if !valid_domain_name(name) {
                    return Err(WireError::BadPayload(
                        "domain name must be 1-64 printable ASCII characters without spaces",
                    ));
                }
                if vifs > VIFS_MAX {
                    return Err(WireError::BadPayload("too many vifs (at most 16)"));
                }
                Self::CreateDomain(CreateDomain {
                    name: name.to_string(),
                    memory_frames,
                    grant_frames,
                    max_ports,
                    vifs,
                })
            }
            HV_ATTACH_TOOLSTACK => {
                let [version] = exact::<1>(payload)?;
                check_version(version)?;
                Self::AttachToolstack
            }
            HV_EVTCHN_ALLOC_UNBOUND => {
                let [remote] = exact::<1>(payload)?;
                Self::EvtchnAllocUnbound {
                    remote: domid(remote)?,
                }
            }
            HV_EVTCHN_BIND_INTERDOMAIN => {
                let [remote, remote_port] = exact::<2>(payload)?;
                Self::EvtchnBindInterdomain {
                    remote: domid(remote)?,
                    remote_port,
                }
            }
            HV_EVTCHN_CLOSE => {
                let [port] = exact::<1>(payload)?;
                Self::EvtchnClose { port }
            }
            HV_LIST_DOMAINS => {
                exact::<0>(payload)?;
                Self::ListDomains
            }
            HV_DESTROY_DOMAIN => {
                let [d] = exact::<1>(payload)?;
                Self::DestroyDomain { domid: domid(d)? }
            }
            HV_NETWORK_LIST => {
                let [d] = exact::<1>(payload)?;
                Self::NetworkList { domid: domid(d)? }
            }
            HV_NETWORK_DETACH => {
                let [d, devid] = exact::<2>(payload)?;
                Self::NetworkDetach {
                    domid: domid(d)?,
                    devid,
                }
            }
            other => return Err(WireError::UnknownType(other)),
        })
    }
}

/// Exactly `N` `u32`s and nothing else.
fn exact<const N: usize>(p: &[u8]) -> Result<[u32; N], WireError> {
    if p.len() != N * 4 {
        return Err(WireError::BadPayload(
            "wrong payload size for this message type",
        ));
    }
    read_u32s::<N>(p)
}

fn check_version(v: u32) -> Result<(), WireError> {
    if v == PROTOCOL_VERSION {
        Ok(())
    } else {
        Err(WireError::BadPayload(
            "protocol version mismatch: client and daemon are different pvnet builds",
        ))
    }
}

/// `"OK\0"`: the acknowledgement of a xenstore write-like operation.
pub const XS_OK: &[u8] = b"OK\0";

/// Strings, each followed by a NUL (`XS_DIRECTORY` replies, watch events, perms).
pub fn strings_payload<S: AsRef<str>>(items: &[S]) -> Vec<u8> {
    let mut v = Vec::new();
    for s in items {
        push_str0(&mut v, s.as_ref());
    }
    v
}

/// The `xsd_errors` name of a store error.
pub fn store_errno(e: &StoreError) -> &'static str {
    match e {
        StoreError::NotFound => "ENOENT",
        StoreError::PermissionDenied => "EACCES",
        StoreError::Again => "EAGAIN",
        StoreError::Invalid => "EINVAL",
        StoreError::Exists => "EEXIST",
        StoreError::TooBig => "E2BIG",
        StoreError::Io(_) => "EIO",
    }
}

/// The store error an `XS_ERROR` payload names (unknown names read as `EIO`).
pub fn store_error_from_payload(p: &[u8]) -> StoreError {
    let name = p.strip_suffix(&[0]).unwrap_or(p);
    match name {
        b"ENOENT" => StoreError::NotFound,
        b"EACCES" | b"EPERM" => StoreError::PermissionDenied,
        b"EAGAIN" => StoreError::Again,
        b"EINVAL" => StoreError::Invalid,
        b"EEXIST" | b"EISCONN" => StoreError::Exists,
        b"E2BIG" | b"ENOSPC" | b"ENOMEM" => StoreError::TooBig,
        other => StoreError::Io(String::from_utf8_lossy(other).into_owned()),
    }
}

/// Payload of an [`HV_ERROR`]: errno name, NUL, message for the user, NUL.
pub fn hv_error_payload(errno: &str, message: &str) -> Vec<u8> {
    strings_payload(&[errno, message])
}

/// Parse an [`HV_ERROR`] payload into `(errno, message)`; tolerant of junk, since it
/// only ends up in an error message.
pub fn parse_hv_error(p: &[u8]) -> (String, String) {
    let mut parts = p.split(|&b| b == 0);
    let errno = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let msg = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    (errno, msg)
}

/// The reply to [`Request::CreateDomain`]; three descriptors travel with it: the RAM
/// memfd, the grant-table memfd and the event-channel page memfd, in that order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DomainCreated {
    /// The new domain's id.
    pub domid: DomId,
    /// RAM frames in the first memfd.
    pub memory_frames: u32,
    /// Frames of the grant-table memfd.
    pub grant_frames: u32,
    /// `grant_entry_v1` entries in it.
    pub nr_grant_entries: u32,
    /// Highest event-channel port.
    pub max_ports: u32,
}

impl DomainCreated {
    /// Payload bytes.
    pub fn encode(&self) -> Vec<u8> {
        u32s(&[
            u32::from(self.domid),
            self.memory_frames,
            self.grant_frames,
            self.nr_grant_entries,
            self.max_ports,
        ])
    }
    /// Parse a payload.
    pub fn decode(p: &[u8]) -> Result<Self, WireError> {
        let [d, memory_frames, grant_frames, nr_grant_entries, max_ports] = exact::<5>(p)?;
        Ok(Self {
            domid: domid(d)?,
            memory_frames,
            grant_frames,
            nr_grant_entries,
            max_ports,
        })
    }
}

/// A port number reply (alloc_unbound / bind_interdomain); the kick and send eventfds
/// travel with it, in that order.
pub fn port_payload(port: Port) -> Vec<u8> {
    u32s(&[port])
}

/// Parse a port reply.
pub fn parse_port(p: &[u8]) -> Result<Port, WireError> {
    let [port] = exact::<1>(p)?;
    Ok(port)
}

/// One line of `hv list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainSummary {
    /// `Name`
    pub name: String,
    /// `ID`
    pub domid: DomId,
    /// RAM in 4 KiB frames.
    pub memory_frames: u64,
    /// Vif directories under Dom0's backend tree.
    pub vifs: u32,
    /// Process of the guest (from `SO_PEERCRED`), if one is connected.
    pub pid: Option<u32>,
}

/// One line of `hv network-list`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VifStatus {
    /// `DevId`
    pub devid: u32,
    /// The backend's `mac` key.
    pub mac: String,
    /// Backend xenbus state (`XenbusState*` number).
    pub backend_state: u32,
    /// Frontend xenbus state.
    pub frontend_state: u32,
    /// Host side of the vif (a TAP name), if the backend has one.
    pub host_if: String,
    /// Packets / bytes the guest sent (its TX ring), as netback counts them.
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Packets / bytes delivered to the guest (its RX ring).
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Frames dropped either way.
    pub drops: u64,
    /// Why the backend disabled the vif, if it did.
    pub disabled: String,
    /// Whether the counters come from a running backend (false: xenstore only).
    pub has_counters: bool,
}

/// Tabs and newlines separate fields and records; keep them out of free text.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c == '\t' || c == '\n' || c == '\0' {
                ' '
            } else {
                c
            }
        })
        .collect()
}

fn field<T: core::str::FromStr>(f: Option<&str>) -> Result<T, WireError> {
    f.and_then(|s| s.parse().ok())
        .ok_or(WireError::BadPayload("bad field in listing"))
}

/// Encode a listing: one record per line, fields separated by tabs.
pub fn encode_domains(list: &[DomainSummary]) -> Vec<u8> {
    let mut s = String::new();
    for d in list {
        let pid = d.pid.map_or(String::from("-"), |p| p.to_string());
        let _ = writeln!(
            s,
            "{}\t{}\t{}\t{}\t{}",
            clean(&d.name),
            d.domid,
            d.memory_frames,
            d.vifs,
            pid
        );
    }
    s.into_bytes()
}

/// Parse [`encode_domains`]'s output.
pub fn decode_domains(p: &[u8]) -> Result<Vec<DomainSummary>, WireError> {
    let text =
        core::str::from_utf8(p).map_err(|_| WireError::BadPayload("listing is not UTF-8"))?;
    text.lines()
        .map(|line| {
            let mut f = line.split('\t');
            let name = f.next().unwrap_or_default().to_string();
            let domid = field(f.next())?;
            let memory_frames = field(f.next())?;
            let vifs = field(f.next())?;
            let pid = match f.next() {
                Some("-") => None,
                other => Some(field(other)?),
            };
            Ok(DomainSummary {
                name,
                domid,
                memory_frames,
                vifs,
                pid,
            })
        })
        .collect()
}

/// Encode a vif listing.
pub fn encode_vifs(list: &[VifStatus]) -> Vec<u8> {
    let mut s = String::new();
    for v in list {
        let _ = writeln!(
            s,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            v.devid,
            clean(&v.mac),
            v.backend_state,
            v.frontend_state,
            clean(&v.host_if),
            v.tx_packets,
            v.tx_bytes,
            v.rx_packets,
            v.rx_bytes,
            v.drops,
            u8::from(v.has_counters),
            clean(&v.disabled),
        );
    }
    s.into_bytes()
}

/// Parse [`encode_vifs`]'s output.
pub fn decode_vifs(p: &[u8]) -> Result<Vec<VifStatus>, WireError> {
    let text =
        core::str::from_utf8(p).map_err(|_| WireError::BadPayload("listing is not UTF-8"))?;
    text.lines()
        .map(|line| {
            let mut f = line.split('\t');
            Ok(VifStatus {
                devid: field(f.next())?,
                mac: f.next().unwrap_or_default().to_string(),
                backend_state: field(f.next())?,
                frontend_state: field(f.next())?,
                host_if: f.next().unwrap_or_default().to_string(),
                tx_packets: field(f.next())?,
                tx_bytes: field(f.next())?,
                rx_packets: field(f.next())?,
                rx_bytes: field(f.next())?,
                drops: field(f.next())?,
                has_counters: field::<u8>(f.next())? != 0,
                disabled: f.next().unwrap_or_default().to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout_is_xsd_sockmsg() {
        let m = Message {
            ty: XS_READ,
            req_id: 7,
            tx_id: 3,
            payload: b"/a\0".to_vec(),
        };
        let b = m.encode();
        assert_eq!(&b[..16], &[2, 0, 0, 0, 7, 0, 0, 0, 3, 0, 0, 0, 3, 0, 0, 0]);
        assert_eq!(Message::decode(&b), Ok(m));
    }

    #[test]
    fn length_must_match_packet() {
        let mut b = Message::new(XS_READ, 1, b"/a\0".to_vec()).encode();
        b.push(0);
        assert!(matches!(
            Message::decode(&b),
            Err(WireError::LengthMismatch { .. })
        ));
        assert_eq!(Message::decode(&b[..10]), Err(WireError::Truncated(10)));
    }

    #[test]
    fn write_value_may_contain_nuls_and_perms_round_trip() {
        let r = Request::Write {
            path: "/x".into(),
            value: b"a\0b".to_vec(),
        };
        let (ty, p) = r.encode();
        assert_eq!(Request::decode(ty, &p), Ok(r));
        let perms = vec![
            Perm {
                domid: 3,
                kind: PermKind::None,
            },
            Perm {
                domid: 0,
                kind: PermKind::Both,
            },
        ];
        let r = Request::SetPerms {
            path: "/x".into(),
            perms,
        };
        let (ty, p) = r.encode();
        assert_eq!(p, b"/x\0n3\0b0\0");
        assert_eq!(Request::decode(ty, &p), Ok(r));
    }

    #[test]
    fn hostile_payloads_are_refused() {
        assert!(Request::decode(XS_READ, b"/a").is_err(), "no NUL");
        assert!(Request::decode(XS_READ, b"/a\0/b\0").is_err(), "two paths");
        assert!(Request::decode(XS_SET_PERMS, b"/a\0x1\0").is_err());
        assert!(Request::decode(XS_SET_PERMS, b"/a\0r99999\0").is_err());
        assert!(Request::decode(HV_EVTCHN_CLOSE, &[1, 2, 3]).is_err());
        assert!(Request::decode(HV_DESTROY_DOMAIN, &u32s(&[70000])).is_err());
        assert!(Request::decode(XS_READ, &[b'a'; 5000]).is_err());
        assert_eq!(
            Request::decode(0x1234, &[]),
            Err(WireError::UnknownType(0x1234))
        );
        let mut bad_name = u32s(&[PROTOCOL_VERSION, 1, 1, 1, 0]);
        bad_name.extend_from_slice(b"a b");
        assert!(Request::decode(HV_CREATE_DOMAIN, &bad_name).is_err());
        let old = u32s(&[PROTOCOL_VERSION + 1]);
        assert!(Request::decode(HV_ATTACH_TOOLSTACK, &old).is_err());
    }

    #[test]
    fn listings_round_trip() {
        let d = vec![
            DomainSummary {
                name: "a".into(),
                domid: 1,
                memory_frames: 10,
                vifs: 2,
                pid: Some(42),
            },
            DomainSummary {
                name: "Domain-0".into(),
                domid: 0,
                memory_frames: 64,
                vifs: 0,
                pid: None,
            },
        ];
        assert_eq!(decode_domains(&encode_domains(&d)), Ok(d));
        let v = vec![VifStatus {
            devid: 1,
            mac: "00:16:3e:00:01:01".into(),
            backend_state: 4,
            frontend_state: 4,
            host_if: "vif1.1".into(),
            tx_packets: 5,
            tx_bytes: 6,
            rx_packets: 7,
            rx_bytes: 8,
            drops: 9,
            disabled: "bad\tthing".into(),
            has_counters: true,
        }];
        let back = decode_vifs(&encode_vifs(&v)).expect("decode");
        assert_eq!(back[0].disabled, "bad thing");
        assert_eq!(back[0].rx_bytes, 8);
    }
}
