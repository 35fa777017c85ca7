//! Xen's xenstore wire protocol (`xen/io/xs_wire.h`), as pure code: message headers,
//! request payloads, a stream decoder, reply parsing and the errno strings of
//! `xsd_errors`. No I/O here; [`super::xenbus`] moves the bytes.
//!
//! A message is a 16-byte [`XsdSockmsg`] header followed by `len` payload bytes
//! (at most [`XENSTORE_PAYLOAD_MAX`]). Paths and other string arguments are
//! NUL-terminated; a `XS_WRITE` value and a `XS_READ` reply are raw bytes. Integers are
//! in the host's byte order (the protocol never crosses an endianness boundary).

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use crate::env::{DomId, Perm, PermKind, StoreError, TxId, WatchEvent};
pub use crate::store::XENSTORE_PAYLOAD_MAX;

/// `sizeof(struct xsd_sockmsg)`.
pub const XSD_SOCKMSG_SIZE: usize = 16;

/// `enum xsd_sockmsg_type`: the message types this crate sends or understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum XsType {
    /// `XS_CONTROL` (also `XS_DEBUG`)
    Control = 0,
    /// `XS_DIRECTORY`
    Directory = 1,
    /// `XS_READ`
    Read = 2,
    /// `XS_GET_PERMS`
    GetPerms = 3,
    /// `XS_WATCH`
    Watch = 4,
    /// `XS_UNWATCH`
    Unwatch = 5,
    /// `XS_TRANSACTION_START`
    TransactionStart = 6,
    /// `XS_TRANSACTION_END`
    TransactionEnd = 7,
    /// `XS_INTRODUCE`
    Introduce = 8,
    /// `XS_RELEASE`
    Release = 9,
    /// `XS_GET_DOMAIN_PATH`
    GetDomainPath = 10,
    /// `XS_WRITE`
    Write = 11,
    /// `XS_MKDIR`
    Mkdir = 12,
    /// `XS_RM`
    Rm = 13,
    /// `XS_SET_PERMS`
    SetPerms = 14,
    /// `XS_WATCH_EVENT`: asynchronous, sent by the daemon when a watch fires.
    WatchEvent = 15,
    /// `XS_ERROR`: the reply to a failed request; payload is an errno name.
    Error = 16,
    /// `XS_IS_DOMAIN_INTRODUCED`
    IsDomainIntroduced = 17,
    /// `XS_RESUME`
    Resume = 18,
    /// `XS_SET_TARGET`
    SetTarget = 19,
    /// `XS_RESET_WATCHES` (`XS_SET_TARGET + 2`; `XS_RESTRICT` was removed)
    ResetWatches = 21,
    /// `XS_DIRECTORY_PART`
    DirectoryPart = 22,
}

impl XsType {
    /// The type for a wire value; `None` for unknown values (`XS_INVALID` included).
    pub fn from_u32(v: u32) -> Option<XsType> {
        use XsType::*;
        Some(match v {
            0 => Control,
            1 => Directory,
            2 => Read,
            3 => GetPerms,
            4 => Watch,
            5 => Unwatch,
            6 => TransactionStart,
            7 => TransactionEnd,
            8 => Introduce,
            9 => Release,
            10 => GetDomainPath,
            11 => Write,
            12 => Mkdir,
            13 => Rm,
            14 => SetPerms,
            15 => WatchEvent,
            16 => Error,
            17 => IsDomainIntroduced,
            18 => Resume,
            19 => SetTarget,
            21 => ResetWatches,
            22 => DirectoryPart,
            _ => return None,
        })
    }
}

/// `struct xsd_sockmsg`: the header of every message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XsdSockmsg {
    /// `type`: an [`XsType`] value (kept raw so unknown types can be reported).
    pub ty: u32,
    /// `req_id`: chosen by the client, echoed in the reply.
    pub req_id: u32,
    /// `tx_id`: transaction id, 0 (`XBT_NIL`) outside a transaction.
    pub tx_id: u32,
    /// `len`: payload bytes that follow.
    pub len: u32,
}

