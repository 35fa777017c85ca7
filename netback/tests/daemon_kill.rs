//! SIGKILL of guest processes in the middle of a transfer, 50 times, with netback
//! serving their vifs: each time the domain, its vif (netback's rings, threads and
//! grants) and — in TAP mode — its TAP are torn down; the daemon's descriptors and
//! threads come back to where they were and its memory stays flat; and another pair
//! of guests keeps moving byte-exact streams the whole time.

#![cfg(feature = "daemon")]

mod daemon_common;

use std::time::Duration;

use daemon_common::*;

/// Kills measured (`PVNET_KILLS` overrides, for a longer soak).
fn kills() -> usize {
    std::env::var("PVNET_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50)
}
const WARM_UP: usize = 2;
/// Bytes a victim must have sent before it is killed (it is mid-transfer).
const MID_TRANSFER: u64 = 64 * 1024;
/// Resident-memory growth tolerated over the kills (allocator slack, not leaks:
/// one leaked guest would be its rings and buffers, several MiB each time).
const RSS_SLACK_KIB: u64 = 24 * 1024;

fn tx_bytes(d: &Daemon, domid: u16) -> u64 {
    d.vifs(domid)
        .and_then(|v| v[0]["counters"]["tx_bytes"].as_u64())
        .unwrap_or(0)
}

/// Hashes of the streams `b` finished sending and of those `a` received from it, in
/// order.
fn pair_hashes(a: &Guest, b: &Guest, b_ip: &str) -> (Vec<String>, Vec<String>) {
    let sent = b
        .proc
        .seen_with("sent ")
        .iter()
        .map(|l| bytes_and_hash(l).1)
        .collect();
    let got = a
        .proc
        .seen_with(&format!("discard {b_ip}:"))
        .iter()
        .map(|l| bytes_and_hash(l).1)
        .collect();
    (sent, got)
}

fn kill_cycles(d: &Daemon, net: &str, ns: Option<&BridgeNs>, tap_prefix: &str) {
    let ip = |host: usize| format!("{net}.{host}");
    let a = guest(d, "pair-a", &["--ip", &format!("{}/24", ip(1))]);
    let b = guest(
        d,
        "pair-b",
        &[
            "--ip",
            &format!("{}/24", ip(2)),
            "--send-to",
            &format!("{}:9", ip(1)),
            "--bytes",
            "2M",
            "--repeat",
            "1000000",
        ],
    );
    let flowing = |what: &str, at_least: usize| {
        assert!(
            eventually(T, || b.proc.seen_with("sent ").len() >= at_least),
            "the pair stopped flowing {what}"
        );
    };
    flowing("at start", 1);
    let pid = d.pid();
    let cycle = |i: usize| {
        let name = format!("victim{i}");
        let v = guest(
            d,
            &name,
            &[
                "--memory-mib",
                "16",
                "--ip",
                &format!("{}/24", ip(20 + i % 200)),
                "--send-to",
                &format!("{}:9", ip(1)),
                "--bytes",
                "1G",
            ],
        );
        let domid = v.domid;
        let tap = format!("{tap_prefix}{domid}.0");
        assert!(
            eventually(T, || tx_bytes(d, domid) >= MID_TRANSFER),
            "cycle {i}: victim {domid} never got going"
        );
        if let Some(ns) = ns {
            assert!(
                ns.has_link(&tap),
                "cycle {i}: {tap} exists while the guest runs"
            );
        }
        v.proc.kill9();
        assert!(
            eventually(T, || !d.domids().contains(&domid)),
            "cycle {i}: domain {domid} not torn down"
        );
        assert!(
            d.vifs(domid).is_none(),
            "cycle {i}: network-list of a dead domain must fail"
        );
        if let Some(ns) = ns {
            assert!(
                eventually(T, || !ns.has_link(&tap)),
                "cycle {i}: {tap} not removed"
            );
        }
    };
    for i in 0..WARM_UP {
        cycle(i);
    }
    // Let the last victim's leftovers (e.g. the receiver's half-open connection)
    // settle before measuring.
    std::thread::sleep(Duration::from_millis(200));
    let (fds, tasks, rss) = (fd_count(pid), task_count(pid), rss_kib(pid));
    assert!(fds > 0 && tasks > 0 && rss > 0, "reading /proc/{pid}");
    let flowed_before = b.proc.seen_with("sent ").len();
    let kills = kills();
    for i in WARM_UP..WARM_UP + kills {
        cycle(i);
    }
    flowing("during the kills", flowed_before + 1);
    assert!(
        eventually(T, || fd_count(pid) == fds),
        "daemon fds grew from {fds} to {} over {kills} kills",
        fd_count(pid)
    );
    assert!(
        eventually(T, || task_count(pid) == tasks),
        "daemon threads grew from {tasks} to {} over {kills} kills",
        task_count(pid)
    );
    let grown = rss_kib(pid).saturating_sub(rss);
    eprintln!(
        "after {kills} kills: fds {fds} -> {}, threads {tasks} -> {}, RSS {rss} KiB -> {} KiB; the pair finished {} streams",
        fd_count(pid),
        task_count(pid),
        rss_kib(pid),
        b.proc.seen_with("sent ").len()
    );
    assert!(
        grown < RSS_SLACK_KIB,
        "daemon RSS grew by {grown} KiB over {kills} kills"
    );
    // Every stream the pair completed arrived intact, in order.
    let (sent, got) = pair_hashes(&a, &b, &ip(2));
    let n = sent.len().min(got.len());
    assert!(n >= 2, "the pair completed {n} streams");
    assert_eq!(sent[..n], got[..n], "a stream of the pair was corrupted");
    b.proc.kill9();
    a.proc.kill9();
}

#[test]
fn kill9_mid_transfer_with_the_switch_tears_down_vifs_without_leaks() {
    let d = Daemon::start("kill-switch", &[], None);
    kill_cycles(&d, "10.1.0", None, "");
    assert_eq!(d.stop(), Some(0));
}

#[test]
fn kill9_mid_transfer_with_taps_on_a_bridge_removes_each_tap_without_leaks() {
    if !root_or_skip("kill9_mid_transfer_with_taps_on_a_bridge_removes_each_tap_without_leaks") {
        return;
    }
    let ns = BridgeNs::new("kill", "pvbr1", "10.2.0.254/24");
    let d = Daemon::start(
        "kill-tap",
        &["--bridge", "pvbr1", "--tap-prefix", "pk"],
        Some(&ns.name),
    );
    kill_cycles(&d, "10.2.0", Some(&ns), "pk");
    assert_eq!(d.stop(), Some(0));
}
