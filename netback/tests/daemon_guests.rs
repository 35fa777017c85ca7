//! The real `hv serve` with netback, and real `pvnet-guest` processes: guests reach
//! each other byte-exact (a 50 MiB TCP stream hashed at both ends), over IPv4 and
//! IPv6, through the learning switch or through TAPs on a Linux bridge; `hv list` and
//! `hv network-list` show the domains and netback's counters; `hv serve` refuses TAP
//! mode it cannot honour with a message saying what to do.

#![cfg(feature = "daemon")]

mod daemon_common;

use std::time::Duration;

use daemon_common::*;

/// The stream the byte-exact test moves.
const BIG: u64 = 50 << 20;

fn counter(v: &serde_json::Value, key: &str) -> u64 {
    v[0]["counters"][key].as_u64().unwrap_or(0)
}

#[test]
fn two_guest_processes_exchange_50_mib_byte_exact_through_the_switch() {
    let d = Daemon::start("switch", &[], None);
    let mut a = guest(&d, "ga", &["--ip", "10.0.0.1/24", "--ip", "fd00::1/64"]);
    let mut b = guest(
        &d,
        "gb",
        &[
            "--ip",
            "10.0.0.2/24",
            "--ping",
            "10.0.0.1",
            "--count",
            "3",
            "--send-to",
            "10.0.0.1:9",
            "--bytes",
            &BIG.to_string(),
            "--exit-when-done",
        ],
    );
    // Ping first (the client pings while it sends): every echo request answered.
    let done = b.proc.expect("ping-done ", T);
    assert!(done.ends_with("sent 3 received 3"), "{done}");
    let sent = b.proc.expect("sent 10.0.0.1:9 ", Duration::from_secs(300));
    let got = a.proc.expect("discard 10.0.0.2:", T);
    let (sent_bytes, sent_hash) = bytes_and_hash(&sent);
    let (got_bytes, got_hash) = bytes_and_hash(&got);
    assert_eq!(sent_bytes, BIG);
    assert_eq!(got_bytes, BIG, "the discard service received everything");
    assert_eq!(got_hash, sent_hash, "what arrived is what was sent");
    let counters = b.proc.expect("counters ", T);
    assert!(counters.contains("transfers_failed 0"), "{counters}");
    assert_eq!(b.proc.wait_exit(T), Some(0), "the sender exits cleanly");

    // A new guest (new domid, new MAC) taking over the same address right away
    // reaches the receiver too.
    let mut b2 = guest(
        &d,
        "gb2",
        &[
            "--ip",
            "10.0.0.2/24",
            "--send-to",
            "10.0.0.1:9",
            "--bytes",
            "1M",
            "--exit-when-done",
        ],
    );
    let (n, h) = bytes_and_hash(&b2.proc.expect("sent 10.0.0.1:9 ", T));
    assert_eq!(n, 1 << 20);
    assert_eq!(b2.proc.wait_exit(T), Some(0));
    let (n2, h2) = bytes_and_hash(&a.proc.expect("discard 10.0.0.2:", T));
    assert_eq!((n2, h2), (n, h));

    // IPv6 and the echo service: what comes back is what was sent.
    let mut c = guest(
        &d,
        "gc",
        &[
            "--ip",
            "fd00::3/64",
            "--send-to",
            "[fd00::1]:7",
            "--bytes",
            "2M",
            "--exit-when-done",
        ],
    );
    let check = c.proc.expect("echo-check [fd00::1]:7 ", T);
    assert!(check.ends_with("match true"), "{check}");
    assert_eq!(c.proc.wait_exit(T), Some(0));

    // The toolstack view: the guest, its vif Connected, netback's counters.
    let list = d.hv_ok(&["list"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with("ga ")
                && l.split_whitespace().nth(1) == Some(&a.domid.to_string())),
        "{list}"
    );
    let vifs = d.vifs(a.domid).expect("network-list");
    assert_eq!(vifs[0]["backend_state"], "Connected", "{vifs}");
    assert_eq!(vifs[0]["frontend_state"], "Connected", "{vifs}");
    assert!(
        counter(&vifs, "rx_bytes") >= BIG,
        "netback copied the 50 MiB into the receiver's RX ring: {vifs}"
    );
    assert!(counter(&vifs, "tx_packets") > 0, "{vifs}");
    let table = d.hv_ok(&["network-list", &a.domid.to_string()]);
    assert!(table.contains("Connected"), "{table}");
    let ls = d.hv_ok(&[
        "xenstore-ls",
        &format!("/local/domain/0/backend/vif/{}", a.domid),
    ]);
    assert!(ls.contains("feature-sg = \"1\""), "{ls}");

    // SIGTERM: the guest prints its counters and closes its vif.
    a.proc.signal(libc::SIGTERM);
    assert_eq!(a.proc.expect("exit ", T), "signal");
    let counters = a.proc.expect("counters ", T);
    assert!(
        counters.contains(&format!("discard_bytes {}", BIG + (1 << 20))),
        "{counters}"
    );
    assert_eq!(a.proc.wait_exit(T), Some(0));
    assert!(
        eventually(T, || !d.domids().contains(&a.domid)),
        "the domain goes with its process"
    );
    let (code, socket_left) = d.stop_and_check_socket();
    assert_eq!(code, Some(0), "hv serve exits 0 on SIGTERM");
    assert!(!socket_left, "the socket is removed on shutdown");
}

