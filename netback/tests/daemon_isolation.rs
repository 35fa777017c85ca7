//! Grants are the only way one domain reaches another's memory, in the daemon too:
//! Dom0's backend environment refuses a grant a guest process made out to another
//! domain (map and copy alike), so netback refuses a vif whose rings are granted to
//! someone else — that vif is disabled with its reason, and every other guest keeps
//! talking. A guest process cannot write its backend's or another guest's xenstore
//! nodes. (A guest process gets no grant-mapping operation at all: the daemon's guest
//! protocol has none, only its own grant table to write.)
//!
//! The hostile guests are this test binary re-executed (`PVNET_ROLE=<role>`); the
//! daemon runs in the test process with netback, so the test can also probe Dom0's
//! backend environment directly.

#![cfg(feature = "daemon")]

mod daemon_common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use daemon_common::*;
use hv::client::{connect_with, GuestConfig, Toolstack};
use hv::daemon::{BackendFactory, BackendOptions, Server, ServerConfig};
use hv::embedded::Hypervisor;
use hv::env::{BackendEnv, CopyDir, CopySeg, EnvError, GuestEnv, MappedPage, StoreError, XBT_NIL};
use netback::daemon_backend::NetbackFactory;

/// `GNTST_general_error` (Xen's `grant_table.h`): what Xen's `_set_status` fails a
/// map or copy with when the grant entry names another domain ("Bad flags or dom").
const GNTST_GENERAL_ERROR: i16 = -1;
/// `GNTST_okay`
const GNTST_OKAY: i16 = 0;

/// Entry point of the role processes; a no-op when run as a test.
#[test]
fn zz_role_entry() {
    let Ok(role) = std::env::var("PVNET_ROLE") else {
        return;
    };
    let socket = PathBuf::from(std::env::var("HV_SOCKET").expect("HV_SOCKET"));
    let other: u16 = std::env::var("HV_OTHER")
        .ok()
        .and_then(|v| v.parse().ok())
        .expect("HV_OTHER");
    println!();
    let code = match role.as_str() {
        "grant-other" => grant_other(&socket, other),
        "hostile-vif" => hostile_vif(&socket, other),
        r => {
            println!("fail: unknown role {r}");
            2
        }
    };
    let _ = std::io::stdout().flush();
    std::process::exit(code);
}

