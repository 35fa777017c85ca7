//! [`Store`] over the daemon's socket: each operation one `xs_wire` request.

use std::sync::Arc;
use std::time::Duration;

use crate::env::{Perm, Store, StoreError, TxId, WatchEvent, XBT_NIL};
use crate::wire::{self, Request};

use super::conn::Conn;

/// A domain's xenstore connection through the `hv` daemon (what `/dev/xen/xenbus`
/// is to a Linux guest's user space).
pub struct RemoteStore {
    conn: Arc<Conn>,
}

impl RemoteStore {
    pub(crate) fn new(conn: Arc<Conn>) -> Self {
        Self { conn }
    }

    fn call(&self, tx: TxId, req: Request) -> Result<Vec<u8>, StoreError> {
        Ok(self.conn.call(&req, tx)?.msg.payload)
    }

    fn strings(p: &[u8]) -> Result<Vec<String>, StoreError> {
        wire::split_strings(p)
            .map(|v| v.into_iter().map(str::to_string).collect())
            .map_err(|e| StoreError::Io(format!("malformed reply from the hv daemon: {e}")))
    }
}

impl Store for RemoteStore {
    fn read(&self, tx: TxId, path: &str) -> Result<Vec<u8>, StoreError> {
        self.call(tx, Request::Read { path: path.into() })
    }

    fn write(&self, tx: TxId, path: &str, value: &[u8]) -> Result<(), StoreError> {
        self.call(
            tx,
            Request::Write {
                path: path.into(),
                value: value.to_vec(),
            },
        )
        .map(drop)
    }

    fn mkdir(&self, tx: TxId, path: &str) -> Result<(), StoreError> {
        self.call(tx, Request::Mkdir { path: path.into() })
            .map(drop)
    }

    fn rm(&self, tx: TxId, path: &str) -> Result<(), StoreError> {
        self.call(tx, Request::Rm { path: path.into() }).map(drop)
    }

    fn directory(&self, tx: TxId, path: &str) -> Result<Vec<String>, StoreError> {
        Self::strings(&self.call(tx, Request::Directory { path: path.into() })?)
    }

    fn get_perms(&self, tx: TxId, path: &str) -> Result<Vec<Perm>, StoreError> {
        let p = self.call(tx, Request::GetPerms { path: path.into() })?;
        Self::strings(&p)?
            .iter()
            .map(|s| {
                wire::perm_from_str(s)
                    .map_err(|e| StoreError::Io(format!("malformed permission in reply: {e}")))
            })
            .collect()
    }

    fn set_perms(&self, tx: TxId, path: &str, perms: &[Perm]) -> Result<(), StoreError> {
        self.call(
            tx,
            Request::SetPerms {
                path: path.into(),
                perms: perms.to_vec(),
            },
        )
        .map(drop)
    }

    fn transaction_start(&self) -> Result<TxId, StoreError> {
        let p = self.call(XBT_NIL, Request::TransactionStart)?;
        match Self::strings(&p)?.as_slice() {
            [id] => id
                .parse()
                .map_err(|_| StoreError::Io("malformed transaction id in reply".into())),
            _ => Err(StoreError::Io("malformed transaction id in reply".into())),
        }
    }

    fn transaction_end(&self, tx: TxId, commit: bool) -> Result<(), StoreError> {
        self.call(tx, Request::TransactionEnd { commit }).map(drop)
    }

    fn watch(&self, path: &str, token: &str) -> Result<(), StoreError> {
        self.call(
            XBT_NIL,
            Request::Watch {
                path: path.into(),
                token: token.into(),
            },
        )
        .map(drop)
    }

    fn unwatch(&self, path: &str, token: &str) -> Result<(), StoreError> {
        self.call(
            XBT_NIL,
            Request::Unwatch {
                path: path.into(),
                token: token.into(),
            },
        )
        .map(drop)
    }

    fn next_watch_event(&self, timeout: Option<Duration>) -> Option<WatchEvent> {
        self.conn.next_watch(timeout)
    }
}
