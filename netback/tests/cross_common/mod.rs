//! Shared helpers of the cross tests: the real netfront (in embedded guests) against
//! the real netback (in the embedded Dom0), nothing hand-written on either side.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use hv::abi::xenbus::XenbusState;
use hv::embedded::{DomainConfig, EmbeddedGuestEnv, Hypervisor};
use hv::env::{DomId, Store, XBT_NIL};
use hv::store::StoreConnection;
use hv::toolstack::{add_vif, backend_path, frontend_path, VifConfig};
use hv::xenbus::{path_join, xenbus_read_state};
use netback::port::{Port, VifId};
use netback::{Netback, NetbackConfig, VifInfo};
use netfront::{Netfront, NetfrontConfig};

/// Upper bound of every control-plane wait in these tests.
pub const WAIT: Duration = Duration::from_secs(10);

pub type Front = Netfront<EmbeddedGuestEnv>;
pub type Chan = hv::embedded::EmbeddedChannel;

/// The hypervisor, a running netback in Dom0 and the toolstack's store connection.
pub struct World {
    pub hv: Hypervisor,
    pub netback: Option<Netback>,
    pub dom0: StoreConnection,
    pub port: Arc<dyn Port>,
}

impl World {
    pub fn new(port: Arc<dyn Port>) -> World {
        Self::with_config(port, |c| c)
    }

    pub fn with_config(
        port: Arc<dyn Port>,
        f: impl FnOnce(NetbackConfig) -> NetbackConfig,
    ) -> World {
        let hv = Hypervisor::new().expect("hypervisor");
        let cfg = f(quick_close(NetbackConfig::new(port.clone())));
        let netback = Netback::start(hv.backend_env().expect("dom0 env"), cfg).expect("netback");
        let dom0 = hv.store(0).expect("dom0 store");
        World {
            hv,
            netback: Some(netback),
            dom0,
            port,
        }
    }

    pub fn nb(&self) -> &Netback {
        self.netback.as_ref().expect("netback running")
    }

    /// Start a fresh netback (after a shutdown) on the same hypervisor and port.
    pub fn restart_netback(&mut self) {
        assert!(self.netback.is_none(), "netback still running");
        let cfg = quick_close(NetbackConfig::new(self.port.clone()));
        self.netback =
            Some(Netback::start(self.hv.backend_env().expect("dom0 env"), cfg).expect("netback"));
    }

    /// A guest with vif 0 (toolstack side only: `add_vif`).
    pub fn add_guest(&self, mac: [u8; 6]) -> (DomId, EmbeddedGuestEnv) {
        let domid = self
            .hv
            .create_domain(&DomainConfig {
                name: format!("guest-{:02x}", mac[5]),
                ..DomainConfig::default()
            })
            .expect("create domain");
        add_vif(
            &self.dom0,
            &VifConfig {
                frontend: domid,
                backend: 0,
                devid: 0,
                mac,
                rate: None,
            },
        )
        .expect("add_vif");
        (domid, self.hv.guest_env(domid).expect("guest env"))
    }

    /// A guest whose netfront is connected with `cfg` (waits until netback reports the
    /// vif Connected too).
    pub fn connect_guest(&self, mac: [u8; 6], cfg: NetfrontConfig) -> (DomId, Front) {
        let (domid, env) = self.add_guest(mac);
        let nf = Netfront::connect(env, cfg).expect("netfront connect");
        self.wait_vif(vif(domid), "Connected", |i| {
            i.state == XenbusState::Connected
        });
        (domid, nf)
    }

    pub fn read(&self, path: &str) -> Option<String> {
        self.dom0
            .read(XBT_NIL, path)
            .ok()
            .map(|v| String::from_utf8(v).expect("utf-8 key"))
    }

    pub fn be_state(&self, domid: DomId) -> XenbusState {
        xenbus_read_state(&self.dom0, &backend_path(0, domid, 0)).unwrap_or(XenbusState::Unknown)
    }

    pub fn fe_state(&self, domid: DomId) -> XenbusState {
        xenbus_read_state(&self.dom0, &frontend_path(domid, 0)).unwrap_or(XenbusState::Unknown)
    }