fn spawn_role(socket: &Path, role: &str, other: u16) -> Proc {
    let mut cmd = Command::new(std::env::current_exe().expect("current exe"));
    cmd.args([
        "--exact",
        "zz_role_entry",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("PVNET_ROLE", role)
    .env("HV_SOCKET", socket)
    .env("HV_OTHER", other.to_string());
    Proc::spawn(role, cmd)
}

/// Grants one page to `other` and one to Dom0, both filled with 0x5a, and waits to
/// be killed.
fn grant_other(socket: &Path, other: u16) -> i32 {
    let cfg = GuestConfig {
        name: "grant-other".into(),
        memory_frames: 256,
        grant_frames: 1,
        max_ports: 63,
        vifs: 0,
    };
    let env = match connect_with(socket, &cfg) {
        Ok(e) => e,
        Err(e) => {
            println!("fail: connect: {e}");
            return 1;
        }
    };
    let (Ok(to_other), Ok(to_dom0)) = (
        env.grant_pages(other, 1, false),
        env.grant_pages(0, 1, false),
    ) else {
        println!("fail: grant");
        return 1;
    };
    for p in to_other.iter().chain(&to_dom0) {
        // SAFETY: a granted page is 4 KiB of this guest's own mapped RAM.
        unsafe { std::ptr::write_bytes(p.ptr.as_ptr(), 0x5a, 4096) };
    }
    println!("domid {}", env.domid());
    println!("gref-other {}", to_other[0].gref);
    println!("gref-dom0 {}", to_dom0[0].gref);
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Connects a vif whose TX ring is granted to `other` instead of Dom0, and tries to
/// write nodes that are not its own.
fn hostile_vif(socket: &Path, other: u16) -> i32 {
    let cfg = GuestConfig {
        name: "hostile".into(),
        memory_frames: 256,
        grant_frames: 1,
        max_ports: 63,
        vifs: 1,
    };
    let env = match connect_with(socket, &cfg) {
        Ok(e) => e,
        Err(e) => {
            println!("fail: connect: {e}");
            return 1;
        }
    };
    let me = env.domid();
    let st = env.store();
    // Not ours: the backend's state, another guest's frontend.
    let be_state = format!("/local/domain/0/backend/vif/{me}/0/state");
    let w = st.write(XBT_NIL, &be_state, b"4");
    println!(
        "write-backend {}",
        matches!(w, Err(StoreError::PermissionDenied))
    );
    let w = st.write(
        XBT_NIL,
        &format!("/local/domain/{other}/device/vif/0/state"),
        b"6",
    );
    println!(
        "write-other {}",
        matches!(w, Err(StoreError::PermissionDenied))
    );
    // The vif: rings granted to the wrong domain (TX) and to Dom0 (RX).
    let (Ok(tx), Ok(rx), Ok(ch)) = (
        env.grant_pages(other, 1, false),
        env.grant_pages(0, 1, false),
        env.alloc_unbound(0),
    ) else {
        println!("fail: set-up");
        return 1;
    };
    use hv::env::EventChannel as _;
    let fe = format!("/local/domain/{me}/device/vif/0");
    let keys = [
        ("tx-ring-ref", tx[0].gref.to_string()),
        ("rx-ring-ref", rx[0].gref.to_string()),
        ("event-channel", ch.port().to_string()),
        ("request-rx-copy", "1".into()),
        ("feature-rx-notify", "1".into()),
        ("state", "4".into()),
    ];
    for (k, v) in keys {
        if let Err(e) = st.write(XBT_NIL, &format!("{fe}/{k}"), v.as_bytes()) {
            println!("fail: writing {k}: {e}");
            return 1;
        }
    }
    println!("domid {me}");
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

struct World {
    server: Server,
    hv: Hypervisor,
    _dir: TmpSocket,
}

fn world(tag: &str) -> World {
    let hv = Hypervisor::new().expect("hypervisor");
    let backend = NetbackFactory::default()
        .start(
            hv.backend_env().expect("dom0 env"),
            &BackendOptions::default(),
        )
        .expect("netback starts");
    let dir = tmp_socket(tag);
    let server = Server::start(hv.clone(), ServerConfig::new(&dir.path)).expect("daemon");
    server.set_backend(backend);
    World {
        server,
        hv,
        _dir: dir,
    }
}

/// A pvnet-guest on the in-process daemon.
fn pv_guest(w: &World, name: &str, args: &[&str]) -> Guest {
    let mut cmd = Command::new(GUEST);
    cmd.arg("--socket")
        .arg(w.server.socket_path())
        .args(["--name", name])
        .args(args);
    let mut proc = Proc::spawn(name, cmd);
    let domid = proc
        .expect("domid ", T)
        .split_whitespace()
        .next()
        .and_then(|d| d.parse().ok())
        .expect("domid");
    proc.expect("ready", T);
    Guest { proc, domid }
}

#[test]
fn dom0_cannot_map_or_copy_a_grant_made_out_to_another_domain() {
    let w = world("iso-grant");
    let other = pv_guest(&w, "other", &["--ip", "10.4.0.1/24"]);
    let mut g = spawn_role(w.server.socket_path(), "grant-other", other.domid);
    let domid: u16 = g.expect("domid ", T).parse().expect("domid");
    let gref_other: u32 = g.expect("gref-other ", T).parse().expect("gref");
    let gref_dom0: u32 = g.expect("gref-dom0 ", T).parse().expect("gref");
    let be = w.hv.backend_env().expect("dom0 env");

    // Positive control: the page granted to Dom0 maps and reads back.
    let m = be
        .map_grant(domid, gref_dom0, true)
        .expect("map Dom0's grant");
    // SAFETY: the mapping is 4 KiB and alive until dropped below.
    let b = unsafe { m.ptr().as_ptr().add(100).read_volatile() };
    assert_eq!(b, 0x5a);
    drop(m);

    // The page granted to `other` is out of Dom0's reach.
    for readonly in [true, false] {
        assert_eq!(
            be.map_grant(domid, gref_other, readonly).err(),
            Some(EnvError::Grant(GNTST_GENERAL_ERROR)),
            "map (readonly {readonly}) of a grant made out to domain {}",
            other.domid
        );
    }
    let mut buf = [0u8; 64];
    let mut segs = [
        CopySeg {
            dir: CopyDir::FromForeign,
            domid,
            gref: gref_other,
            offset: 0,
            len: 64,
            local: buf.as_mut_ptr(),
            status: GNTST_OKAY,
        },
        CopySeg {
            dir: CopyDir::ToForeign,
            domid,
            gref: gref_other,
            offset: 0,
            len: 64,
            local: buf.as_mut_ptr(),
            status: GNTST_OKAY,
        },
        CopySeg {
            dir: CopyDir::FromForeign,
            domid,
            gref: gref_dom0,
            offset: 0,
            len: 64,
            local: buf.as_mut_ptr(),
            status: GNTST_OKAY,
        },
    ];
    be.grant_copy(&mut segs);
    assert_eq!(segs[0].status, GNTST_GENERAL_ERROR, "copy from");
    assert_eq!(segs[1].status, GNTST_GENERAL_ERROR, "copy to");
    assert_eq!(
        segs[2].status, GNTST_OKAY,
        "the rest of the batch still runs"
    );
    assert_eq!(buf, [0x5a; 64], "only the allowed copy landed");
    g.kill9();
}

#[test]
fn a_vif_with_rings_granted_elsewhere_is_refused_and_other_guests_keep_talking() {
    let w = world("iso-vif");
    let a = pv_guest(&w, "iso-a", &["--ip", "10.5.0.1/24"]);
    let mut h = spawn_role(w.server.socket_path(), "hostile-vif", a.domid);
    assert_eq!(
        h.expect("write-backend ", T),
        "true",
        "backend node refused"
    );
    assert_eq!(
        h.expect("write-other ", T),
        "true",
        "other guest's node refused"
    );
    let hdom: u16 = h.expect("domid ", T).parse().expect("domid");
    let ts = Toolstack::connect(w.server.socket_path()).expect("toolstack");
    let refused = eventually(T, || {
        ts.network_list(hdom)
            .ok()
            .and_then(|v| v.first().cloned())
            .is_some_and(|v| v.disabled.contains("connect failed"))
    });
    let vifs = ts.network_list(hdom).expect("network-list");
    assert!(refused, "netback refused the vif with its reason: {vifs:?}");
    assert!(
        vifs[0]
            .disabled
            .contains(&format!("GNTST {GNTST_GENERAL_ERROR}")),
        "refused because the ring's grant names another domain: {}",
        vifs[0].disabled
    );
    assert_eq!(vifs[0].tx_packets + vifs[0].rx_packets, 0);
    // The other guests are unaffected: a new one pings and streams to `a`.
    let mut b = pv_guest(
        &w,
        "iso-b",
        &[
            "--ip",
            "10.5.0.2/24",
            "--ping",
            "10.5.0.1",
            "--count",
            "2",
            "--send-to",
            "10.5.0.1:9",
            "--bytes",
            "1M",
            "--exit-when-done",
        ],
    );
    let done = b.proc.expect("ping-done ", T);
    assert!(done.ends_with("received 2"), "{done}");
    b.proc.expect("sent 10.5.0.1:9 ", T);
    assert_eq!(b.proc.wait_exit(T), Some(0));
    h.kill9();
    drop(a);
}
