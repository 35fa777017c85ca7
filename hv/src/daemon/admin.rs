//! The toolstack commands (`xl list`, `xl destroy`, `xl network-list`,
//! `xl network-detach`), run by the daemon for a toolstack connection.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::abi::xenbus::XenbusState;
use crate::embedded::{HvError, DOM0};
use crate::env::{DomId, Store, StoreError, XBT_NIL};
use crate::toolstack::{backend_path, remove_vif};
use crate::wire::{DomainSummary, VifStatus};

use super::conn::OpError;
use super::{lock, Shared};

/// How long `network-detach` waits for the vif to reach Closed before removing its
/// directories anyway (xl waits too, then gives up).
const DETACH_TIMEOUT: Duration = Duration::from_secs(3);
/// How long `destroy` waits for the guest's connection to be torn down.
const DESTROY_TIMEOUT: Duration = Duration::from_secs(5);

fn vif_root(domid: DomId) -> String {
    format!("/local/domain/{DOM0}/backend/vif/{domid}")
}

fn read_text(store: &dyn Store, path: &str) -> Option<String> {
    store
        .read(XBT_NIL, path)
        .ok()
        .map(|v| String::from_utf8_lossy(&v).into_owned())
}

fn read_state(store: &dyn Store, path: &str) -> u32 {
    store
        .read(XBT_NIL, path)
        .ok()
        .and_then(|v| XenbusState::parse(&v))
        .map_or(XenbusState::Unknown as u32, |s| s as u32)
}

fn no_such_domain(domid: DomId) -> OpError {
    OpError::new(
        "ESRCH",
        format!("domain {domid} does not exist: `hv list` shows the running ones"),
    )
}

/// `hv list`.
pub(crate) fn list_domains(shared: &Arc<Shared>, store: &dyn Store) -> Vec<DomainSummary> {
    let hv = &shared.hv;
    let guests = lock(&shared.guests);
    hv.domain_ids()
        .into_iter()
        .filter_map(|domid| {
            let dom = hv.domain(domid)?;
            let vifs = store
                .directory(XBT_NIL, &vif_root(domid))
                .map_or(0, |v| v.len() as u32);
            Some(DomainSummary {
                name: dom.name().to_string(),
                domid,
                memory_frames: dom.memory_frames() as u64,
                vifs,
                pid: guests.get(&domid).map(|g| g.pid),
            })
        })
        .collect()
}

/// `hv destroy DOMID`: end the guest's connection (its process sees end of file) and
/// wait until the daemon has torn the domain down.
pub(crate) fn destroy(shared: &Arc<Shared>, domid: DomId) -> Result<(), OpError> {
    if domid == DOM0 {
        return Err(OpError::new(
            "EPERM",
            "Domain-0 cannot be destroyed (stop the daemon with SIGTERM instead)",
        ));
    }
    let sock = lock(&shared.guests).get(&domid).map(|g| g.sock.clone());
    match sock {
        Some(sock) => {
            sock.shutdown();
            let deadline = Instant::now() + DESTROY_TIMEOUT;
            // Teardown removes the entry last, once everything is released.
            while lock(&shared.guests).contains_key(&domid) {
                if Instant::now() >= deadline {
                    return Err(OpError::new(
                        "ETIMEDOUT",
                        format!("domain {domid} did not go away in time"),
                    ));
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            Ok(())
        }
        // A domain without a process (built in the daemon itself).
        None => match shared.hv.destroy_domain(domid) {
            Ok(()) => Ok(()),
            Err(HvError::NoSuchDomain(_)) => Err(no_such_domain(domid)),
            Err(e) => Err(OpError::new("EINVAL", e.to_string())),
        },
    }
}

/// `hv network-list DOMID`: the vif directories of the domain, with the backend's
/// counters when it runs.
pub(crate) fn network_list(
    shared: &Arc<Shared>,
    store: &dyn Store,
    domid: DomId,
) -> Result<Vec<VifStatus>, OpError> {
    if shared.hv.domain(domid).is_none() {
        return Err(no_such_domain(domid));
    }
    let devids = match store.directory(XBT_NIL, &vif_root(domid)) {
        Ok(v) => v,
        Err(StoreError::NotFound) => Vec::new(),
        Err(e) => return Err(OpError::store(e)),
    };
    let live: Vec<(DomId, VifStatus)> = lock(&shared.backend)
        .as_ref()
        .map(|b| b.vifs())
        .unwrap_or_default();
    let mut out = Vec::new();
    for name in devids {
        let Ok(devid) = name.parse::<u32>() else {
            continue;
        };
        let be = backend_path(DOM0, domid, devid);
        let fe = read_text(store, &format!("{be}/frontend"));
        let mut v = live
            .iter()
            .find(|(d, s)| *d == domid && s.devid == devid)
            .map(|(_, s)| s.clone())
            .unwrap_or_default();
        v.devid = devid;
        v.mac = read_text(store, &format!("{be}/mac")).unwrap_or_default();
        v.backend_state = read_state(store, &format!("{be}/state"));
        v.frontend_state = fe.map_or(XenbusState::Unknown as u32, |fe| {
            read_state(store, &format!("{fe}/state"))
        });
        out.push(v);
    }
    out.sort_by_key(|v| v.devid);
    Ok(out)
}

/// `hv network-detach DOMID DEVID`: close the vif (backend Closing → Closed, the
/// frontend follows), then remove both its directories, as libxl does.
pub(crate) fn network_detach(
    shared: &Arc<Shared>,
    store: &dyn Store,
    domid: DomId,
    devid: u32,
) -> Result<(), OpError> {
    if shared.hv.domain(domid).is_none() {
        return Err(no_such_domain(domid));
    }
    let be = backend_path(DOM0, domid, devid);
    match store.read(XBT_NIL, &format!("{be}/state")) {
        Ok(_) => {}
        Err(StoreError::NotFound) => {
            return Err(OpError::new(
                "ENOENT",
                format!(
                    "domain {domid} has no vif {devid}: `hv network-list {domid}` shows its vifs"
                ),
            ))
        }
        Err(e) => return Err(OpError::store(e)),
    }
    // libxl's device removal: the backend goes offline and closes.
    let _ = store.write(XBT_NIL, &format!("{be}/online"), b"0");
    let backend_runs = match lock(&shared.backend).as_ref() {
        Some(b) => {
            b.close_vif(domid, devid);
            true
        }
        None => false,
    };
    if backend_runs {
        let deadline = Instant::now() + DETACH_TIMEOUT;
        while read_state(store, &format!("{be}/state")) != XenbusState::Closed as u32
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    remove_vif(store, domid, DOM0, devid).map_err(OpError::store)
}
