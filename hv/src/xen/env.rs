//! [`GuestEnv`] and [`BackendEnv`] on a real Xen host's Linux devices.

use std::sync::Arc;

use super::evtchn::{Evtchn, XenChannel};
use super::gntalloc::Gntalloc;
use super::gntdev::{Gntdev, GntdevMapping};
use super::xenbus::XenbusStore;
use super::XenError;
use crate::env::{
    BackendEnv, CopySeg, DomId, EnvError, GrantRef, GrantedPage, GuestEnv, Port, Store,
};

/// A backend (dom0 or a driver domain) on `/dev/xen/{gntdev,evtchn,xenbus}`.
#[derive(Debug)]
pub struct XenBackendEnv {
    domid: DomId,
    gntdev: Arc<Gntdev>,
    evtchn: Evtchn,
    store: XenbusStore,
}

impl XenBackendEnv {
    /// Open the devices a backend needs; the error names the one that is missing.
    pub fn open() -> Result<XenBackendEnv, XenError> {
        let gntdev = Gntdev::open()?;
        let evtchn = Evtchn::open()?;
        let store = XenbusStore::open()?;
        let domid = store.domid()?;
        Ok(XenBackendEnv {
            domid,
            gntdev,
            evtchn,
            store,
        })
    }

    /// The xenstore connection as its concrete type (e.g. for its request timeout).
    pub fn xenbus(&self) -> &XenbusStore {
        &self.store
    }
}

impl BackendEnv for XenBackendEnv {
    type Channel = XenChannel;
    type Mapping = GntdevMapping;

    fn domid(&self) -> DomId {
        self.domid
    }

    fn map_grant(
        &self,
        domid: DomId,
        gref: GrantRef,
        readonly: bool,
    ) -> Result<GntdevMapping, EnvError> {
        self.gntdev.map_grant(domid, gref, readonly)
    }

    fn grant_copy(&self, segs: &mut [CopySeg]) {
        self.gntdev.grant_copy(segs)
    }

    fn bind_interdomain(&self, remote: DomId, remote_port: Port) -> Result<XenChannel, EnvError> {
        self.evtchn.bind_interdomain(remote, remote_port)
    }

    fn store(&self) -> &dyn Store {
        &self.store
    }
}

/// A guest (domU) on `/dev/xen/{gntalloc,evtchn,xenbus}`: a user-space netfront facing
/// the kernel's (or pvnet's) netback.
#[derive(Debug)]
pub struct XenGuestEnv {
    domid: DomId,
    gntalloc: Gntalloc,
    evtchn: Evtchn,
    store: XenbusStore,
}

impl XenGuestEnv {
    /// Open the devices a guest needs; the error names the one that is missing.
    pub fn open() -> Result<XenGuestEnv, XenError> {
        let gntalloc = Gntalloc::open()?;
        let evtchn = Evtchn::open()?;
        let store = XenbusStore::open()?;
        let domid = store.domid()?;
        Ok(XenGuestEnv {
            domid,
            gntalloc,
            evtchn,
            store,
        })
    }

    /// The xenstore connection as its concrete type.
    pub fn xenbus(&self) -> &XenbusStore {
        &self.store
    }
}

impl GuestEnv for XenGuestEnv {
    type Channel = XenChannel;

    fn domid(&self) -> DomId {
        self.domid
    }

    fn grant_pages(
        &self,
        remote: DomId,
        count: usize,
        readonly: bool,
    ) -> Result<Vec<GrantedPage>, EnvError> {
        self.gntalloc.grant_pages(remote, count, readonly)
    }

    fn end_grants(&self, pages: Vec<GrantedPage>) -> Result<(), (EnvError, Vec<GrantedPage>)> {
        self.gntalloc.end_grants(pages)
    }

    fn alloc_unbound(&self, remote: DomId) -> Result<XenChannel, EnvError> {
        self.evtchn.bind_unbound_port(remote)
    }

    fn store(&self) -> &dyn Store {
        &self.store
    }
}
