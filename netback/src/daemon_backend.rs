//! Netback as the `hv` daemon's Dom0 backend.
//!
//! `hv` cannot link netback (netback depends on it), so the daemon takes Dom0's
//! backend as a [`hv::daemon::BackendFactory`]; [`NetbackFactory`] is netback's. It
//! starts [`Netback`] on the daemon's backend environment with one port for every vif:
//!
//! - by default a learning [`Switch`]: the guests of the daemon reach each other, and
//!   nothing else, with no root needed;
//! - with `--bridge BR` or `--tap-prefix P` a [`TapPort`]: every vif gets a TAP
//!   (`vif<domid>.<devid>`, or `P<domid>.<devid>`), enslaved to `BR` if given, as
//!   Xen's `vif-bridge` hotplug script does. Needs `CAP_NET_ADMIN`.
//!
//! [`DaemonBackend`] answers `hv network-list` with netback's own counters and the
//! TAP's name, closes a vif for `hv network-detach`, and closes every vif on shutdown.

use std::path::Path;
use std::sync::Arc;

use hv::daemon::{BackendFactory, BackendOptions, Dom0Backend, VifStatus};
use hv::embedded::EmbeddedBackendEnv;
use hv::env::DomId;

use crate::backend::{Netback, NetbackConfig, VifInfo};
use crate::port::{Port, Switch, TapPort, TapPortConfig, VifId};
use crate::tap::validate_ifname;

/// The highest domid a guest can get (`DOMID_FIRST_RESERVED - 1`): the longest TAP
/// name a prefix must leave room for is `<prefix>32751.<devid>`.
const MAX_GUEST_DOMID: DomId = 0x7fef;

/// Starts netback for `hv serve`.
#[derive(Debug, Clone)]
pub struct NetbackFactory {
    /// `multi-queue-max-queues` offered to guests.
    pub max_queues: u32,
    /// netback's `busy_poll` rounds (see [`NetbackConfig::busy_poll`]); `None` keeps
    /// netback's default.
    pub busy_poll: Option<u32>,
}

impl Default for NetbackFactory {
    fn default() -> Self {
        Self {
            max_queues: 2,
            busy_poll: None,
        }
    }
}

/// Where the daemon's vifs lead.
enum Wiring {
    /// Guests switched to each other.
    Switch(Arc<Switch>),
    /// Every vif on its own TAP.
    Tap(Arc<TapPort>),
}

/// Netback running inside the `hv` daemon.
pub struct DaemonBackend {
    netback: Netback,
    wiring: Wiring,
}

/// Why TAP mode cannot start, checked before any vif connects so `hv serve` fails at
/// once with what to do (instead of every vif failing later).
fn check_tap_setup(opts: &BackendOptions) -> Result<(), String> {
    if !Path::new("/dev/net/tun").exists() {
        return Err(
            "/dev/net/tun is missing: load the tun module (`modprobe tun`) or omit --bridge/--tap-prefix"
                .into(),
        );
    }
    if let Some(br) = &opts.bridge {
        check_bridge(br)?;
    }
    if let Some(prefix) = &opts.tap_prefix {
        check_prefix(prefix)?;
    }
    Ok(())
}

/// The bridge must exist (as `vif-bridge` requires): netback does not create it.
fn check_bridge(br: &str) -> Result<(), String> {
    validate_ifname(br).map_err(|e| format!("--bridge {br}: {e}"))?;
    if !Path::new(&format!("/sys/class/net/{br}/bridge")).exists() {
        return Err(format!(
            "bridge {br} does not exist: create it with `ip link add {br} type bridge && ip link set {br} up`, or omit --bridge"
        ));
    }
    Ok(())
}

/// `<prefix><domid>.<devid>` must fit a 15-byte interface name for every domid.
fn check_prefix(prefix: &str) -> Result<(), String> {
    let longest = format!("{prefix}{MAX_GUEST_DOMID}.9");
    validate_ifname(&longest).map_err(|_| {
        format!(
            "--tap-prefix {prefix:?} leaves no room for `<domid>.<devid>` in a 15-byte interface name (at most {} bytes, no '/', ':' or spaces)",
            15usize.saturating_sub(longest.len() - prefix.len())
        )
    })?;
    Ok(())
}

