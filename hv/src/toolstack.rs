//! What Xen's toolstack (libxl) writes to the xenstore to create and remove a vif.
//!
//! `xl create` / `xl network-attach` write a backend directory under the backend domain
//! and a frontend directory under the guest, each readable by the other end, both in
//! `XenbusStateInitialising`. The drivers take it from there.

use alloc::format;
use alloc::string::String;

use crate::abi::xenbus::XenbusState;
use crate::env::{DomId, Perm, PermKind, Store, StoreError};

/// A vif to create: guest `frontend`, served by `backend`, device index `devid`.
#[derive(Debug, Clone)]
pub struct VifConfig {
    pub frontend: DomId,
    pub backend: DomId,
    pub devid: u32,
    /// The guest's MAC address.
    pub mac: [u8; 6],
    /// Optional `rate` key: "bytes/usec" credit as libxl writes it (e.g. "125000,50000").
    pub rate: Option<String>,
}

/// `/local/domain/<frontend>/device/vif/<devid>`
pub fn frontend_path(frontend: DomId, devid: u32) -> String {
    format!("/local/domain/{frontend}/device/vif/{devid}")
}

/// `/local/domain/<backend>/backend/vif/<frontend>/<devid>`
pub fn backend_path(backend: DomId, frontend: DomId, devid: u32) -> String {
    format!("/local/domain/{backend}/backend/vif/{frontend}/{devid}")
}

/// Format a MAC address as the xenstore `mac` key holds it (`00:16:3e:..`).
pub fn format_mac(mac: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]
    )
}

/// Parse a `mac` key; `None` unless it is six colon-separated hex octets.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.trim().split(':');
    for b in mac.iter_mut() {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// Write both directories of a new vif in one transaction (must run as Dom0 / the
/// toolstack's connection). Retries on transaction conflict.
pub fn add_vif(store: &dyn Store, cfg: &VifConfig) -> Result<(), StoreError> {
    let fe = frontend_path(cfg.frontend, cfg.devid);
    let be = backend_path(cfg.backend, cfg.frontend, cfg.devid);
    let mac = format_mac(&cfg.mac);
    let initialising = format!("{}", XenbusState::Initialising as u32);
    for _ in 0..16 {
        let tx = store.transaction_start()?;
        let res = (|| {
            let w = |p: &str, v: &str| store.write(tx, p, v.as_bytes());
            // Frontend directory: owned by the guest, readable by the backend.
            store.mkdir(tx, &fe)?;
            store.set_perms(
                tx,
                &fe,
                &[
                    Perm {
                        domid: cfg.frontend,
                        kind: PermKind::None,
                    },
                    Perm {
                        domid: cfg.backend,
                        kind: PermKind::Read,
                    },
                ],
            )?;
            w(&format!("{fe}/backend"), &be)?;
            w(&format!("{fe}/backend-id"), &format!("{}", cfg.backend))?;
            w(&format!("{fe}/handle"), &format!("{}", cfg.devid))?;
            w(&format!("{fe}/mac"), &mac)?;
            w(&format!("{fe}/state"), &initialising)?;
            // Backend directory: owned by the backend, readable by the guest.
            store.mkdir(tx, &be)?;
            store.set_perms(
                tx,
                &be,
                &[
                    Perm {
                        domid: cfg.backend,
                        kind: PermKind::None,
                    },
                    Perm {
                        domid: cfg.frontend,
                        kind: PermKind::Read,
                    },
                ],
            )?;
            w(&format!("{be}/frontend"), &fe)?;
            w(&format!("{be}/frontend-id"), &format!("{}", cfg.frontend))?;
            w(&format!("{be}/handle"), &format!("{}", cfg.devid))?;
            w(&format!("{be}/mac"), &mac)?;
            w(&format!("{be}/online"), "1")?;
            if let Some(rate) = &cfg.rate {
                w(&format!("{be}/rate"), rate)?;
            }
            w(&format!("{be}/state"), &initialising)?;
            Ok(())
        })();
        match res {
            Ok(()) => match store.transaction_end(tx, true) {
                Ok(()) => return Ok(()),
                Err(StoreError::Again) => continue,
                Err(e) => return Err(e),
            },
            Err(e) => {
                let _ = store.transaction_end(tx, false);
                return Err(e);
            }
        }
    }
    Err(StoreError::Again)
}

/// Remove both directories of a vif (after the drivers reached Closed, or when the
/// guest is gone).
pub fn remove_vif(
    store: &dyn Store,
    frontend: DomId,
    backend: DomId,
    devid: u32,
) -> Result<(), StoreError> {
    for p in [
        frontend_path(frontend, devid),
        backend_path(backend, frontend, devid),
    ] {
        match store.rm(crate::env::XBT_NIL, &p) {
            Ok(()) | Err(StoreError::NotFound) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_round_trip_and_rejects() {
        let m = [0x00, 0x16, 0x3e, 0x0a, 0xbc, 0xff];
        assert_eq!(format_mac(&m), "00:16:3e:0a:bc:ff");
        assert_eq!(parse_mac("00:16:3e:0a:bc:ff"), Some(m));
        for bad in [
            "",
            "00:16:3e:0a:bc",
            "00:16:3e:0a:bc:ff:00",
            "0:16:3e:0a:bc:ff",
            "zz:16:3e:0a:bc:ff",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
    }
}