impl XsdSockmsg {
    /// The 16 header bytes, host byte order.
    pub fn to_bytes(&self) -> [u8; XSD_SOCKMSG_SIZE] {
        let mut b = [0u8; XSD_SOCKMSG_SIZE];
        b[0..4].copy_from_slice(&self.ty.to_ne_bytes());
        b[4..8].copy_from_slice(&self.req_id.to_ne_bytes());
        b[8..12].copy_from_slice(&self.tx_id.to_ne_bytes());
        b[12..16].copy_from_slice(&self.len.to_ne_bytes());
        b
    }

    /// Parse 16 header bytes.
    pub fn from_bytes(b: &[u8; XSD_SOCKMSG_SIZE]) -> XsdSockmsg {
        let word = |i: usize| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        XsdSockmsg {
            ty: word(0),
            req_id: word(4),
            tx_id: word(8),
            len: word(12),
        }
    }
}

/// Protocol violations: the stream or a message does not follow `xs_wire.h`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// A payload longer than `XENSTORE_PAYLOAD_MAX` (the daemon's `XENSTORE_ERROR_PROTO`).
    #[error("xenstore payload of {0} bytes exceeds XENSTORE_PAYLOAD_MAX (4096)")]
    PayloadTooLong(usize),
    /// A path or token containing a NUL byte, which would split the argument.
    #[error("xenstore argument contains a NUL byte")]
    EmbeddedNul,
    /// A message type this side does not understand.
    #[error("unknown xenstore message type {0}")]
    UnknownType(u32),
    /// A reply or event whose payload does not have the expected shape.
    #[error("malformed {what} payload")]
    Malformed { what: &'static str },
}

impl From<WireError> for StoreError {
    fn from(e: WireError) -> StoreError {
        match e {
            WireError::PayloadTooLong(_) => StoreError::TooBig,
            WireError::EmbeddedNul => StoreError::Invalid,
            other => StoreError::Io(other.to_string()),
        }
    }
}

/// One whole message: header fields and payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XsMsg {
    pub ty: u32,
    pub req_id: u32,
    pub tx_id: u32,
    pub payload: Vec<u8>,
}

impl XsMsg {
    /// Header + payload bytes, ready to write.
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        if self.payload.len() > XENSTORE_PAYLOAD_MAX {
            return Err(WireError::PayloadTooLong(self.payload.len()));
        }
        let hdr = XsdSockmsg {
            ty: self.ty,
            req_id: self.req_id,
            tx_id: self.tx_id,
            len: self.payload.len() as u32,
        };
        let mut out = Vec::with_capacity(XSD_SOCKMSG_SIZE + self.payload.len());
        out.extend_from_slice(&hdr.to_bytes());
        out.extend_from_slice(&self.payload);
        Ok(out)
    }

    /// The known type of this message.
    pub fn xs_type(&self) -> Result<XsType, WireError> {
        XsType::from_u32(self.ty).ok_or(WireError::UnknownType(self.ty))
    }
}

/// A client request, one variant per operation of [`crate::env::Store`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XsRequest {
    Read { path: String },
    Write { path: String, value: Vec<u8> },
    Mkdir { path: String },
    Rm { path: String },
    Directory { path: String },
    GetPerms { path: String },
    SetPerms { path: String, perms: Vec<Perm> },
    Watch { path: String, token: String },
    Unwatch { path: String, token: String },
    TransactionStart,
    TransactionEnd { commit: bool },
}

/// Append `s` and its terminating NUL, refusing an embedded NUL.
fn push_cstr(out: &mut Vec<u8>, s: &str) -> Result<(), WireError> {
    if s.as_bytes().contains(&0) {
        return Err(WireError::EmbeddedNul);
    }
    out.extend_from_slice(s.as_bytes());
    out.push(0);
    Ok(())
}