impl BackendFactory for NetbackFactory {
    fn start(
        &self,
        env: EmbeddedBackendEnv,
        opts: &BackendOptions,
    ) -> Result<Box<dyn Dom0Backend>, String> {
        let wants_tap = opts.bridge.is_some() || opts.tap_prefix.is_some();
        let (wiring, port): (Wiring, Arc<dyn Port>) = if wants_tap {
            check_tap_setup(opts)?;
            let tap = Arc::new(TapPort::new(TapPortConfig {
                bridge: opts.bridge.clone(),
                name_prefix: opts.tap_prefix.clone(),
                tx_io_uring: !opts.no_io_uring,
                reader_threads: opts.tap_reader_threads,
                ..TapPortConfig::default()
            }));
            (Wiring::Tap(tap.clone()), tap)
        } else {
            let sw = Switch::new();
            (Wiring::Switch(sw.clone()), sw)
        };
        let mut cfg = NetbackConfig::new(port);
        cfg.max_queues = self.max_queues;
        if let Some(p) = self.busy_poll {
            cfg.busy_poll = p;
        }
        let netback = Netback::start(env, cfg).map_err(|e| e.to_string())?;
        match &wiring {
            Wiring::Switch(_) => log::info!("netback: guests joined by a learning switch"),
            Wiring::Tap(t) => log::info!(
                "netback: one TAP per vif{}",
                t.config()
                    .bridge
                    .as_ref()
                    .map_or(String::new(), |b| format!(", on bridge {b}"))
            ),
        }
        Ok(Box::new(DaemonBackend { netback, wiring }))
    }
}

impl DaemonBackend {
    /// The netback instance.
    pub fn netback(&self) -> &Netback {
        &self.netback
    }

    /// The switch joining the guests, when not in TAP mode.
    pub fn switch(&self) -> Option<&Arc<Switch>> {
        match &self.wiring {
            Wiring::Switch(s) => Some(s),
            Wiring::Tap(_) => None,
        }
    }

    /// The TAP port, in TAP mode.
    pub fn tap_port(&self) -> Option<&Arc<TapPort>> {
        match &self.wiring {
            Wiring::Tap(t) => Some(t),
            Wiring::Switch(_) => None,
        }
    }

    fn status(&self, v: &VifInfo) -> VifStatus {
        let c = &v.counters;
        let mut disabled = v.disabled.as_ref().map(|d| d.to_string());
        let host_if = match &self.wiring {
            Wiring::Switch(_) => String::new(),
            Wiring::Tap(t) => {
                if disabled.is_none() {
                    // A vif whose TAP could not be made is up but drops everything:
                    // say why.
                    disabled = t.failure(v.id).map(|e| format!("no TAP: {e}"));
                }
                t.tap_name(v.id).unwrap_or_default()
            }
        };
        VifStatus {
            devid: v.id.devid,
            host_if,
            tx_packets: c.tx_packets,
            tx_bytes: c.tx_bytes,
            rx_packets: c.rx_packets,
            rx_bytes: c.rx_bytes,
            drops: c.tx_drops + c.rx_drops,
            disabled: disabled.unwrap_or_default(),
            has_counters: true,
            // The daemon fills in the mac and both states from the xenstore.
            ..VifStatus::default()
        }
    }
}

impl Dom0Backend for DaemonBackend {
    fn vifs(&self) -> Vec<(DomId, VifStatus)> {
        self.netback
            .vifs()
            .iter()
            .map(|v| (v.id.domid, self.status(v)))
            .collect()
    }

    fn close_vif(&self, domid: DomId, devid: u32) {
        self.netback.close_vif(VifId { domid, devid });
    }

    fn shutdown(self: Box<Self>) {
        let DaemonBackend { netback, wiring } = *self;
        netback.shutdown();
        // The port goes after netback: every vif has been disconnected from it.
        drop(wiring);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_prefix_must_leave_room_for_the_vif_number() {
        assert!(check_prefix("pv").is_ok());
        assert!(check_prefix("vif").is_ok());
        assert!(check_prefix("pvnet-vm").is_ok(), "8 bytes + 32751.9 = 15");
        let e = check_prefix("pvnet-vm1").unwrap_err();
        assert!(e.contains("at most 8 bytes"), "{e}");
        assert!(check_prefix("a b").is_err());
        assert!(check_prefix("a/b").is_err());
    }

    #[test]
    fn a_missing_bridge_is_reported_with_the_command_to_create_it() {
        let e = check_bridge("pvnonexist0").unwrap_err();
        assert!(e.contains("bridge pvnonexist0 does not exist"), "{e}");
        assert!(e.contains("ip link add pvnonexist0 type bridge"), "{e}");
        assert!(check_bridge("bad/name").is_err());
    }
}
