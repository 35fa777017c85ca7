//! SIGKILL of guest processes, 50 times: each domain is torn down completely, the
//! daemon's descriptors and threads return to where they were, and another guest
//! keeps working throughout. Alone in its binary: it counts this process's fds.

mod daemon_common;

use std::time::Duration;

use daemon_common::*;
use hv::daemon::Server;
use hv::embedded::DOM0;
use hv::env::{BackendEnv, DomId, EventChannel, MappedPage, Store, StoreError, XBT_NIL};

const T: Duration = Duration::from_secs(20);

/// Entry point of the guest processes (the test binary re-executed); a no-op when
/// run as a test.
#[test]
fn zz_guest_process_entry() {
    guest_process_entry();
}

fn task_count() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .count()
}

#[test]
fn kill9_of_guests_tears_everything_down_without_leaks_and_others_keep_working() {
    let server = start_server("kill");
    let hv = server.hypervisor().clone();
    let be = hv.backend_env().expect("backend env");
    let dom0 = hv.store(DOM0).expect("dom0 store");
    // A survivor that echoes events for the whole test.
    let mut survivor = spawn_guest(server.socket_path(), "echo", &[]);
    let sdom: DomId = survivor.expect("domid ", T).parse().expect("domid");
    let sport: u32 = survivor.expect("port ", T).parse().expect("port");
    let sch = be.bind_interdomain(sdom, sport).expect("bind survivor");
    sch.try_consume();
    let ping = |what: &str| {
        sch.notify();
        assert!(
            sch.wait(Some(Duration::from_secs(5))),
            "survivor stopped answering {what}"
        );
    };
    ping("at start");

    let cycle = |i: usize| {
        let mut g = spawn_guest(server.socket_path(), "idle", &[("HV_VIFS", "1".into())]);
        let gref: u32 = g.expect("gref ", T).parse().expect("gref");
        let domid: DomId = g.expect("ready ", T).parse().expect("domid");
        let vif_dir = format!("/local/domain/0/backend/vif/{domid}");
        assert!(
            dom0.directory(XBT_NIL, &vif_dir).is_ok(),
            "vif backend directory created"
        );
        // Dom0 holds a mapping of the guest's page while it is killed (mid-transfer).
        let m = be.map_grant(domid, gref, true).expect("map");
        g.kill9();
        assert!(
            eventually(T, || !server.guests().contains(&domid)),
            "cycle {i}: domain {domid} not torn down"
        );
        assert!(hv.domain(domid).is_none());
        assert!(
            !hv.event_channels().has_domain(domid),
            "event channels closed"
        );
        assert_eq!(
            dom0.read(XBT_NIL, &format!("/local/domain/{domid}")),
            Err(StoreError::NotFound)
        );
        assert_eq!(
            dom0.directory(XBT_NIL, &vif_dir),
            Err(StoreError::NotFound),
            "vif backend dir removed"
        );
        // The mapping stays valid until Dom0 unmaps it (Xen keeps the page referenced).
        // SAFETY: the mapping is 4 KiB and still alive.
        let _ = unsafe { m.ptr().as_ptr().read_volatile() };
        drop(m);
        ping("after a kill");
    };
    // Warm up (lazy allocations in the test harness and the daemon), then measure.
    for i in 0..2 {
        cycle(i);
    }
    let settle = |s: &Server| s.wait_stats(T, |st| st.connections == 1 && st.guests == 1);
    settle(&server);
    let (fds, tasks) = (fd_count(), task_count());
    let base = server.stats();
    for i in 0..50 {
        cycle(i);
    }
    let after = settle(&server);
    assert_eq!(after.teardowns, base.teardowns + 50);
    assert_eq!(
        after.watched_ports, base.watched_ports,
        "send eventfds of dead guests unregistered"
    );
    assert!(
        eventually(T, || fd_count() == fds),
        "fds grew from {fds} to {} over 50 kills",
        fd_count()
    );
    assert!(
        eventually(T, || task_count() == tasks),
        "threads grew from {tasks} to {}",
        task_count()
    );
    ping("at the end");
    drop(sch);
    survivor.kill9();
}