#[test]
fn guests_on_a_bridge_reach_each_other_and_the_host_through_their_taps() {
    if !root_or_skip("guests_on_a_bridge_reach_each_other_and_the_host_through_their_taps") {
        return;
    }
    let ns = BridgeNs::new("br", "pvbr0", "10.78.0.1/24");
    let d = Daemon::start(
        "tap",
        &["--bridge", "pvbr0", "--tap-prefix", "pv"],
        Some(&ns.name),
    );
    let mut a = guest(&d, "ta", &["--ip", "10.78.0.11/24"]);
    let mut b = guest(
        &d,
        "tb",
        &[
            "--ip",
            "10.78.0.12/24",
            "--ping",
            "10.78.0.1",
            "--count",
            "3",
            "--send-to",
            "10.78.0.11:9",
            "--bytes",
            "8M",
            "--exit-when-done",
        ],
    );
    let tap_a = format!("pv{}.0", a.domid);
    let tap_b = format!("pv{}.0", b.domid);
    // The host (the bridge's address) answers the guest's pings through the TAP.
    let done = b.proc.expect("ping-done ", T);
    assert!(done.ends_with("sent 3 received 3"), "{done}");
    let ports = ns.bridge_ports();
    assert!(
        ports.contains(&tap_a) && ports.contains(&tap_b),
        "both TAPs named with the prefix joined the bridge: {ports:?}"
    );
    // Guest to guest across the bridge, byte-exact.
    let (sb, sh) = bytes_and_hash(&b.proc.expect("sent 10.78.0.11:9 ", T));
    let (gb, gh) = bytes_and_hash(&a.proc.expect("discard 10.78.0.12:", T));
    assert_eq!((sb, &sh), (8 << 20, &gh));
    assert_eq!(gb, sb);
    assert_eq!(b.proc.wait_exit(T), Some(0));
    // network-list shows the host side of the vif.
    let vifs = d.vifs(a.domid).expect("network-list");
    assert_eq!(vifs[0]["host_if"], tap_a.as_str(), "{vifs}");
    assert!(counter(&vifs, "rx_bytes") >= 8 << 20, "{vifs}");
    // A guest that goes takes its TAP with it.
    assert!(
        eventually(T, || !ns.has_link(&tap_b)),
        "{tap_b} removed after its guest exited"
    );
    a.proc.signal(libc::SIGTERM);
    assert_eq!(a.proc.wait_exit(T), Some(0));
    assert!(eventually(T, || !ns.has_link(&tap_a)));
    assert_eq!(d.stop(), Some(0));
}

#[test]
fn serve_refuses_tap_mode_it_cannot_honour_and_says_what_to_do() {
    let tmp = tmp_socket("refuse");
    let socket = &tmp.path;
    let serve = |extra: &[&str]| {
        let o = std::process::Command::new(HV)
            .arg("--socket")
            .arg(socket)
            .arg("serve")
            .args(extra)
            .output()
            .expect("run hv");
        assert!(!o.status.success(), "hv serve {extra:?} should fail");
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let e = serve(&["--bridge", "pvnosuchbr9"]);
    assert!(
        e.contains("bridge pvnosuchbr9 does not exist")
            && e.contains("ip link add pvnosuchbr9 type bridge"),
        "{e}"
    );
    let e = serve(&["--tap-prefix", "muchtoolongprefix"]);
    assert!(e.contains("--tap-prefix") && e.contains("at most"), "{e}");
    assert!(!exists(socket), "nothing served");
}

#[test]
fn serve_without_cap_net_admin_refuses_tap_mode() {
    if !root_or_skip("serve_without_cap_net_admin_refuses_tap_mode") {
        return;
    }
    // Root without CAP_NET_ADMIN (dropped from the bounding set before exec).
    let tmp = tmp_socket("nocap");
    let socket = &tmp.path;
    let o = std::process::Command::new("setpriv")
        .args([
            "--bounding-set",
            "-net_admin",
            "--inh-caps",
            "-net_admin",
            HV,
        ])
        .arg("--socket")
        .arg(socket)
        .args(["serve", "--tap-prefix", "pv"])
        .output()
        .expect("run setpriv (util-linux)");
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("TAP devices need CAP_NET_ADMIN") && e.contains("sudo hv serve"),
        "{e}"
    );
    assert!(!exists(socket), "nothing served");
}