impl XsRequest {
    /// The message type of this request.
    pub fn xs_type(&self) -> XsType {
        match self {
            XsRequest::Read { .. } => XsType::Read,
            XsRequest::Write { .. } => XsType::Write,
            XsRequest::Mkdir { .. } => XsType::Mkdir,
            XsRequest::Rm { .. } => XsType::Rm,
            XsRequest::Directory { .. } => XsType::Directory,
            XsRequest::GetPerms { .. } => XsType::GetPerms,
            XsRequest::SetPerms { .. } => XsType::SetPerms,
            XsRequest::Watch { .. } => XsType::Watch,
            XsRequest::Unwatch { .. } => XsType::Unwatch,
            XsRequest::TransactionStart => XsType::TransactionStart,
            XsRequest::TransactionEnd { .. } => XsType::TransactionEnd,
        }
    }

    /// The payload as xenstored expects it.
    pub fn payload(&self) -> Result<Vec<u8>, WireError> {
        let mut p = Vec::new();
        match self {
            XsRequest::Read { path }
            | XsRequest::Mkdir { path }
            | XsRequest::Rm { path }
            | XsRequest::Directory { path }
            | XsRequest::GetPerms { path } => push_cstr(&mut p, path)?,
            // The value is not NUL-terminated: its length is the rest of the payload.
            XsRequest::Write { path, value } => {
                push_cstr(&mut p, path)?;
                p.extend_from_slice(value);
            }
            XsRequest::SetPerms { path, perms } => {
                push_cstr(&mut p, path)?;
                p.extend_from_slice(&format_perms(perms));
            }
            XsRequest::Watch { path, token } | XsRequest::Unwatch { path, token } => {
                push_cstr(&mut p, path)?;
                push_cstr(&mut p, token)?;
            }
            // An empty string argument.
            XsRequest::TransactionStart => p.push(0),
            XsRequest::TransactionEnd { commit } => {
                push_cstr(&mut p, if *commit { "T" } else { "F" })?
            }
        }
        if p.len() > XENSTORE_PAYLOAD_MAX {
            return Err(WireError::PayloadTooLong(p.len()));
        }
        Ok(p)
    }

    /// The whole message for `req_id` within transaction `tx_id`.
    pub fn to_msg(&self, req_id: u32, tx_id: TxId) -> Result<XsMsg, WireError> {
        Ok(XsMsg {
            ty: self.xs_type() as u32,
            req_id,
            tx_id,
            payload: self.payload()?,
        })
    }

    /// Parse a request (the daemon's side; used by tests and fake daemons).
    pub fn from_msg(msg: &XsMsg) -> Result<XsRequest, WireError> {
        let args = || split_cstrs(&msg.payload);
        let one = |what| -> Result<String, WireError> {
            match args().as_slice() {
                [a] => Ok(a.clone()),
                _ => Err(WireError::Malformed { what }),
            }
        };
        let two = |what| -> Result<(String, String), WireError> {
            match args().as_slice() {
                [a, b] => Ok((a.clone(), b.clone())),
                _ => Err(WireError::Malformed { what }),
            }
        };
        Ok(match msg.xs_type()? {
            XsType::Read => XsRequest::Read {
                path: one("XS_READ")?,
            },
            XsType::Mkdir => XsRequest::Mkdir {
                path: one("XS_MKDIR")?,
            },
            XsType::Rm => XsRequest::Rm {
                path: one("XS_RM")?,
            },
            XsType::Directory => XsRequest::Directory {
                path: one("XS_DIRECTORY")?,
            },
            XsType::GetPerms => XsRequest::GetPerms {
                path: one("XS_GET_PERMS")?,
            },
            XsType::Write => {
                let nul = msg
                    .payload
                    .iter()
                    .position(|&b| b == 0)
                    .ok_or(WireError::Malformed { what: "XS_WRITE" })?;
                let path = core::str::from_utf8(&msg.payload[..nul])
                    .map_err(|_| WireError::Malformed { what: "XS_WRITE" })?;
                XsRequest::Write {
                    path: path.to_string(),
                    value: msg.payload[nul + 1..].to_vec(),
                }
            }
            XsType::SetPerms => {
                let a = args();
                let (path, perms) = a.split_first().ok_or(WireError::Malformed {
                    what: "XS_SET_PERMS",
                })?;
                let perms = perms
                    .iter()
                    .map(|s| parse_perm(s))
                    .collect::<Option<Vec<_>>>()
                    .ok_or(WireError::Malformed {
                        what: "XS_SET_PERMS",
                    })?;
                XsRequest::SetPerms {
                    path: path.clone(),
                    perms,
                }
            }
            XsType::Watch => {
                let (path, token) = two("XS_WATCH")?;
                XsRequest::Watch { path, token }
            }
            XsType::Unwatch => {
                let (path, token) = two("XS_UNWATCH")?;
                XsRequest::Unwatch { path, token }
            }
            XsType::TransactionStart => XsRequest::TransactionStart,
            XsType::TransactionEnd => match one("XS_TRANSACTION_END")?.as_str() {
                "T" => XsRequest::TransactionEnd { commit: true },
                "F" => XsRequest::TransactionEnd { commit: false },
                _ => {
                    return Err(WireError::Malformed {
                        what: "XS_TRANSACTION_END",
                    })
                }
            },
            _ => return Err(WireError::UnknownType(msg.ty)),
        })
    }
}

