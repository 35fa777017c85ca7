//! `XenGuestEnv::open()` / `XenBackendEnv::open()` tell the user what is missing.
//! Off Xen (this CI machine) the first device is absent and the error names it with
//! the module to load; inside a Xen domain with the modules loaded (the xenlab dom0)
//! opening must succeed. Both branches assert.

use std::path::Path;

use hv::env::{BackendEnv, EnvError, GuestEnv};
use hv::xen::{XenBackendEnv, XenError, XenGuestEnv};

#[test]
fn backend_open_names_gntdev_and_its_module() {
    if Path::new("/dev/xen/gntdev").exists() {
        let env = XenBackendEnv::open().expect("the Xen devices exist: open must succeed");
        let _ = env.domid();
        return;
    }
    let err = XenBackendEnv::open().unwrap_err();
    assert!(
        matches!(
            err,
            XenError::Missing {
                path: "/dev/xen/gntdev",
                ..
            }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert_eq!(
        msg,
        "no /dev/xen/gntdev: not running in a Xen domain, or modprobe xen-gntdev"
    );
    // Through the env error type the message survives.
    match EnvError::from(err) {
        EnvError::Transport(m) => assert_eq!(m, msg),
        other => panic!("{other:?}"),
    }
}

#[test]
fn guest_open_names_gntalloc_and_its_module() {
    if Path::new("/dev/xen/gntalloc").exists() {
        let env = XenGuestEnv::open().expect("the Xen devices exist: open must succeed");
        let _ = env.domid();
        return;
    }
    let err = XenGuestEnv::open().unwrap_err();
    assert_eq!(
        err.to_string(),
        "no /dev/xen/gntalloc: not running in a Xen domain, or modprobe xen-gntalloc"
    );
}

#[test]
fn each_device_reports_its_own_hint() {
    if Path::new("/dev/xen").exists() {
        return assert!(hv::xen::Evtchn::open().is_ok());
    }
    let e = hv::xen::Evtchn::open().unwrap_err().to_string();
    assert!(
        e.contains("/dev/xen/evtchn") && e.contains("modprobe xen-evtchn"),
        "{e}"
    );
    let e = hv::xen::XenbusStore::open().unwrap_err().to_string();
    assert!(
        e.contains("/dev/xen/xenbus") && e.contains("not running in a Xen domain"),
        "{e}"
    );
}
