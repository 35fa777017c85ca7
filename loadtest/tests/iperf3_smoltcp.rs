//! The iperf3 engine on smoltcp inside pvnet guests: our client in one embedded guest,
//! our server in another, each on its real netfront, joined by the real netback's
//! learning [`Switch`] (hv::embedded, no root, no TAP). Both ends must agree on the
//! byte count exactly, in both directions.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use hv::embedded::{DomainConfig, EmbeddedGuestEnv, Hypervisor};
use hv::toolstack::{add_vif, VifConfig};
use loadtest::iperf3::smol::{SmolConfig, SmolNet};
use loadtest::iperf3::{
    Client, ClientConfig, Net, Outcome, Server, ServerConfig, TestError, TestParams,
};
use netback::{Netback, NetbackConfig, Switch};
use netfront::{Netfront, NetfrontConfig};
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr};

/// Wall-clock bound of one test run; a stall fails, it does not hang.
const LIMIT: Duration = Duration::from_secs(60);
const SERVER_IP: [u8; 4] = [10, 77, 0, 2];
const CLIENT_IP: [u8; 4] = [10, 77, 0, 1];

fn guest(hv: &Hypervisor, i: u8) -> Netfront<EmbeddedGuestEnv> {
    let domid = hv
        .create_domain(&DomainConfig {
            name: format!("iperf3-guest{i}"),
            memory_frames: 2048,
            ..DomainConfig::default()
        })
        .expect("create domain");
    let store = hv.store(0).expect("dom0 store");
    add_vif(
        &store,
        &VifConfig {
            frontend: domid,
            backend: 0,
            devid: 0,
            mac: [0x02, 0x16, 0x3e, 0, 0, i],
            rate: None,
        },
    )
    .expect("add_vif");
    let env = hv.guest_env(domid).expect("guest env");
    Netfront::connect(env, NetfrontConfig::default()).expect("netfront connect")
}

fn cidr(ip: [u8; 4]) -> IpCidr {
    IpCidr::new(IpAddress::v4(ip[0], ip[1], ip[2], ip[3]), 24)
}

/// Runs one test: server in guest 1, client in guest 2. Returns (client, server).
fn run(params: TestParams) -> (Outcome, Outcome) {
    let hv = Hypervisor::new().expect("hypervisor");
    let mut cfg = NetbackConfig::new(Switch::new());
    cfg.close_timeout = Duration::from_millis(500);
    let netback = Netback::start(hv.backend_env().expect("dom0 env"), cfg).expect("netback");
    let mut nf_server = guest(&hv, 1);
    let mut nf_client = guest(&hv, 2);
    let (mac_s, mac_c) = (nf_server.mac(), nf_client.mac());
    let stop = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let stop = stop.clone();
        thread::spawn(move || {
            let t0 = Instant::now();
            while !stop.load(Ordering::Relaxed) && t0.elapsed() < LIMIT {
                thread::sleep(Duration::from_millis(20));
            }
            stop.store(true, Ordering::Relaxed);
        })
    };

    let (client, server): (Result<Outcome, TestError>, Vec<Result<Outcome, TestError>>) =
        thread::scope(|s| {
            let qs = nf_server.queue(0).expect("queue 0");
            let stop_s = &stop;
            let server = s.spawn(move || {
                let hw = HardwareAddress::Ethernet(EthernetAddress(mac_s));
                let mut net = SmolNet::new(qs, hw, &[cidr(SERVER_IP)], SmolConfig::default());
                let mut srv = Server::new(
                    &mut net,
                    ServerConfig {
                        one_off: true,
                        ..ServerConfig::default()
                    },
                )
                .expect("listen");
                srv.run(&mut net, stop_s, |_| {});
                let results = srv.take_results();
                srv.close(&mut net);
                // Let the last FINs and ACKs out.
                for _ in 0..20 {
                    net.wait(Duration::from_millis(5));
                }
                results
            });
            let qc = nf_client.queue(0).expect("queue 0");
            let stop_c = &stop;
            let client = s.spawn(move || {
                let hw = HardwareAddress::Ethernet(EthernetAddress(mac_c));
                let mut net = SmolNet::new(qc, hw, &[cidr(CLIENT_IP)], SmolConfig::default());
                let addr = (std::net::Ipv4Addr::from(SERVER_IP), 5201).into();
                let r = Client::new(&mut net, ClientConfig::new(addr, params))
                    .and_then(|c| c.run(&mut net, stop_c));
                for _ in 0..20 {
                    net.wait(Duration::from_millis(5));
                }
                r
            });
            (
                client.join().expect("client thread"),
                server.join().expect("server thread"),
            )
        });
    let timed_out = stop.swap(true, Ordering::Relaxed);
    watchdog.join().expect("watchdog");
    assert!(!timed_out, "the test did not finish within {LIMIT:?}");
    let _ = nf_server.close();
    let _ = nf_client.close();
    netback.shutdown();
    let client = client.unwrap_or_else(|e| panic!("client: {e:?}"));
    assert_eq!(server.len(), 1, "{server:?}");
    let server = server
        .into_iter()
        .next()
        .and_then(|r| r.map_err(|e| panic!("server: {e:?}")).ok())
        .expect("server outcome");
    (client, server)
}

#[test]
fn client_to_server_between_two_guests_agree_on_bytes() {
    let (c, s) = run(TestParams {
        time: 2,
        ..TestParams::default()
    });
    eprintln!(
        "smoltcp guest→guest via netback Switch: {} B in {:.2} s ({:.1} Mbit/s)",
        c.bytes_local,
        c.duration,
        c.bytes_local as f64 * 8.0 / c.duration / 1e6
    );
    assert!(c.we_sent && !s.we_sent);
    assert!(c.bytes_local > 0);
    // The server drains after TEST_END: it counted every byte the client sent.
    assert_eq!(s.bytes_local, c.bytes_local);
    assert_eq!(c.bytes_received, s.bytes_local);
    assert_eq!(s.bytes_sent, c.bytes_local);
    assert!(c.json["intervals"].as_array().is_some_and(|v| v.len() >= 2));
}

#[test]
fn reverse_two_streams_between_two_guests_agree_on_bytes() {
    let (c, s) = run(TestParams {
        time: 2,
        parallel: 2,
        reverse: true,
        ..TestParams::default()
    });
    assert!(s.we_sent && !c.we_sent);
    assert_eq!(c.streams.len(), 2);
    // The client reads until the server closed the streams: exact agreement.
    assert_eq!(c.bytes_local, s.bytes_local);
    for (a, b) in c.streams.iter().zip(&s.streams) {
        assert_eq!(a.id, b.id);
        assert_eq!(a.received, b.sent, "stream {}", a.id);
        assert!(a.received > 0);
    }
}

#[test]
fn byte_count_between_two_guests() {
    let (c, s) = run(TestParams {
        time: 0,
        bytes: 3 << 20,
        ..TestParams::default()
    });
    assert_eq!(c.bytes_local, 3 << 20);
    assert_eq!(s.bytes_local, 3 << 20);
}