/// Reassembles whole messages from a byte stream (a socket or `/dev/xen/xenbus`,
/// whose reads may split or join messages).
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// Append bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole message, `Ok(None)` if more bytes are needed. A header announcing
    /// more than `XENSTORE_PAYLOAD_MAX` is an error the stream cannot recover from.
    pub fn next_msg(&mut self) -> Result<Option<XsMsg>, WireError> {
        let Some(hdr) = self.buf.first_chunk::<XSD_SOCKMSG_SIZE>() else {
            return Ok(None);
        };
        let hdr = XsdSockmsg::from_bytes(hdr);
        let len = hdr.len as usize;
        if len > XENSTORE_PAYLOAD_MAX {
            return Err(WireError::PayloadTooLong(len));
        }
        if self.buf.len() < XSD_SOCKMSG_SIZE + len {
            return Ok(None);
        }
        let payload = self.buf[XSD_SOCKMSG_SIZE..XSD_SOCKMSG_SIZE + len].to_vec();
        self.buf.drain(..XSD_SOCKMSG_SIZE + len);
        Ok(Some(XsMsg {
            ty: hdr.ty,
            req_id: hdr.req_id,
            tx_id: hdr.tx_id,
            payload,
        }))
    }

    /// Bytes buffered but not yet part of a whole message.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

/// `xsd_errors[]`, in the header's order: errno value (Linux) and name.
pub const XSD_ERRORS: &[(i32, &str)] = &[
    (22, "EINVAL"),
    (13, "EACCES"),
    (17, "EEXIST"),
    (21, "EISDIR"),
    (2, "ENOENT"),
    (12, "ENOMEM"),
    (28, "ENOSPC"),
    (5, "EIO"),
    (39, "ENOTEMPTY"),
    (38, "ENOSYS"),
    (30, "EROFS"),
    (16, "EBUSY"),
    (11, "EAGAIN"),
    (106, "EISCONN"),
    (7, "E2BIG"),
    (1, "EPERM"),
];

/// The [`StoreError`] for an `XS_ERROR` payload (an errno name, NUL-terminated).
pub fn error_from_payload(payload: &[u8]) -> StoreError {
    let name = payload.split(|&b| b == 0).next().unwrap_or_default();
    match name {
        b"ENOENT" => StoreError::NotFound,
        b"EACCES" | b"EPERM" | b"EROFS" => StoreError::PermissionDenied,
        b"EAGAIN" => StoreError::Again,
        b"EINVAL" | b"EISDIR" | b"ENOTEMPTY" => StoreError::Invalid,
        b"EEXIST" => StoreError::Exists,
        b"E2BIG" | b"ENOSPC" | b"ENOMEM" => StoreError::TooBig,
        other => StoreError::Io(alloc::format!(
            "xenstored replied {}",
            String::from_utf8_lossy(other)
        )),
    }
}