    pub fn wait_be_state(&self, domid: DomId, want: XenbusState) {
        let deadline = Instant::now() + WAIT;
        while self.be_state(domid) != want {
            assert!(
                Instant::now() < deadline,
                "backend of dom{domid} never reached {want:?}: {:?}",
                self.be_state(domid)
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    pub fn wait_vif(&self, id: VifId, what: &str, pred: impl Fn(&VifInfo) -> bool) -> VifInfo {
        match self.nb().wait_vif(id, WAIT, pred) {
            Some(i) => i,
            None => panic!("{id} never got {what}: {:?}", self.nb().vif(id)),
        }
    }

    /// Check the xenstore of both ends of a connected vif: both `Connected`, the
    /// backend's offers and every key the frontend must publish, per queue.
    pub fn check_connected_keys(&self, domid: DomId, queues: u32, split: bool) {
        let fe = frontend_path(domid, 0);
        let be = backend_path(0, domid, 0);
        let k = |d: &str, key: &str| self.read(&path_join(d, key));
        assert_eq!(self.fe_state(domid), XenbusState::Connected);
        assert_eq!(self.be_state(domid), XenbusState::Connected);
        for key in [
            "feature-rx-copy",
            "feature-sg",
            "feature-gso-tcpv4",
            "feature-gso-tcpv6",
            "feature-ipv6-csum-offload",
            "feature-split-event-channels",
        ] {
            assert_eq!(k(&be, key).as_deref(), Some("1"), "backend {key}");
        }
        assert_eq!(k(&be, "multi-queue-max-queues").as_deref(), Some("2"));
        for (key, v) in [
            ("request-rx-copy", "1"),
            ("feature-rx-notify", "1"),
            ("feature-sg", "1"),
            ("feature-gso-tcpv4", "1"),
            ("feature-gso-tcpv6", "1"),
            ("feature-ipv6-csum-offload", "1"),
        ] {
            assert_eq!(k(&fe, key).as_deref(), Some(v), "frontend {key}");
        }
        assert_eq!(k(&fe, "feature-no-csum-offload"), None);
        let dirs: Vec<String> = if queues == 1 {
            assert_eq!(k(&fe, "multi-queue-num-queues"), None);
            vec![fe.clone()]
        } else {
            assert_eq!(
                k(&fe, "multi-queue-num-queues"),
                Some(queues.to_string()),
                "multi-queue-num-queues"
            );
            assert_eq!(k(&fe, "tx-ring-ref"), None, "per-queue keys only");
            (0..queues).map(|i| format!("{fe}/queue-{i}")).collect()
        };
        let num = |d: &str, key: &str| -> u32 {
            k(d, key)
                .unwrap_or_else(|| panic!("{d}/{key} missing"))
                .parse()
                .unwrap_or_else(|_| panic!("{d}/{key} not a number"))
        };
        for d in &dirs {
            num(d, "tx-ring-ref");
            num(d, "rx-ring-ref");
            if split {
                assert_ne!(num(d, "event-channel-tx"), num(d, "event-channel-rx"));
                assert_eq!(k(d, "event-channel"), None);
            } else {
                num(d, "event-channel");
                assert_eq!(k(d, "event-channel-tx"), None);
            }
        }
    }
}

/// Tests mostly end without closing their frontends: don't let the final shutdown
/// wait the default 2 s for them (tests that close through shutdown set their own).
fn quick_close(mut cfg: NetbackConfig) -> NetbackConfig {
    cfg.close_timeout = Duration::from_millis(200);
    cfg
}

impl Drop for World {
    fn drop(&mut self) {
        // Stop netback before the hypervisor handles go (its threads hold mappings).
        if let Some(nb) = self.netback.take() {
            nb.shutdown();
        }
    }
}

/// The vif 0 of `domid`.
pub fn vif(domid: DomId) -> VifId {
    VifId { domid, devid: 0 }
}

/// Guest MACs (Xen's OUI).
pub fn mac(n: u8) -> [u8; 6] {
    [0x00, 0x16, 0x3e, 0x00, 0x01, n]
}

/// A frontend configuration with `queues` queues and split or shared event channels.
pub fn front_cfg(queues: u16, split: bool) -> NetfrontConfig {
    NetfrontConfig {
        queues,
        split_event_channels: split,
        timeout: WAIT,
        ..NetfrontConfig::default()
    }
}

/// Deterministic pseudo-random bytes (xorshift32).
pub fn fill_pattern(buf: &mut [u8], seed: u32) {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    for b in buf {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
}

/// An Ethernet frame `dst <- src` with a private ethertype (0x88b5, IEEE local
/// experimental) and a patterned payload; `len` bytes in all.
pub fn eth_frame(dst: [u8; 6], src: [u8; 6], len: usize, seed: u32) -> Vec<u8> {
    assert!(len >= 14);
    let mut f = vec![0u8; len];
    fill_pattern(&mut f[14..], seed);
    f[0..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&[0x88, 0xb5]);
    f
}

/// An Ethernet/IPv4/TCP frame of `len` bytes from 10.0.0.1:`sport` to 10.0.0.2:80
/// with a patterned payload and a correct IPv4 header checksum; the TCP checksum is
/// left 0 (callers say how it is to be treated).
pub fn tcp4_frame(dst: [u8; 6], src: [u8; 6], len: usize, sport: u16, seed: u32) -> Vec<u8> {
    assert!(len >= 54);
    let mut f = eth_frame(dst, src, len, seed);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let total = (len - 14) as u16;
    let ip = [
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        1,
        0x40,
        0,
        64,
        6,
        0,
        0,
        10,
        0,
        0,
        1,
        10,
        0,
        0,
        2,
    ];
    f[14..34].copy_from_slice(&ip);
    let csum = !netfront::csum::fold(netfront::csum::sum_bytes(&f[14..34], 0));
    f[24..26].copy_from_slice(&csum.to_be_bytes());
    f[34..36].copy_from_slice(&sport.to_be_bytes());
    f[36..38].copy_from_slice(&80u16.to_be_bytes());
    f[46] = 0x50; // data offset: 5 words
    f[47] = 0x10; // ACK
    f[50..52].copy_from_slice(&[0, 0]);
    f
}

/// Poll `cond` until it holds; false after `timeout`.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// An Ethernet/IPv6/TCP frame of `len` bytes from fd00::1:`sport` to fd00::2:80, TCP
/// checksum 0.
pub fn tcp6_frame(dst: [u8; 6], src: [u8; 6], len: usize, sport: u16, seed: u32) -> Vec<u8> {
    assert!(len >= 74);
    let mut f = eth_frame(dst, src, len, seed);
    f[12..14].copy_from_slice(&[0x86, 0xdd]);
    let plen = (len - 54) as u16;
    f[14..18].copy_from_slice(&[0x60, 0, 0, 0]);
    f[18..20].copy_from_slice(&plen.to_be_bytes());
    f[20] = 6; // next header: TCP
    f[21] = 64;
    let mut a = [0u8; 16];
    a[0] = 0xfd;
    a[15] = 1;
    f[22..38].copy_from_slice(&a);
    a[15] = 2;
    f[38..54].copy_from_slice(&a);
    f[54..56].copy_from_slice(&sport.to_be_bytes());
    f[56..58].copy_from_slice(&80u16.to_be_bytes());
    f[66] = 0x50;
    f[67] = 0x10;
    f[70..72].copy_from_slice(&[0, 0]);
    f
}

/// Wait (bounded) until netback's counters of `id` satisfy `pred`.
pub fn wait_counters(
    w: &World,
    id: VifId,
    what: &str,
    pred: impl Fn(&netback::CountersSnapshot) -> bool,
) -> netback::CountersSnapshot {
    w.wait_vif(id, what, |i| pred(&i.counters)).counters
}

/// Load sizes are meant for release builds (`scripts/test` runs
/// `cargo test --release`); a debug build runs a twentieth so it still ends quickly.
pub fn scaled(n: u64) -> u64 {
    if cfg!(debug_assertions) {
        (n / 20).max(1)
    } else {
        n
    }
}
