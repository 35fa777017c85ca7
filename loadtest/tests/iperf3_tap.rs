//! The end-to-end test: Debian's real `iperf3` client, in a fresh network
//! namespace, runs 5 s against our iperf3 server on smoltcp inside an embedded pvnet
//! guest (real netfront), behind the real netback and its TAP port. Both sides must
//! agree on the byte count; then the same in reverse (`-R`).
//!
//! Every address (10.213.77.0/24) exists only inside the test's namespace, which a
//! guard deletes (with the TAP in it) even when an assertion fails. Every wait is
//! bounded. Needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN): without it the test fails with
//! an explanation, unless PVNET_SKIP_ROOT_TESTS=1 (the project's convention).

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use hv::embedded::{DomainConfig, Hypervisor};
use hv::toolstack::{add_vif, VifConfig};
use loadtest::iperf3::smol::{SmolConfig, SmolNet};
use loadtest::iperf3::{Net, Outcome, Server, ServerConfig, TestError};
use netback::tap::netns_path;
use netback::{Netback, NetbackConfig, TapPort, TapPortConfig, VifId};
use netfront::{Netfront, NetfrontConfig};
use serde_json::Value;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr};

const HOST_IP: &str = "10.213.77.1";
const GUEST_IP: [u8; 4] = [10, 213, 77, 2];
const SECS: u64 = 5;