/// The errno name a daemon sends for a [`StoreError`] (`XS_ERROR` payload, without NUL).
pub fn error_name(e: &StoreError) -> &'static str {
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

/// Split a payload of NUL-terminated strings (a trailing unterminated piece counts too;
/// an empty payload has no strings). Invalid UTF-8 is replaced, never trusted.
pub fn split_cstrs(payload: &[u8]) -> Vec<String> {
    let body = payload.strip_suffix(&[0]).unwrap_or(payload);
    if payload.is_empty() {
        return Vec::new();
    }
    body.split(|&b| b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// `XS_DIRECTORY` reply: child names, sorted (xenstored's order is not specified).
pub fn parse_directory(payload: &[u8]) -> Vec<String> {
    let mut names: Vec<String> = split_cstrs(payload)
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect();
    names.sort();
    names
}

/// One `xs_permissions` string: a letter (`n`, `r`, `w`, `b`) then the domid.
pub fn parse_perm(s: &str) -> Option<Perm> {
    let mut chars = s.chars();
    let kind = match chars.next()? {
        'n' => PermKind::None,
        'r' => PermKind::Read,
        'w' => PermKind::Write,
        'b' => PermKind::Both,
        _ => return None,
    };
    let domid: DomId = chars.as_str().parse().ok()?;
    Some(Perm { domid, kind })
}

/// `XS_GET_PERMS` reply: the permission list, owner first.
pub fn parse_perms(payload: &[u8]) -> Result<Vec<Perm>, WireError> {
    let perms = split_cstrs(payload)
        .iter()
        .map(|s| parse_perm(s))
        .collect::<Option<Vec<_>>>()
        .ok_or(WireError::Malformed {
            what: "XS_GET_PERMS",
        })?;
    if perms.is_empty() {
        return Err(WireError::Malformed {
            what: "XS_GET_PERMS",
        });
    }
    Ok(perms)
}

/// Permission strings, each NUL-terminated (`XS_SET_PERMS` arguments and the
/// `XS_GET_PERMS` reply).
pub fn format_perms(perms: &[Perm]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in perms {
        out.push(match p.kind {
            PermKind::None => b'n',
            PermKind::Read => b'r',
            PermKind::Write => b'w',
            PermKind::Both => b'b',
        });
        out.extend_from_slice(p.domid.to_string().as_bytes());
        out.push(0);
    }
    out
}

/// `XS_WATCH_EVENT` payload: `path\0token\0` (`XS_WATCH_PATH`, `XS_WATCH_TOKEN`).
pub fn parse_watch_event(payload: &[u8]) -> Result<WatchEvent, WireError> {
    let mut parts = split_cstrs(payload).into_iter();
    match (parts.next(), parts.next()) {
        (Some(path), Some(token)) => Ok(WatchEvent { path, token }),
        _ => Err(WireError::Malformed {
            what: "XS_WATCH_EVENT",
        }),
    }
}

/// `XS_WATCH_EVENT` payload for a fired watch (daemon side).
pub fn watch_event_payload(ev: &WatchEvent) -> Result<Vec<u8>, WireError> {
    let mut p = Vec::new();
    push_cstr(&mut p, &ev.path)?;
    push_cstr(&mut p, &ev.token)?;
    Ok(p)
}

/// `XS_TRANSACTION_START` reply: the transaction id in decimal.
pub fn parse_tx_id(payload: &[u8]) -> Result<TxId, WireError> {
    let s = split_cstrs(payload);
    match s.as_slice() {
        [id] => id.parse().map_err(|_| WireError::Malformed {
            what: "XS_TRANSACTION_START",
        }),
        _ => Err(WireError::Malformed {
            what: "XS_TRANSACTION_START",
        }),
    }
}

/// The "OK" reply of operations that return nothing.
pub const XS_OK: &[u8] = b"OK\0";