fn root_or_skip(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("PVNET_SKIP_ROOT_TESTS").as_deref() == Ok("1") {
        eprintln!("{test}: not run: needs root and PVNET_SKIP_ROOT_TESTS=1 is set");
        return false;
    }
    panic!(
        "{test} needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) for a network namespace and \
         a TAP: run the tests as root, or set PVNET_SKIP_ROOT_TESTS=1 to skip them"
    );
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A fresh named network namespace, deleted on drop with everything in it.
struct TestNs {
    name: String,
}

impl TestNs {
    fn new() -> Self {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "pvnet-iperf3-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        run("ip", &["netns", "add", &name]);
        let ns = TestNs { name };
        run("ip", &["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// `ip netns exec NS iperf3 ARGS` with a hard time limit; returns the JSON it printed.
fn iperf3_in(ns: &TestNs, args: &[&str], limit: Duration) -> Value {
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns.name, "iperf3"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running iperf3 (apt-get install iperf3)");
    let deadline = Instant::now() + limit;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("iperf3 {args:?} did not finish within {limit:?}");
        }
        thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert!(v.get("error").is_none(), "iperf3 error: {text}");
    assert!(out.status.success(), "iperf3 failed: {text}");
    v
}

fn bytes(v: &Value, path: &[&str]) -> u64 {
    path.iter()
        .fold(v, |cur, k| &cur[*k])
        .as_u64()
        .unwrap_or_else(|| panic!("{path:?} missing in {v:#}"))
}

/// One test: the guest serves one iperf3 test; the real client runs with `extra`.
fn guest_server_real_client(extra: &[&str]) -> (Value, Outcome) {
    let ns = TestNs::new();
    let hv = Hypervisor::new().expect("hypervisor");
    let tap = Arc::new(TapPort::new(TapPortConfig {
        netns: Some(netns_path(&ns.name)),
        ..TapPortConfig::default()
    }));
    let mut cfg = NetbackConfig::new(tap.clone());
    cfg.close_timeout = Duration::from_millis(500);
    let netback = Netback::start(hv.backend_env().expect("dom0 env"), cfg).expect("netback");
    let domid = hv
        .create_domain(&DomainConfig {
            name: "iperf3-tap-guest".into(),
            memory_frames: 2048,
            ..DomainConfig::default()
        })
        .expect("domain");
    let store = hv.store(0).expect("dom0 store");
    add_vif(
        &store,
        &VifConfig {
            frontend: domid,
            backend: 0,
            devid: 0,
            mac: [0x02, 0x16, 0x3e, 0x77, 0, 2],
            rate: None,
        },
    )
    .expect("add_vif");
    let mut nf = Netfront::connect(hv.guest_env(domid).expect("env"), NetfrontConfig::default())
        .expect("netfront connect");
    let mac = nf.mac();

    // The TAP appears (in the namespace) once the vif is connected.
    let vif = VifId { domid, devid: 0 };
    let deadline = Instant::now() + Duration::from_secs(10);
    let tap_name = loop {
        if let Some(n) = tap.tap_name(vif) {
            break n;
        }
        assert!(
            Instant::now() < deadline,
            "no TAP for {vif}: {:?}",
            tap.failure(vif)
        );
        thread::sleep(Duration::from_millis(20));
    };
    run(
        "ip",
        &[
            "-n",
            &ns.name,
            "addr",
            "add",
            &format!("{HOST_IP}/24"),
            "dev",
            &tap_name,
        ],
    );
    run("ip", &["-n", &ns.name, "link", "set", &tap_name, "up"]);

    let stop = AtomicBool::new(false);
    let (client, results) = thread::scope(|s| {
        let q = nf.queue(0).expect("queue 0");
        let stop = &stop;
        let server = s.spawn(move || -> Vec<Result<Outcome, TestError>> {
            let hw = HardwareAddress::Ethernet(EthernetAddress(mac));
            let ip = IpAddress::v4(GUEST_IP[0], GUEST_IP[1], GUEST_IP[2], GUEST_IP[3]);
            let mut net = SmolNet::new(q, hw, &[IpCidr::new(ip, 24)], SmolConfig::default());
            let mut srv = Server::new(
                &mut net,
                ServerConfig {
                    one_off: true,
                    ..ServerConfig::default()
                },
            )
            .expect("listen");
            srv.run(&mut net, stop, |_| {});
            let r = srv.take_results();
            srv.close(&mut net);
            for _ in 0..20 {
                net.wait(Duration::from_millis(5));
            }
            r
        });
        let guest = format!(
            "{}.{}.{}.{}",
            GUEST_IP[0], GUEST_IP[1], GUEST_IP[2], GUEST_IP[3]
        );
        let secs = SECS.to_string();
        let mut args = vec!["-c", guest.as_str(), "-t", secs.as_str(), "-J"];
        args.extend_from_slice(extra);
        let client = iperf3_in(&ns, &args, Duration::from_secs(SECS + 30));
        // A one-off server ends by itself; the stop flag only bounds a broken run.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !server.is_finished() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        stop.store(true, Ordering::Relaxed);
        (client, server.join().expect("server thread"))
    });
    let _ = nf.close();
    netback.shutdown();
    drop(ns);
    assert_eq!(results.len(), 1, "{results:?}");
    let outcome = results
        .into_iter()
        .next()
        .and_then(|r| r.map_err(|e| panic!("server: {e:?}")).ok())
        .expect("outcome");
    (client, outcome)
}

#[test]
fn real_iperf3_client_in_netns_to_guest_server_over_tap() {
    if !root_or_skip("real_iperf3_client_in_netns_to_guest_server_over_tap") {
        return;
    }
    let (c, o) = guest_server_real_client(&[]);
    let sent = bytes(&c, &["end", "sum_sent", "bytes"]);
    eprintln!(
        "iperf3 -c (netns) → smoltcp guest over netback+TAP, {SECS} s: client sent {sent} B, \
         guest received {} B ({:.1} Mbit/s)",
        o.bytes_local,
        o.bytes_local as f64 * 8.0 / o.duration / 1e6
    );
    assert!(sent > 0);
    assert_eq!(
        o.bytes_local, sent,
        "the guest counted every byte the client sent"
    );
    assert_eq!(bytes(&c, &["end", "sum_received", "bytes"]), o.bytes_local);
    assert_eq!(o.params.time, SECS);
}

#[test]
fn real_iperf3_client_in_netns_reverse_from_guest_over_tap() {
    if !root_or_skip("real_iperf3_client_in_netns_reverse_from_guest_over_tap") {
        return;
    }
    let (c, o) = guest_server_real_client(&["-R"]);
    let sent = bytes(&c, &["end", "sum_sent", "bytes"]);
    let received = bytes(&c, &["end", "sum_received", "bytes"]);
    eprintln!(
        "iperf3 -c -R (netns) ← smoltcp guest over netback+TAP, {SECS} s: guest sent {} B, \
         client received {received} B",
        o.bytes_local
    );
    assert!(o.we_sent);
    assert_eq!(
        sent, o.bytes_local,
        "the client reports what the guest sent"
    );
    assert_eq!(
        o.bytes_received, received,
        "the client's results reached the guest"
    );
    // iperf3's client stops counting at TEST_END: short by at most the buffers.
    assert!(received > 0 && received <= sent);
    assert!(sent - received < 16 << 20, "{sent} vs {received}");
}
